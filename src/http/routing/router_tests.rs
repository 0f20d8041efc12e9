//! The router's dispatch (404, 405 and `Allow`, parameters, nesting, fallback, state, deadlines)
//! and the extractors' rejections, without a server.

use std::time::Duration;

use http::header::{ALLOW, CONTENT_TYPE, LOCATION};
use http::{HeaderMap, Method, Request, StatusCode};
use serde::Deserialize;

use crate::http::routing::extract::{ClientAddr, Rejection, State};
use crate::http::routing::extract_serde::{Path, Query};
use crate::http::routing::json::Json;
use crate::http::routing::router::{any, get, post, put, Router};
use crate::http::types::{HttpRequest, HttpResponse, PeerAddr};

fn req(method: &str, uri: &str) -> HttpRequest {
    Request::builder()
        .method(method)
        .uri(uri)
        .body(Vec::new())
        .unwrap()
}

fn text(r: &HttpResponse) -> String {
    String::from_utf8_lossy(r.body()).into_owned()
}

fn notes() -> Router {
    Router::new()
        .route("/", get(|| "home"))
        .route(
            "/notes/{id}",
            get(|Path(id): Path<u32>| format!("show {id}"))
                .put(|Path(id): Path<u32>| (StatusCode::ACCEPTED, format!("update {id}"))),
        )
        .route("/notes", post(|| (StatusCode::CREATED, "made")))
        .route("/files/{*rest}", get(|Path(rest): Path<String>| rest))
}

#[test]
fn unknown_path_is_404_and_wrong_method_405_with_allow() {
    let app = notes();
    let r = app.oneshot(req("GET", "/nope"));
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert_eq!(text(&r), "no route for this path\n");

    let r = app.oneshot(req("DELETE", "/notes/3"));
    assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(r.headers()[ALLOW], "GET, PUT, HEAD");
    assert_eq!(
        text(&r),
        "method not allowed here; allowed: GET, PUT, HEAD\n"
    );

    let r = app.oneshot(req("GET", "/notes"));
    assert_eq!(
        (r.status().as_u16(), r.headers()[ALLOW].to_str().unwrap()),
        (405, "POST")
    );
    // HEAD runs GET; a trailing slash is another path.
    assert_eq!(text(&app.oneshot(req("HEAD", "/notes/4"))), "show 4");
    assert_eq!(app.oneshot(req("GET", "/notes/4/")).status(), 404);
}

#[test]
fn parameters_are_matched_and_percent_decoded() {
    let app = notes();
    let r = app.oneshot(req("PUT", "/notes/12"));
    assert_eq!((r.status().as_u16(), text(&r)), (202, "update 12".into()));
    assert_eq!(text(&app.oneshot(req("GET", "/"))), "home");
    assert_eq!(
        text(&app.oneshot(req("GET", "/files/a/b%20c.txt"))),
        "a/b c.txt"
    );
    // Not a u32: the extractor's 400 names it.
    let r = app.oneshot(req("GET", "/notes/x"));
    assert_eq!(r.status(), 400);
    assert_eq!(
        text(&r),
        "Path: invalid URL parameter: \"x\" is not a u32: invalid digit found in string\n"
    );
    // Not UTF-8 once decoded.
    let r = app.oneshot(req("GET", "/files/%FF"));
    assert_eq!(r.status(), 400);
    assert_eq!(text(&r), "Path: {rest} is not UTF-8 once percent-decoded\n");

    #[derive(Deserialize)]
    struct Ids {
        user: String,
        n: u8,
    }
    let app = Router::new()
        .route(
            "/u/{user}/n/{n}",
            get(|Path(ids): Path<Ids>| format!("{}:{}", ids.user, ids.n)),
        )
        .route(
            "/t/{a}/{b}",
            get(|Path((a, b)): Path<(String, i64)>| format!("{a}{b}")),
        )
        .route("/one/{a}/{b}", get(|Path(a): Path<String>| a));
    assert_eq!(text(&app.oneshot(req("GET", "/u/a%2Db/n/7"))), "a-b:7");
    assert_eq!(text(&app.oneshot(req("GET", "/t/x/-3"))), "x-3");
    let r = app.oneshot(req("GET", "/one/x/y"));
    assert_eq!(
        (r.status().as_u16(), text(&r)),
        (
            400,
            "Path: invalid URL parameter: the route has 2 parameters, one expected\n".into()
        )
    );
}

