//! Process tests of `prefork::Supervisor`, in their own `harness = false` target: the supervisor
//! forks, and a process that forks must not have other threads, so each scenario forks a child of this
//! test process that runs the master (in its own process group, its stderr in a log file), and drives
//! it from here with signals and 127.0.0.1 TCP. Every forked tree is killed at the end of its scenario,
//! and the test checks that nothing of it is left.
//!
//! Run some scenarios: `cargo test --test prefork -- NAME` (each whose name contains NAME; with
//! `--exact`, the one named NAME).
//!
//! A scenario that runs an external program (wrk, systemd-socket-activate) finds it with
//! [`tools`]; without it, the scenario is skipped (a `SKIPPED:` line), unless
//! PREFORK_REQUIRE_TOOLS is set, which makes it fail.

mod balance;
mod connect_per_request;
mod deploy;
mod failures;
mod helpers;
mod keepalive;
mod lifecycle;
mod logs;
mod naive_self_calls;
#[path = "../support/nginx.rs"]
mod nginx_process;
mod serve_http;
mod serve_router;
#[cfg(feature = "tower")]
mod service;
mod settings;
mod shared_metrics;
#[cfg(feature = "tls")]
mod tls;
#[path = "../support/tools.rs"]
mod tools;
mod workers;
mod wrk;

use std::time::{Duration, Instant};

use prefork_pool::prefork::Supervisor;

use helpers::{no_children_left, with_master, LOGGER, ROLE};

/// One scenario: its name (to filter on) and what it runs; `Err` says what went wrong.
struct Scenario {
    name: &'static str,
    run: fn() -> Result<(), String>,
}

