//! Binary upgrade on SIGUSR2: the master forks, and the child re-executes the current binary with
//! the listeners passed as systemd would (`LISTEN_FDS`, `LISTEN_PID`, from fd 3), so the new program
//! serves on the very same sockets: no connection is refused during the upgrade. The new master
//! finds `PREFORK_UPGRADE_FROM` in its environment, and once its own workers are ready it sends the
//! old master SIGTERM: the old workers drain and the old master exits.
//!
//! An upgrade keeps its word too ([`Upgrade`]): a new master that has not taken over within
//! `boot_timeout` of the SIGUSR2 (a new build that hangs before it serves, or whose workers never
//! become ready) is killed and the upgrade abandoned, logged with why; the old master keeps
//! serving, and no process is left holding the listeners without serving them.

use std::ffi::{OsStr, OsString};
use std::io::{self, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use libc::{c_int, pid_t};

use crate::prefork::config::EXIT_ERROR;
use crate::prefork::exit::describe_status;
use crate::prefork::os::fork;
use crate::prefork::os::listeners::{Listener, LISTEN_FDS_START};
use crate::prefork::os::signals::{self, SignalPipe};
use crate::prefork::report::secs;

/// The variable that tells a new master which old master to stop once it is ready.
pub(crate) const UPGRADE_FROM: &str = "PREFORK_UPGRADE_FROM";

/// The program to re-execute: read at start, before a new build can replace the file.
#[derive(Debug, Clone)]
pub(crate) struct Program {
    pub(crate) exe: PathBuf,
    pub(crate) args: Vec<OsString>,
}

impl Program {
    pub(crate) fn current() -> io::Result<Program> {
        let mut args = std::env::args_os();
        let argv0 = args.next();
        let exe = match argv0.and_then(|a| program_path(&a, std::env::var_os("PATH"))) {
            Some(p) => p,
            None => std::env::current_exe()?,
        };
        Ok(Program {
            exe,
            args: args.collect(),
        })
    }
}

/// The path an upgrade re-executes, as the program was started: `argv0` made absolute (a
/// relative path must survive a `chdir`), or found on `path` when it is a bare name, **without
/// resolving symlinks**: under the usual `current -> releases/N` deploy, the link is switched to
/// the new release before USR2, and resolving it at start would re-execute the old one. `None`:
/// not found (the caller falls back to `/proc/self/exe`).
fn program_path(argv0: &OsStr, path: Option<OsString>) -> Option<PathBuf> {
    let given = PathBuf::from(argv0);
    if given.components().count() > 1 {
        return std::path::absolute(&given).ok();
    }
    std::env::split_paths(&path?)
        .map(|dir| dir.join(&given))
        .find(|p| p.is_file())
        .and_then(|p| std::path::absolute(p).ok())
}

/// Reads and unsets `PREFORK_UPGRADE_FROM`: the old master's pid, if this process was started by a
/// SIGUSR2 upgrade and that master is still its parent.
pub(crate) fn take_upgrade_from() -> Option<libc::pid_t> {
    let value = std::env::var(UPGRADE_FROM).ok()?;
    // The master is single-threaded: changing the environment races with no reader.
    std::env::remove_var(UPGRADE_FROM);
    let old: libc::pid_t = value.trim().parse().ok()?;
    let parent = std::os::unix::process::parent_id();
    if i64::from(parent) != i64::from(old) {
        log::warn!(
            "{UPGRADE_FROM}={old} but the parent process is {parent}: not stopping pid {old} (it is \
             not the master that started this one)"
        );
        return None;
    }
    Some(old)
}

/// In the forked child of the old master: puts the listeners at fds 3, 4, … without close-on-exec,
/// sets the socket-activation variables, and executes the program. Returns only on failure.
pub(crate) fn exec_new_master(
    program: &Program,
    listeners: &[Listener],
    old_master: libc::pid_t,
) -> io::Error {
    // First move every listener above the target range, so that placing one at 3 + i never
    // overwrites another listener that happens to sit there.
    let mut high = Vec::with_capacity(listeners.len());
    for l in listeners {
        // SAFETY: fcntl(2) F_DUPFD duplicates an open listener fd to the lowest free fd >= 100; the
        // duplicate is only used by this child until exec.
        let fd = unsafe { libc::fcntl(l.as_raw_fd(), libc::F_DUPFD, 100) };
        if fd < 0 {
            return io::Error::last_os_error();
        }
        high.push(fd);
    }
    for (i, fd) in high.iter().enumerate() {
        let target = LISTEN_FDS_START + i as RawFd;
        // SAFETY: dup2(2) of an fd we just duplicated onto 3 + i; whatever this child had at 3 + i is
        // close-on-exec (Rust opens every fd so) and not needed before exec. The new fd does not have
        // FD_CLOEXEC, so it survives the exec.
        if unsafe { libc::dup2(*fd, target) } < 0 {
            return io::Error::last_os_error();
        }
    }
    // Exec keeps the pid, so LISTEN_PID is the new program's pid.
    let pid = std::process::id();
    Command::new(&program.exe)
        .args(&program.args)
        .env("LISTEN_FDS", listeners.len().to_string())
        .env("LISTEN_PID", pid.to_string())
        .env_remove("LISTEN_FDNAMES")
        .env(UPGRADE_FROM, old_master.to_string())
        .exec()
}

/// Forks the new master: the child drops the old master's handlers, unblocks every signal and
/// executes the program with the listeners (it ends with `_exit` if it cannot). Returns the new
/// master's pid, or the fork's error.
pub(crate) fn start_new_master(
    program: &Program,
    listeners: &[Listener],
    signals: &mut SignalPipe,
    old_master: pid_t,
) -> io::Result<pid_t> {
    let _ = io::stdout().flush();
    let _ = io::stderr().flush();
    let pid = fork::fork_with_signals_blocked();
    if pid < 0 {
        return Err(io::Error::last_os_error());
    }
    if pid == 0 {
        // The new master must not run the old master's handlers before exec (exec resets them).
        signals.forget_in_child();
        // The mask survives exec: the new master must start with every signal unblocked.
        fork::unblock_all();
        let err = exec_new_master(program, listeners, old_master);
        let _ = writeln!(
            io::stderr(),
            "binary upgrade: cannot execute {}: {err}",
            program.exe.display()
        );
        fork::exit_child(EXIT_ERROR);
    }
    Ok(pid)
}

/// How a new master that was reaped before it took over ended, for the log.
pub(crate) fn how_it_ended(status: c_int) -> String {
    match describe_status(status) {
        (Some(c), _) => format!("exited with code {c}"),
        (None, Some(s)) => format!("was killed by {}", signals::name(s)),
        _ => format!("ended with wait status {status:#x}"),
    }
}

/// The new master an upgrade started, until it is reaped.
#[derive(Debug)]
struct NewMaster {
    pid: pid_t,
    started: Instant,
    /// Killed for not taking over within `boot_timeout`: only its reaping is left.
    abandoned: bool,
}

/// The old master's side of binary upgrades: the program to re-execute, and the new master it
/// started, while one is under way.
#[derive(Debug)]
pub(crate) struct Upgrade {
    program: Option<Program>,
    new_master: Option<NewMaster>,
}

impl Upgrade {
    /// Reads the program's path and arguments now (a new build may replace the file later).
    pub(crate) fn new() -> Upgrade {
        Upgrade {
            program: Program::current()
                .map_err(|e| {
                    log::warn!(
                        "binary upgrade (SIGUSR2) unavailable: the path of this program cannot be \
                         read ({e}); start it by an absolute path to allow it"
                    )
                })
                .ok(),
            new_master: None,
        }
    }

    /// The new master's pid while an upgrade is under way (started, neither reaped nor
    /// abandoned): the listeners are its too.
    pub(crate) fn under_way(&self) -> Option<pid_t> {
        self.new_master
            .as_ref()
            .filter(|n| !n.abandoned)
            .map(|n| n.pid)
    }

    /// SIGUSR2: starts the new master with `listeners`, unless an upgrade is under way. It has
    /// `boot_timeout` to take over (see [`check`](Self::check)).
    pub(crate) fn start(
        &mut self,
        listeners: &[Listener],
        signals: &mut SignalPipe,
        old_master: pid_t,
        boot_timeout: Duration,
    ) {
        if let Some(n) = &self.new_master {
            let why = if n.abandoned {
                "the abandoned new master is not reaped yet; send it again in a moment"
            } else {
                "an upgrade is under way"
            };
            log::warn!("SIGUSR2 ignored: {why} (new master pid {})", n.pid);
            return;
        }
        let Some(program) = self.program.as_ref() else {
            log::error!(
                "SIGUSR2 ignored: the path of this program is unknown, it cannot re-execute \
                 (start it by an absolute path to allow upgrades)"
            );
            return;
        };
        let pid = match start_new_master(program, listeners, signals, old_master) {
            Ok(pid) => pid,
            Err(e) => {
                log::error!(
                    "SIGUSR2: fork failed: {e}; no upgrade (check `ulimit -u` and free memory)"
                );
                return;
            }
        };
        log::info!(
            "SIGUSR2: binary upgrade: started {} as the new master (pid {pid}) with the listeners; \
             this master stops once the new one's workers are ready (within boot_timeout {}, or \
             the upgrade is abandoned)",
            program.exe.display(),
            secs(boot_timeout)
        );
        self.new_master = Some(NewMaster {
            pid,
            started: Instant::now(),
            abandoned: false,
        });
    }

    /// Each pass of the master while it serves: a new master that has not taken over (told this
    /// master to stop) within `boot_timeout` of its start is killed (SIGKILL: it may hang in any
    /// way; its own workers follow it, by their parent-death signal), and the upgrade abandoned.
    /// Not called during a stop: the new master's SIGTERM is what starts the stop of an upgrade
    /// that succeeded.
    pub(crate) fn check(&mut self, boot_timeout: Duration, now: Instant) {
        let Some(n) = self.new_master.as_mut() else {
            return;
        };
        let waited = now.duration_since(n.started);
        if n.abandoned || waited <= boot_timeout {
            return;
        }
        log::error!(
            "binary upgrade abandoned: the new master (pid {}) has not taken over {} after \
             SIGUSR2 (boot_timeout {}): it hangs before serving, or its workers are not ready; \
             killing it with SIGKILL. This master keeps serving with the old binary. Fix the new \
             build (see the new master's log lines above) and send SIGUSR2 again, or raise \
             boot_timeout if its workers need longer to start",
            n.pid,
            secs(waited),
            secs(boot_timeout)
        );
        // SAFETY: kill(2) of the new master, our child, not reaped yet (`reaped` forgets it), so
        // its pid cannot have been reused by another process.
        if unsafe { libc::kill(n.pid, libc::SIGKILL) } != 0 {
            log::debug!(
                "kill({}, SIGKILL) failed: {}",
                n.pid,
                io::Error::last_os_error()
            );
        }
        n.abandoned = true;
    }

    /// A child was reaped: whether it was the new master (then logged; `stopping`: this master
    /// is stopping, after the new one took over or for another reason, and says nothing).
    pub(crate) fn reaped(&mut self, pid: pid_t, status: c_int, stopping: bool) -> bool {
        let Some(n) = self.new_master.take_if(|n| n.pid == pid) else {
            return false;
        };
        let how = how_it_ended(status);
        if n.abandoned {
            log::info!("the abandoned new master (pid {pid}) is gone: it {how}");
        } else if !stopping {
            log::error!(
                "binary upgrade failed: the new master (pid {pid}) {how} before it took over (see \
                 its errors above); this master keeps serving with the old binary"
            );
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `current -> releases/1` deploy: the program started as `current/app` (or found on `PATH`
    /// through `current/`) is re-executed through the link, so that switching the link to
    /// `releases/2` before USR2 runs the new release.
    #[test]
    fn the_program_is_re_executed_through_its_symlink_as_started() {
        let dir = std::env::temp_dir().join(format!("prefork-upgrade-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        for r in ["1", "2"] {
            std::fs::create_dir_all(dir.join("releases").join(r)).unwrap();
            std::fs::write(dir.join("releases").join(r).join("app"), r).unwrap();
        }
        std::os::unix::fs::symlink(dir.join("releases/1"), dir.join("current")).unwrap();
        let started = dir.join("current/app");
        let exe = program_path(started.as_os_str(), None).unwrap();
        assert_eq!(exe, started, "the link is kept, not resolved to releases/1");
        // The deploy switches the link; the path an upgrade runs now holds release 2.
        std::fs::remove_file(dir.join("current")).unwrap();
        std::os::unix::fs::symlink(dir.join("releases/2"), dir.join("current")).unwrap();
        assert_eq!(std::fs::read_to_string(&exe).unwrap(), "2");
        // A bare name is found on PATH, through the link too.
        let path = std::env::join_paths([dir.join("nowhere"), dir.join("current")]).unwrap();
        let exe = program_path(OsStr::new("app"), Some(path)).unwrap();
        assert_eq!(exe, started);
        assert!(program_path(OsStr::new("no-such-app"), None).is_none());
        // A relative path is made absolute (it must survive a chdir), links kept.
        let rel = program_path(OsStr::new("./x/app"), None).unwrap();
        assert!(rel.is_absolute() && rel.ends_with("x/app"), "{rel:?}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
