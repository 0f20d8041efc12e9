//! The master loop, gunicorn's arbiter without its failure modes: wait for a signal, a worker's
//! wake-up or the tick; handle the signals (one handler each: stop, reload, scale, reopen logs,
//! upgrade); reap; watch the heartbeat table (readiness, boot, heartbeat, deadline and graceful
//! timeouts, retirement); recycle past memory or age (`recycle.rs`); top the workers up and stop the replaced ones; tell systemd.

use std::fmt;
use std::io::{self, Write};
use std::time::{Duration, Instant};

use libc::{c_int, pid_t};

use super::children::{kill_and_reap, Child, Role};
use super::config::{
    Hooks, SupervisorConfig, EXIT_BOOT_ERROR, EXIT_ERROR, EXIT_OK, FAST_STOP, MAX_WORKERS,
};
use super::exit::{Cause, Ending, RestartIntensity};
use super::os::fork;
use super::os::listeners::{accept_new_connections, refuse_new_connections, Listener};
use super::os::logs;
use super::os::notify::{notify_or_log, Watchdog};
use super::os::signals::{self, SignalPipe};
use super::os::upgrade::{self, Upgrade};
use super::recycle::Recycler;
use super::report::{fatal, secs, BootError, BootTimeout, IntensityExceeded, Unkillable};
use super::workers::heartbeat::{now_ms, HeartbeatTable, BOOT_FAILED, READY, RETIRE};
use super::workers::shared_metrics;
use super::workers::worker::{child_main, ChildSetup, Worker};

/// A stop under way.
#[derive(Debug)]
struct Stop {
    fast: bool,
    until: Instant,
    status: i32,
    killed: bool,
}

/// The master's state: its settings, workers, and what it is doing (stopping, reloading, upgrading).
pub(crate) struct Master<A, W> {
    cfg: SupervisorConfig,
    listeners: Vec<Listener>,
    hooks: Hooks,
    app: A,
    preloaded: Option<W>,
    table: HeartbeatTable,
    signals: SignalPipe,
    pid: pid_t,
    target: usize,
    children: Vec<Child>,
    next_number: u64,
    restarts: RestartIntensity,
    stop: Option<Stop>,
    announced_ready: bool,
    reloading: bool,
    last_status: String,
    tick: Duration,
    recycler: Recycler,
    upgrade: Upgrade,
    upgrade_from: Option<pid_t>,
    watchdog: Option<Watchdog>,
}

impl<A, W> Master<A, W> {
    /// The master, before its first pass: no worker yet.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        cfg: SupervisorConfig,
        listeners: Vec<Listener>,
        hooks: Hooks,
        app: A,
        preloaded: Option<W>,
        table: HeartbeatTable,
        signals: SignalPipe,
        pid: pid_t,
    ) -> Master<A, W> {
        Master {
            target: cfg.workers,
            tick: cfg.tick(),
            restarts: RestartIntensity::new(cfg.restart_max, cfg.restart_period),
            recycler: Recycler::new(&cfg, now_ms() ^ ((pid as u64) << 32)),
            cfg,
            listeners,
            hooks,
            app,
            preloaded,
            table,
            signals,
            pid,
            children: Vec::new(),
            next_number: 1,
            stop: None,
            announced_ready: false,
            reloading: false,
            last_status: String::new(),
            upgrade: Upgrade::new(),
            watchdog: None,
            upgrade_from: upgrade::take_upgrade_from(),
        }
    }

    /// The hooks back, once the loop has returned (for `on_exit`).
    pub(crate) fn take_hooks(&mut self) -> Hooks {
        std::mem::take(&mut self.hooks)
    }
}

