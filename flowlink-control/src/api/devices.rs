//! Devices: enrolment tokens, enrolment itself (`POST /api/v1/enroll`, public: the token is the
//! credential), and the inventory of enrolled devices with their health, labels, revocation
//! and re-keying.
//!
//! An enrolment token (`fle_<id>.<secret>`, stored only as a hash) admits one or N devices into
//! its organisation until it expires; its labels are given to every device enrolled with it. A
//! re-key token is single-use and bound to one device: enrolling with it replaces that device's
//! keys (same device id, key version + 1), and links opened with the old key are closed and
//! refused after. A revoked device is told so on its links, disconnected at once, and refused
//! on every later attempt. Every change is audited.

use std::collections::BTreeMap;

use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use flowlink_proto::link::{EnrollRequest, EnrollResponse};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::auth::{audit, check_display_name, rfc3339};
use super::page::{PageQuery, finish};
use super::{Access, ApiError, ApiJson, ApiResult, ApiRoute, AppState, ClientInfo, OrgCaller};
use crate::auth::Permission;
use crate::auth::secret::{random_token, sha256_hex};
use crate::link::session::health_of;
use crate::store::{
    Device, DeviceServer, EnrollRefusal, EnrollmentToken, Labels, NewDevice, PolicyScope, Store,
    StoreError, new_id, now_us,
};

/// Prefix of enrolment tokens, so leaked ones are recognisable.
pub const ENROLLMENT_TOKEN_PREFIX: &str = "fle_";
/// Longest enrolment token lifetime.
pub const MAX_DAYS: u32 = 366;
/// Most enrolments one token may admit.
pub const MAX_USES: u32 = 10_000;
/// Most labels on a token or a device.
pub const MAX_LABELS: usize = 32;

/// The routes of this module.
pub fn routes() -> Vec<ApiRoute> {
    use Permission::{DeviceManage, DeviceRead};
    vec![
        ApiRoute::new(
            Method::POST,
            "/api/v1/orgs/{org}/enrollment-tokens",
            Access::Org(DeviceManage),
            create_enrollment_token,
        ),
        ApiRoute::new(
            Method::GET,
            "/api/v1/orgs/{org}/enrollment-tokens",
            Access::Org(DeviceManage),
            list_enrollment_tokens,
        ),
        ApiRoute::new(
            Method::DELETE,
            "/api/v1/orgs/{org}/enrollment-tokens/{token}",
            Access::Org(DeviceManage),
            revoke_enrollment_token,
        ),
        ApiRoute::new(
            Method::GET,
            "/api/v1/orgs/{org}/devices",
            Access::Org(DeviceRead),
            list_devices,
        ),
        ApiRoute::new(
            Method::GET,
            "/api/v1/orgs/{org}/devices/{device}",
            Access::Org(DeviceRead),
            get_device,
        ),
        ApiRoute::new(
            Method::PATCH,
            "/api/v1/orgs/{org}/devices/{device}",
            Access::Org(DeviceManage),
            update_device,
        ),
        ApiRoute::new(
            Method::POST,
            "/api/v1/orgs/{org}/devices/{device}/revoke",
            Access::Org(DeviceManage),
            revoke_device,
        ),
        ApiRoute::new(
            Method::POST,
            "/api/v1/orgs/{org}/devices/{device}/rekey",
            Access::Org(DeviceManage),
            rekey_device,
        ),
        ApiRoute::new(Method::POST, "/api/v1/enroll", Access::Public, enroll),
    ]
}

// ---------------------------------------------------------------------------------------------
// Labels and tokens.

/// Checks labels: at most [`MAX_LABELS`], each key and value as in a `group:<key>=<value>`
/// policy scope (1-100 letters, digits, `.`, `_`, `-`).
pub fn check_labels(labels: &Labels) -> Result<(), String> {
    if labels.len() > MAX_LABELS {
        return Err(format!(
            "{} labels given; at most {MAX_LABELS} are allowed",
            labels.len()
        ));
    }
    for (key, value) in labels {
        PolicyScope::parse(&format!("group:{key}={value}"))
            .map_err(|e| format!("label `{key}={value}`: {e}"))?;
    }
    Ok(())
}

