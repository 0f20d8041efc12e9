//! The crate's errors: one [`Error`] for every way a job can end without its handler's answer, one
//! [`BuildError`] for every configuration value `build()` refuses, and [`TrySubmitError`], which gives
//! the request back.
//!
//! Every message names the cause and the fix, so that what reaches a log or an HTTP body is enough to
//! act on.

use std::fmt;
use std::ops::RangeInclusive;
use std::time::Duration;

/// Where a job was when its deadline passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Still waiting in the queue: the handler never ran.
    Queued,
    /// A worker was running the handler.
    Running,
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Stage::Queued => "while queued (the handler never ran)",
            Stage::Running => "while its handler was running",
        })
    }
}

/// Why a job ended without its handler's answer.
///
/// Each variant maps to one HTTP status in the `http` front end: [`Error::http_status`].
///
/// ```
/// use prefork_pool::{Error, Pool};
/// use std::time::Duration;
///
/// let pool = Pool::builder().workers(1).build(|ms: u64, _ctx| {
///     std::thread::sleep(Duration::from_millis(ms));
///     ms
/// }).unwrap();
/// match pool.call_with(2_000, Duration::from_millis(50)) {
///     Err(Error::DeadlineExceeded { .. }) => {}
///     other => panic!("expected a deadline error, got {other:?}"),
/// }
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The queue was full: the job was refused at once rather than left to wait.
    #[error(
        "pool `{pool}` is overloaded: all workers are busy and the queue ({capacity} jobs) is full; \
         retry later, or raise `workers` or `queue_capacity`"
    )]
    Overloaded {
        /// The pool's name.
        pool: String,
        /// The queue capacity that was reached.
        capacity: usize,
    },
    /// The job's deadline passed before it finished. A job that was still queued was never started.
    #[error(
        "pool `{pool}`: job {job} missed its deadline of {deadline:?} {stage}; the caller was answered \
         at the deadline. Make the handler faster, raise the deadline (`deadline` / `call_with`), or \
         check `Context::is_cancelled` in long handlers"
    )]
    DeadlineExceeded {
        /// The pool's name.
        pool: String,
        /// The job id (as in [`crate::Context::job_id`]).
        job: u64,
        /// The deadline the job had, measured from its submission.
        deadline: Duration,
        /// Whether the job was queued or running when the deadline passed.
        stage: Stage,
    },
    /// The handler panicked. The worker caught it and lives on.
    #[error("pool `{pool}`: the handler panicked on job {job}: {message}")]
    Panicked {
        /// The pool's name.
        pool: String,
        /// The job id.
        job: u64,
        /// The panic message (`"<non-string panic payload>"` when it was not a string).
        message: String,
    },
    /// The pool is shutting down, or had to stop before this job could finish.
    #[error(
        "pool `{pool}` is shutting down: the job was not run or not finished; send it to a pool that \
         is still serving"
    )]
    ShuttingDown {
        /// The pool's name.
        pool: String,
    },
    /// A handler called back into its own pool (directly, or around a cycle of pools) and the
    /// pool's policy is [`Reentry::Reject`](crate::Reentry::Reject).
    #[error(
        "pool `{pool}`: worker {worker} called back into its own pool (re-entrant call refused by \
         Reentry::Reject); call the code directly instead of through the pool, or use Reentry::Inline"
    )]
    Reentrant {
        /// The pool's name; for a cycle of pools, the cycle from the refusing pool back to it
        /// (`a -> b -> a`: a's handler called b, whose handler called a).
        pool: String,
        /// The index of the worker whose handler made the call (in its own pool: for a cycle, a
        /// worker of the pool before the last arrow).
        worker: usize,
    },
    /// A chain of nested calls went deeper than the configured maximum: a handler that calls its own
    /// service without end.
    #[error(
        "call chain is {depth} deep, deeper than the maximum of {max}: a handler keeps calling its own \
         service; find the route that calls itself, or raise `max_depth`"
    )]
    LoopDetected {
        /// How deep the chain was.
        depth: u32,
        /// The configured maximum.
        max: u32,
    },
}

impl Error {
    /// The HTTP status the `http` front end answers for this error: 503 overloaded, 504 deadline,
    /// 500 panic, 503 shutting down, 500 re-entrant, 508 loop detected.
    ///
    /// ```
    /// use prefork_pool::Error;
    /// let e = Error::Overloaded { pool: "web".into(), capacity: 8 };
    /// assert_eq!(e.http_status(), 503);
    /// ```
    pub fn http_status(&self) -> u16 {
        match self {
            Error::Overloaded { .. } | Error::ShuttingDown { .. } => 503,
            Error::DeadlineExceeded { .. } => 504,
            Error::Panicked { .. } | Error::Reentrant { .. } => 500,
            Error::LoopDetected { .. } => 508,
        }
    }
}

/// `try_submit` could not queue the request; the request is given back.
///
/// ```
/// use prefork_pool::{Pool, TrySubmitError};
/// let pool = Pool::builder().workers(1).queue_capacity(1).build(|x: u32, _| x).unwrap();
/// pool.shutdown_now();
/// match pool.try_submit(7) {
///     Err(TrySubmitError::ShuttingDown(req)) => assert_eq!(req, 7),
///     other => panic!("{:?}", other.map(|_| ())),
/// }
/// ```
#[derive(PartialEq, Eq, thiserror::Error)]
pub enum TrySubmitError<Req> {
    /// The queue is full; here is the request back.
    #[error("the pool's queue is full; retry later, or raise `workers` or `queue_capacity`")]
    Full(Req),
    /// The pool is shutting down; here is the request back.
    #[error("the pool is shutting down; send the request to a pool that is still serving")]
    ShuttingDown(Req),
}

