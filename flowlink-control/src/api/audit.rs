//! Reading an organisation's audit trail: filtered, newest first, keyset-paginated.
//!
//! The facet filters (`device`, `user`, `agent`, `service`, `tool`, `decision`, `min_risk`,
//! `family`, `kind`, `actor`, the time range) each have an index ending in the page order, so
//! any page costs about the same at the ten-millionth event as at the first. The free-text `q`
//! has no index (a case-insensitive substring of target, kind, tool or command): combine it with
//! a time range or a facet on large trails. The web UI's audit pages and exports
//! (`crate::ui::audit`) read the same filters through [`AuditQuery::filter`].

use axum::extract::{Query, State};
use axum::http::Method;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::auth::rfc3339;
use super::{Access, ApiError, ApiResult, ApiRoute, AppState, OrgCaller};
use crate::auth::Permission;
use crate::store::{AuditFamily, AuditFilter, StoredAuditEvent};

/// The routes of this module.
pub fn routes() -> Vec<ApiRoute> {
    vec![ApiRoute::new(
        Method::GET,
        "/api/v1/orgs/{org}/audit",
        Access::Org(Permission::AuditRead),
        list,
    )]
}

/// The longest filter value accepted.
pub const MAX_FILTER_CHARS: usize = 200;

/// Filters and paging. An empty value is the same as leaving the parameter out.
#[derive(Debug, Clone, Default, Deserialize, Serialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    /// Only this kind (`auth.login`), or a family ending in a dot (`auth.`).
    pub kind: Option<String>,
    /// Only this actor (user, token or device id).
    pub actor: Option<String>,
    /// From this time, inclusive: RFC 3339 (`2026-01-31T12:00:00Z`), or `2026-01-31T12:00`
    /// read as UTC.
    pub since: Option<String>,
    /// Until this time, exclusive (the same forms as `since`).
    pub until: Option<String>,
    /// Only events shipped by the proxies of this device (its id).
    pub device: Option<String>,
    /// Only this user, exactly: a person's e-mail, or for agents' events the OS account (the
    /// device's `user` label).
    pub user: Option<String>,
    /// Only this agent (MCP client name), exactly.
    pub agent: Option<String>,
    /// Only this service, exactly.
    pub service: Option<String>,
    /// Only this tool, exactly.
    pub tool: Option<String>,
    /// Only this decision: allow, block, rate_limited, pending, approved, denied, timed_out,
    /// error.
    pub decision: Option<String>,
    /// Only events whose shield risk is at least this (0-100).
    #[param(value_type = Option<u8>, minimum = 0, maximum = 100)]
    pub min_risk: Option<String>,
    /// `people` (everything not shipped by a proxy) or `agents` (what proxies shipped).
    pub family: Option<String>,
    /// Free text, case-insensitive, found in the target, kind, tool or command. Not indexed:
    /// slower than the other filters on a large trail, so narrow by time or a facet as well.
    pub q: Option<String>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// Page size, 1-500 (default 100).
    pub limit: Option<u32>,
}

/// A filter value: trimmed, empty as absent, not longer than [`MAX_FILTER_CHARS`].
fn value(name: &str, v: &Option<String>) -> Result<Option<String>, ApiError> {
    let Some(v) = v.as_deref().map(str::trim).filter(|v| !v.is_empty()) else {
        return Ok(None);
    };
    if v.chars().count() > MAX_FILTER_CHARS {
        return Err(ApiError::bad_request(format!(
            "`{name}` is longer than {MAX_FILTER_CHARS} characters; shorten it"
        )));
    }
    Ok(Some(v.to_string()))
}

