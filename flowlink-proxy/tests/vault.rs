//! The Vault KV v2 client against a fake of Vault's HTTP API written here: an Axum server on
//! 127.0.0.1 that checks tokens and namespaces, issues AppRole tokens with a lease, serves KV v2
//! secrets, can be sealed, and counts what it is asked. The client gets the fake's base URL as
//! `address`, as a user would configure it.

mod support;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use flowlink_proxy::vault::{
    VaultAuth, VaultClient, VaultConfig, VaultError, VaultRef, parse_vault_ref,
};
use serde_json::{Value, json};
use support::private_ca;
use zeroize::Zeroizing;

const ROLE_ID: &str = "role-7f3a";
const SECRET_ID: &str = "sid-b9e1c4d2-5566-4e8f-9a0b-secretid";
const ROOT_TOKEN: &str = "hvs.STATICtokenVALUE0123456789";
const DB_PASSWORD: &str = "pg-Pa55w0rd-!-zx81";
const API_KEY: &str = "api-key-0000-1111-2222-3333";

// ---- the fake Vault --------------------------------------------------------------------------------

/// One request as the fake saw it.
#[derive(Clone, Debug)]
struct Seen {
    method: &'static str,
    path: String,
    token: Option<String>,
    namespace: Option<String>,
    body: Option<Value>,
}

struct FakeState {
    /// Required `X-Vault-Namespace`, if any.
    namespace: Option<String>,
    sealed: AtomicBool,
    /// Lease of the tokens AppRole logins issue, seconds.
    token_ttl: AtomicU64,
    issued: AtomicUsize,
    /// Valid tokens and when they expire.
    tokens: Mutex<HashMap<String, Option<Instant>>>,
    /// "mount/path" → (data, lease_duration).
    secrets: Mutex<HashMap<String, (Value, u64)>>,
    /// "mount/path" no token may read.
    denied: Mutex<HashSet<String>>,
    /// "mount/path" whose current version is deleted.
    deleted: Mutex<HashSet<String>>,
    seen: Mutex<Vec<Seen>>,
}

struct Fake {
    state: Arc<FakeState>,
    address: String,
    _server: tokio::task::JoinHandle<()>,
}

impl Fake {
    async fn start(namespace: Option<&str>) -> Fake {
        Self::serve(namespace, None).await
    }

    /// `tls`: certificate and key PEM files; the address is then `https://localhost:PORT`.
    async fn serve(namespace: Option<&str>, tls: Option<(&Path, &Path)>) -> Fake {
        let mut tokens = HashMap::new();
        tokens.insert(ROOT_TOKEN.to_owned(), None);
        let mut secrets = HashMap::new();
        secrets.insert(
            "kv/app".to_owned(),
            (
                json!({"db_password": DB_PASSWORD, "api_key": API_KEY, "port": 5432}),
                0,
            ),
        );
        secrets.insert("kv/other".to_owned(), (json!({"x": "other-value-1"}), 0));
        secrets.insert(
            "secret/team/leased".to_owned(),
            (json!({"token": "leased-value-42"}), 1),
        );
        let state = Arc::new(FakeState {
            namespace: namespace.map(str::to_owned),
            sealed: AtomicBool::new(false),
            token_ttl: AtomicU64::new(3600),
            issued: AtomicUsize::new(0),
            tokens: Mutex::new(tokens),
            secrets: Mutex::new(secrets),
            denied: Mutex::new(HashSet::new()),
            deleted: Mutex::new(HashSet::new()),
            seen: Mutex::new(Vec::new()),
        });
        let app = Router::new()
            .route("/v1/auth/approle/login", post(login))
            .route("/v1/{*rest}", get(read))
            .with_state(Arc::clone(&state));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let (address, server) = match tls {
            None => (
                format!("http://127.0.0.1:{port}"),
                tokio::spawn(async move {
                    let _ = axum::serve(listener, app).await;
                }),
            ),
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
                let server =
                    axum_server::from_tcp_rustls(listener.into_std().expect("std"), config)
                        .expect("tls server");
                (
                    format!("https://localhost:{port}"),
                    tokio::spawn(async move {
                        let _ = server.serve(app.into_make_service()).await;
                    }),
                )
            }
        };
        Fake {
            state,
            address,
            _server: server,
        }
    }

    fn seen(&self) -> Vec<Seen> {
        self.state.seen.lock().unwrap().clone()
    }

    fn logins(&self) -> Vec<Seen> {
        self.seen()
            .into_iter()
            .filter(|s| s.path == "/v1/auth/approle/login")
            .collect()
    }

    fn reads(&self) -> Vec<Seen> {
        self.seen()
            .into_iter()
            .filter(|s| s.method == "GET")
            .collect()
    }

    /// Revokes every token issued by AppRole logins (the static token stays).
    fn revoke_issued(&self) {
        self.state
            .tokens
            .lock()
            .unwrap()
            .retain(|t, _| t == ROOT_TOKEN);
    }
}

