//! The whole server's HTTP metrics in process mode: each worker process counts in its heartbeat
//! slot, the master folds a reaped worker's counts into the table's retired totals, and any worker
//! sums the live slots with those totals ([`server_metrics`]); the per-process detail that
//! matters (each live worker's gauges and request count, [`worker_metrics`]) goes on a page with
//! [`MetricsPage::workers`], labelled `worker="<slot>"`.
//!
//! No lock and no allocation per request: a worker's server bumps relaxed atomics in its slot as
//! it would its own counters. Only the master writes the retired totals, inside a seqlock, so a
//! reader never sees a reaped worker's counts twice or not at all.

use std::sync::atomic::{fence, Ordering};
use std::sync::OnceLock;

use crate::http::{HttpCounters, ServerMetrics};
use crate::metrics::{escape, Kind, MetricsPage};
use crate::prefork::workers::heartbeat::{HeartbeatSlot, TableHead};

/// This worker process's view of the table (set once, after the fork).
static TABLE: OnceLock<(&'static TableHead, &'static [HeartbeatSlot])> = OnceLock::new();

/// Records the table for [`server_metrics`] (the worker side, after the fork).
pub(crate) fn install(head: &'static TableHead, slots: &'static [HeartbeatSlot]) {
    let _ = TABLE.set((head, slots));
}

/// Folds the counters of the worker reaped from `slot` into the retired totals and zeroes the
/// slot's (the master, after `waitpid`, before the slot is given to a new worker: nobody writes
/// the slot now).
pub(crate) fn retire(head: &TableHead, slot: &HeartbeatSlot) {
    let seq = head.seq.load(Ordering::Relaxed);
    head.seq.store(seq.wrapping_add(1), Ordering::Relaxed);
    fence(Ordering::Release);
    slot.metrics().fold_into(&head.retired);
    head.seq.store(seq.wrapping_add(2), Ordering::Release);
}

/// The sum of the retired totals and every slot, read consistently with the master's folds.
pub(crate) fn sum(head: &TableHead, slots: &[HeartbeatSlot]) -> ServerMetrics {
    let mut total = HttpCounters::default();
    for _ in 0..100 {
        let before = head.seq.load(Ordering::Acquire);
        if before % 2 == 1 {
            std::thread::yield_now();
            continue;
        }
        total = HttpCounters::default();
        total.add(&head.retired);
        for slot in slots {
            total.add(slot.metrics());
        }
        fence(Ordering::Acquire);
        if head.seq.load(Ordering::Relaxed) == before {
            break;
        }
    }
    total.snapshot()
}

/// `read()`, retried while the master folds a reaped worker's counts (at most 100 times).
fn consistent<T>(head: &TableHead, mut read: impl FnMut() -> T) -> T {
    let mut value = None;
    for _ in 0..100 {
        let before = head.seq.load(Ordering::Acquire);
        if before % 2 == 1 {
            std::thread::yield_now();
            continue;
        }
        value = Some(read());
        fence(Ordering::Acquire);
        if head.seq.load(Ordering::Relaxed) == before {
            break;
        }
    }
    value.unwrap_or_else(read)
}

/// Each slot that holds a worker now, with that worker's counts, read consistently with the
/// master's folds.
pub(crate) fn per_worker(head: &TableHead, slots: &[HeartbeatSlot]) -> Vec<WorkerMetrics> {
    consistent(head, || {
        slots
            .iter()
            .enumerate()
            .filter_map(|(worker, slot)| {
                let pid = slot.pid();
                (pid != 0).then(|| {
                    let (requests, in_flight, open_connections) = slot.metrics().per_process();
                    WorkerMetrics {
                        worker,
                        pid,
                        requests,
                        in_flight,
                        open_connections,
                    }
                })
            })
            .collect()
    })
}

