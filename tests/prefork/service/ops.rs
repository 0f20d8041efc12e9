//! The operator features of `serve_http` in the tower mode (`Supervisor::serve_service`), the
//! twins of the HTTP server's tests: the access log (the crate's sink, SIGUSR1 reopen), the
//! limits answered by the server (414, 431, 413, a chunked body's too), the believed client behind a trusted proxy
//! (and axum's `ConnectInfo` shape through `connect_info`), per-route deadlines (504), health
//! routes with readiness flipping at the start of a graceful stop, the shared metrics page across
//! a worker kill, keep-alive and head timeouts, the accept gate, h2c, the self-call lifeline,
//! and `max_requests`. (Behind a proxy: `service/proxy.rs`.)

use std::collections::BTreeSet;
use std::convert::Infallible;
use std::future::Future;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use http_body_util::Full;
use hyper::body::Bytes;
use prefork_pool::http::{PeerAddr, SocketPeer};
use prefork_pool::prefork::ServiceBody;
use prefork_pool::prefork::{ServiceConfig, SupervisorBuilder};

use crate::helpers::*;

type Reply = http::Response<Full<Bytes>>;
type Handler =
    dyn Fn(http::Request<ServiceBody>) -> Pin<Box<dyn Future<Output = Reply> + Send>> + Send + Sync;

/// A `tower::Service` made of an async function: what a hyper `service_fn` is, for tower.
#[derive(Clone)]
pub struct ServiceFn(Arc<Handler>);

impl ServiceFn {
    pub fn new<F, Fut>(f: F) -> Self
    where
        F: Fn(http::Request<ServiceBody>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Reply> + Send + 'static,
    {
        ServiceFn(Arc::new(move |req| Box::pin(f(req))))
    }
}

impl tower_service::Service<http::Request<ServiceBody>> for ServiceFn {
    type Response = Reply;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Reply, Infallible>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<ServiceBody>) -> Self::Future {
        let fut = (self.0)(req);
        Box::pin(async move { Ok(fut.await) })
    }
}

pub fn text(body: String) -> Reply {
    http::Response::new(Full::new(Bytes::from(body)))
}

/// What `connect_info` inserts here: the shape of axum's `ConnectInfo<SocketAddr>`.
#[derive(Clone, Debug)]
pub struct ConnectInfo<T>(pub T);

/// `/`: the pid; `/peer`: the `PeerAddr`, the `ConnectInfo` and the `SocketPeer`; `/sleep?ms=N`:
/// waits N ms on the runtime; `/metrics`: the whole server's page and this pid; `/read`: reads
/// the whole body and answers its length (200 even when the read failed: the server's 413 must
/// win over the app's answer).
pub fn app() -> ServiceFn {
    ServiceFn::new(|req: http::Request<ServiceBody>| async move {
        if req.uri().path() == "/read" {
            use http_body_util::BodyExt;
            return match req.into_body().collect().await {
                Ok(b) => text(format!("read {}\n", b.to_bytes().len())),
                Err(e) => text(format!("the read failed: {e}\n")),
            };
        }
        let ext = req.extensions();
        match req.uri().path() {
            "/peer" => text(format!(
                "{} {:?} via {}\n",
                ext.get::<PeerAddr>().map_or("-", |p| &*p.0),
                ext.get::<ConnectInfo<SocketAddr>>().map(|c| c.0),
                ext.get::<SocketPeer>().map_or("-", |p| &*p.0),
            )),
            p if p.starts_with("/sleep") => {
                let ms = req
                    .uri()
                    .query()
                    .and_then(|q| q.strip_prefix("ms="))
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
                tokio::time::sleep(Duration::from_millis(ms)).await;
                text("slept\n".into())
            }
            "/metrics" => {
                let page = prefork_pool::Metrics::builder()
                    .build()
                    .unwrap()
                    .page()
                    .server("web", &prefork_pool::prefork::server_metrics().unwrap())
                    .workers("web", &prefork_pool::prefork::worker_metrics().unwrap())
                    .finish();
                text(format!("{page}# pid {}\n", std::process::id()))
            }
            _ => text(format!("{}\n", std::process::id())),
        }
    })
}

pub fn service_master(
    name: &str,
    procs: usize,
    supervisor: impl FnOnce(SupervisorBuilder) -> SupervisorBuilder,
    config: impl FnOnce(ServiceConfig) -> ServiceConfig,
) -> Master {
    start_master(
        name,
        |_| {},
        |b, l| supervisor(b.listener(l).workers(procs)),
        |b| {
            b.serve_service(config(ServiceConfig::new().threads(1)), || {
                Ok::<_, String>(app())
            })
        },
    )
}

