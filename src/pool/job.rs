//! One job: its identity, pool, deadline and cancellation (the non-generic [`JobCore`]), the
//! request it carries, its state (queued, running, answered unrun), the [`AnswerCell`] its one
//! answer goes through, and its [`HelpBox`] (nested jobs of its own pool handed to the thread that
//! runs it, to break a wait-for cycle of pools).

use std::any::Any;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Weak};
use std::thread::{self, Thread};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::completion::{AnswerCell, Waiter};
use crate::error::{Error, Stage};

/// The job sits in the queue; a worker (or a waiting caller) may claim it.
pub(crate) const QUEUED: u8 = 0;
/// A thread claimed the job and runs its handler.
pub(crate) const RUNNING: u8 = 1;
/// The job was answered without running (expired in the queue, or refused at shutdown).
pub(crate) const ANSWERED_UNRUN: u8 = 2;

/// What a [`crate::Context`] and the re-entrancy chain need to know of a job, whatever its types.
pub(crate) trait JobView: Send + Sync {
    fn core(&self) -> &JobCore;
    /// This job as `Any`, so that a handle lent as a `JobView` (a worker's job, lent to its
    /// handler's [`Context`](crate::Context)) can be taken back as what it is.
    fn into_any(self: Arc<Self>) -> Arc<dyn Any + Send + Sync>;
}

/// The non-generic part of a job.
pub(crate) struct JobCore {
    pub(crate) id: u64,
    /// The id of the pool the job belongs to (the chain of `parent`s says which pools wait for it).
    pub(crate) pool: usize,
    pub(crate) deadline: Instant,
    /// The deadline as a duration from submission, for messages.
    pub(crate) budget: Duration,
    pub(crate) cancelled: AtomicBool,
    /// The job whose handler made this call, for nested calls: its cancellation is ours.
    pub(crate) parent: Option<Arc<dyn JobView>>,
    /// How deep the job is nested: one more than its caller's, or the depth its submitter gave
    /// (the HTTP server's `X-Prefork-Depth`), whichever is deeper; 0 for a top-level job. The one
    /// place a request's depth is kept.
    pub(crate) depth: u32,
    /// Nested jobs of this job's pool, handed to the thread running this job while it waits (see
    /// [`HelpBox`]).
    pub(crate) help: HelpBox,
}

impl JobView for JobCore {
    fn core(&self) -> &JobCore {
        self
    }
    fn into_any(self: Arc<Self>) -> Arc<dyn Any + Send + Sync> {
        self
    }
}

impl JobCore {
    pub(crate) fn new(
        id: u64,
        pool: usize,
        budget: Duration,
        parent: Option<Arc<dyn JobView>>,
        depth: u32,
        now: Instant,
    ) -> JobCore {
        let mut deadline = now + budget;
        let (mut budget, mut depth) = (budget, depth);
        if let Some(p) = &parent {
            // The caller's earlier deadline is the job's: its budget is what is left of it (else
            // `deadline - now` is `budget` exactly, no need to subtract).
            if p.core().deadline < deadline {
                deadline = p.core().deadline;
                budget = deadline.saturating_duration_since(now);
            }
            depth = depth.max(p.core().depth.saturating_add(1));
        }
        JobCore {
            id,
            pool,
            deadline,
            budget,
            cancelled: AtomicBool::new(false),
            parent,
            depth,
            help: HelpBox::new(),
        }
    }

