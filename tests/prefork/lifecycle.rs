//! The master's life as its signals drive it: serving, respawning after a kill, TERM (graceful,
//! then fast), HUP reloads, TTIN/TTOU, USR1, USR2 upgrades; `check`, pidfile, Unix socket, preload.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use prefork_pool::prefork::{Supervisor, WorkerEnv};

use crate::helpers::*;
use crate::workers::app;

pub fn check_config() -> Result<(), String> {
    let err = Supervisor::builder()
        .workers(2)
        .check(|| Err::<fn(&mut WorkerEnv) -> i32, _>("no DATABASE_URL set"))
        .err()
        .ok_or("check() accepted a failing app")?;
    ensure(err.to_string().contains("no DATABASE_URL set"), || {
        format!("check error does not name the cause: {err}")
    })?;
    let err = Supervisor::builder()
        .workers(0)
        .check(app)
        .err()
        .ok_or("check() accepted workers(0)")?;
    ensure(err.to_string().contains("workers"), || err.to_string())?;
    Supervisor::builder()
        .workers(2)
        .check(app)
        .map_err(|e| e.to_string())
}

pub fn two_workers_serve(m: &mut Master) -> Result<(), String> {
    m.wait_log("2 worker(s) ready", LONG)?;
    let workers = m.wait_workers(LONG, "2 workers", |w| w.len() == 2)?;
    // Concurrent slow requests: one single-threaded worker cannot take them all.
    let load = Load::start(m.addr, 4, "/sleep/50");
    sleep_ms(1500);
    let out = load.finish();
    let failed: Vec<_> = out.iter().filter_map(|o| o.result.as_ref().err()).collect();
    ensure(failed.is_empty(), || format!("failed requests: {failed:?}"))?;
    let served: BTreeSet<i32> = out
        .iter()
        .filter_map(|o| o.result.as_ref().ok()?.parse().ok())
        .collect();
    ensure(served == workers, || {
        format!("answers came from {served:?}, workers are {workers:?}")
    })?;
    m.signal(libc::SIGTERM);
    let code = m.wait_exit(LONG)?;
    ensure(code == 0, || format!("exit status {code} after SIGTERM"))
}

pub fn kill9_respawns(m: &mut Master) -> Result<(), String> {
    m.wait_log("2 worker(s) ready", LONG)?;
    let before = m.wait_workers(LONG, "2 workers", |w| w.len() == 2)?;
    let victim = *before.iter().next().unwrap();
    let load = Load::start(m.addr, 4, "/sleep/20");
    sleep_ms(500);
    // SAFETY: kill(2) of a worker of our master (a grandchild), found in /proc just above.
    unsafe { libc::kill(victim, libc::SIGKILL) };
    let after = m.wait_workers(LONG, "2 workers, victim gone", |w| {
        w.len() == 2 && !w.contains(&victim)
    });
    sleep_ms(1000);
    let out = load.finish();
    after?;
    let failed: Vec<_> = out.iter().filter_map(|o| o.result.as_ref().err()).collect();
    // Only the one request the victim was serving (single-threaded worker) may fail.
    ensure(failed.len() <= 1, || {
        format!(
            "{} failed requests (at most 1 allowed): {failed:?}",
            failed.len()
        )
    })?;
    ensure(out.len() > 20, || {
        format!("only {} requests ran", out.len())
    })?;
    m.wait_log("killed by SIGKILL from outside the supervisor", LONG)?;
    m.signal(libc::SIGTERM);
    let code = m.wait_exit(LONG)?;
    ensure(code == 0, || format!("exit status {code} after SIGTERM"))
}

