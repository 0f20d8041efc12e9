//! The one record of what each worker runs: the pool keeps it, in each worker's slot while the
//! job runs and, for a thread the watchdog retired while its handler still runs, in a list of its
//! own until that handler returns (a retired thread's record outlives its slot). The HTTP server's
//! stuck report and the pre-fork worker's heartbeat read it ([`Record`]); neither keeps a table
//! of its own.
//!
//! What a job is, in words, is the [`Label`] its pool's describer wrote when a worker claimed it
//! (the HTTP server writes the request line); a pool without a describer records empty labels.

use std::fmt;
use std::time::Instant;

/// The longest label kept, in bytes; a longer one is cut (at a character boundary) and ends
/// with `...`.
pub(crate) const LABEL_MAX: usize = 240;

/// What a job is, in words (e.g. `GET /x HTTP/1.1`): a fixed buffer, so that recording it costs
/// no allocation on the request's path.
#[derive(Clone, Copy)]
pub(crate) struct Label {
    len: u8,
    /// It was cut: nothing more goes in.
    full: bool,
    buf: [u8; LABEL_MAX],
}

impl Label {
    pub(crate) const EMPTY: Label = Label {
        len: 0,
        full: false,
        buf: [0; LABEL_MAX],
    };

    /// Empties the label (for the next job's words).
    #[inline]
    pub(crate) fn clear(&mut self) {
        self.len = 0;
        self.full = false;
    }

    /// Appends `s`, cut at a character boundary when the label is full (it then ends with
    /// `...`).
    #[inline]
    pub(crate) fn push(&mut self, s: &str) -> &mut Self {
        let at = self.len as usize;
        let room = LABEL_MAX - at;
        if self.full {
            return self;
        }
        if s.len() <= room {
            self.buf[at..at + s.len()].copy_from_slice(s.as_bytes());
            self.len = (at + s.len()) as u8;
            return self;
        }
        self.full = true;
        if room < 3 {
            return self;
        }
        let mut cut = room - 3;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        self.buf[at..at + cut].copy_from_slice(&s.as_bytes()[..cut]);
        self.buf[at + cut..at + cut + 3].copy_from_slice(b"...");
        self.len = (at + cut + 3) as u8;
        self
    }

    /// Appends each of `parts` in turn, as [`push`](Self::push) does (one call for a line built
    /// from pieces, such as a request line).
    #[inline]
    pub(crate) fn push_all(&mut self, parts: &[&str]) -> &mut Self {
        for part in parts {
            self.push(part);
        }
        self
    }

    /// Writes a request line, `{method} {target}{version}` (`version` with its leading space,
    /// e.g. `" HTTP/1.1"`), as [`push_all`](Self::push_all) would: into an empty label that holds
    /// it whole, in three copies and no checks per piece (the label of every HTTP request).
    pub(crate) fn request_line(&mut self, method: &str, target: &str, version: &[u8; 9]) {
        let (m, t) = (method.len(), target.len());
        if self.len != 0 || self.full || m + 1 + t + version.len() > LABEL_MAX {
            // Only ASCII in `version` (the HTTP versions): a `str`.
            let version = std::str::from_utf8(version).unwrap_or("");
            self.push_all(&[method, " ", target, version]);
            return;
        }
        self.buf[..m].copy_from_slice(method.as_bytes());
        self.buf[m] = b' ';
        self.buf[m + 1..m + 1 + t].copy_from_slice(target.as_bytes());
        self.buf[m + 1 + t..m + 1 + t + version.len()].copy_from_slice(version);
        self.len = (m + 1 + t + version.len()) as u8;
    }

    pub(crate) fn as_str(&self) -> &str {
        // Only whole `&str`s (or their cut at a character boundary) and ASCII are ever copied in.
        std::str::from_utf8(&self.buf[..self.len as usize]).unwrap_or("")
    }
}

impl fmt::Debug for Label {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

/// Writes what a claimed job is: the pool's describer (see `Pool::describe_with`).
pub(crate) type Describe<Req> = Box<dyn Fn(&Req, &mut Label) + Send + Sync>;

/// One running job, as [`Pool::records`](crate::Pool) reads it.
#[derive(Debug, Clone)]
pub(crate) struct Record {
    /// The worker slot that runs it; `None` for a thread the watchdog retired.
    pub(crate) worker: Option<usize>,
    pub(crate) started: Instant,
    /// Read by the pre-fork worker's heartbeat.
    #[cfg_attr(not(feature = "prefork"), allow(dead_code))]
    pub(crate) deadline: Instant,
    pub(crate) label: Label,
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(feature = "http")]
    use crate::Pool;
    #[cfg(feature = "http")]
    use std::sync::mpsc;
    #[cfg(feature = "http")]
    use std::time::Duration;

