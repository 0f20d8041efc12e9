//! [`ServiceConfig`]: how each worker process of the tower mode serves, with the operator
//! settings of the crate's HTTP server under the same names, checked by the same code.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{Extensions, Method, Uri};
use hyper_util::rt::{TokioExecutor, TokioTimer};
use hyper_util::server::conn::auto::Builder as AutoBuilder;

use crate::http::ops::access_log::{AccessLogFormat, DEFAULT_ACCESS_LOG_FORMAT};
use crate::http::ops::forwarded::{TrustedProxies, DEFAULT_FORWARDED_ALLOW_IPS};
use crate::http::ops::health::{HealthRoutes, HealthSettings};
use crate::http::serve::{check_limits, timeout};
use crate::http::Limits;
use crate::prefork::config::WorkerServer;
use crate::BuildError;

/// The per-route deadline chooser of [`ServiceConfig::deadline_for`].
pub(super) type DeadlineFor = dyn Fn(&Method, &Uri) -> Option<Duration> + Send + Sync;
/// What [`ServiceConfig::connect_info`] inserts into each request's extensions.
pub(super) type ConnectInfoFn = dyn Fn(SocketAddr, &mut Extensions) + Send + Sync;

/// How each worker process of [`Supervisor::serve_service`](crate::prefork::Supervisor::serve_service)
/// runs its service: the runtime's threads and each request's deadline, and the operator
/// settings of the crate's HTTP server ([`ServerBuilder`](crate::http::ServerBuilder)), under
/// the same names and with the same allowed ranges: limits, head and keep-alive timeouts, the
/// access log, health routes, trusted proxies. A value that is not allowed is refused when the
/// supervisor starts (`serve_service` exits 1 naming the field and the allowed range).
///
/// The supervisor's own [`timeout`](crate::prefork::SupervisorBuilder::timeout),
/// [`keep_alive`](crate::prefork::SupervisorBuilder::keep_alive) and
/// [`forwarded_allow_ips`](crate::prefork::SupervisorBuilder::forwarded_allow_ips) (and so
/// `PREFORK_TIMEOUT`, `PREFORK_KEEP_ALIVE`, `PREFORK_FORWARDED_ALLOW_IPS`) apply here when this
/// config does not set [`deadline`](Self::deadline), [`keepalive_timeout`](Self::keepalive_timeout)
/// or [`forwarded_allow_ips`](Self::forwarded_allow_ips) itself.
///
/// ```
/// use prefork_pool::prefork::ServiceConfig;
/// use std::time::Duration;
///
/// let config = ServiceConfig::new()
///     .threads(4)
///     .deadline(Duration::from_secs(10))
///     .deadline_for(|_method, uri| uri.path().starts_with("/export").then(|| Duration::from_secs(60)))
///     .limit_body_bytes(1 << 20)               // larger: 413, answered by the server
///     .health_routes("/readyz", "/livez")      // answered before the app
///     .forwarded_allow_ips(["10.0.0.0/8"]);    // the proxies whose X-Forwarded-For is believed
/// assert_eq!(config.deadline_value(), Duration::from_secs(10));
/// ```
#[derive(Clone)]
#[cfg_attr(docsrs, doc(cfg(feature = "tower")))]
pub struct ServiceConfig {
    threads: usize,
    deadline: Option<Duration>,
    deadline_for: Option<Arc<DeadlineFor>>,
    limits: Limits,
    head_timeout: Duration,
    keepalive_timeout: Option<Duration>,
    access_log: Option<String>,
    health: HealthSettings,
    forwarded_allow_ips: Option<Vec<String>>,
    connect_info: Option<Arc<ConnectInfoFn>>,
    http2: bool,
    proxy_protocol: bool,
}

impl fmt::Debug for ServiceConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServiceConfig")
            .field("threads", &self.threads)
            .field("deadline", &self.deadline)
            .field("deadline_for", &self.deadline_for.is_some())
            .field("limits", &self.limits)
            .field("head_timeout", &self.head_timeout)
            .field("keepalive_timeout", &self.keepalive_timeout)
            .field("access_log", &self.access_log)
            .field("health", &self.health)
            .field("forwarded_allow_ips", &self.forwarded_allow_ips)
            .field("connect_info", &self.connect_info.is_some())
            .field("http2_prior_knowledge", &self.http2)
            .field("proxy_protocol", &self.proxy_protocol)
            .finish()
    }
}

