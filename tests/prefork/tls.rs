//! TLS in process mode (feature `tls`), both fronts: the workers serve the certificate the
//! master read; a SIGHUP after the files were replaced (a renewal) serves the new one without a
//! restart; a bad file at a HUP keeps the old certificate and logs why. The client is a rustls
//! client (the crate's own dependency): it reads the certificate the server presented.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use prefork_pool::http::Router;
use prefork_pool::prefork::SupervisorBuilder;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;

use crate::helpers::*;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/tls")
        .join(name)
}

fn der(path: &Path) -> Vec<u8> {
    CertificateDer::from_pem_file(path).unwrap().to_vec()
}

/// One GET over TLS on its own connection: the answer's text and the certificate presented.
fn tls_get(addr: SocketAddr, path: &str) -> Result<(String, Vec<u8>), String> {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_file(fixture("ca.pem")).unwrap())
        .unwrap();
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    let conn = rustls::ClientConnection::new(Arc::new(config), name).map_err(|e| e.to_string())?;
    let sock =
        TcpStream::connect_timeout(&addr, Duration::from_secs(5)).map_err(|e| e.to_string())?;
    sock.set_read_timeout(Some(Duration::from_secs(20))).ok();
    let mut s = rustls::StreamOwned::new(conn, sock);
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").as_bytes())
        .map_err(|e| format!("TLS write: {e}"))?;
    let mut out = Vec::new();
    match s.read_to_end(&mut out) {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {}
        Err(e) => return Err(format!("TLS read: {e}")),
    }
    let cert = s
        .conn
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|c| c.to_vec())
        .ok_or("no certificate presented")?;
    Ok((String::from_utf8_lossy(&out).into_owned(), cert))
}

/// The files the master is given, in a folder of their own (replaced as certbot does).
fn tls_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("prefork-tls-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(fixture("cert1.pem"), dir.join("cert.pem")).unwrap();
    std::fs::copy(fixture("key1.pem"), dir.join("key.pem")).unwrap();
    dir
}

/// Replaces a file the way a renewal does: written beside it, renamed over it.
fn replace(dest: &Path, contents: &[u8]) {
    let tmp = dest.with_extension("new");
    std::fs::write(&tmp, contents).unwrap();
    std::fs::rename(&tmp, dest).unwrap();
}

/// The serve_router front: see [`hup_reloads_the_certificate`].
pub fn router_hup_reloads_the_certificate() -> Result<(), String> {
    hup_reloads_the_certificate("tls-router", |b| {
        b.serve_router(
            |s| s.access_log(false),
            || Ok::<_, String>(Router::new().route("/", prefork_pool::http::get(|| "tls ok\n"))),
        )
    })
}

/// The tower front (`serve_service`): see [`hup_reloads_the_certificate`].
#[cfg(feature = "tower")]
pub fn service_hup_reloads_the_certificate() -> Result<(), String> {
    use prefork_pool::prefork::ServiceConfig;
    hup_reloads_the_certificate("tls-service", |b| {
        b.serve_service(ServiceConfig::new().threads(2), || {
            Ok::<_, String>(crate::service::PidService)
        })
    })
}

