//! An organisation's settings and members.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::auth::{UserView, check_display_name, check_email, rfc3339};
use super::page::{PageQuery, finish};
use super::{Access, ApiError, ApiJson, ApiResult, ApiRoute, AppState, OrgCaller, no_content};
use crate::auth::{Permission, Role, password};
use crate::store::{Member, Org};

/// The routes of this module.
pub fn routes() -> Vec<ApiRoute> {
    use Permission::*;
    vec![
        ApiRoute::new(
            Method::GET,
            "/api/v1/orgs/{org}",
            Access::Org(OrgRead),
            get_org,
        ),
        ApiRoute::new(
            Method::PATCH,
            "/api/v1/orgs/{org}",
            Access::Org(OrgManage),
            update_org,
        ),
        ApiRoute::new(
            Method::GET,
            "/api/v1/orgs/{org}/members",
            Access::Org(MemberRead),
            list_members,
        ),
        ApiRoute::new(
            Method::POST,
            "/api/v1/orgs/{org}/members",
            Access::Org(MemberManage),
            add_member,
        ),
        ApiRoute::new(
            Method::PATCH,
            "/api/v1/orgs/{org}/members/{user}",
            Access::Org(MemberManage),
            change_role,
        ),
        ApiRoute::new(
            Method::DELETE,
            "/api/v1/orgs/{org}/members/{user}",
            Access::Org(MemberManage),
            remove_member,
        ),
    ]
}

/// An organisation.
#[derive(Debug, Serialize, ToSchema)]
pub struct OrgView {
    /// Id.
    pub id: String,
    /// Slug.
    pub slug: String,
    /// Name.
    pub name: String,
    /// Members need a second factor.
    pub require_2fa: bool,
    /// Creation time.
    pub created_at: String,
    /// The caller's role.
    pub your_role: String,
    /// The caller's permissions here.
    pub your_permissions: Vec<String>,
}

fn org_view(org: &Org, caller: &OrgCaller) -> OrgView {
    OrgView {
        id: org.id.clone(),
        slug: org.slug.clone(),
        name: org.name.clone(),
        require_2fa: org.require_2fa,
        created_at: rfc3339(org.created_at),
        your_role: caller.role.to_string(),
        your_permissions: caller
            .permissions
            .iter()
            .map(|p| p.as_str().to_string())
            .collect(),
    }
}

#[utoipa::path(get, path = "/api/v1/orgs/{org}", tag = "orgs", params(("org" = String, Path, description = "Organisation id or slug")),
    responses((status = 200, body = OrgView), (status = 404, body = super::error::ErrorBody)))]
async fn get_org(caller: OrgCaller) -> axum::Json<OrgView> {
    axum::Json(org_view(&caller.org, &caller))
}

/// Changes to an organisation.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OrgUpdate {
    /// New name.
    #[serde(default)]
    pub name: Option<String>,
    /// Require a second factor of every member.
    #[serde(default)]
    pub require_2fa: Option<bool>,
}

#[utoipa::path(patch, path = "/api/v1/orgs/{org}", tag = "orgs", params(("org" = String, Path, description = "Organisation id or slug")),
    request_body = OrgUpdate, responses((status = 200, body = OrgView), (status = 409, body = super::error::ErrorBody)))]
async fn update_org(
    State(state): State<AppState>,
    caller: OrgCaller,
    ApiJson(req): ApiJson<OrgUpdate>,
) -> ApiResult<axum::Json<OrgView>> {
    let org = apply_org_update(&state, &caller, &req).await?;
    Ok(axum::Json(org_view(&org, &caller)))
}

/// Changes an organisation's name and 2FA rule and records it (the API's and the settings
/// page's); returns the organisation as it now is.
pub(crate) async fn apply_org_update(
    state: &AppState,
    caller: &OrgCaller,
    req: &OrgUpdate,
) -> ApiResult<Org> {
    let mut org = caller.org.clone();
    if let Some(name) = &req.name {
        check_display_name(name)?;
        org.name = name.trim().to_string();
    }
    if let Some(require) = req.require_2fa {
        if require && !caller.caller.user.totp_enabled {
            return Err(ApiError::conflict(
                "set up your own authenticator app before requiring one of everybody, or you would lock yourself out",
            ));
        }
        org.require_2fa = require;
    }
    state
        .store
        .update_org(&org.id, &org.name, org.require_2fa)
        .await?;
    caller
        .record(
            state,
            "org.updated",
            &org.id,
            serde_json::json!({"name": org.name, "require_2fa": org.require_2fa, "was_require_2fa": caller.org.require_2fa}),
        )
        .await?;
    Ok(org)
}

