//! The application: built once per process and shared by every operation, whether a command
//! runs it once or `serve` runs it from long-lived tasks (`Arc<App>`, `'static`, nothing borrowed
//! from a caller).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use chrono::Utc;
use tokio::sync::broadcast;

use crate::config::{Config, StoreConfig};
use crate::domain::budget::BudgetLog;
use crate::domain::event::Event;
use crate::error::{Error, Result};
use crate::state::State;
use crate::store::{self, Ledger, Store, StoreError};

/// Events a slow listener may fall behind by before it misses some.
const EVENT_BACKLOG: usize = 1024;

pub struct App {
    pub cfg: Arc<Config>,
    pub state: State,
    /// The API budgets of metered accounts, counted as calls happen (see [`Ledger`]).
    pub ledger: Arc<Ledger>,
    stores: Mutex<HashMap<String, Arc<dyn Store>>>,
    events: broadcast::Sender<Event>,
    taps: Mutex<Vec<std::sync::Weak<Tap>>>,
}

/// A listener called on every event as it is published, in the publisher's thread: unlike a
/// channel's receiver it can never fall behind. It must be quick (take what it needs and
/// return); it is called until the last `Arc` of it is dropped.
pub struct Tap(Box<dyn Fn(&Event) + Send + Sync>);

impl App {
    /// Opens the state database (creating and migrating it when needed) and loads the budgets.
    pub async fn open(cfg: Config) -> Result<Arc<App>> {
        let state = State::open(&cfg.state_url).await?;
        let kept = match state.load_budgets(Utc::now()).await {
            Ok(k) => k,
            Err(e) => {
                state.close().await;
                return Err(e);
            }
        };
        let log: Arc<dyn BudgetLog> = Arc::new(state.clone());
        let ledger = Arc::new(Ledger::new(kept, Some(log)));
        ledger.spawn_flusher();
        let (events, _) = broadcast::channel(EVENT_BACKLOG);
        Ok(Arc::new(App {
            cfg: Arc::new(cfg),
            state,
            ledger,
            stores: Mutex::default(),
            events,
            taps: Mutex::default(),
        }))
    }

    /// The configured store named `name`, or a usage error that lists the configured ones.
    pub fn store_config(&self, name: &str) -> Result<&StoreConfig> {
        store_named(&self.cfg, name)
    }

    /// The store named `name`, opened on first use and shared afterwards.
    pub fn store(&self, name: &str) -> std::result::Result<Arc<dyn Store>, StoreError> {
        let mut stores = self.stores.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(s) = stores.get(name) {
            return Ok(Arc::clone(s));
        }
        let cfg = self
            .cfg
            .stores
            .iter()
            .find(|s| s.name == name)
            .ok_or_else(|| {
                StoreError::permanent(format!("store `{name}` is not in the configuration"))
            })?;
        let opened = store::open(cfg, &self.ledger)?;
        stores.insert(name.to_string(), Arc::clone(&opened));
        Ok(opened)
    }

    /// A listener of the events operations publish from now on.
    pub fn events(&self) -> broadcast::Receiver<Event> {
        self.events.subscribe()
    }

    /// Calls `f` on every event published from now on, until the returned `Arc` is dropped.
    pub fn tap(&self, f: impl Fn(&Event) + Send + Sync + 'static) -> Arc<Tap> {
        let tap = Arc::new(Tap(Box::new(f)));
        self.taps
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(Arc::downgrade(&tap));
        tap
    }

    /// Announces an event; nobody has to listen.
    pub(crate) fn publish(&self, event: Event) {
        {
            let mut taps = self.taps.lock().unwrap_or_else(PoisonError::into_inner);
            taps.retain(|t| match t.upgrade() {
                Some(tap) => {
                    (tap.0)(&event);
                    true
                }
                None => false,
            });
        }
        let _ = self.events.send(event);
    }

    /// Counts the last API calls and closes the state database.
    pub async fn close(&self) {
        self.ledger.flush().await;
        self.state.close().await;
    }
}

/// The store named `name` in `cfg`, or a usage error that lists the configured ones.
pub fn store_named<'a>(cfg: &'a Config, name: &str) -> Result<&'a StoreConfig> {
    cfg.stores.iter().find(|s| s.name == name).ok_or_else(|| {
        let names: Vec<&str> = cfg.stores.iter().map(|s| s.name.as_str()).collect();
        Error::Usage(format!(
            "no store named `{name}`; the config has: {}",
            if names.is_empty() {
                "none".to_string()
            } else {
                names.join(", ")
            }
        ))
    })
}
