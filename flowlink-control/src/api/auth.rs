//! Sign-in and sign-out: first-run owner creation, password, second factor, sessions.

use axum::extract::State;
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::extract::SESSION_COOKIE;
use super::{Access, ApiError, ApiJson, ApiResult, ApiRoute, AppState, Caller, ClientInfo};
use crate::auth::secret::{random_token, sha256_hex};
use crate::auth::{Role, password, totp};
use crate::store::{AuditEvent, NewSession, User, new_id, now_us};

/// The routes of this module.
pub fn routes() -> Vec<ApiRoute> {
    vec![
        ApiRoute::new(Method::POST, "/api/v1/setup", Access::Public, setup),
        ApiRoute::new(Method::POST, "/api/v1/auth/login", Access::Public, login),
        ApiRoute::new(
            Method::POST,
            "/api/v1/auth/totp",
            Access::SecondFactorDue,
            second_factor,
        ),
        ApiRoute::new(
            Method::POST,
            "/api/v1/auth/logout",
            Access::AnySession,
            logout,
        ),
        ApiRoute::new(
            Method::GET,
            "/api/v1/auth/session",
            Access::AnySession,
            current_session,
        ),
    ]
}

/// First-run set-up: the owner account and the first organisation.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetupRequest {
    /// The one-time token printed by `flowlink-control serve` on first start.
    pub token: String,
    /// The owner's e-mail address.
    pub email: String,
    /// The owner's password (at least 12 characters).
    pub password: String,
    /// The owner's name.
    pub display_name: String,
    /// The first organisation's name.
    pub org_name: String,
    /// The first organisation's slug (a-z, 0-9, `-`).
    pub org_slug: String,
}

/// A person, as the API shows them.
#[derive(Debug, Serialize, ToSchema)]
pub struct UserView {
    /// Id.
    pub id: String,
    /// E-mail address.
    pub email: String,
    /// Name.
    pub display_name: String,
    /// Whether a second factor is set up.
    pub totp_enabled: bool,
    /// Whether the account can sign in with a password.
    pub has_password: bool,
}

impl From<&User> for UserView {
    fn from(u: &User) -> UserView {
        UserView {
            id: u.id.clone(),
            email: u.email.clone(),
            display_name: u.display_name.clone(),
            totp_enabled: u.totp_enabled,
            has_password: u.password_hash.is_some(),
        }
    }
}

/// What set-up created.
#[derive(Debug, Serialize, ToSchema)]
pub struct SetupResponse {
    /// The owner.
    pub user: UserView,
    /// The organisation's id.
    pub org_id: String,
    /// The organisation's slug.
    pub org_slug: String,
}

/// Checks an organisation slug.
pub fn check_slug(slug: &str) -> Result<(), ApiError> {
    let ok = (2..=48).contains(&slug.len())
        && slug
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !slug.starts_with('-')
        && !slug.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(ApiError::bad_request(
            "an organisation slug is 2-48 characters of a-z, 0-9 and `-`, not starting or ending with `-`",
        ))
    }
}

/// Checks an e-mail address enough to catch typos (the address is an identifier, not mailed).
pub fn check_email(email: &str) -> Result<(), ApiError> {
    let email = email.trim();
    let ok = email.len() <= 254
        && email.split_once('@').is_some_and(|(l, d)| {
            !l.is_empty() && d.contains('.') && !d.starts_with('.') && !d.ends_with('.')
        })
        && !email.chars().any(|c| c.is_whitespace() || c.is_control());
    if ok {
        Ok(())
    } else {
        Err(ApiError::bad_request(format!(
            "`{email}` is not an e-mail address"
        )))
    }
}

/// Checks a display name.
pub fn check_display_name(name: &str) -> Result<(), ApiError> {
    let n = name.trim().chars().count();
    if (1..=100).contains(&n) && !name.chars().any(char::is_control) {
        Ok(())
    } else {
        Err(ApiError::bad_request(
            "a name is 1-100 characters without control characters",
        ))
    }
}

