//! The server's own HTTP counters ([`HttpCounters`]: relaxed atomics bumped by the reactor and by
//! the thread that answers, no lock and no allocation per request), their snapshot
//! [`ServerMetrics`] from [`ServerHandle::metrics`](crate::http::ServerHandle::metrics), and its
//! samples on a [`MetricsPage`](crate::MetricsPage).

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use http::Method;

use crate::metrics::{escape, Kind, MetricsPage};

/// The methods counted one by one; any other is counted as `other`.
pub const METHODS: [&str; 8] = [
    "GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "other",
];
/// The statuses of the answers the server makes on its own, counted one by one.
pub const OWN_STATUSES: [u16; 8] = [400, 408, 413, 414, 431, 503, 504, 508];
/// The upper bounds of the request-duration histogram's buckets, in seconds (plus `+Inf`).
pub const DURATION_BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];
/// The same bounds in microseconds, for the hot path.
const BUCKET_MICROS: [u64; 12] = [
    1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000, 2_500_000,
    10_000_000,
];

/// The index of `m` in [`METHODS`].
#[inline]
pub(crate) fn method_index(m: &Method) -> u8 {
    match *m {
        Method::GET => 0,
        Method::HEAD => 1,
        Method::POST => 2,
        Method::PUT => 3,
        Method::DELETE => 4,
        Method::PATCH => 5,
        Method::OPTIONS => 6,
        _ => 7,
    }
}

/// The live counters (all relaxed atomics; only the gauges ever go down). All-zero bytes are a
/// valid, empty block: it may live in memory shared by processes (the pre-fork heartbeat table).
#[derive(Debug, Default)]
pub(crate) struct HttpCounters {
    requests: [[AtomicU64; 5]; 8],
    own: [AtomicU64; 8],
    own_other: AtomicU64,
    buckets: [AtomicU64; 13],
    duration_micros: AtomicU64,
    in_flight: AtomicU64,
    open: AtomicU64,
    accepted: AtomicU64,
    accept_errors: AtomicU64,
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
    self_served: AtomicU64,
    self_refused: AtomicU64,
}

/// Where a server counts: its own counters, or a block outside it (process mode: in the memory
/// shared with the pre-fork master, so that any worker process can show the whole server).
///
/// One per server, inside its shared hand-off: the own counters stay inline (no pointer to follow
/// on the hot path), however large beside the shared variant.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)]
pub(crate) enum CounterStore {
    Own(HttpCounters),
    Shared(&'static HttpCounters),
}

impl std::ops::Deref for CounterStore {
    type Target = HttpCounters;

