//! The supervised worker pool: [`Pool`] (the handle users hold) and `Owner` (whose drop shuts it
//! down), over the engine in the files below.
//!
//! Arrows run from the engine down to the leaves, never back: `mod` uses `builder`, `submit`,
//! `worker`, `watchdog`, `shutdown` and `ticket`; those use `state` (the shared `PoolState`);
//! `state` uses `context`, `guard` and `job`; `job` uses `completion`; `config` uses `per_worker`
//! (the per-worker state of `build_with_state`), which uses `context`. `completion`, `deadlines`,
//! `record` (what each worker runs) and `stats` are leaves.

mod builder;
mod completion;
mod config;
mod context;
mod deadlines;
mod guard;
mod idle_wait;
mod job;
mod per_worker;
#[cfg_attr(not(feature = "http"), allow(dead_code))]
mod record;
mod shutdown;
mod state;
mod stats;
mod submit;
mod ticket;
mod watchdog;
mod worker;

use std::any::Any;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

pub use builder::PoolBuilder;
pub use config::{Reentry, MAX_DEADLINE, MAX_QUEUE, MAX_WORKERS};
pub use context::Context;
pub use shutdown::ShutdownReport;
pub use stats::Stats;
pub use ticket::Ticket;

#[cfg(feature = "http")]
pub(crate) use guard::current_depth;
#[cfg(feature = "http")]
pub(crate) use idle_wait::Sleeper;
#[cfg(feature = "http")]
pub(crate) use record::{Label, Record};

use crate::error::{BuildError, Error, TrySubmitError};
use completion::Waiter;
use config::PoolConfig;
use shutdown::spawn_shutdown;
use state::{Handler, PoolState};

/// A fixed set of worker threads running one handler, with a bounded queue, per-job deadlines, a
/// watchdog, and a re-entrancy guard.
///
/// `Pool` is a cheap handle (`Clone`); the pool shuts down gracefully when the last handle is
/// dropped (waiting at most its default `deadline` for queued and running jobs).
///
/// Every call gets exactly one answer: the handler's, or an [`Error`] that says why not.
///
/// ```
/// use prefork_pool::{Error, Pool};
/// use std::time::Duration;
///
/// let pool = Pool::builder()
///     .workers(2)
///     .deadline(Duration::from_secs(1))
///     .build(|name: String, _ctx| format!("hello, {name}"))
///     .unwrap();
/// assert_eq!(pool.call("world".into()).unwrap(), "hello, world");
/// pool.shutdown(Duration::from_secs(5));
/// assert!(matches!(pool.call("late".into()), Err(Error::ShuttingDown { .. })));
/// ```
pub struct Pool<Req: Send + 'static, Resp: Send + 'static> {
    pub(crate) owner: Arc<Owner<Req, Resp>>,
}

/// The part whose drop shuts the pool down; workers hold `PoolState`, never this.
pub(crate) struct Owner<Req: Send + 'static, Resp: Send + 'static> {
    state: Arc<PoolState<Req, Resp>>,
}

impl<Req: Send + 'static, Resp: Send + 'static> Drop for Owner<Req, Resp> {
    fn drop(&mut self) {
        let state = self.state.clone();
        let timeout = state.config.deadline;
        if guard::inside(state.id) {
            // The last handle went away inside one of the pool's own handlers: waiting here would
            // wait for this very thread.
            spawn_shutdown(state, timeout, false);
        } else {
            state.shutdown(timeout, false);
        }
    }
}

impl Context {
    /// A handle to the pool running this job, if it is still alive and its types are `Req, Resp`.
    /// Calls through it from this handler follow the pool's [`Reentry`](crate::Reentry) policy.
    pub fn pool<Req: Send + 'static, Resp: Send + 'static>(&self) -> Option<Pool<Req, Resp>> {
        let weak = self.pool.downcast_ref::<Weak<Owner<Req, Resp>>>()?;
        weak.upgrade().map(|owner| Pool { owner })
    }
}

impl<Req: Send + 'static, Resp: Send + 'static> Clone for Pool<Req, Resp> {
    fn clone(&self) -> Self {
        Pool {
            owner: self.owner.clone(),
        }
    }
}

impl<Req: Send + 'static, Resp: Send + 'static> std::fmt::Debug for Pool<Req, Resp> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("name", &self.name())
            .field("workers", &self.owner.state.config.workers)
            .finish()
    }
}

