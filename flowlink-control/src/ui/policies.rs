//! The policy pages: the scopes of an organisation with their current versions, one scope's
//! current policy with line numbers and syntax highlighting (tokenised here, on the server), the
//! editor with validation errors at their line, the versions of a scope with diffs and rollback,
//! and the "what would happen" tester.
//!
//! Every page calls the API's own functions in [`crate::api::policies`]: publishing
//! ([`publish_version`]: the same validation in every combination of layers, the same
//! `base_version` guard), rollback, diff, validate and explain; nothing here decides what a
//! policy means. Reading needs `policy:read`, editing and rollback `policy:write`, as on the API;
//! the forms are shown only to those holding `policy:write`, and the route table refuses anyone
//! else's POST before a handler runs.
//!
//! Scopes hold `:` and `=` (`group:team=ops`); links carry them percent-encoded in one path
//! segment ([`scope_path`]) and the router decodes them, as for the API.

use askama::Template;
use axum::extract::rejection::{FormRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{Method, StatusCode};
use serde::Deserialize;

use super::approvals::risk_words;
use super::layout::{render_status, when};
use super::{Chrome, PageResult, render, see_other};
use crate::api::auth::rfc3339;
use crate::api::page::{PageQuery, finish};
use crate::api::policies::{
    ExplainRequest, ExplainResult, NewVersion, PolicyApiError, Rollback, diff_versions,
    explain_call, parse_labels, parse_scope, publish_version, rollback_version, unified_diff,
    validate_body,
};
use crate::api::{Access, ApiError, ApiRoute, AppState, OrgCaller};
use crate::auth::Permission;
use crate::store::{PolicyScope, PolicyVersionInfo};

/// Versions per page of a scope's history.
pub const VERSIONS_PAGE: u32 = 50;

/// The routes of the policy pages.
pub fn routes() -> Vec<ApiRoute> {
    use Permission::{PolicyRead, PolicyWrite};
    vec![
        ApiRoute::new(
            Method::GET,
            "/ui/orgs/{org}/policies",
            Access::Org(PolicyRead),
            scopes,
        ),
        ApiRoute::new(
            Method::GET,
            "/ui/orgs/{org}/policies/new",
            Access::Org(PolicyWrite),
            new_scope,
        ),
        ApiRoute::new(
            Method::GET,
            "/ui/orgs/{org}/policies/explain",
            Access::Org(PolicyRead),
            tester,
        ),
        // Changes nothing: the read permission, as the API's explain.
        ApiRoute::new(
            Method::POST,
            "/ui/orgs/{org}/policies/explain",
            Access::Org(PolicyRead),
            test_call,
        ),
        ApiRoute::new(
            Method::GET,
            "/ui/orgs/{org}/policies/{scope}",
            Access::Org(PolicyRead),
            current,
        ),
        ApiRoute::new(
            Method::GET,
            "/ui/orgs/{org}/policies/{scope}/edit",
            Access::Org(PolicyWrite),
            edit,
        ),
        ApiRoute::new(
            Method::POST,
            "/ui/orgs/{org}/policies/{scope}/edit",
            Access::Org(PolicyWrite),
            publish,
        ),
        ApiRoute::new(
            Method::GET,
            "/ui/orgs/{org}/policies/{scope}/versions",
            Access::Org(PolicyRead),
            versions,
        ),
        ApiRoute::new(
            Method::GET,
            "/ui/orgs/{org}/policies/{scope}/versions/{version}",
            Access::Org(PolicyRead),
            one_version,
        ),
        ApiRoute::new(
            Method::GET,
            "/ui/orgs/{org}/policies/{scope}/diff",
            Access::Org(PolicyRead),
            diff,
        ),
        ApiRoute::new(
            Method::POST,
            "/ui/orgs/{org}/policies/{scope}/rollback",
            Access::Org(PolicyWrite),
            rollback,
        ),
    ]
}

/// `scope` as one path segment: everything but letters, digits, `.`, `_` and `-` is
/// percent-encoded (`group:env=prod` → `group%3Aenv%3Dprod`).
pub fn scope_path(scope: &str) -> String {
    let mut out = String::with_capacity(scope.len() + 8);
    for b in scope.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Highlighting.

/// A run of policy text and its token class (empty for plain text).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Span {
    /// CSS classes (`tok-key`, `tok-str decision decision-block`, …); empty for plain text.
    pub class: &'static str,
    /// The text, escaped by the template.
    pub text: String,
}

/// One numbered line of a policy.
#[derive(Debug, Clone)]
pub struct CodeLine {
    /// 1-based.
    pub number: usize,
    /// Its tokens.
    pub spans: Vec<Span>,
    /// Which listed error points at this line (1-based), if any.
    pub error: Option<usize>,
}

const COMMENT: &str = "tok-comment";
const TABLE: &str = "tok-table";
const KEY: &str = "tok-key";
const STRING: &str = "tok-str";
const LITERAL: &str = "tok-lit";

/// The class of a string token whose content is `content`: the decision words stand out.
fn string_class(content: &str) -> &'static str {
    match content {
        "allow" => "tok-str decision decision-allow",
        "block" => "tok-str decision decision-block",
        "approve" => "tok-str decision decision-approve",
        "confirm" => "tok-str decision decision-confirm",
        _ => STRING,
    }
}

fn push(spans: &mut Vec<Span>, class: &'static str, text: &str) {
    if text.is_empty() {
        return;
    }
    if let Some(last) = spans.last_mut()
        && last.class == class
        && class.is_empty()
    {
        last.text.push_str(text);
        return;
    }
    spans.push(Span {
        class,
        text: text.to_string(),
    });
}

/// Where a string that starts at `start` (at its opening quote `quote`) ends on its line:
/// the index just past the closing quote, or `None` when the line ends first.
fn string_end(b: &[u8], start: usize, quote: u8) -> Option<usize> {
    let mut i = start + 1;
    while i < b.len() {
        if quote == b'"' && b[i] == b'\\' {
            i += 2;
            continue;
        }
        if b[i] == quote {
            return Some(i + 1);
        }
        i += 1;
    }
    None
}

