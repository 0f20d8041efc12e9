//! Helpers of the HTTP test suite (`tests/http/`): raw-socket clients, the one capturing logger of
//! this test binary, and a way to run a test in a process of its own.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Generous bound for anything a test waits on (2-core noisy machine).
pub const WAIT: Duration = Duration::from_secs(20);

/// One parsed answer.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub head: String,
    pub body: Vec<u8>,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<String> {
        self.head.lines().skip(1).find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_string())
        })
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

pub fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(WAIT)).unwrap();
    s.set_write_timeout(Some(WAIT)).unwrap();
    s
}

/// A reader that keeps leftover bytes between answers (pipelining).
pub struct Client {
    pub stream: TcpStream,
    buf: Vec<u8>,
}

impl Client {
    pub fn new(addr: SocketAddr) -> Self {
        Client {
            stream: connect(addr),
            buf: Vec::new(),
        }
    }

    pub fn send(&mut self, raw: &[u8]) {
        self.stream.write_all(raw).expect("write");
    }

    fn fill(&mut self) -> usize {
        let mut tmp = [0u8; 16384];
        let n = self.stream.read(&mut tmp).expect("read (timed out?)");
        self.buf.extend_from_slice(&tmp[..n]);
        n
    }

    /// Read one answer (Content-Length framed; interim 1xx answers are returned too).
    pub fn answer(&mut self) -> Answer {
        loop {
            if let Some(end) = find(&self.buf, b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&self.buf[..end]).into_owned();
                let status: u16 = head
                    .split(' ')
                    .nth(1)
                    .and_then(|s| s.parse().ok())
                    .expect("status");
                let mut a = Answer {
                    status,
                    head,
                    body: Vec::new(),
                };
                let len: usize = a
                    .header("content-length")
                    .map(|v| v.parse().unwrap())
                    .unwrap_or(0);
                while self.buf.len() < end + 4 + len {
                    assert!(self.fill() > 0, "closed in the middle of a body");
                }
                a.body = self.buf[end + 4..end + 4 + len].to_vec();
                self.buf.drain(..end + 4 + len);
                return a;
            }
            assert!(
                self.fill() > 0,
                "closed before an answer; got {:?}",
                String::from_utf8_lossy(&self.buf)
            );
        }
    }

    /// The server closed the connection: read returns 0 (after any bytes left).
    pub fn assert_closed(&mut self) {
        assert!(
            self.buf.is_empty(),
            "unexpected bytes: {:?}",
            String::from_utf8_lossy(&self.buf)
        );
        let mut tmp = [0u8; 1024];
        let start = Instant::now();
        match self.stream.read(&mut tmp) {
            Ok(0) => {}
            Ok(n) => panic!(
                "unexpected bytes after the answer: {:?}",
                String::from_utf8_lossy(&tmp[..n])
            ),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
            Err(e) => panic!("connection not closed after {:?}: {e}", start.elapsed()),
        }
    }
}

pub fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Send `raw` on a new connection and read one answer.
pub fn roundtrip(addr: SocketAddr, raw: &[u8]) -> (Answer, Client) {
    let mut c = Client::new(addr);
    c.send(raw);
    let a = c.answer();
    (a, c)
}

pub fn get(path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n").into_bytes()
}

pub fn post(path: &str, body: &str) -> Vec<u8> {
    format!(
        "POST {path} HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// The seed's session routes answer 201 with a JSON body, and a self-call must not wait: within a
/// second of being sent.
/// "In time" is well before the servers' 30 s deadline, which is how long the deadlock this guards
/// against would last: 5 s leaves room for a loaded 2-core machine (a debug build's first self-call
/// also starts the lookup thread) and still fails at once if the call waits for the deadline.
pub fn assert_created_json_in_time(a: &Answer, took: std::time::Duration) {
    assert_eq!(a.status, 201, "{}", a.text());
    assert!(took < std::time::Duration::from_secs(5), "took {took:?}");
    assert_eq!(
        a.header("content-type").as_deref(),
        Some("application/json")
    );
}

// ----- the one capturing logger of this test binary -----

/// What the logger keeps: warnings and errors (any target), and the access log's lines.
pub struct Capture(Mutex<Vec<(log::Level, String, String)>>);

impl log::Log for Capture {
    fn enabled(&self, m: &log::Metadata<'_>) -> bool {
        m.level() <= log::Level::Warn || m.target() == prefork_pool::http::ACCESS_TARGET
    }
    fn log(&self, r: &log::Record<'_>) {
        if self.enabled(r.metadata()) {
            self.0
                .lock()
                .unwrap()
                .push((r.level(), r.target().to_string(), r.args().to_string()));
        }
    }
    fn flush(&self) {}
}

/// Install the capturing logger (once for the whole binary: `log` takes one logger per process);
/// every test that reads log lines calls it before it starts its server.
pub fn logs() -> &'static Capture {
    static LOGGER: OnceLock<&'static Capture> = OnceLock::new();
    LOGGER.get_or_init(|| {
        let c: &'static Capture = Box::leak(Box::new(Capture(Mutex::new(Vec::new()))));
        log::set_logger(c).expect("the only logger of this test binary");
        log::set_max_level(log::LevelFilter::Info);
        c
    })
}

/// Captured warnings and errors, as `LEVEL target: message`, that contain every one of `parts`.
pub fn lines_with(parts: &[&str]) -> Vec<String> {
    logs()
        .0
        .lock()
        .unwrap()
        .iter()
        .filter(|(level, _, _)| *level <= log::Level::Warn)
        .map(|(level, target, msg)| format!("{level} {target}: {msg}"))
        .filter(|l| parts.iter().all(|p| l.contains(p)))
        .collect()
}

/// Captured access log lines (every server of this binary logs to them).
pub fn access_lines() -> Vec<String> {
    logs()
        .0
        .lock()
        .unwrap()
        .iter()
        .filter(|(_, target, _)| target == prefork_pool::http::ACCESS_TARGET)
        .map(|(_, _, msg)| msg.clone())
        .collect()
}

// ----- a test in a process of its own -----

/// Set in the process [`alone`] starts: the name of the test to run there.
const ALONE: &str = "PREFORK_POOL_HTTP_TEST_ALONE";

/// Run `body` in a process of its own: this test binary again, with only this test selected. For
/// the tests that change or count the process's file descriptors (its open-file limit, the
/// entries of `/proc/self/fd`), which the other tests of this binary, running in the same process
/// at the same time, would disturb. `module` is `module_path!()`, `test` the test function's name.
pub fn alone(module: &str, test: &str, body: impl FnOnce()) {
    let name = match module.split_once("::") {
        Some((_crate, path)) => format!("{path}::{test}"),
        None => test.to_string(),
    };
    if std::env::var(ALONE).as_deref() == Ok(name.as_str()) {
        body();
        return;
    }
    let out = Command::new(std::env::current_exe().expect("this test binary"))
        .args([
            name.as_str(),
            "--exact",
            "--include-ignored",
            "--test-threads=1",
        ])
        .env(ALONE, &name)
        .output()
        .expect("run this test binary again");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("test result: ok. 1 passed"),
        "`{name}` in a process of its own: {}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// This process's resident memory, in bytes.
pub fn rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS");
    kb * 1024
}
