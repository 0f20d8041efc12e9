//! The access log off the request's path: a worker thread hands its formatted line to the
//! process's log thread through a bounded queue and goes on (a full queue drops the line and
//! counts it: the request never waits for the disk); the log thread writes the queue out in large
//! `write(2)`s every [`TICK`], reopens the files when SIGUSR1 asked for it ([`ask_reopen`], set
//! by the signal handler), and reports dropped lines. Without the log thread (the pre-fork master,
//! which must have no thread when it forks; a program that installed the sink and serves nothing)
//! a line is written at once.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::OnceLock;
use std::thread::Thread;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, Receiver, Sender, TrySendError};

use super::{lock, LogFile, SINK};

/// The most bytes one `write(2)` to a file carries.
pub(crate) const CHUNK: usize = 64 * 1024;
/// To stdout or stderr (often a pipe, where only writes up to `PIPE_BUF` are atomic): lines of
/// several processes never interleave within one.
const PIPE_CHUNK: usize = 4096;
/// Lines the queue holds; beyond, they are dropped and counted.
pub(crate) const QUEUE_LINES: usize = 8192;
/// How often the log thread writes the queue out (and sees a SIGUSR1).
pub(crate) const TICK: Duration = Duration::from_millis(100);
/// At most one warning about dropped lines per this interval.
const DROP_WARN_EVERY: Duration = Duration::from_secs(10);

/// The bounded queue of lines between the worker threads and the log thread.
struct LineQueue {
    tx: Sender<String>,
    rx: Receiver<String>,
    /// Lines dropped because the queue was full, since the log thread last reported them.
    dropped: AtomicU64,
}

impl LineQueue {
    fn new(lines: usize) -> LineQueue {
        let (tx, rx) = bounded(lines);
        LineQueue {
            tx,
            rx,
            dropped: AtomicU64::new(0),
        }
    }

    /// Queues `line`, never waiting: a full queue drops it and counts it. Whether the log
    /// thread should be woken now (the queue is more than half full, or full).
    fn push(&self, line: String) -> bool {
        match self.tx.try_send(line) {
            Ok(()) => self.tx.len() > self.tx.capacity().unwrap_or(0) / 2,
            Err(TrySendError::Full(_)) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
                true
            }
            Err(TrySendError::Disconnected(_)) => false,
        }
    }

    /// Takes the queued lines into `buf` (each with its line break), handing `buf` to `write`
    /// whenever one more line would take it past `limit` bytes.
    fn drain(&self, buf: &mut Vec<u8>, limit: usize, mut write: impl FnMut(&mut Vec<u8>)) {
        while let Ok(line) = self.rx.try_recv() {
            if !buf.is_empty() && buf.len() + line.len() + 1 > limit {
                write(buf);
            }
            buf.extend_from_slice(line.as_bytes());
            buf.push(b'\n');
        }
    }
}

struct Queue {
    lines: LineQueue,
    thread: Thread,
}

static QUEUE: OnceLock<Queue> = OnceLock::new();
static REOPEN: AtomicBool = AtomicBool::new(false);

/// Asks the log thread to reopen the files (it does within [`TICK`]). Async-signal-safe: one
/// atomic store; what SIGUSR1's handler calls in a worker process.
pub(crate) fn ask_reopen() {
    REOPEN.store(true, Ordering::Release);
}

/// Starts this process's log thread if the sink is installed and the thread is not running yet
/// (thread mode: at `serve`; process mode: in each worker after the fork, never in the master).
pub(crate) fn start_log_thread() -> std::io::Result<()> {
    if !super::active() || QUEUE.get().is_some() {
        return Ok(());
    }
    let handle = std::thread::Builder::new()
        .name("prefork-log".into())
        .spawn(run)?;
    let _ = QUEUE.set(Queue {
        lines: LineQueue::new(QUEUE_LINES),
        thread: handle.thread().clone(),
    });
    handle.thread().unpark();
    Ok(())
}

fn run() {
    // Wait until the queue is published (set right after the spawn).
    while QUEUE.get().is_none() {
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
        if let Some(q) = QUEUE.get() {
            unreported += q.lines.dropped.swap(0, Ordering::Relaxed);
        }
        let now = Instant::now();
        let due = match last_warn {
            Some(t) => now.duration_since(t) >= DROP_WARN_EVERY,
            None => true,
        };
        if unreported > 0 && due {
            log::warn!(
                target: "prefork_pool::log_sink",
                "the access log dropped {unreported} line(s): {QUEUE_LINES} were waiting to be \
                 written (the disk or the reader of stdout cannot keep up); put the access log on \
                 a faster disk, or turn it off (access_log(false)) if it is not needed; at most \
                 one such warning per {} s",
                DROP_WARN_EVERY.as_secs()
            );
            unreported = 0;
            last_warn = Some(now);
        }
    }
}

/// Queues one access line (the log thread runs) or writes it at once (it does not).
pub(crate) fn send(line: String) {
    if let Some(q) = QUEUE.get() {
        if q.lines.push(line) {
            q.thread.unpark();
        }
        return;
    }
    let mut g = lock(&SINK.access);
    if let Some((out, buf)) = g.as_mut() {
        buf.clear();
        buf.extend_from_slice(line.as_bytes());
        buf.push(b'\n');
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
    if let Some(q) = QUEUE.get() {
        q.lines.drain(buf, limit, |chunk| {
            if let Err(e) = out.write(chunk) {
                failed = Some(e);
            }
            chunk.clear();
        });
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_queue_drops_and_counts_without_waiting_and_drains_in_whole_lines() {
        let q = LineQueue::new(4);
        let started = Instant::now();
        let wake: Vec<bool> = (0..7).map(|i| q.push(format!("line {i}"))).collect();
        assert!(started.elapsed() < Duration::from_secs(1), "a push waited");
        // Past half full: wake the log thread; full: drop, count, wake.
        assert_eq!(wake, [false, false, true, true, true, true, true]);
        assert_eq!(q.dropped.load(Ordering::Relaxed), 3);
        let mut chunks = Vec::new();
        let mut buf = Vec::new();
        q.drain(&mut buf, 14, |b| {
            chunks.push(String::from_utf8(b.clone()).unwrap());
            b.clear();
        });
        chunks.push(String::from_utf8(buf).unwrap());
        // At most 14 bytes a chunk, each cut after a line break; the first 4 lines, in order.
        assert_eq!(chunks, ["line 0\nline 1\n", "line 2\nline 3\n"]);
    }
}
