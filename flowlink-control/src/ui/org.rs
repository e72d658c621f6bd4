//! An organisation's settings pages: the settings page (name, the two-factor rule, the OAuth
//! sign-in providers this server is configured with), members and their roles with the
//! pending invitations, API tokens, and the public page an invitation link opens.
//!
//! Who sees what follows the API's routes: each page route has the `Access` of the API route
//! it stands beside (settings `org:read`, changing them `org:manage`, members `member:read`,
//! changing roles, removing members and inviting `member:manage`, tokens `token:manage`), so a
//! person without the permission is refused by the route table before any handler runs, and
//! the pages simply leave out the forms they could not send. Every change goes through the
//! same function the API handler calls (`api::orgs`, `api::tokens`, `api::invitations`), so
//! the rules (the last owner stays, only owners touch owners, token scopes capped at the
//! creator's permissions) and the audit records are the API's own.
//!
//! The invitation link `/ui/invitations/{token}` is public: a new person chooses a name and
//! password there (a public form, guarded against cross-site posts like sign-in and set-up),
//! and a person already signed in with the invited address joins with one button, a form of
//! their session (its CSRF token checked by the route table).

use askama::Template;
use axum::extract::rejection::{FormRejection, QueryRejection};
use axum::extract::{Path, Query, RawForm, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use serde::Deserialize;

use super::auth::sentence;
use super::layout::{render_status, when};
use super::{Chrome, PageResult, render, see_other};
use crate::api::auth::{check_display_name, open_session, password_step, rfc3339};
use crate::api::invitations::{
    self, AcceptRequest, DEFAULT_DAYS, InvitationView, NewInvitationRequest,
};
use crate::api::orgs::{OrgUpdate, apply_org_update, change_member_role, remove_org_member};
use crate::api::tokens::{self, MAX_DAYS, NewToken};
use crate::api::{Access, ApiError, ApiRoute, AppState, Caller, ClientInfo, OrgCaller, signed_in};
use crate::auth::oauth::Provider;
use crate::auth::{Permission, Role, password};
use crate::store::{Member, now_us};

/// The most tokens the tokens page lists (newest first).
pub const TOKENS_SHOWN: i64 = 500;

/// The routes of these pages.
pub fn routes() -> Vec<ApiRoute> {
    use Permission::{MemberManage, MemberRead, OrgManage, OrgRead, TokenManage};
    vec![
        ApiRoute::new(
            Method::GET,
            "/ui/orgs/{org}/settings",
            Access::Org(OrgRead),
            settings,
        ),
        ApiRoute::new(
            Method::POST,
            "/ui/orgs/{org}/settings",
            Access::Org(OrgManage),
            update_settings,
        ),
        ApiRoute::new(
            Method::GET,
            "/ui/orgs/{org}/settings/members",
            Access::Org(MemberRead),
            members,
        ),
        ApiRoute::new(
            Method::POST,
            "/ui/orgs/{org}/settings/members/{user}/role",
            Access::Org(MemberManage),
            change_role,
        ),
        ApiRoute::new(
            Method::GET,
            "/ui/orgs/{org}/settings/members/{user}/remove",
            Access::Org(MemberManage),
            confirm_remove,
        ),
        ApiRoute::new(
            Method::POST,
            "/ui/orgs/{org}/settings/members/{user}/remove",
            Access::Org(MemberManage),
            remove,
        ),
        ApiRoute::new(
            Method::POST,
            "/ui/orgs/{org}/settings/invitations",
            Access::Org(MemberManage),
            invite,
        ),
        ApiRoute::new(
            Method::POST,
            "/ui/orgs/{org}/settings/invitations/{invitation}/revoke",
            Access::Org(MemberManage),
            revoke_invitation,
        ),
        ApiRoute::new(
            Method::GET,
            "/ui/orgs/{org}/settings/tokens",
            Access::Org(TokenManage),
            tokens_page,
        ),
        ApiRoute::new(
            Method::POST,
            "/ui/orgs/{org}/settings/tokens",
            Access::Org(TokenManage),
            create_token,
        ),
        ApiRoute::new(
            Method::POST,
            "/ui/orgs/{org}/settings/tokens/{token}/revoke",
            Access::Org(TokenManage),
            revoke_token,
        ),
        ApiRoute::new(
            Method::GET,
            "/ui/invitations/{token}",
            Access::Public,
            invitation_page,
        ),
        ApiRoute::new(
            Method::POST,
            "/ui/invitations/{token}",
            Access::Public,
            accept_invitation,
        ),
        ApiRoute::new(
            Method::POST,
            "/ui/invitations/{token}/join",
            Access::Session,
            join_invitation,
        ),
    ]
}

/// Unix µs as people read it.
fn at(us: i64) -> String {
    when(&rfc3339(us))
}

/// Whether `e` is about what the person sent or asked (shown on the page they came from)
/// rather than a missing thing or the server.
fn said_to_person(e: &ApiError) -> bool {
    matches!(
        e.status,
        StatusCode::BAD_REQUEST | StatusCode::FORBIDDEN | StatusCode::CONFLICT
    )
}

/// `?done=…` after a change (post/redirect/get).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DoneQuery {
    #[serde(default)]
    done: Option<String>,
}

