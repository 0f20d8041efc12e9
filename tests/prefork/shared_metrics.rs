//! Process mode's server-wide metrics (`prefork::server_metrics`): a scrape through the shared
//! listener shows every worker process's requests, whichever process answers, and the counts of a
//! worker killed and replaced are kept.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;

use crate::helpers::*;
use crate::serve_http::http_handler;

/// `/metrics`: the whole server's page, then a comment line with the pid that answered; any other
/// path: [`http_handler`].
fn metrics_handler(
    req: prefork_pool::http::HttpRequest,
    ctx: &prefork_pool::Context,
) -> prefork_pool::http::HttpResponse {
    if req.uri().path() != "/metrics" {
        return http_handler(req, ctx);
    }
    let m = prefork_pool::prefork::server_metrics().expect("in a worker process");
    let page = prefork_pool::Metrics::builder()
        .build()
        .unwrap()
        .page()
        .server("web", &m)
        .workers(
            "web",
            &prefork_pool::prefork::worker_metrics().expect("in a worker process"),
        )
        .finish();
    http::Response::new(format!("{page}# pid {}\n", std::process::id()).into_bytes())
}

/// What a scrape shows: the request total (the sum of the `http_requests_total` samples), the
/// open connections, the pid that answered, and the pid of each worker slot
/// (`http_worker_pid{worker="<slot>"}`).
struct Scrape {
    total: u64,
    open: u64,
    pid: i32,
    slots: std::collections::BTreeMap<String, i32>,
}

fn scrape(m: &Master) -> Result<Scrape, String> {
    parse(&get(m.addr, "/metrics")?)
}

fn parse(page: &str) -> Result<Scrape, String> {
    let (mut total, mut open, mut pid) = (0, 0, 0);
    let mut slots = std::collections::BTreeMap::new();
    let value = |line: &str| {
        line.rsplit(' ')
            .next()
            .unwrap_or("")
            .parse::<u64>()
            .map_err(|e| format!("sample {line:?}: {e}"))
    };
    for line in page.lines() {
        if line.starts_with("prefork_http_requests_total{") {
            total += value(line)?;
        } else if line.starts_with("prefork_http_open_connections{") {
            open += value(line)?;
        } else if let Some(rest) = line.strip_prefix("prefork_http_worker_pid{") {
            let slot = rest
                .split("worker=\"")
                .nth(1)
                .and_then(|r| r.split('"').next())
                .ok_or(format!("no worker label in {line:?}"))?;
            slots.insert(slot.to_string(), value(line)? as i32);
        } else if let Some(p) = line.strip_prefix("# pid ") {
            pid = p.parse().map_err(|e| format!("pid line {line:?}: {e}"))?;
        }
    }
    ensure(pid != 0, || format!("no pid line in {page:?}"))?;
    Ok(Scrape {
        total,
        open,
        pid,
        slots,
    })
}

/// A scrape over a connection that stays open (HTTP/1.1 keep-alive).
fn scrape_keep_alive(conn: &mut TcpStream) -> Result<Scrape, String> {
    conn.set_read_timeout(Some(LONG)).ok();
    conn.write_all(b"GET /metrics HTTP/1.1\r\nHost: test\r\n\r\n")
        .map_err(|e| e.to_string())?;
    let mut r = BufReader::new(conn);
    let mut len = 0;
    loop {
        let mut line = String::new();
        r.read_line(&mut line).map_err(|e| e.to_string())?;
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            len = v.trim().parse().map_err(|e| format!("{line:?}: {e}"))?;
        }
    }
    let mut body = vec![0; len];
    r.read_exact(&mut body).map_err(|e| e.to_string())?;
    parse(&String::from_utf8_lossy(&body))
}

pub fn check_shared_metrics(m: &mut Master) -> Result<(), String> {
    const N: u64 = 40;
    m.wait_workers(LONG, "2 workers", |w| w.len() == 2)?;
    let mut answered_by = std::collections::BTreeSet::new();
    for _ in 0..N {
        answered_by.insert(get(m.addr, "/")?);
    }
    let mut sent = N;
    let mut last = 0;
    for i in 0..4 {
        let Scrape { total, pid, .. } = scrape(m)?;
        ensure(total >= sent, || {
            format!(
                "scrape {i} (pid {pid}) counts {total} requests, {sent} were answered before it"
            )
        })?;
        ensure(total >= last, || {
            format!("scrape {i} (pid {pid}) counts {total} requests, the one before {last}")
        })?;
        sent += 1;
        last = total;
    }
    // A process that holds a connection open (and has counted at least the scrape on it): kill
    // it, the master folds its counts into the retired totals, drops its gauges, starts another.
    let mut held = TcpStream::connect(m.addr).map_err(|e| e.to_string())?;
    let Scrape {
        total, pid, slots, ..
    } = scrape_keep_alive(&mut held)?;
    ensure(total >= last, || {
        format!("a scrape (pid {pid}) counts {total} requests, the one before {last}")
    })?;
    sent += 1;
    let last_pid = pid;
    let before = m.workers();
    ensure(
        slots.values().copied().collect::<BTreeSet<_>>() == before,
        || format!("the worker slots on the page are {slots:?}, the master's workers {before:?}"),
    )?;
    ensure(before.contains(&last_pid), || {
        format!("pid {last_pid} answered, not one of the workers {before:?}")
    })?;
    // SAFETY: kill(2) of a worker process of this test's master.
    unsafe { libc::kill(last_pid, libc::SIGKILL) };
    m.wait_workers(LONG, "2 workers, the killed one replaced", |w| {
        w.len() == 2 && !w.contains(&last_pid)
    })?;
    let after = m.workers();
    // The replacement takes the killed worker's slot: the same `worker` labels, its pid instead
    // (scraped again while the master has not written the new pid into the slot yet: a moment
    // after the fork).
    let shows_after = |s: &Scrape| {
        s.slots.keys().eq(slots.keys())
            && s.slots.values().copied().collect::<BTreeSet<_>>() == after
    };
    let end = std::time::Instant::now() + LONG;
    let mut now = scrape(m)?;
    while !shows_after(&now) && std::time::Instant::now() < end {
        now = scrape(m)?;
    }
    ensure(shows_after(&now), || {
        format!(
            "after pid {last_pid} was killed the worker slots are {:?} (before: {slots:?}), the \
             master's workers {after:?}",
            now.slots
        )
    })?;
    let Scrape {
        total, open, pid, ..
    } = now;
    ensure(open <= 1, || {
        format!("pid {pid} shows {open} open connections: the killed worker's are still counted")
    })?;
    drop(held);
    ensure(total >= sent && total >= last, || {
        format!(
            "after pid {last_pid} was killed, pid {pid} counts {total} requests: {sent} were \
             answered before, the last scrape counted {last}"
        )
    })?;
    m.signal(libc::SIGTERM);
    let code = m.wait_exit(LONG)?;
    ensure(code == 0, || format!("exit status {code}"))
}

pub fn serve_http_shared_metrics() -> Result<(), String> {
    let mut m = start_master(
        "http-metrics",
        |_| {},
        |b, l| b.listener(l).workers(2),
        |b| {
            b.serve_http(
                |s| s.pool(|p| p.workers(2)).access_log(false).max_spare(0),
                || Ok::<_, String>(metrics_handler),
            )
        },
    );
    let r = check_shared_metrics(&mut m);
    finish(&mut m, r)
}
