//! Balanced, load-aware accept between the worker processes of `serve_http`: request shares under
//! keep-alive load (wrk), and new connections left to the siblings of a process whose every
//! handler thread is busy. (The tower mode's twins, `service/balance.rs`, share the helpers.)

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use prefork_pool::prefork::SupervisorBuilder;

use crate::helpers::*;
use crate::tools;
use crate::wrk::{wrk, Wrk};

/// Where `/block` marks its process (`blocked-<pid>`) and waits for `release`; set in the forked
/// master, before its workers are forked.
static BLOCK_DIR: OnceLock<PathBuf> = OnceLock::new();

fn block_dir() -> PathBuf {
    std::env::temp_dir().join(format!("prefork-test-{}-block", std::process::id()))
}

/// The block dir, empty (remove it when done).
pub fn fresh_block_dir() -> Result<PathBuf, String> {
    let dir = block_dir();
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    Ok(dir)
}

/// `/` answers the worker's pid; `/wait` too, after 20 ms; `/block` marks its process blocked and holds its thread until the
/// test releases it (bounded: 20 s).
pub fn pid_handler(
    req: prefork_pool::http::HttpRequest,
    _ctx: &prefork_pool::Context,
) -> prefork_pool::http::HttpResponse {
    let me = std::process::id();
    if req.uri().path() == "/wait" {
        sleep_ms(20);
    }
    if req.uri().path() == "/block" {
        block_here();
    }
    http::Response::new(format!("{me}\n").into_bytes())
}

/// `/block`: marks this process blocked (`blocked-<pid>` in the block dir) and holds the calling
/// thread until the test releases it (bounded: 20 s).
pub fn block_here() {
    if let Some(dir) = BLOCK_DIR.get() {
        let me = std::process::id();
        let _ = std::fs::write(dir.join(format!("blocked-{me}")), b"");
        let end = Instant::now() + Duration::from_secs(20);
        while !dir.join("release").exists() && Instant::now() < end {
            sleep_ms(5);
        }
    }
}

