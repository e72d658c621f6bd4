//! The web UI's agents pages on both engines: the device list with each device's health
//! (online, stale, offline from its last heartbeat; revoked apart), its MCP servers and their
//! last errors (escaped); the label form with errors at the field; revoking with the
//! confirmation box, which disconnects the device's link at once and refuses it after; the
//! enrolment token form whose token is shown once and enrols a device; and the limits: a viewer
//! sees no form and a direct POST is refused, another organisation's devices are not found.

mod support;

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use ed25519_dalek::SigningKey;
use flowlink_control::store::Backend;
use flowlink_proto::link::{ControlMessage, ServerHealth, ServerState};
use serde_json::{Value, json};
use support::*;

both!(
    the_list_shows_health_servers_and_escaped_errors,
    labels_are_edited_and_a_revoked_device_is_cut_off,
    an_enrolment_token_is_shown_once_and_enrols,
    a_device_is_rekeyed_from_its_page,
    a_viewer_sees_no_forms_and_cannot_post_them,
    another_organisations_devices_are_not_found
);

const ORG: &str = "/api/v1/orgs/acme";

fn random32() -> [u8; 32] {
    let mut b = [0u8; 32];
    getrandom::fill(&mut b).expect("random");
    b
}

/// Enrols a device named `name` with `token` as a proxy does; returns the answer.
async fn try_enroll(server: &TestServer, token: &str, name: &str, labels: Value) -> (u16, Value) {
    let key = SigningKey::from_bytes(&random32());
    server
        .client()
        .post(
            "/api/v1/enroll",
            json!({
                "token": token,
                "device_name": name,
                "hostname": format!("{name}.example"),
                "signing_key": STANDARD.encode(key.verifying_key().to_bytes()),
                "box_key": STANDARD.encode(random32()),
                "labels": labels,
            }),
        )
        .await
}

/// Enrols a device named `name` with a fresh token of acme; returns its id.
async fn enroll(server: &TestServer, owner: &TestClient, name: &str, labels: Value) -> String {
    let (status, created) = owner
        .post(&format!("{ORG}/enrollment-tokens"), json!({}))
        .await;
    assert_eq!(status, 201, "token: {created}");
    let token = created["token"].as_str().expect("token");
    let (status, body) = try_enroll(server, token, name, labels).await;
    assert_eq!(status, 201, "enrol: {body}");
    body["device_id"].as_str().expect("device_id").to_string()
}

/// Sets when a device was last heard from, `ago` before now.
async fn last_seen_ago(server: &TestServer, device_id: &str, ago: Duration) {
    let now = flowlink_control::store::now_us();
    let at = now - i64::try_from(ago.as_micros()).expect("duration");
    sqlx::query("UPDATE devices SET last_seen_at = $1 WHERE id = $2")
        .bind(at)
        .bind(device_id)
        .execute(server.store.pool())
        .await
        .expect("set last_seen_at");
}

/// The table row of `id` (`data-id="…"` up to its `</tr>`).
fn row<'a>(html: &'a str, id: &str) -> &'a str {
    let start = html
        .find(&format!("data-id=\"{id}\""))
        .unwrap_or_else(|| panic!("no row for {id}: {html}"));
    let rest = &html[start..];
    &rest[..rest.find("</tr>").unwrap_or(rest.len())]
}

