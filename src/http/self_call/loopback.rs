//! [`Loopback`]: the server's own handler, called in-process through the Pool and its re-entrancy
//! guard, with no socket and no parsing. The depth it adds one to is the calling handler's job's
//! (the Pool keeps each request's depth in its job).

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use http::HeaderValue;

use crate::http::engine::handoff::{check_depth, request_depth, DEPTH_HEADER};
use crate::http::types::{HttpRequest, HttpResponse, PeerAddr};
use crate::{Error, Pool};

/// Sends a request to the server's own handler, in-process.
///
/// This is the fix for a handler that calls its own server (with one worker, a handler that POSTs
/// to its own server over HTTP deadlocks): [`send`](Loopback::send) is `pool.call(req)`, and a call made from inside one of the
/// pool's handlers runs inline on the calling worker with the caller's (earlier) deadline, so it
/// never waits for a free worker. Called from any other thread, it queues like any request.
///
/// Every request the server hands to the handler carries a `Loopback` in its extensions; a server
/// handle gives one with [`ServerHandle::loopback`](crate::http::ServerHandle::loopback). Cloning is cheap
/// (an `Arc`).
///
/// A request sent this way carries this `Loopback` and a [`PeerAddr`] of `"loopback"` in its
/// extensions (unless it already has them), is not parsed or limited, and is not written to the
/// access log.
///
/// # Runaway recursion
///
/// `send` sets the [`DEPTH_HEADER`] (`X-Prefork-Depth`) of the request to one more than the depth
/// of the request being handled on the calling thread (0 outside any handler; the request's own
/// header if that is deeper). Past [`max_depth`](crate::http::ServerBuilder::max_depth) (default 32) it
/// fails at once with [`Error::LoopDetected`] (508), without running the handler: a route that
/// calls itself without end is cut after `max_depth` nested calls instead of exhausting the stack.
///
/// ```
/// use prefork_pool::http::types::http;
/// use prefork_pool::http::{Loopback, Server};
///
/// let server = Server::builder()
///     .bind("127.0.0.1:0")
///     .pool(|p| p.workers(1))
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
    max_depth: u32,
}

impl fmt::Debug for Loopback {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Loopback")
            .field("pool", &self.pool.name())
            .field("max_depth", &self.max_depth)
            .finish()
    }
}

impl Loopback {
    /// The `Loopback` that rides with the requests of the server whose pool is `pool`.
    pub(crate) fn new(pool: Pool<HttpRequest, HttpResponse>, max_depth: u32) -> Self {
        Loopback { pool, max_depth }
    }

    /// Mark `req` as sent by this `Loopback` one deeper than the handler running on this thread
    /// (or as deep as its own header says, if deeper), and return that depth; past `max_depth`,
    /// [`Error::LoopDetected`].
    fn prepare(&self, req: &mut HttpRequest) -> Result<u32, Error> {
        let here = crate::pool::current_depth().map_or(0, |d| d.saturating_add(1));
        let depth = check_depth(here.max(request_depth(req)), self.max_depth)?;
        req.headers_mut()
            .insert(DEPTH_HEADER, HeaderValue::from(depth));
        if req.extensions().get::<Loopback>().is_none() {
            req.extensions_mut().insert(self.clone());
        }
        if req.extensions().get::<PeerAddr>().is_none() {
            req.extensions_mut().insert(PeerAddr(Arc::from("loopback")));
        }
        Ok(depth)
    }

    /// Run the server's handler on `req` and return its answer, with the pool's default deadline
    /// (or, from inside a handler, the caller's remaining deadline).
    ///
    /// The errors are the Pool's: [`Error::Overloaded`], [`Error::DeadlineExceeded`],
    /// [`Error::Panicked`], [`Error::ShuttingDown`], [`Error::LoopDetected`] (the chain is deeper
    /// than `max_depth`, see above), ...; use [`Error::http_status`] to relay them as HTTP.
    pub fn send(&self, mut req: HttpRequest) -> Result<HttpResponse, Error> {
        let depth = self.prepare(&mut req)?;
        self.pool.call_at(req, None, depth)
    }

    /// As [`send`](Loopback::send), with its own deadline.
    pub fn send_with(
        &self,
        mut req: HttpRequest,
        deadline: Duration,
    ) -> Result<HttpResponse, Error> {
        let depth = self.prepare(&mut req)?;
        self.pool.call_at(req, Some(deadline), depth)
    }
}
