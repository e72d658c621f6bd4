//! Behaviour of `Policy::decide`, `explain`, `is_hidden` and the offline settings.

mod common;

use common::{call, policy};
use flowlink_policy::{Action, Labels, Policy, TraceOutcome};
use serde_json::json;
use std::time::Duration;

#[test]
fn higher_priority_wins_over_stricter_lower_priority() {
    let p = policy(
        r#"
        version = 1
        [[rules]]
        id = "block-all"
        priority = 1
        action = "block"
        [[rules]]
        id = "allow-echo"
        priority = 10
        tool = "echo"
        action = "allow"
        "#,
    );
    let d = call("a", "s", "echo", json!({})).decide(&p);
    assert_eq!(d.action, Action::Allow);
    assert_eq!(d.rule_id.as_deref(), Some("allow-echo"));
    assert_eq!(
        d.reason,
        "rule `allow-echo` (priority 10) matched tool `echo`"
    );
    let d = call("a", "s", "other", json!({})).decide(&p);
    assert_eq!(d.action, Action::Block);
    assert_eq!(d.rule_id.as_deref(), Some("block-all"));
}

#[test]
fn same_priority_ties_break_block_approve_confirm_allow() {
    let src = |actions: &[&str]| {
        let mut s = String::from("version = 1\n");
        for (i, a) in actions.iter().enumerate() {
            s.push_str(&format!(
                "[[rules]]\nid = \"r{i}-{a}\"\npriority = 5\naction = \"{a}\"\n"
            ));
        }
        s
    };
    let c = call("a", "s", "t", json!({}));
    let cases: &[(&[&str], Action)] = &[
        (&["allow", "confirm", "approve", "block"], Action::Block),
        (&["block", "allow"], Action::Block),
        (&["allow", "confirm", "approve"], Action::Approve),
        (&["approve", "confirm"], Action::Approve),
        (&["allow", "confirm"], Action::Confirm),
        (&["allow"], Action::Allow),
    ];
    for (actions, want) in cases {
        let d = c.decide(&policy(&src(actions)));
        assert_eq!(d.action, *want, "{actions:?}");
        assert_eq!(
            d.rule_id.as_deref().and_then(|id| id.split('-').nth(1)),
            Some(want.as_str())
        );
    }
    // Equal actions: the earlier rule in the file decides.
    let d = c.decide(&policy(&src(&["allow", "allow"])));
    assert_eq!(d.rule_id.as_deref(), Some("r0-allow"));
    assert!(d.reason.contains("outranks 1 other"), "{}", d.reason);
}

#[test]
fn action_and_scope_names() {
    let names: Vec<&str> = [
        Action::Allow,
        Action::Block,
        Action::Approve,
        Action::Confirm,
    ]
    .into_iter()
    .map(Action::as_str)
    .collect();
    assert_eq!(names, ["allow", "block", "approve", "confirm"]);
    assert_eq!(Action::Confirm.to_string(), "confirm");
    assert_eq!(flowlink_policy::RateScope::Tool.as_str(), "tool");
    assert_eq!(flowlink_policy::RateScope::Agent.as_str(), "agent");
}

#[test]
fn default_action_applies_when_nothing_matches() {
    let p = policy("version = 1\ndefault_action = \"block\"\n");
    let d = call("a", "svc", "t", json!({})).decide(&p);
    assert_eq!(d.action, Action::Block);
    assert_eq!(d.rule_id, None);
    assert_eq!(d.reason, "no rule matched; default action block");
    let msg = d.message.expect("default block has a message");
    assert!(msg.contains("`t`") && msg.contains("`svc`"), "{msg}");

    let p = policy("version = 1\n");
    let d = call("a", "s", "t", json!({})).decide(&p);
    assert_eq!(d.action, Action::Allow);
    assert_eq!(d.message, None);
    assert_eq!(d.reason, "no rule matched; default action allow");

    let d = call("a", "s", "t", json!({})).decide(&Policy::builtin_default());
    assert_eq!(d.action, Action::Allow);
}

