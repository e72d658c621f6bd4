//! The shield and the MCP guardrails through the real binary, with the built-in default policy:
//! dangerous commands refused with an explanation, tool pinning, poisoned descriptions,
//! secrets redacted from results, `shield check`.

mod support;

use std::process::Command;

use serde_json::{Value, json};
use support::*;

fn tool_names(list: &Value) -> Vec<String> {
    list["result"]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn the_default_policy_blocks_what_a_command_would_destroy() {
    let mut p = Proxy::start(&["--name", "scripted"], &scripted_server());
    p.initialize(json!({}));
    let r = p.call(json!(1), "run", json!({"command": "sudo rm -rf ~"}));
    assert_eq!(r["result"]["isError"], true, "{r}");
    assert!(text_of(&r).contains("FlowLink blocked"), "{r}");
    let r = p.call(json!(2), "run", json!({"command": "ls -la && cargo test"}));
    assert_eq!(text_of(&r), "ran: ls -la && cargo test");
    // Dangerous text that is only data passes.
    let r = p.call(json!(3), "run", json!({"command": "echo 'rm -rf ~'"}));
    assert_eq!(text_of(&r), "ran: echo 'rm -rf ~'");
    assert!(
        !p.server_log()
            .iter()
            .any(|m| m["params"]["arguments"]["command"] == "sudo rm -rf ~")
    );
    p.close_stdin();
    p.wait();
    let audit = p.audit();
    assert_eq!(audit[0]["verdict"], "block");
    assert_eq!(audit[0]["rule_id"], "shield");
    assert!(audit[0]["risk"].as_u64().unwrap() >= 80);
    let finding = &audit[0]["findings"][0];
    assert_eq!(finding["category"], "filesystem");
    assert_eq!(finding["pointer"], "/command");
    assert_eq!(audit[1]["verdict"], "allow");
    assert!(audit[1]["risk"].as_u64().unwrap() < 40);
}

#[test]
fn a_changed_tool_is_quarantined_until_its_pin_is_accepted() {
    let mut p = Proxy::start(&["--name", "scripted"], &scripted_server());
    p.initialize(json!({}));
    assert!(tool_names(&p.request(json!(1), "tools/list", json!({}))).contains(&"echo".to_owned()));
    p.call(json!(2), "mutate", json!({}));
    p.recv_where("list_changed", |v| {
        v["method"] == "notifications/tools/list_changed"
    });
    let names = tool_names(&p.request(json!(3), "tools/list", json!({})));
    assert!(!names.contains(&"echo".to_owned()), "{names:?}");
    let r = p.call(json!(4), "echo", json!({"text": "x"}));
    assert_eq!(r["result"]["isError"], true);
    assert!(
        text_of(&r).contains("pins accept --service scripted --tool echo"),
        "{r}"
    );
    p.wait_stderr("quarantined");

    let out = Command::new(env!("CARGO_BIN_EXE_flowlink-proxy"))
        .args(["pins", "list", "--data-dir"])
        .arg(p.data_dir())
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("CHANGED"));
    let out = Command::new(env!("CARGO_BIN_EXE_flowlink-proxy"))
        .args([
            "pins",
            "accept",
            "--service",
            "scripted",
            "--tool",
            "echo",
            "--data-dir",
        ])
        .arg(p.data_dir())
        .output()
        .unwrap();
    assert!(out.status.success());
    let names = tool_names(&p.request(json!(5), "tools/list", json!({})));
    assert!(names.contains(&"echo".to_owned()));
    assert_eq!(
        text_of(&p.call(json!(6), "echo", json!({"text": "back"}))),
        "back"
    );
    p.close_stdin();
    p.wait();
}

