//! Process mode for async apps (feature `tower`): each worker process runs a tokio runtime that
//! serves a `tower::Service` (an axum `Router`, a hyper service) with hyper's HTTP/1.1 on the
//! listeners it inherited, with the supervisor's glue done: per-request heartbeat tracking and
//! deadline, graceful stop on the worker's stop request, zero-error reload under keep-alive load.

mod accept;
mod body;
mod call;
mod config;
mod conn;
mod lifeline;
mod line;
mod overdue;
mod request;
mod stop;

use std::fmt;
use std::pin::pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper::body::{Body, Bytes};
use hyper::{Request, Response};
use tokio::sync::{watch, Notify};

pub use body::ServiceBody;
pub use config::ServiceConfig;
pub use stop::stopping;

use crate::http::ops::forwarded::ProxySettings;
use crate::http::AcceptPolicy;
use crate::prefork::builder::SupervisorBuilder;
use crate::prefork::config::EXIT_ERROR;
use crate::prefork::report::fatal;
use crate::prefork::supervisor::Supervisor;
use crate::prefork::workers::balance::{SlotGate, RESCAN};
use crate::prefork::workers::worker::{Worker, WorkerEnv, EXIT_WORKER_BOOT_ERROR};
use crate::prefork::Listener;
use accept::{accept_loop, register, GateWake, StdListener};
use config::Checked;
use request::Shared;

/// The error type a served service and its body may have (anything that boxes into it).
#[cfg_attr(docsrs, doc(cfg(feature = "tower")))]
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The [`Worker`] that [`Supervisor::serve_service`] runs in each worker process.
struct ServiceWorker<S> {
    service: Option<S>,
    config: Checked,
    graceful: Duration,
}

/// What the worker serves, inside the crate: the bounds of [`Supervisor::serve_service`]'s app
/// written once (a `tower::Service` of requests with a [`ServiceBody`], cloned per connection).
pub(crate) trait AppService<B>:
    tower_service::Service<
        Request<ServiceBody>,
        Response = Response<B>,
        Future: Send,
        Error: Into<BoxError>,
    > + Clone
    + Send
    + 'static
{
}

impl<T, B> AppService<B> for T where
    T: tower_service::Service<
            Request<ServiceBody>,
            Response = Response<B>,
            Future: Send,
            Error: Into<BoxError>,
        > + Clone
        + Send
        + 'static
{
}

/// The body of the app's answers, as hyper sends it: the bounds written once.
pub(crate) trait AnswerBody:
    Body<Data = Bytes, Error: Into<BoxError>> + Send + 'static
{
}

impl<T> AnswerBody for T where T: Body<Data = Bytes, Error: Into<BoxError>> + Send + 'static {}

