//! The on-disk schema: forward-only migrations and the row <-> record mapping.

use std::path::Path;

use flowlink_proto::audit::{Outcome, PolicySource, SessionRecord, ToolCallRecord, Verdict};
use rusqlite::{Connection, Row, TransactionBehavior, params};

use super::AuditError;

/// Migration `i` (0-based) takes the database from `user_version = i` to `i + 1`. Only ever append.
const MIGRATIONS: &[&str] = &[
    // Version 1.
    r#"
    CREATE TABLE tool_calls (
        id             TEXT    NOT NULL PRIMARY KEY,  -- UUIDv7, sorts by time
        schema         INTEGER NOT NULL,
        session_id     TEXT    NOT NULL,
        received_at_us INTEGER NOT NULL,
        decided_at_us  INTEGER NOT NULL,
        agent          TEXT    NOT NULL,
        service        TEXT    NOT NULL,
        tool           TEXT    NOT NULL,
        arguments      TEXT    NOT NULL,              -- JSON
        verdict        TEXT    NOT NULL,
        action         TEXT    NOT NULL,
        rule_id        TEXT,
        reason         TEXT    NOT NULL,
        outcome        TEXT    NOT NULL,
        finished_at_us INTEGER,
        duration_us    INTEGER,
        error          TEXT
    );
    -- `--since`: range on the receive time.
    CREATE INDEX tool_calls_received ON tool_calls (received_at_us);
    -- `--tool` (exact or prefix), newest first.
    CREATE INDEX tool_calls_tool ON tool_calls (tool, id);
    -- No other index: each one is another page written per commit. A session timeline query
    -- will add (session_id, id) in its own migration.

    CREATE TABLE sessions (
        id                  TEXT    NOT NULL PRIMARY KEY,  -- UUIDv7
        schema              INTEGER NOT NULL,
        service             TEXT    NOT NULL,
        command             TEXT    NOT NULL,              -- JSON array of strings
        started_at_us       INTEGER NOT NULL,
        ended_at_us         INTEGER,
        client_name         TEXT,
        client_version      TEXT,
        server_name         TEXT,
        server_version      TEXT,
        protocol_version    TEXT,
        client_capabilities TEXT    NOT NULL,              -- JSON
        server_capabilities TEXT    NOT NULL,              -- JSON
        restarts            INTEGER NOT NULL,
        last_exit           TEXT
    );
    CREATE INDEX sessions_started ON sessions (started_at_us);
    "#,
    // Version 2: the shield's risk and findings.
    r#"
    ALTER TABLE tool_calls ADD COLUMN risk INTEGER;
    ALTER TABLE tool_calls ADD COLUMN findings TEXT NOT NULL DEFAULT '[]';  -- JSON array
    "#,
    // Version 3: which policy decided, and the outbox of events for the control plane.
    r#"
    ALTER TABLE tool_calls ADD COLUMN policy_source TEXT;
    ALTER TABLE tool_calls ADD COLUMN policy_bundle TEXT;

    -- Events waiting for the control plane's acknowledgement. Filled by the writer thread in the
    -- transaction that writes the audit row; a row is deleted only once the control plane has
    -- acknowledged its event id. `seq` is never reused (AUTOINCREMENT), so a shipper can read
    -- "everything after the last row it sent".
    CREATE TABLE outbox (
        seq            INTEGER PRIMARY KEY AUTOINCREMENT,
        event_id       TEXT    NOT NULL UNIQUE,  -- the control plane deduplicates by it
        kind           TEXT    NOT NULL,         -- tool_call | session | outbox_overflow
        ref_id         TEXT    NOT NULL,         -- the call or session the event is about
        occurred_at_us INTEGER NOT NULL,
        record         TEXT                      -- JSON, for kinds not read from another table
    );
    CREATE INDEX outbox_ref ON outbox (ref_id);
    -- The outbox's depth, kept exact by triggers so reading it costs one row.
    CREATE TABLE outbox_count (n INTEGER NOT NULL);
    INSERT INTO outbox_count (n) VALUES (0);
    CREATE TRIGGER outbox_counted_in AFTER INSERT ON outbox
        BEGIN UPDATE outbox_count SET n = n + 1; END;
    CREATE TRIGGER outbox_counted_out AFTER DELETE ON outbox
        BEGIN UPDATE outbox_count SET n = n - 1; END;
    -- armed: an enrolled proxy uses this database (recovery then queues what it replays);
    -- pending_dropped / first_dropped_at_us / last_overflow_at_us: the drop_oldest bookkeeping.
    CREATE TABLE outbox_meta (key TEXT NOT NULL PRIMARY KEY, value INTEGER NOT NULL);
    "#,
];