fn done_query(q: Result<Query<DoneQuery>, QueryRejection>) -> Result<Option<String>, ApiError> {
    let Query(q) = q.map_err(|e| ApiError::bad_request(e.body_text()))?;
    Ok(q.done)
}

// ---------------------------------------------------------------- settings

/// An OAuth provider as the settings page lists it.
struct ProviderRow {
    name: String,
    kind: String,
    display_name: String,
    /// The OIDC issuer, or the host people are sent to sign in.
    endpoint: String,
    usable: bool,
}

fn provider_rows(state: &AppState) -> Vec<ProviderRow> {
    state
        .config
        .oauth
        .iter()
        .map(|(name, config)| match Provider::from_config(name, config) {
            Ok(p) => ProviderRow {
                name: name.clone(),
                kind: config.kind.clone(),
                display_name: p.display_name.clone(),
                endpoint: p
                    .issuer
                    .clone()
                    .unwrap_or_else(|| p.authorize_url.host_str().unwrap_or_default().to_string()),
                usable: true,
            },
            // The reason is in the server's start-up log; the page does not repeat
            // configuration values.
            Err(_) => ProviderRow {
                name: name.clone(),
                kind: config.kind.clone(),
                display_name: config.display_name.clone().unwrap_or_else(|| name.clone()),
                endpoint: String::new(),
                usable: false,
            },
        })
        .collect()
}

#[derive(Template)]
#[template(path = "org_settings.html")]
struct SettingsPage {
    chrome: Chrome,
    org_slug: String,
    org_name: String,
    name_value: String,
    require_2fa: bool,
    can_manage: bool,
    can_see_members: bool,
    can_manage_tokens: bool,
    you_have_2fa: bool,
    members_total: usize,
    without_2fa: Vec<String>,
    providers: Vec<ProviderRow>,
    notice: Option<String>,
    error: Option<String>,
}

async fn settings_page(
    state: &AppState,
    caller: &OrgCaller,
    notice: Option<String>,
    error: Option<String>,
    name_value: Option<String>,
) -> Result<SettingsPage, ApiError> {
    let members = state.store.list_members(&caller.org.id).await?;
    Ok(SettingsPage {
        chrome: Chrome::new(state, &caller.caller, "Organisation settings"),
        org_slug: caller.org.slug.clone(),
        org_name: caller.org.name.clone(),
        name_value: name_value.unwrap_or_else(|| caller.org.name.clone()),
        require_2fa: caller.org.require_2fa,
        can_manage: caller.permissions.contains(Permission::OrgManage),
        can_see_members: caller.permissions.contains(Permission::MemberRead),
        can_manage_tokens: caller.permissions.contains(Permission::TokenManage),
        you_have_2fa: caller.caller.user.totp_enabled,
        members_total: members.len(),
        without_2fa: members
            .iter()
            .filter(|m| !m.user.totp_enabled)
            .map(|m| m.user.email.clone())
            .collect(),
        providers: provider_rows(state),
        notice,
        error,
    })
}

