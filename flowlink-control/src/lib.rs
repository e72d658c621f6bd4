//! `flowlink-control`: the control plane's library (the binary in `main.rs` only parses flags).
//!
//! - [`config`]: settings from file, environment and flags, documented in one table.
//! - [`store`]: SQLite or PostgreSQL behind one [`store::Store`], migrations per engine.
//! - [`auth`]: roles and permissions, passwords, TOTP, random secrets.
//! - [`api`]: the Axum router; every route's access rule is in one table.
//! - [`ui`]: the web UI's server-rendered pages, in a table of the same kind.
//! - [`approvals`]: the approval queue's behaviour (filing, votes, the clock, telling proxies).
//! - [`link`]: connected proxies and delivery of messages to them.
//! - [`server`]: listening (HTTP or HTTPS), first-run token, graceful shutdown.
//! - [`cli`]: clients of the API run on an admin's machine (`flowlink-control secrets …`).

#![forbid(unsafe_code)]

pub mod api;
pub mod approvals;
pub mod auth;
pub mod cli;
pub mod config;
pub mod link;
pub mod metrics;
pub mod server;
pub mod store;
pub mod throttle;
pub mod ui;
