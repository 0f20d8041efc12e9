//! A worker pool with deadlines, a watchdog and panic isolation: a template to copy.
//!
//! Run it with `cargo run --example pool`. It shows, in order:
//! 1. an ordinary call;
//! 2. a handler stuck past its deadline (waiting for a reply that comes late): the caller is
//!    answered at the deadline, and the stuck worker is retired and replaced, so the next call is
//!    served at once;
//! 3. a handler that panics: the caller gets the panic message, the worker lives on;
//! 4. a handler that calls its own pool (the call that deadlocks one gunicorn sync worker; see
//!    `Reentry`);
//! 5. the stats, as Prometheus text.

use std::sync::mpsc;
use std::time::{Duration, Instant};

use prefork_pool::{Error, Pool, Stats};

/// What the pool is asked to do. A real service would have one variant per route or job kind.
#[derive(Debug)]
pub enum Job {
    /// Add two numbers.
    Add(i64, i64),
    /// Wait for a reply that may come late (a stuck database call, say), then go on only if the
    /// caller still waits.
    Stuck(mpsc::Receiver<()>),
    /// Panic with this message (a bug in one handler).
    Crash(&'static str),
    /// Sum 1..=n by calling the pool itself for n-1.
    SumTo(i64),
}

/// What the example saw, for the test that runs it.
#[derive(Debug)]
pub struct Summary {
    pub added: i64,
    pub deadline_error: Error,
    pub waited_for_stuck: Duration,
    pub next_call_after_stuck: Duration,
    pub panic_error: Error,
    pub sum_to_100: i64,
    pub stats: Stats,
}

/// The handler: one function for every job, run on a worker thread. `ctx` says when the caller
/// stops waiting, whether it already has, and gives the handler its own pool.
fn handle(job: Job, ctx: &prefork_pool::Context) -> Result<i64, Error> {
    match job {
        Job::Add(a, b) => Ok(a + b),
        Job::Stuck(reply) => {
            // The stuck call: while it blocks, the watchdog answers the caller at the deadline,
            // cancels this Context, and replaces this worker.
            let _ = reply.recv_timeout(Duration::from_secs(10));
            // A long handler checks `is_cancelled` between steps: once the caller has been
            // answered there is no point going on, and returning early frees the retired thread.
            if ctx.is_cancelled() {
                return Ok(0);
            }
            Ok(1)
        }
        Job::Crash(msg) => panic!("{msg}"),
        Job::SumTo(n) if n <= 0 => Ok(0),
        Job::SumTo(n) => {
            // The nested call runs inline on this thread: no worker waits for itself.
            let me = ctx.pool::<Job, Result<i64, Error>>().expect("pool alive");
            Ok(n + me.call(Job::SumTo(n - 1))??)
        }
    }
}

pub fn run() -> Summary {
    let pool = Pool::builder()
        .name("example")
        .workers(2)
        .queue_capacity(128)
        // Every job is answered within 5 s (gunicorn's `timeout`, but per request).
        .deadline(Duration::from_secs(5))
        .build(handle)
        .expect("valid settings");

    // 1. An ordinary call. `call` returns the pool's Result; the handler's own Result is inside.
    let added = pool
        .call(Job::Add(40, 2))
        .expect("answered")
        .expect("added");

    // 2. A handler stuck on a reply that has not come, called with a deadline of its own: the
    //    caller is answered at 200 ms, and the stuck worker is replaced.
    let (reply, late_reply) = mpsc::channel();
    let start = Instant::now();
    let deadline_error = pool
        .call_with(Job::Stuck(late_reply), Duration::from_millis(200))
        .unwrap_err();
    let waited_for_stuck = start.elapsed();
    // The reply comes late: the retired thread returns from its handler and exits.
    drop(reply);
    let start = Instant::now();
    pool.call(Job::Add(1, 1))
        .expect("capacity is back")
        .unwrap();
    let next_call_after_stuck = start.elapsed();

    // 3. A panicking handler: the panic message comes back as an error.
    let panic_error = pool
        .call(Job::Crash("bug in the report handler"))
        .unwrap_err();

    // 4. A handler that calls its own pool, 100 deep, on a pool of 2 workers.
    let sum_to_100 = pool.call(Job::SumTo(100)).unwrap().unwrap();

    let stats = pool.stats();
    pool.shutdown(Duration::from_secs(1));
    Summary {
        added,
        deadline_error,
        waited_for_stuck,
        next_call_after_stuck,
        panic_error,
        sum_to_100,
        stats,
    }
}

#[allow(dead_code)]
fn main() {
    // The panic in step 3 is expected; keep its message to the error we print below.
    std::panic::set_hook(Box::new(|_| {}));
    let s = run();
    println!("1. 40 + 2 = {}", s.added);
    println!(
        "2. stuck handler: answered after {:?}: {}",
        s.waited_for_stuck, s.deadline_error
    );
    println!("   next call served in {:?}", s.next_call_after_stuck);
    println!("3. panicking handler: {}", s.panic_error);
    println!("4. sum 1..=100 through nested calls: {}", s.sum_to_100);
    println!("5. stats:\n{}", s.stats.to_prometheus("example"));
}
