//! The listening side of the reactor: [`Acceptor`] (a listener as the reactor accepts on it), which
//! accept errors concern one connection only, and the [`AcceptPolicy`] that process mode puts in front
//! of `accept` to balance connections between the worker processes.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsRawFd, RawFd};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::http::engine::io::{Stream, TcpAddrs};

/// With an [`AcceptPolicy`]: the most connections taken per wake-up (the listener is level-triggered
/// then, so the rest wake this process, or a sibling, again).
pub(in crate::http) const ACCEPT_BATCH: usize = 16;
/// With an [`AcceptPolicy`] that said no: how often the reactor asks it again, for the changes its
/// wake fd does not signal (or without one).
pub(crate) const GATE_RECHECK: Duration = Duration::from_millis(5);
/// With an [`AcceptPolicy`] that says no: how long connections may wait in a TCP listener's queue
/// before this process takes one anyway. The gates agree on a taker, but that process may not
/// accept (stopped, or its reactor stalled): a connection is delayed, never stranded.
pub(crate) const QUEUE_STALL: Duration = Duration::from_millis(250);

/// The accept policy: in process mode, whether this process takes new connections now (and how
/// many requests a kept-alive connection may carry: the keep-alive cap). The worker processes share
/// one listen socket; each asks its gate before every `accept` (and on every loop pass), and
/// stops polling the listener while the gate says no, leaving the connections to its siblings.
/// The pre-fork supervisor's gate balances open connections between the processes that have an
/// idle handler thread (see `prefork/balance.rs`). Without a gate (thread mode, one process) the
/// reactor accepts everything that is queued.
pub(crate) trait AcceptPolicy: Send + Sync {
    /// With `conns` connections open in this process: publishes that number to the siblings (one
    /// more when it says yes: the connection about to be accepted) and says whether to accept one
    /// more now.
    fn may_accept(&self, conns: usize) -> bool;
    /// This process accepts no more connections (it drains): the siblings stop counting it.
    fn closed(&self);
    /// A connection closed, `conns` are left open: published at once (connections close on the
    /// worker threads, while the reactor that asks [`may_accept`](Self::may_accept) may sleep).
    fn conn_closed(&self, _conns: usize) {}
    /// The most requests one connection is kept alive for (the last answer says
    /// `Connection: close`), so that clients reconnect now and then and the gate can move load
    /// from one process to another. `None`: no limit.
    fn keepalive_requests(&self) -> Option<u64> {
        None
    }
    /// Connections accepted so far by every process that shares the listener (a count that only
    /// grows; `0` when unknown). While this process's gate says no, a queue that other processes
    /// keep taking from is not stalled however long it stays non-empty (see [`StallClock`]).
    fn accepted_everywhere(&self) -> u64 {
        0
    }
    /// An fd the reactor polls (edge-triggered) for as long as it serves: it becomes readable
    /// when a sibling's change may let this process accept, and the reactor then asks the gate
    /// again at once. The reactor never reads it. `None`: the reactor asks again every
    /// [`GATE_RECHECK`] only.
    fn wake_fd(&self) -> Option<RawFd> {
        None
    }
}

/// While the gate says no: whether a listener's queue is stalled, i.e. connections have waited in
/// it for [`QUEUE_STALL`] with no process accepting any meanwhile (the process the gates pick does
/// not accept: stopped, or its reactor not scheduled); this process then takes one. A queue that
/// is non-empty at every look only because connections keep coming, and siblings keep taking
/// them, is not stalled: without that rule a process whose every thread is busy took a connection
/// from steady traffic every 250 ms, and it waited there behind the busy threads.
#[derive(Debug, Default)]
pub(crate) struct StallClock {
    /// Since when the queue has waited, and the accepted count seen then.
    since: Option<(Instant, u64)>,
}

