//! Property-based fuzzing of the whole API from its own OpenAPI document, with schemathesis
//! (pinned in tests/requirements.txt, installed by scripts/test): thousands of generated
//! requests, valid and not, against a running control plane on each engine. Fails on any 5xx,
//! any status or body the document does not describe, any response that ignores missing
//! credentials, and any stateful sequence that breaks (create → use → delete).

mod support;

use std::path::PathBuf;

use flowlink_control::store::Backend;
use serde_json::json;
use support::*;

fn schemathesis() -> PathBuf {
    let venv_python = std::env::var_os("FLOWLINK_E2E_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/.venv/bin/python")
        });
    let bin = venv_python.with_file_name("schemathesis");
    assert!(
        bin.exists(),
        "{} is missing: run scripts/test, which installs tests/requirements.txt into tests/.venv",
        bin.display()
    );
    bin
}

async fn the_api_survives_schemathesis(backend: Backend) {
    let server = TestServer::start(backend).await;
    let owner = server.owner().await;
    let all = [
        "org:read",
        "org:manage",
        "member:read",
        "member:manage",
        "token:manage",
        "audit:read",
        "policy:read",
        "policy:write",
    ];
    let (status, body) = owner
        .post(
            "/api/v1/orgs/acme/tokens",
            json!({"name": "fuzz", "scopes": all}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let token = body["token"].as_str().expect("token").to_string();
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("schemathesis.toml");
    std::fs::write(&config, "[parameters]\n\"path.org\" = \"acme\"\n").expect("config");
    let output = tokio::process::Command::new(schemathesis())
        .current_dir(dir.path())
        .arg("--config-file")
        .arg(&config)
        .arg("run")
        .arg(format!("{}/api/v1/openapi.json", server.base))
        .args(["-H", &format!("Authorization: Bearer {token}")])
        // Everything but the checks that assume the document lists every validation rule
        // (it does not: e.g. a slug's character set is checked in code) and a required-header
        // check that does not apply to bearer-or-cookie authentication.
        .args(["--checks", "all"])
        .args([
            "--exclude-checks",
            "positive_data_acceptance,negative_data_rejection,missing_required_header",
        ])
        .args(["--max-examples", "25", "--seed", "20261126"])
        .env("SCHEMATHESIS_TELEMETRY", "false")
        .env("NO_COLOR", "1")
        .kill_on_drop(true)
        .output()
        .await
        .expect("run schemathesis");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "schemathesis found problems:\n{stdout}\n{stderr}"
    );
    assert!(
        stdout.contains("generated"),
        "schemathesis ran no cases:\n{stdout}\n{stderr}"
    );
    // Nothing it sent brought the server down or poisoned the owner's session.
    let (status, _) = owner.get("/api/v1/orgs/acme").await;
    assert_eq!(status, 200);
    server.stop().await;
}

both!(the_api_survives_schemathesis);
