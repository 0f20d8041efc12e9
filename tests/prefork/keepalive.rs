//! Zero-error reloads and stops under keep-alive load (wrk -t1 -c16): a kept-alive connection of
//! a draining worker is never closed while the client's next request may be on the wire; its next
//! request is answered with `Connection: close`, and the client reconnects to another worker.

use std::time::Duration;

use crate::balance::http_master;
use crate::helpers::*;
use crate::wrk::{Wrk, WrkRun};

const LOAD: Duration = Duration::from_secs(4);

/// Runs wrk for `LOAD` on a 2-process server; `during` acts on the master once the load runs.
fn under_load(
    name: &str,
    configure: impl FnOnce(prefork_pool::prefork::SupervisorBuilder) -> prefork_pool::prefork::SupervisorBuilder,
    during: impl FnOnce(&mut Master) -> Result<(), String>,
) -> Result<WrkRun, String> {
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
    result
}

/// SIGHUP under keep-alive load: no failed request; answers came from old and new workers.
pub fn hup() -> Result<(), String> {
    let run = under_load(
        "keepalive-hup",
        |b| b,
        |m| {
            m.signal(libc::SIGHUP);
            m.wait_log("ready after the reload", LONG)
        },
    )?;
    ensure(run.shares.len() >= 3, || {
        format!("answers came from {:?}: not old and new workers", run.shares)
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
            m.wait_log("3 worker(s) ready", LONG)?;
            m.signal(libc::SIGTTOU);
            m.wait_log("exited with code 0", LONG)
        },
    )
    .map(|_| ())
}

/// SIGTERM under keep-alive load: every request sent before the server stopped is answered (the
/// client's later connections are refused: connect errors, not failed requests); exit 0.
pub fn term() -> Result<(), String> {
    under_load(
        "keepalive-term",
        |b| b,
        |m| {
            m.signal(libc::SIGTERM);
            let code = m.wait_exit(LONG)?;
            ensure(code == 0, || format!("exit status {code}"))
        },
    )
    .map(|_| ())
}

/// Workers recycled by `max_requests` under keep-alive load lose no request.
pub fn max_requests() -> Result<(), String> {
    under_load(
        "keepalive-recycle",
        |b| b.max_requests(1500, 0),
        |m| m.wait_log("retires after", LONG),
    )
    .map(|_| ())
}
