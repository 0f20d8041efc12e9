//! # prefork-pool
//!
//! A supervised worker pool for servers: a [`Pool`] with a fixed worker count, a bounded queue,
//! per-request deadlines enforced by a watchdog, panic isolation, worker recycling, and a
//! re-entrancy guard, so that a handler calling back into its own service never waits for a worker
//! that cannot come. Around it: an HTTP/1.1 front end (`http`) and a pre-fork process supervisor
//! (`prefork`), the parts people run gunicorn for.
//!
//! ## Why
//!
//! A Flask handler on one gunicorn sync worker that POSTs to `http://localhost:5000/...` hangs:
//! the only worker is busy waiting for itself, until `WORKER TIMEOUT` kills it and the log blames
//! memory. More workers only move the cliff: N such requests at once hang N workers. This crate's
//! pool runs such a nested call on the calling thread at once, answers every caller by its
//! deadline, and says what happened.
//!
//! ## A pool
//!
//! A pool runs one handler, `Fn(Req, &Context) -> Resp`, on its workers. [`Pool::call`] blocks
//! for the answer; every call gets exactly one answer, the handler's or an [`Error`].
//!
//! ```
//! use prefork_pool::Pool;
//!
//! let pool = Pool::builder()
//!     .workers(4)                       // default: WEB_CONCURRENCY, else the core count
//!     .build(|n: u64, _ctx| n * n)
//!     .unwrap();
//! assert_eq!(pool.call(12).unwrap(), 144);
//! ```
//!
//! Bad settings are refused by `build()` with the field and the allowed range:
//!
//! ```
//! use prefork_pool::Pool;
//! let err = Pool::builder().workers(0).build(|n: u64, _| n).unwrap_err();
//! assert_eq!(err.to_string(), "invalid `workers` = 0: allowed 1..=4096");
//! ```
//!
//! ## Deadlines and the watchdog
//!
//! Every job has a deadline: the pool's default (30 s, gunicorn's `timeout`), or its own with
//! [`Pool::call_with`]. When it passes, the caller gets [`Error::DeadlineExceeded`] at once; a job
//! still queued is never started; a running job's [`Context`] is cancelled, and its worker is
//! retired and replaced, so the pool's capacity does not drop while the stuck handler runs on.
//! (A thread cannot be killed: the retired one exits when its handler returns. Process mode is
//! where a stuck handler is truly killed.)
//!
//! ```
//! use prefork_pool::{Error, Pool};
//! use std::time::{Duration, Instant};
//!
//! let pool = Pool::builder().workers(1).build(|ms: u64, ctx| {
//!     let end = Instant::now() + Duration::from_millis(ms);
//!     while Instant::now() < end && !ctx.is_cancelled() {
//!         std::thread::sleep(Duration::from_millis(5));
//!     }
//!     ms
//! }).unwrap();
//! let err = pool.call_with(5_000, Duration::from_millis(50)).unwrap_err();
//! assert!(matches!(err, Error::DeadlineExceeded { .. }));
//! assert_eq!(pool.call(0).unwrap(), 0);      // capacity is back at once
//! assert_eq!(pool.stats().timed_out, 1);
//! ```
//!
//! ## Panics
//!
//! A panicking handler answers its caller with [`Error::Panicked`] and the panic message; the
//! worker lives on.
//!
//! ## Calling your own pool
//!
//! A handler reaches its pool through [`Context::pool`]. What a handler that calls its own pool
//! gets, and why, is explained once, at [`Reentry`]: by default the call runs inline on the
//! calling thread.
//!
//! ```
//! use prefork_pool::Pool;
//!
//! // One worker, and a handler that calls its own pool: with gunicorn this hangs.
//! let pool = Pool::builder().workers(1).build(|n: u64, ctx| {
//!     if n == 0 { return 1; }
//!     let me = ctx.pool::<u64, u64>().unwrap();
//!     n * me.call(n - 1).unwrap()
//! }).unwrap();
//! assert_eq!(pool.call(10).unwrap(), 3_628_800);
//! ```
//!
//! ## Without blocking
//!
//! [`Pool::submit`] gives a [`Ticket`]; [`Pool::try_submit`] gives the request back when the
//! queue is full ([`TrySubmitError::Full`]); [`Pool::submit_then`] calls a closure with the
//! answer, which is what the HTTP reactor uses. A full queue is refused at once
//! ([`Error::Overloaded`], HTTP 503), never a silent wait.
//!
//! ## Recycling, hooks, shutdown, stats
//!
//! `max_requests` (+ `max_requests_jitter`) replaces a worker after that many jobs, starting the
//! replacement first. `on_worker_start` / `on_worker_exit` run on each worker thread.
//! [`Pool::shutdown`] finishes queued and running jobs up to a timeout, then answers the rest
//! with [`Error::ShuttingDown`]; [`Pool::shutdown_now`] answers everything at once. [`Pool::stats`]
//! is a snapshot that renders as Prometheus text.
//!
//! ## Over HTTP
//!
//! [`http::Server`] puts the pool behind an HTTP/1.1 front end: idle workers wait on the
//! connections, the one that reads a complete request runs it (no hand-off between threads), and
//! a partial request goes back to waiting, so a slow client costs a buffer, not a worker; a
//! reactor thread accepts, keeps the timers, and reads for the workers when all of them are busy. Pool errors become answers (503 with `Retry-After`, 504, 500,
//! 508). A handler calls its own service in-process through [`http::Loopback`]; a call it makes
//! over real TCP or a Unix socket to its own address while every worker is busy is detected
//! (in process mode, also when it lands on a sibling worker process) and served on a spare
//! thread, with a warning that names the fix. Start with `examples/hello_loopback.rs`: a Flask
//! app whose handler calls its own server, as a Rust template.
//!
//! ## Process mode
//!
//! `prefork::Supervisor` is the master process (unix): it binds or inherits the listeners, forks
//! worker processes that each run an `http::Server` (`Supervisor::serve_http`), kills a worker
//! whose request outlives its deadline (where a thread cannot be killed, a process can), respawns
//! with a restart-intensity brake, and speaks gunicorn's signals and systemd's socket activation
//! and `sd_notify`. See `examples/prefork_server.rs`.
//!
//! ## Settings
//!
//! Both modes read the same environment variables, in gunicorn's words where it has them
//! (`PORT` listens on `0.0.0.0:$PORT`, `WEB_CONCURRENCY` counts processes, `PREFORK_*` for the
//! rest): [`Settings`], taken by `http::ServerBuilder::with_env` and
//! `prefork::SupervisorBuilder::with_env`, where later calls win; a value that is not allowed is
//! refused by the variable's name, and `print_config` prints the effective settings and where
//! each came from.
//!
//! ## Features
//!
//! - `http` (default): [`http`], the HTTP/1.1 front end.
//! - `prefork` (default, unix): `prefork`, the pre-fork process supervisor.
//! - `serde`, `json` (default): the extractors `Path<T>`, `Query<T>` and `Json<T>`.
//! - `tower` (not a default): `prefork::Supervisor::serve_service`, your axum app (any
//!   `tower::Service`) under the supervisor: a tokio runtime per worker process with hyper's
//!   HTTP/1.1, the supervisor's deadlines, reloads, access log, limits, health routes and metrics.
//! - `tls` (not a default): HTTPS in the crate, rustls with the `ring` provider:
//!   `http::ServerBuilder::certfile` / `keyfile`, `prefork::SupervisorBuilder::certfile` /
//!   `keyfile` (both fronts, `serve_service` included, through tokio-rustls; a SIGHUP reads
//!   renewed files), `PREFORK_CERTFILE` / `PREFORK_KEYFILE`. Or terminate TLS at a proxy:
//!   `deploy/README.md` says when to choose which.
//!
//! The core pool depends only on crossbeam-channel, parking_lot, thiserror and log:
//! `default-features = false` builds just that.
#![deny(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]
#![deny(clippy::undocumented_unsafe_blocks)]

mod error;
mod metrics;
#[cfg(all(feature = "http", unix))]
mod net;
mod pool;
pub mod settings;
mod sync;
mod util;

pub use error::{BuildError, Error, Stage, TrySubmitError};
pub use metrics::{Metrics, MetricsBuilder, MetricsPage};
pub use pool::{
    Context, Pool, PoolBuilder, Reentry, ShutdownReport, Stats, Ticket, MAX_DEADLINE, MAX_QUEUE,
    MAX_WORKERS,
};
pub use settings::Settings;

#[cfg(feature = "http")]
pub mod http;

#[cfg(feature = "http")]
pub mod log_sink;

#[cfg(all(feature = "prefork", unix))]
pub mod prefork;

// The README's Rust examples are compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
