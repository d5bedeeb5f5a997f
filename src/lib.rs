//! invalidator: a cache-invalidation push server.
pub mod audit;
pub mod auth;
pub mod config;
pub mod error;
pub mod event;
pub mod fanout;
pub mod index;
pub mod metrics;
pub mod pattern;
pub mod time;
pub mod ws;
