//! The real `flowlink-control` binary, as an operator runs it: first-run token, configuration
//! errors, `migrate`, `admin …`, graceful shutdown on SIGTERM, `/healthz`, `/readyz`,
//! `/metrics`, and the installers' example configuration and systemd unit.

mod support;

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use flowlink_control::config::{Config, Layers};
use flowlink_control::server::DRAIN;
use flowlink_control::store::{Backend, Store};
use serde_json::json;
use support::{PASSWORD, TestClient, TestDb};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};

const BIN: &str = env!("CARGO_BIN_EXE_flowlink-control");
/// Generous bound on anything that is expected to happen "soon" (start-up, a log line): it only
/// turns a hang into a failure, it does not measure anything.
const SOON: Duration = Duration::from_secs(120);

/// The binary with a clean environment (no FLOWLINK_* from the caller) and PATH kept.
fn command() -> Command {
    let mut c = Command::new(BIN);
    c.env_clear();
    if let Some(path) = std::env::var_os("PATH") {
        c.env("PATH", path);
    }
    c.kill_on_drop(true);
    c
}

/// `--data-dir DIR --database-url URL` for a test database.
fn db_args(db: &TestDb) -> Vec<OsString> {
    vec![
        "--data-dir".into(),
        db.dir.path().into(),
        "--database-url".into(),
        db.url.clone().into(),
    ]
}

/// Runs the binary to completion (bounded by [`SOON`]), feeding `stdin`.
async fn run(args: &[OsString], env: &[(&str, &str)], stdin: Option<&str>) -> Output {
    let mut c = command();
    c.args(args)
        .envs(env.iter().copied())
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c.spawn().expect("spawn flowlink-control");
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(text.as_bytes()).await.expect("stdin");
        drop(pipe);
    }
    match tokio::time::timeout(SOON, child.wait_with_output()).await {
        Ok(out) => out.expect("wait"),
        Err(_) => panic!("flowlink-control {args:?} did not finish"),
    }
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Runs the binary and requires success; returns stdout.
async fn ok(args: &[OsString], stdin: Option<&str>) -> String {
    let out = run(args, &[], stdin).await;
    assert!(
        out.status.success(),
        "flowlink-control {args:?} failed:\n{}\n{}",
        stdout(&out),
        stderr(&out)
    );
    stdout(&out)
}

fn args(list: &[&str]) -> Vec<OsString> {
    list.iter().map(OsString::from).collect()
}

fn with(mut a: Vec<OsString>, more: &[OsString]) -> Vec<OsString> {
    a.extend_from_slice(more);
    a
}

/// A `flowlink-control serve` process, listening.
struct Served {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    base: String,
    addr: std::net::SocketAddr,
    lines: Arc<Mutex<Vec<String>>>,
    seen: tokio::sync::mpsc::UnboundedReceiver<String>,
}

impl Served {
    /// Starts `serve --listen 127.0.0.1:0 ARGS` and waits for its "listening" line.
    async fn start(extra: &[OsString]) -> Served {
        let mut c = command();
        c.args(["serve", "--listen", "127.0.0.1:0"])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = c.spawn().expect("spawn flowlink-control serve");
        let pipe = child.stderr.take().expect("stderr");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let (tx, seen) = tokio::sync::mpsc::unbounded_channel();
        let keep = lines.clone();
        tokio::spawn(async move {
            let mut reader = BufReader::new(pipe).lines();
            while let Ok(Some(line)) = reader.next_line().await {
                if let Ok(mut l) = keep.lock() {
                    l.push(line.clone());
                }
                let _ = tx.send(line);
            }
        });
        let mut s = Served {
            child,
            base: String::new(),
            addr: "0.0.0.0:0".parse().expect("addr"),
            lines,
            seen,
        };
        let line = s.wait_for("flowlink-control listening on http://").await;
        let addr = line
            .rsplit("http://")
            .next()
            .unwrap_or_default()
            .trim()
            .to_string();
        s.addr = addr.parse().expect("listening address");
        s.base = format!("http://{addr}");
        s
    }

