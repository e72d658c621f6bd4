//! Policy management: versions per scope, validation, lost-update protection, history, diff,
//! rollback, explain, layering and signed bundles, on both engines.

mod support;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use flowlink_control::store::Backend;
use flowlink_proto::bundle::{BundleError, SignedBundle};
use serde_json::{Value, json};
use support::{TestClient, TestServer, code};

const P: &str = "/api/v1/orgs/acme/policies";

const ORG_POLICY: &str = r#"version = 1
default_action = "allow"

[[rules]]
id = "no-env"
tool = "get-env"
action = "block"
message = "environment variables may hold secrets"
"#;

const GITHUB_POLICY: &str = r#"version = 1

[[rules]]
id = "approve-merge"
service = "github"
tool = "merge_pull_request"
action = "approve"
"#;

const PROD_POLICY: &str = r#"version = 1

[[rules]]
id = "prod-no-delete"
tool = "delete_*"
action = "block"
"#;

async fn publish(c: &TestClient, scope: &str, body: &str) -> (u16, Value) {
    c.post(
        &format!("{P}/{scope}/versions"),
        json!({"body": body, "comment": format!("publish {scope}")}),
    )
    .await
}

async fn published(c: &TestClient, scope: &str, body: &str) -> Value {
    let (status, v) = publish(c, scope, body).await;
    assert_eq!(status, 201, "publish {scope}: {v}");
    v
}

async fn publish_and_read(backend: Backend) {
    let server = TestServer::start(backend).await;
    let owner = server.owner().await;

    let (status, list) = owner.get(P).await;
    assert_eq!((status, list.clone()), (200, json!([])), "{list}");

    let v1 = published(&owner, "org", ORG_POLICY).await;
    assert_eq!(v1["scope"], "org");
    assert_eq!(v1["version"], 1);
    assert_eq!(v1["body"], ORG_POLICY);
    assert_eq!(v1["author_email"], "owner@acme.test");
    assert_eq!(v1["comment"], "publish org");
    assert_eq!(v1["restored_from"], Value::Null);
    assert_eq!(
        v1["sha256"],
        flowlink_proto::bundle::sha256_hex(ORG_POLICY.as_bytes())
    );
    let v2 = published(&owner, "org", &format!("{ORG_POLICY}\n# second\n")).await;
    assert_eq!(v2["version"], 2);
    published(&owner, "service:github", GITHUB_POLICY).await;

    let (status, got) = owner.get(&format!("{P}/org/versions/1")).await;
    assert_eq!(status, 200, "{got}");
    assert_eq!(got["body"], ORG_POLICY);
    let (status, got) = owner.get(&format!("{P}/org/versions/9")).await;
    assert_eq!((status, code(&got)), (404, "not_found"), "{got}");
    let (status, got) = owner.get(&format!("{P}/org/versions/x")).await;
    assert_eq!((status, code(&got)), (400, "invalid_request"), "{got}");

    // The list: every scope, its current version, author and time, in layer order.
    let (status, list) = owner.get(P).await;
    assert_eq!(status, 200, "{list}");
    let items = list.as_array().expect("array");
    assert_eq!(items.len(), 2, "{list}");
    assert_eq!(
        (&items[0]["scope"], &items[0]["version"]),
        (&json!("org"), &json!(2))
    );
    assert_eq!(items[1]["scope"], "service:github");
    assert_eq!(items[0]["author_email"], "owner@acme.test");
    assert!(
        items[0]["created_at"]
            .as_str()
            .is_some_and(|t| t.contains('T'))
    );
    assert!(
        items[0].get("body").is_none(),
        "lists carry no bodies: {list}"
    );

    // Bad scopes are refused before anything else.
    for bad in ["orgs", "group:env", "service:", "group:env=pr%20od"] {
        let (status, body) = publish(&owner, bad, ORG_POLICY).await;
        assert_eq!(
            (status, code(&body)),
            (400, "invalid_request"),
            "{bad}: {body}"
        );
    }
    // Comments are plain text.
    let (status, body) = owner
        .post(
            &format!("{P}/org/versions"),
            json!({"body": ORG_POLICY, "comment": "nul \u{0} byte"}),
        )
        .await;
    assert_eq!(status, 400, "{body}");
}

