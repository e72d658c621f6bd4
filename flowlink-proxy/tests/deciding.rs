//! Deciding through the real binary: block, hide, rate limit, confirm in the editor, hot reload,
//! fail closed.

mod support;

use serde_json::{Value, json};
use support::*;

const POLICY: &str = r#"
version = 1
default_action = "allow"

[offline]
confirm_timeout_secs = 2

[[rules]]
id = "no-crash"
tool = "crash"
action = "block"
message = "crashing the server is not allowed; use `echo` to test instead"

[[rules]]
id = "no-secret-echo"
tool = "echo"
action = "block"
message = "do not echo secrets"
  [[rules.when]]
  pointer = "/text"
  regex = "(?i)password"

[[rules]]
id = "ask-before-slow"
tool = "slow"
action = "confirm"

[[rules]]
id = "approve-fail"
tool = "fail"
action = "approve"

[[rate_limits]]
id = "whoami-limit"
scope = "tool"
tool = "whoami"
per_minute = 2
burst = 2
"#;

fn start(caps: Value) -> Proxy {
    let dir = tempfile::tempdir().unwrap();
    let policy = write_policy(dir.path(), POLICY);
    let policy = policy.display().to_string();
    let mut p = Proxy::start_in(
        dir,
        &["--name", "scripted", "--policy", &policy],
        &scripted_server(),
    );
    p.initialize(caps);
    p
}

#[test]
fn blocked_calls_get_the_rule_message_and_blocked_tools_are_hidden() {
    let mut p = start(json!({}));
    let r = p.call(json!(1), "crash", json!({}));
    assert_eq!(r["result"]["isError"], true);
    assert!(text_of(&r).contains("use `echo` to test instead"));

    let r = p.call(json!(2), "echo", json!({"text": "my PASSWORD is hunter2"}));
    assert_eq!(r["result"]["isError"], true);
    assert_eq!(text_of(&r), "do not echo secrets");
    let r = p.call(json!(3), "echo", json!({"text": "hello"}));
    assert_eq!(text_of(&r), "hello");

    let list = p.request(json!(4), "tools/list", json!({}));
    let names: Vec<_> = list["result"]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_owned())
        .collect();
    assert!(!names.contains(&"crash".to_owned()), "{names:?}");
    assert!(
        names.contains(&"echo".to_owned()),
        "conditionally blocked tools stay listed"
    );

    // After the server's tool list changes, the new list is examined again.
    p.call(json!(5), "add_tool", json!({"name": "extra"}));
    p.recv_where("list_changed", |v| {
        v["method"] == "notifications/tools/list_changed"
    });
    let list = p.request(json!(6), "tools/list", json!({}));
    let names: Vec<_> = list["result"]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_owned())
        .collect();
    assert!(names.contains(&"extra".to_owned()) && !names.contains(&"crash".to_owned()));

    // The server never saw a blocked call.
    assert!(
        !p.server_log().iter().any(|m| m["params"]["name"] == "crash"
            || m["params"]["arguments"]["text"] == "my PASSWORD is hunter2")
    );
    p.close_stdin();
    p.wait();
    let audit = p.audit();
    assert_eq!(audit[0]["verdict"], "block");
    assert_eq!(audit[0]["rule_id"], "no-crash");
    assert_eq!(audit[0]["outcome"], "not_forwarded");
    assert_eq!(audit[1]["rule_id"], "no-secret-echo");
    assert_eq!(audit[2]["verdict"], "allow");
    assert_eq!(audit[2]["outcome"], "ok");
}

