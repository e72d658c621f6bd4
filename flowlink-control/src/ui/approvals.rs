//! The approval pages: the pending queue of an organisation (live through
//! `static/approvals.js` and the event stream of [`super::events`]; a reload shows the same
//! without JavaScript), one request with the decision forms, and the history of decided
//! requests (keyset pages).
//!
//! Who sees what: every member who may read the organisation sees the queue, a request and the
//! history (`Access::Org(OrgRead)`); the forms are shown only to those holding
//! `approval:decide`, and their POST route is `Access::Org(ApprovalDecide)`, so a viewer's
//! direct POST is refused by the route table before any handler runs. A decision goes through
//! [`crate::api::approvals::decide_request`], the API's own: never the requester's own call,
//! the rule's approvers, one vote each, N approvals, only while pending.

use std::collections::HashMap;

use askama::Template;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::Method;
use serde::Deserialize;

use super::{Chrome, PageResult, render, see_other};
use crate::api::approvals::{DecisionRequest, decide_request, is_requester, selector_allows};
use crate::api::page::{PageQuery, finish};
use crate::api::{Access, ApiError, ApiRoute, AppState, OrgCaller};
use crate::auth::Permission;
use crate::store::{ApprovalRecord, ApprovalStatus, now_us};

/// How many pending requests the queue page shows (the soonest to time out first).
pub const QUEUE_LIMIT: i64 = 200;
/// Decided requests per history page.
pub const HISTORY_PAGE: u32 = 50;

/// The routes of the approval pages and their event stream.
pub fn routes() -> Vec<ApiRoute> {
    use Permission::{ApprovalDecide, OrgRead};
    vec![
        ApiRoute::new(
            Method::GET,
            "/ui/events/approvals",
            Access::Session,
            super::events::stream,
        ),
        ApiRoute::new(
            Method::GET,
            "/ui/orgs/{org}/approvals",
            Access::Org(OrgRead),
            queue,
        ),
        ApiRoute::new(
            Method::GET,
            "/ui/orgs/{org}/approvals/history",
            Access::Org(OrgRead),
            history,
        ),
        ApiRoute::new(
            Method::GET,
            "/ui/orgs/{org}/approvals/{approval}",
            Access::Org(OrgRead),
            request_page,
        ),
        ApiRoute::new(
            Method::POST,
            "/ui/orgs/{org}/approvals/{approval}/decision",
            Access::Org(ApprovalDecide),
            decision,
        ),
    ]
}

/// "4 min 05 s", "2 h 10 min", "1 d 3 h" left until `until_us`; "due" when past.
pub fn time_left(until_us: i64, now: i64) -> String {
    let secs = (until_us - now) / 1_000_000;
    if secs <= 0 {
        return "due".into();
    }
    let (d, h, m, s) = (secs / 86_400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    if d > 0 {
        format!("{d} d {h} h")
    } else if h > 0 {
        format!("{h} h {m:02} min")
    } else if m > 0 {
        format!("{m} min {s:02} s")
    } else {
        format!("{s} s")
    }
}

/// `2026-11-26 04:31:07 UTC`.
fn when(us: i64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp(us / 1_000_000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02} UTC",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

/// A shield risk in words.
pub fn risk_words(risk: i64) -> &'static str {
    match risk {
        i64::MIN..=0 => "none",
        1..=29 => "low",
        30..=59 => "medium",
        60..=84 => "high",
        _ => "critical",
    }
}

/// One row of the queue or the history.
struct Row {
    id: String,
    status: String,
    status_key: &'static str,
    requester: String,
    device: String,
    agent: String,
    service: String,
    tool: String,
    risk: i64,
    risk_words: &'static str,
    time_left: String,
    expires_ms: i64,
    created: String,
    decided: String,
    comment: String,
}

async fn device_names(
    state: &AppState,
    org_id: &str,
    rows: &[ApprovalRecord],
) -> Result<HashMap<String, String>, ApiError> {
    let mut names = HashMap::new();
    for r in rows {
        if !names.contains_key(&r.device_id) {
            let name = state
                .store
                .device(org_id, &r.device_id)
                .await?
                .map_or_else(|| r.device_id.clone(), |d| d.name);
            names.insert(r.device_id.clone(), name);
        }
    }
    Ok(names)
}

fn row(r: &ApprovalRecord, names: &HashMap<String, String>, now: i64) -> Row {
    Row {
        id: r.id.clone(),
        status: r.status.as_str().replace('_', " "),
        status_key: r.status.as_str(),
        requester: r.requester.clone(),
        device: names
            .get(&r.device_id)
            .cloned()
            .unwrap_or_else(|| r.device_id.clone()),
        agent: r.agent.clone(),
        service: r.service.clone(),
        tool: r.tool.clone(),
        risk: r.risk,
        risk_words: risk_words(r.risk),
        time_left: time_left(r.expires_at, now),
        expires_ms: r.expires_at / 1000,
        created: when(r.created_at),
        decided: r.decided_at.map(when).unwrap_or_default(),
        comment: r.comment.clone().unwrap_or_default(),
    }
}

#[derive(Template)]
#[template(path = "approvals.html")]
struct QueuePage {
    chrome: Chrome,
    org_slug: String,
    org_name: String,
    rows: Vec<Row>,
    can_decide: bool,
}

async fn queue(State(state): State<AppState>, caller: OrgCaller) -> PageResult {
    let records = state
        .store
        .pending_queue(&caller.org.id, QUEUE_LIMIT)
        .await?;
    let names = device_names(&state, &caller.org.id, &records).await?;
    let now = now_us();
    let rows: Vec<Row> = records.iter().map(|r| row(r, &names, now)).collect();
    let title = if rows.is_empty() {
        "Approvals".to_string()
    } else {
        format!("({}) Approvals", rows.len())
    };
    render(&QueuePage {
        chrome: Chrome::new(&state, &caller.caller, &title),
        org_slug: caller.org.slug.clone(),
        org_name: caller.org.name.clone(),
        rows,
        can_decide: caller.permissions.contains(Permission::ApprovalDecide),
    })
}

#[derive(Template)]
#[template(path = "approvals_history.html")]
struct HistoryPage {
    chrome: Chrome,
    org_slug: String,
    org_name: String,
    rows: Vec<Row>,
    next_cursor: Option<String>,
}

/// `?cursor=` of the history.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct HistoryQuery {
    cursor: Option<String>,
}

