//! The secrets pages: an organisation's secrets as metadata (never a value: the control plane
//! has none), the state of its secrets key, one secret's page, and the forms that set, rotate
//! and delete a secret.
//!
//! A value is sealed in the browser: `static/secrets.js` seals what was typed to the
//! organisation's public key (RFC 9180 HPKE base mode with WebCrypto's X25519, HMAC-SHA256 and
//! AES-256-GCM, exactly `flowlink_proto::sealed::seal` for `SealContext::Secret`), empties the
//! value field and submits only the sealed box with the context it was sealed for. The form
//! route takes nothing else: a form arriving with the value field filled in (no script, or a
//! hand-made request) is refused before any other field is looked at, and never echoed.
//! Without WebCrypto X25519 the form stays disabled and the page gives the CLI command instead.
//!
//! The control plane cannot open a box, so it cannot check what a box was really sealed for;
//! it checks the context the page declares (this org, this name, the next version, the active
//! key version) and refuses a box declared for anything else. A box whose declaration lies does
//! not open on any device (the context is bound into the seal), so it fails closed there.
//!
//! What this protects: with the script running, a value typed into the page never reaches the
//! control plane at all, so it is in none of its memory, database, backups or logs (one posted
//! in plain text regardless is refused, and never stored, logged or echoed). The page, its
//! script and the public key are served by the control plane itself, so a control plane
//! altered to serve another script or key could capture what is typed next; the CLI, which
//! seals with code on the admin's own machine, does not depend on that.
//!
//! Who sees what: the pages are `Access::Org(SecretsRead)` like the API's reads; the forms are
//! shown only to holders of `secrets:write`, and their POST routes are
//! `Access::Org(SecretsWrite)`, so anyone else's direct POST is refused by the route table.
//! Storing and removing go through [`crate::api::secrets::store_sealed`] and
//! [`crate::api::secrets::remove_secret`], the API's own (checks, audit, link push).

use std::collections::{BTreeMap, HashMap};

