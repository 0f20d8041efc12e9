//! TLS in the crate (feature `tls`): the certificate and key files ([`TlsFiles`], gunicorn's
//! `--certfile`/`--keyfile`, `PREFORK_CERTFILE`/`PREFORK_KEYFILE`), read into a rustls
//! `ServerConfig` (the `ring` provider, TLS 1.2 and 1.3), each failure refused naming the file,
//! what was wrong with it and how to make a good one.
//!
//! In process mode the master reads the files before it forks the first workers, and again at
//! each SIGHUP ([`reload_current`]): the workers forked after it serve the new certificate. A bad
//! file at a HUP keeps the one in use (an error names the file and the fix); the server stays up.
//! The config the next workers get is [`current`], a process-wide slot the fork copies.

use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use rustls::ServerConfig;
use rustls_pki_types::pem::{self, PemObject};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::http::ops::rate_limit::{suppressed_note, RateLimit, WARN_INTERVAL};
use crate::settings::{Settings, Source};
use crate::BuildError;

/// The command that makes a self-signed pair for a test (a real one comes from the CA: certbot,
/// cert-manager), quoted by every refusal.
pub(crate) const MAKE_ONE: &str = "for a test, make a pair with `openssl req -x509 -newkey \
     rsa:2048 -nodes -days 365 -subj /CN=localhost -keyout key.pem -out cert.pem`; for a real \
     site, use the files your CA issued (certbot: fullchain.pem and privkey.pem)";

/// The certificate and key files a builder carries, with where each came from.
#[derive(Debug, Clone, Default)]
pub(crate) struct TlsFiles {
    pub(crate) cert: Option<(PathBuf, Source)>,
    pub(crate) key: Option<(PathBuf, Source)>,
}

impl TlsFiles {
    /// Take what `settings` sets (`PREFORK_CERTFILE`, `PREFORK_KEYFILE`).
    pub(crate) fn apply(&mut self, settings: &Settings) {
        if let Some((p, var)) = &settings.certfile {
            self.cert = Some((p.clone(), Source::Env(var)));
        }
        if let Some((p, var)) = &settings.keyfile {
            self.key = Some((p.clone(), Source::Env(var)));
        }
    }

