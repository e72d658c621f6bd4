//! Policy enforcement through `flowlink-proxy` in front of `@modelcontextprotocol/server-everything`:
//! block (hidden from tools/list, refused with the rule's message), rate limit (-32002 with
//! retryAfterMs), confirm (elicitation to the client: accepted, declined, or not possible), and the
//! audit trail of each (`flowlink-proxy audit --json`).

use flowlink_e2e::{
    Proxy, Report, assert_audit_fields, call_text, calls_to, everything_server, run_scenario,
};
use serde_json::{Value, json};

const SERVICE: &str = "everything";
const AGENT: &str = "policy-e2e-agent";

const POLICY: &str = r#"
version = 1
default_action = "allow"
hide_blocked_tools = true

[offline]
confirm = "block"
confirm_timeout_secs = 30

[[rules]]
id = "no-env"
tool = "get-env"
action = "block"
message = "environment variables may hold secrets"

[[rules]]
id = "no-rm-rf"
tool = "echo"
action = "block"
message = "that looks like a destructive shell command"
  [[rules.when]]
  pointer = "/message"
  regex = 'rm\s+-rf'

[[rules]]
id = "confirm-image"
tool = "get-tiny-image"
action = "confirm"
message = "may the agent fetch the image?"

[[rate_limits]]
id = "sum-two-a-minute"
scope = "tool"
tool = "get-sum"
per_minute = 2
"#;

/// Runs the `calls` scenario through a proxy with [`POLICY`]; returns the report and the audit.
fn through_policy(calls: Value, extra: &[&str]) -> (Report, Vec<Value>) {
    let proxy = Proxy::new(SERVICE, POLICY);
    let calls = calls.to_string();
    let mut args = vec!["--client-name", AGENT, "--calls", &calls];
    args.extend_from_slice(extra);
    let report = run_scenario("calls", &args, &proxy.wrap(&everything_server()));
    let audit = proxy.audit();
    (report, audit)
}

fn tools(report: &Report) -> Vec<&str> {
    report.json["tools"]
        .as_array()
        .expect("tools")
        .iter()
        .filter_map(Value::as_str)
        .collect()
}

fn call(report: &Report, i: usize) -> &Value {
    &report.json["calls"][i]
}

#[test]
fn blocked_tool_is_hidden_and_refused_with_the_rule_message() {
    let (r, audit) = through_policy(
        json!([
            {"tool": "get-env"},
            {"tool": "echo", "arguments": {"message": "hello"}},
            {"tool": "echo", "arguments": {"message": "please rm -rf / now"}}
        ]),
        &[],
    );
    let listed = tools(&r);
    assert!(
        !listed.contains(&"get-env"),
        "get-env must be hidden: {listed:?}"
    );
    assert!(
        listed.contains(&"echo"),
        "echo is only conditionally blocked: {listed:?}"
    );

    let env = call(&r, 0);
    assert_eq!(env["result"]["isError"], true, "{env}");
    assert!(
        call_text(env).contains("environment variables may hold secrets"),
        "{env}"
    );
    assert_eq!(call_text(call(&r, 1)), "Echo: hello");
    let rm = call(&r, 2);
    assert_eq!(rm["result"]["isError"], true, "{rm}");
    assert!(call_text(rm).contains("destructive shell command"), "{rm}");

    assert_eq!(audit.len(), 3, "one record per call: {audit:#?}");
    assert_audit_fields(
        &audit[0],
        &[
            ("tool", json!("get-env")),
            ("verdict", json!("block")),
            ("rule_id", json!("no-env")),
            ("outcome", json!("not_forwarded")),
            ("agent", json!(AGENT)),
            ("service", json!(SERVICE)),
        ],
    );
    assert_audit_fields(
        &audit[1],
        &[
            ("tool", json!("echo")),
            ("verdict", json!("allow")),
            ("outcome", json!("ok")),
            ("agent", json!(AGENT)),
            ("arguments", json!({"message": "hello"})),
        ],
    );
    assert_audit_fields(
        &audit[2],
        &[
            ("tool", json!("echo")),
            ("verdict", json!("block")),
            ("rule_id", json!("no-rm-rf")),
            ("outcome", json!("not_forwarded")),
        ],
    );
    // Every record of one client run shares its session.
    assert_eq!(audit[0]["session_id"], audit[2]["session_id"]);
}

