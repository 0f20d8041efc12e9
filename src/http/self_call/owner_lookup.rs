//! The self-call lookup thread: on the slow path, which process holds the client end of a TCP
//! connection is found out here, off the thread that read the request, and the request then goes
//! on (to a spare thread or to the pool) from here.
//!
//! One thread per server, started at the first lookup and gone when the server is: it keeps a
//! `sock_diag` netlink socket (opened with the server, so the server's descriptors do not change
//! at its first lookup) and asks the kernel for the one client socket by the connection's
//! 4-tuple ([`SockDiag::owner`]), then searches this process's descriptors, skipping those the
//! reactor owns ([`OwnedFds`]): a cost that does not grow with the number of sockets on the host
//! or of idle connections. Only when that cannot tell ([`Owner::Unknown`]: not Linux, netlink
//! refused) does it fall back to the table scan of `self_call.rs`. Lookups are made one at a
//! time, in the order the reactor asked for them; each request is handed on exactly once.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender};
use parking_lot::{Condvar, Mutex};

use crate::http::self_call::calls::{sibling_pids, tcp_caller, Caller, SiblingPids};
use crate::http::self_call::peer_owner::{OwnedFds, Owner, SockDiag};

/// Where a connection's answer is kept once looked up: set once (by the lookup thread, before the
/// request goes on), read by the connection for its next requests.
pub(crate) type CallerCell = Arc<OnceLock<Option<Caller>>>;

/// What to do with the answer: hand the request on (to a spare thread or the pool).
pub(crate) type Then = Box<dyn FnOnce(Option<Caller>) + Send>;

/// One lookup to make.
struct Job {
    peer: SocketAddr,
    local: SocketAddr,
    siblings: Option<SiblingPids>,
    then: Then,
}

/// The lookup thread of one server (started when first needed), the descriptors the reactor
/// owns, and the count of lookups made.
#[derive(Debug, Default)]
pub(crate) struct OwnerLookup {
    tx: OnceLock<Option<Sender<Job>>>,
    /// The netlink socket, opened with the server (so that the server's descriptors do not
    /// change later, at its first lookup), until the thread takes it.
    diag: Mutex<Option<SockDiag>>,
    /// The reactor's listeners and connections: skipped by the search.
    pub owned: Arc<OwnedFds>,
    lookups: Arc<AtomicU64>,
}

impl OwnerLookup {
    /// For a server that looks up (`enabled`: `max_spare` > 0): the netlink socket is opened now.
    pub(crate) fn new(enabled: bool) -> Self {
        let diag = if enabled {
            SockDiag::open(SockDiag::DEFAULT_TIMEOUT).ok()
        } else {
            None
        };
        OwnerLookup {
            diag: Mutex::new(diag),
            ..OwnerLookup::default()
        }
    }

    /// Lookups made (TCP, on the lookup thread, and Unix, on the thread that read the request:
    /// [`count`](Self::count)).
    pub(crate) fn lookups(&self) -> u64 {
        self.lookups.load(Ordering::Relaxed)
    }

    /// Count a lookup made elsewhere (a Unix socket's `SO_PEERCRED`, on the thread that read the
    /// request).
    pub(crate) fn count(&self) {
        self.lookups.fetch_add(1, Ordering::Relaxed);
    }

    /// Find out who holds the client end of the connection from `peer` to our `local`, then call
    /// `then` with the answer, on the lookup thread (on the calling thread only if that thread
    /// cannot be started).
    pub(crate) fn look_up(
        &self,
        peer: SocketAddr,
        local: SocketAddr,
        siblings: Option<SiblingPids>,
        then: Then,
    ) {
        let job = Job {
            peer,
            local,
            siblings,
            then,
        };
        let job = match self.tx.get_or_init(|| self.start()) {
            Some(tx) => match tx.send(job) {
                Ok(()) => return,
                Err(e) => e.into_inner(),
            },
            None => job,
        };
        let mut diag = None;
        Searcher {
            diag: &mut diag,
            owned: &self.owned,
            lookups: &self.lookups,
        }
        .run(job);
    }