    /// Waits for a stderr line containing `needle` (bounded by [`SOON`]).
    async fn wait_for(&mut self, needle: &str) -> String {
        let found = tokio::time::timeout(SOON, async {
            while let Some(line) = self.seen.recv().await {
                if line.contains(needle) {
                    return Some(line);
                }
            }
            None
        })
        .await;
        match found {
            Ok(Some(line)) => line,
            _ => panic!(
                "flowlink-control never printed `{needle}`; stderr so far:\n{}",
                self.stderr()
            ),
        }
    }

    fn stderr(&self) -> String {
        self.lines.lock().map(|l| l.join("\n")).unwrap_or_default()
    }

    /// The first-run token, if this start printed one.
    fn setup_token(&self) -> Option<String> {
        let lines = self.lines.lock().ok()?.clone();
        let at = lines
            .iter()
            .position(|l| l.contains("one-time set-up token"))?;
        lines[at + 1..]
            .iter()
            .map(|l| l.trim())
            .find(|l| !l.is_empty())
            .map(str::to_string)
    }

    fn client(&self) -> TestClient {
        TestClient::new(&self.base)
    }

    /// Sends SIGTERM (what systemd's KillSignal= sends).
    async fn term(&self) {
        let pid = self.child.id().expect("running").to_string();
        let st = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .await
            .expect("kill");
        assert!(st.success(), "kill -TERM {pid} failed");
    }

    /// Waits for the process to end, at most the drain plus a generous margin.
    async fn exit(&mut self) -> ExitStatus {
        let bound = DRAIN + Duration::from_secs(30);
        let status = match tokio::time::timeout(bound, self.child.wait()).await {
            Ok(st) => st.expect("wait"),
            Err(_) => panic!(
                "flowlink-control did not exit within {bound:?} of SIGTERM; stderr:\n{}",
                self.stderr()
            ),
        };
        // Every line it wrote is kept once the reader saw the pipe close (its channel ends).
        let _ =
            tokio::time::timeout(SOON, async { while self.seen.recv().await.is_some() {} }).await;
        status
    }

    /// SIGTERM and a clean exit.
    async fn stop(mut self) {
        self.term().await;
        let st = self.exit().await;
        assert!(st.success(), "exit {st:?}; stderr:\n{}", self.stderr());
    }
}

async fn setup(base: &TestClient, token: &str) -> (u16, serde_json::Value) {
    base.post(
        "/api/v1/setup",
        json!({"token": token, "email": "owner@acme.test", "password": PASSWORD,
               "display_name": "Olive Owner", "org_name": "Acme", "org_slug": "acme"}),
    )
    .await
}

// ---------------------------------------------------------------------------------------------
// First run

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_run_token_is_printed_and_works_once() {
    let db = TestDb::new(Backend::Sqlite).await;
    let first = Served::start(&db_args(&db)).await;
    let old = first
        .setup_token()
        .expect("first start prints a set-up token");
    assert!(
        first.stderr().contains("/api/v1/setup"),
        "{}",
        first.stderr()
    );
    first.stop().await;

    // A second start before anyone used it: a new token; the old one is withdrawn.
    let second = Served::start(&db_args(&db)).await;
    let new = second.setup_token().expect("second start prints a token");
    assert_ne!(old, new);
    let c = second.client();
    let (status, body) = setup(&c, &old).await;
    assert!(
        (400..500).contains(&status),
        "old token accepted: {status} {body}"
    );
    let (status, body) = setup(&c, &new).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["org_slug"], "acme");
    // Once only.
    let (status, body) = setup(&c, &new).await;
    assert!((400..500).contains(&status), "reused: {status} {body}");
    c.login("owner@acme.test", PASSWORD).await;
    second.stop().await;

    // With an account, no token is printed any more.
    let third = Served::start(&db_args(&db)).await;
    assert_eq!(third.setup_token(), None, "{}", third.stderr());
    third.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Configuration errors