/// A member.
#[derive(Debug, Serialize, ToSchema)]
pub struct MemberView {
    /// The person.
    pub user: UserView,
    /// Their role.
    pub role: String,
    /// When they joined.
    pub joined_at: String,
}

impl From<&Member> for MemberView {
    fn from(m: &Member) -> MemberView {
        MemberView {
            user: UserView::from(&m.user),
            role: m.role.clone(),
            joined_at: rfc3339(m.joined_at),
        }
    }
}

/// A page of members, by e-mail.
#[derive(Debug, Serialize, ToSchema)]
pub struct MemberPage {
    /// The members.
    pub items: Vec<MemberView>,
    /// Pass as `cursor` for the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

#[utoipa::path(get, path = "/api/v1/orgs/{org}/members", tag = "orgs",
    params(("org" = String, Path, description = "Organisation id or slug"), PageQuery),
    responses((status = 200, body = MemberPage)))]
async fn list_members(
    State(state): State<AppState>,
    caller: OrgCaller,
    query: Result<Query<PageQuery>, QueryRejection>,
) -> ApiResult<axum::Json<MemberPage>> {
    let Query(page) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let limit = page.limit()?;
    let after = page.key()?.unwrap_or_default();
    let members = state
        .store
        .list_members_page(&caller.org.id, &after, i64::from(limit) + 1)
        .await?;
    let (members, next_cursor) = finish(members, limit, |m| m.user.email.clone());
    Ok(axum::Json(MemberPage {
        items: members.iter().map(MemberView::from).collect(),
        next_cursor,
    }))
}

/// A person to add.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewMember {
    /// Their e-mail address. An existing account is added; otherwise one is created.
    pub email: String,
    /// owner, admin, approver, auditor or viewer.
    pub role: String,
    /// Name for a new account.
    #[serde(default)]
    pub display_name: Option<String>,
    /// Initial password for a new account (they should change it). Without one the account
    /// can only sign in through a configured OAuth provider with this verified address.
    #[serde(default)]
    pub password: Option<String>,
}

pub(crate) fn parse_role(s: &str) -> Result<Role, ApiError> {
    s.parse().map_err(ApiError::bad_request)
}

pub(crate) fn owner_guard(caller: &OrgCaller, touches_owner: bool) -> Result<(), ApiError> {
    if touches_owner && caller.role != Role::Owner {
        return Err(ApiError::forbidden(
            "only an owner can make, change or remove owners",
        ));
    }
    Ok(())
}

#[utoipa::path(post, path = "/api/v1/orgs/{org}/members", tag = "orgs", params(("org" = String, Path, description = "Organisation id or slug")),
    request_body = NewMember, responses((status = 201, body = MemberView), (status = 409, body = super::error::ErrorBody)))]
async fn add_member(
    State(state): State<AppState>,
    caller: OrgCaller,
    ApiJson(req): ApiJson<NewMember>,
) -> ApiResult<Response> {
    let role = parse_role(&req.role)?;
    owner_guard(&caller, role == Role::Owner)?;
    check_email(&req.email)?;
    let (user, created) = match state.store.user_by_email(&req.email).await? {
        Some(u) => {
            if req.password.is_some() {
                return Err(ApiError::bad_request(
                    "this person already has an account; their password is theirs to set, leave `password` out",
                ));
            }
            (u, false)
        }
        None => {
            let name = req
                .display_name
                .clone()
                .unwrap_or_else(|| req.email.trim().to_string());
            check_display_name(&name)?;
            let hash = match &req.password {
                Some(p) => {
                    password::check_new(p, &req.email)
                        .map_err(|e| ApiError::bad_request(e.to_string()))?;
                    Some(password::hash(p).map_err(|e| ApiError::internal("hashing failed", e))?)
                }
                None => None,
            };
            (
                state
                    .store
                    .create_user(&req.email, name.trim(), hash.as_deref())
                    .await?,
                true,
            )
        }
    };
    state
        .store
        .add_member(&caller.org.id, &user.id, role.as_str())
        .await?;
    caller
        .record(&state, "member.added", &user.id, serde_json::json!({"email": user.email, "role": role.as_str(), "account_created": created}))
        .await?;
    let member = state
        .store
        .member(&caller.org.id, &user.id)
        .await?
        .ok_or_else(|| ApiError::internal("member vanished", "race"))?;
    Ok((StatusCode::CREATED, axum::Json(MemberView::from(&member))).into_response())
}

