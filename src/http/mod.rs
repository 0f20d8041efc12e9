//! The HTTP/1.1 front end (feature `http`).

mod access_log;
mod conn;
mod parse;
mod reactor;
mod response;

use std::sync::Arc;

pub use access_log::{AccessLogFormat, ACCESS_TARGET, DEFAULT_ACCESS_LOG_FORMAT};
pub use parse::Limits;
pub use response::error_response;

/// The client's address, in every request's extensions: the IP address for TCP, `"unix"` for a
/// Unix socket, `"loopback"` for a request sent through [`Loopback`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerAddr(pub Arc<str>);
