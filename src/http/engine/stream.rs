//! Writing a streamed answer ([`Body`]) to the socket from the worker that produced it: chunk by
//! chunk, waiting (`poll(2)` for writability, at most the write timeout each time) while the
//! socket's buffer is full; and the counts of streams ([`StreamStats`]).
//!
//! The connection stays in flight until the stream ends (it is armed for nothing), so no other
//! thread writes to the socket meanwhile; the answer's path (`answer.rs`) then hands the answer to
//! the connection as for a whole body.

use std::fmt;
use std::io::{self, Write};
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::http::body::{Body, READ_CHUNK};
use crate::http::engine::io::Link;
use crate::http::wire::response::StreamFraming;

/// Streamed answers so far, from [`ServerHandle::streams`](crate::http::ServerHandle::streams).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StreamStats {
    /// Streams sent to their end.
    pub completed: u64,
    /// Streams cut because the client took nothing more for
    /// [`write_timeout`](crate::http::ServerBuilder::write_timeout): each cost its worker that long.
    pub write_timeouts: u64,
    /// Streams cut because the client went away (a write failed).
    pub client_gone: u64,
    /// Streams cut because the body itself failed (its iterator or reader returned an error, or it
    /// did not match its declared length), or because the server stopped.
    pub failed: u64,
}

/// The counters behind [`StreamStats`].
#[derive(Debug, Default)]
pub(crate) struct StreamCounters {
    completed: AtomicU64,
    write_timeouts: AtomicU64,
    client_gone: AtomicU64,
    failed: AtomicU64,
}

impl StreamCounters {
    pub(crate) fn snapshot(&self) -> StreamStats {
        StreamStats {
            completed: self.completed.load(Ordering::Relaxed),
            write_timeouts: self.write_timeouts.load(Ordering::Relaxed),
            client_gone: self.client_gone.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
        }
    }

    pub(crate) fn count(&self, outcome: &Result<u64, StreamError>) {
        let c = match outcome {
            Ok(_) => &self.completed,
            Err(StreamError::Timeout(_)) => &self.write_timeouts,
            Err(StreamError::Gone(_)) => &self.client_gone,
            Err(_) => &self.failed,
        };
        c.fetch_add(1, Ordering::Relaxed);
    }
}

/// Why a stream ended before its end.
#[derive(Debug)]
pub(crate) enum StreamError {
    /// The client took nothing for this long.
    Timeout(Duration),
    /// Writing failed: the client went away.
    Gone(io::Error),
    /// The body's iterator or reader failed.
    Source(io::Error),
    /// The body did not match its declared length (declared, sent so far).
    Length(u64, u64),
    /// The server stopped.
    Stopped,
}

impl fmt::Display for StreamError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StreamError::Timeout(d) => {
                write!(f, "the client took nothing for {d:?} (write_timeout)")
            }
            StreamError::Gone(e) => write!(f, "the client went away ({e})"),
            StreamError::Source(e) => write!(f, "the body failed: {e}"),
            StreamError::Length(want, got) => write!(
                f,
                "the body did not match its length: {want} bytes declared, {got} or more produced"
            ),
            StreamError::Stopped => f.write_str("the server stopped"),
        }
    }
}

/// Write `head`, then `body` framed by `framing`, to the socket; `head_only`: the head alone.
/// Returns the body bytes sent, or why the stream was cut (the connection must then close). The
/// body is closed (dropped) either way.
pub(crate) fn send(
    link: &Link,
    head: Vec<u8>,
    mut body: Body,
    framing: StreamFraming,
    head_only: bool,
    timeout: Duration,
    stop: &AtomicBool,
) -> Result<u64, StreamError> {
    let fd = link.stream.raw_fd();
    let mut out = head;
    if head_only || framing == StreamFraming::NoBody {
        body.close();
        write_all(&link.stream, fd, &out, timeout)?;
        return Ok(0);
    }
    let result = pump(link, fd, &mut out, &mut body, framing, timeout, stop);
    body.close();
    result
}

fn pump(
    link: &Link,
    fd: RawFd,
    out: &mut Vec<u8>,
    body: &mut Body,
    framing: StreamFraming,
    timeout: Duration,
    stop: &AtomicBool,
) -> Result<u64, StreamError> {
    let chunked = framing == StreamFraming::Chunked;
    let mut sent = 0u64;
    let mut piece = Vec::with_capacity(if chunked { 0 } else { READ_CHUNK });
    loop {
        if stop.load(Ordering::Relaxed) {
            return Err(StreamError::Stopped);
        }
        // Chunked: the piece goes after its size line, so it is read into `piece` first; else
        // straight into `out`, behind the head (if not written yet).
        let n = if chunked {
            piece.clear();
            body.next_into(&mut piece)
        } else {
            body.next_into(out)
        }
        .map_err(StreamError::Source)?;
        if let StreamFraming::Length(want) = framing {
            if sent + n as u64 > want {
                return Err(StreamError::Length(want, sent + n as u64));
            }
            if n == 0 && sent < want {
                return Err(StreamError::Length(want, sent));
            }
        }
        if n == 0 {
            if chunked {
                out.extend_from_slice(b"0\r\n\r\n");
            }
            write_all(&link.stream, fd, out, timeout)?;
            return Ok(sent);
        }
        if chunked {
            let _ = write!(out, "{n:x}\r\n");
            out.extend_from_slice(&piece);
            out.extend_from_slice(b"\r\n");
        }
        write_all(&link.stream, fd, out, timeout)?;
        out.clear();
        sent += n as u64;
    }
}

/// Write all of `data` to the non-blocking socket, waiting for writability (at most `timeout` each
/// time the socket takes nothing).
fn write_all(
    mut stream: &crate::http::engine::io::Stream,
    fd: RawFd,
    mut data: &[u8],
    timeout: Duration,
) -> Result<(), StreamError> {
    while !data.is_empty() {
        match stream.write(data) {
            Ok(0) => return Err(StreamError::Gone(io::ErrorKind::WriteZero.into())),
            Ok(n) => data = &data[n..],
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => wait_writable(fd, timeout)?,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(StreamError::Gone(e)),
        }
    }
    // TLS: until the ciphertext is out too (a plain socket has nothing to flush).
    loop {
        match stream.flush() {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => wait_writable(fd, timeout)?,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(StreamError::Gone(e)),
        }
    }
}

/// Wait until `fd` can take more (or has failed: the next write says how), for at most `timeout`.
fn wait_writable(fd: RawFd, timeout: Duration) -> Result<(), StreamError> {
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(StreamError::Timeout(timeout));
        }
        let ms = left.as_millis().clamp(1, i32::MAX as u128) as i32;
        let mut p = libc::pollfd {
            fd,
            events: libc::POLLOUT,
            revents: 0,
        };
        // SAFETY: poll(2) on one valid pollfd on the stack; `fd` is the connection's socket, kept
        // open by the `Link` the caller holds for the whole call.
        let r = unsafe { libc::poll(&mut p, 1, ms) };
        if r > 0 {
            return Ok(());
        }
        if r < 0 {
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(StreamError::Gone(e));
            }
        }
    }
}
