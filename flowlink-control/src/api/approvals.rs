//! The approval queue for people: list, read, decide.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{Method, StatusCode};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::auth::rfc3339;
use super::page::{PageQuery, finish};
use super::{Access, ApiError, ApiJson, ApiResult, ApiRoute, AppState, OrgCaller, Via};
use crate::auth::Permission;
use crate::store::{ApprovalRecord, ApprovalStatus, Ballot, GrantScope, VoteOutcome};

/// The routes of this module.
pub fn routes() -> Vec<ApiRoute> {
    use Permission::ApprovalDecide;
    vec![
        ApiRoute::new(
            Method::GET,
            "/api/v1/orgs/{org}/approvals",
            Access::Org(ApprovalDecide),
            list,
        ),
        ApiRoute::new(
            Method::GET,
            "/api/v1/orgs/{org}/approvals/{approval}",
            Access::Org(ApprovalDecide),
            get_one,
        ),
        ApiRoute::new(
            Method::POST,
            "/api/v1/orgs/{org}/approvals/{approval}/decision",
            Access::Org(ApprovalDecide),
            decide,
        ),
    ]
}

/// A vote.
#[derive(Debug, Serialize, ToSchema)]
pub struct VoteView {
    /// Who.
    pub email: String,
    /// `approve` or `deny`.
    pub vote: String,
    /// Their comment.
    pub comment: Option<String>,
    /// When.
    pub at: String,
}

/// An approval request as approvers see it.
#[derive(Debug, Serialize, ToSchema)]
pub struct ApprovalView {
    /// Id.
    pub id: String,
    /// `pending`, `approved`, `denied`, `timed_out`, `cancelled`.
    pub status: String,
    /// Device.
    pub device_id: String,
    /// The person the agent works for.
    pub requester: String,
    /// MCP client.
    pub agent: String,
    /// Service.
    pub service: String,
    /// Tool.
    pub tool: String,
    /// Arguments, secrets redacted.
    #[schema(value_type = Object)]
    pub arguments: serde_json::Value,
    /// What the approval is bound to.
    pub args_digest: String,
    /// The rule.
    pub rule_id: Option<String>,
    /// Its message.
    pub message: Option<String>,
    /// Why the call was held.
    pub reason: String,
    /// Shield risk 0-100.
    pub risk: i64,
    /// Shield findings.
    #[schema(value_type = Vec<Object>)]
    pub findings: serde_json::Value,
    /// Who may decide (empty: anyone with `approval:decide`).
    pub approvers: Vec<String>,
    /// Approvals needed.
    pub approvals_needed: i64,
    /// Filed at.
    pub created_at: String,
    /// Silence becomes a denial at.
    pub expires_at: String,
    /// Concluded at.
    pub decided_at: Option<String>,
    /// `this_call` or `same_call_for`.
    pub scope: Option<String>,
    /// Minutes of a `same_call_for` approval.
    pub scope_minutes: Option<i64>,
    /// Comments.
    pub comment: Option<String>,
    /// The votes so far.
    pub votes: Vec<VoteView>,
}

fn view(r: ApprovalRecord, votes: Vec<VoteView>) -> ApprovalView {
    ApprovalView {
        id: r.id,
        status: r.status.as_str().into(),
        device_id: r.device_id,
        requester: r.requester,
        agent: r.agent,
        service: r.service,
        tool: r.tool,
        arguments: r.arguments,
        args_digest: r.args_digest,
        rule_id: r.rule_id,
        message: r.message,
        reason: r.reason,
        risk: r.risk,
        findings: r.findings,
        approvers: r.approvers,
        approvals_needed: r.approvals_needed,
        created_at: rfc3339(r.created_at),
        expires_at: rfc3339(r.expires_at),
        decided_at: r.decided_at.map(rfc3339),
        scope: r.scope_kind,
        scope_minutes: r.scope_minutes,
        comment: r.comment,
        votes,
    }
}

async fn votes(state: &AppState, id: &str) -> ApiResult<Vec<VoteView>> {
    Ok(state
        .store
        .approval_votes(id)
        .await?
        .into_iter()
        .map(|v| VoteView {
            email: v.email,
            vote: v.vote,
            comment: v.comment,
            at: rfc3339(v.created_at),
        })
        .collect())
}

/// Filter and paging.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ApprovalQuery {
    /// Only this status.
    pub status: Option<String>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// Page size, 1-500 (default 100).
    pub limit: Option<u32>,
}

