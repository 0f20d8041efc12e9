//! [`PoolState`]: what every thread of one pool shares, and the few things all of them do with it:
//! run the handler, deliver and count an answer, name an error. Its shared state comes in parts
//! whose fields are private to the file that owns them, each with its methods: the queue
//! ([`JobQueue`], `idle_wait/`), the workers ([`Workers`]) and the lifecycle ([`Lifecycle`]),
//! both here. Submission, the worker loop, the watchdog and shutdown each add their part of
//! `PoolState`'s behaviour in their own file.

use std::any::Any;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use super::config::PoolConfig;
use super::context::Context;
use super::deadlines::{nanos_since, DeadlineBoard, SlotDeadline};
use super::guard;
use super::idle_wait::{JobQueue, Lend};
use super::job::{Job, JobCore, JobView};
#[cfg(feature = "http")]
use super::record::Record;
use super::record::{Describe, Label};
use super::stats::{Counters, Stats};
use crate::error::{Error, Stage};
use crate::sync::CacheLine;

pub(crate) type Handler<Req, Resp> = Box<dyn Fn(Req, &Context) -> Resp + Send + Sync>;

/// What the queue carries.
pub(crate) enum Msg<Req, Resp> {
    Job(Arc<Job<Req, Resp>>),
    Stop,
}

/// The pool takes jobs.
pub(crate) const SERVING: u8 = 0;
/// A graceful shutdown runs: no new jobs, queued and running ones finish.
pub(crate) const DRAINING: u8 = 1;
/// Stopped: everything left is answered `ShuttingDown`.
pub(crate) const STOPPED: u8 = 2;

/// The longest budget a job can have; longer ones are clamped (no `Instant` overflow).
const MAX_BUDGET: Duration = Duration::from_secs(365 * 24 * 3600);

/// Where the pool is in its life (serving, draining, stopped), whether `build` has returned, how
/// many threads own a slot, and the one shutdown that does the work. Its fields are this file's;
/// every other file goes through its methods.
pub(crate) struct Lifecycle {
    /// [`SERVING`], [`DRAINING`] or [`STOPPED`].
    phase: AtomicU8,
    /// Set once `build` has returned: from then on a failing state init is retried, not reported.
    started: AtomicBool,
    /// Held by the shutdown that does the work; true once one finished.
    shutdown_done: Mutex<bool>,
    /// Threads that own a slot (read the queue).
    ///
    /// A count, not "every worker's sender dropped" (tokio's blocking pool): the watchdog retires
    /// a stuck worker from its own thread while that thread lives on in its handler, so the
    /// thread cannot hold what tells the shutdown it is gone; and the shutdown reports how many
    /// threads it left running, which a channel cannot say.
    live: Mutex<usize>,
    live_cv: Condvar,
}

impl Lifecycle {
    fn new() -> Self {
        Lifecycle {
            phase: AtomicU8::new(SERVING),
            started: AtomicBool::new(false),
            shutdown_done: Mutex::new(false),
            live: Mutex::new(0),
            live_cv: Condvar::new(),
        }
    }

    /// The phase now (an acquire load).
    #[inline]
    pub(crate) fn phase(&self) -> u8 {
        self.phase.load(Ordering::Acquire)
    }

    /// The phase, read in the single total order of `SeqCst` operations (after a `SeqCst`
    /// fence: an enqueue racing a shutdown's drain).
    #[inline]
    pub(crate) fn phase_seqcst(&self) -> u8 {
        self.phase.load(Ordering::SeqCst)
    }

    /// Serving → draining (a graceful shutdown); no change in any other phase.
    pub(crate) fn begin_drain(&self) {
        let _ = self
            .phase
            .compare_exchange(SERVING, DRAINING, Ordering::SeqCst, Ordering::SeqCst);
    }

    pub(crate) fn stop(&self) {
        self.phase.store(STOPPED, Ordering::SeqCst);
    }

    pub(crate) fn mark_started(&self) {
        self.started.store(true, Ordering::SeqCst);
    }

    pub(crate) fn started(&self) -> bool {
        self.started.load(Ordering::SeqCst)
    }