/// Where a multi-line string closes on this line (`delim` is `"""` or `'''`), searching from
/// `from`: the index just past the delimiter.
fn multiline_end(line: &str, from: usize, delim: &str) -> Option<usize> {
    let b = line.as_bytes();
    let mut i = from;
    while i + 3 <= b.len() {
        if delim == "\"\"\"" && b[i] == b'\\' {
            i += 2;
            continue;
        }
        if &line[i..i + 3] == delim {
            // A closing delimiter may carry up to two more quotes of the string's own.
            let mut end = i + 3;
            while end < b.len() && end < i + 5 && b[end] == delim.as_bytes()[0] {
                end += 1;
            }
            return Some(end);
        }
        i += 1;
    }
    None
}

fn is_bare(c: u8) -> bool {
    !(c.is_ascii_whitespace()
        || matches!(
            c,
            b'=' | b',' | b'[' | b']' | b'{' | b'}' | b'#' | b'"' | b'\''
        ))
}

/// What a line inherits from the lines before it.
#[derive(Debug, Default)]
struct Carry {
    /// The delimiter of a multi-line string still open.
    open: Option<&'static str>,
    /// How many arrays are open (a value spanning lines: no key starts its lines).
    arrays: usize,
}

/// Tokenises one line, updating `carry` for the next.
fn highlight_line(line: &str, carry: &mut Carry) -> Vec<Span> {
    let b = line.as_bytes();
    let mut spans = Vec::new();
    let mut i = 0;
    if let Some(delim) = carry.open {
        match multiline_end(line, 0, delim) {
            Some(end) => {
                push(&mut spans, STRING, &line[..end]);
                carry.open = None;
                i = end;
            }
            None => {
                push(&mut spans, STRING, line);
                return spans;
            }
        }
    }
    // A key is expected at the start of a line outside an array, and after `{` or `,` inside
    // an inline table.
    let mut expect_key = i == 0 && carry.arrays == 0;
    let mut inline_depth = 0usize;
    let mut line_start = i == 0;
    while i < b.len() {
        let c = b[i];
        if c.is_ascii_whitespace() {
            let end = (i..b.len())
                .find(|&j| !b[j].is_ascii_whitespace())
                .unwrap_or(b.len());
            push(&mut spans, "", &line[i..end]);
            i = end;
            continue;
        }
        match c {
            b'#' => {
                push(&mut spans, COMMENT, &line[i..]);
                break;
            }
            b'[' if line_start && carry.arrays == 0 => {
                let close = if line[i..].starts_with("[[") {
                    "]]"
                } else {
                    "]"
                };
                let end = line[i..]
                    .find(close)
                    .map_or(b.len(), |at| i + at + close.len());
                push(&mut spans, TABLE, &line[i..end]);
                i = end;
                expect_key = false;
            }
            b'"' | b'\'' => {
                let triple = if c == b'"' { "\"\"\"" } else { "'''" };
                if line[i..].starts_with(triple) {
                    match multiline_end(line, i + 3, triple) {
                        Some(end) => {
                            push(&mut spans, STRING, &line[i..end]);
                            i = end;
                        }
                        None => {
                            push(&mut spans, STRING, &line[i..]);
                            carry.open = Some(triple);
                            break;
                        }
                    }
                } else {
                    let end = string_end(b, i, c).unwrap_or(b.len());
                    let text = &line[i..end];
                    let class = if expect_key {
                        KEY
                    } else {
                        let inner = text
                            .strip_prefix(char::from(c))
                            .and_then(|t| t.strip_suffix(char::from(c)))
                            .unwrap_or("");
                        string_class(inner)
                    };
                    push(&mut spans, class, text);
                    i = end;
                }
            }
            b'=' => {
                push(&mut spans, "", "=");
                expect_key = false;
                i += 1;
            }
            b'{' => {
                push(&mut spans, "", "{");
                inline_depth += 1;
                expect_key = true;
                i += 1;
            }
            b'}' => {
                push(&mut spans, "", "}");
                inline_depth = inline_depth.saturating_sub(1);
                i += 1;
            }
            b',' => {
                push(&mut spans, "", ",");
                expect_key = inline_depth > 0;
                i += 1;
            }
            b'[' => {
                push(&mut spans, "", "[");
                carry.arrays += 1;
                i += 1;
            }
            b']' => {
                push(&mut spans, "", "]");
                carry.arrays = carry.arrays.saturating_sub(1);
                i += 1;
            }
            _ => {
                // A bare word: a key (its dotted parts apart) or a value.
                let end = (i..b.len())
                    .find(|&j| !is_bare(b[j]) || (expect_key && b[j] == b'.'))
                    .unwrap_or(b.len());
                let end = end.max(i + 1);
                // A bare run stops at an ASCII byte, so `end` is a character boundary; a
                // non-ASCII first byte is consumed with its whole character.
                let end = (end..=b.len())
                    .find(|&j| line.is_char_boundary(j))
                    .unwrap_or(b.len());
                let word = &line[i..end];
                let class = if expect_key {
                    if word == "." { "" } else { KEY }
                } else if matches!(word, "true" | "false" | "inf" | "nan" | "+inf" | "-inf")
                    || word
                        .bytes()
                        .next()
                        .is_some_and(|f| f.is_ascii_digit() || f == b'+' || f == b'-')
                {
                    LITERAL
                } else {
                    ""
                };
                push(&mut spans, class, word);
                i = end;
            }
        }
        line_start = false;
    }
    spans
}

/// Tokenises a policy (TOML) into numbered lines of classed spans: comments, table headers,
/// keys, strings (the decision words `allow`, `block`, `approve`, `confirm` marked), numbers
/// and booleans. Text is kept as it is; the template escapes it.
pub fn highlight(text: &str) -> Vec<CodeLine> {
    let mut carry = Carry::default();
    let mut lines: Vec<CodeLine> = text
        .split('\n')
        .enumerate()
        .map(|(n, line)| CodeLine {
            number: n + 1,
            spans: highlight_line(line.strip_suffix('\r').unwrap_or(line), &mut carry),
            error: None,
        })
        .collect();
    // The newline ending the last line does not start another.
    if text.ends_with('\n') {
        lines.pop();
    }
    lines
}

