//! The web UI's route table, walked like `tenancy.rs` walks the API's: nobody signed out reaches
//! a page that is not public (they are sent to sign in), no signed-in person changes anything
//! without the CSRF form field, nobody reaches a page of another organisation, and every page
//! answer carries the content security policy. A page added to `ui_routes()` is covered without
//! touching this file.

mod support;

use axum::http::Method;
use flowlink_control::api::Access;
use flowlink_control::config::OAuthProviderConfig;
use flowlink_control::store::Backend;
use flowlink_control::ui::headers::CONTENT_SECURITY_POLICY;
use flowlink_control::ui::ui_routes;
use support::*;

both!(
    a_pending_sign_in_finishes_with_a_recovery_code,
    pages_get_hsts_behind_a_trusted_tls_proxy,
    sign_in_shows_a_button_per_configured_provider,
    signed_out_people_are_sent_to_sign_in,
    state_changes_need_the_csrf_field,
    other_organisations_pages_are_not_found
);

/// The route's path with `{org}` = `org` and every other parameter naming nothing.
fn fill(path: &str, org: &str) -> String {
    path.split('/')
        .map(|seg| match seg {
            "{org}" => org.to_string(),
            s if s.starts_with('{') => "does-not-exist".to_string(),
            s => s.to_string(),
        })
        .collect::<Vec<_>>()
        .join("/")
}

fn to_reqwest(m: &Method) -> reqwest::Method {
    reqwest::Method::from_bytes(m.as_str().as_bytes()).expect("method")
}

fn csp(resp: &reqwest::Response) -> String {
    resp.headers()
        .get(reqwest::header::CONTENT_SECURITY_POLICY)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string()
}

