//! `sd_notify(3)` without libsystemd: one datagram to the socket named by `NOTIFY_SOCKET`.
//!
//! The master sends `READY=1` once its workers are ready (not before any worker exists, as gunicorn
//! does), `RELOADING=1` and `READY=1` around a reload, `STOPPING=1` when it stops, and `STATUS=` with
//! the worker count. A name starting with `@` is a Linux abstract socket. Without `NOTIFY_SOCKET`
//! (not under systemd) every call does nothing.
//!
//! With `WatchdogSec=` in the unit, systemd sets `WATCHDOG_USEC` (and `WATCHDOG_PID`): the master
//! loop sends `WATCHDOG=1` every half of that interval while it runs ([`Watchdog`]), so a master
//! that hangs is killed and restarted by systemd.

use std::io;
use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

/// systemd's watchdog for the master: when `WATCHDOG=1` is due.
#[derive(Debug)]
pub(crate) struct Watchdog {
    every: Duration,
    last: Option<Instant>,
}

impl Watchdog {
    /// From `WATCHDOG_USEC` and `WATCHDOG_PID` (unset, this process, or `upgraded_from`: the
    /// master this one replaced by a binary upgrade, whose environment it inherited). `None`
    /// without a watchdog.
    pub(crate) fn from_env(upgraded_from: Option<u32>) -> Option<Watchdog> {
        let usec = std::env::var("WATCHDOG_USEC").ok();
        let pid = std::env::var("WATCHDOG_PID").ok();
        let every = watchdog_interval(
            usec.as_deref(),
            pid.as_deref(),
            std::process::id(),
            upgraded_from,
        )?;
        log::info!("systemd watchdog: WATCHDOG=1 every {every:?}");
        Some(Watchdog { every, last: None })
    }

    /// How often `WATCHDOG=1` is sent: the master loop waits at most this long.
    pub(crate) fn every(&self) -> Duration {
        self.every
    }

    /// Sends `WATCHDOG=1` if it is due.
    pub(crate) fn pet(&mut self, now: Instant) {
        let due = self
            .last
            .map_or(true, |last| now.duration_since(last) >= self.every);
        if due {
            self.last = Some(now);
            notify_or_log("WATCHDOG=1");
        }
    }
}

/// Half of `WATCHDOG_USEC` (as `sd_watchdog_enabled(3)` advises), when it is a positive number of
/// microseconds and `WATCHDOG_PID` is unset or names `own` (or `upgraded_from`).
pub(crate) fn watchdog_interval(
    usec: Option<&str>,
    pid: Option<&str>,
    own: u32,
    upgraded_from: Option<u32>,
) -> Option<Duration> {
    let usec: u64 = usec?.trim().parse().ok().filter(|u| *u > 0)?;
    if let Some(pid) = pid {
        let pid: u32 = pid.trim().parse().ok()?;
        if pid != own && Some(pid) != upgraded_from {
            return None;
        }
    }
    Some(Duration::from_micros(usec / 2))
}

/// Sends `state` (lines such as `READY=1\nSTATUS=2 workers`) to `NOTIFY_SOCKET`, if set.
/// Returns whether a message was sent.
pub(crate) fn notify(state: &str) -> io::Result<bool> {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return Ok(false);
    };
    let path = path.to_string_lossy().into_owned();
    let socket = UnixDatagram::unbound()?;
    if let Some(name) = path.strip_prefix('@') {
        send_abstract(&socket, name, state)?;
    } else {
        socket.send_to(state.as_bytes(), &path)?;
    }
    Ok(true)
}

#[cfg(any(target_os = "linux", target_os = "android"))]
fn send_abstract(socket: &UnixDatagram, name: &str, state: &str) -> io::Result<()> {
    #[cfg(target_os = "android")]
    use std::os::android::net::SocketAddrExt;
    #[cfg(target_os = "linux")]
    use std::os::linux::net::SocketAddrExt;
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())?;
    socket.send_to_addr(state.as_bytes(), &addr)?;
    Ok(())
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn send_abstract(_socket: &UnixDatagram, name: &str, _state: &str) -> io::Result<()> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        format!("NOTIFY_SOCKET=@{name} is an abstract socket, which only Linux has"),
    ))
}

/// [`notify`], logging a failure instead of returning it (systemd would then time the unit out, so
/// the log says why).
pub(crate) fn notify_or_log(state: &str) {
    if let Err(e) = notify(state) {
        log::warn!(
            "sd_notify({}) to NOTIFY_SOCKET failed: {e}; systemd will not see this state change \
             (check the unit's NotifyAccess= and that the socket exists)",
            state.replace('\n', " ")
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_watchdog_interval_is_half_of_watchdog_usec_for_this_process_only() {
        let half = Some(Duration::from_millis(1500));
        assert_eq!(watchdog_interval(Some("3000000"), None, 7, None), half);
        assert_eq!(watchdog_interval(Some("3000000"), Some("7"), 7, None), half);
        // After a binary upgrade the variables name the old master.
        assert_eq!(
            watchdog_interval(Some("3000000"), Some("5"), 7, Some(5)),
            half
        );
        assert_eq!(watchdog_interval(Some("3000000"), Some("8"), 7, None), None);
        assert_eq!(watchdog_interval(None, None, 7, None), None);
        assert_eq!(watchdog_interval(Some("0"), None, 7, None), None);
        assert_eq!(watchdog_interval(Some("soon"), None, 7, None), None);
        assert_eq!(watchdog_interval(Some("3000000"), Some("x"), 7, None), None);
    }

    // One test, because NOTIFY_SOCKET is process-wide and libtest runs tests on threads.
    #[test]
    fn sends_to_a_path_and_to_an_abstract_socket_and_does_nothing_without_one() {
        std::env::remove_var("NOTIFY_SOCKET");
        assert!(!notify("READY=1").unwrap());

        let dir = std::env::temp_dir().join(format!("prefork-notify-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("notify.sock");
        let sock = UnixDatagram::bind(&path).unwrap();
        std::env::set_var("NOTIFY_SOCKET", &path);
        assert!(notify("READY=1\nSTATUS=2 worker(s) ready").unwrap());
        let mut buf = [0u8; 128];
        let n = sock.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1\nSTATUS=2 worker(s) ready");

        #[cfg(target_os = "linux")]
        {
            use std::os::linux::net::SocketAddrExt;
            let name = format!("prefork-notify-unit-{}", std::process::id());
            let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
            let abs = UnixDatagram::bind_addr(&addr).unwrap();
            std::env::set_var("NOTIFY_SOCKET", format!("@{name}"));
            assert!(notify("STOPPING=1").unwrap());
            let n = abs.recv(&mut buf).unwrap();
            assert_eq!(&buf[..n], b"STOPPING=1");
        }
        std::env::remove_var("NOTIFY_SOCKET");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
