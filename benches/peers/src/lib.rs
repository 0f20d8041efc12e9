//! What the load-test servers in `src/bin/` share: the seed app's two routes (the same handler work
//! for every server), their settings from the environment, and the wait for a stop signal.
//!
//! Each binary (`ours`, `prefork`, `tiny`, `hyper`) only adapts its server's request and response
//! types to [`App::handle`], so the servers differ in their HTTP stack and nothing else. `run.sh`
//! starts them and drives them with wrk from another process.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// The session id that is in the cache from the start: the GET the load generator sends finds it.
pub const SEEDED_SESSION: &str = "x";

/// The seed app (a Flask app keeping sessions in a shared dict): `POST /hello_world` stores a
/// session, `GET /get_hello_world?session_id=...` reads one back.
pub struct App {
    cache: Mutex<HashMap<String, String>>,
    next: AtomicU64,
}

/// What a route answers: a status and a JSON body (`Content-Type: application/json`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The HTTP status code.
    pub status: u16,
    /// The JSON body.
    pub body: String,
}

impl Default for App {
    fn default() -> Self {
        Self::new()
    }
}

impl App {
    /// An app whose cache holds the session [`SEEDED_SESSION`].
    ///
    /// ```
    /// let app = prefork_pool_benches::App::new();
    /// let r = app.handle("GET", "/get_hello_world", Some("session_id=x"));
    /// assert_eq!(r.status, 200);
    /// ```
    pub fn new() -> Self {
        let app = App {
            cache: Mutex::new(HashMap::new()),
            next: AtomicU64::new(0),
        };
        app.store(SEEDED_SESSION);
        app
    }

    /// The one handler every server runs: route on method and path, touch the cache, answer.
    pub fn handle(&self, method: &str, path: &str, query: Option<&str>) -> Reply {
        match (method, path) {
            ("GET", "/get_hello_world") => {
                let sid = query
                    .unwrap_or("")
                    .split('&')
                    .find_map(|kv| kv.strip_prefix("session_id="))
                    .unwrap_or("");
                let found = self.cache.lock().expect("cache lock").get(sid).cloned();
                match found {
                    Some(payload) => reply(200, payload),
                    None => reply(404, r#"{"error": "Invalid or missing session_id"}"#.into()),
                }
            }
            ("POST", "/hello_world") => {
                let n = self.next.fetch_add(1, Ordering::Relaxed);
                let sid = format!("00000000-0000-4000-8000-{n:012x}");
                self.store(&sid);
                reply(201, format!(r#"{{"session_id": "{sid}"}}"#))
            }
            _ => reply(404, r#"{"error": "Not Found"}"#.into()),
        }
    }

    fn store(&self, sid: &str) {
        let payload = format!(r#"{{"message": "Hello, World!", "session_id": "{sid}"}}"#);
        self.cache
            .lock()
            .expect("cache lock")
            .insert(sid.to_string(), payload);
    }
}

fn reply(status: u16, body: String) -> Reply {
    Reply { status, body }
}

/// A setting from the environment (`PORT`, `WORKERS`, ...), or `default` when unset; exits with
/// status 2 and a message when set but not valid.
pub fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    match std::env::var(name) {
        Ok(v) => v.parse().unwrap_or_else(|_| {
            eprintln!("{name}={v:?} is not valid");
            std::process::exit(2);
        }),
        Err(_) => default,
    }
}

/// SIGTERM and SIGINT, caught from the moment this is made (make it before serving); closing stdin
/// does not stop the servers.
pub struct StopSignals(signal_hook::iterator::Signals);

impl StopSignals {
    /// Catch SIGTERM and SIGINT from now on.
    pub fn install() -> Self {
        use signal_hook::consts::{SIGINT, SIGTERM};
        let signals = signal_hook::iterator::Signals::new([SIGTERM, SIGINT])
            .expect("install the SIGTERM/SIGINT handlers");
        StopSignals(signals)
    }

    /// Block until SIGTERM or SIGINT arrives.
    pub fn wait(mut self) {
        let _ = self.0.forever().next();
    }
}

/// The axum template's `GET /` (`{"worker_pid": N}`, JSON), the Router of `axum_plain` and
/// `axum_supervised`.
pub fn axum_app() -> axum::Router {
    use axum::http::header::CONTENT_TYPE;
    axum::Router::new().route(
        "/",
        axum::routing::get(|| async {
            (
                [(CONTENT_TYPE, "application/json")],
                format!("{{\"worker_pid\":{}}}", std::process::id()),
            )
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_posted_session_can_be_read_back_and_an_unknown_one_is_404() {
        let app = App::new();
        let posted = app.handle("POST", "/hello_world", None);
        assert_eq!(posted.status, 201);
        let sid = posted.body.split('"').nth(3).expect("an id in the answer");
        let got = app.handle(
            "GET",
            "/get_hello_world",
            Some(&format!("session_id={sid}")),
        );
        assert_eq!(got.status, 200);
        assert!(got.body.contains(sid));
        let unknown = app.handle("GET", "/get_hello_world", Some("session_id=nope"));
        assert_eq!(unknown.status, 404);
    }
}