    #[inline]
    fn deref(&self) -> &HttpCounters {
        match self {
            CounterStore::Own(c) => c,
            CounterStore::Shared(c) => c,
        }
    }
}

impl HttpCounters {
    /// Every counter (not the gauges) with its counterpart in `other`, for folding and summing.
    fn counters_with<'a>(
        &'a self,
        other: &'a HttpCounters,
    ) -> impl Iterator<Item = (&'a AtomicU64, &'a AtomicU64)> {
        let flat = |c: &'a HttpCounters| {
            c.requests
                .iter()
                .flatten()
                .chain(&c.own)
                .chain(&c.buckets)
                .chain([
                    &c.own_other,
                    &c.duration_micros,
                    &c.accepted,
                    &c.accept_errors,
                    &c.bytes_in,
                    &c.bytes_out,
                    &c.self_served,
                    &c.self_refused,
                ])
        };
        flat(self).zip(flat(other))
    }

    /// Adds this block's counters into `into` and zeroes this block (gauges too). Only for a block
    /// nobody writes any more (a reaped worker's).
    #[cfg_attr(not(feature = "prefork"), allow(dead_code))]
    pub(crate) fn fold_into(&self, into: &HttpCounters) {
        for (mine, total) in self.counters_with(into) {
            total.fetch_add(mine.swap(0, Relaxed), Relaxed);
        }
        self.in_flight.store(0, Relaxed);
        self.open.store(0, Relaxed);
    }

    /// Adds `other`'s counters and gauges to this block (a private sum for a snapshot).
    #[cfg_attr(not(feature = "prefork"), allow(dead_code))]
    pub(crate) fn add(&self, other: &HttpCounters) {
        for (mine, theirs) in self.counters_with(other) {
            mine.fetch_add(theirs.load(Relaxed), Relaxed);
        }
        self.in_flight
            .fetch_add(other.in_flight.load(Relaxed), Relaxed);
        self.open.fetch_add(other.open.load(Relaxed), Relaxed);
    }

    /// Requests answered, requests in flight and connections open: one worker process's share,
    /// for process mode's per-worker series.
    #[cfg_attr(not(feature = "prefork"), allow(dead_code))]
    pub(crate) fn per_process(&self) -> (u64, u64, u64) {
        let requests = self.requests.iter().flatten().map(|a| a.load(Relaxed));
        (
            requests.sum(),
            self.in_flight.load(Relaxed),
            self.open.load(Relaxed),
        )
    }

    /// A request was handed on (to the pool, a spare thread or the server's own routes).
    #[inline]
    pub(crate) fn started(&self) {
        self.in_flight.fetch_add(1, Relaxed);
    }

    /// A request handed on was answered with `status`, `bytes` long, after `took`.
    #[inline]
    pub(crate) fn answered(&self, method: u8, status: u16, bytes: usize, took: Duration) {
        self.in_flight.fetch_sub(1, Relaxed);
        let class = (status / 100).clamp(1, 5) as usize - 1;
        self.requests[method as usize & 7][class].fetch_add(1, Relaxed);
        let micros = took.as_micros().min(u64::MAX as u128) as u64;
        let b = BUCKET_MICROS.partition_point(|&le| le < micros);
        self.buckets[b].fetch_add(1, Relaxed);
        self.duration_micros.fetch_add(micros, Relaxed);
        self.bytes_out.fetch_add(bytes as u64, Relaxed);
    }

    /// The server answered `status` on its own (a refusal, a pool error, a self-call refused).
    #[inline]
    pub(crate) fn own_answer(&self, status: u16) {
        match OWN_STATUSES.iter().position(|&s| s == status) {
            Some(i) => self.own[i].fetch_add(1, Relaxed),
            None => self.own_other.fetch_add(1, Relaxed),
        };
    }

    /// Bytes read from clients.
    #[inline]
    pub(crate) fn read(&self, n: usize) {
        self.bytes_in.fetch_add(n as u64, Relaxed);
    }

    /// Bytes written by the reactor outside an answer handed on (a refusal, `100 Continue`).
    #[inline]
    pub(crate) fn wrote(&self, n: usize) {
        self.bytes_out.fetch_add(n as u64, Relaxed);
    }

    /// A connection was accepted (and is open).
    #[inline]
    pub(crate) fn opened(&self) {
        self.accepted.fetch_add(1, Relaxed);
        self.open.fetch_add(1, Relaxed);
    }

    /// Connections accepted so far (a count that only grows): what a process-mode accept gate
    /// reads of its siblings.
    #[cfg_attr(not(feature = "prefork"), allow(dead_code))]
    #[inline]
    pub(crate) fn accepted(&self) -> u64 {
        self.accepted.load(Relaxed)
    }

    /// A connection was closed.
    #[inline]
    pub(crate) fn closed(&self) {
        self.open.fetch_sub(1, Relaxed);
    }

    /// An `accept` failed.
    #[inline]
    pub(crate) fn accept_error(&self) {
        self.accept_errors.fetch_add(1, Relaxed);
    }

    /// A self-call was served on a spare thread (`served`), or refused (503).
    pub(crate) fn self_call(&self, served: bool) {
        match served {
            true => self.self_served.fetch_add(1, Relaxed),
            false => self.self_refused.fetch_add(1, Relaxed),
        };
    }

    /// A self-call counted served could not be (no spare thread started): counted refused.
    pub(crate) fn self_call_not_served(&self) {
        self.self_served.fetch_sub(1, Relaxed);
    }

    /// The snapshot.
    pub(crate) fn snapshot(&self) -> ServerMetrics {
        let get = |a: &AtomicU64| a.load(Relaxed);
        let mut buckets = [0u64; 13];
        let mut cumulative = 0;
        for (i, b) in self.buckets.iter().enumerate() {
            cumulative += get(b);
            buckets[i] = cumulative;
        }
        ServerMetrics {
            requests: self.requests.each_ref().map(|row| row.each_ref().map(get)),
            own_answers: self.own.each_ref().map(get),
            own_answers_other: get(&self.own_other),
            duration_buckets: buckets,
            duration_sum: Duration::from_micros(get(&self.duration_micros)),
            in_flight: get(&self.in_flight),
            open_connections: get(&self.open),
            accepted_connections: get(&self.accepted),
            accept_errors: get(&self.accept_errors),
            self_calls_served: get(&self.self_served),
            self_calls_refused: get(&self.self_refused),
            bytes_in: get(&self.bytes_in),
            bytes_out: get(&self.bytes_out),
        }
    }
}

