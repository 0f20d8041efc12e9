//! The watchdog: one thread that sleeps on the deadline board until the earliest deadline of a
//! running job (or of a queued job that waits with no idle worker), and what it does when one
//! passes: answer the caller, cancel the job, retire and replace a stuck worker.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread;
use std::time::Instant;

use super::deadlines::{Expired, SlotDeadline};
use super::job::{Job, ANSWERED_UNRUN, QUEUED};
use super::state::PoolState;
use super::stats::Counters;
use crate::error::Stage;

impl<Req: Send + 'static, Resp: Send + 'static> PoolState<Req, Resp> {
    /// Start the watchdog thread.
    pub(crate) fn start_watchdog(self: &Arc<Self>) {
        let me = self.clone();
        let watchdog = thread::Builder::new()
            .name(format!("{}-watchdog", self.config.name))
            .spawn(move || me.watchdog_loop())
            .expect("prefork-pool: cannot start the watchdog thread (thread limit reached?)");
        *self.watchdog_thread.lock() = Some(watchdog);
    }

    /// Stop the watchdog and join it (unless this is the watchdog's own thread).
    pub(crate) fn stop_watchdog(&self) {
        self.board.stop();
        if let Some(handle) = self.watchdog_thread.lock().take() {
            if handle.thread().id() != thread::current().id() {
                let _ = handle.join();
            }
        }
    }

    fn watchdog_loop(self: Arc<Self>) {
        let mut expired = Expired::new();
        let prune_over = 2 * self.config.queue_capacity + 64;
        let slot_deadlines = || self.slots.iter().map(|s| SlotDeadline::get(&s.deadline));
        let still_queued = |job: &Job<Req, Resp>| job.state.load(Ordering::Acquire) == QUEUED;
        while self.board.wait_expired(
            self.epoch,
            slot_deadlines,
            prune_over,
            still_queued,
            &mut expired,
        ) {
            for index in expired.slots.drain(..) {
                self.expire_running(index);
            }
            for job in expired.queued.drain(..) {
                self.expire_queued(&job);
            }
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
            slot.deadline.clear();
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
                self.live_worker_left();
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
        if job.claim(ANSWERED_UNRUN) {
            self.answer_expired_in_queue(job);
        }
    }
}