// ---------------------------------------------------------------------------------------------
// Diffs.

/// One line of a unified diff as the pages show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiffLine {
    /// `add`, `del`, `ctx`, `hunk` or `note`.
    pub kind: &'static str,
    /// `+`, `−` or nothing: the change as text, not colour alone.
    pub sign: &'static str,
    /// The change in words for screen readers (`added`, `removed`).
    pub words: &'static str,
    /// Line number in the old text (removed and unchanged lines).
    pub old: Option<usize>,
    /// Line number in the new text (added and unchanged lines).
    pub new: Option<usize>,
    /// The line's text.
    pub text: String,
}

/// `@@ -a,b +c,d @@` → (a, c).
fn hunk_starts(header: &str) -> Option<(usize, usize)> {
    let mut parts = header.split_whitespace().skip(1);
    let old = parts.next()?.strip_prefix('-')?;
    let new = parts.next()?.strip_prefix('+')?;
    let first = |s: &str| s.split(',').next().and_then(|n| n.parse::<usize>().ok());
    Some((first(old)?, first(new)?))
}

/// Reads a unified diff (as [`unified_diff`] writes it) into lines with their numbers.
pub fn diff_lines(diff: &str) -> Vec<DiffLine> {
    let mut out = Vec::new();
    let (mut old, mut new) = (0usize, 0usize);
    // The first two lines are the `---` / `+++` header; after it, a leading `-` or `+` is a
    // change even when the line's own text starts with `--`.
    for line in diff.lines().skip(2) {
        let (kind, sign, words, rest) = match line.as_bytes().first() {
            Some(b'@') => {
                if let Some((o, n)) = hunk_starts(line) {
                    (old, new) = (o, n);
                }
                out.push(DiffLine {
                    kind: "hunk",
                    sign: "",
                    words: "",
                    old: None,
                    new: None,
                    text: line.to_string(),
                });
                continue;
            }
            Some(b'+') => ("add", "+", "added", &line[1..]),
            Some(b'-') => ("del", "\u{2212}", "removed", &line[1..]),
            Some(b'\\') => {
                out.push(DiffLine {
                    kind: "note",
                    sign: "",
                    words: "",
                    old: None,
                    new: None,
                    text: line.trim_start_matches('\\').trim().to_string(),
                });
                continue;
            }
            _ => ("ctx", "", "", line.get(1..).unwrap_or("")),
        };
        let (o, n) = match kind {
            "add" => {
                new += 1;
                (None, Some(new - 1))
            }
            "del" => {
                old += 1;
                (Some(old - 1), None)
            }
            _ => {
                old += 1;
                new += 1;
                (Some(old - 1), Some(new - 1))
            }
        };
        out.push(DiffLine {
            kind,
            sign,
            words,
            old: o,
            new: n,
            text: rest.to_string(),
        });
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Shared bits.

/// A version as the pages show it.
struct VersionMeta {
    version: i64,
    author: String,
    when: String,
    comment: String,
    sha256: String,
    restored_from: Option<i64>,
}

fn meta(i: &PolicyVersionInfo) -> VersionMeta {
    VersionMeta {
        version: i.version,
        author: i
            .author_email
            .clone()
            .unwrap_or_else(|| "a removed account".to_string()),
        when: when(&rfc3339(i.created_at)),
        comment: i.comment.clone(),
        sha256: i.sha256.clone(),
        restored_from: i.restored_from,
    }
}

/// What kind of scope, in words.
fn scope_kind(scope: &PolicyScope) -> String {
    match scope {
        PolicyScope::Org => "every device of the organisation".to_string(),
        PolicyScope::Group { key, value } => format!("devices labelled {key}={value}"),
        PolicyScope::Service(name) => format!("the service {name}"),
    }
}

fn policy_error(e: PolicyApiError) -> ApiError {
    match e {
        PolicyApiError::Api(e) => e,
        PolicyApiError::Invalid(e) => ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_policy",
            e.to_string(),
        ),
    }
}

fn form_error(e: FormRejection) -> ApiError {
    ApiError::bad_request(e.body_text())
}

// ---------------------------------------------------------------------------------------------
// The scopes.

struct ScopeRow {
    scope: String,
    url: String,
    applies_to: String,
    m: VersionMeta,
}

#[derive(Template)]
#[template(path = "policies.html")]
struct ScopesPage {
    chrome: Chrome,
    org_slug: String,
    org_name: String,
    rows: Vec<ScopeRow>,
    can_write: bool,
    new_scope: String,
    new_scope_error: Option<String>,
}

async fn scopes_page(
    state: &AppState,
    caller: &OrgCaller,
    new_scope: String,
    new_scope_error: Option<String>,
) -> Result<ScopesPage, ApiError> {
    let infos = state.store.list_policy_scopes(&caller.org.id).await?;
    let rows = infos
        .iter()
        .map(|i| ScopeRow {
            scope: i.scope.clone(),
            url: scope_path(&i.scope),
            applies_to: PolicyScope::parse(&i.scope)
                .map(|s| scope_kind(&s))
                .unwrap_or_default(),
            m: meta(i),
        })
        .collect();
    Ok(ScopesPage {
        chrome: Chrome::new(state, &caller.caller, "Policies"),
        org_slug: caller.org.slug.clone(),
        org_name: caller.org.name.clone(),
        rows,
        can_write: caller.permissions.contains(Permission::PolicyWrite),
        new_scope,
        new_scope_error,
    })
}

async fn scopes(State(state): State<AppState>, caller: OrgCaller) -> PageResult {
    render(&scopes_page(&state, &caller, String::new(), None).await?)
}

/// `?scope=` of the new-scope form.
#[derive(Debug, Deserialize)]
struct NewScopeQuery {
    #[serde(default)]
    scope: String,
}

/// Starts a scope: a valid one opens its editor (an existing scope's too), a bad one is the
/// list again with the reason at the field.
async fn new_scope(
    State(state): State<AppState>,
    caller: OrgCaller,
    query: Result<Query<NewScopeQuery>, QueryRejection>,
) -> PageResult {
    let Query(q) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let text = q.scope.trim().to_string();
    match PolicyScope::parse(&text) {
        Ok(scope) => Ok(see_other(
            &state,
            &format!(
                "/ui/orgs/{}/policies/{}/edit",
                caller.org.slug,
                scope_path(&scope.to_string())
            ),
        )),
        Err(e) => {
            let page = scopes_page(&state, &caller, text, Some(super::auth::sentence(&e))).await?;
            render_status(StatusCode::BAD_REQUEST, &page)
        }
    }
}

// ---------------------------------------------------------------------------------------------
// One version.

#[derive(Template)]
#[template(path = "policies_scope.html")]
struct ScopePage {
    chrome: Chrome,
    org_slug: String,
    org_name: String,
    scope: String,
    scope_url: String,
    applies_to: String,
    /// The version shown; `None` when the scope has none yet.
    m: Option<VersionMeta>,
    /// The scope's current version number (0 when none).
    current: i64,
    lines: Vec<CodeLine>,
    can_write: bool,
}

async fn scope_page(
    state: &AppState,
    caller: &OrgCaller,
    scope_text: &str,
    version: Option<i64>,
) -> PageResult {
    let scope = parse_scope(scope_text)?;
    let name = scope.to_string();
    let current = state
        .store
        .current_policy_number(&caller.org.id, &name)
        .await?;
    let shown = match version {
        Some(v) => Some(
            state
                .store
                .policy_version(&caller.org.id, &name, v)
                .await?
                .ok_or_else(|| ApiError::not_found(&format!("version {v} of policy `{name}`")))?,
        ),
        None => state.store.current_policy(&caller.org.id, &name).await?,
    };
    let title = match &shown {
        Some(v) if v.info.version != current => {
            format!("Policy {name}, version {}", v.info.version)
        }
        _ => format!("Policy {name}"),
    };
    render(&ScopePage {
        chrome: Chrome::new(state, &caller.caller, &title),
        org_slug: caller.org.slug.clone(),
        org_name: caller.org.name.clone(),
        scope_url: scope_path(&name),
        applies_to: scope_kind(&scope),
        scope: name,
        lines: shown
            .as_ref()
            .map(|v| highlight(&v.body))
            .unwrap_or_default(),
        m: shown.as_ref().map(|v| meta(&v.info)),
        current,
        can_write: caller.permissions.contains(Permission::PolicyWrite),
    })
}

async fn current(
    State(state): State<AppState>,
    caller: OrgCaller,
    Path((_, scope)): Path<(String, String)>,
) -> PageResult {
    scope_page(&state, &caller, &scope, None).await
}

async fn one_version(
    State(state): State<AppState>,
    caller: OrgCaller,
    Path((_, scope, version)): Path<(String, String, String)>,
) -> PageResult {
    let v = version
        .parse::<i64>()
        .ok()
        .filter(|v| *v >= 1)
        .ok_or_else(|| {
            ApiError::bad_request(format!("version `{version}` is not a number from 1 up"))
        })?;
    scope_page(&state, &caller, &scope, Some(v)).await
}

// ---------------------------------------------------------------------------------------------
// The editor.

/// A reason the text does not load, as the editor lists it.
struct ErrorItem {
    /// 1-based position in the list (the anchor `error-N`).
    n: usize,
    /// The message with its position.
    text: String,
    /// The line of the edited text it points at (absent when it is in another layer).
    line: Option<usize>,
}

/// A publish refused because someone else published first.
struct Conflict {
    message: String,
    /// The version the edit started from.
    base: i64,
    /// The version that is current now.
    now: i64,
    diff: Vec<DiffLine>,
}

#[derive(Template)]
#[template(path = "policies_edit.html")]
struct EditPage {
    chrome: Chrome,
    org_slug: String,
    org_name: String,
    scope: String,
    scope_url: String,
    applies_to: String,
    base_version: i64,
    body: String,
    comment: String,
    comment_error: Option<String>,
    errors: Vec<ErrorItem>,
    /// The submitted text, numbered, the lines with errors marked (shown with errors).
    lines: Vec<CodeLine>,
    /// "The text loads: N rules" after a check.
    checked: Option<String>,
    conflict: Option<Conflict>,
}

impl EditPage {
    fn new(state: &AppState, caller: &OrgCaller, scope: &PolicyScope) -> EditPage {
        let name = scope.to_string();
        EditPage {
            chrome: Chrome::new(state, &caller.caller, &format!("Edit policy {name}")),
            org_slug: caller.org.slug.clone(),
            org_name: caller.org.name.clone(),
            scope_url: scope_path(&name),
            applies_to: scope_kind(scope),
            scope: name,
            base_version: 0,
            body: String::new(),
            comment: String::new(),
            comment_error: None,
            errors: Vec::new(),
            lines: Vec::new(),
            checked: None,
            conflict: None,
        }
    }

    /// Lists `errors` and marks their lines in the numbered view of the text.
    fn with_errors(mut self, errors: Vec<ErrorItem>) -> EditPage {
        let mut lines = highlight(&self.body);
        for e in &errors {
            if let Some(l) = e.line
                && let Some(line) = lines.get_mut(l.saturating_sub(1))
                && line.error.is_none()
            {
                line.error = Some(e.n);
            }
        }
        self.lines = lines;
        self.errors = errors;
        self
    }
}

/// The editor's errors from a policy error of `scope`: its line is marked only when it is in
/// the edited text (no layer, or this scope's layer).
fn error_item(scope: &str, e: &crate::api::policies::PolicyProblem, text: String) -> ErrorItem {
    let ours = e.layer.as_deref().is_none_or(|l| l == scope);
    ErrorItem {
        n: 1,
        text,
        line: if ours { e.line } else { None },
    }
}

async fn edit(
    State(state): State<AppState>,
    caller: OrgCaller,
    Path((_, scope)): Path<(String, String)>,
) -> PageResult {
    let scope = parse_scope(&scope)?;
    let mut page = EditPage::new(&state, &caller, &scope);
    if let Some(v) = state
        .store
        .current_policy(&caller.org.id, &page.scope)
        .await?
    {
        page.base_version = v.info.version;
        page.body = v.body;
    } else {
        page.body = "version = 1\n".to_string();
    }
    render(&page)
}

/// The editor's form (the CSRF field is read by the route table's middleware).
#[derive(Debug, Deserialize)]
struct EditForm {
    #[allow(dead_code)]
    csrf_token: Option<String>,
    #[serde(default)]
    body: String,
    #[serde(default)]
    comment: String,
    base_version: String,
    /// `check` to validate without publishing; anything else publishes.
    #[serde(default)]
    action: String,
}

/// Browsers send a textarea's newlines as CRLF; the policy is stored as people typed it.
fn unix_newlines(text: &str) -> String {
    text.replace("\r\n", "\n")
}

async fn publish(
    State(state): State<AppState>,
    caller: OrgCaller,
    Path((_, scope)): Path<(String, String)>,
    form: Result<axum::Form<EditForm>, FormRejection>,
) -> PageResult {
    let axum::Form(form) = form.map_err(form_error)?;
    let scope = parse_scope(&scope)?;
    let base_version = form
        .base_version
        .trim()
        .parse::<i64>()
        .ok()
        .filter(|v| *v >= 0)
        .ok_or_else(|| {
            ApiError::bad_request(
                "the form's base version is not a number; reload the editor and edit again",
            )
        })?;
    let mut page = EditPage::new(&state, &caller, &scope);
    page.base_version = base_version;
    page.body = unix_newlines(&form.body);
    page.comment = form.comment.trim().to_string();

    if form.action == "check" {
        let result = validate_body(
            &state,
            &caller.org.id,
            Some(scope.clone()),
            page.body.clone(),
        )
        .await
        .map_err(policy_error)?;
        if result.valid {
            page.checked = Some(format!(
                "The text loads, alone and with the other layers: {} rules, {} rate limits. Nothing is published yet.",
                result.rules.unwrap_or(0),
                result.rate_limits.unwrap_or(0)
            ));
            page.lines = highlight(&page.body);
            return render(&page);
        }
        let errors = result
            .errors
            .into_iter()
            .enumerate()
            .map(|(i, e)| {
                let problem = crate::api::policies::PolicyProblem {
                    layer: e.layer,
                    line: e.line,
                    column: e.column,
                    message: e.message.clone(),
                };
                ErrorItem {
                    n: i + 1,
                    ..error_item(&page.scope, &problem, e.message)
                }
            })
            .collect();
        return render_status(StatusCode::BAD_REQUEST, &page.with_errors(errors));
    }

    if page.comment.is_empty() {
        page.comment_error =
            Some("Say why you change the policy; the history and the audit trail show it.".into());
        page.lines = highlight(&page.body);
        return render_status(StatusCode::BAD_REQUEST, &page);
    }
    let req = NewVersion {
        body: page.body.clone(),
        comment: page.comment.clone(),
        base_version: Some(base_version),
    };
    match publish_version(&state, &caller, scope.clone(), &req).await {
        Ok(created) => Ok(see_other(
            &state,
            &format!(
                "/ui/orgs/{}/policies/{}/versions/{}",
                caller.org.slug,
                scope_path(&created.info.scope),
                created.info.version
            ),
        )),
        Err(PolicyApiError::Invalid(e)) => {
            let problem = crate::api::policies::PolicyProblem::from(&e);
            let item = error_item(&page.scope, &problem, e.to_string());
            render_status(StatusCode::BAD_REQUEST, &page.with_errors(vec![item]))
        }
        Err(PolicyApiError::Api(e)) if e.status == StatusCode::CONFLICT => {
            let now = state
                .store
                .current_policy(&caller.org.id, &page.scope)
                .await?;
            let (now_number, now_body) = now
                .map(|v| (v.info.version, v.body))
                .unwrap_or((0, String::new()));
            let base_body = if base_version >= 1 {
                state
                    .store
                    .policy_version(&caller.org.id, &page.scope, base_version)
                    .await?
                    .map(|v| v.body)
                    .unwrap_or_default()
            } else {
                String::new()
            };
            let diff = unified_diff(
                &format!("{}@{base_version}", page.scope),
                &format!("{}@{now_number}", page.scope),
                &base_body,
                &now_body,
            );
            page.conflict = Some(Conflict {
                message: super::auth::sentence(&e.message),
                base: base_version,
                now: now_number,
                diff: diff_lines(&diff),
            });
            // Publishing again from here replaces the newer version: the person has seen it.
            page.base_version = now_number;
            page.lines = highlight(&page.body);
            render_status(StatusCode::CONFLICT, &page)
        }
        Err(PolicyApiError::Api(e)) if e.status == StatusCode::BAD_REQUEST => {
            // The comment is the only other input the publish checks.
            page.comment_error = Some(super::auth::sentence(&e.message));
            page.lines = highlight(&page.body);
            render_status(StatusCode::BAD_REQUEST, &page)
        }
        Err(e) => Err(policy_error(e)),
    }
}

// ---------------------------------------------------------------------------------------------
// Versions, diff, rollback.

struct VersionRow {
    m: VersionMeta,
    is_current: bool,
}

#[derive(Template)]
#[template(path = "policies_versions.html")]
struct VersionsPage {
    chrome: Chrome,
    org_slug: String,
    org_name: String,
    scope: String,
    scope_url: String,
    current: i64,
    rows: Vec<VersionRow>,
    next_cursor: Option<String>,
    can_write: bool,
}

/// `?cursor=` of the versions page.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct VersionsQuery {
    cursor: Option<String>,
}

