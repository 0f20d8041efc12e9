//! The crate's log sink, end to end, as logrotate uses it: `mv access.log access.log.1 && kill
//! -USR1 <pid>`, then every process writes to new files and no line is lost; in process mode (the
//! master and 2 workers) and in thread mode (`serve_until_signal`). The server runs in a fresh
//! copy of this test binary (`ROLE`), not a fork of it: the sink must be the process's `log`
//! logger, and this process has its own.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use prefork_pool::http::{HttpRequest, Server};
use prefork_pool::prefork::Supervisor;
use prefork_pool::Context;

use crate::helpers::*;

/// Where the re-executed server writes its logs.
const DIR_ENV: &str = "PREFORK_TEST_LOG_DIR";

fn ok(_req: HttpRequest, _ctx: &Context) -> http::Response<Vec<u8>> {
    http::Response::new(b"ok\n".to_vec())
}

/// In a re-executed copy of this binary (before any logger is installed): the server of a
/// scenario below; `None` when `role` is not one of them.
pub fn role_main(role: &str) -> Option<i32> {
    let dir = PathBuf::from(std::env::var_os(DIR_ENV)?);
    match role {
        "logs-master" | "logs-master-nobody" => Some(
            Supervisor::builder()
                .bind("127.0.0.1:0")
                .workers(2)
                .with_settings(&prefork_pool::Settings::from_lookup(|name| {
                    (name == "PREFORK_USER" && role.ends_with("-nobody")).then(|| "nobody".into())
                }))
                .access_log_file(dir.join("access.log"))
                .error_log_file(dir.join("error.log"))
                .proc_name("logtest")
                .serve_http(
                    |s| s.access_log_format(r#"%(p)s "%(r)s" %(s)s"#),
                    || Ok::<_, String>(ok),
                ),
        ),
        "logs-thread" => {
            let server = Server::builder()
                .bind("127.0.0.1:0")
                .access_log_file(dir.join("access.log"))
                .error_log_file(dir.join("error.log"))
                .access_log_format("json")
                .serve(ok);
            let server = match server {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("cannot start: {e}");
                    return Some(1);
                }
            };
            log::info!("test server listening on {}", server.local_addrs()[0]);
            let report = server.serve_until_signal(Duration::from_secs(10));
            Some(i32::from(report.is_err()))
        }
        _ => None,
    }
}

