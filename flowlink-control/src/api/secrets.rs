//! Zero-trust secrets: the control plane stores and serves ciphertext and public keys, never a
//! value nor a private key.
//!
//! - The organisation's key: `GET /secrets/key` (versions, who holds a wrap of each, who still
//!   lacks the active one), `POST /secrets/key` (set-up, or rotation: the new public key, its
//!   wraps to every active device and custodian, and every secret re-sealed, swapped in one
//!   transaction), `POST /secrets/key/{version}/wraps` (grant to recipients lacking it).
//! - Custodians (`/secrets/custodians`): a person's own X25519 key, bound to the caller, that may
//!   hold the org key; revoking one that held the active key marks it `rotation_required`.
//! - Verification (`POST /secrets/key/verify`, `GET /secrets/key/verify/{id}`): a challenge
//!   sealed to the org public key per connected device; the device proves it can open it.
//! - Secrets (`/secrets`, `/secrets/{name}`): metadata only; `PUT` takes a value sealed on the
//!   caller's side for version `base_version + 1` under the active key (409 otherwise).
//!   `GET /secrets/sealed` gives the sealed values to a custodian for rotation.
//!
//! Every change is audited (names, versions, scopes — never a value or a sealed blob) and
//! reaches the linked proxies through [`crate::link::secrets_changed`].

use std::collections::{BTreeMap, BTreeSet, HashMap};

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use flowlink_proto::sealed::{BoxPublicKey, SEAL_ALG, SealedBox, valid_secret_name};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::auth::{check_display_name, rfc3339};
use super::page::{PageQuery, finish};
use super::{Access, ApiError, ApiJson, ApiResult, ApiRoute, AppState, OrgCaller};
use crate::auth::Permission;
use crate::link::session::{DeviceHealth, health_of};
use crate::store::{
    Custodian, NewSecretsKey, PutSecret, Recipient, Secret, SecretsRefusal, new_id, now_us,
};

/// Largest sealed secret value accepted (ciphertext and tag), bytes.
pub const MAX_SEALED_BYTES: usize = 64 * 1024 + 16;
/// Largest body of a rotation (every secret re-sealed in one request).
pub const MAX_ROTATION_BODY_BYTES: usize = 128 * 1024 * 1024;
/// Most services one secret may be limited to.
pub const MAX_SERVICES: usize = 32;
/// Longest description.
pub const MAX_DESCRIPTION_CHARS: usize = 500;

/// The routes of this module.
pub fn routes() -> Vec<ApiRoute> {
    use Permission::{SecretsKeys, SecretsRead, SecretsWrite};
    vec![
        ApiRoute::new(
            Method::GET,
            "/api/v1/orgs/{org}/secrets",
            Access::Org(SecretsRead),
            list_secrets,
        ),
        ApiRoute::new(
            Method::GET,
            "/api/v1/orgs/{org}/secrets/sealed",
            Access::Org(SecretsKeys),
            sealed_secrets,
        ),
        ApiRoute::new(
            Method::GET,
            "/api/v1/orgs/{org}/secrets/key",
            Access::Org(SecretsRead),
            key_status,
        ),
        ApiRoute::new(
            Method::POST,
            "/api/v1/orgs/{org}/secrets/key",
            Access::Org(SecretsKeys),
            create_key,
        )
        .with_body_limit(MAX_ROTATION_BODY_BYTES),
        ApiRoute::new(
            Method::POST,
            "/api/v1/orgs/{org}/secrets/key/{version}/wraps",
            Access::Org(SecretsKeys),
            grant_wraps,
        ),
        ApiRoute::new(
            Method::POST,
            "/api/v1/orgs/{org}/secrets/key/verify",
            Access::Org(SecretsKeys),
            start_verification,
        ),
        ApiRoute::new(
            Method::GET,
            "/api/v1/orgs/{org}/secrets/key/verify/{verification}",
            Access::Org(SecretsRead),
            get_verification,
        ),
        ApiRoute::new(
            Method::GET,
            "/api/v1/orgs/{org}/secrets/custodians",
            Access::Org(SecretsRead),
            list_custodians,
        ),
        ApiRoute::new(
            Method::POST,
            "/api/v1/orgs/{org}/secrets/custodians",
            Access::Org(SecretsKeys),
            create_custodian,
        ),
        ApiRoute::new(
            Method::DELETE,
            "/api/v1/orgs/{org}/secrets/custodians/{custodian}",
            Access::Org(SecretsKeys),
            revoke_custodian,
        ),
        ApiRoute::new(
            Method::GET,
            "/api/v1/orgs/{org}/secrets/{name}",
            Access::Org(SecretsRead),
            get_secret,
        ),
        ApiRoute::new(
            Method::PUT,
            "/api/v1/orgs/{org}/secrets/{name}",
            Access::Org(SecretsWrite),
            put_secret,
        ),
        ApiRoute::new(
            Method::DELETE,
            "/api/v1/orgs/{org}/secrets/{name}",
            Access::Org(SecretsWrite),
            delete_secret,
        ),
    ]
}

// ---------------------------------------------------------------------------------------------
// Checks.

