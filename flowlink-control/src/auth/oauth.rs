//! OAuth 2.0 / OpenID Connect clients for sign-in: GitHub, Yandex ID, VK ID and any OpenID
//! Connect provider. No HTTP serving here; `api/oauth.rs` drives the flow and this module
//! builds the authorization URL and, on the way back, exchanges the code and finds out who the
//! person is at the provider.
//!
//! Every kind uses the authorization-code flow with PKCE (S256) and a `state` parameter. Every
//! endpoint has a per-kind default and can be overridden in `[oauth.<name>]`, so a self-hosted
//! or test provider works. Plain `http://` endpoints are accepted only on loopback addresses.
//!
//! What counts as the person's e-mail address (used only to link a first sign-in to an
//! existing account) is what the provider says it has verified: GitHub's primary *verified*
//! address, Yandex's `default_email` and VK ID's `email` (both services only hand out
//! addresses they have confirmed), and for OpenID Connect the ID token's `email` with
//! `email_verified: true`.
//!
//! For OpenID Connect the ID token is verified: the signature (RS256 or ES256) against the
//! provider's JWKS, `iss`, `aud` (and `azp`), `exp`, `iat`, `nbf` and the `nonce` sent.
//!
//! Tokens, codes and secrets never appear in logs or error messages.

use std::fmt;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Deserialize;
use serde_json::Value;
use sha2::{Digest, Sha256};
use url::Url;

use crate::auth::secret::constant_time_eq;
use crate::config::OAuthProviderConfig;

/// How long a sign-in may take between leaving for the provider and coming back.
pub const STATE_LIFETIME: Duration = Duration::from_secs(600);
/// Clock difference tolerated when checking an ID token's times, in seconds.
pub const CLOCK_LEEWAY_SECS: i64 = 60;
/// The largest response accepted from a provider.
const MAX_RESPONSE_BYTES: usize = 256 * 1024;

/// The kinds of provider FlowLink knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProviderKind {
    /// GitHub (OAuth 2.0; identity from the REST API).
    GitHub,
    /// Yandex ID (OAuth 2.0; identity from `login.yandex.ru/info`).
    Yandex,
    /// VK ID (OAuth 2.1 at `id.vk.com`).
    Vk,
    /// Any OpenID Connect provider (identity from a verified ID token).
    Oidc,
}

impl ProviderKind {
    /// The kind from its configuration name.
    pub fn parse(s: &str) -> Option<ProviderKind> {
        match s {
            "github" => Some(ProviderKind::GitHub),
            "yandex" => Some(ProviderKind::Yandex),
            "vk" => Some(ProviderKind::Vk),
            "oidc" => Some(ProviderKind::Oidc),
            _ => None,
        }
    }

    /// The configuration name: `github`, `yandex`, `vk` or `oidc`.
    pub fn as_str(self) -> &'static str {
        match self {
            ProviderKind::GitHub => "github",
            ProviderKind::Yandex => "yandex",
            ProviderKind::Vk => "vk",
            ProviderKind::Oidc => "oidc",
        }
    }

    fn default_display_name(self) -> &'static str {
        match self {
            ProviderKind::GitHub => "GitHub",
            ProviderKind::Yandex => "Yandex ID",
            ProviderKind::Vk => "VK ID",
            ProviderKind::Oidc => "single sign-on",
        }
    }

    fn default_scopes(self) -> &'static [&'static str] {
        match self {
            ProviderKind::GitHub => &["read:user", "user:email"],
            ProviderKind::Yandex => &["login:email", "login:info"],
            ProviderKind::Vk => &["vkid.personal_info", "email"],
            ProviderKind::Oidc => &["openid", "email", "profile"],
        }
    }
}

impl fmt::Display for ProviderKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why an OAuth sign-in could not be completed. Messages say what to do and never contain a
/// token, code or secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OAuthError {
    /// `[oauth.<name>]` cannot work as written.
    #[error(
        "sign-in provider `{provider}` is misconfigured: {problem}; fix `[oauth.{provider}]` in the configuration file"
    )]
    Misconfigured {
        /// The provider's configured name.
        provider: String,
        /// What is wrong.
        problem: String,
    },
    /// The provider could not be reached.
    #[error(
        "could not reach the {endpoint} endpoint of `{provider}` ({detail}); try again, and if it persists check that this server can reach the provider"
    )]
    Unreachable {
        /// The provider's configured name.
        provider: String,
        /// `token`, `user info`, `e-mail` or `JWKS`.
        endpoint: &'static str,
        /// The transport error.
        detail: String,
    },
    /// The provider answered with an OAuth error (e.g. `invalid_grant` for a used code).
    #[error(
        "`{provider}` refused the sign-in at its {endpoint} endpoint: {error}{description}; start the sign-in again"
    )]
    Refused {
        /// The provider's configured name.
        provider: String,
        /// Which endpoint.
        endpoint: &'static str,
        /// The OAuth error code.
        error: String,
        /// `: <error_description>` or empty.
        description: String,
    },
    /// The provider answered something that is not what its kind sends.
    #[error(
        "the {endpoint} endpoint of `{provider}` answered unexpectedly: {detail}; try again, and if it persists check the endpoints of `[oauth.{provider}]`"
    )]
    BadResponse {
        /// The provider's configured name.
        provider: String,
        /// Which endpoint.
        endpoint: &'static str,
        /// What was wrong with the answer.
        detail: String,
    },
    /// The OpenID Connect ID token failed verification.
    #[error(
        "the ID token from `{provider}` was rejected: {problem}; start the sign-in again, and if it persists check `issuer`, `jwks_url` and `client_id` of `[oauth.{provider}]`"
    )]
    IdToken {
        /// The provider's configured name.
        provider: String,
        /// Which check failed.
        problem: String,
    },
}

