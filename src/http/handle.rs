//! [`ServerHandle`]: a running server: its addresses, stats, [`Loopback`], self-call counts, stuck
//! report, and the graceful shutdown that waits for every thread it started.

use std::fmt;
use std::io;
use std::net::SocketAddr;
#[cfg(unix)]
use std::path::PathBuf;
use std::sync::{Arc, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use super::engine::reactor::{Reactor, ReactorHandle};
use super::engine::stream::StreamStats;
use super::ops::metrics::ServerMetrics;
use super::ops::stuck::{Busy, StuckPolicy, StuckReport, EXIT_STUCK};
use super::self_call::calls::SelfCalls;
use super::self_call::loopback::Loopback;
use super::types::{HttpRequest, HttpResponse};
use crate::{Pool, ShutdownReport, Stats};

enum Stopped {
    Running,
    Done(ShutdownReport),
}

struct Inner {
    pool: Pool<HttpRequest, HttpResponse>,
    max_depth: u32,
    graceful_timeout: Duration,
    busy: Arc<Busy>,
    reactor: ReactorHandle,
    addrs: Vec<SocketAddr>,
    #[cfg(unix)]
    paths: Vec<PathBuf>,
    deadline: Mutex<Option<Instant>>,
    state: Mutex<Stopped>,
    stopped: Condvar,
    thread: Mutex<Option<JoinHandle<()>>>,
}

/// A running server. Cloning gives another handle to the same server.
///
/// Dropping the handles does not stop the server: call [`shutdown`](Self::shutdown), or
/// [`join`](Self::join) to block until another thread does, or (a program that only serves)
/// [`serve_until_signal`](Self::serve_until_signal) to serve until SIGTERM or Ctrl-C.
#[derive(Clone)]
pub struct ServerHandle {
    inner: Arc<Inner>,
}

impl fmt::Debug for ServerHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerHandle")
            .field("local_addrs", &self.inner.addrs)
            .field("pool", &self.inner.pool.name())
            .finish()
    }
}

