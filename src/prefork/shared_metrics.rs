//! The whole server's HTTP metrics in process mode: each worker process counts in its heartbeat
//! slot, the master folds a reaped worker's counts into the table's retired totals, and any worker
//! sums the live slots with those totals ([`server_metrics`]).
//!
//! No lock and no allocation per request: a worker's server bumps relaxed atomics in its slot as
//! it would its own counters. Only the master writes the retired totals, inside a seqlock, so a
//! reader never sees a reaped worker's counts twice or not at all.

use std::sync::atomic::{fence, Ordering};
use std::sync::OnceLock;

use super::heartbeat::{HeartbeatSlot, TableHead};
use crate::http::{HttpCounters, ServerMetrics};

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

/// The HTTP metrics of the whole server in process mode (under
/// [`Supervisor::serve_http`](super::Supervisor::serve_http)): the sum over every live worker
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::prefork::heartbeat::HeartbeatTable;
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
}
