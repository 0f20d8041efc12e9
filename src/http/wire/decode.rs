//! Request bodies, decoded as their bytes arrive: `Content-Length` and chunked (extensions and
//! trailers read and dropped), with the body limit; like hyper's `h1/decode.rs`.
//!
//! Nothing here touches a socket: the connection feeds what it has read and gets back how much was
//! used and whether the body is complete, or an [`HttpError`] to answer before closing.

use crate::http::wire::head_scan::{is_field_byte, is_tchar};
use crate::http::wire::parse::{bad, body_too_large, Framing, HttpError, Limits};

/// Longest chunk extension or trailer section accepted, in bytes.
const MAX_CHUNK_META: usize = 8192;
/// Most hex digits in a chunk size, leading zeros included (at most 15 of them significant).
const MAX_SIZE_DIGITS: u8 = 64;

/// Where a chunk extension (`;name`, `;name=token`, `;name="quoted"`, RFC 9112 7.1.1) stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ext {
    /// After `;`: a name must come.
    Start,
    Name,
    /// Whitespace after a name.
    AfterName,
    /// After `=`: a value must come.
    ValueStart,
    Token,
    Quoted,
    /// After a backslash in a quoted value.
    Escape,
    /// After a value (and whitespace).
    AfterValue,
}
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Chunk {
    Size { size: u64, digits: u8 },
    Ext { size: u64, len: usize, at: Ext },
    SizeLf { size: u64 },
    Data(u64),
    DataCr,
    DataLf,
    TrailerStart,
    TrailerName,
    TrailerValue,
    TrailerLf,
    EndLf,
    Done,
}

/// Decodes a body as its bytes arrive.
#[derive(Debug, Clone)]
pub(crate) enum BodyDecoder {
    Length(u64),
    /// `total`: the data bytes decoded so far (the body may have been spooled out of `out`).
    Chunked {
        state: Chunk,
        trailer_bytes: usize,
        total: u64,
    },
}

impl BodyDecoder {
    pub(crate) fn new(framing: Framing) -> Self {
        match framing {
            Framing::None => BodyDecoder::Length(0),
            Framing::Length(n) => BodyDecoder::Length(n),
            Framing::Chunked => BodyDecoder::Chunked {
                state: Chunk::Size { size: 0, digits: 0 },
                trailer_bytes: 0,
                total: 0,
            },
        }
    }

