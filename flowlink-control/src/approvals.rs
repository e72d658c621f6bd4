//! The approval queue's behaviour: filing a held call from a proxy, people's votes, the clock,
//! cancellation, and telling the proxy. Storage is in `store/approvals.rs`; HTTP in
//! `api/approvals.rs`; the link hands requests in through [`file_request`] / [`cancel`].
//!
//! Guarantees (each has a test in `tests/approvals.rs`):
//! - An approval is bound to the exact call: device, agent, service, tool, the digest of the
//!   canonical arguments and the policy; one byte of difference is a new request.
//! - A requester never decides their own call; a rule's `approvers` selector is enforced.
//! - Silence is not consent: at `expires_at` a pending request becomes `timed_out` (not
//!   `denied`) and the proxy is told.
//! - A proxy that re-sends a request after a reconnect gets the same request back, with its
//!   decision if one was made meanwhile.

use std::time::Duration;

use flowlink_proto::link::{
    ApprovalAccepted, ApprovalCancel, ApprovalDecision, ApprovalOutcome, ApprovalRequest,
    ApprovalScope, ControlMessage,
};

use crate::api::AppState;
use crate::store::{ApprovalRecord, ApprovalStatus, AuditEvent, StoreError, now_us};

/// Largest redacted-arguments document accepted with a request.
pub const MAX_ARGUMENTS_BYTES: usize = 256 * 1024;
/// Bounds on a request's timeout.
pub const TIMEOUT_RANGE: std::ops::RangeInclusive<u64> = 10..=7 * 86_400;

/// Why a proxy's request was refused.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// The request is malformed.
    #[error("{0}")]
    Invalid(String),
    /// Storage failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Where a person decides a request: its page in the web UI.
pub fn request_url(state: &AppState, org_id: &str, id: &str) -> String {
    format!(
        "{}/ui/orgs/{org_id}/approvals/{id}",
        state.config.public_url.trim_end_matches('/')
    )
}

/// The message that tells a proxy how a concluded request ended.
pub fn decision_message(r: &ApprovalRecord, decided_by: Vec<String>) -> Option<ControlMessage> {
    let outcome = match r.status {
        ApprovalStatus::Pending => return None,
        ApprovalStatus::Approved => ApprovalOutcome::Approved,
        ApprovalStatus::Denied => ApprovalOutcome::Denied,
        ApprovalStatus::TimedOut => ApprovalOutcome::TimedOut,
        ApprovalStatus::Cancelled => ApprovalOutcome::Cancelled,
    };
    let scope = match (r.scope_kind.as_deref(), r.scope_minutes) {
        (Some("same_call_for"), Some(m)) => ApprovalScope::SameCallFor {
            minutes: u32::try_from(m).unwrap_or(0),
        },
        _ => ApprovalScope::ThisCall,
    };
    Some(ControlMessage::ApprovalDecision(ApprovalDecision {
        call_ref: r.call_ref.clone(),
        request_id: r.id.clone(),
        outcome,
        decided_by,
        comment: r.comment.clone(),
        scope,
    }))
}

/// Who decided a concluded request (the approvers, or the one who denied).
pub async fn deciders(state: &AppState, r: &ApprovalRecord) -> Result<Vec<String>, StoreError> {
    let votes = state.store.approval_votes(&r.id).await?;
    let wanted = match r.status {
        ApprovalStatus::Approved => "approve",
        ApprovalStatus::Denied => "deny",
        _ => return Ok(Vec::new()),
    };
    Ok(votes
        .into_iter()
        .filter(|v| v.vote == wanted)
        .map(|v| v.email)
        .collect())
}

/// Tells every link of the request's device (wrapping its service), on whichever replica
/// holds it, how the request ended.
pub async fn tell_proxy(state: &AppState, r: &ApprovalRecord) -> Result<(), StoreError> {
    let by = deciders(state, r).await?;
    if let Some(msg) = decision_message(r, by) {
        let n = crate::link::deliver(state, &r.device_id, Some(&r.service), &msg).await?;
        tracing::debug!(request = %r.id, links_here = n, "approval decision delivered");
    }
    Ok(())
}

async fn record(
    state: &AppState,
    r: &ApprovalRecord,
    kind: &str,
    actor: (&str, &str),
    detail: serde_json::Value,
) -> Result<(), StoreError> {
    state
        .store
        .record_audit(&AuditEvent {
            org_id: Some(r.org_id.clone()),
            kind: kind.to_string(),
            actor_kind: actor.0.to_string(),
            actor_id: actor.1.to_string(),
            target: r.id.clone(),
            outcome: r.status.as_str().to_string(),
            ip: String::new(),
            detail,
        })
        .await?;
    Ok(())
}

