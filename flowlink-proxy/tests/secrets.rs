//! Zero-trust secrets through the real binary: a fake control plane written here (enrolment, the
//! link handshake, a signed policy with a `[secrets]` section, a `SecretsPush` sealed to a real
//! org key and wrapped to the enrolled device's box key, key challenges, approvals) and a small
//! MCP server written by the test that reads its environment, its files and echoes values back
//! in every shape. Every byte the proxy writes to its stdout and stderr, every audit record and
//! every approval request is checked for the values.

mod support;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::extract::ws::{WebSocket, WebSocketUpgrade};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use ed25519_dalek::SigningKey;
use flowlink_proto::bundle::{
    BUNDLE_SCHEMA, BundleLayer, BundleSelector, PolicyBundle, SignedBundle, key_id, sha256_hex,
};
use flowlink_proto::link::{
    ApprovalAccepted, ApprovalDecision, ApprovalOutcome, ApprovalRequest, ApprovalScope, AuditAck,
    AuditEnvelope, Challenge, ControlMessage, EnrollRequest, EnrollResponse, KeyChallenge,
    KeyProof, PolicyPush, ProxyMessage, SealedSecret, SecretUse, SecretsPush, Welcome,
    WrappedOrgKey,
};
use flowlink_proto::sealed::{self, BoxPublicKey, OrgSecretKey, SealContext};
use serde_json::{Value, json};
use support::{recv, send};
use tokio::sync::mpsc;

const TOKEN: &str = "fle_secrets_test";
const ORG: &str = "org-s";
const DEVICE: &str = "dev-s";
const SERVICE: &str = "vaulted";

/// Values that no built-in secret detector recognises, so that only FlowLink's redaction can
/// hide them.
const GH: &str = "flw-test-9c1e27b4d5a8f3e6-octopus";
const GCP: &str =
    r#"{"type":"service_account","client_email":"ci@example.iam","key":"k-5f0d2c9a1b7e"}"#;
const DB: &str = "plugh-xyzzy-7781-quux-corge";

const POLICY: &str = r#"version = 1
default_action = "allow"

[[rules]]
id = "deploys-need-approval"
tool = "deploy"
action = "approve"

[secrets]
placeholders = ["GITHUB_TOKEN", "DB_*"]

[[secrets.inject]]
secret = "GITHUB_TOKEN"
env = "GITHUB_PERSONAL_ACCESS_TOKEN"

[[secrets.inject]]
secret = "GCP_SA_JSON"
file = "gcp.json"
env = "GOOGLE_APPLICATION_CREDENTIALS"

[[secrets.inject]]
secret = "MISSING_ONE"
env = "NEVER_SET"
"#;

// ---- the MCP server ------------------------------------------------------------------------------

const SERVER: &str = r#"
import base64, hashlib, json, os, stat, sys

LOG = os.environ.get("SECRETS_SERVER_LOG")

def write(o):
    sys.stdout.write(json.dumps(o) + "\n")
    sys.stdout.flush()

def result(rid, content):
    write({"jsonrpc": "2.0", "id": rid, "result": {"content": content}})

def text(rid, t):
    result(rid, [{"type": "text", "text": t}])

def call(rid, name, args):
    if name == "env":
        text(rid, os.environ.get(args["name"], "<unset>"))
    elif name == "env_sha":
        v = os.environ.get(args["name"])
        text(rid, "<unset>" if v is None else hashlib.sha256(v.encode()).hexdigest())
    elif name == "file_info":
        path = os.environ.get(args["env"], "")
        with open(path, "rb") as f:
            data = f.read()
        text(rid, json.dumps({
            "path": path,
            "mode": oct(stat.S_IMODE(os.stat(path).st_mode)),
            "dir_mode": oct(stat.S_IMODE(os.stat(os.path.dirname(path)).st_mode)),
            "dir": os.environ.get("FLOWLINK_SECRETS_DIR"),
            "sha": hashlib.sha256(data).hexdigest(),
        }))
    elif name in ("echo", "deploy"):
        text(rid, json.dumps(args))
    elif name == "leak":
        v = os.environ[args["name"]]
        how = args["how"]
        if how == "raw":
            text(rid, "the value is " + v)
        elif how == "base64":
            text(rid, "encoded: " + base64.b64encode(v.encode()).decode())
        elif how == "split":
            half = len(v) // 2
            result(rid, [{"type": "text", "text": "part one: " + v[:half]},
                         {"type": "text", "text": v[half:] + " (part two)"}])
        elif how == "large":
            text(rid, "x" * 600000 + v + "y" * 600000)
        elif how == "stderr":
            sys.stderr.write("debug: using " + v + "\n")
            sys.stderr.flush()
            text(rid, "printed")
        elif how == "notify":
            write({"jsonrpc": "2.0", "method": "notifications/message",
                   "params": {"level": "info", "data": "connected with " + v}})
            text(rid, "notified")
        elif how == "error":
            write({"jsonrpc": "2.0", "id": rid,
                   "error": {"code": -32000, "message": "login failed for " + v}})
        elif how == "tool_error":
            write({"jsonrpc": "2.0", "id": rid, "result": {
                "isError": True, "content": [{"type": "text", "text": "bad credential " + v}]}})
    else:
        write({"jsonrpc": "2.0", "id": rid, "error": {"code": -32602, "message": "no tool " + name}})

for line in sys.stdin:
    line = line.strip()
    if not line:
        continue
    msg = json.loads(line)
    if LOG:
        with open(LOG, "a") as f:
            f.write(json.dumps(msg) + "\n")
    method = msg.get("method")
    rid = msg.get("id")
    if method == "initialize":
        write({"jsonrpc": "2.0", "id": rid, "result": {
            "protocolVersion": msg["params"].get("protocolVersion", "2025-06-18"),
            "capabilities": {"tools": {}}, "serverInfo": {"name": "secrets", "version": "1"}}})
    elif method == "tools/list":
        write({"jsonrpc": "2.0", "id": rid, "result": {"tools": [
            {"name": n, "description": "test tool " + n, "inputSchema": {"type": "object"}}
            for n in ["env", "env_sha", "file_info", "echo", "deploy", "leak"]]}})
    elif method == "tools/call":
        call(rid, msg["params"]["name"], msg["params"].get("arguments") or {})
    elif rid is not None and method is not None:
        write({"jsonrpc": "2.0", "id": rid, "result": {}})
