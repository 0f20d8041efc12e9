//! The warning for a request the server answered itself because the parser refused it (400, 408,
//! 413, 414, 431, 501, 505; 500 when the body could not be stored): one `warn` line naming the
//! peer, the status and the reason, as gunicorn logs a malformed request. Each status has its own
//! [`RateLimit`] (one line per 10 s, with the count held back), so a client sending garbage can
//! neither flood the log nor hide another kind of refusal; and everything in the line is escaped
//! (`\xHH` for a control character, a quote, a backslash or a non-ASCII byte), so nothing a client
//! sends can forge a line.

use std::fmt::Write as _;
use std::time::Instant;

use crate::http::ops::rate_limit::{suppressed_note, RateLimit, WARN_INTERVAL};
use crate::http::wire::parse::HttpError;

/// The statuses with a limit of their own; any other shares the last.
const STATUSES: [u16; 8] = [400, 408, 413, 414, 431, 501, 505, 0];

static LIMITS: [RateLimit; 8] = [
    RateLimit::new(WARN_INTERVAL),
    RateLimit::new(WARN_INTERVAL),
    RateLimit::new(WARN_INTERVAL),
    RateLimit::new(WARN_INTERVAL),
    RateLimit::new(WARN_INTERVAL),
    RateLimit::new(WARN_INTERVAL),
    RateLimit::new(WARN_INTERVAL),
    RateLimit::new(WARN_INTERVAL),
];

/// Logs the refusal of `peer`'s request with `e` (at most one line per status per interval).
pub(crate) fn log_refusal(peer: &str, e: &HttpError) {
    let i = STATUSES
        .iter()
        .position(|&s| s == e.status)
        .unwrap_or(STATUSES.len() - 1);
    let Some(suppressed) = LIMITS[i].allow(Instant::now()) else {
        return;
    };
    let line = refusal_line(peer, e, suppressed);
    if e.status >= 500 && e.status != 501 && e.status != 505 {
        log::error!(target: "prefork_pool::http", "{line}");
    } else {
        log::warn!(target: "prefork_pool::http", "{line}");
    }
}

/// `refused a request from 10.0.0.7 with 400: malformed request line (…)` (the peer as the
/// access log names it).
pub(crate) fn refusal_line(peer: &str, e: &HttpError, suppressed: u64) -> String {
    let mut s = String::with_capacity(96);
    s.push_str("refused a request from ");
    escape_into(&mut s, peer);
    let _ = write!(s, " with {}: ", e.status);
    escape_into(&mut s, &e.reason);
    s.push_str(&suppressed_note(suppressed));
    s
}

/// Printable ASCII as is; anything else (and `"`, `\`) as `\xHH`, byte by byte.
fn escape_into(s: &mut String, text: &str) {
    for &b in text.as_bytes() {
        if (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\' {
            s.push(b as char);
        } else {
            let _ = write!(s, "\\x{b:02X}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_line_names_peer_status_reason_and_escapes_what_a_client_sent() {
        let e = HttpError::new(400, "malformed target \"/a\r\n[WARN] forged\u{1b}é\"");
        let line = refusal_line("10.0.0.7:51234", &e, 0);
        assert_eq!(
            line,
            "refused a request from 10.0.0.7:51234 with 400: malformed target \\x22/a\\x0D\\x0A\
             [WARN] forged\\x1B\\xC3\\xA9\\x22 (repeats are logged at most once per 10 s)"
        );
        assert!(!line.contains('\n') && !line.contains('\r'));
        assert!(refusal_line("p", &e, 5).contains("5 more like this suppressed"));
    }
}
