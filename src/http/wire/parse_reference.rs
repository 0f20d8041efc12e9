//! The parse of a request head that `parse.rs` replaced (`httparse`, then lookups in the built
//! map), kept for the tests only: the reference the one-pass parse must agree with on every head
//! the scanner accepts.

use http::header::{HeaderName, HeaderValue, CONTENT_LENGTH, EXPECT, HOST, TRANSFER_ENCODING};
use http::{HeaderMap, Method, Uri, Version};

use crate::http::wire::parse::{
    bad, connect_not_served, unsupported_version, Framing, Head, HttpError, Limits,
};

/// Parse a complete head (`buf` is exactly the head, ending with the blank line).
pub(in crate::http) fn parse_head(buf: &[u8], limits: &Limits) -> Result<Head, HttpError> {
    // One slot per line is enough (the scanner already enforced the field limit).
    let lines = buf.iter().filter(|&&b| b == b'\n').count();
    let mut headers = vec![httparse::EMPTY_HEADER; lines.clamp(1, limits.fields.max(1))];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(buf) {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) => return Err(bad("incomplete request head")),
        // The scanner refused every other version already.
        Err(httparse::Error::Version) => return Err(unsupported_version()),
        Err(httparse::Error::TooManyHeaders) => {
            return Err(HttpError::new(
                431,
                format!("too many header fields (the limit is {})", limits.fields),
            ))
        }
        Err(e) => return Err(HttpError::new(400, format!("malformed request: {e}"))),
    }
    let method = Method::from_bytes(req.method.unwrap_or("").as_bytes())
        .map_err(|_| bad("malformed method"))?;
    // Added with the scanner's check of the target's form: what the parse answers a CONNECT.
    if method == Method::CONNECT {
        return Err(connect_not_served());
    }
    let uri = ref_target(req.path.unwrap_or(""))?;
    let version = match req.version {
        Some(0) => Version::HTTP_10,
        Some(1) => Version::HTTP_11,
        _ => return Err(HttpError::new(505, "unsupported HTTP version")),
    };
    let mut map = HeaderMap::with_capacity(req.headers.len());
    for h in req.headers.iter() {
        let name =
            HeaderName::from_bytes(h.name.as_bytes()).map_err(|_| bad("malformed header name"))?;
        let value = HeaderValue::from_bytes(h.value).map_err(|_| bad("malformed header value"))?;
        map.append(name, value);
    }
    let hosts = map.get_all(HOST).iter().count();
    if hosts > 1 {
        return Err(bad("more than one Host header"));
    }
    if hosts == 0 && version == Version::HTTP_11 {
        return Err(bad("missing Host header (required in HTTP/1.1)"));
    }
    if let Some(host) = map.get(HOST) {
        if host.as_bytes().contains(&b',') {
            return Err(bad("more than one host in the Host header"));
        }
    }
    let framing = ref_framing(&map, version, limits)?;
    let mut expect_continue = false;
    let mut expects = map.get_all(EXPECT).iter();
    if let (Some(_), Some(_)) = (expects.next(), expects.next()) {
        return Err(bad("more than one Expect header"));
    }
    if let Some(v) = map.get(EXPECT) {
        if v.as_bytes().eq_ignore_ascii_case(b"100-continue") {
            expect_continue = version == Version::HTTP_11;
        } else {
            return Err(HttpError::new(
                417,
                "unsupported Expect (only 100-continue is)",
            ));
        }
    }
    let keep_alive = super::keep_alive(&map, version);
    Ok(Head {
        method,
        uri,
        version,
        headers: map,
        framing,
        expect_continue,
        keep_alive,
        forwarding: false,
        depth: false,
    })
}

/// The request target as a `Uri`. The scanner let through only visible ASCII; of that, `http::Uri`
/// cannot hold `"`, `<`, `>` (and a backtick in the path), which llhttp and h11 accept: those reach
/// the handler percent-encoded (`%22`, `%3C`, `%3E`, `%60`), which means the same to a URI reader.
fn ref_target(raw: &str) -> Result<Uri, HttpError> {
    if let Ok(uri) = raw.parse() {
        return Ok(uri);
    }
    let mut encoded = String::with_capacity(raw.len() + 8);
    for c in raw.chars() {
        match c {
            '"' => encoded.push_str("%22"),
            '<' => encoded.push_str("%3C"),
            '>' => encoded.push_str("%3E"),
            '`' => encoded.push_str("%60"),
            c => encoded.push(c),
        }
    }
    encoded.parse().map_err(|_| bad("malformed request target"))
}

fn ref_framing(map: &HeaderMap, version: Version, limits: &Limits) -> Result<Framing, HttpError> {
    // The framing rules themselves are not what this reference checks (they read the map, which
    // both parsers fill): the one implementation serves both.
    let has_te = map.contains_key(TRANSFER_ENCODING);
    let has_cl = map.contains_key(CONTENT_LENGTH);
    super::framing(map, has_te, has_cl, version, limits)
}
