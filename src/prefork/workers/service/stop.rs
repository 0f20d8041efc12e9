//! The app's view of its worker's graceful stop in the tower mode: [`stopping`], a future that
//! resolves when the stop begins, so that long-lived work (a WebSocket, a server-sent event
//! stream, a long poll) can end cleanly before the graceful timeout closes its socket.

use std::future::Future;
use std::sync::OnceLock;

use tokio::sync::watch;

/// This process's stop flag: `true` from the first moment of its worker's graceful stop. A
/// process-wide value (one worker per process): set by the worker, read by any task.
static STOP: OnceLock<watch::Sender<bool>> = OnceLock::new();

fn flag() -> &'static watch::Sender<bool> {
    STOP.get_or_init(|| watch::Sender::new(false))
}

/// The worker's graceful stop begins: every [`stopping`] future resolves.
pub(super) fn begin() {
    flag().send_replace(true);
}

/// A future that resolves when this worker process's graceful stop begins (a reload by SIGHUP,
/// SIGTERM, a recycle by `max_requests`, SIGTTOU), in a worker of
/// [`Supervisor::serve_service`](crate::prefork::Supervisor::serve_service) (feature `tower`);
/// at once if it has begun. Elsewhere (an app under plain `axum::serve`, the master, a test) it
/// never resolves.
///
/// From the stop's first moment the worker accepts no connection, and the requests under way
/// and the upgraded connections (WebSockets) keep running until the
/// [`graceful_timeout`](crate::prefork::SupervisorBuilder::graceful_timeout) (90 % of it), when
/// the runtime is shut down and their sockets closed without a word. Work that lives longer
/// than a request waits on this future beside its own, to say goodbye in its protocol first: a
/// WebSocket sends a Close frame with code 1001 ("going away": the client reconnects, to a
/// sibling or the new generation) and ends; its connection then counts no more, and the worker
/// may exit before the timeout.
///
/// The future is `Send + 'static` (take it in a handler, move it into a spawned task). The
/// choice of a free function over a request extension: it reaches every task of the process,
/// and the same router runs unchanged outside the supervisor.
///
/// A WebSocket echo with axum (`templates/examples/axum_bulkhead.rs`):
///
/// ```ignore
/// async fn ws(upgrade: WebSocketUpgrade) -> Response {
///     upgrade.on_upgrade(|mut socket: WebSocket| async move {
///         let mut stop = std::pin::pin!(prefork_pool::prefork::stopping());
///         loop {
///             tokio::select! {
///                 msg = socket.recv() => match msg {
///                     Some(Ok(Message::Text(t))) => {
///                         if socket.send(Message::Text(t)).await.is_err() { break }
///                     }
///                     Some(Ok(_)) => {}
///                     _ => break,
///                 },
///                 () = &mut stop => {
///                     let bye = CloseFrame { code: close_code::AWAY, reason: "server restarting".into() };
///                     let _ = socket.send(Message::Close(Some(bye))).await;
///                     break;
///                 }
///             }
///         }
///     })
/// }
/// ```
///
/// The same without axum: a stream of server-sent events that says goodbye (the client's
/// `EventSource` reconnects):
///
/// ```
/// async fn events(out: tokio::sync::mpsc::Sender<String>) {
///     prefork_pool::prefork::stopping().await;
///     let _ = out.send("event: bye\ndata: restarting\n\n".to_string()).await;
/// }
/// ```
#[cfg_attr(docsrs, doc(cfg(feature = "tower")))]
pub fn stopping() -> impl Future<Output = ()> + Send + 'static {
    let mut rx = flag().subscribe();
    async move {
        // The sender is a static: it is never dropped, so this waits until the flag is set.
        if rx.wait_for(|s| *s).await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stopping_resolves_once_the_stop_begins_and_at_once_after() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let early = stopping();
            let pending = tokio::time::timeout(std::time::Duration::from_millis(50), early).await;
            assert!(pending.is_err(), "resolved before the stop");
            let waiting = tokio::spawn(stopping());
            tokio::task::yield_now().await;
            begin();
            tokio::time::timeout(std::time::Duration::from_secs(5), waiting)
                .await
                .expect("a waiting future resolves at the stop")
                .unwrap();
            tokio::time::timeout(std::time::Duration::from_secs(5), stopping())
                .await
                .expect("a new one resolves at once after it");
        });
    }
}