impl OAuthError {
    /// A short, stable reason for audit records.
    pub fn reason(&self) -> &'static str {
        match self {
            OAuthError::Misconfigured { .. } => "provider_misconfigured",
            OAuthError::Unreachable { .. } => "provider_unreachable",
            OAuthError::Refused { .. } => "provider_refused",
            OAuthError::BadResponse { .. } => "provider_bad_response",
            OAuthError::IdToken { .. } => "id_token_invalid",
        }
    }
}

/// A PKCE code verifier and its S256 challenge.
#[derive(Clone)]
pub struct Pkce {
    /// The verifier (kept server-side, sent with the token request).
    pub verifier: String,
    /// `BASE64URL(SHA-256(verifier))` (sent with the authorization request).
    pub challenge: String,
}

impl Pkce {
    /// A new random verifier (43 characters, 256 bits) and its challenge.
    pub fn generate() -> Pkce {
        Pkce::from_verifier(super::secret::random_token(32))
    }

    /// The challenge of a given verifier.
    pub fn from_verifier(verifier: String) -> Pkce {
        let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
        Pkce {
            verifier,
            challenge,
        }
    }
}

impl fmt::Debug for Pkce {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pkce")
            .field("challenge", &self.challenge)
            .finish_non_exhaustive()
    }
}

/// Who the person is at the provider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The provider's stable id for the person (GitHub's numeric id, Yandex `id`, VK
    /// `user_id`, OIDC `sub`).
    pub subject: String,
    /// An e-mail address the provider has verified belongs to the person, if it gave one.
    pub verified_email: Option<String>,
}

/// What came back to the callback, besides `state`.
#[derive(Clone, Default)]
pub struct Callback {
    /// The authorization code.
    pub code: String,
    /// VK ID: the `device_id` parameter, needed for the token request.
    pub device_id: Option<String>,
    /// The `state` parameter (VK ID wants it echoed in the token request).
    pub state: String,
}

impl fmt::Debug for Callback {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Callback").finish_non_exhaustive()
    }
}

/// One configured provider, with its kind's defaults filled in and its URLs checked.
#[derive(Clone)]
pub struct Provider {
    /// The name in `[oauth.<name>]` (appears in URLs).
    pub name: String,
    /// Which kind of provider.
    pub kind: ProviderKind,
    /// Button text.
    pub display_name: String,
    /// The client id registered with the provider.
    pub client_id: String,
    client_secret: Option<String>,
    /// Where the browser is sent to sign in.
    pub authorize_url: Url,
    /// Where the code is exchanged.
    pub token_url: Url,
    /// Where the person's profile is read (OIDC: optional, used when the ID token carries no
    /// e-mail address).
    pub userinfo_url: Option<Url>,
    /// GitHub: the e-mail list.
    pub emails_url: Option<Url>,
    /// OIDC: the issuer the ID token must name.
    pub issuer: Option<String>,
    /// OIDC: the provider's signing keys.
    pub jwks_url: Option<Url>,
    /// Scopes asked for.
    pub scopes: Vec<String>,
}

impl fmt::Debug for Provider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Provider")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("client_id", &self.client_id)
            .field("client_secret", &self.client_secret.as_ref().map(|_| "…"))
            .field("authorize_url", &self.authorize_url.as_str())
            .field("token_url", &self.token_url.as_str())
            .finish_non_exhaustive()
    }
}

/// Checks an endpoint URL: https, or http on a loopback host only.
fn endpoint(provider: &str, key: &str, value: &str) -> Result<Url, OAuthError> {
    let bad = |problem: String| OAuthError::Misconfigured {
        provider: provider.to_string(),
        problem,
    };
    let url = Url::parse(value).map_err(|e| bad(format!("`{key}` is not a URL ({e})")))?;
    let loopback = match url.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(a)) => a.is_loopback(),
        Some(url::Host::Ipv6(a)) => a.is_loopback(),
        None => false,
    };
    match url.scheme() {
        "https" => Ok(url),
        "http" if loopback => Ok(url),
        "http" => Err(bad(format!(
            "`{key}` uses plain http on a non-loopback host; use https so codes and tokens are not sent in clear"
        ))),
        other => Err(bad(format!("`{key}` has scheme `{other}`; use https"))),
    }
}

