//! # prefork-pool
//!
//! (crate documentation: written with the Pool.)
#![deny(missing_docs)]
#![deny(clippy::undocumented_unsafe_blocks)]

mod error;
mod pool;

pub use error::{BuildError, Error, Stage, TrySubmitError};
pub use pool::{
    Builder, Context, Pool, Reentry, ShutdownReport, Stats, Ticket, MAX_DEADLINE, MAX_QUEUE,
    MAX_WORKERS,
};

#[cfg(feature = "http")]
pub mod http;

#[cfg(all(feature = "prefork", unix))]
pub mod prefork;
