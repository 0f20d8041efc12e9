//! The answer's way back onto its connection, on the thread that completed the request (the
//! worker that ran the handler; or the thread that made the answer itself: a health route, a
//! refusal, a spare thread's self-call): [`write_answer`] serialises it, logs it, counts it and
//! writes it to the socket as far as the socket takes it, and the connection's cell acts on the
//! [`Answer`] ([`ConnCell`]'s [`AnswerBack::finish`], the lane's out-stage): at once when nobody
//! holds the cell, else through the cell's mailbox (`mailbox.rs`), which its holder looks at
//! after letting go. The lane's in-stage (an idle worker taking a socket's event, reading,
//! parsing, submitting) is `lane.rs`; both drive the connection through `ConnCell::drive`.
//!
//! A request reaches this file through its [`Reply`]'s `back` ([`finish`](super::handoff::finish)
//! in `handoff.rs`, the port), so that what answers on its own below the lane (the connection's
//! health routes, the depth refusal in `dispatch.rs`) never imports it: every arrow points down.

use std::cell::RefCell;
use std::io::{self, Write};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use crate::http::body::Body;
use crate::http::engine::conn::{Conn, Env, Next};
use crate::http::engine::handoff::{Answer, AnswerBack, Handoff, Reply};
use crate::http::engine::lane::ConnCell;
use crate::http::engine::stream;
use crate::http::ops::access_log::write_line;
use crate::http::ops::rate_limit::{suppressed_note, RateLimit, WARN_INTERVAL};
use crate::http::types::HttpResponse;
use crate::http::wire::date::DATE;
use crate::http::wire::response::{
    write_response, write_stream_head, OwnAnswer, StreamFraming, WriteOpts,
};
use crate::Error;

thread_local! {
    /// The buffer this thread serialises answers into, kept between answers (up to [`OUT_KEPT`]
    /// bytes of capacity) rather than allocated for each.
    static OUT: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// The largest answer buffer a thread keeps for its next answer.
const OUT_KEPT: usize = 64 * 1024;
/// The largest answer header map (in fields it holds room for) given back to its connection for
/// the next request head: a few dozen fields; a connection keeps no more than that while idle.
const HEADERS_KEPT: usize = 32;

impl AnswerBack for ConnCell {
    fn finish(
        self: Arc<Self>,
        handoff: &Arc<Handoff>,
        reply: Reply,
        result: Result<HttpResponse, Error>,
        now: Option<Instant>,
    ) {
        let answer = write_answer(handoff, reply, result, now);
        let now = answer.at;
        // The cell free (as it is, but for a pipelined request or a timer's pass): act on the
        // answer at once. Else leave it in the slot and look again: the holder, which let go
        // after that look failed, sees it in the slot.
        let mut answer = Some(answer);
        let take = |conn: &mut Conn, env: &mut Env<'_>| match answer.take() {
            Some(a) => conn.on_answer(a, env),
            None => Next::Keep,
        };
        if self.drive(None, handoff, now, false, take) {
            return;
        }
        if let Some(answer) = answer.take() {
            self.held.post(answer);
        }
        self.drive(None, handoff, now, false, |_, _| Next::Keep);
    }
}

