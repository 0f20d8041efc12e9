//! The pool's test suite, one binary: each module one part of the pool's contract.

mod async_ticket;
mod build;
mod concurrency;
mod cross_pool;
mod deadline;
mod example;
mod overload;
mod panic;
mod pool_helpers;
mod recycle;
mod reentry;
mod shutdown;
mod worker_state;

/// `examples/pool.rs`, run by the `example` tests.
#[path = "../../examples/pool.rs"]
#[allow(dead_code)]
mod example_program;
