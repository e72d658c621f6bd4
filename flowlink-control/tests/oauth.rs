//! OAuth / OpenID Connect sign-in against a fake provider (tests/support/oauth_provider.rs),
//! through the real FlowLink client code, on both engines.

#[path = "support/oauth_provider.rs"]
mod oauth_provider;
mod support;

use flowlink_control::store::Backend;
use oauth_provider::{FakeProvider, Person, Signer};
use serde_json::{Value, json};
use sqlx::Row;
use support::{TestClient, TestServer, code};

/// The public URL FlowLink is told it has; redirects to it are sent to the test server.
const PUBLIC: &str = "http://flowlink.test";
const OWNER: &str = "owner@acme.test";

fn owner(subject: &str) -> Person {
    Person {
        subject: subject.into(),
        email: OWNER.into(),
        email_verified: true,
    }
}

/// A FlowLink server with the owner account and one provider of `kind` named after it.
struct Rig {
    server: TestServer,
    provider: FakeProvider,
    name: String,
    http: reqwest::Client,
}

/// A browser's state across one sign-in: the binding cookie.
#[derive(Default, Clone)]
struct Browser {
    binding: Option<String>,
}

async fn rig(backend: Backend, kind: &str, person: Person) -> Rig {
    let provider = FakeProvider::start(kind, person).await;
    let config = provider.config();
    let name = kind.to_string();
    let key = name.clone();
    let server = TestServer::start_with(backend, move |c| {
        c.public_url = PUBLIC.into();
        c.oauth.insert(key, config);
    })
    .await;
    server.owner().await;
    Rig {
        server,
        provider,
        name,
        http: reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("client"),
    }
}

fn location(resp: &reqwest::Response) -> String {
    resp.headers()
        .get(reqwest::header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string()
}

fn set_cookie(resp: &reqwest::Response, name: &str) -> Option<String> {
    resp.headers()
        .get_all(reqwest::header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with(&format!("{name}=")))
        .map(str::to_string)
}

impl Rig {
    /// A URL under the public URL, pointed at the test server.
    fn local(&self, url: &str) -> String {
        let rest = url
            .strip_prefix(PUBLIC)
            .unwrap_or_else(|| panic!("{url} is not under {PUBLIC}"));
        format!("{}{rest}", self.server.base)
    }

    /// `start` for provider `name`: returns the provider's authorization URL.
    async fn start_at(&self, browser: &mut Browser, name: &str) -> String {
        let mut rb = self.http.get(format!(
            "{}/api/v1/auth/oauth/{name}/start",
            self.server.base
        ));
        if let Some(b) = &browser.binding {
            rb = rb.header(reqwest::header::COOKIE, format!("flowlink_oauth={b}"));
        }
        let resp = rb.send().await.expect("start");
        assert_eq!(resp.status(), 303, "start");
        let cookie = set_cookie(&resp, "flowlink_oauth").expect("binding cookie");
        assert!(
            cookie.contains("HttpOnly") && cookie.contains("SameSite=Lax"),
            "{cookie}"
        );
        assert!(cookie.contains("Path=/api/v1/auth/oauth/"), "{cookie}");
        assert!(
            !cookie.contains("Secure"),
            "plain-http client, no Secure: {cookie}"
        );
        let value = cookie
            .trim_start_matches("flowlink_oauth=")
            .split(';')
            .next()
            .unwrap_or("")
            .to_string();
        browser.binding = Some(value);
        let to = location(&resp);
        assert!(to.starts_with(&self.provider.base), "{to}");
        to
    }

    async fn start(&self, browser: &mut Browser) -> String {
        self.start_at(browser, &self.name.clone()).await
    }

    /// The provider's approval: returns the callback URL it redirects to.
    async fn approve(&self, authorize_url: &str) -> String {
        let resp = self
            .http
            .get(authorize_url)
            .send()
            .await
            .expect("authorize");
        assert_eq!(
            resp.status(),
            303,
            "authorize: {}",
            resp.text().await.unwrap_or_default()
        );
        location(&resp)
    }

    /// Delivers the callback to FlowLink with the browser's cookies.
    async fn deliver(&self, browser: &Browser, callback_url: &str) -> reqwest::Response {
        let mut rb = self.http.get(self.local(callback_url));
        if let Some(b) = &browser.binding {
            rb = rb.header(reqwest::header::COOKIE, format!("flowlink_oauth={b}"));
        }
        rb.send().await.expect("callback")
    }

    /// A whole sign-in in a fresh browser; returns the callback's response.
    async fn sign_in(&self) -> reqwest::Response {
        let mut browser = Browser::default();
        let authorize = self.start(&mut browser).await;
        let back = self.approve(&authorize).await;
        self.deliver(&browser, &back).await
    }

    /// A successful sign-in: checks the redirect and returns a client holding the session.
    async fn signed_in(&self) -> TestClient {
        let resp = self.sign_in().await;
        let status = resp.status();
        let to = location(&resp);
        let mut client = self.server.client();
        let (_, body) = client.absorb(resp).await;
        assert_eq!(status, 303, "callback: {body}");
        assert_eq!(to, format!("{PUBLIC}/"));
        assert!(client.cookie.is_some(), "no session cookie");
        client
    }

    /// Expects the callback to fail with `status` and `code`; returns the message.
    async fn fails(&self, resp: reqwest::Response, status: u16, expected: &str) -> String {
        assert!(
            set_cookie(&resp, "flowlink_session").is_none(),
            "a failed sign-in set a session"
        );
        let (got, body) = support::read(resp).await;
        assert_eq!((got, code(&body)), (status, expected), "{body}");
        body["error"]["message"].as_str().unwrap_or("").to_string()
    }

    /// Every audit event as (kind, outcome, detail), oldest first.
    async fn audit(&self) -> Vec<(String, String, Value)> {
        sqlx::query("SELECT kind, outcome, detail FROM audit_events ORDER BY occurred_at, id")
            .fetch_all(self.server.store.pool())
            .await
            .expect("audit")
            .iter()
            .map(|r| {
                let detail: String = r.try_get("detail").expect("detail");
                (
                    r.try_get("kind").expect("kind"),
                    r.try_get("outcome").expect("outcome"),
                    serde_json::from_str(&detail).expect("json"),
                )
            })
            .collect()
    }

    async fn has_audit(&self, kind: &str, reason: Option<&str>) -> bool {
        self.audit()
            .await
            .iter()
            .any(|(k, _, d)| k == kind && reason.is_none_or(|r| d["reason"] == r))
    }
}

async fn assert_me(client: &TestClient, email: &str) {
    let (status, body) = client.get("/api/v1/me").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["user"]["email"], email);
}

