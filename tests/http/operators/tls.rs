//! TLS in the crate (feature `tls`): a real client's handshake and keep-alive (curl), two
//! requests pipelined in one TLS record and a large streamed answer (a rustls client, the
//! crate's own dependency: no tool needed), a plain-HTTP client on the HTTPS port (closed, with a
//! warning naming why), and the refusals of bad files.
#![cfg(feature = "tls")]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use prefork_pool::http::types::http::StatusCode;
use prefork_pool::http::{get, Body, Router, Server, ServerHandle};

use crate::http_helpers::{lines_with, logs};
use crate::tools;

const WAIT: Duration = Duration::from_secs(5);

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/tls")
        .join(name)
}

/// 256 KiB streamed in 64 chunks of 4 KiB (each chunk's bytes its index).
const STREAM_CHUNKS: usize = 64;

/// A whole (not streamed) answer of 4 MiB: more than the socket buffers take at once.
const WHOLE: usize = 4 << 20;

fn tls_server() -> ServerHandle {
    let app = Router::new()
        .route("/hello", get(|| "hello over tls\n"))
        .route(
            "/scheme",
            get(|req: prefork_pool::http::HttpRequest| {
                req.extensions()
                    .get::<prefork_pool::http::ForwardedProto>()
                    .map_or("none".to_string(), |p| p.0.to_string())
            }),
        )
        .route(
            "/big",
            get(|| Body::stream((0..STREAM_CHUNKS).map(|i| Ok(vec![i as u8; 4096])))),
        )
        .route("/whole", get(|| vec![7u8; WHOLE]))
        .fallback(|| (StatusCode::NOT_FOUND, "no such page\n"));
    Server::builder()
        .bind("127.0.0.1:0")
        .pool(|p| p.workers(2))
        .certfile(fixture("cert1.pem"))
        .keyfile(fixture("key1.pem"))
        .serve_router(app)
        .expect("a TLS server")
}

/// A rustls client that trusts the fixtures' CA, connected to `addr` as `localhost`.
fn client(addr: SocketAddr) -> rustls::StreamOwned<rustls::ClientConnection, TcpStream> {
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pki_types::CertificateDer::pem_file_iter(fixture("ca.pem")).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    let conn = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
    let sock = TcpStream::connect(addr).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    rustls::StreamOwned::new(conn, sock)
}

/// Reads until the peer closes (a clean close_notify or the socket's end).
fn read_to_close(s: &mut impl Read) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = [0u8; 16384];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return out,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return out,
            Err(e) => panic!("reading the TLS answer: {e} (after {} bytes)", out.len()),
        }
    }
}

#[test]
fn curl_gets_two_answers_over_one_kept_alive_tls_connection() {
    let Some(curl) = tools::require(&tools::CURL) else {
        return;
    };
    let s = tls_server();
    let port = s.local_addrs()[0].port();
    let url = format!("https://localhost:{port}/hello");
    let out = std::process::Command::new(curl)
        .args(["-sS", "--max-time", "20", "--cacert"])
        .arg(fixture("ca.pem"))
        .args(["--resolve", &format!("localhost:{port}:127.0.0.1")])
        .args(["-w", "[%{http_code} %{num_connects}]\n"])
        .args([&url, &url])
        .output()
        .expect("run curl");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "curl failed: {text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The second request reused the first one's connection: no new connect, no new handshake.
    assert_eq!(text, "hello over tls\n[200 1]\nhello over tls\n[200 0]\n");
    s.shutdown(WAIT);
}

