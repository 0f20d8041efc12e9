//! The types a handler sees: [`HttpRequest`], [`HttpResponse`], the client's [`PeerAddr`] (with
//! the [`SocketPeer`] and [`ForwardedProto`] behind a proxy), the connection's [`TcpEnds`], and
//! the [`http`] crate itself, re-exported.
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

use std::net::SocketAddr;
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
///
/// Behind a proxy it is the client the proxy names, when the server believes it: the source
/// address of a PROXY protocol header (see
/// [`ServerBuilder::proxy_protocol`](super::ServerBuilder::proxy_protocol)), or the client that a
/// trusted proxy's `X-Forwarded-For` or `Forwarded` header names (see
/// [`ServerBuilder::forwarded_allow_ips`](super::ServerBuilder::forwarded_allow_ips)). The
/// access log's `%(h)s` shows the same address. The socket's own peer is the [`SocketPeer`].
///
/// ```
/// use prefork_pool::http::types::http;
/// use prefork_pool::http::{PeerAddr, SocketPeer};
///
/// fn client(req: &prefork_pool::http::HttpRequest) -> String {
///     let peer = req.extensions().get::<PeerAddr>().map_or("?", |p| &*p.0);
///     match req.extensions().get::<SocketPeer>() {
///         Some(via) if &*via.0 != peer => format!("{peer} via {}", via.0),
///         _ => peer.to_string(),
///     }
/// }
/// let mut req = http::Request::new(Vec::new());
/// req.extensions_mut().insert(PeerAddr("203.0.113.7".into()));
/// req.extensions_mut().insert(SocketPeer("127.0.0.1".into()));
/// assert_eq!(client(&req), "203.0.113.7 via 127.0.0.1");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerAddr(pub Arc<str>);

/// The address of the socket's other end, in the extensions of every request that came over a
/// socket: the IP address for TCP, `"unix"` for a Unix socket. It differs from the [`PeerAddr`]
/// when a proxy in front named the client (PROXY protocol, or trusted forwarding headers); the
/// server's own decisions (whether a request is a call of this process to itself, whether its
/// `X-Prefork-Depth` is honoured) are made on the socket, never on what a proxy says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SocketPeer(pub Arc<str>);

/// The two ends of the TCP connection a request came on, in its extensions when
/// [`ServerBuilder::tcp_ends`](super::ServerBuilder::tcp_ends) is on (absent for a Unix socket and
/// the [`Loopback`](super::Loopback)): the client's socket address, with its port (a
/// WSGI or CGI gateway's `REMOTE_PORT`), and this server's own, the address the client connected
/// to (`SERVER_NAME` and `SERVER_PORT` for a request without `Host`). Both are the socket's, like
/// the [`SocketPeer`], never what a proxy in front names.
///
/// ```
/// use prefork_pool::http::{Server, TcpEnds};
/// use std::io::{Read, Write};
///
/// let server = Server::builder()
///     .bind("127.0.0.1:0")
///     .tcp_ends(true)
///     .serve(|req, _ctx| {
///         let ends = req.extensions().get::<TcpEnds>().unwrap();
///         format!("{} -> {}", ends.peer.port(), ends.local.port())
///     })
///     .unwrap();
/// let addr = server.local_addrs()[0];
/// let mut s = std::net::TcpStream::connect(addr).unwrap();
/// let me = s.local_addr().unwrap();
/// s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
/// let mut answer = String::new();
/// s.read_to_string(&mut answer).unwrap();
/// assert!(answer.ends_with(&format!("{} -> {}", me.port(), addr.port())));
/// server.shutdown(std::time::Duration::from_secs(5));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpEnds {
    /// The client's address and port.
    pub peer: SocketAddr,
    /// The server's address and port the client connected to.
    pub local: SocketAddr,
}

/// The scheme the client used, `"http"` or `"https"`, in a request's extensions when a trusted
/// proxy said it (`X-Forwarded-Proto`, or `proto=` in `Forwarded`), or `"https"` when the
/// server terminated TLS itself (feature `tls`, `certfile`: the sync front); absent otherwise
/// (the server itself speaks plain HTTP).
///
/// ```
/// use prefork_pool::http::types::http;
/// use prefork_pool::http::{ForwardedProto, HttpRequest};
///
/// fn is_https(req: &HttpRequest) -> bool {
///     req.extensions().get::<ForwardedProto>().is_some_and(|p| &*p.0 == "https")
/// }
/// assert!(!is_https(&http::Request::new(Vec::new())));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForwardedProto(pub Arc<str>);
