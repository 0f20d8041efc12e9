//! Request heads, parsed once complete (the scan as bytes arrive, which finds the end and refuses
//! a malformed head at its first bad byte, is in `head_scan.rs`): its parts cut out, the request target,
//! `Host` and `Expect`, the body's framing (Content-Length or chunked) and the refusal of request
//! smuggling shapes; the size limits and the errors. Bodies are decoded in `decode.rs`.
//!
//! Nothing here touches a socket: the connection feeds bytes and gets back either "need more", a
//! parsed head, or an [`HttpError`] that carries the status to answer before closing.

use std::borrow::Cow;

use bytes::Bytes;
use http::header::{
    HeaderName, HeaderValue, CONNECTION, CONTENT_LENGTH, EXPECT, FORWARDED, HOST, TRANSFER_ENCODING,
};
use http::uri::PathAndQuery;
use http::{HeaderMap, Method, Uri, Version};

use crate::http::ops::forwarded::{X_FORWARDED_FOR, X_FORWARDED_PROTO};

/// [`DEPTH_HEADER`](crate::http::DEPTH_HEADER) as a name, for the parse's notes.
const DEPTH: HeaderName = HeaderName::from_static("x-prefork-depth");

/// The size limits a request must fit in. Defaults follow gunicorn's (`limit_request_line` 4094,
/// `limit_request_fields` 100, `limit_request_field_size` 8190) plus a cap on the whole head
/// (64 KiB) and on the body (10 MiB).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Longest request line, in bytes, not counting its CRLF. Longer: 414.
    pub request_line: usize,
    /// Most header fields in one request. More: 431.
    pub fields: usize,
    /// Longest header field line (`name: value`), in bytes, not counting its CRLF. Longer: 431.
    pub field_size: usize,
    /// Largest head (request line, fields, blank line) in bytes. Larger: 431.
    pub head_bytes: usize,
    /// Largest decoded body, in bytes. Larger: 413.
    pub body_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            request_line: 4094,
            fields: 100,
            field_size: 8190,
            head_bytes: 64 * 1024,
            body_bytes: 10 * 1024 * 1024,
        }
    }
}

/// A request that cannot be served: the status to answer and a short reason for the body.
/// The connection is closed after the answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HttpError {
    pub status: u16,
    pub reason: Cow<'static, str>,
}

impl HttpError {
    pub(crate) fn new(status: u16, reason: impl Into<Cow<'static, str>>) -> Self {
        HttpError {
            status,
            reason: reason.into(),
        }
    }
}

pub(crate) fn bad(reason: &'static str) -> HttpError {
    HttpError::new(400, reason)
}

pub(crate) fn unsupported_version() -> HttpError {
    HttpError::new(
        505,
        "unsupported HTTP version (HTTP/1.0 and HTTP/1.1 are served)",
    )
}

pub(crate) fn too_many_fields(limits: &Limits) -> HttpError {
    HttpError::new(
        431,
        format!("too many header fields (the limit is {})", limits.fields),
    )
}

pub(crate) fn request_line_too_long(limits: &Limits) -> HttpError {
    HttpError::new(
        414,
        format!(
            "request line too long (the limit is {} bytes)",
            limits.request_line
        ),
    )
}

pub(crate) fn field_too_long(limits: &Limits) -> HttpError {
    HttpError::new(
        431,
        format!(
            "header field too long (the limit is {} bytes)",
            limits.field_size
        ),
    )
}

pub(crate) fn head_too_big(limits: &Limits) -> HttpError {
    HttpError::new(
        431,
        format!(
            "request head too large (the limit is {} bytes)",
            limits.head_bytes
        ),
    )
}

/// The answer to a CONNECT (whose target the scanner checked is `host:port`): 501, and the
/// connection closed, as for any refusal.
///
/// The server is not a proxy: it cannot open the tunnel a CONNECT asks for, and a handler's 2xx
/// would tell the client that it had (RFC 9110 9.3.6; with a `Content-Length` the client would
/// not expect). 501 says the method is not supported by the server at all (405 would be about
/// one resource, and would need an `Allow` list). Before this, a CONNECT reached the handler,
/// which usually answered 404 or, worse, 200.
pub(crate) fn connect_not_served() -> HttpError {
    HttpError::new(501, "CONNECT is not supported: this server is not a proxy")
}

