//! The lane's rules, over a real epoll set and a `UnixStream::pair()`, with no reactor and no
//! pool: the test takes the lane's events itself (`drain_events`, as the reactor does when it
//! takes the lane over, or the sleeper, as an idle worker does) and answers the requests the
//! connection hands off (the fixtures of `conn/tests.rs`).

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use http::Response;

use super::{ConnCell, Lane, LaneSleeper};
use crate::http::engine::conn::tests::{answer_held, client_reads, handoff, pair, paths, HeldList};
use crate::http::engine::conn::{Conn, Next};
use crate::http::engine::epoll::{IN, OUT};
use crate::http::engine::handoff::Handoff;
use crate::http::engine::ready::{TOOK, WAITER};
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
    let (cell, outer) = (r.cell.clone(), r.handoff.clone());
    cell.with(&outer, Instant::now(), true, |_conn, _env| {
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
fn nothing_is_read_while_a_request_is_in_flight_and_the_thread_that_answers_it_reads_what_came() {
    let mut r = Rig::new();
    r.send(b"GET /a HTTP/1.1\r\n");
    r.events();
    assert!(paths(&r.held).is_empty());
    assert_eq!(r.armed(), IN, "waits for the rest of the head");
    // Its own edge reports the rest.
    r.send(b"Host: x\r\n\r\n");
    r.events();
    assert_eq!(paths(&r.held), ["/a"]);
    assert_eq!(r.armed(), 0, "in flight: waits for nothing");
    // The next request arrives while `/a` is in flight: nobody reads it yet (its event is kept
    // in the cell).
    r.send(GET_B);
    r.events();
    assert!(!r.read_in_flight(), "read while its request was in flight");
    assert!(paths(&r.held) == ["/a"]);
    // Answered: the thread that answers reads the waiting request (no other event comes for it).
    answer_held(&r.held, 0, b"first".to_vec());
    assert_eq!(paths(&r.held), ["(answered)", "/b"]);
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
    r.lane.progress.fetch_add(WAITER, Ordering::SeqCst);
    assert_eq!(r.lane.take_over(&r.handoff, 0, now), (0, true));
    r.lane.progress.fetch_sub(WAITER, Ordering::SeqCst);
    assert!(paths(&r.held).is_empty());
    // A worker took an event since the last look (seen 0): the workers keep up.
    r.lane.progress.fetch_add(TOOK, Ordering::SeqCst);
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
    assert_eq!(r.lane.progress().0, 2);
}

#[test]
fn a_kept_alive_request_changes_nothing_in_the_epoll_set() {
    let mut r = Rig::new();
    // A part of a head, then the rest: each reported by its own edge, with no re-arm.
    r.send(b"GET /a HTTP/1.1\r\n");
    r.events();
    assert_eq!(r.armed(), IN);
    r.send(b"Host: x\r\n\r\n");
    r.events();
    assert_eq!(paths(&r.held), ["/a"]);
    // Answered on another thread; the next request comes and is reported.
    let done = r.held.lock()[0].take().unwrap().done;
    std::thread::spawn(move || done.finish(Ok(Response::new(b"first".to_vec()))))
        .join()
        .unwrap();
    assert_eq!(r.armed(), IN);
    assert!(client_reads(&mut r.client).0.ends_with("first"));
    r.send(GET_B);
    r.events();
    assert_eq!(paths(&r.held), ["(answered)", "/b"]);
    // Registered once, at the accept: no `epoll_ctl` for any of it.
    assert!(r.cell.arms.lock().is_empty(), "{:?}", r.cell.arms.lock());
}

#[test]
fn an_event_that_comes_while_another_thread_holds_the_cell_is_acted_on_by_that_thread() {
    let mut r = Rig::new();
    let (lane, handoff) = (r.lane.clone(), r.handoff.clone());
    let (cell, outer) = (r.cell.clone(), r.handoff.clone());
    cell.with(&outer, Instant::now(), true, |_conn, _env| {
        // A request arrives while this thread holds the cell (a timer's pass): the thread that
        // takes its event finds the cell held and leaves the event in the cell.
        r.send(GET_A);
        std::thread::spawn(move || lane.drain_events(&handoff, Instant::now()))
            .join()
            .unwrap();
        assert!(paths(&r.held).is_empty(), "read while the cell was held");
        Next::Keep
    });
    // Edge-triggered, no further event comes for it: the holder read it when it let go.
    assert_eq!(paths(&r.held), ["/a"]);
    r.events();
    assert_eq!(paths(&r.held), ["/a"]);
}

#[test]
fn an_answer_too_big_for_the_socket_waits_for_room_to_write_then_the_connection_waits_for_input() {
    let mut r = Rig::new();
    r.send(GET_A);
    r.events();
    let body = vec![b'x'; 4 << 20];
    answer_held(&r.held, 0, body.clone());
    // Written in part: watched for room to write too.
    assert_eq!(r.armed(), OUT);
    assert!(r.cell.watch_out.load(Ordering::SeqCst));
    // The client reads; the room it makes is reported, and the rest is written.
    let mut got = 0;
    let deadline = Instant::now() + std::time::Duration::from_secs(30);
    while got < body.len() {
        assert!(
            Instant::now() < deadline,
            "the rest of the answer never came"
        );
        got += client_reads(&mut r.client).0.len();
        r.events();
        std::thread::yield_now();
    }
    // All written: input only again (two changes of the watch in all), and the next request is
    // reported.
    assert_eq!(r.armed(), IN);
    assert!(!r.cell.watch_out.load(Ordering::SeqCst));
    assert_eq!(r.cell.arms.lock().len(), 2);
    r.send(GET_B);
    r.events();
    assert_eq!(paths(&r.held), ["(answered)", "/b"]);
}

#[test]
fn an_event_that_comes_while_the_reactor_peeks_at_the_cell_is_acted_on_after_the_peek() {
    let mut r = Rig::new();
    let (lane, handoff) = (r.lane.clone(), r.handoff.clone());
    let (cell, outer) = (r.cell.clone(), r.handoff.clone());
    // The reactor's timer looks at a new connection (nothing read yet) as its request arrives:
    // the thread that takes the event finds the cell held and leaves the event in the cell.
    cell.peek(&outer, Instant::now(), |_conn| {
        r.send(GET_A);
        std::thread::spawn(move || lane.drain_events(&handoff, Instant::now()))
            .join()
            .unwrap();
        assert!(
            paths(&r.held).is_empty(),
            "read while the cell was peeked at"
        );
    });
    // Edge-triggered, no further event comes for it: the peek acted on it when it let go.
    assert_eq!(paths(&r.held), ["/a"]);
}

/// Connections added to `r`'s lane, each with `GET /<name>` sent.
fn more_conns(r: &Rig, names: &[&str]) -> Vec<UnixStream> {
    names
        .iter()
        .map(|name| {
            let (stream, _peek, mut client) = pair();
            let fd = stream.raw_fd();
            let conn = Conn::new(stream, Arc::from("test"), None, &r.handoff, Instant::now());
            r.lane.insert(fd, conn).expect("watched");
            client
                .write_all(format!("GET /{name} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
                .unwrap();
            client
        })
        .collect()
}

/// The events the epoll set holds now (taken out of it).
fn set_events(lane: &Lane) -> Vec<u64> {
    let mut got = Vec::new();
    let _ = lane
        .epoll
        .wait(64, Some(std::time::Duration::ZERO), |ev| got.push(ev.data));
    got
}

fn sleeper(r: &Rig) -> LaneSleeper {
    LaneSleeper {
        lane: r.lane.clone(),
        handoff: Arc::downgrade(&r.handoff),
    }
}

#[test]
fn a_lone_waiter_takes_a_batch_acts_on_one_event_and_leaves_the_rest_to_the_next_waiters() {
    let r = Rig::new();
    let _clients = more_conns(&r, &["a", "b", "c"]);
    let s = sleeper(&r);
    s.sleep();
    // One request read and handed on; the two other events left in the ready queue.
    assert_eq!(paths(&r.held).len(), 1);
    assert_eq!(r.lane.ready.len(), 2);
    // The next waiters take them from there, without a wait in the set.
    s.sleep();
    s.sleep();
    let mut got = paths(&r.held);
    got.sort();
    assert_eq!(got, ["/a", "/b", "/c"]);
    assert_eq!(r.lane.ready.len(), 0);
    assert_eq!(r.lane.progress().0, 3, "each counted for the reactor");
}

#[test]
fn while_another_worker_waits_in_the_set_a_wait_takes_one_event_and_leaves_the_rest_in_the_set() {
    let r = Rig::new();
    let _clients = more_conns(&r, &["a", "b"]);
    // Another worker waits in the set: the set hands it the other event itself.
    r.lane.progress.fetch_add(WAITER, Ordering::SeqCst);
    sleeper(&r).sleep();
    assert_eq!(paths(&r.held).len(), 1);
    assert_eq!(r.lane.ready.len(), 0);
    assert_eq!(
        set_events(&r.lane).len(),
        1,
        "the other event is still in the set"
    );
}

#[test]
fn events_left_while_a_worker_waits_in_the_set_wake_it_and_the_reactor_takes_them_when_nobody_comes(
) {
    let mut r = Rig::new();
    r.lane.set_attached(true);
    r.send(GET_A);
    let evs: Vec<_> = {
        let mut got = Vec::new();
        let _ = r
            .lane
            .epoll
            .wait(8, Some(std::time::Duration::ZERO), |ev| got.push(ev));
        got
    };
    assert_eq!(evs.len(), 1);
    // Nobody waits in the set: nobody is woken (the next waiter, or the reactor, takes it).
    r.lane.ready.lock().extend(evs.iter().copied());
    r.lane.leave_ready(evs.len());
    assert!(set_events(&r.lane).is_empty());
    // A worker waits in the set: the event left wakes it.
    r.lane.progress.fetch_add(WAITER, Ordering::SeqCst);
    r.lane.leave_ready(0);
    assert!(set_events(&r.lane).is_empty(), "nothing left, no wake-up");
    let more = r.lane.ready.take().unwrap();
    r.lane.ready.lock().push_back(more);
    r.lane.leave_ready(1);
    assert_eq!(set_events(&r.lane), [super::WAKE]);
    r.lane.progress.fetch_sub(WAITER, Ordering::SeqCst);
    // No worker comes: the reactor's take-over takes what was left.
    assert!(paths(&r.held).is_empty());
    assert_eq!(r.lane.take_over(&r.handoff, 0, Instant::now()), (0, false));
    assert_eq!(paths(&r.held), ["/a"]);
    assert_eq!(r.lane.ready.len(), 0);
}