#[test]
fn a_poisoned_tool_description_hides_the_tool() {
    let dir = tempfile::tempdir().unwrap();
    let mut env = std::collections::HashMap::new();
    env.insert("SCRIPTED_SERVER_POISON", "1".to_owned());
    let mut p = Proxy::start_with_env(dir, &["--name", "scripted"], &scripted_server(), &env);
    p.initialize(json!({}));
    let names = tool_names(&p.request(json!(1), "tools/list", json!({})));
    assert!(!names.contains(&"helper".to_owned()), "{names:?}");
    assert!(names.contains(&"echo".to_owned()));
    let r = p.call(json!(2), "helper", json!({"sidenote": "x"}));
    assert_eq!(r["result"]["isError"], true);
    assert!(text_of(&r).contains("steer the model"), "{r}");
    p.close_stdin();
    p.wait();
}

#[test]
fn secrets_in_results_are_redacted_before_the_agent_sees_them() {
    let mut p = Proxy::start(&["--name", "scripted"], &scripted_server());
    p.initialize(json!({}));
    let r = p.call(json!(1), "leak", json!({}));
    let text = text_of(&r);
    assert!(text.contains("[REDACTED:"), "{text}");
    assert!(!text.contains("Z7QXW3J5K2M4N6PQ"), "{text}");
    assert!(!text.contains("a1B2c3D4e5F6g7H8"), "{text}");
    assert!(text.contains("region=eu-west-1"), "the rest stays: {text}");
    p.wait_stderr("redacted");
    p.close_stdin();
    p.wait();
}

#[test]
fn shield_check_explains_verdicts() {
    let run = |args: &[&str], stdin: Option<&str>| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_flowlink-proxy"));
        cmd.args(args);
        if let Some(input) = stdin {
            use std::io::Write;
            let mut child = cmd
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            child
                .stdin
                .take()
                .unwrap()
                .write_all(input.as_bytes())
                .unwrap();
            let out = child.wait_with_output().unwrap();
            return String::from_utf8_lossy(&out.stdout).into_owned();
        }
        String::from_utf8_lossy(&cmd.output().unwrap().stdout).into_owned()
    };
    let text = run(&["shield", "check", "--", "rm", "-rf", "~"], None);
    assert!(text.starts_with("verdict: block"), "{text}");
    assert!(text.contains("home"), "{text}");
    let v: Value = serde_json::from_str(&run(
        &["shield", "check", "--json", "--", "git", "status"],
        None,
    ))
    .unwrap();
    assert_eq!(v["verdict"], "allow");
    let lines = run(
        &["shield", "check", "--jsonl"],
        Some(
            "{\"kind\":\"sql\",\"input\":\"DROP TABLE users\"}\n{\"kind\":\"shell\",\"input\":\"ls\"}\nnot json\n{\"kind\":\"sql\",\"input\":\"SELECT 1\"}\n",
        ),
    );
    let out: Vec<Value> = lines
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(out.len(), 4);
    assert_eq!(out[0]["verdict"], "block");
    assert_eq!(out[1]["verdict"], "allow");
    assert!(out[2]["error"].as_str().unwrap().contains("not JSON"));
    assert_eq!(out[3]["verdict"], "allow");
}

#[test]
fn a_tool_that_collides_with_another_services_tool_is_reported() {
    // Proxy A pins the scripted server's tools as service `alpha`.
    let mut a = Proxy::start(&["--name", "alpha"], &scripted_server());
    a.initialize(json!({}));
    a.request(json!(1), "tools/list", json!({}));
    a.close_stdin();
    a.wait();
    // Proxy B shares the pin store and wraps a server exposing the same tool names.
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("data")).unwrap();
    std::fs::copy(
        a.data_dir().join("pins.sqlite3"),
        dir.path().join("data/pins.sqlite3"),
    )
    .unwrap();
    let mut b = Proxy::start_in(dir, &["--name", "beta"], &scripted_server());
    b.initialize(json!({}));
    b.request(json!(1), "tools/list", json!({}));
    b.close_stdin();
    b.wait();
    let err = b.stderr();
    assert!(err.contains("warning: tool `echo` of `beta`"), "{err}");
    assert!(err.contains("alpha"), "the other service is named: {err}");
}
