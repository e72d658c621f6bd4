//! The audit record schema, version 1.
//!
//! One [`ToolCallRecord`] per `tools/call` the proxy saw, written before the proxy acts on the call
//! and completed with its [`Outcome`] afterwards; one [`SessionRecord`] per relay session. These are
//! what `flowlink-proxy audit --json` prints (one JSON object per line) and what a proxy will ship to
//! the control plane, so fields are only ever added.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The schema number written in every record.
pub const SCHEMA_VERSION: u32 = 1;

/// What FlowLink did with a tool call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Forwarded to the MCP server.
    Allow,
    /// Refused by a rule; the agent got the rule's message.
    Block,
    /// Refused by a rate limit.
    RateLimited,
    /// A person was asked (approval or confirmation) and the answer is not in yet.
    Pending,
    /// A person allowed it (in the editor or as approver).
    Approved,
    /// A person refused it.
    Denied,
    /// Nobody answered in time: not run ("silence is not consent"), recorded apart from a denial.
    TimedOut,
    /// The call could not be decided (policy unavailable, malformed arguments); not forwarded.
    Error,
}

impl Verdict {
    /// The snake_case name used on disk and on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Allow => "allow",
            Verdict::Block => "block",
            Verdict::RateLimited => "rate_limited",
            Verdict::Pending => "pending",
            Verdict::Approved => "approved",
            Verdict::Denied => "denied",
            Verdict::TimedOut => "timed_out",
            Verdict::Error => "error",
        }
    }
    /// Parses [`Verdict::as_str`] output.
    pub fn parse(s: &str) -> Option<Verdict> {
        Some(match s {
            "allow" => Verdict::Allow,
            "block" => Verdict::Block,
            "rate_limited" => Verdict::RateLimited,
            "pending" => Verdict::Pending,
            "approved" => Verdict::Approved,
            "denied" => Verdict::Denied,
            "timed_out" => Verdict::TimedOut,
            "error" => Verdict::Error,
            _ => return None,
        })
    }
    /// Whether the call goes on to the MCP server.
    pub fn forwards(self) -> bool {
        matches!(self, Verdict::Allow | Verdict::Approved)
    }
}

/// How a tool call ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Not finished (or the proxy stopped before it finished).
    Pending,
    /// The server returned a result without `isError`.
    Ok,
    /// The server returned a result with `isError: true`.
    ToolError,
    /// The server answered with a JSON-RPC error.
    ProtocolError,
    /// FlowLink did not forward the call (see the verdict).
    NotForwarded,
    /// The client cancelled the call.
    Cancelled,
    /// The MCP server exited before answering.
    ServerExited,
    /// The client went away before the answer came.
    ClientGone,
}

impl Outcome {
    /// The snake_case name used on disk and on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Pending => "pending",
            Outcome::Ok => "ok",
            Outcome::ToolError => "tool_error",
            Outcome::ProtocolError => "protocol_error",
            Outcome::NotForwarded => "not_forwarded",
            Outcome::Cancelled => "cancelled",
            Outcome::ServerExited => "server_exited",
            Outcome::ClientGone => "client_gone",
        }
    }
    /// Parses [`Outcome::as_str`] output.
    pub fn parse(s: &str) -> Option<Outcome> {
        Some(match s {
            "pending" => Outcome::Pending,
            "ok" => Outcome::Ok,
            "tool_error" => Outcome::ToolError,
            "protocol_error" => Outcome::ProtocolError,
            "not_forwarded" => Outcome::NotForwarded,
            "cancelled" => Outcome::Cancelled,
            "server_exited" => Outcome::ServerExited,
            "client_gone" => Outcome::ClientGone,
            _ => return None,
        })
    }
}

