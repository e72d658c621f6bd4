//! The web UI's policy pages on both engines: the current policy highlighted (and escaped),
//! scopes with `:` and `=` through the URL path, the editor's validation errors at their line
//! (nothing stored), publishing through the API's rules (a version the API lists, a stale base
//! refused with the newer changes shown), diffs, rollback, the tester agreeing with the API's
//! explain, and the roles: a viewer sees no forms and their direct POST is refused.

mod support;

use flowlink_control::store::Backend;
use serde_json::{Value, json};
use support::*;

both!(
    the_policy_is_highlighted_and_escaped,
    an_invalid_edit_shows_its_line_and_stores_nothing,
    a_valid_edit_publishes_a_version_the_api_lists,
    a_stale_edit_is_refused_with_the_newer_changes,
    diffs_show_changed_lines_and_rollback_restores_the_old_text,
    the_tester_decides_as_the_api_explains,
    viewers_see_no_forms_and_their_posts_are_refused,
    another_organisations_policies_are_not_found
);

const P: &str = "/api/v1/orgs/acme/policies";
const UI: &str = "/ui/orgs/acme/policies";

const ORG_POLICY: &str = r#"version = 1
default_action = "allow"
# Keep <script>alert("x")</script> out of the environment.

[[rules]]
id = "no-env"
tool = "get-env"
action = "block"
message = "environment variables may hold secrets"

[[rules]]
id = "merge-needs-review"
tool = "merge_*"
action = "approve"
message = "a second person reviews merges"
"#;

async fn published(c: &TestClient, scope: &str, body: &str) -> Value {
    let (status, v) = c
        .post(
            &format!("{P}/{scope}/versions"),
            json!({"body": body, "comment": format!("publish {scope}")}),
        )
        .await;
    assert_eq!(status, 201, "publish {scope}: {v}");
    v
}

