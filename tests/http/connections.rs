//! Connections: accepting, reading, limits, streaming, closing, draining.

mod accept_errors;
mod bursts;
mod drain_keepalive;
mod idle_connections;
mod limits;
mod protocol;
mod shutdown;
mod slow_clients;
mod slow_reader;
mod streaming;
mod strict_input;
mod uploads;
