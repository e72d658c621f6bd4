//! A HashiCorp Vault KV version 2 client: the `vault = "mount/path#key"` entries of a policy's
//! `[[secrets.inject]]`.
//!
//! * Authentication: a token (`X-Vault-Token`), or AppRole (`POST /v1/auth/approle/login` with
//!   `role_id` and `secret_id`). An AppRole token is kept until its lease is nearly over (a tenth
//!   of the lease, at most 30 s, before its end) and then a new one is fetched by logging in
//!   again; a 403 on a read with an AppRole token logs in again once and retries (the token may
//!   have been revoked early).
//! * Namespaces (Vault Enterprise, HCP): `X-Vault-Namespace` on every request, the login too.
//! * Reads: `GET /v1/{mount}/data/{path}`, the value at `data.data[key]` (a string as is, any
//!   other JSON value as its JSON text). The secret's keys and values are cached per
//!   (mount, path) for the response's `lease_duration` when Vault gives one, otherwise for
//!   [`VaultConfig::cache`] (zero: not cached); never longer than a day.
//! * TLS: the public roots plus an optional private CA (`ca_file`, PEM). Plain `http://` only to
//!   this machine (a Vault dev server), because the token would cross the network in clear.
//!   Redirects are not followed (they would carry the token to another address).
//! * Errors say what to do and never carry a token, a `secret_id` or a value: Vault sealed
//!   (503), permission denied (403, naming the policy the token lacks), no secret (404, naming
//!   mount and path), a key missing from the secret (naming the keys it has).
//!
//! Values, the token and the `secret_id` are held in [`Zeroizing`] buffers; the HTTP stack's own
//! buffers (request and response bodies inside reqwest and hyper) are not wiped.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use reqwest::header::{HeaderName, HeaderValue};
use serde_json::Value;
use zeroize::Zeroizing;

const TOKEN_HEADER: HeaderName = HeaderName::from_static("x-vault-token");
const NAMESPACE_HEADER: HeaderName = HeaderName::from_static("x-vault-namespace");

/// How long before the end of a token's lease a new one is fetched: a tenth of the lease, at
/// most this.
const TOKEN_MARGIN_MAX: Duration = Duration::from_secs(30);

/// The longest a value is kept, whatever lease Vault gives.
const CACHE_MAX: Duration = Duration::from_secs(24 * 3600);

/// Where Vault is and how to authenticate.
#[derive(Clone, Debug)]
pub struct VaultConfig {
    /// As `VAULT_ADDR`: `https://vault.example:8200` (a path prefix is kept, for a Vault behind
    /// a reverse proxy).
    pub address: String,
    /// `X-Vault-Namespace`, for Vault Enterprise and HCP Vault.
    pub namespace: Option<String>,
    /// Token or AppRole.
    pub auth: VaultAuth,
    /// A PEM file with the CA that signed Vault's certificate, trusted besides the public roots.
    pub ca_file: Option<PathBuf>,
    /// How long a value is kept when Vault gives it no lease (KV v2 never does). Zero: every
    /// read asks Vault.
    pub cache: Duration,
}

/// How the client authenticates. `Debug` prints no token or `secret_id`.
#[derive(Clone)]
pub enum VaultAuth {
    /// A Vault token, sent as is.
    Token(Zeroizing<String>),
    /// AppRole: logs in with these for a token.
    AppRole {
        /// The role's id (not a secret by itself).
        role_id: String,
        /// The secret id.
        secret_id: Zeroizing<String>,
    },
}

impl fmt::Debug for VaultAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VaultAuth::Token(_) => f.write_str("Token(<hidden>)"),
            VaultAuth::AppRole { role_id, .. } => f
                .debug_struct("AppRole")
                .field("role_id", role_id)
                .field("secret_id", &format_args!("<hidden>"))
                .finish(),
        }
    }
}

/// A reference to one key of one KV v2 secret: `mount/path#key`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct VaultRef {
    /// The KV v2 engine's mount (the reference's first segment), e.g. `kv`.
    pub mount: String,
    /// The secret's path inside the mount, e.g. `app` or `team/app`.
    pub path: String,
    /// The key inside the secret, e.g. `db_password`.
    pub key: String,
}

