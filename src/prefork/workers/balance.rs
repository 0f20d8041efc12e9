//! Balanced, load-aware accept between the worker processes of [`Supervisor::serve_http`]: the
//! [`AcceptPolicy`] each worker's HTTP server asks before it accepts a connection.
//!
//! Every worker process accepts on the same listen socket. Left to the kernel, the process that
//! happens to be waiting in `epoll_wait` takes what is queued: with keep-alive clients, one process
//! held 51 of 80 connections (request shares 16/44/26/15 % over 4 processes), and a process whose
//! handler threads were all busy went on accepting while a sibling idled. So each process
//! publishes in its heartbeat slot (shared memory) its open connections (the reactor, on every
//! pass, and one more just before each accept) and its running and finished requests (the handler
//! threads), and each reads its siblings' slots before it accepts:
//!
//! - **Load-aware.** A process that cannot take a request now (every handler thread busy, and none
//!   finished a request since the table was read ≥ 100 ms before: they are stuck in long requests)
//!   accepts nothing while a sibling can; the connection stays in the shared queue for that one.
//! - **Balanced.** Among the processes that can, the one with the lowest *expected rate* after one
//!   more connection takes it: its requests per second per connection (measured over the last
//!   reads) × (its connections + 1). Equal processes get equal connections (a burst of new
//!   connections is dealt out one by one); a process that gets less CPU (on a busy machine,
//!   scheduling is not fair between processes) serves fewer requests per connection and so gets
//!   more connections, until the request rates meet. Without measurements yet, the fewest
//!   connections.
//!   The rates move connections only within a band above the fewest (a tenth of the mean: none
//!   below 10 connections per process): when every process is saturated, more connections do
//!   not buy a process more CPU, and while the clients rather than the processes are the
//!   bottleneck, request shares follow connection shares, so a wider band let the noise of the
//!   rates skew the shares (measured: a quarter of the mean gave 13 of 64 connections to one of 4
//!   processes, 19.7 % of the requests against 27.1 %).
//! - **Movable.** A keep-alive connection carries at most about 2 s of requests at the process's
//!   current rate per connection, between 100 and [`KEEPALIVE_REQUESTS`] (then
//!   `Connection: close`), so clients reconnect now and then, and load moves to where the gate
//!   sends it; without that, connections opened at one moment stay where they landed (in a burst
//!   of connects two gates can decide at once, and 16 connections over 4 processes ended 3/4/4/5,
//!   shares 1.66 apart, for as long as the clients kept them: with 20 ms requests, 1000 requests
//!   are 20 s).
//!
//! The lowest score always passes (and those within 10 % of it), so a connection is never left
//! without a taker. That holds only if every process computes the same scores: so each process
//! measures its own rate and publishes it in its slot, and the others read it there. (When each
//! measured its siblings' rates itself, over its own windows, the rates of processes without a
//! connection froze at values that differed between observers: each saw the other as the better
//! taker, and after a reload new connections waited in the queue until the clients gave up.)
//! While its gate
//! says no, a process does not poll the listener (no wake-up, no thundering herd); while it says
//! yes, it polls the listener level-triggered and takes at most a small batch per wake-up, asking
//! before each `accept`.
//!
//! **Never a wait for a new connection.** A process that says no must hear at once when a
//! sibling's change may make it the taker, or connections wait in the queue while every gate
//! says no on numbers that are no longer true. With clients that connect per request (nginx's
//! default `proxy_pass`, `Connection: close`, health checks) that is every connection: when each
//! process only asked again every 5 ms, 2 processes × 1 thread served 450 requests per second
//! where 1 process × 2 threads served 15,000. So the table has a *gate ping*, one eventfd made by
//! the master before the first fork that every worker's reactor polls (edge-triggered), and a
//! process marks its slot `waiting` while its gate says no. A process pings when its change may
//! turn a waiting sibling's no into a yes: when a connection closes (one fewer here) and when its
//! own gate turns from yes to no (it stops taking, so a sibling is the taker now). Every waiting
//! process wakes and asks its gate again, on the same numbers, so one of them takes. The mark is
//! set before the gate reads its siblings, and a closing connection is published before the
//! marks are read (both sequentially consistent), so a ping is never missed by a gate deciding
//! at that moment. The eventfd is never read: epoll checks a file's readiness again before it
//! reports an edge, so a sibling that reset the counter could hide the wake from a process that
//! had not collected it yet; its counter grows by one a ping (2⁶⁴ pings are millions of years).
//! Without an eventfd, or for a change the pings do not cover (a thread of a busy process
//! becomes idle), a waiting process still asks again every 5 ms.
//!
//! Weighed for the pings and not taken: a gate that only defers when a process is busy (it loses
//! the deal-out that balances a burst of keep-alive connections); one eventfd per slot (1024
//! fds in every worker); `EPOLLEXCLUSIVE` (below).
//!
//! **At CPU saturation** (measured, 2-core VM shared with other helpers' builds, load 3–12;
//! `prefork_server` release, 4 processes × 1 thread, `wrk -t2 -c64`): connections are even
//! (15.5–16.4 per process on average), requests per CPU tick are equal within 1.1, but the CPU time
//! the kernel gives each process is not: up to 1.3–1.8× between them over 10 s, and the same process
//! stays ahead second after second. Every handler thread is runnable 75–85 % of the time and runs
//! 8–11 % (`/proc/<pid>/task/*/schedstat`): more connections cannot buy a starved process CPU time,
//! and fewer connections slow a favoured one only once it runs out of queued requests. So the
//! request shares there follow the kernel's split (busiest / least 1.07–1.84 in 9 runs; gunicorn 27
//! sync, which closes every connection after one request and leaves CPU idle at a tenth of the
//! rate, 1.03–1.14). Tried: weighing the gate by CPU time (no lever, as above); pinning 2 processes
//! per core (1.07, 1.21: the split moves to the cores' other load); pacing, where a process
//! ahead of the slowest by more than 5–20 % sleeps a fraction of each reactor pass: it held 1.08–1.12,
//! but cost 25–40 % of the requests per second on this machine, because the CPU it gave up went to
//! the other programs rather than to the starved sibling, so it is not done.
//!
//! Weighed and not taken:
//! - `EPOLLEXCLUSIVE` alone wakes the first waiting process in the listener's wait queue: when
//!   they all idle, that is the same process every time, so it does not balance a burst of
//!   keep-alive connections; and with a gate, a woken process that says no would leave the
//!   connection until the next arrival (only an arrival wakes an exclusive waiter).
//! - A bounded accept batch alone: it spreads a burst a little, but is blind to load.
//! - `SO_REUSEPORT`, one socket per worker: the kernel hashes each connection to a socket, blind to
//!   load (16 connections over 4 sockets are rarely 4 each), and a socket's queue dies with its
//!   process, so every reload or recycling would reset the connections waiting in it.
//!
//! [`Supervisor::serve_http`]: crate::prefork::Supervisor::serve_http

