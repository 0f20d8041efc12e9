//! The seed's Flask app, as a Rust template: the service that calls itself.
//!
//! ```text
//! cargo run --example hello_loopback            # 127.0.0.1:5000, one worker thread
//! PORT=8000 PREFORK_THREADS=2 cargo run --example hello_loopback   # 0.0.0.0:8000, two
//! cargo run --example hello_loopback -- --print-config   # the effective settings, and exit
//! ```
//!
//! The three routes of the article "Why Flask Apps on Gunicorn Hang", and the naive variant:
//!
//! - `POST /hello_world` stores `{"message": "Hello, World!", "session_id": <id>}` and answers
//!   201 `{"session_id": <id>}`;
//! - `GET /get_hello_world?session_id=<id>` answers 200 with the stored JSON, or 404
//!   `{"error": "Invalid or missing session_id"}` (no id), or 404 `{"error": "Unknown or expired
//!   session_id ..."}` (an id it does not hold: never made, or dropped, see below);
//! - `POST /call_hello_world` calls its own `/hello_world` and relays the answer;
//! - `POST /call_hello_world_tcp` makes the same call the naive way, as the Flask handler did
//!   (`requests.post('http://localhost:5000/hello_world')`): with an HTTP client (ureq) against
//!   `http://127.0.0.1:$PORT/hello_world`.
//!
//! The routes are a [`Router`]'s, as Flask's `@app.route(..., methods=[...])`: a known path with
//! another method (`GET /hello_world`) answers 405 `{"error": "Method Not Allowed"}` with `Allow:
//! POST`, an unknown path 404 `{"error": "Not Found"}`; the query string is percent-decoded (`session_id=<id with %2D for
//! each dash>` finds the session).
//!
//! Under gunicorn with one sync worker, `/call_hello_world` hangs until the worker timeout: the
//! only worker waits for a request that needs that same worker. Here it answers at once with one
//! worker, because the inner call goes through the [`Loopback`] handle: `pool.call` from inside a
//! handler of the same pool runs inline on the calling worker, with the caller's deadline.
//!
//! `/call_hello_world_tcp` answers at once too: the server sees that the request comes from its
//! own process while every worker is busy, serves it on a spare thread instead of queueing it,
//! and logs once, at `warn`, which worker waits on which request and the fix (use the `Loopback`,
//! or make the call asynchronous).
//!
//! It runs as a service does: no terminal or stdin needed (`nohup`, `&`, systemd, Docker without
//! `-i`); SIGTERM or Ctrl-C (SIGINT) stops it gracefully, answering every request already received
//! (a second signal stops at once), and it exits 0.
//!
//! **What a client can make it store is bounded.** The seed keeps every session for ever: about
//! 915 bytes each, so a client that POSTs in a loop grows it by gigabytes a minute until the
//! process is killed. Here the store keeps at most `MAX_SESSIONS` (default 10,000: about 10 MB);
//! past that, each new session drops the least recently used one (a GET counts as a use), whose
//! id is then answered 404 "Unknown or expired session_id". The first drop is logged once, at
//! `warn`. Dropping rather than refusing is the choice here: a store that answered 507 once full
//! would let one client lock every new user out until a restart, where dropping keeps the service
//! working and keeps the sessions in use. The cost is that a flood of new sessions pushes idle
//! ones out; in a real service, also expire sessions after a time, limit how many a client may
//! create, and keep them in a shared store (Redis, a database) rather than in one process.
//!
//! Settings: the template's own values are set in code first (`127.0.0.1:5000`, this machine only,
//! as Flask's; one worker thread, as the seed's one sync worker; a 30 s deadline), then
//! `with_env()` lets the environment override each, in the crate's vocabulary (the same in
//! process mode; the README's "Settings" lists them): `PORT=8000` listens on `0.0.0.0:8000`, every
//! interface, as gunicorn does, so that a container's published port reaches it; `PREFORK_BIND`
//! gives the exact addresses (`127.0.0.1:0` picks a free port); `PREFORK_THREADS` (or
//! `WEB_CONCURRENCY`: one process here) the worker threads; `PREFORK_TIMEOUT`,
//! `PREFORK_KEEP_ALIVE`, `PREFORK_GRACEFUL_TIMEOUT`, ... A value that is not allowed stops it at
//! once, naming the variable, the value and what is allowed. It prints `listening on http://ADDR`
//! once it serves.
//!
//! The example's own variables: `MAX_SESSIONS` (sessions kept, at least 1, default 10,000),
//! `RUST_LOG` (default `info`: the access log and the server's warnings; the crate logs through
//! `log`, so without a logger you see nothing).

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use parking_lot::Mutex;
use prefork_pool::http::types::http::{self, StatusCode};
use prefork_pool::http::{
    get, post, HttpResponse, IntoResponse, Json, Loopback, Query, Router, Server, State,
};
use serde::Deserialize;
use serde_json::json;

