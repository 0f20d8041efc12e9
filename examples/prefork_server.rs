//! A pre-fork server: a template to copy.
//!
//! ```sh
//! PORT=8000 WEB_CONCURRENCY=2 THREADS=2 cargo run --example prefork_server
//! curl -X POST localhost:8000/hello_world           # {"session_id":"…"}
//! curl 'localhost:8000/get_hello_world?session_id=…'
//! curl -X POST localhost:8000/call_hello_world      # calls /hello_world in-process
//! kill -HUP <master pid>                            # new workers, then the old ones drain
//! kill -TERM <master pid>                           # graceful stop, exit status 0
//! ```
//!
//! It serves the seed app (a Flask app that stores sessions in a dict, and an endpoint that POSTs to
//! its own `/hello_world`) with [`prefork_pool::prefork::Supervisor`]: one master process, no thread
//! in it, and `WEB_CONCURRENCY` worker processes (default 2) accepting on the same socket, each
//! running its requests on a [`prefork_pool::Pool`] of `THREADS` threads (default 2), started after
//! the fork.
//!
//! Two things a template must get right, and gunicorn users learn the hard way:
//!
//! - **Per-process memory.** The seed keeps its sessions in a dict: with two processes, a GET can land
//!   in the worker that did not store the id (gunicorn does the same). Here the store is a directory
//!   of small files that every worker sees (use a database or Redis in production).
//! - **Calling yourself.** `/call_hello_world` calls the `/hello_world` code directly, not over TCP:
//!   with one single-threaded worker, a request to your own socket waits for the very worker that is
//!   waiting for it (gunicorn's loopback deadlock).
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
//! Environment=WEB_CONCURRENCY=4 THREADS=2
//! ```
//!
//! The HTTP parsing below is deliberately tiny (HTTP/1.0-style: one request per connection, no
//! chunked bodies, the head read on the accepting thread); a real service runs the crate's
//! `http::Server` in each worker.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prefork_pool::prefork::{Supervisor, WorkerEnv};
use prefork_pool::{Context, Pool};

/// A logger to stderr with the process id: the master's and the workers' lines interleave.
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

/// The session store every worker sees: one file per session in a directory.
#[derive(Clone)]
struct Store {
    dir: PathBuf,
}

impl Store {
    fn put(&self, id: &str, json: &str) -> std::io::Result<()> {
        // Write then rename: a reader never sees half a file.
        let tmp = self.dir.join(format!("{id}.tmp"));
        std::fs::write(&tmp, json)?;
        std::fs::rename(tmp, self.dir.join(id))
    }

    fn get(&self, id: &str) -> Option<String> {
        if id.is_empty() || !id.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-') {
            return None;
        }
        std::fs::read_to_string(self.dir.join(id)).ok()
    }
}

/// A session id: not a UUID crate, just enough randomness for a demo.
fn new_id() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let mut x = (nanos as u64) ^ ((std::process::id() as u64) << 40);
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    format!("{x:016x}-{:08x}", (nanos >> 64) as u32 ^ std::process::id())
}

struct Request {
    line: String,
    method: String,
    path: String,
    query: String,
}

/// Reads one request head (and skips its body).
fn read_request(conn: &mut TcpStream) -> Option<Request> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 2048];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        if buf.len() > 16 * 1024 {
            return None;
        }
        match conn.read(&mut chunk) {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let line = head.lines().next()?.to_string();
    let mut parts = line.split_whitespace();
    let method = parts.next()?.to_string();
    let target = parts.next()?;
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let length: usize = head
        .lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.trim().parse().ok())
        .unwrap_or(0);
    let mut body_left = length.saturating_sub(buf.len() - head_end);
    while body_left > 0 {
        match conn.read(&mut chunk[..body_left.min(2048)]) {
            Ok(0) | Err(_) => break,
            Ok(n) => body_left -= n,
        }
    }
    Some(Request {
        method,
        path: path.to_string(),
        query: query.to_string(),
        line,
    })
}

