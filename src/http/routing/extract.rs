//! Extractors, as axum has them, for sync handlers: each argument of a [`Router`](crate::http::Router)
//! handler is taken from the request ([`FromRequestParts`], or [`FromRequest`] for the last one,
//! which may consume the body). A failed extraction answers with its [`Rejection`] (400, 415,
//! 422, 500) and a body naming the extractor and the reason; the handler does not run.
//!
//! | Extractor | Gives | Rejected with |
//! |---|---|---|
//! | [`Path<T>`] (feature `serde`) | the route's `{params}`, percent-decoded, as `T` (one value, a tuple, or a struct) | 400 |
//! | [`Query<T>`] (feature `serde`) | the query string, percent-decoded (`+` is a space), as `T` | 400 |
//! | [`Json<T>`](crate::http::Json) (feature `json`) | the body, as JSON | 415 (not `application/json`), 400 (syntax), 422 (data) |
//! | [`State<S>`] | a clone of the router's state ([`Router::with_state`](crate::http::Router::with_state)) | |
//! | [`ClientAddr`] | the client's address, typed | |
//! | [`Loopback`] | the server's [`Loopback`] | 500 when absent |
//! | [`Extension<T>`] | a clone of the `T` in the request's extensions | 500 when absent |
//! | `HeaderMap`, `Method`, `Uri`, `Version` | those of the request | |
//! | `Vec<u8>`, [`Bytes`](bytes::Bytes), `String` (last argument) | the body | 400 (not UTF-8) |
//! | [`HttpRequest`] (last argument) | the whole request | |
//! | `Option<E>`, `Result<E, Rejection>` | `E`, or what it was rejected with | |

use std::any::Any;
use std::borrow::Cow;
use std::cell::{RefCell, RefMut};
use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

use http::request::Parts;
use http::{HeaderMap, Method, StatusCode, Uri, Version};

use crate::http::handler::IntoResponse;
use crate::http::self_call::loopback::Loopback;
use crate::http::types::{HttpRequest, HttpResponse, PeerAddr};
use crate::Context;

/// What an extractor sees beside the request: the route's parameters, the router's state and the
/// request's [`Context`].
pub struct Cx<'a, S> {
    /// The route's parameters (`/notes/{id}`: `("id", "42")`), percent-decoded.
    pub params: &'a [(&'a str, String)],
    /// The router's state.
    pub state: &'a S,
    /// The request's context (its deadline, its job).
    pub ctx: &'a Context,
    /// The worker's own state, when the router is served with
    /// [`serve_router_with_state`](crate::http::ServerBuilder::serve_router_with_state).
    pub(crate) worker: Option<&'a (dyn Lend + 'a)>,
}

/// The state a worker thread lends to the handler it runs (see
/// [`serve_router_with_state`](crate::http::ServerBuilder::serve_router_with_state)).
pub(crate) struct WorkerSlot<'w>(pub RefCell<&'w mut dyn Any>);

/// Lends the worker's state (a trait object, so that `Cx` needs no second lifetime).
pub(crate) trait Lend {
    /// The state, unless it is lent already.
    fn lend(&self) -> Option<RefMut<'_, dyn Any>>;
}

impl Lend for WorkerSlot<'_> {
    fn lend(&self) -> Option<RefMut<'_, dyn Any>> {
        let r = self.0.try_borrow_mut().ok()?;
        Some(RefMut::map(r, |w| &mut **w))
    }
}

/// Why an extractor refused a request: answered with its status and a `text/plain` body
/// `<extractor>: <reason>`.
///
/// ```
/// use prefork_pool::http::{IntoResponse, Rejection};
/// use prefork_pool::http::types::http::StatusCode;
///
/// let r = Rejection::new(StatusCode::BAD_REQUEST, "Token", "no token header").into_response();
/// assert_eq!(r.status(), 400);
/// assert_eq!(r.body(), b"Token: no token header\n");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    status: StatusCode,
    extractor: &'static str,
    reason: Cow<'static, str>,
}

impl Rejection {
    /// A rejection by `extractor` (its name, as the body shows it) with `status`.
    pub fn new(
        status: StatusCode,
        extractor: &'static str,
        reason: impl Into<Cow<'static, str>>,
    ) -> Self {
        Rejection {
            status,
            extractor,
            reason: reason.into(),
        }
    }
    /// The status it is answered with.
    pub fn status(&self) -> StatusCode {
        self.status
    }
    /// The extractor that refused.
    pub fn extractor(&self) -> &'static str {
        self.extractor
    }
    /// Why.
    pub fn reason(&self) -> &str {
        &self.reason
    }
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.extractor, self.reason)
    }
}

impl std::error::Error for Rejection {}

impl IntoResponse for Rejection {
    fn into_response(self) -> HttpResponse {
        (self.status, format!("{self}\n")).into_response()
    }
}

