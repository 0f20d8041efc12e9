//! A real nginx for the tests that put one in front of the server (`tests/http/nginx.rs`, the
//! process tests' connect-per-request scenario): started on a free loopback port with its whole
//! configuration, pid, logs and temp paths in a temp dir, and killed, reaped and removed when
//! dropped. Shared with `#[path]`, as `tools.rs` is.
#![allow(dead_code)]

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// A running nginx.
pub struct Nginx {
    child: Child,
    /// Where it listens (127.0.0.1).
    pub addr: SocketAddr,
    dir: PathBuf,
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Starts `bin` with the configuration `config(dir, port)` gives on a free port, and waits until
/// it accepts connections. The free port is found by binding port 0 and letting it go: another
/// process may take it meanwhile, so a start that fails is retried on a new port.
pub fn start(bin: &Path, config: impl Fn(&Path, u16) -> String) -> Result<Nginx, String> {
    static N: AtomicUsize = AtomicUsize::new(0);
    let mut last = String::new();
    for attempt in 0..5 {
        let dir = std::env::temp_dir().join(format!(
            "prefork-pool-nginx-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| e.to_string())?
            .port();
        std::fs::write(dir.join("nginx.conf"), config(&dir, port)).map_err(|e| e.to_string())?;
        let child = Command::new(bin)
            .arg("-p")
            .arg(&dir)
            .arg("-c")
            .arg(dir.join("nginx.conf"))
            .arg("-e")
            .arg(dir.join("error.log"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("start nginx: {e}"))?;
        let mut nginx = Nginx {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            dir,
        };
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(20) {
            if TcpStream::connect(nginx.addr).is_ok() {
                return Ok(nginx);
            }
            if let Ok(Some(status)) = nginx.child.try_wait() {
                let log = std::fs::read_to_string(nginx.dir.join("error.log")).unwrap_or_default();
                last = format!("nginx exited ({status}) on attempt {attempt}: {log}");
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    Err(format!("nginx did not start: {last}"))
}