use askama::Template;
use axum::extract::rejection::{FormRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{Method, StatusCode};
use flowlink_proto::sealed::{SEAL_ALG, SealedBox};
use serde::Deserialize;

use super::layout::when;
use super::{Chrome, PageResult, render, see_other};
use crate::api::auth::rfc3339;
use crate::api::page::{PageQuery, finish};
use crate::api::secrets::{
    KeyStatusView, PutSecretBody, find_secret, remove_secret, status_view, store_sealed,
};
use crate::api::{Access, ApiError, ApiRoute, AppState, OrgCaller};
use crate::auth::Permission;
use crate::store::Secret;

/// Secrets per page of the list.
pub const LIST_PAGE: u32 = 100;

/// The routes of the secrets pages.
pub fn routes() -> Vec<ApiRoute> {
    use Permission::{SecretsRead, SecretsWrite};
    vec![
        ApiRoute::new(
            Method::GET,
            "/ui/orgs/{org}/secrets",
            Access::Org(SecretsRead),
            list,
        ),
        ApiRoute::new(
            Method::POST,
            "/ui/orgs/{org}/secrets",
            Access::Org(SecretsWrite),
            set_value,
        ),
        ApiRoute::new(
            Method::GET,
            "/ui/orgs/{org}/secrets/{name}",
            Access::Org(SecretsRead),
            one,
        ),
        ApiRoute::new(
            Method::POST,
            "/ui/orgs/{org}/secrets/{name}/delete",
            Access::Org(SecretsWrite),
            delete,
        ),
    ]
}

/// What the sealing form needs to seal: the org id, the active key and its version.
struct SealTarget {
    org_id: String,
    public_key: String,
    key_version: u32,
}

/// The organisation's key in words.
struct KeyFacts {
    /// Set up and usable for new values.
    ready: bool,
    active_version: String,
    rotation_required: String,
    /// Devices holding the active key that proved it / all active devices.
    devices_proved: usize,
    devices_total: usize,
    /// Recipients (devices and custodians) without a wrap of the active key.
    lacking: Vec<String>,
    recipients: Vec<RecipientLine>,
}

/// One holder of the active key.
struct RecipientLine {
    kind: String,
    name: String,
    proved: String,
}

fn key_facts(status: &KeyStatusView) -> (KeyFacts, Option<SealTarget>) {
    let active = status
        .active_version
        .and_then(|v| status.versions.iter().find(|k| k.version == v));
    let devices_total = status
        .recipients
        .iter()
        .filter(|r| r.kind == "device")
        .count();
    let mut recipients = Vec::new();
    let mut devices_proved = 0;
    if let Some(k) = active {
        for w in k.recipients.iter().filter(|w| !w.revoked) {
            if w.kind == "device" && w.confirmed_at.is_some() {
                devices_proved += 1;
            }
            recipients.push(RecipientLine {
                kind: w.kind.clone(),
                name: if w.name.is_empty() {
                    w.id.clone()
                } else {
                    w.name.clone()
                },
                proved: match (&w.confirmed_at, w.kind.as_str()) {
                    (Some(at), _) => format!("proved {}", when(at)),
                    (None, "device") => "not proved yet".to_string(),
                    (None, _) => String::new(),
                },
            });
        }
    }
    let facts = KeyFacts {
        ready: active.is_some(),
        active_version: status
            .active_version
            .map(|v| v.to_string())
            .unwrap_or_default(),
        rotation_required: status.rotation_required.clone().unwrap_or_default(),
        devices_proved,
        devices_total,
        lacking: status
            .lacking
            .iter()
            .map(|r| format!("{} {}", r.kind, r.name))
            .collect(),
        recipients,
    };
    let target = active.map(|k| SealTarget {
        org_id: status.org_id.clone(),
        public_key: k.public_key.clone(),
        key_version: k.version,
    });
    (facts, target)
}

/// The set form of a page: where the browser seals to, and what the form is filled in with.
struct FormView {
    org_id: String,
    public_key: String,
    key_version: u32,
    /// 0 for a new secret, else its current version (the value is sealed for the next).
    base_version: u64,
    /// Empty on the list page (a new secret); the secret's name on its own page.
    name: String,
    services: String,
    labels: String,
    description: String,
    heading: &'static str,
    button: &'static str,
}

impl FormView {
    fn new(target: SealTarget, s: Option<&SecretRow>) -> FormView {
        FormView {
            org_id: target.org_id,
            public_key: target.public_key,
            key_version: target.key_version,
            base_version: s.map_or(0, |s| s.version),
            name: s.map(|s| s.name.clone()).unwrap_or_default(),
            services: s.map(|s| s.services_field.clone()).unwrap_or_default(),
            labels: s.map(|s| s.labels_field.clone()).unwrap_or_default(),
            description: s.map(|s| s.description.clone()).unwrap_or_default(),
            heading: if s.is_some() {
                "Rotate: set a new value"
            } else {
                "Add a secret"
            },
            button: if s.is_some() {
                "Seal and save the new value"
            } else {
                "Seal and save"
            },
        }
    }
}

/// One secret's metadata as the pages show it.
struct SecretRow {
    name: String,
    version: u64,
    key_version: u32,
    services: String,
    labels: String,
    description: String,
    created_by: String,
    created_at: String,
    changed_by: String,
    changed_at: String,
    last_used: String,
    last_used_by: String,
    /// The comma-separated forms the set form is filled in with.
    services_field: String,
    labels_field: String,
}

/// People's e-mail addresses and devices' names, looked up once per page.
#[derive(Default)]
struct Names {
    users: HashMap<String, String>,
    devices: HashMap<String, String>,
}

impl Names {
    async fn user(&mut self, state: &AppState, id: &str) -> Result<String, ApiError> {
        if let Some(n) = self.users.get(id) {
            return Ok(n.clone());
        }
        let name = state
            .store
            .user_by_id(id)
            .await?
            .map_or_else(|| id.to_string(), |u| u.email);
        self.users.insert(id.to_string(), name.clone());
        Ok(name)
    }

    async fn device(
        &mut self,
        state: &AppState,
        org_id: &str,
        id: &str,
    ) -> Result<String, ApiError> {
        if let Some(n) = self.devices.get(id) {
            return Ok(n.clone());
        }
        let name = state
            .store
            .device(org_id, id)
            .await?
            .map_or_else(|| id.to_string(), |d| d.name);
        self.devices.insert(id.to_string(), name.clone());
        Ok(name)
    }
}

fn labels_text(labels: &BTreeMap<String, String>, sep: &str) -> String {
    labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(sep)
}

async fn row(state: &AppState, names: &mut Names, s: &Secret) -> Result<SecretRow, ApiError> {
    let last_used_by = match &s.last_used_device {
        Some(d) => names.device(state, &s.org_id, d).await?,
        None => String::new(),
    };
    Ok(SecretRow {
        name: s.name.clone(),
        version: s.version,
        key_version: s.key_version,
        services: if s.services.is_empty() {
            "every service".to_string()
        } else {
            s.services.join(", ")
        },
        labels: if s.labels.is_empty() {
            "any device".to_string()
        } else {
            labels_text(&s.labels, ", ")
        },
        description: s.description.clone(),
        created_by: names.user(state, &s.created_by).await?,
        created_at: when(&rfc3339(s.created_at)),
        changed_by: names.user(state, &s.updated_by).await?,
        changed_at: when(&rfc3339(s.updated_at)),
        last_used: s
            .last_used_at
            .map(|t| when(&rfc3339(t)))
            .unwrap_or_default(),
        last_used_by,
        services_field: s.services.join(", "),
        labels_field: labels_text(&s.labels, ", "),
    })
}

/// The CLI commands the pages show, with this server's URL and the org's slug.
struct Commands {
    /// `flowlink-control secrets --server … --org …`.
    base: String,
}

impl Commands {
    fn new(state: &AppState, org_slug: &str) -> Commands {
        Commands {
            base: format!(
                "flowlink-control secrets --server {} --org {org_slug}",
                state.config.public_url.trim_end_matches('/')
            ),
        }
    }
}

#[derive(Template)]
#[template(path = "secrets.html")]
struct ListPage {
    chrome: Chrome,
    org_slug: String,
    org_name: String,
    rows: Vec<SecretRow>,
    next_cursor: Option<String>,
    key: KeyFacts,
    /// Present when the caller may write and the key is set up: the form is shown.
    form: Option<FormView>,
    can_write: bool,
    cli: Commands,
}

/// `?cursor=` of the list.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    cursor: Option<String>,
}