async fn history(
    State(state): State<AppState>,
    caller: OrgCaller,
    query: Result<Query<HistoryQuery>, QueryRejection>,
) -> PageResult {
    let Query(q) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let page = PageQuery {
        cursor: q.cursor,
        limit: Some(HISTORY_PAGE),
    };
    let limit = page.limit()?;
    let records = state
        .store
        .decided_approvals(&caller.org.id, page.key()?.as_deref(), i64::from(limit) + 1)
        .await?;
    let (records, next_cursor) = finish(records, limit, |r| r.id.clone());
    let names = device_names(&state, &caller.org.id, &records).await?;
    let now = now_us();
    render(&HistoryPage {
        chrome: Chrome::new(&state, &caller.caller, "Approval history"),
        org_slug: caller.org.slug.clone(),
        org_name: caller.org.name.clone(),
        rows: records.iter().map(|r| row(r, &names, now)).collect(),
        next_cursor,
    })
}

/// A shield finding in words.
struct FindingView {
    what: String,
    category: String,
    risk: i64,
    risk_words: &'static str,
    argument: String,
}

struct VoteLine {
    email: String,
    vote: String,
    comment: String,
    at: String,
}

#[derive(Template)]
#[template(path = "approvals_request.html")]
struct RequestPage {
    chrome: Chrome,
    org_slug: String,
    r: Row,
    pending: bool,
    arguments: String,
    findings: Vec<FindingView>,
    rule: String,
    message: String,
    reason: String,
    approvals_needed: i64,
    approvals_so_far: usize,
    approvers: String,
    votes: Vec<VoteLine>,
    scope: String,
    /// Shown the forms: may decide, not their own call, named by the rule's approvers.
    show_forms: bool,
    /// Why the forms are not shown to someone who holds the permission.
    not_yours: String,
}

fn findings(value: &serde_json::Value) -> Vec<FindingView> {
    let list: Vec<flowlink_proto::audit::FindingRecord> =
        serde_json::from_value(value.clone()).unwrap_or_default();
    list.into_iter()
        .map(|f| FindingView {
            what: if f.explanation.trim().is_empty() {
                f.id.replace(['.', '_'], " ")
            } else {
                f.explanation
            },
            category: f.category,
            risk: i64::from(f.risk),
            risk_words: risk_words(i64::from(f.risk)),
            argument: f.pointer.trim_start_matches('/').replace('/', "."),
        })
        .collect()
}

