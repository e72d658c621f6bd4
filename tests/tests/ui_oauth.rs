//! "Sign in with GitHub" in a real headless Chromium against the real `flowlink-control` binary,
//! with a stand-in for GitHub on 127.0.0.1 (GitHub itself cannot be reached from a test): the
//! browser follows the control plane's redirect to the provider's authorize endpoint, the
//! provider sends it back with a code, the control plane exchanges the code server-to-server,
//! reads the person's verified e-mail addresses and signs the existing owner in. A person the
//! provider vouches for but who has no account gets a page saying so (no account is created),
//! with the way back to the sign-in page.
//!
//! The stand-in checks what a real provider checks of the token request (client id and secret,
//! the code, the redirect URI, and that a PKCE verifier is sent); the PKCE hash, `state` binding
//! and ID-token checks are covered in depth by `flowlink-control/tests/oauth.rs`.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

use flowlink_e2e::browser::Browser;
use flowlink_e2e::link::{Control, setup_org};

const POLICY: &str = "version = 1\ndefault_action = \"allow\"\n";
const OWNER_EMAIL: &str = "owner@acme.test";
const CLIENT_ID: &str = "Iv1.flowlink-e2e";
const CLIENT_SECRET: &str = "e2e-client-secret";

/// What the stand-in provider saw and whom it signs in.
#[derive(Default)]
struct ProviderState {
    /// The GitHub user id it reports.
    id: u64,
    /// The e-mail address it reports, verified and primary.
    email: String,
    /// code → redirect URI it was issued for.
    codes: HashMap<String, String>,
    issued: u32,
    /// Token requests it refused, with why.
    refused: Vec<String>,
    /// Token requests it granted.
    granted: u32,
}

/// A minimal GitHub OAuth app endpoint set: `/login/oauth/authorize`,
/// `/login/oauth/access_token`, `/user`, `/user/emails`.
struct FakeGitHub {
    url: String,
    state: Arc<Mutex<ProviderState>>,
}

impl FakeGitHub {
    fn start(email: &str) -> FakeGitHub {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the stand-in provider");
        let url = format!("http://{}", listener.local_addr().expect("address"));
        let state = Arc::new(Mutex::new(ProviderState {
            id: 4242,
            email: email.to_owned(),
            ..ProviderState::default()
        }));
        let shared = state.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let shared = shared.clone();
                std::thread::spawn(move || serve(stream, &shared));
            }
        });
        FakeGitHub { url, state }
    }

    /// From now on the provider signs in another GitHub user, with `email`.
    fn set_person(&self, id: u64, email: &str) {
        let mut s = self.state.lock().expect("provider state");
        s.id = id;
        s.email = email.to_owned();
    }
}

/// `%XX` and `+` decoding of one query or form component.
fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(b) => {
                        out.push(b);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Percent-encodes everything but unreserved characters.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn params(s: &str) -> HashMap<String, String> {
    s.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (decode(k), decode(v))
        })
        .collect()
}

fn respond(stream: &mut TcpStream, status: &str, headers: &[(&str, String)], body: &str) {
    let mut head = format!(
        "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    let _ = stream.write_all(head.as_bytes());
    let _ = stream.write_all(body.as_bytes());
}

fn json_response(stream: &mut TcpStream, status: &str, body: &serde_json::Value) {
    respond(
        stream,
        status,
        &[("Content-Type", "application/json".to_owned())],
        &body.to_string(),
    );
}

fn serve(stream: TcpStream, shared: &Mutex<ProviderState>) {
    let mut reader = BufReader::new(stream.try_clone().expect("clone stream"));
    let mut stream = stream;
    let mut line = String::new();
    if reader.read_line(&mut line).is_err() {
        return;
    }
    let mut parts = line.split_whitespace();
    let (method, target) = (
        parts.next().unwrap_or("").to_owned(),
        parts.next().unwrap_or("").to_owned(),
    );
    let mut headers = HashMap::new();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).is_err() || h.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_owned());
        }
    }
    let length: usize = headers
        .get("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; length];
    if reader.read_exact(&mut body).is_err() {
        return;
    }
    let (path, query) = target.split_once('?').unwrap_or((&target, ""));
    match (method.as_str(), path) {
        // GitHub shows a consent page; the stand-in consents at once.
        ("GET", "/login/oauth/authorize") => {
            let q = params(query);
            let ok = q.get("client_id").map(String::as_str) == Some(CLIENT_ID)
                && q.get("code_challenge_method").map(String::as_str) == Some("S256")
                && q.get("code_challenge").is_some_and(|c| c.len() >= 43)
                && q.get("state").is_some_and(|s| !s.is_empty());
            let Some(redirect) = q.get("redirect_uri").filter(|_| ok) else {
                respond(&mut stream, "400 Bad Request", &[], "bad authorize request");
                return;
            };
            let code = {
                let mut s = shared.lock().expect("provider state");
                s.issued += 1;
                let code = format!("code-{}", s.issued);
                s.codes.insert(code.clone(), redirect.clone());
                code
            };
            let location = format!(
                "{redirect}?code={}&state={}",
                encode(&code),
                encode(q.get("state").map(String::as_str).unwrap_or(""))
            );
            respond(&mut stream, "302 Found", &[("Location", location)], "");
        }
        ("POST", "/login/oauth/access_token") => {
            let form = params(&String::from_utf8_lossy(&body));
            let mut s = shared.lock().expect("provider state");
            let issued_for = form.get("code").and_then(|c| s.codes.remove(c));
            let why = if form.get("client_id").map(String::as_str) != Some(CLIENT_ID)
                || form.get("client_secret").map(String::as_str) != Some(CLIENT_SECRET)
            {
                Some("wrong client credentials")
            } else if issued_for.is_none() {
                Some("unknown or reused code")
            } else if issued_for.as_ref() != form.get("redirect_uri") {
                Some("redirect_uri differs from the authorize request's")
            } else if form.get("code_verifier").is_none_or(|v| v.len() < 43) {
                Some("no PKCE verifier")
            } else {
                None
            };
            match why {
                Some(why) => {
                    s.refused.push(why.to_owned());
                    json_response(
                        &mut stream,
                        "200 OK",
                        &serde_json::json!({"error": "bad_verification_code", "error_description": why}),
                    );
                }
                None => {
                    s.granted += 1;
                    json_response(
                        &mut stream,
                        "200 OK",
                        &serde_json::json!({"access_token": "gho_e2e", "token_type": "bearer", "scope": "read:user,user:email"}),
                    );
                }
            }
        }
        ("GET", "/user") | ("GET", "/user/emails") => {
            if headers.get("authorization").map(String::as_str) != Some("Bearer gho_e2e")
                && headers.get("authorization").map(String::as_str) != Some("token gho_e2e")
            {
                json_response(
                    &mut stream,
                    "401 Unauthorized",
                    &serde_json::json!({"message": "Bad credentials"}),
                );
                return;
            }
            let (id, email) = {
                let s = shared.lock().expect("provider state");
                (s.id, s.email.clone())
            };
            let body = if path == "/user" {
                serde_json::json!({"id": id, "login": format!("user{id}"), "name": "Someone", "email": null})
            } else {
                serde_json::json!([{"email": email, "primary": true, "verified": true, "visibility": "private"}])
            };
            json_response(&mut stream, "200 OK", &body);
        }
        _ => respond(&mut stream, "404 Not Found", &[], "not found"),
    }
}

