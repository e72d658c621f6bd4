//! Policies: versions per scope, diffs, rollback, validation, explain, signed bundles.
//!
//! An organisation has one policy per scope (`org`, `group:<label>=<value>`,
//! `service:<name>`); a device runs the combination of the scopes that apply to it, least
//! specific first (`flowlink_policy::Policy::from_layers`). A version is stored only when it is
//! valid on its own **and** in every combination of layers it joins (with the org layer, and
//! with each other scope one device could run alongside it), so a publish can never leave some
//! device with a policy that does not load. `base_version` protects against lost updates:
//! publishing over a version other than the one edited is a 409.
//!
//! Bundles are signed with the organisation's Ed25519 key ([`flowlink_proto::bundle`]); a proxy
//! pins the key from `GET /signing-key` and refuses bundles that do not verify.

use std::collections::BTreeMap;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use flowlink_policy::{Labels, Policy, PolicyError, ToolCall, TraceOutcome};
use flowlink_proto::bundle::{
    BUNDLE_SCHEMA, BundleLayer, BundleSelector, PolicyBundle, SignedBundle,
};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::auth::rfc3339;
use super::page::{PageQuery, finish};
use super::{Access, ApiError, ApiJson, ApiRoute, AppState, OrgCaller};
use crate::auth::Permission;
use crate::store::{
    NEWER_POLICY_VERSION, NewPolicyVersion, PolicyScope, PolicyVersion, PolicyVersionInfo,
    StoreError, now_us,
};

/// The routes of this module.
pub fn routes() -> Vec<ApiRoute> {
    use Permission::{PolicyRead, PolicyWrite};
    vec![
        ApiRoute::new(
            Method::GET,
            "/api/v1/orgs/{org}/policies",
            Access::Org(PolicyRead),
            list_scopes,
        ),
        ApiRoute::new(
            Method::GET,
            "/api/v1/orgs/{org}/policies/{scope}/versions",
            Access::Org(PolicyRead),
            list_versions,
        ),
        ApiRoute::new(
            Method::POST,
            "/api/v1/orgs/{org}/policies/{scope}/versions",
            Access::Org(PolicyWrite),
            publish,
        ),
        ApiRoute::new(
            Method::GET,
            "/api/v1/orgs/{org}/policies/{scope}/versions/{version}",
            Access::Org(PolicyRead),
            get_version,
        ),
        ApiRoute::new(
            Method::GET,
            "/api/v1/orgs/{org}/policies/{scope}/diff",
            Access::Org(PolicyRead),
            diff,
        ),
        ApiRoute::new(
            Method::POST,
            "/api/v1/orgs/{org}/policies/{scope}/rollback",
            Access::Org(PolicyWrite),
            rollback,
        ),
        ApiRoute::new(
            Method::POST,
            "/api/v1/orgs/{org}/policies/validate",
            Access::Org(PolicyRead),
            validate,
        ),
        ApiRoute::new(
            Method::POST,
            "/api/v1/orgs/{org}/policies/explain",
            Access::Org(PolicyRead),
            explain,
        ),
        ApiRoute::new(
            Method::GET,
            "/api/v1/orgs/{org}/policies/bundle",
            Access::Org(PolicyRead),
            bundle,
        ),
        ApiRoute::new(
            Method::GET,
            "/api/v1/orgs/{org}/signing-key",
            Access::Org(PolicyRead),
            signing_key,
        ),
    ]
}

/// Longest comment on a version.
const MAX_COMMENT_CHARS: usize = 2000;

// ---------------------------------------------------------------------------------------------
// Errors: the API's error shape, plus `invalid_policy` with the position as structured data.

/// Where and why a policy does not load.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct PolicyProblem {
    /// The layer (scope) at fault when the error comes from combining layers; absent for an
    /// error in the submitted text on its own.
    pub layer: Option<String>,
    /// 1-based line, when known.
    pub line: Option<usize>,
    /// 1-based column, when known.
    pub column: Option<usize>,
    /// What is wrong, without the position.
    pub message: String,
}

impl From<&PolicyError> for PolicyProblem {
    fn from(e: &PolicyError) -> PolicyProblem {
        PolicyProblem {
            layer: e.layer.clone(),
            line: e.line,
            column: e.column,
            message: e.message.clone(),
        }
    }
}

/// The body of a 422 `invalid_policy`.
#[derive(Debug, Serialize, ToSchema)]
pub struct InvalidPolicyBody {
    /// The error.
    pub error: InvalidPolicyDetail,
}

/// `invalid_policy`: message with the position, and the position as data.
#[derive(Debug, Serialize, ToSchema)]
pub struct InvalidPolicyDetail {
    /// `invalid_policy`.
    pub code: String,
    /// `[layer `…`, ]line L, column C: what is wrong`.
    pub message: String,
    /// The same, structured.
    pub policy_error: PolicyProblem,
}

/// A handler's error: any [`ApiError`], or a policy that does not load (422).
#[derive(Debug)]
pub enum PolicyApiError {
    /// Any other error.
    Api(ApiError),
    /// 422 `invalid_policy`.
    Invalid(PolicyError),
}

impl From<ApiError> for PolicyApiError {
    fn from(e: ApiError) -> Self {
        PolicyApiError::Api(e)
    }
}

impl From<StoreError> for PolicyApiError {
    fn from(e: StoreError) -> Self {
        PolicyApiError::Api(e.into())
    }
}

