//! The agents pages: an organisation's enrolled devices with their health (online, stale,
//! offline from heartbeats, or revoked), labels, the policy layers their labels select and the
//! MCP servers their proxies wrap (state, restarts in the last hour, last error); one device
//! with its label, re-key and revoke forms; and the enrolment tokens, with the form that makes
//! one and shows its secret once.
//!
//! Who sees what: every member who may read devices sees the list and a device
//! (`Access::Org(DeviceRead)`, as `GET /api/v1/orgs/{org}/devices`); the forms are shown only
//! to those holding `device:manage`, and every POST route here, like the enrolment token list,
//! is `Access::Org(DeviceManage)` as its API twin, so a viewer's direct POST is refused by the
//! route table. Each change goes through the API's own function in [`crate::api::devices`]
//! (label rules, audit records, telling and disconnecting a revoked device's links).

use askama::Template;
use axum::extract::rejection::{FormRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{Method, StatusCode};
use serde::Deserialize;

use super::auth::sentence;
use super::layout::{render_status, when};
use super::{Chrome, PageResult, render, see_other};
use crate::api::devices::{
    DeviceUpdate, DeviceView, EnrollmentTokenView, MAX_DAYS, MAX_USES, NewEnrollmentToken,
    RekeyDevice, create_token, device_view, enroll_command, find_device, rekey, revoke,
    revoke_token, update,
};
use crate::api::page::{PageQuery, finish};
use crate::api::{Access, ApiError, ApiResult, ApiRoute, AppState, OrgCaller};
use crate::auth::Permission;
use crate::store::{Labels, PolicyScope, PolicyVersionInfo};

/// Devices per page of the list.
pub const DEVICES_PAGE: u32 = 50;
/// Enrolment tokens per page.
pub const TOKENS_PAGE: u32 = 50;

/// The routes of the agents pages.
pub fn routes() -> Vec<ApiRoute> {
    use Permission::{DeviceManage, DeviceRead};
    vec![
        ApiRoute::new(
            Method::GET,
            "/ui/orgs/{org}/agents",
            Access::Org(DeviceRead),
            list,
        ),
        ApiRoute::new(
            Method::GET,
            "/ui/orgs/{org}/agents/enrolment",
            Access::Org(DeviceManage),
            tokens,
        ),
        ApiRoute::new(
            Method::POST,
            "/ui/orgs/{org}/agents/enrolment",
            Access::Org(DeviceManage),
            create,
        ),
        ApiRoute::new(
            Method::POST,
            "/ui/orgs/{org}/agents/enrolment/{token}/revoke",
            Access::Org(DeviceManage),
            revoke_token_form,
        ),
        ApiRoute::new(
            Method::GET,
            "/ui/orgs/{org}/agents/{device}",
            Access::Org(DeviceRead),
            device_page,
        ),
        ApiRoute::new(
            Method::POST,
            "/ui/orgs/{org}/agents/{device}/labels",
            Access::Org(DeviceManage),
            labels_form,
        ),
        ApiRoute::new(
            Method::POST,
            "/ui/orgs/{org}/agents/{device}/revoke",
            Access::Org(DeviceManage),
            revoke_form,
        ),
        ApiRoute::new(
            Method::POST,
            "/ui/orgs/{org}/agents/{device}/rekey",
            Access::Org(DeviceManage),
            rekey_form,
        ),
    ]
}

// ---------------------------------------------------------------------------------------------
// Labels as people type them.

/// Labels as one `key=value` per line (the form's text).
pub fn labels_text(labels: &Labels) -> String {
    labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Reads labels written one `key=value` per line (blank lines skipped). Says which line is
/// wrong; the rules on keys and values themselves are [`crate::api::devices::check_labels`]'s.
pub fn parse_labels(text: &str) -> Result<Labels, String> {
    let mut labels = Labels::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            return Err(format!(
                "line {} (`{line}`) has no `=`; write one label per line as key=value, e.g. env=prod",
                n + 1
            ));
        };
        let (key, value) = (key.trim(), value.trim());
        if labels.insert(key.to_string(), value.to_string()).is_some() {
            return Err(format!(
                "the label `{key}` is given twice; a device has one value per label"
            ));
        }
    }
    Ok(labels)
}

