//! Every limit, malformed shape and smuggling shape: the status, and that the connection closes.

use crate::http_helpers::*;
use prefork_pool::http::{Server, ServerHandle};
use std::time::{Duration, Instant};

fn server() -> ServerHandle {
    Server::builder()
        .bind("127.0.0.1:0")
        .pool(|p| p.workers(1))
        .limit_head_bytes(16 * 1024)
        .limit_body_bytes(1000)
        .head_timeout(Duration::from_millis(800))
        .serve(|req, _ctx| http::Response::new(format!("ok {}", req.body().len()).into_bytes()))
        .unwrap()
}

/// Send `raw`, expect `status` with a plain-text reason, then a closed connection.
fn refused(s: &ServerHandle, raw: &[u8], status: u16) {
    let (a, mut c) = roundtrip(s.local_addrs()[0], raw);
    assert_eq!(
        a.status,
        status,
        "for {:?}: got {} {}",
        String::from_utf8_lossy(&raw[..raw.len().min(120)]),
        a.head,
        a.text()
    );
    assert_eq!(a.header("connection").as_deref(), Some("close"));
    assert!(a.header("content-type").unwrap().starts_with("text/plain"));
    assert!(a.text().len() > 5, "a reason in the body");
    c.assert_closed();
}

#[test]
fn size_limits() {
    let s = server();
    refused(
        &s,
        format!("GET /{} HTTP/1.1\r\nHost: t\r\n\r\n", "a".repeat(5000)).as_bytes(),
        414,
    );
    let mut many = String::from("GET / HTTP/1.1\r\nHost: t\r\n");
    for i in 0..101 {
        many.push_str(&format!("X-{i}: v\r\n"));
    }
    many.push_str("\r\n");
    refused(&s, many.as_bytes(), 431);
    refused(
        &s,
        format!(
            "GET / HTTP/1.1\r\nHost: t\r\nX-Big: {}\r\n\r\n",
            "v".repeat(8200)
        )
        .as_bytes(),
        431,
    );
    let mut big = String::from("GET / HTTP/1.1\r\nHost: t\r\n");
    for i in 0..5 {
        big.push_str(&format!("X-{i}: {}\r\n", "v".repeat(4000)));
    }
    big.push_str("\r\n");
    refused(&s, big.as_bytes(), 431);
    refused(
        &s,
        b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 1001\r\n\r\n",
        413,
    );
    refused(
        &s,
        b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 99999999999999\r\n\r\n",
        413,
    );
    let mut chunked = b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    for _ in 0..3 {
        chunked.extend_from_slice(format!("190\r\n{}\r\n", "z".repeat(400)).as_bytes());
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    refused(&s, &chunked, 413);
    // Exactly at the limits is fine.
    let (a, _c) = roundtrip(s.local_addrs()[0], &post("/", &"b".repeat(1000)));
    assert_eq!(a.status, 200);
    assert_eq!(a.text(), "ok 1000");
    s.shutdown(WAIT);
}

#[test]
fn malformed_and_smuggling() {
    let s = server();
    for raw in [
        &b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\nabc"[..],
        b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
        b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 3, 4\r\n\r\nabcd",
        b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: -3\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked, identity\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: identity\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\nxyz\r\nabc\r\n0\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n0x3\r\nabc\r\n0\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcdef\r\n0\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n3\nabc\r\n0\r\n\r\n",
        b"GET / HTTP/1.1\nHost: t\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: t\nX: y\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: t\r\nX-Folded: a\r\n  b\r\n\r\n",
        b"GET / HTTP/1.1\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
        b"GET /\x01 HTTP/1.1\r\nHost: t\r\n\r\n",
        b"GET / HTTP/1.1\r\nBad Name: v\r\n\r\n",
        b"NOT A REQUEST\r\n\r\n",
        b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    ] {
        refused(&s, raw, 400);
    }
    refused(&s, b"GET / HTTP/3.0\r\nHost: t\r\n\r\n", 505);
    s.shutdown(WAIT);
}

#[test]
fn head_read_timeout_is_408() {
    let s = server();
    let start = Instant::now();
    let (a, mut c) = roundtrip(s.local_addrs()[0], b"GET / HTTP/1.1\r\nHost: t\r\n");
    assert_eq!(a.status, 408);
    assert!(start.elapsed() >= Duration::from_millis(700));
    c.assert_closed();
    // A connection that never sends anything is closed quietly.
    let mut c = Client::new(s.local_addrs()[0]);
    c.assert_closed();
    s.shutdown(WAIT);
}

#[test]
fn body_read_timeout_is_408() {
    let s = Server::builder()
        .bind("127.0.0.1:0")
        .body_timeout(Duration::from_millis(600))
        .serve(|_req, _ctx| http::Response::new(Vec::new()))
        .unwrap();
    let start = Instant::now();
    let (a, mut c) = roundtrip(
        s.local_addrs()[0],
        b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\nabc",
    );
    assert_eq!(a.status, 408);
    assert!(a.text().contains("body"));
    assert!(start.elapsed() >= Duration::from_millis(500));
    c.assert_closed();
    s.shutdown(WAIT);
}
