//! [`Body`]: a response body sent as it is produced (an iterator of chunks, a [`Read`], a file),
//! carried in the extensions of an [`HttpResponse`] whose own `Vec<u8>` body stays empty.
//!
//! A handler returns `http::Response<Body>` (or a bare [`Body`], or `(StatusCode, Body)`); it
//! becomes an [`HttpResponse`] with the `Body` in its extensions, so the pool's response type,
//! the [`Loopback`](super::Loopback) and tests keep `Response<Vec<u8>>`. The worker that ran the
//! handler then writes the body to the socket chunk by chunk (`stream.rs`).

use std::fmt;
use std::fs::File;
use std::io::{self, Read};
use std::sync::Arc;

use http::header::CONTENT_TYPE;
use http::{HeaderValue, Response};
use parking_lot::Mutex;

use super::handler::IntoResponse;
use super::types::HttpResponse;

/// The chunk iterator a [`Body::stream`] holds.
type Chunks = Box<dyn Iterator<Item = io::Result<Vec<u8>>> + Send>;

/// Where a streamed body's bytes come from.
enum Source {
    /// Chunks; `rest` is what a `Read` caller has not taken yet of the last one.
    Chunks {
        it: Chunks,
        rest: Vec<u8>,
        pos: usize,
    },
    Reader(Box<dyn Read + Send>),
}

/// A response body sent as it is produced, with backpressure: the worker that ran the handler
/// pulls the next chunk only when the socket has taken the previous one.
///
/// - On HTTP/1.1 it is sent `Transfer-Encoding: chunked`; on HTTP/1.0 it is delimited by closing
///   the connection. A body of known length ([`Body::file`], [`Body::with_length`], or a
///   `Content-Length` the handler set) is sent with that `Content-Length` instead; a body that
///   turns out shorter or longer closes the connection (the client sees it incomplete).
/// - `HEAD` gets the headers only; the body is dropped unread. So do 204 and 304.
/// - While the client does not take more, the worker waits, at most
///   [`write_timeout`](super::ServerBuilder::write_timeout) each time; then the connection is
///   closed, the body dropped, and the stream counted in
///   [`ServerHandle::streams`](super::ServerHandle::streams).
/// - A client that went away is noticed at the next write: the body is dropped (its iterator is
///   no longer pulled, its `Drop` runs).
/// - An error from the iterator or the reader ends the answer early: the connection is closed
///   without the last chunk, so the client knows the body is incomplete.
///
/// **Each open stream holds a worker thread** until it ends (the pool's deadline no longer
/// applies once the handler has returned): a server with Server-Sent Events to 100 clients needs
/// at least 100 workers plus those for its other requests
/// (`.pool(|p| p.workers(120))`).
///
/// `Body` is `Clone` because a response's extensions must be; clones share one stream.
///
/// ```
/// use prefork_pool::http::{Body, Server};
/// use prefork_pool::http::types::http::Response;
/// use std::io::{Read, Write};
///
/// let server = Server::builder()
///     .bind("127.0.0.1:0")
///     .serve(|_req, _ctx| {
///         let chunks = (0..3).map(|i| Ok(format!("part {i}\n").into_bytes()));
///         Response::builder()
///             .header("content-type", "text/plain")
///             .body(Body::stream(chunks))
///             .unwrap()
///     })
///     .unwrap();
/// let mut s = std::net::TcpStream::connect(server.local_addrs()[0]).unwrap();
/// s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
/// let mut out = String::new();
/// s.read_to_string(&mut out).unwrap();
/// assert!(out.contains("transfer-encoding: chunked\r\n"));
/// assert!(out.ends_with("7\r\npart 0\n\r\n7\r\npart 1\n\r\n7\r\npart 2\n\r\n0\r\n\r\n"));
/// server.shutdown(std::time::Duration::from_secs(5));
/// ```
#[derive(Clone)]
pub struct Body {
    source: Arc<Mutex<Option<Source>>>,
    len: Option<u64>,
}

impl fmt::Debug for Body {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Body").field("len", &self.len).finish()
    }
}

/// How many bytes the worker reads from a [`Body::reader`] at a time (and so the most it holds).
pub(crate) const READ_CHUNK: usize = 64 * 1024;

