//! The connection's rules, each driven over a `UnixStream::pair()` with no reactor, no lane and no
//! pool: the test holds the client end, calls the state machine as the lane's threads do
//! (`on_ready`, `on_timer`, `drain_idle`, `on_answer`), and answers the requests the connection
//! hands off ([`Held`]) itself. The lane's tests (`lane_tests.rs`) use the same fixtures.

use std::io::{ErrorKind, Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::thread::ThreadId;
use std::time::{Duration, Instant};

use http::Response;
use parking_lot::Mutex;

use super::{Conn, Env, Next, DRAIN_GRACE, LINGER};
use crate::http::engine::answer::write_answer;
use crate::http::engine::epoll;
use crate::http::engine::handoff::{
    Answer, AnswerBack, ConnConfig, Dispatch, Done, Handoff, Reply,
};
use crate::http::engine::io::Stream;
use crate::http::types::{HttpRequest, HttpResponse};
use crate::Error;

/// A request the connection handed off, waiting for the test to answer it.
pub(in crate::http::engine) struct Held {
    pub req: HttpRequest,
    pub done: Done,
    /// The thread that handed it off.
    pub thread: ThreadId,
}

/// The requests handed off so far, in order (answered ones stay, without their `done`).
pub(in crate::http::engine) type HeldList = Arc<Mutex<Vec<Option<Held>>>>;

/// A dispatcher that keeps each request for the test to answer ([`answer_held`]).
struct Hold(HeldList);

impl Dispatch for Hold {
    fn dispatch(&self, req: HttpRequest, _depth: u32, done: Done) {
        let thread = std::thread::current().id();
        self.0.lock().push(Some(Held { req, done, thread }));
    }
    fn idle_workers(&self) -> usize {
        usize::MAX
    }
    fn call_here(&self, _req: HttpRequest, _depth: u32) -> Result<HttpResponse, Error> {
        unreachable!("no spare threads in these tests")
    }
    fn name(&self) -> &str {
        "hold"
    }
}

/// A hand-off with no reactor (no waker) whose requests wait for the test.
pub(in crate::http::engine) fn handoff() -> (Arc<Handoff>, HeldList) {
    let held = HeldList::default();
    let h = Handoff::new(ConnConfig::for_tests(), Box::new(Hold(held.clone())), None);
    (Arc::new(h), held)
}

/// A connected pair: the server's end (non-blocking, as accepted), a second handle on the same
/// socket (to look at what the server left unread), and the client's end (blocking, with a
/// generous read timeout).
pub(in crate::http::engine) fn pair() -> (Stream, UnixStream, UnixStream) {
    let (server, client) = UnixStream::pair().unwrap();
    server.set_nonblocking(true).unwrap();
    client
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let peek = server.try_clone().unwrap();
    (Stream::Unix(server), peek, client)
}

/// Answer the `i`th request handed off with `body`, on this thread: the answer is written to the
/// socket and sent back to the connection as the pool's completion does.
pub(in crate::http::engine) fn answer_held(held: &HeldList, i: usize, body: Vec<u8>) {
    let h = held.lock()[i].take().expect("a request not answered yet");
    h.done.finish(Ok(Response::new(body)));
}

/// The paths of the requests handed off so far.
pub(in crate::http::engine) fn paths(held: &HeldList) -> Vec<String> {
    let held = held.lock();
    held.iter()
        .map(|h| {
            h.as_ref()
                .map_or("(answered)".into(), |h| h.req.uri().path().to_string())
        })
        .collect()
}

/// What the client can read now, without waiting, and whether it read the end of the stream.
pub(in crate::http::engine) fn client_reads(client: &mut UnixStream) -> (String, bool) {
    client.set_nonblocking(true).unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 64 * 1024];
    let eof = loop {
        match client.read(&mut buf) {
            Ok(0) => break true,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::WouldBlock => break false,
            Err(e) => panic!("the client's read failed: {e}"),
        }
    };
    client.set_nonblocking(false).unwrap();
    (String::from_utf8_lossy(&out).into_owned(), eof)
}

/// Whether the server's end has unread input (reading it, through the second handle).
pub(in crate::http::engine) fn unread(peek: &mut UnixStream) -> usize {
    let mut buf = [0u8; 64 * 1024];
    let mut n = 0;
    loop {
        match peek.read(&mut buf) {
            Ok(0) => return n,
            Ok(k) => n += k,
            Err(e) if e.kind() == ErrorKind::WouldBlock => return n,
            Err(e) => panic!("{e}"),
        }
    }
}

