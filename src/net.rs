//! Listening sockets for the HTTP front end and the pre-fork supervisor: the one [`Listener`] type
//! (TCP or Unix), and how a socket is bound ([`bind_tcp`], [`bind_unix`]) or adopted ([`adopt`]).
//!
//! Every listener made here is non-blocking: the reactor (and, in process mode, each worker) waits
//! for it to be readable, then accepts until `WouldBlock`.

use std::fmt;
use std::io;
use std::net::{SocketAddr, TcpListener};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixListener;
use std::path::Path;

use socket2::{Domain, Protocol, SockAddr, Socket, Type};

/// One listening socket: in process mode, shared by the master and every worker.
#[cfg_attr(not(feature = "prefork"), allow(dead_code))]
#[derive(Debug)]
pub enum Listener {
    /// A TCP socket.
    Tcp(TcpListener),
    /// A Unix stream socket.
    Unix(UnixListener),
}

#[cfg_attr(not(feature = "prefork"), allow(dead_code))]
impl Listener {
    /// The TCP listener, if this is one.
    pub fn tcp(&self) -> Option<&TcpListener> {
        match self {
            Listener::Tcp(l) => Some(l),
            Listener::Unix(_) => None,
        }
    }

    /// The Unix listener, if this is one.
    pub fn unix(&self) -> Option<&UnixListener> {
        match self {
            Listener::Unix(l) => Some(l),
            Listener::Tcp(_) => None,
        }
    }

    /// The local address, as `127.0.0.1:8000` or `unix:/run/app.sock`.
    pub fn address(&self) -> String {
        match self {
            Listener::Tcp(l) => l
                .local_addr()
                .map(|a| a.to_string())
                .unwrap_or_else(|e| format!("tcp (unknown address: {e})")),
            Listener::Unix(l) => match l.local_addr() {
                Ok(a) => match a.as_pathname() {
                    Some(p) => format!("unix:{}", p.display()),
                    None => "unix:(unnamed)".to_string(),
                },
                Err(e) => format!("unix (unknown address: {e})"),
            },
        }
    }
}

impl AsRawFd for Listener {
    fn as_raw_fd(&self) -> RawFd {
        match self {
            Listener::Tcp(l) => l.as_raw_fd(),
            Listener::Unix(l) => l.as_raw_fd(),
        }
    }
}

impl fmt::Display for Listener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.address())
    }
}

/// Binds a TCP socket with `SO_REUSEADDR` (a restarted server can bind while old connections are in
/// TIME_WAIT) and the given backlog; the listener is non-blocking.
pub(crate) fn bind_tcp(addr: SocketAddr, backlog: i32) -> io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(backlog)?;
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}

/// Binds a Unix stream socket at `path`, removing a stale socket file left by a previous run (only
/// a socket, never another kind of file); with `mode`, the socket file gets those permission bits
/// before it listens. The listener is non-blocking.
pub(crate) fn bind_unix(path: &Path, backlog: i32, mode: Option<u32>) -> io::Result<UnixListener> {
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if meta.file_type().is_socket() {
            std::fs::remove_file(path)?;
        }
    }
    let socket = Socket::new(Domain::UNIX, Type::STREAM, None)?;
    socket.bind(&SockAddr::unix(path)?)?;
    if let Some(mode) = mode {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    }
    socket.listen(backlog)?;
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}

/// Turns a bound listener given by the user into a non-blocking one.
#[cfg_attr(not(feature = "prefork"), allow(dead_code))]
pub(crate) fn adopt(listener: Listener) -> io::Result<Listener> {
    match &listener {
        Listener::Tcp(l) => l.set_nonblocking(true)?,
        Listener::Unix(l) => l.set_nonblocking(true)?,
    }
    Ok(listener)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tcp_listeners_are_nonblocking_and_report_their_address() {
        let l = bind_tcp("127.0.0.1:0".parse().unwrap(), 16).unwrap();
        let addr = l.local_addr().unwrap();
        assert_eq!(
            l.accept().unwrap_err().kind(),
            io::ErrorKind::WouldBlock,
            "a listener must be non-blocking"
        );
        let listener = Listener::Tcp(l);
        assert_eq!(listener.address(), addr.to_string());
        assert!(listener.unix().is_none());
        let _client = std::net::TcpStream::connect(addr).unwrap();
    }

    #[test]
    fn a_stale_unix_socket_file_is_replaced_but_nothing_else_is() {
        let dir = std::env::temp_dir().join(format!("prefork-listeners-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("s.sock");
        drop(bind_unix(&path, 8, None).unwrap()); // leaves the socket file behind
        let l = bind_unix(&path, 8, None).unwrap();
        assert_eq!(
            Listener::Unix(l).address(),
            format!("unix:{}", path.display())
        );
        let file = dir.join("not-a-socket");
        std::fs::write(&file, "keep me").unwrap();
        assert!(bind_unix(&file, 8, None).is_err());
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "keep me");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_unix_socket_gets_the_mode_asked_for() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("prefork-net-mode-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("m.sock");
        let _l = bind_unix(&path, 8, Some(0o600)).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