fn location(resp: &reqwest::Response) -> String {
    resp.headers()
        .get(reqwest::header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string()
}

async fn a_pending_sign_in_finishes_with_a_recovery_code(backend: Backend) {
    let server = TestServer::start(backend).await;
    let owner = server.owner().await;
    let (_, setup) = owner
        .post("/api/v1/me/totp/setup", serde_json::json!({}))
        .await;
    let secret = setup["secret"].as_str().expect("secret").to_string();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let code = flowlink_control::auth::totp::code_at(&secret, now).expect("code");
    let (status, body) = owner
        .post("/api/v1/me/totp/enable", serde_json::json!({"code": code}))
        .await;
    assert_eq!(status, 200, "{body}");
    let recovery = body["recovery_codes"][0]
        .as_str()
        .expect("a code")
        .to_string();

    let http = server.client().http;
    let password_step = http
        .post(format!("{}/ui/sign-in", server.base))
        .form(&[("email", "owner@acme.test"), ("password", PASSWORD)])
        .send()
        .await
        .expect("POST");
    assert_eq!(password_step.status(), 303);
    assert_eq!(location(&password_step), "/ui/sign-in/code");
    let pending = session_cookie(&password_step).expect("session cookie");
    // Half signed in, every other page leads to the code step.
    for path in ["/ui/", "/ui/account"] {
        let resp = http
            .get(format!("{}{path}", server.base))
            .header(reqwest::header::COOKIE, &pending)
            .send()
            .await
            .expect("GET");
        assert_eq!(resp.status(), 303, "{path}");
        assert_eq!(location(&resp), "/ui/sign-in/code", "{path}");
    }
    let page = http
        .get(format!("{}/ui/sign-in/code?recovery=1", server.base))
        .header(reqwest::header::COOKIE, &pending)
        .send()
        .await
        .expect("GET")
        .text()
        .await
        .expect("body");
    assert!(page.contains(r#"<label for="recovery_code">"#), "{page}");
    let csrf = page
        .split(r#"name="csrf_token" value=""#)
        .nth(1)
        .and_then(|s| s.split('"').next())
        .expect("CSRF field")
        .to_string();
    let wrong = http
        .post(format!("{}/ui/sign-in/code", server.base))
        .header(reqwest::header::COOKIE, &pending)
        .form(&[
            ("csrf_token", csrf.as_str()),
            ("recovery_code", "aaaa-bbbb-cccc-dddd"),
        ])
        .send()
        .await
        .expect("POST");
    assert_eq!(wrong.status(), 401);
    let body = wrong.text().await.expect("body");
    assert!(
        body.contains(r#"id="code-error""#) && body.contains("recovery code is wrong"),
        "{body}"
    );
    let done = http
        .post(format!("{}/ui/sign-in/code", server.base))
        .header(reqwest::header::COOKIE, &pending)
        .form(&[
            ("csrf_token", csrf.as_str()),
            ("recovery_code", recovery.as_str()),
        ])
        .send()
        .await
        .expect("POST");
    assert_eq!(done.status(), 303);
    assert_eq!(location(&done), "/ui/");
    let complete = session_cookie(&done).expect("session cookie");
    assert_ne!(
        complete, pending,
        "a new session for the new privilege level"
    );
    let home = http
        .get(format!("{}/ui/", server.base))
        .header(reqwest::header::COOKIE, &complete)
        .send()
        .await
        .expect("GET");
    assert_eq!(home.status(), 200);
    // The pending session is gone.
    let old = http
        .get(format!("{}/ui/sign-in/code", server.base))
        .header(reqwest::header::COOKIE, &pending)
        .send()
        .await
        .expect("GET");
    assert_eq!(location(&old), "/ui/sign-in");
    server.stop().await;
}

async fn pages_get_hsts_behind_a_trusted_tls_proxy(backend: Backend) {
    let server = TestServer::start_with(backend, |c| {
        c.trusted_proxies = vec!["127.0.0.1".parse().expect("net")];
    })
    .await;
    let get = |proto: &'static str| {
        server
            .client()
            .request(reqwest::Method::GET, "/ui/sign-in")
            .header("x-forwarded-proto", proto)
            .header("x-forwarded-for", "198.51.100.7")
            .send()
    };
    let tls = get("https").await.expect("GET");
    assert_eq!(tls.status(), 200);
    assert_eq!(csp(&tls), CONTENT_SECURITY_POLICY);
    assert_eq!(
        tls.headers()
            .get(reqwest::header::STRICT_TRANSPORT_SECURITY)
            .and_then(|v| v.to_str().ok()),
        Some("max-age=31536000; includeSubDomains")
    );
    let plain = get("http").await.expect("GET");
    assert!(
        plain
            .headers()
            .get(reqwest::header::STRICT_TRANSPORT_SECURITY)
            .is_none()
    );
    server.stop().await;
}

fn provider(kind: &str, display_name: Option<&str>) -> OAuthProviderConfig {
    let toml = format!(
        "kind = \"{kind}\"\nclient_id = \"id-{kind}\"\nclient_secret = \"s\"\n{}",
        display_name.map_or(String::new(), |d| format!("display_name = \"{d}\"\n"))
    );
    toml::from_str(&toml).expect("provider config")
}

async fn sign_in_shows_a_button_per_configured_provider(backend: Backend) {
    // None configured: no buttons.
    let plain = TestServer::start(backend).await;
    let page = plain
        .client()
        .request(reqwest::Method::GET, "/ui/sign-in")
        .send()
        .await
        .expect("GET")
        .text()
        .await
        .expect("body");
    assert!(!page.contains("Sign in with"), "{page}");
    plain.stop().await;

    let server = TestServer::start_with(backend, |c| {
        c.oauth.insert("github".into(), provider("github", None));
        c.oauth
            .insert("corp".into(), provider("oidc", Some("Acme SSO")));
    })
    .await;
    let page = server
        .client()
        .request(reqwest::Method::GET, "/ui/sign-in")
        .send()
        .await
        .expect("GET")
        .text()
        .await
        .expect("body");
    assert!(
        page.contains(r#"href="/api/v1/auth/oauth/github/start">Sign in with GitHub</a>"#),
        "{page}"
    );
    assert!(
        page.contains(r#"href="/api/v1/auth/oauth/corp/start">Sign in with Acme SSO</a>"#),
        "{page}"
    );
    assert!(!page.contains("Yandex") && !page.contains("VK"), "{page}");
    server.stop().await;
}

async fn signed_out_people_are_sent_to_sign_in(backend: Backend) {
    let server = TestServer::start(backend).await;
    let _owner = server.owner().await;
    let anonymous = server.client();
    for route in ui_routes().iter().filter(|r| r.access != Access::Public) {
        let path = fill(route.path, "acme");
        let resp = anonymous
            .request(to_reqwest(&route.method), &path)
            .form(&[("csrf_token", "x")])
            .send()
            .await
            .expect("request");
        assert_eq!(resp.status(), 303, "{route:?}");
        assert_eq!(location(&resp), "/ui/sign-in", "{route:?}");
        assert_eq!(csp(&resp), CONTENT_SECURITY_POLICY, "{route:?}");
    }
    server.stop().await;
}

async fn state_changes_need_the_csrf_field(backend: Backend) {
    let server = TestServer::start(backend).await;
    let owner = server.owner().await;
    // The page client sends the cookie but neither the header nor the field.
    let mut page_client = owner.clone();
    page_client.csrf = None;
    // The code step belongs to a sign-in still waiting for it; a complete one is sent home.
    let code_step = page_client
        .request(reqwest::Method::POST, "/ui/sign-in/code")
        .form(&[("code", "123456")])
        .send()
        .await
        .expect("POST");
    assert_eq!(code_step.status(), 303);
    assert_eq!(location(&code_step), "/ui/");
    let posts = ui_routes().into_iter().filter(|r| {
        !matches!(r.access, Access::Public | Access::SecondFactorDue) && r.method != Method::GET
    });
    let mut checked = 0;
    for route in posts {
        let path = fill(route.path, "acme");
        for form in [vec![], vec![("csrf_token", "wrong")]] {
            let resp = page_client
                .request(to_reqwest(&route.method), &path)
                .form(&form)
                .send()
                .await
                .expect("request");
            assert_eq!(resp.status(), 403, "{route:?} with {form:?}");
            assert_eq!(csp(&resp), CONTENT_SECURITY_POLICY, "{route:?}");
            let body = resp.text().await.expect("body");
            assert!(body.contains("out of date"), "{route:?}: {body}");
        }
        checked += 1;
    }
    assert!(checked >= 5, "only {checked} state-changing pages");
    // Public forms too refuse a post the browser marks as cross-site (no login CSRF).
    for path in ["/ui/sign-in", "/ui/setup"] {
        let resp = server
            .client()
            .request(reqwest::Method::POST, path)
            .header("sec-fetch-site", "cross-site")
            .form(&[("email", "owner@acme.test"), ("password", PASSWORD)])
            .send()
            .await
            .expect("POST");
        assert_eq!(resp.status(), 403, "{path}");
        assert!(resp.headers().get(reqwest::header::SET_COOKIE).is_none());
    }
    // Signed in, the sign-in page sends you home.
    let resp = page_client
        .request(reqwest::Method::GET, "/ui/sign-in")
        .send()
        .await
        .expect("GET");
    assert_eq!(resp.status(), 303);
    assert_eq!(location(&resp), "/ui/");
    // And the session is still whole: the account page opens.
    let resp = page_client
        .request(reqwest::Method::GET, "/ui/account")
        .send()
        .await
        .expect("GET");
    assert_eq!(resp.status(), 200);
    server.stop().await;
}

async fn other_organisations_pages_are_not_found(backend: Backend) {
    let server = TestServer::start(backend).await;
    let _owner = server.owner().await;
    let stranger = server.other_org("globex").await;
    for route in ui_routes()
        .iter()
        .filter(|r| matches!(r.access, Access::Org(_)))
    {
        let path = fill(route.path, "acme");
        let mut req = stranger.request(to_reqwest(&route.method), &path);
        if let Some(csrf) = &stranger.csrf {
            req = req.form(&[("csrf_token", csrf.as_str())]);
        }
        let resp = req.send().await.expect("request");
        assert_eq!(resp.status(), 404, "{route:?}");
        assert_eq!(csp(&resp), CONTENT_SECURITY_POLICY, "{route:?}");
        let body = resp.text().await.expect("body");
        assert!(body.contains("<h1>Not found</h1>"), "{route:?}: {body}");
    }
    server.stop().await;
}
