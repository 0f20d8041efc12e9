//! Process tests of `prefork::Supervisor`, in their own `harness = false` target: the supervisor
//! forks, and a process that forks must not have other threads, so each scenario forks a child of this
//! test process that runs the master (in its own process group, its stderr in a log file), and drives
//! it from here with signals and 127.0.0.1 TCP. Every forked tree is killed at the end of its scenario,
//! and the test checks that nothing of it is left.
//!
//! Run one scenario: `cargo test --test prefork -- NAME`.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use prefork_pool::prefork::{SupervisorBuilder, Supervisor, WorkerEnv};

// ---------------------------------------------------------------------------------------------
// A logger to stderr (the master's stderr is its log file).

struct StderrLogger;

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

static LOGGER: StderrLogger = StderrLogger;

// ---------------------------------------------------------------------------------------------
// The worker: a tiny HTTP/1.0 responder. Not the library's business: a test fixture.

fn read_head(conn: &mut TcpStream) -> Option<String> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        match conn.read(&mut chunk) {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
        if buf.len() > 16 * 1024 {
            return None;
        }
    }
    let text = String::from_utf8_lossy(&buf).into_owned();
    Some(text.lines().next().unwrap_or("").to_string())
}

fn serve(env: &WorkerEnv, mut conn: TcpStream) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
    let Some(line) = read_head(&mut conn) else {
        return;
    };
    let path = line.split_whitespace().nth(1).unwrap_or("/").to_string();
    let hb = env.heartbeat();
    hb.request_started(Instant::now() + Duration::from_millis(300), &line);
    if let Some(ms) = path.strip_prefix("/sleep/") {
        std::thread::sleep(Duration::from_millis(ms.parse().unwrap_or(10)));
    } else if path == "/hang" {
        // Stops beating: the master's heartbeat check must kill this process.
        loop {
            std::thread::sleep(Duration::from_secs(1));
        }
    } else if path == "/stuck" {
        // Keeps beating (as a reactor thread would) but never finishes the request: the deadline
        // check must kill this process.
        loop {
            std::thread::sleep(Duration::from_millis(100));
            hb.beat();
        }
    }
    let body = format!("{}\n", std::process::id());
    let resp = format!(
        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = conn.write_all(resp.as_bytes());
    drop(conn);
    env.request_finished();
}

fn responder(env: &mut WorkerEnv) -> i32 {
    env.ready();
    loop {
        let stopping = env.is_stopping();
        if !stopping {
            match env.wait_for_listeners(Duration::from_millis(200)) {
                Ok(_) => {}
                Err(_) => return 1,
            }
        }
        // Accept until WouldBlock: when stopping, this drains the backlog before leaving.
        loop {
            let accepted = env.listeners()[0].tcp().unwrap().accept();
            match accepted {
                Ok((conn, _)) => serve(env, conn),
                Err(_) => break,
            }
        }
        if stopping {
            return 0;
        }
    }
}

