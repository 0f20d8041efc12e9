//! The in-process harness that feeds request bytes to the head parser and the body decoder the way
//! a connection does: the outcome of an input (the requests it holds, or the refusal) must not
//! depend on how its bytes were split into reads. The fuzz target (`fuzz/`) and the split tests
//! both drive it; it is compiled only for them (`cfg(test)` or `cfg(fuzzing)`).

use bytes::{Buf, BytesMut};
use http::HeaderMap;

use crate::http::wire::decode::BodyDecoder;
use crate::http::wire::head_scan::HeadScanner;
use crate::http::wire::parse::{parse_shared, Framing, Head, Limits};

/// What one request of an input came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Event {
    /// A head: method, target, version, and the fields as `name: value` lines.
    Head(String),
    /// The decoded body of the request before.
    Body(Vec<u8>),
    /// A refusal, with its status; nothing after it is read.
    Refused(u16),
}

/// What an input, fed in `pieces`, came to: its events, and how many bytes were left waiting
/// (an incomplete head or body) when the input ended.
///
/// Each head is split off the buffer as the connection splits it, and shown only when the input
/// has ended: its target and values (slices of the buffer) must still read as they came after
/// the buffer took in, and dropped, what followed them.
pub(crate) fn outcome(pieces: &[&[u8]], limits: &Limits) -> (Vec<Event>, usize) {
    let (events, left) = outcome_kept(pieces, limits);
    let events = events
        .into_iter()
        .map(|e| match e {
            Kept::Head(head) => Event::Head(show(&head)),
            Kept::Event(e) => e,
        })
        .collect();
    (events, left)
}

/// An event, its head still parsed (not shown yet).
enum Kept {
    Head(Box<Head>),
    Event(Event),
}

fn show(head: &Head) -> String {
    let mut shown = format!("{} {} {:?}", head.method, head.uri, head.version);
    for (name, value) in &head.headers {
        shown.push_str(&format!("\n{name}: {:?}", value.as_bytes()));
    }
    shown
}

fn outcome_kept(pieces: &[&[u8]], limits: &Limits) -> (Vec<Kept>, usize) {
    let mut events = Vec::new();
    let mut buf = BytesMut::new();
    let mut scanner = HeadScanner::default();
    let mut body: Option<(BodyDecoder, Vec<u8>)> = None;
    for piece in pieces {
        buf.extend_from_slice(piece);
        loop {
            if let Some((decoder, out)) = body.as_mut() {
                match decoder.decode(&buf, out, limits) {
                    Err(e) => {
                        events.push(Kept::Event(Event::Refused(e.status)));
                        return (events, 0);
                    }
                    Ok((n, done)) => {
                        buf.advance(n);
                        if !done {
                            break;
                        }
                        let (_, out) = body.take().expect("checked above");
                        events.push(Kept::Event(Event::Body(out)));
                    }
                }
            }
            match scanner.scan(&buf, limits) {
                Err(e) => {
                    events.push(Kept::Event(Event::Refused(e.status)));
                    return (events, 0);
                }
                Ok(None) => break,
                Ok(Some((a, b))) => {
                    let mut raw = buf.split_to(b);
                    raw.advance(a);
                    let head =
                        match parse_shared(raw.freeze(), scanner.parts(), limits, HeaderMap::new())
                        {
                            Err(e) => {
                                events.push(Kept::Event(Event::Refused(e.status)));
                                return (events, 0);
                            }
                            Ok(head) => head,
                        };
                    scanner.reset();
                    if head.framing != Framing::None {
                        body = Some((BodyDecoder::new(head.framing), Vec::new()));
                    }
                    events.push(Kept::Head(Box::new(head)));
                }
            }
        }
    }
    (events, buf.len())
}

/// Small limits, so that short inputs reach them.
pub(crate) fn small_limits() -> Limits {
    Limits {
        request_line: 64,
        fields: 8,
        field_size: 96,
        head_bytes: 512,
        body_bytes: 64,
    }
}

