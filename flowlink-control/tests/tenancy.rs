//! Tenancy and roles, generated from the route table: for every API route, every role of
//! organisation A gets exactly what its permissions say, nobody of A reaches anything of
//! organisation B, and nobody unauthenticated reaches anything but public routes. A route added
//! to the table is covered without touching this file.

mod support;

use flowlink_control::api::{Access, api_routes};
use flowlink_control::auth::{Permission, PermissionSet, Role};
use flowlink_control::store::Backend;
use serde_json::{Value, json};
use support::*;

/// Fills `{org}` with `org` and every other parameter from `ids` (or a value that names nothing).
fn fill(path: &str, org: &str, ids: &[(&str, String)]) -> String {
    let mut out = String::new();
    let mut rest = path;
    while let Some(start) = rest.find('{') {
        out.push_str(&rest[..start]);
        let end = rest[start..]
            .find('}')
            .map(|e| start + e)
            .expect("closing brace");
        let name = &rest[start + 1..end];
        let value = if name == "org" {
            org.to_string()
        } else {
            ids.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.clone())
                .unwrap_or_else(|| "does-not-exist".to_string())
        };
        out.push_str(&value);
        rest = &rest[end + 1..];
    }
    out.push_str(rest);
    out
}

async fn send(client: &TestClient, method: &axum::http::Method, path: &str) -> (u16, Value) {
    send_with(client, method, path, json!({})).await
}

async fn send_with(
    client: &TestClient,
    method: &axum::http::Method,
    path: &str,
    body: Value,
) -> (u16, Value) {
    let m = reqwest::Method::from_bytes(method.as_str().as_bytes()).expect("method");
    let mut rb = client.request(m.clone(), path);
    if m != reqwest::Method::GET && m != reqwest::Method::DELETE {
        rb = rb.json(&body);
    }
    read(rb.send().await.expect("request")).await
}

/// What one organisation's state looks like from its owner's side.
async fn snapshot(owner: &TestClient, org: &str) -> Value {
    let mut snap = serde_json::Map::new();
    for path in [
        "",
        "/members",
        "/tokens",
        "/policies",
        "/signing-key",
        "/devices",
        "/secrets",
        "/secrets/key",
        "/secrets/custodians",
        "/secrets/sealed",
    ] {
        let (status, body) = owner.get(&format!("/api/v1/orgs/{org}{path}")).await;
        assert_eq!(status, 200, "snapshot {path}: {body}");
        snap.insert(path.to_string(), body);
    }
    Value::Object(snap)
}