/// Starts `role` in its own process group, with its logs in `dir`; waits for its address.
fn start(role: &str, dir: &Path) -> Result<Master, String> {
    let stderr = std::fs::File::create(dir.join("stderr.log")).map_err(|e| e.to_string())?;
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let child = Command::new(exe)
        .env(ROLE, role)
        .env(DIR_ENV, dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr)
        .process_group(0)
        .spawn()
        .map_err(|e| format!("cannot start {role}: {e}"))?;
    let mut m = Master {
        pid: child.id() as i32,
        addr: "127.0.0.1:1".parse().unwrap(),
        log: dir.join("error.log"),
        status: None,
    };
    // Reaped by `Master::wait_exit` with waitpid, not through `child`.
    drop(child);
    if let Err(e) = m.wait_log("listening on ", LONG) {
        return Err(format!(
            "{e}; its stderr: {}",
            std::fs::read_to_string(dir.join("stderr.log")).unwrap_or_default()
        ));
    }
    let text = m.log_text();
    let addr = text
        .split("listening on ")
        .nth(1)
        .and_then(|s| s.split([';', '\n', ',']).next())
        .and_then(|s| s.trim().parse::<SocketAddr>().ok())
        .ok_or_else(|| format!("no address in the error log: {text}"))?;
    m.addr = addr;
    Ok(m)
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// The lines of `path` that contain `needle`.
fn count(path: &Path, needle: &str) -> usize {
    read(path).lines().filter(|l| l.contains(needle)).count()
}

/// Waits until `path` has `n` lines containing `needle` (the log thread writes every 100 ms).
fn wait_lines(path: &Path, needle: &str, n: usize) -> Result<(), String> {
    let end = Instant::now() + LONG;
    while count(path, needle) < n {
        ensure(Instant::now() < end, || {
            format!(
                "{} has {} lines with {needle:?}, not {n}, after {LONG:?}",
                path.display(),
                count(path, needle)
            )
        })?;
        sleep_ms(50);
    }
    Ok(())
}

fn wait_text(path: &Path, needle: &str) -> Result<(), String> {
    wait_lines(path, needle, 1)
}

fn get_ok(addr: SocketAddr, path: &str) -> Result<(), String> {
    get(addr, path)
        .map(|_| ())
        .map_err(|e| format!("GET {path}: {e}"))
}

/// Rotates both logs as logrotate does, then SIGUSR1.
fn rotate(m: &Master, dir: &Path) -> Result<(), String> {
    for f in ["access.log", "error.log"] {
        std::fs::rename(dir.join(f), dir.join(format!("{f}.1")))
            .map_err(|e| format!("mv {f}: {e}"))?;
    }
    m.signal(libc::SIGUSR1);
    Ok(())
}

fn comm(pid: i32) -> String {
    read(Path::new(&format!("/proc/{pid}/comm")))
        .trim()
        .to_string()
}

fn scratch(name: &str) -> Result<PathBuf, String> {
    let dir = std::env::temp_dir().join(format!("prefork-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    Ok(dir)
}

/// A malformed request: answered 400 by the server itself, and logged at warn with the peer and
/// the reason, escaped (the ESC byte never reaches the log).
fn refused_is_logged(m: &Master, error_log: &Path) -> Result<(), String> {
    let mut c = TcpStream::connect(m.addr).map_err(|e| e.to_string())?;
    c.set_read_timeout(Some(Duration::from_secs(10))).ok();
    c.write_all(b"GET /x HTTP/1.1\r\nHost: a\r\nBad\x1b[31mName: 1\r\n\r\n")
        .map_err(|e| e.to_string())?;
    let mut resp = String::new();
    let _ = c.read_to_string(&mut resp);
    ensure(resp.starts_with("HTTP/1.1 400"), || {
        format!("a malformed header got {resp:?}, not 400")
    })?;
    wait_text(
        error_log,
        "[WARN] prefork_pool::http: refused a request from 127.0.0.1 with 400: ",
    )?;
    let log = read(error_log);
    ensure(!log.contains('\x1b'), || {
        "a byte the client sent reached the error log unescaped".into()
    })
}

/// Process mode: titles, the pid in every error line, a refusal logged, then the rotation: the
/// master and each worker reopen (each says so in the new error log), every line before the
/// rotation is in `access.log.1`, every line after it in the new `access.log` (from both
/// workers), and a TERM writes out the lines still queued.
pub fn process_mode() -> Result<(), String> {
    rotation("logs-master")
}

/// The same with the workers switched to `nobody` (`user`) in a directory only root may write:
/// the master gives each file it opens to nobody, so that the workers reopen the files it made.
pub fn process_mode_as_nobody() -> Result<(), String> {
    if !crate::deploy::root_or_skip()? {
        return Ok(());
    }
    rotation("logs-master-nobody")
}

fn rotation(role: &str) -> Result<(), String> {
    let dir = scratch(role)?;
    let mut m = start(role, &dir)?;
    let result = (|| {
        let (access, error) = (dir.join("access.log"), dir.join("error.log"));
        wait_text(&error, "2 worker(s) ready")?;
        let workers = m.workers();
        ensure(workers.len() == 2, || format!("workers {workers:?}"))?;
        if role.ends_with("-nobody") {
            for &w in &workers {
                let uid = crate::deploy::ids(w, "Uid")?;
                ensure(uid[0] != 0 && uid[1] != 0, || {
                    format!("worker {w} runs as {uid:?}, not nobody")
                })?;
            }
        }
        ensure(comm(m.pid) == "prefork: master", || {
            format!("the master's title is {:?}", comm(m.pid))
        })?;
        for &w in &workers {
            ensure(comm(w) == "prefork: worker", || {
                format!("worker {w}'s title is {:?}", comm(w))
            })?;
        }
        let master_line = format!("] [{}] [INFO] ", m.pid);
        ensure(count(&error, &master_line) > 0, || {
            format!(
                "no error-log line carries the master's pid: {}",
                read(&error)
            )
        })?;
        refused_is_logged(&m, &error)?;

        for i in 0..20 {
            get_ok(m.addr, &format!("/before/{i}"))?;
        }
        wait_lines(&access, "/before/", 20)?;
        rotate(&m, &dir)?;
        wait_text(&error, "SIGUSR1: reopened the access log")?;
        wait_text(&error, "forwarded to 2 worker(s)")?;
        for &w in &workers {
            wait_text(
                &error,
                &format!("] [{w}] [INFO] prefork_pool::log_sink: SIGUSR1 (pid {w}): reopened the access log"),
            )?;
        }
        // Until each worker has written at least one line to the new file.
        let mut sent = 0;
        let mut seen = BTreeSet::new();
        while seen != workers {
            ensure(sent < 400, || {
                format!("after {sent} requests only {seen:?} of {workers:?} wrote to the new access.log")
            })?;
            for _ in 0..10 {
                get_ok(m.addr, &format!("/after/{sent}"))?;
                sent += 1;
            }
            wait_lines(&access, "/after/", sent)?;
            seen = read(&access)
                .lines()
                .filter_map(|l| {
                    l.split_whitespace()
                        .next()?
                        .trim_matches(['<', '>'])
                        .parse()
                        .ok()
                })
                .collect();
        }
        let old = dir.join("access.log.1");
        ensure(
            count(&old, "/before/") == 20 && count(&old, "/after/") == 0,
            || format!("access.log.1: {}", read(&old)),
        )?;
        ensure(
            count(&access, "/before/") == 0 && count(&access, "/after/") == sent,
            || {
                format!(
                    "the new access.log (after {sent} requests): {}",
                    read(&access)
                )
            },
        )?;
        // Lines still queued when the master is told to stop are written before the workers exit.
        for i in 0..5 {
            get_ok(m.addr, &format!("/last/{i}"))?;
        }
        m.signal(libc::SIGTERM);
        let code = m.wait_exit(LONG)?;
        ensure(code == 0, || format!("exit status {code}"))?;
        ensure(count(&access, "/last/") == 5, || {
            format!(
                "after the stop, the access log has {} of 5 last lines",
                count(&access, "/last/")
            )
        })
    })();
    let r = finish(&mut m, result);
    if r.is_ok() {
        let _ = std::fs::remove_dir_all(&dir);
    }
    r
}

/// Thread mode (`serve_until_signal`, the JSON format): the rotation splits the lines exactly,
/// SIGUSR1 does not stop the server, and SIGTERM writes out the queue.
pub fn thread_mode() -> Result<(), String> {
    let dir = scratch("logs-thread")?;
    let mut m = start("logs-thread", &dir)?;
    let result = (|| {
        let (access, error) = (dir.join("access.log"), dir.join("error.log"));
        ensure(count(&error, &format!("] [{}] [INFO] ", m.pid)) > 0, || {
            format!("no error-log line carries the pid: {}", read(&error))
        })?;
        refused_is_logged(&m, &error)?;
        for i in 0..20 {
            get_ok(m.addr, &format!("/before/{i}"))?;
        }
        wait_lines(&access, "\"/before/", 20)?;
        rotate(&m, &dir)?;
        wait_text(&error, "SIGUSR1: reopened the access log")?;
        for i in 0..20 {
            get_ok(m.addr, &format!("/after/{i}"))?;
        }
        wait_lines(&access, "\"/after/", 20)?;
        let old = dir.join("access.log.1");
        ensure(
            count(&old, "/before/") == 20 && count(&old, "/after/") == 0,
            || format!("access.log.1: {}", read(&old)),
        )?;
        for line in read(&access).lines() {
            let v: serde_json::Value = serde_json::from_str(line)
                .map_err(|e| format!("an access line is not JSON ({e}): {line}"))?;
            ensure(v["status"] == 200 && v["pid"] == m.pid, || {
                format!("unexpected access line: {line}")
            })?;
        }
        ensure(count(&access, "/before/") == 0, || {
            format!("the new access.log: {}", read(&access))
        })?;
        for i in 0..5 {
            get_ok(m.addr, &format!("/last/{i}"))?;
        }
        m.signal(libc::SIGTERM);
        let code = m.wait_exit(LONG)?;
        ensure(code == 0, || format!("exit status {code}"))?;
        ensure(count(&access, "/last/") == 5, || {
            format!(
                "after the stop, the access log has {} of 5 last lines",
                count(&access, "/last/")
            )
        })
    })();
    let r = finish(&mut m, result);
    if r.is_ok() {
        let _ = std::fs::remove_dir_all(&dir);
    }
    r
}
