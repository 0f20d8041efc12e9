//! Response serialisation (status line, the handler's headers, `Date`, `Content-Length`,
//! `Connection`; the head of a streamed answer, chunked or close-delimited) and every answer the server gives on its own: the short plain-text bodies for a
//! protocol refusal, a pool [`Error`], a refused self-call, and the application's hook that
//! renders them instead ([`ErrorPage`]).

use std::fmt;
use std::sync::Arc;

use http::header::{
    CONNECTION, CONTENT_LENGTH, CONTENT_TYPE, DATE, RETRY_AFTER, TRANSFER_ENCODING,
};
use http::{HeaderValue, Response, StatusCode, Version};

use crate::http::wire::parse::HttpError;
use crate::Error;

/// What the connection knows about the request when it writes the answer.
#[derive(Debug, Clone, Copy)]
pub(crate) struct WriteOpts {
    /// The request was `HEAD`: headers only.
    pub head: bool,
    /// The request's version (an HTTP/1.0 keep-alive answer says `Connection: keep-alive`).
    pub version: Version,
    /// The connection stays open after this answer (unless the handler says `Connection: close`).
    pub keep_alive: bool,
}

/// Serialise `resp` into `out`. Returns `(body bytes written, keep the connection open)`.
///
/// The handler's `Content-Length`, `Transfer-Encoding` and `Connection` headers are replaced by the
/// server's own (the body is complete, so it is always sent with a `Content-Length`), except that a
/// handler's `Connection: close` is honoured and a `HEAD` answer with an empty body keeps the
/// handler's `Content-Length`. `Date` is added unless the handler set one.
pub(crate) fn write_response(
    out: &mut Vec<u8>,
    resp: &Response<Vec<u8>>,
    opts: WriteOpts,
    date: &[u8],
) -> (usize, bool) {
    let status = resp.status();
    status_line(out, status);
    let body = resp.body();
    let no_body = status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED;
    let keep_handler_cl = (opts.head && body.is_empty()) || status == StatusCode::NOT_MODIFIED;
    let seen = handler_headers(out, resp, keep_handler_cl, date);
    let keep_alive = opts.keep_alive && !seen.close;
    let handler_cl = keep_handler_cl && seen.content_length;
    if !no_body && !handler_cl {
        content_length(out, body.len() as u64);
    }
    if !keep_alive {
        out.extend_from_slice(b"connection: close\r\n");
    } else if opts.version == Version::HTTP_10 {
        out.extend_from_slice(b"connection: keep-alive\r\n");
    }
    out.extend_from_slice(b"\r\n");
    let mut written = 0;
    if !no_body && !opts.head {
        out.extend_from_slice(body);
        written = body.len();
    }
    (written, keep_alive)
}

/// How a streamed body is delimited on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StreamFraming {
    /// No body at all (1xx, 204, 304): the stream is dropped unread.
    NoBody,
    /// `Content-Length: n`, then exactly `n` bytes.
    Length(u64),
    /// `Transfer-Encoding: chunked` (HTTP/1.1).
    Chunked,
    /// Neither: the body ends when the connection closes (HTTP/1.0, length unknown).
    UntilClose,
}

impl StreamFraming {
    /// The framing for a streamed answer with `status` to a request of `version`, given the
    /// body's length if known.
    pub(crate) fn choose(status: StatusCode, version: Version, len: Option<u64>) -> Self {
        if status.is_informational()
            || status == StatusCode::NO_CONTENT
            || status == StatusCode::NOT_MODIFIED
        {
            StreamFraming::NoBody
        } else if let Some(n) = len {
            StreamFraming::Length(n)
        } else if version == Version::HTTP_11 {
            StreamFraming::Chunked
        } else {
            StreamFraming::UntilClose
        }
    }
}