async fn refused(a: &[OsString], env: &[(&str, &str)], expect: &str) {
    let out = run(a, env, None).await;
    let err = stderr(&out);
    assert!(
        !out.status.success(),
        "{a:?} {env:?} should have failed:\n{err}"
    );
    assert!(err.contains(expect), "expected `{expect}` in:\n{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_settings_stop_start_up_naming_their_origin() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data: OsString = dir.path().join("data").into();
    let serve = vec!["serve".into(), "--data-dir".into(), data.clone()];

    // Environment variable.
    refused(
        &serve,
        &[("FLOWLINK_LISTEN", "nowhere")],
        "FLOWLINK_LISTEN: `nowhere` is not valid",
    )
    .await;
    // Flag.
    refused(
        &with(serve.clone(), &args(&["--login-lockout-secs=soon"])),
        &[],
        "--login-lockout-secs: `soon` is not valid",
    )
    .await;
    // TOML key.
    let file = dir.path().join("control.toml");
    std::fs::write(&file, "login_max_failures = 0\n").expect("write");
    refused(
        &with(serve.clone(), &["--config".into(), file.clone().into()]),
        &[],
        &format!(
            "config file {}, key `login_max_failures`: `0` is not valid",
            file.display()
        ),
    )
    .await;
    // Unknown TOML key, file named through FLOWLINK_CONFIG.
    std::fs::write(&file, "listn = \"127.0.0.1:1\"\n").expect("write");
    let path = file.display().to_string();
    refused(
        &serve,
        &[("FLOWLINK_CONFIG", &path)],
        &format!("config file {path}: unknown key `listn`"),
    )
    .await;
    // TOML that does not parse.
    std::fs::write(&file, "listen = \n").expect("write");
    refused(
        &with(serve.clone(), &["--config".into(), file.clone().into()]),
        &[],
        &format!("config file {path}"),
    )
    .await;
    // Settings that contradict each other.
    refused(
        &with(serve.clone(), &args(&["--tls-cert", "/etc/ssl/c.pem"])),
        &[],
        "tls_cert and tls_key go together",
    )
    .await;
    // The same checks guard the other commands.
    refused(
        &with(
            vec!["migrate".into(), "--data-dir".into(), data.clone()],
            &args(&["--database-url", "mysql://db/x"]),
        ),
        &[],
        "--database-url: `mysql://db/x` is not valid",
    )
    .await;
    // Nothing was started: the data directory was not even created.
    assert!(!dir.path().join("data").exists());
}

// ---------------------------------------------------------------------------------------------
// migrate

async fn migrate_and_status(backend: Backend) {
    let db = TestDb::new(backend).await;
    let status = ok(&with(args(&["migrate", "--status"]), &db_args(&db)), None).await;
    assert!(
        status.contains("applied: []") && status.contains("current: false"),
        "{status}"
    );
    let done = ok(&with(args(&["migrate"]), &db_args(&db)), None).await;
    assert!(done.contains("current: true"), "{done}");
    let status = ok(&with(args(&["migrate", "--status"]), &db_args(&db)), None).await;
    assert!(status.contains("current: true"), "{status}");
    let applied = status.lines().next().unwrap_or_default().to_string();
    let known = status.lines().nth(1).unwrap_or_default().to_string();
    assert_eq!(
        applied.trim_start_matches("applied:").trim(),
        known.trim_start_matches("known:").trim(),
        "{status}"
    );
    // Idempotent.
    let again = ok(&with(args(&["migrate"]), &db_args(&db)), None).await;
    assert_eq!(again, done);
}

// ---------------------------------------------------------------------------------------------
// admin

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_commands_work_on_the_sqlite_data_dir() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data: OsString = dir.path().into();
    let admin = |cmd: &[&str]| {
        let mut a: Vec<OsString> = vec!["admin".into(), "--data-dir".into(), data.clone()];
        a.extend(cmd.iter().map(OsString::from));
        a
    };

    let out = ok(
        &admin(&["create-org", "--slug", "acme", "--name", "Acme"]),
        None,
    )
    .await;
    assert!(out.trim_end().ends_with("\tacme"), "{out}");
    let out = ok(
        &admin(&[
            "create-user",
            "--email",
            "owner@acme.test",
            "--name",
            "Olive",
            "--org",
            "acme",
            "--role",
            "owner",
            "--password-stdin",
        ]),
        Some(&format!("{PASSWORD}\n")),
    )
    .await;
    assert!(out.contains("owner@acme.test\towner"), "{out}");
    assert!(!out.contains("password (shown once)"), "{out}");
    // Without --password-stdin a password is generated and shown once.
    let out = ok(
        &admin(&[
            "create-user",
            "--email",
            "viewer@acme.test",
            "--name",
            "Vic",
            "--org",
            "acme",
            "--role",
            "viewer",
        ]),
        None,
    )
    .await;
    let generated = out
        .lines()
        .find_map(|l| l.strip_prefix("password (shown once): "))
        .expect("generated password")
        .to_string();
    // A weak password on stdin is refused with the reason.
    let weak = run(
        &admin(&[
            "create-user",
            "--email",
            "weak@acme.test",
            "--name",
            "W",
            "--org",
            "acme",
            "--role",
            "viewer",
            "--password-stdin",
        ]),
        &[],
        Some("short\n"),
    )
    .await;
    assert!(!weak.status.success());
    assert!(stderr(&weak).contains("too short"), "{}", stderr(&weak));

    let orgs = ok(&admin(&["list-orgs"]), None).await;
    assert!(orgs.contains("\tacme\tAcme"), "{orgs}");
    let members = ok(&admin(&["list-users", "--org", "acme"]), None).await;
    assert!(
        members.contains("owner@acme.test\towner\t2fa=false"),
        "{members}"
    );
    assert!(
        members.contains("viewer@acme.test\tviewer\t2fa=false"),
        "{members}"
    );
    let users = ok(&admin(&["list-users"]), None).await;
    assert_eq!(users.lines().count(), 2, "{users}");

    let token = ok(
        &admin(&[
            "create-token",
            "--org",
            "acme",
            "--email",
            "owner@acme.test",
            "--name",
            "ci",
            "--scopes",
            "org:read,member:read",
            "--days",
            "7",
        ]),
        None,
    )
    .await
    .trim()
    .to_string();
    // A token cannot exceed its member's role.
    let over = run(
        &admin(&[
            "create-token",
            "--org",
            "acme",
            "--email",
            "viewer@acme.test",
            "--name",
            "x",
            "--scopes",
            "member:manage",
        ]),
        &[],
        None,
    )
    .await;
    assert!(!over.status.success());
    assert!(
        stderr(&over).contains("cannot have more than that role allows"),
        "{}",
        stderr(&over)
    );

    // The server on the same data directory: accounts exist, so no set-up token.
    let srv = Served::start(&["--data-dir".into(), data.clone()]).await;
    assert_eq!(srv.setup_token(), None, "{}", srv.stderr());
    let bot = srv.client().with_token(&token);
    let (status, body) = bot.get("/api/v1/orgs/acme").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["slug"], "acme", "{body}");
    let (status, body) = bot.get("/api/v1/orgs/acme/members").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["items"].as_array().map(Vec::len), Some(2), "{body}");
    let (status, _) = srv
        .client()
        .with_token("flk_not_a_token")
        .get("/api/v1/orgs/acme")
        .await;
    assert_eq!(status, 401);
    srv.client().login("viewer@acme.test", &generated).await;

    // reset-2fa: enrol an authenticator through the API, then remove it from the CLI.
    let owner = srv.client().login("owner@acme.test", PASSWORD).await;
    let (status, body) = owner.post("/api/v1/me/totp/setup", json!({})).await;
    assert_eq!(status, 200, "{body}");
    let secret = body["secret"].as_str().expect("secret").to_string();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let code = flowlink_control::auth::totp::code_at(&secret, now).expect("code");
    let (status, body) = owner
        .post("/api/v1/me/totp/enable", json!({"code": code}))
        .await;
    assert_eq!(status, 200, "{body}");
    let mut again = srv.client();
    let (status, body) = again.sign_in("owner@acme.test", PASSWORD).await;
    assert_eq!(
        (status, body["stage"].as_str()),
        (200, Some("totp")),
        "{body}"
    );
    let out = ok(&admin(&["reset-2fa", "--email", "owner@acme.test"]), None).await;
    assert!(
        out.contains("two-factor sign-in removed for owner@acme.test"),
        "{out}"
    );
    let (status, _) = owner.get("/api/v1/me").await;
    assert_eq!(status, 401, "reset-2fa ends the sessions");
    let owner = srv.client().login("owner@acme.test", PASSWORD).await;
    let members = ok(&admin(&["list-users", "--org", "acme"]), None).await;
    assert!(
        members.contains("owner@acme.test\towner\t2fa=false"),
        "{members}"
    );

    // reset-password: new password from stdin, old one refused, sessions ended.
    let new_password = "violet harbour 7 kettle";
    let out = ok(
        &admin(&[
            "reset-password",
            "--email",
            "owner@acme.test",
            "--password-stdin",
        ]),
        Some(&format!("{new_password}\n")),
    )
    .await;
    assert!(
        out.contains("password reset for owner@acme.test; 1 session(s) ended"),
        "{out}"
    );
    let (status, _) = owner.get("/api/v1/me").await;
    assert_eq!(status, 401);
    let (status, _) = srv.client().sign_in("owner@acme.test", PASSWORD).await;
    assert_eq!(status, 401);
    srv.client().login("owner@acme.test", new_password).await;
    srv.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Graceful shutdown

