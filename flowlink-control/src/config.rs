//! The control plane's settings: one table ([`SETTINGS`]) says every key, its environment
//! variable, its flag, its default and what it does. Values come from, in rising precedence,
//! the defaults, the TOML file (`--config` / `FLOWLINK_CONFIG`), `FLOWLINK_*` environment
//! variables and command-line flags. A value that does not parse stops start-up with an error
//! naming where it came from. `CONFIG.md` is generated from the table (`flowlink-control
//! config-docs`) and a test keeps the two equal.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use serde::Deserialize;

/// One setting: where it can be given and what it means.
#[derive(Debug, Clone, Copy)]
pub struct Setting {
    /// Key in the TOML file.
    pub key: &'static str,
    /// Environment variable.
    pub env: &'static str,
    /// Command-line flag of `serve` (and `migrate` where it applies), without the dashes.
    pub flag: &'static str,
    /// The default, as text (empty = unset).
    pub default: &'static str,
    /// What it does, for people.
    pub doc: &'static str,
}

/// Every setting the control plane reads, in the order `CONFIG.md` lists them.
pub const SETTINGS: &[Setting] = &[
    Setting {
        key: "listen",
        env: "FLOWLINK_LISTEN",
        flag: "listen",
        default: "127.0.0.1:8080",
        doc: "Address and port to listen on. Use 0.0.0.0:8080 (or [::]:8080) only behind a firewall or with TLS.",
    },
    Setting {
        key: "data_dir",
        env: "FLOWLINK_DATA_DIR",
        flag: "data-dir",
        default: "(platform data dir)/flowlink-control",
        doc: "Directory for the embedded SQLite database and the first-run token. Created 0700 if missing.",
    },
    Setting {
        key: "database_url",
        env: "FLOWLINK_DATABASE_URL",
        flag: "database-url",
        default: "sqlite://<data_dir>/control.sqlite3",
        doc: "Database: `sqlite://PATH` (embedded, one node) or `postgres://USER@HOST:PORT/DB` (production).",
    },
    Setting {
        key: "public_url",
        env: "FLOWLINK_PUBLIC_URL",
        flag: "public-url",
        default: "http(s)://<listen>",
        doc: "The URL people and proxies use to reach this server; used in the first-run link and OAuth redirect URIs.",
    },
    Setting {
        key: "tls_cert",
        env: "FLOWLINK_TLS_CERT",
        flag: "tls-cert",
        default: "",
        doc: "PEM certificate chain. With `tls_key`, the server speaks HTTPS itself; without both it speaks plain HTTP (put it behind a TLS-terminating proxy).",
    },
    Setting {
        key: "tls_key",
        env: "FLOWLINK_TLS_KEY",
        flag: "tls-key",
        default: "",
        doc: "PEM private key (PKCS#8, PKCS#1 or SEC1) for `tls_cert`.",
    },
    Setting {
        key: "trusted_proxies",
        env: "FLOWLINK_TRUSTED_PROXIES",
        flag: "trusted-proxies",
        default: "",
        doc: "Comma-separated IPs or CIDRs of reverse proxies whose X-Forwarded-For / X-Forwarded-Proto are believed. From any other peer these headers are ignored.",
    },
    Setting {
        key: "session_idle_timeout_secs",
        env: "FLOWLINK_SESSION_IDLE_TIMEOUT_SECS",
        flag: "session-idle-timeout-secs",
        default: "7200",
        doc: "A browser session unused for this long is signed out.",
    },
    Setting {
        key: "session_absolute_timeout_secs",
        env: "FLOWLINK_SESSION_ABSOLUTE_TIMEOUT_SECS",
        flag: "session-absolute-timeout-secs",
        default: "86400",
        doc: "A browser session ends this long after sign-in, used or not.",
    },
    Setting {
        key: "login_max_failures",
        env: "FLOWLINK_LOGIN_MAX_FAILURES",
        flag: "login-max-failures",
        default: "5",
        doc: "Consecutive failed sign-ins (password or second factor) that lock an account.",
    },
    Setting {
        key: "login_lockout_secs",
        env: "FLOWLINK_LOGIN_LOCKOUT_SECS",
        flag: "login-lockout-secs",
        default: "900",
        doc: "How long a locked account stays locked.",
    },
    Setting {
        key: "login_attempts_per_minute_per_ip",
        env: "FLOWLINK_LOGIN_ATTEMPTS_PER_MINUTE_PER_IP",
        flag: "login-attempts-per-minute-per-ip",
        default: "20",
        doc: "Sign-in attempts one client address may make per minute (all accounts together); more get HTTP 429.",
    },
    Setting {
        key: "link_heartbeat_secs",
        env: "FLOWLINK_LINK_HEARTBEAT_SECS",
        flag: "link-heartbeat-secs",
        default: "30",
        doc: "How often enrolled proxies send heartbeats on their link. A link silent for three intervals is closed; a device is `stale` after two missed intervals and `offline` after five.",
    },
    Setting {
        key: "log",
        env: "FLOWLINK_LOG",
        flag: "log",
        default: "info",
        doc: "Log filter (tracing `EnvFilter` syntax), e.g. `info,flowlink_control=debug`.",
    },
];

