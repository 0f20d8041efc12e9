//! The seed's Flask app, as a Rust template: the service that calls itself.
//!
//! ```text
//! cargo run --example hello_loopback            # 127.0.0.1:5000, one worker
//! PORT=8000 WEB_CONCURRENCY=2 cargo run --example hello_loopback
//! ```
//!
//! The three routes of the article "Why Flask Apps on Gunicorn Hang", and the naive variant:
//!
//! - `POST /hello_world` stores `{"message": "Hello, World!", "session_id": <id>}` and answers
//!   201 `{"session_id": <id>}`;
//! - `GET /get_hello_world?session_id=<id>` answers 200 with the stored JSON, or 404
//!   `{"error": "Invalid or missing session_id"}`;
//! - `POST /call_hello_world` calls its own `/hello_world` and relays the answer;
//! - `POST /call_hello_world_tcp` makes the same call the naive way, as the Flask handler did
//!   (`requests.post('http://localhost:5000/hello_world')`): with an HTTP client (ureq) against
//!   `http://127.0.0.1:$PORT/hello_world`.
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
//! Environment: `PORT` (default 5000; 0 picks a free port), `WEB_CONCURRENCY` (workers, default 1),
//! `EXIT_AFTER_SECS` (stop after that long). The server also stops, gracefully, when stdin closes
//! (Ctrl-D). It prints `listening on http://ADDR` once it serves.

use std::collections::HashMap;
use std::io::Read;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;
use prefork_pool::http::{HttpRequest, HttpResponse, Loopback, Server};

/// The shared dictionary of the Flask app (`routes/shared.py`).
type StateCache = Arc<Mutex<HashMap<String, String>>>;

fn main() {
    log::set_logger(&LOGGER).expect("no other logger");
    log::set_max_level(log::LevelFilter::Info);

    let port: u16 = env_or("PORT", 5000);
    let workers: usize = env_or("WEB_CONCURRENCY", 1);
    let cache: StateCache = Arc::default();
    // The bound address, for the naive self-call (known once the server is bound).
    let me: Arc<OnceLock<SocketAddr>> = Arc::default();
    let me_in_handler = me.clone();

    let server = Server::builder()
        .bind(("127.0.0.1", port))
        .pool(|p| p.workers(workers).deadline(Duration::from_secs(30)))
        .serve(move |req, _ctx| route(&cache, &me_in_handler, req))
        .unwrap_or_else(|e| {
            eprintln!("cannot start: {e}");
            std::process::exit(1);
        });

    let addr = server.local_addrs()[0];
    me.set(addr).expect("set once");
    println!("listening on http://{addr} with {workers} worker(s)");
    println!("try:");
    println!("  curl -i -X POST http://{addr}/hello_world");
    println!("  curl -i 'http://{addr}/get_hello_world?session_id=<the id>'");
    println!("  curl -i -X POST http://{addr}/call_hello_world    # calls itself: no deadlock");
    println!(
        "  curl -i -X POST http://{addr}/call_hello_world_tcp    # the naive way: rescued, logged"
    );
    println!(
        "stop with Ctrl-D (stdin EOF){}",
        match std::env::var("EXIT_AFTER_SECS") {
            Ok(s) => format!(" or after {s} s"),
            Err(_) => String::new(),
        }
    );

    // Stop on stdin EOF, or after EXIT_AFTER_SECS.
    let (stop_tx, stop_rx) = crossbeam_channel::bounded::<&str>(2);
    let tx = stop_tx.clone();
    std::thread::spawn(move || {
        let mut sink = [0u8; 256];
        let mut stdin = std::io::stdin();
        while matches!(stdin.read(&mut sink), Ok(n) if n > 0) {}
        let _ = tx.send("stdin closed");
    });
    if let Ok(secs) = std::env::var("EXIT_AFTER_SECS") {
        let secs: u64 = secs
            .parse()
            .expect("EXIT_AFTER_SECS is a number of seconds");
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_secs(secs));
            let _ = stop_tx.send("EXIT_AFTER_SECS passed");
        });
    }
    let why = stop_rx.recv().unwrap_or("stop");
    println!("{why}: shutting down");
    let report = server.shutdown(Duration::from_secs(10));
    println!("stopped ({report:?})");
}