impl Default for ServiceConfig {
    fn default() -> Self {
        ServiceConfig {
            threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
            deadline: None,
            deadline_for: None,
            limits: Limits::default(),
            head_timeout: Duration::from_secs(10),
            keepalive_timeout: None,
            access_log: Some(DEFAULT_ACCESS_LOG_FORMAT.to_string()),
            health: HealthSettings::default(),
            forwarded_allow_ips: None,
            connect_info: None,
            http2: false,
            proxy_protocol: false,
        }
    }
}

/// The default deadline of each request.
const DEFAULT_DEADLINE: Duration = Duration::from_secs(30);
/// The default keep-alive idle time (the HTTP server's).
const DEFAULT_KEEPALIVE: Duration = Duration::from_secs(5);
/// hyper refuses a read buffer smaller than this.
const HYPER_MIN_BUF: usize = 8192;
/// hyper's own limit on a head's header fields when none is set (`DEFAULT_MAX_HEADERS`).
const HYPER_MAX_HEADERS: usize = 100;

impl ServiceConfig {
    /// The defaults: as many runtime threads per process as the machine has cores (never
    /// `WEB_CONCURRENCY`, which counts processes), a 30 s deadline per request (or the
    /// supervisor's `timeout`), gunicorn's limits, a 10 s head timeout, 5 s keep-alive, the
    /// access log in gunicorn's format, no health routes, `127.0.0.1` and `::1` trusted.
    pub fn new() -> Self {
        Self::default()
    }

    /// The tokio runtime's worker threads in each process (default: the available parallelism;
    /// at least 1).
    pub fn threads(mut self, n: usize) -> Self {
        self.threads = n.max(1);
        self
    }

    /// Each request's deadline (default: the supervisor's
    /// [`timeout`](crate::prefork::SupervisorBuilder::timeout), else 30 s), from its head read to
    /// its response head: at the deadline the service's future is dropped and the client gets
    /// 504. A request whose runtime thread is blocked (so that its timer cannot fire) is still
    /// running `request_grace` after its deadline: the master kills and replaces the process.
    pub fn deadline(mut self, d: Duration) -> Self {
        self.deadline = Some(d);
        self
    }

    /// A deadline per route: `choose(method, uri)` gives a request's own deadline, `None` the
    /// [`deadline`](Self::deadline). It runs for every request before the service: keep it quick
    /// (a match on the path). The master's kill of a blocked process follows each request's own
    /// deadline.
    pub fn deadline_for(
        mut self,
        choose: impl Fn(&Method, &Uri) -> Option<Duration> + Send + Sync + 'static,
    ) -> Self {
        self.deadline_for = Some(Arc::new(choose));
        self
    }

    /// All the request size limits at once (the HTTP server's [`Limits`]).
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// Longest request line (gunicorn's `limit_request_line`, default 4094; 16..=1 MiB).
    /// Longer: 414, answered by the server, and the connection closed.
    pub fn limit_request_line(mut self, n: usize) -> Self {
        self.limits.request_line = n;
        self
    }

    /// Most header fields (gunicorn's `limit_request_fields`, default 100; 1..=10,000). More:
    /// 431 (hyper's answer).
    pub fn limit_request_fields(mut self, n: usize) -> Self {
        self.limits.fields = n;
        self
    }

    /// Longest header field line, `name: value` (gunicorn's `limit_request_field_size`, default
    /// 8190; 16..=1 MiB). Longer: 431, answered by the server.
    pub fn limit_request_field_size(mut self, n: usize) -> Self {
        self.limits.field_size = n;
        self
    }

    /// Largest head, request line and fields (default 64 KiB; 64..=64 MiB). Larger: 431
    /// (hyper's answer), and the connection closed.
    pub fn limit_head_bytes(mut self, n: usize) -> Self {
        self.limits.head_bytes = n;
        self
    }

    /// Largest request body (default 10 MiB). A larger declared one (`Content-Length`): 413,
    /// answered by the server before the app runs, and the connection closed. A body with no
    /// declared length (chunked, HTTP/2) is counted as the app reads it
    /// ([`ServiceBody`](crate::prefork::ServiceBody)): past the limit the read fails (axum's
    /// extractors answer 413 themselves) and the client gets the server's 413 whatever the app
    /// answered, with the connection closed. The app's own limit applies too, the smaller wins
    /// (axum's `DefaultBodyLimit`, 2 MB by default).
    pub fn limit_body_bytes(mut self, n: u64) -> Self {
        self.limits.body_bytes = n;
        self
    }

