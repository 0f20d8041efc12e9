//! The supervisor's builder: every setting and hook, their validation, `check` (gunicorn's
//! `--check-config`) and `build` (bind the listeners, or take systemd's).

use std::fmt;
use std::io;
use std::net::{TcpListener, ToSocketAddrs};
use std::os::unix::net::UnixListener;
use std::path::Path;
use std::time::Duration;

use super::config::{Hooks, SupervisorConfig, EXIT_ERROR, MAX_WORKERS};
use super::exit::WorkerExit;
use super::os::listeners::{self, Bind, Listener};
use super::report::fatal;
use super::supervisor::Supervisor;
use super::workers::worker::Worker;
use crate::settings::Source;
use crate::settings::Sources;
use crate::BuildError;

/// Why the supervisor could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// A configuration value was refused.
    #[error(transparent)]
    Config(#[from] BuildError),
    /// A listener could not be bound.
    #[error("cannot listen on {address}: {source}; {hint}", hint = bind_hint(.source))]
    Bind {
        /// The address that was asked for.
        address: String,
        /// The operating system's error.
        source: io::Error,
    },
    /// An address to bind could not be read or resolved (`127.0.0.1:99999`, a host name that
    /// does not resolve).
    #[error(
        "cannot resolve the address {address}: {source}; write HOST:PORT, with a port 1..=65535 \
         (0: any free port)"
    )]
    Address {
        /// The address as given.
        address: String,
        /// The resolver's error.
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
    /// The app could not be built ([`SupervisorBuilder::check`]).
    #[error("the app failed to build: {0}; fix it before serving")]
    App(String),
}

/// What to do about a listener that could not be bound, by the OS error's kind.
fn bind_hint(e: &io::Error) -> &'static str {
    match e.kind() {
        io::ErrorKind::AddrInUse => {
            "another process holds it: stop it (`ss -ltnp` shows which), or choose another port"
        }
        io::ErrorKind::PermissionDenied => {
            "a port below 1024 needs root or CAP_NET_BIND_SERVICE: choose a port from 1024, or \
             (Unix socket) a directory this user may write"
        }
        io::ErrorKind::AddrNotAvailable => {
            "this host has no such address: bind 0.0.0.0 (every interface), 127.0.0.1, or one of \
             its own addresses"
        }
        _ => "check the address",
    }
}

