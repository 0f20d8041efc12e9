//! The pre-fork process supervisor (feature `prefork`, unix): the master process that gunicorn's
//! arbiter is, without its failure modes.
//!
//! A [`Supervisor`] binds the listening sockets (or takes them from systemd), forks N worker
//! processes that all accept on those sockets, and then watches them: it reaps every exit and says
//! why it happened, replaces workers that die, kills workers that stop beating or sit on a request
//! far past its deadline, restarts every worker on SIGHUP without refusing a connection, and stops
//! on SIGTERM without dropping a request already sent.
//!
//! # Why signals and fork are hard
//!
//! - **`fork` copies one thread.** If another thread of the master held a lock (the allocator's, a
//!   logger's, a pool's queue) at the moment of the fork, that lock stays held for ever in the child,
//!   and the child hangs the first time it takes it (gunicorn #3529). So the master here **never has a
//!   thread**: it is one loop, and [`Supervisor::run`] refuses to start in a multi-threaded process.
//!   Threads belong in workers, started after the fork.
//! - **A signal handler may do almost nothing.** It interrupts the program anywhere, possibly inside
//!   `malloc` or while holding a lock, so it may only call async-signal-safe functions. The master's
//!   handlers (registered through `signal-hook`) only write the signal's number, as one byte, into a
//!   socket pair (the *self-pipe*); the loop reads the bytes and does the real work as ordinary code.
//!   signal-hook's own iterator would read that pipe on a background thread: not here (see above).
//! - **A child is reaped or it is a zombie.** On every SIGCHLD, and on every pass anyway, the master
//!   calls `waitpid(-1, WNOHANG)` until there is nothing left to reap. It signals only pids it has
//!   not reaped: a reaped pid can be reused by an unrelated process.
//! - **A worker must not outlive its master.** Each worker sets `PR_SET_PDEATHSIG(SIGKILL)` right
//!   after the fork (Linux), then checks that its parent is still the master (which may have died
//!   before the call).
//!
//! # The model
//!
//! ```text
//!  master (one thread)                       worker processes (N)
//!  ├─ listeners (bound before the fork) ───► accept on the same sockets
//!  ├─ heartbeat table (shared mmap) ◄──────── beat · ready · oldest request's deadline · retire wish
//!  ├─ self-pipe ◄── signal handlers           SIGTERM: finish, exit 0 · SIGINT/SIGQUIT: exit now
//!  │            ◄── workers' wake-ups
//!  └─ loop: wait ≤ 1 s · handle signals · reap · check heartbeats and deadlines · top up · notify
//! ```
//!
//! The usual worker is the crate's HTTP server: [`Supervisor::serve_http`] runs an
//! [`http::Server`](crate::http::Server) in each worker process on the inherited listeners, with
//! its Pool's threads, deadlines and watchdog, and reports every running request to the master.
//!
//! An async app (an axum `Router`, any `tower::Service`) runs under the supervisor with
//! `Supervisor::serve_service` (feature `tower`): a tokio runtime per worker process, hyper's
//! HTTP/1.1, each request tracked in the heartbeat with its deadline, graceful stop and reload.
//!
//! Or what a worker does is yours: a [`Worker`] (any `FnMut(&mut WorkerEnv) -> i32`), built after the
//! fork by the `app` closure given to [`Supervisor::run`], or once before the fork with
//! [`SupervisorBuilder::preload`]. It serves on [`WorkerEnv::listeners`], calls [`WorkerEnv::ready`] when it
//! accepts, beats (waiting with [`WorkerEnv::wait_for_listeners`] does it), reports its running
//! requests with [`Heartbeat::track`] (or [`Heartbeat::request_started`] /
//! [`WorkerEnv::request_finished`] for one at a time), and returns
//! once [`WorkerEnv::is_stopping`] is true and its requests are done.
//!
//! | Signal to the master | Effect |
//! |---|---|
//! | `TERM` | graceful stop: workers accept what is in the backlog, finish their requests within `graceful_timeout`, then SIGKILL; exit status 0 |
//! | `INT`, `QUIT` | fast stop: workers exit at once (SIGKILL after 5 s at most) |
//! | a second `TERM` or `INT` during a graceful stop | turns it into a fast one |
//! | `HUP` | reload: new workers (the app rebuilt in each), and once they are ready the old ones stop gracefully |
//! | `TTIN`, `TTOU` | one worker more, one fewer (never fewer than 1) |
//! | `USR1` | reopen log files: the master and every worker reopen the files of the crate's log sink ([`SupervisorBuilder::access_log_file`], [`error_log_file`](SupervisorBuilder::error_log_file)), then the `on_reopen_logs` hook runs |
//! | `USR2` | binary upgrade: re-executes the program with the listeners (`LISTEN_FDS`); once the new master's workers are ready, it sends this master SIGTERM. A new master that has not done so within `boot_timeout` is killed (SIGKILL) and the upgrade abandoned, logged with why: this master keeps serving |
//! | `CHLD` | reap |
//!
//! Worker exits are logged with their cause: `exited with code 1 on its own`; `killed by the
//! supervisor after a heartbeat timeout (SIGABRT; …)`; `killed by SIGKILL from outside the supervisor
//! (often the kernel OOM killer: check dmesg)`, never gunicorn's "Perhaps out of memory?" after a kill
//! of its own.
//!
//! **Restart intensity**, as an Erlang/OTP supervisor: more than N restarts of failed workers in T
//! seconds (default 10 in 60 s) halts the master with exit status 1 and an error naming the last
//! failure, instead of a crash loop. **Boot errors**: a worker that exits before it is ready, or is not
//! ready within `boot_timeout`, halts the master at once with exit status 3 ([`EXIT_BOOT_ERROR`]).
//!
//! **Recycling**: with [`SupervisorBuilder::max_requests`], a worker that reached its count asks to retire; the
//! master forks its replacement and tells the old one to stop only once the replacement is ready, so
//! capacity never drops (gunicorn #2422, #3038). The same replacement first recycles a worker
//! whose resident memory passes [`SupervisorBuilder::max_worker_memory`] (measured by the master
//! from `/proc/<pid>/statm` about once a second) or whose age passes
//! [`SupervisorBuilder::max_worker_age`] (plus a random 0..=10 %), with a log line that gives the
//! reason: `worker 3 (pid 1234) recycled: resident memory 210 MiB over max_worker_memory 200 MiB`.
//!
//! **User and group**: with [`SupervisorBuilder::user`] / [`SupervisorBuilder::group`]
//! (`PREFORK_USER`, `PREFORK_GROUP`) the master, started as root, binds the listeners and opens
//! the log files, and each worker switches to that account right after its fork, before any of
//! the app's code runs (gunicorn's `--user` / `--group`). The master gives the log files it opens
//! to that account, so that the workers can reopen them on SIGUSR1.
//!
//! **TLS** is terminated at a proxy in front (nginx, an Ingress, a load balancer), not by the
//! workers: the proxy holds and renews the certificates, speaks HTTP/2 and HTTP/3 to clients and
//! absorbs slow ones, and the app learns the client's address and scheme from the forwarding
//! headers it trusts (`forwarded_allow_ips`). The repository's `deploy/` has the nginx site (TLS
//! server block included), the systemd units and a Kubernetes Deployment, each checked by a test.
//!
//! **systemd**: sockets passed by socket activation (`LISTEN_FDS`, `LISTEN_PID`, from fd 3) are used
//! instead of the configured addresses, and the variables are unset. With `NOTIFY_SOCKET` set (an
//! abstract `@name` works), the master sends `READY=1` once the workers are ready (gunicorn sends it
//! before any worker exists), `RELOADING=1` then `READY=1` around a reload, `STOPPING=1`, and
//! `STATUS=` with the number of ready workers. The soft `RLIMIT_NOFILE` is raised to the hard limit at
//! start.
//!
//! ```ini
//! # /etc/systemd/system/app.socket
//! [Socket]
//! ListenStream=0.0.0.0:8000
//! Backlog=2048
//! [Install]
//! WantedBy=sockets.target
//!
//! # /etc/systemd/system/app.service
//! [Service]
//! Type=notify
//! ExecStart=/usr/local/bin/app
//! ExecReload=/bin/kill -HUP $MAINPID
//! KillMode=mixed
//! TimeoutStopSec=40
//! # The master sends WATCHDOG=1 every WatchdogSec/2 while its loop runs; a hung master is
//! # killed (SIGABRT) and restarted.
//! WatchdogSec=10
//! Restart=on-failure
//! # Processes (WEB_CONCURRENCY) here; threads per process are the pool's own setting.
//! Environment=WEB_CONCURRENCY=4
//! ```
//!
//! `KillMode=mixed` lets the master stop its workers itself (systemd sends SIGTERM to the master
//! only, then SIGKILL to whatever is left after `TimeoutStopSec`, which should exceed
//! `graceful_timeout`). With `WatchdogSec=`, systemd sets `WATCHDOG_USEC` and `WATCHDOG_PID`; the
//! master sends `WATCHDOG=1` at half that interval (only when `WATCHDOG_PID` is unset or its own,
//! or the master it replaced by a binary upgrade). The names of the sockets systemd passes
//! (`LISTEN_FDNAMES`, from `FileDescriptorName=`) are
//! [`Supervisor::listener_names`] and [`WorkerEnv::listener_names`], in the order of the
//! listeners.
//!
//! On a stop (SIGTERM, SIGINT, SIGQUIT) the master first makes the listen sockets it owns refuse
//! new connections (a socket filter drops new SYNs), so that the workers drain what is queued and
//! no client is queued on a socket nobody will accept on; sockets passed by systemd are left
//! alone (systemd keeps them, and their queue waits for the next start).
//!
//! **Containers.** After SIGUSR2 (binary upgrade) the new master is the child of the old one; when
//! the old master exits, the new one is re-parented to PID 1. In a container PID 1 is often your
//! program's master itself, or a shell: then nothing reaps the old master's zombie and, after an
//! upgrade, the new master has no parent that reaps it either. Run the container with an init
//! that reaps and forwards signals: `docker run --init` (tini), `tini` or `dumb-init` as the
//! entrypoint, or `shareProcessNamespace` in Kubernetes. Under systemd, the unit's main process
//! moves to the new master (`MAINPID=` with its `READY=1`), as above.
//!
//! **Kubernetes.** Turn on the server's own health routes on each worker's `ServerBuilder`
//! (`.health_routes("/readyz", "/livez")`, in the `configure` of
//! [`Supervisor::serve_http`], or on a thread-mode server): they answer without a
//! worker, so a saturated pool still answers its probes. Readiness says 503 until the workers
//! are up and from the first moment of a graceful stop; liveness says 503 only when every worker
//! has been busy with no request completed for `live_after` (the stuck report, which is the
//! body). Probe settings that match:
//!
//! ```text
//! spec:
//!   terminationGracePeriodSeconds: 40   # > drain_delay + graceful_timeout (+ a margin)
//!   containers:
//!   - name: app
//!     startupProbe:                     # a slow boot (per-worker state, caches) is not killed:
//!       httpGet: { path: /livez, port: 8000 }
//!       periodSeconds: 2                # up to 2 s × 60 = 2 min to come up; liveness waits
//!       failureThreshold: 60
//!     readinessProbe:                   # out of the Service as soon as it says 503
//!       httpGet: { path: /readyz, port: 8000 }
//!       periodSeconds: 2
//!       failureThreshold: 1
//!     livenessProbe:                    # restart only a stuck server: timeoutSeconds and
//!       httpGet: { path: /livez, port: 8000 }   # live_after well above the slowest request
//!       periodSeconds: 10
//!       timeoutSeconds: 5
//!       failureThreshold: 3
//! ```
//!
//! On a pod's deletion Kubernetes sends SIGTERM while the endpoints are being removed: a thread-mode
//! server with `.drain_delay(d)` keeps accepting (readiness 503) for `d` before it closes its
//! listeners, so set `d` to about the readiness `periodSeconds × failureThreshold` plus the
//! endpoint propagation (a few seconds), and `terminationGracePeriodSeconds` above `d` plus the
//! graceful timeout. Under the supervisor the master stops new connections at once on a stop
//! (above), so there use a `preStop` sleep of the same length instead.
//!
//! # Examples
//!
//! The HTTP server in 2 processes × 8 threads (`examples/prefork_server.rs` is a complete template):
//!
//! ```no_run
//! use prefork_pool::http::types::http;
//! use prefork_pool::prefork::Supervisor;
//! use std::time::Duration;
//!
//! let status = Supervisor::builder()
//!     .bind("127.0.0.1:8000")
//!     .workers(2)
//!     .serve_http(
//!         |server| server.pool(|p| p.workers(8).deadline(Duration::from_secs(30))),
//!         // Runs in each worker after the fork: open per-process resources here.
//!         || Ok::<_, String>(|req: prefork_pool::http::HttpRequest, _ctx: &prefork_pool::Context| {
//!             http::Response::new(format!("hello from {}\n", req.uri().path()).into_bytes())
//!         }),
//!     );
//! std::process::exit(status);
//! ```
//!
//! A worker of your own, that answers every connection with a fixed response:
//!
//! ```no_run
//! use std::io::{Read, Write};
//! use std::time::Duration;
//! use prefork_pool::prefork::{Supervisor, WorkerEnv};
//!
//! let status = Supervisor::builder()
//!     .bind("127.0.0.1:8000")
//!     .workers(2)
//!     .run(|| {
//!         // Runs in each worker after the fork: open per-process resources here.
//!         Ok::<_, std::io::Error>(|env: &mut WorkerEnv| {
//!             env.ready();
//!             while !env.is_stopping() {
//!                 let Ok(readable) = env.wait_for_listeners(Duration::from_millis(500)) else {
//!                     return 1;
//!                 };
//!                 for i in readable {
//!                     let listener = env.listeners()[i].tcp().unwrap();
//!                     while let Ok((mut conn, _)) = listener.accept() {
//!                         let mut buf = [0u8; 4096];
//!                         let _ = conn.read(&mut buf);
//!                         let _ = conn.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\nhi\n");
//!                         env.request_finished();
//!                     }
//!                 }
//!             }
//!             0
//!         })
//!     });
//! std::process::exit(status);
//! ```
//!
//! # Limitations
//!
//! - Unix only; `PR_SET_PDEATHSIG`, the thread-count check and abstract notify sockets are Linux
//!   only. Elsewhere a worker whose master was SIGKILLed notices it on its next
//!   [`WorkerEnv::wait_for_listeners`] (its parent changed) and stops gracefully.
//! - SIGUSR2 re-executes the program from the path it was started with: a new build must be
//!   installed at that path. The new master is a child of the old one until the old one exits; under
//!   systemd it announces itself with `MAINPID=` (the unit needs `NotifyAccess=all`).
//! - A worker's SIGTERM/SIGINT/SIGQUIT handlers are the supervisor's (through `signal-hook`); the
//!   master's other signals (HUP, USR2, TTIN, TTOU, WINCH) are ignored in workers (USR1 too,
//!   unless the crate's log sink is installed: then it reopens the worker's files), and SIGCHLD
//!   is back to its default. Worker code should watch [`WorkerEnv::is_stopping`] instead of handling
//!   SIGTERM itself.
//! - A fast stop ends a worker with `_exit(0)` from its signal handler: no destructor runs (and
//!   the access lines of its last 100 ms, still queued for the log thread, are lost).
//! - Process titles are set with `prctl(PR_SET_NAME)` (Linux): `ps -o comm`, `top` and `pgrep`
//!   show `prefork: master` and `prefork: worker` (the kernel keeps 15 bytes of
//!   `prefork: worker N [NAME]`, see [`SupervisorBuilder::proc_name`]); the command line that
//!   `ps -f` shows is the program's own, not rewritten.
//! - After [`Supervisor::run`] returns, the signals it handled stay caught by signal-hook's handler
//!   with no action left (so they are ignored): exit the process with the status `run` returned.
//! - The master kills a worker with SIGABRT first, whose default action may write a core dump
//!   (see `ulimit -c`).
//! - The heartbeat table has 1024 slots: at most 256 workers, and at most 1024 processes alive at
//!   once (old and new during reloads).
//! - With [`Supervisor::serve_http`], the heartbeat is written by each worker's main thread, not by
//!   the HTTP server's reactor thread: a reactor stuck while the main thread runs is not detected
//!   by the heartbeat (stuck handlers are, by their deadlines).
//! - A sibling worker's call to its own service over TCP is recognised by reading the sibling's
//!   `/proc/<pid>/fd` (Linux): workers that drop privileges to different users by themselves, or
//!   make themselves non-dumpable (`PR_SET_DUMPABLE` 0), cannot read each other's, and such a
//!   call queues as any other. The switch of [`SupervisorBuilder::user`] makes them dumpable
//!   again for this (the kernel clears it on a change of user), so that they can. Over a Unix socket the `SO_PEERCRED` pid is used, which names the
//!   process that connected (a socket handed to another process keeps the first one's pid).
//!   Calls from a worker's own subprocesses (`curl` run by a handler) are not recognised.

mod builder;
mod children;
mod config;
mod exit;
mod log_settings;
mod master;
mod os;
mod recycle;
mod recycle_settings;
mod report;
mod run_as;
mod settings;
mod supervisor;
#[cfg(feature = "tls")]
mod tls_settings;
mod workers;

pub use builder::{StartError, SupervisorBuilder};
pub use config::{EXIT_BOOT_ERROR, EXIT_ERROR, EXIT_OK};
pub use exit::WorkerExit;
pub use os::listeners::Listener;
pub use supervisor::Supervisor;
pub use workers::heartbeat::{Heartbeat, RequestGuard};
#[cfg(feature = "tower")]
#[cfg_attr(docsrs, doc(cfg(feature = "tower")))]
pub use workers::service::{stopping, BoxError, ServiceBody, ServiceConfig};
pub use workers::shared_metrics::{server_metrics, worker_metrics, WorkerMetrics};
pub use workers::siblings::Siblings;
pub use workers::worker::{Worker, WorkerEnv, EXIT_WORKER_BOOT_ERROR};
