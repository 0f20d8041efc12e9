//! Balanced, load-aware accept between the worker processes of `serve_http`: request shares under
//! keep-alive load (wrk), and new connections left to the siblings of a process whose every
//! handler thread is busy.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use prefork_pool::prefork::SupervisorBuilder;

use crate::helpers::*;
use crate::wrk::wrk;

/// Where `/block` marks its process (`blocked-<pid>`) and waits for `release`; set in the forked
/// master, before its workers are forked.
static BLOCK_DIR: OnceLock<PathBuf> = OnceLock::new();

fn block_dir() -> PathBuf {
    std::env::temp_dir().join(format!("prefork-test-{}-block", std::process::id()))
}

/// `/` answers the worker's pid; `/block` marks its process blocked and holds its thread until the
/// test releases it (bounded: 20 s).
pub fn pid_handler(
    req: prefork_pool::http::HttpRequest,
    _ctx: &prefork_pool::Context,
) -> prefork_pool::http::HttpResponse {
    let me = std::process::id();
    if req.uri().path() == "/block" {
        if let Some(dir) = BLOCK_DIR.get() {
            let _ = std::fs::write(dir.join(format!("blocked-{me}")), b"");
            let end = Instant::now() + Duration::from_secs(20);
            while !dir.join("release").exists() && Instant::now() < end {
                sleep_ms(5);
            }
        }
    }
    http::Response::new(format!("{me}\n").into_bytes())
}

/// A master running `serve_http` with `procs` processes of `threads` handler threads each (no
/// access log, no self-call rescue: the test's clients are on this host), `pid_handler`.
pub fn http_master(
    name: &str,
    procs: usize,
    threads: usize,
    configure: impl FnOnce(SupervisorBuilder) -> SupervisorBuilder,
) -> Master {
    let dir = block_dir();
    start_master(
        name,
        move |_| {
            let _ = BLOCK_DIR.set(dir);
        },
        |b, l| configure(b.listener(l).workers(procs)),
        move |b| {
            b.serve_http(
                move |s| {
                    s.pool(|p| p.workers(threads).deadline(Duration::from_secs(30)))
                        .access_log(false)
                        .max_spare(0)
                },
                || Ok::<_, String>(pid_handler),
            )
        },
    )
}

/// Busiest / least busy request share ≤ 1.3 with 2 and 4 processes (one thread each) at 16 and 64
/// keep-alive connections.
pub fn balance() -> Result<(), String> {
    for procs in [2, 4] {
        let mut m = http_master("balance", procs, 1, |b| b);
        let result = (|| {
            m.wait_log(&format!("{procs} worker(s) ready"), LONG)?;
            for conns in [16, 64] {
                let run = wrk(m.addr, 2, conns, Duration::from_secs(4), "/")?;
                run.clean()?;
                let ratio = run.imbalance(procs);
                println!(
                    "  balance: {procs} processes, -c{conns}: {} requests, shares {} (busiest / \
                     least {ratio:.2})",
                    run.requests(),
                    run.percent()
                );
                ensure(ratio <= 1.3, || {
                    format!(
                        "{procs} processes at -c{conns}: shares {} (busiest / least {ratio:.2} > \
                         1.3)",
                        run.percent()
                    )
                })?;
            }
            m.signal(libc::SIGTERM);
            let code = m.wait_exit(LONG)?;
            ensure(code == 0, || format!("exit status {code}"))
        })();
        finish(&mut m, result)?;
    }
    Ok(())
}

/// GET `path` on a new connection; the worker pid it answered with, and how long it took.
fn pid_of(addr: SocketAddr, path: &str) -> Result<(i32, Duration), String> {
    let started = Instant::now();
    let body = get(addr, path)?;
    let pid = body
        .trim()
        .parse()
        .map_err(|_| format!("{body:?} is not a pid"))?;
    Ok((pid, started.elapsed()))
}

fn check_load_aware(m: &mut Master) -> Result<(), String> {
    m.wait_log("3 worker(s) ready", LONG)?;
    let dir = block_dir();
    let addr = m.addr;
    let blocker = std::thread::spawn(move || pid_of(addr, "/block"));
    let end = Instant::now() + LONG;
    let blocked = loop {
        let b = crate::serve_http::marked(&dir, "blocked-");
        if let Some(&pid) = b.iter().next() {
            break pid;
        }
        ensure(Instant::now() < end, || "no process ran /block".into())?;
        sleep_ms(5);
    };
    // Every thread of `blocked` is busy: new connections go to the two others, at once.
    let mut served = std::collections::BTreeSet::new();
    let result = (|| {
        for _ in 0..40 {
            let (pid, took) = pid_of(addr, "/")?;
            ensure(pid != blocked, || {
                format!("a new request went to process {pid}, whose only thread is blocked")
            })?;
            ensure(took < Duration::from_secs(2), || {
                format!("a request took {took:?} while two processes had an idle thread")
            })?;
            served.insert(pid);
        }
        ensure(served.len() == 2, || {
            format!("the requests were served by {served:?}, not by both idle processes")
        })
    })();
    std::fs::write(dir.join("release"), b"").map_err(|e| e.to_string())?;
    let (pid, _) = blocker.join().map_err(|_| "blocker thread panicked")??;
    ensure(pid == blocked, || format!("/block answered by {pid}"))?;
    result?;
    m.signal(libc::SIGTERM);
    let code = m.wait_exit(LONG)?;
    ensure(code == 0, || format!("exit status {code}"))
}

/// A process whose only handler thread is blocked leaves new connections to its two siblings:
/// none is accepted by it (and waits behind the blocked request).
pub fn load_aware() -> Result<(), String> {
    let dir = block_dir();
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let mut m = http_master("load-aware", 3, 1, |b| b);
    let result = check_load_aware(&mut m);
    let _ = std::fs::remove_dir_all(&dir);
    finish(&mut m, result)
}