/// How the body of a request is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Framing {
    /// No body.
    None,
    /// Exactly this many bytes.
    Length(u64),
    /// Chunked transfer coding.
    Chunked,
}

/// A parsed request head.
#[derive(Debug)]
pub(crate) struct Head {
    pub method: Method,
    pub uri: Uri,
    pub version: Version,
    pub headers: HeaderMap,
    pub framing: Framing,
    /// The client asked for `100 Continue` before sending its body.
    pub expect_continue: bool,
    /// The connection may serve another request after this one.
    pub keep_alive: bool,
    /// The head has an `X-Forwarded-For`, `Forwarded` or `X-Forwarded-Proto` field (noted as the
    /// fields go by, so that a request without any costs no lookups for them).
    pub forwarding: bool,
    /// The head has an `X-Prefork-Depth` field (likewise).
    pub depth: bool,
}

/// Where the scan (`head_scan.rs`) found the parts of a head, as offsets from the head's start
/// (its first byte after any leading blank lines): what [`parse_shared`] cuts the head at, so that
/// it does not look again for the line ends and colons that the scan has already seen.
#[derive(Debug, Default, Clone)]
pub(crate) struct Parts {
    /// The space after the method.
    pub(crate) method_end: usize,
    /// The space after the request target.
    pub(crate) target_end: usize,
    /// The version is HTTP/1.1 (else it is HTTP/1.0: the scan refuses every other).
    pub(crate) http11: bool,
    /// Each field line, in order.
    pub(crate) fields: Vec<FieldAt>,
}

/// Where a field line is in the head. The line ends two bytes before the next one starts (or,
/// the last, four bytes before the head ends).
#[derive(Debug, Clone, Copy)]
pub(crate) struct FieldAt {
    /// The first byte of its name.
    pub(crate) start: usize,
    /// The colon after its name.
    pub(crate) colon: usize,
    /// Its name, where the scan has already compared it (ignoring case).
    pub(crate) known: Known,
}

/// The field names the scan compares every name with (ignoring case), of which a second field is
/// refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Known {
    Host,
    ContentLength,
    /// Any other name.
    Other,
}

