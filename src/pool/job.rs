//! One job: its identity, deadline and cancellation (the non-generic [`JobCore`]), the request it
//! carries, and the one-shot [`Completion`] that delivers exactly one answer to whoever waits.

use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Weak};
use std::thread::{self, Thread};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::error::{Error, Stage};

/// The job sits in the queue; a worker (or a waiting caller) may claim it.
pub(crate) const QUEUED: u8 = 0;
/// A thread claimed the job and runs its handler.
pub(crate) const RUNNING: u8 = 1;
/// The job was answered without running (expired in the queue, or refused at shutdown).
pub(crate) const DROPPED: u8 = 2;

/// What a [`crate::Context`] and the re-entrancy chain need to know of a job, whatever its types.
pub(crate) trait JobView: Send + Sync {
    fn core(&self) -> &JobCore;
}

/// The non-generic part of a job.
pub(crate) struct JobCore {
    pub(crate) id: u64,
    pub(crate) deadline: Instant,
    /// The deadline as a duration from submission, for messages.
    pub(crate) budget: Duration,
    pub(crate) cancelled: AtomicBool,
    /// The job whose handler made this call, for nested calls: its cancellation is ours.
    pub(crate) parent: Option<Arc<dyn JobView>>,
    /// 0 for a top-level job, one more for each nested call.
    pub(crate) depth: u32,
}

impl JobView for JobCore {
    fn core(&self) -> &JobCore {
        self
    }
}

impl JobCore {
    pub(crate) fn new(
        id: u64,
        budget: Duration,
        parent: Option<Arc<dyn JobView>>,
        now: Instant,
    ) -> JobCore {
        let mut deadline = now + budget;
        let mut depth = 0;
        if let Some(p) = &parent {
            deadline = deadline.min(p.core().deadline);
            depth = p.core().depth + 1;
        }
        JobCore {
            id,
            deadline,
            budget: deadline.saturating_duration_since(now),
            cancelled: AtomicBool::new(false),
            parent,
            depth,
        }
    }

    /// A nested job that keeps its caller's deadline.
    pub(crate) fn inherit(id: u64, parent: Arc<dyn JobView>) -> JobCore {
        let pc = parent.core();
        JobCore {
            id,
            deadline: pc.deadline,
            budget: pc.budget,
            cancelled: AtomicBool::new(false),
            depth: pc.depth + 1,
            parent: Some(parent),
        }
    }

    /// True when this job or any job up its chain of callers was cancelled.
    pub(crate) fn is_cancelled(&self) -> bool {
        let mut core = self;
        loop {
            if core.cancelled.load(Ordering::Relaxed) {
                return true;
            }
            match &core.parent {
                Some(p) => core = p.core(),
                None => return false,
            }
        }
    }

    pub(crate) fn cancel(&self) {
        self.cancelled.store(true, Ordering::Relaxed);
    }

    pub(crate) fn deadline_error(&self, pool: &str, stage: Stage) -> Error {
        Error::DeadlineExceeded {
            pool: pool.to_owned(),
            job: self.id,
            deadline: self.budget,
            stage,
        }
    }
}

/// A queued job: the request, its state, and where its answer goes.
pub(crate) struct Job<Req, Resp> {
    pub(crate) core: JobCore,
    pub(crate) state: AtomicU8,
    pub(crate) req: Mutex<Option<Req>>,
    pub(crate) completion: Completion<Resp>,
    /// Set for jobs behind a [`crate::Ticket`], so that a waiting handler can take the job back and
    /// run it itself (see the re-entrancy guard).
    pub(crate) pool: Option<Weak<dyn PoolOps<Req, Resp>>>,
}

/// What a waiter needs from the pool behind a job: implemented by the pool's shared state.
pub(crate) trait PoolOps<Req, Resp>: Send + Sync {
    /// Whether a handler waiting on a queued job should take it back: no worker is idle.
    fn should_steal(&self) -> bool;
    /// Run a job claimed (RUNNING) by the calling thread, here, and complete it.
    fn run_claimed_here(&self, job: &Arc<Job<Req, Resp>>);
    /// Answer a job, claimed DROPPED by the caller, whose deadline passed in the queue.
    fn answer_expired(&self, job: &Job<Req, Resp>);
}

