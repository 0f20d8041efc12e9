//! What an operator's deploy relies on: the workers run as the configured user while the master
//! stays root (`user`, `PREFORK_USER`), an unknown user is refused by name, and a worker is
//! recycled past its memory bound or its age, replacement first, with no failed request and its
//! reason in the log.

use std::collections::BTreeSet;
use std::time::Duration;

use prefork_pool::prefork::Supervisor;
use prefork_pool::Settings;

use crate::helpers::*;
use crate::tools;

/// The `Uid:` or `Gid:` line of `/proc/<pid>/status`: real, effective, saved, filesystem.
pub fn ids(pid: i32, field: &str) -> Result<Vec<u32>, String> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map_err(|e| format!("/proc/{pid}/status: {e}"))?;
    let line = status
        .lines()
        .find(|l| l.starts_with(&format!("{field}:")))
        .ok_or_else(|| format!("no {field}: line in /proc/{pid}/status"))?;
    Ok(line
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect())
}

/// `nobody`'s uid and gid, from the passwd file.
fn nobody() -> Result<(u32, u32), String> {
    let passwd = std::fs::read_to_string("/etc/passwd").map_err(|e| e.to_string())?;
    passwd
        .lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f.first() == Some(&"nobody"))
                .then(|| Some((f.get(2)?.parse().ok()?, f.get(3)?.parse().ok()?)))?
        })
        .ok_or_else(|| "no user nobody in /etc/passwd".to_string())
}

/// `Ok(true)` when this process is root; else a `SKIPPED:` line (a failure under
/// PREFORK_REQUIRE_TOOLS).
pub fn root_or_skip() -> Result<bool, String> {
    // SAFETY: geteuid(2) cannot fail and touches no memory.
    if unsafe { libc::geteuid() } == 0 {
        return Ok(true);
    }
    tools::skip_for(
        "not running as root (switching the workers to another user needs it; run the \
         tests as root, as CI does, to check it)",
    )
    .map(|()| false)
}

/// `user("nobody")`: every worker runs as nobody (real, effective, saved and filesystem ids, and
/// no supplementary group but nobody's), the master stays root, and the workers serve.
pub fn workers_run_as_nobody() -> Result<(), String> {
    if !root_or_skip()? {
        return Ok(());
    }
    let (uid, gid) = nobody()?;
    with_master(
        "nobody",
        |b| b.workers(2).user("nobody"),
        |m| {
            m.wait_log("2 worker(s) ready", LONG)?;
            m.wait_log("the workers will run as nobody (uid ", LONG)?;
            let workers = m.workers();
            ensure(workers.len() == 2, || format!("workers {workers:?}"))?;
            for &w in &workers {
                let (u, g) = (ids(w, "Uid")?, ids(w, "Gid")?);
                ensure(u == [uid; 4] && g == [gid; 4], || {
                    format!("worker {w} runs as Uid {u:?} Gid {g:?}, not nobody ({uid}/{gid})")
                })?;
                let groups = ids(w, "Groups")?;
                ensure(groups.iter().all(|g| *g == gid), || {
                    format!("worker {w} kept the supplementary groups {groups:?}")
                })?;
            }
            let (u, g) = (ids(m.pid, "Uid")?, ids(m.pid, "Gid")?);
            ensure(u == [0; 4] && g == [0; 4], || {
                format!("the master runs as Uid {u:?} Gid {g:?}, not root")
            })?;
            // The workers serve, and a request is answered by one of them.
            let pid: i32 = get(m.addr, "/")?.parse().map_err(|e| format!("{e}"))?;
            ensure(workers.contains(&pid), || {
                format!("answered by {pid}, not one of {workers:?}")
            })?;
            // A replacement switches too (the kill is the master's: it is root).
            // SAFETY: kill(2) of a live child of the master, SIGKILL.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            let now =
                m.wait_workers(LONG, "a replacement", |w| w.len() == 2 && !w.contains(&pid))?;
            for &w in now.difference(&workers) {
                let u = ids(w, "Uid")?;
                ensure(u == [uid; 4], || format!("replacement {w} runs as {u:?}"))?;
            }
            m.signal(libc::SIGTERM);
            let code = m.wait_exit(LONG)?;
            ensure(code == 0, || format!("exit status {code}"))
        },
    )
}