/// Makes an enrolment token (API, re-keying and `flowlink-control admin
/// create-enrollment-token`). Returns the secret text and the stored record.
#[allow(clippy::too_many_arguments)] // one token's fields, each named at the call site
pub async fn issue_enrollment_token(
    store: &Store,
    org_id: &str,
    created_by: &str,
    name: &str,
    labels: Labels,
    uses: u32,
    lifetime_us: i64,
    device_id: Option<&str>,
) -> Result<(String, EnrollmentToken), StoreError> {
    let id = new_id().replace('-', "");
    let secret = format!("{ENROLLMENT_TOKEN_PREFIX}{id}.{}", random_token(32));
    let now = now_us();
    let token = EnrollmentToken {
        id,
        org_id: org_id.to_string(),
        name: name.to_string(),
        labels,
        uses_allowed: i64::from(uses),
        uses: 0,
        created_by: created_by.to_string(),
        created_at: now,
        expires_at: now.saturating_add(lifetime_us),
        device_id: device_id.map(str::to_string),
        revoked_at: None,
    };
    store
        .create_enrollment_token(&token, &sha256_hex(&secret))
        .await?;
    Ok((secret, token))
}

/// Microseconds in `days` days.
pub fn days_us(days: u32) -> i64 {
    i64::from(days) * 86_400_000_000
}

/// The link URL proxies connect to, from the public URL (`https` → `wss`, `http` → `ws`).
pub fn link_url(public_url: &str) -> String {
    let base = public_url.trim_end_matches('/');
    let ws = if let Some(rest) = base.strip_prefix("https://") {
        format!("wss://{rest}")
    } else if let Some(rest) = base.strip_prefix("http://") {
        format!("ws://{rest}")
    } else {
        base.to_string()
    };
    format!("{ws}/api/v1/link")
}

/// An enrolment token's metadata.
#[derive(Debug, Serialize, ToSchema)]
pub struct EnrollmentTokenView {
    /// Id.
    pub id: String,
    /// A note for people.
    pub name: String,
    /// Labels given to every device enrolled with it.
    pub labels: BTreeMap<String, String>,
    /// How many enrolments it admits.
    pub uses_allowed: i64,
    /// How many it has admitted.
    pub uses: i64,
    /// `live`, `used`, `expired` or `revoked`.
    pub state: String,
    /// Who made it: a user id, or `flowlink-control admin`.
    pub created_by: String,
    /// Creation time.
    pub created_at: String,
    /// Expiry.
    pub expires_at: String,
    /// For a re-key token: the device it re-keys.
    pub device_id: Option<String>,
    /// Revocation time.
    pub revoked_at: Option<String>,
}

impl From<&EnrollmentToken> for EnrollmentTokenView {
    fn from(t: &EnrollmentToken) -> EnrollmentTokenView {
        let state = if t.revoked_at.is_some() {
            "revoked"
        } else if t.uses >= t.uses_allowed {
            "used"
        } else if t.expires_at <= now_us() {
            "expired"
        } else {
            "live"
        };
        EnrollmentTokenView {
            id: t.id.clone(),
            name: t.name.clone(),
            labels: t.labels.clone(),
            uses_allowed: t.uses_allowed,
            uses: t.uses,
            state: state.to_string(),
            created_by: t.created_by.clone(),
            created_at: rfc3339(t.created_at),
            expires_at: rfc3339(t.expires_at),
            device_id: t.device_id.clone(),
            revoked_at: t.revoked_at.map(rfc3339),
        }
    }
}

/// A page of enrolment tokens, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct EnrollmentTokenPage {
    /// The tokens.
    pub items: Vec<EnrollmentTokenView>,
    /// Pass as `cursor` for the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

/// An enrolment token to create; every field is optional.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewEnrollmentToken {
    /// A note, e.g. "build agents" (up to 100 characters).
    #[serde(default)]
    pub name: Option<String>,
    /// How many devices may enrol with it (1-10000, default 1).
    #[serde(default)]
    pub uses: Option<u32>,
    /// Days until it expires (1-366, default 7).
    #[serde(default)]
    pub expires_in_days: Option<u32>,
    /// Labels every device enrolled with it gets (they win over the device's own), e.g.
    /// `{"env": "prod"}`.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

/// A created enrolment token: the secret is shown this once.
#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedEnrollmentToken {
    /// Give to `flowlink-proxy enroll --token`. Not stored; cannot be shown again.
    pub token: String,
    /// The command that enrols a proxy with it.
    pub enroll_command: String,
    /// Its metadata.
    pub info: EnrollmentTokenView,
}

/// The command that enrols a proxy with the enrolment token `secret`.
pub(crate) fn enroll_command(state: &AppState, secret: &str) -> String {
    format!(
        "flowlink-proxy enroll --server {} --token {secret}",
        state.config.public_url
    )
}