async fn read_head(stream: &mut tokio::net::TcpStream) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = stream.read(&mut byte).await.expect("read");
        assert!(
            n > 0,
            "connection closed after {:?}",
            String::from_utf8_lossy(&head)
        );
        head.push(byte[0]);
    }
    String::from_utf8_lossy(&head).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_the_request_in_flight_finish() {
    let db = TestDb::new(Backend::Sqlite).await;
    let mut srv = Served::start(&db_args(&db)).await;
    let token = srv.setup_token().expect("token");
    let (status, body) = setup(&srv.client(), &token).await;
    assert_eq!(status, 201, "{body}");

    // A sign-in whose body is held back: `Expect: 100-continue` makes the server say when the
    // handler starts reading the body, so the request is provably in flight at SIGTERM.
    let body = json!({"email": "owner@acme.test", "password": PASSWORD}).to_string();
    let mut conn = tokio::net::TcpStream::connect(srv.addr)
        .await
        .expect("connect");
    conn.write_all(
        format!(
            "POST /api/v1/auth/login HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nExpect: 100-continue\r\n\r\n",
            srv.addr,
            body.len()
        )
        .as_bytes(),
    )
    .await
    .expect("write head");
    let interim = tokio::time::timeout(SOON, read_head(&mut conn))
        .await
        .expect("100 Continue");
    assert!(interim.starts_with("HTTP/1.1 100"), "{interim}");

    srv.term().await;
    srv.wait_for("shutting down").await;
    // The listener closes: new connections are refused while the old one is served.
    let refused = tokio::time::timeout(SOON, async {
        loop {
            if tokio::net::TcpStream::connect(srv.addr).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(refused.is_ok(), "the listener still accepts after SIGTERM");

    conn.write_all(body.as_bytes()).await.expect("write body");
    let mut response = Vec::new();
    tokio::time::timeout(SOON, conn.read_to_end(&mut response))
        .await
        .expect("response before the bound")
        .expect("read response");
    let response = String::from_utf8_lossy(&response);
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.contains("\"stage\":\"complete\""), "{response}");
    assert!(
        response.contains("flowlink_session="),
        "the sign-in completed with a cookie: {response}"
    );

    let st = srv.exit().await;
    assert!(st.success(), "exit {st:?}; stderr:\n{}", srv.stderr());
    assert!(srv.stderr().contains("stopped"), "{}", srv.stderr());
}

// ---------------------------------------------------------------------------------------------
// Health, readiness, metrics

/// Adds a row for a migration this binary does not have, as a newer version would.
async fn add_future_migration(db: &TestDb, backend: Backend) {
    let store = Store::connect_shared(&db.url).await.expect("connect");
    let checksum = match backend {
        Backend::Sqlite => "X'00'",
        Backend::Postgres => "'\\x00'::bytea",
    };
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
         VALUES (99990101, 'from a newer flowlink-control', TRUE, {checksum}, 0)"
    )))
    .execute(store.pool())
    .await
    .expect("insert migration row");
    store.close().await;
}

