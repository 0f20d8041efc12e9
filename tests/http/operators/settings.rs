//! The settings of the environment's vocabulary change a real server (thread mode): read from a
//! lookup here, never from the process environment, which the tests running at once share. The
//! example's `PORT` is checked in its own process (`example.rs`).

use crate::http_helpers::*;
use prefork_pool::http::{PeerAddr, Server};
use prefork_pool::Settings;
use std::time::{Duration, Instant};

#[test]
fn settings_change_a_real_server() {
    let env = Settings::from_lookup(|name| {
        let v = match name {
            "PREFORK_BIND" => "127.0.0.1:0",
            "PREFORK_THREADS" => "2",
            "PREFORK_TIMEOUT" => "200ms",
            "PREFORK_KEEP_ALIVE" => "300ms",
            "PREFORK_MAX_REQUESTS" => "3",
            "PREFORK_MAX_REQUESTS_JITTER" => "1",
            "PREFORK_GRACEFUL_TIMEOUT" => "4s",
            // Empty: no proxy is believed, not even 127.0.0.1 (the default believes it).
            "PREFORK_FORWARDED_ALLOW_IPS" => "",
            _ => return None,
        };
        Some(v.to_string())
    });
    assert!(env.error().is_none(), "{:?}", env.error());
    let server = Server::builder()
        .bind("127.0.0.1:1") // replaced by PREFORK_BIND
        .pool(|p| p.workers(7).deadline(Duration::from_secs(30))) // by PREFORK_THREADS, _TIMEOUT
        // The test's client is in this process: not a self-call.
        .max_spare(0)
        .with_settings(&env)
        .serve(|req, _ctx| {
            if req.uri().path() == "/slow" {
                std::thread::sleep(Duration::from_secs(1));
            }
            let peer = req.extensions().get::<PeerAddr>().map(|p| p.0.to_string());
            peer.unwrap_or_default()
        })
        .unwrap();
    let addr = server.local_addrs()[0];
    assert!(addr.ip().is_loopback() && addr.port() != 1, "{addr}");
    assert_eq!(server.stats().workers, 2);
    assert_eq!(server.graceful_timeout(), Duration::from_secs(4));

    // PREFORK_TIMEOUT: 504 at the deadline.
    let start = Instant::now();
    let (a, _) = roundtrip(addr, &get("/slow"));
    assert_eq!(a.status, 504, "{}", a.text());
    assert!(
        start.elapsed() < Duration::from_millis(900),
        "{:?}",
        start.elapsed()
    );

    // PREFORK_FORWARDED_ALLOW_IPS="": the header of a client on 127.0.0.1 is not believed.
    let (a, mut c) = roundtrip(
        addr,
        b"GET / HTTP/1.1\r\nHost: t\r\nX-Forwarded-For: 203.0.113.9\r\n\r\n",
    );
    assert_eq!((a.status, a.text().as_str()), (200, "127.0.0.1"));

    // PREFORK_KEEP_ALIVE=300ms: the idle kept-alive connection is closed after it.
    std::thread::sleep(Duration::from_millis(700));
    c.assert_closed();

    // PREFORK_MAX_REQUESTS=3 (+ 0..=1): threads are replaced as they reach it.
    for _ in 0..12 {
        let (a, _) = roundtrip(addr, &get("/"));
        assert_eq!(a.status, 200);
    }
    let end = Instant::now() + Duration::from_secs(5);
    while server.stats().recycled == 0 && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(server.stats().recycled > 0, "{:?}", server.stats());
    server.shutdown(Duration::from_secs(5));
}
