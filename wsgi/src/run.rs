//! `serve`: thread mode (one process: the server's pool threads run the app) or process mode (the
//! pre-fork supervisor; the app is loaded in each worker after its fork, or once before with
//! `--preload`).

use std::sync::Arc;

use prefork_pool::http::{HttpRequest, HttpResponse, Server, ServerBuilder};
use prefork_pool::prefork::{Listener, Supervisor};
use prefork_pool::Context;
use pyo3::exceptions::{PyOSError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::app::{traceback, WsgiApp};
use crate::gil::{self, ForkBrackets};
use crate::logger;
use crate::options::{Bind, Options};

/// The Unix socket's permission bits for `-b unix:PATH`.
const UNIX_MODE: u32 = 0o660;

/// The settings every server (thread mode's, or each worker process's) shares.
fn configure(b: ServerBuilder, o: &Options, thread_mode: bool) -> ServerBuilder {
    let threads = o.threads;
    let deadline = o.deadline();
    let (max_requests, jitter) = (o.max_requests, o.max_requests_jitter);
    let mut b = b
        .pool(move |p| {
            let p = p
                .name("wsgi")
                .workers(threads)
                .deadline(deadline)
                .on_worker_start(|_| gil::attach_thread())
                .on_worker_exit(|_| gil::detach_thread());
            // Thread mode: gunicorn's --max-requests recycles the one process's threads (each
            // after n requests); process mode recycles the processes (the supervisor).
            if thread_mode && max_requests > 0 {
                p.max_requests(max_requests).max_requests_jitter(jitter)
            } else {
                p
            }
        })
        // A view that calls its own server waits on a spare thread's answer: as many spare
        // threads as handler threads.
        .max_spare(threads)
        // REMOTE_PORT, and SERVER_NAME/SERVER_PORT when a request has no Host.
        .tcp_ends(true)
        .keepalive_timeout(o.keepalive())
        .limit_request_line(o.limit_request_line)
        .limit_request_fields(o.limit_request_fields)
        .limit_request_field_size(o.limit_request_field_size)
        .limit_body_bytes(o.limit_request_body)
        .forwarded_allow_ips(o.forwarded_allow_ips.iter())
        .access_log(false);
    // The format only with an access log: setting one turns the crate's access log on, and each
    // request's line would be rendered (then dropped by the logger) with nowhere to go.
    if o.accesslog.is_some() {
        if let Some(f) = &o.access_log_format {
            b = b.access_log_format(f.clone());
        }
        b = b.access_log(true);
    }
    b
}

fn describe(l: &Listener) -> String {
    match l {
        Listener::Tcp(t) => t
            .local_addr()
            .map_or_else(|_| "?".to_string(), |a| format!("http://{a}")),
        Listener::Unix(u) => u
            .local_addr()
            .ok()
            .and_then(|a| a.as_pathname().map(|p| format!("unix:{}", p.display())))
            .unwrap_or_else(|| "unix:?".to_string()),
    }
}

/// Serves until SIGTERM/SIGINT (thread mode) or until the master stops (process mode); returns
/// the exit status. `loader()` returns the WSGI app (it raises on an import error, having
/// printed the traceback); `base` is what every environ starts from.
#[pyfunction]
pub fn serve(
    py: Python<'_>,
    options: Options,
    loader: Py<PyAny>,
    base: Py<PyDict>,
) -> PyResult<i32> {
    logger::install(
        &options.loglevel,
        &options.errorlog,
        options.accesslog.as_deref(),
        options.threads,
    )
    .map_err(|e| PyOSError::new_err(format!("cannot open the log file: {e}")))?;
    if options.workers <= 1 {
        serve_threads(py, options, loader, base)
    } else {
        Ok(serve_processes(py, options, loader, base))
    }
}

fn serve_threads(py: Python<'_>, o: Options, loader: Py<PyAny>, base: Py<PyDict>) -> PyResult<i32> {
    let app = loader.call0(py)?;
    let wsgi = Arc::new(WsgiApp::new(
        py,
        app,
        base,
        o.default_server(),
        o.script_name.clone(),
    )?);
    let status = py.allow_threads(move || {
        let mut b = configure(Server::builder(), &o, true).backlog(o.backlog);
        for bind in o.binds() {
            b = match bind {
                Bind::Tcp(addr) => b.bind(addr),
                Bind::Unix(path) => b.bind_unix(path, UNIX_MODE),
            };
        }
        let handler =
            move |req: HttpRequest, ctx: &Context| -> HttpResponse { wsgi.handle(req, ctx) };
        let server = match b.serve(handler) {
            Ok(s) => s,
            Err(e) => {
                log::error!("cannot start: {e}");
                return 1;
            }
        };
        let mut at: Vec<String> = server
            .local_addrs()
            .iter()
            .map(|a| format!("http://{a}"))
            .collect();
        at.extend(
            server
                .unix_paths()
                .iter()
                .map(|p| format!("unix:{}", p.display())),
        );
        log::info!(
            "Listening at: {} ({}), thread mode: 1 process, {} thread(s)",
            at.join(", "),
            std::process::id(),
            o.threads
        );
        let report = match server.serve_until_signal(o.graceful()) {
            Ok(r) => r,
            Err(e) => {
                log::error!("cannot wait for signals: {e}");
                server.shutdown(o.graceful())
            }
        };
        gil::stop_detaching();
        log::info!("Shutting down: {report:?}");
        if report.threads_left_running > 0 {
            log::warn!(
                "{} Python thread(s) are still running a request past its deadline; a Python \
                 thread cannot be killed: exiting without waiting for them",
                report.threads_left_running
            );
            log::logger().flush();
            // SAFETY: _exit(2) ends the process now, without finalizing the interpreter under
            // threads that still run Python code (which would hang or crash them).
            unsafe { libc::_exit(0) };
        }
        0
    });
    Ok(status)
}

fn serve_processes(py: Python<'_>, o: Options, loader: Py<PyAny>, base: Py<PyDict>) -> i32 {
    // The master holds no GIL while it runs: each fork takes it (ForkBrackets), each worker's
    // threads take it per request.
    let status = py.allow_threads(move || {
        let brackets = ForkBrackets::new();
        let mut sb = Supervisor::builder()
            .workers(o.workers)
            .backlog(o.backlog)
            .graceful_timeout(o.graceful())
            .max_requests(o.max_requests)
            .max_requests_jitter(o.max_requests_jitter)
            .preload(o.preload_app)
            .pre_fork(brackets.before())
            .post_fork_parent(brackets.after_in_parent())
            .post_fork(brackets.after_in_child());
        if let Some(p) = &o.pidfile {
            sb = sb.pidfile(p);
        }
        for bind in o.binds() {
            sb = match bind {
                Bind::Tcp(addr) => sb.bind(addr),
                Bind::Unix(path) => sb.bind_unix(path, UNIX_MODE),
            };
        }
        let supervisor = match sb.build() {
            Ok(s) => s,
            Err(e) => {
                log::error!("cannot start: {e}");
                return 1;
            }
        };
        let at: Vec<String> = supervisor.listeners().iter().map(describe).collect();
        log::info!(
            "Listening at: {} ({}), process mode: {} worker processes, {} thread(s) each",
            at.join(", "),
            std::process::id(),
            o.workers,
            o.threads
        );
        let server_cfg = o.clone();
        let server = o.default_server();
        let script_name = o.script_name.clone();
        supervisor.serve_http(
            move |b| configure(b, &server_cfg, false),
            move || {
                Python::with_gil(|py| {
                    let app = loader.call0(py).map_err(|e| {
                        let text = e
                            .value(py)
                            .str()
                            .map_or_else(|_| e.to_string(), |s| s.to_string());
                        if !e.is_instance_of::<PyValueError>(py) {
                            // The loader prints the traceback of an import error itself.
                            eprintln!("{}", traceback(py, &e).trim_end());
                        }
                        format!("the app failed to load: {text}")
                    })?;
                    WsgiApp::new(
                        py,
                        app,
                        base.clone_ref(py),
                        server.clone(),
                        script_name.clone(),
                    )
                    .map_err(|e| e.to_string())
                })
                .map(|w| {
                    let w = Arc::new(w);
                    move |req: HttpRequest, ctx: &Context| -> HttpResponse { w.handle(req, ctx) }
                })
            },
        )
    });
    gil::stop_detaching();
    status
}
