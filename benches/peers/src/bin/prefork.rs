//! Load-test server: prefork-pool's pre-fork supervisor in process mode, `PROCESSES` worker
//! processes (default 2) × `THREADS` handler threads (default 2), the seed app on
//! `127.0.0.1:$PORT`, no access log. Each worker process has its own cache (as gunicorn workers
//! have their own dict). The supervisor owns the signals: SIGTERM stops gracefully, exit 0.

use prefork_pool::http::{HttpRequest, HttpResponse, ServerBuilder};
use prefork_pool::prefork::Supervisor;
use prefork_pool::Context;
use prefork_pool_benches::{env_or, App, Reply};

fn main() {
    let port: u16 = env_or("PORT", 8000);
    let processes: usize = env_or("PROCESSES", 2);
    let threads: usize = env_or("THREADS", 2);
    let status = serve(port, processes, threads, || {
        // Runs in each worker process after the fork.
        let app = App::new();
        move |req: HttpRequest, _ctx: &Context| {
            response(app.handle(req.method().as_str(), req.uri().path(), req.uri().query()))
        }
    });
    std::process::exit(status);
}

/// The crate's API, in one place: bind, fork the workers, serve until a stop signal.
fn serve<H>(
    port: u16,
    processes: usize,
    threads: usize,
    mut app: impl FnMut() -> H + 'static,
) -> i32
where
    H: Fn(HttpRequest, &Context) -> HttpResponse + Send + Sync + 'static,
{
    Supervisor::builder()
        .bind(format!("127.0.0.1:{port}"))
        .workers(processes)
        .serve_http(
            move |server: ServerBuilder| server.pool(|p| p.workers(threads)).access_log(false),
            move || Ok::<_, std::convert::Infallible>(app()),
        )
}

fn response(r: Reply) -> HttpResponse {
    http::Response::builder()
        .status(r.status)
        .header("content-type", "application/json")
        .body(r.body.into_bytes())
        .expect("a valid response")
}
