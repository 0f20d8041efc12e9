//! Process mode for async apps (feature `tower`): each worker process runs a tokio runtime that
//! serves a `tower::Service` (an axum `Router`, a hyper service) with hyper's HTTP/1.1 on the
//! listeners it inherited, with the supervisor's glue done: per-request heartbeat tracking and
//! deadline, graceful stop on the worker's stop request, zero-error reload under keep-alive load.

use std::convert::Infallible;
use std::fmt;
use std::future::{poll_fn, Future};
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::{Duration, Instant};

use http_body_util::{Either, Full};
use hyper::body::{Body, Bytes, Incoming};
use hyper::header::{HeaderValue, CONNECTION, CONTENT_TYPE};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{watch, Notify};

use crate::prefork::builder::SupervisorBuilder;
use crate::prefork::config::EXIT_ERROR;
use crate::prefork::report::fatal;
use crate::prefork::supervisor::Supervisor;
use crate::prefork::workers::heartbeat::Heartbeat;
use crate::prefork::workers::worker::{Worker, WorkerEnv, EXIT_WORKER_BOOT_ERROR};
use crate::prefork::Listener;

/// The error type a served service and its body may have (anything that boxes into it).
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The response body [`Supervisor::serve_service`] sends: the app's, or the supervisor's own
/// answer (504 at the deadline, 500 when the service failed).
type Answer<B> = Response<Either<B, Full<Bytes>>>;

/// During a drain, how long a connection with no request under way may wait for its next one
/// (from the drain's start or its last answer): a request that comes in time is answered with
/// `Connection: close`; after that the connection is closed. As the HTTP server's drain grace.
const DRAIN_GRACE: Duration = Duration::from_secs(1);
/// How long accepting pauses after an accept error such as EMFILE.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// How each worker process of [`Supervisor::serve_service`] runs its service.
///
/// ```
/// use prefork_pool::prefork::ServiceConfig;
/// use std::time::Duration;
///
/// let config = ServiceConfig::new().threads(4).deadline(Duration::from_secs(10));
/// assert_eq!(config.deadline_value(), Duration::from_secs(10));
/// ```
#[derive(Debug, Clone)]
pub struct ServiceConfig {
    threads: usize,
    deadline: Duration,
}

impl Default for ServiceConfig {
    fn default() -> Self {
        ServiceConfig {
            threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
            deadline: Duration::from_secs(30),
        }
    }
}

impl ServiceConfig {
    /// The defaults: as many runtime threads per process as the machine has cores (never
    /// `WEB_CONCURRENCY`, which counts processes), a 30 s deadline per request.
    pub fn new() -> Self {
        Self::default()
    }

    /// The tokio runtime's worker threads in each process (default: the available parallelism;
    /// at least 1).
    pub fn threads(mut self, n: usize) -> Self {
        self.threads = n.max(1);
        self
    }

    /// Each request's deadline (default 30 s), from its head read to its response head: at the
    /// deadline the service's future is dropped and the client gets 504. A request whose runtime
    /// thread is blocked (so that its timer cannot fire) is still running `request_grace` after
    /// its deadline: the master kills and replaces the process.
    pub fn deadline(mut self, d: Duration) -> Self {
        self.deadline = d;
        self
    }

    /// The runtime threads per process.
    pub fn threads_value(&self) -> usize {
        self.threads
    }

    /// The deadline of each request.
    pub fn deadline_value(&self) -> Duration {
        self.deadline
    }
}

/// What every connection task of a worker process shares.
struct Shared {
    heartbeat: Heartbeat,
    deadline: Duration,
    /// `true` once the worker drains.
    stop: watch::Receiver<bool>,
    /// Connections open now.
    conns: AtomicUsize,
    /// Woken when `conns` drops to 0.
    idle: Notify,
}

impl Shared {
    fn stopping(&self) -> bool {
        *self.stop.borrow()
    }
}

/// One connection's requests under way and its last answer, for the drain grace.
struct ConnState {
    in_flight: AtomicUsize,
    last_answer: Mutex<Instant>,
}