async fn versions(
    State(state): State<AppState>,
    caller: OrgCaller,
    Path((_, scope)): Path<(String, String)>,
    query: Result<Query<VersionsQuery>, QueryRejection>,
) -> PageResult {
    let Query(q) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let name = parse_scope(&scope)?.to_string();
    let page = PageQuery {
        cursor: q.cursor,
        limit: Some(VERSIONS_PAGE),
    };
    let limit = page.limit()?;
    let before = match page.key()? {
        Some(key) => Some(
            key.parse::<i64>()
                .map_err(|_| ApiError::bad_request("`cursor` is not one this server returned"))?,
        ),
        None => None,
    };
    let infos = state
        .store
        .list_policy_versions(&caller.org.id, &name, before, limit + 1)
        .await?;
    let (infos, next_cursor) = finish(infos, limit, |v| v.version.to_string());
    let current = state
        .store
        .current_policy_number(&caller.org.id, &name)
        .await?;
    if current == 0 {
        return Err(ApiError::not_found(&format!("policy `{name}`")));
    }
    render(&VersionsPage {
        chrome: Chrome::new(&state, &caller.caller, &format!("Versions of {name}")),
        org_slug: caller.org.slug.clone(),
        org_name: caller.org.name.clone(),
        scope_url: scope_path(&name),
        scope: name,
        current,
        rows: infos
            .iter()
            .map(|i| VersionRow {
                m: meta(i),
                is_current: i.version == current,
            })
            .collect(),
        next_cursor,
        can_write: caller.permissions.contains(Permission::PolicyWrite),
    })
}