/// Writes `raw` on a new connection and reads until the server closes it: the status and the
/// whole answer.
pub fn exchange(addr: SocketAddr, raw: &[u8]) -> Result<(u16, String), String> {
    let mut conn = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .map_err(|e| format!("connect: {e}"))?;
    conn.set_read_timeout(Some(LONG)).ok();
    conn.write_all(raw).map_err(|e| format!("write: {e}"))?;
    let mut out = Vec::new();
    // A refusal may close before the client's body is written: what was read counts.
    let _ = conn.read_to_end(&mut out);
    let out = String::from_utf8_lossy(&out).into_owned();
    let status = out
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("no status in {out:?}"))?;
    Ok((status, out))
}

pub fn get_with(addr: SocketAddr, path: &str, headers: &str) -> Result<(u16, String), String> {
    exchange(
        addr,
        format!("GET {path} HTTP/1.1\r\nHost: t\r\n{headers}Connection: close\r\n\r\n").as_bytes(),
    )
}

/// One request on a kept-alive connection: the status and the body (by `Content-Length`).
pub fn keep_alive_get(conn: &mut TcpStream, path: &str) -> Result<(u16, String), String> {
    conn.set_read_timeout(Some(LONG)).ok();
    conn.write_all(format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes())
        .map_err(|e| format!("write: {e}"))?;
    let mut r = BufReader::new(conn);
    let (mut len, mut status) = (0, 0);
    loop {
        let mut line = String::new();
        let n = r.read_line(&mut line).map_err(|e| format!("read: {e}"))?;
        ensure(n > 0, || format!("GET {path}: the connection closed"))?;
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if status == 0 {
            status = line
                .split(' ')
                .nth(1)
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
        }
        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            len = v.trim().parse().map_err(|e| format!("{line:?}: {e}"))?;
        }
    }
    let mut body = vec![0; len];
    r.read_exact(&mut body).map_err(|e| e.to_string())?;
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

