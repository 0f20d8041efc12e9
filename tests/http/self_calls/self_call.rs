//! A handler that calls its own server over real TCP with an ordinary HTTP client (ureq), the
//! seed's bug as written: the request it sends is recognised as coming from this process and
//! served on a spare thread (at most `max_spare`, beyond: 503 at once), logged once per route with
//! the fix, and counted; the same over a Unix socket (known by its `SO_PEERCRED` pid). Also:
//! another process's request (TCP or Unix socket) is not taken for a self-call; runaway
//! recursion is cut with 508 (through the `Loopback` and over TCP with `X-Prefork-Depth`); the
//! stuck report names what every busy worker runs.

use crate::http_helpers::*;
use crate::tools;
use prefork_pool::http::{error_response, Loopback, Server, ServerHandle, DEPTH_HEADER};
use prefork_pool::Error;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Wait (bounded) until `cond` holds.
pub fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < WAIT, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

// ----- helpers -----

/// Wait until every worker has started and waits for a job: until then a request from this test
/// process finds no idle worker and is (rightly) taken for a self-call.
pub fn ready(s: ServerHandle) -> ServerHandle {
    wait_until("the workers to start", || {
        let st = s.stats();
        st.idle == st.workers
    });
    s
}

type AddrCell = Arc<OnceLock<SocketAddr>>;

/// One ureq agent for the whole test binary: a real client with kept-alive connections.
static AGENT: OnceLock<ureq::Agent> = OnceLock::new();

/// POST `path` to our own server with ureq (one shared agent: a real client, kept-alive
/// connections), and relay the status and body.
fn call_self_over_tcp(cell: &AddrCell, path: &str) -> http::Response<Vec<u8>> {
    let url = format!("http://{}{path}", cell.get().expect("address set"));
    let answer = AGENT
        .get_or_init(|| {
            ureq::Agent::config_builder()
                .timeout_global(Some(Duration::from_secs(30)))
                .http_status_as_error(false)
                .build()
                .new_agent()
        })
        .post(&url)
        .send(&b""[..]);
    match answer {
        Ok(r) => {
            let status = r.status();
            let body = r.into_body().read_to_vec().unwrap();
            http::Response::builder().status(status).body(body).unwrap()
        }
        Err(e) => error_response(502, &e.to_string()),
    }
}

fn created(body: &str) -> http::Response<Vec<u8>> {
    http::Response::builder()
        .status(201)
        .body(body.as_bytes().to_vec())
        .unwrap()
}