#[derive(Template)]
#[template(path = "policies_diff.html")]
struct DiffPage {
    chrome: Chrome,
    org_slug: String,
    org_name: String,
    scope: String,
    scope_url: String,
    from: i64,
    to: i64,
    lines: Vec<DiffLine>,
    /// "2 lines removed, 1 line added".
    summary: String,
}

/// `?from=&to=` as the form sends them (text, so a bad one gets a sentence).
#[derive(Debug, Deserialize)]
struct DiffQuery {
    #[serde(default)]
    from: String,
    #[serde(default)]
    to: String,
}

/// "1 line", "3 lines".
fn count_lines(n: usize) -> String {
    if n == 1 {
        "1 line".to_string()
    } else {
        format!("{n} lines")
    }
}

fn version_number(what: &str, text: &str) -> Result<i64, ApiError> {
    text.trim()
        .parse::<i64>()
        .ok()
        .filter(|v| *v >= 1)
        .ok_or_else(|| {
            ApiError::bad_request(format!(
                "the {what} version `{text}` is not a number from 1 up; pick two versions to compare"
            ))
        })
}

async fn diff(
    State(state): State<AppState>,
    caller: OrgCaller,
    Path((_, scope)): Path<(String, String)>,
    query: Result<Query<DiffQuery>, QueryRejection>,
) -> PageResult {
    let Query(q) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let name = parse_scope(&scope)?.to_string();
    let from = version_number("old", &q.from)?;
    let to = version_number("new", &q.to)?;
    let d = diff_versions(&state, &caller.org.id, &name, from, to)
        .await
        .map_err(policy_error)?;
    let lines = diff_lines(&d.diff);
    render(&DiffPage {
        chrome: Chrome::new(
            &state,
            &caller.caller,
            &format!("{name}: version {from} to {to}"),
        ),
        org_slug: caller.org.slug.clone(),
        org_name: caller.org.name.clone(),
        scope_url: scope_path(&name),
        scope: name,
        from,
        to,
        summary: format!(
            "{} removed, {} added",
            count_lines(lines.iter().filter(|l| l.kind == "del").count()),
            count_lines(lines.iter().filter(|l| l.kind == "add").count())
        ),
        lines,
    })
}

