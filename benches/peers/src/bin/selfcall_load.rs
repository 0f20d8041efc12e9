//! Load-test server for the self-call detection (issue 13, part 4): prefork-pool's HTTP server in
//! thread mode with `WORKERS` handler threads (default 2) whose handler sleeps `HANDLER_MS`
//! milliseconds (default 2) and answers `ok`, on `127.0.0.1:$PORT`, no access log. `MAX_SPARE`
//! sets `max_spare` (0: the detection off; unset: the default, on). Stops on SIGTERM or SIGINT,
//! exit 0. Driven by `selfcall.sh`.

use std::time::Duration;

use prefork_pool::http::Server;
use prefork_pool_benches::{env_or, StopSignals};

fn main() {
    let stop = StopSignals::install();
    let port: u16 = env_or("PORT", 8000);
    let workers: usize = env_or("WORKERS", 2);
    let handler_ms: u64 = env_or("HANDLER_MS", 2);
    let mut builder = Server::builder()
        .bind(("127.0.0.1", port))
        .pool(|p| p.workers(workers))
        .access_log(false);
    if let Ok(n) = std::env::var("MAX_SPARE") {
        builder = builder.max_spare(n.parse().expect("MAX_SPARE: a number"));
    }
    let server = builder
        .serve(move |_req, _ctx| {
            std::thread::sleep(Duration::from_millis(handler_ms));
            http::Response::new(b"ok".to_vec())
        })
        .unwrap_or_else(|e| {
            eprintln!("cannot start: {e}");
            std::process::exit(1);
        });
    stop.wait();
    let sc = server.self_calls();
    eprintln!(
        "self-calls: served {}, refused {}, lookups {}",
        sc.served, sc.refused, sc.lookups
    );
    server.shutdown(Duration::from_secs(5));
}
