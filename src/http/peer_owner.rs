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
//!    socket's). Otherwise `/proc/self/fd` is listed and each descriptor the caller does not skip
//!    is `fstat`ed (a socket's `st_ino` is its inode). The caller skips what it knows is not the
//!    client: its listeners and accepted connections, so with thousands of idle connections only
//!    the few other descriptors cost a system call. A sibling's `/proc/<pid>/fd` is searched in
//!    full (`readlink`, `socket:[inode]`); one that cannot be read does not hold it.
//!
//! [`SockDiag::owner`] does both. Outside Linux (and Android) the netlink socket cannot be opened
//! and every answer is [`Owner::Unknown`]: the caller falls back to what it did before.
//!
//! The fast reject compares with the uid the socket was created under (`sk_uid`, the creator's
//! fsuid): a socket this process created before changing its effective uid is reported as not
//! ours.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{OwnedFd, RawFd};
use std::time::Duration;

/// The client's socket, as the kernel reported it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PeerSocket {
    /// Its inode (`idiag_inode`): what `/proc/<pid>/fd/N` shows as `socket:[inode]`, and the
    /// `st_ino` of `fstat` on a descriptor of it. 0 when no process holds it (`TIME_WAIT`).
    pub inode: u64,
    /// The uid it was created under (`idiag_uid`).
    pub uid: u32,
}

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

/// A `NETLINK_SOCK_DIAG` socket kept for exact lookups; one per thread that asks (the lookups
/// take `&mut self`).
#[derive(Debug)]
pub(crate) struct SockDiag {
    fd: OwnedFd,
    /// The sequence number of the last request; a reply with another one is stale (the answer
    /// to a request that timed out) and is dropped.
    seq: u32,
}

impl SockDiag {
    /// A timeout for [`open`](Self::open) that a local kernel query never reaches.
    pub(crate) const DEFAULT_TIMEOUT: Duration = Duration::from_millis(100);

    /// Whether this process, or one of `siblings`, holds the client end of the connection we
    /// accepted from `peer` on our address `local`: [`client_socket`](Self::client_socket), then
    /// [`socket_owner`] (see there for `skip`). A socket the kernel does not know (already
    /// closed, or in another network namespace) is [`Owner::Other`]; a failed query is
    /// [`Owner::Unknown`].
    pub(crate) fn owner(
        &mut self,
        peer: SocketAddr,
        local: SocketAddr,
        siblings: &[u32],
        skip: impl FnMut(RawFd) -> bool,
    ) -> Owner {
        match self.client_socket(peer, local) {
            Ok(Some(sock)) => socket_owner(sock, siblings, skip),
            Ok(None) => Owner::Other,
            Err(_) => Owner::Unknown,
        }
    }
}

