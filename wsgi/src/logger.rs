//! The server's log, in gunicorn's shape: `[2026-01-04 15:00:00 +0000] [pid] [LEVEL] message` to
//! the error log (`--error-logfile`, default stderr), filtered by `--log-level`; the crate's access
//! lines (target `prefork_pool::access`) to `--access-logfile` (`-`: stdout; none: off).
//!
//! Two of the crate's warnings are written for a Rust handler; here they get the WSGI reading: a
//! self-call's fix names what a Python view can do instead of the `Loopback`, and a request past
//! its deadline says what happens to its Python thread (it cannot be killed).

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::sync::{Mutex, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

use log::{Level, LevelFilter, Log, Metadata, Record};

/// Where lines go.
enum Sink {
    Stdout,
    Stderr,
    File(File),
}

impl Sink {
    fn open(spec: &str) -> io::Result<Sink> {
        Ok(match spec {
            "-" => Sink::Stdout,
            "" | "stderr" => Sink::Stderr,
            path => Sink::File(OpenOptions::new().create(true).append(true).open(path)?),
        })
    }

    fn write_line(&mut self, line: &str) {
        let _ = match self {
            Sink::Stdout => io::stdout().lock().write_all(line.as_bytes()),
            Sink::Stderr => io::stderr().lock().write_all(line.as_bytes()),
            Sink::File(f) => f.write_all(line.as_bytes()),
        };
    }
}

struct Sinks {
    level: LevelFilter,
    error: Sink,
    access: Option<Sink>,
    threads: usize,
}

struct WsgiLogger {
    sinks: Mutex<Option<Sinks>>,
}

static LOGGER: OnceLock<&'static WsgiLogger> = OnceLock::new();

/// gunicorn's level names.
pub fn parse_level(s: &str) -> Option<LevelFilter> {
    Some(match s.to_ascii_lowercase().as_str() {
        "debug" => LevelFilter::Debug,
        "info" => LevelFilter::Info,
        "warning" | "warn" => LevelFilter::Warn,
        "error" | "critical" => LevelFilter::Error,
        _ => return None,
    })
}

/// Installs the logger (once per process; a later call replaces its sinks). `errorlog` and
/// `accesslog` are gunicorn's values: `-` is stdout for the access log; the error log's `-` is
/// stderr, as gunicorn's.
pub fn install(
    level: &str,
    errorlog: &str,
    accesslog: Option<&str>,
    threads: usize,
) -> io::Result<()> {
    let level = parse_level(level).unwrap_or(LevelFilter::Info);
    let error = if errorlog == "-" {
        Sink::Stderr
    } else {
        Sink::open(errorlog)?
    };
    let access = accesslog.map(Sink::open).transpose()?;
    let logger = LOGGER.get_or_init(|| {
        let l: &'static WsgiLogger = Box::leak(Box::new(WsgiLogger {
            sinks: Mutex::new(None),
        }));
        let _ = log::set_logger(l);
        l
    });
    // The access lines are `info`: keep them when the error log is quieter.
    log::set_max_level(if access.is_some() {
        level.max(LevelFilter::Info)
    } else {
        level
    });
    *logger.sinks.lock().unwrap_or_else(|e| e.into_inner()) = Some(Sinks {
        level,
        error,
        access,
        threads,
    });
    Ok(())
}

impl Log for WsgiLogger {
    fn enabled(&self, _: &Metadata) -> bool {
        true
    }

    fn log(&self, record: &Record) {
        let mut guard = self.sinks.lock().unwrap_or_else(|e| e.into_inner());
        let Some(sinks) = guard.as_mut() else {
            return;
        };
        if record.target() == prefork_pool::http::ACCESS_TARGET {
            if let Some(access) = sinks.access.as_mut() {
                access.write_line(&format!("{}\n", record.args()));
            }
            return;
        }
        if record.level() > sinks.level {
            return;
        }
        let level = match record.level() {
            Level::Error => "ERROR",
            Level::Warn => "WARNING",
            Level::Info => "INFO",
            Level::Debug | Level::Trace => "DEBUG",
        };
        let message = for_wsgi(&record.args().to_string(), sinks.threads);
        let line = format!(
            "[{}] [{}] [{level}] {message}\n",
            timestamp(),
            std::process::id()
        );
        sinks.error.write_line(&line);
    }

    fn flush(&self) {
        let _ = io::stdout().flush();
        let _ = io::stderr().flush();
    }
}

/// The crate's fix for a self-call, written for a Rust handler.
const RUST_FIX: &str = "Fix: call the handler through the `Loopback`";

/// The crate's line for a job past its deadline.
const PAST_DEADLINE: &str = "past its deadline";

/// A crate message, with the WSGI reading of the two that are written for Rust handlers.
pub fn for_wsgi(message: &str, threads: usize) -> String {
    if message.contains("self-call") || message.contains("spare thread(s)") {
        if let Some(at) = message.find(RUST_FIX) {
            return format!(
                "{}Fix: do not wait in a view for a request to this same server: call the code \
                 behind that route directly (a shared function), use the app's test client \
                 (`app.test_client()`), or make the call asynchronous (a queue, a background \
                 job). Until then each such call holds a spare thread while it waits (as many as \
                 --threads = {threads}).",
                &message[..at]
            );
        }
    }
    if message.contains(PAST_DEADLINE) && message.contains("retired") {
        return format!(
            "{message} The client was answered 504 (--timeout). A Python thread cannot be killed: \
             this one is left to finish its request, and what it returns is dropped."
        );
    }
    message.to_string()
}

/// `2026-01-04 15:00:00 +0000`, UTC (no time-zone database needed).
fn timestamp() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} +0000",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Howard Hinnant's `civil_from_days`: days since 1970-01-01 to (year, month, day).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}
