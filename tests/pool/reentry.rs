//! The re-entrancy guard: a call into a pool from inside its own handler (or around a cycle of
//! pools) never waits for a worker that cannot come.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Barrier};
use std::time::{Duration, Instant};

use prefork_pool::{Error, Pool, Reentry};

type Answer = Result<u32, Error>;

/// A pool whose handler, for `n > 0`, calls its own pool with `n - 1` (a handler that calls its own pool).
fn self_calling(workers: usize, policy: Reentry) -> Pool<u32, Answer> {
    Pool::builder()
        .workers(workers)
        .deadline(Duration::from_secs(10))
        .reentry(policy)
        .build(|n: u32, ctx| -> Answer {
            if n == 0 {
                return Ok(0);
            }
            let me = ctx.pool::<u32, Answer>().expect("the pool is alive");
            Ok(me.call(n - 1)?? + 1)
        })
        .unwrap()
}

#[test]
fn one_worker_calling_its_own_pool_is_answered_at_once() {
    let pool = self_calling(1, Reentry::Inline);
    let start = Instant::now();
    assert_eq!(pool.call(1).unwrap().unwrap(), 1);
    assert!(
        start.elapsed() < Duration::from_secs(1),
        "{:?}",
        start.elapsed()
    );
    let stats = pool.stats();
    assert_eq!(stats.reentrant_inline, 1, "{stats:?}");
    assert_eq!(stats.timed_out, 0);
}

#[test]
fn recursion_sixty_four_deep_through_the_same_pool() {
    let pool = self_calling(1, Reentry::Inline);
    assert_eq!(pool.call(64).unwrap().unwrap(), 64);
    assert_eq!(pool.stats().reentrant_inline, 64);
    // One request completed; its 64 nested calls are inline completions, not requests.
    let stats = pool.stats();
    assert_eq!(stats.completed, 1, "{stats:?}");
    assert_eq!(stats.inline_completed, 64, "{stats:?}");
}

#[test]
fn n_workers_n_concurrent_outer_calls_that_each_call_back() {
    // The case that kills gunicorn with two workers: every worker holds an outer request and
    // waits for an inner one.
    for workers in [1, 2, 4] {
        let barrier = Arc::new(Barrier::new(workers));
        let b2 = barrier.clone();
        let pool: Pool<(bool, u32), u32> = Pool::builder()
            .workers(workers)
            .deadline(Duration::from_secs(10))
            .build(move |(outer, x): (bool, u32), ctx| {
                if !outer {
                    return x * 2;
                }
                b2.wait(); // every worker is now busy with an outer call
                let me = ctx.pool::<(bool, u32), u32>().unwrap();
                me.call((false, x)).unwrap() + 1
            })
            .unwrap();
        let start = Instant::now();
        let answers: Vec<u32> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..workers as u32)
                .map(|x| {
                    let pool = pool.clone();
                    s.spawn(move || pool.call((true, x)).unwrap())
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let expected: Vec<u32> = (0..workers as u32).map(|x| x * 2 + 1).collect();
        assert_eq!(answers, expected);
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "{workers} workers: {:?}",
            start.elapsed()
        );
        drop(barrier);
    }
}

#[test]
fn a_cycle_of_two_pools_does_not_deadlock() {
    // A's handler calls B; B's handler calls A. Each pool has one worker.
    type P = Pool<u32, u32>;
    let a_slot: Arc<parking_lot::Mutex<Option<P>>> = Arc::default();
    let a_for_b = a_slot.clone();
    let b: P = Pool::builder()
        .name("b")
        .workers(1)
        .build(move |n: u32, _ctx| {
            if n == 0 {
                return 0;
            }
            let a = a_for_b.lock().clone().expect("a is set");
            a.call(n - 1).unwrap() + 10
        })
        .unwrap();
    let b_for_a = b.clone();
    let a: P = Pool::builder()
        .name("a")
        .workers(1)
        .build(move |n: u32, _ctx| {
            if n == 0 {
                return 0;
            }
            b_for_a.call(n - 1).unwrap() + 1
        })
        .unwrap();
    *a_slot.lock() = Some(a.clone());
    let start = Instant::now();
    // a(4) -> b(3) -> a(2) -> b(1) -> a(0): 1 + 10 + 1 + 10 = 22
    assert_eq!(a.call(4).unwrap(), 22);
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "{:?}",
        start.elapsed()
    );
    // Break the reference cycle (a's pool is kept by b's handler) before the test ends.
    a_slot.lock().take();
    b.shutdown(Duration::from_secs(1));
    a.shutdown(Duration::from_secs(1));
}

