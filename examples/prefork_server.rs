//! A pre-fork HTTP server: a template to copy.
//!
//! ```sh
//! cargo run --example prefork_server                 # 127.0.0.1:8000, 2 processes x 2 threads
//! PORT=8000 WEB_CONCURRENCY=4 PREFORK_THREADS=2 cargo run --example prefork_server   # 0.0.0.0:8000
//! cargo run --example prefork_server -- --print-config   # the effective settings, and exit
//! curl -X POST localhost:8000/hello_world           # {"session_id": "…"}
//! curl 'localhost:8000/get_hello_world?session_id=…'
//! curl -X POST localhost:8000/call_hello_world      # calls /hello_world in-process
//! curl -X POST localhost:8000/call_hello_world_tcp  # the naive call over TCP (may land on the sibling)
//! curl localhost:8000/metrics                       # Prometheus text: the whole server, any worker
//! curl localhost:8000/readyz                        # health routes, for probes (deploy/)
//! kill -HUP <master pid>                            # new workers, then the old ones drain
//! kill -TERM <master pid>                           # graceful stop, exit status 0
//! ```
//!
//! It serves the seed app (a Flask app that stores sessions in a dict, and an endpoint that POSTs to
//! its own `/hello_world`) with [`prefork_pool::prefork::Supervisor`]: one master process with no
//! thread in it, and `WEB_CONCURRENCY` worker processes (here default 2), each running the crate's
//! `http::Server` with `PREFORK_THREADS` handler threads (default 2) on the socket the master
//! bound (`WEB_CONCURRENCY` counts processes only). In a container, run it under an init that
//! reaps (`docker run --init`): after a SIGUSR2 upgrade the new master is re-parented to PID 1.
//!
//! Settings: the template's own values are set in code first, then `with_env()` lets the
//! environment override each (the crate's vocabulary, the same in thread mode; the README's
//! "Settings" lists them): without `PORT` or `PREFORK_BIND` it listens on `127.0.0.1:8000`
//! (this machine only); `PORT=8000` listens on `0.0.0.0:8000`, every interface, as gunicorn does,
//! so that a container's published port reaches it; `PREFORK_BIND` gives the exact addresses
//! (`127.0.0.1:0` picks a free port). Each address is printed as `listening on http://ADDR`. A
//! value that is not allowed stops it at once, naming the variable, the value and what is allowed.
//!
//! The example's own variables: `STORE_DIR` is the session directory (default: a new one under the temporary directory, removed
//! at exit); `MAX_SESSIONS` the sessions it keeps (at least 1, default 10,000).
//!
//! Three things a template must get right, and gunicorn users learn the hard way:
//!
//! - **Per-process memory.** The seed keeps its sessions in a dict: with two processes, a GET can land
//!   in the worker that did not store the id (it happens on gunicorn too). Here the store is a
//!   directory of small files that every worker sees (use a database or Redis in production).
//! - **A bound on what a client can make it store.** The seed keeps every session for ever: a
//!   client that POSTs in a loop fills the disk. Here the directory holds about `MAX_SESSIONS`
//!   files (default 10,000, about 40 MB of disk blocks): once a new session takes it past that,
//!   the least recently used tenth (by modification time; a GET touches the file) is deleted, and
//!   a GET of a deleted id answers 404 "Unknown or expired session_id". A tenth at a time, so that
//!   the scan of every file's time is made once per `MAX_SESSIONS / 10` new sessions, not for
//!   each (each new session only counts the files); two processes trimming at once may leave a
//!   few files fewer. The first trim is logged once per
//!   worker, at `warn`. Dropping rather than refusing new sessions (507) is the choice: a full
//!   store that refused would lock every new user out until someone cleans it; a real service
//!   would also expire sessions after a time and limit how many one client may create.
//! - **Calling yourself.** `/call_hello_world` sends its inner request through the `Loopback`
//!   handle every request carries: in-process, no socket, no second worker needed. A request to
//!   your own socket would wait for a free worker, and with every worker busy, for ever.
//!   `/call_hello_world_tcp` makes that naive call anyway, as the seed's Flask handler did
//!   (`requests.post('http://localhost:5000/hello_world')`, here with ureq), so the whole seed app
//!   runs the same in both modes: the inner request goes through the shared socket and may land
//!   on this process or on the sibling; when every thread of the process it lands on is busy with
//!   such calls, the server sees that the client is itself or a sibling worker, serves it at once
//!   on a spare thread and logs once, at `warn`, which route to fix.
//!
//! Under systemd, with socket activation (the listen socket stays open across restarts) and
//! readiness notification (`READY=1` once the workers accept):
//!
//! ```ini
//! # app.socket
//! [Socket]
//! ListenStream=127.0.0.1:8000
//! Backlog=2048
//!
//! # app.service
//! [Service]
//! Type=notify
//! ExecStart=/usr/local/bin/prefork_server
//! ExecReload=/bin/kill -HUP $MAINPID
//! KillMode=mixed
//! TimeoutStopSec=40
//! WatchdogSec=10
//! Environment=WEB_CONCURRENCY=4 PREFORK_THREADS=2
//! ```
//!
//! The repository's `deploy/` has the complete files, each checked by a test: the systemd unit
//! pair, an nginx site (TLS terminated there) and a Kubernetes Deployment probing `/readyz` and
//! `/livez`.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use prefork_pool::http::types::http::{self, StatusCode};
use prefork_pool::http::{
    get, post, HttpResponse, IntoResponse, Json, Loopback, Query, RawJson, Router, State,
};
use prefork_pool::prefork::Supervisor;
use serde::Deserialize;
use serde_json::json;

