//! The types a handler sees: [`HttpRequest`], [`HttpResponse`], and the client's [`PeerAddr`].

use std::sync::Arc;

/// The request type handlers get: an [`http::Request`] with its whole body.
pub type HttpRequest = ::http::Request<Vec<u8>>;
/// The response type handlers return: an [`http::Response`] with its whole body.
pub type HttpResponse = ::http::Response<Vec<u8>>;

/// The client's address, in every request's extensions: the IP address for TCP, `"unix"` for a
/// Unix socket, `"loopback"` for a request sent through [`Loopback`](super::Loopback).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerAddr(pub Arc<str>);
