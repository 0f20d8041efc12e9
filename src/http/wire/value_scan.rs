//! The parts of a request head that `head_scan.rs` checks beyond their bytes, a byte at a time as
//! they arrive: a host and port (the `Host` field, and CONNECT's authority-form target) and a
//! `Content-Length` value. Each is refused at the byte that makes it wrong, or at its end when
//! only the end can tell (an IP literal at its `]`, an empty `Content-Length` at its CR).
//!
//! Choices, where the RFCs leave room:
//! - **`Host`** must be `uri-host [ ":" port ]` (RFC 9110 7.2, RFC 3986 3.2.2) with optional
//!   whitespace around it: a reg-name (unreserved bytes, sub-delims, `%XX`), an IPv4 address, or
//!   an IP literal in brackets (an IPv6 address, or `vX.…`), then a port of digits. An empty value
//!   is valid (RFC 9112 3.2: what a client with no authority sends); a port with no host is not
//!   (RFC 9110 4.2.1: an `http` URI with an empty host is invalid). A comma is refused as "more
//!   than one host", though RFC 3986 lets a reg-name hold one: no real host name has one, and two
//!   readers could split it differently.
//! - **CONNECT's target** is `uri-host ":" port` with a host and at least one port digit (RFC 9112
//!   3.2.3).
//! - **`Content-Length`** is one field with one decimal value and optional whitespace around it, as
//!   llhttp's strict mode has it: a second `Content-Length` field, or a list in one (`3, 3`), is
//!   400 even when the values agree (RFC 9110 8.6 lets a recipient refuse them; a reader that
//!   took only one of them could disagree on where the body ends). Zeros in front are accepted
//!   (the value stays exact); more than 19 significant digits is 400, and a value over the body
//!   limit is 413, at the field's CR.

use std::net::Ipv6Addr;

use crate::http::wire::parse::{bad, body_too_large, HttpError, Limits};

/// Where a host is, which decides how it may end and what its refusals say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HostIn {
    /// The `Host` field's value: whitespace may surround it, it may be empty, the port is
    /// optional; its end is the line's CR.
    Field,
    /// CONNECT's authority-form target: a host and a port of at least one digit; its end is the
    /// space before the version.
    Target,
}

/// The place in `uri-host [ ":" port ]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum HostAt {
    /// Nothing of the host yet (the field's leading whitespace is skipped here).
    Start,
    /// In a reg-name or an IPv4 address.
    Name,
    /// In a percent-encoding, with this many hex digits to come.
    Pct(u8),
    /// Inside `[...]`; the literal starts at `mark`.
    Literal,
    /// After the `]`.
    LiteralEnd,
    /// After the `:`, and whether a digit came.
    Port(bool),
    /// In the field's trailing whitespace: only more of it may follow.
    Trail,
}

/// The scan of a host and port, fed each byte in turn ([`step`](Self::step)) and told where it
/// ends ([`end`](Self::end)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct HostScan {
    within: HostIn,
    at: HostAt,
    /// Where the current IP literal starts in the buffer (after its `[`).
    mark: usize,
}

/// A byte of a reg-name: unreserved or a sub-delim (RFC 3986 2.2, 2.3), but the comma (refused:
/// see the module's choices).
fn is_reg_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b'-' | b'.'
                | b'_'
                | b'~'
                | b'!'
                | b'$'
                | b'&'
                | b'\''
                | b'('
                | b')'
                | b'*'
                | b'+'
                | b';'
                | b'='
        )
}

/// An IP literal's inside (between `[` and `]`, RFC 3986 3.2.2): an IPv6 address, or
/// `IPvFuture` (`v` 1*HEXDIG `.` 1*( unreserved / sub-delims / `:` )).
fn is_ip_literal(s: &[u8]) -> bool {
    match s {
        [b'v' | b'V', rest @ ..] => {
            let hex = rest.iter().take_while(|b| b.is_ascii_hexdigit()).count();
            match rest.get(hex..) {
                Some([b'.', tail @ ..]) => {
                    hex > 0
                        && !tail.is_empty()
                        && tail.iter().all(|&b| b == b':' || is_reg_name_byte(b))
                }
                _ => false,
            }
        }
        _ => std::str::from_utf8(s).is_ok_and(|s| s.parse::<Ipv6Addr>().is_ok()),
    }
}

/// A `Host` field's value of the common shape, whole: `OWS [reg-name [":" *DIGIT]] OWS CRLF`
/// (no `%`, no `[...]`), the bytes of which [`HostScan`] takes one by one from its start to the
/// same place, refusing none. Returns where its CR is; `None` for any other shape (or a value
/// not all here yet), which the scan then takes a byte at a time. Inlined into the head scan
/// (every request with a `Host` field comes here once), as the scan's own word helpers are.
#[inline]
pub(crate) fn plain_field_host(s: &[u8]) -> Option<usize> {
    let ows = |b: &u8| *b == b' ' || *b == b'\t';
    let mut i = s.iter().take_while(|b| ows(b)).count();
    let name = i;
    i += s[i..].iter().take_while(|&&b| is_reg_name_byte(b)).count();
    if i > name && s.get(i) == Some(&b':') {
        i += 1;
        i += s[i..].iter().take_while(|b| b.is_ascii_digit()).count();
    }
    i += s[i..].iter().take_while(|b| ows(b)).count();
    (s.get(i..i + 2) == Some(b"\r\n")).then_some(i)
}