/// A sealed box as JSON (`flowlink_proto::sealed::SealedBox`).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct SealedBoxDoc {
    /// `hpke-base-x25519-sha256-aes256gcm`.
    pub alg: String,
    /// Base64 of the 32-byte encapsulated (ephemeral public) key.
    pub enc: String,
    /// Base64 of the ciphertext and its 16-byte tag.
    pub ct: String,
}

fn refusal(r: SecretsRefusal) -> ApiError {
    match r {
        SecretsRefusal::Conflict(m) => ApiError::conflict(m),
        SecretsRefusal::Invalid(m) => ApiError::bad_request(m),
        SecretsRefusal::NotFound(what) => ApiError::not_found(what),
    }
}

/// Checks the shape of a sealed box (it cannot be opened here: no private key is).
fn check_sealed(what: &str, sealed: &SealedBox, max_ct: usize) -> ApiResult<()> {
    if sealed.alg != SEAL_ALG {
        return Err(ApiError::bad_request(format!(
            "{what}: `alg` must be `{SEAL_ALG}`, not `{}`",
            sealed.alg.chars().take(60).collect::<String>()
        )));
    }
    let enc = STANDARD.decode(sealed.enc.as_bytes()).ok();
    if enc.as_ref().is_none_or(|e| e.len() != 32) {
        return Err(ApiError::bad_request(format!(
            "{what}: `enc` must be base64 of 32 bytes"
        )));
    }
    if sealed.ct.len() > max_ct.div_ceil(3) * 4 + 4 {
        return Err(ApiError::bad_request(format!(
            "{what}: the sealed value is larger than {} bytes",
            max_ct.saturating_sub(16)
        )));
    }
    match STANDARD.decode(sealed.ct.as_bytes()) {
        Ok(ct) if ct.len() > 16 && ct.len() <= max_ct => Ok(()),
        Ok(ct) if ct.len() <= 16 => Err(ApiError::bad_request(format!(
            "{what}: `ct` is too short to hold a value and its tag (an empty value is not a secret)"
        ))),
        Ok(_) => Err(ApiError::bad_request(format!(
            "{what}: the sealed value is larger than {} bytes",
            max_ct.saturating_sub(16)
        ))),
        Err(_) => Err(ApiError::bad_request(format!(
            "{what}: `ct` must be standard base64"
        ))),
    }
}

/// A wrapped org key: 32 bytes sealed (48 with the tag).
fn check_wrapped(recipient: &str, sealed: &SealedBox) -> ApiResult<()> {
    check_sealed(&format!("the wrap for `{recipient}`"), sealed, 48)
}

fn check_name(name: &str) -> ApiResult<()> {
    if valid_secret_name(name) {
        Ok(())
    } else {
        Err(ApiError::bad_request(format!(
            "`{}` is not a secret name: use 1-128 characters of A-Z, 0-9 and `_`, not starting with a digit (e.g. GITHUB_TOKEN)",
            name.chars().take(140).collect::<String>()
        )))
    }
}

fn check_services(services: &[String]) -> ApiResult<Vec<String>> {
    if services.len() > MAX_SERVICES {
        return Err(ApiError::bad_request(format!(
            "{} services given; a secret may be limited to at most {MAX_SERVICES}",
            services.len()
        )));
    }
    let mut out = BTreeSet::new();
    for s in services {
        crate::store::PolicyScope::parse(&format!("service:{s}"))
            .map_err(|e| ApiError::bad_request(format!("service `{s}`: {e}")))?;
        out.insert(s.clone());
    }
    Ok(out.into_iter().collect())
}

fn check_description(d: &str) -> ApiResult<()> {
    if d.chars().count() > MAX_DESCRIPTION_CHARS || d.chars().any(char::is_control) {
        return Err(ApiError::bad_request(format!(
            "`description` is at most {MAX_DESCRIPTION_CHARS} characters without control characters"
        )));
    }
    Ok(())
}

fn public_key(what: &str, text: &str) -> ApiResult<BoxPublicKey> {
    BoxPublicKey::from_base64(text.trim()).map_err(|e| {
        ApiError::bad_request(format!(
            "`{what}` is not a usable X25519 public key (base64 of 32 bytes): {e}"
        ))
    })
}

/// Whether a device can be asked now: it has a link here, or it was heard from within two
/// heartbeats (a link on another replica).
fn connected(state: &AppState, id: &str, last_seen_at: Option<i64>) -> bool {
    state.links.sessions.serves(id)
        || health_of(last_seen_at, now_us(), state.config.link_heartbeat) == DeviceHealth::Online
}

// ---------------------------------------------------------------------------------------------
// Views.

/// A secret's metadata (the control plane has no value to show).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct SecretView {
    /// Name.
    pub name: String,
    /// 1, then +1 at each new value.
    pub version: u64,
    /// The org key version the value is sealed to.
    pub key_version: u32,
    /// Services that receive it (empty: every service).
    pub services: Vec<String>,
    /// Labels a device must carry, all of them, to receive it.
    pub labels: BTreeMap<String, String>,
    /// For people.
    pub description: String,
    /// User id.
    pub created_by: String,
    /// Creation time.
    pub created_at: String,
    /// User id of the last change.
    pub updated_by: String,
    /// Last change.
    pub updated_at: String,
    /// Last use a proxy reported.
    pub last_used_at: Option<String>,
    /// The device that reported it.
    pub last_used_device: Option<String>,
}

