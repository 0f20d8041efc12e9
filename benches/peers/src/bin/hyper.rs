//! Load-test server: hyper 1 (HTTP/1.1 connection builder) on a tokio multi-thread runtime with
//! `WORKERS` worker threads (default 2), the seed app on `127.0.0.1:$PORT`, no access log. Stops
//! on SIGTERM or SIGINT, exit 0.

use std::convert::Infallible;
use std::sync::Arc;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use prefork_pool_benches::{env_or, App, StopSignals};

fn main() {
    let stop = StopSignals::install();
    let port: u16 = env_or("PORT", 8000);
    let workers: usize = env_or("WORKERS", 2);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let listener = rt
        .block_on(tokio::net::TcpListener::bind(("127.0.0.1", port)))
        .unwrap_or_else(|e| {
            eprintln!("cannot start: {e}");
            std::process::exit(1);
        });
    let app = Arc::new(App::new());
    rt.spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            // As prefork-pool does: answers go out at once, not after Nagle's delay.
            let _ = stream.set_nodelay(true);
            let app = app.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let r = app.handle(req.method().as_str(), req.uri().path(), req.uri().query());
                    let resp = Response::builder()
                        .status(r.status)
                        .header("content-type", "application/json")
                        .body(Full::new(Bytes::from(r.body)))
                        .expect("a valid response");
                    async move { Ok::<_, Infallible>(resp) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    stop.wait();
    rt.shutdown_background();
}
