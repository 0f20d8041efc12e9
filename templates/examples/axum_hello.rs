//! The main of an axum app under the pre-fork supervisor: the README's "Your axum app under the
//! supervisor", checked here (`tests/axum_hello.rs` compiles it and compares it with the README).
//! `PORT=8000 WEB_CONCURRENCY=2 cargo run -p prefork-pool-templates --example axum_hello`

// README:begin
use axum::{routing::get, Router};
use prefork_pool::prefork::{ServiceConfig, Supervisor};

// No `#[tokio::main]`: the master forks, and a fork copies one thread, so the master must have
// none (it refuses to start with a runtime's). Each worker process starts its own runtime.
fn main() {
    let status = Supervisor::builder()
        .bind("127.0.0.1:8000")
        .with_env() // PORT, WEB_CONCURRENCY, PREFORK_TIMEOUT, ... win over the code's values
        .serve_service(ServiceConfig::new(), || {
            // In each worker process, after the fork: open pools and clients here.
            Ok::<_, String>(Router::new().route("/", get(|| async { "hello\n" })))
        });
    std::process::exit(status);
}
// README:end
