//! The self-call lookup under saturation, with clients from another process (curl, python3): it
//! runs off the reactor thread (the reactor accepts and answers while a lookup waits), a client of
//! another process is not taken for a self-call, and a kept-alive connection is looked up once,
//! however many requests it makes.

use super::self_call::{gated_server, ready, wait_until};
use crate::http_helpers::*;
use crate::tools;
use prefork_pool::http::{hold_lookups, Server};
use std::path::Path;
use std::process::{Child, Command, Stdio};

/// A child process, killed and reaped if the test ends before it does.
struct Reaped(Option<Child>);

impl Reaped {
    fn spawn(cmd: &mut Command, what: &str) -> Self {
        Reaped(Some(
            cmd.stdout(Stdio::piped())
                .spawn()
                .unwrap_or_else(|e| panic!("start {what}: {e}")),
        ))
    }
    fn running(&mut self) -> bool {
        let child = self.0.as_mut().expect("not waited yet");
        child.try_wait().expect("try_wait").is_none()
    }
    fn output(mut self) -> std::process::Output {
        self.0.take().unwrap().wait_with_output().expect("wait")
    }
}

impl Drop for Reaped {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// `curl` GET of `path`, printing the body and the status.
fn curl(curl: &Path, addr: std::net::SocketAddr, path: &str) -> Reaped {
    Reaped::spawn(
        Command::new(curl)
            .args(["-s", "--max-time", "20", "-w", " %{http_code}"])
            .arg(format!("http://{addr}{path}")),
        "curl",
    )
}

#[test]
fn while_a_lookup_waits_the_reactor_accepts_and_answers_and_another_process_is_not_a_self_call() {
    // Looked for here, not in the process of its own (whose output is not shown).
    let Some(curl_bin) = tools::require(&tools::CURL) else {
        return;
    };
    // The hold stops every lookup of this process: alone, so no other test's lookup waits.
    alone(
        module_path!(),
        "while_a_lookup_waits_the_reactor_accepts_and_answers_and_another_process_is_not_a_self_call",
        || {
            let (s, release) = gated_server(Server::builder().bind("127.0.0.1:0"));
            let s = ready(s);
            let addr = s.local_addrs()[0];
            let hold = hold_lookups();
            // Occupy the only worker (it was idle: no lookup on that path).
            let mut blocker = Client::new(addr);
            blocker.send(&get("/gate"));
            wait_until("the worker to be busy", || s.stats().busy == 1);

            // Another process's request while every worker is busy: looked up, and the lookup
            // is held.
            let mut other = curl(&curl_bin, addr, "/other");
            wait_until("curl's lookup to start", || hold.waiting() == 1);

            // The reactor is not in that lookup: it reads the gate's release, a new connection
            // is accepted, read and answered (by the worker, idle again) while it waits.
            release.send(()).unwrap();
            assert_eq!(blocker.answer().text(), "answered /gate");
            wait_until("the worker to be idle", || s.stats().idle == 1);
            let (a, _c) = roundtrip(addr, &get("/ping"));
            assert_eq!(a.text(), "answered /ping");
            assert_eq!(hold.waiting(), 1, "the lookup still waits");
            assert!(other.running(), "curl answered before its lookup ended");

            // Let it go: not a self-call, served by the worker.
            drop(hold);
            let out = other.output();
            assert!(out.status.success(), "{out:?}");
            assert_eq!(String::from_utf8_lossy(&out.stdout), "answered /other 200");
            let sc = s.self_calls();
            assert_eq!((sc.served, sc.refused, sc.lookups), (0, 0, 1));
            s.shutdown(WAIT);
        },
    );
}

/// Python: 20 GETs of `/py` on one kept-alive connection to `port`; prints each status, then
/// whether the same socket carried them all.
const KEEP_ALIVE_CLIENT: &str = r#"
import http.client, sys
c = http.client.HTTPConnection("127.0.0.1", int(sys.argv[1]), timeout=20)
statuses = []
sock = None
same = True
for i in range(20):
    c.request("GET", "/py")
    r = c.getresponse()
    r.read()
    statuses.append(str(r.status))
    if sock is None:
        sock = c.sock
    same = same and c.sock is sock
print(" ".join(statuses), "same" if same else "reconnected")
"#;

#[test]
fn a_kept_alive_client_of_another_process_is_looked_up_once_for_20_requests() {
    let (Some(curl_bin), Some(python)) = (
        tools::require(&tools::CURL),
        tools::require(&tools::PYTHON3),
    ) else {
        return;
    };
    // One worker, one queue slot: with both taken, every request is answered 503 at once, each
    // after the slow path's check.
    let (s, release) = gated_server(
        Server::builder()
            .bind("127.0.0.1:0")
            .pool(|p| p.queue_capacity(1)),
    );
    let s = ready(s);
    let addr = s.local_addrs()[0];
    let mut blocker = Client::new(addr);
    blocker.send(&get("/gate"));
    wait_until("the worker to be busy", || s.stats().busy == 1);
    let fill = curl(&curl_bin, addr, "/fill");
    wait_until("curl's request to be queued", || s.stats().queued == 1);
    assert_eq!(s.self_calls().lookups, 1);

    let py = Reaped::spawn(
        Command::new(python)
            .args(["-c", KEEP_ALIVE_CLIENT])
            .arg(addr.port().to_string()),
        "python3",
    )
    .output();
    assert!(py.status.success(), "{py:?}");
    let statuses = vec!["503"; 20].join(" ");
    assert_eq!(
        String::from_utf8_lossy(&py.stdout).trim(),
        format!("{statuses} same")
    );
    let sc = s.self_calls();
    assert_eq!(
        (sc.served, sc.refused, sc.lookups),
        (0, 0, 2),
        "one lookup for curl's connection, one for python's 20 requests"
    );

    release.send(()).unwrap();
    assert_eq!(blocker.answer().text(), "answered /gate");
    let out = fill.output();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "answered /fill 200");
    s.shutdown(WAIT);
}
