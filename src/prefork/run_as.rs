//! The account of the worker processes on the [`SupervisorBuilder`]: `user` and `group`
//! (`PREFORK_USER`, `PREFORK_GROUP`), resolved and checked when the supervisor is built (the
//! switch itself is in `os/privileges.rs`, run by each worker after its fork).

use super::builder::SupervisorBuilder;
use super::os::privileges;
use crate::settings::Source;
use crate::BuildError;

impl SupervisorBuilder {
    /// Run the worker processes as this user (a name or a numeric uid; gunicorn's `--user`;
    /// `PREFORK_USER`). The master stays as it was started (root): it binds the listeners
    /// (ports below 1024 included), opens the log files and writes the pid file; each worker
    /// switches to the user right after its fork, before the `post_fork` hook and before any of
    /// the app's code runs (with [`preload`](Self::preload), the app was built in the master,
    /// as root). The group is the user's own unless [`group`](Self::group) names another; the
    /// supplementary groups are the user's (`initgroups`).
    ///
    /// [`build`](Self::build) and [`check`](Self::check) refuse it, naming `user` (or
    /// `PREFORK_USER`), when the user does not exist, or when the master does not run as root
    /// (and is not that user already: a container started with `--user` may set it too).
    ///
    /// **Log files stay writable.** The crate's log files
    /// ([`access_log_file`](Self::access_log_file), [`error_log_file`](Self::error_log_file))
    /// are opened by the master, which makes the worker's user and group their owner each time it
    /// opens one (as gunicorn does): on SIGUSR1 the master reopens first (creating the new file
    /// after logrotate moved the old one, and giving it to the user), then each worker reopens
    /// the file the master made. A logrotate `create MODE OWNER GROUP` line is then overridden by
    /// that owner. The log directory itself need not be writable by the user. A file the app
    /// opens itself is the app's to arrange.
    ///
    /// ```no_run
    /// use prefork_pool::prefork::Supervisor;
    ///
    /// # fn app() -> Result<fn(&mut prefork_pool::prefork::WorkerEnv) -> i32, String> { todo!() }
    /// // As root: bind port 80, then serve as www-data.
    /// let status = Supervisor::builder()
    ///     .bind("0.0.0.0:80")
    ///     .user("www-data")
    ///     .run(app);
    /// std::process::exit(status);
    /// ```
    pub fn user(mut self, name_or_uid: impl Into<String>) -> Self {
        self.sources.set("user", Source::Code);
        self.user = Some(name_or_uid.into());
        self
    }

    /// Run the worker processes with this group (a name or a numeric gid; gunicorn's
    /// `--group`; `PREFORK_GROUP`), instead of the [`user`](Self::user)'s own. Set alone, the
    /// workers keep the master's user and take this group (and no supplementary group). Refused
    /// as `user` is.
    pub fn group(mut self, name_or_gid: impl Into<String>) -> Self {
        self.sources.set("group", Source::Code);
        self.group = Some(name_or_gid.into());
        self
    }

    /// Resolves the user and group into the ids the workers switch to; refused by the name of
    /// the setting (or of the variable that set it).
    pub(super) fn validate_run_as(&mut self) -> Result<(), BuildError> {
        let resolved = privileges::resolve(
            self.user.as_deref(),
            self.group.as_deref(),
            privileges::current_ids(),
        );
        match resolved {
            Ok(run_as) => {
                self.cfg.run_as = run_as;
                Ok(())
            }
            Err(refusal) => {
                let (key, value) = if refusal.user {
                    ("user", self.user.clone())
                } else {
                    ("group", self.group.clone())
                };
                let field = match self.sources.get(key) {
                    Source::Env(var) => var,
                    _ => key,
                };
                Err(BuildError::new(
                    field,
                    format!("{:?}", value.unwrap_or_default()),
                    refusal.allowed,
                ))
            }
        }
    }

    /// The two rows of `print_config`.
    pub(super) fn run_as_rows(&self) -> [(&'static str, String, Source); 2] {
        let shown =
            |v: &Option<String>, unset: &str| v.clone().unwrap_or_else(|| unset.to_string());
        [
            (
                "user",
                shown(&self.user, "not set: the workers run as the master's user"),
                self.sources.get("user"),
            ),
            (
                "group",
                shown(
                    &self.group,
                    if self.user.is_some() {
                        "not set: the user's own group"
                    } else {
                        "not set: the workers keep the master's group"
                    },
                ),
                self.sources.get("group"),
            ),
        ]
    }
}
