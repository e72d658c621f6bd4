//! The outbox: audit events waiting for the control plane's acknowledgement.
//!
//! When the proxy is enrolled ([`super::AuditStore::open_with_outbox`]), the writer thread adds an
//! event to the `outbox` table of `audit.sqlite3` in the same transaction that writes the audit
//! row: a `tool_call` event whose id is the call's id when the call is recorded, a later
//! `tool_call` snapshot (a fresh event id) when its verdict or outcome changes, and a `session`
//! snapshot when a session changes. Journal replay ([`super::recover`]) queues the calls it
//! brings in the same way once an enrolled proxy has used the database, so a `kill -9` between
//! the journal and SQLite loses nothing.
//!
//! The link reads batches in `seq` order through an [`OutboxReader`] (its own read-only
//! connection), builds each event from the current row (a call shipped after it finished
//! carries its outcome), sends them, and hands the acknowledged ids back to the writer
//! ([`super::AuditStore::outbox_ack`]), which deletes exactly those rows. Nothing else ever
//! removes an event, except the [`WhenFull::DropOldest`] rule.
//!
//! The control plane deduplicates by event id, so re-sending after a reconnect or a restart is
//! harmless; several snapshots of one call share its `record.id` and the newest one (by
//! `decided_at_us` / `finished_at_us`) is the call's final state.

use std::path::{Path, PathBuf};

use flowlink_proto::link::AuditEnvelope;
use rusqlite::{Connection, OpenFlags, OptionalExtension, params};

use super::AuditError;
use super::schema::{
    self, CALL_COLUMNS, KIND_OVERFLOW, KIND_SESSION, KIND_TOOL_CALL, SESSION_COLUMNS,
};
use super::store::{BUSY_TIMEOUT, DB_FILE_NAME};

/// The default bound on the outbox (`--outbox-max-events`).
pub const DEFAULT_OUTBOX_MAX_EVENTS: u64 = 100_000;

/// What happens when the outbox holds `max_events` events that the control plane has not
/// acknowledged (it has been unreachable for a while).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WhenFull {
    /// The secure default: nothing recorded is ever dropped; new tool calls are refused with a
    /// JSON-RPC error saying that the audit outbox is full and the control plane unreachable,
    /// until acknowledgements make room. The refusals themselves are recorded and queued, so the
    /// bound can be passed by the number of refused calls.
    #[default]
    Block,
    /// Tool calls go on; the oldest un-shipped events are deleted to make room, and one
    /// `outbox_overflow` event (at most one a second) says how many were dropped since the
    /// previous one. Dropping an older overflow event carries its count into the next one, so
    /// the count of dropped events is never lost.
    DropOldest,
}

impl WhenFull {
    /// `block` or `drop-oldest`, as on the command line.
    pub fn parse(s: &str) -> Option<WhenFull> {
        match s {
            "block" => Some(WhenFull::Block),
            "drop-oldest" | "drop_oldest" => Some(WhenFull::DropOldest),
            _ => None,
        }
    }
    /// The command-line spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            WhenFull::Block => "block",
            WhenFull::DropOldest => "drop-oldest",
        }
    }
}

/// The outbox's bound and what happens at it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutboxConfig {
    /// Most events kept (at least 1).
    pub max_events: u64,
    /// What happens at the bound.
    pub when_full: WhenFull,
}

impl Default for OutboxConfig {
    fn default() -> Self {
        OutboxConfig {
            max_events: DEFAULT_OUTBOX_MAX_EVENTS,
            when_full: WhenFull::Block,
        }
    }
}

/// One queued event, ready to ship.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboxEvent {
    /// Its place in the outbox.
    pub seq: i64,
    /// What is sent.
    pub envelope: AuditEnvelope,
}

/// A read-only view of the outbox, for the link.
pub struct OutboxReader {
    conn: Connection,
    path: PathBuf,
}

impl OutboxReader {
    /// Opens `<data_dir>/audit.sqlite3` read-only. The audit store must have been opened (and so
    /// migrated) before.
    pub fn open(data_dir: &Path) -> Result<OutboxReader, AuditError> {
        let path = data_dir.join(DB_FILE_NAME);
        let read_err = |source| AuditError::Read {
            path: path.clone(),
            source,
        };
        if !path.exists() {
            return Err(AuditError::NotFound { path });
        }
        let conn = Connection::open_with_flags(
            &path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(read_err)?;
        conn.busy_timeout(BUSY_TIMEOUT).map_err(read_err)?;
        Ok(OutboxReader { conn, path })
    }

    fn read_err(&self, source: rusqlite::Error) -> AuditError {
        AuditError::Read {
            path: self.path.clone(),
            source,
        }
    }

    /// Events waiting for acknowledgement.
    pub fn depth(&self) -> Result<u64, AuditError> {
        schema::outbox_depth(&self.conn).map_err(|e| self.read_err(e))
    }

    /// Up to `limit` events after `after_seq`, oldest first. An event whose call or session row
    /// is missing (the database was edited by hand) is returned with a `null` record rather than
    /// holding up the rest.
    pub fn batch(&self, after_seq: i64, limit: usize) -> Result<Vec<OutboxEvent>, AuditError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows: Vec<(i64, String, String, String, i64, Option<String>)> = self
            .conn
            .prepare_cached(
                "SELECT seq, event_id, kind, ref_id, occurred_at_us, record FROM outbox \
                 WHERE seq > ?1 ORDER BY seq LIMIT ?2",
            )
            .and_then(|mut st| {
                st.query_map(params![after_seq, limit], |r| {
                    Ok((
                        r.get(0)?,
                        r.get(1)?,
                        r.get(2)?,
                        r.get(3)?,
                        r.get(4)?,
                        r.get(5)?,
                    ))
                })?
                .collect()
            })
            .map_err(|e| self.read_err(e))?;
        let mut out = Vec::with_capacity(rows.len());
        for (seq, id, kind, ref_id, occurred_at, record) in rows {
            let record = match kind.as_str() {
                KIND_TOOL_CALL => self.call_json(&ref_id)?,
                KIND_SESSION => self.session_json(&ref_id)?,
                _ => record
                    .as_deref()
                    .and_then(|r| serde_json::from_str(r).ok())
                    .unwrap_or(serde_json::Value::Null),
            };
            if record.is_null() {
                tracing::warn!(event = %id, kind = %kind, "an outbox event's record is missing; shipping it empty");
            }
            out.push(OutboxEvent {
                seq,
                envelope: AuditEnvelope {
                    id,
                    occurred_at,
                    kind,
                    record,
                },
            });
        }
        Ok(out)
    }

