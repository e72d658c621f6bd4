//! Invitations: how a new person joins an organisation. A member manager invites an e-mail
//! address with a role (never a role above their own: owners only by an owner); the answer
//! carries a link with a random token, shown once and stored only as its SHA-256, to be sent
//! by hand. The link works once, until it expires (7 days unless said otherwise) or is
//! revoked. The invited person accepts it by choosing a name and password (a new account) or,
//! already having an account with that address, by joining while signed in. There is no other
//! way to create an account: without an invitation nobody registers.

use axum::extract::{Path, State};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::auth::{UserView, check_display_name, check_email, rfc3339};
use super::orgs::{owner_guard, parse_role};
use super::{
    Access, ApiError, ApiJson, ApiResult, ApiRoute, AppState, Caller, ClientInfo, OrgCaller,
    no_content,
};
use crate::auth::secret::{random_token, sha256_hex};
use crate::auth::{Permission, Role, password};
use crate::store::invitations::{AcceptRefusal, Invitation, NewInvitation};
use crate::store::{Org, User, now_us};

/// Days an invitation works unless the inviter says otherwise.
pub const DEFAULT_DAYS: u32 = 7;
/// The longest an invitation may work.
pub const MAX_DAYS: u32 = 30;

/// The routes of this module.
pub fn routes() -> Vec<ApiRoute> {
    use Permission::MemberManage;
    vec![
        ApiRoute::new(
            Method::GET,
            "/api/v1/orgs/{org}/invitations",
            Access::Org(MemberManage),
            list,
        ),
        ApiRoute::new(
            Method::POST,
            "/api/v1/orgs/{org}/invitations",
            Access::Org(MemberManage),
            create,
        ),
        ApiRoute::new(
            Method::DELETE,
            "/api/v1/orgs/{org}/invitations/{invitation}",
            Access::Org(MemberManage),
            revoke,
        ),
        ApiRoute::new(
            Method::POST,
            "/api/v1/invitations/accept",
            Access::Public,
            accept,
        ),
        ApiRoute::new(
            Method::POST,
            "/api/v1/invitations/join",
            Access::Session,
            join,
        ),
    ]
}

/// A pending invitation (never its token).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct InvitationView {
    /// Id (for revoking).
    pub id: String,
    /// The invited address.
    pub email: String,
    /// The role they get.
    pub role: String,
    /// The inviter's user id.
    pub invited_by: String,
    /// The inviter's e-mail address (absent when their account is gone).
    pub invited_by_email: Option<String>,
    /// Creation time.
    pub created_at: String,
    /// The link works until then.
    pub expires_at: String,
}

impl From<&Invitation> for InvitationView {
    fn from(i: &Invitation) -> InvitationView {
        InvitationView {
            id: i.id.clone(),
            email: i.email.clone(),
            role: i.role.clone(),
            invited_by: i.invited_by.clone(),
            invited_by_email: i.inviter_email.clone(),
            created_at: rfc3339(i.created_at),
            expires_at: rfc3339(i.expires_at),
        }
    }
}

/// The pending invitations, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct InvitationList {
    /// The invitations.
    pub items: Vec<InvitationView>,
}

/// A person to invite.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewInvitationRequest {
    /// Their e-mail address; only an account with this address can accept.
    pub email: String,
    /// owner, admin, approver, auditor or viewer (owner only by an owner).
    pub role: String,
    /// Days the link works (1-30, default 7).
    #[serde(default)]
    pub expires_in_days: Option<u32>,
}

/// A created invitation: the link is shown this once.
#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedInvitation {
    /// Send this link to the person by hand. Not stored; cannot be shown again.
    pub url: String,
    /// The token inside the link (for `POST /api/v1/invitations/accept`).
    pub token: String,
    /// The invitation.
    pub invitation: InvitationView,
}

/// The link `token` opens, under the server's public URL.
pub fn link(state: &AppState, token: &str) -> String {
    format!(
        "{}/ui/invitations/{token}",
        state.config.public_url.trim_end_matches('/')
    )
}

#[utoipa::path(get, path = "/api/v1/orgs/{org}/invitations", tag = "orgs",
    params(("org" = String, Path, description = "Organisation id or slug")),
    responses((status = 200, body = InvitationList)))]
async fn list(
    State(state): State<AppState>,
    caller: OrgCaller,
) -> ApiResult<axum::Json<InvitationList>> {
    Ok(axum::Json(InvitationList {
        items: pending(&state, &caller).await?,
    }))
}

/// The organisation's pending invitations (the API's and the members page's).
pub async fn pending(state: &AppState, caller: &OrgCaller) -> ApiResult<Vec<InvitationView>> {
    Ok(state
        .store
        .pending_invitations(&caller.org.id)
        .await?
        .iter()
        .map(InvitationView::from)
        .collect())
}

