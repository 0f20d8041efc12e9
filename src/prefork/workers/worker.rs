//! The child side: what a worker process does between `fork(2)` and `_exit(2)`.
//!
//! Right after the fork the child switches to the configured account, if any (`user` / `group`:
//! `os/privileges.rs`), makes sure it cannot outlive its master (`PR_SET_PDEATHSIG`, then a
//! check that its parent is still the master, in case the master died before the call), drops the
//! master's signal handlers, unblocks every signal, and installs its own: SIGTERM asks for a graceful
//! stop ([`WorkerEnv::is_stopping`] turns true and [`WorkerEnv::shutdown_fd`] becomes readable),
//! SIGINT and SIGQUIT end the process at once (`_exit(0)`, as gunicorn's workers do). Then it builds
//! the app (or takes the preloaded one), runs it, and ends with `_exit` and the worker's exit code,
//! whatever happens: it never returns into the master's code, and never runs the master's destructors.

use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::http::ServerMetrics;
use crate::prefork::os::fork::{self, exit_child};
use crate::prefork::os::listeners::Listener;
use crate::prefork::os::privileges::{self, RunAs};
use crate::prefork::os::signals::{self, send_byte};
use crate::prefork::workers::heartbeat::{Heartbeat, HeartbeatSlot, TableHead};
use crate::prefork::workers::shared_metrics;
use crate::prefork::workers::siblings::Siblings;

/// The exit code of a worker whose app could not be built (gunicorn's `WORKER_BOOT_ERROR`).
pub const EXIT_WORKER_BOOT_ERROR: i32 = 3;

static STOPPING: AtomicBool = AtomicBool::new(false);

/// What a worker process runs, in the child, after the fork.
///
/// It gets the worker's [`WorkerEnv`] (the inherited listeners, the heartbeat, the stop request) and
/// returns the process's exit code. It must:
///
/// - call [`WorkerEnv::ready`] once it accepts connections (until then it is booting: a worker that
///   exits before it is ready, or is not ready within `boot_timeout`, halts the master: a boot error);
/// - beat at least once per `heartbeat_timeout` ([`WorkerEnv::wait_for_listeners`] does it);
/// - watch [`WorkerEnv::is_stopping`]: once true, stop accepting (after accepting what is already in
///   the listen backlog), finish the requests in flight, and return 0.
///
/// Any `FnMut(&mut WorkerEnv) -> i32` is a `Worker`.
pub trait Worker {
    /// Serves until asked to stop; returns the exit code of the worker process.
    fn run(&mut self, env: &mut WorkerEnv) -> i32;
}

impl<F> Worker for F
where
    F: FnMut(&mut WorkerEnv) -> i32,
{
    fn run(&mut self, env: &mut WorkerEnv) -> i32 {
        self(env)
    }
}

/// A worker process's view of its supervisor: its number, the listeners it inherited, its
/// [`Heartbeat`], and whether it has been asked to stop.
#[derive(Debug)]
pub struct WorkerEnv {
    number: u64,
    listeners: Vec<Listener>,
    heartbeat: Heartbeat,
    siblings: Siblings,
    head: &'static TableHead,
    shutdown: UnixStream,
    master_pid: libc::pid_t,
    gate_ping: Option<File>,
}

impl WorkerEnv {
    /// A handle on the heartbeat table's gate ping, for this worker's accept gate (`None` if the
    /// system gave none).
    pub(crate) fn gate_ping(&self) -> Option<File> {
        self.gate_ping.as_ref().and_then(|f| f.try_clone().ok())
    }

    /// This worker's number: 1 for the first worker the master started, then 2, 3, … (a replacement
    /// gets a new number, as gunicorn's worker age).
    pub fn number(&self) -> u64 {
        self.number
    }

    /// The listening sockets, inherited from the master, in the order they were configured. They are
    /// non-blocking: wait with [`wait_for_listeners`](Self::wait_for_listeners), then accept until
    /// `WouldBlock`. The connections `accept` returns are blocking.
    pub fn listeners(&self) -> &[Listener] {
        &self.listeners
    }

