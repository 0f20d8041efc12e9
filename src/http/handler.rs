//! What a handler is and what it may return: the [`Handler`] trait (with the [`handler`] helper
//! for a closure stored before it is served), [`IntoResponse`] (so a handler can return a
//! `Result` and use `?`), [`RawJson`], and the parts an answer is made of ([`IntoResponseParts`]:
//! headers).

use http::header::{HeaderName, CONTENT_TYPE};
use http::{HeaderMap, HeaderValue, StatusCode};

use super::types::{HttpRequest, HttpResponse};
use super::wire::response::{error_response, short_reason};
use crate::{Context, Error};

/// A request handler: any `Fn(HttpRequest, &Context) -> R` (thread-safe, `'static`) whose `R` is
/// [`IntoResponse`]. Implemented for every such closure and function; name it to store or return
/// a handler (`fn app() -> impl Handler<HttpResponse>`).
///
/// A closure written in the call to [`serve`](super::ServerBuilder::serve) needs no annotation. A
/// closure stored in a variable first does: Rust then infers one lifetime for its `&Context`
/// instead of any (the error reads "implementation of `Fn` is not general enough"). Wrap it in
/// [`handler`] and it compiles as written.
///
/// ```
/// use prefork_pool::http::types::http;
/// use prefork_pool::http::{Handler, HttpResponse, IntoResponse, Server};
/// use std::sync::Arc;
///
/// /// The application: its state, and a handler that uses it.
/// fn app(greeting: Arc<str>) -> impl Handler<HttpResponse> {
///     move |req, _ctx| format!("{greeting} {}\n", req.uri().path()).into_response()
/// }
///
/// let server = Server::builder().bind("127.0.0.1:0").serve(app("hi".into())).unwrap();
/// let r = server.loopback().send(http::Request::get("/you").body(Vec::new()).unwrap()).unwrap();
/// assert_eq!(r.body(), b"hi /you\n");
/// server.shutdown(std::time::Duration::from_secs(5));
/// ```
pub trait Handler<R: IntoResponse>: Fn(HttpRequest, &Context) -> R + Send + Sync + 'static {}

impl<F, R> Handler<R> for F
where
    F: Fn(HttpRequest, &Context) -> R + Send + Sync + 'static,
    R: IntoResponse,
{
}

/// Gives a closure stored before it is served the signature of a [`Handler`], so that it needs no
/// type annotation. It returns the closure unchanged.
///
/// ```
/// use prefork_pool::http::types::http;
/// use prefork_pool::http::{handler, Server};
///
/// let app = handler(|req, _ctx| format!("hello from {}\n", req.uri().path()));
/// let server = Server::builder().bind("127.0.0.1:0").serve(app).unwrap();
/// let r = server.loopback().send(http::Request::get("/x").body(Vec::new()).unwrap()).unwrap();
/// assert_eq!(r.body(), b"hello from /x\n");
/// server.shutdown(std::time::Duration::from_secs(5));
/// ```
///
/// Without it, the same closure does not compile:
///
/// ```compile_fail
/// use prefork_pool::http::Server;
///
/// let app = |req: prefork_pool::http::HttpRequest, _ctx| format!("{}", req.uri().path());
/// let server = Server::builder().bind("127.0.0.1:0").serve(app).unwrap();
/// ```
pub fn handler<F, R>(f: F) -> F
where
    F: Fn(HttpRequest, &Context) -> R + Send + Sync + 'static,
    R: IntoResponse,
{
    f
}

