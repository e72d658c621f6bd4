//! The control plane's side of the link, on both engines, against a fake proxy written here
//! (tokio-tungstenite + ed25519-dalek): enrolment tokens (single- and N-use, expiry, labels),
//! the handshake and its refusals, signed policy bundles and their pushes, heartbeats and
//! device health, audit batches committed once however often they are sent, revocation,
//! re-keying; two replicas on PostgreSQL; one process per SQLite database.

mod support;

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use flowlink_control::store::{Backend, Store, StoreError};
use flowlink_proto::bundle::{PolicyBundle, SignedBundle};
use flowlink_proto::link::{
    ApprovalDecision, ApprovalOutcome, ApprovalScope, AuditBatch, AuditEnvelope, AuthProof,
    ControlMessage, Heartbeat, Hello, LINK_VERSION, ProxyMessage, ServerHealth, ServerState,
    auth_message,
};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use support::{TestClient, TestServer, code};
use tokio_tungstenite::tungstenite::Message;

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

const ORG: &str = "/api/v1/orgs/acme";

// ---------------------------------------------------------------------------------------------
// A fake proxy.

fn random32() -> [u8; 32] {
    let mut b = [0u8; 32];
    getrandom::fill(&mut b).expect("random");
    b
}

/// An enrolled device as a proxy keeps it.
#[derive(Clone)]
struct Device {
    id: String,
    key: SigningKey,
    policy_key: VerifyingKey,
    response: Value,
}

fn enroll_body(token: &str, key: &SigningKey, labels: Value) -> Value {
    json!({
        "token": token,
        "device_name": "laptop-1",
        "hostname": "laptop-1.example",
        "signing_key": STANDARD.encode(key.verifying_key().to_bytes()),
        "box_key": STANDARD.encode(random32()),
        "labels": labels,
    })
}

async fn try_enroll(
    server: &TestServer,
    token: &str,
    key: &SigningKey,
    labels: Value,
) -> (u16, Value) {
    server
        .client()
        .post("/api/v1/enroll", enroll_body(token, key, labels))
        .await
}

async fn enroll_with(server: &TestServer, token: &str, labels: Value) -> Device {
    let key = SigningKey::from_bytes(&random32());
    let (status, body) = try_enroll(server, token, &key, labels).await;
    assert_eq!(status, 201, "enrol: {body}");
    let raw = STANDARD
        .decode(body["policy_key"].as_str().expect("policy_key"))
        .expect("base64");
    let policy_key =
        VerifyingKey::from_bytes(&raw.as_slice().try_into().expect("32 bytes")).expect("key");
    Device {
        id: body["device_id"].as_str().expect("device_id").to_string(),
        key,
        policy_key,
        response: body,
    }
}

async fn new_token(owner: &TestClient, body: Value) -> (String, Value) {
    let (status, created) = owner.post(&format!("{ORG}/enrollment-tokens"), body).await;
    assert_eq!(status, 201, "token: {created}");
    (
        created["token"].as_str().expect("token").to_string(),
        created["info"].clone(),
    )
}

async fn enroll(server: &TestServer, owner: &TestClient, labels: Value) -> Device {
    let (token, _) = new_token(owner, json!({})).await;
    enroll_with(server, &token, labels).await
}

struct Proxy {
    ws: Ws,
}

impl Proxy {
    async fn open(server: &TestServer) -> Proxy {
        let url = format!("ws://{}/api/v1/link", server.addr);
        let (ws, _) = tokio_tungstenite::connect_async(url)
            .await
            .expect("connect");
        Proxy { ws }
    }

    async fn send(&mut self, m: &ProxyMessage) {
        self.send_text(serde_json::to_string(m).expect("json"))
            .await;
    }

    async fn send_text(&mut self, text: String) {
        self.ws.send(Message::text(text)).await.expect("send");
    }

