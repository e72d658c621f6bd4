//! Enrolled devices and what their proxies send: enrolment tokens (single- or N-use, expiring,
//! labelled, stored only as a SHA-256 hash), devices with their public keys, the health of the
//! MCP servers they wrap, audit events shipped over the link (deduplicated by event id), and
//! messages for devices handed between control-plane replicas.
//!
//! Enrolment is one transaction: a use of the token is taken with a single conditional
//! `UPDATE … WHERE uses < uses_allowed` (so an N-use token admits exactly N devices however
//! many enrol at once), then the device is created (or, for a token bound to a device, its keys
//! are replaced and its key version raised). A failure leaves the token's count untouched.

use std::collections::BTreeMap;

use flowlink_proto::link::{AuditEnvelope, ServerHealth, ServerState};
use sqlx::any::AnyRow;
use sqlx::{Any, AssertSqlSafe, Row, Transaction};

use super::{AuditEvent, Store, StoreError, flag, new_id, now_us};

/// A device's labels (`env=prod`, `team=payments`): `group:<key>=<value>` policies apply to it.
pub type Labels = BTreeMap<String, String>;

/// Restarts in an hour from which a wrapped server counts as crash-looping.
pub const CRASH_LOOP_RESTARTS: i64 = 3;

/// An enrolment token's metadata (never its secret).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnrollmentToken {
    /// Public id (the part after `fle_` and before the dot in the token text).
    pub id: String,
    /// The organisation a device enrolled with it joins.
    pub org_id: String,
    /// A note for people (may be empty).
    pub name: String,
    /// Labels every device enrolled with it gets (they win over the device's own).
    pub labels: Labels,
    /// How many enrolments it admits.
    pub uses_allowed: i64,
    /// How many it has admitted.
    pub uses: i64,
    /// Who made it: a user id, an API token id, or `flowlink-control admin`.
    pub created_by: String,
    /// Unix µs.
    pub created_at: i64,
    /// Unix µs.
    pub expires_at: i64,
    /// For a re-key token: the device whose keys it replaces.
    pub device_id: Option<String>,
    /// Unix µs of revocation, if revoked.
    pub revoked_at: Option<i64>,
}

/// An enrolled device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Device {
    /// Id (UUIDv7).
    pub id: String,
    /// Its organisation.
    pub org_id: String,
    /// Name (the host name unless the enrolment gave another).
    pub name: String,
    /// Host name, for people.
    pub hostname: String,
    /// Labels.
    pub labels: Labels,
    /// Ed25519 public key: verifies link challenges.
    pub signing_key: [u8; 32],
    /// X25519 public key: secrets are wrapped to it.
    pub box_key: [u8; 32],
    /// 1 at enrolment, +1 at each re-key.
    pub key_version: i64,
    /// Unix µs.
    pub enrolled_at: i64,
    /// Unix µs of the last re-key.
    pub rekeyed_at: Option<i64>,
    /// Unix µs of the last authentication or heartbeat.
    pub last_seen_at: Option<i64>,
    /// The health last recorded by the health task (`online`, `stale`, `offline`).
    pub health: String,
    /// Unix µs of revocation, if revoked.
    pub revoked_at: Option<i64>,
    /// The reason given at revocation (may be empty).
    pub revoked_reason: Option<String>,
}

/// One MCP server a device's proxy wraps, as its last heartbeat described it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceServer {
    /// The device.
    pub device_id: String,
    /// The service name.
    pub service: String,
    /// `up`, `restarting`, `crashed` or `stopped`.
    pub state: String,
    /// Restarts in the last hour.
    pub restarts_last_hour: i64,
    /// The last error, if any.
    pub last_error: Option<String>,
    /// Whether it is crash-looping (restarts in the last hour ≥ [`CRASH_LOOP_RESTARTS`]).
    pub crash_loop: bool,
    /// Unix µs of the heartbeat.
    pub updated_at: i64,
    /// The flowlink-proxy version that sent the heartbeat, when it said one in plain text.
    pub proxy_version: Option<String>,
}

/// What a proxy sends to enrol (keys already checked by the caller).
#[derive(Debug, Clone)]
pub struct NewDevice<'a> {
    /// Name.
    pub name: &'a str,
    /// Host name.
    pub hostname: &'a str,
    /// The labels the device reports; the token's labels are laid over them.
    pub labels: &'a Labels,
    /// Ed25519 public key.
    pub signing_key: [u8; 32],
    /// X25519 public key.
    pub box_key: [u8; 32],
}

