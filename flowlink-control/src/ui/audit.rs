//! The audit pages: an organisation's audit trail with a filter form, keyset pages of 50 and
//! each event expandable to its full record; the command history (the same page showing only
//! agents' tool calls, with their commands); and the export of the current filter as CSV or
//! JSON Lines, streamed 1000 events at a time so an export of millions of events never sits in
//! memory.
//!
//! The filter form is a GET, so a filtered view is a link people can share; its parameters are
//! the API's (`GET /api/v1/orgs/{org}/audit`, [`AuditQuery`]) plus `view=commands`, and a bad
//! value is a 400 page saying what is expected. Every route is `Access::Org(AuditRead)`, like
//! the API's: a member without `audit:read` is refused the page and the exports before any
//! handler runs. An export is itself recorded (`audit.export`, with the filter).

use std::collections::HashMap;

use askama::Template;
use axum::body::{Body, Bytes};
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{HeaderValue, Method, header};
use axum::response::IntoResponse;
use serde::{Deserialize, Serialize};

use super::approvals::risk_words;
use super::{Chrome, PageResult, render};
use crate::api::audit::{AuditEventView, AuditQuery, decode_cursor, encode_cursor};
use crate::api::{Access, ApiError, ApiRoute, AppState, OrgCaller};
use crate::auth::Permission;
use crate::store::{AuditFilter, Store, StoredAuditEvent, now_us};

/// Events per page.
pub const PAGE_SIZE: u32 = 50;
/// Events read from the store per step of an export.
pub const EXPORT_BATCH: u32 = 1000;
/// Devices offered in the device filter.
const DEVICE_CHOICES: i64 = 500;

/// The routes of the audit pages.
pub fn routes() -> Vec<ApiRoute> {
    use Permission::AuditRead;
    vec![
        ApiRoute::new(
            Method::GET,
            "/ui/orgs/{org}/audit",
            Access::Org(AuditRead),
            trail,
        ),
        ApiRoute::new(
            Method::GET,
            "/ui/orgs/{org}/audit/export.csv",
            Access::Org(AuditRead),
            export_csv,
        ),
        ApiRoute::new(
            Method::GET,
            "/ui/orgs/{org}/audit/export.jsonl",
            Access::Org(AuditRead),
            export_jsonl,
        ),
    ]
}

/// The page's query: the API's filters, `view` and the cursor.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TrailQuery {
    /// `commands` for the command history; empty or absent for every event.
    pub view: Option<String>,
    /// From (inclusive).
    pub since: Option<String>,
    /// Until (exclusive).
    pub until: Option<String>,
    /// Device id.
    pub device: Option<String>,
    /// User (e-mail or OS account).
    pub user: Option<String>,
    /// Agent.
    pub agent: Option<String>,
    /// Service.
    pub service: Option<String>,
    /// Tool.
    pub tool: Option<String>,
    /// Decision.
    pub decision: Option<String>,
    /// Minimum risk.
    pub min_risk: Option<String>,
    /// `people` or `agents`.
    pub family: Option<String>,
    /// Kind, or a kind family ending in a dot.
    pub kind: Option<String>,
    /// Actor id.
    pub actor: Option<String>,
    /// Free text.
    pub q: Option<String>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// The kind of the events the command history shows.
const TOOL_CALL: &str = "tool_call";

impl TrailQuery {
    fn commands(&self) -> Result<bool, ApiError> {
        match self.view.as_deref().map(str::trim) {
            None | Some("") | Some("all") => Ok(false),
            Some("commands") => Ok(true),
            Some(other) => Err(ApiError::bad_request(format!(
                "`view` `{other}` must be `commands` or left out"
            ))),
        }
    }

