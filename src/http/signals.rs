//! [`ServerHandle::serve_until_signal`]: a thread-mode server as a service: serve until SIGTERM or
//! SIGINT, then drain gracefully; a second signal stops at once.

use std::io;
use std::time::Duration;

use signal_hook::consts::{SIGINT, SIGTERM, SIGUSR1};
use signal_hook::iterator::Signals;

use super::handle::ServerHandle;
use crate::ShutdownReport;

/// The name of a signal this file handles.
fn name(sig: i32) -> &'static str {
    match sig {
        SIGTERM => "SIGTERM",
        SIGINT => "SIGINT",
        SIGUSR1 => "SIGUSR1",
        _ => "a signal",
    }
}

impl ServerHandle {
    /// Serve until SIGTERM or SIGINT (Ctrl-C), then stop gracefully as
    /// [`shutdown`](Self::shutdown)`(graceful_timeout)` does: every request already received is
    /// answered, within `graceful_timeout`. A second SIGTERM or SIGINT during the drain stops at
    /// once, without waiting for the graceful timeout: every request still queued, running or
    /// arriving (a half-sent upload) is answered 503 now. Returns the Pool's
    /// shutdown report (what it had to answer 503, threads left running), or the error of
    /// installing the signal handlers. It also returns when the server is stopped another way
    /// (a [`shutdown`](Self::shutdown) from another thread).
    ///
    /// This is how a thread-mode server runs as a service (systemd, Docker, a process manager,
    /// `nohup`): it needs no terminal and no stdin, and `kill -TERM` drains it with no request
    /// lost. Each signal is logged at `info` on target `prefork_pool::http`. While it runs,
    /// SIGTERM and SIGINT no longer end the process by themselves; the handlers are removed when
    /// it returns.
    ///
    /// SIGUSR1 (logrotate's `postrotate kill -USR1`) reopens the files of the crate's log sink
    /// ([`access_log_file`](super::ServerBuilder::access_log_file),
    /// [`error_log_file`](super::ServerBuilder::error_log_file)) after writing out the access
    /// lines still queued to the old file, and logs what it reopened (or that no file is
    /// configured); it does not stop the server. In process mode the supervisor handles signals instead
    /// (`prefork::Supervisor`). Unix only.
    ///
    /// ```no_run
    /// use prefork_pool::http::Server;
    /// use std::time::Duration;
    ///
    /// let server = Server::builder()
    ///     .bind("127.0.0.1:8000")
    ///     .serve(|_req, _ctx| "hello\n")
    ///     .unwrap();
    /// let report = server.serve_until_signal(Duration::from_secs(30)).unwrap();
    /// log::info!("stopped: {report:?}");
    /// ```
    pub fn serve_until_signal(&self, graceful_timeout: Duration) -> io::Result<ShutdownReport> {
        let mut signals = Signals::new([SIGTERM, SIGINT, SIGUSR1])?;
        let closer = signals.handle();
        // Ends the wait below when the server stops for another reason.
        let watcher = {
            let server = self.clone();
            std::thread::Builder::new()
                .name("http-signals".into())
                .spawn(move || {
                    server.join();
                    closer.close();
                })?
        };
        let mut fast: Option<ShutdownReport> = None;
        let mut seen = 0;
        for sig in signals.forever() {
            if sig == SIGUSR1 {
                crate::log_sink::reopen_and_log("SIGUSR1");
                continue;
            }
            seen += 1;
            if seen == 1 {
                log::info!(
                    target: "prefork_pool::http",
                    "{}: stopping gracefully: answering every request already received, for up \
                     to {graceful_timeout:?}; send it again to stop at once",
                    name(sig)
                );
                self.begin_shutdown(graceful_timeout);
            } else if fast.is_none() {
                log::info!(
                    target: "prefork_pool::http",
                    "{} again: stopping at once; requests still queued, running or arriving are \
                     answered 503",
                    name(sig)
                );
                fast = Some(self.stop_now());
            }
        }
        let mut report = self.join();
        let _ = watcher.join();
        if let Some(f) = fast {
            report.answered_shutting_down += f.answered_shutting_down;
            report.threads_left_running = report.threads_left_running.max(f.threads_left_running);
        }
        Ok(report)
    }
}