    /// The shutdown's lock: the guard says whether a shutdown finished already; the one that
    /// holds it and finds false does the work and sets it.
    pub(crate) fn shutdown_once(&self) -> parking_lot::MutexGuard<'_, bool> {
        self.shutdown_done.lock()
    }

    /// A thread took a slot.
    pub(crate) fn worker_joined(&self) {
        *self.live.lock() += 1;
    }

    /// A thread stopped owning a slot (it exited, or the watchdog retired it).
    pub(crate) fn worker_left(&self) {
        let mut live = self.live.lock();
        *live -= 1;
        if *live == 0 {
            self.live_cv.notify_all();
        }
    }

    /// Wait until no thread owns a slot, or `until`; the number still live.
    pub(crate) fn wait_workers_gone(&self, until: Instant) -> usize {
        let mut live = self.live.lock();
        while *live > 0 {
            if self.live_cv.wait_until(&mut live, until).timed_out() {
                break;
            }
        }
        *live
    }
}

/// A job a worker is running, as the watchdog sees it.
pub(crate) struct Running<Req, Resp> {
    pub(crate) job: Arc<Job<Req, Resp>>,
    pub(crate) started: Instant,
    /// The watchdog answered it but could not retire the worker (at `max_retired`).
    pub(crate) expired: bool,
}

impl<Req, Resp> Running<Req, Resp> {
    /// Its record, `label` saying what it is.
    #[cfg(feature = "http")]
    fn record(&self, worker: Option<usize>, label: &Label) -> Record {
        Record {
            worker,
            started: self.started,
            deadline: self.job.core.deadline,
            label: *label,
        }
    }
}

pub(crate) struct SlotState<Req, Resp> {
    /// Bumped each time the slot gets a new thread (recycled or retired); a thread whose
    /// generation is old has been replaced and exits when its handler returns.
    pub(crate) gen: u64,
    pub(crate) running: Option<Running<Req, Resp>>,
    /// What the running job is, in words (the pool's describer wrote it when the worker claimed
    /// it); meaningful while `running` is set. Kept here and written over in place for each job
    /// (a 240-byte buffer: not built per job and copied in); it goes with the job's `Running`
    /// only when the watchdog retires the thread (see [`Workers::keep_retired`]).
    #[cfg_attr(not(feature = "http"), allow(dead_code))]
    pub(crate) label: Label,
}

/// One worker place: `workers` of them, each owned by exactly one queue-reading thread. Its
/// worker writes it on every job: on lines of its own (see [`CacheLine`]).
#[repr(align(128))]
pub(crate) struct WorkerSlot<Req, Resp> {
    pub(crate) state: Mutex<SlotState<Req, Resp>>,
    /// The running job's deadline on the watchdog's board.
    pub(crate) deadline: SlotDeadline,
    /// A job this slot's worker submitted while it rested in the pool's sleeper: it runs it next
    /// (see `idle_wait::lend::resting_worker`).
    pub(crate) lent: Lend<Arc<Job<Req, Resp>>>,
}

/// The worker slots, the threads that own them, and how many wait for a job. Its fields are this
/// file's; every other file goes through its methods.
pub(crate) struct Workers<Req, Resp> {
    slots: Box<[WorkerSlot<Req, Resp>]>,
    /// Workers waiting for a job now.
    idle: CacheLine<AtomicUsize>,
    /// Worker threads, with the slot and generation each was started for.
    threads: Mutex<Vec<(usize, u64, JoinHandle<()>)>>,
    /// The first worker whose state init failed during `build`, and why.
    init_failed: Mutex<Option<(usize, String)>>,
    /// The jobs of threads the watchdog retired whose handlers have not returned: their records
    /// outlive their slots (the heartbeat still reports them, so the master can replace a process
    /// whose retired thread never returns).
    retired: Mutex<Vec<(Running<Req, Resp>, Label)>>,
}

impl<Req, Resp> Workers<Req, Resp> {
    fn new(slots: Box<[WorkerSlot<Req, Resp>]>) -> Self {
        Workers {
            slots,
            idle: CacheLine(AtomicUsize::new(0)),
            threads: Mutex::new(Vec::new()),
            init_failed: Mutex::new(None),
            retired: Mutex::new(Vec::new()),
        }
    }

    /// The watchdog retired the thread running `r` (what it is: `label`): keep its record until
    /// its handler returns.
    pub(crate) fn keep_retired(&self, r: Running<Req, Resp>, label: Label) {
        self.retired.lock().push((r, label));
    }

    /// The retired thread running job `id` returned: its record goes.
    pub(crate) fn forget_retired(&self, id: u64) {
        self.retired.lock().retain(|(r, _)| r.job.core.id != id);
    }

    /// What every worker runs now, then what every retired thread still runs.
    #[cfg(feature = "http")]
    pub(crate) fn records(&self) -> Vec<Record> {
        let mut out: Vec<Record> = self
            .slots
            .iter()
            .enumerate()
            .filter_map(|(i, s)| {
                let s = s.state.lock();
                s.running.as_ref().map(|r| r.record(Some(i), &s.label))
            })
            .collect();
        out.extend(self.retired.lock().iter().map(|(r, l)| r.record(None, l)));
        out
    }

