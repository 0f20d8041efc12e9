//! The master's record of each worker process it forked and has not reaped yet: its role in the
//! count, whether it is ready, and every signal the master sent it and why.

use std::io;
use std::time::{Duration, Instant};

use libc::{c_int, pid_t};

use super::exit::Cause;
use super::os::signals;

/// Where a worker stands in the master's count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    /// Counted among the `workers`.
    Serving,
    /// Still serving, but replaced: told to stop once enough new workers are ready.
    Replaced,
    /// Told to stop (SIGTERM or SIGQUIT); no longer counted.
    Stopping,
}

/// A worker process the master has forked and not reaped yet.
#[derive(Debug)]
pub(crate) struct Child {
    pub(crate) pid: pid_t,
    pub(crate) number: u64,
    pub(crate) slot: usize,
    pub(crate) started: Instant,
    pub(crate) role: Role,
    pub(crate) replaced_for: Option<Cause>,
    pub(crate) ready: bool,
    pub(crate) cause: Option<Cause>,
    pub(crate) sent: Vec<c_int>,
    pub(crate) stop_sent: Option<Instant>,
    pub(crate) abort_sent: Option<Instant>,
    /// When it is recycled for its age: `max_worker_age` plus its jitter (`None`: never).
    pub(crate) lifetime: Option<Duration>,
    /// Its resident memory was measured once it was ready (`recycle.rs`).
    pub(crate) measured: bool,
    /// Not recycled for its memory: it was over the bound as soon as it was ready.
    pub(crate) memory_exempt: bool,
}

impl Child {
    /// A worker just forked: serving (counted), not ready, sent nothing; recycled past
    /// `lifetime`.
    pub(crate) fn new(pid: pid_t, number: u64, slot: usize, lifetime: Option<Duration>) -> Child {
        Child {
            pid,
            number,
            slot,
            started: Instant::now(),
            role: Role::Serving,
            replaced_for: None,
            ready: false,
            cause: None,
            sent: Vec::new(),
            stop_sent: None,
            abort_sent: None,
            lifetime,
            measured: false,
            memory_exempt: false,
        }
    }

    /// Sends `sig` to this live (not yet reaped) child, for `cause`.
    pub(crate) fn send(&mut self, sig: c_int, cause: Cause) {
        // SAFETY: kill(2) on a pid that is our child and not reaped yet (it is still in the
        // master's `children`, which `reap` removes it from), so the pid cannot have been reused by
        // another process.
        if unsafe { libc::kill(self.pid, sig) } != 0 {
            log::debug!(
                "kill({}, {}) failed: {}",
                self.pid,
                signals::name(sig),
                io::Error::last_os_error()
            );
        }
        self.sent.push(sig);
        // A timeout kill stays the reason (a later SIGKILL only finishes it); otherwise the latest
        // reason wins (a reload's SIGTERM, then the shutdown's, then the graceful timeout's SIGKILL).
        if !self.cause.as_ref().is_some_and(Cause::is_timeout) {
            self.cause = Some(cause);
        }
    }

    /// Passes `sig` on to this live (not yet reaped) child, recording nothing (SIGUSR1).
    pub(crate) fn forward(&self, sig: c_int) {
        // SAFETY: kill(2) on a pid that is our child and not reaped yet (as in `send`).
        if unsafe { libc::kill(self.pid, sig) } != 0 {
            log::debug!(
                "kill({}, {}) failed: {}",
                self.pid,
                signals::name(sig),
                io::Error::last_os_error()
            );
        }
    }

    /// Tells it to stop (SIGQUIT when `fast`, else SIGTERM); it is no longer counted.
    pub(crate) fn stop(&mut self, fast: bool, cause: Cause) {
        let sig = if fast { libc::SIGQUIT } else { libc::SIGTERM };
        self.role = Role::Stopping;
        self.stop_sent = Some(Instant::now());
        self.send(sig, cause);
    }

    /// Whether it counts among the workers in `role` (ready ones only if `ready`): a worker on its
    /// way out (SIGABRT or SIGKILL sent) does not.
    pub(crate) fn counts_as(&self, role: Role, ready: bool) -> bool {
        self.role == role
            && (!ready || self.ready)
            && !self.sent.contains(&libc::SIGKILL)
            && self.abort_sent.is_none()
    }
}

/// SIGKILLs every child, then reaps each one.
pub(crate) fn kill_and_reap(children: &[Child]) {
    for c in children {
        // SAFETY: kill(2) on a child that was not reaped (still in `children`), so its pid is
        // still ours; SIGKILL ends it, PR_SET_PDEATHSIG would too once the master exits.
        unsafe { libc::kill(c.pid, libc::SIGKILL) };
    }
    for c in children {
        let mut status = 0;
        // SAFETY: waitpid(2) on our own unreaped child, status written to a local.
        unsafe { libc::waitpid(c.pid, &mut status, 0) };
    }
}