// ---------------------------------------------------------------------------------------------
// The device list.

/// The policy layers (`org`, groups) a device's labels select, as `scope vN`.
fn device_layers(scopes: &[PolicyVersionInfo], labels: &Labels) -> Vec<String> {
    scopes
        .iter()
        .filter(|s| {
            PolicyScope::parse(&s.scope)
                .is_ok_and(|p| !matches!(p, PolicyScope::Service(_)) && p.applies_to(None, labels))
        })
        .map(|s| format!("{} v{}", s.scope, s.version))
        .collect()
}

/// The `service:` layer a wrapped server gets, as `scope vN`, if one is published.
fn service_layer(scopes: &[PolicyVersionInfo], service: &str) -> Option<String> {
    scopes
        .iter()
        .find(|s| {
            PolicyScope::parse(&s.scope)
                .is_ok_and(|p| matches!(p, PolicyScope::Service(ref n) if n == service))
        })
        .map(|s| format!("{} v{}", s.scope, s.version))
}

/// One device as a row of the list.
struct DeviceRow {
    d: DeviceView,
    last_seen: String,
    revoked: String,
    layers: Vec<String>,
    servers_up: usize,
    servers_crashed: usize,
    servers_restarting: usize,
}

fn device_row(d: DeviceView, scopes: &[PolicyVersionInfo]) -> DeviceRow {
    let count = |state: &str| d.servers.iter().filter(|s| s.state == state).count();
    DeviceRow {
        last_seen: d.last_seen_at.as_deref().map(when).unwrap_or_default(),
        revoked: d.revoked_at.as_deref().map(when).unwrap_or_default(),
        layers: device_layers(scopes, &d.labels),
        servers_up: count("up"),
        servers_crashed: count("crashed"),
        servers_restarting: count("restarting"),
        d,
    }
}

#[derive(Template)]
#[template(path = "agents.html")]
struct ListPage {
    chrome: Chrome,
    org_slug: String,
    org_name: String,
    live: Vec<DeviceRow>,
    revoked: Vec<DeviceRow>,
    next_cursor: Option<String>,
    can_manage: bool,
}

/// `?cursor=` of a list page.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CursorQuery {
    cursor: Option<String>,
}

async fn list(
    State(state): State<AppState>,
    caller: OrgCaller,
    query: Result<Query<CursorQuery>, QueryRejection>,
) -> PageResult {
    let Query(q) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let page = PageQuery {
        cursor: q.cursor,
        limit: Some(DEVICES_PAGE),
    };
    let limit = page.limit()?;
    let devices = state
        .store
        .list_devices(&caller.org.id, page.key()?.as_deref(), i64::from(limit) + 1)
        .await?;
    let (devices, next_cursor) = finish(devices, limit, |d| d.id.clone());
    let ids: Vec<String> = devices.iter().map(|d| d.id.clone()).collect();
    let servers = state.store.device_servers(&ids).await?;
    let scopes = state.store.list_policy_scopes(&caller.org.id).await?;
    let (mut live, mut revoked) = (Vec::new(), Vec::new());
    for d in &devices {
        let row = device_row(device_view(&state, d, &servers), &scopes);
        if d.revoked_at.is_some() {
            revoked.push(row);
        } else {
            live.push(row);
        }
    }
    render(&ListPage {
        chrome: Chrome::new(&state, &caller.caller, "Agents"),
        org_slug: caller.org.slug.clone(),
        org_name: caller.org.name.clone(),
        live,
        revoked,
        next_cursor,
        can_manage: caller.permissions.contains(Permission::DeviceManage),
    })
}

// ---------------------------------------------------------------------------------------------
// One device.

/// A wrapped MCP server as the device page shows it.
struct ServerRow {
    service: String,
    state: String,
    restarts_last_hour: i64,
    crash_loop: bool,
    last_error: String,
    reported: String,
    layer: String,
    proxy_version: String,
}

