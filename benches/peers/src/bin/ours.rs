//! Load-test server: prefork-pool's HTTP server in thread mode (`WORKERS` handler threads, default
//! 2), the seed app on `127.0.0.1:$PORT`, no access log, the pool's deadline `DEADLINE_SECS`
//! (default 30). Stops on SIGTERM or SIGINT, exit 0.
//!
//! `ACCESS_LOG` turns the access log on (gunicorn's default format), to measure what it costs:
//! `facade` through the `log` facade to a logger that writes each line to stderr (as a program
//! with env_logger does), or a path (`-`: stdout) for the crate's own log sink
//! (`access_log_file`).

use std::sync::Arc;
use std::time::Duration;

use prefork_pool::http::{HttpRequest, HttpResponse, Server, ServerHandle};
use prefork_pool::Context;
use prefork_pool_benches::{env_or, App, Reply, StopSignals};

fn main() {
    let stop = StopSignals::install();
    let port: u16 = env_or("PORT", 8000);
    let workers: usize = env_or("WORKERS", 2);
    let deadline = Duration::from_secs(env_or("DEADLINE_SECS", 30));
    let app = Arc::new(App::new());
    let server = start(port, workers, deadline, move |req, _ctx| {
        let r = app.handle(req.method().as_str(), req.uri().path(), req.uri().query());
        response(r)
    });
    stop.wait();
    server.shutdown(Duration::from_secs(5));
}

/// The crate's API, in one place: build and start the server.
fn start(
    port: u16,
    workers: usize,
    deadline: Duration,
    handler: impl Fn(HttpRequest, &Context) -> HttpResponse + Send + Sync + 'static,
) -> ServerHandle {
    let builder = Server::builder()
        .bind(("127.0.0.1", port))
        .pool(|p| p.workers(workers).deadline(deadline));
    let builder = match std::env::var("ACCESS_LOG").ok().as_deref() {
        None | Some("") => builder.access_log(false),
        Some("facade") => {
            log::set_logger(&StderrLines).expect("the only logger");
            log::set_max_level(log::LevelFilter::Info);
            builder
        }
        Some(path) => builder.access_log_file(path),
    };
    builder.serve(handler).unwrap_or_else(|e| {
        eprintln!("cannot start: {e}");
        std::process::exit(1);
    })
}

fn response(r: Reply) -> HttpResponse {
    http::Response::builder()
        .status(r.status)
        .header("content-type", "application/json")
        .body(r.body.into_bytes())
        .expect("a valid response")
}

/// Each record as a line on stderr, as env_logger writes it (without its colours and time).
struct StderrLines;

impl log::Log for StderrLines {
    fn enabled(&self, _: &log::Metadata) -> bool {
        true
    }
    fn log(&self, record: &log::Record) {
        use std::io::Write;
        let _ = writeln!(std::io::stderr().lock(), "{}", record.args());
    }
    fn flush(&self) {}
}