async fn settings(
    State(state): State<AppState>,
    caller: OrgCaller,
    query: Result<Query<DoneQuery>, QueryRejection>,
) -> PageResult {
    let notice = match done_query(query)?.as_deref() {
        Some("name") => Some("The organisation's name is changed.".to_string()),
        Some("2fa-on") => Some(
            "Two-factor sign-in is now required of every member of this organisation.".to_string(),
        ),
        Some("2fa-off") => Some("Two-factor sign-in is no longer required here.".to_string()),
        _ => None,
    };
    render(&settings_page(&state, &caller, notice, None, None).await?)
}

/// The settings forms: the name, or the two-factor rule (`true` / `false`).
#[derive(Debug, Deserialize)]
struct SettingsForm {
    #[allow(dead_code)]
    csrf_token: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    require_2fa: Option<String>,
}

async fn update_settings(
    State(state): State<AppState>,
    caller: OrgCaller,
    form: Result<axum::Form<SettingsForm>, FormRejection>,
) -> PageResult {
    let axum::Form(form) = form.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let require_2fa = match form.require_2fa.as_deref() {
        None => None,
        Some("true") => Some(true),
        Some("false") => Some(false),
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "require_2fa is `true` or `false`, not `{other}`"
            )));
        }
    };
    if form.name.is_none() && require_2fa.is_none() {
        return Err(ApiError::bad_request(
            "the form sent neither a name nor the two-factor rule; reload the settings page and send it again",
        ));
    }
    let update = OrgUpdate {
        name: form.name.clone(),
        require_2fa,
    };
    match apply_org_update(&state, &caller, &update).await {
        Ok(_) => {
            let done = match require_2fa {
                Some(true) => "2fa-on",
                Some(false) => "2fa-off",
                None => "name",
            };
            Ok(see_other(
                &state,
                &format!("/ui/orgs/{}/settings?done={done}", caller.org.slug),
            ))
        }
        Err(e) if said_to_person(&e) => {
            let page =
                settings_page(&state, &caller, None, Some(sentence(&e.message)), form.name).await?;
            render_status(e.status, &page)
        }
        Err(e) => Err(e),
    }
}

// ---------------------------------------------------------------- members

struct RoleOption {
    name: &'static str,
    selected: bool,
}

struct MemberRow {
    id: String,
    name: String,
    email: String,
    role: String,
    totp: bool,
    joined: String,
    is_you: bool,
    /// The caller may change or remove this member (owners only by an owner).
    manageable: bool,
    options: Vec<RoleOption>,
}

struct InvitationRow {
    i: InvitationView,
    inviter: String,
    expires: String,
}

#[derive(Template)]
#[template(path = "org_members.html")]
struct MembersPage {
    chrome: Chrome,
    org_slug: String,
    org_name: String,
    members: Vec<MemberRow>,
    can_manage: bool,
    grantable: Vec<&'static str>,
    invitations: Vec<InvitationRow>,
    default_days: u32,
    notice: Option<String>,
    error: Option<String>,
    invite_email: String,
    invite_role: String,
}

/// The roles `caller` may give: every one but owner, which only an owner gives.
fn grantable(caller: &OrgCaller) -> Vec<&'static str> {
    Role::ALL
        .into_iter()
        .filter(|r| *r != Role::Owner || caller.role == Role::Owner)
        .map(Role::as_str)
        .collect()
}

fn member_row(m: &Member, caller: &OrgCaller, can_manage: bool) -> MemberRow {
    let owner_row = m.role == Role::Owner.as_str();
    MemberRow {
        id: m.user.id.clone(),
        name: m.user.display_name.clone(),
        email: m.user.email.clone(),
        role: m.role.clone(),
        totp: m.user.totp_enabled,
        joined: at(m.joined_at),
        is_you: m.user.id == caller.caller.user.id,
        manageable: can_manage && (!owner_row || caller.role == Role::Owner),
        options: grantable(caller)
            .into_iter()
            .map(|name| RoleOption {
                name,
                selected: name == m.role,
            })
            .collect(),
    }
}