fn created(state: &AppState, secret: String, token: &EnrollmentToken) -> Response {
    let enroll_command = enroll_command(state, &secret);
    (
        StatusCode::CREATED,
        axum::Json(CreatedEnrollmentToken {
            token: secret,
            enroll_command,
            info: EnrollmentTokenView::from(token),
        }),
    )
        .into_response()
}

#[utoipa::path(post, path = "/api/v1/orgs/{org}/enrollment-tokens", tag = "devices",
    params(("org" = String, Path, description = "Organisation id or slug")),
    request_body = NewEnrollmentToken,
    responses((status = 201, body = CreatedEnrollmentToken), (status = 400, body = super::error::ErrorBody)))]
async fn create_enrollment_token(
    State(state): State<AppState>,
    caller: OrgCaller,
    ApiJson(req): ApiJson<NewEnrollmentToken>,
) -> ApiResult<Response> {
    let (secret, token) = create_token(&state, &caller, req).await?;
    Ok(created(&state, secret, &token))
}

/// Checks and issues an enrolment token of the caller's organisation, audited (the API and the
/// agents pages). Returns the secret, shown this once, and the stored record.
pub(crate) async fn create_token(
    state: &AppState,
    caller: &OrgCaller,
    req: NewEnrollmentToken,
) -> ApiResult<(String, EnrollmentToken)> {
    let name = req.name.as_deref().map(str::trim).unwrap_or("");
    if !name.is_empty() {
        check_display_name(name)?;
    }
    let uses = req.uses.unwrap_or(1);
    if !(1..=MAX_USES).contains(&uses) {
        return Err(ApiError::bad_request(format!(
            "`uses` must be 1..={MAX_USES}"
        )));
    }
    let days = req.expires_in_days.unwrap_or(7);
    if !(1..=MAX_DAYS).contains(&days) {
        return Err(ApiError::bad_request(format!(
            "`expires_in_days` must be 1..={MAX_DAYS}"
        )));
    }
    check_labels(&req.labels).map_err(ApiError::bad_request)?;
    let (secret, token) = issue_enrollment_token(
        &state.store,
        &caller.org.id,
        &caller.caller.user.id,
        name,
        req.labels,
        uses,
        days_us(days),
        None,
    )
    .await?;
    caller
        .record(
            state,
            "enrollment_token.created",
            &token.id,
            serde_json::json!({"name": token.name, "uses": uses, "labels": token.labels,
                           "expires_at": rfc3339(token.expires_at)}),
        )
        .await?;
    Ok((secret, token))
}

#[utoipa::path(get, path = "/api/v1/orgs/{org}/enrollment-tokens", tag = "devices",
    params(("org" = String, Path, description = "Organisation id or slug"), PageQuery),
    responses((status = 200, body = EnrollmentTokenPage)))]
async fn list_enrollment_tokens(
    State(state): State<AppState>,
    caller: OrgCaller,
    query: Result<Query<PageQuery>, QueryRejection>,
) -> ApiResult<axum::Json<EnrollmentTokenPage>> {
    let Query(page) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let limit = page.limit()?;
    let tokens = state
        .store
        .list_enrollment_tokens(&caller.org.id, page.key()?.as_deref(), i64::from(limit) + 1)
        .await?;
    let (tokens, next_cursor) = finish(tokens, limit, |t| t.id.clone());
    Ok(axum::Json(EnrollmentTokenPage {
        items: tokens.iter().map(EnrollmentTokenView::from).collect(),
        next_cursor,
    }))
}

#[utoipa::path(delete, path = "/api/v1/orgs/{org}/enrollment-tokens/{token}", tag = "devices",
    params(("org" = String, Path, description = "Organisation id or slug"), ("token" = String, Path, description = "Enrolment token id")),
    responses((status = 204), (status = 404, body = super::error::ErrorBody)))]
async fn revoke_enrollment_token(
    State(state): State<AppState>,
    caller: OrgCaller,
    Path((_, token_id)): Path<(String, String)>,
) -> ApiResult<Response> {
    revoke_token(&state, &caller, &token_id).await?;
    Ok(super::no_content())
}

/// Revokes a live enrolment token of the caller's organisation, audited (the API and the
/// agents pages).
pub(crate) async fn revoke_token(
    state: &AppState,
    caller: &OrgCaller,
    token_id: &str,
) -> ApiResult<()> {
    if !state
        .store
        .revoke_enrollment_token(&caller.org.id, token_id)
        .await?
    {
        return Err(ApiError::not_found("live enrolment token"));
    }
    caller
        .record(
            state,
            "enrollment_token.revoked",
            token_id,
            serde_json::json!({}),
        )
        .await
}

