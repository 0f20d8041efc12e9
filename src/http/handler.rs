//! What a handler is and what it may return: the [`Handler`] trait (with the [`handler`] helper
//! for a closure stored before it is served), [`IntoResponse`] (so a handler can return a
//! `Result` and use `?`), and [`Json`].

use http::header::CONTENT_TYPE;
use http::{HeaderValue, StatusCode};

use super::response::{error_response, short_reason};
use super::types::{HttpRequest, HttpResponse};
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
/// | [`Json`] | 200, `application/json` |
/// | [`StatusCode`] | that status, empty body |
/// | `(StatusCode, B)` with `B` one of `String`, `&'static str`, `Vec<u8>`, [`Json`] | that status, `B`'s body and content type |
/// | [`prefork_pool::Error`](crate::Error) | its [`http_status`](crate::Error::http_status) (503, 504, 500, 508) and the short body the server gives for it, rendered by the [`error_response`](super::ServerBuilder::error_response) hook when one is set |
/// | `Result<R, E>` with `R` and `E` both `IntoResponse` | `R`'s or `E`'s answer |
///
/// So a handler can return `Result<_, E>` and use `?` for any `E` that is `IntoResponse`, e.g. an
/// error type of the application, or `prefork_pool::Error` from a [`Loopback`](super::Loopback)
/// call:
///
/// ```
/// use prefork_pool::http::{HttpRequest, IntoResponse, Json, Loopback, Server};
/// use prefork_pool::http::types::http::{Response, StatusCode};
///
/// enum ApiError { NotFound, Inner(prefork_pool::Error) }
///
/// impl IntoResponse for ApiError {
///     fn into_response(self) -> Response<Vec<u8>> {
///         match self {
///             ApiError::NotFound => (StatusCode::NOT_FOUND, Json(r#"{"error":"not found"}"#)).into_response(),
///             ApiError::Inner(e) => e.into_response(),
///         }
///     }
/// }
///
/// fn app(req: HttpRequest, _ctx: &prefork_pool::Context) -> Result<Json<Vec<u8>>, ApiError> {
///     match req.uri().path() {
///         "/inner" => Ok(Json(br#"{"inner":true}"#.to_vec())),
///         "/outer" => {
///             let lb = req.extensions().get::<Loopback>().unwrap();
///             let get = http::Request::get("/inner").body(Vec::new()).unwrap();
///             let r = lb.send(get).map_err(ApiError::Inner)?; // `?` on the pool's Error
///             Ok(Json(r.into_body()))
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

/// A JSON body: answered with `Content-Type: application/json`. It holds bytes already encoded
/// (e.g. `Json(serde_json::to_vec(&value)?)`, or a `String` or `&'static str`).
///
/// ```
/// use prefork_pool::http::{IntoResponse, Json};
/// let r = Json(r#"{"ok":true}"#).into_response();
/// assert_eq!(r.headers()["content-type"], "application/json");
/// assert_eq!(r.body(), br#"{"ok":true}"#);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Json<B = Vec<u8>>(pub B);

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

impl<B: Into<Vec<u8>>> IntoResponse for Json<B> {
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

impl<B> IntoResponse for (StatusCode, B)
where
    B: IntoResponse + ResponseBody,
{
    fn into_response(self) -> HttpResponse {
        let mut r = self.1.into_response();
        *r.status_mut() = self.0;
        r
    }
}

/// The bodies a `(StatusCode, body)` answer may have. Sealed.
pub trait ResponseBody: sealed::Sealed {}
impl ResponseBody for String {}
impl ResponseBody for &'static str {}
impl ResponseBody for Vec<u8> {}
impl<B: Into<Vec<u8>>> ResponseBody for Json<B> {}

mod sealed {
    pub trait Sealed {}
    impl Sealed for String {}
    impl Sealed for &'static str {}
    impl Sealed for Vec<u8> {}
    impl<B: Into<Vec<u8>>> Sealed for super::Json<B> {}
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
            parts((StatusCode::CREATED, Json(String::from("{}"))).into_response()),
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