/// The app: (status, JSON body).
fn handle(store: &Store, req: &Request) -> (u16, String) {
    match (req.method.as_str(), req.path.as_str()) {
        ("POST", "/hello_world") => {
            let id = new_id();
            let payload = format!(r#"{{"message":"Hello, World!","session_id":"{id}"}}"#);
            match store.put(&id, &payload) {
                Ok(()) => (201, format!(r#"{{"session_id":"{id}"}}"#)),
                Err(e) => (500, format!(r#"{{"error":"store: {e}"}}"#)),
            }
        }
        ("GET", "/get_hello_world") => {
            let id = req
                .query
                .split('&')
                .find_map(|kv| kv.strip_prefix("session_id="))
                .unwrap_or("");
            match store.get(id) {
                Some(json) => (200, json),
                None => (404, r#"{"error":"Invalid or missing session_id"}"#.into()),
            }
        }
        // Calls the /hello_world code in-process: never send a request to your own socket from a
        // handler (with every worker busy, nobody is left to answer it).
        ("POST", "/call_hello_world") => handle(
            store,
            &Request {
                line: "POST /hello_world (in-process)".into(),
                method: "POST".into(),
                path: "/hello_world".into(),
                query: String::new(),
            },
        ),
        ("GET", "/") => (200, format!(r#"{{"worker_pid":{}}}"#, std::process::id())),
        _ => (404, r#"{"error":"not found"}"#.into()),
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        404 => "Not Found",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        508 => "Loop Detected",
        _ => "Internal Server Error",
    }
}

/// Writes one answer and closes the connection.
fn answer(mut conn: TcpStream, status: u16, body: &str) {
    let resp = format!(
        "HTTP/1.1 {status} {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
         connection: close\r\n\r\n{body}",
        reason(status),
        body.len()
    );
    let _ = conn.write_all(resp.as_bytes());
}

/// One worker process: a `Pool` of `threads` threads runs the handlers; this thread accepts, reads
/// each request head and hands it to the pool. The pool answers by the deadline (504), refuses at
/// once when full (503), and catches panics (500).
fn worker(env: &mut WorkerEnv, store: &Store, threads: usize) -> i32 {
    let heartbeat = env.heartbeat();
    let handler_store = store.clone();
    let pool = Pool::builder()
        .workers(threads)
        .deadline(Duration::from_secs(30))
        .build(move |req: Request, ctx: &Context| {
            // While this guard lives the master sees the request: if its thread is still stuck
            // `request_grace` after the deadline, the master replaces the whole process.
            let _running = heartbeat.track(ctx.deadline(), &req.line);
            handle(&handler_store, &req)
        });
    let pool = match pool {
        Ok(p) => p,
        Err(e) => {
            log::error!("cannot start the request pool: {e}");
            return 1;
        }
    };
    env.ready();
    loop {
        let stopping = env.is_stopping();
        if !stopping {
            if let Err(e) = env.wait_for_listeners(Duration::from_millis(500)) {
                log::error!("poll failed: {e}");
                return 1;
            }
        }
        for i in 0..env.listeners().len() {
            let Some(listener) = env.listeners()[i].tcp() else {
                continue;
            };
            // Accept until WouldBlock: when stopping, this drains the listen backlog.
            while let Ok((mut conn, _)) = listener.accept() {
                let _ = conn.set_read_timeout(Some(Duration::from_secs(10)));
                let _ = conn.set_write_timeout(Some(Duration::from_secs(10)));
                // (A slow client holds this thread while its head arrives: the crate's
                // `http::Server` reads with a reactor instead.)
                let Some(req) = read_request(&mut conn) else {
                    continue;
                };
                pool.submit_then(req, None, move |result| match result {
                    Ok((status, body)) => answer(conn, status, &body),
                    Err(e) => answer(
                        conn,
                        e.http_status(),
                        &format!(r#"{{"error":"{}"}}"#, e.to_string().replace('"', "'")),
                    ),
                });
            }
        }
        if stopping {
            // Finish what is queued and running, then leave.
            pool.shutdown(Duration::from_secs(30));
            return 0;
        }
    }
}

fn main() {
    log::set_logger(&LOGGER).expect("a logger was already set");
    log::set_max_level(log::LevelFilter::Info);

    let port = std::env::var("PORT").unwrap_or_else(|_| "8000".into());
    let workers: usize = match std::env::var("WEB_CONCURRENCY") {
        Ok(v) => v.parse().unwrap_or_else(|_| {
            eprintln!("WEB_CONCURRENCY={v:?} is not a number of worker processes");
            std::process::exit(2)
        }),
        Err(_) => 2,
    };
    let threads: usize = match std::env::var("THREADS") {
        Ok(v) => v.parse().unwrap_or_else(|_| {
            eprintln!("THREADS={v:?} is not a number of threads per worker process");
            std::process::exit(2)
        }),
        Err(_) => 2,
    };
    let store = Store {
        dir: std::env::var_os("STORE_DIR").map_or_else(
            || std::env::temp_dir().join(format!("prefork-server-{}", std::process::id())),
            PathBuf::from,
        ),
    };
    if let Err(e) = std::fs::create_dir_all(&store.dir) {
        eprintln!(
            "cannot create the session store {}: {e}",
            store.dir.display()
        );
        std::process::exit(1);
    }

    let supervisor = match Supervisor::builder()
        .bind(format!("127.0.0.1:{port}"))
        .workers(workers)
        .heartbeat_timeout(Duration::from_secs(30))
        .graceful_timeout(Duration::from_secs(30))
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
    println!(
        "master pid {}: {workers} worker processes x {threads} threads. Signals: TERM graceful stop, INT/QUIT fast stop, \
         HUP reload workers, TTIN/TTOU one worker more/fewer, USR1 reopen logs",
        std::process::id()
    );
    let _ = std::io::stdout().flush();

    // The closure runs in each worker after the fork: open per-process resources (connections,
    // files, threads) here, never before `run`.
    let status = supervisor.run(|| {
        let store = store.clone();
        Ok::<_, std::io::Error>(move |env: &mut WorkerEnv| worker(env, &store, threads))
    });
    if Path::new(&store.dir).exists() && std::env::var_os("STORE_DIR").is_none() {
        let _ = std::fs::remove_dir_all(&store.dir);
    }
    std::process::exit(status);
}
