//! Drives `examples/axum_bulkhead.rs` under concurrent load: 64 requests at once against a
//! 2-worker pool with a queue of 4, on a runtime of 2 threads. Every request is answered (200 or
//! 503 with `Retry-After`, counted by the pool as overloaded), `/slow` is 504 at the pool's
//! deadline, and `/ping` stays fast while the pool is saturated: the runtime's threads never block.

use std::future::IntoFuture;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[path = "../examples/axum_bulkhead.rs"]
#[allow(dead_code)]
mod app;

const CONCURRENT: usize = 64;
const WORKERS: usize = 2;
const QUEUE: usize = 4;
/// How long each accepted `/work` call blocks its pool worker.
const WORK_MS: u64 = 400;

/// One request on its own connection: the status and the whole answer (head and body).
async fn request(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .expect("write");
    let mut out = String::new();
    tokio::time::timeout(Duration::from_secs(30), s.read_to_string(&mut out))
        .await
        .expect("answered within 30 s")
        .expect("read the answer");
    let status = out
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {out:?}"));
    (status, out.to_lowercase())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn saturated_pool_answers_503_and_504_and_never_blocks_the_runtime() {
    let cfg = app::Config {
        workers: WORKERS,
        queue_capacity: QUEUE,
        // Room for the queue: 3 rounds of 400 ms.
        deadline: Duration::from_secs(3),
    };
    let pool = app::pool(&cfg).expect("the pool starts");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(axum::serve(listener, app::router(pool.clone())).into_future());

    // 64 blocking calls at once: 2 run, 4 wait, the rest are refused at once.
    let load: Vec<_> = (0..CONCURRENT)
        .map(|_| tokio::spawn(async move { request(addr, &format!("/work?ms={WORK_MS}")).await }))
        .collect();
    // While the pool is saturated, `/ping` is answered at once (timed per request).
    while pool.stats().busy < WORKERS {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut pings = Vec::new();
    while pool.stats().busy == WORKERS && pings.len() < 20 {
        let asked = Instant::now();
        let (status, _) = request(addr, "/ping").await;
        assert_eq!(status, 200);
        pings.push(asked.elapsed());
    }
    let mut ok = 0;
    let mut busy = 0;
    for answer in load {
        let (status, text) = answer.await.expect("client task");
        match status {
            200 => ok += 1,
            503 => {
                assert!(
                    text.contains("retry-after: 1"),
                    "a 503 without Retry-After: {text}"
                );
                busy += 1;
            }
            other => panic!("/work answered {other}: {text}"),
        }
    }
    assert_eq!(ok + busy, CONCURRENT, "every request is answered");
    assert!(
        busy > 0,
        "no 503 with {CONCURRENT} calls on {WORKERS} workers + {QUEUE} queued"
    );
    assert!(ok >= WORKERS + QUEUE, "only {ok} calls served");
    assert!(!pings.is_empty(), "the pool was never seen saturated");
    let slowest = pings.iter().max().unwrap();
    // A blocked runtime thread would hold /ping for a whole call (400 ms).
    assert!(
        *slowest < Duration::from_millis(WORK_MS / 2),
        "/ping took {slowest:?} while the pool was saturated: the runtime was blocked"
    );
    let stats = pool.stats();
    assert!(
        stats.overloaded >= busy as u64,
        "the pool counted {} refusals for {busy} 503s",
        stats.overloaded
    );

    // A call longer than the pool's deadline: 504 at the deadline, not at its end (60 s).
    let asked = Instant::now();
    let (status, text) = request(addr, "/slow").await;
    let took = asked.elapsed();
    assert_eq!(status, 504, "{text}");
    assert!(took < Duration::from_secs(8), "the 504 took {took:?}");
    println!(
        "{ok} served, {busy} refused (503), slowest /ping {slowest:?} over {} pings, 504 in {took:?}",
        pings.len()
    );
    server.abort();
    drop(pool);
}
