//! Zero-trust secrets on both engines: the organisation's key set up by a custodian and wrapped
//! to devices, metadata-only secrets, seals bound to (org, name, version, key version), lost
//! updates refused, rotation in one transaction (and its refusals), revocation making the key
//! `rotation_required`, link pushes of exactly the secrets in scope, key challenges and proofs
//! retiring old versions, no plaintext anywhere in the database, and the `secrets` CLI end to
//! end against an in-process server.
//!
//! The test plays every party the control plane must not trust with a value: the custodian
//! (its own X25519 key), the admin sealing values, and the device opening them as a proxy
//! would, all with `flowlink_proto::sealed`.

mod support;

use std::collections::BTreeMap;
use std::process::Stdio;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use ed25519_dalek::{Signer, SigningKey};
use flowlink_control::store::Backend;
use flowlink_proto::link::{
    AuthProof, ControlMessage, Hello, KeyChallenge, KeyProof, LINK_VERSION, ProxyMessage,
    SecretUse, SecretsPush, SecretsUsed, auth_message,
};
use flowlink_proto::sealed::{
    BoxPublicKey, OrgSecretKey, SealContext, SealError, SealedBox, challenge_proof, open, seal,
};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use support::{TestClient, TestServer, code};
use tokio::io::AsyncWriteExt;
use tokio_tungstenite::tungstenite::Message;

const ORG: &str = "/api/v1/orgs/acme";
const S: &str = "/api/v1/orgs/acme/secrets";
const BIN: &str = env!("CARGO_BIN_EXE_flowlink-control");

// ---------------------------------------------------------------------------------------------
// The parties.

fn random32() -> [u8; 32] {
    let mut b = [0u8; 32];
    getrandom::fill(&mut b).expect("random");
    b
}

/// A custodian as its CLI would hold it: an id and its own private key.
struct Custodian {
    id: String,
    key: OrgSecretKey,
}

impl Custodian {
    fn recipient(&self) -> String {
        format!("custodian:{}", self.id)
    }
}

async fn new_custodian(client: &TestClient, name: &str) -> Custodian {
    let key = OrgSecretKey::generate();
    let (status, body) = client
        .post(
            &format!("{S}/custodians"),
            json!({"name": name, "public_key": key.public_key().to_base64()}),
        )
        .await;
    assert_eq!(status, 201, "custodian: {body}");
    Custodian {
        id: body["id"].as_str().expect("id").to_string(),
        key,
    }
}

/// An enrolled device: its signing key (link) and box key (secrets).
struct Dev {
    id: String,
    signing: SigningKey,
    boxk: OrgSecretKey,
}

impl Dev {
    fn recipient(&self) -> String {
        format!("device:{}", self.id)
    }

    /// The org key of `version` from the device's wrap, as a proxy unwraps it.
    fn unwrap(&self, org_id: &str, version: u32, wrapped: &SealedBox) -> OrgSecretKey {
        let bytes = open(
            &self.boxk,
            &SealContext::OrgKey {
                org_id,
                key_version: version,
                recipient: &self.recipient(),
            },
            wrapped,
        )
        .expect("the device opens its wrap");
        OrgSecretKey::from_bytes(bytes.as_slice().try_into().expect("32 bytes"))
    }

    /// Every secret of a push opened as the proxy would: `(name, Ok(value) | Err)`.
    fn open_push(
        &self,
        org_id: &str,
        push: &SecretsPush,
    ) -> BTreeMap<String, Result<String, SealError>> {
        let keys: BTreeMap<u32, OrgSecretKey> = push
            .keys
            .iter()
            .map(|k| {
                (
                    k.key_version,
                    self.unwrap(org_id, k.key_version, &k.wrapped),
                )
            })
            .collect();
        push.secrets
            .iter()
            .map(|s| {
                let key = keys
                    .get(&s.key_version)
                    .expect("a key for the secret's version");
                let opened = open(
                    key,
                    &SealContext::Secret {
                        org_id,
                        name: &s.name,
                        version: s.version,
                        key_version: s.key_version,
                    },
                    &s.sealed,
                )
                .map(|v| String::from_utf8(v.to_vec()).expect("utf-8"));
                (s.name.clone(), opened)
            })
            .collect()
    }
}

async fn enroll(server: &TestServer, owner: &TestClient, labels: Value) -> Dev {
    let (status, created) = owner
        .post(&format!("{ORG}/enrollment-tokens"), json!({}))
        .await;
    assert_eq!(status, 201, "token: {created}");
    let signing = SigningKey::from_bytes(&random32());
    let boxk = OrgSecretKey::generate();
    let (status, body) = server
        .client()
        .post(
            "/api/v1/enroll",
            json!({
                "token": created["token"],
                "device_name": format!("dev-{}", &random32()[0]),
                "hostname": "host.example",
                "signing_key": STANDARD.encode(signing.verifying_key().to_bytes()),
                "box_key": boxk.public_key().to_base64(),
                "labels": labels,
            }),
        )
        .await;
    assert_eq!(status, 201, "enrol: {body}");
    Dev {
        id: body["device_id"].as_str().expect("id").to_string(),
        signing,
        boxk,
    }
}

fn wrap_to(
    org_id: &str,
    version: u32,
    recipient: &str,
    pk: &BoxPublicKey,
    org: &OrgSecretKey,
) -> Value {
    let wrapped = seal(
        pk,
        &SealContext::OrgKey {
            org_id,
            key_version: version,
            recipient,
        },
        org.to_bytes().as_ref(),
    )
    .expect("seal");
    json!({"recipient": recipient, "wrapped": wrapped})
}

fn seal_value(
    org_id: &str,
    pk: &BoxPublicKey,
    name: &str,
    version: u64,
    kv: u32,
    value: &str,
) -> SealedBox {
    seal(
        pk,
        &SealContext::Secret {
            org_id,
            name,
            version,
            key_version: kv,
        },
        value.as_bytes(),
    )
    .expect("seal")
}

/// An organisation with a server, its owner and its id.
struct Rig {
    server: TestServer,
    owner: TestClient,
    org_id: String,
}

async fn rig(backend: Backend) -> Rig {
    let server = TestServer::start(backend).await;
    let owner = server.owner().await;
    let (_, org) = owner.get(ORG).await;
    let org_id = org["id"].as_str().expect("id").to_string();
    Rig {
        server,
        owner,
        org_id,
    }
}

impl Rig {
    async fn status(&self) -> Value {
        let (status, body) = self.owner.get(&format!("{S}/key")).await;
        assert_eq!(status, 200, "{body}");
        body
    }

    /// Sets up key version 1 wrapped to `custodian` and `devices`; returns the org key.
    async fn setup(&self, custodian: &Custodian, devices: &[&Dev]) -> OrgSecretKey {
        let org = OrgSecretKey::generate();
        let mut wraps = vec![wrap_to(
            &self.org_id,
            1,
            &custodian.recipient(),
            &custodian.key.public_key(),
            &org,
        )];
        for d in devices {
            wraps.push(wrap_to(
                &self.org_id,
                1,
                &d.recipient(),
                &d.boxk.public_key(),
                &org,
            ));
        }
        let (status, body) = self
            .owner
            .post(
                &format!("{S}/key"),
                json!({"public_key": org.public_key().to_base64(), "previous_version": null,
                       "wraps": wraps}),
            )
            .await;
        assert_eq!(status, 201, "set-up: {body}");
        org
    }

    /// PUTs a value sealed for `base + 1` under key `kv`.
    async fn put(
        &self,
        name: &str,
        base: u64,
        kv: u32,
        org: &OrgSecretKey,
        value: &str,
        meta: Value,
    ) -> (u16, Value) {
        let sealed = seal_value(&self.org_id, &org.public_key(), name, base + 1, kv, value);
        let mut body = json!({"base_version": base, "key_version": kv, "sealed": sealed});
        for (k, v) in meta.as_object().cloned().unwrap_or_default() {
            body[k] = v;
        }
        self.owner.put(&format!("{S}/{name}"), body).await
    }

    async fn audit(&self, kind: &str) -> Vec<Value> {
        let (status, body) = self
            .owner
            .get(&format!("{ORG}/audit?kind={kind}&limit=500"))
            .await;
        assert_eq!(status, 200, "{body}");
        body["items"].as_array().expect("items").clone()
    }
}

// ---------------------------------------------------------------------------------------------
// A fake proxy on the link.

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

struct Proxy {
    ws: Ws,
}

