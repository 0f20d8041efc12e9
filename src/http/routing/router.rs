//! [`Router`]: requests dispatched by path ([`matchit`](https://docs.rs/matchit), the radix tree
//! axum uses) and method to handlers of extractors, with 404, 405 and `Allow`, nesting, a
//! fallback, shared state and a deadline per route.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use http::header::ALLOW;
use http::{HeaderValue, Method, StatusCode};

use crate::http::handler::IntoResponse;
use crate::http::routing::extract::{percent_decode, Cx, Lend, Rejection, WorkerSlot};
use crate::http::routing::route_handler::RouteHandler;
use crate::http::types::{HttpRequest, HttpResponse};
use crate::Context;

/// A handler with its extractors' types erased.
type Erased<S> = Arc<dyn Fn(HttpRequest, &Cx<'_, S>) -> HttpResponse + Send + Sync>;

fn erase<H, T, S>(h: H) -> Erased<S>
where
    H: RouteHandler<T, S>,
    T: 'static,
    S: 'static,
{
    Arc::new(move |req, cx| h.call(req, cx))
}

/// The handlers of one path, by method (see [`get`], [`post`], ...), and the path's deadline.
///
/// `HEAD` runs the `GET` handler when the route has no `HEAD` of its own (the server sends the
/// headers only). A method the route does not have is answered 405 with `Allow`.
pub struct MethodRouter<S = ()> {
    methods: Vec<(Method, Erased<S>)>,
    any: Option<Erased<S>>,
    deadline: Option<Duration>,
    /// The 405's `Allow` and body, made when the route is added to a router.
    allow: Option<(HeaderValue, String)>,
}

impl<S> Clone for MethodRouter<S> {
    fn clone(&self) -> Self {
        MethodRouter {
            methods: self.methods.clone(),
            any: self.any.clone(),
            deadline: self.deadline,
            allow: self.allow.clone(),
        }
    }
}

impl<S> fmt::Debug for MethodRouter<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let methods: Vec<&str> = self.methods.iter().map(|(m, _)| m.as_str()).collect();
        f.debug_struct("MethodRouter")
            .field("methods", &methods)
            .field("any", &self.any.is_some())
            .field("deadline", &self.deadline)
            .finish()
    }
}

macro_rules! method_fns {
    ($($name:ident => $method:ident),* $(,)?) => {
        $(
            #[doc = concat!("A route answering `", stringify!($method), "` with `handler`.")]
            pub fn $name<H, T, S>(handler: H) -> MethodRouter<S>
            where
                H: RouteHandler<T, S>,
                T: 'static,
                S: 'static,
            {
                MethodRouter::new().on(Method::$method, handler)
            }
        )*
        impl<S: 'static> MethodRouter<S> {
            $(
                #[doc = concat!("Also answer `", stringify!($method), "` with `handler`.")]
                pub fn $name<H, T>(self, handler: H) -> Self
                where
                    H: RouteHandler<T, S>,
                    T: 'static,
                {
                    self.on(Method::$method, handler)
                }
            )*
        }
    };
}

method_fns! {
    get => GET,
    post => POST,
    put => PUT,
    delete => DELETE,
    patch => PATCH,
    head => HEAD,
    options => OPTIONS,
}

/// A route answering every method with `handler` (unless a method of its own is added).
pub fn any<H, T, S>(handler: H) -> MethodRouter<S>
where
    H: RouteHandler<T, S>,
    T: 'static,
    S: 'static,
{
    MethodRouter {
        any: Some(erase(handler)),
        ..MethodRouter::new()
    }
}