/// What a handler may return: anything that becomes an [`HttpResponse`].
///
/// | Type | Answer |
/// |---|---|
/// | [`HttpResponse`] (`http::Response<Vec<u8>>`) | as it is |
/// | `String`, `&'static str` | 200, `text/plain; charset=utf-8` |
/// | `Vec<u8>` | 200, `application/octet-stream` |
/// | [`RawJson`] (bytes already encoded), [`Json<T>`](super::Json) (feature `json`: `T: Serialize`) | 200, `application/json` |
/// | `()`, [`StatusCode`] | 200, or that status; empty body |
/// | `(StatusCode, R)` | that status, `R`'s headers and body |
/// | `(H, R)`, `(StatusCode, H, R)`, `(StatusCode, H1, H2, R)` with `H` [`IntoResponseParts`] (a `HeaderMap`, `[(name, value); N]`) | `R` with those headers added (replacing any of the same name) |
/// | [`Rejection`](super::Rejection) | its status, a body naming the extractor and why |
/// | [`prefork_pool::Error`](crate::Error) | its [`http_status`](crate::Error::http_status) (503, 504, 500, 508) and the short body the server gives for it, rendered by the [`error_response`](super::ServerBuilder::error_response) hook when one is set |
/// | `Result<R, E>` with `R` and `E` both `IntoResponse` | `R`'s or `E`'s answer |
///
/// So a handler can return `Result<_, E>` and use `?` for any `E` that is `IntoResponse`, e.g. an
/// error type of the application, or `prefork_pool::Error` from a [`Loopback`](super::Loopback)
/// call:
///
/// ```
/// use prefork_pool::http::{HttpRequest, IntoResponse, Loopback, RawJson, Server};
/// use prefork_pool::http::types::http::{self, Response, StatusCode};
///
/// enum ApiError { NotFound, Inner(prefork_pool::Error) }
///
/// impl IntoResponse for ApiError {
///     fn into_response(self) -> Response<Vec<u8>> {
///         match self {
///             ApiError::NotFound => (StatusCode::NOT_FOUND, RawJson(r#"{"error":"not found"}"#)).into_response(),
///             ApiError::Inner(e) => e.into_response(),
///         }
///     }
/// }
///
/// fn app(req: HttpRequest, _ctx: &prefork_pool::Context) -> Result<RawJson<Vec<u8>>, ApiError> {
///     match req.uri().path() {
///         "/inner" => Ok(RawJson(br#"{"inner":true}"#.to_vec())),
///         "/outer" => {
///             let lb = req.extensions().get::<Loopback>().unwrap();
///             let get = http::Request::get("/inner").body(Vec::new()).unwrap();
///             let r = lb.send(get).map_err(ApiError::Inner)?; // `?` on the pool's Error
///             Ok(RawJson(r.into_body()))
///         }
///         _ => Err(ApiError::NotFound),
///     }
/// }
///
/// let server = Server::builder().bind("127.0.0.1:0").serve(app).unwrap();
/// let lb = server.loopback();
/// let r = lb.send(http::Request::get("/outer").body(Vec::new()).unwrap()).unwrap();
/// assert_eq!((r.status(), r.headers()["content-type"].to_str().unwrap()), (StatusCode::OK, "application/json"));
/// assert_eq!(r.body(), br#"{"inner":true}"#);
/// let r = lb.send(http::Request::get("/nope").body(Vec::new()).unwrap()).unwrap();
/// assert_eq!(r.status(), 404);
/// server.shutdown(std::time::Duration::from_secs(5));
/// ```
pub trait IntoResponse {
    /// The answer.
    fn into_response(self) -> HttpResponse;
}

/// A JSON body already encoded: answered as it is, with `Content-Type: application/json` (a
/// `Vec<u8>`, a `String` or a `&'static str`). To answer with a value that serde encodes, use
/// [`Json`](super::Json) (feature `json`).
///
/// ```
/// use prefork_pool::http::{IntoResponse, RawJson};
/// let r = RawJson(r#"{"ok":true}"#).into_response();
/// assert_eq!(r.headers()["content-type"], "application/json");
/// assert_eq!(r.body(), br#"{"ok":true}"#);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawJson<B = Vec<u8>>(pub B);

/// Marks an answer made from a [`crate::Error`], so that the server's `error_response` hook can
/// render it: the status and the short reason.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ServerAnswer {
    pub status: u16,
    pub reason: &'static str,
}

