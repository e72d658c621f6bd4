//! The web UI: server-rendered HTML pages under `/ui`, served by the control plane itself.
//!
//! Pages are routes of the same kind as the API's ([`ApiRoute`]) in the table [`ui_routes`],
//! each with its [`Access`]; the router puts every one behind the same
//! `api::extract::authorize` middleware as the API (surface [`Surface::Page`]), so a page's
//! handler never checks who may see it. On pages, a person who must sign in is redirected to
//! `/ui/sign-in` (or to the code step), every other refusal is an HTML page ([`refusal`]), and
//! a state-changing form proves itself with the session's CSRF token in the hidden field
//! `csrf_token` (`{% include "csrf.html" %}` inside the `<form>`). Every page response carries
//! the security headers of [`headers`]; templates are compiled into the binary (askama,
//! `templates/`), and static files are served from the binary ([`layout::STATIC_FILES`]).
//!
//! How to add a page:
//! 1. A template `templates/<name>.html` that starts with `{% extends "base.html" %}` and fills
//!    `{% block content %}`; no inline `<script>` or `style=` (the CSP refuses them): put CSS
//!    in `static/app.css` and scripts in a file of their own listed in
//!    [`layout::STATIC_FILES`], referenced with `{{ chrome.asset("name.js") }}`. Links start
//!    with `{{ chrome.base }}` (the public URL's path).
//! 2. A struct deriving `askama::Template` with `#[template(path = "<name>.html")]` and a field
//!    `chrome: Chrome` (built with [`Chrome::new`] for the signed-in caller).
//! 3. A route entry in [`ui_routes`]: `ApiRoute::new(Method::GET, "/ui/…", Access::…, handler)`.
//!    Use the same `Access` the matching API route has (an org page: `Access::Org(permission)`
//!    with `{org}` in the path; the handler then takes [`crate::api::OrgCaller`]).
//! 4. A thin handler returning `ApiResult<Response>`: it calls the store / `api::…` functions
//!    the API handlers use and renders with [`render`]; a form handler reads `axum::Form<…>`
//!    and answers a successful POST with [`see_other`] (post/redirect/get). An `Err(ApiError)`
//!    becomes the HTML refusal page by itself.

pub mod account;
pub mod agents;
pub mod approvals;
pub mod audit;
pub mod auth;
pub mod events;
pub mod headers;
pub mod layout;
pub mod org;
pub mod policies;
pub mod secrets;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Response};

pub use layout::{Chrome, render};

use crate::api::{Access, ApiError, ApiResult, ApiRoute, AppState};

/// Every page route. Like [`crate::api::api_routes`], each states its [`Access`].
pub fn ui_routes() -> Vec<ApiRoute> {
    let mut routes = vec![
        ApiRoute::new(Method::GET, "/", Access::Public, root),
        ApiRoute::new(
            Method::GET,
            "/ui/static/{file}",
            Access::Public,
            layout::static_file,
        ),
    ];
    routes.extend(auth::routes());
    routes.extend(account::routes());
    routes.extend(approvals::routes());
    routes.extend(audit::routes());
    routes.extend(agents::routes());
    routes.extend(policies::routes());
    routes.extend(secrets::routes());
    routes.extend(org::routes());
    // Last, and matched only when nothing else is: an unknown page is an HTML 404.
    routes.push(ApiRoute::new(
        Method::GET,
        "/ui/{*path}",
        Access::Public,
        unknown_page,
    ));
    routes
}

async fn unknown_page() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        "there is no such page; the start page links to every page you may see",
    )
}

/// The pages' router with their layer: refusals as HTML, security headers.
pub fn pages(state: &AppState, routes: Router<AppState>) -> Router<AppState> {
    routes.layer(middleware::from_fn_with_state(state.clone(), page_layer))
}

async fn page_layer(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let mut response = next.run(req).await;
    if let Some(e) = response.extensions_mut().remove::<ApiError>() {
        response = refusal(&state, e);
    }
    headers::add(response.headers_mut());
    response
}

/// The public URL's path (`""` at the root), the prefix of every link and redirect.
pub fn base_path(state: &AppState) -> String {
    url::Url::parse(&state.config.public_url)
        .map(|u| u.path().trim_end_matches('/').to_string())
        .unwrap_or_default()
}

/// A 303 to `path` under the public URL's path (post/redirect/get).
pub fn see_other(state: &AppState, path: &str) -> Response {
    let location = format!("{}{path}", base_path(state));
    let mut response = StatusCode::SEE_OTHER.into_response();
    if let Ok(v) = HeaderValue::from_str(&location) {
        response.headers_mut().insert(header::LOCATION, v);
    }
    response
}

async fn root(State(state): State<AppState>) -> Response {
    see_other(&state, "/ui/")
}

/// A refused page: to the sign-in page (or its code step) when the person must sign in, else
/// an HTML page saying why, with the refusal's status.
pub fn refusal(state: &AppState, e: ApiError) -> Response {
    if e.status == StatusCode::UNAUTHORIZED {
        return if e.code == "second_factor_due" {
            see_other(state, "/ui/sign-in/code")
        } else {
            see_other(state, "/ui/sign-in")
        };
    }
    if e.code == "already_signed_in" {
        // The code step of a sign-in that is already complete.
        return see_other(state, "/ui/");
    }
    error_page(state, e, false)
}

/// A sign-in through a provider that did not succeed (the provider's redirect back ended in a
/// refusal): the page says why and links back to the sign-in page, whatever the status.
pub fn sign_in_refused(state: &AppState, e: ApiError) -> Response {
    // An API route answers here, so the pages' layer does not add their headers.
    let mut response = error_page(state, e, true);
    headers::add(response.headers_mut());
    response
}

/// The HTML page of a refusal, with its status.
fn error_page(state: &AppState, e: ApiError, sign_in_again: bool) -> Response {
    #[derive(askama::Template)]
    #[template(path = "error.html")]
    struct ErrorPage {
        chrome: Chrome,
        status: u16,
        message: String,
        needs_2fa: bool,
        sign_in_again: bool,
    }
    let message = if e.status == StatusCode::INTERNAL_SERVER_ERROR {
        "Something went wrong on the server. Try again; if it keeps happening, the server log says more.".to_string()
    } else if e.code == "csrf_failed" {
        "This form is out of date or was not sent from this site. Go back, reload the page and send it again.".to_string()
    } else {
        auth::sentence(&e.message)
    };
    let page = ErrorPage {
        chrome: Chrome::anonymous(
            state,
            match e.status {
                _ if sign_in_again => "Sign-in failed",
                StatusCode::NOT_FOUND => "Not found",
                StatusCode::FORBIDDEN => "Not allowed",
                _ => "Not possible",
            },
        ),
        status: e.status.as_u16(),
        message,
        needs_2fa: e.code == "second_factor_required",
        sign_in_again,
    };
    match askama::Template::render(&page) {
        Ok(html) => (e.status, Html(html)).into_response(),
        Err(_) => (e.status, e.message).into_response(),
    }
}

/// `ApiResult` for page handlers.
pub type PageResult = ApiResult<Response>;
