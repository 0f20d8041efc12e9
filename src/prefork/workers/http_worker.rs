//! Process mode with the crate's HTTP front end: each worker process runs an
//! [`http::Server`](crate::http::Server) on the listeners it inherited.

use std::fmt;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::http::{
    HttpRequest, HttpResponse, IntoResponse, Router, ServeError, Server, ServerBuilder,
    ServerHandle, StuckPolicy,
};
use crate::prefork::builder::SupervisorBuilder;
use crate::prefork::config::{WorkerServer, EXIT_ERROR};
use crate::prefork::report::fatal;
use crate::prefork::supervisor::Supervisor;
use crate::prefork::workers::balance::SlotGate;
use crate::prefork::workers::heartbeat::{Heartbeat, PUBLISH_EVERY};
use crate::prefork::workers::worker::{Worker, WorkerEnv, EXIT_WORKER_BOOT_ERROR};
use crate::prefork::Listener;
use crate::Context;

/// A configuration step for each worker's [`ServerBuilder`] (threads, deadline, limits, …).
type Configure = Rc<dyn Fn(ServerBuilder) -> ServerBuilder>;

/// Starts a worker's server with the application's handler, given the configured builder and the
/// heartbeat its requests are tracked in (see [`tracked`]).
type Start = Box<dyn FnOnce(ServerBuilder, Heartbeat) -> Result<ServerHandle, ServeError>>;

/// The [`Worker`] that [`Supervisor::serve_http`] runs in each worker process.
struct HttpWorker {
    configure: Configure,
    server: WorkerServer,
    start: Option<Start>,
    graceful: Duration,
}

/// Runs `handler` with the request counted as running in the heartbeat (the siblings' accept
/// gates and self-call search read the count; `max_requests` counts it done). What it is and its
/// deadline are in the pool's record, which the worker's main thread publishes when it runs past
/// its deadline (see [`Heartbeat::publish_overdue`]): a handler thread still stuck
/// `request_grace` after its deadline (which the Pool's watchdog answered with 504 but cannot
/// stop) gets the whole process replaced.
fn counted(
    heartbeat: Heartbeat,
    req: HttpRequest,
    handler: impl FnOnce(HttpRequest) -> HttpResponse,
) -> HttpResponse {
    let _running = heartbeat.count_running();
    handler(req)
}

impl Worker for HttpWorker {
    fn run(&mut self, env: &mut WorkerEnv) -> i32 {
        // A sibling's call to its own service may land here: served as a self-call when every
        // thread here is busy (set first, so that `configure` may replace it).
        let siblings = env.siblings();
        let heartbeat = env.heartbeat();
        // Threads per process: their own setting (`SupervisorBuilder::threads`, `PREFORK_THREADS`,
        // default 2; `configure` may set the pool again), never `WEB_CONCURRENCY`, which counts
        // the processes here. Then the request deadline, keep-alive and proxies it carries.
        let base = self
            .server
            .apply(Server::builder())
            // Only the siblings that are busy in every thread (see `Siblings::saturated_pids`).
            .sibling_pids(move || siblings.saturated_pids())
            // The master replaces a worker whose request runs past its deadline plus
            // `request_grace`: liveness tells the rest.
            .when_stuck(StuckPolicy::FailLiveness)
            .accept_gate(Arc::new(SlotGate::new(
                heartbeat.slot(),
                siblings.slots(),
                env.gate_ping(),
            )))
            // Counted in the shared table, so that any worker can show the whole server
            // (`prefork::server_metrics`).
            .shared_counters(heartbeat.slot().metrics());
        let mut builder = (self.configure)(base);
        for listener in env.take_listeners() {
            builder = match listener {
                Listener::Tcp(l) => builder.listener(l),
                Listener::Unix(l) => builder.unix_listener(l),
            };
        }
        let Some(start) = self.start.take() else {
            return 1;
        };
        let server = start(builder, heartbeat);
        let server = match server {
            Ok(s) => s,
            Err(e) => {
                env.heartbeat()
                    .fail_boot(&format!("the HTTP server could not start: {e}"));
                log::error!(
                    "worker {} (pid {}): the HTTP server could not start: {e}",
                    env.number(),
                    std::process::id()
                );
                return EXIT_WORKER_BOOT_ERROR;
            }
        };
        // The siblings' accept gates count this process's idle threads from here.
        heartbeat
            .slot()
            .set_threads(u32::try_from(server.stats().workers).unwrap_or(u32::MAX));
        env.ready();
        while !env.is_stopping() {
            // Waits on the stop request only (the server owns the listeners), beating, and
            // publishes the request furthest past its deadline from the pool's records.
            if env.wait_for_listeners(PUBLISH_EVERY).is_err() {
                std::thread::sleep(PUBLISH_EVERY);
            }
            heartbeat.publish_overdue(&server.records(), Instant::now());
        }
        let report = server.shutdown(self.graceful);
        log::debug!(
            "worker {} (pid {}) stopped: {report:?}",
            env.number(),
            std::process::id()
        );
        0
    }
}