"#;

// ---- the fake control plane ----------------------------------------------------------------------

struct CpState {
    url: String,
    policy_key: SigningKey,
    /// The org's secrets key (what a custodian holds).
    org: OrgSecretKey,
    box_key: Mutex<Option<BoxPublicKey>>,
    policy: Mutex<String>,
    /// Plaintexts sealed into every push: (name, version, value).
    secrets: Mutex<Vec<(String, u64, String)>>,
    grant: Mutex<bool>,
    rotation_required: Mutex<Option<String>>,
    /// Challenges to send right after the push: (id, key version, plaintext).
    challenges: Mutex<Vec<(String, u32, [u8; 32])>>,
    welcomed: AtomicUsize,
    proofs: Mutex<Vec<KeyProof>>,
    used: Mutex<Vec<SecretUse>>,
    approvals: Mutex<Vec<ApprovalRequest>>,
    events: Mutex<Vec<AuditEnvelope>>,
    links: Mutex<Vec<mpsc::UnboundedSender<Option<ControlMessage>>>>,
}

struct Cp {
    state: Arc<CpState>,
    rt: Option<tokio::runtime::Runtime>,
}

impl Drop for Cp {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

impl Cp {
    fn start(secrets: &[(&str, &str)]) -> Cp {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let state = Arc::new(CpState {
            url: format!("http://{addr}"),
            policy_key: SigningKey::from_bytes(&[7; 32]),
            org: OrgSecretKey::generate(),
            box_key: Mutex::new(None),
            policy: Mutex::new(POLICY.to_owned()),
            secrets: Mutex::new(
                secrets
                    .iter()
                    .map(|(n, v)| ((*n).to_owned(), 1, (*v).to_owned()))
                    .collect(),
            ),
            grant: Mutex::new(true),
            rotation_required: Mutex::new(None),
            challenges: Mutex::new(Vec::new()),
            welcomed: AtomicUsize::new(0),
            proofs: Mutex::new(Vec::new()),
            used: Mutex::new(Vec::new()),
            approvals: Mutex::new(Vec::new()),
            events: Mutex::new(Vec::new()),
            links: Mutex::new(Vec::new()),
        });
        let app = Router::new()
            .route("/api/v1/enroll", post(enroll))
            .route("/api/v1/link", get(link))
            .with_state(Arc::clone(&state));
        rt.spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Cp {
            state,
            rt: Some(rt),
        }
    }

    fn send(&self, msg: ControlMessage) {
        self.state
            .links
            .lock()
            .unwrap()
            .retain(|tx| tx.send(Some(msg.clone())).is_ok());
    }