/// Parse a complete head (`shared` is exactly the head, ending with the blank line).
///
/// `shared` is a head the scanner (`head_scan.rs`) accepted, so its grammar is already checked
/// byte by byte, and `parts` is where the scanner found its parts (the request line's three, each
/// field line's name and value): this cuts the head at them, without looking for line ends and
/// colons again, trims each value of the whitespace around it, and builds the request from the
/// parts, with the checks of what they mean (`Host`, `Expect`, framing). The parts are still
/// validated by the `http` types they become.
///
/// The request target and the field values are slices of `shared`, not copies: they keep its
/// buffer alive as long as any of them lives. The connection splits the head off its read buffer
/// (a `BytesMut`), so that buffer is shared from its first head on, and reused for the next
/// request once the last slice of this one is gone: no allocation per request for the head.
/// The fields go into `map`, empty: the connection passes its last answer's map (emptied, its
/// allocation kept), so a kept-alive request allocates no header map either.
pub(crate) fn parse_shared(
    shared: Bytes,
    parts: &Parts,
    limits: &Limits,
    mut map: HeaderMap,
) -> Result<Head, HttpError> {
    let buf: &[u8] = &shared;
    let (sp, tend) = (parts.method_end, parts.target_end);
    // The scan refused every version but these two.
    let version = if parts.http11 {
        Version::HTTP_11
    } else {
        Version::HTTP_10
    };
    let method = Method::from_bytes(&buf[..sp]).map_err(|_| bad("malformed method"))?;
    if method == Method::CONNECT {
        return Err(connect_not_served());
    }
    let uri = target(shared.slice(sp + 1..tend), &buf[sp + 1..tend])?;
    // An empty map: a new one, or the connection's last answer's, emptied where it was taken
    // (`answer.rs`), its allocation kept.
    debug_assert!(map.is_empty(), "a request head is parsed into an empty map");
    map.reserve(parts.fields.len());
    // What the checks below need, noted as the fields go by (no lookups when they are absent).
    let (mut hosts, mut expects) = (0usize, 0usize);
    let (mut has_te, mut has_cl, mut has_connection) = (false, false, false);
    let (mut forwarding, mut depth) = (false, false);
    // Each line ends (its CR) two bytes before the next starts; the last, before the empty line.
    let ends = parts.fields.iter().skip(1).map(|next| next.start - 2);
    for (field, end) in parts.fields.iter().zip(ends.chain([buf.len() - 4])) {
        let colon = field.colon;
        let (a, b) = trim_ows(&buf[colon + 1..end]);
        let value = HeaderValue::from_maybe_shared(shared.slice(colon + 1 + a..colon + 1 + b))
            .map_err(|_| bad("malformed header value"))?;
        // `Host` and `Content-Length` the scan has already told (and refused a second of either,
        // and a list in `Host`); any other name is not one of them.
        let name = match field.known {
            Known::Host => {
                hosts += 1;
                HOST
            }
            Known::ContentLength => {
                has_cl = true;
                CONTENT_LENGTH
            }
            Known::Other => {
                let name = HeaderName::from_bytes(&buf[field.start..colon])
                    .map_err(|_| bad("malformed header name"))?;
                if name == TRANSFER_ENCODING {
                    has_te = true;
                } else if name == EXPECT {
                    expects += 1;
                } else if name == CONNECTION {
                    has_connection = true;
                } else if name == FORWARDED || name == X_FORWARDED_FOR || name == X_FORWARDED_PROTO
                {
                    forwarding = true;
                } else if name == DEPTH {
                    depth = true;
                }
                name
            }
        };
        map.append(name, value);
    }
    if hosts > 1 {
        return Err(bad("more than one Host header"));
    }
    if hosts == 0 && version == Version::HTTP_11 {
        return Err(bad("missing Host header (required in HTTP/1.1)"));
    }
    let framing = if has_te || has_cl {
        framing(&map, has_te, has_cl, version, limits)?
    } else {
        Framing::None
    };
    let mut expect_continue = false;
    if expects > 1 {
        return Err(bad("more than one Expect header"));
    }
    if let Some(v) = (expects == 1).then(|| map.get(EXPECT)).flatten() {
        if v.as_bytes().eq_ignore_ascii_case(b"100-continue") {
            expect_continue = version == Version::HTTP_11;
        } else {
            return Err(HttpError::new(
                417,
                "unsupported Expect (only 100-continue is)",
            ));
        }
    }
    let keep_alive = if has_connection {
        keep_alive(&map, version)
    } else {
        version == Version::HTTP_11
    };
    Ok(Head {
        method,
        uri,
        version,
        headers: map,
        framing,
        expect_continue,
        keep_alive,
        forwarding,
        depth,
    })
}

/// The range of `s` without the optional whitespace (SP, HTAB) around a field value.
fn trim_ows(s: &[u8]) -> (usize, usize) {
    let ows = |b: &u8| *b == b' ' || *b == b'\t';
    let a = s.iter().position(|b| !ows(b)).unwrap_or(s.len());
    let b = s.iter().rposition(|b| !ows(b)).map_or(a, |p| p + 1);
    (a, b)
}

/// The request target as a `Uri`. The scanner let through only visible ASCII; of that, `http::Uri`
/// cannot hold `"`, `<`, `>` (and a backtick in the path), which llhttp and h11 accept: those reach
/// the handler percent-encoded (`%22`, `%3C`, `%3E`, `%60`), which means the same to a URI reader.
fn target(shared: Bytes, raw: &[u8]) -> Result<Uri, HttpError> {
    // An origin-form target (`/...`) is a path and query, all that `Uri` would make of it.
    let uri = if raw.first() == Some(&b'/') {
        PathAndQuery::from_maybe_shared(shared).map(Uri::from)
    } else {
        Uri::from_maybe_shared(shared)
    };
    if let Ok(uri) = uri {
        return Ok(uri);
    }
    let mut encoded = Vec::with_capacity(raw.len() + 8);
    for &c in raw {
        match c {
            b'"' => encoded.extend_from_slice(b"%22"),
            b'<' => encoded.extend_from_slice(b"%3C"),
            b'>' => encoded.extend_from_slice(b"%3E"),
            b'`' => encoded.extend_from_slice(b"%60"),
            c => encoded.push(c),
        }
    }
    Uri::try_from(encoded).map_err(|_| bad("malformed request target"))
}

