//! Load-test server: the same Router as `axum_plain`, under the pre-fork supervisor
//! (`Supervisor::serve_service`): `PROCS` worker processes (default 1), each a runtime of
//! `WORKERS` threads (default 2), `127.0.0.1:$PORT`, no access log. SIGTERM drains and exits 0.

use prefork_pool::prefork::{ServiceConfig, Supervisor};
use prefork_pool_benches::env_or;

fn main() {
    let port: u16 = env_or("PORT", 8000);
    let status = Supervisor::builder()
        .bind(format!("127.0.0.1:{port}"))
        .workers(env_or("PROCS", 1))
        .build()
        .unwrap_or_else(|e| {
            eprintln!("cannot start: {e}");
            std::process::exit(1);
        })
        .serve_service(
            ServiceConfig::new()
                .threads(env_or("WORKERS", 2))
                .access_log(false),
            || Ok::<_, String>(prefork_pool_benches::axum_app()),
        );
    std::process::exit(status);
}
