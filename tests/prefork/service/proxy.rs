//! The tower mode behind a proxy: the twin of the HTTP server's test behind a real nginx, and the
//! PROXY protocol (`ServiceConfig::proxy_protocol`).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use prefork_pool::http::{PeerAddr, SocketPeer};
use prefork_pool::prefork::ServiceBody;
use prefork_pool::prefork::ServiceConfig;

use crate::helpers::*;
use crate::service::ops::{exchange, service_master, text, ConnectInfo, ServiceFn};

/// The twin of the HTTP server's test behind a real nginx (`tests/http/operators/nginx.rs`, the same nginx
/// configuration and client): with a kept-alive upstream and with nginx's default connection per
/// request, the app and the access log see the client nginx names (`PeerAddr`, `%(h)s`), the
/// `SocketPeer` is nginx; a client's own `X-Forwarded-For`, left of nginx's, is not believed.
pub fn behind_nginx() -> Result<(), String> {
    use crate::nginx_process::{self, proxy_config, through, CLIENT_IP};
    let Some(bin) = crate::tools::tool_or_skip(&crate::tools::NGINX)? else {
        return Ok(());
    };
    let echo = ServiceFn::new(|req: http::Request<ServiceBody>| async move {
        let h = |n: &str| {
            req.headers()
                .get(n)
                .map_or("-".to_string(), |v| v.to_str().unwrap_or("?").to_string())
        };
        text(format!(
            "peer={} socket={} xff={} {:?} conn={}",
            req.extensions().get::<PeerAddr>().map_or("?", |p| &*p.0),
            req.extensions().get::<SocketPeer>().map_or("?", |p| &*p.0),
            h("x-forwarded-for"),
            req.version(),
            h("connection"),
        ))
    });
    let mut m = start_master(
        "service-nginx",
        |_| {},
        |b, l| b.listener(l).workers(1),
        move |b| {
            b.serve_service(
                ServiceConfig::new()
                    .threads(1)
                    .access_log_format("nginx-test %(h)s %(U)s"),
                move || Ok::<_, String>(echo.clone()),
            )
        },
    );
    let result = (|| {
        m.wait_log("1 worker(s) ready", LONG)?;
        let nginx = nginx_process::start(&bin, |dir, port| proxy_config(dir, port, m.addr))?;
        for i in 0..3 {
            let (status, body) = through(&nginx, &format!("/ka/{i}"), "");
            let want = format!("peer={CLIENT_IP} socket=127.0.0.1 xff={CLIENT_IP} HTTP/1.1 conn=-");
            ensure(status == 200 && body == want, || {
                format!("/ka/{i}: {status} {body:?}, not {want:?}")
            })?;
            let (status, body) = through(&nginx, &format!("/direct/{i}"), "");
            let want =
                format!("peer={CLIENT_IP} socket=127.0.0.1 xff={CLIENT_IP} HTTP/1.0 conn=close");
            ensure(status == 200 && body == want, || {
                format!("/direct/{i}: {status} {body:?}, not {want:?}")
            })?;
        }
        let (_, body) = through(&nginx, "/ka/spoofed-xff", "X-Forwarded-For: 6.6.6.6\r\n");
        let want = format!("peer={CLIENT_IP} socket=127.0.0.1 xff=6.6.6.6, {CLIENT_IP} ");
        ensure(body.starts_with(&want), || {
            format!("a spoofed XFF: {body:?}")
        })?;
        for path in ["/ka/0", "/direct/2", "/ka/spoofed-xff"] {
            m.wait_log(&format!("nginx-test {CLIENT_IP} {path}"), LONG)?;
        }
        drop(nginx);
        m.signal(libc::SIGTERM);
        let code = m.wait_exit(LONG)?;
        ensure(code == 0, || format!("exit status {code}"))
    })();
    finish(&mut m, result)
}

/// The PROXY protocol: a v1 header's source is the believed client (`PeerAddr`, `ConnectInfo`
/// with its port, the access log's `%(h)s`), the `SocketPeer` stays the socket's; a connection
/// without the header is closed without an answer.
pub fn proxy_protocol() -> Result<(), String> {
    let mut m = service_master(
        "service-proxy-protocol",
        1,
        |b| b,
        |c| c.proxy_protocol(true).connect_info(ConnectInfo),
    );
    let result = (|| {
        m.wait_log("1 worker(s) ready", LONG)?;
        let (s, body) = exchange(
            m.addr,
            b"PROXY TCP4 198.51.100.9 127.0.0.1 5555 80\r\nGET /peer HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
        )?;
        ensure(
            s == 200 && body.contains("198.51.100.9 Some(198.51.100.9:5555) via 127.0.0.1"),
            || format!("/peer through a PROXY header: {s} {body:?}"),
        )?;
        m.wait_log("198.51.100.9 - - [", LONG)?;
        let mut bare = TcpStream::connect_timeout(&m.addr, Duration::from_secs(5))
            .map_err(|e| e.to_string())?;
        bare.set_read_timeout(Some(LONG)).ok();
        bare.write_all(b"GET /peer HTTP/1.1\r\nHost: t\r\n\r\n")
            .map_err(|e| e.to_string())?;
        let mut out = Vec::new();
        let closed = bare.read_to_end(&mut out).is_ok();
        ensure(closed && out.is_empty(), || {
            format!(
                "a connection without a PROXY header: closed {closed}, answered {:?}",
                String::from_utf8_lossy(&out)
            )
        })?;
        m.signal(libc::SIGTERM);
        let code = m.wait_exit(LONG)?;
        ensure(code == 0, || format!("exit status {code}"))
    })();
    finish(&mut m, result)
}