impl<A, W, E> Master<A, W>
where
    A: FnMut() -> Result<W, E>,
    W: Worker,
    E: fmt::Display,
{
    /// Runs the loop until the master stops; returns its exit status.
    pub(crate) fn run(&mut self) -> i32 {
        let addrs: Vec<String> = self.listeners.iter().map(|l| l.address()).collect();
        log::info!(
            "master (pid {}) listening on {}; starting {} worker(s)",
            self.pid,
            addrs.join(", "),
            self.target
        );
        // The first pass starts the workers at once; then each pass waits for a signal, a worker's
        // wake-up or the tick.
        let mut wait = Duration::ZERO;
        self.watchdog = Watchdog::from_env(self.upgrade_from.map(|p| p as u32));
        let tick = self
            .watchdog
            .as_ref()
            .map_or(self.tick, |w| self.tick.min(w.every()));
        loop {
            let bytes = self.signals.wait(wait);
            wait = tick;
            if let Some(w) = self.watchdog.as_mut() {
                w.pet(Instant::now());
            }
            for b in bytes {
                if b != signals::WAKE {
                    self.on_signal(b as c_int);
                }
            }
            self.reap();
            if let Some(status) = self.check_stop() {
                return status;
            }
            if self.stop.is_none() {
                self.upgrade.check(self.cfg.boot_timeout, Instant::now());
                self.watch();
                self.recycler.check(&mut self.children, Instant::now());
            }
            if self.stop.is_none() {
                self.maintain();
            }
        }
    }

    /// Dispatches one signal to its handler (during a stop, only TERM, INT and QUIT still act).
    fn on_signal(&mut self, sig: c_int) {
        match sig {
            libc::SIGCHLD => {}
            libc::SIGTERM => self.on_term(),
            libc::SIGINT | libc::SIGQUIT => self.on_fast_stop(sig),
            _ if self.stop.is_some() => {
                log::info!("{} ignored: the master is stopping", signals::name(sig));
            }
            libc::SIGHUP => self.reload(),
            libc::SIGTTIN => self.on_ttin(),
            libc::SIGTTOU => self.on_ttou(),
            libc::SIGUSR1 => logs::on_usr1(&self.children, self.hooks.on_reopen_logs.as_mut()),
            libc::SIGUSR2 => self.upgrade.start(
                &self.listeners,
                &mut self.signals,
                self.pid,
                self.cfg.boot_timeout,
            ),
            libc::SIGWINCH => log::debug!("SIGWINCH ignored"),
            other => log::debug!("{} ignored", signals::name(other)),
        }
    }

    /// SIGTERM: a graceful stop; a second one during a graceful stop makes it fast.
    fn on_term(&mut self) {
        match &self.stop {
            Some(s) if !s.fast => {
                log::info!("second SIGTERM during a graceful stop: stopping fast");
                self.begin_stop(true, EXIT_OK);
            }
            Some(_) => {}
            None => {
                log::info!(
                    "SIGTERM{}: graceful stop (workers finish their requests within {})",
                    if self.upgrade.under_way().is_some() {
                        " (the new master took over)"
                    } else {
                        ""
                    },
                    secs(self.cfg.graceful_timeout)
                );
                self.begin_stop(false, EXIT_OK);
            }
        }
    }

    /// SIGINT, SIGQUIT: a fast stop.
    fn on_fast_stop(&mut self, sig: c_int) {
        if !self.stop.as_ref().is_some_and(|s| s.fast) {
            log::info!("{}: fast stop", signals::name(sig));
            self.begin_stop(true, EXIT_OK);
        }
    }

    /// SIGTTIN: one worker more (at most `MAX_WORKERS`).
    fn on_ttin(&mut self) {
        if self.target >= MAX_WORKERS {
            log::warn!("SIGTTIN ignored: already {MAX_WORKERS} workers, the most allowed");
        } else {
            self.target += 1;
            log::info!("SIGTTIN: {} workers now", self.target);
        }
    }

    /// SIGTTOU: one worker fewer (at least 1).
    fn on_ttou(&mut self) {
        if self.target <= 1 {
            log::info!("SIGTTOU ignored: 1 worker is the fewest");
        } else {
            self.target -= 1;
            log::info!("SIGTTOU: {} workers now", self.target);
        }
    }

    /// SIGHUP: new workers (the app rebuilt in each); the old ones stop once the new ones are ready.
    fn reload(&mut self) {
        log::info!(
            "SIGHUP: reloading: starting {} new worker(s); the old ones stop once the new ones are \
             ready",
            self.target
        );
        // systemd's Type=notify-reload wants the time of the reload with RELOADING=1.
        notify_or_log(&format!(
            "RELOADING=1\nMONOTONIC_USEC={}",
            now_ms().saturating_mul(1000)
        ));
        if let Some(f) = self.hooks.on_reload.as_mut() {
            f();
        }
        // A renewed certificate: read before the new workers are forked (a bad one keeps the
        // old, with an error naming the file).
        #[cfg(feature = "tls")]
        crate::http::tls::reload_current();
        for c in &mut self.children {
            if c.role == Role::Serving {
                c.role = Role::Replaced;
                c.replaced_for = Some(Cause::Reload);
            }
        }
        self.reloading = true;
    }

    fn begin_stop(&mut self, fast: bool, status: i32) {
        let window = if fast {
            self.cfg.graceful_timeout.min(FAST_STOP)
        } else {
            self.cfg.graceful_timeout
        };
        let upgrading = self.upgrade.under_way().is_some();
        if self.stop.is_none() && !upgrading && !self.cfg.socket_activated {
            // Connections queued now are served by the draining workers; new ones are refused.
            refuse_new_connections(&self.listeners);
        }
        let until = Instant::now() + window;
        let until = match &self.stop {
            Some(s) => s.until.min(until),
            None => until,
        };
        let status = match &self.stop {
            Some(s) if s.status != EXIT_OK => s.status,
            _ => status,
        };
        self.stop = Some(Stop {
            fast,
            until,
            status,
            killed: false,
        });
        if !upgrading {
            // After an upgrade the new master is the service: no STOPPING=1 from the old one.
            notify_or_log(&format!(
                "STOPPING=1\nSTATUS=stopping {} worker(s)",
                self.children.len()
            ));
        }
        for i in 0..self.children.len() {
            let c = &self.children[i];
            if c.sent.contains(&libc::SIGKILL) || (!fast && c.role == Role::Stopping) {
                continue;
            }
            self.children[i].stop(fast, Cause::Stop);
        }
    }

    /// Stops the master: stops every worker (gracefully) and exits with `status`.
    fn halt(&mut self, status: i32, msg: &str) {
        fatal(msg);
        if self.stop.is_none() {
            self.begin_stop(false, status);
        } else if let Some(s) = self.stop.as_mut() {
            if s.status == EXIT_OK {
                s.status = status;
            }
        }
    }

    fn check_stop(&mut self) -> Option<i32> {
        let stop = self.stop.as_mut()?;
        if self.children.is_empty() {
            accept_new_connections(&self.listeners);
            let status = stop.status;
            log::info!("master (pid {}) exiting with status {status}", self.pid);
            return Some(status);
        }
        let now = Instant::now();
        if now >= stop.until && !stop.killed {
            stop.killed = true;
            stop.until = now + Duration::from_secs(10);
            for i in 0..self.children.len() {
                let c = &self.children[i];
                log::warn!(
                    "worker {} (pid {}) still running {} after it was told to stop: sending SIGKILL",
                    c.number,
                    c.pid,
                    secs(c.stop_sent.map_or(Duration::ZERO, |t| now - t))
                );
                self.children[i].send(libc::SIGKILL, Cause::GracefulTimeout);
            }
        } else if now >= stop.until {
            let status = stop.status;
            fatal(&Unkillable(self.children.iter().map(|c| c.pid).collect()).to_string());
            return Some(if status == EXIT_OK {
                EXIT_ERROR
            } else {
                status
            });
        }
        None
    }

    fn reap(&mut self) {
        loop {
            let mut status: c_int = 0;
            // SAFETY: waitpid(2) with WNOHANG writes the status through a valid pointer to a local; it
            // reaps one exited child of this process, or returns 0 / -1 (ECHILD) when there is none.
            let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
            if pid <= 0 {
                break;
            }
            if self.upgrade.reaped(pid, status, self.stop.is_some()) {
                continue;
            }
            let Some(idx) = self.children.iter().position(|c| c.pid == pid) else {
                log::debug!("reaped pid {pid}, not one of our workers");
                continue;
            };
            let child = self.children.remove(idx);
            self.on_exit(child, status);
        }
    }

    /// Logs a reaped worker's end, runs the `worker_exit` hook, and halts the master on a boot
    /// error or when failures exceed the restart intensity.
    fn on_exit(&mut self, child: Child, status: c_int) {
        let slot = self.table.slot(child.slot);
        // Reaped, so nobody writes its counters any more: they join the retired totals before the
        // slot can be given to a new worker.
        shared_metrics::retire(self.table.head(), slot);
        // Reaped: the pid is no longer a sibling (and may be reused by any process).
        slot.set_pid(0);
        let flags = slot.flags();
        let note = slot.note();
        let verdict = Ending {
            number: child.number,
            pid: child.pid,
            status,
            sent: &child.sent,
            cause: child.cause.as_ref(),
            was_ready: child.ready || flags & READY != 0,
            boot_failed: flags & BOOT_FAILED != 0,
            note: &note,
        }
        .judge(self.cfg.limits());
        let description = &verdict.exit.description;
        if self.stop.is_some() || verdict.planned {
            log::info!("{description}");
        } else {
            log::error!("{description}");
        }
        if let Some(f) = self.hooks.worker_exit.as_mut() {
            f(&verdict.exit);
        }
        if self.stop.is_some() {
            return;
        }
        if verdict.boot_error {
            self.halt(EXIT_BOOT_ERROR, &BootError { description }.to_string());
            return;
        }
        if verdict.planned {
            return;
        }
        // A failure: count the restart, OTP style.
        if let Some(restarts) = self.restarts.record(Instant::now()) {
            let msg = IntensityExceeded {
                restarts,
                period: self.cfg.restart_period,
                max: self.cfg.restart_max,
                last: description,
            };
            self.halt(EXIT_ERROR, &msg.to_string());
        }
    }

    /// Readiness, boot timeouts, heartbeats, deadlines, graceful timeouts, retirement requests.
    fn watch(&mut self) {
        let now = Instant::now();
        let now_ms = now_ms();
        let mut i = 0;
        while i < self.children.len() {
            let slot = self.table.slot(self.children[i].slot);
            let flags = slot.flags();
            let c = &self.children[i];
            if !c.ready && flags & READY != 0 {
                log::info!(
                    "worker {} (pid {}) ready in {} ms",
                    c.number,
                    c.pid,
                    now.duration_since(c.started).as_millis()
                );
                self.children[i].ready = true;
            }
            let c = &self.children[i];
            if c.sent.contains(&libc::SIGKILL) {
                i += 1;
                continue;
            }
            if let Some(at) = c.abort_sent {
                if now.duration_since(at) >= self.tick {
                    log::error!(
                        "worker {} (pid {}) still alive {} after SIGABRT: sending SIGKILL",
                        c.number,
                        c.pid,
                        secs(now.duration_since(at))
                    );
                    let cause = c.cause.clone().unwrap_or(Cause::GracefulTimeout);
                    self.children[i].send(libc::SIGKILL, cause);
                }
                i += 1;
                continue;
            }
            if !c.ready {
                let age = now.duration_since(c.started);
                if age > self.cfg.boot_timeout {
                    let msg = BootTimeout {
                        number: c.number,
                        pid: c.pid,
                        age,
                        boot_timeout: self.cfg.boot_timeout,
                    }
                    .to_string();
                    self.children[i].send(libc::SIGKILL, Cause::BootTimeout);
                    self.halt(EXIT_BOOT_ERROR, &msg);
                    return;
                }
                i += 1;
                continue;
            }
            if let Some(at) = c.stop_sent {
                let waited = now.duration_since(at);
                if waited > self.cfg.graceful_timeout {
                    log::warn!(
                        "worker {} (pid {}) still running {} after SIGTERM (graceful_timeout {}): \
                         sending SIGKILL",
                        c.number,
                        c.pid,
                        secs(waited),
                        secs(self.cfg.graceful_timeout)
                    );
                    self.children[i].send(libc::SIGKILL, Cause::GracefulTimeout);
                    i += 1;
                    continue;
                }
            }
            let silent = Duration::from_millis(now_ms.saturating_sub(slot.beat_ms()));
            let deadline = slot.deadline_ms();
            let late = Duration::from_millis(now_ms.saturating_sub(deadline));
            let cause = if deadline != 0 && now_ms > deadline && late > self.cfg.request_grace {
                Some(Cause::Deadline {
                    line: slot.request_line(),
                    late,
                })
            } else if c.stop_sent.is_none() && silent > self.cfg.heartbeat_timeout {
                Some(Cause::Heartbeat { silent })
            } else {
                None
            };
            if let Some(cause) = cause {
                let kind = cause.kill_kind().unwrap_or("heartbeat");
                log::error!(
                    "worker {} (pid {}) {kind} timeout: {}; sending SIGABRT (SIGKILL on the next \
                     pass if it is still alive)",
                    c.number,
                    c.pid,
                    cause.detail(self.cfg.limits())
                );
                self.children[i].abort_sent = Some(now);
                self.children[i].send(libc::SIGABRT, cause);
                i += 1;
                continue;
            }
            if c.role == Role::Serving && flags & RETIRE != 0 {
                log::info!(
                    "worker {} (pid {}) retires after {} requests: starting its replacement; it stops \
                     once the replacement is ready",
                    c.number,
                    c.pid,
                    slot.requests()
                );
                self.children[i].role = Role::Replaced;
                self.children[i].replaced_for = Some(Cause::Retire);
            }
            i += 1;
        }
    }

    fn count(&self, role: Role, ready: bool) -> usize {
        self.children
            .iter()
            .filter(|c| c.counts_as(role, ready))
            .count()
    }

    /// Spawns up to the target, stops the surplus, stops replaced workers once enough new ones are
    /// ready, and tells systemd.
    fn maintain(&mut self) {
        let serving = self.count(Role::Serving, false);
        for _ in serving..self.target {
            self.spawn();
            if self.stop.is_some() {
                return;
            }
        }
        if serving > self.target {
            let mut surplus = serving - self.target;
            let mut order: Vec<usize> = (0..self.children.len())
                .filter(|&i| self.children[i].role == Role::Serving)
                .collect();
            order.sort_by_key(|&i| self.children[i].number);
            for i in order {
                if surplus == 0 {
                    break;
                }
                log::info!(
                    "stopping worker {} (pid {}): {} worker(s) wanted",
                    self.children[i].number,
                    self.children[i].pid,
                    self.target
                );
                self.children[i].stop(false, Cause::ScaleDown);
                surplus -= 1;
            }
        }
        let ready = self.count(Role::Serving, true);
        let replaced = self.count(Role::Replaced, false);
        if ready >= self.target && replaced > 0 {
            for i in 0..self.children.len() {
                if self.children[i].role == Role::Replaced {
                    let cause = self.children[i]
                        .replaced_for
                        .clone()
                        .unwrap_or(Cause::Reload);
                    self.children[i].stop(false, cause);
                }
            }
        }
        let replaced = self.count(Role::Replaced, false);
        if ready >= self.target && replaced == 0 && (!self.announced_ready || self.reloading) {
            let first = !self.announced_ready;
            self.announced_ready = true;
            self.reloading = false;
            log::info!(
                "{} worker(s) ready{}",
                ready,
                if first { "" } else { " after the reload" }
            );
            notify_or_log(&format!(
                "READY=1\nMAINPID={}\nSTATUS={ready} worker(s) ready",
                self.pid
            ));
            if let Some(old) = self.upgrade_from.take() {
                log::info!(
                    "binary upgrade: this master (pid {}) is ready; telling the old master (pid \
                     {old}) to stop gracefully",
                    self.pid
                );
                // SAFETY: kill(2) of our parent, checked at start to be the master that started this
                // one (PREFORK_UPGRADE_FROM); SIGTERM asks it for a graceful stop.
                unsafe { libc::kill(old, libc::SIGTERM) };
            }
            self.last_status = format!("{ready}");
            if let Some(f) = self.hooks.when_ready.as_mut() {
                f(&self.listeners);
            }
        } else if self.announced_ready && self.last_status != format!("{ready}") {
            self.last_status = format!("{ready}");
            notify_or_log(&format!(
                "STATUS={ready} worker(s) ready of {} wanted",
                self.target
            ));
        }
    }

    fn spawn(&mut self) {
        let Some(slot) = (0..self.table.len()).find(|s| self.children.iter().all(|c| c.slot != *s))
        else {
            log::error!(
                "no free heartbeat slot for a new worker ({} processes alive): not starting one now",
                self.children.len()
            );
            return;
        };
        let max = if self.cfg.max_requests == 0 {
            0
        } else {
            self.cfg.max_requests + self.recycler.requests_jitter()
        };
        self.table.slot(slot).reset(max);
        let number = self.next_number;
        self.next_number += 1;
        if let Some(f) = self.hooks.pre_fork.as_mut() {
            f(number);
        }
        let _ = io::stdout().flush();
        let _ = io::stderr().flush();
        let pid = fork::fork_with_signals_blocked();
        // Taken before the parent's hook, whose own calls may change errno.
        let fork_error = (pid < 0).then(io::Error::last_os_error);
        if pid != 0 {
            if let Some(f) = self.hooks.post_fork_parent.as_mut() {
                f(number, u32::try_from(pid).ok());
            }
        }
        if let Some(e) = fork_error {
            log::error!(
                "fork failed: {e}; retrying on the next pass (check the process limit, `ulimit -u`, \
                 and free memory)"
            );
            return;
        }
        if pid == 0 {
            self.signals.forget_in_child();
            let setup = ChildSetup {
                number,
                master_pid: self.pid,
                master_wake: self.signals.wake_fd(),
                master_read: self.signals.read_fd(),
                slot: self.table.leak_slot(slot),
                slots: self.table.leak_all(),
                head: self.table.leak_head(),
                listeners: std::mem::take(&mut self.listeners),
                gate_ping: self.table.gate_ping(),
                run_as: self.cfg.run_as.clone(),
            };
            let mut post_fork = self.hooks.post_fork.take();
            let preloaded = self.preloaded.take();
            let app = &mut self.app;
            child_main(
                setup,
                move |n| {
                    if let Some(f) = post_fork.as_mut() {
                        f(n)
                    }
                },
                move || match preloaded {
                    Some(w) => Ok(w),
                    None => app().map_err(|e| e.to_string()),
                },
            );
        }
        // The child writes it too; the siblings read it to recognise its self-calls.
        self.table.slot(slot).set_pid(pid as u32);
        log::info!("booting worker {number} (pid {pid})");
        let lifetime = self.recycler.lifetime();
        self.children.push(Child::new(pid, number, slot, lifetime));
    }
}

impl<A, W> Drop for Master<A, W> {
    fn drop(&mut self) {
        // Never leave a worker behind (a panic in the master loop, or an early return).
        kill_and_reap(&self.children);
    }
}
