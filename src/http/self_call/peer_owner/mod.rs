//! Which process holds the client end of a TCP connection we accepted, at a cost that does not
//! grow with the number of sockets on the host.
//!
//! Two steps, both cheap enough for the reactor thread:
//!
//! 1. [`SockDiag::client_socket`]: one exact `sock_diag` netlink query (`SOCK_DIAG_BY_FAMILY`,
//!    an `inet_diag_req_v2` whose `id` is the connection's 4-tuple seen from the client: source =
//!    the peer address, destination = our local address). The kernel looks that one socket up in
//!    its hash table and answers its inode and uid (`idiag_inode`, `idiag_uid`): no dump, no
//!    `/proc/net/tcp`. IPv4, IPv6 and v4-mapped addresses are handled. The netlink socket is kept
//!    and reused; every receive has a timeout, so a lookup never hangs.
//! 2. [`socket_owner`]: whether that inode is held by this process or by one of a list of sibling
//!    pids. A uid other than this process's effective uid means "not ours" without any scan (a
//!    sibling is searched only when its effective uid, from `/proc/<pid>/status`, is the
//!    socket's). Otherwise the descriptor numbers the caller does not skip are examined, from 0
//!    up to a bound the caller gives (its highest descriptor) and on until [`FREE_RUN`] numbers
//!    in a row are free: one `poll` per 64 numbers tells the free ones, and each open one is
//!    `fstat`ed (a socket's `st_ino` is its inode). The caller skips what it
//!    knows is not the client: its listeners and accepted connections ([`OwnedFds`]), so with
//!    thousands of idle connections only the few other descriptors cost a system call (listing
//!    `/proc/self/fd` would cost microseconds per open descriptor, skipped or not, and reading
//!    the table's size from `/proc/self/status` costs tens to hundreds of microseconds). A
//!    sibling's `/proc/<pid>/fd` is searched in full (`readlink`, `socket:[inode]`); one that
//!    cannot be read does not hold it.
//!
//! [`SockDiag::owner`] does both. Outside Linux (and Android) the netlink socket cannot be opened
//! and every answer is [`Owner::Unknown`]: the caller falls back to what it did before.
//!
//! The fast reject compares with the uid the socket was created under (`sk_uid`, the creator's
//! fsuid): a socket this process created before changing its effective uid is reported as not
//! ours.
//!
//! Descriptors are allocated lowest number first, so the open ones sit below the caller's
//! highest descriptor or just above it: the search misses a client socket only when more than
//! [`FREE_RUN`] descriptors right above the caller's highest one were closed between that
//! socket's creation and the lookup (the request then queues as any other).

mod owned_fds;
mod sock_diag;
#[cfg(all(test, any(target_os = "linux", target_os = "android")))]
mod tests;

use std::net::SocketAddr;
use std::os::fd::RawFd;

pub(crate) use owned_fds::OwnedFds;
pub(crate) use sock_diag::{PeerSocket, SockDiag};

/// Who holds the client end of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Owner {
    /// This process: a self-call.
    ThisProcess,
    /// The sibling process with this pid (one of those the caller listed).
    Sibling(u32),
    /// Neither: another process, another host, another network namespace, or a socket already
    /// gone.
    Other,
    /// Could not tell (not Linux, netlink refused or timed out, `/proc/self/fd` unreadable): the
    /// caller decides as it did before.
    Unknown,
}

impl SockDiag {
    /// Whether this process, or one of `siblings`, holds the client end of the connection we
    /// accepted from `peer` on our address `local`: [`client_socket`](Self::client_socket), then
    /// [`socket_owner`] (see there for `top` and `skip`). A socket the kernel does not know (already
    /// closed, or in another network namespace) is [`Owner::Other`]; a failed query is
    /// [`Owner::Unknown`].
    pub(crate) fn owner(
        &mut self,
        peer: SocketAddr,
        local: SocketAddr,
        siblings: &[u32],
        top: RawFd,
        skip: impl FnMut(RawFd) -> bool,
    ) -> Owner {
        match self.client_socket(peer, local) {
            Ok(Some(sock)) => socket_owner(sock, siblings, top, skip),
            Ok(None) => Owner::Other,
            Err(_) => Owner::Unknown,
        }
    }
}