impl HostScan {
    /// Nothing of the value looked at yet.
    pub(crate) fn is_fresh(&self) -> bool {
        self.at == HostAt::Start
    }

    pub(crate) fn new(within: HostIn) -> Self {
        HostScan {
            within,
            at: HostAt::Start,
            mark: 0,
        }
    }

    fn refuse(&self, why: &str) -> HttpError {
        match self.within {
            HostIn::Field => HttpError::new(400, format!("malformed Host header: {why}")),
            HostIn::Target => HttpError::new(
                400,
                format!("malformed CONNECT target (it is host:port): {why}"),
            ),
        }
    }

    /// Look at `buf[pos]`, the host's next byte (the caller ends a target at its space and a
    /// field at its CR, and refuses a bare LF).
    pub(crate) fn step(&mut self, buf: &[u8], pos: usize) -> Result<(), HttpError> {
        let b = buf[pos];
        let ows = self.within == HostIn::Field && matches!(b, b' ' | b'\t');
        self.at = match self.at {
            HostAt::Start if ows => HostAt::Start,
            HostAt::Start if b == b'[' => {
                self.mark = pos + 1;
                HostAt::Literal
            }
            HostAt::Start if b == b':' => return Err(self.refuse("a port with no host")),
            HostAt::Start | HostAt::Name => match b {
                b',' if self.within == HostIn::Field => {
                    return Err(bad("more than one host in the Host header"))
                }
                b',' => return Err(self.refuse("a comma")),
                b'%' => HostAt::Pct(2),
                b':' => HostAt::Port(false),
                b if is_reg_name_byte(b) => HostAt::Name,
                _ if ows => HostAt::Trail,
                _ => return Err(self.refuse("a byte a host name cannot hold")),
            },
            HostAt::Pct(n) if b.is_ascii_hexdigit() => {
                if n == 1 {
                    HostAt::Name
                } else {
                    HostAt::Pct(n - 1)
                }
            }
            HostAt::Pct(_) => return Err(self.refuse("a % not followed by two hex digits")),
            HostAt::Literal => match b {
                b']' if is_ip_literal(&buf[self.mark..pos]) => HostAt::LiteralEnd,
                b']' => return Err(self.refuse("not an IP address between [ and ]")),
                b':' => HostAt::Literal,
                b if is_reg_name_byte(b) => HostAt::Literal,
                _ => return Err(self.refuse("a byte an IP literal cannot hold")),
            },
            HostAt::LiteralEnd => match b {
                b':' => HostAt::Port(false),
                _ if ows => HostAt::Trail,
                _ => return Err(self.refuse("bytes after the ]")),
            },
            HostAt::Port(_) => match b {
                b'0'..=b'9' => HostAt::Port(true),
                _ if ows => HostAt::Trail,
                _ => return Err(self.refuse("a port is digits only")),
            },
            HostAt::Trail if ows => HostAt::Trail,
            HostAt::Trail => return Err(self.refuse("a space inside the value")),
        };
        Ok(())
    }

    /// The host ends here (the field's CR, the target's space): refused if it cannot end here.
    pub(crate) fn end(&self) -> Result<(), HttpError> {
        match (self.within, self.at) {
            (_, HostAt::Pct(_)) => Err(self.refuse("a % not followed by two hex digits")),
            (_, HostAt::Literal) => Err(self.refuse("a [ without its ]")),
            (HostIn::Target, HostAt::Port(true)) | (HostIn::Field, _) => Ok(()),
            (HostIn::Target, _) => Err(self.refuse("no port")),
        }
    }
}

/// The place in a `Content-Length` value.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum LengthAt {
    /// Before the digits (leading whitespace is skipped).
    #[default]
    Lead,
    Digits,
    /// After the digits: only whitespace may follow.
    Trail,
}

/// The scan of a `Content-Length` value, fed each byte in turn ([`step`](Self::step)) and told
/// where it ends ([`end`](Self::end)).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LengthScan {
    at: LengthAt,
    value: u64,
    /// Digits after the zeros in front.
    significant: u8,
}

