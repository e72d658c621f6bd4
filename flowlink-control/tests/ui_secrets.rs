//! The secrets pages on both engines: the list and a secret's page show metadata and the org
//! key's state, never a value nor a sealed box; the set form's route stores only a box sealed
//! for exactly this org, name, next version and key version (it opens with the org key to what
//! was sealed), refuses a form carrying a plaintext value without storing or echoing it, and
//! refuses a box declared for another name, org or version; deleting needs the confirmation;
//! readers see no forms and their direct POSTs are refused; another organisation's secrets are
//! not found.
//!
//! The test seals as the page's script does, with `flowlink_proto::sealed::seal`, and plays
//! the custodian that holds the org key.

mod support;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use flowlink_control::store::Backend;
use flowlink_proto::sealed::{OrgSecretKey, SealContext, SealedBox, open, seal};
use serde_json::{Value, json};
use support::*;

const S: &str = "/api/v1/orgs/acme/secrets";
const PAGE: &str = "/ui/orgs/acme/secrets";

/// Enrols a device in acme through the API; returns its id.
async fn enroll(server: &TestServer, owner: &TestClient, name: &str) -> String {
    let (status, created) = owner
        .post("/api/v1/orgs/acme/enrollment-tokens", json!({}))
        .await;
    assert_eq!(status, 201, "token: {created}");
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).expect("random");
    let signing = ed25519_dalek::SigningKey::from_bytes(&seed);
    let (status, body) = server
        .client()
        .post(
            "/api/v1/enroll",
            json!({
                "token": created["token"],
                "device_name": name,
                "hostname": "host.example",
                "signing_key": STANDARD.encode(signing.verifying_key().to_bytes()),
                "box_key": OrgSecretKey::generate().public_key().to_base64(),
                "labels": {},
            }),
        )
        .await;
    assert_eq!(status, 201, "enrol: {body}");
    body["device_id"].as_str().expect("device id").to_string()
}

/// Sets up key version 1 of `slug`, wrapped to a new custodian of `owner`; returns the org key.
async fn set_up_key(owner: &TestClient, slug: &str, org_id: &str) -> OrgSecretKey {
    set_up_key_with_custodian(owner, slug, org_id).await.0
}

/// [`set_up_key`], also returning the custodian's id.
async fn set_up_key_with_custodian(
    owner: &TestClient,
    slug: &str,
    org_id: &str,
) -> (OrgSecretKey, String) {
    let custodian = OrgSecretKey::generate();
    let (status, body) = owner
        .post(
            &format!("/api/v1/orgs/{slug}/secrets/custodians"),
            json!({"name": "owner's laptop", "public_key": custodian.public_key().to_base64()}),
        )
        .await;
    assert_eq!(status, 201, "custodian: {body}");
    let recipient = format!("custodian:{}", body["id"].as_str().expect("id"));
    let org = OrgSecretKey::generate();
    let wrapped = seal(
        &custodian.public_key(),
        &SealContext::OrgKey {
            org_id,
            key_version: 1,
            recipient: &recipient,
        },
        org.to_bytes().as_ref(),
    )
    .expect("wrap");
    let (status, body) = owner
        .post(
            &format!("/api/v1/orgs/{slug}/secrets/key"),
            json!({"public_key": org.public_key().to_base64(), "previous_version": null,
                   "wraps": [{"recipient": recipient, "wrapped": wrapped}]}),
        )
        .await;
    assert_eq!(status, 201, "key set-up: {body}");
    let custodian_id = recipient
        .strip_prefix("custodian:")
        .unwrap_or_default()
        .to_string();
    (org, custodian_id)
}

fn seal_for(org: &OrgSecretKey, org_id: &str, name: &str, version: u64, value: &str) -> SealedBox {
    seal(
        &org.public_key(),
        &SealContext::Secret {
            org_id,
            name,
            version,
            key_version: 1,
        },
        value.as_bytes(),
    )
    .expect("seal")
}

/// What `secrets.js` puts in the form's `sealed` field: the box and the context declared.
fn envelope(sealed: &SealedBox, org_id: &str, name: &str, version: u64) -> String {
    json!({"alg": sealed.alg, "enc": sealed.enc, "ct": sealed.ct, "org_id": org_id,
           "name": name, "version": version.to_string(), "key_version": "1"})
    .to_string()
}

