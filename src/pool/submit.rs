//! Handing a job to the pool and getting its answer back: `call`, `submit`, `call_here`, nested
//! calls of a pool's own handlers run inline on the caller's thread, calls from other pools queued
//! (and handed to the waiting worker of a wait-for cycle), the enqueue itself, waiting for an
//! answer, and taking a queued job back to run it on a waiting handler's thread.

use std::sync::atomic::{fence, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use crossbeam_channel::TrySendError;

use super::completion::Waiter;
use super::config::Reentry;
use super::guard::{self, Position, NOT_A_WORKER};
use super::idle_wait::Lend;
use super::job::{Job, JobCore, JobView, PoolOps, ANSWERED_UNRUN, QUEUED, RUNNING};
use super::state::{Msg, PoolState, SERVING, STOPPED};
use super::stats::Counters;
use crate::error::{Error, Stage};

/// A submission refused at once: the error, and the request and waiter given back.
pub(crate) type Refusal<Req, Resp> = (Error, Req, Waiter<Resp>);

impl<Req: Send + 'static, Resp: Send + 'static> PoolState<Req, Resp> {
    /// Put `job` in the queue. On refusal the job is still the caller's (nothing was queued).
    /// `finishing`: nobody on this thread waits for the job, so a worker answering its job on
    /// this thread may take it next.
    fn enqueue(&self, job: &Arc<Job<Req, Resp>>, finishing: bool) -> Result<(), Error> {
        if self.life.phase() != SERVING {
            return Err(self.shutting_down());
        }
        // Submitted by one of our workers from its sleeper (it read the request), or while it
        // answers its job (it read the connection's next request then): that worker runs it
        // next, no other thread is woken.
        let lends = |index: usize| self.workers.slots().get(index).map(|s| &s.lent);
        if Lend::offer_from_resting(lends, self.id, finishing, || job.clone()) {
            return Ok(());
        }
        match self.queue.push(Msg::Job(job.clone())) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => return Err(self.overloaded()),
            Err(TrySendError::Disconnected(_)) => return Err(self.shutting_down()),
        }
        // A shutdown that drained the queue before our job arrived will not see it: answer it here.
        // (Either the drain sees the job or this load sees STOPPED; both claim, one wins.)
        fence(Ordering::SeqCst);
        if self.life.phase_seqcst() == STOPPED && job.claim(ANSWERED_UNRUN) {
            self.answer(job, Err(self.shutting_down()));
        }
        Ok(())
    }

    /// Watch a queued job's deadline from the watchdog when it is likely to wait: only when no
    /// worker is idle, so an idle pool pays nothing.
    fn watch_queued(&self, job: &Arc<Job<Req, Resp>>) {
        if self.idle_workers() == 0 {
            let deadline = self.nanos(job.core.deadline);
            self.board.watch_queued(deadline, job);
        }
    }

    /// True when a call that would run on a thread already running this pool's handler is refused:
    /// under [`Reentry::Reject`], and always for a pool with per-worker state (the state is lent to
    /// the handler running on that thread; no second `&mut` to it exists).
    fn refuses_reentry(&self) -> bool {
        self.config.reentry == Reentry::Reject || self.config.state.is_some()
    }

    fn refuse_reentrant(&self, worker: usize) -> Error {
        let err = Error::Reentrant {
            pool: self.config.name.clone(),
            worker,
        };
        self.count(Some(&err));
        err
    }

    /// For a call from another pool's handler (`parent` is the caller's job): the job of this
    /// pool up the caller's chain that waits for it, directly or through other pools (a wait-for
    /// cycle), if there is one; under [`Reentry::Reject`] such a cycle is refused.
    fn cycle_through(&self, parent: &Arc<dyn JobView>) -> Result<Option<Arc<dyn JobView>>, Error> {
        let Some(waiting) = JobCore::ancestor_in(parent, self.id) else {
            return Ok(None);
        };
        if self.refuses_reentry() {
            let mut ids = parent.core().pools_up_to(self.id);
            ids.reverse();
            ids.push(self.id);
            let worker = guard::top().map_or(NOT_A_WORKER, |(_, w)| w);
            let err = Error::Reentrant {
                pool: guard::name_path(&ids),
                worker,
            };
            self.count(Some(&err));
            return Err(err);
        }
        self.log_cycle(parent);
        Ok(Some(waiting))
    }

    fn log_cycle(&self, parent: &Arc<dyn JobView>) {
        let first = !self.logged_cycle.load(Ordering::Relaxed)
            && !self.logged_cycle.swap(true, Ordering::Relaxed);
        if !first && !log::log_enabled!(log::Level::Debug) {
            return;
        }
        let mut ids = parent.core().pools_up_to(self.id);
        ids.reverse();
        ids.push(self.id);
        let cycle = guard::name_path(&ids);
        if first {
            log::info!(
                "pool `{}`: a call closes a cycle of pools ({cycle}) while a worker of `{}` waits \
                 for it; that worker runs it itself instead of waiting for a free one (which may \
                 never come). Later cycles are logged at debug.",
                self.config.name,
                self.config.name
            );
        } else {
            log::debug!(
                "pool `{}`: cycle {cycle} handed to the waiting worker",
                self.config.name
            );
        }
    }

    /// `depth`: the least depth the job gets (see [`JobCore::depth`]); 0 from the public API.
    pub(crate) fn call(
        self: &Arc<Self>,
        req: Req,
        budget: Option<Duration>,
        depth: u32,
    ) -> Result<Resp, Error> {
        let budget = budget.unwrap_or(self.config.deadline);
        let (parent, waiting) = match guard::position(self.id) {
            Position::Outside => (None, None),
            Position::InSame(parent, worker) => {
                return if self.refuses_reentry() {
                    Err(self.refuse_reentrant(worker))
                } else {
                    self.run_inline(req, budget, depth, parent, worker)
                };
            }
            Position::InOther(parent) => {
                // Another pool's handler calls: it waits in the queue like any call (the bound
                // holds), unless a job of this pool up its chain waits for it (a cycle).
                let waiting = self.cycle_through(&parent)?;
                (Some(parent), waiting)
            }
        };
        // A call from outside any handler reuses this thread's allocation of its last such call
        // (see `spare_job`); a nested one keeps its caller's job alive through its own, so it
        // gets a new one.
        let outside = parent.is_none();
        let pool = parent.is_some().then(|| self.ops_weak());
        let job = Job::new(
            self.new_core(budget, parent, depth),
            Some(req),
            Waiter::Nobody,
            pool,
        );
        let job = if outside {
            spare_job::take(job)
        } else {
            Arc::new(job)
        };
        if let Err(e) = self.enqueue(&job, false) {
            self.count(Some(&e));
            return Err(e);
        }
        if let Some(w) = waiting {
            w.core().help.hand(job.clone());
        }
        let answer = await_answer(&job, None, Some(&**self as &dyn PoolOps<Req, Resp>))
            .expect("waiting without a time limit always ends with an answer");
        if outside {
            spare_job::give_back(job);
        }
        answer
    }

    fn ops_weak(self: &Arc<Self>) -> Weak<dyn PoolOps<Req, Resp>> {
        let weak = Arc::downgrade(self);
        weak as Weak<dyn PoolOps<Req, Resp>>
    }

    /// Queue a job whose answer goes to `waiter`; used by `submit`, `try_submit` and `submit_then`.
    /// On refusal the request comes back with the error. `depth`: as for [`call`](Self::call).
    /// `finishing`: the caller never waits for the job on this thread (see `enqueue`). `now`: the
    /// submitter's reading of the clock, taken just before (the HTTP server's, when it read the
    /// request), that the job's deadline counts from; `None`: read here.
    pub(crate) fn submit(
        self: &Arc<Self>,
        req: Req,
        budget: Option<Duration>,
        depth: u32,
        waiter: Waiter<Resp>,
        finishing: bool,
        now: Option<Instant>,
    ) -> Result<Arc<Job<Req, Resp>>, Refusal<Req, Resp>> {
        let budget = budget.unwrap_or(self.config.deadline);
        let (parent, waiting) = match guard::position(self.id) {
            Position::Outside => (None, None),
            Position::InSame(parent, worker) => {
                if self.refuses_reentry() {
                    return Err((self.refuse_reentrant(worker), req, waiter));
                }
                (Some(parent), None)
            }
            Position::InOther(parent) => match self.cycle_through(&parent) {
                Ok(waiting) => (Some(parent), waiting),
                Err(e) => return Err((e, req, waiter)),
            },
        };
        let now = now.unwrap_or_else(Instant::now);
        // A callback's job is never waited for (`await_answer`, the only reader of the job's
        // handle on its pool, serves tickets and calls): no handle, no reference count to keep.
        let ops = (!matches!(waiter, Waiter::Callback(_))).then(|| self.ops_weak());
        // This thread's spare allocation when it has one (a worker that ran its last job to the
        // end kept it: the HTTP server's next request, read on that worker, is submitted here).
        let mut job = spare_job::take(Job::new(
            self.new_core_at(budget, parent, depth, now),
            None,
            waiter,
            ops,
        ));
        // The request (it may be large) is written into the job where it lies, once: built
        // into the job before the `Arc` it would be copied with it on the way (twice more).
        *Arc::get_mut(&mut job)
            .expect("a new Arc is not shared")
            .req
            .get_mut() = Some(req);
        match self.enqueue(&job, finishing) {
            Ok(()) => {
                self.watch_queued(&job);
                if let Some(w) = waiting {
                    w.core().help.hand(job.clone());
                }
                Ok(job)
            }
            Err(e) => {
                if !matches!(e, Error::Reentrant { .. }) {
                    self.count(Some(&e));
                }
                let req = job
                    .take_req()
                    .expect("a refused job still holds its request");
                let waiter = job.answer.take_waiter();
                Err((e, req, waiter))
            }
        }
    }

    /// A nested call run at once on the calling thread.
    fn run_inline(
        &self,
        req: Req,
        budget: Duration,
        depth: u32,
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
            JobCore::inherit(id, self.id, parent, depth)
        } else {
            self.new_core(budget, Some(parent), depth)
        };
        let core = spare_core::take(core);
        let result = self.invoke(req, core.clone(), core.id, worker, true);
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
        self.count_inline(result.as_ref().err());
        result
    }

    /// Run the handler on this thread, outside the queue and the workers (a spare thread).
    /// `depth`: as for [`call`](Self::call).
    pub(crate) fn call_here(
        &self,
        req: Req,
        budget: Option<Duration>,
        depth: u32,
    ) -> Result<Resp, Error> {
        if self.life.phase() == STOPPED {
            let err = self.shutting_down();
            self.count(Some(&err));
            return Err(err);
        }
        if self.config.state.is_some() {
            // The calling thread is none of the workers that own a state.
            let worker = match guard::position(self.id) {
                Position::InSame(_, w) => w,
                _ => NOT_A_WORKER,
            };
            return Err(self.refuse_reentrant(worker));
        }
        let parent = match guard::position(self.id) {
            Position::Outside => None,
            Position::InSame(p, _) | Position::InOther(p) => Some(p),
        };
        let budget = budget.unwrap_or(self.config.deadline);
        let core = Arc::new(self.new_core(budget, parent, depth));
        let result = self.run_in_time(req, core.clone(), &core, NOT_A_WORKER, true);
        self.count(result.as_ref().err());
        result
    }

    fn log_reentry(&self, worker: usize) {
        let first = !self.logged_reentry.load(Ordering::Relaxed)
            && !self.logged_reentry.swap(true, Ordering::Relaxed);
        if !first && !log::log_enabled!(log::Level::Debug) {
            return;
        }
        let who = if worker == NOT_A_WORKER {
            "a worker of another pool".to_owned()
        } else {
            format!("worker {worker}")
        };
        if first {
            log::info!(
                "pool `{}`: {who} called its own pool (e.g. through the http Loopback): the call \
                 runs inline on the calling thread, as designed, so it needs no free worker. \
                 Further such calls are logged at debug.",
                self.config.name
            );
        } else {
            log::debug!(
                "pool `{}`: re-entrant call from {who} runs inline",
                self.config.name
            );
        }
    }
}

