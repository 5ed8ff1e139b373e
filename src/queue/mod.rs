//! The durable deletion queue (SPEC §6): every deletion assetgc makes is an entry first. The
//! worker claims due entries in batches, re-checks their references right before the store call
//! (`recheck`), acts, and the pure state machine (`transition`) decides what becomes of each
//! entry; the state database applies that decision with its audit row in one transaction, so a
//! crash at any point leaves every entry either finished or still queued.

pub mod recheck;
pub mod transition;
pub mod worker;

pub use worker::{RunOptions, Totals, run, worker_id};