    /// The next control message within `wait`, `None` on silence; panics when the link closes.
    async fn try_recv(&mut self, wait: Duration) -> Option<ControlMessage> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let frame = match tokio::time::timeout_at(deadline, self.ws.next()).await {
                Err(_) => return None,
                Ok(f) => f,
            };
            match frame {
                Some(Ok(Message::Text(t))) => {
                    return Some(serde_json::from_str(t.as_str()).expect("control message"));
                }
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                other => panic!("the link closed while a message was expected: {other:?}"),
            }
        }
    }

    async fn recv(&mut self) -> ControlMessage {
        self.try_recv(Duration::from_secs(5))
            .await
            .expect("a control message within 5 s")
    }

    /// Waits for the server to close the link; returns the messages that came before.
    async fn closed(&mut self) -> Vec<ControlMessage> {
        let mut seen = Vec::new();
        loop {
            match tokio::time::timeout(Duration::from_secs(5), self.ws.next()).await {
                Err(_) => panic!("the link stayed open; got {seen:?}"),
                Ok(Some(Ok(Message::Text(t)))) => {
                    seen.push(serde_json::from_str(t.as_str()).expect("control message"));
                }
                Ok(Some(Ok(Message::Close(_)))) | Ok(None) | Ok(Some(Err(_))) => return seen,
                Ok(Some(Ok(_))) => continue,
            }
        }
    }

    async fn hello(&mut self, device_id: &str, service: &str) -> String {
        self.hello_as(device_id, service, "0.1.0-test").await
    }

    /// A hello that says `proxy_version`.
    async fn hello_as(&mut self, device_id: &str, service: &str, proxy_version: &str) -> String {
        self.send(&ProxyMessage::Hello(Hello {
            version: LINK_VERSION,
            device_id: device_id.to_string(),
            proxy_version: proxy_version.into(),
            service: service.to_string(),
            pid: std::process::id(),
        }))
        .await;
        match self.recv().await {
            ControlMessage::Challenge(c) => c.nonce,
            other => panic!("expected a challenge, got {other:?}"),
        }
    }

    async fn auth(&mut self, server: &TestServer, device_id: &str, key: &SigningKey, nonce: &str) {
        let sig = key.sign(&auth_message(device_id, nonce, &server.config.public_url));
        self.send(&ProxyMessage::Auth(AuthProof {
            signature: STANDARD.encode(sig.to_bytes()),
        }))
        .await;
    }

    /// Opens an authenticated link; returns it with the first policy bundle (the secrets push
    /// that follows it is checked and consumed).
    async fn connect(server: &TestServer, device: &Device, service: &str) -> (Proxy, PolicyBundle) {
        Proxy::connect_as(server, device, service, "0.1.0-test").await
    }

    /// [`Proxy::connect`] for a proxy that says `proxy_version` in its hello.
    async fn connect_as(
        server: &TestServer,
        device: &Device,
        service: &str,
        proxy_version: &str,
    ) -> (Proxy, PolicyBundle) {
        let mut p = Proxy::open(server).await;
        let nonce = p.hello_as(&device.id, service, proxy_version).await;
        p.auth(server, &device.id, &device.key, &nonce).await;
        match p.recv().await {
            ControlMessage::Welcome(w) => {
                assert_eq!(w.device_id, device.id);
                assert_eq!(w.org_id, device.response["org_id"]);
                assert!(w.max_batch >= 100, "{w:?}");
                assert_eq!(w.heartbeat_secs, server.config.link_heartbeat.as_secs());
            }
            other => panic!("expected welcome, got {other:?}"),
        }
        let bundle = p.policy(device).await;
        // Then the secrets push (empty here: no secrets key, no secrets).
        match p.recv().await {
            ControlMessage::Secrets(s) => {
                assert!(s.keys.is_empty() && s.secrets.is_empty(), "{s:?}");
            }
            other => panic!("expected the secrets push after the policy, got {other:?}"),
        }
        (p, bundle)
    }

    /// The next message, which must be a policy push that verifies with the device's key.
    async fn policy(&mut self, device: &Device) -> PolicyBundle {
        match self.recv().await {
            ControlMessage::Policy(push) => verified(&push.bundle, device),
            other => panic!("expected a policy push, got {other:?}"),
        }
    }

    async fn heartbeat(&mut self, servers: Vec<ServerHealth>) {
        self.send(&ProxyMessage::Heartbeat(Heartbeat {
            servers,
            outbox_depth: 0,
            policy: None,
        }))
        .await;
    }
}

fn verified(bundle: &SignedBundle, device: &Device) -> PolicyBundle {
    bundle
        .verify(&device.policy_key)
        .expect("the bundle verifies with the enrolment's policy key")
}

fn scopes(bundle: &PolicyBundle) -> Vec<(String, i64)> {
    bundle
        .layers
        .iter()
        .map(|l| (l.scope.clone(), l.version))
        .collect()
}

fn fatal_code(m: &ControlMessage) -> Option<(&str, bool)> {
    match m {
        ControlMessage::Error(e) => Some((e.code.as_str(), e.fatal)),
        _ => None,
    }
}

fn policy_text(rule: &str) -> String {
    format!(
        "version = 1\n\n[[rules]]\nid = \"{rule}\"\ntool = \"{rule}-tool\"\naction = \"block\"\n"
    )
}

async fn publish(owner: &TestClient, scope: &str, rule: &str) -> Value {
    let (status, body) = owner
        .post(
            &format!("{ORG}/policies/{scope}/versions"),
            json!({"body": policy_text(rule), "comment": "test"}),
        )
        .await;
    assert_eq!(status, 201, "publish {scope}: {body}");
    body
}

async fn audit_of(owner: &TestClient, kind: &str) -> Vec<Value> {
    let (status, body) = owner
        .get(&format!("{ORG}/audit?kind={kind}&limit=500"))
        .await;
    assert_eq!(status, 200, "{body}");
    body["items"].as_array().expect("items").clone()
}

async fn device_view(owner: &TestClient, id: &str) -> Value {
    let (status, body) = owner.get(&format!("{ORG}/devices/{id}")).await;
    assert_eq!(status, 200, "{body}");
    body
}