/// A page of requests, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct ApprovalPage {
    /// The requests.
    pub items: Vec<ApprovalView>,
    /// Pass as `cursor` for the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

#[utoipa::path(get, path = "/api/v1/orgs/{org}/approvals", tag = "approvals",
    params(("org" = String, Path, description = "Organisation id or slug"), ApprovalQuery),
    responses((status = 200, body = ApprovalPage)))]
async fn list(
    State(state): State<AppState>,
    caller: OrgCaller,
    query: Result<Query<ApprovalQuery>, QueryRejection>,
) -> ApiResult<axum::Json<ApprovalPage>> {
    let Query(q) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let status = match q.status.as_deref() {
        None => None,
        Some(s) => Some(ApprovalStatus::parse(s).ok_or_else(|| {
            ApiError::bad_request(
                "`status` is one of pending, approved, denied, timed_out, cancelled",
            )
        })?),
    };
    let page = PageQuery {
        cursor: q.cursor,
        limit: q.limit,
    };
    let limit = page.limit()?;
    let rows = state
        .store
        .list_approvals(
            &caller.org.id,
            status,
            page.key()?.as_deref(),
            i64::from(limit) + 1,
        )
        .await?;
    let (rows, next_cursor) = finish(rows, limit, |r| r.id.clone());
    let mut items = Vec::with_capacity(rows.len());
    for r in rows {
        let v = votes(&state, &r.id).await?;
        items.push(view(r, v));
    }
    Ok(axum::Json(ApprovalPage { items, next_cursor }))
}

#[utoipa::path(get, path = "/api/v1/orgs/{org}/approvals/{approval}", tag = "approvals",
    params(("org" = String, Path, description = "Organisation id or slug"), ("approval" = String, Path, description = "Request id")),
    responses((status = 200, body = ApprovalView)))]
async fn get_one(
    State(state): State<AppState>,
    caller: OrgCaller,
    Path((_, id)): Path<(String, String)>,
) -> ApiResult<axum::Json<ApprovalView>> {
    let r = state
        .store
        .approval(&caller.org.id, &id)
        .await?
        .ok_or_else(|| ApiError::not_found("approval request"))?;
    let v = votes(&state, &r.id).await?;
    Ok(axum::Json(view(r, v)))
}

/// A decision.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DecisionRequest {
    /// `approve` or `deny`.
    pub decision: String,
    /// Why (shown to the requester and in the audit trail).
    #[serde(default)]
    pub comment: Option<String>,
    /// For approvals: how many minutes the same call (same device, agent, service, tool and
    /// arguments) passes without asking again; absent or 0 = this call only.
    #[serde(default)]
    pub same_call_minutes: Option<u32>,
}

/// Whether `who` (e-mail, role) may decide a request with this approvers selector.
pub fn selector_allows(approvers: &[String], email: &str, role: &str) -> bool {
    approvers.is_empty()
        || approvers.iter().any(|a| {
            a.eq_ignore_ascii_case(email) || a.strip_prefix("role:").is_some_and(|r| r == role)
        })
}

/// Whether `email` is the person the held call was made for. The proxy reports the user as an
/// e-mail address or an operating-system user name; both forms are compared.
pub fn is_requester(requester: &str, email: &str) -> bool {
    let requester = requester.trim().to_lowercase();
    let email = email.to_lowercase();
    let local = email.split('@').next().unwrap_or("");
    !requester.is_empty() && (requester == email || requester == local)
}

#[utoipa::path(post, path = "/api/v1/orgs/{org}/approvals/{approval}/decision", tag = "approvals",
    params(("org" = String, Path, description = "Organisation id or slug"), ("approval" = String, Path, description = "Request id")),
    request_body = DecisionRequest,
    responses((status = 200, body = ApprovalView), (status = 403, body = super::error::ErrorBody), (status = 409, body = super::error::ErrorBody)))]
async fn decide(
    State(state): State<AppState>,
    caller: OrgCaller,
    Path((_, id)): Path<(String, String)>,
    ApiJson(req): ApiJson<DecisionRequest>,
) -> ApiResult<axum::Json<ApprovalView>> {
    let record = decide_request(&state, &caller, &id, &req).await?;
    let v = votes(&state, &record.id).await?;
    Ok(axum::Json(view(record, v)))
}

