//! The master process: the builder, and the loop that forks, watches, reaps and replaces workers.

use std::collections::VecDeque;
use std::fmt;
use std::io::{self, Write};
use std::net::{SocketAddr, TcpListener, ToSocketAddrs};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use libc::{c_int, pid_t};

use super::heartbeat::{now_ms, Table, BOOT_FAILED, READY, RETIRE};
use super::listeners::{self, Bind, Listener};
use super::notify::notify_or_log;
use super::rlimit;
use super::signals::{self, SignalPipe};
use super::upgrade::{self, Program};
use super::worker::{child_main, ChildSetup, Worker};
use crate::BuildError;

/// Exit status of a master that stopped as asked.
pub const EXIT_OK: i32 = 0;
/// Exit status of a master that could not start (bind, configuration) or halted because workers
/// kept failing (restart intensity).
pub const EXIT_ERROR: i32 = 1;
/// Exit status of a master halted by a boot error: a worker exited before it was ready, or was not
/// ready within `boot_timeout` (gunicorn's `WORKER_BOOT_ERROR`).
pub const EXIT_BOOT_ERROR: i32 = 3;

/// Heartbeat slots in the shared table: the most worker processes that can exist at once (old and
/// new ones during a reload included).
const SLOTS: usize = 1024;
/// The most workers the builder and SIGTTIN accept.
const MAX_WORKERS: usize = 256;
/// The longest wait of the master loop (gunicorn's is 1 s too).
const MAX_TICK: Duration = Duration::from_secs(1);
/// How long a fast stop (SIGINT, SIGQUIT) waits for workers before SIGKILL, at most.
const FAST_STOP: Duration = Duration::from_secs(5);

/// Why the supervisor could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// A configuration value was refused.
    #[error(transparent)]
    Config(#[from] BuildError),
    /// A listener could not be bound.
    #[error(
        "cannot listen on {address}: {source}; stop the process that holds it (`ss -ltnp`), or \
         choose another address"
    )]
    Bind {
        /// The address that was asked for.
        address: String,
        /// The operating system's error.
        source: io::Error,
    },
    /// The sockets passed by systemd (`LISTEN_FDS`) could not be used.
    #[error("cannot use the sockets passed by systemd (LISTEN_FDS): {0}")]
    Systemd(io::Error),
    /// No listener was configured and none was inherited.
    #[error(
        "nothing to listen on: call `bind`, `bind_unix` or `listener` on the builder, or start the \
         program through a systemd .socket unit (LISTEN_FDS)"
    )]
    NoListener,
    /// The app could not be built ([`Builder::check`]).
    #[error("the app failed to build: {0}; fix it before serving")]
    App(String),
}

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

type Hook0 = Box<dyn FnMut()>;
type ReadyHook = Box<dyn FnMut(&[Listener])>;
type ExitHook = Box<dyn FnMut(&WorkerExit)>;

#[derive(Default)]
struct Hooks {
    pre_fork: Option<Box<dyn FnMut(u64)>>,
    post_fork: Option<Box<dyn FnMut(u64)>>,
    when_ready: Option<ReadyHook>,
    on_reload: Option<Hook0>,
    on_reopen_logs: Option<Hook0>,
    worker_exit: Option<ExitHook>,
    on_exit: Option<Box<dyn FnMut(i32)>>,
}

#[derive(Debug, Clone)]
struct Config {
    workers: usize,
    backlog: i32,
    heartbeat_timeout: Duration,
    boot_timeout: Duration,
    graceful_timeout: Duration,
    request_grace: Duration,
    max_requests: u64,
    max_requests_jitter: u64,
    restart_max: u32,
    restart_period: Duration,
    pidfile: Option<PathBuf>,
    preload: bool,
    systemd: bool,
}

/// Configures a [`Supervisor`]. Made by [`Supervisor::builder`].
pub struct Builder {
    cfg: Config,
    workers: Option<usize>,
    binds: Vec<Bind>,
    bind_errors: Vec<StartError>,
    hooks: Hooks,
}

impl fmt::Debug for Builder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Builder")
            .field("config", &self.cfg)
            .field("binds", &self.binds)
            .finish_non_exhaustive()
    }
}