/// Polls `f` every 100 ms until it is true or `within` passes.
async fn eventually<F, Fut>(within: Duration, what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if f().await {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn envelope(kind: &str, record: Value) -> AuditEnvelope {
    AuditEnvelope {
        id: uuid::Uuid::now_v7().to_string(),
        occurred_at: 1_767_225_600_000_000,
        kind: kind.to_string(),
        record,
    }
}

// ---------------------------------------------------------------------------------------------
// Enrolment.

async fn enrolment_tokens(backend: Backend) {
    let server = TestServer::start(backend).await;
    let owner = server.owner().await;

    // Single use: the second enrolment is refused in words.
    let (token, info) = new_token(
        &owner,
        json!({"name": "laptops", "labels": {"env": "prod", "team": "a"}}),
    )
    .await;
    assert!(token.starts_with("fle_"), "{token}");
    assert_eq!(
        (info["uses_allowed"].clone(), info["state"].clone()),
        (json!(1), json!("live"))
    );
    let device = enroll_with(&server, &token, json!({"team": "b", "os": "linux"})).await;
    assert_eq!(
        device.response["labels"],
        json!({"env": "prod", "os": "linux", "team": "a"}),
        "the token's labels win"
    );
    assert_eq!(device.response["org_slug"], "acme");
    assert_eq!(
        device.response["link_url"],
        format!(
            "{}/api/v1/link",
            server.config.public_url.replace("http://", "ws://")
        )
    );
    let key = SigningKey::from_bytes(&random32());
    let (status, body) = try_enroll(&server, &token, &key, json!({})).await;
    assert_eq!(
        (status, code(&body)),
        (401, "enrollment_token_used"),
        "{body}"
    );
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("ask an admin")
    );

    // N uses hold under concurrency: six at once, three admitted.
    let (three, _) = new_token(&owner, json!({"uses": 3})).await;
    let attempts = (0..6).map(|_| {
        let server = &server;
        let three = three.clone();
        async move {
            let key = SigningKey::from_bytes(&random32());
            try_enroll(server, &three, &key, json!({})).await.0
        }
    });
    let mut statuses = futures_util::future::join_all(attempts).await;
    statuses.sort_unstable();
    assert_eq!(statuses, vec![201, 201, 201, 401, 401, 401]);

    // Unknown, malformed, revoked and expired tokens.
    let (status, body) = try_enroll(&server, "fle_nope.nope", &key, json!({})).await;
    assert_eq!(
        (status, code(&body)),
        (401, "enrollment_token_invalid"),
        "{body}"
    );
    let (status, body) = try_enroll(&server, "flt_api.token", &key, json!({})).await;
    assert_eq!(
        (status, code(&body)),
        (401, "enrollment_token_invalid"),
        "{body}"
    );
    let (revoked, revoked_info) = new_token(&owner, json!({})).await;
    let (status, _) = owner
        .delete(&format!(
            "{ORG}/enrollment-tokens/{}",
            revoked_info["id"].as_str().expect("id")
        ))
        .await;
    assert_eq!(status, 204);
    let (status, body) = try_enroll(&server, &revoked, &key, json!({})).await;
    assert_eq!(
        (status, code(&body)),
        (401, "enrollment_token_invalid"),
        "{body}"
    );
    let (_, org) = owner.get(ORG).await;
    let org_id = org["id"].as_str().expect("id");
    let (expired, _) = flowlink_control::api::devices::issue_enrollment_token(
        &server.store,
        org_id,
        "test",
        "",
        Default::default(),
        1,
        -1,
        None,
    )
    .await
    .expect("token");
    let (status, body) = try_enroll(&server, &expired, &key, json!({})).await;
    assert_eq!(
        (status, code(&body)),
        (401, "enrollment_token_expired"),
        "{body}"
    );

    // Bad input is a 400 that says what is wrong, and does not use up the token.
    let (fresh, _) = new_token(&owner, json!({})).await;
    let mut bad = enroll_body(&fresh, &key, json!({}));
    bad["signing_key"] = json!("AAAA");
    let (status, body) = server.client().post("/api/v1/enroll", bad).await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("signing_key")
    );
    let (status, body) = try_enroll(&server, &fresh, &key, json!({"bad label": "x"})).await;
    assert_eq!(status, 400, "{body}");
    enroll_with(&server, &fresh, json!({})).await;

    // Token validation and listing.
    for bad in [
        json!({"uses": 0}),
        json!({"expires_in_days": 400}),
        json!({"labels": {"a": "b c"}}),
        json!({"nope": 1}),
    ] {
        let (status, body) = owner
            .post(&format!("{ORG}/enrollment-tokens"), bad.clone())
            .await;
        assert_eq!(status, 400, "{bad}: {body}");
    }
    let (status, page) = owner.get(&format!("{ORG}/enrollment-tokens?limit=2")).await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["items"].as_array().map(Vec::len), Some(2));
    assert!(page["next_cursor"].is_string());
    let (_, all) = owner.get(&format!("{ORG}/enrollment-tokens")).await;
    let states: Vec<&str> = all["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|t| t["state"].as_str())
        .collect();
    assert!(
        states.contains(&"used") && states.contains(&"revoked") && states.contains(&"expired"),
        "{states:?}"
    );
    let (_, devices) = owner.get(&format!("{ORG}/devices")).await;
    assert_eq!(
        devices["items"].as_array().map(Vec::len),
        Some(5),
        "{devices}"
    );

    // Audited.
    assert_eq!(audit_of(&owner, "device.enrolled").await.len(), 5);
    assert!(
        !audit_of(&owner, "enrollment_token.created")
            .await
            .is_empty()
    );
    assert!(
        !audit_of(&owner, "enrollment_token.revoked")
            .await
            .is_empty()
    );
    assert!(!audit_of(&owner, "device.enroll_failed").await.is_empty());
    server.stop().await;
}

