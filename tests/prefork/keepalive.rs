//! Zero-error reloads and stops under keep-alive load (wrk -t1 -c16): a kept-alive connection of
//! a draining worker is never closed while the client's next request may be on the wire; its next
//! request is answered with `Connection: close`, and the client reconnects to another worker.

use std::time::Duration;

use crate::balance::http_master;
use crate::helpers::*;
use crate::tools;
use crate::wrk::{Wrk, WrkRun};

const LOAD: Duration = Duration::from_secs(4);

/// Runs wrk for `LOAD` on a 2-process server; `during` acts on the master once the load runs.
/// `None`: wrk is not installed (skipped).
fn under_load(
    name: &str,
    configure: impl FnOnce(
        prefork_pool::prefork::SupervisorBuilder,
    ) -> prefork_pool::prefork::SupervisorBuilder,
    during: impl FnOnce(&mut Master) -> Result<(), String>,
) -> Result<Option<WrkRun>, String> {
    if tools::tool_or_skip(&tools::WRK)?.is_none() {
        return Ok(None);
    }
    let mut m = http_master(name, 2, 2, configure);
    let result = (|| {
        m.wait_log("2 worker(s) ready", LONG)?;
        let wrk = Wrk::start(m.addr, 1, 16, LOAD, "/")?;
        // Let the 16 connections be opened and kept alive before acting.
        sleep_ms(1000);
        let acted = during(&mut m);
        let run = wrk.finish()?;
        acted?;
        println!(
            "  {name}: {} requests, {} read / {} write errors, {} connect errors, {} non-2xx",
            run.requests(),
            run.read_errors,
            run.write_errors,
            run.connect_errors,
            run.non_2xx
        );
        run.clean()?;
        ensure(run.requests() > 100, || {
            format!("only {} requests were served", run.requests())
        })?;
        Ok(run)
    })();
    finish(&mut m, result.as_ref().map(|_| ()).map_err(Clone::clone))?;
    result.map(Some)
}

/// SIGHUP under keep-alive load: no failed request; answers came from old and new workers.
pub fn hup() -> Result<(), String> {
    let Some(run) = under_load(
        "keepalive-hup",
        |b| b,
        |m| {
            m.signal(libc::SIGHUP);
            m.wait_log("ready after the reload", LONG)
        },
    )?
    else {
        return Ok(());
    };
    ensure(run.shares.len() >= 3, || {
        format!(
            "answers came from {:?}: not old and new workers",
            run.shares
        )
    })
}

/// SIGTTIN then SIGTTOU under keep-alive load: the worker stopped loses no request.
pub fn ttou() -> Result<(), String> {
    under_load(
        "keepalive-ttou",
        |b| b,
        |m| {
            m.signal(libc::SIGTTIN);
            m.wait_workers(LONG, "3 workers", |w| w.len() == 3)?;
            m.wait_log("worker 3 (pid", LONG)?;
            let end = std::time::Instant::now() + LONG;
            while !m
                .log_text()
                .lines()
                .any(|l| l.contains("worker 3 (pid") && l.contains("ready in"))
            {
                ensure(std::time::Instant::now() < end, || {
                    "worker 3 never ready".into()
                })?;
                sleep_ms(20);
            }
            m.signal(libc::SIGTTOU);
            m.wait_log("exited with code 0", LONG)
        },
    )
    .map(|_| ())
}

/// Workers recycled by `max_requests` under keep-alive load lose no request.
pub fn max_requests() -> Result<(), String> {
    under_load(
        "keepalive-recycle",
        |b| b.max_requests(1500).max_requests_jitter(200),
        |m| m.wait_log("retires after", LONG),
    )
    .map(|_| ())
}

/// How a keep-alive client's run went.
#[derive(Debug, Default)]
pub struct ClientRun {
    pub answered: u64,
    /// Connections refused or not answered (SYN dropped) while or after the server stopped.
    pub refused: u64,
    /// A request written, then an end of file or an error before its whole answer.
    pub failed: Vec<String>,
}

