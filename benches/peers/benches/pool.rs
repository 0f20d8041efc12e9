//! Round trip of one call on a warm pool, side by side with the peers and the floor, in one run:
//!
//! - `round_trip/*`: one request, one answer, 2 workers. `crossbeam_ping_pong` is the floor: two
//!   threads bouncing a value over two crossbeam channels (no pool, no allocation).
//! - `throughput_8x4/*`: 8 caller threads × 1000 calls each on 4 workers.
//! - `reentrant/*`: a handler calling its own pool (run inline by the guard) against a plain
//!   function call, and against the same call from outside (through the queue).
//! - `cross_pool/*`: a worker of pool A calling an idle 1-worker pool B (queued, run on B's worker:
//!   the bound holds), against the same call from a plain thread, run alternately in one process.
//!
//! Run: `cargo bench --bench pool`.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use prefork_pool::Pool;

const WORKERS: usize = 2;

fn work(x: u64) -> u64 {
    x.wrapping_mul(31).wrapping_add(7)
}

fn round_trip(c: &mut Criterion) {
    let mut g = c.benchmark_group("round_trip");

    // The floor: a crossbeam-channel ping-pong between two threads.
    {
        let (to_tx, to_rx) = crossbeam_channel::bounded::<u64>(1);
        let (back_tx, back_rx) = crossbeam_channel::bounded::<u64>(1);
        let echo = std::thread::spawn(move || {
            while let Ok(x) = to_rx.recv() {
                back_tx.send(work(x)).unwrap();
            }
        });
        g.bench_function("crossbeam_ping_pong", |b| {
            let mut x = 0u64;
            b.iter(|| {
                to_tx.send(x).unwrap();
                x = back_rx.recv().unwrap();
            })
        });
        drop(to_tx);
        echo.join().unwrap();
    }

    {
        let pool = Pool::builder()
            .workers(WORKERS)
            .build(|x: u64, _| work(x))
            .unwrap();
        g.bench_function("prefork_pool_call", |b| {
            let mut x = 0u64;
            b.iter(|| x = pool.call(black_box(x)).unwrap())
        });
        pool.shutdown(Duration::from_secs(5));
    }

    {
        let pool = threadpool::ThreadPool::new(WORKERS);
        g.bench_function("threadpool_execute_plus_channel", |b| {
            let mut x = 0u64;
            b.iter(|| {
                let (tx, rx) = crossbeam_channel::bounded(1);
                let v = black_box(x);
                pool.execute(move || tx.send(work(v)).unwrap());
                x = rx.recv().unwrap();
            })
        });
        pool.join();
    }

    {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(WORKERS)
            .build()
            .unwrap();
        g.bench_function("rayon_spawn_plus_channel", |b| {
            let mut x = 0u64;
            b.iter(|| {
                let (tx, rx) = crossbeam_channel::bounded(1);
                let v = black_box(x);
                pool.spawn(move || tx.send(work(v)).unwrap());
                x = rx.recv().unwrap();
            })
        });
    }
    g.finish();
}

