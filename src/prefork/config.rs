//! The supervisor's settings and hooks, its fixed limits and the master's exit statuses: a leaf.

use std::path::PathBuf;
use std::time::Duration;

use super::exit::{Limits, WorkerExit};
use super::os::listeners::Listener;
use super::os::privileges::RunAs;
use crate::settings::LogChoices;

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
pub(crate) const SLOTS: usize = 1024;
/// The most workers the builder and SIGTTIN accept.
pub(crate) const MAX_WORKERS: usize = 256;
/// The longest wait of the master loop (gunicorn's is 1 s too).
pub(crate) const MAX_TICK: Duration = Duration::from_secs(1);
/// How long a fast stop (SIGINT, SIGQUIT) waits for workers before SIGKILL, at most.
pub(crate) const FAST_STOP: Duration = Duration::from_secs(5);

type Hook0 = Box<dyn FnMut()>;
type ReadyHook = Box<dyn FnMut(&[Listener])>;
type ExitHook = Box<dyn FnMut(&WorkerExit)>;
/// The worker's number and pid (`None`: the fork failed).
type ParentForkHook = Box<dyn FnMut(u64, Option<u32>)>;

/// The hooks set on the builder, run by the master (and `post_fork` by each worker).
#[derive(Default)]
pub(crate) struct Hooks {
    pub(crate) pre_fork: Option<Box<dyn FnMut(u64)>>,
    pub(crate) post_fork: Option<Box<dyn FnMut(u64)>>,
    pub(crate) post_fork_parent: Option<ParentForkHook>,
    pub(crate) when_ready: Option<ReadyHook>,
    pub(crate) on_reload: Option<Hook0>,
    pub(crate) on_reopen_logs: Option<Hook0>,
    pub(crate) worker_exit: Option<ExitHook>,
    pub(crate) on_exit: Option<Box<dyn FnMut(i32)>>,
}

/// The supervisor's settings (validated by the builder).
#[derive(Debug, Clone)]
pub(crate) struct SupervisorConfig {
    pub(crate) workers: usize,
    pub(crate) backlog: i32,
    pub(crate) heartbeat_timeout: Duration,
    pub(crate) boot_timeout: Duration,
    pub(crate) graceful_timeout: Duration,
    pub(crate) request_grace: Duration,
    pub(crate) max_requests: u64,
    pub(crate) max_requests_jitter: u64,
    pub(crate) restart_max: u32,
    pub(crate) restart_period: Duration,
    pub(crate) pidfile: Option<PathBuf>,
    pub(crate) preload: bool,
    pub(crate) systemd: bool,
    /// The listeners came from systemd (`LISTEN_FDS`): systemd keeps them after the master.
    pub(crate) socket_activated: bool,
    /// Each worker's HTTP server, as `serve_http` starts it before its `configure`.
    pub(crate) server: WorkerServer,
    /// The crate's log sink (see `logs.rs`).
    pub(crate) logs: crate::log_sink::LogSettings,
    /// The `NAME` of the process titles.
    pub(crate) proc_name: Option<String>,
    /// The account the workers switch to after the fork (`None`: the master's).
    pub(crate) run_as: Option<RunAs>,
    /// Recycle a worker over this resident memory, in bytes (0: never).
    pub(crate) max_worker_memory: u64,
    /// Recycle a worker this long (plus jitter) after it started.
    pub(crate) max_worker_age: Option<Duration>,
}

/// Handler threads per worker process by default: with one process per core, two threads per
/// core in all, as many requests in flight as gunicorn's 2 × cores + 1 sync workers.
pub(crate) const DEFAULT_THREADS: usize = 2;

/// The settings of each worker process's HTTP server that the supervisor carries
/// (`SupervisorBuilder::threads`, `timeout`, `keep_alive`, `forwarded_allow_ips`, or the
/// environment), applied by `serve_http` before its `configure`.
#[derive(Debug, Clone)]
pub(crate) struct WorkerServer {
    pub(crate) threads: usize,
    pub(crate) timeout: Option<Duration>,
    pub(crate) keep_alive: Option<Duration>,
    pub(crate) forwarded_allow_ips: Option<Vec<String>>,
    pub(crate) log_choices: LogChoices,
    /// The certificate and key (feature `tls`), read by the master (see `tls_settings.rs`).
    #[cfg(feature = "tls")]
    pub(crate) tls: crate::http::tls::TlsFiles,
}

impl Default for WorkerServer {
    fn default() -> WorkerServer {
        WorkerServer {
            threads: DEFAULT_THREADS,
            timeout: None,
            keep_alive: None,
            forwarded_allow_ips: None,
            log_choices: LogChoices::default(),
            #[cfg(feature = "tls")]
            tls: Default::default(),
        }
    }
}

impl Default for SupervisorConfig {
    fn default() -> SupervisorConfig {
        SupervisorConfig {
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
            socket_activated: false,
            server: WorkerServer::default(),
            logs: crate::log_sink::LogSettings::default(),
            proc_name: None,
            run_as: None,
            max_worker_memory: 0,
            max_worker_age: None,
        }
    }
}

impl SupervisorConfig {
    /// The limits a timeout's exit sentence quotes.
    pub(crate) fn limits(&self) -> Limits {
        Limits {
            heartbeat_timeout: self.heartbeat_timeout,
            request_grace: self.request_grace,
        }
    }

    /// The master loop's longest wait: a quarter of the shortest timeout, from 20 ms to 1 s.
    pub(crate) fn tick(&self) -> Duration {
        [
            MAX_TICK,
            self.heartbeat_timeout / 4,
            self.boot_timeout / 4,
            self.graceful_timeout / 4,
            (self.request_grace / 4).max(Duration::from_millis(20)),
        ]
        .into_iter()
        .min()
        .unwrap_or(MAX_TICK)
        .max(Duration::from_millis(20))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tick_is_a_quarter_of_the_shortest_timeout_from_20_ms_to_1_s() {
        let cfg = SupervisorConfig::default();
        assert_eq!(cfg.tick(), MAX_TICK);
        let cfg = SupervisorConfig {
            heartbeat_timeout: Duration::from_millis(1500),
            ..SupervisorConfig::default()
        };
        assert_eq!(cfg.tick(), Duration::from_millis(375));
        let cfg = SupervisorConfig {
            graceful_timeout: Duration::from_millis(100),
            ..SupervisorConfig::default()
        };
        assert_eq!(cfg.tick(), Duration::from_millis(25));
        let cfg = SupervisorConfig {
            request_grace: Duration::ZERO,
            ..SupervisorConfig::default()
        };
        assert_eq!(cfg.tick(), Duration::from_millis(20));
    }
}
