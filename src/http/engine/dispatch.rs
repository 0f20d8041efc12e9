//! Where a complete request goes, from the thread that read it: [`Handoff::submit`] (the depth
//! check, a spare thread for a self-call, else the server's [`Dispatch`]; or first through the
//! self-call lookup thread, [`Handoff::submit_after_lookup`]), and [`PoolDispatch`], the
//! `Dispatch` that hands it to the Pool (an idle worker's request is lent back to it by the Pool;
//! the reactor's goes to the queue), each with a [`Loopback`] in its extensions and its route's
//! deadline ([`deadline_for`](crate::http::ServerBuilder::deadline_for)); a Pool error is logged
//! with the request it answers (method, path, client) and rendered by the server's [`ErrorPage`].

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{Method, Uri};

use crate::http::engine::handoff::{check_depth, finish, Dispatch, Done, Handoff, Reply};
use crate::http::ops::rate_limit::{suppressed_note, RateLimit, WARN_INTERVAL};
use crate::http::ops::stuck::{Busy, BusyWorker};
use crate::http::self_call::calls::Caller;
use crate::http::self_call::loopback::Loopback;
use crate::http::self_call::owner_lookup::CallerCell;
use crate::http::types::{HttpRequest, HttpResponse, PeerAddr};
use crate::http::wire::response::ErrorPage;
use crate::{Error, Pool};

/// The application's choice of a deadline per request, set with
/// [`ServerBuilder::deadline_for`](crate::http::ServerBuilder::deadline_for).
pub(crate) type DeadlineFor = dyn Fn(&HttpRequest) -> Option<Duration> + Send + Sync;

/// The warning for requests refused for their client-sent depth: one line per interval.
static DEPTH_WARNINGS: RateLimit = RateLimit::new(WARN_INTERVAL);

impl Handoff {
    /// Run `req`, whose [`DEPTH_HEADER`](crate::http::DEPTH_HEADER) says `depth` (the connection read it, or 0 when it has
    /// none): refused (508) when it is too deep, on a spare thread if it is a self-call
    /// (`caller`), else through the pool.
    pub(crate) fn submit(
        self: &Arc<Self>,
        req: HttpRequest,
        depth: u32,
        reply: Reply,
        caller: Option<Caller>,
    ) {
        // The connection's clock, read when it read the request (no clock read of its own).
        let at = reply.started;
        self.submit_at(req, depth, reply, caller, at)
    }

    /// [`submit`](Self::submit), handed on at `at` (the clock as just read on this thread).
    fn submit_at(
        self: &Arc<Self>,
        req: HttpRequest,
        depth: u32,
        reply: Reply,
        caller: Option<Caller>,
        at: Instant,
    ) {
        let depth = match check_depth(depth, self.cfg.max_depth) {
            Ok(depth) => depth,
            Err(err) => {
                // A client can send this on every request: one line per interval.
                if let Some(suppressed) = DEPTH_WARNINGS.allow(Instant::now()) {
                    log::warn!(target: "prefork_pool::http", "{err}{}", suppressed_note(suppressed));
                }
                return finish(self, reply, Ok(self.cfg.error_page.pool_error(&err)));
            }
        };
        if let Some(caller) = caller {
            return self.self_call(req, depth, reply, caller);
        }
        let done = Done {
            handoff: self.clone(),
            reply,
            at,
        };
        self.dispatcher.dispatch(req, depth, done);
    }

    /// [`submit`](Self::submit) once the lookup thread has found out whether the TCP client at
    /// `peer` (connected to our `local`) is this process or a sibling: the answer is kept in
    /// `cell` for the connection's next requests, then the request goes on from the lookup
    /// thread. The thread that read it does not wait; the connection's next request is not read
    /// until this one is answered, so answers stay in order.
    pub(crate) fn submit_after_lookup(
        self: &Arc<Self>,
        req: HttpRequest,
        depth: u32,
        reply: Reply,
        (peer, local): (SocketAddr, SocketAddr),
        cell: CallerCell,
    ) {
        let handoff = self.clone();
        self.lookup.look_up(
            peer,
            local,
            self.cfg.siblings.clone(),
            Box::new(move |caller| {
                let _ = cell.set(caller);
                // Handed on from here, later than the connection read it.
                handoff.submit_at(req, depth, reply, caller, Instant::now());
            }),
        );
    }
}

/// Hands complete requests to the Pool.
pub(crate) struct PoolDispatch {
    pub pool: Pool<HttpRequest, HttpResponse>,
    pub max_depth: u32,
    pub busy: Arc<Busy>,
    pub deadline_for: Option<Arc<DeadlineFor>>,
    pub error_page: ErrorPage,
}

impl PoolDispatch {
    /// The request's own deadline (None: the Pool's), its label and client for the log, and its
    /// `Loopback`.
    fn prepare(&self, req: &mut HttpRequest) -> (Option<Duration>, RequestLabel, Option<Arc<str>>) {
        let deadline = self.deadline_for.as_ref().and_then(|f| f(req));
        let label = RequestLabel {
            method: req.method().clone(),
            path: LogPath::of(req.uri()),
        };
        let peer = req.extensions().get::<PeerAddr>().map(|p| p.0.clone());
        req.extensions_mut()
            .insert(Loopback::new(self.pool.clone(), self.max_depth));
        (deadline, label, peer)
    }
}

