//! OAuth 2.0 / OpenID Connect sign-in (GitHub, Yandex, VK ID, any OIDC provider).
//!
//! `start` sends the browser to the provider with a fresh `state`, PKCE challenge and nonce,
//! kept server-side (only the SHA-256 of `state`) and bound to the browser by a short-lived
//! HttpOnly cookie. `callback` consumes the state exactly once, exchanges the code, and signs
//! in the person the provider names: the user linked to that provider account, or else the
//! existing user whose e-mail address the provider has verified (the link is then recorded).
//! Nobody gets an account this way: a person unknown to FlowLink is refused. A person with a
//! second factor gets a session at the `totp` stage, exactly as after a password.

use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::auth::{audit, audit_user_event, start_session};
use super::extract::cookie;
use super::{Access, ApiError, ApiResult, ApiRoute, AppState, ClientInfo};
use crate::auth::oauth::{Callback, OAuthError, Pkce, Provider, STATE_LIFETIME};
use crate::auth::secret::{constant_time_eq, random_token, sha256_hex};
use crate::store::{PendingOAuth, StoreError, User, now_us};

/// Name of the cookie that binds a sign-in in progress to the browser that started it.
pub const BINDING_COOKIE: &str = "flowlink_oauth";

/// The routes of this module.
pub fn routes() -> Vec<ApiRoute> {
    vec![
        ApiRoute::new(
            Method::GET,
            "/api/v1/auth/providers",
            Access::Public,
            providers,
        ),
        ApiRoute::new(
            Method::GET,
            "/api/v1/auth/oauth/{provider}/start",
            Access::Public,
            start,
        ),
        ApiRoute::new(
            Method::GET,
            "/api/v1/auth/oauth/{provider}/callback",
            Access::Public,
            callback,
        ),
    ]
}

/// A sign-in provider, as the sign-in page shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct ProviderView {
    /// The configured name (`[oauth.<name>]`), as it appears in URLs.
    pub name: String,
    /// `github`, `yandex`, `vk` or `oidc`.
    pub kind: String,
    /// Button text.
    pub display_name: String,
    /// Where the sign-in button leads.
    pub start_url: String,
}

fn redirect_uri(state: &AppState, name: &str) -> String {
    format!(
        "{}/api/v1/auth/oauth/{name}/callback",
        state.config.public_url
    )
}

/// The configured provider `name`, checked.
fn provider(state: &AppState, name: &str) -> ApiResult<Provider> {
    let config = state.config.oauth.get(name).ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no sign-in provider is named `{name}`; GET /api/v1/auth/providers lists them"),
        )
    })?;
    Provider::from_config(name, config).map_err(oauth_error)
}

/// The API error for an [`OAuthError`].
fn oauth_error(e: OAuthError) -> ApiError {
    let (status, code) = match &e {
        OAuthError::Misconfigured { .. } => {
            tracing::error!(error = %e, "OAuth provider misconfigured");
            (StatusCode::INTERNAL_SERVER_ERROR, "oauth_misconfigured")
        }
        OAuthError::Unreachable { .. } => (StatusCode::BAD_GATEWAY, "oauth_provider_unreachable"),
        OAuthError::BadResponse { .. } => (StatusCode::BAD_GATEWAY, "oauth_provider_error"),
        OAuthError::Refused { .. } => (StatusCode::BAD_REQUEST, "oauth_refused"),
        OAuthError::IdToken { .. } => (StatusCode::UNAUTHORIZED, "oauth_id_token_invalid"),
    };
    if status != StatusCode::INTERNAL_SERVER_ERROR {
        tracing::warn!(error = %e, "OAuth sign-in failed");
    }
    ApiError::new(status, code, e.to_string())
}

#[utoipa::path(get, path = "/api/v1/auth/providers", tag = "auth",
    responses((status = 200, body = Vec<ProviderView>, description = "The configured sign-in providers (no secrets)")))]
async fn providers(State(state): State<AppState>) -> axum::Json<Vec<ProviderView>> {
    axum::Json(configured_providers(&state))
}

/// The configured sign-in providers (the API's list and the sign-in page's buttons).
pub fn configured_providers(state: &AppState) -> Vec<ProviderView> {
    state
        .config
        .oauth
        .iter()
        .map(|(name, config)| {
            let display_name = match Provider::from_config(name, config) {
                Ok(p) => p.display_name,
                Err(_) => config.display_name.clone().unwrap_or_else(|| name.clone()),
            };
            ProviderView {
                name: name.clone(),
                kind: config.kind.clone(),
                display_name,
                start_url: format!("{}/api/v1/auth/oauth/{name}/start", state.config.public_url),
            }
        })
        .collect()
}

