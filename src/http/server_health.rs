//! The health routes' settings on [`ServerBuilder`]: [`health_routes`](ServerBuilder::health_routes),
//! [`live_after`](ServerBuilder::live_after), [`drain_delay`](ServerBuilder::drain_delay) (the
//! routes themselves are answered in `health.rs`).

use std::time::Duration;

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
}