impl StallClock {
    /// A look at the queue while the gate says no: `queued` whether connections wait, `accepted`
    /// the gate's [`accepted_everywhere`](AcceptPolicy::accepted_everywhere) (asked only when
    /// connections wait). True when this process should take one connection now (the clock
    /// starts again).
    pub(crate) fn stalled(
        &mut self,
        queued: bool,
        accepted: impl FnOnce() -> u64,
        now: Instant,
    ) -> bool {
        if !queued {
            self.since = None;
            return false;
        }
        let accepted = accepted();
        match self.since {
            Some((t, seen)) if seen == accepted => {
                if now.duration_since(t) >= QUEUE_STALL {
                    self.since = None;
                    return true;
                }
            }
            _ => self.since = Some((now, accepted)),
        }
        false
    }

    /// This process accepts again (its gate said yes): nothing waits on its account.
    pub(crate) fn reset(&mut self) {
        self.since = None;
    }
}

/// Whether connections wait in the accept queue of the TCP listener `fd` (the reactor's, and the
/// tower mode's accept loop).
pub(crate) fn tcp_queued(fd: RawFd) -> bool {
    // SAFETY: an all-zero `tcp_info` is valid (plain integers).
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    // SAFETY: getsockopt(2) TCP_INFO on the caller's open listener fd, writing at most `len` bytes
    // into `info` on the stack. For a listening socket, `tcpi_unacked` is its accept queue.
    let r = unsafe {
        libc::getsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&mut info as *mut libc::tcp_info).cast(),
            &mut len,
        )
    };
    r == 0 && info.tcpi_unacked > 0
}

/// A listening socket, as the reactor accepts on it.
#[derive(Debug)]
pub(crate) enum Acceptor {
    /// With the address every connection it accepts is made to, when that is known without
    /// asking (a listener bound to one address: see [`Acceptor::tcp`]).
    Tcp(mio::net::TcpListener, Option<SocketAddr>),
    /// With the path to remove when the server stops (only for sockets the server bound itself).
    #[cfg(unix)]
    Unix(mio::net::UnixListener, Option<PathBuf>),
}

impl Acceptor {
    /// A TCP listener (non-blocking already). A connection's own address (`TcpEnds`, the
    /// self-call lookup) is the listener's when it is bound to one address, so `getsockname` is
    /// asked for it only behind a wildcard (`0.0.0.0`, `::`) or a scoped IPv6 address: one system
    /// call less per connection.
    pub(in crate::http) fn tcp(l: std::net::TcpListener) -> Acceptor {
        let fixed = l.local_addr().ok().filter(|a| {
            !a.ip().is_unspecified()
                && match a {
                    SocketAddr::V4(_) => true,
                    SocketAddr::V6(v6) => v6.scope_id() == 0,
                }
        });
        Acceptor::Tcp(mio::net::TcpListener::from_std(l), fixed)
    }

    pub(in crate::http) fn raw_fd(&self) -> RawFd {
        match self {
            Acceptor::Tcp(l, _) => l.as_raw_fd(),
            #[cfg(unix)]
            Acceptor::Unix(l, _) => l.as_raw_fd(),
        }
    }

    pub(in crate::http) fn accept(&self) -> io::Result<(Stream, Arc<str>, TcpAddrs)> {
        match self {
            Acceptor::Tcp(l, fixed) => l.accept().map(|(s, a)| {
                let _ = s.set_nodelay(true);
                let local = fixed
                    .or_else(|| s.local_addr().ok())
                    .map(|local| (a, local));
                (Stream::Tcp(s.into()), peer_text(a.ip()), local)
            }),
            #[cfg(unix)]
            Acceptor::Unix(l, _) => l
                .accept()
                .map(|(s, _)| (Stream::Unix(s.into()), Arc::from("unix"), None)),
        }
    }

    /// Whether connections wait in this TCP listener's accept queue (`false` for a Unix socket).
    pub(in crate::http) fn queued(&self) -> bool {
        match self {
            Acceptor::Tcp(l, _) => tcp_queued(l.as_raw_fd()),
            #[allow(unreachable_patterns)]
            _ => false,
        }
    }

