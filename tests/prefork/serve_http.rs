//! The crate's HTTP server in each worker process (`Supervisor::serve_http`): serving, HUP and
//! TERM under load, recycling, a stuck handler's process replaced, and a handler's call to its own
//! service that lands on the sibling process.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::failures::max_requests_recycle;
use crate::helpers::*;
use crate::lifecycle::{hup_under_load, term_under_load};

/// The crate's HTTP server in each worker process ([`Supervisor::serve_http`]): 2 processes serve;
/// HUP under load fails no request; a handler stuck past its deadline gets 504 from the Pool's
/// watchdog, then the master replaces its process; TERM exits 0.
fn check_serve_http(m: &mut Master) -> Result<(), String> {
    let (new, out) = hup_under_load(m, "/sleep/50", 800)?;
    let served: BTreeSet<i32> = out
        .iter()
        .filter_map(|o| o.result.as_ref().ok()?.parse().ok())
        .collect();
    ensure(served.len() >= 3, || {
        format!("answers came from {served:?}: not both old workers and a new one")
    })?;

    let started = Instant::now();
    let mut conn = TcpStream::connect(m.addr).map_err(|e| e.to_string())?;
    conn.set_read_timeout(Some(Duration::from_secs(20))).ok();
    conn.write_all(b"GET /never HTTP/1.0\r\n\r\n")
        .map_err(|e| e.to_string())?;
    let mut resp = String::new();
    conn.read_to_string(&mut resp).map_err(|e| e.to_string())?;
    ensure(resp.starts_with("HTTP/1.1 504"), || {
        format!("a stuck handler got {resp:?}, not 504 from the watchdog")
    })?;
    ensure(started.elapsed() < Duration::from_secs(5), || {
        format!("the 504 took {:?}", started.elapsed())
    })?;
    m.wait_log("killed by the supervisor after a deadline timeout", LONG)?;
    ensure(m.log_text().contains("GET /never HTTP/1.0"), || {
        "the stuck request line is not in the log".into()
    })?;
    m.wait_workers(LONG, "2 workers, one replaced", |w| {
        w.len() == 2 && w != &new
    })?;
    get(m.addr, "/")?;
    m.signal(libc::SIGTERM);
    let code = m.wait_exit(LONG)?;
    ensure(code == 0, || format!("exit status {code}"))
}