/// 2 workers serve cert1 over TLS; the files are replaced with garbage and HUP: the server
/// stays up, still serving cert1, the log names the file; then replaced with cert2 and HUP:
/// cert2 is served, no restart (the master's pid is the same).
fn hup_reloads_the_certificate(
    name: &str,
    run: impl FnOnce(SupervisorBuilder) -> i32,
) -> Result<(), String> {
    let dir = tls_dir(name);
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let (c, k) = (cert.clone(), key.clone());
    let mut m = start_master(
        name,
        |_| {},
        move |b, l| b.listener(l).workers(2).certfile(c).keyfile(k),
        run,
    );
    let result = (|| {
        m.wait_log("2 worker(s) ready", LONG)?;
        let (text, served) = tls_get(m.addr, "/")?;
        ensure(text.starts_with("HTTP/1.1 200"), || {
            format!("answered {text:?}")
        })?;
        ensure(served == der(&fixture("cert1.pem")), || {
            "not cert1 at the start".into()
        })?;

        // A plain-HTTP client on the HTTPS port: closed without an HTTP answer, and a warning
        // names the peer and the fix.
        let mut plain = TcpStream::connect(m.addr).map_err(|e| e.to_string())?;
        plain.set_read_timeout(Some(Duration::from_secs(20))).ok();
        plain
            .write_all(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
            .map_err(|e| e.to_string())?;
        let mut got = Vec::new();
        let _ = plain.read_to_end(&mut got);
        ensure(!String::from_utf8_lossy(&got).contains("HTTP/1.1"), || {
            format!("a plain request was answered: {got:?}")
        })?;
        m.wait_log("closed a TLS connection from 127.0.0.1", LONG)?;
        ensure(m.log_text().contains("it must use https://"), || {
            "no fix named".into()
        })?;

        // A bad renewal: the server keeps the certificate it has.
        replace(&cert, b"not a certificate\n");
        m.signal(libc::SIGHUP);
        m.wait_log("the TLS files were not reloaded", LONG)?;
        m.wait_log("ready after the reload", LONG)?;
        let log = m.log_text();
        ensure(
            log.contains(&format!("{}: holds no", cert.display())),
            || format!("the error does not name the file:\n{log}"),
        )?;
        let (text, served) = tls_get(m.addr, "/")?;
        ensure(text.starts_with("HTTP/1.1 200"), || {
            format!("answered {text:?}")
        })?;
        ensure(served == der(&fixture("cert1.pem")), || {
            "not cert1 after a bad HUP".into()
        })?;

        // A good renewal.
        replace(&cert, &std::fs::read(fixture("cert2.pem")).unwrap());
        replace(&key, &std::fs::read(fixture("key2.pem")).unwrap());
        m.signal(libc::SIGHUP);
        m.wait_log("TLS certificate", LONG)?;
        let end = std::time::Instant::now() + LONG;
        while m.log_text().matches("ready after the reload").count() < 2 {
            ensure(std::time::Instant::now() < end, || {
                "no second reload".into()
            })?;
            sleep_ms(50);
        }
        // The old workers may still answer a connection for a moment: the new ones soon do all.
        let mut last = Vec::new();
        for _ in 0..100 {
            let (text, served) = tls_get(m.addr, "/")?;
            ensure(text.starts_with("HTTP/1.1 200"), || {
                format!("answered {text:?}")
            })?;
            last = served;
            if last == der(&fixture("cert2.pem")) {
                break;
            }
            sleep_ms(100);
        }
        ensure(last == der(&fixture("cert2.pem")), || {
            "cert2 not served after the HUP".into()
        })?;
        // SAFETY: kill(2) with signal 0 (a liveness check) on our own unreaped child.
        let alive = unsafe { libc::kill(m.pid, 0) } == 0;
        ensure(alive, || "the master is gone".into())?;
        Ok(())
    })();
    let _ = std::fs::remove_dir_all(&dir);
    finish(&mut m, result)
}

/// The tower front with `http2_prior_knowledge`: over TLS, curl gets HTTP/2 by ALPN (and an
/// HTTP/1.1 client still HTTP/1.1).
#[cfg(feature = "tower")]
pub fn service_h2_by_alpn() -> Result<(), String> {
    use prefork_pool::prefork::ServiceConfig;
    let Some(curl) = crate::tools::tool_or_skip(&crate::tools::CURL)? else {
        return Ok(());
    };
    let dir = tls_dir("tls-h2");
    let (c, k) = (dir.join("cert.pem"), dir.join("key.pem"));
    let mut m = start_master(
        "tls-h2",
        |_| {},
        move |b, l| b.listener(l).workers(1).certfile(c).keyfile(k),
        |b| {
            b.serve_service(
                ServiceConfig::new().threads(2).http2_prior_knowledge(true),
                || Ok::<_, String>(crate::service::PidService),
            )
        },
    );
    let result = (|| {
        m.wait_log("1 worker(s) ready", LONG)?;
        let port = m.addr.port();
        let curl_version = |flag: &str| -> Result<String, String> {
            let out = std::process::Command::new(&curl)
                .args([
                    "-sS",
                    "-o",
                    "/dev/null",
                    "--max-time",
                    "20",
                    flag,
                    "--cacert",
                ])
                .arg(fixture("ca.pem"))
                .args(["--resolve", &format!("localhost:{port}:127.0.0.1")])
                .args(["-w", "%{http_code} %{http_version}"])
                .arg(format!("https://localhost:{port}/"))
                .output()
                .map_err(|e| format!("run curl: {e}"))?;
            Ok(String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr))
        };
        let h2 = curl_version("--http2")?;
        ensure(h2 == "200 2", || format!("curl --http2 got {h2:?}"))?;
        let h1 = curl_version("--http1.1")?;
        ensure(h1 == "200 1.1", || format!("curl --http1.1 got {h1:?}"))?;
        Ok(())
    })();
    let _ = std::fs::remove_dir_all(&dir);
    finish(&mut m, result)
}
