//! The health routes' settings on [`ServerBuilder`]: [`health_routes`](ServerBuilder::health_routes),
//! [`live_after`](ServerBuilder::live_after), [`drain_delay`](ServerBuilder::drain_delay) (the
//! routes themselves are answered in `health.rs`).

use std::time::Duration;

use super::ops::stuck::StuckPolicy;
use super::server::ServerBuilder;

impl ServerBuilder {
    /// Answer `ready` (readiness) and `live` (liveness) on the server's own, without a worker: they
    /// answer while every worker is busy, and the handler never sees them. Off by default.
    ///
    /// - readiness: 200 `ready` once the workers are up (none waiting for its per-worker state);
    ///   503 while they are not, and from the first moment of a graceful stop
    ///   ([`shutdown`](super::ServerHandle::shutdown), SIGTERM), so that a load balancer stops
    ///   sending before the listeners close (see [`drain_delay`](Self::drain_delay));
    /// - liveness: 200 `alive` unless every worker has been busy with no request completed for
    ///   [`live_after`](Self::live_after) (the [stuck report](super::StuckReport)'s condition),
    ///   then 503 with that report as its body.
    ///
    /// ```
    /// use prefork_pool::http::Server;
    /// use std::io::{Read, Write};
    ///
    /// let server = Server::builder()
    ///     .bind("127.0.0.1:0")
    ///     .health_routes("/readyz", "/livez")
    ///     .serve(|_req, _ctx| "app")
    ///     .unwrap();
    /// let mut s = std::net::TcpStream::connect(server.local_addrs()[0]).unwrap();
    /// s.write_all(b"GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
    /// let mut out = String::new();
    /// s.read_to_string(&mut out).unwrap();
    /// assert!(out.starts_with("HTTP/1.1 200 OK\r\n") && out.ends_with("ready\n"));
    /// server.shutdown(std::time::Duration::from_secs(5));
    /// ```
    pub fn health_routes(mut self, ready: impl Into<String>, live: impl Into<String>) -> Self {
        self.health.routes = Some((ready.into(), live.into()));
        self
    }

    /// How long every worker may be busy with no request completed before liveness answers 503
    /// (default 10 s; more than zero, at most one day). Make it longer than your slowest
    /// legitimate request: a liveness failure gets the process restarted.
    pub fn live_after(mut self, d: Duration) -> Self {
        self.health.live_after = Some(d);
        self
    }

    /// How long a graceful stop keeps the listeners open, answering readiness with 503 and
    /// serving requests as usual, before it drains (default zero; at most one hour; taken from
    /// the graceful timeout). Behind a load balancer that polls readiness (Kubernetes), set it
    /// to about the probe's `periodSeconds × failureThreshold`, so that no new connection arrives
    /// after the listeners close.
    pub fn drain_delay(mut self, d: Duration) -> Self {
        self.health.drain_delay = d;
        self
    }

    /// What the server does when its budget of stuck threads is spent: a handler ran past its
    /// deadline while [`max_retired`](crate::PoolBuilder::max_retired) threads retired earlier
    /// (answered 504, but still inside handlers that never returned) are still running, so its
    /// worker cannot be replaced. From then on the server would answer fewer and fewer requests,
    /// until every one waits for its deadline and gets 504 while the process looks alive.
    ///
    /// - [`StuckPolicy::Exit`] (the default in thread mode): log the stuck report (which routes
    ///   hang) at `error`, fail liveness, answer every queued or running request 503, and exit
    ///   the process with [`EXIT_STUCK`](super::EXIT_STUCK) (70), so that its service manager
    ///   (systemd's `Restart=on-failure`, Docker's restart policy, Kubernetes) starts it again.
    /// - [`StuckPolicy::FailLiveness`]: log the same, and answer the liveness route 503 with the
    ///   report from then on (see [`health_routes`](Self::health_routes)), serving meanwhile with
    ///   the workers left; for an orchestrator that restarts on a failed liveness probe. The
    ///   default in process mode, where the master replaces a worker whose request runs past its
    ///   deadline plus `request_grace` anyway.
    ///
    /// ```no_run
    /// use prefork_pool::http::{Server, StuckPolicy};
    /// use std::time::Duration;
    ///
    /// let server = Server::builder()
    ///     .bind("127.0.0.1:8000")
    ///     .pool(|p| p.workers(4).deadline(Duration::from_secs(5)).max_retired(8))
    ///     .health_routes("/readyz", "/livez")
    ///     .when_stuck(StuckPolicy::FailLiveness)
    ///     .serve(|_req, _ctx| "hello\n")
    ///     .unwrap();
    /// server.serve_until_signal(Duration::from_secs(30)).unwrap();
    /// ```
    pub fn when_stuck(mut self, policy: StuckPolicy) -> Self {
        self.health.when_stuck = policy;
        self
    }
}
