//! [`Siblings`]: a worker process's view of the other worker processes of its supervisor, read
//! from the heartbeat table (their pids, and which of them are busy in every thread).

use crate::prefork::workers::heartbeat::HeartbeatSlot;

/// A worker process's view of its siblings: the other worker processes of the same supervisor, as
/// the heartbeat table lists them, from [`WorkerEnv::siblings`](crate::prefork::WorkerEnv::siblings).
///
/// Cheap to copy and `Send + Sync`. [`Supervisor::serve_http`](crate::prefork::Supervisor::serve_http)
/// gives it to each worker's HTTP server
/// ([`ServerBuilder::sibling_pids`](crate::http::ServerBuilder::sibling_pids)), so that a request
/// a sibling sent to its own service while every thread here is busy is served as a self-call.
#[derive(Clone, Copy)]
pub struct Siblings {
    slots: &'static [HeartbeatSlot],
}

impl std::fmt::Debug for Siblings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Siblings")
            .field("pids", &self.pids())
            .finish()
    }
}

impl Siblings {
    pub(crate) fn new(slots: &'static [HeartbeatSlot]) -> Siblings {
        Siblings { slots }
    }

    /// Every slot of the table (this process's own included).
    pub(crate) fn slots(&self) -> &'static [HeartbeatSlot] {
        self.slots
    }

    /// The pids of the other worker processes of this supervisor alive now (booting, serving or
    /// draining), without this process's own. A few atomic loads per slot of the table.
    pub fn pids(&self) -> Vec<u32> {
        let own = std::process::id();
        self.slots
            .iter()
            .map(HeartbeatSlot::pid)
            .filter(|p| *p != 0 && *p != own)
            .collect()
    }

    /// The pids of the siblings whose every handler thread runs a request now: the only ones
    /// whose call to the service can be part of a wait cycle with this process (a sibling with
    /// an idle thread serves the calls this process's threads wait for). The self-call search
    /// looks among these only: searching a sibling costs a `readlink` per descriptor it holds,
    /// so searching every sibling made each request that arrived while this process was busy
    /// cost milliseconds once the siblings held thousands of connections (measured: a burst of
    /// 2,000 connections from a local client answered in 2.7 s by 2 processes × 1 thread,
    /// against 0.5 s by 1 process × 2 threads).
    pub(crate) fn saturated_pids(&self) -> Vec<u32> {
        let own = std::process::id();
        self.slots
            .iter()
            .filter(|s| {
                let (pid, threads) = (s.pid(), s.threads());
                pid != 0 && pid != own && threads > 0 && s.running() >= threads
            })
            .map(HeartbeatSlot::pid)
            .collect()
    }
}