/// The session store every worker process sees: one file per session in a directory, at most
/// about `max` of them (see the module's comment).
#[derive(Clone)]
struct Store {
    dir: PathBuf,
    max: usize,
    /// Whether this process has trimmed the store yet (the first trim is logged).
    trimmed: Arc<AtomicBool>,
}

impl Store {
    fn put(&self, id: &str, json: &str) -> std::io::Result<()> {
        // Write then rename: a reader in another process never sees half a file. Its time is set
        // here, to the nanosecond: the file system's own may be coarser, and tie two sessions.
        let tmp = self.dir.join(format!("{id}.tmp"));
        std::fs::write(&tmp, json)?;
        std::fs::File::options()
            .write(true)
            .open(&tmp)?
            .set_modified(SystemTime::now())?;
        std::fs::rename(tmp, self.dir.join(id))?;
        self.trim()
    }

    fn get(&self, id: &str) -> Option<String> {
        // Only ids we could have made: never a path from the client.
        if id.is_empty() || !id.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-') {
            return None;
        }
        let mut file = std::fs::File::options()
            .read(true)
            .write(true)
            .open(self.dir.join(id))
            .ok()?;
        let mut json = String::new();
        file.read_to_string(&mut json).ok()?;
        // A use: the session is now the most recently used (a failure only makes it look older).
        let _ = file.set_modified(SystemTime::now());
        Some(json)
    }

    /// Past `max` sessions, delete the least recently used, down to nine tenths of `max`.
    fn trim(&self) -> std::io::Result<()> {
        let sessions = |dir: std::fs::ReadDir| {
            dir.filter_map(Result::ok)
                .filter(|e| !e.file_name().to_string_lossy().ends_with(".tmp"))
        };
        if sessions(std::fs::read_dir(&self.dir)?).count() <= self.max {
            return Ok(());
        }
        let mut by_use: Vec<(SystemTime, PathBuf)> = sessions(std::fs::read_dir(&self.dir)?)
            .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
            .collect();
        by_use.sort();
        let keep = self.max - self.max / 10;
        for (_, path) in &by_use[..by_use.len().saturating_sub(keep)] {
            // Another process may have deleted it first.
            let _ = std::fs::remove_file(path);
        }
        if !self.trimmed.swap(true, Ordering::Relaxed) {
            log::warn!(
                "session store full (MAX_SESSIONS={}): the least recently used sessions are \
                 deleted, a tenth at a time, and their ids get 404 (logged once per worker)",
                self.max
            );
        }
        Ok(())
    }
}

/// What a route fails with: a status and a message, answered as JSON `{"error": ...}`.
struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> HttpResponse {
        (self.0, Json(json!({ "error": self.1 }))).into_response()
    }
}

impl From<prefork_pool::Error> for ApiError {
    fn from(e: prefork_pool::Error) -> Self {
        let status = StatusCode::from_u16(e.http_status()).unwrap_or(StatusCode::BAD_GATEWAY);
        ApiError(status, e.to_string())
    }
}

/// What the handlers share: the session store and the server's TCP address (for the naive
/// self-call).
#[derive(Clone)]
struct App {
    store: Store,
    me: Option<SocketAddr>,
}

