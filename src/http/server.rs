//! [`Server`] and its builder: where to listen, limits, timeouts, the access log, the Pool behind it
//! ([`ServerBuilder::pool`]), deadlines per route and the rendering of the server's own answers;
//! [`ServerBuilder::serve`] checks them, binds, and starts the reactor.

use std::fmt;
use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use http::StatusCode;

use super::access_log::{AccessLogFormat, DEFAULT_ACCESS_LOG_FORMAT};
use super::dispatch::{DeadlineFor, PoolDispatch};
use super::forwarded::{ProxySettings, TrustedProxies, DEFAULT_FORWARDED_ALLOW_IPS};
use super::handle::ServerHandle;
use super::handler::{IntoResponse, ServerAnswer};
use super::handoff::ReactorConfig;
use super::health::HealthSettings;
use super::loopback::{with_depth, Loopback};
use super::parse::Limits;
use super::reactor::{AcceptGate, Acceptor, Reactor};
use super::response::{ErrorHook, ErrorPage};
use super::self_call::SiblingPids;
use super::stuck::Busy;
use super::types::{HttpRequest, HttpResponse};
use crate::net::{bind_tcp, bind_unix};
use crate::{BuildError, Context, Pool};

/// The builder of the Pool behind a server.
type PoolBuilder = crate::PoolBuilder<HttpRequest, HttpResponse>;

/// Longest timeout accepted by the builder: one day.
const MAX_TIMEOUT: Duration = Duration::from_secs(86_400);

/// The HTTP/1.1 server. Start with [`Server::builder`].
///
/// ```
/// use prefork_pool::http::Server;
/// use std::io::{Read, Write};
///
/// let server = Server::builder()
///     .bind("127.0.0.1:0")
///     .pool(|p| p.workers(2))
///     .serve(|_req, _ctx| http::Response::new(b"hello\n".to_vec()))
///     .unwrap();
/// let mut s = std::net::TcpStream::connect(server.local_addrs()[0]).unwrap();
/// s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
/// let mut out = String::new();
/// s.read_to_string(&mut out).unwrap();
/// assert!(out.starts_with("HTTP/1.1 200 OK\r\n"));
/// assert!(out.ends_with("\r\n\r\nhello\n"));
/// server.shutdown(std::time::Duration::from_secs(5));
/// ```
#[derive(Debug)]
pub struct Server {
    _private: (),
}

impl Server {
    /// A builder with gunicorn's defaults: backlog 2048, request line 4094 bytes, 100 header
    /// fields of at most 8190 bytes; plus a 64 KiB head, a 10 MiB body, a 10 s head read timeout,
    /// a 30 s body read timeout (without progress), a 5 s keep-alive idle timeout, a 30 s write
    /// timeout (without progress), gunicorn's default access log format, as many spare threads for
    /// self-calls (over TCP or a Unix socket) as workers (`max_spare`), a call depth of at most 32 (`max_depth`), a
    /// stuck report after 1 s without progress (`stuck_after`), the server's own answers in
    /// `text/plain` (no `error_response` hook), every request with the Pool's deadline (no
    /// `deadline_for`), forwarding headers believed from `127.0.0.1` and `::1`
    /// (`forwarded_allow_ips`), no PROXY protocol, and the Pool's defaults.
    pub fn builder() -> ServerBuilder {
        ServerBuilder::new()
    }
}