/// The path the binding cookie is sent to: the OAuth routes under the public URL's path.
fn binding_cookie_path(state: &AppState) -> String {
    let base = url::Url::parse(&state.config.public_url)
        .map(|u| u.path().trim_end_matches('/').to_string())
        .unwrap_or_default();
    format!("{base}/api/v1/auth/oauth/")
}

/// Whether a cookie value looks like one this server set (43 URL-safe base64 characters).
fn well_formed_binding(v: &str) -> bool {
    v.len() == 43
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

#[utoipa::path(get, path = "/api/v1/auth/oauth/{provider}/start", tag = "auth",
    params(("provider" = String, Path, description = "The provider's configured name")),
    responses(
        (status = 303, description = "To the provider's sign-in page; sets the HttpOnly `flowlink_oauth` binding cookie"),
        (status = 404, body = super::error::ErrorBody, description = "No such provider"),
        (status = 429, body = super::error::ErrorBody)))]
async fn start(
    State(state): State<AppState>,
    client: ClientInfo,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> ApiResult<Response> {
    let provider = provider(&state, &name)?;
    state.login_throttle.check(client.ip).map_err(|wait| {
        ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too_many_attempts",
            format!(
                "too many sign-in attempts from this address; wait {} s",
                wait.as_secs().max(1)
            ),
        )
    })?;
    // One binding per browser: a second tab's sign-in keeps the first one's cookie valid.
    let binding = cookie(&headers, BINDING_COOKIE)
        .filter(|v| well_formed_binding(v))
        .map(str::to_string)
        .unwrap_or_else(|| random_token(32));
    let state_param = random_token(32);
    let pkce = Pkce::generate();
    let nonce = random_token(24);
    let lifetime = i64::try_from(STATE_LIFETIME.as_micros()).unwrap_or(600_000_000);
    state
        .store
        .save_oauth_state(
            &sha256_hex(&state_param),
            &PendingOAuth {
                provider: provider.name.clone(),
                pkce_verifier: pkce.verifier.clone(),
                nonce: nonce.clone(),
                browser_hash: sha256_hex(&binding),
                expires_at: now_us() + lifetime,
            },
        )
        .await?;
    let location =
        provider.authorization_url(&redirect_uri(&state, &name), &state_param, &pkce, &nonce);
    let binding_cookie = format!(
        "{BINDING_COOKIE}={binding}; Path={}; HttpOnly; SameSite=Lax; Max-Age={}{}",
        binding_cookie_path(&state),
        STATE_LIFETIME.as_secs(),
        if client.https { "; Secure" } else { "" }
    );
    let mut response = StatusCode::SEE_OTHER.into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::LOCATION,
        HeaderValue::from_str(location.as_str())
            .map_err(|e| ApiError::internal("authorization URL", e))?,
    );
    headers.append(
        header::SET_COOKIE,
        HeaderValue::from_str(&binding_cookie).map_err(|e| ApiError::internal("cookie", e))?,
    );
    Ok(response)
}

/// What the provider sends back to the callback.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct CallbackQuery {
    /// The authorization code.
    pub code: Option<String>,
    /// The `state` sent to the provider.
    pub state: Option<String>,
    /// Set by the provider when the person declined or the request was refused.
    pub error: Option<String>,
    /// The provider's explanation of `error`.
    pub error_description: Option<String>,
    /// VK ID only: the device the person signed in on.
    pub device_id: Option<String>,
}

impl CallbackQuery {
    fn parse(raw: Option<&str>) -> CallbackQuery {
        let mut q = CallbackQuery::default();
        for (k, v) in url::form_urlencoded::parse(raw.unwrap_or("").as_bytes()) {
            let slot = match k.as_ref() {
                "code" => &mut q.code,
                "state" => &mut q.state,
                "error" => &mut q.error,
                "error_description" => &mut q.error_description,
                "device_id" => &mut q.device_id,
                _ => continue,
            };
            // The first occurrence wins; a repeated parameter cannot override it.
            if slot.is_none() {
                *slot = Some(v.into_owned());
            }
        }
        q
    }
}

/// Records a failed OAuth sign-in of someone not (yet) known as a user.
async fn audit_anonymous_failure(
    state: &AppState,
    client: &ClientInfo,
    provider: &str,
    reason: &str,
) -> ApiResult<()> {
    audit(
        state,
        None,
        "auth.login_failed",
        ("anonymous", ""),
        "",
        "failure",
        client,
        serde_json::json!({"method": format!("oauth:{provider}"), "reason": reason}),
    )
    .await
}

