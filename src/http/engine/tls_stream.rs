//! A TLS connection over a non-blocking TCP socket (feature `tls`): what the engine's reads and
//! writes go through when the server has a certificate ([`Stream::Tls`](super::io::Stream)).
//!
//! The rules it keeps for the engine, which reads until `WouldBlock` and writes as much as the
//! socket takes, from the lane's threads and the answering worker:
//!
//! - **Reads fill the buffer or drain the socket.** A read returns fewer bytes than asked only
//!   when the socket said `WouldBlock` (or the end): plaintext rustls decrypted and holds (a
//!   pipelined request in the same record as the one before it) is always handed over first, so
//!   the engine's "a short read means the socket is drained" holds, and no request waits for an
//!   epoll event that will not come.
//! - **Handshake records go out from the read path** (the server's hello answers the client's
//!   while the engine only reads); what the socket did not take is left for
//!   [`wants_write`](TlsStream::wants_write), which makes the connection wait for room to write.
//! - **A write counts the plaintext it took.** Its ciphertext is sent at once as far as the socket
//!   takes it; the rest waits in rustls, and [`flush`](TlsStream::flush) says `WouldBlock` until it
//!   is out: the engine's writers flush after their last byte, so an answer is never left half
//!   sent in a buffer nobody drains.
//! - **A client that does not speak TLS** (a plain-HTTP request, a bad hello) gets an alert and
//!   the connection closes; one warning per 10 s names the peer and rustls's reason.

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::Arc;

use parking_lot::Mutex;
use rustls::{ServerConfig, ServerConnection};

/// The most plaintext a write encrypts at once (rustls buffers its ciphertext until sent).
const WRITE_MAX: usize = 64 * 1024;

/// A TCP socket with its rustls server connection.
#[derive(Debug)]
pub(crate) struct TlsStream {
    pub(crate) sock: TcpStream,
    conn: Mutex<ServerConnection>,
}

impl TlsStream {
    pub(crate) fn new(sock: TcpStream, config: &Arc<ServerConfig>) -> io::Result<TlsStream> {
        let conn = ServerConnection::new(config.clone()).map_err(io::Error::other)?;
        Ok(TlsStream {
            sock,
            conn: Mutex::new(conn),
        })
    }

    /// Plaintext into `buf`: fills it, or returns fewer bytes once the socket has no more (see
    /// the module's rules). `Ok(0)`: the client closed.
    pub(crate) fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        let mut c = self.conn.lock();
        let mut filled = 0;
        let mut eof = false;
        let partial = |filled: usize, e: io::Error| if filled > 0 { Ok(filled) } else { Err(e) };
        loop {
            match c.reader().read(&mut buf[filled..]) {
                Ok(0) => return Ok(filled),
                Ok(n) => {
                    filled += n;
                    if filled == buf.len() {
                        return Ok(filled);
                    }
                    continue;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock && eof => return Ok(filled),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                // The client closed without a close_notify: an end of file for HTTP all the same.
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(filled),
                Err(e) => return partial(filled, e),
            }
            match c.read_tls(&mut &self.sock) {
                // The end: what was decrypted before it is still handed over.
                Ok(0) => eof = true,
                Ok(_) => {
                    if let Err(e) = c.process_new_packets() {
                        // rustls queued an alert for the client: sent if the socket takes it.
                        let _ = c.write_tls(&mut &self.sock);
                        self.log_refused(&e);
                        return partial(filled, io::Error::new(io::ErrorKind::InvalidData, e));
                    }
                    if c.wants_write() {
                        match flush_tls(&mut c, &self.sock) {
                            Ok(()) => {}
                            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                            Err(e) => return partial(filled, e),
                        }
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return partial(filled, e),
            }
        }
    }

    /// Encrypts (a part of) `buf` and sends as much of its ciphertext as the socket takes:
    /// `Ok(n)`, the plaintext taken. `WouldBlock` while earlier ciphertext is still waiting.
    pub(crate) fn write(&self, buf: &[u8]) -> io::Result<usize> {
        let mut c = self.conn.lock();
        flush_tls(&mut c, &self.sock)?;
        let n = c.writer().write(&buf[..buf.len().min(WRITE_MAX)])?;
        match flush_tls(&mut c, &self.sock) {
            Ok(()) => Ok(n),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(n),
            Err(e) => Err(e),
        }
    }

    /// Sends the ciphertext still waiting: `WouldBlock` while the socket takes no more of it.
    pub(crate) fn flush(&self) -> io::Result<()> {
        let mut c = self.conn.lock();
        flush_tls(&mut c, &self.sock)
    }

    /// Whether ciphertext waits for room in the socket.
    pub(crate) fn wants_write(&self) -> bool {
        self.conn.lock().wants_write()
    }

    /// A close_notify, sent if the socket takes it, then our side shut.
    pub(crate) fn shutdown_write(&self) {
        let mut c = self.conn.lock();
        c.send_close_notify();
        let _ = flush_tls(&mut c, &self.sock);
        let _ = self.sock.shutdown(Shutdown::Write);
    }

    fn log_refused(&self, e: &rustls::Error) {
        let peer = self.sock.peer_addr().ok().map(|a| a.ip());
        crate::http::tls::log_handshake_failure(peer, e);
    }
}

/// Writes rustls's pending ciphertext to the socket until none is left (`Ok`) or the socket
/// takes no more (`WouldBlock`).
fn flush_tls(c: &mut ServerConnection, mut sock: &TcpStream) -> io::Result<()> {
    while c.wants_write() {
        match c.write_tls(&mut sock) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
