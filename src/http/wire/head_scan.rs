//! The scan of a request head as its bytes arrive: a byte-at-a-time check of RFC 9112's grammar
//! that finds where the head ends, refuses a malformed head at its first bad byte (not when, or
//! if, its blank line arrives), and checks the size limits at the byte that passes them. The
//! complete head is then parsed by `parse.rs`, which cuts it where the scan noted its parts
//! (`Parts`: the request line's spaces, each field line's start and colon).
//!
//! Beyond the bytes, the scan checks what can be refused before the end of the head: the request
//! target's form against the method (RFC 9112 3.2: origin-form `/...`, absolute-form
//! `scheme://...`, the asterisk-form `*` for OPTIONS only, the authority-form `host:port` for
//! CONNECT only, and CONNECT in no other form), and the `Host` and `Content-Length` fields, whose
//! values are scanned by `value_scan.rs` (a second one of either is refused at its colon).

use crate::http::wire::parse::{
    bad, field_too_long, head_too_big, request_line_too_long, too_many_fields, unsupported_version,
    FieldAt, HttpError, Known, Limits, Parts,
};
use crate::http::wire::value_scan::{plain_field_host, HostIn, HostScan, LengthScan};

/// Where the scan of an incomplete head stands, so that each read costs only its new bytes and a
/// malformed head is refused at its first bad byte, not when (or if) its blank line arrives.
///
/// The scan is a byte-at-a-time state machine over RFC 9112's grammar: `method SP target SP
/// HTTP/d.d CRLF`, then `name ":" value CRLF` lines, then an empty line. The size limits are
/// checked at the byte that passes them. Each byte is looked at once, whatever the reads' sizes,
/// so the outcome never depends on how the input was split.
#[derive(Debug, Default, Clone)]
pub(crate) struct HeadScanner {
    /// First byte of the request line (after leading blank lines).
    start: usize,
    /// Next byte to look at.
    pos: usize,
    /// Bytes of the current line so far, without its CRLF.
    line_len: usize,
    /// Header fields started so far.
    fields: usize,
    /// The method, as far as the target's form depends on it.
    method: MethodIs,
    /// The fields of which a second one is refused (`HOST`, `CONTENT_LENGTH`) seen so far.
    seen: u8,
    at: At,
    /// Where the head's parts are, noted as the scan passes them, for the parse.
    parts: Parts,
}

/// The methods that decide the request target's form (RFC 9112 3.2).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum MethodIs {
    /// Origin-form or absolute-form.
    #[default]
    Other,
    /// Also the asterisk-form.
    Options,
    /// The authority-form only.
    Connect,
}

/// Bits of [`HeadScanner::seen`].
const HOST: u8 = 1;
const CONTENT_LENGTH: u8 = 2;

/// The scanner's place in the grammar.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum At {
    /// Before the request line: empty lines are skipped (RFC 9112 2.2).
    #[default]
    Blank,
    /// A CR before the request line: its LF must follow.
    BlankLf,
    Method,
    TargetStart,
    /// In an origin-form target, or an absolute-form one after its `://`.
    Target,
    /// In the scheme of an absolute-form target.
    Scheme,
    /// The `i`-th `/` of the `//` after a scheme's colon.
    SchemeSlash(u8),
    /// After OPTIONS' `*`: the space must follow.
    Asterisk,
    /// In CONNECT's `host:port`.
    Authority(HostScan),
    /// The `i`-th byte of `HTTP/`.
    Version(u8),
    Major,
    Dot(u8),
    Minor(u8),
    /// The version is complete: the CR must follow.
    LineCr,
    /// A CR ended a line: its LF must follow.
    LineLf,
    /// The first byte of a field line, or the CR of the empty line.
    FieldStart,
    Name,
    Value,
    /// In a `Host` field's value.
    HostValue(HostScan),
    /// In a `Content-Length` field's value.
    LengthValue(LengthScan),
    /// The CR of the empty line: its LF ends the head.
    EndLf,
}

