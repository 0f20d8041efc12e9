//! Recycling worker processes past a resident-memory bound (`max_worker_memory`,
//! `PREFORK_MAX_WORKER_MEMORY`) or an age (`max_worker_age`, `PREFORK_MAX_WORKER_AGE`), as
//! granian's `--workers-max-rss` / `--workers-lifetime` and Puma's worker killer do; and the
//! jitter of `max_requests` and of the age.
//!
//! **Measured by the master.** The master reads each ready worker's resident set from
//! `/proc/<pid>/statm` (Linux) about once a second, in its loop (whose passes come at least once
//! a second; the age is checked on each pass too, so a worker goes at most a second late): it
//! works for any [`Worker`] (no cooperation needed, a stuck worker is measured too) and costs the
//! workers nothing; one small read per worker per second costs the master next to nothing. The resident set counts
//! the pages the worker shares with the master (copy-on-write, the preloaded app) as gunicorn's
//! and granian's bounds do: set the bound from what a worker shows in `ps -o rss` once warm.
//!
//! **Replacement first**, as a `max_requests` retirement: the worker is marked replaced, a new
//! one is started, and the old one is told to stop (gracefully, finishing its requests) once the
//! new one is ready. A worker already over the bound when it became ready would be replaced
//! without end (each replacement would be over it too): it is left serving, with an `error` line
//! that says to raise the bound.
//!
//! [`Worker`]: super::Worker

use std::time::{Duration, Instant};

use super::children::{Child, Role};
use super::config::SupervisorConfig;
use super::exit::Cause;
use crate::settings::show_duration;

/// How often the master measures the workers' memory, at most: a little under its longest tick
/// (1 s), so that every pass of an idle master measures (not every other one).
const MEASURE_EVERY: Duration = Duration::from_millis(900);

/// The master's side: the bounds, when it last measured, and the jitter's random numbers.
#[derive(Debug)]
pub(crate) struct Recycler {
    max_memory: u64,
    max_age: Option<Duration>,
    requests_jitter: u64,
    page: u64,
    last: Option<Instant>,
    seed: u64,
}

impl Recycler {
    pub(crate) fn new(cfg: &SupervisorConfig, seed: u64) -> Recycler {
        // SAFETY: sysconf(3) only reads a system constant.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        Recycler {
            max_memory: cfg.max_worker_memory,
            max_age: cfg.max_worker_age,
            requests_jitter: cfg.max_requests_jitter,
            page: u64::try_from(page).unwrap_or(4096),
            last: None,
            seed: seed.max(1),
        }
    }

    /// xorshift64: enough to spread retirements; not for anything secret.
    fn random(&mut self) -> u64 {
        let mut x = self.seed;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.seed = x;
        x
    }

    /// A new worker's `max_requests` jitter: a random `0..=max_requests_jitter`.
    pub(crate) fn requests_jitter(&mut self) -> u64 {
        match self.requests_jitter {
            0 => 0,
            j => self.random() % (j + 1),
        }
    }

    /// A new worker's lifetime: `max_worker_age` plus a random 0..=10 % of it, so that workers
    /// started together (the first ones, a reload's) are not all recycled at once.
    pub(crate) fn lifetime(&mut self) -> Option<Duration> {
        let age = self.max_age?;
        let tenth = (age.as_millis() / 10) as u64;
        let extra = if tenth == 0 {
            0
        } else {
            self.random() % (tenth + 1)
        };
        Some(age + Duration::from_millis(extra))
    }

    /// Marks the workers past their age or memory bound as replaced (their replacement is
    /// started by the master's next `maintain`), each with a log line that says why.
    pub(crate) fn check(&mut self, children: &mut [Child], now: Instant) {
        let measure = self.max_memory > 0
            && self
                .last
                .map_or(true, |t| now.duration_since(t) >= MEASURE_EVERY);
        if measure {
            self.last = Some(now);
        }
        for c in children.iter_mut() {
            if !c.counts_as(Role::Serving, true) {
                continue;
            }
            let age = now.duration_since(c.started);
            let mut why = c.lifetime.filter(|l| age > *l).map(|l| {
                format!(
                    "age {} over max_worker_age {} (its limit with jitter: {})",
                    show_duration(round_ms(age)),
                    show_duration(self.max_age.unwrap_or(l)),
                    show_duration(round_ms(l))
                )
            });
            // A worker just seen ready is measured at once: that is its size before any load.
            if why.is_none() && self.max_memory > 0 && (measure || !c.measured) && !c.memory_exempt
            {
                let first = !c.measured;
                c.measured = true;
                match resident_bytes(c.pid, self.page) {
                    Some(rss) if rss > self.max_memory && first => {
                        c.memory_exempt = true;
                        log::error!(
                            "worker {} (pid {}) uses {} MiB of resident memory as soon as it is \
                             ready, over max_worker_memory {} MiB: not recycled (each replacement \
                             would be over it too); raise max_worker_memory \
                             (PREFORK_MAX_WORKER_MEMORY) above what a fresh worker uses",
                            c.number,
                            c.pid,
                            mib(rss),
                            mib(self.max_memory)
                        );
                    }
                    Some(rss) if rss > self.max_memory => {
                        why = Some(format!(
                            "resident memory {} MiB over max_worker_memory {} MiB",
                            mib(rss),
                            mib(self.max_memory)
                        ));
                    }
                    _ => {}
                }
            }
            if let Some(why) = why {
                log::info!(
                    "worker {} (pid {}) recycled: {why}; starting its replacement, it stops once \
                     the replacement is ready",
                    c.number,
                    c.pid
                );
                c.role = Role::Replaced;
                c.replaced_for = Some(Cause::Recycle(why));
            }
        }
    }
}