/// The shared dictionary of the Flask app (`routes/shared.py`), bounded: session id -> stored JSON.
type StateCache = Arc<Mutex<Sessions>>;

/// The sessions kept unless `MAX_SESSIONS` says otherwise: about 10 MB of them.
const DEFAULT_MAX_SESSIONS: usize = 10_000;

/// At most `max` sessions; past that, storing one drops the least recently used (LRU).
///
/// Two maps: the sessions by id, each with the tick of its last use, and the ids by that tick,
/// oldest first, so that the one to drop is the first entry. Every operation is O(log n).
struct Sessions {
    max: usize,
    by_id: HashMap<String, (u64, serde_json::Value)>,
    by_use: BTreeMap<u64, String>,
    /// Bumped at each use: an order, not a time.
    tick: u64,
    /// Whether a session was dropped yet (the first drop is logged).
    dropped_one: bool,
}

impl Sessions {
    fn new(max: usize) -> Self {
        Sessions {
            max,
            by_id: HashMap::new(),
            by_use: BTreeMap::new(),
            tick: 0,
            dropped_one: false,
        }
    }

    /// Store `payload` under a new `id`, first dropping the least recently used session if the
    /// store is full.
    fn insert(&mut self, id: String, payload: serde_json::Value) {
        while self.by_id.len() >= self.max {
            let Some((_, oldest)) = self.by_use.pop_first() else {
                break;
            };
            self.by_id.remove(&oldest);
            if !self.dropped_one {
                self.dropped_one = true;
                log::warn!(
                    "session store full (MAX_SESSIONS={}): each new session now drops the least \
                     recently used one, whose id then gets 404 (logged once)",
                    self.max
                );
            }
        }
        self.tick += 1;
        self.by_use.insert(self.tick, id.clone());
        self.by_id.insert(id, (self.tick, payload));
    }

    /// The payload stored under `id`; this counts as a use.
    fn get(&mut self, id: &str) -> Option<&serde_json::Value> {
        let (used, payload) = self.by_id.get_mut(id)?;
        self.tick += 1;
        let id = self.by_use.remove(used).expect("each session has its tick");
        self.by_use.insert(self.tick, id);
        *used = self.tick;
        Some(payload)
    }
}

