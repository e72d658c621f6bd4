//! Zero-trust secrets: what the control plane keeps of them, which is never a value nor a key
//! that opens one.
//!
//! - `org_secret_keys`: the organisation's X25519 **public** key per version (`active`,
//!   `retiring` after a rotation, `retired` once every active device proved it holds the new
//!   one), and `rotation_required` with the reason (a revoked device or custodian held the key).
//! - `org_key_wraps`: the organisation's private key sealed to one recipient's X25519 key
//!   (`device:<id>` or `custodian:<id>`); `confirmed_at` once the device proved possession.
//! - `secret_custodians`: people's own X25519 public keys (their private keys stay in a
//!   passphrase-encrypted file on their machine).
//! - `secrets`: one value per name, sealed on the admin's side to the org public key and bound
//!   to (org, name, version, key version); scope (services, labels) and metadata in the clear.
//! - `key_challenges`: key-possession challenges and their outcome.
//!
//! Every change that depends on the active key starts its transaction with a write to that
//! key's row (`UPDATE … SET state = state`): PostgreSQL locks the row, SQLite takes its write
//! lock, so a put and a rotation never interleave — one of them finds the key changed and is
//! refused with a conflict instead of sealing a value to a key that is no longer active.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use flowlink_proto::link::{SealedSecret, SecretsPush, WrappedOrgKey};
use flowlink_proto::sealed::SealedBox;
use sqlx::any::AnyRow;
use sqlx::{Any, AssertSqlSafe, Row, Transaction};

use super::devices::insert_audit;
use super::{AuditEvent, Device, Labels, Store, StoreError, new_id, now_us};
use crate::auth::secret::{constant_time_eq, sha256_hex};

/// Most secrets one organisation may hold.
pub const MAX_SECRETS_PER_ORG: i64 = 1000;

/// A version of an organisation's secrets key (public half only).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretsKeyVersion {
    /// The organisation.
    pub org_id: String,
    /// 1, 2, …
    pub version: u32,
    /// X25519 public key.
    pub public_key: [u8; 32],
    /// `active`, `retiring` or `retired`.
    pub state: String,
    /// Why the key must be rotated, when it must.
    pub rotation_required: Option<String>,
    /// The user who set it up or rotated to it.
    pub created_by: String,
    /// Unix µs.
    pub created_at: i64,
    /// Unix µs.
    pub retired_at: Option<i64>,
}

/// The organisation's private key of one version, sealed to one recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyWrap {
    /// The key version.
    pub key_version: u32,
    /// `device:<id>` or `custodian:<id>`.
    pub recipient: String,
    /// The sealed private key.
    pub wrapped: SealedBox,
    /// Unix µs.
    pub created_at: i64,
    /// When the device proved it holds this version.
    pub confirmed_at: Option<i64>,
}

/// A person's key that may hold the organisation's private key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Custodian {
    /// Id (UUIDv7).
    pub id: String,
    /// The organisation.
    pub org_id: String,
    /// The person it belongs to.
    pub user_id: String,
    /// A name for people ("laptop", "break-glass").
    pub name: String,
    /// X25519 public key.
    pub public_key: [u8; 32],
    /// Unix µs.
    pub created_at: i64,
    /// Unix µs.
    pub revoked_at: Option<i64>,
}

/// Someone or something the organisation's private key may be wrapped to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recipient {
    /// `device` or `custodian`.
    pub kind: &'static str,
    /// The device or custodian id.
    pub id: String,
    /// Its name.
    pub name: String,
    /// Its X25519 public key.
    pub public_key: [u8; 32],
    /// Unix µs of revocation.
    pub revoked_at: Option<i64>,
}

impl Recipient {
    /// `device:<id>` or `custodian:<id>`, the form in wraps and seal contexts.
    pub fn recipient(&self) -> String {
        format!("{}:{}", self.kind, self.id)
    }
}

/// A secret as stored: the sealed value and its metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Secret {
    /// The organisation.
    pub org_id: String,
    /// `^[A-Z_][A-Z0-9_]{0,127}$`.
    pub name: String,
    /// 1, then +1 at each new value.
    pub version: u64,
    /// The org key version it is sealed to.
    pub key_version: u32,
    /// The sealed value.
    pub sealed: SealedBox,
    /// Services that may receive it (empty: every service).
    pub services: Vec<String>,
    /// Labels a device must carry (all of them) to receive it.
    pub labels: Labels,
    /// For people.
    pub description: String,
    /// User id.
    pub created_by: String,
    /// Unix µs.
    pub created_at: i64,
    /// User id.
    pub updated_by: String,
    /// Unix µs.
    pub updated_at: i64,
    /// Last reported use by a proxy.
    pub last_used_at: Option<i64>,
    /// The device that reported it.
    pub last_used_device: Option<String>,
}

impl Secret {
    /// Whether a link of a device with `labels` wrapping `service` may receive this secret.
    pub fn in_scope(&self, service: &str, labels: &Labels) -> bool {
        (self.services.is_empty() || self.services.iter().any(|s| s == service))
            && self.labels.iter().all(|(k, v)| labels.get(k) == Some(v))
    }
}

/// Why a secrets change was not made; the store is unchanged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretsRefusal {
    /// Something changed meanwhile, or the request does not match the current state (409).
    Conflict(String),
    /// The request is wrong in itself (400).
    Invalid(String),
    /// The thing named does not exist (404).
    NotFound(&'static str),
}

/// A new secret value (and metadata) to store.
#[derive(Debug, Clone)]
pub struct PutSecret<'a> {
    /// The organisation.
    pub org_id: &'a str,
    /// The name (checked by the caller).
    pub name: &'a str,
    /// The version the writer saw (0: the secret must not exist yet). The value was sealed for
    /// version `base_version + 1`.
    pub base_version: u64,
    /// The org key version the value was sealed to; must be the active one.
    pub key_version: u32,
    /// The sealed value.
    pub sealed: &'a SealedBox,
    /// Services (empty: every service).
    pub services: &'a [String],
    /// Labels.
    pub labels: &'a Labels,
    /// Description.
    pub description: &'a str,
    /// The writing user.
    pub user_id: &'a str,
}

/// A new version of the organisation's key: the first (set-up) or the next (rotation).
#[derive(Debug, Clone)]
pub struct NewSecretsKey<'a> {
    /// The organisation.
    pub org_id: &'a str,
    /// X25519 public key of the new version.
    pub public_key: [u8; 32],
    /// `None`: set-up (no key yet). `Some(n)`: rotation from the active version `n`.
    pub previous_version: Option<u32>,
    /// `(recipient, sealed private key)`.
    pub wraps: &'a [(String, SealedBox)],
    /// Rotation: every secret re-sealed to the new key, `(name, version, sealed)`.
    pub secrets: &'a [(String, u64, SealedBox)],
    /// The calling user (must be a live custodian).
    pub user_id: &'a str,
}

