//! Behind a proxy: which peers are trusted proxies ([`TrustedProxies`], gunicorn's
//! `forwarded_allow_ips`), and the client address and scheme such a peer reports in
//! `X-Forwarded-For`, `X-Forwarded-Proto` or RFC 7239 `Forwarded` ([`Forwarded::from_headers`]).
//!
//! The rules (the builder's [`forwarded_allow_ips`](crate::http::ServerBuilder::forwarded_allow_ips)
//! documents them for users):
//! - the headers are read only from a trusted peer; from anyone else they are ignored (never
//!   believed) and left in the request as they came, as gunicorn does;
//! - `X-Forwarded-For` is read when present, else `Forwarded`'s `for=` parameters: the list is
//!   walked from the right (the entry the nearest proxy added) past every trusted proxy; the first
//!   untrusted address is the client (all trusted: the left-most one). An entry that is not an
//!   address (`unknown`, an obfuscated `_name`, garbage) ends the walk: the client is then the
//!   last trusted hop passed, or, if there is none, the peer itself;
//! - the scheme: `X-Forwarded-Proto`'s right-most value, else the `proto=` of the `Forwarded`
//!   element the client was taken from; only `http` and `https` are taken.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use http::header::{HeaderName, FORWARDED};
use http::HeaderMap;

use crate::BuildError;

pub(crate) const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub(crate) const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");

/// gunicorn's default `forwarded_allow_ips`: the loopback addresses.
pub(crate) const DEFAULT_FORWARDED_ALLOW_IPS: &[&str] = &["127.0.0.1", "::1"];

/// The peers whose forwarding headers are believed: addresses and CIDR blocks, or everyone (`*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TrustedProxies {
    any: bool,
    /// Network address (canonical: IPv4-mapped IPv6 as IPv4) and prefix length.
    nets: Vec<(IpAddr, u8)>,
}

impl TrustedProxies {
    /// Parses a list of `*`, addresses (`10.0.0.1`, `::1`) and CIDR blocks (`10.0.0.0/8`,
    /// `fd00::/8`); an item may itself be a comma-separated list, as gunicorn's setting is.
    pub(crate) fn parse<S: AsRef<str>>(items: &[S]) -> Result<Self, BuildError> {
        let mut t = TrustedProxies {
            any: false,
            nets: Vec::new(),
        };
        for item in items {
            for part in item.as_ref().split(',').map(str::trim) {
                if part.is_empty() {
                    continue;
                }
                if part == "*" {
                    t.any = true;
                    continue;
                }
                t.nets.push(parse_net(part).ok_or_else(|| {
                    BuildError::new(
                        "forwarded_allow_ips",
                        format!("{part:?}"),
                        "IP addresses (10.0.0.1, ::1), CIDR blocks (10.0.0.0/8, fd00::/8) or *",
                    )
                })?);
            }
        }
        Ok(t)
    }

    /// Whether a peer at `ip` is a trusted proxy.
    pub(crate) fn trusts(&self, ip: IpAddr) -> bool {
        if self.any {
            return true;
        }
        let ip = ip.to_canonical();
        self.nets.iter().any(|&(net, len)| in_net(ip, net, len))
    }

    /// Nothing is trusted (an empty list): the headers are never read, not even from a Unix
    /// socket peer.
    pub(crate) fn is_empty(&self) -> bool {
        !self.any && self.nets.is_empty()
    }
}

fn parse_net(s: &str) -> Option<(IpAddr, u8)> {
    let (addr, len) = match s.split_once('/') {
        Some((a, l)) => (a, Some(l)),
        None => (s, None),
    };
    let ip: IpAddr = addr
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .ok()?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    let len = match len {
        Some(l) if l.bytes().all(|b| b.is_ascii_digit()) && !l.is_empty() => l.parse().ok()?,
        Some(_) => return None,
        None => max,
    };
    if len > max {
        return None;
    }
    // An IPv4-mapped block (`::ffff:10.0.0.0/104`) is the IPv4 block.
    match ip {
        IpAddr::V6(v6) if v6.to_ipv4_mapped().is_some() && len >= 96 => {
            Some((IpAddr::V4(v6.to_ipv4_mapped()?), len - 96))
        }
        _ => Some((ip, len)),
    }
}

