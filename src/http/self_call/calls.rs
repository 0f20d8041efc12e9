//! Self-calls: requests that this process (or a sibling worker process) sent to its own server
//! over TCP or a Unix socket, from a handler that calls its own server with an ordinary HTTP
//! client instead of [`Loopback`](crate::http::Loopback); how they are detected, counted and logged.
//!
//! Such a request would wait in the queue for a worker while every worker waits for it: a
//! deadlock, until the deadline. On the slow path only (the pool has no idle worker, the
//! client is on this host: a loopback address or our own local address, or a Unix socket), the
//! server finds out which process holds the client's socket, once per connection (the answer is
//! kept for the connection's next requests). TCP: on the lookup thread (`owner_lookup.rs`), never
//! on the reactor, an exact `sock_diag` query gives the socket's inode and uid, and this process's
//! descriptors other than the server's own are searched for it (`peer_owner/`); only where that
//! cannot tell (not Linux, netlink refused), `/proc/self/net/tcp{,6}` gives the inode and
//! `/proc/self/fd` is searched ([`tcp_caller`]). Unix socket: the `SO_PEERCRED` pid, on the
//! thread that read the request (one system call). A request found to come from this process is run at once on a
//! spare thread (`Pool::call_here`), at most `max_spare` at a time; beyond, it is answered 503 at
//! once. The first such request of each route is logged at `warn`: which worker waits on which
//! request, that it would have deadlocked, and the fix (the `Loopback`, or an asynchronous call).
//!
//! In process mode the same holds for a request from a sibling worker process (the other workers
//! of the same supervisor, whose pids `ServerBuilder::sibling_pids` gives): with every thread of
//! both processes calling the other's, each waits for the other. For TCP their `/proc/<pid>/fd`
//! are searched too (same user, so readable; a directory that cannot be read counts as not a
//! self-call).
//!
//! A load generator running in the same process as the server (a test, a bench) looks exactly like
//! a self-call; set `max_spare(0)` there.

use std::collections::HashSet;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::RawFd;
use std::sync::Arc;

use parking_lot::Mutex;

use crate::http::ops::stuck::BusyWorker;

/// Requests this process (or, in process mode, a sibling worker process) sent to its own server
/// over TCP or a Unix socket while every worker was busy, from
/// [`ServerHandle::self_calls`](crate::http::ServerHandle::self_calls).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SelfCalls {
    /// Served at once on a spare thread.
    pub served: u64,
    /// Answered 503 because all [`max_spare`](crate::http::ServerBuilder::max_spare) spare
    /// threads were taken, and none was free within a second.
    pub refused: u64,
    /// Connections whose client was looked up to tell whether it is this process: on the slow
    /// path only (no idle worker, a client on this host), at most once per connection.
    pub lookups: u64,
}

/// For the warning: the worker that waits on a self-call (with one busy worker, that one; with
/// more, one of them).
fn who_waits(busy: &[BusyWorker]) -> String {
    let one = |b: &BusyWorker| {
        format!(
            "worker {} (running `{}` for {:.2}s)",
            b.worker,
            b.request_line,
            b.running.as_secs_f64()
        )
    };
    match busy {
        [] => "a busy worker is waiting".to_string(),
        [b] => format!("{} is waiting", one(b)),
        many => format!(
            "one of the busy workers ({}) is waiting",
            many.iter().map(one).collect::<Vec<_>>().join(", ")
        ),
    }
}

