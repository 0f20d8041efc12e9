//! Behind a proxy: PROXY protocol v1 and v2 headers written here byte by byte (split at every
//! position), a missing or malformed one closing the connection, and `X-Forwarded-For`,
//! `X-Forwarded-Proto` and `Forwarded` believed from a trusted peer only. The real nginx in front
//! is in `nginx.rs`.

use crate::http_helpers::*;
use prefork_pool::http::{
    ForwardedProto, PeerAddr, Server, ServerBuilder, ServerHandle, SocketPeer,
};
use std::io::Write;
use std::time::Duration;

/// Answers `peer=<PeerAddr> socket=<SocketPeer> proto=<ForwardedProto or -> xff=<header or ->
/// depth=<X-Prefork-Depth or ->`; access log lines `proxy-test <%(h)s> <path>`.
fn server(b: ServerBuilder) -> ServerHandle {
    logs();
    b.bind("127.0.0.1:0")
        .max_spare(0)
        .access_log_format("proxy-test %(h)s %(U)s")
        .pool(|p| p.workers(2))
        .serve(|req, _ctx| {
            let ext = |v: Option<&str>| v.unwrap_or("-").to_string();
            let header = |n: &str| {
                req.headers()
                    .get(n)
                    .map_or("-".to_string(), |v| v.to_str().unwrap().to_string())
            };
            format!(
                "peer={} socket={} proto={} xff={} depth={}",
                ext(req.extensions().get::<PeerAddr>().map(|p| &*p.0)),
                ext(req.extensions().get::<SocketPeer>().map(|p| &*p.0)),
                ext(req.extensions().get::<ForwardedProto>().map(|p| &*p.0)),
                header("x-forwarded-for"),
                header("x-prefork-depth"),
            )
        })
        .unwrap()
}

fn access_line_for(path: &str) -> Option<String> {
    access_lines()
        .into_iter()
        .find(|l| l.starts_with("proxy-test ") && l.ends_with(&format!(" {path}")))
}

/// A v2 header: PROXY command, `fam`, the address block.
fn v2(fam: u8, addrs: &[u8]) -> Vec<u8> {
    let mut h = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    h.push(0x21);
    h.push(fam);
    h.extend_from_slice(&(addrs.len() as u16).to_be_bytes());
    h.extend_from_slice(addrs);
    h
}

fn v2_tcp4(src: [u8; 4], sport: u16) -> Vec<u8> {
    let mut a = src.to_vec();
    a.extend_from_slice(&[127, 0, 0, 1]);
    a.extend_from_slice(&sport.to_be_bytes());
    a.extend_from_slice(&8080u16.to_be_bytes());
    v2(0x11, &a)
}

fn v2_tcp6(src: &str, sport: u16) -> Vec<u8> {
    let mut a = src.parse::<std::net::Ipv6Addr>().unwrap().octets().to_vec();
    a.extend_from_slice(&std::net::Ipv6Addr::LOCALHOST.octets());
    a.extend_from_slice(&sport.to_be_bytes());
    a.extend_from_slice(&80u16.to_be_bytes());
    // A TLV (PP2_TYPE_AUTHORITY "x") that must be skipped.
    a.extend_from_slice(&[0x02, 0x00, 0x01, b'x']);
    v2(0x21, &a)
}

fn request(path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n").into_bytes()
}

