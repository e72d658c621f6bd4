//! Stage "ask an approver": a `tools/call` whose rule says `approve` is held while people
//! decide in the control plane, other traffic going on around it.
//!
//! - With a `progressToken` in the call's `_meta`, the proxy keeps the client's timer alive with
//!   `notifications/progress` while it waits, up to the request's timeout.
//! - Without one, clients time calls out (many at about 60 s), so after the hold (default 50 s)
//!   the agent gets a tool result saying the call awaits approval, who was asked and where, and
//!   that the *identical* call may be issued again once approved. A later approval becomes a
//!   [`Grants`] entry that lets exactly that call (same agent, tool and argument digest) through
//!   once — or, for "same call for N minutes", until then.
//! - A timeout is recorded as `timed_out`, not `denied`, and the agent is told that silence is
//!   not consent.
//!
//! This file holds the pure parts (texts, the request, grants); `router.rs` holds the calls.

use std::time::{Duration, Instant};

use flowlink_policy::ApprovalSpec;
use flowlink_proto::audit::{FindingRecord, Verdict};
use flowlink_proto::link::{
    ApprovalDecision, ApprovalOutcome, ApprovalRequest, ApprovalScope, args_digest,
};
use serde_json::{Value, json};

/// How long a call without a progress token is held before the agent is told to retry later.
pub const DEFAULT_HOLD: Duration = Duration::from_secs(50);
/// How often a held call with a progress token gets a progress notification.
pub const PROGRESS_EVERY: Duration = Duration::from_secs(10);

/// What the control plane needs to know about the held call.
pub struct CallForApproval<'a> {
    /// The proxy's id for the call.
    pub call_ref: &'a str,
    /// MCP client.
    pub agent: &'a str,
    /// The user the proxy runs for.
    pub user: &'a str,
    /// Service.
    pub service: &'a str,
    /// Tool.
    pub tool: &'a str,
    /// The real arguments (only their digest and a redacted copy leave the machine).
    pub arguments: &'a Value,
    /// The deciding rule.
    pub rule_id: Option<&'a str>,
    /// Its message.
    pub message: Option<&'a str>,
    /// Why.
    pub reason: &'a str,
    /// Shield risk.
    pub risk: u8,
    /// Shield findings.
    pub findings: &'a [FindingRecord],
    /// Bundle id.
    pub policy: Option<&'a str>,
    /// Who, how many, how long.
    pub spec: &'a ApprovalSpec,
}

/// The request sent on the link: arguments with secrets replaced by `[REDACTED:<kind>]`, and
/// the digest of the real ones (the approval is bound to it).
pub fn request(c: &CallForApproval<'_>) -> ApprovalRequest {
    let text = c.arguments.to_string();
    let redacted = match flowlink_policy::shield::guardrails::redact_secrets(&text) {
        Some((clean, _)) => {
            serde_json::from_str(&clean).unwrap_or_else(|_| json!({"redacted": clean}))
        }
        None => c.arguments.clone(),
    };
    ApprovalRequest {
        call_ref: c.call_ref.to_owned(),
        agent: c.agent.to_owned(),
        user: c.user.to_owned(),
        service: c.service.to_owned(),
        tool: c.tool.to_owned(),
        arguments: redacted,
        args_digest: args_digest(c.arguments),
        rule_id: c.rule_id.map(str::to_owned),
        message: c.message.map(str::to_owned),
        reason: c.reason.to_owned(),
        risk: c.risk,
        findings: c.findings.to_vec(),
        policy: c.policy.map(str::to_owned),
        approvers: c.spec.approvers.clone(),
        approvals_needed: c.spec.needed,
        timeout_secs: c.spec.timeout.as_secs(),
    }
}

/// Who was asked, in words.
pub fn asked(spec: &ApprovalSpec) -> String {
    let who = if spec.approvers.is_empty() {
        "an approver of your organisation".to_owned()
    } else {
        spec.approvers.join(", ")
    };
    if spec.needed > 1 {
        format!("{} people ({who})", spec.needed)
    } else {
        who
    }
}

