//! The link to the control plane, through the real binary, against a fake control plane written
//! here: an Axum server on 127.0.0.1:0 that plays the control plane's part of
//! `flowlink_proto::link` (enrolment, hello/challenge/auth, policy pushes, audit batches and
//! acknowledgements, heartbeats, revocation).

mod support;

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::extract::ws::{Message as WsMessage, WebSocket, WebSocketUpgrade};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use ed25519_dalek::{Signature, SigningKey, VerifyingKey};
use flowlink_proto::bundle::{
    BUNDLE_SCHEMA, BundleLayer, BundleSelector, PolicyBundle, SignedBundle, key_id, sha256_hex,
};
use flowlink_proto::link::{
    AuditAck, AuditEnvelope, Challenge, ControlMessage, EnrollRequest, EnrollResponse, Heartbeat,
    PolicyPush, ProxyMessage, Revoked, Welcome, auth_message,
};
use serde_json::{Value, json};
use support::*;
use tokio::sync::mpsc;

const TOKEN: &str = "fle_test_token";
const ORG: &str = "org-1";
const DEVICE: &str = "dev-1";
const SERVICE: &str = "scripted";

const ALLOW_ALL: &str = "version = 1\ndefault_action = \"allow\"\n";
const NO_ECHO: &str = r#"version = 1
default_action = "allow"

[[rules]]
id = "cp-no-echo"
tool = "echo"
action = "block"
message = "the control plane forbids echo"
"#;

// ---- the fake control plane ----------------------------------------------------------------------

enum ToLink {
    Send(ControlMessage),
    Drop,
}

struct FakeState {
    url: String,
    org_key: SigningKey,
    device_key: Mutex<Option<VerifyingKey>>,
    /// The X25519 key (base64) the last enrolment registered.
    box_key: Mutex<Option<String>>,
    enrollments: AtomicUsize,
    bundle: Mutex<Option<SignedBundle>>,
    issued: AtomicI64,
    ack: AtomicBool,
    revoke: AtomicBool,
    max_batch: u32,
    heartbeat_secs: u64,
    connections: AtomicUsize,
    auth_ok: AtomicUsize,
    auth_failed: AtomicUsize,
    batches: Mutex<Vec<usize>>,
    events: Mutex<Vec<AuditEnvelope>>,
    heartbeats: Mutex<Vec<Heartbeat>>,
    links: Mutex<Vec<mpsc::UnboundedSender<ToLink>>>,
}

struct Fake {
    state: Arc<FakeState>,
    rt: Option<tokio::runtime::Runtime>,
}

impl Drop for Fake {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

impl Fake {
    fn start(max_batch: u32) -> Fake {
        Self::start_on("127.0.0.1:0".parse().expect("addr"), max_batch, None)
    }

    /// Starts on `addr` (port 0: any), sharing the enrolled device key of `previous` if given.
    fn start_on(addr: SocketAddr, max_batch: u32, previous: Option<&Fake>) -> Fake {
        Self::start_with(addr, max_batch, previous, None)
    }

    /// Serves HTTPS/WSS on `localhost` with the certificate and key in `tls` (PEM files).
    fn start_tls(max_batch: u32, tls: (&Path, &Path)) -> Fake {
        Self::start_with(
            "127.0.0.1:0".parse().expect("addr"),
            max_batch,
            None,
            Some(tls),
        )
    }

    fn start_with(
        addr: SocketAddr,
        max_batch: u32,
        previous: Option<&Fake>,
        tls: Option<(&Path, &Path)>,
    ) -> Fake {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let listener = rt
            .block_on(tokio::net::TcpListener::bind(addr))
            .expect("bind");
        let local = listener.local_addr().expect("addr");
        let state = Arc::new(FakeState {
            url: match tls {
                Some(_) => format!("https://localhost:{}", local.port()),
                None => format!("http://{local}"),
            },
            org_key: previous.map_or_else(
                || SigningKey::from_bytes(&[42; 32]),
                |p| p.state.org_key.clone(),
            ),
            device_key: Mutex::new(previous.and_then(|p| *p.state.device_key.lock().unwrap())),
            box_key: Mutex::new(None),
            enrollments: AtomicUsize::new(0),
            bundle: Mutex::new(None),
            issued: AtomicI64::new(1_767_225_600_000_000),
            ack: AtomicBool::new(true),
            revoke: AtomicBool::new(false),
            max_batch,
            heartbeat_secs: 1,
            connections: AtomicUsize::new(0),
            auth_ok: AtomicUsize::new(0),
            auth_failed: AtomicUsize::new(0),
            batches: Mutex::new(Vec::new()),
            events: Mutex::new(Vec::new()),
            heartbeats: Mutex::new(Vec::new()),
            links: Mutex::new(Vec::new()),
        });
        let app = Router::new()
            .route("/api/v1/enroll", post(enroll))
            .route("/api/v1/link", get(link))
            .with_state(Arc::clone(&state));
        match tls {
            None => {
                rt.spawn(async move {
                    let _ = axum::serve(listener, app).await;
                });
            }
            Some((cert, key)) => {
                use rustls_pki_types::pem::PemObject;
                let certs: Vec<_> = rustls_pki_types::CertificateDer::pem_file_iter(cert)
                    .expect("cert")
                    .collect::<Result<_, _>>()
                    .expect("certs");
                let key = rustls_pki_types::PrivateKeyDer::from_pem_file(key).expect("key");
                let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
                let mut config = rustls::ServerConfig::builder_with_provider(provider)
                    .with_safe_default_protocol_versions()
                    .expect("versions")
                    .with_no_client_auth()
                    .with_single_cert(certs, key)
                    .expect("server config");
                config.alpn_protocols = vec![b"http/1.1".to_vec()];
                let config = axum_server::tls_rustls::RustlsConfig::from_config(Arc::new(config));
                let std_listener = rt.block_on(async { listener.into_std() }).expect("std");
                let server = rt
                    .block_on(async { axum_server::from_tcp_rustls(std_listener, config) })
                    .expect("tls server");
                rt.spawn(async move {
                    let _ = server.serve(app.into_make_service()).await;
                });
            }
        }
        Fake {
            state,
            rt: Some(rt),
        }
    }

