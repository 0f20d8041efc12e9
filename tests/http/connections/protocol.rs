//! HTTP/1.1 framing over raw sockets: a head split byte by byte, pipelining, chunked bodies,
//! 100-continue, HTTP/1.0, HEAD, keep-alive.

use crate::http_helpers::*;
use prefork_pool::http::{PeerAddr, Server, ServerHandle};
use std::time::Duration;

/// Echo: `METHOD PATH BODYLEN BODY`, plus the peer and the version in headers.
fn server() -> ServerHandle {
    Server::builder()
        .bind("127.0.0.1:0")
        .pool(|p| p.workers(2))
        .serve(|req, _ctx| {
            let mut body =
                format!("{} {} {} ", req.method(), req.uri(), req.body().len()).into_bytes();
            body.extend_from_slice(req.body());
            let peer = req
                .extensions()
                .get::<PeerAddr>()
                .map(|p| p.0.to_string())
                .unwrap_or_default();
            http::Response::builder()
                .header("x-peer", peer)
                .header("x-version", format!("{:?}", req.version()))
                .body(body)
                .unwrap()
        })
        .unwrap()
}

#[test]
fn head_split_byte_by_byte() {
    let s = server();
    let mut c = Client::new(s.local_addrs()[0]);
    c.stream.set_nodelay(true).unwrap();
    for b in post("/split", "hello").iter() {
        c.send(&[*b]);
        std::thread::sleep(Duration::from_millis(1));
    }
    let a = c.answer();
    assert_eq!(a.status, 200);
    assert_eq!(a.text(), "POST /split 5 hello");
    assert_eq!(a.header("x-peer").as_deref(), Some("127.0.0.1"));
    assert!(a.header("date").is_some());
    assert!(a.header("server").is_none());
    s.shutdown(WAIT);
}

#[test]
fn pipelined_requests_answered_in_order() {
    let s = server();
    let mut c = Client::new(s.local_addrs()[0]);
    let mut all = Vec::new();
    for i in 0..20 {
        all.extend_from_slice(&post(&format!("/p{i}"), &"x".repeat(i * 100)));
    }
    c.send(&all);
    for i in 0..20 {
        let a = c.answer();
        assert_eq!(a.status, 200);
        assert!(
            a.text().starts_with(&format!("POST /p{i} {} ", i * 100)),
            "{}",
            a.text()
        );
    }
    // The connection is still usable.
    c.send(&get("/after"));
    assert_eq!(c.answer().text(), "GET /after 0 ");
    s.shutdown(WAIT);
}

#[test]
fn chunked_bodies() {
    let s = server();
    let mut c = Client::new(s.local_addrs()[0]);
    c.send(b"POST /c HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=y\r\nhello\r\n1\r\n \r\n5\r\nworld\r\n0\r\nX-Trailer: 1\r\n\r\n");
    let a = c.answer();
    assert_eq!(a.text(), "POST /c 11 hello world");
    // A chunked body sent in pieces.
    c.send(b"POST /d HTTP/1.1\r\nHost: t\r\ntransfer-encoding: Chunked\r\n\r\n3\r\n");
    std::thread::sleep(Duration::from_millis(50));
    c.send(b"abc\r\n");
    std::thread::sleep(Duration::from_millis(50));
    c.send(b"0\r\n\r\n");
    assert_eq!(c.answer().text(), "POST /d 3 abc");
    s.shutdown(WAIT);
}

#[test]
fn expect_100_continue() {
    let s = server();
    let mut c = Client::new(s.local_addrs()[0]);
    c.send(b"PUT /up HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n");
    let interim = c.answer();
    assert_eq!(interim.status, 100, "{}", interim.head);
    c.send(b"data");
    let a = c.answer();
    assert_eq!(a.status, 200);
    assert_eq!(a.text(), "PUT /up 4 data");
    // Too large with Expect: 413 without reading the body, then close.
    let s2 = Server::builder()
        .bind("127.0.0.1:0")
        .limit_body_bytes(10)
        .serve(|_r, _c| http::Response::new(Vec::new()))
        .unwrap();
    let (a, mut c) = roundtrip(
        s2.local_addrs()[0],
        b"PUT /up HTTP/1.1\r\nHost: t\r\nContent-Length: 11\r\nExpect: 100-continue\r\n\r\n",
    );
    assert_eq!(a.status, 413);
    c.assert_closed();
    s2.shutdown(WAIT);
    s.shutdown(WAIT);
}

#[test]
fn http_1_0_closes_unless_keep_alive() {
    let s = server();
    let (a, mut c) = roundtrip(s.local_addrs()[0], b"GET /old HTTP/1.0\r\n\r\n");
    assert_eq!(a.status, 200);
    assert_eq!(a.header("x-version").as_deref(), Some("HTTP/1.0"));
    assert_eq!(a.header("connection").as_deref(), Some("close"));
    c.assert_closed();

    let (a, mut c) = roundtrip(
        s.local_addrs()[0],
        b"GET /ka HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
    );
    assert_eq!(a.header("connection").as_deref(), Some("keep-alive"));
    c.send(b"GET /ka2 HTTP/1.0\r\n\r\n");
    assert_eq!(c.answer().text(), "GET /ka2 0 ");
    c.assert_closed();
    s.shutdown(WAIT);
}

#[test]
fn keep_alive_and_connection_close() {
    let s = server();
    let mut c = Client::new(s.local_addrs()[0]);
    for i in 0..50 {
        c.send(&get(&format!("/k{i}")));
        let a = c.answer();
        assert_eq!(a.status, 200);
        assert!(a.header("connection").is_none());
    }
    c.send(b"GET /bye HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
    let a = c.answer();
    assert_eq!(a.header("connection").as_deref(), Some("close"));
    c.assert_closed();
    s.shutdown(WAIT);
}

#[test]
fn head_has_no_body() {
    let s = server();
    let mut c = Client::new(s.local_addrs()[0]);
    c.send(b"HEAD /h HTTP/1.1\r\nHost: t\r\n\r\n");
    // The answer says how long the GET body would be, but sends none.
    let mut buf = Vec::new();
    let mut tmp = [0u8; 1024];
    while find(&buf, b"\r\n\r\n").is_none() {
        let n = std::io::Read::read(&mut c.stream, &mut tmp).unwrap();
        assert!(n > 0);
        buf.extend_from_slice(&tmp[..n]);
    }
    let head = String::from_utf8_lossy(&buf).to_string();
    assert!(head.contains("content-length: 10\r\n"), "{head}");
    assert!(head.ends_with("\r\n\r\n"), "{head}");
    c.send(&get("/next"));
    assert_eq!(c.answer().text(), "GET /next 0 ");
    s.shutdown(WAIT);
}