    /// Slot `index` (one of `workers`).
    #[inline]
    pub(crate) fn slot(&self, index: usize) -> &WorkerSlot<Req, Resp> {
        &self.slots[index]
    }

    #[inline]
    pub(crate) fn slots(&self) -> &[WorkerSlot<Req, Resp>] {
        &self.slots
    }

    /// Workers waiting for a job now.
    #[inline]
    pub(crate) fn idle(&self) -> usize {
        self.idle.load(Ordering::SeqCst)
    }

    /// Run `wait` (a worker waiting for its next job) counted as idle.
    #[inline]
    pub(crate) fn idle_while<R>(&self, wait: impl FnOnce() -> R) -> R {
        self.idle.fetch_add(1, Ordering::SeqCst);
        let got = wait();
        self.idle.fetch_sub(1, Ordering::SeqCst);
        got
    }

    /// Keep `handle`, the thread started for slot `index` at generation `gen` (and forget the
    /// threads that are done).
    pub(crate) fn track_thread(&self, index: usize, gen: u64, handle: JoinHandle<()>) {
        let mut threads = self.threads.lock();
        threads.retain(|(_, _, h)| !h.is_finished());
        threads.push((index, gen, handle));
    }

    /// Every thread kept, with its slot and generation (the shutdown joins them).
    pub(crate) fn take_threads(&self) -> Vec<(usize, u64, JoinHandle<()>)> {
        std::mem::take(&mut *self.threads.lock())
    }

    /// Worker `index`'s state init failed during `build` (the first failure is kept).
    pub(crate) fn init_failed(&self, index: usize, cause: String) {
        self.init_failed.lock().get_or_insert((index, cause));
    }

    /// The first init failure, taken.
    pub(crate) fn take_init_failure(&self) -> Option<(usize, String)> {
        self.init_failed.lock().take()
    }
}

/// The state every thread of a pool shares.
pub(crate) struct PoolState<Req, Resp> {
    pub(crate) id: usize,
    pub(crate) config: PoolConfig,
    handler: Handler<Req, Resp>,
    /// The queue and the idle workers sleeping on it.
    pub(crate) queue: JobQueue<Msg<Req, Resp>>,
    pub(crate) life: Lifecycle,
    /// Written by every caller (on its own line: see [`CacheLine`]).
    pub(crate) next_id: CacheLine<AtomicU64>,
    /// The worker slots and their threads.
    pub(crate) workers: Workers<Req, Resp>,
    /// Written by the workers on every answer (on lines of their own: see [`CacheLine`]).
    pub(crate) counters: CacheLine<Counters>,
    /// The watchdog's deadlines (running and queued jobs).
    pub(crate) board: DeadlineBoard<Job<Req, Resp>>,
    pub(crate) watchdog_thread: Mutex<Option<JoinHandle<()>>>,
    pub(crate) epoch: Instant,
    /// A `Weak<Owner<Req, Resp>>`, handed to every [`Context`] so a handler can reach its pool.
    pool_any: Arc<dyn Any + Send + Sync>,
    pub(crate) logged_reentry: AtomicBool,
    pub(crate) logged_cycle: AtomicBool,
    /// Called (on the watchdog's thread) each time a job runs past its deadline with the budget
    /// of retired threads (`max_retired`) spent, so that its worker is not replaced: the HTTP
    /// server's stuck policy.
    pub(crate) on_budget_spent: std::sync::OnceLock<Box<dyn Fn() + Send + Sync>>,
    /// Names each claimed job in its worker's record (see `Pool::describe_with`).
    pub(crate) describe: std::sync::OnceLock<Describe<Req>>,
}

static NEXT_POOL_ID: AtomicUsize = AtomicUsize::new(1);

impl<Req, Resp> Drop for PoolState<Req, Resp> {
    fn drop(&mut self) {
        guard::forget_name(self.id);
    }
}

