//! Handlers and routers, and the examples users copy.

mod example;
mod handlers;
mod router;