impl<Req: Send + 'static, Resp: Send + 'static> Pool<Req, Resp> {
    /// A [`PoolBuilder`] with the defaults (see its table).
    pub fn builder() -> PoolBuilder<Req, Resp> {
        PoolBuilder::new()
    }

    /// Start the watchdog and the workers; return once every worker waits for a job, or with the
    /// error of a worker whose state's init failed (every thread stopped).
    pub(crate) fn start(
        config: PoolConfig,
        handler: Handler<Req, Resp>,
    ) -> Result<Self, BuildError> {
        let owner = Arc::new_cyclic(|weak| {
            let any: Arc<dyn Any + Send + Sync> = Arc::new(weak.clone());
            Owner {
                state: Arc::new(PoolState::new(config, handler, any)),
            }
        });
        owner.state.start_watchdog();
        if let Err(e) = owner.state.start_workers() {
            owner.state.shutdown(Duration::ZERO, true);
            return Err(e);
        }
        Ok(Pool { owner })
    }

    #[inline]
    fn state(&self) -> &Arc<PoolState<Req, Resp>> {
        &self.owner.state
    }

    /// Run `req` on a worker and wait for the answer, with the pool's default deadline.
    ///
    /// From inside one of this pool's handlers (a handler that calls its own pool) the call
    /// follows the [`Reentry`] policy: by default it runs at once on the calling thread. From a
    /// handler of another pool it waits in this pool's queue like any call (the pool's `workers`
    /// bound holds whoever calls); only a call that closes a cycle of pools back into this one
    /// (this pool's handler waits, through other pools, for the caller) is handed to the waiting
    /// worker of this pool, or refused under [`Reentry::Reject`]. A handler that holds a lock
    /// across a nested call can still deadlock if the nested handler takes that lock. See
    /// [`Reentry`].
    ///
    /// # Errors
    /// [`Error::Overloaded`] at once when the queue is full; [`Error::DeadlineExceeded`] at the
    /// deadline; [`Error::Panicked`] if the handler panicked; [`Error::ShuttingDown`];
    /// [`Error::Reentrant`] under [`Reentry::Reject`].
    pub fn call(&self, req: Req) -> Result<Resp, Error> {
        self.call_at(req, None, 0)
    }

    /// [`call`](Self::call) with a deadline of its own, from now. A nested call keeps the earlier
    /// of this and its caller's deadline.
    pub fn call_with(&self, req: Req, deadline: Duration) -> Result<Resp, Error> {
        self.call_at(req, Some(deadline), 0)
    }

    /// [`call`](Self::call) (or [`call_with`](Self::call_with)) for a request `depth` deep: the
    /// job's [`Context::depth`] is at least `depth` (the HTTP server's `X-Prefork-Depth`).
    pub(crate) fn call_at(
        &self,
        req: Req,
        deadline: Option<Duration>,
        depth: u32,
    ) -> Result<Resp, Error> {
        self.state().call(req, deadline, depth)
    }

    /// Queue `req` and return at once with a [`Ticket`] for its answer. A job refused at once
    /// (queue full, shutting down) gets a ticket that already holds the error.
    ///
    /// The ticket is a future too: from async code, `pool.submit(req).await` waits without
    /// blocking a runtime thread (see [Async callers](Ticket#async-callers)). Dropping the ticket
    /// before the job started gives the job back; [`Ticket::detach`] lets it run unwatched.
    pub fn submit(&self, req: Req) -> Ticket<Resp> {
        match self
            .state()
            .submit(req, None, 0, Waiter::Nobody, false, None)
        {
            Ok(job) => Ticket::queued(job),
            Err((err, _req, _)) => Ticket::refused(err),
        }
    }