/// A server whose `{prefix}/outer` calls its own `{prefix}/inner` over TCP; `inner` answers 201.
fn self_calling_server(
    prefix: &'static str,
    configure: impl FnOnce(prefork_pool::http::ServerBuilder) -> prefork_pool::http::ServerBuilder,
) -> ServerHandle {
    let cell: AddrCell = Arc::default();
    let c = cell.clone();
    let s = configure(Server::builder().bind("127.0.0.1:0"))
        .serve(move |req, _ctx| {
            let path = req.uri().path();
            if path == format!("{prefix}/outer") {
                call_self_over_tcp(&c, &format!("{prefix}/inner"))
            } else {
                created(r#"{"session_id": "x"}"#)
            }
        })
        .unwrap();
    cell.set(s.local_addrs()[0]).unwrap();
    ready(s)
}

// ----- the tests -----

#[test]
fn one_worker_self_call_is_served_at_once_counted_and_warned_once() {
    logs();
    let s = self_calling_server("/one", |b| {
        b.pool(|p| p.workers(1).deadline(Duration::from_secs(20)))
    });
    for n in 1..=2u64 {
        let start = Instant::now();
        let (a, _c) = roundtrip(s.local_addrs()[0], &post("/one/outer", ""));
        let took = start.elapsed();
        assert_eq!(a.status, 201, "{}", a.text());
        assert_eq!(a.text(), r#"{"session_id": "x"}"#);
        // Without the rescue it takes the whole deadline (20 s).
        assert!(
            took < Duration::from_secs(2),
            "took {took:?}: the self-call waited for the worker"
        );
        let sc = s.self_calls();
        assert_eq!((sc.served, sc.refused), (n, 0), "after request {n}");
    }
    let warned = lines_with(&["WARN", "`POST /one/inner`"]);
    assert_eq!(warned.len(), 1, "one warn line per route: {warned:#?}");
    let w = &warned[0];
    assert!(
        w.contains("worker 0 (running `POST /one/outer HTTP/1.1`"),
        "names the waiting worker and its request: {w}"
    );
    assert!(w.contains("is waiting on `POST /one/inner`"), "{w}");
    assert!(w.contains("would have deadlocked"), "{w}");
    assert!(w.contains("Loopback"), "{w}");
    assert!(w.contains("asynchronous"), "{w}");
    s.shutdown(WAIT);
}

#[test]
fn n_workers_n_concurrent_self_calls_are_all_answered() {
    const N: usize = 2;
    let cell: AddrCell = Arc::default();
    let c = cell.clone();
    let inside = Arc::new(AtomicUsize::new(0));
    let seen = inside.clone();
    let inner_done = Arc::new(AtomicUsize::new(0));
    let done = inner_done.clone();
    let s = Server::builder()
        .bind("127.0.0.1:0")
        .pool(|p| p.workers(N).deadline(Duration::from_secs(20)))
        .serve(move |req, _ctx| {
            if req.uri().path() == "/many/outer" {
                // Every worker holds an outer request before any calls itself.
                seen.fetch_add(1, Ordering::SeqCst);
                let start = Instant::now();
                while seen.load(Ordering::SeqCst) < N && start.elapsed() < WAIT {
                    std::thread::sleep(Duration::from_millis(2));
                }
                let resp = call_self_over_tcp(&c, "/many/inner");
                // And none lets its worker go before every inner request was served, so each
                // one arrives while every worker is busy.
                let start = Instant::now();
                while done.load(Ordering::SeqCst) < N && start.elapsed() < WAIT {
                    std::thread::sleep(Duration::from_millis(2));
                }
                resp
            } else {
                done.fetch_add(1, Ordering::SeqCst);
                created("inner")
            }
        })
        .unwrap();
    cell.set(s.local_addrs()[0]).unwrap();
    let s = ready(s);
    let addr = s.local_addrs()[0];
    let start = Instant::now();
    let clients: Vec<_> = (0..N)
        .map(|_| std::thread::spawn(move || roundtrip(addr, &post("/many/outer", "")).0))
        .collect();
    for c in clients {
        let a = c.join().unwrap();
        assert_eq!(a.status, 201, "{}", a.text());
        assert_eq!(a.text(), "inner");
    }
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(inside.load(Ordering::SeqCst), N);
    assert_eq!(s.self_calls().served, N as u64);
    s.shutdown(WAIT);
}

#[test]
fn past_max_spare_a_self_call_gets_503_at_once() {
    // outer (the worker) -> mid (the one spare thread) -> leaf: no worker, no spare: 503.
    let cell: AddrCell = Arc::default();
    let c = cell.clone();
    let s = Server::builder()
        .bind("127.0.0.1:0")
        .pool(|p| p.workers(1).deadline(Duration::from_secs(20)))
        .max_spare(1)
        .serve(move |req, _ctx| match req.uri().path() {
            "/cap/outer" => call_self_over_tcp(&c, "/cap/mid"),
            "/cap/mid" => call_self_over_tcp(&c, "/cap/leaf"),
            _ => created("leaf"),
        })
        .unwrap();
    cell.set(s.local_addrs()[0]).unwrap();
    let s = ready(s);
    let start = Instant::now();
    let (a, _c) = roundtrip(s.local_addrs()[0], &post("/cap/outer", ""));
    assert_eq!(a.status, 503, "{}", a.text());
    assert!(a.text().contains("self-call refused"), "{}", a.text());
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );
    let sc = s.self_calls();
    assert_eq!((sc.served, sc.refused), (1, 1));
    s.shutdown(WAIT);
}

#[test]
fn with_max_spare_zero_the_self_call_waits_for_the_deadline_and_the_stuck_report_says_why() {
    logs();
    let s = self_calling_server("/stuck", |b| {
        b.pool(|p| {
            p.name("stuckpool")
                .workers(1)
                .deadline(Duration::from_secs(3))
        })
        .max_spare(0)
        .stuck_after(Duration::from_millis(300))
    });
    let addr = s.local_addrs()[0];
    let start = Instant::now();
    let client = std::thread::spawn(move || roundtrip(addr, &post("/stuck/outer", "")).0);

    // Logged once the worker has been busy, with nothing completed, for `stuck_after`.
    wait_until("the stuck warn line", || {
        !lines_with(&["pool `stuckpool` is stuck"]).is_empty()
    });
    let line = lines_with(&["pool `stuckpool` is stuck"]).remove(0);
    assert!(line.starts_with("WARN "), "{line}");
    assert!(line.contains("1 of 1 worker(s) busy"), "{line}");
    assert!(
        line.contains("worker 0 running `POST /stuck/outer HTTP/1.1` for "),
        "{line}"
    );
    // The same on demand, while it is still stuck.
    let report = s.stuck_report();
    assert_eq!(report.busy.len(), 1, "{report}");
    assert_eq!(report.busy[0].worker, 0);
    assert_eq!(report.busy[0].request_line, "POST /stuck/outer HTTP/1.1");
    assert!(report.no_progress_for.is_some(), "{report}");
    assert!(
        report
            .to_string()
            .contains("worker 0 running `POST /stuck/outer HTTP/1.1`"),
        "{report}"
    );

    // The old behaviour, made explicit: the outer caller gets its 504 at the deadline.
    let a = client.join().unwrap();
    let took = start.elapsed();
    assert_eq!(a.status, 504, "{}", a.text());
    assert!(
        took >= Duration::from_millis(2_500),
        "504 too early: {took:?}"
    );
    assert!(took < WAIT, "{took:?}");
    assert_eq!(
        lines_with(&["pool `stuckpool` is stuck"]).len(),
        1,
        "one line per episode"
    );
    assert_eq!(s.self_calls().served, 0);
    s.shutdown(WAIT);
}

#[test]
fn a_request_from_another_process_is_not_a_self_call_it_queues() {
    let Some(curl) = tools::require(&tools::CURL) else {
        return;
    };
    let (s, release) = gated_server(Server::builder().bind("127.0.0.1:0"));
    let s = ready(s);
    let addr = s.local_addrs()[0];
    // Occupy the only worker (the worker was idle: no detection on that path).
    let mut blocker = Client::new(addr);
    blocker.send(&get("/gate"));
    wait_until("the worker to be busy", || s.stats().busy == 1);

    let curl = std::process::Command::new(curl)
        .args(["-s", "--max-time", "20", "-w", " %{http_code}"])
        .arg(format!("http://{addr}/other"))
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("start curl");
    // curl's request waits in the queue, not on a spare thread.
    wait_until("curl's request to be queued", || s.stats().queued == 1);
    assert_eq!(s.self_calls().served, 0);
    assert_eq!(s.self_calls().refused, 0);

    release.send(()).unwrap();
    assert_eq!(blocker.answer().text(), "answered /gate");
    let out = curl.wait_with_output().unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "answered /other 200");
    assert_eq!(s.self_calls().served, 0);
    s.shutdown(WAIT);
}