#[test]
fn proxy_protocol_v1_and_v2_name_the_client_for_the_handler_and_the_log() {
    let s = server(Server::builder().proxy_protocol(true));
    let addr = s.local_addrs()[0];
    let local_v2 = {
        let mut h = v2(0x00, &[]);
        h[12] = 0x20; // LOCAL: a health check from the proxy itself
        h
    };
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "/pp/v1-tcp4",
            b"PROXY TCP4 192.0.2.7 127.0.0.1 56324 8080\r\n".to_vec(),
            "192.0.2.7",
        ),
        (
            "/pp/v1-tcp6",
            b"PROXY TCP6 2001:db8::7 ::1 4711 80\r\n".to_vec(),
            "2001:db8::7",
        ),
        ("/pp/v1-unknown", b"PROXY UNKNOWN\r\n".to_vec(), "127.0.0.1"),
        (
            "/pp/v2-tcp4",
            v2_tcp4([198, 51, 100, 9], 40000),
            "198.51.100.9",
        ),
        (
            "/pp/v2-tcp6",
            v2_tcp6("2001:db8::beef", 443),
            "2001:db8::beef",
        ),
        ("/pp/v2-local", local_v2, "127.0.0.1"),
    ];
    for (path, header, client) in cases {
        let mut c = Client::new(addr);
        let mut raw = header.clone();
        raw.extend_from_slice(&request(path));
        c.send(&raw);
        let a = c.answer();
        assert_eq!(a.status, 200, "{path}: {}", a.text());
        assert_eq!(
            a.text(),
            format!("peer={client} socket=127.0.0.1 proto=- xff=- depth=-"),
            "{path}"
        );
        // The header comes once per connection: the next request keeps its client.
        c.send(&request(&format!("{path}/again")));
        assert!(
            c.answer().text().starts_with(&format!("peer={client} ")),
            "{path}"
        );
        let line = access_line_for(path).unwrap_or_else(|| panic!("no access line for {path}"));
        assert_eq!(line, format!("proxy-test {client} {path}"));
    }
    s.shutdown(WAIT);
}

#[test]
fn a_proxy_header_split_at_every_position_is_read_whole() {
    let s = server(Server::builder().proxy_protocol(true));
    let addr = s.local_addrs()[0];
    for (header, client) in [
        (
            b"PROXY TCP4 192.0.2.7 127.0.0.1 56324 8080\r\n".to_vec(),
            "192.0.2.7",
        ),
        (v2_tcp6("2001:db8::beef", 443), "2001:db8::beef"),
    ] {
        let mut raw = header.clone();
        raw.extend_from_slice(&request("/split"));
        for at in 1..header.len() + 2 {
            let mut c = Client::new(addr);
            c.stream.set_nodelay(true).unwrap();
            c.send(&raw[..at]);
            c.stream.flush().unwrap();
            // Let the first part arrive on its own (it does not matter for the result whether
            // it did: the outcome must be the same).
            std::thread::sleep(Duration::from_millis(2));
            c.send(&raw[at..]);
            let a = c.answer();
            assert_eq!(a.status, 200, "split at {at}");
            assert!(
                a.text().starts_with(&format!("peer={client} ")),
                "split at {at}: {}",
                a.text()
            );
        }
    }
    s.shutdown(WAIT);
}

#[test]
fn a_missing_malformed_or_late_proxy_header_closes_without_an_answer() {
    let s = server(
        Server::builder()
            .proxy_protocol(true)
            .head_timeout(Duration::from_millis(500)),
    );
    let addr = s.local_addrs()[0];
    let mut too_long = b"PROXY UNKNOWN ".to_vec();
    too_long.resize(200, b'x');
    for bad in [
        request("/no-header"),
        b"PROXY TCP4 192.0.2.7 127.0.0.1 56324\r\nGET / HTTP/1.1\r\n\r\n".to_vec(),
        b"PROXY TCP4 2001:db8::1 127.0.0.1 1 2\r\n".to_vec(),
        too_long,
        {
            let mut h = v2_tcp4([192, 0, 2, 7], 1);
            h[12] = 0x31; // version 3
            h
        },
        v2(0x12, &[0; 12]), // UDP
    ] {
        let mut c = Client::new(addr);
        c.send(&bad);
        c.assert_closed();
    }
    // Silence, or a header that stops half-way: closed at the head timeout, still no answer.
    for partial in [&b""[..], b"PROXY TCP4 192.0.2.7 "] {
        let mut c = Client::new(addr);
        c.send(partial);
        let started = std::time::Instant::now();
        c.assert_closed();
        assert!(started.elapsed() < WAIT);
    }
    assert!(access_line_for("/no-header").is_none());
    s.shutdown(WAIT);
}

