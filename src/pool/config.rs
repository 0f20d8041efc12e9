//! A pool's checked settings ([`PoolConfig`]), its limits (`MAX_*`), worker hooks, the per-worker
//! state's init, and the [`Reentry`] policy for a handler that calls its own pool (or another pool):
//! what every other pool file reads.

use std::sync::Arc;
use std::time::Duration;

use super::per_worker::StateInit;

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
    /// The per-worker state's init, for a pool built with `build_with_state`.
    pub(crate) state: Option<Arc<dyn StateInit>>,
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
            state: None,
        }
    }
}

/// What a pool does with a call made from inside one of its own handlers, and how calls between
/// pools keep each pool's bound without deadlocking.
///
/// This is the one place that explains a handler that calls its own pool (or, over HTTP, its own
/// server), or another pool; the rest of the documentation links here.
///
/// # The deadlock this prevents
///
/// A pool of `N` workers whose handler calls the same pool: each running handler holds a worker
/// while it waits for another. With one worker (gunicorn's default sync worker, serving a handler
/// that calls its own server) the first such call hangs; with `N` workers, `N` such calls at once
/// hang. Adding workers only moves the cliff. The same happens across pools: A's handler calls B
/// while B's handler calls A, each pool full.
///
/// # Three kinds of nested call
///
/// - **Same pool** (a handler calls its own pool, directly or further down its chain of calls): the
///   policy below decides. Under `Inline` the call runs on the calling thread, which already is one
///   of the pool's workers.
/// - **Another pool, no cycle** (a web handler calls a `db` pool): the call waits in the target's
///   queue like any call, bounded by its deadline, and runs on one of the target's workers. So a
///   pool is a real bulkhead: it never runs more handlers at once than its `workers`, whoever calls
///   it, and every run happens on one of its workers (or on a thread already running one of its
///   handlers), so per-worker state opened in
///   [`on_worker_start`](crate::PoolBuilder::on_worker_start) is always there.
/// - **A cycle of pools** (A's handler waits on B, whose handler calls A): every job carries its
///   chain of callers across the queue. When the chain shows a job of A waiting, directly or through
///   other pools, for this very call, the call is queued as usual *and* handed to the A worker that
///   waits for the chain, which runs it itself while it waits (rayon's "help while waiting") and
///   hands the answer back. So the cycle is answered even with every worker of both pools busy, and
///   A's handler still runs only on A's threads. Under `Reject` (the target's policy) the call fails
///   at once with [`Error::Reentrant`](crate::Error::Reentrant) naming the cycle (`a -> b -> a`).
///
/// What is *not* detected: a wait-for cycle between *different* chains through full queues (chain
/// 1 holds every A worker and waits on B's queue, chain 2 holds every B worker and waits on A's
/// queue). No chain waits for itself there; each call ends at its deadline with
/// `DeadlineExceeded` (it never hangs for longer). Size pools called in a ring so that one of them
/// always has a worker to spare, or keep the calls one-way.
///
/// # `Inline` (the default)
///
/// A same-pool nested call runs on the calling thread, at once, never queued, with the earlier of
/// its own and its caller's deadline, and a [`Context`](crate::Context) that reports its caller's
/// cancellation. This is what rayon's `install` does for a pool thread.
///
/// A [`Ticket`](crate::Ticket) waited on from inside a handler of the same pool takes its job back
/// and runs it on the waiting thread if no worker has started it, so `submit` + `wait` from a
/// handler cannot deadlock either. A ticket of another pool waits for that pool's worker (or, around
/// a cycle, is handed over as above).
///
/// The cost: for the duration of a same-pool nested call the pool runs one more handler than it has
/// workers, on the caller's thread and stack (each level of nesting adds the handler's stack
/// frames), and a per-worker resource is shared by the caller and the nested call on that thread.
/// A handler that holds a lock across its nested call (same pool, another pool, or a cycle) can
/// still deadlock, as with rayon, if the nested handler takes the same lock: the guard removes the
/// wait for a worker, not waits you write yourself.
///
/// # `Reject`
///
/// A same-pool nested call, or a call that closes a cycle of pools back into this one, fails at
/// once with [`Error::Reentrant`](crate::Error::Reentrant), naming the pool (or the cycle) and the
/// worker, and no handler runs for it. A plain call from another pool is not re-entrant: it waits
/// in the queue. Choose it to find such calls in tests or staging and
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
    /// Run a same-pool nested call on the calling thread, at once; answer a cycle of pools on the
    /// waiting worker.
    #[default]
    Inline,
    /// Refuse a same-pool nested call, or a cycle of pools, with `Error::Reentrant`.
    Reject,
}