/// The HTTP metrics of the whole server in process mode (under
/// [`Supervisor::serve_http`](crate::prefork::Supervisor::serve_http)): the sum over every live worker
/// process and every worker that ran before (so its counters only go up across worker restarts);
/// `None` outside a worker process. Add it to a page with
/// [`MetricsPage::server`](crate::MetricsPage::server), as `/metrics` of every worker.
///
/// The gauges (`in_flight`, `open_connections`) are those of the live workers; the self-call
/// counts are per process and not summed (0 here).
///
/// ```
/// // Outside a worker process there is no shared table.
/// assert!(prefork_pool::prefork::server_metrics().is_none());
/// ```
pub fn server_metrics() -> Option<ServerMetrics> {
    TABLE.get().map(|(head, slots)| sum(head, slots))
}

/// One live worker process's share of the server in process mode, from [`worker_metrics`]: the
/// per-process detail beside the totals of [`server_metrics`]. Add a list of them to a page with
/// [`MetricsPage::workers`].
///
/// `worker` is the process's slot in the supervisor's table (`0..workers`): a replacement takes
/// the slot of the worker it replaces, so the label stays the same while the pid changes, and
/// `requests` starts again from 0 (a counter reset, which Prometheus's `rate()` expects).
///
/// ```
/// use prefork_pool::prefork::WorkerMetrics;
///
/// let mut w = WorkerMetrics::default();
/// w.worker = 1;
/// w.pid = 4242;
/// w.requests = 7;
/// let page = prefork_pool::Metrics::builder()
///     .build()
///     .unwrap()
///     .page()
///     .workers("web", &[w])
///     .finish();
/// assert!(page.contains("prefork_http_worker_requests_total{server=\"web\",worker=\"1\"} 7\n"));
/// assert!(page.contains("prefork_http_worker_pid{server=\"web\",worker=\"1\"} 4242\n"));
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct WorkerMetrics {
    /// The worker's slot in the supervisor's table: the `worker` label.
    pub worker: usize,
    /// The worker's pid.
    pub pid: u32,
    /// Requests this process answered (from 0 when the slot's process is replaced).
    pub requests: u64,
    /// Requests this process is handling now.
    pub in_flight: u64,
    /// Connections this process holds open now.
    pub open_connections: u64,
}

/// Each live worker process's gauges and request count in process mode (under
/// [`Supervisor::serve_http`](crate::prefork::Supervisor::serve_http)), in slot order; `None` outside a
/// worker process. Render them with [`MetricsPage::workers`] beside the totals of
/// [`server_metrics`].
///
/// ```
/// // Outside a worker process there is no shared table.
/// assert!(prefork_pool::prefork::worker_metrics().is_none());
/// ```
pub fn worker_metrics() -> Option<Vec<WorkerMetrics>> {
    TABLE.get().map(|(head, slots)| per_worker(head, slots))
}

const WORKER_REQUESTS: (&str, Kind, &str) = (
    "http_worker_requests_total",
    Kind::Counter,
    "HTTP requests answered by the worker process in this slot (from 0 when it is replaced).",
);
const WORKER_IN_FLIGHT: (&str, Kind, &str) = (
    "http_worker_requests_in_flight",
    Kind::Gauge,
    "Requests the worker process in this slot is handling now.",
);
const WORKER_OPEN: (&str, Kind, &str) = (
    "http_worker_open_connections",
    Kind::Gauge,
    "Connections the worker process in this slot holds open now.",
);
const WORKER_PID: (&str, Kind, &str) = (
    "http_worker_pid",
    Kind::Gauge,
    "The pid of the worker process in this slot.",
);