/// Why [`ServerBuilder::serve`] could not start the server.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServeError {
    /// A configuration value is out of range; the message names the field and the range.
    #[error(transparent)]
    Config(#[from] BuildError),
    /// A socket could not be made, bound or adopted, or the reactor could not start.
    #[error("cannot {what}: {source}")]
    Io {
        /// What was being done, e.g. `bind 127.0.0.1:80`.
        what: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
}

fn io_err(what: impl Into<String>) -> impl FnOnce(io::Error) -> ServeError {
    let what = what.into();
    move |source| ServeError::Io { what, source }
}

/// Configures and starts a [`Server`]: where to listen, limits, timeouts, the access log, and
/// every [Pool] option. Values are checked by [`serve`](ServerBuilder::serve), which
/// refuses a bad one with a [`BuildError`] naming the field and its allowed range.
///
/// ```
/// use prefork_pool::http::{Server, ServeError};
/// let err = Server::builder()
///     .bind("127.0.0.1:0")
///     .backlog(0)
///     .serve(|_req, _ctx| http::Response::new(Vec::new()))
///     .unwrap_err();
/// match err {
///     ServeError::Config(e) => assert_eq!(e.field, "backlog"),
///     other => panic!("{other}"),
/// }
/// ```
pub struct ServerBuilder {
    tcp: Vec<Result<Vec<SocketAddr>, String>>,
    #[cfg(unix)]
    unix: Vec<(PathBuf, u32)>,
    std_tcp: Vec<std::net::TcpListener>,
    #[cfg(unix)]
    std_unix: Vec<std::os::unix::net::UnixListener>,
    backlog: i64,
    limits: Limits,
    head_timeout: Duration,
    body_timeout: Duration,
    keepalive_timeout: Duration,
    write_timeout: Duration,
    spool_above: u64,
    access_log: Option<String>,
    max_spare: Option<usize>,
    siblings: Option<SiblingPids>,
    max_depth: u32,
    stuck_after: Duration,
    error_hook: Option<Arc<ErrorHook>>,
    deadline_for: Option<Arc<DeadlineFor>>,
    forwarded_allow_ips: Vec<String>,
    proxy_protocol: bool,
    pool: PoolBuilder,
    accept_gate: Option<Arc<dyn AcceptGate>>,
    pub(super) health: HealthSettings,
}

impl fmt::Debug for ServerBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerBuilder")
            .field("tcp", &self.tcp)
            .field("backlog", &self.backlog)
            .field("limits", &self.limits)
            .field("head_timeout", &self.head_timeout)
            .field("body_timeout", &self.body_timeout)
            .field("keepalive_timeout", &self.keepalive_timeout)
            .field("write_timeout", &self.write_timeout)
            .field("spool_body_above", &self.spool_above)
            .field("access_log", &self.access_log)
            .field("max_spare", &self.max_spare)
            .field("sibling_pids", &self.siblings.is_some())
            .field("max_depth", &self.max_depth)
            .field("stuck_after", &self.stuck_after)
            .field("error_response", &self.error_hook.is_some())
            .field("deadline_for", &self.deadline_for.is_some())
            .field("forwarded_allow_ips", &self.forwarded_allow_ips)
            .field("proxy_protocol", &self.proxy_protocol)
            .finish_non_exhaustive()
    }
}

impl Default for ServerBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl ServerBuilder {
    /// The defaults listed on [`Server::builder`].
    pub fn new() -> Self {
        ServerBuilder {
            tcp: Vec::new(),
            #[cfg(unix)]
            unix: Vec::new(),
            std_tcp: Vec::new(),
            #[cfg(unix)]
            std_unix: Vec::new(),
            backlog: 2048,
            limits: Limits::default(),
            head_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            keepalive_timeout: Duration::from_secs(5),
            write_timeout: Duration::from_secs(30),
            spool_above: 1 << 20,
            access_log: Some(DEFAULT_ACCESS_LOG_FORMAT.to_string()),
            max_spare: None,
            siblings: None,
            max_depth: 32,
            stuck_after: Duration::from_secs(1),
            error_hook: None,
            deadline_for: None,
            forwarded_allow_ips: DEFAULT_FORWARDED_ALLOW_IPS
                .iter()
                .map(|s| s.to_string())
                .collect(),
            proxy_protocol: false,
            pool: Pool::builder().name("http"),
            accept_gate: None,
            health: HealthSettings::default(),
        }
    }

    /// Listen on a TCP address (v4 or v6; port 0 picks a free port, see
    /// [`ServerHandle::local_addrs`]). May be called more than once; a name that resolves to several
    /// addresses binds them all. `SO_REUSEADDR` is set.
    pub fn bind(mut self, addr: impl ToSocketAddrs) -> Self {
        self.tcp.push(
            addr.to_socket_addrs()
                .map(|a| a.collect())
                .map_err(|e| e.to_string()),
        );
        self
    }

    /// Listen on a Unix socket at `path` with permission bits `mode` (e.g. `0o660`). A stale
    /// socket file at `path` is removed first; the file is removed when the server stops.
    #[cfg(unix)]
    pub fn bind_unix(mut self, path: impl Into<PathBuf>, mode: u32) -> Self {
        self.unix.push((path.into(), mode));
        self
    }

    /// Serve on an existing listener (an inherited descriptor, `LISTEN_FDS`, a test's socket). It
    /// is made non-blocking; its backlog is whatever it was created with.
    pub fn listener(mut self, l: std::net::TcpListener) -> Self {
        self.std_tcp.push(l);
        self
    }