#[test]
fn recursion_through_the_loopback_1000_deep_is_cut_at_depth_33_with_508() {
    let deepest = Arc::new(AtomicU32::new(0));
    let refused: Arc<Mutex<Option<Error>>> = Arc::default();
    let (d, r) = (deepest.clone(), refused.clone());
    let s = Server::builder()
        .bind("127.0.0.1:0")
        .pool(|p| p.workers(1).deadline(Duration::from_secs(20)))
        .serve(move |req, ctx| {
            d.fetch_max(ctx.depth(), Ordering::SeqCst);
            let n: u32 = req
                .uri()
                .path()
                .trim_start_matches("/rec/")
                .parse()
                .unwrap();
            if n == 0 {
                return http::Response::new(b"bottom".to_vec());
            }
            let lb = req.extensions().get::<Loopback>().unwrap();
            let next = http::Request::get(format!("/rec/{}", n - 1))
                .body(Vec::new())
                .unwrap();
            match lb.send(next) {
                Ok(resp) => resp,
                Err(e) => {
                    let resp = error_response(e.http_status(), &e.to_string());
                    r.lock().unwrap().get_or_insert(e);
                    resp
                }
            }
        })
        .unwrap();
    let start = Instant::now();
    let (a, _c) = roundtrip(s.local_addrs()[0], &get("/rec/1000"));
    assert_eq!(a.status, 508, "{}", a.text());
    assert!(
        a.text().contains("deeper than the maximum of 32"),
        "{}",
        a.text()
    );
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );
    // The handlers ran at depths 0..=32; the call for depth 33 was refused without running.
    assert_eq!(deepest.load(Ordering::SeqCst), 32);
    assert_eq!(
        refused.lock().unwrap().clone(),
        Some(Error::LoopDetected { depth: 33, max: 32 })
    );
    // The server is fine afterwards.
    let (a, _c) = roundtrip(s.local_addrs()[0], &get("/rec/3"));
    assert_eq!((a.status, a.text()), (200, "bottom".to_string()));
    s.shutdown(WAIT);
}