/// The answer slot of a connection outside the lane: the test acts on each answer itself.
#[derive(Debug, Default)]
struct Slot(Mutex<Vec<Answer>>);

impl AnswerBack for Slot {
    fn finish(
        self: Arc<Self>,
        handoff: &Arc<Handoff>,
        reply: Reply,
        result: Result<HttpResponse, Error>,
        now: Option<Instant>,
    ) {
        // Written as the lane's cell writes it; then kept for the test to act on.
        let answer = write_answer(handoff, reply, result, now);
        self.0.lock().push(answer);
    }
}

/// One connection driven by the test.
struct Rig {
    conn: Conn,
    handoff: Arc<Handoff>,
    held: HeldList,
    slot: Arc<Slot>,
    /// The slot as the connection's way back (`Env::back`).
    back: Weak<dyn AnswerBack>,
    client: UnixStream,
    peek: UnixStream,
    now: Instant,
}

impl Rig {
    fn new() -> Rig {
        let (handoff, held) = handoff();
        let (stream, peek, client) = pair();
        let now = Instant::now();
        let conn = Conn::new(stream, Arc::from("test"), None, &handoff, now);
        let slot: Arc<Slot> = Arc::default();
        let back = Arc::downgrade(&slot);
        Rig {
            conn,
            handoff,
            held,
            slot,
            back,
            client,
            peek,
            now,
        }
    }