fn state_invalid() -> ApiError {
    ApiError::new(
        StatusCode::BAD_REQUEST,
        "oauth_state_invalid",
        "this sign-in response is not valid here: it is unknown, expired, already used, meant for another provider, or was started in another browser; start the sign-in again from the sign-in page",
    )
}

#[utoipa::path(get, path = "/api/v1/auth/oauth/{provider}/callback", tag = "auth",
    params(("provider" = String, Path, description = "The provider's configured name"), CallbackQuery),
    responses(
        (status = 303, description = "Signed in: to the start page, with the session cookie (stage `totp` when a second factor is due)"),
        (status = 400, body = super::error::ErrorBody, description = "`oauth_state_invalid`, `oauth_denied` or `oauth_refused`"),
        (status = 401, body = super::error::ErrorBody, description = "`oauth_id_token_invalid`"),
        (status = 403, body = super::error::ErrorBody, description = "`no_account`, `email_unverified`, `account_disabled` or `account_locked`"),
        (status = 502, body = super::error::ErrorBody, description = "The provider failed or could not be reached")))]
async fn callback(
    State(state): State<AppState>,
    client: ClientInfo,
    headers: HeaderMap,
    Path(name): Path<String>,
    RawQuery(raw): RawQuery,
) -> ApiResult<Response> {
    // The provider sends a person's browser here: a refusal it follows must be a page that says
    // why, with the way back to sign in, not a JSON body.
    let browser = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("text/html"));
    match finish_callback(&state, &client, &headers, &name, raw.as_deref()).await {
        Err(e) if browser => Ok(crate::ui::sign_in_refused(&state, e)),
        other => other,
    }
}

async fn finish_callback(
    state: &AppState,
    client: &ClientInfo,
    headers: &HeaderMap,
    name: &str,
    raw: Option<&str>,
) -> ApiResult<Response> {
    let provider = provider(state, name)?;
    let query = CallbackQuery::parse(raw);
    // The state is consumed first, whatever else the response says: it works once.
    let pending = match query.state.as_deref() {
        Some(s) if !s.is_empty() => state.store.take_oauth_state(&sha256_hex(s)).await?,
        _ => None,
    };
    if let Some(error) = &query.error {
        audit_anonymous_failure(state, client, name, "provider_error").await?;
        let error: String = error
            .chars()
            .filter(|c| !c.is_control())
            .take(100)
            .collect();
        let description = query
            .error_description
            .as_deref()
            .map(|d| {
                let d: String = d.chars().filter(|c| !c.is_control()).take(200).collect();
                format!(" ({d})")
            })
            .unwrap_or_default();
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "oauth_denied",
            format!(
                "{} did not sign you in: {error}{description}; if you cancelled, start again from the sign-in page",
                provider.display_name
            ),
        ));
    }
    let binding = cookie(headers, BINDING_COOKIE).unwrap_or("");
    let reason = match &pending {
        None if query.state.is_none() => Some("state_missing"),
        None => Some("state_unknown"),
        Some(p) if p.expires_at <= now_us() => Some("state_expired"),
        Some(p) if p.provider != name => Some("state_other_provider"),
        Some(_) if binding.is_empty() => Some("binding_cookie_missing"),
        Some(p) if !constant_time_eq(&sha256_hex(binding), &p.browser_hash) => {
            Some("binding_cookie_mismatch")
        }
        Some(_) => None,
    };
    let pending = match (reason, pending) {
        (None, Some(p)) => p,
        (reason, _) => {
            audit_anonymous_failure(state, client, name, reason.unwrap_or("state_unknown")).await?;
            return Err(state_invalid());
        }
    };
    let code = query.code.filter(|c| !c.is_empty()).ok_or_else(|| {
        ApiError::bad_request("the provider sent no authorization code; start the sign-in again")
    })?;
    let callback = Callback {
        code,
        device_id: query.device_id,
        state: query.state.unwrap_or_default(),
    };
    let identity = match provider
        .identify(
            &state.http,
            &redirect_uri(state, name),
            &callback,
            &pending.pkce_verifier,
            &pending.nonce,
        )
        .await
    {
        Ok(identity) => identity,
        Err(e) => {
            audit_anonymous_failure(state, client, name, e.reason()).await?;
            return Err(oauth_error(e));
        }
    };
    let user = resolve_user(state, client, name, &provider, &identity).await?;
    let method = format!("oauth:{name}");
    let session = if user.totp_enabled {
        audit_user_event(
            state,
            &user,
            "auth.oauth_ok",
            "success",
            client,
            serde_json::json!({"method": method, "next": "totp"}),
        )
        .await?;
        start_session(state, &user, "totp", &method, client).await?
    } else {
        state.store.reset_login_failures(&user.id).await?;
        audit_user_event(
            state,
            &user,
            "auth.login",
            "success",
            client,
            serde_json::json!({"method": method}),
        )
        .await?;
        start_session(state, &user, "complete", &method, client).await?
    };
    // The browser follows a redirect, not a JSON body: keep only the session cookie.
    let mut response = StatusCode::SEE_OTHER.into_response();
    let out = response.headers_mut();
    out.insert(
        header::LOCATION,
        HeaderValue::from_str(&format!("{}/", state.config.public_url))
            .map_err(|e| ApiError::internal("public URL", e))?,
    );
    for value in session.headers().get_all(header::SET_COOKIE) {
        out.append(header::SET_COOKIE, value.clone());
    }
    Ok(response)
}

