//! The worker threads: starting them, the loop each runs (take a job, publish its deadline, run the
//! handler, answer), recycling after `max_requests`, the start and exit hooks, and making each
//! worker's per-worker state (retried with backoff when a replacement's init fails).

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use super::config::Hook;
use super::idle_wait::{Resting, SleeperCopy};
use super::job::RUNNING;
use super::state::{Msg, PoolState, Running, SERVING, STOPPED};
use super::stats::Counters;
use crate::error::BuildError;

/// The first and the longest wait between two tries of a replacement worker's failing state init.
const INIT_RETRY_MIN: Duration = Duration::from_millis(10);
const INIT_RETRY_MAX: Duration = Duration::from_secs(5);

impl<Req: Send + 'static, Resp: Send + 'static> PoolState<Req, Resp> {
    /// Start one thread per slot; return once every worker has run its start hook (and made its
    /// state) and waits for a job, or with the error of the first worker whose state init failed.
    pub(crate) fn start_workers(self: &Arc<Self>) -> Result<(), BuildError> {
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
        while self.workers.idle() < self.config.workers {
            if let Some((index, cause)) = self.workers.take_init_failure() {
                return Err(BuildError::new(
                    "init",
                    format!("worker {index}"),
                    format!("the per-worker state's init failed on worker {index}: {cause}"),
                ));
            }
            spins += 1;
            if spins < 200 {
                thread::yield_now();
            } else {
                // A start hook that opens connections may take a while: do not burn a core.
                thread::sleep(Duration::from_millis(1));
            }
        }
        self.life.mark_started();
        Ok(())
    }

    /// Start a thread that owns slot `index` with generation `gen`. False if the OS refused.
    pub(crate) fn spawn_worker(self: &Arc<Self>, index: usize, gen: u64) -> bool {
        self.life.worker_joined();
        let me = self.clone();
        let spawned = thread::Builder::new()
            .name(format!("{}-worker-{index}", self.config.name))
            .spawn(move || me.worker_loop(index, gen));
        match spawned {
            Ok(handle) => {
                self.workers.track_thread(index, gen, handle);
                true
            }
            Err(e) => {
                self.live_worker_left();
                log::error!(
                    "pool `{}`: cannot start a thread for worker {index}: {e}; the pool runs one \
                     worker short. Raise the thread limit (ulimit -u) or lower `workers`.",
                    self.config.name
                );
                false
            }
        }
    }