    fn url(&self) -> &str {
        &self.state.url
    }

    fn addr(&self) -> SocketAddr {
        self.state
            .url
            .trim_start_matches("http://")
            .parse()
            .expect("addr")
    }

    /// A bundle of `body` for the proxy's service, signed with `key` (the org's by default).
    fn bundle(&self, body: &str, key: Option<&SigningKey>) -> SignedBundle {
        let key = key.unwrap_or(&self.state.org_key);
        let issued = self.state.issued.fetch_add(1_000_000, Ordering::SeqCst);
        let b = PolicyBundle {
            schema: BUNDLE_SCHEMA,
            org_id: ORG.into(),
            key_id: key_id(&key.verifying_key()),
            issued_at: issued,
            selector: BundleSelector {
                service: Some(SERVICE.into()),
                labels: Default::default(),
            },
            layers: vec![BundleLayer::new("org", issued / 1_000_000, body)],
        };
        SignedBundle::sign(&b, key).expect("sign")
    }

    /// The bundle every new link gets after its welcome.
    fn set_bundle(&self, signed: SignedBundle) {
        *self.state.bundle.lock().unwrap() = Some(signed);
    }

    fn to_links(&self, make: impl Fn() -> ToLink) {
        self.state
            .links
            .lock()
            .unwrap()
            .retain(|tx| tx.send(make()).is_ok());
    }

    fn push(&self, signed: SignedBundle) {
        self.to_links(|| {
            ToLink::Send(ControlMessage::Policy(PolicyPush {
                bundle: signed.clone(),
            }))
        });
    }

    fn drop_links(&self) {
        self.to_links(|| ToLink::Drop);
    }

    /// Acknowledges every event received so far, on every link.
    fn ack_all(&self) {
        let ids: Vec<String> = self
            .state
            .events
            .lock()
            .unwrap()
            .iter()
            .map(|e| e.id.clone())
            .collect();
        self.to_links(|| ToLink::Send(ControlMessage::AuditAck(AuditAck { ids: ids.clone() })));
    }

    fn events(&self) -> Vec<AuditEnvelope> {
        self.state.events.lock().unwrap().clone()
    }

    /// Ids of the tool calls received (the records' ids), each once.
    fn call_ids(&self) -> HashSet<String> {
        self.events()
            .iter()
            .filter(|e| e.kind == "tool_call")
            .filter_map(|e| e.record["id"].as_str().map(str::to_owned))
            .collect()
    }

    fn wait(&self, what: &str, cond: impl Fn(&FakeState) -> bool) {
        wait_for(what, || cond(&self.state));
    }
}

fn wait_for(what: &str, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + TIMEOUT;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(25));
    }
}

async fn enroll(State(st): State<Arc<FakeState>>, Json(req): Json<EnrollRequest>) -> Response {
    if req.token != TOKEN {
        return (
            StatusCode::UNAUTHORIZED,
            Json(json!({"error": {"code": "invalid_token", "message": "this enrolment token is unknown, used up or expired"}})),
        )
            .into_response();
    }
    let Ok(bytes) = STANDARD.decode(&req.signing_key) else {
        return StatusCode::BAD_REQUEST.into_response();
    };
    let Ok(arr) = <[u8; 32]>::try_from(bytes.as_slice()) else {
        return StatusCode::BAD_REQUEST.into_response();
    };
    let Ok(key) = VerifyingKey::from_bytes(&arr) else {
        return StatusCode::BAD_REQUEST.into_response();
    };
    assert_eq!(
        STANDARD.decode(&req.box_key).map(|b| b.len()).ok(),
        Some(32)
    );
    *st.device_key.lock().unwrap() = Some(key);
    *st.box_key.lock().unwrap() = Some(req.box_key.clone());
    st.enrollments.fetch_add(1, Ordering::SeqCst);
    let mut labels = req.labels.clone();
    labels.insert("team".into(), "platform".into());
    Json(EnrollResponse {
        org_id: ORG.into(),
        org_slug: "acme".into(),
        device_id: DEVICE.into(),
        labels,
        policy_key: STANDARD.encode(st.org_key.verifying_key().as_bytes()),
        policy_key_id: key_id(&st.org_key.verifying_key()),
        link_url: format!("{}/api/v1/link", st.url.replace("http://", "ws://")),
    })
    .into_response()
}

