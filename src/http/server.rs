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

use super::engine::acceptor::AcceptPolicy;
use super::engine::dispatch::DeadlineFor;
use super::ops::access_log::DEFAULT_ACCESS_LOG_FORMAT;
use super::ops::forwarded::DEFAULT_FORWARDED_ALLOW_IPS;
use super::ops::health::HealthSettings;
use super::ops::metrics::HttpCounters;
use super::self_call::calls::SiblingPids;
use super::types::{HttpRequest, HttpResponse};
use super::wire::parse::Limits;
use super::wire::response::ErrorHook;
use crate::settings::{LogChoices, Source, Sources};
use crate::{BuildError, Pool};

/// The builder of the Pool behind a server.
pub(super) type PoolBuilder = crate::PoolBuilder<HttpRequest, HttpResponse>;

/// [`ServerBuilder::min_body_rate`]'s default, in bytes per second.
const DEFAULT_MIN_BODY_RATE: u64 = 500;
/// [`ServerBuilder::min_body_rate`]'s largest value: 1 GiB/s.
pub(super) const MAX_MIN_BODY_RATE: u64 = 1 << 30;

/// The HTTP/1.1 server. Start with [`Server::builder`].
///
/// ```
/// use prefork_pool::http::types::http;
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
    /// a 30 s body read timeout (without progress), a body rate floor of 500 B/s after that
    /// (`min_body_rate`), a 5 s keep-alive idle timeout, a 30 s write
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

pub(super) fn io_err(what: impl Into<String>) -> impl FnOnce(io::Error) -> ServeError {
    let what = what.into();
    move |source| ServeError::Io { what, source }
}

/// Configures and starts a [`Server`]: where to listen, limits, timeouts, the access log, and
/// every [Pool] option. Values are checked by [`serve`](ServerBuilder::serve), which
/// refuses a bad one with a [`BuildError`] naming the field and its allowed range.
///
/// ```
/// use prefork_pool::http::types::http;
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
    pub(super) tcp: Vec<Result<Vec<SocketAddr>, String>>,
    #[cfg(unix)]
    pub(super) unix: Vec<(PathBuf, u32)>,
    pub(super) std_tcp: Vec<std::net::TcpListener>,
    #[cfg(unix)]
    pub(super) std_unix: Vec<std::os::unix::net::UnixListener>,
    pub(super) backlog: i64,
    pub(super) limits: Limits,
    pub(super) head_timeout: Duration,
    pub(super) body_timeout: Duration,
    pub(super) min_body_rate: u64,
    pub(super) keepalive_timeout: Duration,
    pub(super) write_timeout: Duration,
    pub(super) spool_above: u64,
    pub(super) access_log: Option<String>,
    /// The crate's log sink: access and error log files, level (see `log_settings.rs`).
    pub(super) logs: crate::log_sink::LogSettings,
    pub(super) max_spare: Option<usize>,
    pub(super) siblings: Option<SiblingPids>,
    pub(super) max_depth: u32,
    pub(super) stuck_after: Duration,
    pub(super) error_hook: Option<Arc<ErrorHook>>,
    pub(super) deadline_for: Option<Arc<DeadlineFor>>,
    pub(super) forwarded_allow_ips: Vec<String>,
    pub(super) proxy_protocol: bool,
    pub(super) pool: PoolBuilder,
    pub(super) accept_gate: Option<Arc<dyn AcceptPolicy>>,
    pub(super) health: HealthSettings,
    pub(super) shared_counters: Option<&'static HttpCounters>,
    pub(super) tcp_ends: bool,
    /// How long `serve_until_signal` lets a graceful stop take ([`graceful_timeout`](Self::graceful_timeout)).
    pub(super) graceful_timeout: Duration,
    /// Where each setting `print_config` shows came from.
    pub(super) sources: Sources,
    /// The first value [`with_settings`](Self::with_settings) refused, returned by `serve`.
    pub(super) settings_error: Option<BuildError>,
    /// The log files and level, carried for the log sink.
    pub(crate) log_choices: LogChoices,
    /// The certificate and key (feature `tls`): read by `serve`.
    #[cfg(feature = "tls")]
    pub(crate) tls: super::tls::TlsFiles,
    /// Process mode: the TLS config the master read (it rereads it at a HUP), used instead of
    /// reading `tls`'s files in each worker.
    #[cfg(feature = "tls")]
    pub(crate) tls_loaded: Option<Arc<rustls::ServerConfig>>,
}