impl IntoResponse for PolicyApiError {
    fn into_response(self) -> Response {
        match self {
            PolicyApiError::Api(e) => e.into_response(),
            PolicyApiError::Invalid(e) => (
                StatusCode::UNPROCESSABLE_ENTITY,
                axum::Json(InvalidPolicyBody {
                    error: InvalidPolicyDetail {
                        code: "invalid_policy".to_string(),
                        message: e.to_string(),
                        policy_error: PolicyProblem::from(&e),
                    },
                }),
            )
                .into_response(),
        }
    }
}

/// A policy handler's result.
pub type PolicyResult<T> = Result<T, PolicyApiError>;

// ---------------------------------------------------------------------------------------------
// Views.

/// One version of a scope's policy.
#[derive(Debug, Serialize, ToSchema)]
pub struct PolicyVersionView {
    /// `org`, `group:<label>=<value>` or `service:<name>`.
    pub scope: String,
    /// 1, 2, … per scope.
    pub version: i64,
    /// Hex SHA-256 of the body.
    pub sha256: String,
    /// User id of the author (for API tokens, the token's creator).
    pub author_id: String,
    /// The author's e-mail address.
    pub author_email: Option<String>,
    /// Why it was published.
    pub comment: String,
    /// When (RFC 3339).
    pub created_at: String,
    /// For rollbacks: the version whose body this one restored.
    pub restored_from: Option<i64>,
    /// The policy file (TOML); only on single-version reads.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
}

impl PolicyVersionView {
    fn info(i: &PolicyVersionInfo) -> PolicyVersionView {
        PolicyVersionView {
            scope: i.scope.clone(),
            version: i.version,
            sha256: i.sha256.clone(),
            author_id: i.author_id.clone(),
            author_email: i.author_email.clone(),
            comment: i.comment.clone(),
            created_at: rfc3339(i.created_at),
            restored_from: i.restored_from,
            body: None,
        }
    }

    fn full(v: &PolicyVersion) -> PolicyVersionView {
        PolicyVersionView {
            body: Some(v.body.clone()),
            ..PolicyVersionView::info(&v.info)
        }
    }
}

/// A page of versions, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct PolicyVersionPage {
    /// The versions (without bodies).
    pub items: Vec<PolicyVersionView>,
    /// Pass as `cursor` for the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

pub(crate) fn parse_scope(text: &str) -> Result<PolicyScope, ApiError> {
    PolicyScope::parse(text).map_err(ApiError::bad_request)
}

fn parse_version(text: &str) -> Result<i64, ApiError> {
    text.parse::<i64>()
        .ok()
        .filter(|v| *v >= 1)
        .ok_or_else(|| ApiError::bad_request(format!("version `{text}` is not a number from 1 up")))
}

fn check_comment(comment: &str) -> Result<(), ApiError> {
    if comment.chars().count() > MAX_COMMENT_CHARS {
        return Err(ApiError::bad_request(format!(
            "the comment is longer than {MAX_COMMENT_CHARS} characters; shorten it"
        )));
    }
    if comment
        .chars()
        .any(|c| c.is_control() && c != '\n' && c != '\t')
    {
        return Err(ApiError::bad_request(
            "the comment holds control characters; use plain text (newlines and tabs are fine)",
        ));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Validation of a layer in every combination it joins.

/// Checks `body` as the policy of `scope` on its own, then combined with the other scopes'
/// current versions in every way one device could run them: with the org layer, and with each
/// other scope that can apply to the same device (a group with another label, a service, or
/// groups for a service). Publishing the org layer checks it with each other scope.
fn check_layered(
    scope: &PolicyScope,
    body: &str,
    current: &[PolicyVersion],
) -> Result<Policy, PolicyError> {
    let own = Policy::from_toml(body)?;
    let scope_text = scope.to_string();
    let others: Vec<(PolicyScope, &PolicyVersion)> = current
        .iter()
        .filter(|v| v.info.scope != scope_text)
        .filter_map(|v| PolicyScope::parse(&v.info.scope).ok().map(|s| (s, v)))
        .collect();
    let org_body: Option<&str> = match scope {
        PolicyScope::Org => Some(body),
        _ => others
            .iter()
            .find(|(s, _)| *s == PolicyScope::Org)
            .map(|(_, v)| v.body.as_str()),
    };
    let combine = |extra: Option<(&PolicyScope, &str)>| -> Result<(), PolicyError> {
        let mut layers: Vec<(String, &str)> = Vec::with_capacity(3);
        if let Some(org) = org_body {
            layers.push(("org".to_string(), org));
        }
        let mut rest: Vec<(&PolicyScope, &str)> = Vec::with_capacity(2);
        if *scope != PolicyScope::Org {
            rest.push((scope, body));
        }
        rest.extend(extra);
        rest.sort_by(|a, b| a.0.layer_cmp(b.0));
        layers.extend(rest.into_iter().map(|(s, b)| (s.to_string(), b)));
        let borrowed: Vec<(&str, &str)> = layers.iter().map(|(n, b)| (n.as_str(), *b)).collect();
        Policy::from_layers(&borrowed).map(|_| ())
    };
    if *scope != PolicyScope::Org {
        combine(None)?;
    }
    for (other, version) in &others {
        if *other == PolicyScope::Org {
            continue;
        }
        if *scope == PolicyScope::Org || scope.can_combine(other) {
            combine(Some((other, version.body.as_str())))?;
        }
    }
    Ok(own)
}

/// Runs [`check_layered`] off the async runtime (regexes compile; many scopes mean many runs).
async fn check_layered_blocking(
    scope: PolicyScope,
    body: String,
    current: Vec<PolicyVersion>,
) -> PolicyResult<()> {
    let outcome =
        tokio::task::spawn_blocking(move || check_layered(&scope, &body, &current).map(|_| ()))
            .await
            .map_err(|e| ApiError::internal("policy validation stopped", e))?;
    outcome.map_err(PolicyApiError::Invalid)
}

/// The 409 for a publish over a version that is no longer current.
async fn stale(state: &AppState, org_id: &str, scope: &str, base: Option<i64>) -> PolicyApiError {
    let now = match state.store.current_policy_number(org_id, scope).await {
        Ok(n) => format!("version {n}"),
        Err(_) => "a newer version".to_string(),
    };
    let message = match base {
        Some(b) => format!(
            "policy `{scope}` is now at {now}, but this change was made to version {b}; \
             reload it, merge your change and publish again"
        ),
        None => format!(
            "another change to policy `{scope}` was saved at the same moment (it is now at \
             {now}); reload it and publish again"
        ),
    };
    PolicyApiError::Api(ApiError::conflict(message))
}

// ---------------------------------------------------------------------------------------------
// Handlers.

#[utoipa::path(get, path = "/api/v1/orgs/{org}/policies", tag = "policies",
    params(("org" = String, Path, description = "Organisation id or slug")),
    responses((status = 200, description = "Every scope with its current version", body = Vec<PolicyVersionView>)))]