impl Body {
    fn new(source: Source, len: Option<u64>) -> Body {
        Body {
            source: Arc::new(Mutex::new(Some(source))),
            len,
        }
    }

    /// A body made of the chunks an iterator yields, each sent as it comes (an empty chunk is
    /// skipped). An `Err` ends the answer early (the connection is closed).
    ///
    /// For Server-Sent Events, yield one event per chunk and block in `next` until the next one
    /// is due; a client that went away is noticed when the next event is written.
    ///
    /// ```
    /// use prefork_pool::http::{Body, IntoResponse};
    /// let r = Body::stream(["a", "b"].map(|s| Ok(s.as_bytes().to_vec()))).into_response();
    /// assert!(r.body().is_empty(), "the bytes are in the Body, in the extensions");
    /// assert!(r.extensions().get::<Body>().is_some());
    /// ```
    pub fn stream<I>(chunks: I) -> Body
    where
        I: IntoIterator<Item = io::Result<Vec<u8>>>,
        I::IntoIter: Send + 'static,
    {
        let it: Chunks = Box::new(chunks.into_iter());
        Body::new(
            Source::Chunks {
                it,
                rest: Vec::new(),
                pos: 0,
            },
            None,
        )
    }

    /// A body read from `r`, 64 KiB at a time, until it returns 0.
    ///
    /// ```
    /// use prefork_pool::http::Body;
    /// use std::io::Read;
    /// let mut b = Body::reader(std::io::Cursor::new(b"bytes".to_vec()));
    /// let mut s = String::new();
    /// b.read_to_string(&mut s).unwrap();
    /// assert_eq!(s, "bytes");
    /// ```
    pub fn reader(r: impl Read + Send + 'static) -> Body {
        Body::new(Source::Reader(Box::new(r)), None)
    }

    /// A file's contents, from its current position to its end, sent with a `Content-Length`
    /// (its size now, less the position). Fails only if the file's size cannot be read.
    ///
    /// ```
    /// use prefork_pool::http::Body;
    /// let f = std::fs::File::open("Cargo.toml").unwrap();
    /// let size = f.metadata().unwrap().len();
    /// assert_eq!(Body::file(f).unwrap().length(), Some(size));
    /// ```
    pub fn file(mut f: File) -> io::Result<Body> {
        use std::io::Seek;
        let size = f.metadata()?.len();
        let pos = f.stream_position()?;
        Ok(Body::new(
            Source::Reader(Box::new(f)),
            Some(size.saturating_sub(pos)),
        ))
    }

    /// Declares the body's length: it is sent with this `Content-Length` instead of chunked (and
    /// keeps an HTTP/1.0 connection open). A body that ends up shorter or longer closes the
    /// connection.
    ///
    /// ```
    /// use prefork_pool::http::Body;
    /// assert_eq!(Body::reader(std::io::empty()).with_length(0).length(), Some(0));
    /// ```
    pub fn with_length(mut self, len: u64) -> Body {
        self.len = Some(len);
        self
    }

    /// The length declared with [`with_length`](Self::with_length) or taken from the file.
    pub fn length(&self) -> Option<u64> {
        self.len
    }

    /// Takes the streamed body out of a response's extensions (`None` for a whole-body response),
    /// e.g. to read an answer a [`Loopback`](super::Loopback) call returned.
    ///
    /// ```
    /// use prefork_pool::http::{Body, IntoResponse};
    /// use std::io::Read;
    /// let mut r = Body::stream([Ok(b"x".to_vec())]).into_response();
    /// let mut bytes = Vec::new();
    /// Body::take(&mut r).unwrap().read_to_end(&mut bytes).unwrap();
    /// assert_eq!(bytes, b"x");
    /// assert!(Body::take(&mut r).is_none());
    /// ```
    pub fn take(resp: &mut HttpResponse) -> Option<Body> {
        resp.extensions_mut().remove::<Body>()
    }