impl MetricsPage {
    /// Add each worker process's detail (from [`worker_metrics`]) to the page, labelled
    /// `server="<name>",worker="<slot>"`: its request count, in-flight requests, open connections
    /// and pid, in families of their own (`{prefix}_http_worker_...`), so that a `sum()` over the
    /// server's totals ([`MetricsPage::server`]) counts nothing twice. (With the `prefork`
    /// feature.)
    ///
    /// ```no_run
    /// # fn page() -> Option<String> {
    /// use prefork_pool::{prefork, Metrics};
    ///
    /// // In a worker process's `/metrics` handler: the totals, then the per-process detail.
    /// let metrics = Metrics::builder().build().unwrap();
    /// let mut page = metrics.page();
    /// page.server("web", &prefork::server_metrics()?)
    ///     .workers("web", &prefork::worker_metrics()?);
    /// Some(page.finish())
    /// # }
    /// ```
    pub fn workers(&mut self, name: &str, workers: &[WorkerMetrics]) -> &mut Self {
        let server = escape(name);
        for w in workers {
            let labels = format!("server=\"{server}\",worker=\"{}\"", w.worker);
            self.sample(WORKER_REQUESTS, "", &labels, w.requests);
            self.sample(WORKER_IN_FLIGHT, "", &labels, w.in_flight);
            self.sample(WORKER_OPEN, "", &labels, w.open_connections);
            self.sample(WORKER_PID, "", &labels, w.pid);
        }
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::prefork::workers::heartbeat::HeartbeatTable;
    use std::time::Duration;

    #[test]
    fn a_reaped_workers_counts_move_to_the_retired_totals() {
        let table = HeartbeatTable::new(2).unwrap();
        let count = |slot: usize, n: u64| {
            for _ in 0..n {
                let c = table.slot(slot).metrics();
                c.started();
                c.answered(0, 200, 10, Duration::from_millis(1));
            }
        };
        count(0, 3);
        count(1, 2);
        table.slot(1).metrics().opened();
        let m = sum(table.head(), table.leak_all());
        assert_eq!(m.requests_total(), 5);
        assert_eq!(m.open_connections, 1);
        retire(table.head(), table.slot(1));
        let m = sum(table.head(), table.leak_all());
        assert_eq!(m.requests_total(), 5, "the totals do not go down");
        assert_eq!(m.accepted_connections, 1);
        assert_eq!(m.open_connections, 0, "a reaped worker holds no connection");
        assert_eq!(m.bytes_out, 50);
        assert_eq!(table.slot(1).metrics().snapshot().requests_total(), 0);
        count(1, 1);
        assert_eq!(sum(table.head(), table.leak_all()).requests_total(), 6);
    }

    #[test]
    fn per_worker_values_follow_the_slots() {
        let table = HeartbeatTable::new(3).unwrap();
        let (head, slots) = (table.head(), table.leak_all());
        table.slot(0).set_pid(100);
        table.slot(2).set_pid(102);
        for _ in 0..3 {
            table.slot(0).metrics().started();
            table.slot(0).metrics().answered(0, 200, 1, Duration::ZERO);
        }
        table.slot(0).metrics().opened();
        table.slot(2).metrics().opened();
        table.slot(2).metrics().opened();
        table.slot(2).metrics().started();
        let w = per_worker(head, slots);
        assert_eq!(
            w.iter().map(|w| (w.worker, w.pid)).collect::<Vec<_>>(),
            [(0, 100), (2, 102)],
            "an empty slot (1) is no worker"
        );
        assert_eq!(
            (w[0].requests, w[0].in_flight, w[0].open_connections),
            (3, 0, 1)
        );
        assert_eq!(
            (w[1].requests, w[1].in_flight, w[1].open_connections),
            (0, 1, 2)
        );

        let mut page = crate::Metrics::builder().build().unwrap().page();
        page.workers("web", &w);
        let text = page.finish();
        assert_eq!(
            text.matches("# TYPE prefork_http_worker_open_connections gauge")
                .count(),
            1
        );
        for line in [
            "prefork_http_worker_requests_total{server=\"web\",worker=\"0\"} 3\n",
            "prefork_http_worker_open_connections{server=\"web\",worker=\"2\"} 2\n",
            "prefork_http_worker_requests_in_flight{server=\"web\",worker=\"2\"} 1\n",
            "prefork_http_worker_pid{server=\"web\",worker=\"0\"} 100\n",
        ] {
            assert!(text.contains(line), "{line} not in {text}");
        }

        // Slot 0's worker is reaped and replaced: its counts move to the totals, and the new
        // process in the same slot starts from 0.
        retire(head, table.slot(0));
        table.slot(0).set_pid(0);
        assert_eq!(per_worker(head, slots).len(), 1);
        table.slot(0).set_pid(200);
        let w = per_worker(head, slots);
        assert_eq!((w[0].worker, w[0].pid, w[0].requests), (0, 200, 0));
        assert_eq!(w[0].open_connections, 0);
        assert_eq!(sum(head, slots).requests_total(), 3, "the totals keep them");
    }
}