async fn list_scopes(
    State(state): State<AppState>,
    caller: OrgCaller,
) -> PolicyResult<axum::Json<Vec<PolicyVersionView>>> {
    let scopes = state.store.list_policy_scopes(&caller.org.id).await?;
    Ok(axum::Json(
        scopes.iter().map(PolicyVersionView::info).collect(),
    ))
}

#[utoipa::path(get, path = "/api/v1/orgs/{org}/policies/{scope}/versions", tag = "policies",
    params(("org" = String, Path, description = "Organisation id or slug"),
           ("scope" = String, Path, description = "`org`, `group:<label>=<value>` or `service:<name>`"),
           PageQuery),
    responses((status = 200, body = PolicyVersionPage), (status = 400, body = super::error::ErrorBody)))]
async fn list_versions(
    State(state): State<AppState>,
    caller: OrgCaller,
    Path((_, scope)): Path<(String, String)>,
    query: Result<Query<PageQuery>, QueryRejection>,
) -> PolicyResult<axum::Json<PolicyVersionPage>> {
    let Query(page) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let scope = parse_scope(&scope)?.to_string();
    let limit = page.limit()?;
    let before = match page.key()? {
        Some(key) => Some(
            key.parse::<i64>()
                .map_err(|_| ApiError::bad_request("`cursor` is not one this server returned"))?,
        ),
        None => None,
    };
    let versions = state
        .store
        .list_policy_versions(&caller.org.id, &scope, before, limit + 1)
        .await?;
    let (versions, next_cursor) = finish(versions, limit, |v| v.version.to_string());
    Ok(axum::Json(PolicyVersionPage {
        items: versions.iter().map(PolicyVersionView::info).collect(),
        next_cursor,
    }))
}

#[utoipa::path(get, path = "/api/v1/orgs/{org}/policies/{scope}/versions/{version}", tag = "policies",
    params(("org" = String, Path, description = "Organisation id or slug"),
           ("scope" = String, Path, description = "`org`, `group:<label>=<value>` or `service:<name>`"),
           ("version" = i64, Path, description = "Version number")),
    responses((status = 200, body = PolicyVersionView), (status = 404, body = super::error::ErrorBody)))]
async fn get_version(
    State(state): State<AppState>,
    caller: OrgCaller,
    Path((_, scope, version)): Path<(String, String, String)>,
) -> PolicyResult<axum::Json<PolicyVersionView>> {
    let scope = parse_scope(&scope)?.to_string();
    let version = parse_version(&version)?;
    let found = state
        .store
        .policy_version(&caller.org.id, &scope, version)
        .await?
        .ok_or_else(|| ApiError::not_found(&format!("version {version} of policy `{scope}`")))?;
    Ok(axum::Json(PolicyVersionView::full(&found)))
}

/// A version to publish.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewVersion {
    /// The policy file (TOML, see POLICY.md).
    pub body: String,
    /// Why (shown in the history and the audit trail).
    pub comment: String,
    /// The version this edit started from (0 when the scope had none). When given and no longer
    /// current, the publish is refused with 409 so no one's change is silently lost.
    #[serde(default)]
    pub base_version: Option<i64>,
}

#[utoipa::path(post, path = "/api/v1/orgs/{org}/policies/{scope}/versions", tag = "policies",
    params(("org" = String, Path, description = "Organisation id or slug"),
           ("scope" = String, Path, description = "`org`, `group:<label>=<value>` or `service:<name>`")),
    request_body = NewVersion,
    responses((status = 201, body = PolicyVersionView),
              (status = 400, body = super::error::ErrorBody),
              (status = 409, description = "`base_version` is not the current version", body = super::error::ErrorBody),
              (status = 422, description = "The policy does not load, alone or with other layers", body = InvalidPolicyBody)))]
async fn publish(
    State(state): State<AppState>,
    caller: OrgCaller,
    Path((_, scope)): Path<(String, String)>,
    ApiJson(req): ApiJson<NewVersion>,
) -> PolicyResult<Response> {
    let scope = parse_scope(&scope)?;
    let created = publish_version(&state, &caller, scope, &req).await?;
    Ok((
        StatusCode::CREATED,
        axum::Json(PolicyVersionView::full(&created)),
    )
        .into_response())
}