fn default_workers() -> Result<usize, BuildError> {
    if let Some(n) = crate::util::web_concurrency_env("worker processes", MAX_WORKERS)? {
        return Ok(n);
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    Ok((2 * cores + 1).min(MAX_WORKERS))
}

impl Builder {
    fn new() -> Builder {
        Builder {
            cfg: Config {
                workers: 0,
                backlog: 2048,
                heartbeat_timeout: Duration::from_secs(30),
                boot_timeout: Duration::from_secs(60),
                graceful_timeout: Duration::from_secs(30),
                request_grace: Duration::from_secs(10),
                max_requests: 0,
                max_requests_jitter: 0,
                restart_max: 10,
                restart_period: Duration::from_secs(60),
                pidfile: None,
                preload: false,
                systemd: true,
            },
            workers: None,
            binds: Vec::new(),
            bind_errors: Vec::new(),
            hooks: Hooks::default(),
        }
    }

    /// Listens on a TCP address (`"127.0.0.1:8000"`, `"[::]:80"`; a name is resolved now, every
    /// address it resolves to is bound). Port 0 picks a free port: read it from
    /// [`Supervisor::listeners`] after [`build`](Self::build).
    pub fn bind(mut self, addr: impl ToSocketAddrs + fmt::Display) -> Self {
        match addr.to_socket_addrs() {
            Ok(addrs) => self.binds.extend(addrs.map(Bind::Tcp)),
            Err(source) => self.bind_errors.push(StartError::Bind {
                address: addr.to_string(),
                source,
            }),
        }
        self
    }

    /// Listens on a Unix stream socket at `path` (a stale socket file there is removed first).
    pub fn bind_unix(mut self, path: impl AsRef<Path>) -> Self {
        self.binds.push(Bind::Unix(path.as_ref().to_path_buf()));
        self
    }

    /// Serves on a TCP listener already bound by the caller.
    pub fn listener(mut self, listener: TcpListener) -> Self {
        self.binds.push(Bind::Ready(Listener::Tcp(listener)));
        self
    }

    /// Serves on a Unix listener already bound by the caller.
    pub fn unix_listener(mut self, listener: UnixListener) -> Self {
        self.binds.push(Bind::Ready(Listener::Unix(listener)));
        self
    }

    /// Whether to take the sockets systemd passes (`LISTEN_FDS`, when `LISTEN_PID` is this process)
    /// instead of the configured ones. Default: true. The variables are unset either way.
    pub fn systemd_sockets(mut self, yes: bool) -> Self {
        self.cfg.systemd = yes;
        self
    }

    /// The number of worker processes. Default: `WEB_CONCURRENCY`, else 2 × cores + 1.
    pub fn workers(mut self, n: usize) -> Self {
        self.workers = Some(n);
        self
    }

    /// The listen backlog of the sockets this supervisor binds. Default: 2048 (as gunicorn).
    pub fn backlog(mut self, n: i32) -> Self {
        self.cfg.backlog = n;
        self
    }

    /// A worker whose heartbeat stops for this long is killed (SIGABRT, then SIGKILL) and replaced.
    /// Default: 30 s.
    pub fn heartbeat_timeout(mut self, d: Duration) -> Self {
        self.cfg.heartbeat_timeout = d;
        self
    }

    /// A worker not ready this long after its fork is a boot error: the master halts with exit
    /// status 3. Separate from the request and heartbeat timeouts (gunicorn #2196). Default: 60 s.
    pub fn boot_timeout(mut self, d: Duration) -> Self {
        self.cfg.boot_timeout = d;
        self
    }

    /// How long a worker told to stop gracefully (SIGTERM, HUP, retirement, scale down) may take to
    /// finish its requests before SIGKILL. Default: 30 s.
    pub fn graceful_timeout(mut self, d: Duration) -> Self {
        self.cfg.graceful_timeout = d;
        self
    }

    /// A worker whose oldest request (as reported with
    /// [`Heartbeat::request_started`](super::Heartbeat::request_started)) is still running this long
    /// after its deadline is killed and replaced: the in-process watchdog could not recover it.
    /// Default: 10 s.
    pub fn request_grace(mut self, d: Duration) -> Self {
        self.cfg.request_grace = d;
        self
    }

    /// A worker asks for its replacement after this many requests (0: never, the default). Each
    /// worker adds a random jitter in `0..=jitter`, so they do not all retire at once.
    pub fn max_requests(mut self, n: u64, jitter: u64) -> Self {
        self.cfg.max_requests = n;
        self.cfg.max_requests_jitter = jitter;
        self
    }

    /// Restart intensity, as an OTP supervisor's: more than `max` restarts of failed workers within
    /// `period` halts the master with an error naming the last failure. Default: 10 in 60 s.
    pub fn restart_intensity(mut self, max: u32, period: Duration) -> Self {
        self.cfg.restart_max = max;
        self.cfg.restart_period = period;
        self
    }

    /// Writes the master's pid to `path` while it runs (removed at exit).
    pub fn pidfile(mut self, path: impl AsRef<Path>) -> Self {
        self.cfg.pidfile = Some(path.as_ref().to_path_buf());
        self
    }

    /// Builds the app once in the master, before the first fork, instead of once in each worker.
    /// Memory is shared copy-on-write and a boot error shows before any fork; but anything the app
    /// opened (connections, threads!) is shared by every worker, and a reload (HUP) does not rebuild
    /// it. Default: false.
    pub fn preload(mut self, yes: bool) -> Self {
        self.cfg.preload = yes;
        self
    }

    /// Runs in the master before each fork, with the new worker's number.
    pub fn pre_fork(mut self, f: impl FnMut(u64) + 'static) -> Self {
        self.hooks.pre_fork = Some(Box::new(f));
        self
    }

    /// Runs in each worker right after the fork, before its app is built.
    pub fn post_fork(mut self, f: impl FnMut(u64) + 'static) -> Self {
        self.hooks.post_fork = Some(Box::new(f));
        self
    }

    /// Runs in the master once every worker of the first generation is ready (and after each
    /// reload), with the listeners.
    pub fn when_ready(mut self, f: impl FnMut(&[Listener]) + 'static) -> Self {
        self.hooks.when_ready = Some(Box::new(f));
        self
    }

    /// Runs in the master when it receives SIGHUP, before it starts the new workers.
    pub fn on_reload(mut self, f: impl FnMut() + 'static) -> Self {
        self.hooks.on_reload = Some(Box::new(f));
        self
    }

    /// Runs in the master on SIGUSR1: reopen your log files here (after logrotate moved them).
    pub fn on_reopen_logs(mut self, f: impl FnMut() + 'static) -> Self {
        self.hooks.on_reopen_logs = Some(Box::new(f));
        self
    }

    /// Runs in the master after each worker exit is reaped.
    pub fn worker_exit(mut self, f: impl FnMut(&WorkerExit) + 'static) -> Self {
        self.hooks.worker_exit = Some(Box::new(f));
        self
    }

    /// Runs in the master just before [`Supervisor::run`] returns, with its exit status.
    pub fn on_exit(mut self, f: impl FnMut(i32) + 'static) -> Self {
        self.hooks.on_exit = Some(Box::new(f));
        self
    }

    fn validate(&mut self) -> Result<(), BuildError> {
        let workers = match self.workers {
            Some(n) => n,
            None => default_workers()?,
        };
        if workers == 0 || workers > MAX_WORKERS {
            return Err(BuildError::new(
                "workers",
                workers,
                format!("1..={MAX_WORKERS} worker processes"),
            ));
        }
        self.cfg.workers = workers;
        if !(1..=65_535).contains(&self.cfg.backlog) {
            return Err(BuildError::new(
                "backlog",
                self.cfg.backlog,
                "1..=65535 pending connections",
            ));
        }
        let day = Duration::from_secs(86_400);
        for (field, d) in [
            ("heartbeat_timeout", self.cfg.heartbeat_timeout),
            ("boot_timeout", self.cfg.boot_timeout),
            ("graceful_timeout", self.cfg.graceful_timeout),
            ("restart_intensity period", self.cfg.restart_period),
        ] {
            if d < Duration::from_millis(100) || d > day {
                return Err(BuildError::new(
                    field,
                    format!("{d:?}"),
                    "a duration from 100ms to 1 day",
                ));
            }
        }
        if self.cfg.request_grace > day {
            return Err(BuildError::new(
                "request_grace",
                format!("{:?}", self.cfg.request_grace),
                "a duration up to 1 day",
            ));
        }
        if self.cfg.restart_max == 0 {
            return Err(BuildError::new(
                "restart_intensity max",
                0,
                "at least 1 restart (a supervisor that may never restart a worker halts at the first \
                 crash)",
            ));
        }
        Ok(())
    }

    /// Validates the configuration and builds the app once in this process (then drops it),
    /// without binding, forking or serving: gunicorn's `--check-config`.
    pub fn check<A, W, E>(mut self, mut app: A) -> Result<(), StartError>
    where
        A: FnMut() -> Result<W, E>,
        W: Worker,
        E: fmt::Display,
    {
        self.validate()?;
        if let Some(e) = self.bind_errors.pop() {
            return Err(e);
        }
        match app() {
            Ok(w) => {
                drop(w);
                Ok(())
            }
            Err(e) => Err(StartError::App(e.to_string())),
        }
    }

    /// Validates the configuration and binds the listeners (or takes systemd's).
    pub fn build(mut self) -> Result<Supervisor, StartError> {
        self.validate()?;
        if let Some(e) = self.bind_errors.pop() {
            return Err(e);
        }
        let inherited = if self.cfg.systemd {
            listeners::from_systemd().map_err(StartError::Systemd)?
        } else {
            None
        };
        let listeners = match inherited {
            Some(l) if !l.is_empty() => {
                log::info!(
                    "using {} socket(s) passed by systemd (LISTEN_FDS); the configured addresses are \
                     not bound",
                    l.len()
                );
                l
            }
            _ => {
                let mut out = Vec::new();
                for bind in self.binds.drain(..) {
                    let l = match bind {
                        Bind::Tcp(addr) => listeners::bind_tcp(addr, self.cfg.backlog)
                            .map(Listener::Tcp)
                            .map_err(|source| StartError::Bind {
                                address: addr.to_string(),
                                source,
                            })?,
                        Bind::Unix(path) => listeners::bind_unix(&path, self.cfg.backlog)
                            .map(Listener::Unix)
                            .map_err(|source| StartError::Bind {
                                address: format!("unix:{}", path.display()),
                                source,
                            })?,
                        Bind::Ready(l) => {
                            let address = l.address();
                            listeners::adopt(l)
                                .map_err(|source| StartError::Bind { address, source })?
                        }
                    };
                    out.push(l);
                }
                out
            }
        };
        if listeners.is_empty() {
            return Err(StartError::NoListener);
        }
        Ok(Supervisor {
            cfg: self.cfg,
            listeners,
            hooks: self.hooks,
        })
    }

    /// [`build`](Self::build), then [`Supervisor::run`]; a start error is written to stderr (and the
    /// log) and gives [`EXIT_ERROR`].
    pub fn run<A, W, E>(self, app: A) -> i32
    where
        A: FnMut() -> Result<W, E>,
        W: Worker,
        E: fmt::Display,
    {
        match self.build() {
            Ok(s) => s.run(app),
            Err(e) => {
                fatal(&format!("cannot start: {e}"));
                EXIT_ERROR
            }
        }
    }
}

/// Logs an error that stops the master; on stderr too when no logger is installed.
pub(crate) fn fatal(msg: &str) {
    log::error!("{msg}");
    if log::max_level() == log::LevelFilter::Off {
        let _ = writeln!(io::stderr(), "prefork: error: {msg}");
    }
}

/// The master process of a pre-fork server: see the [module documentation](super).
pub struct Supervisor {
    cfg: Config,
    listeners: Vec<Listener>,
    hooks: Hooks,
}

impl fmt::Debug for Supervisor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Supervisor")
            .field("config", &self.cfg)
            .field("listeners", &self.listeners)
            .finish_non_exhaustive()
    }
}

