//! Router dispatch on the seed's routes, beside the bare `match (method, path)` it replaces: the
//! same requests (a mix of the four routes and a wrong method), the same answers, measured inside
//! a Pool handler (a real `Context`), with the requests built before the clock starts.
//!
//! - `router_dispatch/bare_match`: `match (req.method(), req.uri().path())`, a 404 at the end.
//! - `router_dispatch/router`: a `Router` of the same routes (405 with `Allow` for a wrong method).
//! - `router_dispatch/router_query_state`: the same, the `GET` route taking `Query` and `State`
//!   (the seed example's `fetch_hello`), against the bare match's hand-split query.
//!
//! Run: `cargo bench --bench router`.

use std::collections::HashMap;
use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use http::{Method, Request, StatusCode};
use prefork_pool::http::{
    get, post, HttpRequest, HttpResponse, IntoResponse, Query, Router, State,
};
use prefork_pool::{Context, Pool};

/// The mix: each of the seed's routes, and `GET /hello_world` (405).
fn requests(n: u64) -> Vec<HttpRequest> {
    (0..n)
        .map(|i| {
            let (m, p) = match i % 5 {
                0 => ("POST", "/hello_world"),
                1 => (
                    "GET",
                    "/get_hello_world?session_id=6f1c2e8a-2b7d-4e55-9a0e-1d2f3a4b5c6d",
                ),
                2 => ("POST", "/call_hello_world"),
                3 => ("POST", "/call_hello_world_tcp"),
                _ => ("GET", "/hello_world"),
            };
            Request::builder()
                .method(m)
                .uri(p)
                .body(Vec::new())
                .unwrap()
        })
        .collect()
}

fn bare(req: HttpRequest) -> HttpResponse {
    match (req.method(), req.uri().path()) {
        (&Method::POST, "/hello_world") => (StatusCode::CREATED, "made").into_response(),
        (&Method::GET, "/get_hello_world") => {
            let sid = req
                .uri()
                .query()
                .unwrap_or("")
                .split('&')
                .find_map(|kv| kv.strip_prefix("session_id="))
                .unwrap_or("");
            black_box(sid);
            "found".into_response()
        }
        (&Method::POST, "/call_hello_world") => "called".into_response(),
        (&Method::POST, "/call_hello_world_tcp") => "called".into_response(),
        _ => (StatusCode::NOT_FOUND, "Not Found").into_response(),
    }
}

/// The seed's routes but `GET /get_hello_world`.
fn base<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/hello_world", post(|| (StatusCode::CREATED, "made")))
        .route("/call_hello_world", post(|| "called"))
        .route("/call_hello_world_tcp", post(|| "called"))
        .fallback(|| (StatusCode::NOT_FOUND, "Not Found"))
}

fn router(query_state: bool) -> Router {
    if query_state {
        base::<u64>()
            .route(
                "/get_hello_world",
                get(
                    |State(s): State<u64>, Query(q): Query<HashMap<String, String>>| {
                        black_box((s, q.get("session_id").map(String::len)));
                        "found"
                    },
                ),
            )
            .with_state(7u64)
    } else {
        base().route("/get_hello_world", get(|| "found"))
    }
}

/// `n` requests through `serve`, timed inside a Pool handler (which gives the real `Context`).
fn timed(pool: &Pool<u64, Duration>) -> impl FnMut(u64) -> Duration + '_ {
    move |n| pool.call_here(n, None).unwrap()
}

fn dispatch(c: &mut Criterion) {
    let mut g = c.benchmark_group("router_dispatch");
    g.measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1));
    type Serve = Box<dyn Fn(HttpRequest, &Context) -> HttpResponse + Send + Sync>;
    let cases: [(&str, Serve); 3] = [
        ("bare_match", Box::new(|req, _| bare(req))),
        ("router", Box::new(router(false).into_handler())),
        ("router_query_state", Box::new(router(true).into_handler())),
    ];
    for (name, serve) in cases {
        let pool = Pool::builder()
            .workers(1)
            .build(move |n: u64, ctx: &Context| {
                let reqs = requests(n);
                let start = Instant::now();
                for req in reqs {
                    black_box(serve(req, ctx));
                }
                start.elapsed()
            })
            .unwrap();
        let mut run = timed(&pool);
        g.bench_function(name, |b| b.iter_custom(&mut run));
        drop(run);
        pool.shutdown(Duration::from_secs(5));
    }
    g.finish();
}

criterion_group!(benches, dispatch);
criterion_main!(benches);