#[test]
fn block_messages_are_the_rules_or_generated() {
    let p = policy(
        r#"
        version = 1
        [[rules]]
        id = "with-msg"
        tool = "a"
        action = "block"
        message = "use b instead"
        [[rules]]
        id = "no-msg"
        tool = "c"
        action = "block"
        [[rules]]
        id = "confirm-no-msg"
        tool = "d"
        action = "confirm"
        "#,
    );
    let d = call("x", "s", "a", json!({})).decide(&p);
    assert_eq!(d.message.as_deref(), Some("use b instead"));
    let d = call("x", "s", "c", json!({})).decide(&p);
    let m = d.message.expect("generated");
    assert!(m.contains("`no-msg`") && m.contains("`c`"), "{m}");
    let d = call("x", "s", "d", json!({})).decide(&p);
    assert_eq!(d.action, Action::Confirm);
    assert_eq!(d.message, None);
}

#[test]
fn agent_service_and_tool_globs() {
    let p = policy(
        r#"
        version = 1
        default_action = "block"
        [[rules]]
        id = "claude-fs"
        agent = "claude-code*"
        service = ["fs", "files-*"]
        tool = ["read_*", "list"]
        action = "allow"
        "#,
    );
    let ok =
        |a: &str, s: &str, t: &str| call(a, s, t, json!({})).decide(&p).action == Action::Allow;
    assert!(ok("claude-code", "fs", "read_file"));
    assert!(ok("claude-code/2.1", "files-home", "list"));
    assert!(!ok("cursor", "fs", "read_file"), "agent glob");
    assert!(
        !ok("Claude-Code", "fs", "read_file"),
        "globs are case-sensitive"
    );
    assert!(!ok("claude-code", "git", "read_file"), "service glob");
    assert!(!ok("claude-code", "fs", "write_file"), "tool glob");
    assert!(
        !ok("claude-code", "fs", "listing"),
        "literal must match whole name"
    );
}

#[test]
fn labels_must_be_present_and_match() {
    let p = policy(
        r#"
        version = 1
        [[rules]]
        id = "prod-approve"
        tool = "deploy"
        labels = { env = "prod*", team = "payments" }
        action = "approve"
        "#,
    );
    let c = call("a", "s", "deploy", json!({}));
    assert_eq!(c.decide(&p).action, Action::Allow, "no labels");
    let c = call("a", "s", "deploy", json!({})).label("env", "prod-eu");
    assert_eq!(c.decide(&p).action, Action::Allow, "team missing");
    let c = c.label("team", "payments");
    assert_eq!(c.decide(&p).action, Action::Approve);
    let c = call("a", "s", "deploy", json!({}))
        .label("env", "staging")
        .label("team", "payments");
    assert_eq!(c.decide(&p).action, Action::Allow, "env mismatch");
}