fn scratch(name: &str) -> Result<PathBuf, String> {
    let dir = std::env::temp_dir().join(format!("prefork-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    Ok(dir)
}

/// Waits until `path` has a line containing `needle` (the log thread writes every 100 ms).
fn wait_line(path: &Path, needle: &str) -> Result<String, String> {
    let end = Instant::now() + LONG;
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if let Some(line) = text.lines().find(|l| l.contains(needle)) {
            return Ok(line.to_string());
        }
        ensure(Instant::now() < end, || {
            format!("no line with {needle:?} in {}: {text:?}", path.display())
        })?;
        sleep_ms(50);
    }
}

/// 1 process: the limits (414, 431 from the server and from hyper, 413 before the app), the
/// believed client (`PeerAddr`, `connect_info`, `SocketPeer`), a per-route 504 beside a route
/// with the whole deadline, the access log in the crate's sink with the believed client and the
/// status, reopened on SIGUSR1; health routes, readiness 503 from the first moment of a stop on
/// a connection kept alive; TERM exits 0.
pub fn operator_features() -> Result<(), String> {
    let dir = scratch("service-ops")?;
    let access = dir.join("access.log");
    let log_file = access.clone();
    let mut m = service_master(
        "service-ops",
        1,
        move |b| b.access_log_file(&log_file),
        |c| {
            c.deadline(Duration::from_secs(20))
                .deadline_for(|_, uri| {
                    (uri.path() == "/sleep-short").then(|| Duration::from_millis(300))
                })
                .limit_request_line(100)
                .limit_request_fields(10)
                .limit_request_field_size(200)
                .limit_body_bytes(1000)
                .health_routes("/readyz", "/livez")
                .connect_info(ConnectInfo)
        },
    );
    let result = (|| {
        m.wait_log("1 worker(s) ready", LONG)?;
        let addr = m.addr;

        // The limits, each answered by the server (the app never sees the request).
        let (s, _) = get_with(addr, &format!("/{}", "a".repeat(150)), "")?;
        ensure(s == 414, || {
            format!("a 160-byte request line: {s}, not 414")
        })?;
        let (s, _) = get_with(addr, "/", &format!("X-Big: {}\r\n", "b".repeat(300)))?;
        ensure(s == 431, || format!("a 307-byte field line: {s}, not 431"))?;
        let many: String = (0..20).map(|i| format!("X-F{i}: v\r\n")).collect();
        let (s, _) = get_with(addr, "/", &many)?;
        ensure(s == 431, || format!("22 fields (limit 10): {s}, not 431"))?;
        let (s, body) = exchange(
            addr,
            b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 5000\r\n\r\n",
        )?;
        ensure(s == 413, || {
            format!("a 5000-byte body (limit 1000): {s}, not 413: {body}")
        })?;
        // A chunked body (no declared length) is counted as the app reads it: 3 × 400 bytes
        // (limit 1000) is the server's 413 and a closed connection, whatever the app answered;
        // 2 × 400 is read whole.
        let chunked = |n: usize| {
            let mut raw =
                b"POST /read HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
            for _ in 0..n {
                raw.extend_from_slice(format!("190\r\n{}\r\n", "z".repeat(400)).as_bytes());
            }
            raw.extend_from_slice(b"0\r\n\r\n");
            raw
        };
        let (s, answer) = exchange(addr, &chunked(3))?;
        ensure(
            s == 413
                && answer.contains("request body too large (the limit is 1000 bytes)")
                && answer.to_ascii_lowercase().contains("connection: close"),
            || format!("a chunked 1200-byte body (limit 1000): {answer:?}"),
        )?;
        let (s, answer) = exchange(
            addr,
            &[
                &chunked(2)[..],
                b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
            ]
            .concat(),
        )?;
        ensure(s == 200 && answer.contains("read 800\n"), || {
            format!("a chunked 800-byte body (limit 1000): {answer:?}")
        })?;
        let (s, _) = get_with(addr, "/", "")?;
        ensure(s == 200, || format!("a request within the limits: {s}"))?;

        // The believed client: a trusted proxy's (loopback, the default) X-Forwarded-For.
        let (s, body) = get_with(addr, "/peer", "X-Forwarded-For: 203.0.113.7\r\n")?;
        ensure(
            s == 200 && body.contains("203.0.113.7 Some(203.0.113.7:0) via 127.0.0.1"),
            || format!("/peer behind a proxy: {s} {body:?}"),
        )?;
        let (_, body) = get_with(addr, "/peer", "")?;
        ensure(body.contains("127.0.0.1 Some(127.0.0.1:"), || {
            format!("/peer without a proxy header: {body:?}")
        })?;

        // Per-route deadline: 504 at 300 ms; the same wait elsewhere has the whole 20 s.
        let asked = Instant::now();
        let (s, _) = get_with(addr, "/sleep-short?ms=3000", "")?;
        let took = asked.elapsed();
        ensure(s == 504 && took < Duration::from_millis(2500), || {
            format!("/sleep-short (deadline 300 ms): {s} after {took:?}")
        })?;
        let (s, _) = get_with(addr, "/sleep?ms=500", "")?;
        ensure(s == 200, || format!("/sleep?ms=500 (deadline 20 s): {s}"))?;

        // The access log: gunicorn's format, the believed client, the status.
        let line = wait_line(&access, "\"GET /peer HTTP/1.1\" 200")?;
        ensure(line.starts_with("203.0.113.7 - - ["), || {
            format!("the access line of /peer behind a proxy: {line:?}")
        })?;
        wait_line(&access, "\"GET /sleep-short?ms=3000 HTTP/1.1\" 504")?;
        // SIGUSR1 after logrotate's move: the worker writes to a new file.
        std::fs::rename(&access, dir.join("access.log.1")).map_err(|e| e.to_string())?;
        m.signal(libc::SIGUSR1);
        // (The master reopens at once; the worker's log thread within its tick: ask until a
        // line of the worker is in the new file.)
        let end = Instant::now() + LONG;
        loop {
            let (s, _) = get_with(addr, "/after-usr1", "")?;
            ensure(s == 200, || format!("/after-usr1: {s}"))?;
            sleep_ms(150);
            let text = std::fs::read_to_string(&access).unwrap_or_default();
            if text.contains("\"GET /after-usr1 HTTP/1.1\" 200") {
                break;
            }
            ensure(Instant::now() < end, || {
                format!("no access line in the new access.log after SIGUSR1: {text:?}")
            })?;
        }

        // Health: answered before the app; readiness flips at the start of a stop, seen on a
        // connection kept alive from before it (asked every 50 ms, within the drain grace).
        let (s, body) = get_with(addr, "/livez", "")?;
        ensure(s == 200 && body.ends_with("alive\n"), || {
            format!("/livez: {s} {body:?}")
        })?;
        let mut kept = TcpStream::connect(addr).map_err(|e| e.to_string())?;
        let (s, body) = keep_alive_get(&mut kept, "/readyz")?;
        ensure(s == 200 && body == "ready\n", || {
            format!("/readyz: {s} {body:?}")
        })?;
        m.signal(libc::SIGTERM);
        let end = Instant::now() + LONG;
        loop {
            let (s, body) = keep_alive_get(&mut kept, "/readyz")?;
            if s == 503 {
                ensure(body.contains("draining"), || {
                    format!("/readyz in the drain: {body:?}")
                })?;
                break;
            }
            ensure(Instant::now() < end, || {
                "readiness never said 503 after TERM".into()
            })?;
            sleep_ms(50);
        }
        drop(kept);
        let code = m.wait_exit(LONG)?;
        ensure(code == 0, || format!("exit status {code}"))
    })();
    let _ = std::fs::remove_dir_all(&dir);
    finish(&mut m, result)
}

/// 2 processes: the whole server's metrics on the app's own `/metrics` page, whichever process
/// answers, monotonic, and kept across a worker's kill (the `serve_http` twin's checks).
pub fn shared_metrics() -> Result<(), String> {
    let mut m = service_master("service-metrics", 2, |b| b, |c| c.access_log(false));
    let result = crate::shared_metrics::check_shared_metrics(&mut m);
    finish(&mut m, result)
}

/// `max_requests`: a worker that answered its count is replaced (its replacement ready first), and
/// every request is answered.
pub fn max_requests() -> Result<(), String> {
    let mut m = service_master("service-max-requests", 1, |b| b.max_requests(10), |c| c);
    let result = (|| {
        m.wait_log("1 worker(s) ready", LONG)?;
        let mut pids = BTreeSet::new();
        for i in 0..35 {
            let (s, body) = get_with(m.addr, "/", "")?;
            ensure(s == 200, || format!("request {i}: {s} {body:?}"))?;
            pids.insert(
                body.rsplit("\r\n\r\n")
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_string(),
            );
        }
        ensure(pids.len() >= 2, || {
            format!("35 requests with max_requests 10 came from {pids:?}: not recycled")
        })?;
        m.signal(libc::SIGTERM);
        let code = m.wait_exit(LONG)?;
        ensure(code == 0, || format!("exit status {code}"))
    })();
    finish(&mut m, result)
}

/// Reads until the server closes `conn` (or `LONG` passes): whether it closed, and what it sent.
fn closed_by_server(conn: &mut TcpStream) -> (bool, String) {
    conn.set_read_timeout(Some(LONG)).ok();
    let mut out = Vec::new();
    let closed = conn.read_to_end(&mut out).is_ok();
    (closed, String::from_utf8_lossy(&out).into_owned())
}

/// The keep-alive and head timeouts, each alone shorter than the wait of the client (`LONG`):
/// a connection asked on every 200 ms lives past the 1 s keep-alive time, an idle one is closed
/// after it; a head that never ends, on a new connection or a kept-alive one, is closed at the 1 s
/// head timeout, without an answer.
pub fn timeouts() -> Result<(), String> {
    let mut m = service_master(
        "service-keepalive",
        1,
        |b| b,
        |c| {
            c.keepalive_timeout(Duration::from_secs(1))
                .head_timeout(Duration::from_secs(60))
        },
    );
    let result = (|| {
        m.wait_log("1 worker(s) ready", LONG)?;
        let mut kept = TcpStream::connect(m.addr).map_err(|e| e.to_string())?;
        for i in 0..12 {
            let (s, _) = keep_alive_get(&mut kept, "/")?;
            ensure(s == 200, || {
                format!("request {i} on the kept-alive connection: {s}")
            })?;
            sleep_ms(200);
        }
        let (closed, rest) = closed_by_server(&mut kept);
        ensure(closed && rest.is_empty(), || {
            format!("the idle connection (keep-alive 1 s): closed {closed}, sent {rest:?}")
        })?;
        m.signal(libc::SIGTERM);
        let code = m.wait_exit(LONG)?;
        ensure(code == 0, || format!("exit status {code}"))
    })();
    finish(&mut m, result)?;
    let mut m = service_master(
        "service-head-timeout",
        1,
        |b| b,
        |c| {
            c.keepalive_timeout(Duration::from_secs(60))
                .head_timeout(Duration::from_secs(1))
        },
    );
    let result = (|| {
        m.wait_log("1 worker(s) ready", LONG)?;
        let (s, _) = get_with(m.addr, "/", "")?;
        ensure(s == 200, || format!("a whole request: {s}"))?;
        let mut slow = TcpStream::connect(m.addr).map_err(|e| e.to_string())?;
        slow.write_all(b"GET / HTTP/1.1\r\nHost: t\r\n")
            .map_err(|e| e.to_string())?;
        let (closed, rest) = closed_by_server(&mut slow);
        ensure(closed && !rest.contains("200"), || {
            format!("a head never ended (head timeout 1 s): closed {closed}, sent {rest:?}")
        })?;
        // On a kept-alive connection the head timeout runs from the last answer, the keep-alive
        // time (60 s) notwithstanding.
        let mut kept = TcpStream::connect(m.addr).map_err(|e| e.to_string())?;
        let (s, _) = keep_alive_get(&mut kept, "/")?;
        ensure(s == 200, || format!("a kept-alive request: {s}"))?;
        kept.write_all(b"GET / HTTP/1.1\r\nHost: t\r\n")
            .map_err(|e| e.to_string())?;
        let (closed, rest) = closed_by_server(&mut kept);
        ensure(closed && rest.is_empty(), || {
            format!("a second head never ended (head timeout 1 s): closed {closed}, sent {rest:?}")
        })?;
        m.signal(libc::SIGTERM);
        let code = m.wait_exit(LONG)?;
        ensure(code == 0, || format!("exit status {code}"))
    })();
    finish(&mut m, result)
}

/// The load-aware accept gate in the tower mode: 8 keep-alive connections opened one after
/// another over 2 idle processes are dealt out evenly (at least 3 each); then, while one process
/// has its only runtime thread's worth of requests running with none finishing (a 3 s request),
/// every new connection goes to its sibling, which can take it (the kernel alone would give the
/// busy one about half).
pub fn balance() -> Result<(), String> {
    let mut m = service_master("service-balance", 2, |b| b, |c| c.access_log(false));
    let result = (|| {
        m.wait_log("2 worker(s) ready", LONG)?;
        let mut conns = Vec::new();
        let mut per_pid = std::collections::BTreeMap::<String, usize>::new();
        for i in 0..8 {
            let mut c = TcpStream::connect(m.addr).map_err(|e| e.to_string())?;
            let (s, pid) = keep_alive_get(&mut c, "/")?;
            ensure(s == 200, || format!("connection {i}: {s}"))?;
            *per_pid.entry(pid.trim().to_string()).or_default() += 1;
            conns.push(c);
        }
        ensure(
            per_pid.len() == 2 && per_pid.values().all(|&n| n >= 3),
            || format!("8 connections over 2 idle processes: {per_pid:?}"),
        )?;
        drop(conns);

        let mut busy = TcpStream::connect(m.addr).map_err(|e| e.to_string())?;
        let (_, busy_pid) = keep_alive_get(&mut busy, "/")?;
        busy.write_all(b"GET /sleep?ms=3000 HTTP/1.1\r\nHost: t\r\n\r\n")
            .map_err(|e| e.to_string())?;
        // The gates read the table every 100 ms: by then the busy process finishes nothing.
        sleep_ms(400);
        let mut taken = Vec::new();
        for _ in 0..6 {
            let (s, body) = get_with(m.addr, "/", "")?;
            ensure(s == 200, || format!("a new connection: {s}"))?;
            taken.push(
                body.rsplit("\r\n\r\n")
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_string(),
            );
        }
        ensure(!taken.contains(&busy_pid.trim().to_string()), || {
            format!(
                "pid {} ran a 3 s request on its only runtime thread, yet new connections went to \
                 it: {taken:?}",
                busy_pid.trim()
            )
        })?;
        let (s, body) = keep_alive_get(&mut busy, "/")?;
        ensure(s == 200 && body == "slept\n", || {
            format!("the 3 s request: {s} {body:?}")
        })?;
        m.signal(libc::SIGTERM);
        let code = m.wait_exit(LONG)?;
        ensure(code == 0, || format!("exit status {code}"))
    })();
    finish(&mut m, result)
}

/// h2c beside HTTP/1.1 on one listener (`http2_prior_knowledge`): curl with HTTP/2 prior
/// knowledge and curl with HTTP/1.1 are both answered by the app; the access log shows the
/// protocol of each; TERM exits 0.
pub fn h2c() -> Result<(), String> {
    let Some(curl) = crate::tools::tool_or_skip(&crate::tools::CURL)? else {
        return Ok(());
    };
    let mut m = service_master("service-h2c", 1, |b| b, |c| c.http2_prior_knowledge(true));
    let result = (|| {
        m.wait_log("1 worker(s) ready", LONG)?;
        for (flag, want) in [("--http2-prior-knowledge", "2"), ("--http1.1", "1.1")] {
            let out = std::process::Command::new(&curl)
                .args(["-sS", "--max-time", "20", flag, "-w", " %{http_version}"])
                .arg(format!("http://{}/h2c-check", m.addr))
                .output()
                .map_err(|e| format!("run curl: {e}"))?;
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            let version = text.rsplit(' ').next().unwrap_or("");
            let pid = text.split_whitespace().next().unwrap_or("");
            ensure(
                out.status.success() && version == want && pid.parse::<u32>().is_ok(),
                || {
                    format!(
                        "curl {flag}: {:?} {text:?} {}",
                        out.status,
                        String::from_utf8_lossy(&out.stderr)
                    )
                },
            )?;
        }
        m.wait_log("\"GET /h2c-check HTTP/2.0\" 200", LONG)?;
        m.wait_log("\"GET /h2c-check HTTP/1.1\" 200", LONG)?;
        m.signal(libc::SIGTERM);
        let code = m.wait_exit(LONG)?;
        ensure(code == 0, || format!("exit status {code}"))
    })();
    finish(&mut m, result)
}

/// The server's address, for the self-calling app (set in the forked master before the fork of
/// its worker).
static SELF_ADDR: std::sync::OnceLock<SocketAddr> = std::sync::OnceLock::new();

/// The self-call in async clothes: 1 process of 1 runtime thread, `/call` blocks that thread in a
/// synchronous HTTP call (ureq) to its own server. The lifeline serves the inner request on the
/// spare runtime: `/call` gets its answer (not the deadline's kill), and the log says once that
/// the runtime was blocked by `GET /call` calling its own server, with the fix.
pub fn self_call() -> Result<(), String> {
    let app = ServiceFn::new(|req: http::Request<ServiceBody>| async move {
        match req.uri().path() {
            "/call" => {
                let addr = SELF_ADDR.get().copied().expect("set before the fork");
                // The mistake: a blocking client on the runtime's only thread.
                let inner = ureq::get(&format!("http://{addr}/hello"))
                    .config()
                    .timeout_global(Some(Duration::from_secs(20)))
                    .build()
                    .call()
                    .and_then(|r| r.into_body().read_to_string())
                    .map_err(|e| e.to_string());
                text(format!(
                    "outer got: {}\n",
                    inner.unwrap_or_else(|e| e).trim()
                ))
            }
            _ => text("hello\n".into()),
        }
    });
    let mut m = start_master(
        "service-self-call",
        |_| {},
        |b, l| {
            let _ = SELF_ADDR.set(l.local_addr().expect("the listener's address"));
            b.listener(l).workers(1)
        },
        move |b| {
            b.serve_service(
                ServiceConfig::new()
                    .threads(1)
                    .deadline(Duration::from_secs(15)),
                move || Ok::<_, String>(app.clone()),
            )
        },
    );
    let result = (|| {
        m.wait_log("1 worker(s) ready", LONG)?;
        for round in 0..2 {
            let (s, body) = get_with(m.addr, "/call", "")?;
            ensure(s == 200 && body.contains("outer got: hello"), || {
                format!("/call round {round}: {s} {body:?}")
            })?;
        }
        m.wait_log("a request came from this worker process", LONG)?;
        let log = m.log_text();
        let warnings = log.matches("is blocked (running: GET /call").count();
        ensure(
            warnings == 1 && log.contains("pool.submit(req).await"),
            || format!("{warnings} warnings naming GET /call and the fix: {log}"),
        )?;
        ensure(!log.contains("deadline timeout"), || {
            format!("the worker was killed: {log}")
        })?;
        m.signal(libc::SIGTERM);
        let code = m.wait_exit(LONG)?;
        ensure(code == 0, || format!("exit status {code}"))
    })();
    finish(&mut m, result)
}