/// Whether the socket `sock` is held by this process (a descriptor in `/proc/self/fd` for which
/// `skip` is false) or by one of `siblings` (their whole `/proc/<pid>/fd`; this process's own
/// pid and 0 are ignored in the list).
///
/// This process's descriptors are searched from 0 to `top` (the caller's highest descriptor, or
/// less), and on until [`FREE_RUN`] descriptors in a row are free.
/// `skip(fd)` says that `fd` of this process cannot be the client (a listener, an accepted
/// connection): it is not looked at, and counts as open. It is called at most once per
/// descriptor number, for every number searched (open or not), so it must be cheap (a bitmap
/// such as [`OwnedFds`], or a hash set of the server's descriptors); it is never called when the
/// socket's uid is not this process's effective uid.
#[cfg(any(target_os = "linux", target_os = "android"))]
pub(crate) fn socket_owner(
    sock: PeerSocket,
    siblings: &[u32],
    top: RawFd,
    skip: impl FnMut(RawFd) -> bool,
) -> Owner {
    if sock.inode == 0 {
        return Owner::Other;
    }
    // SAFETY: geteuid(2) takes no argument, touches no memory and cannot fail.
    let euid = unsafe { libc::geteuid() };
    let mut unknown = false;
    if sock.uid == euid {
        match self_holds(sock.inode, top, skip) {
            Ok(true) => return Owner::ThisProcess,
            Ok(false) => {}
            Err(_) => unknown = true,
        }
    }
    let own = std::process::id();
    for &pid in siblings {
        if pid == own || pid == 0 || (sock.uid != euid && proc_euid(pid) != Some(sock.uid)) {
            continue;
        }
        if sibling_holds(pid, sock.inode) {
            return Owner::Sibling(pid);
        }
    }
    if unknown {
        Owner::Unknown
    } else {
        Owner::Other
    }
}

/// Not available here: the owner is never known.
#[cfg(not(any(target_os = "linux", target_os = "android")))]
pub(crate) fn socket_owner(
    _sock: PeerSocket,
    _siblings: &[u32],
    _top: RawFd,
    _skip: impl FnMut(RawFd) -> bool,
) -> Owner {
    Owner::Unknown
}

/// How many descriptor numbers [`self_holds`] examines (skipped ones not counted) before it
/// lists `/proc/self/fd` instead (a table left with many free slots by a past burst).
#[cfg(any(target_os = "linux", target_os = "android"))]
const PROBE_BUDGET: usize = 4096;

/// How many free descriptor numbers in a row, past the caller's bound, end the search.
pub(crate) const FREE_RUN: usize = 64;

/// Descriptor numbers examined per `poll` call.
#[cfg(any(target_os = "linux", target_os = "android"))]
const BLOCK: usize = 64;

