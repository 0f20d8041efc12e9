//! Configuration: bad values are refused naming the field and the range; Unix sockets with a mode;
//! several listeners; the access log in gunicorn's format.

use crate::http_helpers::*;
use prefork_pool::http::{ServeError, Server, ServerBuilder};
use std::io::{Read, Write};
use std::time::Duration;

fn refused(b: ServerBuilder, field: &str) {
    match b.serve(|_r, _c| http::Response::new(Vec::new())) {
        Err(ServeError::Config(e)) => {
            assert_eq!(e.field, field);
            assert!(!e.allowed.is_empty());
            assert!(e.to_string().contains(field));
        }
        Err(other) => panic!("{field}: unexpected {other}"),
        Ok(h) => {
            h.shutdown(WAIT);
            panic!("{field}: accepted")
        }
    }
}

#[test]
fn bad_values_are_refused() {
    let b = || Server::builder().bind("127.0.0.1:0");
    refused(Server::builder(), "bind");
    refused(b().backlog(0), "backlog");
    refused(b().backlog(1 << 20), "backlog");
    refused(b().limit_request_line(1), "limit_request_line");
    refused(b().limit_request_fields(0), "limit_request_fields");
    refused(b().limit_request_field_size(0), "limit_request_field_size");
    refused(b().limit_head_bytes(1), "limit_head_bytes");
    refused(b().head_timeout(Duration::ZERO), "head_timeout");
    refused(
        b().keepalive_timeout(Duration::from_secs(1 << 40)),
        "keepalive_timeout",
    );
    refused(b().access_log_format("%(nope)s"), "access_log_format");
    refused(b().pool(|p| p.workers(0)), "workers");
    refused(b().max_spare(1025), "max_spare");
    refused(b().max_depth(10_001), "max_depth");
    refused(b().stuck_after(Duration::ZERO), "stuck_after");
    refused(b().min_body_rate((1 << 30) + 1), "min_body_rate");
    refused(Server::builder().bind("not an address"), "bind");
    // An address in use is an I/O error naming the address.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    match Server::builder()
        .bind(addr)
        .serve(|_r, _c| http::Response::new(Vec::new()))
    {
        Err(ServeError::Io { what, .. }) => assert!(what.contains(&addr.to_string()), "{what}"),
        Err(e) => panic!("unexpected {e}"),
        Ok(h) => {
            h.shutdown(WAIT);
            panic!("bound a taken address")
        }
    }
}

#[test]
fn unix_socket_and_several_listeners() {
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    let dir = std::env::temp_dir().join(format!("prefork-pool-http-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("s.sock");
    let s = Server::builder()
        .bind("127.0.0.1:0")
        .bind("127.0.0.1:0")
        .bind_unix(&path, 0o660)
        .serve(|req, _c| http::Response::new(req.uri().path().as_bytes().to_vec()))
        .unwrap();
    assert_eq!(s.local_addrs().len(), 2);
    assert_ne!(s.local_addrs()[0], s.local_addrs()[1]);
    assert_eq!(s.unix_paths(), vec![path.clone()]);
    let meta = std::fs::metadata(&path).unwrap();
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o777, 0o660);
    for addr in s.local_addrs() {
        let (a, _c) = roundtrip(addr, &get("/tcp"));
        assert_eq!(a.text(), "/tcp");
    }
    let mut u = std::os::unix::net::UnixStream::connect(&path).unwrap();
    u.set_read_timeout(Some(WAIT)).unwrap();
    u.write_all(b"GET /unix HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut out = String::new();
    u.read_to_string(&mut out).unwrap();
    assert!(out.starts_with("HTTP/1.1 200 OK"), "{out}");
    assert!(out.ends_with("/unix"));
    s.shutdown(WAIT);
    assert!(!path.exists(), "the socket file is removed on shutdown");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn access_log_lines() {
    logs();
    let s = Server::builder()
        .bind("127.0.0.1:0")
        .access_log_format(r#"%(h)s "%(r)s" %(s)s %(b)s %(m)s %(U)s %(q)s %(H)s %({x-id}i)s %({x-out}o)s "%(a)s" %(D)s"#)
        .serve(|_r, _c| http::Response::builder().header("x-out", "o1").body(b"four".to_vec()).unwrap())
        .unwrap();
    let (a, _c) = roundtrip(
        s.local_addrs()[0],
        b"GET /p?q=1 HTTP/1.1\r\nHost: t\r\nX-Id: abc\r\nUser-Agent: tester/1\r\n\r\n",
    );
    assert_eq!(a.status, 200);
    s.shutdown(WAIT);
    // Other tests in this binary log too (`strict_input` asks for `/p?q=1` as well): keep this
    // server's line, the one with this test's user agent.
    let lines: Vec<String> = access_lines()
        .into_iter()
        .filter(|l| l.contains("/p?q=1") && l.contains("tester/1"))
        .collect();
    assert_eq!(lines.len(), 1, "{lines:?}");
    let prefix = r#"127.0.0.1 "GET /p?q=1 HTTP/1.1" 200 4 GET /p q=1 HTTP/1.1 abc o1 "tester/1" "#;
    assert!(lines[0].starts_with(prefix), "{}", lines[0]);
    assert!(
        lines[0][prefix.len()..].parse::<u64>().is_ok(),
        "{}",
        lines[0]
    );
}

#[test]
fn ipv6_and_pool_options_are_forwarded() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    let started = Arc::new(AtomicUsize::new(0));
    let exited = Arc::new(AtomicUsize::new(0));
    let (st, ex) = (started.clone(), exited.clone());
    let b = Server::builder().bind("127.0.0.1:0").pool(|p| {
        p.workers(3)
            .name("web")
            .on_worker_start(move |_| {
                st.fetch_add(1, Ordering::SeqCst);
            })
            .on_worker_exit(move |_| {
                ex.fetch_add(1, Ordering::SeqCst);
            })
    });
    // IPv6 loopback when the machine has it.
    let v6 = std::net::TcpListener::bind("[::1]:0").is_ok();
    let b = if v6 { b.bind("[::1]:0") } else { b };
    let s = b
        .serve(|req, ctx| {
            http::Response::new(format!("{} {}", req.uri().path(), ctx.depth()).into_bytes())
        })
        .unwrap();
    for addr in s.local_addrs() {
        let (a, _c) = roundtrip(addr, &get("/x"));
        assert_eq!(a.text(), "/x 0");
    }
    assert_eq!(s.local_addrs().len(), if v6 { 2 } else { 1 });
    let stats = s.stats();
    assert_eq!(stats.name, "web");
    assert_eq!(stats.workers, 3);
    s.shutdown(WAIT);
    assert_eq!(started.load(Ordering::SeqCst), 3);
    assert_eq!(exited.load(Ordering::SeqCst), 3);
}