/// Field errors and kept input of the device page's forms.
#[derive(Debug, Default)]
struct DeviceForms {
    labels_text: Option<String>,
    labels_error: Option<String>,
    revoke_error: Option<String>,
    reason: String,
    rekey_days: Option<String>,
    rekey_error: Option<String>,
}

#[derive(Template)]
#[template(path = "agents_device.html")]
struct DevicePage {
    chrome: Chrome,
    org_slug: String,
    org_name: String,
    row: DeviceRow,
    enrolled: String,
    rekeyed: String,
    revoked_reason: String,
    servers: Vec<ServerRow>,
    labels_text: String,
    rekey_days: String,
    forms: DeviceForms,
    can_manage: bool,
    notice: Option<&'static str>,
}

/// `?done=` after a change (post/redirect/get).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DoneQuery {
    done: Option<String>,
}

async fn device_page_of(
    state: &AppState,
    caller: &OrgCaller,
    device_id: &str,
    forms: DeviceForms,
    notice: Option<&'static str>,
) -> ApiResult<DevicePage> {
    let device = find_device(state, &caller.org.id, device_id).await?;
    let servers = state
        .store
        .device_servers(std::slice::from_ref(&device.id))
        .await?;
    let scopes = state.store.list_policy_scopes(&caller.org.id).await?;
    let view = device_view(state, &device, &servers);
    let server_rows = view
        .servers
        .iter()
        .map(|s| ServerRow {
            service: s.service.clone(),
            state: s.state.clone(),
            restarts_last_hour: s.restarts_last_hour,
            crash_loop: s.crash_loop,
            last_error: s.last_error.clone().unwrap_or_default(),
            reported: when(&s.updated_at),
            layer: service_layer(&scopes, &s.service).unwrap_or_default(),
            proxy_version: s.proxy_version.clone().unwrap_or_default(),
        })
        .collect();
    let row = device_row(view, &scopes);
    Ok(DevicePage {
        chrome: Chrome::new(state, &caller.caller, &row.d.name),
        org_slug: caller.org.slug.clone(),
        org_name: caller.org.name.clone(),
        enrolled: when(&row.d.enrolled_at),
        rekeyed: row.d.rekeyed_at.as_deref().map(when).unwrap_or_default(),
        revoked_reason: device.revoked_reason.clone().unwrap_or_default(),
        labels_text: forms
            .labels_text
            .clone()
            .unwrap_or_else(|| labels_text(&row.d.labels)),
        rekey_days: forms.rekey_days.clone().unwrap_or_else(|| "1".into()),
        servers: server_rows,
        row,
        forms,
        can_manage: caller.permissions.contains(Permission::DeviceManage),
        notice,
    })
}

async fn device_page(
    State(state): State<AppState>,
    caller: OrgCaller,
    Path((_, device_id)): Path<(String, String)>,
    query: Result<Query<DoneQuery>, QueryRejection>,
) -> PageResult {
    let Query(q) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let notice = match q.done.as_deref() {
        Some("labels") => Some("Labels saved; its proxies get the policy for the new labels."),
        Some("revoked") => Some(
            "The device is revoked: its proxies were disconnected and are refused from now on.",
        ),
        _ => None,
    };
    let page = device_page_of(&state, &caller, &device_id, DeviceForms::default(), notice).await?;
    render(&page)
}

/// Whether `e` is about the person's input (shown next to a field) rather than the server or
/// the state of the device.
fn said_to_person(e: &ApiError) -> bool {
    e.status == StatusCode::BAD_REQUEST
}

/// The label form.
#[derive(Debug, Deserialize)]
struct LabelsForm {
    #[serde(default)]
    labels: String,
}