impl Supervisor {
    /// Runs an [`http::Server`](crate::http::Server) in each worker process, on the listeners the
    /// master bound (or inherited from systemd): the whole stack, gunicorn's model without its
    /// failure modes.
    ///
    /// - `configure` sets up each worker's [`ServerBuilder`], which starts with what the
    ///   supervisor carries: its [`threads`](SupervisorBuilder::threads) per process (default
    ///   2, `PREFORK_THREADS`; never `WEB_CONCURRENCY`, which counts processes here), request
    ///   [`timeout`](SupervisorBuilder::timeout), [`keep_alive`](SupervisorBuilder::keep_alive)
    ///   and [`forwarded_allow_ips`](SupervisorBuilder::forwarded_allow_ips). `configure` runs
    ///   after them and may set anything again (`pool(|p| p.workers(n))`, limits, timeouts, the
    ///   access log). Its listeners are added by the supervisor; do not `bind` here.
    ///
    /// The worker processes share each listen socket, and accept in balance: a process takes a
    /// connection only while it has no more open connections than the least loaded sibling with an
    /// idle handler thread, and none at all while its own threads are all busy and a sibling has
    /// one idle (see the module `balance.rs` for what was measured and why).
    /// - `app` builds the handler in each worker after the fork (or once before it with
    ///   [`SupervisorBuilder::preload`]); an `Err` is a boot error.
    ///
    /// Each running request is tracked in the worker's heartbeat, so a handler that stays stuck past
    /// its deadline plus `request_grace` (after the Pool's watchdog answered 504) gets its process
    /// replaced. On SIGTERM each worker shuts its server down gracefully (the listen backlog is
    /// served, in-flight requests finish) within 90% of the `graceful_timeout`. The heartbeat is
    /// written by the worker's main thread, not by the server's reactor thread.
    ///
    /// A handler that calls its own service over HTTP (instead of the
    /// [`Loopback`](crate::http::Loopback)) may land on another worker process, whose threads may
    /// all be busy with such calls too: each server is given the pids of its sibling workers
    /// ([`WorkerEnv::siblings`](crate::prefork::WorkerEnv::siblings), through
    /// [`ServerBuilder::sibling_pids`]), so such a request is served at once on a spare thread
    /// like a self-call (see [`ServerBuilder::max_spare`]), and logged once per route with the
    /// sibling's pid. `configure` may replace that with its own `sibling_pids`, or turn it off
    /// with `max_spare(0)`.
    ///
    /// ```no_run
    /// use prefork_pool::prefork::Supervisor;
    /// use std::time::Duration;
    ///
    /// let status = Supervisor::builder()
    ///     .bind("127.0.0.1:8000")
    ///     .workers(4)
    ///     .build()
    ///     .unwrap()
    ///     .serve_http(
    ///         |server| server.pool(|p| p.workers(8).deadline(Duration::from_secs(30))),
    ///         || Ok::<_, String>(|_req, _ctx: &prefork_pool::Context| "hello\n"),
    ///     );
    /// std::process::exit(status);
    /// ```
    ///
    /// The handler is what [`ServerBuilder::serve`] takes: its answer is anything
    /// [`IntoResponse`]. A [`Router`] goes to [`serve_router`](Self::serve_router).
    pub fn serve_http<C, A, H, R, E>(self, configure: C, app: A) -> i32
    where
        C: Fn(ServerBuilder) -> ServerBuilder + 'static,
        A: FnMut() -> Result<H, E>,
        H: Fn(HttpRequest, &Context) -> R + Send + Sync + 'static,
        R: IntoResponse,
        E: fmt::Display,
    {
        self.run_http(configure, app, |handler: H| -> Start {
            Box::new(move |builder, heartbeat| {
                builder.serve(move |req, ctx| {
                    counted(heartbeat, req, |req| handler(req, ctx).into_response())
                })
            })
        })
    }

    /// [`serve_http`](Self::serve_http) with a [`Router`] (built by `app` in each worker, or once
    /// with [`preload`](SupervisorBuilder::preload)), as
    /// [`ServerBuilder::serve_router`] serves it: its routes' deadlines feed each worker's
    /// [`deadline_for`](ServerBuilder::deadline_for), after `configure`'s.
    ///
    /// ```no_run
    /// use prefork_pool::http::{get, Path, Router};
    /// use prefork_pool::prefork::Supervisor;
    ///
    /// let status = Supervisor::builder().bind("127.0.0.1:8000").build().unwrap().serve_router(
    ///     |server| server,
    ///     || Ok::<_, String>(Router::new().route("/hi/{name}", get(|Path(n): Path<String>| n))),
    /// );
    /// std::process::exit(status);
    /// ```
    pub fn serve_router<C, A, E>(self, configure: C, app: A) -> i32
    where
        C: Fn(ServerBuilder) -> ServerBuilder + 'static,
        A: FnMut() -> Result<Router, E>,
        E: fmt::Display,
    {
        self.run_http(configure, app, |router: Router| -> Start {
            Box::new(move |builder, heartbeat| {
                let router = Arc::new(router);
                builder
                    .route_deadlines(&router)
                    .serve(move |req, ctx| counted(heartbeat, req, |req| router.call(req, ctx)))
            })
        })
    }