/// What each byte may be, one bit per use: the scanner looks bytes up instead of comparing.
const TCHAR: u8 = 1;
const FIELD: u8 = 2;
const TARGET: u8 = 4;
static CLASS: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        let tchar = c.is_ascii_alphanumeric()
            || matches!(
                c,
                b'!' | b'#'
                    | b'$'
                    | b'%'
                    | b'&'
                    | b'\''
                    | b'*'
                    | b'+'
                    | b'-'
                    | b'.'
                    | b'^'
                    | b'_'
                    | b'`'
                    | b'|'
                    | b'~'
            );
        let field = c == b'\t' || (c >= 0x20 && c != 0x7f);
        let target = c >= 0x21 && c <= 0x7e;
        let mut class = 0;
        if tchar {
            class |= TCHAR;
        }
        if field {
            class |= FIELD;
        }
        if target {
            class |= TARGET;
        }
        t[b] = class;
        b += 1;
    }
    t
};

const LO: u64 = 0x0101_0101_0101_0101;
const HI: u64 = 0x8080_8080_8080_8080;

/// Whether a byte of `w` may be zero (never false when one is).
#[inline]
fn has_zero(w: u64) -> bool {
    w.wrapping_sub(LO) & !w & HI != 0
}

/// Whether a byte of `w` may be below `n` (`n` <= 128; never false when one is).
#[inline]
fn has_less(w: u64, n: u8) -> bool {
    w.wrapping_sub(LO * n as u64) & !w & HI != 0
}

/// How many bytes `s` starts with that a request target may hold (visible ASCII): eight at a time
/// while none of them can be another (a word test that may say "maybe" but never misses one),
/// then byte by byte.
#[inline]
fn target_run(s: &[u8]) -> usize {
    let mut run = 0;
    while let Some(word) = s.get(run..run + 8) {
        let w = u64::from_le_bytes(word.try_into().unwrap_or_default());
        if has_less(w, 0x21) || w & HI != 0 || has_zero(w ^ (LO * 0x7f)) {
            break;
        }
        run += 8;
    }
    run + s[run..]
        .iter()
        .take_while(|b| (0x21..=0x7e).contains(*b))
        .count()
}

/// `tchar` (RFC 9110 5.6.2): what a method, a field name or a chunk extension name is made of.
#[inline]
pub(crate) fn is_tchar(b: u8) -> bool {
    CLASS[b as usize] & TCHAR != 0
}

/// A byte a field value may hold: HTAB, SP, visible ASCII, and obs-text (0x80-0xFF, kept as
/// opaque data as RFC 9110 5.5 says). NUL, the other controls and DEL are refused.
#[inline]
pub(crate) fn is_field_byte(b: u8) -> bool {
    CLASS[b as usize] & FIELD != 0
}

impl HeadScanner {
    /// Scan `buf` (which only ever grows between calls, until the scanner is replaced) for the end
    /// of the head. Returns the range of the head (without leading blank lines) once complete.
    pub(crate) fn scan(
        &mut self,
        buf: &[u8],
        limits: &Limits,
    ) -> Result<Option<(usize, usize)>, HttpError> {
        self.scan_with::<true>(buf, limits)
    }

    /// [`scan`](Self::scan), with the fast paths (`FAST`) or a byte at a time only: the tests
    /// check that both come to the same outcome at every limit.
    fn scan_with<const FAST: bool>(
        &mut self,
        buf: &[u8],
        limits: &Limits,
    ) -> Result<Option<(usize, usize)>, HttpError> {
        while self.pos < buf.len() {
            if FAST {
                self.skip_request_line(buf, limits);
                self.skip_plain_run(buf, limits);
                self.skip_line_end(buf, limits);
                if let Some(end) = self.skip_head_end(buf, limits) {
                    return Ok(Some((self.start, end)));
                }
            }
            let Some(&b) = buf.get(self.pos) else { break };
            if let Some(end) = self.step(b, buf, limits)? {
                return Ok(Some((self.start, end)));
            }
            self.pos += 1;
        }
        Ok(None)
    }