    /// Serve on an existing Unix listener. Its file is left in place when the server stops.
    #[cfg(unix)]
    pub fn unix_listener(mut self, l: std::os::unix::net::UnixListener) -> Self {
        self.std_unix.push(l);
        self
    }

    /// The listen backlog for sockets the server binds (default 2048, as gunicorn; 1..=65535).
    pub fn backlog(mut self, n: i64) -> Self {
        self.backlog = n;
        self
    }

    /// All size limits at once.
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// Longest request line (default 4094; 16..=1 MiB). Longer: 414.
    pub fn limit_request_line(mut self, n: usize) -> Self {
        self.limits.request_line = n;
        self
    }

    /// Most header fields (default 100; 1..=10000). More: 431.
    pub fn limit_request_fields(mut self, n: usize) -> Self {
        self.limits.fields = n;
        self
    }

    /// Longest header field line (default 8190; 16..=1 MiB). Longer: 431.
    pub fn limit_request_field_size(mut self, n: usize) -> Self {
        self.limits.field_size = n;
        self
    }

    /// Largest request head in bytes (default 64 KiB; 64..=64 MiB). Larger: 431.
    pub fn limit_head_bytes(mut self, n: usize) -> Self {
        self.limits.head_bytes = n;
        self
    }

    /// Largest request body in bytes, after chunked decoding (default 10 MiB). Larger: 413, sent
    /// before the body is read when `Content-Length` already says so.
    pub fn limit_body_bytes(mut self, n: u64) -> Self {
        self.limits.body_bytes = n;
        self
    }

    /// Time allowed to receive a whole request head, from its first byte (or from the accept for a
    /// new connection) (default 10 s; up to one day). Late: 408 and close. This is the slow-loris
    /// guard: a client that trickles its head costs a buffer, never a worker.
    pub fn head_timeout(mut self, d: Duration) -> Self {
        self.head_timeout = d;
        self
    }

    /// Time allowed between two reads of a request body (default 30 s). Late: 408 and close.
    pub fn body_timeout(mut self, d: Duration) -> Self {
        self.body_timeout = d;
        self
    }

    /// How long a kept-alive connection may sit idle between requests (default 5 s; gunicorn's
    /// `keepalive` is 2 s). Then it is closed quietly.
    pub fn keepalive_timeout(mut self, d: Duration) -> Self {
        self.keepalive_timeout = d;
        self
    }

    /// How long an answer may wait for the client to take more of it (default 30 s). Then the
    /// connection is closed.
    pub fn write_timeout(mut self, d: Duration) -> Self {
        self.write_timeout = d;
        self
    }

    /// A request body larger than this many bytes (default 1 MiB) is written to a temporary file
    /// as it arrives instead of being held in memory; the handler gets it as a
    /// [`RequestBody`](super::RequestBody) in the request's extensions (`Read`), with the
    /// request's `Vec<u8>` body empty. [`limit_body_bytes`](Self::limit_body_bytes) still caps
    /// it (raise that for large uploads). `u64::MAX`: never.
    pub fn spool_body_above(mut self, bytes: u64) -> Self {
        self.spool_above = bytes;
        self
    }

    /// The access log format, in gunicorn's atoms (see [`AccessLogFormat`]); parsed by `serve`.
    /// Lines go to the `log` target [`ACCESS_TARGET`](super::ACCESS_TARGET) at level `info`.
    pub fn access_log_format(mut self, fmt: impl Into<String>) -> Self {
        self.access_log = Some(fmt.into());
        self
    }

    /// Turn the access log on (default, gunicorn's format unless one was set) or off.
    pub fn access_log(mut self, on: bool) -> Self {
        match (on, &self.access_log) {
            (false, _) => self.access_log = None,
            (true, None) => self.access_log = Some(DEFAULT_ACCESS_LOG_FORMAT.to_string()),
            (true, Some(_)) => {}
        }
        self
    }