    /// Queue `req` if there is room; otherwise give it back at once.
    ///
    /// ```
    /// use prefork_pool::{Pool, TrySubmitError};
    /// use std::sync::mpsc;
    ///
    /// let (release, gate) = mpsc::channel::<()>();
    /// let gate = std::sync::Mutex::new(gate);
    /// let pool = Pool::builder().workers(1).queue_capacity(1).build(move |x: u32, _| {
    ///     if x == 0 { gate.lock().unwrap().recv().ok(); }
    ///     x
    /// }).unwrap();
    /// let busy = pool.submit(0);                        // occupies the only worker
    /// while pool.stats().busy == 0 { std::thread::yield_now(); }
    /// let queued = pool.try_submit(1).unwrap();         // fills the queue
    /// match pool.try_submit(2) {
    ///     Err(TrySubmitError::Full(req)) => assert_eq!(req, 2),
    ///     other => panic!("{:?}", other.map(|_| ())),
    /// }
    /// release.send(()).unwrap();
    /// assert_eq!(busy.wait().unwrap(), 0);
    /// assert_eq!(queued.wait().unwrap(), 1);
    /// ```
    ///
    /// # Errors
    /// [`TrySubmitError::Full`] or [`TrySubmitError::ShuttingDown`], with the request.
    pub fn try_submit(&self, req: Req) -> Result<Ticket<Resp>, TrySubmitError<Req>> {
        match self
            .state()
            .submit(req, None, 0, Waiter::Nobody, false, None)
        {
            Ok(job) => Ok(Ticket::queued(job)),
            Err((Error::Overloaded { .. }, req, _)) => Err(TrySubmitError::Full(req)),
            Err((Error::ShuttingDown { .. }, req, _)) => Err(TrySubmitError::ShuttingDown(req)),
            Err((err, _req, _)) => Ok(Ticket::refused(err)),
        }
    }

    /// Queue `req` and have `done` called with its answer: the completion-callback form a reactor
    /// uses. `deadline` overrides the pool's default.
    ///
    /// `done` is called exactly once: on a worker thread with the handler's answer, on the watchdog
    /// thread with [`Error::DeadlineExceeded`], or on the calling thread *before `submit_then`
    /// returns* when the job is refused at once ([`Error::Overloaded`], [`Error::ShuttingDown`]).
    /// Keep it short: it runs on a worker. A panic in it is caught and logged; the pool thread
    /// that ran it goes on.
    ///
    /// ```
    /// use prefork_pool::Pool;
    /// use std::sync::mpsc;
    ///
    /// let pool = Pool::builder().workers(1).build(|x: u32, _| x + 1).unwrap();
    /// let (tx, rx) = mpsc::channel();
    /// pool.submit_then(41, None, move |answer| tx.send(answer).unwrap());
    /// assert_eq!(rx.recv().unwrap().unwrap(), 42);
    /// ```
    pub fn submit_then(
        &self,
        req: Req,
        deadline: Option<Duration>,
        done: impl FnOnce(Result<Resp, Error>) + Send + 'static,
    ) {
        self.submit_then_at(req, deadline, 0, false, None, move |answer, _| done(answer))
    }

    /// [`submit_then`](Self::submit_then) for a request `depth` deep (see [`call_at`](Self::call_at)).
    /// `finishing`: the caller never waits for the answer on this thread, so when it submits
    /// from a worker's answer (the HTTP server read a connection's next request while it wrote
    /// the answer to the one before), that worker takes the job next instead of the queue.
    /// `now`: the caller's reading of the clock, just taken, that the deadline counts from
    /// (`None`: read here). `done` gets, besides the answer, the clock reading of the thread
    /// that made it when it has one (a worker reads it when its handler returns). Inlined: the
    /// request goes from the caller's frame to `submit`'s with no copy in between.
    #[inline]
    pub(crate) fn submit_then_at(
        &self,
        req: Req,
        deadline: Option<Duration>,
        depth: u32,
        finishing: bool,
        now: Option<Instant>,
        done: impl FnOnce(Result<Resp, Error>, Option<Instant>) + Send + 'static,
    ) {
        let waiter = Waiter::Callback(Box::new(done));
        let refused = self
            .state()
            .submit(req, deadline, depth, waiter, finishing, now);
        if let Err((err, _req, Waiter::Callback(done))) = refused {
            done(Err(err), None);
        }
    }

