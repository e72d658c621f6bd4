//! The harness itself: the pinned tools are the versions the repository pins, and a scenario that
//! goes wrong makes its test fail rather than pass quietly.

use flowlink_e2e::{
    call_text, everything_server, node_modules, python, run_scenario, run_with_timeout,
    workspace_root,
};
use serde_json::{Value, json};
use std::process::Command;
use std::time::Duration;

fn json_file(path: &std::path::Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn installed_npm_tools_match_the_pins() {
    let pins = json_file(&workspace_root().join("tests/package.json"));
    let deps = pins["dependencies"].as_object().expect("dependencies");
    assert!(!deps.is_empty());
    for (name, version) in deps {
        let installed = json_file(&node_modules().join(name).join("package.json"));
        assert_eq!(
            &installed["version"], version,
            "{name}: run scripts/test to reinstall"
        );
    }
}

#[test]
fn installed_python_tools_match_the_pins() {
    let reqs = std::fs::read_to_string(workspace_root().join("tests/requirements.txt"))
        .expect("requirements");
    let pins: Vec<(&str, &str)> = reqs
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            l.split_once("==")
                .unwrap_or_else(|| panic!("not pinned with ==: {l}"))
        })
        .collect();
    for top in ["mcp", "mcp-server-git", "mcp-server-time"] {
        assert!(pins.iter().any(|(n, _)| *n == top), "{top} must be pinned");
    }
    let names: Vec<&str> = pins.iter().map(|(n, _)| *n).collect();
    let script = "import sys, json, importlib.metadata as m\nprint(json.dumps({n: m.version(n) for n in sys.argv[1:]}))";
    let mut cmd = Command::new(python());
    cmd.arg("-c").arg(script).args(&names);
    let out = run_with_timeout(&mut cmd, Duration::from_secs(30));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let installed: Value = serde_json::from_slice(&out.stdout).expect("json");
    for (name, version) in pins {
        assert_eq!(
            installed[name], version,
            "{name}: run scripts/test to reinstall"
        );
    }
}

#[test]
fn calls_scenario_reports_results_and_protocol_errors() {
    let calls = json!([
        {"tool": "echo", "arguments": {"message": "x"}},
        {"tool": "get-env"}
    ])
    .to_string();
    let r = run_scenario(
        "calls",
        &["--client-name", "harness", "--calls", &calls],
        &everything_server(),
    );
    assert_eq!(call_text(&r.json["calls"][0]), "Echo: x");
    // Directly, nothing blocks get-env (the policy tests rely on that contrast).
    assert!(
        call_text(&r.json["calls"][1]).contains("PATH"),
        "{}",
        r.json["calls"][1]
    );
}

#[test]
#[should_panic(expected = "scenario `calls` failed")]
fn a_server_that_cannot_start_fails_the_test() {
    run_scenario("calls", &[], &["/nonexistent/mcp-server".to_owned()]);
}

#[test]
#[should_panic(expected = "scenario `calls` failed")]
fn a_server_that_is_not_mcp_fails_the_test() {
    run_scenario(
        "calls",
        &["--timeout", "3"],
        &["cat".to_owned(), "/dev/null".to_owned()],
    );
}