    /// Spare threads for self-calls: requests that this process (or a sibling worker process, see
    /// [`sibling_pids`](Self::sibling_pids)) sends to this server over TCP or a Unix socket while
    /// every worker is busy, from a handler that calls its own server with an HTTP client instead
    /// of the [`Loopback`] (default: the worker count; 0..=1024; 0 turns the detection off and
    /// such a request just queues, waiting for a worker that waits for it). Such a request runs at
    /// once on a spare thread, at most `max_spare` at a time; beyond, it is answered 503 at once.
    /// How a self-call is detected (only when no worker is idle and the client is on this host)
    /// and what is logged: the [module documentation](crate::http);
    /// [`ServerHandle::self_calls`] counts them.
    ///
    /// A load generator in the same process as the server (a test, a bench) looks like a
    /// self-call: set 0 there, or its requests beyond the workers run on spare threads (or get
    /// 503).
    ///
    /// ```
    /// use prefork_pool::http::Server;
    /// let err = Server::builder()
    ///     .bind("127.0.0.1:0")
    ///     .max_spare(5000)
    ///     .serve(|_req, _ctx| http::Response::new(Vec::new()))
    ///     .unwrap_err();
    /// assert!(err.to_string().contains("max_spare"));
    /// ```
    pub fn max_spare(mut self, n: usize) -> Self {
        self.max_spare = Some(n);
        self
    }

    /// Other processes whose requests to this server are self-calls too (see
    /// [`max_spare`](Self::max_spare)): `pids` returns their process ids (this process's own pid
    /// in the list is ignored). It is asked only on the slow path (no idle worker, a client on
    /// this host), at most once per connection. A TCP client's socket is then searched in
    /// `/proc/<pid>/fd` of each of them (readable for processes of the same user; one that
    /// cannot be read counts as not a self-call), a Unix socket client's `SO_PEERCRED` pid is
    /// compared with them.
    ///
    /// In process mode, `prefork::Supervisor::serve_http` sets it to the other worker processes of
    /// the same supervisor: with several processes on one listener, a handler's call to its own
    /// service may land on a sibling process whose threads are all busy making such calls too,
    /// and every process would wait for the others until the deadline.
    ///
    /// ```
    /// use prefork_pool::http::Server;
    /// let server = Server::builder()
    ///     .bind("127.0.0.1:0")
    ///     .sibling_pids(|| vec![]) // e.g. read from a shared table of worker processes
    ///     .serve(|_req, _ctx| http::Response::new(Vec::new()))
    ///     .unwrap();
    /// server.shutdown(std::time::Duration::from_secs(5));
    /// ```
    pub fn sibling_pids(mut self, pids: impl Fn() -> Vec<u32> + Send + Sync + 'static) -> Self {
        self.siblings = Some(SiblingPids(Arc::new(pids)));
        self
    }

    /// The deepest chain of nested calls a request may be in (default 32; 0..=10000). The depth
    /// is the request's [`DEPTH_HEADER`](super::DEPTH_HEADER) (`X-Prefork-Depth`, absent: 0),
    /// which [`Loopback::send`] sets to one more than the request it is called for. Deeper: the
    /// request is answered 508 Loop Detected ([`Error::LoopDetected`](crate::Error::LoopDetected))
    /// without running the handler, whether it came over TCP or through the [`Loopback`] (whose
    /// `send` then returns the error).
    ///
    /// ```
    /// use prefork_pool::http::{Server, DEPTH_HEADER};
    ///
    /// let server = Server::builder()
    ///     .bind("127.0.0.1:0")
    ///     .max_depth(3)
    ///     .serve(|_req, _ctx| http::Response::new(Vec::new()))
    ///     .unwrap();
    /// let deep = http::Request::get("/").header(DEPTH_HEADER, "4").body(Vec::new()).unwrap();
    /// let err = server.loopback().send(deep).unwrap_err();
    /// assert_eq!(err.http_status(), 508);
    /// server.shutdown(std::time::Duration::from_secs(5));
    /// ```
    pub fn max_depth(mut self, n: u32) -> Self {
        self.max_depth = n;
        self
    }

    /// How long every worker must have been busy, with no job completed, before the server logs
    /// (once per such episode, at `warn`) what each busy worker is running and for how long: a
    /// [`StuckReport`](super::StuckReport) (default 1 s; up to one day). Checked on the reactor's 100 ms timer, while
    /// the server has connections. [`ServerHandle::stuck_report`] gives the same on demand.
    pub fn stuck_after(mut self, d: Duration) -> Self {
        self.stuck_after = d;
        self
    }