    /// [`serve_router`](Self::serve_router) with per-worker-thread state, as
    /// [`ServerBuilder::serve_router_with_state`]: in each worker process, each handler thread
    /// runs `init(thread_index)` when it starts, and the route handlers whose first argument is
    /// `&mut W` get that thread's state (a database connection per thread; opened after the
    /// fork, never shared between processes).
    ///
    /// ```no_run
    /// use prefork_pool::http::{get, Router};
    /// use prefork_pool::prefork::Supervisor;
    ///
    /// struct Conn { served: u64 }
    /// fn count(conn: &mut Conn) -> String {
    ///     conn.served += 1;
    ///     format!("{} served by this thread\n", conn.served)
    /// }
    /// let status = Supervisor::builder().bind("127.0.0.1:8000").build().unwrap()
    ///     .serve_router_with_state(
    ///         |server| server,
    ///         |_thread| Ok::<_, std::io::Error>(Conn { served: 0 }),
    ///         || Ok::<_, String>(Router::new().route("/count", get(count))),
    ///     );
    /// std::process::exit(status);
    /// ```
    pub fn serve_router_with_state<C, W, IE, I, A, E>(self, configure: C, init: I, app: A) -> i32
    where
        C: Fn(ServerBuilder) -> ServerBuilder + 'static,
        W: 'static,
        IE: fmt::Display + 'static,
        I: Fn(usize) -> Result<W, IE> + Clone + Send + Sync + 'static,
        A: FnMut() -> Result<Router, E>,
        E: fmt::Display,
    {
        self.run_http(configure, app, move |router: Router| -> Start {
            let init = init.clone();
            Box::new(move |builder, heartbeat| {
                let router = Arc::new(router);
                builder.route_deadlines(&router).serve_with_state(
                    init,
                    move |w: &mut W, req, ctx| {
                        counted(heartbeat, req, |req| router.call_with_worker(req, ctx, w))
                    },
                )
            })
        })
    }

    /// What the `serve_*` above share: each worker process builds its app with `app` (after the
    /// fork, or once before with `preload`), and `start` makes the server's start of it.
    fn run_http<C, A, T, E>(
        self,
        configure: C,
        mut app: A,
        start: impl Fn(T) -> Start + 'static,
    ) -> i32
    where
        C: Fn(ServerBuilder) -> ServerBuilder + 'static,
        A: FnMut() -> Result<T, E>,
        E: fmt::Display,
    {
        let configure: Configure = Rc::new(configure);
        let server = self.worker_server();
        let graceful = self.graceful_timeout().mul_f64(0.9);
        self.run(move || {
            app().map(|app| HttpWorker {
                configure: configure.clone(),
                server: server.clone(),
                start: Some(start(app)),
                graceful,
            })
        })
    }
}

impl SupervisorBuilder {
    /// [`build`](SupervisorBuilder::build), then [`Supervisor::serve_http`]; a start error is written to
    /// stderr (and the log) and gives [`EXIT_ERROR`].
    pub fn serve_http<C, A, H, R, E>(self, configure: C, app: A) -> i32
    where
        C: Fn(ServerBuilder) -> ServerBuilder + 'static,
        A: FnMut() -> Result<H, E>,
        H: Fn(HttpRequest, &Context) -> R + Send + Sync + 'static,
        R: IntoResponse,
        E: fmt::Display,
    {
        match self.build() {
            Ok(s) => s.serve_http(configure, app),
            Err(e) => {
                fatal(&format!("cannot start: {e}"));
                EXIT_ERROR
            }
        }
    }

    /// [`build`](SupervisorBuilder::build), then [`Supervisor::serve_router`]; a start error is
    /// written to stderr (and the log) and gives [`EXIT_ERROR`].
    pub fn serve_router<C, A, E>(self, configure: C, app: A) -> i32
    where
        C: Fn(ServerBuilder) -> ServerBuilder + 'static,
        A: FnMut() -> Result<Router, E>,
        E: fmt::Display,
    {
        match self.build() {
            Ok(s) => s.serve_router(configure, app),
            Err(e) => {
                fatal(&format!("cannot start: {e}"));
                EXIT_ERROR
            }
        }
    }

    /// [`build`](SupervisorBuilder::build), then [`Supervisor::serve_router_with_state`]; a start
    /// error is written to stderr (and the log) and gives [`EXIT_ERROR`].
    pub fn serve_router_with_state<C, W, IE, I, A, E>(self, configure: C, init: I, app: A) -> i32
    where
        C: Fn(ServerBuilder) -> ServerBuilder + 'static,
        W: 'static,
        IE: fmt::Display + 'static,
        I: Fn(usize) -> Result<W, IE> + Clone + Send + Sync + 'static,
        A: FnMut() -> Result<Router, E>,
        E: fmt::Display,
    {
        match self.build() {
            Ok(s) => s.serve_router_with_state(configure, init, app),
            Err(e) => {
                fatal(&format!("cannot start: {e}"));
                EXIT_ERROR
            }
        }
    }
}
