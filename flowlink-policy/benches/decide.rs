//! `Policy::decide` against a 50-rule policy, and `RateLimiter::check`.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use flowlink_policy::{Labels, Policy, RateLimiter, ToolCall};
use serde_json::json;

/// 50 rules over 10 services: per service a glob block with a regex condition, a numeric
/// confirm, a label-gated approve, an agent-gated allow and a literal block.
fn fifty_rule_policy() -> String {
    let mut s = String::from("version = 1\ndefault_action = \"allow\"\n");
    for i in 0..10 {
        s.push_str(&format!(
            r#"
[[rules]]
id = "rm-{i}"
priority = {p0}
service = "svc-{i}"
tool = ["shell*", "exec_*"]
action = "block"
when = [{{ pointer = "/command", regex = '(?i)\brm\s+-(rf|fr)\b' }}]

[[rules]]
id = "long-{i}"
priority = {p1}
service = "svc-{i}*"
tool = "run_job"
action = "confirm"
when = [{{ pointer = "/duration", gt = 60 }}, {{ pointer = "/dry_run", not_equals = true }}]

[[rules]]
id = "prod-{i}"
priority = {p1}
service = "svc-{i}"
labels = {{ env = "prod*" }}
tool = ["deploy", "migrate_*"]
action = "approve"

[[rules]]
id = "agents-{i}"
priority = {p2}
agent = ["claude-code*", "cursor*"]
service = "svc-{i}"
tool = "*"
action = "allow"
when = [{{ pointer = "/path", glob = "/home/**" }}]

[[rules]]
id = "secrets-{i}"
priority = {p2}
service = "svc-{i}"
tool = "get_secret"
action = "block"
"#,
            p0 = 100 - i,
            p1 = 50 - i,
            p2 = 10 - i,
        ));
    }
    s
}

fn bench(c: &mut Criterion) {
    let policy = Policy::from_toml(&fifty_rule_policy()).expect("bench policy loads");
    assert_eq!(policy.rule_count(), 50);
    let labels: Labels = [("env".to_owned(), "prod-eu".to_owned())].into();

    // Falls through almost every rule: the usual case for an ordinary call.
    let args = json!({"command": "ls -la /tmp", "path": "/tmp/x"});
    let call = ToolCall {
        agent: "claude-code",
        service: "svc-9",
        tool: "shell",
        arguments: &args,
        labels: &labels,
    };
    c.bench_function("decide/50 rules, falls through", |b| {
        b.iter(|| black_box(policy.decide(black_box(&call))))
    });

    // Evaluates a regex and stops at the first tier.
    let args = json!({"command": "sudo RM -rf /", "path": "/"});
    let call = ToolCall {
        service: "svc-0",
        arguments: &args,
        ..call
    };
    c.bench_function("decide/50 rules, regex block", |b| {
        b.iter(|| black_box(policy.decide(black_box(&call))))
    });

    let rl = RateLimiter::new(
        &Policy::from_toml(
            "version = 1\n[[rate_limits]]\nid = \"t\"\nscope = \"tool\"\nper_second = 1000000000\n",
        )
        .expect("rate policy loads"),
    );
    c.bench_function("rate_limiter/check", |b| {
        b.iter(|| black_box(rl.check("claude-code", "svc-1", "shell")))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
