//! The server's own HTTP metrics (`ServerHandle::metrics`) and the one page that shows pools and
//! servers, checked by a real Prometheus parser: Python's `prometheus_client` (the reference
//! client's), which refuses a malformed page. That check is skipped where it is not installed.
//! No Rust crate does the job: `prometheus-parse` reads lines with regexes and never refuses one
//! (a line it cannot read is dropped) nor unescapes a label value, and the strict ones are single
//! old releases (or LGPL).

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use prefork_pool::http::Server;
use prefork_pool::{Metrics, Pool};

use crate::http_helpers::{get, roundtrip, Client, WAIT};
use crate::tools;

/// Poll `f` until it holds (an event with no other way to await it from outside the server).
fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < WAIT, "never: {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn requests_answers_connections_and_bytes_are_counted() {
    let server = Server::builder()
        .bind("127.0.0.1:0")
        .access_log(false)
        .pool(|p| p.workers(2))
        .serve(|req, _ctx| match req.uri().path() {
            "/" => Ok("hello"),
            _ => Err((http::StatusCode::NOT_FOUND, "no")),
        })
        .unwrap();
    let addr = server.local_addrs()[0];
    let mut c = Client::new(addr);
    for _ in 0..3 {
        c.send(&get("/"));
        assert_eq!(c.answer().status, 200);
    }
    c.send(b"POST /nope HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n\r\nab");
    assert_eq!(c.answer().status, 404);
    c.send(b"DELETE / HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(c.answer().status, 200);
    // Refused before it was read whole: an answer of the server's own, not a request.
    let (bad, _c2) = roundtrip(addr, b"GET / HTTP/1.1\r\nHost: t\r\nBad Header\r\n\r\n");
    assert_eq!(bad.status, 400);

    let m = server.metrics();
    assert_eq!(m.requests_with("GET", 2), 3, "{m:?}");
    assert_eq!(m.requests_with("POST", 4), 1, "{m:?}");
    assert_eq!(m.requests_with("DELETE", 2), 1, "{m:?}");
    assert_eq!(m.requests_total(), 5, "{m:?}");
    assert_eq!(m.own_answers_with(400), 1, "{m:?}");
    assert_eq!(m.own_answers_with(503), 0, "{m:?}");
    assert_eq!(m.accepted_connections, 2);
    assert_eq!(
        m.duration_buckets[12], 5,
        "every answered request is in +Inf"
    );
    assert_eq!(m.in_flight, 0);
    assert!(m.bytes_in >= 5 * 30, "{m:?}");
    assert!(m.bytes_out >= 5 * 40, "{m:?}");
    drop(c);
    drop(_c2);
    eventually("both connections closed", || {
        server.metrics().open_connections == 0
    });
    server.shutdown(Duration::from_secs(5));
}

#[test]
fn the_server_own_overload_answer_is_counted_by_status() {
    let (entered_tx, entered_rx) = crossbeam_channel::unbounded::<()>();
    let (tx, rx) = crossbeam_channel::unbounded::<()>();
    let server = Server::builder()
        .bind("127.0.0.1:0")
        .access_log(false)
        // This test's clients live in this process: they are not self-calls to rescue.
        .max_spare(0)
        .pool(|p| p.workers(1).queue_capacity(1))
        .serve(move |_req, _ctx| {
            let _ = entered_tx.send(());
            let _ = rx.recv_timeout(WAIT);
            "done"
        })
        .unwrap();
    let addr = server.local_addrs()[0];
    // One runs, one waits in the queue, the third is refused with 503.
    let mut held = vec![Client::new(addr)];
    held[0].send(&get("/"));
    entered_rx
        .recv_timeout(WAIT)
        .expect("the worker took the first request");
    held.push(Client::new(addr));
    held[1].send(&get("/"));
    eventually("the second request queued", || server.stats().queued == 1);
    let (a, _c) = roundtrip(addr, &get("/"));
    assert_eq!(a.status, 503);
    let m = server.metrics();
    assert_eq!(m.own_answers_with(503), 1, "{m:?}");
    assert_eq!(m.requests_with("GET", 5), 1, "{m:?}");
    assert_eq!(m.in_flight, 2, "{m:?}");
    tx.send(()).unwrap();
    tx.send(()).unwrap();
    for mut c in held {
        assert_eq!(c.answer().status, 200);
    }
    assert_eq!(server.metrics().in_flight, 0);
    server.shutdown(Duration::from_secs(5));
}

/// Parse `text` with `prometheus_client`'s parser (run by `python`); the family names it found,
/// in order.
fn parse_with_prometheus_client(python: &Path, text: &str) -> Vec<String> {
    parsed_lines(python, text)
        .iter()
        .map(|l| l.split(' ').next().unwrap().to_string())
        .collect()
}

