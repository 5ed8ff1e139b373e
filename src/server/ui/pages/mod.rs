//! One module per page; each reads what it shows from the state database and renders its
//! template. Changes are made by the page's script through the JSON API.

mod audit;
mod findings;
mod jobs;
mod overview;
mod queue;

pub use audit::audit;
pub use findings::findings;
pub use jobs::jobs;
pub use overview::overview;
pub use queue::queue;