/// Configures a [`Supervisor`]. Made by [`Supervisor::builder`].
///
/// [`from_env`](Self::from_env) / [`with_env`](Self::with_env) take the settings the
/// environment gives (`PORT`, `WEB_CONCURRENCY`, `PREFORK_*`: [`Settings`](crate::Settings)),
/// in the same words as thread mode; [`print_config`](Self::print_config) prints the effective
/// settings and where each came from.
///
/// Every setting here belongs to the **process layer**: the master and its worker processes.
/// What runs inside each worker process has its own settings, in the same words: with
/// [`Supervisor::serve_http`], the `configure` step sets the worker's
/// [`ServerBuilder`](crate::http::ServerBuilder) (HTTP layer: listeners' backlog and Unix mode,
/// timeouts, limits) and its [`PoolBuilder`](crate::PoolBuilder) (thread layer: `workers` =
/// threads per process, `max_requests` + `max_requests_jitter` per thread, `deadline`).
///
/// | setting | here (processes) | in each worker's server / pool (threads) |
/// |---|---|---|
/// | `workers(n)` | worker processes; default `WEB_CONCURRENCY`, else one per core | |
/// | `threads(n)` | handler threads per process (default 2, `PREFORK_THREADS`) | `pool(\|p\| p.workers(n))`: the same, set in `configure`; never `WEB_CONCURRENCY` under the supervisor |
/// | `max_requests(n)` + `max_requests_jitter(j)` | a process is replaced after n (+ 0..=j) requests | a thread is replaced after n (+ 0..=j) jobs |
/// | `backlog(n: i64)` | sockets the master binds | sockets the server binds (thread mode) |
/// | `bind_unix(path, mode)` | a Unix socket the master binds, with mode | the same, in thread mode |
///
/// ```
/// use std::time::Duration;
/// use prefork_pool::prefork::{Supervisor, WorkerEnv};
///
/// // Validates the settings and builds the app once, without binding or forking.
/// Supervisor::builder()
///     .bind("127.0.0.1:0")
///     .workers(4)
///     .graceful_timeout(Duration::from_secs(20))
///     .max_requests(10_000)
///     .max_requests_jitter(500)
///     .check(|| Ok::<_, String>(|_env: &mut WorkerEnv| 0))
///     .unwrap();
///
/// // A refused setting names the field and what it accepts.
/// let err = Supervisor::builder()
///     .bind("127.0.0.1:0")
///     .workers(0)
///     .check(|| Ok::<_, String>(|_env: &mut WorkerEnv| 0))
///     .unwrap_err();
/// assert!(err.to_string().contains("workers"));
/// ```
pub struct SupervisorBuilder {
    pub(super) cfg: SupervisorConfig,
    pub(super) workers: Option<usize>,
    backlog: i64,
    pub(super) binds: Vec<Bind>,
    pub(super) bind_errors: Vec<StartError>,
    hooks: Hooks,
    /// Where each setting `print_config` shows came from.
    pub(super) sources: Sources,
    /// The first value `with_settings` refused, returned by `build` and `check`.
    pub(super) settings_error: Option<BuildError>,
    /// The workers' user and group, as given (resolved by `validate`).
    pub(super) user: Option<String>,
    pub(super) group: Option<String>,
}

impl fmt::Debug for SupervisorBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SupervisorBuilder")
            .field("config", &self.cfg)
            .field("binds", &self.binds)
            .finish_non_exhaustive()
    }
}

/// The worker processes when neither the code nor [`SupervisorBuilder::with_env`] set them:
/// `WEB_CONCURRENCY` (as gunicorn), else one per core (at most 256). Each has
/// [`DEFAULT_THREADS`](super::config::DEFAULT_THREADS) handler threads: two per core in all, as
/// many requests in flight as gunicorn's 2 × cores + 1 sync workers, where 2 × cores + 1
/// processes of cores threads each made 33 × 16 = 528 threads on 16 cores.
pub(super) fn default_workers() -> Result<(usize, Source), BuildError> {
    if let Some(n) = crate::util::web_concurrency_env("worker processes", MAX_WORKERS)? {
        return Ok((n, Source::Env("WEB_CONCURRENCY")));
    }
    Ok((crate::settings::cores().min(MAX_WORKERS), Source::Default))
}

impl SupervisorBuilder {
    fn new() -> SupervisorBuilder {
        SupervisorBuilder {
            cfg: SupervisorConfig::default(),
            workers: None,
            backlog: 2048,
            binds: Vec::new(),
            bind_errors: Vec::new(),
            hooks: Hooks::default(),
            sources: Sources::default(),
            settings_error: None,
            user: None,
            group: None,
        }
    }

    /// Listens on a TCP address (`"127.0.0.1:8000"`, `"[::]:80"`; a name is resolved now, every
    /// address it resolves to is bound). Port 0 picks a free port: read it from
    /// [`Supervisor::listeners`] after [`build`](Self::build).
    ///
    /// After [`with_env`](Self::with_env) set the addresses (`PREFORK_BIND`, `PORT`), the first
    /// `bind` or `bind_unix` replaces them: the later call wins.
    pub fn bind(mut self, addr: impl ToSocketAddrs + fmt::Display) -> Self {
        self.binds_from(Source::Code);
        self.bind_addr(addr);
        self
    }

    /// Bind what `addr` resolves to, or keep why it does not resolve.
    pub(super) fn bind_addr(&mut self, addr: impl ToSocketAddrs + fmt::Display) {
        match addr.to_socket_addrs() {
            Ok(addrs) => self.binds.extend(addrs.map(Bind::Tcp)),
            Err(source) => self.bind_errors.push(StartError::Address {
                address: addr.to_string(),
                source,
            }),
        }
    }

