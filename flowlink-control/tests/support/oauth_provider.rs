//! A fake OAuth 2.0 / OpenID Connect provider for tests, an axum app on 127.0.0.1:0. One
//! instance plays one kind (`github`, `yandex`, `vk` or `oidc`):
//!
//! - `GET /authorize` auto-approves the configured person and redirects back with `code` and
//!   `state` (and `device_id` for VK ID);
//! - `POST /token` checks client id and secret, `redirect_uri`, the PKCE verifier (S256), VK's
//!   `device_id`, and that each code is used once; for `oidc` it returns an ID token signed
//!   with a key generated here (ES256 or RS256), whose claims a test may tamper with;
//! - user info per kind (`/github/user` and `/github/emails`, `/yandex/info`,
//!   `/vk/user_info`, `/oidc/userinfo`) and `/oidc/jwks`.
#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::KeySize;
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair, RSA_PKCS1_SHA256, RsaKeyPair,
};
use axum::Router;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use flowlink_control::config::OAuthProviderConfig;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// The person the provider signs in.
#[derive(Debug, Clone)]
pub struct Person {
    /// The provider's id for them (digits for GitHub).
    pub subject: String,
    /// Their e-mail address.
    pub email: String,
    /// Whether the provider has verified it.
    pub email_verified: bool,
}

/// Which key signs ID tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signer {
    /// The EC P-256 key published in the JWKS (kid `ec-1`).
    Es256,
    /// The RSA-2048 key published in the JWKS (kid `rsa-1`).
    Rs256,
    /// An EC P-256 key that is *not* in the JWKS, claiming kid `ec-1`.
    Forged,
}

type ClaimTweak = Box<dyn Fn(&mut Value) + Send + Sync>;

struct Grant {
    client_id: String,
    redirect_uri: String,
    challenge: String,
    nonce: Option<String>,
    used: bool,
}

struct Shared {
    kind: String,
    base: String,
    client_id: String,
    client_secret: String,
    device_id: String,
    person: Mutex<Person>,
    signer: Mutex<Signer>,
    tweak: Mutex<Option<ClaimTweak>>,
    codes: Mutex<HashMap<String, Grant>>,
    tokens: Mutex<HashMap<String, Person>>,
    ec: EcdsaKeyPair,
    forged: EcdsaKeyPair,
    rsa: RsaKeyPair,
}

/// A running fake provider.
pub struct FakeProvider {
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    shared: Arc<Shared>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Drop for FakeProvider {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

fn random() -> String {
    let mut b = [0u8; 18];
    getrandom::fill(&mut b).expect("random");
    URL_SAFE_NO_PAD.encode(b)
}

impl FakeProvider {
    /// Starts a provider of `kind` that signs in `person`.
    pub async fn start(kind: &str, person: Person) -> FakeProvider {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind fake provider");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        let shared = Arc::new(Shared {
            kind: kind.to_string(),
            base: base.clone(),
            client_id: format!("{kind}-client"),
            client_secret: format!("{kind}-secret-{}", random()),
            device_id: format!("device-{}", random()),
            person: Mutex::new(person),
            signer: Mutex::new(Signer::Es256),
            tweak: Mutex::new(None),
            codes: Mutex::new(HashMap::new()),
            tokens: Mutex::new(HashMap::new()),
            ec: EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).expect("EC key"),
            forged: EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).expect("EC key"),
            rsa: RsaKeyPair::generate(KeySize::Rsa2048).expect("RSA key"),
        });
        let app = Router::new()
            .route("/authorize", get(authorize))
            .route("/token", post(token))
            .route("/github/user", get(github_user))
            .route("/github/emails", get(github_emails))
            .route("/yandex/info", get(yandex_info))
            .route("/vk/user_info", post(vk_user_info))
            .route("/oidc/jwks", get(jwks))
            .route("/oidc/userinfo", get(oidc_userinfo))
            .with_state(shared.clone());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = stopped.await;
                })
                .await;
        });
        FakeProvider {
            base,
            shared,
            stop: Some(stop),
        }
    }

    /// The `[oauth.<name>]` table that points FlowLink at this provider.
    pub fn config(&self) -> OAuthProviderConfig {
        let b = &self.base;
        let s = &self.shared;
        let (userinfo, emails, issuer, jwks) = match s.kind.as_str() {
            "github" => (
                Some(format!("{b}/github/user")),
                Some(format!("{b}/github/emails")),
                None,
                None,
            ),
            "yandex" => (
                Some(format!("{b}/yandex/info?format=json")),
                None,
                None,
                None,
            ),
            "vk" => (Some(format!("{b}/vk/user_info")), None, None, None),
            _ => (None, None, Some(b.clone()), Some(format!("{b}/oidc/jwks"))),
        };
        OAuthProviderConfig {
            kind: s.kind.clone(),
            client_id: s.client_id.clone(),
            client_secret: Some(s.client_secret.clone()),
            authorize_url: Some(format!("{b}/authorize")),
            token_url: Some(format!("{b}/token")),
            userinfo_url: userinfo,
            emails_url: emails,
            issuer,
            jwks_url: jwks,
            scopes: None,
            display_name: None,
        }
    }

    /// The client secret FlowLink must present.
    pub fn client_secret(&self) -> String {
        self.shared.client_secret.clone()
    }

    /// Changes the person signed in from now on.
    pub fn set_person(&self, person: Person) {
        *self.shared.person.lock().expect("lock") = person;
    }

    /// Chooses the key that signs ID tokens.
    pub fn sign_with(&self, signer: Signer) {
        *self.shared.signer.lock().expect("lock") = signer;
    }

    /// Changes every ID token's claims before signing (`None` = leave them).
    pub fn tweak_id_token(&self, tweak: Option<ClaimTweak>) {
        *self.shared.tweak.lock().expect("lock") = tweak;
    }
}