/// What a rotation or set-up did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyChange {
    /// The new version.
    pub key: SecretsKeyVersion,
    /// How many secrets were re-sealed.
    pub resealed: usize,
    /// Versions that became `retired` at once (no active device left to confirm).
    pub retired: Vec<u32>,
}

/// A key-possession challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChallengeRecord {
    /// Id (in the seal context).
    pub id: String,
    /// The organisation.
    pub org_id: String,
    /// The verification run, if part of one.
    pub verification_id: Option<String>,
    /// The device challenged.
    pub device_id: String,
    /// Its name, when the device still exists.
    pub device_name: Option<String>,
    /// The key version challenged.
    pub key_version: u32,
    /// Unix µs.
    pub created_at: i64,
    /// Unix µs.
    pub answered_at: Option<i64>,
    /// `proved`, `failed` or `offline`; `None` while pending.
    pub outcome: Option<String>,
    /// Why it failed.
    pub error: Option<String>,
}

/// What answering a challenge did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChallengeAnswer {
    /// The proof matched: the device holds the key version.
    pub proved: bool,
    /// Older versions retired because every active device now proved the active one.
    pub retired: Vec<u32>,
    /// The challenge had been answered already (by another link of the device): nothing was
    /// recorded.
    pub repeated: bool,
}

const KEY_COLUMNS: &str =
    "org_id, version, public_key, state, rotation_required, created_by, created_at, retired_at";
const SECRET_COLUMNS: &str = "org_id, name, version, key_version, sealed, services, labels, \
     description, created_by, created_at, updated_by, updated_at, last_used_at, last_used_device";
const CUSTODIAN_COLUMNS: &str = "id, org_id, user_id, name, public_key, created_at, revoked_at";

fn u32_of(v: i64, what: &str) -> Result<u32, StoreError> {
    u32::try_from(v).map_err(|_| StoreError::Corrupt(format!("{what} {v} is out of range")))
}

fn key32(row: &AnyRow, column: &str, what: &str) -> Result<[u8; 32], StoreError> {
    let bytes: Vec<u8> = row.try_get(column)?;
    bytes
        .as_slice()
        .try_into()
        .map_err(|_| StoreError::Corrupt(format!("{what} {column} is not 32 bytes")))
}

fn sealed_from(text: &str, what: &str) -> Result<SealedBox, StoreError> {
    serde_json::from_str(text).map_err(|e| StoreError::Corrupt(format!("{what}: {e}")))
}

/// The stored form of a sealed box (JSON).
pub fn sealed_text(sealed: &SealedBox) -> String {
    serde_json::to_string(sealed).unwrap_or_else(|_| "{}".to_string())
}

fn key_from(row: &AnyRow) -> Result<SecretsKeyVersion, StoreError> {
    Ok(SecretsKeyVersion {
        org_id: row.try_get("org_id")?,
        version: u32_of(row.try_get("version")?, "key version")?,
        public_key: key32(row, "public_key", "secrets key")?,
        state: row.try_get("state")?,
        rotation_required: row.try_get("rotation_required")?,
        created_by: row.try_get("created_by")?,
        created_at: row.try_get("created_at")?,
        retired_at: row.try_get("retired_at")?,
    })
}

fn secret_from(row: &AnyRow) -> Result<Secret, StoreError> {
    let sealed: String = row.try_get("sealed")?;
    let services: String = row.try_get("services")?;
    let labels: String = row.try_get("labels")?;
    let version: i64 = row.try_get("version")?;
    Ok(Secret {
        org_id: row.try_get("org_id")?,
        name: row.try_get("name")?,
        version: u64::try_from(version)
            .map_err(|_| StoreError::Corrupt(format!("secret version {version}")))?,
        key_version: u32_of(row.try_get("key_version")?, "secret key version")?,
        sealed: sealed_from(&sealed, "sealed secret")?,
        services: serde_json::from_str(&services)
            .map_err(|e| StoreError::Corrupt(format!("secret services: {e}")))?,
        labels: serde_json::from_str(&labels)
            .map_err(|e| StoreError::Corrupt(format!("secret labels: {e}")))?,
        description: row.try_get("description")?,
        created_by: row.try_get("created_by")?,
        created_at: row.try_get("created_at")?,
        updated_by: row.try_get("updated_by")?,
        updated_at: row.try_get("updated_at")?,
        last_used_at: row.try_get("last_used_at")?,
        last_used_device: row.try_get("last_used_device")?,
    })
}

fn custodian_from(row: &AnyRow) -> Result<Custodian, StoreError> {
    Ok(Custodian {
        id: row.try_get("id")?,
        org_id: row.try_get("org_id")?,
        user_id: row.try_get("user_id")?,
        name: row.try_get("name")?,
        public_key: key32(row, "public_key", "custodian")?,
        created_at: row.try_get("created_at")?,
        revoked_at: row.try_get("revoked_at")?,
    })
}

fn wrap_from(row: &AnyRow) -> Result<KeyWrap, StoreError> {
    let wrapped: String = row.try_get("wrapped")?;
    Ok(KeyWrap {
        key_version: u32_of(row.try_get("key_version")?, "wrap key version")?,
        recipient: row.try_get("recipient")?,
        wrapped: sealed_from(&wrapped, "key wrap")?,
        created_at: row.try_get("created_at")?,
        confirmed_at: row.try_get("confirmed_at")?,
    })
}

fn challenge_from(row: &AnyRow) -> Result<ChallengeRecord, StoreError> {
    Ok(ChallengeRecord {
        id: row.try_get("id")?,
        org_id: row.try_get("org_id")?,
        verification_id: row.try_get("verification_id")?,
        device_id: row.try_get("device_id")?,
        device_name: row.try_get("device_name")?,
        key_version: u32_of(row.try_get("key_version")?, "challenge key version")?,
        created_at: row.try_get("created_at")?,
        answered_at: row.try_get("answered_at")?,
        outcome: row.try_get("outcome")?,
        error: row.try_get("error")?,
    })
}

fn system_event(org_id: &str, kind: &str, target: &str, detail: serde_json::Value) -> AuditEvent {
    AuditEvent {
        org_id: Some(org_id.to_string()),
        kind: kind.to_string(),
        actor_kind: "system".to_string(),
        actor_id: "flowlink-control".to_string(),
        target: target.to_string(),
        outcome: "success".to_string(),
        ip: String::new(),
        detail,
    }
}