async fn link(ws: WebSocketUpgrade, State(st): State<Arc<FakeState>>) -> Response {
    ws.on_upgrade(move |socket| session(socket, st))
}

async fn session(mut socket: WebSocket, st: Arc<FakeState>) {
    st.connections.fetch_add(1, Ordering::SeqCst);
    let Some(ProxyMessage::Hello(hello)) = recv(&mut socket).await else {
        return;
    };
    assert_eq!(hello.device_id, DEVICE);
    assert_eq!(hello.service, SERVICE);
    let nonce = format!("nonce-{}", st.connections.load(Ordering::SeqCst));
    // A message type from a newer control plane first: it must be ignored.
    let _ = socket
        .send(WsMessage::Text(
            r#"{"type":"shiny_new_thing","x":1}"#.into(),
        ))
        .await;
    if !send(
        &mut socket,
        &ControlMessage::Challenge(Challenge {
            nonce: nonce.clone(),
        }),
    )
    .await
    {
        return;
    }
    let Some(ProxyMessage::Auth(proof)) = recv(&mut socket).await else {
        return;
    };
    let key = *st.device_key.lock().unwrap();
    let verified = key.is_some_and(|k| {
        STANDARD
            .decode(&proof.signature)
            .ok()
            .and_then(|b| <[u8; 64]>::try_from(b.as_slice()).ok())
            .is_some_and(|sig| {
                k.verify_strict(
                    &auth_message(DEVICE, &nonce, &st.url),
                    &Signature::from_bytes(&sig),
                )
                .is_ok()
            })
    });
    if !verified {
        st.auth_failed.fetch_add(1, Ordering::SeqCst);
        let _ = send(
            &mut socket,
            &ControlMessage::Error(flowlink_proto::link::LinkError {
                code: "bad_signature".into(),
                message: "the signature does not verify".into(),
                fatal: true,
            }),
        )
        .await;
        return;
    }
    st.auth_ok.fetch_add(1, Ordering::SeqCst);
    if st.revoke.load(Ordering::SeqCst) {
        let _ = send(
            &mut socket,
            &ControlMessage::Revoked(Revoked {
                reason: "revoked by admin@example.com".into(),
            }),
        )
        .await;
        return;
    }
    if !send(
        &mut socket,
        &ControlMessage::Welcome(Welcome {
            org_id: ORG.into(),
            device_id: DEVICE.into(),
            heartbeat_secs: st.heartbeat_secs,
            max_batch: st.max_batch,
        }),
    )
    .await
    {
        return;
    }
    let bundle = st.bundle.lock().unwrap().clone();
    if let Some(b) = bundle
        && !send(
            &mut socket,
            &ControlMessage::Policy(PolicyPush { bundle: b }),
        )
        .await
    {
        return;
    }
    let (tx, mut rx) = mpsc::unbounded_channel();
    st.links.lock().unwrap().push(tx);
    loop {
        tokio::select! {
            msg = recv(&mut socket) => {
                let Some(msg) = msg else { return };
                match msg {
                    ProxyMessage::AuditBatch(b) => {
                        assert!(b.events.len() <= st.max_batch as usize, "batch over max_batch");
                        st.batches.lock().unwrap().push(b.events.len());
                        let ids: Vec<String> = b.events.iter().map(|e| e.id.clone()).collect();
                        st.events.lock().unwrap().extend(b.events);
                        if st.ack.load(Ordering::SeqCst)
                            && !send(&mut socket, &ControlMessage::AuditAck(AuditAck { ids })).await
                        {
                            return;
                        }
                    }
                    ProxyMessage::Heartbeat(h) => st.heartbeats.lock().unwrap().push(h),
                    _ => {}
                }
            }
            cmd = rx.recv() => match cmd {
                Some(ToLink::Send(m)) => {
                    if !send(&mut socket, &m).await {
                        return;
                    }
                }
                Some(ToLink::Drop) | None => return,
            }
        }
    }
}

// ---- driving the proxy ------------------------------------------------------------------------------

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_flowlink-proxy"))
}

/// Runs `flowlink-proxy <args>` with `env`; returns (success, stdout, stderr).
fn run(args: &[&str], env: &[(&str, &str)]) -> (bool, String, String) {
    let out = bin()
        .args(args)
        .env("FLOWLINK_LOG", "warn")
        .envs(env.iter().copied())
        .output()
        .expect("run flowlink-proxy");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

const NO_KEYRING: &[(&str, &str)] = &[("FLOWLINK_KEYRING", "off")];

fn enrol(fake: &Fake, data: &Path) {
    let (ok, out, err) = run(
        &[
            "enroll",
            "--server",
            fake.url(),
            "--token",
            TOKEN,
            "--name",
            "laptop",
            "--label",
            "env=dev",
            "--data-dir",
            &data.display().to_string(),
        ],
        NO_KEYRING,
    );
    assert!(ok, "enroll failed:\n{out}\n{err}");
}

fn status(data: &Path) -> Value {
    let (ok, out, err) = run(
        &[
            "status",
            "--json",
            "--data-dir",
            &data.display().to_string(),
        ],
        NO_KEYRING,
    );
    assert!(ok, "status failed: {err}");
    serde_json::from_str(&out).expect("status --json is JSON")
}

fn env() -> HashMap<&'static str, String> {
    HashMap::from([
        ("FLOWLINK_KEYRING", "off".to_owned()),
        ("FLOWLINK_LINK_BACKOFF_CAP_MS", "1000".to_owned()),
    ])
}

