//! Process mode's side of [`Settings`]: [`SupervisorBuilder::from_env`], `with_env`,
//! `with_settings`, `print_config`, and the settings of each worker's HTTP server that the
//! supervisor carries (`threads`, `timeout`, `keep_alive`, `forwarded_allow_ips`).

use std::path::PathBuf;
use std::time::Duration;

use super::builder::{default_workers, SupervisorBuilder};
use super::config::{WorkerServer, MAX_WORKERS};
use super::os::listeners::{Bind, Listener};
use super::supervisor::Supervisor;
use crate::http::ServerBuilder;
use crate::settings::{self, show_duration, BindAddr, Settings, Source, UNIX_MODE};
use crate::BuildError;

impl SupervisorBuilder {
    /// [`Supervisor::builder`] with the environment's settings: `Supervisor::builder().with_env()`.
    pub fn from_env() -> SupervisorBuilder {
        Supervisor::builder().with_env()
    }

    /// Take the settings the environment gives ([`Settings::from_env`]; the variables are listed
    /// there and in the README's "Settings"), in the same words as thread mode's
    /// [`ServerBuilder::with_env`].
    ///
    /// **Later calls win.** Each builder call sets what it names, and `with_env` is one call that
    /// sets what the environment names (a variable that is not set changes nothing): call the
    /// program's own values first and `with_env()` last to let the operator override them (the
    /// examples do), or `from_env()` first and the code's calls after it to pin a value. In
    /// process mode:
    ///
    /// - `PREFORK_BIND` or `PORT` replace the addresses bound so far (`PORT=8080`:
    ///   `0.0.0.0:8080`, all interfaces, as gunicorn); a `bind` call after it replaces them in
    ///   turn.
    /// - `WEB_CONCURRENCY` is [`workers`](Self::workers), the processes (1..=256);
    ///   `PREFORK_THREADS` the [`threads`](Self::threads) of each; `PREFORK_MAX_REQUESTS` and
    ///   `PREFORK_MAX_REQUESTS_JITTER` recycle processes; `PREFORK_GRACEFUL_TIMEOUT` is the
    ///   [`graceful_timeout`](Self::graceful_timeout).
    /// - `PREFORK_TIMEOUT` ([`timeout`](Self::timeout)), `PREFORK_KEEP_ALIVE`
    ///   ([`keep_alive`](Self::keep_alive)) and `PREFORK_FORWARDED_ALLOW_IPS`
    ///   ([`forwarded_allow_ips`](Self::forwarded_allow_ips)) go to each worker's HTTP server.
    /// - `PREFORK_ACCESS_LOG`, `PREFORK_ERROR_LOG` and `PREFORK_LOG_LEVEL` set the crate's log
    ///   sink, as [`access_log_file`](Self::access_log_file),
    ///   [`error_log_file`](Self::error_log_file) and [`log_level`](Self::log_level) do (`-`:
    ///   stdout for the access log, stderr for the error log); [`print_config`](Self::print_config)
    ///   shows them.
    /// - `PREFORK_USER` and `PREFORK_GROUP` are [`user`](Self::user) and [`group`](Self::group),
    ///   the account of the workers; `PREFORK_MAX_WORKER_MEMORY` and `PREFORK_MAX_WORKER_AGE`
    ///   are [`max_worker_memory`](Self::max_worker_memory) and
    ///   [`max_worker_age`](Self::max_worker_age).
    ///
    /// The worker servers' settings are those of `serve_http`. `serve_service` (feature `tower`)
    /// takes `PREFORK_TIMEOUT`, `PREFORK_KEEP_ALIVE` and `PREFORK_FORWARDED_ALLOW_IPS` too
    /// (where its `ServiceConfig` sets none of its own), but sizes its tokio runtime by the
    /// `ServiceConfig`, not by `PREFORK_THREADS`: read [`Settings::threads`] into it, or into the
    /// app's own pool, as `templates/examples/axum_bulkhead.rs` does.
    ///
    /// A value that is not allowed makes [`build`](Self::build) and [`check`](Self::check) fail
    /// with a [`BuildError`] naming the variable, the value and what is allowed
    /// ([`run`](Self::run) and `serve_http` print it and exit 1).
    pub fn with_env(self) -> Self {
        self.with_settings(&Settings::from_env())
    }

