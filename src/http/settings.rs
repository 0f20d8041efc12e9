//! Thread mode's side of [`Settings`]: [`ServerBuilder::from_env`], [`ServerBuilder::with_env`],
//! [`ServerBuilder::with_settings`] and [`ServerBuilder::print_config`].

use std::net::ToSocketAddrs;

use super::server::{Server, ServerBuilder};
use crate::settings::{self, show_duration, BindAddr, Settings, Source, UNIX_MODE};
use crate::BuildError;

impl ServerBuilder {
    /// [`Server::builder`] with the environment's settings: `Server::builder().with_env()`.
    pub fn from_env() -> ServerBuilder {
        Server::builder().with_env()
    }

    /// Take the settings the environment gives ([`Settings::from_env`]; the variables are listed
    /// there and in the README's "Settings").
    ///
    /// **Later calls win.** Each builder call sets what it names, and `with_env` is one call that
    /// sets what the environment names (a variable that is not set changes nothing). So call the
    /// program's own values first and `with_env()` last to let the operator override them (the
    /// examples do), or `from_env()` first and the code's calls after it to pin a value whatever
    /// the environment says. In thread mode:
    ///
    /// - `PREFORK_BIND` or `PORT` replace the addresses bound so far (`PORT=8080`:
    ///   `0.0.0.0:8080`, all interfaces, as gunicorn); a `bind` call after it replaces them in
    ///   turn.
    /// - `PREFORK_THREADS` (else `WEB_CONCURRENCY`: thread mode has one process, so gunicorn's
    ///   count is its threads) sets the Pool's `workers`; `PREFORK_TIMEOUT` its `deadline`;
    ///   `PREFORK_MAX_REQUESTS` and `PREFORK_MAX_REQUESTS_JITTER` recycle threads.
    /// - `PREFORK_KEEP_ALIVE` is the [`keepalive_timeout`](Self::keepalive_timeout),
    ///   `PREFORK_GRACEFUL_TIMEOUT` the [`graceful_timeout`](Self::graceful_timeout),
    ///   `PREFORK_FORWARDED_ALLOW_IPS` the [`forwarded_allow_ips`](Self::forwarded_allow_ips).
    /// - `PREFORK_ACCESS_LOG`, `PREFORK_ERROR_LOG` and `PREFORK_LOG_LEVEL` set the crate's log
    ///   sink, as [`access_log_file`](Self::access_log_file),
    ///   [`error_log_file`](Self::error_log_file) and [`log_level`](Self::log_level) do (`-`:
    ///   stdout for the access log, stderr for the error log); [`print_config`](Self::print_config)
    ///   shows them.
    ///
    /// A value that is not allowed makes [`serve`](Self::serve) fail with a
    /// [`BuildError`](crate::BuildError) naming the variable, the value and what is allowed.
    pub fn with_env(self) -> Self {
        self.with_settings(&Settings::from_env())
    }

