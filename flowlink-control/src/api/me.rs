//! The signed-in person's own account: profile, organisations, sessions, password, 2FA.

use axum::extract::{Path, State};
use axum::http::Method;
use axum::response::Response;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::auth::{UserView, audit_user_event, rfc3339};
use super::{Access, ApiError, ApiJson, ApiResult, ApiRoute, AppState, Caller, no_content};
use crate::auth::{password, totp};
use crate::store::now_us;

/// The routes of this module.
pub fn routes() -> Vec<ApiRoute> {
    vec![
        ApiRoute::new(Method::GET, "/api/v1/me", Access::Session, me),
        ApiRoute::new(
            Method::GET,
            "/api/v1/me/sessions",
            Access::Session,
            sessions,
        ),
        ApiRoute::new(
            Method::DELETE,
            "/api/v1/me/sessions/{session}",
            Access::Session,
            revoke_session,
        ),
        ApiRoute::new(
            Method::POST,
            "/api/v1/me/logout-all",
            Access::Session,
            logout_all,
        ),
        ApiRoute::new(
            Method::POST,
            "/api/v1/me/password",
            Access::Session,
            change_password,
        ),
        ApiRoute::new(
            Method::POST,
            "/api/v1/me/totp/setup",
            Access::Session,
            totp_setup,
        ),
        ApiRoute::new(
            Method::POST,
            "/api/v1/me/totp/enable",
            Access::Session,
            totp_enable,
        ),
        ApiRoute::new(
            Method::POST,
            "/api/v1/me/totp/disable",
            Access::Session,
            totp_disable,
        ),
        ApiRoute::new(
            Method::POST,
            "/api/v1/me/recovery-codes",
            Access::Session,
            new_recovery_codes,
        ),
    ]
}

/// One organisation the person belongs to.
#[derive(Debug, Serialize, ToSchema)]
pub struct MyOrg {
    /// Id.
    pub id: String,
    /// Slug.
    pub slug: String,
    /// Name.
    pub name: String,
    /// The person's role.
    pub role: String,
    /// Whether the org requires 2FA.
    pub require_2fa: bool,
}

/// The signed-in person.
#[derive(Debug, Serialize, ToSchema)]
pub struct MeResponse {
    /// Who.
    pub user: UserView,
    /// Their organisations.
    pub orgs: Vec<MyOrg>,
    /// The CSRF token of this session.
    pub csrf_token: String,
    /// This session's id.
    pub session_id: String,
    /// Unused recovery codes.
    pub recovery_codes_left: i64,
}

#[utoipa::path(get, path = "/api/v1/me", tag = "me", responses((status = 200, body = MeResponse)))]
async fn me(State(state): State<AppState>, caller: Caller) -> ApiResult<axum::Json<MeResponse>> {
    let orgs = my_orgs(&state, &caller).await?;
    let session = caller
        .session()
        .ok_or_else(|| ApiError::internal("session route without session", "route table"))?;
    Ok(axum::Json(MeResponse {
        user: UserView::from(&caller.user),
        orgs,
        csrf_token: session.csrf_token.clone(),
        session_id: session.id.clone(),
        recovery_codes_left: state.store.recovery_codes_left(&caller.user.id).await?,
    }))
}

/// The caller's organisations and roles.
pub async fn my_orgs(state: &AppState, caller: &Caller) -> ApiResult<Vec<MyOrg>> {
    Ok(state
        .store
        .orgs_of_user(&caller.user.id)
        .await?
        .into_iter()
        .map(|(o, role)| MyOrg {
            id: o.id,
            slug: o.slug,
            name: o.name,
            role,
            require_2fa: o.require_2fa,
        })
        .collect())
}

/// A session, as listed.
#[derive(Debug, Serialize, ToSchema)]
pub struct SessionView {
    /// Id (for revoking).
    pub id: String,
    /// Whether this is the session making the request.
    pub current: bool,
    /// `password` or `oauth:<provider>`.
    pub auth_method: String,
    /// Sign-in time.
    pub created_at: String,
    /// Last use.
    pub last_seen_at: String,
    /// Absolute end.
    pub expires_at: String,
    /// Address at sign-in.
    pub ip: String,
    /// Browser at sign-in.
    pub user_agent: String,
}