pub fn http_handler(
    req: prefork_pool::http::HttpRequest,
    _ctx: &prefork_pool::Context,
) -> prefork_pool::http::HttpResponse {
    let path = req.uri().path();
    if let Some(ms) = path.strip_prefix("/sleep/") {
        std::thread::sleep(Duration::from_millis(ms.parse().unwrap_or(10)));
    } else if path == "/never" {
        loop {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    http::Response::new(format!("{}\n", std::process::id()).into_bytes())
}

// A handler that calls its own service over TCP, and lands on the sibling worker process.

/// The server's address, set in the forked master (before its workers are forked).
pub static SELF_ADDR: std::sync::OnceLock<SocketAddr> = std::sync::OnceLock::new();

/// [`sibling_dir`] of the test process, set in the forked master.
pub static SIBLING_DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();

/// Where each worker process marks that it runs an `/outer` request (`busy-<pid>`) and that its
/// inner call was answered (`done-<pid>`).
pub fn sibling_dir() -> PathBuf {
    std::env::temp_dir().join(format!("prefork-test-{}-sibling", std::process::id()))
}

/// The pids of the `{prefix}<pid>` files in `dir`.
pub fn marked(dir: &std::path::Path, prefix: &str) -> BTreeSet<i32> {
    std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .filter_map(|e| {
                    let name = e.file_name().to_string_lossy().into_owned();
                    name.strip_prefix(prefix)?.parse().ok()
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Waits (bounded) until `dir` holds `{prefix}<pid>` files of two processes.
pub fn wait_marked(dir: &std::path::Path, prefix: &str, timeout: Duration) {
    let end = Instant::now() + timeout;
    while marked(dir, prefix).len() < 2 && Instant::now() < end {
        sleep_ms(5);
    }
}

/// In each of 2 worker processes of 1 thread. `/inner` answers the process's pid. `/outer` marks
/// its process busy, waits (bounded) until the other process runs an `/outer` too, then calls
/// `/inner` over TCP with ureq, on a fresh connection each time, until the answer comes from the
/// sibling process (for at most 1.5 s: the calls that land on this process are its own
/// self-calls), and holds its worker until both processes have their inner answer (bounded:
/// 4 s). The answer is `outer-pid inner-pid calls`. So an inner call that lands on the sibling
/// finds its only worker busy with an `/outer` that waits for this one: without the sibling
/// detection both wait until the deadline, with it the sibling serves it at once on a spare
/// thread.
pub fn sibling_handler(
    req: prefork_pool::http::HttpRequest,
    _ctx: &prefork_pool::Context,
) -> prefork_pool::http::HttpResponse {
    let me = std::process::id().to_string();
    if req.uri().path() != "/outer" {
        return http::Response::new(me.into_bytes());
    }
    let dir = SIBLING_DIR.get().expect("directory set");
    let _ = std::fs::write(dir.join(format!("busy-{me}")), b"");
    wait_marked(dir, "busy-", Duration::from_secs(2));
    let url = format!("http://{}/inner", SELF_ADDR.get().expect("address set"));
    let mut inner = String::new();
    let mut attempts = 0;
    let until = Instant::now() + Duration::from_millis(1500);
    while attempts < 500 && Instant::now() < until {
        attempts += 1;
        // Vary the timing a little: which process accepts a connection depends on scheduling.
        sleep_ms(attempts % 4);
        let answer = ureq::get(&url)
            .header("Connection", "close")
            .config()
            .timeout_global(Some(Duration::from_secs(20)))
            .build()
            .call();
        inner = match answer {
            Ok(r) => r.into_body().read_to_string().unwrap_or_default(),
            Err(e) => {
                return http::Response::builder()
                    .status(502)
                    .body(format!("inner call: {e}").into_bytes())
                    .unwrap()
            }
        };
        if inner != me {
            break;
        }
    }
    let _ = std::fs::write(dir.join(format!("done-{me}")), b"");
    wait_marked(dir, "done-", Duration::from_secs(4));
    http::Response::new(format!("{me} {inner} {attempts}").into_bytes())
}

/// Waits (bounded: 5 s) until every thread of `pid` is stopped (state `T` in `/proc`).
pub fn wait_stopped(pid: i32) {
    let stopped = || {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
            return false;
        };
        tasks.flatten().all(|t| {
            std::fs::read_to_string(t.path().join("stat")).is_ok_and(|stat| {
                stat.rfind(')')
                    .and_then(|i| stat[i + 1..].split_whitespace().next())
                    .is_some_and(|state| state == "T" || state == "t")
            })
        })
    };
    let end = Instant::now() + Duration::from_secs(5);
    while !stopped() && Instant::now() < end {
        sleep_ms(1);
    }
}

/// 2 worker processes x 1 thread, [`sibling_handler`]: two concurrent `/outer` requests, one in
/// each process, whose inner calls over TCP land on the other (busy) process: the sibling is
/// recognised and the call served on a spare thread, well under the 5 s deadline (and the 4 s
/// that an `/outer` holds its worker at most); the warn line names the sibling's pid.
///
/// The two processes accept from one listener, and the kernel tends to give every connection to
/// the same one: to put the second `/outer` in the other process, the first one's process is
/// stopped (SIGSTOP) until the other has accepted it.
fn check_sibling_self_call(m: &mut Master) -> Result<(), String> {
    m.wait_log("2 worker(s) ready", LONG)?;
    let workers = m.wait_workers(LONG, "2 workers", |w| w.len() == 2)?;
    let dir = sibling_dir();
    let addr = m.addr;
    let outer = move || {
        std::thread::spawn(move || {
            let started = Instant::now();
            let r = get(addr, "/outer");
            (r, started.elapsed())
        })
    };
    let wait_busy = |n: usize| {
        let end = Instant::now() + Duration::from_secs(5);
        loop {
            let busy = marked(&dir, "busy-");
            if busy.len() >= n || Instant::now() >= end {
                return busy;
            }
            sleep_ms(2);
        }
    };
    let mut clients = vec![outer()];
    let first = wait_busy(1);
    let routed = match first.iter().next() {
        Some(&p) => {
            // SAFETY: kill(2) of a worker of our master (a grandchild, alive: it runs `/outer`).
            unsafe { libc::kill(p, libc::SIGSTOP) };
            // The signal is asynchronous: until every thread is stopped, its reactor may still
            // accept.
            wait_stopped(p);
            clients.push(outer());
            let both = wait_busy(2);
            // SAFETY: as above; SIGCONT whatever happened.
            unsafe { libc::kill(p, libc::SIGCONT) };
            both
        }
        None => first,
    };
    let out: Vec<_> = clients
        .into_iter()
        .map(|c| c.join().expect("client thread"))
        .collect();
    ensure(routed.len() == 2, || {
        format!("the two `/outer` requests did not run in both processes ({routed:?}): {out:?}")
    })?;
    let mut crossed = 0;
    for (r, took) in &out {
        let body = r
            .as_ref()
            .map_err(|e| format!("an /outer request failed: {e}"))?;
        ensure(*took < Duration::from_secs(3), || {
            format!("an /outer request took {took:?} (deadline 5 s): {body}")
        })?;
        let pids: Vec<i32> = body.split(' ').filter_map(|p| p.parse().ok()).collect();
        ensure(
            pids.len() == 3 && pids[..2].iter().all(|p| workers.contains(p)),
            || format!("{body:?}: not `outer-pid inner-pid calls` of the workers {workers:?}"),
        )?;
        crossed += usize::from(pids[0] != pids[1]);
    }
    ensure(crossed >= 1, || {
        format!("no inner call landed on the sibling process: {out:?}")
    })?;
    let log = m.log_text();
    ensure(log.contains("from sibling worker pid "), || {
        "no warn line names the sibling worker".into()
    })?;
    ensure(log.contains("`GET /inner`"), || {
        "the warn line does not name the route".into()
    })?;
    m.signal(libc::SIGTERM);
    let code = m.wait_exit(LONG)?;
    ensure(code == 0, || format!("exit status {code}"))
}

pub fn serve_http() -> Result<(), String> {
    let mut m = start_master(
        "http",
        |_| {},
        |b, l| {
            b.listener(l)
                .workers(2)
                .request_grace(Duration::from_millis(500))
        },
        |b| {
            b.serve_http(
                |s| {
                    s.pool(|p| p.workers(2).deadline(Duration::from_millis(1000)))
                        .access_log(false)
                        .max_spare(0)
                },
                || Ok::<_, String>(http_handler),
            )
        },
    );
    let r = check_serve_http(&mut m);
    finish(&mut m, r)
}

pub fn serve_http_term_under_load() -> Result<(), String> {
    let mut m = start_master(
        "http-term",
        |_| {},
        |b, l| b.listener(l).workers(2),
        |b| {
            b.serve_http(
                |s| s.pool(|p| p.workers(2)).access_log(false).max_spare(0),
                || Ok::<_, String>(http_handler),
            )
        },
    );
    let r = term_under_load(&mut m);
    finish(&mut m, r)
}

pub fn serve_http_max_requests() -> Result<(), String> {
    with_master_run(
        "http-recycle",
        |b| b.workers(1).max_requests(5),
        |b| {
            b.serve_http(
                |s| s.pool(|p| p.workers(2)).access_log(false).max_spare(0),
                || Ok::<_, String>(http_handler),
            )
        },
        max_requests_recycle,
    )
}

pub fn serve_http_sibling_self_call() -> Result<(), String> {
    sibling_self_call(None)
}

/// The same with the workers switched to `nobody` (`user`): the switch leaves them dumpable, so
/// each can still read its sibling's `/proc/<pid>/fd`.
pub fn serve_http_sibling_self_call_as_nobody() -> Result<(), String> {
    if !crate::deploy::root_or_skip()? {
        return Ok(());
    }
    sibling_self_call(Some("nobody"))
}

fn sibling_self_call(user: Option<&'static str>) -> Result<(), String> {
    let dir = sibling_dir();
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create the test's temp dir");
    if user.is_some() {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777))
            .map_err(|e| e.to_string())?;
    }
    let sibling_dir_of_test = dir.clone();
    let mut m = start_master(
        "http-sibling",
        |l| {
            let _ = SELF_ADDR.set(l.local_addr().expect("listener address"));
            let _ = SIBLING_DIR.set(sibling_dir_of_test);
        },
        move |b, l| match user {
            Some(u) => b.listener(l).workers(2).user(u),
            None => b.listener(l).workers(2),
        },
        |b| {
            b.serve_http(
                |s| {
                    // Two spare threads: one for this process's own self-call, one
                    // for the sibling's, which may arrive at the same time.
                    s.pool(|p| p.workers(1).deadline(Duration::from_secs(5)))
                        .max_spare(2)
                        .access_log(false)
                },
                || Ok::<_, String>(sibling_handler),
            )
        },
    );
    let r = check_sibling_self_call(&mut m);
    let r = finish(&mut m, r);
    let _ = std::fs::remove_dir_all(&dir);
    r
}

/// A graceful stop keeps its word (process mode): SIGTERM while one client has a kept-alive
/// connection idle since its last answer and another has sent half a body and stalls. The idle
/// connection is closed at the start of the drain (an end of file before the stalled upload gets
/// anything); the upload is answered 503 at the worker's graceful timeout, never closed without
/// an answer; the master exits 0.
pub fn serve_http_term_stalled_upload() -> Result<(), String> {
    let mut m = start_master(
        "http-stalled",
        |_| {},
        |b, l| {
            b.listener(l)
                .workers(1)
                .graceful_timeout(Duration::from_secs(4))
        },
        |b| {
            b.serve_http(
                // A body timeout longer than the graceful timeout: only the stop can end it.
                |s| {
                    s.pool(|p| p.workers(2))
                        .access_log(false)
                        .max_spare(0)
                        .body_timeout(Duration::from_secs(60))
                },
                || Ok::<_, String>(http_handler),
            )
        },
    );
    let result = (|| {
        m.wait_log("1 worker(s) ready", LONG)?;
        let mut idle = TcpStream::connect(m.addr).map_err(|e| e.to_string())?;
        idle.set_read_timeout(Some(LONG)).ok();
        idle.write_all(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
            .map_err(|e| e.to_string())?;
        let mut buf = [0u8; 1024];
        let n = idle.read(&mut buf).map_err(|e| e.to_string())?;
        ensure(buf[..n].starts_with(b"HTTP/1.1 200"), || {
            format!("the first answer: {:?}", String::from_utf8_lossy(&buf[..n]))
        })?;
        let mut upload = TcpStream::connect(m.addr).map_err(|e| e.to_string())?;
        upload.set_read_timeout(Some(LONG)).ok();
        upload
            .write_all(b"POST /up HTTP/1.1\r\nHost: t\r\nContent-Length: 1000\r\n\r\nhalf")
            .map_err(|e| e.to_string())?;
        // Idle for longer than the drain's grace for a connection just answered.
        sleep_ms(1500);
        let term_at = Instant::now();
        m.signal(libc::SIGTERM);
        let eof = idle.read(&mut buf);
        let idle_closed = term_at.elapsed();
        let mut answer = String::new();
        let read = upload.read_to_string(&mut answer);
        let upload_answered = term_at.elapsed();
        let code = m.wait_exit(LONG)?;
        println!(
            "  idle closed after {idle_closed:?} ({eof:?}), upload answered after \
             {upload_answered:?}: {:?}",
            answer.lines().next()
        );
        ensure(matches!(eof, Ok(0)), || {
            format!("the idle connection read {eof:?}, not an end of file")
        })?;
        read.map_err(|e| format!("reading the upload's answer: {e}"))?;
        ensure(answer.starts_with("HTTP/1.1 503"), || {
            format!("the stalled upload got {answer:?}, not a 503")
        })?;
        ensure(idle_closed < upload_answered, || "order".into())?;
        ensure(code == 0, || format!("exit status {code}"))
    })();
    finish(&mut m, result)
}
