//! The HTTP/1.1 front end (feature `http`): a [`Server`] whose single reactor thread owns every
//! socket and whose [`Pool`](crate::Pool) runs your handler.
//!
//! (tutorial below)

mod access_log;
mod conn;
mod loopback;
mod parse;
mod reactor;
mod response;
mod server;

use std::sync::Arc;

pub use access_log::{AccessLogFormat, ACCESS_TARGET, DEFAULT_ACCESS_LOG_FORMAT};
pub use loopback::Loopback;
pub use parse::Limits;
pub use response::error_response;
pub use server::{ServeError, Server, ServerBuilder, ServerHandle};

/// The request type handlers get: an [`http::Request`] with its whole body.
pub type HttpRequest = ::http::Request<Vec<u8>>;
/// The response type handlers return: an [`http::Response`] with its whole body.
pub type HttpResponse = ::http::Response<Vec<u8>>;

/// The client's address, in every request's extensions: the IP address for TCP, `"unix"` for a
/// Unix socket, `"loopback"` for a request sent through [`Loopback`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerAddr(pub Arc<str>);
