//! The axum template (`examples/axum_bulkhead.rs`'s router) under the pre-fork supervisor
//! (`Supervisor::serve_service`), as a user runs it: `/` answers its worker's pid as JSON,
//! `/metrics` shows the whole server's requests, `/readyz` is the server's own; axum's `ConnectInfo<SocketAddr>` extractor works with `ServiceConfig::connect_info`,
//! behind a trusted proxy it is the client the proxy names; axum's `WebSocketUpgrade` completes
//! (an echo at `/ws`); SIGHUP under keep-alive load from 4 client threads with 4 WebSockets
//! open fails no request, and each WebSocket gets the template's Close frame (1001, going away:
//! it listens to `prefork_pool::prefork::stopping()`), which comes before the graceful timeout
//! (at the timeout a socket is closed without one); on SIGTERM the template's WebSocket gets its
//! 1001 too, while one that does not listen keeps working (in-flight work for the drain) until
//! the graceful timeout closes it; the master exits 0.
//!
//! No libtest harness: this binary re-runs itself as the server (the supervisor's master must
//! be a process without threads), and the test talks to it over TCP.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::ConnectInfo;
use axum::routing::get;
use futures_util::{SinkExt, StreamExt};
use prefork_pool::prefork::ServiceConfig;

#[path = "support/master.rs"]
mod master;

#[path = "../examples/axum_bulkhead.rs"]
#[allow(dead_code)]
mod app;

const ROLE: &str = "AXUM_SUPERVISED_ROLE";

/// The server: 1 worker process of 1 runtime thread, the template's router and `/peer`, which
/// answers axum's `ConnectInfo`; the health routes.
fn server() -> i32 {
    let supervisor = match master::on_free_port(1) {
        Ok(s) => s,
        Err(code) => return code,
    };
    supervisor.serve_service(
        ServiceConfig::new()
            .threads(1)
            .health_routes("/readyz", "/livez")
            .connect_info(ConnectInfo::<SocketAddr>),
        || {
            let pool = app::pool(&app::Config::default()).map_err(|e| e.to_string())?;
            Ok::<_, String>(
                app::router(pool)
                    .route(
                        "/peer",
                        get(|ConnectInfo(addr): ConnectInfo<SocketAddr>| async move {
                            format!("{addr}\n")
                        }),
                    )
                    .route("/ws-plain", get(plain_echo)),
            )
        },
    )
}

/// A WebSocket echo that does not listen to the worker's stop: its socket is closed by the
/// graceful timeout.
async fn plain_echo(upgrade: WebSocketUpgrade) -> axum::response::Response {
    upgrade.on_upgrade(|mut socket: WebSocket| async move {
        while let Some(Ok(msg)) = socket.recv().await {
            if let Message::Text(t) = msg {
                if socket.send(Message::Text(t)).await.is_err() {
                    break;
                }
            }
        }
    })
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
    let (mut child, addr) = master::start(ROLE);
    let master = child.id();
    let outcome = std::panic::catch_unwind(|| {
        // The worker is up once it answers.
        let (status, body) = master::until_up(|| request(addr, "/peer", ""));
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
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("the client's runtime");
    // SIGHUP under keep-alive load with 4 WebSockets open: no failed request, and each
    // WebSocket closed by the template with 1001 when its worker's stop begins.
    let hup_outcome = outcome
        .is_ok()
        .then(|| std::panic::catch_unwind(|| hup_with_websockets(&rt, addr, master)));
    // SIGTERM with the template's `/ws` and a `/ws-plain` that does not listen to the stop: the
    // first is closed with 1001 at once; the second still echoes (in-flight work for the drain),
    // then the graceful timeout (4 s: the worker drains for 90 % of it) closes it.
    let pid = child.id().to_string();
    let term = std::cell::Cell::new(None);
    let ws_outcome = matches!(hup_outcome, Some(Ok(()))).then(|| {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            rt.block_on(async {
                let mut away = open_ws(addr, "/ws").await;
                let mut plain = open_ws(addr, "/ws-plain").await;
                term.set(Some(Command::new("kill").args(["-TERM", &pid]).status()));
                expect_going_away(&mut away, "/ws after TERM").await;
                tokio::time::sleep(Duration::from_millis(1500)).await;
                plain
                    .send(text_msg("still here"))
                    .await
                    .expect("send after TERM");
                let got = plain
                    .next()
                    .await
                    .expect("an answer after TERM")
                    .expect("a frame");
                assert_eq!(got.into_text().expect("text").as_str(), "still here");
                let started = Instant::now();
                // Closed by the graceful timeout: the stream ends or fails (no close frame).
                let end = tokio::time::timeout(Duration::from_secs(30), async {
                    loop {
                        match plain.next().await {
                            None | Some(Err(_)) => break,
                            Some(Ok(m)) if m.is_close() => break,
                            Some(Ok(_)) => {}
                        }
                    }
                })
                .await;
                assert!(
                    end.is_ok(),
                    "/ws-plain was not closed {:?} after TERM",
                    started.elapsed()
                );
            })
        }))
    });
    let (term, status) = master::term_and_wait(&mut child, term.take());
    if let Err(e) = outcome {
        std::panic::resume_unwind(e);
    }
    if let Some(Err(e)) = hup_outcome {
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
        "axum_supervised: ConnectInfo (direct, behind a proxy), HUP under load with 4 \
         WebSockets (each closed 1001), TERM (the template's WebSocket closed 1001, a plain one \
         kept until the graceful timeout): ok"
    );
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A WebSocket to `path` whose echo works.
async fn open_ws(addr: SocketAddr, path: &str) -> Ws {
    let (mut socket, resp) = tokio_tungstenite::connect_async(format!("ws://{addr}{path}"))
        .await
        .expect("the WebSocket handshake (101) under the supervisor");
    assert_eq!(resp.status(), 101);
    socket.send(text_msg("hello")).await.expect("send");
    let got = socket.next().await.expect("an answer").expect("a frame");
    assert_eq!(got.into_text().expect("text").as_str(), "hello");
    socket
}