    /// The names systemd gave the listeners (`LISTEN_FDNAMES`: each socket's
    /// `FileDescriptorName=`, by default the socket unit's name), in the order of
    /// [`listeners`](Self::listeners); empty when they were not passed by systemd socket
    /// activation. With several sockets (say, a public one and an admin one), this tells which is
    /// which.
    pub fn listener_names(&self) -> &'static [String] {
        crate::prefork::os::listeners::listen_fd_names()
    }

    /// Takes the listeners out of the environment (for a server that wants to own them).
    pub fn take_listeners(&mut self) -> Vec<Listener> {
        std::mem::take(&mut self.listeners)
    }

    /// This worker's heartbeat handle (`Copy`, `Send + Sync`: give it to your threads).
    pub fn heartbeat(&self) -> Heartbeat {
        self.heartbeat
    }

    /// The other worker processes of this supervisor (their pids, from the heartbeat table):
    /// `Copy`, `Send + Sync`. [`Supervisor::serve_http`](crate::prefork::Supervisor::serve_http) uses it so
    /// that a sibling's call to its own service that lands here is served as a self-call.
    pub fn siblings(&self) -> Siblings {
        self.siblings
    }

    /// The HTTP metrics of the whole server: every worker process's, live or gone (see
    /// [`server_metrics`](crate::prefork::server_metrics)); add them to a page with
    /// [`MetricsPage::server`](crate::MetricsPage::server).
    pub fn server_metrics(&self) -> ServerMetrics {
        shared_metrics::sum(self.head, self.siblings.slots())
    }

    /// Each live worker process's gauges and request count (see
    /// [`worker_metrics`](crate::prefork::worker_metrics)); add them to a page with
    /// [`MetricsPage::workers`](crate::MetricsPage::workers).
    pub fn worker_metrics(&self) -> Vec<shared_metrics::WorkerMetrics> {
        shared_metrics::per_worker(self.head, self.siblings.slots())
    }

    /// Tells the master this worker is serving (see [`Heartbeat::ready`]) and wakes it.
    pub fn ready(&self) {
        self.heartbeat.ready();
        signals::wake_master();
    }

    /// Records a heartbeat now.
    pub fn beat(&self) {
        self.heartbeat.beat();
    }

    /// Whether the master asked this worker to stop gracefully (SIGTERM): stop accepting once the
    /// backlog is drained, finish the requests in flight, return 0.
    pub fn is_stopping(&self) -> bool {
        STOPPING.load(Ordering::Acquire)
    }

    /// A file descriptor that becomes readable when the master asks this worker to stop, to register
    /// in your own event loop (mio, epoll, poll) beside the listeners. Reading it is not needed.
    pub fn shutdown_fd(&self) -> RawFd {
        self.shutdown.as_raw_fd()
    }

    /// Counts one finished request (see [`Heartbeat::request_finished`]) and, when this reaches
    /// `max_requests`, asks the master for a replacement at once.
    pub fn request_finished(&self) {
        self.heartbeat.request_finished();
    }

    /// Waits at most `timeout` until a listener is readable or a stop is requested, beating before
    /// and after, and stops the worker (as a SIGTERM would) if the master is gone. Returns the indexes (in [`listeners`](Self::listeners)) of the readable listeners;
    /// an empty list after a timeout or a stop request.
    pub fn wait_for_listeners(&mut self, timeout: Duration) -> io::Result<Vec<usize>> {
        self.heartbeat.beat();
        let mut fds: Vec<libc::pollfd> = self
            .listeners
            .iter()
            .map(|l| libc::pollfd {
                fd: l.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        fds.push(libc::pollfd {
            fd: self.shutdown.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        });
        let ms = timeout.as_millis().min(i32::MAX as u128) as libc::c_int;
        // SAFETY: poll(2) on `fds.len()` valid pollfd entries of a live Vec.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, ms) };
        self.heartbeat.beat();
        if std::os::unix::process::parent_id() != self.master_pid as u32 && !self.is_stopping() {
            // The master is gone (where PR_SET_PDEATHSIG does not exist): nobody will stop this
            // worker, so it stops itself, gracefully.
            log::warn!(
                "worker {} (pid {}): the master (pid {}) is gone; stopping",
                self.number,
                std::process::id(),
                self.master_pid
            );
            STOPPING.store(true, Ordering::Release);
        }
        if n < 0 {
            let err = io::Error::last_os_error();
            if err.kind() == io::ErrorKind::Interrupted {
                return Ok(Vec::new());
            }
            return Err(err);
        }
        let last = fds.len() - 1;
        if fds[last].revents != 0 {
            let mut buf = [0u8; 16];
            let _ = self.shutdown.read(&mut buf);
        }
        Ok(fds[..last]
            .iter()
            .enumerate()
            .filter(|(_, p)| p.revents != 0)
            .map(|(i, _)| i)
            .collect())
    }
}

/// What the master hands to a fresh child.
pub(crate) struct ChildSetup {
    pub(crate) number: u64,
    pub(crate) master_pid: libc::pid_t,
    pub(crate) master_wake: RawFd,
    pub(crate) master_read: RawFd,
    pub(crate) slot: &'static HeartbeatSlot,
    /// The whole heartbeat table, for [`WorkerEnv::siblings`].
    pub(crate) slots: &'static [HeartbeatSlot],
    /// The head of the table: the retired HTTP counters, for [`WorkerEnv::server_metrics`].
    pub(crate) head: &'static TableHead,
    pub(crate) listeners: Vec<Listener>,
    /// The table's gate ping (see `HeartbeatTable::gate_ping`), for the HTTP server's accept gate.
    pub(crate) gate_ping: Option<File>,
    /// The account to switch to (`SupervisorBuilder::user` / `group`).
    pub(crate) run_as: Option<RunAs>,
}

/// Sets up the child's process state. Errors end the child.
fn prepare(setup: &ChildSetup) -> io::Result<UnixStream> {
    if let Some(run_as) = &setup.run_as {
        // First: nothing of the app has run yet. The switch clears the death signal, set below.
        privileges::switch(run_as).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("cannot switch to {} (`user` / `group`): {e}", run_as.shown),
            )
        })?;
    }
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        // SAFETY: prctl(2) PR_SET_PDEATHSIG with a valid signal number only sets a process attribute:
        // the kernel sends SIGKILL to this process when its parent (the master) dies.
        if unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) } != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    if std::os::unix::process::parent_id() != setup.master_pid as u32 {
        // The master died before PR_SET_PDEATHSIG was set: nobody would ever stop this worker.
        exit_child(1);
    }
    // SAFETY: close(2) of the master's self-pipe read end, an fd this process inherited and that no
    // object of the child owns (the master's copy of the pipe is never dropped in the child).
    unsafe { libc::close(setup.master_read) };
    signals::set_master_wake_fd(setup.master_wake);

    // SIGCHLD back to its default, so the worker's own subprocesses are reaped as usual.
    // SAFETY: signal(2) with SIG_DFL installs no handler; SIGCHLD is a valid signal.
    unsafe { libc::signal(libc::SIGCHLD, libc::SIG_DFL) };

    let (read, write) = UnixStream::pair()?;
    read.set_nonblocking(true)?;
    write.set_nonblocking(true)?;
    let wfd = write.as_raw_fd();
    std::mem::forget(write); // owned by the SIGTERM action for the life of the process
    let term = move || {
        STOPPING.store(true, Ordering::Release);
        send_byte(wfd, b'T');
    };
    // SAFETY: the action runs in a signal handler: it does an atomic store and one send(2), both
    // async-signal-safe; `wfd` is never closed in this process.
    unsafe { signal_hook::low_level::register(libc::SIGTERM, term) }?;
    if crate::log_sink::active() {
        // SAFETY: the action runs in a signal handler and does one atomic store (`ask_reopen`),
        // async-signal-safe; the log thread reopens the files within its tick.
        unsafe { signal_hook::low_level::register(libc::SIGUSR1, crate::log_sink::ask_reopen) }?;
    }
    for sig in [libc::SIGINT, libc::SIGQUIT] {
        // SAFETY: the action runs in a signal handler and only calls signal-hook's `exit`, _exit(2),
        // which is async-signal-safe. A fast stop, as gunicorn's workers do on SIGINT and SIGQUIT.
        unsafe { signal_hook::low_level::register(sig, || signal_hook::low_level::exit(0)) }?;
    }
    // The master blocked every signal around the fork, so that a signal sent to this child before
    // the lines above could not run the master's handlers here. Unblock them all now: a pending one
    // reaches the worker's handlers.
    fork::unblock_all();
    Ok(read)
}