    /// The first fast path: a whole request line of the common shape, `method SP /path SP
    /// HTTP/1.x CRLF` (an origin-form target, not CONNECT's), where `step` would take it a byte
    /// at a time to the same place (the start of the first field line). Taken only when none of
    /// its bytes passes a limit. Returns whether it moved.
    fn skip_request_line(&mut self, buf: &[u8], limits: &Limits) -> bool {
        if !matches!(self.at, At::Blank) {
            return false;
        }
        let s = &buf[self.pos..];
        let m = s.iter().take_while(|&&b| is_tchar(b)).count();
        if m == 0 || s.get(m..m + 2) != Some(b" /") {
            return false;
        }
        let method = match &s[..m] {
            b"OPTIONS" => MethodIs::Options,
            b"CONNECT" => return false,
            _ => MethodIs::Other,
        };
        let t = m + 2 + target_run(&s[m + 2..]);
        if !matches!(s.get(t..t + 11), Some(b" HTTP/1.1\r\n" | b" HTTP/1.0\r\n")) {
            return false;
        }
        // The line without its CRLF; its LF is at `len + 1` from its start.
        let len = t + 9;
        if self.pos >= limits.head_bytes
            || len > limits.request_line
            || len + 1 >= limits.head_bytes
        {
            return false;
        }
        self.start = self.pos;
        self.method = method;
        self.parts.method_end = m;
        self.parts.target_end = t;
        self.parts.http11 = s[t + 8] == b'1';
        self.pos += len + 2;
        self.line_len = 0;
        self.at = At::FieldStart;
        true
    }

    /// The fast path: inside a target or a field value, skip the bytes that `step` would only
    /// count, stopping before any byte that would pass a limit (`step` then refuses it).
    fn skip_plain_run(&mut self, buf: &[u8], limits: &Limits) {
        let (line_limit, class) = match self.at {
            At::Method => (limits.request_line, TCHAR),
            At::Target => (limits.request_line, TARGET),
            At::Value => (limits.field_size, FIELD),
            At::Name => (limits.field_size, TCHAR),
            _ => return,
        };
        let room = (line_limit.saturating_sub(self.line_len))
            .min(limits.head_bytes.saturating_sub(self.pos - self.start));
        let rest = &buf[self.pos..buf.len().min(self.pos + room)];
        // Eight bytes at a time while none of them can be a stop (a word test that may say
        // "maybe" but never misses one), then byte by byte.
        let mut run = 0;
        while let Some(word) = rest.get(run..run + 8) {
            let w = u64::from_le_bytes(word.try_into().unwrap_or_default());
            let maybe_stop = match self.at {
                At::Value => has_less(w, 0x20) || has_zero(w ^ (LO * 0x7f)),
                At::Target => has_less(w, 0x21) || w & HI != 0 || has_zero(w ^ (LO * 0x7f)),
                _ => true,
            };
            if maybe_stop {
                break;
            }
            run += 8;
        }
        run += rest[run..]
            .iter()
            .position(|&b| CLASS[b as usize] & class == 0)
            .unwrap_or(rest.len() - run);
        self.pos += run;
        self.line_len += run;
    }

    /// The other fast path: the common ends of lines, whole, where `step` would take them a byte
    /// at a time to the same place (the start of the next field line): ` HTTP/1.1` or ` HTTP/1.0`
    /// and its CRLF after the target, a CRLF after a field value, a `Host` value of the common
    /// shape and its CRLF. Taken only when none of their
    /// bytes passes a limit, so that a refusal is still made by `step` at the byte that passes it.
    /// Returns whether it moved. (The single-byte moves, such as a field name's colon, cost no
    /// less here than in `step`.)
    fn skip_line_end(&mut self, buf: &[u8], limits: &Limits) -> bool {
        let (len, counted) = match self.at {
            At::Version(0) => match buf.get(self.pos..self.pos + 10) {
                Some(b"HTTP/1.1\r\n" | b"HTTP/1.0\r\n") => (10, 8),
                _ => return false,
            },
            At::Value if buf.get(self.pos..self.pos + 2) == Some(b"\r\n") => (2, 0),
            // A `Host` value of the common shape, whole (`value_scan::plain_field_host`).
            At::HostValue(host) if host.is_fresh() => {
                let Some(cr) = plain_field_host(&buf[self.pos..]) else {
                    return false;
                };
                if self.line_len + cr > limits.field_size {
                    return false;
                }
                (cr + 2, 0)
            }
            _ => return false,
        };
        if (counted == 0 || self.line_len + counted <= limits.request_line)
            && self.pos + len - 1 - self.start < limits.head_bytes
        {
            if counted != 0 {
                // `HTTP/1.x`: the minor version's digit.
                self.parts.http11 = buf[self.pos + 7] == b'1';
            }
            self.pos += len;
            self.line_len = 0;
            self.at = At::FieldStart;
            return true;
        }
        false
    }

