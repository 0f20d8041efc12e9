//! The operator's side: proxies, metrics, health, settings, TLS.

mod behind_proxy;
mod config;
mod health;
mod metrics;
mod nginx;
mod settings;
mod tls;