impl From<&Secret> for SecretView {
    fn from(s: &Secret) -> SecretView {
        SecretView {
            name: s.name.clone(),
            version: s.version,
            key_version: s.key_version,
            services: s.services.clone(),
            labels: s.labels.clone(),
            description: s.description.clone(),
            created_by: s.created_by.clone(),
            created_at: rfc3339(s.created_at),
            updated_by: s.updated_by.clone(),
            updated_at: rfc3339(s.updated_at),
            last_used_at: s.last_used_at.map(rfc3339),
            last_used_device: s.last_used_device.clone(),
        }
    }
}

/// A page of secrets, by name.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct SecretPage {
    /// The secrets.
    pub items: Vec<SecretView>,
    /// Pass as `cursor` for the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

/// A secret's sealed value, for a custodian's rotation.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct SealedSecretView {
    /// Name.
    pub name: String,
    /// Version (bound into the seal).
    pub version: u64,
    /// The org key version it is sealed to.
    pub key_version: u32,
    /// The sealed value.
    #[schema(value_type = SealedBoxDoc)]
    pub sealed: SealedBox,
}

/// Every secret's sealed value.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct SealedSecrets {
    /// By name.
    pub items: Vec<SealedSecretView>,
}

/// A recipient of the org key: an active device or a live custodian.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RecipientView {
    /// `device:<id>` or `custodian:<id>`: the `recipient` of a wrap and of its seal context.
    pub recipient: String,
    /// `device` or `custodian`.
    pub kind: String,
    /// Device or custodian id.
    pub id: String,
    /// Its name.
    pub name: String,
    /// Its X25519 public key (base64): wrap the org key to it.
    pub public_key: String,
}

impl From<&Recipient> for RecipientView {
    fn from(r: &Recipient) -> RecipientView {
        RecipientView {
            recipient: r.recipient(),
            kind: r.kind.to_string(),
            id: r.id.clone(),
            name: r.name.clone(),
            public_key: BoxPublicKey(r.public_key).to_base64(),
        }
    }
}

/// One wrap of a key version.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct WrapView {
    /// `device:<id>` or `custodian:<id>`.
    pub recipient: String,
    /// `device` or `custodian`.
    pub kind: String,
    /// Device or custodian id.
    pub id: String,
    /// Its name (empty when it no longer exists).
    pub name: String,
    /// The recipient is revoked: this wrap is no longer served.
    pub revoked: bool,
    /// The org private key sealed to the recipient's key (only the recipient can open it).
    #[schema(value_type = SealedBoxDoc)]
    pub wrapped: SealedBox,
    /// When it was granted.
    pub created_at: String,
    /// When the device proved it holds this version.
    pub confirmed_at: Option<String>,
}

/// One version of the organisation's key.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct KeyVersionView {
    /// 1, 2, …
    pub version: u32,
    /// X25519 public key (base64): seal secrets to it.
    pub public_key: String,
    /// `active`, `retiring` (rotated away from, until every active device proved it holds the
    /// new one) or `retired`.
    pub state: String,
    /// Why the key must be rotated, when it must (a revoked device or custodian held it).
    pub rotation_required: Option<String>,
    /// User id.
    pub created_by: String,
    /// When.
    pub created_at: String,
    /// When it was retired.
    pub retired_at: Option<String>,
    /// Its wraps.
    pub recipients: Vec<WrapView>,
}

/// The organisation's secrets key.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct KeyStatusView {
    /// The organisation id (bound into every seal context).
    pub org_id: String,
    /// The active version; absent before set-up.
    pub active_version: Option<u32>,
    /// Why the active key must be rotated, when it must.
    pub rotation_required: Option<String>,
    /// Every version, oldest first.
    pub versions: Vec<KeyVersionView>,
    /// Active devices and live custodians without a wrap of the active version.
    pub lacking: Vec<RecipientView>,
    /// Every active device and live custodian (a rotation wraps the new key to each).
    pub recipients: Vec<RecipientView>,
}

