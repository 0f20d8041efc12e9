//! [`Settings`]: what the environment says about a server, in one vocabulary for thread mode
//! (`http::ServerBuilder::with_env`) and process mode (`prefork::SupervisorBuilder::with_env`).
//! Standard library only: parsing, validation and the table `print_config` prints.

use std::fmt;
use std::time::Duration;

use crate::error::BuildError;

/// Every variable [`Settings`] reads, in the order `print_config` shows the settings.
pub const VARIABLES: &[&str] = &[
    "PREFORK_BIND",
    "PORT",
    "WEB_CONCURRENCY",
    "PREFORK_THREADS",
    "PREFORK_TIMEOUT",
    "PREFORK_GRACEFUL_TIMEOUT",
    "PREFORK_KEEP_ALIVE",
    "PREFORK_MAX_REQUESTS",
    "PREFORK_MAX_REQUESTS_JITTER",
    "PREFORK_FORWARDED_ALLOW_IPS",
    "PREFORK_ACCESS_LOG",
    "PREFORK_ERROR_LOG",
    "PREFORK_LOG_LEVEL",
    "PREFORK_USER",
    "PREFORK_GROUP",
    "PREFORK_MAX_WORKER_MEMORY",
    "PREFORK_MAX_WORKER_AGE",
    "PREFORK_CERTFILE",
    "PREFORK_KEYFILE",
];

/// The TLS files' variables (feature `tls`; refused without it).
pub const TLS_VARIABLES: &[&str] = &["PREFORK_CERTFILE", "PREFORK_KEYFILE"];

/// The variables only process mode uses (the worker processes'), refused in thread mode.
pub const PROCESS_MODE_VARIABLES: &[&str] = &[
    "PREFORK_USER",
    "PREFORK_GROUP",
    "PREFORK_MAX_WORKER_MEMORY",
    "PREFORK_MAX_WORKER_AGE",
];

/// The most processes or threads a variable may ask for (the Pool's own maximum of threads).
const MAX_COUNT: usize = 4096;
/// The longest duration a variable may give: one day.
const DAY: Duration = Duration::from_secs(86_400);
const DURATION_TEXT: &str = "seconds (30, 0.5) or a number with a unit (500ms, 30s, 5m, 1h)";

/// Where a socket is to be bound: `HOST:PORT` (resolved when the builder binds) or `unix:PATH`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BindAddr {
    /// `HOST:PORT`, `[V6]:PORT`: an address or a name to resolve.
    Tcp(String),
    /// `unix:PATH`: a Unix socket, made with mode `0o666` (any local user may connect, as with
    /// gunicorn's default umask of 0; restrict with the directory's permissions).
    Unix(std::path::PathBuf),
}

impl fmt::Display for BindAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BindAddr::Tcp(a) => f.write_str(a),
            BindAddr::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

/// The mode of a Unix socket bound from `PREFORK_BIND`.
#[cfg_attr(not(feature = "http"), allow(dead_code))]
pub(crate) const UNIX_MODE: u32 = 0o666;

/// Where an effective setting came from, as `print_config` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The crate's default.
    Default,
    /// The environment variable it names.
    Env(&'static str),
    /// A builder call in the program.
    Code,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Default => f.write_str("default"),
            Source::Env(var) => write!(f, "environment {var}"),
            Source::Code => f.write_str("code"),
        }
    }
}

