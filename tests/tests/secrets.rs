//! Zero-trust secrets end to end with the real binaries: an admin seals a secret with the
//! `flowlink-control secrets` CLI, an enrolled `flowlink-proxy` injects it into the environment of
//! `@modelcontextprotocol/server-everything`, and the agent — a hand-written JSON-RPC client that
//! keeps every byte it receives — asks the server to print its environment (`get-env`) and to echo
//! a `{{secret:NAME}}` placeholder. The value must reach the server and nothing else: not one byte
//! the agent receives, not the proxy's stderr or data directory, not the control plane's database
//! (the SQLite file, or every table of the PostgreSQL schema). Then the org key is rotated with
//! two devices, one of them revoked half-way.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use flowlink_e2e::link::{Control, Device, SOON, postgres_schema, postgres_url, wait_until};
use flowlink_e2e::raw_mcp::RawMcp;
use flowlink_e2e::{control_bin, python, run_with_timeout, workspace_root};
use serde_json::{Value, json};

const CALL: Duration = Duration::from_secs(60);

/// The org policy: `E2E_TOKEN` goes into the server's environment as `E2E_SERVICE_TOKEN`, and
/// may be used as a placeholder.
const POLICY: &str = r#"version = 1
default_action = "allow"

[secrets]
placeholders = ["E2E_TOKEN"]

[[secrets.inject]]
secret = "E2E_TOKEN"
env = "E2E_SERVICE_TOKEN"
"#;

const PASSPHRASE: &str = "custodian passphrase for the e2e test";

/// A value with characters JSON and URLs escape, so every encoded form is exercised.
fn secret_value(tag: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!("fl-{tag}-{nanos:x}\"q\\b/+&=?")
}

/// The forms a leak could take: raw, JSON-escaped once and twice (JSON text inside a JSON
/// string), base64 (standard and URL-safe), hex, percent-encoded.
fn leak_forms(value: &str) -> Vec<(String, Vec<u8>)> {
    let json1 = serde_json::to_string(value).expect("json");
    let json1 = json1[1..json1.len() - 1].to_owned();
    let json2 = serde_json::to_string(&json1).expect("json");
    let json2 = json2[1..json2.len() - 1].to_owned();
    let hex: String = value.bytes().map(|b| format!("{b:02x}")).collect();
    let pct: String = value
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect();
    let b64 = base64(value.as_bytes(), false);
    let b64url = base64(value.as_bytes(), true);
    vec![
        ("raw".into(), value.as_bytes().to_vec()),
        ("json-escaped".into(), json1.into_bytes()),
        ("json-escaped twice".into(), json2.into_bytes()),
        (
            "base64".into(),
            b64.trim_end_matches('=').as_bytes().to_vec(),
        ),
        (
            "base64url".into(),
            b64url.trim_end_matches('=').as_bytes().to_vec(),
        ),
        ("hex".into(), hex.into_bytes()),
        ("percent-encoded".into(), pct.into_bytes()),
    ]
}

fn base64(data: &[u8], url: bool) -> String {
    let table: &[u8; 64] = if url {
        b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    } else {
        b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    };
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(table[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && hay.windows(needle.len()).any(|w| w == needle)
}

/// Fails naming the form and where, if any form of `value` is in `hay`.
fn assert_no_leak(what: &str, hay: &[u8], value: &str) {
    for (form, bytes) in leak_forms(value) {
        assert!(
            !contains(hay, &bytes),
            "the secret's {form} form is in {what}"
        );
    }
}

/// Every file under `dir`, recursively, as (path, bytes).
fn files_under(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(files_under(&p));
        } else if let Ok(bytes) = std::fs::read(&p) {
            out.push((p.display().to_string(), bytes));
        }
    }
    out
}