/// The organisation's key status, as `GET …/secrets/key` answers it (also the secrets page's).
pub(crate) async fn status_view(state: &AppState, org_id: &str) -> ApiResult<KeyStatusView> {
    let keys = state.store.secrets_keys(org_id).await?;
    let wraps = state.store.key_wraps(org_id).await?;
    let recipients = state.store.key_recipients(org_id).await?;
    let by_id: HashMap<String, &Recipient> =
        recipients.iter().map(|r| (r.recipient(), r)).collect();
    let active = keys.iter().find(|k| k.state == "active");
    let versions = keys
        .iter()
        .map(|k| KeyVersionView {
            version: k.version,
            public_key: BoxPublicKey(k.public_key).to_base64(),
            state: k.state.clone(),
            rotation_required: k.rotation_required.clone(),
            created_by: k.created_by.clone(),
            created_at: rfc3339(k.created_at),
            retired_at: k.retired_at.map(rfc3339),
            recipients: wraps
                .iter()
                .filter(|w| w.key_version == k.version)
                .map(|w| {
                    let who = by_id.get(&w.recipient);
                    let (kind, id) = w.recipient.split_once(':').unwrap_or(("", &w.recipient));
                    WrapView {
                        recipient: w.recipient.clone(),
                        kind: kind.to_string(),
                        id: id.to_string(),
                        name: who.map(|r| r.name.clone()).unwrap_or_default(),
                        revoked: who.is_none_or(|r| r.revoked_at.is_some()),
                        wrapped: w.wrapped.clone(),
                        created_at: rfc3339(w.created_at),
                        confirmed_at: w.confirmed_at.map(rfc3339),
                    }
                })
                .collect(),
        })
        .collect();
    let live: Vec<&Recipient> = recipients
        .iter()
        .filter(|r| r.revoked_at.is_none())
        .collect();
    let lacking = live
        .iter()
        .filter(|r| {
            active.is_none_or(|k| {
                let name = r.recipient();
                !wraps
                    .iter()
                    .any(|w| w.key_version == k.version && w.recipient == name)
            })
        })
        .map(|r| RecipientView::from(*r))
        .collect();
    Ok(KeyStatusView {
        org_id: org_id.to_string(),
        active_version: active.map(|k| k.version),
        rotation_required: active.and_then(|k| k.rotation_required.clone()),
        versions,
        lacking,
        recipients: live.iter().map(|r| RecipientView::from(*r)).collect(),
    })
}

// ---------------------------------------------------------------------------------------------
// The organisation's key.

#[utoipa::path(get, path = "/api/v1/orgs/{org}/secrets/key", tag = "secrets",
    params(("org" = String, Path, description = "Organisation id or slug")),
    responses((status = 200, body = KeyStatusView)))]
async fn key_status(
    State(state): State<AppState>,
    caller: OrgCaller,
) -> ApiResult<axum::Json<KeyStatusView>> {
    Ok(axum::Json(status_view(&state, &caller.org.id).await?))
}

/// A wrap of the org private key to one recipient.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WrapBody {
    /// `device:<id>` or `custodian:<id>`.
    pub recipient: String,
    /// `seal(recipient's key, OrgKey{org_id, key_version, recipient}, org private key)`.
    #[schema(value_type = SealedBoxDoc)]
    pub wrapped: SealedBox,
}

/// A secret re-sealed to the new key of a rotation.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResealedSecret {
    /// Name.
    pub name: String,
    /// Its current version (unchanged by the rotation).
    pub version: u64,
    /// `seal(new public key, Secret{org_id, name, version, key_version: new}, value)`.
    #[schema(value_type = SealedBoxDoc)]
    pub sealed: SealedBox,
}

/// A new version of the organisation's key.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewKeyBody {
    /// X25519 public key of the new version (base64).
    pub public_key: String,
    /// `null` to set up the first key; the active version to rotate from it.
    #[serde(default)]
    pub previous_version: Option<u32>,
    /// The new private key wrapped to recipients: at set-up at least the caller's own
    /// custodian; at rotation every active device and live custodian.
    #[serde(default)]
    pub wraps: Vec<WrapBody>,
    /// Rotation: every secret re-sealed to the new key at its current version.
    #[serde(default)]
    pub secrets: Vec<ResealedSecret>,
}

fn check_wraps(wraps: &[WrapBody]) -> ApiResult<Vec<(String, SealedBox)>> {
    wraps
        .iter()
        .map(|w| {
            check_wrapped(&w.recipient, &w.wrapped)?;
            Ok((w.recipient.clone(), w.wrapped.clone()))
        })
        .collect()
}

#[utoipa::path(post, path = "/api/v1/orgs/{org}/secrets/key", tag = "secrets",
    params(("org" = String, Path, description = "Organisation id or slug")),
    request_body = NewKeyBody,
    responses((status = 201, description = "Set up or rotated; linked proxies get the new key and secrets", body = KeyStatusView),
              (status = 400, body = super::error::ErrorBody),
              (status = 409, description = "Not a custodian, a recipient or secret missing, or something changed meanwhile", body = super::error::ErrorBody)))]
async fn create_key(
    State(state): State<AppState>,
    caller: OrgCaller,
    ApiJson(req): ApiJson<NewKeyBody>,
) -> ApiResult<Response> {
    let key = public_key("public_key", &req.public_key)?;
    let wraps = check_wraps(&req.wraps)?;
    let mut secrets = Vec::with_capacity(req.secrets.len());
    for s in &req.secrets {
        check_name(&s.name)?;
        check_sealed(&format!("secret {}", s.name), &s.sealed, MAX_SEALED_BYTES)?;
        secrets.push((s.name.clone(), s.version, s.sealed.clone()));
    }
    let change = state
        .store
        .create_secrets_key(&NewSecretsKey {
            org_id: &caller.org.id,
            public_key: key.0,
            previous_version: req.previous_version,
            wraps: &wraps,
            secrets: &secrets,
            user_id: &caller.caller.user.id,
        })
        .await?
        .map_err(refusal)?;
    let recipients: Vec<&str> = wraps.iter().map(|(r, _)| r.as_str()).collect();
    let (kind, detail) = match req.previous_version {
        None => (
            "secret_key.created",
            serde_json::json!({"key_version": change.key.version, "recipients": recipients}),
        ),
        Some(from) => (
            "secret_key.rotated",
            serde_json::json!({"key_version": change.key.version, "from_version": from,
                               "resealed": change.resealed, "recipients": recipients,
                               "retired": change.retired}),
        ),
    };
    caller
        .record(&state, kind, &change.key.version.to_string(), detail)
        .await?;
    crate::link::secrets_changed(&state, &caller.org.id).await;
    let view = status_view(&state, &caller.org.id).await?;
    Ok((StatusCode::CREATED, axum::Json(view)).into_response())
}