/// For the warning about a sibling's call: what each busy worker here runs.
fn busy_here(busy: &[BusyWorker]) -> String {
    if busy.is_empty() {
        return "every worker".to_string();
    }
    busy.iter()
        .map(|b| {
            format!(
                "worker {} running `{}` for {:.2}s",
                b.worker,
                b.request_line,
                b.running.as_secs_f64()
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Routes already logged as self-called.
#[derive(Debug, Default)]
pub(crate) struct Warned(Mutex<HashSet<String>>);

impl Warned {
    /// True the first time `route` is seen.
    pub(crate) fn first(&self, route: &str) -> bool {
        let mut set = self.0.lock();
        if set.contains(route) {
            return false;
        }
        set.insert(route.to_string())
    }
}

/// Where a request the slow path checked came from: this process, or a sibling worker process
/// (the other workers of the same pre-fork supervisor, from
/// [`ServerBuilder::sibling_pids`](crate::http::ServerBuilder::sibling_pids)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Caller {
    /// `None`: this process; `Some(pid)`: the sibling worker process `pid`.
    pub sibling: Option<u32>,
    /// The transport, for the log: `TCP` or `a Unix socket`.
    pub via: &'static str,
}

impl Caller {
    /// Who sent it, for the log.
    fn who(&self) -> String {
        match self.sibling {
            None => "this process itself".to_string(),
            Some(pid) => {
                format!("sibling worker pid {pid} (a worker process of the same supervisor)")
            }
        }
    }
}

/// What to fix: a handler calls its own server with an HTTP client.
const FIX: &str = "Fix: call the handler through the `Loopback` in the request's extensions \
                   (`req.extensions().get::<prefork_pool::http::Loopback>()`), or make the \
                   call asynchronous (do not wait for its answer in the handler)";

/// The `warn` line for the first self-call of a route served on a spare thread: who waits on it,
/// that it would have deadlocked, and the fix.
pub(crate) struct SelfCallServed<'a> {
    /// `METHOD /path`.
    pub route: &'a str,
    pub caller: Caller,
    /// The pool's name.
    pub pool: &'a str,
    pub max_spare: usize,
    /// The workers busy now.
    pub busy: &'a [BusyWorker],
}

impl fmt::Display for SelfCallServed<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Self {
            route,
            caller,
            pool,
            max_spare,
            busy,
        } = self;
        let via = caller.via;
        match caller.sibling {
            None => write!(
                f,
                "self-call over {via}: {} on `{route}`, which it sent to its own server \
                 (pool `{pool}`) with an HTTP client while every worker was busy; it would have \
                 deadlocked (the request waits in the queue for a worker that waits for it, \
                 until the deadline). Served on a spare thread (`max_spare` = {max_spare}). {FIX}",
                who_waits(busy),
            ),
            Some(pid) => write!(
                f,
                "self-call over {via} from sibling worker pid {pid} (a worker process of the same \
                 supervisor): a handler there is waiting on `{route}`, which it sent to its \
                 own service with an HTTP client, and it reached this process (pid {}, pool \
                 `{pool}`) while every worker here was busy ({}); with the workers of both \
                 processes waiting on each other's calls it would have deadlocked (each \
                 request waits in a queue for a worker that waits for it, until the deadline). \
                 Served on a spare thread (`max_spare` = {max_spare}). {FIX}",
                std::process::id(),
                busy_here(busy),
            ),
        }
    }
}

/// The `warn` line for the first self-call of a route refused (503) because every spare thread was
/// taken, with the fix.
pub(crate) struct SelfCallRefused<'a> {
    /// `METHOD /path`.
    pub route: &'a str,
    pub caller: Caller,
    /// The pool's name.
    pub pool: &'a str,
    pub max_spare: usize,
    /// How long it waited for a spare thread.
    pub waited: std::time::Duration,
}

impl fmt::Display for SelfCallRefused<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "`{}` was requested over {} by {} while every worker of pool `{}` and all {} \
             spare thread(s) (`max_spare`) were busy, and none was free within {:?}: answered \
             503 instead of waiting for a worker that waits for it (a chain of calls to the \
             service deeper than `max_spare`, or a runaway recursion). Fix: call the handler \
             through the `Loopback` in the request's extensions, or make the call asynchronous",
            self.route,
            self.caller.via,
            self.caller.who(),
            self.pool,
            self.max_spare,
            self.waited
        )
    }
}

/// The pids of the processes whose requests count as self-calls besides this one: the sibling
/// worker processes of a pre-fork supervisor.
#[derive(Clone)]
pub(crate) struct SiblingPids(pub(crate) Arc<dyn Fn() -> Vec<u32> + Send + Sync>);

impl fmt::Debug for SiblingPids {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SiblingPids(..)")
    }
}

/// The sibling pids to search, without this process's own.
pub(crate) fn sibling_pids(siblings: Option<&SiblingPids>) -> Vec<u32> {
    let own = std::process::id();
    let mut pids = siblings.map_or_else(Vec::new, |s| (s.0)());
    pids.retain(|p| *p != own && *p != 0);
    pids.sort_unstable();
    pids.dedup();
    pids
}

/// Which process holds the TCP client socket at `peer` (connected to our `local`): this one
/// (`/proc/self/fd`), one of `siblings` (`/proc/<pid>/fd`; a directory that cannot be read counts
/// as not holding it), or none of them.
pub(crate) fn tcp_caller(
    peer: SocketAddr,
    local: SocketAddr,
    siblings: Option<&SiblingPids>,
) -> Option<Caller> {
    let inode = socket_inode(peer, local)?;
    let want = format!("socket:[{inode}]");
    let caller = |sibling| {
        Some(Caller {
            sibling,
            via: "TCP",
        })
    };
    if holds_socket("/proc/self/fd", &want) {
        return caller(None);
    }
    sibling_pids(siblings)
        .into_iter()
        .find(|pid| holds_socket(&format!("/proc/{pid}/fd"), &want))
        .and_then(|pid| caller(Some(pid)))
}

