//! The storage conformance suite: the same behaviour from the `Store` on SQLite and on
//! PostgreSQL — uniqueness, single-use secrets under concurrency, monotonic TOTP steps,
//! cascades, audit ordering, and migrations that are idempotent and report themselves.

mod support;

use flowlink_control::store::{
    AuditEvent, AuditFilter, Backend, NewSession, Store, StoreError, now_us,
};
use support::TestDb;

async fn open(backend: Backend) -> (Store, TestDb) {
    let db = TestDb::new(backend).await;
    let store = Store::connect(&db.url).await.expect("connect");
    store.migrate().await.expect("migrate");
    (store, db)
}

async fn migrations_are_idempotent_and_current(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = Store::connect(&db.url).await.expect("connect");
    let before = store.migration_status().await.expect("status");
    assert!(
        before.applied.is_empty() && !before.known.is_empty(),
        "{before:?}"
    );
    assert!(!before.is_current());
    store.migrate().await.expect("migrate");
    store.migrate().await.expect("migrate again");
    let after = store.migration_status().await.expect("status");
    assert!(after.is_current(), "{after:?}");
    assert_eq!(store.backend(), backend);
    store.ping().await.expect("ping");
}

async fn unique_keys_are_conflicts(backend: Backend) {
    let (store, _db) = open(backend).await;
    store.create_org("acme", "Acme").await.expect("org");
    assert!(matches!(
        store.create_org("acme", "Other").await,
        Err(StoreError::Conflict(_))
    ));
    let u = store
        .create_user("Ann@Example.com", "Ann", None)
        .await
        .expect("user");
    assert_eq!(u.email, "ann@example.com", "e-mail lower-cased");
    assert!(matches!(
        store.create_user("ann@example.COM", "Ann 2", None).await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(
        store
            .user_by_email(" ANN@example.com ")
            .await
            .expect("q")
            .map(|u| u.id),
        Some(u.id.clone())
    );
    let org = store.org_by_ref("acme").await.expect("q").expect("org");
    assert_eq!(
        store.org_by_ref(&org.id).await.expect("q").map(|o| o.slug),
        Some("acme".into())
    );
    store
        .add_member(&org.id, &u.id, "viewer")
        .await
        .expect("member");
    assert!(matches!(
        store.add_member(&org.id, &u.id, "admin").await,
        Err(StoreError::Conflict(_))
    ));
}

async fn setup_tokens_are_single_use_under_concurrency(backend: Backend) {
    let (store, _db) = open(backend).await;
    store
        .create_setup_token("h1", now_us() + 60_000_000)
        .await
        .expect("token");
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let s = store.clone();
        tasks.push(tokio::spawn(async move {
            s.consume_setup_token("h1").await.expect("consume")
        }));
    }
    let mut wins = 0;
    for t in tasks {
        if t.await.expect("join") {
            wins += 1;
        }
    }
    assert_eq!(wins, 1, "exactly one consumer wins");
    store
        .create_setup_token("h2", now_us() - 1)
        .await
        .expect("token");
    assert!(
        !store.consume_setup_token("h2").await.expect("consume"),
        "expired"
    );
    store
        .create_setup_token("h3", now_us() + 60_000_000)
        .await
        .expect("token");
    store.expire_setup_tokens().await.expect("expire");
    assert!(
        !store.consume_setup_token("h3").await.expect("consume"),
        "withdrawn"
    );
}

async fn totp_steps_only_move_forward(backend: Backend) {
    let (store, _db) = open(backend).await;
    let u = store
        .create_user("a@b.test", "A", None)
        .await
        .expect("user");
    assert!(
        store
            .begin_totp(&u.id, "JBSWY3DPEHPK3PXP")
            .await
            .expect("begin")
    );
    assert!(store.accept_totp_step(&u.id, 100).await.expect("step"));
    assert!(
        !store.accept_totp_step(&u.id, 100).await.expect("step"),
        "same step twice"
    );
    assert!(
        !store.accept_totp_step(&u.id, 99).await.expect("step"),
        "older step"
    );
    assert!(store.accept_totp_step(&u.id, 101).await.expect("step"));
    store
        .enable_totp(&u.id, &["c1".into(), "c2".into()])
        .await
        .expect("enable");
    assert!(
        !store.begin_totp(&u.id, "OTHER").await.expect("begin"),
        "no silent replacement while enabled"
    );
    assert!(store.use_recovery_code(&u.id, "c1").await.expect("use"));
    assert!(
        !store.use_recovery_code(&u.id, "c1").await.expect("use"),
        "single use"
    );
    assert_eq!(store.recovery_codes_left(&u.id).await.expect("left"), 1);
    store.disable_totp(&u.id).await.expect("disable");
    assert_eq!(store.totp_state(&u.id).await.expect("state"), None);
    assert!(
        !store.use_recovery_code(&u.id, "c2").await.expect("use"),
        "codes die with TOTP"
    );
}

async fn lockout_counts_and_resets(backend: Backend) {
    let (store, _db) = open(backend).await;
    let u = store
        .create_user("a@b.test", "A", Some("x"))
        .await
        .expect("user");
    let until = now_us() + 60_000_000;
    assert!(
        !store
            .record_login_failure(&u.id, 3, until)
            .await
            .expect("f1")
    );
    assert!(
        !store
            .record_login_failure(&u.id, 3, until)
            .await
            .expect("f2")
    );
    assert!(
        store
            .record_login_failure(&u.id, 3, until)
            .await
            .expect("f3")
    );
    assert_eq!(
        store
            .user_by_id(&u.id)
            .await
            .expect("q")
            .expect("u")
            .locked_until,
        until
    );
    store.reset_login_failures(&u.id).await.expect("reset");
    let u2 = store.user_by_id(&u.id).await.expect("q").expect("u");
    assert_eq!((u2.failed_logins, u2.locked_until), (0, 0));
}

async fn sessions_and_memberships_cascade_with_their_parents(backend: Backend) {
    let (store, _db) = open(backend).await;
    let org = store.create_org("acme", "Acme").await.expect("org");
    let u = store
        .create_user("a@b.test", "A", None)
        .await
        .expect("user");
    store
        .add_member(&org.id, &u.id, "owner")
        .await
        .expect("member");
    store
        .create_session(&NewSession {
            id: "s1",
            token_hash: "th",
            user_id: &u.id,
            csrf_token: "c",
            stage: "complete",
            auth_method: "password",
            expires_at: now_us() + 60_000_000,
            ip: "127.0.0.1",
            user_agent: "t",
        })
        .await
        .expect("session");
    assert!(
        store
            .live_session("th", 3_600_000_000)
            .await
            .expect("q")
            .is_some()
    );
    sqlx::query("DELETE FROM users WHERE id = $1")
        .bind(&u.id)
        .execute(store.pool())
        .await
        .expect("delete");
    assert!(
        store
            .live_session("th", 3_600_000_000)
            .await
            .expect("q")
            .is_none()
    );
    assert!(store.list_members(&org.id).await.expect("q").is_empty());
}

async fn audit_is_ordered_and_scoped(backend: Backend) {
    let (store, _db) = open(backend).await;
    let event = |org: &str, kind: &str| AuditEvent {
        org_id: Some(org.to_string()),
        kind: kind.into(),
        actor_kind: "user".into(),
        actor_id: "u".into(),
        target: "t".into(),
        outcome: "success".into(),
        ip: "127.0.0.1".into(),
        detail: serde_json::json!({"k": "v", "n": 1}),
    };
    let mut ids = Vec::new();
    for i in 0..25 {
        ids.push(
            store
                .record_audit(&event(
                    "A",
                    if i % 2 == 0 {
                        "auth.login"
                    } else {
                        "policy.version_created"
                    },
                ))
                .await
                .expect("rec"),
        );
    }
    store
        .record_audit(&event("B", "auth.login"))
        .await
        .expect("rec");
    let mut got = Vec::new();
    let mut before = None;
    loop {
        let page = store
            .list_audit(
                "A",
                &AuditFilter {
                    before: before.clone(),
                    limit: 7,
                    ..AuditFilter::default()
                },
            )
            .await
            .expect("page");
        if page.is_empty() {
            break;
        }
        before = page.last().map(|e| (e.occurred_at, e.id.clone()));
        got.extend(page.into_iter().map(|e| {
            assert_eq!(e.event.detail["n"], 1, "detail round-trips");
            e.id
        }));
    }
    ids.reverse();
    assert_eq!(got, ids, "newest first, every event once, none of B's");
    let logins = store
        .list_audit(
            "A",
            &AuditFilter {
                kind: Some("auth.".into()),
                limit: 100,
                ..AuditFilter::default()
            },
        )
        .await
        .expect("q");
    assert_eq!(logins.len(), 13);
    let exact = store
        .list_audit(
            "A",
            &AuditFilter {
                kind: Some("auth".into()),
                limit: 100,
                ..AuditFilter::default()
            },
        )
        .await
        .expect("q");
    assert!(exact.is_empty(), "a kind without a dot is exact");
    let wild = store
        .list_audit(
            "A",
            &AuditFilter {
                kind: Some("%.".into()),
                limit: 100,
                ..AuditFilter::default()
            },
        )
        .await
        .expect("q");
    assert!(wild.is_empty(), "LIKE wildcards in the filter are literal");
}

both!(
    migrations_are_idempotent_and_current,
    unique_keys_are_conflicts,
    setup_tokens_are_single_use_under_concurrency,
    totp_steps_only_move_forward,
    lockout_counts_and_resets,
    sessions_and_memberships_cascade_with_their_parents,
    audit_is_ordered_and_scoped,
);
