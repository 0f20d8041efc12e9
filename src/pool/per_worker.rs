//! Per-worker state for [`PoolBuilder::build_with_state`](crate::PoolBuilder::build_with_state):
//! the state each worker thread keeps (made by the user's init on that thread, dropped there), and
//! the handler wrapper that lends it to the user's handler as `&mut S`.
//!
//! The state lives in a thread-local table keyed by the build it belongs to, so the worker loop
//! stays the same for every pool. While a handler runs, its state is taken out of the table (and
//! put back when the handler returns or panics): a nested run on the same thread finds none, and
//! cannot alias the `&mut S` the running handler holds.

use std::any::Any;
use std::cell::RefCell;
use std::fmt::Display;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};

use super::context::Context;

/// What the worker loop does with a pool's per-worker state, whatever its type.
pub(crate) trait StateInit: Send + Sync {
    /// Run the init for worker `index` on this thread and keep its state here; the cause on
    /// failure (an error or a panic).
    fn init(&self, index: usize) -> Result<(), String>;
    /// Drop this thread's state, if it has one.
    fn drop_state(&self);
}

/// One build's state on this thread: its key, and the state (`None` while a handler has it out).
type Entry = (usize, Option<Box<dyn Any>>);

thread_local! {
    /// This thread's states, one per build whose worker this thread is.
    static STATES: RefCell<Vec<Entry>> = const { RefCell::new(Vec::new()) };
}

static NEXT_KEY: AtomicUsize = AtomicUsize::new(1);

/// A pool's init function, with the key its states are kept under.
pub(crate) struct Init<I> {
    key: usize,
    init: I,
}

impl<I> Init<I> {
    pub(crate) fn new(init: I) -> Self {
        Init {
            key: NEXT_KEY.fetch_add(1, Ordering::Relaxed),
            init,
        }
    }

    pub(crate) fn key(&self) -> usize {
        self.key
    }
}

impl<S, E, I> StateInit for Init<I>
where
    S: 'static,
    E: Display,
    I: Fn(usize) -> Result<S, E> + Send + Sync,
{
    fn init(&self, index: usize) -> Result<(), String> {
        let made = catch_unwind(AssertUnwindSafe(|| (self.init)(index)));
        let state = match made {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => return Err(e.to_string()),
            Err(payload) => {
                return Err(format!(
                    "the init panicked: {}",
                    crate::util::panic_message(payload.as_ref())
                ))
            }
        };
        STATES.with(|t| {
            let mut t = t.borrow_mut();
            t.retain(|(k, _)| *k != self.key);
            t.push((self.key, Some(Box::new(state))));
        });
        Ok(())
    }

    fn drop_state(&self) {
        let gone = STATES.with(|t| {
            let mut t = t.borrow_mut();
            let at = t.iter().position(|(k, _)| *k == self.key)?;
            Some(t.swap_remove(at))
        });
        // Dropped outside the table's borrow: a state whose drop uses another pool is fine.
        drop(gone);
    }
}

/// Puts a state back into the table when the handler returns or panics.
struct Lent {
    key: usize,
    state: Option<Box<dyn Any>>,
}

impl Drop for Lent {
    fn drop(&mut self) {
        let state = self.state.take();
        STATES.with(|t| {
            if let Some(entry) = t.borrow_mut().iter_mut().find(|(k, _)| *k == self.key) {
                entry.1 = state;
            }
        });
    }
}

/// Run `handler` with this thread's state of build `key`.
///
/// # Panics
/// When this thread has no state of the build (never on a worker that serves jobs: the pool
/// refuses calls that would run elsewhere); the worker catches it as any handler panic.
pub(crate) fn with_state<S: 'static, Req, Resp>(
    key: usize,
    pool: &str,
    handler: &impl Fn(&mut S, Req, &Context) -> Resp,
    req: Req,
    ctx: &Context,
) -> Resp {
    let taken = STATES.with(|t| {
        t.borrow_mut()
            .iter_mut()
            .find(|(k, _)| *k == key)
            .and_then(|entry| entry.1.take())
    });
    let Some(state) = taken else {
        panic!(
            "pool `{pool}`: no per-worker state on this thread (a handler of a build_with_state \
             pool ran outside its worker, or while its state was lent to another handler)"
        );
    };
    let mut lent = Lent {
        key,
        state: Some(state),
    };
    let s = lent
        .state
        .as_mut()
        .and_then(|b| b.downcast_mut::<S>())
        .expect("a build's states all have its state type");
    handler(s, req, ctx)
}