impl<S, B> Worker for ServiceWorker<S>
where
    // `Response = Response<B>` names `B` for the impl (a bound through `AppService` does not).
    S: AppService<B> + tower_service::Service<Request<ServiceBody>, Response = Response<B>>,
    B: AnswerBody,
{
    fn run(&mut self, env: &mut WorkerEnv) -> i32 {
        let Some(service) = self.service.take() else {
            return 1;
        };
        let boot_error = |env: &WorkerEnv, what: String| {
            env.heartbeat().fail_boot(&what);
            log::error!(
                "worker {} (pid {}): {what}",
                env.number(),
                std::process::id()
            );
            EXIT_WORKER_BOOT_ERROR
        };
        let rt = match tokio::runtime::Builder::new_multi_thread()
            .worker_threads(self.config.threads)
            .thread_name("prefork-service")
            .enable_all()
            .build()
        {
            Ok(rt) => rt,
            Err(e) => return boot_error(env, format!("the tokio runtime could not start: {e}")),
        };
        let (stop_tx, stop_rx) = watch::channel(false);
        let heartbeat = env.heartbeat();
        // The siblings' gates count this process's idle runtime threads.
        heartbeat
            .slot()
            .set_threads(u32::try_from(self.config.threads).unwrap_or(u32::MAX));
        let gate = SlotGate::new(heartbeat.slot(), env.siblings().slots(), env.gate_ping());
        // Leaked: one per worker process, for its life; a plain reference costs the requests no
        // reference-count traffic on a cache line every runtime thread shares.
        let shared: &'static Shared = Box::leak(Box::new(Shared {
            gate: Some(gate),
            counters: heartbeat.slot().metrics(),
            heartbeat,
            proxy: ProxySettings {
                trusted: self.config.trusted.clone(),
                proxy_protocol: self.config.proxy_protocol,
            },
            cfg: self.config.clone(),
            stop: stop_rx,
            draining: AtomicBool::new(false),
            conns: AtomicUsize::new(0),
            idle: Notify::new(),
            last_answer_ms: AtomicU64::new(0),
            tick_ms: AtomicU64::new(0),
            born: Instant::now(),
            watch: Default::default(),
            done: AtomicBool::new(false),
            #[cfg(feature = "tls")]
            tls: crate::http::tls::current().map(|c| {
                let mut c = (*c).clone();
                if self.config.http2 {
                    // HTTP/2 over TLS is chosen by ALPN (the auto builder serves either).
                    c.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
                }
                tokio_rustls::TlsAcceptor::from(Arc::new(c))
            }),
        }));
        let mut loops = Vec::new();
        let mut lifeline_listeners = Vec::new();
        {
            let _runtime = rt.enter();
            let wake = Arc::new(GateWake::new(env.gate_ping()));
            // The gate's view of the table stays as fresh as the HTTP server's (see `refresh`).
            let fresh = shared;
            loops.push(rt.spawn(async move {
                let mut stop = fresh.stop.clone();
                let mut tick = tokio::time::interval(RESCAN);
                while conn::or_else(tick.tick(), stop.wait_for(|s| *s))
                    .await
                    .is_some()
                {
                    if let Some(gate) = &fresh.gate {
                        gate.refresh();
                    }
                }
            }));
            // The runtime's pulse, for the lifeline.
            let pulse = shared;
            loops.push(rt.spawn(async move {
                let mut stop = pulse.stop.clone();
                let mut tick = tokio::time::interval(lifeline::TICK);
                while conn::or_else(tick.tick(), stop.wait_for(|s| *s))
                    .await
                    .is_some()
                {
                    let ms = pulse.born.elapsed().as_millis() as u64;
                    pulse.tick_ms.store(ms, Ordering::Relaxed);
                }
            }));
            for listener in env.take_listeners() {
                if let Listener::Tcp(l) = &listener {
                    match l.try_clone() {
                        Ok(copy) => lifeline_listeners.push(copy),
                        Err(e) => log::warn!("no lifeline on a listener: {e}"),
                    }
                }
                let listener = match listener {
                    Listener::Tcp(l) => l.set_nonblocking(true).map(|()| StdListener::Tcp(l)),
                    Listener::Unix(l) => l.set_nonblocking(true).map(|()| StdListener::Unix(l)),
                };
                match listener.and_then(register) {
                    Ok(l) => {
                        loops.push(rt.spawn(accept_loop(l, shared, wake.clone(), service.clone())))
                    }
                    Err(e) => {
                        return boot_error(env, format!("a listener could not be registered: {e}"))
                    }
                }
            }
        }
        // The spare runtime and the lifeline that uses it when every runtime thread is blocked.
        let spare = match tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("prefork-spare")
            .enable_all()
            .build()
        {
            Ok(rt) => rt,
            Err(e) => return boot_error(env, format!("the spare runtime could not start: {e}")),
        };
        let lifeline = lifeline::start(
            lifeline_listeners,
            shared,
            env.siblings(),
            spare.handle().clone(),
            service.clone(),
        );
        let lifeline = match lifeline {
            Ok(l) => l,
            Err(e) => return boot_error(env, format!("the lifeline thread could not start: {e}")),
        };
        // Accepting from now: the siblings' gates count this process (0 connections) at once,
        // not only after its first wake-up (as the HTTP server's reactor publishes on its first
        // pass).
        heartbeat.slot().set_conns(0);
        env.ready();
        while !env.is_stopping() {
            // Waits on the stop request only (the runtime owns the listeners), beating.
            if env.wait_for_listeners(Duration::from_millis(500)).is_err() {
                std::thread::sleep(Duration::from_millis(500));
            }
        }
        shared.draining.store(true, Ordering::Release);
        let _ = stop_tx.send(true);
        // The app's `stopping()` futures resolve: its WebSockets may say goodbye.
        stop::begin();
        if let Some(gate) = &shared.gate {
            // This process accepts no more: the siblings stop counting it.
            gate.closed();
        }
        let deadline = Instant::now() + self.graceful;
        let drained = rt.block_on(async {
            for l in loops {
                let _ = l.await;
            }
            loop {
                let mut idle = pin!(shared.idle.notified());
                idle.as_mut().enable();
                if shared.conns.load(Ordering::Acquire) == 0 {
                    return true;
                }
                if tokio::time::timeout_at(deadline.into(), idle)
                    .await
                    .is_err()
                {
                    return false;
                }
            }
        });
        if !drained {
            log::warn!(
                "worker {} (pid {}): {} connection(s) still open after the graceful timeout; closed",
                env.number(),
                std::process::id(),
                shared.conns.load(Ordering::Acquire)
            );
        }
        shared.done.store(true, Ordering::Release);
        let _ = lifeline.join();
        rt.shutdown_timeout(Duration::from_millis(100));
        spare.shutdown_timeout(Duration::from_millis(100));
        log::debug!(
            "worker {} (pid {}) stopped",
            env.number(),
            std::process::id()
        );
        0
    }
}