impl LengthScan {
    /// Look at the value's next byte (the caller ends it at its CR and refuses a bare LF).
    pub(crate) fn step(&mut self, b: u8) -> Result<(), HttpError> {
        match (self.at, b) {
            (LengthAt::Lead | LengthAt::Trail, b' ' | b'\t') => {}
            (LengthAt::Digits, b' ' | b'\t') => self.at = LengthAt::Trail,
            (LengthAt::Lead | LengthAt::Digits, b'0'..=b'9') => {
                self.at = LengthAt::Digits;
                if self.significant > 0 || b != b'0' {
                    self.significant += 1;
                    if self.significant > 19 {
                        return Err(bad("Content-Length too long (at most 19 digits)"));
                    }
                }
                // At most 19 significant digits: below u64::MAX.
                self.value = self.value * 10 + u64::from(b - b'0');
            }
            (_, b',') => return Err(bad("a list in Content-Length (one value only)")),
            _ => return Err(bad("malformed Content-Length")),
        }
        Ok(())
    }

    /// The value ends here (its CR): refused if empty, or 413 if over the body limit.
    pub(crate) fn end(&self, limits: &Limits) -> Result<(), HttpError> {
        if self.at == LengthAt::Lead {
            return Err(bad("malformed Content-Length"));
        }
        if self.value > limits.body_bytes {
            return Err(body_too_large(limits));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The outcome of a host fed whole, then ended: `Ok` or the refusal's status.
    fn host(within: HostIn, s: &str) -> Result<(), u16> {
        let mut h = HostScan::new(within);
        for pos in 0..s.len() {
            h.step(s.as_bytes(), pos).map_err(|e| e.status)?;
        }
        h.end().map_err(|e| e.status)
    }

    fn length(s: &str) -> Result<u64, u16> {
        let mut l = LengthScan::default();
        for b in s.bytes() {
            l.step(b).map_err(|e| e.status)?;
        }
        l.end(&Limits::default()).map_err(|e| e.status)?;
        Ok(l.value)
    }

    #[test]
    fn host_field_values() {
        for ok in [
            "x",
            "example.com",
            "example.com:8080",
            "127.0.0.1:80",
            "  a.b  ",
            "\tx\t",
            "",
            "   ",
            "a:",
            "[::1]",
            "[::1]:8080",
            "[2001:db8::ffff:1.2.3.4]:1",
            "[v1.fe80::a+en1]",
            "caf%C3%A9.example",
            "a-b_c~d!$&'()*+;=",
            "0",
        ] {
            assert_eq!(host(HostIn::Field, ok), Ok(()), "{ok:?}");
        }
        for bad in [
            "a b",
            "a\tb",
            "a, b",
            "a,b",
            ":80",
            "a:b",
            "a:80:90",
            "a:80 x",
            "a/b",
            "a@b",
            "a?",
            "a#",
            "\"a\"",
            "[::1",
            "[::1]x",
            "[::g]",
            "[1.2.3.4]",
            "[v.x]",
            "[v1.]",
            "[vz.x]",
            "[::1,]",
            "a[",
            "%4",
            "%zz",
            "a%4x",
            "caf\u{e9}",
            "a\u{7f}",
        ] {
            assert_eq!(host(HostIn::Field, bad), Err(400), "{bad:?}");
        }
    }

    #[test]
    fn connect_targets() {
        for ok in ["h:443", "example.com:1", "[::1]:8443", "10.0.0.1:22"] {
            assert_eq!(host(HostIn::Target, ok), Ok(()), "{ok:?}");
        }
        for bad in [
            "h", "h:", ":443", "[::1]", "h:443x", "h :443", "h\t:443", "a,b:1",
        ] {
            assert_eq!(host(HostIn::Target, bad), Err(400), "{bad:?}");
        }
    }

    #[test]
    fn content_length_values() {
        for (s, n) in [
            ("0", 0),
            ("3", 3),
            (" 3 ", 3),
            ("\t0003\t", 3),
            ("10485760", 10 << 20),
            ("0000000000000000000000000000001", 1),
        ] {
            assert_eq!(length(s), Ok(n), "{s:?}");
        }
        for (s, status) in [
            ("", 400),
            ("  ", 400),
            ("+3", 400),
            ("-3", 400),
            ("3 3", 400),
            ("3,3", 400),
            (" 3 , 3", 400),
            ("3x", 400),
            ("0x3", 400),
            ("1e3", 400),
            ("99999999999999999999999", 400),
            ("10000000000000000000", 400),
            ("9999999999999999999", 413),
            ("10485761", 413),
        ] {
            assert_eq!(length(s), Err(status), "{s:?}");
        }
    }

    /// An overflowing or listed value is refused at the byte that makes it so, not at its end.
    #[test]
    fn content_length_refused_at_the_bad_byte() {
        let mut l = LengthScan::default();
        for b in b"1234567890123456789" {
            l.step(*b).unwrap();
        }
        assert_eq!(l.step(b'0').unwrap_err().status, 400);
        let mut l = LengthScan::default();
        l.step(b'3').unwrap();
        assert_eq!(l.step(b',').unwrap_err().status, 400);
    }
}