impl<Req: Send + 'static, Resp: Send + 'static> PoolOps<Req, Resp> for PoolState<Req, Resp> {
    fn should_steal(&self) -> bool {
        // Only a thread that already runs this pool's handler may run its jobs: a waiter of
        // another pool waits for a worker (cycles are broken through the help box instead).
        guard::inside(self.id)
    }

    fn run_claimed_here(&self, job: &Arc<Job<Req, Resp>>) {
        Counters::bump(&self.counters.reentrant_inline);
        let worker = match guard::position(self.id) {
            Position::InSame(_, w) => w,
            _ => NOT_A_WORKER,
        };
        self.log_reentry(worker);
        let Some(req) = job.take_req() else {
            return;
        };
        let result = self.run_in_time(req, job.clone(), &job.core, worker, true);
        job.answer
            .complete(result, |r| self.count_inline(r.as_ref().err()));
    }

    fn answer_expired(&self, job: &Job<Req, Resp>) {
        self.answer_expired_in_queue(job);
    }
}

/// How long a handler waiting on a nested job of its own pool sleeps at first before it looks
/// again whether it should take the job back; doubled up to [`NESTED_STEP_MAX`].
const NESTED_STEP_MIN: Duration = Duration::from_millis(1);
const NESTED_STEP_MAX: Duration = Duration::from_millis(50);

