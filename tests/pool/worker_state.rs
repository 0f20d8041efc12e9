//! Per-worker state (`build_with_state`): made by its init on the worker thread, once per worker
//! and again for each replacement, lent to the handler as `&mut S`, dropped before the exit hook;
//! init errors fail the build, or are retried and counted once the pool runs.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use prefork_pool::{Error, Pool, Reentry};

use crate::pool_helpers::{eventually, threads_named};

const WAIT: Duration = Duration::from_secs(20);

fn thread_name() -> String {
    std::thread::current().name().unwrap_or("").to_owned()
}

/// A state that counts how many of its kind are alive and logs its drop.
struct Conn {
    id: usize,
    worker: usize,
    jobs: u32,
    alive: Arc<AtomicUsize>,
    events: Arc<Mutex<Vec<String>>>,
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.alive.fetch_sub(1, Ordering::SeqCst);
        self.events
            .lock()
            .unwrap()
            .push(format!("drop {} on {}", self.worker, thread_name()));
    }
}

/// What a test sees of its pool's states.
#[derive(Clone, Default)]
struct Book {
    made: Arc<AtomicUsize>,
    alive: Arc<AtomicUsize>,
    events: Arc<Mutex<Vec<String>>>,
}

impl Book {
    fn init(&self) -> impl Fn(usize) -> Result<Conn, String> + Send + Sync + 'static {
        let book = self.clone();
        move |worker| {
            let id = book.made.fetch_add(1, Ordering::SeqCst) + 1;
            book.alive.fetch_add(1, Ordering::SeqCst);
            book.events
                .lock()
                .unwrap()
                .push(format!("init {worker} on {}", thread_name()));
            Ok(Conn {
                id,
                worker,
                jobs: 0,
                alive: book.alive.clone(),
                events: book.events.clone(),
            })
        }
    }

    fn events(&self) -> Vec<String> {
        self.events.lock().unwrap().clone()
    }
}

/// (state id, the state's worker, the job's worker, jobs this state has run, thread)
type Seen = (usize, usize, Option<usize>, u32, String);

fn seen(conn: &mut Conn, ctx: &prefork_pool::Context) -> Seen {
    conn.jobs += 1;
    (conn.id, conn.worker, ctx.worker(), conn.jobs, thread_name())
}

#[test]
fn init_runs_once_per_worker_on_its_thread_and_the_handler_gets_that_workers_state() {
    let book = Book::default();
    let pool = Pool::builder()
        .name("st1")
        .workers(3)
        .build_with_state(book.init(), |conn: &mut Conn, (), ctx| seen(conn, ctx))
        .unwrap();
    let mut inits = book.events();
    inits.sort();
    assert_eq!(
        inits,
        [
            "init 0 on st1-worker-0",
            "init 1 on st1-worker-1",
            "init 2 on st1-worker-2"
        ],
        "build returns once every worker made its state, on its own thread"
    );
    let tickets: Vec<_> = (0..60).map(|_| pool.submit(())).collect();
    for t in tickets {
        let (_, state_worker, job_worker, _, thread) = t.wait().unwrap();
        assert_eq!(
            Some(state_worker),
            job_worker,
            "each worker uses its own state"
        );
        assert_eq!(thread, format!("st1-worker-{state_worker}"));
    }
    assert_eq!(
        book.made.load(Ordering::SeqCst),
        3,
        "no init beyond one per worker"
    );
    pool.shutdown(WAIT);
    assert_eq!(book.alive.load(Ordering::SeqCst), 0, "every state dropped");
}

#[test]
fn a_worker_recycled_after_max_requests_is_replaced_by_one_with_a_new_state() {
    let book = Book::default();
    let pool = Pool::builder()
        .name("st2")
        .workers(1)
        .max_requests(2)
        .build_with_state(book.init(), |conn: &mut Conn, (), ctx| seen(conn, ctx))
        .unwrap();
    let got: Vec<(usize, u32)> = (0..6)
        .map(|_| {
            let (id, _, _, jobs, _) = pool.call(()).unwrap();
            (id, jobs)
        })
        .collect();
    assert_eq!(
        got,
        [(1, 1), (1, 2), (2, 1), (2, 2), (3, 1), (3, 2)],
        "each replacement ran its own init"
    );
    assert!(eventually(WAIT, || book.alive.load(Ordering::SeqCst) == 1));
    pool.shutdown(WAIT);
    assert_eq!(book.alive.load(Ordering::SeqCst), 0);
}