impl fmt::Display for VaultRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}#{}", self.mount, self.path, self.key)
    }
}

/// Reads `mount/path#key`: the mount is the first segment, the path the rest up to `#`, the key
/// what follows it. `kv/app#db_password` → mount `kv`, path `app`, key `db_password`.
pub fn parse_vault_ref(reference: &str) -> Result<VaultRef, VaultError> {
    let bad = |why: &'static str| VaultError::BadReference {
        reference: reference.to_owned(),
        why,
    };
    if reference
        .chars()
        .any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(bad("it contains spaces or control characters"));
    }
    let (location, key) = reference
        .split_once('#')
        .ok_or_else(|| bad("the `#key` part is missing"))?;
    if key.is_empty() {
        return Err(bad("the key after `#` is empty"));
    }
    if key.contains('#') {
        return Err(bad("it has more than one `#`"));
    }
    let location = location.trim_matches('/');
    let (mount, path) = location
        .split_once('/')
        .ok_or_else(|| bad("it names a mount but no secret path inside it"))?;
    if mount.is_empty() {
        return Err(bad("the mount is empty"));
    }
    let path = path.trim_matches('/');
    if path.is_empty() {
        return Err(bad("the secret path is empty"));
    }
    if path
        .split('/')
        .any(|s| s.is_empty() || s == "." || s == "..")
    {
        return Err(bad("the secret path has an empty, `.` or `..` segment"));
    }
    Ok(VaultRef {
        mount: mount.to_owned(),
        path: path.to_owned(),
        key: key.to_owned(),
    })
}