/// Whether the connection stays open after this request: HTTP/1.1 unless a `Connection` token
/// says `close`, HTTP/1.0 only when one says `keep-alive`.
fn keep_alive(map: &HeaderMap, version: Version) -> bool {
    let (mut close, mut ka) = (false, false);
    for v in map.get_all(CONNECTION) {
        for token in v.as_bytes().split(|&b| b == b',') {
            let t = token.trim_ascii();
            if t.eq_ignore_ascii_case(b"close") {
                close = true;
            } else if t.eq_ignore_ascii_case(b"keep-alive") {
                ka = true;
            }
        }
    }
    !close && (version == Version::HTTP_11 || ka)
}

/// The body's framing, from the `Transfer-Encoding` and `Content-Length` fields `map` holds
/// (`has_te`, `has_cl`: whether it holds any).
fn framing(
    map: &HeaderMap,
    has_te: bool,
    has_cl: bool,
    version: Version,
    limits: &Limits,
) -> Result<Framing, HttpError> {
    if has_te {
        if has_cl {
            return Err(bad(
                "both Content-Length and Transfer-Encoding (request smuggling shape)",
            ));
        }
        if version == Version::HTTP_10 {
            return Err(bad("Transfer-Encoding in an HTTP/1.0 request"));
        }
        let mut codings = Vec::new();
        for v in map.get_all(TRANSFER_ENCODING) {
            for c in v.as_bytes().split(|&b| b == b',') {
                codings.push(c.trim_ascii().to_ascii_lowercase());
            }
        }
        if codings.last().map(|c| c.as_slice()) != Some(b"chunked") {
            return Err(bad("Transfer-Encoding must end with chunked"));
        }
        if codings.len() > 1 {
            if codings[..codings.len() - 1].iter().any(|c| c == b"chunked") {
                return Err(bad("chunked applied more than once"));
            }
            return Err(HttpError::new(
                501,
                "transfer codings other than chunked are not supported",
            ));
        }
        return Ok(Framing::Chunked);
    }
    if !has_cl {
        return Ok(Framing::None);
    }
    // One field with one value, as the scanner (`value_scan.rs`) has already checked of a head it
    // passed: a second field or a list is refused even when the values agree.
    let mut fields = map.get_all(CONTENT_LENGTH).iter();
    let (Some(v), None) = (fields.next(), fields.next()) else {
        return Err(bad("more than one Content-Length header"));
    };
    let p = v.as_bytes().trim_ascii();
    if p.contains(&b',') {
        return Err(bad("a list in Content-Length (one value only)"));
    }
    if p.is_empty() || !p.iter().all(u8::is_ascii_digit) {
        return Err(bad("malformed Content-Length"));
    }
    // Leading zeros are accepted (as llhttp does): the value is still exact.
    let p = match p.iter().position(|&d| d != b'0') {
        Some(i) => &p[i..],
        None => b"0",
    };
    if p.len() > 19 {
        return Err(bad("Content-Length too long (at most 19 digits)"));
    }
    let n: u64 = std::str::from_utf8(p)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad("malformed Content-Length"))?;
    if n > limits.body_bytes {
        return Err(body_too_large(limits));
    }
    Ok(if n == 0 {
        Framing::None
    } else {
        Framing::Length(n)
    })
}

pub(crate) fn body_too_large(limits: &Limits) -> HttpError {
    HttpError::new(
        413,
        format!(
            "request body too large (the limit is {} bytes)",
            limits.body_bytes
        ),
    )
}