/// A successful enrolment.
#[derive(Debug, Clone)]
pub struct Enrollment {
    /// The device, new or re-keyed.
    pub device: Device,
    /// The token used (with its use counted).
    pub token: EnrollmentToken,
    /// Whether the token re-keyed an existing device.
    pub rekeyed: bool,
}

/// Why an enrolment token was not accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EnrollRefusal {
    /// No token has this text.
    Unknown,
    /// Revoked by an admin.
    Revoked(EnrollmentToken),
    /// Past its expiry.
    Expired(EnrollmentToken),
    /// Every use taken.
    UsedUp(EnrollmentToken),
    /// A re-key token whose device has been revoked since.
    DeviceRevoked(EnrollmentToken),
}

/// The outcome of shipping one audit batch.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IngestOutcome {
    /// Ids now durable as this device's events (new ones and ones stored before), in batch order.
    pub acked: Vec<String>,
    /// Ids already taken by another device's or person's event: not stored, not acknowledged.
    pub foreign: Vec<String>,
}

const TOKEN_COLUMNS: &str = "id, org_id, name, labels, uses_allowed, uses, created_by, created_at, \
     expires_at, device_id, revoked_at";

const DEVICE_COLUMNS: &str = "id, org_id, name, hostname, labels, signing_key, box_key, key_version, \
     enrolled_at, rekeyed_at, last_seen_at, health, revoked_at, revoked_reason";

const SERVER_COLUMNS: &str = "device_id, service, state, restarts_last_hour, last_error, crash_loop, updated_at, proxy_version";

/// Rows per multi-row `INSERT` (10 parameters each; both engines take 2,000 easily).
const INSERT_CHUNK: usize = 200;

fn labels_from(text: &str) -> Result<Labels, StoreError> {
    serde_json::from_str(text).map_err(|e| StoreError::Corrupt(format!("labels: {e}")))
}

fn labels_text(labels: &Labels) -> String {
    serde_json::to_string(labels).unwrap_or_else(|_| "{}".to_string())
}

fn token_from(row: &AnyRow) -> Result<EnrollmentToken, StoreError> {
    let labels: String = row.try_get("labels")?;
    Ok(EnrollmentToken {
        id: row.try_get("id")?,
        org_id: row.try_get("org_id")?,
        name: row.try_get("name")?,
        labels: labels_from(&labels)?,
        uses_allowed: row.try_get("uses_allowed")?,
        uses: row.try_get("uses")?,
        created_by: row.try_get("created_by")?,
        created_at: row.try_get("created_at")?,
        expires_at: row.try_get("expires_at")?,
        device_id: row.try_get("device_id")?,
        revoked_at: row.try_get("revoked_at")?,
    })
}

fn key32(row: &AnyRow, column: &str) -> Result<[u8; 32], StoreError> {
    let bytes: Vec<u8> = row.try_get(column)?;
    bytes
        .as_slice()
        .try_into()
        .map_err(|_| StoreError::Corrupt(format!("device {column} is not 32 bytes")))
}

fn device_from(row: &AnyRow) -> Result<Device, StoreError> {
    let labels: String = row.try_get("labels")?;
    Ok(Device {
        id: row.try_get("id")?,
        org_id: row.try_get("org_id")?,
        name: row.try_get("name")?,
        hostname: row.try_get("hostname")?,
        labels: labels_from(&labels)?,
        signing_key: key32(row, "signing_key")?,
        box_key: key32(row, "box_key")?,
        key_version: row.try_get("key_version")?,
        enrolled_at: row.try_get("enrolled_at")?,
        rekeyed_at: row.try_get("rekeyed_at")?,
        last_seen_at: row.try_get("last_seen_at")?,
        health: row.try_get("health")?,
        revoked_at: row.try_get("revoked_at")?,
        revoked_reason: row.try_get("revoked_reason")?,
    })
}

fn server_from(row: &AnyRow) -> Result<DeviceServer, StoreError> {
    Ok(DeviceServer {
        device_id: row.try_get("device_id")?,
        service: row.try_get("service")?,
        state: row.try_get("state")?,
        restarts_last_hour: row.try_get("restarts_last_hour")?,
        last_error: row.try_get("last_error")?,
        crash_loop: flag(row.try_get("crash_loop")?),
        updated_at: row.try_get("updated_at")?,
        proxy_version: row.try_get("proxy_version")?,
    })
}