#[test]
fn rate_limited_call_gets_error_32002_with_retry_after() {
    let sum = json!({"tool": "get-sum", "arguments": {"a": 1, "b": 2}});
    let (r, audit) = through_policy(json!([sum, sum, sum]), &[]);
    assert_eq!(call_text(call(&r, 0)), "The sum of 1 and 2 is 3.");
    assert_eq!(call_text(call(&r, 1)), "The sum of 1 and 2 is 3.");
    let limited = call(&r, 2);
    assert_eq!(limited["error"]["code"], -32002, "{limited}");
    let retry = limited["error"]["data"]["retryAfterMs"].as_u64();
    assert!(retry.is_some_and(|ms| ms > 0), "retryAfterMs: {limited}");

    let verdicts: Vec<&Value> = audit.iter().map(|a| &a["verdict"]).collect();
    assert_eq!(verdicts, ["allow", "allow", "rate_limited"], "{audit:#?}");
    let outcomes: Vec<&Value> = audit.iter().map(|a| &a["outcome"]).collect();
    assert_eq!(outcomes, ["ok", "ok", "not_forwarded"], "{audit:#?}");
}

#[test]
fn confirm_accepted_in_the_editor_runs_the_tool() {
    let (r, audit) = through_policy(
        json!([{"tool": "get-tiny-image"}]),
        &["--elicitation", "accept"],
    );
    let elicits = r.json["server_initiated"]["elicitation_requests"]
        .as_array()
        .expect("elicits");
    assert_eq!(
        elicits.len(),
        1,
        "the proxy asks the client once: {elicits:?}"
    );
    let image = call(&r, 0);
    assert_eq!(image["result"]["content"][1]["type"], "image", "{image}");
    assert_eq!(audit.len(), 1, "{audit:#?}");
    assert_audit_fields(
        &audit[0],
        &[
            ("verdict", json!("approved")),
            ("rule_id", json!("confirm-image")),
            ("outcome", json!("ok")),
        ],
    );
}

#[test]
fn confirm_declined_in_the_editor_is_refused() {
    let (r, audit) = through_policy(
        json!([{"tool": "get-tiny-image"}]),
        &["--elicitation", "decline"],
    );
    assert_eq!(
        calls_to(&r.json, "get-tiny-image")[0]["result"]["isError"],
        true,
        "{}",
        r.json
    );
    assert_eq!(audit.len(), 1, "{audit:#?}");
    assert_audit_fields(
        &audit[0],
        &[
            ("verdict", json!("denied")),
            ("outcome", json!("not_forwarded")),
        ],
    );
}

#[test]
fn confirm_form_accepted_without_consent_is_refused() {
    // The client submits the form but leaves the consent box unticked.
    let (r, audit) = through_policy(
        json!([{"tool": "get-tiny-image"}]),
        &["--elicitation", "accept-false"],
    );
    assert_eq!(call(&r, 0)["result"]["isError"], true, "{}", r.json);
    assert_eq!(audit.len(), 1, "{audit:#?}");
    assert_audit_fields(
        &audit[0],
        &[
            ("verdict", json!("denied")),
            ("outcome", json!("not_forwarded")),
        ],
    );
}

#[test]
fn confirm_without_elicitation_capability_is_blocked() {
    let (r, audit) = through_policy(json!([{"tool": "get-tiny-image"}]), &["--no-elicitation"]);
    let image = call(&r, 0);
    assert_eq!(image["result"]["isError"], true, "{image}");
    let elicits = r.json["server_initiated"]["elicitation_requests"]
        .as_array()
        .expect("elicits");
    assert!(
        elicits.is_empty(),
        "no elicitation without the capability: {elicits:?}"
    );
    assert_eq!(audit.len(), 1, "{audit:#?}");
    assert_audit_fields(&audit[0], &[("outcome", json!("not_forwarded"))]);
    let verdict = audit[0]["verdict"].as_str().unwrap_or_default();
    assert!(
        verdict == "block" || verdict == "denied",
        "verdict {verdict:?}: {:#?}",
        audit[0]
    );
}
