//! The few epoll and eventfd calls the connection lane (`lane.rs`) needs that mio does not
//! offer: one epoll set that several threads wait on at once, each connection watched
//! edge-triggered (each event goes to one thread; the lane's cells make sure one thread at a
//! time drives a connection and that no event is lost meanwhile), and an eventfd to wake one
//! waiter. Every `unsafe` block of the lane is here.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

/// Readable (or the peer shut its side, or an error).
pub(crate) const IN: u32 = (libc::EPOLLIN | libc::EPOLLRDHUP) as u32;
/// Writable.
pub(crate) const OUT: u32 = libc::EPOLLOUT as u32;

/// One event taken from the set: its data word, and whether it says readable, read-closed (the
/// peer shut its side, or an error), writable.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Ready {
    pub data: u64,
    pub readable: bool,
    pub read_closed: bool,
    pub writable: bool,
}

/// An epoll set shared by threads.
#[derive(Debug)]
pub(crate) struct Epoll {
    fd: OwnedFd,
}

impl Epoll {
    pub(crate) fn new() -> io::Result<Self> {
        // SAFETY: epoll_create1 takes no pointer; a non-negative result is a new descriptor
        // that we own from here on.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just returned by the kernel and is owned by nothing else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Epoll { fd })
    }

    fn ctl(&self, op: libc::c_int, fd: RawFd, events: u32, data: u64) -> io::Result<()> {
        let mut ev = libc::epoll_event { events, u64: data };
        // SAFETY: `ev` is a valid epoll_event for the duration of the call; the kernel copies
        // it. A bad `fd` is an error return, not undefined behaviour.
        let r = unsafe { libc::epoll_ctl(self.fd.as_raw_fd(), op, fd, &mut ev) };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Watch `fd` edge-triggered: every change wakes one waiter.
    pub(crate) fn add_edge(&self, fd: RawFd, interest: u32, data: u64) -> io::Result<()> {
        self.ctl(
            libc::EPOLL_CTL_ADD,
            fd,
            interest | libc::EPOLLET as u32,
            data,
        )
    }

    /// Change what an edge-triggered `fd` is watched for (an event comes at once if it is ready
    /// now).
    pub(crate) fn modify_edge(&self, fd: RawFd, interest: u32, data: u64) -> io::Result<()> {
        self.ctl(
            libc::EPOLL_CTL_MOD,
            fd,
            interest | libc::EPOLLET as u32,
            data,
        )
    }

    /// Watch `fd` level-triggered: every waiter sees it while it is ready.
    pub(crate) fn modify_level(&self, fd: RawFd, interest: u32, data: u64) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_MOD, fd, interest, data)
    }

    /// Stop watching `fd`.
    pub(crate) fn remove(&self, fd: RawFd) {
        let _ = self.ctl(libc::EPOLL_CTL_DEL, fd, 0, 0);
    }

    /// Wait up to `timeout` (`None`: no limit) for events, at most `max` (1 to 64) of them, and
    /// call `each` with every one. An interrupted wait reports no event.
    pub(crate) fn wait(
        &self,
        max: usize,
        timeout: Option<Duration>,
        mut each: impl FnMut(Ready),
    ) -> io::Result<()> {
        const MAX: usize = 64;
        // Not cleared first (768 bytes on every wait): the kernel writes the events it returns,
        // and only those are read.
        let mut evs = [std::mem::MaybeUninit::<libc::epoll_event>::uninit(); MAX];
        let max = max.clamp(1, MAX);
        let ms = timeout.map_or(-1, |t| t.as_millis().min(i32::MAX as u128) as libc::c_int);
        // SAFETY: `evs` has room for `max` (≤ MAX) events; the kernel writes at most that many.
        let n = unsafe {
            libc::epoll_wait(
                self.fd.as_raw_fd(),
                evs.as_mut_ptr().cast::<libc::epoll_event>(),
                max as libc::c_int,
                ms,
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            return if e.kind() == io::ErrorKind::Interrupted {
                Ok(())
            } else {
                Err(e)
            };
        }
        for ev in &evs[..n as usize] {
            // SAFETY: `epoll_wait` returned `n`: it wrote the first `n` events.
            let ev = unsafe { ev.assume_init_read() };
            let bits = ev.events;
            let closed = bits & (libc::EPOLLRDHUP | libc::EPOLLHUP | libc::EPOLLERR) as u32 != 0;
            each(Ready {
                data: ev.u64,
                readable: bits & libc::EPOLLIN as u32 != 0 || closed,
                read_closed: closed,
                writable: bits & (libc::EPOLLOUT | libc::EPOLLHUP | libc::EPOLLERR) as u32 != 0,
            });
        }
        Ok(())
    }

    pub(crate) fn raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

/// An eventfd: a counter a write makes readable.
#[derive(Debug)]
pub(crate) struct EventFd {
    fd: OwnedFd,
}

impl EventFd {
    pub(crate) fn new() -> io::Result<Self> {
        // SAFETY: eventfd takes no pointer; a non-negative result is a new descriptor we own.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just returned by the kernel and is owned by nothing else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(EventFd { fd })
    }

    /// Make it readable (add one to the counter).
    pub(crate) fn signal(&self) {
        let one: u64 = 1;
        // SAFETY: writes the 8 bytes of `one`, which lives for the call.
        let _ = unsafe {
            libc::write(
                self.fd.as_raw_fd(),
                (&one as *const u64).cast(),
                std::mem::size_of::<u64>(),
            )
        };
    }

    pub(crate) fn raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}
