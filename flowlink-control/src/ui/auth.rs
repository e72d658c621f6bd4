//! Sign-in pages: e-mail and password, the code step, OAuth buttons, first-run owner creation
//! and sign-out. Each calls the same functions as the API's `auth` routes.

use askama::Template;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::Response;
use serde::Deserialize;

use super::layout::render_status;
use super::{Chrome, PageResult, render, see_other};
use crate::api::auth::{
    SecondFactorRequest, SetupRequest, check_display_name, check_email, check_slug, end_session,
    open_session, password_step, second_factor_step, signed_out,
};
use crate::api::oauth::{ProviderView, configured_providers};
use crate::api::{Access, ApiRoute, AppState, Caller, ClientInfo, signed_in};
use crate::auth::password;

/// The routes of the sign-in pages.
pub fn routes() -> Vec<ApiRoute> {
    vec![
        ApiRoute::new(Method::GET, "/ui/sign-in", Access::Public, sign_in_page),
        ApiRoute::new(Method::POST, "/ui/sign-in", Access::Public, sign_in),
        ApiRoute::new(
            Method::GET,
            "/ui/sign-in/code",
            Access::SecondFactorDue,
            code_page,
        ),
        ApiRoute::new(
            Method::POST,
            "/ui/sign-in/code",
            Access::SecondFactorDue,
            code,
        ),
        ApiRoute::new(Method::POST, "/ui/sign-out", Access::AnySession, sign_out),
        ApiRoute::new(Method::GET, "/ui/setup", Access::Public, setup_page),
        ApiRoute::new(Method::POST, "/ui/setup", Access::Public, setup),
    ]
}

#[derive(Template)]
#[template(path = "sign_in.html")]
struct SignInPage {
    chrome: Chrome,
    email: String,
    error: Option<String>,
    providers: Vec<ProviderView>,
    first_run: bool,
}

async fn sign_in_page(
    State(state): State<AppState>,
    client: ClientInfo,
    headers: HeaderMap,
) -> PageResult {
    if signed_in(&state, &headers, &client).await.is_some() {
        return Ok(see_other(&state, "/ui/"));
    }
    let first_run = !state.store.any_user_exists().await?;
    render(&SignInPage {
        chrome: Chrome::anonymous(&state, "Sign in"),
        email: String::new(),
        error: None,
        providers: configured_providers(&state),
        first_run,
    })
}

/// The sign-in form.
#[derive(Debug, Deserialize)]
pub struct SignInForm {
    #[serde(default)]
    email: String,
    #[serde(default)]
    password: String,
}

async fn sign_in(
    State(state): State<AppState>,
    client: ClientInfo,
    axum::Form(form): axum::Form<SignInForm>,
) -> PageResult {
    match password_step(&state, &client, &form.email, &form.password).await {
        Ok((user, stage)) => {
            let (_, cookie) = open_session(&state, &user, stage, "password", &client).await?;
            let next = if stage == "complete" {
                "/ui/"
            } else {
                "/ui/sign-in/code"
            };
            let mut response = see_other(&state, next);
            response.headers_mut().append(header::SET_COOKIE, cookie);
            Ok(response)
        }
        // A wrong password, a locked account, too many attempts: said next to the form.
        Err(e) if e.status != StatusCode::INTERNAL_SERVER_ERROR => render_status(
            e.status,
            &SignInPage {
                chrome: Chrome::anonymous(&state, "Sign in"),
                email: form.email,
                error: Some(sentence(&e.message)),
                providers: configured_providers(&state),
                first_run: false,
            },
        ),
        Err(e) => Err(e),
    }
}

#[derive(Template)]
#[template(path = "sign_in_code.html")]
struct CodePage {
    chrome: Chrome,
    error: Option<String>,
    recovery: bool,
}

/// `?recovery=1` shows the recovery-code field instead of the app's code.
#[derive(Debug, Deserialize)]
pub struct CodeQuery {
    #[serde(default)]
    recovery: Option<String>,
}

async fn code_page(
    State(state): State<AppState>,
    caller: Caller,
    Query(q): Query<CodeQuery>,
) -> PageResult {
    render(&CodePage {
        chrome: Chrome::new(&state, &caller, "Enter your code"),
        error: None,
        recovery: q.recovery.is_some(),
    })
}

/// The code form: the app's code or a recovery code.
#[derive(Debug, Deserialize)]
pub struct CodeForm {
    #[serde(default)]
    code: String,
    #[serde(default)]
    recovery_code: String,
}

async fn code(
    State(state): State<AppState>,
    caller: Caller,
    axum::Form(form): axum::Form<CodeForm>,
) -> PageResult {
    let recovery = !form.recovery_code.trim().is_empty();
    let req = if recovery {
        SecondFactorRequest {
            code: None,
            recovery_code: Some(form.recovery_code.trim().to_string()),
        }
    } else {
        SecondFactorRequest {
            code: Some(form.code.trim().to_string()),
            recovery_code: None,
        }
    };
    match second_factor_step(&state, &caller, &req).await {
        Ok(first_step) => {
            let (_, cookie) = open_session(
                &state,
                &caller.user,
                "complete",
                &first_step,
                &caller.client,
            )
            .await?;
            let mut response = see_other(&state, "/ui/");
            response.headers_mut().append(header::SET_COOKIE, cookie);
            Ok(response)
        }
        Err(e) if e.status != StatusCode::INTERNAL_SERVER_ERROR => render_status(
            e.status,
            &CodePage {
                chrome: Chrome::new(&state, &caller, "Enter your code"),
                error: Some(sentence(&e.message)),
                recovery,
            },
        ),
        Err(e) => Err(e),
    }
}