impl AuditQuery {
    /// The store's filter for these parameters (without the cursor and page size), or a 400
    /// saying which value is wrong and what is expected.
    pub fn filter(&self) -> Result<AuditFilter, ApiError> {
        let decision = value("decision", &self.decision)?;
        if let Some(d) = &decision
            && flowlink_proto::audit::Verdict::parse(d).is_none()
        {
            return Err(ApiError::bad_request(format!(
                "`decision` `{d}` is not one of allow, block, rate_limited, pending, approved, denied, timed_out, error"
            )));
        }
        let min_risk = value("min_risk", &self.min_risk)?
            .map(|r| match r.parse::<i64>() {
                Ok(n) if (0..=100).contains(&n) => Ok(n),
                _ => Err(ApiError::bad_request(format!(
                    "`min_risk` `{r}` must be a whole number from 0 to 100"
                ))),
            })
            .transpose()?;
        let family = value("family", &self.family)?
            .map(|f| {
                AuditFamily::parse(&f).ok_or_else(|| {
                    ApiError::bad_request(format!("`family` `{f}` must be `people` or `agents`"))
                })
            })
            .transpose()?;
        let since = value("since", &self.since)?
            .map(|s| parse_time("since", &s))
            .transpose()?;
        let until = value("until", &self.until)?
            .map(|s| parse_time("until", &s))
            .transpose()?;
        if let (Some(s), Some(u)) = (since, until)
            && u <= s
        {
            return Err(ApiError::bad_request(
                "`until` must be later than `since`; swap them or widen the range",
            ));
        }
        Ok(AuditFilter {
            kind: value("kind", &self.kind)?,
            actor_id: value("actor", &self.actor)?,
            device_id: value("device", &self.device)?,
            user: value("user", &self.user)?,
            agent: value("agent", &self.agent)?,
            service: value("service", &self.service)?,
            tool: value("tool", &self.tool)?,
            decision,
            min_risk,
            family,
            text: value("q", &self.q)?,
            since,
            until,
            before: None,
            limit: 0,
        })
    }
}

/// One event.
#[derive(Debug, Serialize, ToSchema)]
pub struct AuditEventView {
    /// Id.
    pub id: String,
    /// Time (RFC 3339, µs).
    pub occurred_at: String,
    /// Kind.
    pub kind: String,
    /// `user`, `token`, `system`, `device`, `anonymous`.
    pub actor_kind: String,
    /// Actor id.
    pub actor_id: String,
    /// Target.
    pub target: String,
    /// Outcome.
    pub outcome: String,
    /// Client address.
    pub ip: String,
    /// Details.
    #[schema(value_type = Object)]
    pub detail: serde_json::Value,
    /// The person (e-mail) or, for agents' events, the OS account.
    pub user: Option<String>,
    /// The agent (MCP client).
    pub agent: Option<String>,
    /// The service.
    pub service: Option<String>,
    /// The tool.
    pub tool: Option<String>,
    /// The proxy's decision.
    pub decision: Option<String>,
    /// The shield's risk, 0-100.
    pub risk: Option<i64>,
    /// A tool call's command (or its arguments as JSON), shortened to 4096 characters.
    pub command: Option<String>,
}

impl From<StoredAuditEvent> for AuditEventView {
    fn from(e: StoredAuditEvent) -> AuditEventView {
        AuditEventView {
            id: e.id,
            occurred_at: rfc3339(e.occurred_at),
            kind: e.event.kind,
            actor_kind: e.event.actor_kind,
            actor_id: e.event.actor_id,
            target: e.event.target,
            outcome: e.event.outcome,
            ip: e.event.ip,
            detail: e.event.detail,
            user: e.facets.user,
            agent: e.facets.agent,
            service: e.facets.service,
            tool: e.facets.tool,
            decision: e.facets.decision,
            risk: e.facets.risk,
            command: e.facets.command,
        }
    }
}

