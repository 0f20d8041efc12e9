//! Calls back into the server: the Loopback, TCP self-calls, the seed's scenario, stuck handlers.

mod pool_errors;
mod seed;
mod self_call;
mod self_call_lookup;
mod stuck_budget;
