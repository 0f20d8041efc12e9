//! The access log: gunicorn's atom format, parsed once when the server is built, one line per
//! answered request through the `log` facade (target `prefork_pool::access`, level `info`).

use std::fmt::Write as _;
use std::time::Duration;

use http::header::{HeaderName, HeaderValue, REFERER, USER_AGENT};
use http::{HeaderMap, Method, Uri, Version};

use crate::BuildError;

/// The `log` target access lines are written to.
pub const ACCESS_TARGET: &str = "prefork_pool::access";

/// gunicorn's default `access_log_format`.
pub const DEFAULT_ACCESS_LOG_FORMAT: &str =
    r#"%(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s""#;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Lit(String),
    Atom(u8),
    ReqHeader(usize),
    RespHeader(HeaderName),
    /// The whole line as a JSON object (`AccessLogFormat::json`).
    Json,
}

/// A parsed access log format: gunicorn's atoms `%(h)s` (remote address: the client a trusted
/// proxy names, see [`PeerAddr`](crate::http::PeerAddr)), `%(l)s` (`-`), `%(u)s`
/// (user: `-`, basic auth is not decoded), `%(t)s` (`[22/Nov/2026:14:35:00 +0000]`, always UTC),
/// `%(r)s` (request line), `%(s)s` (status), `%(m)s` (method), `%(U)s` (path), `%(q)s` (query),
/// `%(H)s` (protocol), `%(b)s` (body bytes, `-` for none), `%(B)s` (body bytes), `%(f)s` (referer),
/// `%(a)s` (user agent), `%(T)s` (seconds), `%(D)s` (microseconds), `%(M)s` (milliseconds), `%(L)s`
/// (decimal seconds), `%(p)s` (`<pid>`), `%({name}i)s` (a request header), `%({name}o)s` (a response
/// header), and `%%`. Any other atom is refused when the server is built. The format `json` is
/// [`AccessLogFormat::json`]: one JSON object per line.
///
/// ```
/// use prefork_pool::http::AccessLogFormat;
/// assert!(AccessLogFormat::parse(r#"%(h)s "%(r)s" %(s)s %({x-request-id}i)s"#).is_ok());
/// let err = AccessLogFormat::parse("%(z)s").unwrap_err();
/// assert_eq!(err.field, "access_log_format");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessLogFormat {
    pieces: Vec<Piece>,
    /// Request headers the format needs, captured before the request goes to the handler.
    req_headers: Vec<HeaderName>,
}

impl Default for AccessLogFormat {
    fn default() -> Self {
        AccessLogFormat::parse(DEFAULT_ACCESS_LOG_FORMAT).expect("the default format parses")
    }
}

fn refuse(fmt: &str, why: &str) -> BuildError {
    BuildError::new(
        "access_log_format",
        format!("{fmt:?}"),
        format!(
            "{why}; use `json`, or gunicorn atoms %(h)s %(l)s %(u)s %(t)s %(r)s %(s)s %(m)s %(U)s %(q)s %(H)s \
             %(b)s %(B)s %(f)s %(a)s %(T)s %(D)s %(M)s %(L)s %(p)s %({{header}}i)s %({{header}}o)s %%"
        ),
    )
}

impl AccessLogFormat {
    /// One JSON object per line, for log shippers:
    /// `{"time":"2026-12-07T06:09:36Z","remote_addr":"127.0.0.1","method":"GET","path":"/a",
    /// "query":"b=1","protocol":"HTTP/1.1","status":200,"bytes":12,"referer":null,
    /// "user_agent":"curl/8","duration_us":1500,"pid":4242}` (`query`, `referer`, `user_agent`
    /// are `null` when absent; `remote_addr` as `%(h)s`; `bytes` the body's). What the client sent
    /// is escaped so the line stays one valid, ASCII JSON object: control characters and bytes
    /// above 0x7F as `\u00XX`. `AccessLogFormat::parse("json")` is the same.
    ///
    /// ```
    /// use prefork_pool::http::AccessLogFormat;
    /// assert_eq!(AccessLogFormat::parse("json").unwrap(), AccessLogFormat::json());
    /// ```
    pub fn json() -> Self {
        AccessLogFormat {
            pieces: vec![Piece::Json],
            req_headers: vec![REFERER, USER_AGENT],
        }
    }

