//! Every bad setting is refused by `build()` with the field and the allowed range.

use std::time::Duration;

use prefork_pool::{BuildError, Pool};

fn refused(b: prefork_pool::PoolBuilder<u8, u8>) -> BuildError {
    b.build(|x, _| x).unwrap_err()
}

#[test]
fn bad_values_name_the_field_and_the_range() {
    let e = refused(Pool::builder().workers(0));
    assert_eq!(e.field, "workers");
    assert!(e.to_string().contains("1..=4096"), "{e}");

    let e = refused(Pool::builder().workers(5000));
    assert_eq!(e.field, "workers");

    let e = refused(Pool::builder().workers(1).queue_capacity(0));
    assert_eq!(e.field, "queue_capacity");
    assert!(e.to_string().contains("1..="), "{e}");

    let e = refused(Pool::builder().workers(1).deadline(Duration::ZERO));
    assert_eq!(e.field, "deadline");
    assert!(e.to_string().contains("1ms"), "{e}");

    let e = refused(Pool::builder().workers(1).max_requests_jitter(10));
    assert_eq!(e.field, "max_requests_jitter");
    assert!(e.to_string().contains("max_requests"), "{e}");

    let e = refused(Pool::builder().workers(1).name("my pool"));
    assert_eq!(e.field, "name");

    let e = refused(Pool::builder().workers(1).max_retired(100_000));
    assert_eq!(e.field, "max_retired");
}

/// Runs [`web_concurrency_in_a_process_of_its_own`] in a child process of this test binary: the
/// environment is the whole process's, and other tests here build pools with the default worker
/// count, which reads `WEB_CONCURRENCY`.
#[test]
fn web_concurrency_sets_the_default_worker_count_or_is_refused() {
    let name = "build::web_concurrency_in_a_process_of_its_own";
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([name, "--exact", "--ignored", "--test-threads=1"])
        .env_remove("WEB_CONCURRENCY")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("1 passed"),
        "the child ran no test: {stdout}\n{stderr}"
    );
}

#[test]
#[ignore = "touches the environment: run in a child process by \
            web_concurrency_sets_the_default_worker_count_or_is_refused"]
fn web_concurrency_in_a_process_of_its_own() {
    // The only test in its process: nothing else reads the environment meanwhile.
    std::env::set_var("WEB_CONCURRENCY", "abc");
    let e = Pool::builder().build(|x: u8, _| x).unwrap_err();
    assert_eq!(e.field, "WEB_CONCURRENCY");
    assert!(e.to_string().contains("\"abc\""), "{e}");

    std::env::set_var("WEB_CONCURRENCY", "3");
    let pool = Pool::builder().build(|x: u8, _| x).unwrap();
    assert_eq!(pool.stats().workers, 3);
    pool.shutdown_now();

    // Named by the variable, with the range: the user never wrote `workers`.
    std::env::set_var("WEB_CONCURRENCY", "0");
    let e = Pool::builder().build(|x: u8, _| x).unwrap_err();
    assert_eq!(e.field, "WEB_CONCURRENCY");
    assert!(e.to_string().contains("1..=4096"), "{e}");

    // An explicit count wins over the environment.
    let pool = Pool::builder().workers(2).build(|x: u8, _| x).unwrap();
    assert_eq!(pool.stats().workers, 2);
    std::env::remove_var("WEB_CONCURRENCY");
}