impl<S: 'static> MethodRouter<S> {
    fn new() -> Self {
        MethodRouter {
            methods: Vec::new(),
            any: None,
            deadline: None,
            allow: None,
        }
    }

    /// Answer `method` with `handler`.
    ///
    /// # Panics
    ///
    /// When the route has a handler for `method` already.
    pub fn on<H, T>(mut self, method: Method, handler: H) -> Self
    where
        H: RouteHandler<T, S>,
        T: 'static,
    {
        assert!(
            !self.methods.iter().any(|(m, _)| *m == method),
            "a second handler for {method} on the same route"
        );
        self.methods.push((method, erase(handler)));
        self
    }

    /// This route's requests get `deadline` instead of the Pool's (past it the client gets
    /// 504), whatever their method: it feeds
    /// [`ServerBuilder::deadline_for`](crate::http::ServerBuilder::deadline_for) when the router is served with
    /// [`serve_router`](crate::http::ServerBuilder::serve_router) or
    /// [`Supervisor::serve_router`](crate::prefork::Supervisor::serve_router); a request the
    /// router sends to no route keeps what `deadline_for` (else the Pool) gives it.
    pub fn deadline(mut self, deadline: Duration) -> Self {
        self.deadline = Some(deadline);
        self
    }

    fn merge(mut self, other: MethodRouter<S>, path: &str) -> Self {
        for (m, h) in other.methods {
            assert!(
                !self.methods.iter().any(|(mine, _)| *mine == m),
                "a second handler for {m} on {path}"
            );
            self.methods.push((m, h));
        }
        if other.any.is_some() {
            assert!(self.any.is_none(), "a second `any` handler on {path}");
            self.any = other.any;
        }
        self.deadline = self.deadline.or(other.deadline);
        self
    }

    /// The handler for `method`, if the route has one.
    fn pick(&self, method: &Method) -> Option<&Erased<S>> {
        let found = |m: &Method| self.methods.iter().find(|(mine, _)| mine == m);
        let h = found(method).or_else(|| match *method {
            Method::HEAD => found(&Method::GET),
            _ => None,
        });
        h.map(|(_, h)| h).or(self.any.as_ref())
    }

    /// Make the 405's `Allow` and body (once the route is complete).
    fn seal(mut self) -> Self {
        let mut allow: Vec<&str> = self.methods.iter().map(|(m, _)| m.as_str()).collect();
        if allow.contains(&"GET") && !allow.contains(&"HEAD") {
            allow.push("HEAD");
        }
        let allow = allow.join(", ");
        let body = format!("method not allowed here; allowed: {allow}\n");
        self.allow = HeaderValue::from_str(&allow).ok().map(|v| (v, body));
        self
    }

    fn not_allowed(&self) -> HttpResponse {
        let Some((allow, body)) = &self.allow else {
            return StatusCode::METHOD_NOT_ALLOWED.into_response();
        };
        let mut r = (StatusCode::METHOD_NOT_ALLOWED, body.clone()).into_response();
        r.headers_mut().insert(ALLOW, allow.clone());
        r
    }

    fn with_state<S2>(self, state: &Arc<S>) -> MethodRouter<S2>
    where
        S: Send + Sync,
    {
        MethodRouter {
            methods: self
                .methods
                .into_iter()
                .map(|(m, h)| (m, provide(h, state)))
                .collect(),
            any: self.any.map(|h| provide(h, state)),
            deadline: self.deadline,
            allow: self.allow,
        }
    }
}

/// `h` with its state given: a handler of a router of any state.
fn provide<S: Send + Sync + 'static, S2>(h: Erased<S>, state: &Arc<S>) -> Erased<S2> {
    let state = state.clone();
    Arc::new(move |req, cx: &Cx<'_, S2>| {
        h(
            req,
            &Cx {
                params: cx.params,
                state: &*state,
                ctx: cx.ctx,
                worker: cx.worker,
            },
        )
    })
}

