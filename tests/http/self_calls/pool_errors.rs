//! Pool errors become short plain-text answers: panic 500 (and the next request works), deadline
//! 504 (and the capacity comes back), full queue 503 with Retry-After.

use crate::http_helpers::*;
use prefork_pool::http::Server;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[test]
fn panic_is_500_and_the_next_request_works() {
    let s = Server::builder()
        .bind("127.0.0.1:0")
        // This test's clients live in this process: they are not self-calls to rescue.
        .max_spare(0)
        .pool(|p| p.workers(1))
        .serve(|req, _ctx| {
            if req.uri().path() == "/panic" {
                panic!("boom");
            }
            http::Response::new(b"fine".to_vec())
        })
        .unwrap();
    let mut c = Client::new(s.local_addrs()[0]);
    c.send(&get("/panic"));
    let a = c.answer();
    assert_eq!(a.status, 500);
    assert!(a.text().contains("panicked"), "{}", a.text());
    assert!(
        !a.text().contains("boom"),
        "the panic message stays in the log"
    );
    // Same connection, same (only) worker.
    c.send(&get("/ok"));
    let a = c.answer();
    assert_eq!(a.status, 200);
    assert_eq!(a.text(), "fine");
    s.shutdown(WAIT);
}

#[test]
fn deadline_is_504_and_capacity_is_restored() {
    let release = Arc::new(AtomicBool::new(false));
    let r2 = release.clone();
    let s = Server::builder()
        .bind("127.0.0.1:0")
        // This test's clients live in this process: they are not self-calls to rescue.
        .max_spare(0)
        .pool(|p| p.workers(1).deadline(Duration::from_millis(300)))
        .serve(move |req, ctx| {
            if req.uri().path() == "/stuck" {
                // Ignores cancellation until the test lets it go: a truly stuck handler.
                while !r2.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(5));
                }
                let _ = ctx;
            }
            http::Response::new(b"quick".to_vec())
        })
        .unwrap();
    let addr = s.local_addrs()[0];
    let start = Instant::now();
    let (a, _c) = roundtrip(addr, &get("/stuck"));
    assert_eq!(a.status, 504);
    assert!(a.text().contains("deadline"));
    assert!(start.elapsed() < Duration::from_secs(5));
    // The stuck worker was replaced: a quick request is served while it is still stuck.
    let (a, _c) = roundtrip(addr, &get("/quick"));
    assert_eq!(a.status, 200, "{}", a.text());
    assert_eq!(a.text(), "quick");
    release.store(true, Ordering::Relaxed);
    s.shutdown(WAIT);
}

#[test]
fn full_queue_is_503_with_retry_after() {
    let (entered_tx, entered_rx) = crossbeam_channel::unbounded::<()>();
    let (go_tx, go_rx) = crossbeam_channel::unbounded::<()>();
    let s = Server::builder()
        .bind("127.0.0.1:0")
        // This test's clients live in this process: they are not self-calls to rescue.
        .max_spare(0)
        .pool(|p| p.workers(1).queue_capacity(1))
        .serve(move |_req, _ctx| {
            let _ = entered_tx.send(());
            let _ = go_rx.recv_timeout(WAIT);
            http::Response::new(b"done".to_vec())
        })
        .unwrap();
    let addr = s.local_addrs()[0];
    let mut busy = Client::new(addr);
    busy.send(&get("/1"));
    entered_rx
        .recv_timeout(WAIT)
        .expect("the worker took the first request");
    let mut queued = Client::new(addr);
    queued.send(&get("/2"));
    // Wait until the second request sits in the queue.
    let start = Instant::now();
    while s.stats().queued < 1 {
        assert!(start.elapsed() < WAIT, "the second request never queued");
        std::thread::sleep(Duration::from_millis(5));
    }
    let (a, mut c) = roundtrip(addr, &get("/3"));
    assert_eq!(a.status, 503);
    assert_eq!(a.header("retry-after").as_deref(), Some("1"));
    assert!(a.text().contains("overloaded"));
    // The connection stays usable (503 is not a protocol error).
    go_tx.send(()).unwrap();
    go_tx.send(()).unwrap();
    assert_eq!(busy.answer().status, 200);
    assert_eq!(queued.answer().status, 200);
    go_tx.send(()).unwrap();
    c.send(&get("/4"));
    assert_eq!(c.answer().status, 200);
    s.shutdown(WAIT);
}