    /// [`with_env`](Self::with_env) with settings read elsewhere ([`Settings::from_lookup`]: a
    /// test's map).
    ///
    /// ```
    /// use prefork_pool::prefork::Supervisor;
    /// use prefork_pool::Settings;
    ///
    /// let env = Settings::from_lookup(|name| match name {
    ///     "PREFORK_BIND" => Some("127.0.0.1:0".into()),
    ///     "WEB_CONCURRENCY" => Some("3".into()),
    ///     _ => None,
    /// });
    /// let supervisor = Supervisor::builder()
    ///     .bind("127.0.0.1:8000")     // the program's default: PREFORK_BIND replaces it
    ///     .workers(1)                 // likewise WEB_CONCURRENCY
    ///     .with_settings(&env)
    ///     .build()
    ///     .unwrap();
    /// assert_eq!(supervisor.workers(), 3);
    /// assert_ne!(supervisor.local_addr().unwrap().port(), 8000);
    ///
    /// let bad = Settings::from_lookup(|name| (name == "WEB_CONCURRENCY").then(|| "0".into()));
    /// let err = Supervisor::builder().with_settings(&bad).build().unwrap_err();
    /// assert!(err.to_string().starts_with("invalid `WEB_CONCURRENCY` = \"0\""), "{err}");
    /// ```
    pub fn with_settings(mut self, s: &Settings) -> Self {
        if let (None, Some(e)) = (&self.settings_error, s.error()) {
            let mut e = e.clone();
            if e.field == "WEB_CONCURRENCY" {
                e.allowed = format!("a whole number of worker processes, 1..={MAX_WORKERS}");
            }
            self.settings_error = Some(e);
        }
        if let Some((binds, var)) = &s.bind {
            // Drop what was bound before, whoever set it: the environment's list replaces it.
            self.binds.retain(|b| matches!(b, Bind::Ready(_)));
            self.bind_errors.clear();
            self.sources.set("bind", Source::Env(var));
            for b in binds {
                match b {
                    BindAddr::Tcp(a) => self.bind_addr(a.as_str()),
                    BindAddr::Unix(p) => self.binds.push(Bind::Unix(p.clone(), UNIX_MODE)),
                }
            }
        }
        if let Some((n, var)) = s.processes {
            if n > MAX_WORKERS && self.settings_error.is_none() {
                self.settings_error = Some(BuildError::new(
                    var,
                    format!("\"{n}\""),
                    format!("a whole number of worker processes, 1..={MAX_WORKERS}"),
                ));
            }
            self.workers = Some(n);
            self.sources.set("processes", Source::Env(var));
        }
        let server = &mut self.cfg.server;
        let mut from = Vec::new();
        if let Some((n, var)) = s.threads {
            server.threads = n;
            from.push(("threads", var));
        }
        if let Some((d, var)) = s.timeout {
            server.timeout = Some(d);
            from.push(("timeout", var));
        }
        if let Some((d, var)) = s.keep_alive {
            server.keep_alive = Some(d);
            from.push(("keep_alive", var));
        }
        if let Some((ips, var)) = &s.forwarded_allow_ips {
            server.forwarded_allow_ips = Some(ips.clone());
            from.push(("forwarded_allow_ips", var));
        }
        server.log_choices.apply(s);
        server.log_choices.to_sink(&mut self.cfg.logs);
        #[cfg(feature = "tls")]
        server.tls.apply(s);
        if let Some((d, var)) = s.graceful_timeout {
            self.cfg.graceful_timeout = d;
            from.push(("graceful_timeout", var));
        }
        if let Some((n, var)) = s.max_requests {
            self.cfg.max_requests = n;
            from.push(("max_requests", var));
        }
        if let Some((n, var)) = s.max_requests_jitter {
            self.cfg.max_requests_jitter = n;
            from.push(("max_requests_jitter", var));
        }
        if let Some((u, var)) = &s.user {
            self.user = Some(u.clone());
            from.push(("user", var));
        }
        if let Some((g, var)) = &s.group {
            self.group = Some(g.clone());
            from.push(("group", var));
        }
        if let Some((m, var)) = s.max_worker_memory {
            self.cfg.max_worker_memory = m;
            from.push(("max_worker_memory", var));
        }
        if let Some((a, var)) = s.max_worker_age {
            self.cfg.max_worker_age = Some(a);
            from.push(("max_worker_age", var));
        }
        for (key, var) in from {
            self.sources.set(key, Source::Env(var));
        }
        self
    }

