//! `Supervisor::serve_router`: a `Router` in each worker process (extractors, 405 with `Allow`,
//! a route's own deadline answered 504 by the worker's watchdog).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use prefork_pool::http::types::http::StatusCode;
use prefork_pool::http::{get, post, Path, Router};

use crate::helpers::*;

fn app() -> Router {
    Router::new()
        .route(
            "/hi/{name}",
            get(|Path(name): Path<String>| format!("hi {name} from {}", std::process::id())),
        )
        .route("/made", post(|| (StatusCode::CREATED, "made")))
        .route(
            "/slow",
            get(|| std::thread::sleep(Duration::from_secs(3))).deadline(Duration::from_millis(300)),
        )
}

/// The whole answer to `request` (HTTP/1.0: the server closes after it).
fn ask(addr: SocketAddr, request: &str) -> Result<String, String> {
    let mut conn = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .map_err(|e| format!("connect: {e}"))?;
    conn.set_read_timeout(Some(Duration::from_secs(20))).ok();
    conn.write_all(request.as_bytes())
        .map_err(|e| format!("write: {e}"))?;
    let mut resp = String::new();
    conn.read_to_string(&mut resp)
        .map_err(|e| format!("read: {e}"))?;
    Ok(resp)
}

pub fn serve_router() -> Result<(), String> {
    let mut m = start_master(
        "router",
        |_| {},
        |b, l| {
            b.listener(l)
                .workers(2)
                .request_grace(Duration::from_secs(10))
        },
        |b| {
            b.serve_router(
                |s| {
                    s.pool(|p| p.workers(2).deadline(Duration::from_secs(30)))
                        .access_log(false)
                },
                || Ok::<_, String>(app()),
            )
        },
    );
    let addr = m.addr;
    let r = (|| {
        m.wait_workers(LONG, "2 workers", |w| w.len() == 2)?;
        let a = ask(addr, "GET /hi/a%2Db HTTP/1.0\r\n\r\n")?;
        ensure(
            a.starts_with("HTTP/1.1 200 OK") && a.contains("\r\n\r\nhi a-b from "),
            || format!("GET /hi/a%2Db: {a:?}"),
        )?;
        let a = ask(addr, "GET /made HTTP/1.0\r\n\r\n")?;
        ensure(
            a.starts_with("HTTP/1.1 405 ") && a.contains("\r\nallow: POST\r\n"),
            || format!("GET /made: {a:?}"),
        )?;
        let a = ask(addr, "POST /made HTTP/1.0\r\nContent-Length: 0\r\n\r\n")?;
        ensure(a.starts_with("HTTP/1.1 201 "), || {
            format!("POST /made: {a:?}")
        })?;
        // The route's deadline (300 ms), not the pool's 30 s.
        let started = Instant::now();
        let a = ask(addr, "GET /slow HTTP/1.0\r\n\r\n")?;
        ensure(a.starts_with("HTTP/1.1 504 "), || {
            format!("GET /slow: {a:?}")
        })?;
        ensure(started.elapsed() < Duration::from_secs(2), || {
            format!("the 504 took {:?}", started.elapsed())
        })?;
        m.signal(libc::SIGTERM);
        let code = m.wait_exit(LONG)?;
        ensure(code == 0, || format!("exit status {code}"))
    })();
    finish(&mut m, r)
}

/// Per-thread state in each worker process: `init` runs in the worker (after the fork), and a
/// route handler whose first argument is `&mut W` gets its thread's state.
pub fn serve_router_with_state() -> Result<(), String> {
    struct Conn {
        pid: u32,
        served: u64,
    }
    fn count(c: &mut Conn, Path(step): Path<u64>) -> String {
        c.served += step;
        format!("{} {}", c.pid, c.served)
    }
    let mut m = start_master(
        "router-state",
        |_| {},
        |b, l| b.listener(l).workers(1),
        |b| {
            b.serve_router_with_state(
                |s| s.pool(|p| p.workers(1)).access_log(false),
                |_| {
                    Ok::<_, String>(Conn {
                        pid: std::process::id(),
                        served: 0,
                    })
                },
                || Ok::<_, String>(Router::new().route("/count/{step}", get(count))),
            )
        },
    );
    let addr = m.addr;
    let r = (|| {
        m.wait_workers(LONG, "1 worker", |w| w.len() == 1)?;
        let worker = *m.workers().iter().next().unwrap();
        let body = |a: String| a.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
        let a = body(ask(addr, "GET /count/2 HTTP/1.0\r\n\r\n")?);
        ensure(a == format!("{worker} 2"), || format!("first count: {a:?}"))?;
        let a = body(ask(addr, "GET /count/3 HTTP/1.0\r\n\r\n")?);
        ensure(a == format!("{worker} 5"), || {
            format!("second count: {a:?}")
        })?;
        m.signal(libc::SIGTERM);
        let code = m.wait_exit(LONG)?;
        ensure(code == 0, || format!("exit status {code}"))
    })();
    finish(&mut m, r)
}
