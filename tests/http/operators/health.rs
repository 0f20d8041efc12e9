//! The health routes (`ServerBuilder::health_routes`): answered by the server itself while every
//! worker is busy; readiness 503 from the first moment of a graceful stop, before the listeners
//! close; liveness 503 while the server is stuck, and 200 again after.

use std::time::{Duration, Instant};

use prefork_pool::http::Server;

use crate::http_helpers::{get, roundtrip, Answer, Client, WAIT};

fn ask(addr: std::net::SocketAddr, path: &str) -> Answer {
    roundtrip(addr, &get(path)).0
}

/// Ask `path` on new connections until the answer has `status` (polling a state the server
/// shows only through the route).
fn until_status(addr: std::net::SocketAddr, path: &str, status: u16) -> Answer {
    let start = Instant::now();
    loop {
        let a = ask(addr, path);
        if a.status == status {
            return a;
        }
        assert!(start.elapsed() < WAIT, "{path} never answered {status}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn readiness_says_503_from_the_start_of_a_graceful_stop_while_the_listener_still_accepts() {
    let server = Server::builder()
        .bind("127.0.0.1:0")
        .access_log(false)
        .health_routes("/readyz", "/livez")
        .drain_delay(Duration::from_secs(3))
        .serve(|_req, _ctx| "app")
        .unwrap();
    let addr = server.local_addrs()[0];
    let a = ask(addr, "/readyz");
    assert_eq!((a.status, a.text().as_str()), (200, "ready\n"));
    assert_eq!(ask(addr, "/livez").status, 200);
    let stopper = {
        let server = server.clone();
        std::thread::spawn(move || server.shutdown(WAIT))
    };
    // New connections are still accepted, and readiness tells the balancer to go away.
    let a = until_status(addr, "/readyz", 503);
    assert!(a.text().contains("draining"), "{}", a.text());
    let app = ask(addr, "/");
    assert_eq!((app.status, app.text().as_str()), (200, "app"));
    assert_eq!(
        ask(addr, "/livez").status,
        200,
        "a draining server is alive"
    );
    stopper.join().unwrap();
    assert!(
        std::net::TcpStream::connect(addr).is_err(),
        "the listener is closed once the server stopped"
    );
}

#[test]
fn liveness_says_503_while_every_worker_is_blocked_and_both_answer_meanwhile() {
    let (entered_tx, entered_rx) = crossbeam_channel::unbounded::<()>();
    let (go_tx, go_rx) = crossbeam_channel::unbounded::<()>();
    let server = Server::builder()
        .bind("127.0.0.1:0")
        .access_log(false)
        // This test's clients live in this process: they are not self-calls to rescue.
        .max_spare(0)
        .health_routes("/readyz", "/livez")
        .live_after(Duration::from_millis(300))
        .pool(|p| p.workers(2))
        .serve(move |_req, _ctx| {
            let _ = entered_tx.send(());
            let _ = go_rx.recv_timeout(WAIT);
            "done"
        })
        .unwrap();
    let addr = server.local_addrs()[0];
    assert_eq!(ask(addr, "/livez").status, 200);
    let mut blocked: Vec<Client> = (0..2)
        .map(|i| {
            let mut c = Client::new(addr);
            c.send(&get(&format!("/block{i}")));
            c
        })
        .collect();
    for _ in 0..2 {
        entered_rx
            .recv_timeout(WAIT)
            .expect("a worker took a request");
    }
    // Saturated: both routes still answer, without a worker.
    let ready = ask(addr, "/readyz");
    assert_eq!(ready.status, 200, "{}", ready.text());
    let live = until_status(addr, "/livez", 503);
    let body = live.text();
    assert!(
        body.contains("is stuck") && body.contains("/block"),
        "{body}"
    );
    go_tx.send(()).unwrap();
    go_tx.send(()).unwrap();
    for c in &mut blocked {
        assert_eq!(c.answer().status, 200);
    }
    until_status(addr, "/livez", 200);
    server.shutdown(WAIT);
}
