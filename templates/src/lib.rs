//! Templates of services built on `prefork-pool`: each is an example you can run and copy, with a
//! test that drives it under load.
//!
//! - `examples/sqlite_api.rs`: an HTTP JSON API whose handlers call a `db` pool of N workers, each
//!   owning its own SQLite connection (`PoolBuilder::build_with_state`), with per-route deadlines,
//!   a `Loopback` internal call, and the db pool's stats on `/metrics`.
//!   `cargo run -p prefork-pool-templates --example sqlite_api`
#![deny(missing_docs)]