#[test]
fn over_tcp_the_depth_header_past_max_depth_gets_508() {
    let ran = Arc::new(AtomicUsize::new(0));
    let r = ran.clone();
    let s = Server::builder()
        .bind("127.0.0.1:0")
        .pool(|p| p.workers(1))
        .serve(move |req, _ctx| {
            r.fetch_add(1, Ordering::SeqCst);
            if req.uri().path() == "/hdr/outer" {
                // The Loopback carries the depth on: one more than this request's.
                let lb = req.extensions().get::<Loopback>().unwrap();
                let inner = http::Request::get("/hdr/inner").body(Vec::new()).unwrap();
                return lb
                    .send(inner)
                    .unwrap_or_else(|e| error_response(e.http_status(), &e.to_string()));
            }
            let depth = req.headers()[DEPTH_HEADER].to_str().unwrap().to_string();
            http::Response::new(depth.into_bytes())
        })
        .unwrap();
    let addr = s.local_addrs()[0];
    let with_depth =
        |d: u32| format!("GET /hdr/outer HTTP/1.1\r\nHost: t\r\nX-Prefork-Depth: {d}\r\n\r\n");
    let (a, _c) = roundtrip(addr, with_depth(33).as_bytes());
    assert_eq!(a.status, 508, "{}", a.text());
    assert_eq!(ran.load(Ordering::SeqCst), 0, "refused before the handler");
    let (a, _c) = roundtrip(addr, with_depth(5).as_bytes());
    assert_eq!(a.status, 200, "{}", a.text());
    assert_eq!(a.text(), "6");
    // At the limit: served; its Loopback call would be one too deep.
    let (a, _c) = roundtrip(addr, with_depth(32).as_bytes());
    assert_eq!(a.status, 508, "{}", a.text());
    assert!(a.text().contains("call chain is 33 deep"), "{}", a.text());
    assert_eq!(
        ran.load(Ordering::SeqCst),
        3,
        "outer+inner at 5, outer at 32"
    );
    s.shutdown(WAIT);
}

