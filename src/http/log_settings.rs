//! The [`ServerBuilder`]'s settings of the crate's log sink ([`crate::log_sink`]): the access log
//! and error log files and the level, for thread mode (process mode sets them on the
//! `SupervisorBuilder`, for the master and every worker).

use std::path::Path;

use super::server::ServerBuilder;
use crate::log_sink::LogFile;

impl ServerBuilder {
    /// Write the access log to this file (appended to, created if missing; its directory must
    /// exist), or to stdout with `-`, with the crate's own log sink instead of the `log` facade:
    /// no logger crate needed, the line is written by a log thread off the request's path, and
    /// [`serve_until_signal`](super::ServerHandle::serve_until_signal) reopens it on SIGUSR1
    /// (logrotate). The format is still [`access_log_format`](Self::access_log_format); see
    /// [`crate::log_sink`]. Opened by `serve` (a [`BuildError`](crate::BuildError) naming
    /// `access_log_file` if it cannot be).
    pub fn access_log_file(mut self, path_or_dash: impl AsRef<Path>) -> Self {
        self.logs.access = Some(LogFile::parse(path_or_dash, LogFile::Stdout));
        self
    }

    /// Write every other `log` record (the error log) to this file, or to stderr with `-`, one
    /// line each with the time, the level, the process id and the target: the crate's log sink
    /// becomes the program's `log` logger (`serve` refuses with a
    /// [`BuildError`](crate::BuildError) naming `error_log_file` when another logger is
    /// installed). Reopened on SIGUSR1 as the access log is. See [`crate::log_sink`].
    pub fn error_log_file(mut self, path_or_dash: impl AsRef<Path>) -> Self {
        self.logs.error = Some(LogFile::parse(path_or_dash, LogFile::Stderr));
        self
    }

    /// The lowest level the error log writes (default `info`; parse a name with
    /// [`LogSettings::parse_level`](crate::log_sink::LogSettings::parse_level)). Set without
    /// [`error_log_file`](Self::error_log_file), the error log goes to stderr.
    pub fn log_level(mut self, level: log::LevelFilter) -> Self {
        self.logs.level = Some(level);
        self
    }
}
