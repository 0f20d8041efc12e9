//! `axum_bulkhead`: an axum app whose blocking calls go through a `prefork_pool::Pool`, the template
//! for an async service in front of a blocking resource (a database driver, a C library, a disk).
//!
//! - The runtime's threads never block: a blocking call is `pool.submit(req).await` (the Pool's
//!   `Ticket` is a future), so `/ping` stays fast while every pool worker is busy.
//! - The pool is the bulkhead: at most `workers` blocking calls run at once, at most
//!   `queue_capacity` wait; beyond that the call is refused at once. Its errors are HTTP answers:
//!   a full queue is 503 with `Retry-After`, a missed deadline 504, a stopping pool 503.
//! - Under the pre-fork supervisor (`Supervisor::serve_service`, feature `tower`): each worker
//!   process runs the router on its own tokio runtime with its own pool, built after the fork;
//!   SIGHUP reloads with no failed request, a request stuck past its deadline gets its process
//!   replaced.
//!
//! Routes: `GET /` (`{"worker_pid": N}`: which worker process answered); `GET /ping` (async, no
//! pool); `GET /work?ms=N` (a blocking call of N ms on the pool; answers the worker's index);
//! `GET /slow` (a blocking call longer than the pool's deadline: 504); `GET /metrics` (the whole
//! server's HTTP metrics and each worker process's, with this process's pool beside them:
//! Prometheus text); `GET /ws` (a WebSocket echo that closes with 1001 "going away" when its
//! worker process stops). Under the supervisor, `/readyz` and `/livez`
//! are the server's own health routes (answered before the app; readiness is 503 from the first
//! moment of a stop).
//!
//! Run it: `cargo run -p prefork-pool-templates --example axum_bulkhead` (2 processes on
//! 127.0.0.1:8000), then `curl -i 127.0.0.1:8000/work?ms=50`. The environment overrides the
//! template's values, in the crate's vocabulary (the README's "Settings"): `PORT=8000` listens on
//! `0.0.0.0:8000`, every interface, as gunicorn does (a container's published port reaches it);
//! `PREFORK_BIND` gives the exact addresses; `WEB_CONCURRENCY` the processes;
//! `PREFORK_THREADS` the blocking pool's workers (the threads that run the handlers' blocking
//! work; the runtime's threads only wait) and `PREFORK_TIMEOUT` its deadline;
//! `PREFORK_GRACEFUL_TIMEOUT`, `PREFORK_MAX_REQUESTS`. A value that is not allowed stops it,
//! naming the variable. `tests/axum_bulkhead.rs` drives the
//! router under concurrent load.

use std::time::Duration;

use axum::extract::ws::{close_code, CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::http::{header, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use prefork_pool::{Context, Error, Pool};

/// A blocking call: work for `ms` milliseconds.
pub struct Work {
    /// How long the call blocks.
    pub ms: u64,
}

/// The pool's sizes and deadline.
#[derive(Debug, Clone)]
pub struct Config {
    /// Blocking calls that run at once.
    pub workers: usize,
    /// Blocking calls that may wait for a worker; more are refused (503).
    pub queue_capacity: usize,
    /// How long a call may take, queued and running (then 504).
    pub deadline: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            workers: 4,
            queue_capacity: 16,
            deadline: Duration::from_secs(2),
        }
    }
}

/// The blocking side: sleeps in small steps (as a driver would block), and gives up once the
/// caller was answered at the deadline (`Context::is_cancelled`), so its worker comes back.
fn blocking_work(work: Work, ctx: &Context) -> usize {
    let end = std::time::Instant::now() + Duration::from_millis(work.ms);
    while std::time::Instant::now() < end && !ctx.is_cancelled() {
        std::thread::sleep(Duration::from_millis(5));
    }
    ctx.worker().unwrap_or(usize::MAX)
}

/// The pool the app's blocking calls go through.
pub fn pool(cfg: &Config) -> Result<Pool<Work, usize>, prefork_pool::BuildError> {
    Pool::builder()
        .name("blocking")
        .workers(cfg.workers)
        .queue_capacity(cfg.queue_capacity)
        .deadline(cfg.deadline)
        .build(blocking_work)
}

/// A pool error as an HTTP answer.
pub fn error_answer(e: Error) -> Response {
    match e {
        Error::Overloaded { .. } => (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::RETRY_AFTER, "1")],
            "busy: every worker is busy and the queue is full; retry later\n",
        )
            .into_response(),
        Error::DeadlineExceeded { .. } => (
            StatusCode::GATEWAY_TIMEOUT,
            "the call missed its deadline\n",
        )
            .into_response(),
        Error::ShuttingDown { .. } => (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::RETRY_AFTER, "1")],
            "shutting down\n",
        )
            .into_response(),
        other => {
            log::error!("blocking call failed: {other}");
            (StatusCode::INTERNAL_SERVER_ERROR, "internal error\n").into_response()
        }
    }
}

