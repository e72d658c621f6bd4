//! The audit trail: one append-only table for what people do here and what agents do through
//! their proxies. Events are never updated or deleted by the application.
//!
//! The facts people filter on (who, agent, service, tool, decision, risk, the command) are
//! copied out of the JSON `detail` into columns of their own when an event is stored
//! ([`AuditFacets`]; migration 0006 filled them for older rows), each with an index ending in
//! the page order `(occurred_at, id)`: a filtered page is an index range scan, not a walk over
//! JSON text, however many million events an organisation has. The free-text search
//! ([`AuditFilter::text`]) is a `LIKE` over several columns and cannot use an index: it is the
//! one slow filter, best combined with a time range or a facet.

use std::collections::HashMap;

use serde_json::Value;
use sqlx::Row;
use sqlx::any::AnyRow;

use sqlx::AssertSqlSafe;

use super::{Store, StoreError, new_id, now_us};

/// An event to record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEvent {
    /// The organisation, when the event belongs to one.
    pub org_id: Option<String>,
    /// What happened, dotted: `auth.login`, `auth.login_failed`, `member.role_changed`, …
    pub kind: String,
    /// `user`, `token`, `system`, `device` or `anonymous`.
    pub actor_kind: String,
    /// The user id, token id, … (or the e-mail tried, for failed sign-ins).
    pub actor_id: String,
    /// What it happened to (a user id, a policy scope, …).
    pub target: String,
    /// `success`, `failure` or `denied`.
    pub outcome: String,
    /// The client address.
    pub ip: String,
    /// Further facts, a JSON object.
    pub detail: serde_json::Value,
}

/// The longest command text kept in the `command` column (the whole call stays in `detail`).
pub const COMMAND_MAX_CHARS: usize = 4096;

/// The facts of an event that have columns (and indexes) of their own.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditFacets {
    /// The person's e-mail (a token's owner's, the e-mail tried by a failed sign-in), or for a
    /// proxy's event the OS account (the record's `user`, else the device's `user` label).
    pub user: Option<String>,
    /// The MCP client (`agent`, or a session's `client_name`).
    pub agent: Option<String>,
    /// The service.
    pub service: Option<String>,
    /// The tool.
    pub tool: Option<String>,
    /// The proxy's verdict (`allow`, `block`, `approved`, …) or a person's `decision`.
    pub decision: Option<String>,
    /// The shield's risk, 0–100.
    pub risk: Option<i64>,
    /// A tool call's `arguments.command`, else its arguments as JSON; at most
    /// [`COMMAND_MAX_CHARS`] characters.
    pub command: Option<String>,
}

impl AuditFacets {
    /// The facets `detail` states (all but `user` for people, which needs their e-mail).
    pub fn from_detail(kind: &str, detail: &Value) -> AuditFacets {
        let text = |k: &str| detail.get(k).and_then(Value::as_str).map(str::to_string);
        let command = if kind == "tool_call" {
            match detail.get("arguments") {
                None | Some(Value::Null) => None,
                Some(args) => Some(match args.get("command").and_then(Value::as_str) {
                    Some(c) => c.to_string(),
                    None => args.to_string(),
                }),
            }
        } else {
            None
        };
        AuditFacets {
            user: text("user"),
            agent: text("agent").or_else(|| text("client_name")),
            service: text("service"),
            tool: text("tool"),
            decision: text("verdict").or_else(|| text("decision")),
            // Integral JSON numbers only; a float is cut like the migration's backfill does.
            risk: detail.get("risk").and_then(|r| {
                r.as_i64()
                    .or_else(|| r.as_f64().filter(|f| f.is_finite()).map(|f| f as i64))
            }),
            command: command.map(|c| c.chars().take(COMMAND_MAX_CHARS).collect()),
        }
    }
}

/// A stored event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredAuditEvent {
    /// Its id (UUIDv7).
    pub id: String,
    /// When, Unix µs.
    pub occurred_at: i64,
    /// The event.
    pub event: AuditEvent,
    /// Its facets as stored.
    pub facets: AuditFacets,
}

/// People's events or agents' events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuditFamily {
    /// Everything not shipped by a proxy: sign-ins, policy changes, approvals, system events.
    People,
    /// What proxies shipped (actor kind `device`): tool calls, sessions, outbox overflows.
    Agents,
}