/// Starts the proxy in `dir` (its data in `dir/data`) with extra flags, and initialises it.
fn start_proxy(dir: tempfile::TempDir, flags: &[&str]) -> Proxy {
    let mut all = vec!["--name", SERVICE];
    all.extend_from_slice(flags);
    let mut p = Proxy::start_with_env(dir, &all, &scripted_server(), &env());
    p.initialize(json!({}));
    p
}

fn enrolled_dir(fake: &Fake) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    enrol(fake, &dir.path().join("data"));
    dir
}

fn is_refusal(r: &Value) -> bool {
    r["result"]["isError"] == true
}

fn connected(data: &Path) -> bool {
    status(data)["links"]
        .as_array()
        .is_some_and(|l| l.iter().any(|l| l["state"] == "connected"))
}

fn outbox_depth(data: &Path) -> u64 {
    status(data)["outbox_depth"].as_u64().unwrap_or(u64::MAX)
}

fn kill9(p: &mut Proxy) {
    let pid = p.child.id();
    // SIGKILL: no clean-up of any kind.
    let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
    let _ = p.child.wait();
}

fn take_dir(p: Proxy) -> tempfile::TempDir {
    let Proxy { dir, .. } = p;
    dir
}

// ---- enrolment and status ---------------------------------------------------------------------------

#[test]
fn enrol_stores_an_encrypted_credential_and_status_shows_it() {
    let fake = Fake::start(100);
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let d = data.display().to_string();

    // Not enrolled yet.
    let s = status(&data);
    assert_eq!(s["enrolled"], false);

    // A wrong token says what to do.
    let (ok, _, err) = run(
        &[
            "enroll",
            "--server",
            fake.url(),
            "--token",
            "fle_wrong",
            "--data-dir",
            &d,
        ],
        NO_KEYRING,
    );
    assert!(!ok);
    assert!(err.contains("refused the enrolment token"), "{err}");
    assert!(err.contains("ask an admin for a new token"), "{err}");

    enrol(&fake, &data);
    let file = data.join("credential.enc");
    let meta = std::fs::metadata(&file).expect("credential file");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    let raw = std::fs::read(&file).expect("read");
    for plain in [DEVICE.as_bytes(), ORG.as_bytes(), b"acme".as_slice()] {
        assert!(
            !raw.windows(plain.len()).any(|w| w == plain),
            "the credential file must not hold {:?} in clear",
            String::from_utf8_lossy(plain)
        );
    }

    let s = status(&data);
    assert_eq!(s["enrolled"], true, "{s}");
    assert_eq!(s["device"]["id"], DEVICE);
    assert_eq!(s["device"]["name"], "laptop");
    assert_eq!(s["device"]["labels"]["env"], "dev");
    assert_eq!(s["device"]["labels"]["team"], "platform");
    assert_eq!(s["device"]["credential"], "file");
    assert_eq!(s["org"]["slug"], "acme");
    assert_eq!(s["server"], fake.url());
    assert!(s["policies"].as_array().is_some_and(Vec::is_empty));
    // The device key's fingerprint, as a custodian's CLI computes it from the key the control
    // plane was given: what the custodian compares before wrapping the org key to it.
    let registered = fake.state.box_key.lock().unwrap().clone().expect("box key");
    let fp = format!(
        "SHA256:{}",
        flowlink_proto::sealed::key_fingerprint_hex(&registered)
    );
    assert_eq!(s["device"]["box_key_fingerprint"], fp.as_str(), "{s}");
    let (ok, text, _) = run(&["status", "--data-dir", &d], NO_KEYRING);
    assert!(ok);
    assert!(text.contains(&format!("device key:   {fp}")), "{text}");
    assert!(text.contains("organisation: acme (org-1)"), "{text}");
    assert!(text.contains("no proxy is running"), "{text}");

    // Enrolling again needs --force.
    let (ok, _, err) = run(
        &[
            "enroll",
            "--server",
            fake.url(),
            "--token",
            TOKEN,
            "--data-dir",
            &d,
        ],
        NO_KEYRING,
    );
    assert!(!ok);
    assert!(
        err.contains("already enrolled") && err.contains("--force"),
        "{err}"
    );
    let (ok, _, err) = run(
        &[
            "enroll",
            "--server",
            fake.url(),
            "--token",
            TOKEN,
            "--data-dir",
            &d,
            "--force",
        ],
        NO_KEYRING,
    );
    assert!(ok, "{err}");
    assert_eq!(fake.state.enrollments.load(Ordering::SeqCst), 2);
}