/// Requests dispatched by path and method, as axum's `Router`, to sync handlers whose arguments
/// are extractors ([`Path`](crate::http::Path), [`Query`](crate::http::Query), [`Json`](crate::http::Json),
/// [`State`](crate::http::State), ...; see [`RouteHandler`]).
///
/// - A path no route matches gets the [`fallback`](Self::fallback), else 404.
/// - A path whose route lacks the method gets 405 with `Allow` (`HEAD` runs `GET`).
/// - Paths are matchit's: `/notes/{id}` (one segment), `/files/{*rest}` (the rest), static
///   segments first. Parameters are percent-decoded (`%2D` is `-`; not UTF-8 once decoded: 400).
/// - A route may carry its [`deadline`](MethodRouter::deadline).
///
/// Served with [`ServerBuilder::serve_router`](crate::http::ServerBuilder::serve_router) (thread mode)
/// or [`Supervisor::serve_router`](crate::prefork::Supervisor::serve_router) (process mode); or as
/// any handler, through [`into_handler`](Self::into_handler).
///
/// ```
/// use prefork_pool::http::{get, Path, Router, Server, State};
/// use prefork_pool::http::types::http::{header, Request, StatusCode};
/// use std::time::Duration;
///
/// fn show(Path(id): Path<u64>, State(owner): State<&'static str>) -> String {
///     format!("note {id} of {owner}\n")
/// }
/// fn update(Path(id): Path<u64>, body: String) -> (StatusCode, String) {
///     (StatusCode::ACCEPTED, format!("note {id} := {body}\n"))
/// }
/// let api = Router::new()
///     .route("/notes/{id}", get(show).post(update))
///     .route("/export", get(|| "a,b\n").deadline(Duration::from_secs(60)))
///     .with_state("ann");
/// let app = Router::new().nest("/api", api).fallback(|| (StatusCode::NOT_FOUND, "nothing here\n"));
///
/// let server = Server::builder().bind("127.0.0.1:0").serve_router(app).unwrap();
/// let lb = server.loopback();
/// let send = |req: Request<Vec<u8>>| lb.send(req).unwrap();
/// assert_eq!(send(Request::get("/api/notes/7").body(vec![]).unwrap()).body(), b"note 7 of ann\n");
/// let r = send(Request::post("/api/notes/7").body(b"hi".to_vec()).unwrap());
/// assert_eq!((r.status(), &r.body()[..]), (StatusCode::ACCEPTED, &b"note 7 := hi\n"[..]));
/// let r = send(Request::delete("/api/notes/7").body(vec![]).unwrap());
/// assert_eq!((r.status().as_u16(), r.headers()[header::ALLOW].to_str().unwrap()), (405, "GET, POST, HEAD"));
/// assert_eq!(send(Request::get("/elsewhere").body(vec![]).unwrap()).body(), b"nothing here\n");
/// server.shutdown(Duration::from_secs(5));
/// ```
pub struct Router<S = ()> {
    /// Every route as given (nesting copies them).
    routes: Vec<(String, MethodRouter<S>)>,
    /// Path to index in `routes`.
    matcher: matchit::Router<usize>,
    fallback: Option<Erased<S>>,
    /// What a known path with another method gets instead of the plain 405 (`Allow` added).
    not_allowed: Option<Erased<S>>,
}

impl<S> fmt::Debug for Router<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Router")
            .field("routes", &self.routes)
            .field("fallback", &self.fallback.is_some())
            .finish()
    }
}

impl<S: 'static> Default for Router<S> {
    fn default() -> Self {
        Self::new()
    }
}