/// Where a value came from, for error messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// The built-in default.
    Default,
    /// A key of the TOML file.
    File(PathBuf),
    /// An environment variable.
    Env,
    /// A command-line flag.
    Flag,
}

/// A setting that could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A value did not parse.
    #[error("{origin}: `{value}` is not valid: {problem}")]
    Invalid {
        /// "--listen", "FLOWLINK_LISTEN" or "config file /etc/x.toml, key `listen`".
        origin: String,
        /// The offending text.
        value: String,
        /// Why, and what is expected.
        problem: String,
    },
    /// The TOML file could not be read or parsed.
    #[error("config file {path}: {problem}")]
    File {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        problem: String,
    },
    /// Two settings contradict each other.
    #[error("{0}")]
    Conflict(String),
}

/// An OAuth / OIDC sign-in provider, from `[oauth.<name>]` in the TOML file. The client secret
/// may instead come from `FLOWLINK_OAUTH_<NAME>_CLIENT_SECRET`, so it need not sit in the file.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct OAuthProviderConfig {
    /// `github`, `yandex`, `vk` or `oidc` (any OpenID Connect provider).
    pub kind: String,
    /// The client id registered with the provider.
    pub client_id: String,
    /// The client secret (optional for public clients that use PKCE only).
    #[serde(default)]
    pub client_secret: Option<String>,
    /// Overrides the provider's authorization endpoint (self-hosted or test providers).
    #[serde(default)]
    pub authorize_url: Option<String>,
    /// Overrides the token endpoint.
    #[serde(default)]
    pub token_url: Option<String>,
    /// Overrides the user-info endpoint (GitHub: the API base's `/user`).
    #[serde(default)]
    pub userinfo_url: Option<String>,
    /// GitHub only: the e-mail list endpoint (default `https://api.github.com/user/emails`).
    #[serde(default)]
    pub emails_url: Option<String>,
    /// OIDC only: the issuer the ID token must name.
    #[serde(default)]
    pub issuer: Option<String>,
    /// OIDC only: where the provider's signing keys are (JWKS).
    #[serde(default)]
    pub jwks_url: Option<String>,
    /// Scopes to ask for (defaults per kind).
    #[serde(default)]
    pub scopes: Option<Vec<String>>,
    /// Button text ("Sign in with …"); defaults per kind.
    #[serde(default)]
    pub display_name: Option<String>,
}

/// The validated configuration the server runs with.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where to listen.
    pub listen: SocketAddr,
    /// The data directory.
    pub data_dir: PathBuf,
    /// The database URL.
    pub database_url: String,
    /// The externally visible base URL, without a trailing slash.
    pub public_url: String,
    /// Certificate and key, when the server terminates TLS itself.
    pub tls: Option<TlsFiles>,
    /// Peers whose forwarding headers are believed.
    pub trusted_proxies: Vec<IpNet>,
    /// Idle session timeout.
    pub session_idle_timeout: Duration,
    /// Absolute session timeout.
    pub session_absolute_timeout: Duration,
    /// Failures before an account locks.
    pub login_max_failures: u32,
    /// How long it stays locked.
    pub login_lockout: Duration,
    /// Sign-in attempts per minute per client address.
    pub login_attempts_per_minute_per_ip: u32,
    /// How often proxies send heartbeats on their link.
    pub link_heartbeat: Duration,
    /// The log filter.
    pub log: String,
    /// Configured OAuth providers by name (the name appears in URLs).
    pub oauth: BTreeMap<String, OAuthProviderConfig>,
}