// ---------------------------------------------------------------------------------------------
// Devices.

/// One wrapped MCP server, from the device's last heartbeat.
#[derive(Debug, Serialize, ToSchema)]
pub struct ServerView {
    /// The service name.
    pub service: String,
    /// `up`, `restarting`, `crashed` or `stopped`.
    pub state: String,
    /// Restarts in the last hour.
    pub restarts_last_hour: i64,
    /// The last error, if any.
    pub last_error: Option<String>,
    /// Restarted at least three times in the last hour.
    pub crash_loop: bool,
    /// When it was reported.
    pub updated_at: String,
    /// The flowlink-proxy version that reported it (absent when the proxy did not say one in
    /// plain text).
    pub proxy_version: Option<String>,
}

impl From<&DeviceServer> for ServerView {
    fn from(s: &DeviceServer) -> ServerView {
        ServerView {
            service: s.service.clone(),
            state: s.state.clone(),
            restarts_last_hour: s.restarts_last_hour,
            last_error: s.last_error.clone(),
            crash_loop: s.crash_loop,
            updated_at: rfc3339(s.updated_at),
            proxy_version: s.proxy_version.clone(),
        }
    }
}

/// An enrolled device.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeviceView {
    /// Id.
    pub id: String,
    /// Name.
    pub name: String,
    /// Host name.
    pub hostname: String,
    /// Labels (`group:<key>=<value>` policies apply).
    pub labels: BTreeMap<String, String>,
    /// `online` (heard from within two heartbeat intervals), `stale` (up to five), `offline`,
    /// or `revoked`.
    pub health: String,
    /// Last authentication or heartbeat.
    pub last_seen_at: Option<String>,
    /// Enrolment time.
    pub enrolled_at: String,
    /// Last re-key.
    pub rekeyed_at: Option<String>,
    /// Revocation time.
    pub revoked_at: Option<String>,
    /// 1 at enrolment, +1 at each re-key.
    pub key_version: i64,
    /// Ed25519 public key (base64): signs link challenges.
    pub signing_key: String,
    /// X25519 public key (base64): secrets are wrapped to it.
    pub box_key: String,
    /// The MCP servers its proxies wrap.
    pub servers: Vec<ServerView>,
}

/// A device as the API and the agents pages show it (health computed now).
pub(crate) fn device_view(state: &AppState, d: &Device, servers: &[DeviceServer]) -> DeviceView {
    let health = if d.revoked_at.is_some() {
        "revoked"
    } else {
        health_of(d.last_seen_at, now_us(), state.config.link_heartbeat).as_str()
    };
    DeviceView {
        id: d.id.clone(),
        name: d.name.clone(),
        hostname: d.hostname.clone(),
        labels: d.labels.clone(),
        health: health.to_string(),
        last_seen_at: d.last_seen_at.map(rfc3339),
        enrolled_at: rfc3339(d.enrolled_at),
        rekeyed_at: d.rekeyed_at.map(rfc3339),
        revoked_at: d.revoked_at.map(rfc3339),
        key_version: d.key_version,
        signing_key: STANDARD.encode(d.signing_key),
        box_key: STANDARD.encode(d.box_key),
        servers: servers
            .iter()
            .filter(|s| s.device_id == d.id)
            .map(ServerView::from)
            .collect(),
    }
}

/// A page of devices, newest enrolment first.
#[derive(Debug, Serialize, ToSchema)]
pub struct DevicePage {
    /// The devices.
    pub items: Vec<DeviceView>,
    /// Pass as `cursor` for the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

#[utoipa::path(get, path = "/api/v1/orgs/{org}/devices", tag = "devices",
    params(("org" = String, Path, description = "Organisation id or slug"), PageQuery),
    responses((status = 200, body = DevicePage)))]
async fn list_devices(
    State(state): State<AppState>,
    caller: OrgCaller,
    query: Result<Query<PageQuery>, QueryRejection>,
) -> ApiResult<axum::Json<DevicePage>> {
    let Query(page) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let limit = page.limit()?;
    let devices = state
        .store
        .list_devices(&caller.org.id, page.key()?.as_deref(), i64::from(limit) + 1)
        .await?;
    let (devices, next_cursor) = finish(devices, limit, |d| d.id.clone());
    let ids: Vec<String> = devices.iter().map(|d| d.id.clone()).collect();
    let servers = state.store.device_servers(&ids).await?;
    Ok(axum::Json(DevicePage {
        items: devices
            .iter()
            .map(|d| device_view(&state, d, &servers))
            .collect(),
        next_cursor,
    }))
}

