//! Runs `examples/hello_loopback` (one worker, port 0) as a service runs (stdin from /dev/null)
//! and exercises its three routes over TCP, then stops it with SIGTERM: it answers the request
//! sent just before the signal and exits 0. And with a small `MAX_SESSIONS`, shows that what a
//! client can make it store stays bounded.

use crate::http_helpers::*;
use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

/// The example binary `cargo test` built next to this test (target/<profile>/examples/), or one
/// built now with `cargo build --example` when it is missing.
fn example_binary() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().unwrap().parent().unwrap();
    let bin = profile_dir.join("examples").join("hello_loopback");
    if !bin.exists() {
        let status = Command::new(env!("CARGO"))
            .args(["build", "--example", "hello_loopback"])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status()
            .expect("run cargo");
        assert!(status.success());
    }
    assert!(bin.exists(), "no example binary at {}", bin.display());
    bin
}

struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The `session_id` of a JSON body.
fn session_id(body: &str) -> String {
    let v: serde_json::Value =
        serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"));
    v["session_id"]
        .as_str()
        .unwrap_or_else(|| panic!("no session_id in {body}"))
        .to_string()
}

/// Start the example (one worker, port 0, the default log level, and `env`): the running child,
/// its stdout after the first line, and the address that line names.
fn start(env: &[(&str, &str)]) -> (Running, BufReader<ChildStdout>, SocketAddr) {
    let mut child = Running(
        Command::new(example_binary())
            // 127.0.0.1 only (PORT would listen on every interface), one worker thread.
            .env_remove("PORT")
            .env("PREFORK_BIND", "127.0.0.1:0")
            .env("WEB_CONCURRENCY", "1")
            .env_remove("RUST_LOG")
            .env_remove("MAX_SESSIONS")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the example"),
    );
    let mut out = BufReader::new(child.0.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    let addr: SocketAddr = line
        .trim()
        .strip_prefix("listening on http://")
        .and_then(|r| r.split(' ').next())
        .unwrap_or_else(|| panic!("unexpected first line: {line:?}"))
        .parse()
        .unwrap();
    (child, out, addr)
}

#[test]
fn hello_loopback_example_serves_the_three_routes() {
    let (mut child, mut out, addr) = start(&[]);

    let mut c = Client::new(addr);
    // The self-call, with one worker: answered at once.
    let start = Instant::now();
    c.send(&post("/call_hello_world", ""));
    let a = c.answer();
    assert_eq!(a.status, 201, "{}", a.text());
    assert!(start.elapsed() < Duration::from_secs(2));
    assert_eq!(
        a.header("content-type").as_deref(),
        Some("application/json")
    );
    let sid = session_id(&a.text());
    // A real (v4) UUID.
    assert_eq!(sid.len(), 36, "{sid}");
    assert_eq!(sid.as_bytes()[14], b'4', "{sid}");
    c.send(&get(&format!("/get_hello_world?session_id={sid}")));
    let a = c.answer();
    assert_eq!(a.status, 200);
    let stored: serde_json::Value = serde_json::from_str(&a.text()).unwrap();
    assert_eq!(
        stored,
        serde_json::json!({"message": "Hello, World!", "session_id": sid})
    );
    c.send(&post("/hello_world", ""));
    assert_eq!(c.answer().status, 201);
    c.send(&get("/get_hello_world"));
    let a = c.answer();
    assert_eq!(a.status, 404);
    assert_eq!(a.text(), r#"{"error":"Invalid or missing session_id"}"#);

    // The naive self-call over TCP (ureq against its own port), with one worker: rescued at once.
    for _ in 0..2 {
        let start = Instant::now();
        c.send(&post("/call_hello_world_tcp", ""));
        let a = c.answer();
        let took = start.elapsed();
        assert_created_json_in_time(&a, took);
        session_id(&a.text());
    }

    // A request sent, then SIGTERM before its answer is read: it is answered (and the connection
    // closed after it), and the example exits 0.
    c.send(&post("/call_hello_world", ""));
    let pid = child.0.id() as libc::pid_t;
    // SAFETY: kill(2) of our own child, not reaped yet (`Running` waits for it only on drop).
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let a = c.answer();
    assert_eq!(a.status, 201, "{}", a.text());
    session_id(&a.text());
    drop(c);
    let start = Instant::now();
    let status = loop {
        if let Some(st) = child.0.try_wait().unwrap() {
            break st;
        }
        assert!(
            start.elapsed() < WAIT,
            "the example did not stop on SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(0), "{status:?}");
    let mut rest = String::new();
    out.read_to_string(&mut rest).unwrap();
    assert!(rest.contains("curl -i -X POST"), "{rest}");
    assert!(rest.contains("stopped (ShutdownReport"), "{rest}");
    let mut log = String::new();
    child
        .0
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut log)
        .unwrap();
    assert!(
        log.contains(r#""POST /call_hello_world HTTP/1.1" 201 "#),
        "access log: {log}"
    );
    assert!(
        log.contains(r#""GET /get_hello_world HTTP/1.1" 404 "#),
        "access log: {log}"
    );
    assert!(
        log.contains("SIGTERM: stopping gracefully"),
        "no line for the signal: {log}"
    );
    // The Loopback used as designed: one info line, which does not read like a warning.
    let inline: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("called its own pool"))
        .collect();
    assert_eq!(inline.len(), 1, "{log}");
    assert!(inline[0].starts_with("[INFO"), "{}", inline[0]);
    assert!(inline[0].contains("as designed"), "{}", inline[0]);
    assert!(!inline[0].contains("deadlock"), "{}", inline[0]);
    // The self-call's warn line, once for the two requests, with who waits and the fix.
    let warned: Vec<&str> = log
        .lines()
        .filter(|l| l.starts_with("[WARN") && l.contains("self-call over TCP"))
        .collect();
    assert_eq!(warned.len(), 1, "{log}");
    let w = warned[0];
    assert!(
        w.contains("worker 0 (running `POST /call_hello_world_tcp HTTP/1.1`"),
        "{w}"
    );
    assert!(w.contains("is waiting on `POST /hello_world`"), "{w}");
    assert!(w.contains("would have deadlocked"), "{w}");
    assert!(w.contains("`Loopback`"), "{w}");
    assert!(w.contains("asynchronous"), "{w}");
}

/// `POST /hello_world` on `c`: the new session's id.
fn new_session(c: &mut Client) -> String {
    c.send(&post("/hello_world", ""));
    let a = c.answer();
    assert_eq!(a.status, 201, "{}", a.text());
    session_id(&a.text())
}

/// `GET /get_hello_world?session_id=<sid>` on `c`.
fn fetch(c: &mut Client, sid: &str) -> Answer {
    c.send(&get(&format!("/get_hello_world?session_id={sid}")));
    c.answer()
}

/// With `MAX_SESSIONS=3` the example keeps at most three sessions: each new one past that drops
/// the least recently used (a GET counts as a use), whose id is then answered 404 "expired"; a
/// flood of new sessions leaves only the newest three; the first drop is logged once, at `warn`.
#[test]
fn hello_loopback_example_keeps_at_most_max_sessions() {
    let (mut child, _out, addr) = start(&[("MAX_SESSIONS", "3")]);
    let mut c = Client::new(addr);
    let (a, b, c3) = (
        new_session(&mut c),
        new_session(&mut c),
        new_session(&mut c),
    );
    // `a` is used: `b` is now the least recently used, and the fourth session drops it.
    assert_eq!(fetch(&mut c, &a).status, 200);
    let d = new_session(&mut c);
    let dropped = fetch(&mut c, &b);
    assert_eq!(dropped.status, 404, "{}", dropped.text());
    let body: serde_json::Value = serde_json::from_str(&dropped.text()).unwrap();
    let error = body["error"].as_str().unwrap_or_default();
    assert!(error.contains("expired"), "{error}");
    assert!(error.contains("MAX_SESSIONS"), "{error}");
    for sid in [&a, &c3, &d] {
        let got = fetch(&mut c, sid);
        assert_eq!(got.status, 200, "{sid}: {}", got.text());
        let stored: serde_json::Value = serde_json::from_str(&got.text()).unwrap();
        assert_eq!(stored["session_id"], sid.as_str());
    }
    // A flood: of all the sessions made, only the newest three answer.
    let flood: Vec<String> = (0..20).map(|_| new_session(&mut c)).collect();
    let kept: Vec<&String> = [&a, &b, &c3, &d]
        .into_iter()
        .chain(&flood)
        .filter(|sid| fetch(&mut c, sid).status == 200)
        .collect();
    assert_eq!(kept, flood[17..].iter().collect::<Vec<_>>());

    let _ = child.0.kill();
    let _ = child.0.wait();
    let mut log = String::new();
    child
        .0
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut log)
        .unwrap();
    let full: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("session store full"))
        .collect();
    assert_eq!(full.len(), 1, "{log}");
    assert!(full[0].starts_with("[WARN"), "{}", full[0]);
}

/// `PORT` listens on every interface, as gunicorn (a template copied into a container is
/// reachable); `PREFORK_THREADS` sets the worker threads. Traffic to 127.0.0.1 only.
#[test]
fn hello_loopback_example_port_listens_on_every_interface() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
        .port();
    let mut child = Running(
        Command::new(example_binary())
            .env_remove("PREFORK_BIND")
            .env_remove("WEB_CONCURRENCY")
            .env("PORT", port.to_string())
            .env("PREFORK_THREADS", "2")
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the example"),
    );
    let mut out = BufReader::new(child.0.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert_eq!(
        line.trim(),
        format!("listening on http://0.0.0.0:{port} with 2 worker(s)")
    );
    let local: SocketAddr = ([127, 0, 0, 1], port).into();
    let (a, _) = roundtrip(local, &post("/hello_world", ""));
    assert_eq!(a.status, 201, "{}", a.text());
}

/// The routes are a router's: a known path with another method is 405 with `Allow`, an unknown
/// path the example's JSON 404, and the query string is percent-decoded (`%2D` is a dash).
#[test]
fn hello_loopback_example_answers_405_and_decodes_the_query() {
    let (_child, _out, addr) = start(&[]);
    let mut c = Client::new(addr);
    c.send(&get("/hello_world"));
    let a = c.answer();
    assert_eq!(a.status, 405, "{}", a.text());
    assert_eq!(a.header("allow").as_deref(), Some("POST"));
    assert_eq!(a.text(), r#"{"error":"Method Not Allowed"}"#);
    c.send(&post("/get_hello_world", ""));
    let a = c.answer();
    assert_eq!(a.status, 405, "{}", a.text());
    assert_eq!(a.header("allow").as_deref(), Some("GET, HEAD"));

    let sid = new_session(&mut c);
    let encoded = sid.replace('-', "%2D");
    assert_ne!(encoded, sid);
    let a = fetch(&mut c, &encoded);
    assert_eq!(a.status, 200, "{}", a.text());
    let stored: serde_json::Value = serde_json::from_str(&a.text()).unwrap();
    assert_eq!(stored["session_id"], sid.as_str());

    c.send(&get("/nowhere"));
    let a = c.answer();
    assert_eq!(a.status, 404);
    assert_eq!(a.text(), r#"{"error":"Not Found"}"#);
}