/// A raw HTTP/1.1 request with `Connection: close` over the Unix socket at `path`: the whole
/// answer as text.
fn unix_roundtrip(path: &std::path::Path, method: &str, target: &str) -> String {
    use std::io::{Read, Write};
    let mut c = std::os::unix::net::UnixStream::connect(path).expect("connect the unix socket");
    c.set_read_timeout(Some(WAIT)).unwrap();
    c.set_write_timeout(Some(WAIT)).unwrap();
    c.write_all(
        format!("{method} {target} HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            .as_bytes(),
    )
    .unwrap();
    let mut out = String::new();
    c.read_to_string(&mut out).unwrap();
    out
}

#[test]
fn a_self_call_over_a_unix_socket_is_served_at_once() {
    logs();
    let dir = std::env::temp_dir().join(format!("prefork-pool-selfcall-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("server.sock");
    let p = path.clone();
    let s = Server::builder()
        .bind_unix(&path, 0o600)
        .pool(|p| p.workers(1).deadline(Duration::from_secs(20)))
        .serve(move |req, _ctx| {
            if req.uri().path() == "/unix/outer" {
                // The naive call to its own server, over its Unix socket: its only worker is
                // this one, busy here.
                let answer = unix_roundtrip(&p, "GET", "/unix/inner");
                http::Response::new(answer.into_bytes())
            } else {
                created("inner")
            }
        })
        .unwrap();
    let s = ready(s);
    let start = Instant::now();
    // From this thread while the worker is idle: the fast path, no detection.
    let answer = unix_roundtrip(&path, "POST", "/unix/outer");
    let took = start.elapsed();
    assert!(answer.starts_with("HTTP/1.1 200 "), "{answer}");
    // The body is the inner answer, relayed whole.
    let inner = answer.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    assert!(inner.starts_with("HTTP/1.1 201 "), "{answer}");
    assert!(inner.ends_with("\r\n\r\ninner"), "{answer}");
    // Without the rescue it takes the whole deadline (20 s).
    assert!(
        took < Duration::from_secs(2),
        "took {took:?}: the self-call waited for the worker"
    );
    let sc = s.self_calls();
    assert_eq!((sc.served, sc.refused), (1, 0));
    let warned = lines_with(&["WARN", "`GET /unix/inner`"]);
    assert_eq!(warned.len(), 1, "{warned:#?}");
    assert!(
        warned[0].contains("self-call over a Unix socket"),
        "{}",
        warned[0]
    );
    assert!(
        warned[0].contains("worker 0 (running `POST /unix/outer HTTP/1.1`"),
        "{}",
        warned[0]
    );
    s.shutdown(WAIT);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_unix_socket_request_from_another_process_is_not_a_self_call() {
    let Some(curl) = tools::require(&tools::CURL) else {
        return;
    };
    let dir = std::env::temp_dir().join(format!("prefork-pool-other-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("server.sock");
    let (s, release) = gated_server(Server::builder().bind_unix(&path, 0o600));
    let s = ready(s);
    // Occupy the only worker (it was idle: no detection on that path).
    let p = path.clone();
    let blocker = std::thread::spawn(move || unix_roundtrip(&p, "GET", "/gate"));
    wait_until("the worker to be busy", || s.stats().busy == 1);
    let curl = std::process::Command::new(curl)
        .args([
            "-s",
            "--max-time",
            "20",
            "-w",
            " %{http_code}",
            "--unix-socket",
        ])
        .arg(&path)
        .arg("http://x/other")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("start curl");
    // curl's request waits in the queue, not on a spare thread.
    wait_until("curl's request to be queued", || s.stats().queued == 1);
    assert_eq!(s.self_calls().served, 0);
    release.send(()).unwrap();
    assert!(blocker.join().unwrap().ends_with("answered /gate"));
    let out = curl.wait_with_output().unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "answered /other 200");
    assert_eq!(s.self_calls().served, 0);
    s.shutdown(WAIT);
    let _ = std::fs::remove_dir_all(&dir);
}

/// One worker whose handler, for `/gate`, holds the worker until the returned sender releases it
/// (or `WAIT` passes); every other path answers `answered PATH`.
pub fn gated_server(
    builder: prefork_pool::http::ServerBuilder,
) -> (ServerHandle, crossbeam_channel::Sender<()>) {
    let (release, gate) = crossbeam_channel::bounded::<()>(1);
    let s = builder
        .pool(|p| p.workers(1).deadline(Duration::from_secs(20)))
        .serve(move |req, _ctx| {
            if req.uri().path() == "/gate" {
                let _ = gate.recv_timeout(WAIT);
            }
            http::Response::new(format!("answered {}", req.uri().path()).into_bytes())
        })
        .unwrap();
    (s, release)
}