/// A device of `org_id` (revoked ones included), or not found.
pub(crate) async fn find_device(state: &AppState, org_id: &str, id: &str) -> ApiResult<Device> {
    state
        .store
        .device(org_id, id)
        .await?
        .ok_or_else(|| ApiError::not_found("device"))
}

#[utoipa::path(get, path = "/api/v1/orgs/{org}/devices/{device}", tag = "devices",
    params(("org" = String, Path, description = "Organisation id or slug"), ("device" = String, Path, description = "Device id")),
    responses((status = 200, body = DeviceView), (status = 404, body = super::error::ErrorBody)))]
async fn get_device(
    State(state): State<AppState>,
    caller: OrgCaller,
    Path((_, device_id)): Path<(String, String)>,
) -> ApiResult<axum::Json<DeviceView>> {
    let device = find_device(&state, &caller.org.id, &device_id).await?;
    let servers = state
        .store
        .device_servers(std::slice::from_ref(&device.id))
        .await?;
    Ok(axum::Json(device_view(&state, &device, &servers)))
}

/// A change to a device.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DeviceUpdate {
    /// The new labels (replace the old ones).
    #[serde(default)]
    pub labels: Option<BTreeMap<String, String>>,
    /// A new name.
    #[serde(default)]
    pub name: Option<String>,
}

#[utoipa::path(patch, path = "/api/v1/orgs/{org}/devices/{device}", tag = "devices",
    params(("org" = String, Path, description = "Organisation id or slug"), ("device" = String, Path, description = "Device id")),
    request_body = DeviceUpdate,
    responses((status = 200, description = "The device; its links get the policy for the new labels", body = DeviceView),
              (status = 400, body = super::error::ErrorBody), (status = 404, body = super::error::ErrorBody),
              (status = 409, description = "The device is revoked", body = super::error::ErrorBody)))]
async fn update_device(
    State(state): State<AppState>,
    caller: OrgCaller,
    Path((_, device_id)): Path<(String, String)>,
    ApiJson(req): ApiJson<DeviceUpdate>,
) -> ApiResult<axum::Json<DeviceView>> {
    let device = update(&state, &caller, &device_id, req).await?;
    let servers = state
        .store
        .device_servers(std::slice::from_ref(&device.id))
        .await?;
    Ok(axum::Json(device_view(&state, &device, &servers)))
}

/// Checks and applies a change to a live device of the caller's organisation, audited, and
/// tells its links (the API and the agents pages).
pub(crate) async fn update(
    state: &AppState,
    caller: &OrgCaller,
    device_id: &str,
    req: DeviceUpdate,
) -> ApiResult<Device> {
    if req.labels.is_none() && req.name.is_none() {
        return Err(ApiError::bad_request(
            "give `labels` (replacing the old ones) and/or `name`",
        ));
    }
    let before = find_device(state, &caller.org.id, device_id).await?;
    if before.revoked_at.is_some() {
        return Err(ApiError::conflict(
            "this device is revoked; revoked devices cannot be changed",
        ));
    }
    let name = req.name.as_deref().map(str::trim);
    if let Some(name) = name {
        check_display_name(name)?;
    }
    let labels = req.labels.unwrap_or_else(|| before.labels.clone());
    check_labels(&labels).map_err(ApiError::bad_request)?;
    let device = state
        .store
        .update_device(&caller.org.id, device_id, &labels, name)
        .await?
        .ok_or_else(|| ApiError::conflict("this device was revoked meanwhile"))?;
    caller
        .record(
            state,
            "device.updated",
            &device.id,
            serde_json::json!({"labels_before": before.labels, "labels": device.labels,
                           "name_before": before.name, "name": device.name}),
        )
        .await?;
    crate::link::device_changed(state, &device.id).await;
    Ok(device)
}

/// Why a device is revoked (optional body).
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RevokeDevice {
    /// Told to the device's proxies and kept in the audit trail.
    #[serde(default)]
    pub reason: Option<String>,
}

/// Parses an optional JSON body (absent or empty = the default).
fn optional_body<T: serde::de::DeserializeOwned + Default>(body: &Bytes) -> ApiResult<T> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("the JSON body is not valid: {e}")))
}