impl Provider {
    /// The provider `[oauth.<name>]` describes.
    pub fn from_config(name: &str, config: &OAuthProviderConfig) -> Result<Provider, OAuthError> {
        let bad = |problem: String| OAuthError::Misconfigured {
            provider: name.to_string(),
            problem,
        };
        let kind = ProviderKind::parse(&config.kind).ok_or_else(|| {
            bad(format!(
                "unknown kind `{}`; expected github, yandex, vk or oidc",
                config.kind
            ))
        })?;
        if config.client_id.trim().is_empty() {
            return Err(bad(
                "`client_id` is empty; copy it from the provider's app settings".into(),
            ));
        }
        let pick = |key: &str, given: &Option<String>, default: Option<&str>| match given
            .as_deref()
            .or(default)
        {
            Some(v) => endpoint(name, key, v).map(Some),
            None => Ok(None),
        };
        let need = |key: &str, url: Option<Url>| {
            url.ok_or_else(|| {
                bad(format!(
                    "`{key}` is required for an OpenID Connect provider (see the provider's <issuer>/.well-known/openid-configuration)"
                ))
            })
        };
        let (authorize, token, userinfo, emails) = match kind {
            ProviderKind::GitHub => (
                Some("https://github.com/login/oauth/authorize"),
                Some("https://github.com/login/oauth/access_token"),
                Some("https://api.github.com/user"),
                Some("https://api.github.com/user/emails"),
            ),
            ProviderKind::Yandex => (
                Some("https://oauth.yandex.ru/authorize"),
                Some("https://oauth.yandex.ru/token"),
                Some("https://login.yandex.ru/info?format=json"),
                None,
            ),
            ProviderKind::Vk => (
                Some("https://id.vk.com/authorize"),
                Some("https://id.vk.com/oauth2/auth"),
                Some("https://id.vk.com/oauth2/user_info"),
                None,
            ),
            ProviderKind::Oidc => (None, None, None, None),
        };
        let authorize_url = need(
            "authorize_url",
            pick("authorize_url", &config.authorize_url, authorize)?,
        )?;
        let token_url = need("token_url", pick("token_url", &config.token_url, token)?)?;
        let userinfo_url = pick("userinfo_url", &config.userinfo_url, userinfo)?;
        let emails_url = if kind == ProviderKind::GitHub {
            pick("emails_url", &config.emails_url, emails)?
        } else {
            None
        };
        let (issuer, jwks_url) = if kind == ProviderKind::Oidc {
            let issuer = config
                .issuer
                .clone()
                .filter(|i| !i.trim().is_empty())
                .ok_or_else(|| {
                    bad("`issuer` is required for an OpenID Connect provider (the `iss` its ID tokens carry)".into())
                })?;
            let jwks = need("jwks_url", pick("jwks_url", &config.jwks_url, None)?)?;
            (Some(issuer), Some(jwks))
        } else {
            (None, None)
        };
        let scopes = match &config.scopes {
            Some(s) => s.clone(),
            None => kind
                .default_scopes()
                .iter()
                .map(|s| s.to_string())
                .collect(),
        };
        if kind == ProviderKind::Oidc && !scopes.iter().any(|s| s == "openid") {
            return Err(bad(
                "`scopes` must include `openid` for an OpenID Connect provider".into(),
            ));
        }
        Ok(Provider {
            name: name.to_string(),
            kind,
            display_name: config
                .display_name
                .clone()
                .unwrap_or_else(|| kind.default_display_name().to_string()),
            client_id: config.client_id.clone(),
            client_secret: config.client_secret.clone().filter(|s| !s.is_empty()),
            authorize_url,
            token_url,
            userinfo_url,
            emails_url,
            issuer,
            jwks_url,
            scopes,
        })
    }

    /// Where to send the browser: the authorization endpoint with `response_type=code`, the
    /// client id, `redirect_uri`, `state`, the PKCE challenge (S256), the scopes and, for
    /// OpenID Connect, the `nonce`.
    pub fn authorization_url(
        &self,
        redirect_uri: &str,
        state: &str,
        pkce: &Pkce,
        nonce: &str,
    ) -> Url {
        let mut url = self.authorize_url.clone();
        {
            let mut q = url.query_pairs_mut();
            q.append_pair("response_type", "code");
            q.append_pair("client_id", &self.client_id);
            q.append_pair("redirect_uri", redirect_uri);
            q.append_pair("state", state);
            q.append_pair("code_challenge", &pkce.challenge);
            q.append_pair("code_challenge_method", "S256");
            if !self.scopes.is_empty() {
                q.append_pair("scope", &self.scopes.join(" "));
            }
            if self.kind == ProviderKind::Oidc {
                q.append_pair("nonce", nonce);
            }
        }
        url
    }

