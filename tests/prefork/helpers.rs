//! The prefork suite's harness: a master forked from this test process (its own process group,
//! its stderr in a log file), driven with signals and 127.0.0.1 TCP and killed at the end of its
//! scenario with a check that nothing of it is left; a small HTTP/1.0 client and a bounded load.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use prefork_pool::prefork::{Supervisor, SupervisorBuilder};

use crate::workers::app;

// A logger to stderr (the master's stderr is its log file).

pub struct StderrLogger;

impl log::Log for StderrLogger {
    fn enabled(&self, _: &log::Metadata) -> bool {
        true
    }
    fn log(&self, record: &log::Record) {
        let ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() % 100_000);
        let line = format!(
            "{ms:05} [{}] {} {}\n",
            std::process::id(),
            record.level(),
            record.args()
        );
        let _ = std::io::stderr().write_all(line.as_bytes());
    }
    fn flush(&self) {}
}

pub static LOGGER: StderrLogger = StderrLogger;

/// The environment variable that makes this binary a master: what a SIGUSR2 upgrade re-executes.
pub const ROLE: &str = "PREFORK_TEST_ROLE";

// Running a master in a forked child.

pub struct Master {
    pub pid: libc::pid_t,
    pub addr: SocketAddr,
    pub log: PathBuf,
    pub status: Option<i32>,
}

pub fn log_path(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("prefork-test-{}-{name}.log", std::process::id()))
}

/// Forks a master: `setup` runs in the child before the supervisor is built (environment, fds);
/// `configure` sets the builder; `run` runs it.
pub fn start_master(
    name: &str,
    setup: impl FnOnce(&TcpListener),
    configure: impl FnOnce(SupervisorBuilder, TcpListener) -> SupervisorBuilder,
    run: impl FnOnce(SupervisorBuilder) -> i32,
) -> Master {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    let addr = listener.local_addr().unwrap();
    let log = log_path(name);
    let file = std::fs::File::create(&log).expect("create the log file");
    let _ = std::io::stdout().flush();
    let _ = std::io::stderr().flush();
    // SAFETY: fork(2) from the test's main thread; every load thread of earlier scenarios was
    // joined, so this process has one thread.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        // SAFETY: setpgid(2) puts this child in its own process group (so the test can kill the
        // whole tree), then dup2(2) points stderr at the log file, an fd we own.
        unsafe {
            libc::setpgid(0, 0);
            libc::dup2(file.as_raw_fd(), 2);
        }
        drop(file);
        setup(&listener);
        let builder = configure(Supervisor::builder(), listener);
        let status = run(builder);
        // SAFETY: _exit(2) ends the forked master without running the test's destructors.
        unsafe { libc::_exit(status) };
    }
    drop(listener);
    drop(file);
    Master {
        pid,
        addr,
        log,
        status: None,
    }
}

pub fn simple_master(
    name: &str,
    configure: impl FnOnce(SupervisorBuilder) -> SupervisorBuilder,
) -> Master {
    start_master(
        name,
        |_| {},
        |b, l| configure(b.listener(l)),
        |b| b.run(app),
    )
}