#[utoipa::path(get, path = "/api/v1/me/sessions", tag = "me", responses((status = 200, body = Vec<SessionView>)))]
async fn sessions(
    State(state): State<AppState>,
    caller: Caller,
) -> ApiResult<axum::Json<Vec<SessionView>>> {
    Ok(axum::Json(my_sessions(&state, &caller).await?))
}

/// The caller's signed-in sessions, the current one marked.
pub async fn my_sessions(state: &AppState, caller: &Caller) -> ApiResult<Vec<SessionView>> {
    let current = caller.session().map(|s| s.id.clone()).unwrap_or_default();
    let list = state
        .store
        .list_sessions(&caller.user.id)
        .await?
        .into_iter()
        .filter(|s| s.stage == "complete")
        .map(|s| SessionView {
            current: s.id == current,
            id: s.id,
            auth_method: s.auth_method,
            created_at: rfc3339(s.created_at),
            last_seen_at: rfc3339(s.last_seen_at),
            expires_at: rfc3339(s.expires_at),
            ip: s.ip,
            user_agent: s.user_agent,
        })
        .collect();
    Ok(list)
}

#[utoipa::path(delete, path = "/api/v1/me/sessions/{session}", tag = "me",
    params(("session" = String, Path, description = "Session id")),
    responses((status = 204), (status = 404, body = super::error::ErrorBody)))]
async fn revoke_session(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    revoke_my_session(&state, &caller, &id).await?;
    Ok(no_content())
}

/// Ends one of the caller's sessions (another person's answers "not found").
pub async fn revoke_my_session(state: &AppState, caller: &Caller, id: &str) -> ApiResult<()> {
    if !state.store.revoke_session(&caller.user.id, id).await? {
        return Err(ApiError::not_found("session"));
    }
    audit_user_event(
        state,
        &caller.user,
        "auth.session_revoked",
        "success",
        &caller.client,
        serde_json::json!({"session": id}),
    )
    .await?;
    Ok(())
}

#[utoipa::path(post, path = "/api/v1/me/logout-all", tag = "me",
    responses((status = 204, description = "Every session of this person ended, this one included")))]
async fn logout_all(State(state): State<AppState>, caller: Caller) -> ApiResult<Response> {
    sign_out_everywhere(&state, &caller).await?;
    Ok(super::auth::signed_out(caller.client.https))
}

/// Ends every session of the caller, the current one included.
pub async fn sign_out_everywhere(state: &AppState, caller: &Caller) -> ApiResult<()> {
    let n = state.store.revoke_all_sessions(&caller.user.id).await?;
    audit_user_event(
        state,
        &caller.user,
        "auth.logout_everywhere",
        "success",
        &caller.client,
        serde_json::json!({"sessions": n}),
    )
    .await?;
    Ok(())
}

/// A password change.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PasswordChange {
    /// The current password (omit for OAuth-only accounts setting a first password).
    #[serde(default)]
    pub current_password: Option<String>,
    /// The new password.
    pub new_password: String,
}

#[utoipa::path(post, path = "/api/v1/me/password", tag = "me", request_body = PasswordChange,
    responses((status = 204, description = "Changed; every other session is signed out"), (status = 400, body = super::error::ErrorBody), (status = 403, body = super::error::ErrorBody)))]
async fn change_password(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(req): ApiJson<PasswordChange>,
) -> ApiResult<Response> {
    change_my_password(&state, &caller, &req).await?;
    Ok(no_content())
}

