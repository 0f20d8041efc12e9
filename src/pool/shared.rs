//! The state every thread of a pool shares, and what runs on it: submission, the worker loop,
//! inline (re-entrant) runs, recycling and shutdown. The watchdog's loop is in `watchdog.rs`.

use std::any::Any;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{fence, AtomicBool, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TrySendError};
use parking_lot::{Condvar, Mutex};

use super::builder::Config;
use super::guard::{self, Position, Reentry};
use super::job::{await_answer, Job, JobCore, JobView, PoolOps, Waiter, DROPPED, RUNNING};
use super::stats::{Counters, ShutdownReport, Stats};
use super::watchdog::{QueuedEntry, Watchdog, NONE};
use super::Context;
use crate::error::{Error, Stage};

pub(crate) type Handler<Req, Resp> = Box<dyn Fn(Req, &Context) -> Resp + Send + Sync>;

/// A submission refused at once: the error, and the request and waiter given back.
pub(crate) type Refusal<Req, Resp> = (Error, Req, Waiter<Resp>);

pub(crate) enum Msg<Req, Resp> {
    Job(Arc<Job<Req, Resp>>),
    Stop,
}

pub(crate) const SERVING: u8 = 0;
pub(crate) const DRAINING: u8 = 1;
pub(crate) const STOPPED: u8 = 2;

/// The longest budget a job can have; longer ones are clamped (no `Instant` overflow).
const MAX_BUDGET: Duration = Duration::from_secs(365 * 24 * 3600);

/// How long a shutdown waits, after answering everything, for workers to see their stop message.
const EXIT_WAIT: Duration = Duration::from_secs(1);

/// A job a worker is running, as the watchdog sees it.
pub(crate) struct Running<Req, Resp> {
    pub(crate) job: Arc<Job<Req, Resp>>,
    pub(crate) started: Instant,
    /// The watchdog answered it but could not retire the worker (at `max_retired`).
    pub(crate) expired: bool,
}

pub(crate) struct SlotState<Req, Resp> {
    /// Bumped each time the slot gets a new thread (recycled or retired); a thread whose
    /// generation is old has been replaced and exits when its handler returns.
    pub(crate) gen: u64,
    pub(crate) running: Option<Running<Req, Resp>>,
}

/// One worker place: `workers` of them, each owned by exactly one queue-reading thread.
pub(crate) struct Slot<Req, Resp> {
    pub(crate) state: Mutex<SlotState<Req, Resp>>,
    /// The running job's deadline in nanoseconds since the pool's epoch, [`NONE`] when idle:
    /// read by the watchdog without taking the lock.
    pub(crate) deadline_ns: AtomicU64,
}

pub(crate) struct Shared<Req, Resp> {
    pub(crate) id: usize,
    pub(crate) config: Config,
    handler: Handler<Req, Resp>,
    tx: Sender<Msg<Req, Resp>>,
    rx: Receiver<Msg<Req, Resp>>,
    pub(crate) state: AtomicU8,
    next_id: AtomicU64,
    idle: AtomicUsize,
    pub(crate) slots: Box<[Slot<Req, Resp>]>,
    pub(crate) counters: Counters,
    pub(crate) watchdog: Watchdog<Req, Resp>,
    /// Worker threads, with the slot and generation each was started for.
    threads: Mutex<Vec<(usize, u64, JoinHandle<()>)>>,
    /// Threads that own a slot (read the queue).
    readers: Mutex<usize>,
    readers_cv: Condvar,
    pub(crate) epoch: Instant,
    /// A `Weak<Owner<Req, Resp>>`, handed to every [`Context`] so a handler can reach its pool.
    pool_any: Arc<dyn Any + Send + Sync>,
    logged_reentry: AtomicBool,
    shutdown_lock: Mutex<bool>,
}

static NEXT_POOL_ID: AtomicUsize = AtomicUsize::new(1);