async fn happy_path(backend: Backend, kind: &str, subject: &str) {
    let rig = rig(backend, kind, owner(subject)).await;
    let client = rig.signed_in().await;
    assert_me(&client, OWNER).await;
    let (_, sessions) = client.get("/api/v1/me/sessions").await;
    assert_eq!(
        sessions[0]["auth_method"],
        format!("oauth:{kind}"),
        "{sessions}"
    );
    let user = rig
        .server
        .store
        .user_by_email(OWNER)
        .await
        .unwrap()
        .unwrap();
    let links = rig
        .server
        .store
        .oauth_identities_of_user(&user.id)
        .await
        .unwrap();
    assert_eq!(links.len(), 1);
    assert_eq!(
        (links[0].provider.as_str(), links[0].subject.as_str()),
        (kind, subject)
    );
    assert!(rig.has_audit("auth.oauth_linked", None).await);
    let logins: Vec<_> = rig
        .audit()
        .await
        .into_iter()
        .filter(|(k, _, d)| k == "auth.login" && d["method"] == format!("oauth:{kind}"))
        .collect();
    assert_eq!(logins.len(), 1);

    // The link, not the e-mail address, identifies the person from now on.
    rig.provider.set_person(Person {
        subject: subject.into(),
        email: "renamed@elsewhere.test".into(),
        email_verified: true,
    });
    let again = rig.signed_in().await;
    assert_me(&again, OWNER).await;
    assert_eq!(
        rig.server
            .store
            .oauth_identities_of_user(&user.id)
            .await
            .unwrap()
            .len(),
        1
    );
    // No state is left behind.
    let left: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM oauth_states")
        .fetch_one(rig.server.store.pool())
        .await
        .unwrap();
    assert_eq!(left, 0);
}

async fn github_signs_in(backend: Backend) {
    happy_path(backend, "github", "583231").await;
}

async fn yandex_signs_in(backend: Backend) {
    happy_path(backend, "yandex", "1000034426").await;
}