/// What can go wrong talking to Vault. Messages say what to do; none carries a token, a
/// `secret_id` or a secret's value.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VaultError {
    /// A `vault = "…"` reference that is not `mount/path#key`.
    #[error(
        "`{reference}` is not a Vault reference: {why}; write it as mount/path#key, e.g. kv/app#db_password"
    )]
    BadReference {
        /// What was given.
        reference: String,
        /// Why not.
        why: &'static str,
    },
    /// The address is not an http(s) URL.
    #[error(
        "the Vault address `{address}` is not usable: {why}; set it as VAULT_ADDR would be, e.g. https://vault.example:8200"
    )]
    BadAddress {
        /// What was given.
        address: String,
        /// Why not.
        why: String,
    },
    /// Plain HTTP to another machine.
    #[error(
        "refusing the unencrypted Vault address `{address}`: plain http:// is only allowed to this machine (127.0.0.1, ::1, localhost), because the Vault token would cross the network in clear; use https://"
    )]
    InsecureAddress {
        /// What was given.
        address: String,
    },
    /// The CA file could not be used.
    #[error(
        "cannot use the Vault CA file {}: {why}; set ca_file to a PEM file with the CA certificate that signed Vault's certificate",
        path.display()
    )]
    CaFile {
        /// The file.
        path: PathBuf,
        /// Why not.
        why: String,
    },
    /// TLS could not be set up.
    #[error("cannot set up TLS for Vault: {0}")]
    Tls(String),
    /// No HTTP answer (connection refused, DNS, TLS handshake, timeout).
    #[error("cannot reach Vault at {address}: {why}{}", hint_for(why))]
    Unreachable {
        /// The configured address.
        address: String,
        /// The cause chain.
        why: String,
    },
    /// 503 "Vault is sealed".
    #[error(
        "Vault at {address} is sealed (503): nothing can be read until it is unsealed; ask its operators to unseal it (`vault operator unseal`), then try again"
    )]
    Sealed {
        /// The configured address.
        address: String,
    },
    /// The AppRole login was refused.
    #[error(
        "Vault at {address} refused the AppRole login{} ({status}: {message}): check role_id and the secret_id (it may have expired or reached its use limit; issue a new one with `vault write -f auth/approle/role/<role>/secret-id`)",
        in_namespace(namespace)
    )]
    LoginRefused {
        /// The configured address.
        address: String,
        /// HTTP status.
        status: u16,
        /// Vault's message.
        message: String,
        /// The namespace logged into.
        namespace: Option<String>,
    },
    /// 403 on a read, after logging in again where that is possible.
    #[error(
        "Vault denied reading {mount}/{path} (403 permission denied): the {who} has no policy granting `read` on `{mount}/data/{path}`{} — add one (path \"{mount}/data/{path}\" {{ capabilities = [\"read\"] }}) to the {who}'s policies — or the token has expired or been revoked",
        in_namespace(namespace)
    )]
    PermissionDenied {
        /// The mount.
        mount: String,
        /// The path.
        path: String,
        /// `token` or `AppRole role`.
        who: &'static str,
        /// The namespace.
        namespace: Option<String>,
    },
    /// 404: nothing at that path, or no such mount.
    #[error(
        "Vault has no secret at {mount}/{path} (404{}): check that a KV version 2 engine is mounted at `{mount}/`{} and that `{path}` exists in it (`vault kv get -mount={mount} {path}`)",
        vault_says(message),
        in_namespace(namespace)
    )]
    NotFound {
        /// The mount.
        mount: String,
        /// The path.
        path: String,
        /// Vault's message, if any.
        message: Option<String>,
        /// The namespace.
        namespace: Option<String>,
    },
    /// The current version of the secret is deleted or destroyed.
    #[error(
        "the secret at {mount}/{path} is deleted in its current version{}: restore it (`vault kv undelete -mount={mount} -versions={} {path}`) or write a new version",
        version.map(|v| format!(" ({v})")).unwrap_or_default(),
        version.map(|v| v.to_string()).unwrap_or_else(|| "N".to_owned())
    )]
    Deleted {
        /// The mount.
        mount: String,
        /// The path.
        path: String,
        /// The deleted version.
        version: Option<u64>,
    },
    /// The secret exists but has no such key.
    #[error(
        "the secret at {mount}/{path} has no key `{key}`; its keys are: {}; fix the part after `#` in the reference",
        if present.is_empty() { "none".to_owned() } else { present.join(", ") }
    )]
    MissingKey {
        /// The mount.
        mount: String,
        /// The path.
        path: String,
        /// The key asked for.
        key: String,
        /// The keys the secret has (names only).
        present: Vec<String>,
    },
    /// Any other answer.
    #[error("Vault at {address} answered {status} to {what}: {message}{}", hint_for_status(*status))]
    Server {
        /// The configured address.
        address: String,
        /// What was asked.
        what: String,
        /// HTTP status.
        status: u16,
        /// Vault's message.
        message: String,
    },
    /// An answer that is not what Vault sends.
    #[error(
        "Vault at {address} sent an unexpected answer to {what}: {why}; check that the address points at Vault and that the mount is a KV version 2 engine (KV version 1 is not supported)"
    )]
    Malformed {
        /// The configured address.
        address: String,
        /// What was asked.
        what: String,
        /// What was wrong.
        why: String,
    },
}

fn in_namespace(ns: &Option<String>) -> String {
    ns.as_ref()
        .map(|n| format!(" in namespace `{n}`"))
        .unwrap_or_default()
}

fn vault_says(message: &Option<String>) -> String {
    message
        .as_ref()
        .map(|m| format!(": {m}"))
        .unwrap_or_default()
}

fn hint_for(why: &str) -> &'static str {
    let w = why.to_ascii_lowercase();
    if w.contains("certificate") || w.contains("unknownissuer") || w.contains("invalid peer") {
        "; if Vault's certificate is signed by a private CA, set ca_file in [secrets.vault] to that CA's PEM file"
    } else if w.contains("refused") {
        "; check the address and that Vault is running"
    } else {
        ""
    }
}

fn hint_for_status(status: u16) -> &'static str {
    match status {
        300..=399 => {
            "; redirects are not followed (they would carry the token elsewhere): set address to the active Vault node or its load balancer"
        }
        429 => "; Vault is rate-limiting or is a standby node: try again later",
        503 => "; it may be a standby node without request forwarding, or still starting",
        _ => "",
    }
}