async fn members_page(
    state: &AppState,
    caller: &OrgCaller,
    notice: Option<String>,
    error: Option<String>,
    invite: Option<&NewInvitationRequest>,
) -> Result<MembersPage, ApiError> {
    let can_manage = caller.permissions.contains(Permission::MemberManage);
    let members = state.store.list_members(&caller.org.id).await?;
    let invitations = if can_manage {
        invitations::pending(state, caller)
            .await?
            .into_iter()
            .map(|i| InvitationRow {
                inviter: i
                    .invited_by_email
                    .clone()
                    .unwrap_or_else(|| "(a removed account)".to_string()),
                expires: when(&i.expires_at),
                i,
            })
            .collect()
    } else {
        Vec::new()
    };
    Ok(MembersPage {
        chrome: Chrome::new(state, &caller.caller, "Members"),
        org_slug: caller.org.slug.clone(),
        org_name: caller.org.name.clone(),
        members: members
            .iter()
            .map(|m| member_row(m, caller, can_manage))
            .collect(),
        can_manage,
        grantable: grantable(caller),
        invitations,
        default_days: DEFAULT_DAYS,
        notice,
        error,
        invite_email: invite.map(|i| i.email.clone()).unwrap_or_default(),
        invite_role: invite
            .map(|i| i.role.clone())
            .unwrap_or_else(|| Role::Viewer.as_str().to_string()),
    })
}

async fn members(
    State(state): State<AppState>,
    caller: OrgCaller,
    query: Result<Query<DoneQuery>, QueryRejection>,
) -> PageResult {
    let notice = match done_query(query)?.as_deref() {
        Some("role") => Some("The role is changed; it applies from their next request.".into()),
        Some("removed") => Some("The member is removed.".into()),
        Some("revoked") => Some("The invitation is withdrawn; its link no longer works.".into()),
        _ => None,
    };
    render(&members_page(&state, &caller, notice, None, None).await?)
}

/// The members page again with `e` said at the top, with `e`'s status.
async fn members_refusal(state: &AppState, caller: &OrgCaller, e: ApiError) -> PageResult {
    let page = members_page(state, caller, None, Some(sentence(&e.message)), None).await?;
    render_status(e.status, &page)
}

/// The role form.
#[derive(Debug, Deserialize)]
struct RoleForm {
    #[allow(dead_code)]
    csrf_token: Option<String>,
    #[serde(default)]
    role: String,
}

async fn change_role(
    State(state): State<AppState>,
    caller: OrgCaller,
    Path((_, user_id)): Path<(String, String)>,
    form: Result<axum::Form<RoleForm>, FormRejection>,
) -> PageResult {
    let axum::Form(form) = form.map_err(|e| ApiError::bad_request(e.body_text()))?;
    match change_member_role(&state, &caller, &user_id, &form.role).await {
        Ok(_) => Ok(see_other(
            &state,
            &format!("/ui/orgs/{}/settings/members?done=role", caller.org.slug),
        )),
        Err(e) if said_to_person(&e) => members_refusal(&state, &caller, e).await,
        Err(e) => Err(e),
    }
}

#[derive(Template)]
#[template(path = "org_member_remove.html")]
struct RemovePage {
    chrome: Chrome,
    org_slug: String,
    org_name: String,
    member: MemberRow,
}

async fn confirm_remove(
    State(state): State<AppState>,
    caller: OrgCaller,
    Path((_, user_id)): Path<(String, String)>,
) -> PageResult {
    let member = state
        .store
        .member(&caller.org.id, &user_id)
        .await?
        .ok_or_else(|| ApiError::not_found("member"))?;
    render(&RemovePage {
        chrome: Chrome::new(&state, &caller.caller, "Remove a member"),
        org_slug: caller.org.slug.clone(),
        org_name: caller.org.name.clone(),
        member: member_row(&member, &caller, true),
    })
}

