//! The set of descriptors a server owns (its listeners and accepted connections), shared between
//! the reactor, which adds and removes them, and the owner search, which skips them: a bitmap, one
//! atomic bit test per descriptor, no lock.

use std::os::fd::RawFd;
use std::sync::atomic::{AtomicI32, AtomicU64, Ordering};
use std::sync::OnceLock;

/// Descriptors per chunk of the bitmap (8 KiB of bits).
const CHUNK_FDS: usize = 1 << 16;
/// Words per chunk.
const CHUNK_WORDS: usize = CHUNK_FDS / 64;
/// Chunks: 64 × 65,536 descriptors; a descriptor above is never in the set (it is only searched,
/// at the cost of one system call).
const CHUNKS: usize = 64;

/// Descriptors owned by the reactor. A chunk is allocated the first time one of its descriptors
/// is added; adding, removing and testing are one atomic operation each.
///
/// The reactor removes a descriptor before it gives the connection up (its number may be reused
/// by another socket once the last holder closes it), so the set never claims a number that
/// belongs to something else.
#[derive(Debug)]
pub(crate) struct OwnedFds {
    chunks: [OnceLock<Box<[AtomicU64]>>; CHUNKS],
    /// The highest descriptor ever added (-1: none).
    high: AtomicI32,
}

impl Default for OwnedFds {
    fn default() -> Self {
        OwnedFds {
            chunks: std::array::from_fn(|_| OnceLock::new()),
            high: AtomicI32::new(-1),
        }
    }
}

impl OwnedFds {
    fn slot(fd: RawFd) -> Option<(usize, usize, u64)> {
        let fd = usize::try_from(fd).ok()?;
        let chunk = fd / CHUNK_FDS;
        (chunk < CHUNKS).then(|| {
            let bit = fd % CHUNK_FDS;
            (chunk, bit / 64, 1u64 << (bit % 64))
        })
    }

    /// `fd` is the reactor's now.
    pub(crate) fn insert(&self, fd: RawFd) {
        let Some((c, w, mask)) = Self::slot(fd) else {
            return;
        };
        let words =
            self.chunks[c].get_or_init(|| (0..CHUNK_WORDS).map(|_| AtomicU64::new(0)).collect());
        words[w].fetch_or(mask, Ordering::SeqCst);
        self.high.fetch_max(fd, Ordering::SeqCst);
    }

    /// `fd` is no longer the reactor's (called before the reactor lets it go).
    pub(crate) fn remove(&self, fd: RawFd) {
        let Some((c, w, mask)) = Self::slot(fd) else {
            return;
        };
        if let Some(words) = self.chunks[c].get() {
            words[w].fetch_and(!mask, Ordering::SeqCst);
        }
    }

    /// Whether `fd` is the reactor's.
    pub(crate) fn contains(&self, fd: RawFd) -> bool {
        let Some((c, w, mask)) = Self::slot(fd) else {
            return false;
        };
        self.chunks[c]
            .get()
            .is_some_and(|words| words[w].load(Ordering::SeqCst) & mask != 0)
    }

    /// The highest descriptor in the set now (-1: none): a word scan down from the highest ever
    /// added.
    pub(crate) fn highest(&self) -> RawFd {
        let high = self.high.load(Ordering::SeqCst);
        let Some((top_chunk, top_word, _)) = Self::slot(high) else {
            return -1;
        };
        for c in (0..=top_chunk).rev() {
            let Some(words) = self.chunks[c].get() else {
                continue;
            };
            let from = if c == top_chunk {
                top_word
            } else {
                CHUNK_WORDS - 1
            };
            for w in (0..=from).rev() {
                let bits = words[w].load(Ordering::SeqCst);
                if bits != 0 {
                    let bit = 63 - bits.leading_zeros() as usize;
                    return (c * CHUNK_FDS + w * 64 + bit) as RawFd;
                }
            }
        }
        -1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptors_come_and_go() {
        let s = OwnedFds::default();
        assert_eq!(s.highest(), -1);
        assert!(!s.contains(3) && !s.contains(-1));
        for fd in [3, 64, 65, 70_000] {
            s.insert(fd);
        }
        assert!(s.contains(3) && s.contains(64) && s.contains(65) && s.contains(70_000));
        assert!(!s.contains(4) && !s.contains(66) && !s.contains(200_000));
        assert_eq!(s.highest(), 70_000);
        s.remove(70_000);
        assert!(!s.contains(70_000));
        assert_eq!(s.highest(), 65);
        s.remove(65);
        s.remove(64);
        assert_eq!(s.highest(), 3);
        // Out of range: ignored.
        s.insert(-5);
        s.insert(RawFd::MAX);
        assert!(!s.contains(RawFd::MAX));
        s.remove(3);
        assert_eq!(s.highest(), -1);
    }
}