    /// The addresses set from now on come from `source`: those the environment set before are
    /// dropped (a later call wins), with their errors.
    pub(super) fn binds_from(&mut self, source: Source) {
        if let Source::Env(_) = self.sources.get("bind") {
            self.binds.retain(|b| matches!(b, Bind::Ready(_)));
            self.bind_errors.clear();
        }
        self.sources.set("bind", source);
    }

    /// Listens on a Unix stream socket at `path` with permission bits `mode` (e.g. `0o660`), as
    /// [`ServerBuilder::bind_unix`](crate::http::ServerBuilder::bind_unix) does in thread mode (a
    /// stale socket file there is removed first). Process layer: the master binds it before the
    /// first fork.
    pub fn bind_unix(mut self, path: impl AsRef<Path>, mode: u32) -> Self {
        self.binds_from(Source::Code);
        self.binds
            .push(Bind::Unix(path.as_ref().to_path_buf(), mode));
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

    /// The number of worker processes (process layer). Default: `WEB_CONCURRENCY`, else one
    /// per core (at most 256). The threads in each process are [`threads`](Self::threads)
    /// (`PREFORK_THREADS`, default 2), never `WEB_CONCURRENCY`.
    pub fn workers(mut self, n: usize) -> Self {
        self.sources.set("processes", Source::Code);
        self.workers = Some(n);
        self
    }

    /// The listen backlog of the sockets this supervisor binds (process layer; the same setting
    /// as [`ServerBuilder::backlog`](crate::http::ServerBuilder::backlog)). Default: 2048 (as
    /// gunicorn); 1..=65535.
    pub fn backlog(mut self, n: i64) -> Self {
        self.backlog = n;
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
    ///
    /// It bounds a binary upgrade (SIGUSR2) too: a new master that has not taken over this long
    /// after the signal (its workers all ready, this master told to stop) is killed and the
    /// upgrade abandoned, with an `error` line that says why; this master keeps serving.
    pub fn boot_timeout(mut self, d: Duration) -> Self {
        self.cfg.boot_timeout = d;
        self
    }

    /// How long a worker told to stop gracefully (SIGTERM, HUP, retirement, scale down) may take to
    /// finish its requests before SIGKILL. Default: 30 s.
    pub fn graceful_timeout(mut self, d: Duration) -> Self {
        self.sources.set("graceful_timeout", Source::Code);
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

    /// A worker process asks for its replacement after this many requests (0: never, the
    /// default). Process layer; the pool's
    /// [`max_requests`](crate::PoolBuilder::max_requests) is the same for one thread.
    pub fn max_requests(mut self, n: u64) -> Self {
        self.sources.set("max_requests", Source::Code);
        self.cfg.max_requests = n;
        self
    }

    /// Each worker process adds a random `0..=n` to its `max_requests`, so they do not all retire
    /// at once (default 0). Process layer, as the pool's
    /// [`max_requests_jitter`](crate::PoolBuilder::max_requests_jitter) is for threads.
    pub fn max_requests_jitter(mut self, n: u64) -> Self {
        self.sources.set("max_requests_jitter", Source::Code);
        self.cfg.max_requests_jitter = n;
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

    /// Runs in each worker right after the fork, before its app is built (after the switch to
    /// [`user`](Self::user) / [`group`](Self::group), when they are set: it runs as that
    /// account).
    pub fn post_fork(mut self, f: impl FnMut(u64) + 'static) -> Self {
        self.hooks.post_fork = Some(Box::new(f));
        self
    }

    /// Runs in the master right after each fork, with the new worker's number and its pid (`None`
    /// when the fork failed): the parent's half of [`pre_fork`](Self::pre_fork), which it always
    /// follows, so the two can bracket the fork. An embedded runtime that must prepare for a fork
    /// and recover from it in both processes uses the three hooks: CPython's
    /// `PyOS_BeforeFork` in `pre_fork`, `PyOS_AfterFork_Parent` here, `PyOS_AfterFork_Child` in
    /// [`post_fork`](Self::post_fork) (what `os.fork()` does).
    ///
    /// ```
    /// use prefork_pool::prefork::{Supervisor, WorkerEnv};
    /// Supervisor::builder()
    ///     .bind("127.0.0.1:0")
    ///     .pre_fork(|n| eprintln!("forking worker {n}"))
    ///     .post_fork_parent(|n, pid| eprintln!("worker {n} is pid {pid:?}"))
    ///     .check(|| Ok::<_, String>(|_env: &mut WorkerEnv| 0))
    ///     .unwrap();
    /// ```
    pub fn post_fork_parent(mut self, f: impl FnMut(u64, Option<u32>) + 'static) -> Self {
        self.hooks.post_fork_parent = Some(Box::new(f));
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
        if let Some(e) = &self.settings_error {
            return Err(e.clone());
        }
        let workers = match self.workers {
            Some(n) => n,
            None => default_workers()?.0,
        };
        self.cfg.workers = BuildError::check_range("workers", workers, 1..=MAX_WORKERS)?;
        self.cfg.backlog = BuildError::check_range("backlog", self.backlog, 1..=65_535)? as i32;
        let day = Duration::from_secs(86_400);
        for (field, d) in [
            ("heartbeat_timeout", self.cfg.heartbeat_timeout),
            ("boot_timeout", self.cfg.boot_timeout),
            ("graceful_timeout", self.cfg.graceful_timeout),
            ("restart_intensity period", self.cfg.restart_period),
        ] {
            BuildError::check_duration(field, d, Duration::from_millis(100)..=day)?;
        }
        BuildError::check_duration(
            "request_grace",
            self.cfg.request_grace,
            Duration::ZERO..=day,
        )?;
        self.validate_server()?;
        self.validate_recycling()?;
        self.validate_run_as()?;
        #[cfg(feature = "tls")]
        self.load_tls()?;
        BuildError::check_range_shown(
            "restart_intensity max",
            self.cfg.restart_max,
            1..=u32::MAX,
            "at least 1 restart (a supervisor that may never restart a worker halts at the first \
             crash)",
        )?;
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
        if let Some(r) = &self.cfg.run_as {
            // The master's log files belong to the workers' account (see `user`).
            crate::log_sink::set_owner(r.uid, Some(r.gid));
        }
        crate::log_sink::install(&self.cfg.logs)?;
        if let Some(r) = &self.cfg.run_as {
            log::info!(
                "the workers will run as {} (the master stays as it is)",
                r.shown
            );
        }
        let inherited = if self.cfg.systemd {
            listeners::from_systemd().map_err(StartError::Systemd)?
        } else {
            None
        };
        let listeners = match inherited {
            Some(l) if !l.is_empty() => {
                self.cfg.socket_activated = true;
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
                        Bind::Unix(path, mode) => {
                            listeners::bind_unix(&path, self.cfg.backlog, Some(mode))
                                .map(Listener::Unix)
                                .map_err(|source| StartError::Bind {
                                    address: format!("unix:{}", path.display()),
                                    source,
                                })?
                        }
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
        Ok(Supervisor::new(self.cfg, listeners, self.hooks))
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

impl Supervisor {
    /// Starts configuring a supervisor.
    ///
    /// ```
    /// use prefork_pool::prefork::Supervisor;
    ///
    /// let supervisor = Supervisor::builder()
    ///     .bind("127.0.0.1:0")
    ///     .workers(2)
    ///     .build()
    ///     .unwrap();
    /// assert_eq!(supervisor.workers(), 2);
    /// assert!(supervisor.local_addr().is_some());
    /// ```
    pub fn builder() -> SupervisorBuilder {
        SupervisorBuilder::new()
    }
}