/// Complete a request on this thread: serialise its answer, log it, count it, and write it to
/// the socket as far as the socket takes it (a streamed answer: all of it, waiting while the
/// socket is full). Returns the [`Answer`] for the connection (`rest`: what is left to write).
/// `now`: the completing thread's clock reading just taken, if it has one (a worker reads the
/// clock when its handler returns): the answer's `Date` and its duration in the metrics; `None`:
/// read here.
pub(super) fn write_answer(
    handoff: &Arc<Handoff>,
    r: Reply,
    mut result: Result<HttpResponse, Error>,
    now: Option<Instant>,
) -> Answer {
    if let Err(e) = &result {
        if e.http_status() == 500 {
            log::error!(target: "prefork_pool::http", "{e}");
        } else {
            log::warn!(target: "prefork_pool::http", "{e}");
        }
        result = Ok(handoff.cfg.error_page.pool_error(e));
    }
    // The answer is worked on where it lies (not moved out of `result`: a copy of it less).
    let Ok(resp) = &mut result else {
        unreachable!("an error was made an answer above")
    };
    let draining = handoff.draining.load(Ordering::SeqCst);
    // While draining, the last answer on a connection says `Connection: close`; an answer with
    // more (pipelined) input behind it keeps the connection so that input is answered too.
    let keep_alive = r.keep_alive && (!draining || r.link.pending.load(Ordering::SeqCst));
    let opts = WriteOpts {
        head: r.head_only,
        version: r.version,
        keep_alive,
    };
    if let Some(body) = Body::take(resp) {
        let Ok(resp) = result else {
            unreachable!("an error was made an answer above")
        };
        return write_streamed(handoff, r, resp, body, opts);
    }
    // This thread's buffer (taken, not borrowed: the connection's cell may come back here for a
    // pipelined request answered at once), given back below once written whole.
    let mut out = OUT.with(|o| std::mem::take(&mut *o.borrow_mut()));
    out.reserve(160 + resp.body().len());
    if !r.prefix.is_empty() {
        out.extend_from_slice(&r.prefix);
    }
    // One clock reading for the answer's `Date` and its duration in the metrics.
    let now = now.unwrap_or_else(Instant::now);
    let (bytes, keep_alive) =
        DATE.with(|d| write_response(&mut out, resp, opts, d.borrow_mut().get_at(now)));
    log_access(handoff, &r, resp, bytes);
    count_answer(handoff, &r, resp, out.len(), now);
    // The header map's allocation goes back to the connection for its next request head (as
    // hyper's connections keep theirs), unless it grew large.
    let headers = result.ok().and_then(|mut resp| {
        let mut headers = std::mem::take(resp.headers_mut());
        headers.clear();
        (headers.capacity() <= HEADERS_KEPT).then_some(headers)
    });
    let mut written = 0;
    let mut failed = false;
    while written < out.len() {
        match (&r.link.stream).write(&out[written..]) {
            Ok(0) => {
                failed = true;
                break;
            }
            Ok(n) => written += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => {
                failed = true;
                break;
            }
        }
    }
    let rest = if written == out.len() {
        if out.capacity() <= OUT_KEPT {
            out.clear();
            OUT.with(|o| *o.borrow_mut() = out);
        }
        Vec::new()
    } else {
        out.drain(..written);
        out
    };
    // The connection's socket is no longer this thread's to write: let go of it before the
    // connection goes on, so that a close on the way (`Connection: close`) closes it there and
    // then (see `Lane::close`).
    drop(r.link);
    Answer {
        rest,
        at: now,
        keep_alive,
        failed,
        headers,
    }
}

/// The access log line for the answer, with `bytes` of body sent.
fn log_access(handoff: &Handoff, r: &Reply, resp: &HttpResponse, bytes: usize) {
    if let (Some(fmt), Some(req)) = (handoff.cfg.access_log.as_ref(), r.log.as_ref()) {
        let status = resp.status().as_u16();
        write_line(
            fmt,
            &r.peer,
            req,
            status,
            resp.headers(),
            bytes,
            r.started.elapsed(),
        );
    }
}

/// Count an answer in the server's HTTP metrics (`bytes_out`: what was written for it, `now`:
/// when it was done).
fn count_answer(handoff: &Handoff, r: &Reply, resp: &HttpResponse, bytes_out: usize, now: Instant) {
    let status = resp.status().as_u16();
    if resp.extensions().get::<OwnAnswer>().is_some() {
        handoff.metrics.own_answer(status);
    }
    handoff.metrics.answered(
        r.method,
        status,
        bytes_out,
        now.saturating_duration_since(r.started),
    );
}

/// The cut streams' warning: one line per interval.
static STREAM_WARNINGS: RateLimit = RateLimit::new(WARN_INTERVAL);

/// [`write_answer`] for a streamed [`Body`]: the head and the body are written by this thread
/// (the worker that ran the handler), chunk by chunk, waiting while the socket is full; the
/// connection stays in flight (nothing else reads or writes it) until then. A stream cut short
/// closes the connection.
fn write_streamed(
    handoff: &Arc<Handoff>,
    r: Reply,
    resp: HttpResponse,
    body: Body,
    opts: WriteOpts,
) -> Answer {
    let declared = body.length().or_else(|| {
        resp.headers()
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
    });
    let framing = StreamFraming::choose(resp.status(), opts.version, declared);
    let mut head = Vec::with_capacity(r.prefix.len() + 256);
    head.extend_from_slice(&r.prefix);
    let keep_alive =
        DATE.with(|d| write_stream_head(&mut head, &resp, opts, d.borrow_mut().get(), framing));
    let outcome = stream::send(
        &r.link,
        head,
        body,
        framing,
        opts.head,
        handoff.cfg.write_timeout,
        &handoff.stopped,
    );
    handoff.streams.count(&outcome);
    let (bytes, failed) = match &outcome {
        Ok(n) => (*n, false),
        Err(e) => {
            if let Some(suppressed) = STREAM_WARNINGS.allow(Instant::now()) {
                log::warn!(
                    target: "prefork_pool::http",
                    "a streamed answer to {} was cut: {e}{}",
                    r.peer,
                    suppressed_note(suppressed)
                );
            }
            (0, true)
        }
    };
    log_access(handoff, &r, &resp, bytes as usize);
    let now = Instant::now();
    count_answer(handoff, &r, &resp, bytes as usize, now);
    drop(resp);
    drop(r.link);
    Answer {
        rest: Vec::new(),
        at: now,
        keep_alive,
        failed,
        headers: None,
    }
}
