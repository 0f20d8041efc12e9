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
//!    socket's). Otherwise each descriptor number the caller does not skip is `fstat`ed (a
//!    socket's `st_ino` is its inode), from 0 up to a bound the caller gives (its highest
//!    descriptor) and on until [`FREE_RUN`] numbers in a row are free. The caller skips what it
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

/// How many descriptors [`self_holds`] `fstat`s by number before it lists `/proc/self/fd`
/// instead (a table left with many free slots by a past burst).
#[cfg(any(target_os = "linux", target_os = "android"))]
const PROBE_BUDGET: usize = 512;

/// How many free descriptor numbers in a row, past the caller's bound, end the search.
pub(crate) const FREE_RUN: usize = 64;

/// Whether one of this process's descriptors that `skip` lets through is the socket `inode`.
///
/// Listing `/proc/self/fd` costs a few microseconds per open descriptor (the kernel builds an
/// entry for each), skipped or not; so the descriptors are probed by number, from 0 to `top`
/// and on until [`FREE_RUN`] free numbers in a row, and only those not skipped cost a system
/// call (`fstat`; EBADF for a free slot). Past [`PROBE_BUDGET`] probes, the rest is listed
/// instead.
#[cfg(any(target_os = "linux", target_os = "android"))]
fn self_holds(
    inode: u64,
    top: RawFd,
    mut skip: impl FnMut(RawFd) -> bool,
) -> std::io::Result<bool> {
    let mut probes = 0;
    let mut free_run = 0;
    let mut fd: RawFd = 0;
    while fd <= top || free_run < FREE_RUN {
        if skip(fd) {
            free_run = 0;
        } else {
            probes += 1;
            if probes > PROBE_BUDGET {
                return listed_self_holds(inode, fd, skip);
            }
            match probe(fd) {
                Probe::Free => free_run += 1,
                Probe::Socket(ino) if ino == inode => return Ok(true),
                Probe::Socket(_) | Probe::Other => free_run = 0,
            }
        }
        fd = match fd.checked_add(1) {
            Some(next) => next,
            None => break,
        };
    }
    Ok(false)
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

/// What a descriptor number is now.
#[cfg(any(target_os = "linux", target_os = "android"))]
enum Probe {
    /// Not open.
    Free,
    /// A socket, with its inode.
    Socket(u64),
    /// Another kind of file.
    Other,
}

/// What `fd` is now: free, a socket (its inode), or another file.
#[cfg(any(target_os = "linux", target_os = "android"))]
fn probe(fd: RawFd) -> Probe {
    // SAFETY: an all-zero `stat` is a valid value of this plain C struct (integers only).
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: fstat(2) writes one `stat` into `st`, a live local; an fd that is not open only
    // makes the call fail with EBADF.
    if unsafe { libc::fstat(fd, &mut st) } != 0 {
        return if std::io::Error::last_os_error().raw_os_error() == Some(libc::EBADF) {
            Probe::Free
        } else {
            Probe::Other
        };
    }
    if st.st_mode & libc::S_IFMT == libc::S_IFSOCK {
        Probe::Socket(st.st_ino as u64)
    } else {
        Probe::Other
    }
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