/// Wraps of a key version for recipients lacking one.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GrantBody {
    /// One per recipient.
    pub wraps: Vec<WrapBody>,
}

#[utoipa::path(post, path = "/api/v1/orgs/{org}/secrets/key/{version}/wraps", tag = "secrets",
    params(("org" = String, Path, description = "Organisation id or slug"), ("version" = u32, Path, description = "Key version")),
    request_body = GrantBody,
    responses((status = 200, description = "Granted; the devices' links get the key", body = KeyStatusView),
              (status = 400, body = super::error::ErrorBody), (status = 404, body = super::error::ErrorBody),
              (status = 409, description = "A recipient is revoked or already holds this version", body = super::error::ErrorBody)))]
async fn grant_wraps(
    State(state): State<AppState>,
    caller: OrgCaller,
    Path((_, version)): Path<(String, String)>,
    ApiJson(req): ApiJson<GrantBody>,
) -> ApiResult<axum::Json<KeyStatusView>> {
    let version: u32 = version
        .parse()
        .map_err(|_| ApiError::not_found("secrets key version"))?;
    if req.wraps.is_empty() {
        return Err(ApiError::bad_request("give at least one wrap"));
    }
    let wraps = check_wraps(&req.wraps)?;
    let n = state
        .store
        .grant_key_wraps(&caller.org.id, version, &wraps)
        .await?
        .map_err(refusal)?;
    let recipients: Vec<&str> = wraps.iter().map(|(r, _)| r.as_str()).collect();
    caller
        .record(
            &state,
            "secret_key.granted",
            &version.to_string(),
            serde_json::json!({"key_version": version, "recipients": recipients, "count": n}),
        )
        .await?;
    crate::link::secrets_changed(&state, &caller.org.id).await;
    Ok(axum::Json(status_view(&state, &caller.org.id).await?))
}

// ---------------------------------------------------------------------------------------------
// Verification.

/// A verification run started.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct VerificationStarted {
    /// Poll `GET …/secrets/key/verify/{verification_id}`.
    pub verification_id: String,
    /// The key version challenged (the active one).
    pub key_version: u32,
    /// Connected devices challenged.
    pub devices: usize,
    /// Active devices not connected (recorded as `offline`).
    pub offline: usize,
}

#[utoipa::path(post, path = "/api/v1/orgs/{org}/secrets/key/verify", tag = "secrets",
    params(("org" = String, Path, description = "Organisation id or slug")),
    responses((status = 201, description = "Challenges pushed to every connected active device", body = VerificationStarted),
              (status = 409, description = "No secrets key is set up", body = super::error::ErrorBody)))]
async fn start_verification(
    State(state): State<AppState>,
    caller: OrgCaller,
) -> ApiResult<Response> {
    let key = state
        .store
        .active_secrets_key(&caller.org.id)
        .await?
        .ok_or_else(|| {
            ApiError::conflict(
                "this organisation has no secrets key to verify; a custodian sets one up first",
            )
        })?;
    let verification_id = new_id();
    let mut asked = 0;
    let mut offline = 0;
    for device in state.store.live_devices(&caller.org.id).await? {
        let online = connected(&state, &device.id, device.last_seen_at);
        let challenge = crate::link::new_challenge(
            &state.store,
            &key,
            &device.id,
            Some(&verification_id),
            !online,
        )
        .await
        .map_err(|e| ApiError::internal("cannot make a key challenge", e))?;
        if online {
            crate::link::deliver(
                &state,
                &device.id,
                None,
                &flowlink_proto::link::ControlMessage::KeyChallenge(challenge),
            )
            .await?;
            asked += 1;
        } else {
            offline += 1;
        }
    }
    caller
        .record(
            &state,
            "secret_key.verification_started",
            &verification_id,
            serde_json::json!({"key_version": key.version, "devices": asked, "offline": offline}),
        )
        .await?;
    Ok((
        StatusCode::CREATED,
        axum::Json(VerificationStarted {
            verification_id,
            key_version: key.version,
            devices: asked,
            offline,
        }),
    )
        .into_response())
}

/// One device in a verification run.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct VerificationDevice {
    /// Device id.
    pub device_id: String,
    /// Its name.
    pub device_name: Option<String>,
    /// `pending`, `proved`, `failed` or `offline`.
    pub status: String,
    /// Why it failed.
    pub error: Option<String>,
    /// When it answered.
    pub answered_at: Option<String>,
}

