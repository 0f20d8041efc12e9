//! What a [`Router`](crate::http::Router) route runs: [`RouteHandler`], implemented for every function
//! and closure whose arguments are extractors (0 to 12 of them; the last may consume the body)
//! and whose answer is [`IntoResponse`]; and [`with_context`] for a handler written as the
//! server's own `Fn(HttpRequest, &Context)`.

use std::marker::PhantomData;

use crate::http::handler::IntoResponse;
use crate::http::routing::extract::{Cx, FromRequest, FromRequestParts};
use crate::http::types::{HttpRequest, HttpResponse};
use crate::Context;

/// A route's handler: a function of 0 to 12 extractors that returns anything
/// [`IntoResponse`]. Each argument but the last is [`FromRequestParts`]; the last is
/// [`FromRequest`] (it may take the body: `Json<T>`, `Vec<u8>`, `String`, the whole
/// `HttpRequest`). `T` is a marker that the compiler infers: never write it.
///
/// A handler may also take the worker's own state first, `&mut W`, then 0 to 8 extractors, when
/// the router is served with
/// [`serve_router_with_state`](crate::http::ServerBuilder::serve_router_with_state) (a connection per
/// worker thread).
///
/// A closure given to [`get`](crate::http::get) and the like needs its arguments' types written
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

/// The marker of a handler whose first argument is the worker's own state, `&mut W` (see
/// [`serve_router_with_state`](crate::http::ServerBuilder::serve_router_with_state)).
pub struct WithWorker<W, T>(PhantomData<fn() -> (W, T)>);

/// The worker's state lent to `run`, or the 500 that says why it cannot be.
fn lend_worker<W: 'static, S>(
    cx: &Cx<'_, S>,
    run: impl FnOnce(&mut W) -> HttpResponse,
) -> HttpResponse {
    let why = match cx.worker.map(|w| w.lend()) {
        Some(Some(mut lent)) => match lent.downcast_mut::<W>() {
            Some(w) => return run(w),
            None => "the worker's state is of another type than this handler's",
        },
        Some(None) => "the worker's state is lent to another handler already",
        None => {
            "this handler takes the worker's state: serve the router with serve_router_with_state"
        }
    };
    log::error!("{why} (`{}`)", std::any::type_name::<W>());
    (http::StatusCode::INTERNAL_SERVER_ERROR, format!("{why}\n")).into_response()
}

macro_rules! worker_handler {
    ($($part:ident),*) => {
        #[allow(non_snake_case, unused_mut, unused_variables)]
        impl<F, R, S, W, M, $($part,)* Last> RouteHandler<WithWorker<W, (M, $($part,)* Last,)>, S>
            for F
        where
            F: Fn(&mut W, $($part,)* Last) -> R + Send + Sync + 'static,
            R: IntoResponse,
            W: 'static,
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
                lend_worker(cx, |w: &mut W| self(w, $($part,)* last).into_response())
            }
        }
    };
}

impl<F, R, S, W> RouteHandler<WithWorker<W, ()>, S> for F
where
    F: Fn(&mut W) -> R + Send + Sync + 'static,
    R: IntoResponse,
    W: 'static,
{
    fn call(&self, _: HttpRequest, cx: &Cx<'_, S>) -> HttpResponse {
        lend_worker(cx, |w: &mut W| self(w).into_response())
    }
}

worker_handler!();
worker_handler!(T1);
worker_handler!(T1, T2);
worker_handler!(T1, T2, T3);
worker_handler!(T1, T2, T3, T4);
worker_handler!(T1, T2, T3, T4, T5);
worker_handler!(T1, T2, T3, T4, T5, T6);
worker_handler!(T1, T2, T3, T4, T5, T6, T7);

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
