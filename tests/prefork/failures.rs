//! Workers that fail, hang, run past their deadline or retire, and what the master does: boot
//! errors, restart intensity, heartbeat, deadline, graceful and boot timeouts, recycling.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use prefork_pool::prefork::WorkerEnv;

use crate::helpers::*;
use crate::workers::pool_worker;

fn check_boot_error(m: &mut Master) -> Result<(), String> {
    let code = m.wait_exit(LONG)?;
    let log = m.log_text();
    ensure(code == 3, || format!("exit status {code}, expected 3"))?;
    ensure(log.contains("boot error"), || {
        "no `boot error` in the log".into()
    })?;
    ensure(log.contains("database unreachable at db:5432"), || {
        "the app's error is not in the log".into()
    })?;
    let boots = log.matches("booting worker").count();
    ensure(boots <= 2, || {
        format!("{boots} workers booted: a respawn loop")
    })
}

fn check_restart_intensity(m: &mut Master) -> Result<(), String> {
    let code = m.wait_exit(LONG)?;
    let log = m.log_text();
    ensure(code == 1, || format!("exit status {code}, expected 1"))?;
    ensure(log.contains("restart intensity exceeded"), || {
        "no `restart intensity exceeded` in the log".into()
    })?;
    ensure(log.contains("exited with code 7 on its own"), || {
        "the last exit is not named".into()
    })?;
    let boots = log.matches("booting worker").count();
    ensure(boots == 4, || {
        format!("{boots} boots, expected 1 + 3 restarts")
    })
}

pub fn heartbeat_kill(m: &mut Master) -> Result<(), String> {
    m.wait_log("2 worker(s) ready", LONG)?;
    let before = m.wait_workers(LONG, "2 workers", |w| w.len() == 2)?;
    let addr = m.addr;
    let hang = std::thread::spawn(move || get(addr, "/hang"));
    m.wait_log("killed by the supervisor after a heartbeat timeout", LONG)?;
    let _ = hang.join();
    m.wait_workers(LONG, "2 workers, one new", |w| w.len() == 2 && w != &before)?;
    get(m.addr, "/")?;
    let log = m.log_text();
    ensure(log.contains("heartbeat timeout: no heartbeat for"), || {
        "no `heartbeat timeout: no heartbeat for` line".into()
    })?;
    ensure(!log.contains("out of memory"), || {
        "the log blames memory for our own kill".into()
    })?;
    m.signal(libc::SIGTERM);
    let code = m.wait_exit(LONG)?;
    ensure(code == 0, || format!("exit status {code}"))
}

pub fn deadline_kill(m: &mut Master) -> Result<(), String> {
    m.wait_log("1 worker(s) ready", LONG)?;
    let addr = m.addr;
    let stuck = std::thread::spawn(move || get(addr, "/stuck"));
    m.wait_log("killed by the supervisor after a deadline timeout", LONG)?;
    let _ = stuck.join();
    let log = m.log_text();
    ensure(log.contains("GET /stuck HTTP/1.0"), || {
        "the request line is not in the log".into()
    })?;
    m.wait_log("booting worker 2", LONG)?;
    let end = Instant::now() + LONG;
    while get(m.addr, "/").is_err() {
        ensure(Instant::now() < end, || "no answer after the kill".into())?;
        sleep_ms(100);
    }
    m.signal(libc::SIGTERM);
    let code = m.wait_exit(LONG)?;
    ensure(code == 0, || format!("exit status {code}"))
}

pub fn max_requests_recycle(m: &mut Master) -> Result<(), String> {
    m.wait_log("1 worker(s) ready", LONG)?;
    let mut pids = BTreeSet::new();
    for i in 0..30 {
        let body = get(m.addr, "/").map_err(|e| format!("request {i}: {e}"))?;
        pids.insert(body);
        sleep_ms(20);
    }
    ensure(pids.len() >= 3, || {
        format!("30 requests with max_requests 5 were served by {pids:?}")
    })?;
    m.wait_log("retires after 5 requests", LONG)?;
    m.signal(libc::SIGTERM);
    let code = m.wait_exit(LONG)?;
    ensure(code == 0, || format!("exit status {code}"))
}

