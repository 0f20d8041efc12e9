//! `Supervisor::serve_service` (feature `tower`): an async service (a plain `tower::Service`, as an
//! axum `Router` is one) served by a tokio runtime in each of 2 worker processes: a reload under
//! keep-alive load (wrk) with zero failed requests, the deadline's 504 for a slow future, and the
//! master's deadline kill of a process whose runtime thread is blocked.

pub(crate) mod balance;
pub(crate) mod ops;
pub(crate) mod proxy;

use std::convert::Infallible;
use std::future::Future;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use http_body_util::Full;
use hyper::body::Bytes;
use prefork_pool::prefork::ServiceBody;
use prefork_pool::prefork::{ServiceConfig, SupervisorBuilder};

use crate::helpers::*;
use crate::tools;
use crate::wrk::Wrk;

/// `/` answers the worker's pid; `/slow` waits 5 s on the runtime (past the 1 s deadline);
/// `/block` blocks its runtime thread for 60 s (a synchronous call where it must not be).
#[derive(Clone)]
pub(crate) struct PidService;

impl tower_service::Service<http::Request<ServiceBody>> for PidService {
    type Response = http::Response<Full<Bytes>>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<ServiceBody>) -> Self::Future {
        let path = req.uri().path().to_owned();
        Box::pin(async move {
            match path.as_str() {
                "/slow" => tokio::time::sleep(Duration::from_secs(5)).await,
                "/block" => std::thread::sleep(Duration::from_secs(60)),
                _ => {}
            }
            let body = format!("{}\n", std::process::id());
            Ok(http::Response::new(Full::new(Bytes::from(body))))
        })
    }
}

/// A master running `serve_service(PidService)` in `procs` processes of 2 runtime threads.
fn service_master(
    name: &str,
    procs: usize,
    configure: impl FnOnce(SupervisorBuilder) -> SupervisorBuilder,
) -> Master {
    start_master(
        name,
        |_| {},
        |b, l| configure(b.listener(l).workers(procs)),
        |b| {
            b.serve_service(
                ServiceConfig::new()
                    .threads(2)
                    .deadline(Duration::from_secs(1)),
                || Ok::<_, String>(PidService),
            )
        },
    )
}

/// One HTTP/1.1 request on its own connection: the status code and the body.
fn request(addr: SocketAddr, path: &str) -> Result<(u16, String), String> {
    let mut conn = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .map_err(|e| format!("connect: {e}"))?;
    conn.set_read_timeout(Some(Duration::from_secs(20))).ok();
    conn.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .map_err(|e| format!("write: {e}"))?;
    let mut resp = String::new();
    conn.read_to_string(&mut resp)
        .map_err(|e| format!("read: {e}"))?;
    let status = resp
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("no status in {resp:?}"))?;
    let body = resp.split_once("\r\n\r\n").map_or("", |(_, b)| b).trim();
    Ok((status, body.to_owned()))
}

