//! Why a worker ended, in one sentence, and what the master makes of it: the [`Cause`] of a signal
//! the master sent, the exit sentence and [`WorkerExit`], whether the end was planned, and the
//! restart intensity. Pure rules, no process: unit-tested at the bottom of the file.

use std::collections::VecDeque;
use std::fmt;
use std::time::{Duration, Instant};

use libc::c_int;

use super::os::signals;
use super::report::secs;

/// How a worker process ended, as given to the `worker_exit` hook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerExit {
    /// The worker's number.
    pub number: u64,
    /// Its process id.
    pub pid: i32,
    /// Its exit code, if it exited.
    pub code: Option<i32>,
    /// The signal that ended it, if one did.
    pub signal: Option<i32>,
    /// Whether the supervisor asked for this end (a stop, reload, retirement, scale down, or a kill
    /// after a timeout).
    pub by_supervisor: bool,
    /// The full sentence the master logged.
    pub description: String,
}

/// Why the master signalled a worker.
#[derive(Debug, Clone)]
pub(crate) enum Cause {
    Stop,
    Reload,
    Retire,
    /// Recycled past `max_worker_memory` or `max_worker_age`: the sentence says which and by how
    /// much (`resident memory 210 MiB over max_worker_memory 200 MiB`).
    Recycle(String),
    ScaleDown,
    Heartbeat {
        silent: Duration,
    },
    Deadline {
        line: String,
        late: Duration,
    },
    GracefulTimeout,
    BootTimeout,
}

/// The two limits a timeout's sentence quotes.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub(crate) heartbeat_timeout: Duration,
    pub(crate) request_grace: Duration,
}

impl Cause {
    /// Whether a worker that ends for this cause was asked to (not a failure to count).
    pub(crate) fn is_planned(&self) -> bool {
        matches!(
            self,
            Cause::Stop
                | Cause::Reload
                | Cause::Retire
                | Cause::Recycle(_)
                | Cause::ScaleDown
                | Cause::GracefulTimeout
        )
    }

    /// Whether this is a timeout kill, which stays the reason even when a later signal finishes it.
    pub(crate) fn is_timeout(&self) -> bool {
        matches!(
            self,
            Cause::Heartbeat { .. } | Cause::Deadline { .. } | Cause::BootTimeout
        )
    }

    /// `heartbeat` or `deadline`, for the two kills of a live worker.
    pub(crate) fn kill_kind(&self) -> Option<&'static str> {
        match self {
            Cause::Heartbeat { .. } => Some("heartbeat"),
            Cause::Deadline { .. } => Some("deadline"),
            _ => None,
        }
    }

    /// What exactly went wrong, for a timeout: `no heartbeat for 2.1 s (heartbeat_timeout 2.0 s)`.
    pub(crate) fn detail(&self, limits: Limits) -> String {
        match self {
            Cause::Heartbeat { silent } => format!(
                "no heartbeat for {} (heartbeat_timeout {})",
                secs(*silent),
                secs(limits.heartbeat_timeout)
            ),
            Cause::Deadline { line, late } => format!(
                "request `{line}` still running {} past its deadline (request_grace {})",
                secs(*late),
                secs(limits.request_grace)
            ),
            other => other.to_string(),
        }
    }
}

impl fmt::Display for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Cause::Stop => f.write_str("a shutdown"),
            Cause::Reload => f.write_str("a reload (HUP)"),
            Cause::Retire => f.write_str("its retirement (max_requests)"),
            Cause::Recycle(why) => write!(f, "its recycling ({why})"),
            Cause::ScaleDown => f.write_str("a scale down (TTOU)"),
            Cause::Heartbeat { silent } => write!(
                f,
                "a heartbeat timeout (no heartbeat for {:.1} s)",
                silent.as_secs_f64()
            ),
            Cause::Deadline { line, late } => write!(
                f,
                "a deadline timeout (request `{line}` {:.1} s past its deadline)",
                late.as_secs_f64()
            ),
            Cause::GracefulTimeout => f.write_str("the graceful timeout"),
            Cause::BootTimeout => f.write_str("the boot timeout"),
        }
    }
}

/// The exit code or the signal in a `waitpid(2)` status.
pub(crate) fn describe_status(status: c_int) -> (Option<i32>, Option<i32>) {
    if libc::WIFEXITED(status) {
        (Some(libc::WEXITSTATUS(status)), None)
    } else if libc::WIFSIGNALED(status) {
        (None, Some(libc::WTERMSIG(status)))
    } else {
        (None, None)
    }
}

/// What the master knows of a worker it just reaped.
#[derive(Debug)]
pub(crate) struct Ending<'a> {
    pub(crate) number: u64,
    pub(crate) pid: i32,
    /// The `waitpid(2)` status.
    pub(crate) status: c_int,
    /// The signals the master sent it.
    pub(crate) sent: &'a [c_int],
    /// Why the master signalled it last, if it did.
    pub(crate) cause: Option<&'a Cause>,
    /// Whether it was ready (seen by the master, or flagged in its slot).
    pub(crate) was_ready: bool,
    /// Whether it flagged a failed boot in its slot.
    pub(crate) boot_failed: bool,
    /// The error it wrote in its slot (empty: none).
    pub(crate) note: &'a str,
}

