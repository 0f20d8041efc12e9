//! What the supervised template tests share: the test binary re-runs itself as the master (no
//! libtest threads in a process that forks), prints its address, and is stopped with SIGTERM.

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::panic::UnwindSafe;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use prefork_pool::prefork::Supervisor;

/// In the server's process: a supervisor of `workers` processes on a free 127.0.0.1 port, its
/// address printed for [`start`]; `Err` is the exit code when it cannot start.
pub fn on_free_port(workers: usize) -> Result<Supervisor, i32> {
    let supervisor = Supervisor::builder()
        .bind("127.0.0.1:0")
        .workers(workers)
        .graceful_timeout(Duration::from_secs(4))
        .build()
        .map_err(|e| {
            eprintln!("cannot start: {e}");
            1
        })?;
    println!(
        "listening on {}",
        supervisor.local_addr().expect("a TCP address")
    );
    let _ = std::io::stdout().flush();
    Ok(supervisor)
}

/// This test binary again with `role` set: the server; its address once it listens.
pub fn start(role: &str) -> (Child, SocketAddr) {
    let mut child = Command::new(std::env::current_exe().expect("this test's path"))
        .env(role, "server")
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
    (child, addr)
}

/// `ask`'s answer once it gives one (it panics while the workers are not up), within 60 s.
pub fn until_up<T>(ask: impl Fn() -> T + UnwindSafe + Copy) -> T {
    let end = Instant::now() + Duration::from_secs(60);
    loop {
        match std::panic::catch_unwind(ask) {
            Ok(answer) => return answer,
            Err(_) if Instant::now() < end => std::thread::sleep(Duration::from_millis(100)),
            Err(e) => std::panic::resume_unwind(e),
        }
    }
}

/// SIGTERM to the server (unless `term` says it was sent already) and its exit within 30 s
/// (`None`: killed after that).
pub fn term_and_wait(
    child: &mut Child,
    term: Option<std::io::Result<ExitStatus>>,
) -> (std::io::Result<ExitStatus>, Option<ExitStatus>) {
    let term = term.unwrap_or_else(|| {
        Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
    });
    let end = Instant::now() + Duration::from_secs(30);
    let exit = loop {
        if let Some(s) = child.try_wait().expect("wait for the server") {
            break Some(s);
        }
        if Instant::now() > end {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    (term, exit)
}
