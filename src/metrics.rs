//! One Prometheus/OpenMetrics text page for any number of pools and servers: [`Metrics`] (its
//! checked prefix) and the [`MetricsPage`] it starts, which emits each metric family once (one
//! `# HELP` and one `# TYPE` line) with a `pool="..."` or `server="..."` label per sample.

use std::fmt::Write as _;

use crate::{BuildError, Stats};

/// The kind of a metric family, as its `# TYPE` line says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Gauge,
    Counter,
    #[cfg_attr(not(feature = "http"), allow(dead_code))]
    Histogram,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Gauge => "gauge",
            Kind::Counter => "counter",
            Kind::Histogram => "histogram",
        }
    }
}

/// One family: its lines, gathered from every pool and server before the page is written.
#[derive(Debug)]
struct Family {
    name: String,
    kind: Kind,
    help: &'static str,
    samples: String,
}

/// The metrics page's settings: the prefix every metric name starts with.
///
/// ```
/// use prefork_pool::{Metrics, Pool};
///
/// let db = Pool::builder().name("db").workers(1).build(|x: u8, _| x).unwrap();
/// let web = Pool::builder().name("web").workers(1).build(|x: u8, _| x).unwrap();
/// db.call(1).unwrap();
///
/// let metrics = Metrics::builder().prefix("app").build().unwrap();
/// let mut page = metrics.page();
/// page.pool(&db.stats()).pool(&web.stats());
/// let text = page.finish();
/// assert_eq!(text.matches("# TYPE app_pool_completed_total counter").count(), 1);
/// assert!(text.contains("app_pool_completed_total{pool=\"db\"} 1\n"));
/// assert!(text.contains("app_pool_completed_total{pool=\"web\"} 0\n"));
///
/// // A prefix Prometheus would reject is refused when the page is built.
/// assert_eq!(Metrics::builder().prefix("my-app").build().unwrap_err().field, "prefix");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Metrics {
    prefix: String,
}

/// Builds [`Metrics`]: [`prefix`](Self::prefix) (default `prefork`), checked by
/// [`build`](Self::build).
#[derive(Debug, Clone)]
pub struct MetricsBuilder {
    prefix: String,
}

impl MetricsBuilder {
    /// The prefix of every metric name (`{prefix}_pool_...`, `{prefix}_http_...`): it must match
    /// `[a-zA-Z_:][a-zA-Z0-9_:]*`, as every Prometheus metric name.
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// Check the prefix.
    pub fn build(self) -> Result<Metrics, BuildError> {
        if !valid_name(&self.prefix) {
            return Err(BuildError::new(
                "prefix",
                &self.prefix,
                "a metric name prefix: [a-zA-Z_:][a-zA-Z0-9_:]*",
            ));
        }
        Ok(Metrics {
            prefix: self.prefix,
        })
    }
}

/// Whether `s` is a valid Prometheus metric name.
fn valid_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

impl Metrics {
    /// The builder, with the prefix `prefork`.
    pub fn builder() -> MetricsBuilder {
        MetricsBuilder {
            prefix: "prefork".to_string(),
        }
    }

    /// The prefix every metric name starts with.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// A new, empty page: add pools and servers to it, then [`finish`](MetricsPage::finish) it.
    pub fn page(&self) -> MetricsPage {
        MetricsPage::unchecked(&self.prefix)
    }
}

/// One scrape's text: each family once, whatever number of pools and servers it shows. From
/// [`Metrics::page`]; see [`Metrics`] for an example.
#[derive(Debug)]
pub struct MetricsPage {
    prefix: String,
    families: Vec<Family>,
}

impl MetricsPage {
    /// A page whose prefix was not checked (for [`Stats::to_prometheus`]).
    pub(crate) fn unchecked(prefix: &str) -> Self {
        MetricsPage {
            prefix: prefix.to_string(),
            families: Vec::new(),
        }
    }

    /// The family `{prefix}_{name}`, created on first use.
    fn family(&mut self, name: &str, kind: Kind, help: &'static str) -> &mut Family {
        let full = format!("{}_{name}", self.prefix);
        let i = match self.families.iter().position(|f| f.name == full) {
            Some(i) => i,
            None => {
                self.families.push(Family {
                    name: full,
                    kind,
                    help,
                    samples: String::new(),
                });
                self.families.len() - 1
            }
        };
        &mut self.families[i]
    }

    /// Add one sample `{prefix}_{name}{labels} value` to its family (`labels` already rendered,
    /// without braces; `suffix` is appended to the sample's name, for a histogram's `_bucket`).
    pub(crate) fn sample(
        &mut self,
        (name, kind, help): (&str, Kind, &'static str),
        suffix: &str,
        labels: &str,
        value: impl std::fmt::Display,
    ) -> &mut Self {
        let f = self.family(name, kind, help);
        let _ = writeln!(f.samples, "{}{suffix}{{{labels}}} {value}", f.name);
        self
    }

    /// Add a pool's stats, labelled `pool="<name>"`.
    pub fn pool(&mut self, stats: &Stats) -> &mut Self {
        let labels = format!("pool=\"{}\"", escape(&stats.name));
        for (name, value, help) in stats.gauges() {
            self.sample((name, Kind::Gauge, help), "", &labels, value);
        }
        for (name, value, help) in stats.counters() {
            self.sample((name, Kind::Counter, help), "", &labels, value);
        }
        self
    }

    /// The page's text: each family's `# HELP` and `# TYPE` lines, then its samples.
    pub fn finish(&self) -> String {
        let mut out = String::new();
        for f in &self.families {
            let _ = writeln!(out, "# HELP {} {}", f.name, f.help);
            let _ = writeln!(out, "# TYPE {} {}", f.name, f.kind.as_str());
            out.push_str(&f.samples);
        }
        out
    }
}

/// A label value escaped for the text format.
pub(crate) fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_prefix_is_a_metric_name() {
        for ok in ["app", "_x", "a:b_9", ":"] {
            assert!(Metrics::builder().prefix(ok).build().is_ok(), "{ok}");
        }
        for bad in ["", "my-app", "9x", "a b", "é"] {
            let e = Metrics::builder().prefix(bad).build().unwrap_err();
            assert_eq!(e.field, "prefix", "{bad}");
        }
    }
}