/// An account that does not exist is refused when the supervisor is built, by the name of the
/// setting, with the value and how to find an existing one; before any fork.
pub fn unknown_user_refused() -> Result<(), String> {
    let err = Supervisor::builder()
        .bind("127.0.0.1:0")
        .user("no-such-user-prefork")
        .build()
        .err()
        .ok_or("an unknown user was taken")?
        .to_string();
    ensure(
        err.starts_with(r#"invalid `user` = "no-such-user-prefork": an existing user"#)
            && err.contains("getent passwd"),
        || format!("the refusal says: {err}"),
    )?;
    let env = Settings::from_lookup(|name| match name {
        "PREFORK_USER" => Some("nobody".into()),
        "PREFORK_GROUP" => Some("no-such-group-prefork".into()),
        _ => None,
    });
    let err = Supervisor::builder()
        .bind("127.0.0.1:0")
        .with_settings(&env)
        .build()
        .err()
        .ok_or("an unknown group was taken")?
        .to_string();
    ensure(
        err.starts_with(r#"invalid `PREFORK_GROUP` = "no-such-group-prefork": an existing group"#),
        || format!("the refusal says: {err}"),
    )
}

/// Sends `n` requests one after another, `pause` apart, from a client thread; every answer's
/// body (the worker's pid) or the first failure.
fn client(
    addr: std::net::SocketAddr,
    path: &'static str,
    n: usize,
    pause: Duration,
) -> std::thread::JoinHandle<Result<Vec<String>, String>> {
    std::thread::spawn(move || {
        let mut pids = Vec::new();
        for i in 0..n {
            pids.push(get(addr, path).map_err(|e| format!("request {i} of {n}: {e}"))?);
            std::thread::sleep(pause);
        }
        Ok(pids)
    })
}

/// A handler that keeps 1 MiB per request: past 48 MiB of resident memory each worker is
/// replaced, replacement first, and a few hundred requests all succeed meanwhile.
pub fn memory_recycle(m: &mut Master) -> Result<(), String> {
    m.wait_log("2 worker(s) ready", LONG)?;
    let first = m.workers();
    let load = client(m.addr, "/grow/1", 300, Duration::from_millis(10));
    let pids = load.join().map_err(|_| "the client panicked")??;
    let served: BTreeSet<&String> = pids.iter().collect();
    m.wait_log("recycled: resident memory ", LONG)?;
    let log = m.log_text();
    ensure(log.contains(" MiB over max_worker_memory 48 MiB"), || {
        "the recycle line does not give the bound".into()
    })?;
    ensure(!log.contains("as soon as it is ready"), || {
        "a fresh worker was already over the bound: the test's bound is too low".into()
    })?;
    ensure(served.len() > first.len(), || {
        format!("300 requests of 1 MiB each were all served by {served:?}")
    })?;
    m.wait_log("after its recycling (resident memory ", LONG)?;
    let log = m.log_text();
    ensure(!log.contains("ERROR"), || "an error line in the log".into())?;
    replacement_first(&log, first.len())?;
    m.signal(libc::SIGTERM);
    let code = m.wait_exit(LONG)?;
    ensure(code == 0, || format!("exit status {code}"))
}

/// `max_worker_age(1 s)`: the worker is replaced after about a second, again and again, while a
/// client's requests all succeed.
pub fn age_recycle(m: &mut Master) -> Result<(), String> {
    m.wait_log("1 worker(s) ready", LONG)?;
    let load = client(m.addr, "/", 150, Duration::from_millis(20));
    m.wait_log("recycled: age ", LONG)?;
    let pids = load.join().map_err(|_| "the client panicked")??;
    let served: BTreeSet<&String> = pids.iter().collect();
    ensure(served.len() >= 2, || {
        format!("150 requests 20 ms apart were all served by {served:?}")
    })?;
    m.wait_log("after its recycling (age ", LONG)?;
    replacement_first(&m.log_text(), 1)?;
    ensure(
        m.log_text()
            .contains("over max_worker_age 1s (its limit with jitter: 1"),
        || "the recycle line does not give the age and the bound".into(),
    )?;
    m.signal(libc::SIGTERM);
    let code = m.wait_exit(LONG)?;
    ensure(code == 0, || format!("exit status {code}"))
}

/// Each worker that exited after its recycling did so once its replacement was ready: before
/// its exit line, the log has a `ready` line for each first worker and each replacement.
fn replacement_first(log: &str, first: usize) -> Result<(), String> {
    let (mut ready, mut exits) = (0, 0);
    for line in log.lines() {
        if line.contains(" ready in ") {
            ready += 1;
        }
        if line.contains("after its recycling") {
            exits += 1;
            ensure(ready >= first + exits, || {
                format!("a recycled worker exited before its replacement was ready: {line}")
            })?;
        }
    }
    Ok(())
}
