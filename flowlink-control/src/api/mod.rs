//! The HTTP surface: `/api/v1` (JSON), `/healthz`, `/readyz`, `/metrics`; the web UI's pages
//! (`/ui`, see [`crate::ui`]) are merged into the same router behind the same middleware.
//!
//! Every API route is one [`ApiRoute`] in the table [`api_routes`], which states the route's
//! [`Access`]: public, a signed-in person, or a [`Permission`] in the organisation named by the
//! path's `{org}`. Authorisation is enforced by one middleware from that table, before any
//! handler runs, so a handler cannot forget it; the tenancy and role test suite walks the same
//! table, so a new route cannot skip the test either.

pub mod approvals;
pub mod audit;
pub mod auth;
mod client;
pub mod devices;
pub mod error;
mod extract;
pub mod health;
pub mod invitations;
pub mod link;
pub mod me;
pub mod oauth;
pub mod openapi;
pub mod orgs;
pub mod page;
pub mod policies;
pub mod secrets;
pub mod tokens;

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Request, State};
use axum::handler::Handler;
use axum::http::{Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodFilter, MethodRouter, on};

pub use client::ClientInfo;
pub use error::{ApiError, ApiResult};
pub use extract::{
    ApiJson, CSRF_FIELD, Caller, OrgCaller, SESSION_COOKIE, Surface, Via, signed_in,
};

use crate::auth::Permission;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::store::Store;
use crate::throttle::LoginThrottle;

/// Largest request body accepted (policies are the biggest bodies).
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// Everything a handler may use.
#[derive(Clone)]
pub struct AppState {
    /// The database.
    pub store: Store,
    /// The validated configuration.
    pub config: Arc<Config>,
    /// Prometheus counters.
    pub metrics: Arc<Metrics>,
    /// Sign-in rate limits per client address.
    pub login_throttle: Arc<LoginThrottle>,
    /// Outgoing HTTP (OAuth providers): rustls, 10 s timeout, no redirects followed.
    pub http: reqwest::Client,
    /// The proxies connected to this process.
    pub links: Arc<crate::link::hub::LinkHub>,
}

impl AppState {
    /// State for `config` over `store`.
    pub fn new(store: Store, config: Config) -> AppState {
        let throttle = LoginThrottle::new(config.login_attempts_per_minute_per_ip);
        AppState {
            store,
            config: Arc::new(config),
            metrics: Arc::new(Metrics::default()),
            login_throttle: Arc::new(throttle),
            http: outgoing_http_client(),
            links: Arc::new(crate::link::hub::LinkHub::default()),
        }
    }
}

/// The client for calls this server makes (OAuth token and user-info endpoints).
fn outgoing_http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(10))
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("flowlink-control/", env!("CARGO_PKG_VERSION")))
        .build()
        .unwrap_or_else(|e| panic!("cannot build the outgoing HTTP client: {e}"))
}

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone (sign-in, first-run set-up, OpenAPI document).
    Public,
    /// A browser session at any stage (sign-out).
    AnySession,
    /// A browser session whose password step is done and whose second factor is due.
    SecondFactorDue,
    /// A fully signed-in browser session (the person's own account).
    Session,
    /// A member of the path's `{org}` (session or API token) holding this permission.
    Org(Permission),
}

/// One API route: method, path (axum syntax, under `/api/v1`), who may call it, handler.
pub struct ApiRoute {
    /// HTTP method.
    pub method: Method,
    /// Full path, e.g. `/api/v1/orgs/{org}/members`.
    pub path: &'static str,
    /// Who may call it.
    pub access: Access,
    handler: MethodRouter<AppState>,
}