impl Proxy {
    async fn send(&mut self, m: &ProxyMessage) {
        let text = serde_json::to_string(m).expect("json");
        self.ws.send(Message::text(text)).await.expect("send");
    }

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
        self.try_recv(Duration::from_secs(10))
            .await
            .expect("a control message within 10 s")
    }

    async fn secrets(&mut self) -> SecretsPush {
        match self.recv().await {
            ControlMessage::Secrets(s) => s,
            other => panic!("expected a secrets push, got {other:?}"),
        }
    }

    async fn challenge(&mut self) -> KeyChallenge {
        match self.recv().await {
            ControlMessage::KeyChallenge(c) => c,
            other => panic!("expected a key challenge, got {other:?}"),
        }
    }

    /// Opens an authenticated link for `service`; returns it with its first secrets push
    /// (after welcome and policy).
    async fn connect(server: &TestServer, dev: &Dev, service: &str) -> (Proxy, SecretsPush) {
        let url = format!("ws://{}/api/v1/link", server.addr);
        let (ws, _) = tokio_tungstenite::connect_async(url)
            .await
            .expect("connect");
        let mut p = Proxy { ws };
        p.send(&ProxyMessage::Hello(Hello {
            version: LINK_VERSION,
            device_id: dev.id.clone(),
            proxy_version: "0.1.0-test".into(),
            service: service.to_string(),
            pid: std::process::id(),
        }))
        .await;
        let nonce = match p.recv().await {
            ControlMessage::Challenge(c) => c.nonce,
            other => panic!("expected a challenge, got {other:?}"),
        };
        let sig = dev
            .signing
            .sign(&auth_message(&dev.id, &nonce, &server.config.public_url));
        p.send(&ProxyMessage::Auth(AuthProof {
            signature: STANDARD.encode(sig.to_bytes()),
        }))
        .await;
        assert!(matches!(p.recv().await, ControlMessage::Welcome(_)));
        assert!(matches!(p.recv().await, ControlMessage::Policy(_)));
        let push = p.secrets().await;
        (p, push)
    }

    /// Answers a challenge as a device holding `org` would.
    async fn prove(&mut self, org_id: &str, c: &KeyChallenge, org: &OrgSecretKey) {
        let plain = open(
            org,
            &SealContext::Challenge {
                org_id,
                key_version: c.key_version,
                challenge_id: &c.challenge_id,
            },
            &c.sealed,
        )
        .expect("the challenge opens with the org key");
        self.send(&ProxyMessage::KeyProof(KeyProof {
            challenge_id: c.challenge_id.clone(),
            key_version: c.key_version,
            proof: Some(challenge_proof(&plain)),
            error: None,
        }))
        .await;
    }
}