    /// Render the answers the server makes on its own (400, 408, 413, 414, 417, 431, 501, 505 for
    /// a request it refuses; 503, 504, 500, 508 for a Pool error; 503 for a refused self-call)
    /// with `hook(status, reason)` instead of the default [`error_response`](super::error_response)
    /// (`text/plain`, the reason and a newline). `reason` is the short text the default body
    /// says. The answer keeps the server's status whatever the hook sets, and a 503 gets
    /// `Retry-After: 1` unless the hook set one. A handler's own `Err(prefork_pool::Error)` (see
    /// [`IntoResponse`]) is rendered by the hook too. Runs on the reactor thread for a refusal,
    /// on the completing thread otherwise: keep it quick, and do not panic.
    ///
    /// ```
    /// use prefork_pool::http::Server;
    /// use prefork_pool::http::types::http::Response;
    ///
    /// let server = Server::builder()
    ///     .bind("127.0.0.1:0")
    ///     .max_depth(0)
    ///     .error_response(|status, reason| {
    ///         let body = format!(r#"{{"status":{},"error":"{}"}}"#, status.as_u16(), reason);
    ///         Response::builder()
    ///             .header("content-type", "application/json")
    ///             .body(body.into_bytes())
    ///             .unwrap()
    ///     })
    ///     .serve(|_req, _ctx| "never: every request is too deep")
    ///     .unwrap();
    /// let mut s = std::net::TcpStream::connect(server.local_addrs()[0]).unwrap();
    /// use std::io::{Read, Write};
    /// s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nX-Prefork-Depth: 1\r\nConnection: close\r\n\r\n").unwrap();
    /// let mut out = String::new();
    /// s.read_to_string(&mut out).unwrap();
    /// assert!(out.starts_with("HTTP/1.1 508 Loop Detected\r\n"), "{out}");
    /// assert!(out.contains("content-type: application/json\r\n"));
    /// assert!(out.ends_with(r#"{"status":508,"error":"loop detected: the handler keeps calling itself"}"#));
    /// server.shutdown(std::time::Duration::from_secs(5));
    /// ```
    pub fn error_response(
        mut self,
        hook: impl Fn(StatusCode, &str) -> HttpResponse + Send + Sync + 'static,
    ) -> Self {
        self.error_hook = Some(Arc::new(hook));
        self
    }

    /// Choose the deadline of each request from the request (its method, path, headers), before
    /// it is queued: `Some(d)` gives it `d` (past it the client gets 504; at most
    /// [`MAX_DEADLINE`](crate::MAX_DEADLINE)), `None` the Pool's
    /// [`deadline`](crate::PoolBuilder::deadline) (default 30 s). Default: none, every request
    /// has the Pool's deadline. It runs on the reactor thread for every request: keep it quick (a
    /// match on the path). A request sent through the [`Loopback`] from inside a handler keeps
    /// the caller's remaining deadline instead.
    ///
    /// ```
    /// use prefork_pool::http::Server;
    /// use std::time::Duration;
    ///
    /// let server = Server::builder()
    ///     .bind("127.0.0.1:0")
    ///     .pool(|p| p.deadline(Duration::from_secs(2)))
    ///     .deadline_for(|req| match req.uri().path() {
    ///         p if p.starts_with("/export") => Some(Duration::from_secs(60)),
    ///         _ => None, // /api and the rest: the pool's 2 s
    ///     })
    ///     .serve(|_req, _ctx| "ok")
    ///     .unwrap();
    /// server.shutdown(Duration::from_secs(5));
    /// ```
    pub fn deadline_for(
        mut self,
        choose: impl Fn(&HttpRequest) -> Option<Duration> + Send + Sync + 'static,
    ) -> Self {
        self.deadline_for = Some(Arc::new(choose));
        self
    }

    /// The proxies whose `X-Forwarded-For`, `X-Forwarded-Proto` and RFC 7239 `Forwarded` headers
    /// are believed (gunicorn's `forwarded_allow_ips`): IP addresses, CIDR blocks
    /// (`"10.0.0.0/8"`; an item may be a comma-separated list) or `"*"`. Default `127.0.0.1` and
    /// `::1`, as gunicorn; a Unix socket peer is trusted unless the list is empty. From a trusted
    /// peer, the right-most untrusted address of `X-Forwarded-For` (else `Forwarded`) becomes the
    /// [`PeerAddr`](super::PeerAddr) and `%(h)s`, the proto a
    /// [`ForwardedProto`](super::ForwardedProto); from others the headers are ignored. They are
    /// left in the request either way. The rules: [Behind a proxy](super#behind-a-proxy).
    ///
    /// ```
    /// use prefork_pool::http::Server;
    /// let err = Server::builder().bind("127.0.0.1:0").forwarded_allow_ips(["10.0.0.0/8", "nginx"])
    ///     .serve(|_req, _ctx| "ok").unwrap_err();
    /// assert!(err.to_string().contains("forwarded_allow_ips"));
    /// ```
    pub fn forwarded_allow_ips<S: AsRef<str>>(mut self, ips: impl IntoIterator<Item = S>) -> Self {
        self.forwarded_allow_ips = ips.into_iter().map(|s| s.as_ref().to_string()).collect();
        self
    }