/// The schema version this build writes.
pub(crate) const LATEST: u32 = MIGRATIONS.len() as u32;

/// Brings the database up to [`LATEST`], one migration per transaction. Several proxies may open the
/// same file at once: the version is re-read under the write lock so each migration runs once.
pub(crate) fn migrate(conn: &mut Connection, path: &Path) -> Result<(), AuditError> {
    loop {
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|source| AuditError::Open {
                path: path.to_owned(),
                source,
            })?;
        let found: i64 = tx
            .pragma_query_value(None, "user_version", |row| row.get(0))
            .map_err(|source| AuditError::Open {
                path: path.to_owned(),
                source,
            })?;
        if found > i64::from(LATEST) || found < 0 {
            return Err(AuditError::SchemaTooNew {
                path: path.to_owned(),
                found,
                supported: LATEST,
            });
        }
        if found == i64::from(LATEST) {
            return Ok(());
        }
        // `found` is in 0..LATEST here, so both conversions are exact.
        let next = found as u32 + 1;
        let sql = MIGRATIONS[found as usize];
        let migrate_err = |source| AuditError::Migrate {
            path: path.to_owned(),
            version: next,
            source,
        };
        tx.execute_batch(sql).map_err(migrate_err)?;
        tx.pragma_update(None, "user_version", next)
            .map_err(migrate_err)?;
        tx.commit().map_err(migrate_err)?;
        tracing::info!(path = %path.display(), version = next, "audit database schema upgraded");
    }
}

/// The columns of `tool_calls`, in the order [`call_from_row`] reads them.
pub(crate) const CALL_COLUMNS: &str = "id, schema, session_id, received_at_us, decided_at_us, agent, \
     service, tool, arguments, verdict, action, rule_id, reason, outcome, finished_at_us, \
     duration_us, error, risk, findings, policy_source, policy_bundle";

/// A row read as stored, before the text columns are checked.
pub(crate) struct RawCall {
    id: String,
    schema: i64,
    session_id: String,
    received_at_us: i64,
    decided_at_us: i64,
    agent: String,
    service: String,
    tool: String,
    arguments: String,
    verdict: String,
    action: String,
    rule_id: Option<String>,
    reason: String,
    outcome: String,
    finished_at_us: Option<i64>,
    duration_us: Option<i64>,
    error: Option<String>,
    risk: Option<i64>,
    findings: String,
    policy_source: Option<String>,
    policy_bundle: Option<String>,
}

/// Reads one row selected with [`CALL_COLUMNS`].
pub(crate) fn raw_call(row: &Row<'_>) -> rusqlite::Result<RawCall> {
    Ok(RawCall {
        id: row.get(0)?,
        schema: row.get(1)?,
        session_id: row.get(2)?,
        received_at_us: row.get(3)?,
        decided_at_us: row.get(4)?,
        agent: row.get(5)?,
        service: row.get(6)?,
        tool: row.get(7)?,
        arguments: row.get(8)?,
        verdict: row.get(9)?,
        action: row.get(10)?,
        rule_id: row.get(11)?,
        reason: row.get(12)?,
        outcome: row.get(13)?,
        finished_at_us: row.get(14)?,
        duration_us: row.get(15)?,
        error: row.get(16)?,
        risk: row.get(17)?,
        findings: row.get(18)?,
        policy_source: row.get(19)?,
        policy_bundle: row.get(20)?,
    })
}