    /// How long a client may take to send a request head (default 10 s; more than zero, at most
    /// a day), counted from the moment the connection waits for the head: its start, and on a
    /// kept-alive connection the end of the previous answer. Past it the connection is closed
    /// without an answer.
    pub fn head_timeout(mut self, d: Duration) -> Self {
        self.head_timeout = d;
        self
    }

    /// How long an idle kept-alive connection stays open (default: the supervisor's
    /// [`keep_alive`](crate::prefork::SupervisorBuilder::keep_alive), else 5 s; more than zero,
    /// at most a day), from its last answer. The head timeout runs from the same moment: an
    /// idle connection is closed by whichever of the two comes first. A new connection has
    /// the [`head_timeout`](Self::head_timeout) for its first request.
    pub fn keepalive_timeout(mut self, d: Duration) -> Self {
        self.keepalive_timeout = Some(d);
        self
    }

    /// The access log's format: gunicorn's atoms or `json`
    /// ([`AccessLogFormat`](crate::http::AccessLogFormat), default gunicorn's). Lines go to the
    /// crate's log sink when the supervisor has an access log file
    /// ([`access_log_file`](crate::prefork::SupervisorBuilder::access_log_file), reopened on
    /// SIGUSR1), else through the `log` facade (target
    /// [`ACCESS_TARGET`](crate::http::ACCESS_TARGET)). The line is written when the answer's
    /// head is ready: `%(b)s` is the body's length when it is known then (a full body; `-` for a
    /// stream) and the durations end at the head.
    pub fn access_log_format(mut self, fmt: impl Into<String>) -> Self {
        self.access_log = Some(fmt.into());
        self
    }

    /// Turn the access log off (`false`) or back on with the default format.
    pub fn access_log(mut self, on: bool) -> Self {
        self.access_log = on.then(|| DEFAULT_ACCESS_LOG_FORMAT.to_string());
        self
    }

    /// Health routes answered by the server before the service (as
    /// [`ServerBuilder::health_routes`](crate::http::ServerBuilder::health_routes)): readiness
    /// says 200 while the worker serves and 503 from the first moment of a graceful stop (a
    /// reload, a recycle, SIGTERM); liveness says 503 when requests are running and none was
    /// answered for [`live_after`](Self::live_after) (a runtime whose threads are all blocked
    /// answers neither: the probe's timeout says the same).
    pub fn health_routes(mut self, ready: impl Into<String>, live: impl Into<String>) -> Self {
        self.health.routes = Some((ready.into(), live.into()));
        self
    }

    /// How long requests may run with none answered before liveness says 503 (default 10 s).
    pub fn live_after(mut self, d: Duration) -> Self {
        self.health.live_after = Some(d);
        self
    }

    /// The proxies whose `X-Forwarded-For` and RFC 7239 `Forwarded` headers are believed
    /// (gunicorn's `forwarded_allow_ips`, the HTTP server's
    /// [`forwarded_allow_ips`](crate::http::ServerBuilder::forwarded_allow_ips) with the same
    /// rules; default: the supervisor's setting, else `127.0.0.1` and `::1`). Each request's
    /// extensions get the believed client as a [`PeerAddr`](crate::http::PeerAddr), the
    /// socket's peer as a [`SocketPeer`](crate::http::SocketPeer), and what
    /// [`connect_info`](Self::connect_info) makes of them; the access log's `%(h)s` is the same.
    pub fn forwarded_allow_ips<S: AsRef<str>>(mut self, ips: impl IntoIterator<Item = S>) -> Self {
        self.forwarded_allow_ips = Some(ips.into_iter().map(|s| s.as_ref().to_string()).collect());
        self
    }

