//! The PROXY protocol (HAProxy's, versions 1 and 2): the header a proxy sends first on each
//! connection, naming the client it accepted. [`parse`] reads it from the start of a
//! connection's input as it arrives, however split; the connection (`conn/`) calls it before
//! the HTTP head on a listener where the builder turned it on.
//!
//! Strict: the header must be the first bytes; version 1 (`PROXY TCP4|TCP6|UNKNOWN ...\r\n`) is
//! at most 107 bytes, single spaces, addresses of the stated family, decimal ports; version 2
//! (the 12-byte binary signature, version 2, command `LOCAL` or `PROXY`) carries TCP over IPv4 or
//! IPv6, or no address (`LOCAL`, family `UNSPEC`, or a Unix socket), its TLVs skipped, at most
//! 16 + 65535 bytes (the format's own bound). Anything else is an error: the connection is closed
//! without an HTTP answer.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// Version 1's largest header, `\r\n` included.
pub(crate) const V1_MAX: usize = 107;
const V1_SIG: &[u8] = b"PROXY ";
const V2_SIG: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";

/// Why a header was refused (for the debug log).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Malformed(pub &'static str);

/// A complete header: its length in bytes and the client it names (`None`: no address, i.e.
/// `UNKNOWN`, `LOCAL`, `UNSPEC` or a Unix socket; the connection's own peer stands).
pub(crate) type Parsed = (usize, Option<SocketAddr>);

/// Reads a PROXY header from the start of `buf`: `Ok(None)` while it is incomplete (and still
/// valid so far), `Ok(Some(..))` once complete, `Err` as soon as it cannot be a valid header.
pub(crate) fn parse(buf: &[u8]) -> Result<Option<Parsed>, Malformed> {
    match buf.first() {
        None => Ok(None),
        Some(b'P') => v1(buf),
        Some(b'\r') => v2(buf),
        Some(_) => Err(Malformed("no PROXY protocol header")),
    }
}

fn v1(buf: &[u8]) -> Result<Option<Parsed>, Malformed> {
    let n = buf.len().min(V1_SIG.len());
    if buf[..n] != V1_SIG[..n] {
        return Err(Malformed("no PROXY protocol header"));
    }
    let window = &buf[..buf.len().min(V1_MAX)];
    let Some(lf) = window.iter().position(|&b| b == b'\n') else {
        if buf.len() >= V1_MAX {
            return Err(Malformed("PROXY v1 header longer than 107 bytes"));
        }
        return Ok(None);
    };
    if lf < V1_SIG.len() || window[lf - 1] != b'\r' {
        return Err(Malformed("PROXY v1 line not ended by CRLF"));
    }
    let line = std::str::from_utf8(&window[V1_SIG.len()..lf - 1])
        .map_err(|_| Malformed("PROXY v1 header not ASCII"))?;
    let len = lf + 1;
    if line == "UNKNOWN" || line.starts_with("UNKNOWN ") {
        // The rest of the line is to be ignored (spec 2.1).
        return Ok(Some((len, None)));
    }
    let parts: Vec<&str> = line.split(' ').collect();
    let [proto, src, dst, sport, dport] = parts[..] else {
        return Err(Malformed("PROXY v1 header: wrong number of fields"));
    };
    let (src, _dst): (IpAddr, IpAddr) = match proto {
        "TCP4" => (IpAddr::V4(ipv4(src)?), IpAddr::V4(ipv4(dst)?)),
        "TCP6" => (
            IpAddr::V6(
                src.parse::<Ipv6Addr>()
                    .map_err(|_| Malformed("PROXY v1: bad IPv6 address"))?,
            ),
            IpAddr::V6(
                dst.parse::<Ipv6Addr>()
                    .map_err(|_| Malformed("PROXY v1: bad IPv6 address"))?,
            ),
        ),
        _ => return Err(Malformed("PROXY v1: protocol not TCP4, TCP6 or UNKNOWN")),
    };
    let sport = port(sport)?;
    port(dport)?;
    Ok(Some((len, Some(SocketAddr::new(src, sport)))))
}

