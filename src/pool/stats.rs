//! Counters kept by a running pool, and the [`Stats`] snapshot they give.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// The live counters of a pool (all relaxed atomics).
#[derive(Default)]
pub(crate) struct Counters {
    pub(crate) completed: AtomicU64,
    pub(crate) inline_completed: AtomicU64,
    pub(crate) failed: AtomicU64,
    pub(crate) timed_out: AtomicU64,
    pub(crate) panicked: AtomicU64,
    pub(crate) overloaded: AtomicU64,
    pub(crate) recycled: AtomicU64,
    pub(crate) retired: AtomicU64,
    pub(crate) retired_running: AtomicU64,
    pub(crate) reentrant_inline: AtomicU64,
    pub(crate) reentrant_rejected: AtomicU64,
    pub(crate) abandoned: AtomicU64,
    /// Workers whose state's init failed and is being retried (a gauge).
    pub(crate) without_state: AtomicU64,
}

impl Counters {
    pub(crate) fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Relaxed);
    }
}

/// A snapshot of a pool's state and counters, from [`Pool::stats`](crate::Pool::stats).
///
/// ```
/// use prefork_pool::Pool;
/// let pool = Pool::builder().name("demo").workers(2).build(|x: u8, _| x).unwrap();
/// pool.call(1).unwrap();
/// let stats = pool.stats();
/// assert_eq!(stats.completed, 1);
/// assert!(stats.to_prometheus("app").contains("app_pool_completed_total{pool=\"demo\"} 1"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// The pool's name.
    pub name: String,
    /// The configured worker count (live capacity).
    pub workers: usize,
    /// Workers running a handler now (a worker whose job the watchdog answered but could not retire
    /// is not counted).
    pub busy: usize,
    /// Workers waiting for a job now.
    pub idle: usize,
    /// Jobs waiting in the queue now.
    pub queued: usize,
    /// Jobs whose handler answered in time (requests: nested calls run inline are counted in
    /// `inline_completed` instead).
    pub completed: u64,
    /// Nested calls run inline (see `reentrant_inline`) whose handler answered in time.
    pub inline_completed: u64,
    /// Jobs answered with an error (any of the reasons below, or shutdown).
    pub failed: u64,
    /// Jobs that missed their deadline (queued or running).
    pub timed_out: u64,
    /// Jobs whose handler panicked.
    pub panicked: u64,
    /// Jobs refused because the queue was full.
    pub overloaded: u64,
    /// Workers replaced after `max_requests`.
    pub recycled: u64,
    /// Workers the watchdog retired because their handler ran past its deadline.
    pub retired: u64,
    /// Retired threads whose handler has not returned yet.
    pub retired_running: u64,
    /// Nested calls run inline by the re-entrancy guard: same-pool calls run on the calling
    /// worker, and calls around a cycle of pools run by this pool's worker that waits for them.
    pub reentrant_inline: u64,
    /// Nested calls refused by `Reentry::Reject` (or because a per-worker state is in use).
    pub reentrant_rejected: u64,
    /// Jobs given back unrun because their [`Ticket`](crate::Ticket) (or the future it is) was
    /// dropped before they started: never run, never answered, counted in no other counter.
    pub abandoned: u64,
    /// Workers of a [`build_with_state`](crate::PoolBuilder::build_with_state) pool whose init
    /// failed and is being retried: they take no job until it succeeds.
    pub workers_without_state: usize,
}

impl Stats {
    /// The snapshot in the Prometheus text exposition format, each metric named
    /// `{prefix}_pool_{metric}` with a `pool` label.
    ///
    /// Kept for compatibility: it shows one pool and does not check `prefix`. A page with several
    /// pools and servers, each family once and the prefix checked, comes from
    /// [`Metrics`](crate::Metrics).
    pub fn to_prometheus(&self, prefix: &str) -> String {
        let mut page = crate::metrics::MetricsPage::unchecked(prefix);
        page.pool(self);
        page.finish()
    }

    /// The gauges: (name after the prefix, value, help).
    pub(crate) fn gauges(&self) -> [(&'static str, u64, &'static str); 6] {
        [
            (
                "pool_workers",
                self.workers as u64,
                "Configured worker count.",
            ),
            (
                "pool_busy_workers",
                self.busy as u64,
                "Workers running a handler.",
            ),
            (
                "pool_idle_workers",
                self.idle as u64,
                "Workers waiting for a job.",
            ),
            (
                "pool_queued_jobs",
                self.queued as u64,
                "Jobs waiting for a worker.",
            ),
            (
                "pool_retired_running",
                self.retired_running,
                "Retired threads whose handler has not returned.",
            ),
            (
                "pool_workers_without_state",
                self.workers_without_state as u64,
                "Workers whose per-worker state's init failed and is retried.",
            ),
        ]
    }

    /// The counters: (name after the prefix, value, help).
    pub(crate) fn counters(&self) -> [(&'static str, u64, &'static str); 11] {
        [
            (
                "pool_completed_total",
                self.completed,
                "Jobs answered by their handler in time (nested inline calls not included).",
            ),
            (
                "pool_inline_completed_total",
                self.inline_completed,
                "Nested calls run inline whose handler answered in time.",
            ),
            (
                "pool_failed_total",
                self.failed,
                "Jobs answered with an error.",
            ),
            (
                "pool_timed_out_total",
                self.timed_out,
                "Jobs that missed their deadline.",
            ),
            (
                "pool_panicked_total",
                self.panicked,
                "Jobs whose handler panicked.",
            ),
            (
                "pool_overloaded_total",
                self.overloaded,
                "Jobs refused on a full queue.",
            ),
            (
                "pool_recycled_total",
                self.recycled,
                "Workers replaced after max_requests.",
            ),
            (
                "pool_retired_total",
                self.retired,
                "Workers retired by the watchdog.",
            ),
            (
                "pool_reentrant_inline_total",
                self.reentrant_inline,
                "Nested calls run inline.",
            ),
            (
                "pool_reentrant_rejected_total",
                self.reentrant_rejected,
                "Nested calls refused.",
            ),
            (
                "pool_abandoned_total",
                self.abandoned,
                "Jobs given back unrun: their ticket was dropped before they started.",
            ),
        ]
    }
}
