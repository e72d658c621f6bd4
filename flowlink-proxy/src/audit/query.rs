//! Reading the audit store: [`query_calls`] and the `--since` parser.

use std::path::Path;

use flowlink_proto::audit::ToolCallRecord;
use rusqlite::types::Value as SqlValue;
use rusqlite::{Connection, OpenFlags};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::AuditError;
use super::schema::{self, CALL_COLUMNS};
use super::store::BUSY_TIMEOUT;

/// Which calls to read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditQuery {
    /// Only calls received at or after this time (microseconds since the Unix epoch).
    pub since_us: Option<i64>,
    /// Only this tool: an exact name, or a pattern where `*` matches any run of characters
    /// (`git_*`). Patterns use SQL `LIKE`, so they ignore ASCII case; exact names do not.
    pub tool: Option<String>,
    /// At most this many calls: the newest ones.
    pub limit: Option<usize>,
}

/// Reads the calls that match `q` from the database at `db_path`, through a read-only connection,
/// oldest first (ascending by id, which is time order for UUIDv7). With a `limit`, the newest `limit`
/// matches are returned, still oldest first (like `tail`).
pub fn query_calls(db_path: &Path, q: &AuditQuery) -> Result<Vec<ToolCallRecord>, AuditError> {
    let read_err = |source| AuditError::Read {
        path: db_path.to_owned(),
        source,
    };
    if !db_path.exists() {
        return Err(AuditError::NotFound {
            path: db_path.to_owned(),
        });
    }
    let conn = Connection::open_with_flags(
        db_path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(read_err)?;
    conn.busy_timeout(BUSY_TIMEOUT).map_err(read_err)?;

    let version: i64 = conn
        .pragma_query_value(None, "user_version", |row| row.get(0))
        .map_err(read_err)?;
    if version > i64::from(schema::LATEST) {
        return Err(AuditError::SchemaTooNew {
            path: db_path.to_owned(),
            found: version,
            supported: schema::LATEST,
        });
    }
    if version == 0 {
        // Created but never migrated (a store that failed to open): nothing recorded.
        return Ok(Vec::new());
    }

    let columns = if version < 3 {
        // Written before the policy source was recorded; a read-only reader cannot migrate.
        CALL_COLUMNS.replace("policy_source, policy_bundle", "NULL, NULL")
    } else {
        CALL_COLUMNS.to_owned()
    };
    let mut sql = format!("SELECT {columns} FROM tool_calls WHERE 1");
    let mut args: Vec<SqlValue> = Vec::new();
    if let Some(since) = q.since_us {
        args.push(SqlValue::Integer(since));
        sql.push_str(&format!(" AND received_at_us >= ?{}", args.len()));
    }
    if let Some(tool) = &q.tool {
        if tool.contains('*') {
            args.push(SqlValue::Text(like_pattern(tool)));
            sql.push_str(&format!(" AND tool LIKE ?{} ESCAPE '\\'", args.len()));
        } else {
            args.push(SqlValue::Text(tool.clone()));
            sql.push_str(&format!(" AND tool = ?{}", args.len()));
        }
    }
    // Newest first so LIMIT keeps the newest; reversed below. -1 is "no limit" in SQLite.
    let limit = q.limit.map_or(-1, |n| i64::try_from(n).unwrap_or(i64::MAX));
    args.push(SqlValue::Integer(limit));
    sql.push_str(&format!(" ORDER BY id DESC LIMIT ?{}", args.len()));

    let mut stmt = conn.prepare(&sql).map_err(read_err)?;
    let raw = stmt
        .query_map(rusqlite::params_from_iter(args), schema::raw_call)
        .map_err(read_err)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(read_err)?;
    let mut rows = raw
        .into_iter()
        .map(|r| r.into_record(db_path))
        .collect::<Result<Vec<_>, _>>()?;
    rows.reverse();
    Ok(rows)
}

/// `git_*` -> `git\_%`: `*` becomes `%`, and `LIKE`'s own `%`, `_` and the escape are taken literally.
fn like_pattern(glob: &str) -> String {
    let mut out = String::with_capacity(glob.len() + 4);
    for c in glob.chars() {
        match c {
            '*' => out.push('%'),
            '%' | '_' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            c => out.push(c),
        }
    }
    out
}

/// Parses a `--since` value into microseconds since the Unix epoch: a duration back from `now_us`
/// (`90s`, `15m`, `2h`, `7d`) or an RFC 3339 timestamp (`2026-11-25T10:00:00Z`).
pub fn parse_since(s: &str, now_us: i64) -> Result<i64, AuditError> {
    let input = s.trim();
    let bad = |why: &str| AuditError::BadSince {
        input: s.to_owned(),
        why: why.to_owned(),
    };
    if input.is_empty() {
        return Err(bad("it is empty"));
    }
    // A timestamp has a date (and so a '-' after the first digits); a duration is digits + unit.
    if input.contains('-') || input.contains('T') || input.contains(':') {
        let t = OffsetDateTime::parse(input, &Rfc3339)
            .map_err(|e| bad(&format!("not a valid RFC 3339 timestamp ({e})")))?;
        let us = t.unix_timestamp_nanos() / 1000;
        return i64::try_from(us).map_err(|_| bad("the timestamp is out of range"));
    }
    let split = input
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| bad("the unit is missing (s, m, h or d)"))?;
    let (digits, unit) = input.split_at(split);
    if digits.is_empty() {
        return Err(bad("it does not start with a number"));
    }
    let n: i64 = digits.parse().map_err(|_| bad("the number is too large"))?;
    let unit_us: i64 = match unit {
        "s" => 1_000_000,
        "m" => 60 * 1_000_000,
        "h" => 3_600 * 1_000_000,
        "d" => 86_400 * 1_000_000,
        _ => return Err(bad("the unit must be s, m, h or d")),
    };
    n.checked_mul(unit_us)
        .and_then(|d| now_us.checked_sub(d))
        .ok_or_else(|| bad("the duration is too large"))
}