/// Organisation B's secrets: a custodian, key version 1, a secret, an enrolled device and a
/// verification run. Returns the path parameters naming them, and a wrap of B's key (a body
/// that would pass validation on the grant route).
async fn b_secrets(
    server: &TestServer,
    other: &TestClient,
) -> (Vec<(&'static str, String)>, Value) {
    use flowlink_proto::sealed::{OrgSecretKey, SealContext, seal};
    let base = "/api/v1/orgs/globex/secrets";
    let custodian = OrgSecretKey::generate();
    let (status, c) = other
        .post(
            &format!("{base}/custodians"),
            json!({"name": "b", "public_key": custodian.public_key().to_base64()}),
        )
        .await;
    assert_eq!(status, 201, "{c}");
    let custodian_id = c["id"].as_str().expect("id").to_string();
    let org_id = c["org_id"].as_str().expect("org_id").to_string();
    let org = OrgSecretKey::generate();
    let recipient = format!("custodian:{custodian_id}");
    let wrapped = seal(
        &custodian.public_key(),
        &SealContext::OrgKey {
            org_id: &org_id,
            key_version: 1,
            recipient: &recipient,
        },
        org.to_bytes().as_ref(),
    )
    .expect("seal");
    let wrap = json!({"recipient": recipient, "wrapped": wrapped});
    let (status, body) = other
        .post(
            &format!("{base}/key"),
            json!({"public_key": org.public_key().to_base64(), "wraps": [wrap]}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let sealed = seal(
        &org.public_key(),
        &SealContext::Secret {
            org_id: &org_id,
            name: "B_SECRET",
            version: 1,
            key_version: 1,
        },
        b"b-value",
    )
    .expect("seal");
    let (status, body) = other
        .put(
            &format!("{base}/B_SECRET"),
            json!({"base_version": 0, "key_version": 1, "sealed": sealed}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let (status, token) = other
        .post("/api/v1/orgs/globex/enrollment-tokens", json!({}))
        .await;
    assert_eq!(status, 201, "{token}");
    let signing = ed25519_dalek::SigningKey::from_bytes(&[7u8; 32]);
    let (status, body) = server
        .client()
        .post(
            "/api/v1/enroll",
            json!({"token": token["token"], "device_name": "b-dev", "hostname": "b.example",
                   "signing_key": base64::Engine::encode(&base64::engine::general_purpose::STANDARD, signing.verifying_key().to_bytes()),
                   "box_key": OrgSecretKey::generate().public_key().to_base64()}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let (status, run) = other.post(&format!("{base}/key/verify"), json!({})).await;
    assert_eq!(status, 201, "{run}");
    let verification = run["verification_id"].as_str().expect("id").to_string();
    let ids = vec![
        ("custodian", custodian_id),
        ("name", "B_SECRET".to_string()),
        ("verification", verification),
        ("version", "1".to_string()),
    ];
    (ids, json!({"wraps": [wrap]}))
}

async fn role_matrix(backend: Backend) {
    let server = TestServer::start(backend).await;
    let owner = server.owner().await;
    let mut callers: Vec<(String, PermissionSet, TestClient)> =
        vec![("owner".into(), Role::Owner.permissions(), owner.clone())];
    for role in [Role::Admin, Role::Approver, Role::Auditor, Role::Viewer] {
        let client = server
            .member(&owner, "acme", &format!("{role}@acme.test"), role.as_str())
            .await;
        callers.push((role.to_string(), role.permissions(), client));
    }
    // An API token narrowed to two permissions acts with exactly those.
    let narrow = PermissionSet::of(&[Permission::OrgRead, Permission::PolicyRead]);
    let (status, body) = owner
        .post(
            "/api/v1/orgs/acme/tokens",
            json!({"name": "narrow", "scopes": ["org:read", "policy:read"]}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let token = body["token"].as_str().expect("token").to_string();
    callers.push((
        "token(org:read policy:read)".into(),
        narrow,
        owner.with_token(&token),
    ));

    // Organisation B, with things of its own to protect.
    let other = server.other_org("globex").await;
    let victim = server
        .member(&other, "globex", "victim@globex.test", "viewer")
        .await;
    let (status, body) = other
        .post(
            "/api/v1/orgs/globex/tokens",
            json!({"name": "b", "scopes": ["org:read"]}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let b_token_id = body["info"]["id"].as_str().expect("id").to_string();
    let (_, me) = victim.get("/api/v1/me").await;
    let b_user_id = me["user"]["id"].as_str().expect("id").to_string();
    let mut b_ids = vec![("user", b_user_id.clone()), ("token", b_token_id.clone())];
    let (secret_ids, b_wraps) = b_secrets(&server, &other).await;
    b_ids.extend(secret_ids);
    let before = snapshot(&other, "globex").await;

    let anonymous = server.client();
    let routes = api_routes();
    assert!(
        routes.len() >= 20,
        "the route table looks truncated: {}",
        routes.len()
    );
    let mut checked = 0;
    for route in &routes {
        let path_a = fill(route.path, "acme", &[]);
        match route.access {
            Access::Public => continue,
            Access::AnySession | Access::SecondFactorDue | Access::Session => {
                let (status, body) = send(&anonymous, &route.method, &path_a).await;
                assert_eq!(status, 401, "{route:?} without credentials: {body}");
                let (status, body) = send(&owner.with_token(&token), &route.method, &path_a).await;
                assert_eq!(status, 401, "{route:?} with an API token: {body}");
                checked += 1;
            }
            Access::Org(permission) => {
                let (status, body) = send(&anonymous, &route.method, &path_a).await;
                assert_eq!(status, 401, "{route:?} without credentials: {body}");
                for (name, perms, client) in &callers {
                    let (status, body) = send(client, &route.method, &path_a).await;
                    if perms.contains(permission) {
                        assert!(
                            status != 401 && status != 403 && code(&body) != "org_not_found",
                            "{route:?}: {name} holds {} but got {status} {body}",
                            permission.as_str()
                        );
                    } else {
                        assert_eq!(
                            (status, code(&body)),
                            (403, "forbidden"),
                            "{route:?}: {name} lacks {} but got {status} {body}",
                            permission.as_str()
                        );
                    }
                    // Organisation B by its slug: not even its existence is confirmed.
                    let path_b = fill(route.path, "globex", &b_ids);
                    let (status, body) = send(client, &route.method, &path_b).await;
                    assert_eq!(
                        (status, code(&body)),
                        (404, "org_not_found"),
                        "{route:?}: {name} of acme reached globex: {status} {body}"
                    );
                }
                // B's ids inside A's path find nothing. (A PUT of a secret by name creates
                // A's own secret of that name: nothing of B's is found or touched.)
                let secrets_id = route.path.contains("/secrets/{")
                    || route.path.contains("/custodians/{")
                    || route.path.contains("/verify/{")
                    || route.path.contains("/key/{");
                let names_b = route.path.contains("{user}")
                    || route.path.contains("{token}")
                    || (secrets_id && route.method != axum::http::Method::PUT);
                if names_b {
                    let path = fill(route.path, "acme", &b_ids);
                    // A body that would pass validation, so only the lookup can refuse.
                    let plausible = if route.path.ends_with("/wraps") {
                        b_wraps.clone()
                    } else {
                        json!({"role": "viewer"})
                    };
                    let (status, body) = send_with(&owner, &route.method, &path, plausible).await;
                    assert_eq!(status, 404, "{route:?} with globex ids under acme: {body}");
                }
                checked += 1;
            }
        }
    }
    assert!(checked >= 15, "only {checked} routes were checked");
    assert_eq!(
        snapshot(&other, "globex").await,
        before,
        "organisation B changed"
    );

    // B's people cannot see A either, by slug or id.
    let (_, a) = owner.get("/api/v1/orgs/acme").await;
    let a_id = a["id"].as_str().expect("id");
    for path in [
        format!("/api/v1/orgs/{a_id}"),
        "/api/v1/orgs/acme/members".to_string(),
    ] {
        let (status, body) = victim.get(&path).await;
        assert_eq!(
            (status, code(&body)),
            (404, "org_not_found"),
            "{path}: {body}"
        );
    }
    server.stop().await;
}

async fn audit_trail_is_per_org(backend: Backend) {
    let server = TestServer::start(backend).await;
    let owner = server.owner().await;
    let other = server.other_org("globex").await;
    let (status, body) = other.get("/api/v1/orgs/globex/audit?limit=500").await;
    assert_eq!(status, 200, "{body}");
    let b_events = body["items"].as_array().expect("items").clone();
    assert!(!b_events.is_empty(), "globex's own sign-in is recorded");
    let (_, a) = owner.get("/api/v1/orgs/acme/audit?limit=500").await;
    let a_ids: Vec<&str> = a["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|e| e["id"].as_str())
        .collect();
    for e in &b_events {
        assert!(
            !a_ids.contains(&e["id"].as_str().unwrap_or("")),
            "acme sees globex's event {e}"
        );
    }
    server.stop().await;
}

both!(role_matrix, audit_trail_is_per_org);

#[test]
fn the_route_table_and_the_openapi_document_agree() {
    let doc = serde_json::to_value(flowlink_control::api::openapi::document()).expect("json");
    let paths = doc["paths"].as_object().expect("paths");
    let mut documented: Vec<(String, String)> = Vec::new();
    for (path, item) in paths {
        for method in ["get", "post", "put", "patch", "delete"] {
            if item.get(method).is_some() {
                documented.push((method.to_uppercase(), path.clone()));
            }
        }
    }
    documented.sort();
    let mut routed: Vec<(String, String)> = api_routes()
        .iter()
        .map(|r| (r.method.to_string(), r.path.to_string()))
        .collect();
    routed.sort();
    assert_eq!(
        routed, documented,
        "every route is documented and every documented route exists"
    );
    for (path, item) in paths {
        for (method, op) in item.as_object().expect("item") {
            assert!(
                op.get("responses")
                    .and_then(Value::as_object)
                    .is_some_and(|r| !r.is_empty()),
                "{method} {path} documents no responses"
            );
        }
    }
}