/// `d` to the millisecond, for the log.
fn round_ms(d: Duration) -> Duration {
    Duration::from_millis(d.as_millis() as u64)
}

/// Bytes in MiB, rounded to the nearest.
fn mib(bytes: u64) -> u64 {
    (bytes + (1 << 19)) >> 20
}

/// The resident set of `pid` in bytes: the second field of `/proc/<pid>/statm`, in pages.
/// `None` where there is no such file (not Linux, the process is gone).
fn resident_bytes(pid: libc::pid_t, page: u64) -> Option<u64> {
    let statm = std::fs::read_to_string(format!("/proc/{pid}/statm")).ok()?;
    parse_statm(&statm, page)
}

fn parse_statm(statm: &str, page: u64) -> Option<u64> {
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages.saturating_mul(page))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::MIN_MEMORY;

    fn recycler(memory: u64, age: Option<Duration>) -> Recycler {
        let cfg = SupervisorConfig {
            max_worker_memory: memory,
            max_worker_age: age,
            ..SupervisorConfig::default()
        };
        Recycler::new(&cfg, 42)
    }

    fn ready_child(pid: i32, lifetime: Option<Duration>) -> Child {
        let mut c = Child::new(pid, 1, 0, lifetime);
        c.ready = true;
        c
    }

    #[test]
    fn statm_is_pages_of_resident_memory() {
        assert_eq!(parse_statm("1000 512 100 1 0 200 0\n", 4096), Some(2 << 20));
        assert_eq!(parse_statm("", 4096), None);
        assert_eq!(mib(210 << 20), 210);
        // This process is measured at all (Linux).
        let me = resident_bytes(std::process::id() as i32, 4096);
        assert!(me.is_some_and(|b| b > 0), "{me:?}");
    }

    #[test]
    fn lifetimes_have_up_to_ten_percent_of_jitter() {
        let mut r = recycler(0, Some(Duration::from_secs(100)));
        let all: Vec<Duration> = (0..50).map(|_| r.lifetime().unwrap()).collect();
        assert!(all
            .iter()
            .all(|l| (Duration::from_secs(100)..=Duration::from_secs(110)).contains(l)));
        assert!(all.iter().any(|l| *l != all[0]), "no jitter: {all:?}");
        assert_eq!(recycler(0, None).lifetime(), None);
    }

    #[test]
    fn a_worker_past_its_age_is_replaced_with_its_reason() {
        let mut r = recycler(0, Some(Duration::from_secs(1)));
        let mut kids = vec![ready_child(1, Some(Duration::from_millis(1050)))];
        let started = kids[0].started;
        r.check(&mut kids, started + Duration::from_millis(500));
        assert_eq!(kids[0].role, Role::Serving);
        r.check(&mut kids, started + Duration::from_secs(2));
        assert_eq!(kids[0].role, Role::Replaced);
        let why = kids[0].replaced_for.as_ref().unwrap().to_string();
        assert!(why.contains("over max_worker_age 1s"), "{why}");
    }

    #[test]
    fn over_the_memory_bound_at_once_is_left_alone_later_is_replaced() {
        let me = std::process::id() as i32;
        // Any bound is under this test process's resident memory.
        let mut r = recycler(MIN_MEMORY, None);
        let mut kids = vec![ready_child(me, None)];
        let now = Instant::now();
        r.check(&mut kids, now);
        assert!(kids[0].memory_exempt && kids[0].role == Role::Serving);
        r.check(&mut kids, now + Duration::from_secs(2));
        assert_eq!(kids[0].role, Role::Serving);
        // Measured once under the bound, over it later: replaced.
        let mut kids = vec![ready_child(me, None)];
        kids[0].measured = true;
        r.check(&mut kids, now + Duration::from_secs(4));
        assert_eq!(kids[0].role, Role::Replaced);
        let why = kids[0].replaced_for.as_ref().unwrap().to_string();
        assert!(
            why.contains("resident memory ") && why.contains(" MiB over max_worker_memory 1 MiB"),
            "{why}"
        );
    }
}
