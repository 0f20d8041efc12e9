//! Requests that this process sent to itself over TCP: a handler that calls its own server with an
//! ordinary HTTP client instead of [`Loopback`](super::Loopback).
//!
//! Such a request would wait in the queue for a worker while every worker waits for it: the
//! seed's deadlock, until the deadline. On the slow path only (the pool has no idle worker, the
//! client is on a loopback address), the reactor looks the client's socket up among this process's
//! own descriptors (Linux: `/proc/self/net/tcp{,6}` for the socket's inode, then `/proc/self/fd`),
//! once per connection. A request found to come from this process is run at once on a spare
//! thread (`Pool::call_here`), at most `self_call_threads` at a time; beyond, it queues as usual.
//! The first such request of each route is logged at `warn` with the fix: use the `Loopback`.
//!
//! A load generator running in the same process as the server (a test, a bench) looks exactly like
//! a self-call; set `self_call_threads(0)` there.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use parking_lot::Mutex;

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

/// Is the TCP client at `peer` (connected to our `local`) a socket of this very process?
pub(crate) fn is_own_socket(peer: SocketAddr, local: SocketAddr) -> bool {
    let table = if peer.is_ipv4() {
        "/proc/self/net/tcp"
    } else {
        "/proc/self/net/tcp6"
    };
    let Ok(text) = std::fs::read_to_string(table) else {
        return false;
    };
    let Some(inode) = text.lines().skip(1).find_map(|line| {
        let mut f = line.split_whitespace();
        let (_sl, l, r) = (f.next()?, f.next()?, f.next()?);
        if parse_addr(l)? != peer || parse_addr(r)? != local {
            return None;
        }
        f.nth(6).map(str::to_string)
    }) else {
        return false;
    };
    let want = format!("socket:[{inode}]");
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else {
        return false;
    };
    dir.flatten().any(|e| {
        std::fs::read_link(e.path())
            .map(|t| t.as_os_str() == want.as_str())
            .unwrap_or(false)
    })
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
        assert!(is_own_socket(peer, l.local_addr().unwrap()));
        assert!(!is_own_socket(
            "127.0.0.1:1".parse().unwrap(),
            l.local_addr().unwrap()
        ));
    }
}
