//! Helpers for the pool test suite: counting a pool's live threads, waiting for a condition, and a
//! minimal executor (std's `Wake` on a parked thread) for the async tests.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

/// Live threads of this process whose name starts with `prefix` (names as in /proc, 15 bytes).
pub fn threads_named(prefix: &str) -> usize {
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
        return 0;
    };
    dir.filter_map(|e| e.ok())
        .filter_map(|e| std::fs::read_to_string(e.path().join("comm")).ok())
        .filter(|name| name.trim_end().starts_with(prefix))
        .count()
}

/// Wait until `cond` holds, for at most `limit`; true if it did.
pub fn eventually(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    cond()
}

/// Unparks the thread that polls, and counts its wake-ups.
struct Unpark {
    thread: std::thread::Thread,
    wakes: AtomicUsize,
}

impl Wake for Unpark {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.wakes.fetch_add(1, Ordering::SeqCst);
        self.thread.unpark();
    }
}

/// What [`block_on_counted`] saw: how often the future was polled, and how often it was woken.
#[derive(Debug, Clone, Copy)]
pub struct Polls {
    pub polls: usize,
    pub wakes: usize,
}

/// The smallest executor: poll `fut` on this thread, park until its waker unparks it (no timer,
/// no busy loop), and count the polls and wakes. A spurious unpark only costs one more poll.
pub fn block_on_counted<F: Future>(fut: F) -> (F::Output, Polls) {
    let mut fut = std::pin::pin!(fut);
    let unpark = Arc::new(Unpark {
        thread: std::thread::current(),
        wakes: AtomicUsize::new(0),
    });
    let waker = Waker::from(unpark.clone());
    let mut cx = Context::from_waker(&waker);
    let mut polls = 0;
    loop {
        polls += 1;
        if let Poll::Ready(out) = fut.as_mut().poll(&mut cx) {
            let wakes = unpark.wakes.load(Ordering::SeqCst);
            return (out, Polls { polls, wakes });
        }
        std::thread::park();
    }
}

/// [`block_on_counted`] without the counts.
pub fn block_on<F: Future>(fut: F) -> F::Output {
    block_on_counted(fut).0
}

/// Poll every future of `futs` (on this thread, one waker each) until all are ready; their
/// outputs in order, and the total number of polls.
pub fn join_all<F: Future + Unpin>(mut futs: Vec<F>) -> (Vec<F::Output>, usize) {
    struct Flag {
        ready: AtomicBool,
        thread: std::thread::Thread,
    }
    impl Wake for Flag {
        fn wake(self: Arc<Self>) {
            self.ready.store(true, Ordering::SeqCst);
            self.thread.unpark();
        }
    }
    let flags: Vec<_> = futs
        .iter()
        .map(|_| {
            Arc::new(Flag {
                ready: AtomicBool::new(true),
                thread: std::thread::current(),
            })
        })
        .collect();
    let wakers: Vec<Waker> = flags.iter().map(|f| Waker::from(f.clone())).collect();
    let mut outs: Vec<Option<F::Output>> = futs.iter().map(|_| None).collect();
    let (mut left, mut polls) = (futs.len(), 0);
    while left > 0 {
        let mut progressed = false;
        for (i, fut) in futs.iter_mut().enumerate() {
            if outs[i].is_some() || !flags[i].ready.swap(false, Ordering::SeqCst) {
                continue;
            }
            progressed = true;
            polls += 1;
            if let Poll::Ready(out) = Pin::new(fut).poll(&mut Context::from_waker(&wakers[i])) {
                outs[i] = Some(out);
                left -= 1;
            }
        }
        if left > 0 && !progressed {
            std::thread::park();
        }
    }
    (
        outs.into_iter().map(|o| o.expect("all ready")).collect(),
        polls,
    )
}
