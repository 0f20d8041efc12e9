//! The crate's own log sink: the access log and the error log written to files (or `-`), with no
//! logger crate, reopened on SIGUSR1 in every process (logrotate's `postrotate kill -USR1`).
//!
//! It is opt-in. Set a file on a builder and `serve` / `build` installs it:
//! [`ServerBuilder::access_log_file`](crate::http::ServerBuilder::access_log_file),
//! [`error_log_file`](crate::http::ServerBuilder::error_log_file),
//! [`log_level`](crate::http::ServerBuilder::log_level) (thread mode), and the same three on
//! [`SupervisorBuilder`](crate::prefork::SupervisorBuilder) (process mode: the master and every
//! worker process). Or call [`install`] yourself. With none set, nothing changes: the access log
//! and every other record go through the `log` facade to whatever logger the program installed.
//!
//! - **Access log** (`access_log_file`): one line per answered request, in the server's
//!   [`AccessLogFormat`](crate::http::AccessLogFormat) (gunicorn's atoms, or JSON). The lines do
//!   not go through the `log` facade, so it works beside any logger. A worker thread formats the
//!   line into a buffer of its own and goes on: the request never waits for the disk. The
//!   process's log thread takes the buffers at least every 100 ms and writes them in large
//!   `write(2)`s (lines of different threads within those 100 ms come thread by thread, not in
//!   time order). When a thread's buffer holds 1 MiB (the disk cannot keep up), its lines are
//!   dropped and counted, never waited for; the count is logged at `warn`. The buffers are
//!   written out on SIGUSR1 (to the old file, before it is reopened) and when the server stops
//!   ([`ServerHandle::join`](crate::http::ServerHandle::join), a worker process's end). A process
//!   ended by SIGKILL, or a worker's fast stop (SIGINT, SIGQUIT), loses at most the last 100 ms.
//!   `-` is stdout (as gunicorn's `--access-logfile -`).
//! - **Error log** (`error_log_file`): every other `log` record at or above the
//!   [`log_level`](LogSettings::level) (default `info`), one line each, written at once:
//!   `[2026-12-07 06:09:36.123 +0000] [4242] [INFO] prefork_pool::prefork: message`, with the
//!   process id, as gunicorn's. Control characters in a message are written as `\xHH` and a line
//!   break starts an indented continuation, so nothing a client sent can forge a record.
//!   `-` is stderr. The sink is then the program's `log` logger: installing it fails when another
//!   logger is installed (remove that logger's `init`, or leave `error_log_file` unset and let
//!   your logger write the error log).
//!
//! Files are opened for appending (several processes can share one: each `write(2)` carries
//! whole lines), created if missing; the directory must exist. SIGUSR1 reopens them by path: after
//! `mv access.log access.log.1 && kill -USR1 <pid>`, every process writes to a new `access.log`.
//! When the supervisor's workers switch to another user
//! ([`SupervisorBuilder::user`](crate::prefork::SupervisorBuilder::user)), the master, as root,
//! gives each file it opens or reopens to that user and group (as gunicorn does), and reopens
//! before it passes SIGUSR1 on: each worker then reopens the file the master made, which it may
//! write, in a directory it need not be able to write.
//! The sink is per process: a second install replaces the files.

mod writer;

use std::fmt::Write as _;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::BuildError;

#[cfg(feature = "prefork")]
pub(crate) use writer::ask_reopen;
pub(crate) use writer::start_log_thread;

/// Where a log goes: a file (by path, reopened on SIGUSR1), stdout or stderr.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogFile {
    /// The process's stdout.
    Stdout,
    /// The process's stderr.
    Stderr,
    /// A file, appended to.
    Path(PathBuf),
}

impl LogFile {
    /// `-` is `dash` (stdout for the access log, stderr for the error log, as gunicorn); anything
    /// else a path.
    pub fn parse(path_or_dash: impl AsRef<Path>, dash: LogFile) -> LogFile {
        let p = path_or_dash.as_ref();
        if p == Path::new("-") {
            dash
        } else {
            LogFile::Path(p.to_path_buf())
        }
    }

    fn describe(&self) -> String {
        match self {
            LogFile::Stdout => "stdout".into(),
            LogFile::Stderr => "stderr".into(),
            LogFile::Path(p) => p.display().to_string(),
        }
    }
}

