//! The exact `sock_diag` query: the inode and uid of the client socket of one TCP connection,
//! asked of the kernel over a kept `NETLINK_SOCK_DIAG` socket by the connection's 4-tuple.
//!
//! One `SOCK_DIAG_BY_FAMILY` request, an `inet_diag_req_v2` whose `id` is the 4-tuple seen from
//! the client (source = the peer address, destination = our local address), without `NLM_F_DUMP`:
//! the kernel looks that one socket up in its hash table, so the cost does not depend on how many
//! sockets the host has. Every send and receive has a timeout; a late reply to a request that
//! timed out is recognised by its sequence number and dropped.

use std::net::{IpAddr, SocketAddr};
use std::os::fd::OwnedFd;
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
mod linux {
    //! The wire structs (`linux/netlink.h`, `linux/inet_diag.h`; libc lacks the `inet_diag`
    //! ones), one request, one reply.

    use super::*;
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
    pub(crate) fn open(_timeout: Duration) -> std::io::Result<Self> {
        Err(std::io::ErrorKind::Unsupported.into())
    }

    /// Not available here: always `Unsupported`.
    pub(crate) fn client_socket(
        &mut self,
        _peer: SocketAddr,
        _local: SocketAddr,
    ) -> std::io::Result<Option<PeerSocket>> {
        let _ = (&self.fd, self.seq);
        Err(std::io::ErrorKind::Unsupported.into())
    }
}