fn header(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

fn errors(status: StatusCode, message: &str) -> Response {
    (status, axum::Json(json!({"errors": [message]}))).into_response()
}

/// Namespace and seal checks every request goes through.
fn gate(state: &FakeState, headers: &HeaderMap) -> Option<Response> {
    if state.sealed.load(Ordering::SeqCst) {
        return Some(errors(StatusCode::SERVICE_UNAVAILABLE, "Vault is sealed"));
    }
    if header(headers, "x-vault-namespace") != state.namespace {
        // Vault answers a request in the wrong namespace as if nothing were there.
        return Some(errors(StatusCode::FORBIDDEN, "permission denied"));
    }
    None
}

async fn login(State(state): State<Arc<FakeState>>, headers: HeaderMap, body: Bytes) -> Response {
    let body: Option<Value> = serde_json::from_slice(&body).ok();
    state.seen.lock().unwrap().push(Seen {
        method: "POST",
        path: "/v1/auth/approle/login".into(),
        token: header(&headers, "x-vault-token"),
        namespace: header(&headers, "x-vault-namespace"),
        body: body.clone(),
    });
    if let Some(r) = gate(&state, &headers) {
        return r;
    }
    let body = body.unwrap_or(Value::Null);
    if body["role_id"] != ROLE_ID || body["secret_id"] != SECRET_ID {
        return errors(StatusCode::BAD_REQUEST, "invalid role or secret ID");
    }
    let n = state.issued.fetch_add(1, Ordering::SeqCst) + 1;
    let token = format!("hvs.issued-{n}");
    let ttl = state.token_ttl.load(Ordering::SeqCst);
    state.tokens.lock().unwrap().insert(
        token.clone(),
        Some(Instant::now() + Duration::from_secs(ttl)),
    );
    axum::Json(json!({
        "request_id": "r",
        "lease_duration": 0,
        "renewable": false,
        "data": null,
        "auth": {
            "client_token": token,
            "accessor": "acc",
            "policies": ["default", "app"],
            "lease_duration": ttl,
            "renewable": true
        }
    }))
    .into_response()
}

async fn read(
    State(state): State<Arc<FakeState>>,
    UrlPath(rest): UrlPath<String>,
    headers: HeaderMap,
) -> Response {
    state.seen.lock().unwrap().push(Seen {
        method: "GET",
        path: format!("/v1/{rest}"),
        token: header(&headers, "x-vault-token"),
        namespace: header(&headers, "x-vault-namespace"),
        body: None,
    });
    if let Some(r) = gate(&state, &headers) {
        return r;
    }
    let valid = header(&headers, "x-vault-token").is_some_and(|t| {
        state
            .tokens
            .lock()
            .unwrap()
            .get(&t)
            .is_some_and(|exp| exp.is_none_or(|e| Instant::now() < e))
    });
    if !valid {
        return errors(StatusCode::FORBIDDEN, "permission denied");
    }
    let Some((mount, path)) = rest.split_once("/data/") else {
        return errors(
            StatusCode::NOT_FOUND,
            &format!("no handler for route \"{rest}\". route entry not found."),
        );
    };
    let key = format!("{mount}/{path}");
    if state.denied.lock().unwrap().contains(&key) {
        return errors(StatusCode::FORBIDDEN, "permission denied");
    }
    if !["kv", "secret"].contains(&mount) {
        return errors(
            StatusCode::NOT_FOUND,
            &format!("no handler for route \"{rest}\". route entry not found."),
        );
    }
    if state.deleted.lock().unwrap().contains(&key) {
        return (
            StatusCode::NOT_FOUND,
            axum::Json(json!({"data": {"data": null, "metadata": {
                "created_time": "2026-11-25T10:00:00Z",
                "deletion_time": "2026-11-25T11:00:00Z",
                "destroyed": false,
                "version": 3
            }}})),
        )
            .into_response();
    }
    match state.secrets.lock().unwrap().get(&key) {
        Some((data, lease)) => axum::Json(json!({
            "request_id": "r",
            "lease_id": "",
            "renewable": false,
            "lease_duration": lease,
            "data": {"data": data, "metadata": {"version": 1, "deletion_time": "", "destroyed": false}}
        }))
        .into_response(),
        None => errors(StatusCode::NOT_FOUND, ""),
    }
}

// ---- helpers ---------------------------------------------------------------------------------------

fn approle() -> VaultAuth {
    VaultAuth::AppRole {
        role_id: ROLE_ID.into(),
        secret_id: Zeroizing::new(SECRET_ID.into()),
    }
}

fn token_auth() -> VaultAuth {
    VaultAuth::Token(Zeroizing::new(ROOT_TOKEN.into()))
}

fn client(fake: &Fake, auth: VaultAuth, namespace: Option<&str>, cache: Duration) -> VaultClient {
    VaultClient::new(VaultConfig {
        address: fake.address.clone(),
        namespace: namespace.map(str::to_owned),
        auth,
        ca_file: None,
        cache,
    })
    .expect("client")
}

/// Every value a message or `Debug` must never show.
const NEVER_SHOWN: &[&str] = &[
    SECRET_ID,
    ROOT_TOKEN,
    DB_PASSWORD,
    API_KEY,
    "hvs.issued",
    "other-value-1",
    "leased-value-42",
];

fn assert_discreet(e: &VaultError) -> String {
    let shown = format!("{e}");
    let debug = format!("{e:?}");
    for secret in NEVER_SHOWN {
        assert!(!shown.contains(secret), "{secret} in: {shown}");
        assert!(!debug.contains(secret), "{secret} in: {debug}");
    }
    shown
}

// ---- references ------------------------------------------------------------------------------------

#[test]
fn references_parse_as_mount_path_and_key() {
    let r = parse_vault_ref("kv/app#db_password").expect("parses");
    assert_eq!(
        r,
        VaultRef {
            mount: "kv".into(),
            path: "app".into(),
            key: "db_password".into()
        }
    );
    assert_eq!(r.to_string(), "kv/app#db_password");
    let r = parse_vault_ref("/secret/team/app/#api-key").expect("parses");
    assert_eq!((r.mount.as_str(), r.path.as_str()), ("secret", "team/app"));
    assert_eq!(r.key, "api-key");

    for (bad, says) in [
        ("kv/app", "`#key` part is missing"),
        ("kv/app#", "key after `#` is empty"),
        ("kv#key", "no secret path"),
        ("/app#key", "no secret path"),
        ("kv/a//b#key", "empty, `.` or `..` segment"),
        ("kv/../sys#key", "`..`"),
        ("kv/app#a#b", "more than one `#`"),
        ("kv/my app#key", "spaces"),
    ] {
        let e = parse_vault_ref(bad).expect_err(bad).to_string();
        assert!(e.contains(says), "{bad}: {e}");
        assert!(e.contains("mount/path#key"), "{e}");
    }
}

#[tokio::test]
async fn read_refuses_paths_the_url_would_silently_change() {
    let fake = Fake::start(None).await;
    let vault = client(&fake, token_auth(), None, Duration::ZERO);
    for (mount, path, key) in [
        ("kv", "other/../app", "db_password"),
        ("kv", "./app", "db_password"),
        ("kv", "a//app", "db_password"),
        ("", "app", "db_password"),
        ("kv", "app", ""),
    ] {
        let e = vault.read(mount, path, key).await.expect_err(path);
        assert!(matches!(e, VaultError::BadReference { .. }), "{e:?}");
    }
    assert!(fake.seen().is_empty(), "nothing was sent");
    // Slashes around the mount and the path are fine.
    assert_eq!(
        vault
            .read("/kv/", "/app/", "db_password")
            .await
            .expect("read")
            .as_str(),
        DB_PASSWORD
    );
}

// ---- authentication --------------------------------------------------------------------------------

#[tokio::test]
async fn a_token_is_sent_as_x_vault_token_and_the_key_is_read() {
    let fake = Fake::start(None).await;
    // A trailing slash, as users sometimes write VAULT_ADDR.
    let vault = VaultClient::new(VaultConfig {
        address: format!("{}/", fake.address),
        namespace: None,
        auth: token_auth(),
        ca_file: None,
        cache: Duration::from_secs(300),
    })
    .expect("client");
    let value = vault.read("kv", "app", "db_password").await.expect("read");
    assert_eq!(value.as_str(), DB_PASSWORD);
    // Non-string values come as their JSON text.
    assert_eq!(
        vault
            .read("kv", "app", "port")
            .await
            .expect("port")
            .as_str(),
        "5432"
    );
    let seen = fake.seen();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0].method, "GET");
    assert_eq!(seen[0].path, "/v1/kv/data/app");
    assert_eq!(seen[0].token.as_deref(), Some(ROOT_TOKEN));
    assert_eq!(seen[0].namespace, None);
    assert!(fake.logins().is_empty());
}

