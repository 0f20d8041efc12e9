//! The process layer's logging: SIGUSR1 (the master reopens the log sink's files and forwards
//! the signal to every worker, which reopens its own), and the process titles
//! (`prefork: master [NAME]`, `prefork: worker N [NAME]`). The sink's settings on the builder are
//! in `log_settings.rs`.

use std::path::Path;
use std::sync::OnceLock;

use crate::prefork::children::Child;
use crate::prefork::os::fork;

/// The `NAME` of the titles, set in the master before the first fork (the workers inherit it).
static NAME: OnceLock<String> = OnceLock::new();

/// The program's file name (`myapp` for `/usr/bin/myapp`).
fn program_name() -> String {
    std::env::args_os()
        .next()
        .and_then(|a| {
            Path::new(&a)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
        })
        .unwrap_or_else(|| "prefork".into())
}

/// A process title: `prefork: {role} [NAME]`.
pub(crate) fn title(role: &str) -> String {
    let name = NAME.get().cloned().unwrap_or_else(program_name);
    format!("prefork: {role} [{name}]")
}

/// In the master, at start: remembers `proc_name` and names the master.
pub(crate) fn name_master(proc_name: Option<&str>) {
    let _ = NAME.set(proc_name.map_or_else(program_name, str::to_owned));
    fork::set_process_name(&title("master"));
}

/// In a worker, after the fork: names it.
pub(crate) fn name_worker(number: u64) {
    fork::set_process_name(&title(&format!("worker {number}")));
}

/// SIGUSR1 in the master: write out and reopen its own files, log what was reopened, forward the
/// signal to every worker (each reopens its own, see `worker.rs`), run the `on_reopen_logs` hook.
pub(crate) fn on_usr1(children: &[Child], hook: Option<&mut Box<dyn FnMut()>>) {
    let what = crate::log_sink::reopen();
    if crate::log_sink::active() {
        for c in children {
            c.forward(libc::SIGUSR1);
        }
        log::info!(
            "SIGUSR1: {what}; forwarded to {} worker(s), which reopen their own",
            children.len()
        );
    } else {
        // Workers without the sink ignore SIGUSR1: not forwarded.
        log::info!("SIGUSR1: {what}");
    }
    if let Some(f) = hook {
        f();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn titles_name_the_role_and_the_program() {
        let t = title("worker 3");
        assert!(t.starts_with("prefork: worker 3 ["), "{t}");
        assert!(t.ends_with(']'), "{t}");
    }
}