    /// The field a refusal names: the variable when the environment set it, else the builder's.
    fn field(set: &Option<(PathBuf, Source)>, code: &'static str) -> &'static str {
        match set {
            Some((_, Source::Env(var))) => var,
            _ => code,
        }
    }

    /// The server config these files make, `None` when neither is set; refused when only one
    /// is, or a file cannot be read or holds no usable certificate or key.
    pub(crate) fn load(&self) -> Result<Option<Arc<ServerConfig>>, BuildError> {
        match (&self.cert, &self.key) {
            (None, None) => Ok(None),
            (Some((c, _)), Some((k, _))) => load(c, k, Self::field(&self.cert, "certfile"), {
                Self::field(&self.key, "keyfile")
            })
            .map(|c| Some(Arc::new(c))),
            (Some((c, _)), None) => Err(BuildError::new(
                "keyfile",
                "not set",
                format!(
                    "TLS needs both files: the certificate is set ({}) but not its private key; \
                     set `keyfile` (PREFORK_KEYFILE) too, or neither for plain HTTP",
                    c.display()
                ),
            )),
            (None, Some((k, _))) => Err(BuildError::new(
                "certfile",
                "not set",
                format!(
                    "TLS needs both files: the private key is set ({}) but not its certificate; \
                     set `certfile` (PREFORK_CERTFILE) too, or neither for plain HTTP",
                    k.display()
                ),
            )),
        }
    }

    /// The two rows of `print_config`.
    pub(crate) fn rows(&self) -> [(&'static str, String, Source); 2] {
        let row = |f: &Option<(PathBuf, Source)>| {
            f.as_ref().map_or(
                ("not set: plain HTTP".to_string(), Source::Default),
                |(p, s)| (p.display().to_string(), *s),
            )
        };
        let (c, cs) = row(&self.cert);
        let (k, ks) = row(&self.key);
        [("certfile", c, cs), ("keyfile", k, ks)]
    }
}

/// Reads the certificate chain and the key into a server config (HTTP/1.1 offered by ALPN).
pub(crate) fn load(
    cert: &Path,
    key: &Path,
    cert_field: &'static str,
    key_field: &'static str,
) -> Result<ServerConfig, BuildError> {
    let refuse = |field, path: &Path, why: String| {
        BuildError::new(field, path.display(), format!("{why}; {MAKE_ONE}"))
    };
    let read = |field, path: &Path| {
        std::fs::read(path).map_err(|e| {
            let why = match e.kind() {
                std::io::ErrorKind::NotFound => "no such file".to_string(),
                std::io::ErrorKind::PermissionDenied => format!(
                    "not readable by this process ({e}): give its user read access (the key \
                     file: mode 0600, owned by that user)"
                ),
                _ => format!("cannot be read: {e}"),
            };
            refuse(field, path, why)
        })
    };
    let cert_pem = read(cert_field, cert)?;
    let certs = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| {
            refuse(
                cert_field,
                cert,
                format!("not a PEM certificate file ({e})"),
            )
        })?;
    if certs.is_empty() {
        let why = if PrivateKeyDer::from_pem_slice(&cert_pem).is_ok() {
            "holds a private key, not a certificate (are certfile and keyfile swapped?)"
        } else {
            "holds no `-----BEGIN CERTIFICATE-----` block: a PEM certificate (chain) is needed"
        };
        return Err(refuse(cert_field, cert, why.to_string()));
    }
    let key_pem = read(key_field, key)?;
    let key_der = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| {
        let why = match e {
            pem::Error::NoItemsFound if key_pem.windows(9).any(|w| w == b"ENCRYPTED") => {
                "holds an encrypted private key: the server cannot ask for its passphrase; \
                 decrypt it once with `openssl pkey -in KEY -out key.pem`"
                    .to_string()
            }
            pem::Error::NoItemsFound => "holds no PEM private key (`-----BEGIN PRIVATE KEY-----`, \
                 `RSA PRIVATE KEY` or `EC PRIVATE KEY`)"
                .to_string(),
            e => format!("not a PEM private key file ({e})"),
        };
        refuse(key_field, key, why)
    })?;
    // Deprecated in rustls 0.23.48 for its lack of post-quantum key exchange, which needs the
    // aws-lc-rs provider (cmake and a C toolchain to build); ring is the provider chosen here.
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| refuse(cert_field, cert, format!("no TLS version to offer ({e})")))?
        .with_no_client_auth()
        .with_single_cert(certs, key_der)
        .map_err(|e| {
            refuse(
                key_field,
                key,
                format!(
                    "not usable with the certificate {} ({e}): the key must be the one the \
                     certificate was issued for",
                    cert.display()
                ),
            )
        })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

#[cfg(feature = "prefork")]
/// The config the workers forked next serve (process mode), with the files it came from.
static CURRENT: std::sync::Mutex<Option<(Arc<ServerConfig>, PathBuf, PathBuf)>> =
    std::sync::Mutex::new(None);

#[cfg(feature = "prefork")]
/// Sets the config for the workers forked from now on (`None`: plain HTTP).
pub(crate) fn set_current(files: &TlsFiles, config: Option<Arc<ServerConfig>>) {
    let mut slot = CURRENT.lock().unwrap_or_else(|e| e.into_inner());
    *slot = match (config, &files.cert, &files.key) {
        (Some(c), Some((cp, _)), Some((kp, _))) => Some((c, cp.clone(), kp.clone())),
        _ => None,
    };
}

#[cfg(feature = "prefork")]
/// The config set by [`set_current`], if any.
pub(crate) fn current() -> Option<Arc<ServerConfig>> {
    let slot = CURRENT.lock().unwrap_or_else(|e| e.into_inner());
    slot.as_ref().map(|(c, _, _)| c.clone())
}

#[cfg(feature = "prefork")]
/// SIGHUP in the master: reads the files of the current config anew. A renewed certificate is
/// served by the workers forked after this; a file that is now missing or bad keeps the one in
/// use, with an error naming the file and the fix.
pub(crate) fn reload_current() {
    let mut slot = CURRENT.lock().unwrap_or_else(|e| e.into_inner());
    let Some((_, cert, key)) = slot.as_ref() else {
        return;
    };
    match load(cert, key, "certfile", "keyfile") {
        Ok(config) => {
            log::info!(
                "SIGHUP: TLS certificate {} and key {} read anew: the new workers serve them",
                cert.display(),
                key.display()
            );
            let (cert, key) = (cert.clone(), key.clone());
            *slot = Some((Arc::new(config), cert, key));
        }
        Err(e) => log::error!(
            "SIGHUP: the TLS files were not reloaded, the new workers serve the certificate read \
             before (fix the file, then send SIGHUP again): {e}"
        ),
    }
}

static REFUSED: RateLimit = RateLimit::new(WARN_INTERVAL);

