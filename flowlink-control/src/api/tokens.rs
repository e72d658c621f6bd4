//! API tokens for automation: bound to one organisation, scoped to a subset of their
//! creator's permissions (re-checked on every use), expiring, stored only as a hash.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::auth::{check_display_name, rfc3339};
use super::extract::TOKEN_PREFIX;
use super::page::{PageQuery, finish};
use super::{Access, ApiError, ApiJson, ApiResult, ApiRoute, AppState, OrgCaller, no_content};
use crate::auth::secret::{random_token, sha256_hex};
use crate::auth::{Permission, PermissionSet};
use crate::store::{ApiToken, new_id, now_us};

/// The routes of this module.
pub fn routes() -> Vec<ApiRoute> {
    use Permission::TokenManage;
    vec![
        ApiRoute::new(
            Method::GET,
            "/api/v1/orgs/{org}/tokens",
            Access::Org(TokenManage),
            list_tokens,
        ),
        ApiRoute::new(
            Method::POST,
            "/api/v1/orgs/{org}/tokens",
            Access::Org(TokenManage),
            create_token,
        ),
        ApiRoute::new(
            Method::DELETE,
            "/api/v1/orgs/{org}/tokens/{token}",
            Access::Org(TokenManage),
            revoke_token,
        ),
    ]
}

/// Longest token lifetime.
pub const MAX_DAYS: u32 = 366;

/// A token's metadata.
#[derive(Debug, Serialize, ToSchema)]
pub struct TokenView {
    /// Id.
    pub id: String,
    /// Label.
    pub name: String,
    /// Creator's user id.
    pub created_by: String,
    /// Permission names.
    pub scopes: Vec<String>,
    /// Creation time.
    pub created_at: String,
    /// Expiry.
    pub expires_at: String,
    /// Last use.
    pub last_used_at: Option<String>,
    /// Revocation time.
    pub revoked_at: Option<String>,
}

impl From<&ApiToken> for TokenView {
    fn from(t: &ApiToken) -> TokenView {
        TokenView {
            id: t.id.clone(),
            name: t.name.clone(),
            created_by: t.user_id.clone(),
            scopes: t.scopes.split_whitespace().map(str::to_string).collect(),
            created_at: rfc3339(t.created_at),
            expires_at: rfc3339(t.expires_at),
            last_used_at: t.last_used_at.map(rfc3339),
            revoked_at: t.revoked_at.map(rfc3339),
        }
    }
}

/// A page of tokens, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct TokenPage {
    /// The tokens.
    pub items: Vec<TokenView>,
    /// Pass as `cursor` for the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

#[utoipa::path(get, path = "/api/v1/orgs/{org}/tokens", tag = "tokens",
    params(("org" = String, Path, description = "Organisation id or slug"), PageQuery),
    responses((status = 200, body = TokenPage)))]
async fn list_tokens(
    State(state): State<AppState>,
    caller: OrgCaller,
    query: Result<Query<PageQuery>, QueryRejection>,
) -> ApiResult<axum::Json<TokenPage>> {
    let Query(page) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let limit = page.limit()?;
    let tokens = state
        .store
        .list_api_tokens(&caller.org.id, page.key()?.as_deref(), i64::from(limit) + 1)
        .await?;
    let (tokens, next_cursor) = finish(tokens, limit, |t| t.id.clone());
    Ok(axum::Json(TokenPage {
        items: tokens.iter().map(TokenView::from).collect(),
        next_cursor,
    }))
}

/// A token to create.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewToken {
    /// Label, e.g. "CI policy deploy".
    pub name: String,
    /// Permission names, e.g. `["policy:read", "policy:write"]`; each must be one the creator has.
    pub scopes: Vec<String>,
    /// Days until it expires (1-366, default 90).
    #[serde(default)]
    pub expires_in_days: Option<u32>,
}

/// A created token: the secret is shown this once.
#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedToken {
    /// Send as `Authorization: Bearer <token>`. Not stored; cannot be shown again.
    pub token: String,
    /// Its metadata.
    pub info: TokenView,
}