    /// A thread stopped owning a slot (it exited, or the watchdog retired it).
    pub(crate) fn live_worker_left(&self) {
        self.life.worker_left();
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
    fn run_hook(&self, hook: Option<&Hook>, which: &str, index: usize) {
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

    /// Make this worker's state (for a `build_with_state` pool). False when the worker must leave
    /// without serving: its init failed during `build`, or the pool stopped while it retried.
    fn make_state(&self, index: usize) -> bool {
        let Some(init) = self.config.state.as_ref() else {
            return true;
        };
        let mut wait = INIT_RETRY_MIN;
        let mut lacking = false;
        loop {
            let cause = match init.init(index) {
                Ok(()) => {
                    if lacking {
                        self.counters.without_state.fetch_sub(1, Ordering::Relaxed);
                        log::info!(
                            "pool `{}`: worker {index} made its state after all and serves again",
                            self.config.name
                        );
                    }
                    return true;
                }
                Err(cause) => cause,
            };
            if !self.life.started() {
                self.workers.init_failed(index, cause);
                return false;
            }
            if !lacking {
                lacking = true;
                Counters::bump(&self.counters.without_state);
            }
            log::error!(
                "pool `{}`: worker {index} could not make its per-worker state: {cause}; it takes \
                 no job until its init succeeds (retried in {wait:?}; Stats::workers_without_state \
                 counts it). Check the resource its init opens.",
                self.config.name
            );
            let until = Instant::now() + wait;
            while Instant::now() < until {
                if self.life.phase() != SERVING {
                    self.counters.without_state.fetch_sub(1, Ordering::Relaxed);
                    return false;
                }
                thread::sleep(Duration::from_millis(10).min(wait));
            }
            wait = (wait * 2).min(INIT_RETRY_MAX);
        }
    }

    fn worker_loop(self: Arc<Self>, index: usize, gen: u64) {
        self.run_hook(
            self.config.on_worker_start.as_ref(),
            "on_worker_start",
            index,
        );
        let retired = self.make_state(index) && self.serve_jobs(index, gen);
        // The state goes before the exit hook, on this thread.
        if let Some(init) = self.config.state.as_ref() {
            init.drop_state();
        }
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
            self.live_worker_left();
        }
    }

    /// Take and run jobs until told to stop (false) or retired by the watchdog (true).
    fn serve_jobs(self: &Arc<Self>, index: usize, gen: u64) -> bool {
        let budget = self.recycle_budget(index);
        let slot = self.workers.slot(index);
        let mut served = 0u64;
        let mut ctx = self.worker_context(index);
        // A job lent to this worker while it answered the one before (see below).
        let mut next = None;
        // This worker's copy of the pool's sleeper (see `SleeperCopy`).
        let mut sleeper = SleeperCopy::default();
        loop {
            let msg = match next.take() {
                Some(job) => Ok(Msg::Job(job)),
                None => self.workers.idle_while(|| {
                    self.queue.recv(
                        (self.id, index),
                        || slot.lent.take().map(Msg::Job),
                        &mut sleeper,
                    )
                }),
            };
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
            let mut req = job.take_req();
            {
                // The label is the slot's, written over in place (a 240-byte buffer, not built
                // per job and copied in).
                let s = &mut *slot.state.lock();
                s.running = Some(Running {
                    job: job.clone(),
                    started,
                    expired: false,
                });
                s.label.clear();
                if let Some(describe) = self.describe.get() {
                    describe(
                        req.as_ref().expect("a claimed job holds its request"),
                        &mut s.label,
                    );
                }
            }
            let deadline = self.nanos(job.core.deadline);
            slot.deadline.set(deadline);
            self.board.watch(deadline);

            // The request stays where it was taken to until the handler is called (one move);
            // the job is lent to the worker's context and comes back with the answer.
            let (mut result, job) = self.invoke_in(&mut req, &mut ctx, job);
            // One clock reading for the deadline check and the answer's callback (the HTTP
            // server's `Date` and duration).
            let done_at = Instant::now();
            self.in_time_at(&job.core, &mut result, done_at);

            let still_mine = {
                let mut s = slot.state.lock();
                if s.gen == gen {
                    s.running = None;
                    slot.deadline.clear();
                    true
                } else {
                    false
                }
            };
            if !still_mine {
                self.answer_at(&job, result, done_at);
                // Retired by the watchdog: its record outlived the slot until now.
                self.workers.forget_retired(job.core.id);
                break true;
            }
            // A job submitted from this thread while it answers (the HTTP server reads the
            // connection's next request here when it came meanwhile) is lent to this worker: the
            // worker that read the request runs it, no other thread is woken.
            let finishing = Resting::finishing(self.id, index);
            self.answer_at(&job, result, done_at);
            drop(finishing);
            // Let go of the job at once: its caller may reuse the allocation for its next call
            // (`submit.rs`, `spare_job`) only once nobody else holds it; a job nobody else holds
            // is kept for this thread's next submission (the HTTP server reads its next request
            // here).
            super::submit::spare_job::give_back_done(job);
            next = slot.lent.take();
            served += 1;
            if next.is_some() {
                // Run first: a job lent to this worker is never left behind (a recycle or the
                // stop comes after it).
                continue;
            }
            if budget > 0 && served >= budget && self.life.phase() == SERVING {
                if self.recycle(index) {
                    break false;
                }
                served = 0;
            }
            if self.life.phase() == STOPPED {
                break false;
            }
        }
    }

    /// Hand slot `index` to a new thread, started before this one leaves. False if it could not
    /// start (this thread then keeps serving).
    fn recycle(self: &Arc<Self>, index: usize) -> bool {
        let new_gen = {
            let mut s = self.workers.slot(index).state.lock();
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
            self.workers.slot(index).state.lock().gen -= 1;
            false
        }
    }
}