/// Records a person's security-relevant action.
#[allow(clippy::too_many_arguments)] // one audit record's fields, each named at the call site
pub async fn audit(
    state: &AppState,
    org_id: Option<&str>,
    kind: &str,
    actor: (&str, &str),
    target: &str,
    outcome: &str,
    client: &ClientInfo,
    detail: serde_json::Value,
) -> Result<(), ApiError> {
    state
        .store
        .record_audit(&AuditEvent {
            org_id: org_id.map(str::to_string),
            kind: kind.to_string(),
            actor_kind: actor.0.to_string(),
            actor_id: actor.1.to_string(),
            target: target.to_string(),
            outcome: outcome.to_string(),
            ip: client.ip.to_string(),
            detail,
        })
        .await?;
    Ok(())
}

/// Records an event for every organisation the user belongs to (sign-ins concern them all)
/// or, for a user in none, once without an organisation.
pub async fn audit_user_event(
    state: &AppState,
    user: &User,
    kind: &str,
    outcome: &str,
    client: &ClientInfo,
    detail: serde_json::Value,
) -> Result<(), ApiError> {
    let orgs = state.store.orgs_of_user(&user.id).await?;
    if orgs.is_empty() {
        return audit(
            state,
            None,
            kind,
            ("user", &user.id),
            &user.id,
            outcome,
            client,
            detail,
        )
        .await;
    }
    for (org, _) in orgs {
        audit(
            state,
            Some(&org.id),
            kind,
            ("user", &user.id),
            &user.id,
            outcome,
            client,
            detail.clone(),
        )
        .await?;
    }
    Ok(())
}

#[utoipa::path(post, path = "/api/v1/setup", tag = "auth", request_body = SetupRequest,
    responses((status = 201, body = SetupResponse), (status = 403, body = super::error::ErrorBody), (status = 409, body = super::error::ErrorBody)))]
async fn setup(
    State(state): State<AppState>,
    client: ClientInfo,
    ApiJson(req): ApiJson<SetupRequest>,
) -> ApiResult<Response> {
    let created = create_owner(&state, &client, &req).await?;
    Ok((StatusCode::CREATED, axum::Json(created)).into_response())
}

/// First-run set-up (the API's and the web UI's): checks the one-time token and creates the
/// owner and the first organisation.
pub async fn create_owner(
    state: &AppState,
    client: &ClientInfo,
    req: &SetupRequest,
) -> ApiResult<SetupResponse> {
    let state = state.clone();
    if state.store.any_user_exists().await? {
        return Err(ApiError::conflict(
            "FlowLink is already set up; sign in, or ask an owner (or `flowlink-control admin`) for an account",
        ));
    }
    check_email(&req.email)?;
    check_display_name(&req.display_name)?;
    check_display_name(&req.org_name)?;
    check_slug(&req.org_slug)?;
    password::check_new(&req.password, &req.email)
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    if !state
        .store
        .consume_setup_token(&sha256_hex(&req.token))
        .await?
    {
        return Err(ApiError::forbidden(
            "the set-up token is wrong, used or expired; restart `flowlink-control serve` to print a new one",
        ));
    }
    let hash =
        password::hash(&req.password).map_err(|e| ApiError::internal("hashing failed", e))?;
    let user = state
        .store
        .create_user(&req.email, req.display_name.trim(), Some(&hash))
        .await?;
    let org = state
        .store
        .create_org(&req.org_slug, req.org_name.trim())
        .await?;
    state
        .store
        .add_member(&org.id, &user.id, Role::Owner.as_str())
        .await?;
    audit(
        &state,
        Some(&org.id),
        "setup.owner_created",
        ("user", &user.id),
        &user.id,
        "success",
        client,
        serde_json::json!({"email": user.email, "org": org.slug}),
    )
    .await?;
    Ok(SetupResponse {
        user: UserView::from(&user),
        org_id: org.id,
        org_slug: org.slug,
    })
}

/// E-mail and password.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    /// E-mail address.
    pub email: String,
    /// Password.
    pub password: String,
}

/// A started or completed sign-in.
#[derive(Debug, Serialize, ToSchema)]
pub struct SignedIn {
    /// Who.
    pub user: UserView,
    /// `complete`, or `totp` when the second factor is due (POST /api/v1/auth/totp).
    pub stage: String,
    /// Echo this in the `X-CSRF-Token` header of every state-changing request.
    pub csrf_token: String,
    /// When the session ends at the latest (RFC 3339).
    pub expires_at: String,
}

