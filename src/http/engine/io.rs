//! The connected socket a request came on: [`Stream`] (TCP or Unix) and the [`Link`] the
//! connection shares with the thread that answers its request in flight.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::AtomicBool;

/// For a TCP connection: the client's address and ours.
pub(crate) type TcpAddrs = Option<(SocketAddr, SocketAddr)>;

/// A connected socket: TCP or Unix, non-blocking. Plain `std` sockets (the acceptor turns mio's
/// into these, a move of the descriptor): the lane watches them with its own epoll set, never
/// through mio, and the engine's unit tests drive a connection over `UnixStream::pair()`.
#[derive(Debug)]
pub(crate) enum Stream {
    Tcp(std::net::TcpStream),
    Unix(std::os::unix::net::UnixStream),
    /// TCP with TLS (feature `tls`, a server with a certificate): see `tls_stream.rs`.
    #[cfg(feature = "tls")]
    Tls(Box<super::tls_stream::TlsStream>),
}

impl Stream {
    /// Shut our side: the client reads EOF after what was written.
    pub(crate) fn shutdown_write(&self) {
        let _ = match self {
            Stream::Tcp(s) => s.shutdown(Shutdown::Write),
            Stream::Unix(s) => s.shutdown(Shutdown::Write),
            #[cfg(feature = "tls")]
            Stream::Tls(s) => {
                s.shutdown_write();
                Ok(())
            }
        };
    }

    /// Whether written bytes still wait to be sent (TLS: ciphertext the socket did not take);
    /// a plain socket never holds any. The connection then waits for room to write.
    #[inline]
    pub(crate) fn wants_write(&self) -> bool {
        match self {
            #[cfg(feature = "tls")]
            Stream::Tls(s) => s.wants_write(),
            _ => false,
        }
    }

    /// A plain socket (TCP or Unix), not TLS.
    pub(crate) fn is_plain(&self) -> bool {
        matches!(self, Stream::Tcp(_) | Stream::Unix(_))
    }

    pub(crate) fn raw_fd(&self) -> RawFd {
        match self {
            Stream::Tcp(s) => s.as_raw_fd(),
            Stream::Unix(s) => s.as_raw_fd(),
            #[cfg(feature = "tls")]
            Stream::Tls(s) => s.sock.as_raw_fd(),
        }
    }
}

impl Read for &Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match *self {
            Stream::Tcp(s) => (&*s).read(buf),
            Stream::Unix(s) => (&*s).read(buf),
            #[cfg(feature = "tls")]
            Stream::Tls(s) => s.read(buf),
        }
    }
}

impl Write for &Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match *self {
            Stream::Tcp(s) => (&*s).write(buf),
            Stream::Unix(s) => (&*s).write(buf),
            #[cfg(feature = "tls")]
            Stream::Tls(s) => s.write(buf),
        }
    }
    /// TLS: sends the ciphertext still waiting (`WouldBlock` while the socket takes no more);
    /// a plain socket has nothing to flush.
    #[inline]
    fn flush(&mut self) -> io::Result<()> {
        match *self {
            #[cfg(feature = "tls")]
            Stream::Tls(s) => s.flush(),
            _ => Ok(()),
        }
    }
}

/// The socket, shared between the connection (`Conn`, in its lane cell) and the thread that
/// answers its request in flight (which writes its answer straight to the socket, as much as the
/// socket takes).
#[derive(Debug)]
pub(crate) struct Link {
    pub stream: Stream,
    /// Set by the thread driving the connection when more input (a pipelined request, or the
    /// client's EOF) is buffered or arrives while a request is in flight: during a drain, the
    /// answer then keeps the connection alive, so that this input is answered too.
    pub pending: AtomicBool,
}
