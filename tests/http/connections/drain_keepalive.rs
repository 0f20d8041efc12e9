//! Graceful shutdown under keep-alive load: clients that send one request after another on
//! kept-alive connections while `ServerHandle::shutdown` runs. Every request written gets its
//! whole answer; a connection is closed only after an answer that said `Connection: close` (or,
//! idle, before the next request was written): never an end of file or a reset after a request.

use crate::http_helpers::*;
use prefork_pool::http::Server;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// One keep-alive client: requests until the server refuses a new connection (it stopped) or
/// `stop`. Returns (answers, failures).
fn client(addr: SocketAddr, stop: Arc<AtomicBool>) -> (u64, Vec<String>) {
    let (mut answers, mut failures) = (0, Vec::new());
    'connect: while !stop.load(Ordering::Relaxed) {
        let Ok(mut conn) = TcpStream::connect(addr) else {
            // Refused: the listener is closed, the server stopped.
            break;
        };
        conn.set_read_timeout(Some(WAIT)).unwrap();
        loop {
            if let Err(e) = conn.write_all(&get("/")) {
                failures.push(format!("write: {e}"));
                continue 'connect;
            }
            let mut buf = Vec::new();
            let mut tmp = [0u8; 4096];
            let head_end = loop {
                if let Some(i) = find(&buf, b"\r\n\r\n") {
                    break i + 4;
                }
                match conn.read(&mut tmp) {
                    Ok(0) => {
                        failures.push("end of file after a request was written".into());
                        continue 'connect;
                    }
                    Ok(n) => buf.extend_from_slice(&tmp[..n]),
                    Err(e) => {
                        failures.push(format!("read after a request was written: {e}"));
                        continue 'connect;
                    }
                }
            };
            let head = String::from_utf8_lossy(&buf[..head_end]).to_lowercase();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            while buf.len() < head_end + len {
                match conn.read(&mut tmp) {
                    Ok(n) if n > 0 => buf.extend_from_slice(&tmp[..n]),
                    other => {
                        failures.push(format!("answer cut short: {other:?}"));
                        continue 'connect;
                    }
                }
            }
            if !head.starts_with("http/1.1 200") {
                failures.push(format!("answer {head:?}"));
            }
            answers += 1;
            if head.contains("connection: close") || stop.load(Ordering::Relaxed) {
                continue 'connect;
            }
        }
    }
    (answers, failures)
}

#[test]
fn no_request_is_lost_when_the_server_shuts_down_under_keep_alive_load() {
    let served = Arc::new(AtomicU64::new(0));
    let counter = served.clone();
    let s = Server::builder()
        .bind("127.0.0.1:0")
        // The clients live in this process: they are not self-calls to rescue.
        .max_spare(0)
        .access_log(false)
        .pool(|p| p.workers(2))
        .serve(move |_req, _ctx| {
            counter.fetch_add(1, Ordering::Relaxed);
            http::Response::new(b"ok".to_vec())
        })
        .unwrap();
    let addr = s.local_addrs()[0];
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..8)
        .map(|_| {
            let stop = stop.clone();
            std::thread::spawn(move || client(addr, stop))
        })
        .collect();
    // Shut down once every client has been answered a few times.
    let start = std::time::Instant::now();
    while served.load(Ordering::Relaxed) < 2_000 {
        assert!(start.elapsed() < WAIT, "the clients were not served");
        std::thread::sleep(Duration::from_millis(5));
    }
    let report = s.shutdown(WAIT);
    assert_eq!(report.threads_left_running, 0);
    // Clients still connecting after the stop are refused; bound their runs anyway.
    stop.store(true, Ordering::Relaxed);
    let mut answers = 0;
    for c in clients {
        let (n, failures) = c.join().unwrap();
        assert!(
            failures.is_empty(),
            "requests lost in the shutdown: {failures:?}"
        );
        answers += n;
    }
    assert!(answers >= 2_000, "{answers} answers");
}
