//! The lane's rules, over a real epoll set and a `UnixStream::pair()`, with no reactor and no
//! pool: the test takes the lane's events itself (`drain_events`, as the reactor does when it
//! takes the lane over, or the sleeper, as an idle worker does) and answers the requests the
//! connection hands off (the fixtures of `conn_tests.rs`).

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use http::Response;

use super::{ConnCell, Lane, LaneSleeper};
use crate::http::engine::conn::tests::{answer_held, client_reads, handoff, pair, paths, HeldList};
use crate::http::engine::conn::{Conn, Next};
use crate::http::engine::epoll::IN;
use crate::http::engine::handoff::Handoff;
use crate::pool::Sleeper;

const GET_A: &[u8] = b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n";
const GET_B: &[u8] = b"GET /b HTTP/1.1\r\nHost: x\r\n\r\n";

struct Rig {
    lane: Arc<Lane>,
    cell: Arc<ConnCell>,
    handoff: Arc<Handoff>,
    held: HeldList,
    client: UnixStream,
}

impl Rig {
    /// A lane with one connection in it.
    fn new() -> Rig {
        let (handoff, held) = handoff();
        let (stream, _peek, client) = pair();
        let fd = stream.raw_fd();
        let lane = Lane::new().unwrap();
        let conn = Conn::new(stream, Arc::from("test"), None, &handoff, Instant::now());
        let cell = lane.insert(fd, conn).expect("watched");
        Rig {
            lane,
            cell,
            handoff,
            held,
            client,
        }
    }

    /// Take every waiting event on this thread.
    fn events(&self) {
        self.lane.drain_events(&self.handoff, Instant::now());
    }

    fn send(&mut self, bytes: &[u8]) {
        self.client.write_all(bytes).unwrap();
    }

    fn armed(&self) -> u32 {
        self.cell.armed.load(Ordering::SeqCst) as u32
    }

    /// Input arrived while the request was in flight and was read (see `Link::pending`).
    fn read_in_flight(&self) -> bool {
        let conn = self.cell.held.lock_for_test();
        conn.as_ref().unwrap().link.pending.load(Ordering::SeqCst)
    }
}

#[test]
fn an_answer_that_comes_while_another_thread_holds_the_cell_is_taken_once_by_that_thread() {
    let mut r = Rig::new();
    r.send(&[GET_A, GET_B].concat());
    r.events();
    assert_eq!(paths(&r.held), ["/a"]);
    let done = r.held.lock()[0].take().unwrap().done;
    let cell = r.cell.clone();
    cell.with(&r.handoff, Instant::now(), true, |_conn, _env| {
        // The request is completed on another thread while this one holds the cell: that thread
        // writes the answer and leaves the rest in the slot, without waiting for the cell.
        std::thread::spawn(move || done.finish(Ok(Response::new(b"first".to_vec()))))
            .join()
            .unwrap();
        assert!(r.cell.held.has_mail(), "left in the cell's slot");
        Next::Keep
    });
    // The holder acted on it when it let go: the next request left, the slot is empty.
    assert!(!r.cell.held.has_mail());
    assert_eq!(paths(&r.held), ["(answered)", "/b"]);
    let (out, eof) = client_reads(&mut r.client);
    assert!(
        out.starts_with("HTTP/1.1 200 ") && out.ends_with("first"),
        "{out}"
    );
    assert!(!eof);
    // Once: another pass over the cell (a timer) finds nothing to act on; `/b` is in flight.
    r.cell
        .with(&r.handoff, Instant::now(), false, |c, env| c.on_timer(env));
    assert_eq!(paths(&r.held), ["(answered)", "/b"]);
    assert_eq!(client_reads(&mut r.client).0, "");
    answer_held(&r.held, 1, b"second".to_vec());
    let (out, _) = client_reads(&mut r.client);
    assert!(out.ends_with("second"), "{out}");
}

#[test]
fn a_pipelined_request_leaves_from_the_thread_that_answers_the_one_before() {
    let mut r = Rig::new();
    r.send(&[GET_A, GET_B].concat());
    r.events();
    assert_eq!(paths(&r.held), ["/a"]);
    let done = r.held.lock()[0].take().unwrap().done;
    let answering = std::thread::spawn(move || {
        done.finish(Ok(Response::new(b"first".to_vec())));
        std::thread::current().id()
    })
    .join()
    .unwrap();
    // No event was taken in between: the answering thread went on with the buffered request.
    assert_eq!(paths(&r.held), ["(answered)", "/b"]);
    assert_eq!(r.held.lock()[1].as_ref().unwrap().thread, answering);
    answer_held(&r.held, 1, b"second".to_vec());
    let (out, _) = client_reads(&mut r.client);
    let (a, b) = (out.find("first").unwrap(), out.find("second").unwrap());
    assert!(a < b, "{out}");
}

