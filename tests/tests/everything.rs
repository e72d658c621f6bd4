//! `@modelcontextprotocol/server-everything` — every protocol feature — directly and through
//! `flowlink-proxy` with an allow-all policy. The `*_direct` tests check the scenario client and
//! the server themselves; the `*_through_proxy` tests require the proxy's report to equal the
//! direct one (after normalisation) and its audit to hold one record per call.

use std::thread;

use flowlink_e2e::{
    DEFAULT_AGENT, Proxy, Report, assert_audit_fields, assert_same_report, audit_for, call_text,
    calls_to, decode_base64, everything_server, run_scenario,
};
use serde_json::{Value, json};

const SERVICE: &str = "everything";

/// Runs `scenario` directly and through an allow-all proxy, in parallel.
fn direct_and_proxied(scenario: &str) -> (Report, Report, Proxy) {
    let proxy = Proxy::allow_all(SERVICE);
    let wrapped = proxy.wrap(&everything_server());
    let (direct, proxied) = thread::scope(|s| {
        let d = s.spawn(|| run_scenario(scenario, &[], &everything_server()));
        let p = s.spawn(|| run_scenario(scenario, &[], &wrapped));
        (
            d.join().expect("direct run"),
            p.join().expect("proxied run"),
        )
    });
    (direct, proxied, proxy)
}

fn only<'a>(calls: Vec<&'a Value>, what: &str) -> &'a Value {
    assert_eq!(calls.len(), 1, "expected exactly one call to {what}");
    calls[0]
}