    /// Call `f` as the lane's threads do, with this connection's environment.
    fn step(&mut self, f: impl FnOnce(&mut Conn, &mut Env<'_>) -> Next) -> Next {
        let mut env = Env {
            handoff: &self.handoff,
            back: &self.back,
            draining: self.handoff.draining.load(Ordering::SeqCst),
            keepalive_requests: None,
            now: self.now,
        };
        f(&mut self.conn, &mut env)
    }

    /// The socket is readable (and writable).
    fn ready(&mut self) -> Next {
        self.step(|c, env| c.on_ready(true, false, true, env))
    }

    /// Answer request `i` with `body`, then act on the answer as the connection's cell does.
    fn answer(&mut self, i: usize, body: &str) -> Next {
        answer_held(&self.held, i, body.as_bytes().to_vec());
        let answer = self.slot.0.lock().pop().expect("the answer came back");
        self.step(|c, env| c.on_answer(answer, env))
    }

    fn send(&mut self, bytes: &[u8]) {
        self.client.write_all(bytes).unwrap();
    }
}

const GET_A: &[u8] = b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n";
const GET_B: &[u8] = b"GET /b HTTP/1.1\r\nHost: x\r\n\r\n";

#[test]
fn two_requests_in_one_write_are_handled_one_at_a_time_and_answered_in_order() {
    let mut r = Rig::new();
    r.send(&[GET_A, GET_B].concat());
    assert_eq!(r.ready(), Next::Keep);
    // The second request waits in the buffer while the first is in flight.
    assert_eq!(paths(&r.held), ["/a"]);
    assert_eq!(r.conn.interest(), None, "in flight: armed for nothing");
    assert_eq!(client_reads(&mut r.client).0, "");

    // The first answer goes out, then the second request leaves from the answer's path.
    assert_eq!(r.answer(0, "first"), Next::Keep);
    assert_eq!(paths(&r.held), ["(answered)", "/b"]);
    let (out, _) = client_reads(&mut r.client);
    assert!(
        out.starts_with("HTTP/1.1 200 ") && out.ends_with("first"),
        "{out}"
    );

    assert_eq!(r.answer(1, "second"), Next::Keep);
    let (out, eof) = client_reads(&mut r.client);
    assert!(
        out.starts_with("HTTP/1.1 200 ") && out.ends_with("second"),
        "{out}"
    );
    assert!(!eof, "kept alive");
    assert_eq!(
        r.conn.interest(),
        Some(epoll::IN),
        "waits for the next request"
    );
}

/// A request's target and field values are slices of the connection's read buffer, not copies:
/// what a handler keeps of a request (its `Uri`, a header value) still reads as it came after the
/// connection has answered it and read the next request into the same buffer.
#[test]
fn what_a_handler_keeps_of_a_request_outlives_the_next_one_read_on_the_connection() {
    let mut r = Rig::new();
    r.send(b"GET /first?q=1 HTTP/1.1\r\nHost: x\r\nX-Kept: one\r\n\r\n");
    assert_eq!(r.ready(), Next::Keep);
    let kept = {
        let held = r.held.lock();
        let req = &held[0].as_ref().expect("handed off").req;
        (req.uri().clone(), req.headers()["x-kept"].clone())
    };
    // The request itself is gone with its answer; the next one, of the same length, is read.
    assert_eq!(r.answer(0, "first"), Next::Keep);
    r.send(b"GET /other?q=2 HTTP/1.1\r\nHost: x\r\nX-Kept: two\r\n\r\n");
    assert_eq!(r.ready(), Next::Keep);
    assert_eq!(paths(&r.held), ["(answered)", "/other"]);
    assert_eq!(kept.0, "/first?q=1");
    assert_eq!(kept.1, "one");
    {
        let held = r.held.lock();
        let req = &held[1].as_ref().expect("handed off").req;
        assert_eq!(req.uri(), "/other?q=2");
        assert_eq!(req.headers()["x-kept"], "two");
    }
    assert_eq!(r.answer(1, "second"), Next::Keep);
    assert_eq!(kept.0, "/first?q=1");
}

/// The crate's rule for `Expect: 100-continue`: the thread that reads the head writes the interim
/// `100 Continue` at once when the request has a body and none of it has come yet (the client
/// waits for it before sending the body); not when the body came with the head, nor for a request
/// without a body. The handler gets the request once the whole body is in.
#[test]
fn the_interim_100_is_sent_only_when_a_body_is_expected_and_none_of_it_has_come() {
    let head = b"POST /up HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n";
    let mut r = Rig::new();
    r.send(head);
    assert_eq!(r.ready(), Next::Keep);
    assert_eq!(
        client_reads(&mut r.client).0,
        "HTTP/1.1 100 Continue\r\n\r\n"
    );
    assert!(paths(&r.held).is_empty(), "not handed off before its body");
    r.send(b"hello");
    assert_eq!(r.ready(), Next::Keep);
    assert_eq!(r.held.lock()[0].as_ref().unwrap().req.body(), b"hello");
    r.answer(0, "ok");
    let (out, _) = client_reads(&mut r.client);
    assert!(
        out.starts_with("HTTP/1.1 200 ") && !out.contains("100 Continue"),
        "{out}"
    );

    // The body came with the head: no interim answer.
    let mut r = Rig::new();
    r.send(&[&head[..], b"hello"].concat());
    assert_eq!(r.ready(), Next::Keep);
    assert_eq!(paths(&r.held), ["/up"]);
    r.answer(0, "ok");
    let (out, _) = client_reads(&mut r.client);
    assert!(out.starts_with("HTTP/1.1 200 "), "{out}");

    // No body at all: no interim answer either.
    let mut r = Rig::new();
    r.send(b"GET /a HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n\r\n");
    assert_eq!(r.ready(), Next::Keep);
    assert_eq!(paths(&r.held), ["/a"]);
    assert_eq!(client_reads(&mut r.client).0, "");
}

#[test]
fn an_answer_the_socket_takes_in_part_is_written_to_its_end_before_the_next_request() {
    const SIZE: usize = 4 << 20;
    let mut r = Rig::new();
    r.send(&[GET_A, GET_B].concat());
    r.ready();
    let body: Vec<u8> = (0..SIZE).map(|i| (i % 251) as u8).collect();
    answer_held(&r.held, 0, body.clone());
    let answer = r.slot.0.lock().pop().unwrap();
    assert!(!answer.rest.is_empty(), "the socket took the answer whole");
    assert_eq!(r.step(|c, env| c.on_answer(answer, env)), Next::Keep);

    // The client reads, the socket becomes writable, the connection writes more, and so on.
    let mut got = Vec::new();
    let mut buf = vec![0u8; 256 * 1024];
    while r.conn.interest() == Some(epoll::OUT) {
        assert_eq!(
            paths(&r.held).len(),
            1,
            "the next request waits for this answer"
        );
        let n = r.client.read(&mut buf).unwrap();
        assert!(n > 0, "the connection closed");
        got.extend_from_slice(&buf[..n]);
        assert_eq!(
            r.step(|c, env| c.on_ready(false, false, true, env)),
            Next::Keep
        );
    }
    // What the last write put in the socket.
    r.client.set_nonblocking(true).unwrap();
    loop {
        match r.client.read(&mut buf) {
            Ok(n) if n > 0 => got.extend_from_slice(&buf[..n]),
            _ => break,
        }
    }
    let at = got.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    assert!(got.starts_with(b"HTTP/1.1 200 "));
    assert_eq!(got.len() - at, SIZE, "the whole body, once");
    assert!(got[at..] == body[..], "the body, in order");
    // Then the next request.
    assert_eq!(paths(&r.held), ["(answered)", "/b"]);
}

#[test]
fn after_an_error_answer_the_connection_drains_the_clients_input_before_it_closes() {
    let mut r = Rig::new();
    r.send(b"POST /slow HTTP/1.1\r\nHost: x\r\n");
    assert_eq!(r.ready(), Next::Keep);
    // More of the client's request is on its way when the head times out.
    r.send(&vec![b'x'; 40 * 1024]);
    r.now += r.handoff.cfg.head_timeout;
    assert_eq!(r.step(|c, env| c.on_timer(env)), Next::Keep);
    assert!(r.conn.is_lingering());
    assert_eq!(
        unread(&mut r.peek),
        0,
        "the client's input was read and dropped"
    );
    // The client reads the answer, then the end of the stream (our side is shut): not a reset.
    let mut out = String::new();
    r.client.read_to_string(&mut out).unwrap();
    assert!(
        out.starts_with("HTTP/1.1 408 ") && out.contains("connection: close"),
        "{out}"
    );

    // What the client still sends is dropped, until it closes...
    r.send(b"more");
    assert_eq!(r.ready(), Next::Keep);
    assert_eq!(unread(&mut r.peek), 0);
    r.client.shutdown(std::net::Shutdown::Write).unwrap();
    assert_eq!(
        r.step(|c, env| c.on_ready(true, true, false, env)),
        Next::Close
    );

    // ... or until `LINGER` has passed.
    let mut r = Rig::new();
    r.send(b"POST /slow HTTP/1.1\r\nHost: x\r\n");
    r.ready();
    r.now += r.handoff.cfg.head_timeout;
    assert_eq!(r.step(|c, env| c.on_timer(env)), Next::Keep);
    r.now += LINGER - Duration::from_millis(1);
    assert_eq!(r.step(|c, env| c.on_timer(env)), Next::Keep);
    r.now += Duration::from_millis(1);
    assert_eq!(r.step(|c, env| c.on_timer(env)), Next::Close);
}

#[test]
fn a_drain_closes_an_idle_connection_and_answers_a_busy_one_before_closing_it() {
    // Idle for longer than the grace: closed at the drain's start (our side shut).
    let mut idle = Rig::new();
    idle.handoff.draining.store(true, Ordering::SeqCst);
    idle.now += DRAIN_GRACE + Duration::from_millis(1);
    assert_eq!(idle.step(|c, env| c.drain_idle(env)), Next::Keep);
    assert!(idle.conn.is_lingering());
    assert_eq!(client_reads(&mut idle.client), (String::new(), true));

    // Idle for a moment only: its client may be writing its next request, answered with
    // `Connection: close`.
    let mut recent = Rig::new();
    recent.handoff.draining.store(true, Ordering::SeqCst);
    recent.now += Duration::from_millis(100);
    assert_eq!(recent.step(|c, env| c.drain_idle(env)), Next::Keep);
    assert!(!recent.conn.is_lingering());
    recent.send(GET_A);
    recent.ready();
    recent.answer(0, "last");
    let (out, eof) = client_reads(&mut recent.client);
    assert!(
        out.contains("connection: close") && out.ends_with("last"),
        "{out}"
    );
    assert!(eof);

    // A request in flight when the drain starts: answered (saying close), then closed.
    let mut busy = Rig::new();
    busy.send(GET_A);
    busy.ready();
    busy.handoff.draining.store(true, Ordering::SeqCst);
    assert_eq!(busy.step(|c, env| c.drain_idle(env)), Next::Keep);
    assert_eq!(busy.conn.interest(), None, "still in flight");
    assert_eq!(busy.answer(0, "done"), Next::Keep);
    let (out, eof) = client_reads(&mut busy.client);
    assert!(
        out.starts_with("HTTP/1.1 200 ") && out.ends_with("done"),
        "{out}"
    );
    assert!(out.contains("connection: close"), "{out}");
    assert!(eof, "closed after its answer");
    assert!(busy.conn.is_lingering());
}

#[test]
fn a_client_that_says_it_closes_is_closed_once_its_answer_is_written() {
    // `Connection: close` from the client: the answer, then the close at once (no lingering read
    // to the client's end of file: the client sends nothing more on this connection).
    let mut r = Rig::new();
    r.send(b"GET /a HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    assert_eq!(r.ready(), Next::Keep);
    assert_eq!(r.answer(0, "bye"), Next::Close);
    let (out, eof) = client_reads(&mut r.client);
    assert!(
        out.starts_with("HTTP/1.1 200 ")
            && out.contains("connection: close")
            && out.ends_with("bye"),
        "{out}"
    );
    assert!(eof, "our side was shut before the close");

    // HTTP/1.0 without keep-alive says the same.
    let mut r = Rig::new();
    r.send(b"GET /a HTTP/1.0\r\n\r\n");
    r.ready();
    assert_eq!(r.answer(0, "old"), Next::Close);

    // Bytes after the request (the client broke its word): they are read and dropped before the
    // close, as for any close the server decides.
    let mut r = Rig::new();
    r.send(b"GET /a HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\nGET /b HTTP/1.1\r\n");
    r.ready();
    assert_eq!(r.answer(0, "one"), Next::Keep);
    assert!(r.conn.is_lingering());

    // A keep-alive client whose connection the server closes (here: the drain) gets the
    // lingering close: its next request may be on the wire already.
    let mut r = Rig::new();
    r.send(GET_A);
    r.ready();
    r.handoff.draining.store(true, Ordering::SeqCst);
    assert_eq!(r.answer(0, "last"), Next::Keep);
    assert!(r.conn.is_lingering());
}

/// A kept-alive client that shuts its side after its request: the end of file read while the
/// request was in flight closes the connection once the answer is out, rather than leaving it
/// to wait for a request that cannot come (until the keep-alive timeout). The answer's stage
/// (`write.rs`) checks this itself on its way back to waiting for input.
#[test]
fn a_client_that_shut_its_side_during_its_request_is_closed_once_it_is_answered() {
    let mut r = Rig::new();
    r.send(GET_A);
    r.client.shutdown(std::net::Shutdown::Write).unwrap();
    // The poll said the client's side is shut: reading goes on to the end of file.
    assert_eq!(
        r.step(|c, env| c.on_ready(true, true, true, env)),
        Next::Keep
    );
    assert_eq!(paths(&r.held), ["/a"]);
    assert_eq!(r.answer(0, "last"), Next::Close);
    let (out, _) = client_reads(&mut r.client);
    assert!(
        out.starts_with("HTTP/1.1 200 ") && out.ends_with("last"),
        "{out}"
    );
}

/// A kept-alive connection parses its next request head into its last answer's header map, its
/// allocation kept (a map grown large is let go): one header map per request, not two.
#[test]
fn the_next_request_head_is_parsed_into_the_last_answers_header_map() {
    let mut r = Rig::new();
    let answer_with = |r: &mut Rig, i: usize, room: usize| {
        let h = r.held.lock()[i].take().expect("a request not answered yet");
        let mut resp = Response::new(b"ok".to_vec());
        *resp.headers_mut() = http::HeaderMap::with_capacity(room);
        resp.headers_mut()
            .insert("x-answer", http::HeaderValue::from_static("1"));
        h.done.finish(Ok(resp));
        let answer = r.slot.0.lock().pop().expect("the answer came back");
        r.step(|c, env| c.on_answer(answer, env))
    };
    let room_of = |r: &Rig, i: usize| r.held.lock()[i].as_ref().unwrap().req.headers().capacity();

    r.send(GET_A);
    assert_eq!(r.ready(), Next::Keep);
    let first = room_of(&r, 0);
    assert!(first < 24, "a head of one field gets a small map ({first})");
    assert_eq!(answer_with(&mut r, 0, 24), Next::Keep);
    r.send(GET_B);
    assert_eq!(r.ready(), Next::Keep);
    assert!(room_of(&r, 1) >= 24, "the answer's map, kept");
    let (out, _) = client_reads(&mut r.client);
    assert!(out.contains("x-answer: 1"), "{out}");
    assert_eq!(
        r.held.lock()[1].as_ref().unwrap().req.headers().len(),
        1,
        "emptied first: only the request's own field"
    );

    // A map grown large is not kept by an idle connection.
    assert_eq!(answer_with(&mut r, 1, 1000), Next::Keep);
    r.send(GET_A);
    assert_eq!(r.ready(), Next::Keep);
    assert!(room_of(&r, 2) < 1000);
}