/// Wait for `job`'s answer until `until` (forever with `None`; `None` back on timeout).
///
/// At the job's deadline a still-queued job is claimed and answered `DeadlineExceeded` (it never
/// runs); a running one is answered by the watchdog. A waiter that is itself inside a handler:
/// - of the job's own pool takes the job back and runs it when it is still queued (the re-entrancy
///   guard's `submit` + `wait` path);
/// - of any pool runs, while it waits, the nested jobs of its own pool handed to it through its
///   job's help box (a call around a cycle of pools back into its pool: "help while waiting").
pub(crate) fn await_answer<Req: Send + 'static, Resp: Send + 'static>(
    job: &Arc<Job<Req, Resp>>,
    until: Option<Instant>,
    ops: Option<&dyn PoolOps<Req, Resp>>,
) -> Option<Result<Resp, Error>> {
    // The caller's own job, whose help box this thread serves while it waits.
    let mine = if job.pool.is_some() {
        guard::top().map(|(j, _)| j)
    } else {
        None
    };
    let same_pool = mine.is_some() && guard::inside(job.core.pool);
    // A plain wait (not inside a handler, no time limit): the answer is usually a microsecond
    // away, so look for it before reading the clock for the deadline (a wait that spun parks
    // at once below).
    let spun = mine.is_none() && until.is_none();
    if spun {
        if let Some(r) = job.answer.spin_take() {
            return Some(r);
        }
    }
    let mut registered = false;
    let mut step = NESTED_STEP_MIN;
    loop {
        if let Some(r) = job.answer.try_take() {
            return Some(r);
        }
        let now = Instant::now();
        if until.is_some_and(|u| now >= u) {
            return None;
        }
        let deadline = job.core.deadline;
        if now >= deadline && job.claim(ANSWERED_UNRUN) {
            match ops {
                Some(o) => o.answer_expired(job),
                None => {
                    // The pool is gone; its shutdown answered every job it could see.
                    let err = job.core.deadline_error("?", Stage::Queued);
                    job.answer.complete(Err(err), |_| {});
                }
            }
            continue;
        }
        let mut wake = until;
        if now < deadline {
            wake = Some(wake.map_or(deadline, |w| w.min(deadline)));
        }
        if same_pool {
            let next = now + step;
            wake = Some(wake.map_or(next, |w| w.min(next)));
            step = (step * 2).min(NESTED_STEP_MAX);
        }
        match &mine {
            None => {
                let got = if spun {
                    job.answer.park_until(wake)
                } else {
                    job.answer.wait_until(wake)
                };
                if let Some(r) = got {
                    return Some(r);
                }
            }
            Some(mine) => {
                let help = &mine.core().help;
                if help.run_pending() {
                    continue;
                }
                if !registered {
                    // Be woken by the answer (a wait that ends at once registers this thread as
                    // the job's waiter) and by a job handed over.
                    help.register();
                    registered = true;
                    if let Some(r) = job.answer.wait_until(Some(now)) {
                        return Some(r);
                    }
                    continue;
                }
                if job.answer.is_done() || help.has_pending() {
                    continue;
                }
                match wake {
                    None => std::thread::park(),
                    Some(w) => std::thread::park_timeout(w.saturating_duration_since(now)),
                }
            }
        }
        if same_pool && job.state.load(Ordering::Acquire) == QUEUED {
            let pool = job.pool.as_ref().and_then(Weak::upgrade);
            if let Some(p) = pool {
                if p.should_steal() && job.claim(RUNNING) {
                    p.run_claimed_here(job);
                }
            }
        }
    }
}

