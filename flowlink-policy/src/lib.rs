//! FlowLink's decision engine: given a policy file's text and one MCP `tools/call`, say whether
//! the call is allowed, blocked, or must wait for a person — and why.
//!
//! This crate is pure: no I/O, no async runtime, no clock other than the rate limiter's. The
//! proxy reads policy files and passes their text to [`Policy::from_toml`]; the control plane
//! uses the same functions to validate, explain and test policies before pushing them.
//!
//! # Main types
//! - [`Policy`]: a loaded policy. [`Policy::decide`] returns a [`Decision`];
//!   [`Policy::explain`] returns an [`Explanation`] that walks every rule;
//!   [`Policy::is_hidden`] says whether a tool should be dropped from `tools/list`.
//! - [`RateLimiter`]: the live buckets of a policy's `[[rate_limits]]` (GCRA via `governor`).
//! - [`PolicyError`]: why a policy file was rejected, with 1-based line and column (and the
//!   layer, for layered policies).
//!
//! # Layers
//! The control plane keeps one policy per scope (the organisation, groups of devices selected
//! by a label, one service) and a proxy runs their combination: [`Policy::from_layers`] takes
//! `(name, text)` pairs, least specific first (org, then groups, then service):
//! - rules and rate limits of every layer are concatenated and evaluated together as usual
//!   (priority descending; at equal priority and action the less specific layer's rule first);
//! - a rule id or rate-limit id used in two layers is an error naming both layers;
//! - settings — `default_action`, `hide_blocked_tools`, each key of `[offline]` and of
//!   `[shield]` — come from the most specific layer that sets them (`[[shield.map]]` entries
//!   are concatenated);
//! - errors carry the layer's name plus the line and column in that layer's text.
//!
//! One layer gives exactly what [`Policy::from_toml`] gives; no layers give
//! [`Policy::builtin_default`].
//!
//! ```
//! use flowlink_policy::Policy;
//!
//! let org = "version = 1\ndefault_action = \"block\"\n\
//!            [[rules]]\nid = \"org-echo\"\ntool = \"echo\"\naction = \"allow\"\n";
//! let service = "version = 1\n[[rules]]\nid = \"gh-read\"\ntool = \"get_*\"\naction = \"allow\"\n";
//! let policy = Policy::from_layers(&[("org", org), ("service:github", service)])?;
//! assert_eq!(policy.rule_count(), 2);
//! assert_eq!(policy.default_action(), flowlink_policy::Action::Block);
//!
//! let clash = Policy::from_layers(&[("org", org), ("service:x", org)]).unwrap_err();
//! assert_eq!(clash.layer.as_deref(), Some("service:x"));
//! assert!(clash.message.contains("also used in layer `org`"));
//! # Ok::<(), flowlink_policy::PolicyError>(())
//! ```
//!
//! # Example
//! ```
//! use flowlink_policy::{Action, Labels, Policy, ToolCall};
//!
//! let policy = Policy::from_toml(r#"
//!     version = 1
//!     [[rules]]
//!     id = "no-env"
//!     tool = "get-env"
//!     action = "block"
//!     message = "environment variables may hold secrets; ask the user for the value instead"
//! "#)?;
//! let args = serde_json::json!({});
//! let labels = Labels::new();
//! let call = ToolCall { agent: "claude-code", service: "everything", tool: "get-env",
//!                       arguments: &args, labels: &labels };
//! let decision = policy.decide(&call);
//! assert_eq!(decision.action, Action::Block);
//! assert_eq!(decision.rule_id.as_deref(), Some("no-env"));
//! assert!(policy.is_hidden("claude-code", "everything", "get-env", &labels));
//! # Ok::<(), flowlink_policy::PolicyError>(())
//! ```
//!
//! # The policy file
//! The full reference, with every field, is `POLICY.md` next to this crate's `Cargo.toml`.
//! In short:
//! ```toml
//! version = 1                 # required; only 1 is accepted
//! default_action = "allow"    # for calls no rule matches (default allow)
//! hide_blocked_tools = true   # drop always-blocked tools from tools/list (default true)
//!
//! [offline]                   # when no person can be asked
//! approve = "block"           # allow | block (default block)
//! confirm = "block"           # allow | block (default block)
//! confirm_timeout_secs = 120  # wait for an in-editor confirmation (1..=86400, default 120)
//!
//! [[rules]]
//! id = "no-rm"                # required, unique
//! priority = 100              # default 0; higher is evaluated first
//! agent = "claude-code*"      # glob or list of globs; absent = any
//! service = "shell"           # glob or list
//! tool = ["run", "exec*"]     # glob or list
//! labels = { env = "prod*" }  # each label must be set and match its glob
//! action = "block"            # allow | block | approve | confirm
//! message = "use `trash` instead of rm -rf"
//!   [[rules.when]]            # all conditions must hold
//!   pointer = "/command"      # RFC 6901 pointer into the arguments ("" = all of them)
//!   regex = '(?i)\brm\s+-rf\b'
//!
//! [[rate_limits]]
//! id = "sum-burst"
//! scope = "tool"              # agent | service | tool: one bucket per agent / service / (service, tool)
//! tool = "get-sum"            # which calls it counts (agent / service / tool globs)
//! per_second = 5              # exactly one of per_second, per_minute, per_hour
//! burst = 5                   # default: the per-period count
//! ```
//! Condition tests (exactly one per `[[rules.when]]`): `glob`, `regex`, `equals`, `not_equals`,
//! `gt`, `gte`, `lt`, `lte`, `present`, `contains`, `one_of`. `glob`, `regex` and `contains`
//! test strings as they are, numbers and booleans as their JSON text, and arrays or objects by
//! any scalar inside them (at any depth). An absent argument fails every test but
//! `present = false`. `gt`/`lt`/... accept numbers and numeric strings.
//!
//! # Invariants
//! - Deciding never fails and never panics: every pattern is compiled and every pointer checked
//!   at load time, and arguments of any shape are handled.
//! - Evaluation order is total and documented: priority descending; among matching rules at the
//!   same highest priority, block > approve > confirm > allow; then file order.
//! - A condition on an absent argument is false (only `present = false` holds), so a rule that
//!   needs an argument never matches a call without it.
//! - Unknown fields, unknown actions, bad globs, bad regexes and bad pointers are load errors
//!   with a line and column, never silently ignored.
//! - Regexes are compiled with a size limit, so a hostile policy cannot exhaust memory.
//! - A tool is hidden only when it is blocked whatever its arguments are.
//! - Engine types do not derive `Serialize`: wire formats live in `flowlink-proto`.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod condition;
mod error;
mod explain;
mod index;
mod pattern;
mod policy;
mod rate;
mod raw;
pub mod redact;
pub mod secrets;
pub mod shield;

pub use error::PolicyError;
pub use explain::{Explanation, RuleTrace, TraceOutcome};
pub use policy::{
    Action, ApprovalSpec, CallFinding, DEFAULT_APPROVAL_TIMEOUT, Decision, Labels, Policy,
    SHIELD_RULE_ID, ShieldVerdict, ToolCall,
};
pub use rate::{RateLimited, RateLimiter, RateScope};
pub use secrets::SecretsPolicy;
