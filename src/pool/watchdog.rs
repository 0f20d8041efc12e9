//! The watchdog: one thread that sleeps on the deadline board until the earliest deadline of a
//! running job (or of a queued job that waits with no idle worker), and what it does when one
//! passes: answer the caller, cancel the job, retire and replace a stuck worker.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread;
use std::time::Instant;

use super::deadlines::{Expired, QueuedItem, SlotDeadline};
use super::job::{Job, ANSWERED_UNRUN, QUEUED};
use super::state::{PoolState, Running};
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
        let slot_deadlines = || {
            self.workers
                .slots()
                .iter()
                .map(|s| SlotDeadline::get(&s.deadline))
        };
        while self
            .board
            .wait_expired(self.epoch, slot_deadlines, &mut expired)
        {
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
        let slot = &self.workers.slot(index);
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
                let kept = (r.job.clone(), r.started, Some(s.gen));
                self.workers
                    .keep_retired(Running { expired: true, ..r }, s.label);
                kept
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
            None => {
                log::error!(
                    "pool `{}`: job {} on worker {index} ran {ran:?}, past its deadline of {:?}; \
                     the caller got DeadlineExceeded, but {} retired threads are still running \
                     (max_retired), so worker {index} is not replaced and the pool runs one \
                     short until the handler returns. Find the handler that ignores \
                     Context::is_cancelled.",
                    self.config.name,
                    job.core.id,
                    job.core.budget,
                    self.config.max_retired
                );
                if let Some(hook) = self.on_budget_spent.get() {
                    hook();
                }
            }
        }
    }

    /// The watchdog found a queued job past its deadline.
    pub(crate) fn expire_queued(&self, job: &Job<Req, Resp>) {
        if job.claim(ANSWERED_UNRUN) {
            self.answer_expired_in_queue(job);
        }
    }
}

/// A job on the deadline board: watched once (by the submitter when no worker is idle, or by an
/// async caller that waits), its entry dead weight once a thread claimed it.
impl<Req, Resp> QueuedItem for Job<Req, Resp> {
    fn still_queued(&self) -> bool {
        self.state.load(Ordering::Acquire) == QUEUED
    }

    fn mark_watched(&self) -> bool {
        !self.watched.swap(true, Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::sync::mpsc;
    use std::time::Duration;

    use parking_lot::Mutex;

    use crate::pool::deadlines::PRUNE_SLACK;
    use crate::Pool;

    /// Push `jobs` jobs through a 1-worker pool with `deadline`, each submitted while the worker
    /// is busy (so each one goes on the watchdog's board), with `queued` jobs kept waiting in the
    /// queue; then as many with the worker free. Returns the most entries the board held, and the
    /// most jobs in flight (queued + running) at any time.
    fn push_through(deadline: Duration, queued: usize, jobs: usize) -> (usize, usize) {
        let (release, gate) = mpsc::channel::<()>();
        let gate = Mutex::new(gate);
        let pool = Pool::builder()
            .workers(1)
            .queue_capacity(queued + 2)
            .deadline(deadline)
            .build(move |x: usize, _| {
                if x != usize::MAX {
                    gate.lock().recv().expect("the test releases every job");
                }
                x
            })
            .unwrap();
        let board = &pool.owner.state.board;
        let mut tickets = VecDeque::new();
        let (mut most_held, mut most_in_flight) = (0, 0);
        // The worker takes the first job and blocks in it; `queued` more wait behind it.
        tickets.push_back(pool.submit(0));
        while pool.stats().busy == 0 {
            std::thread::yield_now();
        }
        for i in 1..=queued {
            tickets.push_back(pool.submit(i));
        }
        for i in 0..jobs {
            // The worker is inside a handler: this job is watched.
            tickets.push_back(pool.submit(queued + 1 + i));
            most_in_flight = most_in_flight.max(tickets.len());
            most_held = most_held.max(board.queued_entries());
            release.send(()).unwrap();
            let oldest = tickets.pop_front().unwrap();
            assert!(oldest.wait().is_ok());
        }
        for _ in 0..tickets.len() {
            release.send(()).unwrap();
        }
        for t in tickets.drain(..) {
            assert!(t.wait().is_ok());
        }
        // The worker is free now: jobs pass through without waiting.
        for _ in 0..jobs {
            assert!(pool.submit(usize::MAX).wait().is_ok());
            most_held = most_held.max(board.queued_entries());
        }
        (most_held, most_in_flight)
    }

    #[test]
    fn the_board_holds_no_more_than_the_jobs_in_flight_whatever_the_deadline() {
        for deadline in [Duration::from_secs(30), Duration::from_secs(300)] {
            for queued in [0, 8] {
                let (held, in_flight) = push_through(deadline, queued, 5_000);
                assert!(
                    held <= 2 * in_flight + PRUNE_SLACK,
                    "deadline {deadline:?}: the watchdog held {held} queued-job entries with at \
                     most {in_flight} jobs in flight (each entry keeps its job's allocation until \
                     the deadline: memory that grows with rate × deadline)"
                );
            }
        }
    }
}
