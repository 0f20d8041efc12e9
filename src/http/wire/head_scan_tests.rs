//! The head scanner's tests (`head_scan.rs`): the parse of scanned heads, the limits and the
//! refusals, and the fast paths against the byte-at-a-time path.

use super::*;
use crate::http::wire::parse::{Framing, Head};
use http::Method;

fn head_of(raw: &[u8]) -> Result<Option<Head>, HttpError> {
    let limits = Limits::default();
    let mut s = HeadScanner::default();
    match s.scan(raw, &limits)? {
        Some((a, b)) => parse_head(&raw[a..b], &limits).map(Some),
        None => Ok(None),
    }
}

fn status(raw: &[u8]) -> u16 {
    match head_of(raw) {
        Err(e) => e.status,
        Ok(Some(_)) => 200,
        Ok(None) => 0,
    }
}

#[test]
fn simple_get() {
    let h = head_of(b"GET /a?b=1 HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap()
        .unwrap();
    assert_eq!(h.method, Method::GET);
    assert_eq!(h.uri.path(), "/a");
    assert_eq!(h.uri.query(), Some("b=1"));
    assert!(h.keep_alive);
    assert_eq!(h.framing, Framing::None);
}

#[test]
fn byte_by_byte() {
    let raw = b"\r\nPOST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc";
    let limits = Limits::default();
    let mut s = HeadScanner::default();
    let mut found = None;
    for n in 1..=raw.len() {
        if let Some(r) = s.scan(&raw[..n], &limits).unwrap() {
            found = Some(r);
            break;
        }
    }
    let (a, b) = found.unwrap();
    assert_eq!(a, 2);
    assert_eq!(&raw[b..], b"abc");
    let h = parse_head(&raw[a..b], &limits).unwrap();
    assert_eq!(h.framing, Framing::Length(3));
}

#[test]
fn limits_and_smuggling() {
    let long = format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(5000));
    assert_eq!(status(long.as_bytes()), 414);
    let long_partial = format!("GET /{}", "a".repeat(5000));
    assert_eq!(status(long_partial.as_bytes()), 414);
    let field = format!(
        "GET / HTTP/1.1\r\nHost: x\r\nX: {}\r\n\r\n",
        "a".repeat(9000)
    );
    assert_eq!(status(field.as_bytes()), 431);
    let mut many = String::from("GET / HTTP/1.1\r\nHost: x\r\n");
    for i in 0..120 {
        many.push_str(&format!("X-{i}: y\r\n"));
    }
    many.push_str("\r\n");
    assert_eq!(status(many.as_bytes()), 431);
    assert_eq!(
        status(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"),
        400
    );
    assert_eq!(
        status(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n"),
        400
    );
    assert_eq!(
        status(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\n"),
        400,
        "a second Content-Length, even with the same value"
    );
    assert_eq!(status(b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n"), 400);
    assert_eq!(status(b"GET abc HTTP/1.1\r\nHost: x\r\n\r\n"), 400);
    assert_eq!(status(b"GET * HTTP/1.1\r\nHost: x\r\n\r\n"), 400);
    assert_eq!(status(b"OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n"), 200);
    assert_eq!(status(b"CONNECT / HTTP/1.1\r\nHost: x\r\n\r\n"), 400);
    assert_eq!(status(b"CONNECT x:1 HTTP/1.1\r\nHost: x:1\r\n\r\n"), 501);
    assert_eq!(
        status(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: +3\r\n\r\n"),
        400
    );
    assert_eq!(
        status(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, gzip\r\n\r\n"),
        400
    );
    assert_eq!(
        status(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n"),
        400
    );
    assert_eq!(status(b"GET / HTTP/1.1\nHost: x\r\n\r\n"), 400);
    assert_eq!(
        status(b"GET / HTTP/1.1\r\nHost: x\r\nX: a\r\n b\r\n\r\n"),
        400
    );
    assert_eq!(status(b"GET / HTTP/1.1\r\n\r\n"), 400);
    assert_eq!(status(b"GET / HTTP/1.0\r\n\r\n"), 200);
    assert_eq!(status(b"GET / HTTP/2.0\r\n\r\n"), 505);
    assert_eq!(
        status(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999\r\n\r\n"),
        413
    );
    assert_eq!(
        status(b"GET / HTTP/1.1\r\nHost: x\r\nExpect: 200-ok\r\n\r\n"),
        417
    );
}

/// The fast paths (whole runs, whole line ends) come to what the byte-at-a-time path does, limits included, whole or fed a byte per read.
#[test]
fn fast_paths_agree_with_byte_at_a_time_at_every_limit() {
    let heads: [&[u8]; 25] = [
        b"OPTIONS /x?y HTTP/1.0\r\nHost: x\r\n\r\n",
        b"\r\n\r\nGET /?a=b HTTP/1.1\r\nHost: x\r\n\r\n",
        b"CONNECT /x HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost:  example.com:8080 \t\r\nA: b\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: :80\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: \r\nA: b\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a%41:\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a:1x\r\nHost: b\r\n\r\n",
        b"GET /get_hello_world?session_id=x HTTP/1.1\r\nHost: x\r\n\r\n",
        b"\r\nPOST /a HTTP/1.0\r\nHost: x\r\nContent-Length: 3\r\nX-Long: abcdefghijklmnop \r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nX: a\rb\r\n\r\n",
        b"GET / HTTP/1.2\r\nHost: x\r\n\r\n",
        b"GET / HTTP/1.1\r\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\n\n",
        b"GET  / HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET \xc3\xa9 HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /a  HTTP/1.1\r\nHost: x\r\n\r\n",
        b"OPTIONS * HTTP/1.1\r\nA:\r\nB: 1\r\nC:caf\xc3\xa9\r\nD : 2\r\n\r\n",
        b"M-SEARCH http://h/ HTTP/1.1\r\nHost: [::1]:80 \r\nContent-Length: 012\r\n\r\n",
        b"CONNECT h:1 HTTP/1.1\r\nHost: h:1\r\nContent-Length: 1\r\ncontent-length: 1\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\n X: y\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nX\r\n\r\n",
        b"GET / HTTP/1.1\r\nA: 1\r\nB: 2\r\nC: 3\r\nD: 4\r\nE: 5\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nX: \x01\r\n\r\n",
    ];
    // The outcome, and the length of the input when it came: a refusal must come at the
    // same byte either way.
    fn by_byte<const FAST: bool>(
        raw: &[u8],
        limits: &Limits,
    ) -> (usize, Result<Option<(usize, usize)>, HttpError>) {
        let mut s = HeadScanner::default();
        for n in 1..=raw.len() {
            match s.scan_with::<FAST>(&raw[..n], limits) {
                Ok(None) => {}
                other => return (n, other),
            }
        }
        (raw.len(), Ok(None))
    }
    let whole = |raw: &[u8], limits: &Limits, fast: bool| {
        let mut s = HeadScanner::default();
        if fast {
            s.scan(raw, limits)
        } else {
            s.scan_with::<false>(raw, limits)
        }
    };
    for raw in heads {
        for request_line in (1..48).chain([4094]) {
            for (field_size, fields) in [(1, 100), (3, 2), (8, 3), (12, 100), (20, 4), (40, 1)] {
                for head_bytes in 1..raw.len() + 2 {
                    let limits = Limits {
                        request_line,
                        field_size,
                        fields,
                        head_bytes,
                        ..Limits::default()
                    };
                    let shown = String::from_utf8_lossy(raw);
                    // Whole, and cut anywhere (a refusal must not wait for more bytes).
                    for end in 1..=raw.len() {
                        let want = whole(&raw[..end], &limits, false);
                        let got = whole(&raw[..end], &limits, true);
                        assert_eq!(got, want, "{shown:?} to {end} with {limits:?}");
                    }
                    let want = by_byte::<false>(raw, &limits);
                    assert_eq!(by_byte::<true>(raw, &limits), want, "{shown:?} {limits:?}");
                }
            }
        }
    }
}

#[test]
fn connection_semantics() {
    let h = head_of(b"GET / HTTP/1.0\r\n\r\n").unwrap().unwrap();
    assert!(!h.keep_alive);
    let h = head_of(b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n")
        .unwrap()
        .unwrap();
    assert!(h.keep_alive);
    let h = head_of(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap()
        .unwrap();
    assert!(!h.keep_alive);
}

/// The request line's fast path counts a target's bytes eight at a time: it stops where the byte
/// by byte count stops, whatever the byte and wherever it is.
#[test]
fn the_target_run_stops_at_the_first_byte_a_target_cannot_hold() {
    for b in 0..=255u8 {
        for at in 0..20 {
            let mut s = [b'a'; 20];
            s[at] = b;
            let want = s.iter().take_while(|c| (0x21..=0x7e).contains(*c)).count();
            assert_eq!(target_run(&s), want, "{b:#x} at {at}");
        }
    }
}