impl<Req: Send + 'static, Resp: Send + 'static> PoolState<Req, Resp> {
    pub(crate) fn new(
        config: PoolConfig,
        handler: Handler<Req, Resp>,
        pool_any: Arc<dyn Any + Send + Sync>,
    ) -> Self {
        let slots = (0..config.workers)
            .map(|_| WorkerSlot {
                state: Mutex::new(SlotState {
                    gen: 0,
                    running: None,
                    label: Label::EMPTY,
                }),
                deadline: SlotDeadline::new(),
                lent: Lend::new(),
            })
            .collect();
        let queue = JobQueue::new(config.queue_capacity);
        let id = NEXT_POOL_ID.fetch_add(1, Ordering::Relaxed);
        guard::register_name(id, &config.name);
        PoolState {
            id,
            config,
            handler,
            queue,
            life: Lifecycle::new(),
            next_id: CacheLine(AtomicU64::new(1)),
            workers: Workers::new(slots),
            counters: CacheLine::default(),
            board: DeadlineBoard::new(),
            watchdog_thread: Mutex::new(None),
            epoch: Instant::now(),
            pool_any,
            logged_reentry: AtomicBool::new(false),
            logged_cycle: AtomicBool::new(false),
            on_budget_spent: std::sync::OnceLock::new(),
            describe: std::sync::OnceLock::new(),
        }
    }

    pub(crate) fn name(&self) -> &str {
        &self.config.name
    }

    /// `t` on the deadline board's clock (nanoseconds since this pool's epoch).
    #[inline]
    pub(crate) fn nanos(&self, t: Instant) -> u64 {
        nanos_since(self.epoch, t)
    }

    #[inline]
    pub(crate) fn idle_workers(&self) -> usize {
        self.workers.idle()
    }

    #[inline]
    pub(crate) fn new_core(
        &self,
        budget: Duration,
        parent: Option<Arc<dyn JobView>>,
        depth: u32,
    ) -> JobCore {
        self.new_core_at(budget, parent, depth, Instant::now())
    }

    /// [`new_core`](Self::new_core) for a job submitted at `now` (the submitter's own reading of
    /// the clock, taken just before): its deadline is `now` plus its budget.
    #[inline]
    pub(crate) fn new_core_at(
        &self,
        budget: Duration,
        parent: Option<Arc<dyn JobView>>,
        depth: u32,
        now: Instant,
    ) -> JobCore {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        JobCore::new(id, self.id, budget.min(MAX_BUDGET), parent, depth, now)
    }

    /// Count one answer: `None` is a handler's answer in time.
    #[inline]
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

    /// Count one answer to a nested call run inline: its success is an inline completion, not a
    /// completed request (the request that made it completes on its own).
    #[inline]
    pub(crate) fn count_inline(&self, err: Option<&Error>) {
        match err {
            None => Counters::bump(&self.counters.inline_completed),
            Some(_) => self.count(err),
        }
    }

    /// Deliver `result` to `job`'s waiter and count it, unless the job was answered already.
    #[inline]
    pub(crate) fn answer(&self, job: &Job<Req, Resp>, result: Result<Resp, Error>) -> bool {
        job.answer
            .complete(result, |r| self.count(r.as_ref().err()))
    }

    /// [`answer`](Self::answer), made at `at` (the clock read just before, passed on to a
    /// completion callback).
    #[inline]
    pub(crate) fn answer_at(
        &self,
        job: &Job<Req, Resp>,
        result: Result<Resp, Error>,
        at: Instant,
    ) -> bool {
        job.answer
            .complete_at(result, Some(at), |r| self.count(r.as_ref().err()))
    }

    pub(crate) fn overloaded(&self) -> Error {
        Error::Overloaded {
            pool: self.config.name.clone(),
            capacity: self.config.queue_capacity,
        }
    }

    pub(crate) fn shutting_down(&self) -> Error {
        Error::ShuttingDown {
            pool: self.config.name.clone(),
        }
    }

    /// Run the handler on this thread for `job` (numbered `id`), with the guard's chain entered
    /// and panics caught. `worker` is the slot index, or [`guard::NOT_A_WORKER`].
    #[inline]
    pub(crate) fn invoke(
        &self,
        req: Req,
        job: Arc<dyn JobView>,
        id: u64,
        worker: usize,
        inline: bool,
    ) -> Result<Resp, Error> {
        self.invoke_taking(&mut Some(req), job, id, worker, inline)
    }

    /// [`invoke`](Self::invoke) with the request taken out of `req` (which holds it) only as the
    /// handler is called: the request (it may be large) is moved once, into the handler, not
    /// through each frame on the way.
    #[inline]
    pub(crate) fn invoke_taking(
        &self,
        req: &mut Option<Req>,
        job: Arc<dyn JobView>,
        id: u64,
        worker: usize,
        inline: bool,
    ) -> Result<Resp, Error> {
        let ctx = Context {
            job,
            worker,
            inline,
            pool: self.pool_any.clone(),
        };
        self.run_handler(req, &ctx, id)
    }