/// The FlowLink user a provider identity signs in as: the linked one, or the existing user
/// with the provider-verified e-mail address (then linked). Refuses unknown people and
/// accounts that are disabled or locked.
async fn resolve_user(
    state: &AppState,
    client: &ClientInfo,
    name: &str,
    provider: &Provider,
    identity: &crate::auth::oauth::Identity,
) -> ApiResult<User> {
    let linked = state.store.oauth_identity(name, &identity.subject).await?;
    let (user, newly_linked) = match linked {
        Some(link) => match state.store.user_by_id(&link.user_id).await? {
            Some(u) => (u, false),
            None => {
                return Err(ApiError::internal(
                    "a linked user is missing",
                    &link.user_id,
                ));
            }
        },
        None => {
            let Some(email) = identity.verified_email.as_deref() else {
                audit_anonymous_failure(state, client, name, "email_unverified").await?;
                return Err(ApiError::new(
                    StatusCode::FORBIDDEN,
                    "email_unverified",
                    format!(
                        "{} did not confirm an e-mail address for this account, so it cannot be matched to a FlowLink account; verify your address there (on GitHub: make a verified address primary) and try again, or sign in with your password",
                        provider.display_name
                    ),
                ));
            };
            match state.store.user_by_email(email).await? {
                Some(u) => (u, true),
                None => {
                    audit_anonymous_failure(state, client, name, "no_account").await?;
                    return Err(ApiError::new(
                        StatusCode::FORBIDDEN,
                        "no_account",
                        format!(
                            "there is no FlowLink account for {email}; ask an admin to add you (accounts are not created by signing in)"
                        ),
                    ));
                }
            }
        }
    };
    if user.disabled {
        audit_user_event(
            state,
            &user,
            "auth.login_failed",
            "failure",
            client,
            serde_json::json!({"method": format!("oauth:{name}"), "reason": "account_disabled"}),
        )
        .await?;
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "account_disabled",
            "this account is disabled; ask an admin",
        ));
    }
    if user.locked_until > now_us() {
        let minutes = ((user.locked_until - now_us()) / 60_000_000).max(1);
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "account_locked",
            format!(
                "too many failed sign-ins: this account is locked for about {minutes} more minute(s), or until an admin resets it"
            ),
        ));
    }
    if newly_linked {
        let email = identity.verified_email.as_deref().unwrap_or_default();
        match state
            .store
            .link_oauth_identity(name, &identity.subject, &user.id, email)
            .await
        {
            Ok(_) => {
                audit_user_event(
                    state,
                    &user,
                    "auth.oauth_linked",
                    "success",
                    client,
                    serde_json::json!({"provider": name, "subject": identity.subject, "email": email}),
                )
                .await?;
            }
            // A concurrent sign-in linked it first; fine if it is this user.
            Err(StoreError::Conflict(_)) => {
                let now_linked = state.store.oauth_identity(name, &identity.subject).await?;
                if now_linked.map(|l| l.user_id) != Some(user.id.clone()) {
                    return Err(ApiError::conflict(
                        "this provider account was just linked to another FlowLink account; ask an admin",
                    ));
                }
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(user)
}

/// The OpenAPI fragment of this module.
#[derive(utoipa::OpenApi)]
#[openapi(paths(providers, start, callback), components(schemas(ProviderView)))]
pub struct Doc;
