//! Shared test utilities: a control plane started in-process on 127.0.0.1:0 over a fresh
//! database (a temporary SQLite file, or a new schema of the PostgreSQL database named by
//! `FLOWLINK_TEST_POSTGRES_URL`), and an HTTP client that keeps the session cookie and CSRF
//! token like a browser would.
//!
//! `both!(name)` turns `async fn name(backend: Backend)` into one test per engine.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;

use flowlink_control::api::AppState;
use flowlink_control::config::Config;
use flowlink_control::server::{self, Server};
use flowlink_control::store::{Backend, Store};
use serde_json::{Value, json};

/// One test per engine from `async fn $name(backend: Backend)`.
#[macro_export]
macro_rules! both {
    ($($name:ident),* $(,)?) => {
        mod engines {
            $(
                pub mod $name {
                    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                    async fn sqlite() {
                        super::super::$name(flowlink_control::store::Backend::Sqlite).await;
                    }
                    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                    async fn postgres() {
                        super::super::$name(flowlink_control::store::Backend::Postgres).await;
                    }
                }
            )*
        }
    };
}

/// The PostgreSQL URL tests must use. Unset is a failure, not a skip: a suite told nothing
/// about its database must not pass by testing half of the engines.
pub fn postgres_url() -> String {
    std::env::var("FLOWLINK_TEST_POSTGRES_URL").unwrap_or_else(|_| {
        panic!(
            "FLOWLINK_TEST_POSTGRES_URL is not set; point it at a PostgreSQL database tests may create schemas in \
             (scripts/test sets postgres://postgres@127.0.0.1:5432/test)"
        )
    })
}

/// A fresh, empty database that is removed when dropped.
pub struct TestDb {
    /// URL to connect to.
    pub url: String,
    /// Keeps the SQLite directory alive.
    pub dir: tempfile::TempDir,
    schema: Option<String>,
}

impl TestDb {
    /// A new database of `backend`.
    pub async fn new(backend: Backend) -> TestDb {
        let dir = tempfile::tempdir().expect("tempdir");
        match backend {
            Backend::Sqlite => TestDb {
                url: format!("sqlite://{}", dir.path().join("control.sqlite3").display()),
                dir,
                schema: None,
            },
            Backend::Postgres => {
                let base = postgres_url();
                let schema = format!("t_{}", uuid::Uuid::new_v4().simple());
                let admin = Store::connect(&base).await.unwrap_or_else(|e| {
                    panic!("cannot reach FLOWLINK_TEST_POSTGRES_URL ({base}): {e}")
                });
                sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
                    .execute(admin.pool())
                    .await
                    .expect("create schema");
                admin.close().await;
                let sep = if base.contains('?') { '&' } else { '?' };
                TestDb {
                    url: format!("{base}{sep}options=-c%20search_path%3D{schema}"),
                    dir,
                    schema: Some(schema),
                }
            }
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Some(schema) = self.schema.take() {
            let base = postgres_url();
            // Drop is synchronous; use a private runtime on a plain thread.
            let _ = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build();
                if let Ok(rt) = rt {
                    rt.block_on(async {
                        if let Ok(store) = Store::connect(&base).await {
                            let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                                "DROP SCHEMA {schema} CASCADE"
                            )))
                            .execute(store.pool())
                            .await;
                            store.close().await;
                        }
                    });
                }
            })
            .join();
        }
    }
}

/// A running control plane.
pub struct TestServer {
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    /// The address.
    pub addr: SocketAddr,
    /// Its database (for assertions the API cannot make).
    pub store: Store,
    /// The first-run token.
    pub setup_token: Option<String>,
    /// The configuration it runs with.
    pub config: Arc<Config>,
    /// The server's shared state (to call the library as the link would, or watch the hub).
    pub state: AppState,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
    /// Keeps the database alive.
    pub db: TestDb,
}

impl TestServer {
    /// Starts a server on a fresh database with default settings.
    pub async fn start(backend: Backend) -> TestServer {
        TestServer::start_with(backend, |_| {}).await
    }

