//! # prefork-pool
//!
//! (crate documentation: written with the Pool.)
#![deny(missing_docs)]
#![deny(clippy::undocumented_unsafe_blocks)]

mod error;

pub use error::{BuildError, Error, Stage, TrySubmitError};

#[cfg(feature = "http")]
pub mod http;

#[cfg(all(feature = "prefork", unix))]
pub mod prefork;
