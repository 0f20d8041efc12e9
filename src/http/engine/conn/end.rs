//! How a connection ends (a part of the connection's module, `conn/mod.rs`, in a file of its own):
//! its deadlines ([`Conn::on_timer`]: 408 for a slow head or body, the keep-alive wait's end), the
//! drain ([`Conn::drain_idle`], [`DRAIN_GRACE`]) and the stop ([`Conn::on_stop`]: 503 to a request
//! still arriving), the refusal of a request ([`Conn::fail`]: its error answer, then close), and
//! the lingering close ([`LINGER`]: our side shut, what the client still sends read and dropped, so
//! that a request it wrote meanwhile meets an end of file, never a reset; skipped when the client
//! said it closes, [`Conn::closes_at_once`]).

use std::io::Read;

use bytes::BytesMut;
use http::Version;

use super::{Conn, Env, Next, State, DRAIN_GRACE, LINGER, READ_CHUNK};
use crate::http::wire::date::with_date;
use crate::http::wire::parse::HttpError;
use crate::http::wire::response::{write_response, WriteOpts, SHUTTING_DOWN};

impl Conn {
    /// Read and drop what the client sent, so that closing sends a FIN rather than a reset.
    pub(crate) fn discard_input(&mut self) {
        let mut tmp = [0u8; READ_CHUNK];
        for _ in 0..64 {
            match (&self.link.stream).read(&mut tmp) {
                Ok(n) if n > 0 => {}
                _ => return,
            }
        }
    }

    /// Draining: a connection with no request under way (a new one that has sent nothing yet, or a
    /// kept-alive one between two requests) waits for its next request until [`DRAIN_GRACE`]
    /// after it became idle at the latest, then gets a lingering close: at once if it has been
    /// idle that long already. One that became idle a moment ago is not closed at once: its
    /// client may be sending its next request now, and would read an end of file instead of an
    /// answer. A request that comes in time is answered with `Connection: close`.
    pub(crate) fn drain_idle(&mut self, env: &mut Env<'_>) -> Next {
        if !matches!(self.state, State::Idle | State::Proxy) || !self.buf.is_empty() {
            return Next::Keep;
        }
        let until = self.idle_since + DRAIN_GRACE;
        self.deadline = Some(self.deadline.map_or(until, |d| d.min(until)));
        self.on_timer(env)
    }

    /// Whether a request is arriving now: its head or its body partly read.
    pub(crate) fn receiving(&self) -> bool {
        matches!(self.state, State::Head | State::Body(_))
    }

    /// The stop's deadline has come (its graceful timeout, or a stop at once): a request still
    /// arriving is answered 503 (`Retry-After: 1`) and the connection gets a lingering close, so
    /// that its client reads why instead of an end of file. Anything else is left as it is: a
    /// request in flight is answered by the Pool (503 if it is not done by then), an answer being
    /// written goes on until the reactor's stop closes the connection.
    pub(crate) fn on_stop(&mut self, env: &mut Env<'_>) -> Next {
        if !self.receiving() {
            return Next::Keep;
        }
        self.fail(HttpError::new(503, SHUTTING_DOWN), env)
    }

    /// Closes a connection between two requests the way that loses no request: our side is shut
    /// (the client reads an end of file, not a reset), then what the client still sends is read
    /// and dropped until it closes too or `LINGER` passes.
    fn close_lingering(&mut self, env: &mut Env<'_>) -> Next {
        self.link.stream.shutdown_write();
        self.state = State::Lingering;
        self.buf = BytesMut::new();
        self.deadline = Some(env.now + LINGER);
        self.read_and_advance(false, env)
    }

    /// A timer check: close or answer 408 when the current phase's deadline has passed.
    pub(crate) fn on_timer(&mut self, env: &mut Env<'_>) -> Next {
        match self.deadline {
            Some(d) if d <= env.now => {}
            _ => return Next::Keep,
        }
        match self.state {
            // No PROXY header in time: closed without an answer (the peer is no HTTP client).
            State::Proxy => Next::Close,
            // The keep-alive (or drain) wait is over: a lingering close, so that a request the
            // client sent just now meets an end of file, never a reset.
            State::Idle => self.close_lingering(env),
            State::Head => self.fail(
                HttpError::new(408, "timed out reading the request head"),
                env,
            ),
            State::Body(ref incoming) => {
                let reason = incoming.late_reason(&env.handoff.cfg, env.now);
                self.fail(HttpError::new(408, reason), env)
            }
            State::InFlight => Next::Keep,
            State::Writing | State::Closing | State::Lingering => Next::Close,
        }
    }

    /// Whether the last answer, written whole, may close the connection at once, without the
    /// lingering read to the client's end of file: the client said it closes after this request
    /// (it sends nothing more on the connection, RFC 9112 section 9.6), sent nothing after it,
    /// and the socket is a plain one (TLS: the client's `close_notify` may come). Every close the
    /// server decides (a refusal, the drain, the keep-alive cap) lingers, so that a request the
    /// client wrote meanwhile meets an end of file, never a reset. Saves a read, an event and a
    /// wake-up per connection of a connect-per-request client (nginx's default `proxy_pass`).
    pub(super) fn closes_at_once(&self) -> bool {
        self.client_closes
            && self.buf.is_empty()
            && !self.read_paused
            && self.link.stream.is_plain()
    }

    /// Answer `e` and close.
    pub(super) fn fail(&mut self, e: HttpError, env: &mut Env<'_>) -> Next {
        self.client_closes = false;
        crate::http::ops::refusals::log_refusal(&self.peer, &e);
        let resp = env.handoff.cfg.error_page.refusal(&e);
        let opts = WriteOpts {
            head: false,
            version: Version::HTTP_11,
            keep_alive: false,
        };
        let before = self.out.len();
        with_date(|date| write_response(&mut self.out, &resp, opts, date));
        let metrics = &env.handoff.metrics;
        metrics.own_answer(e.status);
        metrics.wrote(self.out.len() - before);
        self.buf.clear();
        self.state = State::Closing;
        self.deadline = Some(env.now + env.handoff.cfg.write_timeout);
        self.flush(env)
    }
}