    /// The next piece of the body, appended to `out`: `Ok(0)` at the end. Pieces are whole chunks
    /// of an iterator, or up to [`READ_CHUNK`] bytes of a reader.
    pub(crate) fn next_into(&mut self, out: &mut Vec<u8>) -> io::Result<usize> {
        let mut guard = self.source.lock();
        let Some(source) = guard.as_mut() else {
            return Ok(0);
        };
        match source {
            Source::Chunks { it, rest, pos } => {
                if *pos < rest.len() {
                    out.extend_from_slice(&rest[*pos..]);
                    let n = rest.len() - *pos;
                    *rest = Vec::new();
                    *pos = 0;
                    return Ok(n);
                }
                loop {
                    match it.next() {
                        None => return Ok(0),
                        Some(Err(e)) => return Err(e),
                        Some(Ok(c)) if c.is_empty() => {}
                        Some(Ok(c)) => {
                            out.extend_from_slice(&c);
                            return Ok(c.len());
                        }
                    }
                }
            }
            Source::Reader(r) => {
                let start = out.len();
                out.resize(start + READ_CHUNK, 0);
                let got = loop {
                    match r.read(&mut out[start..]) {
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        other => break other,
                    }
                };
                out.truncate(start + *got.as_ref().unwrap_or(&0));
                got
            }
        }
    }

    /// Drops the source now (its iterator or reader is not pulled again; its `Drop` runs).
    pub(crate) fn close(&self) {
        let source = self.source.lock().take();
        drop(source);
    }
}

impl Read for Body {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut guard = self.source.lock();
        let Some(source) = guard.as_mut() else {
            return Ok(0);
        };
        match source {
            Source::Reader(r) => r.read(buf),
            Source::Chunks { it, rest, pos } => {
                while *pos >= rest.len() {
                    match it.next() {
                        None => return Ok(0),
                        Some(Err(e)) => return Err(e),
                        Some(Ok(c)) => {
                            *rest = c;
                            *pos = 0;
                        }
                    }
                }
                let n = buf.len().min(rest.len() - *pos);
                buf[..n].copy_from_slice(&rest[*pos..*pos + n]);
                *pos += n;
                Ok(n)
            }
        }
    }
}

/// The response with the body streamed: its status and headers as they are, the [`Body`] in the
/// extensions, an empty `Vec` body.
impl IntoResponse for Response<Body> {
    fn into_response(self) -> HttpResponse {
        let (mut parts, body) = self.into_parts();
        parts.extensions.insert(body);
        Response::from_parts(parts, Vec::new())
    }
}

/// 200, `application/octet-stream`, the body streamed.
impl IntoResponse for Body {
    fn into_response(self) -> HttpResponse {
        let mut r = Response::new(self).into_response();
        r.headers_mut().insert(
            CONTENT_TYPE,
            HeaderValue::from_static("application/octet-stream"),
        );
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::StatusCode;

    #[test]
    fn pieces_come_out_in_order_and_clones_share_the_stream() {
        let mut b = Body::stream(vec![Ok(b"ab".to_vec()), Ok(Vec::new()), Ok(b"c".to_vec())]);
        let mut other = b.clone();
        let mut out = Vec::new();
        assert_eq!(b.next_into(&mut out).unwrap(), 2);
        let mut one = [0u8; 1];
        assert_eq!(other.read(&mut one).unwrap(), 1);
        assert_eq!(&one, b"c");
        assert_eq!(b.next_into(&mut out).unwrap(), 0);
        assert_eq!(out, b"ab");
        let mut r = Body::reader(io::Cursor::new(vec![7u8; READ_CHUNK + 1]));
        let mut out = Vec::new();
        assert_eq!(r.next_into(&mut out).unwrap(), READ_CHUNK);
        assert_eq!(r.next_into(&mut out).unwrap(), 1);
        assert_eq!(r.next_into(&mut out).unwrap(), 0);
        assert_eq!(out.len(), READ_CHUNK + 1);
        r.close();
        assert_eq!(r.next_into(&mut out).unwrap(), 0);
    }

    #[test]
    fn a_status_and_a_body_make_a_streamed_response() {
        let mut r = (StatusCode::ACCEPTED, Body::reader(io::empty())).into_response();
        assert_eq!(r.status(), 202);
        assert_eq!(r.headers()[CONTENT_TYPE], "application/octet-stream");
        assert!(Body::take(&mut r).is_some());
    }
}