async fn remove(
    State(state): State<AppState>,
    caller: OrgCaller,
    Path((_, user_id)): Path<(String, String)>,
) -> PageResult {
    match remove_org_member(&state, &caller, &user_id).await {
        Ok(()) if user_id == caller.caller.user.id => Ok(see_other(&state, "/ui/")),
        Ok(()) => Ok(see_other(
            &state,
            &format!("/ui/orgs/{}/settings/members?done=removed", caller.org.slug),
        )),
        Err(e) if said_to_person(&e) => members_refusal(&state, &caller, e).await,
        Err(e) => Err(e),
    }
}

/// The invitation form.
#[derive(Debug, Deserialize)]
struct InviteForm {
    #[allow(dead_code)]
    csrf_token: Option<String>,
    #[serde(default)]
    email: String,
    #[serde(default)]
    role: String,
    #[serde(default)]
    expires_in_days: String,
}

#[derive(Template)]
#[template(path = "org_invitation_created.html")]
struct InvitationCreatedPage {
    chrome: Chrome,
    org_slug: String,
    org_name: String,
    url: String,
    email: String,
    role: String,
    expires: String,
}

async fn invite(
    State(state): State<AppState>,
    caller: OrgCaller,
    form: Result<axum::Form<InviteForm>, FormRejection>,
) -> PageResult {
    let axum::Form(form) = form.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let days = form.expires_in_days.trim();
    let req = NewInvitationRequest {
        email: form.email.trim().to_string(),
        role: form.role.clone(),
        expires_in_days: if days.is_empty() {
            None
        } else {
            match days.parse() {
                Ok(d) => Some(d),
                Err(_) => {
                    let e = ApiError::bad_request(format!(
                        "give the days the link works as a whole number from 1 to {}",
                        invitations::MAX_DAYS
                    ));
                    let page =
                        members_page(&state, &caller, None, Some(sentence(&e.message)), None)
                            .await?;
                    return render_status(e.status, &page);
                }
            }
        },
    };
    match invitations::invite(&state, &caller, &req).await {
        Ok(created) => render_status(
            StatusCode::CREATED,
            &InvitationCreatedPage {
                chrome: Chrome::new(&state, &caller.caller, "Invitation link"),
                org_slug: caller.org.slug.clone(),
                org_name: caller.org.name.clone(),
                url: created.url,
                email: created.invitation.email,
                role: created.invitation.role,
                expires: when(&created.invitation.expires_at),
            },
        ),
        Err(e) if said_to_person(&e) => {
            let page = members_page(
                &state,
                &caller,
                None,
                Some(sentence(&e.message)),
                Some(&req),
            )
            .await?;
            render_status(e.status, &page)
        }
        Err(e) => Err(e),
    }
}

async fn revoke_invitation(
    State(state): State<AppState>,
    caller: OrgCaller,
    Path((_, id)): Path<(String, String)>,
) -> PageResult {
    match invitations::revoke_invitation(&state, &caller, &id).await {
        Ok(()) => Ok(see_other(
            &state,
            &format!("/ui/orgs/{}/settings/members?done=revoked", caller.org.slug),
        )),
        Err(e) if e.status == StatusCode::CONFLICT => members_refusal(&state, &caller, e).await,
        Err(e) => Err(e),
    }
}

// ---------------------------------------------------------------- API tokens

struct TokenRow {
    id: String,
    name: String,
    scopes: String,
    created: String,
    expires: String,
    last_used: String,
    creator: String,
    /// `live`, `expired` or `revoked`.
    status: &'static str,
}

struct ScopeOption {
    name: &'static str,
    checked: bool,
}

/// A token just created: its secret, shown on this one answer only.
struct CreatedToken {
    secret: String,
    name: String,
}

#[derive(Template)]
#[template(path = "org_tokens.html")]
struct TokensPage {
    chrome: Chrome,
    org_slug: String,
    org_name: String,
    tokens: Vec<TokenRow>,
    all_tokens: bool,
    scopes: Vec<ScopeOption>,
    days: Vec<u32>,
    chosen_days: u32,
    name_value: String,
    created: Option<CreatedToken>,
    notice: Option<String>,
    error: Option<String>,
}

/// The create form as sent, to show again after an error.
#[derive(Debug, Default)]
struct TokenFormValues {
    name: String,
    scopes: Vec<String>,
    days: u32,
}