/// A worker that runs requests on a crate `Pool` with 1 thread and a 300 ms deadline: the pool's
/// watchdog answers a stuck request at its deadline (504); the stuck thread keeps its
/// `Heartbeat::track` guard, so the master kills the process once the deadline plus `request_grace`
/// has passed.
fn pool_worker(env: &mut WorkerEnv) -> i32 {
    use prefork_pool::{Context, Pool};
    let hb = env.heartbeat();
    let pool = Pool::builder()
        .workers(1)
        .deadline(Duration::from_millis(300))
        .build(move |line: String, ctx: &Context| {
            let _running = hb.track(ctx.deadline(), &line);
            if line.contains("/never") {
                // A handler that ignores its cancelled Context and never returns.
                loop {
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
            format!("{}", std::process::id())
        });
    let Ok(pool) = pool else {
        return 1;
    };
    env.ready();
    loop {
        let stopping = env.is_stopping();
        if !stopping && env.wait_for_listeners(Duration::from_millis(200)).is_err() {
            return 1;
        }
        while let Ok((mut conn, _)) = env.listeners()[0].tcp().unwrap().accept() {
            let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
            let Some(line) = read_head(&mut conn) else {
                continue;
            };
            let (status, body) = match pool.call(line) {
                Ok(body) => (200, body),
                Err(e) => (e.http_status(), e.to_string()),
            };
            let body = format!("{body}\n");
            let _ = conn.write_all(
                format!(
                    "HTTP/1.1 {status} {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    if status == 200 { "OK" } else { "Error" },
                    body.len()
                )
                .as_bytes(),
            );
        }
        if stopping {
            pool.shutdown(Duration::from_secs(1));
            return 0;
        }
    }
}

fn pool_deadline_then_kill(m: &mut Master) -> Result<(), String> {
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

fn app() -> Result<fn(&mut WorkerEnv) -> i32, String> {
    Ok(responder)
}

// ---------------------------------------------------------------------------------------------
// Running a master in a forked child.

struct Master {
    pid: libc::pid_t,
    addr: SocketAddr,
    log: PathBuf,
    status: Option<i32>,
}

fn log_path(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("prefork-test-{}-{name}.log", std::process::id()))
}

/// Forks a master: `setup` runs in the child before the supervisor is built (environment, fds);
/// `configure` sets the builder; `run` runs it.
fn start_master(
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

fn simple_master(name: &str, configure: impl FnOnce(SupervisorBuilder) -> SupervisorBuilder) -> Master {
    start_master(
        name,
        |_| {},
        |b, l| configure(b.listener(l)),
        |b| b.run(app),
    )
}

impl Master {
    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn wait_log(&self, needle: &str, timeout: Duration) -> Result<(), String> {
        let end = Instant::now() + timeout;
        while Instant::now() < end {
            if self.log_text().contains(needle) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(format!("no log line with {needle:?} within {timeout:?}"))
    }

    fn signal(&self, sig: libc::c_int) {
        // SAFETY: kill(2) to our own child, which is not reaped yet (`status` is None until
        // `wait_exit` reaps it).
        unsafe { libc::kill(self.pid, sig) };
    }

    /// Waits for the master to exit; its exit code.
    fn wait_exit(&mut self, timeout: Duration) -> Result<i32, String> {
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

    fn workers(&self) -> BTreeSet<i32> {
        children_of(self.pid)
    }

    fn wait_workers(
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
    fn cleanup(&mut self) -> Result<(), String> {
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
fn children_of(pid: i32) -> BTreeSet<i32> {
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

// ---------------------------------------------------------------------------------------------
// A client.

/// `GET path` over HTTP/1.0: the body of a 200 answer, or what went wrong.
fn get(addr: SocketAddr, path: &str) -> Result<String, String> {
    get_timed(addr, path).result
}

/// One request of a load run: when it was sent (after the write), and how it ended.
struct Outcome {
    sent: Instant,
    result: Result<String, String>,
}

fn get_timed(addr: SocketAddr, path: &str) -> Outcome {
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
        if !resp.starts_with("HTTP/1.1 200 OK") {
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
struct Load {
    stop: Arc<AtomicBool>,
    handles: Vec<std::thread::JoinHandle<Vec<Outcome>>>,
}

impl Load {
    fn start(addr: SocketAddr, threads: usize, path: &'static str) -> Load {
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

    fn finish(self) -> Vec<Outcome> {
        self.stop.store(true, Ordering::Relaxed);
        self.handles
            .into_iter()
            .flat_map(|h| h.join().expect("load thread"))
            .collect()
    }
}

fn sleep_ms(ms: u64) {
    std::thread::sleep(Duration::from_millis(ms));
}

fn ensure(cond: bool, msg: impl FnOnce() -> String) -> Result<(), String> {
    if cond {
        Ok(())
    } else {
        Err(msg())
    }
}

const LONG: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------------------------------------
// Scenarios. Each returns Err with what went wrong; the master's log is printed on failure.

fn two_workers_serve(m: &mut Master) -> Result<(), String> {
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

fn kill9_respawns(m: &mut Master) -> Result<(), String> {
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

fn term_under_load(m: &mut Master) -> Result<(), String> {
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
fn hup_under_load(
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

fn hup_reloads(m: &mut Master) -> Result<(), String> {
    hup_under_load(m, "/sleep/20", 400)?;
    m.wait_log("ready after the reload", LONG)?;
    m.signal(libc::SIGTERM);
    let code = m.wait_exit(LONG)?;
    ensure(code == 0, || format!("exit status {code}"))
}

fn ttin_ttou(m: &mut Master) -> Result<(), String> {
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

fn boot_error(m: &mut Master) -> Result<(), String> {
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

fn restart_intensity(m: &mut Master) -> Result<(), String> {
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

fn heartbeat_kill(m: &mut Master) -> Result<(), String> {
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

fn deadline_kill(m: &mut Master) -> Result<(), String> {
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

fn max_requests_recycle(m: &mut Master) -> Result<(), String> {
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

fn notify_socket() -> Result<(), String> {
    use std::os::linux::net::SocketAddrExt;
    let name = format!("prefork-test-notify-{}", std::process::id());
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())
        .map_err(|e| e.to_string())?;
    let sock = UnixDatagram::bind_addr(&addr).map_err(|e| format!("bind {name}: {e}"))?;
    sock.set_read_timeout(Some(Duration::from_secs(1))).ok();
    let env_name = format!("@{name}");
    let mut m = start_master(
        "notify",
        move |_| std::env::set_var("NOTIFY_SOCKET", &env_name),
        |b, l| b.listener(l).workers(2),
        |b| b.run(app),
    );
    let result = (|| {
        let end = Instant::now() + LONG;
        let mut got = Vec::new();
        let mut buf = [0u8; 512];
        while Instant::now() < end {
            if let Ok(n) = sock.recv(&mut buf) {
                let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
                got.push(msg.clone());
                if msg.contains("READY=1") {
                    let log = m.log_text();
                    let ready = log.matches("ready in").count();
                    ensure(ready >= 2, || {
                        format!("READY=1 came when {ready} worker(s) were ready")
                    })?;
                    ensure(msg.contains("STATUS=2 worker(s) ready"), || {
                        format!("no worker count in {msg:?}")
                    })?;
                    get(m.addr, "/")?;
                    m.signal(libc::SIGTERM);
                    let end = Instant::now() + LONG;
                    while Instant::now() < end {
                        if let Ok(n) = sock.recv(&mut buf) {
                            if String::from_utf8_lossy(&buf[..n]).contains("STOPPING=1") {
                                let code = m.wait_exit(LONG)?;
                                return ensure(code == 0, || format!("exit status {code}"));
                            }
                        }
                    }
                    return Err("no STOPPING=1".into());
                }
            }
        }
        Err(format!("no READY=1; got {got:?}"))
    })();
    finish(&mut m, result)
}

fn systemd_listen_fds() -> Result<(), String> {
    let mut m = start_master(
        "listen-fds",
        |l| {
            // SAFETY: dup2(2) of the listener onto fd 3, as systemd passes it; fd 3 in this fresh
            // child holds nothing else we use.
            unsafe { libc::dup2(l.as_raw_fd(), 3) };
            std::env::set_var("LISTEN_FDS", "1");
            std::env::set_var("LISTEN_PID", std::process::id().to_string());
        },
        |b, l| {
            if l.as_raw_fd() == 3 {
                std::mem::forget(l); // fd 3 is now systemd's socket
            } else {
                drop(l);
            }
            b.workers(1)
        },
        |b| b.run(app),
    );
    let result = (|| {
        m.wait_log("1 worker(s) ready", LONG)?;
        get(m.addr, "/")?;
        m.wait_log("passed by systemd (LISTEN_FDS)", LONG)?;
        m.signal(libc::SIGTERM);
        let code = m.wait_exit(LONG)?;
        ensure(code == 0, || format!("exit status {code}"))
    })();
    finish(&mut m, result)
}

fn check_config() -> Result<(), String> {
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

fn finish(m: &mut Master, result: Result<(), String>) -> Result<(), String> {
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

fn with_master(
    name: &str,
    configure: impl FnOnce(SupervisorBuilder) -> SupervisorBuilder,
    scenario: impl FnOnce(&mut Master) -> Result<(), String>,
) -> Result<(), String> {
    let mut m = simple_master(name, configure);
    let result = scenario(&mut m);
    finish(&mut m, result)
}

fn with_master_run(
    name: &str,
    configure: impl FnOnce(SupervisorBuilder) -> SupervisorBuilder,
    run: impl FnOnce(SupervisorBuilder) -> i32,
    scenario: impl FnOnce(&mut Master) -> Result<(), String>,
) -> Result<(), String> {
    let mut m = start_master(name, |_| {}, |b, l| configure(b.listener(l)), run);
    let result = scenario(&mut m);
    finish(&mut m, result)
}

fn no_children_left() -> Result<(), String> {
    // SAFETY: waitpid(2) with WNOHANG, status to a local: reaps nothing we still track (every master
    // was reaped by its scenario) and tells whether any child remains.
    let r = unsafe { libc::waitpid(-1, std::ptr::null_mut(), libc::WNOHANG) };
    let kids = children_of(std::process::id() as i32);
    ensure(r == -1 && kids.is_empty(), || {
        format!("the test process still has children: waitpid={r}, {kids:?}")
    })
}

fn second_term_is_fast(m: &mut Master) -> Result<(), String> {
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

fn graceful_timeout_kills(m: &mut Master) -> Result<(), String> {
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

fn boot_timeout(m: &mut Master) -> Result<(), String> {
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

fn unix_pidfile_usr1_preload() -> Result<(), String> {
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
                .bind_unix(&sock2)
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
        m.signal(libc::SIGTERM);
        let code = m.wait_exit(LONG)?;
        ensure(code == 0, || format!("exit status {code}"))?;
        ensure(!pidfile.exists(), || "the pidfile was left behind".into())
    })();
    let _ = std::fs::remove_dir_all(&dir);
    finish(&mut m, result)
}

/// `examples/prefork_server`, built beside this test by `cargo test` (not by `cargo test --test`).
fn example_binary() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let path = exe
        .parent()?
        .parent()?
        .join("examples")
        .join("prefork_server");
    path.exists().then_some(path)
}

/// A program run in its own process group, its stdout read line by line on a thread, its stderr in
/// a log file.
struct Program {
    child: std::process::Child,
    lines: std::sync::mpsc::Receiver<String>,
    reader: Option<std::thread::JoinHandle<()>>,
    log: PathBuf,
}

impl Program {
    fn start(name: &str, mut cmd: std::process::Command) -> Result<Program, String> {
        use std::os::unix::process::CommandExt;
        let log = log_path(name);
        let file = std::fs::File::create(&log).map_err(|e| e.to_string())?;
        let mut child = cmd
            .process_group(0)
            .stdout(std::process::Stdio::piped())
            .stderr(file)
            .spawn()
            .map_err(|e| format!("cannot start {cmd:?}: {e}"))?;
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = std::sync::mpsc::channel();
        let reader = std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                let _ = tx.send(line);
            }
        });
        Ok(Program {
            child,
            lines,
            reader: Some(reader),
            log,
        })
    }

    fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    fn wait_line(&self, prefix: &str) -> Result<String, String> {
        let end = Instant::now() + LONG;
        while Instant::now() < end {
            if let Ok(line) = self.lines.recv_timeout(Duration::from_millis(200)) {
                if let Some(rest) = line.strip_prefix(prefix) {
                    return Ok(rest.to_string());
                }
            }
        }
        Err(format!("no stdout line starting with {prefix:?}"))
    }

    fn wait_exit(&mut self) -> Result<i32, String> {
        let end = Instant::now() + LONG;
        while Instant::now() < end {
            if let Some(status) = self.child.try_wait().map_err(|e| e.to_string())? {
                return status
                    .code()
                    .ok_or_else(|| format!("ended by a signal: {status:?}"));
            }
            sleep_ms(50);
        }
        Err("the program did not exit".into())
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Kills the group, reaps everything, and checks that nothing is left.
    fn finish(mut self, result: Result<(), String>) -> Result<(), String> {
        if result.is_err() {
            eprintln!(
                "---- log ({}) ----\n{}",
                self.log.display(),
                self.log_text()
            );
        }
        let pgid = self.pid();
        // SAFETY: kill(2) of the process group this program leads (process_group(0)).
        unsafe { libc::kill(-pgid, libc::SIGKILL) };
        let _ = self.child.wait();
        let end = Instant::now() + Duration::from_secs(10);
        // SAFETY: waitpid(2) with WNOHANG and a null status pointer; kill(2) with signal 0 only
        // checks whether a process of the group exists.
        while unsafe { libc::kill(-pgid, 0) } == 0 && Instant::now() < end {
            while unsafe { libc::waitpid(-1, std::ptr::null_mut(), libc::WNOHANG) } > 0 {}
            sleep_ms(50);
        }
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
        if std::env::var_os("PREFORK_TEST_KEEP_LOGS").is_none() {
            let _ = std::fs::remove_file(&self.log);
        }
        result
    }
}

fn http(addr: &str, method: &str, target: &str) -> Result<(u16, String), String> {
    let mut conn = TcpStream::connect(addr).map_err(|e| format!("connect {addr}: {e}"))?;
    conn.set_read_timeout(Some(Duration::from_secs(20))).ok();
    conn.write_all(
        format!("{method} {target} HTTP/1.0\r\nHost: test\r\nContent-Length: 0\r\n\r\n").as_bytes(),
    )
    .map_err(|e| format!("write: {e}"))?;
    let mut resp = String::new();
    conn.read_to_string(&mut resp)
        .map_err(|e| format!("read: {e}"))?;
    let status = resp
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("bad answer {resp:?}"))?;
    Ok((
        status,
        resp.rsplit("\r\n\r\n").next().unwrap_or("").to_string(),
    ))
}

fn json_field(body: &str, field: &str) -> Option<String> {
    let after = &body[body.find(&format!("\"{field}\""))? + field.len() + 2..];
    let value = after
        .trim_start()
        .strip_prefix(':')?
        .trim_start()
        .strip_prefix('"')?;
    Some(value.split('"').next()?.to_string())
}

/// The seed app over two processes: a session stored by one worker is seen by the other; the
/// self-call works; TERM exits 0 and leaves no process.
fn check_example_app(addr: &str) -> Result<(), String> {
    let (status, body) = http(addr, "POST", "/hello_world")?;
    ensure(status == 201, || {
        format!("POST /hello_world: {status} {body}")
    })?;
    let id = json_field(&body, "session_id").ok_or(format!("no session_id in {body}"))?;
    for _ in 0..6 {
        let (status, body) = http(addr, "GET", &format!("/get_hello_world?session_id={id}"))?;
        ensure(status == 200 && body.contains("Hello, World!"), || {
            format!("GET /get_hello_world: {status} {body}")
        })?;
    }
    let (status, body) = http(addr, "POST", "/call_hello_world")?;
    ensure(status == 201, || {
        format!("POST /call_hello_world: {status} {body}")
    })
}

fn example_server() -> Result<(), String> {
    let Some(exe) = example_binary() else {
        println!("    (skipped: examples/prefork_server is not built; `cargo test` builds it)");
        return Ok(());
    };
    let mut cmd = std::process::Command::new(exe);
    cmd.env("PORT", "0").env("WEB_CONCURRENCY", "2");
    let mut p = Program::start("example", cmd)?;
    let result = (|| {
        let addr = p.wait_line("listening on http://")?;
        p.wait_line("master pid")?;
        check_example_app(&addr)?;
        let workers = wait_children(p.pid(), 2)?;
        // SAFETY: kill(2) of our child, the example's master, not reaped yet.
        unsafe { libc::kill(p.pid(), libc::SIGTERM) };
        let code = p.wait_exit()?;
        ensure(code == 0, || format!("exit status {code} after SIGTERM"))?;
        for w in workers {
            // SAFETY: kill(2) with signal 0 only checks whether the process exists.
            let alive = unsafe { libc::kill(w, 0) } == 0;
            ensure(!alive, || format!("worker {w} outlived the master"))?;
        }
        Ok(())
    })();
    p.finish(result)
}

/// The example under `systemd-socket-activate` (socket activation: LISTEN_FDS) with a
/// NOTIFY_SOCKET that must get READY=1 once the workers are up.
fn systemd_socket_activate() -> Result<(), String> {
    use std::os::linux::net::SocketAddrExt;
    let Some(exe) = example_binary() else {
        println!("    (skipped: examples/prefork_server is not built; `cargo test` builds it)");
        return Ok(());
    };
    let tool = [
        "/usr/bin/systemd-socket-activate",
        "/bin/systemd-socket-activate",
    ]
    .into_iter()
    .find(|p| std::path::Path::new(p).exists());
    let Some(tool) = tool else {
        println!(
            "    (skipped: systemd-socket-activate is not installed: apt-get install systemd)"
        );
        return Ok(());
    };
    let name = format!("prefork-test-sd-{}", std::process::id());
    let notify = UnixDatagram::bind_addr(
        &std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())
            .map_err(|e| e.to_string())?,
    )
    .map_err(|e| e.to_string())?;
    notify
        .set_read_timeout(Some(Duration::from_millis(200)))
        .ok();
    // A free port: bind, read it, release it (a tiny race with other programs; 127.0.0.1 only).
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| e.to_string())?
        .port();
    let addr = format!("127.0.0.1:{port}");
    let mut cmd = std::process::Command::new(tool);
    cmd.arg("-l")
        .arg(&addr)
        .arg("-E")
        .arg("WEB_CONCURRENCY=2")
        .arg("-E")
        .arg(format!("NOTIFY_SOCKET=@{name}"))
        .arg(exe);
    let mut p = Program::start("socket-activate", cmd)?;
    let result = (|| {
        // systemd-socket-activate starts the program on the first connection.
        let mut first = None;
        let end = Instant::now() + LONG;
        while first.is_none() {
            match http(&addr, "GET", "/") {
                Ok(r) => first = Some(r),
                Err(e) => {
                    ensure(Instant::now() < end, || format!("no answer on {addr}: {e}"))?;
                    sleep_ms(100);
                }
            }
        }
        let mut buf = [0u8; 512];
        let mut got = Vec::new();
        let end = Instant::now() + LONG;
        loop {
            if let Ok(n) = notify.recv(&mut buf) {
                let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
                if msg.contains("READY=1") {
                    ensure(msg.contains("STATUS=2 worker(s) ready"), || {
                        format!("READY=1 without the 2 workers: {msg:?}")
                    })?;
                    break;
                }
                got.push(msg);
            }
            ensure(Instant::now() < end, || format!("no READY=1; got {got:?}"))?;
        }
        let log = p.log_text();
        ensure(log.contains("passed by systemd (LISTEN_FDS)"), || {
            "the example did not take the systemd socket".into()
        })?;
        check_example_app(&addr)?;
        // SAFETY: kill(2) of our child (systemd-socket-activate executed the example in place).
        unsafe { libc::kill(p.pid(), libc::SIGTERM) };
        let code = p.wait_exit()?;
        ensure(code == 0, || format!("exit status {code} after SIGTERM"))
    })();
    p.finish(result)
}

/// The crate's HTTP server in each worker process ([`Supervisor::serve_http`]): 2 processes serve;
/// HUP under load fails no request; a handler stuck past its deadline gets 504 from the Pool's
/// watchdog, then the master replaces its process; TERM exits 0.
fn serve_http(m: &mut Master) -> Result<(), String> {
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

fn http_handler(
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

// ---------------------------------------------------------------------------------------------
// A handler that calls its own service over TCP, and lands on the sibling worker process.

/// The server's address, set in the forked master (before its workers are forked).
static SELF_ADDR: std::sync::OnceLock<SocketAddr> = std::sync::OnceLock::new();
/// [`sibling_dir`] of the test process, set in the forked master.
static SIBLING_DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();

/// Where each worker process marks that it runs an `/outer` request (`busy-<pid>`) and that its
/// inner call was answered (`done-<pid>`).
fn sibling_dir() -> PathBuf {
    std::env::temp_dir().join(format!("prefork-test-{}-sibling", std::process::id()))
}

/// The pids of the `{prefix}<pid>` files in `dir`.
fn marked(dir: &std::path::Path, prefix: &str) -> BTreeSet<i32> {
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
fn wait_marked(dir: &std::path::Path, prefix: &str, timeout: Duration) {
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
fn sibling_handler(
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
            .set("Connection", "close")
            .timeout(Duration::from_secs(20))
            .call();
        inner = match answer {
            Ok(r) => r.into_string().unwrap_or_default(),
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
fn wait_stopped(pid: i32) {
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
fn sibling_self_call(m: &mut Master) -> Result<(), String> {
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

/// The environment variable that makes this binary a master: what a SIGUSR2 upgrade re-executes.
const ROLE: &str = "PREFORK_TEST_ROLE";

fn usr2_upgrade() -> Result<(), String> {
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
            m.wait_log("as the new master (pid ", LONG)?;
            let log = m.log_text();
            let new_pid: i32 = log
                .split("as the new master (pid ")
                .nth(1)
                .and_then(|r| r.split(')').next())
                .and_then(|p| p.parse().ok())
                .ok_or("no new master pid in the log")?;
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
        // SAFETY: kill(2) of the new master, found in the log, in our tree.
        unsafe { libc::kill(new_pid, libc::SIGTERM) };
        let end = Instant::now() + LONG;
        loop {
            let mut status = 0;
            // SAFETY: waitpid(2) on the new master: this process is a subreaper, so the orphaned new
            // master is its child now. Status to a local.
            let r = unsafe { libc::waitpid(new_pid, &mut status, libc::WNOHANG) };
            if r == new_pid {
                return ensure(
                    libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
                    || format!("new master wait status {status:#x}"),
                );
            }
            ensure(Instant::now() < end, || {
                "the new master did not exit".into()
            })?;
            sleep_ms(50);
        }
    })();
    finish(&mut m, result)
}

fn wait_children(pid: i32, n: usize) -> Result<BTreeSet<i32>, String> {
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

fn main() {
    log::set_logger(&LOGGER).expect("logger");
    log::set_max_level(log::LevelFilter::Info);
    if std::env::var(ROLE).as_deref() == Ok("usr2-master") {
        // Re-executed by a SIGUSR2 upgrade: be the new master, on the inherited listeners.
        std::env::remove_var(ROLE);
        std::process::exit(Supervisor::builder().workers(2).run(app));
    }
    // Orphans of the forked trees (a new master after SIGUSR2, workers of a killed master) are
    // reparented to this process, so the test can reap them and check that none is left.
    // SAFETY: prctl(2) PR_SET_CHILD_SUBREAPER only sets a process attribute.
    unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    let filters: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    type Scenario = Box<dyn FnOnce() -> Result<(), String>>;
    let scenarios: Vec<(&str, Scenario)> = vec![
        ("check_config", Box::new(check_config)),
        (
            "two_workers_serve",
            Box::new(|| with_master("serve", |b| b.workers(2), two_workers_serve)),
        ),
        (
            "kill9_respawns",
            Box::new(|| with_master("kill9", |b| b.workers(2), kill9_respawns)),
        ),
        (
            "term_under_load",
            Box::new(|| with_master("term", |b| b.workers(2), term_under_load)),
        ),
        (
            "hup_reloads",
            Box::new(|| with_master("hup", |b| b.workers(2), hup_reloads)),
        ),
        (
            "ttin_ttou",
            Box::new(|| with_master("ttin", |b| b.workers(2), ttin_ttou)),
        ),
        (
            "boot_error",
            Box::new(|| {
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
                let r = boot_error(&mut m);
                finish(&mut m, r)
            }),
        ),
        (
            "restart_intensity",
            Box::new(|| {
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
                let r = restart_intensity(&mut m);
                finish(&mut m, r)
            }),
        ),
        (
            "heartbeat_kill",
            Box::new(|| {
                with_master(
                    "heartbeat",
                    |b| b.workers(2).heartbeat_timeout(Duration::from_millis(1500)),
                    heartbeat_kill,
                )
            }),
        ),
        (
            "deadline_kill",
            Box::new(|| {
                with_master(
                    "deadline",
                    |b| {
                        b.workers(1)
                            .heartbeat_timeout(Duration::from_secs(30))
                            .request_grace(Duration::from_millis(500))
                    },
                    deadline_kill,
                )
            }),
        ),
        (
            "max_requests_recycle",
            Box::new(|| {
                with_master(
                    "recycle",
                    |b| b.workers(1).max_requests(5, 0),
                    max_requests_recycle,
                )
            }),
        ),
        ("notify_socket", Box::new(notify_socket)),
        ("systemd_listen_fds", Box::new(systemd_listen_fds)),
        ("usr2_upgrade", Box::new(usr2_upgrade)),
        (
            "second_term_is_fast",
            Box::new(|| with_master("term2", |b| b.workers(1), second_term_is_fast)),
        ),
        (
            "graceful_timeout_kills",
            Box::new(|| {
                with_master(
                    "graceful",
                    |b| b.workers(1).graceful_timeout(Duration::from_secs(1)),
                    graceful_timeout_kills,
                )
            }),
        ),
        (
            "boot_timeout",
            Box::new(|| {
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
                let r = boot_timeout(&mut m);
                finish(&mut m, r)
            }),
        ),
        (
            "unix_pidfile_usr1_preload",
            Box::new(unix_pidfile_usr1_preload),
        ),
        (
            "pool_deadline_then_kill",
            Box::new(|| {
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
                let r = pool_deadline_then_kill(&mut m);
                finish(&mut m, r)
            }),
        ),
        (
            "serve_http",
            Box::new(|| {
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
                                s.workers(2)
                                    .deadline(Duration::from_millis(1000))
                                    .access_log(false)
                                    .max_spare(0)
                            },
                            || Ok::<_, String>(http_handler),
                        )
                    },
                );
                let r = serve_http(&mut m);
                finish(&mut m, r)
            }),
        ),
        (
            "serve_http_term_under_load",
            Box::new(|| {
                let mut m = start_master(
                    "http-term",
                    |_| {},
                    |b, l| b.listener(l).workers(2),
                    |b| {
                        b.serve_http(
                            |s| s.workers(2).access_log(false).max_spare(0),
                            || Ok::<_, String>(http_handler),
                        )
                    },
                );
                let r = term_under_load(&mut m);
                finish(&mut m, r)
            }),
        ),
        (
            "serve_http_max_requests",
            Box::new(|| {
                with_master_run(
                    "http-recycle",
                    |b| b.workers(1).max_requests(5, 0),
                    |b| {
                        b.serve_http(
                            |s| s.workers(2).access_log(false).max_spare(0),
                            || Ok::<_, String>(http_handler),
                        )
                    },
                    max_requests_recycle,
                )
            }),
        ),
        (
            "serve_http_sibling_self_call",
            Box::new(|| {
                let dir = sibling_dir();
                let _ = std::fs::remove_dir_all(&dir);
                std::fs::create_dir_all(&dir).expect("create the test's temp dir");
                let sibling_dir_of_test = dir.clone();
                let mut m = start_master(
                    "http-sibling",
                    |l| {
                        let _ = SELF_ADDR.set(l.local_addr().expect("listener address"));
                        let _ = SIBLING_DIR.set(sibling_dir_of_test);
                    },
                    |b, l| b.listener(l).workers(2),
                    |b| {
                        b.serve_http(
                            |s| {
                                // Two spare threads: one for this process's own self-call, one
                                // for the sibling's, which may arrive at the same time.
                                s.workers(1)
                                    .max_spare(2)
                                    .deadline(Duration::from_secs(5))
                                    .access_log(false)
                            },
                            || Ok::<_, String>(sibling_handler),
                        )
                    },
                );
                let r = sibling_self_call(&mut m);
                let r = finish(&mut m, r);
                let _ = std::fs::remove_dir_all(&dir);
                r
            }),
        ),
        ("example_server", Box::new(example_server)),
        ("systemd_socket_activate", Box::new(systemd_socket_activate)),
    ];
    let (mut passed, mut failed) = (0, 0);
    for (name, scenario) in scenarios {
        if !filters.is_empty() && !filters.iter().any(|f| name.contains(f.as_str())) {
            continue;
        }
        let started = Instant::now();
        let result = scenario().and_then(|()| no_children_left());
        match result {
            Ok(()) => {
                passed += 1;
                println!(
                    "test {name} ... ok ({:.1} s)",
                    started.elapsed().as_secs_f64()
                );
            }
            Err(e) => {
                failed += 1;
                println!("test {name} ... FAILED: {e}");
            }
        }
    }
    println!("{passed} passed, {failed} failed");
    if failed > 0 {
        std::process::exit(1);
    }
}
