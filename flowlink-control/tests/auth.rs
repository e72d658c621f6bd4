//! Authentication end to end over HTTP, on SQLite and PostgreSQL: first-run set-up, passwords,
//! lockout and throttling, TOTP and recovery codes, sessions (expiry, revocation, log out
//! everywhere), CSRF, API tokens, org-enforced 2FA, membership rules, the audit trail of it all,
//! and the error shape of bad requests.

mod support;

use flowlink_control::auth::totp;
use flowlink_control::store::{Backend, now_us};
use serde_json::{Value, json};
use support::*;

fn now_secs() -> u64 {
    u64::try_from(now_us() / 1_000_000).expect("time")
}

async fn audit_kinds(client: &TestClient, org: &str) -> Vec<String> {
    let (status, body) = client
        .get(&format!("/api/v1/orgs/{org}/audit?limit=500"))
        .await;
    assert_eq!(status, 200, "{body}");
    body["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|e| e["kind"].as_str().unwrap_or("").to_string())
        .collect()
}

async fn exec(server: &TestServer, sql: &str) {
    sqlx::query(sqlx::AssertSqlSafe(sql.to_string()))
        .execute(server.store.pool())
        .await
        .expect(sql);
}

async fn first_run_setup_works_once(backend: Backend) {
    let server = TestServer::start(backend).await;
    let c = server.client();
    let good = json!({"token": server.setup_token.clone().expect("token"), "email": "a@acme.test",
        "password": PASSWORD, "display_name": "A", "org_name": "Acme", "org_slug": "acme"});
    let mut wrong = good.clone();
    wrong["token"] = json!("not-the-token");
    let (status, body) = c.post("/api/v1/setup", wrong).await;
    assert_eq!((status, code(&body)), (403, "forbidden"), "{body}");
    let mut weak = good.clone();
    weak["password"] = json!("short");
    let (status, body) = c.post("/api/v1/setup", weak).await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("at least 12"),
        "{body}"
    );
    let (status, body) = c.post("/api/v1/setup", good.clone()).await;
    assert_eq!(status, 201, "{body}");
    let (status, body) = c.post("/api/v1/setup", good).await;
    assert_eq!((status, code(&body)), (409, "conflict"), "{body}");
    let owner = c.login("a@acme.test", PASSWORD).await;
    assert!(
        audit_kinds(&owner, "acme")
            .await
            .contains(&"setup.owner_created".to_string())
    );
    server.stop().await;
}

async fn wrong_passwords_lock_the_account(backend: Backend) {
    let server = TestServer::start_with(backend, |c| {
        c.login_max_failures = 3;
        c.login_attempts_per_minute_per_ip = 1000;
    })
    .await;
    let owner = server.owner().await;
    let mut c = server.client();
    // Unknown account and wrong password look the same.
    let (s1, unknown) = c.sign_in("nobody@acme.test", PASSWORD).await;
    let (s2, wrong) = c.sign_in("owner@acme.test", "wrong password 123").await;
    assert_eq!((s1, s2), (401, 401));
    assert_eq!(unknown["error"], wrong["error"], "no account enumeration");
    for _ in 0..2 {
        let (status, _) = c.sign_in("owner@acme.test", "wrong password 123").await;
        assert_eq!(status, 401);
    }
    // Locked now: even the right password is refused.
    let (status, body) = c.sign_in("owner@acme.test", PASSWORD).await;
    assert_eq!((status, code(&body)), (403, "account_locked"), "{body}");
    let kinds = audit_kinds(&owner, "acme").await;
    assert_eq!(
        kinds.iter().filter(|k| *k == "auth.login_failed").count(),
        3,
        "{kinds:?}"
    );
    assert!(
        kinds.contains(&"auth.account_locked".to_string()),
        "{kinds:?}"
    );
    // The lock ends when its time is over.
    exec(
        &server,
        "UPDATE users SET locked_until = 1 WHERE email = 'owner@acme.test'",
    )
    .await;
    let (status, body) = c.sign_in("owner@acme.test", PASSWORD).await;
    assert_eq!(status, 200, "{body}");
    server.stop().await;
}