/// The sink's settings: what a builder's `access_log_file`, `error_log_file` and `log_level` set.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogSettings {
    /// The access log's file; `None`: access lines go through the `log` facade (target
    /// [`ACCESS_TARGET`](crate::http::ACCESS_TARGET)).
    pub access: Option<LogFile>,
    /// The error log's file; `None`: records go to the program's own logger.
    pub error: Option<LogFile>,
    /// The lowest level the error log writes (default `info`). Set alone, it installs the sink
    /// with the error log on stderr.
    pub level: Option<log::LevelFilter>,
}

impl LogSettings {
    /// Whether anything is set (an unset sink is not installed).
    pub fn is_set(&self) -> bool {
        self.access.is_some() || self.error.is_some() || self.level.is_some()
    }

    /// Parse a level name (`debug`, `info`, `warning` or `warn`, `error`, `critical`, `off`), as
    /// gunicorn's `--log-level`; refused with a [`BuildError`] naming `log_level`.
    pub fn parse_level(name: &str) -> Result<log::LevelFilter, BuildError> {
        Ok(match name.trim().to_ascii_lowercase().as_str() {
            "trace" => log::LevelFilter::Trace,
            "debug" => log::LevelFilter::Debug,
            "info" => log::LevelFilter::Info,
            "warning" | "warn" => log::LevelFilter::Warn,
            "error" | "critical" => log::LevelFilter::Error,
            "off" => log::LevelFilter::Off,
            _ => {
                return Err(BuildError::new(
                    "log_level",
                    format!("{name:?}"),
                    "one of trace, debug, info, warning, error, critical, off",
                ))
            }
        })
    }
}

/// An open log: its target and, for a path, the file.
#[derive(Debug)]
struct Out {
    target: LogFile,
    file: Option<File>,
}

impl Out {
    fn open(target: &LogFile, field: &'static str) -> Result<Out, BuildError> {
        let file = match target {
            LogFile::Path(p) => Some(open_append(p).map_err(|e| {
                BuildError::new(
                    field,
                    format!("{} ({e})", p.display()),
                    "a file this process can append to, in a directory that exists, or `-`",
                )
            })?),
            _ => None,
        };
        Ok(Out {
            target: target.clone(),
            file,
        })
    }

    /// Writes whole lines at once (one `write(2)` when the target takes it).
    fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        match (&self.target, self.file.as_mut()) {
            (_, Some(f)) => f.write_all(bytes),
            (LogFile::Stdout, None) => {
                let mut o = io::stdout().lock();
                o.write_all(bytes).and_then(|()| o.flush())
            }
            (_, None) => io::stderr().lock().write_all(bytes),
        }
    }

    /// Reopens a path (the old one was moved by logrotate); `Some(path)` when it did.
    fn reopen(&mut self) -> Option<Result<String, String>> {
        let LogFile::Path(p) = &self.target else {
            return None;
        };
        Some(match open_append(p) {
            Ok(f) => {
                self.file = Some(f);
                Ok(p.display().to_string())
            }
            Err(e) => Err(format!(
                "cannot reopen {}: {e} (still writing to the file it had open; check the \
                 directory's permissions)",
                p.display()
            )),
        })
    }
}

fn open_append(p: &Path) -> io::Result<File> {
    let file = OpenOptions::new().create(true).append(true).open(p)?;
    #[cfg(unix)]
    if let Some((uid, gid)) = *lock(&OWNER) {
        // SAFETY: geteuid(2) cannot fail and touches no memory.
        if unsafe { libc::geteuid() } == 0 {
            std::os::unix::fs::fchown(&file, uid, gid)?;
        }
    }
    Ok(file)
}

/// The owner this process gives the log files it opens while it is root: the account the
/// supervisor's workers switch to, so that they can reopen the files the master made on SIGUSR1.
#[cfg(unix)]
static OWNER: Mutex<Option<(Option<u32>, Option<u32>)>> = Mutex::new(None);

/// Gives every log file this process opens from now on, while it runs as root, to `uid` and
/// `gid` (`None`: unchanged), as gunicorn does with its `--user`.
#[cfg(unix)]
#[cfg_attr(not(feature = "prefork"), allow(dead_code))]
pub(crate) fn set_owner(uid: Option<u32>, gid: Option<u32>) {
    *lock(&OWNER) = Some((uid, gid));
}