impl AuditFamily {
    /// `people` or `agents`.
    pub fn as_str(self) -> &'static str {
        match self {
            AuditFamily::People => "people",
            AuditFamily::Agents => "agents",
        }
    }

    /// Parses [`AuditFamily::as_str`].
    pub fn parse(s: &str) -> Option<AuditFamily> {
        match s {
            "people" => Some(AuditFamily::People),
            "agents" => Some(AuditFamily::Agents),
            _ => None,
        }
    }
}

/// Which events to list; every field narrows.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    /// Only this kind, or kinds under this prefix when it ends in `.`.
    pub kind: Option<String>,
    /// Only this actor id.
    pub actor_id: Option<String>,
    /// Only events shipped by this device (its id).
    pub device_id: Option<String>,
    /// Only this user ([`AuditFacets::user`]), exactly.
    pub user: Option<String>,
    /// Only this agent, exactly.
    pub agent: Option<String>,
    /// Only this service, exactly.
    pub service: Option<String>,
    /// Only this tool, exactly.
    pub tool: Option<String>,
    /// Only this decision, exactly.
    pub decision: Option<String>,
    /// Only events with a risk at least this.
    pub min_risk: Option<i64>,
    /// Only people's or agents' events.
    pub family: Option<AuditFamily>,
    /// Free text, case-insensitive, found in the target, kind, tool or command. Not indexed.
    pub text: Option<String>,
    /// Only at or after, Unix µs.
    pub since: Option<i64>,
    /// Only before, Unix µs.
    pub until: Option<i64>,
    /// Keyset cursor: events strictly older than this (occurred_at, id).
    pub before: Option<(i64, String)>,
    /// Page size.
    pub limit: u32,
}

/// `s` with LIKE's wildcards and the escape character taken literally (`ESCAPE '\'`).
pub fn like_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

const EVENT_COLUMNS: &str = "id, org_id, occurred_at, kind, actor_kind, actor_id, target, outcome, ip, detail, \
     user_name, agent, service, tool, decision, risk, command";

fn event_from(row: &AnyRow) -> Result<StoredAuditEvent, StoreError> {
    let detail: String = row.try_get("detail")?;
    Ok(StoredAuditEvent {
        id: row.try_get("id")?,
        occurred_at: row.try_get("occurred_at")?,
        event: AuditEvent {
            org_id: row.try_get("org_id")?,
            kind: row.try_get("kind")?,
            actor_kind: row.try_get("actor_kind")?,
            actor_id: row.try_get("actor_id")?,
            target: row.try_get("target")?,
            outcome: row.try_get("outcome")?,
            ip: row.try_get("ip")?,
            detail: serde_json::from_str(&detail)
                .map_err(|e| StoreError::Corrupt(format!("audit detail: {e}")))?,
        },
        facets: AuditFacets {
            user: row.try_get("user_name")?,
            agent: row.try_get("agent")?,
            service: row.try_get("service")?,
            tool: row.try_get("tool")?,
            decision: row.try_get("decision")?,
            risk: row.try_get("risk")?,
            command: row.try_get("command")?,
        },
    })
}

/// A query's arguments in placeholder order.
enum Arg {
    S(String),
    I(i64),
}

impl Store {
    /// Appends an event; returns its id.
    pub async fn record_audit(&self, e: &AuditEvent) -> Result<String, StoreError> {
        let id = new_id();
        let facets = AuditFacets::from_detail(&e.kind, &e.detail);
        // A person is named by e-mail, looked up in the same statement; a failed sign-in by the
        // e-mail it tried.
        let user = match e.actor_kind.as_str() {
            "anonymous" => Some(e.actor_id.clone()),
            _ => facets.user.clone(),
        };
        sqlx::query(
            "INSERT INTO audit_events (id, org_id, occurred_at, kind, actor_kind, actor_id, target, outcome, ip, detail, \
             user_name, agent, service, tool, decision, risk, command) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, \
             CASE $5 WHEN 'user' THEN (SELECT email FROM users WHERE id = $6) \
             WHEN 'token' THEN (SELECT u.email FROM api_tokens t JOIN users u ON u.id = t.user_id WHERE t.id = $6) \
             ELSE $11 END, $12, $13, $14, $15, $16, $17)",
        )
        .bind(&id)
        .bind(e.org_id.clone())
        .bind(now_us())
        .bind(&e.kind)
        .bind(&e.actor_kind)
        .bind(&e.actor_id)
        .bind(&e.target)
        .bind(&e.outcome)
        .bind(&e.ip)
        .bind(e.detail.to_string())
        .bind(user)
        .bind(facets.agent)
        .bind(facets.service)
        .bind(facets.tool)
        .bind(facets.decision)
        .bind(facets.risk)
        .bind(facets.command)
        .execute(&self.pool)
        .await?;
        Ok(id)
    }