    /// [`with_env`](Self::with_env) with settings read elsewhere ([`Settings::from_lookup`]: a
    /// test's map).
    ///
    /// ```
    /// use prefork_pool::http::Server;
    /// use prefork_pool::Settings;
    /// use std::time::Duration;
    ///
    /// let env = Settings::from_lookup(|name| match name {
    ///     "PREFORK_BIND" => Some("127.0.0.1:0".into()),
    ///     "PREFORK_THREADS" => Some("3".into()),
    ///     "PREFORK_GRACEFUL_TIMEOUT" => Some("5s".into()),
    ///     _ => None,
    /// });
    /// let server = Server::builder()
    ///     .bind("127.0.0.1:5000")          // the program's default: PREFORK_BIND replaces it
    ///     .pool(|p| p.workers(1))          // likewise PREFORK_THREADS
    ///     .with_settings(&env)
    ///     .serve(|_req, _ctx| "hello\n")
    ///     .unwrap();
    /// assert_eq!(server.stats().workers, 3);
    /// assert_ne!(server.local_addrs()[0].port(), 5000);
    /// assert_eq!(server.graceful_timeout(), Duration::from_secs(5));
    /// server.shutdown(Duration::from_secs(5));
    ///
    /// // A refused value names the variable.
    /// let bad = Settings::from_lookup(|name| (name == "PREFORK_THREADS").then(|| "0".into()));
    /// let err = Server::builder().with_settings(&bad).serve(|_req, _ctx| "").unwrap_err();
    /// assert!(err.to_string().starts_with("invalid `PREFORK_THREADS` = \"0\""), "{err}");
    /// ```
    pub fn with_settings(mut self, s: &Settings) -> Self {
        if let (None, Some(e)) = (&self.settings_error, s.error()) {
            let mut e = e.clone();
            if e.field == "WEB_CONCURRENCY" {
                e.allowed = format!(
                    "a whole number of worker threads (thread mode: one process), 1..={}",
                    crate::MAX_WORKERS
                );
            }
            self.settings_error = Some(e);
        }
        if let (None, Some((var, value))) = (
            &self.settings_error,
            s.process_mode_only().into_iter().next(),
        ) {
            let allowed = if var.ends_with("_USER") || var.ends_with("_GROUP") {
                "unset in thread mode: it is the account of the supervisor's worker processes \
                 (process mode); in thread mode, start the program as that account (systemd \
                 User=, docker --user)"
            } else {
                "unset in thread mode: it recycles the supervisor's worker processes (process \
                 mode); one process is bounded by its service manager instead (systemd \
                 MemoryMax= with Restart=, a Kubernetes memory limit)"
            };
            self.settings_error = Some(BuildError::new(var, format!("{value:?}"), allowed));
        }
        if let Some((binds, var)) = &s.bind {
            self.tcp.clear();
            #[cfg(unix)]
            self.unix.clear();
            for b in binds {
                match b {
                    BindAddr::Tcp(a) => self.tcp.push(
                        a.as_str()
                            .to_socket_addrs()
                            .map(|a| a.collect())
                            .map_err(|e| format!("{a} ({var}): {e}")),
                    ),
                    #[cfg(unix)]
                    BindAddr::Unix(p) => self.unix.push((p.clone(), UNIX_MODE)),
                    #[cfg(not(unix))]
                    BindAddr::Unix(p) => self.tcp.push(Err(format!(
                        "unix:{} ({var}): not on this system",
                        p.display()
                    ))),
                }
            }
            self.sources.set("bind", Source::Env(var));
        }
        if let Some((n, var)) = s.threads.or(s.processes) {
            self.pool = self.pool.workers(n);
            self.sources.set("threads", Source::Env(var));
        }
        if let Some((d, var)) = s.timeout {
            self.pool = self.pool.deadline(d);
            self.sources.set("timeout", Source::Env(var));
        }
        if let Some((n, var)) = s.max_requests {
            self.pool = self.pool.max_requests(n);
            self.sources.set("max_requests", Source::Env(var));
        }
        if let Some((n, var)) = s.max_requests_jitter {
            self.pool = self.pool.max_requests_jitter(n);
            self.sources.set("max_requests_jitter", Source::Env(var));
        }
        if let Some((d, var)) = s.graceful_timeout {
            self.graceful_timeout = d;
            self.sources.set("graceful_timeout", Source::Env(var));
        }
        if let Some((d, var)) = s.keep_alive {
            self.keepalive_timeout = d;
            self.sources.set("keep_alive", Source::Env(var));
        }
        if let Some((ips, var)) = &s.forwarded_allow_ips {
            self.forwarded_allow_ips = ips.clone();
            self.sources.set("forwarded_allow_ips", Source::Env(var));
        }
        self.log_choices.apply(s);
        self.log_choices.to_sink(&mut self.logs);
        #[cfg(feature = "tls")]
        self.tls.apply(s);
        self
    }

    /// The effective settings and where each came from (`default`, `environment VARIABLE`,
    /// `code`), one per line, as [`print_config`](Self::print_config) prints them.
    ///
    /// ```
    /// use prefork_pool::http::Server;
    /// use prefork_pool::Settings;
    ///
    /// let env = Settings::from_lookup(|name| (name == "PORT").then(|| "8080".into()));
    /// let text = Server::builder().with_settings(&env).pool(|p| p.workers(2)).config_text();
    /// assert!(text.contains("0.0.0.0:8080"), "{text}");
    /// assert!(text.lines().any(|l| l.starts_with("bind ") && l.ends_with("(environment PORT)")));
    /// assert!(text.lines().any(|l| l.starts_with("threads ") && l.ends_with("(code)")));
    /// ```
    pub fn config_text(&self) -> String {
        let src = |key| self.sources.get(key);
        let mut bind: Vec<String> = Vec::new();
        for t in &self.tcp {
            match t {
                Ok(addrs) => bind.extend(addrs.iter().map(|a| a.to_string())),
                Err(e) => bind.push(format!("unresolved: {e}")),
            }
        }
        #[cfg(unix)]
        bind.extend(
            self.unix
                .iter()
                .map(|(p, _)| format!("unix:{}", p.display())),
        );
        let adopted = self.std_tcp.len() + {
            #[cfg(unix)]
            let n = self.std_unix.len();
            #[cfg(not(unix))]
            let n = 0;
            n
        };
        if adopted > 0 {
            bind.push(format!("{adopted} adopted listener(s)"));
        }
        let bind = if bind.is_empty() {
            "nothing yet: serve() refuses to start".to_string()
        } else {
            bind.join(", ")
        };
        let size = self.pool.sized();
        let threads = match size.workers {
            Some(n) => (n.to_string(), src("threads")),
            None => match crate::util::web_concurrency_env("worker threads", crate::MAX_WORKERS) {
                Ok(Some(n)) => (n.to_string(), Source::Env("WEB_CONCURRENCY")),
                Ok(None) => (
                    format!("{} (the core count)", settings::cores()),
                    Source::Default,
                ),
                Err(e) => (e.to_string(), Source::Env("WEB_CONCURRENCY")),
            },
        };
        let mut rows = vec![
            ("bind", bind, src("bind")),
            ("processes", "1 (thread mode)".to_string(), Source::Default),
            ("threads", threads.0, threads.1),
            ("timeout", show_duration(size.deadline), src("timeout")),
            (
                "graceful_timeout",
                show_duration(self.graceful_timeout),
                src("graceful_timeout"),
            ),
            (
                "keep_alive",
                show_duration(self.keepalive_timeout),
                src("keep_alive"),
            ),
            (
                "max_requests",
                size.max_requests.to_string(),
                src("max_requests"),
            ),
            (
                "max_requests_jitter",
                size.jitter.to_string(),
                src("max_requests_jitter"),
            ),
            (
                "forwarded_allow_ips",
                self.forwarded_allow_ips.join(","),
                src("forwarded_allow_ips"),
            ),
        ];
        rows.extend(self.log_choices.rows());
        #[cfg(feature = "tls")]
        rows.extend(self.tls.rows());
        let mut text = settings::render(&rows);
        if let Some(e) = &self.settings_error {
            text.push_str(&format!("refused: {e}\n"));
        }
        text
    }

