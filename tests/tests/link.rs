//! The link end to end with the real binaries: `flowlink-control` (SQLite, and two replicas on
//! PostgreSQL), an enrolled `flowlink-proxy` in front of `@modelcontextprotocol/server-everything`,
//! the official Python `mcp` client as the editor and `requests` as the approvers
//! (`tests/py/link_scenarios.py`).

use std::time::Duration;

use flowlink_e2e::browser::SignedIn;
use flowlink_e2e::link::{
    Control, Device, OWNER, SOON, control_tool_calls, link_script, postgres_schema, postgres_url,
    setup_org,
};
use serde_json::Value;

const SCRIPT_TIMEOUT: Duration = Duration::from_secs(150);

/// `echo` waits for a person (default timeout); `get-sum` too, but silence denies after 10 s.
const POLICY: &str = r#"version = 1
default_action = "allow"

[[rules]]
id = "echo-needs-approval"
tool = "echo"
action = "approve"
message = "echo needs a person"

[[rules]]
id = "sums-time-out"
tool = "get-sum"
action = "approve"
approval_timeout_secs = 10
"#;

/// The next version: `get-tiny-image` is blocked.
const NEXT_POLICY: &str = r#"
[[rules]]
id = "no-images"
tool = "get-tiny-image"
action = "block"
message = "images are off limits now"
"#;

fn text(v: &Value) -> &str {
    v["text"].as_str().unwrap_or_default()
}