    /// Decode from `input` into `out`. Returns how many bytes of `input` were used and whether the
    /// body is complete. Bytes after the end of the body are left unused (the next request).
    pub(crate) fn decode(
        &mut self,
        input: &[u8],
        out: &mut Vec<u8>,
        limits: &Limits,
    ) -> Result<(usize, bool), HttpError> {
        match self {
            BodyDecoder::Length(rem) => {
                let take = (*rem).min(input.len() as u64) as usize;
                out.extend_from_slice(&input[..take]);
                *rem -= take as u64;
                Ok((take, *rem == 0))
            }
            BodyDecoder::Chunked {
                state,
                trailer_bytes,
                total,
            } => {
                let mut i = 0;
                while i < input.len() {
                    let b = input[i];
                    *state = match *state {
                        Chunk::Size { size, digits } => match b {
                            b'0'..=b'9' | b'a'..=b'f' | b'A'..=b'F' => {
                                // Leading zeros are accepted (as llhttp does); more than 15
                                // significant digits, or a runaway line of zeros, is not.
                                if size >= 1 << 56 || digits >= MAX_SIZE_DIGITS {
                                    return Err(bad("chunk size too long"));
                                }
                                let d = (b as char).to_digit(16).unwrap_or(0) as u64;
                                Chunk::Size {
                                    size: size * 16 + d,
                                    digits: digits + 1,
                                }
                            }
                            b';' if digits > 0 => Chunk::Ext {
                                size,
                                len: 0,
                                at: Ext::Start,
                            },
                            b'\r' if digits > 0 => Chunk::SizeLf { size },
                            _ => return Err(bad("bad chunk size")),
                        },
                        Chunk::Ext { size, len, at } => {
                            if len >= MAX_CHUNK_META {
                                return Err(bad("chunk extension too long"));
                            }
                            match ext_step(at, b)? {
                                Some(at) => Chunk::Ext {
                                    size,
                                    len: len + 1,
                                    at,
                                },
                                None => Chunk::SizeLf { size },
                            }
                        }
                        Chunk::SizeLf { size } => {
                            if b != b'\n' {
                                return Err(bad("bad chunk size line (CR without LF)"));
                            }
                            if size == 0 {
                                Chunk::TrailerStart
                            } else {
                                if *total + size > limits.body_bytes {
                                    return Err(body_too_large(limits));
                                }
                                *total += size;
                                Chunk::Data(size)
                            }
                        }
                        Chunk::Data(rem) => {
                            let take = rem.min((input.len() - i) as u64) as usize;
                            out.extend_from_slice(&input[i..i + take]);
                            i += take;
                            let rem = rem - take as u64;
                            *state = if rem == 0 {
                                Chunk::DataCr
                            } else {
                                Chunk::Data(rem)
                            };
                            continue;
                        }
                        Chunk::DataCr => {
                            if b != b'\r' {
                                return Err(bad("chunk data longer than its size"));
                            }
                            Chunk::DataLf
                        }
                        Chunk::DataLf => {
                            if b != b'\n' {
                                return Err(bad("chunk data not followed by CRLF"));
                            }
                            Chunk::Size { size: 0, digits: 0 }
                        }
                        Chunk::TrailerStart => match b {
                            b'\r' => Chunk::EndLf,
                            b'\n' => return Err(bad("bare LF after the last chunk")),
                            b' ' | b'\t' => return Err(bad("obsolete line folding in a trailer")),
                            b if is_tchar(b) => {
                                *trailer_bytes += 1;
                                Chunk::TrailerName
                            }
                            _ => return Err(bad("malformed trailer field name")),
                        },
                        Chunk::TrailerName | Chunk::TrailerValue => {
                            *trailer_bytes += 1;
                            if *trailer_bytes > MAX_CHUNK_META {
                                return Err(HttpError::new(431, "trailer section too large"));
                            }
                            match (*state, b) {
                                (Chunk::TrailerName, b':') => Chunk::TrailerValue,
                                (Chunk::TrailerName, b) if is_tchar(b) => Chunk::TrailerName,
                                (Chunk::TrailerName, b'\r' | b'\n') => {
                                    return Err(bad("a trailer line without a colon"))
                                }
                                (Chunk::TrailerName, _) => {
                                    return Err(bad("malformed trailer field name"))
                                }
                                (_, b'\r') => Chunk::TrailerLf,
                                (_, b'\n') => return Err(bad("bare LF in a trailer")),
                                (_, b) if is_field_byte(b) => Chunk::TrailerValue,
                                _ => return Err(bad("a control character in a trailer")),
                            }
                        }
                        Chunk::TrailerLf => {
                            if b != b'\n' {
                                return Err(bad("bare CR in a trailer"));
                            }
                            Chunk::TrailerStart
                        }
                        Chunk::EndLf => {
                            if b != b'\n' {
                                return Err(bad("bare CR after the last chunk"));
                            }
                            *state = Chunk::Done;
                            return Ok((i + 1, true));
                        }
                        Chunk::Done => return Ok((i, true)),
                    };
                    i += 1;
                }
                Ok((i, *state == Chunk::Done))
            }
        }
    }
}