/// 2 processes: answers from both; `/slow` gets 504 at its 1 s deadline; SIGHUP under keep-alive
/// load (wrk -t1 -c16, 8 s) fails no request and answers come from old and new workers; SIGTERM
/// ends the master with status 0.
pub fn hup_under_load() -> Result<(), String> {
    if tools::tool_or_skip(&tools::WRK)?.is_none() {
        return Ok(());
    }
    let mut m = service_master("service-hup", 2, |b| b);
    let result = (|| {
        m.wait_log("2 worker(s) ready", LONG)?;
        let (status, pid) = request(m.addr, "/")?;
        ensure(status == 200 && pid.parse::<u32>().is_ok(), || {
            format!("`/` answered {status} {pid:?}")
        })?;
        let asked = Instant::now();
        let (status, _) = request(m.addr, "/slow")?;
        let took = asked.elapsed();
        ensure(status == 504, || {
            format!("`/slow` answered {status}, not 504")
        })?;
        ensure(took < Duration::from_secs(4), || {
            format!("the 504 took {took:?} (deadline 1 s)")
        })?;

        // 8 s: beside a CPU burner the new workers (a tokio runtime each, a debug build) took
        // more than the 3 s a 4 s run left them to boot and serve.
        let wrk = Wrk::start(m.addr, 1, 16, Duration::from_secs(8), "/")?;
        sleep_ms(1000);
        m.signal(libc::SIGHUP);
        let reloaded = m.wait_log("ready after the reload", LONG);
        let run = wrk.finish()?;
        reloaded?;
        println!(
            "  service-hup: {} requests, {} read / {} write errors, {} non-2xx, shares {}",
            run.requests(),
            run.read_errors,
            run.write_errors,
            run.non_2xx,
            run.percent()
        );
        run.clean()?;
        ensure(run.requests() > 100, || {
            format!("only {} requests were served", run.requests())
        })?;
        ensure(run.shares.len() >= 3, || {
            format!(
                "answers came from {:?}: not old and new workers",
                run.shares
            )
        })?;
        m.signal(libc::SIGTERM);
        let code = m.wait_exit(LONG)?;
        ensure(code == 0, || format!("exit status {code}"))
    })();
    finish(&mut m, result)
}

/// A request that blocks its runtime thread (so its deadline's timer cannot answer it) is tracked
/// in the heartbeat: the master kills the process `request_grace` after the deadline, names the
/// request, and the replacement serves.
pub fn deadline_kill() -> Result<(), String> {
    let mut m = service_master("service-deadline", 1, |b| {
        b.heartbeat_timeout(Duration::from_secs(30))
            .request_grace(Duration::from_millis(500))
    });
    let result = (|| {
        m.wait_log("1 worker(s) ready", LONG)?;
        let addr = m.addr;
        let stuck = std::thread::spawn(move || request(addr, "/block"));
        m.wait_log("killed by the supervisor after a deadline timeout", LONG)?;
        let _ = stuck.join();
        ensure(m.log_text().contains("GET /block HTTP/1.1"), || {
            "the request line is not in the log".into()
        })?;
        let end = Instant::now() + LONG;
        while !matches!(request(m.addr, "/"), Ok((200, _))) {
            ensure(Instant::now() < end, || "no answer after the kill".into())?;
            sleep_ms(100);
        }
        m.signal(libc::SIGTERM);
        let code = m.wait_exit(LONG)?;
        ensure(code == 0, || format!("exit status {code}"))
    })();
    finish(&mut m, result)
}