/// What the master makes of an [`Ending`].
#[derive(Debug)]
pub(crate) struct Verdict {
    /// For the log and the `worker_exit` hook.
    pub(crate) exit: WorkerExit,
    /// The master asked for this end, for a reason that is not a failure: not counted.
    pub(crate) planned: bool,
    /// It ended before it was ready on its own (or its boot failed): the master halts.
    pub(crate) boot_error: bool,
}

impl Ending<'_> {
    /// The exit sentence and the verdict.
    pub(crate) fn judge(&self, limits: Limits) -> Verdict {
        let (code, signal) = describe_status(self.status);
        let ours = match signal {
            Some(sig) => self.sent.contains(&sig),
            None => self.cause.is_some(),
        };
        let head = format!("worker {} (pid {})", self.number, self.pid);
        let mut description = match (code, signal) {
            (Some(c), _) if ours => format!(
                "{head} exited with code {c} after {}",
                self.cause.map_or("a stop".into(), |c| c.to_string())
            ),
            (Some(c), _) => format!("{head} exited with code {c} on its own"),
            (None, Some(sig)) if ours => match self.cause {
                Some(cause) if cause.kill_kind().is_some() => format!(
                    "{head} killed by the supervisor after a {} timeout ({}; {})",
                    cause.kill_kind().unwrap_or_default(),
                    signals::name(sig),
                    cause.detail(limits)
                ),
                Some(cause) => format!(
                    "{head} killed by {} sent by the supervisor after {cause}",
                    signals::name(sig)
                ),
                None => format!("{head} killed by {} sent by the supervisor", signals::name(sig)),
            },
            (None, Some(libc::SIGKILL)) => format!(
                "{head} killed by SIGKILL from outside the supervisor (often the kernel OOM killer: \
                 check dmesg)"
            ),
            (None, Some(sig)) => format!(
                "{head} killed by {} ({sig}) from outside the supervisor (a crash if SIGSEGV, SIGBUS \
                 or SIGABRT: see the worker's stderr and core dumps)",
                signals::name(sig)
            ),
            (None, None) => format!("{head} ended with wait status {:#x}", self.status),
        };
        if !self.note.is_empty() && (!ours || !self.was_ready) {
            description.push_str(&format!(": {}", self.note));
        }
        Verdict {
            planned: ours && self.cause.is_some_and(Cause::is_planned),
            boot_error: !self.was_ready && (!ours || self.boot_failed),
            exit: WorkerExit {
                number: self.number,
                pid: self.pid,
                code,
                signal,
                by_supervisor: ours,
                description,
            },
        }
    }
}

/// Restart intensity, as an OTP supervisor's: more than `max` restarts of failed workers within
/// `period` is too many.
#[derive(Debug)]
pub(crate) struct RestartIntensity {
    max: u32,
    period: Duration,
    restarts: VecDeque<Instant>,
}

impl RestartIntensity {
    pub(crate) fn new(max: u32, period: Duration) -> RestartIntensity {
        RestartIntensity {
            max,
            period,
            restarts: VecDeque::new(),
        }
    }

