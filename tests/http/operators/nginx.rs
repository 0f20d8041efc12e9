//! A real nginx in front of the server (the Debian package `nginx` or `nginx-light`, found by
//! `tools`; skipped when it is not installed): started here on a free loopback port with its whole
//! configuration, pid, logs and temp paths in a temp dir, proxying both with a kept-alive
//! upstream (`/ka/`) and with a connection per request (`/direct/`, nginx's default). The client
//! connects from 127.0.0.2, so the address nginx adds to `X-Forwarded-For` is not the socket
//! peer's (127.0.0.1, nginx itself).

use crate::http_helpers::*;
use crate::nginx_process::{self, proxy_config, through, Nginx, CLIENT_IP};
use crate::tools;
use prefork_pool::http::{PeerAddr, Server, ServerHandle, SocketPeer};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{mpsc, Mutex};
use std::time::{Duration, Instant};

/// Starts nginx (the program `bin`) in front of `upstream`.
fn start_nginx(bin: &Path, upstream: SocketAddr) -> Nginx {
    nginx_process::start(bin, |dir, port| proxy_config(dir, port, upstream))
        .unwrap_or_else(|e| panic!("{e}"))
}

/// Answers `peer=<PeerAddr> socket=<SocketPeer> xff=<header> <version> conn=<Connection>`.
fn echo_server() -> ServerHandle {
    logs();
    Server::builder()
        .bind("127.0.0.1:0")
        .max_spare(0)
        .access_log_format("nginx-test %(h)s %(U)s")
        .pool(|p| p.workers(2))
        .serve(|req, _ctx| {
            let h = |n: &str| {
                req.headers()
                    .get(n)
                    .map_or("-".to_string(), |v| v.to_str().unwrap().to_string())
            };
            format!(
                "peer={} socket={} xff={} {:?} conn={}",
                req.extensions().get::<PeerAddr>().unwrap().0,
                req.extensions().get::<SocketPeer>().unwrap().0,
                h("x-forwarded-for"),
                req.version(),
                h("connection"),
            )
        })
        .unwrap()
}

#[test]
fn behind_nginx_the_handler_and_the_log_see_the_client_both_upstream_modes() {
    let Some(bin) = tools::require(&tools::NGINX) else {
        return;
    };
    let server = echo_server();
    let nginx = start_nginx(&bin, server.local_addrs()[0]);
    for i in 0..3 {
        // Kept-alive upstream: HTTP/1.1 without `Connection`, the connection reused by nginx.
        let (status, body) = through(&nginx, &format!("/ka/{i}"), "");
        assert_eq!(status, 200, "{body}");
        assert_eq!(
            body,
            format!("peer={CLIENT_IP} socket=127.0.0.1 xff={CLIENT_IP} HTTP/1.1 conn=-")
        );
        // nginx's default: HTTP/1.0 and `Connection: close`, a connection per request.
        let (status, body) = through(&nginx, &format!("/direct/{i}"), "");
        assert_eq!(status, 200, "{body}");
        assert_eq!(
            body,
            format!("peer={CLIENT_IP} socket=127.0.0.1 xff={CLIENT_IP} HTTP/1.0 conn=close")
        );
    }
    // A client's own X-Forwarded-For is kept by nginx, left of the address nginx adds: not taken.
    let (_, body) = through(&nginx, "/ka/spoofed-xff", "X-Forwarded-For: 6.6.6.6\r\n");
    assert!(
        body.starts_with(&format!(
            "peer={CLIENT_IP} socket=127.0.0.1 xff=6.6.6.6, {CLIENT_IP} "
        )),
        "{body}"
    );
    for path in ["/ka/0", "/direct/2", "/ka/spoofed-xff"] {
        let line = format!("nginx-test {CLIENT_IP} {path}");
        assert!(access_lines().contains(&line), "no line {line:?}");
    }
    drop(nginx);
    server.shutdown(WAIT);
}

#[test]
fn a_request_forwarded_by_a_local_nginx_is_not_a_self_call() {
    let Some(bin) = tools::require(&tools::NGINX) else {
        return;
    };
    // One worker, spare threads on: a request from this process to itself while the worker is
    // busy would run at once on a spare thread. nginx's socket is not ours: it must wait.
    let (entered_tx, entered_rx) = mpsc::channel::<()>();
    let (release_tx, release_rx) = mpsc::channel::<()>();
    let entered_tx = Mutex::new(entered_tx);
    let release_rx = Mutex::new(release_rx);
    let server = Server::builder()
        .bind("127.0.0.1:0")
        .max_spare(2)
        .pool(|p| p.workers(1))
        .serve(move |req, _ctx| {
            if req.uri().path().ends_with("/block") {
                entered_tx.lock().unwrap().send(()).unwrap();
                let _ = release_rx.lock().unwrap().recv_timeout(WAIT);
            }
            let thread = std::thread::current().name().unwrap_or("-").to_string();
            let peer = req.extensions().get::<PeerAddr>().unwrap().0.clone();
            format!("thread={thread} peer={peer}")
        })
        .unwrap();
    let nginx = start_nginx(&bin, server.local_addrs()[0]);
    std::thread::scope(|scope| {
        let a = scope.spawn(|| through(&nginx, "/direct/block", ""));
        entered_rx
            .recv_timeout(WAIT)
            .expect("the first request runs");
        let before = server.self_calls().lookups;
        let b = scope.spawn(|| through(&nginx, "/ka/who", ""));
        // The second request met a busy pool: its client (nginx) was looked up.
        let started = Instant::now();
        while server.self_calls().lookups == before {
            assert!(started.elapsed() < WAIT, "no lookup");
            std::thread::sleep(Duration::from_millis(5));
        }
        release_tx.send(()).unwrap();
        let (status, body) = b.join().unwrap();
        assert_eq!(status, 200, "{body}");
        assert!(!body.contains("selfcall"), "run as a self-call: {body}");
        assert!(body.ends_with(&format!("peer={CLIENT_IP}")), "{body}");
        assert_eq!(a.join().unwrap().0, 200);
    });
    let calls = server.self_calls();
    assert_eq!((calls.served, calls.refused), (0, 0), "{calls:?}");
    drop(nginx);
    server.shutdown(WAIT);
}