/// The process's sink.
struct Sink {
    error: Mutex<Option<Out>>,
    /// The access log and the bytes waiting to be written to it.
    access: Mutex<Option<(Out, Vec<u8>)>>,
    access_on: AtomicBool,
    level: AtomicUsize,
    /// Installed as the `log` logger.
    is_logger: AtomicBool,
}

static SINK: Sink = Sink {
    error: Mutex::new(None),
    access: Mutex::new(None),
    access_on: AtomicBool::new(false),
    level: AtomicUsize::new(log::LevelFilter::Info as usize),
    is_logger: AtomicBool::new(false),
};

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Opens the files of `settings` and makes them this process's logs (see the
/// [module documentation](self)). With an error log or a level set, the sink becomes the `log`
/// logger. Refused with a [`BuildError`] naming the field when a file cannot be opened or another
/// logger is installed. Nothing set: nothing done.
pub fn install(settings: &LogSettings) -> Result<(), BuildError> {
    if !settings.is_set() {
        return Ok(());
    }
    let access = match &settings.access {
        Some(t) => Some(Out::open(t, "access_log_file")?),
        None => None,
    };
    let wants_logger = settings.error.is_some() || settings.level.is_some();
    let error = match (&settings.error, wants_logger) {
        (Some(t), _) => Some(Out::open(t, "error_log_file")?),
        (None, true) => Some(Out::open(&LogFile::Stderr, "error_log_file")?),
        (None, false) => None,
    };
    if wants_logger && !SINK.is_logger.load(Ordering::Acquire) {
        if log::set_logger(&SINK).is_err() {
            return Err(BuildError::new(
                "error_log_file",
                settings
                    .error
                    .as_ref()
                    .map_or_else(|| "(log_level set)".into(), LogFile::describe),
                "no other logger: another `log` logger is installed (env_logger::init, \
                 log::set_logger); remove it, or leave error_log_file and log_level unset and let \
                 that logger write the error log",
            ));
        }
        SINK.is_logger.store(true, Ordering::Release);
    }
    if wants_logger {
        let level = settings.level.unwrap_or(log::LevelFilter::Info);
        SINK.level.store(level as usize, Ordering::Relaxed);
        log::set_max_level(level);
        *lock(&SINK.error) = error;
    }
    if let Some(out) = access {
        writer::flush();
        *lock(&SINK.access) = Some((out, Vec::with_capacity(writer::CHUNK)));
        SINK.access_on.store(true, Ordering::Release);
    }
    Ok(())
}

/// Whether access lines go to the sink's access log (else through the `log` facade).
pub(crate) fn access_enabled() -> bool {
    SINK.access_on.load(Ordering::Relaxed)
}

/// Whether this process has anything of the sink installed.
pub(crate) fn active() -> bool {
    SINK.access_on.load(Ordering::Relaxed) || SINK.is_logger.load(Ordering::Relaxed)
}

/// One access line, written by `render` (without its line break), to the access log.
pub(crate) fn access(render: impl FnOnce(&mut String)) {
    writer::send(render);
}

/// Writes out every access line queued or buffered (at a server's end, before a process exits).
pub fn flush() {
    writer::flush();
}

/// Reopens every log file by its path (after logrotate moved it), after writing out what is
/// queued to the old file; returns what it did, for the caller's log line: `reopened the access
/// log /var/log/app/access.log and the error log /var/log/app/error.log`.
pub fn reopen() -> String {
    writer::flush();
    let mut done = Vec::new();
    let mut failed = Vec::new();
    let mut note = |what: &str, r: Option<Result<String, String>>| match r {
        Some(Ok(p)) => done.push(format!("the {what} log {p}")),
        Some(Err(e)) => failed.push(format!("the {what} log: {e}")),
        None => {}
    };
    note(
        "access",
        lock(&SINK.access).as_mut().and_then(|(o, _)| o.reopen()),
    );
    note("error", lock(&SINK.error).as_mut().and_then(Out::reopen));
    let mut s = if done.is_empty() {
        "no log file to reopen (set access_log_file / error_log_file to files; stdout and stderr \
         are not reopened, and records without a file go to the program's `log` logger)"
            .to_string()
    } else {
        format!("reopened {}", done.join(" and "))
    };
    if !failed.is_empty() {
        let _ = write!(s, "; FAILED: {}", failed.join("; "));
    }
    s
}

