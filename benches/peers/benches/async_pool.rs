//! The async Ticket's round trip against `tokio::task::spawn_blocking`, in one run: one task on a
//! tokio runtime awaits one blocking call at a time.
//!
//! - `async_round_trip/tokio_spawn_blocking`: `spawn_blocking(f).await` (tokio's blocking pool).
//! - `async_round_trip/prefork_pool_submit_await`: `pool.submit(x).await` on a 2-worker Pool (the
//!   answer wakes the task; no runtime thread blocks).
//! - `async_round_trip/prefork_pool_call`: the blocking `pool.call(x)` from a plain thread, for
//!   reference.
//!
//! Each on a current-thread and on a 2-worker multi-thread runtime. Run:
//! `cargo bench -p prefork-pool-benches --bench async_pool`.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use prefork_pool::Pool;

fn work(x: u64) -> u64 {
    x.wrapping_mul(31).wrapping_add(7)
}

fn runtimes() -> [(&'static str, tokio::runtime::Runtime); 2] {
    [
        (
            "current_thread",
            tokio::runtime::Builder::new_current_thread()
                .build()
                .unwrap(),
        ),
        (
            "multi_thread_2",
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .build()
                .unwrap(),
        ),
    ]
}

fn async_round_trip(c: &mut Criterion) {
    let mut g = c.benchmark_group("async_round_trip");
    let pool = Pool::builder()
        .workers(2)
        .build(|x: u64, _| work(x))
        .unwrap();
    for (name, rt) in runtimes() {
        g.bench_function(format!("tokio_spawn_blocking/{name}"), |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let start = Instant::now();
                    let mut x = 0u64;
                    for _ in 0..iters {
                        let v = black_box(x);
                        x = tokio::task::spawn_blocking(move || work(v)).await.unwrap();
                    }
                    black_box(x);
                    start.elapsed()
                })
            })
        });
        g.bench_function(format!("prefork_pool_submit_await/{name}"), |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let start = Instant::now();
                    let mut x = 0u64;
                    for _ in 0..iters {
                        x = pool.submit(black_box(x)).await.unwrap();
                    }
                    black_box(x);
                    start.elapsed()
                })
            })
        });
    }
    g.bench_function("prefork_pool_call", |b| {
        let mut x = 0u64;
        b.iter(|| x = pool.call(black_box(x)).unwrap())
    });
    g.finish();
    pool.shutdown(Duration::from_secs(5));
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
    targets = async_round_trip
}
criterion_main!(benches);