async fn labels_form(
    State(state): State<AppState>,
    caller: OrgCaller,
    Path((_, device_id)): Path<(String, String)>,
    form: Result<axum::Form<LabelsForm>, FormRejection>,
) -> PageResult {
    let axum::Form(form) = form.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let result = match parse_labels(&form.labels) {
        Ok(labels) => {
            let change = DeviceUpdate {
                labels: Some(labels),
                name: None,
            };
            update(&state, &caller, &device_id, change)
                .await
                .map(|_| ())
        }
        Err(message) => Err(ApiError::bad_request(message)),
    };
    match result {
        Ok(()) => Ok(see_other(
            &state,
            &format!(
                "/ui/orgs/{}/agents/{device_id}?done=labels",
                caller.org.slug
            ),
        )),
        Err(e) if said_to_person(&e) => {
            let forms = DeviceForms {
                labels_error: Some(sentence(&e.message)),
                labels_text: Some(form.labels),
                ..DeviceForms::default()
            };
            let page = device_page_of(&state, &caller, &device_id, forms, None).await?;
            render_status(StatusCode::BAD_REQUEST, &page)
        }
        Err(e) => Err(e),
    }
}

/// The revoke form: the confirmation box must be ticked.
#[derive(Debug, Deserialize)]
struct RevokeForm {
    #[serde(default)]
    understood: Option<String>,
    #[serde(default)]
    reason: String,
}

async fn revoke_form(
    State(state): State<AppState>,
    caller: OrgCaller,
    Path((_, device_id)): Path<(String, String)>,
    form: Result<axum::Form<RevokeForm>, FormRejection>,
) -> PageResult {
    let axum::Form(form) = form.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let result = if form.understood.as_deref() == Some("yes") {
        revoke(&state, &caller, &device_id, &form.reason).await
    } else {
        Err(ApiError::bad_request(
            "tick the box to confirm that the device is disconnected at once and refused after",
        ))
    };
    match result {
        Ok(()) => Ok(see_other(
            &state,
            &format!(
                "/ui/orgs/{}/agents/{device_id}?done=revoked",
                caller.org.slug
            ),
        )),
        Err(e) if said_to_person(&e) => {
            let forms = DeviceForms {
                revoke_error: Some(sentence(&e.message)),
                reason: form.reason,
                ..DeviceForms::default()
            };
            let page = device_page_of(&state, &caller, &device_id, forms, None).await?;
            render_status(StatusCode::BAD_REQUEST, &page)
        }
        Err(e) => Err(e),
    }
}

// ---------------------------------------------------------------------------------------------
// Enrolment tokens.

/// A token as a row of the list.
struct TokenRow {
    t: EnrollmentTokenView,
    labels: String,
    uses_left: i64,
    expires: String,
    created: String,
    created_by: String,
}

/// Field errors and kept input of the token form.
#[derive(Debug, Default)]
struct TokenForm {
    name: String,
    uses: String,
    days: String,
    labels: String,
    name_error: Option<String>,
    uses_error: Option<String>,
    days_error: Option<String>,
    labels_error: Option<String>,
}

impl TokenForm {
    fn blank() -> TokenForm {
        TokenForm {
            uses: "1".into(),
            days: "7".into(),
            ..TokenForm::default()
        }
    }
}

#[derive(Template)]
#[template(path = "agents_enrolment.html")]
struct TokensPage {
    chrome: Chrome,
    org_slug: String,
    org_name: String,
    rows: Vec<TokenRow>,
    next_cursor: Option<String>,
    form: TokenForm,
    max_uses: u32,
    max_days: u32,
    notice: Option<&'static str>,
}