#[test]
fn nesting_and_fallbacks() {
    let api = Router::new()
        .route("/", get(|| "api root"))
        .route(
            "/notes/{id}",
            get(|Path(id): Path<u32>| format!("api note {id}")),
        )
        .fallback(|uri: http::Uri| (StatusCode::NOT_FOUND, format!("api has no {}", uri.path())));
    let app = Router::new()
        .route("/", get(|| "root"))
        .nest("/api/v1", api)
        .fallback(|m: Method| (StatusCode::IM_A_TEAPOT, format!("fallback {m}")));
    assert_eq!(text(&app.oneshot(req("GET", "/api/v1"))), "api root");
    assert_eq!(
        text(&app.oneshot(req("GET", "/api/v1/notes/5"))),
        "api note 5"
    );
    let r = app.oneshot(req("POST", "/api/v1/zzz"));
    assert_eq!(
        (r.status().as_u16(), text(&r)),
        (404, "api has no /api/v1/zzz".into())
    );
    let r = app.oneshot(req("DELETE", "/elsewhere"));
    assert_eq!(
        (r.status().as_u16(), text(&r)),
        (418, "fallback DELETE".into())
    );
    // A known path with a wrong method is still 405, not the fallback.
    assert_eq!(app.oneshot(req("POST", "/api/v1/notes/5")).status(), 405);
    // Unless the router answers those itself: its answer, with `Allow`.
    let app =
        app.method_not_allowed(|m: Method| (StatusCode::METHOD_NOT_ALLOWED, format!("no {m}")));
    let r = app.oneshot(req("POST", "/api/v1/notes/5"));
    assert_eq!(
        (
            r.status().as_u16(),
            r.headers()[ALLOW].to_str().unwrap(),
            text(&r)
        ),
        (405, "GET, HEAD", "no POST".into())
    );
}

#[test]
fn same_path_twice_merges_and_any_takes_the_rest() {
    let app = Router::new()
        .route("/x", get(|| "get"))
        .route("/x", post(|| "post"))
        .route("/y", any(|m: Method| m.to_string()).put(|| "put"));
    assert_eq!(text(&app.oneshot(req("POST", "/x"))), "post");
    assert_eq!(text(&app.oneshot(req("GET", "/x"))), "get");
    assert_eq!(text(&app.oneshot(req("PATCH", "/y"))), "PATCH");
    assert_eq!(text(&app.oneshot(req("PUT", "/y"))), "put");
}

#[test]
#[should_panic(expected = "a second handler for GET on /x")]
fn a_method_given_twice_panics() {
    let _ = Router::<()>::new()
        .route("/x", get(|| "a"))
        .route("/x", get(|| "b"));
}

#[test]
#[should_panic(expected = "route \"/{b}\"")]
fn conflicting_routes_panic() {
    let _ = Router::<()>::new()
        .route("/{a}", get(|| "a"))
        .route("/{b}", get(|| "b"));
}

#[test]
fn state_and_deadlines() {
    #[derive(Clone)]
    struct App {
        name: &'static str,
    }
    let app = Router::new()
        .route(
            "/slow",
            get(|State(s): State<App>| s.name).deadline(Duration::from_secs(90)),
        )
        .route("/fast", get(|State(s): State<App>| s.name))
        .with_state(App { name: "app" });
    assert_eq!(text(&app.oneshot(req("GET", "/slow"))), "app");
    assert_eq!(
        app.deadline_of(&req("GET", "/slow")),
        Some(Duration::from_secs(90))
    );
    assert_eq!(app.deadline_of(&req("GET", "/fast")), None);
    assert_eq!(app.deadline_of(&req("GET", "/none")), None);
    // Composed with a deadline_for chosen before: the route's first.
    let app = std::sync::Arc::new(app);
    let before: std::sync::Arc<crate::http::engine::dispatch::DeadlineFor> =
        std::sync::Arc::new(|_: &HttpRequest| Some(Duration::from_secs(1)));
    let chosen = app.deadlines(Some(before)).unwrap();
    assert_eq!(chosen(&req("GET", "/slow")), Some(Duration::from_secs(90)));
    assert_eq!(chosen(&req("GET", "/fast")), Some(Duration::from_secs(1)));
}

#[derive(Deserialize, serde::Serialize)]
struct Note {
    title: String,
    stars: Option<u8>,
}

fn json_req(ct: Option<&str>, body: &str) -> HttpRequest {
    let mut r = req("POST", "/notes");
    if let Some(ct) = ct {
        r.headers_mut().insert(CONTENT_TYPE, ct.parse().unwrap());
    }
    *r.body_mut() = body.as_bytes().to_vec();
    r
}