#[test]
fn enrol_uses_the_keyring_where_the_session_keyring_works() {
    let fake = Fake::start(100);
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let d = data.display().to_string();
    let (ok, out, err) = run(
        &[
            "enroll",
            "--server",
            fake.url(),
            "--token",
            TOKEN,
            "--data-dir",
            &d,
        ],
        &[],
    );
    assert!(ok, "{out}\n{err}");
    eprintln!("enroll said: {out}");
    // The encrypted file is always written; the keyring when keyutils works here.
    assert!(data.join("credential.enc").exists());
    let (ok, json_out, _) = run(&["status", "--json", "--data-dir", &d], &[]);
    assert!(ok);
    let s: Value = serde_json::from_str(&json_out).expect("json");
    assert_eq!(s["device"]["id"], DEVICE);
    if out.contains("OS keyring and") {
        assert_eq!(s["device"]["credential"], "keyring", "{s}");
        // Clean up the kernel keyring: --force replaces (and first deletes) the entry.
        let _ = run(
            &[
                "enroll",
                "--server",
                fake.url(),
                "--token",
                TOKEN,
                "--data-dir",
                &d,
                "--force",
            ],
            &[],
        );
    } else {
        assert!(out.contains("OS keyring is not available here"), "{out}");
        assert_eq!(s["device"]["credential"], "file", "{s}");
    }
}

#[test]
fn unreachable_servers_and_plain_ws_to_other_hosts_are_refused_with_advice() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path().join("data").display().to_string();
    // Nothing listens on port 1 of this machine.
    let (ok, _, err) = run(
        &[
            "enroll",
            "--server",
            "http://127.0.0.1:1",
            "--token",
            TOKEN,
            "--data-dir",
            &d,
        ],
        NO_KEYRING,
    );
    assert!(!ok);
    assert!(err.contains("cannot reach the control plane"), "{err}");
    // Plain http:// (and so ws://) to a host that is not this machine: refused before any
    // connection is made (`.invalid` never resolves anyway).
    let (ok, _, err) = run(
        &[
            "enroll",
            "--server",
            "http://flowlink.invalid",
            "--token",
            TOKEN,
            "--data-dir",
            &d,
        ],
        NO_KEYRING,
    );
    assert!(!ok);
    assert!(err.contains("refusing the unencrypted"), "{err}");
    assert!(err.contains("--allow-insecure-ws"), "{err}");
    assert!(!dir.path().join("data/credential.enc").exists());
}

// ---- the link and policy sync -----------------------------------------------------------------------

#[test]
fn the_link_authenticates_and_pushed_bundles_apply_without_restart() {
    let fake = Fake::start(100);
    fake.set_bundle(fake.bundle(ALLOW_ALL, None));
    let dir = enrolled_dir(&fake);
    let data = dir.path().join("data");
    let mut p = start_proxy(dir, &[]);
    fake.wait("an authenticated link", |s| {
        s.auth_ok.load(Ordering::SeqCst) >= 1
    });
    assert_eq!(fake.state.auth_failed.load(Ordering::SeqCst), 0);
    p.wait_stderr("applied policy bundle");
    wait_for("status to show the link connected", || connected(&data));

    let r = p.call(json!(1), "echo", json!({"text": "hello"}));
    assert_eq!(text_of(&r), "hello", "{r}");

    // A new policy arrives: echo is blocked by the running proxy, no restart.
    let blocking = fake.bundle(NO_ECHO, None);
    let blocking_id = sha256_hex(blocking.payload.as_bytes());
    fake.push(blocking);
    wait_for("the new bundle to be applied", || {
        p.stderr().matches("applied policy bundle").count() >= 2
    });
    let r = p.call(json!(2), "echo", json!({"text": "hello"}));
    assert!(is_refusal(&r), "{r}");
    assert!(
        text_of(&r).contains("the control plane forbids echo"),
        "{r}"
    );

    // A bundle signed by another key is refused, and the policy in force stays.
    let rogue = SigningKey::from_bytes(&[7; 32]);
    fake.push(fake.bundle(ALLOW_ALL, Some(&rogue)));
    p.wait_stderr("refused a policy bundle");
    let r = p.call(json!(3), "echo", json!({"text": "hello"}));
    assert!(
        is_refusal(&r),
        "the rogue bundle must not have been applied: {r}"
    );

    // Heartbeats carry the server's state and the bundle in force.
    fake.wait("a heartbeat naming the new bundle", |s| {
        s.heartbeats
            .lock()
            .unwrap()
            .iter()
            .any(|h| h.policy.as_deref() == Some(blocking_id.as_str()))
    });
    let hb = fake
        .state
        .heartbeats
        .lock()
        .unwrap()
        .last()
        .cloned()
        .expect("heartbeat");
    assert_eq!(hb.servers.len(), 1);
    assert_eq!(hb.servers[0].service, SERVICE);
    assert_eq!(hb.servers[0].state, flowlink_proto::link::ServerState::Up);

    // Status names the bundle and its layers.
    let s = status(&data);
    assert_eq!(s["policies"][0]["bundle_id"], blocking_id.as_str(), "{s}");
    assert_eq!(s["policies"][0]["verified"], true);
    assert_eq!(s["links"][0]["bundle_id"], blocking_id.as_str());

    p.close_stdin();
    p.wait();
    // Records say which bundle decided, online.
    let audit = audit_records(&data);
    let refused = audit
        .iter()
        .find(|r| r["verdict"] == "block")
        .expect("a block");
    assert_eq!(refused["policy_source"], "bundle", "{refused}");
    assert_eq!(refused["policy_bundle"], blocking_id.as_str());
}

