//! A pre-fork HTTP server: a template to copy.
//!
//! ```sh
//! PORT=8000 WEB_CONCURRENCY=2 THREADS=2 cargo run --example prefork_server
//! curl -X POST localhost:8000/hello_world           # {"session_id": "…"}
//! curl 'localhost:8000/get_hello_world?session_id=…'
//! curl -X POST localhost:8000/call_hello_world      # calls /hello_world in-process
//! curl -X POST localhost:8000/call_hello_world_tcp  # the naive call over TCP (may land on the sibling)
//! kill -HUP <master pid>                            # new workers, then the old ones drain
//! kill -TERM <master pid>                           # graceful stop, exit status 0
//! ```
//!
//! It serves the seed app (a Flask app that stores sessions in a dict, and an endpoint that POSTs to
//! its own `/hello_world`) with [`prefork_pool::prefork::Supervisor`]: one master process with no
//! thread in it, and `WEB_CONCURRENCY` worker processes (default 2), each running the crate's
//! `http::Server` with `THREADS` handler threads (default 2) on the socket the master bound
//! (`WEB_CONCURRENCY` counts processes only; each server's threads are its own setting). In a
//! container, run it under an init that reaps (`docker run --init`): after a SIGUSR2 upgrade the
//! new master is re-parented to PID 1.
//! `PORT` defaults to 8000; `PORT=0` picks a free port, printed as `listening on http://ADDR`.
//!
//! Two things a template must get right, and gunicorn users learn the hard way:
//!
//! - **Per-process memory.** The seed keeps its sessions in a dict: with two processes, a GET can land
//!   in the worker that did not store the id (it happens on gunicorn too). Here the store is a
//!   directory of small files that every worker sees (use a database or Redis in production).
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
//! Environment=WEB_CONCURRENCY=4 THREADS=2
//! ```

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prefork_pool::http::{HttpRequest, HttpResponse, Loopback};
use prefork_pool::prefork::Supervisor;
use prefork_pool::Context;

/// The session store every worker process sees: one file per session in a directory.
#[derive(Clone)]
struct Store {
    dir: PathBuf,
}

impl Store {
    fn put(&self, id: &str, json: &str) -> std::io::Result<()> {
        // Write then rename: a reader in another process never sees half a file.
        let tmp = self.dir.join(format!("{id}.tmp"));
        std::fs::write(&tmp, json)?;
        std::fs::rename(tmp, self.dir.join(id))
    }

    fn get(&self, id: &str) -> Option<String> {
        // Only ids we could have made: never a path from the client.
        if id.is_empty() || !id.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-') {
            return None;
        }
        std::fs::read_to_string(self.dir.join(id)).ok()
    }
}