impl<Req: Send + 'static, Resp: Send + 'static> Shared<Req, Resp> {
    pub(crate) fn new(
        config: Config,
        handler: Handler<Req, Resp>,
        pool_any: Arc<dyn Any + Send + Sync>,
    ) -> Self {
        let (tx, rx) = crossbeam_channel::bounded(config.queue_capacity);
        let slots = (0..config.workers)
            .map(|_| Slot {
                state: Mutex::new(SlotState {
                    gen: 0,
                    running: None,
                }),
                deadline_ns: AtomicU64::new(NONE),
            })
            .collect();
        Shared {
            id: NEXT_POOL_ID.fetch_add(1, Ordering::Relaxed),
            config,
            handler,
            tx,
            rx,
            state: AtomicU8::new(SERVING),
            next_id: AtomicU64::new(1),
            idle: AtomicUsize::new(0),
            slots,
            counters: Counters::default(),
            watchdog: Watchdog::new(),
            threads: Mutex::new(Vec::new()),
            readers: Mutex::new(0),
            readers_cv: Condvar::new(),
            epoch: Instant::now(),
            pool_any,
            logged_reentry: AtomicBool::new(false),
            shutdown_lock: Mutex::new(false),
        }
    }

    /// Start the watchdog and one thread per slot.
    pub(crate) fn start(self: &Arc<Self>) {
        let me = self.clone();
        let watchdog = thread::Builder::new()
            .name(format!("{}-watchdog", self.config.name))
            .spawn(move || me.watchdog_loop())
            .expect("prefork-pool: cannot start the watchdog thread (thread limit reached?)");
        *self.watchdog.thread.lock() = Some(watchdog);
        for index in 0..self.config.workers {
            if !self.spawn_worker(index, 0) {
                panic!(
                    "prefork-pool: cannot start worker {index} of pool `{}` (thread limit reached?)",
                    self.config.name
                );
            }
        }
        // Return once every worker has run its start hook and waits for a job, so that a pool
        // is ready when `build` returns (its stats say idle, and callers that check for an idle
        // worker see one).
        let mut spins = 0u32;
        while self.idle.load(Ordering::SeqCst) < self.config.workers {
            spins += 1;
            if spins < 200 {
                thread::yield_now();
            } else {
                // A start hook that opens connections may take a while: do not burn a core.
                thread::sleep(Duration::from_millis(1));
            }
        }
    }

    pub(crate) fn name(&self) -> &str {
        &self.config.name
    }

    pub(crate) fn nanos(&self, t: Instant) -> u64 {
        t.saturating_duration_since(self.epoch).as_nanos() as u64
    }

    pub(crate) fn idle_workers(&self) -> usize {
        self.idle.load(Ordering::SeqCst)
    }

    fn new_core(&self, budget: Duration, parent: Option<Arc<dyn JobView>>) -> JobCore {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        JobCore::new(id, budget.min(MAX_BUDGET), parent, Instant::now())
    }

    /// Count one answer: `None` is a handler's answer in time.
    pub(crate) fn count(&self, err: Option<&Error>) {
        let c = &self.counters;
        let Some(e) = err else {
            Counters::bump(&c.completed);
            return;
        };
        Counters::bump(&c.failed);
        match e {
            Error::DeadlineExceeded { .. } => Counters::bump(&c.timed_out),
            Error::Panicked { .. } => Counters::bump(&c.panicked),
            Error::Overloaded { .. } => Counters::bump(&c.overloaded),
            Error::Reentrant { .. } => Counters::bump(&c.reentrant_rejected),
            _ => {}
        }
    }

    /// Deliver `result` to `job`'s waiter and count it, unless the job was answered already.
    pub(crate) fn answer(&self, job: &Job<Req, Resp>, result: Result<Resp, Error>) -> bool {
        job.completion
            .complete(result, |r| self.count(r.as_ref().err()))
    }

