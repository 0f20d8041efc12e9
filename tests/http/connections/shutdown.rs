//! Graceful shutdown: requests already read are finished and answered with `Connection: close`,
//! idle keep-alive connections are closed, the listen backlog is served, then every thread ends.

use crate::http_helpers::*;
use prefork_pool::http::Server;
use std::net::TcpStream;
use std::time::{Duration, Instant};

#[test]
fn requests_under_way_are_finished() {
    let (entered_tx, entered_rx) = crossbeam_channel::unbounded::<()>();
    let (go_tx, go_rx) = crossbeam_channel::unbounded::<()>();
    let s = Server::builder()
        .bind("127.0.0.1:0")
        // This test's clients live in this process: they are not self-calls to rescue.
        .max_spare(0)
        .pool(|p| p.workers(2).queue_capacity(64))
        .serve(move |req, _ctx| {
            if req.uri().path() == "/gate" {
                let _ = entered_tx.send(());
                let _ = go_rx.recv_timeout(WAIT);
            }
            http::Response::new(req.uri().path().as_bytes().to_vec())
        })
        .unwrap();
    let addr = s.local_addrs()[0];
    // An idle keep-alive connection that has been served once.
    let mut idle = Client::new(addr);
    idle.send(&get("/first"));
    assert_eq!(idle.answer().status, 200);
    // Ten requests under way: two running, eight queued.
    let mut busy: Vec<Client> = (0..10)
        .map(|_| {
            let mut c = Client::new(addr);
            c.send(&get("/gate"));
            c
        })
        .collect();
    for _ in 0..2 {
        entered_rx.recv_timeout(WAIT).unwrap();
    }
    let start = Instant::now();
    while s.stats().queued < 8 {
        assert!(
            start.elapsed() < WAIT,
            "requests never queued: {:?}",
            s.stats()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let s2 = s.clone();
    let stopper = std::thread::spawn(move || s2.shutdown(WAIT));
    // The listener closes once the drain has begun.
    let start = Instant::now();
    while TcpStream::connect(addr).is_ok() {
        assert!(start.elapsed() < WAIT, "the listener never closed");
        std::thread::sleep(Duration::from_millis(5));
    }
    idle.assert_closed();
    for _ in 0..10 {
        go_tx.send(()).unwrap();
    }
    for c in busy.iter_mut() {
        let a = c.answer();
        assert_eq!(a.status, 200);
        assert_eq!(a.text(), "/gate");
        assert_eq!(a.header("connection").as_deref(), Some("close"));
        c.assert_closed();
    }
    drop(busy);
    let report = stopper.join().unwrap();
    assert_eq!(report.answered_shutting_down, 0);
    assert_eq!(report.threads_left_running, 0);
    // join() returns at once on a stopped server.
    s.join();
}

#[test]
fn the_listen_backlog_is_served() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    // Five clients connect and send before the server even starts: they sit in the backlog.
    let mut clients: Vec<Client> = (0..5)
        .map(|i| {
            let mut c = Client::new(addr);
            c.send(&get(&format!("/b{i}")));
            c
        })
        .collect();
    let s = Server::builder()
        .listener(listener)
        .max_spare(0)
        .pool(|p| p.workers(1))
        .serve(|req, _ctx| http::Response::new(req.uri().path().as_bytes().to_vec()))
        .unwrap();
    let report = s.shutdown(WAIT);
    assert_eq!(report.answered_shutting_down, 0);
    for (i, c) in clients.iter_mut().enumerate() {
        let a = c.answer();
        assert_eq!(a.status, 200);
        assert_eq!(a.text(), format!("/b{i}"));
        // (An answer written before the drain began may still say keep-alive; either way the
        // connection is closed once it is answered.)
        c.assert_closed();
    }
    assert!(TcpStream::connect(addr).is_err());
}

#[test]
fn a_connection_that_sends_nothing_does_not_hold_the_shutdown() {
    let s = Server::builder()
        .bind("127.0.0.1:0")
        .head_timeout(Duration::from_secs(60))
        .serve(|_req, _ctx| http::Response::new(Vec::new()))
        .unwrap();
    let mut silent = Client::new(s.local_addrs()[0]);
    // Make sure the server has accepted it before the shutdown.
    let mut probe = Client::new(s.local_addrs()[0]);
    probe.send(&get("/"));
    assert_eq!(probe.answer().status, 200);
    let start = Instant::now();
    s.shutdown(WAIT);
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "shutdown waited {:?} for a silent connection",
        start.elapsed()
    );
    silent.assert_closed();
}

/// `POST /up` with a `Content-Length` of 1000 and only 4 bytes of its body: an upload that stalls.
const HALF_UPLOAD: &[u8] = b"POST /up HTTP/1.1\r\nHost: t\r\nContent-Length: 1000\r\n\r\nhalf";