fn ipv4(s: &str) -> Result<Ipv4Addr, Malformed> {
    s.parse()
        .map_err(|_| Malformed("PROXY v1: bad IPv4 address"))
}

/// A decimal port, 0..=65535, no sign, no leading zero.
fn port(s: &str) -> Result<u16, Malformed> {
    let ok = !s.is_empty()
        && s.len() <= 5
        && s.bytes().all(|b| b.is_ascii_digit())
        && (s == "0" || !s.starts_with('0'));
    ok.then(|| s.parse().ok())
        .flatten()
        .ok_or(Malformed("PROXY v1: bad port"))
}

fn v2(buf: &[u8]) -> Result<Option<Parsed>, Malformed> {
    let n = buf.len().min(V2_SIG.len());
    if buf[..n] != V2_SIG[..n] {
        return Err(Malformed("no PROXY protocol header"));
    }
    if buf.len() < 13 {
        return Ok(None);
    }
    let ver_cmd = buf[12];
    if ver_cmd >> 4 != 2 {
        return Err(Malformed("PROXY v2: version not 2"));
    }
    let local = match ver_cmd & 0x0f {
        0 => true,
        1 => false,
        _ => return Err(Malformed("PROXY v2: command not LOCAL or PROXY")),
    };
    if buf.len() < 16 {
        return Ok(None);
    }
    let fam = buf[13];
    let len = u16::from_be_bytes([buf[14], buf[15]]) as usize;
    let total = 16 + len;
    let need = match fam {
        0x00 => 0,   // UNSPEC
        0x11 => 12,  // TCP over IPv4
        0x21 => 36,  // TCP over IPv6
        0x31 => 216, // Unix stream
        _ if local => 0,
        _ => return Err(Malformed("PROXY v2: not TCP over IPv4 or IPv6")),
    };
    if len < need {
        return Err(Malformed("PROXY v2: address block too short"));
    }
    if buf.len() < total {
        return Ok(None);
    }
    if local {
        // Health checks from the proxy itself: the connection's own peer stands.
        return Ok(Some((total, None)));
    }
    let a = &buf[16..total];
    let client = match fam {
        0x11 => {
            let ip = Ipv4Addr::new(a[0], a[1], a[2], a[3]);
            Some(SocketAddr::new(
                IpAddr::V4(ip),
                u16::from_be_bytes([a[8], a[9]]),
            ))
        }
        0x21 => {
            let mut o = [0u8; 16];
            o.copy_from_slice(&a[..16]);
            let ip = Ipv6Addr::from(o);
            Some(SocketAddr::new(
                IpAddr::V6(ip),
                u16::from_be_bytes([a[32], a[33]]),
            ))
        }
        _ => None,
    };
    Ok(Some((total, client)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    /// Every prefix of a valid header is incomplete, the whole is complete.
    fn complete_only_at_the_end(h: &[u8]) -> Parsed {
        for i in 0..h.len() {
            assert_eq!(parse(&h[..i]), Ok(None), "prefix {i} of {h:?}");
        }
        parse(h).unwrap().unwrap()
    }

    #[test]
    fn v1_tcp4_tcp6_unknown() {
        let h = b"PROXY TCP4 192.0.2.7 10.0.0.1 56324 8080\r\nGET";
        assert_eq!(parse(h), Ok(Some((42, Some(sa("192.0.2.7:56324"))))));
        let h = b"PROXY TCP6 2001:db8::7 ::1 65535 80\r\n";
        assert_eq!(
            complete_only_at_the_end(h),
            (h.len(), Some(sa("[2001:db8::7]:65535")))
        );
        assert_eq!(parse(b"PROXY UNKNOWN\r\n"), Ok(Some((15, None))));
        assert_eq!(
            parse(b"PROXY UNKNOWN ffff::1 ::1 1 2\r\n"),
            Ok(Some((31, None)))
        );
    }

    #[test]
    fn v1_malformed() {
        for bad in [
            &b"GET / HTTP/1.1\r\n"[..],
            b"PROXX",
            b"PROXY TCP4 192.0.2.7 10.0.0.1 56324 8080\n",
            b"PROXY TCP4 192.0.2.7  10.0.0.1 56324 8080\r\n",
            b"PROXY TCP4 2001:db8::7 10.0.0.1 1 2\r\n",
            b"PROXY TCP6 192.0.2.7 ::1 1 2\r\n",
            b"PROXY TCP4 192.0.2.7 10.0.0.1 65536 80\r\n",
            b"PROXY TCP4 192.0.2.7 10.0.0.1 080 80\r\n",
            b"PROXY TCP4 192.0.2.7 10.0.0.1 +80 80\r\n",
            b"PROXY TCP4 192.0.2.7 10.0.0.1 80\r\n",
            b"PROXY UDP4 192.0.2.7 10.0.0.1 1 2\r\n",
            b"PROXY \r\n",
        ] {
            assert!(parse(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
        let mut long = b"PROXY UNKNOWN ".to_vec();
        long.resize(V1_MAX, b'x');
        assert!(parse(&long).is_err(), "no CRLF within 107 bytes");
        long.truncate(V1_MAX - 2);
        long.extend_from_slice(b"\r\n");
        assert_eq!(parse(&long), Ok(Some((V1_MAX, None))), "exactly 107 bytes");
    }

    fn v2_header(cmd: u8, fam: u8, addr: &[u8], tlv: &[u8]) -> Vec<u8> {
        let mut h = V2_SIG.to_vec();
        h.push(0x20 | cmd);
        h.push(fam);
        h.extend_from_slice(&((addr.len() + tlv.len()) as u16).to_be_bytes());
        h.extend_from_slice(addr);
        h.extend_from_slice(tlv);
        h
    }

    #[test]
    fn v2_tcp4_tcp6_local() {
        let h = v2_header(
            1,
            0x11,
            &[192, 0, 2, 7, 10, 0, 0, 1, 0xdc, 0x04, 0x1f, 0x90],
            &[],
        );
        assert_eq!(
            complete_only_at_the_end(&h),
            (28, Some(sa("192.0.2.7:56324")))
        );
        let mut a = Vec::new();
        a.extend_from_slice(&"2001:db8::7".parse::<Ipv6Addr>().unwrap().octets());
        a.extend_from_slice(&Ipv6Addr::LOCALHOST.octets());
        a.extend_from_slice(&[0xff, 0xff, 0, 80]);
        let h = v2_header(1, 0x21, &a, &[0x04, 0, 1, b'x']);
        assert_eq!(
            complete_only_at_the_end(&h),
            (16 + 40, Some(sa("[2001:db8::7]:65535")))
        );
        let h = v2_header(0, 0x00, &[], &[]);
        assert_eq!(complete_only_at_the_end(&h), (16, None));
        let h = v2_header(0, 0x11, &[0; 12], &[]);
        assert_eq!(
            parse(&h),
            Ok(Some((28, None))),
            "LOCAL ignores the addresses"
        );
        let h = v2_header(1, 0x00, &[], &[]);
        assert_eq!(parse(&h), Ok(Some((16, None))), "PROXY with UNSPEC");
    }

    #[test]
    fn v2_malformed() {
        let mut h = v2_header(1, 0x11, &[0; 12], &[]);
        h[12] = 0x11;
        assert!(parse(&h).is_err(), "version 1 in the binary header");
        h[12] = 0x22;
        assert!(parse(&h).is_err(), "command 2");
        assert!(parse(&v2_header(1, 0x12, &[0; 12], &[])).is_err(), "UDP");
        assert!(
            parse(&v2_header(1, 0x11, &[0; 11], &[])).is_err(),
            "short address block"
        );
        assert!(
            parse(&v2_header(1, 0x21, &[0; 12], &[])).is_err(),
            "short IPv6 block"
        );
        assert!(parse(b"\r\n\r\n\0\r\nQUIX").is_err());
        assert!(parse(b"\r\nGET").is_err());
    }
}
