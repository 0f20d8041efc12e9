//! The re-entrancy guard: a thread-local chain of the pools whose handlers this thread is running.
//!
//! A call into a pool looks here first. A call from inside one of the pool's own handlers never waits
//! for a worker (it would be waiting for itself); see [`Reentry`].

use std::cell::RefCell;
use std::sync::Arc;

use super::job::JobView;

/// What a pool does with a call made from inside one of its own handlers.
///
/// # The deadlock this prevents
///
/// A pool of `N` workers whose handler calls the same pool: each running handler holds a worker
/// while it waits for another. With one worker (gunicorn's default sync worker, the seed of this
/// crate) the first such call hangs; with `N` workers, `N` such calls at once hang. Adding workers
/// only moves the cliff. The same happens across pools: A's handler calls B while B's handler calls
/// A, each pool full.
///
/// # `Inline` (the default)
///
/// The nested call runs on the calling thread, at once, never queued, with the earlier of its own
/// and its caller's deadline, and a [`Context`](crate::Context) that reports its caller's
/// cancellation. A call into a pool from a worker of *another* pool runs inline too when the target
/// pool has no idle worker, so a cycle of pools cannot deadlock. This is what rayon's `install` does
/// for a pool thread.
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

/// One handler this thread is running.
pub(crate) struct Frame {
    pub(crate) pool: usize,
    pub(crate) worker: usize,
    pub(crate) job: Arc<dyn JobView>,
}

thread_local! {
    static CHAIN: RefCell<Vec<Frame>> = const { RefCell::new(Vec::new()) };
}

/// What the chain says about a call into `pool`.
pub(crate) enum Position {
    /// Not inside any handler.
    Outside,
    /// Inside a handler of another pool; here is the innermost job (the parent of the call).
    InOther(Arc<dyn JobView>),
    /// Inside a handler of this very pool, on `worker`; here is the innermost job.
    InSame(Arc<dyn JobView>, usize),
}

pub(crate) fn position(pool: usize) -> Position {
    CHAIN.with(|c| {
        let chain = c.borrow();
        let Some(top) = chain.last() else {
            return Position::Outside;
        };
        if top.pool == pool {
            return Position::InSame(top.job.clone(), top.worker);
        }
        match chain.iter().rev().find(|f| f.pool == pool) {
            Some(f) => Position::InSame(top.job.clone(), f.worker),
            None => Position::InOther(top.job.clone()),
        }
    })
}

/// True when this thread runs a handler of `pool`.
pub(crate) fn inside(pool: usize) -> bool {
    CHAIN.with(|c| c.borrow().iter().any(|f| f.pool == pool))
}

/// True when this thread runs any pool's handler.
pub(crate) fn in_any() -> bool {
    CHAIN.with(|c| !c.borrow().is_empty())
}

/// Pops its frame when dropped, so the chain stays right whatever the handler does.
pub(crate) struct Entered(());

impl Drop for Entered {
    fn drop(&mut self) {
        CHAIN.with(|c| {
            c.borrow_mut().pop();
        });
    }
}

/// Record that this thread now runs `job`'s handler for `pool`.
pub(crate) fn enter(pool: usize, worker: usize, job: Arc<dyn JobView>) -> Entered {
    CHAIN.with(|c| c.borrow_mut().push(Frame { pool, worker, job }));
    Entered(())
}
