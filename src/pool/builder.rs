//! [`PoolBuilder`]: every pool setting, checked once in `build()`.

use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use super::config::{PoolConfig, Reentry, MAX_DEADLINE, MAX_QUEUE, MAX_WORKERS};
use super::{Context, Pool};
use crate::error::BuildError;

/// Settings for a [`Pool`]; `build(handler)` checks them all and starts the workers.
///
/// | setting | default | allowed |
/// |---|---|---|
/// | `workers` | `WEB_CONCURRENCY` if set, else the available parallelism | 1..=4096 |
/// | `queue_capacity` | 1024 | 1..=1048576 |
/// | `deadline` | 30 s (gunicorn's `timeout`) | 1 ms..=24 h |
/// | `max_requests` | 0 (never recycle) | any; 0 is off |
/// | `max_requests_jitter` | 0 | needs `max_requests` > 0 |
/// | `max_retired` | the worker count | 0..=4096 |
/// | `reentry` | [`Reentry::Inline`] | |
/// | `name` | `"pool"` | non-empty, no whitespace |
///
/// ```
/// use prefork_pool::{Pool, Reentry};
/// use std::time::Duration;
///
/// let pool = Pool::builder()
///     .name("thumbnails")
///     .workers(2)
///     .queue_capacity(64)
///     .deadline(Duration::from_secs(5))
///     .max_requests(10_000)
///     .max_requests_jitter(500)
///     .reentry(Reentry::Inline)
///     .on_worker_start(|i| log::info!("worker {i} up"))
///     .build(|x: u32, _ctx| x * 2)
///     .unwrap();
/// assert_eq!(pool.call(21).unwrap(), 42);
/// ```
pub struct PoolBuilder<Req, Resp> {
    /// The settings as given; `workers` and `max_retired` are filled in by `check()`.
    config: PoolConfig,
    workers: Option<usize>,
    max_retired: Option<usize>,
    _types: PhantomData<fn(Req) -> Resp>,
}

impl<Req, Resp> Clone for PoolBuilder<Req, Resp> {
    fn clone(&self) -> Self {
        PoolBuilder {
            config: self.config.clone(),
            workers: self.workers,
            max_retired: self.max_retired,
            _types: PhantomData,
        }
    }
}

impl<Req, Resp> Default for PoolBuilder<Req, Resp> {
    fn default() -> Self {
        PoolBuilder {
            config: PoolConfig::default(),
            workers: None,
            max_retired: None,
            _types: PhantomData,
        }
    }
}

impl<Req: Send + 'static, Resp: Send + 'static> PoolBuilder<Req, Resp> {
    /// A builder with the defaults in the table above.
    pub fn new() -> Self {
        Self::default()
    }

    /// The pool's name: in thread names (`NAME-worker-N`), log lines, errors and stats.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.config.name = name.into();
        self
    }

    /// How many worker threads run the handler. Without it, `WEB_CONCURRENCY` (as gunicorn), else
    /// the machine's available parallelism.
    pub fn workers(mut self, n: usize) -> Self {
        self.workers = Some(n);
        self
    }

    /// How many jobs may wait for a worker. A job that finds the queue full is refused at once with
    /// [`Error::Overloaded`](crate::Error::Overloaded), never left to wait.
    pub fn queue_capacity(mut self, n: usize) -> Self {
        self.config.queue_capacity = n;
        self
    }

    /// The default deadline of a job, from its submission; `call_with` and `submit_then` override it.
    pub fn deadline(mut self, d: Duration) -> Self {
        self.config.deadline = d;
        self
    }

    /// Replace a worker after it has run this many jobs (plus its jitter); 0 never does. The
    /// replacement starts before the old worker leaves, so no job waits for it.
    pub fn max_requests(mut self, n: u64) -> Self {
        self.config.max_requests = n;
        self
    }

    /// Add a random 0..=`n` to each worker's `max_requests`, so workers do not all recycle at once.
    pub fn max_requests_jitter(mut self, n: u64) -> Self {
        self.config.max_requests_jitter = n;
        self
    }

    /// How many retired threads (workers the watchdog replaced while their handler was stuck) may
    /// still be running before the watchdog stops replacing stuck workers. At the cap a stuck worker
    /// keeps its place and capacity drops until its handler returns; an error is logged.
    pub fn max_retired(mut self, n: usize) -> Self {
        self.max_retired = Some(n);
        self
    }

    /// What a call from inside one of the pool's own handlers does; see [`Reentry`].
    pub fn reentry(mut self, policy: Reentry) -> Self {
        self.config.reentry = policy;
        self
    }

    /// Run on each worker thread when it starts, with its index: the thread-mode `post_fork`, for
    /// per-worker resources. `build()` returns once every worker has run it and waits for jobs. A
    /// hook that panics is logged at error and its worker serves on.
    pub fn on_worker_start(mut self, hook: impl Fn(usize) + Send + Sync + 'static) -> Self {
        self.config.on_worker_start = Some(Arc::new(hook));
        self
    }

    /// Run on each worker thread as it exits (recycled, retired, or shut down), with its index.
    pub fn on_worker_exit(mut self, hook: impl Fn(usize) + Send + Sync + 'static) -> Self {
        self.config.on_worker_exit = Some(Arc::new(hook));
        self
    }

    /// Check every setting and start the pool around `handler`. Returns once every worker has run
    /// its start hook and waits for a job.
    ///
    /// # Errors
    /// A [`BuildError`] naming the first field that is out of range, with the range.
    pub fn build<F>(self, handler: F) -> Result<Pool<Req, Resp>, BuildError>
    where
        F: Fn(Req, &Context) -> Resp + Send + Sync + 'static,
    {
        let config = self.check()?;
        Ok(Pool::start(config, Box::new(handler)))
    }

    pub(crate) fn check(self) -> Result<PoolConfig, BuildError> {
        let mut config = self.config;
        if config.name.is_empty() || config.name.chars().any(char::is_whitespace) {
            return Err(BuildError::new(
                "name",
                format!("{:?}", config.name),
                "a non-empty name without whitespace",
            ));
        }
        let workers = match self.workers {
            Some(n) => n,
            None => crate::util::web_concurrency_env("workers", MAX_WORKERS)?
                .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get())),
        };
        config.workers = BuildError::check_range("workers", workers, 1..=MAX_WORKERS)?;
        BuildError::check_range("queue_capacity", config.queue_capacity, 1..=MAX_QUEUE)?;
        BuildError::check_range_shown(
            "deadline",
            config.deadline,
            Duration::from_millis(1)..=MAX_DEADLINE,
            "1ms..=24h",
        )?;
        if config.max_requests_jitter > 0 && config.max_requests == 0 {
            return Err(BuildError::new(
                "max_requests_jitter",
                config.max_requests_jitter,
                "jitter needs max_requests > 0 (set max_requests, or leave the jitter at 0)",
            ));
        }
        let max_retired = self.max_retired.unwrap_or(workers);
        config.max_retired = BuildError::check_range("max_retired", max_retired, 0..=MAX_WORKERS)?;
        Ok(config)
    }
}
