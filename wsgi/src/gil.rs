//! The interpreter and the server's threads: each pool thread is attached to the interpreter once
//! (a thread state of its own, kept between requests, the GIL released), and each fork of the
//! supervisor is bracketed as `os.fork()` does it.

use std::cell::Cell;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};

use pyo3::ffi;

thread_local! {
    /// This pool thread's `PyGILState_Ensure` state and its thread state, while it is attached.
    static ATTACHED: Cell<Option<(ffi::PyGILState_STATE, *mut ffi::PyThreadState)>> =
        const { Cell::new(None) };
}

/// Set once `serve` is about to hand the process back to Python (or to exit): a thread that ends
/// later leaves its thread state alone (the interpreter may be finalizing).
static DETACH_OFF: AtomicBool = AtomicBool::new(false);

/// A pool thread's start hook: give it a thread state of its own, kept for its life, so that each
/// request's `Python::with_gil` only takes the GIL (no thread state made and dropped per request,
/// and `threading.local` data lives as long as the thread). The GIL is released before returning.
pub fn attach_thread() {
    if ATTACHED.with(|a| a.get().is_some()) {
        return;
    }
    // SAFETY: PyGILState_Ensure may be called on any thread of an initialized interpreter (the
    // extension is loaded, so it is) and returns with the GIL held and this thread's thread state
    // current (made for it when it had none); PyEval_SaveThread then releases the GIL and returns
    // that thread state, which stays valid until this thread restores and releases it (below).
    let state = unsafe {
        let gstate = ffi::PyGILState_Ensure();
        let tstate = ffi::PyEval_SaveThread();
        (gstate, tstate)
    };
    ATTACHED.with(|a| a.set(Some(state)));
}

/// A pool thread's exit hook: give its thread state back (unless `serve` has returned: then the
/// interpreter may be finalizing, and the thread state is left to it).
pub fn detach_thread() {
    let Some((gstate, tstate)) = ATTACHED.with(|a| a.take()) else {
        return;
    };
    if DETACH_OFF.load(Ordering::Acquire) {
        return;
    }
    // SAFETY: `tstate` is this thread's own thread state saved by attach_thread (PyEval_SaveThread),
    // not restored since; PyEval_RestoreThread takes the GIL back with it, and PyGILState_Release
    // undoes that thread's PyGILState_Ensure (deleting the thread state it made).
    unsafe {
        ffi::PyEval_RestoreThread(tstate);
        ffi::PyGILState_Release(gstate);
    }
}

/// Whether `serve` has returned (see [`stop_detaching`]): Python objects are left alone then.
pub fn detaching_stopped() -> bool {
    DETACH_OFF.load(Ordering::Acquire)
}

/// From now on threads that end leave their thread state (the interpreter may be finalizing).
pub fn stop_detaching() {
    DETACH_OFF.store(true, Ordering::Release);
}

/// The three hooks that bracket each fork of the supervisor, as CPython's `os.fork()` does: the
/// master takes the GIL and calls `PyOS_BeforeFork` (the import lock, `os.register_at_fork`'s
/// `before` callbacks), then after the fork `PyOS_AfterFork_Parent` in the master and
/// `PyOS_AfterFork_Child` in the worker (the GIL and thread states re-made for the one thread
/// left, `after_in_child` callbacks), each releasing the GIL after.
///
/// The master calls them on its one thread, which holds no GIL while the supervisor runs (the
/// caller released it around `Supervisor::run`).
pub struct ForkBrackets {
    gstate: Rc<Cell<Option<ffi::PyGILState_STATE>>>,
}

impl ForkBrackets {
    pub fn new() -> ForkBrackets {
        ForkBrackets {
            gstate: Rc::new(Cell::new(None)),
        }
    }

    pub fn before(&self) -> impl FnMut(u64) + 'static {
        let gstate = self.gstate.clone();
        move |_| {
            // SAFETY: called on the master's only thread, which does not hold the GIL (it was
            // released around the supervisor); PyGILState_Ensure takes it, and PyOS_BeforeFork
            // must be called with it held, right before fork(2). Both halves after the fork
            // (parent and child) release it.
            let g = unsafe {
                let g = ffi::PyGILState_Ensure();
                ffi::PyOS_BeforeFork();
                g
            };
            gstate.set(Some(g));
        }
    }

    pub fn after_in_parent(&self) -> impl FnMut(u64, Option<u32>) + 'static {
        let gstate = self.gstate.clone();
        move |_, _| {
            if let Some(g) = gstate.take() {
                // SAFETY: right after fork(2) in the master (called whether or not it succeeded),
                // with the GIL taken by the `before` hook: PyOS_AfterFork_Parent releases the locks
                // PyOS_BeforeFork took, then PyGILState_Release gives the GIL back.
                unsafe {
                    ffi::PyOS_AfterFork_Parent();
                    ffi::PyGILState_Release(g);
                }
            }
        }
    }

    pub fn after_in_child(&self) -> impl FnMut(u64) + 'static {
        let gstate = self.gstate.clone();
        move |_| {
            if let Some(g) = gstate.take() {
                // SAFETY: in the new worker process, its only thread being the one that forked
                // while holding the GIL (the `before` hook): PyOS_AfterFork_Child re-initialises the
                // GIL and the thread states for it, as `os.fork()` does in a child, then
                // PyGILState_Release releases the GIL so that the app is loaded and served by
                // threads that take it per request.
                unsafe {
                    ffi::PyOS_AfterFork_Child();
                    ffi::PyGILState_Release(g);
                }
            }
        }
    }
}
