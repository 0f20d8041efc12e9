//! Listening sockets: bound by the master before the first fork (so every worker accepts on the same
//! socket and the kernel spreads the connections), or inherited from systemd socket activation.
//!
//! One socket shared by all workers, not one `SO_REUSEPORT` socket per worker: with a single accept
//! queue, the connections waiting in the backlog of a worker that dies or drains are still there for
//! the others (with `SO_REUSEPORT` each socket has its own queue, and a closed socket resets the
//! connections waiting in it), and a new worker needs no new socket.
//!
//! Every listener is non-blocking (the flag belongs to the shared open file, so it is the same in
//! every process): a worker waits for it to be readable, then accepts until `WouldBlock`.

use std::fmt;
use std::io;
use std::net::{SocketAddr, TcpListener};
use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};

use socket2::{Domain, Protocol, SockAddr, Socket, Type};

/// The first file descriptor systemd passes (`SD_LISTEN_FDS_START`).
pub(crate) const LISTEN_FDS_START: RawFd = 3;

/// One listening socket, shared by the master and every worker.
#[derive(Debug)]
pub enum Listener {
    /// A TCP socket.
    Tcp(TcpListener),
    /// A Unix stream socket.
    Unix(UnixListener),
}

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

/// What to listen on, as given to the builder.
#[derive(Debug)]
pub(crate) enum Bind {
    Tcp(SocketAddr),
    Unix(PathBuf),
    Ready(Listener),
}

/// Binds a TCP socket with `SO_REUSEADDR` (a restarted server can bind while old connections are in
/// TIME_WAIT) and the given backlog.
pub(crate) fn bind_tcp(addr: SocketAddr, backlog: i32) -> io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(backlog)?;
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}

/// Binds a Unix stream socket at `path`, removing a stale socket file left by a previous run (only
/// a socket, never another kind of file).
pub(crate) fn bind_unix(path: &Path, backlog: i32) -> io::Result<UnixListener> {
    use std::os::unix::fs::FileTypeExt;
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if meta.file_type().is_socket() {
            std::fs::remove_file(path)?;
        }
    }
    let socket = Socket::new(Domain::UNIX, Type::STREAM, None)?;
    socket.bind(&SockAddr::unix(path)?)?;
    socket.listen(backlog)?;
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}

/// Turns a bound listener given by the user into a non-blocking one.
pub(crate) fn adopt(listener: Listener) -> io::Result<Listener> {
    match &listener {
        Listener::Tcp(l) => l.set_nonblocking(true)?,
        Listener::Unix(l) => l.set_nonblocking(true)?,
    }
    Ok(listener)
}

/// Reads systemd's socket-activation variables: `Some(n)` when `LISTEN_PID` is this process and
/// `LISTEN_FDS` is `n`. Unsets `LISTEN_PID`, `LISTEN_FDS` and `LISTEN_FDNAMES` either way (they are
/// meant for this process only, never for its children).
fn take_listen_fds_env() -> io::Result<Option<usize>> {
    let pid = std::env::var("LISTEN_PID").ok();
    let fds = std::env::var("LISTEN_FDS").ok();
    if pid.is_none() && fds.is_none() {
        return Ok(None);
    }
    for name in ["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"] {
        // The master is single-threaded, so changing the environment races with no reader.
        std::env::remove_var(name);
    }
    let (Some(pid), Some(fds)) = (pid, fds) else {
        return Ok(None);
    };
    if pid.trim() != std::process::id().to_string() {
        log::warn!(
            "LISTEN_PID={pid} is not this process ({}): ignoring LISTEN_FDS={fds} (they were meant \
             for another process; with systemd, make this binary the unit's main process)",
            std::process::id()
        );
        return Ok(None);
    }
    let n: usize = fds.trim().parse().map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("LISTEN_FDS={fds} is not a number of file descriptors"),
        )
    })?;
    Ok(Some(n))
}

/// Takes the listeners systemd passed (fds 3, 4, …) when `LISTEN_PID` is this process; `None` when
/// there are none. Each fd gets `FD_CLOEXEC` (so a program a worker runs does not inherit it).
pub(crate) fn from_systemd() -> io::Result<Option<Vec<Listener>>> {
    let Some(n) = take_listen_fds_env()? else {
        return Ok(None);
    };
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let fd = LISTEN_FDS_START + i as RawFd;
        // SAFETY: fcntl(2) F_GETFD on an integer fd only reads its flags; it fails with EBADF (checked)
        // if the fd is not open.
        let flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
        if flags < 0 {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!(
                    "LISTEN_FDS={n} but fd {fd} is not open: the socket-activation environment is \
                     stale; start the service through its .socket unit"
                ),
            ));
        }
        // SAFETY: fcntl(2) F_SETFD on the open fd checked above; it sets only the close-on-exec flag.
        unsafe { libc::fcntl(fd, libc::F_SETFD, flags | libc::FD_CLOEXEC) };
        // SAFETY: systemd passed this open fd to this process (LISTEN_PID is ours) for it to own; the
        // variables are unset above, so no other code of this process takes it a second time.
        let socket = unsafe { Socket::from_raw_fd(fd) };
        socket.set_nonblocking(true)?;
        let local = socket.local_addr()?;
        let listener = if local.is_unix() {
            Listener::Unix(socket.into())
        } else if local.as_socket().is_some() {
            Listener::Tcp(socket.into())
        } else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("fd {fd} from LISTEN_FDS is neither a TCP nor a Unix socket"),
            ));
        };
        out.push(listener);
    }
    Ok(Some(out))
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
        drop(bind_unix(&path, 8).unwrap()); // leaves the socket file behind
        let l = bind_unix(&path, 8).unwrap();
        assert_eq!(
            Listener::Unix(l).address(),
            format!("unix:{}", path.display())
        );
        let file = dir.join("not-a-socket");
        std::fs::write(&file, "keep me").unwrap();
        assert!(bind_unix(&file, 8).is_err());
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "keep me");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
