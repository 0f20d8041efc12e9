//! The spare threads of self-calls: a request that comes back into its own server (from this
//! process, or from a sibling worker process) while every worker is busy runs on a thread of its
//! own, at most `max_spare` at a time, instead of waiting in a queue that cannot move.
//!
//! When every spare thread is taken, the self-call **waits for one**, up to [`SPARE_WAIT`], and
//! only then is answered 503. Two honest calls can meet on one process: with 2 processes × 1
//! thread, both outer requests run at once, one per process, and both of their calls to the
//! service may land on the same process, whose one spare thread the first takes; the second is
//! served as soon as the first returns (a self-call is a short request: its caller is waiting for
//! it). Only a chain whose every spare thread is held by its own callers (a runaway recursion,
//! or calls nested deeper than `max_spare` over TCP) cannot move, and it gets its 503 after the
//! wait. Before the wait, 7 of 40 such honest calls were answered 503 at once.
//!
//! A waiting self-call is not on any thread: it waits in a list, taken by the next spare thread
//! that finishes (on that same thread), or answered 503 by the reactor's timer once its wait is
//! over.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::http::engine::handoff::{finish, Handoff, Reply};
use crate::http::self_call::calls::{Caller, SelfCallRefused, SelfCallServed, SelfCalls, Warned};
use crate::http::types::HttpRequest;

/// How long a self-call waits for a spare thread when every one is taken, before it is answered
/// 503 (see the module's docs).
pub(crate) const SPARE_WAIT: Duration = Duration::from_secs(1);

/// A self-call waiting for a spare thread.
struct Waiting {
    until: Instant,
    req: HttpRequest,
    depth: u32,
    reply: Reply,
    caller: Caller,
}

/// The spare threads' counts and the self-calls waiting for one.
#[derive(Default)]
pub(crate) struct Spares {
    /// Spare threads running self-calls now.
    running: AtomicUsize,
    /// Self-calls served on a spare thread.
    served: AtomicU64,
    /// Self-calls refused (503) because no spare thread was free within the wait.
    refused: AtomicU64,
    warned: Warned,
    waiting: Mutex<VecDeque<Waiting>>,
}

impl Handoff {
    /// Run a self-call on a spare thread, or wait for one (see the module's docs).
    pub(in crate::http) fn self_call(
        self: &Arc<Self>,
        req: HttpRequest,
        depth: u32,
        reply: Reply,
        caller: Caller,
    ) {
        if self.cfg.max_spare == 0 {
            return self.refuse_self_call(req, reply, caller);
        }
        if self.reserve_spare() {
            return self.spare_thread(req, depth, reply, caller);
        }
        self.spares.waiting.lock().push_back(Waiting {
            until: Instant::now() + SPARE_WAIT,
            req,
            depth,
            reply,
            caller,
        });
        // A spare thread may have finished between the reservation above and the push.
        self.start_waiting();
    }

    /// Starts waiting self-calls on spare threads while there are both.
    fn start_waiting(self: &Arc<Self>) {
        loop {
            if self.spares.waiting.lock().is_empty() || !self.reserve_spare() {
                return;
            }
            match self.spares.waiting.lock().pop_front() {
                Some(w) => self.spare_thread(w.req, w.depth, w.reply, w.caller),
                None => {
                    self.release_spare();
                    return;
                }
            }
        }
    }

    /// The reactor's timer: self-calls that waited [`SPARE_WAIT`] for a spare thread are answered
    /// 503.
    pub(crate) fn expire_waiting_self_calls(self: &Arc<Self>, now: Instant) {
        let expired: Vec<Waiting> = {
            let mut waiting = self.spares.waiting.lock();
            if waiting.is_empty() {
                return;
            }
            let (late, on_time): (VecDeque<Waiting>, VecDeque<Waiting>) =
                waiting.drain(..).partition(|w| w.until <= now);
            *waiting = on_time;
            late.into()
        };
        for w in expired {
            self.refuse_self_call(w.req, w.reply, w.caller);
        }
    }