/// One spare job allocation per calling thread, so that a thread that calls a pool again and
/// again (the common case: a request thread, a loop) allocates its job once instead of per call
/// (a malloc by the caller and, when the worker drops the job last, a free on the worker's
/// thread). `call` gives its job back once answered; the next call reuses it if nobody else
/// holds it by then (the worker drops its handle right after answering), else allocates anew.
/// A given-back job holds nothing: its request and answer are taken, it has no parent. A worker
/// keeps the job it ran the same way when nobody else holds it any more (`give_back_done`).
pub(super) mod spare_job {
    use std::any::Any;
    use std::cell::Cell;
    use std::sync::Arc;

    thread_local! {
        static SPARE: Cell<Option<Arc<dyn Any + Send + Sync>>> = const { Cell::new(None) };
    }

    /// `job` in an `Arc`, reusing this thread's spare allocation when it is of the same type
    /// and no longer shared.
    #[inline]
    pub(super) fn take<T: Any + Send + Sync>(job: T) -> Arc<T> {
        if let Some(spare) = SPARE.with(Cell::take) {
            if let Ok(mut spare) = spare.downcast::<T>() {
                if let Some(slot) = Arc::get_mut(&mut spare) {
                    *slot = job;
                    return spare;
                }
            }
        }
        Arc::new(job)
    }