    fn overloaded(&self) -> Error {
        Error::Overloaded {
            pool: self.config.name.clone(),
            capacity: self.config.queue_capacity,
        }
    }

    fn shutting_down(&self) -> Error {
        Error::ShuttingDown {
            pool: self.config.name.clone(),
        }
    }

    // ----- submission -----

    /// Put `job` in the queue. On refusal the job is still the caller's (nothing was queued).
    fn enqueue(&self, job: &Arc<Job<Req, Resp>>) -> Result<(), Error> {
        if self.state.load(Ordering::Acquire) != SERVING {
            return Err(self.shutting_down());
        }
        match self.tx.try_send(Msg::Job(job.clone())) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => return Err(self.overloaded()),
            Err(TrySendError::Disconnected(_)) => return Err(self.shutting_down()),
        }
        // A shutdown that drained the queue before our job arrived will not see it: answer it here.
        // (Either the drain sees the job or this load sees STOPPED; both claim, one wins.)
        fence(Ordering::SeqCst);
        if self.state.load(Ordering::SeqCst) == STOPPED && job.claim(DROPPED) {
            self.answer(job, Err(self.shutting_down()));
        }
        Ok(())
    }

    /// Watch a queued job's deadline from the watchdog when it is likely to wait: only when no
    /// worker is idle, so an idle pool pays nothing.
    fn watch_queued(&self, job: &Arc<Job<Req, Resp>>) {
        if self.idle_workers() == 0 {
            let deadline = self.nanos(job.core.deadline);
            self.watchdog
                .queued
                .lock()
                .push(QueuedEntry::new(deadline, job));
            self.watchdog.started(deadline);
        }
    }

    fn refuse_reentrant(&self, worker: usize) -> Error {
        let err = Error::Reentrant {
            pool: self.config.name.clone(),
            worker,
        };
        self.count(Some(&err));
        err
    }

    pub(crate) fn call(
        self: &Arc<Self>,
        req: Req,
        budget: Option<Duration>,
    ) -> Result<Resp, Error> {
        let budget = budget.unwrap_or(self.config.deadline);
        let parent = match guard::position(self.id) {
            Position::Outside => None,
            Position::InSame(parent, worker) => {
                return match self.config.reentry {
                    Reentry::Inline => self.run_inline(req, budget, parent, worker),
                    Reentry::Reject => Err(self.refuse_reentrant(worker)),
                };
            }
            Position::InOther(parent) => {
                if self.idle_workers() == 0 {
                    return self.run_inline(req, budget, parent, usize::MAX);
                }
                Some(parent)
            }
        };
        let nested = parent.is_some();
        let mut job = Job::new(self.new_core(budget, parent), req, Waiter::Nobody);
        if nested {
            job.pool = Some(self.ops_weak());
        }
        let job = Arc::new(job);
        if let Err(e) = self.enqueue(&job) {
            self.count(Some(&e));
            return Err(e);
        }
        await_answer(&job, None, Some(&**self as &dyn PoolOps<Req, Resp>))
            .expect("waiting without a time limit always ends with an answer")
    }

    fn ops_weak(self: &Arc<Self>) -> std::sync::Weak<dyn PoolOps<Req, Resp>> {
        let weak = Arc::downgrade(self);
        weak as std::sync::Weak<dyn PoolOps<Req, Resp>>
    }

    /// Queue a job whose answer goes to `waiter`; used by `submit`, `try_submit` and `submit_then`.
    /// On refusal the request comes back with the error.
    pub(crate) fn submit(
        self: &Arc<Self>,
        req: Req,
        budget: Option<Duration>,
        waiter: Waiter<Resp>,
    ) -> Result<Arc<Job<Req, Resp>>, Refusal<Req, Resp>> {
        let budget = budget.unwrap_or(self.config.deadline);
        let parent = match guard::position(self.id) {
            Position::Outside => None,
            Position::InSame(parent, worker) => {
                if self.config.reentry == Reentry::Reject {
                    return Err((self.refuse_reentrant(worker), req, waiter));
                }
                Some(parent)
            }
            Position::InOther(parent) => Some(parent),
        };
        let mut job = Job::new(self.new_core(budget, parent), req, waiter);
        job.pool = Some(self.ops_weak());
        let job = Arc::new(job);
        match self.enqueue(&job) {
            Ok(()) => {
                self.watch_queued(&job);
                Ok(job)
            }
            Err(e) => {
                if !matches!(e, Error::Reentrant { .. }) {
                    self.count(Some(&e));
                }
                let req = job
                    .take_req()
                    .expect("a refused job still holds its request");
                let waiter = job.completion.take_waiter();
                Err((e, req, waiter))
            }
        }
    }

    // ----- running a handler -----

    /// Run the handler on this thread for `job`, with the guard's chain entered and panics caught.
    fn invoke(
        &self,
        req: Req,
        job: Arc<dyn JobView>,
        worker: usize,
        inline: bool,
    ) -> Result<Resp, Error> {
        let ctx = Context {
            job: job.clone(),
            worker,
            inline,
            pool: self.pool_any.clone(),
        };
        let id = job.core().id;
        let entered = guard::enter(self.id, worker, job);
        let out = catch_unwind(AssertUnwindSafe(|| (self.handler)(req, &ctx)));
        drop(entered);
        out.map_err(|payload| Error::Panicked {
            pool: self.config.name.clone(),
            job: id,
            message: crate::util::panic_message(payload.as_ref()),
        })
    }

    /// The handler's answer if it came by the deadline; after it, `DeadlineExceeded` (the caller
    /// may not have been answered by the watchdog yet: no answer ever comes after a deadline).
    fn in_time(&self, core: &JobCore, result: Result<Resp, Error>) -> Result<Resp, Error> {
        if Instant::now() > core.deadline {
            Err(core.deadline_error(&self.config.name, Stage::Running))
        } else {
            result
        }
    }

    /// A nested call run at once on the calling thread.
    fn run_inline(
        &self,
        req: Req,
        budget: Duration,
        parent: Arc<dyn JobView>,
        worker: usize,
    ) -> Result<Resp, Error> {
        Counters::bump(&self.counters.reentrant_inline);
        self.log_reentry(worker);
        // A budget at least as long as the caller's whole budget ends after the caller's deadline
        // (the caller started earlier), so the nested call simply inherits it: no clock read.
        let inherited = budget >= parent.core().budget;
        let core = if inherited {
            let id = self.next_id.fetch_add(1, Ordering::Relaxed);
            JobCore::inherit(id, parent)
        } else {
            self.new_core(budget, Some(parent))
        };
        let core = spare_core::take(core);
        let result = self.invoke(req, core.clone(), worker, true);
        // An inherited deadline is the caller's: the caller's own job reads the clock before it
        // answers (no answer ever leaves the pool after its deadline), and the watchdog cancels the
        // caller's chain when it passes, so the flag is enough here. An own, shorter deadline
        // needs the clock.
        let result = if inherited {
            if core.is_cancelled() {
                Err(core.deadline_error(&self.config.name, Stage::Running))
            } else {
                result
            }
        } else {
            self.in_time(&core, result)
        };
        spare_core::give_back(core);
        self.count(result.as_ref().err());
        result
    }

    /// Run the handler on this thread, outside the queue and the workers (a spare thread).
    pub(crate) fn call_here(&self, req: Req, budget: Option<Duration>) -> Result<Resp, Error> {
        if self.state.load(Ordering::Acquire) == STOPPED {
            let err = self.shutting_down();
            self.count(Some(&err));
            return Err(err);
        }
        let parent = match guard::position(self.id) {
            Position::Outside => None,
            Position::InSame(p, _) | Position::InOther(p) => Some(p),
        };
        let core = Arc::new(self.new_core(budget.unwrap_or(self.config.deadline), parent));
        let result = self.invoke(req, core.clone(), usize::MAX, true);
        let result = self.in_time(&core, result);
        self.count(result.as_ref().err());
        result
    }

    fn log_reentry(&self, worker: usize) {
        let first = !self.logged_reentry.load(Ordering::Relaxed)
            && !self.logged_reentry.swap(true, Ordering::Relaxed);
        if !first && !log::log_enabled!(log::Level::Debug) {
            return;
        }
        let who = if worker == usize::MAX {
            "a worker of another pool".to_owned()
        } else {
            format!("worker {worker}")
        };
        if first {
            log::info!(
                "pool `{}`: {who} called back into the pool; the call runs inline on the caller's \
                 thread instead of waiting for a worker that may be the caller itself (this would \
                 deadlock a gunicorn sync worker). Later re-entrant calls are logged at debug.",
                self.config.name
            );
        } else {
            log::debug!(
                "pool `{}`: re-entrant call from {who} runs inline",
                self.config.name
            );
        }
    }

    // ----- workers -----

    /// Start a thread that owns slot `index` with generation `gen`. False if the OS refused.
    pub(crate) fn spawn_worker(self: &Arc<Self>, index: usize, gen: u64) -> bool {
        *self.readers.lock() += 1;
        let me = self.clone();
        let spawned = thread::Builder::new()
            .name(format!("{}-worker-{index}", self.config.name))
            .spawn(move || me.worker_loop(index, gen));
        match spawned {
            Ok(handle) => {
                let mut threads = self.threads.lock();
                threads.retain(|(_, _, h)| !h.is_finished());
                threads.push((index, gen, handle));
                true
            }
            Err(e) => {
                self.reader_left();
                log::error!(
                    "pool `{}`: cannot start a thread for worker {index}: {e}; the pool runs one \
                     worker short. Raise the thread limit (ulimit -u) or lower `workers`.",
                    self.config.name
                );
                false
            }
        }
    }

    fn reader_left(&self) {
        let mut readers = self.readers.lock();
        *readers -= 1;
        if *readers == 0 {
            self.readers_cv.notify_all();
        }
    }

    fn recycle_budget(&self, index: usize) -> u64 {
        let max = self.config.max_requests;
        let jitter = self.config.max_requests_jitter;
        if max == 0 || jitter == 0 {
            return max;
        }
        // xorshift64*, seeded from the clock and the worker index: spread, not secret.
        let mut x = (self.epoch.elapsed().as_nanos() as u64)
            ^ (index as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15)
            ^ self.next_id.load(Ordering::Relaxed);
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        max + x.wrapping_mul(0x2545_F491_4F6C_DD1D) % (jitter + 1)
    }

    /// Run a worker hook; a panic in it is logged and the worker goes on.
    fn run_hook(&self, hook: Option<&super::builder::Hook>, which: &str, index: usize) {
        let Some(hook) = hook else {
            return;
        };
        if let Err(payload) = catch_unwind(AssertUnwindSafe(|| hook(index))) {
            log::error!(
                "pool `{}`: the {which} hook panicked on worker {index}: {}; the worker goes on \
                 without it. Fix the hook (return errors from it instead of panicking).",
                self.config.name,
                crate::util::panic_message(payload.as_ref())
            );
        }
    }

    fn worker_loop(self: Arc<Self>, index: usize, gen: u64) {
        self.run_hook(
            self.config.on_worker_start.as_ref(),
            "on_worker_start",
            index,
        );
        let budget = self.recycle_budget(index);
        let slot = &self.slots[index];
        let mut served = 0u64;
        let retired = loop {
            self.idle.fetch_add(1, Ordering::SeqCst);
            let msg = self.rx.recv();
            self.idle.fetch_sub(1, Ordering::SeqCst);
            let job = match msg {
                Ok(Msg::Job(job)) => job,
                Ok(Msg::Stop) | Err(_) => break false,
            };
            if !job.claim(RUNNING) {
                continue; // taken back by a waiting handler, or expired
            }
            let started = Instant::now();
            if started >= job.core.deadline {
                self.answer_expired_in_queue(&job);
                continue;
            }
            let req = job.take_req().expect("a claimed job holds its request");
            slot.state.lock().running = Some(Running {
                job: job.clone(),
                started,
                expired: false,
            });
            let deadline = self.nanos(job.core.deadline);
            slot.deadline_ns.store(deadline, Ordering::SeqCst);
            self.watchdog.started(deadline);

            let result = self.invoke(req, job.clone(), index, false);
            let result = self.in_time(&job.core, result);

            let still_mine = {
                let mut s = slot.state.lock();
                if s.gen == gen {
                    s.running = None;
                    slot.deadline_ns.store(NONE, Ordering::SeqCst);
                    true
                } else {
                    false
                }
            };
            self.answer(&job, result);
            if !still_mine {
                break true;
            }
            served += 1;
            if budget > 0 && served >= budget && self.state.load(Ordering::Acquire) == SERVING {
                if self.recycle(index) {
                    break false;
                }
                served = 0;
            }
            if self.state.load(Ordering::Acquire) == STOPPED {
                break false;
            }
        };
        // The exit hook runs before the thread counts itself out, so a shutdown that waited for
        // the workers has seen every hook run.
        self.run_hook(self.config.on_worker_exit.as_ref(), "on_worker_exit", index);
        if retired {
            self.counters
                .retired_running
                .fetch_sub(1, Ordering::Relaxed);
            log::info!(
                "pool `{}`: a retired thread of worker {index} returned from its handler and exits",
                self.config.name
            );
        } else {
            self.reader_left();
        }
    }

    /// Hand slot `index` to a new thread, started before this one leaves. False if it could not
    /// start (this thread then keeps serving).
    fn recycle(self: &Arc<Self>, index: usize) -> bool {
        let new_gen = {
            let mut s = self.slots[index].state.lock();
            s.gen += 1;
            s.gen
        };
        if self.spawn_worker(index, new_gen) {
            Counters::bump(&self.counters.recycled);
            log::debug!(
                "pool `{}`: worker {index} recycled after max_requests; its replacement is running",
                self.config.name
            );
            true
        } else {
            self.slots[index].state.lock().gen -= 1;
            false
        }
    }

    /// The watchdog found slot `index` past its deadline: answer, cancel, retire and replace.
    pub(crate) fn expire_running(self: &Arc<Self>, index: usize) {
        let slot = &self.slots[index];
        let now = Instant::now();
        let (job, started, retire_gen) = {
            let mut s = slot.state.lock();
            let Some(r) = s.running.as_mut() else {
                return;
            };
            if r.expired || r.job.core.deadline > now {
                return;
            }
            slot.deadline_ns.store(NONE, Ordering::SeqCst);
            let can_retire = self.counters.retired_running.load(Ordering::Relaxed)
                < self.config.max_retired as u64;
            if can_retire {
                let r = s.running.take().expect("checked above");
                s.gen += 1;
                (r.job, r.started, Some(s.gen))
            } else {
                r.expired = true;
                (r.job.clone(), r.started, None)
            }
        };
        job.core.cancel();
        self.answer(
            &job,
            Err(job.core.deadline_error(&self.config.name, Stage::Running)),
        );
        let ran = now.saturating_duration_since(started);
        match retire_gen {
            Some(gen) => {
                Counters::bump(&self.counters.retired);
                self.counters
                    .retired_running
                    .fetch_add(1, Ordering::Relaxed);
                let replaced = self.spawn_worker(index, gen);
                self.reader_left();
                log::warn!(
                    "pool `{}`: job {} on worker {index} ran {ran:?}, past its deadline of {:?}; \
                     the caller got DeadlineExceeded, its Context is cancelled, and the worker is \
                     retired{}. The retired thread exits when the handler returns.",
                    self.config.name,
                    job.core.id,
                    job.core.budget,
                    if replaced {
                        " and replaced"
                    } else {
                        " (no replacement could start)"
                    }
                );
            }
            None => log::error!(
                "pool `{}`: job {} on worker {index} ran {ran:?}, past its deadline of {:?}; the \
                 caller got DeadlineExceeded, but {} retired threads are still running \
                 (max_retired), so worker {index} is not replaced and the pool runs one short \
                 until the handler returns. Find the handler that ignores Context::is_cancelled.",
                self.config.name,
                job.core.id,
                job.core.budget,
                self.config.max_retired
            ),
        }
    }

    /// The watchdog found a queued job past its deadline.
    pub(crate) fn expire_queued(&self, job: &Job<Req, Resp>) {
        if job.claim(DROPPED) {
            self.answer_expired_in_queue(job);
        }
    }

    /// Answer a job, claimed by the caller, whose deadline passed before it started.
    pub(crate) fn answer_expired_in_queue(&self, job: &Job<Req, Resp>) {
        log::debug!(
            "pool `{}`: job {} expired in the queue after {:?}; it was never started",
            self.config.name,
            job.core.id,
            job.core.budget
        );
        self.answer(
            job,
            Err(job.core.deadline_error(&self.config.name, Stage::Queued)),
        );
    }

    pub(crate) fn queued_len(&self) -> usize {
        self.tx.len()
    }

    pub(crate) fn stats(&self) -> Stats {
        let c = &self.counters;
        let idle = self.idle_workers().min(self.config.workers);
        let busy = self
            .slots
            .iter()
            .filter(|s| s.deadline_ns.load(Ordering::Relaxed) != NONE)
            .count();
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        Stats {
            name: self.config.name.clone(),
            workers: self.config.workers,
            busy,
            idle,
            queued: self.queued_len(),
            completed: get(&c.completed),
            failed: get(&c.failed),
            timed_out: get(&c.timed_out),
            panicked: get(&c.panicked),
            overloaded: get(&c.overloaded),
            recycled: get(&c.recycled),
            retired: get(&c.retired),
            retired_running: get(&c.retired_running),
            reentrant_inline: get(&c.reentrant_inline),
            reentrant_rejected: get(&c.reentrant_rejected),
        }
    }

    // ----- shutdown -----

    /// Answer every queued job, and every running one, with `ShuttingDown`; cancel the running ones.
    fn answer_everything(&self) -> u64 {
        let mut answered = 0;
        while let Ok(msg) = self.rx.try_recv() {
            if let Msg::Job(job) = msg {
                if job.claim(DROPPED) && self.answer(&job, Err(self.shutting_down())) {
                    answered += 1;
                }
            }
        }
        for slot in self.slots.iter() {
            let s = slot.state.lock();
            if let Some(r) = &s.running {
                r.job.core.cancel();
                if self.answer(&r.job, Err(self.shutting_down())) {
                    answered += 1;
                }
            }
        }
        answered
    }

    fn wait_readers(&self, until: Instant) -> usize {
        let mut readers = self.readers.lock();
        while *readers > 0 {
            if self.readers_cv.wait_until(&mut readers, until).timed_out() {
                break;
            }
        }
        *readers
    }

    pub(crate) fn shutdown(&self, graceful: Duration, now: bool) -> ShutdownReport {
        let mut report = ShutdownReport::default();
        if now {
            // Escalate at once, even while another thread runs a graceful shutdown.
            self.state.store(STOPPED, Ordering::SeqCst);
            report.answered_shutting_down += self.answer_everything();
        } else {
            let _ =
                self.state
                    .compare_exchange(SERVING, DRAINING, Ordering::SeqCst, Ordering::SeqCst);
        }
        let mut done = self.shutdown_lock.lock();
        if *done {
            return report;
        }
        let end = Instant::now() + if now { Duration::ZERO } else { graceful };
        // Queued jobs come before these stops, so graceful workers finish the queue first.
        for _ in 0..self.config.workers {
            if self.tx.send_deadline(Msg::Stop, end).is_err() {
                break;
            }
        }
        self.wait_readers(end);
        self.state.store(STOPPED, Ordering::SeqCst);
        fence(Ordering::SeqCst);
        report.answered_shutting_down += self.answer_everything();
        for _ in 0..self.config.workers {
            let _ = self.tx.try_send(Msg::Stop);
        }
        let left = self.wait_readers(Instant::now() + EXIT_WAIT);
        self.watchdog.stop();
        // Join every thread that has left the queue (the current owner of each slot, once no
        // thread reads the queue) and any that is done; threads stuck in a handler (retired, or
        // still running at the timeout) are left to end on their own.
        for (index, gen, handle) in std::mem::take(&mut *self.threads.lock()) {
            let current = self.slots[index].state.lock().gen == gen;
            if handle.is_finished() || (left == 0 && current) {
                let _ = handle.join();
            }
        }
        report.threads_left_running =
            left + self.counters.retired_running.load(Ordering::Relaxed) as usize;
        if report.answered_shutting_down > 0 || report.threads_left_running > 0 {
            log::warn!(
                "pool `{}` shut down: {} jobs answered ShuttingDown, {} threads still running \
                 (stuck handlers; they exit when their handler returns)",
                self.config.name,
                report.answered_shutting_down,
                report.threads_left_running
            );
        }
        *done = true;
        report
    }
}