#[test]
fn rate_limits_answer_with_retry_after() {
    let mut p = start(json!({}));
    for i in 0..2 {
        let r = p.call(json!(i), "whoami", json!({}));
        assert!(r.get("result").is_some(), "{r}");
    }
    let r = p.call(json!(9), "whoami", json!({}));
    assert_eq!(r["error"]["code"], -32002, "{r}");
    let retry = r["error"]["data"]["retryAfterMs"].as_u64().unwrap();
    assert!(retry > 0 && retry <= 60_000, "{retry}");
    assert!(
        r["error"]["message"]
            .as_str()
            .unwrap()
            .contains("whoami-limit")
    );
    p.close_stdin();
    p.wait();
    assert_eq!(p.audit()[2]["verdict"], "rate_limited");
}

#[test]
fn approve_without_a_control_plane_falls_back_to_the_offline_rule() {
    let mut p = start(json!({}));
    let r = p.call(json!(1), "fail", json!({}));
    assert_eq!(r["result"]["isError"], true);
    assert!(text_of(&r).contains("offline rule refused it"), "{r}");
    p.close_stdin();
    p.wait();
    assert_eq!(p.audit()[0]["verdict"], "denied");
}

#[test]
fn confirm_asks_the_developer_through_elicitation() {
    let mut p = start(json!({"elicitation": {}}));
    // Accepted: the call runs.
    p.send(json!({"jsonrpc":"2.0","id":"c1","method":"tools/call","params":{"name":"slow","arguments":{"ms":10}}}));
    let ask = p.recv_where("elicitation", |v| v["method"] == "elicitation/create");
    assert!(ask["params"]["message"].as_str().unwrap().contains("slow"));
    assert!(
        !p.server_log().iter().any(|m| m["params"]["name"] == "slow"),
        "nothing runs before the answer"
    );
    // Other traffic flows while the call waits.
    let r = p.call(json!("other"), "echo", json!({"text": "meanwhile"}));
    assert_eq!(text_of(&r), "meanwhile");
    p.send(json!({"jsonrpc":"2.0","id":ask["id"],"result":{"action":"accept","content":{"approve":true}}}));
    let r = p.response(json!("c1"));
    assert_eq!(text_of(&r), "done");

    // Declined: refused with a tool error.
    p.send(json!({"jsonrpc":"2.0","id":"c2","method":"tools/call","params":{"name":"slow","arguments":{"ms":10}}}));
    let ask = p.recv_where("elicitation", |v| v["method"] == "elicitation/create");
    p.send(json!({"jsonrpc":"2.0","id":ask["id"],"result":{"action":"decline"}}));
    let r = p.response(json!("c2"));
    assert_eq!(r["result"]["isError"], true);
    assert!(text_of(&r).contains("declined"));

    // Silence: refused after the timeout, and the question is withdrawn.
    p.send(json!({"jsonrpc":"2.0","id":"c3","method":"tools/call","params":{"name":"slow","arguments":{"ms":10}}}));
    let ask = p.recv_where("elicitation", |v| v["method"] == "elicitation/create");
    let r = p.response(json!("c3"));
    assert!(text_of(&r).contains("silence is not consent"));
    let cancel = p.recv_where("withdrawn question", |v| {
        v["method"] == "notifications/cancelled"
    });
    assert_eq!(cancel["params"]["requestId"], ask["id"]);
    p.close_stdin();
    p.wait();
    let audit = p.audit();
    let slow: Vec<_> = audit.iter().filter(|r| r["tool"] == "slow").collect();
    assert_eq!(slow[0]["verdict"], "approved");
    assert_eq!(slow[0]["outcome"], "ok");
    assert_eq!(slow[1]["verdict"], "denied");
    assert_eq!(slow[2]["verdict"], "denied");
    assert_eq!(slow[2]["outcome"], "not_forwarded");
}

#[test]
fn confirm_without_elicitation_support_uses_the_offline_rule() {
    let mut p = start(json!({}));
    let r = p.call(json!(1), "slow", json!({"ms": 10}));
    assert_eq!(r["result"]["isError"], true);
    assert!(text_of(&r).contains("cannot show one"), "{r}");
    p.close_stdin();
    p.wait();
}

