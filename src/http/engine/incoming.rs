//! A request body as it arrives on its connection: decoded as its bytes come ([`BodyDecoder`]),
//! held in memory or, past [`spool_body_above`](crate::http::ServerBuilder::spool_body_above), in a
//! temporary file ([`Spool`]), and held to its deadlines: [`body_timeout`] between two reads, and
//! the rate floor ([`min_body_rate`]). Nothing here touches a socket: the connection feeds it what
//! it has read and asks it when to give up.
//!
//! [`body_timeout`]: crate::http::ServerBuilder::body_timeout
//! [`min_body_rate`]: crate::http::ServerBuilder::min_body_rate

use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};

use crate::http::engine::handoff::ConnConfig;
use crate::http::engine::spool::{RequestBody, Spool};
use crate::http::wire::decode::BodyDecoder;
use crate::http::wire::parse::{Framing, Head, HttpError};

/// The most memory reserved up front for a body (its `Content-Length`, up to this).
const RESERVE_AT_MOST: u64 = 1 << 20;

/// A request whose head is parsed and whose body is arriving.
#[derive(Debug)]
pub(crate) struct Incoming {
    head: Head,
    decoder: BodyDecoder,
    /// The body so far; once in `spool`, only what came since the last read.
    body: Vec<u8>,
    /// The body so far, past `spool_above` bytes: in a temporary file.
    spool: Option<Spool>,
    /// The end of the head: where the rate floor's deadline is counted from.
    started: Instant,
    /// The last read that brought some of the body (or `started`).
    last_read: Instant,
    /// Bytes of the body taken so far, chunk framing included.
    received: u64,
}

impl Incoming {
    /// The body of `head` (framed by a length or chunked), from `now`: nothing of it taken yet.
    pub(crate) fn new(head: Head, now: Instant) -> Box<Incoming> {
        let reserve = match head.framing {
            Framing::Length(n) => n.min(RESERVE_AT_MOST) as usize,
            _ => 0,
        };
        Box::new(Incoming {
            decoder: BodyDecoder::new(head.framing),
            head,
            body: Vec::with_capacity(reserve),
            spool: None,
            started: now,
            last_read: now,
            received: 0,
        })
    }

    /// Takes what `buf` holds of the body (removing it from `buf`), at `now`. `Ok(true)` once the
    /// body is complete (then [`finish`](Self::finish)); an error is the answer to refuse the
    /// request with (a framing error, the body limit, a temporary file that cannot be written).
    pub(crate) fn take(
        &mut self,
        buf: &mut BytesMut,
        cfg: &ConnConfig,
        now: Instant,
    ) -> Result<bool, HttpError> {
        let (n, done) = self.decoder.decode(buf, &mut self.body, &cfg.limits)?;
        buf.advance(n);
        if n > 0 {
            self.received += n as u64;
            self.last_read = now;
        }
        if let Err(e) = self.spool_out(cfg.spool_above) {
            log::error!(
                target: "prefork_pool::http",
                "cannot write a request body to a temporary file in {}: {e}; the request is \
                 answered 500 (free space there, or point TMPDIR at a writable directory)",
                std::env::temp_dir().display()
            );
            return Err(HttpError::new(500, "cannot store the request body"));
        }
        Ok(done)
    }

    /// Past `above` bytes the body goes to a temporary file: what `body` holds is moved there
    /// (once it is in a file, after every read).
    fn spool_out(&mut self, above: u64) -> std::io::Result<()> {
        if self.spool.is_none() {
            if self.body.len() as u64 <= above {
                return Ok(());
            }
            self.spool = Some(Spool::create()?);
        }
        match &mut self.spool {
            Some(s) if !self.body.is_empty() => s.take_from(&mut self.body),
            _ => Ok(()),
        }
    }

    /// The complete request: its head, and its body in memory, or in a file (the `Vec` empty).
    pub(crate) fn finish(self) -> Result<(Head, Vec<u8>, Option<RequestBody>), HttpError> {
        match self.spool.map(Spool::finish).transpose() {
            Ok(spooled) => Ok((self.head, self.body, spooled)),
            Err(e) => {
                log::error!(
                    target: "prefork_pool::http",
                    "cannot read back a spooled request body: {e}; the request is answered 500 \
                     (check the temporary directory {})",
                    std::env::temp_dir().display()
                );
                Err(HttpError::new(500, "cannot store the request body"))
            }
        }
    }

