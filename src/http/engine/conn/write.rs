//! How a connection writes (a part of the connection's module, `conn/mod.rs`, in a file of its
//! own): the answer to its request in flight ([`Conn::on_answer`], on the thread that completed the
//! request: `answer.rs` wrote what the socket took, the rest goes out here as the socket makes
//! room), what it answers itself (a `100 Continue`, a refusal), and the phase after an answer: the
//! next request (kept alive) or the close (lingering, or at once when the client said it closes).
//!
//! So a request's path enters each stage's file once: `mod.rs` for its bytes (read, parse,
//! submit), this file for its answer. A kept-alive answer with nothing pipelined and the client
//! still there leaves the connection waiting for input from here; only buffered input (or reading
//! paused on a full buffer) goes back to the reading stage.

use std::io::{self, Write};

use bytes::BytesMut;

use super::{Conn, Env, Next, State, DRAIN_GRACE, LINGER};
use crate::http::engine::handoff::Answer;

impl Conn {
    /// The answer to the request in flight, already written (or partly: `rest` is what is left).
    pub(crate) fn on_answer(&mut self, answer: Answer, env: &mut Env<'_>) -> Next {
        let Answer {
            rest,
            keep_alive,
            failed,
            headers,
            ..
        } = answer;
        if !matches!(self.state, State::InFlight) {
            return Next::Keep;
        }
        if headers.is_some() {
            self.spare_headers = headers;
        }
        if failed {
            return Next::Close;
        }
        if self.out_pos >= self.out.len() {
            self.out = rest;
            self.out_pos = 0;
        } else {
            self.out.extend_from_slice(&rest);
        }
        self.state = if keep_alive {
            State::Writing
        } else {
            State::Closing
        };
        if self.out_pos < self.out.len() || self.link.stream.wants_write() {
            // Something to write (else `flush` sets the next phase's deadline at once).
            self.deadline = Some(env.now + env.handoff.cfg.write_timeout);
        }
        self.flush(env)
    }

    /// Write what is left of `out`, as far as the socket takes it; once it is all out, go on to
    /// the next phase: after an answer on a kept-alive connection, the next request (what was
    /// pipelined, or what waited in the socket while reading was paused); after a last answer,
    /// the close.
    pub(super) fn flush(&mut self, env: &mut Env<'_>) -> Next {
        while self.out_pos < self.out.len() {
            match (&self.link.stream).write(&self.out[self.out_pos..]) {
                Ok(0) => return Next::Close,
                Ok(n) => {
                    self.out_pos += n;
                    if matches!(self.state, State::Writing | State::Closing) {
                        self.deadline = Some(env.now + env.handoff.cfg.write_timeout);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Next::Keep,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return Next::Close,
            }
        }
        // TLS: the ciphertext of what was written may still wait (`interest` then asks for room
        // to write); a plain socket has nothing to flush.
        match (&self.link.stream).flush() {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Next::Keep,
            Err(_) => return Next::Close,
        }
        self.out.clear();
        self.out_pos = 0;
        match self.state {
            State::Writing => {
                self.state = State::Idle;
                self.idle_since = env.now;
                self.deadline = Some(env.now + env.handoff.cfg.keepalive_timeout);
                if env.draining {
                    // An answer written before the drain began may have said keep-alive: the
                    // client's next request (perhaps on the wire already) is answered with
                    // `Connection: close` if it comes within the drain grace.
                    let until = env.now + DRAIN_GRACE;
                    self.deadline = self.deadline.map(|d| d.min(until));
                }
                // Resume: parse what was pipelined; read what waited in the socket if reading
                // had stopped (otherwise everything that arrived was read already).
                // Nothing buffered and the client still there (a kept-alive request with nothing
                // pipelined): nothing to parse, so the connection waits for input without going
                // back to its reading stage.
                if std::mem::take(&mut self.read_paused) {
                    self.read_and_advance(true, env)
                } else if self.buf.is_empty() && !self.peer_eof {
                    Next::Keep
                } else {
                    self.after_input(env)
                }
            }
            State::Closing => {
                self.link.stream.shutdown_write();
                if self.closes_at_once() {
                    return Next::Close;
                }
                self.state = State::Lingering;
                self.buf = BytesMut::new();
                self.deadline = Some(env.now + LINGER);
                self.read_and_advance(false, env)
            }
            _ => Next::Keep,
        }
    }
}