impl<Req: Send, Resp: Send> JobView for Job<Req, Resp> {
    fn core(&self) -> &JobCore {
        &self.core
    }
}

impl<Req, Resp> Job<Req, Resp> {
    pub(crate) fn new(core: JobCore, req: Req, waiter: Waiter<Resp>) -> Job<Req, Resp> {
        Job {
            core,
            state: AtomicU8::new(QUEUED),
            req: Mutex::new(Some(req)),
            completion: Completion::new(waiter),
            pool: None,
        }
    }

    /// Claim a queued job for running it (`to` = RUNNING) or for answering it unrun (`to` = DROPPED).
    pub(crate) fn claim(&self, to: u8) -> bool {
        self.state
            .compare_exchange(QUEUED, to, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    pub(crate) fn take_req(&self) -> Option<Req> {
        self.req.lock().take()
    }
}

/// Who is told when the answer is there.
pub(crate) enum Waiter<Resp> {
    /// Nobody yet: a blocking caller will register itself, or take the answer when it looks.
    Nobody,
    /// A parked thread.
    Thread(Thread),
    /// A completion callback, called once with the answer.
    Callback(Box<dyn FnOnce(Result<Resp, Error>) + Send>),
}

enum Outcome<Resp> {
    Pending(Waiter<Resp>),
    Ready(Result<Resp, Error>),
    Taken,
}

/// A one-shot slot: the first `complete` wins, later ones are dropped.
pub(crate) struct Completion<Resp> {
    done: AtomicBool,
    outcome: Mutex<Outcome<Resp>>,
}

/// How many times a waiter looks at the slot before it parks. Spinning briefly saves the wake-up
/// of a parked thread (a futex call each way) when the answer is a microsecond away.
const SPIN_ROUNDS: u32 = 120;

impl<Resp> Completion<Resp> {
    fn new(waiter: Waiter<Resp>) -> Self {
        Completion {
            done: AtomicBool::new(false),
            outcome: Mutex::new(Outcome::Pending(waiter)),
        }
    }

    /// Deliver the answer. Returns false (and drops `result`) if the job was answered already.
    ///
    /// `first` runs with the answer once this call has won, before the waiter can see it (the
    /// pool counts the answer there, so a caller that reads the stats after its answer finds it
    /// counted).
    pub(crate) fn complete(
        &self,
        result: Result<Resp, Error>,
        first: impl FnOnce(&Result<Resp, Error>),
    ) -> bool {
        let mut outcome = self.outcome.lock();
        let waiter = match std::mem::replace(&mut *outcome, Outcome::Taken) {
            Outcome::Pending(w) => w,
            other => {
                *outcome = other;
                return false;
            }
        };
        first(&result);
        match waiter {
            Waiter::Callback(cb) => {
                self.done.store(true, Ordering::Release);
                drop(outcome);
                // The callback runs on a worker or on the watchdog: a panic in it must not take
                // that thread down with it.
                let run = std::panic::AssertUnwindSafe(move || cb(result));
                if let Err(payload) = std::panic::catch_unwind(run) {
                    log::error!(
                        "a submit_then completion callback panicked: {}; the pool goes on. Fix \
                         the callback (it runs on a pool thread and must not panic).",
                        crate::util::panic_message(payload.as_ref())
                    );
                }
            }
            Waiter::Thread(t) => {
                *outcome = Outcome::Ready(result);
                self.done.store(true, Ordering::Release);
                drop(outcome);
                t.unpark();
            }
            Waiter::Nobody => {
                *outcome = Outcome::Ready(result);
                self.done.store(true, Ordering::Release);
            }
        }
        true
    }

    /// Take the waiter back from a job that was never queued (a refused submission).
    pub(crate) fn take_waiter(&self) -> Waiter<Resp> {
        let mut outcome = self.outcome.lock();
        match std::mem::replace(&mut *outcome, Outcome::Taken) {
            Outcome::Pending(w) => w,
            other => {
                *outcome = other;
                Waiter::Nobody
            }
        }
    }

    pub(crate) fn is_done(&self) -> bool {
        self.done.load(Ordering::Acquire)
    }

    /// Take the answer if it is there (once).
    pub(crate) fn try_take(&self) -> Option<Result<Resp, Error>> {
        if !self.is_done() {
            return None;
        }
        let mut outcome = self.outcome.lock();
        match std::mem::replace(&mut *outcome, Outcome::Taken) {
            Outcome::Ready(r) => Some(r),
            other => {
                *outcome = other;
                None
            }
        }
    }

    /// Wait for the answer until `until` (forever with `None`). Spins briefly, then parks.
    pub(crate) fn wait_until(&self, until: Option<Instant>) -> Option<Result<Resp, Error>> {
        for round in 0..SPIN_ROUNDS {
            if self.is_done() {
                return self.try_take();
            }
            if round < SPIN_ROUNDS / 2 {
                std::hint::spin_loop();
            } else {
                thread::yield_now();
            }
        }
        {
            let mut outcome = self.outcome.lock();
            match &mut *outcome {
                Outcome::Pending(w) => *w = Waiter::Thread(thread::current()),
                Outcome::Ready(_) => {
                    drop(outcome);
                    return self.try_take();
                }
                Outcome::Taken => return None,
            }
        }
        loop {
            if self.is_done() {
                return self.try_take();
            }
            match until {
                None => thread::park(),
                Some(t) => {
                    let now = Instant::now();
                    if now >= t {
                        return None;
                    }
                    thread::park_timeout(t - now);
                }
            }
        }
    }
}

/// How long a handler waiting on a nested job sleeps at first before it looks again whether it
/// should take the job back; doubled up to [`NESTED_STEP_MAX`].
const NESTED_STEP_MIN: Duration = Duration::from_millis(1);
const NESTED_STEP_MAX: Duration = Duration::from_millis(50);

/// Wait for `job`'s answer until `until` (forever with `None`; `None` back on timeout).
///
/// At the job's deadline a still-queued job is claimed and answered `DeadlineExceeded` (it never
/// runs); a running one is answered by the watchdog. A waiter that is itself inside a handler takes
/// the job back and runs it when it is still queued and no worker is idle (the re-entrancy guard's
/// `submit` + `wait` path).
pub(crate) fn await_answer<Req: Send + 'static, Resp: Send + 'static>(
    job: &Arc<Job<Req, Resp>>,
    until: Option<Instant>,
    ops: Option<&dyn PoolOps<Req, Resp>>,
) -> Option<Result<Resp, Error>> {
    let nested = job.pool.is_some() && super::guard::in_any();
    let mut step = NESTED_STEP_MIN;
    loop {
        if let Some(r) = job.completion.try_take() {
            return Some(r);
        }
        let now = Instant::now();
        if until.is_some_and(|u| now >= u) {
            return None;
        }
        let deadline = job.core.deadline;
        if now >= deadline && job.claim(DROPPED) {
            match ops {
                Some(o) => o.answer_expired(job),
                None => {
                    // The pool is gone; its shutdown answered every job it could see.
                    let err = job.core.deadline_error("?", crate::Stage::Queued);
                    job.completion.complete(Err(err), |_| {});
                }
            }
            continue;
        }
        let mut wake = until;
        if now < deadline {
            wake = Some(wake.map_or(deadline, |w| w.min(deadline)));
        }
        if nested {
            let next = now + step;
            wake = Some(wake.map_or(next, |w| w.min(next)));
            step = (step * 2).min(NESTED_STEP_MAX);
        }
        if let Some(r) = job.completion.wait_until(wake) {
            return Some(r);
        }
        if nested && job.state.load(Ordering::Acquire) == QUEUED {
            let pool = job.pool.as_ref().and_then(Weak::upgrade);
            if let Some(p) = pool {
                if p.should_steal() && job.claim(RUNNING) {
                    p.run_claimed_here(job);
                }
            }
        }
    }
}
