//! The worker side: what a forked worker runs, the HTTP worker and the tower service worker, the heartbeat table, the siblings read from it, the shared metrics and the balanced accept.

pub(super) mod balance;
pub(super) mod heartbeat;
pub(super) mod http_worker;
#[cfg(feature = "tower")]
pub(super) mod service;
pub(super) mod shared_metrics;
pub(super) mod siblings;
pub(super) mod worker;
