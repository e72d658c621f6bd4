//! The signed-in person's pages: the start page, and the account page with two-factor set-up
//! (QR code, recovery codes shown once) and the sessions list with revoke. Each calls the same
//! functions as the API's `me` routes.

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::{Method, StatusCode};
use serde::Deserialize;

use super::auth::{sentence, to_sign_in_signed_out};
use super::layout::{render_status, when};
use super::{Chrome, PageResult, render, see_other};
use crate::api::me::{
    MyOrg, PasswordChange, SessionView, TotpCode, TotpSetup, begin_totp, change_my_password,
    disable_totp, enable_totp, my_orgs, my_sessions, replace_recovery_codes, revoke_my_session,
};
use crate::api::{Access, ApiError, ApiResult, ApiRoute, AppState, Caller};
use crate::auth::totp;

/// The routes of the account pages.
pub fn routes() -> Vec<ApiRoute> {
    vec![
        ApiRoute::new(Method::GET, "/ui/", Access::Session, home),
        ApiRoute::new(Method::GET, "/ui/account", Access::Session, account),
        ApiRoute::new(
            Method::POST,
            "/ui/account/totp/setup",
            Access::Session,
            totp_setup,
        ),
        ApiRoute::new(
            Method::POST,
            "/ui/account/totp/enable",
            Access::Session,
            totp_enable,
        ),
        ApiRoute::new(
            Method::POST,
            "/ui/account/totp/disable",
            Access::Session,
            totp_disable,
        ),
        ApiRoute::new(
            Method::POST,
            "/ui/account/recovery-codes",
            Access::Session,
            recovery_codes,
        ),
        ApiRoute::new(
            Method::POST,
            "/ui/account/password",
            Access::Session,
            change_password,
        ),
        ApiRoute::new(
            Method::POST,
            "/ui/account/sessions/{session}/revoke",
            Access::Session,
            revoke,
        ),
        ApiRoute::new(
            Method::POST,
            "/ui/account/sign-out-everywhere",
            Access::Session,
            sign_out_everywhere,
        ),
    ]
}

#[derive(Template)]
#[template(path = "home.html")]
struct HomePage {
    chrome: Chrome,
    orgs: Vec<MyOrg>,
    totp_enabled: bool,
}

async fn home(State(state): State<AppState>, caller: Caller) -> PageResult {
    render(&HomePage {
        chrome: Chrome::new(&state, &caller, "Home"),
        orgs: my_orgs(&state, &caller).await?,
        totp_enabled: caller.user.totp_enabled,
    })
}

#[derive(Template)]
#[template(path = "account.html")]
struct AccountPage {
    chrome: Chrome,
    email: String,
    totp_enabled: bool,
    has_password: bool,
    recovery_codes_left: i64,
    sessions: Vec<SessionRow>,
    notice: Option<String>,
    errors: AccountErrors,
}

/// Field errors of the account page's forms.
#[derive(Debug, Default)]
struct AccountErrors {
    current_password: Option<String>,
    new_password: Option<String>,
    disable_password: Option<String>,
    disable_code: Option<String>,
    recovery_code: Option<String>,
}

/// `?done=…` after a change (post/redirect/get).
#[derive(Debug, Deserialize)]
pub struct AccountQuery {
    #[serde(default)]
    done: Option<String>,
}

/// A session as the account page lists it.
struct SessionRow {
    s: SessionView,
    created: String,
    last_seen: String,
}

async fn account(
    State(state): State<AppState>,
    caller: Caller,
    Query(q): Query<AccountQuery>,
) -> PageResult {
    let notice = match q.done.as_deref() {
        Some("password") => Some("Your password is changed; your other sessions are signed out."),
        Some("totp-off") => Some("Two-factor sign-in is off."),
        _ => None,
    };
    let page = account_page(
        &state,
        &caller,
        notice.map(str::to_string),
        AccountErrors::default(),
    )
    .await?;
    render(&page)
}

/// The account page shown again with `errors` (a 400).
async fn account_with_errors(
    state: &AppState,
    caller: &Caller,
    errors: AccountErrors,
) -> PageResult {
    let page = account_page(state, caller, None, errors).await?;
    render_status(StatusCode::BAD_REQUEST, &page)
}

async fn account_page(
    state: &AppState,
    caller: &Caller,
    notice: Option<String>,
    errors: AccountErrors,
) -> ApiResult<AccountPage> {
    Ok(AccountPage {
        chrome: Chrome::new(state, caller, "Your account"),
        email: caller.user.email.clone(),
        totp_enabled: caller.user.totp_enabled,
        has_password: caller.user.password_hash.is_some(),
        notice,
        errors,
        recovery_codes_left: state.store.recovery_codes_left(&caller.user.id).await?,
        sessions: my_sessions(state, caller)
            .await?
            .into_iter()
            .map(|s| SessionRow {
                created: when(&s.created_at),
                last_seen: when(&s.last_seen_at),
                s,
            })
            .collect(),
    })
}

/// Whether `e` is about the person's input (shown next to a field) rather than the server.
fn said_to_person(e: &ApiError) -> bool {
    e.status.is_client_error() && e.status != StatusCode::TOO_MANY_REQUESTS
}