#[test]
fn the_policy_file_is_reloaded_and_a_broken_edit_keeps_the_last_good_one() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_policy(dir.path(), "version = 1\n");
    let policy = path.display().to_string();
    let mut p = Proxy::start_in(dir, &["--policy", &policy], &scripted_server());
    p.initialize(json!({}));
    assert_eq!(text_of(&p.call(json!(1), "echo", json!({"text":"a"}))), "a");

    std::fs::write(
        &path,
        "version = 1\n[[rules]]\nid = \"stop-echo\"\ntool = \"echo\"\naction = \"block\"\nmessage = \"echo is off\"\n",
    )
    .unwrap();
    p.wait_stderr("reloaded");
    let r = p.call(json!(2), "echo", json!({"text":"b"}));
    assert_eq!(text_of(&r), "echo is off");

    std::fs::write(
        &path,
        "version = 1\n[[rules]]\nid = \"x\"\naction = \"alow\"\n",
    )
    .unwrap();
    p.wait_stderr("rejected");
    p.wait_stderr("line 4, column 10");
    let r = p.call(json!(3), "echo", json!({"text":"c"}));
    assert_eq!(
        text_of(&r),
        "echo is off",
        "the last good policy stays in force"
    );
    p.close_stdin();
    p.wait();
}

#[test]
fn an_invalid_policy_stops_start_up_with_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_policy(dir.path(), "version = 1\ndefault_action = \"maybe\"\n");
    let policy = path.display().to_string();
    let mut p = Proxy::start_in(dir, &["--policy", &policy], &scripted_server());
    assert_eq!(p.wait(), 2);
    assert!(p.stderr().contains("line 2"), "{}", p.stderr());
}

#[test]
fn duplicate_keys_in_a_call_are_refused_not_guessed() {
    let mut p = start(json!({}));
    // A parser differential: which `text` would the server use? FlowLink refuses to guess.
    p.send_raw(br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"text":"hello","text":"my password"}}}"#);
    let r = p.response(json!(1));
    assert_eq!(r["result"]["isError"], true);
    assert!(text_of(&r).contains("malformed"));
    assert!(!p.server_log().iter().any(|m| m["method"] == "tools/call"));
    p.close_stdin();
    p.wait();
}

#[test]
fn a_full_disk_fails_closed() {
    // A file size limit stands in for a full disk: once the audit store cannot grow, writes to
    // it fail, and the proxy must refuse calls rather than run them unrecorded. The shell ignores
    // SIGXFSZ so that the write fails with EFBIG instead of killing the process.
    let dir = tempfile::tempdir().unwrap();
    let exe = env!("CARGO_BIN_EXE_flowlink-proxy");
    let data = dir.path().join("data");
    let script = format!(
        "trap '' XFSZ; ulimit -f 1024; exec {exe} --data-dir {} -- python3 {}",
        data.display(),
        workspace()
            .join("examples/servers/scripted_server.py")
            .display()
    );
    let mut p = Proxy::start_raw(dir, &["sh".into(), "-c".into(), script]);
    p.initialize(json!({}));
    let filler = "z".repeat(4000);
    let mut refused_at = None;
    for i in 0..2000 {
        let r = p.call(json!(i), "echo", json!({"text": format!("{i}-{filler}")}));
        if r["error"]["code"] == -32004 {
            refused_at = Some(i);
            break;
        }
        assert_eq!(text_of(&r), format!("{i}-{filler}"), "{r}");
    }
    let refused_at = refused_at.expect("the size limit was never hit");
    assert!(refused_at > 0, "some calls fit before the limit");
    // The refused call never reached the server.
    let marker = format!("{refused_at}-");
    assert!(!p.server_log().iter().any(|m| {
        m["params"]["arguments"]["text"]
            .as_str()
            .is_some_and(|t| t.starts_with(&marker))
    }));
    p.wait_stderr("audit store failed");
    p.close_stdin();
    p.wait();
}