#[test]
fn approvals_end_to_end_on_sqlite() {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = format!("sqlite://{}/control.db", dir.path().display());
    let control = Control::start(&db, dir.path());
    let token = setup_org(&control, POLICY);
    let device = Device::enroll(&control.public_url, &token);

    // Approve, deny, self-approval refused, cancellation, timeout: no progress token, default hold.
    let r = link_script(
        "approvals",
        &[
            "--api",
            &control.url,
            "--steps",
            "approve,deny,self,cancel,timeout",
        ],
        &device.wrap(&[]),
        SCRIPT_TIMEOUT,
    );
    let approve = &r["approve"];
    assert_eq!(approve["request"]["tool"], "echo", "{r:#}");
    assert_eq!(approve["request"]["requester"], "owner");
    assert_eq!(approve["request"]["rule_id"], "echo-needs-approval");
    assert_eq!(approve["request"]["arguments"]["message"], "approve me");
    assert_eq!(approve["call"]["is_error"], false, "{r:#}");
    assert_eq!(text(&approve["call"]), "Echo: approve me");
    assert_eq!(approve["final"]["status"], "approved");
    eprintln!(
        "approval round trip (decision POST to the client's result): {} ms",
        approve["decision_to_result_ms"]
    );

    let deny = &r["deny"];
    assert_eq!(deny["final"]["status"], "denied", "{r:#}");
    assert_eq!(deny["call"]["is_error"], true);
    assert!(
        text(&deny["call"]).contains("A person denied this call by approver@acme.test")
            && text(&deny["call"]).contains("e2e says deny"),
        "{r:#}"
    );

    assert_eq!(r["self"]["self_status"], 403, "{r:#}");
    assert_eq!(r["self"]["self_body"]["error"]["code"], "own_request");

    assert_eq!(r["cancel"]["final"]["status"], "cancelled", "{r:#}");
    assert_eq!(r["cancel"]["after"]["is_error"], false, "session lives on");

    let timeout = &r["timeout"];
    assert_eq!(timeout["final"]["status"], "timed_out", "{r:#}");
    assert!(
        text(&timeout["call"]).contains("Silence is not consent"),
        "{r:#}"
    );

    // Progress keeps a call alive past a 2 s hold; without a token the agent is told to retry,
    // and the identical call then runs on the approval; a pushed policy blocks a tool at once.
    let next = dir.path().join("policy-2.toml");
    std::fs::write(&next, format!("{POLICY}{NEXT_POLICY}")).expect("write");
    let r = link_script(
        "approvals",
        &[
            "--api",
            &control.url,
            "--steps",
            "progress,hold,blocked",
            "--next-policy",
            &next.to_string_lossy(),
        ],
        &device.wrap(&["--approval-hold-secs", "2"]),
        SCRIPT_TIMEOUT,
    );
    let progress = &r["progress"];
    assert_eq!(text(&progress["call"]), "Echo: progress please", "{r:#}");
    assert!(
        !progress["progress"]
            .as_array()
            .expect("progress")
            .is_empty(),
        "{r:#}"
    );
    let hold = &r["hold"];
    assert!(
        text(&hold["first"]).contains("until a person approves it")
            && text(&hold["first"]).contains("issue exactly the same call again"),
        "{r:#}"
    );
    assert_eq!(hold["requests_after_first"], 1, "{r:#}");
    assert_eq!(text(&hold["second"]), "Echo: hold me", "{r:#}");
    assert_eq!(hold["requests_after_second"], 1, "no new request: {r:#}");
    assert_eq!(
        hold["requests_after_different"], 2,
        "one byte differs: {r:#}"
    );
    let blocked = &r["blocked"];
    assert_eq!(blocked["before"]["is_error"], false, "{r:#}");
    assert_eq!(blocked["after"]["is_error"], true, "{r:#}");
    assert_eq!(text(&blocked["after"]), "images are off limits now");

    // status --json: org, server, the policy (org v2) verified.
    let status = device.status();
    assert_eq!(status["enrolled"], true, "{status:#}");
    assert_eq!(status["org"]["slug"], "acme");
    assert_eq!(status["server"], control.public_url.as_str());
    let policy = &status["policies"][0];
    assert_eq!(policy["service"], "everything", "{status:#}");
    assert_eq!(policy["verified"], true);
    assert_eq!(policy["layers"][0]["version"], 2, "{status:#}");
    assert_eq!(status["outbox_depth"], 0, "{status:#}");

    // The agents list shows the wrapped server with the version of the proxy that reported it
    // (the proxy and these tests share the workspace's version).
    let owner = SignedIn::login(&control.url, OWNER);
    let (code, devices) = owner.send(reqwest::Method::GET, "/api/v1/orgs/acme/devices", None);
    assert_eq!(code, 200, "{devices:#}");
    let servers = devices["items"][0]["servers"].as_array().expect("servers");
    let everything = servers
        .iter()
        .find(|s| s["service"] == "everything")
        .unwrap_or_else(|| panic!("the wrapped server is reported: {devices:#}"));
    assert_eq!(
        everything["proxy_version"],
        env!("CARGO_PKG_VERSION"),
        "{devices:#}"
    );

    // The control plane's audit trail has the calls and their fates.
    let events = control_tool_calls(&control.url);
    let find = |message: &str| -> Vec<Value> {
        events
            .iter()
            .map(|e| match &e["detail"] {
                Value::String(s) => serde_json::from_str(s).unwrap_or(Value::Null),
                v => v.clone(),
            })
            .filter(|d| d["arguments"]["message"] == message)
            .collect()
    };
    let approved = find("approve me");
    assert!(
        approved
            .iter()
            .any(|d| d["verdict"] == "approved" && d["outcome"] == "ok"),
        "approved call in the control plane's audit: {approved:#?}"
    );
    let denied = find("deny me");
    assert!(
        denied.iter().any(|d| d["verdict"] == "denied"),
        "{denied:#?}"
    );
}

#[test]
fn decision_on_replica_a_reaches_the_proxy_on_replica_b() {
    let url = postgres_schema(&postgres_url(), "flowlink_e2e_link");
    let dir_a = tempfile::tempdir().expect("temp dir");
    let dir_b = tempfile::tempdir().expect("temp dir");
    let a = Control::start(&url, dir_a.path());
    let token = setup_org(&a, POLICY);
    let b = Control::start(&url, dir_b.path());
    let device = Device::enroll(&b.public_url, &token);

    let r = link_script(
        "approvals",
        &[
            "--api",
            &b.url,
            "--decide-api",
            &a.url,
            "--steps",
            "approve,deny",
        ],
        &device.wrap(&[]),
        SCRIPT_TIMEOUT,
    );
    assert_eq!(text(&r["approve"]["call"]), "Echo: approve me", "{r:#}");
    assert_eq!(r["deny"]["call"]["is_error"], true, "{r:#}");
    for step in ["approve", "deny"] {
        let ms = r[step]["decision_to_result_ms"].as_u64().expect("ms");
        eprintln!("{step}: decision on replica A to result via replica B: {ms} ms");
        assert!(
            ms < 1000,
            "the decision took {ms} ms to reach the proxy (within a second):\nA:\n{}\nB:\n{}",
            a.logs(),
            b.logs()
        );
    }
    let _ = SOON;
}