    /// A nested job that keeps its caller's deadline (`depth`: as for [`new`](Self::new)).
    pub(crate) fn inherit(id: u64, pool: usize, parent: Arc<dyn JobView>, depth: u32) -> JobCore {
        let pc = parent.core();
        JobCore {
            id,
            pool,
            help: HelpBox::new(),
            deadline: pc.deadline,
            budget: pc.budget,
            cancelled: AtomicBool::new(false),
            depth: depth.max(pc.depth.saturating_add(1)),
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

    /// The nearest job up this job's chain of callers (itself included) that belongs to `pool`:
    /// the job whose thread waits, directly or through other pools, for this one.
    pub(crate) fn ancestor_in(this: &Arc<dyn JobView>, pool: usize) -> Option<Arc<dyn JobView>> {
        let mut job = this;
        loop {
            if job.core().pool == pool {
                return Some(job.clone());
            }
            job = job.core().parent.as_ref()?;
        }
    }

    /// The pool ids from this job up to (and with) the nearest one of `pool`, this job's first.
    pub(crate) fn pools_up_to(&self, pool: usize) -> Vec<usize> {
        let mut out = vec![self.pool];
        let mut core = self;
        while core.pool != pool {
            match &core.parent {
                Some(p) => core = p.core(),
                None => break,
            }
            out.push(core.pool);
        }
        out
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

/// A nested job handed over to break a cycle, whatever its types: the thread that takes it from a
/// [`HelpBox`] runs it if nobody has started it yet.
pub(crate) trait Helpable: Send + Sync {
    /// Claim the job and run it on this thread (which runs a handler of the job's pool); nothing if
    /// a worker or another helper claimed it first.
    fn help(self: Arc<Self>);
}

/// Nested jobs handed to the thread that runs a job, for "help while waiting": when B's handler
/// calls A and a job of A up the caller chain waits (directly or through other pools) for B, the
/// nested A job is queued as usual *and* put here; the A worker running that job looks here while
/// it waits and runs it itself (rayon's `wait_until`), so a cycle of full pools cannot deadlock and
/// A's handler still only ever runs on A's own threads.
pub(crate) struct HelpBox {
    /// True while `inner` holds jobs: a lock-free look for the waiter.
    pending: AtomicBool,
    inner: Mutex<HelpInner>,
}

struct HelpInner {
    jobs: Vec<Arc<dyn Helpable>>,
    /// The thread to wake when a job comes (set by the waiter before it parks).
    waiter: Option<Thread>,
}

impl HelpBox {
    pub(crate) const fn new() -> HelpBox {
        HelpBox {
            pending: AtomicBool::new(false),
            inner: Mutex::new(HelpInner {
                jobs: Vec::new(),
                waiter: None,
            }),
        }
    }

    /// Hand `job` over and wake the thread waiting here, if one is.
    pub(crate) fn hand(&self, job: Arc<dyn Helpable>) {
        let waiter = {
            let mut inner = self.inner.lock();
            inner.jobs.push(job);
            self.pending.store(true, Ordering::Release);
            inner.waiter.clone()
        };
        if let Some(t) = waiter {
            t.unpark();
        }
    }

    /// From now on, wake this thread when a job is handed over.
    pub(crate) fn register(&self) {
        let mut inner = self.inner.lock();
        if inner.waiter.is_none() {
            inner.waiter = Some(thread::current());
        }
    }

    /// True when jobs wait here.
    pub(crate) fn has_pending(&self) -> bool {
        self.pending.load(Ordering::Acquire)
    }

    /// Run every job handed over so far on this thread; true if there were any.
    pub(crate) fn run_pending(&self) -> bool {
        if !self.has_pending() {
            return false;
        }
        let jobs = {
            let mut inner = self.inner.lock();
            self.pending.store(false, Ordering::Release);
            std::mem::take(&mut inner.jobs)
        };
        for job in jobs {
            job.help();
        }
        true
    }
}

/// A queued job: the request, its state, and where its answer goes.
pub(crate) struct Job<Req, Resp> {
    pub(crate) core: JobCore,
    pub(crate) state: AtomicU8,
    pub(crate) req: Mutex<Option<Req>>,
    pub(crate) answer: AnswerCell<Resp>,
    /// Set for jobs behind a [`crate::Ticket`], so that a waiting handler can take the job back and
    /// run it itself (see the re-entrancy guard).
    pub(crate) pool: Option<Weak<dyn PoolOps<Req, Resp>>>,
    /// Set once the job's deadline is on the watchdog's board (it is put there at most once).
    pub(crate) watched: AtomicBool,
}

/// What a [`crate::Ticket`] needs from the pool behind its job: implemented by the pool's
/// `PoolState` (in `ticket.rs`).
pub(crate) trait TicketOps<Req, Resp> {
    /// An async caller waits for `job`: put its deadline on the watchdog's board (once) if it is
    /// still queued and no worker is idle, so that the watchdog answers it at its deadline.
    fn watch_waiting(&self, job: &Arc<Job<Req, Resp>>);
    /// Count a job given back unrun because its ticket was dropped before it started.
    fn count_abandoned(&self);
}

/// What a waiter needs from the pool behind a job: implemented by the pool's `PoolState`.
pub(crate) trait PoolOps<Req, Resp>: Send + Sync + TicketOps<Req, Resp> {
    /// Whether a handler waiting on a queued job should take it back: no worker is idle.
    fn should_steal(&self) -> bool;
    /// Run a job claimed (RUNNING) by the calling thread, here, and complete it.
    fn run_claimed_here(&self, job: &Arc<Job<Req, Resp>>);
    /// Answer a job, claimed ANSWERED_UNRUN by the caller, whose deadline passed in the queue.
    fn answer_expired(&self, job: &Job<Req, Resp>);
}

impl<Req: Send + 'static, Resp: Send + 'static> Helpable for Job<Req, Resp> {
    fn help(self: Arc<Self>) {
        let Some(pool) = self.pool.as_ref().and_then(Weak::upgrade) else {
            return;
        };
        if self.claim(RUNNING) {
            pool.run_claimed_here(&self);
        }
    }
}

impl<Req: Send + 'static, Resp: Send + 'static> JobView for Job<Req, Resp> {
    fn core(&self) -> &JobCore {
        &self.core
    }
    fn into_any(self: Arc<Self>) -> Arc<dyn Any + Send + Sync> {
        self
    }
}

impl<Req, Resp> Job<Req, Resp> {
    /// A queued job; `req` is `None` when the submitter writes it in afterwards (see `submit`).
    #[inline]
    pub(crate) fn new(
        core: JobCore,
        req: Option<Req>,
        waiter: Waiter<Resp>,
        pool: Option<Weak<dyn PoolOps<Req, Resp>>>,
    ) -> Job<Req, Resp> {
        Job {
            core,
            state: AtomicU8::new(QUEUED),
            req: Mutex::new(req),
            answer: AnswerCell::new(waiter),
            pool,
            watched: AtomicBool::new(false),
        }
    }

    /// Claim a queued job for running it (`to` = RUNNING) or for answering it unrun (`to` = ANSWERED_UNRUN).
    pub(crate) fn claim(&self, to: u8) -> bool {
        self.state
            .compare_exchange(QUEUED, to, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    pub(crate) fn take_req(&self) -> Option<Req> {
        self.req.lock().take()
    }
}