#[utoipa::path(post, path = "/api/v1/orgs/{org}/devices/{device}/revoke", tag = "devices",
    params(("org" = String, Path, description = "Organisation id or slug"), ("device" = String, Path, description = "Device id")),
    request_body(content = Option<RevokeDevice>, description = "Optional"),
    responses((status = 204, description = "Revoked; its links were told and closed; if it held the org secrets key, the key is marked rotation_required"),
              (status = 404, body = super::error::ErrorBody),
              (status = 409, description = "Already revoked", body = super::error::ErrorBody)))]
async fn revoke_device(
    State(state): State<AppState>,
    caller: OrgCaller,
    Path((_, device_id)): Path<(String, String)>,
    body: Bytes,
) -> ApiResult<Response> {
    let req: RevokeDevice = optional_body(&body)?;
    revoke(
        &state,
        &caller,
        &device_id,
        req.reason.as_deref().unwrap_or(""),
    )
    .await?;
    Ok(super::no_content())
}

/// Revokes a live device of the caller's organisation (the API and the agents pages): audited,
/// its links told and closed at once on every replica, its key wraps withdrawn.
pub(crate) async fn revoke(
    state: &AppState,
    caller: &OrgCaller,
    device_id: &str,
    reason: &str,
) -> ApiResult<()> {
    let reason = reason.trim();
    if reason.chars().count() > 500 || reason.chars().any(char::is_control) {
        return Err(ApiError::bad_request(
            "`reason` is at most 500 characters without control characters",
        ));
    }
    if !state
        .store
        .revoke_device(&caller.org.id, device_id, reason)
        .await?
    {
        find_device(state, &caller.org.id, device_id).await?;
        return Err(ApiError::conflict("this device is already revoked"));
    }
    caller
        .record(
            state,
            "device.revoked",
            device_id,
            serde_json::json!({"reason": reason}),
        )
        .await?;
    crate::link::revoke(state, device_id, reason).await;
    // Its wraps are no longer served, the org key may now be `rotation_required`, and the
    // device may have been the last one that had not proved it holds the active key.
    if let Err(e) = state.store.retire_confirmed_keys(&caller.org.id).await {
        tracing::warn!(error = %e, "could not check whether older org key versions can retire");
    }
    crate::link::secrets_changed(state, &caller.org.id).await;
    Ok(())
}

/// Options of a re-key (optional body).
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RekeyDevice {
    /// Days until the re-key token expires (1-366, default 1).
    #[serde(default)]
    pub expires_in_days: Option<u32>,
}

#[utoipa::path(post, path = "/api/v1/orgs/{org}/devices/{device}/rekey", tag = "devices",
    params(("org" = String, Path, description = "Organisation id or slug"), ("device" = String, Path, description = "Device id")),
    request_body(content = Option<RekeyDevice>, description = "Optional"),
    responses((status = 201, description = "A single-use token bound to this device: enrolling with it replaces the device's keys", body = CreatedEnrollmentToken),
              (status = 404, body = super::error::ErrorBody),
              (status = 409, description = "The device is revoked", body = super::error::ErrorBody)))]
async fn rekey_device(
    State(state): State<AppState>,
    caller: OrgCaller,
    Path((_, device_id)): Path<(String, String)>,
    body: Bytes,
) -> ApiResult<Response> {
    let req: RekeyDevice = optional_body(&body)?;
    let (secret, token) = rekey(&state, &caller, &device_id, req).await?;
    Ok(created(&state, secret, &token))
}

/// Issues a single-use re-key token bound to a live device of the caller's organisation,
/// audited (the API and the agents pages). Returns the secret, shown this once, and the record.
pub(crate) async fn rekey(
    state: &AppState,
    caller: &OrgCaller,
    device_id: &str,
    req: RekeyDevice,
) -> ApiResult<(String, EnrollmentToken)> {
    let days = req.expires_in_days.unwrap_or(1);
    if !(1..=MAX_DAYS).contains(&days) {
        return Err(ApiError::bad_request(format!(
            "`expires_in_days` must be 1..={MAX_DAYS}"
        )));
    }
    let device = find_device(state, &caller.org.id, device_id).await?;
    if device.revoked_at.is_some() {
        return Err(ApiError::conflict(
            "this device is revoked; enrol the machine as a new device instead",
        ));
    }
    let name: String = format!("re-key {}", device.name)
        .chars()
        .take(100)
        .collect();
    let (secret, token) = issue_enrollment_token(
        &state.store,
        &caller.org.id,
        &caller.caller.user.id,
        &name,
        Labels::new(),
        1,
        days_us(days),
        Some(&device.id),
    )
    .await?;
    caller
        .record(state, "device.rekey_requested", &device.id, serde_json::json!({"enrollment_token": token.id, "expires_at": rfc3339(token.expires_at)}))
        .await?;
    Ok((secret, token))
}