/// 8 callers × `CALLS` calls on 4 workers; criterion's time is for all 8000 round trips.
fn throughput(c: &mut Criterion) {
    const CALLERS: u64 = 8;
    const CALLS: u64 = 1000;
    let mut g = c.benchmark_group("throughput_8x4");
    g.throughput(criterion::Throughput::Elements(CALLERS * CALLS));

    fn run(callers: u64, one: impl Fn(u64) -> u64 + Sync) -> Duration {
        let start = Instant::now();
        std::thread::scope(|s| {
            for c in 0..callers {
                let one = &one;
                s.spawn(move || {
                    for i in 0..CALLS {
                        black_box(one(c * CALLS + i));
                    }
                });
            }
        });
        start.elapsed()
    }

    {
        let pool = Pool::builder()
            .workers(4)
            .queue_capacity(256)
            .build(|x: u64, _| work(x))
            .unwrap();
        g.bench_function("prefork_pool_call", |b| {
            b.iter_custom(|iters| {
                (0..iters)
                    .map(|_| run(CALLERS, |x| pool.call(x).unwrap()))
                    .sum()
            })
        });
        pool.shutdown(Duration::from_secs(5));
    }
    {
        let pool = parking_lot::Mutex::new(threadpool::ThreadPool::new(4));
        g.bench_function("threadpool_execute_plus_channel", |b| {
            b.iter_custom(|iters| {
                (0..iters)
                    .map(|_| {
                        run(CALLERS, |x| {
                            let (tx, rx) = crossbeam_channel::bounded(1);
                            pool.lock().execute(move || tx.send(work(x)).unwrap());
                            rx.recv().unwrap()
                        })
                    })
                    .sum()
            })
        });
    }
    {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(4)
            .build()
            .unwrap();
        g.bench_function("rayon_spawn_plus_channel", |b| {
            b.iter_custom(|iters| {
                (0..iters)
                    .map(|_| {
                        run(CALLERS, |x| {
                            let (tx, rx) = crossbeam_channel::bounded(1);
                            pool.spawn(move || tx.send(work(x)).unwrap());
                            rx.recv().unwrap()
                        })
                    })
                    .sum()
            })
        });
    }
    g.finish();
}

/// A request for the re-entrancy bench: `Loop(n)` makes `n` nested calls from inside a handler
/// and reports how long they took; `Leaf(x)` is the nested call itself.
#[derive(Clone, Copy)]
enum Req {
    Loop(u64),
    Leaf(u64),
}

fn reentrant(c: &mut Criterion) {
    let mut g = c.benchmark_group("reentrant");
    g.bench_function("plain_function_call", |b| {
        let mut x = 0u64;
        b.iter(|| x = black_box(work as fn(u64) -> u64)(black_box(x)))
    });

    let pool: Pool<Req, (u64, Duration)> = Pool::builder()
        .workers(1)
        .build(|req: Req, ctx| match req {
            Req::Leaf(x) => (work(x), Duration::ZERO),
            Req::Loop(n) => {
                let me = ctx.pool::<Req, (u64, Duration)>().unwrap();
                let mut x = 0;
                let start = Instant::now();
                for _ in 0..n {
                    x = me.call(Req::Leaf(black_box(x))).unwrap().0;
                }
                (x, start.elapsed())
            }
        })
        .unwrap();
    g.bench_function("inline_reentrant_call", |b| {
        b.iter_custom(|iters| pool.call(Req::Loop(iters)).unwrap().1)
    });
    g.bench_function("queued_call_from_outside", |b| {
        let mut x = 0u64;
        b.iter(|| x = pool.call(Req::Leaf(black_box(x))).unwrap().0)
    });
    g.finish();
    pool.shutdown(Duration::from_secs(5));
}

fn cross_pool(c: &mut Criterion) {
    let mut g = c.benchmark_group("cross_pool");
    let b_pool: Pool<u64, u64> = Pool::builder()
        .name("b")
        .workers(1)
        .build(|x: u64, _| work(x))
        .unwrap();
    let target = b_pool.clone();
    // A's handler makes `n` calls into B and reports how long they took.
    let a_pool: Pool<u64, (u64, Duration)> = Pool::builder()
        .name("a")
        .workers(1)
        .build(move |n: u64, _| {
            let mut x = 0;
            let start = Instant::now();
            for _ in 0..n {
                x = target.call(black_box(x)).unwrap();
            }
            (x, start.elapsed())
        })
        .unwrap();
    g.bench_function("from_a_worker_of_another_pool", |b| {
        b.iter_custom(|iters| a_pool.call(iters).unwrap().1)
    });
    g.bench_function("from_a_plain_thread", |b| {
        let mut x = 0u64;
        b.iter(|| x = b_pool.call(black_box(x)).unwrap())
    });
    g.finish();
    a_pool.shutdown(Duration::from_secs(5));
    b_pool.shutdown(Duration::from_secs(5));
}

fn config() -> Criterion {
    Criterion::default()
        .sample_size(30)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3))
}

criterion_group! {
    name = benches;
    config = config();
    targets = round_trip, throughput, reentrant, cross_pool
}
criterion_main!(benches);