    /// Print [`config_text`](Self::config_text) to stdout: gunicorn's `--print-config`.
    pub fn print_config(&self) {
        print!("{}", self.config_text());
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    use crate::settings::testing::env;

    #[test]
    fn every_variable_sets_its_field_in_thread_mode() {
        let b = Server::builder().with_settings(&env(&[
            ("PREFORK_BIND", "127.0.0.1:0,unix:/tmp/x.sock"),
            ("PREFORK_THREADS", "3"),
            ("PREFORK_TIMEOUT", "7"),
            ("PREFORK_GRACEFUL_TIMEOUT", "9s"),
            ("PREFORK_KEEP_ALIVE", "2"),
            ("PREFORK_MAX_REQUESTS", "100"),
            ("PREFORK_MAX_REQUESTS_JITTER", "10"),
            ("PREFORK_FORWARDED_ALLOW_IPS", "10.0.0.0/8"),
            ("PREFORK_ACCESS_LOG", "-"),
            ("PREFORK_ERROR_LOG", "/tmp/error.log"),
            ("PREFORK_LOG_LEVEL", "debug"),
        ]));
        assert!(b.settings_error.is_none());
        assert_eq!(b.tcp.len(), 1);
        assert_eq!(b.tcp[0].as_ref().unwrap()[0].to_string(), "127.0.0.1:0");
        assert_eq!(b.unix[0], ("/tmp/x.sock".into(), UNIX_MODE));
        let size = b.pool.sized();
        assert_eq!(size.workers, Some(3));
        assert_eq!(size.deadline, Duration::from_secs(7));
        assert_eq!((size.max_requests, size.jitter), (100, 10));
        assert_eq!(b.graceful_timeout, Duration::from_secs(9));
        assert_eq!(b.keepalive_timeout, Duration::from_secs(2));
        assert_eq!(b.forwarded_allow_ips, ["10.0.0.0/8"]);
        assert_eq!(b.log_choices.access_log.as_ref().unwrap().0, "-");
        assert_eq!(
            b.log_choices.error_log.as_ref().unwrap().0,
            "/tmp/error.log"
        );
        assert_eq!(b.log_choices.log_level.unwrap().0, log::LevelFilter::Debug);
        // The crate's log sink takes them: `-` is stdout for the access log.
        use crate::log_sink::LogFile;
        assert!(matches!(b.logs.access, Some(LogFile::Stdout)));
        assert!(
            matches!(&b.logs.error, Some(LogFile::Path(p)) if p.to_str() == Some("/tmp/error.log"))
        );
        assert_eq!(b.logs.level, Some(log::LevelFilter::Debug));
        let text = b.config_text();
        for var in crate::settings::VARIABLES.iter().filter(|v| {
            **v != "PORT"
                && **v != "WEB_CONCURRENCY"
                && !crate::settings::PROCESS_MODE_VARIABLES.contains(v)
                // The TLS files: `tls_variables_set_the_files_in_thread_mode`.
                && !crate::settings::TLS_VARIABLES.contains(v)
        }) {
            assert!(
                text.contains(&format!("(environment {var})")),
                "{var} in\n{text}"
            );
        }
    }

    #[cfg(feature = "tls")]
    #[test]
    fn tls_variables_set_the_files_in_thread_mode() {
        let b = Server::builder().with_settings(&env(crate::settings::testing::TLS_ENV));
        assert!(b.settings_error.is_none());
        let text = b.config_text();
        crate::settings::testing::assert_tls_files_from_env(&text);
        let plain = Server::builder().config_text();
        assert!(
            plain.lines().any(|l| l.starts_with("certfile ")
                && l.contains("not set: plain HTTP")
                && l.ends_with("(default)")),
            "{plain}"
        );
    }

    #[test]
    fn process_mode_variables_are_refused_by_name_in_thread_mode() {
        for (var, value, shown, says) in [
            (
                "PREFORK_USER",
                "nobody",
                "nobody",
                "start the program as that account",
            ),
            (
                "PREFORK_GROUP",
                "nogroup",
                "nogroup",
                "start the program as that account",
            ),
            ("PREFORK_MAX_WORKER_MEMORY", "200MiB", "200M", "MemoryMax="),
            (
                "PREFORK_MAX_WORKER_AGE",
                "1h",
                "3600s",
                "recycles the supervisor's",
            ),
        ] {
            let b = Server::builder().with_settings(&env_owned(var, value));
            let e = b.settings_error.expect(var);
            assert_eq!(e.field, var);
            assert_eq!(e.value, format!("{shown:?}"));
            assert!(e.allowed.contains(says), "{e}");
        }
    }

    fn env_owned(var: &'static str, value: &'static str) -> Settings {
        Settings::from_lookup(move |name| (name == var).then(|| value.to_string()))
    }

    #[test]
    fn port_binds_every_interface_and_web_concurrency_is_threads_here() {
        let b = Server::builder()
            .bind("127.0.0.1:5000")
            .with_settings(&env(&[("PORT", "8080"), ("WEB_CONCURRENCY", "5")]));
        assert_eq!(b.tcp.len(), 1, "PORT replaces the code's address");
        assert_eq!(b.tcp[0].as_ref().unwrap()[0].to_string(), "0.0.0.0:8080");
        assert_eq!(b.pool.sized().workers, Some(5));
        let b = Server::builder()
            .with_settings(&env(&[("WEB_CONCURRENCY", "5"), ("PREFORK_THREADS", "2")]));
        assert_eq!(b.pool.sized().workers, Some(2));
    }

    #[test]
    fn later_calls_win_both_ways() {
        let vars = env(&[
            ("PORT", "8080"),
            ("PREFORK_KEEP_ALIVE", "9"),
            ("PREFORK_THREADS", "4"),
        ]);
        // Code after the environment: the code's values.
        let b = Server::builder()
            .with_settings(&vars)
            .bind("127.0.0.1:0")
            .bind("[::1]:0")
            .keepalive_timeout(Duration::from_secs(1))
            .pool(|p| p.workers(2));
        let addrs: Vec<String> = b
            .tcp
            .iter()
            .map(|t| t.as_ref().unwrap()[0].to_string())
            .collect();
        assert_eq!(addrs, ["127.0.0.1:0", "[::1]:0"]);
        assert_eq!(b.keepalive_timeout, Duration::from_secs(1));
        assert_eq!(b.pool.sized().workers, Some(2));
        let text = b.config_text();
        assert!(
            text.lines()
                .any(|l| l.starts_with("keep_alive ") && l.ends_with("(code)")),
            "{text}"
        );
        assert!(
            text.lines()
                .any(|l| l.starts_with("bind ") && l.ends_with("(code)")),
            "{text}"
        );
        // Nothing set: defaults.
        let text = Server::builder().config_text();
        assert!(
            text.lines().any(|l| l.starts_with("keep_alive ")
                && l.contains("5s")
                && l.ends_with("(default)")),
            "{text}"
        );
    }

    #[test]
    fn a_refused_variable_stops_serve_by_its_name() {
        for (var, value) in [
            ("PORT", "99999"),
            ("PREFORK_THREADS", "0"),
            ("PREFORK_KEEP_ALIVE", "0"),
            ("PREFORK_LOG_LEVEL", "loud"),
            ("WEB_CONCURRENCY", "0"),
        ] {
            let s = Settings::from_lookup(|name| (name == var).then(|| value.to_string()));
            let err = Server::builder()
                .bind("127.0.0.1:0")
                .with_settings(&s)
                .serve(|_req, _ctx| "")
                .unwrap_err();
            match err {
                crate::http::ServeError::Config(e) => {
                    assert_eq!(e.field, var);
                    assert_eq!(e.value, format!("{value:?}"));
                    if var == "WEB_CONCURRENCY" {
                        assert!(e.allowed.contains("worker threads"), "{e}");
                    }
                }
                other => panic!("{other}"),
            }
        }
    }
}
