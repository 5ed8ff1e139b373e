//! The use-cases, as operations on the [`crate::app::App`]: typed requests in, typed results
//! out, nothing printed. The command line (`cmd/`) renders their results; `serve`, `clean` and
//! `expire` call the same operations.

pub mod check;
pub mod clean;
pub mod expire;
pub mod purge;
pub mod queue;
pub mod restore;
pub mod scan;