/// One tool call: who asked for what, what FlowLink decided and how it ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolCallRecord {
    /// Always [`SCHEMA_VERSION`] when written by this version.
    pub schema: u32,
    /// UUIDv7: sorts by time.
    pub id: String,
    /// The relay session ([`SessionRecord::id`]).
    pub session_id: String,
    /// When the proxy read the call, microseconds since the Unix epoch.
    pub received_at_us: i64,
    /// When the verdict was reached.
    pub decided_at_us: i64,
    /// The MCP client (`clientInfo.name`), `unknown` before `initialize`.
    pub agent: String,
    /// The service name (`--name`).
    pub service: String,
    /// The tool name.
    pub tool: String,
    /// The call's arguments as the agent sent them.
    pub arguments: Value,
    /// What FlowLink did.
    pub verdict: Verdict,
    /// The action of the rule that decided (`allow`, `block`, `approve`, `confirm`), or the default.
    pub action: String,
    /// The id of the deciding rule, if a rule (not the default action) decided.
    pub rule_id: Option<String>,
    /// Why, in words.
    pub reason: String,
    /// How the call ended.
    pub outcome: Outcome,
    /// When the outcome was known.
    pub finished_at_us: Option<i64>,
    /// From receipt to outcome, in microseconds.
    pub duration_us: Option<i64>,
    /// The JSON-RPC error message or the tool error text, shortened.
    pub error: Option<String>,
    /// The shield's risk for the call, 0–100 (absent in records written before the shield).
    #[serde(default)]
    pub risk: Option<u8>,
    /// What the shield found in the arguments, highest risk first.
    #[serde(default)]
    pub findings: Vec<FindingRecord>,
    /// Which policy decided the call (absent in records written before the control plane link).
    #[serde(default)]
    pub policy_source: Option<PolicySource>,
    /// The id of the signed bundle that decided (its payload's SHA-256), when the policy came
    /// from the control plane.
    #[serde(default)]
    pub policy_bundle: Option<String>,
}

/// Where the policy that decided a call came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PolicySource {
    /// The control plane's signed bundle, with the link to the control plane up.
    Bundle,
    /// The cached signed bundle, while the control plane could not be reached (or the device
    /// was revoked): decisions were made offline.
    BundleOffline,
    /// A local policy file (`--policy`).
    File,
    /// The built-in default policy.
    Builtin,
    /// An enrolled device that has not received its policy yet: every call is refused.
    Missing,
}

impl PolicySource {
    /// The snake_case name used on disk and on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            PolicySource::Bundle => "bundle",
            PolicySource::BundleOffline => "bundle_offline",
            PolicySource::File => "file",
            PolicySource::Builtin => "builtin",
            PolicySource::Missing => "missing",
        }
    }
    /// Parses [`PolicySource::as_str`] output.
    pub fn parse(s: &str) -> Option<PolicySource> {
        Some(match s {
            "bundle" => PolicySource::Bundle,
            "bundle_offline" => PolicySource::BundleOffline,
            "file" => PolicySource::File,
            "builtin" => PolicySource::Builtin,
            "missing" => PolicySource::Missing,
            _ => return None,
        })
    }
}

/// The audit outbox was full and its `drop_oldest` rule threw events away before they reached
/// the control plane: shipped as an audit event of kind `outbox_overflow`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutboxOverflowRecord {
    /// Always [`SCHEMA_VERSION`] when written by this version.
    pub schema: u32,
    /// UUIDv7 of this event.
    pub id: String,
    /// How many events were dropped since the previous overflow record.
    pub dropped: u64,
    /// The outbox bound (`--outbox-max-events`).
    pub max_events: u64,
    /// When the first of them was dropped, Unix µs.
    pub first_dropped_at_us: i64,
    /// When this record was written, Unix µs.
    pub recorded_at_us: i64,
    /// What happened, in words.
    pub message: String,
}

/// One shield finding as recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FindingRecord {
    /// Dotted id (`filesystem.delete_home`).
    pub id: String,
    /// Category (`filesystem`, `git`, …).
    pub category: String,
    /// 0–100.
    pub risk: u8,
    /// JSON pointer of the argument it was found in.
    pub pointer: String,
    /// What it would do and what to do instead.
    pub explanation: String,
}

/// One relay session: a proxy process and the MCP server it wraps, across restarts of that server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionRecord {
    /// Always [`SCHEMA_VERSION`] when written by this version.
    pub schema: u32,
    /// UUIDv7.
    pub id: String,
    /// The service name (`--name`).
    pub service: String,
    /// The wrapped command and its arguments.
    pub command: Vec<String>,
    /// Start, microseconds since the Unix epoch.
    pub started_at_us: i64,
    /// End, if the session ended cleanly.
    pub ended_at_us: Option<i64>,
    /// `clientInfo.name`.
    pub client_name: Option<String>,
    /// `clientInfo.version`.
    pub client_version: Option<String>,
    /// `serverInfo.name`.
    pub server_name: Option<String>,
    /// `serverInfo.version`.
    pub server_version: Option<String>,
    /// The negotiated protocol revision.
    pub protocol_version: Option<String>,
    /// The client's capabilities.
    pub client_capabilities: Value,
    /// The server's capabilities.
    pub server_capabilities: Value,
    /// How many times the MCP server was restarted after exiting.
    pub restarts: u32,
    /// The MCP server's last exit, in words (`exit status 1`, `signal 9`).
    pub last_exit: Option<String>,
}
