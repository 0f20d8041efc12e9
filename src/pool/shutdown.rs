//! Stopping a pool: graceful (finish queued and running jobs up to a timeout) or at once, answering
//! whatever is left with `ShuttingDown`, joining the threads, and the [`ShutdownReport`] that says
//! what it did.

use std::sync::atomic::{fence, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::job::ANSWERED_UNRUN;
use super::state::{Msg, PoolState};

/// How long a shutdown waits, after answering everything, for workers to see their stop message.
const EXIT_WAIT: Duration = Duration::from_secs(1);

/// What a shutdown did, from [`Pool::shutdown`](crate::Pool::shutdown).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ShutdownReport {
    /// Jobs answered with `Error::ShuttingDown` because the graceful time ran out (or at once, for
    /// `shutdown_now`).
    pub answered_shutting_down: u64,
    /// Threads that had not returned when the shutdown gave up waiting (stuck or retired handlers).
    /// Their jobs were answered; the threads end when their handlers return.
    pub threads_left_running: usize,
}

/// Shut the pool down from a thread of its own (for a shutdown asked from inside a handler).
pub(crate) fn spawn_shutdown<Req: Send + 'static, Resp: Send + 'static>(
    state: Arc<PoolState<Req, Resp>>,
    timeout: Duration,
    now: bool,
) {
    let name = format!("{}-shutdown", state.config.name);
    let _ = std::thread::Builder::new()
        .name(name)
        .spawn(move || state.shutdown(timeout, now));
}

impl<Req: Send + 'static, Resp: Send + 'static> PoolState<Req, Resp> {
    /// Answer every queued job, and every running one, with `ShuttingDown`; cancel the running ones.
    /// Stop messages found in the queue go back into it: they belong to a shutdown that runs on
    /// another thread (a `shutdown_now` during a graceful one), whose idle workers still need them
    /// to leave; without them it would wait for its timeout.
    fn answer_everything(&self) -> u64 {
        let mut answered = 0;
        let mut stops = 0;
        while let Some(msg) = self.queue.try_take() {
            match msg {
                Msg::Job(job) => {
                    if job.claim(ANSWERED_UNRUN) && self.answer(&job, Err(self.shutting_down())) {
                        answered += 1;
                    }
                }
                Msg::Stop => stops += 1,
            }
        }
        for _ in 0..stops {
            let _ = self.queue.push(Msg::Stop);
        }
        for slot in self.workers.slots().iter() {
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

    pub(crate) fn shutdown(&self, graceful: Duration, now: bool) -> ShutdownReport {
        let mut report = ShutdownReport::default();
        if now {
            // Escalate at once, even while another thread runs a graceful shutdown.
            self.life.stop();
            report.answered_shutting_down += self.answer_everything();
        } else {
            self.life.begin_drain();
        }
        let mut done = self.life.shutdown_once();
        if *done {
            return report;
        }
        let end = Instant::now() + if now { Duration::ZERO } else { graceful };
        // Queued jobs come before these stops, so graceful workers finish the queue first.
        for _ in 0..self.config.workers {
            if !self.queue.push_until(Msg::Stop, end) {
                break;
            }
        }
        self.life.wait_workers_gone(end);
        self.life.stop();
        fence(Ordering::SeqCst);
        report.answered_shutting_down += self.answer_everything();
        for _ in 0..self.config.workers {
            let _ = self.queue.push(Msg::Stop);
        }
        let left = self.life.wait_workers_gone(Instant::now() + EXIT_WAIT);
        self.stop_watchdog();
        // Join every thread that has left the queue (the current owner of each slot, once no
        // thread reads the queue) and any that is done; threads stuck in a handler (retired, or
        // still running at the timeout) are left to end on their own.
        for (index, gen, handle) in self.workers.take_threads() {
            let current = self.workers.slot(index).state.lock().gen == gen;
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

// Idle workers held in a `Sleeper` (the HTTP server's hook).
#[cfg(all(test, feature = "http"))]
mod tests {
    use crate::pool::{Pool, Sleeper};
    use crate::Error;
    use crossbeam_channel::{Receiver, Sender};
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    /// Holds the idle workers (telling the test each time one rests here) until the test lets
    /// them go; then they look at the queue every millisecond. Its wake-ups wake nobody.
    struct Held(Sender<()>, Receiver<()>);
    impl Sleeper for Held {
        fn sleep(&self) {
            let _ = self.0.send(());
            let _ = self.1.recv_timeout(Duration::from_secs(30));
            std::thread::sleep(Duration::from_millis(1));
        }
        fn wake(&self) {}
    }

    fn until(what: &str, cond: impl Fn() -> bool) {
        let end = Instant::now() + Duration::from_secs(20);
        while !cond() {
            assert!(Instant::now() < end, "never: {what}");
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// A `shutdown_now` while a graceful shutdown waits for its idle workers (a second SIGTERM
    /// during a server's drain) leaves the graceful one's stop message in the queue: the worker
    /// takes it and leaves at once, instead of at the graceful timeout.
    #[test]
    fn shutdown_now_during_a_graceful_shutdown_leaves_its_stop_messages() {
        let pool = Pool::builder().workers(1).build(|(), _ctx| ()).unwrap();
        let (release, held) = crossbeam_channel::unbounded();
        let (resting, rests) = crossbeam_channel::unbounded();
        pool.set_sleeper(Some(Arc::new(Held(resting, held))));
        // Moved from the condition variable to the sleeper, the worker rests there.
        rests.recv_timeout(Duration::from_secs(20)).unwrap();
        let queued = pool.submit(());
        let graceful = {
            let pool = pool.clone();
            std::thread::spawn(move || {
                let start = Instant::now();
                (pool.shutdown(Duration::from_secs(30)), start.elapsed())
            })
        };
        until("the job and the stop message are queued", || {
            pool.stats().queued == 2
        });
        let now = {
            let pool = pool.clone();
            std::thread::spawn(move || pool.shutdown_now())
        };
        assert!(matches!(queued.wait(), Err(Error::ShuttingDown { .. })));
        // The stop message, taken with the job, is queued again.
        until("the stop message is back in the queue", || {
            pool.stats().queued == 1
        });
        drop(release);
        drop(rests);
        let (report, took) = graceful.join().unwrap();
        now.join().unwrap();
        assert_eq!(report.threads_left_running, 0, "{report:?}");
        assert!(
            took < Duration::from_secs(10),
            "the worker left after {took:?}"
        );
    }
}