/// Whether one of this process's descriptors that `skip` lets through is the socket `inode`.
///
/// Listing `/proc/self/fd` costs a few microseconds per open descriptor (the kernel builds an
/// entry for each), skipped or not; so the descriptors are examined by number, from 0 to `top`
/// and on until [`FREE_RUN`] free numbers in a row. Those not skipped are asked about
/// [`BLOCK`] at a time with one `poll` (timeout 0, no events: `POLLNVAL` marks a free number),
/// and only the open ones cost an `fstat` each. Past [`PROBE_BUDGET`] numbers examined, the rest
/// is listed instead.
#[cfg(any(target_os = "linux", target_os = "android"))]
fn self_holds(
    inode: u64,
    top: RawFd,
    mut skip: impl FnMut(RawFd) -> bool,
) -> std::io::Result<bool> {
    let mut examined = 0;
    let mut free_run = 0;
    let mut base: RawFd = 0;
    loop {
        if examined >= PROBE_BUDGET {
            return listed_self_holds(inode, base, skip);
        }
        let end = base.saturating_add(BLOCK as RawFd);
        let mut batch = [libc::pollfd {
            fd: -1,
            events: 0,
            revents: 0,
        }; BLOCK];
        let mut n = 0;
        let mut skipped = 0u64;
        for (i, fd) in (base..end).enumerate() {
            if skip(fd) {
                skipped |= 1 << i;
            } else {
                batch[n].fd = fd;
                n += 1;
            }
        }
        examined += n;
        poll_now(&mut batch[..n])?;
        let mut polled = batch[..n].iter();
        for (i, fd) in (base..end).enumerate() {
            if fd > top && free_run >= FREE_RUN {
                return Ok(false);
            }
            if skipped & (1 << i) != 0 {
                free_run = 0;
                continue;
            }
            let p = polled.next().expect("one entry per number not skipped");
            if p.revents & libc::POLLNVAL != 0 {
                free_run += 1;
                continue;
            }
            free_run = 0;
            if socket_inode(fd) == Some(inode) {
                return Ok(true);
            }
        }
        if end == RawFd::MAX {
            return Ok(false);
        }
        base = end;
    }
}

/// `poll` the entries with a zero timeout: each one's `revents` says whether its descriptor is
/// open (`POLLNVAL`: it is not).
#[cfg(any(target_os = "linux", target_os = "android"))]
fn poll_now(fds: &mut [libc::pollfd]) -> std::io::Result<()> {
    if fds.is_empty() {
        return Ok(());
    }
    loop {
        // SAFETY: poll(2) reads and writes `fds.len()` `pollfd`s of the live slice `fds`; a
        // timeout of 0 never blocks; a descriptor that is not open is only marked POLLNVAL.
        let r = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, 0) };
        if r >= 0 {
            return Ok(());
        }
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// [`self_holds`] for the descriptors from `from` on, by listing `/proc/self/fd`.
#[cfg(any(target_os = "linux", target_os = "android"))]
fn listed_self_holds(
    inode: u64,
    from: RawFd,
    mut skip: impl FnMut(RawFd) -> bool,
) -> std::io::Result<bool> {
    for entry in std::fs::read_dir("/proc/self/fd")? {
        let Ok(entry) = entry else { continue };
        let name = entry.file_name();
        let Some(fd) = name.to_str().and_then(|n| n.parse::<RawFd>().ok()) else {
            continue;
        };
        if fd >= from && !skip(fd) && socket_inode(fd) == Some(inode) {
            return Ok(true);
        }
    }
    Ok(false)
}

/// The inode of `fd` when it is a socket (a closed descriptor, or another kind of file: `None`).
#[cfg(any(target_os = "linux", target_os = "android"))]
fn socket_inode(fd: RawFd) -> Option<u64> {
    // SAFETY: an all-zero `stat` is a valid value of this plain C struct (integers only).
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: fstat(2) writes one `stat` into `st`, a live local; an fd that is not open (it may
    // have been closed since it was listed) only makes the call fail with EBADF.
    if unsafe { libc::fstat(fd, &mut st) } != 0 || st.st_mode & libc::S_IFMT != libc::S_IFSOCK {
        return None;
    }
    Some(st.st_ino as u64)
}

/// Whether one of the descriptors of process `pid` is the socket `inode` (a directory that
/// cannot be read: no).
#[cfg(any(target_os = "linux", target_os = "android"))]
fn sibling_holds(pid: u32, inode: u64) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let want = format!("socket:[{inode}]");
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return false;
    };
    dir.flatten().any(|e| {
        std::fs::read_link(e.path()).is_ok_and(|t| t.as_os_str().as_bytes() == want.as_bytes())
    })
}

/// The effective uid of process `pid` (the second field of `Uid:` in `/proc/<pid>/status`).
#[cfg(any(target_os = "linux", target_os = "android"))]
fn proc_euid(pid: u32) -> Option<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find_map(|l| l.strip_prefix("Uid:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}
