//! The seed scenario over real TCP: a handler that calls its own `/hello_world` (through the
//! `Loopback` handle) answers at once with one worker, where gunicorn's sync worker hangs until its
//! timeout; and eight such calls at once on two workers all answer.

use crate::http_helpers::*;
use parking_lot::Mutex;
use prefork_pool::http::{HttpRequest, HttpResponse, Loopback, Server, ServerHandle};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn json(status: u16, body: String) -> HttpResponse {
    http::Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(body.into_bytes())
        .unwrap()
}

fn app(workers: usize) -> ServerHandle {
    let cache: Arc<Mutex<HashMap<String, String>>> = Arc::default();
    let next = AtomicU64::new(1);
    Server::builder()
        .bind("127.0.0.1:0")
        // This test's clients live in this process: they are not self-calls to rescue.
        .max_spare(0)
        .pool(|p| p.workers(workers))
        .serve(
            move |req: HttpRequest, _ctx| match (req.method().as_str(), req.uri().path()) {
                ("POST", "/hello_world") => {
                    let sid = format!(
                        "00000000-0000-4000-8000-{:012x}",
                        next.fetch_add(1, Ordering::Relaxed)
                    );
                    let payload =
                        format!(r#"{{"message": "Hello, World!", "session_id": "{sid}"}}"#);
                    cache.lock().insert(sid.clone(), payload);
                    json(201, format!(r#"{{"session_id": "{sid}"}}"#))
                }
                ("GET", "/get_hello_world") => {
                    let sid = req
                        .uri()
                        .query()
                        .and_then(|q| q.strip_prefix("session_id="))
                        .unwrap_or("");
                    match cache.lock().get(sid) {
                        Some(p) => json(200, p.clone()),
                        None => json(404, r#"{"error": "Invalid or missing session_id"}"#.into()),
                    }
                }
                ("POST", "/call_hello_world") => {
                    let lb = req
                        .extensions()
                        .get::<Loopback>()
                        .expect("a Loopback in every request");
                    let inner = http::Request::post("/hello_world")
                        .body(Vec::new())
                        .unwrap();
                    match lb.send(inner) {
                        Ok(resp) => resp,
                        Err(e) => json(e.http_status(), format!(r#"{{"error": "{e}"}}"#)),
                    }
                }
                _ => json(404, r#"{"error": "not found"}"#.into()),
            },
        )
        .unwrap()
}

fn session_id(body: &str) -> String {
    let start = body.find(r#""session_id": ""#).expect("a session_id") + 15;
    body[start..start + 36].to_string()
}

#[test]
fn call_hello_world_with_one_worker() {
    let s = app(1);
    let addr = s.local_addrs()[0];
    let mut c = Client::new(addr);
    let start = Instant::now();
    c.send(&post("/call_hello_world", ""));
    let a = c.answer();
    let took = start.elapsed();
    assert_created_json_in_time(&a, took);
    let sid = session_id(&a.text());
    c.send(&get(&format!("/get_hello_world?session_id={sid}")));
    let a = c.answer();
    assert_eq!(a.status, 200);
    assert_eq!(
        a.text(),
        format!(r#"{{"message": "Hello, World!", "session_id": "{sid}"}}"#)
    );
    c.send(&get("/get_hello_world?session_id=nope"));
    let a = c.answer();
    assert_eq!(a.status, 404);
    assert_eq!(a.text(), r#"{"error": "Invalid or missing session_id"}"#);
    assert_eq!(s.stats().reentrant_inline, 1);
    s.shutdown(WAIT);
}

#[test]
fn eight_concurrent_calls_on_two_workers() {
    let s = app(2);
    let addr = s.local_addrs()[0];
    let start = Instant::now();
    let threads: Vec<_> = (0..8)
        .map(|_| {
            std::thread::spawn(move || {
                let (a, _c) = roundtrip(addr, &post("/call_hello_world", ""));
                assert_eq!(a.status, 201, "{}", a.text());
                session_id(&a.text())
            })
        })
        .collect();
    let mut ids: Vec<String> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    assert!(start.elapsed() < Duration::from_secs(5));
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 8);
    for sid in ids {
        let (a, _c) = roundtrip(addr, &get(&format!("/get_hello_world?session_id={sid}")));
        assert_eq!(a.status, 200);
    }
    s.shutdown(WAIT);
}