async fn request_page(
    State(state): State<AppState>,
    caller: OrgCaller,
    Path((_, id)): Path<(String, String)>,
) -> PageResult {
    let r = state
        .store
        .approval(&caller.org.id, &id)
        .await?
        .ok_or_else(|| ApiError::not_found("approval request"))?;
    let votes = state.store.approval_votes(&r.id).await?;
    let names = device_names(&state, &caller.org.id, std::slice::from_ref(&r)).await?;
    let now = now_us();
    let pending = r.status == ApprovalStatus::Pending && r.expires_at > now;
    let email = &caller.caller.user.email;
    let may_decide = caller.permissions.contains(Permission::ApprovalDecide);
    // What the page offers; `decide_request` enforces the same rules on the POST.
    let not_yours = if !pending {
        String::new()
    } else if !may_decide {
        "You can see this request; deciding it needs the approver role.".to_string()
    } else if is_requester(&r.requester, email) {
        "This call was made for you; someone else must decide it.".to_string()
    } else if !selector_allows(&r.approvers, email, caller.role.as_str()) {
        format!("The rule names who may decide: {}.", r.approvers.join(", "))
    } else if votes.iter().any(|v| v.user_id == caller.caller.user.id) {
        "You have voted; more approvals are needed.".to_string()
    } else {
        String::new()
    };
    let scope = match (r.scope_kind.as_deref(), r.scope_minutes) {
        (Some("same_call_for"), Some(m)) => {
            format!("this exact call for {m} minutes")
        }
        (Some(_), _) => "this call only".to_string(),
        _ => String::new(),
    };
    let page = RequestPage {
        chrome: Chrome::new(
            &state,
            &caller.caller,
            &format!("{} on {}", r.tool, r.service),
        ),
        org_slug: caller.org.slug.clone(),
        pending,
        arguments: serde_json::to_string_pretty(&r.arguments).unwrap_or_default(),
        findings: findings(&r.findings),
        rule: r.rule_id.clone().unwrap_or_default(),
        message: r.message.clone().unwrap_or_default(),
        reason: r.reason.clone(),
        approvals_needed: r.approvals_needed,
        approvals_so_far: votes.iter().filter(|v| v.vote == "approve").count(),
        approvers: r.approvers.join(", "),
        votes: votes
            .iter()
            .map(|v| VoteLine {
                email: v.email.clone(),
                vote: v.vote.clone(),
                comment: v.comment.clone().unwrap_or_default(),
                at: when(v.created_at),
            })
            .collect(),
        scope,
        show_forms: pending && not_yours.is_empty(),
        not_yours,
        r: row(&r, &names, now),
    };
    render(&page)
}

/// The decision form (the CSRF field is read by the route table's middleware).
#[derive(Debug, Deserialize)]
struct DecisionForm {
    #[allow(dead_code)]
    csrf_token: Option<String>,
    decision: String,
    #[serde(default)]
    comment: String,
    /// `this_call` or `same_call_for`.
    #[serde(default)]
    scope: String,
    #[serde(default)]
    minutes: String,
}

impl DecisionForm {
    fn request(&self) -> Result<DecisionRequest, ApiError> {
        let same_call_minutes = match self.scope.as_str() {
            "" | "this_call" => None,
            "same_call_for" if self.decision == "approve" => {
                let m: u32 = self.minutes.trim().parse().map_err(|_| {
                    ApiError::bad_request("give the minutes as a whole number from 1 to 1440")
                })?;
                if m == 0 {
                    return Err(ApiError::bad_request(
                        "give the minutes as a whole number from 1 to 1440",
                    ));
                }
                Some(m)
            }
            "same_call_for" => None,
            _ => return Err(ApiError::bad_request("choose a scope")),
        };
        let comment = self.comment.trim();
        Ok(DecisionRequest {
            decision: self.decision.clone(),
            comment: (!comment.is_empty()).then(|| comment.to_string()),
            same_call_minutes,
        })
    }
}

async fn decision(
    State(state): State<AppState>,
    caller: OrgCaller,
    Path((_, id)): Path<(String, String)>,
    form: Result<axum::Form<DecisionForm>, axum::extract::rejection::FormRejection>,
) -> PageResult {
    let axum::Form(form) = form.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let request = form.request()?;
    let decided = decide_request(&state, &caller, &id, &request).await?;
    Ok(see_other(
        &state,
        &format!("/ui/orgs/{}/approvals/{}", caller.org.slug, decided.id),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_left_reads_well() {
        let s = 1_000_000;
        assert_eq!(time_left(0, 5), "due");
        assert_eq!(time_left(42 * s, 0), "42 s");
        assert_eq!(time_left(245 * s, 0), "4 min 05 s");
        assert_eq!(time_left(7800 * s, 0), "2 h 10 min");
        assert_eq!(time_left(97_200 * s, 0), "1 d 3 h");
    }

    #[test]
    fn risks_in_words() {
        assert_eq!(risk_words(0), "none");
        assert_eq!(risk_words(20), "low");
        assert_eq!(risk_words(70), "high");
        assert_eq!(risk_words(95), "critical");
    }

    #[test]
    fn forms_become_the_apis_decision() {
        let f = DecisionForm {
            csrf_token: None,
            decision: "approve".into(),
            comment: "  ok  ".into(),
            scope: "same_call_for".into(),
            minutes: "15".into(),
        };
        let r = f.request().expect("valid");
        assert_eq!(
            (
                r.decision.as_str(),
                r.comment.as_deref(),
                r.same_call_minutes
            ),
            ("approve", Some("ok"), Some(15))
        );
        let deny = DecisionForm {
            decision: "deny".into(),
            comment: String::new(),
            ..f
        };
        let r = deny.request().expect("valid");
        assert_eq!((r.comment, r.same_call_minutes), (None, None));
    }
}