#[test]
fn every_condition_operator_from_toml() {
    let p = policy(
        r#"
        version = 1
        default_action = "allow"
        [[rules]]
        id = "glob"
        tool = "glob"
        action = "block"
        when = [{ pointer = "/cmd", glob = "rm *" }]
        [[rules]]
        id = "regex"
        tool = "regex"
        action = "block"
        when = [{ pointer = "/cmd", regex = '(?i)drop\s+table' }]
        [[rules]]
        id = "equals"
        tool = "equals"
        action = "block"
        when = [{ pointer = "/opts", equals = { force = true } }]
        [[rules]]
        id = "not_equals"
        tool = "not_equals"
        action = "block"
        when = [{ pointer = "/branch", not_equals = "main" }]
        [[rules]]
        id = "gt"
        tool = "gt"
        action = "block"
        when = [{ pointer = "/n", gt = 10 }]
        [[rules]]
        id = "gte"
        tool = "gte"
        action = "block"
        when = [{ pointer = "/n", gte = 10 }]
        [[rules]]
        id = "lt"
        tool = "lt"
        action = "block"
        when = [{ pointer = "/n", lt = 0.5 }]
        [[rules]]
        id = "lte"
        tool = "lte"
        action = "block"
        when = [{ pointer = "/n", lte = 0 }]
        [[rules]]
        id = "present"
        tool = "present"
        action = "block"
        when = [{ pointer = "/token", present = true }]
        [[rules]]
        id = "absent"
        tool = "absent"
        action = "block"
        when = [{ pointer = "/reason", present = false }]
        [[rules]]
        id = "contains"
        tool = "contains"
        action = "block"
        when = [{ pointer = "/url", contains = "169.254.169.254" }]
        [[rules]]
        id = "one_of"
        tool = "one_of"
        action = "block"
        when = [{ pointer = "/region", one_of = ["us-east-1", "eu-west-1", 3] }]
        [[rules]]
        id = "all"
        tool = "all"
        action = "block"
        when = [{ pointer = "/a", equals = 1 }, { pointer = "/b", equals = 2 }]
        "#,
    );
    let blocked = |tool: &str, args: serde_json::Value| {
        call("a", "s", tool, args).decide(&p).action == Action::Block
    };
    assert!(blocked("glob", json!({"cmd": "rm -rf /"})));
    assert!(!blocked("glob", json!({"cmd": "ls"})));
    assert!(!blocked("glob", json!({})));
    assert!(blocked("regex", json!({"cmd": "DROP   TABLE users"})));
    assert!(!blocked("regex", json!({"cmd": "select 1"})));
    assert!(blocked("equals", json!({"opts": {"force": true}})));
    assert!(!blocked("equals", json!({"opts": {"force": false}})));
    assert!(blocked("not_equals", json!({"branch": "dev"})));
    assert!(!blocked("not_equals", json!({"branch": "main"})));
    assert!(
        !blocked("not_equals", json!({})),
        "absent: not_equals is false"
    );
    assert!(blocked("gt", json!({"n": 11})));
    assert!(!blocked("gt", json!({"n": 10})));
    assert!(
        blocked("gt", json!({"n": "11"})),
        "numeric strings compare as numbers"
    );
    assert!(blocked("gte", json!({"n": 10})));
    assert!(!blocked("gte", json!({"n": 9.99})));
    assert!(blocked("lt", json!({"n": 0.25})));
    assert!(!blocked("lt", json!({"n": 0.5})));
    assert!(blocked("lte", json!({"n": 0})));
    assert!(
        !blocked("lte", json!({"n": true})),
        "booleans are not numbers"
    );
    assert!(blocked("present", json!({"token": null})));
    assert!(!blocked("present", json!({})));
    assert!(blocked("absent", json!({})));
    assert!(!blocked("absent", json!({"reason": "x"})));
    assert!(blocked(
        "contains",
        json!({"url": "http://169.254.169.254/latest"})
    ));
    assert!(!blocked("contains", json!({"url": "https://example.com"})));
    assert!(blocked("one_of", json!({"region": "eu-west-1"})));
    assert!(blocked("one_of", json!({"region": 3.0})));
    assert!(!blocked("one_of", json!({"region": "ap-south-1"})));
    assert!(blocked("all", json!({"a": 1, "b": 2})));
    assert!(
        !blocked("all", json!({"a": 1, "b": 3})),
        "all conditions must hold"
    );
    assert!(!blocked("all", json!({"a": 1})));
    // Non-object arguments never panic.
    assert!(!blocked("glob", json!(null)));
    assert!(!blocked("glob", json!([1, 2])));
}

#[test]
fn conditional_rule_falls_through_to_lower_priority() {
    let p = policy(
        r#"
        version = 1
        default_action = "block"
        [[rules]]
        id = "confirm-long"
        priority = 50
        tool = "op"
        action = "confirm"
          [[rules.when]]
          pointer = "/duration"
          gt = 5
        [[rules]]
        id = "allow-op"
        tool = "op"
        action = "allow"
        "#,
    );
    let d = call("a", "s", "op", json!({"duration": 10})).decide(&p);
    assert_eq!(d.action, Action::Confirm);
    let d = call("a", "s", "op", json!({"duration": 2})).decide(&p);
    assert_eq!(
        (d.action, d.rule_id.as_deref()),
        (Action::Allow, Some("allow-op"))
    );
}

