//! Load-test server: tiny_http 0.12 with `WORKERS` threads (default 2) calling `recv()`, the seed
//! app on `127.0.0.1:$PORT`, no access log. Stops on SIGTERM or SIGINT, exit 0.

use std::sync::Arc;

use prefork_pool_benches::{env_or, App, StopSignals};
use tiny_http::{Header, Response, Server};

fn main() {
    let stop = StopSignals::install();
    let port: u16 = env_or("PORT", 8000);
    let workers: usize = env_or("WORKERS", 2);
    let server = Arc::new(Server::http(("127.0.0.1", port)).unwrap_or_else(|e| {
        eprintln!("cannot start: {e}");
        std::process::exit(1);
    }));
    let app = Arc::new(App::new());
    let json = Header::from_bytes("Content-Type", "application/json").expect("a valid header");
    for _ in 0..workers {
        let (server, app, json) = (server.clone(), app.clone(), json.clone());
        std::thread::spawn(move || {
            while let Ok(req) = server.recv() {
                let url = req.url();
                let (path, query) = match url.split_once('?') {
                    Some((p, q)) => (p, Some(q)),
                    None => (url, None),
                };
                let r = app.handle(req.method().as_str(), path, query);
                let resp = Response::from_string(r.body)
                    .with_status_code(r.status)
                    .with_header(json.clone());
                let _ = req.respond(resp);
            }
        });
    }
    stop.wait();
    server.unblock();
}