#[tokio::test]
async fn approle_logs_in_with_role_and_secret_id_and_reuses_the_token() {
    let fake = Fake::start(None).await;
    let vault = client(&fake, approle(), None, Duration::ZERO);
    assert_eq!(
        vault
            .read("kv", "app", "api_key")
            .await
            .expect("read")
            .as_str(),
        API_KEY
    );
    assert_eq!(
        vault.read("kv", "other", "x").await.expect("read").as_str(),
        "other-value-1"
    );
    assert_eq!(
        vault
            .read("kv", "app", "api_key")
            .await
            .expect("read")
            .as_str(),
        API_KEY
    );
    let logins = fake.logins();
    assert_eq!(logins.len(), 1, "one login for three reads: {logins:?}");
    assert_eq!(
        logins[0].body,
        Some(json!({"role_id": ROLE_ID, "secret_id": SECRET_ID}))
    );
    assert_eq!(logins[0].token, None, "the login carries no token");
    let reads = fake.reads();
    assert_eq!(reads.len(), 3, "cache 0: every read asks Vault");
    for r in &reads {
        assert_eq!(r.token.as_deref(), Some("hvs.issued-1"));
    }
}

#[tokio::test]
async fn the_approle_token_is_replaced_when_its_lease_ends() {
    let fake = Fake::start(None).await;
    fake.state.token_ttl.store(2, Ordering::SeqCst);
    let vault = client(&fake, approle(), None, Duration::ZERO);
    vault.read("kv", "app", "api_key").await.expect("first");
    vault.read("kv", "app", "api_key").await.expect("second");
    assert_eq!(fake.logins().len(), 1, "reused within its lease");
    // The client renews a tenth of the lease before its end: at 1.8 s here.
    tokio::time::sleep(Duration::from_millis(1900)).await;
    vault.read("kv", "app", "api_key").await.expect("third");
    assert_eq!(fake.logins().len(), 2, "logged in again at the lease's end");
    let tokens: Vec<Option<String>> = fake.reads().into_iter().map(|r| r.token).collect();
    assert_eq!(
        tokens,
        [
            Some("hvs.issued-1".to_owned()),
            Some("hvs.issued-1".to_owned()),
            Some("hvs.issued-2".to_owned())
        ]
    );
    // No 403 was needed to find out: the token was replaced before Vault refused it.
    assert_eq!(fake.reads().len(), 3);
}