/// A verification run.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct VerificationView {
    /// Id.
    pub verification_id: String,
    /// The key version challenged.
    pub key_version: u32,
    /// When it started.
    pub created_at: String,
    /// Per device.
    pub devices: Vec<VerificationDevice>,
}

#[utoipa::path(get, path = "/api/v1/orgs/{org}/secrets/key/verify/{verification}", tag = "secrets",
    params(("org" = String, Path, description = "Organisation id or slug"), ("verification" = String, Path, description = "Verification id")),
    responses((status = 200, body = VerificationView), (status = 404, body = super::error::ErrorBody)))]
async fn get_verification(
    State(state): State<AppState>,
    caller: OrgCaller,
    Path((_, id)): Path<(String, String)>,
) -> ApiResult<axum::Json<VerificationView>> {
    let records = state.store.verification(&caller.org.id, &id).await?;
    let Some(first) = records.first() else {
        return Err(ApiError::not_found("verification"));
    };
    Ok(axum::Json(VerificationView {
        verification_id: id.clone(),
        key_version: first.key_version,
        created_at: rfc3339(first.created_at),
        devices: records
            .iter()
            .map(|r| VerificationDevice {
                device_id: r.device_id.clone(),
                device_name: r.device_name.clone(),
                status: r.outcome.clone().unwrap_or_else(|| "pending".to_string()),
                error: r.error.clone(),
                answered_at: r.answered_at.map(rfc3339),
            })
            .collect(),
    }))
}

// ---------------------------------------------------------------------------------------------
// Custodians.

/// A custodian: a person's own X25519 key that may hold the org key.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CustodianView {
    /// Id (`custodian:<id>` is its recipient name).
    pub id: String,
    /// The organisation (bound into the seal context of its wraps).
    pub org_id: String,
    /// The person it belongs to.
    pub user_id: String,
    /// Their e-mail address, if the account still exists.
    pub user_email: Option<String>,
    /// A name for people.
    pub name: String,
    /// X25519 public key (base64).
    pub public_key: String,
    /// When it was registered.
    pub created_at: String,
    /// When it was revoked.
    pub revoked_at: Option<String>,
}

async fn custodian_view(state: &AppState, c: &Custodian) -> ApiResult<CustodianView> {
    let email = state.store.user_by_id(&c.user_id).await?.map(|u| u.email);
    Ok(CustodianView {
        id: c.id.clone(),
        org_id: c.org_id.clone(),
        user_id: c.user_id.clone(),
        user_email: email,
        name: c.name.clone(),
        public_key: BoxPublicKey(c.public_key).to_base64(),
        created_at: rfc3339(c.created_at),
        revoked_at: c.revoked_at.map(rfc3339),
    })
}

/// Every custodian, oldest first.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CustodianList {
    /// The custodians (revoked ones included).
    pub items: Vec<CustodianView>,
}

#[utoipa::path(get, path = "/api/v1/orgs/{org}/secrets/custodians", tag = "secrets",
    params(("org" = String, Path, description = "Organisation id or slug")),
    responses((status = 200, body = CustodianList)))]
async fn list_custodians(
    State(state): State<AppState>,
    caller: OrgCaller,
) -> ApiResult<axum::Json<CustodianList>> {
    let mut items = Vec::new();
    for c in state.store.list_custodians(&caller.org.id).await? {
        items.push(custodian_view(&state, &c).await?);
    }
    Ok(axum::Json(CustodianList { items }))
}

/// A custodian key to register for the calling person.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewCustodian {
    /// A name for people, e.g. "olive's laptop" (1-100 characters).
    pub name: String,
    /// X25519 public key (base64); the private key stays with the person.
    pub public_key: String,
}

#[utoipa::path(post, path = "/api/v1/orgs/{org}/secrets/custodians", tag = "secrets",
    params(("org" = String, Path, description = "Organisation id or slug")),
    request_body = NewCustodian,
    responses((status = 201, description = "Registered, bound to the caller", body = CustodianView),
              (status = 400, body = super::error::ErrorBody)))]
async fn create_custodian(
    State(state): State<AppState>,
    caller: OrgCaller,
    ApiJson(req): ApiJson<NewCustodian>,
) -> ApiResult<Response> {
    let name = req.name.trim();
    check_display_name(name)?;
    let key = public_key("public_key", &req.public_key)?;
    let c = state
        .store
        .create_custodian(&caller.org.id, &caller.caller.user.id, name, key.0)
        .await?;
    caller
        .record(
            &state,
            "secret_custodian.created",
            &c.id,
            serde_json::json!({"name": c.name, "user": c.user_id}),
        )
        .await?;
    let view = custodian_view(&state, &c).await?;
    Ok((StatusCode::CREATED, axum::Json(view)).into_response())
}

#[utoipa::path(delete, path = "/api/v1/orgs/{org}/secrets/custodians/{custodian}", tag = "secrets",
    params(("org" = String, Path, description = "Organisation id or slug"), ("custodian" = String, Path, description = "Custodian id")),
    responses((status = 204, description = "Revoked; if it held the active key, the key is marked rotation_required"),
              (status = 404, body = super::error::ErrorBody)))]
