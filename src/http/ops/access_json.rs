//! The access log's JSON format ([`AccessLogFormat::json`](crate::http::AccessLogFormat::json)): one
//! object per line, for log shippers (Loki, Elasticsearch, Datadog, `jq`).

use std::fmt::Write as _;
use std::time::Duration;

use http::{Method, Uri, Version};

/// What one JSON line shows.
pub(crate) struct JsonLine<'a> {
    pub peer: &'a str,
    pub method: &'a Method,
    pub uri: &'a Uri,
    pub version: Version,
    pub status: u16,
    pub body_bytes: usize,
    pub referer: Option<&'a [u8]>,
    pub user_agent: Option<&'a [u8]>,
    pub took: Duration,
    pub now_secs: u64,
}

impl JsonLine<'_> {
    /// `{"time":"2026-12-07T06:09:36Z","remote_addr":"127.0.0.1","method":"GET","path":"/a",
    /// "query":"b=1","protocol":"HTTP/1.1","status":200,"bytes":12,"referer":null,
    /// "user_agent":"curl/8","duration_us":1500,"pid":4242}` (no line break).
    pub(crate) fn write(&self, s: &mut String) {
        let c = crate::http::wire::date::civil(self.now_secs);
        let _ = write!(
            s,
            "{{\"time\":\"{}-{:02}-{:02}T{:02}:{:02}:{:02}Z\",\"remote_addr\":",
            c.year, c.month, c.day, c.hour, c.min, c.sec
        );
        string(s, self.peer.as_bytes());
        s.push_str(",\"method\":");
        string(s, self.method.as_str().as_bytes());
        s.push_str(",\"path\":");
        string(s, self.uri.path().as_bytes());
        s.push_str(",\"query\":");
        match self.uri.query() {
            Some(q) => string(s, q.as_bytes()),
            None => s.push_str("null"),
        }
        let _ = write!(
            s,
            ",\"protocol\":\"{:?}\",\"status\":{},\"bytes\":{},\"referer\":",
            self.version, self.status, self.body_bytes
        );
        opt(s, self.referer);
        s.push_str(",\"user_agent\":");
        opt(s, self.user_agent);
        let _ = write!(
            s,
            ",\"duration_us\":{},\"pid\":{}}}",
            self.took.as_micros(),
            std::process::id()
        );
    }
}

fn opt(s: &mut String, v: Option<&[u8]>) {
    match v {
        Some(v) => string(s, v),
        None => s.push_str("null"),
    }
}

/// A JSON string: `"` and `\` escaped, control characters (and DEL) as `\u00XX`, and every byte
/// above 0x7F as `\u00XX` too (header bytes need not be UTF-8: each shows as its Latin-1
/// character, and the line stays valid JSON and ASCII).
fn string(s: &mut String, bytes: &[u8]) {
    s.push('"');
    for &b in bytes {
        match b {
            b'"' => s.push_str("\\\""),
            b'\\' => s.push_str("\\\\"),
            0x20..=0x7e => s.push(b as char),
            _ => {
                let _ = write!(s, "\\u{b:04x}");
            }
        }
    }
    s.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_json_line_is_valid_json_whatever_the_client_sent() {
        let uri: Uri = "/a\"b?q=\\x".parse().unwrap();
        let line = JsonLine {
            peer: "10.0.0.1",
            method: &Method::GET,
            uri: &uri,
            version: Version::HTTP_11,
            status: 200,
            body_bytes: 12,
            referer: None,
            user_agent: Some(b"evil\"\n\x00\xff"),
            took: Duration::from_micros(1500),
            now_secs: 784_111_777,
        };
        let mut s = String::new();
        line.write(&mut s);
        let v: serde_json::Value = serde_json::from_str(&s).expect(&s);
        assert_eq!(v["time"], "1994-11-06T08:49:37Z");
        assert_eq!(v["path"], "/a\"b");
        assert_eq!(v["query"], "q=\\x");
        assert_eq!(v["user_agent"], "evil\"\n\u{0}\u{ff}");
        assert_eq!(v["referer"], serde_json::Value::Null);
        assert_eq!(v["status"], 200);
        assert_eq!(v["duration_us"], 1500);
        assert_eq!(v["pid"], std::process::id());
        assert!(!s.contains('\n') && s.is_ascii());
    }
}