#[test]
fn json_in_and_out_and_its_rejections() {
    let app = Router::new().route(
        "/notes",
        post(|Json(n): Json<Note>| (StatusCode::CREATED, Json(n))),
    );
    let r = app.oneshot(json_req(Some("application/json"), r#"{"title":"t"}"#));
    assert_eq!(r.status(), 201);
    assert_eq!(r.headers()[CONTENT_TYPE], "application/json");
    assert_eq!(text(&r), r#"{"title":"t","stars":null}"#);

    let r = app.oneshot(json_req(None, r#"{"title":"t"}"#));
    assert_eq!(r.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_eq!(
        text(&r),
        "Json: expected Content-Type: application/json, got none\n"
    );
    let r = app.oneshot(json_req(Some("text/plain"), "{}"));
    assert_eq!(
        text(&r),
        "Json: expected Content-Type: application/json, got \"text/plain\"\n"
    );
    let r = app.oneshot(json_req(Some("application/json"), "{\"title\":"));
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert!(
        text(&r).starts_with("Json: the body is not JSON: EOF while parsing"),
        "{}",
        text(&r)
    );
    let r = app.oneshot(json_req(Some("application/json"), r#"{"title":1}"#));
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        text(&r).starts_with("Json: the body's JSON does not fit: invalid type: integer `1`"),
        "{}",
        text(&r)
    );
    let r = app.oneshot(json_req(
        Some("application/json"),
        r#"{"title":"t","stars":300}"#,
    ));
    assert_eq!(r.status(), 422);
}

#[test]
fn query_is_percent_decoded_and_rejections_say_why() {
    #[derive(Deserialize)]
    struct Q {
        session_id: String,
        n: Option<u16>,
        flag: Option<bool>,
    }
    let app = Router::new().route(
        "/q",
        get(|Query(q): Query<Q>| format!("{} {:?} {:?}", q.session_id, q.n, q.flag)),
    );
    let r = app.oneshot(req("GET", "/q?session_id=a%2Db%2Dc&n=5&flag=true"));
    assert_eq!(text(&r), "a-b-c Some(5) Some(true)");
    assert_eq!(
        text(&app.oneshot(req("GET", "/q?session_id=x+y"))),
        "x y None None"
    );
    let r = app.oneshot(req("GET", "/q"));
    assert_eq!(
        (r.status().as_u16(), text(&r)),
        (400, "Query: missing field `session_id`\n".into())
    );
    let r = app.oneshot(req("GET", "/q?session_id=a&n=big"));
    assert_eq!(
        text(&r),
        "Query: \"big\" is not a u16: invalid digit found in string\n"
    );
    let r = app.oneshot(req("GET", "/q?session_id=%FF"));
    assert_eq!(
        text(&r),
        "Query: \"session_id=%FF\" is not UTF-8 once percent-decoded\n"
    );
    // Optional: the handler sees the rejection instead of the client.
    let app = Router::new().route(
        "/o",
        get(|q: Option<Query<Q>>, r: Result<Query<Q>, Rejection>| {
            format!(
                "{} {}",
                q.is_some(),
                r.err().map_or(200, |e| e.status().as_u16())
            )
        }),
    );
    assert_eq!(text(&app.oneshot(req("GET", "/o"))), "false 400");
}

#[test]
fn head_extractors_body_and_many_arguments() {
    #[allow(clippy::too_many_arguments)]
    fn all(
        m: Method,
        uri: http::Uri,
        h: HeaderMap,
        client: ClientAddr,
        Path(id): Path<u8>,
        Query(q): Query<std::collections::HashMap<String, String>>,
        body: String,
    ) -> String {
        format!(
            "{m} {} {} {client:?} {id} {} {body}",
            uri.path(),
            h["x-a"].to_str().unwrap(),
            q["k"]
        )
    }
    let app = Router::new()
        .route("/all/{id}", post(all))
        .route("/raw", put(|b: Vec<u8>| b.len().to_string()))
        .route("/req", get(|r: HttpRequest| r.uri().to_string()));
    let mut r = req("POST", "/all/9?k=v%21");
    r.headers_mut().insert("x-a", "1".parse().unwrap());
    r.extensions_mut().insert(PeerAddr("10.0.0.1".into()));
    *r.body_mut() = b"hi".to_vec();
    assert_eq!(text(&app.oneshot(r)), "POST /all/9 1 Ip(10.0.0.1) 9 v! hi");
    let mut r = req("PUT", "/raw");
    *r.body_mut() = vec![0xff, 0];
    assert_eq!(text(&app.oneshot(r)), "2");
    assert_eq!(text(&app.oneshot(req("GET", "/req?a=b"))), "/req?a=b");
    // A body that is not UTF-8 for a String.
    let mut r = req("POST", "/all/9?k=v");
    r.headers_mut().insert("x-a", "1".parse().unwrap());
    *r.body_mut() = vec![0xff];
    let r = app.oneshot(r);
    assert_eq!(r.status(), 400);
    assert!(text(&r).starts_with("String: the body is not UTF-8"));
    // A Loopback outside a server: the extractor's 500.
    let app = Router::new().route("/lb", get(|_: crate::http::Loopback| "x"));
    let r = app.oneshot(req("GET", "/lb"));
    assert_eq!(
        (r.status().as_u16(), text(&r)),
        (
            500,
            "Loopback: the request was not served by a Server\n".into()
        )
    );
    assert_eq!(ClientAddr::of(&PeerAddr("unix".into())), ClientAddr::Unix);
    assert_eq!(
        ClientAddr::of(&PeerAddr("loopback".into())),
        ClientAddr::Loopback
    );
}

#[test]
fn answers_with_headers() {
    use crate::http::handler::IntoResponse;
    let r = (StatusCode::CREATED, [(LOCATION, "/n/1")], Json(1)).into_response();
    assert_eq!(
        (r.status().as_u16(), r.headers()[LOCATION].to_str().unwrap()),
        (201, "/n/1")
    );
    assert_eq!(
        (r.headers()[CONTENT_TYPE].to_str().unwrap(), text(&r)),
        ("application/json", "1".into())
    );
    let r = ([("content-type", "text/csv")], "a,b").into_response();
    assert_eq!(
        (
            r.status().as_u16(),
            r.headers()[CONTENT_TYPE].to_str().unwrap()
        ),
        (200, "text/csv")
    );
    let mut h = HeaderMap::new();
    h.append("x-n", "1".parse().unwrap());
    h.append("x-n", "2".parse().unwrap());
    let r = (StatusCode::ACCEPTED, h, [("x-m", "3")], ()).into_response();
    let n: Vec<_> = r.headers().get_all("x-n").iter().collect();
    assert_eq!(
        (
            r.status().as_u16(),
            n.len(),
            r.headers()["x-m"].to_str().unwrap()
        ),
        (202, 2, "3")
    );
    let r = (StatusCode::OK, [("bad name", "v")], "x").into_response();
    assert_eq!(r.status(), 500);
    assert!(text(&r).starts_with("bad answer header: a header name"));
    let e = crate::Error::LoopDetected { depth: 3, max: 2 };
    assert_eq!(e.into_response().status(), 508);
}

#[test]
fn handlers_that_take_the_workers_state() {
    struct Conn(u32);
    fn bump(c: &mut Conn, Path(by): Path<u32>, body: String) -> String {
        c.0 += by;
        format!("{} {body}", c.0)
    }
    let app = Router::new()
        .route("/bump/{by}", post(bump))
        .route("/peek", get(|c: &mut Conn| c.0.to_string()))
        .route("/plain", get(|| "plain"));
    let ctx = crate::Context::detached(Duration::from_secs(5));
    let mut conn = Conn(1);
    let mut r = req("POST", "/bump/2");
    *r.body_mut() = b"x".to_vec();
    assert_eq!(text(&app.call_with_worker(r, &ctx, &mut conn)), "3 x");
    assert_eq!(
        text(&app.call_with_worker(req("GET", "/peek"), &ctx, &mut conn)),
        "3"
    );
    assert_eq!(conn.0, 3);
    // Extractors still reject first; a route without the state runs as ever.
    let r = app.call_with_worker(req("POST", "/bump/x"), &ctx, &mut conn);
    assert_eq!(r.status(), 400);
    assert_eq!(
        text(&app.call_with_worker(req("GET", "/plain"), &ctx, &mut conn)),
        "plain"
    );
    // Served without a state, or with one of another type: 500, saying why.
    let r = app.oneshot(req("GET", "/peek"));
    assert_eq!(r.status(), 500);
    assert!(text(&r).contains("serve the router with serve_router_with_state"));
    let r = app.call_with_worker(req("GET", "/peek"), &ctx, &mut 5u8);
    assert_eq!(
        (r.status().as_u16(), text(&r)),
        (
            500,
            "the worker's state is of another type than this handler's\n".into()
        )
    );
}
