//! The `Router` through a real server (127.0.0.1:0): extractors over TCP, 405 with `Allow`, a
//! route's own deadline (504 before the Pool's), the `Loopback` and the client's address as
//! extractors, and the same router as a plain handler of `serve`.

use std::time::{Duration, Instant};

use prefork_pool::http::types::http::{Request, StatusCode};
use prefork_pool::http::{
    get, post, ClientAddr, Json, Loopback, Path, Query, Router, Server, State,
};
use serde::{Deserialize, Serialize};

use crate::http_helpers::{roundtrip, Client};

#[derive(Deserialize, Serialize)]
struct Note {
    title: String,
}

#[derive(Deserialize)]
struct Page {
    q: String,
}

fn app() -> Router {
    Router::new()
        .route(
            "/notes/{id}",
            get(|Path(id): Path<u32>, State(owner): State<String>| format!("{owner}/{id}")).post(
                |Path(id): Path<u32>, Json(n): Json<Note>| {
                    (
                        StatusCode::CREATED,
                        Json(Note {
                            title: format!("{id}:{}", n.title),
                        }),
                    )
                },
            ),
        )
        .route("/search", get(|Query(p): Query<Page>| p.q))
        .route(
            "/slow",
            get(|| std::thread::sleep(Duration::from_secs(2))).deadline(Duration::from_millis(200)),
        )
        .route("/who", get(|c: ClientAddr| format!("{c:?}")))
        .route(
            "/relay",
            get(|lb: Loopback| -> Result<Vec<u8>, prefork_pool::Error> {
                let inner = Request::get("/notes/1").body(Vec::new()).unwrap();
                Ok(lb.send(inner)?.into_body())
            }),
        )
        .with_state("ann".to_string())
}

#[test]
fn a_router_served_over_tcp() {
    let server = Server::builder()
        .bind("127.0.0.1:0")
        .pool(|p| p.workers(2).deadline(Duration::from_secs(30)))
        .access_log(false)
        .serve_router(app())
        .unwrap();
    let addr = server.local_addrs()[0];
    let mut c = Client::new(addr);
    let mut ask = |raw: String| {
        c.send(raw.as_bytes());
        c.answer()
    };
    let get = |p: &str| format!("GET {p} HTTP/1.1\r\nHost: t\r\n\r\n");
    let json = |p: &str, ct: &str, body: &str| {
        format!(
            "POST {p} HTTP/1.1\r\nHost: t\r\nContent-Type: {ct}\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
    };

    let a = ask(get("/notes/7"));
    assert_eq!((a.status, a.text()), (200, "ann/7".into()));
    let a = ask(json("/notes/7", "application/json", r#"{"title":"t"}"#));
    assert_eq!((a.status, a.text()), (201, r#"{"title":"7:t"}"#.into()));
    assert_eq!(
        a.header("content-type").as_deref(),
        Some("application/json")
    );
    let a = ask(json("/notes/7", "text/plain", r#"{"title":"t"}"#));
    assert_eq!(a.status, 415, "{}", a.text());
    let a = ask(json("/notes/7", "application/json", r#"{"name":"t"}"#));
    assert_eq!(a.status, 422, "{}", a.text());
    assert!(a
        .text()
        .starts_with("Json: the body's JSON does not fit: missing field `title`"));
    let a = ask(json("/notes/x", "application/json", "{}"));
    assert_eq!(a.status, 400, "{}", a.text());
    let a = ask("DELETE /notes/7 HTTP/1.1\r\nHost: t\r\n\r\n".to_string());
    assert_eq!(
        (a.status, a.header("allow").as_deref()),
        (405, Some("GET, POST, HEAD"))
    );
    let a = ask(get("/search?q=a%2Db+c%26d"));
    assert_eq!(a.text(), "a-b c&d");
    let a = ask(get("/nothing"));
    assert_eq!(a.status, 404);
    let a = ask(get("/who"));
    assert_eq!(a.text(), "Ip(127.0.0.1)");
    let a = ask(get("/relay"));
    assert_eq!((a.status, a.text()), (200, "ann/1".into()));

    // The route's own deadline: 504 after 200 ms, not the Pool's 30 s.
    let start = Instant::now();
    let (a, _c) = roundtrip(addr, &crate::http_helpers::get("/slow"));
    assert_eq!(a.status, 504, "{}", a.text());
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "{:?}",
        start.elapsed()
    );
    server.shutdown(Duration::from_secs(5));
}

/// The same router as a plain handler: the routes answer, without their deadlines.
#[test]
fn a_router_as_a_plain_handler() {
    let server = Server::builder()
        .bind("127.0.0.1:0")
        .access_log(false)
        .serve(app().into_handler())
        .unwrap();
    let lb = server.loopback();
    let r = lb
        .send(Request::get("/notes/3").body(Vec::new()).unwrap())
        .unwrap();
    assert_eq!(r.body(), b"ann/3");
    let r = lb
        .send(Request::get("/notes/3/x").body(Vec::new()).unwrap())
        .unwrap();
    assert_eq!(r.status(), 404);
    // A POST with a JSON body through the Loopback.
    let req = Request::post("/notes/3")
        .header("content-type", "application/json")
        .body(br#"{"title":"x"}"#.to_vec())
        .unwrap();
    assert_eq!(lb.send(req).unwrap().body(), br#"{"title":"3:x"}"#);
    // And `post` alone, for the import's sake: a fresh router with a 405.
    let r = Router::new()
        .route("/p", post(|| "p"))
        .oneshot(Request::get("/p").body(Vec::new()).unwrap());
    assert_eq!(r.status(), 405);
    server.shutdown(Duration::from_secs(5));
}