fn in_net(ip: IpAddr, net: IpAddr, len: u8) -> bool {
    match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(n)) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
            u32::from(a) & mask == u32::from(n) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(n)) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
            u128::from(a) & mask == u128::from(n) & mask
        }
        _ => false,
    }
}

/// The reactor's settings for running behind proxies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ProxySettings {
    /// Peers whose forwarding headers are believed.
    pub trusted: TrustedProxies,
    /// Every connection starts with a PROXY protocol header (v1 or v2).
    pub proxy_protocol: bool,
}

impl Default for ProxySettings {
    fn default() -> Self {
        ProxySettings {
            trusted: TrustedProxies::parse(DEFAULT_FORWARDED_ALLOW_IPS).expect("valid defaults"),
            proxy_protocol: false,
        }
    }
}

/// What a trusted peer's headers say about the client.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Forwarded {
    /// The client's address, when the headers name one that is believed.
    pub client: Option<IpAddr>,
    /// `http` or `https`, when the headers say.
    pub proto: Option<&'static str>,
}

impl Forwarded {
    /// Reads the headers of a request from a trusted peer (the caller checks the peer).
    pub(crate) fn from_headers(headers: &HeaderMap, trusted: &TrustedProxies) -> Forwarded {
        let xff = joined(headers, X_FORWARDED_FOR);
        let mut out = Forwarded::default();
        let mut element_proto = None;
        if let Some(xff) = xff {
            let nodes: Vec<&str> = xff.split(',').map(str::trim).collect();
            out.client = walk(&nodes, trusted).map(|(ip, _)| ip);
        } else if let Some(fwd) = joined(headers, FORWARDED) {
            let elements = parse_forwarded(&fwd);
            let nodes: Vec<&str> = elements
                .iter()
                .map(|e| e.0.as_deref().unwrap_or(""))
                .collect();
            if let Some((ip, i)) = walk(&nodes, trusted) {
                out.client = Some(ip);
                element_proto = elements[i].1.as_deref().and_then(scheme);
            }
        }
        out.proto = match joined(headers, X_FORWARDED_PROTO) {
            Some(p) => p.rsplit(',').next().and_then(|p| scheme(p.trim())),
            None => element_proto,
        };
        out
    }
}

/// What the server believes of a request's forwarding headers: nothing unless its peer is
/// trusted (`peer`: the PROXY header's source or the socket's peer; `None` for a Unix socket
/// peer, which is trusted unless the list is empty, as gunicorn trusts one) and it has any.
pub(crate) fn believe(
    settings: &ProxySettings,
    peer: Option<IpAddr>,
    headers: &HeaderMap,
) -> Forwarded {
    let trusted = &settings.trusted;
    let trusts = match peer {
        Some(ip) => trusted.trusts(ip),
        None => !trusted.is_empty(),
    };
    // One pass over the names (a request has a few), cheaper than three hashed look-ups.
    let any = || {
        headers
            .keys()
            .any(|k| *k == X_FORWARDED_FOR || *k == FORWARDED || *k == X_FORWARDED_PROTO)
    };
    if !trusts || !any() {
        return Forwarded::default();
    }
    Forwarded::from_headers(headers, trusted)
}

/// `http` or `https` (any case), else nothing.
fn scheme(p: &str) -> Option<&'static str> {
    if p.eq_ignore_ascii_case("https") {
        Some("https")
    } else if p.eq_ignore_ascii_case("http") {
        Some("http")
    } else {
        None
    }
}

/// Every value of a header, joined with commas (one list, as RFC 9110 reads repeated fields).
fn joined(headers: &HeaderMap, name: HeaderName) -> Option<String> {
    let mut values = headers.get_all(name).iter().filter_map(|v| v.to_str().ok());
    let mut s = values.next()?.to_string();
    for v in values {
        s.push(',');
        s.push_str(v);
    }
    Some(s)
}

