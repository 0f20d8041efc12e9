//! A TLS connection over a non-blocking TCP socket (feature `tls`): what the engine's reads and
//! writes go through when the server has a certificate (`Stream::Tls` in `io.rs`).
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;
    use std::path::PathBuf;
    use std::time::{Duration, Instant};

    fn fixture(name: &str) -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/tls")
            .join(name)
    }

    /// A server `TlsStream` (non-blocking, a small send buffer: the client's receive buffer is
    /// left alone, as shrinking it on an open connection can stall TCP's window for seconds)
    /// and a blocking rustls client
    /// connected to it over loopback TCP.
    fn pair() -> (
        TlsStream,
        rustls::StreamOwned<rustls::ClientConnection, TcpStream>,
    ) {
        use rustls_pki_types::pem::PemObject;
        let files = crate::http::tls::TlsFiles {
            cert: Some((fixture("cert1.pem"), crate::settings::Source::Code)),
            key: Some((fixture("key1.pem"), crate::settings::Source::Code)),
        };
        let server_config = files.load().unwrap().unwrap();
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(rustls_pki_types::CertificateDer::from_pem_file(fixture("ca.pem")).unwrap())
            .unwrap();
        #[allow(deprecated)]
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let client_config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
        let client = rustls::ClientConnection::new(Arc::new(client_config), name).unwrap();
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let c = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let (s, _) = l.accept().unwrap();
        s.set_nonblocking(true).unwrap();
        socket2::SockRef::from(&s)
            .set_send_buffer_size(4096)
            .unwrap();
        (
            TlsStream::new(s, &server_config).unwrap(),
            rustls::StreamOwned::new(client, c),
        )
    }

    /// `read` until it has `want` bytes (the handshake happens on the way), waiting on
    /// `WouldBlock`; every read but the ones that said `WouldBlock` is full.
    fn read_exactly(s: &TlsStream, want: usize, chunk: usize) -> Vec<u8> {
        let end = Instant::now() + Duration::from_secs(20);
        let mut got = Vec::new();
        let mut buf = vec![0u8; chunk];
        while got.len() < want {
            assert!(Instant::now() < end, "read {} of {want} bytes", got.len());
            match s.read(&mut buf) {
                Ok(0) => panic!("the end after {} bytes", got.len()),
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    std::thread::sleep(Duration::from_millis(1))
                }
                Err(e) => panic!("read: {e}"),
            }
        }
        got
    }

    #[test]
    fn plaintext_held_by_rustls_is_handed_over_before_would_block() {
        let (s, mut c) = pair();
        // Three requests in one write (one record); read 50 bytes at a time.
        let req = [b"x".repeat(99), b"\n".to_vec()].concat();
        let three = req.repeat(3);
        let sent = three.clone();
        // The client's handshake waits for the server's answers: on a thread of its own.
        let client = std::thread::spawn(move || {
            c.write_all(&sent).unwrap();
            c.flush().unwrap();
            c
        });
        let first = read_exactly(&s, 50, 50);
        let _c = client.join().unwrap();
        // The socket is drained now: the other 250 bytes are in rustls only, and each read
        // hands 50 of them over, never `WouldBlock`.
        for _ in 0..5 {
            let mut buf = [0u8; 50];
            assert_eq!(s.read(&mut buf).unwrap(), 50);
        }
        assert_eq!(first, &three[..50]);
        let mut buf = [0u8; 50];
        let e = s.read(&mut buf).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::WouldBlock);
    }

    #[test]
    fn ciphertext_the_socket_did_not_take_waits_for_flush_and_none_is_lost() {
        let (s, mut c) = pair();
        let client = std::thread::spawn(move || {
            c.write_all(b"ping").unwrap();
            c.flush().unwrap();
            c
        });
        assert_eq!(read_exactly(&s, 4, 64), b"ping");
        let mut c = client.join().unwrap();
        // 1 MiB to a client that reads nothing yet: the socket fills.
        let total = 1 << 20;
        let data: Vec<u8> = (0..total).map(|i| (i % 251) as u8).collect();
        let mut sent = 0;
        loop {
            match s.write(&data[sent..]) {
                Ok(n) => sent += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => panic!("write: {e}"),
            }
        }
        assert!(sent < total, "the socket took all of 1 MiB");
        // What was taken but not sent waits in rustls, and says so.
        assert!(s.wants_write());
        assert_eq!(s.flush().unwrap_err().kind(), io::ErrorKind::WouldBlock);
        let reader = std::thread::spawn(move || {
            let mut got = vec![0u8; total];
            c.read_exact(&mut got).map(|()| got)
        });
        let end = Instant::now() + Duration::from_secs(20);
        while sent < total || s.wants_write() {
            assert!(Instant::now() < end, "sent {sent} of {total}");
            let r = if sent < total {
                s.write(&data[sent..])
            } else {
                s.flush().map(|()| 0)
            };
            match r {
                Ok(n) => sent += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    std::thread::sleep(Duration::from_millis(1))
                }
                Err(e) => panic!("write: {e}"),
            }
        }
        let got = reader.join().unwrap().expect("the client read it all");
        assert!(got == data, "the bytes differ");
    }
}
