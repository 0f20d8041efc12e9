//! The axum template (`examples/axum_bulkhead.rs`'s router) under the pre-fork supervisor
//! (`Supervisor::serve_service`), as a user runs it: `/` answers its worker's pid as JSON,
//! `/metrics` shows the whole server's requests, `/readyz` is the server's own; axum's `ConnectInfo<SocketAddr>` extractor works with `ServiceConfig::connect_info`,
//! behind a trusted proxy it is the client the proxy names; axum's `WebSocketUpgrade` completes
//! (an echo at `/ws`), an open WebSocket keeps working after SIGTERM (it is in-flight work for
//! the drain) and is closed by the graceful timeout; the master exits 0.
//!
//! No libtest harness: this binary re-runs itself as the server (the supervisor's master must
//! be a process without threads), and the test talks to it over TCP.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use axum::extract::ConnectInfo;
use axum::routing::get;
use futures_util::{SinkExt, StreamExt};
use prefork_pool::prefork::{ServiceConfig, Supervisor};

#[path = "../examples/axum_bulkhead.rs"]
#[allow(dead_code)]
mod app;

const ROLE: &str = "AXUM_SUPERVISED_ROLE";

/// The server: 1 worker process of 1 runtime thread, the template's router and `/peer`, which
/// answers axum's `ConnectInfo`; the health routes.
fn server() -> i32 {
    let supervisor = match Supervisor::builder()
        .bind("127.0.0.1:0")
        .workers(1)
        .graceful_timeout(Duration::from_secs(4))
        .build()
    {
        Ok(s) => s,
        Err(e) => {
            eprintln!("cannot start: {e}");
            return 1;
        }
    };
    println!(
        "listening on {}",
        supervisor.local_addr().expect("a TCP address")
    );
    let _ = std::io::stdout().flush();
    supervisor.serve_service(
        ServiceConfig::new()
            .threads(1)
            .health_routes("/readyz", "/livez")
            .connect_info(ConnectInfo::<SocketAddr>),
        || {
            let pool = app::pool(&app::Config::default()).map_err(|e| e.to_string())?;
            Ok::<_, String>(app::router(pool).route(
                "/peer",
                get(
                    |ConnectInfo(addr): ConnectInfo<SocketAddr>| async move { format!("{addr}\n") },
                ),
            ))
        },
    )
}

/// One request on its own connection: the status and the body.
fn request(addr: SocketAddr, path: &str, headers: &str) -> (u16, String) {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: t\r\n{headers}Connection: close\r\n\r\n").as_bytes(),
    )
    .expect("write");
    let mut out = String::new();
    s.read_to_string(&mut out).expect("read the answer");
    let status = out
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {out:?}"));
    let body = out
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .trim()
        .to_string();
    (status, body)
}

fn main() {
    if std::env::var(ROLE).is_ok() {
        std::process::exit(server());
    }
    let mut child = Command::new(std::env::current_exe().expect("this test's path"))
        .env(ROLE, "server")
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the server");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .expect("the server's address");
    let addr: SocketAddr = line
        .trim()
        .strip_prefix("listening on ")
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("no address in {line:?}"));
    let master = child.id();
    let outcome = std::panic::catch_unwind(|| {
        // The worker is up once it answers.
        let end = Instant::now() + Duration::from_secs(60);
        let (status, body) = loop {
            match std::panic::catch_unwind(|| request(addr, "/peer", "")) {
                Ok(answer) => break answer,
                Err(_) if Instant::now() < end => std::thread::sleep(Duration::from_millis(100)),
                Err(e) => std::panic::resume_unwind(e),
            }
        };
        assert_eq!(status, 200, "ConnectInfo<SocketAddr> extracted: {body}");
        let peer: SocketAddr = body.parse().expect("a socket address");
        assert!(peer.ip().is_loopback() && peer.port() != 0, "{peer}");
        // Behind a trusted proxy (loopback, the default): the client it names, port 0.
        let (status, body) = request(addr, "/peer", "X-Forwarded-For: 198.51.100.4\r\n");
        assert_eq!((status, body.as_str()), (200, "198.51.100.4:0"));
        // The template's routes: its worker's pid (a process of the master's, not the master),
        // the whole server's metrics beside its pool's, the server's own readiness.
        let (status, body) = request(addr, "/", "");
        let json: serde_json::Value = serde_json::from_str(&body).expect("JSON");
        let pid = json["worker_pid"].as_u64().expect("worker_pid");
        assert!(
            status == 200 && pid != u64::from(master),
            "/: {status} {body}"
        );
        let (status, body) = request(addr, "/metrics", "");
        let requests: u64 = body
            .lines()
            .filter(|l| l.starts_with("prefork_http_requests_total{"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum();
        assert!(
            status == 200 && requests >= 3,
            "/metrics: {status}, {requests} requests: {body}"
        );
        assert!(
            body.contains("pool=\"blocking\""),
            "the app's pool on the page: {body}"
        );
        let (status, body) = request(addr, "/readyz", "");
        assert_eq!((status, body.as_str()), (200, "ready"));
    });
    // A WebSocket echo; SIGTERM while it is open: it still echoes, then the graceful timeout
    // (4 s: the worker drains for 90 % of it) closes it.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("the client's runtime");
    let pid = child.id().to_string();
    let term = std::cell::Cell::new(None);
    let ws_outcome = outcome.is_ok().then(|| {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            rt.block_on(async {
                let (mut socket, resp) =
                    tokio_tungstenite::connect_async(format!("ws://{addr}/ws"))
                        .await
                        .expect("the WebSocket handshake (101) under the supervisor");
                assert_eq!(resp.status(), 101);
                socket.send(text_msg("hello")).await.expect("send");
                let got = socket.next().await.expect("an answer").expect("a frame");
                assert_eq!(got.into_text().expect("text").as_str(), "hello");
                term.set(Some(Command::new("kill").args(["-TERM", &pid]).status()));
                tokio::time::sleep(Duration::from_millis(1500)).await;
                socket
                    .send(text_msg("still here"))
                    .await
                    .expect("send after TERM");
                let got = socket
                    .next()
                    .await
                    .expect("an answer after TERM")
                    .expect("a frame");
                assert_eq!(got.into_text().expect("text").as_str(), "still here");
                let started = Instant::now();
                // Closed by the graceful timeout: the stream ends or fails (no close frame).
                let end = tokio::time::timeout(Duration::from_secs(30), async {
                    loop {
                        match socket.next().await {
                            None | Some(Err(_)) => break,
                            Some(Ok(m)) if m.is_close() => break,
                            Some(Ok(_)) => {}
                        }
                    }
                })
                .await;
                assert!(
                    end.is_ok(),
                    "the WebSocket was not closed {:?} after TERM",
                    started.elapsed()
                );
            })
        }))
    });
    let term = term.take().unwrap_or_else(|| {
        Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
    });
    let end = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait for the server") {
            break Some(s);
        }
        if Instant::now() > end {
            let _ = child.kill();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    if let Err(e) = outcome {
        std::panic::resume_unwind(e);
    }
    if let Some(Err(e)) = ws_outcome {
        std::panic::resume_unwind(e);
    }
    assert!(term.is_ok_and(|s| s.success()), "kill -TERM the server");
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(0),
        "the master's exit after SIGTERM"
    );
    println!(
        "axum_supervised: ConnectInfo (direct, behind a proxy), a WebSocket echo through TERM \
         and the graceful timeout: ok"
    );
}

fn text_msg(t: &str) -> tokio_tungstenite::tungstenite::Message {
    tokio_tungstenite::tungstenite::Message::text(t)
}