pub fn graceful_timeout_kills(m: &mut Master) -> Result<(), String> {
    m.wait_log("1 worker(s) ready", LONG)?;
    let addr = m.addr;
    let slow = std::thread::spawn(move || get(addr, "/sleep/20000"));
    sleep_ms(300);
    let started = Instant::now();
    m.signal(libc::SIGTERM);
    let code = m.wait_exit(LONG)?;
    let took = started.elapsed();
    let _ = slow.join();
    ensure(code == 0, || format!("exit status {code}"))?;
    ensure(took < Duration::from_secs(15), || {
        format!("graceful_timeout 1 s, but the stop took {took:?}")
    })?;
    m.wait_log("after it was told to stop: sending SIGKILL", LONG)?;
    m.wait_log(
        "killed by SIGKILL sent by the supervisor after the graceful timeout",
        LONG,
    )
}

fn check_boot_timeout(m: &mut Master) -> Result<(), String> {
    let code = m.wait_exit(LONG)?;
    let log = m.log_text();
    ensure(code == 3, || format!("exit status {code}, expected 3"))?;
    ensure(
        log.contains("is not ready") && log.contains("boot_timeout"),
        || "no boot timeout error in the log".into(),
    )?;
    let boots = log.matches("booting worker").count();
    ensure(boots == 1, || format!("{boots} boots: a respawn loop"))
}

fn check_pool_deadline_then_kill(m: &mut Master) -> Result<(), String> {
    m.wait_log("1 worker(s) ready", LONG)?;
    let first = get(m.addr, "/")?;
    let started = Instant::now();
    let mut conn = TcpStream::connect(m.addr).map_err(|e| e.to_string())?;
    conn.set_read_timeout(Some(Duration::from_secs(20))).ok();
    conn.write_all(b"GET /never HTTP/1.0\r\n\r\n")
        .map_err(|e| e.to_string())?;
    let mut resp = String::new();
    conn.read_to_string(&mut resp).map_err(|e| e.to_string())?;
    let took = started.elapsed();
    ensure(resp.starts_with("HTTP/1.1 504"), || {
        format!("the stuck request got {resp:?}, not 504 from the watchdog")
    })?;
    ensure(took < Duration::from_secs(5), || {
        format!("the 504 took {took:?} (deadline 300 ms)")
    })?;
    m.wait_log("killed by the supervisor after a deadline timeout", LONG)?;
    ensure(m.log_text().contains("GET /never HTTP/1.0"), || {
        "the stuck request line is not in the log".into()
    })?;
    let end = Instant::now() + LONG;
    let second = loop {
        if let Ok(b) = get(m.addr, "/") {
            if b != first {
                break b;
            }
        }
        ensure(Instant::now() < end, || {
            "no answer from a new worker".into()
        })?;
        sleep_ms(100);
    };
    ensure(second != first, || {
        "the stuck worker was not replaced".into()
    })?;
    m.signal(libc::SIGTERM);
    let code = m.wait_exit(LONG)?;
    ensure(code == 0, || format!("exit status {code}"))
}

pub fn boot_error() -> Result<(), String> {
    let mut m = start_master(
        "boot",
        |_| {},
        |b, l| b.listener(l).workers(2),
        |b| {
            b.run(|| {
                Err::<fn(&mut WorkerEnv) -> i32, _>(
                    "database unreachable at db:5432 (connection refused)",
                )
            })
        },
    );
    let r = check_boot_error(&mut m);
    finish(&mut m, r)
}

pub fn restart_intensity() -> Result<(), String> {
    let mut m = start_master(
        "intensity",
        |_| {},
        |b, l| {
            b.listener(l)
                .workers(1)
                .restart_intensity(3, Duration::from_secs(60))
        },
        |b| {
            b.run(|| {
                Ok::<_, String>(|env: &mut WorkerEnv| {
                    env.ready();
                    sleep_ms(150);
                    7
                })
            })
        },
    );
    let r = check_restart_intensity(&mut m);
    finish(&mut m, r)
}

pub fn boot_timeout() -> Result<(), String> {
    let mut m = start_master(
        "boot-timeout",
        |_| {},
        |b, l| {
            b.listener(l)
                .workers(1)
                .boot_timeout(Duration::from_secs(1))
        },
        |b| {
            b.run(|| {
                Ok::<_, String>(|_env: &mut WorkerEnv| loop {
                    // Never calls ready().
                    sleep_ms(100);
                })
            })
        },
    );
    let r = check_boot_timeout(&mut m);
    finish(&mut m, r)
}

pub fn pool_deadline_then_kill() -> Result<(), String> {
    let mut m = start_master(
        "pool",
        |_| {},
        |b, l| {
            b.listener(l)
                .workers(1)
                .request_grace(Duration::from_secs(1))
        },
        |b| b.run(|| Ok::<_, String>(pool_worker)),
    );
    let r = check_pool_deadline_then_kill(&mut m);
    finish(&mut m, r)
}
