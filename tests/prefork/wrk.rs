//! Load from `wrk` (a separate program, so the test process forks no thread into a master): its
//! request shares per worker process (each answer's body starts with the worker's pid) and its
//! error counts. A scenario that runs it first checks it is installed (`tools::WRK`).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::tools;

/// Counts answers by the pid at the start of their body, in each wrk thread, and prints the
/// totals as `SHARES pid=count ...` at the end.
const SCRIPT: &str = r#"
counts = {}
local threads = {}
function setup(thread) table.insert(threads, thread) end
function response(status, headers, body)
  local pid = string.match(body, "^(%d+)")
  if pid then counts[pid] = (counts[pid] or 0) + 1 end
end
function done(summary, latency, requests)
  local total = {}
  for _, t in ipairs(threads) do
    for k, v in pairs(t:get("counts")) do total[k] = (total[k] or 0) + v end
  end
  local out = {}
  for k, v in pairs(total) do table.insert(out, k .. "=" .. v) end
  io.write("SHARES " .. table.concat(out, " ") .. "\n")
end
"#;

/// What one wrk run reported.
#[derive(Debug, Default)]
pub struct WrkRun {
    /// Answers per worker pid.
    pub shares: BTreeMap<i32, u64>,
    pub connect_errors: u64,
    pub read_errors: u64,
    pub write_errors: u64,
    pub timeouts: u64,
    pub non_2xx: u64,
    pub output: String,
}

impl WrkRun {
    pub fn requests(&self) -> u64 {
        self.shares.values().sum()
    }

    /// Busiest over least busy share, among `pids` (a pid that served nothing makes it infinite).
    pub fn imbalance(&self, pids: usize) -> f64 {
        if self.shares.len() < pids {
            return f64::INFINITY;
        }
        let max = *self.shares.values().max().unwrap_or(&0) as f64;
        let min = *self.shares.values().min().unwrap_or(&0) as f64;
        max / min.max(1.0)
    }

    /// Shares in percent, for messages and reports.
    pub fn percent(&self) -> String {
        let total = self.requests().max(1) as f64;
        let parts: Vec<String> = self
            .shares
            .values()
            .map(|n| format!("{:.1}%", 100.0 * *n as f64 / total))
            .collect();
        parts.join(" / ")
    }

    /// No failed request: no read or write error, no answer but 2xx/3xx.
    pub fn clean(&self) -> Result<(), String> {
        if self.read_errors + self.write_errors + self.non_2xx == 0 {
            Ok(())
        } else {
            Err(format!(
                "wrk saw {} read error(s), {} write error(s), {} non-2xx answer(s):\n{}",
                self.read_errors, self.write_errors, self.non_2xx, self.output
            ))
        }
    }
}

/// A wrk run under way.
pub struct Wrk {
    child: Child,
    script: std::path::PathBuf,
}

impl Wrk {
    /// Starts `wrk -t{threads} -c{conns} -d{secs}s` on `path`, keep-alive.
    pub fn start(
        addr: SocketAddr,
        threads: usize,
        conns: usize,
        duration: Duration,
        path: &str,
    ) -> Result<Wrk, String> {
        Wrk::start_with(addr, threads, conns, duration, path, false)
    }

    /// As [`start`](Self::start); with `close`, every request says `Connection: close`, so
    /// that each one opens a connection of its own (as nginx's default upstream does).
    pub fn start_with(
        addr: SocketAddr,
        threads: usize,
        conns: usize,
        duration: Duration,
        path: &str,
        close: bool,
    ) -> Result<Wrk, String> {
        let script =
            std::env::temp_dir().join(format!("prefork-test-{}-shares.lua", std::process::id()));
        let header = if close {
            "wrk.headers[\"Connection\"] = \"close\"\n"
        } else {
            ""
        };
        std::fs::write(&script, format!("{header}{SCRIPT}"))
            .map_err(|e| format!("write the wrk script: {e}"))?;
        let program = tools::find(tools::WRK.program)
            .ok_or_else(|| format!("wrk is not installed ({})", tools::WRK.install))?;
        let child = Command::new(program)
            .arg(format!("-t{threads}"))
            .arg(format!("-c{conns}"))
            .arg(format!("-d{}s", duration.as_secs().max(1)))
            .arg("--timeout")
            .arg("10s")
            .arg("-s")
            .arg(&script)
            .arg(format!("http://{addr}{path}"))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot run wrk: {e}"))?;
        Ok(Wrk { child, script })
    }

    /// Whether wrk has ended.
    pub fn done(&self) -> bool {
        // Without `&mut` (no `try_wait`): its state, until `finish` reaps it (a zombie has ended).
        let stat =
            std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).unwrap_or_default();
        stat.rsplit_once(')')
            .map_or(true, |(_, rest)| rest.trim_start().starts_with('Z'))
    }

    /// Waits for the run to end; what it reported.
    pub fn finish(self) -> Result<WrkRun, String> {
        let out = self
            .child
            .wait_with_output()
            .map_err(|e| format!("wrk: {e}"))?;
        let _ = std::fs::remove_file(&self.script);
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        if !out.status.success() {
            return Err(format!("wrk failed ({}): {text}", out.status));
        }
        Ok(parse(&text))
    }
}

fn number_after(text: &str, key: &str) -> u64 {
    text.find(key)
        .map(|i| &text[i + key.len()..])
        .and_then(|rest| {
            rest.trim_start()
                .split(|c: char| !c.is_ascii_digit())
                .next()
                .and_then(|n| n.parse().ok())
        })
        .unwrap_or(0)
}

fn parse(text: &str) -> WrkRun {
    let mut run = WrkRun {
        output: text.to_string(),
        ..WrkRun::default()
    };
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("SHARES") {
            for kv in rest.split_whitespace() {
                if let Some((pid, n)) = kv.split_once('=') {
                    if let (Ok(pid), Ok(n)) = (pid.parse(), n.parse()) {
                        run.shares.insert(pid, n);
                    }
                }
            }
        } else if line.contains("Socket errors:") {
            run.connect_errors = number_after(line, "connect");
            run.read_errors = number_after(line, "read");
            run.write_errors = number_after(line, "write");
            run.timeouts = number_after(line, "timeout");
        } else if line.contains("Non-2xx or 3xx responses:") {
            run.non_2xx = number_after(line, "responses:");
        }
    }
    run
}

/// Runs wrk to the end.
pub fn wrk(
    addr: SocketAddr,
    threads: usize,
    conns: usize,
    duration: Duration,
    path: &str,
) -> Result<WrkRun, String> {
    Wrk::start(addr, threads, conns, duration, path)?.finish()
}
