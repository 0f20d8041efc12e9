//! `RLIMIT_NOFILE` raised to its hard limit at start: every connection is a file descriptor, and the
//! soft limit (often 1024) is the first wall a busy server hits (`EMFILE` on accept).

use std::io;

/// Raises the soft limit on open files to the hard limit. Returns `(old soft, new soft)`.
pub(crate) fn raise_nofile() -> io::Result<(u64, u64)> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit(2) writes one `rlimit` through a valid pointer to a local.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let old = lim.rlim_cur;
    #[allow(unused_mut)]
    let mut target = lim.rlim_max;
    // macOS refuses a soft limit above OPEN_MAX even when the hard limit is RLIM_INFINITY.
    #[cfg(target_os = "macos")]
    {
        target = target.min(10_240);
    }
    if target <= old {
        #[allow(clippy::unnecessary_cast)] // rlim_t is not u64 everywhere
        return Ok((old as u64, old as u64));
    }
    lim.rlim_cur = target;
    // SAFETY: setrlimit(2) reads one `rlimit` from a valid pointer to a local; raising the soft limit
    // up to the hard limit needs no privilege.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } != 0 {
        return Err(io::Error::last_os_error());
    }
    #[allow(clippy::unnecessary_cast)] // rlim_t is not u64 everywhere
    Ok((old as u64, target as u64))
}