    pub(in crate::http) fn close(self) {
        #[cfg(unix)]
        if let Acceptor::Unix(_, Some(path)) = &self {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// The peer's address as the logs and handlers see it (`IpAddr`'s `Display`), made without the
/// formatting machinery and an intermediate `String` for IPv4, the common case: it is on every
/// accept.
fn peer_text(ip: IpAddr) -> Arc<str> {
    let IpAddr::V4(v4) = ip else {
        return Arc::from(ip.to_string());
    };
    let mut text = [0u8; 15];
    let mut len = 0;
    for (i, octet) in v4.octets().into_iter().enumerate() {
        if i > 0 {
            text[len] = b'.';
            len += 1;
        }
        if octet >= 100 {
            text[len] = b'0' + octet / 100;
            len += 1;
        }
        if octet >= 10 {
            text[len] = b'0' + octet / 10 % 10;
            len += 1;
        }
        text[len] = b'0' + octet % 10;
        len += 1;
    }
    Arc::from(std::str::from_utf8(&text[..len]).unwrap_or("?"))
}

/// Accept errors that concern one connection only: skip it and accept the next.
pub(in crate::http) fn is_transient(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::Interrupted
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    ) || matches!(e.raw_os_error(), Some(libc::EPROTO) | Some(libc::EPERM))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    #[test]
    fn the_peer_reads_as_its_display() {
        let mut ips: Vec<IpAddr> = [
            [0, 0, 0, 0],
            [127, 0, 0, 1],
            [10, 9, 99, 100],
            [255, 255, 255, 255],
            [192, 168, 1, 20],
        ]
        .into_iter()
        .map(|o| IpAddr::V4(Ipv4Addr::from(o)))
        .collect();
        ips.extend((0..=255u8).map(|b| IpAddr::V4(Ipv4Addr::new(b, b / 3, 255 - b, 0))));
        ips.push(IpAddr::V6(Ipv6Addr::LOCALHOST));
        ips.push(IpAddr::V6(Ipv4Addr::new(1, 2, 3, 4).to_ipv6_mapped()));
        for ip in ips {
            assert_eq!(&*peer_text(ip), ip.to_string());
        }
    }

    #[test]
    fn a_queue_counts_as_stalled_only_when_nobody_accepted_for_queue_stall() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let step = GATE_RECHECK.as_millis() as u64;
        let looks = QUEUE_STALL.as_millis() as u64 * 4 / step;

        // Steady traffic the siblings take: the queue is non-empty at every look, but the
        // accepted count moves between looks. Never stalled.
        let mut clock = StallClock::default();
        for i in 0..looks {
            assert!(!clock.stalled(true, || i, at(i * step)), "look {i}");
        }

        // Nobody accepts: stalled once QUEUE_STALL has passed since the first look, then the
        // clock starts again.
        let mut clock = StallClock::default();
        let mut first = None;
        for i in 0..looks {
            if clock.stalled(true, || 7, at(i * step)) {
                first = Some(i * step);
                break;
            }
        }
        let first = first.expect("a queue nobody takes from stalls");
        assert!(
            first >= QUEUE_STALL.as_millis() as u64,
            "stalled after {first} ms"
        );
        assert!(
            !clock.stalled(true, || 7, at(first + step)),
            "the clock starts again"
        );

        // An empty queue at one look starts the wait again.
        let mut clock = StallClock::default();
        assert!(!clock.stalled(true, || 1, at(0)));
        assert!(!clock.stalled(false, || 1, at(QUEUE_STALL.as_millis() as u64 - step)));
        assert!(!clock.stalled(true, || 1, at(QUEUE_STALL.as_millis() as u64)));
        let late = 2 * QUEUE_STALL.as_millis() as u64;
        assert!(clock.stalled(true, || 1, at(late)));

        // Without a count (a gate that does not know it: 0 always) the old rule holds.
        let mut clock = StallClock::default();
        assert!(!clock.stalled(true, || 0, at(0)));
        assert!(clock.stalled(true, || 0, at(QUEUE_STALL.as_millis() as u64)));
    }
}