    /// Exchanges the code from the callback (with the PKCE verifier) and finds out who the
    /// person is. `nonce` is the one sent in the authorization request (OIDC).
    pub async fn identify(
        &self,
        http: &reqwest::Client,
        redirect_uri: &str,
        callback: &Callback,
        pkce_verifier: &str,
        nonce: &str,
    ) -> Result<Identity, OAuthError> {
        match self.kind {
            ProviderKind::GitHub => {
                self.github(http, redirect_uri, callback, pkce_verifier)
                    .await
            }
            ProviderKind::Yandex => {
                self.yandex(http, redirect_uri, callback, pkce_verifier)
                    .await
            }
            ProviderKind::Vk => self.vk(http, redirect_uri, callback, pkce_verifier).await,
            ProviderKind::Oidc => {
                self.oidc(http, redirect_uri, callback, pkce_verifier, nonce)
                    .await
            }
        }
    }

    fn bad_response(&self, endpoint: &'static str, detail: impl Into<String>) -> OAuthError {
        OAuthError::BadResponse {
            provider: self.name.clone(),
            endpoint,
            detail: detail.into(),
        }
    }

    fn userinfo(&self) -> Result<&Url, OAuthError> {
        self.userinfo_url
            .as_ref()
            .ok_or_else(|| OAuthError::Misconfigured {
                provider: self.name.clone(),
                problem: "`userinfo_url` is missing".into(),
            })
    }

    /// Sends a request and reads a JSON answer, turning OAuth error bodies into
    /// [`OAuthError::Refused`].
    async fn call(
        &self,
        endpoint: &'static str,
        request: reqwest::RequestBuilder,
    ) -> Result<Value, OAuthError> {
        let mut response = request.send().await.map_err(|e| OAuthError::Unreachable {
            provider: self.name.clone(),
            endpoint,
            detail: transport_error(&e),
        })?;
        let status = response.status();
        let mut body = Vec::new();
        loop {
            match response.chunk().await {
                Ok(Some(chunk)) => {
                    if body.len() + chunk.len() > MAX_RESPONSE_BYTES {
                        return Err(self.bad_response(
                            endpoint,
                            format!("the answer is larger than {MAX_RESPONSE_BYTES} bytes"),
                        ));
                    }
                    body.extend_from_slice(&chunk);
                }
                Ok(None) => break,
                Err(e) => {
                    return Err(OAuthError::Unreachable {
                        provider: self.name.clone(),
                        endpoint,
                        detail: transport_error(&e),
                    });
                }
            }
        }
        let json: Option<Value> = serde_json::from_slice(&body).ok();
        if let Some(error) = json.as_ref().and_then(|j| j.get("error")) {
            let error = match error {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            let description = json
                .as_ref()
                .and_then(|j| j.get("error_description"))
                .and_then(Value::as_str)
                .map(|d| format!(" ({})", shorten(d)))
                .unwrap_or_default();
            return Err(OAuthError::Refused {
                provider: self.name.clone(),
                endpoint,
                error: shorten(&error),
                description,
            });
        }
        if !status.is_success() {
            return Err(self.bad_response(endpoint, format!("HTTP status {status}")));
        }
        json.ok_or_else(|| self.bad_response(endpoint, "the answer is not JSON"))
    }

    /// The access token (and ID token, if any) from a token response.
    fn tokens(&self, answer: &Value) -> Result<(String, Option<String>), OAuthError> {
        let access = answer
            .get("access_token")
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| self.bad_response("token", "no access_token in the answer"))?;
        let id_token = answer
            .get("id_token")
            .and_then(Value::as_str)
            .map(str::to_string);
        Ok((access.to_string(), id_token))
    }

