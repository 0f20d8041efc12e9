//! The re-entrancy guard: a thread-local chain of the pools whose handlers this thread is running.
//!
//! A call into a pool looks here first. A call from inside one of the pool's own handlers never waits
//! for a worker (it would be waiting for itself); see [`Reentry`](crate::Reentry).

use std::cell::RefCell;
use std::sync::Arc;

use super::job::JobView;

/// The worker index recorded for a handler run on a thread that is not one of the pool's workers
/// (a worker of another pool, or a spare thread): [`Context::worker`](crate::Context::worker) says
/// `None` for it.
pub(crate) const NOT_A_WORKER: usize = usize::MAX;

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
pub(crate) struct GuardEntered(());

impl Drop for GuardEntered {
    fn drop(&mut self) {
        CHAIN.with(|c| {
            c.borrow_mut().pop();
        });
    }
}

/// Record that this thread now runs `job`'s handler for `pool`.
pub(crate) fn enter(pool: usize, worker: usize, job: Arc<dyn JobView>) -> GuardEntered {
    CHAIN.with(|c| c.borrow_mut().push(Frame { pool, worker, job }));
    GuardEntered(())
}