/// The password-change form.
#[derive(Debug, Deserialize)]
pub struct PasswordForm {
    #[serde(default)]
    current_password: String,
    #[serde(default)]
    new_password: String,
}

async fn change_password(
    State(state): State<AppState>,
    caller: Caller,
    axum::Form(form): axum::Form<PasswordForm>,
) -> PageResult {
    let req = PasswordChange {
        current_password: Some(form.current_password),
        new_password: form.new_password,
    };
    match change_my_password(&state, &caller, &req).await {
        Ok(()) => Ok(see_other(&state, "/ui/account?done=password")),
        Err(e) if said_to_person(&e) => {
            let mut errors = AccountErrors::default();
            if e.status == StatusCode::FORBIDDEN {
                errors.current_password = Some(sentence(&e.message));
            } else {
                errors.new_password = Some(sentence(&e.message));
            }
            account_with_errors(&state, &caller, errors).await
        }
        Err(e) => Err(e),
    }
}

/// A form with the password and a code (turning two-factor sign-in off).
#[derive(Debug, Deserialize)]
pub struct DisableForm {
    #[serde(default)]
    password: String,
    #[serde(default)]
    code: String,
}

async fn totp_disable(
    State(state): State<AppState>,
    caller: Caller,
    axum::Form(form): axum::Form<DisableForm>,
) -> PageResult {
    let req = TotpCode {
        code: form.code.trim().to_string(),
        password: Some(form.password),
    };
    match disable_totp(&state, &caller, &req).await {
        Ok(()) => Ok(see_other(&state, "/ui/account?done=totp-off")),
        Err(e) if said_to_person(&e) => {
            let mut errors = AccountErrors::default();
            if e.message.contains("password") {
                errors.disable_password = Some(sentence(&e.message));
            } else {
                errors.disable_code = Some(sentence(&e.message));
            }
            account_with_errors(&state, &caller, errors).await
        }
        Err(e) => Err(e),
    }
}

async fn recovery_codes(
    State(state): State<AppState>,
    caller: Caller,
    axum::Form(form): axum::Form<CodeForm>,
) -> PageResult {
    match replace_recovery_codes(&state, &caller, form.code.trim()).await {
        Ok(codes) => render(&RecoveryCodesPage {
            chrome: Chrome::new(&state, &caller, "Your new recovery codes"),
            codes: codes.recovery_codes,
        }),
        Err(e) if said_to_person(&e) => {
            let errors = AccountErrors {
                recovery_code: Some(sentence(&e.message)),
                ..AccountErrors::default()
            };
            account_with_errors(&state, &caller, errors).await
        }
        Err(e) => Err(e),
    }
}

async fn sign_out_everywhere(State(state): State<AppState>, caller: Caller) -> PageResult {
    crate::api::me::sign_out_everywhere(&state, &caller).await?;
    Ok(to_sign_in_signed_out(&state, &caller))
}

#[derive(Template)]
#[template(path = "totp_setup.html")]
struct TotpSetupPage {
    chrome: Chrome,
    setup: TotpSetup,
    error: Option<String>,
}

async fn totp_setup(State(state): State<AppState>, caller: Caller) -> PageResult {
    render(&TotpSetupPage {
        chrome: Chrome::new(&state, &caller, "Set up an authenticator app"),
        setup: begin_totp(&state, &caller).await?,
        error: None,
    })
}

/// The code proving the app works.
#[derive(Debug, Deserialize)]
pub struct CodeForm {
    #[serde(default)]
    code: String,
}

#[derive(Template)]
#[template(path = "recovery_codes.html")]
struct RecoveryCodesPage {
    chrome: Chrome,
    codes: Vec<String>,
}

async fn totp_enable(
    State(state): State<AppState>,
    caller: Caller,
    axum::Form(form): axum::Form<CodeForm>,
) -> PageResult {
    match enable_totp(&state, &caller, form.code.trim()).await {
        Ok(codes) => render(&RecoveryCodesPage {
            chrome: Chrome::new(&state, &caller, "Your recovery codes"),
            codes: codes.recovery_codes,
        }),
        Err(e) if e.status == StatusCode::FORBIDDEN => {
            // The app being set up stays pending: show its QR code again with the error.
            let pending = state
                .store
                .totp_state(&caller.user.id)
                .await?
                .filter(|t| !t.enabled)
                .ok_or_else(|| {
                    ApiError::bad_request("start the set-up again from your account page")
                })?;
            let (uri, qr) = totp::provisioning(&pending.secret, &caller.user.email)
                .map_err(|e| ApiError::internal("TOTP set-up", e))?;
            render_status(
                StatusCode::BAD_REQUEST,
                &TotpSetupPage {
                    chrome: Chrome::new(&state, &caller, "Set up an authenticator app"),
                    setup: TotpSetup {
                        secret: pending.secret,
                        otpauth_uri: uri,
                        qr_png_base64: qr,
                    },
                    error: Some(sentence(&e.message)),
                },
            )
        }
        Err(e) => Err(e),
    }
}

async fn revoke(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> PageResult {
    revoke_my_session(&state, &caller, &id).await?;
    if caller.session().is_some_and(|s| s.id == id) {
        Ok(to_sign_in_signed_out(&state, &caller))
    } else {
        Ok(see_other(&state, "/ui/account"))
    }
}
