//! Health routes for orchestrators, answered by the server itself without a worker (so they
//! answer while every worker is busy): readiness (200 once the workers are up and until the first
//! moment of a graceful stop) and liveness (200 unless the server is stuck), set with
//! [`ServerBuilder::health_routes`](crate::http::ServerBuilder::health_routes) (in
//! `server_health.rs`).

use std::time::{Duration, Instant};

use http::{HeaderValue, Response};

use crate::http::ops::stuck::StuckPolicy;
use crate::http::types::HttpResponse;
use crate::BuildError;

/// The health routes' settings, checked by the server's builder.
#[derive(Debug, Clone)]
pub(crate) struct HealthRoutes {
    /// The readiness path (e.g. `/readyz`).
    pub ready: String,
    /// The liveness path (e.g. `/livez`).
    pub live: String,
    /// How long every worker may be busy with no request completed before liveness says 503.
    pub live_after: Duration,
    /// How long, from the start of a graceful stop, the server keeps accepting (and answering)
    /// with readiness at 503, before it closes its listeners.
    pub drain_delay: Duration,
}

/// What the health routes ask the server, one question per route.
pub(crate) trait HealthView {
    /// Why the server is not ready (booting workers), if it is not.
    fn not_ready(&self) -> Option<String>;
    /// Why the server is stuck (every worker busy, no completion for `after`), if it is.
    fn stuck(&self, after: Duration, now: Instant) -> Option<String>;
}

impl HealthRoutes {
    /// The answer to a request for `path` when it is a health route; `stopping`: a graceful stop
    /// began. (Both fronts: the HTTP server's reactor and the tower mode's connections.)
    pub(crate) fn answer(
        &self,
        path: &str,
        stopping: bool,
        view: &dyn HealthView,
    ) -> Option<HttpResponse> {
        if path == self.ready {
            let why = if stopping {
                Some("draining: a graceful stop has begun".to_string())
            } else {
                view.not_ready()
            };
            return Some(match why {
                None => text(200, "ready\n".to_string()),
                Some(why) => text(503, format!("not ready: {why}\n")),
            });
        }
        if path == self.live {
            return Some(match view.stuck(self.live_after, Instant::now()) {
                None => text(200, "alive\n".to_string()),
                Some(why) => text(503, format!("{why}\n")),
            });
        }
        None
    }
}

fn text(status: u16, body: String) -> HttpResponse {
    let mut r = Response::new(body.into_bytes());
    *r.status_mut() = http::StatusCode::from_u16(status).unwrap_or_default();
    let h = r.headers_mut();
    h.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    h.insert(
        http::header::CACHE_CONTROL,
        HeaderValue::from_static("no-store"),
    );
    r
}

/// The health settings of a [`ServerBuilder`] before they are checked.
#[derive(Debug, Clone, Default)]
pub(crate) struct HealthSettings {
    pub routes: Option<(String, String)>,
    pub live_after: Option<Duration>,
    pub drain_delay: Duration,
    pub when_stuck: StuckPolicy,
}

impl HealthSettings {
    /// The checked routes, if any were asked for.
    pub(crate) fn check(&self) -> Result<Option<HealthRoutes>, BuildError> {
        let Some((ready, live)) = &self.routes else {
            return Ok(None);
        };
        for p in [ready, live] {
            if !p.starts_with('/') {
                return Err(BuildError::new(
                    "health_routes",
                    p,
                    "a path such as /readyz",
                ));
            }
        }
        if ready == live {
            return Err(BuildError::new(
                "health_routes",
                ready,
                "two different paths (readiness, liveness)",
            ));
        }
        let live_after = self.live_after.unwrap_or(Duration::from_secs(10));
        let day = Duration::from_secs(86_400);
        BuildError::check_duration("live_after", live_after, Duration::from_nanos(1)..=day)?;
        let hour = Duration::from_secs(3_600);
        BuildError::check_duration("drain_delay", self.drain_delay, Duration::ZERO..=hour)?;
        Ok(Some(HealthRoutes {
            ready: ready.clone(),
            live: live.clone(),
            live_after,
            drain_delay: self.drain_delay,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_are_two_different_paths() {
        let s = |r: &str, l: &str| HealthSettings {
            routes: Some((r.into(), l.into())),
            ..Default::default()
        };
        assert_eq!(
            s("readyz", "/livez").check().unwrap_err().field,
            "health_routes"
        );
        assert_eq!(s("/h", "/h").check().unwrap_err().field, "health_routes");
        assert!(s("/readyz", "/livez").check().unwrap().is_some());
        assert!(HealthSettings::default().check().unwrap().is_none());
    }
}