async fn vk_signs_in(backend: Backend) {
    happy_path(backend, "vk", "77001234").await;
}

async fn oidc_signs_in(backend: Backend) {
    happy_path(backend, "oidc", "0b9d3c8e-sso-subject").await;
    // RS256 as well as ES256.
    let rig = rig(backend, "oidc", owner("rsa-person")).await;
    rig.provider.sign_with(Signer::Rs256);
    let client = rig.signed_in().await;
    assert_me(&client, OWNER).await;
}

async fn providers_are_listed_without_secrets(backend: Backend) {
    let rig = rig(backend, "github", owner("1")).await;
    let (status, body) = rig.server.client().get("/api/v1/auth/providers").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        json!([{"name": "github", "kind": "github", "display_name": "GitHub",
                "start_url": format!("{PUBLIC}/api/v1/auth/oauth/github/start")}])
    );
    assert!(!body.to_string().contains(&rig.provider.client_secret()));
    let (status, body) = rig
        .server
        .client()
        .get("/api/v1/auth/oauth/nope/start")
        .await;
    assert_eq!((status, code(&body)), (404, "not_found"), "{body}");
}

async fn authorization_request_is_complete(backend: Backend) {
    let rig = rig(backend, "oidc", owner("s")).await;
    let authorize = rig.start(&mut Browser::default()).await;
    let url = url::Url::parse(&authorize).unwrap();
    let q: std::collections::HashMap<String, String> = url.query_pairs().into_owned().collect();
    assert_eq!(q["response_type"], "code");
    assert_eq!(q["code_challenge_method"], "S256");
    assert_eq!(q["code_challenge"].len(), 43);
    assert_eq!(
        q["redirect_uri"],
        format!("{PUBLIC}/api/v1/auth/oauth/oidc/callback")
    );
    assert!(q["state"].len() >= 43 && q["nonce"].len() >= 32);
    assert_eq!(q["scope"], "openid email profile");
    // Only the hash of the state is stored.
    let stored: String = sqlx::query_scalar("SELECT state_hash FROM oauth_states")
        .fetch_one(rig.server.store.pool())
        .await
        .unwrap();
    assert_ne!(stored, q["state"]);
    assert_eq!(stored.len(), 64);
}

async fn forged_state_is_refused(backend: Backend) {
    let rig = rig(backend, "github", owner("1")).await;
    let mut browser = Browser::default();
    let authorize = rig.start(&mut browser).await;
    let back = rig.approve(&authorize).await;
    let mut url = url::Url::parse(&back).unwrap();
    let code_value = url
        .query_pairs()
        .find(|(k, _)| k == "code")
        .unwrap()
        .1
        .into_owned();
    url.query_pairs_mut()
        .clear()
        .append_pair("code", &code_value)
        .append_pair("state", "forged-state-value");
    let resp = rig.deliver(&browser, url.as_str()).await;
    rig.fails(resp, 400, "oauth_state_invalid").await;
    assert!(
        rig.has_audit("auth.login_failed", Some("state_unknown"))
            .await
    );
    // And with no state at all.
    url.query_pairs_mut()
        .clear()
        .append_pair("code", &code_value);
    let resp = rig.deliver(&browser, url.as_str()).await;
    rig.fails(resp, 400, "oauth_state_invalid").await;
    assert!(
        rig.has_audit("auth.login_failed", Some("state_missing"))
            .await
    );
}

async fn state_is_used_once(backend: Backend) {
    let rig = rig(backend, "github", owner("1")).await;
    let mut browser = Browser::default();
    let authorize = rig.start(&mut browser).await;
    let back = rig.approve(&authorize).await;
    assert_eq!(rig.deliver(&browser, &back).await.status(), 303);
    let resp = rig.deliver(&browser, &back).await;
    let message = rig.fails(resp, 400, "oauth_state_invalid").await;
    assert!(message.contains("start the sign-in again"), "{message}");
}