impl fmt::Debug for ServerBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerBuilder")
            .field("tcp", &self.tcp)
            .field("backlog", &self.backlog)
            .field("limits", &self.limits)
            .field("head_timeout", &self.head_timeout)
            .field("body_timeout", &self.body_timeout)
            .field("min_body_rate", &self.min_body_rate)
            .field("keepalive_timeout", &self.keepalive_timeout)
            .field("write_timeout", &self.write_timeout)
            .field("spool_body_above", &self.spool_above)
            .field("access_log", &self.access_log)
            .field("logs", &self.logs)
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
            min_body_rate: DEFAULT_MIN_BODY_RATE,
            keepalive_timeout: Duration::from_secs(5),
            write_timeout: Duration::from_secs(30),
            spool_above: 1 << 20,
            access_log: Some(DEFAULT_ACCESS_LOG_FORMAT.to_string()),
            logs: crate::log_sink::LogSettings::default(),
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
            shared_counters: None,
            tcp_ends: false,
            graceful_timeout: Duration::from_secs(30),
            sources: Sources::default(),
            settings_error: None,
            log_choices: LogChoices::default(),
            #[cfg(feature = "tls")]
            tls: Default::default(),
            #[cfg(feature = "tls")]
            tls_loaded: None,
        }
    }

    /// Listen on a TCP address (v4 or v6; port 0 picks a free port, see
    /// [`ServerHandle::local_addrs`](super::ServerHandle::local_addrs)). May be called more than once; a name that resolves to several
    /// addresses binds them all. `SO_REUSEADDR` is set.
    ///
    /// After [`with_env`](Self::with_env) set the addresses (`PREFORK_BIND`, `PORT`), the first
    /// `bind` or `bind_unix` replaces them: the later call wins.
    pub fn bind(mut self, addr: impl ToSocketAddrs) -> Self {
        self.binds_from_code();
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
        self.binds_from_code();
        self.unix.push((path.into(), mode));
        self
    }

    /// The addresses set so far came from the environment: drop them, the code's come now.
    fn binds_from_code(&mut self) {
        if let Source::Env(_) = self.sources.get("bind") {
            self.tcp.clear();
            #[cfg(unix)]
            self.unix.clear();
        }
        self.sources.set("bind", Source::Code);
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

    /// Time allowed between two reads of a request body (default 30 s; up to one day). Late: 408
    /// and close. It is also the head start of [`min_body_rate`](Self::min_body_rate).
    pub fn body_timeout(mut self, d: Duration) -> Self {
        self.body_timeout = d;
        self
    }

    /// The slowest a request body may arrive, in bytes per second (default 500, Apache
    /// `mod_reqtimeout`'s `MinRate`; 0..=1 GiB/s, 0: no floor). A body must be complete within
    /// [`body_timeout`](Self::body_timeout) of the end of its head, plus one second for every
    /// `min_body_rate` bytes received so far (chunk framing included): a total deadline that
    /// grows with the body's progress, as `mod_reqtimeout`'s. Late: 408 and close, logged at
    /// `debug` like the other refusals. `body_timeout` still limits each wait between two reads.
    ///
    /// This is the slow-upload guard: a client that sends a byte every few seconds never trips a
    /// timeout between reads (nginx's `client_body_timeout`; gunicorn has none), and would hold its
    /// connection, its buffer and, in a drain, the whole shutdown for as long as it likes. With
    /// the defaults such a client gets its 408 about 30 s after its head; an upload that averages
    /// more than 500 B/s is never cut, however large (a 10 MiB body at 600 B/s takes 4.9 h).
    /// Lower it (or 0) for clients on links slower than that; raise it to free connections from
    /// slow uploads sooner.
    ///
    /// ```
    /// use prefork_pool::http::Server;
    /// let err = Server::builder()
    ///     .bind("127.0.0.1:0")
    ///     .min_body_rate(2 << 30)
    ///     .serve(|_req, _ctx| "ok")
    ///     .unwrap_err();
    /// assert!(err.to_string().contains("min_body_rate"));
    /// ```
    pub fn min_body_rate(mut self, bytes_per_second: u64) -> Self {
        self.min_body_rate = bytes_per_second;
        self
    }

    /// How long a kept-alive connection may sit idle between requests (default 5 s; gunicorn's
    /// `keepalive` is 2 s). Then it is closed quietly.
    pub fn keepalive_timeout(mut self, d: Duration) -> Self {
        self.sources.set("keep_alive", Source::Code);
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

    /// The access log format, in gunicorn's atoms (see [`AccessLogFormat`](super::AccessLogFormat)); parsed by `serve`.
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
    /// of the [`Loopback`](super::Loopback) (default: the worker count; 0..=1024; 0 turns the detection off and
    /// such a request just queues, waiting for a worker that waits for it). Such a request runs at
    /// once on a spare thread, at most `max_spare` at a time; beyond, it waits up to a second for
    /// a spare thread to finish (two honest calls that meet on one process), then is answered
    /// 503 (a chain of calls deeper than `max_spare`, or a runaway recursion).
    /// How a self-call is detected (only when no worker is idle and the client is on this host)
    /// and what is logged: the [module documentation](crate::http);
    /// [`ServerHandle::self_calls`](super::ServerHandle::self_calls) counts them.
    ///
    /// A load generator in the same process as the server (a test, a bench) looks like a
    /// self-call: set 0 there, or its requests beyond the workers run on spare threads (or get
    /// 503).
    ///
    /// ```
    /// use prefork_pool::http::types::http;
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

    /// Put the connection's [`TcpEnds`](super::TcpEnds) (the client's and the server's socket
    /// addresses, with their ports) in the extensions of every request that comes over TCP
    /// (default off: one more extension costs every request an allocation and a rehash of the
    /// extensions, about 700 instructions). A gateway that needs `REMOTE_PORT` or `SERVER_PORT`
    /// (the WSGI front) turns it on.
    pub fn tcp_ends(mut self, on: bool) -> Self {
        self.tcp_ends = on;
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
    /// use prefork_pool::http::types::http;
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
    /// which [`Loopback::send`](super::Loopback::send) sets to one more than the request it is called for. Deeper: the
    /// request is answered 508 Loop Detected ([`Error::LoopDetected`](crate::Error::LoopDetected))
    /// without running the handler, whether it came over TCP or through the [`Loopback`](super::Loopback) (whose
    /// `send` then returns the error).
    ///
    /// ```
    /// use prefork_pool::http::types::http;
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
    /// the server has connections. [`ServerHandle::stuck_report`](super::ServerHandle::stuck_report) gives the same on demand.
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
    /// [`IntoResponse`](super::IntoResponse)) is rendered by the hook too. Runs on the thread that read the request for a
    /// refusal (an idle worker, or the reactor), on the completing thread otherwise: keep it quick,
    /// and do not panic.
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
    /// has the Pool's deadline. It runs for every request on the thread that read it (an idle
    /// worker, or the reactor when every worker is busy): keep it quick (a match on the path). A request sent through the [`Loopback`](super::Loopback) from inside a handler keeps
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
        self.sources.set("forwarded_allow_ips", Source::Code);
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
    /// use prefork_pool::http::types::http;
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
        let before = self.pool.sized();
        self.pool = configure(self.pool);
        let after = self.pool.sized();
        // What `configure` set came from the code (for `print_config`).
        let keys = ["threads", "timeout", "max_requests", "max_requests_jitter"];
        for (i, key) in keys.into_iter().enumerate() {
            if after.set[i] > before.set[i] {
                self.sources.set(key, Source::Code);
            }
        }
        self
    }

    /// How long [`ServerHandle::serve_until_signal`](super::ServerHandle::serve_until_signal)
    /// lets a graceful stop take when given
    /// [`ServerHandle::graceful_timeout`](super::ServerHandle::graceful_timeout) (default 30 s, as
    /// gunicorn; 100 ms..=one day; `PREFORK_GRACEFUL_TIMEOUT`).
    pub fn graceful_timeout(mut self, d: Duration) -> Self {
        self.sources.set("graceful_timeout", Source::Code);
        self.graceful_timeout = d;
        self
    }

    /// Refuse a `forwarded_allow_ips` list that is not IPs, CIDR blocks or `*`, as `serve` would.
    #[cfg_attr(not(feature = "prefork"), allow(dead_code))]
    pub(crate) fn check_forwarded(&self) -> Result<(), BuildError> {
        super::ops::forwarded::TrustedProxies::parse(&self.forwarded_allow_ips).map(|_| ())
    }

    /// Process mode: accept only when `gate` says so (the pre-fork supervisor's balance between
    /// its worker processes; see [`AcceptPolicy`]).
    #[cfg_attr(not(feature = "prefork"), allow(dead_code))]
    pub(crate) fn accept_gate(mut self, gate: Arc<dyn AcceptPolicy>) -> Self {
        self.accept_gate = Some(gate);
        self
    }

    /// Process mode: count the HTTP metrics in `counters` (a block in the memory the worker
    /// processes share with their master) instead of the server's own.
    #[cfg_attr(not(feature = "prefork"), allow(dead_code))]
    pub(crate) fn shared_counters(mut self, counters: &'static HttpCounters) -> Self {
        self.shared_counters = Some(counters);
        self
    }
}