async fn validation_errors_have_positions(backend: Backend) {
    let server = TestServer::start(backend).await;
    let owner = server.owner().await;

    let bad = "version = 1\n\n[[rules]]\nid = \"x\"\naction = \"alow\"\n";
    let (status, body) = publish(&owner, "org", bad).await;
    assert_eq!((status, code(&body)), (422, "invalid_policy"), "{body}");
    let message = body["error"]["message"].as_str().expect("message");
    assert!(
        message.starts_with("line 5, column 10: unknown action `alow`"),
        "{message}"
    );
    assert_eq!(body["error"]["policy_error"]["line"], 5);
    assert_eq!(body["error"]["policy_error"]["column"], 10);
    assert_eq!(body["error"]["policy_error"]["layer"], Value::Null);
    // Nothing was stored.
    let (_, list) = owner.get(P).await;
    assert_eq!(list, json!([]));

    // Valid alone, but not combined with the org layer: the duplicate id names both layers.
    published(&owner, "org", ORG_POLICY).await;
    let clash = "version = 1\n[[rules]]\nid = \"no-env\"\naction = \"allow\"\n";
    let (status, body) = publish(&owner, "service:github", clash).await;
    assert_eq!((status, code(&body)), (422, "invalid_policy"), "{body}");
    let detail = &body["error"]["policy_error"];
    assert_eq!(detail["layer"], "service:github", "{body}");
    assert_eq!(detail["line"], 3, "{body}");
    assert!(
        detail["message"]
            .as_str()
            .is_some_and(|m| m.contains("layer `org`")),
        "{body}"
    );
    // A group and a service that one device can run together are checked together too.
    published(&owner, "group:env=prod", PROD_POLICY).await;
    let clash = "version = 1\n[[rules]]\nid = \"prod-no-delete\"\naction = \"allow\"\n";
    let (status, body) = publish(&owner, "service:github", clash).await;
    assert_eq!(status, 422, "{body}");
    // ...but two values of one label never apply together.
    published(&owner, "group:env=dev", clash).await;

    // Validation without saving.
    let (status, v) = owner
        .post(&format!("{P}/validate"), json!({"body": bad}))
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["valid"], false);
    assert_eq!(v["errors"][0]["line"], 5);
    assert_eq!(v["errors"][0]["column"], 10);
    assert!(
        v["errors"][0]["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("line 5"))
    );
    let (status, v) = owner
        .post(&format!("{P}/validate"), json!({"body": ORG_POLICY}))
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!((&v["valid"], &v["rules"]), (&json!(true), &json!(1)), "{v}");
    // With a scope, as publishing would check it.
    let (_, v) = owner
        .post(
            &format!("{P}/validate"),
            json!({"body": "version = 1\n[[rules]]\nid = \"no-env\"\naction = \"allow\"\n", "scope": "service:x"}),
        )
        .await;
    assert_eq!(v["valid"], false, "{v}");
    assert_eq!(v["errors"][0]["layer"], "service:x", "{v}");
}