#[test]
fn offline_start_decides_on_the_cached_bundle_and_says_so() {
    let fake = Fake::start(100);
    fake.set_bundle(fake.bundle(NO_ECHO, None));
    let dir = enrolled_dir(&fake);
    let mut p = start_proxy(dir, &[]);
    p.wait_stderr("applied policy bundle");
    p.close_stdin();
    p.wait();
    let dir = take_dir(p);
    let data = dir.path().join("data");
    drop(fake); // the control plane is gone

    let mut p = start_proxy(dir, &[]);
    let r = p.call(json!(1), "echo", json!({"text": "hello"}));
    assert!(
        text_of(&r).contains("the control plane forbids echo"),
        "{r}"
    );
    let r = p.call(json!(2), "whoami", json!({}));
    assert!(!is_refusal(&r), "{r}");
    wait_for("status to show the link offline", || {
        status(&data)["links"].as_array().is_some_and(|l| {
            l.iter()
                .any(|l| l["state"] == "offline" && !l["last_error"].is_null())
        })
    });
    p.close_stdin();
    p.wait();
    let audit = audit_records(&data);
    let offline: Vec<&Value> = audit
        .iter()
        .filter(|r| r["tool"] == "echo" || r["tool"] == "whoami")
        .collect();
    assert!(offline.len() >= 2);
    for r in offline.iter().rev().take(2) {
        assert_eq!(r["policy_source"], "bundle_offline", "{r}");
        assert!(r["policy_bundle"].is_string());
    }
}

#[test]
fn an_enrolled_device_refuses_a_local_policy_file_and_fails_closed_without_a_policy() {
    let fake = Fake::start(100);
    let dir = enrolled_dir(&fake);
    let data = dir.path().join("data");
    let policy = write_policy(dir.path(), ALLOW_ALL);
    let (ok, _, err) = run(
        &[
            "--data-dir",
            &data.display().to_string(),
            "--policy",
            &policy.display().to_string(),
            "--",
            "true",
        ],
        NO_KEYRING,
    );
    assert!(!ok);
    assert!(
        err.contains("must not override the organisation's security policy"),
        "{err}"
    );

    // No bundle ever received (the fake has none): every call is refused, with the reason.
    let mut p = start_proxy(dir, &[]);
    fake.wait("an authenticated link", |s| {
        s.auth_ok.load(Ordering::SeqCst) >= 1
    });
    let r = p.call(json!(1), "whoami", json!({}));
    assert!(is_refusal(&r), "{r}");
    assert!(
        text_of(&r).contains("has not received its organisation's policy"),
        "{r}"
    );
    p.close_stdin();
    p.wait();
}

// ---- audit shipping ---------------------------------------------------------------------------------

#[test]
fn audit_events_ship_in_batches_and_are_deleted_only_after_the_ack() {
    let fake = Fake::start(3);
    fake.set_bundle(fake.bundle(ALLOW_ALL, None));
    fake.state.ack.store(false, Ordering::SeqCst);
    let dir = enrolled_dir(&fake);
    let data = dir.path().join("data");
    let mut p = start_proxy(dir, &[]);
    p.wait_stderr("applied policy bundle");
    let mut ids = Vec::new();
    for i in 0..7 {
        let r = p.call(json!(i), "echo", json!({"text": format!("n{i}")}));
        assert!(!is_refusal(&r), "{r}");
    }
    fake.wait("batches at the fake", |s| {
        s.batches.lock().unwrap().len() >= 2
    });
    std::thread::sleep(Duration::from_millis(500));
    // A bounded window travels without acknowledgement (4 batches' worth of events).
    let unacked = fake.events().len();
    assert!(unacked <= 4 * 3 + 2, "{unacked} events in flight");
    assert!(
        fake.state.batches.lock().unwrap().iter().all(|n| *n <= 3),
        "batches must respect max_batch"
    );
    // Nothing acknowledged: nothing deleted.
    let depth = outbox_depth(&data);
    assert!(depth >= 7, "outbox depth {depth}");
    for r in audit_records(&data) {
        ids.push(r["id"].as_str().unwrap_or_default().to_owned());
    }
    // Acknowledge: the proxy deletes.
    fake.state.ack.store(true, Ordering::SeqCst);
    fake.ack_all();
    wait_for("the outbox to empty after the ack", || {
        fake.ack_all();
        outbox_depth(&data) == 0
    });
    let got = fake.call_ids();
    for id in &ids {
        assert!(
            got.contains(id),
            "call {id} never reached the control plane"
        );
    }
    p.close_stdin();
    p.wait();
}

