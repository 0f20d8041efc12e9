//! The process layer's logging: the log sink's settings on the [`SupervisorBuilder`] (installed
//! in the master at `build`, inherited by every worker), SIGUSR1 (the master reopens its files and
//! forwards the signal to every worker, which reopens its own), and the process titles
//! (`prefork: master [NAME]`, `prefork: worker N [NAME]`).

use std::path::Path;
use std::sync::OnceLock;

use super::builder::SupervisorBuilder;
use super::children::Child;
use super::fork;
use crate::log_sink::LogFile;

impl SupervisorBuilder {
    /// Write the access log of every worker process to this file (appended to by each, created if
    /// missing; its directory must exist), or to stdout with `-`, with the crate's log sink: no
    /// logger crate needed, lines written off the request's path by a log thread in each worker,
    /// and SIGUSR1 reopens it in the master and every worker (logrotate's `postrotate kill -USR1
    /// $(cat pidfile)`). The worker's server sets the format
    /// ([`ServerBuilder::access_log_format`](crate::http::ServerBuilder::access_log_format)).
    /// Opened by [`build`](Self::build) (a [`StartError::Config`](super::StartError::Config)
    /// naming `access_log_file` if it cannot be). See [`crate::log_sink`].
    pub fn access_log_file(mut self, path_or_dash: impl AsRef<Path>) -> Self {
        self.cfg.logs.access = Some(LogFile::parse(path_or_dash, LogFile::Stdout));
        self
    }

    /// Write the error log (every `log` record of the master and the workers) to this file, or to
    /// stderr with `-`: one line each with the time, the level, the process id and the target.
    /// The crate's log sink becomes the `log` logger (refused at [`build`](Self::build), naming
    /// `error_log_file`, when another logger is installed). Reopened on SIGUSR1 in every process.
    pub fn error_log_file(mut self, path_or_dash: impl AsRef<Path>) -> Self {
        self.cfg.logs.error = Some(LogFile::parse(path_or_dash, LogFile::Stderr));
        self
    }

    /// The lowest level the error log writes (default `info`; names parse with
    /// [`LogSettings::parse_level`](crate::log_sink::LogSettings::parse_level)). Set without
    /// [`error_log_file`](Self::error_log_file), the error log goes to stderr.
    pub fn log_level(mut self, level: log::LevelFilter) -> Self {
        self.cfg.logs.level = Some(level);
        self
    }

    /// The `NAME` of the process titles (gunicorn's `proc_name`; default: the program's file
    /// name). Each process names itself with `prctl(PR_SET_NAME)` (Linux): the master
    /// `prefork: master [NAME]`, a worker `prefork: worker N [NAME]`. The kernel keeps only the
    /// first 15 bytes (`prefork: master`, `prefork: worker`: what `ps -o comm`, `top` and
    /// `pgrep` show, enough to tell the master from its workers); `ps -f`'s full command line is
    /// not rewritten (that would overwrite the memory `std::env::args` reads).
    pub fn proc_name(mut self, name: impl Into<String>) -> Self {
        self.cfg.proc_name = Some(name.into());
        self
    }
}

/// The `NAME` of the titles, set in the master before the first fork (the workers inherit it).
static NAME: OnceLock<String> = OnceLock::new();

/// The program's file name (`myapp` for `/usr/bin/myapp`).
fn program_name() -> String {
    std::env::args_os()
        .next()
        .and_then(|a| {
            Path::new(&a)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
        })
        .unwrap_or_else(|| "prefork".into())
}

/// A process title: `prefork: {role} [NAME]`.
pub(crate) fn title(role: &str) -> String {
    let name = NAME.get().cloned().unwrap_or_else(program_name);
    format!("prefork: {role} [{name}]")
}

/// In the master, at start: remembers `proc_name` and names the master.
pub(crate) fn name_master(proc_name: Option<&str>) {
    let _ = NAME.set(proc_name.map_or_else(program_name, str::to_owned));
    fork::set_process_name(&title("master"));
}

/// In a worker, after the fork: names it.
pub(crate) fn name_worker(number: u64) {
    fork::set_process_name(&title(&format!("worker {number}")));
}

/// SIGUSR1 in the master: write out and reopen its own files, log what was reopened, forward the
/// signal to every worker (each reopens its own, see `worker.rs`), run the `on_reopen_logs` hook.
pub(crate) fn on_usr1(children: &[Child], hook: Option<&mut Box<dyn FnMut()>>) {
    let what = crate::log_sink::reopen();
    if crate::log_sink::active() {
        for c in children {
            c.forward(libc::SIGUSR1);
        }
        log::info!(
            "SIGUSR1: {what}; forwarded to {} worker(s), which reopen their own",
            children.len()
        );
    } else {
        // Workers without the sink ignore SIGUSR1: not forwarded.
        log::info!("SIGUSR1: {what}");
    }
    if let Some(f) = hook {
        f();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn titles_name_the_role_and_the_program() {
        let t = title("worker 3");
        assert!(t.starts_with("prefork: worker 3 ["), "{t}");
        assert!(t.ends_with(']'), "{t}");
    }
}
