//! The master process's start-up: [`Supervisor`] holds the validated settings and the listeners;
//! [`Supervisor::run`] checks the process, maps the heartbeat table, installs the signal handlers,
//! writes the pidfile, hands over to the master loop, and cleans up after it.

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use super::config::{Hooks, SupervisorConfig, EXIT_BOOT_ERROR, EXIT_ERROR, SLOTS};
use super::master::Master;
use super::os::listeners::Listener;
use super::os::rlimit;
use super::os::signals::SignalPipe;
use super::report::{fatal, PidfileError, TooManyThreads};
use super::workers::heartbeat::HeartbeatTable;
use super::workers::worker::Worker;

/// The master process of a pre-fork server: see the [module documentation](super).
///
/// ```no_run
/// use prefork_pool::prefork::{Supervisor, WorkerEnv};
///
/// let supervisor = Supervisor::builder().bind("127.0.0.1:8000").workers(2).build().unwrap();
/// println!("listening on {:?}", supervisor.local_addr());
/// let status = supervisor.run(|| {
///     Ok::<_, String>(|env: &mut WorkerEnv| {
///         env.ready();
///         while !env.is_stopping() {
///             let _ = env.wait_for_listeners(std::time::Duration::from_millis(500));
///         }
///         0
///     })
/// });
/// std::process::exit(status);
/// ```
pub struct Supervisor {
    cfg: SupervisorConfig,
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
    /// A supervisor with validated settings and bound listeners (from the builder).
    pub(crate) fn new(cfg: SupervisorConfig, listeners: Vec<Listener>, hooks: Hooks) -> Supervisor {
        Supervisor {
            cfg,
            listeners,
            hooks,
        }
    }

    /// The listeners the workers will serve (bound, or inherited from systemd): read the port
    /// chosen for port 0 here.
    pub fn listeners(&self) -> &[Listener] {
        &self.listeners
    }

    /// The names systemd gave the [`listeners`](Self::listeners) (`LISTEN_FDNAMES`), in their
    /// order; empty when they were not passed by systemd (see
    /// [`WorkerEnv::listener_names`](super::WorkerEnv::listener_names)).
    pub fn listener_names(&self) -> &'static [String] {
        super::os::listeners::listen_fd_names()
    }

    /// The address of the first TCP listener (the port the system chose for port 0, for example).
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.listeners
            .iter()
            .find_map(|l| l.tcp().and_then(|t| t.local_addr().ok()))
    }

    /// How long workers told to stop gracefully may take (see
    /// [`SupervisorBuilder::graceful_timeout`](super::SupervisorBuilder::graceful_timeout)).
    pub fn graceful_timeout(&self) -> Duration {
        self.cfg.graceful_timeout
    }

    /// Handler threads in each worker process's HTTP server
    /// ([`SupervisorBuilder::threads`](super::SupervisorBuilder::threads), `PREFORK_THREADS`;
    /// default 2), before `serve_http`'s `configure`.
    pub fn threads(&self) -> usize {
        self.cfg.server.threads
    }

    /// The settings of each worker's HTTP server (`serve_http`).
    pub(crate) fn worker_server(&self) -> super::config::WorkerServer {
        self.cfg.server.clone()
    }

    /// The number of worker processes it starts with.
    pub fn workers(&self) -> usize {
        self.cfg.workers
    }

    /// Runs the master until it is stopped; returns the exit status the process should exit with:
    /// [`EXIT_OK`](super::EXIT_OK) after SIGTERM/SIGINT/SIGQUIT, [`EXIT_BOOT_ERROR`] after a boot
    /// error, [`EXIT_ERROR`] when the restart intensity is exceeded or the master cannot run.
    ///
    /// `app` builds the worker: in each worker process right after the fork (so a connection pool, a
    /// thread, a random seed is made per process), or once in the master with
    /// [`SupervisorBuilder::preload`](super::SupervisorBuilder::preload). An `Err` is a boot error.
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
                fatal(&TooManyThreads::AtStart(n).to_string());
                return EXIT_ERROR;
            }
            super::os::logs::name_master(self.cfg.proc_name.as_deref());
            match rlimit::raise_nofile() {
                Ok((old, new)) if new > old => {
                    log::info!("raised the open files limit (RLIMIT_NOFILE) from {old} to {new}")
                }
                Ok(_) => {}
                Err(e) => log::warn!("could not raise RLIMIT_NOFILE to its hard limit: {e}"),
            }
            let table = match HeartbeatTable::new(SLOTS) {
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
                fatal(&TooManyThreads::AfterPreload(n).to_string());
                return EXIT_BOOT_ERROR;
            }
            let pid = std::process::id() as libc::pid_t;
            if let Some(path) = &self.cfg.pidfile {
                if let Err(error) = std::fs::write(path, format!("{pid}\n")) {
                    fatal(&PidfileError { path, error }.to_string());
                    return EXIT_ERROR;
                }
            }
            let mut master = Master::new(
                self.cfg.clone(),
                self.listeners,
                std::mem::take(&mut hooks),
                app,
                preloaded,
                table,
                signals,
                pid,
            );
            let status = master.run();
            hooks = master.take_hooks();
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
