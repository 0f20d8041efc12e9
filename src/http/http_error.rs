//! [`HttpError`]: an error type for handlers that `?` works on with any error, as `anyhow` does.

use std::fmt;

use http::StatusCode;

use super::handler::IntoResponse;
use super::routing::extract::Rejection;
use super::types::HttpResponse;

/// An answer for a handler that fails: `Result<T, HttpError>` lets a handler use `?` on any
/// `std::error::Error` (an `io::Error`, a database error, `serde_json::Error`, ...).
///
/// - An error `?` brings in is a 500 with the body `internal error`: its message and its chain of
///   sources go to the log (target `prefork_pool::http`, level `error`), never to the client.
///   Two errors keep their own answer: a [`prefork_pool::Error`](crate::Error) (503, 504, 508
///   and the server's body, as when the handler returns it) and a [`Rejection`].
/// - [`HttpError::new`] answers a status and a message the client may read (a 404, a 409).
///
/// ```
/// use prefork_pool::http::{get, HttpError, Path, Router};
/// use prefork_pool::http::types::http::{Request, StatusCode};
///
/// fn read(Path(name): Path<String>) -> Result<String, HttpError> {
///     if name.contains('.') {
///         return Err(HttpError::new(StatusCode::BAD_REQUEST, "no dots\n"));
///     }
///     Ok(std::fs::read_to_string(format!("/nonexistent/{name}"))?) // an io::Error: 500
/// }
/// let app = Router::new().route("/files/{name}", get(read));
/// let r = app.oneshot(Request::get("/files/a.b").body(vec![]).unwrap());
/// assert_eq!((r.status().as_u16(), &r.body()[..]), (400, &b"no dots\n"[..]));
/// let r = app.oneshot(Request::get("/files/x").body(vec![]).unwrap());
/// assert_eq!((r.status().as_u16(), &r.body()[..]), (500, &b"internal error\n"[..]));
/// ```
pub struct HttpError(Inner);

enum Inner {
    /// Answered as it is.
    Response(HttpResponse),
    /// Logged, answered 500.
    Internal(Box<dyn std::error::Error + Send + Sync>),
}

impl HttpError {
    /// An answer of `status` with `message` as a `text/plain` body.
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        HttpError(Inner::Response((status, message.into()).into_response()))
    }

    /// An error answered with `response` as it is.
    pub fn response(response: impl IntoResponse) -> Self {
        HttpError(Inner::Response(response.into_response()))
    }
}

impl fmt::Debug for HttpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Inner::Response(r) => write!(f, "HttpError({})", r.status()),
            Inner::Internal(e) => write!(f, "HttpError({e:?})"),
        }
    }
}

impl<E: std::error::Error + Send + Sync + 'static> From<E> for HttpError {
    fn from(e: E) -> Self {
        let e: Box<dyn std::error::Error + Send + Sync> = Box::new(e);
        let e = match e.downcast::<crate::Error>() {
            Ok(pool) => return HttpError(Inner::Response(pool.into_response())),
            Err(e) => e,
        };
        match e.downcast::<Rejection>() {
            Ok(rejected) => HttpError(Inner::Response(rejected.into_response())),
            Err(e) => HttpError(Inner::Internal(e)),
        }
    }
}

impl IntoResponse for HttpError {
    fn into_response(self) -> HttpResponse {
        match self.0 {
            Inner::Response(r) => r,
            Inner::Internal(e) => {
                let mut chain = e.to_string();
                let mut source = e.source();
                while let Some(s) = source {
                    chain.push_str(": ");
                    chain.push_str(&s.to_string());
                    source = s.source();
                }
                log::error!(target: "prefork_pool::http", "a handler failed (answered 500): {chain}");
                (StatusCode::INTERNAL_SERVER_ERROR, "internal error\n").into_response()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_keep_or_get_their_status() {
        let io = std::io::Error::other("disk on fire");
        let r = HttpError::from(io).into_response();
        assert_eq!(
            (r.status().as_u16(), &r.body()[..]),
            (500, &b"internal error\n"[..])
        );
        let pool = crate::Error::LoopDetected { depth: 3, max: 2 };
        assert_eq!(HttpError::from(pool).into_response().status(), 508);
        let rej = Rejection::new(StatusCode::UNPROCESSABLE_ENTITY, "X", "why");
        let r = HttpError::from(rej).into_response();
        assert_eq!(
            (r.status().as_u16(), &r.body()[..]),
            (422, &b"X: why\n"[..])
        );
        let r = HttpError::response((StatusCode::CONFLICT, "taken")).into_response();
        assert_eq!(r.status(), 409);
    }
}