/// Starts a session and returns the response that sets its cookie.
pub async fn start_session(
    state: &AppState,
    user: &User,
    stage: &str,
    auth_method: &str,
    client: &ClientInfo,
) -> ApiResult<Response> {
    let (body, cookie) = open_session(state, user, stage, auth_method, client).await?;
    let mut response = axum::Json(body).into_response();
    response.headers_mut().append(header::SET_COOKIE, cookie);
    Ok(response)
}

/// Starts a session: what the API answers and the `Set-Cookie` value carrying its secret.
pub async fn open_session(
    state: &AppState,
    user: &User,
    stage: &str,
    auth_method: &str,
    client: &ClientInfo,
) -> ApiResult<(SignedIn, HeaderValue)> {
    let secret = random_token(32);
    let csrf = random_token(24);
    let lifetime = if stage == "complete" {
        state.config.session_absolute_timeout
    } else {
        // The second-factor step must follow promptly.
        std::time::Duration::from_secs(600)
    };
    let expires_at = now_us() + i64::try_from(lifetime.as_micros()).unwrap_or(i64::MAX / 2);
    let ip = client.ip.to_string();
    state
        .store
        .create_session(&NewSession {
            id: &new_id(),
            token_hash: &sha256_hex(&secret),
            user_id: &user.id,
            csrf_token: &csrf,
            stage,
            auth_method,
            expires_at,
            ip: &ip,
            user_agent: &client.user_agent,
        })
        .await?;
    let body = SignedIn {
        user: UserView::from(user),
        stage: stage.to_string(),
        csrf_token: csrf,
        expires_at: rfc3339(expires_at),
    };
    let cookie = session_cookie(&secret, lifetime.as_secs(), client.https);
    let cookie = HeaderValue::from_str(&cookie).map_err(|e| ApiError::internal("cookie", e))?;
    Ok((body, cookie))
}

/// `Set-Cookie` value for the session: HttpOnly, SameSite=Lax (the OAuth redirect back must
/// carry it), Secure whenever the client is on HTTPS.
pub fn session_cookie(secret: &str, max_age_secs: u64, https: bool) -> String {
    format!(
        "{SESSION_COOKIE}={secret}; Path=/; HttpOnly; SameSite=Lax; Max-Age={max_age_secs}{}",
        if https { "; Secure" } else { "" }
    )
}

/// `Set-Cookie` value that removes the session cookie.
pub fn clear_session_cookie(https: bool) -> String {
    session_cookie("", 0, https)
}

/// Unix µs as RFC 3339 (UTC).
pub fn rfc3339(us: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(us) * 1000)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

fn throttled(state: &AppState, client: &ClientInfo) -> Result<(), ApiError> {
    state.login_throttle.check(client.ip).map_err(|wait| {
        let secs = wait.as_secs().max(1);
        ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too_many_attempts",
            format!("too many sign-in attempts from this address; wait {secs} s"),
        )
    })
}

fn locked_error(until_us: i64) -> ApiError {
    let minutes = ((until_us - now_us()) / 60_000_000).max(1);
    ApiError::new(
        StatusCode::FORBIDDEN,
        "account_locked",
        format!(
            "too many failed sign-ins: this account is locked for about {minutes} more minute(s), or until an admin resets it"
        ),
    )
}

/// Counts a failed attempt against `user` and records it.
async fn sign_in_failed(
    state: &AppState,
    user: &User,
    step: &str,
    client: &ClientInfo,
) -> ApiResult<()> {
    let lock_until =
        now_us() + i64::try_from(state.config.login_lockout.as_micros()).unwrap_or(i64::MAX / 2);
    let locked = state
        .store
        .record_login_failure(&user.id, state.config.login_max_failures, lock_until)
        .await?;
    audit_user_event(
        state,
        user,
        "auth.login_failed",
        "failure",
        client,
        serde_json::json!({"step": step}),
    )
    .await?;
    if locked {
        tracing::warn!(user = %user.id, "account locked after repeated failed sign-ins");
        audit_user_event(
            state,
            user,
            "auth.account_locked",
            "success",
            client,
            serde_json::json!({"until": rfc3339(lock_until)}),
        )
        .await?;
    }
    Ok(())
}