    /// The store filter (without cursor and page size), the command history's kind applied.
    fn filter(&self) -> Result<AuditFilter, ApiError> {
        let commands = self.commands()?;
        let mut filter = AuditQuery {
            kind: self.kind.clone(),
            actor: self.actor.clone(),
            since: self.since.clone(),
            until: self.until.clone(),
            device: self.device.clone(),
            user: self.user.clone(),
            agent: self.agent.clone(),
            service: self.service.clone(),
            tool: self.tool.clone(),
            decision: self.decision.clone(),
            min_risk: self.min_risk.clone(),
            family: self.family.clone(),
            q: self.q.clone(),
            cursor: None,
            limit: None,
        }
        .filter()?;
        if commands {
            if filter.kind.as_deref().is_some_and(|k| k != TOOL_CALL) {
                return Err(ApiError::bad_request(
                    "the command history shows tool calls only; leave `kind` out or open the full audit trail",
                ));
            }
            filter.kind = Some(TOOL_CALL.to_string());
        }
        Ok(filter)
    }

    /// The non-empty parameters (without the cursor), in a stable order.
    fn pairs(&self) -> Vec<(&'static str, String)> {
        let fields: [(&'static str, &Option<String>); 14] = [
            ("view", &self.view),
            ("since", &self.since),
            ("until", &self.until),
            ("device", &self.device),
            ("user", &self.user),
            ("agent", &self.agent),
            ("service", &self.service),
            ("tool", &self.tool),
            ("decision", &self.decision),
            ("min_risk", &self.min_risk),
            ("family", &self.family),
            ("kind", &self.kind),
            ("actor", &self.actor),
            ("q", &self.q),
        ];
        fields
            .into_iter()
            .filter_map(|(k, v)| {
                v.as_deref()
                    .map(str::trim)
                    .filter(|v| !v.is_empty())
                    .map(|v| (k, v.to_string()))
            })
            .collect()
    }

    /// `a=1&b=2` of [`TrailQuery::pairs`] plus `extra`.
    fn query_string(&self, extra: &[(&str, &str)]) -> String {
        let mut s = url::form_urlencoded::Serializer::new(String::new());
        for (k, v) in self.pairs() {
            s.append_pair(k, &v);
        }
        for (k, v) in extra {
            s.append_pair(k, v);
        }
        s.finish()
    }

    fn get(&self, name: &str) -> String {
        self.pairs()
            .into_iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v)
            .unwrap_or_default()
    }
}

/// `2026-11-26 04:31:07 UTC`.
fn when(us: i64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp(us.div_euclid(1_000_000))
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02} UTC",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

/// A time filter's value as a date-time field shows it (`2026-01-31T12:00:00`, UTC); the text
/// as given when it is not a time (the page then shows the error anyway).
fn field_time(raw: &str) -> String {
    match crate::api::audit::parse_time("time", raw) {
        Ok(us) => {
            let t = time::OffsetDateTime::from_unix_timestamp(us.div_euclid(1_000_000))
                .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
            format!(
                "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
                t.year(),
                u8::from(t.month()),
                t.day(),
                t.hour(),
                t.minute(),
                t.second()
            )
        }
        Err(_) => raw.to_string(),
    }
}

/// Who did it, as people read it.
fn who(e: &StoredAuditEvent, names: &HashMap<String, String>) -> String {
    let actor = &e.event.actor_id;
    match e.event.actor_kind.as_str() {
        "system" => "FlowLink".to_string(),
        "anonymous" => format!("{actor} (not signed in)"),
        _ => names.get(actor).cloned().unwrap_or_else(|| actor.clone()),
    }
}

/// One row of the table.
struct Row {
    id: String,
    time: String,
    who: String,
    /// The OS account behind an agent's event.
    account: String,
    kind: String,
    service: String,
    tool: String,
    decision: String,
    risk: Option<i64>,
    risk_words: &'static str,
    outcome: String,
    target: String,
    ip: String,
    command: String,
    detail: String,
}