/// Reads `socket` until the server's Close frame, which must say 1001 (going away); then until
/// the end (the client's Close answers it).
async fn expect_going_away(socket: &mut Ws, what: &str) {
    use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
    use tokio_tungstenite::tungstenite::Message as M;
    let frame = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            match socket.next().await {
                Some(Ok(M::Close(frame))) => return Ok(frame),
                Some(Ok(_)) => {}
                other => return Err(format!("{other:?}")),
            }
        }
    })
    .await;
    match frame {
        Ok(Ok(Some(f))) => assert_eq!(f.code, CloseCode::Away, "{what}: closed with {f:?}"),
        Ok(Ok(None)) => panic!("{what}: a Close frame without a code"),
        Ok(Err(end)) => panic!("{what}: the WebSocket ended without a Close frame: {end}"),
        Err(_) => panic!("{what}: no Close frame within 30 s"),
    }
    while let Ok(Some(Ok(_))) = tokio::time::timeout(Duration::from_secs(5), socket.next()).await {}
}

/// Keep-alive `GET /` from 4 client threads for 3 s (a new connection when the server says
/// `Connection: close`), SIGHUP to `master` after 1 s while 4 WebSockets are open: every request
/// answered 200, every WebSocket closed with 1001, and `/` then answered by a new worker.
fn hup_with_websockets(rt: &tokio::runtime::Runtime, addr: SocketAddr, master: u32) {
    let (_, body) = request(addr, "/", "");
    let old_pid = body.clone();
    let mut sockets = Vec::new();
    for _ in 0..4 {
        sockets.push(rt.block_on(open_ws(addr, "/ws")));
    }
    let end = Instant::now() + Duration::from_secs(3);
    let clients: Vec<_> = (0..4)
        .map(|_| {
            std::thread::spawn(move || {
                let (mut ok, mut failed) = (0u64, Vec::new());
                let mut conn: Option<BufReader<TcpStream>> = None;
                while Instant::now() < end {
                    match keep_alive_get(addr, &mut conn) {
                        Ok(200) => ok += 1,
                        Ok(status) => failed.push(format!("status {status}")),
                        Err(e) => failed.push(e),
                    }
                }
                (ok, failed)
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs(1));
    let hup = Command::new("kill")
        .args(["-HUP", &master.to_string()])
        .status();
    assert!(hup.is_ok_and(|s| s.success()), "kill -HUP the server");
    rt.block_on(async {
        for (i, socket) in sockets.iter_mut().enumerate() {
            expect_going_away(socket, &format!("WebSocket {i} after HUP")).await;
        }
    });
    let (mut ok, mut failed) = (0, Vec::new());
    for c in clients {
        let (n, f) = c.join().expect("a client thread");
        ok += n;
        failed.extend(f);
    }
    assert!(
        failed.is_empty(),
        "{} failed request(s) across HUP: {failed:?}",
        failed.len()
    );
    assert!(ok > 20, "only {ok} requests were answered");
    // The new generation answers.
    let until = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, body) = request(addr, "/", "");
        if body != old_pid {
            break;
        }
        assert!(
            Instant::now() < until,
            "/ still answered by {old_pid} 30 s after HUP"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    println!("  HUP: {ok} requests answered, 0 failed; 4 WebSockets closed with 1001");
}

/// One `GET /` on the kept-alive `conn` (a new one when there is none): the status. The
/// connection is dropped when the answer says `Connection: close`.
fn keep_alive_get(
    addr: SocketAddr,
    conn: &mut Option<BufReader<TcpStream>>,
) -> Result<u16, String> {
    if conn.is_none() {
        let s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
            .map_err(|e| format!("connect: {e}"))?;
        s.set_read_timeout(Some(Duration::from_secs(30))).ok();
        *conn = Some(BufReader::new(s));
    }
    let r = conn.as_mut().expect("a connection");
    let answer = (|| {
        r.get_mut()
            .write_all(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
            .map_err(|e| format!("write: {e}"))?;
        let (mut status, mut len, mut close) = (0, 0, false);
        loop {
            let mut line = String::new();
            let n = r.read_line(&mut line).map_err(|e| format!("read: {e}"))?;
            if n == 0 {
                return Err("the connection closed before the answer".to_string());
            }
            let line = line.trim_end().to_ascii_lowercase();
            if line.is_empty() {
                break;
            }
            if status == 0 {
                status = line
                    .split(' ')
                    .nth(1)
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(0);
            } else if let Some(v) = line.strip_prefix("content-length:") {
                len = v.trim().parse().map_err(|e| format!("{line:?}: {e}"))?;
            } else if line == "connection: close" {
                close = true;
            }
        }
        let mut body = vec![0; len];
        r.read_exact(&mut body)
            .map_err(|e| format!("read the body: {e}"))?;
        Ok((status, close))
    })();
    match answer {
        Ok((status, close)) => {
            if close {
                *conn = None;
            }
            Ok(status)
        }
        Err(e) => {
            *conn = None;
            Err(e)
        }
    }
}

fn text_msg(t: &str) -> tokio_tungstenite::tungstenite::Message {
    tokio_tungstenite::tungstenite::Message::text(t)
}