    fn secret_form<'a>(&'a self, form: &mut Vec<(&'static str, &'a str)>) {
        form.push(("client_id", &self.client_id));
        if let Some(secret) = &self.client_secret {
            form.push(("client_secret", secret));
        }
    }

    async fn github(
        &self,
        http: &reqwest::Client,
        redirect_uri: &str,
        callback: &Callback,
        verifier: &str,
    ) -> Result<Identity, OAuthError> {
        let mut form = vec![
            ("code", callback.code.as_str()),
            ("redirect_uri", redirect_uri),
            ("code_verifier", verifier),
        ];
        self.secret_form(&mut form);
        let answer = self
            .call(
                "token",
                http.post(self.token_url.clone())
                    .header(reqwest::header::ACCEPT, "application/json")
                    .form(&form),
            )
            .await?;
        let (token, _) = self.tokens(&answer)?;
        let github = |url: &Url| {
            http.get(url.clone())
                .bearer_auth(&token)
                .header(reqwest::header::ACCEPT, "application/vnd.github+json")
                .header("X-GitHub-Api-Version", "2022-11-28")
        };
        let user = self.call("user info", github(self.userinfo()?)).await?;
        let subject = match user.get("id") {
            Some(Value::Number(n)) if n.is_u64() => n.to_string(),
            _ => return Err(self.bad_response("user info", "no numeric `id` in the user")),
        };
        let emails_url = self
            .emails_url
            .as_ref()
            .ok_or_else(|| OAuthError::Misconfigured {
                provider: self.name.clone(),
                problem: "`emails_url` is missing".into(),
            })?;
        let emails = self.call("e-mail", github(emails_url)).await?;
        let list = emails
            .as_array()
            .ok_or_else(|| self.bad_response("e-mail", "the answer is not a list"))?;
        let verified_email = list
            .iter()
            .find(|e| {
                e.get("primary").and_then(Value::as_bool) == Some(true)
                    && e.get("verified").and_then(Value::as_bool) == Some(true)
            })
            .and_then(|e| e.get("email"))
            .and_then(Value::as_str)
            .map(str::to_string);
        Ok(Identity {
            subject,
            verified_email,
        })
    }

    async fn yandex(
        &self,
        http: &reqwest::Client,
        redirect_uri: &str,
        callback: &Callback,
        verifier: &str,
    ) -> Result<Identity, OAuthError> {
        let mut form = vec![
            ("grant_type", "authorization_code"),
            ("code", callback.code.as_str()),
            ("redirect_uri", redirect_uri),
            ("code_verifier", verifier),
        ];
        self.secret_form(&mut form);
        let answer = self
            .call("token", http.post(self.token_url.clone()).form(&form))
            .await?;
        let (token, _) = self.tokens(&answer)?;
        let info = self
            .call(
                "user info",
                http.get(self.userinfo()?.clone())
                    .header(reqwest::header::AUTHORIZATION, format!("OAuth {token}")),
            )
            .await?;
        let subject = id_text(info.get("id"))
            .ok_or_else(|| self.bad_response("user info", "no `id` in the answer"))?;
        let verified_email = info
            .get("default_email")
            .and_then(Value::as_str)
            .filter(|e| !e.is_empty())
            .map(str::to_string);
        Ok(Identity {
            subject,
            verified_email,
        })
    }

    async fn vk(
        &self,
        http: &reqwest::Client,
        redirect_uri: &str,
        callback: &Callback,
        verifier: &str,
    ) -> Result<Identity, OAuthError> {
        let device_id = callback
            .device_id
            .as_deref()
            .filter(|d| !d.is_empty())
            .ok_or_else(|| {
                self.bad_response("authorization", "VK ID sent no `device_id` to the callback")
            })?;
        let mut form = vec![
            ("grant_type", "authorization_code"),
            ("code", callback.code.as_str()),
            ("code_verifier", verifier),
            ("device_id", device_id),
            ("redirect_uri", redirect_uri),
            ("state", callback.state.as_str()),
        ];
        self.secret_form(&mut form);
        let answer = self
            .call("token", http.post(self.token_url.clone()).form(&form))
            .await?;
        let (token, _) = self.tokens(&answer)?;
        if let Some(echoed) = answer.get("state").and_then(Value::as_str)
            && !constant_time_eq(echoed, &callback.state)
        {
            return Err(self.bad_response("token", "the `state` in the answer is not the one sent"));
        }
        let info = self
            .call(
                "user info",
                http.post(self.userinfo()?.clone()).form(&[
                    ("client_id", self.client_id.as_str()),
                    ("access_token", &token),
                ]),
            )
            .await?;
        let user = info
            .get("user")
            .ok_or_else(|| self.bad_response("user info", "no `user` in the answer"))?;
        let subject = id_text(user.get("user_id"))
            .ok_or_else(|| self.bad_response("user info", "no `user_id` in the user"))?;
        if let Some(from_token) = id_text(answer.get("user_id"))
            && from_token != subject
        {
            return Err(self.bad_response(
                "user info",
                "the user differs from the one the token was issued for",
            ));
        }
        let verified_email = user
            .get("email")
            .and_then(Value::as_str)
            .filter(|e| !e.is_empty())
            .map(str::to_string);
        Ok(Identity {
            subject,
            verified_email,
        })
    }

    async fn oidc(
        &self,
        http: &reqwest::Client,
        redirect_uri: &str,
        callback: &Callback,
        verifier: &str,
        nonce: &str,
    ) -> Result<Identity, OAuthError> {
        let form = [
            ("grant_type", "authorization_code"),
            ("code", callback.code.as_str()),
            ("redirect_uri", redirect_uri),
            ("code_verifier", verifier),
        ];
        let mut request = http.post(self.token_url.clone());
        request = match &self.client_secret {
            // client_secret_basic, the OpenID Connect default: both parts form-encoded.
            Some(secret) => request
                .basic_auth(form_encode(&self.client_id), Some(form_encode(secret)))
                .form(&form),
            None => {
                let mut public = form.to_vec();
                public.push(("client_id", &self.client_id));
                request.form(&public)
            }
        };
        let answer = self.call("token", request).await?;
        let (access_token, id_token) = self.tokens(&answer)?;
        let id_token =
            id_token.ok_or_else(|| self.bad_response("token", "no id_token in the answer"))?;
        let jwks_url = self
            .jwks_url
            .as_ref()
            .ok_or_else(|| OAuthError::Misconfigured {
                provider: self.name.clone(),
                problem: "`jwks_url` is missing".into(),
            })?;
        let jwks = self.call("JWKS", http.get(jwks_url.clone())).await?;
        let expect = IdTokenExpectations {
            issuer: self.issuer.as_deref().unwrap_or_default(),
            client_id: &self.client_id,
            nonce,
        };
        let claims = verify_id_token(&id_token, &jwks, &expect, unix_now()).map_err(|problem| {
            OAuthError::IdToken {
                provider: self.name.clone(),
                problem,
            }
        })?;
        let mut verified_email = claims.verified_email();
        if claims.email.is_none()
            && let Some(url) = &self.userinfo_url
        {
            let info = self
                .call(
                    "user info",
                    http.get(url.clone()).bearer_auth(&access_token),
                )
                .await?;
            if info.get("sub").and_then(Value::as_str) != Some(claims.sub.as_str()) {
                return Err(self.bad_response("user info", "its `sub` differs from the ID token's"));
            }
            verified_email = email_if_verified(
                info.get("email").and_then(Value::as_str),
                info.get("email_verified"),
            );
        }
        Ok(Identity {
            subject: claims.sub,
            verified_email,
        })
    }
}