/// One person's decision on request `id` of the caller's organisation, under every rule of the
/// queue (signed-in people only, never their own call, the rule's approvers, one vote each, only
/// while pending); a concluding vote is recorded, told to the proxy and to the live queue. The
/// API's `POST …/decision` and the web UI's forms both decide through this function.
pub async fn decide_request(
    state: &AppState,
    caller: &OrgCaller,
    id: &str,
    req: &DecisionRequest,
) -> ApiResult<ApprovalRecord> {
    let approve = match req.decision.as_str() {
        "approve" => true,
        "deny" => false,
        _ => return Err(ApiError::bad_request("`decision` is `approve` or `deny`")),
    };
    if let Some(c) = &req.comment
        && c.chars().count() > 2000
    {
        return Err(ApiError::bad_request(
            "a comment is at most 2000 characters",
        ));
    }
    let scope = match req.same_call_minutes.unwrap_or(0) {
        0 => GrantScope::ThisCall,
        m if m <= 1440 && approve => GrantScope::SameCallFor(m),
        _ if !approve => {
            return Err(ApiError::bad_request(
                "`same_call_minutes` only applies to approvals",
            ));
        }
        _ => {
            return Err(ApiError::bad_request(
                "`same_call_minutes` is at most 1440 (one day)",
            ));
        }
    };
    if matches!(caller.caller.via, Via::Token(_)) {
        return Err(ApiError::forbidden(
            "approvals are decided by people signed in, not by API tokens",
        ));
    }
    let r = state
        .store
        .approval(&caller.org.id, id)
        .await?
        .ok_or_else(|| ApiError::not_found("approval request"))?;
    let email = caller.caller.user.email.clone();
    if is_requester(&r.requester, &email) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "own_request",
            "this call was made for you; someone else must decide it",
        ));
    }
    if !selector_allows(&r.approvers, &email, caller.role.as_str()) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "not_an_approver",
            format!("the rule names who may decide: {}", r.approvers.join(", ")),
        ));
    }
    let outcome = state
        .store
        .vote_approval(
            &caller.org.id,
            id,
            &Ballot {
                user_id: &caller.caller.user.id,
                email: &email,
                approve,
                comment: req.comment.as_deref(),
                scope,
            },
        )
        .await?;
    let record = match outcome {
        VoteOutcome::AlreadyVoted => {
            return Err(ApiError::conflict("you have already voted on this request"));
        }
        VoteOutcome::NotPending(r) => {
            return Err(ApiError::conflict(format!(
                "this request is no longer pending (it is {}); nothing was changed",
                if r.status == ApprovalStatus::Pending {
                    "expired"
                } else {
                    r.status.as_str()
                }
            )));
        }
        VoteOutcome::Counted(r) => {
            caller
                .record(
                    state,
                    "approval.vote",
                    &r.id,
                    serde_json::json!({"vote": req.decision, "comment": req.comment, "tool": r.tool}),
                )
                .await?;
            r
        }
        VoteOutcome::Concluded(r) => {
            caller
                .record(
                    state,
                    &format!("approval.{}", r.status.as_str()),
                    &r.id,
                    serde_json::json!({"vote": req.decision, "comment": req.comment, "tool": r.tool, "service": r.service,
                        "scope": r.scope_kind, "scope_minutes": r.scope_minutes, "requester": r.requester}),
                )
                .await?;
            crate::approvals::tell_proxy(state, &r).await?;
            crate::approvals::update_queue_gauge(state).await;
            crate::ui::events::approval_changed(state, &r).await;
            r
        }
    };
    Ok(record)
}

/// The OpenAPI fragment of this module.
#[derive(utoipa::OpenApi)]
#[openapi(
    paths(list, get_one, decide),
    components(schemas(ApprovalView, VoteView, ApprovalPage, DecisionRequest))
)]
pub struct Doc;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requesters_are_recognised_by_email_or_user_name() {
        assert!(is_requester("ann", "Ann@example.com"));
        assert!(is_requester("ann@example.com", "ann@example.com"));
        assert!(!is_requester("bob", "ann@example.com"));
        assert!(!is_requester("", "ann@example.com"));
    }

    #[test]
    fn selectors_match_emails_and_roles() {
        let sel = vec!["role:admin".to_string(), "dba@example.com".to_string()];
        assert!(selector_allows(&sel, "DBA@example.com", "viewer"));
        assert!(selector_allows(&sel, "x@example.com", "admin"));
        assert!(!selector_allows(&sel, "x@example.com", "approver"));
        assert!(selector_allows(&[], "x@example.com", "approver"));
    }
}
