//! Starting a server: [`ServerBuilder::serve`] (and [`serve_with_state`](ServerBuilder::serve_with_state))
//! check the settings, bind the listeners, build the Pool around the handler and start the reactor
//! thread.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::engine::acceptor::Acceptor;
use super::engine::dispatch::PoolDispatch;
use super::engine::handoff::ConnConfig;
use super::engine::reactor::Reactor;
use super::handle::ServerHandle;
use super::handler::{IntoResponse, ServerAnswer};
use super::ops::access_log::AccessLogFormat;
use super::ops::forwarded::{ProxySettings, TrustedProxies};
use super::ops::stuck::Busy;
use super::routing::router::Router;
use super::server::{io_err, PoolBuilder, ServeError, ServerBuilder, MAX_MIN_BODY_RATE};
use super::types::{HttpRequest, HttpResponse};
use super::wire::parse::Limits;
use super::wire::response::ErrorPage;
use crate::net::{bind_tcp, bind_unix};
use crate::pool::Label;
use crate::{BuildError, Context, Pool};
use http::Version;

/// Longest timeout accepted by the builder: one day.
const MAX_TIMEOUT: Duration = Duration::from_secs(86_400);

/// A timeout: more than zero, at most a day, else refused naming `field` (both fronts: the HTTP
/// server and the tower mode).
pub(crate) fn timeout(field: &'static str, d: Duration) -> Result<(), BuildError> {
    BuildError::check_duration(field, d, Duration::from_nanos(1)..=MAX_TIMEOUT).map(drop)
}

/// The request size limits, each by its setting's name (both fronts: the HTTP server and the
/// tower mode).
pub(crate) fn check_limits(l: &Limits) -> Result<(), BuildError> {
    use BuildError as B;
    B::check_range("limit_request_line", l.request_line, 16..=1 << 20)?;
    B::check_range("limit_request_fields", l.fields, 1..=10_000)?;
    B::check_range("limit_request_field_size", l.field_size, 16..=1 << 20)?;
    B::check_range("limit_head_bytes", l.head_bytes, 64..=64 << 20)?;
    Ok(())
}

impl ServerBuilder {
    fn validate(&self) -> Result<ConnConfig, BuildError> {
        use BuildError as B;
        if let Some(e) = &self.settings_error {
            return Err(e.clone());
        }
        B::check_range("backlog", self.backlog, 1..=65_535)?;
        check_limits(&self.limits)?;
        timeout("head_timeout", self.head_timeout)?;
        timeout("body_timeout", self.body_timeout)?;
        B::check_range("min_body_rate", self.min_body_rate, 0..=MAX_MIN_BODY_RATE)?;
        timeout("keepalive_timeout", self.keepalive_timeout)?;
        timeout("write_timeout", self.write_timeout)?;
        if let Some(n) = self.max_spare {
            B::check_range("max_spare", n, 0..=1024)?;
        }
        B::check_range("max_depth", self.max_depth, 0..=10_000)?;
        timeout("stuck_after", self.stuck_after)?;
        let graceful = Duration::from_millis(100)..=MAX_TIMEOUT;
        B::check_duration("graceful_timeout", self.graceful_timeout, graceful)?;
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
        Ok(ConnConfig {
            limits: self.limits,
            head_timeout: self.head_timeout,
            body_timeout: self.body_timeout,
            min_body_rate: self.min_body_rate,
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
            shared_counters: self.shared_counters,
            tcp_ends: self.tcp_ends,
            #[cfg(feature = "tls")]
            tls: match &self.tls_loaded {
                Some(c) => Some(c.clone()),
                None => self.tls.load()?,
            },
        })
    }