#[cfg(test)]
#[path = "parse_reference.rs"]
mod reference;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::wire::head_scan::{parse_head, HeadScanner};

    fn parse(raw: &[u8]) -> Result<Head, HttpError> {
        parse_head(raw, &Limits::default())
    }

    #[test]
    fn the_parts_of_a_scanned_head() {
        let raw: &[u8] = b"POST /a/b?c=d HTTP/1.1\r\nHost: example.com\r\nX-Empty:\r\n\
            X-Pad: \t one  two \t\r\nX-Obs: caf\xc3\xa9\r\nContent-Length: 003\r\n\
            Connection: keep-alive, Close\r\nX-Pad: second\r\n\r\n";
        let (a, b) = HeadScanner::default()
            .scan(raw, &Limits::default())
            .unwrap()
            .unwrap();
        let h = parse(&raw[a..b]).unwrap();
        assert_eq!(h.method, Method::POST);
        assert_eq!(h.uri.path(), "/a/b");
        assert_eq!(h.uri.query(), Some("c=d"));
        assert_eq!(h.version, Version::HTTP_11);
        assert_eq!(h.headers["host"], "example.com");
        assert_eq!(h.headers["x-empty"], "");
        let pads: Vec<_> = h.headers.get_all("x-pad").iter().collect();
        assert_eq!(pads, ["one  two", "second"], "trimmed, in order");
        assert_eq!(
            h.headers["x-obs"].as_bytes(),
            "café".as_bytes(),
            "obs-text kept as is"
        );
        assert_eq!(h.headers.len(), 7);
        assert_eq!(h.framing, Framing::Length(3));
        assert!(!h.keep_alive, "a close token anywhere in Connection");
        assert!(!h.expect_continue);
    }

    #[test]
    fn the_fields_a_request_is_looked_at_for_are_noted() {
        assert_eq!(DEPTH, crate::http::DEPTH_HEADER);
        let h = parse(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        assert!(!h.forwarding && !h.depth);
        for name in ["X-Forwarded-For", "forwarded", "X-Forwarded-Proto"] {
            let raw = format!("GET / HTTP/1.1\r\nHost: x\r\n{name}: a\r\n\r\n");
            let h = parse(raw.as_bytes()).unwrap();
            assert!(h.forwarding && !h.depth, "{name}");
        }
        let h = parse(b"GET / HTTP/1.1\r\nX-Prefork-Depth: 3\r\nHost: x\r\n\r\n").unwrap();
        assert!(h.depth && !h.forwarding);
    }

    #[test]
    fn many_fields_and_the_field_limit() {
        let mut raw = String::from("GET / HTTP/1.1\r\nHost: x\r\n");
        for i in 0..59 {
            raw.push_str(&format!("X-{i}: {i}\r\n"));
        }
        raw.push_str("\r\n");
        let h = parse(raw.as_bytes()).unwrap();
        assert_eq!(h.headers.len(), 60);
        assert_eq!(h.headers["x-58"], "58");
        let limits = Limits {
            fields: 59,
            ..Limits::default()
        };
        assert_eq!(parse_head(raw.as_bytes(), &limits).unwrap_err().status, 431);
    }

    /// A malformed head given to the parse is refused, not misread (`parse_head` scans it first,
    /// as the connection does: the parse cuts a head where the scan found its parts).
    #[test]
    fn an_unscanned_malformed_head_is_refused() {
        for raw in [
            &b"GET / HTTP/1.1\r\nHost: x\r\n"[..],
            b"GET / HTTP/1.1\nHost: x\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: x\ny\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\rb\r\n\r\n",
            b"GET / HTTP/1.1\r\nHo st: x\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost x\r\n\r\n",
            b"GET /a b HTTP/1.1\r\nHost: x\r\n\r\n",
            b"GET  HTTP/1.1\r\nHost: x\r\n\r\n",
            b"GE(T / HTTP/1.1\r\nHost: x\r\n\r\n",
            b"GET / HTTP/1.1 \r\nHost: x\r\n\r\n",
            b"GET / http/1.1\r\nHost: x\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: x\r\n\r\nextra",
        ] {
            let e = parse(raw).unwrap_err();
            assert_eq!(e.status, 400, "{:?}: {e:?}", String::from_utf8_lossy(raw));
        }
        assert_eq!(
            parse(b"GET / HTTP/3.0\r\nHost: x\r\n\r\n")
                .unwrap_err()
                .status,
            505
        );
    }

    /// On every head the scanner accepts, the one-pass parse comes to what the httparse-based
    /// parse it replaced came to: the same request, or the same refusal.
    #[test]
    fn agrees_with_the_httparse_parse_it_replaced() {
        const METHODS: &[&str] = &[
            "GET", "POST", "HEAD", "PUT", "M-SEARCH", "G!T", "CONNECT", "OPTIONS",
        ];
        const TARGETS: &[&str] = &[
            "/",
            "/a/b?c=d",
            "*",
            "http://h:8/p?q",
            "h:443",
            "[::1]:8443",
            "/a\"b",
            "/q?x=<y>&z=`v`{|}^\\",
            "/%41%zz",
            "//x",
            "/a#f",
            "?",
            "/é",
        ];
        const NAMES: &[&str] = &[
            "Host",
            "host",
            "Content-Length",
            "Transfer-Encoding",
            "Expect",
            "Connection",
            "X-A",
            "Cookie",
            "x-prefork-depth",
            "Sec-Fetch-Mode",
            "A!#$%&'*+-.^_`|~",
        ];
        const VALUES: &[&str] = &[
            "",
            " ",
            "x",
            " x ",
            "\tx\t",
            "a, b",
            "3",
            "03",
            " 3 , 3",
            "3,4",
            "+3",
            "0",
            "99999999999",
            "chunked",
            "gzip, chunked",
            "chunked, chunked",
            "CHUNKED",
            "gzip",
            "100-continue",
            "100-Continue",
            "200-ok",
            "close",
            "keep-alive",
            "Keep-Alive, close",
            "caf\u{e9}",
            "a\tb  c",
            "=\"q\"",
            "h:8080",
            "[::1]:80",
        ];
        let mut seed = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = |n: usize| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed % n as u64) as usize
        };
        let limits = Limits::default();
        let mut checked = 0;
        for _ in 0..20_000 {
            let mut raw = format!(
                "{} {} HTTP/1.{}\r\n",
                METHODS[next(METHODS.len())],
                TARGETS[next(TARGETS.len())],
                next(2)
            );
            for _ in 0..next(7) {
                raw.push_str(NAMES[next(NAMES.len())]);
                raw.push(':');
                raw.push_str(VALUES[next(VALUES.len())]);
                raw.push_str("\r\n");
            }
            raw.push_str("\r\n");
            let raw = raw.as_bytes();
            let Ok(Some((a, b))) = HeadScanner::default().scan(raw, &limits) else {
                continue;
            };
            checked += 1;
            let head = &raw[a..b];
            let shown = String::from_utf8_lossy(head);
            match (
                parse_head(head, &limits),
                reference::parse_head(head, &limits),
            ) {
                (Ok(new), Ok(old)) => {
                    assert_eq!(new.method, old.method, "{shown}");
                    assert_eq!(new.uri, old.uri, "{shown}");
                    assert_eq!(new.version, old.version, "{shown}");
                    assert_eq!(new.headers, old.headers, "{shown}");
                    let order = |h: &HeaderMap| -> Vec<_> {
                        h.iter().map(|(n, v)| (n.clone(), v.clone())).collect()
                    };
                    assert_eq!(order(&new.headers), order(&old.headers), "{shown}");
                    assert_eq!(new.framing, old.framing, "{shown}");
                    assert_eq!(new.expect_continue, old.expect_continue, "{shown}");
                    assert_eq!(new.keep_alive, old.keep_alive, "{shown}");
                }
                (Err(new), Err(old)) => assert_eq!(new, old, "{shown}"),
                (new, old) => panic!("{shown}: {new:?} but before {old:?}"),
            }
        }
        assert!(checked > 5_000, "only {checked} heads were scanned whole");
    }
}
