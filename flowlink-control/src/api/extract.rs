//! Authentication and authorisation of one request ([`authorize`], run by the route table for
//! every API route) and the extractors handlers use to read the result.

use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, FromRequestParts, RawPathParams, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;

use super::{Access, ApiError, AppState, ClientInfo};
use crate::auth::secret::{constant_time_eq, sha256_hex};
use crate::auth::{PermissionSet, Role};
use crate::store::{ApiToken, Org, Session, User};

/// Name of the session cookie.
pub const SESSION_COOKIE: &str = "flowlink_session";
/// Header that carries the CSRF token on state-changing cookie-authenticated requests.
pub const CSRF_HEADER: &str = "x-csrf-token";
/// Form field that carries the CSRF token on the web UI's state-changing form posts.
pub const CSRF_FIELD: &str = "csrf_token";
/// Prefix of API tokens (`flt_<id>.<secret>`), so leaked tokens are recognisable.
pub const TOKEN_PREFIX: &str = "flt_";

/// How the caller proved who they are.
#[derive(Debug, Clone)]
pub enum Via {
    /// A browser session cookie.
    Session(Session),
    /// An API token (org-bound, scoped).
    Token(ApiToken),
}

/// An authenticated caller.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The person (for a token, its creator).
    pub user: User,
    /// Session or token.
    pub via: Via,
    /// Address and scheme.
    pub client: ClientInfo,
}

impl Caller {
    /// `user` or `token`, for audit records.
    pub fn actor_kind(&self) -> &'static str {
        match self.via {
            Via::Session(_) => "user",
            Via::Token(_) => "token",
        }
    }

    /// The user id, or the token id for tokens, for audit records.
    pub fn actor_id(&self) -> String {
        match &self.via {
            Via::Session(_) => self.user.id.clone(),
            Via::Token(t) => t.id.clone(),
        }
    }

    /// The session, when the caller used one.
    pub fn session(&self) -> Option<&Session> {
        match &self.via {
            Via::Session(s) => Some(s),
            Via::Token(_) => None,
        }
    }
}

/// A caller authorised in one organisation.
#[derive(Debug, Clone)]
pub struct OrgCaller {
    /// Who.
    pub caller: Caller,
    /// The organisation of the path.
    pub org: Org,
    /// Their role in it.
    pub role: Role,
    /// What they may do (for tokens: the role's permissions narrowed by the token's scopes).
    pub permissions: PermissionSet,
}

impl OrgCaller {
    /// Records a successful action of this caller in the organisation's audit trail.
    pub async fn record(
        &self,
        state: &AppState,
        kind: &str,
        target: &str,
        detail: serde_json::Value,
    ) -> Result<(), ApiError> {
        super::auth::audit(
            state,
            Some(&self.org.id),
            kind,
            (self.caller.actor_kind(), &self.caller.actor_id()),
            target,
            "success",
            &self.caller.client,
            detail,
        )
        .await
    }
}

/// A bare (unauthenticated) request's client information.
impl<S: Send + Sync> FromRequestParts<S> for ClientInfo {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        parts
            .extensions
            .get::<ClientInfo>()
            .cloned()
            .ok_or_else(|| {
                ApiError::internal("request without client information", "track layer missing")
            })
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        parts.extensions.get::<Caller>().cloned().ok_or_else(|| {
            ApiError::internal(
                "handler needs a caller but its route is public",
                "route table",
            )
        })
    }
}

impl<S: Send + Sync> FromRequestParts<S> for OrgCaller {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        parts.extensions.get::<OrgCaller>().cloned().ok_or_else(|| {
            ApiError::internal(
                "handler needs an org caller but its route is not org-scoped",
                "route table",
            )
        })
    }
}

/// A JSON body whose rejection is an [`ApiError`] in the API's error shape.
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;
    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(v)) => Ok(ApiJson(v)),
            Err(JsonRejection::MissingJsonContentType(_)) => Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "send the body as JSON with `Content-Type: application/json`",
            )),
            Err(JsonRejection::BytesRejection(e))
                if e.status() == StatusCode::PAYLOAD_TOO_LARGE =>
            {
                Err(ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "payload_too_large",
                    format!("the body is larger than {} bytes", super::MAX_BODY_BYTES),
                ))
            }
            Err(e) => Err(ApiError::bad_request(format!(
                "the JSON body is not valid: {}",
                e.body_text()
            ))),
        }
    }
}

impl<T: serde::Serialize> IntoResponse for ApiJson<T> {
    fn into_response(self) -> Response {
        axum::Json(self.0).into_response()
    }
}

/// The value of cookie `name`, if present.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