/// The routes, as the seed's blueprint. `me` is the server's TCP address (for the naive
/// self-call).
fn route(store: &Store, me: Option<SocketAddr>, req: HttpRequest) -> HttpResponse {
    match (req.method().as_str(), req.uri().path()) {
        ("POST", "/hello_world") => {
            let id = session_id();
            let payload = format!(r#"{{"message": "Hello, World!", "session_id": "{id}"}}"#);
            match store.put(&id, &payload) {
                Ok(()) => json(201, format!(r#"{{"session_id": "{id}"}}"#)),
                Err(e) => json(500, format!(r#"{{"error": "session store: {e}"}}"#)),
            }
        }
        ("GET", "/get_hello_world") => {
            let id = req
                .uri()
                .query()
                .unwrap_or("")
                .split('&')
                .find_map(|kv| kv.strip_prefix("session_id="))
                .unwrap_or("");
            match store.get(id) {
                Some(payload) => json(200, payload),
                None => json(404, r#"{"error": "Invalid or missing session_id"}"#.into()),
            }
        }
        ("POST", "/call_hello_world") => {
            // The seed did `requests.post('http://localhost:5000/hello_world')`. Through the
            // Loopback the inner request runs in this process, inline, with our deadline.
            let Some(loopback) = req.extensions().get::<Loopback>() else {
                return json(500, r#"{"error": "no Loopback in the request"}"#.into());
            };
            let inner = http::Request::post("/hello_world")
                .body(Vec::new())
                .expect("a valid request");
            match loopback.send(inner) {
                Ok(resp) => resp,
                Err(e) => json(
                    e.http_status(),
                    format!(r#"{{"error": "{}"}}"#, e.to_string().replace('"', "'")),
                ),
            }
        }
        ("POST", "/call_hello_world_tcp") => call_hello_world_tcp(me),
        ("GET", "/") => json(200, format!(r#"{{"worker_pid": {}}}"#, std::process::id())),
        _ => json(404, r#"{"error": "Not Found"}"#.into()),
    }
}

/// `POST /call_hello_world_tcp`: the seed's naive call to its own `/hello_world`, over TCP with an
/// HTTP client; relays status, content type and body (the same session ids and answers).
fn call_hello_world_tcp(me: Option<SocketAddr>) -> HttpResponse {
    let Some(addr) = me else {
        return json(503, r#"{"error": "no TCP listener to call"}"#.into());
    };
    let url = format!("http://127.0.0.1:{}/hello_world", addr.port());
    match ureq::post(&url)
        .timeout(Duration::from_secs(30))
        .send_bytes(b"")
    {
        Ok(resp) | Err(ureq::Error::Status(_, resp)) => {
            let status = resp.status();
            let content_type = resp.content_type().to_string();
            let mut body = Vec::new();
            if let Err(e) = resp.into_reader().read_to_end(&mut body) {
                return json(502, format!(r#"{{"error": "reading the answer: {e}"}}"#));
            }
            http::Response::builder()
                .status(status)
                .header("content-type", content_type)
                .body(body)
                .expect("a valid response")
        }
        Err(e) => json(
            502,
            format!(r#"{{"error": "{}"}}"#, e.to_string().replace('"', "'")),
        ),
    }
}

fn json(status: u16, body: String) -> HttpResponse {
    http::Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(body.into_bytes())
        .expect("a valid response")
}

/// A session id without a uuid or rand dependency (splitmix64 over time, pid and a counter): good
/// enough for a demo, not for secrets.
fn session_id() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let mut x =
        nanos ^ (u64::from(std::process::id()) << 32) ^ COUNTER.fetch_add(1, Ordering::Relaxed);
    let mut next = || {
        x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = x;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    };
    format!("{:016x}-{:016x}", next(), next())
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

/// A logger to stderr with the process id: the master's and the workers' lines interleave. It
/// starts no thread (the master must have none when it forks).
struct StderrLogger;

impl log::Log for StderrLogger {
    fn enabled(&self, m: &log::Metadata) -> bool {
        m.level() <= log::Level::Info
    }
    fn log(&self, r: &log::Record) {
        if self.enabled(r.metadata()) {
            let line = format!("[{}] {:<5} {}\n", std::process::id(), r.level(), r.args());
            let _ = std::io::stderr().write_all(line.as_bytes());
        }
    }
    fn flush(&self) {}
}

static LOGGER: StderrLogger = StderrLogger;

fn main() {
    log::set_logger(&LOGGER).expect("a logger was already set");
    log::set_max_level(log::LevelFilter::Info);

    let port: u16 = env_or("PORT", 8000);
    let workers: usize = env_or("WEB_CONCURRENCY", 2);
    let threads: usize = env_or("THREADS", 2);
    let store = Store {
        dir: std::env::var_os("STORE_DIR").map_or_else(
            || std::env::temp_dir().join(format!("prefork-server-{}", std::process::id())),
            PathBuf::from,
        ),
    };
    if let Err(e) = std::fs::create_dir_all(&store.dir) {
        eprintln!(
            "cannot create the session store {}: {e}; set STORE_DIR to a writable directory",
            store.dir.display()
        );
        std::process::exit(1);
    }

    // Bind now (or take systemd's sockets), before any fork; the workers inherit the socket.
    let supervisor = match Supervisor::builder()
        .bind(format!("127.0.0.1:{port}"))
        .workers(workers)
        .graceful_timeout(Duration::from_secs(30))
        .heartbeat_timeout(Duration::from_secs(30))
        .request_grace(Duration::from_secs(10))
        .on_reopen_logs(|| log::info!("(reopen your log files here)"))
        .build()
    {
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
        "master pid {}: {workers} worker process(es) x {threads} thread(s). Signals: TERM graceful \
         stop, INT/QUIT fast stop, HUP reload the workers, TTIN/TTOU one worker more/fewer, USR1 \
         reopen logs, USR2 upgrade to a new build of this binary",
        std::process::id()
    );
    let _ = std::io::stdout().flush();

    let status = supervisor.serve_http(
        // Each worker's server: its handler threads and the request deadline (504 past it).
        move |server| server.pool(|p| p.workers(threads).deadline(Duration::from_secs(30))),
        // Runs in each worker after the fork: open per-process resources (connections, files,
        // threads) here, never before the Supervisor runs.
        || {
            let store = store.clone();
            Ok::<_, std::io::Error>(move |req: HttpRequest, _ctx: &Context| route(&store, me, req))
        },
    );
    if std::env::var_os("STORE_DIR").is_none() {
        let _ = std::fs::remove_dir_all(&store.dir);
    }
    std::process::exit(status);
}