/// Why the master signalled a worker.
#[derive(Debug, Clone)]
enum Cause {
    Stop,
    Reload,
    Retire,
    ScaleDown,
    Heartbeat { silent: Duration },
    Deadline { line: String, late: Duration },
    GracefulTimeout,
    BootTimeout,
}

impl Cause {
    /// Whether a worker that ends for this cause was asked to (not a failure to count).
    fn is_planned(&self) -> bool {
        matches!(
            self,
            Cause::Stop | Cause::Reload | Cause::Retire | Cause::ScaleDown | Cause::GracefulTimeout
        )
    }
}

impl Cause {
    /// What exactly went wrong, for a timeout: `no heartbeat for 2.1 s (heartbeat_timeout 2.0 s)`.
    fn detail(&self, cfg: &Config) -> String {
        match self {
            Cause::Heartbeat { silent } => format!(
                "no heartbeat for {} (heartbeat_timeout {})",
                secs(*silent),
                secs(cfg.heartbeat_timeout)
            ),
            Cause::Deadline { line, late } => format!(
                "request `{line}` still running {} past its deadline (request_grace {})",
                secs(*late),
                secs(cfg.request_grace)
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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    /// Counted among the `workers`.
    Serving,
    /// Still serving, but replaced: told to stop once enough new workers are ready.
    Replaced,
    /// Told to stop (SIGTERM or SIGQUIT); no longer counted.
    Stopping,
}

#[derive(Debug)]
struct Child {
    pid: pid_t,
    number: u64,
    slot: usize,
    started: Instant,
    role: Role,
    replaced_for: Option<Cause>,
    ready: bool,
    cause: Option<Cause>,
    sent: Vec<c_int>,
    stop_sent: Option<Instant>,
    abort_sent: Option<Instant>,
}

#[derive(Debug)]
struct Stop {
    fast: bool,
    until: Instant,
    status: i32,
    killed: bool,
}

struct Master<A, W> {
    cfg: Config,
    listeners: Vec<Listener>,
    hooks: Hooks,
    app: A,
    preloaded: Option<W>,
    table: Table,
    signals: SignalPipe,
    pid: pid_t,
    target: usize,
    children: Vec<Child>,
    next_number: u64,
    restarts: VecDeque<Instant>,
    stop: Option<Stop>,
    announced_ready: bool,
    reloading: bool,
    last_status: String,
    tick: Duration,
    seed: u64,
    program: Option<Program>,
    upgrade_pid: Option<pid_t>,
    upgrade_from: Option<pid_t>,
}

fn describe_status(status: c_int) -> (Option<i32>, Option<i32>) {
    if libc::WIFEXITED(status) {
        (Some(libc::WEXITSTATUS(status)), None)
    } else if libc::WIFSIGNALED(status) {
        (None, Some(libc::WTERMSIG(status)))
    } else {
        (None, None)
    }
}

fn secs(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}

/// fork(2) with every signal blocked across it (restored in the parent; the child unblocks them once
/// it has replaced the master's handlers: until then a signal sent to it would run the master's
/// handlers and write to the master's self-pipe).
fn fork_with_signals_blocked() -> pid_t {
    // SAFETY: `std::mem::zeroed` is a valid bit pattern for the plain C struct sigset_t, which
    // sigfillset(3) then fills; sigprocmask(2) blocks every blockable signal and saves the old mask
    // in a local.
    let old_mask = unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::sigprocmask(libc::SIG_BLOCK, &all, &mut old);
        old
    };
    // SAFETY: fork(2) from a single-threaded process (checked when the master starts; it starts no
    // thread), so the child gets every lock (allocator, stdio, log) in a consistent state. Callers
    // make the child end with _exit(2) or exec.
    let pid = unsafe { libc::fork() };
    if pid != 0 {
        // SAFETY: sigprocmask(2) restores the master's mask saved above (a valid local).
        unsafe { libc::sigprocmask(libc::SIG_SETMASK, &old_mask, std::ptr::null_mut()) };
    }
    pid
}

/// How many threads this process has (Linux), to refuse forking from a multi-threaded master.
fn thread_count() -> Option<usize> {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        std::fs::read_dir("/proc/self/task").ok().map(|d| d.count())
    }
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    {
        None
    }
}

impl Supervisor {
    /// Starts configuring a supervisor.
    pub fn builder() -> Builder {
        Builder::new()
    }