/// Publishes `req` as the next version of `scope` (the API's publish and the edit page): the
/// comment is checked, the body must load alone and in every combination it joins, and a
/// `base_version` that is no longer current is a 409.
pub(crate) async fn publish_version(
    state: &AppState,
    caller: &OrgCaller,
    scope: PolicyScope,
    req: &NewVersion,
) -> PolicyResult<PolicyVersion> {
    check_comment(&req.comment)?;
    if let Some(base) = req.base_version
        && base < 0
    {
        return Err(ApiError::bad_request("`base_version` must be 0 or more").into());
    }
    let current = state.store.current_policies(&caller.org.id).await?;
    check_layered_blocking(scope.clone(), req.body.clone(), current).await?;
    let created = state
        .store
        .create_policy_version(&NewPolicyVersion {
            org_id: &caller.org.id,
            scope: &scope,
            body: &req.body,
            author_id: &caller.caller.user.id,
            comment: &req.comment,
            base_version: req.base_version,
            restored_from: None,
        })
        .await;
    let created = match created {
        Err(StoreError::Conflict(what)) if what == NEWER_POLICY_VERSION => {
            return Err(stale(state, &caller.org.id, &scope.to_string(), req.base_version).await);
        }
        other => other?,
    };
    record(state, caller, "policy.version_created", &created).await?;
    crate::link::policy_changed(state, &caller.org.id).await;
    Ok(created)
}

async fn record(
    state: &AppState,
    caller: &OrgCaller,
    kind: &str,
    v: &PolicyVersion,
) -> Result<(), ApiError> {
    caller
        .record(
            state,
            kind,
            &v.info.scope,
            serde_json::json!({
                "author": v.info.author_id,
                "scope": v.info.scope,
                "version": v.info.version,
                "comment": v.info.comment,
                "sha256": v.info.sha256,
                "restored_from": v.info.restored_from,
            }),
        )
        .await
}

/// Which versions to compare.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct DiffQuery {
    /// The old version.
    pub from: i64,
    /// The new version.
    pub to: i64,
}

/// A unified diff between two versions.
#[derive(Debug, Serialize, ToSchema)]
pub struct PolicyDiff {
    /// The scope.
    pub scope: String,
    /// The old version.
    pub from: i64,
    /// The new version.
    pub to: i64,
    /// SHA-256 of the old body.
    pub from_sha256: String,
    /// SHA-256 of the new body.
    pub to_sha256: String,
    /// Unified diff (3 lines of context), empty when the bodies are equal.
    pub diff: String,
}

#[utoipa::path(get, path = "/api/v1/orgs/{org}/policies/{scope}/diff", tag = "policies",
    params(("org" = String, Path, description = "Organisation id or slug"),
           ("scope" = String, Path, description = "`org`, `group:<label>=<value>` or `service:<name>`"),
           DiffQuery),
    responses((status = 200, body = PolicyDiff), (status = 404, body = super::error::ErrorBody)))]
async fn diff(
    State(state): State<AppState>,
    caller: OrgCaller,
    Path((_, scope)): Path<(String, String)>,
    query: Result<Query<DiffQuery>, QueryRejection>,
) -> PolicyResult<axum::Json<PolicyDiff>> {
    let Query(q) = query.map_err(|e| {
        ApiError::bad_request(format!(
            "{}; give two version numbers as ?from=A&to=B",
            e.body_text()
        ))
    })?;
    let scope = parse_scope(&scope)?.to_string();
    Ok(axum::Json(
        diff_versions(&state, &caller.org.id, &scope, q.from, q.to).await?,
    ))
}

/// The unified diff between versions `from` and `to` of `scope` (404 when either is missing).
pub(crate) async fn diff_versions(
    state: &AppState,
    org_id: &str,
    scope: &str,
    from: i64,
    to: i64,
) -> PolicyResult<PolicyDiff> {
    let load = |version: i64| async move {
        state
            .store
            .policy_version(org_id, scope, version)
            .await?
            .ok_or_else(|| {
                PolicyApiError::Api(ApiError::not_found(&format!(
                    "version {version} of policy `{scope}`"
                )))
            })
    };
    let old = load(from).await?;
    let new = load(to).await?;
    Ok(PolicyDiff {
        scope: scope.to_string(),
        from,
        to,
        diff: unified_diff(
            &format!("{scope}@{from}"),
            &format!("{scope}@{to}"),
            &old.body,
            &new.body,
        ),
        from_sha256: old.info.sha256,
        to_sha256: new.info.sha256,
    })
}

/// A unified diff with 3 lines of context and the two names as its header; empty when the
/// texts are equal.
pub(crate) fn unified_diff(old_name: &str, new_name: &str, old: &str, new: &str) -> String {
    if old == new {
        return String::new();
    }
    similar::TextDiff::from_lines(old, new)
        .unified_diff()
        .context_radius(3)
        .header(old_name, new_name)
        .to_string()
}

/// A rollback.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Rollback {
    /// The version whose body becomes current again (as a new version).
    pub version: i64,
    /// Why.
    pub comment: String,
    /// As for publishing: refused with 409 unless this is still the current version.
    #[serde(default)]
    pub base_version: Option<i64>,
}

#[utoipa::path(post, path = "/api/v1/orgs/{org}/policies/{scope}/rollback", tag = "policies",
    params(("org" = String, Path, description = "Organisation id or slug"),
           ("scope" = String, Path, description = "`org`, `group:<label>=<value>` or `service:<name>`")),
    request_body = Rollback,
    responses((status = 201, description = "The new version, with the old body", body = PolicyVersionView),
              (status = 404, body = super::error::ErrorBody),
              (status = 409, body = super::error::ErrorBody),
              (status = 422, description = "The old body no longer combines with the other layers", body = InvalidPolicyBody)))]