async fn tokens_view(
    state: &AppState,
    caller: &OrgCaller,
    values: TokenFormValues,
    created: Option<CreatedToken>,
    notice: Option<String>,
    error: Option<String>,
) -> Result<TokensPage, ApiError> {
    // A member manager oversees every token of the organisation; anyone else sees their own.
    let all_tokens = caller.permissions.contains(Permission::MemberManage);
    let stored = state
        .store
        .list_api_tokens(&caller.org.id, None, TOKENS_SHOWN)
        .await?;
    let members = state.store.list_members(&caller.org.id).await?;
    let creator = |id: &str| {
        members.iter().find(|m| m.user.id == id).map_or_else(
            || "(no longer a member)".to_string(),
            |m| m.user.email.clone(),
        )
    };
    let now = now_us();
    let tokens = stored
        .iter()
        .filter(|t| all_tokens || t.user_id == caller.caller.user.id)
        .map(|t| TokenRow {
            id: t.id.clone(),
            name: t.name.clone(),
            scopes: t.scopes.replace(' ', ", "),
            created: at(t.created_at),
            expires: at(t.expires_at),
            last_used: t.last_used_at.map(at).unwrap_or_else(|| "never".into()),
            creator: creator(&t.user_id),
            status: if t.revoked_at.is_some() {
                "revoked"
            } else if t.expires_at <= now {
                "expired"
            } else {
                "live"
            },
        })
        .collect();
    Ok(TokensPage {
        chrome: Chrome::new(state, &caller.caller, "API tokens"),
        org_slug: caller.org.slug.clone(),
        org_name: caller.org.name.clone(),
        tokens,
        all_tokens,
        scopes: caller
            .permissions
            .iter()
            .map(|p| ScopeOption {
                name: p.as_str(),
                checked: values.scopes.iter().any(|s| s == p.as_str()),
            })
            .collect(),
        days: vec![7, 30, 90, 180, MAX_DAYS],
        chosen_days: if values.days == 0 { 90 } else { values.days },
        name_value: values.name,
        created,
        notice,
        error,
    })
}

async fn tokens_page(
    State(state): State<AppState>,
    caller: OrgCaller,
    query: Result<Query<DoneQuery>, QueryRejection>,
) -> PageResult {
    let notice = match done_query(query)?.as_deref() {
        Some("revoked") => Some("The token is revoked; it no longer works.".to_string()),
        _ => None,
    };
    let page = tokens_view(
        &state,
        &caller,
        TokenFormValues::default(),
        None,
        notice,
        None,
    )
    .await?;
    render(&page)
}

/// Reads the create form: `name`, `scopes` (one field per checked box), `expires_in_days`.
fn token_form(body: &[u8]) -> Result<TokenFormValues, ApiError> {
    let mut values = TokenFormValues::default();
    for (key, value) in url::form_urlencoded::parse(body) {
        match key.as_ref() {
            "name" => values.name = value.into_owned(),
            "scopes" => values.scopes.push(value.into_owned()),
            "expires_in_days" => {
                values.days = value.trim().parse().map_err(|_| {
                    ApiError::bad_request(format!(
                        "give the days the token works as a whole number from 1 to {MAX_DAYS}"
                    ))
                })?;
            }
            "csrf_token" => {}
            other => {
                return Err(ApiError::bad_request(format!(
                    "the form has an unknown field `{other}`; reload the page and send it again"
                )));
            }
        }
    }
    Ok(values)
}

async fn create_token(
    State(state): State<AppState>,
    caller: OrgCaller,
    RawForm(body): RawForm,
) -> PageResult {
    let values = token_form(&body)?;
    let req = NewToken {
        name: values.name.clone(),
        scopes: values.scopes.clone(),
        expires_in_days: (values.days != 0).then_some(values.days),
    };
    match tokens::create_for(&state, &caller, &req).await {
        Ok((secret, token)) => {
            let created = CreatedToken {
                secret,
                name: token.name,
            };
            let page = tokens_view(
                &state,
                &caller,
                TokenFormValues::default(),
                Some(created),
                None,
                None,
            )
            .await?;
            render_status(StatusCode::CREATED, &page)
        }
        Err(e) if said_to_person(&e) => {
            let error = Some(sentence(&e.message));
            let page = tokens_view(&state, &caller, values, None, None, error).await?;
            render_status(e.status, &page)
        }
        Err(e) => Err(e),
    }
}

