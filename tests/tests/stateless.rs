//! The stateless revision (2026-07-28) end to end: the official Python SDK's `Client` in auto mode
//! probes `server/discover` against an `MCPServer`, and everything must work through the proxy as
//! it does direct; refusals carry the `resultType` that revision requires.

use std::process::Command;
use std::time::Duration;

use flowlink_e2e::{Proxy, audit_for, python, run_with_timeout, workspace_root};
use serde_json::Value;

fn server() -> Vec<String> {
    vec![
        python().display().to_string(),
        workspace_root()
            .join("tests/py/stateless_server.py")
            .display()
            .to_string(),
    ]
}

fn report(server: &[String]) -> Value {
    let mut cmd = Command::new(python());
    cmd.arg(workspace_root().join("tests/py/stateless_client.py"))
        .arg("--")
        .args(server);
    let out = run_with_timeout(&mut cmd, Duration::from_secs(120));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "stateless client failed ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("no JSON report ({e}): {stdout}"))
}

#[test]
fn the_stateless_revision_works_through_the_proxy_as_direct() {
    let direct = report(&server());
    assert_eq!(direct["protocol"], "2026-07-28", "{direct}");
    assert_eq!(direct["add"]["result_type"], "complete");

    let proxy = Proxy::allow_all("stateless");
    let proxied = report(&proxy.wrap(&server()));
    assert_eq!(direct, proxied);

    let audit = proxy.audit();
    let add = audit_for(&audit, "add");
    assert_eq!(add.len(), 1);
    // The client's identity travels in each request's `_meta` under this revision.
    assert_eq!(add[0]["agent"], "stateless-client");
    assert_eq!(add[0]["outcome"], "ok");
    assert_eq!(audit_for(&audit, "fail")[0]["outcome"], "tool_error");
}

#[test]
fn a_refusal_under_the_stateless_revision_is_a_complete_tool_error() {
    let proxy = Proxy::new(
        "stateless",
        "version = 1\n[[rules]]\nid = \"no-add\"\ntool = \"add\"\naction = \"block\"\nmessage = \"use a calculator\"\n",
    );
    let r = report(&proxy.wrap(&server()));
    assert_eq!(r["add"]["is_error"], true, "{r}");
    assert_eq!(r["add"]["result_type"], "complete");
    assert_eq!(r["add"]["content"][0]["text"], "use a calculator");
    assert!(
        !r["tools"].as_array().unwrap().iter().any(|t| t == "add"),
        "blocked tool is hidden: {r}"
    );
    let audit = proxy.audit();
    assert_eq!(audit_for(&audit, "add")[0]["verdict"], "block");
}
