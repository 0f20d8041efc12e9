//! Thousands of idle keep-alive connections cost a descriptor each and nothing else: requests are
//! served meanwhile, and when the clients go, every descriptor comes back.

use crate::http_helpers::*;
use prefork_pool::http::Server;
use std::time::{Duration, Instant};

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .map(|d| d.count())
        .unwrap_or(0)
}

/// Raise the soft open-file limit to the hard limit; returns the new soft limit.
fn raise_nofile() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the rlimit struct we own; RLIMIT_NOFILE is a valid resource.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return 1024;
    }
    lim.rlim_cur = lim.rlim_max;
    // SAFETY: setrlimit reads the struct we own; raising the soft limit up to the hard limit is
    // always permitted.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } != 0 {
        // SAFETY: as above.
        unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) };
    }
    lim.rlim_cur
}

#[test]
fn thousands_of_idle_keep_alive_connections() {
    // Alone: it counts this process's descriptors and raises its open-file limit.
    alone(
        module_path!(),
        "thousands_of_idle_keep_alive_connections",
        || {
            let soft = raise_nofile();
            // Each connection costs two descriptors here (client and server side), plus some headroom.
            let n = 5000.min((soft.saturating_sub(200) / 2) as usize);
            assert!(n >= 400, "open-file limit too low for this test: {soft}");
            let s = Server::builder()
                .bind("127.0.0.1:0")
                .pool(|p| p.workers(1))
                .keepalive_timeout(Duration::from_secs(120))
                // Opening thousands of connections takes seconds on a loaded machine: the fresh ones
                // wait that long for their first request.
                .head_timeout(Duration::from_secs(120))
                .serve(|_req, _ctx| http::Response::new(b"ok".to_vec()))
                .unwrap();
            let addr = s.local_addrs()[0];
            // Warm up once so lazily created descriptors exist before the baseline.
            let (a, c) = roundtrip(addr, &get("/warm"));
            assert_eq!(a.status, 200);
            drop(c);
            let before = open_fds();
            // Opened in batches, each ended by a request on its last connection: the accept queue
            // is FIFO, so that answer means the whole batch was accepted. (Opened all at once on a
            // loaded machine, they overflow the listen backlog and the kernel resets some, which
            // says nothing about the server.)
            let mut idle: Vec<Client> = Vec::with_capacity(n);
            while idle.len() < n {
                let batch = 250.min(n - idle.len());
                idle.extend((0..batch).map(|_| Client::new(addr)));
                let last = idle.last_mut().unwrap();
                last.send(&get("/batch"));
                assert_eq!(last.answer().status, 200);
            }
            // Every tenth has served a request and now idles between requests.
            for c in idle.iter_mut().step_by(10) {
                c.send(&get("/once"));
                assert_eq!(c.answer().status, 200);
            }
            // Requests are served promptly while they all stay open.
            let mut c = Client::new(addr);
            for _ in 0..20 {
                let start = Instant::now();
                c.send(&get("/busy"));
                assert_eq!(c.answer().status, 200);
                assert!(
                    start.elapsed() < Duration::from_secs(3),
                    "{:?}",
                    start.elapsed()
                );
            }
            let last = idle.last_mut().unwrap();
            last.send(&get("/late"));
            assert_eq!(last.answer().status, 200);
            drop(c);
            drop(idle);
            // The server closes its side of each: back to the baseline.
            let start = Instant::now();
            loop {
                let now = open_fds();
                if now <= before {
                    break;
                }
                assert!(
                    start.elapsed() < WAIT,
                    "descriptors leaked: {before} before, {now} after"
                );
                std::thread::sleep(Duration::from_millis(20));
            }
            s.shutdown(WAIT);
        },
    );
}