/// A value and the variable it was read from.
pub(crate) type FromVar<T> = Option<(T, &'static str)>;

/// The settings the environment gives, each checked when read: a value that is not allowed is
/// kept as the first [`error`](Self::error), which the builders' `serve` / `build` / `check`
/// return before anything else (so the program refuses to start, naming the variable, the value
/// and what is allowed).
///
/// | variable | setting | allowed |
/// |---|---|---|
/// | `PREFORK_BIND` | where to listen: a comma or space separated list | `HOST:PORT`, `[V6]:PORT`, `unix:PATH` |
/// | `PORT` | listen on `0.0.0.0:$PORT` (as gunicorn) when `PREFORK_BIND` is not set | 0..=65535 (0: any free port) |
/// | `WEB_CONCURRENCY` | processes (process mode); threads in thread mode when `PREFORK_THREADS` is not set | 1..=4096 (process mode 1..=256) |
/// | `PREFORK_THREADS` | handler threads per process | 1..=4096 |
/// | `PREFORK_TIMEOUT` | a request's deadline (504 past it) | 1ms..=24h |
/// | `PREFORK_GRACEFUL_TIMEOUT` | how long a graceful stop may take | 100ms..=24h |
/// | `PREFORK_KEEP_ALIVE` | how long an idle kept-alive connection stays open | 1ms..=24h |
/// | `PREFORK_MAX_REQUESTS` | recycle a process (process mode) or a thread (thread mode) after this many requests | 0 (never)..; |
/// | `PREFORK_MAX_REQUESTS_JITTER` | plus a random 0..=this | needs `PREFORK_MAX_REQUESTS` > 0 |
/// | `PREFORK_FORWARDED_ALLOW_IPS` | proxies whose forwarding headers are believed | IPs, CIDR blocks, `*`; comma separated; empty: none |
/// | `PREFORK_ACCESS_LOG` | the access log, for the crate's log sink ([`access_log`](Self::access_log)) | `-` or a path |
/// | `PREFORK_ERROR_LOG` | the error log, for the crate's log sink ([`error_log`](Self::error_log)) | `-` or a path |
/// | `PREFORK_LOG_LEVEL` | the error log's level ([`log_level`](Self::log_level)) | `trace`, `debug`, `info`, `warning`, `error`, `critical` |
/// | `PREFORK_USER` | process mode: the user the worker processes run as, switched to after the listeners are bound (the master must run as root) | a user name or a numeric uid |
/// | `PREFORK_GROUP` | process mode: their group (default: the user's own group) | a group name or a numeric gid |
/// | `PREFORK_MAX_WORKER_MEMORY` | process mode: replace a worker process whose resident memory is over this | `0` (never), or 1M..=1T: bytes or a number with `K`, `M`, `G`, `T` (binary: `200M` is 200 MiB) |
/// | `PREFORK_MAX_WORKER_AGE` | process mode: replace a worker process this long after it started (plus a random 0..=10%) | 1s..=720h (30 days) |
/// | `PREFORK_CERTFILE` | feature `tls`: serve HTTPS with this PEM certificate (chain), gunicorn's `--certfile` | a path; needs `PREFORK_KEYFILE` too |
/// | `PREFORK_KEYFILE` | feature `tls`: its PEM private key, gunicorn's `--keyfile` | a path; needs `PREFORK_CERTFILE` too |
///
/// Durations are seconds (`30`, `0.5`) or a number with a unit (`500ms`, `30s`, `5m`, `1h`).
/// `Settings::default()` has nothing set.
///
/// ```
/// use prefork_pool::Settings;
///
/// // In a program: `Settings::from_env()`. In a test, any lookup (the environment is the
/// // whole process's, shared by the tests running at once).
/// let env = |name: &str| match name {
///     "PORT" => Some("8080".to_string()),
///     "PREFORK_THREADS" => Some("4".to_string()),
///     _ => None,
/// };
/// let settings = Settings::from_lookup(env);
/// assert!(settings.error().is_none());
/// assert_eq!(settings.bind().unwrap()[0].to_string(), "0.0.0.0:8080");
/// assert_eq!(settings.threads(), Some(4));
///
/// let bad = Settings::from_lookup(|name| (name == "PORT").then(|| "99999".to_string()));
/// assert_eq!(
///     bad.error().unwrap().to_string(),
///     r#"invalid `PORT` = "99999": a port number, 1..=65535 (0: any free port)"#
/// );
/// ```
#[derive(Debug, Clone, Default)]
pub struct Settings {
    pub(crate) bind: FromVar<Vec<BindAddr>>,
    pub(crate) processes: FromVar<usize>,
    pub(crate) threads: FromVar<usize>,
    pub(crate) timeout: FromVar<Duration>,
    pub(crate) graceful_timeout: FromVar<Duration>,
    pub(crate) keep_alive: FromVar<Duration>,
    pub(crate) max_requests: FromVar<u64>,
    pub(crate) max_requests_jitter: FromVar<u64>,
    pub(crate) forwarded_allow_ips: FromVar<Vec<String>>,
    pub(crate) access_log: FromVar<String>,
    pub(crate) error_log: FromVar<String>,
    pub(crate) log_level: FromVar<log::LevelFilter>,
    pub(crate) user: FromVar<String>,
    pub(crate) group: FromVar<String>,
    pub(crate) max_worker_memory: FromVar<u64>,
    pub(crate) max_worker_age: FromVar<Duration>,
    pub(crate) certfile: FromVar<std::path::PathBuf>,
    pub(crate) keyfile: FromVar<std::path::PathBuf>,
    error: Option<BuildError>,
}

impl Settings {
    /// The settings of this process's environment (see the table above).
    pub fn from_env() -> Settings {
        Settings::from_lookup(|name| std::env::var(name).ok())
    }

    /// The settings `get(VARIABLE)` gives: `Some(value)` for a variable that is set. For tests,
    /// and for programs that read their settings from elsewhere.
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Settings {
        let mut s = Settings::default();
        let ms = Duration::from_millis;
        s.bind = s.read(&get, "PREFORK_BIND", binds);
        if s.bind.is_none() {
            s.bind = s.read(&get, "PORT", port);
        }
        // What it counts depends on the mode: the builders say so in a refusal.
        s.processes = s.read(&get, "WEB_CONCURRENCY", |v| {
            count(v, "processes or threads")
        });
        s.threads = s.read(&get, "PREFORK_THREADS", |v| count(v, "threads per process"));
        s.timeout = s.read(&get, "PREFORK_TIMEOUT", |v| duration(v, ms(1), "1ms..=24h"));
        s.graceful_timeout = s.read(&get, "PREFORK_GRACEFUL_TIMEOUT", |v| {
            duration(v, ms(100), "100ms..=24h")
        });
        s.keep_alive = s.read(&get, "PREFORK_KEEP_ALIVE", |v| {
            duration(v, ms(1), "1ms..=24h")
        });
        s.max_requests = s.read(&get, "PREFORK_MAX_REQUESTS", |v| {
            whole(v, "requests; 0: never")
        });
        s.max_requests_jitter = s.read(&get, "PREFORK_MAX_REQUESTS_JITTER", |v| {
            whole(v, "requests")
        });
        if let (Some((j, _)), None | Some((0, _))) = (s.max_requests_jitter, s.max_requests) {
            if j > 0 {
                s.refuse(BuildError::new(
                    "PREFORK_MAX_REQUESTS_JITTER",
                    format!("\"{j}\""),
                    "a jitter needs PREFORK_MAX_REQUESTS > 0 (set it, or leave the jitter out)",
                ));
            }
        }
        s.forwarded_allow_ips = s.read(&get, "PREFORK_FORWARDED_ALLOW_IPS", allow_ips);
        s.access_log = s.read(&get, "PREFORK_ACCESS_LOG", log_file);
        s.error_log = s.read(&get, "PREFORK_ERROR_LOG", log_file);
        s.log_level = s.read(&get, "PREFORK_LOG_LEVEL", level);
        s.user = s.read(&get, "PREFORK_USER", |v| account(v, "user"));
        s.group = s.read(&get, "PREFORK_GROUP", |v| account(v, "group"));
        s.max_worker_memory = s.read(&get, "PREFORK_MAX_WORKER_MEMORY", memory);
        s.max_worker_age = s.read(&get, "PREFORK_MAX_WORKER_AGE", |v| {
            match parse_duration(v) {
                Some(d) if d >= MIN_AGE && d <= MAX_AGE => Ok(d),
                _ => Err(format!("a duration, 1s..=720h (30 days): {DURATION_TEXT}")),
            }
        });
        s.certfile = s.read(&get, "PREFORK_CERTFILE", tls_file);
        s.keyfile = s.read(&get, "PREFORK_KEYFILE", tls_file);
        s
    }

    /// `var` parsed by `parse` when it is set; a refusal (the value quoted, what is allowed) is
    /// kept if it is the first.
    fn read<T>(
        &mut self,
        get: &impl Fn(&str) -> Option<String>,
        var: &'static str,
        parse: impl Fn(&str) -> Result<T, String>,
    ) -> FromVar<T> {
        let v = get(var)?;
        match parse(&v) {
            Ok(t) => Some((t, var)),
            Err(allowed) => {
                self.refuse(BuildError::new(var, format!("{v:?}"), allowed));
                None
            }
        }
    }

    fn refuse(&mut self, e: BuildError) {
        self.error.get_or_insert(e);
    }

    /// The first value that was refused: the variable, the value and what is allowed.
    pub fn error(&self) -> Option<&BuildError> {
        self.error.as_ref()
    }

    /// `Err` with the first refused value, for `?`.
    pub fn check(&self) -> Result<(), BuildError> {
        self.error.clone().map_or(Ok(()), Err)
    }

    /// Where to listen (`PREFORK_BIND`, else `0.0.0.0:$PORT`), if set.
    pub fn bind(&self) -> Option<&[BindAddr]> {
        self.bind.as_ref().map(|(v, _)| v.as_slice())
    }

    /// `WEB_CONCURRENCY`, if set.
    pub fn processes(&self) -> Option<usize> {
        self.processes.map(|(v, _)| v)
    }

    /// `PREFORK_THREADS`, if set.
    pub fn threads(&self) -> Option<usize> {
        self.threads.map(|(v, _)| v)
    }

    /// `PREFORK_TIMEOUT`, the request deadline, if set.
    pub fn timeout(&self) -> Option<Duration> {
        self.timeout.map(|(v, _)| v)
    }

    /// `PREFORK_GRACEFUL_TIMEOUT`, if set.
    pub fn graceful_timeout(&self) -> Option<Duration> {
        self.graceful_timeout.map(|(v, _)| v)
    }

    /// `PREFORK_KEEP_ALIVE`, if set.
    pub fn keep_alive(&self) -> Option<Duration> {
        self.keep_alive.map(|(v, _)| v)
    }

    /// `PREFORK_MAX_REQUESTS`, if set.
    pub fn max_requests(&self) -> Option<u64> {
        self.max_requests.map(|(v, _)| v)
    }

    /// `PREFORK_MAX_REQUESTS_JITTER`, if set.
    pub fn max_requests_jitter(&self) -> Option<u64> {
        self.max_requests_jitter.map(|(v, _)| v)
    }

    /// `PREFORK_FORWARDED_ALLOW_IPS`, if set (empty: no proxy is believed).
    pub fn forwarded_allow_ips(&self) -> Option<&[String]> {
        self.forwarded_allow_ips.as_ref().map(|(v, _)| v.as_slice())
    }

    /// `PREFORK_ACCESS_LOG` (`-` or a path), if set.
    pub fn access_log(&self) -> Option<&str> {
        self.access_log.as_ref().map(|(v, _)| v.as_str())
    }

    /// `PREFORK_ERROR_LOG` (`-` or a path), if set.
    pub fn error_log(&self) -> Option<&str> {
        self.error_log.as_ref().map(|(v, _)| v.as_str())
    }

    /// `PREFORK_LOG_LEVEL`, if set (`warning` is `Warn`, `critical` is `Error`).
    pub fn log_level(&self) -> Option<log::LevelFilter> {
        self.log_level.map(|(v, _)| v)
    }

    /// `PREFORK_USER`, if set (a name or a numeric uid; whether it exists is checked when the
    /// supervisor is built).
    pub fn user(&self) -> Option<&str> {
        self.user.as_ref().map(|(v, _)| v.as_str())
    }

    /// `PREFORK_GROUP`, if set (a name or a numeric gid).
    pub fn group(&self) -> Option<&str> {
        self.group.as_ref().map(|(v, _)| v.as_str())
    }

    /// `PREFORK_MAX_WORKER_MEMORY` in bytes, if set (0: no bound).
    pub fn max_worker_memory(&self) -> Option<u64> {
        self.max_worker_memory.map(|(v, _)| v)
    }

    /// `PREFORK_CERTFILE`, if set (feature `tls`; whether the file is good is checked when the
    /// builder builds).
    pub fn certfile(&self) -> Option<&std::path::Path> {
        self.certfile.as_ref().map(|(p, _)| p.as_path())
    }

    /// `PREFORK_KEYFILE`, if set (feature `tls`).
    pub fn keyfile(&self) -> Option<&std::path::Path> {
        self.keyfile.as_ref().map(|(p, _)| p.as_path())
    }

    /// `PREFORK_MAX_WORKER_AGE`, if set.
    pub fn max_worker_age(&self) -> Option<Duration> {
        self.max_worker_age.map(|(v, _)| v)
    }

    /// The process-mode variables that are set ([`PROCESS_MODE_VARIABLES`]) and their values
    /// (thread mode refuses them).
    #[cfg_attr(not(feature = "http"), allow(dead_code))]
    pub(crate) fn process_mode_only(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        if let Some((v, var)) = &self.user {
            out.push((*var, v.clone()));
        }
        if let Some((v, var)) = &self.group {
            out.push((*var, v.clone()));
        }
        if let Some((v, var)) = self.max_worker_memory {
            out.push((var, show_bytes(v)));
        }
        if let Some((v, var)) = self.max_worker_age {
            out.push((var, show_duration(v)));
        }
        out
    }
}

/// The shortest `PREFORK_MAX_WORKER_AGE` / `max_worker_age`.
pub(crate) const MIN_AGE: Duration = Duration::from_secs(1);
/// The longest: 30 days.
pub(crate) const MAX_AGE: Duration = Duration::from_secs(30 * 86_400);
/// The smallest memory bound (other than 0, no bound): 1 MiB.
pub(crate) const MIN_MEMORY: u64 = 1 << 20;
/// The largest: 1 TiB.
pub(crate) const MAX_MEMORY: u64 = 1 << 40;
/// What a memory bound may be, as a refusal says.
pub(crate) const MEMORY_TEXT: &str = "0 (no bound), or 1M..=1T: bytes or a number with K, M, G or \
                                      T (binary units: 200M is 200 MiB)";

/// A user or group: a name or a numeric id (its existence is checked by the supervisor).
fn account(v: &str, what: &str) -> Result<String, String> {
    let t = v.trim();
    if t.is_empty() || t.contains(|c: char| c.is_whitespace() || c == ':' || c == '\0') {
        return Err(format!(
            "a {what} name or a numeric {}id, without spaces or `:`",
            &what[..1]
        ));
    }
    Ok(t.to_string())
}

/// A size: bytes, or a number with `K`, `M`, `G`, `T` (binary units; `B`, `iB` accepted after it).
pub(crate) fn parse_bytes(v: &str) -> Option<u64> {
    let t = v.trim();
    let t = t
        .strip_suffix("iB")
        .or_else(|| t.strip_suffix('B'))
        .unwrap_or(t);
    let (num, shift) = [('K', 10), ('M', 20), ('G', 30), ('T', 40)]
        .iter()
        .find_map(|(u, s)| {
            t.strip_suffix(*u)
                .or_else(|| t.strip_suffix(u.to_ascii_lowercase()))
                .map(|n| (n, *s))
        })
        .unwrap_or((t, 0));
    let num = num.trim();
    if num.starts_with(['+', '-']) {
        return None;
    }
    let n: f64 = num.parse().ok()?;
    let bytes = n * (1u64 << shift) as f64;
    (bytes.is_finite() && bytes >= 0.0 && bytes < u64::MAX as f64).then_some(bytes as u64)
}

fn memory(v: &str) -> Result<u64, String> {
    match parse_bytes(v) {
        Some(0) => Ok(0),
        Some(n) if (MIN_MEMORY..=MAX_MEMORY).contains(&n) => Ok(n),
        _ => Err(MEMORY_TEXT.to_string()),
    }
}

/// A size as the variable takes it: `200M`, `1536M`, `1G`, or bytes when no unit divides it.
pub(crate) fn show_bytes(n: u64) -> String {
    for (unit, shift) in [("T", 40), ("G", 30), ("M", 20), ("K", 10)] {
        if n > 0 && n % (1u64 << shift) == 0 {
            return format!("{}{unit}", n >> shift);
        }
    }
    n.to_string()
}

fn port(v: &str) -> Result<Vec<BindAddr>, String> {
    match v.trim().parse::<u16>() {
        Ok(p) => Ok(vec![BindAddr::Tcp(format!("0.0.0.0:{p}"))]),
        Err(_) => Err("a port number, 1..=65535 (0: any free port)".to_string()),
    }
}

fn binds(v: &str) -> Result<Vec<BindAddr>, String> {
    let allowed = "a comma or space separated list of HOST:PORT, [V6]:PORT or unix:PATH \
                   (port 0..=65535, 0: any free port)";
    let mut out = Vec::new();
    for item in v.split([',', ' ', '\t', '\n']).filter(|s| !s.is_empty()) {
        if let Some(path) = item.strip_prefix("unix:") {
            if path.is_empty() {
                return Err(allowed.to_string());
            }
            out.push(BindAddr::Unix(path.into()));
            continue;
        }
        let ok = item.rsplit_once(':').is_some_and(|(host, port)| {
            let host = host
                .strip_prefix('[')
                .map_or(Some(host), |h| h.strip_suffix(']'));
            host.is_some_and(|h| !h.is_empty()) && port.parse::<u16>().is_ok()
        });
        if !ok {
            return Err(allowed.to_string());
        }
        out.push(BindAddr::Tcp(item.to_string()));
    }
    if out.is_empty() {
        return Err(allowed.to_string());
    }
    Ok(out)
}

fn count(v: &str, what: &str) -> Result<usize, String> {
    match v.trim().parse::<usize>() {
        Ok(n) if (1..=MAX_COUNT).contains(&n) => Ok(n),
        _ => Err(format!("a whole number of {what}, 1..={MAX_COUNT}")),
    }
}

fn whole(v: &str, what: &str) -> Result<u64, String> {
    v.trim()
        .parse::<u64>()
        .map_err(|_| format!("a whole number of {what}"))
}

/// A duration: seconds (`30`, `0.5`) or a number with a unit (`500ms`, `30s`, `5m`, `1h`).
pub(crate) fn parse_duration(v: &str) -> Option<Duration> {
    let t = v.trim();
    let (num, scale) = [("ms", 0.001), ("s", 1.0), ("m", 60.0), ("h", 3600.0)]
        .iter()
        .find_map(|(unit, scale)| t.strip_suffix(unit).map(|n| (n, *scale)))
        .unwrap_or((t, 1.0));
    let n: f64 = num.trim().parse().ok()?;
    if !n.is_finite() || n < 0.0 || num.trim().starts_with(['+', '-']) {
        return None;
    }
    Duration::try_from_secs_f64(n * scale).ok()
}

fn duration(v: &str, lo: Duration, shown: &str) -> Result<Duration, String> {
    match parse_duration(v) {
        Some(d) if d >= lo && d <= DAY => Ok(d),
        _ => Err(format!("a duration, {shown}: {DURATION_TEXT}")),
    }
}

fn allow_ips(v: &str) -> Result<Vec<String>, String> {
    let allowed = "a comma separated list of IP addresses, CIDR blocks (10.0.0.0/8) or *";
    let items: Vec<String> = v
        .split([',', ' '])
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect();
    for item in &items {
        let (ip, prefix) = item
            .split_once('/')
            .map_or((item.as_str(), None), |(a, p)| (a, Some(p)));
        let ok = item == "*"
            || match ip.parse::<std::net::IpAddr>() {
                Ok(addr) => prefix.map_or(true, |p| {
                    p.parse::<u8>()
                        .is_ok_and(|p| p <= if addr.is_ipv4() { 32 } else { 128 })
                }),
                Err(_) => false,
            };
        if !ok {
            return Err(allowed.to_string());
        }
    }
    Ok(items)
}

/// A TLS file's path (`PREFORK_CERTFILE`, `PREFORK_KEYFILE`): read when the builder builds.
fn tls_file(v: &str) -> Result<std::path::PathBuf, String> {
    if cfg!(not(feature = "tls")) {
        return Err(
            "unset: this program was built without prefork-pool's `tls` feature; enable \
                    it (features = [\"tls\"]), or terminate TLS at a proxy (deploy/nginx)"
                .to_string(),
        );
    }
    if v.trim().is_empty() {
        return Err("the path of a PEM file".to_string());
    }
    Ok(std::path::PathBuf::from(v))
}

fn log_file(v: &str) -> Result<String, String> {
    if v.trim().is_empty() || v.contains('\0') {
        return Err("`-` (the standard stream) or a file path".to_string());
    }
    Ok(v.to_string())
}

fn level(v: &str) -> Result<log::LevelFilter, String> {
    use log::LevelFilter as L;
    Ok(match v.trim().to_ascii_lowercase().as_str() {
        "trace" => L::Trace,
        "debug" => L::Debug,
        "info" => L::Info,
        "warning" | "warn" => L::Warn,
        "error" | "critical" => L::Error,
        _ => return Err("one of trace, debug, info, warning, error, critical".to_string()),
    })
}

/// Where each setting a builder holds came from (absent: the default).
#[derive(Debug, Clone, Default)]
#[cfg_attr(not(feature = "http"), allow(dead_code))]
pub(crate) struct Sources(Vec<(&'static str, Source)>);

#[cfg_attr(not(feature = "http"), allow(dead_code))]
impl Sources {
    pub(crate) fn set(&mut self, key: &'static str, source: Source) {
        match self.0.iter_mut().find(|(k, _)| *k == key) {
            Some(slot) => slot.1 = source,
            None => self.0.push((key, source)),
        }
    }

    pub(crate) fn get(&self, key: &str) -> Source {
        self.0
            .iter()
            .find(|(k, _)| *k == key)
            .map_or(Source::Default, |(_, s)| *s)
    }
}

/// The log settings a builder carries for the crate's log sink (`PREFORK_ACCESS_LOG`,
/// `PREFORK_ERROR_LOG`, `PREFORK_LOG_LEVEL`, or set in code), with where each came from.
#[derive(Debug, Clone, Default)]
#[cfg_attr(not(feature = "http"), allow(dead_code))]
pub(crate) struct LogChoices {
    pub(crate) access_log: Option<(String, Source)>,
    pub(crate) error_log: Option<(String, Source)>,
    pub(crate) log_level: Option<(log::LevelFilter, Source)>,
}

#[cfg_attr(not(feature = "http"), allow(dead_code))]
impl LogChoices {
    /// Take what `settings` sets.
    pub(crate) fn apply(&mut self, settings: &Settings) {
        if let Some((v, var)) = &settings.access_log {
            self.access_log = Some((v.clone(), Source::Env(var)));
        }
        if let Some((v, var)) = &settings.error_log {
            self.error_log = Some((v.clone(), Source::Env(var)));
        }
        if let Some((v, var)) = settings.log_level {
            self.log_level = Some((v, Source::Env(var)));
        }
    }

    /// Sets the crate's log sink (`log_sink`) to these choices (what is not chosen stays).
    #[cfg(feature = "http")]
    pub(crate) fn to_sink(&self, sink: &mut crate::log_sink::LogSettings) {
        use crate::log_sink::LogFile;
        if let Some((v, _)) = &self.access_log {
            sink.access = Some(LogFile::parse(v, LogFile::Stdout));
        }
        if let Some((v, _)) = &self.error_log {
            sink.error = Some(LogFile::parse(v, LogFile::Stderr));
        }
        if let Some((v, _)) = self.log_level {
            sink.level = Some(v);
        }
    }

    /// The three rows of `print_config`.
    pub(crate) fn rows(&self) -> [(&'static str, String, Source); 3] {
        let file = |f: &Option<(String, Source)>| {
            f.as_ref().map_or(
                (
                    "not set: through the `log` crate".to_string(),
                    Source::Default,
                ),
                |(v, s)| (v.clone(), *s),
            )
        };
        let (access, a) = file(&self.access_log);
        let (error, e) = file(&self.error_log);
        let (level, l) = self.log_level.map_or(
            ("not set: the logger's own".to_string(), Source::Default),
            |(v, s)| (v.to_string().to_lowercase(), s),
        );
        [
            ("access_log", access, a),
            ("error_log", error, e),
            ("log_level", level, l),
        ]
    }
}

/// The rows `print_config` prints: `name = value  (source)`, aligned.
#[cfg_attr(not(feature = "http"), allow(dead_code))]
pub(crate) fn render(rows: &[(&str, String, Source)]) -> String {
    let name_w = rows.iter().map(|r| r.0.len()).max().unwrap_or(0);
    let value_w = rows.iter().map(|r| r.1.len()).max().unwrap_or(0);
    let mut out = String::new();
    for (name, value, source) in rows {
        out.push_str(&format!(
            "{name:<name_w$} = {value:<value_w$}  ({source})\n"
        ));
    }
    out
}

/// A duration as the variables take it: `30s`, `500ms`, `1.5s`.
#[cfg_attr(not(feature = "http"), allow(dead_code))]
pub(crate) fn show_duration(d: Duration) -> String {
    if d.subsec_nanos() == 0 {
        format!("{}s", d.as_secs())
    } else if d < Duration::from_secs(1) && d.subsec_nanos() % 1_000_000 == 0 {
        format!("{}ms", d.as_millis())
    } else {
        format!("{}s", d.as_secs_f64())
    }
}

/// The machine's cores (available parallelism), at least 1.
#[cfg_attr(not(feature = "http"), allow(dead_code))]
pub(crate) fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

#[cfg(test)]
#[path = "settings_tests.rs"]
mod tests;

/// What the settings tests of both modes share.
#[cfg(all(test, feature = "http"))]
#[path = "settings_testing.rs"]
pub(crate) mod testing;
