//! Bad input over real sockets: a malformed head is refused at its first bad byte (not at the
//! head timeout), the shapes strict parsers refuse get 400, the ones they accept are served, and
//! what a client sends can neither forge access-log fields nor flood the log.

use crate::http_helpers::*;
use prefork_pool::http::{Server, ServerHandle};
use std::time::{Duration, Instant};

/// Echo: `METHOD TARGET BODY`; the head timeout far beyond what any test here waits.
fn server() -> ServerHandle {
    Server::builder()
        .bind("127.0.0.1:0")
        .head_timeout(Duration::from_secs(30))
        .pool(|p| p.workers(2))
        .serve(|req, _ctx| {
            let mut body = format!("{} {} ", req.method(), req.uri()).into_bytes();
            body.extend_from_slice(req.body());
            http::Response::new(body)
        })
        .unwrap()
}

#[test]
fn a_malformed_head_is_refused_at_the_bad_byte_without_waiting_for_its_end() {
    let s = server();
    let addr = s.local_addrs()[0];
    // Each is a head cut right after its first bad byte: no blank line follows.
    let cases: &[(&[u8], u16)] = &[
        (b"GET /a\rb", 400),                       // bare CR in the request line
        (b"GET / HTTP/1.1\r\nHost: x\rY", 400),    // bare CR in a field
        (b"GET / HTTP/5.6", 505),                  // an unknown version
        (b" GET / HTTP/1.1\r\n", 400),             // a space before the request line
        (b"GET / HTTP/1.1\r\n Host: x\r\n", 400),  // a space before the first field
        (b"GET /caf\xc3\xa9 HTTP/1.1\r\n", 400),   // raw non-ASCII in the target
        (b"GET / HTTP/1.1\r\nX: a\x00b\r\n", 400), // NUL in a field value
        (b"GET / HTTP/1.1\r\nNo colon\r\n", 400),  // a field line without a colon
    ];
    for &(prefix, status) in cases {
        let started = Instant::now();
        let mut c = Client::new(addr);
        c.send(prefix);
        let a = c.answer();
        let took = started.elapsed();
        let shown = String::from_utf8_lossy(prefix);
        assert_eq!(a.status, status, "{shown:?}: {}", a.text());
        assert!(
            took < Duration::from_secs(2),
            "{shown:?} answered after {took:?}"
        );
        c.assert_closed();
    }
    s.shutdown(WAIT);
}

#[test]
fn what_strict_parsers_refuse_gets_400_and_what_they_accept_is_served() {
    let s = server();
    let addr = s.local_addrs()[0];
    let chunked = |body: &str| {
        format!("POST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n{body}")
    };
    let refused = [
        "GET / HTTP/1.1\r\nHost: a, b\r\n\r\n".to_string(),
        "GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n".to_string(),
        "GET / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nExpect: 100-continue\r\n\r\n"
            .to_string(),
        chunked("2;\r\nab\r\n0\r\n\r\n"),
        chunked("2;a=\"b\r\nab\r\n0\r\n\r\n"),
        chunked("2\r\nab\r\n0\r\nNoColon\r\n\r\n"),
    ];
    for raw in &refused {
        let (a, mut c) = roundtrip(addr, raw.as_bytes());
        assert_eq!(a.status, 400, "{raw:?}: {}", a.text());
        c.assert_closed();
    }
    let served = [
        (
            "GET /a\"b HTTP/1.1\r\nHost: x\r\n\r\n".to_string(),
            "GET /a\"b ",
        ),
        (
            "GET /q?x=\"y\" HTTP/1.1\r\nHost: x\r\n\r\n".to_string(),
            "GET /q?x=%22y%22 ",
        ),
        (
            "POST /z HTTP/1.1\r\nHost: x\r\nContent-Length: 0003\r\n\r\nabc".to_string(),
            "POST /z abc",
        ),
        (
            chunked("0002;a=b;c=\"q\"\r\nab\r\n00\r\nT: v\r\n\r\n"),
            "POST /c ab",
        ),
    ];
    for (raw, want) in &served {
        let (a, _c) = roundtrip(addr, raw.as_bytes());
        assert_eq!((a.status, a.text()), (200, want.to_string()), "{raw:?}");
    }
    s.shutdown(WAIT);
}

#[test]
fn client_bytes_cannot_forge_access_log_fields() {
    logs();
    let s = Server::builder()
        .bind("127.0.0.1:0")
        .serve(|_r, _c| http::Response::new(b"ok".to_vec()))
        .unwrap();
    let raw = b"GET /forge\"\\\"-\" HTTP/1.1\r\nHost: t\r\n\
        User-Agent: ua\" 404 0 \"\tnext\xc3\xa9\r\n\r\n";
    let (a, _c) = roundtrip(s.local_addrs()[0], raw);
    assert_eq!(a.status, 200);
    s.shutdown(WAIT);
    let lines: Vec<String> = access_lines()
        .into_iter()
        .filter(|l| l.contains("/forge"))
        .collect();
    assert_eq!(lines.len(), 1, "{lines:?}");
    let line = &lines[0];
    assert!(!line.contains(['\n', '\r', '\t']), "{line:?}");
    // gunicorn's default format: the quotes are the format's own, and the fields are intact.
    let (head, rest) = line.split_once(" [").unwrap();
    assert_eq!(head, "127.0.0.1 - -");
    let (_, rest) = rest.split_once("] ").unwrap();
    assert_eq!(
        rest,
        r#""GET /forge\x22\x5C\x22-\x22 HTTP/1.1" 200 2 "-" "ua\x22 404 0 \x22\x09next\xC3\xA9""#
    );
    assert_eq!(rest.matches('"').count(), 6, "{rest}");
}

