//! `max_requests` with jitter: workers are replaced and no call fails because of it.

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use prefork_pool::Pool;

#[test]
fn ten_thousand_calls_on_recycling_workers_are_all_answered() {
    let starts = Arc::new(AtomicUsize::new(0));
    let exits = Arc::new(AtomicUsize::new(0));
    let (s, e) = (starts.clone(), exits.clone());
    let pool = Pool::builder()
        .name("rc1")
        .workers(2)
        .max_requests(100)
        .max_requests_jitter(20)
        .on_worker_start(move |_| {
            s.fetch_add(1, Ordering::SeqCst);
        })
        .on_worker_exit(move |_| {
            e.fetch_add(1, Ordering::SeqCst);
        })
        .build(|x: u64, ctx| (x, ctx.worker()))
        .unwrap();
    let mut workers_seen = HashSet::new();
    for x in 0..10_000u64 {
        let (echo, worker) = pool.call(x).unwrap();
        assert_eq!(echo, x);
        workers_seen.insert(worker);
    }
    let stats = pool.stats();
    // 10 000 jobs at 100..=120 each on 2 workers: at least 10 000 / 120 - 2 recyclings.
    assert!(stats.recycled >= 10_000 / 120 - 2, "{stats:?}");
    assert!(stats.recycled <= 10_000 / 100, "{stats:?}");
    assert_eq!(stats.completed, 10_000);
    assert_eq!(stats.failed, 0);
    // Recycled workers keep their index: only 0 and 1 are ever seen.
    assert_eq!(workers_seen, HashSet::from([Some(0), Some(1)]));
    let report = pool.shutdown(std::time::Duration::from_secs(5));
    assert_eq!(report.threads_left_running, 0);
    // Each recycling started one replacement thread, and every thread that started has exited.
    // Counted after the shutdown: a worker that answered the last call may still have been
    // recycling when `stats` was read.
    let recycled = pool.stats().recycled;
    assert_eq!(starts.load(Ordering::SeqCst) as u64, 2 + recycled);
    assert_eq!(exits.load(Ordering::SeqCst), starts.load(Ordering::SeqCst));
}