/// A request whose handler blocks the only runtime thread of its process far past its deadline
/// (a `std::thread::sleep` of 60 s, where a synchronous client would block): the runtime cannot
/// run its deadline's timer, so the lifeline thread answers the 504 on the socket from outside
/// the runtime, with `Connection: close`, long before the master kills the process (deadline +
/// a `request_grace` of 20 s). The log names the request, that every runtime thread was
/// blocked, and the fix; the access log has its 504; the worker is still replaced, and its
/// replacement's `/metrics` (the whole server's counters) counts the server's own 504.
pub fn blocked_504() -> Result<(), String> {
    let dir = std::env::temp_dir().join(format!("prefork-test-{}-blocked", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let access = dir.join("access.log");
    let log_file = access.clone();
    let app = crate::service::ops::ServiceFn::new(|req: http::Request<ServiceBody>| async move {
        match req.uri().path() {
            // The mistake: a synchronous wait on the runtime's only thread.
            "/block" => std::thread::sleep(Duration::from_secs(60)),
            "/metrics" => {
                let m = prefork_pool::prefork::server_metrics().expect("the shared table");
                return crate::service::ops::text(format!("{}\n", m.own_answers_with(504)));
            }
            _ => {}
        }
        crate::service::ops::text(format!("{}\n", std::process::id()))
    });
    let mut m = start_master(
        "service-blocked-504",
        |_| {},
        move |b, l| {
            b.listener(l)
                .workers(1)
                .access_log_file(&log_file)
                .heartbeat_timeout(Duration::from_secs(60))
                .request_grace(Duration::from_secs(20))
        },
        move |b| {
            b.serve_service(
                ServiceConfig::new()
                    .threads(1)
                    .deadline(Duration::from_secs(1)),
                move || Ok::<_, String>(app.clone()),
            )
        },
    );
    let result = (|| {
        m.wait_log("1 worker(s) ready", LONG)?;
        let (_, first) = request(m.addr, "/")?;
        let asked = Instant::now();
        let mut conn = std::net::TcpStream::connect_timeout(&m.addr, Duration::from_secs(5))
            .map_err(|e| format!("connect: {e}"))?;
        conn.set_read_timeout(Some(LONG)).ok();
        // Kept alive as far as the client is concerned: the server closes it.
        conn.write_all(b"GET /block HTTP/1.1\r\nHost: t\r\n\r\n")
            .map_err(|e| format!("write: {e}"))?;
        let mut answer = String::new();
        let read = conn.read_to_string(&mut answer);
        let took = asked.elapsed();
        ensure(
            read.is_ok()
                && answer.starts_with("HTTP/1.1 504 Gateway Timeout\r\n")
                && answer
                    .to_ascii_lowercase()
                    .contains("\r\nconnection: close\r\n")
                && answer.ends_with("\r\n\r\ngateway timeout\n"),
            || format!("GET /block, blocking the only runtime thread: {read:?} {answer:?}"),
        )?;
        // The kill comes at deadline + request_grace = 21 s; the 504 at about 1.3 s.
        ensure(took < Duration::from_secs(10), || {
            format!("the 504 took {took:?} (deadline 1 s, the kill at 21 s)")
        })?;
        ensure(!m.log_text().contains("deadline timeout"), || {
            format!("the worker was killed before the 504: {}", m.log_text())
        })?;
        m.wait_log("GET /block HTTP/1.1: no answer within its deadline", LONG)?;
        let log = m.log_text();
        let said = log
            .lines()
            .find(|l| l.contains("GET /block HTTP/1.1: no answer"));
        println!(
            "  blocked-504: the 504 after {took:?}; {}",
            said.unwrap_or("")
        );
        ensure(
            log.contains("GET /block HTTP/1.1: no answer within its deadline")
                && log.contains("every runtime thread of this worker")
                && log.contains("spawn_blocking"),
            || format!("the log names the request, the blocked runtime and the fix: {log}"),
        )?;
        // (The log thread writes every 100 ms.)
        let end = Instant::now() + LONG;
        loop {
            let line = std::fs::read_to_string(&access).unwrap_or_default();
            if line.contains("\"GET /block HTTP/1.1\" 504") {
                break;
            }
            ensure(Instant::now() < end, || {
                format!("no 504 of GET /block in the access log: {line:?}")
            })?;
            sleep_ms(50);
        }
        // Still replaced as before: the master kills it at the deadline + request_grace.
        m.wait_log("killed by the supervisor after a deadline timeout", LONG)?;
        let end = Instant::now() + LONG;
        let pid = loop {
            if let Ok((200, pid)) = request(m.addr, "/") {
                break pid;
            }
            ensure(Instant::now() < end, || "no answer after the kill".into())?;
            sleep_ms(100);
        };
        ensure(pid != first, || format!("pid {pid} was not replaced"))?;
        let (s, own) = request(m.addr, "/metrics")?;
        ensure(s == 200 && own.parse::<u64>().is_ok_and(|n| n >= 1), || {
            format!("the server's own 504s in the shared metrics: {s} {own:?}")
        })?;
        m.signal(libc::SIGTERM);
        let code = m.wait_exit(LONG)?;
        ensure(code == 0, || format!("exit status {code}"))
    })();
    let _ = std::fs::remove_dir_all(&dir);
    finish(&mut m, result)
}
