//! The tower mode's request body: hyper's, counted as it streams in, so that a body over
//! [`limit_body_bytes`](super::ServiceConfig::limit_body_bytes) with no declared length (chunked
//! HTTP/1.1, HTTP/2 data frames) is refused as a declared one is.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use http_body_util::{LengthLimitError, Limited};
use hyper::body::{Body, Bytes, Frame, Incoming, SizeHint};

use super::BoxError;

/// The body of a request that [`Supervisor::serve_service`](crate::prefork::Supervisor::serve_service)
/// hands to the service: hyper's [`Incoming`], counted as it is read. Once more than
/// [`ServiceConfig::limit_body_bytes`](crate::prefork::ServiceConfig::limit_body_bytes) bytes have
/// come, the next read fails with an error that is (boxed) an
/// [`http_body_util::LengthLimitError`], as `http_body_util::Limited`'s is, so that axum's
/// extractors (`Bytes`, `String`, `Json`, ...) answer 413 themselves; and whatever the service
/// answers then, the client gets the server's 413 with `Connection: close`. A body the service
/// does not read is not counted (a declared `Content-Length` over the limit is refused before
/// the service runs).
///
/// An axum `Router` serves any body, this one included; a service written by hand names it:
///
/// ```
/// use prefork_pool::http::types::http;
/// use prefork_pool::prefork::ServiceBody;
///
/// #[derive(Clone)]
/// struct Hello;
///
/// impl tower_service::Service<http::Request<ServiceBody>> for Hello {
///     type Response = http::Response<String>;
///     type Error = std::convert::Infallible;
///     type Future = std::future::Ready<Result<Self::Response, Self::Error>>;
///     fn poll_ready(&mut self, _: &mut std::task::Context<'_>)
///         -> std::task::Poll<Result<(), Self::Error>> { std::task::Poll::Ready(Ok(())) }
///     fn call(&mut self, _: http::Request<ServiceBody>) -> Self::Future {
///         std::future::ready(Ok(http::Response::new("hello\n".to_string())))
///     }
/// }
/// ```
#[cfg_attr(docsrs, doc(cfg(feature = "tower")))]
pub struct ServiceBody {
    inner: Limited<Incoming>,
    /// Set when the limit was crossed: the request's answer becomes the server's 413 (`None`:
    /// an empty body, which cannot cross it).
    over: Option<Arc<AtomicBool>>,
}

impl ServiceBody {
    pub(super) fn new(inner: Incoming, limit: u64, over: Option<Arc<AtomicBool>>) -> ServiceBody {
        let limit = usize::try_from(limit).unwrap_or(usize::MAX);
        ServiceBody {
            inner: Limited::new(inner, limit),
            over,
        }
    }
}

impl std::fmt::Debug for ServiceBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceBody")
            .field(
                "over_limit",
                &self
                    .over
                    .as_ref()
                    .is_some_and(|o| o.load(Ordering::Relaxed)),
            )
            .finish_non_exhaustive()
    }
}

impl Body for ServiceBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let me = self.get_mut();
        let frame = Pin::new(&mut me.inner).poll_frame(cx);
        if let Poll::Ready(Some(Err(e))) = &frame {
            if let Some(over) = me.over.as_ref().filter(|_| e.is::<LengthLimitError>()) {
                over.store(true, Ordering::Release);
            }
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