    /// The last fast path: the empty line that ends the head, whole, where `step` would take its
    /// CR and LF to the same end (and leave the scanner where it would). Taken only when its LF
    /// does not pass the head's limit.
    fn skip_head_end(&mut self, buf: &[u8], limits: &Limits) -> Option<usize> {
        if !matches!(self.at, At::FieldStart)
            || buf.get(self.pos..self.pos + 2) != Some(b"\r\n")
            || self.pos + 1 - self.start >= limits.head_bytes
        {
            return None;
        }
        self.pos += 1;
        self.at = At::EndLf;
        Some(self.pos + 1)
    }

    /// Look at the byte `b` at `self.pos` of `buf`; the end of the head (one past this byte) when
    /// it ends it.
    fn step(&mut self, b: u8, buf: &[u8], limits: &Limits) -> Result<Option<usize>, HttpError> {
        if matches!(self.at, At::Blank | At::BlankLf) {
            self.at = match (self.at, b) {
                (At::Blank, b'\r') => At::BlankLf,
                (At::BlankLf, b'\n') => At::Blank,
                (At::BlankLf, _) => return Err(bad("bare CR: lines must end with CRLF")),
                (_, b'\n') => return Err(bad("bare LF: lines must end with CRLF")),
                (_, b' ' | b'\t') => return Err(bad("whitespace before the request line")),
                (_, b) if is_tchar(b) => {
                    self.start = self.pos;
                    self.line_len = 1;
                    At::Method
                }
                _ => return Err(bad("malformed method")),
            };
            if self.pos >= limits.head_bytes {
                return Err(HttpError::new(
                    431,
                    "too many blank lines before the request",
                ));
            }
            return Ok(None);
        }
        if self.pos - self.start >= limits.head_bytes {
            return Err(head_too_big(limits));
        }
        if b != b'\r' && b != b'\n' {
            self.line_len += 1;
            if !matches!(
                self.at,
                At::FieldStart | At::Name | At::Value | At::HostValue(_) | At::LengthValue(_)
            ) {
                if self.line_len > limits.request_line {
                    return Err(request_line_too_long(limits));
                }
            } else if self.line_len > limits.field_size {
                return Err(field_too_long(limits));
            }
        }
        self.at = match self.at {
            At::Method => match b {
                b' ' => {
                    self.method = match &buf[self.start..self.pos] {
                        b"OPTIONS" => MethodIs::Options,
                        b"CONNECT" => MethodIs::Connect,
                        _ => MethodIs::Other,
                    };
                    self.parts.method_end = self.pos - self.start;
                    At::TargetStart
                }
                b if is_tchar(b) => At::Method,
                b'\n' => return Err(bad("bare LF: lines must end with CRLF")),
                _ => return Err(bad("malformed method")),
            },
            At::TargetStart => match b {
                0x21..=0x7e => self.target_start(b, buf)?,
                b'\n' => return Err(bad("bare LF: lines must end with CRLF")),
                0x80..=0xff => return Err(bad("a raw non-ASCII byte in the request target")),
                _ => return Err(bad("malformed request line")),
            },
            At::Target => match b {
                0x21..=0x7e => At::Target,
                b' ' => self.target_end(),
                b'\n' => return Err(bad("bare LF: lines must end with CRLF")),
                0x80..=0xff => return Err(bad("a raw non-ASCII byte in the request target")),
                _ => return Err(bad("malformed request line")),
            },
            At::Scheme => match b {
                b':' => At::SchemeSlash(0),
                b if b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.') => At::Scheme,
                _ => {
                    return Err(bad(
                        "malformed request target: not a path (/...) nor an absolute URI \
                         (scheme://...)",
                    ))
                }
            },
            At::SchemeSlash(i) => match b {
                b'/' if i == 0 => At::SchemeSlash(1),
                b'/' => At::Target,
                _ => {
                    return Err(bad(
                        "malformed request target: an absolute URI is scheme://authority/path",
                    ))
                }
            },
            At::Asterisk => match b {
                b' ' => self.target_end(),
                _ => {
                    return Err(bad(
                        "malformed request target: the asterisk-form is * alone",
                    ))
                }
            },
            At::Authority(mut host) => match b {
                b' ' => {
                    host.end()?;
                    self.target_end()
                }
                b'\n' => return Err(bad("bare LF: lines must end with CRLF")),
                _ => {
                    host.step(buf, self.pos)?;
                    At::Authority(host)
                }
            },
            At::Version(i) => {
                if b != b"HTTP/"[i as usize] {
                    return Err(bad("malformed request line"));
                }
                if i == 4 {
                    At::Major
                } else {
                    At::Version(i + 1)
                }
            }
            At::Major => match b {
                b'0'..=b'9' => At::Dot(b - b'0'),
                _ => return Err(bad("malformed request line")),
            },
            At::Dot(major) => match b {
                b'.' => At::Minor(major),
                _ => return Err(bad("malformed request line")),
            },
            At::Minor(major) => match (major, b) {
                (1, b'0' | b'1') => {
                    self.parts.http11 = b == b'1';
                    At::LineCr
                }
                (_, b'0'..=b'9') => return Err(unsupported_version()),
                _ => return Err(bad("malformed request line")),
            },
            At::LineCr => match b {
                b'\r' => At::LineLf,
                b'\n' => return Err(bad("bare LF: lines must end with CRLF")),
                _ => return Err(bad("malformed request line")),
            },
            At::LineLf => match b {
                b'\n' => {
                    self.line_len = 0;
                    At::FieldStart
                }
                _ => return Err(bad("bare CR: lines must end with CRLF")),
            },
            At::FieldStart => match b {
                b'\r' => At::EndLf,
                b'\n' => return Err(bad("bare LF: lines must end with CRLF")),
                b' ' | b'\t' if self.fields == 0 => {
                    return Err(bad("whitespace before the first header field"))
                }
                b' ' | b'\t' => return Err(bad("obsolete line folding in a header field")),
                b if is_tchar(b) => {
                    self.fields += 1;
                    if self.fields > limits.fields {
                        return Err(too_many_fields(limits));
                    }
                    At::Name
                }
                _ => return Err(bad("malformed header name")),
            },
            At::Name => match b {
                b':' => self.value_start(buf)?,
                b if is_tchar(b) => At::Name,
                b'\r' | b'\n' => return Err(bad("a header line without a colon")),
                _ => return Err(bad("malformed header name")),
            },
            At::Value => match b {
                b'\r' => At::LineLf,
                b'\n' => return Err(bad("bare LF: lines must end with CRLF")),
                b if is_field_byte(b) => At::Value,
                _ => return Err(bad("a control character in a header value")),
            },
            At::HostValue(mut host) => match b {
                b'\r' => {
                    host.end()?;
                    At::LineLf
                }
                b'\n' => return Err(bad("bare LF: lines must end with CRLF")),
                _ => {
                    host.step(buf, self.pos)?;
                    At::HostValue(host)
                }
            },
            At::LengthValue(mut length) => match b {
                b'\r' => {
                    length.end(limits)?;
                    At::LineLf
                }
                b'\n' => return Err(bad("bare LF: lines must end with CRLF")),
                _ => {
                    length.step(b)?;
                    At::LengthValue(length)
                }
            },
            At::EndLf => match b {
                b'\n' => return Ok(Some(self.pos + 1)),
                _ => return Err(bad("bare CR: lines must end with CRLF")),
            },
            At::Blank | At::BlankLf => unreachable!("handled above"),
        };
        Ok(None)
    }

