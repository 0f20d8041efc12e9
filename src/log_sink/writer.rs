//! The access log off the request's path: a worker thread formats its line straight into a
//! buffer of its own (a per-thread buffer, its lock taken by nobody else but the log thread, for
//! the moment of a swap) and goes on; the log thread swaps every buffer out every [`TICK`] (sooner
//! when one fills) and writes it in large `write(2)`s of whole lines, reopens the files when
//! SIGUSR1 asked for it ([`ask_reopen`], set by the signal handler), and reports dropped lines. A
//! buffer holds at most [`THREAD_BYTES`]: past that (the disk cannot keep up) a line is dropped
//! and counted, never waited for. No allocation per line. Lines of different threads within one
//! tick are written thread by thread, not in time order. Without the log thread (the pre-fork
//! master, which must have no thread when it forks; a program that installed the sink and serves
//! nothing) a line is written at once.

use std::cell::OnceCell;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::Thread;
use std::time::{Duration, Instant};

use super::{lock, LogFile, SINK};

/// The most bytes one `write(2)` to a file carries.
pub(crate) const CHUNK: usize = 64 * 1024;
/// To stdout or stderr (often a pipe, where only writes up to `PIPE_BUF` are atomic): lines of
/// several processes never interleave within one.
const PIPE_CHUNK: usize = 4096;
/// The most bytes a thread's buffer holds between two swaps; beyond, lines are dropped and counted.
pub(crate) const THREAD_BYTES: usize = 1 << 20;
/// A buffer this full wakes the log thread before its tick.
const WAKE_BYTES: usize = 64 * 1024;
/// How often the log thread writes the buffers out (and sees a SIGUSR1).
pub(crate) const TICK: Duration = Duration::from_millis(100);
/// At most one warning about dropped lines per this interval.
const DROP_WARN_EVERY: Duration = Duration::from_secs(10);

/// One thread's lines, waiting for the log thread.
#[derive(Debug, Default)]
struct ThreadLines {
    buf: parking_lot::Mutex<String>,
}

impl ThreadLines {
    /// Appends one line (`render` writes it, without its line break), never waiting for the disk:
    /// a buffer over `max` bytes drops it and counts it in `dropped`. Whether the log thread should
    /// be woken now (the buffer is past `wake` bytes, or full).
    fn push(
        &self,
        max: usize,
        wake: usize,
        dropped: &AtomicU64,
        render: impl FnOnce(&mut String),
    ) -> bool {
        let mut b = self.buf.lock();
        if b.len() >= max {
            dropped.fetch_add(1, Ordering::Relaxed);
            return true;
        }
        render(&mut b);
        b.push('\n');
        b.len() >= wake
    }

    /// Swaps the buffer for `spare` (empty): the lines written since the last swap.
    fn take(&self, spare: &mut String) {
        std::mem::swap(&mut *self.buf.lock(), spare);
    }
}

/// The log thread and every thread's buffer.
struct Lines {
    threads: parking_lot::Mutex<Vec<Arc<ThreadLines>>>,
    dropped: AtomicU64,
    thread: Thread,
}

static LINES: OnceLock<Lines> = OnceLock::new();
static REOPEN: AtomicBool = AtomicBool::new(false);

thread_local! {
    /// This thread's buffer, registered with the log thread on its first line.
    static MINE: OnceCell<Arc<ThreadLines>> = const { OnceCell::new() };
}

/// Asks the log thread to reopen the files (it does within [`TICK`]). Async-signal-safe: one
/// atomic store; what SIGUSR1's handler calls in a worker process.
#[cfg_attr(not(feature = "prefork"), allow(dead_code))]
pub(crate) fn ask_reopen() {
    REOPEN.store(true, Ordering::Release);
}

/// Starts this process's log thread if the sink is installed and the thread is not running yet
/// (thread mode: at `serve`; process mode: in each worker after the fork, never in the master).
pub(crate) fn start_log_thread() -> std::io::Result<()> {
    if !super::active() || LINES.get().is_some() {
        return Ok(());
    }
    let handle = std::thread::Builder::new()
        .name("prefork-log".into())
        .spawn(run)?;
    let _ = LINES.set(Lines {
        threads: parking_lot::Mutex::new(Vec::new()),
        dropped: AtomicU64::new(0),
        thread: handle.thread().clone(),
    });
    handle.thread().unpark();
    Ok(())
}

fn run() {
    // Wait until the buffers are published (set right after the spawn).
    while LINES.get().is_none() {
        std::thread::park_timeout(Duration::from_millis(10));
    }
    let mut last_warn: Option<Instant> = None;
    let mut unreported = 0u64;
    loop {
        std::thread::park_timeout(TICK);
        if REOPEN.swap(false, Ordering::AcqRel) {
            super::reopen_and_log(&format!("SIGUSR1 (pid {})", std::process::id()));
        } else {
            flush();
        }
        if let Some(l) = LINES.get() {
            unreported += l.dropped.swap(0, Ordering::Relaxed);
        }
        let now = Instant::now();
        let due = match last_warn {
            Some(t) => now.duration_since(t) >= DROP_WARN_EVERY,
            None => true,
        };
        if unreported > 0 && due {
            log::warn!(
                target: "prefork_pool::log_sink",
                "the access log dropped {unreported} line(s): {} KiB per thread were waiting to \
                 be written (the disk or the reader of stdout cannot keep up); put the access log \
                 on a faster disk, or turn it off (access_log(false)) if it is not needed; at \
                 most one such warning per {} s",
                THREAD_BYTES / 1024,
                DROP_WARN_EVERY.as_secs()
            );
            unreported = 0;
            last_warn = Some(now);
        }
    }
}