pub fn term_under_load(m: &mut Master) -> Result<(), String> {
    m.wait_log("2 worker(s) ready", LONG)?;
    let load = Load::start(m.addr, 6, "/sleep/100");
    sleep_ms(800);
    let term_at = Instant::now();
    m.signal(libc::SIGTERM);
    sleep_ms(300);
    let out = load.finish();
    let code = m.wait_exit(LONG)?;
    let before: Vec<_> = out.iter().filter(|o| o.sent < term_at).collect();
    let failed: Vec<_> = before
        .iter()
        .filter_map(|o| o.result.as_ref().err())
        .collect();
    ensure(failed.is_empty(), || {
        format!(
            "{} of {} requests sent before SIGTERM failed: {failed:?}",
            failed.len(),
            before.len()
        )
    })?;
    ensure(before.len() >= 6, || {
        format!("only {} requests before SIGTERM", before.len())
    })?;
    ensure(code == 0, || format!("exit status {code} after SIGTERM"))?;
    ensure(m.workers().is_empty(), || "workers left behind".into())
}

/// Two workers serve `path` under a bounded load (4 clients); after `warm_ms`, SIGHUP: every worker
/// pid must change and no request fail. Returns the new workers and every request's outcome.
pub fn hup_under_load(
    m: &mut Master,
    path: &'static str,
    warm_ms: u64,
) -> Result<(BTreeSet<i32>, Vec<Outcome>), String> {
    m.wait_log("2 worker(s) ready", LONG)?;
    let old = m.wait_workers(LONG, "2 workers", |w| w.len() == 2)?;
    let load = Load::start(m.addr, 4, path);
    sleep_ms(warm_ms);
    m.signal(libc::SIGHUP);
    let new = m.wait_workers(LONG, "2 new workers, no old one", |w| {
        w.len() == 2 && w.is_disjoint(&old)
    });
    sleep_ms(500);
    let out = load.finish();
    let new = new?;
    let failed: Vec<_> = out.iter().filter_map(|o| o.result.as_ref().err()).collect();
    ensure(failed.is_empty(), || {
        format!(
            "{} of {} requests failed during HUP: {failed:?}",
            failed.len(),
            out.len()
        )
    })?;
    ensure(new.is_disjoint(&old), || format!("old {old:?} new {new:?}"))?;
    Ok((new, out))
}

pub fn hup_reloads(m: &mut Master) -> Result<(), String> {
    hup_under_load(m, "/sleep/20", 400)?;
    m.wait_log("ready after the reload", LONG)?;
    m.signal(libc::SIGTERM);
    let code = m.wait_exit(LONG)?;
    ensure(code == 0, || format!("exit status {code}"))
}

pub fn ttin_ttou(m: &mut Master) -> Result<(), String> {
    m.wait_log("2 worker(s) ready", LONG)?;
    m.wait_workers(LONG, "2 workers", |w| w.len() == 2)?;
    m.signal(libc::SIGTTIN);
    m.wait_workers(LONG, "3 workers", |w| w.len() == 3)?;
    m.signal(libc::SIGTTOU);
    m.wait_workers(LONG, "2 workers", |w| w.len() == 2)?;
    m.signal(libc::SIGTTOU);
    m.wait_workers(LONG, "1 worker", |w| w.len() == 1)?;
    m.signal(libc::SIGTTOU);
    m.wait_log("SIGTTOU ignored", LONG)?;
    sleep_ms(500);
    let w = m.workers();
    ensure(w.len() == 1, || {
        format!("{} workers after TTOU at 1", w.len())
    })?;
    get(m.addr, "/")?;
    m.signal(libc::SIGTERM);
    let code = m.wait_exit(LONG)?;
    ensure(code == 0, || format!("exit status {code}"))
}

pub fn second_term_is_fast(m: &mut Master) -> Result<(), String> {
    m.wait_log("1 worker(s) ready", LONG)?;
    let addr = m.addr;
    let slow = std::thread::spawn(move || get(addr, "/sleep/20000"));
    sleep_ms(300);
    let started = Instant::now();
    m.signal(libc::SIGTERM);
    sleep_ms(300);
    m.signal(libc::SIGTERM);
    let code = m.wait_exit(LONG)?;
    let took = started.elapsed();
    let _ = slow.join();
    ensure(code == 0, || format!("exit status {code}"))?;
    ensure(took < Duration::from_secs(10), || {
        format!("the second SIGTERM did not make it fast: {took:?}")
    })?;
    m.wait_log("second SIGTERM during a graceful stop: stopping fast", LONG)
}

