//! TLS in process mode (feature `tls`): [`SupervisorBuilder::certfile`] and
//! [`SupervisorBuilder::keyfile`]. The master reads the files when it builds (a bad one stops
//! the start, by its name) and again at each SIGHUP (`http::tls::reload_current`); each worker
//! serves what the master held when it forked it, in both fronts (`serve_http`/`serve_router`
//! and `serve_service`).

use std::path::Path;

use super::builder::SupervisorBuilder;
use crate::settings::Source;
use crate::BuildError;

impl SupervisorBuilder {
    /// Serve HTTPS in every worker process with this PEM certificate chain, gunicorn's
    /// `--certfile` (`PREFORK_CERTFILE`); needs [`keyfile`](Self::keyfile) too. Feature `tls`.
    ///
    /// Both fronts: the HTTP server of [`serve_http`](crate::prefork::Supervisor::serve_http) /
    /// `serve_router`, and the tower mode's hyper (`serve_service`, with `tower`; ALPN offers
    /// `h2` too when [`http2_prior_knowledge`](crate::prefork::ServiceConfig) is on).
    ///
    /// **Renewals.** [`build`](Self::build) reads both files (a missing, unreadable or bad one
    /// is refused naming the file, what was wrong and how to make one). Each **SIGHUP** reads
    /// them anew in the master before the new workers are forked: replace the files (certbot's
    /// `deploy-hook`, cert-manager's secret update) and send HUP (`systemctl reload`), and the
    /// new certificate is served with no connection refused. A bad file at a HUP does not stop
    /// the server: the new workers keep the certificate read before, and an error line names the
    /// file and the fix.
    ///
    /// ```no_run
    /// use prefork_pool::http::Router;
    /// use prefork_pool::prefork::Supervisor;
    ///
    /// let status = Supervisor::builder()
    ///     .bind("0.0.0.0:443")
    ///     .certfile("/etc/letsencrypt/live/example.com/fullchain.pem")
    ///     .keyfile("/etc/letsencrypt/live/example.com/privkey.pem")
    ///     .with_env()
    ///     .serve_router(|server| server, || Ok::<_, String>(Router::new()));
    /// std::process::exit(status);
    /// ```
    ///
    /// A missing file stops the start:
    ///
    /// ```
    /// use prefork_pool::prefork::Supervisor;
    ///
    /// let err = Supervisor::builder()
    ///     .bind("127.0.0.1:0")
    ///     .certfile("/nonexistent/cert.pem")
    ///     .keyfile("/nonexistent/key.pem")
    ///     .build()
    ///     .unwrap_err();
    /// assert!(err.to_string().contains("/nonexistent/cert.pem: no such file"), "{err}");
    /// ```
    #[cfg_attr(docsrs, doc(cfg(feature = "tls")))]
    pub fn certfile(mut self, path: impl AsRef<Path>) -> Self {
        self.cfg.server.tls.cert = Some((path.as_ref().to_path_buf(), Source::Code));
        self
    }

    /// The certificate's PEM private key (unencrypted), gunicorn's `--keyfile`
    /// (`PREFORK_KEYFILE`). See [`certfile`](Self::certfile). Feature `tls`.
    ///
    /// ```
    /// use prefork_pool::prefork::Supervisor;
    ///
    /// let err = Supervisor::builder().bind("127.0.0.1:0").keyfile("key.pem").build().unwrap_err();
    /// assert!(err.to_string().contains("invalid `certfile` = not set"), "{err}");
    /// ```
    #[cfg_attr(docsrs, doc(cfg(feature = "tls")))]
    pub fn keyfile(mut self, path: impl AsRef<Path>) -> Self {
        self.cfg.server.tls.key = Some((path.as_ref().to_path_buf(), Source::Code));
        self
    }

    /// Reads the TLS files (if any) for the workers to be forked: called by `validate`.
    pub(super) fn load_tls(&mut self) -> Result<(), BuildError> {
        let files = &self.cfg.server.tls;
        let loaded = files.load()?;
        crate::http::tls::set_current(files, loaded);
        Ok(())
    }
}
