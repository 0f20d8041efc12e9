//! The stuck report: what every busy worker runs and since when, read from the pool's one record
//! of what each worker runs (`Pool::records`, named with the request line by the server's
//! describer). The reactor's timer checks every 100 ms whether every worker has been busy with no
//! job completed for `stuck_after`, and then logs one line per episode;
//! [`ServerHandle::stuck_report`](crate::http::ServerHandle::stuck_report) gives the same on demand.

use std::fmt;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::pool::Record;
use crate::Stats;

/// An episode: every worker busy, no job completed since `since`.
#[derive(Debug, Clone, Copy)]
struct Episode {
    since: Instant,
    completed: u64,
    logged: bool,
}

/// The current episode, and the report of the moment the budget of stuck threads was spent.
#[derive(Debug)]
pub(crate) struct Busy {
    stuck_after: Duration,
    episode: Mutex<Option<Episode>>,
    /// The stuck report when the budget of stuck threads was spent (see
    /// [`StuckPolicy`]): from then on liveness fails with it.
    spent: OnceLock<String>,
}

/// What a server does when its budget of stuck threads is spent (see
/// [`ServerBuilder::when_stuck`](crate::http::ServerBuilder::when_stuck)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum StuckPolicy {
    /// Log the stuck report, answer every queued or running request 503, and exit the process
    /// with [`EXIT_STUCK`], for its service manager to restart it.
    #[default]
    Exit,
    /// Log the stuck report and fail liveness from then on; serve with the workers left.
    FailLiveness,
}

/// The exit status of a server that stopped because its budget of stuck threads was spent
/// ([`StuckPolicy::Exit`]): 70, `EX_SOFTWARE` of `sysexits.h`.
pub const EXIT_STUCK: i32 = 70;

impl Busy {
    pub(crate) fn new(stuck_after: Duration) -> Self {
        Busy {
            stuck_after,
            episode: Mutex::new(None),
            spent: OnceLock::new(),
        }
    }

    /// Records that the budget of stuck threads is spent, with the stuck report of that moment;
    /// `false` if it was already.
    pub(crate) fn spend(&self, report: String) -> bool {
        self.spent.set(report).is_ok()
    }

    /// The stuck report of the moment the budget of stuck threads was spent, if it was.
    pub(crate) fn spent(&self) -> Option<&str> {
        self.spent.get().map(String::as_str)
    }

    /// The busy workers now, by worker index, from the pool's `records` (a retired thread's
    /// record, `worker: None`, is not a worker's).
    pub(crate) fn report(
        &self,
        pool: &str,
        workers: usize,
        records: Vec<Record>,
        now: Instant,
    ) -> StuckReport {
        let busy: Vec<BusyWorker> = records
            .into_iter()
            .filter_map(|r| {
                Some(BusyWorker {
                    worker: r.worker?,
                    request_line: r.label.as_str().to_string(),
                    running: now.saturating_duration_since(r.started),
                })
            })
            .collect();
        StuckReport {
            pool: pool.to_string(),
            workers,
            no_progress_for: self
                .episode
                .lock()
                .map(|e| now.saturating_duration_since(e.since)),
            busy,
        }
    }

    /// The reactor's periodic check: log one `warn` line per episode in which every worker has
    /// been busy, and no job completed, for `stuck_after`.
    pub(crate) fn tick(&self, stats: &Stats, records: impl FnOnce() -> Vec<Record>, now: Instant) {
        let stuck = stats.workers > 0 && stats.busy >= stats.workers;
        let fire = {
            let mut ep = self.episode.lock();
            match &mut *ep {
                Some(e) if stuck && e.completed == stats.completed => {
                    if !e.logged && now.saturating_duration_since(e.since) >= self.stuck_after {
                        e.logged = true;
                        true
                    } else {
                        false
                    }
                }
                _ if stuck => {
                    *ep = Some(Episode {
                        since: now,
                        completed: stats.completed,
                        logged: false,
                    });
                    false
                }
                _ => {
                    *ep = None;
                    false
                }
            }
        };
        if fire {
            let report = self.report(&stats.name, stats.workers, records(), now);
            log::warn!(target: "prefork_pool::http", "{report}");
        }
    }
}

/// One busy worker in a [`StuckReport`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct BusyWorker {
    /// The worker's index (`0..workers`, as [`Context::worker`](crate::Context::worker)).
    pub worker: usize,
    /// The request line of the request it runs, e.g. `POST /call_hello_world HTTP/1.1`.
    pub request_line: String,
    /// How long its handler has been running.
    pub running: Duration,
}

/// What every busy worker is doing: from
/// [`ServerHandle::stuck_report`](crate::http::ServerHandle::stuck_report), and logged at `warn` (target
/// `prefork_pool::http`) once per episode in which every worker has been busy with no job
/// completed for [`stuck_after`](crate::http::ServerBuilder::stuck_after). Its `Display` is that line:
///
/// ```text
/// pool `http` is stuck: 1 of 1 worker(s) busy, no job completed for 1.0s: worker 0 running `POST /call_hello_world HTTP/1.1` for 1.02s
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct StuckReport {
    /// The pool's name.
    pub pool: String,
    /// The configured worker count.
    pub workers: usize,
    /// How long every worker has been busy with no job completed, when that is the case now.
    pub no_progress_for: Option<Duration>,
    /// The busy workers, by worker index.
    pub busy: Vec<BusyWorker>,
}

impl StuckReport {
    /// The busy workers as the log says them: `worker 0 running `GET /x HTTP/1.1` for 1.02s; …`.
    pub(crate) fn busy_lines(&self) -> String {
        let lines: Vec<String> = self
            .busy
            .iter()
            .map(|b| {
                format!(
                    "worker {} running `{}` for {:.2}s",
                    b.worker,
                    b.request_line,
                    b.running.as_secs_f64()
                )
            })
            .collect();
        if lines.is_empty() {
            "no worker busy now".to_string()
        } else {
            lines.join("; ")
        }
    }
}

impl fmt::Display for StuckReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.no_progress_for {
            Some(d) => write!(
                f,
                "pool `{}` is stuck: {} of {} worker(s) busy, no job completed for {:.1}s",
                self.pool,
                self.busy.len(),
                self.workers,
                d.as_secs_f64()
            )?,
            None => write!(
                f,
                "pool `{}`: {} of {} worker(s) busy",
                self.pool,
                self.busy.len(),
                self.workers
            )?,
        }
        if !self.busy.is_empty() {
            write!(f, ": {}", self.busy_lines())?;
        }
        Ok(())
    }
}
