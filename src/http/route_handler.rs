//! What a [`Router`](super::Router) route runs: [`RouteHandler`], implemented for every function
//! and closure whose arguments are extractors (0 to 12 of them; the last may consume the body)
//! and whose answer is [`IntoResponse`]; and [`with_context`] for a handler written as the
//! server's own `Fn(HttpRequest, &Context)`.

use std::marker::PhantomData;

use super::extract::{Cx, FromRequest, FromRequestParts};
use super::handler::IntoResponse;
use super::types::{HttpRequest, HttpResponse};
use crate::Context;

/// A route's handler: a function of 0 to 12 extractors that returns anything
/// [`IntoResponse`]. Each argument but the last is [`FromRequestParts`]; the last is
/// [`FromRequest`] (it may take the body: `Json<T>`, `Vec<u8>`, `String`, the whole
/// `HttpRequest`). `T` is a marker that the compiler infers: never write it.
///
/// A closure given to [`get`](super::get) and the like needs its arguments' types written
/// (`|Path(id): Path<u64>| ...`), as in axum.
pub trait RouteHandler<T, S>: Send + Sync + 'static {
    /// Extract the arguments and run; a rejected extraction is answered with its rejection.
    fn call(&self, req: HttpRequest, cx: &Cx<'_, S>) -> HttpResponse;
}

macro_rules! route_handler {
    ($($part:ident),*) => {
        #[allow(non_snake_case, unused_mut, unused_variables)]
        impl<F, R, S, M, $($part,)* Last> RouteHandler<(M, $($part,)* Last,), S> for F
        where
            F: Fn($($part,)* Last) -> R + Send + Sync + 'static,
            R: IntoResponse,
            $($part: FromRequestParts<S>,)*
            Last: FromRequest<S, M>,
        {
            fn call(&self, req: HttpRequest, cx: &Cx<'_, S>) -> HttpResponse {
                let (mut parts, body) = req.into_parts();
                $(
                    let $part = match $part::from_request_parts(&mut parts, cx) {
                        Ok(v) => v,
                        Err(rejected) => return rejected.into_response(),
                    };
                )*
                let req = HttpRequest::from_parts(parts, body);
                let last = match Last::from_request(req, cx) {
                    Ok(v) => v,
                    Err(rejected) => return rejected.into_response(),
                };
                self($($part,)* last).into_response()
            }
        }
    };
}

impl<F, R, S> RouteHandler<(), S> for F
where
    F: Fn() -> R + Send + Sync + 'static,
    R: IntoResponse,
{
    fn call(&self, _: HttpRequest, _: &Cx<'_, S>) -> HttpResponse {
        self().into_response()
    }
}

route_handler!();
route_handler!(T1);
route_handler!(T1, T2);
route_handler!(T1, T2, T3);
route_handler!(T1, T2, T3, T4);
route_handler!(T1, T2, T3, T4, T5);
route_handler!(T1, T2, T3, T4, T5, T6);
route_handler!(T1, T2, T3, T4, T5, T6, T7);
route_handler!(T1, T2, T3, T4, T5, T6, T7, T8);
route_handler!(T1, T2, T3, T4, T5, T6, T7, T8, T9);
route_handler!(T1, T2, T3, T4, T5, T6, T7, T8, T9, T10);
route_handler!(T1, T2, T3, T4, T5, T6, T7, T8, T9, T10, T11);

/// A route handler written as the server's own handler, `Fn(HttpRequest, &Context)`: the whole
/// request and its [`Context`] (its deadline, the pool). The closure needs no annotation.
///
/// ```
/// use prefork_pool::http::{get, with_context, Router};
/// use prefork_pool::http::types::http::Request;
///
/// let app = Router::new().route("/left", get(with_context(|req, ctx| {
///     format!("{} has {}s\n", req.uri().path(), ctx.remaining().as_secs().min(1))
/// })));
/// let r = app.oneshot(Request::get("/left").body(Vec::new()).unwrap());
/// assert_eq!(r.body(), b"/left has 1s\n");
/// ```
pub fn with_context<F, R>(f: F) -> WithContext<F, R>
where
    F: Fn(HttpRequest, &Context) -> R + Send + Sync + 'static,
    R: IntoResponse,
{
    WithContext(f, PhantomData)
}

/// A handler made by [`with_context`].
pub struct WithContext<F, R>(F, PhantomData<fn() -> R>);

/// The marker of [`WithContext`]'s [`RouteHandler`].
#[derive(Debug)]
pub enum ViaContext {}

impl<F, R, S> RouteHandler<ViaContext, S> for WithContext<F, R>
where
    F: Fn(HttpRequest, &Context) -> R + Send + Sync + 'static,
    R: IntoResponse + 'static,
{
    fn call(&self, req: HttpRequest, cx: &Cx<'_, S>) -> HttpResponse {
        (self.0)(req, cx.ctx).into_response()
    }
}