    /// Starts a server on a fresh database; `tweak` may change the configuration.
    pub async fn start_with(backend: Backend, tweak: impl FnOnce(&mut Config)) -> TestServer {
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let db = TestDb::new(backend).await;
        let mut config = Config::for_data_dir(db.dir.path());
        config.database_url = db.url.clone();
        config.listen = "127.0.0.1:0".parse().expect("addr");
        tweak(&mut config);
        let store = server::open_store(&config).await.expect("open store");
        let setup_token = server::first_run_token(&store).await.expect("setup token");
        let state = AppState::new(store.clone(), config.clone());
        let srv = Server::bind(state.clone()).await.expect("bind");
        let addr = srv.local_addr().expect("addr");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let _ = srv
                .run(async move {
                    let _ = stopped.await;
                })
                .await;
        });
        let scheme = if config.serves_tls() { "https" } else { "http" };
        TestServer {
            base: format!("{scheme}://{addr}"),
            addr,
            store,
            setup_token,
            config: Arc::new(config),
            state,
            stop: Some(stop),
            task: Some(task),
            db,
        }
    }

    /// A client without credentials.
    pub fn client(&self) -> TestClient {
        TestClient::new(&self.base)
    }

    /// Creates the owner and the org `acme` through first-run set-up and returns the owner,
    /// signed in.
    pub async fn owner(&self) -> TestClient {
        let token = self.setup_token.clone().expect("first-run token");
        let c = self.client();
        let (status, body) = c
            .post(
                "/api/v1/setup",
                json!({"token": token, "email": "owner@acme.test", "password": PASSWORD,
                       "display_name": "Olive Owner", "org_name": "Acme", "org_slug": "acme"}),
            )
            .await;
        assert_eq!(status, 201, "setup: {body}");
        c.login("owner@acme.test", PASSWORD).await
    }

    /// Creates another organisation with its own owner (directly in the store) and returns that
    /// owner signed in.
    pub async fn other_org(&self, slug: &str) -> TestClient {
        let email = format!("owner@{slug}.test");
        let hash = flowlink_control::auth::password::hash(PASSWORD).expect("hash");
        let user = self
            .store
            .create_user(&email, "Other Owner", Some(&hash))
            .await
            .expect("user");
        let org = self.store.create_org(slug, slug).await.expect("org");
        self.store
            .add_member(&org.id, &user.id, "owner")
            .await
            .expect("member");
        self.client().login(&email, PASSWORD).await
    }

    /// Adds `email` to `org` with `role` (through the API, as `admin`) and returns them signed in.
    pub async fn member(
        &self,
        admin: &TestClient,
        org: &str,
        email: &str,
        role: &str,
    ) -> TestClient {
        let (status, body) = admin
            .post(
                &format!("/api/v1/orgs/{org}/members"),
                json!({"email": email, "role": role, "display_name": role, "password": PASSWORD}),
            )
            .await;
        assert_eq!(status, 201, "add member: {body}");
        self.client().login(email, PASSWORD).await
    }

    /// Stops the server gracefully and waits for it.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// The password every test account uses.
pub const PASSWORD: &str = "tulip orbit canvas 42";

/// An HTTP client that behaves like a browser for the session cookie and the CSRF token, or
/// like a script with a bearer token.
#[derive(Clone)]
pub struct TestClient {
    /// Base URL.
    pub base: String,
    /// The HTTP client (no redirects followed, no cookie store: cookies are handled here).
    pub http: reqwest::Client,
    /// `flowlink_session=…` when signed in.
    pub cookie: Option<String>,
    /// The session's CSRF token.
    pub csrf: Option<String>,
    /// An API token to send as `Authorization: Bearer`.
    pub bearer: Option<String>,
}

impl TestClient {
    /// A client for `base`.
    pub fn new(base: &str) -> TestClient {
        TestClient {
            base: base.to_string(),
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .danger_accept_invalid_certs(true)
                .build()
                .expect("client"),
            cookie: None,
            csrf: None,
            bearer: None,
        }
    }

    /// The same credentials over new connections (a connection the server closed, e.g. after
    /// refusing an oversized body, may still sit in this client's pool).
    pub fn fresh_connection(&self) -> TestClient {
        TestClient {
            http: TestClient::new(&self.base).http,
            ..self.clone()
        }
    }

    /// The same server with only `token` as credentials.
    pub fn with_token(&self, token: &str) -> TestClient {
        TestClient {
            cookie: None,
            csrf: None,
            bearer: Some(token.to_string()),
            ..self.clone()
        }
    }