async fn tokens_page_of(
    state: &AppState,
    caller: &OrgCaller,
    cursor: Option<String>,
    form: TokenForm,
    notice: Option<&'static str>,
) -> ApiResult<TokensPage> {
    let page = PageQuery {
        cursor,
        limit: Some(TOKENS_PAGE),
    };
    let limit = page.limit()?;
    let tokens = state
        .store
        .list_enrollment_tokens(&caller.org.id, page.key()?.as_deref(), i64::from(limit) + 1)
        .await?;
    let (tokens, next_cursor) = finish(tokens, limit, |t| t.id.clone());
    let mut rows = Vec::with_capacity(tokens.len());
    for t in &tokens {
        let created_by = match state.store.user_by_id(&t.created_by).await? {
            Some(user) => user.email,
            None => t.created_by.clone(),
        };
        let view = EnrollmentTokenView::from(t);
        rows.push(TokenRow {
            labels: labels_text(&view.labels).replace('\n', ", "),
            uses_left: (view.uses_allowed - view.uses).max(0),
            expires: when(&view.expires_at),
            created: when(&view.created_at),
            created_by,
            t: view,
        });
    }
    Ok(TokensPage {
        chrome: Chrome::new(state, &caller.caller, "Enrolment tokens"),
        org_slug: caller.org.slug.clone(),
        org_name: caller.org.name.clone(),
        rows,
        next_cursor,
        form,
        max_uses: MAX_USES,
        max_days: MAX_DAYS,
        notice,
    })
}

/// `?cursor=&done=` of the token page.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TokensQuery {
    cursor: Option<String>,
    done: Option<String>,
}

async fn tokens(
    State(state): State<AppState>,
    caller: OrgCaller,
    query: Result<Query<TokensQuery>, QueryRejection>,
) -> PageResult {
    let Query(q) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let notice = match q.done.as_deref() {
        Some("revoked") => Some("The token is revoked: no device can enrol with it any more."),
        _ => None,
    };
    let page = tokens_page_of(&state, &caller, q.cursor, TokenForm::blank(), notice).await?;
    render(&page)
}

/// The token form as sent.
#[derive(Debug, Deserialize)]
struct CreateForm {
    #[serde(default)]
    name: String,
    #[serde(default)]
    uses: String,
    #[serde(default)]
    days: String,
    #[serde(default)]
    labels: String,
}

fn uses_words() -> String {
    format!("Give how many devices may enrol with it: a whole number from 1 to {MAX_USES}.")
}

fn days_words() -> String {
    format!("Give the days until it expires: a whole number from 1 to {MAX_DAYS}.")
}

/// A number field: empty is the default (`None`); anything else must be a whole number.
fn number(text: &str) -> Result<Option<u32>, ()> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(None);
    }
    text.parse().map(Some).map_err(|_| ())
}

#[derive(Template)]
#[template(path = "agents_token.html")]
struct CreatedPage {
    chrome: Chrome,
    org_slug: String,
    org_name: String,
    token: String,
    command: String,
    t: EnrollmentTokenView,
    labels: String,
    expires: String,
    /// For a re-key token: the device's name.
    rekey_of: String,
    /// Where "I have copied it" leads.
    back: String,
}

async fn create(
    State(state): State<AppState>,
    caller: OrgCaller,
    form: Result<axum::Form<CreateForm>, FormRejection>,
) -> PageResult {
    let axum::Form(sent) = form.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let mut form = TokenForm {
        name: sent.name.clone(),
        uses: sent.uses.clone(),
        days: sent.days.clone(),
        labels: sent.labels.clone(),
        ..TokenForm::default()
    };
    let uses = number(&sent.uses).map_err(|()| uses_words());
    let days = number(&sent.days).map_err(|()| days_words());
    let labels = parse_labels(&sent.labels);
    let (uses, days, labels) = match (uses, days, labels) {
        (Ok(u), Ok(d), Ok(l)) => (u, d, l),
        (u, d, l) => {
            form.uses_error = u.err();
            form.days_error = d.err();
            form.labels_error = l.err().map(|e| sentence(&e));
            let page = tokens_page_of(&state, &caller, None, form, None).await?;
            return render_status(StatusCode::BAD_REQUEST, &page);
        }
    };
    let name = sent.name.trim();
    let req = NewEnrollmentToken {
        name: (!name.is_empty()).then(|| name.to_string()),
        uses,
        expires_in_days: days,
        labels,
    };
    match create_token(&state, &caller, req).await {
        Ok((secret, token)) => {
            let view = EnrollmentTokenView::from(&token);
            render(&CreatedPage {
                chrome: Chrome::new(&state, &caller.caller, "Enrolment token created"),
                org_slug: caller.org.slug.clone(),
                org_name: caller.org.name.clone(),
                command: enroll_command(&state, &secret),
                token: secret,
                labels: labels_text(&view.labels).replace('\n', ", "),
                expires: when(&view.expires_at),
                t: view,
                rekey_of: String::new(),
                back: format!("/ui/orgs/{}/agents/enrolment", caller.org.slug),
            })
        }
        Err(e) if said_to_person(&e) => {
            // The API's rule says which field it is about.
            if e.message.contains("`uses`") {
                form.uses_error = Some(uses_words());
            } else if e.message.contains("`expires_in_days`") {
                form.days_error = Some(days_words());
            } else if e.message.contains("label") {
                form.labels_error = Some(sentence(&e.message));
            } else {
                form.name_error = Some(sentence(&e.message));
            }
            let page = tokens_page_of(&state, &caller, None, form, None).await?;
            render_status(StatusCode::BAD_REQUEST, &page)
        }
        Err(e) => Err(e),
    }
}

