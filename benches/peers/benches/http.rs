//! Load bench: our server against tiny_http with the same worker count, side by side in one run,
//! on `GET /` (hello world) and the seed's `POST /hello_world`; then a `Loopback` call against the
//! same request over a kept-alive TCP connection; then the fast path of the self-call detection:
//! the same requests on an idle pool with the detection on (default `max_spare`) and off
//! (`max_spare(0)`), alternated in rounds in one run.
//!
//! ```text
//! cargo bench --bench http                          # 2 workers, 8 client threads, 3 s a run
//! BENCH_WORKERS=1 BENCH_CLIENTS=16 BENCH_SECS=5 cargo bench --bench http
//! ```
//!
//! Clients are plain threads, each with one kept-alive connection, sending a request and reading
//! its answer in a loop for a fixed time. Requests/s is the total over all clients; p50/p99 are
//! per-request latencies seen by the clients.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use prefork_pool::http::{HttpRequest, HttpResponse, Server};

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The app both servers run: `GET /` hello world, `POST /hello_world` stores a session.
#[derive(Default)]
struct App {
    cache: Mutex<HashMap<u64, String>>,
    next: AtomicU64,
}

impl App {
    fn handle(&self, method: &str, path: &str) -> (u16, String) {
        match (method, path) {
            ("POST", "/hello_world") => {
                let id = self.next.fetch_add(1, Ordering::Relaxed);
                let sid = format!("00000000-0000-4000-8000-{id:012x}");
                self.cache.lock().insert(
                    id,
                    format!(r#"{{"message": "Hello, World!", "session_id": "{sid}"}}"#),
                );
                (201, format!(r#"{{"session_id": "{sid}"}}"#))
            }
            _ => (200, "Hello, World!".to_string()),
        }
    }
}

fn ours(workers: usize) -> (SocketAddr, prefork_pool::http::ServerHandle) {
    ours_with(workers, Some(0))
}

/// Our server; `max_spare` `None` keeps the default (self-call detection on).
fn ours_with(
    workers: usize,
    max_spare: Option<usize>,
) -> (SocketAddr, prefork_pool::http::ServerHandle) {
    let app = Arc::new(App::default());
    let mut b = Server::builder();
    if let Some(n) = max_spare {
        b = b.max_spare(n);
    }
    // The bench's clients live in this process: the load runs use `max_spare(0)`, or requests
    // beyond the workers would run on spare threads.
    let h = b
        .bind("127.0.0.1:0")
        .pool(|p| p.workers(workers).queue_capacity(4096))
        .access_log(false)
        .serve(move |req: HttpRequest, _ctx| -> HttpResponse {
            let (status, body) = app.handle(req.method().as_str(), req.uri().path());
            http::Response::builder()
                .status(status)
                .header("content-type", "application/json")
                .body(body.into_bytes())
                .unwrap()
        })
        .unwrap();
    (h.local_addrs()[0], h)
}

struct Tiny {
    server: Arc<tiny_http::Server>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

fn tiny(workers: usize) -> (SocketAddr, Tiny) {
    let app = Arc::new(App::default());
    let server = Arc::new(tiny_http::Server::http("127.0.0.1:0").unwrap());
    let addr = server.server_addr().to_ip().unwrap();
    let threads = (0..workers)
        .map(|_| {
            let server = server.clone();
            let app = app.clone();
            std::thread::spawn(move || {
                while let Ok(mut req) = server.recv() {
                    let mut body = Vec::new();
                    let _ = req.as_reader().read_to_end(&mut body);
                    let (status, text) = app.handle(req.method().as_str(), req.url());
                    let resp = tiny_http::Response::from_data(text.into_bytes())
                        .with_status_code(status)
                        .with_header(
                            "content-type: application/json"
                                .parse::<tiny_http::Header>()
                                .unwrap(),
                        );
                    let _ = req.respond(resp);
                }
            })
        })
        .collect();
    (addr, Tiny { server, threads })
}

/// Send `raw` and read one Content-Length framed answer on a kept-alive connection.
fn round_trip(s: &mut TcpStream, raw: &[u8], buf: &mut Vec<u8>) -> u16 {
    s.write_all(raw).unwrap();
    buf.clear();
    let mut tmp = [0u8; 4096];
    loop {
        let n = s.read(&mut tmp).unwrap();
        assert!(n > 0, "server closed the connection");
        buf.extend_from_slice(&tmp[..n]);
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .map(|v| v.trim().parse().unwrap())
                .unwrap_or(0);
            while buf.len() < end + 4 + len {
                let n = s.read(&mut tmp).unwrap();
                assert!(n > 0);
                buf.extend_from_slice(&tmp[..n]);
            }
            return head[9..12].parse().unwrap();
        }
    }
}

struct Run {
    rps: f64,
    p50: Duration,
    p99: Duration,
    /// CPU time the server spent per request: the process's CPU over the run less the client
    /// threads' own. On two cores the clients starve both servers of CPU, so requests/s says more
    /// about the machine than the server; CPU per request is the work each server does.
    server_cpu_per_req: Duration,
}

/// CPU time (user + system) of this process (`RUSAGE_SELF`) or of the calling thread
/// (`RUSAGE_THREAD`, Linux).
fn cpu(who: libc::c_int) -> Duration {
    // SAFETY: an all-zero rusage is a valid value for getrusage(2) to overwrite.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage(2) writes into the struct we own; `who` is RUSAGE_SELF or RUSAGE_THREAD.
    unsafe { libc::getrusage(who, &mut ru) };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

fn load(addr: SocketAddr, raw: &'static [u8], clients: usize, secs: f64) -> Run {
    let until = Instant::now() + Duration::from_secs_f64(secs);
    let start = Instant::now();
    let cpu_start = cpu(libc::RUSAGE_SELF);
    let threads: Vec<_> = (0..clients)
        .map(|_| {
            std::thread::spawn(move || {
                let mut s = TcpStream::connect(addr).unwrap();
                s.set_nodelay(true).unwrap();
                let mut lat = Vec::with_capacity(100_000);
                let mut buf = Vec::new();
                while Instant::now() < until {
                    let t = Instant::now();
                    let status = round_trip(&mut s, raw, &mut buf);
                    assert!(status == 200 || status == 201, "status {status}");
                    lat.push(t.elapsed());
                }
                (lat, cpu(libc::RUSAGE_THREAD))
            })
        })
        .collect();
    let mut all: Vec<Duration> = Vec::new();
    let mut client_cpu = Duration::ZERO;
    for t in threads {
        let (lat, cpu) = t.join().unwrap();
        all.extend(lat);
        client_cpu += cpu;
    }
    let took = start.elapsed().as_secs_f64();
    let server_cpu = cpu(libc::RUSAGE_SELF).saturating_sub(cpu_start + client_cpu);
    all.sort();
    let pct = |p: f64| all[((all.len() as f64 * p) as usize).min(all.len() - 1)];
    Run {
        rps: all.len() as f64 / took,
        p50: pct(0.50),
        p99: pct(0.99),
        server_cpu_per_req: server_cpu / all.len().max(1) as u32,
    }
}

fn us(d: Duration) -> String {
    format!("{:.1} µs", d.as_secs_f64() * 1e6)
}

fn main() {
    let workers: usize = env_or("BENCH_WORKERS", 2);
    let clients: usize = env_or("BENCH_CLIENTS", 8);
    let secs: f64 = env_or("BENCH_SECS", 3.0);
    println!(
        "http bench: {workers} workers each, {clients} keep-alive client threads, {secs} s a run"
    );
    println!();
    println!(
        "{:<22} {:<12} {:>12} {:>12} {:>12} {:>16}",
        "scenario", "server", "req/s", "p50", "p99", "server CPU/req"
    );
    let scenarios: [(&str, &'static [u8]); 2] = [
        ("GET / (hello world)", b"GET / HTTP/1.1\r\nHost: b\r\n\r\n"),
        (
            "POST /hello_world",
            b"POST /hello_world HTTP/1.1\r\nHost: b\r\nContent-Length: 0\r\n\r\n",
        ),
    ];
    let mut ratios = Vec::new();
    for (name, raw) in scenarios {
        let (addr, h) = ours(workers);
        let a = load(addr, raw, clients, secs);
        h.shutdown(Duration::from_secs(5));
        let (addr, t) = tiny(workers);
        let b = load(addr, raw, clients, secs);
        t.server.unblock();
        for _ in 1..workers {
            t.server.unblock();
        }
        for th in t.threads {
            let _ = th.join();
        }
        for (server, r) in [("prefork-pool", &a), ("tiny_http", &b)] {
            println!(
                "{:<22} {:<12} {:>12.0} {:>12} {:>12} {:>16}",
                name,
                server,
                r.rps,
                us(r.p50),
                us(r.p99),
                us(r.server_cpu_per_req)
            );
        }
        ratios.push((
            name,
            a.rps / b.rps,
            a.p99.as_secs_f64() / b.p99.as_secs_f64(),
            b.server_cpu_per_req.as_secs_f64() / a.server_cpu_per_req.as_secs_f64(),
        ));
    }
    println!();
    for (name, rps, p99, cpu) in &ratios {
        println!(
            "{name}: throughput ours/tiny_http = {rps:.2}x, p99 ours/tiny_http = {p99:.2}x \
             (lower is better), server CPU per request tiny_http/ours = {cpu:.2}x (higher: ours \
             does less work)"
        );
    }

    // Loopback against its TCP twin: the same POST /hello_world, one caller, sequential.
    let (addr, h) = ours(workers);
    let lb = h.loopback();
    let n: u32 = env_or("BENCH_LOOPBACK_N", 20_000);
    let req = || {
        http::Request::post("/hello_world")
            .header("host", "b")
            .body(Vec::new())
            .unwrap()
    };
    for _ in 0..1000 {
        lb.send(req()).unwrap();
    }
    let t = Instant::now();
    for _ in 0..n {
        let r = lb.send(req()).unwrap();
        assert_eq!(r.status(), 201);
    }
    let lb_ns = t.elapsed().as_nanos() as f64 / f64::from(n);
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_nodelay(true).unwrap();
    let raw = b"POST /hello_world HTTP/1.1\r\nHost: b\r\nContent-Length: 0\r\n\r\n";
    let mut buf = Vec::new();
    for _ in 0..1000 {
        round_trip(&mut s, raw, &mut buf);
    }
    let t = Instant::now();
    for _ in 0..n {
        assert_eq!(round_trip(&mut s, raw, &mut buf), 201);
    }
    let tcp_ns = t.elapsed().as_nanos() as f64 / f64::from(n);
    h.shutdown(Duration::from_secs(5));
    println!();
    println!(
        "Loopback.send (from outside the pool): {:.1} µs per call",
        lb_ns / 1000.0
    );
    println!(
        "same request over kept-alive TCP:       {:.1} µs per call",
        tcp_ns / 1000.0
    );
    println!("Loopback speed-up over TCP: {:.1}x", tcp_ns / lb_ns);

    // From inside a handler (the seed's case): the nested call runs inline on the worker.
    let inline = Server::builder()
        .bind("127.0.0.1:0")
        .pool(|p| p.workers(workers))
        .access_log(false)
        .serve(move |req: HttpRequest, _ctx| -> HttpResponse {
            if req.uri().path() == "/outer" {
                let lb = req
                    .extensions()
                    .get::<prefork_pool::http::Loopback>()
                    .unwrap()
                    .clone();
                let t = Instant::now();
                for _ in 0..1000 {
                    lb.send(
                        http::Request::post("/hello_world")
                            .body(Vec::new())
                            .unwrap(),
                    )
                    .unwrap();
                }
                return http::Response::new(
                    format!("{}", t.elapsed().as_nanos() / 1000).into_bytes(),
                );
            }
            http::Response::builder()
                .status(201)
                .body(b"{}".to_vec())
                .unwrap()
        })
        .unwrap();
    let r = inline
        .loopback()
        .send(http::Request::get("/outer").body(Vec::new()).unwrap())
        .unwrap();
    let inner_ns: f64 = String::from_utf8_lossy(r.body()).parse().unwrap();
    inline.shutdown(Duration::from_secs(5));
    println!(
        "Loopback.send from inside a handler (inline): {:.2} µs per call",
        inner_ns / 1000.0
    );
    println!(
        "inline Loopback speed-up over TCP: {:.0}x",
        tcp_ns / inner_ns
    );

    self_call_fast_path(workers);
}

/// One client, one kept-alive connection, `n` sequential `GET /`: the pool has an idle worker for
/// each request, so the self-call detection (on by default) is never consulted beyond one check.
/// Nanoseconds per request.
fn sequential(addr: SocketAddr, n: u32) -> f64 {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_nodelay(true).unwrap();
    let raw = b"GET / HTTP/1.1\r\nHost: b\r\n\r\n";
    let mut buf = Vec::new();
    for _ in 0..200 {
        round_trip(&mut s, raw, &mut buf);
    }
    let t = Instant::now();
    for _ in 0..n {
        assert_eq!(round_trip(&mut s, raw, &mut buf), 200);
    }
    t.elapsed().as_nanos() as f64 / f64::from(n)
}

/// The fast path pays nothing: detection on (default `max_spare`) against off (`max_spare(0)`),
/// side by side, alternating rounds so that drift on a shared machine hits both alike.
fn self_call_fast_path(workers: usize) {
    let rounds: usize = env_or("BENCH_SELFCALL_ROUNDS", 5);
    let n: u32 = env_or("BENCH_SELFCALL_N", 4_000);
    let (on_addr, on) = ours_with(workers, None);
    let (off_addr, off) = ours_with(workers, Some(0));
    let (mut on_ns, mut off_ns) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        // Alternate which goes first.
        if round % 2 == 0 {
            on_ns.push(sequential(on_addr, n));
            off_ns.push(sequential(off_addr, n));
        } else {
            off_ns.push(sequential(off_addr, n));
            on_ns.push(sequential(on_addr, n));
        }
    }
    let self_calls = on.self_calls();
    on.shutdown(Duration::from_secs(5));
    off.shutdown(Duration::from_secs(5));
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (a, b) = (median(&mut on_ns), median(&mut off_ns));
    println!();
    println!("idle pool, kept-alive TCP, sequential GET / ({rounds} rounds of {n}, median):");
    println!(
        "  self-call detection on  (max_spare default): {:.1} µs per request",
        a / 1000.0
    );
    println!(
        "  self-call detection off (max_spare 0):       {:.1} µs per request",
        b / 1000.0
    );
    println!(
        "  on/off = {:.3} (1.0 = the fast path pays nothing); self-calls seen with it on: {} served, {} refused",
        a / b,
        self_calls.served,
        self_calls.refused
    );
}