fn bearer(headers: &HeaderMap) -> Option<Result<&str, ApiError>> {
    let value = headers.get(header::AUTHORIZATION)?;
    let Ok(text) = value.to_str() else {
        return Some(Err(ApiError::unauthenticated(
            "the Authorization header is not valid text",
        )));
    };
    match text.split_once(' ') {
        Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => Some(Ok(token.trim())),
        _ => Some(Err(ApiError::unauthenticated(
            "the Authorization header must be `Bearer <token>` with an API token",
        ))),
    }
}

/// Resolves the caller of a request from its API token or session cookie. `stage` is the
/// session stage required (`None` = any).
async fn authenticate(
    state: &AppState,
    headers: &HeaderMap,
    client: &ClientInfo,
    stage: Option<&str>,
    allow_token: bool,
) -> Result<Caller, ApiError> {
    if let Some(token) = bearer(headers) {
        let token = token?;
        // Two credentials could name two different people; refuse rather than pick one.
        if cookie(headers, SESSION_COOKIE).is_some() {
            return Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "ambiguous_credentials",
                "the request carries both a session cookie and an API token; send exactly one",
            ));
        }
        if !allow_token {
            return Err(ApiError::unauthenticated(
                "API tokens act in one organisation; this route needs a signed-in person",
            ));
        }
        if !token.starts_with(TOKEN_PREFIX) {
            return Err(ApiError::unauthenticated(
                "this is not a FlowLink API token",
            ));
        }
        let Some(record) = state.store.live_api_token(&sha256_hex(token)).await? else {
            return Err(ApiError::unauthenticated(
                "the API token is unknown, expired or revoked; create a new one",
            ));
        };
        let user = live_user(state, &record.user_id).await?;
        return Ok(Caller {
            user,
            via: Via::Token(record),
            client: client.clone(),
        });
    }
    let Some(secret) = cookie(headers, SESSION_COOKIE) else {
        return Err(ApiError::unauthenticated(
            "sign in first (no session cookie or API token)",
        ));
    };
    let idle_us = i64::try_from(state.config.session_idle_timeout.as_micros()).unwrap_or(i64::MAX);
    let Some(session) = state
        .store
        .live_session(&sha256_hex(secret), idle_us)
        .await?
    else {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "session_expired",
            "the session has ended (signed out, expired or revoked); sign in again",
        ));
    };
    if let Some(required) = stage
        && session.stage != required
    {
        return Err(if session.stage == "totp" {
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                "second_factor_due",
                "enter the code from your authenticator app (POST /api/v1/auth/totp) first",
            )
        } else {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "already_signed_in",
                "this session has already completed sign-in",
            )
        });
    }
    // Sliding idle timeout; written at most every 30 s so reads stay reads.
    if crate::store::now_us() - session.last_seen_at > 30_000_000 {
        state.store.touch_session(&session.id).await?;
    }
    let user = live_user(state, &session.user_id).await?;
    Ok(Caller {
        user,
        via: Via::Session(session),
        client: client.clone(),
    })
}

/// The fully signed-in person of a request to a public route, if there is one (a public page
/// that looks different to them, such as the sign-in page sending them home).
pub async fn signed_in(
    state: &AppState,
    headers: &HeaderMap,
    client: &ClientInfo,
) -> Option<Caller> {
    // No cookie, no lookup.
    cookie(headers, SESSION_COOKIE)?;
    authenticate(state, headers, client, Some("complete"), false)
        .await
        .ok()
}

async fn live_user(state: &AppState, id: &str) -> Result<User, ApiError> {
    match state.store.user_by_id(id).await? {
        Some(u) if !u.disabled => Ok(u),
        _ => Err(ApiError::unauthenticated("this account is disabled")),
    }
}

fn is_safe(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// Which surface a route belongs to: the JSON API or the web UI's pages. The checks are the
/// same; what differs is how a refusal looks and where the CSRF token may travel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Surface {
    /// `/api/v1`: JSON errors; CSRF token in the `X-CSRF-Token` header.
    Api,
    /// `/ui`: a person who must sign in is redirected to the sign-in page, other refusals are
    /// an HTML page; the CSRF token may also come as the form field [`CSRF_FIELD`], and a
    /// state-changing request a browser marks as cross-site is refused even on public pages.
    Page,
}

/// The route table's middleware: authenticates, checks CSRF, resolves the organisation and
/// checks the permission, then hands the handler a [`Caller`] / [`OrgCaller`].
pub async fn authorize(
    State((state, access, surface)): State<(AppState, Access, Surface)>,
    params: RawPathParams,
    req: Request,
    next: Next,
) -> Response {
    let result = match surface {
        Surface::Api => {
            let mut req = req;
            authorize_inner(&state, access, &params, &mut req, None)
                .await
                .map(|()| req)
        }
        Surface::Page => authorize_page(&state, access, &params, req).await,
    };
    // A page's refusal becomes HTML (or a redirect to sign in) in the UI's own layer.
    match result {
        Ok(req) => next.run(req).await,
        Err(e) => e.into_response(),
    }
}

