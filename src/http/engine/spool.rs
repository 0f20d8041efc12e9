//! A large request body kept in a temporary file instead of memory (as nginx's
//! `client_body_temp`): the thread reading the request writes it there as it arrives ([`Spool`]),
//! and the handler reads it with `Read` from the [`RequestBody`] in the request's extensions.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;

/// A request body larger than [`spool_body_above`](crate::http::ServerBuilder::spool_body_above)
/// (default 1 MiB), in the request's extensions; the request's own `Vec<u8>` body is then empty.
/// It is a temporary file (in `std::env::temp_dir()`, removed from the directory as soon as it is
/// opened, so it goes away with its last handle), read from its start with `Read`.
///
/// `RequestBody` is `Clone` because a request's extensions must be; clones share one file and
/// one read position.
///
/// ```
/// use prefork_pool::http::{RequestBody, Server};
/// use std::io::{Read, Write};
///
/// let server = Server::builder()
///     .bind("127.0.0.1:0")
///     .spool_body_above(4)
///     .serve(|mut req, _ctx| {
///         let mut body = Vec::new();
///         match req.extensions_mut().remove::<RequestBody>() {
///             Some(mut spooled) => spooled.read_to_end(&mut body).unwrap(),
///             None => std::mem::take(req.body_mut()).len(),
///         };
///         format!("{} bytes\n", body.len())
///     })
///     .unwrap();
/// let mut s = std::net::TcpStream::connect(server.local_addrs()[0]).unwrap();
/// s.write_all(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\nConnection: close\r\n\r\n0123456789").unwrap();
/// let mut out = String::new();
/// s.read_to_string(&mut out).unwrap();
/// assert!(out.ends_with("10 bytes\n"));
/// server.shutdown(std::time::Duration::from_secs(5));
/// ```
#[derive(Clone)]
pub struct RequestBody {
    file: Arc<Mutex<File>>,
    len: u64,
}

impl fmt::Debug for RequestBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RequestBody")
            .field("len", &self.len)
            .finish()
    }
}

impl RequestBody {
    /// The body's size in bytes (after chunked decoding).
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the body is empty (never, for a spooled body; for completeness).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl Read for RequestBody {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.file.lock().read(buf)
    }
}

/// A body being written to its temporary file by the thread reading the request.
#[derive(Debug)]
pub(crate) struct Spool {
    file: File,
    len: u64,
}

impl Spool {
    /// A new temporary file, already unlinked.
    pub(crate) fn create() -> io::Result<Spool> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let dir = std::env::temp_dir();
        loop {
            let name = dir.join(format!(
                "prefork-pool-body-{}-{}",
                std::process::id(),
                NEXT.fetch_add(1, Ordering::Relaxed)
            ));
            match OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&name)
            {
                Ok(file) => {
                    std::fs::remove_file(&name)?;
                    return Ok(Spool { file, len: 0 });
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Moves what `buf` holds to the file.
    pub(crate) fn take_from(&mut self, buf: &mut Vec<u8>) -> io::Result<()> {
        self.file.write_all(buf)?;
        self.len += buf.len() as u64;
        buf.clear();
        Ok(())
    }

    /// The whole body, to be read from its start.
    pub(crate) fn finish(mut self) -> io::Result<RequestBody> {
        self.file.seek(SeekFrom::Start(0))?;
        Ok(RequestBody {
            file: Arc::new(Mutex::new(self.file)),
            len: self.len,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_spooled_body_reads_back_from_its_start() {
        let mut s = Spool::create().unwrap();
        let mut buf = b"hello ".to_vec();
        s.take_from(&mut buf).unwrap();
        assert!(buf.is_empty());
        buf.extend_from_slice(b"world");
        s.take_from(&mut buf).unwrap();
        let mut body = s.finish().unwrap();
        assert_eq!(body.len(), 11);
        let mut out = String::new();
        body.read_to_string(&mut out).unwrap();
        assert_eq!(out, "hello world");
    }
}