    /// Every connection, on every listener, starts with a PROXY protocol header (v1 or v2;
    /// default off): its source becomes the [`PeerAddr`](super::PeerAddr), `%(h)s`, and the peer
    /// that [`forwarded_allow_ips`](Self::forwarded_allow_ips) checks. A header missing,
    /// malformed or not complete within the [`head_timeout`](Self::head_timeout) closes the
    /// connection without an answer. See [Behind a proxy](super#behind-a-proxy).
    pub fn proxy_protocol(mut self, on: bool) -> Self {
        self.proxy_protocol = on;
        self
    }

    /// Configure the [Pool] that runs the handler: its worker threads, queue,
    /// deadline (past it the client gets 504), recycling, re-entrancy policy, name (default
    /// `"http"`) and hooks. `configure` gets the pool's builder as set so far and returns it; see
    /// [`PoolBuilder`](crate::PoolBuilder) for every option. Checked by [`serve`](Self::serve) like the
    /// server's own settings.
    ///
    /// ```
    /// use prefork_pool::http::Server;
    /// use std::time::Duration;
    ///
    /// let server = Server::builder()
    ///     .bind("127.0.0.1:0")
    ///     .pool(|p| p.workers(3).queue_capacity(16).deadline(Duration::from_secs(5)).name("web"))
    ///     .serve(|_req, _ctx| http::Response::new(Vec::new()))
    ///     .unwrap();
    /// assert_eq!(server.stats().workers, 3);
    /// assert_eq!(server.stats().name, "web");
    /// server.shutdown(Duration::from_secs(5));
    /// ```
    pub fn pool(mut self, configure: impl FnOnce(PoolBuilder) -> PoolBuilder) -> Self {
        self.pool = configure(self.pool);
        self
    }

    /// Process mode: accept only when `gate` says so (the pre-fork supervisor's balance between
    /// its worker processes; see [`AcceptGate`]).
    #[cfg_attr(not(feature = "prefork"), allow(dead_code))]
    pub(crate) fn accept_gate(mut self, gate: Arc<dyn AcceptGate>) -> Self {
        self.accept_gate = Some(gate);
        self
    }

    fn validate(&self) -> Result<ReactorConfig, BuildError> {
        fn range<T: PartialOrd + fmt::Display + Copy>(
            field: &'static str,
            v: T,
            lo: T,
            hi: T,
        ) -> Result<(), BuildError> {
            if v < lo || v > hi {
                return Err(BuildError::new(field, v, format!("allowed: {lo}..={hi}")));
            }
            Ok(())
        }
        fn timeout(field: &'static str, d: Duration) -> Result<(), BuildError> {
            if d.is_zero() || d > MAX_TIMEOUT {
                return Err(BuildError::new(
                    field,
                    format!("{d:?}"),
                    "allowed: more than zero, at most one day (86400 s)",
                ));
            }
            Ok(())
        }
        range("backlog", self.backlog, 1, 65_535)?;
        let l = &self.limits;
        range("limit_request_line", l.request_line, 16, 1 << 20)?;
        range("limit_request_fields", l.fields, 1, 10_000)?;
        range("limit_request_field_size", l.field_size, 16, 1 << 20)?;
        range("limit_head_bytes", l.head_bytes, 64, 64 << 20)?;
        timeout("head_timeout", self.head_timeout)?;
        timeout("body_timeout", self.body_timeout)?;
        timeout("keepalive_timeout", self.keepalive_timeout)?;
        timeout("write_timeout", self.write_timeout)?;
        if let Some(n) = self.max_spare {
            range("max_spare", n, 0, 1024)?;
        }
        range("max_depth", self.max_depth, 0, 10_000)?;
        timeout("stuck_after", self.stuck_after)?;
        #[cfg(unix)]
        let unix = self.unix.len() + self.std_unix.len();
        #[cfg(not(unix))]
        let unix = 0;
        if self.tcp.is_empty() && self.std_tcp.is_empty() && unix == 0 {
            return Err(BuildError::new(
                "bind",
                "nothing",
                "at least one of bind, bind_unix, listener, unix_listener",
            ));
        }
        for t in &self.tcp {
            match t {
                Err(e) => {
                    return Err(BuildError::new(
                        "bind",
                        e,
                        "an address such as 127.0.0.1:8000",
                    ))
                }
                Ok(v) if v.is_empty() => {
                    return Err(BuildError::new(
                        "bind",
                        "no address",
                        "an address such as 127.0.0.1:8000",
                    ))
                }
                Ok(_) => {}
            }
        }
        let access_log = match &self.access_log {
            Some(f) => Some(AccessLogFormat::parse(f)?),
            None => None,
        };
        Ok(ReactorConfig {
            limits: self.limits,
            head_timeout: self.head_timeout,
            body_timeout: self.body_timeout,
            keepalive_timeout: self.keepalive_timeout,
            write_timeout: self.write_timeout,
            spool_above: self.spool_above,
            access_log,
            // Set from the pool's worker count in `serve` when not given.
            max_spare: self.max_spare.unwrap_or(0),
            siblings: self.siblings.clone(),
            max_depth: self.max_depth,
            error_page: ErrorPage::new(self.error_hook.clone()),
            proxy: ProxySettings {
                trusted: TrustedProxies::parse(&self.forwarded_allow_ips)?,
                proxy_protocol: self.proxy_protocol,
            },
            health: self.health.check()?,
        })
    }