async fn list(
    State(state): State<AppState>,
    caller: OrgCaller,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> PageResult {
    let Query(q) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let page = PageQuery {
        cursor: q.cursor,
        limit: Some(LIST_PAGE),
    };
    let limit = page.limit()?;
    let secrets = state
        .store
        .list_secrets(&caller.org.id, page.key()?.as_deref(), i64::from(limit) + 1)
        .await?;
    let (secrets, next_cursor) = finish(secrets, limit, |s| s.name.clone());
    let mut names = Names::default();
    let mut rows = Vec::with_capacity(secrets.len());
    for s in &secrets {
        rows.push(row(&state, &mut names, s).await?);
    }
    let (key, target) = key_facts(&status_view(&state, &caller.org.id).await?);
    let can_write = caller.permissions.contains(Permission::SecretsWrite);
    render(&ListPage {
        chrome: Chrome::new(&state, &caller.caller, "Secrets"),
        org_slug: caller.org.slug.clone(),
        org_name: caller.org.name.clone(),
        rows,
        next_cursor,
        key,
        form: target.filter(|_| can_write).map(|t| FormView::new(t, None)),
        can_write,
        cli: Commands::new(&state, &caller.org.slug),
    })
}

/// Changes of one secret shown on its page, newest first.
pub const HISTORY_LIMIT: u32 = 50;

/// One change of a secret, from the audit trail.
struct Change {
    what: &'static str,
    version: String,
    key_version: String,
    by: String,
    at: String,
}

/// The secret's changes, newest first, from the audit trail (the store keeps only the current
/// sealed value). Events of another secret whose name merely contains this one are dropped.
async fn history(
    state: &AppState,
    names: &mut Names,
    org_id: &str,
    name: &str,
) -> Result<Vec<Change>, ApiError> {
    let events = state
        .store
        .list_audit(
            org_id,
            &crate::store::AuditFilter {
                kind: Some("secret.".to_string()),
                text: Some(name.to_string()),
                limit: HISTORY_LIMIT,
                ..Default::default()
            },
        )
        .await?;
    let mut changes = Vec::new();
    for e in events.iter().filter(|e| e.event.target == name) {
        let what = match e.event.kind.as_str() {
            "secret.created" => "created",
            "secret.updated" => "new value",
            "secret.deleted" => "deleted",
            _ => continue,
        };
        let detail = &e.event.detail;
        let by = match e.event.actor_kind.as_str() {
            "user" => names.user(state, &e.event.actor_id).await?,
            kind => format!("{kind} {}", e.event.actor_id),
        };
        changes.push(Change {
            what,
            version: detail["version"]
                .as_u64()
                .map(|v| v.to_string())
                .unwrap_or_default(),
            key_version: detail["key_version"]
                .as_u64()
                .map(|v| v.to_string())
                .unwrap_or_default(),
            by,
            at: when(&rfc3339(e.occurred_at)),
        });
    }
    Ok(changes)
}

#[derive(Template)]
#[template(path = "secrets_one.html")]
struct OnePage {
    chrome: Chrome,
    org_slug: String,
    org_name: String,
    s: SecretRow,
    key: KeyFacts,
    form: Option<FormView>,
    can_write: bool,
    /// The value is sealed to an older key than the active one (a rotation re-seals it).
    old_key: bool,
    /// Its changes from the audit trail, for those who may read it.
    changes: Option<Vec<Change>>,
    cli: Commands,
}

async fn one(
    State(state): State<AppState>,
    caller: OrgCaller,
    Path((_, name)): Path<(String, String)>,
) -> PageResult {
    let secret = find_secret(&state, &caller.org.id, &name).await?;
    let mut names = Names::default();
    let s = row(&state, &mut names, &secret).await?;
    // The audit trail has its own permission; without it the page shows no history.
    let changes = if caller.permissions.contains(Permission::AuditRead) {
        Some(history(&state, &mut names, &caller.org.id, &secret.name).await?)
    } else {
        None
    };
    let (key, target) = key_facts(&status_view(&state, &caller.org.id).await?);
    let can_write = caller.permissions.contains(Permission::SecretsWrite);
    let old_key = target
        .as_ref()
        .is_some_and(|t| t.key_version != secret.key_version);
    let form = target
        .filter(|_| can_write)
        .map(|t| FormView::new(t, Some(&s)));
    render(&OnePage {
        chrome: Chrome::new(&state, &caller.caller, &secret.name),
        org_slug: caller.org.slug.clone(),
        org_name: caller.org.name.clone(),
        s,
        key,
        form,
        can_write,
        old_key,
        changes,
        cli: Commands::new(&state, &caller.org.slug),
    })
}

/// The set form as it arrives: every field text, so that nothing about a value can end up in
/// a deserialisation error.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SetForm {
    #[allow(dead_code)]
    csrf_token: Option<String>,
    #[serde(default)]
    name: String,
    #[serde(default)]
    base_version: String,
    #[serde(default)]
    key_version: String,
    #[serde(default)]
    services: String,
    #[serde(default)]
    labels: String,
    #[serde(default)]
    description: String,
    /// The plaintext field: the page's script empties it before submitting; filled, the form is
    /// refused.
    #[serde(default)]
    value: String,
    /// The sealed envelope ([`Envelope`] as JSON), set by the page's script.
    #[serde(default)]
    sealed: String,
}