#[test]
fn offline_mapping_and_timeout() {
    let p = Policy::builtin_default();
    assert_eq!(p.offline_action(Action::Approve), Action::Block);
    assert_eq!(p.offline_action(Action::Confirm), Action::Block);
    assert_eq!(p.offline_action(Action::Allow), Action::Allow);
    assert_eq!(p.offline_action(Action::Block), Action::Block);
    assert_eq!(p.confirm_timeout(), Duration::from_secs(120));

    let p = policy(
        "version = 1\n[offline]\napprove = \"block\"\nconfirm = \"allow\"\nconfirm_timeout_secs = 30\n",
    );
    assert_eq!(p.offline_action(Action::Approve), Action::Block);
    assert_eq!(p.offline_action(Action::Confirm), Action::Allow);
    assert_eq!(p.offline_action(Action::Block), Action::Block);
    assert_eq!(p.confirm_timeout(), Duration::from_secs(30));

    let p = policy("version = 1\n[offline]\napprove = \"allow\"\n");
    assert_eq!(p.offline_action(Action::Approve), Action::Allow);
    assert_eq!(p.offline_action(Action::Confirm), Action::Block);
}

#[test]
fn hidden_tools() {
    let p = policy(
        r#"
        version = 1
        [[rules]]
        id = "no-env"
        priority = 100
        tool = "get-env"
        action = "block"
        [[rules]]
        id = "echo-rm"
        priority = 100
        tool = "echo"
        action = "block"
          [[rules.when]]
          pointer = "/message"
          glob = "rm *"
        [[rules]]
        id = "no-deploy"
        priority = 10
        tool = "deploy"
        action = "block"
        [[rules]]
        id = "deploy-ok-for-ci"
        priority = 20
        agent = "ci"
        tool = "deploy"
        action = "allow"
        [[rules]]
        id = "tie"
        priority = 5
        tool = "tie"
        action = "allow"
        [[rules]]
        id = "tie-block"
        priority = 5
        tool = "tie"
        action = "block"
        [[rules]]
        id = "prod-only"
        tool = "drop"
        labels = { env = "prod" }
        action = "block"
        "#,
    );
    let none = Labels::new();
    assert!(p.is_hidden("any", "s", "get-env", &none));
    assert!(
        !p.is_hidden("any", "s", "echo", &none),
        "conditional block does not hide"
    );
    assert!(p.is_hidden("claude", "s", "deploy", &none));
    assert!(
        !p.is_hidden("ci", "s", "deploy", &none),
        "a higher-priority allow could let it through"
    );
    assert!(
        p.is_hidden("x", "s", "tie", &none),
        "block wins at equal priority"
    );
    assert!(!p.is_hidden("x", "s", "drop", &none));
    let prod: Labels = [("env".to_owned(), "prod".to_owned())].into();
    assert!(p.is_hidden("x", "s", "drop", &prod));
    assert!(!p.is_hidden("x", "s", "other", &none), "default allow");

    let off = policy(
        "version = 1\nhide_blocked_tools = false\n[[rules]]\nid = \"b\"\ntool = \"get-env\"\naction = \"block\"\n",
    );
    assert!(!off.is_hidden("a", "s", "get-env", &none));
    assert!(!off.hide_blocked_tools());
}

#[test]
fn hidden_with_default_block_and_allow_list() {
    let p = policy(
        r#"
        version = 1
        default_action = "block"
        [[rules]]
        id = "allow-echo"
        tool = "echo"
        action = "allow"
        [[rules]]
        id = "maybe-op"
        tool = "op"
        action = "approve"
        when = [{ pointer = "/d", lt = 5 }]
        [[rules]]
        id = "cond-block"
        tool = "x"
        action = "block"
        when = [{ pointer = "/d", lt = 5 }]
        "#,
    );
    let none = Labels::new();
    assert!(!p.is_hidden("a", "s", "echo", &none));
    assert!(!p.is_hidden("a", "s", "op", &none), "could be approved");
    assert!(p.is_hidden("a", "s", "x", &none), "blocked either way");
    assert!(p.is_hidden("a", "s", "unknown", &none));
}