    /// Parse a gunicorn-style format (or `json`: [`json`](Self::json)). Refused with a
    /// [`BuildError`] naming `access_log_format` when an atom is unknown or unterminated.
    pub fn parse(fmt: &str) -> Result<Self, BuildError> {
        if fmt.trim() == "json" {
            return Ok(Self::json());
        }
        let mut pieces = Vec::new();
        let mut req_headers: Vec<HeaderName> = Vec::new();
        let mut lit = String::new();
        let mut rest = fmt;
        while let Some(i) = rest.find('%') {
            lit.push_str(&rest[..i]);
            rest = &rest[i + 1..];
            if let Some(r) = rest.strip_prefix('%') {
                lit.push('%');
                rest = r;
                continue;
            }
            let Some(r) = rest.strip_prefix('(') else {
                return Err(refuse(
                    fmt,
                    "a `%` must start an atom `%(x)s` or be doubled `%%`",
                ));
            };
            let Some(close) = r.find(")s") else {
                return Err(refuse(fmt, "unterminated atom (expected `)s`)"));
            };
            let atom = &r[..close];
            rest = &r[close + 2..];
            if !lit.is_empty() {
                pieces.push(Piece::Lit(std::mem::take(&mut lit)));
            }
            if let Some(inner) = atom.strip_prefix('{') {
                let (name, kind) = if let Some(n) = inner.strip_suffix("}i") {
                    (n, 'i')
                } else if let Some(n) = inner.strip_suffix("}o") {
                    (n, 'o')
                } else {
                    return Err(refuse(fmt, &format!("unknown atom `{atom}`")));
                };
                let name = HeaderName::from_bytes(name.to_ascii_lowercase().as_bytes())
                    .map_err(|_| refuse(fmt, &format!("`{name}` is not a header name")))?;
                if kind == 'i' {
                    pieces.push(Piece::ReqHeader(index_of(&mut req_headers, name)));
                } else {
                    pieces.push(Piece::RespHeader(name));
                }
                continue;
            }
            match atom.as_bytes() {
                [c] if b"hlutrsmUqHbBfaTDMLp".contains(c) => {
                    if *c == b'f' {
                        pieces.push(Piece::ReqHeader(index_of(&mut req_headers, REFERER)));
                    } else if *c == b'a' {
                        pieces.push(Piece::ReqHeader(index_of(&mut req_headers, USER_AGENT)));
                    } else {
                        pieces.push(Piece::Atom(*c));
                    }
                }
                _ => return Err(refuse(fmt, &format!("unknown atom `{atom}`"))),
            }
        }
        lit.push_str(rest);
        if !lit.is_empty() {
            pieces.push(Piece::Lit(lit));
        }
        Ok(AccessLogFormat {
            pieces,
            req_headers,
        })
    }

    /// Capture what the log line will need from the request before it goes to the handler.
    pub(crate) fn capture(
        &self,
        method: &Method,
        uri: &Uri,
        version: Version,
        headers: &HeaderMap,
    ) -> LogRequest {
        LogRequest {
            method: method.clone(),
            uri: uri.clone(),
            version,
            headers: self
                .req_headers
                .iter()
                .map(|n| headers.get(n).cloned())
                .collect(),
        }
    }

    /// Render one line. (One argument per thing a line can show; a struct would only rename them.)
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn render(
        &self,
        peer: &str,
        req: &LogRequest,
        status: u16,
        resp_headers: &HeaderMap,
        body_bytes: usize,
        took: Duration,
        now_secs: u64,
    ) -> String {
        let mut s = String::with_capacity(128);
        self.render_into(
            &mut s,
            peer,
            req,
            status,
            resp_headers,
            body_bytes,
            took,
            now_secs,
        );
        s
    }

