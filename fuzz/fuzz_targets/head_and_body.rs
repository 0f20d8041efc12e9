//! Feeds arbitrary bytes to the HTTP head parser and body decoder, whole, split at a point the
//! input chooses, and byte by byte: it must never panic, and the three outcomes must agree.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    prefork_pool::http::__fuzz::head_and_body(data);
});