    /// Counts a restart at `now`; restarts older than `period` age out. Returns the number of
    /// restarts within `period` when it exceeds `max` (the master halts), else `None`.
    pub(crate) fn record(&mut self, now: Instant) -> Option<usize> {
        self.restarts.push_back(now);
        while self
            .restarts
            .front()
            .is_some_and(|&t| now.duration_since(t) > self.period)
        {
            self.restarts.pop_front();
        }
        (self.restarts.len() > self.max as usize).then_some(self.restarts.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        heartbeat_timeout: Duration::from_secs(2),
        request_grace: Duration::from_millis(500),
    };

    fn exited(code: i32) -> c_int {
        code << 8
    }

    fn ending<'a>(status: c_int, sent: &'a [c_int], cause: Option<&'a Cause>) -> Ending<'a> {
        Ending {
            number: 4,
            pid: 321,
            status,
            sent,
            cause,
            was_ready: true,
            boot_failed: false,
            note: "",
        }
    }

    #[test]
    fn planned_causes_are_the_ones_the_master_asked_for_without_a_failure() {
        for c in [
            Cause::Stop,
            Cause::Reload,
            Cause::Retire,
            Cause::ScaleDown,
            Cause::GracefulTimeout,
        ] {
            assert!(c.is_planned(), "{c:?}");
        }
        for c in [
            Cause::Heartbeat {
                silent: Duration::from_secs(3),
            },
            Cause::Deadline {
                line: "GET / HTTP/1.1".into(),
                late: Duration::from_secs(1),
            },
            Cause::BootTimeout,
        ] {
            assert!(!c.is_planned(), "{c:?}");
            assert!(c.is_timeout(), "{c:?}");
        }
    }

    #[test]
    fn an_exit_on_its_own_is_a_failure_and_names_its_code() {
        let v = ending(exited(1), &[], None).judge(LIMITS);
        assert_eq!(
            v.exit.description,
            "worker 4 (pid 321) exited with code 1 on its own"
        );
        assert_eq!((v.exit.code, v.exit.signal), (Some(1), None));
        assert!(!v.exit.by_supervisor && !v.planned && !v.boot_error);
    }

    #[test]
    fn an_exit_after_a_reload_is_planned() {
        let cause = Cause::Reload;
        let v = ending(exited(0), &[libc::SIGTERM], Some(&cause)).judge(LIMITS);
        assert_eq!(
            v.exit.description,
            "worker 4 (pid 321) exited with code 0 after a reload (HUP)"
        );
        assert!(v.exit.by_supervisor && v.planned && !v.boot_error);
    }

    #[test]
    fn a_timeout_kill_is_ours_but_not_planned_and_quotes_its_limit() {
        let cause = Cause::Heartbeat {
            silent: Duration::from_millis(2100),
        };
        let v = ending(libc::SIGABRT, &[libc::SIGABRT], Some(&cause)).judge(LIMITS);
        assert_eq!(
            v.exit.description,
            "worker 4 (pid 321) killed by the supervisor after a heartbeat timeout (SIGABRT; no \
             heartbeat for 2.1 s (heartbeat_timeout 2.0 s))"
        );
        assert!(v.exit.by_supervisor && !v.planned);
        let cause = Cause::Deadline {
            line: "GET /stuck HTTP/1.1".into(),
            late: Duration::from_millis(600),
        };
        let v = ending(libc::SIGKILL, &[libc::SIGABRT, libc::SIGKILL], Some(&cause)).judge(LIMITS);
        assert_eq!(
            v.exit.description,
            "worker 4 (pid 321) killed by the supervisor after a deadline timeout (SIGKILL; request \
             `GET /stuck HTTP/1.1` still running 0.6 s past its deadline (request_grace 0.5 s))"
        );
    }

    #[test]
    fn a_kill_from_outside_is_not_blamed_on_the_supervisor() {
        // SIGKILL the master never sent: the OOM killer, not "Perhaps out of memory?" after its own.
        let cause = Cause::Stop;
        let v = ending(libc::SIGKILL, &[libc::SIGTERM], Some(&cause)).judge(LIMITS);
        assert_eq!(
            v.exit.description,
            "worker 4 (pid 321) killed by SIGKILL from outside the supervisor (often the kernel OOM \
             killer: check dmesg)"
        );
        assert!(!v.exit.by_supervisor && !v.planned);
        let v = ending(libc::SIGSEGV, &[], None).judge(LIMITS);
        assert!(v
            .exit
            .description
            .starts_with("worker 4 (pid 321) killed by SIGSEGV (11) from outside the supervisor"));
        let cause = Cause::GracefulTimeout;
        let v = ending(libc::SIGKILL, &[libc::SIGKILL], Some(&cause)).judge(LIMITS);
        assert_eq!(
            v.exit.description,
            "worker 4 (pid 321) killed by SIGKILL sent by the supervisor after the graceful timeout"
        );
        assert!(v.planned);
    }

    #[test]
    fn an_end_before_ready_is_a_boot_error_with_its_note() {
        let mut e = ending(exited(3), &[], None);
        e.was_ready = false;
        e.boot_failed = true;
        e.note = "database unreachable";
        let v = e.judge(LIMITS);
        assert_eq!(
            v.exit.description,
            "worker 4 (pid 321) exited with code 3 on its own: database unreachable"
        );
        assert!(v.boot_error);
        // Stopped by the master before it was ready, without a failed boot: no boot error.
        let cause = Cause::Stop;
        let mut e = ending(exited(0), &[libc::SIGTERM], Some(&cause));
        e.was_ready = false;
        assert!(!e.judge(LIMITS).boot_error);
        // A ready worker's note is only shown when it ended on its own.
        let mut e = ending(exited(0), &[libc::SIGTERM], Some(&cause));
        e.note = "the worker panicked: boom";
        assert!(!e.judge(LIMITS).exit.description.contains("panicked"));
    }

    #[test]
    fn restart_intensity_halts_past_max_within_the_period() {
        let t0 = Instant::now();
        let mut r = RestartIntensity::new(3, Duration::from_secs(60));
        for i in 0..3 {
            assert_eq!(r.record(t0 + Duration::from_secs(i)), None, "restart {i}");
        }
        assert_eq!(r.record(t0 + Duration::from_secs(3)), Some(4));
    }

    #[test]
    fn restart_intensity_forgets_restarts_older_than_the_period() {
        let t0 = Instant::now();
        let mut r = RestartIntensity::new(2, Duration::from_secs(10));
        assert_eq!(r.record(t0), None);
        assert_eq!(r.record(t0 + Duration::from_secs(1)), None);
        // 11 s later the first two have aged out: this is the only one in the period.
        assert_eq!(r.record(t0 + Duration::from_secs(12)), None);
        assert_eq!(r.record(t0 + Duration::from_secs(13)), None);
        assert_eq!(r.record(t0 + Duration::from_secs(14)), Some(3));
    }
}
