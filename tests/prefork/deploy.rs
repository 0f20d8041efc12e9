//! What an operator's deploy relies on: the workers run as the configured user while the master
//! stays root (`user`, `PREFORK_USER`), an unknown user is refused by name, a worker is recycled
//! past its memory bound or its age, replacement first, with no failed request and its reason in
//! the log, and a SIGUSR2 after a `current -> releases/N` link switch runs the new release.

pub(crate) mod files;
pub(crate) mod systemd;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
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

/// The role of this binary that [`usr2_symlink_deploy`] starts through the `current` link.
pub const LINKED_MASTER: &str = "usr2-link-master";

/// The usual symlinked deploy: `releases/1/<bin>` and `releases/2/<bin>` (this test binary,
/// hard-linked, or copied across filesystems) and `current -> releases/1`. The master is started
/// as `current/<bin>` and runs release 1; the link is switched as deploy tools do (a new link
/// renamed over the old one), then SIGUSR2: the new master and its workers run
/// `releases/2/<bin>`, the old master exits 0, and every request before, during and after the
/// upgrade is answered 200.
pub fn usr2_symlink_deploy() -> Result<(), String> {
    let dir = std::env::temp_dir().join(format!("prefork-test-{}-usr2link", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let result = symlink_deploy_in(&dir);
    let _ = std::fs::remove_dir_all(&dir);
    result
}

/// What `/proc/<pid>/exe` resolves to: the file the process executes.
fn runs(pid: i32) -> Result<PathBuf, String> {
    std::fs::read_link(format!("/proc/{pid}/exe")).map_err(|e| format!("/proc/{pid}/exe: {e}"))
}

/// `count` requests to `addr`, each answered 200 by a child of `master` that runs `release`.
fn answered_by_release(
    addr: SocketAddr,
    master: i32,
    release: &Path,
    count: usize,
) -> Result<(), String> {
    for i in 0..count {
        let body = get(addr, "/").map_err(|e| format!("request {i} of {count}: {e}"))?;
        let pid: i32 = body.parse().map_err(|e| format!("answer {body:?}: {e}"))?;
        ensure(children_of(master).contains(&pid), || {
            format!("answered by {pid}, not a worker of the master {master}")
        })?;
        let exe = runs(pid)?;
        ensure(exe == release, || {
            format!(
                "worker {pid} runs {}, not {}",
                exe.display(),
                release.display()
            )
        })?;
    }
    Ok(())
}

fn symlink_deploy_in(dir: &Path) -> Result<(), String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let name = exe.file_name().ok_or("the test binary has no file name")?;
    let mut releases = Vec::new();
    for n in 1..=2 {
        let d = dir.join("releases").join(n.to_string());
        std::fs::create_dir_all(&d).map_err(|e| format!("mkdir {}: {e}", d.display()))?;
        let bin = d.join(name);
        // A hard link costs no disk (the test binary is large); a copy across filesystems.
        if std::fs::hard_link(&exe, &bin).is_err() {
            std::fs::copy(&exe, &bin)
                .map_err(|e| format!("copy {} to {}: {e}", exe.display(), bin.display()))?;
        }
        // As /proc shows it: the temp dir itself may sit behind a link.
        releases.push(std::fs::canonicalize(&bin).map_err(|e| e.to_string())?);
    }
    let current = dir.join("current");
    std::os::unix::fs::symlink("releases/1", &current).map_err(|e| format!("ln -s: {e}"))?;
    let log = dir.join("master.log");
    let stderr = std::fs::File::create(&log).map_err(|e| e.to_string())?;
    let child = Command::new(current.join(name))
        .env(ROLE, LINKED_MASTER)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr)
        .process_group(0)
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", current.join(name).display()))?;
    let mut m = Master {
        pid: child.id() as i32,
        addr: "127.0.0.1:1".parse().unwrap(),
        log,
        status: None,
    };
    // Reaped by `Master::wait_exit` with waitpid, not through `child`.
    drop(child);
    let result = (|| {
        m.wait_log("2 worker(s) ready", LONG)?;
        let text = m.log_text();
        m.addr = text
            .split("listening on ")
            .nth(1)
            .and_then(|s| s.split([';', '\n', ',']).next())
            .and_then(|s| s.trim().parse().ok())
            .ok_or_else(|| format!("no address in the log: {text}"))?;
        let old = runs(m.pid)?;
        ensure(old == releases[0], || {
            format!("the master started through current/ runs {}", old.display())
        })?;
        answered_by_release(m.addr, m.pid, &releases[0], 5)?;
        // The deploy: a new link renamed over `current` (rename(2) replaces it atomically).
        let next = dir.join("current.new");
        std::os::unix::fs::symlink("releases/2", &next).map_err(|e| format!("ln -s: {e}"))?;
        std::fs::rename(&next, &current).map_err(|e| format!("mv current.new current: {e}"))?;
        let load = Load::start(m.addr, 2, "/sleep/20");
        sleep_ms(200);
        m.signal(libc::SIGUSR2);
        let upgraded = (|| {
            let new_pid = new_master_pid(&m)?;
            let code = m.wait_exit(LONG)?;
            ensure(code == 0, || format!("old master exit status {code}"))?;
            Ok::<_, String>(new_pid)
        })();
        sleep_ms(300);
        let out = load.finish();
        let new_pid = upgraded?;
        let failed: Vec<_> = out.iter().filter_map(|o| o.result.as_ref().err()).collect();
        ensure(failed.is_empty(), || {
            format!(
                "{} of {} requests failed during the upgrade: {failed:?}",
                failed.len(),
                out.len()
            )
        })?;
        ensure(out.len() >= 10, || {
            format!("only {} requests ran", out.len())
        })?;
        let checked = (|| {
            let new_exe = runs(new_pid)?;
            ensure(new_exe == releases[1], || {
                format!(
                    "after the link switch and SIGUSR2 the new master runs {}, not {}",
                    new_exe.display(),
                    releases[1].display()
                )
            })?;
            for w in wait_children(new_pid, 2)? {
                let exe = runs(w)?;
                ensure(exe == releases[1], || {
                    format!("new worker {w} runs {}", exe.display())
                })?;
            }
            answered_by_release(m.addr, new_pid, &releases[1], 5)
        })();
        // Stopped either way (the cleanup would kill it on a failure, but this checks its exit).
        checked.and_then(|()| stop_adopted(new_pid))
    })();
    finish(&mut m, result)
}