    /// The first byte `b` (visible ASCII) of the request target: its form, which the method
    /// decides (RFC 9112 3.2).
    fn target_start(&mut self, b: u8, buf: &[u8]) -> Result<At, HttpError> {
        Ok(match (self.method, b) {
            (MethodIs::Connect, b'/' | b'*') => {
                return Err(bad(
                    "CONNECT takes an authority-form target (host:port), not a path",
                ))
            }
            (MethodIs::Connect, _) => {
                let mut host = HostScan::new(HostIn::Target);
                host.step(buf, self.pos)?;
                At::Authority(host)
            }
            (_, b'/') => At::Target,
            (MethodIs::Options, b'*') => At::Asterisk,
            (_, b'*') => return Err(bad("the asterisk-form target (*) is for OPTIONS only")),
            (_, b) if b.is_ascii_alphabetic() => At::Scheme,
            _ => {
                return Err(bad(
                    "malformed request target: not a path (/...) nor an absolute URI \
                     (scheme://...)",
                ))
            }
        })
    }

    /// The space after the request target: where the version starts.
    fn target_end(&mut self) -> At {
        self.parts.target_end = self.pos - self.start;
        At::Version(0)
    }

    /// The colon after a field name: where its value is scanned (the name is the current line's
    /// bytes before the colon). A second `Host` or `Content-Length` is refused here.
    fn value_start(&mut self, buf: &[u8]) -> Result<At, HttpError> {
        let line = self.pos + 1 - self.line_len;
        let name = &buf[line..self.pos];
        let (known, at) = if name.eq_ignore_ascii_case(b"host") {
            if self.seen & HOST != 0 {
                return Err(bad("more than one Host header"));
            }
            self.seen |= HOST;
            (Known::Host, At::HostValue(HostScan::new(HostIn::Field)))
        } else if name.eq_ignore_ascii_case(b"content-length") {
            if self.seen & CONTENT_LENGTH != 0 {
                return Err(bad("more than one Content-Length header"));
            }
            self.seen |= CONTENT_LENGTH;
            (Known::ContentLength, At::LengthValue(LengthScan::default()))
        } else {
            (Known::Other, At::Value)
        };
        self.parts.fields.push(FieldAt {
            start: line - self.start,
            colon: self.pos - self.start,
            known,
        });
        Ok(at)
    }