    /// The context a worker lends to each of its handlers in turn (see
    /// [`invoke_in`](Self::invoke_in)): made once per worker thread, so that a job costs no
    /// reference counting for it. It holds a placeholder job between jobs.
    pub(crate) fn worker_context(&self, worker: usize) -> Context {
        let idle = JobCore::new(0, self.id, Duration::ZERO, None, 0, self.epoch);
        Context {
            job: Arc::new(idle),
            worker,
            inline: false,
            pool: self.pool_any.clone(),
        }
    }

    /// A worker's [`invoke_taking`](Self::invoke_taking): `job` is moved into the worker's own
    /// `ctx` for the handler and handed back with the answer (no handle to the job is made or
    /// dropped for the context; the re-entrancy guard's chain takes the one it needs).
    #[inline]
    pub(crate) fn invoke_in(
        &self,
        req: &mut Option<Req>,
        ctx: &mut Context,
        job: Arc<Job<Req, Resp>>,
    ) -> (Result<Resp, Error>, Arc<Job<Req, Resp>>) {
        let id = job.core.id;
        let idle = std::mem::replace(&mut ctx.job, job);
        let out = self.run_handler(req, ctx, id);
        let job = std::mem::replace(&mut ctx.job, idle)
            .into_any()
            .downcast::<Job<Req, Resp>>()
            .unwrap_or_else(|_| unreachable!("the context holds the job it was lent"));
        (out, job)
    }

    /// Call the handler with `ctx`, the request taken out of `req`, the guard's chain entered
    /// and panics caught (`id`: the job's, for the error).
    #[inline]
    fn run_handler(&self, req: &mut Option<Req>, ctx: &Context, id: u64) -> Result<Resp, Error> {
        let entered = guard::enter(self.id, ctx.worker, ctx.job.clone());
        let out = catch_unwind(AssertUnwindSafe(|| {
            let req = req.take().expect("invoked with its request");
            (self.handler)(req, ctx)
        }));
        drop(entered);
        out.map_err(|payload| Error::Panicked {
            pool: self.config.name.clone(),
            job: id,
            message: crate::util::panic_message(payload.as_ref()),
        })
    }

    /// [`invoke`](Self::invoke), then [`in_time`](Self::in_time) against `core`'s deadline: the
    /// answer of a job run on its own deadline (by its worker, or inline by a call).
    #[inline]
    pub(crate) fn run_in_time(
        &self,
        req: Req,
        job: Arc<dyn JobView>,
        core: &JobCore,
        worker: usize,
        inline: bool,
    ) -> Result<Resp, Error> {
        let result = self.invoke(req, job, core.id, worker, inline);
        self.in_time(core, result)
    }

    /// The handler's answer if it came by the deadline; after it, `DeadlineExceeded` (the caller
    /// may not have been answered by the watchdog yet: no answer ever comes after a deadline).
    #[inline]
    pub(crate) fn in_time(
        &self,
        core: &JobCore,
        result: Result<Resp, Error>,
    ) -> Result<Resp, Error> {
        if Instant::now() > core.deadline {
            Err(core.deadline_error(&self.config.name, Stage::Running))
        } else {
            result
        }
    }

    /// [`in_time`](Self::in_time) at `now` (read when the handler returned), in place: the
    /// answer is not moved (it may be large).
    #[inline]
    pub(crate) fn in_time_at(
        &self,
        core: &JobCore,
        result: &mut Result<Resp, Error>,
        now: Instant,
    ) {
        if now > core.deadline {
            *result = Err(core.deadline_error(&self.config.name, Stage::Running));
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

    pub(crate) fn stats(&self) -> Stats {
        let c = &self.counters;
        let idle = self.idle_workers().min(self.config.workers);
        let busy = self
            .workers
            .slots()
            .iter()
            .filter(|s| s.deadline.is_busy())
            .count();
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        Stats {
            name: self.config.name.clone(),
            workers: self.config.workers,
            busy,
            idle,
            queued: self.queue.len(),
            completed: get(&c.completed),
            inline_completed: get(&c.inline_completed),
            failed: get(&c.failed),
            timed_out: get(&c.timed_out),
            panicked: get(&c.panicked),
            overloaded: get(&c.overloaded),
            recycled: get(&c.recycled),
            retired: get(&c.retired),
            retired_running: get(&c.retired_running),
            reentrant_inline: get(&c.reentrant_inline),
            reentrant_rejected: get(&c.reentrant_rejected),
            abandoned: get(&c.abandoned),
            workers_without_state: get(&c.without_state) as usize,
        }
    }
}
