//! Load-test server: the axum template's `GET /` Router (`{"worker_pid": N}`) on plain
//! `axum::serve`, a tokio runtime of `WORKERS` threads (default 2), `127.0.0.1:$PORT`: the
//! baseline of `axum_supervised` (issue 20: the same Router under the supervisor costs at most
//! 1.15× this per request). Stops on SIGTERM.

use prefork_pool_benches::env_or;

fn main() {
    let port: u16 = env_or("PORT", 8000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(env_or("WORKERS", 2))
        .enable_all()
        .build()
        .expect("a tokio runtime");
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .unwrap_or_else(|e| {
                eprintln!("cannot start: {e}");
                std::process::exit(1);
            });
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        axum::serve(listener, prefork_pool_benches::axum_app())
            .with_graceful_shutdown(async move {
                term.recv().await;
            })
            .await
            .expect("axum::serve");
    });
}