    /// Handler threads in each worker process (the Pool's `workers` of each worker's server;
    /// default 2; 1..=4096; `PREFORK_THREADS`). `serve_http`'s `configure` may still set the pool
    /// itself, after this.
    pub fn threads(mut self, n: usize) -> Self {
        self.sources.set("threads", Source::Code);
        self.cfg.server.threads = n;
        self
    }

    /// The deadline of each request in the worker processes (the Pool's
    /// [`deadline`](crate::PoolBuilder::deadline); past it the client gets 504, and a handler
    /// still running `request_grace` later gets its process replaced). Default 30 s; 1ms..=24h;
    /// `PREFORK_TIMEOUT`.
    pub fn timeout(mut self, d: Duration) -> Self {
        self.sources.set("timeout", Source::Code);
        self.cfg.server.timeout = Some(d);
        self
    }

    /// How long an idle kept-alive connection stays open in the worker processes
    /// ([`ServerBuilder::keepalive_timeout`]; default 5 s; `PREFORK_KEEP_ALIVE`).
    pub fn keep_alive(mut self, d: Duration) -> Self {
        self.sources.set("keep_alive", Source::Code);
        self.cfg.server.keep_alive = Some(d);
        self
    }

    /// The proxies whose forwarding headers the worker processes believe
    /// ([`ServerBuilder::forwarded_allow_ips`]; default `127.0.0.1` and `::1`;
    /// `PREFORK_FORWARDED_ALLOW_IPS`).
    pub fn forwarded_allow_ips<S: AsRef<str>>(mut self, ips: impl IntoIterator<Item = S>) -> Self {
        self.sources.set("forwarded_allow_ips", Source::Code);
        self.cfg.server.forwarded_allow_ips =
            Some(ips.into_iter().map(|s| s.as_ref().to_string()).collect());
        self
    }

    /// Check the worker servers' settings the supervisor carries, by their names.
    pub(super) fn validate_server(&self) -> Result<(), BuildError> {
        let server = &self.cfg.server;
        BuildError::check_range("threads", server.threads, 1..=crate::MAX_WORKERS)?;
        let day = Duration::from_secs(86_400);
        for (field, d) in [
            ("timeout", server.timeout),
            ("keep_alive", server.keep_alive),
        ] {
            if let Some(d) = d {
                BuildError::check_duration(field, d, Duration::from_millis(1)..=day)?;
            }
        }
        if let Some(ips) = &server.forwarded_allow_ips {
            // The worker's server checks them again; refused here, before any fork.
            ServerBuilder::new()
                .forwarded_allow_ips(ips)
                .check_forwarded()?;
        }
        Ok(())
    }

