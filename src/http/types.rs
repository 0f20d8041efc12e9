//! The types a handler sees: [`HttpRequest`], [`HttpResponse`], the client's [`PeerAddr`], and the
//! [`http`] crate itself, re-exported.
//!
//! Requests and responses are the [`http`] crate's types. It is re-exported here so that an
//! application need not depend on it itself with the matching major version:
//!
//! ```
//! use prefork_pool::http::types::http::{Response, StatusCode};
//!
//! let r = Response::builder().status(StatusCode::CREATED).body(Vec::<u8>::new()).unwrap();
//! assert_eq!(r.status(), 201);
//! ```
//!
//! or, to write `http::...` as with a direct dependency:
//! `use prefork_pool::http::types::http;`.

use std::sync::Arc;

/// The [`http`](https://docs.rs/http/1) crate (major version 1), whose [`Request`](http::Request)
/// and [`Response`](http::Response) the server speaks.
pub use ::http;

/// The request type handlers get: an [`http::Request`] with its whole body.
pub type HttpRequest = ::http::Request<Vec<u8>>;
/// The response type the server writes: an [`http::Response`] with its whole body. A handler may
/// return it or anything else that is [`IntoResponse`](super::IntoResponse).
pub type HttpResponse = ::http::Response<Vec<u8>>;

/// The client's address, in every request's extensions: the IP address for TCP, `"unix"` for a
/// Unix socket, `"loopback"` for a request sent through [`Loopback`](super::Loopback).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerAddr(pub Arc<str>);