#[test]
fn a_dropped_socket_is_reconnected_and_unacknowledged_events_are_sent_again() {
    let fake = Fake::start(100);
    fake.set_bundle(fake.bundle(ALLOW_ALL, None));
    fake.state.ack.store(false, Ordering::SeqCst);
    let dir = enrolled_dir(&fake);
    let data = dir.path().join("data");
    let mut p = start_proxy(dir, &[]);
    p.wait_stderr("applied policy bundle");
    for i in 0..3 {
        p.call(json!(i), "echo", json!({"text": "x"}));
    }
    fake.wait("3 calls at the fake", |_| fake.call_ids().len() >= 3);
    // The first record of each call (its event id is the call's id; later snapshots of a call
    // or a session may be superseded by newer ones before they are sent again).
    let first: HashSet<String> = fake
        .events()
        .iter()
        .filter(|e| e.kind == "tool_call" && e.record["id"].as_str() == Some(e.id.as_str()))
        .map(|e| e.id.clone())
        .collect();
    assert!(first.len() >= 3);
    fake.state.ack.store(true, Ordering::SeqCst);
    fake.drop_links();
    fake.wait("a second connection", |s| {
        s.auth_ok.load(Ordering::SeqCst) >= 2
    });
    // Every event of the first connection arrives again (the control plane deduplicates).
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let events = fake.events();
        let missing: Vec<(String, String, usize)> = first
            .iter()
            .map(|id| {
                let n = events.iter().filter(|e| &e.id == id).count();
                let kind = events
                    .iter()
                    .find(|e| &e.id == id)
                    .map(|e| e.kind.clone())
                    .unwrap_or_default();
                (id.clone(), kind, n)
            })
            .filter(|(_, _, n)| *n < 2)
            .collect();
        if missing.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not sent again: {missing:?}\nall: {:?}\nstderr: {}",
            events.iter().map(|e| (&e.id, &e.kind)).collect::<Vec<_>>(),
            p.stderr()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    wait_for("the outbox to empty", || outbox_depth(&data) == 0);
    p.close_stdin();
    p.wait();
}

#[test]
fn kill_9_mid_stream_then_restart_loses_nothing() {
    let fake = Fake::start(50);
    fake.set_bundle(fake.bundle(ALLOW_ALL, None));
    fake.state.ack.store(false, Ordering::SeqCst);
    let dir = enrolled_dir(&fake);
    let data = dir.path().join("data");
    let mut p = start_proxy(dir, &[]);
    p.wait_stderr("applied policy bundle");
    for i in 0..40 {
        p.send(json!({"jsonrpc":"2.0","id":i,"method":"tools/call",
                      "params":{"name":"echo","arguments":{"text":format!("m{i}")}}}));
    }
    // Some answers are in; kill -9 while calls are still being relayed and shipped.
    p.response(json!(5));
    kill9(&mut p);
    let dir = take_dir(p);

    fake.state.ack.store(true, Ordering::SeqCst);
    let mut p = start_proxy(dir, &[]);
    let recorded: Vec<String> = audit_records(&data)
        .iter()
        .filter_map(|r| r["id"].as_str().map(str::to_owned))
        .collect();
    assert!(recorded.len() >= 6, "{} calls recorded", recorded.len());
    wait_for("every recorded call at the control plane", || {
        let got = fake.call_ids();
        recorded.iter().all(|id| got.contains(id))
    });
    wait_for("the outbox to empty", || {
        fake.ack_all();
        outbox_depth(&data) == 0
    });
    p.close_stdin();
    p.wait();
}