impl Master {
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn wait_log(&self, needle: &str, timeout: Duration) -> Result<(), String> {
        let end = Instant::now() + timeout;
        while Instant::now() < end {
            if self.log_text().contains(needle) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(format!("no log line with {needle:?} within {timeout:?}"))
    }

    pub fn signal(&self, sig: libc::c_int) {
        // SAFETY: kill(2) to our own child, which is not reaped yet (`status` is None until
        // `wait_exit` reaps it).
        unsafe { libc::kill(self.pid, sig) };
    }

    /// Waits for the master to exit; its exit code.
    pub fn wait_exit(&mut self, timeout: Duration) -> Result<i32, String> {
        if let Some(s) = self.status {
            return Ok(s);
        }
        let end = Instant::now() + timeout;
        while Instant::now() < end {
            let mut status = 0;
            // SAFETY: waitpid(2) with WNOHANG on our own child, status written to a local.
            let r = unsafe { libc::waitpid(self.pid, &mut status, libc::WNOHANG) };
            if r == self.pid {
                let code = if libc::WIFEXITED(status) {
                    libc::WEXITSTATUS(status)
                } else {
                    128 + libc::WTERMSIG(status)
                };
                self.status = Some(code);
                return Ok(code);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(format!("the master did not exit within {timeout:?}"))
    }

    pub fn workers(&self) -> BTreeSet<i32> {
        children_of(self.pid)
    }

    pub fn wait_workers(
        &self,
        timeout: Duration,
        what: &str,
        ok: impl Fn(&BTreeSet<i32>) -> bool,
    ) -> Result<BTreeSet<i32>, String> {
        let end = Instant::now() + timeout;
        loop {
            let w = self.workers();
            if ok(&w) {
                return Ok(w);
            }
            if Instant::now() >= end {
                return Err(format!(
                    "worker pids {w:?} never matched `{what}` within {timeout:?}"
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Kills the whole tree and checks nothing is left.
    pub fn cleanup(&mut self) -> Result<(), String> {
        // SAFETY: kill(2) of the process group the master created (its pid), with SIGKILL; the
        // group holds only the master, its workers, and after a SIGUSR2 the new master and its
        // workers.
        unsafe { libc::kill(-self.pid, libc::SIGKILL) };
        self.wait_exit(Duration::from_secs(10))?;
        let end = Instant::now() + Duration::from_secs(10);
        loop {
            // This process is a child subreaper: orphans of the tree are reparented to it. Reap them.
            // SAFETY: waitpid(2) with WNOHANG and a null status pointer (allowed).
            while unsafe { libc::waitpid(-1, std::ptr::null_mut(), libc::WNOHANG) } > 0 {}
            // SAFETY: kill(2) with signal 0 only checks whether a process of the group exists.
            let alive = unsafe { libc::kill(-self.pid, 0) } == 0;
            if !alive {
                break;
            }
            if Instant::now() >= end {
                return Err(format!("processes of group {} still alive", self.pid));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        if std::env::var_os("PREFORK_TEST_KEEP_LOGS").is_none() {
            let _ = std::fs::remove_file(&self.log);
        }
        Ok(())
    }
}

/// Live (not zombie) children of `pid`, from /proc.
pub fn children_of(pid: i32) -> BTreeSet<i32> {
    let mut out = BTreeSet::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for entry in dir.flatten() {
        let Some(child) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{child}/stat")) else {
            continue;
        };
        let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
            continue;
        };
        let mut fields = rest.split_whitespace();
        let state = fields.next().unwrap_or("");
        let ppid: i32 = fields.next().and_then(|p| p.parse().ok()).unwrap_or(0);
        if ppid == pid && state != "Z" {
            out.insert(child);
        }
    }
    out
}

pub fn wait_children(pid: i32, n: usize) -> Result<BTreeSet<i32>, String> {
    let end = Instant::now() + LONG;
    loop {
        let w = children_of(pid);
        if w.len() == n {
            return Ok(w);
        }
        ensure(Instant::now() < end, || {
            format!("pid {pid} has children {w:?}, not {n}")
        })?;
        sleep_ms(50);
    }
}

/// The new master's pid, from the old master's log line after a SIGUSR2.
pub fn new_master_pid(m: &Master) -> Result<i32, String> {
    m.wait_log("as the new master (pid ", LONG)?;
    m.log_text()
        .split("as the new master (pid ")
        .nth(1)
        .and_then(|r| r.split(')').next())
        .and_then(|p| p.parse().ok())
        .ok_or_else(|| "no new master pid in the log".into())
}

/// SIGTERM to a new master that took over after a SIGUSR2 (an orphan this subreaper adopted),
/// then waits for it: `Ok` when it exits with status 0.
pub fn stop_adopted(pid: i32) -> Result<(), String> {
    // SAFETY: kill(2) of the new master, found in the log, in our tree.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let end = Instant::now() + LONG;
    loop {
        let mut status = 0;
        // SAFETY: waitpid(2) on the new master: this process is a subreaper, so the orphaned new
        // master is its child now. Status to a local.
        let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        if r == pid {
            return ensure(
                libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
                || format!("new master wait status {status:#x}"),
            );
        }
        ensure(Instant::now() < end, || {
            format!("the new master {pid} did not exit")
        })?;
        sleep_ms(50);
    }
}

pub fn finish(m: &mut Master, result: Result<(), String>) -> Result<(), String> {
    if result.is_err() {
        eprintln!(
            "---- master log ({}) ----\n{}",
            m.log.display(),
            m.log_text()
        );
    }
    let cleaned = m.cleanup();
    result.and(cleaned)
}

pub fn with_master(
    name: &str,
    configure: impl FnOnce(SupervisorBuilder) -> SupervisorBuilder,
    scenario: impl FnOnce(&mut Master) -> Result<(), String>,
) -> Result<(), String> {
    let mut m = simple_master(name, configure);
    let result = scenario(&mut m);
    finish(&mut m, result)
}

pub fn with_master_run(
    name: &str,
    configure: impl FnOnce(SupervisorBuilder) -> SupervisorBuilder,
    run: impl FnOnce(SupervisorBuilder) -> i32,
    scenario: impl FnOnce(&mut Master) -> Result<(), String>,
) -> Result<(), String> {
    let mut m = start_master(name, |_| {}, |b, l| configure(b.listener(l)), run);
    let result = scenario(&mut m);
    finish(&mut m, result)
}

pub fn no_children_left() -> Result<(), String> {
    // SAFETY: waitpid(2) with WNOHANG, status to a local: reaps nothing we still track (every master
    // was reaped by its scenario) and tells whether any child remains.
    let r = unsafe { libc::waitpid(-1, std::ptr::null_mut(), libc::WNOHANG) };
    let kids = children_of(std::process::id() as i32);
    ensure(r == -1 && kids.is_empty(), || {
        format!("the test process still has children: waitpid={r}, {kids:?}")
    })
}

// A client.

/// `GET path` over HTTP/1.0: the body of a 200 answer, or what went wrong.
pub fn get(addr: SocketAddr, path: &str) -> Result<String, String> {
    get_timed(addr, path).result
}

/// One request of a load run: when it was sent (after the write), and how it ended.
pub struct Outcome {
    pub sent: Instant,
    pub result: Result<String, String>,
}

pub fn get_timed(addr: SocketAddr, path: &str) -> Outcome {
    let mut sent = Instant::now();
    let result = (|| {
        let mut conn = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
            .map_err(|e| format!("connect: {e}"))?;
        conn.set_read_timeout(Some(Duration::from_secs(20))).ok();
        conn.write_all(format!("GET {path} HTTP/1.0\r\nHost: test\r\n\r\n").as_bytes())
            .map_err(|e| format!("write: {e}"))?;
        sent = Instant::now();
        let mut resp = String::new();
        conn.read_to_string(&mut resp)
            .map_err(|e| format!("read: {e}"))?;
        // The crate's server answers HTTP/1.1; hyper (the tower mode) answers a 1.0 request in
        // kind.
        if !(resp.starts_with("HTTP/1.1 200 OK") || resp.starts_with("HTTP/1.0 200 OK")) {
            return Err(format!("bad answer: {resp:?}"));
        }
        Ok(resp
            .rsplit("\r\n\r\n")
            .next()
            .unwrap_or("")
            .trim()
            .to_string())
    })();
    if result.is_err() {
        // Do not spin on a refused port.
        std::thread::sleep(Duration::from_millis(20));
    }
    Outcome { sent, result }
}

/// A bounded load: `threads` clients sending requests one after another until stopped.
pub struct Load {
    stop: Arc<AtomicBool>,
    handles: Vec<std::thread::JoinHandle<Vec<Outcome>>>,
}

impl Load {
    pub fn start(addr: SocketAddr, threads: usize, path: &'static str) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let handles = (0..threads)
            .map(|_| {
                let stop = stop.clone();
                std::thread::spawn(move || {
                    let mut out = Vec::new();
                    while !stop.load(Ordering::Relaxed) && out.len() < 5_000 {
                        out.push(get_timed(addr, path));
                    }
                    out
                })
            })
            .collect();
        Load { stop, handles }
    }

    pub fn finish(self) -> Vec<Outcome> {
        self.stop.store(true, Ordering::Relaxed);
        self.handles
            .into_iter()
            .flat_map(|h| h.join().expect("load thread"))
            .collect()
    }
}

pub fn sleep_ms(ms: u64) {
    std::thread::sleep(Duration::from_millis(ms));
}

pub fn ensure(cond: bool, msg: impl FnOnce() -> String) -> Result<(), String> {
    if cond {
        Ok(())
    } else {
        Err(msg())
    }
}

pub const LONG: Duration = Duration::from_secs(30);
