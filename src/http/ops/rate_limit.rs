//! Warnings an attacker cannot flood the log with: a [`RateLimit`] lets one line of a kind
//! through per interval ([`WARN_INTERVAL`], 10 s) and counts the ones it holds back, so the next
//! line can say how many were suppressed.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// At most one warning of a kind per this interval.
pub(crate) const WARN_INTERVAL: Duration = Duration::from_secs(10);

/// One kind of repeated warning: at most one line per interval.
#[derive(Debug)]
pub(crate) struct RateLimit {
    interval: Duration,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    /// When the last line went out.
    last: Option<Instant>,
    /// Lines held back since then.
    suppressed: u64,
}

impl RateLimit {
    pub(crate) const fn new(interval: Duration) -> Self {
        RateLimit {
            interval,
            state: Mutex::new(State {
                last: None,
                suppressed: 0,
            }),
        }
    }

    /// Whether a line of this kind may go out at `now`: `Some(n)` when it may, `n` being how many
    /// were held back since the last one; `None` when it is held back (and counted).
    pub(crate) fn allow(&self, now: Instant) -> Option<u64> {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        match s.last {
            Some(last) if now.saturating_duration_since(last) < self.interval => {
                s.suppressed += 1;
                None
            }
            _ => {
                s.last = Some(now);
                Some(std::mem::take(&mut s.suppressed))
            }
        }
    }
}

/// The tail a rate-limited line ends with: how many like it were held back, and for how long
/// lines of its kind are held back.
pub(crate) fn suppressed_note(suppressed: u64) -> String {
    let secs = WARN_INTERVAL.as_secs();
    if suppressed == 0 {
        format!(" (repeats are logged at most once per {secs} s)")
    } else {
        format!(" ({suppressed} more like this suppressed; logged at most once per {secs} s)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_interval_with_the_count_of_those_held_back() {
        let limit = RateLimit::new(Duration::from_secs(10));
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        assert_eq!(limit.allow(at(0)), Some(0));
        // 65 failures 100 ms apart (EMFILE) within the interval: all held back.
        for i in 1..=65 {
            assert_eq!(limit.allow(at(i * 100)), None);
        }
        assert_eq!(limit.allow(at(9_999)), None);
        // The next one after the interval goes out, and says how many were held back.
        assert_eq!(limit.allow(at(10_000)), Some(66));
        assert_eq!(limit.allow(at(10_001)), None);
        // A quiet spell: the next one goes out with the one held back since.
        assert_eq!(limit.allow(at(60_000)), Some(1));
        assert_eq!(limit.allow(at(70_000)), Some(0));
        assert!(suppressed_note(66).contains("66 more like this suppressed"));
        assert!(suppressed_note(0).contains("at most once per 10 s"));
    }
}
