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

pub mod approval;
pub mod child;
pub mod decide;
pub mod framing;
mod policy_watch;
mod router;
pub mod stdio;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use flowlink_policy::{Labels, Policy};
use tokio::sync::mpsc::UnboundedReceiver;

use crate::audit::AuditStore;

pub use child::ServerStatus;
pub use decide::{PolicyOrigin, PolicyState};
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
    /// The policy loaded at start (from `policy_file`, a cached bundle, or the built-in default).
    pub initial_policy: Policy,
    /// Where `initial_policy` came from.
    pub policy_source: PolicyOrigin,
    /// Policies pushed by the control plane's link, verified and compiled: each replaces the
    /// one in force, like an edited policy file.
    pub policy_feed: Option<UnboundedReceiver<Arc<PolicyState>>>,
    /// The wrapped server's health, shared with the link's heartbeats.
    pub server_status: ServerStatus,
    /// The link to the control plane, when the device is enrolled (approvals go through it).
    pub link: Option<crate::link::LinkHandle>,
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
    /// How long a call waiting for an approver is held when the client gave no progress token
    /// (then the agent is told to issue the identical call again once approved).
    pub approval_hold: Duration,
    /// The local audit store.
    pub store: AuditStore,
    /// Tool pins; `None` turns pinning off.
    pub pins: Option<crate::pins::PinStore>,
    /// The device's secrets (enrolled devices); `None` for a standalone proxy, which can use
    /// only Vault entries with a credential from its environment.
    pub secrets: Option<Arc<crate::secrets::SecretsHub>>,
    /// How long a Vault read at server start may take.
    pub secrets_wait: Duration,
}

impl RelayConfig {
    /// The default bound on one message: 64 MiB.
    pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;
}