/// `up`, `restarting`, `crashed` or `stopped`.
pub fn server_state_name(state: ServerState) -> &'static str {
    match state {
        ServerState::Up => "up",
        ServerState::Restarting => "restarting",
        ServerState::Crashed => "crashed",
        ServerState::Stopped => "stopped",
    }
}

/// `$from, $from+1, …` for `n` values.
fn placeholders(from: usize, n: usize) -> String {
    (from..from + n)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Appends an audit event inside a transaction (so it commits or not with what it records).
pub(super) async fn insert_audit(
    tx: &mut Transaction<'_, Any>,
    e: &AuditEvent,
    occurred_at: i64,
) -> Result<(), StoreError> {
    let facets = super::AuditFacets::from_detail(&e.kind, &e.detail);
    sqlx::query(
        "INSERT INTO audit_events (id, org_id, occurred_at, kind, actor_kind, actor_id, target, outcome, ip, detail, \
         user_name, agent, service, tool, decision, risk, command) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)",
    )
    .bind(new_id())
    .bind(e.org_id.clone())
    .bind(occurred_at)
    .bind(&e.kind)
    .bind(&e.actor_kind)
    .bind(&e.actor_id)
    .bind(&e.target)
    .bind(&e.outcome)
    .bind(&e.ip)
    .bind(e.detail.to_string())
    .bind(facets.user)
    .bind(facets.agent)
    .bind(facets.service)
    .bind(facets.tool)
    .bind(facets.decision)
    .bind(facets.risk)
    .bind(facets.command)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

fn system_event(
    device: &Device,
    kind: &str,
    target: &str,
    detail: serde_json::Value,
) -> AuditEvent {
    AuditEvent {
        org_id: Some(device.org_id.clone()),
        kind: kind.to_string(),
        actor_kind: "system".to_string(),
        actor_id: "flowlink-control".to_string(),
        target: target.to_string(),
        outcome: "failure".to_string(),
        ip: String::new(),
        detail,
    }
}

impl Store {
    // -----------------------------------------------------------------------------------------
    // Enrolment tokens.

    /// Stores a new enrolment token (the caller made the secret and hashed it).
    pub async fn create_enrollment_token(
        &self,
        t: &EnrollmentToken,
        token_hash: &str,
    ) -> Result<(), StoreError> {
        let (columns, values) = match t.device_id {
            Some(_) => (", device_id", ", $11"),
            None => ("", ""),
        };
        let sql = format!(
            "INSERT INTO enrollment_tokens (id, org_id, token_hash, name, labels, uses_allowed, uses, \
             created_by, created_at, expires_at{columns}) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10{values})"
        );
        let mut q = sqlx::query(AssertSqlSafe(sql))
            .bind(&t.id)
            .bind(&t.org_id)
            .bind(token_hash)
            .bind(&t.name)
            .bind(labels_text(&t.labels))
            .bind(t.uses_allowed)
            .bind(t.uses)
            .bind(&t.created_by)
            .bind(t.created_at)
            .bind(t.expires_at);
        if let Some(device) = &t.device_id {
            q = q.bind(device);
        }
        q.execute(&self.pool)
            .await
            .map_err(|e| StoreError::conflict_as(e, "an enrolment token with this id"))?;
        Ok(())
    }

    /// Up to `limit` enrolment tokens of an organisation whose id sorts before `before_id`
    /// (newest first); used, expired and revoked ones included.
    pub async fn list_enrollment_tokens(
        &self,
        org_id: &str,
        before_id: Option<&str>,
        limit: i64,
    ) -> Result<Vec<EnrollmentToken>, StoreError> {
        let rows = self
            .page_by_id(TOKEN_COLUMNS, "enrollment_tokens", org_id, before_id, limit)
            .await?;
        rows.iter().map(token_from).collect()
    }

    /// Revokes an enrolment token of `org_id`. Returns false when there is no such live token.
    pub async fn revoke_enrollment_token(
        &self,
        org_id: &str,
        id: &str,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE enrollment_tokens SET revoked_at = $1 \
             WHERE org_id = $2 AND id = $3 AND revoked_at IS NULL",
        )
        .bind(now_us())
        .bind(org_id)
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn enrollment_token_by_hash(
        &self,
        token_hash: &str,
    ) -> Result<Option<EnrollmentToken>, StoreError> {
        let row = sqlx::query(AssertSqlSafe(format!(
            "SELECT {TOKEN_COLUMNS} FROM enrollment_tokens WHERE token_hash = $1"
        )))
        .bind(token_hash)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(token_from).transpose()
    }

    /// Enrols a device with the token whose text hashes to `token_hash`: takes one use of the
    /// token and creates the device, or (for a re-key token) replaces the bound device's keys
    /// and raises its key version, all in one transaction. `Ok(Err(_))` says why the token was
    /// refused; the token is then unchanged.
    pub async fn enroll(
        &self,
        token_hash: &str,
        new: &NewDevice<'_>,
    ) -> Result<Result<Enrollment, EnrollRefusal>, StoreError> {
        let now = now_us();
        let mut tx = self.pool.begin().await?;
        let row = sqlx::query(AssertSqlSafe(format!(
            "UPDATE enrollment_tokens SET uses = uses + 1 \
             WHERE token_hash = $1 AND revoked_at IS NULL AND expires_at > $2 AND uses < uses_allowed \
             RETURNING {TOKEN_COLUMNS}"
        )))
        .bind(token_hash)
        .bind(now)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(token) = row.as_ref().map(token_from).transpose()? else {
            tx.rollback().await?;
            let refusal = match self.enrollment_token_by_hash(token_hash).await? {
                None => EnrollRefusal::Unknown,
                Some(t) if t.revoked_at.is_some() => EnrollRefusal::Revoked(t),
                Some(t) if t.expires_at <= now => EnrollRefusal::Expired(t),
                Some(t) => EnrollRefusal::UsedUp(t),
            };
            return Ok(Err(refusal));
        };
        let enrollment = match &token.device_id {
            Some(device_id) => {
                let row = sqlx::query(AssertSqlSafe(format!(
                    "UPDATE devices SET signing_key = $1, box_key = $2, key_version = key_version + 1, \
                     rekeyed_at = $3, hostname = $4 \
                     WHERE id = $5 AND org_id = $6 AND revoked_at IS NULL \
                     RETURNING {DEVICE_COLUMNS}"
                )))
                .bind(new.signing_key.to_vec())
                .bind(new.box_key.to_vec())
                .bind(now)
                .bind(new.hostname)
                .bind(device_id)
                .bind(&token.org_id)
                .fetch_optional(&mut *tx)
                .await?;
                let Some(device) = row.as_ref().map(device_from).transpose()? else {
                    tx.rollback().await?;
                    return Ok(Err(EnrollRefusal::DeviceRevoked(token)));
                };
                // The org key was wrapped to the old box key, which is gone: a custodian
                // grants it again to the new one.
                sqlx::query("DELETE FROM org_key_wraps WHERE org_id = $1 AND recipient = $2")
                    .bind(&device.org_id)
                    .bind(format!("device:{}", device.id))
                    .execute(&mut *tx)
                    .await?;
                Enrollment {
                    device,
                    token,
                    rekeyed: true,
                }
            }
            None => {
                let mut labels = new.labels.clone();
                labels.extend(token.labels.clone());
                let device = Device {
                    id: new_id(),
                    org_id: token.org_id.clone(),
                    name: new.name.to_string(),
                    hostname: new.hostname.to_string(),
                    labels,
                    signing_key: new.signing_key,
                    box_key: new.box_key,
                    key_version: 1,
                    enrolled_at: now,
                    rekeyed_at: None,
                    last_seen_at: None,
                    health: "offline".to_string(),
                    revoked_at: None,
                    revoked_reason: None,
                };
                sqlx::query(
                    "INSERT INTO devices (id, org_id, name, hostname, labels, signing_key, box_key, \
                     key_version, enrolled_at, health) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
                )
                .bind(&device.id)
                .bind(&device.org_id)
                .bind(&device.name)
                .bind(&device.hostname)
                .bind(labels_text(&device.labels))
                .bind(device.signing_key.to_vec())
                .bind(device.box_key.to_vec())
                .bind(device.key_version)
                .bind(device.enrolled_at)
                .bind(&device.health)
                .execute(&mut *tx)
                .await?;
                Enrollment {
                    device,
                    token,
                    rekeyed: false,
                }
            }
        };
        tx.commit().await?;
        Ok(Ok(enrollment))
    }

    // -----------------------------------------------------------------------------------------
    // Devices.

    /// A device of an organisation (revoked ones included).
    pub async fn device(&self, org_id: &str, id: &str) -> Result<Option<Device>, StoreError> {
        let row = sqlx::query(AssertSqlSafe(format!(
            "SELECT {DEVICE_COLUMNS} FROM devices WHERE org_id = $1 AND id = $2"
        )))
        .bind(org_id)
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(device_from).transpose()
    }

    /// A device by id alone: for the link, where the device names itself before it proves who
    /// it is. Nothing from it reaches a caller before the device's signature is checked.
    pub async fn device_by_id(&self, id: &str) -> Result<Option<Device>, StoreError> {
        let row = sqlx::query(AssertSqlSafe(format!(
            "SELECT {DEVICE_COLUMNS} FROM devices WHERE id = $1"
        )))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(device_from).transpose()
    }

    /// Every live (not revoked) device of an organisation.
    pub async fn live_devices(&self, org_id: &str) -> Result<Vec<Device>, StoreError> {
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT {DEVICE_COLUMNS} FROM devices WHERE org_id = $1 AND revoked_at IS NULL ORDER BY id"
        )))
        .bind(org_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(device_from).collect()
    }

    /// Up to `limit` devices of an organisation whose id sorts before `before_id` (newest
    /// enrolment first); revoked ones included.
    pub async fn list_devices(
        &self,
        org_id: &str,
        before_id: Option<&str>,
        limit: i64,
    ) -> Result<Vec<Device>, StoreError> {
        let rows = self
            .page_by_id(DEVICE_COLUMNS, "devices", org_id, before_id, limit)
            .await?;
        rows.iter().map(device_from).collect()
    }

    /// Replaces the labels (and, when given, the name) of a live device of `org_id`; `None`
    /// when there is no such live device.
    pub async fn update_device(
        &self,
        org_id: &str,
        id: &str,
        labels: &Labels,
        name: Option<&str>,
    ) -> Result<Option<Device>, StoreError> {
        let row = match name {
            Some(name) => {
                sqlx::query(AssertSqlSafe(format!(
                    "UPDATE devices SET labels = $1, name = $2 \
                     WHERE org_id = $3 AND id = $4 AND revoked_at IS NULL RETURNING {DEVICE_COLUMNS}"
                )))
                .bind(labels_text(labels))
                .bind(name)
                .bind(org_id)
                .bind(id)
                .fetch_optional(&self.pool)
                .await?
            }
            None => {
                sqlx::query(AssertSqlSafe(format!(
                    "UPDATE devices SET labels = $1 \
                     WHERE org_id = $2 AND id = $3 AND revoked_at IS NULL RETURNING {DEVICE_COLUMNS}"
                )))
                .bind(labels_text(labels))
                .bind(org_id)
                .bind(id)
                .fetch_optional(&self.pool)
                .await?
            }
        };
        row.as_ref().map(device_from).transpose()
    }

    /// Revokes a live device of `org_id` (keeping `reason`, which may be empty) and withdraws
    /// its unused re-key tokens. When the device held a wrap of the active secrets key, that
    /// key is marked `rotation_required` (the device may have kept it) with an audit record, in
    /// the same transaction; from then on its wraps are no longer served. Returns false when
    /// there is no such live device.
    pub async fn revoke_device(
        &self,
        org_id: &str,
        id: &str,
        reason: &str,
    ) -> Result<bool, StoreError> {
        let now = now_us();
        let mut tx = self.pool.begin().await?;
        let done = sqlx::query(
            "UPDATE devices SET revoked_at = $1, revoked_reason = $2 \
             WHERE org_id = $3 AND id = $4 AND revoked_at IS NULL",
        )
        .bind(now)
        .bind(reason)
        .bind(org_id)
        .bind(id)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() == 0 {
            tx.rollback().await?;
            return Ok(false);
        }
        sqlx::query(
            "UPDATE enrollment_tokens SET revoked_at = $1 \
             WHERE org_id = $2 AND device_id = $3 AND revoked_at IS NULL",
        )
        .bind(now)
        .bind(org_id)
        .bind(id)
        .execute(&mut *tx)
        .await?;
        let name: String = sqlx::query_scalar("SELECT name FROM devices WHERE id = $1")
            .bind(id)
            .fetch_one(&mut *tx)
            .await?;
        let why = if reason.trim().is_empty() {
            format!("device {name} ({id}) was revoked and may have kept the org key")
        } else {
            format!(
                "device {name} ({id}) was revoked ({}) and may have kept the org key",
                reason.trim()
            )
        };
        super::secrets::flag_rotation_in(
            &mut tx,
            org_id,
            &format!("device:{id}"),
            &why,
            serde_json::json!({"device": id, "device_name": name}),
        )
        .await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Records that a device was heard from now.
    pub async fn touch_device(&self, id: &str) -> Result<(), StoreError> {
        sqlx::query("UPDATE devices SET last_seen_at = $1 WHERE id = $2")
            .bind(now_us())
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// The servers the given devices' proxies reported, by device then service.
    pub async fn device_servers(
        &self,
        device_ids: &[String],
    ) -> Result<Vec<DeviceServer>, StoreError> {
        let mut out = Vec::new();
        for chunk in device_ids.chunks(INSERT_CHUNK) {
            let sql = format!(
                "SELECT {SERVER_COLUMNS} FROM device_servers WHERE device_id IN ({}) \
                 ORDER BY device_id, service",
                placeholders(1, chunk.len())
            );
            let mut q = sqlx::query(AssertSqlSafe(sql));
            for id in chunk {
                q = q.bind(id);
            }
            for row in q.fetch_all(&self.pool).await? {
                out.push(server_from(&row)?);
            }
        }
        Ok(out)
    }

    /// A heartbeat: the device was heard from, and each server's health is recorded with the
    /// version of the proxy that reported it. A server
    /// that starts crash-looping (restarts in the last hour reach [`CRASH_LOOP_RESTARTS`]) gets
    /// one `server.crash_loop` event in the organisation's audit trail, in the same transaction
    /// as the state change, so concurrent heartbeats and replicas record it once; it is
    /// returned. A server that calms down is re-armed.
    pub async fn record_heartbeat(
        &self,
        device: &Device,
        servers: &[ServerHealth],
        proxy_version: Option<&str>,
    ) -> Result<Vec<String>, StoreError> {
        let now = now_us();
        let mut started = Vec::new();
        let mut tx = self.pool.begin().await?;
        sqlx::query("UPDATE devices SET last_seen_at = $1 WHERE id = $2")
            .bind(now)
            .bind(&device.id)
            .execute(&mut *tx)
            .await?;
        for s in servers {
            let restarts = i64::from(s.restarts_last_hour);
            sqlx::query(
                "INSERT INTO device_servers (device_id, service, state, restarts_last_hour, last_error, crash_loop, updated_at, proxy_version) \
                 VALUES ($1, $2, $3, $4, $5, 0, $6, $7) \
                 ON CONFLICT (device_id, service) DO UPDATE SET state = excluded.state, \
                 restarts_last_hour = excluded.restarts_last_hour, last_error = excluded.last_error, \
                 updated_at = excluded.updated_at, proxy_version = excluded.proxy_version",
            )
            .bind(&device.id)
            .bind(&s.service)
            .bind(server_state_name(s.state))
            .bind(restarts)
            .bind(s.last_error.clone())
            .bind(now)
            .bind(proxy_version.map(str::to_owned))
            .execute(&mut *tx)
            .await?;
            let entered = sqlx::query(
                "UPDATE device_servers SET crash_loop = 1 \
                 WHERE device_id = $1 AND service = $2 AND crash_loop = 0 AND restarts_last_hour >= $3",
            )
            .bind(&device.id)
            .bind(&s.service)
            .bind(CRASH_LOOP_RESTARTS)
            .execute(&mut *tx)
            .await?;
            if entered.rows_affected() > 0 {
                let event = system_event(
                    device,
                    "server.crash_loop",
                    &format!("{}/{}", device.id, s.service),
                    serde_json::json!({
                        "device": device.id,
                        "device_name": device.name,
                        "service": s.service,
                        "state": server_state_name(s.state),
                        "restarts_last_hour": restarts,
                        "last_error": s.last_error,
                    }),
                );
                insert_audit(&mut tx, &event, now).await?;
                started.push(s.service.clone());
            } else {
                sqlx::query(
                    "UPDATE device_servers SET crash_loop = 0 \
                     WHERE device_id = $1 AND service = $2 AND crash_loop = 1 AND restarts_last_hour < $3",
                )
                .bind(&device.id)
                .bind(&s.service)
                .bind(CRASH_LOOP_RESTARTS)
                .execute(&mut *tx)
                .await?;
            }
        }
        tx.commit().await?;
        Ok(started)
    }

    /// Live devices whose recorded health may no longer match their last heartbeat, given the
    /// moments before which a device is no longer `online` (`online_after`) and no longer
    /// `stale` (`stale_after`).
    pub async fn devices_due_health(
        &self,
        online_after: i64,
        stale_after: i64,
    ) -> Result<Vec<Device>, StoreError> {
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT {DEVICE_COLUMNS} FROM devices WHERE revoked_at IS NULL AND ( \
               (health = 'online' AND (last_seen_at IS NULL OR last_seen_at < $1)) \
            OR (health = 'stale' AND (last_seen_at IS NULL OR last_seen_at >= $1 OR last_seen_at < $2)) \
            OR (health = 'offline' AND last_seen_at >= $2))"
        )))
        .bind(online_after)
        .bind(stale_after)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(device_from).collect()
    }

    /// Moves a device's recorded health from `from` to `to` and records `event` with it, in one
    /// transaction. Returns false (and records nothing) when another task or replica moved it
    /// first.
    pub async fn set_device_health(
        &self,
        device_id: &str,
        from: &str,
        to: &str,
        event: &AuditEvent,
    ) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await?;
        let done = sqlx::query(
            "UPDATE devices SET health = $1 WHERE id = $2 AND health = $3 AND revoked_at IS NULL",
        )
        .bind(to)
        .bind(device_id)
        .bind(from)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() == 0 {
            tx.rollback().await?;
            return Ok(false);
        }
        insert_audit(&mut tx, event, now_us()).await?;
        tx.commit().await?;
        Ok(true)
    }

    // -----------------------------------------------------------------------------------------
    // Audit events shipped by devices.

    /// Stores a batch of a device's audit events in one transaction and returns only after it
    /// committed. Each event becomes a row of `audit_events` in the device's organisation with
    /// actor `device`/`<device id>` and the record as its detail; an id that is already stored
    /// is not stored again (`ON CONFLICT (id) DO NOTHING`), so a re-sent batch is acknowledged
    /// without duplicates. An id already used by another actor is reported in
    /// [`IngestOutcome::foreign`] and not acknowledged.
    pub async fn ingest_device_audit(
        &self,
        device: &Device,
        events: &[AuditEnvelope],
        ip: &str,
    ) -> Result<IngestOutcome, StoreError> {
        let mut seen = std::collections::HashSet::new();
        let unique: Vec<&AuditEnvelope> = events
            .iter()
            .filter(|e| seen.insert(e.id.as_str()))
            .collect();
        if unique.is_empty() {
            return Ok(IngestOutcome::default());
        }
        let mut inserted = std::collections::HashSet::new();
        let mut tx = self.pool.begin().await?;
        for chunk in unique.chunks(INSERT_CHUNK) {
            let values: Vec<String> = (0..chunk.len())
                .map(|i| format!("({})", placeholders(i * 17 + 1, 17)))
                .collect();
            let sql = format!(
                "INSERT INTO audit_events (id, org_id, occurred_at, kind, actor_kind, actor_id, target, outcome, ip, detail, \
                 user_name, agent, service, tool, decision, risk, command) \
                 VALUES {} ON CONFLICT (id) DO NOTHING RETURNING id",
                values.join(", ")
            );
            let mut q = sqlx::query(AssertSqlSafe(sql));
            for e in chunk {
                // The filterable facts get columns of their own (see store/audit.rs); the
                // person is the record's `user`, else the device's `user` label.
                let facets = super::AuditFacets::from_detail(&e.kind, &e.record);
                let user = facets.user.or_else(|| device.labels.get("user").cloned());
                q = q
                    .bind(&e.id)
                    .bind(&device.org_id)
                    .bind(e.occurred_at)
                    .bind(&e.kind)
                    .bind("device")
                    .bind(&device.id)
                    .bind(audit_target(e))
                    .bind(audit_outcome(e))
                    .bind(ip)
                    .bind(e.record.to_string())
                    .bind(user)
                    .bind(facets.agent)
                    .bind(facets.service)
                    .bind(facets.tool)
                    .bind(facets.decision)
                    .bind(facets.risk)
                    .bind(facets.command);
            }
            for row in q.fetch_all(&mut *tx).await? {
                let id: String = row.try_get("id")?;
                inserted.insert(id);
            }
        }
        // Ids that were stored before: this device's own (a re-sent batch) or someone else's.
        let repeats: Vec<&str> = unique
            .iter()
            .map(|e| e.id.as_str())
            .filter(|id| !inserted.contains(*id))
            .collect();
        let mut own = std::collections::HashSet::new();
        for chunk in repeats.chunks(INSERT_CHUNK) {
            let sql = format!(
                "SELECT id FROM audit_events WHERE actor_kind = 'device' AND actor_id = $1 AND id IN ({})",
                placeholders(2, chunk.len())
            );
            let mut q = sqlx::query(AssertSqlSafe(sql)).bind(&device.id);
            for id in chunk {
                q = q.bind(*id);
            }
            for row in q.fetch_all(&mut *tx).await? {
                let id: String = row.try_get("id")?;
                own.insert(id);
            }
        }
        tx.commit().await?;
        let mut outcome = IngestOutcome::default();
        for e in unique {
            if inserted.contains(&e.id) || own.contains(&e.id) {
                outcome.acked.push(e.id.clone());
            } else {
                outcome.foreign.push(e.id.clone());
            }
        }
        Ok(outcome)
    }

    // -----------------------------------------------------------------------------------------
    // Messages between replicas.

    /// Stores a message for the links of `device_id` (optionally only those wrapping
    /// `service`); returns its id, which other replicas are told by NOTIFY.
    pub async fn create_link_message(
        &self,
        device_id: &str,
        service: Option<&str>,
        body: &str,
    ) -> Result<String, StoreError> {
        let id = new_id();
        let (columns, values) = match service {
            Some(_) => (", service", ", $5"),
            None => ("", ""),
        };
        let mut q = sqlx::query(AssertSqlSafe(format!(
            "INSERT INTO link_messages (id, device_id, body, created_at{columns}) VALUES ($1, $2, $3, $4{values})"
        )))
        .bind(&id)
        .bind(device_id)
        .bind(body)
        .bind(now_us());
        if let Some(service) = service {
            q = q.bind(service);
        }
        q.execute(&self.pool).await?;
        Ok(id)
    }

    /// Messages stored at or after `since` (Unix µs), oldest first: `(id, device, service, body)`.
    pub async fn link_messages_since(
        &self,
        since: i64,
    ) -> Result<Vec<(String, String, Option<String>, String)>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, device_id, service, body FROM link_messages WHERE created_at >= $1 ORDER BY created_at, id",
        )
        .bind(since)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get("id")?,
                    r.try_get("device_id")?,
                    r.try_get("service")?,
                    r.try_get("body")?,
                ))
            })
            .collect()
    }

    /// One stored message: `(device, service, body)`.
    pub async fn link_message(
        &self,
        id: &str,
    ) -> Result<Option<(String, Option<String>, String)>, StoreError> {
        let row = sqlx::query("SELECT device_id, service, body FROM link_messages WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| {
            Ok((
                r.try_get("device_id")?,
                r.try_get("service")?,
                r.try_get("body")?,
            ))
        })
        .transpose()
    }

    /// Deletes messages stored before `before` (Unix µs); returns how many.
    pub async fn purge_link_messages(&self, before: i64) -> Result<u64, StoreError> {
        let done = sqlx::query("DELETE FROM link_messages WHERE created_at < $1")
            .bind(before)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }
}