#[test]
fn a_stalled_upload_is_answered_503_at_the_graceful_timeout() {
    logs();
    let s = Server::builder()
        .bind("127.0.0.1:0")
        .max_spare(0)
        // Longer than the graceful timeout: only the stop can end this upload.
        .body_timeout(Duration::from_secs(60))
        .serve(|_req, _ctx| http::Response::new(b"ok".to_vec()))
        .unwrap();
    let mut upload = Client::new(s.local_addrs()[0]);
    upload.send(HALF_UPLOAD);
    let report = s.shutdown(Duration::from_secs(1));
    assert_eq!(report.threads_left_running, 0);
    let a = upload.answer();
    assert_eq!(a.status, 503, "{}", a.text());
    assert_eq!(a.header("retry-after").as_deref(), Some("1"));
    upload.assert_closed();
    let warned = lines_with(&[
        "graceful shutdown timed out",
        "sending a request answered 503",
    ]);
    assert!(!warned.is_empty(), "no warning names the stalled upload");
}

/// Whether this process catches SIGTERM now (its `SigCgt` mask in `/proc/self/status`).
fn catches_sigterm() -> bool {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let mask = status
        .lines()
        .find_map(|l| l.strip_prefix("SigCgt:"))
        .and_then(|m| u64::from_str_radix(m.trim(), 16).ok())
        .expect("SigCgt");
    mask & (1 << (libc::SIGTERM - 1)) != 0
}

#[test]
fn a_second_signal_stops_at_once_and_answers_a_half_sent_upload() {
    // Alone: it sends SIGTERM to its own process.
    alone(
        module_path!(),
        "a_second_signal_stops_at_once_and_answers_a_half_sent_upload",
        || {
            let s = Server::builder()
                .bind("127.0.0.1:0")
                .max_spare(0)
                .body_timeout(Duration::from_secs(60))
                .serve(|_req, _ctx| http::Response::new(b"ok".to_vec()))
                .unwrap();
            let addr = s.local_addrs()[0];
            let mut upload = Client::new(addr);
            upload.send(HALF_UPLOAD);
            let server = s.clone();
            let serving = std::thread::spawn(move || server.serve_until_signal(WAIT));
            let start = Instant::now();
            while !catches_sigterm() {
                assert!(start.elapsed() < WAIT, "SIGTERM never caught");
                std::thread::sleep(Duration::from_millis(5));
            }
            // SAFETY: kill(2) of this process with SIGTERM, which serve_until_signal now catches.
            unsafe { libc::kill(libc::getpid(), libc::SIGTERM) };
            // The graceful stop has begun once the listener is closed; the upload holds it.
            while TcpStream::connect(addr).is_ok() {
                assert!(start.elapsed() < WAIT, "the listener never closed");
                std::thread::sleep(Duration::from_millis(5));
            }
            let again = Instant::now();
            // SAFETY: as above.
            unsafe { libc::kill(libc::getpid(), libc::SIGTERM) };
            let report = serving.join().unwrap().expect("signal handlers");
            let took = again.elapsed();
            eprintln!("stopped {took:?} after the second SIGTERM");
            // At once, not at the graceful timeout (WAIT).
            assert!(took < WAIT / 4, "the second SIGTERM stopped after {took:?}");
            assert_eq!(report.threads_left_running, 0);
            let a = upload.answer();
            assert_eq!(a.status, 503, "{}", a.text());
            upload.assert_closed();
        },
    );
}

#[test]
fn an_idle_connection_is_closed_at_the_start_of_the_drain() {
    let (entered_tx, entered_rx) = crossbeam_channel::unbounded::<()>();
    let (go_tx, go_rx) = crossbeam_channel::unbounded::<()>();
    let s = Server::builder()
        .bind("127.0.0.1:0")
        .max_spare(0)
        .pool(|p| p.workers(2))
        .keepalive_timeout(Duration::from_secs(60))
        .serve(move |req, _ctx| {
            if req.uri().path() == "/hold" {
                let _ = entered_tx.send(());
                let _ = go_rx.recv_timeout(WAIT);
            }
            http::Response::new(b"ok".to_vec())
        })
        .unwrap();
    let addr = s.local_addrs()[0];
    let mut idle = Client::new(addr);
    idle.send(&get("/"));
    assert_eq!(idle.answer().status, 200);
    // Idle for longer than the drain's grace for a connection answered a moment ago (1 s).
    std::thread::sleep(Duration::from_millis(1500));
    // A request under way holds the drain open meanwhile.
    let mut busy = Client::new(addr);
    busy.send(&get("/hold"));
    entered_rx.recv_timeout(WAIT).unwrap();
    let s2 = s.clone();
    let stopper = std::thread::spawn(move || s2.shutdown(WAIT));
    let start = Instant::now();
    while TcpStream::connect(addr).is_ok() {
        assert!(start.elapsed() < WAIT, "the listener never closed");
        std::thread::sleep(Duration::from_millis(5));
    }
    // The idle connection is closed right after the listener: its end of file is due at once
    // (not a second later, at the end of a grace counted from the drain's start).
    idle.stream
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    idle.assert_closed();
    go_tx.send(()).unwrap();
    let a = busy.answer();
    assert_eq!(a.status, 200);
    assert_eq!(a.header("connection").as_deref(), Some("close"));
    busy.assert_closed();
    assert_eq!(stopper.join().unwrap().threads_left_running, 0);
}