/// Serialise the head of a streamed answer into `out`: as [`write_response`], but framed by
/// `framing` (the handler's `Content-Length` and `Transfer-Encoding` replaced). A close-delimited
/// body closes the connection after it, unless the request was `HEAD` (no body follows). Returns
/// whether the connection stays open.
pub(crate) fn write_stream_head(
    out: &mut Vec<u8>,
    resp: &Response<Vec<u8>>,
    opts: WriteOpts,
    date: &[u8],
    framing: StreamFraming,
) -> bool {
    status_line(out, resp.status());
    let seen = handler_headers(out, resp, false, date);
    let keep_alive =
        opts.keep_alive && (opts.head || framing != StreamFraming::UntilClose) && !seen.close;
    match framing {
        StreamFraming::Length(n) => content_length(out, n),
        StreamFraming::Chunked => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
        StreamFraming::NoBody | StreamFraming::UntilClose => {}
    }
    if !keep_alive {
        out.extend_from_slice(b"connection: close\r\n");
    } else if opts.version == Version::HTTP_10 {
        out.extend_from_slice(b"connection: keep-alive\r\n");
    }
    out.extend_from_slice(b"\r\n");
    keep_alive
}

/// A short plain-text answer that says why: `"{why}\n"`, `Content-Type: text/plain`. A 503 gets
/// `Retry-After: 1`.
///
/// ```
/// let r = prefork_pool::http::error_response(503, "overloaded");
/// assert_eq!(r.status(), 503);
/// assert_eq!(r.headers()["retry-after"], "1");
/// assert_eq!(r.body(), b"overloaded\n");
/// ```
pub fn error_response(status: u16, why: &str) -> Response<Vec<u8>> {
    let mut body = Vec::with_capacity(why.len() + 1);
    body.extend_from_slice(why.as_bytes());
    body.push(b'\n');
    let mut r = Response::new(body);
    *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    if status == 503 {
        r.headers_mut()
            .insert(RETRY_AFTER, HeaderValue::from_static("1"));
    }
    r
}

/// The application's renderer of the answers the server makes on its own, set with
/// [`ServerBuilder::error_response`](crate::http::ServerBuilder::error_response).
pub(crate) type ErrorHook = dyn Fn(StatusCode, &str) -> Response<Vec<u8>> + Send + Sync;

/// How the server renders the answers it makes on its own: [`error_response`] (plain text), or the
/// application's hook. Whatever the hook returns, the status stays the one the server chose, and a
/// 503 gets `Retry-After: 1` unless the hook set one.
#[derive(Clone, Default)]
pub(crate) struct ErrorPage(Option<Arc<ErrorHook>>);

impl fmt::Debug for ErrorPage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_some() {
            "hook"
        } else {
            "text/plain"
        })
    }
}

impl ErrorPage {
    pub(crate) fn new(hook: Option<Arc<ErrorHook>>) -> Self {
        ErrorPage(hook)
    }

    /// The answer with `status` that says `why`, marked as the server's own ([`OwnAnswer`]).
    pub(crate) fn render(&self, status: u16, why: &str) -> Response<Vec<u8>> {
        let mut r = self.render_unmarked(status, why);
        r.extensions_mut().insert(OwnAnswer);
        r
    }

    fn render_unmarked(&self, status: u16, why: &str) -> Response<Vec<u8>> {
        let Some(hook) = &self.0 else {
            return error_response(status, why);
        };
        let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut r = hook(code, why);
        *r.status_mut() = code;
        if status == 503 && !r.headers().contains_key(RETRY_AFTER) {
            r.headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from_static("1"));
        }
        r
    }

    /// The answer for a pool error: its status ([`Error::http_status`]) and a short body that says
    /// why (the full message goes to the log, not to the client).
    pub(crate) fn pool_error(&self, e: &Error) -> Response<Vec<u8>> {
        self.render(e.http_status(), short_reason(e))
    }

    /// The answer for a protocol refusal (the connection closes after it).
    pub(crate) fn refusal(&self, e: &HttpError) -> Response<Vec<u8>> {
        self.render(e.status, &e.reason)
    }

    /// The answer for a request this process (or a sibling worker process) sent itself while
    /// every worker and every spare thread was busy.
    pub(crate) fn self_call_refused(&self) -> Response<Vec<u8>> {
        self.render(503, SELF_CALL_REFUSED)
    }
}

/// Marks an answer the server made on its own, for its metrics.
#[derive(Debug, Clone, Copy)]
pub(crate) struct OwnAnswer;