fn check_tools_report(r: &Value) {
    let tools: Vec<&str> = r["tools"]
        .as_array()
        .expect("tools")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    for expected in [
        "echo",
        "get-annotated-message",
        "get-env",
        "get-resource-links",
        "get-resource-reference",
        "get-structured-content",
        "get-sum",
        "get-tiny-image",
        "gzip-file-as-resource",
        "toggle-simulated-logging",
        "toggle-subscriber-updates",
        "trigger-long-running-operation",
        // Registered only because the client declared roots, elicitation and sampling.
        "get-roots-list",
        "trigger-elicitation-request",
        "trigger-url-elicitation",
        "trigger-sampling-request",
    ] {
        assert!(
            tools.contains(&expected),
            "tools/list lacks {expected}: {tools:?}"
        );
    }
    assert_eq!(
        r["initialize"]["serverInfo"]["name"],
        "mcp-servers/everything"
    );
    assert_eq!(r["initialize"]["protocolVersion"], "2025-11-25");

    let echo = only(calls_to(r, "echo"), "echo");
    assert_eq!(call_text(echo), "Echo: hello through flowlink");
    let sums = calls_to(r, "get-sum");
    assert_eq!(call_text(sums[0]), "The sum of 19 and 23 is 42.");
    assert_eq!(
        sums[1]["result"]["isError"], true,
        "invalid arguments must be a tool error"
    );

    let image = only(calls_to(r, "get-tiny-image"), "get-tiny-image");
    let png = &image["result"]["content"][1];
    assert_eq!(png["type"], "image");
    assert_eq!(png["mimeType"], "image/png");
    let bytes = decode_base64(png["data"].as_str().expect("image data")).expect("base64");
    assert_eq!(&bytes[..4], b"\x89PNG");

    let annotated = calls_to(r, "get-annotated-message");
    assert_eq!(
        annotated[0]["result"]["content"][0]["annotations"]["priority"],
        1.0
    );
    assert_eq!(annotated[1]["result"]["content"][1]["type"], "image");

    let links = only(calls_to(r, "get-resource-links"), "get-resource-links");
    let link_count = links["result"]["content"]
        .as_array()
        .expect("content")
        .iter()
        .filter(|c| c["type"] == "resource_link")
        .count();
    assert_eq!(link_count, 4);

    let refs = calls_to(r, "get-resource-reference");
    assert_eq!(
        refs[0]["result"]["content"][1]["resource"]["uri"],
        "demo://resource/dynamic/text/2"
    );
    assert!(refs[1]["result"]["content"][1]["resource"]["blob"].is_string());

    let weather = only(
        calls_to(r, "get-structured-content"),
        "get-structured-content",
    );
    assert!(weather["result"]["structuredContent"]["temperature"].is_number());

    let gz = only(
        calls_to(r, "gzip-file-as-resource"),
        "gzip-file-as-resource",
    );
    let blob = gz["result"]["content"][0]["resource"]["blob"]
        .as_str()
        .expect("gzip blob");
    assert_eq!(&decode_base64(blob).expect("base64")[..2], b"\x1f\x8b");

    // Progress: three notifications for the three steps, in order.
    assert_eq!(
        r["progress"],
        json!([
            {"progress": 1.0, "total": 3.0, "message": null},
            {"progress": 2.0, "total": 3.0, "message": null},
            {"progress": 3.0, "total": 3.0, "message": null}
        ])
    );

    // Sampling: the server asked once, and used the client's canned answer.
    let si = &r["server_initiated"];
    assert_eq!(si["sampling_requests"].as_array().map(Vec::len), Some(1));
    assert_eq!(si["sampling_requests"][0]["maxTokens"], 20);
    let sampling = only(
        calls_to(r, "trigger-sampling-request"),
        "trigger-sampling-request",
    );
    assert!(
        call_text(sampling).contains("canned sampling answer"),
        "{sampling}"
    );

    // Elicitation: form accepted, form declined, URL accepted.
    let elicits = calls_to(r, "trigger-elicitation-request");
    assert!(
        call_text(elicits[0]).contains("Name: Ada Lovelace"),
        "{}",
        elicits[0]
    );
    assert!(call_text(elicits[1]).contains("declined"), "{}", elicits[1]);
    let url = only(
        calls_to(r, "trigger-url-elicitation"),
        "trigger-url-elicitation",
    );
    assert!(call_text(url).contains("e2e-elicit-1"), "{url}");
    assert_eq!(si["elicitation_requests"].as_array().map(Vec::len), Some(3));
    assert_eq!(si["elicitation_requests"][2]["params"]["mode"], "url");

    // Roots: asked once after initialisation, reported by the tool.
    assert_eq!(si["roots_requests"], 1);
    let roots = only(calls_to(r, "get-roots-list"), "get-roots-list");
    assert!(
        call_text(roots).contains("file:///flowlink-e2e/workspace"),
        "{roots}"
    );

    // Logging: the roots log line, and the simulated logger after logging/setLevel.
    assert!(
        si["log_messages"]
            .as_array()
            .expect("logs")
            .iter()
            .any(|m| m["data"] == "Roots updated: 2 root(s) received from client"),
        "{si}"
    );
    assert_eq!(si["simulated_log_messages_seen"], true);
    assert!(
        si["other_notifications"]
            .as_array()
            .expect("notifications")
            .contains(&json!("notifications/tools/list_changed"))
    );

    let unknown = only(calls_to(r, "no-such-tool"), "no-such-tool");
    assert_eq!(unknown["result"]["isError"], true);
    assert_eq!(r["ping"], json!({}));
}

#[test]
fn everything_tools_direct() {
    let r = run_scenario("everything-tools", &[], &everything_server());
    check_tools_report(&r.json);
}

#[test]
fn everything_tools_through_proxy() {
    let (direct, proxied, proxy) = direct_and_proxied("everything-tools");
    check_tools_report(&direct.json);
    assert_same_report(&direct.json, &proxied.json, &[]);

    // One audit record per tools/call, in order, all allowed, with the client's name as agent.
    let audit = proxy.audit();
    let calls = proxied.json["calls"].as_array().expect("calls");
    let audited: Vec<&Value> = audit.iter().map(|r| &r["tool"]).collect();
    let made: Vec<&Value> = calls.iter().map(|c| &c["tool"]).collect();
    assert_eq!(audited, made, "audit tools vs calls made");
    for (record, call) in audit.iter().zip(calls) {
        let outcome = if call["result"]["isError"] == true {
            "tool_error"
        } else {
            "ok"
        };
        assert_audit_fields(
            record,
            &[
                ("verdict", json!("allow")),
                ("outcome", json!(outcome)),
                ("agent", json!(DEFAULT_AGENT)),
                ("service", json!(SERVICE)),
                ("arguments", call["arguments"].clone()),
            ],
        );
    }
    let first = &audit_for(&audit, "echo")[0];
    assert!(first["duration_us"].as_u64().is_some(), "{first}");
}