/// An extractor that reads the request's head (not its body): any argument of a handler.
pub trait FromRequestParts<S>: Sized {
    /// Take the value from the head, or refuse.
    fn from_request_parts(parts: &mut Parts, cx: &Cx<'_, S>) -> Result<Self, Rejection>;
}

/// An extractor that may consume the body: the last argument of a handler. Every
/// [`FromRequestParts`] is one too (`M` tells the two kinds apart).
pub trait FromRequest<S, M = private::ViaRequest>: Sized {
    /// Take the value from the request, or refuse.
    fn from_request(req: HttpRequest, cx: &Cx<'_, S>) -> Result<Self, Rejection>;
}

/// The markers of [`FromRequest`]'s two kinds.
pub mod private {
    /// Consumes the request.
    #[derive(Debug)]
    pub enum ViaRequest {}
    /// Reads the head only.
    #[derive(Debug)]
    pub enum ViaParts {}
}

impl<S, T: FromRequestParts<S>> FromRequest<S, private::ViaParts> for T {
    fn from_request(req: HttpRequest, cx: &Cx<'_, S>) -> Result<Self, Rejection> {
        let (mut parts, _) = req.into_parts();
        T::from_request_parts(&mut parts, cx)
    }
}

/// The router's state (see [`Router::with_state`](crate::http::Router::with_state)), cloned.
#[derive(Debug, Clone, Copy, Default)]
pub struct State<S>(pub S);

impl<S: Clone> FromRequestParts<S> for State<S> {
    fn from_request_parts(_: &mut Parts, cx: &Cx<'_, S>) -> Result<Self, Rejection> {
        Ok(State(cx.state.clone()))
    }
}

/// A clone of the `T` in the request's extensions (500 when there is none).
#[derive(Debug, Clone, Copy, Default)]
pub struct Extension<T>(pub T);

impl<S, T: Clone + Send + Sync + 'static> FromRequestParts<S> for Extension<T> {
    fn from_request_parts(parts: &mut Parts, _: &Cx<'_, S>) -> Result<Self, Rejection> {
        parts
            .extensions
            .get::<T>()
            .cloned()
            .map(Extension)
            .ok_or_else(|| {
                Rejection::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "Extension",
                    format!("no {} in the request", std::any::type_name::<T>()),
                )
            })
    }
}

impl<S> FromRequestParts<S> for Loopback {
    fn from_request_parts(parts: &mut Parts, _: &Cx<'_, S>) -> Result<Self, Rejection> {
        parts.extensions.get::<Loopback>().cloned().ok_or_else(|| {
            Rejection::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Loopback",
                "the request was not served by a Server",
            )
        })
    }
}

/// The client, typed: what the [`PeerAddr`] says (behind a trusted proxy, the client it names).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientAddr {
    /// A TCP client.
    Ip(IpAddr),
    /// A client on a Unix socket.
    Unix,
    /// A request sent through the [`Loopback`].
    Loopback,
    /// Anything else (a request built by hand, without a `PeerAddr`: empty).
    Other(Arc<str>),
}

impl ClientAddr {
    /// The address a [`PeerAddr`] holds.
    pub fn of(peer: &PeerAddr) -> Self {
        match &*peer.0 {
            "unix" => ClientAddr::Unix,
            "loopback" => ClientAddr::Loopback,
            s => s
                .parse()
                .map_or_else(|_| ClientAddr::Other(peer.0.clone()), ClientAddr::Ip),
        }
    }
}

impl<S> FromRequestParts<S> for ClientAddr {
    fn from_request_parts(parts: &mut Parts, _: &Cx<'_, S>) -> Result<Self, Rejection> {
        Ok(match parts.extensions.get::<PeerAddr>() {
            Some(p) => ClientAddr::of(p),
            None => ClientAddr::Other("".into()),
        })
    }
}

macro_rules! from_head {
    ($($t:ty => |$p:ident| $e:expr),* $(,)?) => {$(
        impl<S> FromRequestParts<S> for $t {
            fn from_request_parts($p: &mut Parts, _: &Cx<'_, S>) -> Result<Self, Rejection> {
                Ok($e)
            }
        }
    )*};
}

from_head! {
    HeaderMap => |p| p.headers.clone(),
    Method => |p| p.method.clone(),
    Uri => |p| p.uri.clone(),
    Version => |p| p.version,
}

impl<S, T: FromRequestParts<S>> FromRequestParts<S> for Option<T> {
    fn from_request_parts(parts: &mut Parts, cx: &Cx<'_, S>) -> Result<Self, Rejection> {
        Ok(T::from_request_parts(parts, cx).ok())
    }
}

impl<S, T: FromRequestParts<S>> FromRequestParts<S> for Result<T, Rejection> {
    fn from_request_parts(parts: &mut Parts, cx: &Cx<'_, S>) -> Result<Self, Rejection> {
        Ok(T::from_request_parts(parts, cx))
    }
}

impl<S> FromRequest<S> for HttpRequest {
    fn from_request(req: HttpRequest, _: &Cx<'_, S>) -> Result<Self, Rejection> {
        Ok(req)
    }
}