/// The short body the client gets for a pool error.
pub(crate) fn short_reason(e: &Error) -> &'static str {
    match e {
        Error::Overloaded { .. } => {
            "overloaded: every worker is busy and the queue is full; retry later"
        }
        Error::DeadlineExceeded { .. } => "deadline exceeded: the handler did not answer in time",
        Error::Panicked { .. } => "internal error: the handler panicked",
        Error::ShuttingDown { .. } => SHUTTING_DOWN,
        Error::Reentrant { .. } => "internal error: re-entrant call refused",
        Error::LoopDetected { .. } => "loop detected: the handler keeps calling itself",
    }
}

/// The reason of every 503 a stopping server answers: a request the Pool had not finished, or one
/// still arriving when the stop's deadline came.
pub(crate) const SHUTTING_DOWN: &str = "shutting down: retry on another server";

/// The body of the answer to a refused self-call.
const SELF_CALL_REFUSED: &str = "self-call refused: this server (or a sibling worker process) \
    called itself while every worker and every spare thread was busy; call it through the \
    Loopback instead";

/// What [`handler_headers`] saw of the handler's headers on its way through them (one pass, no
/// lookups).
struct Seen {
    /// A `Connection` header says `close`.
    close: bool,
    /// The handler set a `Content-Length`.
    content_length: bool,
}

/// Writes the handler's headers but the framing ones the server sets itself (`Connection`,
/// `Transfer-Encoding`, and `Content-Length` unless `keep_cl`), then `Date` if the handler set none.
fn handler_headers<B>(out: &mut Vec<u8>, resp: &Response<B>, keep_cl: bool, date: &[u8]) -> Seen {
    let mut seen = Seen {
        close: false,
        content_length: false,
    };
    let mut has_date = false;
    for (name, value) in resp.headers() {
        if name == CONNECTION {
            seen.close |= value
                .as_bytes()
                .split(|&b| b == b',')
                .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"close"));
            continue;
        }
        if name == TRANSFER_ENCODING {
            continue;
        }
        if name == CONTENT_LENGTH {
            seen.content_length = true;
            if !keep_cl {
                continue;
            }
        }
        has_date |= name == DATE;
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if !has_date {
        out.extend_from_slice(b"date: ");
        out.extend_from_slice(date);
        out.extend_from_slice(b"\r\n");
    }
    seen
}

/// Writes `content-length: n` and its CRLF (without the formatting machinery: it is on every
/// answer).
fn content_length(out: &mut Vec<u8>, n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    let mut n = n;
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(b"content-length: ");
    out.extend_from_slice(&digits[i..]);
    out.extend_from_slice(b"\r\n");
}