/// The blueprint: one function per route, as `routes/data.py`.
fn route(cache: &StateCache, me: &OnceLock<SocketAddr>, req: HttpRequest) -> HttpResponse {
    match (req.method().as_str(), req.uri().path()) {
        ("POST", "/hello_world") => say_hello(cache),
        ("GET", "/get_hello_world") => fetch_hello(cache, &req),
        ("POST", "/call_hello_world") => invoke_hello(&req),
        ("POST", "/call_hello_world_tcp") => invoke_hello_tcp(me),
        _ => json(404, r#"{"error": "Not Found"}"#.to_string()),
    }
}

/// `POST /hello_world`: store a payload under a new id, answer 201 with the id.
fn say_hello(cache: &StateCache) -> HttpResponse {
    let sid = uuid_like();
    let payload = format!(r#"{{"message": "Hello, World!", "session_id": "{sid}"}}"#);
    cache.lock().insert(sid.clone(), payload);
    json(201, format!(r#"{{"session_id": "{sid}"}}"#))
}

/// `GET /get_hello_world?session_id=...`: the stored payload, or 404.
fn fetch_hello(cache: &StateCache, req: &HttpRequest) -> HttpResponse {
    let sid = req
        .uri()
        .query()
        .unwrap_or("")
        .split('&')
        .find_map(|kv| kv.strip_prefix("session_id="))
        .unwrap_or("");
    match cache.lock().get(sid) {
        Some(payload) => json(200, payload.clone()),
        None => json(
            404,
            r#"{"error": "Invalid or missing session_id"}"#.to_string(),
        ),
    }
}

/// `POST /call_hello_world`: call our own `/hello_world` and relay status, headers and body.
///
/// In Flask this was `requests.post('http://localhost:5000/hello_world')`: a TCP round trip that
/// needs a second free worker. Here the request goes through the `Loopback` handle that every
/// request carries: no socket, and no second worker needed.
fn invoke_hello(req: &HttpRequest) -> HttpResponse {
    let loopback = req
        .extensions()
        .get::<Loopback>()
        .expect("the server puts a Loopback in every request");
    let inner = http::Request::post("/hello_world")
        .body(Vec::new())
        .expect("a valid request");
    match loopback.send(inner) {
        Ok(resp) => resp, // status, headers and body relayed as they are
        Err(e) => json(
            e.http_status(),
            format!(r#"{{"error": "{}"}}"#, e.to_string().replace('"', "'")),
        ),
    }
}

/// `POST /call_hello_world_tcp`: the same call made the naive way, over TCP with an HTTP client,
/// exactly as the Flask handler did. With one worker this is the seed's deadlock; the server
/// rescues it (a spare thread serves the request its own process sent) and logs the fix once.
fn invoke_hello_tcp(me: &OnceLock<SocketAddr>) -> HttpResponse {
    let Some(addr) = me.get() else {
        return json(503, r#"{"error": "not bound yet"}"#.to_string());
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

/// A random-looking version-4-shaped id, without a uuid or rand dependency: splitmix64 over the
/// time, the process id and a counter. Good enough for an example, not for secrets.
fn uuid_like() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let mut x =
        nanos ^ (u64::from(std::process::id()) << 32) ^ COUNTER.fetch_add(1, Ordering::Relaxed);
    let mut next = || {
        x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = x;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    };
    let (a, b) = (next(), next());
    format!(
        "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xffff,
        a & 0x0fff,
        (b >> 48) & 0x3fff | 0x8000,
        b & 0xffff_ffff_ffff
    )
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

/// A tiny logger: access lines as they are, everything else with its level and target.
struct Logger;
static LOGGER: Logger = Logger;

impl log::Log for Logger {
    fn enabled(&self, m: &log::Metadata<'_>) -> bool {
        m.level() <= log::Level::Info
    }
    fn log(&self, r: &log::Record<'_>) {
        if !self.enabled(r.metadata()) {
            return;
        }
        if r.target() == prefork_pool::http::ACCESS_TARGET {
            eprintln!("{}", r.args());
        } else {
            eprintln!("[{}] {}: {}", r.level(), r.target(), r.args());
        }
    }
    fn flush(&self) {}
}
