//! The WSGI environ of one request (PEP 3333), built with as little work per request as it takes:
//! the keys are interned Python strings (made once, their hash kept, so an insert does not hash
//! them again), the fixed values too (`GET`, `HTTP/1.1`, `http`), and an ASCII value (nearly every
//! header, path and query) goes into its `str` without an intermediate Rust `String`.

use prefork_pool::http::types::http::{Method, Version};
use prefork_pool::http::{ForwardedProto, HttpRequest, PeerAddr, RequestBody, TcpEnds};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString};

use crate::input::Input;

/// What every request's environ shares, made once per app.
pub struct Fixed {
    /// What each environ starts as (its copy): the Python side's `wsgi.version`, `wsgi.errors`,
    /// `wsgi.multithread`, …, `SCRIPT_NAME`, and every key each request sets (`REQUEST_METHOD`,
    /// `PATH_INFO`, …, with `None`) or nearly each (`HTTP_HOST`, `REMOTE_PORT`): a request
    /// replaces their values in the copy, which neither grows nor adds an entry for them.
    base: Py<PyDict>,
    /// `SCRIPT_NAME` (from the `SCRIPT_NAME` environment variable, as gunicorn), for cutting
    /// `PATH_INFO`.
    script_name: String,
    /// `SERVER_NAME`, `SERVER_PORT` for a request without `Host` or socket addresses.
    server: (String, String),
}

impl Fixed {
    /// `base` is the Python side's (it is not changed: the environ's start is a copy of it).
    pub fn new(
        py: Python<'_>,
        base: &Bound<'_, PyDict>,
        script_name: String,
        server: (String, String),
    ) -> PyResult<Fixed> {
        let start = base.copy()?;
        start.set_item(intern!(py, "SCRIPT_NAME"), &script_name)?;
        for key in [
            intern!(py, "REQUEST_METHOD"),
            intern!(py, "PATH_INFO"),
            intern!(py, "QUERY_STRING"),
            intern!(py, "RAW_URI"),
            intern!(py, "REQUEST_URI"),
            intern!(py, "SERVER_PROTOCOL"),
            intern!(py, "HTTP_HOST"),
            intern!(py, "wsgi.url_scheme"),
            intern!(py, "SERVER_NAME"),
            intern!(py, "SERVER_PORT"),
            intern!(py, "REMOTE_ADDR"),
            intern!(py, "REMOTE_PORT"),
            intern!(py, "wsgi.input"),
        ] {
            start.set_item(key, py.None())?;
        }
        Ok(Fixed {
            base: start.unbind(),
            script_name,
            server,
        })
    }
}