const SCENARIOS: &[Scenario] = &[
    Scenario {
        name: "check_config",
        run: lifecycle::check_config,
    },
    Scenario {
        name: "two_workers_serve",
        run: || with_master("serve", |b| b.workers(2), lifecycle::two_workers_serve),
    },
    Scenario {
        name: "fork_hooks",
        run: || {
            with_master(
                "forkhooks",
                |b| {
                    b.workers(2)
                        .pre_fork(|n| hook_line(format!("HOOK pre {n} by {}", std::process::id())))
                        .post_fork_parent(|n, pid| {
                            hook_line(format!("HOOK parent {n} {pid:?} by {}", std::process::id()))
                        })
                        .post_fork(|n| {
                            hook_line(format!("HOOK child {n} by {}", std::process::id()))
                        })
                },
                lifecycle::fork_hooks,
            )
        },
    },
    Scenario {
        name: "kill9_respawns",
        run: || with_master("kill9", |b| b.workers(2), lifecycle::kill9_respawns),
    },
    Scenario {
        name: "term_under_load",
        run: || with_master("term", |b| b.workers(2), lifecycle::term_under_load),
    },
    Scenario {
        name: "hup_reloads",
        run: || with_master("hup", |b| b.workers(2), lifecycle::hup_reloads),
    },
    Scenario {
        name: "ttin_ttou",
        run: || with_master("ttin", |b| b.workers(2), lifecycle::ttin_ttou),
    },
    Scenario {
        name: "boot_error",
        run: failures::boot_error,
    },
    Scenario {
        name: "restart_intensity",
        run: failures::restart_intensity,
    },
    Scenario {
        name: "heartbeat_kill",
        run: || {
            with_master(
                "heartbeat",
                |b| b.workers(2).heartbeat_timeout(Duration::from_millis(1500)),
                failures::heartbeat_kill,
            )
        },
    },
    Scenario {
        name: "deadline_kill",
        run: || {
            with_master(
                "deadline",
                |b| {
                    b.workers(1)
                        .heartbeat_timeout(Duration::from_secs(30))
                        .request_grace(Duration::from_millis(500))
                },
                failures::deadline_kill,
            )
        },
    },
    Scenario {
        name: "max_requests_recycle",
        run: || {
            with_master(
                "recycle",
                |b| b.workers(1).max_requests(5),
                failures::max_requests_recycle,
            )
        },
    },
    Scenario {
        name: "user_workers_run_as_nobody",
        run: deploy::workers_run_as_nobody,
    },
    Scenario {
        name: "user_unknown_refused",
        run: deploy::unknown_user_refused,
    },
    Scenario {
        name: "recycle_past_memory",
        run: || {
            with_master(
                "memory",
                |b| b.workers(2).max_worker_memory(48 << 20),
                deploy::memory_recycle,
            )
        },
    },
    Scenario {
        name: "recycle_past_age",
        run: || {
            with_master(
                "age",
                |b| b.workers(1).max_worker_age(Duration::from_secs(1)),
                deploy::age_recycle,
            )
        },
    },
    Scenario {
        name: "notify_socket",
        run: deploy::systemd::notify_socket,
    },
    Scenario {
        name: "systemd_listen_fds",
        run: deploy::systemd::systemd_listen_fds,
    },
    Scenario {
        name: "usr2_upgrade",
        run: lifecycle::usr2_upgrade,
    },
    Scenario {
        name: "usr2_symlink_deploy",
        run: deploy::usr2_symlink_deploy,
    },
    Scenario {
        name: "usr2_never_ready",
        run: lifecycle::usr2_never_ready,
    },
    Scenario {
        name: "second_term_is_fast",
        run: || with_master("term2", |b| b.workers(1), lifecycle::second_term_is_fast),
    },
    Scenario {
        name: "graceful_timeout_kills",
        run: || {
            with_master(
                "graceful",
                |b| b.workers(1).graceful_timeout(Duration::from_secs(1)),
                failures::graceful_timeout_kills,
            )
        },
    },
    Scenario {
        name: "boot_timeout",
        run: failures::boot_timeout,
    },
    Scenario {
        name: "unix_pidfile_usr1_preload",
        run: lifecycle::unix_pidfile_usr1_preload,
    },
    Scenario {
        name: "pool_deadline_then_kill",
        run: failures::pool_deadline_then_kill,
    },
    Scenario {
        name: "serve_http",
        run: serve_http::serve_http,
    },
    Scenario {
        name: "serve_router",
        run: serve_router::serve_router,
    },
    Scenario {
        name: "serve_router_with_state",
        run: serve_router::serve_router_with_state,
    },
    Scenario {
        name: "serve_http_term_under_load",
        run: serve_http::serve_http_term_under_load,
    },
    Scenario {
        name: "serve_http_term_stalled_upload",
        run: serve_http::serve_http_term_stalled_upload,
    },
    Scenario {
        name: "serve_http_max_requests",
        run: serve_http::serve_http_max_requests,
    },
    Scenario {
        name: "serve_http_sibling_self_call",
        run: serve_http::serve_http_sibling_self_call,
    },
    Scenario {
        name: "serve_http_sibling_self_call_as_nobody",
        run: serve_http::serve_http_sibling_self_call_as_nobody,
    },
    Scenario {
        name: "serve_http_naive_self_calls",
        run: naive_self_calls::naive_self_calls,
    },
    Scenario {
        name: "serve_http_shared_metrics",
        run: shared_metrics::serve_http_shared_metrics,
    },
    Scenario {
        name: "example_server",
        run: deploy::systemd::example_server,
    },
    Scenario {
        name: "example_server_bounds_its_sessions",
        run: deploy::systemd::example_server_bounds_its_sessions,
    },
    Scenario {
        name: "example_server_port_binds_every_interface",
        run: settings::example_server_port_binds_every_interface,
    },
    Scenario {
        name: "example_server_refuses_a_bad_value_by_name",
        run: settings::example_server_refuses_a_bad_value_by_name,
    },
    Scenario {
        name: "example_server_prints_its_config",
        run: settings::example_server_prints_its_config,
    },
    Scenario {
        name: "systemd_socket_activate",
        run: deploy::systemd::systemd_socket_activate,
    },
    Scenario {
        name: "deploy_systemd_units",
        run: deploy::files::systemd_units,
    },
    Scenario {
        name: "deploy_nginx_site",
        run: deploy::files::nginx_site,
    },
    Scenario {
        name: "deploy_nginx_tls_live",
        run: deploy::files::nginx_tls_live,
    },
    Scenario {
        name: "deploy_kubernetes",
        run: deploy::files::kubernetes,
    },
    Scenario {
        name: "systemd_watchdog",
        run: deploy::systemd::watchdog,
    },
    Scenario {
        name: "balance_shares",
        run: balance::balance,
    },
    Scenario {
        name: "balance_load_aware",
        run: balance::load_aware,
    },
    Scenario {
        name: "balance_connect_per_request",
        run: connect_per_request::connect_per_request,
    },
    Scenario {
        name: "balance_behind_nginx",
        run: connect_per_request::behind_nginx,
    },
    Scenario {
        name: "keepalive_hup",
        run: keepalive::hup,
    },
    Scenario {
        name: "keepalive_ttou",
        run: keepalive::ttou,
    },
    Scenario {
        name: "keepalive_term",
        run: keepalive::term,
    },
    Scenario {
        name: "keepalive_max_requests",
        run: keepalive::max_requests,
    },
    Scenario {
        name: "logs_usr1_reopen_process_mode",
        run: logs::process_mode,
    },
    Scenario {
        name: "logs_usr1_reopen_workers_as_nobody",
        run: logs::process_mode_as_nobody,
    },
    Scenario {
        name: "logs_usr1_reopen_thread_mode",
        run: logs::thread_mode,
    },
    #[cfg(feature = "tls")]
    Scenario {
        name: "tls_router_hup_reloads_the_certificate",
        run: tls::router_hup_reloads_the_certificate,
    },
    #[cfg(all(feature = "tls", feature = "tower"))]
    Scenario {
        name: "service_tls_hup_reloads_the_certificate",
        run: tls::service_hup_reloads_the_certificate,
    },
    #[cfg(all(feature = "tls", feature = "tower"))]
    Scenario {
        name: "service_tls_h2_by_alpn",
        run: tls::service_h2_by_alpn,
    },
    #[cfg(feature = "tower")]
    Scenario {
        name: "service_hup_under_load",
        run: service::hup_under_load,
    },
    #[cfg(feature = "tower")]
    Scenario {
        name: "service_deadline_kill",
        run: service::deadline_kill,
    },
    #[cfg(feature = "tower")]
    Scenario {
        name: "service_blocked_504",
        run: service::blocked_504,
    },
    #[cfg(feature = "tower")]
    Scenario {
        name: "service_operator_features",
        run: service::ops::operator_features,
    },
    #[cfg(feature = "tower")]
    Scenario {
        name: "service_shared_metrics",
        run: service::ops::shared_metrics,
    },
    #[cfg(feature = "tower")]
    Scenario {
        name: "service_timeouts",
        run: service::ops::timeouts,
    },
    #[cfg(feature = "tower")]
    Scenario {
        name: "service_balance",
        run: service::ops::balance,
    },
    #[cfg(feature = "tower")]
    Scenario {
        name: "service_balance_c64",
        run: service::balance::balance_c64,
    },
    #[cfg(feature = "tower")]
    Scenario {
        name: "service_behind_nginx",
        run: service::proxy::behind_nginx,
    },
    #[cfg(feature = "tower")]
    Scenario {
        name: "service_proxy_protocol",
        run: service::proxy::proxy_protocol,
    },
    #[cfg(feature = "tower")]
    Scenario {
        name: "service_h2c",
        run: service::ops::h2c,
    },
    #[cfg(feature = "tower")]
    Scenario {
        name: "service_self_call",
        run: service::ops::self_call,
    },
    #[cfg(feature = "tower")]
    Scenario {
        name: "service_max_requests",
        run: service::ops::max_requests,
    },
];