    /// Keep `job`'s allocation for this thread's next call.
    #[inline]
    pub(super) fn give_back<T: Any + Send + Sync>(job: Arc<T>) {
        SPARE.with(|s| s.set(Some(job)));
    }

    /// A worker is done with `job` (answered, let go of everywhere else): keep its allocation
    /// for this thread's next submission if nobody else holds it and it holds no parent (a job
    /// kept here must keep nothing else alive); else let it go.
    #[inline]
    pub(in crate::pool) fn give_back_done<Req, Resp>(job: Arc<super::Job<Req, Resp>>)
    where
        Req: Send + 'static,
        Resp: Send + 'static,
    {
        if Arc::strong_count(&job) == 1 && Arc::weak_count(&job) == 0 && job.core.parent.is_none() {
            give_back(job);
        }
    }

    /// Whether this thread keeps a spare allocation now (taken out and put back).
    #[cfg(test)]
    pub(super) fn kept() -> bool {
        SPARE.with(|s| {
            let spare = s.take();
            let kept = spare.is_some();
            s.set(spare);
            kept
        })
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

#[cfg(all(test, not(loom)))]
mod tests {
    use super::spare_job;
    use crate::pool::completion::Waiter;
    use crate::pool::job::{Job, JobCore, JobView};
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    type TestJob = Job<u32, u32>;

    fn job(parent: Option<Arc<dyn JobView>>) -> TestJob {
        let core = JobCore::new(1, 0, Duration::from_secs(1), parent, 0, Instant::now());
        Job::new(core, None, Waiter::Nobody, None)
    }

    #[test]
    fn a_worker_keeps_the_job_it_ran_only_when_it_keeps_nothing_else_alive() {
        // Nobody else holds it, no parent: its allocation serves this thread's next job.
        let done = Arc::new(job(None));
        let at = Arc::as_ptr(&done);
        spare_job::give_back_done(done);
        assert!(spare_job::kept());
        let next = spare_job::take(job(None));
        assert_eq!(Arc::as_ptr(&next), at, "the allocation is reused");
        assert!(!spare_job::kept(), "taken");
        drop(next);

        // Still held elsewhere (a ticket, a caller): let go, not kept.
        let done = Arc::new(job(None));
        let held = done.clone();
        spare_job::give_back_done(done);
        assert!(!spare_job::kept());
        assert_eq!(Arc::strong_count(&held), 1, "only its holder keeps it");

        // It holds a parent: kept, it would keep the parent's job alive; let go.
        let parent: Arc<dyn JobView> = Arc::new(job(None));
        spare_job::give_back_done(Arc::new(job(Some(parent.clone()))));
        assert!(!spare_job::kept());
        assert_eq!(
            Arc::strong_count(&parent),
            1,
            "the parent is let go with the job"
        );
    }
}