/// A page of events.
#[derive(Debug, Serialize, ToSchema)]
pub struct AuditPage {
    /// Newest first.
    pub items: Vec<AuditEventView>,
    /// Pass as `cursor` for the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

/// Unix µs of an RFC 3339 time, or of `YYYY-MM-DDTHH:MM[:SS]` read as UTC (what a browser's
/// date-time field sends).
pub fn parse_time(name: &str, s: &str) -> Result<i64, ApiError> {
    use time::format_description::well_known::Rfc3339;
    use time::macros::format_description;
    let t = time::OffsetDateTime::parse(s, &Rfc3339)
        .or_else(|_| {
            time::PrimitiveDateTime::parse(
                s,
                format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]"),
            )
            .or_else(|_| {
                time::PrimitiveDateTime::parse(
                    s,
                    format_description!("[year]-[month]-[day]T[hour]:[minute]"),
                )
            })
            .map(time::PrimitiveDateTime::assume_utc)
        })
        .map_err(|_| {
            ApiError::bad_request(format!(
                "`{name}` must be a time like 2026-01-31T12:00:00Z (or 2026-01-31T12:00, read as UTC)"
            ))
        })?;
    Ok(i64::try_from(t.unix_timestamp_nanos() / 1000).unwrap_or(i64::MAX))
}

/// Encodes a (time, id) keyset position.
pub fn encode_cursor(t: i64, id: &str) -> String {
    super::page::encode_key(&format!("{t}:{id}"))
}

/// Decodes a (time, id) keyset position.
pub fn decode_cursor(s: &str) -> Result<(i64, String), ApiError> {
    let bad = || ApiError::bad_request("`cursor` is not one this server returned");
    let text = super::page::decode_key(s)?;
    let (t, id) = text.split_once(':').ok_or_else(bad)?;
    Ok((t.parse().map_err(|_| bad())?, id.to_string()))
}

#[utoipa::path(get, path = "/api/v1/orgs/{org}/audit", tag = "audit",
    params(("org" = String, Path, description = "Organisation id or slug"), AuditQuery),
    responses((status = 200, body = AuditPage)))]
async fn list(
    State(state): State<AppState>,
    caller: OrgCaller,
    query: Result<Query<AuditQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<axum::Json<AuditPage>> {
    let Query(q) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let limit = super::page::PageQuery {
        cursor: None,
        limit: q.limit,
    }
    .limit()?;
    let filter = AuditFilter {
        before: q.cursor.as_deref().map(decode_cursor).transpose()?,
        limit: limit + 1,
        ..q.filter()?
    };
    let events = state.store.list_audit(&caller.org.id, &filter).await?;
    let (events, next_cursor) =
        super::page::finish(events, limit, |e| format!("{}:{}", e.occurred_at, e.id));
    let items = events.into_iter().map(AuditEventView::from).collect();
    Ok(axum::Json(AuditPage { items, next_cursor }))
}

/// The OpenAPI fragment of this module.
#[derive(utoipa::OpenApi)]
#[openapi(paths(list), components(schemas(AuditEventView, AuditPage)))]
pub struct Doc;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_from_browsers_and_rfc3339() {
        let z = parse_time("since", "2026-01-31T12:00:00Z").expect("rfc3339");
        assert_eq!(parse_time("since", "2026-01-31T12:00").expect("local"), z);
        assert_eq!(parse_time("since", "2026-01-31T12:00:00").expect("s"), z);
        assert!(parse_time("since", "yesterday").is_err());
    }

    #[test]
    fn bad_filter_values_say_what_is_expected() {
        let q = AuditQuery {
            min_risk: Some("high".into()),
            ..AuditQuery::default()
        };
        assert!(q.filter().unwrap_err().message.contains("0 to 100"));
        let q = AuditQuery {
            decision: Some("maybe".into()),
            ..AuditQuery::default()
        };
        assert!(q.filter().unwrap_err().message.contains("allow, block"));
        let q = AuditQuery {
            family: Some(" ".into()),
            service: Some(" git ".into()),
            ..AuditQuery::default()
        };
        let f = q.filter().expect("valid");
        assert_eq!((f.family, f.service.as_deref()), (None, Some("git")));
    }
}