use std::fs::File;
use std::io::Write;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{fence, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::http::AcceptPolicy;
use crate::prefork::workers::heartbeat::{HeartbeatSlot, NOT_ACCEPTING};

/// How often the table is read for the live slots and their request rates.
pub(crate) const RESCAN: Duration = Duration::from_millis(100);
/// The most requests a connection is kept alive for in process mode (nginx's
/// `keepalive_requests`, 1000 by default): then the client reconnects, to the process the gate
/// picks. At 100 for every connection (Apache's `MaxKeepAliveRequests`) load moved faster, but
/// on fast requests the reconnects cost the process that took them enough CPU to make the shares
/// swing (measured: busiest / least up to 1.5 at 64 connections over 2 processes, against
/// 1.02–1.06 at 1000); so fewer only for slow connections ([`KEEPALIVE_SECONDS`]).
pub(crate) const KEEPALIVE_REQUESTS: u64 = 1000;
/// How long, at the process's current request rate per connection, a connection is kept alive
/// at most: slow connections (a handler that waits on a database) would otherwise carry their
/// 1000 requests for minutes, and a connection the gate dealt to the wrong process (two gates
/// deciding at once in a burst of connects) would stay there. Never fewer than
/// [`KEEPALIVE_MIN_REQUESTS`] requests.
const KEEPALIVE_SECONDS: f64 = 2.0;
/// The fewest requests a connection is kept alive for (Apache's `MaxKeepAliveRequests`).
const KEEPALIVE_MIN_REQUESTS: u64 = 100;
/// A process whose score is within this factor of the lowest takes connections too: so that
/// usually more than one process polls the listener, and a new connection does not wait for a
/// process that has just stopped polling it to ask its gate again.
const SLACK: f64 = 1.1;
/// The weight of each new measure (over [`RESCAN`]) in a process's smoothed request rate: about
/// half a second of history, so that the rates follow the load without the noise of one
/// 100 ms window moving connections.
const SMOOTHING: f64 = 0.25;

/// One worker process's load, as its slot shows it.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Load {
    conns: u32,
    idle: u32,
    /// Whether it finished a request since the table was read before (≥ 100 ms ago).
    finishing: bool,
    /// Requests per second per connection, recently (`None`: not measured yet).
    per_conn: Option<f64>,
}

