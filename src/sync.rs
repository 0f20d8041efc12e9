//! The locks, atomics and thread parking of the pool's hand-off (`pool::completion`'s
//! `AnswerCell`, `pool::idle_wait`'s `IdleWait` and the lend, the HTTP engine's connection
//! mailbox and the lane's ready queue), in one place so that [loom](https://docs.rs/loom) can model-check them, as tokio does
//! for its blocking pool.
//!
//! A normal build re-exports `parking_lot`'s locks and `std`'s atomics and parking: nothing is
//! wrapped, nothing costs more. A `--cfg loom` build (`.ci/run`'s model step:
//! `RUSTFLAGS="--cfg loom" cargo test --release --lib loom`) maps them to `loom::sync` and
//! `loom::thread`, behind thin wrappers that give loom's std-style locks `parking_lot`'s API (a
//! guard, not a `LockResult`; `Condvar::wait(&mut guard)`).
//!
//! Only what the hand-off shares goes through here; the rest of the crate uses `std` and
//! `parking_lot` directly. [`CacheLine`] keeps a field written on every call off the lines other
//! threads read.

#[cfg(not(loom))]
pub(crate) use parking_lot::{Condvar, Mutex, RwLock};
#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{fence, AtomicBool, AtomicUsize};
#[cfg(all(not(loom), feature = "http"))]
pub(crate) use std::sync::atomic::{AtomicU32, AtomicU64};

#[cfg(loom)]
pub(crate) use self::loom_impl::{Condvar, Mutex, RwLock};
#[cfg(loom)]
pub(crate) use loom::sync::atomic::{fence, AtomicBool, AtomicUsize};
#[cfg(all(loom, feature = "http"))]
pub(crate) use loom::sync::atomic::{AtomicU32, AtomicU64};

/// A value on cache lines of its own (128 bytes: the adjacent-line prefetcher pairs 64-byte
/// lines). A field one thread writes on every call, next to fields another thread reads on every
/// call, moves its line between the cores twice per call (some 100 ns each on a VM); the pool's
/// per-call writes (a caller's job id, a worker's idle count and counters) each sit apart.
#[derive(Default)]
#[repr(align(128))]
pub(crate) struct CacheLine<T>(pub(crate) T);

impl<T> std::ops::Deref for CacheLine<T> {
    type Target = T;
    #[inline]
    fn deref(&self) -> &T {
        &self.0
    }
}

/// Parking a thread and waking it (the answer cell's waiter).
pub(crate) mod thread {
    #[cfg(not(loom))]
    pub(crate) use std::thread::{current, park, park_timeout, yield_now, Thread};

    #[cfg(loom)]
    pub(crate) use loom::thread::{current, park, yield_now, Thread};

    /// loom has no timed park: a model never waits with a deadline, so this parks until woken.
    #[cfg(loom)]
    pub(crate) fn park_timeout(_: std::time::Duration) {
        park();
    }
}

/// How long a waiter spins before it sleeps. Under loom every look is a step of the model: one
/// look is enough to cover the path (and keeps the models small).
#[cfg(not(loom))]
pub(crate) const fn spins(normal: u32) -> u32 {
    normal
}
#[cfg(loom)]
pub(crate) const fn spins(_normal: u32) -> u32 {
    1
}

/// A thread-local that is per model thread under loom (loom runs its threads on one OS thread).
macro_rules! hand_off_thread_local {
    ($(#[$attr:meta])* static $name:ident: $t:ty = $init:expr;) => {
        #[cfg(not(loom))]
        std::thread_local! { $(#[$attr])* static $name: $t = const { $init }; }
        #[cfg(loom)]
        loom::thread_local! { $(#[$attr])* static $name: $t = $init; }
    };
}
pub(crate) use hand_off_thread_local as thread_local;

/// loom's std-style locks with `parking_lot`'s API.
#[cfg(loom)]
mod loom_impl {
    use std::ops::{Deref, DerefMut};

    #[derive(Default)]
    pub(crate) struct Mutex<T>(loom::sync::Mutex<T>);

    /// `None` only while a [`Condvar::wait`] holds the inner guard.
    pub(crate) struct MutexGuard<'a, T>(Option<loom::sync::MutexGuard<'a, T>>);

    impl<T> Mutex<T> {
        pub(crate) fn new(t: T) -> Self {
            Mutex(loom::sync::Mutex::new(t))
        }
        pub(crate) fn lock(&self) -> MutexGuard<'_, T> {
            MutexGuard(Some(self.0.lock().expect("no model thread panics")))
        }
        pub(crate) fn try_lock(&self) -> Option<MutexGuard<'_, T>> {
            self.0.try_lock().ok().map(|g| MutexGuard(Some(g)))
        }
    }

    impl<T> Deref for MutexGuard<'_, T> {
        type Target = T;
        fn deref(&self) -> &T {
            self.0.as_ref().expect("guard held")
        }
    }

    impl<T> DerefMut for MutexGuard<'_, T> {
        fn deref_mut(&mut self) -> &mut T {
            self.0.as_mut().expect("guard held")
        }
    }

    #[derive(Default)]
    pub(crate) struct Condvar(loom::sync::Condvar);

    impl Condvar {
        pub(crate) fn new() -> Self {
            Condvar(loom::sync::Condvar::new())
        }
        pub(crate) fn wait<T>(&self, guard: &mut MutexGuard<'_, T>) {
            let inner = guard.0.take().expect("guard held");
            guard.0 = Some(self.0.wait(inner).expect("no model thread panics"));
        }
        pub(crate) fn notify_one(&self) {
            self.0.notify_one();
        }
        pub(crate) fn notify_all(&self) {
            self.0.notify_all();
        }
    }

    #[derive(Default)]
    pub(crate) struct RwLock<T>(loom::sync::RwLock<T>);

    impl<T> RwLock<T> {
        pub(crate) fn read(&self) -> loom::sync::RwLockReadGuard<'_, T> {
            self.0.read().expect("no model thread panics")
        }
        pub(crate) fn write(&self) -> loom::sync::RwLockWriteGuard<'_, T> {
            self.0.write().expect("no model thread panics")
        }
    }
}