    /// Check the configuration, bind, start the Pool and the reactor thread, and serve `handler`.
    ///
    /// The handler (a [`Handler`](super::Handler)) gets each complete request (body read and
    /// decoded) with its [`Context`]; the request's extensions hold a [`Loopback`](super::Loopback) and the
    /// client's [`PeerAddr`](super::PeerAddr). It returns anything [`IntoResponse`]: an
    /// [`HttpResponse`], a `String`, `(StatusCode, body)`, a `Result` whose error is
    /// `IntoResponse` too (so `?` works), ...
    pub fn serve<F, R>(self, handler: F) -> Result<ServerHandle, ServeError>
    where
        F: Fn(HttpRequest, &Context) -> R + Send + Sync + 'static,
        R: IntoResponse,
    {
        self.serve_built(move |pool, page| {
            pool.build(move |req: HttpRequest, ctx: &Context| around(&page, handler(req, ctx)))
        })
    }

    /// [`serve`](Self::serve) a [`Router`]: its routes' [`deadline`](super::MethodRouter::deadline)s
    /// feed [`deadline_for`](Self::deadline_for) (a route's own deadline first, else what
    /// `deadline_for` chooses, else the Pool's).
    ///
    /// ```
    /// use prefork_pool::http::{get, post, Router, Server};
    /// use prefork_pool::http::types::http::{header, Request};
    ///
    /// let app = Router::new().route("/hello_world", post(|| "made\n"));
    /// let server = Server::builder().bind("127.0.0.1:0").serve_router(app).unwrap();
    /// let r = server.loopback().send(Request::get("/hello_world").body(vec![]).unwrap()).unwrap();
    /// assert_eq!((r.status().as_u16(), r.headers()[header::ALLOW].to_str().unwrap()), (405, "POST"));
    /// server.shutdown(std::time::Duration::from_secs(5));
    /// ```
    pub fn serve_router(self, router: Router) -> Result<ServerHandle, ServeError> {
        let router = Arc::new(router);
        self.route_deadlines(&router)
            .serve(move |req, ctx| router.call(req, ctx))
    }

    /// [`serve_router`](Self::serve_router) with per-worker state, as
    /// [`serve_with_state`](Self::serve_with_state) (same `init`, same rules): a route handler
    /// whose first argument is `&mut W` gets this worker's state (a database connection per
    /// worker thread), the others run as with `serve_router`. A handler that takes a state of
    /// another type answers 500.
    ///
    /// ```
    /// use prefork_pool::http::types::http::Request;
    /// use prefork_pool::http::{get, Path, Router, Server};
    ///
    /// /// A connection of this worker's own.
    /// struct Conn { worker: usize, served: u64 }
    ///
    /// fn show(conn: &mut Conn, Path(id): Path<u64>) -> String {
    ///     conn.served += 1;
    ///     format!("note {id} by worker {} ({} served)\n", conn.worker, conn.served)
    /// }
    /// let app = Router::new().route("/notes/{id}", get(show)).route("/", get(|| "home\n"));
    /// let server = Server::builder()
    ///     .bind("127.0.0.1:0")
    ///     .pool(|p| p.workers(1))
    ///     .serve_router_with_state(
    ///         |worker| Ok::<_, std::io::Error>(Conn { worker, served: 0 }),
    ///         app,
    ///     )
    ///     .unwrap();
    /// let mut s = std::net::TcpStream::connect(server.local_addrs()[0]).unwrap();
    /// use std::io::{Read, Write};
    /// s.write_all(b"GET /notes/7 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
    /// let mut out = String::new();
    /// s.read_to_string(&mut out).unwrap();
    /// assert!(out.ends_with("note 7 by worker 0 (1 served)\n"), "{out}");
    /// server.shutdown(std::time::Duration::from_secs(5));
    /// ```
    pub fn serve_router_with_state<W, E, I>(
        self,
        init: I,
        router: Router,
    ) -> Result<ServerHandle, ServeError>
    where
        W: 'static,
        E: fmt::Display + 'static,
        I: Fn(usize) -> Result<W, E> + Send + Sync + 'static,
    {
        let router = Arc::new(router);
        self.route_deadlines(&router)
            .serve_with_state(init, move |w: &mut W, req, ctx| {
                router.call_with_worker(req, ctx, w)
            })
    }