#[test]
fn a_full_outbox_blocks_new_calls_by_default() {
    let fake = Fake::start(100);
    fake.set_bundle(fake.bundle(ALLOW_ALL, None));
    fake.state.ack.store(false, Ordering::SeqCst);
    let dir = enrolled_dir(&fake);
    let mut p = start_proxy(dir, &["--outbox-max-events", "4"]);
    p.wait_stderr("applied policy bundle");
    let mut refused = None;
    for i in 0..10 {
        let r = p.call(json!(i), "echo", json!({"text": "x"}));
        if r.get("error").is_some() {
            refused = Some(r);
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let r = refused.expect("a call refused once the outbox is full");
    assert_eq!(r["error"]["code"], -32004, "{r}");
    let msg = r["error"]["message"].as_str().unwrap_or_default();
    assert!(msg.contains("audit outbox is full"), "{msg}");
    assert!(msg.contains("control plane"), "{msg}");
    // Acknowledgements make room again.
    fake.state.ack.store(true, Ordering::SeqCst);
    let data = p.data_dir();
    wait_for("room in the outbox", || {
        fake.ack_all();
        outbox_depth(&data) < 4
    });
    std::thread::sleep(Duration::from_millis(300));
    let r = p.call(json!(100), "echo", json!({"text": "again"}));
    assert_eq!(text_of(&r), "again", "{r}");
    p.close_stdin();
    p.wait();
}

#[test]
fn drop_oldest_keeps_calls_going_and_records_the_overflow() {
    let fake = Fake::start(100);
    fake.set_bundle(fake.bundle(ALLOW_ALL, None));
    fake.state.ack.store(false, Ordering::SeqCst);
    let dir = enrolled_dir(&fake);
    let data = dir.path().join("data");
    let mut p = start_proxy(
        dir,
        &[
            "--outbox-max-events",
            "5",
            "--outbox-when-full",
            "drop-oldest",
        ],
    );
    p.wait_stderr("applied policy bundle");
    for i in 0..15 {
        let r = p.call(json!(i), "echo", json!({"text": "x"}));
        assert_eq!(text_of(&r), "x", "{r}");
    }
    fake.wait("an outbox_overflow event", |_| {
        fake.events().iter().any(|e| e.kind == "outbox_overflow")
    });
    let overflow = fake
        .events()
        .into_iter()
        .find(|e| e.kind == "outbox_overflow")
        .expect("overflow");
    assert!(
        overflow.record["dropped"].as_u64().unwrap_or(0) >= 1,
        "{overflow:?}"
    );
    assert!(
        overflow.record["message"]
            .as_str()
            .unwrap_or_default()
            .contains("dropped")
    );
    assert!(outbox_depth(&data) <= 5);
    p.close_stdin();
    p.wait();
}

// ---- TLS with a private CA -------------------------------------------------------------------------

#[test]
fn wss_with_a_private_ca_given_at_enrolment() {
    let certs = tempfile::tempdir().expect("tempdir");
    let (ca, cert, key) = private_ca(certs.path());
    let fake = Fake::start_tls(100, (&cert, &key));
    fake.set_bundle(fake.bundle(NO_ECHO, None));
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path().join("data").display().to_string();

    // Without the CA the certificate is not trusted.
    let (ok, _, err) = run(
        &[
            "enroll",
            "--server",
            fake.url(),
            "--token",
            TOKEN,
            "--data-dir",
            &d,
        ],
        NO_KEYRING,
    );
    assert!(!ok);
    assert!(err.contains("cannot reach the control plane"), "{err}");
    assert!(err.to_lowercase().contains("certificate"), "{err}");

    let ca = ca.display().to_string();
    let (ok, out, err) = run(
        &[
            "enroll",
            "--server",
            fake.url(),
            "--token",
            TOKEN,
            "--data-dir",
            &d,
            "--ca-file",
            &ca,
        ],
        NO_KEYRING,
    );
    assert!(ok, "{out}\n{err}");
    // The proxy remembers the CA and links over wss://.
    let mut p = start_proxy(dir, &[]);
    p.wait_stderr("applied policy bundle");
    assert_eq!(fake.state.auth_failed.load(Ordering::SeqCst), 0);
    let r = p.call(json!(1), "echo", json!({"text": "x"}));
    assert!(
        text_of(&r).contains("the control plane forbids echo"),
        "{r}"
    );
    p.close_stdin();
    p.wait();
}

// ---- revocation -------------------------------------------------------------------------------------

#[test]
fn a_revoked_device_stops_reconnecting_for_good() {
    let fake = Fake::start(100);
    fake.set_bundle(fake.bundle(NO_ECHO, None));
    let dir = enrolled_dir(&fake);
    let data = dir.path().join("data");
    let mut p = start_proxy(dir, &[]);
    p.wait_stderr("applied policy bundle");
    fake.state.revoke.store(true, Ordering::SeqCst);
    fake.drop_links();
    p.wait_stderr("was revoked by the control plane");
    let after = fake.state.connections.load(Ordering::SeqCst);
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        fake.state.connections.load(Ordering::SeqCst),
        after,
        "a revoked proxy must not reconnect"
    );
    // Decisions go on, offline, on the cached policy.
    let r = p.call(json!(1), "echo", json!({"text": "x"}));
    assert!(
        text_of(&r).contains("the control plane forbids echo"),
        "{r}"
    );
    let s = status(&data);
    assert!(
        s["revoked"]["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("revoked by admin"),
        "{s}"
    );
    assert_eq!(s["links"][0]["state"], "revoked", "{s}");
    p.close_stdin();
    p.wait();

    // A later process does not try either.
    let dir = take_dir(p);
    let mut p = start_proxy(dir, &[]);
    p.wait_stderr("was revoked by the control plane");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(fake.state.connections.load(Ordering::SeqCst), after);
    p.close_stdin();
    p.wait();
    let audit = audit_records(&data);
    let last = audit
        .iter()
        .rev()
        .find(|r| r["tool"] == "echo")
        .expect("echo");
    assert_eq!(last["policy_source"], "bundle_offline");
}

#[test]
fn the_link_comes_up_when_the_control_plane_appears_later() {
    let first = Fake::start(100);
    let dir = enrolled_dir(&first);
    let addr = first.addr();
    let previous = Fake {
        state: Arc::clone(&first.state),
        rt: None,
    };
    drop(first);
    let mut p = start_proxy(dir, &[]);
    std::thread::sleep(Duration::from_millis(800));
    // The control plane comes back on the same address, same keys.
    let fake = Fake::start_on(addr, 100, Some(&previous));
    fake.set_bundle(fake.bundle(NO_ECHO, None));
    p.wait_stderr("applied policy bundle");
    let r = p.call(json!(1), "echo", json!({"text": "x"}));
    assert!(
        text_of(&r).contains("the control plane forbids echo"),
        "{r}"
    );
    p.close_stdin();
    p.wait();
}