    /// When the body must be complete at the latest under the rate floor: `body_timeout` after
    /// the end of its head, plus one second for every `min_body_rate` bytes received, as Apache
    /// `mod_reqtimeout`'s `MinRate` extends its body timeout. `None` without a floor
    /// (`min_body_rate` 0, or a time beyond any `Instant`).
    fn floor(&self, cfg: &ConnConfig) -> Option<Instant> {
        if cfg.min_body_rate == 0 {
            return None;
        }
        let nanos = u128::from(self.received) * 1_000_000_000 / u128::from(cfg.min_body_rate);
        let earned = Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX));
        self.started
            .checked_add(cfg.body_timeout.saturating_add(earned))
    }

    /// When to give up on the body: `body_timeout` after its last read, or the floor's deadline,
    /// whichever comes first.
    pub(crate) fn deadline(&self, cfg: &ConnConfig) -> Instant {
        let next_read = self.last_read + cfg.body_timeout;
        self.floor(cfg).map_or(next_read, |f| f.min(next_read))
    }

    /// Why the body's deadline has passed at `now`, for its 408: it came slower than the floor,
    /// or not at all for `body_timeout`.
    pub(crate) fn late_reason(&self, cfg: &ConnConfig, now: Instant) -> &'static str {
        if self.floor(cfg).is_some_and(|f| f <= now) {
            "request body too slow: it arrived below the server's minimum rate"
        } else {
            "timed out reading the request body"
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::wire::head_scan::parse_head;
    use crate::http::wire::parse::Limits;

    fn cfg(body_timeout: Duration, min_body_rate: u64) -> ConnConfig {
        ConnConfig {
            body_timeout,
            min_body_rate,
            ..ConnConfig::for_tests()
        }
    }

    fn upload(len: usize) -> Box<Incoming> {
        let raw = format!("POST / HTTP/1.1\r\nHost: t\r\nContent-Length: {len}\r\n\r\n");
        let head = parse_head(raw.as_bytes(), &Limits::default()).unwrap();
        Incoming::new(head, Instant::now())
    }

    #[test]
    fn the_floor_grants_one_second_per_min_body_rate_bytes_after_the_body_timeout() {
        let cfg = cfg(Duration::from_secs(10), 100);
        let mut body = upload(1000);
        let t0 = body.started;
        // Nothing yet: body_timeout, from the floor and from the last read alike.
        assert_eq!(body.deadline(&cfg), t0 + Duration::from_secs(10));
        // 50 bytes 9 s later: half a second earned; the floor (10.5 s) is before the next read's.
        let mut buf = BytesMut::from(&[b'x'; 50][..]);
        let t9 = t0 + Duration::from_secs(9);
        assert_eq!(body.take(&mut buf, &cfg, t9), Ok(false));
        assert!(buf.is_empty());
        assert_eq!(body.deadline(&cfg), t0 + Duration::from_millis(10_500));
        assert_eq!(
            body.late_reason(&cfg, t0 + Duration::from_millis(10_500)),
            "request body too slow: it arrived below the server's minimum rate"
        );
        // 950 more: the body is complete.
        let mut buf = BytesMut::from(&[b'x'; 950][..]);
        assert_eq!(body.take(&mut buf, &cfg, t9), Ok(true));
        let (_, bytes, spooled) = body.finish().unwrap();
        assert_eq!((bytes.len(), spooled.is_none()), (1000, true));
    }

    #[test]
    fn a_fast_body_is_limited_by_the_wait_between_reads_and_no_floor_means_none() {
        let mut body = upload(100_000);
        let t0 = body.started;
        let mut buf = BytesMut::from(&[b'x'; 50_000][..]);
        let t1 = t0 + Duration::from_secs(1);
        // 50 kB in 1 s at a floor of 100 B/s: 500 s earned; the next read's 10 s come first.
        let floor = cfg(Duration::from_secs(10), 100);
        assert_eq!(body.take(&mut buf, &floor, t1), Ok(false));
        assert_eq!(body.deadline(&floor), t1 + Duration::from_secs(10));
        assert_eq!(
            body.late_reason(&floor, t1 + Duration::from_secs(10)),
            "timed out reading the request body"
        );
        // Without a floor, only the wait between reads.
        let none = cfg(Duration::from_secs(10), 0);
        assert_eq!(body.floor(&none), None);
        assert_eq!(body.deadline(&none), t1 + Duration::from_secs(10));
    }
}