// ---------------------------------------------------------------------------------------------
// The handshake.

async fn handshake_and_bundle(backend: Backend) {
    let server = TestServer::start(backend).await;
    let owner = server.owner().await;
    publish(&owner, "org", "org-rule").await;
    publish(&owner, "group:env=prod", "prod-rule").await;
    publish(&owner, "group:env=dev", "dev-rule").await;
    publish(&owner, "service:git", "git-rule").await;
    let device = enroll(&server, &owner, json!({"env": "prod"})).await;

    let (mut proxy, bundle) = Proxy::connect(&server, &device, "git").await;
    assert_eq!(
        scopes(&bundle),
        vec![
            ("org".into(), 1),
            ("group:env=prod".into(), 1),
            ("service:git".into(), 1)
        ]
    );
    assert_eq!(bundle.selector.service.as_deref(), Some("git"));
    assert_eq!(bundle.org_id, device.response["org_id"]);

    // The gauge counts the link; a message type from a newer proxy is ignored.
    let (_, metrics) = read_text(&server, "/metrics").await;
    assert!(
        metrics.contains("flowlink_connected_proxies 1"),
        "{metrics}"
    );
    proxy
        .send_text(r#"{"type":"telemetry_v9","cpu":0.5}"#.into())
        .await;
    proxy.heartbeat(vec![]).await;
    assert_eq!(proxy.try_recv(Duration::from_millis(500)).await, None);
    // Out of order: a second hello is an error, not the end.
    proxy.hello_again(&device.id).await;
    let m = proxy.recv().await;
    assert_eq!(fatal_code(&m), Some(("unexpected_message", false)), "{m:?}");
    proxy.send_text("{not json".into()).await;
    let m = proxy.recv().await;
    assert_eq!(fatal_code(&m), Some(("invalid_message", false)), "{m:?}");
    // A frame over the limit is refused, and the link goes on.
    proxy
        .send_text(format!(
            r#"{{"type":"heartbeat","servers":[],"outbox_depth":0,"x":"{}"}}"#,
            "a".repeat(4 * 1024 * 1024)
        ))
        .await;
    let m = proxy.recv().await;
    assert_eq!(fatal_code(&m), Some(("frame_too_large", false)), "{m:?}");
    proxy.heartbeat(vec![]).await;

    drop(proxy);
    eventually(Duration::from_secs(5), "the gauge drops", || async {
        read_text(&server, "/metrics")
            .await
            .1
            .contains("flowlink_connected_proxies 0")
    })
    .await;
    server.stop().await;
}

impl Proxy {
    async fn hello_again(&mut self, device_id: &str) {
        self.send(&ProxyMessage::Hello(Hello {
            version: LINK_VERSION,
            device_id: device_id.to_string(),
            proxy_version: "0".into(),
            service: "git".into(),
            pid: 1,
        }))
        .await;
    }
}

async fn read_text(server: &TestServer, path: &str) -> (u16, String) {
    let resp = reqwest::get(format!("{}{path}", server.base))
        .await
        .expect("get");
    (
        resp.status().as_u16(),
        resp.text().await.unwrap_or_default(),
    )
}

async fn refusals(backend: Backend) {
    let server = TestServer::start(backend).await;
    let owner = server.owner().await;
    let device = enroll(&server, &owner, json!({})).await;

    // Another protocol version.
    let mut p = Proxy::open(&server).await;
    p.send(&ProxyMessage::Hello(Hello {
        version: LINK_VERSION + 1,
        device_id: device.id.clone(),
        proxy_version: "9".into(),
        service: "git".into(),
        pid: 1,
    }))
    .await;
    let seen = p.closed().await;
    assert_eq!(
        seen.first().and_then(fatal_code),
        Some(("unsupported_version", true)),
        "{seen:?}"
    );

    // Not starting with hello.
    let mut p = Proxy::open(&server).await;
    p.heartbeat(vec![]).await;
    let seen = p.closed().await;
    assert_eq!(
        seen.first().and_then(fatal_code),
        Some(("unexpected_message", true)),
        "{seen:?}"
    );

    // A signature by another key.
    let mut p = Proxy::open(&server).await;
    let nonce = p.hello(&device.id, "git").await;
    let other = SigningKey::from_bytes(&random32());
    p.auth(&server, &device.id, &other, &nonce).await;
    let seen = p.closed().await;
    assert_eq!(
        seen.first().and_then(fatal_code),
        Some(("bad_signature", true)),
        "{seen:?}"
    );

    // The right key over another server's URL (a replayed signature).
    let mut p = Proxy::open(&server).await;
    let nonce = p.hello(&device.id, "git").await;
    let sig = device
        .key
        .sign(&auth_message(&device.id, &nonce, "https://evil.example"));
    p.send(&ProxyMessage::Auth(AuthProof {
        signature: STANDARD.encode(sig.to_bytes()),
    }))
    .await;
    let seen = p.closed().await;
    assert_eq!(
        seen.first().and_then(fatal_code),
        Some(("bad_signature", true)),
        "{seen:?}"
    );

    // An unknown device.
    let mut p = Proxy::open(&server).await;
    let nonce = p.hello("0190-no-such-device", "git").await;
    p.auth(&server, "0190-no-such-device", &device.key, &nonce)
        .await;
    let seen = p.closed().await;
    assert_eq!(
        seen.first().and_then(fatal_code),
        Some(("unknown_device", true)),
        "{seen:?}"
    );

    // Not a WebSocket at all.
    let (status, body) = owner.get("/api/v1/link").await;
    assert_eq!((status, code(&body)), (400, "websocket_required"), "{body}");
    server.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Heartbeats and health.

async fn heartbeats_and_health(backend: Backend) {
    let server =
        TestServer::start_with(backend, |c| c.link_heartbeat = Duration::from_secs(1)).await;
    let owner = server.owner().await;
    let device = enroll(&server, &owner, json!({})).await;
    assert_eq!(device_view(&owner, &device.id).await["health"], "offline");

    let (mut proxy, _) = Proxy::connect(&server, &device, "git").await;
    let crashing = ServerHealth {
        service: "shell".into(),
        state: ServerState::Restarting,
        restarts_last_hour: 3,
        last_error: Some("exit status 1".into()),
    };
    let up = ServerHealth {
        service: "git".into(),
        state: ServerState::Up,
        restarts_last_hour: 0,
        last_error: None,
    };
    proxy.heartbeat(vec![up.clone(), crashing.clone()]).await;
    proxy.heartbeat(vec![up.clone(), crashing.clone()]).await;
    eventually(
        Duration::from_secs(5),
        "the device shows online with its servers",
        || async {
            let v = device_view(&owner, &device.id).await;
            v["health"] == "online" && v["servers"].as_array().map(Vec::len) == Some(2)
        },
    )
    .await;
    let v = device_view(&owner, &device.id).await;
    let servers = v["servers"].as_array().expect("servers");
    assert_eq!(servers[0]["service"], "git");
    assert_eq!(servers[0]["state"], "up");
    assert_eq!(servers[1]["service"], "shell");
    assert_eq!(servers[1]["crash_loop"], true);
    assert_eq!(servers[1]["last_error"], "exit status 1");
    assert_eq!(servers[0]["proxy_version"], "0.1.0-test", "from the hello");
    // A version that is not plain text is not kept (the link itself is served).
    let (mut odd, _) =
        Proxy::connect_as(&server, &device, "db", "1.0\u{1b}[2J\u{1b}[31mowned").await;
    odd.heartbeat(vec![ServerHealth {
        service: "db".into(),
        ..up.clone()
    }])
    .await;
    eventually(
        Duration::from_secs(5),
        "the third server is reported",
        || async {
            device_view(&owner, &device.id).await["servers"]
                .as_array()
                .map(Vec::len)
                == Some(3)
        },
    )
    .await;
    let v = device_view(&owner, &device.id).await;
    assert_eq!(v["servers"][0]["service"], "db");
    assert!(v["servers"][0]["proxy_version"].is_null(), "{v}");
    drop(odd);
    let (_, list) = owner.get(&format!("{ORG}/devices")).await;
    assert_eq!(list["items"][0]["health"], "online", "{list}");
    let loops = audit_of(&owner, "server.crash_loop").await;
    assert_eq!(loops.len(), 1, "recorded once: {loops:?}");
    assert_eq!(loops[0]["detail"]["service"], "shell");
    eventually(
        Duration::from_secs(3),
        "agent.online is recorded",
        || async { audit_of(&owner, "agent.online").await.len() == 1 },
    )
    .await;

    // Silence: the link is closed after three intervals, and the device goes stale, then offline,
    // each change recorded once.
    let seen = proxy.closed().await;
    assert!(
        seen.iter()
            .any(|m| fatal_code(m) == Some(("timeout", true))),
        "{seen:?}"
    );
    eventually(
        Duration::from_secs(8),
        "the device goes offline",
        || async { device_view(&owner, &device.id).await["health"] == "offline" },
    )
    .await;
    eventually(
        Duration::from_secs(3),
        "stale and offline are recorded",
        || async { audit_of(&owner, "agent.offline").await.len() == 1 },
    )
    .await;
    let stale = audit_of(&owner, "agent.stale").await;
    assert_eq!(stale.len(), 1, "{stale:?}");
    assert_eq!(stale[0]["target"], device.id);
    assert_eq!(stale[0]["actor_kind"], "system");
    server.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Audit batches.

async fn audit_batches(backend: Backend) {
    let server = TestServer::start(backend).await;
    let owner = server.owner().await;
    let device = enroll(&server, &owner, json!({})).await;
    let (mut proxy, _) = Proxy::connect(&server, &device, "git").await;

    let events = vec![
        envelope(
            "tool_call",
            json!({"service": "git", "tool": "push", "outcome": "blocked", "arguments": {"force": true}}),
        ),
        envelope(
            "tool_call",
            json!({"service": "git", "tool": "status", "outcome": "executed"}),
        ),
        envelope("session", json!({"service": "git", "command": ["git-mcp"]})),
    ];
    let ids: Vec<String> = events.iter().map(|e| e.id.clone()).collect();
    let batch = ProxyMessage::AuditBatch(AuditBatch {
        events: events.clone(),
    });
    for round in 0..2 {
        proxy.send(&batch).await;
        match proxy.recv().await {
            ControlMessage::AuditAck(ack) => assert_eq!(ack.ids, ids, "round {round}"),
            other => panic!("expected an ack, got {other:?}"),
        }
    }
    let n: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM audit_events WHERE actor_kind = 'device' AND kind IN ('tool_call', 'session')")
            .fetch_one(server.store.pool())
            .await
            .expect("count");
    assert_eq!(n, 3, "stored once although sent twice");
    let calls = audit_of(&owner, "tool_call").await;
    assert_eq!(calls.len(), 2);
    let push = calls
        .iter()
        .find(|e| e["target"] == "git/push")
        .expect("push");
    assert_eq!(push["actor_kind"], "device");
    assert_eq!(push["actor_id"], device.id);
    assert_eq!(push["outcome"], "blocked");
    assert_eq!(push["detail"]["arguments"]["force"], true);
    assert_eq!(audit_of(&owner, "session").await.len(), 1);

    // An id already used by someone else's event is neither stored nor acknowledged.
    let theirs = audit_of(&owner, "auth.login").await[0]["id"]
        .as_str()
        .expect("id")
        .to_string();
    let mut stolen = envelope("tool_call", json!({}));
    stolen.id = theirs.clone();
    let fine = envelope("tool_call", json!({}));
    proxy
        .send(&ProxyMessage::AuditBatch(AuditBatch {
            events: vec![stolen, fine.clone()],
        }))
        .await;
    match proxy.recv().await {
        ControlMessage::AuditAck(ack) => assert_eq!(ack.ids, vec![fine.id.clone()]),
        other => panic!("expected an ack, got {other:?}"),
    }
    let m = proxy.recv().await;
    assert_eq!(fatal_code(&m), Some(("audit_id_conflict", false)), "{m:?}");
    let login = audit_of(&owner, "auth.login").await;
    assert!(
        login
            .iter()
            .any(|e| e["id"] == theirs.as_str() && e["actor_kind"] == "user")
    );

    // Malformed envelopes and oversized batches are refused in words.
    let mut bad = envelope("Tool Call", json!({}));
    bad.id = "has space".into();
    proxy
        .send(&ProxyMessage::AuditBatch(AuditBatch { events: vec![bad] }))
        .await;
    match proxy.recv().await {
        ControlMessage::AuditAck(ack) => assert!(ack.ids.is_empty()),
        other => panic!("expected an ack, got {other:?}"),
    }
    let m = proxy.recv().await;
    assert_eq!(
        fatal_code(&m),
        Some(("invalid_audit_event", false)),
        "{m:?}"
    );
    let many: Vec<AuditEnvelope> = (0..501).map(|_| envelope("tool_call", json!({}))).collect();
    proxy
        .send(&ProxyMessage::AuditBatch(AuditBatch { events: many }))
        .await;
    let m = proxy.recv().await;
    assert_eq!(fatal_code(&m), Some(("batch_too_large", false)), "{m:?}");
    server.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Policy pushes.

async fn policy_pushes(backend: Backend) {
    let server = TestServer::start(backend).await;
    let owner = server.owner().await;
    publish(&owner, "org", "org-1").await;
    let device = enroll(&server, &owner, json!({"env": "prod"})).await;
    let (mut proxy, bundle) = Proxy::connect(&server, &device, "git").await;
    assert_eq!(scopes(&bundle), vec![("org".into(), 1)]);

    // A change that applies arrives.
    publish(&owner, "org", "org-2").await;
    let b = proxy.policy(&device).await;
    assert_eq!(scopes(&b), vec![("org".into(), 2)]);
    // One that does not apply to this device sends nothing.
    publish(&owner, "service:other", "other-1").await;
    publish(&owner, "group:env=dev", "dev-1").await;
    assert_eq!(proxy.try_recv(Duration::from_millis(700)).await, None);
    publish(&owner, "group:env=prod", "prod-1").await;
    let b = proxy.policy(&device).await;
    assert_eq!(
        scopes(&b),
        vec![("org".into(), 2), ("group:env=prod".into(), 1)]
    );
    // A rollback is a change too.
    let (status, body) = owner
        .post(
            &format!("{ORG}/policies/org/rollback"),
            json!({"version": 1, "comment": "back"}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let b = proxy.policy(&device).await;
    assert_eq!(
        scopes(&b),
        vec![("org".into(), 3), ("group:env=prod".into(), 1)]
    );
    assert_eq!(b.layers[0].body, policy_text("org-1"));
    // New labels, new bundle.
    let (status, body) = owner
        .patch(
            &format!("{ORG}/devices/{}", device.id),
            json!({"labels": {"env": "dev"}}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["labels"], json!({"env": "dev"}));
    let b = proxy.policy(&device).await;
    assert_eq!(
        scopes(&b),
        vec![("org".into(), 3), ("group:env=dev".into(), 1)]
    );
    assert_eq!(
        b.selector.labels.get("env").map(String::as_str),
        Some("dev")
    );
    assert_eq!(audit_of(&owner, "device.updated").await.len(), 1);
    let (status, body) = owner
        .patch(
            &format!("{ORG}/devices/{}", device.id),
            json!({"labels": {"bad key": "x"}}),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    server.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Revocation and re-keying.

async fn revocation(backend: Backend) {
    let server = TestServer::start(backend).await;
    let owner = server.owner().await;
    let device = enroll(&server, &owner, json!({})).await;
    let (mut git, _) = Proxy::connect(&server, &device, "git").await;
    let (mut shell, _) = Proxy::connect(&server, &device, "shell").await;

    let (status, body) = owner
        .post(
            &format!("{ORG}/devices/{}/revoke", device.id),
            json!({"reason": "laptop lost"}),
        )
        .await;
    assert_eq!(status, 204, "{body}");
    for p in [&mut git, &mut shell] {
        let seen = p.closed().await;
        match seen.as_slice() {
            [ControlMessage::Revoked(r)] => assert!(r.reason.contains("laptop lost"), "{r:?}"),
            other => panic!("expected only `revoked` before the close, got {other:?}"),
        }
    }
    // Refused after, told why.
    let mut again = Proxy::open(&server).await;
    let nonce = again.hello(&device.id, "git").await;
    again.auth(&server, &device.id, &device.key, &nonce).await;
    let seen = again.closed().await;
    assert!(
        matches!(seen.as_slice(), [ControlMessage::Revoked(r)] if r.reason.contains("laptop lost")),
        "{seen:?}"
    );

    assert_eq!(device_view(&owner, &device.id).await["health"], "revoked");
    let (status, body) = owner
        .post(&format!("{ORG}/devices/{}/revoke", device.id), json!({}))
        .await;
    assert_eq!(status, 409, "{body}");
    let (status, body) = owner
        .post(&format!("{ORG}/devices/{}/rekey", device.id), json!({}))
        .await;
    assert_eq!(status, 409, "{body}");
    let (status, _) = owner
        .post(&format!("{ORG}/devices/does-not-exist/revoke"), json!({}))
        .await;
    assert_eq!(status, 404);
    let revoked = audit_of(&owner, "device.revoked").await;
    assert_eq!(revoked.len(), 1);
    assert_eq!(revoked[0]["detail"]["reason"], "laptop lost");
    server.stop().await;
}

async fn rekeying(backend: Backend) {
    let server = TestServer::start(backend).await;
    let owner = server.owner().await;
    let device = enroll(&server, &owner, json!({"env": "prod"})).await;
    let (mut old_link, _) = Proxy::connect(&server, &device, "git").await;

    // The re-key token is single-use and bound to the device.
    let (status, created) = owner
        .post(&format!("{ORG}/devices/{}/rekey", device.id), json!({}))
        .await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["info"]["device_id"], device.id);
    let token = created["token"].as_str().expect("token");
    let rekeyed = enroll_with(&server, token, json!({"env": "ignored"})).await;
    assert_eq!(rekeyed.id, device.id, "same device");
    assert_eq!(rekeyed.response["labels"], json!({"env": "prod"}));
    let key = SigningKey::from_bytes(&random32());
    let (status, body) = try_enroll(&server, token, &key, json!({})).await;
    assert_eq!(
        (status, code(&body)),
        (401, "enrollment_token_used"),
        "{body}"
    );

    // The link opened with the old key is closed; the old key is refused; the new one works.
    let seen = old_link.closed().await;
    assert!(
        seen.iter()
            .any(|m| fatal_code(m) == Some(("device_rekeyed", true))),
        "{seen:?}"
    );
    let mut p = Proxy::open(&server).await;
    let nonce = p.hello(&device.id, "git").await;
    p.auth(&server, &device.id, &device.key, &nonce).await;
    let seen = p.closed().await;
    assert_eq!(
        seen.first().and_then(fatal_code),
        Some(("bad_signature", true)),
        "{seen:?}"
    );
    let (_new_link, bundle) = Proxy::connect(&server, &rekeyed, "git").await;
    assert_eq!(
        bundle.selector.labels.get("env").map(String::as_str),
        Some("prod")
    );
    let v = device_view(&owner, &device.id).await;
    assert_eq!(v["key_version"], 2);
    assert_eq!(
        v["signing_key"],
        STANDARD.encode(rekeyed.key.verifying_key().to_bytes())
    );
    assert_eq!(audit_of(&owner, "device.rekeyed").await.len(), 1);
    assert_eq!(audit_of(&owner, "device.rekey_requested").await.len(), 1);
    server.stop().await;
}

both!(
    enrolment_tokens,
    handshake_and_bundle,
    refusals,
    heartbeats_and_health,
    audit_batches,
    policy_pushes,
    revocation,
    rekeying
);

// ---------------------------------------------------------------------------------------------
// More than one control plane.

/// A second control plane on the first one's database.
async fn replica_of(first: &TestServer, backend: Backend) -> TestServer {
    let url = first.db.url.clone();
    TestServer::start_with(backend, move |c| c.database_url = url).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_on_postgres_reach_each_others_links() {
    let a = TestServer::start(Backend::Postgres).await;
    let owner_a = a.owner().await;
    publish(&owner_a, "org", "org-1").await;
    let b = replica_of(&a, Backend::Postgres).await;
    let owner_b = b.client().login("owner@acme.test", support::PASSWORD).await;
    let device = enroll(&b, &owner_b, json!({})).await;
    let (mut on_b, _) = Proxy::connect(&b, &device, "git").await;

    // Once both replicas listen, what follows can reach B only through a notification (links
    // are refreshed by nothing else), so no step below is served by a catch-up.
    support::wait_for_link_listeners(&a.store, 2).await;

    // A policy published on A reaches the link on B.
    publish(&owner_a, "org", "org-2").await;
    let bundle = on_b.policy(&device).await;
    assert_eq!(scopes(&bundle), vec![("org".into(), 2)]);

    // A message delivered on A reaches the link on B (and only links of the service named).
    let decision = ControlMessage::ApprovalDecision(ApprovalDecision {
        call_ref: "call-1".into(),
        request_id: "req-1".into(),
        outcome: ApprovalOutcome::Approved,
        decided_by: vec!["owner@acme.test".into()],
        comment: None,
        scope: ApprovalScope::ThisCall,
    });
    let other = ControlMessage::ApprovalDecision(ApprovalDecision {
        call_ref: "call-2".into(),
        ..match &decision {
            ControlMessage::ApprovalDecision(d) => d.clone(),
            _ => unreachable!(),
        }
    });
    let here = flowlink_control::link::deliver(&a.state, &device.id, Some("shell"), &other)
        .await
        .expect("deliver");
    assert_eq!(here, 0, "A holds no link of the device");
    flowlink_control::link::deliver(&a.state, &device.id, Some("git"), &decision)
        .await
        .expect("deliver");
    assert_eq!(on_b.recv().await, decision);

    // So does a relabel.
    let (status, body) = owner_a
        .patch(
            &format!("{ORG}/devices/{}", device.id),
            json!({"labels": {"env": "prod"}}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    publish(&owner_a, "group:env=prod", "prod-1").await;
    let mut got = on_b.policy(&device).await;
    if scopes(&got).len() == 1 {
        got = on_b.policy(&device).await;
    }
    assert_eq!(
        scopes(&got),
        vec![("org".into(), 2), ("group:env=prod".into(), 1)]
    );

    // The listeners lose their connections: what is published meanwhile is not lost.
    assert_eq!(
        support::link_listeners(&a.store).await,
        2,
        "one listener per replica"
    );
    sqlx::query(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE query LIKE $1 AND pid <> pg_backend_pid()",
    )
    .bind(support::link_listener_pattern(&a.store).await)
    .execute(a.store.pool())
    .await
    .expect("terminate the listeners");
    publish(&owner_a, "org", "org-3").await;
    let again = ControlMessage::ApprovalDecision(ApprovalDecision {
        call_ref: "call-3".into(),
        ..match &decision {
            ControlMessage::ApprovalDecision(d) => d.clone(),
            _ => unreachable!(),
        }
    });
    flowlink_control::link::deliver(&a.state, &device.id, None, &again)
        .await
        .expect("deliver");
    let mut got_policy = false;
    let mut got_decision = false;
    while !(got_policy && got_decision) {
        match on_b.recv().await {
            ControlMessage::Policy(p) => {
                let b = verified(&p.bundle, &device);
                got_policy = b.layers.iter().any(|l| l.scope == "org" && l.version == 3);
            }
            m if m == again => got_decision = true,
            other => panic!("unexpected {other:?}"),
        }
    }
    support::wait_for_link_listeners(&a.store, 2).await;

    // A revocation on A closes the link on B, and B refuses it after.
    let (status, body) = owner_a
        .post(&format!("{ORG}/devices/{}/revoke", device.id), json!({}))
        .await;
    assert_eq!(status, 204, "{body}");
    let seen = on_b.closed().await;
    assert!(
        matches!(seen.last(), Some(ControlMessage::Revoked(_))),
        "{seen:?}"
    );
    b.stop().await;
    a.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_process_on_one_sqlite_database_refuses_to_start() {
    let a = TestServer::start(Backend::Sqlite).await;
    let err = Store::connect(&a.db.url).await.expect_err("a second claim");
    assert!(matches!(err, StoreError::Locked { .. }), "{err:?}");
    let message = err.to_string();
    assert!(
        message.contains("another flowlink-control process"),
        "{message}"
    );
    assert!(message.contains("PostgreSQL"), "{message}");
    let mut config = (*a.config).clone();
    config.database_url = a.db.url.clone();
    let err = flowlink_control::server::open_store(&config)
        .await
        .expect_err("the server does not start");
    assert!(
        err.to_string().contains("another flowlink-control process"),
        "{err}"
    );
    // Administrative commands may still read and write beside it.
    let shared = Store::connect_shared(&a.db.url).await.expect("shared");
    shared.ping().await.expect("ping");
    shared.close().await;
    a.stop().await;
}