async fn rollback(
    State(state): State<AppState>,
    caller: OrgCaller,
    Path((_, scope)): Path<(String, String)>,
    ApiJson(req): ApiJson<Rollback>,
) -> PolicyResult<Response> {
    let scope = parse_scope(&scope)?;
    let created = rollback_version(&state, &caller, scope, &req).await?;
    Ok((
        StatusCode::CREATED,
        axum::Json(PolicyVersionView::full(&created)),
    )
        .into_response())
}

/// Publishes the body of version `req.version` of `scope` as its next version (the API's
/// rollback and the versions page), checked against the other layers as they are now.
pub(crate) async fn rollback_version(
    state: &AppState,
    caller: &OrgCaller,
    scope: PolicyScope,
    req: &Rollback,
) -> PolicyResult<PolicyVersion> {
    let scope_text = scope.to_string();
    check_comment(&req.comment)?;
    let old = state
        .store
        .policy_version(&caller.org.id, &scope_text, req.version)
        .await?
        .ok_or_else(|| {
            ApiError::not_found(&format!("version {} of policy `{scope_text}`", req.version))
        })?;
    // The old body was valid when published; the other layers may have changed since.
    let current = state.store.current_policies(&caller.org.id).await?;
    check_layered_blocking(scope, old.body.clone(), current).await?;
    let created = state
        .store
        .rollback_policy(&old, &caller.caller.user.id, &req.comment, req.base_version)
        .await;
    let created = match created {
        Err(StoreError::Conflict(what)) if what == NEWER_POLICY_VERSION => {
            return Err(stale(state, &caller.org.id, &scope_text, req.base_version).await);
        }
        other => other?,
    };
    record(state, caller, "policy.rolled_back", &created).await?;
    crate::link::policy_changed(state, &caller.org.id).await;
    Ok(created)
}

/// A policy to check without saving it.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ValidateRequest {
    /// The policy file (TOML).
    pub body: String,
    /// When given, the body is also checked as this scope's layer in every combination it
    /// would join, as publishing does.
    #[serde(default)]
    pub scope: Option<String>,
}

/// The verdict on a policy.
#[derive(Debug, Serialize, ToSchema)]
pub struct ValidateResult {
    /// Whether it loads.
    pub valid: bool,
    /// Why not (empty when valid); the message includes the position.
    pub errors: Vec<ValidateError>,
    /// How many rules it has (when valid).
    pub rules: Option<usize>,
    /// How many rate limits it has (when valid).
    pub rate_limits: Option<usize>,
}

/// One reason a policy does not load.
#[derive(Debug, Serialize, ToSchema)]
pub struct ValidateError {
    /// `[layer `…`, ]line L, column C: what is wrong`.
    pub message: String,
    /// The layer, when the error comes from combining layers.
    pub layer: Option<String>,
    /// 1-based line, when known.
    pub line: Option<usize>,
    /// 1-based column, when known.
    pub column: Option<usize>,
}

#[utoipa::path(post, path = "/api/v1/orgs/{org}/policies/validate", tag = "policies",
    params(("org" = String, Path, description = "Organisation id or slug")),
    request_body = ValidateRequest,
    responses((status = 200, description = "Valid or not, with positions", body = ValidateResult),
              (status = 400, body = super::error::ErrorBody)))]
async fn validate(
    State(state): State<AppState>,
    caller: OrgCaller,
    ApiJson(req): ApiJson<ValidateRequest>,
) -> PolicyResult<axum::Json<ValidateResult>> {
    let scope = req.scope.as_deref().map(parse_scope).transpose()?;
    Ok(axum::Json(
        validate_body(&state, &caller.org.id, scope, req.body).await?,
    ))
}

/// Whether `body` loads on its own or, with `scope`, as that scope's layer in every combination
/// it would join (the API's validate and the edit page's check).
pub(crate) async fn validate_body(
    state: &AppState,
    org_id: &str,
    scope: Option<PolicyScope>,
    body: String,
) -> PolicyResult<ValidateResult> {
    let current = match scope {
        Some(_) => state.store.current_policies(org_id).await?,
        None => Vec::new(),
    };
    let outcome = tokio::task::spawn_blocking(move || match scope {
        Some(scope) => check_layered(&scope, &body, &current),
        None => Policy::from_toml(&body),
    })
    .await
    .map_err(|e| ApiError::internal("policy validation stopped", e))?;
    Ok(match outcome {
        Ok(policy) => ValidateResult {
            valid: true,
            errors: Vec::new(),
            rules: Some(policy.rule_count()),
            rate_limits: Some(policy.rate_limit_count()),
        },
        Err(e) => ValidateResult {
            valid: false,
            errors: vec![ValidateError {
                message: e.to_string(),
                layer: e.layer.clone(),
                line: e.line,
                column: e.column,
            }],
            rules: None,
            rate_limits: None,
        },
    })
}

/// A call to explain.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExplainRequest {
    /// The MCP client's name (`claude-code`, `cursor`, …).
    pub agent: String,
    /// The proxy's service name.
    pub service: String,
    /// The tool.
    pub tool: String,
    /// The call's arguments (default `null`).
    #[serde(default)]
    #[schema(value_type = Object)]
    pub arguments: serde_json::Value,
    /// The device's labels; they select `group:` layers and are matched by rules.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// An unsaved policy to test instead of the stored ones. Alone it is explained on its own;
    /// with `scope` it takes that scope's place among the layers that apply.
    #[serde(default)]
    pub body: Option<String>,
    /// The scope `body` stands for (needs `body`).
    #[serde(default)]
    pub scope: Option<String>,
}