/// Whether the socket `sock` is held by this process (a descriptor in `/proc/self/fd` for which
/// `skip` is false) or by one of `siblings` (their whole `/proc/<pid>/fd`; this process's own
/// pid and 0 are ignored in the list).
///
/// `skip(fd)` says that `fd` of this process cannot be the client (a listener, an accepted
/// connection): it is not looked at. It is called at most once per descriptor, and never when
/// the socket's uid is not this process's effective uid.
#[cfg(any(target_os = "linux", target_os = "android"))]
pub(crate) fn socket_owner(
    sock: PeerSocket,
    siblings: &[u32],
    skip: impl FnMut(RawFd) -> bool,
) -> Owner {
    if sock.inode == 0 {
        return Owner::Other;
    }
    // SAFETY: geteuid(2) takes no argument, touches no memory and cannot fail.
    let euid = unsafe { libc::geteuid() };
    let mut unknown = false;
    if sock.uid == euid {
        match self_holds(sock.inode, skip) {
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
    _skip: impl FnMut(RawFd) -> bool,
) -> Owner {
    Owner::Unknown
}

/// Whether one of this process's descriptors that `skip` lets through is the socket `inode`.
#[cfg(any(target_os = "linux", target_os = "android"))]
fn self_holds(inode: u64, mut skip: impl FnMut(RawFd) -> bool) -> io::Result<bool> {
    for entry in std::fs::read_dir("/proc/self/fd")? {
        let Ok(entry) = entry else { continue };
        let name = entry.file_name();
        let Some(fd) = name.to_str().and_then(|n| n.parse::<RawFd>().ok()) else {
            continue;
        };
        if !skip(fd) && socket_inode(fd) == Some(inode) {
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

/// The addresses as the kernel's tables hold them: both IPv4 (a v4-mapped IPv6 address is
/// looked up as the IPv4 address it maps), or both IPv6.
fn canonical(peer: SocketAddr, local: SocketAddr) -> (IpAddr, IpAddr) {
    let (p, l) = (peer.ip().to_canonical(), local.ip().to_canonical());
    match (p, l) {
        (IpAddr::V4(_), IpAddr::V4(_)) | (IpAddr::V6(_), IpAddr::V6(_)) => (p, l),
        _ => (v6(p), v6(l)),
    }
}

/// `ip` as an IPv6 address (v4-mapped for an IPv4 one).
fn v6(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(a) => IpAddr::V6(a.to_ipv6_mapped()),
        v6 => v6,
    }
}

#[cfg(any(target_os = "linux", target_os = "android"))]
mod netlink {
    //! The `NETLINK_SOCK_DIAG` exchange: the wire structs (`linux/netlink.h`,
    //! `linux/inet_diag.h`; libc lacks the `inet_diag` ones), one request, one reply.

    use super::{canonical, PeerSocket, SockDiag};
    use std::io;
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    use std::time::Duration;

    const SOCK_DIAG_BY_FAMILY: u16 = 20;
    const NLMSG_ERROR: u16 = 2;
    const NLM_F_REQUEST: u16 = 1;
    /// `INET_DIAG_NOCOOKIE`: match the socket whatever its cookie.
    const NOCOOKIE: u32 = !0;
    /// Every TCP state, `TCP_ESTABLISHED` (1) to `TCP_NEW_SYN_RECV` (12).
    const ALL_STATES: u32 = !0;
    /// `TCP_LISTEN`: a listener the kernel's lookup may fall back to; never the client.
    const TCP_LISTEN: u8 = 10;

    /// `struct nlmsghdr`.
    #[repr(C)]
    #[derive(Debug, Clone, Copy)]
    struct NlMsgHdr {
        len: u32,
        kind: u16,
        flags: u16,
        seq: u32,
        pid: u32,
    }

    /// `struct sockaddr_nl` (libc's has a private field, so it cannot be built here).
    #[repr(C)]
    #[derive(Debug, Clone, Copy)]
    struct SockaddrNl {
        family: libc::sa_family_t,
        pad: u16,
        pid: u32,
        groups: u32,
    }

    /// `struct inet_diag_sockid`: ports and addresses in network byte order.
    #[repr(C)]
    #[derive(Debug, Clone, Copy)]
    struct InetDiagSockId {
        sport: u16,
        dport: u16,
        src: [u8; 16],
        dst: [u8; 16],
        ifindex: u32,
        cookie: [u32; 2],
    }

    /// `struct inet_diag_req_v2`.
    #[repr(C)]
    #[derive(Debug, Clone, Copy)]
    struct InetDiagReqV2 {
        family: u8,
        protocol: u8,
        ext: u8,
        pad: u8,
        states: u32,
        id: InetDiagSockId,
    }

    /// `struct inet_diag_msg`, the fixed part of a reply.
    #[repr(C)]
    #[derive(Debug, Clone, Copy)]
    struct InetDiagMsg {
        family: u8,
        state: u8,
        timer: u8,
        retrans: u8,
        id: InetDiagSockId,
        expires: u32,
        rqueue: u32,
        wqueue: u32,
        uid: u32,
        inode: u32,
    }

    /// What is sent: one message, header then request.
    #[repr(C)]
    #[derive(Debug, Clone, Copy)]
    struct Request {
        hdr: NlMsgHdr,
        req: InetDiagReqV2,
    }

    const HDR: usize = std::mem::size_of::<NlMsgHdr>();
    const _: () = assert!(
        HDR == 16
            && std::mem::size_of::<SockaddrNl>() == 12
            && std::mem::size_of::<InetDiagSockId>() == 48
            && std::mem::size_of::<InetDiagReqV2>() == 56
            && std::mem::size_of::<InetDiagMsg>() == 72
            && std::mem::size_of::<Request>() == HDR + 56
    );

    /// Plain C structs made of integers only: every bit pattern is a valid value.
    ///
    /// # Safety
    /// Implement only for `repr(C)` structs whose fields are all integers or arrays of them.
    unsafe trait Plain: Copy {}
    // SAFETY: repr(C), integer fields only.
    unsafe impl Plain for NlMsgHdr {}
    // SAFETY: repr(C), integer fields only (the id is itself Plain).
    unsafe impl Plain for InetDiagMsg {}

    /// The `T` at `at` in `buf`, if `buf` holds all of it.
    fn read<T: Plain>(buf: &[u8], at: usize) -> Option<T> {
        let bytes = buf.get(at..at.checked_add(std::mem::size_of::<T>())?)?;
        // SAFETY: `bytes` holds size_of::<T>() initialised bytes (checked just above);
        // read_unaligned needs no alignment, and any bit pattern is a valid `T` (Plain).
        Some(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<T>()) })
    }

    impl SockDiag {
        /// A `NETLINK_SOCK_DIAG` socket whose sends and receives give up after `timeout`
        /// (at least 1 ms).
        pub(crate) fn open(timeout: Duration) -> io::Result<Self> {
            // SAFETY: socket(2) with constant arguments; it returns a new descriptor or -1.
            let fd = unsafe {
                libc::socket(
                    libc::AF_NETLINK,
                    libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
                    libc::NETLINK_SOCK_DIAG,
                )
            };
            if fd < 0 {
                return Err(io::Error::last_os_error());
            }
            // SAFETY: `fd` was just returned by socket(2) and is owned by nothing else.
            let fd = unsafe { OwnedFd::from_raw_fd(fd) };
            let timeout = timeout.max(Duration::from_millis(1));
            let tv = libc::timeval {
                tv_sec: timeout.as_secs().min(i32::MAX as u64) as libc::time_t,
                tv_usec: timeout.subsec_micros() as libc::suseconds_t,
            };
            for opt in [libc::SO_RCVTIMEO, libc::SO_SNDTIMEO] {
                // SAFETY: setsockopt(2) reads one `timeval` from `tv`, a live local, of the
                // length given; `fd` is the open socket above.
                let r = unsafe {
                    libc::setsockopt(
                        fd.as_raw_fd(),
                        libc::SOL_SOCKET,
                        opt,
                        (&tv as *const libc::timeval).cast(),
                        std::mem::size_of::<libc::timeval>() as libc::socklen_t,
                    )
                };
                if r != 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            Ok(SockDiag { fd, seq: 0 })
        }

        /// The client's socket of the TCP connection we accepted from `peer` on our address
        /// `local`: `Ok(None)` when the kernel has no such connection in this network namespace
        /// (closed since, or the client is elsewhere); an error when the query failed or timed
        /// out (`TimedOut`).
        pub(crate) fn client_socket(
            &mut self,
            peer: SocketAddr,
            local: SocketAddr,
        ) -> io::Result<Option<PeerSocket>> {
            let (p, l) = canonical(peer, local);
            let ifindex = match peer {
                SocketAddr::V6(a) if matches!(p, IpAddr::V6(_)) => a.scope_id(),
                _ => 0,
            };
            self.seq = self.seq.wrapping_add(1);
            let (family, src) = wire_ip(p);
            let req = Request {
                hdr: NlMsgHdr {
                    len: std::mem::size_of::<Request>() as u32,
                    kind: SOCK_DIAG_BY_FAMILY,
                    flags: NLM_F_REQUEST,
                    seq: self.seq,
                    pid: 0,
                },
                req: InetDiagReqV2 {
                    family,
                    protocol: libc::IPPROTO_TCP as u8,
                    ext: 0,
                    pad: 0,
                    states: ALL_STATES,
                    id: InetDiagSockId {
                        sport: peer.port().to_be(),
                        dport: local.port().to_be(),
                        src,
                        dst: wire_ip(l).1,
                        ifindex,
                        cookie: [NOCOOKIE; 2],
                    },
                },
            };
            let kernel = SockaddrNl {
                family: libc::AF_NETLINK as libc::sa_family_t,
                pad: 0,
                pid: 0,
                groups: 0,
            };
            // SAFETY: sendto(2) reads `size_of::<Request>()` bytes from `req` and one
            // `SockaddrNl` from `kernel`, both live locals of those sizes.
            let sent = unsafe {
                libc::sendto(
                    self.fd.as_raw_fd(),
                    (&req as *const Request).cast(),
                    std::mem::size_of::<Request>(),
                    0,
                    (&kernel as *const SockaddrNl).cast(),
                    std::mem::size_of::<SockaddrNl>() as libc::socklen_t,
                )
            };
            if sent < 0 {
                return Err(timed_out(io::Error::last_os_error()));
            }
            let want = Want {
                seq: self.seq,
                peer: SocketAddr::new(p, peer.port()),
                local: SocketAddr::new(l, local.port()),
            };
            // 8-byte aligned; a reply is one inet_diag_msg and a few attributes (< 1 KiB).
            let mut buf = [0u64; 512];
            // A stale reply answers an earlier request that timed out: a few at most, already
            // queued, so only the receive that waits for ours can take up to the timeout.
            for _ in 0..16 {
                let n = self.recv_from_kernel(&mut buf)?;
                // SAFETY: `buf` is a live array of 4096 initialised bytes (u64s viewed as
                // bytes; u8 has no alignment or validity requirement) and `n` <= its length.
                let bytes = unsafe { std::slice::from_raw_parts(buf.as_ptr().cast::<u8>(), n) };
                if let Some(answer) = want.answer(bytes) {
                    return answer;
                }
            }
            Err(io::ErrorKind::TimedOut.into())
        }

        /// One datagram from the kernel (port 0) into `buf`; its length.
        fn recv_from_kernel(&self, buf: &mut [u64; 512]) -> io::Result<usize> {
            loop {
                let mut from = SockaddrNl {
                    family: 0,
                    pad: 0,
                    pid: u32::MAX,
                    groups: 0,
                };
                let mut from_len = std::mem::size_of::<SockaddrNl>() as libc::socklen_t;
                // SAFETY: recvfrom(2) writes at most `size_of_val(buf)` bytes into `buf` and at
                // most `from_len` bytes into `from`, both live and exclusively borrowed here.
                let n = unsafe {
                    libc::recvfrom(
                        self.fd.as_raw_fd(),
                        buf.as_mut_ptr().cast(),
                        std::mem::size_of_val(buf),
                        0,
                        (&mut from as *mut SockaddrNl).cast(),
                        &mut from_len,
                    )
                };
                if n < 0 {
                    let e = io::Error::last_os_error();
                    if e.kind() == io::ErrorKind::Interrupted {
                        continue;
                    }
                    return Err(timed_out(e));
                }
                if from.pid == 0 {
                    return Ok(n as usize);
                }
            }
        }
    }

    /// A receive or send timeout (EAGAIN under SO_RCVTIMEO) as `TimedOut`.
    fn timed_out(e: io::Error) -> io::Error {
        if e.kind() == io::ErrorKind::WouldBlock {
            io::ErrorKind::TimedOut.into()
        } else {
            e
        }
    }

    /// The family and the 16 address bytes of `ip` as `inet_diag_sockid` holds them.
    fn wire_ip(ip: IpAddr) -> (u8, [u8; 16]) {
        let mut b = [0u8; 16];
        match ip {
            IpAddr::V4(a) => {
                b[..4].copy_from_slice(&a.octets());
                (libc::AF_INET as u8, b)
            }
            IpAddr::V6(a) => (libc::AF_INET6 as u8, a.octets()),
        }
    }

    /// The address in a reply's id, canonical (a v4-mapped one as IPv4).
    fn reply_ip(family: u8, b: [u8; 16]) -> Option<IpAddr> {
        if family == libc::AF_INET as u8 {
            Some(IpAddr::V4(Ipv4Addr::new(b[0], b[1], b[2], b[3])))
        } else if family == libc::AF_INET6 as u8 {
            Some(IpAddr::V6(Ipv6Addr::from(b)).to_canonical())
        } else {
            None
        }
    }

    /// The reply awaited: its sequence number and the socket it must describe.
    struct Want {
        seq: u32,
        peer: SocketAddr,
        local: SocketAddr,
    }

    impl Want {
        /// The answer carried by the datagram `buf`, or `None` when it is not ours (stale).
        fn answer(&self, buf: &[u8]) -> Option<io::Result<Option<PeerSocket>>> {
            let mut at = 0;
            while let Some(h) = read::<NlMsgHdr>(buf, at) {
                let len = h.len as usize;
                if len < HDR || at + len > buf.len() {
                    return Some(Err(io::ErrorKind::InvalidData.into()));
                }
                if h.seq == self.seq {
                    if h.kind == NLMSG_ERROR {
                        let code = buf
                            .get(at + HDR..at + HDR + 4)
                            .map_or(0, |b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]]));
                        return Some(match -code {
                            libc::ENOENT => Ok(None),
                            0 => Err(io::ErrorKind::InvalidData.into()),
                            e => Err(io::Error::from_raw_os_error(e)),
                        });
                    }
                    if h.kind == SOCK_DIAG_BY_FAMILY {
                        return Some(match read::<InetDiagMsg>(&buf[..at + len], at + HDR) {
                            Some(m) => Ok(self.matches(&m).then_some(PeerSocket {
                                inode: u64::from(m.inode),
                                uid: m.uid,
                            })),
                            None => Err(io::ErrorKind::InvalidData.into()),
                        });
                    }
                }
                at += (len + 3) & !3;
            }
            None
        }

        /// Whether `m` is the client socket asked for: the kernel's lookup falls back to a
        /// listener on the asked source address when no connection matches, so the whole
        /// 4-tuple is checked.
        fn matches(&self, m: &InetDiagMsg) -> bool {
            let src = reply_ip(m.family, m.id.src);
            let dst = reply_ip(m.family, m.id.dst);
            m.state != TCP_LISTEN
                && src == Some(self.peer.ip())
                && dst == Some(self.local.ip())
                && u16::from_be(m.id.sport) == self.peer.port()
                && u16::from_be(m.id.dport) == self.local.port()
        }
    }
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
impl SockDiag {
    /// Not available here: always `Unsupported`.
    pub(crate) fn open(_timeout: Duration) -> io::Result<Self> {
        Err(io::ErrorKind::Unsupported.into())
    }

    /// Not available here: always `Unsupported`.
    pub(crate) fn client_socket(
        &mut self,
        _peer: SocketAddr,
        _local: SocketAddr,
    ) -> io::Result<Option<PeerSocket>> {
        let _ = (&self.fd, self.seq);
        Err(io::ErrorKind::Unsupported.into())
    }
}

#[cfg(all(test, any(target_os = "linux", target_os = "android")))]
mod tests {
    use super::*;
    use std::collections::HashSet;
    use std::io::{BufRead, BufReader, Write};
    use std::net::{TcpListener, TcpStream};
    use std::os::fd::AsRawFd;
    use std::os::unix::process::CommandExt;
    use std::process::{Child, Command, Stdio};

    fn diag() -> SockDiag {
        SockDiag::open(SockDiag::DEFAULT_TIMEOUT).expect("NETLINK_SOCK_DIAG socket")
    }

    fn inode_of(s: &impl AsRawFd) -> u64 {
        socket_inode(s.as_raw_fd()).expect("a socket")
    }

    /// A connection made in this process: (listener, client end, accepted end, peer address).
    fn pair(bind: &str, connect: Option<&str>) -> Option<(TcpListener, TcpStream, TcpStream)> {
        let l = match TcpListener::bind(bind) {
            Ok(l) => l,
            Err(e) => {
                eprintln!("skipped: cannot bind {bind}: {e}");
                return None;
            }
        };
        let port = l.local_addr().unwrap().port();
        let to = connect.map_or_else(
            || l.local_addr().unwrap(),
            |ip| SocketAddr::new(ip.parse().unwrap(), port),
        );
        let c = TcpStream::connect(to).unwrap();
        let (s, peer) = l.accept().unwrap();
        assert_eq!(s.peer_addr().unwrap(), peer);
        Some((l, c, s))
    }

    /// The lookup by the accepted end's (peer, local) finds exactly the client end, and the
    /// reverse 4-tuple finds the accepted end: the direction of `id` is right.
    fn assert_finds_client(l: &TcpListener, c: &TcpStream, s: &TcpStream) {
        let (peer, local) = (s.peer_addr().unwrap(), s.local_addr().unwrap());
        let mut d = diag();
        let found = d
            .client_socket(peer, local)
            .unwrap()
            .expect("the client socket");
        assert_eq!(found.inode, inode_of(c));
        // SAFETY: geteuid(2) cannot fail.
        assert_eq!(found.uid, unsafe { libc::geteuid() });
        let server_end = d
            .client_socket(local, peer)
            .unwrap()
            .expect("the accepted socket");
        assert_eq!(server_end.inode, inode_of(s));
        let ours: HashSet<RawFd> = [l.as_raw_fd(), s.as_raw_fd()].into();
        assert_eq!(
            d.owner(peer, local, &[], |fd| ours.contains(&fd)),
            Owner::ThisProcess
        );
    }

    #[test]
    fn finds_the_client_end_of_an_ipv4_connection() {
        let (l, c, s) = pair("127.0.0.1:0", None).unwrap();
        assert_finds_client(&l, &c, &s);
    }

    #[test]
    fn finds_the_client_end_of_an_ipv6_connection() {
        if let Some((l, c, s)) = pair("[::1]:0", None) {
            assert!(s.peer_addr().unwrap().is_ipv6());
            assert_finds_client(&l, &c, &s);
        }
    }

    #[test]
    fn finds_the_client_end_through_v4_mapped_addresses() {
        // A dual-stack listener sees an IPv4 client as ::ffff:127.0.0.1.
        if let Some((l, c, s)) = pair("[::]:0", Some("127.0.0.1")) {
            let peer = s.peer_addr().unwrap();
            assert!(matches!(peer.ip(), IpAddr::V6(a) if a.to_ipv4_mapped().is_some()));
            assert_finds_client(&l, &c, &s);
        }
        // An IPv6 client socket connected to a v4-mapped address of an IPv4 listener.
        if let Some((l, c, s)) = pair("127.0.0.1:0", Some("::ffff:127.0.0.1")) {
            assert_finds_client(&l, &c, &s);
        }
    }

    #[test]
    fn a_connection_that_does_not_exist_is_not_found() {
        let (l, _c, s) = pair("127.0.0.1:0", None).unwrap();
        let local = s.local_addr().unwrap();
        let mut d = diag();
        let nowhere: SocketAddr = "127.0.0.1:1".parse().unwrap();
        assert_eq!(d.client_socket(nowhere, local).unwrap(), None);
        assert_eq!(d.owner(nowhere, local, &[], |_| false), Owner::Other);
        // The kernel's lookup falls back to a listener on the source address: not a client.
        assert_eq!(
            d.client_socket(l.local_addr().unwrap(), nowhere).unwrap(),
            None
        );
        // The socket stays usable after a negative answer.
        assert!(d
            .client_socket(s.peer_addr().unwrap(), local)
            .unwrap()
            .is_some());
    }

    #[test]
    fn skipped_descriptors_are_not_looked_at() {
        let (l, c, s) = pair("127.0.0.1:0", None).unwrap();
        let (peer, local) = (s.peer_addr().unwrap(), s.local_addr().unwrap());
        let skipped: HashSet<RawFd> = [l.as_raw_fd(), s.as_raw_fd(), c.as_raw_fd()].into();
        let mut asked = Vec::new();
        let owner = diag().owner(peer, local, &[], |fd| {
            asked.push(fd);
            skipped.contains(&fd)
        });
        assert_eq!(owner, Owner::Other);
        assert!(asked.contains(&c.as_raw_fd()));
        let distinct: HashSet<RawFd> = asked.iter().copied().collect();
        assert_eq!(distinct.len(), asked.len(), "skip asked twice for one fd");
    }

    /// A child process holding a connection to `port` until it is dropped (killed and reaped).
    struct Client(Child);

    impl Drop for Client {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    /// Starts a python3 child that opens `n` connections to 127.0.0.1:`port` and holds them
    /// until its stdin closes; returns once they are all made (`None`: no python3 here).
    fn spawn_client(port: u16, n: usize, uid: Option<u32>) -> Option<Client> {
        const SCRIPT: &str = "import socket,sys\n\
            s=[socket.create_connection(('127.0.0.1',int(sys.argv[1]))) for _ in range(int(sys.argv[2]))]\n\
            print('connected',flush=True)\n\
            sys.stdin.read()\n";
        let python = ["/usr/bin/python3", "python3"]
            .into_iter()
            .find(|p| !p.starts_with('/') || std::path::Path::new(p).exists())?;
        let mut cmd = Command::new(python);
        cmd.args(["-c", SCRIPT, &port.to_string(), &n.to_string()])
            .current_dir("/")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped());
        if let Some(uid) = uid {
            cmd.uid(uid).gid(uid);
        }
        let mut child = match cmd.spawn() {
            Ok(c) => Client(c),
            Err(e) => {
                eprintln!("skipped: cannot start python3: {e}");
                return None;
            }
        };
        let mut line = String::new();
        let out = child.0.stdout.take().unwrap();
        BufReader::new(out).read_line(&mut line).unwrap();
        assert_eq!(line.trim(), "connected", "the python3 client failed");
        Some(child)
    }

    #[test]
    fn a_connection_from_another_process_is_not_ours_unless_it_is_a_sibling() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let Some(mut child) = spawn_client(l.local_addr().unwrap().port(), 1, None) else {
            return;
        };
        let (s, peer) = l.accept().unwrap();
        let local = s.local_addr().unwrap();
        let mut d = diag();
        let ours: HashSet<RawFd> = [l.as_raw_fd(), s.as_raw_fd()].into();
        assert_eq!(
            d.owner(peer, local, &[], |fd| ours.contains(&fd)),
            Owner::Other
        );
        let pid = child.0.id();
        assert_eq!(
            d.owner(peer, local, &[std::process::id(), 0, pid], |fd| ours
                .contains(&fd)),
            Owner::Sibling(pid)
        );
        child.0.stdin.take().unwrap().write_all(b"").unwrap();
        assert!(child.0.wait().unwrap().success());
    }

    #[test]
    fn another_uid_is_not_ours_without_a_scan() {
        // SAFETY: geteuid(2) cannot fail.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("skipped: needs root to start a client under another uid");
            return;
        }
        let nobody = 65534;
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let Some(child) = spawn_client(l.local_addr().unwrap().port(), 1, Some(nobody)) else {
            return;
        };
        let (s, peer) = l.accept().unwrap();
        let local = s.local_addr().unwrap();
        let mut d = diag();
        let sock = d.client_socket(peer, local).unwrap().unwrap();
        assert_eq!(sock.uid, nobody);
        let mut asked = 0;
        assert_eq!(
            socket_owner(sock, &[], |_| {
                asked += 1;
                false
            }),
            Owner::Other
        );
        assert_eq!(asked, 0, "this process's descriptors were searched");
        // A sibling under that uid is searched.
        let pid = child.0.id();
        assert_eq!(socket_owner(sock, &[pid], |_| false), Owner::Sibling(pid));
    }

    /// The cost of one lookup with `idle` idle connections from another process, their accepted
    /// ends held here and skipped, against the former path (read `/proc/self/net/tcp`, then
    /// `readlink` every entry of `/proc/self/fd`). Run with
    /// `cargo test --release --all-features --lib peer_owner::tests::cost -- --ignored --nocapture`.
    #[test]
    #[ignore = "a measurement, not a check"]
    fn cost_with_idle_connections() {
        for idle in [0, 4000] {
            let l = TcpListener::bind("127.0.0.1:0").unwrap();
            let port = l.local_addr().unwrap().port();
            let accepting = std::thread::spawn(move || {
                let mut held: Vec<TcpStream> = Vec::new();
                for _ in 0..idle + 1 {
                    held.push(l.accept().unwrap().0);
                }
                (l, held)
            });
            let Some(_other) = spawn_client(port, idle + 1, None) else {
                return;
            };
            let (l, mut held) = accepting.join().unwrap();
            let other = held.pop().unwrap();
            let (_c, mine) = {
                let c = TcpStream::connect(l.local_addr().unwrap()).unwrap();
                (c, l.accept().unwrap().0)
            };
            let mut ours: HashSet<RawFd> = held.iter().map(|s| s.as_raw_fd()).collect();
            ours.extend([l.as_raw_fd(), other.as_raw_fd(), mine.as_raw_fd()]);
            let mut d = diag();
            let runs = 200;
            let time = |f: &mut dyn FnMut()| {
                let t = std::time::Instant::now();
                for _ in 0..runs {
                    f();
                }
                t.elapsed() / runs
            };
            let addrs = |s: &TcpStream| (s.peer_addr().unwrap(), s.local_addr().unwrap());
            let (op, ol) = addrs(&other);
            let (mp, ml) = addrs(&mine);
            let query = time(&mut || assert!(d.client_socket(op, ol).unwrap().is_some()));
            let not_ours = time(&mut || {
                assert_eq!(d.owner(op, ol, &[], |fd| ours.contains(&fd)), Owner::Other);
            });
            let self_call = time(&mut || {
                assert_eq!(
                    d.owner(mp, ml, &[], |fd| ours.contains(&fd)),
                    Owner::ThisProcess
                );
            });
            let no_skip = time(&mut || {
                assert_eq!(d.owner(op, ol, &[], |_| false), Owner::Other);
            });
            let former = time(&mut || {
                let table = std::fs::read_to_string("/proc/self/net/tcp").unwrap();
                assert!(table.lines().count() > idle);
                let want = format!("socket:[{}]", inode_of(&other));
                let found = std::fs::read_dir("/proc/self/fd")
                    .unwrap()
                    .flatten()
                    .any(|e| {
                        std::fs::read_link(e.path()).is_ok_and(|t| t.as_os_str() == want.as_str())
                    });
                assert!(!found);
            });
            println!(
                "{idle} idle connections: sock_diag query {query:?}; owner, not ours {not_ours:?}; \
                 owner, self-call {self_call:?}; owner, nothing skipped {no_skip:?}; \
                 former path {former:?}"
            );
        }
    }
}