/// [`authorize`] for a page: refuses cross-site state changes, and reads the CSRF form field
/// from a form body (the body is buffered and handed on unchanged).
async fn authorize_page(
    state: &AppState,
    access: Access,
    params: &RawPathParams,
    req: Request,
) -> Result<Request, ApiError> {
    if !is_safe(req.method()) {
        // Browsers say where a request comes from; a form posted from another site is refused
        // before anything else (public forms such as sign-in included: no login CSRF).
        let site = req
            .headers()
            .get("sec-fetch-site")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("none");
        if !matches!(site, "same-origin" | "none") {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "csrf_failed",
                "this form was sent from another site; open the page here and send it again",
            ));
        }
    }
    let is_form = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    let (mut req, field) = if is_safe(req.method()) || access == Access::Public || !is_form {
        (req, None)
    } else {
        let (parts, body) = req.into_parts();
        let bytes = axum::body::to_bytes(body, super::MAX_BODY_BYTES)
            .await
            .map_err(|_| {
                ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "payload_too_large",
                    "the form is too large",
                )
            })?;
        let field = url::form_urlencoded::parse(&bytes)
            .find(|(k, _)| k == CSRF_FIELD)
            .map(|(_, v)| v.into_owned());
        (
            Request::from_parts(parts, axum::body::Body::from(bytes)),
            field,
        )
    };
    authorize_inner(state, access, params, &mut req, field.as_deref()).await?;
    Ok(req)
}

async fn authorize_inner(
    state: &AppState,
    access: Access,
    params: &RawPathParams,
    req: &mut Request,
    csrf_field: Option<&str>,
) -> Result<(), ApiError> {
    let client = req
        .extensions()
        .get::<ClientInfo>()
        .cloned()
        .ok_or_else(|| {
            ApiError::internal("request without client information", "track layer missing")
        })?;
    let (stage, allow_token) = match access {
        Access::Public => return Ok(()),
        Access::AnySession => (None, false),
        Access::SecondFactorDue => (Some("totp"), false),
        Access::Session => (Some("complete"), false),
        Access::Org(_) => (Some("complete"), true),
    };
    let caller = authenticate(state, req.headers(), &client, stage, allow_token).await?;
    if let Via::Session(session) = &caller.via
        && !is_safe(req.method())
    {
        let sent = req
            .headers()
            .get(CSRF_HEADER)
            .and_then(|v| v.to_str().ok())
            .or(csrf_field)
            .unwrap_or("");
        if sent.is_empty() || !constant_time_eq(sent, &session.csrf_token) {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "csrf_failed",
                "missing or wrong X-CSRF-Token header; use the csrf_token returned at sign-in (GET /api/v1/me)",
            ));
        }
    }
    if let Access::Org(permission) = access {
        let org_ref = params
            .iter()
            .find(|(k, _)| *k == "org")
            .map(|(_, v)| v.to_string())
            .ok_or_else(|| ApiError::internal("org route without {org}", "route table"))?;
        let org = state
            .store
            .org_by_ref(&org_ref)
            .await?
            .ok_or_else(ApiError::org_not_found)?;
        if let Via::Token(t) = &caller.via
            && t.org_id != org.id
        {
            return Err(ApiError::org_not_found());
        }
        let role: Role = state
            .store
            .member_role(&org.id, &caller.user.id)
            .await?
            .ok_or_else(ApiError::org_not_found)?
            .parse()
            .map_err(|e| ApiError::internal("a stored role is unknown", e))?;
        let mut permissions = role.permissions();
        if let Via::Token(t) = &caller.via {
            let scopes = PermissionSet::parse_scopes(&t.scopes)
                .map_err(|e| ApiError::internal("a stored token scope is unknown", e))?;
            permissions = permissions.intersect(scopes);
        }
        if org.require_2fa && !caller.user.totp_enabled {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "second_factor_required",
                format!(
                    "organisation `{}` requires two-factor sign-in; set up an authenticator app (POST /api/v1/me/totp/setup) first",
                    org.slug
                ),
            ));
        }
        if !permissions.contains(permission) {
            return Err(ApiError::forbidden(format!(
                "this needs the `{}` permission in `{}`; your role is {}{}",
                permission.as_str(),
                org.slug,
                role,
                if matches!(caller.via, Via::Token(_)) {
                    " and the token's scopes narrow it"
                } else {
                    ""
                }
            )));
        }
        req.extensions_mut().insert(OrgCaller {
            caller: caller.clone(),
            org,
            role,
            permissions,
        });
    }
    req.extensions_mut().insert(caller);
    Ok(())
}
