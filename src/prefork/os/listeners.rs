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

use std::io;
use std::net::{SocketAddr, TcpListener};
use std::os::fd::{FromRawFd, RawFd};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};

use socket2::Socket;

pub(crate) use crate::net::adopt;
pub use crate::net::Listener;

/// The names systemd gave the sockets it passed (`LISTEN_FDNAMES`), in their order.
static LISTEN_NAMES: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();

/// The names systemd gave the sockets it passed (`LISTEN_FDNAMES`: the `FileDescriptorName=` of
/// each, or the socket unit's name), in the order of the listeners; empty when the listeners were
/// not passed by systemd. Read by the master before the first fork, so every worker sees them.
pub(crate) fn listen_fd_names() -> &'static [String] {
    LISTEN_NAMES.get().map_or(&[], Vec::as_slice)
}

/// The first file descriptor systemd passes (`SD_LISTEN_FDS_START`).
pub(crate) const LISTEN_FDS_START: RawFd = 3;

/// What to listen on, as given to the builder.
#[derive(Debug)]
pub(crate) enum Bind {
    Tcp(SocketAddr),
    /// With the socket file's permission bits.
    Unix(PathBuf, u32),
    Ready(Listener),
}

/// Binds a TCP socket for the workers to share (see [`crate::net::bind_tcp`]).
pub(crate) fn bind_tcp(addr: SocketAddr, backlog: i32) -> io::Result<TcpListener> {
    crate::net::bind_tcp(addr, backlog)
}

/// Binds a Unix socket for the workers to share, with permission bits `mode` (else what the
/// process's umask gives; see [`crate::net::bind_unix`]).
pub(crate) fn bind_unix(path: &Path, backlog: i32, mode: Option<u32>) -> io::Result<UnixListener> {
    crate::net::bind_unix(path, backlog, mode)
}

/// Reads systemd's socket-activation variables: `Some(n)` when `LISTEN_PID` is this process and
/// `LISTEN_FDS` is `n`. Unsets `LISTEN_PID`, `LISTEN_FDS` and `LISTEN_FDNAMES` either way (they are
/// meant for this process only, never for its children).
fn take_listen_fds_env() -> io::Result<Option<usize>> {
    let pid = std::env::var("LISTEN_PID").ok();
    let fds = std::env::var("LISTEN_FDS").ok();
    let names = std::env::var("LISTEN_FDNAMES").ok();
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
    if let Some(names) = names {
        let _ = LISTEN_NAMES.set(names.split(':').map(str::to_string).collect());
    }
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

/// A stop (not a reload, not an upgrade): from now on the kernel drops new connection attempts on
/// `listeners` (a socket filter that drops every packet: the client sees no answer to its SYN,
/// retries, and is refused once the socket is closed), while the connections already queued stay
/// for the draining workers to accept. Without it, a client that reconnects while the workers
/// drain (after a `Connection: close` answer) is queued on a socket nobody accepts on any more,
/// and reset when the master closes it: its request fails although it was sent to a server that
/// was still listening.
///
/// Not for sockets systemd passed: systemd keeps them, and what is queued there waits for the next
/// start. See [`accept_new_connections`] to undo it.
pub(crate) fn refuse_new_connections(listeners: &[Listener]) {
    use std::os::fd::AsRawFd;
    let mut drop_all = [libc::sock_filter {
        code: (libc::BPF_RET | libc::BPF_K) as u16,
        jt: 0,
        jf: 0,
        k: 0,
    }];
    let prog = libc::sock_fprog {
        len: 1,
        filter: drop_all.as_mut_ptr(),
    };
    for l in listeners {
        // SAFETY: setsockopt(2) SO_ATTACH_FILTER on a listener we own, with a valid one-instruction
        // classic BPF program (`ret #0`: drop) that the kernel copies before returning.
        let r = unsafe {
            libc::setsockopt(
                l.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_ATTACH_FILTER,
                (&prog as *const libc::sock_fprog).cast(),
                std::mem::size_of::<libc::sock_fprog>() as libc::socklen_t,
            )
        };
        if r != 0 {
            log::debug!(
                "cannot stop new connections on {}: {}",
                l.address(),
                io::Error::last_os_error()
            );
        }
    }
}

/// Undoes [`refuse_new_connections`] (the master is done: the sockets may be used again by the
/// caller).
pub(crate) fn accept_new_connections(listeners: &[Listener]) {
    use std::os::fd::AsRawFd;
    for l in listeners {
        let zero: libc::c_int = 0;
        // SAFETY: setsockopt(2) SO_DETACH_FILTER on a listener we own, with an int argument (the
        // kernel ignores its value); fails harmlessly (ENOENT) when no filter is attached.
        unsafe {
            libc::setsockopt(
                l.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_DETACH_FILTER,
                (&zero as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
    }
}
