//! Balance in the tower mode (`Supervisor::serve_service`), the twins of `serve_http`'s
//! (`balance.rs`, whose helpers and assertions these share): request shares of 4 processes of
//! one runtime thread each under keep-alive load (wrk), and new connections left to the
//! siblings of a process whose only runtime thread is blocked.

use std::io::Write;
use std::net::TcpStream;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use prefork_pool::prefork::{ServiceBody, ServiceConfig};

use crate::balance::{block_here, check_load_aware, fresh_block_dir, measure_shares, pids};
use crate::helpers::*;
use crate::service::ops::{get_with, keep_alive_get, text, ServiceFn};
use crate::tools;
use crate::wrk::wrk;

/// `pid_handler`'s routes as an async service: `/` answers the worker's pid; `/wait` too, after
/// 20 ms on the runtime's timer (a database call through an async client); `/hold` too, after
/// 3 s; `/block` blocks the runtime's thread until the test releases it (`balance::block_here`).
fn pid_app() -> ServiceFn {
    ServiceFn::new(|req: http::Request<ServiceBody>| async move {
        match req.uri().path() {
            "/wait" => tokio::time::sleep(Duration::from_millis(20)).await,
            "/hold" => tokio::time::sleep(Duration::from_secs(3)).await,
            "/block" => block_here(),
            _ => {}
        }
        text(format!("{}\n", std::process::id()))
    })
}

/// A master running `serve_service(pid_app)` in `procs` processes of 1 runtime thread each (no
/// access log: the test's load would fill it).
fn pid_master(name: &str, procs: usize, dir: PathBuf) -> Master {
    start_master(
        name,
        move |_| crate::balance::set_block_dir(dir),
        |b, l| b.listener(l).workers(procs),
        |b| {
            b.serve_service(
                ServiceConfig::new()
                    .threads(1)
                    .deadline(Duration::from_secs(30))
                    .access_log(false),
                || Ok::<_, String>(pid_app()),
            )
        },
    )
}

/// 4 processes × 1 runtime thread at 64 keep-alive connections (wrk, 2 threads) on `/wait`:
/// busiest / least request share ≤ 1.3, `serve_http`'s assertion (`measure_shares`: 5 s runs
/// after a 1 s warm-up, up to 3 of them). Then a process busy with a request as long as its
/// runtime threads (`/hold`, 3 s on the runtime's timer: the thread is free, but the request
/// fills the process's share and none finishes) gets none of 12 new connections, each answered
/// at once by a sibling: the accept gate's doing (without it the kernel gives the busy process
/// about a quarter). And, on a fresh master of 4 such processes, one whose only runtime thread is
/// blocked (`/block`, a synchronous wait) gets none of 40 new connections while its siblings can
/// take them: each is answered at once, by every one of the 3 others (`check_load_aware`, as
/// `serve_http`'s; here it also
/// holds without the gate, since the blocked runtime runs no accept, and the lifeline takes a
/// connection only after it waited 250 ms in the queue with no sibling taking it).
pub fn balance_c64() -> Result<(), String> {
    if tools::tool_or_skip(&tools::WRK)?.is_none() {
        return Ok(());
    }
    let dir = fresh_block_dir()?;
    let mut m = pid_master("service-balance-c64", 4, dir.clone());
    let result = (|| {
        m.wait_log("4 worker(s) ready", LONG)?;
        let pids = pids(&mut m, 4)?;
        wrk(m.addr, 2, 64, Duration::from_secs(1), "/wait")?.clean()?;
        measure_shares(m.addr, &pids, 64)?;
        busy_gets_none(&m)?;
        m.signal(libc::SIGTERM);
        let code = m.wait_exit(LONG)?;
        ensure(code == 0, || format!("exit status {code}"))
    })();
    let result = finish(&mut m, result);
    // A fresh master, as `serve_http`'s: after the load above, the gates weigh each process's
    // measured request rate, and the slowest measured takes the ties (not every idle one).
    let result = result.and_then(|()| {
        let mut m = pid_master("service-load-aware", 4, dir.clone());
        let result = check_load_aware(&mut m, 4);
        finish(&mut m, result)
    });
    let _ = std::fs::remove_dir_all(&dir);
    result
}

/// A process running a 3 s request on its only runtime thread (its share of requests full, none
/// finishing) gets none of 12 new connections; each is answered within 2 s.
fn busy_gets_none(m: &Master) -> Result<(), String> {
    let mut busy = TcpStream::connect(m.addr).map_err(|e| e.to_string())?;
    let (_, busy_pid) = keep_alive_get(&mut busy, "/")?;
    let busy_pid = busy_pid.trim().to_string();
    busy.write_all(b"GET /hold HTTP/1.1\r\nHost: t\r\n\r\n")
        .map_err(|e| e.to_string())?;
    // The gates read the table every 100 ms: by then the busy process finishes nothing.
    sleep_ms(400);
    for i in 0..12 {
        let asked = Instant::now();
        let (s, body) = get_with(m.addr, "/", "")?;
        let took = asked.elapsed();
        let pid = body.rsplit("\r\n\r\n").next().unwrap_or("").trim();
        ensure(s == 200 && pid != busy_pid, || {
            format!(
                "new connection {i}: {s} from pid {pid}, which runs a 3 s request on its only \
                 runtime thread, while 3 siblings could take it"
            )
        })?;
        ensure(took < Duration::from_secs(2), || {
            format!("new connection {i} took {took:?} while 3 siblings were idle")
        })?;
    }
    let (s, body) = keep_alive_get(&mut busy, "/")?;
    ensure(s == 200 && body.trim() == busy_pid, || {
        format!("the 3 s request: {s} {body:?}")
    })
}