/// Walks `nodes` from the right past trusted proxies: the client's address and its index.
fn walk(nodes: &[&str], trusted: &TrustedProxies) -> Option<(IpAddr, usize)> {
    let mut last = None;
    for (i, node) in nodes.iter().enumerate().rev() {
        let Some(ip) = parse_node(node) else {
            return last;
        };
        if !trusted.trusts(ip) {
            return Some((ip, i));
        }
        last = Some((ip, i));
    }
    last
}

/// One hop: `1.2.3.4`, `1.2.3.4:80`, `::1`, `[::1]`, `[::1]:80`, possibly quoted. The address is
/// canonical (IPv4-mapped IPv6 as IPv4).
pub(crate) fn parse_node(s: &str) -> Option<IpAddr> {
    let s = s.trim().trim_matches('"');
    let ip = if let Some(rest) = s.strip_prefix('[') {
        let (v6, after) = rest.split_once(']')?;
        if !(after.is_empty() || is_port(after.strip_prefix(':')?)) {
            return None;
        }
        IpAddr::V6(v6.parse::<Ipv6Addr>().ok()?)
    } else if let Ok(ip) = s.parse::<IpAddr>() {
        ip
    } else {
        let (v4, port) = s.split_once(':')?;
        if !is_port(port) {
            return None;
        }
        IpAddr::V4(v4.parse::<Ipv4Addr>().ok()?)
    };
    Some(ip.to_canonical())
}

fn is_port(p: &str) -> bool {
    !p.is_empty()
        && p.len() <= 5
        && p.bytes().all(|b| b.is_ascii_digit())
        && p.parse::<u16>().is_ok()
}