async fn revoke_token(
    State(state): State<AppState>,
    caller: OrgCaller,
    Path((_, id)): Path<(String, String)>,
) -> PageResult {
    tokens::revoke(&state, &caller, &id).await?;
    Ok(see_other(
        &state,
        &format!("/ui/orgs/{}/settings/tokens?done=revoked", caller.org.slug),
    ))
}

// ---------------------------------------------------------------- the invitation link

/// Field errors of the new-account form.
#[derive(Debug, Default)]
struct AcceptErrors {
    form: Option<String>,
    display_name: Option<String>,
    password: Option<String>,
}

impl AcceptErrors {
    fn any(&self) -> bool {
        self.form.is_some() || self.display_name.is_some() || self.password.is_some()
    }
}

#[derive(Template)]
#[template(path = "invitation.html")]
struct InvitationPage {
    chrome: Chrome,
    token: String,
    /// Why the link cannot be used (then nothing else is shown).
    refusal: Option<String>,
    org_name: String,
    /// The organisation requires a second factor (said before joining).
    require_2fa: bool,
    email: String,
    role: String,
    expires: String,
    /// Signed in as the invited person: the join button.
    can_join: bool,
    /// Signed in as somebody else.
    signed_in_as: Option<String>,
    /// Not signed in, and the address has an account: sign in first.
    account_exists: bool,
    display_name: String,
    errors: AcceptErrors,
}

impl InvitationPage {
    fn refused(state: &AppState, e: &ApiError) -> InvitationPage {
        InvitationPage {
            chrome: Chrome::anonymous(
                state,
                if e.status == StatusCode::NOT_FOUND {
                    "Invitation not found"
                } else {
                    "Invitation no longer valid"
                },
            ),
            token: String::new(),
            refusal: Some(sentence(&e.message)),
            org_name: String::new(),
            require_2fa: false,
            email: String::new(),
            role: String::new(),
            expires: String::new(),
            can_join: false,
            signed_in_as: None,
            account_exists: false,
            display_name: String::new(),
            errors: AcceptErrors::default(),
        }
    }
}

/// A link that names nothing (404) or can no longer be used (410): its own clear page.
fn is_link_refusal(e: &ApiError) -> bool {
    matches!(e.status, StatusCode::NOT_FOUND | StatusCode::GONE)
}

async fn invitation_view(
    state: &AppState,
    client: &ClientInfo,
    headers: &HeaderMap,
    token: &str,
    display_name: String,
    errors: AcceptErrors,
) -> Result<Result<InvitationPage, ApiError>, ApiError> {
    let (invitation, org) = match invitations::live_invitation(state, token).await {
        Ok(found) => found,
        Err(e) if is_link_refusal(&e) => return Ok(Err(e)),
        Err(e) => return Err(e),
    };
    let person: Option<Caller> = signed_in(state, headers, client).await;
    let title = format!("Join {}", org.name);
    let (chrome, can_join, signed_in_as) = match &person {
        Some(caller) => (
            Chrome::new(state, caller, &title),
            invitations::may_join(&invitation, &caller.user),
            (!invitations::may_join(&invitation, &caller.user)).then(|| caller.user.email.clone()),
        ),
        None => (Chrome::anonymous(state, &title), false, None),
    };
    let account_exists = person.is_none()
        && state
            .store
            .user_by_email(&invitation.email)
            .await?
            .is_some();
    Ok(Ok(InvitationPage {
        chrome,
        token: token.to_string(),
        refusal: None,
        require_2fa: org.require_2fa,
        org_name: org.name,
        email: invitation.email,
        role: invitation.role,
        expires: at(invitation.expires_at),
        can_join,
        signed_in_as,
        account_exists,
        display_name,
        errors,
    }))
}