    fn wait(&self, what: &str, cond: impl Fn(&CpState) -> bool) {
        let deadline = Instant::now() + support::TIMEOUT;
        while !cond(&self.state) {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn challenge(&self, id: &str, key_version: u32, plain: [u8; 32]) -> KeyChallenge {
        self.state.challenge(id, key_version, plain)
    }
}

impl CpState {
    /// The policy, signed, for the proxy's service.
    fn bundle(&self) -> SignedBundle {
        let issued = 1_767_225_600_000_000 + self.welcomed.load(Ordering::SeqCst) as i64;
        let body = self.policy.lock().unwrap().clone();
        let b = PolicyBundle {
            schema: BUNDLE_SCHEMA,
            org_id: ORG.into(),
            key_id: key_id(&self.policy_key.verifying_key()),
            issued_at: issued,
            selector: BundleSelector {
                service: Some(SERVICE.into()),
                labels: Default::default(),
            },
            layers: vec![BundleLayer::new("service:vaulted", 1, &body)],
        };
        SignedBundle::sign(&b, &self.policy_key).expect("sign")
    }

    /// 32 bytes sealed to the org key, as the control plane's verify does.
    fn challenge(&self, id: &str, key_version: u32, plain: [u8; 32]) -> KeyChallenge {
        KeyChallenge {
            challenge_id: id.into(),
            key_version,
            sealed: sealed::seal(
                &self.org.public_key(),
                &SealContext::Challenge {
                    org_id: ORG,
                    key_version,
                    challenge_id: id,
                },
                &plain,
            )
            .expect("seal challenge"),
        }
    }
}

fn push(st: &CpState) -> SecretsPush {
    let device = st.box_key.lock().unwrap().expect("enrolled");
    let keys = if *st.grant.lock().unwrap() {
        vec![WrappedOrgKey {
            key_version: 1,
            public_key: st.org.public_key().to_base64(),
            wrapped: sealed::seal(
                &device,
                &SealContext::OrgKey {
                    org_id: ORG,
                    key_version: 1,
                    recipient: &format!("device:{DEVICE}"),
                },
                st.org.to_bytes().as_slice(),
            )
            .expect("wrap"),
        }]
    } else {
        Vec::new()
    };
    let secrets = st
        .secrets
        .lock()
        .unwrap()
        .iter()
        .map(|(name, version, value)| SealedSecret {
            name: name.clone(),
            version: *version,
            key_version: 1,
            sealed: sealed::seal(
                &st.org.public_key(),
                &SealContext::Secret {
                    org_id: ORG,
                    name,
                    version: *version,
                    key_version: 1,
                },
                value.as_bytes(),
            )
            .expect("seal"),
            services: vec![SERVICE.into()],
            labels: BTreeMap::new(),
        })
        .collect();
    SecretsPush {
        keys,
        secrets,
        rotation_required: st.rotation_required.lock().unwrap().clone(),
    }
}

async fn enroll(State(st): State<Arc<CpState>>, Json(req): Json<EnrollRequest>) -> Response {
    assert_eq!(req.token, TOKEN);
    *st.box_key.lock().unwrap() = Some(BoxPublicKey::from_base64(&req.box_key).expect("box key"));
    Json(EnrollResponse {
        org_id: ORG.into(),
        org_slug: "acme".into(),
        device_id: DEVICE.into(),
        labels: req.labels,
        policy_key: STANDARD.encode(st.policy_key.verifying_key().as_bytes()),
        policy_key_id: key_id(&st.policy_key.verifying_key()),
        link_url: format!("{}/api/v1/link", st.url.replace("http://", "ws://")),
    })
    .into_response()
}

async fn link(ws: WebSocketUpgrade, State(st): State<Arc<CpState>>) -> Response {
    ws.on_upgrade(move |socket| session(socket, st))
}

async fn session(mut socket: WebSocket, st: Arc<CpState>) {
    let Some(ProxyMessage::Hello(hello)) = recv(&mut socket).await else {
        return;
    };
    assert_eq!(hello.service, SERVICE);
    if !send(
        &mut socket,
        &ControlMessage::Challenge(Challenge { nonce: "n".into() }),
    )
    .await
    {
        return;
    }
    // The link's own authentication is tested in link.rs; here any signature will do.
    let Some(ProxyMessage::Auth(_)) = recv(&mut socket).await else {
        return;
    };
    let welcome = ControlMessage::Welcome(Welcome {
        org_id: ORG.into(),
        device_id: DEVICE.into(),
        heartbeat_secs: 1,
        max_batch: 100,
    });
    if !send(&mut socket, &welcome).await {
        return;
    }
    let bundle = st.bundle();
    if !send(&mut socket, &ControlMessage::Policy(PolicyPush { bundle })).await {
        return;
    }
    let p = push(&st);
    if !send(&mut socket, &ControlMessage::Secrets(p)).await {
        return;
    }
    let challenges: Vec<_> = st.challenges.lock().unwrap().drain(..).collect();
    for (id, version, plain) in challenges {
        let c = st.challenge(&id, version, plain);
        if !send(&mut socket, &ControlMessage::KeyChallenge(c)).await {
            return;
        }
    }
    let (tx, mut rx) = mpsc::unbounded_channel();
    st.links.lock().unwrap().push(tx);
    st.welcomed.fetch_add(1, Ordering::SeqCst);
    loop {
        tokio::select! {
            msg = recv(&mut socket) => {
                let Some(msg) = msg else { return };
                match msg {
                    ProxyMessage::AuditBatch(b) => {
                        let ids = b.events.iter().map(|e| e.id.clone()).collect();
                        st.events.lock().unwrap().extend(b.events);
                        if !send(&mut socket, &ControlMessage::AuditAck(AuditAck { ids })).await {
                            return;
                        }
                    }
                    ProxyMessage::ApprovalRequest(r) => {
                        let r = *r;
                        st.approvals.lock().unwrap().push(r.clone());
                        let accepted = ControlMessage::ApprovalAccepted(ApprovalAccepted {
                            call_ref: r.call_ref.clone(),
                            request_id: "req-1".into(),
                            url: "http://cp/approvals/req-1".into(),
                        });
                        let decided = ControlMessage::ApprovalDecision(ApprovalDecision {
                            call_ref: r.call_ref,
                            request_id: "req-1".into(),
                            outcome: ApprovalOutcome::Approved,
                            decided_by: vec!["boss@example.com".into()],
                            comment: None,
                            scope: ApprovalScope::ThisCall,
                        });
                        if !send(&mut socket, &accepted).await || !send(&mut socket, &decided).await {
                            return;
                        }
                    }
                    ProxyMessage::KeyProof(p) => st.proofs.lock().unwrap().push(p),
                    ProxyMessage::SecretsUsed(u) => st.used.lock().unwrap().extend(u.used),
                    _ => {}
                }
            }
            cmd = rx.recv() => match cmd {
                Some(Some(m)) => {
                    if !send(&mut socket, &m).await {
                        return;
                    }
                }
                Some(None) | None => return,
            }
        }
    }
}

// ---- driving the proxy ---------------------------------------------------------------------------

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_flowlink-proxy"))
}

/// A test's directory: the proxy's data, the server script and its log, the secrets base dir.
struct Dir {
    dir: tempfile::TempDir,
}

impl Dir {
    fn new() -> Dir {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("server.py"), SERVER).expect("write server");
        std::fs::create_dir(dir.path().join("run")).expect("mkdir run");
        std::fs::set_permissions(
            dir.path().join("run"),
            std::fs::Permissions::from_mode(0o700),
        )
        .expect("chmod");
        Dir { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn data(&self) -> PathBuf {
        self.path().join("data")
    }

    /// Where the proxy makes its private secrets directories (`XDG_RUNTIME_DIR`).
    fn runtime(&self) -> PathBuf {
        self.path().join("run")
    }

    fn enrol(&self, cp: &Cp) {
        let out = bin()
            .args(["enroll", "--server", &cp.state.url, "--token", TOKEN])
            .arg("--data-dir")
            .arg(self.data())
            .env("FLOWLINK_KEYRING", "off")
            .output()
            .expect("enroll");
        assert!(
            out.status.success(),
            "enroll failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn server_log(&self) -> Vec<Value> {
        std::fs::read_to_string(self.path().join("server.log"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    fn status(&self) -> Value {
        let out = bin()
            .args(["status", "--json", "--data-dir"])
            .arg(self.data())
            .env("FLOWLINK_KEYRING", "off")
            .output()
            .expect("status");
        assert!(out.status.success());
        serde_json::from_slice(&out.stdout).expect("status json")
    }

    fn status_text(&self) -> String {
        let out = bin()
            .args(["status", "--data-dir"])
            .arg(self.data())
            .env("FLOWLINK_KEYRING", "off")
            .output()
            .expect("status");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

/// The proxy, with every byte of its stdout and stderr kept.
struct Proxy {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    stdout: Arc<Mutex<Vec<String>>>,
    stderr: Arc<Mutex<Vec<u8>>>,
    /// One message from each output reader once its pipe closed.
    readers_done: Receiver<()>,
    pending: Vec<Value>,
}

impl Proxy {
    fn start(dir: &Dir, extra_env: &[(&str, &str)]) -> Proxy {
        Self::start_with(dir, &[], extra_env)
    }

    fn start_with(dir: &Dir, flags: &[&str], extra_env: &[(&str, &str)]) -> Proxy {
        let mut cmd = bin();
        cmd.args(["--name", SERVICE, "--data-dir"])
            .arg(dir.data())
            .args(flags)
            .args(["--", "python3"])
            .arg(dir.path().join("server.py"))
            .env("FLOWLINK_KEYRING", "off")
            .env("FLOWLINK_LINK_BACKOFF_CAP_MS", "500")
            .env("FLOWLINK_LOG", "info")
            .env("XDG_RUNTIME_DIR", dir.runtime())
            .env("SECRETS_SERVER_LOG", dir.path().join("server.log"))
            .env("UNRELATED_SETTING", "kept-as-is")
            .envs(extra_env.iter().copied())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn proxy");
        let out = child.stdout.take().expect("stdout");
        let (tx, lines) = channel();
        let (done_tx, readers_done) = channel();
        let stdout = Arc::new(Mutex::new(Vec::new()));
        let all = Arc::clone(&stdout);
        let out_done = done_tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                all.lock().unwrap().push(line.clone());
                // The test may have stopped listening; the line is kept in `all` anyway.
                let _ = tx.send(line);
            }
            let _ = out_done.send(());
        });
        let mut err = child.stderr.take().expect("stderr");
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let buf = Arc::clone(&stderr);
        std::thread::spawn(move || {
            let mut chunk = [0u8; 8192];
            while let Ok(n) = err.read(&mut chunk) {
                if n == 0 {
                    break;
                }
                buf.lock().unwrap().extend_from_slice(&chunk[..n]);
            }
            let _ = done_tx.send(());
        });
        let mut p = Proxy {
            stdin: child.stdin.take(),
            child,
            lines,
            stdout,
            stderr,
            readers_done,
            pending: Vec::new(),
        };
        p.request(
            json!("init"),
            "initialize",
            json!({"protocolVersion": "2025-06-18", "capabilities": {},
                   "clientInfo": {"name": "secrets-test", "version": "1"}}),
        );
        p.send(json!({"jsonrpc": "2.0", "method": "notifications/initialized"}));
        p
    }

    fn send(&mut self, msg: Value) {
        let stdin = self.stdin.as_mut().expect("stdin");
        writeln!(stdin, "{msg}").expect("write");
        stdin.flush().expect("flush");
    }

    fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.stderr.lock().unwrap()).into_owned()
    }

    fn recv_where(&mut self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        if let Some(i) = self.pending.iter().position(&pred) {
            return self.pending.remove(i);
        }
        let deadline = Instant::now() + support::TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let Ok(line) = self.lines.recv_timeout(left) else {
                panic!(
                    "no {what} from the proxy; other messages: {:?}; stderr:\n{}",
                    self.pending,
                    self.stderr()
                );
            };
            let v: Value = serde_json::from_str(&line)
                .unwrap_or_else(|e| panic!("non-JSON line on stdout ({e}): {line}"));
            if pred(&v) {
                return v;
            }
            self.pending.push(v);
        }
    }

    fn request(&mut self, id: Value, method: &str, params: Value) -> Value {
        self.send(json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}));
        self.recv_where(&format!("response to {id}"), |v| {
            v.get("id") == Some(&id) && v.get("method").is_none()
        })
    }