/// RFC 7239 `Forwarded`: per element, its `for=` and `proto=` values (unquoted).
fn parse_forwarded(s: &str) -> Vec<(Option<String>, Option<String>)> {
    let mut elements = Vec::new();
    let (mut for_, mut proto) = (None, None);
    let mut chars = s.chars().peekable();
    loop {
        // One pair: name `=` (token | quoted-string); then `;`, `,` or the end.
        let mut name = String::new();
        while let Some(&c) = chars.peek() {
            if c == '=' || c == ';' || c == ',' {
                break;
            }
            name.push(c);
            chars.next();
        }
        let mut value = String::new();
        if chars.peek() == Some(&'=') {
            chars.next();
            while chars.peek() == Some(&' ') {
                chars.next();
            }
            if chars.peek() == Some(&'"') {
                chars.next();
                while let Some(c) = chars.next() {
                    match c {
                        '"' => break,
                        '\\' => value.extend(chars.next()),
                        c => value.push(c),
                    }
                }
            }
            while let Some(&c) = chars.peek() {
                if c == ';' || c == ',' {
                    break;
                }
                value.push(c);
                chars.next();
            }
        }
        match name.trim().to_ascii_lowercase().as_str() {
            "for" => for_ = Some(value.trim().to_string()),
            "proto" => proto = Some(value.trim().to_string()),
            _ => {}
        }
        match chars.next() {
            Some(';') => {}
            Some(_) => elements.push((for_.take(), proto.take())),
            None => {
                elements.push((for_.take(), proto.take()));
                return elements;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                http::header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    #[test]
    fn the_allow_list_takes_addresses_blocks_and_star() {
        let t = TrustedProxies::parse(&["127.0.0.1,::1", "10.0.0.0/8", "fd00::/8"]).unwrap();
        assert!(t.trusts(ip("127.0.0.1")));
        assert!(t.trusts(ip("::1")));
        assert!(t.trusts(ip("::ffff:127.0.0.1")), "IPv4-mapped");
        assert!(t.trusts(ip("10.200.1.2")));
        assert!(t.trusts(ip("fd12::5")));
        assert!(!t.trusts(ip("127.0.0.2")));
        assert!(!t.trusts(ip("11.0.0.1")));
        assert!(!t.trusts(ip("fe80::1")));
        assert!(TrustedProxies::parse(&["*"])
            .unwrap()
            .trusts(ip("203.0.113.9")));
        assert!(TrustedProxies::parse(&["0.0.0.0/0"])
            .unwrap()
            .trusts(ip("203.0.113.9")));
        assert!(!TrustedProxies::parse(&["0.0.0.0/0"])
            .unwrap()
            .trusts(ip("::2")));
        assert!(TrustedProxies::parse::<&str>(&[]).unwrap().is_empty());
        for bad in [
            "10.0.0.0/33",
            "::/129",
            "host",
            "10.0.0.1/",
            "10.0.0.1/x",
            "1.2.3",
        ] {
            let e = TrustedProxies::parse(&[bad]).unwrap_err();
            assert_eq!(e.field, "forwarded_allow_ips", "{bad}");
        }
    }

    #[test]
    fn x_forwarded_for_is_walked_from_the_right_past_trusted_proxies() {
        let t = TrustedProxies::parse(&["127.0.0.1", "10.0.0.0/8"]).unwrap();
        let client =
            |xff: &str| Forwarded::from_headers(&headers(&[("x-forwarded-for", xff)]), &t).client;
        assert_eq!(client("203.0.113.7"), Some(ip("203.0.113.7")));
        // A client's own (forged) entries are left of the one our proxy added.
        assert_eq!(client("1.1.1.1, 203.0.113.7"), Some(ip("203.0.113.7")));
        assert_eq!(
            client("1.1.1.1, 203.0.113.7, 10.0.0.2"),
            Some(ip("203.0.113.7"))
        );
        assert_eq!(
            client("10.0.0.3, 10.0.0.2"),
            Some(ip("10.0.0.3")),
            "all trusted"
        );
        assert_eq!(client("203.0.113.7:5555"), Some(ip("203.0.113.7")));
        assert_eq!(client("[2001:db8::1]:80"), Some(ip("2001:db8::1")));
        assert_eq!(client("2001:db8::1"), Some(ip("2001:db8::1")));
        assert_eq!(client("garbage"), None);
        assert_eq!(client("unknown, 10.0.0.2"), Some(ip("10.0.0.2")));
        assert_eq!(client("1.1.1.1, garbage"), None);
        assert_eq!(client(""), None);
        // Two header lines are one list.
        let h = headers(&[
            ("x-forwarded-for", "1.1.1.1"),
            ("x-forwarded-for", "2.2.2.2"),
        ]);
        assert_eq!(Forwarded::from_headers(&h, &t).client, Some(ip("2.2.2.2")));
    }

    #[test]
    fn rfc_7239_forwarded_and_the_proto() {
        let t = TrustedProxies::parse(&["127.0.0.1"]).unwrap();
        let f = |pairs: &[(&str, &str)]| Forwarded::from_headers(&headers(pairs), &t);
        let got = f(&[(
            "forwarded",
            r#"for="[2001:db8:cafe::17]:4711";proto=https, for=127.0.0.1"#,
        )]);
        assert_eq!(got.client, Some(ip("2001:db8:cafe::17")));
        assert_eq!(got.proto, Some("https"));
        let got = f(&[("forwarded", "For=192.0.2.60;Proto=http;By=203.0.113.43")]);
        assert_eq!(got.client, Some(ip("192.0.2.60")));
        assert_eq!(got.proto, Some("http"));
        assert_eq!(f(&[("forwarded", "for=_hidden")]).client, None);
        assert_eq!(
            f(&[("forwarded", "for=unknown, for=192.0.2.1")]).client,
            Some(ip("192.0.2.1"))
        );
        assert_eq!(f(&[("forwarded", r#"for="bad\"quote, x""#)]).client, None);
        // X-Forwarded-For wins over Forwarded; X-Forwarded-Proto's last value is taken.
        let got = f(&[
            ("forwarded", "for=192.0.2.1;proto=http"),
            ("x-forwarded-for", "198.51.100.2"),
            ("x-forwarded-proto", "http, HTTPS"),
        ]);
        assert_eq!(got.client, Some(ip("198.51.100.2")));
        assert_eq!(got.proto, Some("https"));
        assert_eq!(f(&[("x-forwarded-proto", "gopher")]).proto, None);
        assert_eq!(f(&[]), Forwarded::default());
    }
}