fn row(e: &StoredAuditEvent, names: &HashMap<String, String>) -> Row {
    let f = &e.facets;
    Row {
        id: e.id.clone(),
        time: when(e.occurred_at),
        who: who(e, names),
        account: if e.event.actor_kind == "device" {
            f.user.clone().unwrap_or_default()
        } else {
            String::new()
        },
        kind: e.event.kind.clone(),
        service: f.service.clone().unwrap_or_default(),
        tool: f.tool.clone().unwrap_or_default(),
        decision: f.decision.clone().unwrap_or_default(),
        risk: f.risk,
        risk_words: risk_words(f.risk.unwrap_or(0)),
        outcome: e.event.outcome.clone(),
        target: e.event.target.clone(),
        ip: e.event.ip.clone(),
        command: f.command.clone().unwrap_or_default(),
        detail: serde_json::to_string_pretty(&e.event.detail).unwrap_or_default(),
    }
}

/// An option of a select.
struct Choice {
    value: String,
    label: String,
    selected: bool,
}

const DECISIONS: [&str; 8] = [
    "allow",
    "block",
    "rate_limited",
    "pending",
    "approved",
    "denied",
    "timed_out",
    "error",
];

#[derive(Template)]
#[template(path = "audit.html")]
struct TrailPage {
    chrome: Chrome,
    org_slug: String,
    org_name: String,
    commands: bool,
    rows: Vec<Row>,
    devices: Vec<Choice>,
    decisions: Vec<Choice>,
    families: Vec<Choice>,
    since: String,
    until: String,
    user: String,
    agent: String,
    service: String,
    tool: String,
    min_risk: String,
    q: String,
    /// Parameters carried along that the form has no field for (`kind`, `actor`).
    hidden: Vec<(&'static str, String)>,
    /// The query string of the filter (for export links), without the cursor.
    filter_query: String,
    /// The link to the next (older) page.
    older: Option<String>,
    /// A cursor was given: this is not the first page.
    paged: bool,
    filtered: bool,
}

async fn trail(
    State(state): State<AppState>,
    caller: OrgCaller,
    query: Result<Query<TrailQuery>, QueryRejection>,
) -> PageResult {
    let Query(q) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let commands = q.commands()?;
    let filter = AuditFilter {
        before: q.cursor.as_deref().map(decode_cursor).transpose()?,
        limit: PAGE_SIZE + 1,
        ..q.filter()?
    };
    let mut events = state.store.list_audit(&caller.org.id, &filter).await?;
    let more = events.len() > PAGE_SIZE as usize;
    events.truncate(PAGE_SIZE as usize);
    let names = state
        .store
        .audit_actor_names(&caller.org.id, &events)
        .await?;
    let base = format!(
        "{}/ui/orgs/{}/audit",
        super::base_path(&state),
        caller.org.slug
    );
    let older = match (more, events.last()) {
        (true, Some(last)) => Some(format!(
            "{base}?{}",
            q.query_string(&[("cursor", &encode_cursor(last.occurred_at, &last.id))])
        )),
        _ => None,
    };

    let device = q.get("device");
    let mut devices: Vec<Choice> = state
        .store
        .audit_device_choices(&caller.org.id, DEVICE_CHOICES)
        .await?
        .into_iter()
        .map(|(id, name)| Choice {
            selected: id == device,
            label: name,
            value: id,
        })
        .collect();
    if !device.is_empty() && !devices.iter().any(|d| d.selected) {
        devices.push(Choice {
            label: device.clone(),
            value: device.clone(),
            selected: true,
        });
    }
    let decision = q.get("decision");
    let family = q.get("family");
    let families = [("people", "People's events"), ("agents", "Agents' events")]
        .into_iter()
        .map(|(v, l)| Choice {
            value: v.into(),
            label: l.into(),
            selected: family == v,
        })
        .collect();
    let hidden = q
        .pairs()
        .into_iter()
        .filter(|(k, _)| matches!(*k, "kind" | "actor"))
        .collect();
    let filtered = q.pairs().iter().any(|(k, _)| *k != "view");
    let title = if commands {
        "Command history"
    } else {
        "Audit trail"
    };
    render(&TrailPage {
        chrome: Chrome::new(&state, &caller.caller, title),
        org_slug: caller.org.slug.clone(),
        org_name: caller.org.name.clone(),
        commands,
        rows: events.iter().map(|e| row(e, &names)).collect(),
        devices,
        decisions: DECISIONS
            .iter()
            .map(|d| Choice {
                value: (*d).into(),
                label: d.replace('_', " "),
                selected: decision == *d,
            })
            .collect(),
        families,
        since: field_time(&q.get("since")),
        until: field_time(&q.get("until")),
        user: q.get("user"),
        agent: q.get("agent"),
        service: q.get("service"),
        tool: q.get("tool"),
        min_risk: q.get("min_risk"),
        q: q.get("q"),
        hidden,
        filter_query: q.query_string(&[]),
        older,
        paged: q.cursor.is_some(),
        filtered,
    })
}

/// The export formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Csv,
    JsonLines,
}