/// The inode of the socket at `peer` connected to `local`, from this network namespace's socket
/// table (`/proc/self/net/tcp{,6}` lists the sockets of every process in it).
fn socket_inode(peer: SocketAddr, local: SocketAddr) -> Option<String> {
    let table = if peer.is_ipv4() {
        "/proc/self/net/tcp"
    } else {
        "/proc/self/net/tcp6"
    };
    let text = std::fs::read_to_string(table).ok()?;
    text.lines().skip(1).find_map(|line| {
        let mut f = line.split_whitespace();
        let (_sl, l, r) = (f.next()?, f.next()?, f.next()?);
        if parse_addr(l)? != peer || parse_addr(r)? != local {
            return None;
        }
        f.nth(6).map(str::to_string)
    })
}

/// Whether one of the descriptors listed in `dir` (a `/proc/<pid>/fd`) is the socket `want`.
fn holds_socket(dir: &str, want: &str) -> bool {
    let Ok(dir) = std::fs::read_dir(dir) else {
        return false;
    };
    dir.flatten().any(|e| {
        std::fs::read_link(e.path())
            .map(|t| t.as_os_str() == want)
            .unwrap_or(false)
    })
}

/// Which process connected the Unix socket `fd` (its `SO_PEERCRED` pid, taken at `connect`): this
/// one, one of `siblings`, or none of them.
pub(crate) fn unix_caller(fd: RawFd, siblings: Option<&SiblingPids>) -> Option<Caller> {
    let pid = peer_pid(fd)?;
    let caller = |sibling| {
        Some(Caller {
            sibling,
            via: "a Unix socket",
        })
    };
    if pid == std::process::id() {
        return caller(None);
    }
    if sibling_pids(siblings).contains(&pid) {
        return caller(Some(pid));
    }
    None
}

/// The pid of the process that connected the Unix socket `fd` (`SO_PEERCRED`).
#[cfg(any(target_os = "linux", target_os = "android"))]
fn peer_pid(fd: RawFd) -> Option<u32> {
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: getsockopt(2) SO_PEERCRED writes at most `len` bytes (the size of a `ucred`) into
    // `cred`, a live local, and the new length into `len`; `fd` is a socket the caller owns (an
    // invalid one only makes the call fail with EBADF/ENOTSOCK).
    let r = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    if r != 0 || len as usize != std::mem::size_of::<libc::ucred>() || cred.pid <= 0 {
        return None;
    }
    Some(cred.pid as u32)
}

/// Not available here: no Unix peer is taken for a self-call.
#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn peer_pid(_fd: RawFd) -> Option<u32> {
    None
}

/// `0100007F:1F90` (IPv4) or 32 hex digits + port (IPv6), as the kernel prints them.
fn parse_addr(s: &str) -> Option<SocketAddr> {
    let (ip, port) = s.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let ip = match ip.len() {
        8 => IpAddr::V4(Ipv4Addr::from(
            u32::from_str_radix(ip, 16).ok()?.to_le_bytes(),
        )),
        32 => {
            let mut b = [0u8; 16];
            for i in 0..4 {
                let w = u32::from_str_radix(&ip[i * 8..i * 8 + 8], 16).ok()?;
                b[i * 4..i * 4 + 4].copy_from_slice(&w.to_le_bytes());
            }
            IpAddr::V6(Ipv6Addr::from(b))
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_kernel_addresses() {
        assert_eq!(
            parse_addr("0100007F:1F90"),
            Some("127.0.0.1:8080".parse().unwrap())
        );
        assert_eq!(
            parse_addr("00000000000000000000000001000000:0050"),
            Some("[::1]:80".parse().unwrap())
        );
    }

    #[test]
    fn finds_own_sockets() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let c = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (_s, peer) = l.accept().unwrap();
        assert_eq!(peer, c.local_addr().unwrap());
        let own = Some(Caller {
            sibling: None,
            via: "TCP",
        });
        assert_eq!(tcp_caller(peer, l.local_addr().unwrap(), None), own);
        assert_eq!(
            tcp_caller(
                "127.0.0.1:1".parse().unwrap(),
                l.local_addr().unwrap(),
                None
            ),
            None
        );
    }

    #[test]
    fn finds_the_pid_of_a_unix_peer() {
        use std::os::fd::AsRawFd;
        let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
        let own = Some(Caller {
            sibling: None,
            via: "a Unix socket",
        });
        assert_eq!(unix_caller(a.as_raw_fd(), None), own);
        assert_eq!(unix_caller(b.as_raw_fd(), None), own);
        // Not a socket: no caller.
        let f = std::fs::File::open("/proc/self/stat").unwrap();
        assert_eq!(unix_caller(f.as_raw_fd(), None), None);
    }

    #[test]
    fn sibling_list_leaves_out_this_process() {
        let own = std::process::id();
        let s = SiblingPids(Arc::new(move || vec![own, 0, 7, 7, 5]));
        assert_eq!(sibling_pids(Some(&s)), vec![5, 7]);
        assert_eq!(sibling_pids(None), Vec::<u32>::new());
    }
}
