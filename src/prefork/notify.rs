//! `sd_notify(3)` without libsystemd: one datagram to the socket named by `NOTIFY_SOCKET`.
//!
//! The master sends `READY=1` once its workers are ready (not before any worker exists, as gunicorn
//! does), `RELOADING=1` and `READY=1` around a reload, `STOPPING=1` when it stops, and `STATUS=` with
//! the worker count. A name starting with `@` is a Linux abstract socket. Without `NOTIFY_SOCKET`
//! (not under systemd) every call does nothing.

use std::io;
use std::os::unix::net::UnixDatagram;

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
