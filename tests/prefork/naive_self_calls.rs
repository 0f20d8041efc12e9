//! The seed's naive call in process mode: a handler POSTs to its own server over TCP, as the
//! seed's Flask handler does, on 2 processes × 1 thread with the default spare threads (one per
//! process). Two outer requests run at once, one per process, and both of their inner calls may
//! land on one process, whose one spare thread the first takes: the second must wait for it and
//! be served, not be refused 503 (7 of 40 were, before self-calls waited for a spare thread).

use std::time::{Duration, Instant};

use crate::helpers::*;
use crate::serve_http::SELF_ADDR;

/// `/call` POSTs to `/hello` on the server's own address and answers 201 with the inner answer;
/// `/hello` answers `hello`.
fn naive_handler(
    req: prefork_pool::http::HttpRequest,
    _ctx: &prefork_pool::Context,
) -> prefork_pool::http::HttpResponse {
    if req.uri().path() != "/call" {
        return http::Response::new(b"hello".to_vec());
    }
    let url = format!("http://{}/hello", SELF_ADDR.get().expect("address set"));
    let (status, body) = match post_relaying_status(&url, "{}", Duration::from_secs(20)) {
        Ok((code, body)) if code < 400 => (201, body),
        Ok(answer) => answer,
        Err(e) => (502, format!("inner call: {e}")),
    };
    http::Response::builder()
        .status(status)
        .body(body.into_bytes())
        .unwrap()
}

/// `POST /call` from a new connection: the status and the body.
fn call(addr: std::net::SocketAddr) -> Result<(u16, String), String> {
    post_relaying_status(&format!("http://{addr}/call"), "", Duration::from_secs(30))
        .map_err(|e| format!("POST /call: {e}"))
}

/// POST `body` to `url` with ureq; a 4xx/5xx is an answer (its status and body), not an error.
fn post_relaying_status(
    url: &str,
    body: &str,
    timeout: Duration,
) -> Result<(u16, String), ureq::Error> {
    let answer = ureq::post(url)
        .config()
        .timeout_global(Some(timeout))
        .http_status_as_error(false)
        .build()
        .send(body)?;
    let status = answer.status().as_u16();
    Ok((
        status,
        answer.into_body().read_to_string().unwrap_or_default(),
    ))
}

fn check(m: &mut Master) -> Result<(), String> {
    m.wait_log("2 worker(s) ready", LONG)?;
    let addr = m.addr;
    let started = Instant::now();
    let mut answered = 0;
    for (rounds, at_once) in [(20, 4), (10, 8)] {
        for round in 0..rounds {
            let clients: Vec<_> = (0..at_once)
                .map(|_| std::thread::spawn(move || call(addr)))
                .collect();
            for c in clients {
                let (status, body) = c.join().map_err(|_| "client thread panicked")??;
                ensure(status == 201 && body == "hello", || {
                    format!(
                        "round {round} of {at_once} calls at once: {status} {body:?} (after \
                         {answered} answered 201)"
                    )
                })?;
                answered += 1;
            }
        }
    }
    println!(
        "  naive self-calls: {answered} of {answered} answered 201 in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    m.signal(libc::SIGTERM);
    let code = m.wait_exit(LONG)?;
    ensure(code == 0, || format!("exit status {code}"))
}

pub fn naive_self_calls() -> Result<(), String> {
    let mut m = start_master(
        "naive-self-calls",
        |l| {
            let _ = SELF_ADDR.set(l.local_addr().expect("listener address"));
        },
        |b, l| b.listener(l).workers(2),
        |b| {
            b.serve_http(
                |s| {
                    s.pool(|p| p.workers(1).deadline(Duration::from_secs(10)))
                        .access_log(false)
                },
                || Ok::<_, String>(naive_handler),
            )
        },
    );
    let r = check(&mut m);
    finish(&mut m, r)
}
