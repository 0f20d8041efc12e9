//! A handler that calls its own server over real TCP with an ordinary HTTP client (ureq), the
//! seed's bug as written, on one worker: the request it sends is recognised as coming from this
//! process and served on a spare thread, so the outer request answers at once instead of at its
//! deadline.
#![cfg(feature = "http")]

mod common;

use common::*;
use prefork_pool::http::Server;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

#[test]
fn self_call_over_tcp_with_one_worker_answers_at_once() {
    let addr_cell: Arc<OnceLock<std::net::SocketAddr>> = Arc::default();
    let cell = addr_cell.clone();
    let s = Server::builder()
        .bind("127.0.0.1:0")
        .workers(1)
        .deadline(Duration::from_secs(20))
        .serve(move |req, _ctx| match req.uri().path() {
            "/call_hello_world" => {
                let url = format!("http://{}/hello_world", cell.get().unwrap());
                match ureq::post(&url)
                    .timeout(Duration::from_secs(30))
                    .send_bytes(b"")
                {
                    Ok(r) => {
                        let status = r.status();
                        let body = r.into_string().unwrap();
                        http::Response::builder()
                            .status(status)
                            .body(body.into_bytes())
                            .unwrap()
                    }
                    Err(e) => http::Response::builder()
                        .status(502)
                        .body(e.to_string().into_bytes())
                        .unwrap(),
                }
            }
            _ => http::Response::builder()
                .status(201)
                .body(br#"{"session_id": "x"}"#.to_vec())
                .unwrap(),
        })
        .unwrap();
    addr_cell.set(s.local_addrs()[0]).unwrap();
    for _ in 0..3 {
        let start = Instant::now();
        let (a, _c) = roundtrip(s.local_addrs()[0], &post("/call_hello_world", ""));
        assert_eq!(a.status, 201, "{}", a.text());
        assert_eq!(a.text(), r#"{"session_id": "x"}"#);
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "took {:?}: the self-call waited for the worker",
            start.elapsed()
        );
    }
    s.shutdown(WAIT);
}

#[test]
fn without_rescue_the_self_call_waits_for_the_deadline() {
    // The same handler with detection off shows what the rescue prevents: the outer request
    // holds the only worker, the inner one waits in the queue, the deadline answers 504.
    let addr_cell: Arc<OnceLock<std::net::SocketAddr>> = Arc::default();
    let cell = addr_cell.clone();
    let s = Server::builder()
        .bind("127.0.0.1:0")
        .workers(1)
        .self_call_threads(0)
        .deadline(Duration::from_millis(500))
        .serve(move |req, _ctx| {
            if req.uri().path() == "/call_hello_world" {
                let url = format!("http://{}/hello_world", cell.get().unwrap());
                let _ = ureq::post(&url)
                    .timeout(Duration::from_secs(2))
                    .send_bytes(b"");
            }
            http::Response::new(Vec::new())
        })
        .unwrap();
    addr_cell.set(s.local_addrs()[0]).unwrap();
    let (a, _c) = roundtrip(s.local_addrs()[0], &post("/call_hello_world", ""));
    assert_eq!(a.status, 504);
    s.shutdown(WAIT);
}