/// A layer used for an explanation.
#[derive(Debug, Serialize, ToSchema)]
pub struct LayerRef {
    /// Its scope.
    pub scope: String,
    /// Its version; absent for an unsaved body.
    pub version: Option<i64>,
}

/// What the shield found in an argument.
#[derive(Debug, Serialize, ToSchema)]
pub struct FindingView {
    /// Stable dotted id (`filesystem.delete_home`).
    pub id: String,
    /// Category.
    pub category: String,
    /// 0-100.
    pub risk: u8,
    /// What it would do and what to do instead.
    pub explanation: String,
    /// The argument it was found in (JSON pointer).
    pub pointer: String,
    /// How the argument was read (`shell`, `sql`, `path`, `url`).
    pub kind: String,
}

/// What one rule did for the call.
#[derive(Debug, Serialize, ToSchema)]
pub struct RuleTraceView {
    /// The rule id.
    pub rule_id: String,
    /// The layer (scope) it comes from; absent for a body explained alone.
    pub layer: Option<String>,
    /// Its priority.
    pub priority: i64,
    /// Its action.
    pub action: String,
    /// Its description.
    pub description: Option<String>,
    /// How many argument conditions it has.
    pub conditions: usize,
    /// `decided`, `outranked`, `lower_priority` or `not_matched`.
    pub outcome: String,
    /// For `outranked`: the rule that won.
    pub by: Option<String>,
    /// For `not_matched`: which selector or condition failed.
    pub reason: Option<String>,
}

/// Which rule decides a call, and why.
#[derive(Debug, Serialize, ToSchema)]
pub struct ExplainResult {
    /// `allow`, `block`, `approve` or `confirm`.
    pub decision: String,
    /// The deciding rule (`shield` for the shield's thresholds); absent for the default action.
    pub rule_id: Option<String>,
    /// The layer of the deciding rule.
    pub layer: Option<String>,
    /// What the agent is told.
    pub message: Option<String>,
    /// One sentence saying why.
    pub reason: String,
    /// The highest shield risk, 0-100.
    pub risk: u8,
    /// Shield findings, highest risk first.
    pub findings: Vec<FindingView>,
    /// The policy's default action.
    pub default_action: String,
    /// Every rule in evaluation order.
    pub trace: Vec<RuleTraceView>,
    /// The layers the policy was built from, least specific first.
    pub layers: Vec<LayerRef>,
    /// The explanation as text for people.
    pub text: String,
}

#[utoipa::path(post, path = "/api/v1/orgs/{org}/policies/explain", tag = "policies",
    params(("org" = String, Path, description = "Organisation id or slug")),
    request_body = ExplainRequest,
    responses((status = 200, body = ExplainResult),
              (status = 400, body = super::error::ErrorBody),
              (status = 422, description = "The policy does not load", body = InvalidPolicyBody)))]
async fn explain(
    State(state): State<AppState>,
    caller: OrgCaller,
    ApiJson(req): ApiJson<ExplainRequest>,
) -> PolicyResult<axum::Json<ExplainResult>> {
    Ok(axum::Json(explain_call(&state, &caller.org.id, req).await?))
}

/// Which rule decides `req`'s call under the organisation's stored layers, or under an unsaved
/// body (alone, or in place of `req.scope`'s layer), and why (the API's explain and the tester
/// page).
pub(crate) async fn explain_call(
    state: &AppState,
    org_id: &str,
    req: ExplainRequest,
) -> PolicyResult<ExplainResult> {
    let scope = req.scope.as_deref().map(parse_scope).transpose()?;
    let layers: Vec<(String, Option<i64>, String)> = match (&req.body, &scope) {
        (None, Some(_)) => {
            return Err(ApiError::bad_request(
                "`scope` names the layer `body` replaces; give `body` too",
            )
            .into());
        }
        (Some(body), None) => vec![(String::new(), None, body.clone())],
        (_, scope) => {
            if let Some(scope) = scope
                && !scope.applies_to(Some(&req.service), &req.labels)
            {
                return Err(ApiError::bad_request(format!(
                    "scope `{scope}` does not apply to service `{}` with these labels; \
                     explain a call it would see",
                    req.service
                ))
                .into());
            }
            let stored = state
                .store
                .policy_layers(org_id, Some(&req.service), &req.labels)
                .await?;
            let mut layers: Vec<(String, Option<i64>, String)> = stored
                .into_iter()
                .map(|v| (v.info.scope, Some(v.info.version), v.body))
                .collect();
            if let (Some(scope), Some(body)) = (scope, &req.body) {
                let name = scope.to_string();
                layers.retain(|(s, _, _)| *s != name);
                layers.push((name, None, body.clone()));
                layers.sort_by(|a, b| layer_order(&a.0, &b.0));
            }
            layers
        }
    };
    let alone = req.body.is_some() && scope.is_none();
    let (policy, layers) = tokio::task::spawn_blocking(move || {
        let result = match (alone, layers.first()) {
            (true, Some((_, _, body))) => Policy::from_toml(body),
            _ => {
                let borrowed: Vec<(&str, &str)> = layers
                    .iter()
                    .map(|(s, _, b)| (s.as_str(), b.as_str()))
                    .collect();
                Policy::from_layers(&borrowed)
            }
        };
        (result, layers)
    })
    .await
    .map_err(|e| ApiError::internal("policy loading stopped", e))?;
    let policy = policy.map_err(PolicyApiError::Invalid)?;

    let labels: Labels = req.labels.clone();
    let call = ToolCall {
        agent: &req.agent,
        service: &req.service,
        tool: &req.tool,
        arguments: &req.arguments,
        labels: &labels,
    };
    let explanation = policy.explain(&call);
    let d = &explanation.decision;
    let deciding_layer = explanation
        .steps
        .iter()
        .find(|s| matches!(s.outcome, TraceOutcome::Decided))
        .and_then(|s| s.layer.clone());
    Ok(ExplainResult {
        decision: d.action.as_str().to_string(),
        rule_id: d.rule_id.clone(),
        layer: deciding_layer,
        message: d.message.clone(),
        reason: d.reason.clone(),
        risk: d.risk,
        findings: d
            .findings
            .iter()
            .map(|f| FindingView {
                id: f.finding.id.to_string(),
                category: f.finding.category.as_str().to_string(),
                risk: f.finding.risk,
                explanation: f.finding.explanation.clone(),
                pointer: f.pointer.clone(),
                kind: f.kind.as_str().to_string(),
            })
            .collect(),
        default_action: explanation.default_action.as_str().to_string(),
        trace: explanation
            .steps
            .iter()
            .map(|s| {
                let (outcome, by, reason) = match &s.outcome {
                    TraceOutcome::Decided => ("decided", None, None),
                    TraceOutcome::Outranked { by } => ("outranked", Some(by.clone()), None),
                    TraceOutcome::LowerPriority => ("lower_priority", None, None),
                    TraceOutcome::NotMatched { reason } => {
                        ("not_matched", None, Some(reason.clone()))
                    }
                };
                RuleTraceView {
                    rule_id: s.rule_id.clone(),
                    layer: s.layer.clone(),
                    priority: s.priority,
                    action: s.action.as_str().to_string(),
                    description: s.description.clone(),
                    conditions: s.conditions,
                    outcome: outcome.to_string(),
                    by,
                    reason,
                }
            })
            .collect(),
        layers: layers
            .into_iter()
            .filter(|_| !alone)
            .map(|(scope, version, _)| LayerRef { scope, version })
            .collect(),
        text: explanation.to_string(),
    })
}

