//! Rate limits on a fake clock: no sleeping.

use std::time::Duration;

use flowlink_policy::{Policy, RateLimiter, RateScope};
use governor::clock::FakeRelativeClock;

fn limiter(src: &str) -> (RateLimiter<FakeRelativeClock>, FakeRelativeClock) {
    let policy = match Policy::from_toml(src) {
        Ok(p) => p,
        Err(e) => panic!("{e}"),
    };
    let clock = FakeRelativeClock::default();
    (RateLimiter::with_clock(&policy, clock.clone()), clock)
}

const SUM: &str = r#"
version = 1
[[rate_limits]]
id = "sum-burst"
scope = "tool"
tool = "get-sum"
per_second = 5
burst = 5
"#;

#[test]
fn burst_then_refusal_then_refill() {
    let (rl, clock) = limiter(SUM);
    for i in 0..5 {
        assert_eq!(rl.check("a", "everything", "get-sum"), Ok(()), "call {i}");
    }
    let refused = rl
        .check("a", "everything", "get-sum")
        .expect_err("sixth call in the same instant is refused");
    assert_eq!(refused.rule_id, "sum-burst");
    assert_eq!(refused.scope, RateScope::Tool);
    assert_eq!(refused.key, "everything/get-sum");
    assert!(refused.retry_after > Duration::ZERO);
    assert!(
        refused.retry_after <= Duration::from_millis(200),
        "{refused:?}"
    );

    // One cell comes back every 200 ms.
    clock.advance(Duration::from_millis(200));
    assert_eq!(rl.check("a", "everything", "get-sum"), Ok(()));
    assert!(rl.check("a", "everything", "get-sum").is_err());

    // A full second refills the whole burst.
    clock.advance(Duration::from_secs(1));
    for _ in 0..5 {
        assert_eq!(rl.check("a", "everything", "get-sum"), Ok(()));
    }
    assert!(rl.check("a", "everything", "get-sum").is_err());
}

#[test]
fn calls_outside_the_selector_are_not_counted() {
    let (rl, _) = limiter(SUM);
    for _ in 0..100 {
        assert_eq!(rl.check("a", "everything", "echo"), Ok(()));
    }
}

#[test]
fn tool_scope_has_a_bucket_per_service_and_tool() {
    let (rl, _) =
        limiter("version = 1\n[[rate_limits]]\nid = \"t\"\nscope = \"tool\"\nper_minute = 1\n");
    assert!(rl.check("a", "s1", "x").is_ok());
    assert!(
        rl.check("b", "s1", "x").is_err(),
        "other agent, same tool: same bucket"
    );
    assert!(rl.check("a", "s1", "y").is_ok(), "other tool");
    assert!(
        rl.check("a", "s2", "x").is_ok(),
        "same tool on another service"
    );
}

#[test]
fn agent_scope_has_a_bucket_per_agent() {
    let (rl, clock) = limiter(
        "version = 1\n[[rate_limits]]\nid = \"per-agent\"\nscope = \"agent\"\nagent = \"claude*\"\nper_hour = 2\nburst = 2\n",
    );
    assert!(rl.check("claude-code", "s1", "x").is_ok());
    assert!(rl.check("claude-code", "s2", "y").is_ok());
    let e = rl
        .check("claude-code", "s3", "z")
        .expect_err("third call in the hour");
    assert_eq!((e.scope, e.key.as_str()), (RateScope::Agent, "claude-code"));
    assert!(e.retry_after > Duration::from_secs(60 * 29), "{e:?}");
    assert!(
        rl.check("claude-desktop", "s1", "x").is_ok(),
        "other agent, own bucket"
    );
    assert!(rl.check("cursor", "s1", "x").is_ok(), "not selected");
    clock.advance(Duration::from_secs(30 * 60));
    assert!(rl.check("claude-code", "s1", "x").is_ok());
}

#[test]
fn service_scope_has_a_bucket_per_service() {
    let (rl, _) = limiter(
        "version = 1\n[[rate_limits]]\nid = \"svc\"\nscope = \"service\"\nper_second = 1\n",
    );
    assert!(rl.check("a", "db", "query").is_ok());
    let e = rl.check("b", "db", "schema").expect_err("same service");
    assert_eq!((e.scope, e.key.as_str()), (RateScope::Service, "db"));
    assert!(rl.check("a", "fs", "read").is_ok());
    assert_eq!(RateScope::Service.as_str(), "service");
}

#[test]
fn several_limits_first_refusal_is_reported() {
    let (rl, _) = limiter(
        r#"
        version = 1
        [[rate_limits]]
        id = "loose"
        scope = "agent"
        per_second = 100
        [[rate_limits]]
        id = "tight"
        scope = "tool"
        tool = "deploy"
        per_minute = 1
        "#,
    );
    assert_eq!(rl.len(), 2);
    assert!(rl.check("a", "s", "deploy").is_ok());
    let e = rl.check("a", "s", "deploy").expect_err("tight refuses");
    assert_eq!(e.rule_id, "tight");
    rl.forget_idle();
}

#[test]
fn default_clock_constructor_and_no_limits() {
    let rl = RateLimiter::new(&Policy::builtin_default());
    assert!(rl.is_empty());
    assert_eq!(format!("{rl:?}"), "RateLimiter { limits: [] }");
    assert!(rl.check("a", "s", "t").is_ok());
    fn send_sync<T: Send + Sync>(_: &T) {}
    send_sync(&rl);
    send_sync(&Policy::builtin_default());
}