    /// The effective settings and where each came from (`default`, `environment VARIABLE`,
    /// `code`), one per line, as [`print_config`](Self::print_config) prints them. What
    /// `serve_http`'s `configure` sets inside the workers is not seen here.
    ///
    /// ```
    /// use prefork_pool::prefork::Supervisor;
    /// use prefork_pool::Settings;
    ///
    /// let env = Settings::from_lookup(|name| match name {
    ///     "PORT" => Some("8080".into()),
    ///     "PREFORK_THREADS" => Some("4".into()),
    ///     _ => None,
    /// });
    /// let text = Supervisor::builder().workers(2).with_settings(&env).config_text();
    /// assert!(text.lines().any(|l| l.starts_with("bind ") && l.contains("0.0.0.0:8080")));
    /// assert!(text.lines().any(|l| l.starts_with("processes ") && l.ends_with("(code)")));
    /// assert!(text.lines().any(|l| l.starts_with("threads ")
    ///     && l.contains("= 4 ") && l.ends_with("(environment PREFORK_THREADS)")));
    /// ```
    pub fn config_text(&self) -> String {
        let src = |key| self.sources.get(key);
        let mut bind: Vec<String> = self
            .binds
            .iter()
            .map(|b| match b {
                Bind::Tcp(a) => a.to_string(),
                Bind::Unix(p, _) => format!("unix:{}", PathBuf::from(p).display()),
                Bind::Ready(Listener::Tcp(l)) => l
                    .local_addr()
                    .map_or("a listener".into(), |a| a.to_string()),
                Bind::Ready(l) => l.address(),
            })
            .collect();
        bind.extend(self.bind_errors.iter().map(|e| format!("refused: {e}")));
        let bind = if bind.is_empty() {
            "nothing: build() refuses to start unless systemd passes sockets".to_string()
        } else {
            bind.join(", ")
        };
        let processes = match (self.workers, default_workers()) {
            (Some(n), _) => (n.to_string(), src("processes")),
            (None, Ok((n, Source::Default))) => (format!("{n} (the core count)"), Source::Default),
            (None, Ok((n, source))) => (n.to_string(), source),
            (None, Err(e)) => (e.to_string(), Source::Env("WEB_CONCURRENCY")),
        };
        let server = &self.cfg.server;
        let threads = if src("threads") == Source::Default {
            format!("{} (per process)", server.threads)
        } else {
            server.threads.to_string()
        };
        let forwarded = server.forwarded_allow_ips.as_ref().map_or_else(
            || crate::http::ops::forwarded::DEFAULT_FORWARDED_ALLOW_IPS.join(","),
            |ips| ips.join(","),
        );
        let mut rows = vec![
            ("bind", bind, src("bind")),
            ("processes", processes.0, processes.1),
            ("threads", threads, src("threads")),
            (
                "timeout",
                show_duration(server.timeout.unwrap_or(Duration::from_secs(30))),
                src("timeout"),
            ),
            (
                "graceful_timeout",
                show_duration(self.cfg.graceful_timeout),
                src("graceful_timeout"),
            ),
            (
                "keep_alive",
                show_duration(server.keep_alive.unwrap_or(Duration::from_secs(5))),
                src("keep_alive"),
            ),
            (
                "max_requests",
                self.cfg.max_requests.to_string(),
                src("max_requests"),
            ),
            (
                "max_requests_jitter",
                self.cfg.max_requests_jitter.to_string(),
                src("max_requests_jitter"),
            ),
            ("forwarded_allow_ips", forwarded, src("forwarded_allow_ips")),
        ];
        rows.extend(server.log_choices.rows());
        #[cfg(feature = "tls")]
        rows.extend(server.tls.rows());
        rows.extend(self.run_as_rows());
        rows.extend(self.recycling_rows());
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

impl WorkerServer {
    /// Set up a worker's server with these settings (before `serve_http`'s `configure`).
    pub(crate) fn apply(&self, mut server: ServerBuilder) -> ServerBuilder {
        let threads = self.threads;
        let timeout = self.timeout;
        server = server.pool(|p| {
            let p = p.workers(threads);
            match timeout {
                Some(d) => p.deadline(d),
                None => p,
            }
        });
        if let Some(d) = self.keep_alive {
            server = server.keepalive_timeout(d);
        }
        if let Some(ips) = &self.forwarded_allow_ips {
            server = server.forwarded_allow_ips(ips);
        }
        server.log_choices = self.log_choices.clone();
        // The config the master read (at the start, or at the last good SIGHUP).
        #[cfg(feature = "tls")]
        if self.tls.cert.is_some() {
            server.tls_loaded = crate::http::tls::current();
        }
        server
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::settings::testing::env;

    #[test]
    fn every_variable_sets_its_field_in_process_mode() {
        let b = Supervisor::builder().with_settings(&env(&[
            ("PREFORK_BIND", "127.0.0.1:0 unix:/tmp/y.sock"),
            ("WEB_CONCURRENCY", "3"),
            ("PREFORK_THREADS", "4"),
            ("PREFORK_TIMEOUT", "7"),
            ("PREFORK_GRACEFUL_TIMEOUT", "9s"),
            ("PREFORK_KEEP_ALIVE", "2"),
            ("PREFORK_MAX_REQUESTS", "100"),
            ("PREFORK_MAX_REQUESTS_JITTER", "10"),
            ("PREFORK_FORWARDED_ALLOW_IPS", "10.0.0.0/8"),
            ("PREFORK_ACCESS_LOG", "/tmp/access.log"),
            ("PREFORK_ERROR_LOG", "-"),
            ("PREFORK_LOG_LEVEL", "info"),
            ("PREFORK_USER", "nobody"),
            ("PREFORK_GROUP", "nogroup"),
            ("PREFORK_MAX_WORKER_MEMORY", "200M"),
            ("PREFORK_MAX_WORKER_AGE", "1h"),
        ]));
        assert!(b.settings_error.is_none());
        assert!(matches!(&b.binds[0], Bind::Tcp(a) if a.to_string() == "127.0.0.1:0"));
        assert!(
            matches!(&b.binds[1], Bind::Unix(p, UNIX_MODE) if p.to_str() == Some("/tmp/y.sock"))
        );
        assert_eq!(b.workers, Some(3));
        let s = &b.cfg.server;
        assert_eq!(s.threads, 4);
        assert_eq!(s.timeout, Some(Duration::from_secs(7)));
        assert_eq!(s.keep_alive, Some(Duration::from_secs(2)));
        assert_eq!(
            s.forwarded_allow_ips.as_deref(),
            Some(&["10.0.0.0/8".to_string()][..])
        );
        assert_eq!(
            s.log_choices.access_log.as_ref().unwrap().0,
            "/tmp/access.log"
        );
        assert_eq!(s.log_choices.error_log.as_ref().unwrap().0, "-");
        assert_eq!(s.log_choices.log_level.unwrap().0, log::LevelFilter::Info);
        assert_eq!(b.cfg.graceful_timeout, Duration::from_secs(9));
        assert_eq!((b.cfg.max_requests, b.cfg.max_requests_jitter), (100, 10));
        assert_eq!(b.user.as_deref(), Some("nobody"));
        assert_eq!(b.group.as_deref(), Some("nogroup"));
        assert_eq!(b.cfg.max_worker_memory, 200 << 20);
        assert_eq!(b.cfg.max_worker_age, Some(Duration::from_secs(3600)));
        // The worker's server gets what the supervisor carries.
        let server = s.apply(ServerBuilder::new()).config_text();
        for row in [
            "threads             = 4 ",
            "timeout             = 7s ",
            "keep_alive          = 2s ",
            "forwarded_allow_ips = 10.0.0.0/8 ",
            "access_log          = /tmp/access.log ",
        ] {
            assert!(server.contains(row), "{row:?} in\n{server}");
        }
        let text = b.config_text();
        // The TLS files: `tls_variables_set_the_files_in_process_mode`.
        for var in crate::settings::VARIABLES
            .iter()
            .filter(|v| **v != "PORT" && !crate::settings::TLS_VARIABLES.contains(v))
        {
            assert!(
                text.contains(&format!("(environment {var})")),
                "{var} in\n{text}"
            );
        }
    }

    #[cfg(feature = "tls")]
    #[test]
    fn tls_variables_set_the_files_in_process_mode() {
        let b = Supervisor::builder().with_settings(&env(crate::settings::testing::TLS_ENV));
        assert!(b.settings_error.is_none());
        let text = b.config_text();
        crate::settings::testing::assert_tls_files_from_env(&text);
        // The files are read when the supervisor builds: these do not exist.
        let err = b.bind("127.0.0.1:0").build().unwrap_err().to_string();
        assert!(
            err.contains("`PREFORK_CERTFILE` = /etc/app/cert.pem: no such file"),
            "{err}"
        );
    }

    #[test]
    fn defaults_are_one_process_per_core_and_two_threads() {
        let b = Supervisor::builder();
        assert_eq!(b.cfg.server.threads, 2);
        let text = b.config_text();
        let line = |name: &str| {
            text.lines()
                .find(|l| l.starts_with(&format!("{name} ")))
                .unwrap_or_else(|| panic!("no {name} in\n{text}"))
                .to_string()
        };
        assert!(line("threads").contains("= 2 (per process)"), "{text}");
        assert!(line("timeout").contains("30s"), "{text}");
        if std::env::var_os("WEB_CONCURRENCY").is_none() {
            let cores = crate::settings::cores().min(MAX_WORKERS);
            assert!(
                line("processes").contains(&format!("= {cores} (the core count)")),
                "{text}"
            );
        }
    }

    #[test]
    fn later_calls_win_and_refusals_name_the_variable() {
        let vars = env(&[
            ("PORT", "8080"),
            ("WEB_CONCURRENCY", "3"),
            ("PREFORK_TIMEOUT", "5"),
        ]);
        let b = Supervisor::builder()
            .with_settings(&vars)
            .bind("127.0.0.1:0")
            .workers(2)
            .timeout(Duration::from_secs(1));
        assert_eq!(b.binds.len(), 1);
        assert!(matches!(&b.binds[0], Bind::Tcp(a) if a.ip().is_loopback()));
        assert_eq!(b.workers, Some(2));
        assert_eq!(b.cfg.server.timeout, Some(Duration::from_secs(1)));
        // The environment after the code: the environment's values.
        let b = Supervisor::builder()
            .bind("127.0.0.1:0")
            .workers(2)
            .with_settings(&vars);
        assert!(matches!(&b.binds[..], [Bind::Tcp(a)] if a.to_string() == "0.0.0.0:8080"));
        assert_eq!(b.workers, Some(3));

        for (var, value, allowed) in [
            ("WEB_CONCURRENCY", "0", "processes, 1..=256"),
            ("WEB_CONCURRENCY", "300", "1..=256"),
            ("PORT", "99999", "1..=65535 (0: any free port)"),
            ("PREFORK_GRACEFUL_TIMEOUT", "0", "100ms..=24h"),
        ] {
            let s = Settings::from_lookup(|name| (name == var).then(|| value.to_string()));
            let err = Supervisor::builder()
                .bind("127.0.0.1:0")
                .with_settings(&s)
                .check(|| Ok::<_, String>(|_env: &mut crate::prefork::WorkerEnv| 0))
                .unwrap_err()
                .to_string();
            assert!(
                err.starts_with(&format!("invalid `{var}` = \"{value}\"")),
                "{err}"
            );
            assert!(err.contains(allowed), "{err}");
        }
        // The code's out-of-range values are named by their field.
        let err = Supervisor::builder()
            .bind("127.0.0.1:0")
            .threads(0)
            .build()
            .unwrap_err();
        assert!(err.to_string().contains("`threads`"), "{err}");
        let err = Supervisor::builder()
            .bind("127.0.0.1:0")
            .forwarded_allow_ips(["nginx"])
            .build()
            .unwrap_err();
        assert!(err.to_string().contains("forwarded_allow_ips"), "{err}");
    }

    #[test]
    fn a_bad_address_is_not_blamed_on_another_process() {
        let err = Supervisor::builder()
            .bind("127.0.0.1:99999")
            .build()
            .unwrap_err();
        let text = err.to_string();
        assert!(
            matches!(err, crate::prefork::StartError::Address { .. }),
            "{text}"
        );
        assert!(text.contains("1..=65535 (0: any free port)"), "{text}");
        assert!(!text.contains("stop"), "{text}");
        // A port in use does name the other process.
        let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = held.local_addr().unwrap();
        let err = Supervisor::builder()
            .bind(addr.to_string())
            .build()
            .unwrap_err()
            .to_string();
        assert!(err.contains("another process holds it"), "{err}");
    }
}