    /// Inserts `make(client)` into each request's extensions: `client` is the believed client's
    /// address (the socket's peer, or the client a trusted proxy names, see
    /// [`forwarded_allow_ips`](Self::forwarded_allow_ips), then with port 0; `0.0.0.0:0` for a
    /// Unix socket peer with no such header). For axum, whose `ConnectInfo<SocketAddr>`
    /// extractor reads an `axum::extract::ConnectInfo<SocketAddr>` extension (what
    /// `into_make_service_with_connect_info` inserts), pass its constructor:
    ///
    /// ```ignore
    /// ServiceConfig::new().connect_info(axum::extract::ConnectInfo)
    /// ```
    ///
    /// The crate does not depend on axum, so the type is yours to name; without this call, read
    /// the [`PeerAddr`](crate::http::PeerAddr) extension (axum: `Extension<PeerAddr>`).
    pub fn connect_info<T: Clone + Send + Sync + 'static>(
        mut self,
        make: impl Fn(SocketAddr) -> T + Send + Sync + 'static,
    ) -> Self {
        self.connect_info = Some(Arc::new(move |addr, ext: &mut Extensions| {
            ext.insert(make(addr));
        }));
        self
    }

    /// Serve HTTP/2 with prior knowledge (h2c, cleartext: a connection that starts with HTTP/2's
    /// preface) beside HTTP/1.1 on the same listeners (default off: HTTP/1.1 only), with
    /// hyper-util's auto builder: a gRPC service (tonic) behind a proxy that speaks h2c to its
    /// upstream (Envoy, nginx's `grpc_pass`). Everything else applies per request as for
    /// HTTP/1.1 (deadlines, limits, the access log's `HTTP/2.0`, metrics, health routes); on a
    /// stop an HTTP/2 connection gets a GOAWAY at once (its streams under way finish, the client
    /// opens new ones elsewhere). With it on, the head's size is limited by hyper's read buffer
    /// (`limit_head_bytes`, at least 8 KiB) rather than exactly, and HTTP/2's header list by
    /// `limit_head_bytes` too.
    pub fn http2_prior_knowledge(mut self, on: bool) -> Self {
        self.http2 = on;
        self
    }

    /// Every connection, on every listener, starts with a PROXY protocol header (v1 or v2;
    /// default off), as the HTTP server's
    /// [`proxy_protocol`](crate::http::ServerBuilder::proxy_protocol): its source becomes the
    /// believed client ([`PeerAddr`](crate::http::PeerAddr), `%(h)s`, what
    /// [`connect_info`](Self::connect_info) gets, with its port) and the peer that
    /// [`forwarded_allow_ips`](Self::forwarded_allow_ips) checks; the
    /// [`SocketPeer`](crate::http::SocketPeer) stays the socket's. A header missing, malformed or
    /// not complete within the [`head_timeout`](Self::head_timeout) closes the connection
    /// without an answer.
    pub fn proxy_protocol(mut self, on: bool) -> Self {
        self.proxy_protocol = on;
        self
    }

    /// The runtime threads per process.
    pub fn threads_value(&self) -> usize {
        self.threads
    }

    /// The deadline of each request (the supervisor's `timeout` is applied when the worker
    /// starts: this is the config's own value, or 30 s).
    pub fn deadline_value(&self) -> Duration {
        self.deadline.unwrap_or(DEFAULT_DEADLINE)
    }

    /// The settings checked, with the supervisor's where this config sets none.
    pub(super) fn check(&self, server: &WorkerServer) -> Result<Checked, BuildError> {
        let deadline = self.deadline.or(server.timeout).unwrap_or(DEFAULT_DEADLINE);
        timeout("deadline", deadline)?;
        check_limits(&self.limits)?;
        timeout("head_timeout", self.head_timeout)?;
        let keepalive = self
            .keepalive_timeout
            .or(server.keep_alive)
            .unwrap_or(DEFAULT_KEEPALIVE);
        timeout("keepalive_timeout", keepalive)?;
        let access_log = match &self.access_log {
            Some(f) => Some(AccessLogFormat::parse(f)?),
            None => None,
        };
        let default_ips: Vec<String> = DEFAULT_FORWARDED_ALLOW_IPS
            .iter()
            .map(|s| s.to_string())
            .collect();
        let ips = self
            .forwarded_allow_ips
            .as_ref()
            .or(server.forwarded_allow_ips.as_ref())
            .unwrap_or(&default_ips);
        Ok(Checked {
            threads: self.threads,
            deadline,
            deadline_for: self.deadline_for.clone(),
            limits: self.limits,
            head_timeout: self.head_timeout,
            keepalive,
            access_log,
            health: self.health.check()?,
            trusted: TrustedProxies::parse(ips)?,
            connect_info: self.connect_info.clone(),
            http2: self.http2,
            proxy_protocol: self.proxy_protocol,
        })
    }
}

