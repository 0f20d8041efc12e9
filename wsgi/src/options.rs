//! The settings the Python command line (`prefork_wsgi.cli`) hands to [`serve`](crate::serve),
//! already checked there flag by flag (a bad value names its flag); the builders check them again.

use std::time::Duration;

use pyo3::prelude::*;

/// One `-b/--bind` value: a TCP address or `unix:PATH`.
#[derive(Debug, Clone)]
pub enum Bind {
    Tcp(String),
    Unix(String),
}

/// The effective settings (see `prefork-wsgi --print-config`).
#[derive(Debug, Clone, FromPyObject)]
#[pyo3(from_item_all)]
pub struct Options {
    pub bind: Vec<String>,
    pub workers: usize,
    pub threads: usize,
    pub timeout: f64,
    pub graceful_timeout: f64,
    pub keepalive: f64,
    pub max_requests: u64,
    pub max_requests_jitter: u64,
    pub backlog: i64,
    pub accesslog: Option<String>,
    pub access_log_format: Option<String>,
    pub errorlog: String,
    pub loglevel: String,
    pub limit_request_line: usize,
    pub limit_request_fields: usize,
    pub limit_request_field_size: usize,
    pub limit_request_body: u64,
    pub forwarded_allow_ips: Vec<String>,
    pub preload_app: bool,
    pub pidfile: Option<String>,
    pub script_name: String,
}

impl Options {
    pub fn binds(&self) -> Vec<Bind> {
        self.bind
            .iter()
            .map(|b| match b.strip_prefix("unix:") {
                Some(path) => Bind::Unix(path.to_string()),
                None => Bind::Tcp(b.clone()),
            })
            .collect()
    }

    /// gunicorn's `--timeout 0`: no deadline (the pool's longest, a day).
    pub fn deadline(&self) -> Duration {
        if self.timeout <= 0.0 {
            Duration::from_secs(86_400)
        } else {
            secs(self.timeout)
        }
    }

    pub fn graceful(&self) -> Duration {
        secs(self.graceful_timeout.max(0.1))
    }

    /// gunicorn's `--keep-alive 0` turns keep-alive off; the server's shortest idle wait is the
    /// nearest it has (an idle connection is closed at once).
    pub fn keepalive(&self) -> Duration {
        secs(self.keepalive.max(0.001))
    }

    /// The `SERVER_NAME` and `SERVER_PORT` for a request without a `Host` header that did not
    /// come over TCP (a Unix socket): the first bind.
    pub fn default_server(&self) -> (String, String) {
        match self.binds().first() {
            Some(Bind::Tcp(addr)) => match addr.rsplit_once(':') {
                Some((host, port)) => (
                    host.trim_start_matches('[')
                        .trim_end_matches(']')
                        .to_string(),
                    port.to_string(),
                ),
                None => (addr.clone(), "80".to_string()),
            },
            _ => ("localhost".to_string(), "80".to_string()),
        }
    }
}

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s.clamp(0.0, 86_400.0))
}