fn with_type(body: Vec<u8>, content_type: &'static str) -> HttpResponse {
    let mut r = HttpResponse::new(body);
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

const TEXT: &str = "text/plain; charset=utf-8";

impl IntoResponse for HttpResponse {
    fn into_response(self) -> HttpResponse {
        self
    }
}

impl IntoResponse for String {
    fn into_response(self) -> HttpResponse {
        with_type(self.into_bytes(), TEXT)
    }
}

impl IntoResponse for &'static str {
    fn into_response(self) -> HttpResponse {
        with_type(self.as_bytes().to_vec(), TEXT)
    }
}

impl IntoResponse for Vec<u8> {
    fn into_response(self) -> HttpResponse {
        with_type(self, "application/octet-stream")
    }
}

impl<B: Into<Vec<u8>>> IntoResponse for RawJson<B> {
    fn into_response(self) -> HttpResponse {
        with_type(self.0.into(), "application/json")
    }
}

impl IntoResponse for StatusCode {
    fn into_response(self) -> HttpResponse {
        let mut r = HttpResponse::new(Vec::new());
        *r.status_mut() = self;
        r
    }
}

impl IntoResponse for () {
    fn into_response(self) -> HttpResponse {
        HttpResponse::new(Vec::new())
    }
}

impl<R: IntoResponse> IntoResponse for (StatusCode, R) {
    fn into_response(self) -> HttpResponse {
        let mut r = self.1.into_response();
        *r.status_mut() = self.0;
        r
    }
}

/// What adds to an answer: its headers. A `HeaderMap`, or an array of `(name, value)` pairs whose
/// names and values convert (`[(CONTENT_TYPE, "text/csv")]`, `[("x-id", id)]`); a pair that does
/// not convert makes the answer a 500 that says which.
///
/// ```
/// use prefork_pool::http::IntoResponse;
/// use prefork_pool::http::types::http::{header, StatusCode};
///
/// let r = (StatusCode::CREATED, [(header::LOCATION, "/notes/7")], "made\n").into_response();
/// assert_eq!((r.status().as_u16(), r.headers()["location"].to_str().unwrap()), (201, "/notes/7"));
/// let r = ([("content-type", "text/csv"), ("x-rows", "2")], "a,b\n1,2\n").into_response();
/// assert_eq!((r.headers()["content-type"].to_str().unwrap(), r.headers()["x-rows"].to_str().unwrap()), ("text/csv", "2"));
/// ```
pub trait IntoResponseParts {
    /// Add to `r` (replacing headers of the same names); `Err` says why it cannot.
    fn apply(self, r: &mut HttpResponse) -> Result<(), String>;
}

impl IntoResponseParts for HeaderMap {
    fn apply(self, r: &mut HttpResponse) -> Result<(), String> {
        let mut last = None;
        for (name, value) in self {
            // `None`: another value of the previous name (appended, after it replaced the old).
            let name = name
                .or_else(|| last.clone())
                .expect("a first value has its name");
            if last.as_ref() == Some(&name) {
                r.headers_mut().append(&name, value);
            } else {
                r.headers_mut().insert(&name, value);
            }
            last = Some(name);
        }
        Ok(())
    }
}

impl<K, V, const N: usize> IntoResponseParts for [(K, V); N]
where
    K: TryInto<HeaderName>,
    K::Error: std::fmt::Display,
    V: TryInto<HeaderValue>,
    V::Error: std::fmt::Display,
{
    fn apply(self, r: &mut HttpResponse) -> Result<(), String> {
        for (k, v) in self {
            let k = k.try_into().map_err(|e| format!("a header name: {e}"))?;
            let v = v.try_into().map_err(|e| format!("the value of {k}: {e}"))?;
            r.headers_mut().insert(k, v);
        }
        Ok(())
    }
}

