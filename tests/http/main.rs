//! The HTTP front end's tests, one binary: a module per concern, the helpers in `http_helpers`.
//!
//! The tests of this binary run in one process, at the same time. The few that change or count
//! the process's file descriptors (`accept_errors` lowers the open-file limit and fills every
//! descriptor; `idle_connections` and `slow_reader` count `/proc/self/fd`) run their body in a
//! process of their own ([`http_helpers::alone`]); the log is captured by one logger for the whole
//! binary ([`http_helpers::logs`]). A test that runs an external program (curl, python3, nginx)
//! finds it with [`tools`], and is skipped when it is not installed (unless PREFORK_REQUIRE_TOOLS
//! is set).
#![cfg(feature = "http")]

mod http_helpers;
#[path = "../support/nginx.rs"]
mod nginx_process;
#[path = "../support/tools.rs"]
mod tools;

mod apps;
mod connections;
mod operators;
mod self_calls;