    /// Signs in with a password (no second factor) and returns the signed-in client.
    pub async fn login(&self, email: &str, password: &str) -> TestClient {
        let mut c = self.clone();
        let (status, body) = c.sign_in(email, password).await;
        assert_eq!(status, 200, "login {email}: {body}");
        assert_eq!(body["stage"], "complete", "login {email}: {body}");
        c
    }

    /// POSTs the sign-in form; keeps the cookie and CSRF token of the response.
    pub async fn sign_in(&mut self, email: &str, password: &str) -> (u16, Value) {
        let resp = self
            .http
            .post(format!("{}/api/v1/auth/login", self.base))
            .json(&json!({"email": email, "password": password}))
            .send()
            .await
            .expect("login request");
        self.absorb(resp).await
    }

    /// Takes the session cookie and CSRF token from a response, returns status and body.
    pub async fn absorb(&mut self, resp: reqwest::Response) -> (u16, Value) {
        for v in resp.headers().get_all(reqwest::header::SET_COOKIE) {
            let v = v.to_str().unwrap_or("");
            if let Some(rest) = v.strip_prefix("flowlink_session=") {
                let value = rest.split(';').next().unwrap_or("");
                self.cookie = if value.is_empty() {
                    None
                } else {
                    Some(format!("flowlink_session={value}"))
                };
            }
        }
        let (status, body) = read(resp).await;
        if let Some(csrf) = body.get("csrf_token").and_then(Value::as_str) {
            self.csrf = Some(csrf.to_string());
        }
        (status, body)
    }

    /// A request with this client's credentials.
    pub fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let mut rb = self
            .http
            .request(method.clone(), format!("{}{path}", self.base));
        if let Some(c) = &self.cookie {
            rb = rb.header(reqwest::header::COOKIE, c);
        }
        if let Some(t) = &self.csrf
            && method != reqwest::Method::GET
        {
            rb = rb.header("x-csrf-token", t);
        }
        if let Some(b) = &self.bearer {
            rb = rb.bearer_auth(b);
        }
        rb
    }

    /// GET → (status, JSON body or `null`).
    pub async fn get(&self, path: &str) -> (u16, Value) {
        read(
            self.request(reqwest::Method::GET, path)
                .send()
                .await
                .expect("GET"),
        )
        .await
    }

    /// POST JSON.
    pub async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        read(
            self.request(reqwest::Method::POST, path)
                .json(&body)
                .send()
                .await
                .expect("POST"),
        )
        .await
    }

    /// PUT JSON.
    pub async fn put(&self, path: &str, body: Value) -> (u16, Value) {
        read(
            self.request(reqwest::Method::PUT, path)
                .json(&body)
                .send()
                .await
                .expect("PUT"),
        )
        .await
    }

    /// PATCH JSON.
    pub async fn patch(&self, path: &str, body: Value) -> (u16, Value) {
        read(
            self.request(reqwest::Method::PATCH, path)
                .json(&body)
                .send()
                .await
                .expect("PATCH"),
        )
        .await
    }

    /// DELETE.
    pub async fn delete(&self, path: &str) -> (u16, Value) {
        read(
            self.request(reqwest::Method::DELETE, path)
                .send()
                .await
                .expect("DELETE"),
        )
        .await
    }
}

/// Status and JSON body (`null` when empty, `{"text": …}` when not JSON).
pub async fn read(resp: reqwest::Response) -> (u16, Value) {
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap_or_default();
    let body = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or_else(|_| json!({ "text": text }))
    };
    (status, body)
}

/// The error code of an error body.
pub fn code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or("")
}

/// A self-signed server certificate for `localhost` / `127.0.0.1` (PEM files in `dir`).
pub fn make_cert(dir: &std::path::Path) -> flowlink_control::config::TlsFiles {
    let cnf = dir.join("openssl.cnf");
    std::fs::write(
        &cnf,
        "[req]\ndistinguished_name = dn\nx509_extensions = leaf\nprompt = no\n\
         [dn]\nCN = localhost\n\
         [leaf]\nbasicConstraints = critical,CA:FALSE\nkeyUsage = critical,digitalSignature\n\
         extendedKeyUsage = serverAuth\nsubjectAltName = DNS:localhost,IP:127.0.0.1\n",
    )
    .expect("write openssl.cnf");
    let cert = dir.join("cert.pem");
    let key = dir.join("key.pem");
    let out = std::process::Command::new("openssl")
        .args(["req", "-x509", "-config"])
        .arg(&cnf)
        .args([
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "2",
            "-keyout",
        ])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run `openssl` to make a test certificate ({e}); install Debian's openssl package")
        });
    assert!(
        out.status.success(),
        "openssl req failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    flowlink_control::config::TlsFiles { cert, key }
}