/// The text of a transport error, without anything of the request but its URL.
fn transport_error(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "timed out".into()
    } else if e.is_connect() {
        "connection failed".into()
    } else if e.is_redirect() {
        "it answered with a redirect".into()
    } else {
        "the connection broke".into()
    }
}

/// `application/x-www-form-urlencoded` encoding of one value (RFC 6749 §2.3.1 for Basic auth).
fn form_encode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// A provider's id as text, whether it sent a string or a number.
fn id_text(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) if n.is_u64() || n.is_i64() => Some(n.to_string()),
        _ => None,
    }
}

fn shorten(s: &str) -> String {
    let s: String = s.chars().filter(|c| !c.is_control()).take(200).collect();
    s
}

/// Now, in Unix seconds.
pub fn unix_now() -> i64 {
    crate::store::now_us() / 1_000_000
}

/// `email` when `verified` is `true` (or the string `"true"`, as some providers send).
fn email_if_verified(email: Option<&str>, verified: Option<&Value>) -> Option<String> {
    let verified = matches!(verified, Some(Value::Bool(true)))
        || matches!(verified, Some(Value::String(s)) if s == "true");
    email
        .filter(|e| verified && !e.is_empty())
        .map(str::to_string)
}

/// What an ID token must say.
#[derive(Debug, Clone, Copy)]
pub struct IdTokenExpectations<'a> {
    /// The exact `iss`.
    pub issuer: &'a str,
    /// Must be in `aud` (and be `azp` when that is present).
    pub client_id: &'a str,
    /// The `nonce` sent in the authorization request.
    pub nonce: &'a str,
}

/// The claims of a verified ID token FlowLink uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdTokenClaims {
    /// The person's id at the provider.
    pub sub: String,
    /// The e-mail address, verified or not.
    pub email: Option<String>,
    /// Whether the provider says it verified `email`.
    pub email_verified: bool,
}

impl IdTokenClaims {
    /// The e-mail address, when verified.
    pub fn verified_email(&self) -> Option<String> {
        self.email.clone().filter(|_| self.email_verified)
    }
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Audience {
    One(String),
    Many(Vec<String>),
}

#[derive(Deserialize)]
struct RawClaims {
    iss: Option<String>,
    sub: Option<String>,
    aud: Option<Audience>,
    azp: Option<String>,
    exp: Option<Value>,
    iat: Option<Value>,
    nbf: Option<Value>,
    nonce: Option<String>,
    email: Option<String>,
    email_verified: Option<Value>,
}

/// A NumericDate claim as whole seconds.
fn numeric_date(v: &Option<Value>, name: &str) -> Result<Option<i64>, String> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n
            .as_i64()
            .or_else(|| n.as_f64().filter(|f| f.is_finite()).map(|f| f as i64))
            .map(Some)
            .ok_or_else(|| format!("`{name}` is not a time")),
        Some(_) => Err(format!("`{name}` is not a number")),
    }
}

/// The public key a JWK describes, if it suits `alg`.
fn jwk_key(jwk: &Value, alg: jsonwebtoken::Algorithm) -> Option<jsonwebtoken::DecodingKey> {
    let field = |k: &str| jwk.get(k).and_then(Value::as_str);
    if field("use").is_some_and(|u| u != "sig") {
        return None;
    }
    let alg_name = match alg {
        jsonwebtoken::Algorithm::RS256 => "RS256",
        jsonwebtoken::Algorithm::ES256 => "ES256",
        _ => return None,
    };
    if field("alg").is_some_and(|a| a != alg_name) {
        return None;
    }
    match (alg, field("kty")?) {
        (jsonwebtoken::Algorithm::RS256, "RSA") => {
            jsonwebtoken::DecodingKey::from_rsa_components(field("n")?, field("e")?).ok()
        }
        (jsonwebtoken::Algorithm::ES256, "EC") if field("crv")? == "P-256" => {
            let (x, y) = (field("x")?, field("y")?);
            let len = |c: &str| URL_SAFE_NO_PAD.decode(c).map(|b| b.len()).unwrap_or(0);
            if len(x) != 32 || len(y) != 32 {
                return None;
            }
            jsonwebtoken::DecodingKey::from_ec_components(x, y).ok()
        }
        _ => None,
    }
}