fn main() {
    // RUST_LOG=warn, RUST_LOG=prefork_pool::access=off, ...; default: info. With
    // PREFORK_ERROR_LOG or PREFORK_LOG_LEVEL set, the crate's own log sink is the logger instead
    // (files that USR1 reopens): no second logger then.
    if !uses_log_sink() {
        env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    }

    // The template's settings, then the environment's (`with_env` last: the operator's values
    // win). Drop a line to take the crate's default instead.
    let builder = Server::builder()
        .bind("127.0.0.1:5000") // PORT / PREFORK_BIND
        .pool(|p| p.workers(1).deadline(Duration::from_secs(30))) // PREFORK_THREADS, PREFORK_TIMEOUT
        .graceful_timeout(Duration::from_secs(10)) // PREFORK_GRACEFUL_TIMEOUT
        .with_env();
    if std::env::args().any(|a| a == "--print-config") {
        builder.print_config();
        return;
    }
    let max_sessions: usize = env_or("MAX_SESSIONS", DEFAULT_MAX_SESSIONS);
    if max_sessions == 0 {
        eprintln!("MAX_SESSIONS=0 would keep no session: it is at least 1");
        std::process::exit(2);
    }
    let cache: StateCache = Arc::new(Mutex::new(Sessions::new(max_sessions)));
    // The bound address, for the naive self-call (known once the server is bound).
    let me: Arc<OnceLock<SocketAddr>> = Arc::default();
    let me_in_handler = me.clone();

    // The routes (see `routes` above), served on the builder's settings.
    let app = routes(App {
        cache,
        me: me_in_handler,
    });
    let server = builder.serve_router(app).unwrap_or_else(|e| {
        eprintln!("cannot start: {e}");
        std::process::exit(1);
    });

    let addr = server.local_addrs()[0];
    me.set(addr).expect("set once");
    let workers = server.stats().workers;
    println!("listening on http://{addr} with {workers} worker(s)");
    // Bound to every interface (PORT): show a URL that works from this machine.
    let addr = if addr.ip().is_unspecified() {
        SocketAddr::from(([127, 0, 0, 1], addr.port()))
    } else {
        addr
    };
    println!("try:");
    println!("  curl -i -X POST http://{addr}/hello_world");
    println!("  curl -i 'http://{addr}/get_hello_world?session_id=<the id>'");
    println!("  curl -i -X POST http://{addr}/call_hello_world    # calls itself: no deadlock");
    println!(
        "  curl -i -X POST http://{addr}/call_hello_world_tcp    # the naive way: rescued, logged"
    );
    println!(
        "stop with Ctrl-C or `kill -TERM {}` (graceful)",
        std::process::id()
    );

    match server.serve_until_signal(server.graceful_timeout()) {
        Ok(report) => println!("stopped ({report:?})"),
        Err(e) => {
            eprintln!("cannot wait for signals: {e}");
            server.shutdown(Duration::from_secs(10));
            std::process::exit(1);
        }
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

type Answer = Result<HttpResponse, ApiError>;

/// What the handlers share: the session store and the bound address.
#[derive(Clone)]
struct App {
    cache: StateCache,
    me: Arc<OnceLock<SocketAddr>>,
}

/// The blueprint: one function per route, as `routes/data.py`.
fn routes(app: App) -> Router {
    Router::new()
        .route("/hello_world", post(say_hello))
        .route("/get_hello_world", get(fetch_hello))
        .route("/call_hello_world", post(invoke_hello))
        .route("/call_hello_world_tcp", post(invoke_hello_tcp))
        .fallback(|| ApiError(StatusCode::NOT_FOUND, "Not Found".into()))
        .method_not_allowed(|| {
            ApiError(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed".into())
        })
        .with_state(app)
}

/// `POST /hello_world`: store a payload under a new id, answer 201 with the id.
fn say_hello(State(app): State<App>) -> (StatusCode, Json<serde_json::Value>) {
    let sid = uuid::Uuid::new_v4().to_string();
    let payload = json!({ "message": "Hello, World!", "session_id": sid });
    app.cache.lock().insert(sid.clone(), payload);
    (StatusCode::CREATED, Json(json!({ "session_id": sid })))
}

/// The query of `GET /get_hello_world`.
#[derive(Deserialize)]
struct SessionQuery {
    session_id: Option<String>,
}

/// `GET /get_hello_world?session_id=...`: the stored payload, or 404 (saying whether the id was
/// missing, or is one the store does not hold: never made, or dropped to make room).
fn fetch_hello(
    State(app): State<App>,
    Query(q): Query<SessionQuery>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let sid = q.session_id.unwrap_or_default();
    if sid.is_empty() {
        return Err(ApiError(
            StatusCode::NOT_FOUND,
            "Invalid or missing session_id".into(),
        ));
    }
    let mut sessions = app.cache.lock();
    let Some(payload) = sessions.get(&sid).cloned() else {
        return Err(ApiError(
            StatusCode::NOT_FOUND,
            format!(
                "Unknown or expired session_id: at most {} sessions are kept (MAX_SESSIONS), \
                 the least recently used dropped first; POST /hello_world for a new one",
                sessions.max
            ),
        ));
    };
    Ok(Json(payload))
}

/// `POST /call_hello_world`: call our own `/hello_world` and relay status, headers and body.
///
/// In Flask this was `requests.post('http://localhost:5000/hello_world')`: a TCP round trip that
/// needs a second free worker. Here the request goes through the `Loopback` handle that every
/// request carries: no socket, and no second worker needed.
fn invoke_hello(loopback: Loopback) -> Answer {
    let inner = http::Request::post("/hello_world")
        .body(Vec::new())
        .expect("a valid request");
    // Status, headers and body relayed as they are; a pool error becomes a JSON error.
    Ok(loopback.send(inner)?)
}

/// `POST /call_hello_world_tcp`: the same call made the naive way, over TCP with an HTTP client,
/// exactly as the Flask handler did. With one worker this is the seed's deadlock; the server
/// rescues it (a spare thread serves the request its own process sent) and logs the fix once.
fn invoke_hello_tcp(State(app): State<App>) -> Answer {
    let addr = app
        .me
        .get()
        .ok_or_else(|| ApiError(StatusCode::SERVICE_UNAVAILABLE, "not bound yet".into()))?;
    let url = format!("http://127.0.0.1:{}/hello_world", addr.port());
    let bad_gateway = |e: &dyn std::fmt::Display| ApiError(StatusCode::BAD_GATEWAY, e.to_string());
    // A 4xx/5xx from the inner call is relayed as it is, not turned into an error.
    let answer = ureq::post(&url)
        .config()
        .timeout_global(Some(Duration::from_secs(30)))
        .http_status_as_error(false)
        .build()
        .send(&b""[..])
        .map_err(|e| bad_gateway(&e))?;
    let (parts, mut body) = answer.into_parts();
    let body = body.read_to_vec().map_err(|e| bad_gateway(&e))?;
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

/// Whether the environment asks for the crate's own error log (which then installs itself as the
/// program's logger, so that env_logger must not).
fn uses_log_sink() -> bool {
    ["PREFORK_ERROR_LOG", "PREFORK_LOG_LEVEL"]
        .iter()
        .any(|v| std::env::var_os(v).is_some())
}