impl<S> FromRequest<S> for Vec<u8> {
    fn from_request(req: HttpRequest, _: &Cx<'_, S>) -> Result<Self, Rejection> {
        Ok(req.into_body())
    }
}

impl<S> FromRequest<S> for bytes::Bytes {
    fn from_request(req: HttpRequest, _: &Cx<'_, S>) -> Result<Self, Rejection> {
        Ok(req.into_body().into())
    }
}

impl<S> FromRequest<S> for String {
    fn from_request(req: HttpRequest, _: &Cx<'_, S>) -> Result<Self, Rejection> {
        String::from_utf8(req.into_body()).map_err(|e| {
            Rejection::new(
                StatusCode::BAD_REQUEST,
                "String",
                format!("the body is not UTF-8: {}", e.utf8_error()),
            )
        })
    }
}

#[cfg(feature = "json")]
/// Whether the request says its body is JSON: `application/json`, or `application/<x>+json`.
pub(crate) fn is_json(headers: &HeaderMap) -> bool {
    let Some(ct) = headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let mime = ct.split(';').next().unwrap_or("").trim();
    let Some((ty, sub)) = mime.split_once('/') else {
        return false;
    };
    ty.eq_ignore_ascii_case("application")
        && (sub.eq_ignore_ascii_case("json")
            || sub.len() > 5 && sub[sub.len() - 5..].eq_ignore_ascii_case("+json"))
}

#[cfg(feature = "json")]
/// The header value, for the [`Rejection`] that names it.
pub(crate) fn shown(v: Option<&http::HeaderValue>) -> String {
    v.map_or_else(
        || "none".into(),
        |v| format!("{:?}", String::from_utf8_lossy(v.as_bytes())),
    )
}

/// `%XX` decoded (and `+` as a space when `plus` is set); `None` when the result is not UTF-8.
/// A `%` not followed by two hex digits stays as it is.
pub(crate) fn percent_decode(s: &str, plus: bool) -> Option<Cow<'_, str>> {
    if !s.bytes().any(|b| b == b'%' || plus && b == b'+') {
        return Some(Cow::Borrowed(s));
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        match b[i] {
            b'%' => {
                match (
                    b.get(i + 1).and_then(|&c| hex(c)),
                    b.get(i + 2).and_then(|&c| hex(c)),
                ) {
                    (Some(h), Some(l)) => {
                        out.push((h * 16 + l) as u8);
                        i += 3;
                        continue;
                    }
                    _ => out.push(b'%'),
                }
            }
            b'+' if plus => out.push(b' '),
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8(out).ok().map(Cow::Owned)
}

#[cfg(feature = "serde")]
/// A query string's pairs, decoded.
pub(crate) type Pairs<'a> = Vec<(Cow<'a, str>, Cow<'a, str>)>;

#[cfg(feature = "serde")]
/// The query string's pairs, percent-decoded (`+` is a space); `Err` names a pair that is not
/// UTF-8 once decoded.
pub(crate) fn query_pairs(query: &str) -> Result<Pairs<'_>, String> {
    query
        .split('&')
        .filter(|kv| !kv.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            match (percent_decode(k, true), percent_decode(v, true)) {
                (Some(k), Some(v)) => Ok((k, v)),
                _ => Err(format!("{kv:?} is not UTF-8 once percent-decoded")),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("a%2Db", false).unwrap(), "a-b");
        assert_eq!(percent_decode("a+b%20c", true).unwrap(), "a b c");
        assert_eq!(percent_decode("a+b", false).unwrap(), "a+b");
        assert_eq!(percent_decode("100%", false).unwrap(), "100%");
        assert_eq!(percent_decode("%4", false).unwrap(), "%4");
        assert_eq!(percent_decode("%zz%41", false).unwrap(), "%zzA");
        assert_eq!(percent_decode("%C3%A9", false).unwrap(), "é");
        assert!(percent_decode("%FF", false).is_none());
    }

    #[cfg(feature = "serde")]
    #[test]
    fn query_pairs_are_decoded() {
        let pairs = query_pairs("session_id=a%2Db&x&&y=1+2").unwrap();
        let pairs: Vec<(&str, &str)> = pairs.iter().map(|(k, v)| (&**k, &**v)).collect();
        assert_eq!(pairs, [("session_id", "a-b"), ("x", ""), ("y", "1 2")]);
    }

    #[cfg(feature = "json")]
    #[test]
    fn json_content_types() {
        use http::header::CONTENT_TYPE;
        use http::HeaderValue;
        let mut h = HeaderMap::new();
        assert!(!is_json(&h));
        for (ct, ok) in [
            ("application/json", true),
            ("Application/JSON; charset=utf-8", true),
            ("application/problem+json", true),
            ("text/json", false),
            ("application/jsonx", false),
            ("application/+json", false),
        ] {
            h.insert(CONTENT_TYPE, HeaderValue::from_static(ct));
            assert_eq!(is_json(&h), ok, "{ct}");
        }
    }
}