impl ServerHandle {
    /// Run `reactor` on its own thread; when its loop ends (drained or at the graceful deadline),
    /// the thread shuts the Pool down with what is left of the timeout and reports.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn start(
        reactor: Reactor,
        reactor_handle: ReactorHandle,
        pool: Pool<HttpRequest, HttpResponse>,
        max_depth: u32,
        graceful_timeout: Duration,
        busy: Arc<Busy>,
        addrs: Vec<SocketAddr>,
        #[cfg(unix)] paths: Vec<PathBuf>,
    ) -> io::Result<ServerHandle> {
        let inner = Arc::new(Inner {
            pool: pool.clone(),
            max_depth,
            graceful_timeout,
            busy,
            reactor: reactor_handle,
            addrs,
            #[cfg(unix)]
            paths,
            deadline: Mutex::new(None),
            state: Mutex::new(Stopped::Running),
            stopped: Condvar::new(),
            thread: Mutex::new(None),
        });
        let inner2 = inner.clone();
        let thread = std::thread::Builder::new()
            .name(format!("{}-http", pool.name()))
            .spawn(move || {
                reactor.run();
                let deadline = *inner2.deadline.lock();
                let left = deadline.map_or(Duration::ZERO, |d| {
                    d.saturating_duration_since(Instant::now())
                });
                let report = inner2.pool.shutdown(left);
                *inner2.state.lock() = Stopped::Done(report);
                inner2.stopped.notify_all();
            })?;
        *inner.thread.lock() = Some(thread);
        Ok(ServerHandle { inner })
    }

    /// The TCP addresses the server listens on (with the real port when bound to port 0), in the
    /// order they were given.
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.inner.addrs.clone()
    }

    /// The graceful timeout set on the builder
    /// ([`ServerBuilder::graceful_timeout`](super::ServerBuilder::graceful_timeout),
    /// `PREFORK_GRACEFUL_TIMEOUT`; default 30 s), for
    /// [`serve_until_signal`](Self::serve_until_signal) or [`shutdown`](Self::shutdown).
    pub fn graceful_timeout(&self) -> Duration {
        self.inner.graceful_timeout
    }

    /// The Unix socket paths the server listens on.
    #[cfg(unix)]
    pub fn unix_paths(&self) -> Vec<PathBuf> {
        self.inner.paths.clone()
    }

    /// The Pool's statistics (workers, queue, done, failed, timed out, ...).
    pub fn stats(&self) -> Stats {
        self.inner.pool.stats()
    }

    /// A handle that sends requests to this server's handler in-process.
    pub fn loopback(&self) -> Loopback {
        Loopback::new(self.inner.pool.clone(), self.inner.max_depth)
    }

    /// Requests this process (or a sibling worker process) sent to its own server over TCP or a
    /// Unix socket while every worker was busy: how many were served on a spare thread and how
    /// many refused (503) because all [`max_spare`](super::ServerBuilder::max_spare) spare threads
    /// were taken.
    pub fn self_calls(&self) -> SelfCalls {
        self.inner.reactor.self_calls()
    }

    /// The server's HTTP metrics now: requests by method and status class, the answers it made
    /// on its own, a duration histogram, connections, bytes (see [`ServerMetrics`]). Render them
    /// with [`MetricsPage::server`](crate::MetricsPage::server).
    pub fn metrics(&self) -> ServerMetrics {
        self.inner.reactor.metrics()
    }

    /// Streamed answers ([`Body`](super::Body)) so far: sent to their end, and cut because the
    /// client took nothing for [`write_timeout`](super::ServerBuilder::write_timeout), went away,
    /// or the body failed. A cut stream is also logged (`warn`, at most one line per 10 s).
    ///
    /// ```
    /// use prefork_pool::http::{Body, Server};
    /// use std::io::{Read, Write};
    ///
    /// let server = Server::builder()
    ///     .bind("127.0.0.1:0")
    ///     .serve(|_req, _ctx| Body::stream([Ok(b"x".to_vec())]))
    ///     .unwrap();
    /// let mut s = std::net::TcpStream::connect(server.local_addrs()[0]).unwrap();
    /// s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
    /// s.read_to_end(&mut Vec::new()).unwrap();
    /// assert_eq!(server.streams().completed, 1);
    /// server.shutdown(std::time::Duration::from_secs(5));
    /// ```
    pub fn streams(&self) -> StreamStats {
        self.inner.reactor.streams()
    }

    /// What every busy worker is running now, and for how long; its `Display` is the line the
    /// server logs when every worker has been busy with no job completed for
    /// [`stuck_after`](super::ServerBuilder::stuck_after).
    ///
    /// ```
    /// use prefork_pool::http::types::http;
    /// use prefork_pool::http::Server;
    /// let server = Server::builder()
    ///     .bind("127.0.0.1:0")
    ///     .pool(|p| p.workers(2))
    ///     .serve(|_req, _ctx| http::Response::new(Vec::new()))
    ///     .unwrap();
    /// let report = server.stuck_report();
    /// assert!(report.busy.is_empty());
    /// assert_eq!(report.to_string(), "pool `http`: 0 of 2 worker(s) busy");
    /// server.shutdown(std::time::Duration::from_secs(5));
    /// ```
    pub fn stuck_report(&self) -> StuckReport {
        let workers = self.inner.pool.stats().workers;
        let pool = &self.inner.pool;
        self.inner
            .busy
            .report(pool.name(), workers, pool.records(), Instant::now())
    }

    /// What every worker runs now, and every retired thread whose handler has not returned: the
    /// pool's records, for the pre-fork worker's heartbeat.
    #[cfg(feature = "prefork")]
    pub(crate) fn records(&self) -> Vec<crate::pool::Record> {
        self.inner.pool.records()
    }

    /// Stop gracefully and wait: accept what is already in the listen backlog, then close the
    /// listeners and the idle keep-alive connections (one answered less than a second ago has the
    /// rest of that second for its next request); finish every request already read, answering
    /// with `Connection: close`; then stop the Pool and the reactor thread. At `graceful_timeout`,
    /// a request still arriving (a stalled upload) or still running is answered 503, and what is
    /// left open is closed (see [Graceful shutdown](super#graceful-shutdown)). It returns as soon
    /// as nothing is left. Returns the Pool's report. Calling it again (or from several
    /// threads) waits for the same stop and returns the same report.
    pub fn shutdown(&self, graceful_timeout: Duration) -> ShutdownReport {
        self.begin_shutdown(graceful_timeout);
        self.join()
    }

    /// Start the graceful shutdown of [`shutdown`](Self::shutdown) without waiting for it.
    pub(crate) fn begin_shutdown(&self, graceful_timeout: Duration) {
        let mut d = self.inner.deadline.lock();
        if d.is_none() {
            *d = Some(Instant::now() + graceful_timeout);
        }
        self.inner.reactor.shutdown(d.unwrap_or_else(Instant::now));
    }

    /// Stop at once, even during a graceful stop: every request queued or running is answered
    /// 503 now (the Pool's [`shutdown_now`](crate::Pool::shutdown_now)), and so is every request
    /// still arriving (a half-sent upload); the listeners close, the other connections close, and
    /// the reactor thread ends without waiting for the graceful timeout. Returns the Pool's report
    /// of what it answered.
    pub(crate) fn stop_now(&self) -> ShutdownReport {
        *self.inner.deadline.lock() = Some(Instant::now());
        self.inner.reactor.stop_now();
        self.inner.pool.shutdown_now()
    }

    /// Has the pool's watchdog call [`budget_spent`](Self::budget_spent) (see
    /// [`ServerBuilder::when_stuck`](super::ServerBuilder::when_stuck)).
    pub(crate) fn watch_stuck_budget(&self, policy: StuckPolicy) {
        let weak: Weak<Inner> = Arc::downgrade(&self.inner);
        self.inner.pool.on_budget_spent(move || {
            if let Some(inner) = weak.upgrade() {
                ServerHandle { inner }.budget_spent(policy);
            }
        });
    }

    /// The budget of stuck threads is spent (on the watchdog's thread): the first time, log the
    /// stuck report, fail liveness, and with [`StuckPolicy::Exit`] stop at once and exit.
    fn budget_spent(&self, policy: StuckPolicy) {
        let report = self.stuck_report().busy_lines();
        if !self.inner.busy.spend(report.clone()) {
            return;
        }
        match policy {
            StuckPolicy::FailLiveness => log::error!(
                target: "prefork_pool::http",
                "handlers ran past their deadline and never returned, and the budget of stuck \
                 threads (max_retired) is spent: {report}. Liveness fails from now on, so that \
                 the process gets restarted; meanwhile it serves with the workers left. Fix the \
                 handlers of these routes (they ignore Context::is_cancelled), or raise \
                 max_retired."
            ),
            StuckPolicy::Exit => {
                log::error!(
                    target: "prefork_pool::http",
                    "handlers ran past their deadline and never returned, and the budget of \
                     stuck threads (max_retired) is spent: {report}. Answering every request \
                     queued or running 503 and exiting with status {EXIT_STUCK}, so that the \
                     service manager restarts the process. Fix the handlers of these routes \
                     (they ignore Context::is_cancelled), or raise max_retired; \
                     ServerBuilder::when_stuck(StuckPolicy::FailLiveness) keeps the process up \
                     with liveness failing instead."
                );
                let me = self.clone();
                let spawned = std::thread::Builder::new()
                    .name("http-stuck-exit".into())
                    .spawn(move || {
                        // Queued requests are answered 503 first, then the reactor drains for
                        // up to a second to write the answers; the stuck threads are not
                        // waited for.
                        me.inner.pool.shutdown_now();
                        me.begin_shutdown(Duration::from_secs(1));
                        let (done, wait) = crossbeam_channel::bounded(1);
                        let _ = std::thread::Builder::new()
                            .name("http-stuck-join".into())
                            .spawn(move || {
                                me.join();
                                let _ = done.send(());
                            });
                        let _ = wait.recv_timeout(Duration::from_secs(5));
                        std::process::exit(EXIT_STUCK);
                    });
                if spawned.is_err() {
                    std::process::exit(EXIT_STUCK);
                }
            }
        }
    }

    /// Block until the server has stopped (after a [`shutdown`](Self::shutdown) from any
    /// thread), with every thread it started ended. Returns the Pool's shutdown report.
    pub fn join(&self) -> ShutdownReport {
        let report = {
            let mut st = self.inner.state.lock();
            loop {
                if let Stopped::Done(r) = &*st {
                    break r.clone();
                }
                self.inner.stopped.wait(&mut st);
            }
        };
        if let Some(t) = self.inner.thread.lock().take() {
            let _ = t.join();
        }
        // Every access line of the requests answered is written out.
        crate::log_sink::flush();
        report
    }
}
