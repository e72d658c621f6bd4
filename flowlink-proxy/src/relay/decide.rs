//! Stage 3, decide: what happens to one `tools/call`, given the policy in force.
//!
//! Pure apart from the rate limiter's clock: the router turns a [`Plan`] into messages and audit
//! records. Fail closed: arguments that cannot be read are refused, never forwarded.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use flowlink_policy::{Action, Labels, Policy, RateLimiter, ToolCall};
use flowlink_proto::audit::{FindingRecord, PolicySource, Verdict};
use serde_json::{Value, json};

/// The policy in force and the rate limiter built from it (rebuilt on every reload).
#[derive(Debug)]
pub struct PolicyState {
    /// The parsed policy.
    pub policy: Policy,
    /// Its rate limits.
    pub limiter: RateLimiter,
    /// Where it came from (a path or `built-in default`), for messages.
    pub origin: String,
    /// Where it came from, for audit records.
    pub source: PolicyOrigin,
}

/// Where the policy in force came from.
#[derive(Debug, Clone)]
pub enum PolicyOrigin {
    /// A local policy file.
    File,
    /// The built-in default.
    Builtin,
    /// A signed bundle from the control plane.
    Bundle {
        /// The bundle's id (SHA-256 of its payload).
        id: String,
        /// Whether the link to the control plane is up right now (shared with the link): calls
        /// decided while it is down are recorded as decided offline.
        online: Arc<AtomicBool>,
    },
    /// An enrolled device with no policy from its control plane yet: everything is refused.
    Missing,
}

impl PolicyState {
    /// Builds the state for a freshly loaded policy.
    pub fn new(policy: Policy, origin: String, source: PolicyOrigin) -> PolicyState {
        let limiter = RateLimiter::new(&policy);
        PolicyState {
            policy,
            limiter,
            origin,
            source,
        }
    }

    /// What an audit record says about the policy that decides now.
    pub fn record_source(&self) -> (PolicySource, Option<String>) {
        match &self.source {
            PolicyOrigin::File => (PolicySource::File, None),
            PolicyOrigin::Builtin => (PolicySource::Builtin, None),
            PolicyOrigin::Missing => (PolicySource::Missing, None),
            PolicyOrigin::Bundle { id, online } => {
                let source = if online.load(Ordering::Relaxed) {
                    PolicySource::Bundle
                } else {
                    PolicySource::BundleOffline
                };
                (source, Some(id.clone()))
            }
        }
    }
}

/// The policy of an enrolled device that has not received its policy from the control plane
/// yet: every call is refused (fail closed) with a message saying why.
pub fn missing_policy() -> Result<Policy, flowlink_policy::PolicyError> {
    const TEXT: &str = r#"
version = 1
default_action = "block"
hide_blocked_tools = false

[[rules]]
id = "flowlink-no-policy-yet"
tool = "*"
action = "block"
message = "FlowLink refused this call: this device is enrolled with a control plane but has not received its organisation's policy yet, so no tool call can be decided (fail closed). Ask the user to check `flowlink-proxy status` and the connection to the control plane, then retry."
"#;
    Policy::from_toml(TEXT)
}

/// The decision for a call refused because the audit outbox is full (rule `block`).
pub fn outbox_full(depth: u64, max_events: u64) -> Decided {
    Decided {
        plan: Plan::Unavailable {
            message: format!(
                "FlowLink refused this tool call: the audit outbox is full ({depth} events, bound {max_events}) because the control plane has been unreachable, and this device is set to block new calls rather than drop audit events. Nothing was run. Retry once `flowlink-proxy status` shows the control plane connected again."
            ),
        },
        verdict: Verdict::Error,
        action: "block",
        rule_id: None,
        reason: format!(
            "audit outbox full ({depth} of {max_events} events waiting for the control plane); new calls are blocked"
        ),
        risk: None,
        findings: Vec::new(),
    }
}

/// What to do with a call.
#[derive(Debug, Clone, PartialEq)]
pub enum Plan {
    /// Send it to the MCP server.
    Forward,
    /// Answer the agent with a tool error carrying `message`; do not forward.
    Refuse {
        /// What the agent reads.
        message: String,
    },
    /// Answer with JSON-RPC error [`flowlink_proto::jsonrpc::RATE_LIMITED`].
    RateLimited {
        /// When the bucket allows the next call.
        retry_after: Duration,
        /// What the agent reads.
        message: String,
    },
    /// Answer with JSON-RPC error [`flowlink_proto::jsonrpc::DECISION_UNAVAILABLE`]: the call
    /// cannot be taken now (the audit outbox is full).
    Unavailable {
        /// What the agent reads.
        message: String,
    },
    /// Hold the call and ask the control plane's approvers (the link is up).
    AskApprover {
        /// Who, how many, how long.
        spec: flowlink_policy::ApprovalSpec,
        /// The rule's message, for the request.
        message: Option<String>,
    },
    /// Ask the developer in the editor (MCP elicitation) and wait at most `timeout`.
    AskUser {
        /// The question.
        prompt: String,
        /// How long silence may last before it counts as "no".
        timeout: Duration,
    },
}