#[test]
fn forwarded_headers_are_believed_from_a_trusted_peer() {
    // Default: 127.0.0.1 and ::1 are trusted proxies.
    let s = server(Server::builder());
    let addr = s.local_addrs()[0];
    let send = |path: &str, headers: &str| {
        let raw = format!("GET {path} HTTP/1.1\r\nHost: t\r\n{headers}\r\n");
        roundtrip(addr, raw.as_bytes()).0.text()
    };
    // The right-most untrusted address: a client's own entries (left) are not taken.
    assert_eq!(
        send(
            "/fwd/xff",
            "X-Forwarded-For: 6.6.6.6, 203.0.113.7\r\nX-Forwarded-Proto: https\r\n"
        ),
        "peer=203.0.113.7 socket=127.0.0.1 proto=https xff=6.6.6.6, 203.0.113.7 depth=-"
    );
    assert_eq!(
        access_line_for("/fwd/xff").as_deref(),
        Some("proxy-test 203.0.113.7 /fwd/xff")
    );
    assert_eq!(
        send(
            "/fwd/rfc7239",
            "Forwarded: for=\"[2001:db8:cafe::17]:4711\";proto=https, for=127.0.0.1\r\n"
        ),
        "peer=2001:db8:cafe::17 socket=127.0.0.1 proto=https xff=- depth=-"
    );
    assert_eq!(
        send("/fwd/garbage", "X-Forwarded-For: not-an-address\r\n"),
        "peer=127.0.0.1 socket=127.0.0.1 proto=- xff=not-an-address depth=-"
    );
    // The depth of a remote client's request is not honoured, even through a local proxy; a
    // client on this host keeps it.
    assert_eq!(
        send(
            "/fwd/depth",
            "X-Forwarded-For: 203.0.113.7\r\nX-Prefork-Depth: 3\r\n"
        ),
        "peer=203.0.113.7 socket=127.0.0.1 proto=- xff=203.0.113.7 depth=-"
    );
    assert_eq!(
        send(
            "/fwd/depth-here",
            "X-Forwarded-For: 127.0.0.1\r\nX-Prefork-Depth: 3\r\n"
        ),
        "peer=127.0.0.1 socket=127.0.0.1 proto=- xff=127.0.0.1 depth=3"
    );
    s.shutdown(WAIT);
}

#[test]
fn forwarded_headers_from_an_untrusted_peer_are_ignored_and_left_as_they_came() {
    let s = server(Server::builder().forwarded_allow_ips(["10.0.0.0/8", "2001:db8::/32"]));
    let raw = "GET /untrusted HTTP/1.1\r\nHost: t\r\nX-Forwarded-For: 203.0.113.7\r\n\
               X-Forwarded-Proto: https\r\nForwarded: for=198.51.100.1;proto=https\r\n\r\n";
    let (a, _) = roundtrip(s.local_addrs()[0], raw.as_bytes());
    assert_eq!(
        a.text(),
        "peer=127.0.0.1 socket=127.0.0.1 proto=- xff=203.0.113.7 depth=-"
    );
    assert_eq!(
        access_line_for("/untrusted").as_deref(),
        Some("proxy-test 127.0.0.1 /untrusted")
    );
    s.shutdown(WAIT);
}

#[test]
fn behind_a_proxy_protocol_proxy_the_trust_goes_by_the_named_source() {
    let s = server(
        Server::builder()
            .proxy_protocol(true)
            .forwarded_allow_ips(["10.0.0.0/8"]),
    );
    let addr = s.local_addrs()[0];
    let xff = "X-Forwarded-For: 203.0.113.7\r\n";
    for (src, expect) in [
        ("10.1.1.1", "peer=203.0.113.7"), // a trusted proxy behind the PROXY-protocol one
        ("198.51.100.4", "peer=198.51.100.4"), // a client: its header is ignored
    ] {
        let raw = format!(
            "PROXY TCP4 {src} 127.0.0.1 1000 80\r\nGET /pp-xff HTTP/1.1\r\nHost: t\r\n{xff}\r\n"
        );
        let (a, _) = roundtrip(addr, raw.as_bytes());
        assert!(
            a.text().starts_with(&format!("{expect} ")),
            "{src}: {}",
            a.text()
        );
    }
    s.shutdown(WAIT);
}

#[test]
fn a_bad_allow_list_is_refused_by_name() {
    let err = Server::builder()
        .bind("127.0.0.1:0")
        .forwarded_allow_ips(["127.0.0.1", "10.0.0.0/33"])
        .serve(|_req, _ctx| "never")
        .unwrap_err();
    assert!(err.to_string().contains("forwarded_allow_ips"), "{err}");
}
