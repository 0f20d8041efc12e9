//! Bytes in and out, no socket and no thread: the head scanner and parser, the body decoder, the answer's serialisation, the date cache, the PROXY protocol and the fuzz entry.

pub(crate) mod date;
pub(super) mod decode;
#[cfg(any(test, fuzzing))]
pub(super) mod fuzz;
pub(super) mod head_scan;
pub(super) mod parse;
pub(crate) mod proxy_protocol;
pub(super) mod response;
pub(super) mod value_scan;