    /// One page of an organisation's events, newest first.
    pub async fn list_audit(
        &self,
        org_id: &str,
        f: &AuditFilter,
    ) -> Result<Vec<StoredAuditEvent>, StoreError> {
        // Built clause by clause so no parameter is ever a NULL of unknown type.
        let mut sql = format!("SELECT {EVENT_COLUMNS} FROM audit_events WHERE org_id = $1");
        let mut args: Vec<Arg> = Vec::new();
        // `$?` is a clause's one placeholder (used once or more); `$1` is the org.
        fn push(sql: &mut String, args: &mut Vec<Arg>, clause: &str, arg: Arg) {
            args.push(arg);
            sql.push_str(&clause.replace("$?", &format!("${}", args.len() + 1)));
        }
        if let Some(kind) = &f.kind {
            if let Some(prefix) = kind.strip_suffix('.') {
                let pattern = format!("{}.%", like_escape(prefix));
                push(
                    &mut sql,
                    &mut args,
                    " AND kind LIKE $? ESCAPE '\\'",
                    Arg::S(pattern),
                );
            } else {
                push(&mut sql, &mut args, " AND kind = $?", Arg::S(kind.clone()));
            }
        }
        if let Some(actor) = &f.actor_id {
            push(
                &mut sql,
                &mut args,
                " AND actor_id = $?",
                Arg::S(actor.clone()),
            );
        }
        if let Some(device) = &f.device_id {
            push(
                &mut sql,
                &mut args,
                " AND actor_id = $? AND actor_kind = 'device'",
                Arg::S(device.clone()),
            );
        }
        let exact = [
            ("user_name", &f.user),
            ("agent", &f.agent),
            ("service", &f.service),
            ("tool", &f.tool),
            ("decision", &f.decision),
        ];
        for (column, value) in exact {
            if let Some(v) = value {
                push(
                    &mut sql,
                    &mut args,
                    &format!(" AND {column} = $?"),
                    Arg::S(v.clone()),
                );
            }
        }
        if let Some(risk) = f.min_risk {
            push(&mut sql, &mut args, " AND risk >= $?", Arg::I(risk));
        }
        // Written exactly as the partial indexes' conditions, so the planners use them.
        match f.family {
            Some(AuditFamily::People) => sql.push_str(" AND actor_kind <> 'device'"),
            Some(AuditFamily::Agents) => sql.push_str(" AND actor_kind = 'device'"),
            None => {}
        }
        if let Some(text) = &f.text {
            let pattern = format!("%{}%", like_escape(&text.to_lowercase()));
            push(
                &mut sql,
                &mut args,
                " AND (LOWER(target) LIKE $? ESCAPE '\\' OR LOWER(kind) LIKE $? ESCAPE '\\' \
                 OR LOWER(COALESCE(tool, '')) LIKE $? ESCAPE '\\' \
                 OR LOWER(COALESCE(command, '')) LIKE $? ESCAPE '\\')",
                Arg::S(pattern),
            );
        }
        if let Some(since) = f.since {
            push(&mut sql, &mut args, " AND occurred_at >= $?", Arg::I(since));
        }
        if let Some(until) = f.until {
            push(&mut sql, &mut args, " AND occurred_at < $?", Arg::I(until));
        }
        if let Some((t, id)) = &f.before {
            // `occurred_at <= t` alone bounds the index range on both engines; the rest drops
            // the rows at `t` that are not older than the cursor.
            push(&mut sql, &mut args, " AND occurred_at <= $?", Arg::I(*t));
            let a = args.len() + 1;
            push(
                &mut sql,
                &mut args,
                &format!(" AND (occurred_at < ${a} OR id < $?)"),
                Arg::S(id.clone()),
            );
        }
        push(
            &mut sql,
            &mut args,
            " ORDER BY occurred_at DESC, id DESC LIMIT $?",
            Arg::I(i64::from(f.limit)),
        );

        let mut q = sqlx::query(AssertSqlSafe(sql)).bind(org_id);
        for arg in args {
            q = match arg {
                Arg::S(s) => q.bind(s),
                Arg::I(v) => q.bind(v),
            };
        }
        let rows = q.fetch_all(&self.pool).await?;
        rows.iter().map(event_from).collect()
    }