#[tokio::test]
async fn a_revoked_approle_token_is_replaced_after_one_403() {
    let fake = Fake::start(None).await;
    let vault = client(&fake, approle(), None, Duration::ZERO);
    vault.read("kv", "app", "api_key").await.expect("first");
    fake.revoke_issued();
    let value = vault
        .read("kv", "app", "api_key")
        .await
        .expect("after revocation");
    assert_eq!(value.as_str(), API_KEY);
    assert_eq!(fake.logins().len(), 2);
    let tokens: Vec<Option<String>> = fake.reads().into_iter().map(|r| r.token).collect();
    assert_eq!(
        tokens,
        [
            Some("hvs.issued-1".to_owned()),
            Some("hvs.issued-1".to_owned()),
            Some("hvs.issued-2".to_owned())
        ]
    );
}

#[tokio::test]
async fn a_path_without_policy_logs_in_again_once_then_says_which_policy_is_missing() {
    let fake = Fake::start(None).await;
    fake.state
        .denied
        .lock()
        .unwrap()
        .insert("kv/app".to_owned());
    let vault = client(&fake, approle(), None, Duration::from_secs(60));
    let e = vault
        .read("kv", "app", "db_password")
        .await
        .expect_err("denied");
    assert!(matches!(e, VaultError::PermissionDenied { .. }), "{e:?}");
    let msg = assert_discreet(&e);
    assert!(msg.contains("403 permission denied"), "{msg}");
    assert!(msg.contains("AppRole role has no policy"), "{msg}");
    assert!(msg.contains("`kv/data/app`"), "{msg}");
    assert!(msg.contains(r#"capabilities = ["read"]"#), "{msg}");
    assert_eq!(
        fake.logins().len(),
        2,
        "one login, and one more after the 403"
    );
    assert_eq!(fake.reads().len(), 2, "one retry, not more");

    // A static token cannot log in again: one request, the same advice.
    let vault = client(&fake, token_auth(), None, Duration::from_secs(60));
    let e = vault
        .read("kv", "app", "db_password")
        .await
        .expect_err("denied");
    let msg = assert_discreet(&e);
    assert!(
        msg.contains("the token has no policy granting `read` on `kv/data/app`"),
        "{msg}"
    );
    assert_eq!(fake.reads().len(), 3);
}

#[tokio::test]
async fn a_refused_approle_login_says_to_check_the_role_and_secret_id() {
    let fake = Fake::start(None).await;
    let vault = client(
        &fake,
        VaultAuth::AppRole {
            role_id: ROLE_ID.into(),
            secret_id: Zeroizing::new("sid-wrong-and-secret".into()),
        },
        None,
        Duration::ZERO,
    );
    let e = vault
        .read("kv", "app", "api_key")
        .await
        .expect_err("refused");
    assert!(
        matches!(e, VaultError::LoginRefused { status: 400, .. }),
        "{e:?}"
    );
    let msg = assert_discreet(&e);
    assert!(!msg.contains("sid-wrong-and-secret"), "{msg}");
    assert!(msg.contains("invalid role or secret ID"), "{msg}");
    assert!(msg.contains("check role_id and the secret_id"), "{msg}");
    assert!(fake.reads().is_empty());
}

// ---- namespaces ------------------------------------------------------------------------------------

#[tokio::test]
async fn the_namespace_header_goes_with_every_request() {
    let fake = Fake::start(Some("team-a")).await;
    let vault = client(&fake, approle(), Some("team-a"), Duration::ZERO);
    assert_eq!(
        vault
            .read("kv", "app", "db_password")
            .await
            .expect("read")
            .as_str(),
        DB_PASSWORD
    );
    let seen = fake.seen();
    assert_eq!(seen.len(), 2, "{seen:?}");
    for s in &seen {
        assert_eq!(s.namespace.as_deref(), Some("team-a"), "{s:?}");
    }

    // Without the namespace the fake (like Vault) refuses, and the message says which
    // namespace was used (none).
    let vault = client(&fake, token_auth(), None, Duration::ZERO);
    let e = vault
        .read("kv", "app", "db_password")
        .await
        .expect_err("no namespace");
    let msg = assert_discreet(&e);
    assert!(msg.contains("403"), "{msg}");
    let vault = client(&fake, approle(), Some("team-b"), Duration::ZERO);
    let e = vault
        .read("kv", "app", "db_password")
        .await
        .expect_err("wrong namespace");
    let msg = assert_discreet(&e);
    assert!(msg.contains("in namespace `team-b`"), "{msg}");
}

// ---- caching ---------------------------------------------------------------------------------------

#[tokio::test]
async fn values_are_cached_for_the_configured_time() {
    let fake = Fake::start(None).await;
    let vault = client(&fake, token_auth(), None, Duration::from_secs(1));
    for _ in 0..3 {
        assert_eq!(
            vault
                .read("kv", "app", "db_password")
                .await
                .expect("read")
                .as_str(),
            DB_PASSWORD
        );
    }
    // Another key of the same secret comes from the same answer.
    assert_eq!(
        vault
            .read("kv", "app", "api_key")
            .await
            .expect("read")
            .as_str(),
        API_KEY
    );
    assert_eq!(fake.reads().len(), 1, "cache hits");
    vault.read("kv", "other", "x").await.expect("other path");
    assert_eq!(fake.reads().len(), 2, "another path is another request");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    vault
        .read("kv", "app", "db_password")
        .await
        .expect("after expiry");
    assert_eq!(fake.reads().len(), 3, "asked again once the cache expired");

    // A changed value is seen after expiry.
    fake.state.secrets.lock().unwrap().insert(
        "kv/app".to_owned(),
        (json!({"db_password": "rotated-value-9"}), 0),
    );
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(
        vault
            .read("kv", "app", "db_password")
            .await
            .expect("rotated")
            .as_str(),
        "rotated-value-9"
    );
}

#[tokio::test]
async fn a_lease_duration_from_vault_wins_over_the_configured_time() {
    let fake = Fake::start(None).await;
    // Five minutes configured; the secret's lease is one second.
    let vault = client(&fake, token_auth(), None, Duration::from_secs(300));
    let read = || vault.read("secret", "team/leased", "token");
    assert_eq!(read().await.expect("read").as_str(), "leased-value-42");
    assert_eq!(read().await.expect("read").as_str(), "leased-value-42");
    assert_eq!(fake.reads().len(), 1, "cached within the lease");
    assert_eq!(fake.reads()[0].path, "/v1/secret/data/team/leased");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    read().await.expect("after the lease");
    assert_eq!(fake.reads().len(), 2, "the lease ended: asked again");
}

// ---- errors ----------------------------------------------------------------------------------------

#[tokio::test]
async fn a_sealed_vault_says_so() {
    let fake = Fake::start(None).await;
    fake.state.sealed.store(true, Ordering::SeqCst);
    for auth in [token_auth(), approle()] {
        let vault = client(&fake, auth, None, Duration::ZERO);
        let e = vault
            .read("kv", "app", "db_password")
            .await
            .expect_err("sealed");
        assert!(matches!(e, VaultError::Sealed { .. }), "{e:?}");
        let msg = assert_discreet(&e);
        assert!(msg.contains("is sealed (503)"), "{msg}");
        assert!(msg.contains("vault operator unseal"), "{msg}");
        assert!(msg.contains(&fake.address), "{msg}");
    }
}

#[tokio::test]
async fn not_found_names_the_mount_and_the_path() {
    let fake = Fake::start(None).await;
    let vault = client(&fake, token_auth(), None, Duration::ZERO);
    let e = vault.read("kv", "nope/deeper", "k").await.expect_err("404");
    assert!(matches!(e, VaultError::NotFound { .. }), "{e:?}");
    let msg = assert_discreet(&e);
    assert!(msg.contains("no secret at kv/nope/deeper (404)"), "{msg}");
    assert!(msg.contains("mounted at `kv/`"), "{msg}");
    assert!(msg.contains("vault kv get -mount=kv nope/deeper"), "{msg}");

    // No such mount: Vault's own words are passed on.
    let e = vault.read("kv2", "app", "k").await.expect_err("no mount");
    let msg = assert_discreet(&e);
    assert!(msg.contains("no secret at kv2/app"), "{msg}");
    assert!(msg.contains("no handler for route"), "{msg}");

    // The current version deleted.
    fake.state
        .deleted
        .lock()
        .unwrap()
        .insert("kv/app".to_owned());
    let e = vault
        .read("kv", "app", "db_password")
        .await
        .expect_err("deleted");
    assert!(
        matches!(
            e,
            VaultError::Deleted {
                version: Some(3),
                ..
            }
        ),
        "{e:?}"
    );
    let msg = assert_discreet(&e);
    assert!(msg.contains("deleted in its current version (3)"), "{msg}");
}

#[tokio::test]
async fn a_missing_key_names_the_keys_present_but_never_their_values() {
    let fake = Fake::start(None).await;
    let vault = client(&fake, token_auth(), None, Duration::from_secs(60));
    for _ in 0..2 {
        // Fetched, then from the cache: the same answer.
        let e = vault
            .read("kv", "app", "db_pass")
            .await
            .expect_err("missing");
        assert!(matches!(e, VaultError::MissingKey { .. }), "{e:?}");
        let msg = assert_discreet(&e);
        assert!(msg.contains("kv/app has no key `db_pass`"), "{msg}");
        assert!(
            msg.contains("its keys are: api_key, db_password, port"),
            "{msg}"
        );
    }
    assert_eq!(fake.reads().len(), 1);
}

#[tokio::test]
async fn no_message_or_debug_output_shows_a_secret() {
    let fake = Fake::start(None).await;
    let config = VaultConfig {
        address: fake.address.clone(),
        namespace: Some("team-a".into()),
        auth: approle(),
        ca_file: None,
        cache: Duration::from_secs(60),
    };
    let debug = format!(
        "{config:?} {:?}",
        VaultConfig {
            auth: token_auth(),
            ..config.clone()
        }
    );
    for secret in NEVER_SHOWN {
        assert!(!debug.contains(secret), "{secret} in {debug}");
    }
    assert!(debug.contains(ROLE_ID), "{debug}");
    assert!(debug.contains("<hidden>"), "{debug}");

    let vault = client(&fake, approle(), None, Duration::from_secs(60));
    vault.read("kv", "app", "db_password").await.expect("read");
    let debug = format!("{vault:?}");
    for secret in NEVER_SHOWN {
        assert!(!debug.contains(secret), "{secret} in {debug}");
    }
    // Every error the client can give here, with values cached and a token held.
    let mut errs = vec![
        vault
            .read("kv", "app", "nope")
            .await
            .expect_err("missing key"),
        vault.read("kv", "gone", "x").await.expect_err("404"),
    ];
    fake.state.denied.lock().unwrap().insert("kv/other".into());
    errs.push(vault.read("kv", "other", "x").await.expect_err("403"));
    fake.state.sealed.store(true, Ordering::SeqCst);
    errs.push(vault.read("kv", "third", "x").await.expect_err("sealed"));
    for e in &errs {
        assert_discreet(e);
    }
}

#[test]
fn addresses_are_checked_before_anything_is_sent() {
    let make = |address: &str, ca_file: Option<PathBuf>| {
        VaultClient::new(VaultConfig {
            address: address.into(),
            namespace: None,
            auth: token_auth(),
            ca_file,
            cache: Duration::ZERO,
        })
    };
    let e = make("http://vault.example:8200", None).expect_err("plain http elsewhere");
    let msg = assert_discreet(&e);
    assert!(
        msg.contains("refusing the unencrypted Vault address"),
        "{msg}"
    );
    assert!(make("http://localhost:8200", None).is_ok());
    assert!(make("http://[::1]:8200", None).is_ok());
    assert!(make("https://vault.example:8200/prefix/", None).is_ok());
    let e = make("vault.example:8200", None).expect_err("no scheme");
    assert!(assert_discreet(&e).contains("https://"), "{e}");
    let e = make("https://vault.example:8200/?x=1", None).expect_err("query");
    assert!(assert_discreet(&e).contains("query"), "{e}");
    let e = make(
        "https://vault.example:8200",
        Some(PathBuf::from("/nonexistent/vault-ca.pem")),
    )
    .expect_err("missing CA file");
    let msg = assert_discreet(&e);
    assert!(msg.contains("/nonexistent/vault-ca.pem"), "{msg}");
    assert!(msg.contains("set ca_file"), "{msg}");
}

#[tokio::test]
async fn unreachable_vault_says_where() {
    // A port nothing listens on.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let vault = VaultClient::new(VaultConfig {
        address: format!("http://127.0.0.1:{port}"),
        namespace: None,
        auth: token_auth(),
        ca_file: None,
        cache: Duration::ZERO,
    })
    .expect("client");
    let e = vault.read("kv", "app", "x").await.expect_err("unreachable");
    assert!(matches!(e, VaultError::Unreachable { .. }), "{e:?}");
    let msg = assert_discreet(&e);
    assert!(
        msg.contains(&format!("cannot reach Vault at http://127.0.0.1:{port}")),
        "{msg}"
    );
}

// ---- TLS with a private CA ---------------------------------------------------------------------------

#[tokio::test]
async fn https_with_a_private_ca_file() {
    let certs = tempfile::tempdir().expect("tempdir");
    let (ca, cert, key) = private_ca(certs.path());
    let fake = Fake::serve(None, Some((&cert, &key))).await;
    let config = |ca_file: Option<PathBuf>| VaultConfig {
        address: fake.address.clone(),
        namespace: None,
        auth: approle(),
        ca_file,
        cache: Duration::ZERO,
    };
    // Without the CA the certificate is not trusted, and the message says what to set.
    let vault = VaultClient::new(config(None)).expect("client");
    let e = vault
        .read("kv", "app", "api_key")
        .await
        .expect_err("untrusted");
    let msg = assert_discreet(&e);
    assert!(msg.contains("cannot reach Vault"), "{msg}");
    assert!(msg.contains("set ca_file"), "{msg}");
    assert!(fake.seen().is_empty());

    let vault = VaultClient::new(config(Some(ca))).expect("client");
    assert_eq!(
        vault
            .read("kv", "app", "api_key")
            .await
            .expect("read")
            .as_str(),
        API_KEY
    );
    assert_eq!(fake.logins().len(), 1);
}