#[test]
fn a_retired_stuck_thread_keeps_its_state_until_its_handler_returns() {
    let book = Book::default();
    let (release, gate) = mpsc::channel::<()>();
    let gate = Mutex::new(gate);
    let pool = Pool::builder()
        .name("st3")
        .workers(1)
        .deadline(Duration::from_millis(200))
        .build_with_state(book.init(), move |conn: &mut Conn, stuck: bool, _ctx| {
            if stuck {
                gate.lock().unwrap().recv().ok();
            }
            conn.id
        })
        .unwrap();
    assert!(matches!(
        pool.call(true),
        Err(Error::DeadlineExceeded { .. })
    ));
    assert!(eventually(WAIT, || pool.stats().retired == 1));
    // The replacement made its own state while the stuck thread still holds the first one.
    assert_eq!(pool.call_with(false, WAIT).unwrap(), 2);
    assert_eq!(
        book.alive.load(Ordering::SeqCst),
        2,
        "workers + retired states at once"
    );
    release.send(()).unwrap();
    assert!(
        eventually(WAIT, || book.alive.load(Ordering::SeqCst) == 1),
        "the retired thread dropped its state once its handler returned"
    );
    pool.shutdown(WAIT);
}

#[test]
fn the_state_is_dropped_on_its_thread_before_the_exit_hook() {
    let book = Book::default();
    let (start_log, exit_log) = (book.events.clone(), book.events.clone());
    let pool = Pool::builder()
        .name("st4")
        .workers(2)
        .on_worker_start(move |i| start_log.lock().unwrap().push(format!("start {i}")))
        .on_worker_exit(move |i| exit_log.lock().unwrap().push(format!("exit {i}")))
        .build_with_state(book.init(), |conn: &mut Conn, (), ctx| seen(conn, ctx))
        .unwrap();
    pool.call(()).unwrap();
    pool.shutdown(WAIT);
    let events = book.events();
    for i in 0..2 {
        let at = |prefix: &str| {
            events
                .iter()
                .position(|e| e.starts_with(prefix))
                .unwrap_or_else(|| panic!("no `{prefix}` in {events:?}"))
        };
        let thread = format!("st4-worker-{i}");
        assert!(
            events.contains(&format!("drop {i} on {thread}")),
            "{events:?}"
        );
        let (start, init, drop, exit) = (
            at(&format!("start {i}")),
            at(&format!("init {i}")),
            at(&format!("drop {i}")),
            at(&format!("exit {i}")),
        );
        assert!(
            start < init && init < drop && drop < exit,
            "worker {i}: start, init, drop, exit in that order: {events:?}"
        );
    }
}

#[test]
fn an_init_error_at_build_fails_the_build_naming_the_worker_and_the_cause() {
    let alive = Arc::new(AtomicUsize::new(0));
    let a2 = alive.clone();
    let err = Pool::builder()
        .name("stbad")
        .workers(3)
        .build_with_state(
            move |worker| {
                if worker == 1 {
                    return Err(format!("database is locked (worker {worker} tried)"));
                }
                a2.fetch_add(1, Ordering::SeqCst);
                Ok(DropCount(a2.clone()))
            },
            |_: &mut DropCount, x: u32, _| x,
        )
        .unwrap_err();
    assert_eq!(err.field, "init");
    let text = err.to_string();
    assert!(text.contains("worker 1"), "{text}");
    assert!(text.contains("database is locked"), "{text}");
    assert!(
        eventually(WAIT, || threads_named("stbad-") == 0),
        "no thread of the failed pool is left"
    );
    assert_eq!(
        alive.load(Ordering::SeqCst),
        0,
        "the states made were dropped"
    );

    let err = Pool::builder()
        .name("stpanic")
        .workers(1)
        .build_with_state(
            |_| -> Result<(), String> { panic!("no config file") },
            |_: &mut (), x: u32, _| x,
        )
        .unwrap_err();
    assert!(err.to_string().contains("no config file"), "{err}");
}

struct DropCount(Arc<AtomicUsize>);