#[utoipa::path(post, path = "/api/v1/orgs/{org}/invitations", tag = "orgs",
    params(("org" = String, Path, description = "Organisation id or slug")),
    request_body = NewInvitationRequest,
    responses((status = 201, body = CreatedInvitation), (status = 400, body = super::error::ErrorBody),
        (status = 403, body = super::error::ErrorBody), (status = 409, body = super::error::ErrorBody)))]
async fn create(
    State(state): State<AppState>,
    caller: OrgCaller,
    ApiJson(req): ApiJson<NewInvitationRequest>,
) -> ApiResult<Response> {
    let created = invite(&state, &caller, &req).await?;
    Ok((StatusCode::CREATED, axum::Json(created)).into_response())
}

/// Invites a person and records it (the API's and the members page's).
pub async fn invite(
    state: &AppState,
    caller: &OrgCaller,
    req: &NewInvitationRequest,
) -> ApiResult<CreatedInvitation> {
    check_email(&req.email)?;
    let role = parse_role(&req.role)?;
    owner_guard(caller, role == Role::Owner)?;
    let days = req.expires_in_days.unwrap_or(DEFAULT_DAYS);
    if !(1..=MAX_DAYS).contains(&days) {
        return Err(ApiError::bad_request(format!(
            "an invitation works for 1 to {MAX_DAYS} days; `expires_in_days` was {days}"
        )));
    }
    let email = req.email.trim().to_lowercase();
    if let Some(user) = state.store.user_by_email(&email).await?
        && state
            .store
            .member_role(&caller.org.id, &user.id)
            .await?
            .is_some()
    {
        return Err(ApiError::conflict(format!(
            "{email} is already a member; change their role on the members list instead"
        )));
    }
    if state
        .store
        .pending_invitations(&caller.org.id)
        .await?
        .iter()
        .any(|i| i.email == email)
    {
        return Err(ApiError::conflict(format!(
            "{email} already has a pending invitation; revoke it first to send a new one"
        )));
    }
    let token = random_token(32);
    let invitation = state
        .store
        .create_invitation(
            &NewInvitation {
                org_id: &caller.org.id,
                email: &email,
                role: role.as_str(),
                invited_by: &caller.caller.user.id,
                expires_at: now_us() + i64::from(days) * 86_400_000_000,
            },
            &sha256_hex(&token),
        )
        .await?;
    caller
        .record(
            state,
            "invitation.created",
            &invitation.id,
            serde_json::json!({"email": email, "role": role.as_str(),
                               "expires_at": rfc3339(invitation.expires_at)}),
        )
        .await?;
    Ok(CreatedInvitation {
        url: link(state, &token),
        token,
        invitation: InvitationView::from(&invitation),
    })
}

#[utoipa::path(delete, path = "/api/v1/orgs/{org}/invitations/{invitation}", tag = "orgs",
    params(("org" = String, Path, description = "Organisation id or slug"), ("invitation" = String, Path, description = "Invitation id")),
    responses((status = 204), (status = 404, body = super::error::ErrorBody)))]
async fn revoke(
    State(state): State<AppState>,
    caller: OrgCaller,
    Path((_, id)): Path<(String, String)>,
) -> ApiResult<Response> {
    revoke_invitation(&state, &caller, &id).await?;
    Ok(no_content())
}

/// Revokes a pending invitation and records it (the API's and the members page's).
pub async fn revoke_invitation(state: &AppState, caller: &OrgCaller, id: &str) -> ApiResult<()> {
    let Some(invitation) = state.store.invitation(&caller.org.id, id).await? else {
        return Err(ApiError::not_found("invitation"));
    };
    if !state.store.revoke_invitation(&caller.org.id, id).await? {
        return Err(ApiError::conflict(
            "this invitation was already accepted, revoked or expired",
        ));
    }
    caller
        .record(
            state,
            "invitation.revoked",
            id,
            serde_json::json!({"email": invitation.email, "role": invitation.role}),
        )
        .await?;
    Ok(())
}

/// The live invitation a link's token names, with its organisation, or why it cannot be used:
/// 404 for a token that names nothing, 410 for one used, revoked or expired.
pub async fn live_invitation(state: &AppState, token: &str) -> ApiResult<(Invitation, Org)> {
    let invitation = by_token(state, token).await?;
    let org = still_live(state, &invitation).await?;
    Ok((invitation, org))
}

