//! Connections and threads: the reactor, the acceptor and its gate, the connection lane over epoll, the connection's state machine and its body, streams and spooled bodies, the ports between them (the hand-off), where a complete request goes (the dispatch) and the answer's way back onto its connection.

pub(super) mod acceptor;
pub(super) mod answer;
pub(super) mod conn;
pub(super) mod dispatch;
pub(super) mod epoll;
pub(super) mod handoff;
pub(super) mod incoming;
pub(super) mod io;
pub(super) mod lane;
pub(super) mod mailbox;
pub(super) mod reactor;
pub(super) mod ready;
pub(super) mod spool;
pub(super) mod stream;
#[cfg(feature = "tls")]
pub(super) mod tls_stream;