/// A Vault KV v2 client. Cheap to share behind an `Arc`; reads may run concurrently.
pub struct VaultClient {
    address: String,
    base: url::Url,
    namespace: Option<String>,
    auth: VaultAuth,
    cache_for: Duration,
    http: reqwest::Client,
    /// The AppRole token in use; logins are serialised through this lock.
    token: tokio::sync::Mutex<Option<Token>>,
    /// Per (mount, path): the secret's keys and values, and until when.
    values: Mutex<HashMap<(String, String), Cached>>,
}

impl fmt::Debug for VaultClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VaultClient")
            .field("address", &self.address)
            .field("namespace", &self.namespace)
            .field("auth", &self.auth)
            .field("cache", &self.cache_for)
            .finish_non_exhaustive()
    }
}

struct Token {
    value: Zeroizing<String>,
    /// When to fetch a new one; `None`: it does not expire.
    renew_at: Option<Instant>,
}

struct Cached {
    data: BTreeMap<String, Zeroizing<String>>,
    until: Instant,
}

/// One answer: status, and the body (kept in a wiped buffer, it may hold values).
struct Answer {
    status: u16,
    body: Zeroizing<Vec<u8>>,
}

impl Answer {
    fn json(&self) -> Option<Value> {
        serde_json::from_slice(&self.body).ok()
    }
}

