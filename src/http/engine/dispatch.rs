//! [`PoolDispatch`]: hands complete requests to the Pool (from the thread that read them: an idle
//! worker, to which the Pool lends the job back, or the reactor), each with a [`Loopback`] in its
//! extensions and its route's deadline ([`deadline_for`](crate::http::ServerBuilder::deadline_for));
//! a Pool error is logged with the request it answers (method, path, client) and rendered by the
//! server's [`ErrorPage`].

use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{Method, Uri};

use crate::http::engine::handoff::{Dispatch, Done};
use crate::http::ops::stuck::{Busy, BusyWorker};
use crate::http::self_call::loopback::Loopback;
use crate::http::types::{HttpRequest, HttpResponse, PeerAddr};
use crate::http::wire::response::ErrorPage;
use crate::{Error, Pool};

/// The application's choice of a deadline per request, set with
/// [`ServerBuilder::deadline_for`](crate::http::ServerBuilder::deadline_for).
pub(crate) type DeadlineFor = dyn Fn(&HttpRequest) -> Option<Duration> + Send + Sync;

/// Hands complete requests to the Pool.
pub(crate) struct PoolDispatch {
    pub pool: Pool<HttpRequest, HttpResponse>,
    pub max_depth: u32,
    pub busy: Arc<Busy>,
    pub deadline_for: Option<Arc<DeadlineFor>>,
    pub error_page: ErrorPage,
}

impl PoolDispatch {
    /// The request's own deadline (None: the Pool's), its label for the log, and its `Loopback`.
    fn prepare(&self, req: &mut HttpRequest, depth: u32) -> (Option<Duration>, Label) {
        let deadline = self.deadline_for.as_ref().and_then(|f| f(req));
        let label = Label::of(req);
        req.extensions_mut()
            .insert(Loopback::new(self.pool.clone(), self.max_depth, depth));
        (deadline, label)
    }
}

impl Dispatch for PoolDispatch {
    fn dispatch(&self, mut req: HttpRequest, depth: u32, done: Done) {
        let deadline = self.deadline_for.as_ref().and_then(|f| f(&req));
        // The client for the log is the one `done` carries (the request's `PeerAddr`).
        let label = Label {
            method: req.method().clone(),
            uri: req.uri().clone(),
            peer: None,
        };
        req.extensions_mut()
            .insert(Loopback::new(self.pool.clone(), self.max_depth, depth));
        let page = self.error_page.clone();
        self.pool.submit_then(req, deadline, move |result| {
            let result = result.or_else(|e| Ok(label.answer(&page, &e, Some(done.peer()))));
            done.finish(result)
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
        let (deadline, label) = self.prepare(&mut req, depth);
        let result = self.pool.call_here(req, deadline);
        result.or_else(|e| Ok(label.answer(&self.error_page, &e, None)))
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
struct Label {
    method: Method,
    uri: Uri,
    peer: Option<Arc<str>>,
}

impl Label {
    fn of(req: &HttpRequest) -> Self {
        Label {
            method: req.method().clone(),
            uri: req.uri().clone(),
            peer: req.extensions().get::<PeerAddr>().map(|p| p.0.clone()),
        }
    }

    /// Log `e` with the request it answers (a 500 at `error`, the others at `warn`, on target
    /// `prefork_pool::http`), and render its answer. `peer`: the client, when the label has none.
    fn answer(&self, page: &ErrorPage, e: &Error, peer: Option<&str>) -> HttpResponse {
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
            self.uri.path(),
            self.peer.as_deref().or(peer).unwrap_or("?"),
        );
        page.pool_error(e)
    }
}
