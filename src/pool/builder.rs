//! [`Builder`]: every pool setting, checked once in `build()`.

use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use super::guard::Reentry;
use super::{Context, Pool};
use crate::error::BuildError;

pub(crate) type Hook = Arc<dyn Fn(usize) + Send + Sync>;

/// The largest worker count `build()` accepts.
pub const MAX_WORKERS: usize = 4096;
/// The largest queue capacity `build()` accepts.
pub const MAX_QUEUE: usize = 1 << 20;
/// The longest default deadline `build()` accepts (one day).
pub const MAX_DEADLINE: Duration = Duration::from_secs(24 * 3600);

/// The checked settings of a pool.
#[derive(Clone)]
pub(crate) struct Config {
    pub(crate) name: String,
    pub(crate) workers: usize,
    pub(crate) queue_capacity: usize,
    pub(crate) deadline: Duration,
    pub(crate) max_requests: u64,
    pub(crate) max_requests_jitter: u64,
    pub(crate) max_retired: usize,
    pub(crate) reentry: Reentry,
    pub(crate) on_worker_start: Option<Hook>,
    pub(crate) on_worker_exit: Option<Hook>,
}

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
pub struct Builder<Req, Resp> {
    name: String,
    workers: Option<usize>,
    queue_capacity: usize,
    deadline: Duration,
    max_requests: u64,
    max_requests_jitter: u64,
    max_retired: Option<usize>,
    reentry: Reentry,
    on_worker_start: Option<Hook>,
    on_worker_exit: Option<Hook>,
    _types: PhantomData<fn(Req) -> Resp>,
}

impl<Req, Resp> Clone for Builder<Req, Resp> {
    fn clone(&self) -> Self {
        Builder {
            name: self.name.clone(),
            workers: self.workers,
            queue_capacity: self.queue_capacity,
            deadline: self.deadline,
            max_requests: self.max_requests,
            max_requests_jitter: self.max_requests_jitter,
            max_retired: self.max_retired,
            reentry: self.reentry,
            on_worker_start: self.on_worker_start.clone(),
            on_worker_exit: self.on_worker_exit.clone(),
            _types: PhantomData,
        }
    }
}

impl<Req, Resp> Default for Builder<Req, Resp> {
    fn default() -> Self {
        Builder {
            name: "pool".to_owned(),
            workers: None,
            queue_capacity: 1024,
            deadline: Duration::from_secs(30),
            max_requests: 0,
            max_requests_jitter: 0,
            max_retired: None,
            reentry: Reentry::Inline,
            on_worker_start: None,
            on_worker_exit: None,
            _types: PhantomData,
        }
    }
}

impl<Req: Send + 'static, Resp: Send + 'static> Builder<Req, Resp> {
    /// A builder with the defaults in the table above.
    pub fn new() -> Self {
        Self::default()
    }

    /// The pool's name: in thread names (`NAME-worker-N`), log lines, errors and stats.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
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
        self.queue_capacity = n;
        self
    }

    /// The default deadline of a job, from its submission; `call_with` and `submit_then` override it.
    pub fn deadline(mut self, d: Duration) -> Self {
        self.deadline = d;
        self
    }

    /// Replace a worker after it has run this many jobs (plus its jitter); 0 never does. The
    /// replacement starts before the old worker leaves, so no job waits for it.
    pub fn max_requests(mut self, n: u64) -> Self {
        self.max_requests = n;
        self
    }

    /// Add a random 0..=`n` to each worker's `max_requests`, so workers do not all recycle at once.
    pub fn max_requests_jitter(mut self, n: u64) -> Self {
        self.max_requests_jitter = n;
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
        self.reentry = policy;
        self
    }

    /// Run on each worker thread when it starts, with its index: the thread-mode `post_fork`, for
    /// per-worker resources. `build()` returns once every worker has run it and waits for jobs. A
    /// hook that panics is logged at error and its worker serves on.
    pub fn on_worker_start(mut self, hook: impl Fn(usize) + Send + Sync + 'static) -> Self {
        self.on_worker_start = Some(Arc::new(hook));
        self
    }

    /// Run on each worker thread as it exits (recycled, retired, or shut down), with its index.
    pub fn on_worker_exit(mut self, hook: impl Fn(usize) + Send + Sync + 'static) -> Self {
        self.on_worker_exit = Some(Arc::new(hook));
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

    pub(crate) fn check(self) -> Result<Config, BuildError> {
        if self.name.is_empty() || self.name.chars().any(char::is_whitespace) {
            return Err(BuildError::new(
                "name",
                format!("{:?}", self.name),
                "a non-empty name without whitespace",
            ));
        }
        let workers = match self.workers {
            Some(n) => n,
            None => crate::util::web_concurrency_env("workers", MAX_WORKERS)?
                .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get())),
        };
        if !(1..=MAX_WORKERS).contains(&workers) {
            return Err(BuildError::new(
                "workers",
                workers,
                format!("allowed 1..={MAX_WORKERS}"),
            ));
        }
        if !(1..=MAX_QUEUE).contains(&self.queue_capacity) {
            return Err(BuildError::new(
                "queue_capacity",
                self.queue_capacity,
                format!("allowed 1..={MAX_QUEUE}"),
            ));
        }
        if self.deadline < Duration::from_millis(1) || self.deadline > MAX_DEADLINE {
            return Err(BuildError::new(
                "deadline",
                format!("{:?}", self.deadline),
                "allowed 1ms..=24h",
            ));
        }
        if self.max_requests_jitter > 0 && self.max_requests == 0 {
            return Err(BuildError::new(
                "max_requests_jitter",
                self.max_requests_jitter,
                "jitter needs max_requests > 0 (set max_requests, or leave the jitter at 0)",
            ));
        }
        let max_retired = self.max_retired.unwrap_or(workers);
        if max_retired > MAX_WORKERS {
            return Err(BuildError::new(
                "max_retired",
                max_retired,
                format!("allowed 0..={MAX_WORKERS}"),
            ));
        }
        Ok(Config {
            name: self.name,
            workers,
            queue_capacity: self.queue_capacity,
            deadline: self.deadline,
            max_requests: self.max_requests,
            max_requests_jitter: self.max_requests_jitter,
            max_retired,
            reentry: self.reentry,
            on_worker_start: self.on_worker_start,
            on_worker_exit: self.on_worker_exit,
        })
    }
}
