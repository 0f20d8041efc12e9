//! The recycling settings on the [`SupervisorBuilder`]: `max_worker_memory` and `max_worker_age`
//! (`PREFORK_MAX_WORKER_MEMORY`, `PREFORK_MAX_WORKER_AGE`), their checks and their rows in
//! `print_config`. The master's side is `recycle.rs`.

use std::time::Duration;

use super::builder::SupervisorBuilder;
use crate::settings::{
    show_bytes, show_duration, Source, MAX_AGE, MAX_MEMORY, MEMORY_TEXT, MIN_AGE, MIN_MEMORY,
};
use crate::BuildError;

impl SupervisorBuilder {
    /// Recycle a worker process whose resident memory is over `bytes` (0: never, the default;
    /// else 1 MiB..=1 TiB; `PREFORK_MAX_WORKER_MEMORY`, which takes `200M`, `1G`): its
    /// replacement is started first, and it stops gracefully once the replacement is ready, with
    /// a log line that says why (`worker 3 (pid 1234) recycled: resident memory 210 MiB over
    /// max_worker_memory 200 MiB`). The master measures it about once a second, from
    /// `/proc/<pid>/statm` (Linux; elsewhere the bound is never reached). A worker already over
    /// the bound when it becomes ready is left alone, with an `error` line (its replacement
    /// would be over it too).
    ///
    /// ```
    /// use std::time::Duration;
    /// use prefork_pool::prefork::{Supervisor, WorkerEnv};
    ///
    /// Supervisor::builder()
    ///     .bind("127.0.0.1:0")
    ///     .max_worker_memory(200 << 20)              // 200 MiB
    ///     .max_worker_age(Duration::from_secs(3600)) // and at most an hour (+ up to 6 min)
    ///     .check(|| Ok::<_, String>(|_env: &mut WorkerEnv| 0))
    ///     .unwrap();
    /// ```
    pub fn max_worker_memory(mut self, bytes: u64) -> Self {
        self.sources.set("max_worker_memory", Source::Code);
        self.cfg.max_worker_memory = bytes;
        self
    }

    /// Recycle each worker process once it has run for `age` plus a random 0..=10 % of it (so
    /// that workers started together do not all go at once), replacement first as with
    /// [`max_worker_memory`](Self::max_worker_memory); 1s..=30 days; default: never;
    /// `PREFORK_MAX_WORKER_AGE` (`3600s`, `1h`).
    pub fn max_worker_age(mut self, age: Duration) -> Self {
        self.sources.set("max_worker_age", Source::Code);
        self.cfg.max_worker_age = Some(age);
        self
    }

    /// Checks both bounds, by the name of the setting (or of the variable that set it).
    pub(super) fn validate_recycling(&self) -> Result<(), BuildError> {
        let field = |key: &'static str| match self.sources.get(key) {
            Source::Env(var) => var,
            _ => key,
        };
        let m = self.cfg.max_worker_memory;
        if m != 0 && !(MIN_MEMORY..=MAX_MEMORY).contains(&m) {
            return Err(BuildError::new(
                field("max_worker_memory"),
                format!("{m} bytes"),
                MEMORY_TEXT,
            ));
        }
        if let Some(age) = self.cfg.max_worker_age {
            BuildError::check_range_shown(
                field("max_worker_age"),
                age,
                MIN_AGE..=MAX_AGE,
                "1s..=720h (30 days)",
            )?;
        }
        Ok(())
    }

    /// The two rows of `print_config`.
    pub(super) fn recycling_rows(&self) -> [(&'static str, String, Source); 2] {
        let memory = match self.cfg.max_worker_memory {
            0 => "0 (no bound)".to_string(),
            m => show_bytes(m),
        };
        let age = self
            .cfg
            .max_worker_age
            .map_or("not set: never".to_string(), |a| {
                format!("{} (+ 0..=10% jitter)", show_duration(a))
            });
        [
            (
                "max_worker_memory",
                memory,
                self.sources.get("max_worker_memory"),
            ),
            ("max_worker_age", age, self.sources.get("max_worker_age")),
        ]
    }
}