/// Changes the caller's password and signs out their other sessions.
pub async fn change_my_password(
    state: &AppState,
    caller: &Caller,
    req: &PasswordChange,
) -> ApiResult<()> {
    if let Some(current) = &caller.user.password_hash {
        let given = req.current_password.as_deref().unwrap_or("");
        if !password::verify(given, current) {
            audit_user_event(
                state,
                &caller.user,
                "auth.password_change_failed",
                "failure",
                &caller.client,
                serde_json::json!({}),
            )
            .await?;
            return Err(ApiError::forbidden("the current password is wrong"));
        }
    }
    password::check_new(&req.new_password, &caller.user.email)
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    let hash =
        password::hash(&req.new_password).map_err(|e| ApiError::internal("hashing failed", e))?;
    state.store.set_password(&caller.user.id, &hash).await?;
    // Everyone else who had the old password is signed out; this session stays.
    let current = caller.session().map(|s| s.id.clone()).unwrap_or_default();
    for s in state.store.list_sessions(&caller.user.id).await? {
        if s.id != current {
            state.store.revoke_session(&caller.user.id, &s.id).await?;
        }
    }
    audit_user_event(
        state,
        &caller.user,
        "auth.password_changed",
        "success",
        &caller.client,
        serde_json::json!({}),
    )
    .await?;
    Ok(())
}

/// What an authenticator app needs.
#[derive(Debug, Serialize, ToSchema)]
pub struct TotpSetup {
    /// The secret, base32 (for typing in by hand).
    pub secret: String,
    /// The `otpauth://` provisioning URI.
    pub otpauth_uri: String,
    /// The URI as a PNG QR code, base64.
    pub qr_png_base64: String,
}

#[utoipa::path(post, path = "/api/v1/me/totp/setup", tag = "me",
    responses((status = 200, body = TotpSetup), (status = 409, body = super::error::ErrorBody)))]
async fn totp_setup(
    State(state): State<AppState>,
    caller: Caller,
) -> ApiResult<axum::Json<TotpSetup>> {
    Ok(axum::Json(begin_totp(&state, &caller).await?))
}

/// Starts (or restarts) setting up an authenticator app: a new secret, its URI and QR code.
pub async fn begin_totp(state: &AppState, caller: &Caller) -> ApiResult<TotpSetup> {
    let secret = totp::new_secret();
    if !state.store.begin_totp(&caller.user.id, &secret).await? {
        return Err(ApiError::conflict(
            "an authenticator app is already set up; disable it first to replace it",
        ));
    }
    let (uri, qr) = totp::provisioning(&secret, &caller.user.email)
        .map_err(|e| ApiError::internal("TOTP set-up", e))?;
    Ok(TotpSetup {
        secret,
        otpauth_uri: uri,
        qr_png_base64: qr,
    })
}

/// A code proving the app works.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TotpCode {
    /// Six digits from the authenticator app.
    pub code: String,
    /// The password (required to disable; ignored when enabling).
    #[serde(default)]
    pub password: Option<String>,
}

/// Recovery codes, shown once.
#[derive(Debug, Serialize, ToSchema)]
pub struct RecoveryCodes {
    /// Each works once in place of an authenticator code. Store them somewhere safe.
    pub recovery_codes: Vec<String>,
}

/// Checks `code` against the user's stored secret and burns its step.
async fn check_code(
    state: &AppState,
    user_id: &str,
    code: &str,
    need_enabled: bool,
) -> ApiResult<()> {
    let Some(t) = state.store.totp_state(user_id).await? else {
        return Err(ApiError::bad_request(
            "start with POST /api/v1/me/totp/setup",
        ));
    };
    if need_enabled && !t.enabled {
        return Err(ApiError::bad_request("no authenticator app is enabled"));
    }
    let now = u64::try_from(now_us() / 1_000_000).unwrap_or(0);
    let ok = match totp::check(&t.secret, code, now) {
        Some(step) => {
            state
                .store
                .accept_totp_step(user_id, i64::try_from(step).unwrap_or(i64::MAX))
                .await?
        }
        None => false,
    };
    if ok {
        Ok(())
    } else {
        Err(ApiError::forbidden(
            "the code is wrong, expired or already used",
        ))
    }
}

