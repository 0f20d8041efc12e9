//! Runs `examples/pool.rs` and checks what it shows.

use std::time::Duration;

use prefork_pool::{Error, Stage};

#[test]
fn the_pool_example_shows_deadline_panic_reentry_and_stats() {
    // The example's panic is expected: keep it quiet, as the example's `main` does. Printing it
    // (with a backtrace under RUST_BACKTRACE=1, slow in a debug build on a loaded machine) would
    // count against the job's deadline. Panics on other threads still reach the previous hook.
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if !std::thread::current()
            .name()
            .is_some_and(|n| n.starts_with("example-worker-"))
        {
            previous(info);
        }
    }));
    let s = crate::example_program::run();
    assert_eq!(s.added, 42);
    assert!(
        matches!(
            s.deadline_error,
            Error::DeadlineExceeded {
                stage: Stage::Running,
                ..
            }
        ),
        "{:?}",
        s.deadline_error
    );
    assert!(
        s.waited_for_stuck < Duration::from_secs(2),
        "{:?}",
        s.waited_for_stuck
    );
    assert!(s.next_call_after_stuck < Duration::from_secs(1));
    match &s.panic_error {
        Error::Panicked { message, .. } => assert_eq!(message, "bug in the report handler"),
        other => panic!("{other:?}"),
    }
    assert_eq!(s.sum_to_100, 5050);
    assert_eq!(s.stats.timed_out, 1);
    assert_eq!(s.stats.retired, 1);
    assert_eq!(s.stats.panicked, 1);
    assert_eq!(s.stats.reentrant_inline, 100);
}