#[test]
fn a_client_sending_a_deep_depth_on_every_request_cannot_flood_the_log() {
    logs();
    let s = server();
    let addr = s.local_addrs()[0];
    let mut c = Client::new(addr);
    for _ in 0..20 {
        // From loopback the header counts: refused, with the connection kept.
        c.send(b"GET / HTTP/1.1\r\nHost: t\r\nX-Prefork-Depth: 977\r\n\r\n");
        assert_eq!(c.answer().status, 508);
    }
    s.shutdown(WAIT);
    // One line per 10 s for the whole process (another test may have had it already).
    let lines = lines_with(&["call chain is 977 deep"]);
    assert!(lines.len() <= 1, "{lines:#?}");
}

/// A request target in a form its method cannot have, a `Host` that is not `host[:port]`, and a
/// `Content-Length` that overflows or comes twice: 400 and a closed connection, answered at the
/// offending line while the client has not sent the blank line (nor anything after that line);
/// and the same heads sent whole get the same.
#[test]
fn bad_targets_hosts_and_content_lengths_are_refused_at_their_line() {
    let s = server();
    let addr = s.local_addrs()[0];
    // Each head up to its offending line, and what would complete it.
    let cases: &[(&[u8], &[u8])] = &[
        (b"GET / HTTP/1.1\r\nHost: a b\r\n", b"\r\n"),
        (b"GET / HTTP/1.1\r\nHost: a/b\r\n", b"\r\n"),
        (b"GET / HTTP/1.1\r\nHost: :80\r\n", b"\r\n"),
        (b"GET abc HTTP/1.1\r\n", b"Host: x\r\n\r\n"),
        (b"GET * HTTP/1.1\r\n", b"Host: x\r\n\r\n"),
        (b"PRI * HTTP/1.1\r\n", b"Host: x\r\n\r\n"),
        (b"CONNECT / HTTP/1.1\r\n", b"Host: x\r\n\r\n"),
        (b"CONNECT h HTTP/1.1\r\n", b"Host: h\r\n\r\n"),
        (
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999999\r\n",
            b"\r\nb",
        ),
        (
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 1\r\n",
            b"\r\nb",
        ),
        (
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n",
            b"\r\nb",
        ),
        (
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1, 1\r\n",
            b"\r\nb",
        ),
    ];
    for &(line, rest) in cases {
        let shown = String::from_utf8_lossy(line);
        let mut c = Client::new(addr);
        // The server's head timeout is 30 s: an answer within 5 s is not the timeout's.
        c.stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let started = Instant::now();
        c.send(line);
        let a = c.answer();
        let took = started.elapsed();
        assert_eq!(a.status, 400, "{shown:?}: {}", a.text());
        assert!(
            took < Duration::from_secs(2),
            "{shown:?} answered after {took:?}"
        );
        c.assert_closed();
        // Whole: the same answer, then the connection closes.
        let whole = [line, rest].concat();
        let (a, mut c) = roundtrip(addr, &whole);
        assert_eq!(a.status, 400, "{shown:?} whole: {}", a.text());
        c.assert_closed();
    }
    s.shutdown(WAIT);
}

/// What the strict checks of the target and `Host` must not refuse: `OPTIONS *`, absolute-form,
/// the `Host` forms real clients send (name, IPv4, IPv6 literal, with or without a port, empty in
/// HTTP/1.1 when there is no authority); and CONNECT with a proper `host:port`, which the server
/// answers itself with 501 (it is not a proxy) and closes.
#[test]
fn the_target_forms_and_hosts_clients_send_are_served() {
    let s = server();
    let addr = s.local_addrs()[0];
    let served: &[(&[u8], &str)] = &[
        (b"OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n", "OPTIONS * "),
        (
            b"GET http://example.com:8080/p?q=1 HTTP/1.1\r\nHost: example.com:8080\r\n\r\n",
            "GET http://example.com:8080/p?q=1 ",
        ),
        (b"GET / HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\r\n", "GET / "),
        (b"GET / HTTP/1.1\r\nHost: [::1]:8080 \r\n\r\n", "GET / "),
        (
            b"GET / HTTP/1.1\r\nHost: xn--caf-dma.example\r\n\r\n",
            "GET / ",
        ),
        (b"GET / HTTP/1.1\r\nHost:\r\n\r\n", "GET / "),
        (
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length:  007 \r\n\r\n1234567",
            "POST / 1234567",
        ),
    ];
    for &(raw, want) in served {
        let (a, _c) = roundtrip(addr, raw);
        let shown = String::from_utf8_lossy(raw);
        assert_eq!((a.status, a.text()), (200, want.to_string()), "{shown:?}");
    }
    let (a, mut c) = roundtrip(
        addr,
        b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n",
    );
    assert_eq!(a.status, 501, "{}", a.text());
    assert!(a.text().contains("not a proxy"), "{}", a.text());
    c.assert_closed();
    s.shutdown(WAIT);
}
