//! The grpc_health template (`examples/grpc_health.rs`) under the pre-fork supervisor, as a user
//! runs it: 2 worker processes serve HTTP/1.1 and h2c on one listener. tonic's client calls
//! `grpc.health.v1.Health/Check` over h2c (prior knowledge): `SERVING` for the whole server
//! (`""`), `NOT_FOUND` for a service nobody reported; on the same port a plain HTTP/1.1 `GET /`
//! answers `{"worker_pid": N}` (a worker, not the master), `/readyz` is the server's own, an
//! unknown path 404; more calls on the same HTTP/2 connection and on new ones; SIGTERM drains
//! and the master exits 0.
//!
//! No libtest harness: this binary re-runs itself as the server (the supervisor's master must
//! be a process without threads), and the test talks to it over TCP.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

#[path = "support/master.rs"]
mod master;

#[path = "../examples/grpc_health.rs"]
#[allow(dead_code)]
mod app;

const ROLE: &str = "GRPC_HEALTH_ROLE";

/// The server: the template's app and config, 2 worker processes on a free port (printed).
fn server() -> i32 {
    match master::on_free_port(2) {
        Ok(supervisor) => supervisor.serve_service(app::config(), || Ok::<_, String>(app::app())),
        Err(code) => code,
    }
}

/// One HTTP/1.1 request on its own connection: the status, the whole answer and the body.
fn http1(addr: SocketAddr, path: &str) -> (u16, String, String) {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").as_bytes())
        .expect("write");
    let mut out = String::new();
    s.read_to_string(&mut out).expect("read the answer");
    let status = out
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {out:?}"));
    let body = out
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .trim()
        .to_string();
    (status, out, body)
}

/// A gRPC client of `addr` on one h2c connection (tonic's `Channel` speaks HTTP/2 with prior
/// knowledge to an `http://` address).
async fn client(addr: SocketAddr) -> HealthClient<tonic::transport::Channel> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .expect("an endpoint")
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(20))
        .connect()
        .await
        .expect("an h2c connection");
    HealthClient::new(channel)
}

/// `Check` of `service`: the status it answered, or the gRPC error.
async fn check(
    client: &mut HealthClient<tonic::transport::Channel>,
    service: &str,
) -> Result<i32, tonic::Status> {
    let answer = client
        .check(HealthCheckRequest {
            service: service.to_string(),
        })
        .await?;
    Ok(answer.into_inner().status)
}

fn main() {
    if std::env::var(ROLE).is_ok() {
        std::process::exit(server());
    }
    let (mut child, addr) = master::start(ROLE);
    let master = child.id();
    let outcome = std::panic::catch_unwind(|| {
        // The workers are up once one answers.
        let (status, _, body) = master::until_up(|| http1(addr, "/"));
        // HTTP/1.1 on the port the gRPC service is on.
        let json: serde_json::Value = serde_json::from_str(&body).expect("JSON");
        let pid = json["worker_pid"].as_u64().expect("worker_pid");
        assert!(
            status == 200 && pid != u64::from(master),
            "GET /: {status} {body}"
        );
        let (status, _, body) = http1(addr, "/readyz");
        assert_eq!((status, body.as_str()), (200, "ready"));
        let (status, _, _) = http1(addr, "/nope");
        assert_eq!(status, 404, "an unknown path");

        // gRPC over h2c, on the same port.
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("the client's runtime");
        rt.block_on(async {
            let mut grpc = client(addr).await;
            let serving = check(&mut grpc, "").await.expect("Check(\"\")");
            assert_eq!(
                serving,
                ServingStatus::Serving as i32,
                "the whole server's health"
            );
            // A second call on the same HTTP/2 connection.
            let unknown = check(&mut grpc, "no.such.Service").await;
            assert_eq!(
                unknown.map_err(|s| s.code()),
                Err(tonic::Code::NotFound),
                "a service nobody reported"
            );
            // Calls on new connections, dealt out to both worker processes by the gate.
            for i in 0..6 {
                let serving = check(&mut client(addr).await, "").await;
                assert_eq!(
                    serving.map_err(|s| s.code()),
                    Ok(ServingStatus::Serving as i32),
                    "Check on new connection {i}"
                );
            }
        });
        // And HTTP/1.1 again, beside the HTTP/2 connections.
        let (status, _, body) = http1(addr, "/");
        assert!(
            status == 200 && body.contains("worker_pid"),
            "GET /: {status} {body}"
        );
    });
    // SIGTERM drains; the master exits 0.
    let (term, exit) = master::term_and_wait(&mut child, None);
    if let Err(e) = outcome {
        std::panic::resume_unwind(e);
    }
    assert!(term.is_ok_and(|s| s.success()), "kill -TERM the server");
    assert!(
        exit.is_some_and(|s| s.success()),
        "the master's exit after SIGTERM: {exit:?}"
    );
    println!("  grpc_health: Check over h2c and GET / over HTTP/1.1 on one port; TERM: exit 0");
}