impl Load {
    /// Whether it can take a request now: an idle thread, or busy threads that finish requests
    /// (under load every thread is busy most of the time; a process whose threads are all stuck
    /// in long requests finishes none).
    fn available(&self) -> bool {
        self.idle > 0 || self.finishing
    }
}

/// Whether a process with load `me` takes a connection now, given its accepting siblings' loads.
fn takes(me: Load, siblings: &[Load]) -> bool {
    if !me.available() && siblings.iter().any(Load::available) {
        return false;
    }
    let rivals: Vec<&Load> = siblings
        .iter()
        .filter(|s| !me.available() || s.available())
        .collect();
    // A process not measured yet is taken to be as fast as the mean of the others.
    let known: Vec<f64> = rivals
        .iter()
        .copied()
        .chain(std::iter::once(&me))
        .filter_map(|l| l.per_conn)
        .collect();
    let mean = if known.is_empty() {
        1.0
    } else {
        known.iter().sum::<f64>() / known.len() as f64
    };
    let score = |l: &Load| l.per_conn.unwrap_or(mean) * f64::from(l.conns + 1);
    // The rates move connections only within a band above the fewest (a tenth of the mean, none
    // below 10 per process): with few connections per process, one more is a large share.
    let fewest = rivals.iter().map(|s| s.conns).fold(me.conns, u32::min);
    let total: u32 = rivals.iter().map(|s| s.conns).sum::<u32>() + me.conns;
    let band = total / (rivals.len() as u32 + 1) / 10;
    let in_band = |l: &Load| l.conns <= fewest + band;
    if !in_band(&me) {
        return false;
    }
    let least = rivals
        .iter()
        .filter(|s| in_band(s))
        .map(|s| score(s))
        .fold(f64::INFINITY, f64::min);
    score(&me) <= least * SLACK
}

/// The requests a connection is kept alive for, given the process's requests per second per
/// connection (`None`: not measured yet).
fn keepalive_cap(per_conn: Option<f64>) -> u64 {
    per_conn
        .map_or(KEEPALIVE_REQUESTS, |r| (r * KEEPALIVE_SECONDS) as u64)
        .clamp(KEEPALIVE_MIN_REQUESTS, KEEPALIVE_REQUESTS)
}

/// A slot as last read, for its rate.
#[derive(Debug, Clone, Copy)]
struct Seen {
    index: usize,
    pid: u32,
    requests: u64,
    conns: u32,
    finishing: bool,
}

/// The gate of one worker process, over the shared heartbeat table.
pub(crate) struct SlotGate {
    own: &'static HeartbeatSlot,
    slots: &'static [HeartbeatSlot],
    /// When the table was last read, and the live slots then.
    seen: Mutex<(Instant, Vec<Seen>)>,
    /// The table's gate ping (see the module's docs).
    ping: Option<File>,
}

impl SlotGate {
    pub(crate) fn new(
        own: &'static HeartbeatSlot,
        slots: &'static [HeartbeatSlot],
        ping: Option<File>,
    ) -> SlotGate {
        SlotGate {
            own,
            slots,
            seen: Mutex::new((Instant::now(), Vec::new())),
            ping,
        }
    }

    /// Wakes the waiting processes among the live slots of the last read (this one too unless
    /// `skip_own`): their gates ask again. Called after this process published the change.
    fn ping_waiting(&self, seen: &[Seen], skip_own: bool) {
        let Some(mut ping) = self.ping.as_ref() else {
            return;
        };
        // Pairs with the fence in `may_accept`: either that gate reads the change published
        // before this fence, or this reads the mark it set before its own.
        fence(Ordering::SeqCst);
        let own: *const HeartbeatSlot = self.own;
        let waiting = seen.iter().any(|s| {
            let slot = &self.slots[s.index];
            !(skip_own && std::ptr::eq(slot, own)) && slot.pid() == s.pid && slot.waiting()
        });
        if waiting {
            // Never fails but for a full counter (see the module's docs); a lost ping costs a
            // wait of one recheck, never a connection.
            let _ = ping.write(&1u64.to_ne_bytes());
        }
    }