/// The re-key form.
#[derive(Debug, Deserialize)]
struct RekeyForm {
    #[serde(default)]
    days: String,
}

async fn rekey_form(
    State(state): State<AppState>,
    caller: OrgCaller,
    Path((_, device_id)): Path<(String, String)>,
    form: Result<axum::Form<RekeyForm>, FormRejection>,
) -> PageResult {
    let axum::Form(form) = form.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let result = match number(&form.days) {
        Ok(days) => {
            let req = RekeyDevice {
                expires_in_days: days,
            };
            rekey(&state, &caller, &device_id, req).await
        }
        Err(()) => Err(ApiError::bad_request(days_words())),
    };
    match result {
        Ok((secret, token)) => {
            let device = find_device(&state, &caller.org.id, &device_id).await?;
            let view = EnrollmentTokenView::from(&token);
            render(&CreatedPage {
                chrome: Chrome::new(&state, &caller.caller, "Re-key token created"),
                org_slug: caller.org.slug.clone(),
                org_name: caller.org.name.clone(),
                command: enroll_command(&state, &secret),
                token: secret,
                labels: String::new(),
                expires: when(&view.expires_at),
                t: view,
                rekey_of: device.name,
                back: format!("/ui/orgs/{}/agents/{device_id}", caller.org.slug),
            })
        }
        Err(e) if said_to_person(&e) => {
            let message = if e.message.contains("`expires_in_days`") {
                days_words()
            } else {
                sentence(&e.message)
            };
            let forms = DeviceForms {
                rekey_error: Some(message),
                rekey_days: Some(form.days),
                ..DeviceForms::default()
            };
            let page = device_page_of(&state, &caller, &device_id, forms, None).await?;
            render_status(StatusCode::BAD_REQUEST, &page)
        }
        Err(e) => Err(e),
    }
}

async fn revoke_token_form(
    State(state): State<AppState>,
    caller: OrgCaller,
    Path((_, token_id)): Path<(String, String)>,
) -> PageResult {
    revoke_token(&state, &caller, &token_id).await?;
    Ok(see_other(
        &state,
        &format!("/ui/orgs/{}/agents/enrolment?done=revoked", caller.org.slug),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_read_one_per_line() {
        let labels = parse_labels("env = prod\n\n team=core \n").expect("valid");
        assert_eq!(
            labels,
            Labels::from([
                ("env".to_string(), "prod".to_string()),
                ("team".to_string(), "core".to_string())
            ])
        );
        assert_eq!(labels_text(&labels), "env=prod\nteam=core");
        assert!(
            parse_labels("env=prod\nnoequals")
                .unwrap_err()
                .contains("line 2")
        );
        assert!(parse_labels("env=a\nenv=b").unwrap_err().contains("twice"));
        assert_eq!(parse_labels("").expect("empty"), Labels::new());
    }

    #[test]
    fn numbers_are_whole_or_absent() {
        assert_eq!(number(" 5 "), Ok(Some(5)));
        assert_eq!(number(""), Ok(None));
        assert!(number("-1").is_err() && number("two").is_err() && number("1.5").is_err());
    }
}
