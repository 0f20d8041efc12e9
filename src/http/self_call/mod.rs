//! Requests that come back into their own server: the in-process `Loopback`, the TCP and Unix self-call detection (the owner lookup and the peer socket's owner), and the spare threads that serve them.

pub(crate) mod calls;
pub(super) mod owner_lookup;
// wired into self_call.rs by issue 13 part 4
pub(super) mod loopback;
pub(super) mod peer_owner;
pub(super) mod spare;