/// Builds the environ of `req` (which it takes apart: its body becomes `wsgi.input`).
pub fn build<'py>(
    py: Python<'py>,
    fixed: &Fixed,
    mut req: HttpRequest,
) -> PyResult<Bound<'py, PyDict>> {
    let env = fixed.base.bind(py).copy()?;
    env.set_item(intern!(py, "REQUEST_METHOD"), method(py, req.method()))?;
    let path = req.uri().path();
    let decoded;
    let path: &str = if path.is_ascii() && !path.contains('%') {
        // No escape: the path is its own decoding.
        path
    } else {
        decoded = latin1(&percent_decode(path.as_bytes()));
        &decoded
    };
    let path_info = match path.strip_prefix(fixed.script_name.as_str()) {
        Some(rest) if !fixed.script_name.is_empty() => rest,
        _ => path,
    };
    env.set_item(intern!(py, "PATH_INFO"), PyString::new(py, path_info))?;
    let query = match req.uri().query() {
        Some(q) => PyString::new(py, q),
        None => intern!(py, "").clone(),
    };
    env.set_item(intern!(py, "QUERY_STRING"), query)?;
    let raw = match req.uri().path_and_query() {
        Some(p) => PyString::new(py, p.as_str()),
        None => PyString::new(py, &req.uri().to_string()),
    };
    env.set_item(intern!(py, "RAW_URI"), &raw)?;
    env.set_item(intern!(py, "REQUEST_URI"), raw)?;
    let protocol = match req.version() {
        Version::HTTP_10 => intern!(py, "HTTP/1.0"),
        _ => intern!(py, "HTTP/1.1"),
    };
    env.set_item(intern!(py, "SERVER_PROTOCOL"), protocol)?;
    let mut host: Option<String> = None;
    let mut joined = Vec::new();
    for name in req.headers().keys() {
        let n = name.as_str();
        // A name with `_` would pass for one with `-` (HTTP_X_USER): dropped, as gunicorn does by
        // default.
        if n.contains('_') {
            continue;
        }
        let mut values = req.headers().get_all(name).iter();
        let first = values.next().map_or(&[][..], |v| v.as_bytes());
        let bytes = match values.next() {
            None => first,
            Some(second) => {
                // Repeated fields are joined with `,` (RFC 9110), cookies with `; ` (RFC 6265).
                let sep: &[u8] = if n == "cookie" { b"; " } else { b"," };
                joined.clear();
                joined.extend_from_slice(first);
                for v in std::iter::once(second).chain(values) {
                    joined.extend_from_slice(sep);
                    joined.extend_from_slice(v.as_bytes());
                }
                &joined
            }
        };
        let value = latin1_str(py, bytes);
        if n == "host" {
            host = Some(match std::str::from_utf8(bytes) {
                Ok(s) if bytes.is_ascii() => s.to_string(),
                _ => latin1(bytes),
            });
        }
        match known_key(py, n) {
            Some(key) => env.set_item(key, value)?,
            None => {
                let mut key = String::with_capacity(5 + n.len());
                key.push_str("HTTP_");
                key.extend(n.bytes().map(|b| match b {
                    b'-' => '_',
                    b => char::from(b.to_ascii_uppercase()),
                }));
                env.set_item(key, value)?;
            }
        }
    }
    let https = req
        .extensions()
        .get::<ForwardedProto>()
        .is_some_and(|p| &*p.0 == "https");
    let (scheme, default_port) = if https {
        (intern!(py, "https"), "443")
    } else {
        (intern!(py, "http"), "80")
    };
    env.set_item(intern!(py, "wsgi.url_scheme"), scheme)?;
    let ends = req.extensions().get::<TcpEnds>().copied();
    let (name, port) = match (&host, ends) {
        (Some(h), _) => split_host(h, default_port),
        // No Host (HTTP/1.0): the address the client connected to.
        (None, Some(e)) => (
            e.local.ip().to_canonical().to_string(),
            e.local.port().to_string(),
        ),
        (None, None) => fixed.server.clone(),
    };
    if host.is_none() {
        // The start's placeholder goes.
        env.del_item(intern!(py, "HTTP_HOST"))?;
    }
    env.set_item(intern!(py, "SERVER_NAME"), name)?;
    env.set_item(intern!(py, "SERVER_PORT"), port)?;
    let remote =
        req.extensions()
            .get::<PeerAddr>()
            .map_or("", |p| if &*p.0 == "unix" { "" } else { &p.0 });
    env.set_item(intern!(py, "REMOTE_ADDR"), remote)?;
    match ends {
        // The socket's port; when a trusted proxy named the client, REMOTE_ADDR is the client it
        // named and the port is the proxy's (gunicorn does the same).
        Some(e) => env.set_item(intern!(py, "REMOTE_PORT"), e.peer.port().to_string())?,
        // A unix socket: no port (the start's placeholder goes).
        None => env.del_item(intern!(py, "REMOTE_PORT"))?,
    }
    let input = match req.extensions_mut().remove::<RequestBody>() {
        Some(spooled) => Input::file(spooled),
        None => Input::memory(std::mem::take(req.body_mut())),
    };
    env.set_item(intern!(py, "wsgi.input"), Py::new(py, input)?)?;
    Ok(env)
}

/// The method's `str`: interned for the common ones.
fn method<'py>(py: Python<'py>, m: &Method) -> Bound<'py, PyString> {
    match *m {
        Method::GET => intern!(py, "GET").clone(),
        Method::POST => intern!(py, "POST").clone(),
        Method::HEAD => intern!(py, "HEAD").clone(),
        Method::PUT => intern!(py, "PUT").clone(),
        Method::DELETE => intern!(py, "DELETE").clone(),
        Method::PATCH => intern!(py, "PATCH").clone(),
        Method::OPTIONS => intern!(py, "OPTIONS").clone(),
        _ => PyString::new(py, m.as_str()),
    }
}