/// Reopens and logs what was done at `info` (`warn` when a reopen failed).
pub(crate) fn reopen_and_log(why: &str) {
    let what = reopen();
    if what.contains("FAILED") {
        log::warn!(target: "prefork_pool::log_sink", "{why}: {what}");
    } else {
        log::info!(target: "prefork_pool::log_sink", "{why}: {what}");
    }
}

impl log::Log for Sink {
    fn enabled(&self, m: &log::Metadata) -> bool {
        m.level() as usize <= self.level.load(Ordering::Relaxed)
    }

    fn log(&self, record: &log::Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let line = error_line(now(), std::process::id(), record);
        if let Some(out) = lock(&self.error).as_mut() {
            let _ = out.write(line.as_bytes());
        }
    }

    fn flush(&self) {
        writer::flush();
    }
}

/// Seconds and milliseconds since the Unix epoch.
fn now() -> (u64, u32) {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    (d.as_secs(), d.subsec_millis())
}

/// One error-log line: `[2026-12-07 06:09:36.123 +0000] [pid] [LEVEL] target: message\n`.
fn error_line((secs, ms): (u64, u32), pid: u32, record: &log::Record) -> String {
    let c = crate::http::wire::date::civil(secs);
    let mut s = String::with_capacity(96);
    let _ = write!(
        s,
        "[{}-{:02}-{:02} {:02}:{:02}:{:02}.{ms:03} +0000] [{pid}] [{}] {}: ",
        c.year,
        c.month,
        c.day,
        c.hour,
        c.min,
        c.sec,
        record.level(),
        record.target()
    );
    let msg = record.args().to_string();
    push_escaped(&mut s, &msg);
    s.push('\n');
    s
}

/// A message as one record: control characters as `\xHH`, a line break as a line break and an
/// indent (a record starts with `[`; a continuation never does).
fn push_escaped(s: &mut String, msg: &str) {
    for ch in msg.chars() {
        match ch {
            '\n' => s.push_str("\n    "),
            c if c.is_control() => {
                let _ = write!(s, "\\x{:02X}", c as u32);
            }
            c => s.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_lines_carry_time_pid_level_target_and_cannot_be_forged() {
        let args = format_args!("peer said \"a\r\n[2026] [1] [ERROR] forged\x1b[31m\"");
        let rec = log::Record::builder()
            .args(args)
            .level(log::Level::Warn)
            .target("prefork_pool::http")
            .build();
        let line = error_line((784_111_777, 5), 4242, &rec);
        assert_eq!(
            line,
            "[1994-11-06 08:49:37.005 +0000] [4242] [WARN] prefork_pool::http: peer said \"a\\x0D\n    \
             [2026] [1] [ERROR] forged\\x1B[31m\"\n"
        );
        // Every record line starts with `[`; the forged one does not.
        assert_eq!(line.lines().filter(|l| l.starts_with('[')).count(), 1);
    }

    #[test]
    fn dash_and_levels() {
        assert_eq!(LogFile::parse("-", LogFile::Stdout), LogFile::Stdout);
        assert_eq!(
            LogFile::parse("/tmp/a.log", LogFile::Stdout),
            LogFile::Path("/tmp/a.log".into())
        );
        assert_eq!(
            LogSettings::parse_level("Warning").unwrap(),
            log::LevelFilter::Warn
        );
        let e = LogSettings::parse_level("loud").unwrap_err();
        assert_eq!(e.field, "log_level");
        assert!(!LogSettings::default().is_set());
    }

    #[test]
    fn an_unopenable_file_is_refused_naming_the_field() {
        let s = LogSettings {
            access: Some(LogFile::Path("/nonexistent-dir-prefork/a.log".into())),
            ..LogSettings::default()
        };
        let e = install(&s).unwrap_err();
        assert_eq!(e.field, "access_log_file");
        assert!(e.to_string().contains("directory that exists"), "{e}");
        assert!(!access_enabled());
    }
}
