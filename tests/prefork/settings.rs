//! The settings from the environment, end to end through `examples/prefork_server` (its
//! environment set on the child only: the variables are the whole process's): `PORT` listens on
//! every interface (checked in `/proc/net/tcp`; traffic only to 127.0.0.1), `WEB_CONCURRENCY` and
//! `PREFORK_THREADS` size it, `--print-config` shows where each setting came from, and a refused
//! value stops it with exit status 1, naming the variable.

use std::net::TcpListener;
use std::time::{Duration, Instant};

use crate::deploy::systemd::{example_binary, http, Program};
use crate::helpers::{ensure, wait_children};

/// The listening sockets of `/proc/net/tcp` on `port`, as their local address in hex
/// (`00000000` is 0.0.0.0, `0100007F` is 127.0.0.1).
fn listening_on(port: u16) -> Vec<String> {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
    table
        .lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let (ip, p) = f.get(1)?.split_once(':')?;
            // State 0A is LISTEN.
            (u16::from_str_radix(p, 16).ok()? == port && f.get(3) == Some(&"0A"))
                .then(|| ip.to_string())
        })
        .collect()
}

pub fn example_server_port_binds_every_interface() -> Result<(), String> {
    let Some(exe) = example_binary() else {
        println!("    (skipped: examples/prefork_server is not built; `cargo test` builds it)");
        return Ok(());
    };
    // A free port: bind, read, release (a tiny race with other programs).
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| e.to_string())?
        .port();
    let mut cmd = std::process::Command::new(exe);
    cmd.env_remove("PREFORK_BIND")
        .env("PORT", port.to_string())
        .env("WEB_CONCURRENCY", "1")
        .env("PREFORK_THREADS", "3");
    let mut p = Program::start("example-port", cmd)?;
    let result = (|| {
        let addr = p.wait_line("listening on http://")?;
        ensure(addr == format!("0.0.0.0:{port}"), || {
            format!("PORT={port} listens on {addr}, not 0.0.0.0:{port}")
        })?;
        let master = p.wait_line("master pid ")?;
        ensure(
            master.contains(": 1 worker process(es) x 3 thread(s)"),
            || format!("WEB_CONCURRENCY=1 PREFORK_THREADS=3, the master says: {master}"),
        )?;
        let sockets = listening_on(port);
        ensure(sockets == ["00000000"], || {
            format!("/proc/net/tcp has {sockets:?} listening on port {port}, not 0.0.0.0")
        })?;
        // Traffic to the loopback address only.
        let local = format!("127.0.0.1:{port}");
        let (status, body) = http(&local, "POST", "/hello_world")?;
        ensure(status == 201, || {
            format!("POST /hello_world: {status} {body}")
        })?;
        // One process, its threads as PREFORK_THREADS says.
        let workers = wait_children(p.pid(), 1)?;
        let worker = workers.iter().next().copied().unwrap_or(0);
        let threads = std::fs::read_dir(format!("/proc/{worker}/task"))
            .map_err(|e| e.to_string())?
            .count();
        // Three handler threads beside the main thread, the reactor and the watchdog (the
        // default, 2, makes 5).
        ensure((6..=8).contains(&threads), || {
            format!("the worker runs {threads} threads")
        })?;
        // SAFETY: kill(2) of our child, the example's master, not reaped yet.
        unsafe { libc::kill(p.pid(), libc::SIGTERM) };
        let code = p.wait_exit()?;
        ensure(code == 0, || format!("exit status {code} after SIGTERM"))
    })();
    p.finish(result)
}

pub fn example_server_refuses_a_bad_value_by_name() -> Result<(), String> {
    let Some(exe) = example_binary() else {
        println!("    (skipped: examples/prefork_server is not built; `cargo test` builds it)");
        return Ok(());
    };
    for (var, value, allowed) in [
        (
            "PORT",
            "99999",
            "a port number, 1..=65535 (0: any free port)",
        ),
        ("WEB_CONCURRENCY", "0", "worker processes, 1..=256"),
        ("PREFORK_TIMEOUT", "soon", "1ms..=24h"),
        ("PREFORK_BIND", "localhost", "unix:PATH"),
    ] {
        let mut cmd = std::process::Command::new(&exe);
        cmd.env_remove("PORT")
            .env_remove("PREFORK_BIND")
            .env_remove("WEB_CONCURRENCY")
            .env(var, value);
        let mut p = Program::start("example-refused", cmd)?;
        let result = (|| {
            let code = p.wait_exit()?;
            let log = p.log_text();
            ensure(code == 1, || {
                format!("{var}={value}: exit status {code}; {log}")
            })?;
            let want = format!("invalid `{var}` = {value:?}: ");
            ensure(log.contains(&want) && log.contains(allowed), || {
                format!("{var}={value}: stderr says {log:?}")
            })
        })();
        p.finish(result)?;
    }
    Ok(())
}

pub fn example_server_prints_its_config() -> Result<(), String> {
    let Some(exe) = example_binary() else {
        println!("    (skipped: examples/prefork_server is not built; `cargo test` builds it)");
        return Ok(());
    };
    let mut cmd = std::process::Command::new(exe);
    cmd.arg("--print-config")
        .env_remove("PORT")
        .env_remove("WEB_CONCURRENCY")
        .env("PREFORK_BIND", "127.0.0.1:0")
        .env("PREFORK_KEEP_ALIVE", "7");
    let mut p = Program::start("example-print-config", cmd)?;
    let result = (|| {
        let started = Instant::now();
        let mut lines = Vec::new();
        while let Ok(l) = p.lines.recv_timeout(Duration::from_secs(10)) {
            lines.push(l);
        }
        let code = p.wait_exit()?;
        ensure(code == 0, || format!("exit status {code}"))?;
        let find = |name: &str| {
            lines
                .iter()
                .find(|l| l.starts_with(&format!("{name} ")))
                .cloned()
                .unwrap_or_default()
        };
        ensure(
            find("bind").contains("127.0.0.1:0")
                && find("bind").ends_with("(environment PREFORK_BIND)"),
            || format!("{lines:#?}"),
        )?;
        ensure(find("keep_alive").contains("= 7s"), || {
            format!("{lines:#?}")
        })?;
        ensure(find("processes").ends_with("(code)"), || {
            format!("{lines:#?}")
        })?;
        ensure(started.elapsed() < Duration::from_secs(10), || {
            "slow".into()
        })
    })();
    p.finish(result)
}