async fn revoke_custodian(
    State(state): State<AppState>,
    caller: OrgCaller,
    Path((_, id)): Path<(String, String)>,
) -> ApiResult<Response> {
    let reason = format!(
        "custodian {id} was revoked by {} and may have kept the org key",
        caller.caller.user.email
    );
    let Some(flagged) = state
        .store
        .revoke_custodian(&caller.org.id, &id, &reason)
        .await?
    else {
        return Err(ApiError::not_found("live custodian"));
    };
    caller
        .record(
            &state,
            "secret_custodian.revoked",
            &id,
            serde_json::json!({"rotation_required": flagged}),
        )
        .await?;
    if flagged {
        crate::link::secrets_changed(&state, &caller.org.id).await;
    }
    Ok(super::no_content())
}

// ---------------------------------------------------------------------------------------------
// Secrets.

#[utoipa::path(get, path = "/api/v1/orgs/{org}/secrets", tag = "secrets",
    params(("org" = String, Path, description = "Organisation id or slug"), PageQuery),
    responses((status = 200, body = SecretPage)))]
async fn list_secrets(
    State(state): State<AppState>,
    caller: OrgCaller,
    query: Result<Query<PageQuery>, QueryRejection>,
) -> ApiResult<axum::Json<SecretPage>> {
    let Query(page) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let limit = page.limit()?;
    let rows = state
        .store
        .list_secrets(&caller.org.id, page.key()?.as_deref(), i64::from(limit) + 1)
        .await?;
    let (rows, next_cursor) = finish(rows, limit, |s| s.name.clone());
    Ok(axum::Json(SecretPage {
        items: rows.iter().map(SecretView::from).collect(),
        next_cursor,
    }))
}

#[utoipa::path(get, path = "/api/v1/orgs/{org}/secrets/sealed", tag = "secrets",
    params(("org" = String, Path, description = "Organisation id or slug")),
    responses((status = 200, description = "Every secret's sealed value (for a custodian's rotation)", body = SealedSecrets)))]
async fn sealed_secrets(
    State(state): State<AppState>,
    caller: OrgCaller,
) -> ApiResult<axum::Json<SealedSecrets>> {
    let items = state
        .store
        .all_secrets(&caller.org.id)
        .await?
        .into_iter()
        .map(|s| SealedSecretView {
            name: s.name,
            version: s.version,
            key_version: s.key_version,
            sealed: s.sealed,
        })
        .collect();
    Ok(axum::Json(SealedSecrets { items }))
}

/// The secret `name` of the organisation (not found for a name that cannot be one).
pub(crate) async fn find_secret(state: &AppState, org_id: &str, name: &str) -> ApiResult<Secret> {
    if !valid_secret_name(name) {
        return Err(ApiError::not_found("secret"));
    }
    state
        .store
        .secret(org_id, name)
        .await?
        .ok_or_else(|| ApiError::not_found("secret"))
}

#[utoipa::path(get, path = "/api/v1/orgs/{org}/secrets/{name}", tag = "secrets",
    params(("org" = String, Path, description = "Organisation id or slug"), ("name" = String, Path, description = "Secret name")),
    responses((status = 200, description = "Metadata only", body = SecretView), (status = 404, body = super::error::ErrorBody)))]
async fn get_secret(
    State(state): State<AppState>,
    caller: OrgCaller,
    Path((_, name)): Path<(String, String)>,
) -> ApiResult<axum::Json<SecretView>> {
    let s = find_secret(&state, &caller.org.id, &name).await?;
    Ok(axum::Json(SecretView::from(&s)))
}

/// A new value (sealed by the caller) and the secret's metadata.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PutSecretBody {
    /// The version the caller saw: 0 to create, else the current version. The value is sealed
    /// for version `base_version + 1`.
    pub base_version: u64,
    /// The active key version the value is sealed to.
    pub key_version: u32,
    /// `seal(org public key, Secret{org_id, name, version: base_version + 1, key_version}, value)`.
    #[schema(value_type = SealedBoxDoc)]
    pub sealed: SealedBox,
    /// Services that receive it (empty: every service).
    #[serde(default)]
    pub services: Vec<String>,
    /// Labels a device must carry, all of them.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// For people (up to 500 characters).
    #[serde(default)]
    pub description: String,
}

#[utoipa::path(put, path = "/api/v1/orgs/{org}/secrets/{name}", tag = "secrets",
    params(("org" = String, Path, description = "Organisation id or slug"), ("name" = String, Path, description = "Secret name")),
    request_body = PutSecretBody,
    responses((status = 201, description = "Created", body = SecretView), (status = 200, description = "Replaced", body = SecretView),
              (status = 400, body = super::error::ErrorBody),
              (status = 409, description = "`base_version` is not current or `key_version` not the active key", body = super::error::ErrorBody)))]
async fn put_secret(
    State(state): State<AppState>,
    caller: OrgCaller,
    Path((_, name)): Path<(String, String)>,
    ApiJson(req): ApiJson<PutSecretBody>,
) -> ApiResult<Response> {
    let (secret, created) = store_sealed(&state, &caller, &name, &req).await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, axum::Json(SecretView::from(&secret))).into_response())
}