/// The value of the sample `name` (with labels, exactly as rendered) in a scrape.
fn sample(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

async fn health_readiness_and_metrics(backend: Backend) {
    let db = TestDb::new(backend).await;
    let srv = Served::start(&db_args(&db)).await;
    let c = srv.client();
    let (status, body) = c.get("/healthz").await;
    assert_eq!((status, body["text"].as_str()), (200, Some("ok\n")));
    let (status, body) = c.get("/readyz").await;
    assert_eq!((status, body["text"].as_str()), (200, Some("ready\n")));

    let token = srv.setup_token().expect("token");
    assert_eq!(setup(&c, &token).await.0, 201);
    let owner = c.login("owner@acme.test", PASSWORD).await;
    for _ in 0..3 {
        assert_eq!(owner.get("/api/v1/orgs/acme").await.0, 200);
    }
    assert_eq!(owner.get("/api/v1/orgs/nope").await.0, 404);

    let scrape = || async {
        let resp = reqwest::get(format!("{}/metrics", srv.base))
            .await
            .expect("scrape");
        assert_eq!(resp.status(), 200);
        assert!(
            resp.headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.starts_with("text/plain; version=0.0.4"))
        );
        resp.text().await.expect("text")
    };
    let m = scrape().await;
    let route = "route=\"/api/v1/orgs/{org}\"";
    assert_eq!(
        sample(
            &m,
            &format!("flowlink_http_requests_total{{method=\"GET\",{route},status=\"200\"}}")
        ),
        Some(3.0),
        "{m}"
    );
    assert_eq!(
        sample(
            &m,
            &format!("flowlink_http_requests_total{{method=\"GET\",{route},status=\"404\"}}")
        ),
        Some(1.0),
        "{m}"
    );
    assert_eq!(
        sample(
            &m,
            &format!("flowlink_http_request_duration_seconds_count{{{route}}}")
        ),
        Some(4.0),
        "{m}"
    );
    assert_eq!(
        sample(
            &m,
            &format!("flowlink_http_request_duration_seconds_bucket{{{route},le=\"+Inf\"}}")
        ),
        Some(4.0),
        "{m}"
    );
    assert!(
        sample(
            &m,
            &format!("flowlink_http_request_duration_seconds_sum{{{route}}}")
        )
        .is_some_and(|s| s > 0.0),
        "{m}"
    );
    assert!(m.contains("# TYPE flowlink_http_request_duration_seconds histogram"));
    assert_eq!(
        sample(
            &m,
            &format!(
                "flowlink_build_info{{version=\"{}\"}}",
                env!("CARGO_PKG_VERSION")
            )
        ),
        Some(1.0),
        "{m}"
    );
    assert_eq!(sample(&m, "flowlink_db_up"), Some(1.0), "{m}");
    assert_eq!(sample(&m, "flowlink_sessions_active"), Some(1.0), "{m}");
    // The sign-in route is labelled by its pattern too.
    assert!(
        m.contains("flowlink_http_requests_total{method=\"POST\",route=\"/api/v1/auth/login\",status=\"200\"} 1"),
        "{m}"
    );

    // A second session, then both signed out: the gauge follows at the next scrape.
    let other = c.login("owner@acme.test", PASSWORD).await;
    assert_eq!(
        sample(&scrape().await, "flowlink_sessions_active"),
        Some(2.0)
    );
    assert_eq!(owner.post("/api/v1/auth/logout", json!({})).await.0, 204);
    assert_eq!(other.post("/api/v1/auth/logout", json!({})).await.0, 204);
    assert_eq!(
        sample(&scrape().await, "flowlink_sessions_active"),
        Some(0.0)
    );

    // A schema migrated by a newer binary: not ready, and the reason says so.
    add_future_migration(&db, backend).await;
    let (status, body) = c.get("/readyz").await;
    let text = body["text"].as_str().unwrap_or_default();
    assert_eq!(status, 503, "{body}");
    assert!(
        text.contains("newer than this binary") && text.contains("[99990101]"),
        "{text}"
    );
    // Liveness is unaffected.
    assert_eq!(c.get("/healthz").await.0, 200);
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_says_when_the_postgres_schema_is_dropped() {
    let db = TestDb::new(Backend::Postgres).await;
    let srv = Served::start(&db_args(&db)).await;
    let c = srv.client();
    assert_eq!(c.get("/readyz").await.0, 200);

    let schema = db
        .url
        .rsplit("search_path%3D")
        .next()
        .expect("schema in the test URL")
        .to_string();
    let admin = Store::connect(&support::postgres_url())
        .await
        .expect("connect");
    sqlx::query(sqlx::AssertSqlSafe(format!("DROP SCHEMA {schema} CASCADE")))
        .execute(admin.pool())
        .await
        .expect("drop schema");
    admin.close().await;

    let (status, body) = c.get("/readyz").await;
    let text = body["text"].as_str().unwrap_or_default();
    assert_eq!(status, 503, "{body}");
    assert!(
        text.starts_with("database schema missing: no migrations are applied"),
        "{text}"
    );
    assert!(text.contains("flowlink-control migrate"), "{text}");
    // The server still answers; the database itself is up, the sessions cannot be counted.
    assert_eq!(c.get("/healthz").await.0, 200);
    let m = reqwest::get(format!("{}/metrics", srv.base))
        .await
        .expect("scrape")
        .text()
        .await
        .expect("text");
    assert_eq!(sample(&m, "flowlink_db_up"), Some(1.0), "{m}");
    assert_eq!(sample(&m, "flowlink_sessions_active"), None, "{m}");
    srv.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Installers

fn installers() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../installers")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn example_config_loads() {
    let file = installers().join("control.example.toml");
    let config = Config::load(&Layers {
        file: Some(file.clone()),
        ..Layers::default()
    })
    .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    assert_eq!(config.listen.to_string(), "127.0.0.1:8080");
    assert_eq!(config.public_url, "https://flowlink.example.com");
    assert!(
        config
            .trusted_proxies
            .iter()
            .any(|n| n.contains([127, 0, 0, 1].into()))
    );
    assert!(!config.serves_tls());
    assert_eq!(config.data_dir, PathBuf::from("/var/lib/flowlink-control"));
    // And the binary reads it (data directory overridden by a flag: flags beat the file).
    let dir = tempfile::tempdir().expect("tempdir");
    let out = ok(
        &[
            "migrate".into(),
            "--status".into(),
            "--config".into(),
            file.into(),
            "--data-dir".into(),
            dir.path().into(),
        ],
        None,
    )
    .await;
    assert!(out.contains("current: false"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn systemd_unit_is_valid_and_outlasts_the_drain() {
    let unit = std::fs::read_to_string(installers().join("flowlink-control.service"))
        .expect("read the unit");
    let value = |key: &str| {
        unit.lines()
            .filter_map(|l| l.strip_prefix(&format!("{key}=")))
            .next_back()
            .map(str::to_string)
    };
    assert_eq!(
        value("ExecStart").as_deref(),
        Some("/usr/local/bin/flowlink-control serve --config /etc/flowlink/control.toml")
    );
    assert_eq!(
        value("EnvironmentFile").as_deref(),
        Some("-/etc/flowlink/control.env")
    );
    assert_eq!(value("KillSignal").as_deref(), Some("SIGTERM"));
    assert_eq!(value("StateDirectory").as_deref(), Some("flowlink-control"));
    assert_eq!(value("CapabilityBoundingSet").as_deref(), Some(""));
    for (key, v) in [
        ("NoNewPrivileges", "yes"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
        ("DynamicUser", "yes"),
    ] {
        assert_eq!(value(key).as_deref(), Some(v), "{key}");
    }
    assert!(value("RestrictAddressFamilies").is_some());
    let stop = value("TimeoutStopSec").expect("TimeoutStopSec");
    let secs: u64 = stop
        .trim_end_matches('s')
        .parse()
        .unwrap_or_else(|_| panic!("TimeoutStopSec={stop}: write whole seconds, e.g. 45s"));
    assert!(
        Duration::from_secs(secs) > DRAIN,
        "TimeoutStopSec={stop} must exceed the {DRAIN:?} drain, or systemd kills requests in flight"
    );

    // systemd's own check, with ExecStart pointing at the binary just built.
    let dir = tempfile::tempdir().expect("tempdir");
    let copy = dir.path().join("flowlink-control.service");
    std::fs::write(&copy, unit.replace("/usr/local/bin/flowlink-control", BIN)).expect("write");
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&copy)
        .output()
        .await
        .unwrap_or_else(|e| {
            panic!("cannot run systemd-analyze ({e}); install Debian's systemd package")
        });
    let err = stderr(&out);
    assert!(out.status.success(), "systemd-analyze verify:\n{err}");
    assert!(
        !err.contains("flowlink-control.service"),
        "systemd-analyze verify complained:\n{err}"
    );
}

both!(migrate_and_status, health_readiness_and_metrics);