/// A decided call: the plan plus what goes into the audit record.
#[derive(Debug, Clone, PartialEq)]
pub struct Decided {
    /// What to do.
    pub plan: Plan,
    /// The verdict recorded before acting.
    pub verdict: Verdict,
    /// The action of the deciding rule (or the default action).
    pub action: &'static str,
    /// The deciding rule.
    pub rule_id: Option<String>,
    /// Why, in words.
    pub reason: String,
    /// The shield's risk, when it looked at the call.
    pub risk: Option<u8>,
    /// What the shield found, highest risk first.
    pub findings: Vec<FindingRecord>,
}

/// The facts about one call that the decision needs.
pub struct CallFacts<'a> {
    /// MCP client name.
    pub agent: &'a str,
    /// `--name`.
    pub service: &'a str,
    /// Tool name.
    pub tool: &'a str,
    /// Tool arguments.
    pub arguments: &'a Value,
    /// Device and user labels.
    pub labels: &'a Labels,
    /// Whether the client can show a confirmation (form-mode elicitation).
    pub can_ask_user: bool,
    /// Whether approvers can be asked now (enrolled, link up).
    pub can_ask_approver: bool,
}

/// Decides one call.
pub fn decide(state: &PolicyState, facts: &CallFacts<'_>) -> Decided {
    if let Err(limited) = state.limiter.check(facts.agent, facts.service, facts.tool) {
        let secs = limited.retry_after.as_secs_f64();
        return Decided {
            plan: Plan::RateLimited {
                retry_after: limited.retry_after,
                message: format!(
                    "Rate limit `{}` ({} `{}`) reached for tool `{}`; retry after {secs:.1} s.",
                    limited.rule_id,
                    limited.scope.as_str(),
                    limited.key,
                    facts.tool
                ),
            },
            verdict: Verdict::RateLimited,
            action: "block",
            rule_id: Some(limited.rule_id.clone()),
            reason: format!(
                "rate limit `{}` exceeded; retry after {secs:.1} s",
                limited.rule_id
            ),
            risk: None,
            findings: Vec::new(),
        };
    }
    let call = ToolCall {
        agent: facts.agent,
        service: facts.service,
        tool: facts.tool,
        arguments: facts.arguments,
        labels: facts.labels,
    };
    let d = state.policy.decide(&call);
    let blocked_message = |d: &flowlink_policy::Decision| {
        d.message.clone().unwrap_or_else(|| {
            format!(
                "FlowLink policy blocked tool `{}`{}.",
                facts.tool,
                d.rule_id
                    .as_deref()
                    .map(|r| format!(" (rule `{r}`)"))
                    .unwrap_or_default()
            )
        })
    };
    let (plan, verdict, reason) = match d.action {
        Action::Allow => (Plan::Forward, Verdict::Allow, d.reason.clone()),
        Action::Block => (
            Plan::Refuse {
                message: blocked_message(&d),
            },
            Verdict::Block,
            d.reason.clone(),
        ),
        Action::Confirm if facts.can_ask_user => (
            Plan::AskUser {
                prompt: confirm_prompt(facts, &d),
                timeout: state.policy.confirm_timeout(),
            },
            Verdict::Pending,
            format!("{}; asking the user in the editor", d.reason),
        ),
        Action::Approve if facts.can_ask_approver => (
            Plan::AskApprover {
                spec: d.approval.clone().unwrap_or_default(),
                message: d.message.clone(),
            },
            Verdict::Pending,
            format!("{}; asking an approver", d.reason),
        ),
        Action::Approve | Action::Confirm => {
            let why = if d.action == Action::Approve {
                "needs a human approver and no control plane is connected"
            } else {
                "needs confirmation and the client cannot show one (no elicitation capability)"
            };
            match state.policy.offline_action(d.action) {
                Action::Allow => (
                    Plan::Forward,
                    Verdict::Allow,
                    format!("{}; {why}; the offline rule allows it", d.reason),
                ),
                _ => (
                    Plan::Refuse {
                        message: format!(
                            "{} This call {why}, so FlowLink's offline rule refused it. Ask the user to run it themselves or to change the policy.",
                            d.message.clone().unwrap_or_else(|| format!(
                                "Tool `{}` requires a person's approval.",
                                facts.tool
                            ))
                        ),
                    },
                    Verdict::Denied,
                    format!("{}; {why}; the offline rule denies it", d.reason),
                ),
            }
        }
    };
    let findings = d
        .findings
        .iter()
        .map(|cf| FindingRecord {
            id: cf.finding.id.to_owned(),
            category: cf.finding.category.as_str().to_owned(),
            risk: cf.finding.risk,
            pointer: cf.pointer.clone(),
            explanation: cf.finding.explanation.clone(),
        })
        .collect();
    Decided {
        plan,
        verdict,
        action: d.action.as_str(),
        rule_id: d.rule_id,
        reason,
        risk: Some(d.risk),
        findings,
    }
}