/// `flowlink-control secrets --server URL --token T --org acme ARGS` with `stdin`; returns stdout.
fn cli(control: &Control, token: &str, args: &[&str], stdin: Option<&str>) -> String {
    let out = cli_raw(control, token, args, stdin);
    assert!(
        out.status.success(),
        "flowlink-control secrets {args:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn cli_raw(
    control: &Control,
    token: &str,
    args: &[&str],
    stdin: Option<&str>,
) -> std::process::Output {
    use std::io::Write;
    let mut cmd = Command::new(control_bin());
    cmd.args(["secrets", "--server", &control.url, "--org", "acme"])
        .args(args)
        .env("FLOWLINK_TOKEN", token)
        .env("FLOWLINK_CUSTODIAN_PASSPHRASE", PASSPHRASE)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn flowlink-control secrets");
    if let Some(mut w) = child.stdin.take()
        && let Some(s) = stdin
    {
        w.write_all(s.as_bytes()).expect("write stdin");
    }
    let out = child.wait_with_output().expect("wait");
    // no command prints key material or a value it was given
    if let Some(s) = stdin {
        assert_no_leak("the CLI's output", &out.stdout, s);
        assert_no_leak("the CLI's stderr", &out.stderr, s);
    }
    out
}

fn key_status(control: &Control, token: &str) -> Value {
    serde_json::from_str(&cli(control, token, &["--json", "key", "status"], None))
        .expect("key status --json is JSON")
}

/// Whether `device` proved it holds key `version` (`key status --json`).
fn confirmed(status: &Value, version: u64, device: &str) -> bool {
    status["versions"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|v| v["version"] == version)
        .flat_map(|v| v["recipients"].as_array().into_iter().flatten())
        .any(|w| w["recipient"] == format!("device:{device}") && w["confirmed_at"].is_string())
}

/// `active`, `retiring` or `retired`.
fn version_state(status: &Value, version: u64) -> String {
    status["versions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|v| v["version"] == version)
        .and_then(|v| v["state"].as_str())
        .unwrap_or("missing")
        .to_owned()
}

/// Sets the org up (owner, policy, enrolment token, an owner API token for the CLI).
fn setup(control: &Control) -> (String, String) {
    let file = control_data(control).join("policy-1.toml");
    std::fs::write(&file, POLICY).expect("write policy");
    let out = run_with_timeout(
        Command::new(python())
            .arg(workspace_root().join("tests/py/link_scenarios.py"))
            .args(["setup", "--api", &control.url])
            .arg(format!("--setup-token={}", control.setup_token()))
            .arg("--policy")
            .arg(&file)
            .arg("--api-token-scopes=org:read,device:read,device:manage,secrets:read,secrets:write,secrets:keys"),
        SOON,
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|_| {
        panic!(
            "setup failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (
        report["enroll_token"]
            .as_str()
            .expect("enroll_token")
            .to_owned(),
        report["api_token"].as_str().expect("api_token").to_owned(),
    )
}

fn control_data(control: &Control) -> std::path::PathBuf {
    control.data_dir().to_path_buf()
}

/// Runs the proxy of `device` in front of server-everything, asks for `get-env` and for an echo
/// of the placeholder; returns the environment value the server had, the echo text, and every
/// byte the agent received and the proxy printed on stderr.
struct AgentRun {
    env_value: Option<String>,
    echo: String,
    refused: Value,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
}

fn agent_run(device: &Device) -> AgentRun {
    let mut mcp = RawMcp::start(&device.wrap(&[]), &[], CALL);
    let env = mcp.call_tool("get-env", json!({}), CALL);
    let text = env["result"]["content"][0]["text"]
        .as_str()
        .unwrap_or_else(|| panic!("get-env answered {env}"));
    let env: Value = serde_json::from_str(text).expect("get-env prints JSON");
    let env_value = env["E2E_SERVICE_TOKEN"].as_str().map(str::to_owned);
    let echo = mcp.call_tool("echo", json!({"message": "{{secret:E2E_TOKEN}}"}), CALL);
    let echo = echo["result"]["content"][0]["text"]
        .as_str()
        .unwrap_or_else(|| panic!("echo answered {echo}"))
        .to_owned();
    let refused = mcp.call_tool("echo", json!({"message": "{{secret:NOT_ALLOWED}}"}), CALL);
    let (stdout, stderr) = mcp.finish(SOON);
    AgentRun {
        env_value,
        echo,
        refused,
        stdout,
        stderr,
    }
}

/// `--accept device:<id>=<fingerprint>` from what `flowlink-proxy status` shows on the device:
/// the check a custodian makes before the org key is wrapped to it.
fn accept_by_status(device: &Device) -> String {
    let status = device.status();
    let id = status["device"]["id"].as_str().expect("device id");
    let fp = status["device"]["box_key_fingerprint"]
        .as_str()
        .unwrap_or_else(|| panic!("the device key's fingerprint in {status}"));
    assert!(fp.starts_with("SHA256:") && fp.len() == 7 + 64, "{fp}");
    format!("device:{id}={fp}")
}

fn scenario(database_url: &str, dir: &Path, scan: impl Fn(&str)) {
    let control = Control::start(database_url, dir);
    let (enroll, token) = setup(&control);
    let device_a = Device::enroll(&control.public_url, &enroll);

    // The admin's custodian key and the org key (wrapped to the device and the custodian).
    let key_file = dir.join("custodian.key");
    let key_arg = key_file.to_string_lossy().into_owned();
    cli(
        &control,
        &token,
        &["custodian", "init", "--key-file", &key_arg],
        None,
    );
    // The custodian accepts the device by the key fingerprint its proxy shows.
    cli(
        &control,
        &token,
        &[
            "key",
            "init",
            "--key-file",
            &key_arg,
            "--accept",
            &accept_by_status(&device_a),
        ],
        None,
    );
    let value = secret_value("one");
    cli(
        &control,
        &token,
        &["put", "E2E_TOKEN", "--service", "everything"],
        Some(&value),
    );
    let meta: Value = serde_json::from_str(&cli(
        &control,
        &token,
        &["--json", "get-meta", "E2E_TOKEN"],
        None,
    ))
    .expect("get-meta --json");
    assert_eq!(meta["name"], "E2E_TOKEN", "{meta}");
    assert_eq!(meta["version"], 1, "{meta}");
    assert_no_leak("get-meta", meta.to_string().as_bytes(), &value);

    // The server has the value; the agent sees only the redaction marker.
    let run = agent_run(&device_a);
    assert_eq!(
        run.env_value.as_deref(),
        Some("[REDACTED:E2E_TOKEN]"),
        "the server's environment as the agent saw it"
    );
    assert_eq!(
        run.echo, "Echo: [REDACTED:E2E_TOKEN]",
        "the placeholder reached the server as the value"
    );
    let refusal = run.refused.to_string();
    assert!(
        refusal.contains("NOT_ALLOWED"),
        "a placeholder the policy does not allow is refused, naming it: {refusal}"
    );
    assert_no_leak("what the agent received", &run.stdout, &value);
    assert_no_leak("the proxy's stderr", &run.stderr, &value);
    for (path, bytes) in files_under(&device_a.data_dir) {
        assert_no_leak(&path, &bytes, &value);
    }
    // The control plane learned that the device used it.
    let meta: Value = serde_json::from_str(&cli(
        &control,
        &token,
        &["--json", "get-meta", "E2E_TOKEN"],
        None,
    ))
    .expect("get-meta --json");
    assert!(
        meta["last_used_at"].is_string(),
        "last use recorded: {meta}"
    );

    scan(&value);
    drop(control);
}

#[test]
fn secret_reaches_the_server_and_nothing_else_on_sqlite() {
    let dir = tempfile::tempdir().expect("temp dir");
    let db_path = dir.path().join("control.db");
    let db = format!("sqlite://{}", db_path.display());
    let data = dir.path().to_path_buf();
    scenario(&db, dir.path(), |value| {
        for (path, bytes) in files_under(&data) {
            if path.ends_with("custodian.key") {
                continue;
            }
            assert_no_leak(&path, &bytes, value);
        }
        // the database really was scanned
        assert!(db_path.exists());
    });
}

#[test]
fn secret_reaches_the_server_and_nothing_else_on_postgres() {
    let base = postgres_url();
    let url = postgres_schema(&base, "e2e_secrets");
    let schema = url
        .rsplit("search_path%3D")
        .next()
        .expect("schema in url")
        .to_owned();
    let dir = tempfile::tempdir().expect("temp dir");
    scenario(&url, dir.path(), |value| {
        let mut cmd = Command::new("pg_dump");
        cmd.args([&base, "--data-only", "--schema", &schema]);
        let out = run_with_timeout(&mut cmd, SOON);
        assert!(
            out.status.success(),
            "pg_dump: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            contains(&out.stdout, b"E2E_TOKEN"),
            "the dump holds the secrets table"
        );
        assert_no_leak("the PostgreSQL tables", &out.stdout, value);
    });
}

/// Rotation with two devices: B goes offline, the org key is rotated, A confirms at once; B is
/// revoked half-way, which completes the rotation (no active device is left unconfirmed) and asks
/// for another (B may have kept the key). The second rotation leaves B out; A keeps working.
#[test]
fn rotation_with_two_devices_one_revoked_half_way() {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = format!("sqlite://{}/control.db", dir.path().display());
    let control = Control::start(&db, dir.path());
    let (enroll, token) = setup(&control);
    let device_a = Device::enroll(&control.public_url, &enroll);
    let device_b = Device::enroll(&control.public_url, &enroll);
    let key_file = dir.path().join("custodian.key");
    let key_arg = key_file.to_string_lossy().into_owned();
    cli(
        &control,
        &token,
        &["custodian", "init", "--key-file", &key_arg],
        None,
    );
    cli(
        &control,
        &token,
        &[
            "key",
            "init",
            "--key-file",
            &key_arg,
            "--accept",
            &accept_by_status(&device_a),
            "--accept",
            &accept_by_status(&device_b),
        ],
        None,
    );
    let value = secret_value("rot");
    cli(&control, &token, &["put", "E2E_TOKEN"], Some(&value));

    // Both devices inject it.
    for d in [&device_a, &device_b] {
        let run = agent_run(d);
        assert_eq!(run.env_value.as_deref(), Some("[REDACTED:E2E_TOKEN]"));
    }

    let id_of = |d: &Device| {
        d.status()["device"]["id"]
            .as_str()
            .unwrap_or_else(|| panic!("device id in {}", d.status()))
            .to_owned()
    };
    let (a_id, b_id) = (id_of(&device_a), id_of(&device_b));

    // A stays connected; B is offline while the key rotates.
    let mut a_live = RawMcp::start(&device_a.wrap(&[]), &[], CALL);
    cli(
        &control,
        &token,
        &["key", "rotate", "--key-file", &key_arg],
        None,
    );
    let status = wait_until("A to prove it holds the new key", SOON, || {
        let s = key_status(&control, &token);
        confirmed(&s, 2, &a_id).then_some(s)
    });
    assert_eq!(status["active_version"], 2, "{status}");
    assert_eq!(
        version_state(&status, 1),
        "retiring",
        "B has not proved v2 yet: {status}"
    );
    assert!(!confirmed(&status, 2, &b_id), "{status}");

    // Revoke B half-way: the rotation completes without it, and another is asked for.
    let out = run_with_timeout(
        Command::new("curl").args([
            "-sf",
            "-X",
            "POST",
            "-H",
            &format!("Authorization: Bearer {token}"),
            &format!("{}/api/v1/orgs/acme/devices/{b_id}/revoke", control.url),
        ]),
        SOON,
    );
    assert!(
        out.status.success(),
        "revoke B: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let status = wait_until("the old key to retire", SOON, || {
        let s = key_status(&control, &token);
        (version_state(&s, 1) == "retired").then_some(s)
    });
    assert!(
        status["rotation_required"].is_string(),
        "revoking a device asks for a rotation: {status}"
    );
    cli(
        &control,
        &token,
        &["key", "rotate", "--key-file", &key_arg],
        None,
    );
    let status = wait_until("A to prove it holds v3", SOON, || {
        let s = key_status(&control, &token);
        confirmed(&s, 3, &a_id).then_some(s)
    });
    assert_eq!(status["active_version"], 3, "{status}");
    assert!(status["rotation_required"].is_null(), "{status}");
    let v3 = &status["versions"][2]["recipients"];
    assert!(
        !v3.to_string().contains(&b_id),
        "the revoked device gets no wrap of v3: {status}"
    );

    // A (still connected through both rotations) and a new run of A inject the value; B gets
    // nothing any more, not even from its cache.
    let env = a_live.call_tool("get-env", json!({}), CALL);
    assert!(env.to_string().contains("[REDACTED:E2E_TOKEN]"), "{env}");
    let (out, _) = a_live.finish(SOON);
    assert_no_leak("A's agent", &out, &value);
    let run = agent_run(&device_a);
    assert_eq!(run.env_value.as_deref(), Some("[REDACTED:E2E_TOKEN]"));
    let run = agent_run(&device_b);
    assert_eq!(run.env_value, None, "a revoked device injects nothing");
    assert_no_leak("B's agent", &run.stdout, &value);
}