/// The tool result an agent gets when the hold ends before anyone decided.
pub fn awaiting_text(
    tool: &str,
    request_id: Option<&str>,
    url: Option<&str>,
    asked: &str,
) -> String {
    format!(
        "FlowLink is holding this `{tool}` call until a person approves it (request {}; asked: {asked}{}). \
         It has NOT run. Do not try to achieve the same effect another way. Tell the user it awaits approval; \
         once it is approved, issue exactly the same call again and it will run without asking again.",
        request_id.unwrap_or("not yet filed: the control plane is unreachable"),
        url.map(|u| format!("; decide at {u}")).unwrap_or_default(),
    )
}

/// The verdict and the agent's text for a decision that refuses the call.
pub fn refusal(d: &ApprovalDecision, timeout: Duration) -> (Verdict, String, String) {
    let by = if d.decided_by.is_empty() {
        String::new()
    } else {
        format!(" by {}", d.decided_by.join(", "))
    };
    // The control plane writes comments as `e-mail: text` lines.
    let comment = d
        .comment
        .as_deref()
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .map(|c| format!(" What was said: \"{}\".", c.replace('\n', "; ")))
        .unwrap_or_default();
    match d.outcome {
        ApprovalOutcome::TimedOut => (
            Verdict::TimedOut,
            format!(
                "nobody approved it within {} (silence is not consent)",
                human(timeout)
            ),
            format!(
                "Nobody approved this call within {}, so FlowLink did not run it. Silence is not consent: \
                 do not try to achieve the same effect another way. Ask the user how to proceed.",
                human(timeout)
            ),
        ),
        ApprovalOutcome::Cancelled => (
            Verdict::Denied,
            format!("the approval request was withdrawn{comment}"),
            format!(
                "FlowLink did not run this call: the approval request was withdrawn.{comment} Ask the user how to proceed."
            ),
        ),
        _ => (
            Verdict::Denied,
            format!("denied{by}{comment}"),
            format!(
                "A person denied this call{by}, so FlowLink did not run it.{comment} \
                 Do not try to achieve the same effect another way; ask the user how to proceed."
            ),
        ),
    }
}

fn human(d: Duration) -> String {
    let s = d.as_secs();
    if s >= 120 && s.is_multiple_of(60) {
        format!("{} minutes", s / 60)
    } else {
        format!("{s} seconds")
    }
}

/// A `notifications/progress` for a held call.
pub fn progress(token: &Value, n: u64, message: &str) -> Value {
    json!({"progressToken": token, "progress": n, "message": message})
}

/// The `progressToken` of a `tools/call`'s params, if the client gave one.
pub fn progress_token(params: Option<&Value>) -> Option<Value> {
    params
        .and_then(|p| p.get("_meta"))
        .and_then(|m| m.get("progressToken"))
        .filter(|t| t.is_string() || t.is_number())
        .cloned()
}

/// Approvals that outlived the call they were asked for: each lets the identical call through,
/// once (`this_call`) or until a time (`same_call_for`).
#[derive(Debug, Default)]
pub struct Grants {
    entries: Vec<Grant>,
}

#[derive(Debug)]
struct Grant {
    agent: String,
    tool: String,
    digest: String,
    policy: Option<String>,
    until: Option<Instant>,
    request_id: String,
    by: Vec<String>,
}

/// What an approval is bound to besides the device and service this proxy serves: the agent,
/// the tool, the digest of the canonical arguments and the policy (bundle) it was decided under.
#[derive(Debug, Clone, Copy)]
pub struct GrantKey<'a> {
    /// MCP client.
    pub agent: &'a str,
    /// Tool.
    pub tool: &'a str,
    /// [`args_digest`] of the arguments.
    pub digest: &'a str,
    /// The bundle id in force, if any.
    pub policy: Option<&'a str>,
}

/// What a used grant says, for the audit record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrantUse {
    /// The request that was approved.
    pub request_id: String,
    /// Who approved it.
    pub by: Vec<String>,
}

impl Grants {
    /// Remembers an approval for the identical call.
    pub fn add(&mut self, call: &GrantKey<'_>, d: &ApprovalDecision, now: Instant) {
        let until = match d.scope {
            ApprovalScope::ThisCall => None,
            ApprovalScope::SameCallFor { minutes } => {
                Some(now + Duration::from_secs(u64::from(minutes) * 60))
            }
        };
        self.entries.push(Grant {
            agent: call.agent.to_owned(),
            tool: call.tool.to_owned(),
            digest: call.digest.to_owned(),
            policy: call.policy.map(str::to_owned),
            until,
            request_id: d.request_id.clone(),
            by: d.decided_by.clone(),
        });
    }