/// The settings a worker process serves with, checked.
#[derive(Clone)]
pub(super) struct Checked {
    pub threads: usize,
    pub deadline: Duration,
    pub deadline_for: Option<Arc<DeadlineFor>>,
    pub limits: Limits,
    pub head_timeout: Duration,
    pub keepalive: Duration,
    pub access_log: Option<AccessLogFormat>,
    pub health: Option<HealthRoutes>,
    pub trusted: TrustedProxies,
    pub connect_info: Option<Arc<ConnectInfoFn>>,
    /// h2c beside HTTP/1.1 (hyper-util's auto builder).
    pub http2: bool,
    /// Each connection starts with a PROXY protocol header.
    pub proxy_protocol: bool,
}

impl Checked {
    /// hyper's connection settings: the head limits (431) and the head timeout.
    pub(super) fn http1(&self) -> hyper::server::conn::http1::Builder {
        let mut b = hyper::server::conn::http1::Builder::new();
        // The head timeout is the connection's idle timer's (`conn.rs`), not hyper's: hyper's
        // would box, register and drop a timer for every request head.
        // The answer's head and body copied into one buffer for one `write`, as hyper does on
        // `axum::serve`'s connections (hyper-util's wrapper there does not offer vectored
        // writes): its vectored queue costs more per answer for the usual small body.
        b.header_read_timeout(None)
            .writev(false)
            .max_buf_size(self.limits.head_bytes.max(HYPER_MIN_BUF))
            .max_header_size(self.limits.head_bytes);
        if let Some(n) = self.max_headers() {
            b.max_headers(n);
        }
        b
    }

    /// The header count limit to give hyper: `None` when it is hyper's own default (100), which
    /// hyper checks with a fixed array on the stack; a limit set, even an equal one, costs it a
    /// vector filled for every request head (about 1,700 instructions per request).
    fn max_headers(&self) -> Option<usize> {
        (self.limits.fields != HYPER_MAX_HEADERS).then_some(self.limits.fields)
    }

    /// hyper-util's auto builder (HTTP/1.1, and HTTP/2 with prior knowledge), with the same
    /// HTTP/1.1 settings as [`http1`](Self::http1).
    pub(super) fn auto(&self) -> AutoBuilder<TokioExecutor> {
        let mut b = AutoBuilder::new(TokioExecutor::new());
        b.http1()
            .header_read_timeout(None)
            .writev(false)
            .max_buf_size(self.limits.head_bytes.max(HYPER_MIN_BUF));
        if let Some(n) = self.max_headers() {
            b.http1().max_headers(n);
        }
        b.http2()
            .timer(TokioTimer::new())
            .max_header_list_size(u32::try_from(self.limits.head_bytes).unwrap_or(u32::MAX));
        b
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_value_out_of_range_is_refused_by_its_name() {
        let server = WorkerServer::default();
        let field = |c: ServiceConfig| c.check(&server).err().map(|e| e.field);
        assert_eq!(
            field(ServiceConfig::new().limit_request_line(1)),
            Some("limit_request_line")
        );
        assert_eq!(
            field(ServiceConfig::new().head_timeout(Duration::ZERO)),
            Some("head_timeout")
        );
        assert_eq!(
            field(ServiceConfig::new().forwarded_allow_ips(["nginx"])),
            Some("forwarded_allow_ips")
        );
        assert_eq!(
            field(ServiceConfig::new().access_log_format("%(z)s")),
            Some("access_log_format")
        );
        assert_eq!(
            field(ServiceConfig::new().health_routes("/h", "/h")),
            Some("health_routes")
        );
        assert_eq!(field(ServiceConfig::new()), None);
    }

    #[test]
    fn the_supervisors_settings_apply_unless_the_config_sets_its_own() {
        let server = WorkerServer {
            timeout: Some(Duration::from_secs(7)),
            keep_alive: Some(Duration::from_secs(3)),
            ..WorkerServer::default()
        };
        let c = ServiceConfig::new().check(&server).unwrap();
        assert_eq!(
            (c.deadline, c.keepalive),
            (Duration::from_secs(7), Duration::from_secs(3))
        );
        let c = ServiceConfig::new()
            .deadline(Duration::from_secs(2))
            .keepalive_timeout(Duration::from_secs(1))
            .check(&server)
            .unwrap();
        assert_eq!(
            (c.deadline, c.keepalive),
            (Duration::from_secs(2), Duration::from_secs(1))
        );
    }
}