impl Dispatch for PoolDispatch {
    fn dispatch(&self, mut req: HttpRequest, depth: u32, done: Done) {
        let deadline = self.deadline_for.as_ref().and_then(|f| f(&req));
        // The client for the log is the one `done` carries (the request's `PeerAddr`), and the
        // error page the server's own (`done`'s, the one this dispatcher was given): the
        // callback the pool keeps holds no more than the request's method and path besides.
        let label = RequestLabel {
            method: req.method().clone(),
            path: LogPath::of(req.uri()),
        };
        req.extensions_mut()
            .insert(Loopback::new(self.pool.clone(), self.max_depth));
        // The deadline counts from the connection's reading of the clock; the answer's `Date`
        // and duration from the worker's when its handler returned.
        let at = done.at();
        self.pool
            .submit_then_at(req, deadline, depth, true, Some(at), move |result, now| {
                let result =
                    result.or_else(|e| Ok(label.answer(done.error_page(), &e, done.peer())));
                done.finish_at(result, now)
            });
    }
    fn idle_workers(&self) -> usize {
        self.pool.idle_workers()
    }
    fn attach_sleeper(&self, sleeper: Option<Arc<dyn crate::pool::Sleeper>>) -> bool {
        self.pool.set_sleeper(sleeper);
        true
    }
    fn call_here(&self, mut req: HttpRequest, depth: u32) -> Result<HttpResponse, Error> {
        let (deadline, label, peer) = self.prepare(&mut req);
        let result = self.pool.call_here_at(req, deadline, depth);
        result.or_else(|e| Ok(label.answer(&self.error_page, &e, peer.as_deref().unwrap_or("?"))))
    }
    fn name(&self) -> &str {
        self.pool.name()
    }
    fn tick(&self, now: Instant) {
        self.busy
            .tick(&self.pool.stats(), || self.pool.records(), now);
    }
    fn busy(&self, now: Instant) -> Vec<BusyWorker> {
        self.busy
            .report(self.pool.name(), 0, self.pool.records(), now)
            .busy
    }
    fn not_ready(&self) -> Option<String> {
        let s = self.pool.stats();
        (s.workers_without_state > 0).then(|| {
            format!(
                "{} of {} worker(s) of pool `{}` still without their state",
                s.workers_without_state, s.workers, s.name
            )
        })
    }
    fn stuck(&self, after: Duration, now: Instant) -> Option<String> {
        if let Some(report) = self.busy.spent() {
            return Some(format!(
                "the budget of stuck threads (max_retired) is spent: {report}"
            ));
        }
        let workers = self.pool.stats().workers;
        let report = self
            .busy
            .report(self.pool.name(), workers, self.pool.records(), now);
        report
            .no_progress_for
            .is_some_and(|d| d >= after)
            .then(|| report.to_string())
    }
}

/// What the log says of a request the Pool answered with an error.
struct RequestLabel {
    method: Method,
    path: LogPath,
}

/// The request's path, for the log line of an error answer. A short path is copied into the label
/// itself: cloning the `Uri` instead would allocate on every request (its bytes are shared on
/// their first clone), for a line written only when the Pool answers with an error.
enum LogPath {
    Inline { buf: [u8; LogPath::INLINE], len: u8 },
    Uri(Uri),
}

impl LogPath {
    const INLINE: usize = 64;

    fn of(uri: &Uri) -> Self {
        let path = uri.path().as_bytes();
        if path.len() <= Self::INLINE {
            let mut buf = [0; Self::INLINE];
            buf[..path.len()].copy_from_slice(path);
            LogPath::Inline {
                buf,
                len: path.len() as u8,
            }
        } else {
            LogPath::Uri(uri.clone())
        }
    }

    fn as_str(&self) -> &str {
        match self {
            // Whole bytes of a `str`, copied: valid UTF-8.
            LogPath::Inline { buf, len } => std::str::from_utf8(&buf[..usize::from(*len)])
                .expect("a whole path copied from a str"),
            LogPath::Uri(uri) => uri.path(),
        }
    }
}

impl RequestLabel {
    /// Log `e` with the request it answers (a 500 at `error`, the others at `warn`, on target
    /// `prefork_pool::http`), and render its answer. `peer`: the client.
    fn answer(&self, page: &ErrorPage, e: &Error, peer: &str) -> HttpResponse {
        let status = e.http_status();
        let level = if status == 500 {
            log::Level::Error
        } else {
            log::Level::Warn
        };
        log::log!(
            target: "prefork_pool::http",
            level,
            "`{} {}` from {}: answered {status}: {e}",
            self.method,
            self.path.as_str(),
            peer,
        );
        page.pool_error(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The error log names the request's path whether it was copied into the label (short) or
    /// kept with the `Uri` (long), and never a truncated one.
    #[test]
    fn the_log_path_is_the_whole_path_short_or_long() {
        let short: Uri = "/get_hello_world?sid=1".parse().unwrap();
        assert!(matches!(LogPath::of(&short), LogPath::Inline { .. }));
        assert_eq!(LogPath::of(&short).as_str(), "/get_hello_world");
        let exact = format!("/{}", "b".repeat(LogPath::INLINE - 1));
        let exact_uri: Uri = exact.parse().unwrap();
        assert!(matches!(LogPath::of(&exact_uri), LogPath::Inline { .. }));
        assert_eq!(LogPath::of(&exact_uri).as_str(), exact);
        let long = format!("/{}", "a".repeat(300));
        let long_uri: Uri = long.parse().unwrap();
        assert!(matches!(LogPath::of(&long_uri), LogPath::Uri(_)));
        assert_eq!(LogPath::of(&long_uri).as_str(), long);
    }
}