pub fn unix_pidfile_usr1_preload() -> Result<(), String> {
    let dir = std::env::temp_dir().join(format!("prefork-test-misc-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let sock = dir.join("app.sock");
    let pidfile = dir.join("app.pid");
    let (sock2, pidfile2) = (sock.clone(), pidfile.clone());
    let mut m = start_master(
        "misc",
        |_| {},
        move |b, l| {
            b.listener(l)
                .bind_unix(&sock2, 0o660)
                .pidfile(&pidfile2)
                .preload(true)
                .workers(2)
                .on_reopen_logs(|| log::info!("reopen hook ran"))
        },
        |b| {
            b.run(|| {
                log::info!("app built in pid {}", std::process::id());
                app()
            })
        },
    );
    let result = (|| {
        m.wait_log("2 worker(s) ready", LONG)?;
        let log = m.log_text();
        let builds = log.matches("app built in pid").count();
        ensure(builds == 1, || {
            format!("preload: the app was built {builds} times")
        })?;
        ensure(log.contains(&format!("app built in pid {}", m.pid)), || {
            "preload: the app was not built in the master".into()
        })?;
        ensure(log.contains("unix:"), || {
            "the unix listener is not logged".into()
        })?;
        std::os::unix::net::UnixStream::connect(&sock)
            .map_err(|e| format!("connect {}: {e}", sock.display()))?;
        let written = std::fs::read_to_string(&pidfile).map_err(|e| e.to_string())?;
        ensure(written.trim() == m.pid.to_string(), || {
            format!("pidfile holds {written:?}, master is {}", m.pid)
        })?;
        get(m.addr, "/")?;
        m.signal(libc::SIGUSR1);
        m.wait_log("reopen hook ran", LONG)?;
        // No log file is configured (the log goes to this test's logger): the line says so.
        m.wait_log("SIGUSR1: no log file to reopen (set access_log_file", LONG)?;
        m.signal(libc::SIGTERM);
        let code = m.wait_exit(LONG)?;
        ensure(code == 0, || format!("exit status {code}"))?;
        ensure(!pidfile.exists(), || "the pidfile was left behind".into())
    })();
    let _ = std::fs::remove_dir_all(&dir);
    finish(&mut m, result)
}

pub fn usr2_upgrade() -> Result<(), String> {
    let mut m = start_master(
        "usr2",
        |_| std::env::set_var(ROLE, "usr2-master"),
        |b, l| b.listener(l).workers(2),
        |b| b.run(app),
    );
    let result = (|| {
        m.wait_log("2 worker(s) ready", LONG)?;
        let old_workers = m.wait_workers(LONG, "2 workers", |w| w.len() == 2)?;
        let load = Load::start(m.addr, 4, "/sleep/20");
        sleep_ms(400);
        m.signal(libc::SIGUSR2);
        let upgraded = (|| {
            let new_pid = new_master_pid(&m)?;
            let code = m.wait_exit(LONG)?;
            ensure(code == 0, || format!("old master exit status {code}"))?;
            let new_workers = wait_children(new_pid, 2)?;
            ensure(new_workers.is_disjoint(&old_workers), || {
                "the new master has the old workers".into()
            })?;
            Ok::<_, String>(new_pid)
        })();
        sleep_ms(500);
        let out = load.finish();
        let new_pid = upgraded?;
        let failed: Vec<_> = out.iter().filter_map(|o| o.result.as_ref().err()).collect();
        ensure(failed.is_empty(), || {
            format!(
                "{} failed requests during the upgrade: {failed:?}",
                failed.len()
            )
        })?;
        ensure(out.len() > 20, || {
            format!("only {} requests ran", out.len())
        })?;
        let body = get(m.addr, "/")?;
        ensure(
            children_of(new_pid).contains(&body.parse().unwrap_or(0)),
            || format!("answer from {body}, not a worker of the new master {new_pid}"),
        )?;
        m.wait_log("telling the old master", LONG)?;
        stop_adopted(new_pid)
    })();
    finish(&mut m, result)
}

/// SIGUSR2 to a new build that hangs before it serves: the upgrade is abandoned at the boot
/// timeout (the new master killed, the reason logged), the old master keeps serving, and a later
/// SIGTERM stops it without claiming a takeover; then nothing holds the listener.
pub fn usr2_never_ready() -> Result<(), String> {
    let mut m = start_master(
        "usr2-hang",
        |_| std::env::set_var(ROLE, "usr2-hang"),
        |b, l| {
            b.listener(l)
                .workers(1)
                .boot_timeout(Duration::from_secs(2))
        },
        |b| b.run(app),
    );
    let result = (|| {
        m.wait_log("1 worker(s) ready", LONG)?;
        m.signal(libc::SIGUSR2);
        let new_pid = new_master_pid(&m)?;
        let started = Instant::now();
        m.wait_log("binary upgrade abandoned", LONG)?;
        println!("  abandoned {:?} after SIGUSR2", started.elapsed());
        m.wait_log(
            &format!("the abandoned new master (pid {new_pid}) is gone"),
            LONG,
        )?;
        ensure(!children_of(m.pid).contains(&new_pid), || {
            format!("the new master {new_pid} is still alive")
        })?;
        get(m.addr, "/")?;
        m.signal(libc::SIGTERM);
        let code = m.wait_exit(LONG)?;
        ensure(code == 0, || format!("exit status {code}"))?;
        ensure(!m.log_text().contains("the new master took over"), || {
            "the old master says the new master took over".into()
        })?;
        // Nobody listens any more: a hung new master would accept connections into its backlog.
        ensure(
            std::net::TcpStream::connect_timeout(&m.addr, Duration::from_secs(2)).is_err(),
            || "the listener is still open after the old master exited".into(),
        )
    })();
    finish(&mut m, result)
}

/// The three fork hooks bracket each fork: `pre_fork` and `post_fork_parent` in the master (in
/// that order, the second with the new worker's pid), `post_fork` in the worker (what an embedded
/// runtime such as CPython needs: before, after in the parent, after in the child).
pub fn fork_hooks(m: &mut Master) -> Result<(), String> {
    m.wait_log("2 worker(s) ready", LONG)?;
    let workers = m.wait_workers(LONG, "2 workers", |w| w.len() == 2)?;
    let log = m.log_text();
    let lines: Vec<&str> = log.lines().filter(|l| l.starts_with("HOOK ")).collect();
    for &pid in &workers {
        let parent = lines
            .iter()
            .position(|l| {
                l.starts_with("HOOK parent ") && l.ends_with(&format!(" Some({pid}) by {}", m.pid))
            })
            .ok_or_else(|| {
                format!("no post_fork_parent line in the master for worker pid {pid}: {lines:?}")
            })?;
        let number = lines[parent].split(' ').nth(2).unwrap_or("?");
        let pre = lines
            .iter()
            .position(|l| *l == format!("HOOK pre {number} by {}", m.pid))
            .ok_or_else(|| format!("no pre_fork line for worker {number}: {lines:?}"))?;
        ensure(pre < parent, || {
            format!("pre_fork after post_fork_parent: {lines:?}")
        })?;
        ensure(
            lines.contains(&format!("HOOK child {number} by {pid}").as_str()),
            || format!("no post_fork line in worker {number} (pid {pid}): {lines:?}"),
        )?;
    }
    m.signal(libc::SIGTERM);
    let code = m.wait_exit(LONG)?;
    ensure(code == 0, || format!("exit status {code} after SIGTERM"))
}
