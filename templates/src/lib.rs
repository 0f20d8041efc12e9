//! Templates of services built on `prefork-pool`: each is an example you can run and copy, with a
//! test that drives it under load.
//!
//! - `examples/sqlite_api.rs`: an HTTP JSON API whose handlers call a `db` pool of N workers, each
//!   owning its own SQLite connection (`PoolBuilder::build_with_state`), with per-route deadlines,
//!   a `Loopback` internal call, and the db pool's stats on `/metrics`.
//!   `cargo run -p prefork-pool-templates --example sqlite_api`
//! - `examples/axum_bulkhead.rs`: an axum app whose blocking calls go through a `Pool`
//!   (`pool.submit(req).await`), its 503/504 mapped to HTTP answers, served from 2 processes by
//!   `Supervisor::serve_service`: `GET /` answers `{"worker_pid": N}`, `/metrics` the whole
//!   server's, `/readyz` and `/livez` the server's own, `/ws` a WebSocket echo (Close 1001 when
//!   its worker process stops).
//!   `cargo run -p prefork-pool-templates --example axum_bulkhead`
//! - `examples/notes.rs`: a JSON API of three routes on the sync front's `Router` (an in-memory
//!   store, a self-call through `Loopback`, a route with its own deadline), one `app()` served in
//!   one process or under the supervisor; `examples/notes_axum.rs` is the same service in axum,
//!   and `tests/notes.rs` drives both with the same requests and compares their lengths.
//!   `cargo run -p prefork-pool-templates --example notes`
//! - `examples/axum_hello.rs`: the README's axum main under the supervisor (what replaces
//!   `#[tokio::main]`); `tests/axum_supervised.rs` runs the axum_bulkhead router under the
//!   supervisor (its routes, axum's `ConnectInfo`, SIGHUP under load with 4 WebSockets open,
//!   WebSockets through a stop).
//!   `cargo run -p prefork-pool-templates --example axum_hello`
//! - `examples/grpc_health.rs`: a gRPC service (tonic's `grpc.health.v1.Health` from
//!   `tonic-health`, no protoc) and axum routes as one `Router`, served under the supervisor over
//!   HTTP/1.1 and h2c on one listener (`ServiceConfig::http2_prior_knowledge`);
//!   `tests/grpc_health.rs` calls `Check` with tonic's client over h2c and `GET /` over HTTP/1.1
//!   on the same port.
//!   `cargo run -p prefork-pool-templates --example grpc_health`
#![deny(missing_docs)]