impl RawCall {
    /// Checks the text columns and builds the record.
    pub(crate) fn into_record(self, path: &Path) -> Result<ToolCallRecord, AuditError> {
        let bad = |id: &str, what: String| AuditError::BadRow {
            path: path.to_owned(),
            id: id.to_owned(),
            what,
        };
        let schema = u32::try_from(self.schema)
            .map_err(|_| bad(&self.id, format!("schema number {}", self.schema)))?;
        let verdict = Verdict::parse(&self.verdict)
            .ok_or_else(|| bad(&self.id, format!("unknown verdict `{}`", self.verdict)))?;
        let outcome = Outcome::parse(&self.outcome)
            .ok_or_else(|| bad(&self.id, format!("unknown outcome `{}`", self.outcome)))?;
        // The JSON error says where the text is broken, never what it holds.
        let arguments = serde_json::from_str(&self.arguments)
            .map_err(|e| bad(&self.id, format!("arguments are not JSON: {e}")))?;
        let findings = serde_json::from_str(&self.findings)
            .map_err(|e| bad(&self.id, format!("findings are not valid: {e}")))?;
        let policy_source = match self.policy_source.as_deref() {
            None => None,
            Some(s) => Some(
                PolicySource::parse(s)
                    .ok_or_else(|| bad(&self.id, format!("unknown policy source `{s}`")))?,
            ),
        };
        let risk = match self.risk {
            None => None,
            Some(r) => Some(u8::try_from(r).map_err(|_| bad(&self.id, format!("risk {r}")))?),
        };
        Ok(ToolCallRecord {
            schema,
            id: self.id,
            session_id: self.session_id,
            received_at_us: self.received_at_us,
            decided_at_us: self.decided_at_us,
            agent: self.agent,
            service: self.service,
            tool: self.tool,
            arguments,
            verdict,
            action: self.action,
            rule_id: self.rule_id,
            reason: self.reason,
            outcome,
            finished_at_us: self.finished_at_us,
            duration_us: self.duration_us,
            error: self.error,
            risk,
            findings,
            policy_source,
            policy_bundle: self.policy_bundle,
        })
    }
}

/// Inserts a call unless one with its id is already on record (then changes nothing and returns 0),
/// so replaying a journal segment is harmless. Returns the number of rows inserted.
pub(crate) fn insert_call(conn: &Connection, r: &ToolCallRecord) -> rusqlite::Result<usize> {
    let arguments = serde_json::to_string(&r.arguments)
        .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?;
    let findings = serde_json::to_string(&r.findings)
        .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?;
    conn.prepare_cached(
        "INSERT INTO tool_calls (id, schema, session_id, received_at_us, decided_at_us, \
         agent, service, tool, arguments, verdict, action, rule_id, reason, outcome, \
         finished_at_us, duration_us, error, risk, findings, policy_source, policy_bundle) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, \
         ?18, ?19, ?20, ?21) \
         ON CONFLICT (id) DO NOTHING",
    )?
    .execute(params![
        r.id,
        r.schema,
        r.session_id,
        r.received_at_us,
        r.decided_at_us,
        r.agent,
        r.service,
        r.tool,
        arguments,
        r.verdict.as_str(),
        r.action,
        r.rule_id,
        r.reason,
        r.outcome.as_str(),
        r.finished_at_us,
        r.duration_us,
        r.error,
        r.risk,
        findings,
        r.policy_source.map(PolicySource::as_str),
        r.policy_bundle,
    ])
}

/// Event kinds in the outbox.
pub(crate) const KIND_TOOL_CALL: &str = "tool_call";
pub(crate) const KIND_SESSION: &str = "session";
pub(crate) const KIND_OVERFLOW: &str = "outbox_overflow";

/// Whether an enrolled proxy has used this database (then replayed calls are queued too).
pub(crate) fn outbox_armed(conn: &Connection) -> rusqlite::Result<bool> {
    Ok(meta_get(conn, "armed")? == Some(1))
}