/// The fuzz target's body: the outcome of `data` fed whole must equal its outcome split at a
/// point the data chooses, and (for short inputs) fed one byte at a time, under the default
/// limits and under small ones. Panics when it does not.
pub fn head_and_body(data: &[u8]) {
    let at = data.first().map_or(0, |&b| b as usize * data.len() / 255);
    for limits in [Limits::default(), small_limits()] {
        let whole = outcome(&[data], &limits);
        assert_eq!(outcome(&[&data[..at], &data[at..]], &limits), whole);
        if data.len() <= 512 {
            let bytes: Vec<&[u8]> = data.chunks(1).collect();
            assert_eq!(outcome(&bytes, &limits), whole);
        }
    }
}

/// What a corpus entry must come to.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Want {
    /// Served: this many requests (heads), nothing left over.
    Served(usize),
    /// Refused with this status once complete.
    Refused(u16),
    /// Refused with this status at its last byte: the input is a head cut right after its first
    /// bad byte (no blank line follows), so the refusal must not wait for more.
    RefusedAtLastByte(u16),
}

/// The corpus: the shapes strict parsers (llhttp strict, h11) refuse or accept, and the
/// framing and limit cases. Also the fuzz target's seeds (see `write_fuzz_seeds`).
pub(crate) const CORPUS: &[(&[u8], Want)] = &[
    (b"GET /a?b=1 HTTP/1.1\r\nHost: x\r\n\r\n", Want::Served(1)),
    (b"\r\nPOST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc", Want::Served(1)),
    (b"GET / HTTP/1.0\r\n\r\nGET /2 HTTP/1.1\r\nHost: x\r\n\r\n", Want::Served(2)),
    (b"GET /a\"b HTTP/1.1\r\nHost: x\r\n\r\n", Want::Served(1)),
    (b"GET /q?x=\"y\"&z=<w>`v{|}^\\ HTTP/1.1\r\nHost: x\r\n\r\n", Want::Served(1)),
    (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0003\r\n\r\nabc", Want::Served(1)),
    (b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0003\r\nabc\r\n000\r\n\r\n", Want::Served(1)),
    (b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3;a=b;c=\"q\\\"x\" ; d\r\nabc\r\n0\r\nT: v\r\n\r\n", Want::Served(1)),
    (b"GET / HTTP/1.1\r\nHost: x\r\nX: caf\xc3\xa9\r\n\r\n", Want::Served(1)),
    (b"GET / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n", Want::Served(1)),
    // Chunk extensions and trailers llhttp strict refuses.
    (b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n2;\r\nab\r\n0\r\n\r\n", Want::Refused(400)),
    (b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n2;a\x00\r\nab\r\n0\r\n\r\n", Want::Refused(400)),
    (b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n2;a=\"b\r\nab\r\n0\r\n\r\n", Want::Refused(400)),
    (b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n2;a=\r\nab\r\n0\r\n\r\n", Want::Refused(400)),
    (b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nNoColon\r\n\r\n", Want::Refused(400)),
    (b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nT: a\x00b\r\n\r\n", Want::Refused(400)),
    (b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n00000000000000001\r\na\r\n0\r\n\r\n", Want::Served(1)),
    // Heads refused once complete.
    (b"GET / HTTP/1.1\r\nHost: a, b\r\n\r\n", Want::Refused(400)),
    (b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", Want::Refused(400)),
    (b"GET / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nExpect: 100-continue\r\n\r\n", Want::Refused(400)),
    (b"GET / HTTP/1.1\r\nHost: x\r\nExpect: 200-ok\r\n\r\n", Want::Refused(417)),
    (b"GET / HTTP/1.1\r\n\r\n", Want::Refused(400)),
    (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n", Want::Refused(400)),
    (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n", Want::Refused(400)),
    (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999\r\n\r\n", Want::Refused(413)),
    (b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", Want::Refused(501)),
    // Heads refused at the bad byte, before any blank line.
    (b" ", Want::RefusedAtLastByte(400)),
    (b"\r\n\t", Want::RefusedAtLastByte(400)),
    (b"GET /a\r", Want::RefusedAtLastByte(400)),
    (b"GET / HTTP/1.1\rX", Want::RefusedAtLastByte(400)),
    (b"GET / HTTP/1.1\n", Want::RefusedAtLastByte(400)),
    (b"GET / HTTP/1.1\r\nHost: x\rY", Want::RefusedAtLastByte(400)),
    (b"GET / HTTP/5.6", Want::RefusedAtLastByte(505)),
    (b"GET / HTTP/1.2", Want::RefusedAtLastByte(505)),
    (b"GET / HTTP/1.1x", Want::RefusedAtLastByte(400)),
    (b"GET / HTTQ", Want::RefusedAtLastByte(400)),
    (b"GET  ", Want::RefusedAtLastByte(400)),
    (b"GET / HTTP/1.1\r\n ", Want::RefusedAtLastByte(400)),
    (b"GET / HTTP/1.1\r\nHost: x\r\n\t", Want::RefusedAtLastByte(400)),
    (b"GET /caf\xc3", Want::RefusedAtLastByte(400)),
    (b"GET / HTTP/1.1\r\nHost ", Want::RefusedAtLastByte(400)),
    (b"GET / HTTP/1.1\r\nNoColon\r", Want::RefusedAtLastByte(400)),
    (b"GET / HTTP/1.1\r\n:", Want::RefusedAtLastByte(400)),
    (b"GET / HTTP/1.1\r\nX: a\x00", Want::RefusedAtLastByte(400)),
    (b"GET / HTTP/1.1\r\nX: a\x7f", Want::RefusedAtLastByte(400)),
    // The target's form must fit the method; a Host is host[:port]; one Content-Length value.
    (b"OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n", Want::Served(1)),
    (b"GET http://h:8/p?q HTTP/1.1\r\nHost: h:8\r\n\r\n", Want::Served(1)),
    (b"GET / HTTP/1.1\r\nHost: [::1]:8080 \r\n\r\n", Want::Served(1)),
    (b"GET / HTTP/1.1\r\nHost:\r\n\r\n", Want::Served(1)),
    (b"CONNECT h:443 HTTP/1.1\r\nHost: h:443\r\n\r\n", Want::Refused(501)),
    (b"GET abc ", Want::RefusedAtLastByte(400)),
    (b"GET h:4", Want::RefusedAtLastByte(400)),
    (b"GET *", Want::RefusedAtLastByte(400)),
    (b"PRI *", Want::RefusedAtLastByte(400)),
    (b"OPTIONS *x", Want::RefusedAtLastByte(400)),
    (b"CONNECT /", Want::RefusedAtLastByte(400)),
    (b"CONNECT h ", Want::RefusedAtLastByte(400)),
    (b"GET / HTTP/1.1\r\nHost: a b", Want::RefusedAtLastByte(400)),
    (b"GET / HTTP/1.1\r\nHost: a,", Want::RefusedAtLastByte(400)),
    (b"GET / HTTP/1.1\r\nHost: [::g]", Want::RefusedAtLastByte(400)),
    (b"GET / HTTP/1.1\r\nhost: x\r\nHOST:", Want::RefusedAtLastByte(400)),
    (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\ncontent-length:", Want::RefusedAtLastByte(400)),
    (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 12345678901234567890", Want::RefusedAtLastByte(400)),
    (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3,", Want::RefusedAtLastByte(400)),
    (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: \r", Want::RefusedAtLastByte(400)),
    (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999\r", Want::RefusedAtLastByte(413)),
];

#[cfg(test)]
mod tests {
    use super::*;

    fn show(input: &[u8]) -> String {
        String::from_utf8_lossy(input).into_owned()
    }

    #[test]
    fn the_corpus_comes_to_what_it_must() {
        let limits = Limits::default();
        for &(input, want) in CORPUS {
            let (events, left) = outcome(&[input], &limits);
            let refused = match events.last() {
                Some(Event::Refused(s)) => Some(*s),
                _ => None,
            };
            let heads = events
                .iter()
                .filter(|e| matches!(e, Event::Head(_)))
                .count();
            match want {
                Want::Served(n) => {
                    assert_eq!((heads, refused, left), (n, None, 0), "{}", show(input))
                }
                Want::Refused(status) => assert_eq!(refused, Some(status), "{}", show(input)),
                Want::RefusedAtLastByte(status) => {
                    assert_eq!(refused, Some(status), "{}", show(input));
                    let before = &input[..input.len() - 1];
                    assert_eq!(
                        outcome(&[before], &limits),
                        (Vec::new(), before.len()),
                        "{} must wait before its last byte",
                        show(input)
                    );
                }
            }
        }
    }

    #[test]
    fn the_outcome_does_not_depend_on_where_the_input_is_split() {
        let long_line = format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(5000));
        let long_field = format!(
            "GET / HTTP/1.1\r\nHost: x\r\nX: {}\r\n\r\n",
            "a".repeat(9000)
        );
        let mut inputs: Vec<&[u8]> = CORPUS.iter().map(|(input, _)| *input).collect();
        inputs.push(long_line.as_bytes());
        inputs.push(long_field.as_bytes());
        for limits in [Limits::default(), small_limits()] {
            for &input in &inputs {
                let whole = outcome(&[input], &limits);
                // Every split of the corpus; every 7th of the two long inputs.
                let step = if input.len() > 1000 { 7 } else { 1 };
                for at in (0..=input.len()).step_by(step) {
                    let split = outcome(&[&input[..at], &input[at..]], &limits);
                    assert_eq!(split, whole, "{} split at {at}", show(input));
                }
                let bytes: Vec<&[u8]> = input.chunks(1).collect();
                assert_eq!(
                    outcome(&bytes, &limits),
                    whole,
                    "{} byte by byte",
                    show(input)
                );
            }
        }
        // And the outcomes are the right ones.
        let limits = Limits::default();
        assert_eq!(
            outcome(&[long_line.as_bytes()], &limits).0,
            [Event::Refused(414)]
        );
        assert_eq!(
            outcome(&[long_field.as_bytes()], &limits).0,
            [Event::Refused(431)]
        );
        let (events, _) = outcome(&[CORPUS[3].0], &limits);
        assert!(matches!(&events[0], Event::Head(h) if h.starts_with("GET /a\"b HTTP/1.1")));
        let (events, _) = outcome(&[CORPUS[4].0], &limits);
        let want = "GET /q?x=%22y%22&z=%3Cw%3E%60v{|}^\\ HTTP/1.1";
        assert!(
            matches!(&events[0], Event::Head(h) if h.starts_with(want)),
            "{events:?}"
        );
        let (events, _) = outcome(&[CORPUS[6].0], &limits);
        assert_eq!(events[1], Event::Body(b"abc".to_vec()));
    }

    #[test]
    fn the_fuzz_entry_holds_on_the_corpus() {
        for &(input, _) in CORPUS {
            head_and_body(input);
        }
    }

    /// What the byte-by-byte scan costs beside `httparse`'s parse of the same head (run with
    /// `cargo test --release --lib scan_cost -- --ignored --nocapture`).
    #[test]
    #[ignore = "a measurement, not a check"]
    fn scan_cost() {
        let head: &[u8] = b"GET /get_hello_world?session_id=x HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\
            User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/120.0 Safari/537.36\r\n\
            Accept: text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8\r\n\
            Accept-Language: en-US,en;q=0.5\r\nAccept-Encoding: gzip, deflate\r\n\
            Connection: keep-alive\r\nCookie: a=1; b=2; session=0123456789abcdef\r\n\r\n";
        let limits = Limits::default();
        let n = 100_000;
        for _round in 0..5 {
            let t = std::time::Instant::now();
            for _ in 0..n {
                let mut s = HeadScanner::default();
                assert!(s
                    .scan(std::hint::black_box(head), &limits)
                    .unwrap()
                    .is_some());
            }
            let scan = t.elapsed() / n;
            let t = std::time::Instant::now();
            for _ in 0..n {
                let mut h = [httparse::EMPTY_HEADER; 16];
                let mut r = httparse::Request::new(&mut h);
                assert!(r.parse(std::hint::black_box(head)).unwrap().is_complete());
            }
            let httparse = t.elapsed() / n;
            println!("{} bytes: scan {scan:?}, httparse {httparse:?}", head.len());
        }
    }

    /// Writes the corpus as the fuzz target's seeds: `cargo test --lib write_fuzz_seeds --
    /// --ignored` from the crate's root.
    #[test]
    #[ignore = "writes fuzz/corpus/head_and_body; run by hand when the corpus changes"]
    fn write_fuzz_seeds() {
        let dir =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/head_and_body");
        std::fs::create_dir_all(&dir).unwrap();
        for (i, (input, _)) in CORPUS.iter().enumerate() {
            std::fs::write(dir.join(format!("seed-{i:02}")), input).unwrap();
        }
    }
}
