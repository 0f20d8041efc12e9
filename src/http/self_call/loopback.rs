//! [`Loopback`]: the server's own handler, called in-process through the Pool and its re-entrancy
//! guard, with no socket and no parsing; and the depth of the request a handler runs, which the
//! `Loopback` adds one to.

use std::cell::Cell;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use http::HeaderValue;

use crate::http::engine::handoff::{check_depth, request_depth, DEPTH_HEADER};
use crate::http::types::{HttpRequest, HttpResponse, PeerAddr};
use crate::{Error, Pool};

thread_local! {
    /// The depth of the request whose handler this thread is running, if any.
    static DEPTH: Cell<Option<u32>> = const { Cell::new(None) };
}

/// Run `f` (a handler) with `depth` as this thread's current request depth, restored after (also
/// when `f` unwinds).
pub(crate) fn with_depth<R>(depth: u32, f: impl FnOnce() -> R) -> R {
    struct Restore(Option<u32>);
    impl Drop for Restore {
        fn drop(&mut self) {
            DEPTH.with(|d| d.set(self.0));
        }
    }
    let _restore = Restore(DEPTH.with(|d| d.replace(Some(depth))));
    f()
}

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
    /// The depth of the request this `Loopback` rides with (checked once, on its way in), which
    /// the handler's calls add one to; 0 for a server handle's own.
    depth: u32,
}

impl fmt::Debug for Loopback {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Loopback")
            .field("pool", &self.pool.name())
            .field("max_depth", &self.max_depth)
            .field("depth", &self.depth)
            .finish()
    }
}

impl Loopback {
    /// The `Loopback` that rides with a request whose depth (already checked) is `depth`.
    pub(crate) fn new(pool: Pool<HttpRequest, HttpResponse>, max_depth: u32, depth: u32) -> Self {
        Loopback {
            pool,
            max_depth,
            depth,
        }
    }

    /// The depth of the request a handler runs: the one its `Loopback` carries (checked when the
    /// request came in), or, for a request without one, its [`DEPTH_HEADER`].
    pub(crate) fn depth_of(req: &HttpRequest) -> u32 {
        match req.extensions().get::<Loopback>() {
            Some(lb) => lb.depth,
            None => request_depth(req),
        }
    }

    fn prepare(&self, req: &mut HttpRequest) -> Result<(), Error> {
        let here = DEPTH.with(Cell::get).map_or(0, |d| d.saturating_add(1));
        let depth = check_depth(here.max(request_depth(req)), self.max_depth)?;
        req.headers_mut()
            .insert(DEPTH_HEADER, HeaderValue::from(depth));
        match req.extensions_mut().get_mut::<Loopback>() {
            Some(lb) => lb.depth = depth,
            None => {
                let mut lb = self.clone();
                lb.depth = depth;
                req.extensions_mut().insert(lb);
            }
        }
        if req.extensions().get::<PeerAddr>().is_none() {
            req.extensions_mut().insert(PeerAddr(Arc::from("loopback")));
        }
        Ok(())
    }

    /// Run the server's handler on `req` and return its answer, with the pool's default deadline
    /// (or, from inside a handler, the caller's remaining deadline).
    ///
    /// The errors are the Pool's: [`Error::Overloaded`], [`Error::DeadlineExceeded`],
    /// [`Error::Panicked`], [`Error::ShuttingDown`], [`Error::LoopDetected`] (the chain is deeper
    /// than `max_depth`, see above), ...; use [`Error::http_status`] to relay them as HTTP.
    pub fn send(&self, mut req: HttpRequest) -> Result<HttpResponse, Error> {
        self.prepare(&mut req)?;
        self.pool.call(req)
    }

    /// As [`send`](Loopback::send), with its own deadline.
    pub fn send_with(
        &self,
        mut req: HttpRequest,
        deadline: Duration,
    ) -> Result<HttpResponse, Error> {
        self.prepare(&mut req)?;
        self.pool.call_with(req, deadline)
    }
}