    /// Run the handler for `req` on the calling thread, now: not queued, not on a worker. For a
    /// caller that has a thread of its own to lend when waiting for a worker could deadlock (the
    /// HTTP server serves a request that its own process sent over TCP this way; see
    /// [`Reentry`]). The job gets
    /// `deadline` (or the pool's default), or its caller's earlier one when called from a handler;
    /// the watchdog does not watch it, since the calling thread is not the pool's to retire; a
    /// result that comes after the deadline is answered `DeadlineExceeded`. The handler's
    /// [`Context::worker`] is `None`.
    ///
    /// ```
    /// use prefork_pool::Pool;
    /// let pool = Pool::builder().workers(1).build(|x: u32, ctx| (x, ctx.worker())).unwrap();
    /// assert_eq!(pool.call_here(7, None).unwrap(), (7, None));
    /// assert_eq!(pool.call(8).unwrap(), (8, Some(0)));
    /// ```
    ///
    /// On a pool built with [`build_with_state`](PoolBuilder::build_with_state) it fails with
    /// [`Error::Reentrant`] at once: the calling thread holds no per-worker state.
    ///
    /// # Errors
    /// [`Error::Panicked`], [`Error::DeadlineExceeded`], or [`Error::ShuttingDown`] once the pool
    /// has stopped; [`Error::Reentrant`] on a pool with per-worker state.
    pub fn call_here(&self, req: Req, deadline: Option<Duration>) -> Result<Resp, Error> {
        self.call_here_at(req, deadline, 0)
    }

    /// [`call_here`](Self::call_here) for a request `depth` deep (see [`call_at`](Self::call_at)).
    pub(crate) fn call_here_at(
        &self,
        req: Req,
        deadline: Option<Duration>,
        depth: u32,
    ) -> Result<Resp, Error> {
        self.state().call_here(req, deadline, depth)
    }

    /// Sets what the watchdog calls when a job runs past its deadline and its worker cannot be
    /// retired (the `max_retired` budget is spent). Once; later calls are ignored.
    #[cfg(feature = "http")]
    pub(crate) fn on_budget_spent(&self, hook: impl Fn() + Send + Sync + 'static) {
        let _ = self.owner.state.on_budget_spent.set(Box::new(hook));
    }

    /// Sets how a claimed job is named in the pool's records (the HTTP server writes the request
    /// line). Once, before any job is submitted; later calls are ignored.
    #[cfg(feature = "http")]
    pub(crate) fn describe_with(
        &self,
        describe: impl Fn(&Req, &mut Label) + Send + Sync + 'static,
    ) {
        let _ = self.owner.state.describe.set(Box::new(describe));
    }

    /// What every worker runs now, and every thread the watchdog retired whose handler has not
    /// returned yet (`worker: None`): the one record the stuck report and the heartbeat read.
    #[cfg(feature = "http")]
    pub(crate) fn records(&self) -> Vec<Record> {
        self.state().workers.records()
    }

    /// Have the idle workers wait in `sleeper` instead of on the pool's own condition variable
    /// (`None`: back to it). The HTTP server's idle workers wait on its connections this way.
    #[cfg(feature = "http")]
    pub(crate) fn set_sleeper(&self, sleeper: Option<Arc<dyn Sleeper>>) {
        self.state().queue.set_sleeper(sleeper);
    }

    /// Workers waiting for a job right now (a snapshot; it may change at once).
    pub fn idle_workers(&self) -> usize {
        self.state().idle_workers()
    }

    /// A snapshot of the pool's state and counters.
    pub fn stats(&self) -> Stats {
        self.state().stats()
    }

    /// The pool's name.
    pub fn name(&self) -> &str {
        self.state().name()
    }

    /// Stop taking jobs ([`Error::ShuttingDown`] from now on), let the workers finish every queued
    /// and running job for up to `graceful_timeout`, then answer whatever is left with
    /// `ShuttingDown`, cancel it, and join the threads. Returns within `graceful_timeout` plus at
    /// most a second. Calling it again (or dropping the pool afterwards) does nothing more.
    ///
    /// Called from inside one of this pool's own handlers, it cannot wait for the workers (the
    /// caller is one): the shutdown then runs on a thread of its own and the report is empty.
    pub fn shutdown(&self, graceful_timeout: Duration) -> ShutdownReport {
        self.stop(graceful_timeout, false)
    }

    /// Stop at once: every queued and running job is answered with [`Error::ShuttingDown`] now and
    /// its context cancelled; then wait up to a second for the workers to exit.
    /// From inside one of this pool's handlers, as [`shutdown`](Self::shutdown).
    pub fn shutdown_now(&self) -> ShutdownReport {
        self.stop(Duration::ZERO, true)
    }

    fn stop(&self, graceful_timeout: Duration, now: bool) -> ShutdownReport {
        let state = self.state().clone();
        if guard::inside(state.id) {
            spawn_shutdown(state, graceful_timeout, now);
            return ShutdownReport::default();
        }
        state.shutdown(graceful_timeout, now)
    }
}