    /// This process's load with `conns` connections, and whether it takes one more now, against
    /// the siblings of the read `seen` (their idle threads and connections read live).
    fn decide(&self, conns: u32, seen: &[Seen]) -> (Load, bool) {
        let own: *const HeartbeatSlot = self.own;
        let idle = |slot: &HeartbeatSlot| slot.threads().saturating_sub(slot.running());
        let mut me = Load {
            conns,
            idle: idle(self.own),
            finishing: false,
            per_conn: None,
        };
        let mut siblings = Vec::with_capacity(seen.len());
        for s in seen {
            let slot = &self.slots[s.index];
            if std::ptr::eq(slot, own) {
                me.finishing = s.finishing;
                me.per_conn = slot.rate();
            } else if slot.pid() == s.pid && slot.conns() != NOT_ACCEPTING {
                siblings.push(Load {
                    conns: slot.conns(),
                    idle: idle(slot),
                    finishing: s.finishing,
                    per_conn: slot.rate(),
                });
            }
        }
        (me, takes(me, &siblings))
    }

    /// Reads the live slots again: whether each finished a request since the last read, and (with
    /// `measure`) this process's own requests per connection per second since then (smoothed),
    /// which it publishes in its slot.
    fn rescan(&self, last: Instant, seen: &[Seen], now: Instant, measure: bool) -> Vec<Seen> {
        let dt = now.duration_since(last).as_secs_f64().max(1e-3);
        let own: *const HeartbeatSlot = self.own;
        (0..self.slots.len())
            .filter_map(|index| {
                let slot = &self.slots[index];
                let pid = slot.pid();
                if pid == 0 {
                    return None;
                }
                let requests = slot.requests();
                let conns = match slot.conns() {
                    NOT_ACCEPTING => 0,
                    n => n,
                };
                let before = seen.iter().find(|s| s.index == index && s.pid == pid);
                let finishing = before.is_some_and(|s| requests > s.requests);
                if let (Some(s), true) = (before, measure && std::ptr::eq(slot, own)) {
                    let done = requests.saturating_sub(s.requests);
                    let mean_conns = f64::from(s.conns + conns) / 2.0;
                    if mean_conns >= 1.0 {
                        let sample = done as f64 / dt / mean_conns;
                        let rate = match slot.rate() {
                            Some(old) => (1.0 - SMOOTHING) * old + SMOOTHING * sample,
                            None => sample,
                        };
                        slot.set_rate(Some(rate));
                    }
                }
                Some(Seen {
                    index,
                    pid,
                    requests,
                    conns,
                    finishing,
                })
            })
            .collect()
    }
}

impl SlotGate {
    /// Reads the table again when the last read is [`RESCAN`] old. The HTTP server's reactor
    /// asks its gate on every pass; the tower mode asks only when a connection waits, so it calls
    /// this every `RESCAN`: "finished a request since the last read" then covers the last
    /// 100–200 ms, not the whole quiet time before the next connection.
    #[cfg(feature = "tower")]
    pub(crate) fn refresh(&self) {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        if now.duration_since(seen.0) >= RESCAN {
            let fresh = self.rescan(seen.0, &seen.1, now, true);
            *seen = (now, fresh);
        }
    }
}

impl AcceptPolicy for SlotGate {
    fn may_accept(&self, conns: usize) -> bool {
        let conns = conns.min(NOT_ACCEPTING as usize - 2) as u32;
        self.own.set_conns(conns);
        // Marked waiting before the siblings are read, so that a sibling that publishes a change
        // after this read sees the mark and pings (see `ping_waiting`).
        let was_waiting = self.own.swap_waiting(true);
        fence(Ordering::SeqCst);
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        if now.duration_since(seen.0) >= RESCAN || seen.1.is_empty() {
            let fresh = self.rescan(seen.0, &seen.1, now, true);
            *seen = (now, fresh);
        }
        let (me, mut yes) = self.decide(conns, &seen.1);
        if yes && !me.available() && seen.0 != now {
            // About to take a connection with no idle thread to run it, on a read of the table
            // up to RESCAN old: a sibling started since then (at start-up, a respawn or a reload,
            // a worker writes its pid in its own slot) is not in it. Read the live slots again for
            // this decision before taking a connection that would wait behind busy threads.
            let fresh = self.rescan(seen.0, &seen.1, now, false);
            yes = self.decide(conns, &fresh).1;
        }
        if yes {
            // Claimed before the accept, so that a sibling deciding now counts this connection
            // (otherwise both would take one at a tie, and the counts drift apart).
            self.own.set_conns(conns + 1);
            self.own.swap_waiting(false);
        } else if !was_waiting {
            // This process stops taking: a waiting sibling may be the taker now.
            self.ping_waiting(&seen.1, true);
        }
        yes
    }