/// The stored sealed value of `name`, opened with the org key.
async fn opened(owner: &TestClient, org: &OrgSecretKey, org_id: &str, name: &str) -> String {
    let (status, body) = owner.get(&format!("{S}/sealed")).await;
    assert_eq!(status, 200, "{body}");
    let item = body["items"]
        .as_array()
        .and_then(|items| items.iter().find(|i| i["name"] == name))
        .unwrap_or_else(|| panic!("{name} is stored: {body}"))
        .clone();
    let sealed: SealedBox = serde_json::from_value(item["sealed"].clone()).expect("a sealed box");
    let version = item["version"].as_u64().expect("version");
    let value = open(
        org,
        &SealContext::Secret {
            org_id,
            name,
            version,
            key_version: 1,
        },
        &sealed,
    )
    .expect("the stored box opens with the org key for its name and version");
    String::from_utf8(value.to_vec()).expect("utf-8")
}

async fn stored(owner: &TestClient, name: &str) -> (u16, Value) {
    owner.get(&format!("{S}/{name}")).await
}

async fn the_pages_show_metadata_never_a_value(backend: Backend) {
    let server = TestServer::start(backend).await;
    let owner = server.owner().await;
    let acme = org_id(&owner, "acme").await;

    // No key yet: the page says so and gives the commands; there is no form to fill in.
    let (status, html) = page(&owner, PAGE).await;
    assert_eq!(status, 200, "{html}");
    assert!(html.contains("id=\"key-missing\""), "{html}");
    assert!(
        html.contains("secrets --server http://")
            && html.contains("--org acme custodian init --key-file custodian.key"),
        "{html}"
    );
    assert!(html.contains("--org acme key init --key-file custodian.key"));
    assert!(
        html.contains("id=\"accept-hint\"") && html.contains("<code>flowlink-proxy status</code>"),
        "how devices are accepted: {html}"
    );
    assert!(!html.contains("id=\"seal-form\""));
    assert!(html.contains("No secrets yet."));

    let (org, custodian) = set_up_key_with_custodian(&owner, "acme", &acme).await;
    let value = "ghp_page_must_never_show_this_0123";
    let sealed = seal_for(&org, &acme, "GITHUB_TOKEN", 1, value);
    let (status, body) = owner
        .put(
            &format!("{S}/GITHUB_TOKEN"),
            json!({"base_version": 0, "key_version": 1, "sealed": sealed,
                   "services": ["git"], "labels": {"env": "prod"},
                   "description": "CI pushes <b>tags</b>"}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let other = seal_for(&org, &acme, "DB_PASSWORD", 1, "another value 42");
    let (status, _) = owner
        .put(
            &format!("{S}/DB_PASSWORD"),
            json!({"base_version": 0, "key_version": 1, "sealed": other}),
        )
        .await;
    assert_eq!(status, 201);

    let (status, html) = page(&owner, PAGE).await;
    assert_eq!(status, 200, "{html}");
    assert!(
        html.contains("data-name=\"GITHUB_TOKEN\"") && html.contains("data-name=\"DB_PASSWORD\"")
    );
    assert!(
        html.contains("env=prod") && html.contains("every service") && html.contains("any device")
    );
    assert!(html.contains("owner@acme.test"), "who changed it");
    assert!(html.contains("never"), "not used yet");
    assert!(
        html.contains("CI pushes &lt;b&gt;tags&lt;/b&gt;")
            || html.contains("CI pushes &#60;b&#62;"),
        "escaped: {html}"
    );
    // The key: version 1, set up, nothing to rotate.
    assert!(html.contains("id=\"key-version\">1<"), "{html}");
    assert!(html.contains("id=\"rotation-required\">no<"));
    // No value, no sealed box, anywhere on the page.
    for needle in [
        value,
        "another value 42",
        &sealed.ct,
        &sealed.enc,
        &other.ct,
        &other.enc,
    ] {
        assert!(!html.contains(needle), "the page shows `{needle}`");
    }
    // The form: sealing data for the browser, the value field a password field, and the notice
    // with the CLI command visible until the script finds X25519.
    assert!(html.contains("id=\"seal-form\""));
    assert!(html.contains(&format!("data-org-id=\"{acme}\"")));
    assert!(html.contains(&format!(
        "data-public-key=\"{}\"",
        org.public_key().to_base64()
    )));
    assert!(html.contains("data-key-version=\"1\"") && html.contains("data-base-version=\"0\""));
    assert!(html.contains(
        "<input id=\"secret-value\" name=\"value\" type=\"password\" autocomplete=\"off\""
    ));
    assert!(
        html.contains("id=\"seal-unsupported\"")
            && !html.contains("id=\"seal-unsupported\" hidden")
    );
    assert!(
        html.contains("--org acme put NAME --service SERVICE"),
        "{html}"
    );
    assert!(html.contains("/ui/static/secrets.js?v=") && !html.contains("<script>"));

    // A device enrolled after the key was set up lacks it; once it reports using a secret, the
    // list says which device and when.
    let device_id = enroll(&server, &owner, "build-runner-7").await;
    let device = server
        .store
        .device(&acme, &device_id)
        .await
        .expect("store")
        .expect("device");
    server
        .store
        .record_secret_use(&device, &["GITHUB_TOKEN"])
        .await
        .expect("record use");
    let (_, html) = page(&owner, PAGE).await;
    assert!(html.contains("build-runner-7<br>"), "last used by: {html}");
    assert!(html.contains("0 of 1 active devices proved"), "{html}");
    assert!(
        html.contains("Not given the key yet: device build-runner-7")
            && html.contains("key grant --key-file"),
        "{html}"
    );
    // Revoking the custodian that held the key makes a rotation due; the page says so.
    let (status, _) = owner.delete(&format!("{S}/custodians/{custodian}")).await;
    assert_eq!(status, 204);
    let (_, html) = page(&owner, PAGE).await;
    assert!(
        html.contains("<strong class=\"warn\">yes</strong>"),
        "{html}"
    );
    assert!(
        html.contains("key rotate --key-file custodian.key"),
        "{html}"
    );
    assert!(
        html.contains("id=\"rotation-warning\""),
        "the form warns: {html}"
    );

    // One secret's page: its metadata, the rotation form for its next version, delete.
    let (status, html) = page(&owner, &format!("{PAGE}/GITHUB_TOKEN")).await;
    assert_eq!(status, 200, "{html}");
    assert!(html.contains("id=\"secret-version\">1<") && html.contains("git"));
    assert!(html.contains("data-base-version=\"1\"") && html.contains("rotate GITHUB_TOKEN"));
    assert!(
        html.contains("value=\"env=prod\""),
        "the scope is kept by default"
    );
    assert!(html.contains("id=\"delete-secret\""));
    for needle in [value, &sealed.ct, &sealed.enc] {
        assert!(!html.contains(needle), "the page shows `{needle}`");
    }
    // A name that is no secret is not found.
    let (status, _) = page(&owner, &format!("{PAGE}/NOT_THERE")).await;
    assert_eq!(status, 404);
    let (status, _) = page(&owner, &format!("{PAGE}/not-a-name")).await;
    assert_eq!(status, 404);
    server.stop().await;
}

async fn the_form_stores_only_sealed_values(backend: Backend) {
    let server = TestServer::start(backend).await;
    let owner = server.owner().await;
    let acme = org_id(&owner, "acme").await;
    let org = set_up_key(&owner, "acme", &acme).await;

    // A form that carries the value in plain text (no script ran) is refused, the value is not
    // echoed, and nothing is stored, even with a sealed box beside it.
    let plain = "plaintext-that-must-not-be-kept-77";
    let sealed = seal_for(&org, &acme, "API_KEY", 1, "the sealed one");
    let env = envelope(&sealed, &acme, "API_KEY", 1);
    for sealed_field in ["", env.as_str()] {
        let (status, _, html) = form(
            &owner,
            PAGE,
            &[
                ("name", "API_KEY"),
                ("base_version", "0"),
                ("key_version", "1"),
                ("value", plain),
                ("sealed", sealed_field),
            ],
        )
        .await;
        assert_eq!(status, 400, "{html}");
        assert!(
            html.contains("plain text") && html.contains("<html"),
            "{html}"
        );
        assert!(!html.contains(plain), "the value is echoed: {html}");
        assert_eq!(stored(&owner, "API_KEY").await.0, 404, "nothing stored");
    }
    // A form with neither value nor box is refused too.
    let (status, _, html) = form(
        &owner,
        PAGE,
        &[
            ("name", "API_KEY"),
            ("base_version", "0"),
            ("key_version", "1"),
        ],
    )
    .await;
    assert_eq!(status, 400, "{html}");
    assert!(html.contains("No sealed value arrived"), "{html}");

    // The sealed box alone: stored, and it opens with the org key to what was sealed.
    let (status, location, html) = form(
        &owner,
        PAGE,
        &[
            ("name", "API_KEY"),
            ("base_version", "0"),
            ("key_version", "1"),
            ("value", ""),
            ("services", "git, db"),
            ("labels", "env=prod, team=data"),
            ("description", "for the deploy bot"),
            ("sealed", &env),
        ],
    )
    .await;
    assert_eq!(
        (status, location.as_str()),
        (303, "/ui/orgs/acme/secrets/API_KEY"),
        "{html}"
    );
    assert_eq!(
        opened(&owner, &org, &acme, "API_KEY").await,
        "the sealed one"
    );
    let (_, meta) = stored(&owner, "API_KEY").await;
    assert_eq!(
        (
            &meta["version"],
            &meta["services"],
            &meta["labels"],
            &meta["description"]
        ),
        (
            &json!(1),
            &json!(["db", "git"]),
            &json!({"env": "prod", "team": "data"}),
            &json!("for the deploy bot")
        )
    );

    // Rotation through the secret's form: version 2, opens to the new value.
    let next = seal_for(&org, &acme, "API_KEY", 2, "rotated value");
    let (status, location, html) = form(
        &owner,
        PAGE,
        &[
            ("name", "API_KEY"),
            ("base_version", "1"),
            ("key_version", "1"),
            ("services", "git, db"),
            ("labels", "env=prod, team=data"),
            ("sealed", &envelope(&next, &acme, "API_KEY", 2)),
        ],
    )
    .await;
    assert_eq!(
        (status, location.as_str()),
        (303, "/ui/orgs/acme/secrets/API_KEY"),
        "{html}"
    );
    assert_eq!(
        opened(&owner, &org, &acme, "API_KEY").await,
        "rotated value"
    );
    // The secret's page lists both versions from the audit trail, newest first.
    let (status, html) = page(&owner, &format!("{PAGE}/API_KEY")).await;
    assert_eq!(status, 200, "{html}");
    let history = html
        .split("id=\"history\"")
        .nth(1)
        .and_then(|h| h.split("</table>").next())
        .unwrap_or_else(|| panic!("a history table: {html}"))
        .to_string();
    let second = history.find("new value").expect("version 2 listed");
    let first = history.find("created").expect("version 1 listed");
    assert!(second < first, "newest first: {history}");
    assert_eq!(history.matches("owner@acme.test").count(), 2, "{history}");
    assert!(
        history.contains("data-label=\"Version\">2<")
            && history.contains("data-label=\"Version\">1<"),
        "{history}"
    );

    // A form made before that change (it seals version 2 on top of 1 again): the API's conflict.
    let stale = seal_for(&org, &acme, "API_KEY", 2, "lost update");
    let (status, _, html) = form(
        &owner,
        PAGE,
        &[
            ("name", "API_KEY"),
            ("base_version", "1"),
            ("key_version", "1"),
            ("sealed", &envelope(&stale, &acme, "API_KEY", 2)),
        ],
    )
    .await;
    assert_eq!(status, 409, "{html}");
    assert!(
        html.contains("changed after this page was loaded"),
        "{html}"
    );
    assert_eq!(
        opened(&owner, &org, &acme, "API_KEY").await,
        "rotated value"
    );
    // The list page's form for a name that exists: it says where to change it.
    let again = seal_for(&org, &acme, "API_KEY", 1, "a second first value");
    let (status, _, html) = form(
        &owner,
        PAGE,
        &[
            ("name", "API_KEY"),
            ("base_version", "0"),
            ("key_version", "1"),
            ("sealed", &envelope(&again, &acme, "API_KEY", 1)),
        ],
    )
    .await;
    assert_eq!(status, 409, "{html}");
    assert!(
        html.contains("already exists") && html.contains("/ui/orgs/acme/secrets/API_KEY"),
        "{html}"
    );
    assert_eq!(
        opened(&owner, &org, &acme, "API_KEY").await,
        "rotated value"
    );
    // Bad scope is the API's refusal, with nothing stored.
    let (status, _, html) = form(
        &owner,
        PAGE,
        &[
            ("name", "NEW_ONE"),
            ("base_version", "0"),
            ("key_version", "1"),
            ("labels", "env"),
            (
                "sealed",
                &envelope(
                    &seal_for(&org, &acme, "NEW_ONE", 1, "x"),
                    &acme,
                    "NEW_ONE",
                    1,
                ),
            ),
        ],
    )
    .await;
    assert_eq!(status, 400, "{html}");
    assert!(html.contains("key=value"), "{html}");
    assert_eq!(stored(&owner, "NEW_ONE").await.0, 404);
    server.stop().await;
}

async fn boxes_declared_for_something_else_are_refused(backend: Backend) {
    let server = TestServer::start(backend).await;
    let owner = server.owner().await;
    let acme = org_id(&owner, "acme").await;
    let org = set_up_key(&owner, "acme", &acme).await;
    let other_owner = server.other_org("globex").await;
    let globex = org_id(&other_owner, "globex").await;

    let fields = |sealed: String| {
        vec![
            ("name".to_string(), "TARGET".to_string()),
            ("base_version".to_string(), "0".to_string()),
            ("key_version".to_string(), "1".to_string()),
            ("sealed".to_string(), sealed),
        ]
    };
    let cases = [
        // Sealed for another secret's name.
        (
            envelope(&seal_for(&org, &acme, "OTHER", 1, "v"), &acme, "OTHER", 1),
            "sealed for the secret `OTHER`",
        ),
        // Sealed for another organisation.
        (
            envelope(
                &seal_for(&org, &globex, "TARGET", 1, "v"),
                &globex,
                "TARGET",
                1,
            ),
            "another organisation",
        ),
        // Sealed for a later version than the form sets.
        (
            envelope(&seal_for(&org, &acme, "TARGET", 5, "v"), &acme, "TARGET", 5),
            "sealed for version 5",
        ),
    ];
    for (sealed, why) in cases {
        let owned = fields(sealed);
        let borrowed: Vec<(&str, &str)> = owned
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let (status, _, html) = form(&owner, PAGE, &borrowed).await;
        assert_eq!(status, 400, "{why}: {html}");
        assert!(html.contains(why), "{why}: {html}");
        assert_eq!(
            stored(&owner, "TARGET").await.0,
            404,
            "{why}: nothing stored"
        );
    }
    // Malformed boxes are the API's refusal.
    let mut bad = seal_for(&org, &acme, "TARGET", 1, "v");
    bad.enc = "c2hvcnQ=".into();
    let owned = fields(envelope(&bad, &acme, "TARGET", 1));
    let borrowed: Vec<(&str, &str)> = owned
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let (status, _, html) = form(&owner, PAGE, &borrowed).await;
    assert_eq!(status, 400, "{html}");
    assert!(html.contains("32 bytes"), "{html}");
    // The control plane cannot open a box, so a box whose declaration lies is stored; it then
    // opens nowhere, because its real context is bound into it.
    let liar = seal_for(&org, &acme, "OTHER", 1, "moved value");
    let owned = fields(envelope(&liar, &acme, "TARGET", 1));
    let borrowed: Vec<(&str, &str)> = owned
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let (status, _, _) = form(&owner, PAGE, &borrowed).await;
    assert_eq!(status, 303);
    let stored_box = SealedBox {
        alg: liar.alg.clone(),
        enc: liar.enc.clone(),
        ct: liar.ct.clone(),
    };
    assert!(
        open(
            &org,
            &SealContext::Secret {
                org_id: &acme,
                name: "TARGET",
                version: 1,
                key_version: 1
            },
            &stored_box
        )
        .is_err(),
        "a box sealed for OTHER does not open as TARGET"
    );
    server.stop().await;
}

async fn readers_and_outsiders_cannot_change_secrets(backend: Backend) {
    let server = TestServer::start(backend).await;
    let owner = server.owner().await;
    let acme = org_id(&owner, "acme").await;
    let org = set_up_key(&owner, "acme", &acme).await;
    let sealed = seal_for(&org, &acme, "KEPT", 1, "kept value");
    let (status, _) = owner
        .put(
            &format!("{S}/KEPT"),
            json!({"base_version": 0, "key_version": 1, "sealed": sealed}),
        )
        .await;
    assert_eq!(status, 201);
    let auditor = server
        .member(&owner, "acme", "aud@acme.test", "auditor")
        .await;
    let viewer = server
        .member(&owner, "acme", "vic@acme.test", "viewer")
        .await;
    let outsider = server.other_org("globex").await;

    // The auditor reads the metadata, without any form, and is told why.
    let (status, html) = page(&auditor, PAGE).await;
    assert_eq!(status, 200, "{html}");
    assert!(html.contains("data-name=\"KEPT\"") && html.contains("id=\"read-only\""));
    assert!(!html.contains("id=\"seal-form\"") && !html.contains("data-public-key"));
    let (status, html) = page(&auditor, &format!("{PAGE}/KEPT")).await;
    assert_eq!(status, 200, "{html}");
    assert!(
        html.contains("id=\"history\""),
        "an auditor reads the history: {html}"
    );
    assert!(
        !html.contains("<form method=\"post\" action=\"/ui/orgs/acme/secrets"),
        "{html}"
    );
    // Their direct POSTs are refused by the route's permission; nothing changes.
    let next = seal_for(&org, &acme, "KEPT", 2, "auditor's value");
    let (status, _, html) = form(
        &auditor,
        PAGE,
        &[
            ("name", "KEPT"),
            ("base_version", "1"),
            ("key_version", "1"),
            ("sealed", &envelope(&next, &acme, "KEPT", 2)),
        ],
    )
    .await;
    assert_eq!(status, 403, "{html}");
    assert!(html.contains("<html"), "an HTML refusal page");
    let (status, _, _) = form(
        &auditor,
        &format!("{PAGE}/KEPT/delete"),
        &[("confirm", "yes")],
    )
    .await;
    assert_eq!(status, 403);
    assert_eq!(opened(&owner, &org, &acme, "KEPT").await, "kept value");
    // A viewer may not see secrets at all (the API's read permission).
    let (status, _) = page(&viewer, PAGE).await;
    assert_eq!(status, 403);
    let (status, _, _) = form(
        &viewer,
        &format!("{PAGE}/KEPT/delete"),
        &[("confirm", "yes")],
    )
    .await;
    assert_eq!(status, 403);
    // Another organisation's owner finds nothing, and changes nothing.
    for path in [PAGE.to_string(), format!("{PAGE}/KEPT")] {
        let (status, _) = page(&outsider, &path).await;
        assert_eq!(status, 404, "{path}");
    }
    let (status, _, _) = form(
        &outsider,
        &format!("{PAGE}/KEPT/delete"),
        &[("confirm", "yes")],
    )
    .await;
    assert_eq!(status, 404);
    let (status, _, _) = form(
        &outsider,
        PAGE,
        &[
            ("name", "KEPT"),
            ("base_version", "1"),
            ("key_version", "1"),
            ("sealed", &envelope(&next, &acme, "KEPT", 2)),
        ],
    )
    .await;
    assert_eq!(status, 404);
    assert_eq!(opened(&owner, &org, &acme, "KEPT").await, "kept value");

    // The owner deletes it: only with the confirmation ticked.
    let (status, _, html) = form(&owner, &format!("{PAGE}/KEPT/delete"), &[]).await;
    assert_eq!(status, 400, "{html}");
    assert!(
        html.contains("tick the box") || html.contains("Tick the box"),
        "{html}"
    );
    assert_eq!(stored(&owner, "KEPT").await.0, 200);
    let (status, location, _) = form(
        &owner,
        &format!("{PAGE}/KEPT/delete"),
        &[("confirm", "yes")],
    )
    .await;
    assert_eq!((status, location.as_str()), (303, PAGE));
    assert_eq!(stored(&owner, "KEPT").await.0, 404);
    let (status, _, _) = form(
        &owner,
        &format!("{PAGE}/KEPT/delete"),
        &[("confirm", "yes")],
    )
    .await;
    assert_eq!(status, 404, "already gone");
    let (_, audit) = owner
        .get("/api/v1/orgs/acme/audit?kind=secret.deleted")
        .await;
    assert!(audit.to_string().contains("KEPT"), "audited: {audit}");
    server.stop().await;
}

both!(
    the_pages_show_metadata_never_a_value,
    the_form_stores_only_sealed_values,
    boxes_declared_for_something_else_are_refused,
    readers_and_outsiders_cannot_change_secrets
);
