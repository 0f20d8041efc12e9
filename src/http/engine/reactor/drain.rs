//! How the reactor stops: a graceful stop waits out the health routes' drain delay (listeners
//! open, readiness at 503), then drains (the listen backlog served, the listeners closed, idle
//! connections closed after their grace); at the drain's deadline, or a stop at once, every
//! connection still sending a request is answered 503 ([`Conn::on_stop`]).

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::Reactor;
#[cfg(doc)]
use crate::http::engine::conn::Conn;

impl Reactor {
    /// A graceful stop: drain now, or after the health routes' drain delay (listeners open,
    /// readiness at 503), within the graceful `deadline`.
    pub(super) fn shutdown_command(&mut self, deadline: Instant, now: Instant) {
        let delay = self
            .handoff
            .cfg
            .health
            .as_ref()
            .map_or(Duration::ZERO, |h| h.drain_delay);
        if delay.is_zero() || self.drain_deadline.is_some() {
            return self.begin_drain(deadline, now);
        }
        let at = (now + delay).min(deadline);
        if !matches!(self.drain_at, Some((a, _)) if a <= at) {
            self.drain_at = Some((at, deadline));
        }
    }

    /// Starts the drain, to end by `deadline` at the latest; a drain under way keeps the earlier
    /// of its deadline and this one (a stop at once after a graceful one).
    pub(super) fn begin_drain(&mut self, deadline: Instant, now: Instant) {
        self.drain_at = None;
        if let Some(d) = self.drain_deadline {
            self.drain_deadline = Some(d.min(deadline));
            return;
        }
        // Serve what is already in the listen backlog (whatever the gate says: in process mode,
        // the siblings may be draining too), then stop listening. Not when stopping at once.
        if let Some(gate) = &self.gate {
            gate.closed();
        }
        self.drain_deadline = Some(deadline);
        self.paused_until = None;
        if !self.at_once {
            for i in 0..self.listeners.len() {
                self.accept(i, now);
            }
        }
        self.paused_until = None;
        // At once after the backlog: a connection that comes in between is reset by the kernel
        // when the listener closes, after its client may have sent its request.
        self.close_listeners();
        self.handoff.draining.store(true, Ordering::SeqCst);
        // A connection with no request under way is closed now (a lingering close), unless it
        // was accepted or answered less than `DRAIN_GRACE` ago: its client may be sending the
        // next request now, so it has the rest of that grace, not a whole keep-alive or head
        // timeout; its next request is answered with `Connection: close`.
        for cell in self.lane.cells() {
            cell.with(&self.handoff, now, true, |conn, env| conn.drain_idle(env));
        }
    }

    /// The drain's deadline has come (its graceful timeout, or a stop at once) with `active`
    /// connections under way: each one still receiving its request is answered 503 now
    /// ([`Conn::on_stop`]), never closed without an answer; requests in flight are answered by
    /// the Pool's shutdown that follows (503 unless done by then).
    pub(super) fn cut_drain_short(&mut self, active: usize, now: Instant) {
        let mut receiving = 0;
        for cell in self.lane.cells() {
            cell.with(&self.handoff, now, true, |conn, env| {
                receiving += usize::from(conn.receiving());
                conn.on_stop(env)
            });
        }
        let running = active.saturating_sub(receiving);
        if self.at_once {
            log::info!(
                target: "prefork_pool::http",
                "stopping at once: {receiving} connection(s) still sending a request answered 503; \
                 {running} with a request running or an answer being written closed (running \
                 requests are answered 503)"
            );
        } else {
            log::warn!(
                target: "prefork_pool::http",
                "graceful shutdown timed out with {active} connection(s) still open: \
                 {receiving} still sending a request answered 503, {running} with a request \
                 running or an answer being written closed (running requests are answered 503); \
                 raise the graceful timeout if requests need longer, or lower body_timeout or \
                 raise min_body_rate so that stalled uploads end before it"
            );
        }
    }

    pub(super) fn close_listeners(&mut self) {
        for i in 0..self.listeners.len() {
            if !self.gated_off {
                self.deregister_listener(i);
            }
            if let Some(l) = self.listeners[i].take() {
                self.handoff.lookup.owned.remove(l.raw_fd());
                l.close();
            }
        }
        self.gated_off = false;
    }
}