    fn call(&mut self, id: i64, tool: &str, args: Value) -> Value {
        self.request(
            json!(id),
            "tools/call",
            json!({"name": tool, "arguments": args}),
        )
    }

    fn wait_stderr(&self, needle: &str) {
        let deadline = Instant::now() + support::TIMEOUT;
        while !self.stderr().contains(needle) {
            assert!(
                Instant::now() < deadline,
                "stderr never said {needle:?}:\n{}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Closes stdin and waits for the exit; returns everything written to stdout and stderr.
    fn finish(mut self) -> (Vec<String>, String) {
        self.stdin = None;
        let deadline = Instant::now() + support::TIMEOUT;
        while self.child.try_wait().expect("try_wait").is_none() {
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("proxy did not exit; stderr:\n{}", self.stderr());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        // Everything written is kept once both pipes closed.
        for _ in 0..2 {
            let _ = self.readers_done.recv_timeout(Duration::from_secs(5));
        }
        let out = self.stdout.lock().unwrap().clone();
        (out, self.stderr())
    }
}

fn text_of(r: &Value) -> String {
    r["result"]["content"][0]["text"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// Every form of `value` that must never appear in what the proxy writes.
fn forms(value: &str) -> Vec<String> {
    let mut f = vec![
        value.to_owned(),
        STANDARD.encode(value),
        URL_SAFE_NO_PAD.encode(value),
        value
            .bytes()
            .map(|b| format!("{b:02x}"))
            .collect::<String>(),
    ];
    // Both halves, for values split across content blocks.
    let half = value.len() / 2;
    f.push(value[..half].to_owned());
    f.push(value[half..].to_owned());
    f
}

fn assert_clean(what: &str, text: &str, values: &[&str]) {
    for v in values {
        for form in forms(v) {
            assert!(
                !text.contains(&form),
                "{what} carries a form of a secret value ({form:?}):\n{}",
                &text[..text.len().min(4000)]
            );
        }
    }
}

/// Every file of the data directory, as bytes, for the raw value.
fn assert_data_dir_clean(data: &Path, values: &[&str]) {
    for entry in walk(data) {
        let bytes = std::fs::read(&entry).unwrap_or_default();
        for v in values {
            assert!(
                !bytes.windows(v.len()).any(|w| w == v.as_bytes()),
                "{} holds a secret value in clear",
                entry.display()
            );
        }
    }
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

fn standard() -> (Cp, Dir) {
    let cp = Cp::start(&[
        ("GITHUB_TOKEN", GH),
        ("GCP_SA_JSON", GCP),
        ("DB_PASSWORD", DB),
    ]);
    let dir = Dir::new();
    dir.enrol(&cp);
    (cp, dir)
}

// ---- the tests -----------------------------------------------------------------------------------

#[test]
fn env_and_file_secrets_reach_the_server_and_their_values_never_come_back() {
    let (cp, dir) = standard();
    let mut p = Proxy::start(
        &dir,
        &[("FLOWLINK_VAULT_TOKEN", "hvs.proxy-only-credential")],
    );

    // The environment variable holds the value (compared by hash: the answer carries no value).
    let r = p.call(
        1,
        "env_sha",
        json!({"name": "GITHUB_PERSONAL_ACCESS_TOKEN"}),
    );
    assert_eq!(text_of(&r), sha256_hex(GH.as_bytes()), "{r}");
    // Unrelated variables are as they were; the proxy's own Vault credential is not passed on;
    // a secret the device does not have is left out.
    assert_eq!(
        text_of(&p.call(2, "env", json!({"name": "UNRELATED_SETTING"}))),
        "kept-as-is"
    );
    assert_eq!(
        text_of(&p.call(3, "env", json!({"name": "FLOWLINK_VAULT_TOKEN"}))),
        "<unset>"
    );
    assert_eq!(
        text_of(&p.call(4, "env", json!({"name": "NEVER_SET"}))),
        "<unset>"
    );
    p.wait_stderr("starts without 1 secret(s) its policy injects: MISSING_ONE");

    // The file: 0600 in a 0700 directory of its own under XDG_RUNTIME_DIR, holding the value.
    let info: Value = serde_json::from_str(&text_of(&p.call(
        5,
        "file_info",
        json!({"env": "GOOGLE_APPLICATION_CREDENTIALS"}),
    )))
    .expect("file info");
    assert_eq!(info["mode"], "0o600", "{info}");
    assert_eq!(info["dir_mode"], "0o700", "{info}");
    assert_eq!(info["sha"], sha256_hex(GCP.as_bytes()));
    let file = PathBuf::from(info["path"].as_str().expect("path"));
    assert_eq!(file.file_name().and_then(|n| n.to_str()), Some("gcp.json"));
    let private = file.parent().expect("dir").to_owned();
    assert_eq!(info["dir"], private.display().to_string());
    assert!(private.starts_with(dir.runtime()), "{}", private.display());

    // Asked for the raw value, the agent gets the name only.
    let r = p.call(6, "env", json!({"name": "GITHUB_PERSONAL_ACCESS_TOKEN"}));
    assert_eq!(text_of(&r), "[REDACTED:GITHUB_TOKEN]", "{r}");

    // What was used is reported to the control plane (names and versions, never values).
    cp.wait("SecretsUsed", |s| s.used.lock().unwrap().len() >= 2);
    let used = cp.state.used.lock().unwrap().clone();
    assert!(used.contains(&SecretUse {
        name: "GITHUB_TOKEN".into(),
        version: 1,
        how: "env".into()
    }));
    assert!(used.contains(&SecretUse {
        name: "GCP_SA_JSON".into(),
        version: 1,
        how: "file".into()
    }));

    let (stdout, stderr) = p.finish();
    assert!(!file.exists(), "the secret file outlived the proxy");
    assert!(
        !private.exists(),
        "the private directory outlived the proxy"
    );
    let all = stdout.join("\n");
    assert_clean("stdout", &all, &[GH, GCP, "hvs.proxy-only-credential"]);
    assert_clean("stderr", &stderr, &[GH, GCP]);
    assert!(stderr.contains("redacted 1 secret value(s)"), "{stderr}");
    assert_data_dir_clean(&dir.data(), &[GH, GCP]);
    let shipped = serde_json::to_string(&*cp.state.events.lock().unwrap()).expect("json");
    assert_clean("the audit events shipped", &shipped, &[GH, GCP]);
}

#[test]
fn placeholders_are_replaced_for_the_server_only() {
    let (cp, dir) = standard();
    let mut p = Proxy::start(&dir, &[]);
    cp.wait("the link", |s| s.welcomed.load(Ordering::SeqCst) > 0);

    let r = p.call(
        1,
        "echo",
        json!({"url": "https://api.example/?u=x&k={{secret:GITHUB_TOKEN}}", "n": 1}),
    );
    // The server got the value...
    let log = dir.server_log();
    let call = log
        .iter()
        .rev()
        .find(|m| m["params"]["name"] == "echo")
        .expect("the server got the call");
    assert_eq!(
        call["params"]["arguments"]["url"],
        format!("https://api.example/?u=x&k={GH}")
    );
    // ...and the client sees only the name in what came back.
    let echoed: Value = serde_json::from_str(&text_of(&r)).expect("echo is JSON");
    assert_eq!(
        echoed["url"], "https://api.example/?u=x&k=[REDACTED:GITHUB_TOKEN]",
        "{r}"
    );

    // A call that needs approval: the approval request and its digest see the placeholder.
    let args = json!({"env": "prod", "password": "{{secret:DB_PASSWORD}}"});
    let r = p.call(2, "deploy", args.clone());
    assert!(r["result"]["isError"].is_null(), "{r}");
    let echoed: Value = serde_json::from_str(&text_of(&r)).expect("deploy echoes");
    assert_eq!(echoed["password"], "[REDACTED:DB_PASSWORD]");
    let requests = cp.state.approvals.lock().unwrap().clone();
    assert_eq!(requests.len(), 1);
    assert_eq!(
        requests[0].arguments, args,
        "the approver sees the placeholder"
    );
    assert_eq!(
        requests[0].args_digest,
        flowlink_proto::link::args_digest(&args)
    );
    let deploy = dir
        .server_log()
        .into_iter()
        .find(|m| m["params"]["name"] == "deploy")
        .expect("the server got the approved call");
    assert_eq!(deploy["params"]["arguments"]["password"], DB);

    cp.wait("placeholder use", |s| {
        s.used
            .lock()
            .unwrap()
            .iter()
            .any(|u| u.how == "placeholder" && u.name == "DB_PASSWORD")
    });
    let (stdout, stderr) = p.finish();
    assert_clean("stdout", &stdout.join("\n"), &[GH, DB]);
    assert_clean("stderr", &stderr, &[GH, DB]);

    // The audit trail keeps the placeholder form.
    let records = support::audit_records(&dir.data());
    let echo = records
        .iter()
        .find(|r| r["tool"] == "echo")
        .expect("echo record");
    assert_eq!(
        echo["arguments"]["url"],
        "https://api.example/?u=x&k={{secret:GITHUB_TOKEN}}"
    );
    let deploy = records
        .iter()
        .find(|r| r["tool"] == "deploy")
        .expect("deploy record");
    assert_eq!(deploy["arguments"], args);
    assert_eq!(deploy["verdict"], "approved", "{deploy}");
    assert_data_dir_clean(&dir.data(), &[GH, DB]);
}

#[test]
fn placeholders_the_policy_does_not_allow_or_the_device_lacks_are_refused() {
    let cp = Cp::start(&[
        ("GITHUB_TOKEN", GH),
        ("AWS_KEY", "aws-never-to-be-seen-1234"),
    ]);
    let dir = Dir::new();
    dir.enrol(&cp);
    let mut p = Proxy::start(&dir, &[]);

    let r = p.call(1, "echo", json!({"key": "{{secret:AWS_KEY}}"}));
    assert_eq!(r["result"]["isError"], true, "{r}");
    let text = text_of(&r);
    assert!(
        text.contains("does not allow the placeholder(s) {{secret:AWS_KEY}}"),
        "{text}"
    );
    assert!(text.contains("it allows GITHUB_TOKEN, DB_*"), "{text}");

    // Allowed by `DB_*`, but this device has no such secret.
    let r = p.call(
        2,
        "echo",
        json!({"dsn": "postgres://app:{{secret:DB_REPLICA}}@db/app"}),
    );
    assert_eq!(r["result"]["isError"], true, "{r}");
    let text = text_of(&r);
    assert!(
        text.contains("{{secret:DB_REPLICA}} are not available"),
        "{text}"
    );
    assert!(text.contains("this device has no such secret"), "{text}");

    // Neither reached the server.
    assert!(
        !dir.server_log().iter().any(|m| m["method"] == "tools/call"),
        "a refused call reached the server"
    );
    // A string that only looks like a placeholder is passed as is.
    let r = p.call(3, "echo", json!({"t": "{{secret:lower}}"}));
    assert_eq!(text_of(&r), r#"{"t": "{{secret:lower}}"}"#);

    let (stdout, _) = p.finish();
    assert_clean("stdout", &stdout.join("\n"), &["aws-never-to-be-seen-1234"]);
    let records = support::audit_records(&dir.data());
    let refused: Vec<&Value> = records
        .iter()
        .filter(|r| r["rule_id"] == "secrets")
        .collect();
    assert_eq!(refused.len(), 2, "{records:?}");
    assert!(
        refused
            .iter()
            .all(|r| r["verdict"] == "block" && r["outcome"] == "not_forwarded")
    );
}

#[test]
fn values_echoed_in_any_shape_reach_the_client_only_as_redacted() {
    let (cp, dir) = standard();
    let mut p = Proxy::start(&dir, &[]);
    let name = json!("GITHUB_PERSONAL_ACCESS_TOKEN");

    let r = p.call(1, "leak", json!({"name": name, "how": "raw"}));
    assert_eq!(text_of(&r), "the value is [REDACTED:GITHUB_TOKEN]");

    let r = p.call(2, "leak", json!({"name": name, "how": "base64"}));
    assert_eq!(text_of(&r), "encoded: [REDACTED:GITHUB_TOKEN]", "{r}");

    let r = p.call(3, "leak", json!({"name": name, "how": "split"}));
    let blocks = r["result"]["content"].as_array().expect("blocks").clone();
    assert_eq!(blocks.len(), 2);
    for b in &blocks {
        assert!(
            b["text"]
                .as_str()
                .is_some_and(|t| t.contains("[REDACTED:GITHUB_TOKEN]")),
            "{r}"
        );
    }

    let r = p.call(4, "leak", json!({"name": name, "how": "large"}));
    let big = text_of(&r);
    assert_eq!(big.len(), 1_200_000 + "[REDACTED:GITHUB_TOKEN]".len());
    assert!(big.contains("x[REDACTED:GITHUB_TOKEN]y"));

    let r = p.call(5, "leak", json!({"name": name, "how": "notify"}));
    assert_eq!(text_of(&r), "notified");
    let note = p.recv_where("the log notification", |v| {
        v["method"] == "notifications/message"
    });
    assert_eq!(
        note["params"]["data"],
        "connected with [REDACTED:GITHUB_TOKEN]"
    );

    let r = p.call(6, "leak", json!({"name": name, "how": "error"}));
    assert_eq!(
        r["error"]["message"],
        "login failed for [REDACTED:GITHUB_TOKEN]"
    );

    let r = p.call(7, "leak", json!({"name": name, "how": "tool_error"}));
    assert_eq!(text_of(&r), "bad credential [REDACTED:GITHUB_TOKEN]");

    let r = p.call(8, "leak", json!({"name": name, "how": "stderr"}));
    assert_eq!(text_of(&r), "printed");
    p.wait_stderr("debug: using [REDACTED:GITHUB_TOKEN]");

    let (stdout, stderr) = p.finish();
    assert_clean("stdout", &stdout.join("\n"), &[GH]);
    assert_clean("stderr", &stderr, &[GH]);
    assert!(
        stderr.contains("from the stderr of MCP server `vaulted` (GITHUB_TOKEN)"),
        "{stderr}"
    );
    // The audit trail's error texts are redacted too.
    let records = support::audit_records(&dir.data());
    let errors: Vec<&str> = records.iter().filter_map(|r| r["error"].as_str()).collect();
    assert!(
        errors.contains(&"login failed for [REDACTED:GITHUB_TOKEN]"),
        "{errors:?}"
    );
    assert!(
        errors.contains(&"bad credential [REDACTED:GITHUB_TOKEN]"),
        "{errors:?}"
    );
    assert_data_dir_clean(&dir.data(), &[GH]);
    drop(cp);
}

#[test]
fn a_proxy_started_while_the_control_plane_is_down_injects_from_the_cache() {
    let (cp, dir) = standard();
    // First run: the push is cached (sealed).
    let mut p = Proxy::start(&dir, &[]);
    let r = p.call(
        1,
        "env_sha",
        json!({"name": "GITHUB_PERSONAL_ACCESS_TOKEN"}),
    );
    assert_eq!(text_of(&r), sha256_hex(GH.as_bytes()));
    let _ = p.finish();
    let s = dir.status();
    assert_eq!(s["secrets"][0]["service"], SERVICE, "{s}");
    assert_data_dir_clean(&dir.data(), &[GH, GCP, DB]);

    // The control plane goes away; the next proxy starts at once, from the cache, not after
    // the (here long) wait for a control plane's first push.
    drop(cp);
    let started = Instant::now();
    let mut p = Proxy::start(&dir, &[("FLOWLINK_SECRETS_WAIT_SECS", "19")]);
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "the proxy waited for a control plane that is down: {:?}",
        started.elapsed()
    );
    let r = p.call(
        1,
        "env_sha",
        json!({"name": "GITHUB_PERSONAL_ACCESS_TOKEN"}),
    );
    assert_eq!(text_of(&r), sha256_hex(GH.as_bytes()), "{}", p.stderr());
    let r = p.call(2, "echo", json!({"k": "{{secret:GITHUB_TOKEN}}"}));
    assert_eq!(text_of(&r), r#"{"k": "[REDACTED:GITHUB_TOKEN]"}"#);
    let (stdout, stderr) = p.finish();
    assert_clean("stdout", &stdout.join("\n"), &[GH]);
    assert_clean("stderr", &stderr, &[GH]);
}

#[test]
fn with_nothing_cached_the_first_push_is_awaited_before_the_server_starts() {
    let (cp, dir) = standard();
    // No policy and no secrets cached: the proxy waits for both, then injects.
    let mut p = Proxy::start(&dir, &[]);
    let r = p.call(
        1,
        "env_sha",
        json!({"name": "GITHUB_PERSONAL_ACCESS_TOKEN"}),
    );
    assert_eq!(text_of(&r), sha256_hex(GH.as_bytes()), "{}", p.stderr());
    let _ = p.finish();
    drop(cp);
}

#[test]
fn key_challenges_are_answered_with_the_org_key() {
    let (cp, dir) = standard();
    let plain = [42u8; 32];
    cp.state.challenges.lock().unwrap().extend([
        ("ch-1".to_owned(), 1, plain),
        ("ch-2".to_owned(), 2, [1; 32]),
    ]);
    let p = Proxy::start(&dir, &[]);
    cp.wait("two proofs", |s| s.proofs.lock().unwrap().len() >= 2);
    let proofs = cp.state.proofs.lock().unwrap().clone();
    let one = proofs
        .iter()
        .find(|p| p.challenge_id == "ch-1")
        .expect("ch-1");
    assert_eq!(one.proof, Some(sealed::challenge_proof(&plain)));
    assert_eq!(one.error, None);
    let two = proofs
        .iter()
        .find(|p| p.challenge_id == "ch-2")
        .expect("ch-2");
    assert_eq!(two.proof, None);
    assert!(
        two.error
            .as_deref()
            .is_some_and(|e| e.contains("no org key version 2")),
        "{two:?}"
    );

    // A challenge on the live link is answered too.
    let plain = [9u8; 32];
    let c = cp.challenge("ch-3", 1, plain);
    cp.send(ControlMessage::KeyChallenge(c));
    cp.wait("the third proof", |s| {
        s.proofs
            .lock()
            .unwrap()
            .iter()
            .any(|p| p.challenge_id == "ch-3")
    });
    let three = cp
        .state
        .proofs
        .lock()
        .unwrap()
        .iter()
        .find(|p| p.challenge_id == "ch-3")
        .cloned()
        .expect("ch-3");
    assert_eq!(three.proof, Some(sealed::challenge_proof(&plain)));
    let _ = p.finish();
}

#[test]
fn status_shows_the_key_the_cached_secrets_and_a_rotation_to_do() {
    let (cp, dir) = standard();
    *cp.state.rotation_required.lock().unwrap() =
        Some("device laptop-2 was revoked by admin@example.com".into());
    let p = Proxy::start(&dir, &[]);
    let _ = p.finish();
    let s = dir.status();
    let row = &s["secrets"][0];
    assert_eq!(row["key_granted"], true, "{s}");
    assert_eq!(row["key_version"], 1);
    assert_eq!(row["key_opens"], true);
    assert_eq!(
        row["rotation_required"],
        "device laptop-2 was revoked by admin@example.com"
    );
    let names: Vec<&str> = row["secrets"]
        .as_array()
        .expect("secrets")
        .iter()
        .map(|x| x["name"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(names, ["GITHUB_TOKEN", "GCP_SA_JSON", "DB_PASSWORD"]);
    assert!(
        row["secrets"]
            .as_array()
            .expect("list")
            .iter()
            .all(|x| x["opens"] == true)
    );
    let text = dir.status_text();
    assert!(
        text.contains("secrets:      vaulted: org key v1 granted; 3 secret(s) cached (GITHUB_TOKEN v1, GCP_SA_JSON v1, DB_PASSWORD v1)"),
        "{text}"
    );
    assert!(
        text.contains("ROTATION REQUIRED: device laptop-2 was revoked"),
        "{text}"
    );
    assert_clean("status", &format!("{s}{text}"), &[GH, GCP, DB]);

    // A new device that was not granted the key yet says so, and injects nothing.
    *cp.state.grant.lock().unwrap() = false;
    let fresh = Dir::new();
    fresh.enrol(&cp);
    let mut p = Proxy::start(&fresh, &[]);
    let r = p.call(1, "env", json!({"name": "GITHUB_PERSONAL_ACCESS_TOKEN"}));
    assert_eq!(text_of(&r), "<unset>");
    p.wait_stderr("GITHUB_TOKEN (sealed to org key v1, which this device does not hold");
    let _ = p.finish();
    let text = fresh.status_text();
    assert!(
        text.contains("org key not granted to this device yet"),
        "{text}"
    );
    assert_eq!(fresh.status()["secrets"][0]["key_granted"], false);
}

#[test]
fn stale_secret_directories_of_killed_proxies_are_swept() {
    let (cp, dir) = standard();
    let mut p = Proxy::start(&dir, &[]);
    let info: Value = serde_json::from_str(&text_of(&p.call(
        1,
        "file_info",
        json!({"env": "GOOGLE_APPLICATION_CREDENTIALS"}),
    )))
    .expect("file info");
    let private = PathBuf::from(info["dir"].as_str().expect("dir"));
    assert!(private.exists());
    // kill -9: no clean-up of any kind; the server goes with its closed stdin.
    let _ = Command::new("kill")
        .args(["-9", &p.child.id().to_string()])
        .status();
    let _ = p.child.wait();
    assert!(private.exists(), "nothing could have removed it");

    let mut p = Proxy::start(&dir, &[]);
    let r = p.call(1, "env", json!({"name": "FLOWLINK_SECRETS_DIR"}));
    assert_ne!(text_of(&r), private.display().to_string());
    assert!(
        !private.exists(),
        "the killed proxy's directory was not swept"
    );
    let _ = p.finish();
    drop(cp);
}

// ---- Vault ---------------------------------------------------------------------------------------

const VAULT_TOKEN: &str = "hvs.standalone-credential-31337";
const ROLE_ID: &str = "role-4f1c";
const SECRET_ID: &str = "secret-id-from-flowlink-8d2e";
const ISSUED: &str = "hvs.issued-by-approle-login-77";

/// A fake of Vault's HTTP API: AppRole login, KV v2 reads of `kv/app`; records the tokens seen.
struct FakeVault {
    address: String,
    tokens: Arc<Mutex<Vec<String>>>,
    rt: Option<tokio::runtime::Runtime>,
}

impl Drop for FakeVault {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

impl FakeVault {
    fn start() -> FakeVault {
        use axum::http::{HeaderMap, StatusCode};
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("bind");
        let address = format!("http://{}", listener.local_addr().expect("addr"));
        let tokens = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::clone(&tokens);
        let read =
            move |headers: HeaderMap, axum::extract::Path(rest): axum::extract::Path<String>| {
                let seen = Arc::clone(&seen);
                async move {
                    let token = headers
                        .get("x-vault-token")
                        .and_then(|t| t.to_str().ok())
                        .unwrap_or_default()
                        .to_owned();
                    seen.lock().unwrap().push(token.clone());
                    if token != VAULT_TOKEN && token != ISSUED {
                        return (
                            StatusCode::FORBIDDEN,
                            Json(json!({"errors": ["permission denied"]})),
                        )
                            .into_response();
                    }
                    if rest != "kv/data/app" {
                        return (StatusCode::NOT_FOUND, Json(json!({"errors": []})))
                            .into_response();
                    }
                    Json(json!({
                        "lease_duration": 0,
                        "data": {"data": {"db_password": DB}, "metadata": {"version": 1}}
                    }))
                    .into_response()
                }
            };
        let login = |Json(body): Json<Value>| async move {
            if body["role_id"] != ROLE_ID || body["secret_id"] != SECRET_ID {
                return (
                    StatusCode::BAD_REQUEST,
                    Json(json!({"errors": ["invalid role or secret ID"]})),
                )
                    .into_response();
            }
            Json(json!({"auth": {"client_token": ISSUED, "lease_duration": 3600, "renewable": true}}))
                .into_response()
        };
        let app = Router::new()
            .route("/v1/auth/approle/login", post(login))
            .route("/v1/{*rest}", get(read));
        rt.spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        FakeVault {
            address,
            tokens,
            rt: Some(rt),
        }
    }
}

#[test]
fn a_standalone_proxy_injects_vault_values_with_a_credential_from_its_environment() {
    let vault = FakeVault::start();
    let dir = Dir::new();
    let policy = dir.path().join("policy.toml");
    std::fs::write(
        &policy,
        format!(
            r#"version = 1
[secrets]
placeholders = ["DB_*"]

[[secrets.inject]]
vault = "kv/app#db_password"
name = "DB_PASSWORD"
env = "PGPASSWORD"

[[secrets.inject]]
vault = "kv/gone#x"
name = "DB_OTHER"
env = "OTHER"

[secrets.vault]
address = "{}"
auth = "token"
"#,
            vault.address
        ),
    )
    .expect("policy");
    let policy = policy.display().to_string();
    let mut p = Proxy::start_with(
        &dir,
        &["--policy", &policy],
        &[("FLOWLINK_VAULT_TOKEN", VAULT_TOKEN)],
    );

    let r = p.call(1, "env_sha", json!({"name": "PGPASSWORD"}));
    assert_eq!(text_of(&r), sha256_hex(DB.as_bytes()), "{}", p.stderr());
    assert_eq!(
        text_of(&p.call(2, "env", json!({"name": "FLOWLINK_VAULT_TOKEN"}))),
        "<unset>",
        "the proxy's Vault credential must not reach the server"
    );
    assert_eq!(
        text_of(&p.call(3, "env", json!({"name": "OTHER"}))),
        "<unset>"
    );
    p.wait_stderr("DB_OTHER (Vault kv/gone#x: ");
    assert!(
        vault
            .tokens
            .lock()
            .unwrap()
            .iter()
            .all(|t| t == VAULT_TOKEN)
    );

    let r = p.call(4, "leak", json!({"name": "PGPASSWORD", "how": "raw"}));
    assert_eq!(text_of(&r), "the value is [REDACTED:DB_PASSWORD]");
    let r = p.call(
        5,
        "echo",
        json!({"dsn": "postgres://app:{{secret:DB_PASSWORD}}@db/app"}),
    );
    assert_eq!(
        text_of(&r),
        r#"{"dsn": "postgres://app:[REDACTED:DB_PASSWORD]@db/app"}"#
    );
    let sent = dir
        .server_log()
        .into_iter()
        .rfind(|m| m["params"]["name"] == "echo")
        .expect("echo reached the server");
    assert_eq!(
        sent["params"]["arguments"]["dsn"],
        format!("postgres://app:{DB}@db/app")
    );
    // The credential itself is redacted like a secret.
    let r = p.call(6, "echo", json!({"t": VAULT_TOKEN}));
    assert_eq!(text_of(&r), r#"{"t": "[REDACTED:FLOWLINK_VAULT_TOKEN]"}"#);

    let (stdout, stderr) = p.finish();
    assert_clean("stdout", &stdout.join("\n"), &[DB, VAULT_TOKEN]);
    assert_clean("stderr", &stderr, &[DB, VAULT_TOKEN]);
    assert_data_dir_clean(&dir.data(), &[DB, VAULT_TOKEN]);
}

#[test]
fn an_enrolled_proxy_logs_in_to_vault_with_a_flowlink_secret() {
    let vault = FakeVault::start();
    let cp = Cp::start(&[("VAULT_SECRET_ID", SECRET_ID)]);
    *cp.state.policy.lock().unwrap() = format!(
        r#"version = 1
[[secrets.inject]]
vault = "kv/app#db_password"
name = "DB_PASSWORD"
env = "PGPASSWORD"

[secrets.vault]
address = "{}"
auth = "approle"
role_id = "{ROLE_ID}"
secret_id_secret = "VAULT_SECRET_ID"
"#,
        vault.address
    );
    let dir = Dir::new();
    dir.enrol(&cp);
    let mut p = Proxy::start(&dir, &[]);
    let r = p.call(1, "env_sha", json!({"name": "PGPASSWORD"}));
    assert_eq!(text_of(&r), sha256_hex(DB.as_bytes()), "{}", p.stderr());
    assert_eq!(vault.tokens.lock().unwrap().clone(), [ISSUED]);
    let r = p.call(2, "echo", json!({"a": SECRET_ID, "b": DB}));
    assert_eq!(
        text_of(&r),
        r#"{"a": "[REDACTED:VAULT_SECRET_ID]", "b": "[REDACTED:DB_PASSWORD]"}"#
    );
    let (stdout, stderr) = p.finish();
    assert_clean("stdout", &stdout.join("\n"), &[DB, SECRET_ID, ISSUED]);
    assert_clean("stderr", &stderr, &[DB, SECRET_ID]);
}