/// The routes, as the seed's blueprint (a wrong method: 405 with `Allow`).
fn routes(app: App) -> Router {
    Router::new()
        .route("/hello_world", post(hello_world))
        .route("/get_hello_world", get(get_hello_world))
        .route("/call_hello_world", post(call_hello_world))
        .route("/call_hello_world_tcp", post(call_hello_world_tcp))
        .route("/metrics", get(metrics))
        .route(
            "/",
            get(|| Json(json!({ "worker_pid": std::process::id() }))),
        )
        .fallback(|| ApiError(StatusCode::NOT_FOUND, "Not Found".into()))
        .method_not_allowed(|| {
            ApiError(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed".into())
        })
        .with_state(app)
}

/// `POST /hello_world`: store a payload under a new id, answer 201 with the id.
fn hello_world(State(app): State<App>) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    let id = uuid::Uuid::new_v4().to_string();
    let payload = json!({ "message": "Hello, World!", "session_id": id });
    app.store.put(&id, &payload.to_string()).map_err(|e| {
        ApiError(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("session store: {e}"),
        )
    })?;
    Ok((StatusCode::CREATED, Json(json!({ "session_id": id }))))
}

/// The query of `GET /get_hello_world` (percent-decoded).
#[derive(Deserialize)]
struct SessionQuery {
    session_id: Option<String>,
}

/// `GET /get_hello_world?session_id=...`: the stored payload (as stored), or 404.
fn get_hello_world(
    State(app): State<App>,
    Query(q): Query<SessionQuery>,
) -> Result<RawJson<String>, ApiError> {
    let id = q.session_id.unwrap_or_default();
    if id.is_empty() {
        return Err(ApiError(
            StatusCode::NOT_FOUND,
            "Invalid or missing session_id".into(),
        ));
    }
    let payload = app.store.get(&id).ok_or_else(|| {
        ApiError(
            StatusCode::NOT_FOUND,
            format!(
                "Unknown or expired session_id: about {} sessions are kept (MAX_SESSIONS), the \
                 least recently used deleted first; POST /hello_world for a new one",
                app.store.max
            ),
        )
    })?;
    Ok(RawJson(payload))
}

/// `POST /call_hello_world`: the seed did `requests.post('http://localhost:5000/hello_world')`.
/// Through the Loopback the inner request runs in this process, inline, with our deadline.
fn call_hello_world(loopback: Loopback) -> Result<HttpResponse, ApiError> {
    let inner = http::Request::post("/hello_world")
        .body(Vec::new())
        .expect("a valid request");
    Ok(loopback.send(inner)?)
}