impl Drop for DropCount {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

#[test]
fn a_replacements_failing_init_is_retried_and_counted_until_it_succeeds() {
    let failing = Arc::new(AtomicBool::new(false));
    let tries = Arc::new(AtomicUsize::new(0));
    let (f2, t2) = (failing.clone(), tries.clone());
    let pool = Pool::builder()
        .name("st5")
        .workers(1)
        .max_requests(1)
        .build_with_state(
            move |_| {
                t2.fetch_add(1, Ordering::SeqCst);
                if f2.load(Ordering::SeqCst) {
                    Err("connection refused")
                } else {
                    Ok(0u32)
                }
            },
            |n: &mut u32, (), _| {
                *n += 1;
                *n
            },
        )
        .unwrap();
    assert_eq!(pool.stats().workers_without_state, 0);
    failing.store(true, Ordering::SeqCst);
    assert_eq!(pool.call(()).unwrap(), 1, "served, then recycled");
    assert!(
        eventually(WAIT, || pool.stats().workers_without_state == 1),
        "the stats say a worker lacks its state: {:?}",
        pool.stats()
    );
    let before = tries.load(Ordering::SeqCst);
    assert!(
        eventually(WAIT, || tries.load(Ordering::SeqCst) >= before + 2),
        "the init is retried"
    );
    assert!(pool
        .stats()
        .to_prometheus("t")
        .contains("t_pool_workers_without_state{pool=\"st5\"} 1"));
    failing.store(false, Ordering::SeqCst);
    assert_eq!(
        pool.call_with((), WAIT).unwrap(),
        1,
        "the replacement serves with its fresh state once its init succeeds"
    );
    assert_eq!(pool.stats().workers_without_state, 0);
    pool.shutdown(WAIT);
}

#[test]
fn a_nested_call_into_a_pool_with_state_is_refused_at_once() {
    type Answer = Result<u32, Error>;
    let pool: Pool<u32, Answer> = Pool::builder()
        .name("st6")
        .workers(1)
        .reentry(Reentry::Inline)
        .build_with_state(
            |_| Ok::<_, String>(0u32),
            |_: &mut u32, n: u32, ctx| -> Answer {
                if n == 0 {
                    return Ok(0);
                }
                let me = ctx.pool::<u32, Answer>().unwrap();
                let start = Instant::now();
                let nested = me.call(n - 1);
                assert!(start.elapsed() < Duration::from_secs(1));
                assert!(matches!(
                    me.submit(n - 1).wait(),
                    Err(Error::Reentrant { .. })
                ));
                nested?
            },
        )
        .unwrap();
    match pool.call(1).unwrap() {
        Err(Error::Reentrant { pool, worker }) => {
            assert_eq!(pool, "st6");
            assert_eq!(worker, 0);
        }
        other => panic!("expected Reentrant, got {other:?}"),
    }
    assert!(matches!(
        pool.call_here(0, None),
        Err(Error::Reentrant { .. })
    ));
    assert_eq!(pool.call(0).unwrap().unwrap(), 0, "the pool serves on");
}

#[cfg(feature = "http")]
#[test]
fn an_http_server_with_state_lends_each_worker_its_own() {
    use std::io::{Read, Write};

    let made = Arc::new(AtomicUsize::new(0));
    let m2 = made.clone();
    let server = prefork_pool::http::Server::builder()
        .bind("127.0.0.1:0")
        .max_spare(0)
        .pool(|p| p.workers(2).name("stweb"))
        .serve_with_state(
            move |worker| -> Result<(usize, u32), String> {
                m2.fetch_add(1, Ordering::SeqCst);
                Ok((worker, 0))
            },
            |state: &mut (usize, u32), _req, ctx| {
                state.1 += 1;
                assert_eq!(Some(state.0), ctx.worker());
                http::Response::new(format!("{} {}", state.0, state.1).into_bytes())
            },
        )
        .unwrap();
    let addr = server.local_addrs()[0];
    let mut total = 0;
    for _ in 0..10 {
        let mut c = std::net::TcpStream::connect(addr).unwrap();
        c.set_read_timeout(Some(WAIT)).unwrap();
        c.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .unwrap();
        let mut out = String::new();
        c.read_to_string(&mut out).unwrap();
        assert!(out.starts_with("HTTP/1.1 200"), "{out}");
        let body = out.rsplit("\r\n\r\n").next().unwrap();
        let (worker, n) = body.split_once(' ').unwrap();
        assert!(worker == "0" || worker == "1", "{body}");
        total += 1;
        assert!(n.parse::<u32>().unwrap() <= total);
    }
    assert_eq!(made.load(Ordering::SeqCst), 2, "one state per worker");
    server.shutdown(WAIT);

    let err = prefork_pool::http::Server::builder()
        .bind("127.0.0.1:0")
        .pool(|p| p.workers(1))
        .serve_with_state(
            |_| Err::<(), _>("no database file"),
            |_: &mut (), _req, _ctx| http::Response::new(Vec::new()),
        )
        .unwrap_err();
    assert!(err.to_string().contains("no database file"), "{err}");
}
