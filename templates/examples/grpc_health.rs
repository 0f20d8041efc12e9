//! `grpc_health`: a gRPC service and a plain HTTP app on one listener, under the pre-fork
//! supervisor: the template for a tonic service run by `Supervisor::serve_service` (feature
//! `tower`), behind a proxy that speaks HTTP/2 to its upstream (Envoy, nginx's `grpc_pass`, a
//! Kubernetes gRPC probe) or straight to clients.
//!
//! - One listener, two protocols: with `ServiceConfig::http2_prior_knowledge` each connection is
//!   HTTP/1.1 or HTTP/2 with prior knowledge (h2c), as its first bytes say (hyper-util's auto
//!   builder). gRPC needs HTTP/2; browsers, curl and health checkers keep HTTP/1.1.
//! - One app: tonic's `Routes` (here `grpc.health.v1.Health`, from `tonic-health`, which ships
//!   its generated code: no `protoc`, no build script) is an axum `Router`, merged with the
//!   app's own routes. A service of your own (`tonic-build`'s `FooServer::new(impl Foo)`) is added
//!   the same way: `Routes::new(health).add_service(FooServer::new(foo))`.
//! - Under the supervisor: each worker process runs the router on its own tokio runtime (no
//!   `#[tokio::main]`: the master must have no thread when it forks), the HTTP metrics, access
//!   log and deadlines count gRPC calls too (a call's deadline runs until its answer's headers:
//!   a server stream such as `Watch` lives on until the worker stops), and SIGTERM or SIGHUP
//!   drains: the worker stops accepting, sends HTTP/2 connections a GOAWAY (the calls under way
//!   finish, new ones go to a sibling or the new generation) and answers the HTTP/1.1 requests
//!   under way, then exits.
//!
//! Routes: `GET /` (`{"worker_pid": N}`: which worker process answered); the gRPC method
//! `/grpc.health.v1.Health/Check` (and `Watch`): `SERVING` for the service `""` (the whole
//! server); another name is `NOT_FOUND` until the app reports a status for it (`HealthReporter`,
//! below). `/readyz` and `/livez` are the server's own health routes, over HTTP (readiness 503
//! from the first moment of a stop). Any other path: 404 (a gRPC client reads it as
//! `UNIMPLEMENTED`).
//!
//! Run it: `cargo run -p prefork-pool-templates --example grpc_health` (2 processes on
//! 127.0.0.1:8000), then `curl 127.0.0.1:8000/` or, with grpcurl,
//! `grpcurl -plaintext -import-path . -proto health.proto 127.0.0.1:8000 grpc.health.v1.Health/Check`.
//! The environment overrides the template's values, in the crate's vocabulary (the README's
//! "Settings"): `PORT`, `PREFORK_BIND`, `WEB_CONCURRENCY`, `PREFORK_TIMEOUT` (each call's
//! deadline), `PREFORK_GRACEFUL_TIMEOUT`, `PREFORK_MAX_REQUESTS`; a value that is not allowed stops
//! it, naming the variable. `tests/grpc_health.rs` runs it under the supervisor and calls it with
//! tonic's client over h2c and with a plain HTTP/1.1 GET, on the same port.

use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use prefork_pool::prefork::{ServiceConfig, Supervisor};

/// The app: the gRPC health service beside the HTTP routes, as one axum `Router`. Built in each
/// worker process after the fork.
pub fn app() -> Router {
    // The reporter sets the status of each named service (`set_service_status`, async: from a
    // task or a handler); the service `""` is the whole server's, `SERVING` from the start.
    // Dropping it leaves the statuses as they are.
    let (_reporter, health) = tonic_health::server::health_reporter();
    let grpc = tonic::service::Routes::new(health)
        .prepare()
        .into_axum_router();
    Router::new()
        .route("/", get(worker_pid))
        .merge(grpc)
        // tonic's routes answer an unknown path with a gRPC `UNIMPLEMENTED`; the HTTP routes'
        // 404 suits both kinds of client.
        .fallback(|| async { (StatusCode::NOT_FOUND, "not found\n") })
}

/// `GET /`: the worker process that answered.
async fn worker_pid() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "worker_pid": std::process::id() }))
}

/// How each worker serves: HTTP/1.1 and h2c on the same listener, the server's health routes.
pub fn config() -> ServiceConfig {
    ServiceConfig::new()
        // Calls wait on the network, not on the CPU: 2 runtime threads per process are plenty.
        .threads(2)
        .http2_prior_knowledge(true)
        .health_routes("/readyz", "/livez")
}

// No `#[tokio::main]`: the master forks its workers, and a fork copies one thread, so the master
// must have none; each worker process starts its own runtime.
fn main() {
    env_logger::init();
    let env = prefork_pool::Settings::from_env();
    let status = Supervisor::builder()
        .bind("127.0.0.1:8000") // PORT / PREFORK_BIND
        .workers(2) // WEB_CONCURRENCY
        .with_settings(&env)
        .serve_service(config(), || Ok::<_, String>(app()));
    std::process::exit(status);
}
