//! Runs `examples/hello_loopback` (one worker, port 0) and exercises its three routes over TCP,
//! then stops it by closing its stdin.

use crate::http_helpers::*;
use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
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

#[test]
fn hello_loopback_example_serves_the_three_routes() {
    let mut child = Running(
        Command::new(example_binary())
            .env("PORT", "0")
            .env("WEB_CONCURRENCY", "1")
            .env("EXIT_AFTER_SECS", "120")
            .stdin(Stdio::piped())
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
    let body = a.text();
    let sid = body
        .strip_prefix(r#"{"session_id": ""#)
        .and_then(|r| r.strip_suffix(r#""}"#))
        .unwrap_or_else(|| panic!("unexpected body {body}"))
        .to_string();
    assert_eq!(sid.len(), 36);
    c.send(&get(&format!("/get_hello_world?session_id={sid}")));
    let a = c.answer();
    assert_eq!(a.status, 200);
    assert_eq!(
        a.text(),
        format!(r#"{{"message": "Hello, World!", "session_id": "{sid}"}}"#)
    );
    c.send(&post("/hello_world", ""));
    assert_eq!(c.answer().status, 201);
    c.send(&get("/get_hello_world"));
    let a = c.answer();
    assert_eq!(a.status, 404);
    assert_eq!(a.text(), r#"{"error": "Invalid or missing session_id"}"#);

    // The naive self-call over TCP (ureq against its own port), with one worker: rescued at once.
    for _ in 0..2 {
        let start = Instant::now();
        c.send(&post("/call_hello_world_tcp", ""));
        let a = c.answer();
        let took = start.elapsed();
        assert_created_json_in_time(&a, took);
        assert!(a.text().starts_with(r#"{"session_id": ""#), "{}", a.text());
    }
    drop(c);

    // Closing stdin stops it cleanly.
    drop(child.0.stdin.take());
    let start = Instant::now();
    let status = loop {
        if let Some(st) = child.0.try_wait().unwrap() {
            break st;
        }
        assert!(
            start.elapsed() < WAIT,
            "the example did not stop on stdin EOF"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success());
    let mut rest = String::new();
    out.read_to_string(&mut rest).unwrap();
    assert!(rest.contains("curl -i -X POST"), "{rest}");
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
    // The self-call's warn line, once for the two requests, with who waits and the fix.
    let warned: Vec<&str> = log
        .lines()
        .filter(|l| l.starts_with("[WARN]") && l.contains("self-call over TCP"))
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