/// Files a held call from a proxy of `device_id` in `org_id`. Returns the messages to send
/// back: `ApprovalAccepted`, and the decision at once when the request was already decided
/// (re-sent after a reconnect) or an earlier "same call for N minutes" approval covers it.
pub async fn file_request(
    state: &AppState,
    org_id: &str,
    device_id: &str,
    req: &ApprovalRequest,
) -> Result<Vec<ControlMessage>, FileError> {
    if req.call_ref.is_empty() || req.call_ref.len() > 128 {
        return Err(FileError::Invalid(
            "call_ref must be 1-128 characters".into(),
        ));
    }
    if req.args_digest.len() != 64 || !req.args_digest.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(FileError::Invalid(
            "args_digest must be a hex SHA-256".into(),
        ));
    }
    let arguments = req.arguments.to_string();
    if arguments.len() > MAX_ARGUMENTS_BYTES {
        return Err(FileError::Invalid(format!(
            "the arguments are larger than {MAX_ARGUMENTS_BYTES} bytes; the proxy should shorten them"
        )));
    }
    let timeout = req
        .timeout_secs
        .clamp(*TIMEOUT_RANGE.start(), *TIMEOUT_RANGE.end());
    let needed = req.approvals_needed.clamp(1, 10);
    if let Some(grant) = state.store.live_grant(org_id, device_id, req).await? {
        record(state, &grant, "approval.granted_again", ("device", device_id),
            serde_json::json!({"call_ref": req.call_ref, "tool": req.tool, "grant_until": grant.grant_until})).await?;
        let by = deciders(state, &grant).await?;
        let mut out = vec![ControlMessage::ApprovalAccepted(ApprovalAccepted {
            call_ref: req.call_ref.clone(),
            request_id: grant.id.clone(),
            url: request_url(state, org_id, &grant.id),
        })];
        if let Some(ControlMessage::ApprovalDecision(mut d)) = decision_message(&grant, by) {
            d.call_ref = req.call_ref.clone();
            out.push(ControlMessage::ApprovalDecision(d));
        }
        return Ok(out);
    }
    let now = now_us();
    let candidate = ApprovalRecord {
        id: String::new(),
        org_id: org_id.to_string(),
        device_id: device_id.to_string(),
        call_ref: req.call_ref.clone(),
        service: req.service.clone(),
        agent: req.agent.clone(),
        requester: req.user.clone(),
        tool: req.tool.clone(),
        arguments: req.arguments.clone(),
        args_digest: req.args_digest.clone(),
        rule_id: req.rule_id.clone(),
        message: req.message.clone(),
        reason: req.reason.clone(),
        risk: i64::from(req.risk),
        findings: serde_json::to_value(&req.findings)
            .unwrap_or(serde_json::Value::Array(Vec::new())),
        policy: req.policy.clone(),
        approvers: req.approvers.iter().map(|a| a.to_lowercase()).collect(),
        approvals_needed: i64::from(needed),
        status: ApprovalStatus::Pending,
        created_at: now,
        expires_at: now
            + i64::try_from(Duration::from_secs(timeout).as_micros()).unwrap_or(i64::MAX / 2),
        decided_at: None,
        scope_kind: None,
        scope_minutes: None,
        grant_until: None,
        comment: None,
    };
    let (stored, created) = state.store.file_approval(&candidate).await?;
    if created {
        record(state, &stored, "approval.requested", ("device", device_id), serde_json::json!({
            "service": stored.service, "agent": stored.agent, "requester": stored.requester, "tool": stored.tool,
            "rule": stored.rule_id, "risk": stored.risk, "args_digest": stored.args_digest,
            "approvals_needed": stored.approvals_needed, "expires_at": stored.expires_at,
        })).await?;
        update_queue_gauge(state).await;
        crate::ui::events::approval_changed(state, &stored).await;
    } else if stored.args_digest != req.args_digest || stored.tool != req.tool {
        return Err(FileError::Invalid(
            "this call_ref was already used for a different call; use a new call_ref per held call"
                .into(),
        ));
    }
    let mut out = vec![ControlMessage::ApprovalAccepted(ApprovalAccepted {
        call_ref: stored.call_ref.clone(),
        request_id: stored.id.clone(),
        url: request_url(state, org_id, &stored.id),
    })];
    let by = deciders(state, &stored).await?;
    if let Some(d) = decision_message(&stored, by) {
        out.push(d);
    }
    Ok(out)
}

/// Withdraws a held call (the client cancelled it, or the proxy is exiting).
pub async fn cancel(
    state: &AppState,
    device_id: &str,
    c: &ApprovalCancel,
) -> Result<(), StoreError> {
    if let Some(r) = state.store.cancel_approval(device_id, &c.call_ref).await? {
        record(
            state,
            &r,
            "approval.cancelled",
            ("device", device_id),
            serde_json::json!({"reason": c.reason}),
        )
        .await?;
        update_queue_gauge(state).await;
        crate::ui::events::approval_changed(state, &r).await;
    }
    Ok(())
}

/// Times out due requests and tells their proxies; returns how many.
pub async fn expire_due(state: &AppState) -> Result<usize, StoreError> {
    let expired = state.store.expire_approvals().await?;
    for r in &expired {
        record(state, r, "approval.timed_out", ("system", "clock"),
            serde_json::json!({"tool": r.tool, "service": r.service, "note": "silence is not consent"})).await?;
        tell_proxy(state, r).await?;
        crate::ui::events::approval_changed(state, r).await;
    }
    if !expired.is_empty() {
        update_queue_gauge(state).await;
    }
    Ok(expired.len())
}

/// Runs [`expire_due`] every second until the process ends.
pub async fn run_clock(state: AppState) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if let Err(e) = expire_due(&state).await {
            tracing::warn!(error = %e, "could not time out due approval requests; retrying");
        }
    }
}

/// Refreshes the `flowlink_approval_queue_depth` gauge.
pub async fn update_queue_gauge(state: &AppState) {
    if let Ok(n) = state.store.pending_approvals().await {
        state.metrics.set_gauge(
            "flowlink_approval_queue_depth",
            "Approval requests waiting for people (all organisations).",
            n,
        );
    }
}