fn oauth_error(kind: &str, error: &str, description: &str) -> Response {
    // GitHub answers token errors with 200 and an `error` field; the others with 400.
    let status = if kind == "github" {
        StatusCode::OK
    } else {
        StatusCode::BAD_REQUEST
    };
    (
        status,
        axum::Json(json!({"error": error, "error_description": description})),
    )
        .into_response()
}

async fn authorize(
    State(s): State<Arc<Shared>>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let get = |k: &str| q.get(k).cloned().unwrap_or_default();
    if get("client_id") != s.client_id {
        return (StatusCode::BAD_REQUEST, "unknown client_id").into_response();
    }
    if get("response_type") != "code"
        || get("code_challenge_method") != "S256"
        || get("code_challenge").is_empty()
    {
        return (
            StatusCode::BAD_REQUEST,
            "expected response_type=code and a S256 PKCE challenge",
        )
            .into_response();
    }
    if get("state").is_empty() || get("redirect_uri").is_empty() {
        return (
            StatusCode::BAD_REQUEST,
            "state and redirect_uri are required",
        )
            .into_response();
    }
    let nonce = q.get("nonce").cloned();
    if s.kind == "oidc" && nonce.is_none() {
        return (StatusCode::BAD_REQUEST, "OpenID Connect needs a nonce").into_response();
    }
    let code = random();
    s.codes.lock().expect("lock").insert(
        code.clone(),
        Grant {
            client_id: get("client_id"),
            redirect_uri: get("redirect_uri"),
            challenge: get("code_challenge"),
            nonce,
            used: false,
        },
    );
    let mut back = url::Url::parse(&get("redirect_uri")).expect("redirect_uri is a URL");
    {
        let mut p = back.query_pairs_mut();
        p.append_pair("code", &code);
        p.append_pair("state", &get("state"));
        if s.kind == "vk" {
            p.append_pair("device_id", &s.device_id);
            p.append_pair("type", "code_v2");
        }
    }
    Redirect::to(back.as_str()).into_response()
}

fn basic_credentials(headers: &HeaderMap) -> Option<(String, String)> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let encoded = v.strip_prefix("Basic ")?;
    let decoded = String::from_utf8(STANDARD.decode(encoded).ok()?).ok()?;
    let (id, secret) = decoded.split_once(':')?;
    let dec = |x: &str| {
        url::form_urlencoded::parse(format!("x={x}").as_bytes())
            .next()
            .map(|(_, v)| v.into_owned())
    };
    Some((dec(id)?, dec(secret)?))
}