// ---------------------------------------------------------------------------------------------
// Enrolment.

/// `POST /api/v1/enroll` (the proxy's `EnrollRequest`, `flowlink_proto::link`).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct EnrollRequestDoc {
    /// The enrolment token (`fle_…`).
    pub token: String,
    /// A name for the device.
    pub device_name: String,
    /// The host name.
    pub hostname: String,
    /// Ed25519 public key, base64 of 32 bytes: signs link challenges.
    pub signing_key: String,
    /// X25519 public key, base64 of 32 bytes: secrets are wrapped to it.
    pub box_key: String,
    /// Labels the device reports; the token's win on conflict.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

/// The answer to an enrolment (`EnrollResponse`, `flowlink_proto::link`).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct EnrollResponseDoc {
    /// The organisation joined.
    pub org_id: String,
    /// Its slug.
    pub org_slug: String,
    /// The device's id (the same as before for a re-key).
    pub device_id: String,
    /// The device's labels.
    pub labels: BTreeMap<String, String>,
    /// The organisation's policy signing key (Ed25519, base64): bundles must verify with it.
    pub policy_key: String,
    /// That key's id.
    pub policy_key_id: String,
    /// Where to open the link (`wss://…/api/v1/link`).
    pub link_url: String,
}

fn key32(what: &str, text: &str) -> ApiResult<[u8; 32]> {
    STANDARD
        .decode(text.trim().as_bytes())
        .ok()
        .and_then(|raw| <[u8; 32]>::try_from(raw.as_slice()).ok())
        .ok_or_else(|| ApiError::bad_request(format!("`{what}` must be base64 of 32 bytes")))
}

fn token_error(code: &'static str, message: String) -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, code, message)
}

#[utoipa::path(post, path = "/api/v1/enroll", tag = "devices",
    request_body = EnrollRequestDoc,
    responses((status = 201, description = "Enrolled (or re-keyed)", body = EnrollResponseDoc),
              (status = 400, body = super::error::ErrorBody),
              (status = 401, description = "The token is unknown, revoked, expired or used up", body = super::error::ErrorBody),
              (status = 429, description = "Too many attempts from this address", body = super::error::ErrorBody)))]
async fn enroll(
    State(state): State<AppState>,
    client: ClientInfo,
    ApiJson(req): ApiJson<EnrollRequest>,
) -> ApiResult<Response> {
    state.login_throttle.check(client.ip).map_err(|wait| {
        ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too_many_attempts",
            format!(
                "too many sign-in or enrolment attempts from this address; wait {} s",
                wait.as_secs().max(1)
            ),
        )
    })?;
    let token = req.token.trim();
    if !token.starts_with(ENROLLMENT_TOKEN_PREFIX) {
        return Err(token_error(
            "enrollment_token_invalid",
            "this is not a FlowLink enrolment token (they start with `fle_`); ask an admin of the organisation for one".into(),
        ));
    }
    let signing_key = key32("signing_key", &req.signing_key)?;
    if ed25519_dalek::VerifyingKey::from_bytes(&signing_key).is_err() {
        return Err(ApiError::bad_request(
            "`signing_key` is not a valid Ed25519 public key",
        ));
    }
    let box_key = key32("box_key", &req.box_key)?;
    if box_key == [0u8; 32] {
        return Err(ApiError::bad_request(
            "`box_key` is not a usable X25519 public key",
        ));
    }
    let device_name = req.device_name.trim();
    let hostname = req.hostname.trim();
    for (what, value) in [("device_name", device_name), ("hostname", hostname)] {
        if value.is_empty() || value.chars().count() > 200 || value.chars().any(char::is_control) {
            return Err(ApiError::bad_request(format!(
                "`{what}` must be 1-200 characters without control characters"
            )));
        }
    }
    check_labels(&req.labels).map_err(ApiError::bad_request)?;
    let new = NewDevice {
        name: device_name,
        hostname,
        labels: &req.labels,
        signing_key,
        box_key,
    };
    let enrollment = match state.store.enroll(&sha256_hex(token), &new).await? {
        Ok(e) => e,
        Err(refusal) => return Err(refused(&state, &client, refusal).await),
    };
    let device = &enrollment.device;
    let org = state
        .store
        .org_by_ref(&device.org_id)
        .await?
        .ok_or_else(|| {
            ApiError::internal("an enrolment token's organisation is gone", &device.org_id)
        })?;
    let key = state.store.org_signing_key(&org.id).await?;
    audit(
        &state,
        Some(&org.id),
        if enrollment.rekeyed {
            "device.rekeyed"
        } else {
            "device.enrolled"
        },
        ("device", &device.id),
        &device.id,
        "success",
        &client,
        serde_json::json!({"enrollment_token": enrollment.token.id,
                           "token_created_by": enrollment.token.created_by,
                           "name": device.name, "hostname": device.hostname,
                           "labels": device.labels, "key_version": device.key_version}),
    )
    .await?;
    if enrollment.rekeyed {
        // Links opened with the old key close now.
        crate::link::device_changed(&state, &device.id).await;
    }
    let response = EnrollResponse {
        org_id: org.id.clone(),
        org_slug: org.slug.clone(),
        device_id: device.id.clone(),
        labels: device.labels.clone(),
        policy_key: STANDARD.encode(key.public_key),
        policy_key_id: key.key_id.clone(),
        link_url: link_url(&state.config.public_url),
    };
    Ok((StatusCode::CREATED, axum::Json(response)).into_response())
}