/// A rollback form.
#[derive(Debug, Deserialize)]
struct RollbackForm {
    #[allow(dead_code)]
    csrf_token: Option<String>,
    version: String,
    #[serde(default)]
    comment: String,
    base_version: String,
}

async fn rollback(
    State(state): State<AppState>,
    caller: OrgCaller,
    Path((_, scope)): Path<(String, String)>,
    form: Result<axum::Form<RollbackForm>, FormRejection>,
) -> PageResult {
    let axum::Form(form) = form.map_err(form_error)?;
    let scope = parse_scope(&scope)?;
    let version = version_number("restored", &form.version)?;
    let base_version = form.base_version.trim().parse::<i64>().map_err(|_| {
        ApiError::bad_request(
            "the form's current version is not a number; reload the versions page",
        )
    })?;
    let comment = form.comment.trim();
    let req = Rollback {
        version,
        comment: if comment.is_empty() {
            format!("Rolled back to version {version}")
        } else {
            comment.to_string()
        },
        base_version: Some(base_version),
    };
    let created = rollback_version(&state, &caller, scope, &req)
        .await
        .map_err(policy_error)?;
    Ok(see_other(
        &state,
        &format!(
            "/ui/orgs/{}/policies/{}/versions/{}",
            caller.org.slug,
            scope_path(&created.info.scope),
            created.info.version
        ),
    ))
}

// ---------------------------------------------------------------------------------------------
// The tester.

/// The tester's fields as typed.
#[derive(Debug, Default, Deserialize)]
struct TesterForm {
    #[allow(dead_code)]
    csrf_token: Option<String>,
    #[serde(default)]
    agent: String,
    #[serde(default)]
    service: String,
    #[serde(default)]
    tool: String,
    #[serde(default)]
    arguments: String,
    #[serde(default)]
    labels: String,
    /// The scope an unsaved text stands for; empty: the text alone.
    #[serde(default)]
    scope: String,
    /// An unsaved policy text; empty: the stored policies.
    #[serde(default)]
    body: String,
}

/// The tester's field errors.
#[derive(Debug, Default)]
struct TesterErrors {
    agent: Option<String>,
    service: Option<String>,
    tool: Option<String>,
    arguments: Option<String>,
    labels: Option<String>,
    body: Option<String>,
    /// Not about one field.
    general: Option<String>,
}

impl TesterErrors {
    fn any(&self) -> bool {
        self.agent.is_some()
            || self.service.is_some()
            || self.tool.is_some()
            || self.arguments.is_some()
            || self.labels.is_some()
            || self.body.is_some()
            || self.general.is_some()
    }
}

struct FindingRow {
    id: String,
    category: String,
    risk: u8,
    risk_words: &'static str,
    explanation: String,
    argument: String,
    kind: String,
}

struct TraceRow {
    rule_id: String,
    layer: String,
    priority: i64,
    action: String,
    outcome: String,
    why: String,
}

/// An explanation as the tester shows it.
struct Verdict {
    decision: String,
    rule_id: String,
    layer: String,
    message: String,
    reason: String,
    risk: u8,
    risk_words: &'static str,
    default_action: String,
    findings: Vec<FindingRow>,
    trace: Vec<TraceRow>,
    layers: String,
}

