//! Async callers: a `Ticket` is a future of its answer, woken by the answer (never polled for),
//! cancel-safe (a dropped future whose job has not started gives the job back), and deadline-aware.

use std::future::Future;
use std::pin::Pin;
use std::sync::{mpsc, Arc};
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use prefork_pool::{Error, Pool, Stage, Ticket};

use crate::pool_helpers::{block_on, block_on_counted, join_all};

/// A 1-worker pool whose handler counts its runs and, for `Block`, waits for the test's release.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Job {
    Block,
    Echo(u32),
}

struct Gated {
    pool: Pool<Job, u32>,
    release: mpsc::Sender<()>,
    runs: Arc<Mutex<Vec<Job>>>,
}

fn gated(deadline: Duration) -> Gated {
    gated_with(deadline, None)
}

/// `gated`, with `max_retired` set: 0 keeps the stuck worker in its slot (no replacement), so a
/// queued job cannot start early however late it was submitted.
fn gated_with(deadline: Duration, max_retired: Option<usize>) -> Gated {
    let (release, gate) = mpsc::channel::<()>();
    let gate = Mutex::new(gate);
    let runs = Arc::new(Mutex::new(Vec::new()));
    let seen = runs.clone();
    let mut builder = Pool::builder().workers(1).deadline(deadline);
    if let Some(n) = max_retired {
        builder = builder.max_retired(n);
    }
    let pool = builder
        .build(move |job: Job, _ctx| {
            seen.lock().push(job);
            match job {
                Job::Block => {
                    let _ = gate.lock().recv();
                    0
                }
                Job::Echo(x) => x,
            }
        })
        .unwrap();
    Gated {
        pool,
        release,
        runs,
    }
}

/// Occupy the only worker with a `Block` job; its ticket.
fn occupy(g: &Gated) -> Ticket<u32> {
    let blocker = g.pool.submit(Job::Block);
    while g.pool.stats().busy == 0 {
        std::thread::yield_now();
    }
    blocker
}

struct Nobody;

impl Wake for Nobody {
    fn wake(self: Arc<Self>) {}
}

/// Poll `fut` once with a waker that does nothing (`Waker::noop` needs Rust 1.85; the crate's MSRV
/// is 1.80).
fn poll_once<F: Future + Unpin>(fut: &mut F) -> Poll<F::Output> {
    let waker = Waker::from(Arc::new(Nobody));
    Pin::new(fut).poll(&mut Context::from_waker(&waker))
}

#[test]
fn awaited_tickets_get_their_answers() {
    let pool = Pool::builder().workers(2).build(|x: u64, _| x * 2).unwrap();
    assert_eq!(block_on(pool.submit(21)).unwrap(), 42);
    let total = block_on(async {
        let mut total = 0;
        for x in 0..50 {
            total += pool.submit(x).await.unwrap();
        }
        total
    });
    assert_eq!(total, 2 * (0..50).sum::<u64>());
    assert_eq!(pool.stats().completed, 51);
}

#[test]
fn many_futures_wait_at_once_on_one_thread() {
    let pool = Pool::builder()
        .workers(2)
        .queue_capacity(1024)
        .build(|x: u32, _| {
            // Some work, so that most futures find their answer not there yet.
            std::thread::sleep(Duration::from_micros(200));
            x + 1
        })
        .unwrap();
    let n = 300;
    let tickets: Vec<Ticket<u32>> = (0..n).map(|x| pool.submit(x)).collect();
    let (answers, polls) = join_all(tickets);
    let answers: Vec<u32> = answers.into_iter().map(Result::unwrap).collect();
    assert_eq!(answers, (1..=n).collect::<Vec<_>>());
    assert!(
        polls <= 3 * n as usize,
        "{polls} polls for {n} futures: a future is polled when woken, not in a loop"
    );
}

#[test]
fn a_future_is_woken_by_its_answer_not_polled_for() {
    let pool = Pool::builder()
        .workers(1)
        .build(|ms: u64, _| {
            std::thread::sleep(Duration::from_millis(ms)); // the handler's work
            ms
        })
        .unwrap();
    let (answer, seen) = block_on_counted(pool.submit(300));
    assert_eq!(answer.unwrap(), 300);
    assert!(seen.wakes >= 1, "{seen:?}");
    // One poll before the answer, one after its wake; a spurious unpark may add one.
    assert!(seen.polls <= 4, "{seen:?}: the future was polled in a loop");
}