#[test]
fn explain_names_the_deciding_rule_and_why_others_failed() {
    let p = policy(
        r#"
        version = 1
        [[rules]]
        id = "echo-rm"
        priority = 100
        tool = "echo"
        action = "block"
          [[rules.when]]
          pointer = "/message"
          regex = 'rm\s+-rf'
        [[rules]]
        id = "claude-only"
        priority = 50
        agent = "claude*"
        action = "confirm"
        [[rules]]
        id = "prod"
        priority = 50
        labels = { env = "prod" }
        action = "approve"
        [[rules]]
        id = "confirm-echo"
        priority = 10
        description = "echo is noisy"
        tool = ["echo", "say"]
        action = "confirm"
        [[rules]]
        id = "allow-echo"
        priority = 10
        tool = "echo"
        action = "allow"
        [[rules]]
        id = "allow-all"
        action = "allow"
        [[rules]]
        id = "sum"
        tool = "get-sum"
        action = "allow"
        "#,
    );
    let c = call("cursor", "everything", "echo", json!({"message": "hello"}));
    let e = c.explain(&p);
    assert_eq!(e.decision, c.decide(&p));
    assert_eq!(e.decision.rule_id.as_deref(), Some("confirm-echo"));
    let ids: Vec<&str> = e.steps.iter().map(|s| s.rule_id.as_str()).collect();
    assert_eq!(
        ids,
        [
            "echo-rm",
            "claude-only",
            "prod",
            "confirm-echo",
            "allow-echo",
            "allow-all",
            "sum"
        ]
    );
    assert!(matches!(e.steps[3].outcome, TraceOutcome::Decided));
    assert_eq!(
        e.steps[4].outcome,
        TraceOutcome::Outranked {
            by: "confirm-echo".into()
        }
    );
    assert_eq!(e.steps[5].outcome, TraceOutcome::LowerPriority);
    let text = e.to_string();
    println!("{text}");
    assert!(
        text.contains("`confirm-echo`") && text.contains("MATCHED, decides"),
        "{text}"
    );
    assert!(text.contains("echo is noisy"), "{text}");
    assert!(
        text.contains("argument `/message` = \"hello\" fails regex"),
        "{text}"
    );
    assert!(
        text.contains("agent `cursor` does not match \"claude*\""),
        "{text}"
    );
    assert!(text.contains("label `env` is not set"), "{text}");
    assert!(
        text.contains("tool `echo` does not match \"get-sum\""),
        "{text}"
    );
    assert!(
        text.contains("matched, but `confirm-echo` wins at the same priority"),
        "{text}"
    );
    assert!(
        text.contains(
            "decision: confirm\nreason: rule `confirm-echo` (priority 10) matched tool `echo`"
        ),
        "{text}"
    );

    let e = call("a", "s", "t", json!({})).explain(&Policy::builtin_default());
    let text = e.to_string();
    assert!(
        text.contains("no rule matched; default action is allow"),
        "{text}"
    );
}