async fn authorization_code_is_used_once(backend: Backend) {
    let rig = rig(backend, "yandex", owner("42")).await;
    let mut browser = Browser::default();
    let authorize = rig.start(&mut browser).await;
    let back = rig.approve(&authorize).await;
    assert_eq!(rig.deliver(&browser, &back).await.status(), 303);
    // The code again, under a fresh, valid state of the same browser.
    let old = url::Url::parse(&back).unwrap();
    let old_code = old
        .query_pairs()
        .find(|(k, _)| k == "code")
        .unwrap()
        .1
        .into_owned();
    let fresh = url::Url::parse(&rig.approve(&rig.start(&mut browser).await).await).unwrap();
    let fresh_state = fresh
        .query_pairs()
        .find(|(k, _)| k == "state")
        .unwrap()
        .1
        .into_owned();
    let mut replay = fresh.clone();
    replay
        .query_pairs_mut()
        .clear()
        .append_pair("code", &old_code)
        .append_pair("state", &fresh_state);
    let resp = rig.deliver(&browser, replay.as_str()).await;
    let message = rig.fails(resp, 400, "oauth_refused").await;
    assert!(
        message.contains("invalid_grant") && message.contains("already used"),
        "{message}"
    );
    assert!(
        rig.has_audit("auth.login_failed", Some("provider_refused"))
            .await
    );
}

async fn id_token_fails(
    backend: Backend,
    tweak: impl Fn(&mut Value) + Send + Sync + 'static,
    signer: Signer,
    expect: &str,
) {
    let rig = rig(backend, "oidc", owner("sub-1")).await;
    rig.provider.tweak_id_token(Some(Box::new(tweak)));
    rig.provider.sign_with(signer);
    let resp = rig.sign_in().await;
    let message = rig.fails(resp, 401, "oauth_id_token_invalid").await;
    assert!(
        message.contains(expect),
        "expected `{expect}` in: {message}"
    );
    assert!(
        rig.has_audit("auth.login_failed", Some("id_token_invalid"))
            .await
    );
    assert!(
        rig.server
            .store
            .oauth_identity("oidc", "sub-1")
            .await
            .unwrap()
            .is_none()
    );
}

async fn id_token_for_another_audience_is_refused(backend: Backend) {
    id_token_fails(
        backend,
        |c| c["aud"] = json!("someone-else"),
        Signer::Es256,
        "another client",
    )
    .await;
    // Several audiences need `azp` naming us.
    id_token_fails(
        backend,
        |c| c["aud"] = json!(["oidc-client", "other"]),
        Signer::Es256,
        "no `azp`",
    )
    .await;
    id_token_fails(
        backend,
        |c| {
            c["aud"] = json!(["oidc-client", "other"]);
            c["azp"] = json!("other");
        },
        Signer::Es256,
        "`azp` is not our client_id",
    )
    .await;
}

async fn id_token_with_wrong_nonce_is_refused(backend: Backend) {
    id_token_fails(
        backend,
        |c| c["nonce"] = json!("not-the-nonce"),
        Signer::Rs256,
        "nonce",
    )
    .await;
}

async fn expired_id_token_is_refused(backend: Backend) {
    id_token_fails(
        backend,
        |c| {
            let iat = c["iat"].as_u64().unwrap();
            c["iat"] = json!(iat - 400);
            c["exp"] = json!(iat - 120);
        },
        Signer::Es256,
        "expired",
    )
    .await;
}

async fn id_token_with_bad_signature_is_refused(backend: Backend) {
    id_token_fails(backend, |_| {}, Signer::Forged, "signature").await;
}

async fn id_token_from_another_issuer_is_refused(backend: Backend) {
    id_token_fails(
        backend,
        |c| c["iss"] = json!("https://evil.example"),
        Signer::Es256,
        "issuer",
    )
    .await;
}

async fn unverified_email_is_refused(backend: Backend) {
    for kind in ["oidc", "github"] {
        let rig = rig(
            backend,
            kind,
            Person {
                subject: "9".into(),
                email: OWNER.into(),
                email_verified: false,
            },
        )
        .await;
        let resp = rig.sign_in().await;
        let message = rig.fails(resp, 403, "email_unverified").await;
        assert!(
            message.contains("did not confirm an e-mail address"),
            "{message}"
        );
        assert!(
            rig.has_audit("auth.login_failed", Some("email_unverified"))
                .await
        );
        let user = rig
            .server
            .store
            .user_by_email(OWNER)
            .await
            .unwrap()
            .unwrap();
        assert!(
            rig.server
                .store
                .oauth_identities_of_user(&user.id)
                .await
                .unwrap()
                .is_empty()
        );
    }
}

