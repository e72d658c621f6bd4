//! Layered policies (`Policy::from_layers`): org, then groups, then service.

mod common;

use common::call;
use flowlink_policy::{Action, Labels, Policy, PolicyError, RateLimiter};
use serde_json::json;

const DEMO: &str = include_str!("../../examples/policies/demo.toml");
const STRICT: &str = include_str!("../../examples/policies/strict.toml");

fn layers(list: &[(&str, &str)]) -> Policy {
    match Policy::from_layers(list) {
        Ok(p) => p,
        Err(e) => panic!("layers should load: {e}"),
    }
}

fn layer_err(list: &[(&str, &str)]) -> PolicyError {
    match Policy::from_layers(list) {
        Ok(_) => panic!("layers should be rejected"),
        Err(e) => e,
    }
}

/// Everything observable about a policy's settings.
fn settings(p: &Policy) -> (Action, bool, Action, Action, u64, bool, (u8, u8), usize) {
    (
        p.default_action(),
        p.hide_blocked_tools(),
        p.offline_action(Action::Approve),
        p.offline_action(Action::Confirm),
        p.confirm_timeout().as_secs(),
        p.shield_enabled(),
        p.shield_thresholds(),
        p.rate_limit_count(),
    )
}

#[test]
fn one_layer_is_exactly_from_toml() {
    let calls = [
        call(
            "claude-code",
            "everything",
            "echo",
            json!({"message": "hi"}),
        ),
        call(
            "claude-code",
            "everything",
            "echo",
            json!({"message": "rm -rf /"}),
        ),
        call("cursor", "everything", "get-env", json!({})),
        call(
            "cursor",
            "everything",
            "longRunningOperation",
            json!({"duration": 30}),
        ),
        call(
            "x",
            "shell",
            "run",
            json!({"command": "git push --force origin main"}),
        ),
    ];
    for src in [DEMO, STRICT, "version = 1\n"] {
        let single = Policy::from_toml(src).expect("from_toml");
        let layered = layers(&[("org", src)]);
        assert_eq!(settings(&single), settings(&layered));
        assert_eq!(
            single.rule_ids().collect::<Vec<_>>(),
            layered.rule_ids().collect::<Vec<_>>()
        );
        for c in &calls {
            assert_eq!(c.decide(&single), c.decide(&layered));
            let (a, b) = (c.explain(&single), c.explain(&layered));
            assert_eq!(a.decision, b.decision);
            assert_eq!(a.steps.len(), b.steps.len());
            for (x, y) in a.steps.iter().zip(&b.steps) {
                assert_eq!((&x.rule_id, &x.outcome), (&y.rule_id, &y.outcome));
                assert_eq!(x.layer, None);
                assert_eq!(y.layer.as_deref(), Some("org"));
            }
            for tool in ["echo", "get-env", "anything"] {
                let labels = Labels::new();
                assert_eq!(
                    single.is_hidden("cursor", "everything", tool, &labels),
                    layered.is_hidden("cursor", "everything", tool, &labels)
                );
            }
        }
    }
    // The same error, attributed to the layer.
    let bad = "version = 1\n[[rules]]\nid = \"x\"\naction = \"alow\"\n";
    let single = Policy::from_toml(bad).expect_err("bad");
    let layered = layer_err(&[("org", bad)]);
    assert_eq!(
        (single.line, single.column, &single.message),
        (layered.line, layered.column, &layered.message)
    );
    assert_eq!(single.layer, None);
    assert_eq!(layered.layer.as_deref(), Some("org"));
    assert_eq!(
        layered.to_string(),
        format!("layer `org`, {single}"),
        "the layer is named before the position"
    );
}

#[test]
fn no_layers_is_the_builtin_default() {
    let p = layers(&[]);
    assert_eq!(settings(&p), settings(&Policy::builtin_default()));
    assert_eq!(p.rule_count(), 0);
}

const ORG: &str = r#"
version = 1
default_action = "block"

[offline]
approve = "allow"

[[rules]]
id = "org-no-env"
tool = "get-env"
action = "block"
message = "never read the environment"

[[rules]]
id = "org-allow-echo"
tool = "echo"
action = "allow"

[[rate_limits]]
id = "org-per-agent"
scope = "agent"
per_minute = 60
burst = 2
"#;

const SERVICE: &str = r#"
version = 1

[offline]
confirm = "allow"

[[rules]]
id = "svc-approve-deploy"
tool = "deploy"
action = "approve"

[[rules]]
id = "svc-allow-env-in-dev"
priority = 10
tool = "get-env"
labels = { env = "dev" }
action = "allow"

[[rate_limits]]
id = "svc-deploys"
scope = "tool"
tool = "deploy"
per_hour = 1
"#;