/// A snapshot of a server's HTTP counters, from
/// [`ServerHandle::metrics`](crate::http::ServerHandle::metrics); add it to a
/// [`MetricsPage`](crate::MetricsPage) with [`MetricsPage::server`](crate::MetricsPage::server).
///
/// Requests are counted when they are answered (by the handler, or by the server for a request
/// it read whole: 503, 504, 508); requests refused before they were read whole (400, 408, 413,
/// 414, 431) are counted in [`own_answers`](Self::own_answers) only.
///
/// ```
/// use prefork_pool::http::Server;
/// use std::io::{Read, Write};
///
/// let server = Server::builder()
///     .bind("127.0.0.1:0")
///     .serve(|_req, _ctx| "hi")
///     .unwrap();
/// let mut s = std::net::TcpStream::connect(server.local_addrs()[0]).unwrap();
/// s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
/// s.read_to_end(&mut Vec::new()).unwrap();
/// let m = server.metrics();
/// assert_eq!(m.requests_with("GET", 2), 1);
/// assert_eq!(m.accepted_connections, 1);
/// server.shutdown(std::time::Duration::from_secs(5));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ServerMetrics {
    /// Requests answered, by method (as [`METHODS`]) and status class (`[0]` is 1xx ... `[4]`
    /// is 5xx).
    pub requests: [[u64; 5]; 8],
    /// Answers the server made on its own, by status (as [`OWN_STATUSES`]).
    pub own_answers: [u64; 8],
    /// Answers the server made on its own with a status not in [`OWN_STATUSES`] (a 500).
    pub own_answers_other: u64,
    /// Requests answered within each of [`DURATION_BUCKETS`] (cumulative; the last is `+Inf`,
    /// every request).
    pub duration_buckets: [u64; 13],
    /// The sum of the requests' durations.
    pub duration_sum: Duration,
    /// Requests being handled now.
    pub in_flight: u64,
    /// Connections open now.
    pub open_connections: u64,
    /// Connections accepted.
    pub accepted_connections: u64,
    /// `accept` calls that failed.
    pub accept_errors: u64,
    /// Self-calls served on a spare thread.
    pub self_calls_served: u64,
    /// Self-calls refused (503) because every spare thread was taken.
    pub self_calls_refused: u64,
    /// Bytes read from clients.
    pub bytes_in: u64,
    /// Bytes written to clients.
    pub bytes_out: u64,
}

impl ServerMetrics {
    /// Requests with `method` (as in [`METHODS`]; unknown: `other`) answered with a status of
    /// `class` (1..=5: 1xx..5xx).
    pub fn requests_with(&self, method: &str, class: u16) -> u64 {
        let m = METHODS.iter().position(|&x| x == method).unwrap_or(7);
        let c = (class.clamp(1, 5) - 1) as usize;
        self.requests[m][c]
    }

    /// Every request answered.
    pub fn requests_total(&self) -> u64 {
        self.requests.iter().flatten().sum()
    }

    /// Answers the server made on its own with `status`.
    pub fn own_answers_with(&self, status: u16) -> u64 {
        OWN_STATUSES
            .iter()
            .position(|&s| s == status)
            .map_or(self.own_answers_other, |i| self.own_answers[i])
    }
}

const REQUESTS: (&str, Kind, &str) = (
    "http_requests_total",
    Kind::Counter,
    "HTTP requests answered, by method and status class.",
);
const OWN: (&str, Kind, &str) = (
    "http_server_answers_total",
    Kind::Counter,
    "Answers the server made on its own (refusals, overload, deadline, loop), by status.",
);
const DURATION: (&str, Kind, &str) = (
    "http_request_duration_seconds",
    Kind::Histogram,
    "Time from a request read whole to its answer serialised.",
);