fn verdict(r: ExplainResult) -> Verdict {
    Verdict {
        decision: r.decision,
        rule_id: r.rule_id.unwrap_or_default(),
        layer: r.layer.unwrap_or_default(),
        message: r.message.unwrap_or_default(),
        reason: r.reason,
        risk: r.risk,
        risk_words: risk_words(i64::from(r.risk)),
        default_action: r.default_action,
        findings: r
            .findings
            .into_iter()
            .map(|f| FindingRow {
                risk_words: risk_words(i64::from(f.risk)),
                argument: f.pointer.trim_start_matches('/').replace('/', "."),
                id: f.id,
                category: f.category,
                risk: f.risk,
                explanation: f.explanation,
                kind: f.kind,
            })
            .collect(),
        trace: r
            .trace
            .into_iter()
            .map(|t| TraceRow {
                why: match t.outcome.as_str() {
                    "decided" => "decided the call".to_string(),
                    "outranked" => format!(
                        "matched, but `{}` is stricter",
                        t.by.clone().unwrap_or_default()
                    ),
                    "lower_priority" => "not reached: a higher priority decided".to_string(),
                    _ => t.reason.clone().unwrap_or_else(|| "did not match".into()),
                },
                rule_id: t.rule_id,
                layer: t.layer.unwrap_or_default(),
                priority: t.priority,
                action: t.action,
                outcome: t.outcome,
            })
            .collect(),
        layers: r
            .layers
            .iter()
            .map(|l| match l.version {
                Some(v) => format!("{} (version {v})", l.scope),
                None => format!("{} (the unsaved text)", l.scope),
            })
            .collect::<Vec<_>>()
            .join(", "),
    }
}

#[derive(Template)]
#[template(path = "policies_explain.html")]
struct TesterPage {
    chrome: Chrome,
    org_slug: String,
    org_name: String,
    /// Every scope, for the "stands for" choice.
    scopes: Vec<String>,
    f: TesterForm,
    errors: TesterErrors,
    /// The unsaved text, numbered, the error's line marked (when it has one).
    lines: Vec<CodeLine>,
    /// The line of the unsaved text the error points at.
    body_error_line: Option<usize>,
    /// Whether `f.scope` is one of `scopes`.
    scope_listed: bool,
    result: Option<Verdict>,
}

async fn tester_page(
    state: &AppState,
    caller: &OrgCaller,
    f: TesterForm,
    errors: TesterErrors,
    result: Option<Verdict>,
) -> Result<TesterPage, ApiError> {
    let scopes: Vec<String> = state
        .store
        .list_policy_scopes(&caller.org.id)
        .await?
        .into_iter()
        .map(|i| i.scope)
        .collect();
    Ok(TesterPage {
        scope_listed: scopes.contains(&f.scope),
        body_error_line: None,
        chrome: Chrome::new(state, &caller.caller, "Policy tester"),
        org_slug: caller.org.slug.clone(),
        org_name: caller.org.name.clone(),
        scopes,
        f,
        errors,
        lines: Vec::new(),
        result,
    })
}

/// `?scope=`: test with that scope's current text in the editor.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TesterQuery {
    scope: Option<String>,
}

async fn tester(
    State(state): State<AppState>,
    caller: OrgCaller,
    query: Result<Query<TesterQuery>, QueryRejection>,
) -> PageResult {
    let Query(q) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let mut f = TesterForm {
        agent: "claude-code".into(),
        arguments: "{}".into(),
        ..TesterForm::default()
    };
    if let Some(text) = q.scope.filter(|s| !s.is_empty()) {
        let scope = parse_scope(&text)?;
        let name = scope.to_string();
        // The scope's own selector, so the layer applies to the call being tested.
        match &scope {
            PolicyScope::Service(s) => f.service = s.clone(),
            PolicyScope::Group { key, value } => f.labels = format!("{key}={value}"),
            PolicyScope::Org => {}
        }
        if let Some(v) = state.store.current_policy(&caller.org.id, &name).await? {
            f.body = v.body;
        }
        f.scope = name;
    }
    render(&tester_page(&state, &caller, f, TesterErrors::default(), None).await?)
}

/// Parses the tester's fields into the API's request, or says what is wrong with each.
fn explain_request(f: &TesterForm) -> Result<ExplainRequest, Box<TesterErrors>> {
    let mut errors = TesterErrors::default();
    let required = |v: &str, what: &str| v.trim().is_empty().then(|| format!("Give the {what}."));
    errors.agent = required(&f.agent, "agent's name (claude-code, cursor, …)");
    errors.service = required(&f.service, "service name (the proxy's --name)");
    errors.tool = required(&f.tool, "tool's name");
    let arguments = if f.arguments.trim().is_empty() {
        serde_json::Value::Null
    } else {
        match serde_json::from_str::<serde_json::Value>(&f.arguments) {
            Ok(v) => v,
            Err(e) => {
                errors.arguments = Some(format!(
                    "The arguments are not JSON (line {}, column {}: {}). Write them as a JSON object, e.g. {{\"path\": \"/tmp/x\"}}.",
                    e.line(),
                    e.column(),
                    e
                ));
                serde_json::Value::Null
            }
        }
    };
    let labels = match parse_labels(f.labels.trim()) {
        Ok(l) => l,
        Err(e) => {
            errors.labels = Some(super::auth::sentence(&e.message));
            Default::default()
        }
    };
    let body = unix_newlines(&f.body);
    let has_body = !body.trim().is_empty();
    let scope = f.scope.trim();
    if !has_body && !scope.is_empty() {
        errors.body = Some(format!(
            "Give the text that stands for `{scope}`, or choose \"the stored policies\"."
        ));
    }
    if errors.any() {
        return Err(Box::new(errors));
    }
    Ok(ExplainRequest {
        agent: f.agent.trim().to_string(),
        service: f.service.trim().to_string(),
        tool: f.tool.trim().to_string(),
        arguments,
        labels,
        body: has_body.then_some(body),
        scope: (has_body && !scope.is_empty()).then(|| scope.to_string()),
    })
}