async fn sign_out(State(state): State<AppState>, caller: Caller) -> PageResult {
    end_session(&state, &caller).await?;
    Ok(to_sign_in_signed_out(&state, &caller))
}

/// A 303 to the sign-in page that also removes the (ended) session's cookie.
pub fn to_sign_in_signed_out(state: &AppState, caller: &Caller) -> Response {
    let cleared = signed_out(caller.client.https);
    let mut response = see_other(state, "/ui/sign-in");
    for cookie in cleared.headers().get_all(header::SET_COOKIE) {
        response
            .headers_mut()
            .append(header::SET_COOKIE, cookie.clone());
    }
    response
}

/// Field errors of the set-up form.
#[derive(Debug, Default)]
struct SetupErrors {
    form: Option<String>,
    token: Option<String>,
    email: Option<String>,
    display_name: Option<String>,
    password: Option<String>,
    org_name: Option<String>,
    org_slug: Option<String>,
}

impl SetupErrors {
    fn any(&self) -> bool {
        self.form.is_some()
            || self.token.is_some()
            || self.email.is_some()
            || self.display_name.is_some()
            || self.password.is_some()
            || self.org_name.is_some()
            || self.org_slug.is_some()
    }
}

#[derive(Template)]
#[template(path = "setup.html")]
struct SetupPage {
    chrome: Chrome,
    done: bool,
    form: SetupForm,
    errors: SetupErrors,
}

/// The first-run form (also the `?token=` of the printed link).
#[derive(Debug, Default, Deserialize)]
pub struct SetupForm {
    #[serde(default)]
    token: String,
    #[serde(default)]
    email: String,
    #[serde(default)]
    display_name: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    org_name: String,
    #[serde(default)]
    org_slug: String,
}

async fn setup_page(State(state): State<AppState>, Query(form): Query<SetupForm>) -> PageResult {
    let done = state.store.any_user_exists().await?;
    render(&SetupPage {
        chrome: Chrome::anonymous(&state, "Set up FlowLink"),
        done,
        form: SetupForm {
            token: form.token,
            ..SetupForm::default()
        },
        errors: SetupErrors::default(),
    })
}

async fn setup(
    State(state): State<AppState>,
    client: ClientInfo,
    axum::Form(mut form): axum::Form<SetupForm>,
) -> PageResult {
    let mut errors = SetupErrors {
        token: form
            .token
            .trim()
            .is_empty()
            .then(|| "Paste the set-up token the server printed.".to_string()),
        email: check_email(&form.email).err().map(|e| sentence(&e.message)),
        display_name: check_display_name(&form.display_name)
            .err()
            .map(|e| sentence(&e.message)),
        password: password::check_new(&form.password, &form.email)
            .err()
            .map(|e| sentence(&e.to_string())),
        org_name: check_display_name(&form.org_name)
            .err()
            .map(|e| sentence(&e.message)),
        org_slug: check_slug(&form.org_slug)
            .err()
            .map(|e| sentence(&e.message)),
        form: None,
    };
    if !errors.any() {
        let req = SetupRequest {
            token: form.token.trim().to_string(),
            email: form.email.clone(),
            password: form.password.clone(),
            display_name: form.display_name.clone(),
            org_name: form.org_name.clone(),
            org_slug: form.org_slug.clone(),
        };
        match crate::api::auth::create_owner(&state, &client, &req).await {
            Ok(_) => {
                // The owner just chose this password: sign them in as the sign-in page would.
                let (user, stage) =
                    password_step(&state, &client, &form.email, &form.password).await?;
                let (_, cookie) = open_session(&state, &user, stage, "password", &client).await?;
                let mut response = see_other(&state, "/ui/");
                response.headers_mut().append(header::SET_COOKIE, cookie);
                return Ok(response);
            }
            Err(e) if e.status == StatusCode::FORBIDDEN => {
                errors.token = Some(sentence(&e.message));
            }
            Err(e) if e.status != StatusCode::INTERNAL_SERVER_ERROR => {
                errors.form = Some(sentence(&e.message));
            }
            Err(e) => return Err(e),
        }
    }
    form.password.clear();
    render_status(
        StatusCode::BAD_REQUEST,
        &SetupPage {
            chrome: Chrome::anonymous(&state, "Set up FlowLink"),
            done: false,
            form,
            errors,
        },
    )
}

/// An API message as a sentence for a page: capitalised, ending with a full stop, API paths
/// left out.
pub fn sentence(message: &str) -> String {
    let text = message
        .split(" (POST /api")
        .next()
        .unwrap_or(message)
        .trim();
    let mut chars = text.chars();
    let mut out: String = match chars.next() {
        Some(c) => c.to_uppercase().chain(chars).collect(),
        None => String::new(),
    };
    if !out.ends_with(['.', '!', '?']) {
        out.push('.');
    }
    out
}