async fn invitation_page(
    State(state): State<AppState>,
    client: ClientInfo,
    headers: HeaderMap,
    Path(token): Path<String>,
) -> PageResult {
    match invitation_view(
        &state,
        &client,
        &headers,
        &token,
        String::new(),
        AcceptErrors::default(),
    )
    .await?
    {
        Ok(page) => render(&page),
        Err(e) => render_status(e.status, &InvitationPage::refused(&state, &e)),
    }
}

/// The new-account form.
#[derive(Debug, Deserialize)]
struct AcceptForm {
    #[serde(default)]
    display_name: String,
    #[serde(default)]
    password: String,
}

async fn accept_invitation(
    State(state): State<AppState>,
    client: ClientInfo,
    headers: HeaderMap,
    Path(token): Path<String>,
    form: Result<axum::Form<AcceptForm>, FormRejection>,
) -> PageResult {
    let axum::Form(form) = form.map_err(|e| ApiError::bad_request(e.body_text()))?;
    // The link first: a dead one gets its own page whatever the form says (and the attempt
    // is recorded).
    let invitation =
        match invitations::live_for_accepting(&state, &client, &token, ("anonymous", "")).await {
            Ok((invitation, _)) => invitation,
            Err(e) if is_link_refusal(&e) => {
                return render_status(e.status, &InvitationPage::refused(&state, &e));
            }
            Err(e) => return Err(e),
        };
    let mut errors = AcceptErrors {
        display_name: check_display_name(&form.display_name)
            .err()
            .map(|e| sentence(&e.message)),
        password: password::check_new(&form.password, &invitation.email)
            .err()
            .map(|e| sentence(&e.to_string())),
        form: None,
    };
    let mut status = StatusCode::BAD_REQUEST;
    if !errors.any() {
        let req = AcceptRequest {
            token: token.clone(),
            display_name: form.display_name.clone(),
            password: form.password.clone(),
        };
        match invitations::accept_new_account(&state, &client, &req).await {
            Ok((user, org, _)) => {
                // They just chose this password: signed in as the sign-in page would.
                let (user, stage) = password_step(&state, &client, &user.email, &form.password)
                    .await
                    .map_err(|e| {
                        ApiError::new(
                            e.status,
                            e.code,
                            format!(
                                "your account is created and you are a member of {}, but signing you in failed ({}); sign in on the sign-in page",
                                org.name, e.message
                            ),
                        )
                    })?;
                let (_, cookie) = open_session(&state, &user, stage, "password", &client).await?;
                let mut response = see_other(&state, "/ui/");
                response.headers_mut().append(header::SET_COOKIE, cookie);
                return Ok(response);
            }
            Err(e) if is_link_refusal(&e) => {
                return render_status(e.status, &InvitationPage::refused(&state, &e));
            }
            Err(e) if said_to_person(&e) => {
                status = e.status;
                errors.form = Some(sentence(&e.message));
            }
            Err(e) => return Err(e),
        }
    }
    match invitation_view(&state, &client, &headers, &token, form.display_name, errors).await? {
        Ok(page) => render_status(status, &page),
        Err(e) => render_status(e.status, &InvitationPage::refused(&state, &e)),
    }
}

async fn join_invitation(
    State(state): State<AppState>,
    caller: Caller,
    Path(token): Path<String>,
) -> PageResult {
    match invitations::join_with_account(&state, &caller, &token).await {
        Ok((org, _)) => Ok(see_other(
            &state,
            &format!("/ui/orgs/{}/settings", org.slug),
        )),
        Err(e) if is_link_refusal(&e) => {
            render_status(e.status, &InvitationPage::refused(&state, &e))
        }
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_form_keeps_every_checked_scope_and_refuses_strangers() {
        let v = token_form(
            b"csrf_token=x&name=CI+deploy&scopes=policy%3Aread&scopes=policy%3Awrite&expires_in_days=30",
        )
        .expect("valid");
        assert_eq!(v.name, "CI deploy");
        assert_eq!(v.scopes, ["policy:read", "policy:write"]);
        assert_eq!(v.days, 30);
        assert!(token_form(b"name=x&expires_in_days=soon").is_err());
        assert!(token_form(b"name=x&admin=1").is_err());
    }
}