/// Reads an `outbox_meta` value.
pub(crate) fn meta_get(conn: &Connection, key: &str) -> rusqlite::Result<Option<i64>> {
    use rusqlite::OptionalExtension;
    conn.prepare_cached("SELECT value FROM outbox_meta WHERE key = ?1")?
        .query_row(params![key], |r| r.get(0))
        .optional()
}

/// Sets an `outbox_meta` value.
pub(crate) fn meta_set(conn: &Connection, key: &str, value: i64) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT INTO outbox_meta (key, value) VALUES (?1, ?2) \
         ON CONFLICT (key) DO UPDATE SET value = excluded.value",
    )?
    .execute(params![key, value])?;
    Ok(())
}

/// Queues one event for the control plane.
pub(crate) fn enqueue(
    conn: &Connection,
    event_id: &str,
    kind: &str,
    ref_id: &str,
    occurred_at_us: i64,
    record: Option<&str>,
) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT INTO outbox (event_id, kind, ref_id, occurred_at_us, record) \
         VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (event_id) DO NOTHING",
    )?
    .execute(params![event_id, kind, ref_id, occurred_at_us, record])?;
    Ok(())
}

/// Queues a later snapshot of a call or session: a new event id, and older snapshots of the same
/// call or session that are still queued are dropped (the newest carries everything they did).
/// The event with the call's own id (its first record) is kept.
pub(crate) fn enqueue_update(
    conn: &Connection,
    kind: &str,
    ref_id: &str,
    occurred_at_us: i64,
) -> rusqlite::Result<()> {
    conn.prepare_cached("DELETE FROM outbox WHERE ref_id = ?1 AND kind = ?2 AND event_id != ?1")?
        .execute(params![ref_id, kind])?;
    enqueue(
        conn,
        &uuid::Uuid::now_v7().to_string(),
        kind,
        ref_id,
        occurred_at_us,
        None,
    )
}

/// The outbox's depth.
pub(crate) fn outbox_depth(conn: &Connection) -> rusqlite::Result<u64> {
    let n: i64 = conn
        .prepare_cached("SELECT n FROM outbox_count")?
        .query_row([], |r| r.get(0))?;
    Ok(u64::try_from(n).unwrap_or(0))
}

/// The columns of `sessions`, in the order [`session_from_row`] reads them.
pub(crate) const SESSION_COLUMNS: &str = "id, schema, service, command, started_at_us, \
     ended_at_us, client_name, client_version, server_name, server_version, protocol_version, \
     client_capabilities, server_capabilities, restarts, last_exit";

/// Reads one row selected with [`SESSION_COLUMNS`]; `None` when a JSON column is damaged.
pub(crate) fn session_from_row(row: &Row<'_>) -> rusqlite::Result<Option<SessionRecord>> {
    let command: String = row.get(3)?;
    let client_capabilities: String = row.get(11)?;
    let server_capabilities: String = row.get(12)?;
    let schema: i64 = row.get(1)?;
    let restarts: i64 = row.get(13)?;
    let (Ok(command), Ok(client_capabilities), Ok(server_capabilities)) = (
        serde_json::from_str(&command),
        serde_json::from_str(&client_capabilities),
        serde_json::from_str(&server_capabilities),
    ) else {
        return Ok(None);
    };
    Ok(Some(SessionRecord {
        schema: u32::try_from(schema).unwrap_or(0),
        id: row.get(0)?,
        service: row.get(2)?,
        command,
        started_at_us: row.get(4)?,
        ended_at_us: row.get(5)?,
        client_name: row.get(6)?,
        client_version: row.get(7)?,
        server_name: row.get(8)?,
        server_version: row.get(9)?,
        protocol_version: row.get(10)?,
        client_capabilities,
        server_capabilities,
        restarts: u32::try_from(restarts).unwrap_or(0),
        last_exit: row.get(14)?,
    }))
}