#[test]
fn rules_from_every_layer_apply() {
    let p = layers(&[("org", ORG), ("service:ops", SERVICE)]);
    assert_eq!(p.rule_count(), 4);
    let env = call("a", "ops", "get-env", json!({})).decide(&p);
    assert_eq!(env.action, Action::Block);
    assert_eq!(env.rule_id.as_deref(), Some("org-no-env"));
    let deploy = call("a", "ops", "deploy", json!({})).decide(&p);
    assert_eq!(deploy.action, Action::Approve);
    assert_eq!(deploy.rule_id.as_deref(), Some("svc-approve-deploy"));
    // Priorities compare across layers: the service's higher-priority allow wins in dev.
    let dev = call("a", "ops", "get-env", json!({}))
        .label("env", "dev")
        .decide(&p);
    assert_eq!(dev.action, Action::Allow);
    assert_eq!(dev.rule_id.as_deref(), Some("svc-allow-env-in-dev"));
    // The org's default applies where no rule matches.
    let other = call("a", "ops", "other", json!({})).decide(&p);
    assert_eq!(other.action, Action::Block);
    assert_eq!(other.rule_id, None);

    // Explain says which layer each rule came from.
    let e = call("a", "ops", "deploy", json!({})).explain(&p);
    let layer_of = |id: &str| {
        e.steps
            .iter()
            .find(|s| s.rule_id == id)
            .and_then(|s| s.layer.clone())
    };
    assert_eq!(layer_of("org-no-env").as_deref(), Some("org"));
    assert_eq!(
        layer_of("svc-approve-deploy").as_deref(),
        Some("service:ops")
    );
    assert!(e.to_string().contains("layer `service:ops`"), "{e}");
}

#[test]
fn equal_priority_and_action_prefers_the_less_specific_layer() {
    let org = "version = 1\n[[rules]]\nid = \"org-block\"\ntool = \"t\"\naction = \"block\"\n";
    let svc = "version = 1\n[[rules]]\nid = \"svc-block\"\ntool = \"t\"\naction = \"block\"\n\
               [[rules]]\nid = \"svc-allow\"\ntool = \"t\"\naction = \"allow\"\n";
    let p = layers(&[("org", org), ("service:s", svc)]);
    let d = call("a", "s", "t", json!({})).decide(&p);
    assert_eq!(d.action, Action::Block);
    assert_eq!(d.rule_id.as_deref(), Some("org-block"));
    // A more specific layer cannot loosen a block at the same priority.
    let p = layers(&[
        ("org", org),
        (
            "service:s",
            "version = 1\n[[rules]]\nid = \"a\"\ntool = \"t\"\naction = \"allow\"\n",
        ),
    ]);
    assert_eq!(
        call("a", "s", "t", json!({})).decide(&p).action,
        Action::Block
    );
}

#[test]
fn settings_come_from_the_most_specific_layer_that_sets_them() {
    let p = layers(&[("org", ORG), ("service:ops", SERVICE)]);
    // default_action only in the org; [offline] keys from both.
    assert_eq!(p.default_action(), Action::Block);
    assert_eq!(p.offline_action(Action::Approve), Action::Allow);
    assert_eq!(p.offline_action(Action::Confirm), Action::Allow);
    assert!(p.hide_blocked_tools());

    let group = "version = 1\ndefault_action = \"approve\"\nhide_blocked_tools = false\n\
                 [offline]\napprove = \"block\"\nconfirm_timeout_secs = 30\n";
    let svc = "version = 1\ndefault_action = \"confirm\"\n";
    let p = layers(&[
        ("org", ORG),
        ("group:team=payments", group),
        ("service:ops", svc),
    ]);
    assert_eq!(p.default_action(), Action::Confirm);
    assert!(!p.hide_blocked_tools());
    assert_eq!(p.offline_action(Action::Approve), Action::Block);
    assert_eq!(p.confirm_timeout().as_secs(), 30);
    // Without the service layer, the group's default applies.
    let p = layers(&[("org", ORG), ("group:team=payments", group)]);
    assert_eq!(p.default_action(), Action::Approve);
}

#[test]
fn shield_settings_merge_key_by_key() {
    let org = "version = 1\n[shield]\nblock_at = 60\napprove_at = 30\n";
    let svc = "version = 1\n[shield]\napprove_at = 50\n";
    let p = layers(&[("org", org), ("service:s", svc)]);
    assert_eq!(p.shield_thresholds(), (50, 60));
    assert!(p.shield_enabled());

    // The org turns the shield off; a service that only tunes a threshold does not turn it on.
    let off = "version = 1\n[shield]\nenabled = false\n";
    let p = layers(&[("org", off), ("service:s", svc)]);
    assert!(!p.shield_enabled());
    let on = "version = 1\n[shield]\nenabled = true\n";
    assert!(layers(&[("org", off), ("service:s", on)]).shield_enabled());

    // approve_at is checked against the block_at in force, whichever layer set it.
    let e = layer_err(&[
        ("org", org),
        ("service:s", "version = 1\n[shield]\napprove_at = 70\n"),
    ]);
    assert_eq!(e.layer.as_deref(), Some("service:s"));
    assert_eq!((e.line, e.column), (Some(3), Some(14)), "{e}");
    assert!(e.message.contains("block_at (60)"), "{e}");
}

