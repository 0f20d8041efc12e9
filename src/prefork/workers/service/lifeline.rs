//! The self-call in async clothes: a handler that blocks every runtime thread on a synchronous
//! call (`reqwest::blocking`, `ureq`, a sync SDK) to its own server waits for an answer that
//! runtime can never give. The lifeline, a plain thread beside the runtime, sees the runtime
//! stall (its tick stops while requests run) and, when a connection has been left in a TCP
//! listener's queue for [`QUEUE_STALL`] (no sibling took it), accepts it and serves it on a spare
//! runtime of one thread; when the connection comes from this process (or a sibling worker) it
//! says so once per route, with the fix. It also answers 504 to a request blocked past its
//! deadline and publishes the request furthest past its deadline in the heartbeat
//! (`overdue.rs`).

use std::collections::HashSet;
use std::net::TcpListener;
use std::os::fd::AsRawFd;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::conn::serve_connection;
use super::overdue;
use super::request::Shared;
use super::{AnswerBody, AppService};
use crate::http::self_call::calls::{tcp_caller, SiblingPids};
use crate::http::{tcp_queued, QUEUE_STALL};
use crate::prefork::workers::siblings::Siblings;

/// How often the runtime's tick task marks that it runs.
pub(super) const TICK: Duration = Duration::from_millis(50);
/// A runtime whose tick is this late while requests run is stalled: every thread is blocked.
const STALLED: Duration = Duration::from_millis(300);
/// How often the lifeline looks.
const LOOK: Duration = Duration::from_millis(50);

/// Starts the lifeline over `listeners` (copies of the worker's TCP listeners); it also answers
/// the requests blocked past their deadline (`overdue.rs`), and ends once the worker drained.
pub(super) fn start<S, B>(
    listeners: Vec<TcpListener>,
    shared: &'static Shared,
    siblings: Siblings,
    spare: tokio::runtime::Handle,
    service: S,
) -> std::io::Result<JoinHandle<()>>
where
    S: AppService<B>,
    B: AnswerBody,
{
    std::thread::Builder::new()
        .name("prefork-lifeline".into())
        .spawn(move || {
            let siblings = SiblingPids(Arc::new(move || siblings.pids()));
            let warned = Mutex::new(HashSet::new());
            let mut queued_since: Vec<Option<Instant>> = vec![None; listeners.len()];
            // Until the worker drained: a request blocked during the drain gets its 504 too.
            while !shared.done.load(Ordering::Acquire) {
                std::thread::sleep(LOOK);
                let tick = Duration::from_millis(shared.tick_ms.load(Ordering::Relaxed));
                let late = shared.born.elapsed().saturating_sub(tick);
                let running = shared.heartbeat.slot().running();
                // (The tick task ends at the drain's start: "stalled" from then on only in the
                // log's wording.)
                overdue::sweep(
                    &shared.watch,
                    &shared.heartbeat,
                    shared.counters,
                    shared.cfg.access_log.as_ref(),
                    running > 0 && late >= STALLED,
                );
                if shared.stopping() {
                    continue;
                }
                if running == 0 || late < STALLED {
                    queued_since.iter_mut().for_each(|q| *q = None);
                    continue;
                }
                for (l, since) in listeners.iter().zip(queued_since.iter_mut()) {
                    if !tcp_queued(l.as_raw_fd()) {
                        *since = None;
                        continue;
                    }
                    let first = *since.get_or_insert_with(Instant::now);
                    if first.elapsed() < QUEUE_STALL {
                        continue;
                    }
                    *since = None;
                    let Ok((stream, peer)) = l.accept() else {
                        continue;
                    };
                    let local = stream.local_addr().ok();
                    let caller = local.and_then(|local| tcp_caller(peer, local, Some(&siblings)));
                    let blocked = shared.watch.oldest_line();
                    match caller {
                        Some(c) => {
                            if warned
                                .lock()
                                .unwrap_or_else(|p| p.into_inner())
                                .insert(blocked.clone())
                            {
                                let from = c
                                    .sibling
                                    .map_or("this worker process".to_string(), |pid| {
                                        format!("the sibling worker process {pid}")
                                    });
                                log::warn!(
                                    "every runtime thread of this worker (pid {}) is blocked (running: \
                                     {blocked}) and a request came from {from} over {}: a \
                                     synchronous call on the runtime (reqwest::blocking, ureq, a sync \
                                     SDK) to its own server, which the blocked runtime can never \
                                     answer. Served on a spare runtime this time; the fix: an async \
                                     client (reqwest), or the blocking call through a Pool \
                                     (`pool.submit(req).await`). (Logged once per route.)",
                                    std::process::id(),
                                    c.via
                                );
                            }
                        }
                        None => log::debug!(
                            "every runtime thread is blocked (running: {blocked}): a connection \
                             from {peer} left in the queue for {QUEUE_STALL:?} is served on the \
                             spare runtime"
                        ),
                    }
                    let shared = shared;
                    let service = service.clone();
                    spare.spawn(async move {
                        let Ok(s) = stream
                            .set_nonblocking(true)
                            .and_then(|()| tokio::net::TcpStream::from_std(stream))
                        else {
                            return;
                        };
                        let _ = s.set_nodelay(true);
                        serve_connection(s, Some(peer), shared, service);
                    });
                }
            }
        })
}