/// Certificate and key paths.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// PEM certificate chain.
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
}

/// An IP network (address and prefix length) for `trusted_proxies`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpNet {
    addr: IpAddr,
    prefix: u8,
}

impl IpNet {
    /// Whether `ip` lies inside the network (IPv4-mapped IPv6 addresses count as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical_ip(ip);
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

/// IPv4-mapped IPv6 addresses (`::ffff:1.2.3.4`) as plain IPv4.
pub fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    }
}

impl FromStr for IpNet {
    type Err = String;
    fn from_str(s: &str) -> Result<IpNet, String> {
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = addr
            .trim()
            .parse()
            .map_err(|_| format!("`{addr}` is not an IP address"))?;
        let addr = canonical_ip(addr);
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("prefix length `{p}` is not 0..={max}"))?,
        };
        Ok(IpNet { addr, prefix })
    }
}

impl fmt::Display for IpNet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// The layers before validation: the TOML file's text values, and the flags given.
#[derive(Debug, Default, Clone)]
pub struct Layers {
    /// The TOML file, if one was given.
    pub file: Option<PathBuf>,
    /// Flag values by setting key.
    pub flags: BTreeMap<&'static str, String>,
    /// Environment variables (normally `std::env::vars()`; tests pass their own).
    pub env: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize, Default)]
struct FileOAuth {
    #[serde(default)]
    oauth: BTreeMap<String, OAuthProviderConfig>,
}

