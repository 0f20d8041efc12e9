//! Handlers that never return (they ignore `Context::is_cancelled`): once the budget of stuck
//! threads (`max_retired`) is spent, a thread-mode server must not go on answering 504 to
//! everything while it looks alive. By default it exits with `EXIT_STUCK` and the stuck report,
//! so that its service manager restarts it; with `StuckPolicy::FailLiveness` its liveness route
//! fails from then on while it serves with the workers left.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use prefork_pool::http::{Server, StuckPolicy, EXIT_STUCK};

use crate::http_helpers::{get, roundtrip, Answer, WAIT};

/// Set in the child process of [`the_default_exits_with_the_stuck_report_and_answers_what_was_queued`].
const CHILD: &str = "PREFORK_POOL_HTTP_TEST_STUCK_CHILD";

fn ask(addr: SocketAddr, path: &str) -> Answer {
    roundtrip(addr, &get(path)).0
}

#[test]
fn with_fail_liveness_the_spent_budget_fails_liveness_and_the_server_serves_on() {
    static RELEASE: AtomicBool = AtomicBool::new(false);
    let server = Server::builder()
        .bind("127.0.0.1:0")
        .access_log(false)
        .pool(|p| {
            p.workers(2)
                .deadline(Duration::from_millis(300))
                .max_retired(1)
        })
        .health_routes("/readyz", "/livez")
        .when_stuck(StuckPolicy::FailLiveness)
        .serve(|req, _ctx| {
            if req.uri().path() == "/never" {
                // Never returns while the test runs (bounded, so that the thread ends after).
                let end = Instant::now() + Duration::from_secs(60);
                while !RELEASE.load(Ordering::SeqCst) && Instant::now() < end {
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
            "ok"
        })
        .unwrap();
    let addr = server.local_addrs()[0];
    assert_eq!(ask(addr, "/livez").status, 200);
    // Both workers stuck: one is retired and replaced (the budget of 1), the other cannot be.
    let stuck: Vec<_> = (0..2)
        .map(|_| std::thread::spawn(move || ask(addr, "/never").status))
        .collect();
    for t in stuck {
        assert_eq!(t.join().unwrap(), 504);
    }
    let start = Instant::now();
    let live = loop {
        let a = ask(addr, "/livez");
        if a.status == 503 {
            break a;
        }
        assert!(
            start.elapsed() < WAIT,
            "liveness still 200 with the budget of stuck threads spent"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let why = live.text();
    assert!(
        why.contains("max_retired") && why.contains("GET /never"),
        "the liveness answer names the cause and the stuck route: {why}"
    );
    // The replaced worker still serves.
    let a = ask(addr, "/");
    assert_eq!((a.status, a.text().as_str()), (200, "ok"));
    RELEASE.store(true, Ordering::SeqCst);
    server.shutdown(WAIT);
}

/// The server of the test below, in a process of its own (run by it; ignored otherwise).
#[test]
#[ignore = "the child process of the_default_exits_with_the_stuck_report_and_answers_what_was_queued"]
fn stuck_child_server() {
    if std::env::var_os(CHILD).is_none() {
        return;
    }
    env_logger::Builder::new()
        .filter_level(log::LevelFilter::Warn)
        .target(env_logger::Target::Stderr)
        .init();
    let server = Server::builder()
        .bind("127.0.0.1:0")
        .access_log(false)
        .pool(|p| {
            p.workers(2)
                .deadline(Duration::from_millis(300))
                .max_retired(1)
        })
        .serve(|req, _ctx| {
            if req.uri().path() == "/never" {
                // Never returns: the process ends (by itself, or killed by the test) first.
                loop {
                    std::thread::sleep(Duration::from_secs(1));
                }
            }
            "ok"
        })
        .unwrap();
    println!("ADDR {}", server.local_addrs()[0]);
    let _ = server.serve_until_signal(Duration::from_secs(5));
    panic!("serve_until_signal returned: the process should have exited with EXIT_STUCK");
}

#[test]
fn the_default_exits_with_the_stuck_report_and_answers_what_was_queued() {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "self_calls::stuck_budget::stuck_child_server",
            "--exact",
            "--include-ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD, "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let addr: SocketAddr = loop {
        let mut line = String::new();
        assert!(
            out.read_line(&mut line).unwrap() > 0,
            "the child ended early"
        );
        // libtest writes `test … ... ` before the line.
        if let Some((_, a)) = line.trim().split_once("ADDR ") {
            break a.parse().unwrap();
        }
    };
    // Two requests stick both workers; a third waits in the queue behind them.
    let mut calls: Vec<_> = (0..2)
        .map(|_| std::thread::spawn(move || ask(addr, "/never").status))
        .collect();
    std::thread::sleep(Duration::from_millis(100));
    calls.push(std::thread::spawn(move || ask(addr, "/never").status));
    let statuses: Vec<u16> = calls.into_iter().map(|t| t.join().unwrap()).collect();
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if start.elapsed() > WAIT {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the server is still up {WAIT:?} after its budget of stuck threads was spent (answers {statuses:?})");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert_eq!(status.code(), Some(EXIT_STUCK), "{err}");
    assert_eq!(&statuses[..2], &[504, 504], "{err}");
    assert!(
        statuses[2] == 503 || statuses[2] == 504,
        "the queued request got {} ({err})",
        statuses[2]
    );
    assert!(
        err.contains("max_retired") && err.contains("GET /never") && err.contains("exiting"),
        "the log names the cause, the stuck route and what happens: {err}"
    );
}