async fn sign_in_attempts_are_throttled_per_address(backend: Backend) {
    let server = TestServer::start_with(backend, |c| c.login_attempts_per_minute_per_ip = 3).await;
    let mut c = server.client();
    for _ in 0..3 {
        let (status, _) = c.sign_in("nobody@acme.test", "whatever whatever").await;
        assert_eq!(status, 401);
    }
    let (status, body) = c.sign_in("nobody@acme.test", "whatever whatever").await;
    assert_eq!((status, code(&body)), (429, "too_many_attempts"), "{body}");
    server.stop().await;
}

async fn totp_second_factor_and_recovery_codes(backend: Backend) {
    let server = TestServer::start(backend).await;
    let owner = server.owner().await;
    let (status, setup) = owner.post("/api/v1/me/totp/setup", json!({})).await;
    assert_eq!(status, 200, "{setup}");
    let secret = setup["secret"].as_str().expect("secret").to_string();
    assert!(
        setup["otpauth_uri"]
            .as_str()
            .unwrap_or("")
            .starts_with("otpauth://totp/FlowLink:")
    );
    assert!(!setup["qr_png_base64"].as_str().unwrap_or("").is_empty());
    let (status, body) = owner
        .post("/api/v1/me/totp/enable", json!({"code": "000000"}))
        .await;
    assert_eq!(status, 403, "a wrong code does not enable: {body}");
    let now = now_secs();
    let (status, body) = owner
        .post(
            "/api/v1/me/totp/enable",
            json!({"code": totp::code_at(&secret, now).expect("code")}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let codes: Vec<String> = body["recovery_codes"]
        .as_array()
        .expect("codes")
        .iter()
        .map(|c| c.as_str().expect("code").to_string())
        .collect();
    assert_eq!(codes.len(), 10);

    // Password alone now gives a session that can do nothing but the second step.
    let mut c = server.client();
    let (status, body) = c.sign_in("owner@acme.test", PASSWORD).await;
    assert_eq!(
        (status, body["stage"].as_str()),
        (200, Some("totp")),
        "{body}"
    );
    let (status, body) = c.get("/api/v1/me").await;
    assert_eq!((status, code(&body)), (401, "second_factor_due"), "{body}");
    let (status, body) = c.get("/api/v1/auth/session").await;
    assert_eq!(
        (status, body["stage"].as_str()),
        (200, Some("totp")),
        "{body}"
    );
    assert_eq!(
        body["csrf_token"].as_str(),
        c.csrf.as_deref(),
        "a redirected page can learn its CSRF token"
    );
    let (status, body) = c.get("/api/v1/orgs/acme").await;
    assert_eq!((status, code(&body)), (401, "second_factor_due"), "{body}");
    let (status, _) = c.post("/api/v1/auth/totp", json!({"code": "123456"})).await;
    assert_eq!(status, 401);
    // The code that enabled TOTP was used; the next step's code is fresh.
    let replay = totp::code_at(&secret, now).expect("code");
    let next = totp::code_at(&secret, now + 30).expect("code");
    if replay != next {
        let (status, _) = c.post("/api/v1/auth/totp", json!({"code": replay})).await;
        assert_eq!(status, 401, "a used code is refused");
    }
    let pending_cookie = c.cookie.clone();
    let resp = c
        .request(reqwest::Method::POST, "/api/v1/auth/totp")
        .json(&json!({"code": next}))
        .send()
        .await
        .expect("totp");
    let (status, body) = c.absorb(resp).await;
    assert_eq!(
        (status, body["stage"].as_str()),
        (200, Some("complete")),
        "{body}"
    );
    assert_ne!(
        c.cookie, pending_cookie,
        "a new session id after the second factor"
    );
    let (status, _) = c.get("/api/v1/me").await;
    assert_eq!(status, 200);
    let stale = TestClient {
        cookie: pending_cookie,
        ..server.client()
    };
    let (status, _) = stale.get("/api/v1/me").await;
    assert_eq!(status, 401, "the pending session is gone");

    // The same code again, on a new sign-in: refused (each step works once).
    let mut again = server.client();
    again.sign_in("owner@acme.test", PASSWORD).await;
    let (status, _) = again.post("/api/v1/auth/totp", json!({"code": next})).await;
    assert_eq!(status, 401, "replayed TOTP code");
    // A recovery code works once, typed loosely.
    let loose = codes[0].to_uppercase().replace('-', " ");
    let resp = again
        .request(reqwest::Method::POST, "/api/v1/auth/totp")
        .json(&json!({"recovery_code": loose}))
        .send()
        .await
        .expect("rc");
    let (status, body) = again.absorb(resp).await;
    assert_eq!(status, 200, "{body}");
    let (_, me) = again.get("/api/v1/me").await;
    assert_eq!(me["recovery_codes_left"], 9);
    let mut third = server.client();
    third.sign_in("owner@acme.test", PASSWORD).await;
    let (status, _) = third
        .post("/api/v1/auth/totp", json!({"recovery_code": codes[0]}))
        .await;
    assert_eq!(status, 401, "a used recovery code is refused");
    let kinds = audit_kinds(&owner, "acme").await;
    assert!(
        kinds.contains(&"auth.totp_enabled".to_string()),
        "{kinds:?}"
    );
    server.stop().await;
}

async fn organisations_can_require_two_factor(backend: Backend) {
    let server = TestServer::start(backend).await;
    let owner = server.owner().await;
    let viewer = server.member(&owner, "acme", "v@acme.test", "viewer").await;
    let (status, body) = owner
        .patch("/api/v1/orgs/acme", json!({"require_2fa": true}))
        .await;
    assert_eq!(
        status, 409,
        "the owner has no 2FA yet and would lock themselves out: {body}"
    );
    let (_, setup) = owner.post("/api/v1/me/totp/setup", json!({})).await;
    let secret = setup["secret"].as_str().expect("secret").to_string();
    let code = totp::code_at(&secret, now_secs()).expect("code");
    let (status, _) = owner
        .post("/api/v1/me/totp/enable", json!({"code": code}))
        .await;
    assert_eq!(status, 200);
    let (status, body) = owner
        .patch("/api/v1/orgs/acme", json!({"require_2fa": true}))
        .await;
    assert_eq!(
        (status, body["require_2fa"].as_bool()),
        (200, Some(true)),
        "{body}"
    );
    let (status, body) = viewer.get("/api/v1/orgs/acme").await;
    assert_eq!(
        (status, code_of(&body)),
        (403, "second_factor_required".to_string()),
        "{body}"
    );
    let (status, _) = viewer.get("/api/v1/me").await;
    assert_eq!(
        status, 200,
        "the account page stays reachable to set 2FA up"
    );
    let (_, setup) = viewer.post("/api/v1/me/totp/setup", json!({})).await;
    let vs = setup["secret"].as_str().expect("secret").to_string();
    let (status, _) = viewer
        .post(
            "/api/v1/me/totp/enable",
            json!({"code": totp::code_at(&vs, now_secs()).expect("c")}),
        )
        .await;
    assert_eq!(status, 200);
    let (status, body) = viewer.get("/api/v1/orgs/acme").await;
    assert_eq!(status, 200, "{body}");
    server.stop().await;
}

fn code_of(body: &Value) -> String {
    code(body).to_string()
}

async fn sessions_expire_and_can_be_revoked(backend: Backend) {
    let server = TestServer::start(backend).await;
    let owner = server.owner().await;
    let laptop = server.client().login("owner@acme.test", PASSWORD).await;
    let phone = server.client().login("owner@acme.test", PASSWORD).await;
    let (status, list) = owner.get("/api/v1/me/sessions").await;
    assert_eq!(status, 200);
    let list = list.as_array().expect("sessions").clone();
    assert_eq!(list.len(), 3);
    assert_eq!(list.iter().filter(|s| s["current"] == true).count(), 1);
    // Revoke the phone from the laptop.
    let (_, phone_me) = phone.get("/api/v1/me").await;
    let phone_id = phone_me["session_id"].as_str().expect("id").to_string();
    let (status, _) = laptop
        .delete(&format!("/api/v1/me/sessions/{phone_id}"))
        .await;
    assert_eq!(status, 204);
    let (status, body) = phone.get("/api/v1/me").await;
    assert_eq!((status, code(&body)), (401, "session_expired"), "{body}");
    // Idle timeout: a session unused for longer than the idle limit is over.
    let (_, lm) = laptop.get("/api/v1/me").await;
    let idle = now_us() - 3 * 3600 * 1_000_000;
    exec(
        &server,
        &format!(
            "UPDATE sessions SET last_seen_at = {idle} WHERE id = '{}'",
            lm["session_id"].as_str().expect("id")
        ),
    )
    .await;
    let (status, _) = laptop.get("/api/v1/me").await;
    assert_eq!(status, 401, "idle session");
    // Absolute timeout.
    let (_, om) = owner.get("/api/v1/me").await;
    exec(
        &server,
        &format!(
            "UPDATE sessions SET expires_at = {} WHERE id = '{}'",
            now_us() - 1,
            om["session_id"].as_str().expect("id")
        ),
    )
    .await;
    let (status, _) = owner.get("/api/v1/me").await;
    assert_eq!(status, 401, "expired session");
    // Log out everywhere.
    let a = server.client().login("owner@acme.test", PASSWORD).await;
    let b = server.client().login("owner@acme.test", PASSWORD).await;
    let resp = a
        .request(reqwest::Method::POST, "/api/v1/me/logout-all")
        .send()
        .await
        .expect("logout-all");
    assert_eq!(resp.status().as_u16(), 204);
    let cleared = resp
        .headers()
        .get_all("set-cookie")
        .iter()
        .any(|v| v.to_str().unwrap_or("").contains("Max-Age=0"));
    assert!(cleared, "the cookie is cleared");
    for c in [&a, &b] {
        let (status, _) = c.get("/api/v1/me").await;
        assert_eq!(status, 401);
    }
    // Plain log out.
    let d = server.client().login("owner@acme.test", PASSWORD).await;
    let (status, _) = d.post("/api/v1/auth/logout", json!({})).await;
    assert_eq!(status, 204);
    let (status, _) = d.get("/api/v1/me").await;
    assert_eq!(status, 401);
    // The cookie's attributes.
    let resp = server
        .client()
        .http
        .post(format!("{}/api/v1/auth/login", server.base))
        .json(&json!({"email": "owner@acme.test", "password": PASSWORD}))
        .send()
        .await
        .expect("login");
    let cookie = resp
        .headers()
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    for attr in ["HttpOnly", "SameSite=Lax", "Path=/", "Max-Age=86400"] {
        assert!(cookie.contains(attr), "{cookie}");
    }
    assert!(
        !cookie.contains("Secure"),
        "plain HTTP from a direct client: {cookie}"
    );
    server.stop().await;
}

async fn state_changes_need_the_csrf_token(backend: Backend) {
    let server = TestServer::start(backend).await;
    let owner = server.owner().await;
    let no_csrf = TestClient {
        csrf: None,
        ..owner.clone()
    };
    let (status, body) = no_csrf
        .patch("/api/v1/orgs/acme", json!({"name": "Evil"}))
        .await;
    assert_eq!((status, code(&body)), (403, "csrf_failed"), "{body}");
    let wrong = TestClient {
        csrf: Some("x".repeat(32)),
        ..owner.clone()
    };
    let (status, body) = wrong
        .patch("/api/v1/orgs/acme", json!({"name": "Evil"}))
        .await;
    assert_eq!((status, code(&body)), (403, "csrf_failed"), "{body}");
    let (status, body) = no_csrf.post("/api/v1/me/logout-all", json!({})).await;
    assert_eq!(status, 403, "{body}");
    // The server closed that connection; the client may not have noticed yet, so the check
    // goes over a new one.
    let (_, org) = owner.fresh_connection().get("/api/v1/orgs/acme").await;
    assert_eq!(org["name"], "Acme", "nothing changed");
    // Reads need no token.
    let (status, _) = no_csrf.get("/api/v1/orgs/acme").await;
    assert_eq!(status, 200);
    server.stop().await;
}

async fn api_tokens_are_scoped_hashed_and_revocable(backend: Backend) {
    let server = TestServer::start(backend).await;
    let owner = server.owner().await;
    let (status, body) = owner
        .post(
            "/api/v1/orgs/acme/tokens",
            json!({"name": "ci", "scopes": ["org:read", "member:read"], "expires_in_days": 7}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let secret = body["token"].as_str().expect("token").to_string();
    let id = body["info"]["id"].as_str().expect("id").to_string();
    assert!(secret.starts_with("flt_"));
    let bot = server.client().with_token(&secret);
    let (status, _) = bot.get("/api/v1/orgs/acme/members").await;
    assert_eq!(status, 200);
    // No CSRF for tokens, but also nothing outside the scopes.
    let (status, body) = bot.patch("/api/v1/orgs/acme", json!({"name": "x"})).await;
    assert_eq!((status, code(&body)), (403, "forbidden"), "{body}");
    let (status, _) = bot.get("/api/v1/orgs/acme/audit").await;
    assert_eq!(status, 403);
    // A cookie and a token together are refused, not resolved in favour of either.
    let both = TestClient {
        bearer: Some(secret.clone()),
        ..owner.clone()
    };
    let (status, body) = both.get("/api/v1/orgs/acme").await;
    assert_eq!(
        (status, code(&body)),
        (401, "ambiguous_credentials"),
        "{body}"
    );
    // Tokens are org-bound and cannot act as a person.
    let (status, _) = bot.get("/api/v1/me").await;
    assert_eq!(status, 401);
    // Only the hash is stored.
    let stored: Vec<String> = sqlx::query_scalar("SELECT token_hash FROM api_tokens")
        .fetch_all(server.store.pool())
        .await
        .expect("hashes");
    assert!(
        stored.iter().all(|h| !h.contains(&secret) && h.len() == 64),
        "{stored:?}"
    );
    // A token cannot exceed its creator, and a viewer cannot make tokens at all.
    let auditor = server
        .member(&owner, "acme", "aud@acme.test", "auditor")
        .await;
    let (status, _) = auditor
        .post(
            "/api/v1/orgs/acme/tokens",
            json!({"name": "x", "scopes": ["org:read"]}),
        )
        .await;
    assert_eq!(status, 403);
    let (status, body) = owner
        .post(
            "/api/v1/orgs/acme/tokens",
            json!({"name": "x", "scopes": ["root:all"]}),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    // A token follows its creator's role: demote the creator and the token loses what the new role lacks.
    let admin = server
        .member(&owner, "acme", "adm@acme.test", "admin")
        .await;
    let (_, body) = admin
        .post(
            "/api/v1/orgs/acme/tokens",
            json!({"name": "adm", "scopes": ["member:read"]}),
        )
        .await;
    let admin_token = server
        .client()
        .with_token(body["token"].as_str().expect("token"));
    let (status, _) = admin_token.get("/api/v1/orgs/acme/members").await;
    assert_eq!(status, 200);
    let (_, am) = admin.get("/api/v1/me").await;
    let admin_id = am["user"]["id"].as_str().expect("id").to_string();
    let (status, _) = owner
        .patch(
            &format!("/api/v1/orgs/acme/members/{admin_id}"),
            json!({"role": "viewer"}),
        )
        .await;
    assert_eq!(status, 200);
    let (status, _) = admin_token.get("/api/v1/orgs/acme/members").await;
    assert_eq!(status, 403, "demoted creator, narrowed token");
    // Expiry and revocation.
    exec(
        &server,
        &format!(
            "UPDATE api_tokens SET expires_at = {} WHERE id = '{id}'",
            now_us() - 1
        ),
    )
    .await;
    let (status, _) = bot.get("/api/v1/orgs/acme").await;
    assert_eq!(status, 401, "expired");
    exec(
        &server,
        &format!(
            "UPDATE api_tokens SET expires_at = {} WHERE id = '{id}'",
            now_us() + 3_600_000_000
        ),
    )
    .await;
    let (status, _) = owner
        .delete(&format!("/api/v1/orgs/acme/tokens/{id}"))
        .await;
    assert_eq!(status, 204);
    let (status, body) = bot.get("/api/v1/orgs/acme").await;
    assert_eq!(status, 401, "revoked: {body}");
    let (status, _) = server
        .client()
        .with_token("flt_forged.token")
        .get("/api/v1/orgs/acme")
        .await;
    assert_eq!(status, 401);
    let kinds = audit_kinds(&owner, "acme").await;
    assert!(
        kinds.contains(&"token.created".to_string())
            && kinds.contains(&"token.revoked".to_string()),
        "{kinds:?}"
    );
    server.stop().await;
}

async fn roles_change_by_the_rules(backend: Backend) {
    let server = TestServer::start(backend).await;
    let owner = server.owner().await;
    let admin = server
        .member(&owner, "acme", "adm@acme.test", "admin")
        .await;
    let _viewer = server.member(&owner, "acme", "v@acme.test", "viewer").await;
    let (_, members) = owner.get("/api/v1/orgs/acme/members").await;
    let id_of = |email: &str| {
        members["items"]
            .as_array()
            .expect("members")
            .iter()
            .find(|m| m["user"]["email"] == email)
            .map(|m| m["user"]["id"].as_str().expect("id").to_string())
            .expect("member")
    };
    let (owner_id, viewer_id) = (id_of("owner@acme.test"), id_of("v@acme.test"));
    // An admin cannot make owners or touch the owner.
    let (status, _) = admin
        .patch(
            &format!("/api/v1/orgs/acme/members/{viewer_id}"),
            json!({"role": "owner"}),
        )
        .await;
    assert_eq!(status, 403);
    let (status, _) = admin
        .delete(&format!("/api/v1/orgs/acme/members/{owner_id}"))
        .await;
    assert_eq!(status, 403);
    let (status, body) = admin
        .patch(
            &format!("/api/v1/orgs/acme/members/{viewer_id}"),
            json!({"role": "approver"}),
        )
        .await;
    assert_eq!(
        (status, body["role"].as_str()),
        (200, Some("approver")),
        "{body}"
    );
    let (status, body) = admin
        .patch(
            &format!("/api/v1/orgs/acme/members/{viewer_id}"),
            json!({"role": "emperor"}),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    // The last owner stays.
    let (status, body) = owner
        .patch(
            &format!("/api/v1/orgs/acme/members/{owner_id}"),
            json!({"role": "admin"}),
        )
        .await;
    assert_eq!(status, 409, "{body}");
    let (status, _) = owner
        .delete(&format!("/api/v1/orgs/acme/members/{owner_id}"))
        .await;
    assert_eq!(status, 409);
    // Removing someone ends their access at once.
    let (status, _) = owner
        .delete(&format!("/api/v1/orgs/acme/members/{viewer_id}"))
        .await;
    assert_eq!(status, 204);
    let removed = server.client().login("v@acme.test", PASSWORD).await;
    let (status, body) = removed.get("/api/v1/orgs/acme").await;
    assert_eq!((status, code(&body)), (404, "org_not_found"), "{body}");
    let (_, audit) = owner
        .get("/api/v1/orgs/acme/audit?kind=member.role_changed")
        .await;
    let change = &audit["items"][0];
    assert_eq!(change["detail"]["from"], "viewer");
    assert_eq!(change["detail"]["to"], "approver");
    server.stop().await;
}

async fn password_changes_sign_out_other_sessions(backend: Backend) {
    let server = TestServer::start(backend).await;
    let owner = server.owner().await;
    let other = server.client().login("owner@acme.test", PASSWORD).await;
    let (status, _) = owner
        .post(
            "/api/v1/me/password",
            json!({"current_password": "nope nope nope", "new_password": "a brand new passphrase"}),
        )
        .await;
    assert_eq!(status, 403);
    let (status, body) = owner
        .post(
            "/api/v1/me/password",
            json!({"current_password": PASSWORD, "new_password": "short"}),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    let (status, _) = owner
        .post(
            "/api/v1/me/password",
            json!({"current_password": PASSWORD, "new_password": "a brand new passphrase"}),
        )
        .await;
    assert_eq!(status, 204);
    let (status, _) = owner.get("/api/v1/me").await;
    assert_eq!(status, 200, "this session stays");
    let (status, _) = other.get("/api/v1/me").await;
    assert_eq!(status, 401, "others end");
    let mut c = server.client();
    assert_eq!(c.sign_in("owner@acme.test", PASSWORD).await.0, 401);
    assert_eq!(
        c.sign_in("owner@acme.test", "a brand new passphrase")
            .await
            .0,
        200
    );
    server.stop().await;
}

async fn audit_pages_and_filters(backend: Backend) {
    let server = TestServer::start(backend).await;
    let owner = server.owner().await;
    for _ in 0..5 {
        server.client().login("owner@acme.test", PASSWORD).await;
    }
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/api/v1/orgs/acme/audit?kind=auth.&limit=2&cursor={c}"),
            None => "/api/v1/orgs/acme/audit?kind=auth.&limit=2".to_string(),
        };
        let (status, page) = owner.get(&path).await;
        assert_eq!(status, 200, "{page}");
        for e in page["items"].as_array().expect("items") {
            assert!(e["kind"].as_str().unwrap_or("").starts_with("auth."), "{e}");
            seen.push(e["id"].as_str().expect("id").to_string());
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    assert_eq!(seen.len(), 6, "owner's first sign-in plus five: {seen:?}");
    let mut sorted = seen.clone();
    sorted.sort();
    sorted.reverse();
    assert_eq!(seen, sorted, "newest first, no duplicates across pages");
    let (status, body) = owner.get("/api/v1/orgs/acme/audit?cursor=garbage").await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = owner.get("/api/v1/orgs/acme/audit?since=yesterday").await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = owner.get("/api/v1/orgs/acme/audit?limit=0").await;
    assert_eq!(status, 400, "{body}");
    server.stop().await;
}

/// Walks every page of a list endpoint and returns the items.
async fn all_pages(client: &TestClient, path: &str, limit: u32) -> Vec<Value> {
    let mut items = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let url = match &cursor {
            Some(c) => format!("{path}?limit={limit}&cursor={c}"),
            None => format!("{path}?limit={limit}"),
        };
        let (status, page) = client.get(&url).await;
        assert_eq!(status, 200, "{url}: {page}");
        let got = page["items"].as_array().expect("items");
        assert!(got.len() <= limit as usize);
        items.extend(got.iter().cloned());
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => return items,
        }
    }
}

async fn member_and_token_lists_page_by_cursor(backend: Backend) {
    let server = TestServer::start(backend).await;
    let owner = server.owner().await;
    for i in 0..5 {
        let (status, body) = owner
            .post(
                "/api/v1/orgs/acme/members",
                json!({"email": format!("m{i}@acme.test"), "role": "viewer"}),
            )
            .await;
        assert_eq!(status, 201, "{body}");
        let (status, body) = owner
            .post(
                "/api/v1/orgs/acme/tokens",
                json!({"name": format!("t{i}"), "scopes": ["org:read"]}),
            )
            .await;
        assert_eq!(status, 201, "{body}");
    }
    let members = all_pages(&owner, "/api/v1/orgs/acme/members", 2).await;
    let emails: Vec<&str> = members
        .iter()
        .map(|m| m["user"]["email"].as_str().expect("email"))
        .collect();
    assert_eq!(
        emails,
        [
            "m0@acme.test",
            "m1@acme.test",
            "m2@acme.test",
            "m3@acme.test",
            "m4@acme.test",
            "owner@acme.test"
        ]
    );
    let tokens = all_pages(&owner, "/api/v1/orgs/acme/tokens", 2).await;
    let names: Vec<&str> = tokens
        .iter()
        .map(|t| t["name"].as_str().expect("name"))
        .collect();
    assert_eq!(names, ["t4", "t3", "t2", "t1", "t0"], "newest first");
    let (status, body) = owner.get("/api/v1/orgs/acme/members?limit=501").await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = owner.get("/api/v1/orgs/acme/tokens?cursor=%%%").await;
    assert_eq!(status, 400, "{body}");
    server.stop().await;
}

async fn bad_requests_get_the_error_shape(backend: Backend) {
    let server = TestServer::start(backend).await;
    let owner = server.owner().await;
    let raw = |method: reqwest::Method, path: &str| owner.request(method, path);
    let (status, body) = read(
        raw(reqwest::Method::PATCH, "/api/v1/orgs/acme")
            .header("content-type", "application/json")
            .body("{\"name\": ")
            .send()
            .await
            .expect("r"),
    )
    .await;
    assert_eq!((status, code(&body)), (400, "invalid_request"), "{body}");
    let (status, body) = read(
        raw(reqwest::Method::PATCH, "/api/v1/orgs/acme")
            .body("name=x")
            .send()
            .await
            .expect("r"),
    )
    .await;
    assert_eq!(
        (status, code(&body)),
        (415, "unsupported_media_type"),
        "{body}"
    );
    let (status, body) = owner
        .patch("/api/v1/orgs/acme", json!({"name": "x", "evil": true}))
        .await;
    assert_eq!(
        (status, code(&body)),
        (400, "invalid_request"),
        "unknown fields are refused: {body}"
    );
    let (status, body) = owner.get("/api/v1/nothing/here").await;
    assert_eq!((status, code(&body)), (404, "not_found"), "{body}");
    let (status, body) = owner.put("/api/v1/orgs/acme", json!({})).await;
    assert_eq!((status, code(&body)), (405, "method_not_allowed"), "{body}");
    // The server answers 413 from the Content-Length without reading the body, then closes the
    // connection; a client still writing may see that as a broken pipe instead of the answer.
    // Either way the body is refused and nothing changes.
    let big = "x".repeat(2 * 1024 * 1024);
    let sent = owner
        .request(reqwest::Method::PATCH, "/api/v1/orgs/acme")
        .json(&json!({"name": big}))
        .send()
        .await;
    match sent {
        Ok(resp) => {
            let (status, body) = read(resp).await;
            assert_eq!((status, code(&body)), (413, "payload_too_large"), "{body}");
        }
        Err(e) => assert!(
            e.is_request() || e.is_body() || e.is_connect(),
            "an oversized body may only end the connection: {e}"
        ),
    }
    let (_, org) = owner.get("/api/v1/orgs/acme").await;
    assert_eq!(org["name"], "Acme", "nothing changed");
    let (status, body) = server.client().get("/api/v1/orgs/acme").await;
    assert_eq!((status, code(&body)), (401, "unauthenticated"), "{body}");
    server.stop().await;
}

both!(
    first_run_setup_works_once,
    wrong_passwords_lock_the_account,
    sign_in_attempts_are_throttled_per_address,
    totp_second_factor_and_recovery_codes,
    organisations_can_require_two_factor,
    sessions_expire_and_can_be_revoked,
    state_changes_need_the_csrf_token,
    api_tokens_are_scoped_hashed_and_revocable,
    roles_change_by_the_rules,
    password_changes_sign_out_other_sessions,
    audit_pages_and_filters,
    bad_requests_get_the_error_shape,
    member_and_token_lists_page_by_cursor,
);