    fn call_json(&self, id: &str) -> Result<serde_json::Value, AuditError> {
        let raw = self
            .conn
            .prepare_cached(&format!(
                "SELECT {CALL_COLUMNS} FROM tool_calls WHERE id = ?1"
            ))
            .and_then(|mut st| st.query_row(params![id], schema::raw_call).optional())
            .map_err(|e| self.read_err(e))?;
        let Some(raw) = raw else {
            return Ok(serde_json::Value::Null);
        };
        let rec = raw.into_record(&self.path)?;
        Ok(serde_json::to_value(&rec).unwrap_or(serde_json::Value::Null))
    }

    fn session_json(&self, id: &str) -> Result<serde_json::Value, AuditError> {
        let rec = self
            .conn
            .prepare_cached(&format!(
                "SELECT {SESSION_COLUMNS} FROM sessions WHERE id = ?1"
            ))
            .and_then(|mut st| {
                st.query_row(params![id], schema::session_from_row)
                    .optional()
            })
            .map_err(|e| self.read_err(e))?
            .flatten();
        Ok(rec
            .and_then(|r| serde_json::to_value(&r).ok())
            .unwrap_or(serde_json::Value::Null))
    }
}

/// Makes room under [`WhenFull::DropOldest`] and writes the overflow record when one is due,
/// inside the writer's transaction. Returns whether dropped events still wait to be reported.
pub(crate) fn make_room(conn: &Connection, cfg: &OutboxConfig) -> rusqlite::Result<bool> {
    if cfg.when_full != WhenFull::DropOldest {
        return Ok(false);
    }
    let max = cfg.max_events.max(1);
    let n = schema::outbox_depth(conn)?;
    let before =
        u64::try_from(schema::meta_get(conn, "pending_dropped")?.unwrap_or(0)).unwrap_or(0);
    let mut pending = before;
    let last = schema::meta_get(conn, "last_overflow_at_us")?.unwrap_or(0);
    let now = super::now_us();
    let due = now.saturating_sub(last) >= OVERFLOW_RECORD_EVERY_US;
    let mut excess = n.saturating_sub(max);
    let emit = due && (excess > 0 || pending > 0);
    if emit && n - excess + 1 > max {
        // Room for the overflow record itself.
        excess += 1;
    }
    if excess > 0 {
        let oldest: Vec<(i64, String, Option<String>)> = conn
            .prepare_cached("SELECT seq, kind, record FROM outbox ORDER BY seq LIMIT ?1")?
            .query_map(params![i64::try_from(excess).unwrap_or(i64::MAX)], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })?
            .collect::<rusqlite::Result<_>>()?;
        let mut dropped = 0u64;
        let mut last_seq = 0;
        for (seq, kind, record) in &oldest {
            last_seq = *seq;
            dropped += if kind == KIND_OVERFLOW {
                // Its count moves into the next record.
                record
                    .as_deref()
                    .and_then(|r| {
                        serde_json::from_str::<flowlink_proto::audit::OutboxOverflowRecord>(r).ok()
                    })
                    .map_or(0, |r| r.dropped)
            } else {
                1
            };
        }
        conn.prepare_cached("DELETE FROM outbox WHERE seq <= ?1")?
            .execute(params![last_seq])?;
        if pending == 0 {
            schema::meta_set(conn, "first_dropped_at_us", now)?;
        }
        pending += dropped;
    }
    if emit && pending > 0 {
        let id = uuid::Uuid::now_v7().to_string();
        let first = schema::meta_get(conn, "first_dropped_at_us")?.unwrap_or(now);
        let rec = flowlink_proto::audit::OutboxOverflowRecord {
            schema: flowlink_proto::audit::SCHEMA_VERSION,
            id: id.clone(),
            dropped: pending,
            max_events: max,
            first_dropped_at_us: first,
            recorded_at_us: now,
            message: format!(
                "the audit outbox reached its bound of {max} events while the control plane was unreachable; {pending} un-shipped audit event(s) were dropped (--outbox-when-full drop-oldest)"
            ),
        };
        let text = serde_json::to_string(&rec)
            .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?;
        schema::enqueue(conn, &id, KIND_OVERFLOW, &id, now, Some(&text))?;
        tracing::error!(
            dropped = pending,
            max_events = max,
            "audit outbox full: dropped the oldest un-shipped events (an outbox_overflow event records how many)"
        );
        pending = 0;
        schema::meta_set(conn, "last_overflow_at_us", now)?;
    }
    if pending != before {
        schema::meta_set(
            conn,
            "pending_dropped",
            i64::try_from(pending).unwrap_or(i64::MAX),
        )?;
    }
    Ok(pending > 0)
}

/// At most one overflow record per second.
const OVERFLOW_RECORD_EVERY_US: i64 = 1_000_000;