impl Config {
    /// Resolves every setting from the layers and validates it.
    pub fn load(layers: &Layers) -> Result<Config, ConfigError> {
        let mut values: BTreeMap<&'static str, (String, String)> = BTreeMap::new();
        let mut oauth = BTreeMap::new();
        if let Some(path) = &layers.file {
            let text = std::fs::read_to_string(path).map_err(|e| ConfigError::File {
                path: path.clone(),
                problem: format!("cannot read it: {e}"),
            })?;
            let table: toml::Table =
                text.parse()
                    .map_err(|e: toml::de::Error| ConfigError::File {
                        path: path.clone(),
                        problem: e.to_string(),
                    })?;
            for (key, value) in &table {
                if key == "oauth" {
                    continue;
                }
                let setting =
                    SETTINGS
                        .iter()
                        .find(|s| s.key == key)
                        .ok_or_else(|| ConfigError::File {
                            path: path.clone(),
                            problem: format!(
                                "unknown key `{key}`; the keys are listed in CONFIG.md ({})",
                                SETTINGS
                                    .iter()
                                    .map(|s| s.key)
                                    .collect::<Vec<_>>()
                                    .join(", ")
                            ),
                        })?;
                let text = match value {
                    toml::Value::String(s) => s.clone(),
                    toml::Value::Integer(i) => i.to_string(),
                    toml::Value::Boolean(b) => b.to_string(),
                    toml::Value::Array(items) => {
                        let mut parts = Vec::new();
                        for item in items {
                            match item {
                                toml::Value::String(s) => parts.push(s.clone()),
                                other => {
                                    return Err(ConfigError::File {
                                        path: path.clone(),
                                        problem: format!(
                                            "key `{key}`: list items must be strings, found `{other:?}`"
                                        ),
                                    });
                                }
                            }
                        }
                        parts.join(",")
                    }
                    other => {
                        return Err(ConfigError::File {
                            path: path.clone(),
                            problem: format!("key `{key}`: unsupported value `{other:?}`"),
                        });
                    }
                };
                values.insert(
                    setting.key,
                    (text, format!("config file {}, key `{key}`", path.display())),
                );
            }
            let parsed: FileOAuth = toml::from_str(&text).map_err(|e| ConfigError::File {
                path: path.clone(),
                problem: e.to_string(),
            })?;
            oauth = parsed.oauth;
        }
        for setting in SETTINGS {
            if let Some(v) = layers.env.get(setting.env) {
                values.insert(setting.key, (v.clone(), setting.env.to_string()));
            }
            if let Some(v) = layers.flags.get(setting.key) {
                values.insert(setting.key, (v.clone(), format!("--{}", setting.flag)));
            }
        }
        for (name, provider) in oauth.iter_mut() {
            validate_provider_name(name).map_err(|problem| ConfigError::Invalid {
                origin: "config file, table `[oauth.<name>]`".into(),
                value: name.clone(),
                problem,
            })?;
            let env = format!(
                "FLOWLINK_OAUTH_{}_CLIENT_SECRET",
                name.to_ascii_uppercase().replace('-', "_")
            );
            if let Some(secret) = layers.env.get(&env) {
                provider.client_secret = Some(secret.clone());
            }
            if !matches!(provider.kind.as_str(), "github" | "yandex" | "vk" | "oidc") {
                return Err(ConfigError::Invalid {
                    origin: format!("config file, `[oauth.{name}]` key `kind`"),
                    value: provider.kind.clone(),
                    problem: "expected github, yandex, vk or oidc".into(),
                });
            }
        }

        let get = |key: &str| values.get(key).map(|(v, o)| (v.as_str(), o.as_str()));
        let listen: SocketAddr = parse(get("listen"), "127.0.0.1:8080", |s| {
            s.parse::<SocketAddr>()
                .map_err(|_| "expected ADDRESS:PORT, e.g. 127.0.0.1:8080 or [::1]:8080".into())
        })?;
        let data_dir = match get("data_dir") {
            Some((v, _)) => PathBuf::from(v),
            None => default_data_dir(),
        };
        let database_url = match get("database_url") {
            Some((v, origin)) => {
                check_database_url(v).map_err(|problem| ConfigError::Invalid {
                    origin: origin.into(),
                    value: redact_url(v),
                    problem,
                })?;
                v.to_string()
            }
            None => format!("sqlite://{}", data_dir.join("control.sqlite3").display()),
        };
        let tls = match (get("tls_cert"), get("tls_key")) {
            (Some((c, _)), Some((k, _))) if !c.is_empty() && !k.is_empty() => Some(TlsFiles {
                cert: PathBuf::from(c),
                key: PathBuf::from(k),
            }),
            (None, None) => None,
            (Some((c, _)), Some((k, _))) if c.is_empty() && k.is_empty() => None,
            _ => {
                return Err(ConfigError::Conflict(
                    "tls_cert and tls_key go together: give both (HTTPS) or neither (plain HTTP behind a TLS-terminating proxy)".into(),
                ));
            }
        };
        let public_url = match get("public_url") {
            Some((v, origin)) => {
                let url = url::Url::parse(v).map_err(|e| ConfigError::Invalid {
                    origin: origin.into(),
                    value: v.into(),
                    problem: format!("not a URL ({e}); expected e.g. https://flowlink.example.com"),
                })?;
                if !matches!(url.scheme(), "http" | "https") {
                    return Err(ConfigError::Invalid {
                        origin: origin.into(),
                        value: v.into(),
                        problem: "the scheme must be http or https".into(),
                    });
                }
                v.trim_end_matches('/').to_string()
            }
            None => {
                let scheme = if tls.is_some() { "https" } else { "http" };
                format!("{scheme}://{listen}")
            }
        };
        let trusted_proxies = match get("trusted_proxies") {
            None => Vec::new(),
            Some((v, origin)) => v
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| {
                    s.parse::<IpNet>().map_err(|problem| ConfigError::Invalid {
                        origin: origin.into(),
                        value: s.into(),
                        problem,
                    })
                })
                .collect::<Result<_, _>>()?,
        };
        let secs = |key: &str, default: &str, min: u64| {
            parse(get(key), default, |s| {
                s.parse::<u64>()
                    .ok()
                    .filter(|n| *n >= min)
                    .map(Duration::from_secs)
                    .ok_or_else(|| format!("expected a whole number of seconds, at least {min}"))
            })
        };
        let count = |key: &str, default: &str| {
            parse(get(key), default, |s| {
                s.parse::<u32>()
                    .ok()
                    .filter(|n| *n >= 1)
                    .ok_or_else(|| "expected a whole number, at least 1".to_string())
            })
        };
        let session_idle_timeout = secs("session_idle_timeout_secs", "7200", 60)?;
        let session_absolute_timeout = secs("session_absolute_timeout_secs", "86400", 60)?;
        if session_absolute_timeout < session_idle_timeout {
            return Err(ConfigError::Conflict(format!(
                "session_absolute_timeout_secs ({}) is shorter than session_idle_timeout_secs ({}); the absolute limit must be the longer one",
                session_absolute_timeout.as_secs(),
                session_idle_timeout.as_secs()
            )));
        }
        Ok(Config {
            listen,
            data_dir,
            database_url,
            public_url,
            tls,
            trusted_proxies,
            session_idle_timeout,
            session_absolute_timeout,
            login_max_failures: count("login_max_failures", "5")?,
            login_lockout: secs("login_lockout_secs", "900", 1)?,
            login_attempts_per_minute_per_ip: count("login_attempts_per_minute_per_ip", "20")?,
            link_heartbeat: secs("link_heartbeat_secs", "30", 1)?,
            log: get("log")
                .map(|(v, _)| v.to_string())
                .unwrap_or_else(|| "info".into()),
            oauth,
        })
    }

    /// Whether the server itself terminates TLS.
    pub fn serves_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// A configuration for tests and embedding: SQLite in `data_dir`, defaults elsewhere.
    pub fn for_data_dir(data_dir: &Path) -> Config {
        let layers = Layers {
            flags: BTreeMap::from([("data_dir", data_dir.display().to_string())]),
            ..Layers::default()
        };
        // The defaults and one path always validate.
        Config::load(&layers).unwrap_or_else(|e| panic!("built-in defaults are invalid: {e}"))
    }
}

