//! Deadlines: the caller is answered at the deadline, the stuck worker is retired and replaced, and a
//! job that expires in the queue never runs.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use crate::pool_helpers;
use prefork_pool::{Error, Pool, Stage};

#[test]
fn stuck_handler_answers_deadline_exceeded_and_capacity_comes_back() {
    let pool = Pool::builder()
        .name("dl1")
        .workers(1)
        .deadline(Duration::from_millis(200))
        .build(|ms: u64, _ctx| {
            std::thread::sleep(Duration::from_millis(ms));
            ms
        })
        .unwrap();

    let start = Instant::now();
    let err = pool.call(10_000).unwrap_err();
    let waited = start.elapsed();
    assert!(
        matches!(
            err,
            Error::DeadlineExceeded {
                stage: Stage::Running,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(waited < Duration::from_secs(2), "answered after {waited:?}");
    assert!(err.to_string().contains("deadline"), "{err}");

    // The only worker is stuck for 10 s, yet the next call is served at once by its replacement.
    let start = Instant::now();
    assert_eq!(pool.call(0).unwrap(), 0);
    assert!(
        start.elapsed() < Duration::from_secs(1),
        "{:?}",
        start.elapsed()
    );

    let stats = pool.stats();
    assert_eq!(stats.timed_out, 1, "{stats:?}");
    assert_eq!(stats.retired, 1, "{stats:?}");
    assert_eq!(stats.retired_running, 1, "{stats:?}");
    assert_eq!(stats.workers, 1);
    pool.shutdown_now();
}

#[test]
fn context_of_an_expired_job_is_cancelled() {
    let (tx, rx) = mpsc::channel();
    let tx = parking_lot::Mutex::new(tx);
    let pool = Pool::builder()
        .name("dl2")
        .workers(1)
        .deadline(Duration::from_millis(100))
        .build(move |_: (), ctx| {
            // A well-behaved long handler: it polls its cancellation and reports when it saw it.
            let end = Instant::now() + Duration::from_secs(10);
            while !ctx.is_cancelled() && Instant::now() < end {
                std::thread::sleep(Duration::from_millis(5));
            }
            tx.lock().send(ctx.is_cancelled()).unwrap();
        })
        .unwrap();
    assert!(matches!(pool.call(()), Err(Error::DeadlineExceeded { .. })));
    let saw_cancel = rx
        .recv_timeout(Duration::from_secs(5))
        .expect("handler returned");
    assert!(saw_cancel, "the handler must see its Context cancelled");
    // Its retired thread exits once the handler returns.
    assert!(pool_helpers::eventually(Duration::from_secs(5), || pool
        .stats()
        .retired_running
        == 0));
}

#[test]
fn a_job_that_expires_while_queued_never_runs() {
    let runs = Arc::new(AtomicUsize::new(0));
    let runs2 = runs.clone();
    let pool = Pool::builder()
        .name("dl3")
        .workers(1)
        .deadline(Duration::from_secs(10))
        .build(move |ms: u64, _ctx| {
            runs2.fetch_add(1, Ordering::SeqCst);
            std::thread::sleep(Duration::from_millis(ms));
        })
        .unwrap();
    let blocker = pool.submit(600);
    assert!(pool_helpers::eventually(Duration::from_secs(5), || runs
        .load(Ordering::SeqCst)
        == 1));

    // Queued behind the blocker with a 100 ms deadline: answered at its deadline, never run.
    let start = Instant::now();
    let err = pool.call_with(0, Duration::from_millis(100)).unwrap_err();
    assert!(
        matches!(
            err,
            Error::DeadlineExceeded {
                stage: Stage::Queued,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(
        start.elapsed() < Duration::from_millis(550),
        "{:?}",
        start.elapsed()
    );
    assert!(err.to_string().contains("never ran"), "{err}");

    // The same through a completion callback: the watchdog answers it.
    let (tx, rx) = mpsc::channel();
    pool.submit_then(0, Some(Duration::from_millis(100)), move |r| {
        tx.send(r).unwrap()
    });
    let r = rx.recv_timeout(Duration::from_secs(5)).unwrap();
    assert!(
        matches!(
            r,
            Err(Error::DeadlineExceeded {
                stage: Stage::Queued,
                ..
            })
        ),
        "{r:?}"
    );

    blocker.wait().unwrap();
    // Give the worker a chance to (wrongly) run the expired jobs, then count.
    pool.call(0).unwrap();
    assert_eq!(
        runs.load(Ordering::SeqCst),
        2,
        "only the blocker and the last call ran"
    );
    assert_eq!(pool.stats().timed_out, 2);
}

#[test]
fn the_earliest_deadline_wins_even_when_a_later_one_is_watched() {
    // One job with a long deadline starts first; a second with a short one must still be answered
    // at its own deadline (the watchdog is woken for the earlier deadline).
    let pool = Pool::builder()
        .name("dl4")
        .workers(2)
        .build(|ms: u64, _ctx| std::thread::sleep(Duration::from_millis(ms)))
        .unwrap();
    let long = pool.submit(1_500);
    std::thread::sleep(Duration::from_millis(50));
    let start = Instant::now();
    let err = pool
        .call_with(10_000, Duration::from_millis(100))
        .unwrap_err();
    assert!(matches!(err, Error::DeadlineExceeded { .. }));
    assert!(
        start.elapsed() < Duration::from_millis(1_000),
        "{:?}",
        start.elapsed()
    );
    long.wait().unwrap();
    pool.shutdown_now();
}

#[test]
fn call_here_runs_on_the_calling_thread_while_every_worker_is_busy() {
    let (release, gate) = mpsc::channel::<()>();
    let gate = parking_lot::Mutex::new(gate);
    let pool = Pool::builder()
        .name("dl5")
        .workers(1)
        .build(move |block: bool, _ctx| {
            if block {
                gate.lock().recv().unwrap();
            }
            std::thread::current().name().map(str::to_owned)
        })
        .unwrap();
    let busy = pool.submit(true);
    // The only worker is blocked; call_here does not wait for it.
    let start = Instant::now();
    let name = pool.call_here(false, None).unwrap();
    assert!(start.elapsed() < Duration::from_secs(1));
    assert_eq!(name, std::thread::current().name().map(str::to_owned));
    release.send(()).unwrap();
    assert_eq!(busy.wait().unwrap().as_deref(), Some("dl5-worker-0"));
    // A late answer is refused.
    let slow = Pool::builder()
        .workers(1)
        .build(|ms: u64, _ctx| std::thread::sleep(Duration::from_millis(ms)))
        .unwrap();
    assert!(matches!(
        slow.call_here(300, Some(Duration::from_millis(50))),
        Err(Error::DeadlineExceeded { .. })
    ));
}
