//! `flowlink-proxy`: the sidecar an editor launches instead of an MCP server.
#![forbid(unsafe_code)]

pub mod audit;
pub mod install;
