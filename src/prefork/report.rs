//! What the master tells the operator when it cannot go on: [`fatal`] (the log, and stderr when no
//! logger is installed), and the messages that name the fix, as types with `Display`.

use std::fmt;
use std::io::{self, Write};
use std::path::PathBuf;
use std::time::Duration;

/// Logs an error that stops the master; on stderr too when no logger is installed.
pub(crate) fn fatal(msg: &str) {
    log::error!("{msg}");
    if log::max_level() == log::LevelFilter::Off {
        let _ = writeln!(io::stderr(), "prefork: error: {msg}");
    }
}

/// A duration as the master's messages write it: `2.5 s`.
pub(crate) fn secs(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}

/// Why the master refuses to start (or to fork after `preload`) in a multi-threaded process.
#[derive(Debug)]
pub(crate) enum TooManyThreads {
    /// The master has `n` threads before it started anything.
    AtStart(usize),
    /// The preloaded app started threads (`n` is the process's count, the main thread included).
    AfterPreload(usize),
}

impl fmt::Display for TooManyThreads {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TooManyThreads::AtStart(n) => write!(
                f,
                "the master process has {n} threads: a fork copies only the calling thread, so a \
                 lock held by another thread would stay locked for ever in every worker. Call \
                 Supervisor::run before starting any thread (runtime, pool, logger thread); start \
                 them in the worker instead"
            ),
            TooManyThreads::AfterPreload(n) => write!(
                f,
                "the preloaded app started {} thread(s): a fork copies only the calling thread, \
                 so their locks would stay locked for ever in every worker. Start threads in \
                 the worker (inside the Worker's `run`), or turn `preload` off",
                n - 1
            ),
        }
    }
}

/// The pidfile could not be written.
#[derive(Debug)]
pub(crate) struct PidfileError<'a> {
    pub(crate) path: &'a PathBuf,
    pub(crate) error: io::Error,
}

impl fmt::Display for PidfileError<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "cannot write the pidfile {}: {}; fix its directory's permissions or choose another path",
            self.path.display(),
            self.error
        )
    }
}

/// A worker ended before it was ready: the master halts (exit status 3).
#[derive(Debug)]
pub(crate) struct BootError<'a> {
    /// The exit sentence.
    pub(crate) description: &'a str,
}

impl fmt::Display for BootError<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "boot error: {}, before it was ready. The master stops here instead of respawning it in \
             a loop: fix the error above and start again",
            self.description
        )
    }
}

/// A worker was not ready within `boot_timeout`: killed, and the master halts (exit status 3).
#[derive(Debug)]
pub(crate) struct BootTimeout {
    pub(crate) number: u64,
    pub(crate) pid: i32,
    pub(crate) age: Duration,
    pub(crate) boot_timeout: Duration,
}

impl fmt::Display for BootTimeout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "boot error: worker {} (pid {}) is not ready {} after its fork (boot_timeout {}): it was \
             killed. The master stops here: find what the app waits for at start-up, make sure the \
             worker calls `ready()`, or raise `boot_timeout`",
            self.number,
            self.pid,
            secs(self.age),
            secs(self.boot_timeout)
        )
    }
}

/// More restarts of failed workers than the restart intensity allows: the master halts.
#[derive(Debug)]
pub(crate) struct IntensityExceeded<'a> {
    pub(crate) restarts: usize,
    pub(crate) period: Duration,
    pub(crate) max: u32,
    /// The last failure's exit sentence.
    pub(crate) last: &'a str,
}

impl fmt::Display for IntensityExceeded<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "restart intensity exceeded: {} worker restarts within {} (the most allowed is {}); the \
             last: {}. The master stops instead of restarting workers that keep failing: fix the \
             cause, or raise `restart_intensity`",
            self.restarts,
            secs(self.period),
            self.max,
            self.last
        )
    }
}

/// Workers still alive 10 s after SIGKILL: the master exits anyway.
#[derive(Debug)]
pub(crate) struct Unkillable(pub(crate) Vec<i32>);

impl fmt::Display for Unkillable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let pids: Vec<String> = self.0.iter().map(|p| p.to_string()).collect();
        write!(
            f,
            "worker(s) {} did not die 10 s after SIGKILL (stuck in the kernel?); the master exits \
             anyway",
            pids.join(", ")
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_the_fix() {
        let m = IntensityExceeded {
            restarts: 4,
            period: Duration::from_secs(60),
            max: 3,
            last: "worker 4 (pid 9) exited with code 7 on its own",
        }
        .to_string();
        assert_eq!(
            m,
            "restart intensity exceeded: 4 worker restarts within 60.0 s (the most allowed is 3); \
             the last: worker 4 (pid 9) exited with code 7 on its own. The master stops instead of \
             restarting workers that keep failing: fix the cause, or raise `restart_intensity`"
        );
        assert!(BootError {
            description: "worker 1 (pid 2) exited with code 3 on its own"
        }
        .to_string()
        .starts_with(
            "boot error: worker 1 (pid 2) exited with code 3 on its own, before it was ready."
        ));
        assert_eq!(
            Unkillable(vec![1, 2]).to_string(),
            "worker(s) 1, 2 did not die 10 s after SIGKILL (stuck in the kernel?); the master exits \
             anyway"
        );
    }
}