    /// The listeners the workers will serve (bound, or inherited from systemd): read the port
    /// chosen for port 0 here.
    pub fn listeners(&self) -> &[Listener] {
        &self.listeners
    }

    /// The address of the first TCP listener (the port the system chose for port 0, for example).
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.listeners
            .iter()
            .find_map(|l| l.tcp().and_then(|t| t.local_addr().ok()))
    }

    /// How long workers told to stop gracefully may take (see [`Builder::graceful_timeout`]).
    pub fn graceful_timeout(&self) -> Duration {
        self.cfg.graceful_timeout
    }

    /// The number of worker processes it starts with.
    pub fn workers(&self) -> usize {
        self.cfg.workers
    }

    /// Runs the master until it is stopped; returns the exit status the process should exit with:
    /// [`EXIT_OK`] after SIGTERM/SIGINT/SIGQUIT, [`EXIT_BOOT_ERROR`] after a boot error, [`EXIT_ERROR`]
    /// when the restart intensity is exceeded or the master cannot run.
    ///
    /// `app` builds the worker: in each worker process right after the fork (so a connection pool, a
    /// thread, a random seed is made per process), or once in the master with
    /// [`Builder::preload`]. An `Err` is a boot error.
    ///
    /// Call it from a process with a single thread (no runtime, pool or logger thread started yet):
    /// a fork copies only the calling thread, and a lock another thread held is never released in
    /// the child. `run` refuses to start otherwise (on Linux, where it can count threads).
    pub fn run<A, W, E>(self, mut app: A) -> i32
    where
        A: FnMut() -> Result<W, E>,
        W: Worker,
        E: fmt::Display,
    {
        let mut hooks = self.hooks;
        let status = (|| {
            if let Some(n) = thread_count().filter(|&n| n > 1) {
                fatal(&format!(
                    "the master process has {n} threads: a fork copies only the calling thread, so a \
                     lock held by another thread would stay locked for ever in every worker. Call \
                     Supervisor::run before starting any thread (runtime, pool, logger thread); start \
                     them in the worker instead"
                ));
                return EXIT_ERROR;
            }
            match rlimit::raise_nofile() {
                Ok((old, new)) if new > old => {
                    log::info!("raised the open files limit (RLIMIT_NOFILE) from {old} to {new}")
                }
                Ok(_) => {}
                Err(e) => log::warn!("could not raise RLIMIT_NOFILE to its hard limit: {e}"),
            }
            let table = match Table::new(SLOTS) {
                Ok(t) => t,
                Err(e) => {
                    fatal(&format!("cannot map the shared heartbeat table: {e}"));
                    return EXIT_ERROR;
                }
            };
            let signals = match SignalPipe::install() {
                Ok(s) => s,
                Err(e) => {
                    fatal(&format!("cannot install the signal handlers: {e}"));
                    return EXIT_ERROR;
                }
            };
            let preloaded = if self.cfg.preload {
                match app() {
                    Ok(w) => Some(w),
                    Err(e) => {
                        fatal(&format!(
                            "boot error: the app failed to build (preload): {e}; fix it and start \
                             again"
                        ));
                        return EXIT_BOOT_ERROR;
                    }
                }
            } else {
                None
            };
            if let Some(n) = thread_count().filter(|&n| n > 1) {
                fatal(&format!(
                    "the preloaded app started {} thread(s): a fork copies only the calling thread, \
                     so their locks would stay locked for ever in every worker. Start threads in \
                     the worker (inside the Worker's `run`), or turn `preload` off",
                    n - 1
                ));
                return EXIT_BOOT_ERROR;
            }
            // SAFETY: getpid(2) has no arguments and cannot fail.
            let pid = unsafe { libc::getpid() };
            if let Some(path) = &self.cfg.pidfile {
                if let Err(e) = std::fs::write(path, format!("{pid}\n")) {
                    fatal(&format!(
                        "cannot write the pidfile {}: {e}; fix its directory's permissions or \
                         choose another path",
                        path.display()
                    ));
                    return EXIT_ERROR;
                }
            }
            let tick = [
                MAX_TICK,
                self.cfg.heartbeat_timeout / 4,
                self.cfg.boot_timeout / 4,
                self.cfg.graceful_timeout / 4,
                (self.cfg.request_grace / 4).max(Duration::from_millis(20)),
            ]
            .into_iter()
            .min()
            .unwrap_or(MAX_TICK)
            .max(Duration::from_millis(20));
            let mut master = Master {
                target: self.cfg.workers,
                cfg: self.cfg.clone(),
                listeners: self.listeners,
                hooks: std::mem::take(&mut hooks),
                app,
                preloaded,
                table,
                signals,
                pid,
                children: Vec::new(),
                next_number: 1,
                restarts: VecDeque::new(),
                stop: None,
                announced_ready: false,
                reloading: false,
                last_status: String::new(),
                tick,
                seed: now_ms() ^ ((pid as u64) << 32),
                program: Program::current()
                    .map_err(|e| log::warn!("binary upgrade (SIGUSR2) unavailable: {e}"))
                    .ok(),
                upgrade_pid: None,
                upgrade_from: upgrade::take_upgrade_from(),
            };
            let status = master.run();
            hooks = std::mem::take(&mut master.hooks);
            if let Some(path) = &self.cfg.pidfile {
                if std::fs::read_to_string(path).is_ok_and(|s| s.trim() == pid.to_string()) {
                    let _ = std::fs::remove_file(path);
                }
            }
            status
        })();
        if let Some(f) = hooks.on_exit.as_mut() {
            f(status);
        }
        status
    }
}

