//! What operators read and set: the access log (gunicorn's format and JSON), the metrics, the health routes, the stuck report, rate-limited warnings, the server's own refusals in the log, and the trusted-proxy headers.

pub(super) mod access_json;
pub(crate) mod access_log;
pub(crate) mod forwarded;
pub(crate) mod health;
pub(crate) mod metrics;
pub(crate) mod rate_limit;
pub(super) mod refusals;
pub(super) mod stuck;