    /// Uses a grant for this exact call, if one applies: a one-time grant is consumed, a timed
    /// one stays until it ends.
    pub fn take(&mut self, call: &GrantKey<'_>, now: Instant) -> Option<GrantUse> {
        self.entries.retain(|g| g.until.is_none_or(|u| u > now));
        let i = self.entries.iter().position(|g| {
            g.agent == call.agent
                && g.tool == call.tool
                && g.digest == call.digest
                && g.policy.as_deref() == call.policy
        })?;
        let g = &self.entries[i];
        let used = GrantUse {
            request_id: g.request_id.clone(),
            by: g.by.clone(),
        };
        if g.until.is_none() {
            self.entries.remove(i);
        }
        Some(used)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decision(scope: ApprovalScope) -> ApprovalDecision {
        ApprovalDecision {
            call_ref: "c".into(),
            request_id: "r1".into(),
            outcome: ApprovalOutcome::Approved,
            decided_by: vec!["ann@example.com".into()],
            comment: None,
            scope,
        }
    }

    #[test]
    fn a_this_call_grant_works_once_and_only_for_the_identical_call() {
        let mut g = Grants::default();
        let now = Instant::now();
        let key = |agent, digest, policy| GrantKey {
            agent,
            tool: "query",
            digest,
            policy,
        };
        g.add(
            &key("a", "d1", Some("p1")),
            &decision(ApprovalScope::ThisCall),
            now,
        );
        assert_eq!(
            g.take(&key("a", "d2", Some("p1")), now),
            None,
            "other arguments"
        );
        assert_eq!(
            g.take(&key("b", "d1", Some("p1")), now),
            None,
            "other agent"
        );
        assert_eq!(
            g.take(&key("a", "d1", Some("p2")), now),
            None,
            "another policy since"
        );
        assert!(g.take(&key("a", "d1", Some("p1")), now).is_some());
        assert_eq!(g.take(&key("a", "d1", Some("p1")), now), None, "used up");
    }

    #[test]
    fn a_timed_grant_lasts_until_its_end() {
        let mut g = Grants::default();
        let now = Instant::now();
        let key = GrantKey {
            agent: "a",
            tool: "t",
            digest: "d",
            policy: None,
        };
        g.add(
            &key,
            &decision(ApprovalScope::SameCallFor { minutes: 5 }),
            now,
        );
        assert!(g.take(&key, now).is_some());
        assert!(g.take(&key, now + Duration::from_secs(299)).is_some());
        assert_eq!(g.take(&key, now + Duration::from_secs(301)), None);
    }

    #[test]
    fn requests_carry_redacted_arguments_and_the_real_digest() {
        let args = json!({"cmd": "curl -H 'Authorization: Bearer ghp_abcdefghijklmnopqrstuvwxyz0123456789' x"});
        let spec = ApprovalSpec::default();
        let r = request(&CallForApproval {
            call_ref: "c1",
            agent: "a",
            user: "u",
            service: "s",
            tool: "t",
            arguments: &args,
            rule_id: Some("r"),
            message: None,
            reason: "why",
            risk: 10,
            findings: &[],
            policy: None,
            spec: &spec,
        });
        assert!(
            !r.arguments.to_string().contains("ghp_abc"),
            "{}",
            r.arguments
        );
        assert!(
            r.arguments.to_string().contains("REDACTED"),
            "{}",
            r.arguments
        );
        assert_eq!(r.args_digest, args_digest(&args));
        assert_eq!(r.timeout_secs, 600);
    }

    #[test]
    fn timeouts_are_not_denials() {
        let mut d = decision(ApprovalScope::ThisCall);
        d.outcome = ApprovalOutcome::TimedOut;
        let (v, _, text) = refusal(&d, Duration::from_secs(600));
        assert_eq!(v, Verdict::TimedOut);
        assert!(
            text.contains("Silence is not consent") && text.contains("10 minutes"),
            "{text}"
        );
        d.outcome = ApprovalOutcome::Denied;
        d.comment = Some("use the replica".into());
        let (v, why, text) = refusal(&d, Duration::from_secs(600));
        assert_eq!(v, Verdict::Denied);
        assert!(
            why.contains("ann@example.com") && text.contains("use the replica"),
            "{text}"
        );
    }
}