/// `r` with `parts` applied, or (`Err`) a 500 that says why they could not be.
fn with_parts(
    r: HttpResponse,
    parts: impl IntoResponseParts,
) -> Result<HttpResponse, Box<HttpResponse>> {
    let mut r = r;
    match parts.apply(&mut r) {
        Ok(()) => Ok(r),
        Err(e) => {
            log::error!("an answer's headers: {e}");
            let body = format!("bad answer header: {e}\n");
            Err(Box::new(
                (StatusCode::INTERNAL_SERVER_ERROR, body).into_response(),
            ))
        }
    }
}

impl<H: IntoResponseParts, R: IntoResponse> IntoResponse for (H, R) {
    fn into_response(self) -> HttpResponse {
        with_parts(self.1.into_response(), self.0).unwrap_or_else(|bad| *bad)
    }
}

impl<H: IntoResponseParts, R: IntoResponse> IntoResponse for (StatusCode, H, R) {
    fn into_response(self) -> HttpResponse {
        match with_parts(self.2.into_response(), self.1) {
            Ok(mut r) => {
                *r.status_mut() = self.0;
                r
            }
            Err(bad) => *bad,
        }
    }
}

/// Both, in order.
impl<H1: IntoResponseParts, H2: IntoResponseParts> IntoResponseParts for (H1, H2) {
    fn apply(self, r: &mut HttpResponse) -> Result<(), String> {
        self.0.apply(r)?;
        self.1.apply(r)
    }
}

impl<H1, H2, R> IntoResponse for (StatusCode, H1, H2, R)
where
    H1: IntoResponseParts,
    H2: IntoResponseParts,
    R: IntoResponse,
{
    fn into_response(self) -> HttpResponse {
        (self.0, (self.1, self.2), self.3).into_response()
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> HttpResponse {
        let status = self.http_status();
        let reason = short_reason(&self);
        let mut r = error_response(status, reason);
        r.extensions_mut().insert(ServerAnswer { status, reason });
        r
    }
}

impl<R: IntoResponse, E: IntoResponse> IntoResponse for Result<R, E> {
    fn into_response(self) -> HttpResponse {
        match self {
            Ok(r) => r.into_response(),
            Err(e) => e.into_response(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(r: HttpResponse) -> (u16, String, Vec<u8>) {
        let ct = r
            .headers()
            .get(CONTENT_TYPE)
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default();
        (r.status().as_u16(), ct, r.into_body())
    }

    #[test]
    fn every_answer_type_becomes_a_response() {
        assert_eq!(
            parts("hi".into_response()),
            (200, TEXT.into(), b"hi".to_vec())
        );
        assert_eq!(
            parts(String::from("s").into_response()),
            (200, TEXT.into(), b"s".to_vec())
        );
        assert_eq!(
            parts(vec![1u8].into_response()),
            (200, "application/octet-stream".into(), vec![1])
        );
        assert_eq!(
            parts((StatusCode::CREATED, RawJson(String::from("{}"))).into_response()),
            (201, "application/json".into(), b"{}".to_vec())
        );
        assert_eq!(
            parts((StatusCode::IM_A_TEAPOT, "tea").into_response()),
            (418, TEXT.into(), b"tea".to_vec())
        );
        assert_eq!(
            parts(StatusCode::NO_CONTENT.into_response()),
            (204, String::new(), Vec::new())
        );
        let ok: Result<&'static str, StatusCode> = Ok("fine");
        assert_eq!(parts(ok.into_response()).0, 200);
        let err: Result<&'static str, StatusCode> = Err(StatusCode::BAD_GATEWAY);
        assert_eq!(parts(err.into_response()).0, 502);
        let e = Error::LoopDetected { depth: 3, max: 2 }.into_response();
        let marker = *e.extensions().get::<ServerAnswer>().unwrap();
        assert_eq!((marker.status, e.status().as_u16()), (508, 508));
        assert_eq!(
            e.body(),
            b"loop detected: the handler keeps calling itself\n"
        );
    }
}
