//! Every `fork(2)`, `_exit(2)` and `sigprocmask(2)` of the supervisor, each `unsafe` block in this
//! one file: the master forks with every signal blocked, a forked child ends with `_exit`, and the
//! signal mask is unblocked where a process must hear its signals. Also the process title
//! (`prctl(PR_SET_NAME)`).

use std::io::{self, Write};

use libc::{c_int, pid_t};

/// fork(2) with every signal blocked across it (restored in the parent; the child unblocks them once
/// it has replaced the master's handlers: until then a signal sent to it would run the master's
/// handlers and write to the master's self-pipe).
pub(crate) fn fork_with_signals_blocked() -> pid_t {
    // SAFETY: `std::mem::zeroed` is a valid bit pattern for the plain C struct sigset_t, which
    // sigfillset(3) then fills; sigprocmask(2) blocks every blockable signal and saves the old mask
    // in a local.
    let old_mask = unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::sigprocmask(libc::SIG_BLOCK, &all, &mut old);
        old
    };
    // SAFETY: fork(2) from a single-threaded process (checked when the master starts; it starts no
    // thread), so the child gets every lock (allocator, stdio, log) in a consistent state. Callers
    // make the child end with _exit(2) or exec.
    let pid = unsafe { libc::fork() };
    if pid != 0 {
        // SAFETY: sigprocmask(2) restores the master's mask saved above (a valid local).
        unsafe { libc::sigprocmask(libc::SIG_SETMASK, &old_mask, std::ptr::null_mut()) };
    }
    pid
}

/// Ends a forked child at once with `code`, after flushing stdout and stderr: no atexit handler,
/// no destructor of the state copied from the master (which belongs to the master).
pub(crate) fn exit_child(code: i32) -> ! {
    // The access lines still queued for the log thread.
    crate::log_sink::flush();
    let _ = io::stdout().flush();
    let _ = io::stderr().flush();
    // SAFETY: _exit(2) ends this process at once without running atexit handlers or the destructors of
    // state copied from the master (which belongs to the master).
    unsafe { libc::_exit(code) }
}

/// Unblocks `signals` in this process (a mask is inherited across fork and exec: a master started
/// by a parent that blocked them would never hear them).
pub(crate) fn unblock(signals: &[c_int]) {
    // SAFETY: sigemptyset(3)/sigaddset(3) fill a local sigset_t (zeroed is a valid start), then
    // sigprocmask(2) SIG_UNBLOCK removes those signals from this single-threaded process's mask.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for &sig in signals {
            libc::sigaddset(&mut set, sig);
        }
        libc::sigprocmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
    }
}

/// Unblocks every signal (the mask a fresh program expects).
pub(crate) fn unblock_all() {
    // SAFETY: sigemptyset(3) initialises a local sigset_t (zeroed is a valid start), then
    // sigprocmask(2) installs that empty mask for this single-threaded process.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
    }
}

/// Names the calling thread (the process, when called on its main thread before it starts any
/// other) for `ps -o comm`, `top` and `pgrep`: the kernel keeps the first 15 bytes of `title`.
/// Linux only; elsewhere nothing.
pub(crate) fn set_process_name(title: &str) {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        let mut name = [0u8; 16];
        let bytes = title.as_bytes();
        let n = bytes.len().min(15);
        name[..n].copy_from_slice(&bytes[..n]);
        // SAFETY: prctl(2) PR_SET_NAME reads a NUL-terminated string of at most 16 bytes from
        // `name`, a local array whose last byte is always 0; it only sets the thread's name.
        unsafe { libc::prctl(libc::PR_SET_NAME, name.as_ptr() as libc::c_ulong, 0, 0, 0) };
    }
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    let _ = title;
}