    /// Check the configuration, bind, start the Pool and the reactor thread, and serve `handler`.
    ///
    /// The handler (a [`Handler`](super::Handler)) gets each complete request (body read and
    /// decoded) with its [`Context`]; the request's extensions hold a [`Loopback`] and the
    /// client's [`PeerAddr`](super::PeerAddr). It returns anything [`IntoResponse`]: an
    /// [`HttpResponse`], a `String`, `(StatusCode, body)`, a `Result` whose error is
    /// `IntoResponse` too (so `?` works), ...
    pub fn serve<F, R>(self, handler: F) -> Result<ServerHandle, ServeError>
    where
        F: Fn(HttpRequest, &Context) -> R + Send + Sync + 'static,
        R: IntoResponse,
    {
        self.serve_built(move |pool, table, page| {
            pool.build(move |req: HttpRequest, ctx: &Context| {
                around(&table, &page, req, ctx, |req| handler(req, ctx))
            })
        })
    }

    /// [`serve`](Self::serve) with per-worker state, as
    /// [`PoolBuilder::build_with_state`](crate::PoolBuilder::build_with_state): each worker thread
    /// of the server's pool runs `init(worker_index)` when it starts and lends what it returns to
    /// `handler` as `&mut S` (a database connection per worker). An init error at start is a
    /// [`ServeError`] naming the worker and the cause; a replacement's failing init is retried
    /// and counted in the stats' `workers_without_state`; a retired (stuck) worker keeps its state
    /// until its handler returns, so budget `workers + max_retired` states.
    ///
    /// The state is lent to one handler at a time: a request that would run on a thread without
    /// one (a [`Loopback`] call from a handler, or a request this process sent itself over TCP
    /// while every worker was busy, served on a spare thread) is answered 500 (`Error::Reentrant`);
    /// call the code directly with the `&mut S` you hold instead.
    ///
    /// ```
    /// use prefork_pool::http::Server;
    /// use std::io::{Read, Write};
    ///
    /// let server = Server::builder()
    ///     .bind("127.0.0.1:0")
    ///     .pool(|p| p.workers(2))
    ///     .serve_with_state(
    ///         |worker| -> Result<u64, std::io::Error> { Ok(worker as u64 * 1000) },
    ///         |served: &mut u64, _req, _ctx| {
    ///             *served += 1;
    ///             http::Response::new(format!("{served}").into_bytes())
    ///         },
    ///     )
    ///     .unwrap();
    /// let mut s = std::net::TcpStream::connect(server.local_addrs()[0]).unwrap();
    /// s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
    /// let mut out = String::new();
    /// s.read_to_string(&mut out).unwrap();
    /// assert!(out.starts_with("HTTP/1.1 200 OK\r\n"));
    /// server.shutdown(std::time::Duration::from_secs(5));
    /// ```
    pub fn serve_with_state<S, E, I, F, R>(
        self,
        init: I,
        handler: F,
    ) -> Result<ServerHandle, ServeError>
    where
        S: 'static,
        E: fmt::Display + 'static,
        I: Fn(usize) -> Result<S, E> + Send + Sync + 'static,
        F: Fn(&mut S, HttpRequest, &Context) -> R + Send + Sync + 'static,
        R: IntoResponse,
    {
        self.serve_built(move |pool, table, page| {
            pool.build_with_state(init, move |state: &mut S, req, ctx: &Context| {
                around(&table, &page, req, ctx, |req| handler(state, req, ctx))
            })
        })
    }