    #[test]
    fn a_label_joins_its_parts_and_cuts_a_long_one_at_a_character_boundary_with_dots() {
        let mut label = Label::EMPTY;
        label.push_all(&["GET", " ", "/a?b=1", " HTTP/1.1"]);
        assert_eq!(label.as_str(), "GET /a?b=1 HTTP/1.1");

        let long = format!("/{}", "\u{e9}".repeat(LABEL_MAX));
        let mut label = Label::EMPTY;
        label.push_all(&["GET", " ", &long, " HTTP/1.1"]);
        let text = label.as_str();
        assert!(text.len() <= LABEL_MAX, "{} bytes", text.len());
        assert!(text.starts_with("GET /\u{e9}"), "{text}");
        assert!(text.ends_with("..."), "the cut is marked: {text}");
        assert!(!text.contains("HTTP/1.1"), "nothing after the cut: {text}");
    }

    /// The request line written in one go reads as the same line pushed piece by piece, short,
    /// cut, or after something else.
    #[test]
    fn a_request_line_reads_as_its_pieces_pushed_one_by_one() {
        let pushed = |method: &str, target: &str, before: &str| {
            let mut l = Label::EMPTY;
            l.push(before).push_all(&[method, " ", target, " HTTP/1.1"]);
            l
        };
        let written = |method: &str, target: &str, before: &str| {
            let mut l = Label::EMPTY;
            l.push(before).request_line(method, target, b" HTTP/1.1");
            l
        };
        let long = format!("/{}", "\u{e9}".repeat(LABEL_MAX));
        let fits = "x".repeat(LABEL_MAX - 13);
        let over = "x".repeat(LABEL_MAX - 12);
        for (method, target, before) in [
            ("GET", "/a?b=1", ""),
            ("PROPFIND", "/", ""),
            ("GET", "", ""),
            ("GET", long.as_str(), ""),
            ("GET", fits.as_str(), ""),
            ("GET", over.as_str(), ""),
            ("GET", "/x", "job "),
        ] {
            let (a, b) = (
                pushed(method, target, before),
                written(method, target, before),
            );
            assert_eq!(a.as_str(), b.as_str(), "{method} {target}");
            assert_eq!(a.full, b.full, "{method} {target}");
        }
        assert_eq!(written("GET", &fits, "").as_str().len(), LABEL_MAX);
    }

    #[cfg(feature = "http")]
    fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
        let until = Instant::now() + Duration::from_secs(10);
        while !f() {
            assert!(Instant::now() < until, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    #[cfg(feature = "http")]
    fn the_record_names_what_a_worker_runs_and_a_retired_threads_record_outlives_its_slot() {
        let (release_tx, release_rx) = mpsc::channel::<()>();
        let release_rx = parking_lot::Mutex::new(release_rx);
        let pool = Pool::builder()
            .workers(1)
            .max_retired(1)
            .deadline(Duration::from_millis(200))
            .build(move |n: u32, _ctx| {
                if n == 1 {
                    // Stuck past its deadline until the test lets it go.
                    let _ = release_rx.lock().recv();
                }
                n
            })
            .unwrap();
        pool.describe_with(|n: &u32, label| {
            label.push("job ").push(&n.to_string());
        });
        assert!(pool.records().is_empty(), "nothing runs yet");

        let stuck = pool.submit(1);
        wait_for("the record of job 1", || {
            pool.records()
                .iter()
                .any(|r| r.worker == Some(0) && r.label.as_str() == "job 1")
        });
        // The watchdog answers it at its deadline and retires the thread: the slot gets a new
        // thread, the record stays, now as a retired thread's.
        assert!(stuck.wait().is_err(), "answered DeadlineExceeded");
        wait_for("the retired record", || {
            let r = pool.records();
            r.len() == 1 && r[0].worker.is_none() && r[0].label.as_str() == "job 1"
        });
        assert_eq!(pool.call(2).unwrap(), 2, "the replacement serves");
        let late = &pool.records()[0];
        assert!(late.deadline <= Instant::now() && late.started < late.deadline);

        release_tx.send(()).unwrap();
        wait_for("the retired record gone", || pool.records().is_empty());
    }

    #[test]
    fn a_label_holds_what_was_pushed_and_cuts_a_long_one_at_a_character_boundary() {
        let mut l = Label::EMPTY;
        l.push("GET").push(" ").push("/x").push(" HTTP/1.1");
        assert_eq!(l.as_str(), "GET /x HTTP/1.1");

        let mut long = Label::EMPTY;
        long.push("GET /");
        long.push(&"é".repeat(200));
        let s = long.as_str();
        assert!(s.len() <= LABEL_MAX, "{}", s.len());
        assert!(s.starts_with("GET /éé") && s.ends_with("..."), "{s}");
        // Full: nothing more goes in.
        let before = s.to_string();
        long.push(" HTTP/1.1");
        assert_eq!(long.as_str(), before);
    }
}
