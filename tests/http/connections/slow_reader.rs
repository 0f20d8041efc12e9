//! A client that stops reading its answer costs a buffer until the write timeout, then its
//! connection is closed; workers and other clients are not held up meanwhile.

use crate::http_helpers::*;
use prefork_pool::http::Server;
use std::time::{Duration, Instant};

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .map(|d| d.count())
        .unwrap_or(0)
}

#[test]
fn a_client_that_does_not_read_is_dropped_at_the_write_timeout() {
    // Alone: it counts this process's descriptors.
    alone(
        module_path!(),
        "a_client_that_does_not_read_is_dropped_at_the_write_timeout",
        || {
            let s = Server::builder()
                .bind("127.0.0.1:0")
                .pool(|p| p.workers(1))
                .write_timeout(Duration::from_millis(500))
                .serve(|req, _ctx| {
                    let n = if req.uri().path() == "/big" {
                        32 << 20
                    } else {
                        2
                    };
                    http::Response::new(vec![b'x'; n])
                })
                .unwrap();
            let addr = s.local_addrs()[0];
            let before = open_fds();
            let sent = Instant::now();
            let mut stuck = Client::new(addr);
            stuck.send(&get("/big"));
            // The only worker is free again at once: the answer waits in a buffer, not in the worker.
            let start = Instant::now();
            let (a, c) = roundtrip(addr, &get("/small"));
            assert_eq!(a.status, 200);
            assert!(start.elapsed() < Duration::from_secs(2));
            drop(c);
            // The server's side of the stuck connection is closed after the write timeout: only the
            // stuck client's own descriptor is left.
            while open_fds() > before + 1 {
                assert!(
                    sent.elapsed() < WAIT,
                    "the non-reading client was never dropped"
                );
                std::thread::sleep(Duration::from_millis(20));
            }
            assert!(
                sent.elapsed() >= Duration::from_millis(450),
                "{:?}",
                sent.elapsed()
            );
            drop(stuck);
            s.shutdown(WAIT);
        },
    );
}