#[test]
fn shield_mappings_are_concatenated() {
    let org =
        "version = 1\n[[shield.map]]\ntool = \"run\"\npointer = \"/script\"\nkind = \"shell\"\n";
    let svc = "version = 1\n[[shield.map]]\ntool = \"q\"\npointer = \"/text\"\nkind = \"sql\"\n";
    let p = layers(&[("org", org), ("service:s", svc)]);
    let run = call("a", "s", "run", json!({"script": "rm -rf /"})).decide(&p);
    assert_eq!(run.action, Action::Block, "{}", run.reason);
    assert!(run.risk >= 80);
    let q = call("a", "s", "q", json!({"text": "DROP TABLE users"})).decide(&p);
    assert!(!q.findings.is_empty(), "{}", q.reason);
}

#[test]
fn rate_limits_from_every_layer_count() {
    let p = layers(&[("org", ORG), ("service:ops", SERVICE)]);
    assert_eq!(p.rate_limit_count(), 2);
    let limiter = RateLimiter::new(&p);
    assert!(limiter.check("a", "ops", "deploy").is_ok());
    let refused = limiter
        .check("a", "ops", "deploy")
        .expect_err("second deploy");
    assert_eq!(refused.rule_id, "svc-deploys");
    // The org's per-agent burst of 2 is used up by the two deploys.
    let refused = limiter.check("a", "ops", "echo").expect_err("third call");
    assert_eq!(refused.rule_id, "org-per-agent");
}

#[test]
fn an_id_used_in_two_layers_names_both() {
    let org = "version = 1\n[[rules]]\nid = \"x\"\naction = \"allow\"\n";
    let group = "version = 1\n\n[[rules]]\n  id = \"x\"\naction = \"block\"\n";
    let e = layer_err(&[("org", org), ("group:env=prod", group)]);
    assert_eq!(e.layer.as_deref(), Some("group:env=prod"));
    assert_eq!((e.line, e.column), (Some(4), Some(8)), "{e}");
    assert!(e.message.contains("layer `org` (line 3)"), "{e}");
    assert!(
        e.to_string()
            .starts_with("layer `group:env=prod`, line 4, column 8: duplicate rule id `x`"),
        "{e}"
    );

    let limit = "version = 1\n[[rate_limits]]\nid = \"r\"\nscope = \"agent\"\nper_second = 1\n";
    let e = layer_err(&[("org", limit), ("service:s", limit)]);
    assert_eq!(e.layer.as_deref(), Some("service:s"));
    assert_eq!(e.line, Some(3));
    assert!(e.message.contains("duplicate rate limit id `r`"), "{e}");
    assert!(e.message.contains("layer `org`"), "{e}");

    // A rule and a rate limit may share an id, as in one file.
    let rule = "version = 1\n[[rules]]\nid = \"r\"\naction = \"allow\"\n";
    layers(&[("org", rule), ("service:s", limit)]);

    // Within one layer the single-file message stays.
    let twice = "version = 1\n[[rules]]\nid = \"x\"\naction = \"allow\"\n[[rules]]\nid = \"x\"\naction = \"allow\"\n";
    let e = layer_err(&[("org", "version = 1\n"), ("service:s", twice)]);
    assert_eq!(e.layer.as_deref(), Some("service:s"));
    assert!(e.message.contains("first used on line 3"), "{e}");
}

#[test]
fn errors_name_the_layer_and_the_position_in_it() {
    let e = layer_err(&[
        ("org", ORG),
        ("group:env=prod", "version = 1\n[[rules]\n"),
        ("service:x", "not even toml"),
    ]);
    assert_eq!(e.layer.as_deref(), Some("group:env=prod"));
    assert_eq!(e.line, Some(2));
    assert!(e.column.is_some());

    let e = layer_err(&[("org", ORG), ("service:x", "version = 2\n")]);
    assert_eq!(e.layer.as_deref(), Some("service:x"));
    assert_eq!((e.line, e.column), (Some(1), Some(11)));
    assert!(e.message.contains("unsupported policy version 2"), "{e}");

    let e = layer_err(&[
        ("org", "version = 1\ntools = \"echo\"\n"),
        ("service:x", SERVICE),
    ]);
    assert_eq!(e.layer.as_deref(), Some("org"));
    assert_eq!(e.line, Some(2));
}