async fn test_call(
    State(state): State<AppState>,
    caller: OrgCaller,
    form: Result<axum::Form<TesterForm>, FormRejection>,
) -> PageResult {
    let axum::Form(f) = form.map_err(form_error)?;
    let req = match explain_request(&f) {
        Ok(req) => req,
        Err(errors) => {
            let page = tester_page(&state, &caller, f, *errors, None).await?;
            return render_status(StatusCode::BAD_REQUEST, &page);
        }
    };
    let scope = req.scope.clone();
    let has_body = req.body.is_some();
    match explain_call(&state, &caller.org.id, req).await {
        Ok(result) => {
            let page = tester_page(
                &state,
                &caller,
                f,
                TesterErrors::default(),
                Some(verdict(result)),
            )
            .await?;
            render(&page)
        }
        Err(PolicyApiError::Invalid(e)) => {
            // Mark the line when the error is in the text typed here.
            let in_text = has_body && (e.layer.is_none() || e.layer.as_deref() == scope.as_deref());
            let mut errors = TesterErrors::default();
            let message = format!(
                "The policy does not load: {}. Correct it and test again.",
                e.to_string().trim_end_matches('.')
            );
            let mut lines = Vec::new();
            if in_text {
                errors.body = Some(message);
                lines = highlight(&unix_newlines(&f.body));
                if let Some(l) = e.line
                    && let Some(line) = lines.get_mut(l.saturating_sub(1))
                {
                    line.error = Some(1);
                }
            } else {
                errors.general = Some(message);
            }
            let mut page = tester_page(&state, &caller, f, errors, None).await?;
            page.body_error_line = lines.iter().find(|l| l.error.is_some()).map(|l| l.number);
            page.lines = lines;
            render_status(StatusCode::BAD_REQUEST, &page)
        }
        Err(PolicyApiError::Api(e)) if e.status == StatusCode::BAD_REQUEST => {
            let errors = TesterErrors {
                general: Some(super::auth::sentence(&e.message)),
                ..TesterErrors::default()
            };
            let page = tester_page(&state, &caller, f, errors, None).await?;
            render_status(StatusCode::BAD_REQUEST, &page)
        }
        Err(e) => Err(policy_error(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn classes(line: &CodeLine) -> Vec<(&'static str, &str)> {
        line.spans
            .iter()
            .filter(|s| !s.class.is_empty())
            .map(|s| (s.class, s.text.as_str()))
            .collect()
    }

    #[test]
    fn tokens_get_their_classes() {
        let text = "version = 1 # the format\n[[rules]]\nid = \"no-env\"\naction = 'block'\nhide_blocked_tools = true\nwhen = [{ pointer = \"/a\", gt = 60 }]\n";
        let lines = highlight(text);
        assert_eq!(lines.len(), 6);
        assert_eq!(
            classes(&lines[0]),
            [(KEY, "version"), (LITERAL, "1"), (COMMENT, "# the format")]
        );
        assert_eq!(classes(&lines[1]), [(TABLE, "[[rules]]")]);
        assert_eq!(classes(&lines[2]), [(KEY, "id"), (STRING, "\"no-env\"")]);
        assert_eq!(
            classes(&lines[3]),
            [
                (KEY, "action"),
                ("tok-str decision decision-block", "'block'")
            ]
        );
        assert_eq!(
            classes(&lines[4]),
            [(KEY, "hide_blocked_tools"), (LITERAL, "true")]
        );
        assert_eq!(
            classes(&lines[5]),
            [
                (KEY, "when"),
                (KEY, "pointer"),
                (STRING, "\"/a\""),
                (KEY, "gt"),
                (LITERAL, "60")
            ]
        );
        // Nothing is lost: the spans put back together are the text.
        let joined: Vec<String> = lines
            .iter()
            .map(|l| l.spans.iter().map(|s| s.text.as_str()).collect())
            .collect();
        assert_eq!(joined.join("\n") + "\n", text);
    }

    #[test]
    fn multiline_strings_and_odd_text_survive() {
        let text =
            "message = \"\"\"\nline # not a comment\n\"\"\" # after\nkey = \"unterminated\nå = ü\n";
        let lines = highlight(text);
        assert_eq!(classes(&lines[1]), [(STRING, "line # not a comment")]);
        assert_eq!(
            classes(&lines[2]),
            [(STRING, "\"\"\""), (COMMENT, "# after")]
        );
        assert_eq!(
            classes(&lines[3]),
            [(KEY, "key"), (STRING, "\"unterminated")]
        );
        let joined: Vec<String> = lines
            .iter()
            .map(|l| l.spans.iter().map(|s| s.text.as_str()).collect())
            .collect();
        assert_eq!(joined.join("\n") + "\n", text);
    }

    #[test]
    fn arrays_across_lines_hold_values() {
        let lines = highlight("tool = [\n  \"a\",\n  'block',\n]\n[[rules]]\n");
        assert_eq!(classes(&lines[1]), [(STRING, "\"a\"")]);
        assert_eq!(
            classes(&lines[2]),
            [("tok-str decision decision-block", "'block'")]
        );
        assert_eq!(classes(&lines[4]), [(TABLE, "[[rules]]")]);
    }

    #[test]
    fn scopes_round_trip_as_one_segment() {
        assert_eq!(scope_path("group:team=ops"), "group%3Ateam%3Dops");
        assert_eq!(scope_path("service:git-hub.v2"), "service%3Agit-hub.v2");
        assert_eq!(scope_path("org"), "org");
    }

    #[test]
    fn diffs_read_with_line_numbers() {
        let d = unified_diff("a", "b", "x\n-- y\nz\n", "x\nw\nz\n");
        let lines = diff_lines(&d);
        let seen: Vec<(&str, Option<usize>, Option<usize>, &str)> = lines
            .iter()
            .map(|l| (l.kind, l.old, l.new, l.text.as_str()))
            .collect();
        assert_eq!(
            seen,
            [
                ("hunk", None, None, "@@ -1,3 +1,3 @@"),
                ("ctx", Some(1), Some(1), "x"),
                ("del", Some(2), None, "-- y"),
                ("add", None, Some(2), "w"),
                ("ctx", Some(3), Some(3), "z"),
            ]
        );
    }
}
