//! The worker apps the scenarios run (test fixtures, not the library's business): a tiny HTTP/1.0
//! responder with slow, hanging, stuck and leaking routes, and a worker that runs requests on a crate `Pool`.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use prefork_pool::prefork::WorkerEnv;

pub fn read_head(conn: &mut TcpStream) -> Option<String> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        match conn.read(&mut chunk) {
            // The worker's stop signal interrupts a read on a socket with a timeout even under
            // SA_RESTART (signal(7)): read again, or the request goes unanswered.
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
        if buf.len() > 16 * 1024 {
            return None;
        }
    }
    let text = String::from_utf8_lossy(&buf).into_owned();
    Some(text.lines().next().unwrap_or("").to_string())
}

pub fn serve(env: &WorkerEnv, mut conn: TcpStream) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
    let Some(line) = read_head(&mut conn) else {
        return;
    };
    let path = line.split_whitespace().nth(1).unwrap_or("/").to_string();
    let hb = env.heartbeat();
    hb.request_started(Instant::now() + Duration::from_millis(300), &line);
    if let Some(ms) = path.strip_prefix("/sleep/") {
        std::thread::sleep(Duration::from_millis(ms.parse().unwrap_or(10)));
    } else if let Some(mib) = path.strip_prefix("/grow/") {
        // Allocates and keeps N MiB, every page written (resident): a leak the master's
        // max_worker_memory must recycle.
        let n: usize = mib.parse().unwrap_or(1);
        let kept: &'static mut [u8] = vec![1u8; n << 20].leak();
        std::hint::black_box(kept);
    } else if path == "/hang" {
        // Stops beating: the master's heartbeat check must kill this process.
        loop {
            std::thread::sleep(Duration::from_secs(1));
        }
    } else if path == "/stuck" {
        // Keeps beating (as a reactor thread would) but never finishes the request: the deadline
        // check must kill this process.
        loop {
            std::thread::sleep(Duration::from_millis(100));
            hb.beat();
        }
    }
    let body = format!("{}\n", std::process::id());
    let resp = format!(
        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = conn.write_all(resp.as_bytes());
    drop(conn);
    env.request_finished();
}

pub fn responder(env: &mut WorkerEnv) -> i32 {
    env.ready();
    loop {
        let stopping = env.is_stopping();
        if !stopping {
            match env.wait_for_listeners(Duration::from_millis(200)) {
                Ok(_) => {}
                Err(_) => return 1,
            }
        }
        // Accept until WouldBlock: when stopping, this drains the backlog before leaving.
        loop {
            let accepted = env.listeners()[0].tcp().unwrap().accept();
            match accepted {
                Ok((conn, _)) => serve(env, conn),
                Err(_) => break,
            }
        }
        if stopping {
            return 0;
        }
    }
}

/// A worker that runs requests on a crate `Pool` with 1 thread and a 300 ms deadline: the pool's
/// watchdog answers a stuck request at its deadline (504); the stuck thread keeps its
/// `Heartbeat::track` guard, so the master kills the process once the deadline plus `request_grace`
/// has passed.
pub fn pool_worker(env: &mut WorkerEnv) -> i32 {
    use prefork_pool::{Context, Pool};
    let hb = env.heartbeat();
    let pool = Pool::builder()
        .workers(1)
        .deadline(Duration::from_millis(300))
        .build(move |line: String, ctx: &Context| {
            let _running = hb.track(ctx.deadline(), &line);
            if line.contains("/never") {
                // A handler that ignores its cancelled Context and never returns.
                loop {
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
            format!("{}", std::process::id())
        });
    let Ok(pool) = pool else {
        return 1;
    };
    env.ready();
    loop {
        let stopping = env.is_stopping();
        if !stopping && env.wait_for_listeners(Duration::from_millis(200)).is_err() {
            return 1;
        }
        while let Ok((mut conn, _)) = env.listeners()[0].tcp().unwrap().accept() {
            let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
            let Some(line) = read_head(&mut conn) else {
                continue;
            };
            let (status, body) = match pool.call(line) {
                Ok(body) => (200, body),
                Err(e) => (e.http_status(), e.to_string()),
            };
            let body = format!("{body}\n");
            let _ = conn.write_all(
                format!(
                    "HTTP/1.1 {status} {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    if status == 200 { "OK" } else { "Error" },
                    body.len()
                )
                .as_bytes(),
            );
        }
        if stopping {
            pool.shutdown(Duration::from_secs(1));
            return 0;
        }
    }
}

pub fn app() -> Result<fn(&mut WorkerEnv) -> i32, String> {
    Ok(responder)
}