impl VaultClient {
    /// Checks the address and the CA file and builds the HTTP client; talks to nobody yet.
    pub fn new(config: VaultConfig) -> Result<VaultClient, VaultError> {
        let address = config.address.trim().to_owned();
        let bad = |why: &str| VaultError::BadAddress {
            address: address.clone(),
            why: why.to_owned(),
        };
        let mut base = url::Url::parse(&address).map_err(|e| bad(&e.to_string()))?;
        match base.scheme() {
            "https" => {}
            "http" => {
                if !base.host_str().is_some_and(crate::link::url::is_loopback) {
                    return Err(VaultError::InsecureAddress { address });
                }
            }
            _ => {
                return Err(bad(
                    "it must start with https:// (or http:// to this machine)",
                ));
            }
        }
        if base.host_str().is_none_or(str::is_empty) {
            return Err(bad("it has no host"));
        }
        if base.query().is_some() || base.fragment().is_some() {
            return Err(bad("it must not have a query or a fragment"));
        }
        if !base.username().is_empty() || base.password().is_some() {
            return Err(bad("it must not carry a user name or password"));
        }
        if base.cannot_be_a_base() {
            return Err(bad("it is not a base URL"));
        }
        // A trailing slash or not, the same base.
        if let Ok(mut segments) = base.path_segments_mut() {
            segments.pop_if_empty();
        }
        if let Some(ns) = &config.namespace
            && HeaderValue::from_str(ns).is_err()
        {
            return Err(bad(&format!(
                "the namespace `{}` is not a valid header value",
                ns.escape_debug()
            )));
        }
        let tls = crate::link::tls::client_config(config.ca_file.as_deref(), &[b"http/1.1"])
            .map_err(|e| match e {
                crate::link::LinkError::CaFile { path, why } => VaultError::CaFile { path, why },
                other => VaultError::Tls(other.to_string()),
            })?;
        let http = reqwest::Client::builder()
            .tls_backend_preconfigured((*tls).clone())
            .timeout(Duration::from_secs(20))
            .connect_timeout(Duration::from_secs(10))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| VaultError::Tls(e.to_string()))?;
        Ok(VaultClient {
            address,
            base,
            namespace: config.namespace.filter(|n| !n.is_empty()),
            auth: config.auth,
            cache_for: config.cache,
            http,
            token: tokio::sync::Mutex::new(None),
            values: Mutex::new(HashMap::new()),
        })
    }

    /// The value of `key` in the KV v2 secret at `mount`/`path` (from the cache while it is
    /// fresh).
    pub async fn read(
        &self,
        mount: &str,
        path: &str,
        key: &str,
    ) -> Result<Zeroizing<String>, VaultError> {
        let mount = mount.trim_matches('/');
        let path = path.trim_matches('/');
        let bad = |why| VaultError::BadReference {
            reference: format!("{mount}/{path}#{key}"),
            why,
        };
        if mount.is_empty() || path.is_empty() || key.is_empty() {
            return Err(bad("the mount, the path and the key must all be given"));
        }
        // The URL would drop these segments silently and read another secret.
        if mount
            .split('/')
            .chain(path.split('/'))
            .any(|s| s.is_empty() || s == "." || s == "..")
        {
            return Err(bad("the mount or path has an empty, `.` or `..` segment"));
        }
        let cache_key = (mount.to_owned(), path.to_owned());
        let cached = {
            let values = self.values.lock().unwrap_or_else(|e| e.into_inner());
            values
                .get(&cache_key)
                .filter(|c| c.until > Instant::now())
                .map(|c| pick(&c.data, mount, path, key))
        };
        if let Some(answer) = cached {
            return answer;
        }
        let (data, ttl) = self.fetch(mount, path).await?;
        let answer = pick(&data, mount, path, key);
        let now = Instant::now();
        if let Some(until) = now.checked_add(ttl.min(CACHE_MAX))
            && !ttl.is_zero()
        {
            let mut values = self.values.lock().unwrap_or_else(|e| e.into_inner());
            values.retain(|_, c| c.until > now);
            values.insert(cache_key, Cached { data, until });
        }
        answer
    }

    /// [`VaultClient::read`] of a parsed reference.
    pub async fn read_ref(&self, reference: &VaultRef) -> Result<Zeroizing<String>, VaultError> {
        self.read(&reference.mount, &reference.path, &reference.key)
            .await
    }

    /// The secret's keys and values, and how long they may be kept.
    async fn fetch(
        &self,
        mount: &str,
        path: &str,
    ) -> Result<(BTreeMap<String, Zeroizing<String>>, Duration), VaultError> {
        let mut url = self.base.clone();
        if let Ok(mut segments) = url.path_segments_mut() {
            segments.push("v1");
            segments.extend(mount.split('/').filter(|s| !s.is_empty()));
            segments.push("data");
            segments.extend(path.split('/').filter(|s| !s.is_empty()));
        }
        let what = format!("reading {mount}/{path}");
        let mut relogged = false;
        let answer = loop {
            let token = self.token().await?;
            let mut value = HeaderValue::from_str(&token).map_err(|_| VaultError::BadAddress {
                address: self.address.clone(),
                why: "the Vault token is not a valid header value (it has line breaks or control characters)"
                    .to_owned(),
            })?;
            value.set_sensitive(true);
            let request =
                self.with_namespace(self.http.get(url.clone()).header(TOKEN_HEADER, value));
            let answer = self.send(request).await?;
            if answer.status == 403 && !relogged && matches!(self.auth, VaultAuth::AppRole { .. }) {
                // The token may have been revoked or expired early: a new one, once.
                relogged = true;
                self.forget_token(&token).await;
                continue;
            }
            break answer;
        };
        match answer.status {
            200 => {}
            403 => {
                return Err(VaultError::PermissionDenied {
                    mount: mount.to_owned(),
                    path: path.to_owned(),
                    who: match self.auth {
                        VaultAuth::Token(_) => "token",
                        VaultAuth::AppRole { .. } => "AppRole role",
                    },
                    namespace: self.namespace.clone(),
                });
            }
            404 => {
                let body = answer.json();
                let metadata = body
                    .as_ref()
                    .and_then(|b| b.pointer("/data/metadata"))
                    .filter(|m| m.is_object());
                if let Some(m) = metadata {
                    let deleted = m
                        .get("deletion_time")
                        .and_then(Value::as_str)
                        .is_some_and(|t| !t.is_empty());
                    let destroyed = m.get("destroyed").and_then(Value::as_bool) == Some(true);
                    if deleted || destroyed {
                        return Err(VaultError::Deleted {
                            mount: mount.to_owned(),
                            path: path.to_owned(),
                            version: m.get("version").and_then(Value::as_u64),
                        });
                    }
                }
                let message = vault_message(&answer, &self.secrets()).filter(|m| !m.is_empty());
                return Err(VaultError::NotFound {
                    mount: mount.to_owned(),
                    path: path.to_owned(),
                    message,
                    namespace: self.namespace.clone(),
                });
            }
            _ => return Err(self.unexpected(&answer, &what)),
        }
        let malformed = |why: &str| VaultError::Malformed {
            address: self.address.clone(),
            what: what.clone(),
            why: why.to_owned(),
        };
        let mut body: Value =
            serde_json::from_slice(&answer.body).map_err(|_| malformed("the body is not JSON"))?;
        let lease = body
            .get("lease_duration")
            .and_then(Value::as_u64)
            .unwrap_or(0);
        let data = match body.pointer_mut("/data/data").map(Value::take) {
            Some(Value::Object(map)) => map,
            Some(Value::Null) => {
                return Err(VaultError::Deleted {
                    mount: mount.to_owned(),
                    path: path.to_owned(),
                    version: body
                        .pointer("/data/metadata/version")
                        .and_then(Value::as_u64),
                });
            }
            _ => return Err(malformed("it has no data.data object")),
        };
        let data = data
            .into_iter()
            .map(|(k, v)| {
                let v = match v {
                    Value::String(s) => Zeroizing::new(s),
                    other => Zeroizing::new(other.to_string()),
                };
                (k, v)
            })
            .collect();
        let ttl = if lease > 0 {
            Duration::from_secs(lease)
        } else {
            self.cache_for
        };
        tracing::debug!(
            mount,
            path,
            cache_secs = ttl.as_secs(),
            "read a secret from Vault"
        );
        Ok((data, ttl))
    }

    /// The token to use: the configured one, or a fresh AppRole token.
    async fn token(&self) -> Result<Zeroizing<String>, VaultError> {
        let (role_id, secret_id) = match &self.auth {
            VaultAuth::Token(t) => return Ok(t.clone()),
            VaultAuth::AppRole { role_id, secret_id } => (role_id, secret_id),
        };
        let mut held = self.token.lock().await;
        if let Some(t) = held.as_ref()
            && t.renew_at.is_none_or(|at| Instant::now() < at)
        {
            return Ok(t.value.clone());
        }
        *held = None;
        let token = self.login(role_id, secret_id).await?;
        let value = token.value.clone();
        *held = Some(token);
        Ok(value)
    }

    async fn forget_token(&self, used: &str) {
        let mut held = self.token.lock().await;
        if held.as_ref().is_some_and(|t| t.value.as_str() == used) {
            *held = None;
        }
    }

    async fn login(&self, role_id: &str, secret_id: &str) -> Result<Token, VaultError> {
        let mut url = self.base.clone();
        if let Ok(mut segments) = url.path_segments_mut() {
            segments.extend(["v1", "auth", "approle", "login"]);
        }
        let body = Zeroizing::new(
            serde_json::to_vec(&serde_json::json!({"role_id": role_id, "secret_id": secret_id}))
                .unwrap_or_default(),
        );
        let started = Instant::now();
        let request = self.with_namespace(
            self.http
                .post(url)
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body.to_vec()),
        );
        let answer = self.send(request).await?;
        match answer.status {
            200 => {}
            400 | 401 | 403 => {
                return Err(VaultError::LoginRefused {
                    address: self.address.clone(),
                    status: answer.status,
                    message: vault_message(&answer, &self.secrets())
                        .unwrap_or_else(|| "no message".to_owned()),
                    namespace: self.namespace.clone(),
                });
            }
            _ => return Err(self.unexpected(&answer, "the AppRole login")),
        }
        let mut body: Value =
            serde_json::from_slice(&answer.body).map_err(|_| VaultError::Malformed {
                address: self.address.clone(),
                what: "the AppRole login".to_owned(),
                why: "the body is not JSON".to_owned(),
            })?;
        let lease = body
            .pointer("/auth/lease_duration")
            .and_then(Value::as_u64)
            .unwrap_or(0);
        let value = match body.pointer_mut("/auth/client_token").map(Value::take) {
            Some(Value::String(t)) if !t.is_empty() => Zeroizing::new(t),
            _ => {
                return Err(VaultError::Malformed {
                    address: self.address.clone(),
                    what: "the AppRole login".to_owned(),
                    why: "it has no auth.client_token".to_owned(),
                });
            }
        };
        // A lease too long to count from now is taken as no end.
        let renew_at = (lease > 0)
            .then(|| {
                let lease = Duration::from_secs(lease);
                started.checked_add(lease - (lease / 10).min(TOKEN_MARGIN_MAX))
            })
            .flatten();
        tracing::debug!(lease_secs = lease, "logged in to Vault with AppRole");
        Ok(Token { value, renew_at })
    }

    fn with_namespace(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match self.namespace.as_deref().map(HeaderValue::from_str) {
            Some(Ok(ns)) => request.header(NAMESPACE_HEADER, ns),
            _ => request,
        }
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> Result<Answer, VaultError> {
        let unreachable = |e: reqwest::Error| VaultError::Unreachable {
            address: self.address.clone(),
            why: error_chain(&e),
        };
        let response = request.send().await.map_err(unreachable)?;
        let status = response.status().as_u16();
        let bytes = response.bytes().await.map_err(unreachable)?;
        let answer = Answer {
            status,
            body: Zeroizing::new(Vec::from(bytes)),
        };
        if status == 503 && is_sealed(&answer) {
            return Err(VaultError::Sealed {
                address: self.address.clone(),
            });
        }
        Ok(answer)
    }

    fn unexpected(&self, answer: &Answer, what: &str) -> VaultError {
        VaultError::Server {
            address: self.address.clone(),
            what: what.to_owned(),
            status: answer.status,
            message: vault_message(answer, &self.secrets())
                .unwrap_or_else(|| "no message".to_owned()),
        }
    }

    /// What must never appear in a message: the token or `secret_id`, and cached values.
    fn secrets(&self) -> Vec<Zeroizing<String>> {
        let mut out = match &self.auth {
            VaultAuth::Token(t) => vec![t.clone()],
            VaultAuth::AppRole { secret_id, .. } => vec![secret_id.clone()],
        };
        if let Ok(held) = self.token.try_lock()
            && let Some(t) = held.as_ref()
        {
            out.push(t.value.clone());
        }
        let values = self.values.lock().unwrap_or_else(|e| e.into_inner());
        for c in values.values() {
            out.extend(c.data.values().cloned());
        }
        out
    }
}

