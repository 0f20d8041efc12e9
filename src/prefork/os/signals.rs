//! Signals as bytes on a self-pipe, with no thread; and the wake fd a worker writes to.
//!
//! A signal handler may only call async-signal-safe functions, so the master's handlers do one thing:
//! `send(2)` the signal's number, as one byte, into a non-blocking socket pair (the self-pipe). The
//! master loop waits on the other end with `poll(2)` and a timeout, then handles the signals it read
//! in order, as ordinary code. This is `signal_hook::iterator` without its background thread: the
//! master must have no thread when it forks (a thread holding a lock at the fork would leave that lock
//! held for ever in the child).
//!
//! Workers use the same pipe's write end to wake the master (byte [`WAKE`]) when they become ready
//! or ask to retire, so the master reacts at once rather than on its next tick.

use std::io::{self, Read};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::Duration;

use libc::c_int;
use signal_hook::SigId;

use crate::prefork::os::fork;

/// The byte a worker sends to wake the master (no signal has number 0).
pub(crate) const WAKE: u8 = 0;

/// The signals the master handles.
pub(crate) const MASTER_SIGNALS: &[c_int] = &[
    libc::SIGTERM,
    libc::SIGINT,
    libc::SIGQUIT,
    libc::SIGHUP,
    libc::SIGTTIN,
    libc::SIGTTOU,
    libc::SIGUSR1,
    libc::SIGUSR2,
    libc::SIGWINCH,
    libc::SIGCHLD,
];

/// Never block; never raise SIGPIPE where the platform lets a send say so.
#[cfg(any(
    target_os = "linux",
    target_os = "android",
    target_os = "freebsd",
    target_os = "netbsd",
    target_os = "openbsd"
))]
const SEND_FLAGS: c_int = libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL;
#[cfg(not(any(
    target_os = "linux",
    target_os = "android",
    target_os = "freebsd",
    target_os = "netbsd",
    target_os = "openbsd"
)))]
const SEND_FLAGS: c_int = libc::MSG_DONTWAIT;

/// Sends one byte without blocking; errors are ignored (a full pipe already holds a wake-up).
/// Async-signal-safe: one `send(2)`.
pub(crate) fn send_byte(fd: RawFd, byte: u8) {
    // SAFETY: send(2) reads one byte from a valid local; `fd` is a socket this process keeps open
    // while the handler is registered. send(2) is async-signal-safe and MSG_DONTWAIT never blocks.
    unsafe { libc::send(fd, (&byte as *const u8).cast(), 1, SEND_FLAGS) };
}

/// The master's self-pipe and its registered handlers.
pub(crate) struct SignalPipe {
    ids: Vec<SigId>,
    read: UnixStream,
    write: UnixStream,
}

impl SignalPipe {
    /// Registers a handler for every signal of [`MASTER_SIGNALS`].
    pub(crate) fn install() -> io::Result<SignalPipe> {
        let (read, write) = UnixStream::pair()?;
        read.set_nonblocking(true)?;
        write.set_nonblocking(true)?;
        let fd = write.as_raw_fd();
        let mut pipe = SignalPipe {
            ids: Vec::new(),
            read,
            write,
        };
        fork::unblock(MASTER_SIGNALS);
        for &sig in MASTER_SIGNALS {
            let byte = sig as u8;
            // SAFETY: signal_hook's `register` is unsafe because the action runs in a signal handler:
            // ours only calls `send_byte`, one send(2) (async-signal-safe: no allocation, no lock);
            // `fd` stays open until `Drop` has unregistered every action.
            let id = unsafe { signal_hook::low_level::register(sig, move || send_byte(fd, byte)) }?;
            pipe.ids.push(id);
        }
        Ok(pipe)
    }

    /// The write end, for workers to wake the master.
    pub(crate) fn wake_fd(&self) -> RawFd {
        self.write.as_raw_fd()
    }

    /// The read end (closed in workers).
    pub(crate) fn read_fd(&self) -> RawFd {
        self.read.as_raw_fd()
    }

    /// Waits at most `timeout` for a byte, then returns every byte queued (signal numbers, and
    /// [`WAKE`]s), in arrival order.
    pub(crate) fn wait(&mut self, timeout: Duration) -> Vec<u8> {
        let mut fds = [libc::pollfd {
            fd: self.read.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        }];
        let ms = timeout.as_millis().min(i32::MAX as u128) as c_int;
        // SAFETY: poll(2) on one valid pollfd in a local array of length 1. EINTR (a signal arrived)
        // is fine: its byte is in the pipe and read below.
        unsafe { libc::poll(fds.as_mut_ptr(), 1, ms) };
        let mut out = Vec::new();
        let mut buf = [0u8; 64];
        loop {
            match self.read.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => out.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => break,
            }
        }
        out
    }

    /// In a forked worker: removes the master's actions from signal-hook's registry (so a signal
    /// never writes to the master's pipe from the worker) and leaks the fds (the worker closes the
    /// read end and keeps the write end to wake the master).
    pub(crate) fn forget_in_child(&mut self) {
        for id in self.ids.drain(..) {
            signal_hook::low_level::unregister(id);
        }
    }
}

impl Drop for SignalPipe {
    fn drop(&mut self) {
        for id in self.ids.drain(..) {
            signal_hook::low_level::unregister(id);
        }
    }
}

/// The signal's name, for logs: `SIGTERM`, or `signal 42` for a number with no name.
pub(crate) fn name(sig: c_int) -> String {
    signal_hook::low_level::signal_name(sig).map_or_else(|| format!("signal {sig}"), String::from)
}

/// The master's wake fd, in a worker process (-1: not a worker).
static MASTER_WAKE_FD: AtomicI32 = AtomicI32::new(-1);

/// In a fresh worker: remembers the master's wake fd for [`wake_master`].
pub(crate) fn set_master_wake_fd(fd: RawFd) {
    MASTER_WAKE_FD.store(fd, Ordering::Relaxed);
}

/// Wakes the master at once (it re-reads the heartbeat table), from a worker process.
pub(crate) fn wake_master() {
    let fd = MASTER_WAKE_FD.load(Ordering::Relaxed);
    if fd >= 0 {
        send_byte(fd, WAKE);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_are_named_and_unknown_numbers_say_so() {
        assert_eq!(name(libc::SIGTERM), "SIGTERM");
        assert_eq!(name(libc::SIGKILL), "SIGKILL");
        assert_eq!(name(libc::SIGTTIN), "SIGTTIN");
        assert_eq!(name(200), "signal 200");
    }
}
