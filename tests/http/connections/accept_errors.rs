//! Running out of descriptors (EMFILE) while accepting is logged (once per 10 s, however often
//! it fails) and survived with a short backoff: no panic, no spin at 100% CPU, and the waiting
//! client is served once descriptors come back.

use crate::http_helpers::*;
use prefork_pool::http::Server;
use std::time::Duration;

fn cpu_time() -> Duration {
    // SAFETY: an all-zero rusage is a valid value for getrusage to overwrite.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage writes into the struct we own.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let tv = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64)
    };
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

fn set_soft_nofile(n: u64) -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we own.
    unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) };
    let old: u64 = lim.rlim_cur;
    lim.rlim_cur = n.min(lim.rlim_max);
    // SAFETY: setrlimit reads the struct we own; lowering the soft limit is always permitted and
    // raising it back stays within the hard limit.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) }, 0);
    old
}

#[test]
fn emfile_is_survived_without_spinning() {
    // Alone: it lowers this process's open-file limit, fills every descriptor and measures its CPU time.
    alone(
        module_path!(),
        "emfile_is_survived_without_spinning",
        || {
            logs();
            let s = Server::builder()
                .bind("127.0.0.1:0")
                .pool(|p| p.workers(1))
                .serve(|_req, _ctx| http::Response::new(b"ok".to_vec()))
                .unwrap();
            let addr = s.local_addrs()[0];
            let (a, _c) = roundtrip(addr, &get("/before"));
            assert_eq!(a.status, 200);

            let open = std::fs::read_dir("/proc/self/fd").unwrap().count() as u64;
            let old = set_soft_nofile(open + 64);
            // Fill every descriptor, then free one for the client's socket.
            let mut files = Vec::new();
            while let Ok(f) = std::fs::File::open("/dev/null") {
                files.push(f);
            }
            files.pop();
            let mut c = Client::new(addr);
            c.send(&get("/during"));
            // The server cannot accept it now. It must not spin meanwhile.
            let cpu = cpu_time();
            std::thread::sleep(Duration::from_millis(600));
            let used = cpu_time() - cpu;
            assert!(
                used < Duration::from_millis(300),
                "{used:?} of CPU in 600 ms: the accept loop spins"
            );
            // Descriptors come back: the waiting client is served.
            drop(files);
            set_soft_nofile(old);
            let a = c.answer();
            assert_eq!(a.status, 200);
            let (a, _c) = roundtrip(addr, &get("/after"));
            assert_eq!(a.status, 200);
            s.shutdown(WAIT);
            // Accepting failed every 100 ms for 600 ms: one warning (at most one per 10 s).
            let warned = lines_with(&["accept failed"]);
            assert_eq!(warned.len(), 1, "{warned:#?}");
        },
    );
}