impl Format {
    fn name(self) -> &'static str {
        match self {
            Format::Csv => "csv",
            Format::JsonLines => "jsonl",
        }
    }
}

async fn export_csv(
    State(state): State<AppState>,
    caller: OrgCaller,
    query: Result<Query<TrailQuery>, QueryRejection>,
) -> PageResult {
    export(state, caller, query, Format::Csv).await
}

async fn export_jsonl(
    State(state): State<AppState>,
    caller: OrgCaller,
    query: Result<Query<TrailQuery>, QueryRejection>,
) -> PageResult {
    export(state, caller, query, Format::JsonLines).await
}

/// The columns of the CSV export, in order.
pub const CSV_COLUMNS: [&str; 17] = [
    "id",
    "occurred_at",
    "kind",
    "actor_kind",
    "actor_id",
    "actor_name",
    "user",
    "agent",
    "service",
    "tool",
    "decision",
    "risk",
    "outcome",
    "target",
    "ip",
    "command",
    "detail",
];

/// One CSV field (RFC 4180): quoted when it holds a comma, quote or line break, quotes doubled.
/// A text a spreadsheet would run as a formula (starting with `=`, `+`, `-`, `@`, a tab or a
/// carriage return) gets a leading `'` so it is shown, not evaluated.
pub fn csv_field(value: &str) -> String {
    let neutral = if value.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{value}")
    } else {
        value.to_string()
    };
    if neutral.contains([',', '"', '\r', '\n']) {
        format!("\"{}\"", neutral.replace('"', "\"\""))
    } else {
        neutral
    }
}

fn csv_line(fields: &[String]) -> String {
    let mut line = fields
        .iter()
        .map(|f| csv_field(f))
        .collect::<Vec<_>>()
        .join(",");
    line.push_str("\r\n");
    line
}

fn csv_record(e: StoredAuditEvent, names: &HashMap<String, String>) -> String {
    let name = who(&e, names);
    let v = AuditEventView::from(e);
    let opt = |o: Option<String>| o.unwrap_or_default();
    csv_line(&[
        v.id,
        v.occurred_at,
        v.kind,
        v.actor_kind,
        v.actor_id,
        name,
        opt(v.user),
        opt(v.agent),
        opt(v.service),
        opt(v.tool),
        opt(v.decision),
        v.risk.map(|r| r.to_string()).unwrap_or_default(),
        v.outcome,
        v.target,
        v.ip,
        opt(v.command),
        v.detail.to_string(),
    ])
}

/// Where an export stream is.
struct ExportCursor {
    store: Store,
    org_id: String,
    filter: AuditFilter,
    format: Format,
    /// The header line is still to be sent (CSV).
    header: bool,
    done: bool,
}