#[test]
fn a_connection_is_re_armed_for_what_it_waits_for_and_not_while_its_request_is_in_flight() {
    let mut r = Rig::new();
    r.send(b"GET /a HTTP/1.1\r\n");
    r.events();
    assert!(paths(&r.held).is_empty());
    assert_eq!(r.armed(), IN, "re-armed for the rest of the head");
    // One-shot: only a re-armed connection reports the rest.
    r.send(b"Host: x\r\n\r\n");
    r.events();
    assert_eq!(paths(&r.held), ["/a"]);
    assert_eq!(r.armed(), 0, "in flight: armed for nothing");
    // The next request arrives while `/a` is in flight: nobody reads it yet.
    r.send(GET_B);
    r.events();
    assert!(!r.read_in_flight(), "read while its request was in flight");
    // Answered: armed again, and the waiting request is reported and read.
    answer_held(&r.held, 0, b"first".to_vec());
    assert_eq!(r.armed(), IN);
    r.events();
    assert_eq!(paths(&r.held), ["(answered)", "/b"]);
}

#[test]
fn the_reactor_takes_the_lane_over_only_when_no_worker_waits_or_took_an_event_since_its_last_look()
{
    let mut r = Rig::new();
    r.lane.set_attached(true);
    r.send(GET_A);
    let now = Instant::now();
    // A worker waits in the lane: it takes the event, not the reactor.
    r.lane.waiters.fetch_add(1, Ordering::SeqCst);
    assert_eq!(r.lane.take_over(&r.handoff, 0, now), (0, true));
    r.lane.waiters.fetch_sub(1, Ordering::SeqCst);
    assert!(paths(&r.held).is_empty());
    // A worker took an event since the last look (seen 0): the workers keep up.
    r.lane.taken.fetch_add(1, Ordering::SeqCst);
    assert_eq!(r.lane.take_over(&r.handoff, 0, now), (1, false));
    assert!(paths(&r.held).is_empty());
    // Neither: the reactor takes the waiting events itself.
    assert_eq!(r.lane.take_over(&r.handoff, 1, now), (1, false));
    assert_eq!(paths(&r.held), ["/a"]);

    // An idle worker waiting in the lane (the pool's sleeper) takes an event, drives the
    // connection on its own thread, and counts it for the reactor's next look.
    answer_held(&r.held, 0, b"first".to_vec());
    r.send(GET_B);
    let sleeper = LaneSleeper {
        lane: r.lane.clone(),
        handoff: Arc::downgrade(&r.handoff),
    };
    sleeper.sleep();
    assert_eq!(paths(&r.held), ["(answered)", "/b"]);
    assert_eq!(r.lane.taken.load(Ordering::SeqCst), 2);
}

#[test]
fn a_disarmed_connection_is_armed_after_its_cell_is_let_go() {
    let mut r = Rig::new();
    // A part of a head, taken by an event (which disarmed it): armed for the rest.
    r.send(b"GET /a HTTP/1.1\r\n");
    r.events();
    assert_eq!(r.armed(), IN);
    r.send(b"Host: x\r\n\r\n");
    r.events();
    // Answered on another thread: armed for the next request.
    let done = r.held.lock()[0].take().unwrap().done;
    std::thread::spawn(move || done.finish(Ok(Response::new(b"first".to_vec()))))
        .join()
        .unwrap();
    assert_eq!(r.armed(), IN);
    // Each arm found the cell free: an event it delivers at once to a waiting worker does not
    // find the cell held by the arming thread.
    assert_eq!(*r.cell.arms.lock(), [true, true]);
    assert!(client_reads(&mut r.client).0.ends_with("first"));
}

#[test]
fn the_reactors_passes_leave_a_cell_alone_while_a_thread_has_yet_to_arm_it() {
    let r = Rig::new();
    let past = Instant::now() + std::time::Duration::from_secs(3600);
    r.cell.arming.fetch_add(1, Ordering::SeqCst);
    // A timer's pass gives up.
    r.cell
        .with(&r.handoff, past, false, |_, _| panic!("a pass ran"));
    // A waiting pass (the drain, the stop) and the stop's close wait until the arm is done.
    let (cell, handoff) = (r.cell.clone(), r.handoff.clone());
    let pass = std::thread::spawn(move || {
        cell.with(&handoff, past, true, |c, env| c.on_timer(env));
    });
    let (cell, handoff) = (r.cell.clone(), r.handoff.clone());
    let stop = std::thread::spawn(move || cell.shut(&handoff));
    std::thread::sleep(std::time::Duration::from_millis(100));
    assert!(
        r.cell.held.lock_for_test().is_some(),
        "closed before the arm"
    );
    assert_eq!(r.lane.live(), 1);
    r.cell.arming.fetch_sub(1, Ordering::SeqCst);
    pass.join().unwrap();
    stop.join().unwrap();
    assert!(r.cell.held.lock_for_test().is_none());
    assert_eq!(r.lane.live(), 0);
}
