//! Many callers at once: every answer is correct and matched to its request.

use std::time::Duration;

use prefork_pool::Pool;

#[test]
fn eight_callers_times_ten_thousand_calls_on_four_workers() {
    let pool = Pool::builder()
        .workers(4)
        .queue_capacity(64)
        .build(|(caller, i): (u64, u64), _ctx| caller * 1_000_000 + i)
        .unwrap();
    std::thread::scope(|s| {
        for caller in 0..8u64 {
            let pool = pool.clone();
            s.spawn(move || {
                for i in 0..10_000u64 {
                    assert_eq!(pool.call((caller, i)).unwrap(), caller * 1_000_000 + i);
                }
            });
        }
    });
    let stats = pool.stats();
    assert_eq!(stats.completed, 80_000);
    assert_eq!(stats.failed, 0);
    pool.shutdown(Duration::from_secs(5));
}

#[test]
fn prometheus_text_carries_every_counter() {
    let pool = Pool::builder()
        .name("prom")
        .workers(1)
        .build(|x: u8, _| x)
        .unwrap();
    pool.call(1).unwrap();
    let text = pool.stats().to_prometheus("svc");
    assert!(
        text.contains("# TYPE svc_pool_completed_total counter"),
        "{text}"
    );
    assert!(
        text.contains("svc_pool_completed_total{pool=\"prom\"} 1"),
        "{text}"
    );
    assert!(text.contains("svc_pool_workers{pool=\"prom\"} 1"), "{text}");
    for metric in [
        "timed_out_total",
        "panicked_total",
        "recycled_total",
        "retired_total",
        "reentrant_inline_total",
        "queued_jobs",
    ] {
        assert!(
            text.contains(&format!("svc_pool_{metric}{{pool=\"prom\"}}")),
            "missing {metric}"
        );
    }
}

#[test]
fn a_pool_is_ready_when_build_returns_and_counts_each_answer_before_it_is_seen() {
    for _ in 0..50 {
        let pool = Pool::builder()
            .workers(3)
            .on_worker_start(|i| {
                if i == 1 {
                    panic!("a start hook that fails");
                }
            })
            .build(|x: u8, _| x)
            .unwrap();
        let stats = pool.stats();
        assert_eq!(
            stats.idle, 3,
            "every worker waits for a job once build returns"
        );
        assert_eq!(stats.busy, 0);
        pool.call(1).unwrap();
        assert_eq!(
            pool.stats().completed,
            1,
            "the answer is counted before the caller sees it"
        );
        pool.shutdown_now();
    }
}
