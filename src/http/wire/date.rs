//! Dates: the `Date` header (IMF-fixdate, formatted at most once a second by [`DateCache`], one
//! per thread: [`with_date`]) and the access log's `%(t)s`, both UTC, from a calendar conversion
//! with no dependency.

use std::cell::RefCell;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// A UTC calendar time, broken down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Civil {
    pub year: i64,
    pub month: u32,
    pub day: u32,
    pub hour: u32,
    pub min: u32,
    pub sec: u32,
    pub weekday: usize,
}

/// Break seconds since the Unix epoch into a UTC date (Howard Hinnant's `civil_from_days`).
pub(crate) fn civil(secs: u64) -> Civil {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    Civil {
        year,
        month,
        day,
        hour: (rem / 3600) as u32,
        min: (rem / 60 % 60) as u32,
        sec: (rem % 60) as u32,
        weekday: (days.rem_euclid(7)) as usize,
    }
}

/// Seconds since the Unix epoch, now.
pub(crate) fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// An IMF-fixdate, as the `Date` header wants: `Sun, 06 Nov 1994 08:49:37 GMT`.
pub(crate) fn http_date(secs: u64) -> String {
    let c = civil(secs);
    format!(
        "{}, {:02} {} {} {:02}:{:02}:{:02} GMT",
        DAYS[c.weekday],
        c.day,
        MONTHS[c.month as usize - 1],
        c.year,
        c.hour,
        c.min,
        c.sec
    )
}

/// The access log's `%(t)s`: `[06/Nov/1994:08:49:37 +0000]` (always UTC).
pub(crate) fn log_date(secs: u64) -> String {
    let c = civil(secs);
    format!(
        "[{:02}/{}/{}:{:02}:{:02}:{:02} +0000]",
        c.day,
        MONTHS[c.month as usize - 1],
        c.year,
        c.hour,
        c.min,
        c.sec
    )
}

/// The `Date` header value, formatted at most once a second, and the wall clock read at most
/// once a second too: the value holds until the monotonic clock reaches the next second of the
/// wall clock (`until`), so that an answer costs one clock read, which its caller has already
/// made for its timings.
#[derive(Debug)]
pub(crate) struct DateCache {
    secs: u64,
    text: String,
    until: Instant,
}

impl DateCache {
    pub(crate) fn new() -> Self {
        let mut d = DateCache {
            secs: 0,
            text: String::new(),
            until: Instant::now(),
        };
        d.refresh(d.until);
        d
    }

    /// The value now.
    pub(crate) fn get(&mut self) -> &[u8] {
        self.get_at(Instant::now())
    }

    /// The value at `now` (the caller's clock read).
    pub(crate) fn get_at(&mut self, now: Instant) -> &[u8] {
        if now >= self.until {
            self.refresh(now);
        }
        self.text.as_bytes()
    }

    fn refresh(&mut self, now: Instant) {
        let since = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        if since.as_secs() != self.secs || self.text.is_empty() {
            self.secs = since.as_secs();
            self.text = http_date(self.secs);
        }
        let rest = Duration::from_secs(1) - Duration::from_nanos(u64::from(since.subsec_nanos()));
        self.until = now + rest;
    }
}

thread_local! {
    /// This thread's `Date` header: each thread that writes answers keeps its own.
    pub(crate) static DATE: RefCell<DateCache> = RefCell::new(DateCache::new());
}

/// `f` given the `Date` header's value for now (this thread's cache of it).
pub(crate) fn with_date<R>(f: impl FnOnce(&[u8]) -> R) -> R {
    DATE.with(|d| f(d.borrow_mut().get()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cached_date_is_the_wall_clocks_second() {
        let mut d = DateCache::new();
        let now = Instant::now();
        let before = now_secs();
        let text = String::from_utf8(d.get_at(now).to_vec()).unwrap();
        let after = now_secs();
        assert!(
            text == http_date(before) || text == http_date(after),
            "{text}"
        );
        // Held until the next second of the wall clock (at most a second away)...
        let until = d.until;
        assert!(until > now && until <= Instant::now() + Duration::from_secs(1));
        d.get_at(now);
        assert_eq!(d.until, until, "not read again before then");
        // ...and read again from then on.
        d.get_at(until);
        assert!(d.until > until, "read again at `until`");
    }

    #[test]
    fn dates() {
        assert_eq!(http_date(784_111_777), "Sun, 06 Nov 1994 08:49:37 GMT");
        assert_eq!(log_date(784_111_777), "[06/Nov/1994:08:49:37 +0000]");
        assert_eq!(http_date(951_782_400), "Tue, 29 Feb 2000 00:00:00 GMT");
        assert_eq!(http_date(0), "Thu, 01 Jan 1970 00:00:00 GMT");
    }
}