async fn token(State(s): State<Arc<Shared>>, headers: HeaderMap, body: String) -> Response {
    let form: HashMap<String, String> = url::form_urlencoded::parse(body.as_bytes())
        .into_owned()
        .collect();
    let get = |k: &str| form.get(k).cloned().unwrap_or_default();
    let (client_id, secret) = match basic_credentials(&headers) {
        Some(c) => c,
        None => (get("client_id"), get("client_secret")),
    };
    if client_id != s.client_id || secret != s.client_secret {
        return oauth_error(&s.kind, "invalid_client", "wrong client id or secret");
    }
    if s.kind != "github" && get("grant_type") != "authorization_code" {
        return oauth_error(
            &s.kind,
            "unsupported_grant_type",
            "expected authorization_code",
        );
    }
    let (redirect_uri, challenge, nonce) = {
        let mut codes = s.codes.lock().expect("lock");
        let Some(grant) = codes.get_mut(&get("code")) else {
            return oauth_error(&s.kind, "invalid_grant", "unknown code");
        };
        if grant.used {
            return oauth_error(&s.kind, "invalid_grant", "the code was already used");
        }
        grant.used = true;
        if grant.client_id != client_id {
            return oauth_error(
                &s.kind,
                "invalid_grant",
                "the code belongs to another client",
            );
        }
        (
            grant.redirect_uri.clone(),
            grant.challenge.clone(),
            grant.nonce.clone(),
        )
    };
    if get("redirect_uri") != redirect_uri {
        return oauth_error(
            &s.kind,
            "invalid_grant",
            "redirect_uri differs from the authorization request",
        );
    }
    if URL_SAFE_NO_PAD.encode(Sha256::digest(get("code_verifier").as_bytes())) != challenge {
        return oauth_error(
            &s.kind,
            "invalid_grant",
            "the PKCE code_verifier does not match the challenge",
        );
    }
    if s.kind == "vk" && get("device_id") != s.device_id {
        return oauth_error(
            &s.kind,
            "invalid_request",
            "device_id differs from the one sent to the callback",
        );
    }
    let person = s.person.lock().expect("lock").clone();
    let access = format!("at-{}", random());
    s.tokens
        .lock()
        .expect("lock")
        .insert(access.clone(), person.clone());
    let mut answer = json!({"access_token": access, "token_type": "bearer", "expires_in": 3600});
    match s.kind.as_str() {
        "vk" => {
            answer["user_id"] = json!(person.subject.parse::<u64>().unwrap_or(0));
            answer["state"] = json!(get("state"));
        }
        "oidc" => answer["id_token"] = json!(id_token(&s, &person, nonce.as_deref().unwrap_or(""))),
        _ => {}
    }
    axum::Json(answer).into_response()
}

fn b64(v: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(v)
}

fn id_token(s: &Shared, person: &Person, nonce: &str) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let mut claims = json!({
        "iss": s.base,
        "sub": person.subject,
        "aud": s.client_id,
        "exp": now + 300,
        "iat": now,
        "nonce": nonce,
        "email": person.email,
        "email_verified": person.email_verified,
    });
    if let Some(tweak) = s.tweak.lock().expect("lock").as_ref() {
        tweak(&mut claims);
    }
    let signer = *s.signer.lock().expect("lock");
    let (alg, kid) = match signer {
        Signer::Es256 | Signer::Forged => ("ES256", "ec-1"),
        Signer::Rs256 => ("RS256", "rsa-1"),
    };
    let header = json!({"alg": alg, "typ": "JWT", "kid": kid});
    let input = format!(
        "{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    );
    let rng = SystemRandom::new();
    let signature = match signer {
        Signer::Es256 => {
            s.ec.sign(&rng, input.as_bytes())
                .expect("sign")
                .as_ref()
                .to_vec()
        }
        Signer::Forged => s
            .forged
            .sign(&rng, input.as_bytes())
            .expect("sign")
            .as_ref()
            .to_vec(),
        Signer::Rs256 => {
            let mut sig = vec![0u8; s.rsa.public_modulus_len()];
            s.rsa
                .sign(&RSA_PKCS1_SHA256, &rng, input.as_bytes(), &mut sig)
                .expect("sign");
            sig
        }
    };
    format!("{input}.{}", b64(&signature))
}