async fn lost_updates_are_refused(backend: Backend) {
    let server = TestServer::start(backend).await;
    let owner = server.owner().await;
    let path = format!("{P}/org/versions");

    // 0 = "I am creating the first version".
    let (status, body) = owner
        .post(
            &path,
            json!({"body": ORG_POLICY, "comment": "a", "base_version": 0}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let (status, body) = owner
        .post(
            &path,
            json!({"body": ORG_POLICY, "comment": "b", "base_version": 1}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["version"], 2);
    // Someone else edited version 1 too and is late.
    let (status, body) = owner
        .post(
            &path,
            json!({"body": ORG_POLICY, "comment": "c", "base_version": 1}),
        )
        .await;
    assert_eq!((status, code(&body)), (409, "conflict"), "{body}");
    let message = body["error"]["message"].as_str().unwrap_or("");
    assert!(
        message.contains("version 2") && message.contains("version 1"),
        "{message}"
    );
    let (status, body) = owner
        .post(
            &path,
            json!({"body": ORG_POLICY, "comment": "d", "base_version": 0}),
        )
        .await;
    assert_eq!(status, 409, "{body}");
    // Rollback is protected the same way.
    let (status, body) = owner
        .post(
            &format!("{P}/org/rollback"),
            json!({"version": 1, "comment": "r", "base_version": 1}),
        )
        .await;
    assert_eq!(status, 409, "{body}");
    let (_, list) = owner.get(&format!("{P}/org/versions")).await;
    assert_eq!(list["items"].as_array().map(Vec::len), Some(2), "{list}");

    // Concurrent publishes of one scope: each gets its own number or a conflict, never a
    // duplicate and never an error.
    let mut tasks = Vec::new();
    for i in 0..6 {
        let c = owner.clone();
        let path = path.clone();
        tasks.push(tokio::spawn(async move {
            c.post(
                &path,
                json!({"body": ORG_POLICY, "comment": format!("race {i}")}),
            )
            .await
        }));
    }
    let mut versions = Vec::new();
    for t in tasks {
        let (status, body) = t.await.expect("task");
        match status {
            201 => versions.push(body["version"].as_i64().expect("version")),
            409 => assert_eq!(code(&body), "conflict"),
            other => panic!("unexpected {other}: {body}"),
        }
    }
    assert!(!versions.is_empty());
    versions.sort_unstable();
    versions.dedup();
    let (_, list) = owner.get(&format!("{P}/org/versions")).await;
    assert_eq!(
        list["items"].as_array().map(Vec::len),
        Some(2 + versions.len()),
        "{list}"
    );
}

async fn versions_are_paginated_newest_first(backend: Backend) {
    let server = TestServer::start(backend).await;
    let owner = server.owner().await;
    for i in 1..=5 {
        published(&owner, "service:github", &format!("{GITHUB_POLICY}# {i}\n")).await;
    }
    let mut seen = Vec::new();
    let mut url = format!("{P}/service:github/versions?limit=2");
    let mut pages = 0;
    loop {
        let (status, page) = owner.get(&url).await;
        assert_eq!(status, 200, "{page}");
        pages += 1;
        for item in page["items"].as_array().expect("items") {
            assert!(item.get("body").is_none());
            seen.push(item["version"].as_i64().expect("version"));
        }
        match page["next_cursor"].as_str() {
            Some(cursor) => url = format!("{P}/service:github/versions?limit=2&cursor={cursor}"),
            None => break,
        }
    }
    assert_eq!(seen, [5, 4, 3, 2, 1]);
    assert_eq!(pages, 3);
    let (status, body) = owner
        .get(&format!("{P}/service:github/versions?cursor=bm9wZQ"))
        .await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = owner
        .get(&format!("{P}/service:github/versions?limit=0"))
        .await;
    assert_eq!(status, 400, "{body}");
    // A scope without versions has an empty history.
    let (status, page) = owner.get(&format!("{P}/service:other/versions")).await;
    assert_eq!((status, page["items"].clone()), (200, json!([])));
}

async fn diff_and_rollback(backend: Backend) {
    let server = TestServer::start(backend).await;
    let owner = server.owner().await;
    published(&owner, "org", ORG_POLICY).await;
    let changed = ORG_POLICY.replace("action = \"block\"", "action = \"approve\"");
    published(&owner, "org", &changed).await;

    let (status, d) = owner.get(&format!("{P}/org/diff?from=1&to=2")).await;
    assert_eq!(status, 200, "{d}");
    let text = d["diff"].as_str().expect("diff");
    assert!(
        text.contains("--- org@1") && text.contains("+++ org@2"),
        "{text}"
    );
    assert!(text.contains("-action = \"block\""), "{text}");
    assert!(text.contains("+action = \"approve\""), "{text}");
    assert!(text.contains("@@"), "{text}");
    let (_, same) = owner.get(&format!("{P}/org/diff?from=2&to=2")).await;
    assert_eq!(same["diff"], "");
    let (status, body) = owner.get(&format!("{P}/org/diff?from=1&to=7")).await;
    assert_eq!((status, code(&body)), (404, "not_found"), "{body}");
    let (status, body) = owner.get(&format!("{P}/org/diff?from=1")).await;
    assert_eq!(status, 400, "{body}");

    // Rollback: a new version with the old body.
    let (status, v3) = owner
        .post(
            &format!("{P}/org/rollback"),
            json!({"version": 1, "comment": "approve was too slow"}),
        )
        .await;
    assert_eq!(status, 201, "{v3}");
    assert_eq!(v3["version"], 3);
    assert_eq!(v3["restored_from"], 1);
    assert_eq!(v3["body"], ORG_POLICY);
    assert_eq!(v3["comment"], "approve was too slow");
    let (_, got) = owner.get(&format!("{P}/org/versions/3")).await;
    assert_eq!(got["body"], ORG_POLICY);
    let (_, d) = owner.get(&format!("{P}/org/diff?from=1&to=3")).await;
    assert_eq!(d["diff"], "");
    assert_eq!(d["from_sha256"], d["to_sha256"]);
    let (status, body) = owner
        .post(
            &format!("{P}/org/rollback"),
            json!({"version": 42, "comment": ""}),
        )
        .await;
    assert_eq!(status, 404, "{body}");

    // A rollback that would no longer combine with the other layers is refused.
    published(&owner, "org", "version = 1\n").await;
    published(
        &owner,
        "service:github",
        "version = 1\n[[rules]]\nid = \"no-env\"\naction = \"allow\"\n",
    )
    .await;
    let (status, body) = owner
        .post(
            &format!("{P}/org/rollback"),
            json!({"version": 1, "comment": "x"}),
        )
        .await;
    assert_eq!((status, code(&body)), (422, "invalid_policy"), "{body}");
}

async fn explain_stored_and_unsaved(backend: Backend) {
    let server = TestServer::start(backend).await;
    let owner = server.owner().await;
    published(&owner, "org", ORG_POLICY).await;
    published(&owner, "service:github", GITHUB_POLICY).await;
    published(&owner, "group:env=prod", PROD_POLICY).await;

    let explain = |body: Value| {
        let owner = owner.clone();
        async move {
            let (status, e) = owner.post(&format!("{P}/explain"), body).await;
            assert_eq!(status, 200, "{e}");
            e
        }
    };
    // The org's rule decides.
    let e = explain(
        json!({"agent": "claude-code", "service": "github", "tool": "get-env", "arguments": {}}),
    )
    .await;
    assert_eq!(e["decision"], "block", "{e}");
    assert_eq!(e["rule_id"], "no-env");
    assert_eq!(e["layer"], "org");
    assert_eq!(e["message"], "environment variables may hold secrets");
    assert!(
        e["reason"].as_str().is_some_and(|r| r.contains("no-env")),
        "{e}"
    );
    assert_eq!(e["risk"], 0);
    assert_eq!(e["findings"], json!([]));
    let layers: Vec<&str> = e["layers"]
        .as_array()
        .expect("layers")
        .iter()
        .filter_map(|l| l["scope"].as_str())
        .collect();
    assert_eq!(layers, ["org", "service:github"], "no labels: no group");
    // Org rule and service rule are both in the trace, each with its layer.
    let trace = e["trace"].as_array().expect("trace");
    let layer_of = |id: &str| {
        trace
            .iter()
            .find(|t| t["rule_id"] == id)
            .map(|t| (t["layer"].clone(), t["outcome"].clone()))
    };
    assert_eq!(layer_of("no-env"), Some((json!("org"), json!("decided"))));
    let (layer, outcome) = layer_of("approve-merge").expect("service rule in trace");
    assert_eq!(
        (layer, outcome),
        (json!("service:github"), json!("not_matched"))
    );
    assert!(
        trace
            .iter()
            .find(|t| t["rule_id"] == "approve-merge")
            .is_some_and(|t| t["reason"].as_str().is_some_and(|r| r.contains("get-env")))
    );
    assert!(
        layer_of("prod-no-delete").is_none(),
        "group rule without the label"
    );
    assert!(
        e["text"]
            .as_str()
            .is_some_and(|t| t.contains("decision: block")),
        "{e}"
    );

    // The service's rule decides its tool.
    let e = explain(json!({"agent": "a", "service": "github", "tool": "merge_pull_request"})).await;
    assert_eq!(
        (&e["decision"], &e["layer"]),
        (&json!("approve"), &json!("service:github"))
    );

    // The group applies only with its label.
    let e = explain(json!({"agent": "a", "service": "github", "tool": "delete_repo", "labels": {"env": "prod"}})).await;
    assert_eq!(
        (&e["decision"], &e["rule_id"]),
        (&json!("block"), &json!("prod-no-delete")),
        "{e}"
    );
    assert_eq!(e["layer"], "group:env=prod");
    let e = explain(
        json!({"agent": "a", "service": "github", "tool": "delete_repo", "labels": {"env": "dev"}}),
    )
    .await;
    assert_eq!(
        (&e["decision"], &e["rule_id"]),
        (&json!("allow"), &Value::Null),
        "{e}"
    );

    // The shield: findings with their argument.
    let e = explain(json!({"agent": "a", "service": "shell", "tool": "run", "arguments": {"command": "rm -rf ~"}})).await;
    assert_eq!(
        (&e["decision"], &e["rule_id"]),
        (&json!("block"), &json!("shield")),
        "{e}"
    );
    assert!(e["risk"].as_u64().is_some_and(|r| r >= 80), "{e}");
    assert_eq!(e["findings"][0]["pointer"], "/command", "{e}");
    assert_eq!(e["findings"][0]["kind"], "shell");

    // An unsaved body alone.
    let e = explain(json!({"agent": "a", "service": "github", "tool": "get-env",
        "body": "version = 1\ndefault_action = \"confirm\"\n"}))
    .await;
    assert_eq!(
        (&e["decision"], &e["rule_id"]),
        (&json!("confirm"), &Value::Null),
        "{e}"
    );
    assert_eq!(e["layers"], json!([]));
    // An unsaved body in place of a scope, among the stored layers.
    let e = explain(json!({"agent": "a", "service": "github", "tool": "merge_pull_request",
        "scope": "service:github",
        "body": "version = 1\n[[rules]]\nid = \"merge-ok\"\ntool = \"merge_pull_request\"\naction = \"allow\"\n"})).await;
    assert_eq!(
        (&e["decision"], &e["rule_id"]),
        (&json!("allow"), &json!("merge-ok")),
        "{e}"
    );
    assert_eq!(
        e["layers"][1],
        json!({"scope": "service:github", "version": null}),
        "{e}"
    );
    assert_eq!(e["layers"][0]["version"], 1);

    // Errors.
    let (status, body) = owner
        .post(
            &format!("{P}/explain"),
            json!({"agent": "a", "service": "s", "tool": "t", "body": "version = 2\n"}),
        )
        .await;
    assert_eq!((status, code(&body)), (422, "invalid_policy"), "{body}");
    assert_eq!(body["error"]["policy_error"]["line"], 1);
    let (status, body) = owner
        .post(
            &format!("{P}/explain"),
            json!({"agent": "a", "service": "s", "tool": "t", "scope": "org"}),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = owner
        .post(
            &format!("{P}/explain"),
            json!({"agent": "a", "service": "s", "tool": "t",
            "scope": "service:github", "body": "version = 1\n"}),
        )
        .await;
    assert_eq!(status, 400, "scope that does not apply: {body}");
}

async fn bundles_are_signed(backend: Backend) {
    let server = TestServer::start(backend).await;
    let owner = server.owner().await;
    published(&owner, "org", ORG_POLICY).await;
    published(&owner, "service:github", GITHUB_POLICY).await;
    published(&owner, "group:env=prod", PROD_POLICY).await;
    published(&owner, "group:env=dev", "version = 1\n").await;
    published(&owner, "service:jira", "version = 1\n").await;

    // First use from several requests at once: one key.
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let c = owner.clone();
        tasks.push(tokio::spawn(async move {
            c.get("/api/v1/orgs/acme/signing-key").await
        }));
    }
    let mut ids = Vec::new();
    for t in tasks {
        let (status, key) = t.await.expect("task");
        assert_eq!(status, 200, "{key}");
        ids.push(key["key_id"].clone());
    }
    ids.dedup();
    assert_eq!(ids.len(), 1, "{ids:?}");
    let (status, key) = owner.get("/api/v1/orgs/acme/signing-key").await;
    assert_eq!(status, 200, "{key}");
    assert_eq!(key["key_id"], ids[0]);
    assert_eq!(key["algorithm"], "ed25519");
    let raw = STANDARD
        .decode(key["public_key"].as_str().expect("public key"))
        .expect("base64");
    let public =
        ed25519_dalek::VerifyingKey::from_bytes(&raw.try_into().expect("32 bytes")).expect("key");
    assert_eq!(key["key_id"], flowlink_proto::bundle::key_id(&public));
    // The key is made once.
    let (_, again) = owner.get("/api/v1/orgs/acme/signing-key").await;
    assert_eq!(again, key);

    let fetch = |query: &'static str| {
        let owner = owner.clone();
        async move {
            let (status, body) = owner.get(&format!("{P}/bundle{query}")).await;
            assert_eq!(status, 200, "{body}");
            serde_json::from_value::<SignedBundle>(body).expect("signed bundle")
        }
    };
    let signed = fetch("?service=github&labels=env=prod,team=x").await;
    assert_eq!(signed.key_id, key["key_id"]);
    let bundle = signed.verify(&public).expect("verifies");
    assert_eq!(bundle.schema, 1);
    let org = server
        .store
        .org_by_ref("acme")
        .await
        .expect("store")
        .expect("org");
    assert_eq!(bundle.org_id, org.id);
    assert_eq!(bundle.selector.service.as_deref(), Some("github"));
    assert_eq!(
        bundle.selector.labels.get("team").map(String::as_str),
        Some("x")
    );
    let scopes: Vec<&str> = bundle.layers.iter().map(|l| l.scope.as_str()).collect();
    assert_eq!(scopes, ["org", "group:env=prod", "service:github"]);
    assert_eq!(bundle.layers[0].body, ORG_POLICY);
    assert_eq!(bundle.layers[0].version, 1);
    // What the proxy will do with it.
    let layers: Vec<(&str, &str)> = bundle
        .layers
        .iter()
        .map(|l| (l.scope.as_str(), l.body.as_str()))
        .collect();
    let policy = flowlink_policy::Policy::from_layers(&layers).expect("loads");
    assert_eq!(policy.rule_count(), 3);

    // Tampering is detected.
    let tampered = SignedBundle {
        payload: signed.payload.replace("block", "allow"),
        ..signed.clone()
    };
    assert_ne!(tampered.payload, signed.payload);
    assert!(matches!(
        tampered.verify(&public),
        Err(BundleError::BadSignature(_))
    ));
    let mut sig = STANDARD.decode(&signed.signature).expect("b64");
    sig[0] ^= 1;
    let tampered = SignedBundle {
        signature: STANDARD.encode(sig),
        ..signed.clone()
    };
    assert!(tampered.verify(&public).is_err());
    let other = ed25519_dalek::SigningKey::from_bytes(&[9; 32]).verifying_key();
    assert!(signed.verify(&other).is_err());

    // Other selectors.
    let b = fetch("?service=github&labels=env=dev")
        .await
        .verify(&public)
        .expect("verifies");
    let scopes: Vec<&str> = b.layers.iter().map(|l| l.scope.as_str()).collect();
    assert_eq!(scopes, ["org", "group:env=dev", "service:github"]);
    let b = fetch("").await.verify(&public).expect("verifies");
    let scopes: Vec<&str> = b.layers.iter().map(|l| l.scope.as_str()).collect();
    assert_eq!(scopes, ["org"]);
    assert_eq!(b.selector.service, None);
    let (status, body) = owner.get(&format!("{P}/bundle?labels=env")).await;
    assert_eq!(status, 400, "{body}");

    // Another organisation has its own key.
    let other_owner = server.other_org("globex").await;
    let (status, other_key) = other_owner.get("/api/v1/orgs/globex/signing-key").await;
    assert_eq!(status, 200, "{other_key}");
    assert_ne!(other_key["key_id"], key["key_id"]);
    let (status, body) = other_owner.get(&format!("{P}/bundle")).await;
    assert_eq!((status, code(&body)), (404, "org_not_found"), "{body}");
}

async fn roles_and_audit(backend: Backend) {
    let server = TestServer::start(backend).await;
    let owner = server.owner().await;
    let approver = server
        .member(&owner, "acme", "approver@acme.test", "approver")
        .await;
    published(&owner, "org", ORG_POLICY).await;

    // An approver reads, explains and validates, but does not publish or roll back.
    let (status, body) = approver.get(P).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = approver.get(&format!("{P}/org/versions/1")).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = approver
        .post(
            &format!("{P}/explain"),
            json!({"agent": "a", "service": "s", "tool": "get-env"}),
        )
        .await;
    assert_eq!(
        (status, &body["decision"]),
        (200, &json!("block")),
        "{body}"
    );
    let (status, body) = approver
        .post(&format!("{P}/validate"), json!({"body": ORG_POLICY}))
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = publish(&approver, "org", ORG_POLICY).await;
    assert_eq!((status, code(&body)), (403, "forbidden"), "{body}");
    let (status, body) = approver
        .post(
            &format!("{P}/org/rollback"),
            json!({"version": 1, "comment": "x"}),
        )
        .await;
    assert_eq!((status, code(&body)), (403, "forbidden"), "{body}");
    let (_, versions) = owner.get(&format!("{P}/org/versions")).await;
    assert_eq!(versions["items"].as_array().map(Vec::len), Some(1));

    // Every change is in the audit trail.
    published(&owner, "org", "version = 1\n").await;
    let (status, _) = owner
        .post(
            &format!("{P}/org/rollback"),
            json!({"version": 1, "comment": "back"}),
        )
        .await;
    assert_eq!(status, 201);
    let (status, events) = owner.get("/api/v1/orgs/acme/audit?kind=policy.").await;
    assert_eq!(status, 200, "{events}");
    let items = events["items"].as_array().expect("items");
    let kinds: Vec<&str> = items.iter().filter_map(|e| e["kind"].as_str()).collect();
    assert_eq!(
        kinds,
        [
            "policy.rolled_back",
            "policy.version_created",
            "policy.version_created"
        ],
        "{events}"
    );
    let (_, me) = owner.get("/api/v1/me").await;
    let user_id = me["user"]["id"].as_str().expect("user id").to_string();
    let rolled = &items[0];
    assert_eq!(rolled["target"], "org");
    assert_eq!(rolled["outcome"], "success");
    let d = &rolled["detail"];
    assert_eq!(
        (&d["scope"], &d["version"], &d["restored_from"]),
        (&json!("org"), &json!(3), &json!(1))
    );
    assert_eq!(d["comment"], "back");
    assert_eq!(
        d["sha256"],
        flowlink_proto::bundle::sha256_hex(ORG_POLICY.as_bytes())
    );
    assert_eq!(d["author"], user_id.as_str(), "{d}");
    assert_eq!(rolled["actor_id"], user_id.as_str());
    assert_eq!(rolled["actor_kind"], "user");
    let created = &items[2]["detail"];
    assert_eq!(
        (&created["version"], &created["comment"]),
        (&json!(1), &json!("publish org"))
    );

    // API tokens act as their creator: the author is the person.
    let (status, token) = owner
        .post(
            "/api/v1/orgs/acme/tokens",
            json!({"name": "ci", "scopes": ["policy:read", "policy:write"]}),
        )
        .await;
    assert_eq!(status, 201, "{token}");
    let ci = owner.with_token(token["token"].as_str().expect("token"));
    let v = published(&ci, "service:ci", "version = 1\n").await;
    assert_eq!(v["author_email"], "owner@acme.test");
    let (_, events) = owner
        .get("/api/v1/orgs/acme/audit?kind=policy.version_created&limit=1")
        .await;
    assert_eq!(events["items"][0]["actor_kind"], "token", "{events}");
    // A token without policy:write cannot publish.
    let (_, token) = owner
        .post(
            "/api/v1/orgs/acme/tokens",
            json!({"name": "ro", "scopes": ["policy:read"]}),
        )
        .await;
    let ro = owner.with_token(token["token"].as_str().expect("token"));
    let (status, _) = ro.get(P).await;
    assert_eq!(status, 200);
    let (status, body) = publish(&ro, "service:ci", "version = 1\n").await;
    assert_eq!(status, 403, "{body}");
}

both!(
    publish_and_read,
    validation_errors_have_positions,
    lost_updates_are_refused,
    versions_are_paginated_newest_first,
    diff_and_rollback,
    explain_stored_and_unsaved,
    bundles_are_signed,
    roles_and_audit,
);