/// The versions of `scope` the API lists, newest first: (version, comment).
async fn api_versions(c: &TestClient, scope: &str) -> Vec<(i64, String)> {
    let (status, page) = c.get(&format!("{P}/{scope}/versions")).await;
    assert_eq!(status, 200, "{page}");
    page["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|v| {
            (
                v["version"].as_i64().unwrap_or(0),
                v["comment"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

/// The content of the element with `id`, up to the first closing tag of its own name (for
/// elements that do not nest their own kind).
fn element_text(html: &str, id: &str) -> String {
    let at = html
        .find(&format!("id=\"{id}\""))
        .unwrap_or_else(|| panic!("no #{id} in {html}"));
    let tag_start = html[..at].rfind('<').expect("tag start") + 1;
    let tag: String = html[tag_start..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric())
        .collect();
    let rest = &html[at..];
    let open_end = rest.find('>').expect("tag end") + 1;
    let close = rest[open_end..]
        .find(&format!("</{tag}>"))
        .expect("closing tag");
    rest[open_end..open_end + close].to_string()
}

/// The value of the hidden `base_version` field.
fn base_version(html: &str) -> String {
    html.split(r#"name="base_version" value=""#)
        .nth(1)
        .and_then(|s| s.split('"').next())
        .expect("base_version field")
        .to_string()
}

async fn the_policy_is_highlighted_and_escaped(backend: Backend) {
    let server = TestServer::start(backend).await;
    let owner = server.owner().await;
    published(&owner, "org", ORG_POLICY).await;
    published(&owner, "group:team=ops", "version = 1\n# ops\n").await;

    // The list: each scope with its version, author and comment, linked with the scope
    // percent-encoded in one path segment.
    let (status, html) = page(&owner, UI).await;
    assert_eq!(status, 200, "{html}");
    assert!(html.contains("publish org"), "{html}");
    assert!(html.contains("owner@acme.test"), "{html}");
    assert!(
        html.contains(&format!(r#"href="{UI}/group%3Ateam%3Dops""#)),
        "{html}"
    );
    assert!(
        html.contains(r#"id="new-scope""#),
        "an owner may start a scope"
    );

    let (status, html) = page(&owner, &format!("{UI}/org")).await;
    assert_eq!(status, 200, "{html}");
    // The comment's markup is text, never markup.
    assert!(!html.contains("<script>alert"), "{html}");
    assert!(
        html.contains(r#"<span class="tok-comment"># Keep &#60;script&#62;alert(&#34;x&#34;)"#),
        "{html}"
    );
    // Lines are numbered and addressable; tokens are classed.
    assert!(html.contains(r#"<li id="L3">"#), "{html}");
    assert!(
        html.contains(r#"<li id="L6"><code><span class="tok-key">id</span>"#),
        "{html}"
    );
    assert!(
        html.contains(r#"<span class="tok-table">[[rules]]</span>"#),
        "{html}"
    );
    // The decision words stand out.
    for word in ["block", "approve", "allow"] {
        let marker = format!(r#"<span class="tok-str decision decision-{word}">"#);
        let at = html
            .find(&marker)
            .unwrap_or_else(|| panic!("{word} not marked: {html}"));
        let after = &html[at + marker.len()..];
        let text = &after[..after.find("</span>").expect("span end")];
        assert!(text.contains(word), "{word}: {text}");
    }
    // No inline style anywhere (the CSP refuses them).
    assert!(!html.contains("style="), "{html}");
    assert!(html.contains(&format!(r#"href="{UI}/org/edit""#)), "{html}");

    // A scope with `:` and `=` round-trips through the path.
    let (status, html) = page(&owner, &format!("{UI}/group%3Ateam%3Dops")).await;
    assert_eq!(status, 200, "{html}");
    assert!(html.contains("group:team=ops"), "{html}");
    assert!(html.contains("devices labelled team=ops"), "{html}");
    // A scope that is not one is a clear 400; a valid one with no version says so.
    let (status, html) = page(&owner, &format!("{UI}/groups")).await;
    assert_eq!(status, 400, "{html}");
    assert!(html.contains("Unknown policy scope `groups`"), "{html}");
    let (status, html) = page(&owner, &format!("{UI}/service%3Agithub")).await;
    assert_eq!(status, 200, "{html}");
    assert!(html.contains(r#"id="no-version""#), "{html}");

    // Starting a scope opens its editor; a bad one is refused at the field.
    let resp = owner
        .request(
            reqwest::Method::GET,
            &format!("{UI}/new?scope=group%3Aenv%3Dprod"),
        )
        .send()
        .await
        .expect("GET");
    assert_eq!(resp.status(), 303);
    assert_eq!(
        resp.headers()["location"].to_str().ok(),
        Some("/ui/orgs/acme/policies/group%3Aenv%3Dprod/edit")
    );
    let (status, html) = page(&owner, &format!("{UI}/new?scope=group%3Aenv")).await;
    assert_eq!(status, 400, "{html}");
    assert!(
        html.contains(r#"id="scope-error""#) && html.contains("has no `=`"),
        "{html}"
    );
    server.stop().await;
}

async fn an_invalid_edit_shows_its_line_and_stores_nothing(backend: Backend) {
    let server = TestServer::start(backend).await;
    let owner = server.owner().await;
    published(&owner, "org", ORG_POLICY).await;

    let (status, html) = page(&owner, &format!("{UI}/org/edit")).await;
    assert_eq!(status, 200, "{html}");
    assert_eq!(base_version(&html), "1");
    assert!(
        html.contains("&#60;script&#62;alert("),
        "the textarea holds the current text, escaped: {html}"
    );
    assert!(html.contains(r#"name="csrf_token""#), "{html}");

    let bad = "version = 1\n\n[[rules]]\nid = \"x\"\naction = \"alow\"\n# <b>kept</b>\n";
    let (status, _, html) = form(
        &owner,
        &format!("{UI}/org/edit"),
        &[
            ("body", bad),
            ("comment", "typo"),
            ("base_version", "1"),
            ("action", "publish"),
        ],
    )
    .await;
    assert_eq!(status, 400, "{html}");
    // The error with its line and column, linked to the marked line of the numbered text.
    assert!(
        html.contains(r##"<a href="#L5">line 5, column 10: unknown action `alow`"##),
        "{html}"
    );
    assert!(html.contains(r#"<li id="L5" class="bad">"#), "{html}");
    assert!(
        html.contains(r##"href="#error-1">error 1 here</a>"##),
        "{html}"
    );
    assert!(!html.contains(r#"<li id="L4" class="bad">"#), "{html}");
    // The text and the comment are kept, escaped.
    let textarea = element_text(&html, "body");
    assert!(textarea.contains("alow"), "{textarea}");
    assert!(
        textarea.contains("&#60;b&#62;kept&#60;/b&#62;"),
        "{textarea}"
    );
    assert!(!html.contains("<b>kept</b>"), "{html}");
    assert!(html.contains(r#"value="typo""#), "{html}");
    // Nothing was stored.
    assert_eq!(api_versions(&owner, "org").await.len(), 1);

    // A clash with another layer is reported with the layer, at the line of the edited text.
    let clash = "version = 1\n[[rules]]\nid = \"no-env\"\naction = \"allow\"\n";
    let (status, _, html) = form(
        &owner,
        &format!("{UI}/service%3Agithub/edit"),
        &[("body", clash), ("comment", "clash"), ("base_version", "0")],
    )
    .await;
    assert_eq!(status, 400, "{html}");
    assert!(html.contains("layer `service:github`, line 3"), "{html}");
    assert!(html.contains(r#"<li id="L3" class="bad">"#), "{html}");
    let (status, list) = owner.get(P).await;
    assert_eq!((status, list.as_array().map(Vec::len)), (200, Some(1)));

    // Checking without publishing: the verdict, nothing stored.
    let (status, _, html) = form(
        &owner,
        &format!("{UI}/org/edit"),
        &[
            (
                "body",
                "version = 1\n[[rules]]\nid = \"a\"\naction = \"allow\"\n",
            ),
            ("comment", ""),
            ("base_version", "1"),
            ("action", "check"),
        ],
    )
    .await;
    assert_eq!(status, 200, "{html}");
    assert!(element_text(&html, "checked").contains("1 rules"), "{html}");
    assert_eq!(api_versions(&owner, "org").await.len(), 1);

    // A publish without a comment is asked for one; nothing stored.
    let (status, _, html) = form(
        &owner,
        &format!("{UI}/org/edit"),
        &[
            ("body", "version = 1\n"),
            ("comment", " "),
            ("base_version", "1"),
        ],
    )
    .await;
    assert_eq!(status, 400, "{html}");
    assert!(html.contains(r#"id="comment-error""#), "{html}");
    assert_eq!(api_versions(&owner, "org").await.len(), 1);
    server.stop().await;
}

async fn a_valid_edit_publishes_a_version_the_api_lists(backend: Backend) {
    let server = TestServer::start(backend).await;
    let owner = server.owner().await;
    published(&owner, "org", ORG_POLICY).await;

    // Browsers send a textarea's newlines as CRLF.
    let (status, location, body) = form(
        &owner,
        &format!("{UI}/org/edit"),
        &[
            ("body", "version = 1\r\ndefault_action = \"block\"\r\n"),
            ("comment", "lock it down"),
            ("base_version", "1"),
            ("action", "publish"),
        ],
    )
    .await;
    assert_eq!(status, 303, "{body}");
    assert_eq!(location, "/ui/orgs/acme/policies/org/versions/2");
    assert_eq!(
        api_versions(&owner, "org").await,
        [
            (2, "lock it down".to_string()),
            (1, "publish org".to_string())
        ]
    );
    let (_, v2) = owner.get(&format!("{P}/org/versions/2")).await;
    assert_eq!(v2["body"], "version = 1\ndefault_action = \"block\"\n");
    assert_eq!(v2["author_email"], "owner@acme.test");
    let (status, html) = page(&owner, &location).await;
    assert_eq!(status, 200, "{html}");
    assert!(html.contains("lock it down"), "{html}");

    // A new scope with `:` and `=`: its first version, base 0.
    let (status, html) = page(&owner, &format!("{UI}/group%3Ateam%3Dops/edit")).await;
    assert_eq!(status, 200, "{html}");
    assert_eq!(base_version(&html), "0");
    let (status, location, body) = form(
        &owner,
        &format!("{UI}/group%3Ateam%3Dops/edit"),
        &[
            (
                "body",
                "version = 1\n[[rules]]\nid = \"ops\"\naction = \"allow\"\n",
            ),
            ("comment", "ops may"),
            ("base_version", "0"),
        ],
    )
    .await;
    assert_eq!(status, 303, "{body}");
    assert_eq!(
        location,
        "/ui/orgs/acme/policies/group%3Ateam%3Dops/versions/1"
    );
    assert_eq!(
        api_versions(&owner, "group:team=ops").await,
        [(1, "ops may".to_string())]
    );
    server.stop().await;
}

async fn a_stale_edit_is_refused_with_the_newer_changes(backend: Backend) {
    let server = TestServer::start(backend).await;
    let owner = server.owner().await;
    published(&owner, "org", "version = 1\n# first\n").await;
    // Someone else publishes version 2 while the editor holds version 1.
    let (_, html) = page(&owner, &format!("{UI}/org/edit")).await;
    assert_eq!(base_version(&html), "1");
    published(&owner, "org", "version = 1\n# their change\n").await;

    let mine = "version = 1\n# my change\n";
    let (status, _, html) = form(
        &owner,
        &format!("{UI}/org/edit"),
        &[("body", mine), ("comment", "mine"), ("base_version", "1")],
    )
    .await;
    assert_eq!(status, 409, "{html}");
    assert!(html.contains(r#"id="conflict""#), "{html}");
    assert!(
        html.contains("is now at version 2, but this change was made to version 1"),
        "{html}"
    );
    // The newer changes as a diff, the text kept, the next publish based on version 2.
    assert!(
        html.contains(r#"<tr class="del">"#) && html.contains("<code># first</code>"),
        "{html}"
    );
    assert!(
        html.contains(r#"<tr class="add">"#) && html.contains("<code># their change</code>"),
        "{html}"
    );
    assert!(
        element_text(&html, "body").contains("# my change"),
        "{html}"
    );
    assert_eq!(base_version(&html), "2");
    // Nothing was stored.
    let versions = api_versions(&owner, "org").await;
    assert_eq!(versions.len(), 2, "{versions:?}");
    server.stop().await;
}

async fn diffs_show_changed_lines_and_rollback_restores_the_old_text(backend: Backend) {
    let server = TestServer::start(backend).await;
    let owner = server.owner().await;
    let v1 = "version = 1\n# one\ndefault_action = \"allow\"\n";
    published(&owner, "org", v1).await;
    published(
        &owner,
        "org",
        "version = 1\n# two\ndefault_action = \"allow\"\n",
    )
    .await;

    let (status, html) = page(&owner, &format!("{UI}/org/versions")).await;
    assert_eq!(status, 200, "{html}");
    assert!(
        html.contains("Version 2</a> <span class=\"tag\">current</span>"),
        "{html}"
    );
    // The compare form is a GET; each older version has a rollback form.
    assert!(
        html.contains(&format!(r#"<form method="get" action="{UI}/org/diff""#)),
        "{html}"
    );
    assert!(html.contains("Roll back to version 1"), "{html}");
    assert!(!html.contains("Roll back to version 2"), "{html}");

    let (status, html) = page(&owner, &format!("{UI}/org/diff?from=1&to=2")).await;
    assert_eq!(status, 200, "{html}");
    assert!(
        html.contains(
            "<tr class=\"del\"><td class=\"num\">2</td><td class=\"num\"></td><td class=\"sign\">\u{2212}<span class=\"visually-hidden\"> removed</span></td><td><code># one</code></td></tr>"
        ),
        "{html}"
    );
    assert!(
        html.contains(
            "<tr class=\"add\"><td class=\"num\"></td><td class=\"num\">2</td><td class=\"sign\">+<span class=\"visually-hidden\"> added</span></td><td><code># two</code></td></tr>"
        ),
        "{html}"
    );
    assert!(
        element_text(&html, "diff-summary").starts_with("1 line removed, 1 line added"),
        "{html}"
    );
    // Unchanged lines are context, not changes.
    assert!(!html.contains("<code>version = 1</code></td></tr>\n    <tr class=\"add\">version"));
    let (status, html) = page(&owner, &format!("{UI}/org/diff?from=one&to=2")).await;
    assert_eq!(status, 400, "{html}");
    assert!(html.contains("not a number"), "{html}");
    let (status, _) = page(&owner, &format!("{UI}/org/diff?from=1&to=9")).await;
    assert_eq!(status, 404);

    let (status, location, body) = form(
        &owner,
        &format!("{UI}/org/rollback"),
        &[
            ("version", "1"),
            ("base_version", "2"),
            ("comment", "two was wrong"),
        ],
    )
    .await;
    assert_eq!(status, 303, "{body}");
    assert_eq!(location, "/ui/orgs/acme/policies/org/versions/3");
    let (_, v3) = owner.get(&format!("{P}/org/versions/3")).await;
    assert_eq!(v3["body"], v1);
    assert_eq!(v3["restored_from"], 1);
    assert_eq!(v3["comment"], "two was wrong");
    let (_, html) = page(&owner, &location).await;
    assert!(html.contains("version 1</dd>"), "restores is shown: {html}");

    // A rollback from a stale page is refused; nothing stored.
    let (status, _, html) = form(
        &owner,
        &format!("{UI}/org/rollback"),
        &[("version", "2"), ("base_version", "2"), ("comment", "")],
    )
    .await;
    assert_eq!(status, 409, "{html}");
    assert!(html.contains("now at version 3"), "{html}");
    assert_eq!(api_versions(&owner, "org").await.len(), 3);
    server.stop().await;
}

/// The tester's decision and deciding rule for these fields.
async fn tester(c: &TestClient, fields: &[(&str, &str)]) -> (String, String, String) {
    let (status, _, html) = form(c, &format!("{UI}/explain"), fields).await;
    assert_eq!(status, 200, "{fields:?}: {html}");
    let decision = element_text(&html, "decision");
    let rule = element_text(&html, "deciding-rule");
    (decision, rule, html)
}

async fn the_tester_decides_as_the_api_explains(backend: Backend) {
    let server = TestServer::start(backend).await;
    let owner = server.owner().await;
    published(&owner, "org", ORG_POLICY).await;
    let viewer = server
        .member(&owner, "acme", "vic@acme.test", "viewer")
        .await;

    let (status, html) = page(&viewer, &format!("{UI}/explain?scope=org")).await;
    assert_eq!(status, 200, "{html}");
    assert!(
        element_text(&html, "body").contains("merge-needs-review"),
        "the current text is the default: {html}"
    );

    let cases: [(&str, &str, Value); 4] = [
        ("github", "get-env", json!({})),
        ("github", "merge_pull_request", json!({"number": 7})),
        ("files", "read_file", json!({"path": "/tmp/x"})),
        ("shell", "run", json!({"command": "rm -rf ~"})),
    ];
    for (service, tool, args) in cases {
        let (status, api) = viewer
            .post(
                &format!("{P}/explain"),
                json!({"agent": "claude-code", "service": service, "tool": tool, "arguments": args}),
            )
            .await;
        assert_eq!(status, 200, "{api}");
        let args_text = args.to_string();
        let (decision, rule, html) = tester(
            &viewer,
            &[
                ("agent", "claude-code"),
                ("service", service),
                ("tool", tool),
                ("arguments", &args_text),
                ("labels", ""),
                ("scope", ""),
                ("body", ""),
            ],
        )
        .await;
        assert_eq!(decision, api["decision"].as_str().unwrap_or("?"), "{tool}");
        match api["rule_id"].as_str() {
            Some(id) => assert!(
                rule.contains(&format!("<code>{id}</code>")),
                "{tool}: {rule}"
            ),
            None => assert!(rule.contains("default action"), "{tool}: {rule}"),
        }
        if let Some(m) = api["message"].as_str() {
            assert!(html.contains(m), "{tool}: {html}");
        }
        for f in api["findings"].as_array().into_iter().flatten() {
            let id = f["id"].as_str().unwrap_or("?");
            assert!(html.contains(&format!("<code>{id}</code>")), "{id}: {html}");
            assert!(html.contains(&format!("{} · ", f["risk"])), "{html}");
        }
    }

    // An unsaved text in place of the org layer, against the API with the same input.
    let unsaved = "version = 1\ndefault_action = \"confirm\"\n";
    let (_, api) = viewer
        .post(
            &format!("{P}/explain"),
            json!({"agent": "a", "service": "github", "tool": "get-env", "body": unsaved, "scope": "org"}),
        )
        .await;
    let (decision, _, _) = tester(
        &viewer,
        &[
            ("agent", "a"),
            ("service", "github"),
            ("tool", "get-env"),
            ("arguments", ""),
            ("scope", "org"),
            ("body", unsaved),
        ],
    )
    .await;
    assert_eq!(decision, "confirm");
    assert_eq!(api["decision"], "confirm", "{api}");

    // Bad JSON arguments: a field error, the fields kept.
    let (status, _, html) = form(
        &viewer,
        &format!("{UI}/explain"),
        &[
            ("agent", "a"),
            ("service", "github"),
            ("tool", "get-env"),
            ("arguments", "{\"path\": "),
            ("body", ""),
        ],
    )
    .await;
    assert_eq!(status, 400, "{html}");
    assert!(
        element_text(&html, "arguments-error").contains("not JSON"),
        "{html}"
    );
    assert!(html.contains(r#"value="get-env""#), "{html}");
    // Bad labels: a field error. A scope that does not apply to the call: said, not ignored.
    let (status, _, html) = form(
        &viewer,
        &format!("{UI}/explain"),
        &[
            ("agent", "a"),
            ("service", "db"),
            ("tool", "query"),
            ("labels", "env"),
        ],
    )
    .await;
    assert_eq!(status, 400, "{html}");
    assert!(
        element_text(&html, "labels-error").contains("key=value"),
        "{html}"
    );
    let (status, _, html) = form(
        &viewer,
        &format!("{UI}/explain"),
        &[
            ("agent", "a"),
            ("service", "db"),
            ("tool", "query"),
            ("scope", "service:github"),
            ("body", "version = 1\n"),
        ],
    )
    .await;
    assert_eq!(status, 400, "{html}");
    assert!(
        element_text(&html, "general-error").contains("does not apply to service `db`"),
        "{html}"
    );
    // An unsaved text that does not load: the error at its line.
    let (status, _, html) = form(
        &viewer,
        &format!("{UI}/explain"),
        &[
            ("agent", "a"),
            ("service", "github"),
            ("tool", "get-env"),
            ("arguments", "{}"),
            (
                "body",
                "version = 1\n[[rules]]\nid = \"x\"\naction = \"nope\"\n",
            ),
        ],
    )
    .await;
    assert_eq!(status, 400, "{html}");
    assert!(html.contains(r#"<li id="L4" class="bad">"#), "{html}");
    assert!(html.contains("line 4"), "{html}");
    server.stop().await;
}

async fn viewers_see_no_forms_and_their_posts_are_refused(backend: Backend) {
    let server = TestServer::start(backend).await;
    let owner = server.owner().await;
    published(&owner, "org", "version = 1\n# one\n").await;
    published(&owner, "org", "version = 1\n# two\n").await;
    let viewer = server
        .member(&owner, "acme", "vic@acme.test", "viewer")
        .await;

    let (status, html) = page(&viewer, UI).await;
    assert_eq!(status, 200, "{html}");
    assert!(!html.contains(r#"id="new-scope""#), "{html}");
    let (status, html) = page(&viewer, &format!("{UI}/org")).await;
    assert_eq!(status, 200, "{html}");
    assert!(!html.contains("/edit\""), "{html}");
    let (status, html) = page(&viewer, &format!("{UI}/org/versions")).await;
    assert_eq!(status, 200, "{html}");
    assert!(!html.contains("rollback"), "{html}");
    assert!(!html.contains("Roll back"), "{html}");
    assert!(html.contains("/org/diff"), "viewers may compare: {html}");

    let (status, html) = page(&viewer, &format!("{UI}/org/versions/1")).await;
    assert_eq!(status, 200, "{html}");
    assert!(!html.contains("rollback"), "{html}");
    let (_, html) = page(&owner, &format!("{UI}/org/versions/1")).await;
    assert!(
        html.contains(&format!(r#"action="{UI}/org/rollback""#)),
        "the owner is offered the rollback: {html}"
    );

    let (status, html) = page(&viewer, &format!("{UI}/org/edit")).await;
    assert_eq!(status, 403, "{html}");
    let (status, _) = page(&viewer, &format!("{UI}/new?scope=org")).await;
    assert_eq!(status, 403);
    let (status, _, html) = form(
        &viewer,
        &format!("{UI}/org/edit"),
        &[
            ("body", "version = 1\n"),
            ("comment", "sneaky"),
            ("base_version", "2"),
        ],
    )
    .await;
    assert_eq!(status, 403, "{html}");
    assert!(html.contains("<html"), "an HTML refusal page");
    let (status, _, _) = form(
        &viewer,
        &format!("{UI}/org/rollback"),
        &[("version", "1"), ("base_version", "2"), ("comment", "")],
    )
    .await;
    assert_eq!(status, 403);
    assert_eq!(api_versions(&owner, "org").await.len(), 2);
    server.stop().await;
}

async fn another_organisations_policies_are_not_found(backend: Backend) {
    let server = TestServer::start(backend).await;
    let owner = server.owner().await;
    published(&owner, "org", ORG_POLICY).await;
    let stranger = server.other_org("globex").await;
    for path in [
        UI.to_string(),
        format!("{UI}/org"),
        format!("{UI}/org/versions"),
        format!("{UI}/org/versions/1"),
        format!("{UI}/org/diff?from=1&to=1"),
        format!("{UI}/explain"),
    ] {
        let (status, html) = page(&stranger, &path).await;
        assert_eq!(status, 404, "{path}");
        assert!(!html.contains("no-env"), "{path}: {html}");
    }
    let (status, _, _) = form(
        &stranger,
        &format!("{UI}/org/edit"),
        &[
            ("body", "version = 1\n"),
            ("comment", "x"),
            ("base_version", "1"),
        ],
    )
    .await;
    assert_eq!(status, 404);
    // Their own policies page is theirs: empty.
    let (status, html) = page(&stranger, "/ui/orgs/globex/policies").await;
    assert_eq!(status, 200, "{html}");
    assert!(html.contains(r#"id="no-scopes""#), "{html}");
    assert_eq!(api_versions(&owner, "org").await.len(), 1);
    server.stop().await;
}