impl<A, W, E> Master<A, W>
where
    A: FnMut() -> Result<W, E>,
    W: Worker,
    E: fmt::Display,
{
    fn run(&mut self) -> i32 {
        let addrs: Vec<String> = self.listeners.iter().map(|l| l.address()).collect();
        log::info!(
            "master (pid {}) listening on {}; starting {} worker(s)",
            self.pid,
            addrs.join(", "),
            self.target
        );
        // The first pass starts the workers at once; then each pass waits for a signal, a worker's
        // wake-up or the tick.
        let mut wait = Duration::ZERO;
        loop {
            let bytes = self.signals.wait(wait);
            wait = self.tick;
            for b in bytes {
                if b != signals::WAKE {
                    self.on_signal(b as c_int);
                }
            }
            self.reap();
            if let Some(status) = self.check_stop() {
                return status;
            }
            if self.stop.is_none() {
                self.watch();
            }
            if self.stop.is_none() {
                self.maintain();
            }
        }
    }

    fn on_signal(&mut self, sig: c_int) {
        match sig {
            libc::SIGCHLD => {}
            libc::SIGTERM => match &self.stop {
                Some(s) if !s.fast => {
                    log::info!("second SIGTERM during a graceful stop: stopping fast");
                    self.begin_stop(true, EXIT_OK);
                }
                Some(_) => {}
                None => {
                    log::info!(
                        "SIGTERM{}: graceful stop (workers finish their requests within {})",
                        if self.upgrade_pid.is_some() {
                            " (the new master took over)"
                        } else {
                            ""
                        },
                        secs(self.cfg.graceful_timeout)
                    );
                    self.begin_stop(false, EXIT_OK);
                }
            },
            libc::SIGINT | libc::SIGQUIT => {
                if !self.stop.as_ref().is_some_and(|s| s.fast) {
                    log::info!("{}: fast stop", signals::name(sig));
                    self.begin_stop(true, EXIT_OK);
                }
            }
            _ if self.stop.is_some() => {
                log::info!("{} ignored: the master is stopping", signals::name(sig));
            }
            libc::SIGHUP => self.reload(),
            libc::SIGTTIN => {
                if self.target >= MAX_WORKERS {
                    log::warn!("SIGTTIN ignored: already {MAX_WORKERS} workers, the most allowed");
                } else {
                    self.target += 1;
                    log::info!("SIGTTIN: {} workers now", self.target);
                }
            }
            libc::SIGTTOU => {
                if self.target <= 1 {
                    log::info!("SIGTTOU ignored: 1 worker is the fewest");
                } else {
                    self.target -= 1;
                    log::info!("SIGTTOU: {} workers now", self.target);
                }
            }
            libc::SIGUSR1 => {
                log::info!("SIGUSR1: reopening log files");
                if let Some(f) = self.hooks.on_reopen_logs.as_mut() {
                    f();
                }
            }
            libc::SIGUSR2 => self.upgrade(),
            libc::SIGWINCH => log::debug!("SIGWINCH ignored"),
            other => log::debug!("{} ignored", signals::name(other)),
        }
    }

    fn upgrade(&mut self) {
        if let Some(pid) = self.upgrade_pid {
            log::warn!("SIGUSR2 ignored: an upgrade is under way (new master pid {pid})");
            return;
        }
        let Some(program) = self.program.clone() else {
            log::error!(
                "SIGUSR2 ignored: the path of this program is unknown, it cannot re-execute"
            );
            return;
        };
        let _ = io::stdout().flush();
        let _ = io::stderr().flush();
        let pid = fork_with_signals_blocked();
        if pid < 0 {
            log::error!(
                "SIGUSR2: fork failed: {}; no upgrade (check `ulimit -u` and free memory)",
                io::Error::last_os_error()
            );
            return;
        }
        if pid == 0 {
            // The new master must not run the old master's handlers before exec (exec resets them).
            self.signals.forget_in_child();
            // The mask survives exec: the new master must start with every signal unblocked.
            signals::unblock_all();
            let err = upgrade::exec_new_master(&program, &self.listeners, self.pid);
            let _ = writeln!(
                io::stderr(),
                "binary upgrade: cannot execute {}: {err}",
                program.exe.display()
            );
            // SAFETY: _exit(2) ends this forked child at once, without running the master's
            // destructors (which belong to the master).
            unsafe { libc::_exit(EXIT_ERROR) };
        }
        log::info!(
            "SIGUSR2: binary upgrade: started {} as the new master (pid {pid}) with the listeners; \
             this master stops once the new one's workers are ready",
            program.exe.display()
        );
        self.upgrade_pid = Some(pid);
    }

    fn reload(&mut self) {
        log::info!(
            "SIGHUP: reloading: starting {} new worker(s); the old ones stop once the new ones are \
             ready",
            self.target
        );
        // systemd's Type=notify-reload wants the time of the reload with RELOADING=1.
        notify_or_log(&format!(
            "RELOADING=1\nMONOTONIC_USEC={}",
            now_ms().saturating_mul(1000)
        ));
        if let Some(f) = self.hooks.on_reload.as_mut() {
            f();
        }
        for c in &mut self.children {
            if c.role == Role::Serving {
                c.role = Role::Replaced;
                c.replaced_for = Some(Cause::Reload);
            }
        }
        self.reloading = true;
    }

    /// Sends `sig` to a live (not yet reaped) child.
    fn send(&mut self, idx: usize, sig: c_int, cause: Cause) {
        let c = &mut self.children[idx];
        // SAFETY: kill(2) on a pid that is our child and not reaped yet (it is still in `children`,
        // which `reap` removes it from), so the pid cannot have been reused by another process.
        if unsafe { libc::kill(c.pid, sig) } != 0 {
            log::debug!(
                "kill({}, {}) failed: {}",
                c.pid,
                signals::name(sig),
                io::Error::last_os_error()
            );
        }
        c.sent.push(sig);
        // A timeout kill stays the reason (a later SIGKILL only finishes it); otherwise the latest
        // reason wins (a reload's SIGTERM, then the shutdown's, then the graceful timeout's SIGKILL).
        let timed_out = matches!(
            c.cause,
            Some(Cause::Heartbeat { .. } | Cause::Deadline { .. } | Cause::BootTimeout)
        );
        if !timed_out {
            c.cause = Some(cause);
        }
    }

    fn stop_child(&mut self, idx: usize, fast: bool, cause: Cause) {
        let sig = if fast { libc::SIGQUIT } else { libc::SIGTERM };
        self.children[idx].role = Role::Stopping;
        self.children[idx].stop_sent = Some(Instant::now());
        self.send(idx, sig, cause);
    }

    fn begin_stop(&mut self, fast: bool, status: i32) {
        let window = if fast {
            self.cfg.graceful_timeout.min(FAST_STOP)
        } else {
            self.cfg.graceful_timeout
        };
        let until = Instant::now() + window;
        let until = match &self.stop {
            Some(s) => s.until.min(until),
            None => until,
        };
        let status = match &self.stop {
            Some(s) if s.status != EXIT_OK => s.status,
            _ => status,
        };
        self.stop = Some(Stop {
            fast,
            until,
            status,
            killed: false,
        });
        if self.upgrade_pid.is_none() {
            // After an upgrade the new master is the service: no STOPPING=1 from the old one.
            notify_or_log(&format!(
                "STOPPING=1\nSTATUS=stopping {} worker(s)",
                self.children.len()
            ));
        }
        for i in 0..self.children.len() {
            let c = &self.children[i];
            if c.sent.contains(&libc::SIGKILL) || (!fast && c.role == Role::Stopping) {
                continue;
            }
            self.stop_child(i, fast, Cause::Stop);
        }
    }

    /// Stops the master: stops every worker (gracefully) and exits with `status`.
    fn halt(&mut self, status: i32, msg: &str) {
        fatal(msg);
        if self.stop.is_none() {
            self.begin_stop(false, status);
        } else if let Some(s) = self.stop.as_mut() {
            if s.status == EXIT_OK {
                s.status = status;
            }
        }
    }

    fn check_stop(&mut self) -> Option<i32> {
        let stop = self.stop.as_mut()?;
        if self.children.is_empty() {
            let status = stop.status;
            log::info!("master (pid {}) exiting with status {status}", self.pid);
            return Some(status);
        }
        let now = Instant::now();
        if now >= stop.until && !stop.killed {
            stop.killed = true;
            stop.until = now + Duration::from_secs(10);
            for i in 0..self.children.len() {
                let c = &self.children[i];
                log::warn!(
                    "worker {} (pid {}) still running {} after it was told to stop: sending SIGKILL",
                    c.number,
                    c.pid,
                    secs(c.stop_sent.map_or(Duration::ZERO, |t| now - t))
                );
                self.send(i, libc::SIGKILL, Cause::GracefulTimeout);
            }
        } else if now >= stop.until {
            let status = stop.status;
            let pids: Vec<String> = self.children.iter().map(|c| c.pid.to_string()).collect();
            fatal(&format!(
                "worker(s) {} did not die 10 s after SIGKILL (stuck in the kernel?); the master exits \
                 anyway",
                pids.join(", ")
            ));
            return Some(if status == EXIT_OK {
                EXIT_ERROR
            } else {
                status
            });
        }
        None
    }

    fn reap(&mut self) {
        loop {
            let mut status: c_int = 0;
            // SAFETY: waitpid(2) with WNOHANG writes the status through a valid pointer to a local; it
            // reaps one exited child of this process, or returns 0 / -1 (ECHILD) when there is none.
            let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
            if pid <= 0 {
                break;
            }
            if self.upgrade_pid == Some(pid) {
                self.upgrade_pid = None;
                let (code, signal) = describe_status(status);
                let how = match (code, signal) {
                    (Some(c), _) => format!("exited with code {c}"),
                    (None, Some(s)) => format!("was killed by {}", signals::name(s)),
                    _ => format!("ended with wait status {status:#x}"),
                };
                if self.stop.is_none() {
                    log::error!(
                        "binary upgrade failed: the new master (pid {pid}) {how} before it took \
                         over (see its errors above); this master keeps serving with the old binary"
                    );
                }
                continue;
            }
            let Some(idx) = self.children.iter().position(|c| c.pid == pid) else {
                log::debug!("reaped pid {pid}, not one of our workers");
                continue;
            };
            let child = self.children.remove(idx);
            self.on_exit(child, status);
        }
    }

    fn on_exit(&mut self, child: Child, status: c_int) {
        let (code, signal) = describe_status(status);
        let slot = self.table.slot(child.slot);
        // Reaped: the pid is no longer a sibling (and may be reused by any process).
        slot.set_pid(0);
        let flags = slot.flags();
        let note = slot.note();
        let was_ready = child.ready || flags & READY != 0;
        let ours = match signal {
            Some(sig) => child.sent.contains(&sig),
            None => child.cause.is_some(),
        };
        let head = format!("worker {} (pid {})", child.number, child.pid);
        let mut description = match (code, signal) {
            (Some(c), _) if ours => format!(
                "{head} exited with code {c} after {}",
                child.cause.as_ref().map_or("a stop".into(), |c| c.to_string())
            ),
            (Some(c), _) => format!("{head} exited with code {c} on its own"),
            (None, Some(sig)) if ours => match &child.cause {
                Some(cause @ (Cause::Heartbeat { .. } | Cause::Deadline { .. })) => {
                    let kind = if matches!(cause, Cause::Heartbeat { .. }) {
                        "heartbeat"
                    } else {
                        "deadline"
                    };
                    format!(
                        "{head} killed by the supervisor after a {kind} timeout ({}; {})",
                        signals::name(sig),
                        cause.detail(&self.cfg)
                    )
                }
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
            (None, None) => format!("{head} ended with wait status {status:#x}"),
        };
        if !note.is_empty() && (!ours || !was_ready) {
            description.push_str(&format!(": {note}"));
        }
        let planned = child.cause.as_ref().is_some_and(|c| c.is_planned());
        if self.stop.is_some() || (ours && planned) {
            log::info!("{description}");
        } else {
            log::error!("{description}");
        }
        let exit = WorkerExit {
            number: child.number,
            pid: child.pid,
            code,
            signal,
            by_supervisor: ours,
            description: description.clone(),
        };
        if let Some(f) = self.hooks.worker_exit.as_mut() {
            f(&exit);
        }
        if self.stop.is_some() {
            return;
        }
        if !was_ready && (!ours || flags & BOOT_FAILED != 0) {
            self.halt(
                EXIT_BOOT_ERROR,
                &format!(
                    "boot error: {description}, before it was ready. The master stops here instead \
                     of respawning it in a loop: fix the error above and start again"
                ),
            );
            return;
        }
        if ours && planned {
            return;
        }
        // A failure: count the restart, OTP style.
        let now = Instant::now();
        self.restarts.push_back(now);
        while self
            .restarts
            .front()
            .is_some_and(|&t| now.duration_since(t) > self.cfg.restart_period)
        {
            self.restarts.pop_front();
        }
        if self.restarts.len() > self.cfg.restart_max as usize {
            self.halt(
                EXIT_ERROR,
                &format!(
                    "restart intensity exceeded: {} worker restarts within {} (the most allowed is \
                     {}); the last: {description}. The master stops instead of restarting workers \
                     that keep failing: fix the cause, or raise `restart_intensity`",
                    self.restarts.len(),
                    secs(self.cfg.restart_period),
                    self.cfg.restart_max
                ),
            );
        }
    }

    /// Readiness, boot timeouts, heartbeats, deadlines, graceful timeouts, retirement requests.
    fn watch(&mut self) {
        let now = Instant::now();
        let now_ms = now_ms();
        let mut i = 0;
        while i < self.children.len() {
            let slot = self.table.slot(self.children[i].slot);
            let flags = slot.flags();
            let c = &self.children[i];
            if !c.ready && flags & READY != 0 {
                log::info!(
                    "worker {} (pid {}) ready in {} ms",
                    c.number,
                    c.pid,
                    now.duration_since(c.started).as_millis()
                );
                self.children[i].ready = true;
            }
            let c = &self.children[i];
            if c.sent.contains(&libc::SIGKILL) {
                i += 1;
                continue;
            }
            if let Some(at) = c.abort_sent {
                if now.duration_since(at) >= self.tick {
                    log::error!(
                        "worker {} (pid {}) still alive {} after SIGABRT: sending SIGKILL",
                        c.number,
                        c.pid,
                        secs(now.duration_since(at))
                    );
                    let cause = c.cause.clone().unwrap_or(Cause::GracefulTimeout);
                    self.send(i, libc::SIGKILL, cause);
                }
                i += 1;
                continue;
            }
            if !c.ready {
                let age = now.duration_since(c.started);
                if age > self.cfg.boot_timeout {
                    let msg = format!(
                        "boot error: worker {} (pid {}) is not ready {} after its fork \
                         (boot_timeout {}): it was killed. The master stops here: find what the \
                         app waits for at start-up, make sure the worker calls `ready()`, or raise \
                         `boot_timeout`",
                        c.number,
                        c.pid,
                        secs(age),
                        secs(self.cfg.boot_timeout)
                    );
                    self.send(i, libc::SIGKILL, Cause::BootTimeout);
                    self.halt(EXIT_BOOT_ERROR, &msg);
                    return;
                }
                i += 1;
                continue;
            }
            if let Some(at) = c.stop_sent {
                let waited = now.duration_since(at);
                if waited > self.cfg.graceful_timeout {
                    log::warn!(
                        "worker {} (pid {}) still running {} after SIGTERM (graceful_timeout {}): \
                         sending SIGKILL",
                        c.number,
                        c.pid,
                        secs(waited),
                        secs(self.cfg.graceful_timeout)
                    );
                    self.send(i, libc::SIGKILL, Cause::GracefulTimeout);
                    i += 1;
                    continue;
                }
            }
            let silent = Duration::from_millis(now_ms.saturating_sub(slot.beat_ms()));
            let deadline = slot.deadline_ms();
            let late = Duration::from_millis(now_ms.saturating_sub(deadline));
            let cause = if deadline != 0 && now_ms > deadline && late > self.cfg.request_grace {
                Some(Cause::Deadline {
                    line: slot.request_line(),
                    late,
                })
            } else if c.stop_sent.is_none() && silent > self.cfg.heartbeat_timeout {
                Some(Cause::Heartbeat { silent })
            } else {
                None
            };
            if let Some(cause) = cause {
                let kind = match cause {
                    Cause::Deadline { .. } => "deadline",
                    _ => "heartbeat",
                };
                log::error!(
                    "worker {} (pid {}) {kind} timeout: {}; sending SIGABRT (SIGKILL on the next \
                     pass if it is still alive)",
                    c.number,
                    c.pid,
                    cause.detail(&self.cfg)
                );
                self.children[i].abort_sent = Some(now);
                self.send(i, libc::SIGABRT, cause);
                i += 1;
                continue;
            }
            if c.role == Role::Serving && flags & RETIRE != 0 {
                log::info!(
                    "worker {} (pid {}) retires after {} requests: starting its replacement; it stops \
                     once the replacement is ready",
                    c.number,
                    c.pid,
                    slot.requests()
                );
                self.children[i].role = Role::Replaced;
                self.children[i].replaced_for = Some(Cause::Retire);
            }
            i += 1;
        }
    }

    fn count(&self, role: Role, ready: bool) -> usize {
        self.children
            .iter()
            .filter(|c| c.role == role && (!ready || c.ready) && !c.sent.contains(&libc::SIGKILL))
            .filter(|c| c.abort_sent.is_none())
            .count()
    }

    /// Spawns up to the target, stops the surplus, stops replaced workers once enough new ones are
    /// ready, and tells systemd.
    fn maintain(&mut self) {
        let serving = self.count(Role::Serving, false);
        for _ in serving..self.target {
            self.spawn();
            if self.stop.is_some() {
                return;
            }
        }
        if serving > self.target {
            let mut surplus = serving - self.target;
            let mut order: Vec<usize> = (0..self.children.len())
                .filter(|&i| self.children[i].role == Role::Serving)
                .collect();
            order.sort_by_key(|&i| self.children[i].number);
            for i in order {
                if surplus == 0 {
                    break;
                }
                log::info!(
                    "stopping worker {} (pid {}): {} worker(s) wanted",
                    self.children[i].number,
                    self.children[i].pid,
                    self.target
                );
                self.stop_child(i, false, Cause::ScaleDown);
                surplus -= 1;
            }
        }
        let ready = self.count(Role::Serving, true);
        let replaced = self.count(Role::Replaced, false);
        if ready >= self.target && replaced > 0 {
            for i in 0..self.children.len() {
                if self.children[i].role == Role::Replaced {
                    let cause = self.children[i]
                        .replaced_for
                        .clone()
                        .unwrap_or(Cause::Reload);
                    self.stop_child(i, false, cause);
                }
            }
        }
        let replaced = self.count(Role::Replaced, false);
        if ready >= self.target && replaced == 0 && (!self.announced_ready || self.reloading) {
            let first = !self.announced_ready;
            self.announced_ready = true;
            self.reloading = false;
            log::info!(
                "{} worker(s) ready{}",
                ready,
                if first { "" } else { " after the reload" }
            );
            notify_or_log(&format!(
                "READY=1\nMAINPID={}\nSTATUS={ready} worker(s) ready",
                self.pid
            ));
            if let Some(old) = self.upgrade_from.take() {
                log::info!(
                    "binary upgrade: this master (pid {}) is ready; telling the old master (pid \
                     {old}) to stop gracefully",
                    self.pid
                );
                // SAFETY: kill(2) of our parent, checked at start to be the master that started this
                // one (PREFORK_UPGRADE_FROM); SIGTERM asks it for a graceful stop.
                unsafe { libc::kill(old, libc::SIGTERM) };
            }
            self.last_status = format!("{ready}");
            if let Some(f) = self.hooks.when_ready.as_mut() {
                f(&self.listeners);
            }
        } else if self.announced_ready && self.last_status != format!("{ready}") {
            self.last_status = format!("{ready}");
            notify_or_log(&format!(
                "STATUS={ready} worker(s) ready of {} wanted",
                self.target
            ));
        }
    }

    fn jitter(&mut self) -> u64 {
        // xorshift64: enough to spread retirements; not for anything secret.
        let mut x = self.seed.max(1);
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.seed = x;
        if self.cfg.max_requests_jitter == 0 {
            0
        } else {
            x % (self.cfg.max_requests_jitter + 1)
        }
    }

    fn spawn(&mut self) {
        let Some(slot) = (0..self.table.len()).find(|s| self.children.iter().all(|c| c.slot != *s))
        else {
            log::error!(
                "no free heartbeat slot for a new worker ({} processes alive): not starting one now",
                self.children.len()
            );
            return;
        };
        let max = if self.cfg.max_requests == 0 {
            0
        } else {
            self.cfg.max_requests + self.jitter()
        };
        self.table.slot(slot).reset(max);
        let number = self.next_number;
        self.next_number += 1;
        if let Some(f) = self.hooks.pre_fork.as_mut() {
            f(number);
        }
        let _ = io::stdout().flush();
        let _ = io::stderr().flush();
        let pid = fork_with_signals_blocked();
        if pid < 0 {
            let e = io::Error::last_os_error();
            log::error!(
                "fork failed: {e}; retrying on the next pass (check the process limit, `ulimit -u`, \
                 and free memory)"
            );
            return;
        }
        if pid == 0 {
            self.signals.forget_in_child();
            let setup = ChildSetup {
                number,
                master_pid: self.pid,
                master_wake: self.signals.wake_fd(),
                master_read: self.signals.read_fd(),
                slot: self.table.leak_slot(slot),
                slots: self.table.leak_all(),
                listeners: std::mem::take(&mut self.listeners),
            };
            let mut post_fork = self.hooks.post_fork.take();
            let preloaded = self.preloaded.take();
            let app = &mut self.app;
            child_main(
                setup,
                move |n| {
                    if let Some(f) = post_fork.as_mut() {
                        f(n)
                    }
                },
                move || match preloaded {
                    Some(w) => Ok(w),
                    None => app().map_err(|e| e.to_string()),
                },
            );
        }
        // The child writes it too; the siblings read it to recognise its self-calls.
        self.table.slot(slot).set_pid(pid as u32);
        log::info!("booting worker {number} (pid {pid})");
        self.children.push(Child {
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
        });
    }
}

impl<A, W> Drop for Master<A, W> {
    fn drop(&mut self) {
        // Never leave a worker behind (a panic in the master loop, or an early return).
        for c in &self.children {
            // SAFETY: kill(2) on a child that was not reaped (still in `children`), so its pid is
            // still ours; SIGKILL ends it, PR_SET_PDEATHSIG would too once the master exits.
            unsafe { libc::kill(c.pid, libc::SIGKILL) };
        }
        for c in &self.children {
            let mut status = 0;
            // SAFETY: waitpid(2) on our own unreaped child, status written to a local.
            unsafe { libc::waitpid(c.pid, &mut status, 0) };
        }
    }
}