/// One byte of a chunk extension: where the extension stands after it, or `None` when it is the
/// CR that ends the chunk-size line. Refused: an empty extension (`2;`), an empty value (`a=`), an
/// unterminated quoted value, NUL or other controls, bare LF.
fn ext_step(at: Ext, b: u8) -> Result<Option<Ext>, HttpError> {
    let ws = b == b' ' || b == b'\t';
    Ok(Some(match at {
        Ext::Quoted => match b {
            b'"' => Ext::AfterValue,
            b'\\' => Ext::Escape,
            b'\r' | b'\n' => return Err(bad("unterminated quoted chunk extension")),
            b if is_field_byte(b) => Ext::Quoted,
            _ => return Err(bad("a control character in a chunk extension")),
        },
        Ext::Escape => match b {
            b if is_field_byte(b) => Ext::Quoted,
            b'\r' | b'\n' => return Err(bad("unterminated quoted chunk extension")),
            _ => return Err(bad("a control character in a chunk extension")),
        },
        Ext::Start | Ext::ValueStart if ws => at,
        Ext::Start if is_tchar(b) => Ext::Name,
        Ext::Start => return Err(bad("empty chunk extension")),
        Ext::ValueStart if b == b'"' => Ext::Quoted,
        Ext::ValueStart if is_tchar(b) => Ext::Token,
        Ext::ValueStart => return Err(bad("empty chunk extension value")),
        Ext::Name if is_tchar(b) => Ext::Name,
        Ext::Token if is_tchar(b) => Ext::Token,
        Ext::Name | Ext::AfterName if b == b'=' => Ext::ValueStart,
        Ext::Name | Ext::AfterName if ws => Ext::AfterName,
        Ext::Token | Ext::AfterValue if ws => Ext::AfterValue,
        Ext::Name | Ext::AfterName | Ext::Token | Ext::AfterValue => match b {
            b';' => Ext::Start,
            b'\r' => return Ok(None),
            b'\n' => return Err(bad("bare LF in a chunk extension")),
            _ => return Err(bad("malformed chunk extension")),
        },
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dechunk(raw: &[u8]) -> Result<(Vec<u8>, usize), HttpError> {
        let limits = Limits::default();
        let mut d = BodyDecoder::new(Framing::Chunked);
        let mut out = Vec::new();
        let mut used = 0;
        // Feed one byte at a time to exercise every state boundary.
        for i in 0..raw.len() {
            let (n, done) = d.decode(&raw[i..i + 1], &mut out, &limits)?;
            used += n;
            if done {
                return Ok((out, used));
            }
        }
        Err(HttpError::new(0, "incomplete"))
    }

    #[test]
    fn chunked() {
        let (body, used) =
            dechunk(b"5;ext=1\r\nhello\r\nA\r\n0123456789\r\n0\r\nX-T: y\r\n\r\nNEXT").unwrap();
        assert_eq!(body, b"hello0123456789");
        assert_eq!(
            used,
            b"5;ext=1\r\nhello\r\nA\r\n0123456789\r\n0\r\nX-T: y\r\n\r\n".len()
        );
        assert_eq!(dechunk(b"zz\r\n").unwrap_err().status, 400);
        assert_eq!(dechunk(b"5\r\nhelloX\r\n").unwrap_err().status, 400);
        assert_eq!(dechunk(b"5\nhello\r\n").unwrap_err().status, 400);
        assert_eq!(dechunk(b"ffffffffffffffffff\r\n").unwrap_err().status, 400);
        assert_eq!(dechunk(b"\r\n").unwrap_err().status, 400);
        assert_eq!(dechunk(b"FFFFFFF\r\n").unwrap_err().status, 413);
        // Whole input at once.
        let limits = Limits::default();
        let mut d = BodyDecoder::new(Framing::Chunked);
        let mut out = Vec::new();
        let (n, done) = d
            .decode(b"3\r\nabc\r\n0\r\n\r\nGET", &mut out, &limits)
            .unwrap();
        assert!(done);
        assert_eq!(n, 13);
        assert_eq!(out, b"abc");
    }

    /// What decoding `input` comes to when it arrives in the given pieces, fed as the connection
    /// feeds them (what a call leaves unused is fed again with the next piece): the body and the
    /// bytes used, or the status of the refusal; `None` when the body is still incomplete.
    fn outcome(pieces: &[&[u8]], limits: &Limits) -> Option<Result<(Vec<u8>, usize), u16>> {
        let mut d = BodyDecoder::new(Framing::Chunked);
        let mut body = Vec::new();
        let mut buf = Vec::new();
        let mut used = 0;
        for piece in pieces {
            buf.extend_from_slice(piece);
            match d.decode(&buf, &mut body, limits) {
                Err(e) => return Some(Err(e.status)),
                Ok((n, done)) => {
                    buf.drain(..n);
                    used += n;
                    if done {
                        return Some(Ok((body, used)));
                    }
                }
            }
        }
        None
    }

    #[test]
    fn chunked_outcome_does_not_depend_on_where_the_input_is_split() {
        let limits = Limits {
            body_bytes: 64,
            ..Limits::default()
        };
        let cases: &[&[u8]] = &[
            b"5;ext=1\r\nhello\r\nA\r\n0123456789\r\n0\r\nX-T: y\r\n\r\nNEXT",
            b"3\r\nabc\r\n0\r\n\r\nGET / HTTP/1.1\r\n",
            b"1\r\na\r\n1;x\r\nb\r\n0;last\r\nA: 1\r\nB: 2\r\n\r\n",
            b"zz\r\n",
            b"5\r\nhelloX\r\n0\r\n\r\n",
            b"5\nhello\r\n0\r\n\r\n",
            b"3\r\nabc\r\n0\r\n\n",
            b"3\r\nabc\r\n0\r\nX: y\r\n z\r\n\r\n",
            b"ffffffffffffffffff\r\n",
            b"41\r\n",
            b"20\r\n0123456789abcdef0123456789abcdef\r\n21\r\n",
            b"2;\r\nab\r\n0\r\n\r\n",
            b"2;a=\"b\r\nab\r\n0\r\n\r\n",
            b"2;a\x00\r\nab\r\n0\r\n\r\n",
            b"2;a = \"q\\\"\" ;b=c\r\nab\r\n0\r\n\r\n",
            b"0\r\nNoColon\r\n\r\n",
            b"0\r\nT: a\x00\r\n\r\n",
            b"0000000000000000000002\r\nab\r\n0\r\n\r\n",
        ];
        for &input in cases {
            let whole = outcome(&[input], &limits);
            assert!(
                whole.is_some(),
                "{:?} must end",
                String::from_utf8_lossy(input)
            );
            for at in 0..=input.len() {
                let split = outcome(&[&input[..at], &input[at..]], &limits);
                assert_eq!(
                    split,
                    whole,
                    "{:?} split at {at}",
                    String::from_utf8_lossy(input)
                );
            }
            let bytes: Vec<&[u8]> = input.chunks(1).collect();
            assert_eq!(
                outcome(&bytes, &limits),
                whole,
                "{:?} byte by byte",
                String::from_utf8_lossy(input)
            );
        }
        // The outcomes are the right ones, not merely the same ones.
        assert_eq!(
            outcome(&[cases[0]], &limits),
            Some(Ok((b"hello0123456789".to_vec(), cases[0].len() - 4)))
        );
        assert_eq!(outcome(&[cases[3]], &limits), Some(Err(400)));
        assert_eq!(outcome(&[cases[9]], &limits), Some(Err(413)));
        assert_eq!(outcome(&[cases[10]], &limits), Some(Err(413)));
        for refused in &cases[11..14] {
            assert_eq!(outcome(&[refused], &limits), Some(Err(400)));
        }
        assert_eq!(
            outcome(&[cases[14]], &limits),
            Some(Ok((b"ab".to_vec(), cases[14].len())))
        );
        assert_eq!(outcome(&[cases[15]], &limits), Some(Err(400)));
        assert_eq!(outcome(&[cases[16]], &limits), Some(Err(400)));
        assert_eq!(
            outcome(&[cases[17]], &limits),
            Some(Ok((b"ab".to_vec(), cases[17].len())))
        );
    }
}