impl std::fmt::Debug for SetForm {
    // Never the value, even in a debug print.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SetForm")
            .field("name", &self.name)
            .field("base_version", &self.base_version)
            .field("key_version", &self.key_version)
            .field("value_given", &!self.value.is_empty())
            .finish_non_exhaustive()
    }
}

/// What `secrets.js` submits: the box, and the context it sealed it for. Numbers are decimal
/// text, as in the context encoding (a browser has no 64-bit integers in JSON).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Envelope {
    alg: String,
    enc: String,
    ct: String,
    org_id: String,
    name: String,
    version: String,
    key_version: String,
}

fn number<T: std::str::FromStr>(what: &str, text: &str) -> Result<T, ApiError> {
    let t = text.trim();
    // Decimal digits only, as the context encoding writes them: no sign, no spaces inside.
    if t.is_empty() || !t.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ApiError::bad_request(format!(
            "{what} must be a whole number; reload the page and try again"
        )));
    }
    t.parse().map_err(|_| {
        ApiError::bad_request(format!(
            "{what} is out of range; reload the page and try again"
        ))
    })
}

/// `db, git` or `db git` → the services.
fn services_of(text: &str) -> Vec<String> {
    text.split(|c: char| c == ',' || c.is_whitespace())
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

/// `env=prod, team=data` → the labels; a piece without `=` or a key given twice is refused.
fn labels_of(text: &str) -> Result<BTreeMap<String, String>, ApiError> {
    let mut labels = BTreeMap::new();
    for piece in text
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter(|s| !s.is_empty())
    {
        let Some((k, v)) = piece.split_once('=') else {
            return Err(ApiError::bad_request(format!(
                "device label `{}` needs the form key=value (e.g. env=prod)",
                piece.chars().take(80).collect::<String>()
            )));
        };
        if labels.insert(k.to_string(), v.to_string()).is_some() {
            return Err(ApiError::bad_request(format!(
                "device label `{}` is given twice; give each key once",
                k.chars().take(80).collect::<String>()
            )));
        }
    }
    Ok(labels)
}

impl SetForm {
    /// The API's request, once the form is known to carry a sealed box for exactly this org,
    /// name, next version and key version, and no plaintext.
    fn request(&self, org_id: &str) -> Result<(String, PutSecretBody), ApiError> {
        if !self.value.is_empty() {
            return Err(ApiError::bad_request(
                "This form arrived with the secret's value in plain text, so it was refused and \
                 nothing was stored. The page seals the value in your browser before sending it; \
                 that needs JavaScript and a browser with X25519 in WebCrypto, over HTTPS. \
                 Otherwise use the `flowlink-control secrets put` command shown on the page.",
            ));
        }
        if self.sealed.trim().is_empty() {
            return Err(ApiError::bad_request(
                "No sealed value arrived: the page's script seals the value before sending it. \
                 Reload the page and try again, or use the `flowlink-control secrets put` command \
                 shown on the page.",
            ));
        }
        let name = self.name.trim().to_string();
        let base_version: u64 = number("the version the form was made for", &self.base_version)?;
        let key_version: u32 = number("the key version", &self.key_version)?;
        let envelope: Envelope = serde_json::from_str(&self.sealed).map_err(|e| {
            ApiError::bad_request(format!(
                "the sealed value is not what the page's script sends ({e}); reload the page and try again"
            ))
        })?;
        let sealed_version: u64 = number("the sealed value's version", &envelope.version)?;
        let sealed_key: u32 = number("the sealed value's key version", &envelope.key_version)?;
        let next = base_version.checked_add(1).ok_or_else(|| {
            ApiError::bad_request("the version is out of range; reload the page and try again")
        })?;
        if envelope.org_id != org_id {
            return Err(ApiError::bad_request(
                "the value was sealed for another organisation, so it could never be opened here; nothing was stored. Reload this organisation's page and enter it again",
            ));
        }
        if envelope.name != name {
            return Err(ApiError::bad_request(format!(
                "the value was sealed for the secret `{}`, not `{}`, so it could never be opened as this one; nothing was stored. Enter it again",
                envelope.name.chars().take(140).collect::<String>(),
                name.chars().take(140).collect::<String>()
            )));
        }
        if sealed_version != next || sealed_key != key_version {
            return Err(ApiError::bad_request(format!(
                "the value was sealed for version {sealed_version} under key version {sealed_key}, but this form sets version {next} under key version {key_version}; nothing was stored. Reload the page and enter it again"
            )));
        }
        if envelope.alg != SEAL_ALG {
            return Err(ApiError::bad_request(format!(
                "the value was sealed with `{}`; this server takes `{SEAL_ALG}`. Reload the page (its script may be out of date) and try again",
                envelope.alg.chars().take(60).collect::<String>()
            )));
        }
        Ok((
            name,
            PutSecretBody {
                base_version,
                key_version,
                sealed: SealedBox {
                    alg: envelope.alg,
                    enc: envelope.enc,
                    ct: envelope.ct,
                },
                services: services_of(&self.services),
                labels: labels_of(&self.labels)?,
                description: self.description.clone(),
            },
        ))
    }
}

/// Form rejections in words, without the body (it may hold a value).
fn form_error(e: &FormRejection) -> ApiError {
    match e {
        FormRejection::FailedToDeserializeForm(_)
        | FormRejection::FailedToDeserializeFormBody(_) => ApiError::bad_request(
            "this form has fields the secrets page does not send; reload the page and try again",
        ),
        other => ApiError::bad_request(other.body_text()),
    }
}

async fn set_value(
    State(state): State<AppState>,
    caller: OrgCaller,
    form: Result<axum::Form<SetForm>, FormRejection>,
) -> PageResult {
    let axum::Form(form) = form.map_err(|e| form_error(&e))?;
    let (name, request) = form.request(&caller.org.id)?;
    let (secret, _) = match store_sealed(&state, &caller, &name, &request).await {
        Ok(stored) => stored,
        Err(e) if e.status == StatusCode::CONFLICT => {
            return Err(conflict_in_words(&state, &caller, &name, request.base_version).await);
        }
        Err(e) => return Err(e),
    };
    Ok(see_other(
        &state,
        &format!("/ui/orgs/{}/secrets/{}", caller.org.slug, secret.name),
    ))
}

/// A refused write (the secret or the key changed since the page was loaded) in the page's
/// words: the API's message speaks of `base_version`, which a person never saw.
async fn conflict_in_words(
    state: &AppState,
    caller: &OrgCaller,
    name: &str,
    base_version: u64,
) -> ApiError {
    let exists = matches!(state.store.secret(&caller.org.id, name).await, Ok(Some(_)));
    let message = if base_version == 0 && exists {
        format!(
            "a secret named {name} already exists, so nothing was stored; give it a new value on its own page, {}/ui/orgs/{}/secrets/{name}",
            super::base_path(state),
            caller.org.slug
        )
    } else {
        format!(
            "nothing was stored: {name} or the organisation's key changed after this page was loaded; reload the page and enter the value again"
        )
    };
    ApiError::conflict(message)
}

/// The delete form: `confirm=yes` is the ticked confirmation box.
#[derive(Debug, Deserialize)]
struct DeleteForm {
    #[allow(dead_code)]
    csrf_token: Option<String>,
    #[serde(default)]
    confirm: String,
}

async fn delete(
    State(state): State<AppState>,
    caller: OrgCaller,
    Path((_, name)): Path<(String, String)>,
    form: Result<axum::Form<DeleteForm>, FormRejection>,
) -> PageResult {
    let axum::Form(form) = form.map_err(|e| ApiError::bad_request(e.body_text()))?;
    if form.confirm != "yes" {
        return Err(ApiError::bad_request(
            "tick the box confirming that proxies lose this secret, then delete it again",
        ));
    }
    remove_secret(&state, &caller, &name).await?;
    Ok(see_other(
        &state,
        &format!("/ui/orgs/{}/secrets", caller.org.slug),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn form(value: &str, sealed: &str) -> SetForm {
        SetForm {
            csrf_token: None,
            name: "GITHUB_TOKEN".into(),
            base_version: "2".into(),
            key_version: "1".into(),
            services: "git, db".into(),
            labels: "env=prod team=data".into(),
            description: String::new(),
            value: value.into(),
            sealed: sealed.into(),
        }
    }

    fn envelope(org: &str, name: &str, version: &str) -> String {
        serde_json::json!({"alg": SEAL_ALG, "enc": "e", "ct": "c", "org_id": org,
                           "name": name, "version": version, "key_version": "1"})
        .to_string()
    }

    #[test]
    fn a_plaintext_value_is_refused_without_being_echoed() {
        let e = form("hunter2", &envelope("org_1", "GITHUB_TOKEN", "3"))
            .request("org_1")
            .expect_err("refused");
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        assert!(!e.message.contains("hunter2"), "{}", e.message);
        assert!(!format!("{:?}", form("hunter2", "")).contains("hunter2"));
    }

    #[test]
    fn the_declared_context_must_be_this_one() {
        let (name, body) = form("", &envelope("org_1", "GITHUB_TOKEN", "3"))
            .request("org_1")
            .expect("accepted");
        assert_eq!(name, "GITHUB_TOKEN");
        assert_eq!((body.base_version, body.key_version), (2, 1));
        assert_eq!(body.services, ["git", "db"]);
        assert_eq!(body.labels.get("team").map(String::as_str), Some("data"));
        for (org, name, version) in [
            ("org_2", "GITHUB_TOKEN", "3"),
            ("org_1", "OTHER", "3"),
            ("org_1", "GITHUB_TOKEN", "2"),
            ("org_1", "GITHUB_TOKEN", "+3"),
        ] {
            assert!(
                form("", &envelope(org, name, version))
                    .request("org_1")
                    .is_err(),
                "{org} {name} {version}"
            );
        }
        assert!(form("", "").request("org_1").is_err(), "no envelope");
    }

    #[test]
    fn labels_need_key_and_value() {
        assert!(labels_of("env").is_err());
        assert!(labels_of("a=1, a=2").is_err());
        assert_eq!(labels_of("").expect("none").len(), 0);
    }
}