/// Polls `f` every 100 ms until it is true or 10 s pass.
async fn eventually<F, Fut>(what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        if f().await {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn names(push: &SecretsPush) -> Vec<&str> {
    push.secrets.iter().map(|s| s.name.as_str()).collect()
}

fn version_of(status: &Value, v: u32) -> Value {
    status["versions"]
        .as_array()
        .expect("versions")
        .iter()
        .find(|k| k["version"] == v)
        .cloned()
        .unwrap_or(Value::Null)
}

/// Waits until the control plane has recorded `dev`'s proof that it opens key `version`.
async fn wrap_confirmed(owner: &TestClient, dev: &Dev, version: u32) {
    let owner = owner.clone();
    let rec = dev.recipient();
    eventually("the wrap is confirmed", || {
        let owner = owner.clone();
        let rec = rec.clone();
        async move {
            let (_, s) = owner.get(&format!("{S}/key")).await;
            wrap_of(&s, version, &rec)["confirmed_at"].is_string()
        }
    })
    .await;
}

fn wrap_of(status: &Value, v: u32, recipient: &str) -> Value {
    version_of(status, v)["recipients"]
        .as_array()
        .expect("recipients")
        .iter()
        .find(|w| w["recipient"] == recipient)
        .cloned()
        .unwrap_or(Value::Null)
}

fn lacking(status: &Value) -> Vec<String> {
    status["lacking"]
        .as_array()
        .expect("lacking")
        .iter()
        .map(|r| r["recipient"].as_str().expect("recipient").to_string())
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Scenarios.

async fn key_setup_with_custodian_and_device_wraps(backend: Backend) {
    let r = rig(backend).await;
    let admin = r
        .server
        .member(&r.owner, "acme", "admin@acme.test", "admin")
        .await;
    let dev = enroll(&r.server, &r.owner, json!({})).await;
    let custodian = new_custodian(&r.owner, "olive's laptop").await;

    let before = r.status().await;
    assert_eq!(before["active_version"], Value::Null);
    assert_eq!(before["org_id"], r.org_id.as_str());
    let mut want = vec![dev.recipient(), custodian.recipient()];
    want.sort();
    let mut got = lacking(&before);
    got.sort();
    assert_eq!(got, want, "with no key, every live recipient lacks it");

    // Only a custodian may set up, and must wrap the key to itself.
    let org = OrgSecretKey::generate();
    let body =
        |wraps: Vec<Value>| json!({"public_key": org.public_key().to_base64(), "wraps": wraps});
    let (status, resp) = admin.post(&format!("{S}/key"), body(vec![])).await;
    assert_eq!(status, 409, "{resp}");
    assert!(
        resp["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("custodian"),
        "{resp}"
    );
    let dev_wrap = wrap_to(&r.org_id, 1, &dev.recipient(), &dev.boxk.public_key(), &org);
    let (status, resp) = r
        .owner
        .post(&format!("{S}/key"), body(vec![dev_wrap.clone()]))
        .await;
    assert_eq!((status, code(&resp)), (400, "invalid_request"), "{resp}");
    let bogus = wrap_to(&r.org_id, 1, "device:nope", &dev.boxk.public_key(), &org);
    let own = wrap_to(
        &r.org_id,
        1,
        &custodian.recipient(),
        &custodian.key.public_key(),
        &org,
    );
    let (status, resp) = r
        .owner
        .post(&format!("{S}/key"), body(vec![own.clone(), bogus]))
        .await;
    assert_eq!(status, 400, "{resp}");
    assert_eq!(
        r.status().await["active_version"],
        Value::Null,
        "nothing was stored"
    );

    let (status, resp) = r
        .owner
        .post(&format!("{S}/key"), body(vec![own, dev_wrap]))
        .await;
    assert_eq!(status, 201, "{resp}");
    assert_eq!(resp["active_version"], 1);
    assert_eq!(resp["lacking"], json!([]));
    let v1 = version_of(&resp, 1);
    assert_eq!(v1["state"], "active");
    assert_eq!(v1["public_key"], org.public_key().to_base64());
    // The custodian opens its own wrap to exactly the org key.
    let wrapped: SealedBox =
        serde_json::from_value(wrap_of(&resp, 1, &custodian.recipient())["wrapped"].clone())
            .expect("box");
    let opened = open(
        &custodian.key,
        &SealContext::OrgKey {
            org_id: &r.org_id,
            key_version: 1,
            recipient: &custodian.recipient(),
        },
        &wrapped,
    )
    .expect("opens");
    assert_eq!(opened.as_slice(), org.to_bytes().as_slice());
    // Another set-up is refused.
    let again = wrap_to(
        &r.org_id,
        1,
        &custodian.recipient(),
        &custodian.key.public_key(),
        &org,
    );
    let (status, resp) = r.owner.post(&format!("{S}/key"), body(vec![again])).await;
    assert_eq!(status, 409, "{resp}");
    assert_eq!(r.audit("secret_key.created").await.len(), 1);

    // A new device lacks the key until a custodian grants it; twice is refused.
    let dev2 = enroll(&r.server, &r.owner, json!({})).await;
    assert_eq!(lacking(&r.status().await), vec![dev2.recipient()]);
    let grant =
        json!({"wraps": [wrap_to(&r.org_id, 1, &dev2.recipient(), &dev2.boxk.public_key(), &org)]});
    let (status, resp) = r
        .owner
        .post(&format!("{S}/key/1/wraps"), grant.clone())
        .await;
    assert_eq!(status, 200, "{resp}");
    assert_eq!(resp["lacking"], json!([]));
    let (status, resp) = r.owner.post(&format!("{S}/key/1/wraps"), grant).await;
    assert_eq!(status, 409, "{resp}");
    let (status, resp) = r.owner.post(&format!("{S}/key/7/wraps"), json!({"wraps": [wrap_to(&r.org_id, 7, &dev2.recipient(), &dev2.boxk.public_key(), &org)]})).await;
    assert_eq!(status, 404, "{resp}");
    // A revoked device is refused a wrap.
    let dev3 = enroll(&r.server, &r.owner, json!({})).await;
    let (status, _) = r
        .owner
        .post(&format!("{ORG}/devices/{}/revoke", dev3.id), json!({}))
        .await;
    assert_eq!(status, 204);
    let (status, resp) = r
        .owner
        .post(&format!("{S}/key/1/wraps"), json!({"wraps": [wrap_to(&r.org_id, 1, &dev3.recipient(), &dev3.boxk.public_key(), &org)]}))
        .await;
    assert_eq!(status, 409, "{resp}");
    assert!(
        resp["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("revoked"),
        "{resp}"
    );
    // A revoked custodian too.
    let spare = new_custodian(&r.owner, "spare").await;
    let (status, _) = r
        .owner
        .delete(&format!("{S}/custodians/{}", spare.id))
        .await;
    assert_eq!(status, 204);
    let (status, resp) = r
        .owner
        .post(&format!("{S}/key/1/wraps"), json!({"wraps": [wrap_to(&r.org_id, 1, &spare.recipient(), &spare.key.public_key(), &org)]}))
        .await;
    assert_eq!(status, 409, "{resp}");
    let (status, list) = r.owner.get(&format!("{S}/custodians")).await;
    assert_eq!(status, 200, "{list}");
    assert_eq!(list["items"].as_array().map(Vec::len), Some(2));
    assert_eq!(r.audit("secret_key.granted").await.len(), 1);
    r.server.stop().await;
}

async fn secrets_are_metadata_only(backend: Backend) {
    let r = rig(backend).await;
    let custodian = new_custodian(&r.owner, "c").await;
    // Without a key there is nothing to seal to.
    let stray = OrgSecretKey::generate();
    let (status, body) = r.put("EARLY", 0, 1, &stray, "v", json!({})).await;
    assert_eq!(status, 409, "{body}");
    let org = r.setup(&custodian, &[]).await;

    let value = "ghp_metadataOnly0123456789";
    let (status, body) = r
        .put(
            "GITHUB_TOKEN",
            0,
            1,
            &org,
            value,
            json!({"services": ["git", "git"], "labels": {"env": "prod"}, "description": "CI bot"}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["version"], 1);
    assert_eq!(body["key_version"], 1);
    assert_eq!(body["services"], json!(["git"]));
    assert!(body.get("sealed").is_none(), "{body}");
    for n in ["B_TWO", "C_THREE"] {
        let (status, body) = r.put(n, 0, 1, &org, "x-value", json!({})).await;
        assert_eq!(status, 201, "{body}");
    }

    let (status, meta) = r.owner.get(&format!("{S}/GITHUB_TOKEN")).await;
    assert_eq!(status, 200, "{meta}");
    assert_eq!(meta["description"], "CI bot");
    assert_eq!(meta["labels"], json!({"env": "prod"}));
    assert_eq!(meta["last_used_at"], Value::Null);
    assert!(
        !meta.to_string().contains("\"ct\""),
        "no sealed value in metadata: {meta}"
    );

    // Paginated by name.
    let (status, page) = r.owner.get(&format!("{S}?limit=2")).await;
    assert_eq!(status, 200, "{page}");
    let first: Vec<&str> = page["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|s| s["name"].as_str())
        .collect();
    assert_eq!(first, ["B_TWO", "C_THREE"]);
    let cursor = page["next_cursor"].as_str().expect("cursor");
    let (_, page) = r.owner.get(&format!("{S}?limit=2&cursor={cursor}")).await;
    let rest: Vec<&str> = page["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|s| s["name"].as_str())
        .collect();
    assert_eq!(rest, ["GITHUB_TOKEN"]);
    assert_eq!(page["next_cursor"], Value::Null);
    assert!(!page.to_string().contains("\"ct\""));

    // An auditor reads metadata, changes nothing, and cannot fetch sealed values.
    let auditor = r
        .server
        .member(&r.owner, "acme", "auditor@acme.test", "auditor")
        .await;
    let (status, _) = auditor.get(&format!("{S}/GITHUB_TOKEN")).await;
    assert_eq!(status, 200);
    let (status, _) = auditor.get(&format!("{S}/sealed")).await;
    assert_eq!(status, 403);
    let (status, _) = auditor.delete(&format!("{S}/GITHUB_TOKEN")).await;
    assert_eq!(status, 403);

    // Bad names, bad boxes, bad scopes.
    let (status, body) = r.put("lower_case", 0, 1, &org, "v", json!({})).await;
    assert_eq!(status, 400, "{body}");
    let (status, _) = r.owner.get(&format!("{S}/lower_case")).await;
    assert_eq!(status, 404);
    let mut empty = seal_value(&r.org_id, &org.public_key(), "EMPTY", 1, 1, "");
    let (status, body) = r
        .owner
        .put(
            &format!("{S}/EMPTY"),
            json!({"base_version": 0, "key_version": 1, "sealed": empty.clone()}),
        )
        .await;
    assert_eq!(status, 400, "an empty value is refused: {body}");
    empty.alg = "rot13".into();
    let (status, _) = r
        .owner
        .put(
            &format!("{S}/EMPTY"),
            json!({"base_version": 0, "key_version": 1, "sealed": empty}),
        )
        .await;
    assert_eq!(status, 400);
    let (status, body) = r
        .put("SCOPED", 0, 1, &org, "v", json!({"services": ["a/b"]}))
        .await;
    assert_eq!(status, 400, "{body}");

    // Removal.
    let (status, _) = r.owner.delete(&format!("{S}/C_THREE")).await;
    assert_eq!(status, 204);
    let (status, _) = r.owner.get(&format!("{S}/C_THREE")).await;
    assert_eq!(status, 404);
    let (status, _) = r.owner.delete(&format!("{S}/C_THREE")).await;
    assert_eq!(status, 404);

    // The audit trail names secrets and versions, never values or sealed boxes.
    let created = r.audit("secret.created").await;
    assert_eq!(created.len(), 3);
    let deleted = r.audit("secret.deleted").await;
    assert_eq!(deleted.len(), 1);
    assert_eq!(deleted[0]["target"], "C_THREE");
    let (_, everything) = r.owner.get(&format!("{ORG}/audit?limit=500")).await;
    let text = everything.to_string();
    assert!(!text.contains(value), "the value is not in the audit trail");
    assert!(!text.contains("\"ct\""), "no sealed box in the audit trail");
    r.server.stop().await;
}

async fn seals_are_bound_to_name_and_version(backend: Backend) {
    let r = rig(backend).await;
    let custodian = new_custodian(&r.owner, "c").await;
    let dev = enroll(&r.server, &r.owner, json!({})).await;
    let org = r.setup(&custodian, &[&dev]).await;
    let sealed = seal_value(
        &r.org_id,
        &org.public_key(),
        "DB_PASSWORD",
        1,
        1,
        "hunter2-but-longer",
    );
    // Honest upload, then the same box uploaded as another secret and as a later version.
    for (name, base) in [("DB_PASSWORD", 0), ("OTHER_NAME", 0)] {
        let (status, body) = r
            .owner
            .put(
                &format!("{S}/{name}"),
                json!({"base_version": base, "key_version": 1, "sealed": sealed}),
            )
            .await;
        assert_eq!(status, 201, "{body}");
    }
    let (_, second) = r
        .put("REPLAYED", 0, 1, &org, "first value", json!({}))
        .await;
    assert_eq!(second["version"], 1);
    let old_box = seal_value(
        &r.org_id,
        &org.public_key(),
        "REPLAYED",
        1,
        1,
        "first value",
    );
    let (status, body) = r
        .owner
        .put(
            &format!("{S}/REPLAYED"),
            json!({"base_version": 1, "key_version": 1, "sealed": old_box}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["version"], 2);

    let (_proxy, push) = Proxy::connect(&r.server, &dev, "git").await;
    let opened = dev.open_push(&r.org_id, &push);
    assert_eq!(
        opened["DB_PASSWORD"].as_deref().ok(),
        Some("hunter2-but-longer")
    );
    assert!(
        matches!(opened["OTHER_NAME"], Err(SealError::Open)),
        "a box moved to another name does not open: {:?}",
        opened["OTHER_NAME"]
    );
    assert!(
        matches!(opened["REPLAYED"], Err(SealError::Open)),
        "a version-1 box served as version 2 does not open"
    );
    // Nor does a box for another organisation.
    let foreign = seal_value("another-org", &org.public_key(), "DB_PASSWORD", 1, 1, "x");
    assert!(matches!(
        open(
            &dev.unwrap(&r.org_id, 1, &push.keys[0].wrapped),
            &SealContext::Secret {
                org_id: &r.org_id,
                name: "DB_PASSWORD",
                version: 1,
                key_version: 1
            },
            &foreign
        ),
        Err(SealError::Open)
    ));
    r.server.stop().await;
}

async fn stale_versions_conflict(backend: Backend) {
    let r = rig(backend).await;
    let custodian = new_custodian(&r.owner, "c").await;
    let org = r.setup(&custodian, &[]).await;
    let (status, _) = r.put("API_KEY", 0, 1, &org, "one", json!({})).await;
    assert_eq!(status, 201);
    // Someone else created it meanwhile: base 0 is stale.
    let (status, body) = r.put("API_KEY", 0, 1, &org, "two", json!({})).await;
    assert_eq!((status, code(&body)), (409, "conflict"), "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("version 1"),
        "{body}"
    );
    let (status, body) = r.put("API_KEY", 1, 1, &org, "two", json!({})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["version"], 2);
    let (status, body) = r.put("API_KEY", 1, 1, &org, "three", json!({})).await;
    assert_eq!(status, 409, "a writer who saw version 1 is refused: {body}");
    let (status, body) = r.put("MISSING", 3, 1, &org, "x", json!({})).await;
    assert_eq!(status, 409, "{body}");
    // Sealed to a key version that is not the active one.
    let (status, body) = r.put("API_KEY", 2, 2, &org, "three", json!({})).await;
    assert_eq!(status, 409, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("active"),
        "{body}"
    );
    let (_, meta) = r.owner.get(&format!("{S}/API_KEY")).await;
    assert_eq!(meta["version"], 2, "refused writes changed nothing");
    assert_eq!(r.audit("secret.updated").await.len(), 1);
    r.server.stop().await;
}

/// The body of a rotation from `from` to `from + 1` by a custodian holding `org`.
fn rotation(
    r: &Rig,
    from: u32,
    new: &OrgSecretKey,
    recipients: &[(String, BoxPublicKey)],
    secrets: &[(String, u64, String)],
) -> Value {
    let wraps: Vec<Value> = recipients
        .iter()
        .map(|(rec, pk)| wrap_to(&r.org_id, from + 1, rec, pk, new))
        .collect();
    let secrets: Vec<Value> = secrets
        .iter()
        .map(|(name, v, value)| json!({"name": name, "version": v, "sealed": seal_value(&r.org_id, &new.public_key(), name, *v, from + 1, value)}))
        .collect();
    json!({"public_key": new.public_key().to_base64(), "previous_version": from, "wraps": wraps, "secrets": secrets})
}

async fn rotation_is_complete_or_refused(backend: Backend) {
    let r = rig(backend).await;
    let custodian = new_custodian(&r.owner, "c").await;
    let d1 = enroll(&r.server, &r.owner, json!({})).await;
    let d2 = enroll(&r.server, &r.owner, json!({})).await;
    let org = r.setup(&custodian, &[&d1, &d2]).await;
    r.put("ONE", 0, 1, &org, "value-one", json!({})).await;
    r.put("TWO", 0, 1, &org, "value-two", json!({})).await;
    r.put("TWO", 1, 1, &org, "value-two-b", json!({})).await;
    let new = OrgSecretKey::generate();
    let all = vec![
        (custodian.recipient(), custodian.key.public_key()),
        (d1.recipient(), d1.boxk.public_key()),
        (d2.recipient(), d2.boxk.public_key()),
    ];
    let secrets = vec![
        ("ONE".to_string(), 1, "value-one".to_string()),
        ("TWO".to_string(), 2, "value-two-b".to_string()),
    ];
    let before = r.status().await;
    let refused = [
        (
            "a device gets no wrap",
            rotation(&r, 1, &new, &all[..2], &secrets),
        ),
        (
            "a secret is not re-sealed",
            rotation(&r, 1, &new, &all, &secrets[..1]),
        ),
        (
            "a secret at a stale version",
            rotation(
                &r,
                1,
                &new,
                &all,
                &[secrets[0].clone(), ("TWO".into(), 1, "value-two".into())],
            ),
        ),
        ("not from the active version", {
            let mut b = rotation(&r, 1, &new, &all, &secrets);
            b["previous_version"] = json!(5);
            b
        }),
    ];
    for (why, body) in refused {
        let (status, resp) = r.owner.post(&format!("{S}/key"), body).await;
        assert_eq!(status, 409, "{why}: {resp}");
    }
    let admin = r
        .server
        .member(&r.owner, "acme", "admin@acme.test", "admin")
        .await;
    let (status, resp) = admin
        .post(&format!("{S}/key"), rotation(&r, 1, &new, &all, &secrets))
        .await;
    assert_eq!(status, 409, "an admin without a custodian key: {resp}");
    assert_eq!(
        r.status().await,
        before,
        "refused rotations changed nothing"
    );
    let (_, sealed) = r.owner.get(&format!("{S}/sealed")).await;
    assert!(
        sealed["items"]
            .as_array()
            .expect("items")
            .iter()
            .all(|s| s["key_version"] == 1)
    );

    let (status, resp) = r
        .owner
        .post(&format!("{S}/key"), rotation(&r, 1, &new, &all, &secrets))
        .await;
    assert_eq!(status, 201, "{resp}");
    assert_eq!(resp["active_version"], 2);
    assert_eq!(version_of(&resp, 1)["state"], "retiring");
    assert_eq!(version_of(&resp, 2)["state"], "active");
    assert_eq!(resp["lacking"], json!([]));
    let (_, sealed) = r.owner.get(&format!("{S}/sealed")).await;
    for s in sealed["items"].as_array().expect("items") {
        assert_eq!(s["key_version"], 2, "{s}");
    }
    // A put sealed to the old key is refused now; the device opens the re-sealed values.
    let (status, _) = r.put("ONE", 1, 1, &org, "late", json!({})).await;
    assert_eq!(status, 409);
    let (_proxy, push) = Proxy::connect(&r.server, &d1, "git").await;
    assert_eq!(
        push.keys.iter().map(|k| k.key_version).collect::<Vec<_>>(),
        vec![1, 2]
    );
    let opened = dev_values(&d1, &r.org_id, &push);
    assert_eq!(
        opened,
        vec![
            ("ONE".into(), "value-one".into()),
            ("TWO".into(), "value-two-b".into())
        ]
    );
    let rotated = r.audit("secret_key.rotated").await;
    assert_eq!(rotated.len(), 1);
    assert_eq!(rotated[0]["detail"]["resealed"], 2);
    r.server.stop().await;
}

fn dev_values(dev: &Dev, org_id: &str, push: &SecretsPush) -> Vec<(String, String)> {
    dev.open_push(org_id, push)
        .into_iter()
        .map(|(n, v)| (n, v.expect("opens")))
        .collect()
}

async fn revocation_requires_rotation(backend: Backend) {
    let r = rig(backend).await;
    let custodian = new_custodian(&r.owner, "c").await;
    let keep = enroll(&r.server, &r.owner, json!({})).await;
    let lost = enroll(&r.server, &r.owner, json!({})).await;
    let org = r.setup(&custodian, &[&keep, &lost]).await;
    r.put("TOKEN", 0, 1, &org, "tok-value", json!({})).await;
    let (mut watcher, _) = Proxy::connect(&r.server, &keep, "git").await;
    let _ = watcher.challenge().await;
    let (lost_link, push) = Proxy::connect(&r.server, &lost, "git").await;
    assert_eq!(push.keys.len(), 1);
    drop(lost_link);

    let (status, body) = r
        .owner
        .post(
            &format!("{ORG}/devices/{}/revoke", lost.id),
            json!({"reason": "laptop stolen"}),
        )
        .await;
    assert_eq!(status, 204, "{body}");
    let status = r.status().await;
    let why = status["rotation_required"]
        .as_str()
        .expect("rotation required");
    assert!(
        why.contains("laptop stolen") && why.contains(&lost.id),
        "{why}"
    );
    assert!(wrap_of(&status, 1, &lost.recipient())["revoked"] == true);
    assert!(!lacking(&status).contains(&lost.recipient()));
    let events = r.audit("secret_key.rotation_required").await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["detail"]["device"], lost.id.as_str());
    // The other devices are told; the revoked one is served nothing.
    let told = watcher.secrets().await;
    assert!(
        told.rotation_required
            .as_deref()
            .is_some_and(|w| w.contains("laptop stolen"))
    );
    let lost_record = r
        .server
        .store
        .device(&r.org_id, &lost.id)
        .await
        .expect("db")
        .expect("device");
    let served = r
        .server
        .store
        .secrets_push(&lost_record, "git")
        .await
        .expect("push");
    assert!(
        served.keys.is_empty(),
        "a revoked device's wraps are no longer served"
    );

    // A device that never held the key does not raise it again; a custodian that did, does.
    let spare = new_custodian(&r.owner, "spare").await;
    let grant = json!({"wraps": [wrap_to(&r.org_id, 1, &spare.recipient(), &spare.key.public_key(), &org)]});
    assert_eq!(
        r.owner.post(&format!("{S}/key/1/wraps"), grant).await.0,
        200
    );
    assert_eq!(
        r.owner
            .delete(&format!("{S}/custodians/{}", spare.id))
            .await
            .0,
        204
    );
    assert_eq!(r.audit("secret_key.rotation_required").await.len(), 2);
    let bare = enroll(&r.server, &r.owner, json!({})).await;
    assert_eq!(
        r.owner
            .post(&format!("{ORG}/devices/{}/revoke", bare.id), json!({}))
            .await
            .0,
        204
    );
    assert_eq!(r.audit("secret_key.rotation_required").await.len(), 2);

    // A member who leaves takes their custodian key along: revoked, and the key flagged.
    let admin = r
        .server
        .member(&r.owner, "acme", "admin@acme.test", "admin")
        .await;
    let theirs = new_custodian(&admin, "admin's laptop").await;
    let grant = json!({"wraps": [wrap_to(&r.org_id, 1, &theirs.recipient(), &theirs.key.public_key(), &org)]});
    assert_eq!(
        r.owner.post(&format!("{S}/key/1/wraps"), grant).await.0,
        200
    );
    let (_, me) = admin.get("/api/v1/me").await;
    let admin_id = me["user"]["id"].as_str().expect("id");
    assert_eq!(
        r.owner.delete(&format!("{ORG}/members/{admin_id}")).await.0,
        204
    );
    assert_eq!(r.audit("secret_key.rotation_required").await.len(), 3);
    assert!(
        r.status().await["rotation_required"]
            .as_str()
            .is_some_and(|w| w.contains("admin@acme.test left"))
    );
    let (_, list) = r.owner.get(&format!("{S}/custodians")).await;
    let revoked = list["items"]
        .as_array()
        .expect("items")
        .iter()
        .find(|c| c["id"] == theirs.id.as_str())
        .expect("listed")["revoked_at"]
        .is_string();
    assert!(revoked, "{list}");

    // Rotation clears it.
    let new = OrgSecretKey::generate();
    let body = rotation(
        &r,
        1,
        &new,
        &[
            (custodian.recipient(), custodian.key.public_key()),
            (keep.recipient(), keep.boxk.public_key()),
        ],
        &[("TOKEN".into(), 1, "tok-value".into())],
    );
    let (status, resp) = r.owner.post(&format!("{S}/key"), body).await;
    assert_eq!(status, 201, "{resp}");
    assert_eq!(resp["rotation_required"], Value::Null);
    assert!(
        version_of(&resp, 1)["rotation_required"].is_string(),
        "the old version keeps why"
    );
    r.server.stop().await;
}

async fn link_pushes_the_scoped_set_and_repushes(backend: Backend) {
    let r = rig(backend).await;
    let custodian = new_custodian(&r.owner, "c").await;
    let dev = enroll(&r.server, &r.owner, json!({"env": "prod", "team": "a"})).await;
    let org = r.setup(&custodian, &[&dev]).await;
    for (name, meta) in [
        ("EVERYWHERE", json!({})),
        ("GIT_ONLY", json!({"services": ["git"]})),
        ("DB_ONLY", json!({"services": ["db"]})),
        ("PROD", json!({"labels": {"env": "prod"}})),
        ("PROD_B", json!({"labels": {"env": "prod", "team": "b"}})),
        ("DEV", json!({"labels": {"env": "dev"}})),
    ] {
        let (status, body) = r
            .put(name, 0, 1, &org, &format!("value-of-{name}"), meta)
            .await;
        assert_eq!(status, 201, "{body}");
    }
    let (mut git, push) = Proxy::connect(&r.server, &dev, "git").await;
    assert_eq!(names(&push), ["EVERYWHERE", "GIT_ONLY", "PROD"]);
    assert_eq!(push.keys.len(), 1);
    assert_eq!(push.keys[0].public_key, org.public_key().to_base64());
    assert_eq!(
        dev_values(&dev, &r.org_id, &push),
        vec![
            ("EVERYWHERE".into(), "value-of-EVERYWHERE".into()),
            ("GIT_ONLY".into(), "value-of-GIT_ONLY".into()),
            ("PROD".into(), "value-of-PROD".into()),
        ]
    );
    let c = git.challenge().await;
    git.prove(&r.org_id, &c, &org).await;
    wrap_confirmed(&r.owner, &dev, 1).await;
    let (mut db, push) = Proxy::connect(&r.server, &dev, "db").await;
    assert_eq!(names(&push), ["DB_ONLY", "EVERYWHERE", "PROD"]);
    assert_eq!(
        db.try_recv(Duration::from_millis(500)).await,
        None,
        "the device proved this version already"
    );

    // A put, a new value and a removal each re-push the whole set to the links in scope.
    r.put("NEW_ONE", 0, 1, &org, "fresh", json!({"services": ["git"]}))
        .await;
    assert_eq!(
        names(&git.secrets().await),
        ["EVERYWHERE", "GIT_ONLY", "NEW_ONE", "PROD"]
    );
    assert_eq!(
        db.try_recv(Duration::from_millis(500)).await,
        None,
        "nothing changed for db"
    );
    r.put(
        "GIT_ONLY",
        1,
        1,
        &org,
        "second",
        json!({"services": ["git"]}),
    )
    .await;
    let push = git.secrets().await;
    assert!(dev_values(&dev, &r.org_id, &push).contains(&("GIT_ONLY".into(), "second".into())));
    assert_eq!(r.owner.delete(&format!("{S}/NEW_ONE")).await.0, 204);
    assert_eq!(
        names(&git.secrets().await),
        ["EVERYWHERE", "GIT_ONLY", "PROD"]
    );
    // Relabelling the device changes what it receives.
    let (status, body) = r
        .owner
        .patch(
            &format!("{ORG}/devices/{}", dev.id),
            json!({"labels": {"env": "dev"}}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let push = loop {
        match git.recv().await {
            ControlMessage::Secrets(s) => break s,
            ControlMessage::Policy(_) => continue,
            other => panic!("expected a re-push, got {other:?}"),
        }
    };
    assert_eq!(names(&push), ["DEV", "EVERYWHERE", "GIT_ONLY"]);

    // Reported use lands in the metadata.
    git.send(&ProxyMessage::SecretsUsed(SecretsUsed {
        used: vec![
            SecretUse {
                name: "GIT_ONLY".into(),
                version: 2,
                how: "env".into(),
            },
            SecretUse {
                name: "not valid".into(),
                version: 1,
                how: "env".into(),
            },
        ],
    }))
    .await;
    let owner = r.owner.clone();
    let dev_id = dev.id.clone();
    eventually("last use recorded", || {
        let owner = owner.clone();
        let dev_id = dev_id.clone();
        async move {
            let (_, meta) = owner.get(&format!("{S}/GIT_ONLY")).await;
            meta["last_used_device"] == dev_id.as_str() && meta["last_used_at"].is_string()
        }
    })
    .await;
    r.server.stop().await;
}

async fn challenges_confirm_and_retire(backend: Backend) {
    let r = rig(backend).await;
    let custodian = new_custodian(&r.owner, "c").await;
    let dev = enroll(&r.server, &r.owner, json!({})).await;
    let org = r.setup(&custodian, &[&dev]).await;
    r.put("K", 0, 1, &org, "kv", json!({})).await;
    let (mut p, push) = Proxy::connect(&r.server, &dev, "git").await;
    assert_eq!(push.keys.len(), 1);
    // A wrong proof fails and confirms nothing; the next link asks again.
    let c = p.challenge().await;
    assert_eq!(c.key_version, 1);
    p.send(&ProxyMessage::KeyProof(KeyProof {
        challenge_id: c.challenge_id.clone(),
        key_version: 1,
        proof: Some("00".repeat(32)),
        error: None,
    }))
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        wrap_of(&r.status().await, 1, &dev.recipient())["confirmed_at"],
        Value::Null
    );
    // Answering the same challenge again changes nothing; an id never sent is an error.
    p.prove(&r.org_id, &c, &org).await;
    p.send(&ProxyMessage::KeyProof(KeyProof {
        challenge_id: "never-sent".into(),
        key_version: 1,
        proof: Some("00".repeat(32)),
        error: None,
    }))
    .await;
    match p.recv().await {
        ControlMessage::Error(e) => assert_eq!(e.code, "unknown_challenge"),
        other => panic!("expected an error, got {other:?}"),
    }
    assert_eq!(
        wrap_of(&r.status().await, 1, &dev.recipient())["confirmed_at"],
        Value::Null
    );
    drop(p);
    let (mut p, _) = Proxy::connect(&r.server, &dev, "git").await;
    let c = p.challenge().await;
    p.prove(&r.org_id, &c, &org).await;
    wrap_confirmed(&r.owner, &dev, 1).await;

    // Rotation: the new key is pushed with a challenge for it; proving it retires version 1,
    // which is then no longer served.
    let new = OrgSecretKey::generate();
    let body = rotation(
        &r,
        1,
        &new,
        &[
            (custodian.recipient(), custodian.key.public_key()),
            (dev.recipient(), dev.boxk.public_key()),
        ],
        &[("K".into(), 1, "kv".into())],
    );
    assert_eq!(r.owner.post(&format!("{S}/key"), body).await.0, 201);
    let push = p.secrets().await;
    assert_eq!(
        push.keys.iter().map(|k| k.key_version).collect::<Vec<_>>(),
        vec![1, 2]
    );
    let c = p.challenge().await;
    assert_eq!(c.key_version, 2);
    assert_eq!(version_of(&r.status().await, 1)["state"], "retiring");
    p.prove(&r.org_id, &c, &new).await;
    let push = p.secrets().await;
    assert_eq!(
        push.keys.iter().map(|k| k.key_version).collect::<Vec<_>>(),
        vec![2],
        "version 1 is retired"
    );
    let status = r.status().await;
    assert_eq!(version_of(&status, 1)["state"], "retired");
    assert!(version_of(&status, 1)["retired_at"].is_string());
    assert_eq!(r.audit("secret_key.retired").await.len(), 1);

    // A verification run: the connected device proves, the other is offline.
    let offline = enroll(&r.server, &r.owner, json!({})).await;
    let (status, started) = r.owner.post(&format!("{S}/key/verify"), json!({})).await;
    assert_eq!(status, 201, "{started}");
    assert_eq!(
        (started["devices"].clone(), started["offline"].clone()),
        (json!(1), json!(1))
    );
    let id = started["verification_id"].as_str().expect("id").to_string();
    let c = p.challenge().await;
    let (_, pending) = r.owner.get(&format!("{S}/key/verify/{id}")).await;
    let state_of = |v: &Value, d: &str| {
        v["devices"]
            .as_array()
            .expect("devices")
            .iter()
            .find(|x| x["device_id"] == d)
            .map(|x| x["status"].clone())
            .unwrap_or(Value::Null)
    };
    assert_eq!(state_of(&pending, &dev.id), "pending");
    assert_eq!(state_of(&pending, &offline.id), "offline");
    p.prove(&r.org_id, &c, &new).await;
    let owner = r.owner.clone();
    let dev_id = dev.id.clone();
    eventually("the device proved", || {
        let owner = owner.clone();
        let id = id.clone();
        let dev_id = dev_id.clone();
        async move {
            let (_, v) = owner.get(&format!("{S}/key/verify/{id}")).await;
            state_of(&v, &dev_id) == "proved"
        }
    })
    .await;
    // A device answering with an error fails, and says why.
    let (status, started) = r.owner.post(&format!("{S}/key/verify"), json!({})).await;
    assert_eq!(status, 201);
    let id = started["verification_id"].as_str().expect("id").to_string();
    let c = p.challenge().await;
    p.send(&ProxyMessage::KeyProof(KeyProof {
        challenge_id: c.challenge_id,
        key_version: c.key_version,
        proof: None,
        error: Some("no key for version 2".into()),
    }))
    .await;
    let owner = r.owner.clone();
    eventually("the device failed", || {
        let owner = owner.clone();
        let id = id.clone();
        async move {
            let (_, v) = owner.get(&format!("{S}/key/verify/{id}")).await;
            v["devices"].as_array().is_some_and(|d| {
                d.iter().any(|x| {
                    x["status"] == "failed"
                        && x["error"].as_str().is_some_and(|e| e.contains("no key"))
                })
            })
        }
    })
    .await;
    assert_eq!(r.owner.get(&format!("{S}/key/verify/nope")).await.0, 404);
    r.server.stop().await;
}

/// Every text and binary column of every table, and (SQLite) the database files themselves.
async fn scan_database(r: &Rig, backend: Backend, needles: &[(&str, Vec<u8>)]) {
    match backend {
        Backend::Sqlite => {
            let mut files = Vec::new();
            for entry in std::fs::read_dir(r.server.db.dir.path()).expect("dir") {
                let path = entry.expect("entry").path();
                if path.to_string_lossy().contains("control.sqlite3") {
                    files.push(path);
                }
            }
            assert!(!files.is_empty());
            for path in files {
                let bytes = std::fs::read(&path).expect("read");
                for (what, needle) in needles {
                    assert!(
                        !bytes.windows(needle.len()).any(|w| w == needle.as_slice()),
                        "{what} appears in {}",
                        path.display()
                    );
                }
            }
        }
        Backend::Postgres => {
            use sqlx::Row;
            let pool = r.server.store.pool();
            let cols = sqlx::query(
                "SELECT table_name::text AS t, column_name::text AS c, data_type::text AS d FROM information_schema.columns \
                 WHERE table_schema = current_schema() AND data_type IN ('text', 'bytea', 'character varying', 'json', 'jsonb')",
            )
            .fetch_all(pool)
            .await
            .expect("columns");
            assert!(cols.len() > 20, "the scan sees the schema");
            let mut scanned = 0;
            for row in cols {
                let (t, c, d): (String, String, String) =
                    (row.get("t"), row.get("c"), row.get("d"));
                let expr = if d == "bytea" {
                    format!("encode(\"{c}\", 'hex')")
                } else {
                    format!("\"{c}\"::text")
                };
                let values: Vec<Option<String>> =
                    sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT {expr} FROM \"{t}\"")))
                        .fetch_all(pool)
                        .await
                        .expect("values");
                for v in values.into_iter().flatten() {
                    scanned += 1;
                    for (what, needle) in needles {
                        let hay = if d == "bytea" {
                            hex(needle)
                        } else {
                            String::from_utf8_lossy(needle).into_owned()
                        };
                        assert!(!v.contains(&hay), "{what} appears in {t}.{c}");
                    }
                }
            }
            assert!(scanned > 50, "only {scanned} values scanned");
        }
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

async fn no_plaintext_in_the_database(backend: Backend) {
    let r = rig(backend).await;
    let custodian = new_custodian(&r.owner, "c").await;
    let dev = enroll(&r.server, &r.owner, json!({"env": "prod"})).await;
    let org = r.setup(&custodian, &[&dev]).await;
    let value = "sk_live_PlaintextMustNeverBeStored_4242";
    let second = "second-value-also-never-stored-7x";
    r.put(
        "STRIPE_KEY",
        0,
        1,
        &org,
        value,
        json!({"description": "billing", "labels": {"env": "prod"}}),
    )
    .await;
    r.put("STRIPE_KEY", 1, 1, &org, second, json!({})).await;
    let (mut p, push) = Proxy::connect(&r.server, &dev, "billing").await;
    assert_eq!(
        dev_values(&dev, &r.org_id, &push),
        vec![("STRIPE_KEY".into(), second.into())]
    );
    let c = p.challenge().await;
    p.prove(&r.org_id, &c, &org).await;
    p.send(&ProxyMessage::SecretsUsed(SecretsUsed {
        used: vec![SecretUse {
            name: "STRIPE_KEY".into(),
            version: 2,
            how: "env".into(),
        }],
    }))
    .await;
    let new = OrgSecretKey::generate();
    let body = rotation(
        &r,
        1,
        &new,
        &[
            (custodian.recipient(), custodian.key.public_key()),
            (dev.recipient(), dev.boxk.public_key()),
        ],
        &[("STRIPE_KEY".into(), 2, second.into())],
    );
    assert_eq!(r.owner.post(&format!("{S}/key"), body).await.0, 201);
    let _ = p.secrets().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut needles: Vec<(&str, Vec<u8>)> = Vec::new();
    for (what, v) in [("the first value", value), ("the second value", second)] {
        needles.push((what, v.as_bytes().to_vec()));
        needles.push((what, STANDARD.encode(v).into_bytes()));
    }
    let org1 = org.to_bytes().to_vec();
    let org2 = new.to_bytes().to_vec();
    needles.push((
        "org private key v1 (base64)",
        STANDARD.encode(&org1).into_bytes(),
    ));
    needles.push((
        "org private key v2 (base64)",
        STANDARD.encode(&org2).into_bytes(),
    ));
    needles.push((
        "custodian private key (base64)",
        STANDARD.encode(*custodian.key.to_bytes()).into_bytes(),
    ));
    needles.push(("org private key v1", org1));
    needles.push(("org private key v2", org2));
    scan_database(&r, backend, &needles).await;
    r.server.stop().await;
}

// ---------------------------------------------------------------------------------------------
// The CLI.

struct Cli {
    env: Vec<(String, String)>,
}

struct Run {
    ok: bool,
    stdout: String,
    stderr: String,
}

impl Cli {
    async fn run(&self, args: &[&str], stdin: Option<&str>, extra: &[(&str, &str)]) -> Run {
        let mut c = tokio::process::Command::new(BIN);
        c.env_clear();
        if let Some(path) = std::env::var_os("PATH") {
            c.env("PATH", path);
        }
        c.arg("secrets")
            .args(args)
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .envs(extra.iter().copied())
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = c.spawn().expect("spawn");
        if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
            // A command refused before it reads stdin (bad arguments) closes the pipe first.
            if let Err(e) = pipe.write_all(text.as_bytes()).await {
                assert_eq!(e.kind(), std::io::ErrorKind::BrokenPipe, "stdin: {e}");
            }
            drop(pipe);
        }
        let out = tokio::time::timeout(Duration::from_secs(120), child.wait_with_output())
            .await
            .expect("the CLI finishes")
            .expect("wait");
        Run {
            ok: out.status.success(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    async fn ok(&self, args: &[&str], stdin: Option<&str>) -> String {
        let run = self.run(args, stdin, &[]).await;
        assert!(
            run.ok,
            "secrets {args:?} failed:\n{}\n{}",
            run.stdout, run.stderr
        );
        run.stdout
    }
}

async fn cli_end_to_end(backend: Backend) {
    let r = rig(backend).await;
    let (status, body) = r
        .owner
        .post(
            &format!("{ORG}/tokens"),
            json!({"name": "cli", "scopes": ["org:read", "secrets:read", "secrets:write", "secrets:keys"]}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let token = body["token"].as_str().expect("token").to_string();
    let dir = tempfile::tempdir().expect("dir");
    let key_file = dir.path().join("custodian.key");
    let kf = key_file.to_str().expect("utf-8").to_string();
    let passphrase = "a long custodian passphrase 9";
    let cli = Cli {
        env: vec![
            ("FLOWLINK_SERVER".into(), r.server.base.clone()),
            ("FLOWLINK_TOKEN".into(), token.clone()),
            ("FLOWLINK_ORG".into(), "acme".into()),
            ("FLOWLINK_CUSTODIAN_PASSPHRASE".into(), passphrase.into()),
        ],
    };
    let value = "ghp_CliValueNeverInArgvOrOutput_31337";
    let mut outputs = Vec::new();

    // A custodian key file: 0600, never overwritten.
    let out = cli
        .ok(
            &[
                "custodian",
                "init",
                "--key-file",
                &kf,
                "--name",
                "ci laptop",
            ],
            None,
        )
        .await;
    assert!(out.contains("registered"), "{out}");
    outputs.push(out);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&key_file)
            .expect("key file")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let run = cli
        .run(&["custodian", "init", "--key-file", &kf], None, &[])
        .await;
    assert!(
        !run.ok && run.stderr.contains("already exists"),
        "{}",
        run.stderr
    );
    let weak = dir.path().join("weak.key");
    let run = cli
        .run(
            &[
                "custodian",
                "init",
                "--key-file",
                weak.to_str().expect("utf-8"),
            ],
            None,
            &[("FLOWLINK_CUSTODIAN_PASSPHRASE", "short")],
        )
        .await;
    assert!(
        !run.ok && run.stderr.contains("shorter than"),
        "{}",
        run.stderr
    );
    assert!(!weak.exists(), "no file is left behind");

    // The key, a secret from stdin, its metadata. The key goes only to recipients a person
    // accepted: the device is new, so it is named with its fingerprint and nothing is set up.
    let dev = enroll(&r.server, &r.owner, json!({"env": "prod"})).await;
    let dev_fp = dev.boxk.public_key().fingerprint();
    let run = cli
        .run(&["key", "init", "--key-file", &kf], None, &[])
        .await;
    assert!(
        !run.ok
            && run.stderr.contains("nothing was wrapped")
            && run
                .stderr
                .contains(&format!("({}): new, key {dev_fp}", dev.recipient())),
        "{}",
        run.stderr
    );
    assert!(
        r.status().await["active_version"].is_null(),
        "nothing set up"
    );
    let run = cli
        .run(
            &[
                "key",
                "init",
                "--key-file",
                &kf,
                "--accept",
                &format!("{}=SHA256:0000000000000000", dev.recipient()),
            ],
            None,
            &[],
        )
        .await;
    assert!(
        !run.ok && run.stderr.contains("nothing was wrapped"),
        "a wrong fingerprint: {}",
        run.stderr
    );
    let run = cli
        .run(
            &[
                "key",
                "init",
                "--key-file",
                &kf,
                "--accept",
                &format!("{}={dev_fp}", dev.recipient()),
                "--accept",
                "device:no-such-device=SHA256:0123456789abcdef",
            ],
            None,
            &[],
        )
        .await;
    assert!(run.ok, "{}", run.stderr);
    assert!(
        run.stdout.contains(&format!(
            "({}, key {dev_fp}) — new, accepted and pinned",
            dev.id
        )),
        "{}",
        run.stdout
    );
    assert!(
        run.stderr
            .contains("warning: --accept device:no-such-device names no recipient"),
        "a typo is reported: {}",
        run.stderr
    );
    outputs.push(run.stdout);
    let status = r.status().await;
    assert_eq!(status["active_version"], 1);
    assert_eq!(
        status["lacking"],
        json!([]),
        "set-up wrapped to the device too"
    );
    let run = cli.run(&["put", "GITHUB_TOKEN"], Some(""), &[]).await;
    assert!(!run.ok && run.stderr.contains("empty"), "{}", run.stderr);
    let out = cli
        .ok(
            &[
                "put",
                "GITHUB_TOKEN",
                "--service",
                "git",
                "--label",
                "env=prod",
                "--description",
                "the bot",
            ],
            Some(&format!("{value}\n")),
        )
        .await;
    assert!(out.contains("GITHUB_TOKEN created"), "{out}");
    // It names the key it sealed to, as `key status` prints it: a person can pin that.
    let pin = key_fingerprint_in(&out);
    let status_text = cli.ok(&["key", "status"], None).await;
    assert!(
        status_text.contains(&format!("version 1: active (key {pin})")),
        "{status_text}"
    );
    outputs.push(out);
    let out = cli.ok(&["list"], None).await;
    assert!(out.contains("GITHUB_TOKEN\t1\t1\tgit\tenv=prod"), "{out}");
    outputs.push(out);
    let out = cli.ok(&["get-meta", "GITHUB_TOKEN"], None).await;
    assert!(
        out.contains("the bot") && out.contains("version:      1"),
        "{out}"
    );
    outputs.push(out);
    let meta: Value =
        serde_json::from_str(&cli.ok(&["--json", "get-meta", "GITHUB_TOKEN"], None).await)
            .expect("json");
    assert_eq!(meta["services"], json!(["git"]));

    // The device opens exactly the value (the trailing newline was dropped).
    let (mut p, push) = Proxy::connect(&r.server, &dev, "git").await;
    assert_eq!(
        dev_values(&dev, &r.org_id, &push),
        vec![("GITHUB_TOKEN".into(), value.into())]
    );
    let c = p.challenge().await;
    let org1 = dev.unwrap(&r.org_id, 1, &push.keys[0].wrapped);
    p.prove(&r.org_id, &c, &org1).await;

    // A new device is granted the key by the custodian.
    let dev2 = enroll(&r.server, &r.owner, json!({})).await;
    let out = cli.ok(&["key", "status"], None).await;
    assert!(
        out.contains("lacking version 1") && out.contains(&dev2.id),
        "{out}"
    );
    outputs.push(out);
    let run = cli
        .run(&["key", "grant", "--key-file", &kf], None, &[])
        .await;
    assert!(
        !run.ok && run.stderr.contains(&dev2.id) && run.stderr.contains("new"),
        "{}",
        run.stderr
    );
    let out = cli
        .ok(&["key", "grant", "--key-file", &kf, "--accept-new"], None)
        .await;
    assert!(
        out.contains(&dev2.id) && out.contains("new, accepted and pinned"),
        "{out}"
    );
    outputs.push(out);
    assert_eq!(r.status().await["lacking"], json!([]));

    // A control plane that swaps a pinned device's key for one of its own gets nothing at the
    // next rotation: the change is named, and `--accept-new` does not cover it.
    let real_key: Vec<u8> = sqlx::query_scalar("SELECT box_key FROM devices WHERE id = $1")
        .bind(&dev2.id)
        .fetch_one(r.server.store.pool())
        .await
        .expect("box key");
    let planted = OrgSecretKey::generate().public_key();
    sqlx::query("UPDATE devices SET box_key = $1 WHERE id = $2")
        .bind(planted.0.to_vec())
        .bind(&dev2.id)
        .execute(r.server.store.pool())
        .await
        .expect("plant a key");
    let run = cli
        .run(
            &["key", "rotate", "--key-file", &kf, "--accept-new"],
            None,
            &[],
        )
        .await;
    assert!(
        !run.ok
            && run.stderr.contains("key CHANGED")
            && run.stderr.contains(&planted.fingerprint())
            && run.stderr.contains(&dev2.id),
        "{}",
        run.stderr
    );
    assert_eq!(
        r.status().await["active_version"],
        1,
        "no rotation happened"
    );
    sqlx::query("UPDATE devices SET box_key = $1 WHERE id = $2")
        .bind(real_key)
        .bind(&dev2.id)
        .execute(r.server.store.pool())
        .await
        .expect("restore the key");

    // A wrong passphrase is told as such, and changes nothing.
    let run = cli
        .run(
            &["key", "rotate", "--key-file", &kf],
            None,
            &[("FLOWLINK_CUSTODIAN_PASSPHRASE", "not the passphrase at all")],
        )
        .await;
    assert!(
        !run.ok && run.stderr.contains("passphrase does not open"),
        "{}",
        run.stderr
    );
    let pass_file = dir.path().join("pass");
    std::fs::write(&pass_file, format!("{passphrase}\n")).expect("write");
    let status: Value =
        serde_json::from_str(&cli.ok(&["--json", "key", "status"], None).await).expect("json");
    assert_eq!(status["active_version"], 1);

    // A pinned key that is not the one the control plane names: nothing is sealed or sent.
    let unsent = "ghp_NeverSealedToAnotherKey_161803";
    let run = cli
        .run(
            &["rotate", "GITHUB_TOKEN"],
            Some(unsent),
            &[("FLOWLINK_ORG_KEY_FINGERPRINT", "SHA256:00000000deadbeef")],
        )
        .await;
    assert!(
        !run.ok && run.stderr.contains("nothing was sealed") && run.stderr.contains(&pin),
        "{}",
        run.stderr
    );
    outputs.push(run.stdout + &run.stderr);
    let run = cli
        .run(
            &["put", "PINNED"],
            Some(unsent),
            &[("FLOWLINK_ORG_KEY_FINGERPRINT", "SHA256:not-hex")],
        )
        .await;
    assert!(
        !run.ok && run.stderr.contains("16 to 64 hex digits"),
        "{}",
        run.stderr
    );
    assert!(!cli.ok(&["list"], None).await.contains("PINNED"));
    assert!(
        cli.ok(&["get-meta", "GITHUB_TOKEN"], None)
            .await
            .contains("version:      1"),
        "unchanged"
    );

    // A new value under the right pin, then a rotation (with the passphrase from a file); the
    // device follows.
    let rotated_value = "ghp_SecondCliValue_271828";
    let run = cli
        .run(
            &["rotate", "GITHUB_TOKEN"],
            Some(rotated_value),
            &[("FLOWLINK_ORG_KEY_FINGERPRINT", &pin)],
        )
        .await;
    assert!(run.ok, "{}", run.stderr);
    outputs.push(run.stdout);
    assert_eq!(
        dev_values(&dev, &r.org_id, &p.secrets().await),
        vec![("GITHUB_TOKEN".into(), rotated_value.into())]
    );
    let run = cli
        .run(
            &[
                "key",
                "rotate",
                "--key-file",
                &kf,
                "--passphrase-file",
                pass_file.to_str().expect("utf-8"),
            ],
            None,
            &[("FLOWLINK_CUSTODIAN_PASSPHRASE", "")],
        )
        .await;
    assert!(run.ok, "{}\n{}", run.stdout, run.stderr);
    assert!(run.stdout.contains("from version 1 to 2"), "{}", run.stdout);
    let pin2 = key_fingerprint_in(&run.stdout);
    assert_ne!(pin2, pin);
    outputs.push(run.stdout);
    // The old pin no longer seals; the new key's, printed by the rotation, does (below).
    let run = cli
        .run(
            &["rotate", "GITHUB_TOKEN"],
            Some(unsent),
            &[("FLOWLINK_ORG_KEY_FINGERPRINT", &pin)],
        )
        .await;
    assert!(
        !run.ok && run.stderr.contains("key version 2"),
        "{}",
        run.stderr
    );
    let status = r.status().await;
    assert_eq!(status["active_version"], 2);
    let push = p.secrets().await;
    let opened = dev_values(&dev, &r.org_id, &push);
    assert_eq!(opened, vec![("GITHUB_TOKEN".into(), rotated_value.into())]);
    assert!(push.secrets.iter().all(|s| s.key_version == 2));

    // Verification with a device answering: proved.
    let c2 = p.challenge().await;
    let org2 = dev.unwrap(&r.org_id, 2, &push.keys.last().expect("v2").wrapped);
    p.prove(&r.org_id, &c2, &org2).await;
    let org_id = r.org_id.clone();
    let answer = tokio::spawn(async move {
        let c = p.challenge().await;
        p.prove(&org_id, &c, &org2).await;
        p
    });
    let out = cli.ok(&["key", "verify", "--wait", "20"], None).await;
    let p = answer.await.expect("answered");
    assert!(out.contains(&format!("({}): proved", dev.id)), "{out}");
    outputs.push(out);
    drop(p);

    let run = cli
        .run(
            &["put", "PINNED"],
            Some(rotated_value),
            &[("FLOWLINK_ORG_KEY_FINGERPRINT", &pin2)],
        )
        .await;
    assert!(run.ok && run.stdout.contains(&pin2), "{}", run.stderr);
    outputs.push(run.stdout);
    outputs.push(cli.ok(&["rm", "PINNED"], None).await);

    // Removal; nothing printed anywhere ever held a value.
    outputs.push(cli.ok(&["rm", "GITHUB_TOKEN"], None).await);
    let out = cli.ok(&["list"], None).await;
    assert!(out.contains("no secrets"), "{out}");
    for o in &outputs {
        assert!(
            !o.contains(value) && !o.contains(rotated_value) && !o.contains(unsent),
            "a value was printed: {o}"
        );
    }
    let file = std::fs::read_to_string(&key_file).expect("key file");
    assert!(!file.contains(&token));
    r.server.stop().await;
}

/// The first key fingerprint (`SHA256:` and 16 hex digits) in a command's output.
fn key_fingerprint_in(out: &str) -> String {
    let at = out
        .find("SHA256:")
        .unwrap_or_else(|| panic!("no key fingerprint in {out}"));
    out[at..at + "SHA256:".len() + 16].to_string()
}

/// Two replicas on one PostgreSQL database: changes made through A reach a link held by B.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_reach_links_on_another_replica() {
    let r = rig(Backend::Postgres).await;
    let url = r.server.db.url.clone();
    let b = TestServer::start_with(Backend::Postgres, move |c| c.database_url = url).await;
    let owner_b = b.client().login("owner@acme.test", support::PASSWORD).await;
    let custodian = new_custodian(&r.owner, "c").await;
    let dev = enroll(&b, &owner_b, json!({})).await;
    let (mut on_b, push) = Proxy::connect(&b, &dev, "git").await;
    assert!(push.keys.is_empty());
    // From here on, changes reach B by notification only (not by a listener's catch-up).
    support::wait_for_link_listeners(&b.store, 2).await;

    // Set-up and a put on A: B's link gets the key, a challenge, then the secret.
    let org = r.setup(&custodian, &[&dev]).await;
    let push = on_b.secrets().await;
    assert_eq!(push.keys.len(), 1);
    let c = on_b.challenge().await;
    on_b.prove(&r.org_id, &c, &org).await;
    r.put("SHARED", 0, 1, &org, "across-replicas", json!({}))
        .await;
    let push = on_b.secrets().await;
    assert_eq!(
        dev_values(&dev, &r.org_id, &push),
        vec![("SHARED".into(), "across-replicas".into())]
    );

    // A verification started on A challenges the device on B; the answer is seen on A.
    let (status, started) = r.owner.post(&format!("{S}/key/verify"), json!({})).await;
    assert_eq!(status, 201, "{started}");
    assert_eq!(started["devices"], 1, "the device is online through B");
    let id = started["verification_id"].as_str().expect("id").to_string();
    let c = on_b.challenge().await;
    on_b.prove(&r.org_id, &c, &org).await;
    let owner = r.owner.clone();
    eventually("A sees the proof made on B", || {
        let owner = owner.clone();
        let id = id.clone();
        async move {
            let (_, v) = owner.get(&format!("{S}/key/verify/{id}")).await;
            v["devices"][0]["status"] == "proved"
        }
    })
    .await;

    // A custodian revoked on A: B's link is told the key needs rotating.
    let spare = new_custodian(&r.owner, "spare").await;
    let grant = json!({"wraps": [wrap_to(&r.org_id, 1, &spare.recipient(), &spare.key.public_key(), &org)]});
    assert_eq!(
        r.owner.post(&format!("{S}/key/1/wraps"), grant).await.0,
        200
    );
    assert_eq!(
        r.owner
            .delete(&format!("{S}/custodians/{}", spare.id))
            .await
            .0,
        204
    );
    let push = on_b.secrets().await;
    assert!(
        push.rotation_required
            .as_deref()
            .is_some_and(|w| w.contains(&spare.id)),
        "{push:?}"
    );
    b.stop().await;
    r.server.stop().await;
}

/// The CLI trusts a private CA given with --ca-file, and nothing else it was not told to.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_over_tls_with_a_ca_file() {
    let certs = tempfile::tempdir().expect("tempdir");
    let files = support::make_cert(certs.path());
    let cert = files.cert.to_str().expect("utf-8").to_string();
    let server = TestServer::start_with(Backend::Sqlite, |c| c.tls = Some(files)).await;
    assert!(server.base.starts_with("https://"));
    let owner = server.owner().await;
    let (status, body) = owner
        .post(
            &format!("{ORG}/tokens"),
            json!({"name": "cli", "scopes": ["secrets:read"]}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let cli = Cli {
        env: vec![
            ("FLOWLINK_SERVER".into(), server.base.clone()),
            (
                "FLOWLINK_TOKEN".into(),
                body["token"].as_str().expect("token").into(),
            ),
            ("FLOWLINK_ORG".into(), "acme".into()),
        ],
    };
    let out = cli.ok(&["--ca-file", &cert, "key", "status"], None).await;
    assert!(out.contains("no secrets key yet"), "{out}");
    let run = cli.run(&["key", "status"], None, &[]).await;
    assert!(!run.ok, "an unknown CA is not trusted: {}", run.stdout);
    assert!(
        run.stderr.contains("cannot reach the control plane"),
        "{}",
        run.stderr
    );
    // A token without the permission is told which one it lacks.
    let run = cli.run(&["--ca-file", &cert, "rm", "X"], None, &[]).await;
    assert!(
        !run.ok && run.stderr.contains("forbidden"),
        "{}",
        run.stderr
    );
    server.stop().await;
}

both!(
    key_setup_with_custodian_and_device_wraps,
    secrets_are_metadata_only,
    seals_are_bound_to_name_and_version,
    stale_versions_conflict,
    rotation_is_complete_or_refused,
    revocation_requires_rotation,
    link_pushes_the_scoped_set_and_repushes,
    challenges_confirm_and_retire,
    no_plaintext_in_the_database,
    cli_end_to_end,
);