/// Sets the block dir in the forked master (before its workers are forked): `start_master`'s
/// setup; `dir` is the test process's `block_dir()` (the master's pid differs).
pub fn set_block_dir(dir: PathBuf) {
    let _ = BLOCK_DIR.set(dir);
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
        move |_| set_block_dir(dir),
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

/// Busiest / least busy request share ≤ 1.3 with 2 and 4 processes at 16 and 64 keep-alive
/// connections (the bound), on a load where the server decides the shares: each request
/// waits 20 ms (a database call), and each process has more handler threads than connections, so
/// a process serves in proportion to the connections it took, not to the CPU time the kernel
/// gives it. Measured over 5 s after a 1 s warm-up run, up to 3 times (a run on this noisy machine
/// may be off). Without the gate, whichever process wakes first takes a burst of connections
/// (one held 51 of 80), and this fails.
///
/// Then the same with one handler thread per process and a request that costs nothing: our
/// processes saturate the CPU, and the request shares follow the CPU time the kernel gives each
/// (see `balance_cpu` below).
pub fn balance() -> Result<(), String> {
    if tools::tool_or_skip(&tools::WRK)?.is_none() {
        return Ok(());
    }
    for procs in [2, 4] {
        let mut m = http_master("balance", procs, 40, |b| b);
        let result = (|| {
            m.wait_log(&format!("{procs} worker(s) ready"), LONG)?;
            let pids = pids(&mut m, procs)?;
            for conns in [16, 64] {
                wrk(m.addr, 2, conns, Duration::from_secs(1), "/wait")?.clean()?;
                measure_shares(m.addr, &pids, conns)?;
            }
            m.signal(libc::SIGTERM);
            let code = m.wait_exit(LONG)?;
            ensure(code == 0, || format!("exit status {code}"))
        })();
        finish(&mut m, result)?;
    }
    balance_cpu()
}

pub fn pids(m: &mut Master, procs: usize) -> Result<Vec<i32>, String> {
    Ok(m.wait_workers(LONG, "the workers", |w| w.len() == procs)?
        .into_iter()
        .collect())
}

/// One `-c{conns}` measure of the request shares of `pids` on `/wait` (see [`balance`]):
/// busiest / least ≤ 1.3 in one of up to 3 runs of 5 s.
pub fn measure_shares(addr: SocketAddr, pids: &[i32], conns: usize) -> Result<(), String> {
    let procs = pids.len();
    let mut last = String::new();
    for attempt in 1..=3 {
        let load = Wrk::start(addr, 2, conns, Duration::from_secs(5), "/wait")?;
        let split = sample_connections(&load, addr, pids);
        let run = load.finish()?;
        run.clean()?;
        let ratio = run.imbalance(procs);
        last = format!(
            "{procs} processes at -c{conns}: {} requests, shares {} (busiest / least \
             {ratio:.2}), connections (summed samples) {split:?}",
            run.requests(),
            run.percent()
        );
        println!("  balance: {last}");
        if ratio <= 1.3 {
            return Ok(());
        }
        println!("  (attempt {attempt}: over 1.3; again)");
    }
    Err(format!("{last}: busiest / least over 1.3 in 3 runs"))
}

/// The connections each of `pids` holds while `load` runs, summed over samples every 250 ms
/// from 1 s on (they move: a connection is closed after `KEEPALIVE_REQUESTS` requests).
fn sample_connections(load: &Wrk, addr: SocketAddr, pids: &[i32]) -> Vec<u64> {
    let mut split = vec![0u64; pids.len()];
    sleep_ms(1000);
    for _ in 0..14 {
        if load.done() {
            break;
        }
        for (n, held) in split.iter_mut().zip(established(pids, addr.port())) {
            *n += held as u64;
        }
        sleep_ms(250);
    }
    split
}

/// Busiest / least with 2 and 4 processes of one handler thread each, at 16 and 64 keep-alive
/// connections to `/`, which costs nothing: our processes saturate the CPU (with wrk, on a
/// 2-core machine), and each serves what the kernel's CPU split lets it. That split is not fair
/// between processes on a machine shared with other programs (measured: up to 1.4–1.8× between
/// our 4 processes, persistent over seconds, with their connections even), and the server cannot
/// buy a process CPU time with connections: every handler thread is runnable 75–85 % of the
/// time already. So this asserts the request shares meet the 1.3 bound in one of up to 3 runs,
/// or else that each run over it had a cause outside the server: the process that served least
/// held at least its share of the connections ÷ 1.3 and did the same work per CPU tick (within
/// 1.3) as the others, so the kernel's CPU split made the difference. It fails when the server
/// was at fault in a run: the process that served least was starved of connections or did less
/// work per CPU tick. Since the connection lane (a request runs on the worker
/// thread that reads it, the reactor thread stays asleep) the kernel's split has been even
/// enough: measured 1.01–1.36 at 2 and 4 processes, -c16 and -c64.
fn balance_cpu() -> Result<(), String> {
    for procs in [2, 4] {
        let mut m = http_master("balance-cpu", procs, 1, |b| b);
        let result = (|| {
            m.wait_log(&format!("{procs} worker(s) ready"), LONG)?;
            let pids = pids(&mut m, procs)?;
            for conns in [16, 64] {
                wrk(m.addr, 2, conns, Duration::from_secs(1), "/")?.clean()?;
                measure_cpu_bound(m.addr, &pids, conns)?;
            }
            m.signal(libc::SIGTERM);
            let code = m.wait_exit(LONG)?;
            ensure(code == 0, || format!("exit status {code}"))
        })();
        finish(&mut m, result)?;
    }
    Ok(())
}

/// One `-c{conns}` measure on `/` with one thread per process (see [`balance_cpu`]).
fn measure_cpu_bound(addr: SocketAddr, pids: &[i32], conns: usize) -> Result<(), String> {
    let procs = pids.len();
    let mut last = String::new();
    let mut server_at_fault = false;
    for attempt in 1..=3 {
        let cpu_before: Vec<u64> = pids.iter().map(|&p| cpu_ticks(p)).collect();
        let load = Wrk::start(addr, 2, conns, Duration::from_secs(5), "/")?;
        let split = sample_connections(&load, addr, pids);
        let run = load.finish()?;
        run.clean()?;
        let cpu: Vec<u64> = pids
            .iter()
            .zip(&cpu_before)
            .map(|(&p, b)| cpu_ticks(p).saturating_sub(*b))
            .collect();
        let ratio = run.imbalance(procs);
        let ratio_of = |v: &[u64]| {
            *v.iter().max().unwrap_or(&0) as f64 / (*v.iter().min().unwrap_or(&0)).max(1) as f64
        };
        let cpu_ratio = ratio_of(&cpu);
        let served: Vec<u64> = pids
            .iter()
            .map(|p| *run.shares.get(p).unwrap_or(&0))
            .collect();
        let least = (0..procs).min_by_key(|&i| served[i]).unwrap_or(0);
        let mean_conns = split.iter().sum::<u64>() as f64 / procs as f64;
        let least_had_conns = split[least] as f64 >= mean_conns / 1.3;
        // Requests per CPU tick: whether the processes did the same work for the CPU they got.
        let per_tick: Vec<f64> = served
            .iter()
            .zip(&cpu)
            .map(|(&n, &t)| n as f64 / t.max(1) as f64)
            .collect();
        let work_ratio = per_tick.iter().fold(0.0, |a: f64, &b| a.max(b))
            / per_tick
                .iter()
                .fold(f64::INFINITY, |a: f64, &b| a.min(b))
                .max(1e-9);
        let report = format!(
            "{procs} processes x 1 thread, -c{conns}: {} requests, shares {} (busiest / least \
             {ratio:.2}); connections (summed samples) {split:?}, CPU ticks {cpu:?} \
             ({cpu_ratio:.2}), requests per tick within {work_ratio:.2}",
            run.requests(),
            run.percent()
        );
        println!("  balance: {report}");
        if ratio <= 1.3 {
            return Ok(());
        }
        last = if least_had_conns && work_ratio <= 1.3 {
            format!("{report}: the kernel's CPU split (connections even, same work per tick)")
        } else {
            server_at_fault = true;
            format!("{report}: the process that served least was starved of connections, or did less work per CPU tick")
        };
        println!("  (attempt {attempt}: over 1.3; again)");
    }
    if !server_at_fault {
        // What the server controls held in every run: each process had its share of the
        // connections and did the same work per CPU tick; the shares followed the CPU the
        // kernel gave each process on a machine busy with other programs (a benchmark's
        // matter: benches/peers/balance.sh), not the accept gate.
        println!("  balance: request shares over 1.3 from the kernel's CPU split only; {last}");
        return Ok(());
    }
    Err(format!(
        "busiest / least request share over 1.3 in 3 runs, the server at fault in at least one; \
         the last: {last}"
    ))
}

/// User + system CPU time of process `pid` (every thread), in clock ticks.
fn cpu_ticks(pid: i32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    // After the command: state is field 3, utime 14 and stime 15 (1-based, proc(5)).
    let field = |n: usize| fields.get(n - 3).and_then(|f| f.parse::<u64>().ok());
    field(14).unwrap_or(0) + field(15).unwrap_or(0)
}

/// TCP connections to local `port` that each of `pids` holds open (established); the table is
/// read once.
fn established(pids: &[i32], port: u16) -> Vec<usize> {
    let inodes: Vec<BTreeSet<u64>> = pids
        .iter()
        .map(|pid| {
            std::fs::read_dir(format!("/proc/{pid}/fd"))
                .map(|d| {
                    d.flatten()
                        .filter_map(|e| {
                            let link = std::fs::read_link(e.path()).ok()?;
                            let link = link.to_string_lossy();
                            link.strip_prefix("socket:[")?
                                .strip_suffix(']')?
                                .parse()
                                .ok()
                        })
                        .collect()
                })
                .unwrap_or_default()
        })
        .collect();
    let mut held = vec![0; pids.len()];
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
    let port = format!("{port:04X}");
    for line in table.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        // local_address is `IP:PORT` in hex, st 01 is ESTABLISHED, inode is field 10.
        if f.len() > 9 && f[1].rsplit(':').next() == Some(port.as_str()) && f[3] == "01" {
            if let Ok(inode) = f[9].parse::<u64>() {
                for (n, set) in held.iter_mut().zip(&inodes) {
                    *n += usize::from(set.contains(&inode));
                }
            }
        }
    }
    held
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

/// `/block` on one of `procs` processes of one thread each (its only thread blocked): 40 new
/// connections go to the others at once (none waits behind it), and every other process serves
/// some. Which of two idle processes accepts a connection is the kernel's pick: on a loaded
/// machine one of them may not be scheduled for the first 40, so up to 400 are sent (in order,
/// one at a time) until each idle process served one.
pub fn check_load_aware(m: &mut Master, procs: usize) -> Result<(), String> {
    m.wait_log(&format!("{procs} worker(s) ready"), LONG)?;
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
    // Every thread of `blocked` is busy: new connections go to the others, at once.
    let mut served = std::collections::BTreeMap::<i32, u32>::new();
    let result: Result<(), String> = (|| {
        for sent in 0..400 {
            if sent >= 40 && served.len() == procs - 1 {
                break;
            }
            let (pid, took) = pid_of(addr, "/")?;
            ensure(pid != blocked, || {
                format!("a new request went to process {pid}, whose only thread is blocked")
            })?;
            ensure(took < Duration::from_secs(2), || {
                format!("a request took {took:?} while other processes had an idle thread")
            })?;
            *served.entry(pid).or_default() += 1;
        }
        ensure(served.len() == procs - 1, || {
            format!(
                "the requests were served by {served:?} (pid: count), not by every idle process"
            )
        })?;
        println!("  load-aware: {procs} processes, {blocked} blocked: new connections served by {served:?}");
        Ok(())
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
    let dir = fresh_block_dir()?;
    let mut m = http_master("load-aware", 3, 1, |b| b);
    let result = check_load_aware(&mut m, 3);
    let _ = std::fs::remove_dir_all(&dir);
    finish(&mut m, result)
}