fn parse<T>(
    value: Option<(&str, &str)>,
    default: &str,
    f: impl Fn(&str) -> Result<T, String>,
) -> Result<T, ConfigError> {
    match value {
        Some((v, origin)) => f(v).map_err(|problem| ConfigError::Invalid {
            origin: origin.into(),
            value: v.into(),
            problem,
        }),
        None => f(default).map_err(|problem| ConfigError::Invalid {
            origin: "built-in default".into(),
            value: default.into(),
            problem,
        }),
    }
}

fn validate_provider_name(name: &str) -> Result<(), String> {
    if !name.is_empty()
        && name.len() <= 32
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        Ok(())
    } else {
        Err("provider names are 1-32 characters of a-z, 0-9 and `-` (they appear in URLs)".into())
    }
}

/// Checks that a database URL names an engine FlowLink supports.
pub fn check_database_url(url: &str) -> Result<(), String> {
    if url.starts_with("sqlite:")
        || url.starts_with("postgres://")
        || url.starts_with("postgresql://")
    {
        Ok(())
    } else {
        Err("expected sqlite://PATH or postgres://USER@HOST:PORT/DATABASE".into())
    }
}

/// A database URL with any password replaced, for messages and logs.
pub fn redact_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("REDACTED"));
            u.to_string()
        }
        _ => url.to_string(),
    }
}

/// `$XDG_DATA_HOME/flowlink-control` or the platform's equivalent.
pub fn default_data_dir() -> PathBuf {
    directories::ProjectDirs::from("", "", "flowlink-control")
        .map(|d| d.data_dir().to_path_buf())
        .unwrap_or_else(|| PathBuf::from("flowlink-control-data"))
}