#[test]
fn two_requests_pipelined_in_one_tls_record_are_both_answered() {
    let s = tls_server();
    let mut c = client(s.local_addrs()[0]);
    // One write, one record: after the first request is read, the second is already decrypted
    // and held by rustls while the socket has nothing more (no epoll event will come for it).
    c.write_all(
        b"GET /hello HTTP/1.1\r\nHost: t\r\n\r\nGET /nope HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    c.flush().unwrap();
    let text = String::from_utf8(read_to_close(&mut c)).unwrap();
    assert_eq!(text.matches("HTTP/1.1 200 OK").count(), 1, "{text}");
    assert!(text.contains("hello over tls\n"), "{text}");
    assert!(text.contains("HTTP/1.1 404"), "{text}");
    assert!(text.ends_with("no such page\n"), "{text}");
    s.shutdown(WAIT);
}

#[test]
fn the_handler_sees_that_the_client_used_https() {
    let s = tls_server();
    let mut c = client(s.local_addrs()[0]);
    c.write_all(b"GET /scheme HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .unwrap();
    let answer = String::from_utf8(read_to_close(&mut c)).unwrap();
    assert!(answer.ends_with("\r\n\r\nhttps"), "{answer}");
    s.shutdown(WAIT);
}

#[test]
fn a_large_streamed_answer_arrives_whole_over_tls() {
    let s = tls_server();
    let mut c = client(s.local_addrs()[0]);
    c.write_all(b"GET /big HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .unwrap();
    c.flush().unwrap();
    // Read slowly at first, so that the socket fills and the worker waits for room.
    std::thread::sleep(Duration::from_millis(300));
    let raw = read_to_close(&mut c);
    let head_end = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    let head = String::from_utf8_lossy(&raw[..head_end]).to_string();
    assert!(head.starts_with("HTTP/1.1 200 OK"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("transfer-encoding: chunked"),
        "{head}"
    );
    // Unchunk and check every byte.
    let mut body = Vec::new();
    let mut rest = &raw[head_end..];
    loop {
        let line_end = rest.windows(2).position(|w| w == b"\r\n").unwrap();
        let size =
            usize::from_str_radix(std::str::from_utf8(&rest[..line_end]).unwrap(), 16).unwrap();
        rest = &rest[line_end + 2..];
        if size == 0 {
            break;
        }
        body.extend_from_slice(&rest[..size]);
        rest = &rest[size + 2..];
    }
    assert_eq!(body.len(), STREAM_CHUNKS * 4096);
    for (i, chunk) in body.chunks(4096).enumerate() {
        assert!(chunk.iter().all(|&b| b == i as u8), "chunk {i} is wrong");
    }
    assert_eq!(s.streams().completed, 1);
    s.shutdown(WAIT);
}

#[test]
fn a_large_whole_answer_arrives_whole_over_tls_to_a_slow_reader() {
    let s = tls_server();
    let mut c = client(s.local_addrs()[0]);
    c.write_all(b"GET /whole HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .unwrap();
    c.flush().unwrap();
    // The socket fills: the rest of the answer (and its ciphertext) waits for room to write.
    std::thread::sleep(Duration::from_millis(300));
    let raw = read_to_close(&mut c);
    let head_end = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    let head = String::from_utf8_lossy(&raw[..head_end]).to_string();
    assert!(head.contains(&format!("content-length: {WHOLE}")), "{head}");
    assert_eq!(raw.len() - head_end, WHOLE, "{head}");
    assert!(raw[head_end..].iter().all(|&b| b == 7));
    s.shutdown(WAIT);
}

#[test]
fn a_plain_http_request_on_the_tls_port_is_closed_with_a_warning_naming_why() {
    logs();
    let s = tls_server();
    let mut sock = TcpStream::connect(s.local_addrs()[0]).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    sock.write_all(b"GET /hello HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    let mut got = Vec::new();
    // The server answers with a TLS alert at most, then closes: never an HTTP answer.
    let _ = sock.read_to_end(&mut got);
    assert!(
        !String::from_utf8_lossy(&got).contains("HTTP/1.1"),
        "{got:?}"
    );
    let lines = lines_with(&["closed a TLS connection from 127.0.0.1", "https://"]);
    assert_eq!(lines.len(), 1, "{lines:?}");
    // The server still serves TLS clients.
    let mut c = client(s.local_addrs()[0]);
    c.write_all(b"GET /hello HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .unwrap();
    assert!(String::from_utf8(read_to_close(&mut c))
        .unwrap()
        .ends_with("hello over tls\n"));
    s.shutdown(WAIT);
}

#[test]
fn bad_tls_files_are_refused_naming_the_file_and_the_fix() {
    let serve = |cert: PathBuf, key: PathBuf| {
        Server::builder()
            .bind("127.0.0.1:0")
            .certfile(cert)
            .keyfile(key)
            .serve(|_req, _ctx| "")
            .unwrap_err()
            .to_string()
    };
    let missing = serve(fixture("nope.pem"), fixture("key1.pem"));
    assert!(
        missing.contains("`certfile` = ") && missing.contains("nope.pem: no such file"),
        "{missing}"
    );
    assert!(missing.contains("openssl req -x509"), "{missing}");
    // Swapped: the key file given as the certificate.
    let swapped = serve(fixture("key1.pem"), fixture("cert1.pem"));
    assert!(
        swapped.contains("holds a private key, not a certificate"),
        "{swapped}"
    );
    // The other pair's key.
    let mismatch = serve(fixture("cert1.pem"), fixture("key2.pem"));
    assert!(mismatch.starts_with("invalid `keyfile` = "), "{mismatch}");
    assert!(
        mismatch.contains("the key must be the one the certificate was issued for"),
        "{mismatch}"
    );
    // Only one of the two, from the environment: refused by the variable's... pair.
    let env = prefork_pool::Settings::from_lookup(|name| {
        (name == "PREFORK_CERTFILE").then(|| fixture("cert1.pem").display().to_string())
    });
    let err = Server::builder()
        .bind("127.0.0.1:0")
        .with_settings(&env)
        .serve(|_req, _ctx| "")
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("invalid `keyfile` = not set: TLS needs both files"),
        "{err}"
    );
}
