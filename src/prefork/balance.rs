//! Balanced, load-aware accept between the worker processes of [`Supervisor::serve_http`]: the
//! [`AcceptGate`] each worker's HTTP server asks before it accepts a connection.
//!
//! Every worker process accepts on the same listen socket. Left to the kernel, the process that
//! happens to be waiting in `epoll_wait` takes what is queued: with keep-alive clients, one process
//! held 51 of 80 connections (request shares 16/44/26/15 % over 4 processes), and a process whose
//! handler threads were all busy went on accepting while a sibling idled. So each process
//! publishes, in its heartbeat slot (shared memory), its open connections (the reactor, on every
//! pass) and its running requests (the handler threads, as each request starts and ends), and
//! accepts only while
//!
//! - it has an idle handler thread, or no sibling has one (then someone must take the connection);
//! - and it has no more open connections than the least loaded of those siblings (the ones with an
//!   idle thread, when it has one itself).
//!
//! The least loaded process always passes, so a connection is never left without a taker. While
//! its gate says no, a process does not poll the listener at all (no wake-up, no thundering herd)
//! and asks again every 10 ms; while it says yes, it polls the listener level-triggered and
//! takes at most a small batch per wake-up, asking before each `accept`.
//!
//! Weighed and not taken:
//! - `EPOLLEXCLUSIVE` alone wakes the first waiting process in the listener's wait queue: when
//!   they all idle, that is the same process every time, so it does not balance a keep-alive
//!   burst; and with the gate, a woken process that says no would leave the connection until the
//!   next one arrives (only an arrival wakes an exclusive waiter).
//! - `SO_REUSEPORT`, one socket per worker: the kernel hashes each connection to a socket, blind to
//!   load (16 connections over 4 sockets are rarely 4 each), and a socket's queue dies with its
//!   process, so every reload or recycling would reset the connections waiting in it.
//!
//! [`Supervisor::serve_http`]: super::Supervisor::serve_http

use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::heartbeat::{HeartbeatSlot, NOT_ACCEPTING};
use crate::http::AcceptGate;

/// How often the list of live slots is read again (a new sibling is seen within this).
const RESCAN: Duration = Duration::from_millis(100);

/// One worker process's load, as its slot shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Load {
    conns: u32,
    idle: u32,
}

/// Whether a process with load `me` takes a connection now, given its accepting siblings' loads.
fn takes(me: Load, siblings: &[Load]) -> bool {
    let sibling_idle = siblings.iter().any(|s| s.idle > 0);
    if me.idle == 0 && sibling_idle {
        return false;
    }
    siblings
        .iter()
        .filter(|s| me.idle == 0 || s.idle > 0)
        .map(|s| s.conns)
        .min()
        .map_or(true, |least| me.conns <= least)
}

/// The gate of one worker process, over the shared heartbeat table.
pub(crate) struct SlotGate {
    own: &'static HeartbeatSlot,
    slots: &'static [HeartbeatSlot],
    /// When the table was last scanned, and the indices of the slots that had a worker then.
    live: Mutex<(Instant, Vec<usize>)>,
}

impl SlotGate {
    pub(crate) fn new(own: &'static HeartbeatSlot, slots: &'static [HeartbeatSlot]) -> SlotGate {
        SlotGate {
            own,
            slots,
            live: Mutex::new((Instant::now() - RESCAN, Vec::new())),
        }
    }

    fn load(slot: &HeartbeatSlot) -> Load {
        Load {
            conns: slot.conns(),
            idle: slot.threads().saturating_sub(slot.running()),
        }
    }
}

impl AcceptGate for SlotGate {
    fn may_accept(&self, conns: usize) -> bool {
        let conns = conns.min(NOT_ACCEPTING as usize - 1) as u32;
        self.own.set_conns(conns);
        let me = Load {
            conns,
            idle: Self::load(self.own).idle,
        };
        let mut live = self.live.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        if now.duration_since(live.0) >= RESCAN {
            live.0 = now;
            live.1 = (0..self.slots.len())
                .filter(|&i| self.slots[i].pid() != 0)
                .collect();
        }
        let own: *const HeartbeatSlot = self.own;
        let siblings: Vec<Load> = live
            .1
            .iter()
            .map(|&i| &self.slots[i])
            .filter(|s| !std::ptr::eq(*s, own) && s.pid() != 0 && s.conns() != NOT_ACCEPTING)
            .map(Self::load)
            .collect();
        takes(me, &siblings)
    }

    fn closed(&self) {
        self.own.set_conns(NOT_ACCEPTING);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn l(conns: u32, idle: u32) -> Load {
        Load { conns, idle }
    }

    #[test]
    fn the_least_loaded_process_with_an_idle_thread_takes_the_connection() {
        // Alone: always.
        assert!(takes(l(50, 0), &[]));
        // Fewest connections (ties included) among the idle ones.
        assert!(takes(l(3, 1), &[l(3, 1), l(4, 2)]));
        assert!(!takes(l(4, 1), &[l(3, 1), l(4, 2)]));
        // A sibling with more connections but no idle thread does not count.
        assert!(takes(l(5, 1), &[l(1, 0), l(5, 1)]));
    }

    #[test]
    fn a_saturated_process_leaves_connections_to_a_sibling_with_an_idle_thread() {
        assert!(!takes(l(0, 0), &[l(9, 1)]));
        // Every process saturated: the least connected one still accepts (they queue there).
        assert!(takes(l(2, 0), &[l(2, 0), l(3, 0)]));
        assert!(!takes(l(3, 0), &[l(2, 0)]));
    }

    #[test]
    fn someone_always_takes_a_connection() {
        let loads = [l(4, 0), l(2, 1), l(2, 3), l(7, 0)];
        let takers = (0..loads.len())
            .filter(|&i| {
                let others: Vec<Load> = (0..loads.len())
                    .filter(|&j| j != i)
                    .map(|j| loads[j])
                    .collect();
                takes(loads[i], &others)
            })
            .count();
        assert_eq!(takers, 2);
    }
}