impl<S: 'static> Router<S> {
    /// A router with no route: every request gets 404.
    pub fn new() -> Self {
        Router {
            routes: Vec::new(),
            matcher: matchit::Router::new(),
            fallback: None,
            not_allowed: None,
        }
    }

    /// Answer `path` with `methods` (`get(show).post(update)`). The same path given twice merges
    /// the two.
    ///
    /// # Panics
    ///
    /// When `path` is not a valid matchit route (it must start with `/`), conflicts with another
    /// (`/{a}` beside `/{b}`), or a method of it has a handler already.
    pub fn route(mut self, path: &str, methods: MethodRouter<S>) -> Self {
        assert!(
            path.starts_with('/'),
            "route {path:?}: a path starts with /"
        );
        if let Some(i) = self.routes.iter().position(|(p, _)| p == path) {
            let old = std::mem::replace(&mut self.routes[i].1, MethodRouter::new());
            self.routes[i].1 = old.merge(methods, path).seal();
            return self;
        }
        let i = self.routes.len();
        if let Err(e) = self.matcher.insert(path, i) {
            panic!("route {path:?}: {e}");
        }
        self.routes.push((path.to_string(), methods.seal()));
        self
    }

    /// Every route of `router` under `prefix` (`"/api"`: its `/notes` becomes `/api/notes`, its
    /// `/` becomes `/api`). Its fallback, if any, answers every other path under `prefix/`.
    ///
    /// # Panics
    ///
    /// When `prefix` does not start with `/`, ends with `/`, or a route conflicts.
    pub fn nest(mut self, prefix: &str, router: Router<S>) -> Self {
        assert!(
            prefix.starts_with('/') && !prefix.ends_with('/'),
            "nest {prefix:?}: a prefix starts with / and does not end with it"
        );
        for (path, methods) in router.routes {
            let full = if path == "/" {
                prefix.to_string()
            } else {
                format!("{prefix}{path}")
            };
            self = self.route(&full, methods);
        }
        if let Some(fallback) = router.fallback {
            let rest = format!("{prefix}/{{*__nested_rest}}");
            let methods = MethodRouter {
                any: Some(fallback),
                ..MethodRouter::new()
            };
            self = self.route(&rest, methods);
        }
        self
    }

    /// What a path no route matches gets (instead of 404), whatever its method.
    pub fn fallback<H, T>(mut self, handler: H) -> Self
    where
        H: RouteHandler<T, S>,
        T: 'static,
    {
        self.fallback = Some(erase(handler));
        self
    }

    /// What a known path gets for a method it does not have, instead of the plain `text/plain`
    /// 405 (a JSON error for an API): `handler`'s answer, with the route's `Allow` added. The
    /// outer router's applies to the routes it [`nest`](Self::nest)s.
    ///
    /// ```
    /// use prefork_pool::http::{post, Router};
    /// use prefork_pool::http::types::http::{Request, StatusCode};
    ///
    /// let app = Router::new()
    ///     .route("/hello_world", post(|| "hi"))
    ///     .method_not_allowed(|| (StatusCode::METHOD_NOT_ALLOWED, r#"{"error":"Method Not Allowed"}"#));
    /// let r = app.oneshot(Request::get("/hello_world").body(vec![]).unwrap());
    /// assert_eq!((r.status().as_u16(), r.headers()["allow"].to_str().unwrap()), (405, "POST"));
    /// assert_eq!(r.body(), br#"{"error":"Method Not Allowed"}"#);
    /// ```
    pub fn method_not_allowed<H, T>(mut self, handler: H) -> Self
    where
        H: RouteHandler<T, S>,
        T: 'static,
    {
        self.not_allowed = Some(erase(handler));
        self
    }

    /// Give the handlers their [`State`](crate::http::State): a router that needs no more state, to
    /// serve or to [`nest`](Self::nest) in another. The state is shared by every request (an
    /// `Arc` inside; clone it per request as the extractor does): hold a pool of connections,
    /// not a connection.
    pub fn with_state<S2: 'static>(self, state: S) -> Router<S2>
    where
        S: Send + Sync,
    {
        let state = Arc::new(state);
        Router {
            routes: self
                .routes
                .into_iter()
                .map(|(p, m)| (p, m.with_state(&state)))
                .collect(),
            matcher: self.matcher,
            fallback: self.fallback.map(|h| provide(h, &state)),
            not_allowed: self.not_allowed.map(|h| provide(h, &state)),
        }
    }

    /// The handler that `req` goes to, and its answer.
    fn dispatch(
        &self,
        req: HttpRequest,
        ctx: &Context,
        state: &S,
        worker: Option<&dyn Lend>,
    ) -> HttpResponse {
        let (index, params) = match self.matcher.at(req.uri().path()) {
            Ok(m) => {
                let mut params = Vec::with_capacity(m.params.len());
                for (k, v) in m.params.iter() {
                    match percent_decode(v, false) {
                        Some(v) => params.push((k, v.into_owned())),
                        None => {
                            let why = format!("{{{k}}} is not UTF-8 once percent-decoded");
                            return Rejection::new(StatusCode::BAD_REQUEST, "Path", why)
                                .into_response();
                        }
                    }
                }
                (*m.value, params)
            }
            Err(_) => {
                let cx = Cx {
                    params: &[],
                    state,
                    ctx,
                    worker,
                };
                return match &self.fallback {
                    Some(f) => f(req, &cx),
                    None => (StatusCode::NOT_FOUND, "no route for this path\n").into_response(),
                };
            }
        };
        let route = &self.routes[index].1;
        let cx = Cx {
            params: &params,
            state,
            ctx,
            worker,
        };
        match (route.pick(req.method()), &self.not_allowed) {
            (Some(h), _) => h(req, &cx),
            (None, None) => route.not_allowed(),
            (None, Some(h)) => {
                let mut r = h(req, &cx);
                if let Some((allow, _)) = &route.allow {
                    r.headers_mut().insert(ALLOW, allow.clone());
                }
                r
            }
        }
    }

    /// Whether a route has a deadline of its own.
    fn has_deadlines(&self) -> bool {
        self.routes.iter().any(|(_, m)| m.deadline.is_some())
    }

    /// The deadline of the route `req` goes to, if it has one.
    pub fn deadline_of(&self, req: &HttpRequest) -> Option<Duration> {
        let m = self.matcher.at(req.uri().path()).ok()?;
        self.routes[*m.value].1.deadline
    }
}