#[test]
fn the_owner_signs_in_with_github_and_a_stranger_is_told_there_is_no_account() {
    let github = FakeGitHub::start(OWNER_EMAIL);
    let dir = tempfile::tempdir().expect("tempdir");
    let db = format!("sqlite://{}/control.db", dir.path().display());
    let config = format!(
        r#"[oauth.github]
kind = "github"
client_id = "{CLIENT_ID}"
client_secret = "{CLIENT_SECRET}"
authorize_url = "{base}/login/oauth/authorize"
token_url = "{base}/login/oauth/access_token"
userinfo_url = "{base}/user"
emails_url = "{base}/user/emails"
"#,
        base = github.url
    );
    let control = Control::start_with_config(&db, dir.path(), &config);
    setup_org(&control, POLICY);

    let browser = Browser::start("ui_oauth");
    browser.goto(&format!("{}/ui/sign-in", control.url));
    let button = "a[href$='/api/v1/auth/oauth/github/start']";
    assert!(
        browser.text(button).contains("GitHub"),
        "the sign-in page offers GitHub: {}",
        browser.text("body")
    );
    browser.screenshot("sign-in-with-providers");
    browser.click(button);
    browser.wait_path("/ui/");
    assert!(
        browser.text("h1").contains("Olive Owner"),
        "signed in as the owner: {}",
        browser.text("body")
    );
    assert!(
        browser.cookie("flowlink_session").is_some(),
        "a session cookie was set"
    );
    {
        let s = github.state.lock().expect("provider state");
        assert_eq!(s.granted, 1, "one token exchange: refused {:?}", s.refused);
        assert!(s.refused.is_empty(), "{:?}", s.refused);
    }

    // Sign out, and let the provider vouch for someone without an account.
    browser.click("form[action$='/ui/sign-out'] button[type=submit]");
    browser.wait_path("/ui/sign-in");
    // Another GitHub user (a provider identity once linked signs in its account whatever
    // address it reports later; this one is new, and its address belongs to nobody here).
    github.set_person(777, "stranger@elsewhere.test");
    browser.click(button);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !browser.text("body").contains("Sign-in failed") {
        assert!(
            std::time::Instant::now() < deadline,
            "no refusal page: {}",
            browser.text("body")
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let page = browser.text("main");
    assert!(
        page.to_lowercase().contains("account"),
        "the page says there is no account for that address: {page}"
    );
    assert!(
        browser.try_find("a[href$='/ui/sign-in']").is_some(),
        "the refusal links back to the sign-in page"
    );
    assert!(
        browser.cookie("flowlink_session").is_none()
            || browser.cookie("flowlink_session") == Some(String::new()),
        "no session for a stranger"
    );
    browser.screenshot("sign-in-refused");
    // Nobody was created: the stranger cannot sign in with a password either, and the owner's
    // account is the one the provider identity was linked to.
    browser.goto(&format!("{}/ui/", control.url));
    browser.wait_path("/ui/sign-in");
}