    /// Reserve one of the spare threads for a self-call.
    fn reserve_spare(&self) -> bool {
        let running = &self.spares.running;
        if running.fetch_add(1, Ordering::SeqCst) >= self.cfg.max_spare {
            running.fetch_sub(1, Ordering::SeqCst);
            return false;
        }
        true
    }

    fn release_spare(&self) {
        self.spares.running.fetch_sub(1, Ordering::SeqCst);
    }

    /// The counts of self-calls served and refused.
    pub(crate) fn self_calls(&self) -> SelfCalls {
        SelfCalls {
            served: self.spares.served.load(Ordering::Relaxed),
            refused: self.spares.refused.load(Ordering::Relaxed),
            lookups: self.lookup.lookups(),
        }
    }

    /// No spare thread was free within the wait: answer 503 rather than queue a request that
    /// waits for a worker that waits for it.
    fn refuse_self_call(self: &Arc<Self>, req: HttpRequest, reply: Reply, caller: Caller) {
        self.spares.refused.fetch_add(1, Ordering::Relaxed);
        self.metrics.self_call(false);
        let route = format!("{} {}", req.method(), req.uri().path());
        let key = match caller.sibling {
            None => format!("refused {route}"),
            Some(_) => format!("refused {route} from a sibling"),
        };
        if self.spares.warned.first(&key) {
            let warning = SelfCallRefused {
                route: &route,
                caller,
                pool: self.dispatcher.name(),
                max_spare: self.cfg.max_spare,
                waited: SPARE_WAIT,
            };
            log::warn!(target: "prefork_pool::http", "{warning}");
        }
        finish(self, reply, Ok(self.cfg.error_page.self_call_refused()));
    }

    /// Run the request on the spare thread reserved with `reserve_spare`; then the self-calls
    /// that wait for a spare thread, on the same thread.
    fn spare_thread(self: &Arc<Self>, req: HttpRequest, depth: u32, reply: Reply, caller: Caller) {
        self.served_self_call(&req, caller);
        // Kept here too, so that it can still be answered if the thread cannot be spawned.
        let job = Arc::new(Mutex::new(Some((req, depth, reply))));
        let theirs = job.clone();
        let handoff = self.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("{}-selfcall", self.dispatcher.name()))
            .spawn(move || {
                let mut next = theirs.lock().take();
                while let Some((req, depth, reply)) = next.take() {
                    let result = handoff.dispatcher.call_here(req, depth);
                    finish(&handoff, reply, result);
                    // The spare thread is still reserved: a waiting self-call runs here next.
                    next = handoff.spares.waiting.lock().pop_front().map(|w| {
                        handoff.served_self_call(&w.req, w.caller);
                        (w.req, w.depth, w.reply)
                    });
                }
                handoff.release_spare();
                handoff.start_waiting();
            });
        if let Err(e) = spawned {
            self.release_spare();
            self.spares.served.fetch_sub(1, Ordering::Relaxed);
            self.metrics.self_call_not_served();
            log::error!(target: "prefork_pool::http", "cannot spawn a spare thread: {e}");
            if let Some((req, _, reply)) = job.lock().take() {
                self.refuse_self_call(req, reply, caller);
            }
        }
    }

    /// Counts a self-call served on a spare thread, and logs the first of its route.
    fn served_self_call(&self, req: &HttpRequest, caller: Caller) {
        self.spares.served.fetch_add(1, Ordering::Relaxed);
        self.metrics.self_call(true);
        let route = format!("{} {}", req.method(), req.uri().path());
        // Once per route, and once more if a sibling process calls it too (a different story).
        let key = match caller.sibling {
            None => route.clone(),
            Some(_) => format!("{route} from a sibling"),
        };
        if self.spares.warned.first(&key) {
            let busy = self.dispatcher.busy(Instant::now());
            let warning = SelfCallServed {
                route: &route,
                caller,
                pool: self.dispatcher.name(),
                max_spare: self.cfg.max_spare,
                busy: &busy,
            };
            log::warn!(target: "prefork_pool::http", "{warning}");
        }
    }
}