    /// [`render`](Self::render), appended to `s` (the log sink's per-thread buffer).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn render_into(
        &self,
        s: &mut String,
        peer: &str,
        req: &LogRequest,
        status: u16,
        resp_headers: &HeaderMap,
        body_bytes: usize,
        took: Duration,
        now_secs: u64,
    ) {
        for p in &self.pieces {
            match p {
                Piece::Json => crate::http::ops::access_json::JsonLine {
                    peer,
                    method: &req.method,
                    uri: &req.uri,
                    version: req.version,
                    status,
                    body_bytes,
                    referer: req.headers[0].as_ref().map(HeaderValue::as_bytes),
                    user_agent: req.headers[1].as_ref().map(HeaderValue::as_bytes),
                    took,
                    now_secs,
                }
                .write(s),
                Piece::Lit(l) => s.push_str(l),
                Piece::ReqHeader(i) => match &req.headers[*i] {
                    Some(v) => esc(s, v.as_bytes()),
                    None => s.push('-'),
                },
                Piece::RespHeader(n) => match resp_headers.get(n) {
                    Some(v) => esc(s, v.as_bytes()),
                    None => s.push('-'),
                },
                Piece::Atom(c) => match c {
                    b'h' => esc(s, peer.as_bytes()),
                    b'l' | b'u' => s.push('-'),
                    b't' => LOG_DATE.with(|d| {
                        let mut d = d.borrow_mut();
                        if d.0 != now_secs || d.1.is_empty() {
                            *d = (now_secs, crate::http::wire::date::log_date(now_secs));
                        }
                        s.push_str(&d.1);
                    }),
                    b'r' => {
                        let target = req.uri.path_and_query().map_or("/", |p| p.as_str());
                        esc(s, req.method.as_str().as_bytes());
                        s.push(' ');
                        esc(s, target.as_bytes());
                        s.push(' ');
                        s.push_str(version_str(req.version));
                    }
                    b's' => {
                        let _ = write!(s, "{status}");
                    }
                    b'm' => esc(s, req.method.as_str().as_bytes()),
                    b'U' => esc(s, req.uri.path().as_bytes()),
                    b'q' => esc(s, req.uri.query().unwrap_or("").as_bytes()),
                    b'H' => s.push_str(version_str(req.version)),
                    b'b' if body_bytes == 0 => s.push('-'),
                    b'b' | b'B' => {
                        let _ = write!(s, "{body_bytes}");
                    }
                    b'T' => {
                        let _ = write!(s, "{}", took.as_secs());
                    }
                    b'D' => {
                        let _ = write!(s, "{}", took.as_micros());
                    }
                    b'M' => {
                        let _ = write!(s, "{}", took.as_millis());
                    }
                    b'L' => {
                        let _ = write!(s, "{:.6}", took.as_secs_f64());
                    }
                    b'p' => {
                        let _ = write!(s, "<{}>", std::process::id());
                    }
                    _ => {}
                },
            }
        }
    }
}

/// Writes one access line: to the crate's log sink when it has an access log (formatted here into
/// the thread's buffer, written by the log thread), else through the `log` facade (target
/// [`ACCESS_TARGET`], level `info`) when that is enabled. What both fronts (the HTTP server and
/// the tower mode) call once per answered request.
#[allow(clippy::too_many_arguments)]
pub(crate) fn write_line(
    fmt: &AccessLogFormat,
    peer: &str,
    req: &LogRequest,
    status: u16,
    resp_headers: &HeaderMap,
    body_bytes: usize,
    took: Duration,
) {
    let now = crate::http::wire::date::now_secs();
    if crate::log_sink::access_enabled() {
        crate::log_sink::access(|s| {
            fmt.render_into(s, peer, req, status, resp_headers, body_bytes, took, now);
        });
    } else if log::log_enabled!(target: ACCESS_TARGET, log::Level::Info) {
        let line = fmt.render(peer, req, status, resp_headers, body_bytes, took, now);
        log::info!(target: ACCESS_TARGET, "{line}");
    }
}

thread_local! {
    /// `%(t)s`, formatted at most once a second per thread.
    static LOG_DATE: std::cell::RefCell<(u64, String)> = const { std::cell::RefCell::new((0, String::new())) };
}

/// `HTTP/1.1` (what `Version`'s `Debug` writes, without the formatter).
fn version_str(v: Version) -> &'static str {
    match v {
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_11 => "HTTP/1.1",
        Version::HTTP_2 => "HTTP/2.0",
        Version::HTTP_3 => "HTTP/3.0",
        _ => "HTTP/?",
    }
}