impl Router {
    /// Answer `req`, as the server does (its [`Context`] from the pool).
    pub fn call(&self, req: HttpRequest, ctx: &Context) -> HttpResponse {
        self.dispatch(req, ctx, &(), None)
    }

    /// [`call`](Self::call) with the worker's own state, for the handlers that take it as their
    /// first argument (`fn show(db: &mut Db, Path(id): Path<u64>)`); a handler that wants a
    /// state of another type answers 500.
    pub fn call_with_worker(
        &self,
        req: HttpRequest,
        ctx: &Context,
        worker: &mut dyn std::any::Any,
    ) -> HttpResponse {
        let slot = WorkerSlot(std::cell::RefCell::new(worker));
        self.dispatch(req, ctx, &(), Some(&slot))
    }

    /// Answer `req` outside any server (a test, a doc): its context has a deadline of 30 s from
    /// now and no pool; the request has no [`Loopback`](crate::http::Loopback) nor
    /// [`PeerAddr`](crate::http::PeerAddr) unless you put them in its extensions.
    pub fn oneshot(&self, req: HttpRequest) -> HttpResponse {
        self.call(req, &Context::detached(Duration::from_secs(30)))
    }

    /// The router as a plain handler, for [`ServerBuilder::serve`](crate::http::ServerBuilder::serve)
    /// or any code that takes one. Its routes' deadlines are then not applied: use
    /// [`serve_router`](crate::http::ServerBuilder::serve_router) for that (or give them to
    /// [`deadline_for`](crate::http::ServerBuilder::deadline_for) through [`deadline_of`](Self::deadline_of)).
    pub fn into_handler(
        self,
    ) -> impl Fn(HttpRequest, &Context) -> HttpResponse + Send + Sync + 'static {
        move |req, ctx| self.call(req, ctx)
    }

    /// The deadline chooser of a served router, composed with the one already set: the route's
    /// own deadline first, else `before`'s choice. `None` when no route has a deadline.
    pub(crate) fn deadlines(
        self: &Arc<Self>,
        before: Option<Arc<crate::http::engine::dispatch::DeadlineFor>>,
    ) -> Option<Arc<crate::http::engine::dispatch::DeadlineFor>> {
        if !self.has_deadlines() {
            return before;
        }
        let router = self.clone();
        Some(Arc::new(move |req: &HttpRequest| {
            router
                .deadline_of(req)
                .or_else(|| before.as_ref().and_then(|f| f(req)))
        }))
    }
}
