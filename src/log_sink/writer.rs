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

struct Queue {
    tx: Sender<String>,
    rx: Receiver<String>,
    thread: Thread,
}

static QUEUE: OnceLock<Queue> = OnceLock::new();
static DROPPED: AtomicU64 = AtomicU64::new(0);
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
    let (tx, rx) = bounded(QUEUE_LINES);
    let handle = std::thread::Builder::new()
        .name("prefork-log".into())
        .spawn(run)?;
    let _ = QUEUE.set(Queue {
        tx,
        rx,
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
        unreported += DROPPED.swap(0, Ordering::Relaxed);
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
        match q.tx.try_send(line) {
            Ok(()) => {
                if q.tx.len() > QUEUE_LINES / 2 {
                    q.thread.unpark();
                }
            }
            Err(TrySendError::Full(_)) => {
                DROPPED.fetch_add(1, Ordering::Relaxed);
                q.thread.unpark();
            }
            Err(TrySendError::Disconnected(_)) => {}
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
        while let Ok(line) = q.rx.try_recv() {
            if !buf.is_empty() && buf.len() + line.len() + 1 > limit {
                if let Err(e) = out.write(buf) {
                    failed = Some(e);
                }
                buf.clear();
            }
            buf.extend_from_slice(line.as_bytes());
            buf.push(b'\n');
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
