//! [`Json<T>`] (feature `json`): a request body read into any `T: Deserialize`, and an answer
//! written from any `T: Serialize`, as axum's.

use http::header::CONTENT_TYPE;
use http::StatusCode;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::http::handler::{IntoResponse, RawJson};
use crate::http::routing::extract::{is_json, shown, Cx, FromRequest, Rejection};
use crate::http::types::{HttpRequest, HttpResponse};

/// JSON, through serde. As an answer, `T` encoded with `Content-Type: application/json` (an error
/// of `T`'s `Serialize` is a 500, logged). As an extractor (the last argument of a handler), the
/// body decoded as `T`: rejected with 415 unless the request says `Content-Type:
/// application/json` (or `application/<x>+json`), 400 when the body is not JSON, 422 when it is
/// JSON of the wrong shape (a missing field, a wrong type). For bytes already encoded, see
/// [`RawJson`].
///
/// ```
/// use prefork_pool::http::{post, IntoResponse, Json, Router};
/// use prefork_pool::http::types::http::{Request, StatusCode};
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Deserialize)]
/// struct New { title: String }
/// #[derive(Serialize)]
/// struct Note { id: u64, title: String }
///
/// fn create(Json(new): Json<New>) -> (StatusCode, Json<Note>) {
///     (StatusCode::CREATED, Json(Note { id: 1, title: new.title }))
/// }
/// let app = Router::new().route("/notes", post(create));
/// let req = |ct: &str, body: &str| {
///     Request::post("/notes").header("content-type", ct).body(body.as_bytes().to_vec()).unwrap()
/// };
/// let r = app.oneshot(req("application/json", r#"{"title":"hi"}"#));
/// assert_eq!((r.status().as_u16(), &r.body()[..]), (201, &br#"{"id":1,"title":"hi"}"#[..]));
/// assert_eq!(app.oneshot(req("text/plain", r#"{"title":"hi"}"#)).status(), 415);
/// assert_eq!(app.oneshot(req("application/json", r#"{"title":"#)).status(), 400);
/// let r = app.oneshot(req("application/json", r#"{"name":"hi"}"#));
/// assert_eq!(r.status(), 422);
/// assert!(r.body().starts_with(b"Json: the body's JSON does not fit: missing field `title`"));
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Json<T>(pub T);

impl<T: Serialize> IntoResponse for Json<T> {
    fn into_response(self) -> HttpResponse {
        match serde_json::to_vec(&self.0) {
            Ok(bytes) => RawJson(bytes).into_response(),
            Err(e) => {
                log::error!("an answer could not be encoded as JSON: {e}");
                let body = format!("the answer could not be encoded as JSON: {e}\n");
                (StatusCode::INTERNAL_SERVER_ERROR, body).into_response()
            }
        }
    }
}

impl<S, T: DeserializeOwned> FromRequest<S> for Json<T> {
    fn from_request(req: HttpRequest, _: &Cx<'_, S>) -> Result<Self, Rejection> {
        if !is_json(req.headers()) {
            return Err(Rejection::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "Json",
                format!(
                    "expected Content-Type: application/json, got {}",
                    shown(req.headers().get(CONTENT_TYPE))
                ),
            ));
        }
        serde_json::from_slice(req.body()).map(Json).map_err(|e| {
            use serde_json::error::Category;
            match e.classify() {
                Category::Data => Rejection::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "Json",
                    format!("the body's JSON does not fit: {e}"),
                ),
                Category::Io | Category::Syntax | Category::Eof => Rejection::new(
                    StatusCode::BAD_REQUEST,
                    "Json",
                    format!("the body is not JSON: {e}"),
                ),
            }
        })
    }
}
