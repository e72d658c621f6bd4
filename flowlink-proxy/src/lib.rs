//! `flowlink-proxy`: the sidecar an editor launches instead of an MCP server.
//!
//! * [`relay`] — the stdio relay and the stages one message passes through.
//! * [`audit`] — the local audit store every tool call is committed to before it is acted on.
//! * [`link`] — enrolment and the link to the control plane: policy sync, audit shipping, approvals.
//! * [`install`] — wrapping (and unwrapping) the MCP servers of an editor's configuration.
//! * [`pins`] — tool pinning: a changed tool definition is quarantined until accepted.
//! * [`secrets`] — secrets from the control plane: opened in memory, injected into the server,
//!   placeholders replaced, every value redacted from what leaves the proxy.
#![forbid(unsafe_code)]

pub mod audit;
pub mod install;
pub mod link;
pub mod pins;
pub mod relay;
pub mod secrets;
pub mod vault;