#[utoipa::path(post, path = "/api/v1/auth/login", tag = "auth", request_body = LoginRequest,
    responses((status = 200, body = SignedIn, description = "Session cookie set"), (status = 401, body = super::error::ErrorBody),
        (status = 403, body = super::error::ErrorBody), (status = 429, body = super::error::ErrorBody)))]
async fn login(
    State(state): State<AppState>,
    client: ClientInfo,
    ApiJson(req): ApiJson<LoginRequest>,
) -> ApiResult<Response> {
    let (user, stage) = password_step(&state, &client, &req.email, &req.password).await?;
    start_session(&state, &user, stage, "password", &client).await
}

/// The password step of a sign-in (the API's and the web UI's): the account and the stage of
/// the session to start (`totp` when a second factor is due, else `complete`).
pub async fn password_step(
    state: &AppState,
    client: &ClientInfo,
    email: &str,
    given_password: &str,
) -> ApiResult<(User, &'static str)> {
    let (state, client) = (state.clone(), client.clone());
    let req = LoginRequest {
        email: email.to_string(),
        password: given_password.to_string(),
    };
    throttled(&state, &client)?;
    let invalid = || ApiError::unauthenticated("wrong e-mail address or password");
    let user = match state.store.user_by_email(&req.email).await? {
        Some(u) if u.password_hash.is_some() => u,
        _ => {
            // Same work as a real check, so timing does not tell which addresses exist.
            password::verify_dummy(&req.password);
            audit(
                &state,
                None,
                "auth.login_failed",
                ("anonymous", &req.email.trim().to_lowercase()),
                "",
                "failure",
                &client,
                serde_json::json!({"step": "password", "reason": "unknown account"}),
            )
            .await?;
            return Err(invalid());
        }
    };
    let ok = password::verify(
        &req.password,
        user.password_hash.as_deref().unwrap_or_default(),
    );
    if user.locked_until > now_us() {
        return Err(locked_error(user.locked_until));
    }
    if !ok {
        sign_in_failed(&state, &user, "password", &client).await?;
        return Err(invalid());
    }
    if user.disabled {
        return Err(ApiError::forbidden(
            "this account is disabled; ask an admin",
        ));
    }
    if user.totp_enabled {
        audit_user_event(
            &state,
            &user,
            "auth.password_ok",
            "success",
            &client,
            serde_json::json!({"next": "totp"}),
        )
        .await?;
        return Ok((user, "totp"));
    }
    state.store.reset_login_failures(&user.id).await?;
    audit_user_event(
        &state,
        &user,
        "auth.login",
        "success",
        &client,
        serde_json::json!({"method": "password"}),
    )
    .await?;
    Ok((user, "complete"))
}

/// A code from the authenticator app, or a recovery code.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SecondFactorRequest {
    /// Six digits from the authenticator app.
    #[serde(default)]
    pub code: Option<String>,
    /// One of the recovery codes (each works once).
    #[serde(default)]
    pub recovery_code: Option<String>,
}

#[utoipa::path(post, path = "/api/v1/auth/totp", tag = "auth", request_body = SecondFactorRequest,
    responses((status = 200, body = SignedIn, description = "A new, complete session cookie replaces the pending one"),
        (status = 401, body = super::error::ErrorBody)))]
async fn second_factor(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(req): ApiJson<SecondFactorRequest>,
) -> ApiResult<Response> {
    let first_step = second_factor_step(&state, &caller, &req).await?;
    start_session(
        &state,
        &caller.user,
        "complete",
        &first_step,
        &caller.client,
    )
    .await
}