/// The warning for a connection closed because its TLS failed (a plain-HTTP client on the
/// HTTPS port, an old TLS version, a bad hello): at most one line per 10 s, naming the peer and
/// rustls's reason. Both fronts log it.
pub(crate) fn log_handshake_failure(peer: Option<IpAddr>, e: &dyn fmt::Display) {
    let Some(suppressed) = REFUSED.allow(Instant::now()) else {
        return;
    };
    let peer = peer.map_or_else(
        || "an unknown peer".to_string(),
        |ip| ip.to_canonical().to_string(),
    );
    log::warn!(
        target: "prefork_pool::http",
        "closed a TLS connection from {peer}: {e} (a client that speaks plain HTTP or an \
         unsupported TLS version to this HTTPS port; it must use https:// and TLS 1.2 or \
         later){}",
        suppressed_note(suppressed)
    );
}

impl super::ServerBuilder {
    /// Serve HTTPS with this PEM certificate (the chain: the server's certificate first, then
    /// the intermediates, as certbot's `fullchain.pem`), gunicorn's `--certfile`
    /// (`PREFORK_CERTFILE`). Needs [`keyfile`](Self::keyfile) too: one without the other is
    /// refused by name. Feature `tls`.
    ///
    /// [`serve`](Self::serve) reads both files and refuses to start when one is missing,
    /// unreadable, not PEM, or when the key is not the certificate's, naming the file, what was
    /// wrong and how to make a good one. TLS 1.2 and 1.3 (rustls, the `ring` provider), ALPN
    /// `http/1.1`; TCP listeners only (a Unix socket stays plain). With no certificate nothing
    /// changes: plain HTTP, no TLS code on the way. A thread-mode server reads the files once;
    /// in process mode ([`SupervisorBuilder::certfile`](crate::prefork::SupervisorBuilder::certfile))
    /// a SIGHUP reads them anew.
    ///
    /// TLS in the crate or at a proxy: see `deploy/README.md` (a proxy that terminates TLS
    /// also handles HTTP/2 to clients, OCSP stapling and certificate automation; TLS here saves
    /// the hop when the process faces clients itself).
    ///
    /// ```no_run
    /// use prefork_pool::http::Server;
    ///
    /// let server = Server::builder()
    ///     .bind("0.0.0.0:8443")
    ///     .certfile("/etc/letsencrypt/live/example.com/fullchain.pem")
    ///     .keyfile("/etc/letsencrypt/live/example.com/privkey.pem")
    ///     .serve(|_req, _ctx| "hello over TLS\n")
    ///     .unwrap();
    /// # server.shutdown(std::time::Duration::from_secs(1));
    /// ```
    ///
    /// A missing file is refused before anything is bound:
    ///
    /// ```
    /// use prefork_pool::http::Server;
    ///
    /// let err = Server::builder()
    ///     .bind("127.0.0.1:0")
    ///     .certfile("/nonexistent/cert.pem")
    ///     .keyfile("/nonexistent/key.pem")
    ///     .serve(|_req, _ctx| "")
    ///     .unwrap_err();
    /// let text = err.to_string();
    /// assert!(text.contains("`certfile` = /nonexistent/cert.pem: no such file"), "{text}");
    /// assert!(text.contains("openssl req -x509"), "{text}");
    /// ```
    #[cfg_attr(docsrs, doc(cfg(feature = "tls")))]
    pub fn certfile(mut self, path: impl AsRef<Path>) -> Self {
        self.tls.cert = Some((path.as_ref().to_path_buf(), Source::Code));
        self
    }

    /// The certificate's PEM private key (PKCS#8, PKCS#1 or SEC1, unencrypted), gunicorn's
    /// `--keyfile` (`PREFORK_KEYFILE`). See [`certfile`](Self::certfile). Feature `tls`.
    ///
    /// ```
    /// use prefork_pool::http::Server;
    ///
    /// // Only one of the two: refused by name.
    /// let err = Server::builder()
    ///     .bind("127.0.0.1:0")
    ///     .keyfile("key.pem")
    ///     .serve(|_req, _ctx| "")
    ///     .unwrap_err();
    /// assert!(err.to_string().starts_with("invalid `certfile` = not set"), "{err}");
    /// ```
    #[cfg_attr(docsrs, doc(cfg(feature = "tls")))]
    pub fn keyfile(mut self, path: impl AsRef<Path>) -> Self {
        self.tls.key = Some((path.as_ref().to_path_buf(), Source::Code));
        self
    }
}
