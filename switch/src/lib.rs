//! The ISO 8583 switch: listeners, connection tasks, the authorization shard threads, the admin
//! endpoint and metrics. Decisions themselves live in `routing` (no I/O); the wire format in
//! `codec`. This crate owns tokio.
//!
//! Layout: [`server`] starts everything and drains it; [`connection`] is one task per client;
//! [`iso`] turns decoded messages into engine requests and answers back; [`shards`] runs the
//! single-writer shard threads; [`store`] loads the data files and recovers the journals; [`pg`]
//! is the scale-out store in PostgreSQL, and [`backend`] picks between the two; [`admin`] and
//! [`metrics`] are for operators; [`logging`] builds the log, with the limit that keeps card
//! numbers out of it.

#![forbid(unsafe_code)]

pub mod admin;
pub mod backend;
pub mod config;
pub mod connection;
pub mod iso;
pub mod journal;
pub mod logging;
pub mod metrics;
pub mod pg;
pub mod proxy;
pub mod server;
pub mod shards;
pub mod store;

pub use config::Config;
pub use server::{start, Running};
