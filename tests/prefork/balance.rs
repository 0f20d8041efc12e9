//! Balanced, load-aware accept between the worker processes of `serve_http`: request shares under
//! keep-alive load (wrk), and new connections left to the siblings of a process whose every
//! handler thread is busy.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use prefork_pool::prefork::SupervisorBuilder;

use crate::helpers::*;
use crate::wrk::{wrk, Wrk};

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
/// keep-alive connections, measured over 5 s after a 1 s warm-up run (the processes' first
/// requests, and their request rates not measured yet, are not counted).
///
/// Each process has one handler thread, kept busy by its connections: its requests follow the CPU
/// time the kernel gives it. On an overloaded machine (other programs compiling beside the test)
/// that is not fair between processes, whatever the server does: then, if the server's own part
/// held (the process that served least held at least its share of the connections / 1.3, and
/// the requests per CPU tick of the processes within the same bound, 1.3: the shares followed the
/// CPU time the kernel gave each), the measure is taken again, up to 4 times, and a run where the scheduler never
/// gave a fair split is reported, not failed.
pub fn balance() -> Result<(), String> {
    for procs in [2, 4] {
        let mut m = http_master("balance", procs, 1, |b| b);
        let result = (|| {
            m.wait_log(&format!("{procs} worker(s) ready"), LONG)?;
            let pids: Vec<i32> = m
                .wait_workers(LONG, "the workers", |w| w.len() == procs)?
                .into_iter()
                .collect();
            for conns in [16, 64] {
                wrk(m.addr, 2, conns, Duration::from_secs(1), "/")?.clean()?;
                measure_balance(m.addr, &pids, conns)?;
            }
            m.signal(libc::SIGTERM);
            let code = m.wait_exit(LONG)?;
            ensure(code == 0, || format!("exit status {code}"))
        })();
        finish(&mut m, result)?;
    }
    Ok(())
}

/// One `-c{conns}` measure of the request shares of `pids` (see [`balance`]).
fn measure_balance(addr: SocketAddr, pids: &[i32], conns: usize) -> Result<(), String> {
    let procs = pids.len();
    for attempt in 1..=4 {
        let cpu_before: Vec<u64> = pids.iter().map(|&p| cpu_ticks(p)).collect();
        let load = Wrk::start(addr, 2, conns, Duration::from_secs(5), "/")?;
        // The connections each process holds, summed over samples every 250 ms from 1 s to 4.5 s
        // (they move: a connection is closed after `KEEPALIVE_REQUESTS` requests).
        let mut split = vec![0u64; procs];
        sleep_ms(1000);
        for _ in 0..14 {
            for (n, &p) in split.iter_mut().zip(pids) {
                *n += established(p, addr.port()) as u64;
            }
            sleep_ms(250);
        }
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
        // Whether the process that served least held its share of the connections (the gate
        // did not starve it).
        let served: Vec<u64> = pids
            .iter()
            .map(|p| *run.shares.get(p).unwrap_or(&0))
            .collect();
        let least = (0..procs).min_by_key(|&i| served[i]).unwrap_or(0);
        let mean_conns = split.iter().sum::<u64>() as f64 / procs as f64;
        let least_had_conns = split[least] as f64 >= mean_conns / 1.3;
        // Requests per CPU tick: whether the processes did the same work for the CPU they got.
        let per_tick: Vec<f64> = pids
            .iter()
            .zip(&cpu)
            .map(|(p, &t)| *run.shares.get(p).unwrap_or(&0) as f64 / t.max(1) as f64)
            .collect();
        let work_ratio = per_tick.iter().fold(0.0, |a: f64, &b| a.max(b))
            / per_tick
                .iter()
                .fold(f64::INFINITY, |a: f64, &b| a.min(b))
                .max(1e-9);
        println!(
            "  balance: {procs} processes, -c{conns}: {} requests, shares {} (busiest / least \
             {ratio:.2}); connections (summed samples) {split:?}, CPU ticks {cpu:?} \
             ({cpu_ratio:.2}), requests per tick {work_ratio:.2}",
            run.requests(),
            run.percent()
        );
        if ratio <= 1.3 {
            return Ok(());
        }
        // The server's part held (connections even, the same work per CPU tick in every process),
        // and the shares followed the CPU time the kernel gave each process.
        // (Then the shares would have held the bound with an even CPU split.)
        let unfair_cpu = least_had_conns && work_ratio <= 1.3;
        ensure(unfair_cpu, || {
            format!(
                "{procs} processes at -c{conns}: shares {} (busiest / least {ratio:.2} > 1.3), \
                 connections {split:?}, CPU ticks {cpu:?}",
                run.percent()
            )
        })?;
        println!("  (attempt {attempt}: the kernel gave the processes unequal CPU time; again)");
    }
    println!(
        "  NOT MEASURED: {procs} processes at -c{conns}: the machine is overloaded (the CPU time \
         split unevenly between the processes in every attempt, with their connections even)"
    );
    Ok(())
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

/// TCP connections to local `port` that process `pid` holds open (established).
fn established(pid: i32, port: u16) -> usize {
    let inodes: BTreeSet<u64> = std::fs::read_dir(format!("/proc/{pid}/fd"))
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
        .unwrap_or_default();
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
    table
        .lines()
        .skip(1)
        .filter(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            // local_address is `IP:PORT` in hex, st 01 is ESTABLISHED, inode is field 10.
            f.len() > 9
                && f[1].rsplit(':').next() == Some(format!("{port:04X}").as_str())
                && f[3] == "01"
                && f[9].parse().is_ok_and(|i: u64| inodes.contains(&i))
        })
        .count()
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