/// A new role.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RoleChange {
    /// owner, admin, approver, auditor or viewer.
    pub role: String,
}

#[utoipa::path(patch, path = "/api/v1/orgs/{org}/members/{user}", tag = "orgs",
    params(("org" = String, Path, description = "Organisation id or slug"), ("user" = String, Path, description = "User id")),
    request_body = RoleChange, responses((status = 200, body = MemberView), (status = 404, body = super::error::ErrorBody), (status = 409, body = super::error::ErrorBody)))]
async fn change_role(
    State(state): State<AppState>,
    caller: OrgCaller,
    Path((_, user_id)): Path<(String, String)>,
    ApiJson(req): ApiJson<RoleChange>,
) -> ApiResult<axum::Json<MemberView>> {
    let member = change_member_role(&state, &caller, &user_id, &req.role).await?;
    Ok(axum::Json(MemberView::from(&member)))
}

/// Changes a member's role and records it (the API's and the members page's): only an owner
/// makes or changes owners, and the last owner stays one.
pub(crate) async fn change_member_role(
    state: &AppState,
    caller: &OrgCaller,
    user_id: &str,
    role: &str,
) -> ApiResult<Member> {
    let role = parse_role(role)?;
    let member = state
        .store
        .member(&caller.org.id, user_id)
        .await?
        .ok_or_else(|| ApiError::not_found("member"))?;
    let was: Role = parse_role(&member.role)?;
    owner_guard(caller, role == Role::Owner || was == Role::Owner)?;
    if was == Role::Owner
        && role != Role::Owner
        && state.store.count_owners(&caller.org.id).await? <= 1
    {
        return Err(ApiError::conflict(
            "this is the last owner; make someone else owner first",
        ));
    }
    state
        .store
        .set_role(&caller.org.id, user_id, role.as_str())
        .await?;
    caller
        .record(
            state,
            "member.role_changed",
            user_id,
            serde_json::json!({"from": was.as_str(), "to": role.as_str()}),
        )
        .await?;
    state
        .store
        .member(&caller.org.id, user_id)
        .await?
        .ok_or_else(|| ApiError::not_found("member"))
}

#[utoipa::path(delete, path = "/api/v1/orgs/{org}/members/{user}", tag = "orgs",
    params(("org" = String, Path, description = "Organisation id or slug"), ("user" = String, Path, description = "User id")),
    responses((status = 204), (status = 404, body = super::error::ErrorBody), (status = 409, body = super::error::ErrorBody)))]
async fn remove_member(
    State(state): State<AppState>,
    caller: OrgCaller,
    Path((_, user_id)): Path<(String, String)>,
) -> ApiResult<Response> {
    remove_org_member(&state, &caller, &user_id).await?;
    Ok(no_content())
}

/// Removes a member and records it (the API's and the members page's): only an owner removes
/// owners, the last owner stays, and the person's custodian keys are revoked.
pub(crate) async fn remove_org_member(
    state: &AppState,
    caller: &OrgCaller,
    user_id: &str,
) -> ApiResult<()> {
    let member = state
        .store
        .member(&caller.org.id, user_id)
        .await?
        .ok_or_else(|| ApiError::not_found("member"))?;
    let was = parse_role(&member.role)?;
    owner_guard(caller, was == Role::Owner)?;
    if was == Role::Owner && state.store.count_owners(&caller.org.id).await? <= 1 {
        return Err(ApiError::conflict(
            "this is the last owner; make someone else owner first",
        ));
    }
    state.store.remove_member(&caller.org.id, user_id).await?;
    // Their custodian keys could unwrap the org secrets key: revoked, and the key marked
    // `rotation_required` if one of them held it.
    let custodians = state
        .store
        .revoke_custodians_of(
            &caller.org.id,
            user_id,
            &format!(
                "{} left the organisation and their custodian key may have kept the org key",
                member.user.email
            ),
        )
        .await?;
    caller
        .record(
            state,
            "member.removed",
            user_id,
            serde_json::json!({"role": was.as_str(), "email": member.user.email,
                               "custodians_revoked": custodians}),
        )
        .await?;
    if !custodians.is_empty() {
        crate::link::secrets_changed(state, &caller.org.id).await;
    }
    Ok(())
}

/// The OpenAPI fragment of this module.
#[derive(utoipa::OpenApi)]
#[openapi(
    paths(
        get_org,
        update_org,
        list_members,
        add_member,
        change_role,
        remove_member
    ),
    components(schemas(OrgView, OrgUpdate, MemberView, MemberPage, NewMember, RoleChange))
)]
pub struct Doc;