/// Runs a worker process to its end. Never returns.
pub(crate) fn child_main<W, B>(setup: ChildSetup, post_fork: impl FnOnce(u64), build: B) -> !
where
    W: Worker,
    B: FnOnce() -> Result<W, String>,
{
    // The master writes it too, after the fork; whichever comes first, siblings see it at once.
    setup.slot.set_pid(std::process::id());
    shared_metrics::install(setup.head, setup.slots);
    let shutdown = match prepare(&setup) {
        Ok(s) => s,
        Err(e) => {
            let msg = format!("worker setup failed after fork: {e}");
            Heartbeat::new(setup.slot).fail_boot(&msg);
            eprintln!("[{}] {msg}", std::process::id());
            exit_child(EXIT_WORKER_BOOT_ERROR);
        }
    };
    let number = setup.number;
    crate::prefork::os::logs::name_worker(number);
    if let Err(e) = crate::log_sink::start_log_thread() {
        log::error!(
            "worker {number}: cannot start the log thread: {e}; access lines are written at once"
        );
    }
    let slot = setup.slot;
    let mut env = WorkerEnv {
        number,
        listeners: setup.listeners,
        heartbeat: Heartbeat::new(slot),
        siblings: Siblings::new(setup.slots),
        head: setup.head,
        shutdown,
        master_pid: setup.master_pid,
        gate_ping: setup.gate_ping,
    };
    if catch_unwind(AssertUnwindSafe(|| post_fork(number))).is_err() {
        env.heartbeat.fail_boot("the post_fork hook panicked");
        exit_child(EXIT_WORKER_BOOT_ERROR);
    }
    let built = match catch_unwind(AssertUnwindSafe(build)) {
        Ok(r) => r,
        Err(p) => Err(format!(
            "the app builder panicked: {}",
            crate::util::panic_message(&*p)
        )),
    };
    let mut worker = match built {
        Ok(w) => w,
        Err(e) => {
            env.heartbeat.fail_boot(&e);
            log::error!(
                "worker {number} (pid {}) failed to boot: {e}",
                std::process::id()
            );
            exit_child(EXIT_WORKER_BOOT_ERROR);
        }
    };
    let code = match catch_unwind(AssertUnwindSafe(|| worker.run(&mut env))) {
        Ok(code) => code,
        Err(p) => {
            let msg = format!("the worker panicked: {}", crate::util::panic_message(&*p));
            if env.heartbeat.is_ready() {
                slot.set_note(&msg);
            } else {
                env.heartbeat.fail_boot(&msg);
            }
            1
        }
    };
    drop(worker);
    exit_child(code)
}