fn main() {
    if let Some(status) = std::env::var(ROLE).ok().and_then(|r| logs::role_main(&r)) {
        // A scenario's server with the crate's log sink (its own logger): not this harness.
        std::process::exit(status);
    }
    log::set_logger(&LOGGER).expect("logger");
    log::set_max_level(log::LevelFilter::Info);
    if std::env::var(ROLE).as_deref() == Ok("usr2-master") {
        // Re-executed by a SIGUSR2 upgrade: be the new master, on the inherited listeners.
        std::env::remove_var(ROLE);
        std::process::exit(Supervisor::builder().workers(2).run(workers::app));
    }
    if std::env::var(ROLE).as_deref() == Ok(deploy::LINKED_MASTER) {
        // Started through a `current -> releases/N` link, and re-executed through it by SIGUSR2:
        // the role stays in the environment for the next master. Binds 127.0.0.1:0 at first;
        // after an upgrade, takes the inherited listeners instead (the address is not bound).
        std::process::exit(
            Supervisor::builder()
                .bind("127.0.0.1:0")
                .workers(2)
                .run(workers::app),
        );
    }
    if std::env::var(ROLE).as_deref() == Ok("usr2-hang") {
        // Re-executed by a SIGUSR2 upgrade: a new build that hangs before it serves, holding the
        // inherited listeners.
        loop {
            std::thread::sleep(Duration::from_secs(1));
        }
    }
    // Orphans of the forked trees (a new master after SIGUSR2, workers of a killed master) are
    // reparented to this process, so the test can reap them and check that none is left.
    // SAFETY: prctl(2) PR_SET_CHILD_SUBREAPER only sets a process attribute.
    unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    let filters: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let exact = std::env::args().any(|a| a == "--exact");
    let (mut passed, mut failed, mut skipped) = (0, 0, 0);
    for scenario in SCENARIOS {
        let name = scenario.name;
        let matches = |f: &String| {
            if exact {
                name == f.as_str()
            } else {
                name.contains(f.as_str())
            }
        };
        if !filters.is_empty() && !filters.iter().any(matches) {
            continue;
        }
        let started = Instant::now();
        let skips = tools::skips();
        let result = (scenario.run)().and_then(|()| no_children_left());
        match result {
            Ok(()) if tools::skips() > skips => {
                skipped += 1;
                println!("test {name} ... skipped");
            }
            Ok(()) => {
                passed += 1;
                println!(
                    "test {name} ... ok ({:.1} s)",
                    started.elapsed().as_secs_f64()
                );
            }
            Err(e) => {
                failed += 1;
                println!("test {name} ... FAILED: {e}");
            }
        }
    }
    println!("{passed} passed, {failed} failed, {skipped} skipped");
    if failed > 0 {
        std::process::exit(1);
    }
}

/// One line to stderr in one `write`: the two workers' `post_fork` lines, written at the same
/// moment to the log they share, must not interleave (`eprintln!` writes its pieces one by one).
fn hook_line(line: String) {
    use std::io::Write;
    let _ = std::io::stderr().write_all(format!("{line}\n").as_bytes());
}