/// One access line, `render`ed (without its line break) into this thread's buffer (the log
/// thread runs) or written at once (it does not).
pub(crate) fn send(render: impl FnOnce(&mut String)) {
    if let Some(l) = LINES.get() {
        let wake = MINE.with(|m| {
            let mine = m.get_or_init(|| {
                let t = Arc::new(ThreadLines::default());
                l.threads.lock().push(t.clone());
                t
            });
            mine.push(THREAD_BYTES, WAKE_BYTES, &l.dropped, render)
        });
        if wake {
            l.thread.unpark();
        }
        return;
    }
    let mut g = lock(&SINK.access);
    if let Some((out, buf)) = g.as_mut() {
        let mut line = String::with_capacity(160);
        render(&mut line);
        line.push('\n');
        buf.clear();
        buf.extend_from_slice(line.as_bytes());
        if let Err(e) = out.write(buf) {
            write_failed(&out.target, &e);
        }
        buf.clear();
    }
}

/// Writes every queued line out, in chunks of whole lines (on the calling thread).
pub(crate) fn flush() {
    let mut g = lock(&SINK.access);
    let Some((out, buf)) = g.as_mut() else {
        return;
    };
    let limit = match out.target {
        LogFile::Path(_) => CHUNK,
        _ => PIPE_CHUNK,
    };
    let mut failed = None;
    if let Some(l) = LINES.get() {
        // A thread that has ended keeps its buffer here until it is written out.
        let threads: Vec<Arc<ThreadLines>> = {
            let mut t = l.threads.lock();
            let all = t.clone();
            // Held here, in `all` and, while its thread lives, by the thread's own `MINE`.
            t.retain(|x| Arc::strong_count(x) > 2 || !x.buf.lock().is_empty());
            all
        };
        let mut taken = String::new();
        for t in &threads {
            t.take(&mut taken);
            chunks(taken.as_bytes(), buf, limit, |chunk| {
                if let Err(e) = out.write(chunk) {
                    failed = Some(e);
                }
                chunk.clear();
            });
            taken.clear();
        }
    }
    if !buf.is_empty() {
        if let Err(e) = out.write(buf) {
            failed = Some(e);
        }
        buf.clear();
    }
    if let Some(e) = failed {
        let target = out.target.clone();
        drop(g);
        write_failed(&target, &e);
    }
}

/// The warning for a failed write (lines lost): at most one per interval.
fn write_failed(target: &LogFile, e: &std::io::Error) {
    static LAST: std::sync::Mutex<Option<Instant>> = std::sync::Mutex::new(None);
    let now = Instant::now();
    let mut last = lock(&LAST);
    if last.is_some_and(|t| now.duration_since(t) < DROP_WARN_EVERY) {
        return;
    }
    *last = Some(now);
    drop(last);
    log::warn!(
        target: "prefork_pool::log_sink",
        "cannot write the access log {}: {e}; access lines are lost until it can (free disk \
         space, check the file's permissions); at most one such warning per {} s",
        target.describe(),
        DROP_WARN_EVERY.as_secs()
    );
}

/// Appends the lines of `lines` to `buf`, handing `buf` to `write` whenever one more line would
/// take it past `limit` bytes (a line longer than `limit` goes alone).
fn chunks(lines: &[u8], buf: &mut Vec<u8>, limit: usize, mut write: impl FnMut(&mut Vec<u8>)) {
    for line in lines.split_inclusive(|&b| b == b'\n') {
        if !buf.is_empty() && buf.len() + line.len() > limit {
            write(buf);
        }
        buf.extend_from_slice(line);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_buffer_drops_and_counts_without_waiting_and_is_written_in_whole_lines() {
        let t = ThreadLines::default();
        let dropped = AtomicU64::new(0);
        let started = Instant::now();
        // At most 28 bytes held (4 lines of 7), waking the log thread from 14.
        let wake: Vec<bool> = (0..7)
            .map(|i| t.push(28, 14, &dropped, |s| s.push_str(&format!("line {i}"))))
            .collect();
        assert!(started.elapsed() < Duration::from_secs(1), "a push waited");
        assert_eq!(wake, [false, true, true, true, true, true, true]);
        assert_eq!(dropped.load(Ordering::Relaxed), 3);
        let mut taken = String::new();
        t.take(&mut taken);
        assert!(t.buf.lock().is_empty());
        let mut out = Vec::new();
        let mut buf = Vec::new();
        chunks(taken.as_bytes(), &mut buf, 14, |b| {
            out.push(String::from_utf8(b.clone()).unwrap());
            b.clear();
        });
        out.push(String::from_utf8(buf).unwrap());
        // At most 14 bytes a chunk, each cut after a line break; the first 4 lines, in order.
        assert_eq!(out, ["line 0\nline 1\n", "line 2\nline 3\n"]);
    }
}
