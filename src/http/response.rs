//! Response serialisation: status line, the handler's headers, `Date`, `Content-Length`,
//! `Connection`; and the short plain-text answers the server gives on its own (limits, pool errors).

use std::io::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

use http::header::{
    CONNECTION, CONTENT_LENGTH, CONTENT_TYPE, DATE, RETRY_AFTER, TRANSFER_ENCODING,
};
use http::{HeaderValue, Response, StatusCode, Version};

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
    let mut keep_alive = opts.keep_alive;
    for v in resp.headers().get_all(CONNECTION) {
        if v.as_bytes()
            .split(|&b| b == b',')
            .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"close"))
        {
            keep_alive = false;
        }
    }
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("Unknown").as_bytes());
    out.extend_from_slice(b"\r\n");
    let body = resp.body();
    let no_body = status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED;
    let keep_handler_cl = (opts.head && body.is_empty()) || status == StatusCode::NOT_MODIFIED;
    for (name, value) in resp.headers() {
        if name == CONNECTION
            || name == TRANSFER_ENCODING
            || (name == CONTENT_LENGTH && !keep_handler_cl)
        {
            continue;
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if !resp.headers().contains_key(DATE) {
        out.extend_from_slice(b"date: ");
        out.extend_from_slice(date);
        out.extend_from_slice(b"\r\n");
    }
    let handler_cl = keep_handler_cl && resp.headers().contains_key(CONTENT_LENGTH);
    if !no_body && !handler_cl {
        let _ = write!(out, "content-length: {}\r\n", body.len());
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

const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// A UTC calendar time, broken down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Civil {
    pub year: i64,
    pub month: u32,
    pub day: u32,
    pub hour: u32,
    pub min: u32,
    pub sec: u32,
    pub weekday: usize,
}

/// Break seconds since the Unix epoch into a UTC date (Howard Hinnant's `civil_from_days`).
pub(crate) fn civil(secs: u64) -> Civil {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    Civil {
        year,
        month,
        day,
        hour: (rem / 3600) as u32,
        min: (rem / 60 % 60) as u32,
        sec: (rem % 60) as u32,
        weekday: (days.rem_euclid(7)) as usize,
    }
}

/// Seconds since the Unix epoch, now.
pub(crate) fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// An IMF-fixdate, as the `Date` header wants: `Sun, 06 Nov 1994 08:49:37 GMT`.
pub(crate) fn http_date(secs: u64) -> String {
    let c = civil(secs);
    format!(
        "{}, {:02} {} {} {:02}:{:02}:{:02} GMT",
        DAYS[c.weekday],
        c.day,
        MONTHS[c.month as usize - 1],
        c.year,
        c.hour,
        c.min,
        c.sec
    )
}

/// The access log's `%(t)s`: `[06/Nov/1994:08:49:37 +0000]` (always UTC).
pub(crate) fn log_date(secs: u64) -> String {
    let c = civil(secs);
    format!(
        "[{:02}/{}/{}:{:02}:{:02}:{:02} +0000]",
        c.day,
        MONTHS[c.month as usize - 1],
        c.year,
        c.hour,
        c.min,
        c.sec
    )
}

/// The `Date` header value, formatted at most once a second.
#[derive(Debug)]
pub(crate) struct DateCache {
    secs: u64,
    text: String,
}

impl DateCache {
    pub(crate) fn new() -> Self {
        let secs = now_secs();
        DateCache {
            secs,
            text: http_date(secs),
        }
    }

    pub(crate) fn get(&mut self) -> &[u8] {
        let now = now_secs();
        if now != self.secs {
            self.secs = now;
            self.text = http_date(now);
        }
        self.text.as_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(http_date(784_111_777), "Sun, 06 Nov 1994 08:49:37 GMT");
        assert_eq!(log_date(784_111_777), "[06/Nov/1994:08:49:37 +0000]");
        assert_eq!(http_date(951_782_400), "Tue, 29 Feb 2000 00:00:00 GMT");
        assert_eq!(http_date(0), "Thu, 01 Jan 1970 00:00:00 GMT");
    }

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
}