/// The next chunk of an export: the header, or the next batch of events. `None` at the end.
async fn next_chunk(mut c: ExportCursor) -> Option<(Result<Bytes, std::io::Error>, ExportCursor)> {
    if c.header {
        c.header = false;
        let header = csv_line(&CSV_COLUMNS.map(String::from));
        return Some((Ok(Bytes::from(header)), c));
    }
    if c.done {
        return None;
    }
    let batch = match c.store.list_audit(&c.org_id, &c.filter).await {
        Ok(batch) => batch,
        Err(e) => {
            // The status line is sent; breaking the body off tells the client it is incomplete.
            tracing::error!(error = %e, org = %c.org_id, "audit export stopped");
            c.done = true;
            return Some((Err(std::io::Error::other("the audit export failed")), c));
        }
    };
    c.done = batch.len() < EXPORT_BATCH as usize;
    if let Some(last) = batch.last() {
        c.filter.before = Some((last.occurred_at, last.id.clone()));
    }
    let names = if c.format == Format::Csv {
        match c.store.audit_actor_names(&c.org_id, &batch).await {
            Ok(names) => names,
            Err(e) => {
                tracing::error!(error = %e, org = %c.org_id, "audit export stopped");
                c.done = true;
                return Some((Err(std::io::Error::other("the audit export failed")), c));
            }
        }
    } else {
        HashMap::new()
    };
    let mut out = String::new();
    for e in batch {
        match c.format {
            Format::Csv => out.push_str(&csv_record(e, &names)),
            Format::JsonLines => {
                let line = serde_json::to_string(&AuditEventView::from(e))
                    .unwrap_or_else(|_| "{}".to_string());
                out.push_str(&line);
                out.push('\n');
            }
        }
    }
    Some((Ok(Bytes::from(out)), c))
}

/// `audit-acme-2026-11-26.csv`: the org's slug (letters, digits and `-` only) and today (UTC).
fn file_name(slug: &str, format: Format) -> String {
    let slug: String = slug
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect();
    let day = &crate::api::auth::rfc3339(now_us())[..10];
    format!("audit-{slug}-{day}.{}", format.name())
}

async fn export(
    state: AppState,
    caller: OrgCaller,
    query: Result<Query<TrailQuery>, QueryRejection>,
    format: Format,
) -> PageResult {
    let Query(q) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let filter = AuditFilter {
        before: q.cursor.as_deref().map(decode_cursor).transpose()?,
        limit: EXPORT_BATCH,
        ..q.filter()?
    };
    let parameters: serde_json::Map<String, serde_json::Value> = q
        .pairs()
        .into_iter()
        .map(|(k, v)| (k.to_string(), serde_json::Value::String(v)))
        .collect();
    caller
        .record(
            &state,
            "audit.export",
            "audit",
            serde_json::json!({"format": format.name(), "filter": parameters}),
        )
        .await?;
    let cursor = ExportCursor {
        store: state.store.clone(),
        org_id: caller.org.id.clone(),
        filter,
        format,
        header: format == Format::Csv,
        done: false,
    };
    let body = Body::from_stream(futures_util::stream::unfold(cursor, next_chunk));
    let content_type = match format {
        Format::Csv => "text/csv; charset=utf-8",
        Format::JsonLines => "application/x-ndjson; charset=utf-8",
    };
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    let disposition = format!(
        "attachment; filename=\"{}\"",
        file_name(&caller.org.slug, format)
    );
    if let Ok(v) = HeaderValue::from_str(&disposition) {
        headers.insert(header::CONTENT_DISPOSITION, v);
    }
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_fields_are_quoted_and_formulas_neutralised() {
        assert_eq!(csv_field("plain"), "plain");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(csv_field("two\nlines"), "\"two\nlines\"");
        assert_eq!(csv_field("=1+1"), "'=1+1");
        assert_eq!(csv_field("@SUM(A1)"), "'@SUM(A1)");
        assert_eq!(csv_field("-2"), "'-2");
        assert_eq!(csv_field("+cmd|' /C calc'!A0"), "'+cmd|' /C calc'!A0");
        assert_eq!(
            csv_field("=HYPERLINK(\"x\",\"y\")"),
            "\"'=HYPERLINK(\"\"x\"\",\"\"y\"\")\""
        );
    }

    #[test]
    fn file_names_carry_the_org_and_day() {
        let name = file_name("acme", Format::Csv);
        assert!(
            name.starts_with("audit-acme-20") && name.ends_with(".csv"),
            "{name}"
        );
        assert_eq!(name.len(), "audit-acme-2026-11-26.csv".len());
        assert!(file_name("a\"b", Format::JsonLines).starts_with("audit-a-b-"));
    }
}
