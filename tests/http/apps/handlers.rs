//! Handlers that fit the ecosystem: a plain closure returning anything `IntoResponse` (with `?`
//! on a `Result`), the application's rendering of the server's own answers (`error_response`), a
//! deadline per route (`deadline_for`) whose 504 is logged with the request, and a server that
//! serves until SIGTERM and stops at once on a second one (`serve_until_signal`).

use crate::http_helpers::*;
use prefork_pool::http::types::http::{Request, Response, StatusCode};
use prefork_pool::http::{handler, IntoResponse, Loopback, RawJson, Server};
use std::time::{Duration, Instant};

/// Sleep up to `d`, returning early when the request's deadline cancelled it.
fn work(ctx: &prefork_pool::Context, d: Duration) {
    let end = Instant::now() + d;
    while Instant::now() < end && !ctx.is_cancelled() {
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn a_plain_closure_returns_anything_into_response_and_uses_the_question_mark() {
    // The closure is stored before it is served: `handler` makes that compile unannotated.
    let app = handler(
        |req, _ctx| -> Result<Response<Vec<u8>>, prefork_pool::Error> {
            match req.uri().path() {
                "/text" => Ok("plain".into_response()),
                "/json" => Ok((StatusCode::CREATED, RawJson(r#"{"a":1}"#)).into_response()),
                "/relay" => {
                    let lb = req.extensions().get::<Loopback>().unwrap();
                    let inner = Request::get("/json").body(Vec::new()).unwrap();
                    // The inner call is deeper than max_depth (0) allows: `?` answers its 508.
                    Ok(lb.send(inner)?)
                }
                _ => Ok(StatusCode::NOT_FOUND.into_response()),
            }
        },
    );
    let s = Server::builder()
        .bind("127.0.0.1:0")
        .max_spare(0)
        .max_depth(0)
        .serve(app)
        .unwrap();
    let mut c = Client::new(s.local_addrs()[0]);
    c.send(&get("/text"));
    let a = c.answer();
    assert_eq!((a.status, a.text().as_str()), (200, "plain"));
    assert_eq!(
        a.header("content-type").as_deref(),
        Some("text/plain; charset=utf-8")
    );
    c.send(&get("/json"));
    let a = c.answer();
    assert_eq!((a.status, a.text().as_str()), (201, r#"{"a":1}"#));
    assert_eq!(
        a.header("content-type").as_deref(),
        Some("application/json")
    );
    c.send(&get("/relay"));
    let a = c.answer();
    assert_eq!(a.status, 508, "{}", a.text());
    assert!(a.text().starts_with("loop detected"), "{}", a.text());
    c.send(&get("/nothing"));
    assert_eq!(c.answer().status, 404);
    s.shutdown(WAIT);
}

/// The JSON body the hook of these tests renders.
fn json_error(status: StatusCode, reason: &str) -> Response<Vec<u8>> {
    let body = serde_json::json!({ "status": status.as_u16(), "error": reason });
    (status, RawJson(body.to_string())).into_response()
}

#[test]
fn the_error_response_hook_renders_a_413_and_a_504_as_json() {
    let s = Server::builder()
        .bind("127.0.0.1:0")
        .max_spare(0)
        .limit_body_bytes(10)
        .pool(|p| p.workers(2).deadline(Duration::from_millis(300)))
        .error_response(json_error)
        .serve(|req, ctx| {
            if req.uri().path() == "/hook-slow" {
                work(ctx, Duration::from_secs(10));
            }
            "quick"
        })
        .unwrap();
    let addr = s.local_addrs()[0];
    let (a, _c) = roundtrip(addr, &post("/big", "more than ten bytes"));
    assert_eq!(a.status, 413);
    assert_eq!(
        a.header("content-type").as_deref(),
        Some("application/json")
    );
    let v: serde_json::Value = serde_json::from_str(&a.text()).unwrap();
    assert_eq!(v["status"], 413, "{v}");
    assert!(v["error"].as_str().unwrap().contains("large"), "{v}");

    let (a, _c) = roundtrip(addr, &get("/hook-slow"));
    assert_eq!(a.status, 504);
    assert_eq!(
        a.header("content-type").as_deref(),
        Some("application/json")
    );
    let v: serde_json::Value = serde_json::from_str(&a.text()).unwrap();
    assert_eq!(v["status"], 504, "{v}");
    assert!(v["error"].as_str().unwrap().contains("deadline"), "{v}");

    let (a, _c) = roundtrip(addr, &get("/fine"));
    assert_eq!((a.status, a.text().as_str()), (200, "quick"));
    s.shutdown(WAIT);
}

#[test]
fn deadline_for_gives_a_route_its_own_deadline_and_the_504_names_the_request() {
    logs();
    let s = Server::builder()
        .bind("127.0.0.1:0")
        .max_spare(0)
        .pool(|p| p.workers(2).deadline(Duration::from_secs(20)))
        .deadline_for(|req| {
            req.uri()
                .path()
                .starts_with("/route-api")
                .then_some(Duration::from_millis(200))
        })
        .serve(|_req, ctx| {
            work(ctx, Duration::from_millis(800));
            "done"
        })
        .unwrap();
    let addr = s.local_addrs()[0];
    let start = Instant::now();
    let (a, _c) = roundtrip(addr, &get("/route-api/slow"));
    assert_eq!(a.status, 504, "{}", a.text());
    assert!(start.elapsed() < Duration::from_secs(10));
    // The same work under the pool's deadline (20 s) is answered.
    let (a, _c) = roundtrip(addr, &get("/route-export/slow"));
    assert_eq!((a.status, a.text().as_str()), (200, "done"));
    s.shutdown(WAIT);
    // The warning says which request missed its deadline: method, path, client.
    let lines = lines_with(&["`GET /route-api/slow` from 127.0.0.1", "answered 504"]);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(
        lines[0].starts_with("WARN prefork_pool::http:"),
        "{lines:?}"
    );
    assert!(lines[0].contains("deadline of 200ms"), "{lines:?}");
}

#[test]
fn serve_until_signal_drains_on_sigterm_and_stops_at_once_on_a_second() {
    alone(
        module_path!(),
        "serve_until_signal_drains_on_sigterm_and_stops_at_once_on_a_second",
        || {
            // A SIGTERM that arrives before `serve_until_signal` listens must not end this
            // process: a handler of our own, registered first, ignores it.
            let flag = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
            signal_hook::flag::register(signal_hook::consts::SIGTERM, flag).unwrap();
            let s = Server::builder()
                .bind("127.0.0.1:0")
                .max_spare(0)
                .pool(|p| p.workers(1).deadline(Duration::from_secs(60)))
                .serve(|_req, ctx| {
                    work(ctx, Duration::from_secs(60));
                    "late"
                })
                .unwrap();
            let mut c = Client::new(s.local_addrs()[0]);
            c.send(&get("/stuck"));
            let server = s.clone();
            let serving =
                std::thread::spawn(move || server.serve_until_signal(Duration::from_secs(60)));
            // The first signal starts a drain that would wait 60 s for the stuck request; the
            // next one stops at once.
            let start = Instant::now();
            while !serving.is_finished() {
                assert!(start.elapsed() < WAIT, "serve_until_signal did not return");
                // SAFETY: kill(2) of this very process, which handles SIGTERM (above).
                unsafe { libc::kill(libc::getpid(), libc::SIGTERM) };
                std::thread::sleep(Duration::from_millis(50));
            }
            let report = serving.join().unwrap().unwrap();
            assert!(start.elapsed() < Duration::from_secs(15));
            assert_eq!(report.answered_shutting_down, 1, "{report:?}");
            let a = c.answer();
            assert_eq!(a.status, 503, "{}", a.text());
        },
    );
}