/// `threads` keep-alive clients sending `GET /` one after another until `stop`; a client whose
/// answer says `Connection: close` reads the end of file and reconnects.
pub fn keepalive_clients(
    addr: std::net::SocketAddr,
    threads: usize,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> Vec<std::thread::JoinHandle<ClientRun>> {
    use std::io::{Read, Write};
    use std::sync::atomic::Ordering;
    (0..threads)
        .map(|_| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut run = ClientRun::default();
                'connect: while !stop.load(Ordering::Relaxed) {
                    let Ok(mut conn) =
                        std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2))
                    else {
                        run.refused += 1;
                        sleep_ms(20);
                        continue;
                    };
                    conn.set_read_timeout(Some(Duration::from_secs(20))).ok();
                    let _ = conn.set_nodelay(true);
                    while !stop.load(Ordering::Relaxed) {
                        if let Err(e) = conn.write_all(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n") {
                            run.failed.push(format!("write: {e}"));
                            continue 'connect;
                        }
                        let mut buf = Vec::new();
                        let mut tmp = [0u8; 4096];
                        let (head_end, len) = loop {
                            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                                let head = String::from_utf8_lossy(&buf[..i]).to_lowercase();
                                let len = head
                                    .lines()
                                    .find_map(|l| l.strip_prefix("content-length:"))
                                    .and_then(|v| v.trim().parse::<usize>().ok())
                                    .unwrap_or(0);
                                break (i + 4, len);
                            }
                            match conn.read(&mut tmp) {
                                Ok(0) => {
                                    run.failed.push("end of file before the answer".into());
                                    continue 'connect;
                                }
                                Ok(n) => buf.extend_from_slice(&tmp[..n]),
                                Err(e) => {
                                    run.failed.push(format!("read: {e}"));
                                    continue 'connect;
                                }
                            }
                        };
                        while buf.len() < head_end + len {
                            match conn.read(&mut tmp) {
                                Ok(n) if n > 0 => buf.extend_from_slice(&tmp[..n]),
                                other => {
                                    run.failed.push(format!("answer cut short: {other:?}"));
                                    continue 'connect;
                                }
                            }
                        }
                        let head = String::from_utf8_lossy(&buf[..head_end]).to_lowercase();
                        if !head.starts_with("http/1.1 200") {
                            run.failed.push(format!("answer {head:?}"));
                        }
                        run.answered += 1;
                        if head.contains("connection: close") {
                            continue 'connect;
                        }
                    }
                }
                run
            })
        })
        .collect()
}

/// SIGTERM under keep-alive load (16 client threads of this process): every request written is
/// answered; only connections after the stop are refused; exit 0.
pub fn term() -> Result<(), String> {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let mut m = http_master("keepalive-term", 2, 2, |b| b);
    let result = (|| {
        m.wait_log("2 worker(s) ready", LONG)?;
        let stop = Arc::new(AtomicBool::new(false));
        let clients = keepalive_clients(m.addr, 16, stop.clone());
        sleep_ms(1000);
        m.signal(libc::SIGTERM);
        let code = m.wait_exit(LONG);
        // A moment of refused connections after the stop, then the clients stop.
        sleep_ms(200);
        stop.store(true, Ordering::Relaxed);
        let runs: Vec<ClientRun> = clients
            .into_iter()
            .map(|c| c.join().expect("client thread"))
            .collect();
        let answered: u64 = runs.iter().map(|r| r.answered).sum();
        let failed: Vec<&String> = runs.iter().flat_map(|r| &r.failed).collect();
        println!(
            "  keepalive-term: {answered} requests answered, {} failed, {} connections refused",
            failed.len(),
            runs.iter().map(|r| r.refused).sum::<u64>()
        );
        ensure(failed.is_empty(), || {
            format!(
                "{} request(s) failed: {:?}",
                failed.len(),
                &failed[..failed.len().min(5)]
            )
        })?;
        ensure(answered > 100, || {
            format!("only {answered} requests answered")
        })?;
        let code = code?;
        ensure(code == 0, || format!("exit status {code}"))
    })();
    finish(&mut m, result)
}