    /// True once any byte of a request (not just blank lines) has been seen.
    pub(crate) fn started(&self) -> bool {
        !matches!(self.at, At::Blank | At::BlankLf)
    }

    /// Where the parts of the head are, once `scan` has found its end.
    pub(crate) fn parts(&self) -> &Parts {
        &self.parts
    }

    /// Make ready for the next head, as a new scanner would be (keeping the room it took for
    /// the last head's fields, so that a connection's heads cost no allocation for them).
    pub(crate) fn reset(&mut self) {
        let mut fields = std::mem::take(&mut self.parts.fields);
        fields.clear();
        *self = HeadScanner {
            parts: Parts {
                fields,
                ..Parts::default()
            },
            ..HeadScanner::default()
        };
    }
}

/// `parse::parse_shared` of a head in a slice, scanned first (as the connection scans it) and copied
/// (one allocation that the target and the field values share): for the tests. A head that the
/// scan does not end exactly where `buf` ends is refused: incomplete, or with bytes after it.
#[cfg(test)]
pub(crate) fn parse_head(
    buf: &[u8],
    limits: &Limits,
) -> Result<crate::http::wire::parse::Head, HttpError> {
    let mut scanner = HeadScanner::default();
    match scanner.scan(buf, limits)? {
        Some((a, b)) if b == buf.len() => crate::http::wire::parse::parse_shared(
            bytes::Bytes::copy_from_slice(&buf[a..b]),
            scanner.parts(),
            limits,
            http::HeaderMap::new(),
        ),
        Some(_) => Err(bad("bytes after the end of the head")),
        None => Err(bad("incomplete request head")),
    }
}

#[cfg(test)]
#[path = "head_scan_tests.rs"]
mod tests;