/// [`live_invitation`] for an attempt to accept: the use of a dead link (leaked, or sent
/// twice) is recorded in its organisation's audit trail as a failure, by `actor`.
pub async fn live_for_accepting(
    state: &AppState,
    client: &ClientInfo,
    token: &str,
    actor: (&str, &str),
) -> ApiResult<(Invitation, Org)> {
    let invitation = by_token(state, token).await?;
    match still_live(state, &invitation).await {
        Ok(org) => Ok((invitation, org)),
        Err(e) => {
            refusal_recorded(state, client, &invitation, actor, e.code).await?;
            Err(e)
        }
    }
}

async fn refusal_recorded(
    state: &AppState,
    client: &ClientInfo,
    invitation: &Invitation,
    actor: (&str, &str),
    reason: &str,
) -> ApiResult<()> {
    super::auth::audit(
        state,
        Some(&invitation.org_id),
        "invitation.refused",
        actor,
        &invitation.id,
        "failure",
        client,
        serde_json::json!({"reason": reason, "email": invitation.email, "role": invitation.role}),
    )
    .await
}

/// The invitation `token` names, in any state; 404 when it names none.
async fn by_token(state: &AppState, token: &str) -> ApiResult<Invitation> {
    let token = token.trim();
    let found = if token.is_empty() || token.len() > 200 {
        None
    } else {
        state.store.invitation_by_token(&sha256_hex(token)).await?
    };
    let Some(invitation) = found else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "invitation_not_found",
            "this invitation link is not valid; check that the whole link was copied, or ask for a new invitation",
        ));
    };
    Ok(invitation)
}

/// The organisation of `invitation` while it is live; 410 when it was used, revoked, has
/// expired, or its inviter may no longer grant its role.
async fn still_live(state: &AppState, invitation: &Invitation) -> ApiResult<Org> {
    let gone = |code: &'static str, what: &str| {
        Err(ApiError::new(
            StatusCode::GONE,
            code,
            format!("this invitation {what}; ask whoever invited you for a new one"),
        ))
    };
    if invitation.accepted_at.is_some() {
        return gone(
            "invitation_used",
            "has already been used (each link works once)",
        );
    }
    if invitation.revoked_at.is_some() {
        return gone("invitation_revoked", "was withdrawn");
    }
    if invitation.expires_at <= now_us() {
        return gone("invitation_expired", "has expired");
    }
    let org = state
        .store
        .org_by_ref(&invitation.org_id)
        .await?
        .ok_or_else(|| ApiError::not_found("organisation"))?;
    // The inviter's right to grant the role is checked again now: an invitation from someone
    // since removed, or demoted below the role offered, is not honoured.
    let inviter_role = state
        .store
        .member_role(&org.id, &invitation.invited_by)
        .await?
        .and_then(|r| r.parse::<Role>().ok());
    let still_allowed = inviter_role.is_some_and(|r| {
        r.permissions().contains(Permission::MemberManage)
            && (invitation.role != Role::Owner.as_str() || r == Role::Owner)
    });
    if !still_allowed {
        return gone(
            "invitation_withdrawn",
            "is no longer valid because whoever sent it may no longer grant that role",
        );
    }
    Ok(org)
}

/// Accepting with a new account.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AcceptRequest {
    /// The token from the invitation link (the part after `/ui/invitations/`).
    pub token: String,
    /// Your name, as others see it.
    pub display_name: String,
    /// Your password (at least 12 characters).
    pub password: String,
}

/// Joining with the signed-in account.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct JoinRequest {
    /// The token from the invitation link.
    pub token: String,
}

/// An accepted invitation.
#[derive(Debug, Serialize, ToSchema)]
pub struct Joined {
    /// The person.
    pub user: UserView,
    /// The organisation's slug.
    pub org_slug: String,
    /// Their role there.
    pub role: String,
    /// Whether an account was created.
    pub account_created: bool,
}

#[utoipa::path(post, path = "/api/v1/invitations/accept", tag = "auth", request_body = AcceptRequest,
    responses((status = 201, body = Joined, description = "Account created and added; sign in with it"),
        (status = 400, body = super::error::ErrorBody), (status = 404, body = super::error::ErrorBody),
        (status = 409, body = super::error::ErrorBody), (status = 410, body = super::error::ErrorBody)))]
async fn accept(
    State(state): State<AppState>,
    client: ClientInfo,
    ApiJson(req): ApiJson<AcceptRequest>,
) -> ApiResult<Response> {
    let (user, org, role) = accept_new_account(&state, &client, &req).await?;
    Ok((
        StatusCode::CREATED,
        axum::Json(Joined {
            user: UserView::from(&user),
            org_slug: org.slug,
            role: role.to_string(),
            account_created: true,
        }),
    )
        .into_response())
}