    fn closed(&self) {
        self.own.set_conns(NOT_ACCEPTING);
        self.own.swap_waiting(false);
        let seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        self.ping_waiting(&seen.1, true);
    }

    fn conn_closed(&self, conns: usize) {
        self.own
            .update_conns(conns.min(NOT_ACCEPTING as usize - 2) as u32);
        // One fewer here: this process, or a sibling that now weighs more against it, may be the
        // taker.
        let seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        self.ping_waiting(&seen.1, false);
    }

    fn wake_fd(&self) -> Option<RawFd> {
        self.ping.as_ref().map(File::as_raw_fd)
    }

    fn keepalive_requests(&self) -> Option<u64> {
        Some(keepalive_cap(self.own.rate()))
    }

    /// The connections the live processes of the last read have accepted, from their shared
    /// HTTP counters (a process started since then is counted from the next read, at most
    /// [`RESCAN`] later).
    fn accepted_everywhere(&self) -> u64 {
        let seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        seen.1
            .iter()
            .map(|s| &self.slots[s.index])
            .filter(|slot| slot.pid() != 0)
            .map(|slot| slot.metrics().accepted())
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Load with `conns` connections, `idle` idle threads, `per_conn` requests/s per connection
    /// (0: not measured; finishing requests when measured).
    fn l(conns: u32, idle: u32, per_conn: f64) -> Load {
        Load {
            conns,
            idle,
            finishing: per_conn > 0.0,
            per_conn: (per_conn > 0.0).then_some(per_conn),
        }
    }

    fn takers(loads: &[Load]) -> Vec<usize> {
        (0..loads.len())
            .filter(|&i| {
                let others: Vec<Load> = (0..loads.len())
                    .filter(|&j| j != i)
                    .map(|j| loads[j])
                    .collect();
                takes(loads[i], &others)
            })
            .collect()
    }

    #[test]
    fn without_measurements_the_fewest_connections_take_the_next_one() {
        assert!(takes(l(50, 0, 0.0), &[]));
        assert!(takes(l(3, 1, 0.0), &[l(3, 1, 0.0), l(4, 2, 0.0)]));
        assert!(!takes(l(4, 1, 0.0), &[l(3, 1, 0.0), l(4, 2, 0.0)]));
    }

    #[test]
    fn a_slower_process_gets_more_connections_until_the_rates_meet() {
        // 1000 vs 1500 requests/s per connection, 30 connections each: the slower takes the
        // next ones, up to 34 (the band: a tenth of the mean above the fewest).
        let fast = l(30, 1, 1500.0);
        assert!(takes(l(30, 1, 1000.0), &[fast]));
        assert!(!takes(fast, &[l(30, 1, 1000.0)]));
        assert!(takes(l(33, 1, 1000.0), &[fast]));
        assert!(!takes(l(34, 1, 1000.0), &[fast]));
        // Below 10 connections per process, the fewest connections only.
        assert!(!takes(l(9, 1, 1000.0), &[l(8, 1, 1500.0)]));
        assert!(takes(l(8, 1, 1500.0), &[l(9, 1, 1000.0)]));
        // Within 10 % of the lowest rate and in the band, both take.
        assert!(takes(l(8, 1, 1000.0), &[l(8, 1, 1050.0)]));
        assert!(takes(l(8, 1, 1050.0), &[l(8, 1, 1000.0)]));
        // A process not measured yet counts as the mean of the others.
        assert!(takes(l(7, 1, 0.0), &[l(8, 1, 1000.0), l(8, 1, 1000.0)]));
        assert!(!takes(l(9, 1, 0.0), &[l(8, 1, 1000.0), l(8, 1, 1000.0)]));
    }

    #[test]
    fn a_process_that_cannot_take_a_request_leaves_connections_to_one_that_can() {
        // Its only thread busy and no request finished: a sibling with an idle thread, or one
        // that finishes requests, takes the connection, whatever their connections.
        assert!(!takes(l(0, 0, 0.0), &[l(9, 1, 0.0)]));
        assert!(!takes(l(0, 0, 0.0), &[l(9, 0, 1000.0)]));
        assert!(takes(l(9, 1, 1000.0), &[l(0, 0, 0.0)]));
        // Every process stuck: the fewest connections still accept (they queue there).
        assert!(takes(l(2, 0, 0.0), &[l(2, 0, 0.0), l(3, 0, 0.0)]));
        assert!(!takes(l(3, 0, 0.0), &[l(2, 0, 0.0)]));
    }

    #[test]
    fn someone_always_takes_a_connection() {
        assert_eq!(
            takers(&[l(4, 0, 0.0), l(2, 1, 0.0), l(2, 3, 0.0), l(7, 0, 0.0)]),
            vec![1, 2]
        );
        assert_eq!(
            takers(&[l(4, 0, 900.0), l(2, 0, 0.0), l(5, 1, 700.0), l(6, 1, 900.0)]),
            vec![0]
        );
    }

    #[test]
    fn a_connection_is_kept_alive_for_about_two_seconds_of_requests() {
        assert_eq!(keepalive_cap(None), 1000);
        assert_eq!(keepalive_cap(Some(50.0)), 100);
        assert_eq!(keepalive_cap(Some(200.0)), 400);
        assert_eq!(keepalive_cap(Some(5000.0)), 1000);
        assert_eq!(keepalive_cap(Some(1.0)), 100);
    }

    #[test]
    fn idle_processes_with_different_rates_agree_on_a_taker() {
        // Two idle processes without connections (after a reload, or between bursts), whatever
        // rates they published: every gate reads the same numbers, so one of them takes the
        // next connection (when each measured the other's rate itself, both could say no).
        let table = Box::leak(Box::new(
            crate::prefork::workers::heartbeat::HeartbeatTable::new(2).unwrap(),
        ));
        let slots = table.leak_all();
        for (a, b) in [
            (Some(1000.0), Some(1500.0)),
            (Some(900.0), None),
            (None, None),
        ] {
            for (i, rate) in [a, b].into_iter().enumerate() {
                slots[i].reset(0);
                slots[i].set_pid(100 + i as u32);
                slots[i].set_threads(1);
                slots[i].set_conns(0);
                slots[i].set_rate(rate);
            }
            let gates = [
                SlotGate::new(&slots[0], slots, None),
                SlotGate::new(&slots[1], slots, None),
            ];
            // The faster (or unmeasured) one first: it leaves the connection to the slower one
            // only if that one takes it.
            let yes = [gates[1].may_accept(0), gates[0].may_accept(0)];
            assert!(yes.contains(&true), "{a:?} / {b:?}: nobody takes");
            assert_eq!(yes[0], b.unwrap_or(1.0) <= a.unwrap_or(1.0) * SLACK);
            // The one that said yes claimed the connection: the other takes the next one.
            let taker = if yes[0] { 1 } else { 0 };
            assert_eq!(slots[taker].conns(), 1);
            assert!(gates[1 - taker].may_accept(0), "{a:?} / {b:?}");
        }
    }

    #[test]
    fn a_process_with_every_thread_stuck_sees_a_sibling_started_since_its_last_read() {
        // Process 0's only thread is stuck in a request; process 1 starts after 0 last read the
        // table (at start-up, a worker writes its pid in its own slot). Within RESCAN of that
        // read, 0 must not take the next connection (it would wait behind the stuck thread)
        // while 1 has an idle thread.
        let table = Box::leak(Box::new(
            crate::prefork::workers::heartbeat::HeartbeatTable::new(2).unwrap(),
        ));
        let slots = table.leak_all();
        for slot in slots.iter() {
            slot.reset(0);
        }
        slots[0].set_pid(100);
        slots[0].set_threads(1);
        slots[0].set_conns(0);
        let stuck = crate::prefork::workers::heartbeat::Heartbeat::new(&slots[0]).count_running();
        let gate = SlotGate::new(&slots[0], slots, None);
        assert!(
            gate.may_accept(0),
            "alone, it takes connections even with its thread busy"
        );

        slots[1].set_pid(101);
        slots[1].set_threads(1);
        slots[1].set_conns(0);
        assert!(
            !gate.may_accept(0),
            "a sibling with an idle thread started since the last read takes the connection"
        );
        drop(stuck);
        assert!(
            gate.may_accept(0),
            "with its thread free again it takes its share"
        );
    }
}
