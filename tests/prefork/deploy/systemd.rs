//! systemd: `NOTIFY_SOCKET`, sockets passed by socket activation (`LISTEN_FDS`), and
//! `examples/prefork_server` run as a program, alone and under `systemd-socket-activate`.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::helpers::*;
use crate::workers::app;

pub fn notify_socket() -> Result<(), String> {
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

/// `WatchdogSec=`: with `WATCHDOG_USEC` (here 0.3 s) the master sends `WATCHDOG=1` every half of
/// it to `NOTIFY_SOCKET` while it runs.
pub fn watchdog() -> Result<(), String> {
    use std::os::linux::net::SocketAddrExt;
    let name = format!("prefork-test-watchdog-{}", std::process::id());
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())
        .map_err(|e| e.to_string())?;
    let sock = UnixDatagram::bind_addr(&addr).map_err(|e| format!("bind {name}: {e}"))?;
    sock.set_read_timeout(Some(Duration::from_secs(1))).ok();
    let env_name = format!("@{name}");
    let mut m = start_master(
        "watchdog",
        move |_| {
            std::env::set_var("NOTIFY_SOCKET", &env_name);
            std::env::set_var("WATCHDOG_USEC", "300000");
            std::env::remove_var("WATCHDOG_PID");
        },
        |b, l| b.listener(l).workers(1),
        |b| b.run(app),
    );
    let result = (|| {
        let end = Instant::now() + LONG;
        let mut pets = Vec::new();
        let mut buf = [0u8; 512];
        while pets.len() < 6 {
            ensure(Instant::now() < end, || {
                format!("{} WATCHDOG=1 within {LONG:?}", pets.len())
            })?;
            if let Ok(n) = sock.recv(&mut buf) {
                if String::from_utf8_lossy(&buf[..n]).contains("WATCHDOG=1") {
                    pets.push(Instant::now());
                }
            }
        }
        // Every half of 0.3 s: 5 intervals take about 0.75 s (generous bounds: a busy machine).
        let took = pets[5] - pets[0];
        ensure(
            took >= Duration::from_millis(500) && took < Duration::from_secs(5),
            || format!("6 WATCHDOG=1 came over {took:?}, not about 0.75 s"),
        )?;
        m.signal(libc::SIGTERM);
        let code = m.wait_exit(LONG)?;
        ensure(code == 0, || format!("exit status {code}"))
    })();
    finish(&mut m, result)
}