#[utoipa::path(post, path = "/api/v1/me/totp/enable", tag = "me", request_body = TotpCode,
    responses((status = 200, body = RecoveryCodes), (status = 403, body = super::error::ErrorBody)))]
async fn totp_enable(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(req): ApiJson<TotpCode>,
) -> ApiResult<axum::Json<RecoveryCodes>> {
    Ok(axum::Json(enable_totp(&state, &caller, &req.code).await?))
}

/// Enables the app being set up once `code` proves it works; returns the recovery codes
/// (shown once).
pub async fn enable_totp(
    state: &AppState,
    caller: &Caller,
    code: &str,
) -> ApiResult<RecoveryCodes> {
    if caller.user.totp_enabled {
        return Err(ApiError::conflict(
            "an authenticator app is already enabled",
        ));
    }
    check_code(state, &caller.user.id, code, false).await?;
    let (codes, hashes) = totp::recovery_codes();
    state.store.enable_totp(&caller.user.id, &hashes).await?;
    audit_user_event(
        state,
        &caller.user,
        "auth.totp_enabled",
        "success",
        &caller.client,
        serde_json::json!({}),
    )
    .await?;
    Ok(RecoveryCodes {
        recovery_codes: codes,
    })
}

#[utoipa::path(post, path = "/api/v1/me/totp/disable", tag = "me", request_body = TotpCode,
    responses((status = 204), (status = 403, body = super::error::ErrorBody)))]
async fn totp_disable(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(req): ApiJson<TotpCode>,
) -> ApiResult<Response> {
    disable_totp(&state, &caller, &req).await?;
    Ok(no_content())
}

/// Turns two-factor sign-in off, given the password and a current code.
pub async fn disable_totp(state: &AppState, caller: &Caller, req: &TotpCode) -> ApiResult<()> {
    if let Some(hash) = &caller.user.password_hash
        && !password::verify(req.password.as_deref().unwrap_or(""), hash)
    {
        return Err(ApiError::forbidden("the password is wrong"));
    }
    check_code(state, &caller.user.id, &req.code, true).await?;
    state.store.disable_totp(&caller.user.id).await?;
    audit_user_event(
        state,
        &caller.user,
        "auth.totp_disabled",
        "success",
        &caller.client,
        serde_json::json!({}),
    )
    .await?;
    Ok(())
}

#[utoipa::path(post, path = "/api/v1/me/recovery-codes", tag = "me", request_body = TotpCode,
    responses((status = 200, body = RecoveryCodes), (status = 403, body = super::error::ErrorBody)))]
async fn new_recovery_codes(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(req): ApiJson<TotpCode>,
) -> ApiResult<axum::Json<RecoveryCodes>> {
    Ok(axum::Json(
        replace_recovery_codes(&state, &caller, &req.code).await?,
    ))
}

/// New recovery codes (the old ones stop working), given a current code.
pub async fn replace_recovery_codes(
    state: &AppState,
    caller: &Caller,
    code: &str,
) -> ApiResult<RecoveryCodes> {
    check_code(state, &caller.user.id, code, true).await?;
    let (codes, hashes) = totp::recovery_codes();
    state
        .store
        .replace_recovery_codes(&caller.user.id, &hashes)
        .await?;
    audit_user_event(
        state,
        &caller.user,
        "auth.recovery_codes_replaced",
        "success",
        &caller.client,
        serde_json::json!({}),
    )
    .await?;
    Ok(RecoveryCodes {
        recovery_codes: codes,
    })
}

/// The OpenAPI fragment of this module.
#[derive(utoipa::OpenApi)]
#[openapi(
    paths(
        me,
        sessions,
        revoke_session,
        logout_all,
        change_password,
        totp_setup,
        totp_enable,
        totp_disable,
        new_recovery_codes
    ),
    components(schemas(
        MeResponse,
        MyOrg,
        SessionView,
        PasswordChange,
        TotpSetup,
        TotpCode,
        RecoveryCodes
    ))
)]
pub struct Doc;