fn confirm_prompt(facts: &CallFacts<'_>, d: &flowlink_policy::Decision) -> String {
    let args = shorten(&facts.arguments.to_string(), 500);
    format!(
        "FlowLink: the agent `{}` wants to call `{}` on `{}` with {}.{} Allow it?",
        facts.agent,
        facts.tool,
        facts.service,
        args,
        d.message
            .as_deref()
            .map(|m| format!(" ({m})"))
            .unwrap_or_default()
    )
}

/// `s` cut to at most `max` bytes on a character boundary, with `…` where it was cut.
pub(crate) fn shorten(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut cut = max;
    while !s.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}…", &s[..cut])
}

/// The `params` of the `elicitation/create` request that asks the developer.
pub fn confirmation_request(prompt: &str, protocol_version: Option<&str>) -> Value {
    let mut params = json!({
        "message": prompt,
        "requestedSchema": {
            "type": "object",
            "properties": {
                "approve": {
                    "type": "boolean",
                    "title": "Allow this tool call",
                    "description": "Tick to let the call run; anything else refuses it."
                }
            },
            "required": ["approve"]
        }
    });
    if protocol_version.is_some_and(|v| v >= "2025-11-25") {
        params["mode"] = Value::from("form");
    }
    params
}

/// Whether an answer to [`confirmation_request`] allows the call: only an explicit accept with
/// `approve: true` does.
pub fn confirmation_granted(result: &Value) -> bool {
    result.get("action").and_then(Value::as_str) == Some("accept")
        && result
            .get("content")
            .and_then(|c| c.get("approve"))
            .and_then(Value::as_bool)
            == Some(true)
}

/// The `CallToolResult` the agent gets for a refused call: a tool error, so that the model reads
/// the message and can choose another way.
pub fn refusal_result(message: &str, protocol_version: Option<&str>) -> Value {
    let mut r = json!({
        "content": [{"type": "text", "text": message}],
        "isError": true
    });
    if flowlink_proto::mcp::requires_result_type(protocol_version) {
        r["resultType"] = Value::from("complete");
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_missing_policy_refuses_everything_with_a_reason() {
        let state = PolicyState::new(
            missing_policy().expect("parses"),
            "none".into(),
            PolicyOrigin::Missing,
        );
        let labels = Labels::new();
        let d = decide(
            &state,
            &CallFacts {
                agent: "a",
                service: "s",
                tool: "echo",
                arguments: &json!({"message": "hi"}),
                labels: &labels,
                can_ask_user: true,
                can_ask_approver: false,
            },
        );
        assert_eq!(d.verdict, Verdict::Block);
        assert!(
            matches!(&d.plan, Plan::Refuse { message } if message.contains("has not received")),
            "{d:?}"
        );
        assert_eq!(state.record_source(), (PolicySource::Missing, None));
    }

    #[test]
    fn bundle_decisions_say_whether_the_link_was_up() {
        let online = Arc::new(AtomicBool::new(false));
        let state = PolicyState::new(
            Policy::builtin_default(),
            "bundle".into(),
            PolicyOrigin::Bundle {
                id: "b1".into(),
                online: online.clone(),
            },
        );
        assert_eq!(
            state.record_source(),
            (PolicySource::BundleOffline, Some("b1".into()))
        );
        online.store(true, Ordering::Relaxed);
        assert_eq!(
            state.record_source(),
            (PolicySource::Bundle, Some("b1".into()))
        );
    }

    #[test]
    fn only_explicit_accept_with_approve_true_grants() {
        assert!(confirmation_granted(
            &json!({"action":"accept","content":{"approve":true}})
        ));
        assert!(!confirmation_granted(
            &json!({"action":"accept","content":{"approve":false}})
        ));
        assert!(!confirmation_granted(
            &json!({"action":"accept","content":{"approve":"true"}})
        ));
        assert!(!confirmation_granted(&json!({"action":"accept"})));
        assert!(!confirmation_granted(&json!({"action":"decline"})));
        assert!(!confirmation_granted(&json!({"action":"cancel"})));
    }

    #[test]
    fn refusals_are_tool_errors_with_result_type_when_required() {
        let r = refusal_result("no", Some("2026-07-28"));
        assert_eq!(r["isError"], true);
        assert_eq!(r["resultType"], "complete");
        assert!(
            refusal_result("no", Some("2025-06-18"))
                .get("resultType")
                .is_none()
        );
    }

    #[test]
    fn form_mode_only_where_the_revision_knows_it() {
        assert!(
            confirmation_request("q", Some("2025-06-18"))
                .get("mode")
                .is_none()
        );
        assert_eq!(
            confirmation_request("q", Some("2025-11-25"))["mode"],
            "form"
        );
    }
}