impl ApiRoute {
    /// A route from a handler.
    pub fn new<H, T>(method: Method, path: &'static str, access: Access, handler: H) -> ApiRoute
    where
        H: Handler<T, AppState>,
        T: 'static,
    {
        let filter = MethodFilter::try_from(method.clone())
            .unwrap_or_else(|_| panic!("route table: unsupported method {method} for {path}"));
        ApiRoute {
            method,
            path,
            access,
            handler: on(filter, handler),
        }
    }
}

impl ApiRoute {
    /// The same route accepting bodies up to `bytes` instead of [`MAX_BODY_BYTES`] (a rotation
    /// carries every secret re-sealed).
    pub fn with_body_limit(mut self, bytes: usize) -> ApiRoute {
        self.handler = self
            .handler
            .layer(axum::extract::DefaultBodyLimit::max(bytes));
        self
    }
}

impl std::fmt::Debug for ApiRoute {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {} ({:?})", self.method, self.path, self.access)
    }
}

/// Every API route. Tests iterate this table.
pub fn api_routes() -> Vec<ApiRoute> {
    let mut routes = Vec::new();
    routes.extend(openapi::routes());
    routes.extend(auth::routes());
    routes.extend(me::routes());
    routes.extend(orgs::routes());
    routes.extend(tokens::routes());
    routes.extend(invitations::routes());
    routes.extend(audit::routes());
    routes.extend(approvals::routes());
    routes.extend(policies::routes());
    routes.extend(oauth::routes());
    routes.extend(devices::routes());
    routes.extend(link::routes());
    routes.extend(secrets::routes());
    routes
}

/// The whole application.
pub fn router(state: AppState) -> Router {
    crate::link::start(&state);
    let api = guarded(&state, api_routes(), Surface::Api);
    let ui = crate::ui::pages(
        &state,
        guarded(&state, crate::ui::ui_routes(), Surface::Page),
    );
    api.merge(ui)
        .merge(health::router())
        .route_layer(middleware::from_fn(label_route))
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(state.clone(), track))
        // Enforced by the body extractors, so an oversized body gets the API's own 413 error.
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}

/// A router of `routes`, each behind [`extract::authorize`] with its own [`Access`].
fn guarded(state: &AppState, routes: Vec<ApiRoute>, surface: Surface) -> Router<AppState> {
    let mut by_path: BTreeMap<&'static str, MethodRouter<AppState>> = BTreeMap::new();
    for route in routes {
        let guarded = route.handler.route_layer(middleware::from_fn_with_state(
            (state.clone(), route.access, surface),
            extract::authorize,
        ));
        let merged = match by_path.remove(route.path) {
            Some(existing) => existing.merge(guarded),
            None => guarded,
        };
        by_path.insert(route.path, merged);
    }
    let mut router = Router::new();
    for (path, methods) in by_path {
        router = router.route(path, methods.fallback(method_not_allowed));
    }
    router
}

async fn not_found() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        "no such route; the API is described at /api/v1/openapi.json",
    )
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this route does not accept that method; see /api/v1/openapi.json",
    )
}

/// Outermost layer: works out the client's address and scheme, counts the request and adds
/// the security headers every response carries.
async fn track(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let started = std::time::Instant::now();
    let client = ClientInfo::from_request(&req, &state.config);
    req.extensions_mut().insert(client.clone());
    let method = req.method().clone();
    let mut response = next.run(req).await;
    let route = response
        .extensions()
        .get::<RouteLabel>()
        .map_or("(unmatched)", |l| l.0.as_str())
        .to_string();
    state
        .metrics
        .observe_request(&method, &route, response.status(), started.elapsed());
    let headers = response.headers_mut();
    use axum::http::HeaderValue;
    use axum::http::header;
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers
        .entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    if client.https {
        headers.insert(
            header::STRICT_TRANSPORT_SECURITY,
            HeaderValue::from_static("max-age=31536000; includeSubDomains"),
        );
    }
    response
}

/// The matched route pattern, passed from inside the router to [`track`] for metrics labels
/// (a pattern, never a raw path, so ids do not multiply the series).
#[derive(Clone)]
struct RouteLabel(String);

async fn label_route(path: axum::extract::MatchedPath, req: Request, next: Next) -> Response {
    let label = RouteLabel(path.as_str().to_string());
    let mut response = next.run(req).await;
    response.extensions_mut().insert(label);
    response
}

/// An empty 204.
pub fn no_content() -> Response {
    StatusCode::NO_CONTENT.into_response()
}