#[test]
fn a_dropped_future_whose_job_had_not_started_is_never_run() {
    let g = gated(Duration::from_secs(30));
    let blocker = occupy(&g);
    let mut dropped = g.pool.submit(Job::Echo(1));
    assert!(
        poll_once(&mut dropped).is_pending(),
        "queued behind the blocker"
    );
    drop(dropped);
    let never_polled = g.pool.submit(Job::Echo(2));
    drop(never_polled);
    let kept = g.pool.submit(Job::Echo(3));
    assert_eq!(g.pool.stats().abandoned, 2);

    g.release.send(()).unwrap();
    assert_eq!(block_on(blocker).unwrap(), 0);
    assert_eq!(
        block_on(kept).unwrap(),
        3,
        "the job queued after the dropped ones still gets its answer"
    );
    g.pool.shutdown(Duration::from_secs(10));
    assert_eq!(
        *g.runs.lock(),
        [Job::Block, Job::Echo(3)],
        "the dropped jobs never ran"
    );
    let stats = g.pool.stats();
    assert_eq!(stats.abandoned, 2, "{stats:?}");
    assert_eq!(stats.completed, 2, "{stats:?}");
    assert_eq!(
        stats.failed, 0,
        "a given-back job is not a failure: {stats:?}"
    );
}

#[test]
fn a_dropped_future_whose_job_started_lets_it_finish() {
    let g = gated(Duration::from_secs(30));
    let mut blocker = occupy(&g);
    assert!(poll_once(&mut blocker).is_pending());
    drop(blocker); // the job is running: it is not given back
    let next = g.pool.submit(Job::Echo(7));
    g.release.send(()).unwrap();
    assert_eq!(block_on(next).unwrap(), 7);
    let stats = g.pool.stats();
    assert_eq!(stats.abandoned, 0, "{stats:?}");
    assert_eq!(stats.completed, 2, "{stats:?}");
    assert_eq!(*g.runs.lock(), [Job::Block, Job::Echo(7)]);
}

#[test]
fn a_detached_ticket_still_runs() {
    let g = gated(Duration::from_secs(30));
    let blocker = occupy(&g);
    g.pool.submit(Job::Echo(5)).detach();
    g.release.send(()).unwrap();
    assert_eq!(block_on(blocker).unwrap(), 0);
    g.pool.shutdown(Duration::from_secs(10));
    assert_eq!(*g.runs.lock(), [Job::Block, Job::Echo(5)]);
    assert_eq!(g.pool.stats().abandoned, 0);
}

#[test]
fn an_awaited_job_past_its_deadline_is_answered_deadline_exceeded() {
    let deadline = Duration::from_millis(300);
    // No replacement for the stuck worker: on a loaded machine the queued job may be submitted
    // well after the blocker, and a replacement would then run it in time (correctly).
    let g = gated_with(deadline, Some(0));
    let start = Instant::now();
    let running = occupy(&g);
    let queued = g.pool.submit(Job::Echo(1));
    let (answers, _) = join_all(vec![running, queued]);
    let waited = start.elapsed();
    assert!(
        matches!(
            answers[0],
            Err(Error::DeadlineExceeded {
                stage: Stage::Running,
                ..
            })
        ),
        "{:?}",
        answers[0]
    );
    assert!(
        matches!(
            answers[1],
            Err(Error::DeadlineExceeded {
                stage: Stage::Queued,
                ..
            })
        ),
        "{:?}",
        answers[1]
    );
    assert!(
        waited >= deadline,
        "answered before the deadline: {waited:?}"
    );
    assert!(
        waited < Duration::from_secs(5),
        "the watchdog answers at the deadline, not later: {waited:?}"
    );
    g.release.send(()).unwrap(); // let the retired thread return
    g.pool.shutdown(Duration::from_secs(10));
    assert_eq!(
        *g.runs.lock(),
        [Job::Block],
        "the job that expired in the queue never ran"
    );
    assert_eq!(g.pool.stats().timed_out, 2);
}

#[test]
fn a_refused_job_is_ready_at_once() {
    let (release, gate) = mpsc::channel::<()>();
    let gate = Mutex::new(gate);
    let pool = Pool::builder()
        .workers(1)
        .queue_capacity(1)
        .build(move |block: bool, _| {
            if block {
                let _ = gate.lock().recv();
            }
            block
        })
        .unwrap();
    let blocker = pool.submit(true);
    while pool.stats().busy == 0 {
        std::thread::yield_now();
    }
    let queued = pool.submit(false);
    let (answer, seen) = block_on_counted(pool.submit(false));
    assert!(
        matches!(answer, Err(Error::Overloaded { .. })),
        "{answer:?}"
    );
    assert_eq!(seen.polls, 1, "ready on the first poll");
    release.send(()).unwrap();
    assert!(block_on(blocker).unwrap());
    assert!(!block_on(queued).unwrap());
}

#[test]
fn a_ticket_can_be_spawned_on_a_multi_thread_executor() {
    // tokio::spawn and friends need a `Send + 'static` future; `Unpin` lets it be polled by `&mut`.
    fn spawnable<F: Future + Send + Unpin + 'static>(fut: F) -> F {
        fut
    }
    let pool = Pool::builder().workers(1).build(|x: u8, _| x).unwrap();
    let fut = spawnable(pool.submit(9));
    let answer = std::thread::spawn(move || block_on(fut)).join().unwrap();
    assert_eq!(answer.unwrap(), 9);
}
