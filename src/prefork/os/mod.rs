//! The system calls of the master: fork, signals, the open-files limit, systemd's notify socket, the listeners (and socket activation), the USR2 binary upgrade, and the logs' signal and process titles.

pub(super) mod fork;
pub(super) mod listeners;
pub(super) mod logs;
pub(super) mod notify;
pub(super) mod privileges;
pub(super) mod rlimit;
pub(super) mod signals;
pub(super) mod upgrade;