    /// Bind, build the pool with `build` (given the pool builder and the stuck-report table), and
    /// start the reactor.
    fn serve_built(
        self,
        build: impl FnOnce(
            PoolBuilder,
            Arc<Busy>,
            ErrorPage,
        ) -> Result<Pool<HttpRequest, HttpResponse>, BuildError>,
    ) -> Result<ServerHandle, ServeError> {
        let mut cfg = self.validate()?;
        let backlog = self.backlog as i32;
        let mut listeners = Vec::new();
        let mut addrs = Vec::new();
        #[cfg(unix)]
        let mut paths = Vec::new();
        for a in self.tcp.iter().flat_map(|r| r.iter().flatten()) {
            let l = bind_tcp(*a, backlog).map_err(io_err(format!("bind {a}")))?;
            addrs.push(l.local_addr().map_err(io_err("read a bound address"))?);
            listeners.push(Acceptor::Tcp(mio::net::TcpListener::from_std(l)));
        }
        for l in self.std_tcp {
            l.set_nonblocking(true)
                .map_err(io_err("make an adopted listener non-blocking"))?;
            addrs.push(
                l.local_addr()
                    .map_err(io_err("read an adopted listener's address"))?,
            );
            listeners.push(Acceptor::Tcp(mio::net::TcpListener::from_std(l)));
        }
        #[cfg(unix)]
        {
            for (path, mode) in &self.unix {
                let l = bind_unix(path, backlog, Some(*mode))
                    .map_err(io_err(format!("bind unix socket {}", path.display())))?;
                paths.push(path.clone());
                listeners.push(Acceptor::Unix(
                    mio::net::UnixListener::from_std(l),
                    Some(path.clone()),
                ));
            }
            for l in self.std_unix {
                l.set_nonblocking(true)
                    .map_err(io_err("make an adopted unix listener non-blocking"))?;
                if let Some(p) = l
                    .local_addr()
                    .ok()
                    .and_then(|a| a.as_pathname().map(PathBuf::from))
                {
                    paths.push(p);
                }
                listeners.push(Acceptor::Unix(mio::net::UnixListener::from_std(l), None));
            }
        }
        let busy = Arc::new(Busy::new(self.stuck_after));
        let dispatch_page = cfg.error_page.clone();
        let pool = build(self.pool, busy.clone(), cfg.error_page.clone())?;
        let workers = pool.stats().workers;
        busy.init(workers);
        if self.max_spare.is_none() {
            cfg.max_spare = workers.min(1024);
        }
        let max_depth = cfg.max_depth;
        let (reactor, reactor_handle) = Reactor::new(
            listeners,
            cfg,
            Box::new(PoolDispatch {
                pool: pool.clone(),
                max_depth,
                busy: busy.clone(),
                deadline_for: self.deadline_for,
                error_page: dispatch_page,
            }),
        )
        .map_err(io_err("start the reactor"))?;
        let reactor = reactor.with_accept_gate(self.accept_gate);
        ServerHandle::start(
            reactor,
            reactor_handle,
            pool,
            max_depth,
            busy,
            addrs,
            #[cfg(unix)]
            paths,
        )
        .map_err(io_err("spawn the reactor thread"))
    }
}

/// Around each request's handler: record, for the stuck report, what its worker runs, set the
/// depth that the `Loopback` adds one to, and render a `prefork_pool::Error` the handler returned
/// like the server's own answers.
fn around<R: IntoResponse>(
    table: &Busy,
    page: &ErrorPage,
    req: HttpRequest,
    ctx: &Context,
    handler: impl FnOnce(HttpRequest) -> R,
) -> HttpResponse {
    let depth = Loopback::depth_of(&req).max(ctx.depth());
    let _entered = table.enter(ctx, &req);
    let resp = with_depth(depth, || handler(req)).into_response();
    match resp.extensions().get::<ServerAnswer>() {
        Some(a) => page.render(a.status, a.reason),
        None => resp,
    }
}
