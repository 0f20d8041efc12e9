//! A panicking handler: the caller gets `Panicked` with the message, and the worker lives on.

use prefork_pool::{Error, Pool};

#[test]
fn panic_is_answered_with_its_message_and_the_pool_keeps_serving() {
    let pool = Pool::builder()
        .workers(1)
        .build(|x: i32, _ctx| {
            if x < 0 {
                panic!("negative input {x}");
            }
            x
        })
        .unwrap();
    match pool.call(-7) {
        Err(Error::Panicked { message, .. }) => assert_eq!(message, "negative input -7"),
        other => panic!("expected Panicked, got {other:?}"),
    }
    assert_eq!(pool.call(5).unwrap(), 5);
}

#[test]
fn a_thousand_panics_do_not_shrink_the_pool() {
    // Keep the test output readable: these panics are expected.
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let pool = Pool::builder()
        .name("pn2")
        .workers(2)
        .build(|x: u32, ctx| {
            if x % 2 == 0 {
                std::panic::panic_any(format!("boom {x} on {:?}", ctx.worker()));
            }
            x
        })
        .unwrap();
    for i in 0..1000u32 {
        assert!(matches!(pool.call(i * 2), Err(Error::Panicked { .. })));
    }
    std::panic::set_hook(previous);
    let stats = pool.stats();
    assert_eq!(stats.panicked, 1000);
    assert_eq!(stats.workers, 2);
    // Both workers are still there: two jobs can run at the same time.
    let a = pool.submit(1);
    let b = pool.submit(3);
    assert_eq!(a.wait().unwrap() + b.wait().unwrap(), 4);
    assert!(pool.stats().idle <= 2);
}

#[test]
fn a_panicking_completion_callback_takes_down_neither_worker_nor_watchdog() {
    use std::sync::mpsc;
    use std::time::{Duration, Instant};
    let pool = Pool::builder()
        .name("pn3")
        .workers(1)
        .build(|ms: u64, ctx| {
            let end = Instant::now() + Duration::from_millis(ms);
            while Instant::now() < end && !ctx.is_cancelled() {
                std::thread::sleep(Duration::from_millis(2));
            }
            ms
        })
        .unwrap();
    // On the worker (an answer) and on the watchdog (a deadline): both callbacks panic.
    pool.submit_then(0, None, |_| panic!("callback bug on the worker"));
    pool.submit_then(5_000, Some(Duration::from_millis(50)), |_| {
        panic!("callback bug on the watchdog")
    });
    // The worker and the watchdog are still there: a later job is answered, and a later stuck job
    // is still answered at its deadline.
    let (tx, rx) = mpsc::channel();
    pool.submit_then(1, None, move |r| tx.send(r).unwrap());
    assert_eq!(rx.recv_timeout(Duration::from_secs(5)).unwrap().unwrap(), 1);
    let start = Instant::now();
    assert!(matches!(
        pool.call_with(5_000, Duration::from_millis(100)),
        Err(Error::DeadlineExceeded { .. })
    ));
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "{:?}",
        start.elapsed()
    );
    pool.shutdown_now();
}