pub fn systemd_listen_fds() -> Result<(), String> {
    let mut m = start_master(
        "listen-fds",
        |l| {
            // SAFETY: dup2(2) of the listener onto fd 3, as systemd passes it; fd 3 in this fresh
            // child holds nothing else we use.
            unsafe { libc::dup2(l.as_raw_fd(), 3) };
            std::env::set_var("LISTEN_FDS", "1");
            std::env::set_var("LISTEN_FDNAMES", "web");
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
        |b| match b.build() {
            Ok(s) => {
                log::info!("listener names {:?}", s.listener_names());
                s.run(app)
            }
            Err(e) => {
                log::error!("{e}");
                1
            }
        },
    );
    let result = (|| {
        m.wait_log("1 worker(s) ready", LONG)?;
        get(m.addr, "/")?;
        m.wait_log("passed by systemd (LISTEN_FDS)", LONG)?;
        m.wait_log("listener names [\"web\"]", LONG)?;
        m.signal(libc::SIGTERM);
        let code = m.wait_exit(LONG)?;
        ensure(code == 0, || format!("exit status {code}"))
    })();
    finish(&mut m, result)
}

/// `examples/prefork_server`, built beside this test by `cargo test` (not by `cargo test --test`).
pub fn example_binary() -> Option<PathBuf> {
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
pub struct Program {
    pub child: std::process::Child,
    pub lines: std::sync::mpsc::Receiver<String>,
    pub reader: Option<std::thread::JoinHandle<()>>,
    pub log: PathBuf,
}

impl Program {
    pub fn start(name: &str, mut cmd: std::process::Command) -> Result<Program, String> {
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

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn wait_line(&self, prefix: &str) -> Result<String, String> {
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

    pub fn wait_exit(&mut self) -> Result<i32, String> {
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

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Kills the group, reaps everything, and checks that nothing is left.
    pub fn finish(mut self, result: Result<(), String>) -> Result<(), String> {
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

pub fn http(addr: &str, method: &str, target: &str) -> Result<(u16, String), String> {
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

pub fn json_field(body: &str, field: &str) -> Option<String> {
    let after = &body[body.find(&format!("\"{field}\""))? + field.len() + 2..];
    let value = after
        .trim_start()
        .strip_prefix(':')?
        .trim_start()
        .strip_prefix('"')?;
    Some(value.split('"').next()?.to_string())
}

/// The seed app over two processes: a session stored by one worker is seen by the other; the
/// self-call works; `/metrics` shows the whole server and each of the two worker processes. The
/// worker pids the page shows.
pub fn check_example_app(addr: &str) -> Result<BTreeSet<i32>, String> {
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
    })?;
    // The naive self-call over TCP (it may land on the sibling process): the same answer, and
    // its session is seen by every worker.
    for _ in 0..4 {
        let (status, body) = http(addr, "POST", "/call_hello_world_tcp")?;
        ensure(status == 201, || {
            format!("POST /call_hello_world_tcp: {status} {body}")
        })?;
        let id = json_field(&body, "session_id").ok_or(format!("no session_id in {body}"))?;
        let (status, body) = http(addr, "GET", &format!("/get_hello_world?session_id={id}"))?;
        ensure(status == 200 && body.contains("Hello, World!"), || {
            format!("GET /get_hello_world after the TCP call: {status} {body}")
        })?;
    }
    // `/metrics` shows the whole server, whichever worker answers: the 10 GETs above.
    let (status, body) = http(addr, "GET", "/metrics")?;
    let sample = "prefork_http_requests_total{server=\"web\",method=\"GET\",class=\"2xx\"} ";
    let gets: u64 = body
        .lines()
        .find_map(|l| l.strip_prefix(sample)?.parse().ok())
        .unwrap_or(0);
    ensure(status == 200 && gets >= 10, || {
        format!("GET /metrics: {status}, {gets} GETs answered 2xx (10 sent): {body}")
    })?;
    check_worker_series(&body)
}

/// The per-process detail of the example's page: each `http_worker_` family once, with a sample
/// for `worker="0"` and `worker="1"`; the workers' request counts add up to the server's total
/// (no worker was replaced); the worker pids it shows.
fn check_worker_series(page: &str) -> Result<BTreeSet<i32>, String> {
    let value = |line: &str| line.rsplit(' ').next().unwrap_or("").parse::<u64>().ok();
    let sum = |prefix: &str| -> u64 {
        page.lines()
            .filter(|l| l.starts_with(prefix))
            .filter_map(value)
            .sum()
    };
    for family in [
        "prefork_http_worker_requests_total",
        "prefork_http_worker_requests_in_flight",
        "prefork_http_worker_open_connections",
        "prefork_http_worker_pid",
    ] {
        let kind = page.matches(&format!("# TYPE {family} ")).count();
        ensure(kind == 1, || {
            format!("{kind} TYPE lines for {family}: {page}")
        })?;
        for w in 0..2 {
            let sample = format!("{family}{{server=\"web\",worker=\"{w}\"}} ");
            ensure(page.contains(&sample), || {
                format!("no {sample:?} on the page: {page}")
            })?;
        }
    }
    let total = sum("prefork_http_requests_total{");
    let per_worker = sum("prefork_http_worker_requests_total{");
    ensure(total == per_worker && total > 0, || {
        format!("the workers' requests add up to {per_worker}, the server's to {total}: {page}")
    })?;
    ensure(sum("prefork_http_worker_requests_in_flight{") >= 1, || {
        format!("the scrape itself is not in flight in any worker: {page}")
    })?;
    let pids: BTreeSet<i32> = page
        .lines()
        .filter(|l| l.starts_with("prefork_http_worker_pid{"))
        .filter_map(|l| value(l).map(|p| p as i32))
        .collect();
    ensure(pids.len() == 2 && !pids.contains(&0), || {
        format!("the worker pids on the page are {pids:?}: {page}")
    })?;
    Ok(pids)
}

pub fn example_server() -> Result<(), String> {
    let Some(exe) = example_binary() else {
        println!("    (skipped: examples/prefork_server is not built; `cargo test` builds it)");
        return Ok(());
    };
    let mut cmd = std::process::Command::new(exe);
    // 127.0.0.1 only (PORT would listen on every interface).
    cmd.env_remove("PORT")
        .env("PREFORK_BIND", "127.0.0.1:0")
        .env("WEB_CONCURRENCY", "2");
    let mut p = Program::start("example", cmd)?;
    let result = (|| {
        let addr = p.wait_line("listening on http://")?;
        p.wait_line("master pid")?;
        let shown = check_example_app(&addr)?;
        let workers = wait_children(p.pid(), 2)?;
        ensure(shown == workers, || {
            format!("/metrics shows workers {shown:?}, the master's are {workers:?}")
        })?;
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

/// The example with `MAX_SESSIONS=3` on two worker processes: a new session past three deletes
/// the least recently used (a GET counts as a use), whose id then gets 404 "expired", whichever
/// process answers; after a flood of new sessions only the newest three answer, and the store's
/// directory holds no more than three files.
pub fn example_server_bounds_its_sessions() -> Result<(), String> {
    let Some(exe) = example_binary() else {
        println!("    (skipped: examples/prefork_server is not built; `cargo test` builds it)");
        return Ok(());
    };
    let dir = std::env::temp_dir().join(format!("prefork-test-sessions-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut cmd = std::process::Command::new(exe);
    cmd.env_remove("PORT")
        .env("PREFORK_BIND", "127.0.0.1:0")
        .env("WEB_CONCURRENCY", "2")
        .env("MAX_SESSIONS", "3")
        .env("STORE_DIR", &dir);
    let p = Program::start("example-sessions", cmd)?;
    let result = (|| {
        let addr = p.wait_line("listening on http://")?;
        p.wait_line("master pid")?;
        let new_session = || -> Result<String, String> {
            let (status, body) = http(&addr, "POST", "/hello_world")?;
            ensure(status == 201, || {
                format!("POST /hello_world: {status} {body}")
            })?;
            json_field(&body, "session_id").ok_or(format!("no session_id in {body}"))
        };
        let fetch = |id: &str| http(&addr, "GET", &format!("/get_hello_world?session_id={id}"));
        let (a, b, c) = (new_session()?, new_session()?, new_session()?);
        // `a` is used: `b` is now the least recently used, and the fourth session drops it.
        let (status, body) = fetch(&a)?;
        ensure(status == 200, || format!("GET {a}: {status} {body}"))?;
        let d = new_session()?;
        let (status, body) = fetch(&b)?;
        ensure(status == 404 && body.contains("expired"), || {
            format!("GET {b}, dropped: {status} {body}")
        })?;
        for id in [&a, &c, &d] {
            let (status, body) = fetch(id)?;
            ensure(status == 200, || format!("GET {id}: {status} {body}"))?;
        }
        let flood = (0..20)
            .map(|_| new_session())
            .collect::<Result<Vec<_>, _>>()?;
        let mut kept = Vec::new();
        for id in [&a, &b, &c, &d].into_iter().chain(&flood) {
            if fetch(id)?.0 == 200 {
                kept.push(id);
            }
        }
        ensure(kept == flood[17..].iter().collect::<Vec<_>>(), || {
            format!(
                "after the flood, these answer: {kept:?}; the newest: {:?}",
                &flood[17..]
            )
        })?;
        let files = std::fs::read_dir(&dir).map_err(|e| e.to_string())?.count();
        ensure(files <= 3, || format!("{files} files in {}", dir.display()))
    })();
    let _ = std::fs::remove_dir_all(&dir);
    p.finish(result)
}

/// The example under `systemd-socket-activate` (socket activation: LISTEN_FDS) with a
/// NOTIFY_SOCKET that must get READY=1 once the workers are up.
pub fn systemd_socket_activate() -> Result<(), String> {
    use std::os::linux::net::SocketAddrExt;
    let Some(exe) = example_binary() else {
        println!("    (skipped: examples/prefork_server is not built; `cargo test` builds it)");
        return Ok(());
    };
    let Some(tool) = crate::tools::tool_or_skip(&crate::tools::SYSTEMD_SOCKET_ACTIVATE)? else {
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