async fn jwks(State(s): State<Arc<Shared>>) -> axum::Json<Value> {
    let point = s.ec.public_key().as_ref();
    let rsa = s.rsa.public_key();
    axum::Json(json!({"keys": [
        // An encryption key first: it must be skipped, not break the set.
        {"kty": "RSA", "use": "enc", "kid": "enc-1", "alg": "RSA-OAEP", "n": "AQAB", "e": "AQAB"},
        {"kty": "EC", "use": "sig", "kid": "ec-1", "alg": "ES256", "crv": "P-256",
         "x": b64(&point[1..33]), "y": b64(&point[33..65])},
        {"kty": "RSA", "use": "sig", "kid": "rsa-1", "alg": "RS256",
         "n": b64(rsa.modulus().big_endian_without_leading_zero()),
         "e": b64(rsa.exponent().big_endian_without_leading_zero())},
    ]}))
}

fn bearer_person(s: &Shared, headers: &HeaderMap, scheme: &str) -> Option<Person> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let token = v.strip_prefix(scheme)?.strip_prefix(' ')?;
    s.tokens.lock().expect("lock").get(token).cloned()
}

fn unauthorized() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        axum::Json(json!({"message": "Bad credentials"})),
    )
        .into_response()
}

async fn github_user(State(s): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    let Some(p) = bearer_person(&s, &headers, "Bearer") else {
        return unauthorized();
    };
    let id: u64 = p.subject.parse().expect("GitHub subjects are numbers");
    axum::Json(json!({"id": id, "login": "octo", "name": "Octo Cat", "email": null}))
        .into_response()
}

async fn github_emails(State(s): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    let Some(p) = bearer_person(&s, &headers, "Bearer") else {
        return unauthorized();
    };
    axum::Json(json!([
        // A verified address that is not primary must not count.
        {"email": "secondary@elsewhere.test", "primary": false, "verified": true, "visibility": null},
        {"email": p.email, "primary": true, "verified": p.email_verified, "visibility": "private"},
    ]))
    .into_response()
}

async fn yandex_info(
    State(s): State<Arc<Shared>>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let Some(p) = bearer_person(&s, &headers, "OAuth") else {
        return unauthorized();
    };
    if q.get("format").map(String::as_str) != Some("json") {
        return (StatusCode::BAD_REQUEST, "format=json expected").into_response();
    }
    let default_email = if p.email_verified {
        json!(p.email)
    } else {
        Value::Null
    };
    axum::Json(
        json!({"id": p.subject, "login": "yalogin", "client_id": s.client_id,
        "default_email": default_email, "emails": [p.email], "real_name": "Ya User"}),
    )
    .into_response()
}

async fn vk_user_info(State(s): State<Arc<Shared>>, body: String) -> Response {
    let form: HashMap<String, String> = url::form_urlencoded::parse(body.as_bytes())
        .into_owned()
        .collect();
    if form.get("client_id") != Some(&s.client_id) {
        return (
            StatusCode::BAD_REQUEST,
            axum::Json(json!({"error": "invalid_client"})),
        )
            .into_response();
    }
    let person = form
        .get("access_token")
        .and_then(|t| s.tokens.lock().expect("lock").get(t).cloned());
    let Some(p) = person else {
        return (
            StatusCode::UNAUTHORIZED,
            axum::Json(
                json!({"error": "invalid_token", "error_description": "unknown access token"}),
            ),
        )
            .into_response();
    };
    let email = if p.email_verified {
        json!(p.email)
    } else {
        json!("")
    };
    axum::Json(json!({"user": {"user_id": p.subject, "first_name": "Vk", "last_name": "User", "email": email}})).into_response()
}

async fn oidc_userinfo(State(s): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    let Some(p) = bearer_person(&s, &headers, "Bearer") else {
        return unauthorized();
    };
    axum::Json(json!({"sub": p.subject, "email": p.email, "email_verified": p.email_verified}))
        .into_response()
}
