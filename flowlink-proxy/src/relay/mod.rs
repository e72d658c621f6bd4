//! The relay: an editor on one side, the wrapped MCP server on the other.
//!
//! One message travels through named stages:
//!
//! 1. **frame** ([`framing`]): bytes → lines, with a size bound.
//! 2. **classify** ([`flowlink_proto::jsonrpc::Frame`]): request, notification or response; only
//!    the members a decision needs are decoded.
//! 3. **decide** ([`decide`]): `tools/call` requests meet the rate limits and the policy.
//! 4. **record** ([`crate::audit`]): the call is committed to the audit store before it is acted on.
//! 5. **forward** ([`router`]): ids renumbered so that the proxy's own requests never collide
//!    with either peer's, cancellations translated, responses mapped back.
//!
//! All session state lives in one task, the [`router`], which receives events from the reader
//! tasks, the child supervisor, timers and the policy watcher; writers are separate tasks fed
//! by unbounded queues, so a slow peer never stops the other direction.

pub mod child;
pub mod decide;
pub mod framing;
mod policy_watch;
mod router;
pub mod stdio;

use std::path::PathBuf;
use std::time::Duration;

use flowlink_policy::{Labels, Policy};

use crate::audit::AuditStore;

pub use policy_watch::load_policy_file;
pub use router::run;

/// Everything one relay session needs.
pub struct RelayConfig {
    /// The service name (`--name`), used by rules and records.
    pub service: String,
    /// The MCP server command and its arguments.
    pub command: Vec<String>,
    /// The policy file to watch, or `None` for the built-in default.
    pub policy_file: Option<PathBuf>,
    /// The policy loaded at start (from `policy_file`, or the built-in default).
    pub initial_policy: Policy,
    /// Device and user labels that rules can match.
    pub labels: Labels,
    /// Longest accepted line, in bytes.
    pub max_message_bytes: usize,
    /// How long the server gets to exit after stdin closes, and again after SIGTERM.
    pub shutdown_grace: Duration,
    /// How many restarts of a crashed server are allowed within one minute.
    pub max_restarts_per_minute: u32,
    /// How often the policy file is checked for changes.
    pub policy_poll_interval: Duration,
    /// The local audit store.
    pub store: AuditStore,
    /// Tool pins; `None` turns pinning off.
    pub pins: Option<crate::pins::PinStore>,
}

impl RelayConfig {
    /// The default bound on one message: 64 MiB.
    pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;
}