/// Parse `text` with `prometheus_client`'s parser: for each family it found, in order, its name,
/// type and number of samples.
fn parsed_lines(python: &Path, text: &str) -> Vec<String> {
    let script = "import sys\n\
        from prometheus_client.parser import text_string_to_metric_families\n\
        for f in text_string_to_metric_families(sys.stdin.read()):\n\
        \x20   print(f.name, f.type, len(f.samples))\n";
    let mut child = Command::new(python)
        .args(["-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start python3");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the parser refused the page: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn two_pools_and_a_server_make_one_page_a_real_parser_accepts() {
    let db = Pool::builder()
        .name("db")
        .workers(1)
        .build(|x: u8, _| x)
        .unwrap();
    let cache = Pool::builder()
        .name("cache\"hot")
        .workers(1)
        .build(|x: u8, _| x)
        .unwrap();
    db.call(1).unwrap();
    let server = Server::builder()
        .bind("127.0.0.1:0")
        .access_log(false)
        .serve(|_req, _ctx| "ok")
        .unwrap();
    let (a, _c) = roundtrip(server.local_addrs()[0], &get("/"));
    assert_eq!(a.status, 200);

    let metrics = Metrics::builder().prefix("app").build().unwrap();
    let mut page = metrics.page();
    page.pool(&db.stats())
        .pool(&cache.stats())
        .pool(&server.stats())
        .server("http", &server.metrics());
    // Process mode's per-worker detail (`prefork::worker_metrics()` in a worker process).
    #[cfg(feature = "prefork")]
    {
        let workers: Vec<_> = (0..2)
            .map(|i| {
                let mut w = prefork_pool::prefork::WorkerMetrics::default();
                w.worker = i;
                w.pid = 1000 + i as u32;
                w.requests = 10 + i as u64;
                w.in_flight = 1;
                w.open_connections = 2;
                w
            })
            .collect();
        page.workers("http", &workers);
    }
    let text = page.finish();
    // What the page says, read as text.
    #[cfg(feature = "prefork")]
    {
        assert!(
            text.contains("app_http_worker_requests_total{server=\"http\",worker=\"1\"} 11\n"),
            "{text}"
        );
        assert!(
            text.contains("app_http_worker_pid{server=\"http\",worker=\"0\"} 1000\n"),
            "{text}"
        );
    }
    assert_eq!(text.matches("# TYPE app_pool_completed_total ").count(), 1);
    assert!(
        text.contains("app_pool_completed_total{pool=\"db\"} 1\n"),
        "{text}"
    );
    assert!(text.contains("{pool=\"cache\\\"hot\"}"), "{text}");
    assert!(
        text.contains("app_http_requests_total{server=\"http\",method=\"GET\",class=\"2xx\"} 1\n"),
        "{text}"
    );
    assert!(text.contains("app_http_request_duration_seconds_count{server=\"http\"} 1\n"));
    // The compatibility renderer still gives one pool's page.
    let one = db.stats().to_prometheus("svc");
    assert!(one.contains("svc_pool_completed_total{pool=\"db\"} 1\n"));

    // What a real parser reads in it (skipped without one).
    if let Some(python) = tools::require(&tools::PROMETHEUS_CLIENT) {
        let parsed = parsed_lines(&python, &text);
        let families: Vec<String> = parsed
            .iter()
            .map(|l| l.split(' ').next().unwrap().to_string())
            .collect();
        #[cfg(feature = "prefork")]
        for (f, samples) in [
            ("app_http_worker_requests counter", 2),
            ("app_http_worker_requests_in_flight gauge", 2),
            ("app_http_worker_open_connections gauge", 2),
            ("app_http_worker_pid gauge", 2),
        ] {
            let line = format!("{f} {samples}");
            assert!(
                parsed.contains(&line),
                "the parser did not find {line:?}: {parsed:?}"
            );
        }
        let mut unique = families.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(
            unique.len(),
            families.len(),
            "a family repeated: {families:?}"
        );
        for f in [
            "app_pool_completed",
            "app_pool_inline_completed",
            "app_pool_workers",
            "app_http_requests",
            "app_http_server_answers",
            "app_http_request_duration_seconds",
            "app_http_open_connections",
            "app_http_self_calls",
            "app_http_sent_bytes",
        ] {
            assert!(families.iter().any(|x| x == f), "{f} missing: {families:?}");
        }
        // One pool's page parses too.
        parse_with_prometheus_client(&python, &one);
    }

    server.shutdown(Duration::from_secs(5));
    db.shutdown(Duration::from_secs(5));
    cache.shutdown(Duration::from_secs(5));
}
