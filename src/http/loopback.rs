//! [`Loopback`]: the server's own handler, called in-process through the Pool and its re-entrancy
//! guard, with no socket and no parsing.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use super::{HttpRequest, HttpResponse, PeerAddr};
use crate::{Error, Pool};

/// Sends a request to the server's own handler, in-process.
///
/// This is the fix for the seed's deadlock (a handler that POSTs to its own server with one
/// worker): [`send`](Loopback::send) is `pool.call(req)`, and a call made from inside one of the
/// pool's handlers runs inline on the calling worker with the caller's (earlier) deadline, so it
/// never waits for a free worker. Called from any other thread, it queues like any request.
///
/// Every request the server hands to the handler carries a `Loopback` in its extensions; a server
/// handle gives one with [`ServerHandle::loopback`](super::ServerHandle::loopback). Cloning is cheap
/// (an `Arc`).
///
/// A request sent this way carries this `Loopback` and a [`PeerAddr`] of `"loopback"` in its
/// extensions (unless it already has them), is not parsed or limited, and is not written to the
/// access log.
///
/// ```
/// use prefork_pool::http::{Loopback, Server};
///
/// let server = Server::builder()
///     .bind("127.0.0.1:0")
///     .workers(1)
///     .serve(|req, _ctx| {
///         if req.uri().path() == "/outer" {
///             // Calls back into this same server; with one worker this would deadlock over TCP.
///             let lb = req.extensions().get::<Loopback>().unwrap();
///             let inner = lb.send(http::Request::get("/inner").body(Vec::new()).unwrap()).unwrap();
///             let mut body = b"outer+".to_vec();
///             body.extend_from_slice(inner.body());
///             return http::Response::new(body);
///         }
///         http::Response::new(b"inner".to_vec())
///     })
///     .unwrap();
/// let resp = server.loopback().send(http::Request::get("/outer").body(Vec::new()).unwrap()).unwrap();
/// assert_eq!(resp.body(), b"outer+inner");
/// server.shutdown(std::time::Duration::from_secs(5));
/// ```
#[derive(Clone)]
pub struct Loopback {
    pool: Pool<HttpRequest, HttpResponse>,
}

impl fmt::Debug for Loopback {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Loopback")
            .field("pool", &self.pool.name())
            .finish()
    }
}

impl Loopback {
    pub(crate) fn new(pool: Pool<HttpRequest, HttpResponse>) -> Self {
        Loopback { pool }
    }

    fn prepare(&self, req: &mut HttpRequest) {
        if req.extensions().get::<Loopback>().is_none() {
            req.extensions_mut().insert(self.clone());
        }
        if req.extensions().get::<PeerAddr>().is_none() {
            req.extensions_mut().insert(PeerAddr(Arc::from("loopback")));
        }
    }

    /// Run the server's handler on `req` and return its answer, with the pool's default deadline
    /// (or, from inside a handler, the caller's remaining deadline).
    ///
    /// The errors are the Pool's: [`Error::Overloaded`], [`Error::DeadlineExceeded`],
    /// [`Error::Panicked`], [`Error::ShuttingDown`], [`Error::LoopDetected`], ...; use
    /// [`Error::http_status`] to relay them as HTTP.
    pub fn send(&self, mut req: HttpRequest) -> Result<HttpResponse, Error> {
        self.prepare(&mut req);
        self.pool.call(req)
    }

    /// As [`send`](Loopback::send), with its own deadline.
    pub fn send_with(
        &self,
        mut req: HttpRequest,
        deadline: Duration,
    ) -> Result<HttpResponse, Error> {
        self.prepare(&mut req);
        self.pool.call_with(req, deadline)
    }
}