    /// Start the thread; `None` when it cannot be.
    fn start(&self) -> Option<Sender<Job>> {
        let (tx, rx) = crossbeam_channel::unbounded::<Job>();
        let owned = self.owned.clone();
        let lookups = self.lookups.clone();
        let diag = self.diag.lock().take();
        let spawned = std::thread::Builder::new()
            .name("http-selfcall-lookup".to_string())
            .spawn(move || serve(rx, diag, owned, lookups));
        match spawned {
            Ok(_) => Some(tx),
            Err(e) => {
                log::error!(
                    target: "prefork_pool::http",
                    "cannot start the self-call lookup thread: {e}; looking up on the reactor"
                );
                None
            }
        }
    }
}

/// The thread: one job at a time, until the server (which holds the sender) is gone. `diag`: the
/// netlink socket opened with the server (`None`: it could not be; it is tried again once).
fn serve(rx: Receiver<Job>, diag: Option<SockDiag>, owned: Arc<OwnedFds>, lookups: Arc<AtomicU64>) {
    let mut diag = diag.map(Some);
    while let Ok(job) = rx.recv() {
        Searcher {
            diag: &mut diag,
            owned: &owned,
            lookups: &lookups,
        }
        .run(job);
    }
}

/// What one lookup uses.
struct Searcher<'a> {
    /// The netlink socket, opened at the first lookup (`Some(None)`: it could not be).
    diag: &'a mut Option<Option<SockDiag>>,
    owned: &'a OwnedFds,
    lookups: &'a AtomicU64,
}

impl Searcher<'_> {
    fn run(self, job: Job) {
        hold_point();
        self.lookups.fetch_add(1, Ordering::Relaxed);
        let caller = self.caller(job.peer, job.local, job.siblings.as_ref());
        (job.then)(caller);
    }

    fn caller(
        self,
        peer: SocketAddr,
        local: SocketAddr,
        siblings: Option<&SiblingPids>,
    ) -> Option<Caller> {
        let diag = self
            .diag
            .get_or_insert_with(|| SockDiag::open(SockDiag::DEFAULT_TIMEOUT).ok());
        let owner = match diag {
            Some(d) => {
                let pids = sibling_pids(siblings);
                let owned = self.owned;
                d.owner(peer, local, &pids, owned.highest(), |fd| owned.contains(fd))
            }
            None => Owner::Unknown,
        };
        let tcp = |sibling| {
            Some(Caller {
                sibling,
                via: "TCP",
            })
        };
        match owner {
            Owner::ThisProcess => tcp(None),
            Owner::Sibling(pid) => tcp(Some(pid)),
            Owner::Other => None,
            Owner::Unknown => tcp_caller(peer, local, siblings),
        }
    }
}

// ----- a hold, for the tests of this crate's users -----

/// Whether lookups wait ([`hold_lookups`]).
static HELD: AtomicBool = AtomicBool::new(false);
/// Lookups waiting now.
static WAITING: AtomicUsize = AtomicUsize::new(0);
static GATE: Mutex<()> = Mutex::new(());
static RELEASED: Condvar = Condvar::new();
/// The longest a lookup waits for a hold to end.
const HOLD_MAX: Duration = Duration::from_secs(60);

/// While a hold is on, each lookup waits (at most a minute) before it starts.
fn hold_point() {
    if !HELD.load(Ordering::SeqCst) {
        return;
    }
    let mut g = GATE.lock();
    WAITING.fetch_add(1, Ordering::SeqCst);
    let deadline = std::time::Instant::now() + HOLD_MAX;
    while HELD.load(Ordering::SeqCst) {
        if RELEASED.wait_until(&mut g, deadline).timed_out() {
            break;
        }
    }
    WAITING.fetch_sub(1, Ordering::SeqCst);
}

/// Not part of the API: for tests. Makes every self-call lookup (of every server of this
/// process) wait, at most a minute, until the returned guard is dropped.
#[doc(hidden)]
pub fn hold_lookups() -> LookupHold {
    HELD.store(true, Ordering::SeqCst);
    LookupHold(())
}

/// Not part of the API: for tests. The hold of [`hold_lookups`]; dropping it lets the lookups go.
#[doc(hidden)]
#[derive(Debug)]
pub struct LookupHold(());

impl LookupHold {
    /// Lookups waiting for this hold now.
    pub fn waiting(&self) -> usize {
        WAITING.load(Ordering::SeqCst)
    }
}

impl Drop for LookupHold {
    fn drop(&mut self) {
        let _g = GATE.lock();
        HELD.store(false, Ordering::SeqCst);
        RELEASED.notify_all();
    }
}
