//! `flowlink-proxy`: the sidecar an editor launches instead of an MCP server.
//!
//! * [`relay`] — the stdio relay and the stages one message passes through.
//! * [`audit`] — the local audit store every tool call is committed to before it is acted on.
//! * [`install`] — wrapping (and unwrapping) the MCP servers of an editor's configuration.
//! * [`pins`] — tool pinning: a changed tool definition is quarantined until accepted.
#![forbid(unsafe_code)]

pub mod audit;
pub mod install;
pub mod pins;
pub mod relay;