/// `GET /metrics`: the whole server, whichever worker process answers: every worker counts in the
/// memory it shares with the master (and the counts of replaced workers are kept). Beside the
/// totals, each worker process's gauges and request count, labelled `worker="<slot>"`.
fn metrics() -> ([(http::HeaderName, &'static str); 1], String) {
    let in_worker = "the handler runs in a worker process under the supervisor";
    let metrics = prefork_pool::prefork::server_metrics().expect(in_worker);
    let workers = prefork_pool::prefork::worker_metrics().expect(in_worker);
    let page = prefork_pool::Metrics::builder()
        .build()
        .expect("the default prefix is valid")
        .page()
        .server("web", &metrics)
        .workers("web", &workers)
        .finish();
    let text = "text/plain; version=0.0.4";
    ([(http::header::CONTENT_TYPE, text)], page)
}

/// `POST /call_hello_world_tcp`: the seed's naive call to its own `/hello_world`, over TCP with an
/// HTTP client (it may land on this process or on a sibling); relays status, content type and
/// body (the same session ids and answers as `/hello_world`).
fn call_hello_world_tcp(State(app): State<App>) -> Result<HttpResponse, ApiError> {
    let Some(addr) = app.me else {
        return Err(ApiError(
            StatusCode::SERVICE_UNAVAILABLE,
            "no TCP listener to call".into(),
        ));
    };
    let url = format!("http://127.0.0.1:{}/hello_world", addr.port());
    let bad_gateway = |e: ureq::Error| ApiError(StatusCode::BAD_GATEWAY, e.to_string());
    // A 4xx/5xx from the inner call is relayed as it is, not turned into an error.
    let answer = ureq::post(&url)
        .config()
        .timeout_global(Some(Duration::from_secs(30)))
        .http_status_as_error(false)
        .build()
        .send(&b""[..])
        .map_err(bad_gateway)?;
    let (parts, mut body) = answer.into_parts();
    let body = body.read_to_vec().map_err(bad_gateway)?;
    let mut relayed = http::Response::builder().status(parts.status);
    if let Some(content_type) = parts.headers.get(http::header::CONTENT_TYPE) {
        relayed = relayed.header(http::header::CONTENT_TYPE, content_type);
    }
    Ok(relayed.body(body).expect("a valid response"))
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    match std::env::var(name) {
        Ok(v) => v.parse().unwrap_or_else(|_| {
            eprintln!("{name}={v:?} is not valid");
            std::process::exit(2);
        }),
        Err(_) => default,
    }
}

fn main() {
    // RUST_LOG (default: info), each line with the process id: the master's and the workers'
    // lines interleave. env_logger starts no thread (the master must have none when it forks).
    // With PREFORK_ERROR_LOG or PREFORK_LOG_LEVEL set, the crate's own log sink is the logger
    // instead (files that USR1 reopens in every process): no second logger then.
    let sink = ["PREFORK_ERROR_LOG", "PREFORK_LOG_LEVEL"]
        .iter()
        .any(|v| std::env::var_os(v).is_some());
    if !sink {
        env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
            .format(|buf, r| {
                writeln!(
                    buf,
                    "[{}] {:<5} {}",
                    std::process::id(),
                    r.level(),
                    r.args()
                )
            })
            .init();
    }

    // The template's settings, then the environment's (`with_env` last: the operator's values
    // win). Drop a line to take the crate's default instead (one process per core, two threads
    // each).
    let builder = Supervisor::builder()
        .bind("127.0.0.1:8000") // PORT / PREFORK_BIND
        .workers(2) // WEB_CONCURRENCY: processes
        .threads(2) // PREFORK_THREADS: handler threads in each process
        .timeout(Duration::from_secs(30)) // PREFORK_TIMEOUT: the request deadline (504 past it)
        .graceful_timeout(Duration::from_secs(30)) // PREFORK_GRACEFUL_TIMEOUT
        .heartbeat_timeout(Duration::from_secs(30))
        .request_grace(Duration::from_secs(10))
        .on_reopen_logs(|| log::info!("(reopen your log files here)"))
        .with_env();
    if std::env::args().any(|a| a == "--print-config") {
        builder.print_config();
        return;
    }
    let max: usize = env_or("MAX_SESSIONS", 10_000);
    if max == 0 {
        eprintln!("MAX_SESSIONS=0 would keep no session: it is at least 1");
        std::process::exit(2);
    }
    let store = Store {
        dir: std::env::var_os("STORE_DIR").map_or_else(
            || std::env::temp_dir().join(format!("prefork-server-{}", std::process::id())),
            PathBuf::from,
        ),
        max,
        trimmed: Arc::default(),
    };
    if let Err(e) = std::fs::create_dir_all(&store.dir) {
        eprintln!(
            "cannot create the session store {}: {e}; set STORE_DIR to a writable directory",
            store.dir.display()
        );
        std::process::exit(1);
    }

    // Check every setting, then bind now (or take systemd's sockets), before any fork; the
    // workers inherit the socket.
    let supervisor = match builder.build() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    };
    for l in supervisor.listeners() {
        println!("listening on http://{}", l.address());
    }
    let me = supervisor.local_addr();
    println!(
        "master pid {}: {} worker process(es) x {} thread(s). Signals: TERM graceful \
         stop, INT/QUIT fast stop, HUP reload the workers, TTIN/TTOU one worker more/fewer, USR1 \
         reopen logs, USR2 upgrade to a new build of this binary",
        std::process::id(),
        supervisor.workers(),
        supervisor.threads(),
    );
    let _ = std::io::stdout().flush();

    let status = supervisor.serve_router(
        // Each worker's server, as the supervisor set it up (threads, deadline, keep-alive):
        // limits, timeouts or the access log format would be set here. The health routes are
        // answered by the server itself, without a worker: deploy/kubernetes/app.yaml probes
        // them.
        |server| server.health_routes("/readyz", "/livez"),
        // Runs in each worker after the fork: open per-process resources (connections, files,
        // threads) here, never before the Supervisor runs.
        || {
            let store = store.clone();
            Ok::<_, std::io::Error>(routes(App { store, me }))
        },
    );
    if std::env::var_os("STORE_DIR").is_none() {
        let _ = std::fs::remove_dir_all(&store.dir);
    }
    std::process::exit(status);
}