/// The environ key of a common request header (interned); `None` for the others, whose key is
/// made per request.
fn known_key<'py>(py: Python<'py>, name: &str) -> Option<&'py Bound<'py, PyString>> {
    macro_rules! keys {
        ($($name:literal => $key:literal,)*) => {
            match name {
                $($name => Some(intern!(py, $key)),)*
                _ => None,
            }
        };
    }
    keys! {
        "content-type" => "CONTENT_TYPE",
        "content-length" => "CONTENT_LENGTH",
        "host" => "HTTP_HOST",
        "user-agent" => "HTTP_USER_AGENT",
        "accept" => "HTTP_ACCEPT",
        "accept-encoding" => "HTTP_ACCEPT_ENCODING",
        "accept-language" => "HTTP_ACCEPT_LANGUAGE",
        "connection" => "HTTP_CONNECTION",
        "cookie" => "HTTP_COOKIE",
        "authorization" => "HTTP_AUTHORIZATION",
        "referer" => "HTTP_REFERER",
        "origin" => "HTTP_ORIGIN",
        "cache-control" => "HTTP_CACHE_CONTROL",
        "pragma" => "HTTP_PRAGMA",
        "if-none-match" => "HTTP_IF_NONE_MATCH",
        "if-modified-since" => "HTTP_IF_MODIFIED_SINCE",
        "range" => "HTTP_RANGE",
        "x-forwarded-for" => "HTTP_X_FORWARDED_FOR",
        "x-forwarded-proto" => "HTTP_X_FORWARDED_PROTO",
        "x-forwarded-host" => "HTTP_X_FORWARDED_HOST",
        "x-real-ip" => "HTTP_X_REAL_IP",
        "x-requested-with" => "HTTP_X_REQUESTED_WITH",
        "upgrade-insecure-requests" => "HTTP_UPGRADE_INSECURE_REQUESTS",
        "sec-fetch-site" => "HTTP_SEC_FETCH_SITE",
        "sec-fetch-mode" => "HTTP_SEC_FETCH_MODE",
        "sec-fetch-dest" => "HTTP_SEC_FETCH_DEST",
        "sec-fetch-user" => "HTTP_SEC_FETCH_USER",
    }
}

/// Bytes as a latin-1 `str` (PEP 3333's "native strings": each byte one code point); ASCII, the
/// common case, without an intermediate `String`.
fn latin1_str<'py>(py: Python<'py>, b: &[u8]) -> Bound<'py, PyString> {
    match std::str::from_utf8(b) {
        Ok(s) if b.is_ascii() => PyString::new(py, s),
        _ => PyString::new(py, &latin1(b)),
    }
}

/// Bytes as a latin-1 string (each byte one code point).
fn latin1(b: &[u8]) -> String {
    b.iter().map(|&c| char::from(c)).collect()
}

fn percent_decode(s: &[u8]) -> Vec<u8> {
    fn hex(c: u8) -> Option<u8> {
        (c as char).to_digit(16).map(|d| d as u8)
    }
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        if s[i] == b'%' && i + 2 < s.len() {
            if let (Some(h), Some(l)) = (hex(s[i + 1]), hex(s[i + 2])) {
                out.push(h * 16 + l);
                i += 3;
                continue;
            }
        }
        out.push(s[i]);
        i += 1;
    }
    out
}

/// `host[:port]` (or `[v6]:port`) of a `Host` header; `default` is the scheme's port.
fn split_host(h: &str, default: &str) -> (String, String) {
    if let Some(rest) = h.strip_prefix('[') {
        if let Some((addr, after)) = rest.split_once(']') {
            let port = after.strip_prefix(':').unwrap_or(default);
            return (addr.to_string(), port.to_string());
        }
    }
    match h.rsplit_once(':') {
        Some((name, port)) if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => {
            (name.to_string(), port.to_string())
        }
        _ => (h.to_string(), default.to_string()),
    }
}