fn check_resources_prompts_report(r: &Value) {
    let resources = r["resources"]["resources"].as_array().expect("resources");
    assert_eq!(resources.len(), 7, "{resources:?}");
    assert_eq!(r["resources"]["pages"], 1);
    let templates = r["resource_templates"]["resource_templates"]
        .as_array()
        .expect("templates");
    assert_eq!(
        templates[0]["uriTemplate"],
        "demo://resource/dynamic/text/{resourceId}"
    );

    let reads = r["resource_reads"].as_array().expect("reads");
    assert!(
        reads[0]["result"]["contents"][0]["text"]
            .as_str()
            .is_some_and(|t| t.starts_with("# Everything Server")),
        "{}",
        reads[0]
    );
    assert!(
        reads[3]["result"]["contents"][0]["text"]
            .as_str()
            .is_some_and(|t| t.starts_with("Resource 1:"))
    );
    assert!(reads[4]["result"]["contents"][0]["blob"].is_string());
    assert_eq!(
        reads[5]["error"]["code"], -32602,
        "unknown resource must be an error"
    );
    assert_eq!(r["subscribe_unsubscribe"], json!([{}, {}]));

    let prompts: Vec<&Value> = r["prompts"]["prompts"]
        .as_array()
        .expect("prompts")
        .iter()
        .map(|p| &p["name"])
        .collect();
    assert_eq!(
        prompts,
        [
            "simple-prompt",
            "args-prompt",
            "completable-prompt",
            "resource-prompt"
        ]
    );
    let gets = r["prompt_gets"].as_array().expect("gets");
    assert_eq!(
        gets[1]["result"]["messages"][0]["content"]["text"],
        "What's weather in Lisbon, Lisboa?"
    );
    assert_eq!(
        gets[4]["result"]["messages"][1]["content"]["type"],
        "resource"
    );
    assert_eq!(gets[5]["error"]["code"], -32602);

    assert_eq!(
        r["completions"][0]["completion"]["values"],
        json!(["Engineering"])
    );
    assert_eq!(
        r["completions"][1]["completion"]["values"],
        json!(["Alice", "Bob", "Charlie"])
    );
    assert!(
        r["server_initiated"]["log_messages"]
            .as_array()
            .expect("logs")
            .iter()
            .any(|m| m["data"]
                .as_str()
                .is_some_and(|d| d.starts_with("Received Subscribe Resource request")))
    );
}

#[test]
fn everything_resources_prompts_direct() {
    let r = run_scenario("everything-resources-prompts", &[], &everything_server());
    check_resources_prompts_report(&r.json);
}

#[test]
fn everything_resources_prompts_through_proxy() {
    let (direct, proxied, proxy) = direct_and_proxied("everything-resources-prompts");
    check_resources_prompts_report(&direct.json);
    assert_same_report(&direct.json, &proxied.json, &[]);
    // No tools/call in this scenario: nothing to audit.
    assert_eq!(proxy.audit(), Vec::<Value>::new());
}

fn check_cancel_report(r: &Value) {
    assert_eq!(r["cancelled_before_result"], true, "{r}");
    assert_eq!(r["progress_before_cancel_seen"], true, "{r}");
    assert_eq!(
        call_text(&r["after_cancel"]),
        "Echo: still alive after cancel"
    );
}

#[test]
fn everything_cancel_direct() {
    let r = run_scenario("everything-cancel", &[], &everything_server());
    check_cancel_report(&r.json);
}

#[test]
fn everything_cancel_through_proxy() {
    let (direct, proxied, proxy) = direct_and_proxied("everything-cancel");
    check_cancel_report(&direct.json);
    assert_same_report(&direct.json, &proxied.json, &[]);
    let audit = proxy.audit();
    assert_eq!(audit.len(), 2, "{audit:#?}");
    assert_audit_fields(
        audit_for(&audit, "trigger-long-running-operation")[0],
        &[("verdict", json!("allow")), ("outcome", json!("cancelled"))],
    );
    assert_audit_fields(
        audit_for(&audit, "echo")[0],
        &[("verdict", json!("allow")), ("outcome", json!("ok"))],
    );
}
