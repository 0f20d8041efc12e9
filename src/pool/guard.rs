//! The re-entrancy guard: a thread-local chain of the pools whose handlers this thread is running.
//!
//! A call into a pool looks here first. A call from inside one of the pool's own handlers never waits
//! for a worker (it would be waiting for itself); see [`Reentry`](crate::Reentry). The pools' names
//! by id are kept here too, so that a cycle found up a job's chain of callers can be named.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;

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

/// The innermost job this thread runs and its worker index, if any.
pub(crate) fn top() -> Option<(Arc<dyn JobView>, usize)> {
    CHAIN.with(|c| c.borrow().last().map(|f| (f.job.clone(), f.worker)))
}

/// The depth of the innermost job this thread runs (of any pool), if it runs one: a call made
/// from here is one deeper.
#[cfg(feature = "http")]
pub(crate) fn current_depth() -> Option<u32> {
    CHAIN.with(|c| c.borrow().last().map(|f| f.job.core().depth))
}

/// True when this thread runs a handler of `pool`.
pub(crate) fn inside(pool: usize) -> bool {
    CHAIN.with(|c| c.borrow().iter().any(|f| f.pool == pool))
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

/// Every live pool's name by id (for naming a cycle of pools in an error).
static NAMES: Mutex<Option<HashMap<usize, String>>> = Mutex::new(None);

/// Remember `pool`'s name until [`forget_name`].
pub(crate) fn register_name(pool: usize, name: &str) {
    NAMES
        .lock()
        .get_or_insert_with(HashMap::new)
        .insert(pool, name.to_owned());
}

/// Forget a pool that is gone.
pub(crate) fn forget_name(pool: usize) {
    if let Some(names) = NAMES.lock().as_mut() {
        names.remove(&pool);
    }
}

/// The pools `ids` by name, joined with arrows: `a -> b -> a`.
pub(crate) fn name_path(ids: &[usize]) -> String {
    let names = NAMES.lock();
    let name = |id: &usize| {
        names
            .as_ref()
            .and_then(|n| n.get(id).cloned())
            .unwrap_or_else(|| format!("#{id}"))
    };
    ids.iter().map(name).collect::<Vec<_>>().join(" -> ")
}