fn layer_order(a: &str, b: &str) -> std::cmp::Ordering {
    match (PolicyScope::parse(a), PolicyScope::parse(b)) {
        (Ok(a), Ok(b)) => a.layer_cmp(&b),
        _ => a.cmp(b),
    }
}

/// Which device a bundle is for.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct BundleQuery {
    /// The proxy's service name; `service:<name>` applies when given.
    pub service: Option<String>,
    /// The device's labels as `key=value,key2=value2`; `group:<key>=<value>` scopes apply when
    /// a label matches.
    pub labels: Option<String>,
}

/// Parses `k=v,k2=v2`.
pub(crate) fn parse_labels(text: &str) -> Result<BTreeMap<String, String>, ApiError> {
    let mut labels = BTreeMap::new();
    for pair in text.split(',').filter(|p| !p.is_empty()) {
        let Some((key, value)) = pair.split_once('=') else {
            return Err(ApiError::bad_request(format!(
                "label `{pair}` must look like key=value (labels are `k=v,k2=v2`)"
            )));
        };
        if key.is_empty() {
            return Err(ApiError::bad_request(format!(
                "label `{pair}` has an empty name"
            )));
        }
        if labels.insert(key.to_string(), value.to_string()).is_some() {
            return Err(ApiError::bad_request(format!(
                "label `{key}` is given twice; give each label once"
            )));
        }
    }
    Ok(labels)
}

/// A signed policy bundle (`flowlink_proto::bundle::SignedBundle`, schema 1).
#[derive(Debug, Serialize, ToSchema)]
pub struct SignedBundleDoc {
    /// The exact JSON text of the bundle that was signed: `{schema, org_id, key_id, issued_at
    /// (Unix µs), selector {service, labels}, layers [{scope, version, sha256, body}]}`.
    pub payload: String,
    /// Base64 (standard, padded) Ed25519 signature over `payload`'s UTF-8 bytes.
    pub signature: String,
    /// The signing key's id (see `GET /signing-key`).
    pub key_id: String,
}

#[utoipa::path(get, path = "/api/v1/orgs/{org}/policies/bundle", tag = "policies",
    params(("org" = String, Path, description = "Organisation id or slug"), BundleQuery),
    responses((status = 200, body = SignedBundleDoc),
              (status = 400, body = super::error::ErrorBody),
              (status = 422, description = "The layers for this selector do not combine", body = InvalidPolicyBody)))]
async fn bundle(
    State(state): State<AppState>,
    caller: OrgCaller,
    query: Result<Query<BundleQuery>, QueryRejection>,
) -> PolicyResult<axum::Json<SignedBundle>> {
    let Query(q) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let labels = parse_labels(q.labels.as_deref().unwrap_or(""))?;
    let service = q.service.filter(|s| !s.is_empty());
    Ok(axum::Json(
        signed_bundle(&state.store, &caller.org.id, service, labels).await?,
    ))
}

