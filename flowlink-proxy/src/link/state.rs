//! `<data-dir>/link.sqlite3`: what the link keeps between runs and shows to `status`.
//!
//! * `bundles`: the latest verified policy bundle per service, exactly as signed (payload,
//!   signature, key id). It is verified again with the enrolled policy key whenever it is read,
//!   so an edited cache is refused, not trusted.
//! * `links`: one row per running proxy process (by pid): its link state (`connecting`,
//!   `connected`, `offline`, `revoked`), since when, the last error, and the bundle it decides with.
//!   Rows of processes that are gone are pruned by `status`.
//! * `revocations`: devices the control plane revoked, so that later processes do not reconnect.
//! * `secret_pushes`: the latest `SecretsPush` per service exactly as received: wrapped org keys
//!   and sealed secrets, never a plaintext. A proxy started while the control plane is down
//!   injects from it ([`crate::secrets`]).
//!
//! The schema moves forward in numbered steps (`PRAGMA user_version`); a step is never edited
//! once shipped, and a database from a newer proxy is used as it is.

use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use flowlink_proto::bundle::SignedBundle;
use flowlink_proto::link::SecretsPush;
use rusqlite::{Connection, OptionalExtension, params};

use super::LinkError;

/// The file's name in the data directory.
pub const STATE_FILE: &str = "link.sqlite3";

/// The schema, one step per version (`user_version` = steps applied). Only ever appended to.
const STEPS: &[&str] = &[STEP_1, STEP_2];

const STEP_1: &str = "
CREATE TABLE IF NOT EXISTS bundles (
    service        TEXT    NOT NULL PRIMARY KEY,
    bundle_id      TEXT    NOT NULL,   -- SHA-256 of the payload
    org_id         TEXT    NOT NULL,
    payload        TEXT    NOT NULL,   -- the signed JSON text, as received
    signature      TEXT    NOT NULL,
    key_id         TEXT    NOT NULL,
    issued_at_us   INTEGER NOT NULL,
    received_at_us INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS links (
    pid            INTEGER NOT NULL PRIMARY KEY,
    service        TEXT    NOT NULL,
    state          TEXT    NOT NULL,
    since_us       INTEGER NOT NULL,
    last_error     TEXT,
    bundle_id      TEXT,
    updated_at_us  INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS revocations (
    device_id      TEXT    NOT NULL PRIMARY KEY,
    reason         TEXT    NOT NULL,
    revoked_at_us  INTEGER NOT NULL
);";

const STEP_2: &str = "
CREATE TABLE IF NOT EXISTS secret_pushes (
    service        TEXT    NOT NULL PRIMARY KEY,
    push           TEXT    NOT NULL,   -- the SecretsPush JSON: wrapped keys and sealed values only
    received_at_us INTEGER NOT NULL
);";

/// A cached `SecretsPush`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachedSecrets {
    /// The service it is for.
    pub service: String,
    /// As received (sealed).
    pub push: SecretsPush,
    /// When it arrived, Unix µs.
    pub received_at_us: i64,
}

/// A cached bundle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachedBundle {
    /// The service it is for.
    pub service: String,
    /// As signed.
    pub signed: SignedBundle,
    /// When it arrived, Unix µs.
    pub received_at_us: i64,
}

/// One running proxy's link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkRow {
    /// The proxy's process id.
    pub pid: u32,
    /// The service it wraps.
    pub service: String,
    /// `connecting`, `connected`, `offline` or `revoked`.
    pub state: String,
    /// Since when, Unix µs.
    pub since_us: i64,
    /// The last error, if any.
    pub last_error: Option<String>,
    /// The bundle it decides with.
    pub bundle_id: Option<String>,
    /// Last written, Unix µs.
    pub updated_at_us: i64,
}

/// The state database.
pub struct LinkState {
    conn: Connection,
    path: PathBuf,
}