/// The live recipients of an organisation (inside a transaction): active devices and live
/// custodians, and also the revoked ones (so a request naming one is told so).
async fn recipients_in(
    tx: &mut Transaction<'_, Any>,
    org_id: &str,
) -> Result<Vec<Recipient>, StoreError> {
    let mut out = Vec::new();
    let rows = sqlx::query(
        "SELECT id, name, box_key, revoked_at FROM devices WHERE org_id = $1 ORDER BY id",
    )
    .bind(org_id)
    .fetch_all(&mut **tx)
    .await?;
    for row in &rows {
        out.push(Recipient {
            kind: "device",
            id: row.try_get("id")?,
            name: row.try_get("name")?,
            public_key: key32(row, "box_key", "device")?,
            revoked_at: row.try_get("revoked_at")?,
        });
    }
    let rows = sqlx::query(
        "SELECT id, name, public_key, revoked_at FROM secret_custodians WHERE org_id = $1 ORDER BY id",
    )
    .bind(org_id)
    .fetch_all(&mut **tx)
    .await?;
    for row in &rows {
        out.push(Recipient {
            kind: "custodian",
            id: row.try_get("id")?,
            name: row.try_get("name")?,
            public_key: key32(row, "public_key", "custodian")?,
            revoked_at: row.try_get("revoked_at")?,
        });
    }
    Ok(out)
}

/// Checks that each wrap names a live recipient of the organisation, once.
fn check_wrap_recipients(
    wraps: &[(String, SealedBox)],
    known: &HashMap<String, &Recipient>,
) -> Result<(), SecretsRefusal> {
    let mut seen = BTreeSet::new();
    for (recipient, _) in wraps {
        if !seen.insert(recipient.as_str()) {
            return Err(SecretsRefusal::Invalid(format!(
                "`{recipient}` is given twice; wrap the key once per recipient"
            )));
        }
        match known.get(recipient) {
            None => {
                return Err(SecretsRefusal::Invalid(format!(
                    "no device or custodian `{recipient}` in this organisation (recipients are `device:<id>` or `custodian:<id>`)"
                )));
            }
            Some(r) if r.revoked_at.is_some() => {
                return Err(SecretsRefusal::Conflict(format!(
                    "{} `{}` ({}) is revoked and may not receive the key; leave it out",
                    r.kind, r.name, r.id
                )));
            }
            Some(_) => {}
        }
    }
    Ok(())
}

async fn insert_wrap(
    tx: &mut Transaction<'_, Any>,
    org_id: &str,
    version: u32,
    recipient: &str,
    wrapped: &SealedBox,
    now: i64,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO org_key_wraps (org_id, key_version, recipient, wrapped, created_at) \
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(org_id)
    .bind(i64::from(version))
    .bind(recipient)
    .bind(sealed_text(wrapped))
    .bind(now)
    .execute(&mut **tx)
    .await
    .map_err(|e| StoreError::conflict_as(e, "a wrap of this key version for this recipient"))?;
    Ok(())
}

/// Marks the active key `rotation_required` when `recipient` holds a wrap of it, with the
/// reason appended to any earlier one, and records it in the audit trail. Returns whether it
/// did.
pub(super) async fn flag_rotation_in(
    tx: &mut Transaction<'_, Any>,
    org_id: &str,
    recipient: &str,
    reason: &str,
    detail: serde_json::Value,
) -> Result<bool, StoreError> {
    let row = sqlx::query(
        "UPDATE org_secret_keys SET rotation_required = COALESCE(rotation_required || '; ', '') || $1 \
         WHERE org_id = $2 AND state = 'active' AND EXISTS ( \
           SELECT 1 FROM org_key_wraps w WHERE w.org_id = org_secret_keys.org_id \
           AND w.key_version = org_secret_keys.version AND w.recipient = $3) \
         RETURNING version",
    )
    .bind(reason)
    .bind(org_id)
    .bind(recipient)
    .fetch_optional(&mut **tx)
    .await?;
    let Some(row) = row else {
        return Ok(false);
    };
    let version: i64 = row.try_get("version")?;
    let mut detail = detail;
    if let Some(map) = detail.as_object_mut() {
        map.insert("key_version".into(), version.into());
        map.insert("reason".into(), reason.into());
    }
    let event = AuditEvent {
        outcome: "failure".to_string(),
        ..system_event(
            org_id,
            "secret_key.rotation_required",
            &version.to_string(),
            detail,
        )
    };
    insert_audit(tx, &event, now_us()).await?;
    Ok(true)
}

/// Retires every `retiring` version when every active device of the organisation holds a
/// confirmed wrap of the active version; records each in the audit trail. Returns them.
async fn retire_in(tx: &mut Transaction<'_, Any>, org_id: &str) -> Result<Vec<u32>, StoreError> {
    let active: Option<i64> = sqlx::query_scalar(
        "SELECT version FROM org_secret_keys WHERE org_id = $1 AND state = 'active'",
    )
    .bind(org_id)
    .fetch_optional(&mut **tx)
    .await?;
    let Some(active) = active else {
        return Ok(Vec::new());
    };
    let unconfirmed: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM devices d WHERE d.org_id = $1 AND d.revoked_at IS NULL AND NOT EXISTS ( \
           SELECT 1 FROM org_key_wraps w WHERE w.org_id = d.org_id AND w.key_version = $2 \
           AND w.recipient = 'device:' || d.id AND w.confirmed_at IS NOT NULL)",
    )
    .bind(org_id)
    .bind(active)
    .fetch_one(&mut **tx)
    .await?;
    if unconfirmed > 0 {
        return Ok(Vec::new());
    }
    let now = now_us();
    let rows = sqlx::query(
        "UPDATE org_secret_keys SET state = 'retired', retired_at = $1 \
         WHERE org_id = $2 AND state = 'retiring' RETURNING version",
    )
    .bind(now)
    .bind(org_id)
    .fetch_all(&mut **tx)
    .await?;
    let mut retired = Vec::new();
    for row in &rows {
        let v = u32_of(row.try_get("version")?, "key version")?;
        let event = system_event(
            org_id,
            "secret_key.retired",
            &v.to_string(),
            serde_json::json!({"key_version": v, "active_version": active,
                "why": "every active device proved it holds the active version"}),
        );
        insert_audit(tx, &event, now).await?;
        retired.push(v);
    }
    retired.sort_unstable();
    Ok(retired)
}

impl Store {
    // -----------------------------------------------------------------------------------------
    // The organisation's key.