/// `CONFIG.md`, generated from [`SETTINGS`].
pub fn markdown() -> String {
    let mut out = String::from(
        "# flowlink-control configuration\n\n\
         Generated by `flowlink-control config-docs` from `flowlink-control/src/config.rs`; a test keeps\n\
         this file equal to the code.\n\n\
         Each setting can be given, in rising precedence, as a key of the TOML file named by `--config`\n\
         (or `FLOWLINK_CONFIG`), as an environment variable, or as a flag of `flowlink-control serve`.\n\
         A value that does not parse stops start-up with a message naming where it came from.\n\n\
         | key | environment | flag | default | meaning |\n|---|---|---|---|---|\n",
    );
    for s in SETTINGS {
        let default = if s.default.is_empty() {
            "(unset)".to_string()
        } else {
            format!("`{}`", s.default)
        };
        out.push_str(&format!(
            "| `{}` | `{}` | `--{}` | {} | {} |\n",
            s.key, s.env, s.flag, default, s.doc
        ));
    }
    out.push_str(
        "\n## OAuth / OpenID Connect sign-in\n\n\
         Providers are tables of the TOML file only, one per provider; the table name appears in URLs\n\
         (`/api/v1/auth/oauth/<name>/start`). The client secret can come from\n\
         `FLOWLINK_OAUTH_<NAME>_CLIENT_SECRET` instead of the file. The redirect URI to register with\n\
         the provider is `<public_url>/api/v1/auth/oauth/<name>/callback`.\n\n\
         ```toml\n\
         [oauth.github]\n\
         kind = \"github\"            # github | yandex | vk | oidc\n\
         client_id = \"Iv1.0123\"\n\
         client_secret = \"…\"        # or FLOWLINK_OAUTH_GITHUB_CLIENT_SECRET\n\
         # authorize_url, token_url, userinfo_url, emails_url (GitHub), issuer and jwks_url (OIDC),\n\
         # scopes and display_name override the provider's defaults (self-hosted or test providers).\n\
         # Endpoints must be https://, except on loopback hosts (local test providers).\n\
         ```\n",
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layers(env: &[(&str, &str)], flags: &[(&'static str, &str)]) -> Layers {
        Layers {
            file: None,
            flags: flags.iter().map(|(k, v)| (*k, v.to_string())).collect(),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    #[test]
    fn flags_beat_env_beat_file_beat_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.toml");
        std::fs::write(
            &file,
            "listen = \"127.0.0.1:1000\"\nlogin_max_failures = 7\n",
        )
        .unwrap();
        let mut l = layers(&[("FLOWLINK_LISTEN", "127.0.0.1:2000")], &[]);
        l.file = Some(file.clone());
        let c = Config::load(&l).unwrap();
        assert_eq!(c.listen.port(), 2000);
        assert_eq!(c.login_max_failures, 7);
        l.flags.insert("listen", "127.0.0.1:3000".into());
        assert_eq!(Config::load(&l).unwrap().listen.port(), 3000);
        l.env.clear();
        l.flags.clear();
        assert_eq!(Config::load(&l).unwrap().listen.port(), 1000);
        assert_eq!(
            Config::load(&Layers::default()).unwrap().listen.port(),
            8080
        );
    }

    #[test]
    fn bad_values_name_their_origin() {
        let e = Config::load(&layers(&[("FLOWLINK_LISTEN", "nowhere")], &[])).unwrap_err();
        assert!(
            e.to_string().starts_with("FLOWLINK_LISTEN: `nowhere`"),
            "{e}"
        );
        let e = Config::load(&layers(&[], &[("login_lockout_secs", "-3")])).unwrap_err();
        assert!(e.to_string().starts_with("--login-lockout-secs"), "{e}");
        let e =
            Config::load(&layers(&[("FLOWLINK_TRUSTED_PROXIES", "10.0.0.0/33")], &[])).unwrap_err();
        assert!(e.to_string().contains("prefix length"), "{e}");
        let e = Config::load(&layers(&[("FLOWLINK_DATABASE_URL", "mysql://x")], &[])).unwrap_err();
        assert!(
            e.to_string().contains("sqlite://PATH or postgres://"),
            "{e}"
        );
        let e = Config::load(&layers(&[("FLOWLINK_TLS_CERT", "/c.pem")], &[])).unwrap_err();
        assert!(
            e.to_string().contains("tls_cert and tls_key go together"),
            "{e}"
        );
    }

    #[test]
    fn unknown_file_keys_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.toml");
        std::fs::write(&file, "listn = \"127.0.0.1:1000\"\n").unwrap();
        let l = Layers {
            file: Some(file),
            ..Layers::default()
        };
        let e = Config::load(&l).unwrap_err();
        assert!(e.to_string().contains("unknown key `listn`"), "{e}");
    }

    #[test]
    fn trusted_proxy_networks_match() {
        let net: IpNet = "10.1.0.0/16".parse().unwrap();
        assert!(net.contains("10.1.200.3".parse().unwrap()));
        assert!(net.contains("::ffff:10.1.0.9".parse().unwrap()));
        assert!(!net.contains("10.2.0.1".parse().unwrap()));
        let one: IpNet = "::1".parse().unwrap();
        assert!(one.contains("::1".parse().unwrap()));
        assert!(!one.contains("127.0.0.1".parse().unwrap()));
        let all: IpNet = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains("8.8.8.8".parse().unwrap()));
    }

    #[test]
    fn config_md_is_generated_from_the_table() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("CONFIG.md");
        let on_disk = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            on_disk == markdown(),
            "CONFIG.md is stale: run `cargo run -p flowlink-control -- config-docs > flowlink-control/CONFIG.md`"
        );
    }

    #[test]
    fn database_passwords_are_redacted() {
        assert_eq!(
            redact_url("postgres://u:hunter2@h/db"),
            "postgres://u:REDACTED@h/db"
        );
    }
}
