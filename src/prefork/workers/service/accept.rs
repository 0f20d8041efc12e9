//! The tower mode's accept loop on each inherited listener, behind the load-aware accept gate the
//! HTTP server's reactor uses (`balance.rs`): before each `accept` the process asks the gate
//! whether it is the taker; while the gate says no it does not accept, and waits for a sibling's
//! ping (the table's eventfd), a recheck every few milliseconds, or a connection left waiting in
//! the queue too long (taken anyway: delayed, never stranded).

use std::fs::File;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

use super::conn::{or_else, serve_connection};
use super::request::Shared;
use super::{AnswerBody, AppService};
use crate::http::{tcp_queued, AcceptPolicy, StallClock, GATE_RECHECK, QUEUE_STALL};

/// How long accepting pauses after an accept error such as EMFILE.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Registers a listener with the runtime (call inside it).
pub(super) fn register(listener: StdListener) -> io::Result<AsyncFd<StdListener>> {
    // SAFETY: the `AsyncFd` owns the listener, so its fd stays open and the same for as long as
    // it is registered (`into_inner` gives the listener back and deregisters it).
    unsafe { AsyncFd::register_with_interest(listener, Interest::READABLE) }.map_err(Into::into)
}

/// A listener of the worker (non-blocking), polled by the runtime.
pub(super) enum StdListener {
    Tcp(std::net::TcpListener),
    Unix(std::os::unix::net::UnixListener),
}

impl AsRawFd for StdListener {
    fn as_raw_fd(&self) -> RawFd {
        match self {
            StdListener::Tcp(l) => l.as_raw_fd(),
            StdListener::Unix(l) => l.as_raw_fd(),
        }
    }
}

/// What to wait on while the gate says no: the table's gate ping (an eventfd; this process's own
/// copy of it), on the runtime.
pub(super) struct GateWake(Option<AsyncFd<File>>);

impl GateWake {
    /// Registers `ping` with the runtime (call inside it).
    pub(super) fn new(ping: Option<File>) -> GateWake {
        // SAFETY: the `AsyncFd` owns the `File`, so its fd stays open and the same for as long
        // as it is registered.
        let registered = ping
            .and_then(|f| unsafe { AsyncFd::register_with_interest(f, Interest::READABLE) }.ok());
        GateWake(registered)
    }

    /// Waits for a sibling's ping or [`GATE_RECHECK`], whichever comes first.
    async fn wait(&self) {
        let recheck = tokio::time::sleep(GATE_RECHECK);
        match &self.0 {
            Some(fd) => {
                let ping = async {
                    if let Ok(mut guard) = fd.readable().await {
                        // The eventfd is never read (see `balance.rs`): the next ping is a new
                        // edge.
                        guard.clear_ready();
                    }
                };
                or_else(ping, recheck).await;
            }
            None => recheck.await,
        }
    }
}

/// What a listener's accept queue holds, as far as it can be seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Queue {
    Empty,
    Waiting,
    /// A Unix socket's queue cannot be read: never taken as stalled.
    Unknown,
}

impl StdListener {
    fn queued(&self) -> Queue {
        match self {
            StdListener::Tcp(l) if tcp_queued(l.as_raw_fd()) => Queue::Waiting,
            StdListener::Tcp(_) => Queue::Empty,
            StdListener::Unix(_) => Queue::Unknown,
        }
    }

    /// Accepts one connection and serves it on the runtime.
    fn accept_one<S, B>(&self, shared: &'static Shared, service: &S) -> io::Result<()>
    where
        S: AppService<B>,
        B: AnswerBody,
    {
        match self {
            StdListener::Tcp(l) => {
                let (s, peer) = l.accept()?;
                s.set_nonblocking(true)?;
                let s = tokio::net::TcpStream::from_std(s)?;
                let _ = s.set_nodelay(true);
                serve_connection(s, Some::<SocketAddr>(peer), shared, service.clone());
            }
            StdListener::Unix(l) => {
                let (s, _) = l.accept()?;
                s.set_nonblocking(true)?;
                let s = tokio::net::UnixStream::from_std(s)?;
                serve_connection(s, None, shared, service.clone());
            }
        }
        Ok(())
    }
}

/// Accepts and serves until the worker drains (asking the gate before each `accept`), then
/// serves what is left in the listen backlog and closes this process's copy of the listener.
pub(super) async fn accept_loop<S, B>(
    listener: AsyncFd<StdListener>,
    shared: &'static Shared,
    wake: Arc<GateWake>,
    service: S,
) where
    S: AppService<B>,
    B: AnswerBody,
{
    let mut stop = shared.stop.clone();
    // How long connections have waited in the listener's queue, with no process accepting,
    // while the gate said no.
    let mut stall = StallClock::default();
    loop {
        let Some(ready) = or_else(listener.readable(), stop.wait_for(|s| *s)).await else {
            break;
        };
        let Ok(mut guard) = ready else {
            tokio::time::sleep(ACCEPT_BACKOFF).await;
            continue;
        };
        if let Some(gate) = &shared.gate {
            let conns = shared.conns.load(Ordering::Acquire);
            if !gate.may_accept(conns) {
                // Not the taker. A TCP queue left waiting for QUEUE_STALL (the process the gates
                // pick does not accept) gives one connection to this process anyway.
                let queued = guard.get_ref().get_ref().queued();
                let stalled = stall.stalled(
                    queued != Queue::Empty,
                    || gate.accepted_everywhere(),
                    Instant::now(),
                ) && queued == Queue::Waiting;
                if !stalled {
                    if queued == Queue::Empty {
                        // Nothing to decide until the next connection comes.
                        guard.clear_ready();
                        continue;
                    }
                    drop(guard);
                    if or_else(wake.wait(), stop.wait_for(|s| *s)).await.is_none() {
                        break;
                    }
                    continue;
                }
                log::debug!("accepted a connection that waited {QUEUE_STALL:?} for a sibling");
            }
        }
        stall.reset();
        match guard.try_io(|l| l.get_ref().accept_one(shared, &service)) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                shared.counters.accept_error();
                log::warn!("accept failed: {e}; pausing {ACCEPT_BACKOFF:?}");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
            }
            Err(_would_block) => {
                // A sibling took it: publish the count this gate claimed one more for.
                if let Some(gate) = &shared.gate {
                    gate.conn_closed(shared.conns.load(Ordering::Acquire));
                }
            }
        }
    }
    // The backlog: what the kernel queued for these sockets before the drain is served here.
    let listener = listener.into_inner();
    while listener.accept_one(shared, &service).is_ok() {}
}