/// Verifies an OpenID Connect ID token against the provider's JWKS (`{"keys": [...]}`) at
/// time `now` (Unix seconds): signature (RS256 or ES256 only), `iss`, `aud`/`azp`, `exp`,
/// `iat` (not in the future, not older than [`STATE_LIFETIME`]), `nbf`, `nonce` and `sub`.
/// The error says which check failed.
pub fn verify_id_token(
    token: &str,
    jwks: &Value,
    expect: &IdTokenExpectations<'_>,
    now: i64,
) -> Result<IdTokenClaims, String> {
    // Only this crate's aws-lc-rs backend is built in; installing it is idempotent.
    let _ = jsonwebtoken::crypto::aws_lc::DEFAULT_PROVIDER.install_default();
    let header = jsonwebtoken::decode_header(token)
        .map_err(|_| "it is not a well-formed JWT (or names an unknown algorithm)".to_string())?;
    let alg = header.alg;
    if !matches!(
        alg,
        jsonwebtoken::Algorithm::RS256 | jsonwebtoken::Algorithm::ES256
    ) {
        return Err(format!(
            "it is signed with {alg:?}; only RS256 and ES256 are accepted"
        ));
    }
    let keys = jwks
        .get("keys")
        .and_then(Value::as_array)
        .ok_or_else(|| "the provider's JWKS has no `keys` list".to_string())?;
    let candidates: Vec<jsonwebtoken::DecodingKey> = keys
        .iter()
        .filter(|k| match &header.kid {
            Some(kid) => k.get("kid").and_then(Value::as_str) == Some(kid.as_str()),
            None => true,
        })
        .filter_map(|k| jwk_key(k, alg))
        .collect();
    if candidates.is_empty() {
        return Err(match &header.kid {
            Some(kid) => format!("no {alg:?} key with kid `{kid}` in the provider's JWKS"),
            None => format!("no {alg:?} key in the provider's JWKS"),
        });
    }
    let mut validation = jsonwebtoken::Validation::new(alg);
    // The claims are checked below, against `now`.
    validation.required_spec_claims.clear();
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.validate_aud = false;
    let mut data = None;
    let mut signature_error = None;
    for key in &candidates {
        match jsonwebtoken::decode::<RawClaims>(token, key, &validation) {
            Ok(d) => {
                data = Some(d);
                break;
            }
            Err(e) => signature_error = Some(e),
        }
    }
    let claims = match (data, signature_error) {
        (Some(d), _) => d.claims,
        (None, Some(e)) => {
            return Err(match e.kind() {
                jsonwebtoken::errors::ErrorKind::InvalidSignature => {
                    "its signature does not match the provider's keys".to_string()
                }
                jsonwebtoken::errors::ErrorKind::Json(_) => {
                    "its claims are not the JSON an ID token carries".to_string()
                }
                _ => "it could not be verified with the provider's keys".to_string(),
            });
        }
        (None, None) => return Err("it could not be verified".into()),
    };
    if claims.iss.as_deref() != Some(expect.issuer) {
        return Err(format!(
            "its issuer is {:?}, expected `{}`",
            claims.iss.as_deref().unwrap_or("(none)"),
            expect.issuer
        ));
    }
    let audiences = match &claims.aud {
        Some(Audience::One(a)) => vec![a.as_str()],
        Some(Audience::Many(list)) => list.iter().map(String::as_str).collect(),
        None => Vec::new(),
    };
    if !audiences.contains(&expect.client_id) {
        return Err(
            "it was issued for another client (`aud` does not contain our client_id)".into(),
        );
    }
    match claims.azp.as_deref() {
        Some(azp) if azp != expect.client_id => {
            return Err("it was issued to another party (`azp` is not our client_id)".into());
        }
        None if audiences.len() > 1 => {
            return Err("it names several audiences but no `azp`".into());
        }
        _ => {}
    }
    let exp = numeric_date(&claims.exp, "exp")?.ok_or("it has no `exp`")?;
    if now > exp + CLOCK_LEEWAY_SECS {
        return Err("it has expired; check that this server's clock is right".into());
    }
    let iat = numeric_date(&claims.iat, "iat")?.ok_or("it has no `iat`")?;
    if iat > now + CLOCK_LEEWAY_SECS {
        return Err(
            "it was issued in the future (`iat`); check that this server's clock is right".into(),
        );
    }
    let max_age = i64::try_from(STATE_LIFETIME.as_secs()).unwrap_or(600);
    if iat < now - max_age - CLOCK_LEEWAY_SECS {
        return Err("it was issued too long ago (`iat`)".into());
    }
    if let Some(nbf) = numeric_date(&claims.nbf, "nbf")?
        && nbf > now + CLOCK_LEEWAY_SECS
    {
        return Err("it is not valid yet (`nbf`)".into());
    }
    match claims.nonce.as_deref() {
        Some(n) if constant_time_eq(n, expect.nonce) => {}
        Some(_) => return Err("its nonce is not the one this sign-in sent".into()),
        None => return Err("it carries no nonce".into()),
    }
    let sub = claims
        .sub
        .filter(|s| !s.is_empty())
        .ok_or("it names no subject (`sub`)")?;
    let email_verified =
        email_if_verified(claims.email.as_deref(), claims.email_verified.as_ref()).is_some();
    Ok(IdTokenClaims {
        sub,
        email: claims.email.filter(|e| !e.is_empty()),
        email_verified,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(kind: &str) -> OAuthProviderConfig {
        OAuthProviderConfig {
            kind: kind.into(),
            client_id: "client".into(),
            client_secret: Some("secret".into()),
            authorize_url: None,
            token_url: None,
            userinfo_url: None,
            emails_url: None,
            issuer: None,
            jwks_url: None,
            scopes: None,
            display_name: None,
        }
    }

    #[test]
    fn kinds_have_their_defaults() {
        let gh = Provider::from_config("gh", &config("github")).unwrap();
        assert_eq!(
            gh.token_url.as_str(),
            "https://github.com/login/oauth/access_token"
        );
        assert_eq!(
            gh.emails_url.as_ref().unwrap().as_str(),
            "https://api.github.com/user/emails"
        );
        let ya = Provider::from_config("ya", &config("yandex")).unwrap();
        assert_eq!(
            ya.userinfo_url.as_ref().unwrap().as_str(),
            "https://login.yandex.ru/info?format=json"
        );
        let vk = Provider::from_config("vk", &config("vk")).unwrap();
        assert_eq!(vk.authorize_url.as_str(), "https://id.vk.com/authorize");
        assert_eq!(vk.display_name, "VK ID");
        assert!(!format!("{gh:?}").contains("secret\""));
    }

    #[test]
    fn oidc_needs_its_endpoints_and_https() {
        let e = Provider::from_config("sso", &config("oidc")).unwrap_err();
        assert!(e.to_string().contains("`authorize_url` is required"), "{e}");
        let mut c = config("oidc");
        c.authorize_url = Some("https://idp.example/auth".into());
        c.token_url = Some("https://idp.example/token".into());
        c.jwks_url = Some("https://idp.example/jwks".into());
        let e = Provider::from_config("sso", &c).unwrap_err();
        assert!(e.to_string().contains("`issuer` is required"), "{e}");
        c.issuer = Some("https://idp.example".into());
        assert!(Provider::from_config("sso", &c).is_ok());
        c.token_url = Some("http://idp.example/token".into());
        let e = Provider::from_config("sso", &c).unwrap_err();
        assert!(e.to_string().contains("plain http"), "{e}");
        c.token_url = Some("http://127.0.0.1:9/token".into());
        assert!(Provider::from_config("sso", &c).is_ok());
    }

    #[test]
    fn authorization_url_carries_pkce_state_and_nonce() {
        let mut c = config("oidc");
        c.authorize_url = Some("https://idp.example/auth?tenant=x".into());
        c.token_url = Some("https://idp.example/token".into());
        c.jwks_url = Some("https://idp.example/jwks".into());
        c.issuer = Some("https://idp.example".into());
        let p = Provider::from_config("sso", &c).unwrap();
        let pkce = Pkce::from_verifier("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk".into());
        // RFC 7636 appendix B.
        assert_eq!(
            pkce.challenge,
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
        let url = p.authorization_url("https://fl.example/cb", "st", &pkce, "nn");
        let q: std::collections::HashMap<_, _> = url.query_pairs().into_owned().collect();
        assert_eq!(q["tenant"], "x");
        assert_eq!(q["code_challenge_method"], "S256");
        assert_eq!(q["code_challenge"], pkce.challenge);
        assert_eq!(q["state"], "st");
        assert_eq!(q["nonce"], "nn");
        assert_eq!(q["scope"], "openid email profile");
        assert!(!format!("{pkce:?}").contains(&pkce.verifier));
    }

    #[test]
    fn id_tokens_with_other_algorithms_are_refused() {
        // {"alg":"HS256","typ":"JWT"}.{"sub":"x"}.sig
        let token = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJ4In0.c2ln";
        let expect = IdTokenExpectations {
            issuer: "i",
            client_id: "c",
            nonce: "n",
        };
        let e = verify_id_token(token, &serde_json::json!({"keys": []}), &expect, 0).unwrap_err();
        assert!(e.contains("only RS256 and ES256"), "{e}");
        // {"alg":"none"}
        let token = "eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.";
        let e = verify_id_token(token, &serde_json::json!({"keys": []}), &expect, 0).unwrap_err();
        assert!(e.contains("not a well-formed JWT"), "{e}");
    }
}
