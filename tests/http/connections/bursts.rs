//! Bursts of requests on many kept-alive connections while one of two workers is stuck in a long
//! handler: the other worker serves every one of them, with the stuck handler still running. A
//! busy worker's wait in the connection lane takes several events at once and leaves those it
//! does not act on for the next thread that waits (`src/http/engine/LANE.md`, scenario 5); none
//! of them may be left behind the stuck worker.

use crate::http_helpers::*;
use prefork_pool::http::Server;
use std::time::Duration;

#[test]
fn bursts_beside_a_stuck_handler_are_all_served_by_the_other_worker() {
    let (started_tx, started_rx) = crossbeam_channel::bounded::<()>(1);
    let (release_tx, release_rx) = crossbeam_channel::bounded::<()>(1);
    let s = Server::builder()
        .bind("127.0.0.1:0")
        .pool(|p| p.workers(2))
        .serve(move |req, _ctx| {
            if req.uri().path() == "/stuck" {
                let _ = started_tx.send(());
                // Until the test is done with its bursts (bounded: a broken test still ends).
                let _ = release_rx.recv_timeout(Duration::from_secs(30));
            }
            http::Response::new(req.uri().path().as_bytes().to_vec())
        })
        .unwrap();
    let addr = s.local_addrs()[0];
    let mut stuck = Client::new(addr);
    stuck.send(&get("/stuck"));
    started_rx
        .recv_timeout(WAIT)
        .expect("the stuck handler started");

    let mut clients: Vec<Client> = (0..16).map(|_| Client::new(addr)).collect();
    for round in 0..20 {
        // Every connection's request on the wire before any answer is read.
        for (i, c) in clients.iter_mut().enumerate() {
            c.send(&get(&format!("/r{round}/c{i}")));
        }
        for (i, c) in clients.iter_mut().enumerate() {
            let a = c.answer();
            assert_eq!(a.status, 200, "round {round}, connection {i}");
            assert_eq!(a.text(), format!("/r{round}/c{i}"));
        }
    }
    // All served while the stuck handler still ran; now it answers too.
    release_tx.send(()).unwrap();
    let a = stuck.answer();
    assert_eq!((a.status, a.text()), (200, "/stuck".to_string()));
    s.shutdown(WAIT);
}
