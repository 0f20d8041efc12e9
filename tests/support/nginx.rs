//! A real nginx for the tests that put one in front of the server (`tests/http/operators/nginx.rs`, the
//! process tests' connect-per-request and tower-mode scenarios): started on a free loopback port
//! with its whole configuration, pid, logs and temp paths in a temp dir, and killed, reaped and
//! removed when dropped; the proxy configuration and the client both fronts' proxy tests share.
//! Shared with `#[path]`, as `tools.rs` is.
#![allow(dead_code)]

use std::io::{Read, Write};
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

/// Where the proxy tests' client connects from: a loopback address that no trusted proxy has, so
/// that the address nginx adds to `X-Forwarded-For` is not the socket peer's (127.0.0.1, nginx
/// itself).
pub const CLIENT_IP: &str = "127.0.0.2";

/// nginx proxying to `upstream` both with a kept-alive upstream (`/ka/`: HTTP/1.1, no
/// `Connection`) and with a connection per request (`/direct/`, nginx's default: HTTP/1.0,
/// `Connection: close`), adding `X-Forwarded-For` (and `X-Forwarded-Proto` on `/ka/`).
pub fn proxy_config(dir: &Path, port: u16, upstream: SocketAddr) -> String {
    let d = dir.display();
    format!(
        r#"daemon off;
master_process off;
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 64; }}
http {{
    access_log off;
    client_body_temp_path {d}/client_body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    upstream ours {{
        server {upstream};
        keepalive 8;
    }}
    server {{
        listen 127.0.0.1:{port};
        location /ka/ {{
            proxy_pass http://ours;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto $scheme;
        }}
        location /direct/ {{
            proxy_pass http://{upstream};
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
        }}
    }}
}}
"#
    )
}

/// One request through nginx from [`CLIENT_IP`], `Connection: close`: status and body.
pub fn through(nginx: &Nginx, path: &str, extra: &str) -> (u16, String) {
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    let from: SocketAddr = format!("{CLIENT_IP}:0").parse().unwrap();
    sock.bind(&from.into()).unwrap();
    sock.connect(&nginx.addr.into()).unwrap();
    let mut s: TcpStream = sock.into();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n{extra}\r\n"
    )
    .unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).unwrap();
    let end = out
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("an answer from nginx");
    let head = String::from_utf8_lossy(&out[..end]).into_owned();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (
        status,
        String::from_utf8_lossy(&out[end + 4..]).into_owned(),
    )
}