/// Makes a token for `user_id` in `org_id` (API and `flowlink-control admin create-token`).
/// Returns the secret text and the stored record.
pub async fn issue(
    store: &crate::store::Store,
    org_id: &str,
    user_id: &str,
    name: &str,
    scopes: PermissionSet,
    days: u32,
) -> Result<(String, ApiToken), crate::store::StoreError> {
    let id = new_id().replace('-', "");
    let secret = format!("{TOKEN_PREFIX}{id}.{}", random_token(32));
    let now = now_us();
    let token = ApiToken {
        id,
        org_id: org_id.to_string(),
        user_id: user_id.to_string(),
        name: name.to_string(),
        scopes: scopes.to_scope_string(),
        created_at: now,
        expires_at: now + i64::from(days) * 86_400_000_000,
        last_used_at: None,
        revoked_at: None,
    };
    store.create_api_token(&token, &sha256_hex(&secret)).await?;
    Ok((secret, token))
}

#[utoipa::path(post, path = "/api/v1/orgs/{org}/tokens", tag = "tokens", params(("org" = String, Path, description = "Organisation id or slug")),
    request_body = NewToken, responses((status = 201, body = CreatedToken), (status = 400, body = super::error::ErrorBody), (status = 403, body = super::error::ErrorBody)))]
async fn create_token(
    State(state): State<AppState>,
    caller: OrgCaller,
    ApiJson(req): ApiJson<NewToken>,
) -> ApiResult<Response> {
    let (secret, token) = create_for(&state, &caller, &req).await?;
    Ok((
        StatusCode::CREATED,
        axum::Json(CreatedToken {
            token: secret,
            info: TokenView::from(&token),
        }),
    )
        .into_response())
}

/// Creates a token for the caller and records it (the API's and the tokens page's): scopes are
/// capped at the creator's own permissions. Returns the secret text (shown once) and the record.
pub(crate) async fn create_for(
    state: &AppState,
    caller: &OrgCaller,
    req: &NewToken,
) -> ApiResult<(String, ApiToken)> {
    check_display_name(&req.name)?;
    if req.scopes.is_empty() {
        return Err(ApiError::bad_request("give the token at least one scope"));
    }
    let scopes =
        PermissionSet::parse_scopes(&req.scopes.join(" ")).map_err(ApiError::bad_request)?;
    if !scopes.is_subset(caller.permissions) {
        let missing: Vec<&str> = scopes
            .iter()
            .filter(|p| !caller.permissions.contains(*p))
            .map(Permission::as_str)
            .collect();
        return Err(ApiError::forbidden(format!(
            "a token cannot have permissions its creator lacks: {}",
            missing.join(", ")
        )));
    }
    let days = req.expires_in_days.unwrap_or(90);
    if !(1..=MAX_DAYS).contains(&days) {
        return Err(ApiError::bad_request(format!(
            "expires_in_days must be 1..={MAX_DAYS}"
        )));
    }
    let (secret, token) = issue(
        &state.store,
        &caller.org.id,
        &caller.caller.user.id,
        req.name.trim(),
        scopes,
        days,
    )
    .await?;
    caller
        .record(state, "token.created", &token.id, serde_json::json!({"name": token.name, "scopes": token.scopes, "expires_at": rfc3339(token.expires_at)}))
        .await?;
    Ok((secret, token))
}

#[utoipa::path(delete, path = "/api/v1/orgs/{org}/tokens/{token}", tag = "tokens",
    params(("org" = String, Path, description = "Organisation id or slug"), ("token" = String, Path, description = "Token id")),
    responses((status = 204), (status = 404, body = super::error::ErrorBody)))]
async fn revoke_token(
    State(state): State<AppState>,
    caller: OrgCaller,
    Path((_, token_id)): Path<(String, String)>,
) -> ApiResult<Response> {
    revoke(&state, &caller, &token_id).await?;
    Ok(no_content())
}

/// Revokes a live token of the caller's organisation and records it (the API's and the tokens
/// page's).
pub(crate) async fn revoke(state: &AppState, caller: &OrgCaller, token_id: &str) -> ApiResult<()> {
    if !state
        .store
        .revoke_api_token(&caller.org.id, token_id)
        .await?
    {
        return Err(ApiError::not_found("live token"));
    }
    caller
        .record(state, "token.revoked", token_id, serde_json::json!({}))
        .await?;
    Ok(())
}

/// The OpenAPI fragment of this module.
#[derive(utoipa::OpenApi)]
#[openapi(
    paths(list_tokens, create_token, revoke_token),
    components(schemas(TokenView, TokenPage, NewToken, CreatedToken))
)]
pub struct Doc;