#[test]
fn example_policies_parse_and_behave() {
    let demo = policy(include_str!("../../examples/policies/demo.toml"));
    assert_eq!(demo.rule_count(), 4);
    assert_eq!(demo.rate_limit_count(), 1);
    let d = call("claude-code", "everything", "get-env", json!({})).decide(&demo);
    assert_eq!(d.action, Action::Block);
    assert!(d.message.unwrap_or_default().contains("ask the user"));
    assert!(demo.is_hidden("claude-code", "everything", "get-env", &Labels::new()));
    let d = call(
        "c",
        "everything",
        "echo",
        json!({"message": "now RM -rf /"}),
    )
    .decide(&demo);
    assert_eq!(d.action, Action::Block);
    let d = call("c", "everything", "echo", json!({"message": "hi"})).decide(&demo);
    assert_eq!(d.action, Action::Allow);
    let op = "trigger-long-running-operation";
    let d = call("c", "everything", op, json!({"duration": 10, "steps": 5})).decide(&demo);
    assert_eq!(d.action, Action::Confirm);
    let d = call("c", "everything", op, json!({"duration": 2, "steps": 5})).decide(&demo);
    assert_eq!(d.action, Action::Allow);
    assert_eq!(demo.confirm_timeout(), Duration::from_secs(60));

    let strict = policy(include_str!("../../examples/policies/strict.toml"));
    let none = Labels::new();
    let d = call("c", "everything", "get-sum", json!({"a": 1, "b": 2})).decide(&strict);
    assert_eq!(d.action, Action::Allow);
    let d = call("c", "everything", "echo", json!({"message": "rm -rf ~"})).decide(&strict);
    assert_eq!(d.action, Action::Block);
    let d = call("c", "everything", "get-env", json!({})).decide(&strict);
    assert_eq!((d.action, d.rule_id), (Action::Block, None));
    assert!(strict.is_hidden("c", "everything", "get-env", &none));
    assert!(!strict.is_hidden("c", "everything", "echo", &none));
    assert!(!strict.is_hidden("claude-code", "everything", op, &none));
    assert!(strict.is_hidden("other", "everything", op, &none));
    let d = call("claude-code", "everything", op, json!({"duration": 30})).decide(&strict);
    assert_eq!(d.action, Action::Approve);
}

#[test]
fn approve_rules_carry_who_how_many_and_how_long() {
    let policy = Policy::from_toml(
        r#"
        version = 1
        [[rules]]
        id = "prod-db"
        tool = "query"
        action = "approve"
        approvers = ["role:admin", "DBA@Example.com"]
        approvals = 2
        approval_timeout_secs = 120
        [[rules]]
        id = "plain"
        tool = "other"
        action = "approve"
    "#,
    )
    .expect("policy");
    let labels = Labels::new();
    let args = serde_json::json!({});
    let call = |tool| flowlink_policy::ToolCall {
        agent: "a",
        service: "db",
        tool,
        arguments: &args,
        labels: &labels,
    };
    let spec = policy
        .decide(&call("query"))
        .approval
        .expect("approval spec");
    assert_eq!(spec.approvers, ["role:admin", "dba@example.com"]);
    assert_eq!((spec.needed, spec.timeout.as_secs()), (2, 120));
    let plain = policy
        .decide(&call("other"))
        .approval
        .expect("approval spec");
    assert_eq!(plain, flowlink_policy::ApprovalSpec::default());
    assert_eq!(plain.timeout, flowlink_policy::DEFAULT_APPROVAL_TIMEOUT);
    assert_eq!(
        policy.decide(&call("unlisted")).approval,
        None,
        "allow needs no approval"
    );
}

#[test]
fn approval_settings_are_checked() {
    for (body, needle) in [
        (
            "action = \"block\"\napprovals = 2",
            "only applies to rules with action = \"approve\"",
        ),
        (
            "action = \"approve\"\napprovals = 0",
            "`approvals` must be 1..=10",
        ),
        (
            "action = \"approve\"\napprovers = [\"bob\"]",
            "neither an e-mail address nor `role:",
        ),
        (
            "action = \"approve\"\napprovers = [\"role:king\"]",
            "neither an e-mail address nor `role:",
        ),
        (
            "action = \"approve\"\napproval_timeout_secs = 1",
            "10..=604800",
        ),
    ] {
        let text = format!("version = 1\n[[rules]]\nid = \"r\"\n{body}\n");
        let err = Policy::from_toml(&text).expect_err(body).to_string();
        assert!(err.contains(needle), "{body}: {err}");
        assert!(
            err.contains("line 5") || err.contains(":5:") || err.contains("5:"),
            "names the line: {err}"
        );
    }
}
