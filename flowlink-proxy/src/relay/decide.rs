//! Stage 3, decide: what happens to one `tools/call`, given the policy in force.
//!
//! Pure apart from the rate limiter's clock: the router turns a [`Plan`] into messages and audit
//! records. Fail closed: arguments that cannot be read are refused, never forwarded.

use std::time::Duration;

use flowlink_policy::{Action, Labels, Policy, RateLimiter, ToolCall};
use flowlink_proto::audit::{FindingRecord, Verdict};
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
}

impl PolicyState {
    /// Builds the state for a freshly loaded policy.
    pub fn new(policy: Policy, origin: String) -> PolicyState {
        let limiter = RateLimiter::new(&policy);
        PolicyState {
            policy,
            limiter,
            origin,
        }
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