/// Accepts an invitation with a new account (the API's and the link page's): the account is
/// the invited address's, with the chosen name and password, a member with the invited role.
pub async fn accept_new_account(
    state: &AppState,
    client: &ClientInfo,
    req: &AcceptRequest,
) -> ApiResult<(User, Org, Role)> {
    // The token first: nothing is hashed or checked for a link that names nothing.
    let (invitation, org) =
        live_for_accepting(state, client, &req.token, ("anonymous", "")).await?;
    check_display_name(&req.display_name)?;
    password::check_new(&req.password, &invitation.email)
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    if state
        .store
        .user_by_email(&invitation.email)
        .await?
        .is_some()
    {
        return Err(account_exists());
    }
    let role = parse_role(&invitation.role)?;
    let hash =
        password::hash(&req.password).map_err(|e| ApiError::internal("hashing failed", e))?;
    let user = match state
        .store
        .accept_invitation_new_user(&invitation, req.display_name.trim(), &hash)
        .await?
    {
        Ok(user) => user,
        Err(refusal) => return Err(refused(refusal)),
    };
    accepted(state, client, &invitation, &user, true).await?;
    Ok((user, org, role))
}

#[utoipa::path(post, path = "/api/v1/invitations/join", tag = "auth", request_body = JoinRequest,
    responses((status = 200, body = Joined, description = "The signed-in account joined"),
        (status = 403, body = super::error::ErrorBody), (status = 404, body = super::error::ErrorBody),
        (status = 409, body = super::error::ErrorBody), (status = 410, body = super::error::ErrorBody)))]
async fn join(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(req): ApiJson<JoinRequest>,
) -> ApiResult<axum::Json<Joined>> {
    let (org, role) = join_with_account(&state, &caller, &req.token).await?;
    Ok(axum::Json(Joined {
        user: UserView::from(&caller.user),
        org_slug: org.slug,
        role: role.to_string(),
        account_created: false,
    }))
}

/// Accepts an invitation for the signed-in person (the API's and the link page's); only the
/// account with the invited address may.
pub async fn join_with_account(
    state: &AppState,
    caller: &Caller,
    token: &str,
) -> ApiResult<(Org, Role)> {
    let actor = ("user", caller.user.id.as_str());
    let (invitation, org) = live_for_accepting(state, &caller.client, token, actor).await?;
    if !may_join(&invitation, &caller.user) {
        refusal_recorded(state, &caller.client, &invitation, actor, "another_account").await?;
        return Err(ApiError::forbidden(format!(
            "this invitation is for {}, and you are signed in as {}; sign out and open the link again",
            invitation.email, caller.user.email
        )));
    }
    let role = parse_role(&invitation.role)?;
    if let Err(refusal) = state
        .store
        .accept_invitation_existing_user(&invitation, &caller.user.id)
        .await?
    {
        return Err(refused(refusal));
    }
    accepted(state, &caller.client, &invitation, &caller.user, false).await?;
    Ok((org, role))
}

/// Whether `user` is the person `invitation` is for.
pub fn may_join(invitation: &Invitation, user: &User) -> bool {
    user.email.eq_ignore_ascii_case(&invitation.email)
}

fn account_exists() -> ApiError {
    ApiError::conflict(
        "an account with this e-mail address already exists; sign in with it and open the invitation link again to join",
    )
}

fn refused(refusal: AcceptRefusal) -> ApiError {
    match refusal {
        AcceptRefusal::NotLive => ApiError::new(
            StatusCode::GONE,
            "invitation_used",
            "this invitation has just been used, withdrawn or has expired; ask whoever invited you for a new one",
        ),
        AcceptRefusal::AccountExists => account_exists(),
        AcceptRefusal::AlreadyMember => {
            ApiError::conflict("you are already a member of this organisation")
        }
    }
}

async fn accepted(
    state: &AppState,
    client: &ClientInfo,
    invitation: &Invitation,
    user: &User,
    account_created: bool,
) -> ApiResult<()> {
    super::auth::audit(
        state,
        Some(&invitation.org_id),
        "invitation.accepted",
        ("user", &user.id),
        &invitation.id,
        "success",
        client,
        serde_json::json!({"email": user.email, "role": invitation.role,
                           "invited_by": invitation.invited_by, "account_created": account_created}),
    )
    .await
}

/// The OpenAPI fragment of this module.
#[derive(utoipa::OpenApi)]
#[openapi(
    paths(list, create, revoke, accept, join),
    components(schemas(
        InvitationView,
        InvitationList,
        NewInvitationRequest,
        CreatedInvitation,
        AcceptRequest,
        JoinRequest,
        Joined
    ))
)]
pub struct Doc;