#[test]
fn reject_fails_at_once_and_runs_no_handler() {
    let runs = Arc::new(AtomicUsize::new(0));
    let r2 = runs.clone();
    let pool: Pool<u32, Answer> = Pool::builder()
        .name("rej")
        .workers(2)
        .reentry(Reentry::Reject)
        .build(move |n: u32, ctx| -> Answer {
            r2.fetch_add(1, Ordering::SeqCst);
            if n == 0 {
                return Ok(0);
            }
            let me = ctx.pool::<u32, Answer>().unwrap();
            let start = Instant::now();
            let nested = me.call(n - 1);
            assert!(start.elapsed() < Duration::from_millis(100));
            let via_submit = me.submit(n - 1).wait();
            assert!(matches!(via_submit, Err(Error::Reentrant { .. })));
            nested?
        })
        .unwrap();
    match pool.call(1).unwrap() {
        Err(Error::Reentrant { pool, worker }) => {
            assert_eq!(pool, "rej");
            assert!(worker < 2);
        }
        other => panic!("expected Reentrant, got {other:?}"),
    }
    assert_eq!(
        runs.load(Ordering::SeqCst),
        1,
        "no handler ran for the nested calls"
    );
    let stats = pool.stats();
    assert_eq!(stats.reentrant_rejected, 2, "{stats:?}");
    assert_eq!(stats.reentrant_inline, 0);
}

#[test]
fn nested_call_inherits_the_earlier_deadline_and_the_callers_cancellation() {
    let (tx, rx) = mpsc::channel::<(Duration, bool, u32)>();
    let tx = parking_lot::Mutex::new(tx);
    let pool: Pool<u32, Answer> = Pool::builder()
        .name("dlp")
        .workers(1)
        .deadline(Duration::from_secs(30))
        .build(move |n: u32, ctx| -> Answer {
            if n == 1 {
                let me = ctx.pool::<u32, Answer>().unwrap();
                // Asks for 30 s, but the caller only has 300 ms.
                return me.call_with(0, Duration::from_secs(30))?;
            }
            let remaining = ctx.remaining();
            // Wait for the caller's deadline; the nested context must report the cancellation.
            let end = Instant::now() + Duration::from_secs(10);
            while !ctx.is_cancelled() && Instant::now() < end {
                std::thread::sleep(Duration::from_millis(5));
            }
            tx.lock()
                .send((remaining, ctx.is_cancelled(), ctx.depth()))
                .unwrap();
            Ok(0)
        })
        .unwrap();
    let start = Instant::now();
    let outer = pool.call_with(1, Duration::from_millis(300));
    assert!(
        matches!(outer, Err(Error::DeadlineExceeded { .. })),
        "{outer:?}"
    );
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "{:?}",
        start.elapsed()
    );
    let (remaining, cancelled, depth) = rx.recv_timeout(Duration::from_secs(5)).unwrap();
    assert!(
        remaining <= Duration::from_millis(300),
        "nested deadline {remaining:?}"
    );
    assert!(
        cancelled,
        "the nested context reports the caller's cancellation"
    );
    assert_eq!(depth, 1);
    pool.shutdown_now();
}

#[test]
fn nested_submit_and_wait_takes_the_job_back() {
    // One worker submits to its own pool and waits on the ticket: the job can never be picked up
    // by a worker, so the waiting handler runs it itself.
    let pool: Pool<u32, Answer> = Pool::builder()
        .name("tkt")
        .workers(1)
        .deadline(Duration::from_secs(10))
        .build(|n: u32, ctx| -> Answer {
            if n == 0 {
                return Ok(100);
            }
            let me = ctx.pool::<u32, Answer>().unwrap();
            let tickets: Vec<_> = (0..3).map(|_| me.submit(n - 1)).collect();
            let mut sum = 0;
            for t in tickets {
                sum += t.wait()??;
            }
            Ok(sum)
        })
        .unwrap();
    let start = Instant::now();
    assert_eq!(pool.call(2).unwrap().unwrap(), 900);
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(
        pool.stats().reentrant_inline,
        12,
        "3 + 3 * 3 nested jobs ran inline"
    );
}

#[test]
fn a_call_from_outside_any_handler_is_not_reentrant() {
    let pool = self_calling(2, Reentry::Reject);
    assert_eq!(pool.call(0).unwrap().unwrap(), 0);
    let stats = pool.stats();
    assert_eq!(stats.reentrant_rejected, 0);
    assert_eq!(stats.reentrant_inline, 0);
}