/// The second step of a sign-in (the API's and the web UI's): checks the code or recovery
/// code and ends the pending session; returns how the first step was made, for the complete
/// session the caller starts next.
pub async fn second_factor_step(
    state: &AppState,
    caller: &Caller,
    req: &SecondFactorRequest,
) -> ApiResult<String> {
    let state = state.clone();
    let client = caller.client.clone();
    throttled(&state, &client)?;
    let user = &caller.user;
    // The completed session keeps how the first step was made (password or an OAuth provider).
    let first_step = caller
        .session()
        .map(|s| s.auth_method.clone())
        .unwrap_or_else(|| "password".into());
    if user.locked_until > now_us() {
        return Err(locked_error(user.locked_until));
    }
    let method = match (&req.code, &req.recovery_code) {
        (Some(code), None) => {
            let Some(totp_state) = state
                .store
                .totp_state(&user.id)
                .await?
                .filter(|t| t.enabled)
            else {
                return Err(ApiError::bad_request(
                    "this account has no authenticator app set up",
                ));
            };
            let now = u64::try_from(now_us() / 1_000_000).unwrap_or(0);
            let accepted = match totp::check(&totp_state.secret, code, now) {
                Some(step) => {
                    state
                        .store
                        .accept_totp_step(&user.id, i64::try_from(step).unwrap_or(i64::MAX))
                        .await?
                }
                None => false,
            };
            if !accepted {
                sign_in_failed(&state, user, "totp", &client).await?;
                return Err(ApiError::unauthenticated(
                    "the code is wrong, expired or already used; wait for the next code",
                ));
            }
            "totp"
        }
        (None, Some(code)) => {
            if !state
                .store
                .use_recovery_code(&user.id, &totp::hash_recovery_code(code))
                .await?
            {
                sign_in_failed(&state, user, "recovery_code", &client).await?;
                return Err(ApiError::unauthenticated(
                    "the recovery code is wrong or already used",
                ));
            }
            "recovery_code"
        }
        _ => {
            return Err(ApiError::bad_request(
                "send exactly one of `code` and `recovery_code`",
            ));
        }
    };
    state.store.reset_login_failures(&user.id).await?;
    // A new session id for the new privilege level (no session fixation).
    if let Some(pending) = caller.session() {
        state.store.revoke_session(&user.id, &pending.id).await?;
    }
    let left = state.store.recovery_codes_left(&user.id).await?;
    audit_user_event(&state, user, "auth.login", "success", &client,
        serde_json::json!({"method": first_step, "second_factor": method, "recovery_codes_left": left})).await?;
    Ok(first_step)
}

#[utoipa::path(get, path = "/api/v1/auth/session", tag = "auth",
    responses((status = 200, body = SignedIn, description = "This session's stage and CSRF token (also while the second factor is due, e.g. after an OAuth redirect)"),
        (status = 401, body = super::error::ErrorBody)))]
async fn current_session(caller: Caller) -> ApiResult<axum::Json<SignedIn>> {
    let session = caller
        .session()
        .ok_or_else(|| ApiError::internal("session route without session", "route table"))?;
    Ok(axum::Json(SignedIn {
        user: UserView::from(&caller.user),
        stage: session.stage.clone(),
        csrf_token: session.csrf_token.clone(),
        expires_at: rfc3339(session.expires_at),
    }))
}

#[utoipa::path(post, path = "/api/v1/auth/logout", tag = "auth",
    responses((status = 204, description = "Session ended, cookie cleared")))]
async fn logout(State(state): State<AppState>, caller: Caller) -> ApiResult<Response> {
    end_session(&state, &caller).await?;
    Ok(signed_out(caller.client.https))
}

/// Ends the caller's session and records it (the API's and the web UI's sign-out).
pub async fn end_session(state: &AppState, caller: &Caller) -> ApiResult<()> {
    if let Some(session) = caller.session() {
        state
            .store
            .revoke_session(&caller.user.id, &session.id)
            .await?;
    }
    audit_user_event(
        state,
        &caller.user,
        "auth.logout",
        "success",
        &caller.client,
        serde_json::json!({}),
    )
    .await?;
    Ok(())
}

/// A 204 that removes the session cookie.
pub fn signed_out(https: bool) -> Response {
    let mut response = StatusCode::NO_CONTENT.into_response();
    if let Ok(v) = HeaderValue::from_str(&clear_session_cookie(https)) {
        response.headers_mut().append(header::SET_COOKIE, v);
    }
    response
}

/// The OpenAPI fragment of this module.
#[derive(utoipa::OpenApi)]
#[openapi(
    paths(setup, login, second_factor, logout, current_session),
    components(schemas(
        SetupRequest,
        SetupResponse,
        UserView,
        LoginRequest,
        SignedIn,
        SecondFactorRequest
    ))
)]
pub struct Doc;