/// Appends `bytes` as nginx writes a field it did not make: printable ASCII as is, and `"`, `\\`,
/// control characters, DEL and every non-ASCII byte as `\\xHH` (`"` is `\\x22`). A client can then
/// neither end a quoted field early nor start a new line: one request, one record.
/// (No formatting machinery: the common case, all printable, is one copy.)
fn esc(s: &mut String, bytes: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut rest = bytes;
    while !rest.is_empty() {
        let plain = rest
            .iter()
            .position(|&b| !(0x20..0x7f).contains(&b) || b == b'"' || b == b'\\')
            .unwrap_or(rest.len());
        // Printable ASCII: valid UTF-8.
        s.push_str(std::str::from_utf8(&rest[..plain]).unwrap_or_default());
        if let Some(&b) = rest.get(plain) {
            s.push_str("\\x");
            s.push(HEX[(b >> 4) as usize] as char);
            s.push(HEX[(b & 15) as usize] as char);
            rest = &rest[plain + 1..];
        } else {
            rest = &[];
        }
    }
}

fn index_of(v: &mut Vec<HeaderName>, name: HeaderName) -> usize {
    if let Some(i) = v.iter().position(|n| *n == name) {
        i
    } else {
        v.push(name);
        v.len() - 1
    }
}

/// What a log line needs from a request that has gone to the handler.
#[derive(Debug, Clone)]
pub(crate) struct LogRequest {
    method: Method,
    uri: Uri,
    version: Version,
    headers: Vec<Option<HeaderValue>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_format() {
        let f = AccessLogFormat::default();
        let mut h = HeaderMap::new();
        h.insert(USER_AGENT, "curl/8".parse().unwrap());
        let uri: Uri = "/a?b=1".parse().unwrap();
        let req = f.capture(&Method::GET, &uri, Version::HTTP_11, &h);
        let line = f.render(
            "127.0.0.1",
            &req,
            200,
            &HeaderMap::new(),
            12,
            Duration::from_micros(1500),
            784_111_777,
        );
        assert_eq!(
            line,
            r#"127.0.0.1 - - [06/Nov/1994:08:49:37 +0000] "GET /a?b=1 HTTP/1.1" 200 12 "-" "curl/8""#
        );
    }

    #[test]
    fn client_bytes_are_escaped_so_they_cannot_forge_fields() {
        let f = AccessLogFormat::parse(r#""%(r)s" "%(a)s" %(U)s %(q)s %({x-id}i)s"#).unwrap();
        let mut h = HeaderMap::new();
        let ua = b"evil\" 200 \"x\\y\tz\x80\xff";
        h.insert(USER_AGENT, HeaderValue::from_bytes(ua).unwrap());
        h.insert("x-id", HeaderValue::from_bytes(b"a\"b").unwrap());
        let uri: Uri = "/a\"b\\c?q=%22\\".parse().unwrap();
        let req = f.capture(&Method::GET, &uri, Version::HTTP_11, &h);
        let line = f.render("h", &req, 200, &HeaderMap::new(), 0, Duration::ZERO, 0);
        assert_eq!(
            line,
            r#""GET /a\x22b\x5Cc?q=%22\x5C HTTP/1.1" "evil\x22 200 \x22x\x5Cy\x09z\x80\xFF" /a\x22b\x5Cc q=%22\x5C a\x22b"#
        );
        let mut s = String::new();
        esc(&mut s, b"\x00\r\n ~\x7f");
        assert_eq!(s, r"\x00\x0D\x0A ~\x7F");
    }

    #[test]
    fn all_atoms() {
        let f = AccessLogFormat::parse("%(m)s|%(U)s|%(q)s|%(H)s|%(b)s|%(B)s|%(T)s|%(D)s|%(M)s|%(L)s|%({X-Id}i)s|%({x-out}o)s|%%").unwrap();
        let mut h = HeaderMap::new();
        h.insert("x-id", "7".parse().unwrap());
        let mut o = HeaderMap::new();
        o.insert("x-out", "z".parse().unwrap());
        let uri: Uri = "/p?x=y".parse().unwrap();
        let req = f.capture(&Method::POST, &uri, Version::HTTP_10, &h);
        let line = f.render("h", &req, 201, &o, 0, Duration::from_millis(2500), 0);
        assert_eq!(
            line,
            "POST|/p|x=y|HTTP/1.0|-|0|2|2500000|2500|2.500000|7|z|%"
        );
        assert!(f.render("h", &req, 201, &o, 0, Duration::ZERO, 0).len() > 10);
        for bad in ["%(", "%(x)s", "%d", "%({a}x)s"] {
            assert!(AccessLogFormat::parse(bad).is_err(), "{bad}");
        }
        assert!(AccessLogFormat::parse("%(p)s")
            .unwrap()
            .render("h", &req, 1, &o, 0, Duration::ZERO, 0)
            .starts_with('<'));
    }
}
