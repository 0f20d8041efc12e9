//! A pool's checked settings ([`PoolConfig`]), its limits (`MAX_*`), worker hooks, and the
//! [`Reentry`] policy for a handler that calls its own pool: the leaf every other pool file reads.

use std::sync::Arc;
use std::time::Duration;

/// A worker start or exit hook, called with the worker's index.
pub(crate) type Hook = Arc<dyn Fn(usize) + Send + Sync>;

/// The largest worker count `build()` accepts.
pub const MAX_WORKERS: usize = 4096;
/// The largest queue capacity `build()` accepts.
pub const MAX_QUEUE: usize = 1 << 20;
/// The longest default deadline `build()` accepts (one day).
pub const MAX_DEADLINE: Duration = Duration::from_secs(24 * 3600);

/// The settings of a pool. In a [`PoolBuilder`](crate::PoolBuilder) they are unchecked (and
/// `workers` / `max_retired` are not filled in yet); once `check()` passed they are what the pool
/// runs with.
#[derive(Clone)]
pub(crate) struct PoolConfig {
    pub(crate) name: String,
    pub(crate) workers: usize,
    pub(crate) queue_capacity: usize,
    pub(crate) deadline: Duration,
    pub(crate) max_requests: u64,
    pub(crate) max_requests_jitter: u64,
    pub(crate) max_retired: usize,
    pub(crate) reentry: Reentry,
    pub(crate) on_worker_start: Option<Hook>,
    pub(crate) on_worker_exit: Option<Hook>,
}

impl Default for PoolConfig {
    fn default() -> Self {
        PoolConfig {
            name: "pool".to_owned(),
            workers: 0,
            queue_capacity: 1024,
            deadline: Duration::from_secs(30),
            max_requests: 0,
            max_requests_jitter: 0,
            max_retired: 0,
            reentry: Reentry::Inline,
            on_worker_start: None,
            on_worker_exit: None,
        }
    }
}

/// What a pool does with a call made from inside one of its own handlers.
///
/// This is the one place that explains a handler that calls its own pool (or, over HTTP, its own
/// server); the rest of the documentation links here.
///
/// # The deadlock this prevents
///
/// A pool of `N` workers whose handler calls the same pool: each running handler holds a worker
/// while it waits for another. With one worker (gunicorn's default sync worker, serving a handler
/// that calls its own server) the first such call hangs; with `N` workers, `N` such calls at once
/// hang. Adding workers only moves the cliff. The same happens across pools: A's handler calls B
/// while B's handler calls A, each pool full.
///
/// # `Inline` (the default)
///
/// The nested call runs on the calling thread, at once, never queued, with the earlier of its own
/// and its caller's deadline, and a [`Context`](crate::Context) that reports its caller's
/// cancellation. A call into a pool from a worker of *another* pool runs inline too when the target
/// pool has no idle worker, so a cycle of pools cannot deadlock. This is what rayon's `install` does
/// for a pool thread.
///
/// A [`Ticket`](crate::Ticket) waited on from inside a handler of the same pool (or of another
/// pool, when this one has no idle worker) takes its job back and runs it on the waiting thread if
/// no worker has started it, so `submit` + `wait` from a handler cannot deadlock either.
///
/// The cost: for the duration of the nested call the pool runs one more handler than it has
/// workers, on the caller's thread and stack (each level of nesting adds the handler's stack
/// frames). A handler that holds a lock across its nested call can still deadlock, as with rayon, if
/// the nested handler takes the same lock: the guard removes the wait for a worker, not waits you
/// write yourself.
///
/// # `Reject`
///
/// The nested call fails at once with [`Error::Reentrant`](crate::Error::Reentrant), naming the pool
/// and the worker, and no handler runs for it. Choose it to find such calls in tests or staging and
/// replace them with direct function calls.
///
/// ```
/// use prefork_pool::{Error, Pool, Reentry};
///
/// let pool = Pool::builder()
///     .workers(1)
///     .reentry(Reentry::Reject)
///     .build(|n: u32, ctx| -> Result<u32, Error> {
///         if n == 0 {
///             return Ok(0);
///         }
///         let me = ctx.pool::<u32, Result<u32, Error>>().expect("pool alive");
///         me.call(n - 1)?
///     })
///     .unwrap();
/// assert!(matches!(pool.call(1).unwrap(), Err(Error::Reentrant { .. })));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Reentry {
    /// Run the nested call on the calling thread, at once.
    #[default]
    Inline,
    /// Refuse the nested call with `Error::Reentrant`.
    Reject,
}