/// The signed bundle for a device of `org_id` with this service name and these labels: the
/// current layers that apply, checked to load together, signed with the org's key. Served by
/// `GET /policies/bundle` and pushed over the link (`crate::link`).
pub async fn signed_bundle(
    store: &crate::store::Store,
    org_id: &str,
    service: Option<String>,
    labels: BTreeMap<String, String>,
) -> PolicyResult<SignedBundle> {
    let versions = store
        .policy_layers(org_id, service.as_deref(), &labels)
        .await?;
    // Never sign what a proxy could not load.
    let check: Vec<(String, String)> = versions
        .iter()
        .map(|v| (v.info.scope.clone(), v.body.clone()))
        .collect();
    tokio::task::spawn_blocking(move || {
        let borrowed: Vec<(&str, &str)> = check
            .iter()
            .map(|(s, b)| (s.as_str(), b.as_str()))
            .collect();
        Policy::from_layers(&borrowed).map(|_| ())
    })
    .await
    .map_err(|e| ApiError::internal("policy loading stopped", e))?
    .map_err(PolicyApiError::Invalid)?;

    let key = store.org_signing_key(org_id).await?;
    let bundle = PolicyBundle {
        schema: BUNDLE_SCHEMA,
        org_id: org_id.to_string(),
        key_id: key.key_id.clone(),
        issued_at: now_us(),
        selector: BundleSelector { service, labels },
        layers: versions
            .into_iter()
            .map(|v| BundleLayer {
                scope: v.info.scope,
                version: v.info.version,
                sha256: v.info.sha256,
                body: v.body,
            })
            .collect(),
    };
    let signed = SignedBundle::sign(&bundle, &key.signing_key())
        .map_err(|e| ApiError::internal("the policy bundle cannot be signed", e))?;
    Ok(signed)
}

/// The organisation's public key for policy bundles.
#[derive(Debug, Serialize, ToSchema)]
pub struct SigningKeyView {
    /// Hex of the first 16 bytes of SHA-256 of the public key; bundles name it.
    pub key_id: String,
    /// `ed25519`.
    pub algorithm: String,
    /// The 32-byte public key, base64 (standard, padded).
    pub public_key: String,
    /// When it was made (RFC 3339).
    pub created_at: String,
}

#[utoipa::path(get, path = "/api/v1/orgs/{org}/signing-key", tag = "policies",
    params(("org" = String, Path, description = "Organisation id or slug")),
    responses((status = 200, description = "Made on first use", body = SigningKeyView)))]
async fn signing_key(
    State(state): State<AppState>,
    caller: OrgCaller,
) -> PolicyResult<axum::Json<SigningKeyView>> {
    let key = state.store.org_signing_key(&caller.org.id).await?;
    Ok(axum::Json(SigningKeyView {
        key_id: key.key_id.clone(),
        algorithm: "ed25519".to_string(),
        public_key: STANDARD.encode(key.public_key),
        created_at: rfc3339(key.created_at),
    }))
}

/// The OpenAPI fragment of this module.
#[derive(utoipa::OpenApi)]
#[openapi(
    paths(
        list_scopes,
        list_versions,
        get_version,
        publish,
        diff,
        rollback,
        validate,
        explain,
        bundle,
        signing_key
    ),
    components(schemas(
        PolicyVersionView,
        PolicyVersionPage,
        NewVersion,
        PolicyDiff,
        Rollback,
        ValidateRequest,
        ValidateResult,
        ValidateError,
        ExplainRequest,
        ExplainResult,
        LayerRef,
        FindingView,
        RuleTraceView,
        SignedBundleDoc,
        SigningKeyView,
        PolicyProblem,
        InvalidPolicyBody,
        InvalidPolicyDetail
    ))
)]
pub struct Doc;

#[cfg(test)]
mod tests {
    use super::*;

    fn version(scope: &str, body: &str) -> PolicyVersion {
        PolicyVersion {
            info: PolicyVersionInfo {
                org_id: "o".into(),
                scope: scope.into(),
                version: 1,
                sha256: String::new(),
                author_id: "u".into(),
                author_email: None,
                comment: String::new(),
                created_at: 0,
                restored_from: None,
            },
            body: body.into(),
        }
    }

    fn rule(id: &str) -> String {
        format!("version = 1\n[[rules]]\nid = \"{id}\"\naction = \"allow\"\n")
    }

    #[test]
    fn layered_check_covers_every_combination() {
        let scope = |s: &str| PolicyScope::parse(s).expect(s);
        let current = vec![
            version("org", &rule("o")),
            version("group:env=prod", &rule("g")),
            version("group:team=x", &rule("t")),
            version("service:a", &rule("a")),
        ];
        // Clashes with the org.
        let e = check_layered(&scope("service:b"), &rule("o"), &current).expect_err("org");
        assert_eq!(e.layer.as_deref(), Some("service:b"));
        // Clashes with a group a service can run with.
        let e = check_layered(&scope("service:b"), &rule("g"), &current).expect_err("group");
        assert!(e.message.contains("group:env=prod"), "{e}");
        // Another service never runs alongside: no clash.
        check_layered(&scope("service:b"), &rule("a"), &current).expect("services");
        // Another value of the same label never applies alongside.
        check_layered(&scope("group:env=dev"), &rule("g"), &current).expect("same label");
        check_layered(&scope("group:env=dev"), &rule("t"), &current).expect_err("other label");
        // The org is checked with every scope.
        let e = check_layered(&scope("org"), &rule("a"), &current).expect_err("org vs service");
        assert_eq!(e.layer.as_deref(), Some("service:a"));
        // Replacing a scope checks the new body, not the old one.
        check_layered(&scope("service:a"), &rule("a"), &current).expect("same scope");
        // The body alone.
        let e =
            check_layered(&scope("org"), "version = 1\n[[rules]\n", &current).expect_err("toml");
        assert_eq!((e.layer, e.line), (None, Some(2)));
    }

    #[test]
    fn labels_parse() {
        let l = parse_labels("env=prod,team=x").expect("labels");
        assert_eq!(l.len(), 2);
        assert_eq!(parse_labels("").expect("none").len(), 0);
        assert!(parse_labels("env").is_err());
        assert!(parse_labels("=x").is_err());
        assert!(parse_labels("a=1,a=2").is_err());
    }
}
