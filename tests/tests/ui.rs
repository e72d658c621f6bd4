//! The web UI in a real headless Chromium (Debian's `chromium` and `chromium-driver`, driven by
//! `flowlink_e2e::browser`) against the real `flowlink-control` binary: first-run owner
//! creation, sign-out, sign-in with a password and then with a password and a TOTP code, two-factor
//! set-up on the account page, the sessions list with revoke; and, over plain HTTP, the pages'
//! security headers and the CSRF check on form posts. Screenshots of each page are saved under
//! `target/ui-screenshots/`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use flowlink_e2e::browser::Browser;
use flowlink_e2e::link::Control;
use reqwest::blocking::{Client, Response};
use reqwest::header;

const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; frame-ancestors 'none'; form-action 'self'; base-uri 'none'";
const EMAIL: &str = "olga@example.com";
const PASSWORD: &str = "correct horse battery staple";

fn http() -> Client {
    Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(30))
        .build()
        .expect("HTTP client")
}

fn header(r: &Response, name: header::HeaderName) -> String {
    r.headers()
        .get(&name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

/// The `flowlink_session=…` pair of a response's `Set-Cookie`.
fn session_cookie(r: &Response) -> String {
    r.headers()
        .get_all(header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with("flowlink_session="))
        .and_then(|v| v.split(';').next())
        .unwrap_or_else(|| panic!("no session cookie in {:?}", r.headers()))
        .to_owned()
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

/// The RFC 6238 code of `secret` (base32) at `unix_secs`.
fn totp_code(secret: &str, unix_secs: u64) -> String {
    let bytes = totp_rs::Secret::try_from_base32(secret).expect("base32 secret");
    totp_rs::Builder::new()
        .with_secret(bytes)
        .build()
        .expect("TOTP")
        .generate(unix_secs)
        .to_string()
}

/// Waits for the next 30-second step (a code's step is burnt once accepted) and returns its code.
fn next_code(secret: &str, used_at: u64) -> String {
    while unix_now() / 30 == used_at / 30 {
        std::thread::sleep(Duration::from_millis(250));
    }
    totp_code(secret, unix_now())
}

#[test]
fn pages_carry_the_security_headers_and_forms_need_the_csrf_field() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = format!("sqlite://{}/control.db", dir.path().display());
    let control = Control::start(&db, dir.path());
    let http = http();

    let root = http.get(format!("{}/", control.url)).send().expect("GET /");
    assert_eq!(root.status(), 303);
    assert_eq!(header(&root, header::LOCATION), "/ui/");

    let home = http
        .get(format!("{}/ui/", control.url))
        .send()
        .expect("GET /ui/");
    assert_eq!(
        home.status(),
        303,
        "signed out, the start page sends you to sign in"
    );
    assert_eq!(header(&home, header::LOCATION), "/ui/sign-in");

    let page = http
        .get(format!("{}/ui/sign-in", control.url))
        .send()
        .expect("GET /ui/sign-in");
    assert_eq!(page.status(), 200);
    assert_eq!(header(&page, header::CONTENT_SECURITY_POLICY), CSP);
    assert_eq!(header(&page, header::X_CONTENT_TYPE_OPTIONS), "nosniff");
    assert_eq!(header(&page, header::REFERRER_POLICY), "no-referrer");
    assert_eq!(header(&page, header::CACHE_CONTROL), "no-store");
    assert_eq!(
        header(&page, header::STRICT_TRANSPORT_SECURITY),
        "",
        "no HSTS on plain HTTP"
    );
    let html = page.text().expect("body");
    assert!(
        !html.contains("<script>") && !html.contains("style="),
        "nothing inline:\n{html}"
    );
    let css_href = html
        .split("rel=\"stylesheet\" href=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .expect("a stylesheet link")
        .to_owned();
    assert!(css_href.starts_with("/ui/static/app.css?v="), "{css_href}");
    let css = http
        .get(format!("{}{css_href}", control.url))
        .send()
        .expect("GET css");
    assert_eq!(css.status(), 200);
    assert_eq!(
        header(&css, header::CONTENT_TYPE),
        "text/css; charset=utf-8"
    );
    assert_eq!(
        header(&css, header::CACHE_CONTROL),
        "public, max-age=31536000, immutable"
    );

    // Behind a trusted proxy that terminated TLS, pages get HSTS; it is decided by the same
    // client logic as the API (here the peer is not trusted, so the header is ignored).
    let forwarded = http
        .get(format!("{}/ui/sign-in", control.url))
        .header("x-forwarded-proto", "https")
        .send()
        .expect("GET");
    assert_eq!(header(&forwarded, header::STRICT_TRANSPORT_SECURITY), "");

    // An unknown page is an HTML 404 with the same headers.
    let unknown = http
        .get(format!("{}/ui/no-such-page", control.url))
        .send()
        .expect("GET");
    assert_eq!(unknown.status(), 404);
    assert_eq!(header(&unknown, header::CONTENT_SECURITY_POLICY), CSP);
    assert!(header(&unknown, header::CONTENT_TYPE).starts_with("text/html"));

    // First-run set-up with a form post, which signs the owner in.
    let token = control.setup_token();
    let created = http
        .post(format!("{}/ui/setup", control.url))
        .form(&[
            ("token", token.as_str()),
            ("email", EMAIL),
            ("display_name", "Olga"),
            ("password", PASSWORD),
            ("org_name", "Acme"),
            ("org_slug", "acme"),
        ])
        .send()
        .expect("POST /ui/setup");
    assert_eq!(created.status(), 303);
    assert_eq!(header(&created, header::LOCATION), "/ui/");
    let cookie = session_cookie(&created);

    let account = http
        .get(format!("{}/ui/account", control.url))
        .header(header::COOKIE, &cookie)
        .send()
        .expect("GET /ui/account");
    assert_eq!(account.status(), 200);
    assert_eq!(header(&account, header::CONTENT_SECURITY_POLICY), CSP);
    let html = account.text().expect("body");
    let csrf = html
        .split("name=\"csrf_token\" value=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .expect("a CSRF field")
        .to_owned();
    let session_id = html
        .split("/ui/account/sessions/")
        .nth(1)
        .and_then(|s| s.split('/').next())
        .expect("a session to revoke")
        .to_owned();
    let revoke = format!("{}/ui/account/sessions/{session_id}/revoke", control.url);

    // Without the field, with a wrong one, and from another site: refused, as a page.
    for (what, form, site) in [
        ("no field", vec![], None),
        ("wrong field", vec![("csrf_token", "not-the-token")], None),
        (
            "cross-site",
            vec![("csrf_token", csrf.as_str())],
            Some("cross-site"),
        ),
    ] {
        let mut req = http
            .post(&revoke)
            .header(header::COOKIE, &cookie)
            .form(&form);
        if let Some(site) = site {
            req = req.header("sec-fetch-site", site);
        }
        let refused = req.send().expect("POST");
        assert_eq!(refused.status(), 403, "{what}");
        assert_eq!(header(&refused, header::CONTENT_SECURITY_POLICY), CSP);
        assert!(
            header(&refused, header::CONTENT_TYPE).starts_with("text/html"),
            "{what}"
        );
        let body = refused.text().expect("body");
        assert!(
            body.contains("out of date") || body.contains("another site"),
            "{what}: {body}"
        );
    }
    // The session survived all three.
    let still = http
        .get(format!("{}/ui/account", control.url))
        .header(header::COOKIE, &cookie)
        .send()
        .expect("GET");
    assert_eq!(still.status(), 200);

    // With the field, the same post works (and ends this very session).
    let done = http
        .post(&revoke)
        .header(header::COOKIE, &cookie)
        .form(&[("csrf_token", csrf.as_str())])
        .send()
        .expect("POST");
    assert_eq!(done.status(), 303);
    assert_eq!(header(&done, header::LOCATION), "/ui/sign-in");
    let gone = http
        .get(format!("{}/ui/account", control.url))
        .header(header::COOKIE, &cookie)
        .send()
        .expect("GET");
    assert_eq!(gone.status(), 303);
}

#[test]
fn owner_signs_up_signs_in_and_turns_on_two_factor_in_a_browser() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = format!("sqlite://{}/control.db", dir.path().display());
    let control = Control::start(&db, dir.path());
    let url = &control.url;
    let b = Browser::start("owner");

    // The first-run link the server printed.
    b.goto(&format!("{url}/ui/setup?token={}", control.setup_token()));
    b.wait_path(&format!("/ui/setup?token={}", control.setup_token()));
    b.screenshot("setup");
    // A mistake is shown next to its field.
    b.fill("#display_name", "Olga");
    b.fill("#email", "not an address");
    b.fill("#password", PASSWORD);
    b.fill("#org_name", "Acme");
    b.fill("#org_slug", "acme");
    b.click("form[action='/ui/setup'] button[type=submit]");
    let error = b.text("#email-error");
    assert!(error.contains("not an e-mail address"), "{error}");
    assert_eq!(
        b.attribute("#email", "aria-invalid").as_deref(),
        Some("true")
    );
    assert_eq!(
        b.attribute("#email", "aria-describedby").as_deref(),
        Some("email-hint email-error")
    );
    b.screenshot("setup-error");
    b.fill("#email", EMAIL);
    b.fill("#password", PASSWORD);
    b.click("form[action='/ui/setup'] button[type=submit]");
    b.wait_path("/ui/");
    assert!(b.text("#orgs").contains("Acme"), "{}", b.text("main"));
    b.screenshot("home");

    b.click("form[action='/ui/sign-out'] button");
    b.wait_path("/ui/sign-in");
    b.screenshot("sign-in");

    // A wrong password is said next to the form, accessibly.
    b.fill("#email", EMAIL);
    b.fill("#password", "not the password at all");
    b.click("form[action='/ui/sign-in'] button[type=submit]");
    assert!(
        b.text("#sign-in-error")
            .contains("Wrong e-mail address or password")
    );
    assert_eq!(
        b.attribute("#password", "aria-describedby").as_deref(),
        Some("sign-in-error")
    );
    b.screenshot("sign-in-error");
    b.fill("#password", PASSWORD);
    b.click("form[action='/ui/sign-in'] button[type=submit]");
    b.wait_path("/ui/");

    // A second session elsewhere (plain HTTP), listed on the account page and revoked there.
    let http = http();
    let other = http
        .post(format!("{url}/ui/sign-in"))
        .form(&[("email", EMAIL), ("password", PASSWORD)])
        .send()
        .expect("POST /ui/sign-in");
    assert_eq!(other.status(), 303);
    let other_cookie = session_cookie(&other);
    b.goto(&format!("{url}/ui/account"));
    assert_eq!(b.find_all("#sessions tbody tr").len(), 2);
    b.screenshot("account-two-sessions");
    b.click("#sessions tbody tr:not(.current) button");
    b.wait_count("#sessions tbody tr", 1);
    b.wait_path("/ui/account");
    let revoked = http
        .get(format!("{url}/ui/account"))
        .header(header::COOKIE, &other_cookie)
        .send()
        .expect("GET");
    assert_eq!(revoked.status(), 303, "the revoked session is signed out");

    // A wrong current password is said next to its field.
    b.fill("#current_password", "not the password at all");
    b.fill("#new_password", "another long passphrase");
    b.click("form[action='/ui/account/password'] button[type=submit]");
    assert!(
        b.text("#current_password-error")
            .contains("current password is wrong"),
        "{}",
        b.text("main")
    );
    assert_eq!(
        b.attribute("#current_password", "aria-invalid").as_deref(),
        Some("true")
    );
    b.screenshot("account-password-error");

    // Two-factor set-up: QR code, key, code, recovery codes shown once.
    b.click("#totp-setup");
    b.wait_path("/ui/account/totp/setup");
    let src = b.attribute("img.qr", "src").unwrap_or_default();
    assert!(src.starts_with("data:image/png;base64,"), "{src}");
    let secret = b.text("#totp-secret");
    b.screenshot("totp-setup");
    b.fill("#code", "000000");
    b.click("form[action='/ui/account/totp/enable'] button[type=submit]");
    assert!(
        b.text("#code-error").contains("wrong"),
        "{}",
        b.text("#code-error")
    );
    b.screenshot("totp-setup-error");
    let enabled_at = unix_now();
    b.fill("#code", &totp_code(&secret, enabled_at));
    b.click("form[action='/ui/account/totp/enable'] button[type=submit]");
    b.wait_path("/ui/account/totp/enable");
    b.wait_count("#recovery-codes li", 10);
    b.screenshot("recovery-codes");
    b.goto(&format!("{url}/ui/account"));
    assert!(
        b.text("#totp-status").starts_with("On"),
        "{}",
        b.text("#totp-status")
    );

    // Sign in again: password, then the code step.
    b.click("form[action='/ui/sign-out'] button");
    b.wait_path("/ui/sign-in");
    b.fill("#email", EMAIL);
    b.fill("#password", PASSWORD);
    b.click("form[action='/ui/sign-in'] button[type=submit]");
    b.wait_path("/ui/sign-in/code");
    b.screenshot("sign-in-code");
    b.fill("#code", &next_code(&secret, enabled_at));
    b.click("form[action='/ui/sign-in/code'] button[type=submit]");
    b.wait_path("/ui/");

    // The sessions list shows this session, signed in with a password and the app.
    b.goto(&format!("{url}/ui/account"));
    let rows = b.find_all("#sessions tbody tr");
    assert_eq!(rows.len(), 1);
    let current = b.text("#sessions tbody tr.current");
    assert!(
        current.contains("this browser") && current.contains("password"),
        "{current}"
    );
    b.screenshot("account");

    // Turning it off or replacing the recovery codes needs the password and a fresh code.
    b.click("details:nth-of-type(2) summary");
    b.fill("#disable-password", "not the password at all");
    b.fill("#disable-code", "000000");
    b.click("form[action='/ui/account/totp/disable'] button[type=submit]");
    assert!(
        b.text("#disable-password-error")
            .contains("password is wrong")
    );
    b.click("details:nth-of-type(1) summary");
    b.fill("#recovery-code", "000000");
    b.click("form[action='/ui/account/recovery-codes'] button[type=submit]");
    assert!(b.text("#recovery-code-error").contains("wrong"));
    b.screenshot("account-two-factor-errors");

    b.window_size(390, 844);
    b.goto(&format!("{url}/ui/account"));
    b.screenshot("account-phone");

    b.click("#sign-out-everywhere");
    b.wait_path("/ui/sign-in");
    b.goto(&format!("{url}/ui/account"));
    b.wait_path("/ui/sign-in");
}