async fn unknown_person_gets_no_account(backend: Backend) {
    let rig = rig(
        backend,
        "vk",
        Person {
            subject: "5".into(),
            email: "stranger@else.test".into(),
            email_verified: true,
        },
    )
    .await;
    let resp = rig.sign_in().await;
    let message = rig.fails(resp, 403, "no_account").await;
    assert!(message.contains("ask an admin"), "{message}");
    assert!(
        rig.server
            .store
            .user_by_email("stranger@else.test")
            .await
            .unwrap()
            .is_none()
    );
    assert!(rig.has_audit("auth.login_failed", Some("no_account")).await);
}

async fn binding_cookie_is_required(backend: Backend) {
    let rig = rig(backend, "github", owner("1")).await;
    let mut browser = Browser::default();
    let authorize = rig.start(&mut browser).await;
    let back = rig.approve(&authorize).await;
    // Another browser (no cookie) gets the callback: login CSRF.
    let resp = rig.deliver(&Browser::default(), &back).await;
    rig.fails(resp, 400, "oauth_state_invalid").await;
    assert!(
        rig.has_audit("auth.login_failed", Some("binding_cookie_missing"))
            .await
    );

    // Another browser with its own cookie.
    let mut other = Browser::default();
    let authorize = rig.start(&mut browser).await;
    let back = rig.approve(&authorize).await;
    rig.start(&mut other).await;
    let resp = rig.deliver(&other, &back).await;
    rig.fails(resp, 400, "oauth_state_invalid").await;
    assert!(
        rig.has_audit("auth.login_failed", Some("binding_cookie_mismatch"))
            .await
    );
}

async fn expired_or_foreign_state_is_refused(backend: Backend) {
    let github = FakeProvider::start("github", owner("1")).await;
    let yandex = FakeProvider::start("yandex", owner("2")).await;
    let (gc, yc) = (github.config(), yandex.config());
    let server = TestServer::start_with(backend, move |c| {
        c.public_url = PUBLIC.into();
        c.oauth.insert("github".into(), gc);
        c.oauth.insert("yandex".into(), yc);
    })
    .await;
    server.owner().await;
    let rig = Rig {
        server,
        provider: github,
        name: "github".into(),
        http: reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap(),
    };
    // A state of github delivered to yandex's callback.
    let mut browser = Browser::default();
    let back = rig.approve(&rig.start(&mut browser).await).await;
    let resp = rig
        .deliver(&browser, &back.replace("/oauth/github/", "/oauth/yandex/"))
        .await;
    rig.fails(resp, 400, "oauth_state_invalid").await;
    assert!(
        rig.has_audit("auth.login_failed", Some("state_other_provider"))
            .await
    );
    // An expired state.
    let back = rig.approve(&rig.start(&mut browser).await).await;
    sqlx::query("UPDATE oauth_states SET expires_at = 1")
        .execute(rig.server.store.pool())
        .await
        .unwrap();
    let resp = rig.deliver(&browser, &back).await;
    rig.fails(resp, 400, "oauth_state_invalid").await;
    assert!(
        rig.has_audit("auth.login_failed", Some("state_expired"))
            .await
    );
    drop(yandex);
}

async fn provider_error_is_reported(backend: Backend) {
    let rig = rig(backend, "github", owner("1")).await;
    let mut browser = Browser::default();
    let authorize = rig.start(&mut browser).await;
    let state = url::Url::parse(&authorize)
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == "state")
        .unwrap()
        .1
        .into_owned();
    let back = format!(
        "{PUBLIC}/api/v1/auth/oauth/github/callback?error=access_denied&error_description=The+user+cancelled&state={state}"
    );
    let resp = rig.deliver(&browser, &back).await;
    let message = rig.fails(resp, 400, "oauth_denied").await;
    assert!(
        message.contains("access_denied") && message.contains("The user cancelled"),
        "{message}"
    );
    // The state is spent.
    let left: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM oauth_states")
        .fetch_one(rig.server.store.pool())
        .await
        .unwrap();
    assert_eq!(left, 0);
}