    /// Every version of the organisation's secrets key, oldest first.
    pub async fn secrets_keys(&self, org_id: &str) -> Result<Vec<SecretsKeyVersion>, StoreError> {
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT {KEY_COLUMNS} FROM org_secret_keys WHERE org_id = $1 ORDER BY version"
        )))
        .bind(org_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(key_from).collect()
    }

    /// The active version, if the organisation has set one up.
    pub async fn active_secrets_key(
        &self,
        org_id: &str,
    ) -> Result<Option<SecretsKeyVersion>, StoreError> {
        let row = sqlx::query(AssertSqlSafe(format!(
            "SELECT {KEY_COLUMNS} FROM org_secret_keys WHERE org_id = $1 AND state = 'active'"
        )))
        .bind(org_id)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(key_from).transpose()
    }

    /// Every wrap of every version, by version then recipient.
    pub async fn key_wraps(&self, org_id: &str) -> Result<Vec<KeyWrap>, StoreError> {
        let rows = sqlx::query(
            "SELECT key_version, recipient, wrapped, created_at, confirmed_at FROM org_key_wraps \
             WHERE org_id = $1 ORDER BY key_version, recipient",
        )
        .bind(org_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(wrap_from).collect()
    }

    /// Every device and custodian of the organisation (revoked ones included) as recipients.
    pub async fn key_recipients(&self, org_id: &str) -> Result<Vec<Recipient>, StoreError> {
        let mut tx = self.pool.begin().await?;
        let out = recipients_in(&mut tx, org_id).await?;
        tx.commit().await?;
        Ok(out)
    }

    /// Sets up the organisation's first key, or rotates to the next one, in one transaction:
    /// the new public key, its wraps and (rotation) every secret re-sealed to it. Refused, with
    /// nothing changed, when the caller is not a live custodian, a recipient is unknown or
    /// revoked, a rotation misses an active device or custodian or a secret (or has one at a
    /// version that is no longer current), or another set-up or rotation came first.
    pub async fn create_secrets_key(
        &self,
        new: &NewSecretsKey<'_>,
    ) -> Result<Result<KeyChange, SecretsRefusal>, StoreError> {
        let now = now_us();
        let mut tx = self.pool.begin().await?;
        let refuse = |r: SecretsRefusal| Ok(Err(r));
        // A write first (locks the key row, or the database on SQLite).
        let version = match new.previous_version {
            None => {
                let done = sqlx::query(
                    "INSERT INTO org_secret_keys (org_id, version, public_key, state, created_by, created_at) \
                     VALUES ($1, 1, $2, 'active', $3, $4) ON CONFLICT (org_id, version) DO NOTHING",
                )
                .bind(new.org_id)
                .bind(new.public_key.to_vec())
                .bind(new.user_id)
                .bind(now)
                .execute(&mut *tx)
                .await?;
                if done.rows_affected() == 0 {
                    tx.rollback().await?;
                    return refuse(SecretsRefusal::Conflict(
                        "this organisation already has a secrets key; to replace it, rotate (give `previous_version`, the active version)".into(),
                    ));
                }
                1
            }
            Some(previous) => {
                let done = sqlx::query(
                    "UPDATE org_secret_keys SET state = 'retiring' \
                     WHERE org_id = $1 AND version = $2 AND state = 'active'",
                )
                .bind(new.org_id)
                .bind(i64::from(previous))
                .execute(&mut *tx)
                .await?;
                if done.rows_affected() == 0 {
                    tx.rollback().await?;
                    let active = self.active_secrets_key(new.org_id).await?;
                    return refuse(SecretsRefusal::Conflict(match active {
                        Some(k) => format!(
                            "version {previous} is not the active secrets key (version {} is): the key was rotated meanwhile; fetch the key status and rotate from the active version",
                            k.version
                        ),
                        None => "this organisation has no secrets key to rotate; set one up first (no `previous_version`)".into(),
                    }));
                }
                let Some(next) = previous.checked_add(1) else {
                    tx.rollback().await?;
                    return refuse(SecretsRefusal::Invalid(
                        "the key version cannot grow further".into(),
                    ));
                };
                let inserted = sqlx::query(
                    "INSERT INTO org_secret_keys (org_id, version, public_key, state, created_by, created_at) \
                     VALUES ($1, $2, $3, 'active', $4, $5)",
                )
                .bind(new.org_id)
                .bind(i64::from(next))
                .bind(new.public_key.to_vec())
                .bind(new.user_id)
                .bind(now)
                .execute(&mut *tx)
                .await;
                match inserted {
                    Ok(_) => {}
                    Err(sqlx::Error::Database(db)) if db.is_unique_violation() => {
                        tx.rollback().await?;
                        return refuse(SecretsRefusal::Conflict(format!(
                            "key version {next} already exists: another rotation came first; fetch the key status"
                        )));
                    }
                    Err(e) => return Err(e.into()),
                }
                next
            }
        };
        // The caller must be a custodian.
        let custodian: Option<String> = sqlx::query_scalar(
            "SELECT id FROM secret_custodians WHERE org_id = $1 AND user_id = $2 AND revoked_at IS NULL \
             ORDER BY id LIMIT 1",
        )
        .bind(new.org_id)
        .bind(new.user_id)
        .fetch_optional(&mut *tx)
        .await?;
        if custodian.is_none() {
            tx.rollback().await?;
            return refuse(SecretsRefusal::Conflict(
                "only a custodian may set up or rotate the secrets key, and you have no live custodian key in this organisation; create one (flowlink-control secrets custodian init)".into(),
            ));
        }
        let recipients = recipients_in(&mut tx, new.org_id).await?;
        let known: HashMap<String, &Recipient> =
            recipients.iter().map(|r| (r.recipient(), r)).collect();
        if let Err(r) = check_wrap_recipients(new.wraps, &known) {
            tx.rollback().await?;
            return refuse(r);
        }
        let given: BTreeSet<&str> = new.wraps.iter().map(|(r, _)| r.as_str()).collect();
        let mine: Vec<&Recipient> = recipients
            .iter()
            .filter(|r| r.kind == "custodian" && r.revoked_at.is_none())
            .filter(|r| given.contains(r.recipient().as_str()))
            .collect();
        match new.previous_version {
            None => {
                // Set-up: at least the caller's own custodian must receive the key, or nobody
                // could ever grant it.
                let own: Vec<String> = sqlx::query_scalar(
                    "SELECT id FROM secret_custodians WHERE org_id = $1 AND user_id = $2 AND revoked_at IS NULL",
                )
                .bind(new.org_id)
                .bind(new.user_id)
                .fetch_all(&mut *tx)
                .await?;
                if !mine.iter().any(|r| own.contains(&r.id)) {
                    tx.rollback().await?;
                    return refuse(SecretsRefusal::Invalid(
                        "wrap the new key to your own custodian key too, or nobody could grant it to devices".into(),
                    ));
                }
                if !new.secrets.is_empty() {
                    tx.rollback().await?;
                    return refuse(SecretsRefusal::Invalid(
                        "a set-up carries no secrets (there is no key they could be sealed to yet)"
                            .into(),
                    ));
                }
            }
            Some(_) => {
                if let Some(missing) = recipients
                    .iter()
                    .filter(|r| r.revoked_at.is_none())
                    .find(|r| !given.contains(r.recipient().as_str()))
                {
                    tx.rollback().await?;
                    return refuse(SecretsRefusal::Conflict(format!(
                        "{} `{}` ({}) gets no wrap of the new key: a rotation wraps it to every active device and custodian; fetch the key status again (one may have been added meanwhile) and retry",
                        missing.kind, missing.name, missing.id
                    )));
                }
            }
        }
        for (recipient, wrapped) in new.wraps {
            insert_wrap(&mut tx, new.org_id, version, recipient, wrapped, now).await?;
        }
        // Every live secret, re-sealed at its current version.
        let mut resealed = 0;
        if new.previous_version.is_some() {
            let rows = sqlx::query("SELECT name, version FROM secrets WHERE org_id = $1")
                .bind(new.org_id)
                .fetch_all(&mut *tx)
                .await?;
            let mut current: BTreeMap<String, i64> = BTreeMap::new();
            for row in &rows {
                current.insert(row.try_get("name")?, row.try_get("version")?);
            }
            let mut seen = BTreeSet::new();
            for (name, v, _) in new.secrets {
                if !seen.insert(name.as_str()) {
                    tx.rollback().await?;
                    return refuse(SecretsRefusal::Invalid(format!(
                        "secret {name} is given twice"
                    )));
                }
                match current.get(name) {
                    None => {
                        tx.rollback().await?;
                        return refuse(SecretsRefusal::Conflict(format!(
                            "secret {name} no longer exists (it was removed meanwhile); run the rotation again"
                        )));
                    }
                    Some(c) if i64::try_from(*v).ok() != Some(*c) => {
                        tx.rollback().await?;
                        return refuse(SecretsRefusal::Conflict(format!(
                            "secret {name} is at version {c}, the rotation re-sealed version {v}: it changed meanwhile; run the rotation again"
                        )));
                    }
                    Some(_) => {}
                }
            }
            if let Some(missing) = current.keys().find(|n| !seen.contains(n.as_str())) {
                tx.rollback().await?;
                return refuse(SecretsRefusal::Conflict(format!(
                    "secret {missing} is not re-sealed: a rotation re-seals every secret to the new key (one may have been added meanwhile); run the rotation again"
                )));
            }
            for (name, v, sealed) in new.secrets {
                let done = sqlx::query(
                    "UPDATE secrets SET sealed = $1, key_version = $2 \
                     WHERE org_id = $3 AND name = $4 AND version = $5",
                )
                .bind(sealed_text(sealed))
                .bind(i64::from(version))
                .bind(new.org_id)
                .bind(name)
                .bind(i64::try_from(*v).unwrap_or(i64::MAX))
                .execute(&mut *tx)
                .await?;
                if done.rows_affected() != 1 {
                    tx.rollback().await?;
                    return refuse(SecretsRefusal::Conflict(format!(
                        "secret {name} changed meanwhile; run the rotation again"
                    )));
                }
                resealed += 1;
            }
        }
        let retired = retire_in(&mut tx, new.org_id).await?;
        let row = sqlx::query(AssertSqlSafe(format!(
            "SELECT {KEY_COLUMNS} FROM org_secret_keys WHERE org_id = $1 AND version = $2"
        )))
        .bind(new.org_id)
        .bind(i64::from(version))
        .fetch_one(&mut *tx)
        .await?;
        let key = key_from(&row)?;
        tx.commit().await?;
        Ok(Ok(KeyChange {
            key,
            resealed,
            retired,
        }))
    }

    /// Adds wraps of a (non-retired) key version for recipients lacking one. Refused when the
    /// version is retired or unknown, a recipient is unknown or revoked, or already holds one.
    pub async fn grant_key_wraps(
        &self,
        org_id: &str,
        version: u32,
        wraps: &[(String, SealedBox)],
    ) -> Result<Result<usize, SecretsRefusal>, StoreError> {
        let now = now_us();
        let mut tx = self.pool.begin().await?;
        let done = sqlx::query(
            "UPDATE org_secret_keys SET state = state \
             WHERE org_id = $1 AND version = $2 AND state IN ('active', 'retiring')",
        )
        .bind(org_id)
        .bind(i64::from(version))
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() == 0 {
            tx.rollback().await?;
            return Ok(Err(SecretsRefusal::NotFound(
                "active or retiring secrets key version",
            )));
        }
        let recipients = recipients_in(&mut tx, org_id).await?;
        let known: HashMap<String, &Recipient> =
            recipients.iter().map(|r| (r.recipient(), r)).collect();
        if let Err(r) = check_wrap_recipients(wraps, &known) {
            tx.rollback().await?;
            return Ok(Err(r));
        }
        for (recipient, wrapped) in wraps {
            match insert_wrap(&mut tx, org_id, version, recipient, wrapped, now).await {
                Ok(()) => {}
                Err(StoreError::Conflict(_)) => {
                    tx.rollback().await?;
                    return Ok(Err(SecretsRefusal::Conflict(format!(
                        "`{recipient}` already holds key version {version}; grant only to recipients lacking it (see the key status)"
                    ))));
                }
                Err(e) => return Err(e),
            }
        }
        tx.commit().await?;
        Ok(Ok(wraps.len()))
    }

    /// The wraps this device receives on its links: of the active and retiring versions, newest
    /// last, with each version's public key; none for a revoked device.
    async fn device_wraps(&self, device: &Device) -> Result<Vec<WrappedOrgKey>, StoreError> {
        let rows = sqlx::query(
            "SELECT k.version, k.public_key, w.wrapped FROM org_key_wraps w \
             JOIN org_secret_keys k ON k.org_id = w.org_id AND k.version = w.key_version \
             JOIN devices d ON d.id = $2 AND d.org_id = w.org_id \
             WHERE w.org_id = $1 AND w.recipient = $3 AND k.state IN ('active', 'retiring') \
             AND d.revoked_at IS NULL ORDER BY k.version",
        )
        .bind(&device.org_id)
        .bind(&device.id)
        .bind(format!("device:{}", device.id))
        .fetch_all(&self.pool)
        .await?;
        let mut out = Vec::new();
        for row in &rows {
            let wrapped: String = row.try_get("wrapped")?;
            out.push(WrappedOrgKey {
                key_version: u32_of(row.try_get("version")?, "key version")?,
                public_key: flowlink_proto::sealed::BoxPublicKey(key32(
                    row,
                    "public_key",
                    "secrets key",
                )?)
                .to_base64(),
                wrapped: sealed_from(&wrapped, "key wrap")?,
            });
        }
        Ok(out)
    }

    /// What a link of `device` wrapping `service` receives: its wraps, the secrets in scope
    /// (service and labels), and whether the key must be rotated.
    pub async fn secrets_push(
        &self,
        device: &Device,
        service: &str,
    ) -> Result<SecretsPush, StoreError> {
        let keys = self.device_wraps(device).await?;
        let secrets = self
            .all_secrets(&device.org_id)
            .await?
            .into_iter()
            .filter(|s| s.in_scope(service, &device.labels))
            .map(|s| SealedSecret {
                name: s.name,
                version: s.version,
                key_version: s.key_version,
                sealed: s.sealed,
                services: s.services,
                labels: s.labels,
            })
            .collect();
        let rotation_required = self
            .active_secrets_key(&device.org_id)
            .await?
            .and_then(|k| k.rotation_required);
        Ok(SecretsPush {
            keys,
            secrets,
            rotation_required,
        })
    }

    /// Whether the device's wrap of `version` is confirmed (it proved it holds that version).
    pub async fn wrap_confirmed(&self, device: &Device, version: u32) -> Result<bool, StoreError> {
        let at: Option<Option<i64>> = sqlx::query_scalar(
            "SELECT confirmed_at FROM org_key_wraps WHERE org_id = $1 AND key_version = $2 AND recipient = $3",
        )
        .bind(&device.org_id)
        .bind(i64::from(version))
        .bind(format!("device:{}", device.id))
        .fetch_optional(&self.pool)
        .await?;
        Ok(matches!(at, Some(Some(_))))
    }

    /// Retires `retiring` versions when every active device proved it holds the active one
    /// (after a revocation removed the last device that had not).
    pub async fn retire_confirmed_keys(&self, org_id: &str) -> Result<Vec<u32>, StoreError> {
        let mut tx = self.pool.begin().await?;
        // A write first, so two replicas do not both retire (and record) the same version.
        sqlx::query(
            "UPDATE org_secret_keys SET state = state WHERE org_id = $1 AND state = 'active'",
        )
        .bind(org_id)
        .execute(&mut *tx)
        .await?;
        let retired = retire_in(&mut tx, org_id).await?;
        tx.commit().await?;
        Ok(retired)
    }

    // -----------------------------------------------------------------------------------------
    // Custodians.

    /// Registers a custodian key for `user_id`.
    pub async fn create_custodian(
        &self,
        org_id: &str,
        user_id: &str,
        name: &str,
        public_key: [u8; 32],
    ) -> Result<Custodian, StoreError> {
        let c = Custodian {
            id: new_id(),
            org_id: org_id.to_string(),
            user_id: user_id.to_string(),
            name: name.to_string(),
            public_key,
            created_at: now_us(),
            revoked_at: None,
        };
        sqlx::query(
            "INSERT INTO secret_custodians (id, org_id, user_id, name, public_key, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&c.id)
        .bind(&c.org_id)
        .bind(&c.user_id)
        .bind(&c.name)
        .bind(c.public_key.to_vec())
        .bind(c.created_at)
        .execute(&self.pool)
        .await?;
        Ok(c)
    }

    /// Every custodian of the organisation (revoked ones included), oldest first.
    pub async fn list_custodians(&self, org_id: &str) -> Result<Vec<Custodian>, StoreError> {
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT {CUSTODIAN_COLUMNS} FROM secret_custodians WHERE org_id = $1 ORDER BY id"
        )))
        .bind(org_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(custodian_from).collect()
    }

    /// Revokes a live custodian: its wraps are no use to anyone else, but it could unwrap the
    /// active key, so a key it held is marked `rotation_required` (with an audit record), in
    /// the same transaction. `None` when there is no such live custodian; else whether the
    /// key was marked.
    pub async fn revoke_custodian(
        &self,
        org_id: &str,
        id: &str,
        reason: &str,
    ) -> Result<Option<bool>, StoreError> {
        let mut tx = self.pool.begin().await?;
        let row = sqlx::query(
            "UPDATE secret_custodians SET revoked_at = $1 \
             WHERE org_id = $2 AND id = $3 AND revoked_at IS NULL RETURNING name",
        )
        .bind(now_us())
        .bind(org_id)
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            tx.rollback().await?;
            return Ok(None);
        };
        let name: String = row.try_get("name")?;
        let flagged = flag_rotation_in(
            &mut tx,
            org_id,
            &format!("custodian:{id}"),
            reason,
            serde_json::json!({"custodian": id, "custodian_name": name}),
        )
        .await?;
        tx.commit().await?;
        Ok(Some(flagged))
    }

    /// Revokes every live custodian of `user_id` in the organisation (they left it), marking
    /// the key as for [`Store::revoke_custodian`]. Returns the custodians revoked.
    pub async fn revoke_custodians_of(
        &self,
        org_id: &str,
        user_id: &str,
        reason: &str,
    ) -> Result<Vec<String>, StoreError> {
        let ids: Vec<String> = sqlx::query_scalar(
            "SELECT id FROM secret_custodians WHERE org_id = $1 AND user_id = $2 AND revoked_at IS NULL",
        )
        .bind(org_id)
        .bind(user_id)
        .fetch_all(&self.pool)
        .await?;
        let mut out = Vec::new();
        for id in ids {
            if self.revoke_custodian(org_id, &id, reason).await?.is_some() {
                out.push(id);
            }
        }
        Ok(out)
    }

    // -----------------------------------------------------------------------------------------
    // Secrets.

    /// Stores a new value of a secret (and its metadata): created when `base_version` is 0,
    /// else replaced only if `base_version` is still current; the value must be sealed to the
    /// active key. Returns the secret and whether it was created.
    pub async fn put_secret(
        &self,
        p: &PutSecret<'_>,
    ) -> Result<Result<(Secret, bool), SecretsRefusal>, StoreError> {
        let now = now_us();
        let mut tx = self.pool.begin().await?;
        let done = sqlx::query(
            "UPDATE org_secret_keys SET state = state WHERE org_id = $1 AND version = $2 AND state = 'active'",
        )
        .bind(p.org_id)
        .bind(i64::from(p.key_version))
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() == 0 {
            tx.rollback().await?;
            let message = match self.active_secrets_key(p.org_id).await? {
                Some(k) => format!(
                    "the value is sealed to key version {}, but the organisation's active secrets key is version {}: fetch the key and seal the value again",
                    p.key_version, k.version
                ),
                None => "this organisation has no secrets key yet; a custodian sets one up first (flowlink-control secrets key init)".to_string(),
            };
            return Ok(Err(SecretsRefusal::Conflict(message)));
        }
        let current: Option<i64> =
            sqlx::query_scalar("SELECT version FROM secrets WHERE org_id = $1 AND name = $2")
                .bind(p.org_id)
                .bind(p.name)
                .fetch_optional(&mut *tx)
                .await?;
        let current = current.unwrap_or(0);
        let base = i64::try_from(p.base_version).unwrap_or(i64::MAX);
        if base != current {
            tx.rollback().await?;
            let message = if current == 0 {
                format!(
                    "secret {} does not exist (any more): give base_version 0 to create it",
                    p.name
                )
            } else {
                format!(
                    "secret {} is at version {current}, not {}: it changed meanwhile; fetch it and seal the new value for version {}",
                    p.name,
                    p.base_version,
                    current + 1
                )
            };
            return Ok(Err(SecretsRefusal::Conflict(message)));
        }
        let services = serde_json::to_string(p.services).unwrap_or_else(|_| "[]".into());
        let labels = serde_json::to_string(p.labels).unwrap_or_else(|_| "{}".into());
        let created = current == 0;
        if created {
            let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM secrets WHERE org_id = $1")
                .bind(p.org_id)
                .fetch_one(&mut *tx)
                .await?;
            if count >= MAX_SECRETS_PER_ORG {
                tx.rollback().await?;
                return Ok(Err(SecretsRefusal::Conflict(format!(
                    "this organisation already holds {count} secrets, the most allowed; remove unused ones first"
                ))));
            }
            let inserted = sqlx::query(
                "INSERT INTO secrets (org_id, name, version, key_version, sealed, services, labels, description, \
                 created_by, created_at, updated_by, updated_at) \
                 VALUES ($1, $2, 1, $3, $4, $5, $6, $7, $8, $9, $8, $9)",
            )
            .bind(p.org_id)
            .bind(p.name)
            .bind(i64::from(p.key_version))
            .bind(sealed_text(p.sealed))
            .bind(&services)
            .bind(&labels)
            .bind(p.description)
            .bind(p.user_id)
            .bind(now)
            .execute(&mut *tx)
            .await;
            match inserted {
                Ok(_) => {}
                Err(sqlx::Error::Database(db)) if db.is_unique_violation() => {
                    tx.rollback().await?;
                    return Ok(Err(SecretsRefusal::Conflict(format!(
                        "secret {} was created meanwhile; fetch it and seal the new value for its next version",
                        p.name
                    ))));
                }
                Err(e) => return Err(e.into()),
            }
        } else {
            let done = sqlx::query(
                "UPDATE secrets SET version = version + 1, key_version = $1, sealed = $2, services = $3, \
                 labels = $4, description = $5, updated_by = $6, updated_at = $7 \
                 WHERE org_id = $8 AND name = $9 AND version = $10",
            )
            .bind(i64::from(p.key_version))
            .bind(sealed_text(p.sealed))
            .bind(&services)
            .bind(&labels)
            .bind(p.description)
            .bind(p.user_id)
            .bind(now)
            .bind(p.org_id)
            .bind(p.name)
            .bind(current)
            .execute(&mut *tx)
            .await?;
            if done.rows_affected() != 1 {
                tx.rollback().await?;
                return Ok(Err(SecretsRefusal::Conflict(format!(
                    "secret {} changed meanwhile; fetch it and try again",
                    p.name
                ))));
            }
        }
        let row = sqlx::query(AssertSqlSafe(format!(
            "SELECT {SECRET_COLUMNS} FROM secrets WHERE org_id = $1 AND name = $2"
        )))
        .bind(p.org_id)
        .bind(p.name)
        .fetch_one(&mut *tx)
        .await?;
        let secret = secret_from(&row)?;
        tx.commit().await?;
        Ok(Ok((secret, created)))
    }

    /// One secret of the organisation.
    pub async fn secret(&self, org_id: &str, name: &str) -> Result<Option<Secret>, StoreError> {
        let row = sqlx::query(AssertSqlSafe(format!(
            "SELECT {SECRET_COLUMNS} FROM secrets WHERE org_id = $1 AND name = $2"
        )))
        .bind(org_id)
        .bind(name)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(secret_from).transpose()
    }

    /// Up to `limit` secrets whose name sorts after `after` (by name).
    pub async fn list_secrets(
        &self,
        org_id: &str,
        after: Option<&str>,
        limit: i64,
    ) -> Result<Vec<Secret>, StoreError> {
        let rows = match after {
            Some(after) => {
                sqlx::query(AssertSqlSafe(format!(
                    "SELECT {SECRET_COLUMNS} FROM secrets WHERE org_id = $1 AND name > $2 ORDER BY name LIMIT $3"
                )))
                .bind(org_id)
                .bind(after)
                .bind(limit)
                .fetch_all(&self.pool)
                .await?
            }
            None => {
                sqlx::query(AssertSqlSafe(format!(
                    "SELECT {SECRET_COLUMNS} FROM secrets WHERE org_id = $1 ORDER BY name LIMIT $2"
                )))
                .bind(org_id)
                .bind(limit)
                .fetch_all(&self.pool)
                .await?
            }
        };
        rows.iter().map(secret_from).collect()
    }

    /// Every secret of the organisation, by name.
    pub async fn all_secrets(&self, org_id: &str) -> Result<Vec<Secret>, StoreError> {
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT {SECRET_COLUMNS} FROM secrets WHERE org_id = $1 ORDER BY name"
        )))
        .bind(org_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(secret_from).collect()
    }

    /// Removes a secret; returns what it was.
    pub async fn delete_secret(
        &self,
        org_id: &str,
        name: &str,
    ) -> Result<Option<Secret>, StoreError> {
        let row = sqlx::query(AssertSqlSafe(format!(
            "DELETE FROM secrets WHERE org_id = $1 AND name = $2 RETURNING {SECRET_COLUMNS}"
        )))
        .bind(org_id)
        .bind(name)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(secret_from).transpose()
    }

    /// A proxy reported using secrets: their last use is now, by this device. Names the
    /// organisation does not hold are ignored.
    pub async fn record_secret_use(
        &self,
        device: &Device,
        names: &[&str],
    ) -> Result<(), StoreError> {
        let now = now_us();
        for name in names {
            sqlx::query(
                "UPDATE secrets SET last_used_at = $1, last_used_device = $2 WHERE org_id = $3 AND name = $4",
            )
            .bind(now)
            .bind(&device.id)
            .bind(&device.org_id)
            .bind(*name)
            .execute(&self.pool)
            .await?;
        }
        Ok(())
    }

    // -----------------------------------------------------------------------------------------
    // Key-possession challenges.

    /// Stores a challenge whose answer must hash (SHA-256, hex) to `proof_hash`. `offline`
    /// records a device of a verification run that could not be asked.
    #[allow(clippy::too_many_arguments)] // one challenge's fields, each named at the call site
    pub async fn create_challenge(
        &self,
        id: &str,
        org_id: &str,
        verification_id: Option<&str>,
        device_id: &str,
        key_version: u32,
        proof_hash: &str,
        offline: bool,
    ) -> Result<(), StoreError> {
        let now = now_us();
        let (vcol, vval) = match verification_id {
            Some(_) => (", verification_id", ", $7"),
            None => ("", ""),
        };
        // The answer time of an `offline` record is its creation time ($6).
        let (ocol, oval) = if offline {
            (", outcome, answered_at", ", 'offline', $6")
        } else {
            ("", "")
        };
        let sql = format!(
            "INSERT INTO key_challenges (id, org_id, device_id, key_version, proof_hash, created_at{vcol}{ocol}) \
             VALUES ($1, $2, $3, $4, $5, $6{vval}{oval})"
        );
        let mut q = sqlx::query(AssertSqlSafe(sql))
            .bind(id)
            .bind(org_id)
            .bind(device_id)
            .bind(i64::from(key_version))
            .bind(proof_hash)
            .bind(now);
        if let Some(v) = verification_id {
            q = q.bind(v);
        }
        q.execute(&self.pool).await?;
        Ok(())
    }

    /// A device's answer to one of its challenges: compares the proof with the stored hash,
    /// records the outcome and, when proved, confirms the device's wrap of that version and
    /// retires older versions once every active device confirmed the active one. A challenge
    /// answered before (several links of a device answer one verification) is `repeated` and
    /// changes nothing. `None` when the device was never sent a challenge with this id.
    pub async fn answer_challenge(
        &self,
        device: &Device,
        challenge_id: &str,
        key_version: u32,
        proof: Option<&str>,
        error: Option<&str>,
    ) -> Result<Option<ChallengeAnswer>, StoreError> {
        let now = now_us();
        let mut tx = self.pool.begin().await?;
        let row = sqlx::query(
            "UPDATE key_challenges SET answered_at = $1 \
             WHERE id = $2 AND device_id = $3 AND org_id = $4 AND answered_at IS NULL \
             RETURNING key_version, proof_hash",
        )
        .bind(now)
        .bind(challenge_id)
        .bind(&device.id)
        .bind(&device.org_id)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            tx.rollback().await?;
            let known: Option<String> = sqlx::query_scalar(
                "SELECT id FROM key_challenges WHERE id = $1 AND device_id = $2 AND org_id = $3",
            )
            .bind(challenge_id)
            .bind(&device.id)
            .bind(&device.org_id)
            .fetch_optional(&self.pool)
            .await?;
            return Ok(known.map(|_| ChallengeAnswer {
                repeated: true,
                ..ChallengeAnswer::default()
            }));
        };
        let stored_version = u32_of(row.try_get("key_version")?, "challenge key version")?;
        let expected: String = row.try_get("proof_hash")?;
        let proved = stored_version == key_version
            && proof.is_some_and(|p| constant_time_eq(&sha256_hex(p), &expected));
        let why = if proved {
            None
        } else if let Some(e) = error {
            Some(e.chars().take(500).collect::<String>())
        } else if stored_version != key_version {
            Some(format!(
                "answered for key version {key_version}, the challenge was for version {stored_version}"
            ))
        } else {
            Some("the proof does not match: the device does not hold this key version".into())
        };
        let outcome = if proved { "proved" } else { "failed" };
        match &why {
            Some(why) => {
                sqlx::query("UPDATE key_challenges SET outcome = $1, error = $2 WHERE id = $3")
                    .bind(outcome)
                    .bind(why)
                    .bind(challenge_id)
                    .execute(&mut *tx)
                    .await?;
            }
            None => {
                sqlx::query("UPDATE key_challenges SET outcome = $1 WHERE id = $2")
                    .bind(outcome)
                    .bind(challenge_id)
                    .execute(&mut *tx)
                    .await?;
            }
        }
        let mut answer = ChallengeAnswer {
            proved,
            ..ChallengeAnswer::default()
        };
        if proved {
            sqlx::query(
                "UPDATE org_key_wraps SET confirmed_at = $1 \
                 WHERE org_id = $2 AND key_version = $3 AND recipient = $4 AND confirmed_at IS NULL",
            )
            .bind(now)
            .bind(&device.org_id)
            .bind(i64::from(stored_version))
            .bind(format!("device:{}", device.id))
            .execute(&mut *tx)
            .await?;
            answer.retired = retire_in(&mut tx, &device.org_id).await?;
        }
        tx.commit().await?;
        Ok(Some(answer))
    }

    /// Deletes challenges made before `before` (Unix µs), answered or not; returns how many.
    pub async fn purge_key_challenges(&self, before: i64) -> Result<u64, StoreError> {
        let done = sqlx::query("DELETE FROM key_challenges WHERE created_at < $1")
            .bind(before)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }

    /// The challenges of one verification run of the organisation, by device name.
    pub async fn verification(
        &self,
        org_id: &str,
        verification_id: &str,
    ) -> Result<Vec<ChallengeRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT c.id, c.org_id, c.verification_id, c.device_id, d.name AS device_name, c.key_version, \
             c.created_at, c.answered_at, c.outcome, c.error \
             FROM key_challenges c LEFT JOIN devices d ON d.id = c.device_id \
             WHERE c.org_id = $1 AND c.verification_id = $2 ORDER BY d.name, c.device_id",
        )
        .bind(org_id)
        .bind(verification_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(challenge_from).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(services: &[&str], labels: &[(&str, &str)]) -> Secret {
        Secret {
            org_id: "o".into(),
            name: "N".into(),
            version: 1,
            key_version: 1,
            sealed: SealedBox {
                alg: String::new(),
                enc: String::new(),
                ct: String::new(),
            },
            services: services.iter().map(|s| s.to_string()).collect(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            description: String::new(),
            created_by: String::new(),
            created_at: 0,
            updated_by: String::new(),
            updated_at: 0,
            last_used_at: None,
            last_used_device: None,
        }
    }

    #[test]
    fn scope_is_service_and_every_label() {
        let prod: Labels = [("env".to_string(), "prod".to_string())].into();
        assert!(secret(&[], &[]).in_scope("git", &Labels::new()));
        assert!(secret(&["git"], &[]).in_scope("git", &Labels::new()));
        assert!(!secret(&["git"], &[]).in_scope("db", &Labels::new()));
        assert!(secret(&[], &[("env", "prod")]).in_scope("git", &prod));
        assert!(!secret(&[], &[("env", "prod")]).in_scope("git", &Labels::new()));
        assert!(!secret(&[], &[("env", "prod"), ("team", "a")]).in_scope("git", &prod));
        assert!(!secret(&["db"], &[("env", "prod")]).in_scope("git", &prod));
    }
}