// ---------------------------------------------------------------------------------------------
// Web pages, as a browser uses them.

/// GET a page with the client's cookie: status and HTML. A 200 page carries the pages' content
/// security policy.
pub async fn page(c: &TestClient, path: &str) -> (u16, String) {
    let resp = c
        .request(reqwest::Method::GET, path)
        .send()
        .await
        .expect("GET page");
    let status = resp.status().as_u16();
    let html = resp
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/html"));
    if status == 200 && html {
        let csp = resp
            .headers()
            .get(reqwest::header::CONTENT_SECURITY_POLICY)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        assert!(csp.contains("script-src 'self'"), "{path}: CSP {csp:?}");
    }
    (status, resp.text().await.unwrap_or_default())
}

/// POSTs a form as a browser does: the client's cookie, its CSRF token as the form field
/// `csrf_token` (no header), same-origin. Returns status, `Location` and body.
pub async fn form(c: &TestClient, path: &str, fields: &[(&str, &str)]) -> (u16, String, String) {
    let (status, location, body, _) = form_raw(c, path, fields).await;
    (status, location, body)
}

/// [`form`], also returning the session cookie the answer sets, if any.
pub async fn form_raw(
    c: &TestClient,
    path: &str,
    fields: &[(&str, &str)],
) -> (u16, String, String, Option<String>) {
    let mut pairs: Vec<(String, String)> = fields
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    if let Some(csrf) = &c.csrf {
        pairs.push(("csrf_token".into(), csrf.clone()));
    }
    let encoded: String = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish();
    let mut rb = c
        .http
        .post(format!("{}{path}", c.base))
        .header("sec-fetch-site", "same-origin")
        .header(
            reqwest::header::CONTENT_TYPE,
            "application/x-www-form-urlencoded",
        )
        .body(encoded);
    if let Some(cookie) = &c.cookie {
        rb = rb.header(reqwest::header::COOKIE, cookie);
    }
    let resp = rb.send().await.expect("POST form");
    let status = resp.status().as_u16();
    let location = resp
        .headers()
        .get(reqwest::header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let cookie = session_cookie(&resp);
    (
        status,
        location,
        resp.text().await.unwrap_or_default(),
        cookie,
    )
}

/// The `flowlink_session=…` pair an answer sets (not a clearing one).
pub fn session_cookie(resp: &reqwest::Response) -> Option<String> {
    resp.headers()
        .get_all(reqwest::header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with("flowlink_session=") && !v.starts_with("flowlink_session=;"))
        .and_then(|v| v.split(';').next())
        .map(str::to_string)
}

/// The id of the organisation `slug`, as `c` reads it through the API.
pub async fn org_id(c: &TestClient, slug: &str) -> String {
    let (_, org) = c.get(&format!("/api/v1/orgs/{slug}")).await;
    org["id"].as_str().expect("org id").to_string()
}

/// A `LIKE` pattern matching the `LISTEN` of other connections on the link channel of
/// `store`'s schema, in `pg_stat_activity.query`.
pub async fn link_listener_pattern(store: &Store) -> String {
    let channel: String = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT {}",
        flowlink_control::link::notify::CHANNEL_SQL
    )))
    .fetch_one(store.pool())
    .await
    .expect("channel");
    format!("%{channel}%")
}

/// How many connections other than this one listen on the link channel of `store`'s schema
/// (one per running replica on PostgreSQL).
pub async fn link_listeners(store: &Store) -> i64 {
    sqlx::query_scalar::<_, i64>(
        "SELECT COUNT(*) FROM pg_stat_activity WHERE query LIKE $1 AND pid <> pg_backend_pid()",
    )
    .bind(link_listener_pattern(store).await)
    .fetch_one(store.pool())
    .await
    .expect("count the listeners")
}

/// Waits (up to 20 s) until `replicas` replicas listen on `store`'s link channel, so a change
/// made after it can reach the others only by notification.
pub async fn wait_for_link_listeners(store: &Store, replicas: i64) {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let now = link_listeners(store).await;
        if now == replicas {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{now} replicas listen for link notifications, expected {replicas}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}