impl<Req> TrySubmitError<Req> {
    /// The request that could not be queued.
    pub fn into_inner(self) -> Req {
        match self {
            TrySubmitError::Full(r) | TrySubmitError::ShuttingDown(r) => r,
        }
    }
}

impl<Req> fmt::Debug for TrySubmitError<Req> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TrySubmitError::Full(_) => f.write_str("Full(..)"),
            TrySubmitError::ShuttingDown(_) => f.write_str("ShuttingDown(..)"),
        }
    }
}

/// A configuration value that `build()` refused. The message names the field, the value and the
/// allowed range.
///
/// ```
/// use prefork_pool::Pool;
/// let err = Pool::builder().workers(0).build(|x: u32, _| x).unwrap_err();
/// assert_eq!(err.field, "workers");
/// assert!(err.to_string().contains("1..="));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid `{field}` = {value}: {allowed}")]
pub struct BuildError {
    /// The builder field (or environment variable) that was refused.
    pub field: &'static str,
    /// The value that was given, as text.
    pub value: String,
    /// What is allowed instead.
    pub allowed: String,
}

impl BuildError {
    /// A refusal of `field` = `value`, with what is `allowed`.
    pub fn new(field: &'static str, value: impl fmt::Display, allowed: impl Into<String>) -> Self {
        BuildError {
            field,
            value: value.to_string(),
            allowed: allowed.into(),
        }
    }

    /// `value` if `range` holds it, else a refusal of `field` that says `allowed A..=B` (the
    /// bounds as `Debug` prints them: numbers as numbers). The one range check every validator
    /// uses.
    pub(crate) fn check_range<T: PartialOrd + fmt::Debug>(
        field: &'static str,
        value: T,
        range: RangeInclusive<T>,
    ) -> Result<T, BuildError> {
        let shown = format!("{:?}..={:?}", range.start(), range.end());
        Self::check_range_shown(field, value, range, &shown)
    }

    /// [`check_range`](Self::check_range) for a duration, the range written as a user writes it
    /// (`100ms..=24h`, not `100ms..=86400s`).
    pub(crate) fn check_duration(
        field: &'static str,
        value: Duration,
        range: RangeInclusive<Duration>,
    ) -> Result<Duration, BuildError> {
        let shown = format!("{}..={}", short(*range.start()), short(*range.end()));
        Self::check_range_shown(field, value, range, &shown)
    }

    /// [`check_range`](Self::check_range), with the range written as `shown` (for bounds whose
    /// `Debug` text is not what a user writes, such as `24h` for a `Duration`).
    pub(crate) fn check_range_shown<T: PartialOrd + fmt::Debug>(
        field: &'static str,
        value: T,
        range: RangeInclusive<T>,
        shown: &str,
    ) -> Result<T, BuildError> {
        if range.contains(&value) {
            Ok(value)
        } else {
            Err(BuildError::new(
                field,
                format!("{value:?}"),
                format!("allowed {shown}"),
            ))
        }
    }
}

/// A duration in the largest unit that writes it whole: `24h`, `90s`, `100ms`, `1ns`.
fn short(d: Duration) -> String {
    let n = d.as_nanos();
    let units: [(u128, &str); 5] = [
        (3_600_000_000_000, "h"),
        (1_000_000_000, "s"),
        (1_000_000, "ms"),
        (1_000, "µs"),
        (1, "ns"),
    ];
    for (per, unit) in units {
        if n >= per && n % per == 0 {
            return format!("{}{unit}", n / per);
        }
    }
    "0s".to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_range_passes_values_inside_and_names_field_and_range_outside() {
        assert_eq!(BuildError::check_range("workers", 1usize, 1..=4096), Ok(1));
        assert_eq!(
            BuildError::check_range("workers", 4096usize, 1..=4096),
            Ok(4096)
        );
        let e = BuildError::check_range("workers", 0usize, 1..=4096).unwrap_err();
        assert_eq!(e.to_string(), "invalid `workers` = 0: allowed 1..=4096");
        let e = BuildError::check_range("workers", 4097usize, 1..=4096).unwrap_err();
        assert_eq!(e.field, "workers");
        let d = Duration::from_millis(1)..=Duration::from_secs(86400);
        let e = BuildError::check_range_shown("deadline", Duration::ZERO, d, "1ms..=24h");
        assert_eq!(
            e.unwrap_err().to_string(),
            "invalid `deadline` = 0ns: allowed 1ms..=24h"
        );
        let day = Duration::from_secs(86_400);
        let e = BuildError::check_duration(
            "graceful_timeout",
            day * 2,
            Duration::from_millis(100)..=day,
        );
        assert_eq!(
            e.unwrap_err().to_string(),
            "invalid `graceful_timeout` = 172800s: allowed 100ms..=24h"
        );
        let e = BuildError::check_duration(
            "head_timeout",
            Duration::ZERO,
            Duration::from_nanos(1)..=day,
        );
        assert_eq!(e.unwrap_err().allowed, "allowed 1ns..=24h");
        let ok = BuildError::check_duration("t", Duration::from_secs(90), Duration::ZERO..=day);
        assert_eq!(ok, Ok(Duration::from_secs(90)));
    }
}