/// Writes the status line of an answer with `status`.
fn status_line(out: &mut Vec<u8>, status: StatusCode) {
    if status == StatusCode::OK {
        out.extend_from_slice(b"HTTP/1.1 200 OK\r\n");
        return;
    }
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("Unknown").as_bytes());
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(resp: &Response<Vec<u8>>, opts: WriteOpts) -> (String, usize, bool) {
        let mut out = Vec::new();
        let (n, ka) = write_response(&mut out, resp, opts, b"D");
        (String::from_utf8(out).unwrap(), n, ka)
    }

    #[test]
    fn serialises() {
        let mut r = Response::new(b"hi".to_vec());
        r.headers_mut().insert("x-a", HeaderValue::from_static("1"));
        r.headers_mut()
            .insert(CONTENT_LENGTH, HeaderValue::from_static("99"));
        let opts = WriteOpts {
            head: false,
            version: Version::HTTP_11,
            keep_alive: true,
        };
        let (s, n, ka) = render(&r, opts);
        assert_eq!(
            s,
            "HTTP/1.1 200 OK\r\nx-a: 1\r\ndate: D\r\ncontent-length: 2\r\n\r\nhi"
        );
        assert_eq!((n, ka), (2, true));
        let (s, n, ka) = render(
            &r,
            WriteOpts {
                head: true,
                version: Version::HTTP_10,
                keep_alive: false,
            },
        );
        assert!(
            s.ends_with("content-length: 2\r\nconnection: close\r\n\r\n"),
            "{s}"
        );
        assert_eq!((n, ka), (0, false));
        r.headers_mut()
            .insert(CONNECTION, HeaderValue::from_static("close"));
        let (s, _, ka) = render(&r, opts);
        assert!(!ka);
        assert!(s.contains("connection: close\r\n"));
        let mut nc = Response::new(Vec::new());
        *nc.status_mut() = StatusCode::NO_CONTENT;
        let (s, _, _) = render(&nc, opts);
        assert_eq!(s, "HTTP/1.1 204 No Content\r\ndate: D\r\n\r\n");
    }

    #[test]
    fn the_handlers_own_length_date_and_close() {
        let mut r = Response::new(Vec::new());
        r.headers_mut()
            .insert(CONTENT_LENGTH, HeaderValue::from_static("42"));
        r.headers_mut()
            .insert(DATE, HeaderValue::from_static("Mine"));
        r.headers_mut()
            .append(CONNECTION, HeaderValue::from_static("keep-alive"));
        r.headers_mut()
            .append(CONNECTION, HeaderValue::from_static("x, Close"));
        let head = WriteOpts {
            head: true,
            version: Version::HTTP_11,
            keep_alive: true,
        };
        let (s, n, ka) = render(&r, head);
        assert_eq!(
            s,
            "HTTP/1.1 200 OK\r\ncontent-length: 42\r\ndate: Mine\r\nconnection: close\r\n\r\n"
        );
        assert_eq!((n, ka), (0, false));
        *r.status_mut() = StatusCode::NOT_MODIFIED;
        r.headers_mut().remove(CONNECTION);
        let (s, _, ka) = render(
            &r,
            WriteOpts {
                head: false,
                ..head
            },
        );
        assert_eq!(
            s,
            "HTTP/1.1 304 Not Modified\r\ncontent-length: 42\r\ndate: Mine\r\n\r\n"
        );
        assert!(ka);
    }

    #[test]
    fn content_length_is_written_in_decimal() {
        for n in [0, 7, 10, 1234, 1 << 20, u64::MAX] {
            let mut out = Vec::new();
            content_length(&mut out, n);
            assert_eq!(out, format!("content-length: {n}\r\n").into_bytes());
        }
    }

    #[test]
    fn a_streamed_head_says_how_the_body_is_framed() {
        let mut r = Response::new(Vec::new());
        r.headers_mut()
            .insert(CONTENT_LENGTH, HeaderValue::from_static("5"));
        let opts = |head, version| WriteOpts {
            head,
            version,
            keep_alive: true,
        };
        let head = |o, f| {
            let mut out = Vec::new();
            let ka = write_stream_head(&mut out, &r, o, b"D", f);
            (String::from_utf8(out).unwrap(), ka)
        };
        let v11 = Version::HTTP_11;
        let v10 = Version::HTTP_10;
        assert_eq!(
            StreamFraming::choose(StatusCode::OK, v11, None),
            StreamFraming::Chunked
        );
        assert_eq!(
            StreamFraming::choose(StatusCode::OK, v10, None),
            StreamFraming::UntilClose
        );
        assert_eq!(
            StreamFraming::choose(StatusCode::OK, v10, Some(3)),
            StreamFraming::Length(3)
        );
        assert_eq!(
            StreamFraming::choose(StatusCode::NO_CONTENT, v11, Some(3)),
            StreamFraming::NoBody
        );
        assert_eq!(
            head(opts(false, v11), StreamFraming::Chunked),
            (
                "HTTP/1.1 200 OK\r\ndate: D\r\ntransfer-encoding: chunked\r\n\r\n".into(),
                true
            )
        );
        assert_eq!(
            head(opts(false, v10), StreamFraming::UntilClose),
            (
                "HTTP/1.1 200 OK\r\ndate: D\r\nconnection: close\r\n\r\n".into(),
                false
            )
        );
        assert!(
            head(opts(true, v10), StreamFraming::UntilClose).1,
            "HEAD: no body follows, the connection stays"
        );
        assert_eq!(
            head(opts(false, v11), StreamFraming::Length(9)).0,
            "HTTP/1.1 200 OK\r\ndate: D\r\ncontent-length: 9\r\n\r\n"
        );
    }
}
