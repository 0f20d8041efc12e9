//! The log sink's settings on the [`SupervisorBuilder`]: installed in the master at `build`,
//! inherited by every worker (the signal and the titles are in `logs.rs`).

use std::path::Path;

use super::builder::SupervisorBuilder;
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