    /// Names to show for the actors of an organisation's events: people's display names, API
    /// tokens as "owner (token name)", devices' names. Ids without a name are left out.
    pub async fn audit_actor_names(
        &self,
        org_id: &str,
        events: &[StoredAuditEvent],
    ) -> Result<HashMap<String, String>, StoreError> {
        let mut wanted: HashMap<&str, Vec<&str>> = HashMap::new();
        for e in events {
            let ids = wanted.entry(e.event.actor_kind.as_str()).or_default();
            if !ids.contains(&e.event.actor_id.as_str()) {
                ids.push(e.event.actor_id.as_str());
            }
        }
        let mut names = HashMap::new();
        let lookups = [
            (
                "user",
                "SELECT id, display_name AS name FROM users WHERE id IN",
            ),
            (
                "token",
                "SELECT t.id, u.display_name || ' (token ' || t.name || ')' AS name \
                 FROM api_tokens t JOIN users u ON u.id = t.user_id WHERE t.org_id = $1 AND t.id IN",
            ),
            (
                "device",
                "SELECT id, name FROM devices WHERE org_id = $1 AND id IN",
            ),
        ];
        for (kind, select) in lookups {
            let Some(ids) = wanted.get(kind) else {
                continue;
            };
            let scoped = select.contains("$1");
            for chunk in ids.chunks(200) {
                let first = if scoped { 2 } else { 1 };
                let list: Vec<String> = (first..first + chunk.len())
                    .map(|i| format!("${i}"))
                    .collect();
                let sql = format!("{select} ({})", list.join(", "));
                let mut q = sqlx::query(AssertSqlSafe(sql));
                if scoped {
                    q = q.bind(org_id);
                }
                for id in chunk {
                    q = q.bind(*id);
                }
                for row in q.fetch_all(&self.pool).await? {
                    names.insert(row.try_get("id")?, row.try_get("name")?);
                }
            }
        }
        Ok(names)
    }

    /// An organisation's devices as (id, name), by name, for choosing one in a filter.
    pub async fn audit_device_choices(
        &self,
        org_id: &str,
        limit: i64,
    ) -> Result<Vec<(String, String)>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, name FROM devices WHERE org_id = $1 ORDER BY name, id LIMIT $2",
        )
        .bind(org_id)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("id")?, r.try_get("name")?)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn facets_come_from_a_tool_calls_record() {
        let record = json!({"agent": "claude-code", "service": "shell", "tool": "run",
            "verdict": "block", "risk": 85, "arguments": {"command": "rm -rf ~"}});
        let f = AuditFacets::from_detail("tool_call", &record);
        assert_eq!(f.agent.as_deref(), Some("claude-code"));
        assert_eq!(f.decision.as_deref(), Some("block"));
        assert_eq!(f.risk, Some(85));
        assert_eq!(f.command.as_deref(), Some("rm -rf ~"));
        let other = json!({"arguments": {"sql": "SELECT 1"}});
        assert_eq!(
            AuditFacets::from_detail("tool_call", &other)
                .command
                .as_deref(),
            Some(r#"{"sql":"SELECT 1"}"#)
        );
        assert_eq!(AuditFacets::from_detail("session", &record).command, None);
        let long = json!({"arguments": {"command": "x".repeat(10_000)}});
        let f = AuditFacets::from_detail("tool_call", &long);
        assert_eq!(f.command.map(|c| c.len()), Some(COMMAND_MAX_CHARS));
    }

    #[test]
    fn like_wildcards_are_taken_literally() {
        assert_eq!(like_escape(r"50%_a\b"), r"50\%\_a\\b");
    }
}