/// The value of `key`, or which keys there are.
fn pick(
    data: &BTreeMap<String, Zeroizing<String>>,
    mount: &str,
    path: &str,
    key: &str,
) -> Result<Zeroizing<String>, VaultError> {
    data.get(key)
        .cloned()
        .ok_or_else(|| VaultError::MissingKey {
            mount: mount.to_owned(),
            path: path.to_owned(),
            key: key.to_owned(),
            present: data.keys().cloned().collect(),
        })
}

fn is_sealed(answer: &Answer) -> bool {
    String::from_utf8_lossy(&answer.body)
        .to_ascii_lowercase()
        .contains("sealed")
}

/// Vault's `{"errors": [...]}` joined, or the body's text; shortened, with every secret the
/// client knows blotted out.
fn vault_message(answer: &Answer, secrets: &[Zeroizing<String>]) -> Option<String> {
    let from_json = serde_json::from_slice::<Value>(&answer.body)
        .ok()
        .and_then(|v| {
            v.get("errors").and_then(Value::as_array).map(|errors| {
                errors
                    .iter()
                    .filter_map(Value::as_str)
                    .collect::<Vec<_>>()
                    .join("; ")
            })
        });
    let text = match from_json {
        Some(t) => t,
        None => String::from_utf8_lossy(&answer.body).trim().to_owned(),
    };
    if text.is_empty() {
        return None;
    }
    let mut text = Zeroizing::new(text);
    for s in secrets.iter().filter(|s| !s.is_empty()) {
        if text.contains(s.as_str()) {
            text = Zeroizing::new(text.replace(s.as_str(), "<hidden>"));
        }
    }
    Some(crate::relay::decide::shorten(&text, 300))
}

/// An error and its causes, joined: reqwest's top level alone says little.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}
