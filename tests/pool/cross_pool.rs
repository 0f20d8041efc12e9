//! A pool's bound holds whoever calls it: calls from another pool's handlers (or from HTTP handlers)
//! wait in its queue and run on its own workers, with their per-worker resource; a wait-for cycle of
//! pools is answered on a thread of the right pool, or refused under `Reentry::Reject`.

use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Barrier};
use std::time::{Duration, Instant};

use prefork_pool::{Error, Pool, Reentry, Stage};

thread_local! {
    /// The "connection" a db worker opens in its start hook.
    static CONN: Cell<Option<usize>> = const { Cell::new(None) };
}

/// What one db handler run saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct DbRun {
    /// The per-worker resource was there.
    had_conn: bool,
    /// The handler ran on one of the db pool's workers.
    on_worker: bool,
}

/// Handlers in flight now, and the most ever seen at once.
#[derive(Default)]
struct Peak {
    now: AtomicUsize,
    max: AtomicUsize,
}

impl Peak {
    fn enter(&self) {
        let n = self.now.fetch_add(1, Ordering::SeqCst) + 1;
        self.max.fetch_max(n, Ordering::SeqCst);
    }
    fn leave(&self) {
        self.now.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A 1-worker "db" pool whose worker opens its connection in `on_worker_start`.
fn db_pool(peak: Arc<Peak>) -> Pool<u32, DbRun> {
    Pool::builder()
        .name("db")
        .workers(1)
        .deadline(Duration::from_secs(30))
        .on_worker_start(|i| CONN.with(|c| c.set(Some(i))))
        .build(move |_q: u32, ctx| {
            peak.enter();
            let had_conn = CONN.with(Cell::get).is_some();
            // Long enough for concurrent callers to overlap if the bound leaked.
            std::thread::sleep(Duration::from_millis(1));
            peak.leave();
            DbRun {
                had_conn,
                on_worker: ctx.worker().is_some(),
            }
        })
        .unwrap()
}

#[test]
fn a_one_worker_pool_called_by_a_four_worker_pool_runs_one_handler_at_once() {
    let peak = Arc::new(Peak::default());
    let db = db_pool(peak.clone());
    let db2 = db.clone();
    let web: Pool<u32, DbRun> = Pool::builder()
        .name("web")
        .workers(4)
        .deadline(Duration::from_secs(30))
        .build(move |q: u32, _ctx| db2.call(q).expect("the db answers"))
        .unwrap();
    let runs: Vec<DbRun> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..8)
            .map(|t| {
                let web = web.clone();
                s.spawn(move || {
                    (0..25)
                        .map(|i| web.call(t * 100 + i).unwrap())
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });
    assert_eq!(runs.len(), 200);
    assert!(
        runs.iter().all(|r| r.had_conn && r.on_worker),
        "every db run is on a db worker with its connection: {:?}",
        runs.iter().find(|r| !(r.had_conn && r.on_worker))
    );
    assert_eq!(
        peak.max.load(Ordering::SeqCst),
        1,
        "the 1-worker db pool never ran two handlers at once"
    );
    let stats = db.stats();
    assert_eq!(stats.completed, 200, "{stats:?}");
    assert_eq!(stats.reentrant_inline, 0, "no call bypassed the queue");
    web.shutdown(Duration::from_secs(5));
    db.shutdown(Duration::from_secs(5));
}

#[cfg(feature = "http")]
#[test]
fn a_one_worker_pool_called_by_http_handlers_runs_one_handler_at_once() {
    use std::io::{Read, Write};

    let peak = Arc::new(Peak::default());
    let db = db_pool(peak.clone());
    let db2 = db.clone();
    let server = prefork_pool::http::Server::builder()
        .bind("127.0.0.1:0")
        // The clients live in this process: they are not self-calls to rescue.
        .max_spare(0)
        .pool(|p| p.workers(4).name("web"))
        .serve(move |_req, _ctx| {
            let run = db2.call(0).expect("the db answers");
            let body = if run.had_conn && run.on_worker {
                "ok"
            } else {
                "bypass"
            };
            http::Response::new(body.as_bytes().to_vec())
        })
        .unwrap();
    let addr = server.local_addrs()[0];
    let bodies: Vec<String> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..8)
            .map(|_| {
                s.spawn(move || {
                    (0..10)
                        .map(|_| {
                            let mut c = std::net::TcpStream::connect(addr).unwrap();
                            c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
                            c.write_all(b"GET /q HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                                .unwrap();
                            let mut out = String::new();
                            c.read_to_string(&mut out).unwrap();
                            assert!(out.starts_with("HTTP/1.1 200"), "{out}");
                            out.rsplit("\r\n\r\n").next().unwrap().to_owned()
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });
    assert_eq!(bodies.len(), 80);
    assert!(bodies.iter().all(|b| b == "ok"), "{bodies:?}");
    assert_eq!(
        peak.max.load(Ordering::SeqCst),
        1,
        "the db pool never ran two handlers at once under 8 HTTP clients"
    );
    server.shutdown(Duration::from_secs(5));
    db.shutdown(Duration::from_secs(5));
}

#[test]
fn a_plain_cross_pool_call_waits_in_the_queue_until_its_deadline() {
    let (release, gate) = mpsc::channel::<()>();
    let gate = parking_lot::Mutex::new(gate);
    let runs = Arc::new(AtomicUsize::new(0));
    let r2 = runs.clone();
    let db: Pool<bool, u32> = Pool::builder()
        .name("db")
        .workers(1)
        .build(move |block: bool, _| {
            r2.fetch_add(1, Ordering::SeqCst);
            if block {
                gate.lock().recv().ok();
            }
            7
        })
        .unwrap();
    let busy = db.submit(true);
    while db.stats().busy == 0 {
        std::thread::yield_now();
    }
    let db2 = db.clone();
    let web: Pool<(), Result<u32, Error>> = Pool::builder()
        .name("web")
        .workers(1)
        .build(move |(), _| db2.call_with(false, Duration::from_millis(200)))
        .unwrap();
    let start = Instant::now();
    let answer = web.call(()).unwrap();
    assert!(
        matches!(
            answer,
            Err(Error::DeadlineExceeded {
                stage: Stage::Queued,
                ..
            })
        ),
        "the call waited for db's only worker instead of running on web's thread: {answer:?}"
    );
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(runs.load(Ordering::SeqCst), 1, "only the blocking job ran");
    release.send(()).unwrap();
    assert_eq!(busy.wait().unwrap(), 7);
    web.shutdown(Duration::from_secs(5));
    db.shutdown(Duration::from_secs(5));
}

type Chain = Vec<(String, String)>;
type RingPool = Pool<u32, Result<Chain, Error>>;

/// Pools whose handler, for `n > 0`, calls the next pool with `n - 1`, the last one calling the
/// first; each answer lists (pool, thread) per hop. Dropping it breaks the reference cycle and
/// shuts the pools down.
struct Ring {
    pools: Vec<RingPool>,
    slots: Vec<Arc<parking_lot::Mutex<Option<RingPool>>>>,
}

impl Drop for Ring {
    fn drop(&mut self) {
        for s in &self.slots {
            s.lock().take();
        }
        for p in &self.pools {
            p.shutdown(Duration::from_secs(5));
        }
    }
}

fn ring(names: &[&str], workers: usize, policy: Reentry) -> Ring {
    let slots: Vec<Arc<parking_lot::Mutex<Option<RingPool>>>> =
        names.iter().map(|_| Arc::default()).collect();
    let mut pools = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let next = slots[(i + 1) % names.len()].clone();
        let me = name.to_string();
        let pool: RingPool = Pool::builder()
            .name(*name)
            .workers(workers)
            .deadline(Duration::from_secs(30))
            .reentry(policy)
            .build(move |n: u32, _ctx| {
                let thread = std::thread::current().name().unwrap_or("").to_owned();
                let mut chain = vec![(me.clone(), thread)];
                if n > 0 {
                    let next = next.lock().clone().expect("ring set up");
                    chain.extend(next.call(n - 1)??);
                }
                Ok(chain)
            })
            .unwrap();
        *slots[i].lock() = Some(pool.clone());
        pools.push(pool);
    }
    Ring { pools, slots }
}

fn assert_each_hop_on_its_own_pool(chain: &Chain) {
    for (pool, thread) in chain {
        assert!(
            thread.starts_with(&format!("{pool}-worker-")),
            "a handler of `{pool}` ran on thread `{thread}`: {chain:?}"
        );
    }
}

#[test]
fn a_chain_nine_deep_across_three_one_worker_pools_is_answered_on_each_pools_own_threads() {
    let ring = ring(&["ra", "rb", "rc"], 1, Reentry::Inline);
    let start = Instant::now();
    let chain = ring.pools[0].call(9).unwrap().unwrap();
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );
    let hops: Vec<&str> = chain.iter().map(|(p, _)| p.as_str()).collect();
    assert_eq!(
        hops,
        ["ra", "rb", "rc", "ra", "rb", "rc", "ra", "rb", "rc", "ra"]
    );
    assert_each_hop_on_its_own_pool(&chain);
}

#[test]
fn concurrent_chains_around_a_ring_with_every_worker_busy_are_answered() {
    // Two workers per pool, two concurrent chains twelve deep: each chain holds a worker of every
    // pool, so every worker of every pool waits on the next pool, and each call back into a pool
    // is handed to the worker of its own chain.
    let ring = ring(&["qa", "qb", "qc"], 2, Reentry::Inline);
    let start = Instant::now();
    let chains: Vec<Chain> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..2)
            .map(|_| {
                let p = ring.pools[0].clone();
                s.spawn(move || p.call(12).unwrap().unwrap())
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(
        start.elapsed() < Duration::from_secs(20),
        "{:?}",
        start.elapsed()
    );
    for chain in &chains {
        assert_eq!(chain.len(), 13);
        assert_each_hop_on_its_own_pool(chain);
    }
}

#[test]
fn a_cycle_a_b_a_with_every_worker_of_both_busy_is_answered_on_an_a_worker() {
    type P = Pool<u32, String>;
    let workers = 2;
    let a_slot: Arc<parking_lot::Mutex<Option<P>>> = Arc::default();
    let a_for_b = a_slot.clone();
    let b_busy = Arc::new(Barrier::new(workers));
    let b: P = Pool::builder()
        .name("cb")
        .workers(workers)
        .deadline(Duration::from_secs(30))
        .build(move |n: u32, _ctx| {
            b_busy.wait(); // every B worker holds a job that calls A
            let a = a_for_b.lock().clone().expect("a is set");
            a.call(n).unwrap()
        })
        .unwrap();
    let b_for_a = b.clone();
    let a_busy = Arc::new(Barrier::new(workers));
    let a: P = Pool::builder()
        .name("ca")
        .workers(workers)
        .deadline(Duration::from_secs(30))
        .build(move |n: u32, _ctx| {
            if n == 0 {
                // The nested A call: it runs on an A thread (the worker waiting for the chain).
                return std::thread::current().name().unwrap_or("").to_owned();
            }
            a_busy.wait(); // every A worker holds an outer job
            b_for_a.call(0).unwrap()
        })
        .unwrap();
    *a_slot.lock() = Some(a.clone());
    let start = Instant::now();
    let threads: Vec<String> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..workers)
            .map(|_| {
                let a = a.clone();
                s.spawn(move || a.call(1).unwrap())
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "answered well before the 30 s deadline: {:?}",
        start.elapsed()
    );
    for t in &threads {
        assert!(t.starts_with("ca-worker-"), "the nested A job ran on `{t}`");
    }
    a_slot.lock().take();
    b.shutdown(Duration::from_secs(5));
    a.shutdown(Duration::from_secs(5));
}

#[test]
fn reject_refuses_a_cycle_and_names_its_pools() {
    let ring = ring(&["ja", "jb", "jc"], 1, Reentry::Reject);
    // ja(1) -> jb(0): no cycle, answered.
    let chain = ring.pools[0].call(1).unwrap().unwrap();
    assert_eq!(chain.len(), 2);
    // ja(3) -> jb(2) -> jc(1) -> ja(0): the call back into ja is refused at once.
    let start = Instant::now();
    match ring.pools[0].call(3).unwrap() {
        Err(Error::Reentrant { pool, .. }) => assert_eq!(pool, "ja -> jb -> jc -> ja"),
        other => panic!("expected Reentrant, got {other:?}"),
    }
    assert!(start.elapsed() < Duration::from_secs(5));
    assert_eq!(ring.pools[0].stats().reentrant_rejected, 1);
}

#[test]
fn a_cycle_closed_by_a_submitted_ticket_is_answered_on_the_waiting_worker() {
    type P = Pool<u32, String>;
    let a_slot: Arc<parking_lot::Mutex<Option<P>>> = Arc::default();
    let a_for_b = a_slot.clone();
    let b: P = Pool::builder()
        .name("tb")
        .workers(1)
        .deadline(Duration::from_secs(30))
        .build(move |n: u32, _ctx| {
            let a = a_for_b.lock().clone().expect("a is set");
            a.submit(n).wait().unwrap()
        })
        .unwrap();
    let b_for_a = b.clone();
    let a: P = Pool::builder()
        .name("ta")
        .workers(1)
        .deadline(Duration::from_secs(30))
        .build(move |n: u32, _ctx| {
            if n == 0 {
                return std::thread::current().name().unwrap_or("").to_owned();
            }
            b_for_a.submit(0).wait().unwrap()
        })
        .unwrap();
    *a_slot.lock() = Some(a.clone());
    let start = Instant::now();
    assert_eq!(a.call(1).unwrap(), "ta-worker-0");
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );
    a_slot.lock().take();
    b.shutdown(Duration::from_secs(5));
    a.shutdown(Duration::from_secs(5));
}