/// Counts a request of a connection as under way while it lives.
struct InFlight(Arc<ConnState>);

impl InFlight {
    fn new(conn: &Arc<ConnState>) -> InFlight {
        conn.in_flight.fetch_add(1, Ordering::AcqRel);
        InFlight(conn.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        *self.0.last_answer.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The user's service with the supervisor's glue, as a hyper service.
struct Tracked<S> {
    inner: S,
    shared: Arc<Shared>,
    conn: Arc<ConnState>,
}

fn own_answer<B>(status: StatusCode, text: &'static str) -> Answer<B> {
    let mut resp = Response::new(Either::Right(Full::new(Bytes::from_static(
        text.as_bytes(),
    ))));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    resp
}

impl<S, B> hyper::service::Service<Request<Incoming>> for Tracked<S>
where
    S: tower_service::Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: Into<BoxError>,
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Response = Answer<B>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Answer<B>, Infallible>> + Send>>;

    fn call(&self, req: Request<Incoming>) -> Self::Future {
        let mut service = self.inner.clone();
        let shared = self.shared.clone();
        let in_flight = InFlight::new(&self.conn);
        let line = format!("{} {} {:?}", req.method(), req.uri(), req.version());
        let deadline = Instant::now() + shared.deadline;
        Box::pin(async move {
            // The master sees each running request: one still running `request_grace` after its
            // deadline (a runtime thread blocked, so the timer below cannot fire) gets the whole
            // process replaced. Dropping the guard counts the request (and `max_requests`).
            let running = shared.heartbeat.track(deadline, &line);
            let called = async {
                poll_fn(|cx| service.poll_ready(cx)).await?;
                service.call(req).await
            };
            let answer = tokio::time::timeout_at(deadline.into(), called).await;
            drop(running);
            let mut resp = match answer {
                Ok(Ok(resp)) => resp.map(Either::Left),
                Ok(Err(e)) => {
                    log::error!("{line}: the service failed: {}", e.into());
                    own_answer(StatusCode::INTERNAL_SERVER_ERROR, "internal server error\n")
                }
                Err(_) => {
                    log::warn!(
                        "{line}: no answer within its deadline of {:?}; answered 504",
                        shared.deadline
                    );
                    own_answer(StatusCode::GATEWAY_TIMEOUT, "gateway timeout\n")
                }
            };
            if shared.stopping() {
                // hyper closes the connection once this answer is written.
                resp.headers_mut()
                    .insert(CONNECTION, HeaderValue::from_static("close"));
            }
            drop(in_flight);
            Ok(resp)
        })
    }
}

/// `fut`'s output, or `None` once `stop` says the worker drains (at once if it already does).
async fn or_stop<F: Future>(fut: F, stop: &mut watch::Receiver<bool>) -> Option<F::Output> {
    let mut fut = pin!(fut);
    let mut stopped = pin!(stop.wait_for(|s| *s));
    poll_fn(|cx| {
        if let Poll::Ready(out) = fut.as_mut().poll(cx) {
            return Poll::Ready(Some(out));
        }
        if stopped.as_mut().poll(cx).is_ready() {
            return Poll::Ready(None);
        }
        Poll::Pending
    })
    .await
}

/// Serves one connection until it ends; during a drain, closes it once it has been idle for
/// [`DRAIN_GRACE`].
fn serve_connection<IO, S, B>(io: IO, shared: &Arc<Shared>, service: S)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: tower_service::Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: Into<BoxError>,
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    shared.conns.fetch_add(1, Ordering::AcqRel);
    let shared = shared.clone();
    tokio::spawn(async move {
        let state = Arc::new(ConnState {
            in_flight: AtomicUsize::new(0),
            last_answer: Mutex::new(Instant::now()),
        });
        let tracked = Tracked {
            inner: service,
            shared: shared.clone(),
            conn: state.clone(),
        };
        let mut conn = pin!(hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .serve_connection(TokioIo::new(io), tracked));
        let mut stop = shared.stop.clone();
        if or_stop(conn.as_mut(), &mut stop).await.is_none() {
            let drain_start = Instant::now();
            loop {
                let busy = state.in_flight.load(Ordering::Acquire) > 0;
                let last = *state.last_answer.lock().unwrap_or_else(|p| p.into_inner());
                let until = if busy {
                    Instant::now() + DRAIN_GRACE
                } else {
                    last.max(drain_start) + DRAIN_GRACE
                };
                if !busy && Instant::now() >= until {
                    // Idle for the whole grace: close it (at once, as nothing is under way).
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.as_mut().await;
                    break;
                }
                let sleep = tokio::time::sleep_until(until.into());
                if or_stop_at(conn.as_mut(), sleep).await.is_some() {
                    break;
                }
            }
        }
        if shared.conns.fetch_sub(1, Ordering::AcqRel) == 1 {
            shared.idle.notify_waiters();
        }
    });
}

/// `fut`'s output, or `None` once `timer` fires.
async fn or_stop_at<F: Future, T: Future>(fut: F, timer: T) -> Option<F::Output> {
    let mut fut = pin!(fut);
    let mut timer = pin!(timer);
    poll_fn(|cx| {
        if let Poll::Ready(out) = fut.as_mut().poll(cx) {
            return Poll::Ready(Some(out));
        }
        if timer.as_mut().poll(cx).is_ready() {
            return Poll::Ready(None);
        }
        Poll::Pending
    })
    .await
}

/// A listener of the worker, on the runtime.
enum AsyncListener {
    Tcp(tokio::net::TcpListener),
    Unix(tokio::net::UnixListener),
}

/// Accepts and serves until the worker drains, then serves what is left in the listen backlog and
/// closes this process's copy of the listener.
async fn accept_loop<S, B>(listener: AsyncListener, shared: Arc<Shared>, service: S)
where
    S: tower_service::Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: Into<BoxError>,
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let mut stop = shared.stop.clone();
    loop {
        let accepted = match &listener {
            AsyncListener::Tcp(l) => or_stop(l.accept(), &mut stop).await.map(|r| {
                r.map(|(s, _)| {
                    let _ = s.set_nodelay(true);
                    serve_connection(s, &shared, service.clone())
                })
            }),
            AsyncListener::Unix(l) => or_stop(l.accept(), &mut stop)
                .await
                .map(|r| r.map(|(s, _)| serve_connection(s, &shared, service.clone()))),
        };
        match accepted {
            None => break,
            Some(Ok(())) => {}
            Some(Err(e)) => {
                log::warn!("accept failed: {e}; pausing {ACCEPT_BACKOFF:?}");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
            }
        }
    }
    // The backlog: what the kernel queued for these sockets before the drain is served here.
    match listener {
        AsyncListener::Tcp(l) => {
            if let Ok(l) = l.into_std() {
                while let Ok((s, _)) = l.accept() {
                    let s = s
                        .set_nonblocking(true)
                        .and_then(|()| tokio::net::TcpStream::from_std(s));
                    if let Ok(s) = s {
                        let _ = s.set_nodelay(true);
                        serve_connection(s, &shared, service.clone());
                    }
                }
            }
        }
        AsyncListener::Unix(l) => {
            if let Ok(l) = l.into_std() {
                while let Ok((s, _)) = l.accept() {
                    let s = s
                        .set_nonblocking(true)
                        .and_then(|()| tokio::net::UnixStream::from_std(s));
                    if let Ok(s) = s {
                        serve_connection(s, &shared, service.clone());
                    }
                }
            }
        }
    }
}

