//! The external programs some tests run (curl, python3, wrk, nginx, openssl,
//! systemd-socket-activate, systemd-analyze): the one place that finds them, and the one way a
//! test that needs a missing one is skipped.
//!
//! A tool is looked up on `PATH` (see [`find`]), and the test runs the path found. When it is not
//! installed the test prints `SKIPPED: <tool> not installed (<how to install>)` and passes, unless
//! `PREFORK_REQUIRE_TOOLS` is set (to anything but `0`): then the missing tool is a failure. CI
//! (`.ci/run`) installs every tool and sets it, so CI never skips silently.
//!
//! Shared by the test binaries (`tests/http`, `tests/prefork`) and the library's unit tests, each
//! of which includes this file with `#[path]`; each uses a part of it.
#![allow(dead_code)]

use std::ffi::OsStr;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};

/// Set (to anything but `0` or empty) it makes a missing tool a failure instead of a skip.
pub const REQUIRE_TOOLS: &str = "PREFORK_REQUIRE_TOOLS";

/// A program a test runs that is not built by cargo.
pub struct Tool {
    /// What the `SKIPPED` line calls it.
    pub name: &'static str,
    /// The program looked up on `PATH`.
    pub program: &'static str,
    /// Arguments of a run of the program that must succeed for the tool to count as installed
    /// (a Python module's import); none: being found is enough.
    pub check: &'static [&'static str],
    /// How to install it (Debian).
    pub install: &'static str,
}

pub const CURL: Tool = Tool {
    name: "curl",
    program: "curl",
    check: &[],
    install: "apt-get install curl",
};

pub const PYTHON3: Tool = Tool {
    name: "python3",
    program: "python3",
    check: &[],
    install: "apt-get install python3",
};

/// Python's `prometheus_client`, the Prometheus text parser the metrics page is checked with.
pub const PROMETHEUS_CLIENT: Tool = Tool {
    name: "python3 with prometheus_client",
    program: "python3",
    check: &["-c", "import prometheus_client"],
    install: "apt-get install python3 python3-prometheus-client, or pip install prometheus_client",
};

pub const WRK: Tool = Tool {
    name: "wrk",
    program: "wrk",
    check: &[],
    install: "apt-get install wrk",
};

pub const NGINX: Tool = Tool {
    name: "nginx",
    program: "nginx",
    check: &[],
    install: "apt-get install nginx-light, or nginx",
};

/// Makes the self-signed certificate the nginx site's TLS block is checked with.
pub const OPENSSL: Tool = Tool {
    name: "openssl",
    program: "openssl",
    check: &[],
    install: "apt-get install openssl",
};

/// Checks the systemd units of `deploy/`.
pub const SYSTEMD_ANALYZE: Tool = Tool {
    name: "systemd-analyze",
    program: "systemd-analyze",
    check: &[],
    install: "apt-get install systemd",
};

pub const SYSTEMD_SOCKET_ACTIVATE: Tool = Tool {
    name: "systemd-socket-activate",
    program: "systemd-socket-activate",
    check: &[],
    install: "apt-get install systemd",
};

/// The first executable file named `program` in a directory of `PATH`, or else in the `sbin`
/// beside a `bin` of `PATH` (`/usr/sbin` for `/usr/bin`: Debian puts nginx in `/usr/sbin`, which
/// is on root's `PATH` but not on a user's). Nothing else: a `PATH` that leaves a tool out (a
/// directory of links to every other program, say) hides it from the tests, as from a shell.
pub fn find(program: &str) -> Option<PathBuf> {
    candidates(program).next()
}

/// Every executable file named `program` that [`find`] would consider, in its order.
pub fn candidates(program: &str) -> impl Iterator<Item = PathBuf> + '_ {
    let dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|path| {
            std::env::split_paths(&path)
                .filter(|d| d.is_absolute())
                .collect()
        })
        .unwrap_or_default();
    let sbins: Vec<PathBuf> = dirs
        .iter()
        .filter(|d| d.file_name() == Some(OsStr::new("bin")))
        .map(|d| d.with_file_name("sbin"))
        .collect();
    dirs.into_iter()
        .chain(sbins)
        .map(move |d| d.join(program))
        .filter(|p| executable(p))
}

fn executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    p.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Where `tool` is, if it is installed (found, and its check, if any, succeeds).
pub fn installed(tool: &Tool) -> Option<PathBuf> {
    let path = find(tool.program)?;
    if tool.check.is_empty() {
        return Some(path);
    }
    let ok = Command::new(&path)
        .args(tool.check)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    ok.then_some(path)
}

/// Whether `PREFORK_REQUIRE_TOOLS` forbids skipping.
pub fn required() -> bool {
    std::env::var_os(REQUIRE_TOOLS).is_some_and(|v| !v.is_empty() && v != "0")
}

static SKIPS: AtomicUsize = AtomicUsize::new(0);

/// How many skips [`tool_or_skip`] has printed in this process.
pub fn skips() -> usize {
    SKIPS.load(Ordering::Relaxed)
}

/// `tool`'s path when it is installed. When it is not: `Ok(None)` after a `SKIPPED:` line, or,
/// when `PREFORK_REQUIRE_TOOLS` is set, `Err` saying what to install.
///
/// The line is written to the process's stderr itself, not with `eprintln!`: the test harness
/// keeps what a passing test prints with the macros to itself, and a skip must be seen.
pub fn tool_or_skip(tool: &Tool) -> Result<Option<PathBuf>, String> {
    if let Some(path) = installed(tool) {
        return Ok(Some(path));
    }
    skip(tool.name, tool.install).map(|()| None)
}

/// Skips the running test for want of `name` (`install` says how to get it): `Ok` after a
/// `SKIPPED:` line, or `Err` when `PREFORK_REQUIRE_TOOLS` is set. For a need [`Tool`] cannot
/// express; [`tool_or_skip`] calls it.
pub fn skip(name: &str, install: &str) -> Result<(), String> {
    skip_for(&format!("{name} not installed ({install})"))
}

/// Skips the running test because of `missing` (what it needs and how to get it: `not running
/// as root (...)`): `Ok` after a `SKIPPED:` line, or `Err` when `PREFORK_REQUIRE_TOOLS` is set.
pub fn skip_for(missing: &str) -> Result<(), String> {
    if required() {
        return Err(format!(
            "{missing}; {REQUIRE_TOOLS} is set, so this test may not be skipped"
        ));
    }
    SKIPS.fetch_add(1, Ordering::Relaxed);
    // libtest runs each test on a thread named after it; the prefork harness on `main`.
    let test = match std::thread::current().name() {
        Some(name) if name != "main" => format!(" [{name}]"),
        _ => String::new(),
    };
    let _ = writeln!(std::io::stderr().lock(), "SKIPPED: {missing}{test}");
    Ok(())
}

/// [`tool_or_skip`] for a libtest test: `None` means return now (skipped); a required tool that
/// is missing panics.
pub fn require(tool: &Tool) -> Option<PathBuf> {
    tool_or_skip(tool).unwrap_or_else(|e| panic!("{e}"))
}