async fn the_list_shows_health_servers_and_escaped_errors(backend: Backend) {
    let server = TestServer::start(backend).await;
    let owner = server.owner().await;
    let acme = org_id(&owner, "acme").await;
    let alpha = enroll(&server, &owner, "alpha", json!({"env": "prod"})).await;
    let bravo = enroll(&server, &owner, "bravo", json!({})).await;
    let charlie = enroll(&server, &owner, "charlie", json!({})).await;
    let gone = enroll(&server, &owner, "gone", json!({})).await;
    let (status, _) = owner
        .post(&format!("{ORG}/devices/{gone}/revoke"), json!({}))
        .await;
    assert_eq!(status, 204);
    // A policy layer for env=prod, which alpha's labels select.
    let (status, body) = owner
        .post(
            &format!("{ORG}/policies/group:env=prod/versions"),
            json!({"body": "version = 1\n\n[[rules]]\nid = \"prod-no-delete\"\ntool = \"delete_*\"\naction = \"block\"\n",
                   "comment": "prod"}),
        )
        .await;
    assert_eq!(status, 201, "publish: {body}");

    // alpha's proxy reports two servers, one crash-looping with an error holding markup.
    let device = server
        .store
        .device(&acme, &alpha)
        .await
        .expect("store")
        .expect("alpha");
    server
        .store
        .record_heartbeat(
            &device,
            &[
                ServerHealth {
                    service: "git".into(),
                    state: ServerState::Up,
                    restarts_last_hour: 0,
                    last_error: None,
                },
                ServerHealth {
                    service: "shell".into(),
                    state: ServerState::Crashed,
                    restarts_last_hour: 4,
                    last_error: Some("exit 1: <script>alert(1)</script>".into()),
                },
            ],
            Some("0.3.1"),
        )
        .await
        .expect("heartbeat");
    // bravo was last heard from three intervals ago (stale), charlie ten (offline).
    let beat = server.config.link_heartbeat;
    last_seen_ago(&server, &bravo, beat * 3).await;
    last_seen_ago(&server, &charlie, beat * 10).await;

    let (status, html) = page(&owner, "/ui/orgs/acme/agents").await;
    assert_eq!(status, 200, "{html}");
    let a = row(&html, &alpha);
    assert!(
        a.contains(">alpha</a>") && a.contains("alpha.example"),
        "{a}"
    );
    assert!(a.contains(r#"class="tag health-online">online<"#), "{a}");
    assert!(a.contains("env=prod"), "{a}");
    assert!(a.contains("2: 1 up") && a.contains("1 crashed"), "{a}");
    assert!(a.contains("UTC"), "last seen: {a}");
    assert!(a.contains("group:env=prod v1"), "{a}");
    let b = row(&html, &bravo);
    assert!(b.contains(r#"class="tag health-stale">stale<"#), "{b}");
    assert!(!b.contains("group:env=prod"), "{b}");
    let c = row(&html, &charlie);
    assert!(c.contains(r#"class="tag health-offline">offline<"#), "{c}");
    assert!(c.contains("none reported"), "{c}");
    // The revoked device is apart, after the live ones, and marked.
    let revoked_at = html.find("id=\"revoked-devices\"").expect("revoked table");
    assert!(html.find(&format!("data-id=\"{gone}\"")).expect("gone") > revoked_at);
    assert!(html.find(&format!("data-id=\"{alpha}\"")).expect("alpha") < revoked_at);
    assert!(row(&html, &gone).contains("health-revoked\">revoked<"));
    assert!(html.contains("/ui/static/agents.css?v="), "its stylesheet");
    assert!(
        html.contains("id=\"enrolment-link\""),
        "admins see the tokens link"
    );

    // The device: its servers, the last error escaped, the crash loop named, its forms.
    let (status, html) = page(&owner, &format!("/ui/orgs/acme/agents/{alpha}")).await;
    assert_eq!(status, 200, "{html}");
    let shell = row_of_service(&html, "shell");
    assert!(shell.contains("server-crashed\">crashed<"), "{shell}");
    assert!(
        shell.contains("crash loop") && shell.contains(">4<"),
        "{shell}"
    );
    assert!(
        shell.contains("exit 1: &lt;script&gt;alert(1)&lt;/script&gt;")
            || shell.contains("exit 1: &#60;script&#62;alert(1)&#60;/script&#62;"),
        "{shell}"
    );
    assert!(!html.contains("<script>alert"), "escaped");
    assert!(row_of_service(&html, "git").contains("server-up\">up<"));
    assert!(
        shell.contains("<code>0.3.1</code>"),
        "the proxy version: {shell}"
    );
    assert!(html.contains("id=\"labels-form\"") && html.contains("id=\"revoke-form\""));
    assert!(
        html.contains("alpha.example") && html.contains(&alpha),
        "identity: {html}"
    );
    assert!(
        html.contains("group:env=prod v1"),
        "its policy layers: {html}"
    );
    server.stop().await;
}

/// The servers-table row of `service`.
fn row_of_service<'a>(html: &'a str, service: &str) -> &'a str {
    let start = html
        .find(&format!("data-service=\"{service}\""))
        .unwrap_or_else(|| panic!("no row for {service}: {html}"));
    let rest = &html[start..];
    &rest[..rest.find("</tr>").unwrap_or(rest.len())]
}

async fn labels_are_edited_and_a_revoked_device_is_cut_off(backend: Backend) {
    let server = TestServer::start(backend).await;
    let owner = server.owner().await;
    let acme = org_id(&owner, "acme").await;
    let id = enroll(&server, &owner, "laptop", json!({"env": "dev"})).await;
    let path = format!("/ui/orgs/acme/agents/{id}");
    let (_, html) = page(&owner, &path).await;
    assert!(html.contains(">env=dev</textarea>"), "{html}");

    // A line without `=`: the page again, the error at the field, the input kept, nothing saved.
    let (status, _, html) = form(
        &owner,
        &format!("{path}/labels"),
        &[("labels", "team=core\nenv prod")],
    )
    .await;
    assert_eq!(status, 400, "{html}");
    assert!(
        html.contains("id=\"labels-error\"") && html.contains("Line 2 (`env prod`)"),
        "{html}"
    );
    assert!(html.contains("aria-invalid=\"true\""), "{html}");
    assert!(html.contains("team=core\nenv prod</textarea>"), "{html}");
    // A value the label rules refuse (the API's own check).
    let (status, _, html) = form(
        &owner,
        &format!("{path}/labels"),
        &[("labels", "env=pr od")],
    )
    .await;
    assert_eq!(status, 400, "{html}");
    assert!(html.contains("id=\"labels-error\""), "{html}");
    let stored = server
        .store
        .device(&acme, &id)
        .await
        .expect("store")
        .expect("device");
    assert_eq!(stored.labels.get("env").map(String::as_str), Some("dev"));

    // Saved: post/redirect/get, and the page and the API show the new labels.
    let (status, location, body) = form(
        &owner,
        &format!("{path}/labels"),
        &[("labels", "env=prod\n team = core ")],
    )
    .await;
    assert_eq!(
        (status, location.as_str()),
        (303, format!("{path}?done=labels").as_str()),
        "{body}"
    );
    let (_, html) = page(&owner, &location).await;
    assert!(html.contains("Labels saved"), "{html}");
    assert!(
        html.contains("env=prod</span>") && html.contains("team=core</span>"),
        "{html}"
    );
    let (_, api) = owner.get(&format!("{ORG}/devices/{id}")).await;
    assert_eq!(api["labels"], json!({"env": "prod", "team": "core"}));

    // A live link of the device, to see revocation reach it.
    let (tx, mut link) = tokio::sync::mpsc::channel(16);
    std::mem::forget(server.state.links.register(&id, "git", tx));

    // Revoking without ticking the box changes nothing and says why at the box.
    let (status, _, html) = form(
        &owner,
        &format!("{path}/revoke"),
        &[("reason", "laptop lost")],
    )
    .await;
    assert_eq!(status, 400, "{html}");
    assert!(
        html.contains("id=\"revoke-error\"") && html.contains("Tick the box"),
        "{html}"
    );
    assert!(
        html.contains("value=\"laptop lost\""),
        "the reason is kept: {html}"
    );
    let stored = server
        .store
        .device(&acme, &id)
        .await
        .expect("store")
        .expect("device");
    assert!(stored.revoked_at.is_none());

    let (status, location, body) = form(
        &owner,
        &format!("{path}/revoke"),
        &[("reason", "laptop lost"), ("understood", "yes")],
    )
    .await;
    assert_eq!(
        (status, location.as_str()),
        (303, format!("{path}?done=revoked").as_str()),
        "{body}"
    );
    // The link was told and closed at once.
    match tokio::time::timeout(Duration::from_secs(5), link.recv()).await {
        Ok(Some(ControlMessage::Revoked(r))) => assert!(r.reason.contains("laptop lost"), "{r:?}"),
        other => panic!("expected the revocation on the link, got {other:?}"),
    }
    assert!(
        tokio::time::timeout(Duration::from_secs(5), link.recv())
            .await
            .expect("closed at once")
            .is_none(),
        "the link is closed"
    );
    // The page shows it revoked, without forms.
    let (_, html) = page(&owner, &location).await;
    assert!(
        html.contains("id=\"revoked-notice\"") && html.contains("laptop lost"),
        "{html}"
    );
    assert!(
        html.contains("health-revoked\" id=\"health\">revoked<"),
        "{html}"
    );
    assert!(!html.contains("id=\"revoke-form\"") && !html.contains("id=\"labels-form\""));
    // The store, the API and the audit trail agree; changes are refused after.
    let stored = server
        .store
        .device(&acme, &id)
        .await
        .expect("store")
        .expect("device");
    assert_eq!(stored.revoked_reason.as_deref(), Some("laptop lost"));
    assert!(stored.revoked_at.is_some());
    let (_, api) = owner.get(&format!("{ORG}/devices/{id}")).await;
    assert_eq!(api["health"], "revoked");
    let (status, audit) = owner
        .get(&format!("{ORG}/audit?kind=device.revoked&limit=500"))
        .await;
    assert_eq!(status, 200, "{audit}");
    let records = audit["items"].as_array().expect("items");
    assert_eq!(records.len(), 1, "{audit}");
    assert_eq!(records[0]["detail"]["reason"], "laptop lost");
    let (status, _, _) = form(&owner, &format!("{path}/revoke"), &[("understood", "yes")]).await;
    assert_eq!(status, 409, "already revoked");
    let (status, _, _) = form(&owner, &format!("{path}/labels"), &[("labels", "env=x")]).await;
    assert_eq!(status, 409, "a revoked device cannot be changed");
    server.stop().await;
}

/// The `fle_…` token in a page.
fn token_in(html: &str) -> String {
    let start = html.find("value=\"fle_").expect("the token") + "value=\"".len();
    let rest = &html[start..];
    rest[..rest.find('"').expect("end of the token")].to_string()
}

async fn an_enrolment_token_is_shown_once_and_enrols(backend: Backend) {
    let server = TestServer::start(backend).await;
    let owner = server.owner().await;
    let acme = org_id(&owner, "acme").await;
    let tokens = "/ui/orgs/acme/agents/enrolment";
    let (status, html) = page(&owner, tokens).await;
    assert_eq!(status, 200, "{html}");
    assert!(html.contains("id=\"no-tokens\"") && html.contains("id=\"token-form\""));

    // Bad input: the form again with the error at its field, and no token made.
    for (fields, field) in [
        (vec![("uses", "0"), ("days", "7")], "uses-error"),
        (vec![("uses", "two"), ("days", "7")], "uses-error"),
        (vec![("uses", "1"), ("days", "400")], "days-error"),
        (vec![("uses", "1"), ("labels", "env")], "labels-error"),
        (vec![("uses", "1"), ("labels", "env=a b")], "labels-error"),
    ] {
        let (status, _, html) = form(&owner, tokens, &fields).await;
        assert_eq!(status, 400, "{fields:?}: {html}");
        assert!(
            html.contains(&format!("id=\"{field}\"")),
            "{fields:?}: {html}"
        );
        assert!(!html.contains("fle_"), "{html}");
    }
    let (_, list) = owner.get(&format!("{ORG}/enrollment-tokens")).await;
    assert_eq!(list["items"], json!([]), "nothing made from bad input");

    // Made: the token and the exact command, this once.
    let (status, _, html) = form(
        &owner,
        tokens,
        &[
            ("name", "build agents"),
            ("uses", "2"),
            ("days", "3"),
            ("labels", "env=ci"),
        ],
    )
    .await;
    assert_eq!(status, 200, "{html}");
    let token = token_in(&html);
    let command = format!(
        "flowlink-proxy enroll --server {} --token {token}",
        server.config.public_url
    );
    assert!(html.contains(&command), "{html}");
    assert!(html.contains("shown only once"), "{html}");

    // Never again: not on the token list, not on the devices page.
    for path in [tokens, "/ui/orgs/acme/agents"] {
        let (status, html) = page(&owner, path).await;
        assert_eq!(status, 200);
        assert!(
            !html.contains(&token) && !html.contains("value=\"fle_"),
            "{path}: {html}"
        );
    }
    let (_, html) = page(&owner, tokens).await;
    let (_, list) = owner.get(&format!("{ORG}/enrollment-tokens")).await;
    let token_id = list["items"][0]["id"].as_str().expect("id").to_string();
    let r = row(&html, &token_id);
    assert!(r.contains("build agents") && r.contains("2 of 2"), "{r}");
    assert!(
        r.contains("env=ci") && r.contains("token-live\">live<"),
        "{r}"
    );
    assert!(r.contains("owner@acme.test"), "who made it: {r}");

    // It enrols, with its labels, and the list counts the use.
    let (status, body) = try_enroll(&server, &token, "runner-1", json!({})).await;
    assert_eq!(status, 201, "{body}");
    let device_id = body["device_id"].as_str().expect("device");
    let device = server
        .store
        .device(&acme, device_id)
        .await
        .expect("store")
        .expect("device");
    assert_eq!(device.labels.get("env").map(String::as_str), Some("ci"));
    let (_, html) = page(&owner, tokens).await;
    assert!(row(&html, &token_id).contains("1 of 2"), "{html}");
    let (_, html) = page(&owner, "/ui/orgs/acme/agents").await;
    assert!(row(&html, device_id).contains("runner-1"), "{html}");

    // Revoked from its row: refused after.
    let (status, location, _) = form(&owner, &format!("{tokens}/{token_id}/revoke"), &[]).await;
    assert_eq!(
        (status, location.as_str()),
        (303, format!("{tokens}?done=revoked").as_str())
    );
    let (_, html) = page(&owner, &location).await;
    let r = row(&html, &token_id);
    assert!(
        r.contains("token-revoked\">revoked<") && !r.contains("<form"),
        "{r}"
    );
    let (status, body) = try_enroll(&server, &token, "runner-2", json!({})).await;
    assert_eq!(status, 401, "{body}");
    let (status, _, _) = form(&owner, &format!("{tokens}/{token_id}/revoke"), &[]).await;
    assert_eq!(status, 404, "no live token to revoke");
    server.stop().await;
}

async fn a_device_is_rekeyed_from_its_page(backend: Backend) {
    let server = TestServer::start(backend).await;
    let owner = server.owner().await;
    let acme = org_id(&owner, "acme").await;
    let id = enroll(&server, &owner, "laptop", json!({"env": "dev"})).await;
    let path = format!("/ui/orgs/acme/agents/{id}");
    let (_, html) = page(&owner, &path).await;
    assert!(html.contains("id=\"rekey-form\""), "{html}");

    // A lifetime out of range: the device page again with the error at the field.
    let (status, _, html) = form(&owner, &format!("{path}/rekey"), &[("days", "0")]).await;
    assert_eq!(status, 400, "{html}");
    assert!(
        html.contains("id=\"rekey-error\"") && !html.contains("fle_"),
        "{html}"
    );

    let (status, _, html) = form(&owner, &format!("{path}/rekey"), &[("days", "2")]).await;
    assert_eq!(status, 200, "{html}");
    let token = token_in(&html);
    assert!(html.contains("Re-key laptop"), "{html}");
    assert!(
        html.contains(&format!(
            "flowlink-proxy enroll --server {} --token {token}",
            server.config.public_url
        )),
        "{html}"
    );
    assert!(
        html.contains(&format!("href=\"{path}\">I have copied it")),
        "{html}"
    );
    let (_, html) = page(&owner, &path).await;
    assert!(!html.contains(&token), "shown once: {html}");

    // Enrolling with it keeps the device and gives it new keys; it works once.
    let (status, body) = try_enroll(&server, &token, "laptop", json!({})).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["device_id"], id.as_str());
    let stored = server
        .store
        .device(&acme, &id)
        .await
        .expect("store")
        .expect("device");
    assert_eq!(stored.key_version, 2);
    let (_, html) = page(&owner, &path).await;
    assert!(html.contains("(re-keyed "), "{html}");
    let (status, body) = try_enroll(&server, &token, "laptop", json!({})).await;
    assert_eq!(status, 401, "{body}");
    server.stop().await;
}

async fn a_viewer_sees_no_forms_and_cannot_post_them(backend: Backend) {
    let server = TestServer::start(backend).await;
    let owner = server.owner().await;
    let acme = org_id(&owner, "acme").await;
    let id = enroll(&server, &owner, "laptop", json!({"env": "dev"})).await;
    let (_, created) = owner
        .post(&format!("{ORG}/enrollment-tokens"), json!({}))
        .await;
    let token_id = created["info"]["id"]
        .as_str()
        .expect("token id")
        .to_string();
    let viewer = server
        .member(&owner, "acme", "vic@acme.test", "viewer")
        .await;

    let (status, html) = page(&viewer, "/ui/orgs/acme/agents").await;
    assert_eq!(status, 200, "{html}");
    assert!(row(&html, &id).contains("laptop"));
    assert!(!html.contains("id=\"enrolment-link\""), "{html}");
    let path = format!("/ui/orgs/acme/agents/{id}");
    let (status, html) = page(&viewer, &path).await;
    assert_eq!(status, 200, "{html}");
    assert!(
        html.contains("env=dev") && html.contains("id=\"read-only\""),
        "{html}"
    );
    assert!(
        !html.contains("<form method=\"post\" action=\"/ui/orgs/acme"),
        "no forms for a viewer: {html}"
    );
    // The token list is for those who may manage devices, as in the API.
    let (status, _) = page(&viewer, "/ui/orgs/acme/agents/enrolment").await;
    assert_eq!(status, 403);

    // Direct POSTs with a valid CSRF token are refused by the route table.
    for (post, fields) in [
        (format!("{path}/labels"), vec![("labels", "env=prod")]),
        (format!("{path}/revoke"), vec![("understood", "yes")]),
        (format!("{path}/rekey"), vec![("days", "1")]),
        (
            "/ui/orgs/acme/agents/enrolment".to_string(),
            vec![("uses", "1")],
        ),
        (
            format!("/ui/orgs/acme/agents/enrolment/{token_id}/revoke"),
            vec![],
        ),
    ] {
        let (status, _, html) = form(&viewer, &post, &fields).await;
        assert_eq!(status, 403, "{post}: {html}");
        assert!(html.contains("<html"), "an HTML refusal page");
    }
    let stored = server
        .store
        .device(&acme, &id)
        .await
        .expect("store")
        .expect("device");
    assert!(stored.revoked_at.is_none());
    assert_eq!(stored.labels.get("env").map(String::as_str), Some("dev"));
    let (_, list) = owner.get(&format!("{ORG}/enrollment-tokens")).await;
    let items = list["items"].as_array().expect("items");
    // The device's own token and the one made above: no new one, and that one still live.
    assert_eq!(items.len(), 2, "no token made: {list}");
    let made = items
        .iter()
        .find(|t| t["id"] == token_id.as_str())
        .expect("the token");
    assert_eq!(made["state"], "live", "{list}");
    server.stop().await;
}

async fn another_organisations_devices_are_not_found(backend: Backend) {
    let server = TestServer::start(backend).await;
    let owner = server.owner().await;
    let acme = org_id(&owner, "acme").await;
    let id = enroll(&server, &owner, "acme-laptop", json!({})).await;
    let other = server.other_org("globex").await;

    // Through globex's own pages, acme's device does not exist.
    let (status, html) = page(&other, &format!("/ui/orgs/globex/agents/{id}")).await;
    assert_eq!(status, 404, "{html}");
    let (status, _, _) = form(
        &other,
        &format!("/ui/orgs/globex/agents/{id}/revoke"),
        &[("understood", "yes")],
    )
    .await;
    assert_eq!(status, 404);
    let (status, _, _) = form(
        &other,
        &format!("/ui/orgs/globex/agents/{id}/labels"),
        &[("labels", "env=x")],
    )
    .await;
    assert_eq!(status, 404);
    let (status, html) = page(&other, "/ui/orgs/globex/agents").await;
    assert_eq!(status, 200);
    assert!(
        !html.contains(&id) && !html.contains("acme-laptop"),
        "{html}"
    );
    // Nor through acme's.
    let (status, _) = page(&other, &format!("/ui/orgs/acme/agents/{id}")).await;
    assert_eq!(status, 404);
    let stored = server
        .store
        .device(&acme, &id)
        .await
        .expect("store")
        .expect("device");
    assert!(stored.revoked_at.is_none() && stored.labels.is_empty());
    server.stop().await;
}