/// Audits a refused enrolment and says why, in words.
async fn refused(state: &AppState, client: &ClientInfo, refusal: EnrollRefusal) -> ApiError {
    let (token, error) = match refusal {
        EnrollRefusal::Unknown => (
            None,
            token_error(
                "enrollment_token_invalid",
                "this enrolment token is unknown; ask an admin of the organisation for a new one"
                    .into(),
            ),
        ),
        EnrollRefusal::Revoked(t) => (
            Some(t),
            token_error(
                "enrollment_token_invalid",
                "this enrolment token was revoked; ask an admin of the organisation for a new one"
                    .into(),
            ),
        ),
        EnrollRefusal::Expired(t) => {
            let at = rfc3339(t.expires_at);
            (
                Some(t),
                token_error(
                    "enrollment_token_expired",
                    format!("this enrolment token expired at {at}; ask an admin of the organisation for a new one"),
                ),
            )
        }
        EnrollRefusal::UsedUp(t) => {
            let n = t.uses_allowed;
            (
                Some(t),
                token_error(
                    "enrollment_token_used",
                    format!("this enrolment token has already admitted {n} device(s), all it allows; ask an admin of the organisation for a new one"),
                ),
            )
        }
        EnrollRefusal::DeviceRevoked(t) => (
            Some(t),
            token_error(
                "device_revoked",
                "the device this re-key token belongs to has been revoked; enrol the machine as a new device with an enrolment token".into(),
            ),
        ),
    };
    let outcome = audit(
        state,
        token.as_ref().map(|t| t.org_id.as_str()),
        "device.enroll_failed",
        ("anonymous", ""),
        token.as_ref().map_or("", |t| t.id.as_str()),
        "failure",
        client,
        serde_json::json!({"reason": error.code}),
    )
    .await;
    match outcome {
        Ok(()) => error,
        Err(e) => e,
    }
}

/// The OpenAPI fragment of this module.
#[derive(utoipa::OpenApi)]
#[openapi(
    paths(
        create_enrollment_token,
        list_enrollment_tokens,
        revoke_enrollment_token,
        list_devices,
        get_device,
        update_device,
        revoke_device,
        rekey_device,
        enroll
    ),
    components(schemas(
        EnrollmentTokenView,
        EnrollmentTokenPage,
        NewEnrollmentToken,
        CreatedEnrollmentToken,
        ServerView,
        DeviceView,
        DevicePage,
        DeviceUpdate,
        RevokeDevice,
        RekeyDevice,
        EnrollRequestDoc,
        EnrollResponseDoc
    ))
)]
pub struct Doc;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_urls_follow_the_public_url() {
        assert_eq!(
            link_url("https://cp.example/"),
            "wss://cp.example/api/v1/link"
        );
        assert_eq!(
            link_url("http://127.0.0.1:8080"),
            "ws://127.0.0.1:8080/api/v1/link"
        );
    }

    #[test]
    fn labels_use_the_scope_syntax() {
        let l = |k: &str, v: &str| Labels::from([(k.to_string(), v.to_string())]);
        assert!(check_labels(&l("env", "prod")).is_ok());
        assert!(check_labels(&l("env", "pr od")).is_err());
        assert!(check_labels(&l("", "x")).is_err());
        let many: Labels = (0..=MAX_LABELS)
            .map(|i| (format!("k{i}"), "v".to_string()))
            .collect();
        assert!(check_labels(&many).is_err());
    }
}
