//! Connections and threads: the reactor, the acceptor and its gate, the connection lane over epoll, the connection's state machine and its body, streams and spooled bodies, and the ports between them (the hand-off and the pool's dispatch).

pub(super) mod acceptor;
pub(super) mod conn;
pub(super) mod dispatch;
pub(super) mod epoll;
pub(super) mod handoff;
pub(super) mod incoming;
pub(super) mod io;
pub(super) mod lane;
pub(super) mod mailbox;
pub(super) mod reactor;
pub(super) mod spool;
pub(super) mod stream;
#[cfg(feature = "tls")]
pub(super) mod tls_stream;
