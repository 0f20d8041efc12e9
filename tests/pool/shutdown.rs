//! Shutdown answers every job exactly once and leaves no thread behind.

use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::pool_helpers;
use prefork_pool::{Error, Pool};

#[test]
fn graceful_shutdown_finishes_every_queued_job_and_joins_the_threads() {
    let pool = Pool::builder()
        .name("sdg")
        .workers(2)
        .queue_capacity(100)
        .build(|ms: u64, _ctx| {
            std::thread::sleep(Duration::from_millis(ms));
            ms
        })
        .unwrap();
    // A thread names itself as it starts, so wait for the names to show.
    assert!(
        pool_helpers::eventually(Duration::from_secs(2), || pool_helpers::threads_named(
            "sdg-"
        ) == 3),
        "2 workers and the watchdog"
    );
    let tickets: Vec<_> = (0..20).map(|_| pool.submit(10)).collect();
    let report = pool.shutdown(Duration::from_secs(10));
    assert_eq!(report.answered_shutting_down, 0, "{report:?}");
    assert_eq!(report.threads_left_running, 0, "{report:?}");
    for t in tickets {
        assert_eq!(t.wait().unwrap(), 10);
    }
    assert!(matches!(pool.call(1), Err(Error::ShuttingDown { .. })));
    assert!(pool_helpers::eventually(
        Duration::from_secs(2),
        || pool_helpers::threads_named("sdg-") == 0
    ));
}

#[test]
fn graceful_shutdown_answers_what_is_left_at_its_timeout() {
    let pool = Pool::builder()
        .name("sdt")
        .workers(1)
        .build(|ms: u64, ctx| {
            let end = Instant::now() + Duration::from_millis(ms);
            while Instant::now() < end && !ctx.is_cancelled() {
                std::thread::sleep(Duration::from_millis(5));
            }
            ms
        })
        .unwrap();
    let running = pool.submit(5_000);
    let queued: Vec<_> = (0..5).map(|_| pool.submit(1)).collect();
    std::thread::sleep(Duration::from_millis(50));
    let start = Instant::now();
    let report = pool.shutdown(Duration::from_millis(200));
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(report.answered_shutting_down, 6, "{report:?}");
    assert!(matches!(running.wait(), Err(Error::ShuttingDown { .. })));
    for t in queued {
        assert!(matches!(t.wait(), Err(Error::ShuttingDown { .. })));
    }
    // The running handler saw its cancellation and returned: no thread is left.
    assert!(pool_helpers::eventually(
        Duration::from_secs(3),
        || pool_helpers::threads_named("sdt-") == 0
    ));
}

#[test]
fn shutdown_now_answers_every_job_at_once() {
    let (started_tx, started_rx) = mpsc::channel();
    let started_tx = parking_lot::Mutex::new(started_tx);
    let pool = Pool::builder()
        .name("sdn")
        .workers(2)
        .queue_capacity(64)
        .build(move |_: u32, ctx| {
            started_tx.lock().send(()).ok();
            while !ctx.is_cancelled() {
                std::thread::sleep(Duration::from_millis(2));
            }
        })
        .unwrap();
    let tickets: Vec<_> = (0..30).map(|i| pool.submit(i)).collect();
    started_rx.recv_timeout(Duration::from_secs(5)).unwrap();
    started_rx.recv_timeout(Duration::from_secs(5)).unwrap();
    let start = Instant::now();
    let report = pool.shutdown_now();
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(report.answered_shutting_down, 30, "{report:?}");
    for t in tickets {
        assert!(matches!(
            t.try_take(),
            Some(Err(Error::ShuttingDown { .. }))
        ));
    }
    assert!(pool_helpers::eventually(
        Duration::from_secs(3),
        || pool_helpers::threads_named("sdn-") == 0
    ));
}

#[test]
fn dropping_the_last_handle_shuts_the_pool_down() {
    let pool = Pool::builder()
        .name("sdd")
        .workers(2)
        .build(|x: u8, _ctx| x)
        .unwrap();
    assert!(pool_helpers::eventually(
        Duration::from_secs(2),
        || pool_helpers::threads_named("sdd-") == 3
    ));
    let ticket = pool.submit(9);
    let clone = pool.clone();
    drop(pool);
    assert_eq!(
        pool_helpers::threads_named("sdd-"),
        3,
        "a clone keeps the pool alive"
    );
    drop(clone);
    assert_eq!(ticket.wait().unwrap(), 9);
    assert!(pool_helpers::eventually(
        Duration::from_secs(2),
        || pool_helpers::threads_named("sdd-") == 0
    ));
}

#[test]
fn a_handler_that_shuts_its_own_pool_down_does_not_wait_for_itself() {
    let (go, gate) = mpsc::channel::<()>();
    let gate = parking_lot::Mutex::new(gate);
    let pool = Pool::builder()
        .name("sds")
        .workers(1)
        .deadline(Duration::from_secs(30))
        .build(move |stop: bool, ctx| {
            if stop {
                // Shut down only once the other job is in the queue behind this one.
                gate.lock().recv().unwrap();
                let me = ctx.pool::<bool, bool>().unwrap();
                let start = Instant::now();
                me.shutdown(Duration::from_secs(30));
                return start.elapsed() < Duration::from_secs(1);
            }
            true
        })
        .unwrap();
    let stopper = pool.submit(true);
    let queued = pool.submit(false);
    go.send(()).unwrap();
    assert!(
        stopper.wait().unwrap(),
        "shutdown from a handler returned at once"
    );
    // The shutdown is graceful: the job queued behind the stopper is still served.
    assert!(queued.wait().unwrap());
    assert!(pool_helpers::eventually(
        Duration::from_secs(3),
        || matches!(pool.call(false), Err(Error::ShuttingDown { .. }))
    ));
    assert!(pool_helpers::eventually(
        Duration::from_secs(3),
        || pool_helpers::threads_named("sds-") == 0
    ));
}
