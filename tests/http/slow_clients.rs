//! 200 slow-loris connections (one header byte every 500 ms) cost buffers, not workers: a normal
//! request on a one-worker server is answered at once meanwhile, and the slow heads time out with 408.

use crate::http_helpers::*;
use prefork_pool::http::Server;
use std::io::Write;
use std::time::{Duration, Instant};

#[test]
fn slow_loris_does_not_delay_a_normal_request() {
    let s = Server::builder()
        .bind("127.0.0.1:0")
        .pool(|p| p.workers(1))
        .head_timeout(Duration::from_secs(3))
        .serve(|_req, _ctx| http::Response::new(b"hi".to_vec()))
        .unwrap();
    let addr = s.local_addrs()[0];
    let mut slow: Vec<Client> = (0..200).map(|_| Client::new(addr)).collect();
    let head = b"GET /slow HTTP/1.1\r\nHost: t\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    let (stop_tx, stop_rx) = crossbeam_channel::bounded::<()>(1);
    let streams: Vec<_> = slow.iter().map(|c| c.stream.try_clone().unwrap()).collect();
    let driver = std::thread::spawn(move || {
        let mut i = 0;
        // A byte every 500 ms on each connection, until told to stop (bounded by the head length).
        while i < head.len() {
            for mut s in &streams {
                let _ = s.write_all(&head[i..i + 1]);
            }
            i += 1;
            if stop_rx.recv_timeout(Duration::from_millis(500)).is_ok() {
                break;
            }
        }
    });
    // Meanwhile, normal requests are served at once.
    let mut worst = Duration::ZERO;
    let mut c = Client::new(addr);
    for _ in 0..10 {
        let start = Instant::now();
        c.send(&get("/fast"));
        let a = c.answer();
        assert_eq!(a.status, 200);
        worst = worst.max(start.elapsed());
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        worst < Duration::from_millis(500),
        "a normal request took {worst:?}"
    );
    // The slow heads run out of time: 408 and closed.
    for c in slow.iter_mut().take(20) {
        let a = c.answer();
        assert_eq!(a.status, 408);
        c.assert_closed();
    }
    let _ = stop_tx.send(());
    driver.join().unwrap();
    s.shutdown(WAIT);
}
