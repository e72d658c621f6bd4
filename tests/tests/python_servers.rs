//! PyPI MCP servers (`mcp-server-git`, `mcp-server-time`, both built on the Python SDK) directly and
//! through `flowlink-proxy` with an allow-all policy.

use std::thread;

use flowlink_e2e::{
    Proxy, Report, assert_audit_fields, assert_same_report, call_text, git_server, make_git_repo,
    run_scenario, time_server,
};
use serde_json::{Value, json};

fn run_both(
    scenario: &str,
    extra: &[&str],
    server: &[String],
    service: &str,
) -> (Report, Report, Proxy) {
    let proxy = Proxy::allow_all(service);
    let wrapped = proxy.wrap(server);
    let (direct, proxied) = thread::scope(|s| {
        let d = s.spawn(|| run_scenario(scenario, extra, server));
        let p = s.spawn(|| run_scenario(scenario, extra, &wrapped));
        (
            d.join().expect("direct run"),
            p.join().expect("proxied run"),
        )
    });
    (direct, proxied, proxy)
}

fn check_git_report(r: &Value) {
    assert_eq!(r["initialize"]["serverInfo"]["name"], "mcp-git");
    let calls = r["calls"].as_array().expect("calls");
    let status = call_text(&calls[0]);
    assert!(
        status.contains("new file:   c.txt") && status.contains("modified:   a.txt"),
        "{status}"
    );
    let log = call_text(&calls[1]);
    assert!(
        log.contains("Message: second") && log.contains("Message: first"),
        "{log}"
    );
    assert!(
        call_text(&calls[2]).contains("+three"),
        "unstaged diff: {}",
        calls[2]
    );
    assert!(
        call_text(&calls[3]).contains("+staged"),
        "staged diff: {}",
        calls[3]
    );
    assert!(
        call_text(&calls[5]).contains("second"),
        "show: {}",
        calls[5]
    );
    assert_eq!(call_text(&calls[6]), "* main");
    assert_eq!(
        calls[7]["result"]["isError"], true,
        "a path outside the repository: {}",
        calls[7]
    );
}

fn git_fixture() -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let repo = dir.path().join("repo");
    make_git_repo(&repo);
    let repo = repo.to_string_lossy().into_owned();
    (dir, repo)
}

#[test]
fn git_server_direct() {
    let (_dir, repo) = git_fixture();
    let r = run_scenario("git", &["--repo", &repo], &git_server(repo.as_ref()));
    check_git_report(&r.json);
}

#[test]
fn git_server_through_proxy() {
    let (_dir, repo) = git_fixture();
    let (direct, proxied, proxy) =
        run_both("git", &["--repo", &repo], &git_server(repo.as_ref()), "git");
    check_git_report(&direct.json);
    assert_same_report(&direct.json, &proxied.json, &[]);
    let audit = proxy.audit();
    assert_eq!(audit.len(), 8, "{audit:#?}");
    assert_audit_fields(
        &audit[0],
        &[
            ("tool", json!("git_status")),
            ("verdict", json!("allow")),
            ("outcome", json!("ok")),
            ("service", json!("git")),
            ("arguments", json!({"repo_path": repo})),
        ],
    );
    assert_audit_fields(&audit[7], &[("outcome", json!("tool_error"))]);
}

fn check_time_report(r: &Value) {
    assert_eq!(r["initialize"]["serverInfo"]["name"], "mcp-time");
    let calls = r["calls"].as_array().expect("calls");
    assert_eq!(
        calls[0]["result"]["structuredContent"]["timezone"], "UTC",
        "{}",
        calls[0]
    );
    let converted = &calls[1]["result"]["structuredContent"];
    assert_eq!(converted["time_difference"], "+9.0h", "{converted}");
    assert!(
        converted["target"]["datetime"]
            .as_str()
            .is_some_and(|d| d.contains("T18:30:00+09:00")),
        "{converted}"
    );
    assert_eq!(calls[2]["result"]["isError"], true);
}

#[test]
fn time_server_direct() {
    let r = run_scenario("time", &[], &time_server());
    check_time_report(&r.json);
}

#[test]
fn time_server_through_proxy() {
    let (direct, proxied, proxy) = run_both("time", &[], &time_server(), "time");
    check_time_report(&direct.json);
    assert_same_report(&direct.json, &proxied.json, &[]);
    let audit = proxy.audit();
    let outcomes: Vec<&Value> = audit.iter().map(|a| &a["outcome"]).collect();
    assert_eq!(outcomes, ["ok", "ok", "tool_error"], "{audit:#?}");
}