/// What a shipped event is about: `service/tool` for tool calls, the service for sessions.
fn audit_target(e: &AuditEnvelope) -> String {
    let field = |k: &str| e.record.get(k).and_then(serde_json::Value::as_str);
    match (field("service"), field("tool")) {
        (Some(s), Some(t)) => format!("{s}/{t}"),
        (Some(s), None) => s.to_string(),
        _ => String::new(),
    }
}

/// The record's own outcome when it states one (`executed`, `blocked`, …), else `recorded`.
fn audit_outcome(e: &AuditEnvelope) -> String {
    e.record
        .get("outcome")
        .and_then(serde_json::Value::as_str)
        .unwrap_or("recorded")
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_count_from_where_they_are_told() {
        assert_eq!(placeholders(1, 3), "$1, $2, $3");
        assert_eq!(placeholders(11, 2), "$11, $12");
    }

    #[test]
    fn targets_and_outcomes_come_from_the_record() {
        let e = AuditEnvelope {
            id: "1".into(),
            occurred_at: 0,
            kind: "tool_call".into(),
            record: serde_json::json!({"service": "git", "tool": "push", "outcome": "blocked"}),
        };
        assert_eq!(audit_target(&e), "git/push");
        assert_eq!(audit_outcome(&e), "blocked");
        let s = AuditEnvelope {
            record: serde_json::json!({"service": "git"}),
            ..e
        };
        assert_eq!(audit_target(&s), "git");
        assert_eq!(audit_outcome(&s), "recorded");
    }
}