    /// `router`'s deadlines first, then those `deadline_for` chose.
    pub(crate) fn route_deadlines(mut self, router: &Arc<Router>) -> Self {
        self.deadline_for = router.deadlines(self.deadline_for.take());
        self
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
    /// one (a [`Loopback`](super::Loopback) call from a handler, or a request this process sent itself over TCP
    /// while every worker was busy, served on a spare thread) is answered 500 (`Error::Reentrant`);
    /// call the code directly with the `&mut S` you hold instead.
    ///
    /// ```
    /// use prefork_pool::http::types::http;
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
        self.serve_built(move |pool, page| {
            pool.build_with_state(init, move |state: &mut S, req, ctx: &Context| {
                around(&page, handler(state, req, ctx))
            })
        })
    }

    /// Bind, build the pool with `build` (given the pool builder and the error page), name each
    /// job in the pool's records with its request line, and start the reactor.
    fn serve_built(
        self,
        build: impl FnOnce(
            PoolBuilder,
            ErrorPage,
        ) -> Result<Pool<HttpRequest, HttpResponse>, BuildError>,
    ) -> Result<ServerHandle, ServeError> {
        let mut cfg = self.validate()?;
        crate::log_sink::install(&self.logs)?;
        crate::log_sink::start_log_thread().map_err(io_err("start the log thread"))?;
        let backlog = self.backlog as i32;
        let mut listeners = Vec::new();
        let mut addrs = Vec::new();
        #[cfg(unix)]
        let mut paths = Vec::new();
        for a in self.tcp.iter().flat_map(|r| r.iter().flatten()) {
            let l = bind_tcp(*a, backlog).map_err(io_err(format!("bind {a}")))?;
            addrs.push(l.local_addr().map_err(io_err("read a bound address"))?);
            listeners.push(Acceptor::tcp(l));
        }
        for l in self.std_tcp {
            l.set_nonblocking(true)
                .map_err(io_err("make an adopted listener non-blocking"))?;
            addrs.push(
                l.local_addr()
                    .map_err(io_err("read an adopted listener's address"))?,
            );
            listeners.push(Acceptor::tcp(l));
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
        let pool = build(self.pool, cfg.error_page.clone())?;
        pool.describe_with(request_line);
        let workers = pool.stats().workers;
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
        let handle = ServerHandle::start(
            reactor,
            reactor_handle,
            pool,
            max_depth,
            self.graceful_timeout,
            busy,
            addrs,
            #[cfg(unix)]
            paths,
        )
        .map_err(io_err("spawn the reactor thread"))?;
        handle.watch_stuck_budget(self.health.when_stuck);
        Ok(handle)
    }
}

/// Names a request in the pool's record of what its worker runs (the stuck report, the heartbeat):
/// its request line, e.g. `GET /x?a=1 HTTP/1.1`. No allocation: the label is a fixed buffer.
fn request_line(req: &HttpRequest, label: &mut Label) {
    let uri = req.uri();
    let whole;
    let target = match uri.path_and_query() {
        Some(pq) if uri.scheme().is_none() => pq.as_str(),
        _ => {
            whole = uri.to_string();
            whole.as_str()
        }
    };
    let version = match req.version() {
        Version::HTTP_09 => b" HTTP/0.9",
        Version::HTTP_10 => b" HTTP/1.0",
        Version::HTTP_2 => b" HTTP/2.0",
        Version::HTTP_3 => b" HTTP/3.0",
        _ => b" HTTP/1.1",
    };
    label.request_line(req.method().as_str(), target, version);
}

/// After each request's handler: render a `prefork_pool::Error` the handler returned like the
/// server's own answers.
fn around<R: IntoResponse>(page: &ErrorPage, answer: R) -> HttpResponse {
    let mut resp = answer.into_response();
    // Replaced in place and returned as it is: the common answer is not copied on its way out.
    if let Some(&ServerAnswer { status, reason }) = resp.extensions().get::<ServerAnswer>() {
        resp = page.render(status, reason);
    }
    resp
}