impl MetricsPage {
    /// Add a server's HTTP metrics, labelled `server="<name>"`.
    pub fn server(&mut self, name: &str, m: &ServerMetrics) -> &mut Self {
        let server = format!("server=\"{}\"", escape(name));
        for (mi, row) in m.requests.iter().enumerate() {
            for (ci, n) in row.iter().enumerate() {
                let labels = format!("{server},method=\"{}\",class=\"{}xx\"", METHODS[mi], ci + 1);
                self.sample(REQUESTS, "", &labels, n);
            }
        }
        for (i, n) in m.own_answers.iter().enumerate() {
            let labels = format!("{server},status=\"{}\"", OWN_STATUSES[i]);
            self.sample(OWN, "", &labels, n);
        }
        let labels = format!("{server},status=\"other\"");
        self.sample(OWN, "", &labels, m.own_answers_other);
        for (i, n) in m.duration_buckets.iter().enumerate() {
            let le = DURATION_BUCKETS
                .get(i)
                .map_or("+Inf".to_string(), |b| b.to_string());
            let labels = format!("{server},le=\"{le}\"");
            self.sample(DURATION, "_bucket", &labels, n);
        }
        self.sample(DURATION, "_sum", &server, m.duration_sum.as_secs_f64());
        self.sample(DURATION, "_count", &server, m.duration_buckets[12]);
        let gauges: [(&str, u64, &'static str); 2] = [
            (
                "http_requests_in_flight",
                m.in_flight,
                "Requests being handled now.",
            ),
            (
                "http_open_connections",
                m.open_connections,
                "Connections open now.",
            ),
        ];
        for (name, v, help) in gauges {
            self.sample((name, Kind::Gauge, help), "", &server, v);
        }
        let counters: [(&str, u64, &'static str); 4] = [
            (
                "http_accepted_connections_total",
                m.accepted_connections,
                "Connections accepted.",
            ),
            (
                "http_accept_errors_total",
                m.accept_errors,
                "accept() calls that failed.",
            ),
            (
                "http_received_bytes_total",
                m.bytes_in,
                "Bytes read from clients.",
            ),
            (
                "http_sent_bytes_total",
                m.bytes_out,
                "Bytes written to clients.",
            ),
        ];
        for (name, v, help) in counters {
            self.sample((name, Kind::Counter, help), "", &server, v);
        }
        let selfcalls = (
            "http_self_calls_total",
            Kind::Counter,
            "Requests this process (or a sibling) sent itself while every worker was busy.",
        );
        for (result, n) in [
            ("served", m.self_calls_served),
            ("refused", m.self_calls_refused),
        ] {
            let labels = format!("{server},result=\"{result}\"");
            self.sample(selfcalls, "", &labels, n);
        }
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_fall_in_their_bucket_and_buckets_are_cumulative() {
        let c = HttpCounters::default();
        for ms in [0, 1, 3, 20_000] {
            c.started();
            c.answered(0, 200, 10, Duration::from_millis(ms));
        }
        let m = c.snapshot();
        assert_eq!(m.duration_buckets[0], 2, "0 ms and 1 ms are <= 1 ms");
        assert_eq!(m.duration_buckets[2], 3, "3 ms is <= 5 ms");
        assert_eq!(m.duration_buckets[11], 3, "20 s is above 10 s");
        assert_eq!(m.duration_buckets[12], 4);
        assert_eq!(m.in_flight, 0);
        assert_eq!(m.requests_with("GET", 2), 4);
        assert_eq!(m.bytes_out, 40);
    }

    /// Process mode sums the workers' blocks and folds a reaped worker's into retired totals:
    /// the self-call counts go with the rest (they were kept outside the block before, and the
    /// whole server's page said 0).
    #[test]
    fn self_calls_are_counted_in_the_block_and_fold_and_sum_with_it() {
        let worker = HttpCounters::default();
        worker.self_call(true);
        worker.self_call(true);
        worker.self_call(false);
        let retired = HttpCounters::default();
        worker.fold_into(&retired);
        assert_eq!(
            worker.snapshot().self_calls_served,
            0,
            "the reaped block is zeroed"
        );
        worker.self_call(true);
        let total = HttpCounters::default();
        total.add(&retired);
        total.add(&worker);
        let m = total.snapshot();
        assert_eq!((m.self_calls_served, m.self_calls_refused), (3, 1));
    }
}
