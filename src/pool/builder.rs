//! [`PoolBuilder`]: every pool setting, checked once in `build()`.

use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use super::config::{PoolConfig, Reentry, MAX_DEADLINE, MAX_QUEUE, MAX_WORKERS};
use super::per_worker::{with_state, Init};
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
    /// How many times `workers`, `deadline`, `max_requests`, `max_requests_jitter` were set:
    /// `print_config` tells a value set in code from the default, even when they are equal.
    set: [u32; 4],
    _types: PhantomData<fn(Req) -> Resp>,
}

/// What [`PoolBuilder::sized`] reads: the settings `print_config` shows.
#[cfg_attr(not(feature = "http"), allow(dead_code))]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PoolSize {
    pub(crate) workers: Option<usize>,
    pub(crate) deadline: Duration,
    pub(crate) max_requests: u64,
    pub(crate) jitter: u64,
    /// How many times each of the four was set (see `PoolBuilder::set`).
    pub(crate) set: [u32; 4],
}

impl<Req, Resp> Clone for PoolBuilder<Req, Resp> {
    fn clone(&self) -> Self {
        PoolBuilder {
            config: self.config.clone(),
            workers: self.workers,
            max_retired: self.max_retired,
            set: self.set,
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
            set: [0; 4],
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
        self.set[0] += 1;
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
        self.set[1] += 1;
        self.config.deadline = d;
        self
    }

    /// Replace a worker after it has run this many jobs (plus its jitter); 0 never does. The
    /// replacement starts before the old worker leaves, so no job waits for it. Under the HTTP
    /// server, a connection's next request read while the worker wrote the answer before it is
    /// run by that worker first (the worker that reads a request runs it), so a client that
    /// pipelines without pause can keep a worker past its count until the pipeline pauses.
    pub fn max_requests(mut self, n: u64) -> Self {
        self.set[2] += 1;
        self.config.max_requests = n;
        self
    }

    /// Add a random 0..=`n` to each worker's `max_requests`, so workers do not all recycle at once.
    pub fn max_requests_jitter(mut self, n: u64) -> Self {
        self.set[3] += 1;
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
        Pool::start(config, Box::new(handler))
    }

    /// Start the pool with per-worker state: each worker thread runs `init(worker_index)` when it
    /// starts and keeps what it returns (a database connection, a scratch buffer) for its life;
    /// `handler` gets it as `&mut S` for every job that worker runs. `S` need not be `Send` or
    /// `Sync`: it is made, used and dropped on its worker's thread.
    ///
    /// - `build_with_state` returns once every worker has its state. If an init fails (or panics)
    ///   here, the build fails with a [`BuildError`] (field `init`) naming the worker and the cause,
    ///   and every thread the pool started has stopped.
    /// - A replacement worker (after `max_requests`, or for a worker the watchdog retired) runs its
    ///   own init. If that fails, the error is logged and the init retried with backoff (10 ms
    ///   doubling to 5 s); until it succeeds that worker takes no job, and
    ///   [`Stats::workers_without_state`](crate::Stats::workers_without_state) counts it.
    /// - The state is dropped on its thread when the worker exits, before the `on_worker_exit`
    ///   hook (and after `on_worker_start`, which runs before `init`).
    /// - A retired (stuck) thread keeps its state until its handler returns, while its replacement
    ///   makes a new one: a resource budget (database connections) must allow
    ///   `workers + max_retired` states at once.
    /// - The state is lent to one handler at a time, so a call into this pool from a thread that
    ///   already runs one of its handlers (a same-pool nested call, whatever the
    ///   [`Reentry`] policy, a call that closes a cycle of pools back into it, or
    ///   [`Pool::call_here`]) cannot get a state: it fails at once with
    ///   [`Error::Reentrant`](crate::Error::Reentrant). Use the `&mut S` you hold instead. Calls
    ///   from other pools' handlers wait for a worker as usual.
    ///
    /// ```
    /// use prefork_pool::Pool;
    ///
    /// // Each worker owns a connection (here a Vec standing for one).
    /// let db = Pool::builder()
    ///     .name("db")
    ///     .workers(2)
    ///     .build_with_state(
    ///         |worker| -> Result<Vec<String>, std::io::Error> { Ok(vec![format!("conn {worker}")]) },
    ///         |conn: &mut Vec<String>, row: String, _ctx| {
    ///             conn.push(row);
    ///             conn.len()
    ///         },
    ///     )
    ///     .unwrap();
    /// assert_eq!(db.call("a".into()).unwrap(), 2);
    ///
    /// let err = Pool::builder()
    ///     .workers(1)
    ///     .build_with_state(|_| Err::<(), _>("no such database"), |_: &mut (), x: u32, _| x)
    ///     .unwrap_err();
    /// assert!(err.to_string().contains("worker 0") && err.to_string().contains("no such database"));
    /// ```
    ///
    /// # Errors
    /// A [`BuildError`] naming the first field out of range, or the worker whose init failed.
    pub fn build_with_state<S, E, I, F>(
        self,
        init: I,
        handler: F,
    ) -> Result<Pool<Req, Resp>, BuildError>
    where
        S: 'static,
        E: std::fmt::Display + 'static,
        I: Fn(usize) -> Result<S, E> + Send + Sync + 'static,
        F: Fn(&mut S, Req, &Context) -> Resp + Send + Sync + 'static,
    {
        let mut config = self.check()?;
        let init = Init::new(init);
        let key = init.key();
        config.state = Some(Arc::new(init));
        let name = config.name.clone();
        Pool::start(
            config,
            Box::new(move |req, ctx| with_state(key, &name, &handler, req, ctx)),
        )
    }

    /// The settings `print_config` shows: the worker count as given (`None`: the default), the
    /// deadline, and recycling.
    #[cfg_attr(not(feature = "http"), allow(dead_code))]
    pub(crate) fn sized(&self) -> PoolSize {
        PoolSize {
            workers: self.workers,
            deadline: self.config.deadline,
            max_requests: self.config.max_requests,
            jitter: self.config.max_requests_jitter,
            set: self.set,
        }
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
        BuildError::check_duration(
            "deadline",
            config.deadline,
            Duration::from_millis(1)..=MAX_DEADLINE,
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
