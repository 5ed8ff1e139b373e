//! assetgc: keeps an application's file storage and its database honest with each other.
//!
//! Data flows stores + references → reconcile → report → queue → delete. The operations
//! (`ops`) run on one [`app::App`] per process; the command line (`cmd`) renders their results.

#![deny(unsafe_code)]
#![warn(clippy::pedantic)]
// `store::StoreError` reads better at call sites than a bare `Error` among several error types.
#![allow(clippy::module_name_repetitions)]
// Errors are one enum whose variants are documented where they are defined.
#![allow(clippy::missing_errors_doc, clippy::missing_panics_doc)]
// Counts of objects and rows are u64 and fit f64 for percentages well past any real bucket.
#![allow(clippy::cast_precision_loss)]
// Flags are bools: clap's argument structs have many of them by nature.
#![allow(clippy::struct_excessive_bools, clippy::fn_params_excessive_bools)]
// Doc comments on clap arguments are `--help` text for users, not rustdoc: no backticks there.
#![allow(clippy::doc_markdown)]
// Every pure getter would carry it; it adds noise, not safety, in an application crate.
#![allow(clippy::must_use_candidate)]
// A two-armed `match` on an Option reads as plainly as `if let … else`.
#![allow(clippy::single_match_else)]

pub mod app;
pub mod cli;
pub mod cmd;
pub mod config;
pub mod domain;
pub mod error;
pub mod jobs;
pub mod key;
pub mod keyset;
pub mod notify;
pub mod ops;
pub mod overlap;
pub mod queue;
pub mod reconcile;
pub mod refs;
pub mod report;
pub mod server;
pub mod state;
pub mod store;
pub mod time;
pub mod triggers;

pub use error::{Error, Exit, Result};
