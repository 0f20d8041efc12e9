//! 200 slow-loris connections (one header byte every 500 ms) cost buffers, not workers: a normal
//! request on a one-worker server is answered at once meanwhile, and the slow heads time out with 408.
//! 200 slow uploads (one body byte every 250 ms, never long enough between reads for the body
//! timeout) get 408 from the rate floor, while an upload above the floor is served.

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

#[test]
fn uploads_below_the_rate_floor_get_408_and_one_above_it_is_served() {
    let s = Server::builder()
        .bind("127.0.0.1:0")
        .pool(|p| p.workers(1))
        .body_timeout(Duration::from_secs(2))
        .min_body_rate(100)
        .serve(|req, _ctx| http::Response::new(format!("{}", req.body().len()).into_bytes()))
        .unwrap();
    let addr = s.local_addrs()[0];
    let head = b"POST /up HTTP/1.1\r\nHost: t\r\nContent-Length: 1000\r\n\r\n";
    let mut slow: Vec<Client> = (0..200).map(|_| Client::new(addr)).collect();
    for c in slow.iter_mut() {
        c.send(head);
    }
    let (stop_tx, stop_rx) = crossbeam_channel::bounded::<()>(1);
    let streams: Vec<_> = slow.iter().map(|c| c.stream.try_clone().unwrap()).collect();
    let trickle = std::thread::spawn(move || {
        // One byte every 250 ms on each: 4 B/s, each byte well within the 2 s between reads.
        for _ in 0..1000 {
            for mut s in &streams {
                let _ = s.write_all(b"x");
            }
            if stop_rx.recv_timeout(Duration::from_millis(250)).is_ok() {
                break;
            }
        }
    });
    // Meanwhile, 750 bytes at 250 B/s: slower than one body timeout in all, above the floor.
    let steady = std::thread::spawn(move || {
        let mut c = Client::new(addr);
        c.send(b"POST /steady HTTP/1.1\r\nHost: t\r\nContent-Length: 750\r\n\r\n");
        for _ in 0..15 {
            std::thread::sleep(Duration::from_millis(200));
            c.send(&[b'y'; 50]);
        }
        c.answer()
    });
    for c in slow.iter_mut() {
        let a = c.answer();
        assert_eq!(a.status, 408, "{}", a.text());
        assert!(a.text().contains("minimum rate"), "{}", a.text());
        c.assert_closed();
    }
    let _ = stop_tx.send(());
    trickle.join().unwrap();
    let a = steady.join().unwrap();
    assert_eq!((a.status, a.text()), (200, "750".to_string()));
    s.shutdown(WAIT);
}