/// `ms=N` from the query string (10 when absent or not a number).
fn ms_of(uri: &Uri) -> u64 {
    uri.query()
        .into_iter()
        .flat_map(|q| q.split('&'))
        .find_map(|kv| kv.strip_prefix("ms="))
        .and_then(|v| v.parse().ok())
        .unwrap_or(10)
}

async fn work(State(pool): State<Pool<Work, usize>>, uri: Uri) -> Response {
    // Waits without blocking a runtime thread; dropping this future (the client went away)
    // gives a call that has not started back to the pool.
    match pool.submit(Work { ms: ms_of(&uri) }).await {
        Ok(worker) => format!("done by worker {worker}\n").into_response(),
        Err(e) => error_answer(e),
    }
}

async fn slow(State(pool): State<Pool<Work, usize>>) -> Response {
    let ms = 60_000;
    match pool.submit(Work { ms }).await {
        Ok(worker) => format!("done by worker {worker}\n").into_response(),
        Err(e) => error_answer(e),
    }
}

/// `/`: which worker process answered, as JSON.
async fn index() -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        serde_json::json!({ "worker_pid": std::process::id() }).to_string(),
    )
        .into_response()
}

/// `/metrics`: under the supervisor, the whole server's HTTP metrics (every worker process's
/// requests, those of workers replaced included) and each worker's share; then this process's
/// pool, a family of the app's own on the same page.
async fn metrics(State(pool): State<Pool<Work, usize>>) -> Response {
    let metrics = prefork_pool::Metrics::builder()
        .build()
        .expect("the default metrics settings are valid");
    let mut page = metrics.page();
    if let (Some(server), Some(workers)) = (
        prefork_pool::prefork::server_metrics(),
        prefork_pool::prefork::worker_metrics(),
    ) {
        page.server("web", &server).workers("web", &workers);
    }
    page.pool(&pool.stats());
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        page.finish(),
    )
        .into_response()
}

/// `/ws`: echoes every text message. Under the supervisor an open WebSocket is in-flight work
/// for a reload or stop: the worker's stop resolves `prefork_pool::prefork::stopping()`, and the
/// echo says goodbye with a Close frame, 1001 "going away" (the client reconnects, to a sibling
/// or the new generation), waits a moment for the client's Close, and ends; the worker then
/// exits without waiting for its graceful timeout. (Under plain `axum::serve`, `stopping()`
/// never resolves.)
async fn ws(upgrade: WebSocketUpgrade) -> Response {
    upgrade.on_upgrade(|mut socket: WebSocket| async move {
        let mut stop = std::pin::pin!(prefork_pool::prefork::stopping());
        loop {
            tokio::select! {
                msg = socket.recv() => match msg {
                    Some(Ok(Message::Text(t))) => {
                        if socket.send(Message::Text(t)).await.is_err() {
                            return;
                        }
                    }
                    Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return,
                    Some(Ok(_)) => {}
                },
                () = &mut stop => break,
            }
        }
        let bye = CloseFrame {
            code: close_code::AWAY,
            reason: "server restarting".into(),
        };
        if socket.send(Message::Close(Some(bye))).await.is_ok() {
            // The client's Close answers ours (then the stream ends); not for long.
            let _ = tokio::time::timeout(Duration::from_secs(1), async {
                while let Some(Ok(_)) = socket.recv().await {}
            })
            .await;
        }
    })
}

/// The app: `/`, `/ping`, `/work?ms=N`, `/slow`, `/metrics`, `/ws`, over `pool`.
pub fn router(pool: Pool<Work, usize>) -> Router {
    Router::new()
        .route("/", get(index))
        .route("/ping", get(|| async { "pong\n" }))
        .route("/metrics", get(metrics))
        .route("/ws", get(ws))
        .route("/work", get(work))
        .route("/slow", get(slow))
        .with_state(pool)
}

#[allow(dead_code)]
fn main() {
    use prefork_pool::prefork::{ServiceConfig, Supervisor};

    env_logger::init();
    // The template's values, then the environment's: the operator's win.
    let env = prefork_pool::Settings::from_env();
    let defaults = Config::default();
    let cfg = Config {
        workers: env.threads().unwrap_or(defaults.workers),
        deadline: env.timeout().unwrap_or(defaults.deadline),
        ..defaults
    };
    let supervisor = Supervisor::builder()
        .bind("127.0.0.1:8000") // PORT / PREFORK_BIND
        .workers(2) // WEB_CONCURRENCY
        .with_settings(&env);
    let status = supervisor.serve_service(
        // The runtime's threads only wait: 2 per process is plenty.
        ServiceConfig::new()
            .threads(2)
            .deadline(cfg.deadline + Duration::from_secs(1))
            .health_routes("/readyz", "/livez"),
        // In each worker process after the fork: its own pool (threads start here, never in
        // the master).
        move || pool(&cfg).map(router).map_err(|e| e.to_string()),
    );
    std::process::exit(status);
}