impl LinkState {
    /// Opens (creating, 0600) `<data_dir>/link.sqlite3`.
    pub fn open(data_dir: &Path) -> Result<LinkState, LinkError> {
        let path = data_dir.join(STATE_FILE);
        let err = |source| LinkError::State {
            path: path.clone(),
            source,
        };
        std::fs::create_dir_all(data_dir).map_err(|e| LinkError::CredentialStorage {
            path: path.clone(),
            why: e.to_string(),
        })?;
        // Create it 0600 before SQLite does.
        let _ = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path);
        if let Ok(meta) = std::fs::metadata(&path)
            && meta.permissions().mode() & 0o077 != 0
        {
            let _ = std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600));
        }
        let conn = Connection::open(&path).map_err(err)?;
        conn.busy_timeout(Duration::from_secs(5)).map_err(err)?;
        conn.pragma_update(None, "journal_mode", "wal")
            .map_err(err)?;
        migrate(&conn).map_err(err)?;
        Ok(LinkState { conn, path })
    }

    /// Caches the secrets pushed for `service` (sealed, as received), replacing earlier ones.
    pub fn save_secrets(&self, service: &str, push: &SecretsPush) -> Result<(), LinkError> {
        let text = serde_json::to_string(push)
            .map_err(|e| self.err(rusqlite::Error::ToSqlConversionFailure(Box::new(e))))?;
        self.conn
            .execute(
                "INSERT INTO secret_pushes (service, push, received_at_us) VALUES (?1, ?2, ?3) \
                 ON CONFLICT (service) DO UPDATE SET push = excluded.push, \
                 received_at_us = excluded.received_at_us",
                params![service, text, crate::audit::now_us()],
            )
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// The cached secrets of `service`, if any.
    pub fn secrets(&self, service: &str) -> Result<Option<CachedSecrets>, LinkError> {
        self.conn
            .query_row(
                "SELECT service, push, received_at_us FROM secret_pushes WHERE service = ?1",
                params![service],
                secrets_from_row,
            )
            .optional()
            .map_err(|e| self.err(e))
    }

    /// Every service's cached secrets.
    pub fn all_secrets(&self) -> Result<Vec<CachedSecrets>, LinkError> {
        self.conn
            .prepare("SELECT service, push, received_at_us FROM secret_pushes ORDER BY service")
            .and_then(|mut st| st.query_map([], secrets_from_row)?.collect())
            .map_err(|e| self.err(e))
    }

    /// Forgets every cached secret (a new enrolment, or a revoked device).
    pub fn forget_secrets(&self) -> Result<(), LinkError> {
        self.conn
            .execute("DELETE FROM secret_pushes", [])
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    fn err(&self, source: rusqlite::Error) -> LinkError {
        LinkError::State {
            path: self.path.clone(),
            source,
        }
    }

    /// Caches `signed` (already verified) as the bundle of `service`.
    pub fn save_bundle(
        &self,
        service: &str,
        bundle_id: &str,
        org_id: &str,
        issued_at_us: i64,
        signed: &SignedBundle,
    ) -> Result<(), LinkError> {
        self.conn
            .execute(
                "INSERT INTO bundles (service, bundle_id, org_id, payload, signature, key_id, \
                 issued_at_us, received_at_us) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) \
                 ON CONFLICT (service) DO UPDATE SET bundle_id = excluded.bundle_id, \
                 org_id = excluded.org_id, payload = excluded.payload, \
                 signature = excluded.signature, key_id = excluded.key_id, \
                 issued_at_us = excluded.issued_at_us, received_at_us = excluded.received_at_us",
                params![
                    service,
                    bundle_id,
                    org_id,
                    signed.payload,
                    signed.signature,
                    signed.key_id,
                    issued_at_us,
                    crate::audit::now_us()
                ],
            )
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// The cached bundle of `service` (unverified: verify before use).
    pub fn bundle(&self, service: &str) -> Result<Option<CachedBundle>, LinkError> {
        self.conn
            .query_row(
                "SELECT service, payload, signature, key_id, received_at_us FROM bundles \
                 WHERE service = ?1",
                params![service],
                cached_from_row,
            )
            .optional()
            .map_err(|e| self.err(e))
    }

    /// Every cached bundle.
    pub fn bundles(&self) -> Result<Vec<CachedBundle>, LinkError> {
        self.conn
            .prepare(
                "SELECT service, payload, signature, key_id, received_at_us FROM bundles \
                 ORDER BY service",
            )
            .and_then(|mut st| st.query_map([], cached_from_row)?.collect())
            .map_err(|e| self.err(e))
    }

    /// Writes this process's link row.
    pub fn set_link(&self, row: &LinkRow) -> Result<(), LinkError> {
        self.conn
            .execute(
                "INSERT INTO links (pid, service, state, since_us, last_error, bundle_id, \
                 updated_at_us) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) \
                 ON CONFLICT (pid) DO UPDATE SET service = excluded.service, \
                 state = excluded.state, since_us = excluded.since_us, \
                 last_error = excluded.last_error, bundle_id = excluded.bundle_id, \
                 updated_at_us = excluded.updated_at_us",
                params![
                    row.pid,
                    row.service,
                    row.state,
                    row.since_us,
                    row.last_error,
                    row.bundle_id,
                    row.updated_at_us
                ],
            )
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Removes a process's link row.
    pub fn remove_link(&self, pid: u32) -> Result<(), LinkError> {
        self.conn
            .execute("DELETE FROM links WHERE pid = ?1", params![pid])
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Every link row.
    pub fn links(&self) -> Result<Vec<LinkRow>, LinkError> {
        self.conn
            .prepare(
                "SELECT pid, service, state, since_us, last_error, bundle_id, updated_at_us \
                 FROM links ORDER BY service, pid",
            )
            .and_then(|mut st| {
                st.query_map([], |r| {
                    Ok(LinkRow {
                        pid: r.get(0)?,
                        service: r.get(1)?,
                        state: r.get(2)?,
                        since_us: r.get(3)?,
                        last_error: r.get(4)?,
                        bundle_id: r.get(5)?,
                        updated_at_us: r.get(6)?,
                    })
                })?
                .collect()
            })
            .map_err(|e| self.err(e))
    }

    /// Records that the control plane revoked `device_id`.
    pub fn set_revoked(&self, device_id: &str, reason: &str) -> Result<(), LinkError> {
        self.conn
            .execute(
                "INSERT INTO revocations (device_id, reason, revoked_at_us) VALUES (?1, ?2, ?3) \
                 ON CONFLICT (device_id) DO NOTHING",
                params![device_id, reason, crate::audit::now_us()],
            )
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Why and when `device_id` was revoked, if it was.
    pub fn revoked(&self, device_id: &str) -> Result<Option<(String, i64)>, LinkError> {
        self.conn
            .query_row(
                "SELECT reason, revoked_at_us FROM revocations WHERE device_id = ?1",
                params![device_id],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
            .map_err(|e| self.err(e))
    }

    /// Forgets the cached bundles and secrets (a new enrolment: they belong to the old
    /// identity).
    pub fn forget_bundles(&self) -> Result<(), LinkError> {
        self.conn
            .execute("DELETE FROM bundles", [])
            .map_err(|e| self.err(e))?;
        self.forget_secrets()
    }
}

/// Applies the schema steps this database has not had yet, each in its own transaction.
fn migrate(conn: &Connection) -> rusqlite::Result<()> {
    for (i, step) in STEPS.iter().enumerate() {
        let version = i64::try_from(i + 1).unwrap_or(i64::MAX);
        let tx =
            rusqlite::Transaction::new_unchecked(conn, rusqlite::TransactionBehavior::Immediate)?;
        let current: i64 = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        if current >= version {
            continue;
        }
        tx.execute_batch(step)?;
        tx.pragma_update(None, "user_version", version)?;
        tx.commit()?;
    }
    Ok(())
}

fn secrets_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<CachedSecrets> {
    let text: String = r.get(1)?;
    let push = serde_json::from_str(&text).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(1, rusqlite::types::Type::Text, Box::new(e))
    })?;
    Ok(CachedSecrets {
        service: r.get(0)?,
        push,
        received_at_us: r.get(2)?,
    })
}

fn cached_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<CachedBundle> {
    Ok(CachedBundle {
        service: r.get(0)?,
        signed: SignedBundle {
            payload: r.get(1)?,
            signature: r.get(2)?,
            key_id: r.get(3)?,
        },
        received_at_us: r.get(4)?,
    })
}

/// Whether process `pid` is alive (and not a zombie).
pub fn process_alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| !s.contains(") Z "))
        .unwrap_or(false)
}