impl Supervisor {
    /// Serves an async app in each worker process (feature `tower`): a tokio runtime of
    /// [`ServiceConfig::threads`] threads runs hyper's HTTP/1.1 on the listeners the master bound
    /// (or inherited from systemd), each request answered by `service`, any
    /// `tower::Service<Request<`[`ServiceBody`]`>>` that is `Clone` (an axum `Router` is: it
    /// serves any body). The body is hyper's, counted against
    /// [`ServiceConfig::limit_body_bytes`] as it streams in.
    ///
    /// The glue a worker needs is done here:
    /// - each request is tracked in the worker's heartbeat (its request line and its deadline,
    ///   [`ServiceConfig::deadline`]): at the deadline the request's future is dropped and the
    ///   client gets 504; a request still running `request_grace` after it (a runtime thread
    ///   blocked in a synchronous call) gets the process killed and replaced by the master;
    /// - requests are counted in the heartbeat, so
    ///   [`SupervisorBuilder::max_requests`](crate::prefork::SupervisorBuilder::max_requests) recycles
    ///   workers (after their replacement is ready);
    /// - on a stop (SIGTERM, a reload by SIGHUP, a recycle, SIGTTOU) the worker stops accepting,
    ///   serves the connections already in the listen backlog, answers every request under way
    ///   and the next request of each kept-alive connection (with `Connection: close`, within one
    ///   second of idleness), then exits, within 90% of the `graceful_timeout`.
    ///
    /// - the operator features of [`serve_http`](Self::serve_http), set on the
    ///   [`ServiceConfig`] under the HTTP server's names and checked by the same code: the
    ///   access log (the crate's log sink and its SIGUSR1 reopen included), the size limits
    ///   (414, 431, 413 answered by the server), head and keep-alive timeouts, health routes
    ///   answered before the service (readiness 503 from the first moment of a stop), per-route
    ///   deadlines, the believed client behind a trusted proxy (a
    ///   [`PeerAddr`](crate::http::PeerAddr) extension, or axum's `ConnectInfo` with
    ///   [`ServiceConfig::connect_info`]); every request and connection is counted in the
    ///   supervisor's shared table, so that [`server_metrics`](crate::prefork::server_metrics)
    ///   and [`worker_metrics`](crate::prefork::worker_metrics) show the whole server on the
    ///   app's own `/metrics` page, beside its own families;
    /// - upgrades (hyper's `with_upgrades`: axum's `WebSocketUpgrade` completes). An upgraded
    ///   connection counts as open for the drain: on a stop it keeps running until the graceful
    ///   timeout, then the runtime is shut down and its socket closed (without a WebSocket close
    ///   frame). The app sees the stop coming with [`stopping`](crate::prefork::stopping), a
    ///   future that resolves at its first moment: a WebSocket sends its Close frame (1001,
    ///   going away) and ends, and the worker exits as soon as nothing else is open.
    ///
    /// - the self-call in async clothes: a handler that blocks every runtime thread on a
    ///   synchronous call (`reqwest::blocking`, `ureq`, a sync SDK) to its own server would wait
    ///   for an answer that runtime can never give. A lifeline thread beside the runtime sees
    ///   the runtime stall (its tick 300 ms late while requests run) and takes a connection
    ///   left in a TCP listener's queue for 250 ms (no sibling took it) onto a spare runtime of
    ///   one thread; when it comes from this process or a sibling worker, a warning names the
    ///   blocked request and the fix, once per route. Unix-socket listeners have no lifeline.
    /// - the 504 of a blocked request: a handler that blocks its runtime thread also blocks
    ///   its own deadline's timer. The lifeline answers it: an HTTP/1.1 request still running
    ///   250 ms after its deadline with nothing of its answer written gets the same 504
    ///   (`Connection: close`) written straight to its socket from the lifeline thread, which is
    ///   then shut down, and fenced off (the runtime's later writes to it fail). It is logged
    ///   (the request, that its runtime thread or every runtime thread was blocked, the fix)
    ///   and counted in the metrics and the access log as the runtime's 504 is; the process is
    ///   still killed and replaced if the request still runs `request_grace` after its
    ///   deadline. An HTTP/2 request gets no such 504: its stream shares the connection with
    ///   others, framed by hyper's state on the blocked runtime, and cannot be answered from
    ///   outside it. (One case is not covered: a pipelining client that does not read, so that
    ///   hyper still holds the end of the previous answer when the next request blocks the
    ///   runtime; that answer is then cut before the 504.)
    ///
    /// `app` builds the service in each worker after the fork (or once before it with
    /// [`SupervisorBuilder::preload`]), before the worker's runtime starts; an `Err` is a boot
    /// error. A service error is answered 500. Put blocking calls behind a
    /// [`Pool`](crate::Pool) (`pool.submit(req).await`), not on the runtime's threads.
    ///
    /// **No `#[tokio::main]`.** The master forks its workers, and a fork copies only the calling
    /// thread: a runtime started before it would be half there in every worker (its threads
    /// gone, any lock they held held for ever), so the master must have no thread, and
    /// [`run`](Self::run) refuses to start in a multi-threaded process. `main` is a plain
    /// function; each worker process starts its own runtime after the fork. An axum app's main
    /// (`templates/examples/axum_hello.rs`):
    ///
    /// ```ignore
    /// fn main() {
    ///     let status = Supervisor::builder()
    ///         .bind("127.0.0.1:8000")
    ///         .with_env() // PORT, WEB_CONCURRENCY, PREFORK_TIMEOUT, ... win over the code's values
    ///         .serve_service(ServiceConfig::new(), || {
    ///             // In each worker process, after the fork: open pools and clients here.
    ///             Ok::<_, String>(Router::new().route("/", get(|| async { "hello\n" })))
    ///         });
    ///     std::process::exit(status);
    /// }
    /// ```
    ///
    /// The same main with a service written by hand (this crate does not depend on axum; any
    /// `tower::Service<http::Request<ServiceBody>>` that is `Clone` is served):
    ///
    /// ```no_run
    /// use prefork_pool::http::types::http;
    /// use prefork_pool::prefork::{ServiceBody, ServiceConfig, Supervisor};
    /// use std::time::Duration;
    ///
    /// #[derive(Clone)]
    /// struct Hello;
    ///
    /// impl tower_service::Service<http::Request<ServiceBody>> for Hello {
    ///     type Response = http::Response<String>;
    ///     type Error = std::convert::Infallible;
    ///     type Future = std::future::Ready<Result<Self::Response, Self::Error>>;
    ///     fn poll_ready(&mut self, _: &mut std::task::Context<'_>)
    ///         -> std::task::Poll<Result<(), Self::Error>> { std::task::Poll::Ready(Ok(())) }
    ///     fn call(&mut self, _: http::Request<ServiceBody>) -> Self::Future {
    ///         std::future::ready(Ok(http::Response::new("hello\n".to_string())))
    ///     }
    /// }
    ///
    /// // No #[tokio::main]: see above.
    /// fn main() {
    ///     let status = Supervisor::builder()
    ///         .bind("127.0.0.1:8000")
    ///         .with_env()
    ///         .serve_service(
    ///             ServiceConfig::new().deadline(Duration::from_secs(10)),
    ///             // In each worker process, after the fork: open pools and clients here.
    ///             || Ok::<_, String>(Hello),
    ///         );
    ///     std::process::exit(status);
    /// }
    /// ```
    ///
    /// The worker processes accept in balance, through the same load-aware gate as
    /// [`serve_http`](Self::serve_http)'s (see the module `balance.rs`): a process takes a
    /// connection only while it has no more open connections than the least loaded sibling that
    /// can take a request, and none while its running requests fill its runtime threads with
    /// none finished lately (they are blocked, or all waiting on long requests) and a sibling
    /// can; a kept-alive connection carries at most about 2 s of requests (then
    /// `Connection: close`), so that load moves to where the gate sends it. The heartbeat is
    /// written by each worker's main thread, so a runtime whose threads are all blocked is
    /// caught by the requests' deadlines, not by the heartbeat. HTTP/1.1, and HTTP/2 with prior
    /// knowledge with [`ServiceConfig::http2_prior_knowledge`]; the PROXY protocol with
    /// [`ServiceConfig::proxy_protocol`]. HTTPS (feature `tls`, through tokio-rustls) with the
    /// supervisor's `certfile` / `keyfile` (`PREFORK_CERTFILE` / `PREFORK_KEYFILE`), as for
    /// `serve_http`: the master reads the files and rereads them at SIGHUP; the handshake must
    /// finish within the head timeout.
    #[cfg_attr(docsrs, doc(cfg(feature = "tower")))]
    pub fn serve_service<A, S, E, B>(self, config: ServiceConfig, mut app: A) -> i32
    where
        A: FnMut() -> Result<S, E>,
        E: fmt::Display,
        S: tower_service::Service<Request<ServiceBody>, Response = Response<B>>
            + Clone
            + Send
            + 'static,
        S::Future: Send,
        S::Error: Into<BoxError>,
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        let graceful = self.graceful_timeout().mul_f64(0.9);
        // Checked here, in the master: a value that is not allowed stops the start, by its name.
        let config = match config.check(&self.worker_server()) {
            Ok(c) => c,
            Err(e) => {
                fatal(&format!("cannot start: {e}"));
                return EXIT_ERROR;
            }
        };
        self.run(move || {
            app().map(|service| ServiceWorker {
                service: Some(service),
                config: config.clone(),
                graceful,
            })
        })
    }
}

impl SupervisorBuilder {
    /// [`build`](SupervisorBuilder::build), then [`Supervisor::serve_service`]; a start error is
    /// written to stderr (and the log) and gives [`EXIT_ERROR`].
    #[cfg_attr(docsrs, doc(cfg(feature = "tower")))]
    pub fn serve_service<A, S, E, B>(self, config: ServiceConfig, app: A) -> i32
    where
        A: FnMut() -> Result<S, E>,
        E: fmt::Display,
        S: tower_service::Service<Request<ServiceBody>, Response = Response<B>>
            + Clone
            + Send
            + 'static,
        S::Future: Send,
        S::Error: Into<BoxError>,
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        match self.build() {
            Ok(s) => s.serve_service(config, app),
            Err(e) => {
                fatal(&format!("cannot start: {e}"));
                EXIT_ERROR
            }
        }
    }
}
