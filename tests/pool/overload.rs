//! A full queue answers at once, and `try_submit` gives the request back.

use std::sync::mpsc;
use std::time::{Duration, Instant};

use prefork_pool::{Error, Pool, TrySubmitError};

#[test]
fn full_queue_is_refused_at_once_with_the_request_given_back() {
    let (release, gate) = mpsc::channel::<()>();
    let gate = parking_lot::Mutex::new(gate);
    let pool = Pool::builder()
        .workers(1)
        .queue_capacity(2)
        .build(move |x: String, _ctx| {
            if x == "block" {
                gate.lock().recv().unwrap();
            }
            x
        })
        .unwrap();
    let blocked = pool.submit("block".to_owned());
    while pool.stats().busy == 0 {
        std::thread::yield_now();
    }
    let q1 = pool.submit("one".to_owned());
    let q2 = pool
        .try_submit("two".to_owned())
        .expect("room for a second queued job");

    let start = Instant::now();
    match pool.try_submit("three".to_owned()) {
        Err(TrySubmitError::Full(req)) => assert_eq!(req, "three"),
        other => panic!("expected Full, got {:?}", other.map(|_| ())),
    }
    match pool.call("four".to_owned()) {
        Err(Error::Overloaded { capacity, .. }) => assert_eq!(capacity, 2),
        other => panic!("expected Overloaded, got {other:?}"),
    }
    let ticket = pool.submit("five".to_owned());
    assert!(matches!(ticket.wait(), Err(Error::Overloaded { .. })));
    assert!(
        start.elapsed() < Duration::from_millis(500),
        "refusals must not wait"
    );
    assert_eq!(
        pool.stats().overloaded,
        3,
        "try_submit, call and submit were each refused"
    );

    release.send(()).unwrap();
    assert_eq!(blocked.wait().unwrap(), "block");
    assert_eq!(q1.wait().unwrap(), "one");
    assert_eq!(q2.wait().unwrap(), "two");
}
