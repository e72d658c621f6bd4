//! The command line as a user types it: policy check/explain, audit filters, install/uninstall,
//! FLOWLINK_POLICY.

mod support;

use std::process::{Command, Output};

use serde_json::json;
use support::*;

fn proxy(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_flowlink-proxy"))
        .args(args)
        .output()
        .expect("run flowlink-proxy")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn policy_check_and_explain() {
    let dir = tempfile::tempdir().unwrap();
    let good = write_policy(
        dir.path(),
        "version = 1\n[[rules]]\nid = \"no-push\"\ntool = \"git_push\"\naction = \"block\"\nmessage = \"open a PR instead\"\n",
    );
    let out = proxy(&["policy", "check", good.to_str().unwrap()]);
    assert!(out.status.success());
    assert!(text(&out.stdout).contains("ok (1 rules)"));

    let out = proxy(&[
        "policy",
        "explain",
        good.to_str().unwrap(),
        "--service",
        "git",
        "--tool",
        "git_push",
        "--args",
        r#"{"branch":"main"}"#,
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let s = text(&out.stdout);
    assert!(s.contains("no-push") && s.contains("block"), "{s}");

    let out = proxy(&[
        "policy",
        "explain",
        good.to_str().unwrap(),
        "--service",
        "git",
        "--tool",
        "x",
        "--args",
        "[1]",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("JSON object"));

    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "version = 1\n[[rules]]\nid = \"a\"\ntool = \"[\"\naction = \"block\"\n",
    )
    .unwrap();
    let out = proxy(&["policy", "check", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("line 4"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn the_policy_can_come_from_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let policy = write_policy(
        dir.path(),
        "version = 1\n[[rules]]\nid = \"env-policy\"\ntool = \"echo\"\naction = \"block\"\nmessage = \"from FLOWLINK_POLICY\"\n",
    );
    let mut p = {
        let mut cmd_env = std::collections::HashMap::new();
        cmd_env.insert("FLOWLINK_POLICY", policy.display().to_string());
        Proxy::start_with_env(dir, &[], &scripted_server(), &cmd_env)
    };
    p.initialize(json!({}));
    let r = p.call(json!(1), "echo", json!({"text": "x"}));
    assert_eq!(text_of(&r), "from FLOWLINK_POLICY");
    p.close_stdin();
    p.wait();
}

#[test]
fn audit_filters_by_tool_and_time() {
    let mut p = Proxy::start(&[], &scripted_server());
    p.initialize(json!({}));
    p.call(json!(1), "echo", json!({"text": "a"}));
    p.call(json!(2), "whoami", json!({}));
    p.call(json!(3), "echo", json!({"text": "b"}));
    p.close_stdin();
    p.wait();
    let dir = p.data_dir();
    let d = dir.to_str().unwrap();
    let out = proxy(&["audit", "--data-dir", d, "--json", "--tool", "echo"]);
    let lines: Vec<serde_json::Value> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    assert!(lines.iter().all(|l| l["tool"] == "echo"));
    let out = proxy(&["audit", "--data-dir", d, "--json", "--since", "1h"]);
    assert_eq!(text(&out.stdout).lines().count(), 3);
    let out = proxy(&[
        "audit",
        "--data-dir",
        d,
        "--json",
        "--since",
        "2099-01-01T00:00:00Z",
    ]);
    assert_eq!(text(&out.stdout).lines().count(), 0);
    let out = proxy(&["audit", "--data-dir", d, "--since", "yesterday-ish"]);
    assert!(!out.status.success());
    let out = proxy(&["audit", "--data-dir", d]);
    let table = text(&out.stdout);
    assert!(
        table.contains("whoami") && table.contains("allow"),
        "{table}"
    );
    let out = proxy(&["audit", "--data-dir", "/nonexistent/flowlink"]);
    assert!(text(&out.stderr).contains("no audit store"));
}

#[test]
fn install_then_uninstall_restores_the_file() {
    let home = tempfile::tempdir().unwrap();
    let cfg_dir = home.path().join(".cursor");
    std::fs::create_dir_all(&cfg_dir).unwrap();
    let cfg = cfg_dir.join("mcp.json");
    let original = r#"{
  "mcpServers": {
    "git": { "command": "uvx", "args": ["mcp-server-git"], "env": { "GIT_TRACE": "0" } },
    "remote": { "url": "https://mcp.example.invalid/sse" }
  },
  "someFutureSetting": true
}
"#;
    std::fs::write(&cfg, original).unwrap();
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_flowlink-proxy"))
            .args(args)
            .env("HOME", home.path())
            .current_dir(home.path())
            .output()
            .unwrap()
    };
    let out = run(&["install", "--client", "cursor", "--dry-run"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        std::fs::read_to_string(&cfg).unwrap(),
        original,
        "dry run writes nothing"
    );
    assert!(text(&out.stdout).contains("flowlink-proxy"));

    let out = run(&["install", "--client", "cursor"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let report = text(&out.stdout);
    assert!(
        report.contains("remote"),
        "the remote server is reported as left alone: {report}"
    );
    let installed: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&cfg).unwrap()).unwrap();
    let git = &installed["mcpServers"]["git"];
    assert!(git["command"].as_str().unwrap().ends_with("flowlink-proxy"));
    assert_eq!(
        git["args"],
        json!(["--name", "git", "--", "uvx", "mcp-server-git"])
    );
    assert_eq!(git["env"]["GIT_TRACE"], "0");
    assert_eq!(installed["someFutureSetting"], true);
    let backups = std::fs::read_dir(&cfg_dir)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().contains("flowlink-backup"))
        .count();
    assert_eq!(backups, 1);

    let out = run(&["uninstall", "--client", "cursor"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(std::fs::read_to_string(&cfg).unwrap(), original);
}