/// Stores a value sealed by the caller for `name` (the API's `PUT` and the secrets page's form):
/// checks name, box shape, scope and description, stores it if `base_version` and `key_version`
/// are current, audits the change and tells the linked proxies. `true` when it was created.
pub(crate) async fn store_sealed(
    state: &AppState,
    caller: &OrgCaller,
    name: &str,
    req: &PutSecretBody,
) -> ApiResult<(Secret, bool)> {
    check_name(name)?;
    check_sealed("the sealed value", &req.sealed, MAX_SEALED_BYTES)?;
    let services = check_services(&req.services)?;
    super::devices::check_labels(&req.labels).map_err(ApiError::bad_request)?;
    let description = req.description.trim();
    check_description(description)?;
    let (secret, created) = state
        .store
        .put_secret(&PutSecret {
            org_id: &caller.org.id,
            name,
            base_version: req.base_version,
            key_version: req.key_version,
            sealed: &req.sealed,
            services: &services,
            labels: &req.labels,
            description,
            user_id: &caller.caller.user.id,
        })
        .await?
        .map_err(refusal)?;
    caller
        .record(
            state,
            if created {
                "secret.created"
            } else {
                "secret.updated"
            },
            &secret.name,
            serde_json::json!({"version": secret.version, "key_version": secret.key_version,
                               "services": secret.services, "labels": secret.labels}),
        )
        .await?;
    crate::link::secrets_changed(state, &caller.org.id).await;
    Ok((secret, created))
}

#[utoipa::path(delete, path = "/api/v1/orgs/{org}/secrets/{name}", tag = "secrets",
    params(("org" = String, Path, description = "Organisation id or slug"), ("name" = String, Path, description = "Secret name")),
    responses((status = 204, description = "Removed; linked proxies drop it"), (status = 404, body = super::error::ErrorBody)))]
async fn delete_secret(
    State(state): State<AppState>,
    caller: OrgCaller,
    Path((_, name)): Path<(String, String)>,
) -> ApiResult<Response> {
    remove_secret(&state, &caller, &name).await?;
    Ok(super::no_content())
}

/// Removes the secret `name` (the API's `DELETE` and the secrets page's form), audits it and
/// tells the linked proxies to drop it.
pub(crate) async fn remove_secret(
    state: &AppState,
    caller: &OrgCaller,
    name: &str,
) -> ApiResult<()> {
    if !valid_secret_name(name) {
        return Err(ApiError::not_found("secret"));
    }
    let Some(gone) = state.store.delete_secret(&caller.org.id, name).await? else {
        return Err(ApiError::not_found("secret"));
    };
    caller
        .record(
            state,
            "secret.deleted",
            &gone.name,
            serde_json::json!({"version": gone.version}),
        )
        .await?;
    crate::link::secrets_changed(state, &caller.org.id).await;
    Ok(())
}

/// The OpenAPI fragment of this module.
#[derive(utoipa::OpenApi)]
#[openapi(
    paths(
        list_secrets,
        sealed_secrets,
        key_status,
        create_key,
        grant_wraps,
        start_verification,
        get_verification,
        list_custodians,
        create_custodian,
        revoke_custodian,
        get_secret,
        put_secret,
        delete_secret
    ),
    components(schemas(
        SealedBoxDoc,
        SecretView,
        SecretPage,
        SealedSecretView,
        SealedSecrets,
        RecipientView,
        WrapView,
        KeyVersionView,
        KeyStatusView,
        WrapBody,
        ResealedSecret,
        NewKeyBody,
        GrantBody,
        VerificationStarted,
        VerificationDevice,
        VerificationView,
        CustodianView,
        CustodianList,
        NewCustodian,
        PutSecretBody
    ))
)]
pub struct Doc;

#[cfg(test)]
mod tests {
    use super::*;

    fn boxed(enc_len: usize, ct_len: usize) -> SealedBox {
        SealedBox {
            alg: SEAL_ALG.to_string(),
            enc: STANDARD.encode(vec![1u8; enc_len]),
            ct: STANDARD.encode(vec![2u8; ct_len]),
        }
    }

    #[test]
    fn sealed_boxes_are_checked_for_shape() {
        assert!(check_sealed("v", &boxed(32, 17), MAX_SEALED_BYTES).is_ok());
        assert!(check_sealed("v", &boxed(31, 17), MAX_SEALED_BYTES).is_err());
        assert!(check_sealed("v", &boxed(32, 16), MAX_SEALED_BYTES).is_err());
        assert!(check_sealed("v", &boxed(32, MAX_SEALED_BYTES + 1), MAX_SEALED_BYTES).is_err());
        assert!(check_wrapped("device:x", &boxed(32, 48)).is_ok());
        assert!(check_wrapped("device:x", &boxed(32, 49)).is_err());
        let mut other = boxed(32, 20);
        other.alg = "rsa".into();
        assert!(check_sealed("v", &other, MAX_SEALED_BYTES).is_err());
    }

    #[test]
    fn services_are_deduplicated_and_checked() {
        let s = check_services(&["git".into(), "db".into(), "git".into()]).expect("ok");
        assert_eq!(s, ["db", "git"]);
        assert!(check_services(&["a/b".into()]).is_err());
    }
}