impl<Req: Send + 'static, Resp: Send + 'static> PoolOps<Req, Resp> for Shared<Req, Resp> {
    fn should_steal(&self) -> bool {
        self.idle_workers() == 0 || guard::inside(self.id)
    }

    fn run_claimed_here(&self, job: &Arc<Job<Req, Resp>>) {
        Counters::bump(&self.counters.reentrant_inline);
        let worker = match guard::position(self.id) {
            Position::InSame(_, w) => w,
            _ => usize::MAX,
        };
        self.log_reentry(worker);
        let Some(req) = job.take_req() else {
            return;
        };
        let result = self.invoke(req, job.clone(), worker, true);
        let result = self.in_time(&job.core, result);
        self.answer(job, result);
    }

    fn answer_expired(&self, job: &Job<Req, Resp>) {
        self.answer_expired_in_queue(job);
    }
}

/// One spare `Arc<JobCore>` per thread, so that a chain of inline calls allocates nothing: an
/// inline call's core is shared only with its `Context` and the guard's chain, both gone when it
/// returns, so the `Arc` is unique again and can be reused for the next inline call.
mod spare_core {
    use std::cell::Cell;
    use std::sync::Arc;

    use super::JobCore;

    thread_local! {
        static SPARE: Cell<Option<Arc<JobCore>>> = const { Cell::new(None) };
    }

    /// `core` in an `Arc`, reusing this thread's spare allocation when there is one.
    pub(super) fn take(core: JobCore) -> Arc<JobCore> {
        if let Some(mut spare) = SPARE.with(Cell::take) {
            if let Some(slot) = Arc::get_mut(&mut spare) {
                *slot = core;
                return spare;
            }
        }
        Arc::new(core)
    }

    /// Keep `core`'s allocation for the next inline call if nobody else holds it (a handler may
    /// have kept a clone of its `Context`'s job through a nested `submit`).
    pub(super) fn give_back(mut core: Arc<JobCore>) {
        if let Some(slot) = Arc::get_mut(&mut core) {
            // Do not keep the caller's job alive in the spare.
            slot.parent = None;
            SPARE.with(|s| s.set(Some(core)));
        }
    }
}