async fn second_factor_is_still_required(backend: Backend) {
    let rig = rig(backend, "oidc", owner("totp-person")).await;
    // The owner turns on an authenticator app.
    let owner_client = rig.server.client().login(OWNER, support::PASSWORD).await;
    let (status, setup) = owner_client.post("/api/v1/me/totp/setup", json!({})).await;
    assert_eq!(status, 200, "{setup}");
    let secret = setup["secret"].as_str().unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let code_now = flowlink_control::auth::totp::code_at(secret, now).unwrap();
    let (status, codes) = owner_client
        .post("/api/v1/me/totp/enable", json!({"code": code_now}))
        .await;
    assert_eq!(status, 200, "{codes}");

    let mut client = rig.signed_in().await;
    let (status, body) = client.get("/api/v1/me").await;
    assert_eq!((status, code(&body)), (401, "second_factor_due"), "{body}");
    let user = rig
        .server
        .store
        .user_by_email(OWNER)
        .await
        .unwrap()
        .unwrap();
    let pending: Vec<_> = rig
        .server
        .store
        .list_sessions(&user.id)
        .await
        .unwrap()
        .into_iter()
        .filter(|s| s.auth_method == "oauth:oidc")
        .collect();
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].stage, "totp");
    assert!(rig.has_audit("auth.oauth_ok", None).await);
    assert!(
        !rig.audit()
            .await
            .iter()
            .any(|(k, _, d)| k == "auth.login" && d["method"] == "oauth:oidc")
    );
    // The redirected page learns its CSRF token from the session itself.
    let (status, session) = client.get("/api/v1/auth/session").await;
    assert_eq!(
        (status, session["stage"].as_str()),
        (200, Some("totp")),
        "{session}"
    );
    assert_eq!(
        session["csrf_token"].as_str(),
        Some(pending[0].csrf_token.as_str())
    );
    client.csrf = session["csrf_token"].as_str().map(str::to_string);
    // The second factor completes it.
    let recovery = codes["recovery_codes"][0].as_str().unwrap();
    let resp = client
        .request(reqwest::Method::POST, "/api/v1/auth/totp")
        .json(&json!({"recovery_code": recovery}))
        .send()
        .await
        .unwrap();
    let (status, body) = client.absorb(resp).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["stage"], "complete");
    assert_me(&client, OWNER).await;
    // …and the completed session still says how the first step was made.
    let (_, sessions) = client.get("/api/v1/me/sessions").await;
    let current = sessions
        .as_array()
        .and_then(|l| l.iter().find(|s| s["current"] == true))
        .cloned()
        .unwrap_or_default();
    assert_eq!(current["auth_method"], "oauth:oidc", "{sessions}");
}

async fn disabled_or_locked_account_is_refused(backend: Backend) {
    let rig = rig(backend, "github", owner("7")).await;
    sqlx::query("UPDATE users SET disabled = 1")
        .execute(rig.server.store.pool())
        .await
        .unwrap();
    let resp = rig.sign_in().await;
    rig.fails(resp, 403, "account_disabled").await;
    sqlx::query("UPDATE users SET disabled = 0, locked_until = $1")
        .bind(flowlink_control::store::now_us() + 600_000_000)
        .execute(rig.server.store.pool())
        .await
        .unwrap();
    let resp = rig.sign_in().await;
    rig.fails(resp, 403, "account_locked").await;
}

async fn two_tabs_share_one_binding(backend: Backend) {
    let rig = rig(backend, "github", owner("1")).await;
    let mut browser = Browser::default();
    let first = rig.approve(&rig.start(&mut browser).await).await;
    let binding = browser.binding.clone();
    let second = rig.approve(&rig.start(&mut browser).await).await;
    assert_eq!(browser.binding, binding, "the binding cookie is reused");
    assert_eq!(rig.deliver(&browser, &first).await.status(), 303);
    assert_eq!(rig.deliver(&browser, &second).await.status(), 303);
}

both!(
    github_signs_in,
    yandex_signs_in,
    vk_signs_in,
    oidc_signs_in,
    providers_are_listed_without_secrets,
    authorization_request_is_complete,
    forged_state_is_refused,
    state_is_used_once,
    authorization_code_is_used_once,
    id_token_for_another_audience_is_refused,
    id_token_with_wrong_nonce_is_refused,
    expired_id_token_is_refused,
    id_token_with_bad_signature_is_refused,
    id_token_from_another_issuer_is_refused,
    unverified_email_is_refused,
    unknown_person_gets_no_account,
    binding_cookie_is_required,
    expired_or_foreign_state_is_refused,
    provider_error_is_reported,
    second_factor_is_still_required,
    disabled_or_locked_account_is_refused,
    two_tabs_share_one_binding,
);
