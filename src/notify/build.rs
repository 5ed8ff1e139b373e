//! Notices from events: what a run announced becomes the message every channel sends.

use std::sync::Arc;

use tokio::sync::broadcast;

use crate::app::App;
use crate::domain::event::Event;

/// Listens to a run's events from before it starts until it ends.
pub struct Watch {
    app: Arc<App>,
    rx: broadcast::Receiver<Event>,
}

impl Watch {
    pub fn new(app: &Arc<App>) -> Watch {
        Watch {
            app: Arc::clone(app),
            rx: app.events(),
        }
    }
}