/// The [`Worker`] that [`Supervisor::serve_service`] runs in each worker process.
struct ServiceWorker<S> {
    service: Option<S>,
    config: ServiceConfig,
    graceful: Duration,
}

impl<S, B> Worker for ServiceWorker<S>
where
    S: tower_service::Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: Into<BoxError>,
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
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
        let shared = Arc::new(Shared {
            heartbeat: env.heartbeat(),
            deadline: self.config.deadline,
            stop: stop_rx,
            conns: AtomicUsize::new(0),
            idle: Notify::new(),
        });
        let mut loops = Vec::new();
        {
            let _runtime = rt.enter();
            for listener in env.take_listeners() {
                let listener = match listener {
                    Listener::Tcp(l) => {
                        tokio::net::TcpListener::from_std(l).map(AsyncListener::Tcp)
                    }
                    Listener::Unix(l) => {
                        tokio::net::UnixListener::from_std(l).map(AsyncListener::Unix)
                    }
                };
                match listener {
                    Ok(l) => loops.push(rt.spawn(accept_loop(l, shared.clone(), service.clone()))),
                    Err(e) => {
                        return boot_error(env, format!("a listener could not be registered: {e}"))
                    }
                }
            }
        }
        env.ready();
        while !env.is_stopping() {
            // Waits on the stop request only (the runtime owns the listeners), beating.
            if env.wait_for_listeners(Duration::from_millis(500)).is_err() {
                std::thread::sleep(Duration::from_millis(500));
            }
        }
        let _ = stop_tx.send(true);
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
        rt.shutdown_timeout(Duration::from_millis(100));
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
    /// `tower::Service<Request<hyper::body::Incoming>>` that is `Clone` (an axum `Router` is).
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
    /// `app` builds the service in each worker after the fork (or once before it with
    /// [`SupervisorBuilder::preload`]), before the worker's runtime starts; an `Err` is a boot
    /// error. A service error is answered 500. Put blocking calls behind a
    /// [`Pool`](crate::Pool) (`pool.submit(req).await`), not on the runtime's threads.
    ///
    /// ```no_run
    /// use prefork_pool::http::types::http;
    /// use prefork_pool::prefork::{ServiceConfig, Supervisor};
    /// use std::time::Duration;
    ///
    /// // Any `tower::Service<http::Request<hyper::body::Incoming>>` + Clone: an axum Router is
    /// // `axum::Router::new().route("/", axum::routing::get(|| async { "hello\n" }))`.
    /// # #[derive(Clone)]
    /// # struct Hello;
    /// # impl tower_service::Service<http::Request<hyper::body::Incoming>> for Hello {
    /// #     type Response = http::Response<String>;
    /// #     type Error = std::convert::Infallible;
    /// #     type Future = std::future::Ready<Result<Self::Response, Self::Error>>;
    /// #     fn poll_ready(&mut self, _: &mut std::task::Context<'_>)
    /// #         -> std::task::Poll<Result<(), Self::Error>> { std::task::Poll::Ready(Ok(())) }
    /// #     fn call(&mut self, _: http::Request<hyper::body::Incoming>) -> Self::Future {
    /// #         std::future::ready(Ok(http::Response::new("hello\n".to_string())))
    /// #     }
    /// # }
    /// let status = Supervisor::builder()
    ///     .bind("127.0.0.1:8000")
    ///     .workers(2)
    ///     .serve_service(
    ///         ServiceConfig::new().threads(4).deadline(Duration::from_secs(10)),
    ///         // Runs in each worker after the fork: open per-process resources here.
    ///         || Ok::<_, String>(Hello),
    ///     );
    /// std::process::exit(status);
    /// ```
    ///
    /// Connections are accepted by whichever process the kernel wakes (no load-aware balance as
    /// with [`serve_http`](Self::serve_http)); the heartbeat is written by each worker's main
    /// thread, so a runtime whose threads are all blocked is caught by the requests' deadlines,
    /// not by the heartbeat.
    pub fn serve_service<A, S, E, B>(self, config: ServiceConfig, mut app: A) -> i32
    where
        A: FnMut() -> Result<S, E>,
        E: fmt::Display,
        S: tower_service::Service<Request<Incoming>, Response = Response<B>>
            + Clone
            + Send
            + 'static,
        S::Future: Send,
        S::Error: Into<BoxError>,
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        let graceful = self.graceful_timeout().mul_f64(0.9);
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
    pub fn serve_service<A, S, E, B>(self, config: ServiceConfig, app: A) -> i32
    where
        A: FnMut() -> Result<S, E>,
        E: fmt::Display,
        S: tower_service::Service<Request<Incoming>, Response = Response<B>>
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
