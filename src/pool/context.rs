//! What a handler knows about the job it runs.

use std::any::Any;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::guard::NOT_A_WORKER;
use super::job::JobView;

/// The job a handler is running: its deadline, its cancellation, where it runs, and a handle to
/// the pool itself (so a handler can call its own pool with no global; see
/// [`Reentry`](crate::Reentry) for what such a call does).
///
/// ```
/// use prefork_pool::Pool;
///
/// let pool = Pool::builder().workers(1).build(|n: u64, ctx| {
///     assert!(ctx.remaining() > std::time::Duration::ZERO);
///     assert!(!ctx.is_cancelled());
///     if n == 0 {
///         return 0;
///     }
///     // The handler reaches its own pool through its Context; the nested call runs inline.
///     let me = ctx.pool::<u64, u64>().unwrap();
///     n + me.call(n - 1).unwrap()
/// }).unwrap();
/// assert_eq!(pool.call(4).unwrap(), 10);
/// ```
pub struct Context {
    pub(crate) job: Arc<dyn JobView>,
    pub(crate) worker: usize,
    pub(crate) inline: bool,
    /// A `Weak<Owner<Req, Resp>>`: [`Context::pool`] (in `mod.rs`, beside `Pool`) turns it back
    /// into a handle.
    pub(crate) pool: Arc<dyn Any + Send + Sync>,
}

impl Context {
    /// A context of no pool, for a handler run outside one ([`Router::oneshot`]): its deadline
    /// `budget` from now, job id 0, no worker.
    ///
    /// [`Router::oneshot`]: crate::http::Router::oneshot
    #[cfg(feature = "http")]
    pub(crate) fn detached(budget: Duration) -> Context {
        let job = super::job::JobCore::new(0, usize::MAX, budget, None, 0, Instant::now());
        Context {
            job: Arc::new(job),
            worker: NOT_A_WORKER,
            inline: false,
            pool: Arc::new(()),
        }
    }

    /// When the caller stops waiting: the earlier of this job's deadline and, for a nested call,
    /// its caller's.
    pub fn deadline(&self) -> Instant {
        self.job.core().deadline
    }

    /// How long until [`deadline`](Self::deadline); zero once it has passed.
    pub fn remaining(&self) -> Duration {
        self.deadline().saturating_duration_since(Instant::now())
    }

    /// True once nobody waits for this answer any more: the deadline passed, the pool was shut down,
    /// or (for a nested call) the caller's job was cancelled. A long handler checks it and returns
    /// early; its answer would be dropped anyway.
    pub fn is_cancelled(&self) -> bool {
        self.job.core().is_cancelled() || Instant::now() >= self.deadline()
    }

    /// The index (`0..workers`) of the worker running this job; `None` when the job runs on a
    /// thread that is not one of this pool's workers (a job run by
    /// [`Pool::call_here`](crate::Pool::call_here)). A nested call from another pool's handler runs
    /// on one of this pool's workers, so it has an index.
    ///
    /// ```
    /// use prefork_pool::Pool;
    ///
    /// let pool = Pool::builder().workers(1).build(|_: (), ctx| ctx.worker()).unwrap();
    /// assert_eq!(pool.call(()).unwrap(), Some(0));
    /// assert_eq!(pool.call_here((), None).unwrap(), None);
    /// ```
    pub fn worker(&self) -> Option<usize> {
        (self.worker != NOT_A_WORKER).then_some(self.worker)
    }

    /// True when this job runs inline on its caller's thread (a nested call; see
    /// [`Reentry`](crate::Reentry)).
    pub fn is_inline(&self) -> bool {
        self.inline
    }

    /// The job's id, unique within its pool, as in log lines and errors.
    pub fn job_id(&self) -> u64 {
        self.job.core().id
    }

    /// How deep this job is nested: 0 for a job submitted from outside any handler, one more for
    /// each call made from inside a handler. Under the HTTP server it is the request's depth: its
    /// [`X-Prefork-Depth`](crate::http::DEPTH_HEADER) when the server honours it (a call from this
    /// host), or one more than the handler's whose [`Loopback`](crate::http::Loopback) sent it.
    pub fn depth(&self) -> u32 {
        self.job.core().depth
    }
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("job_id", &self.job_id())
            .field("worker", &self.worker())
            .field("depth", &self.depth())
            .field("remaining", &self.remaining())
            .field("cancelled", &self.is_cancelled())
            .finish()
    }
}
