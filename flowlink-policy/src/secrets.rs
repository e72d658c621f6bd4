//! The `[secrets]` section: which secrets the proxy injects into the MCP server (environment
//! variables, files), which `{{secret:NAME}}` placeholders the agent may use in `tools/call`
//! arguments, and where Vault lives. Validated and compiled here; the proxy does the work.
//!
//! Layers ([`crate::Policy::from_layers`]): `placeholders` and `[[secrets.inject]]` are
//! concatenated across layers; `[secrets.vault]` comes whole from the most specific layer that has
//! one. An environment variable or file name injected twice (in one layer or across layers) is an
//! error naming both places, and so is one name given to two different sources.

use std::collections::HashMap;
use std::fmt;
use std::time::Duration;

use toml::Spanned;

use crate::error::{PolicyError, line_column};
use crate::pattern::Pattern;
use crate::raw::{RawInject, RawSecrets, RawVault};

/// The environment variable naming the private directory of injected files, set for the MCP
/// server whenever a `file` is injected. Policies may not inject into it.
pub const SECRETS_DIR_ENV: &str = "FLOWLINK_SECRETS_DIR";

/// How long a Vault value without a lease is cached when `cache_secs` is not given.
pub const DEFAULT_VAULT_CACHE: Duration = Duration::from_secs(300);

/// The compiled `[secrets]` section of a policy (empty when no layer has one).
#[derive(Debug, Clone, Default)]
pub struct SecretsPolicy {
    placeholders: Vec<Pattern>,
    inject: Vec<Injection>,
    vault: Option<VaultSettings>,
}

/// One `[[secrets.inject]]`: a secret and where the MCP server gets it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Injection {
    /// The name in `[REDACTED:NAME]` and placeholders: the FlowLink secret's name, or a Vault
    /// entry's `name`.
    pub name: String,
    /// Where the value comes from.
    pub source: SecretSource,
    /// The environment variable set for the server (with `file`: to the file's path).
    pub env: Option<String>,
    /// The file name in the private directory (mode 0600, directory 0700).
    pub file: Option<String>,
}

impl Injection {
    /// `env` (the value), `file`, or `file+env` (the path in the variable), for logs and reports.
    pub fn how(&self) -> &'static str {
        match (&self.env, &self.file) {
            (_, Some(_)) => "file",
            _ => "env",
        }
    }
}

/// Where an injected value comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    /// A FlowLink secret, sealed to the organisation's key (its name is [`Injection::name`]).
    FlowLink,
    /// A HashiCorp Vault KV v2 value.
    Vault(VaultRef),
}

/// `mount/path#key`: a KV v2 secret engine mount, the secret's path in it, and one key of it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct VaultRef {
    /// The KV v2 mount (`kv`, `secret`).
    pub mount: String,
    /// The secret's path below the mount (`app`, `team/db`).
    pub path: String,
    /// The key inside the secret's data.
    pub key: String,
}

impl VaultRef {
    /// Parses `mount/path#key`; the error says what is wrong, in words.
    pub fn parse(text: &str) -> Result<VaultRef, String> {
        let hint = "a Vault reference looks like `mount/path#key`, e.g. `kv/app#db_password`";
        let Some((location, key)) = text.split_once('#') else {
            return Err(format!("`{text}` has no `#key`; {hint}"));
        };
        if key.is_empty() || key.contains('#') {
            return Err(format!(
                "`{text}` needs exactly one non-empty `#key`; {hint}"
            ));
        }
        let Some((mount, path)) = location.split_once('/') else {
            return Err(format!("`{text}` has no path below the mount; {hint}"));
        };
        if mount.is_empty() || path.is_empty() {
            return Err(format!("`{text}` has an empty mount or path; {hint}"));
        }
        if location
            .split('/')
            .any(|seg| seg.is_empty() || seg == "." || seg == "..")
        {
            return Err(format!(
                "`{text}` has an empty, `.` or `..` path segment; {hint}"
            ));
        }
        if text
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == '?')
        {
            return Err(format!(
                "`{text}` contains white space, control characters or `?`; {hint}"
            ));
        }
        Ok(VaultRef {
            mount: mount.to_owned(),
            path: path.to_owned(),
            key: key.to_owned(),
        })
    }
}

impl fmt::Display for VaultRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}#{}", self.mount, self.path, self.key)
    }
}

/// `[secrets.vault]`: where Vault is and how the proxy logs in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VaultSettings {
    /// `https://vault.example:8200` (plain `http://` only to this machine).
    pub address: String,
    /// Vault Enterprise / HCP namespace.
    pub namespace: Option<String>,
    /// How to log in.
    pub auth: VaultAuthSettings,
    /// A PEM file with the CA that signed Vault's certificate.
    pub ca_file: Option<String>,
    /// How long a KV value without a lease is cached.
    pub cache: Duration,
}

/// How the proxy logs in to Vault. The credential comes from the named FlowLink secret on an
/// enrolled device, or from the environment (`FLOWLINK_VAULT_TOKEN`, `FLOWLINK_VAULT_SECRET_ID`)
/// for a standalone proxy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VaultAuthSettings {
    /// A Vault token.
    Token {
        /// The FlowLink secret holding the token.
        token_secret: Option<String>,
    },
    /// AppRole login.
    AppRole {
        /// The role id (not a secret).
        role_id: String,
        /// The FlowLink secret holding the secret id.
        secret_id_secret: Option<String>,
    },
}

impl VaultAuthSettings {
    /// The FlowLink secret holding the credential, if the policy names one.
    pub fn credential_secret(&self) -> Option<&str> {
        match self {
            VaultAuthSettings::Token { token_secret } => token_secret.as_deref(),
            VaultAuthSettings::AppRole {
                secret_id_secret, ..
            } => secret_id_secret.as_deref(),
        }
    }
}

impl SecretsPolicy {
    /// Whether the policy has no `[secrets]` section at all (nothing injected, no placeholders).
    pub fn is_empty(&self) -> bool {
        self.placeholders.is_empty() && self.inject.is_empty() && self.vault.is_none()
    }

    /// The injections, in layer order then file order.
    pub fn injections(&self) -> &[Injection] {
        &self.inject
    }

    /// `[secrets.vault]`, from the most specific layer that has one.
    pub fn vault(&self) -> Option<&VaultSettings> {
        self.vault.as_ref()
    }

    /// Whether `{{secret:NAME}}` may be used in this service's tool arguments.
    pub fn allows_placeholder(&self, name: &str) -> bool {
        self.placeholders.iter().any(|p| p.is_match(name))
    }

    /// The `placeholders` globs as written.
    pub fn placeholder_globs(&self) -> impl Iterator<Item = &str> {
        self.placeholders.iter().map(Pattern::text)
    }

    /// Whether anything uses Vault.
    pub fn uses_vault(&self) -> bool {
        self.inject
            .iter()
            .any(|i| matches!(i.source, SecretSource::Vault(_)))
    }
}

/// Where a name was first used: the layer (`None` for a single file) and the 1-based line.
type Seen = HashMap<String, (Option<String>, usize)>;

/// Accumulates the `[secrets]` sections of all layers.
#[derive(Debug, Default)]
pub(crate) struct SecretsBuilder {
    policy: SecretsPolicy,
    envs: Seen,
    files: Seen,
    /// Name → (what it stands for, where first used).
    names: HashMap<String, (SecretSource, Option<String>, usize)>,
    /// The first Vault entry, for the error when no layer has `[secrets.vault]`.
    first_vault: Option<PolicyError>,
}

impl SecretsBuilder {
    /// Validates one layer's `[secrets]` and merges it in.
    pub(crate) fn add(
        &mut self,
        source: &str,
        layer: Option<&str>,
        raw: Spanned<RawSecrets>,
    ) -> Result<(), PolicyError> {
        let at = Located { source, layer };
        let raw = raw.into_inner();
        if let Some(list) = &raw.placeholders {
            for glob in list.get_ref() {
                let text = glob.get_ref();
                if text.is_empty()
                    || !text
                        .chars()
                        .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || "_*?".contains(c))
                {
                    return Err(at.err(
                        glob,
                        format!(
                            "placeholder glob `{text}` must match secret names: upper-case letters, digits, `_`, and the wildcards `*` and `?` (e.g. \"GITHUB_TOKEN\" or \"DB_*\")"
                        ),
                    ));
                }
                self.policy
                    .placeholders
                    .push(Pattern::new(text).map_err(|m| at.err(glob, m))?);
            }
        }
        for inject in raw.inject {
            let injection = self.injection(&at, &inject)?;
            self.policy.inject.push(injection);
        }
        if let Some(vault) = raw.vault {
            self.policy.vault = Some(at.vault(&vault)?);
        }
        Ok(())
    }

    fn injection(
        &mut self,
        at: &Located<'_>,
        spanned: &Spanned<RawInject>,
    ) -> Result<Injection, PolicyError> {
        let raw = spanned.get_ref();
        let (line, _) = line_column(at.source, spanned.span().start);
        let (name, source, name_span) = match (&raw.secret, &raw.vault) {
            (Some(secret), None) => {
                if let Some(n) = &raw.name {
                    return Err(at.err(
                        n,
                        "`name` is only for `vault` entries; a FlowLink secret is named by `secret`",
                    ));
                }
                at.secret_name(secret, "secret")?;
                (
                    secret.get_ref().clone(),
                    SecretSource::FlowLink,
                    secret.span(),
                )
            }
            (None, Some(vault)) => {
                let reference = VaultRef::parse(vault.get_ref()).map_err(|m| at.err(vault, m))?;
                let Some(name) = &raw.name else {
                    return Err(at.err(
                        vault,
                        format!(
                            "the Vault entry `{}` needs a `name` (upper case, like DB_PASSWORD): it is shown in [REDACTED:NAME] and used in {{{{secret:NAME}}}} placeholders",
                            vault.get_ref()
                        ),
                    ));
                };
                at.secret_name(name, "name")?;
                if self.first_vault.is_none() {
                    self.first_vault = Some(at.err(
                        vault,
                        format!(
                            "the Vault entry `{}` needs a [secrets.vault] table (address and auth) in this layer or another one",
                            vault.get_ref()
                        ),
                    ));
                }
                (
                    name.get_ref().clone(),
                    SecretSource::Vault(reference),
                    name.span(),
                )
            }
            _ => {
                return Err(at.err(
                    spanned,
                    "each [[secrets.inject]] needs exactly one of `secret` (a FlowLink secret's name) or `vault` (a Vault KV v2 reference `mount/path#key`)",
                ));
            }
        };
        if raw.env.is_none() && raw.file.is_none() {
            return Err(at.err(
                spanned,
                format!(
                    "the injection of `{name}` goes nowhere: give `env` (an environment variable of the MCP server) and/or `file` (a file name in a private directory)"
                ),
            ));
        }
        if let Some(env) = &raw.env {
            let text = env.get_ref();
            let valid = text.len() <= 256
                && text
                    .chars()
                    .next()
                    .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && text.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !valid {
                return Err(at.err(
                    env,
                    format!(
                        "`{text}` is not an environment variable name (letters, digits and `_`, not starting with a digit)"
                    ),
                ));
            }
            if text == SECRETS_DIR_ENV {
                return Err(at.err(
                    env,
                    format!("`{SECRETS_DIR_ENV}` is set by FlowLink itself (the directory of injected files)"),
                ));
            }
            at.unique(&mut self.envs, env, "environment variable")?;
        }
        if let Some(file) = &raw.file {
            let text = file.get_ref();
            if text.is_empty()
                || text.len() > 255
                || text == "."
                || text == ".."
                || text.contains(['/', '\\', '\0'])
            {
                return Err(at.err(
                    file,
                    format!(
                        "`{text}` is not a plain file name: no `/` or `\\`, not `.` or `..`, at most 255 bytes (the file is created in a private directory)"
                    ),
                ));
            }
            at.unique(&mut self.files, file, "file")?;
        }
        match self.names.get(&name) {
            Some((first, layer, first_line)) if *first != source => {
                let what = |s: &SecretSource| match s {
                    SecretSource::FlowLink => "the FlowLink secret".to_owned(),
                    SecretSource::Vault(r) => format!("the Vault entry `{r}`"),
                };
                let place = match layer {
                    Some(l) if Some(l.as_str()) != at.layer => {
                        format!("layer `{l}`, line {first_line}")
                    }
                    _ => format!("line {first_line}"),
                };
                return Err(at.err_span(
                    name_span,
                    format!(
                        "the name `{name}` already stands for {} ({place}); give this {} another name",
                        what(first),
                        match source {
                            SecretSource::FlowLink => "secret",
                            SecretSource::Vault(_) => "Vault entry",
                        }
                    ),
                ));
            }
            Some(_) => {}
            None => {
                self.names.insert(
                    name.clone(),
                    (source.clone(), at.layer.map(str::to_owned), line),
                );
            }
        }
        Ok(Injection {
            name,
            source,
            env: raw.env.as_ref().map(|e| e.get_ref().clone()),
            file: raw.file.as_ref().map(|f| f.get_ref().clone()),
        })
    }

    /// The compiled section; an error when Vault entries have no `[secrets.vault]` anywhere.
    pub(crate) fn finish(self) -> Result<SecretsPolicy, PolicyError> {
        if self.policy.vault.is_none()
            && let Some(e) = self.first_vault
        {
            return Err(e);
        }
        Ok(self.policy)
    }
}

/// One layer's text and name, for errors.
struct Located<'s> {
    source: &'s str,
    layer: Option<&'s str>,
}

impl Located<'_> {
    fn err<T>(&self, spanned: &Spanned<T>, message: impl Into<String>) -> PolicyError {
        self.err_span(spanned.span(), message)
    }

    fn err_span(&self, span: std::ops::Range<usize>, message: impl Into<String>) -> PolicyError {
        let e = PolicyError::at(self.source, Some(span), message);
        match self.layer {
            Some(l) => e.in_layer(l),
            None => e,
        }
    }

    fn secret_name(&self, name: &Spanned<String>, key: &str) -> Result<(), PolicyError> {
        if flowlink_proto::sealed::valid_secret_name(name.get_ref()) {
            return Ok(());
        }
        Err(self.err(
            name,
            format!(
                "`{key}` = `{}` is not a valid secret name: upper-case letters, digits and `_`, not starting with a digit, at most 128 characters (like GITHUB_TOKEN)",
                name.get_ref()
            ),
        ))
    }

    fn unique(
        &self,
        seen: &mut Seen,
        value: &Spanned<String>,
        what: &str,
    ) -> Result<(), PolicyError> {
        let text = value.get_ref();
        let (line, _) = line_column(self.source, value.span().start);
        if let Some((layer, first)) = seen.get(text) {
            let place = match layer {
                Some(l) if Some(l.as_str()) != self.layer => format!("layer `{l}`, line {first}"),
                _ => format!("line {first}"),
            };
            return Err(self.err(
                value,
                format!(
                    "{what} `{text}` is already injected ({place}); each {what} can receive one secret"
                ),
            ));
        }
        seen.insert(text.clone(), (self.layer.map(str::to_owned), line));
        Ok(())
    }

    fn vault(&self, spanned: &Spanned<RawVault>) -> Result<VaultSettings, PolicyError> {
        let raw = spanned.get_ref();
        let address = raw.address.get_ref().trim_end_matches('/').to_owned();
        let rest = address
            .strip_prefix("https://")
            .map(|r| (r, true))
            .or_else(|| address.strip_prefix("http://").map(|r| (r, false)));
        let Some((rest, tls)) = rest.filter(|(r, _)| !r.is_empty()) else {
            return Err(self.err(
                &raw.address,
                format!(
                    "Vault address `{}` must be an https:// URL, e.g. https://vault.example:8200",
                    raw.address.get_ref()
                ),
            ));
        };
        if !tls {
            let host = rest.split(['/', '?', '#']).next().unwrap_or_default();
            let host = host
                .rsplit_once(':')
                .filter(|(h, p)| {
                    !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()) && !h.ends_with(':')
                })
                .map_or(host, |(h, _)| h);
            if !matches!(host, "127.0.0.1" | "localhost" | "[::1]") {
                return Err(self.err(
                    &raw.address,
                    format!(
                        "Vault address `{}` is plain http:// to another machine; the Vault token would cross the network unencrypted. Use https:// (plain http:// is only allowed to 127.0.0.1, ::1 or localhost)",
                        raw.address.get_ref()
                    ),
                ));
            }
        }
        if let Some(ns) = &raw.namespace
            && ns.get_ref().trim().is_empty()
        {
            return Err(self.err(ns, "`namespace` must not be empty (leave it out instead)"));
        }
        for (key, secret) in [
            ("secret_id_secret", &raw.secret_id_secret),
            ("token_secret", &raw.token_secret),
        ] {
            if let Some(s) = secret {
                self.secret_name(s, key)?;
            }
        }
        let auth = match raw.auth.get_ref().as_str() {
            "token" => {
                for (key, v) in [
                    ("role_id", &raw.role_id),
                    ("secret_id_secret", &raw.secret_id_secret),
                ] {
                    if let Some(v) = v {
                        return Err(self.err(
                            v,
                            format!("`{key}` is for auth = \"approle\"; with auth = \"token\" give `token_secret`"),
                        ));
                    }
                }
                VaultAuthSettings::Token {
                    token_secret: raw.token_secret.as_ref().map(|s| s.get_ref().clone()),
                }
            }
            "approle" => {
                if let Some(t) = &raw.token_secret {
                    return Err(self.err(
                        t,
                        "`token_secret` is for auth = \"token\"; with auth = \"approle\" give `role_id` and `secret_id_secret`",
                    ));
                }
                let Some(role_id) = raw
                    .role_id
                    .as_ref()
                    .filter(|r| !r.get_ref().trim().is_empty())
                else {
                    return Err(
                        self.err(&raw.auth, "auth = \"approle\" needs a non-empty `role_id`")
                    );
                };
                VaultAuthSettings::AppRole {
                    role_id: role_id.get_ref().clone(),
                    secret_id_secret: raw.secret_id_secret.as_ref().map(|s| s.get_ref().clone()),
                }
            }
            other => {
                return Err(self.err(
                    &raw.auth,
                    format!("unknown Vault auth `{other}` (expected token or approle)"),
                ));
            }
        };
        let cache = match &raw.cache_secs {
            None => DEFAULT_VAULT_CACHE,
            Some(c) => {
                let secs = *c.get_ref();
                if !(1..=86_400).contains(&secs) {
                    return Err(self.err(
                        c,
                        format!("`cache_secs` must be between 1 and 86400, got {secs}"),
                    ));
                }
                Duration::from_secs(secs.unsigned_abs())
            }
        };
        if let Some(ca) = &raw.ca_file
            && ca.get_ref().trim().is_empty()
        {
            return Err(self.err(ca, "`ca_file` must not be empty (leave it out instead)"));
        }
        Ok(VaultSettings {
            address,
            namespace: raw.namespace.as_ref().map(|n| n.get_ref().clone()),
            auth,
            ca_file: raw.ca_file.as_ref().map(|c| c.get_ref().clone()),
            cache,
        })
    }
}

#[cfg(test)]
mod tests {
    use crate::{Policy, PolicyError};

    use super::*;

    fn load(text: &str) -> Result<Policy, PolicyError> {
        Policy::from_toml(&format!("version = 1\n{text}"))
    }

    fn error(text: &str) -> PolicyError {
        load(text).expect_err("the policy should be refused")
    }

    const FULL: &str = r#"
[secrets]
placeholders = ["GITHUB_TOKEN", "DB_*"]

[[secrets.inject]]
secret = "GITHUB_TOKEN"
env = "GITHUB_PERSONAL_ACCESS_TOKEN"

[[secrets.inject]]
secret = "GCP_SA_JSON"
file = "gcp.json"
env = "GOOGLE_APPLICATION_CREDENTIALS"

[[secrets.inject]]
vault = "kv/app#db_password"
name = "DB_PASSWORD"
env = "PGPASSWORD"

[secrets.vault]
address = "https://vault.example:8200/"
namespace = "team-a"
auth = "approle"
role_id = "role-123"
secret_id_secret = "VAULT_SECRET_ID"
ca_file = "/etc/ssl/vault-ca.pem"
cache_secs = 60
"#;

    #[test]
    fn the_documented_example_compiles() {
        let p = load(FULL).expect("valid");
        let s = p.secrets();
        assert!(!s.is_empty());
        assert!(s.uses_vault());
        assert_eq!(s.injections().len(), 3);
        assert_eq!(
            s.injections()[0],
            Injection {
                name: "GITHUB_TOKEN".into(),
                source: SecretSource::FlowLink,
                env: Some("GITHUB_PERSONAL_ACCESS_TOKEN".into()),
                file: None,
            }
        );
        assert_eq!(s.injections()[1].file.as_deref(), Some("gcp.json"));
        assert_eq!(s.injections()[1].how(), "file");
        assert_eq!(
            s.injections()[2].source,
            SecretSource::Vault(VaultRef {
                mount: "kv".into(),
                path: "app".into(),
                key: "db_password".into()
            })
        );
        assert_eq!(s.injections()[2].name, "DB_PASSWORD");
        let v = s.vault().expect("vault");
        assert_eq!(v.address, "https://vault.example:8200");
        assert_eq!(v.namespace.as_deref(), Some("team-a"));
        assert_eq!(v.cache, Duration::from_secs(60));
        assert_eq!(v.auth.credential_secret(), Some("VAULT_SECRET_ID"));
        assert!(s.allows_placeholder("GITHUB_TOKEN"));
        assert!(s.allows_placeholder("DB_PASSWORD"));
        assert!(!s.allows_placeholder("GITHUB_TOKEN_2"));
        assert!(!s.allows_placeholder("AWS_KEY"));
        assert_eq!(
            s.placeholder_globs().collect::<Vec<_>>(),
            ["GITHUB_TOKEN", "DB_*"]
        );
    }

    #[test]
    fn no_section_means_nothing_injected_and_no_placeholders() {
        let p = load("").expect("valid");
        assert!(p.secrets().is_empty());
        assert!(!p.secrets().allows_placeholder("ANY"));
        assert!(Policy::builtin_default().secrets().is_empty());
    }

    #[test]
    fn bad_secret_names_are_refused_with_their_position() {
        let e = error("[[secrets.inject]]\nsecret = \"github_token\"\nenv = \"X\"\n");
        assert_eq!((e.line, e.column), (Some(3), Some(10)), "{e}");
        assert!(e.message.contains("not a valid secret name"), "{e}");
        let e = error("[[secrets.inject]]\nvault = \"kv/a#b\"\nname = \"9LIVES\"\nenv = \"X\"\n");
        assert_eq!(e.line, Some(4), "{e}");
        assert!(e.message.contains("`name` = `9LIVES`"), "{e}");
        let e = error("[secrets]\nplaceholders = [\"GITHUB_TOKEN\", \"db_*\"]\n");
        assert_eq!((e.line, e.column), (Some(3), Some(33)), "{e}");
        assert!(e.message.contains("placeholder glob `db_*`"), "{e}");
    }

    #[test]
    fn exactly_one_source_per_injection() {
        let e = error("[[secrets.inject]]\nsecret = \"A_B\"\nvault = \"kv/a#b\"\nenv = \"X\"\n");
        assert!(e.message.contains("exactly one of `secret`"), "{e}");
        assert_eq!(e.line, Some(2), "the entry's header: {e}");
        let e = error("[[secrets.inject]]\nenv = \"X\"\n");
        assert!(e.message.contains("exactly one of `secret`"), "{e}");
        let e = error("[[secrets.inject]]\nsecret = \"A_B\"\nname = \"C\"\nenv = \"X\"\n");
        assert!(e.message.contains("`name` is only for `vault`"), "{e}");
        let e = error("[[secrets.inject]]\nvault = \"kv/a#b\"\nenv = \"X\"\n");
        assert!(e.message.contains("needs a `name`"), "{e}");
        let e = error("[[secrets.inject]]\nsecret = \"A_B\"\n");
        assert!(e.message.contains("goes nowhere"), "{e}");
        let e = error("[[secrets.inject]]\nsecret = \"A_B\"\nenv = \"X\"\nfiles = \"y\"\n");
        assert!(e.message.contains("unknown field `files`"), "{e}");
    }

    #[test]
    fn env_and_file_names_are_checked() {
        for bad in ["1ABC", "A-B", "", "A B", "FLOWLINK_SECRETS_DIR"] {
            let e = error(&format!(
                "[[secrets.inject]]\nsecret = \"A_B\"\nenv = \"{bad}\"\n"
            ));
            assert_eq!((e.line, e.column), (Some(4), Some(7)), "{bad}: {e}");
        }
        for bad in ["../x", "a/b", ".", "..", "", "a\\\\b"] {
            let e = error(&format!(
                "[[secrets.inject]]\nsecret = \"A_B\"\nfile = \"{bad}\"\n"
            ));
            assert_eq!(e.line, Some(4), "{bad}: {e}");
            assert!(e.message.contains("not a plain file name"), "{bad}: {e}");
        }
        load("[[secrets.inject]]\nsecret = \"A_B\"\nfile = \".netrc\"\nenv = \"lower_ok\"\n")
            .expect("dot files and lower-case variables are fine");
    }

    #[test]
    fn vault_references_are_parsed_strictly() {
        let r = VaultRef::parse("secret/team/db#password").expect("ok");
        assert_eq!((r.mount.as_str(), r.path.as_str()), ("secret", "team/db"));
        assert_eq!(r.to_string(), "secret/team/db#password");
        for bad in [
            "kv/app",
            "kv#key",
            "/app#k",
            "kv/#k",
            "kv/app#",
            "kv/app#a#b",
            "kv//app#k",
            "kv/../x#k",
            "kv/a b#k",
        ] {
            assert!(VaultRef::parse(bad).is_err(), "{bad} should be refused");
        }
        let e = error("[[secrets.inject]]\nvault = \"kv-app#k\"\nname = \"A\"\nenv = \"X\"\n");
        assert_eq!((e.line, e.column), (Some(3), Some(9)), "{e}");
        assert!(e.message.contains("mount/path#key"), "{e}");
    }

    #[test]
    fn vault_entries_need_a_vault_table_somewhere() {
        let e = error("[[secrets.inject]]\nvault = \"kv/app#k\"\nname = \"A\"\nenv = \"X\"\n");
        assert!(e.message.contains("needs a [secrets.vault] table"), "{e}");
        assert_eq!(e.line, Some(3), "{e}");
        // Another layer may have it.
        let org = "version = 1\n[secrets.vault]\naddress = \"https://v:8200\"\nauth = \"token\"\n";
        let svc =
            "version = 1\n[[secrets.inject]]\nvault = \"kv/app#k\"\nname = \"A\"\nenv = \"X\"\n";
        let p = Policy::from_layers(&[("org", org), ("service:s", svc)]).expect("valid");
        assert_eq!(
            p.secrets().vault().map(|v| v.address.as_str()),
            Some("https://v:8200")
        );
        let e = Policy::from_layers(&[("service:s", svc)]).expect_err("no vault table");
        assert_eq!(e.layer.as_deref(), Some("service:s"), "{e}");
    }

    #[test]
    fn vault_settings_are_checked() {
        let v = |body: &str| error(&format!("[secrets.vault]\n{body}"));
        let e = v("address = \"vault:8200\"\nauth = \"token\"\n");
        assert!(e.message.contains("must be an https:// URL"), "{e}");
        assert_eq!(e.line, Some(3));
        let e = v("address = \"http://vault.example:8200\"\nauth = \"token\"\n");
        assert!(e.message.contains("unencrypted"), "{e}");
        load("[secrets.vault]\naddress = \"http://127.0.0.1:8200\"\nauth = \"token\"\n")
            .expect("plain http to this machine is fine");
        let e = v("address = \"https://v\"\nauth = \"ldap\"\n");
        assert!(e.message.contains("unknown Vault auth `ldap`"), "{e}");
        assert_eq!((e.line, e.column), (Some(4), Some(8)));
        let e = v("address = \"https://v\"\nauth = \"approle\"\n");
        assert!(e.message.contains("needs a non-empty `role_id`"), "{e}");
        let e = v("address = \"https://v\"\nauth = \"token\"\nrole_id = \"r\"\n");
        assert!(
            e.message.contains("`role_id` is for auth = \"approle\""),
            "{e}"
        );
        let e = v(
            "address = \"https://v\"\nauth = \"approle\"\nrole_id = \"r\"\ntoken_secret = \"T\"\n",
        );
        assert!(
            e.message.contains("`token_secret` is for auth = \"token\""),
            "{e}"
        );
        let e = v("address = \"https://v\"\nauth = \"token\"\ntoken_secret = \"vault-token\"\n");
        assert!(e.message.contains("not a valid secret name"), "{e}");
        let e = v("address = \"https://v\"\nauth = \"token\"\ncache_secs = 0\n");
        assert!(e.message.contains("between 1 and 86400"), "{e}");
        let e = v("address = \"https://v\"\nauth = \"token\"\nport = 1\n");
        assert!(e.message.contains("unknown field `port`"), "{e}");
        let p = load("[secrets.vault]\naddress = \"https://v\"\nauth = \"token\"\ntoken_secret = \"VAULT_TOKEN\"\n")
            .expect("valid");
        let vault = p.secrets().vault().expect("vault");
        assert_eq!(vault.cache, DEFAULT_VAULT_CACHE);
        assert_eq!(
            vault.auth,
            VaultAuthSettings::Token {
                token_secret: Some("VAULT_TOKEN".into())
            }
        );
    }

    #[test]
    fn a_variable_or_file_receives_one_secret_even_across_layers() {
        let e = error(
            "[[secrets.inject]]\nsecret = \"A\"\nenv = \"X\"\n[[secrets.inject]]\nsecret = \"B\"\nenv = \"X\"\n",
        );
        assert!(
            e.message
                .contains("environment variable `X` is already injected (line 4)"),
            "{e}"
        );
        assert_eq!(e.line, Some(7));
        let org = "version = 1\n[[secrets.inject]]\nsecret = \"A\"\nfile = \"f\"\n";
        let svc = "version = 1\n[[secrets.inject]]\nsecret = \"B\"\nfile = \"f\"\n";
        let e = Policy::from_layers(&[("org", org), ("service:s", svc)]).expect_err("clash");
        assert_eq!(e.layer.as_deref(), Some("service:s"));
        assert!(
            e.message
                .contains("file `f` is already injected (layer `org`, line 4)"),
            "{e}"
        );
        // One secret into a variable and a file is fine.
        load("[[secrets.inject]]\nsecret = \"A\"\nenv = \"X\"\n[[secrets.inject]]\nsecret = \"A\"\nfile = \"a\"\n")
            .expect("the same secret twice");
    }

    #[test]
    fn one_name_stands_for_one_source() {
        let e = error(
            "[[secrets.inject]]\nsecret = \"DB\"\nenv = \"X\"\n\
             [[secrets.inject]]\nvault = \"kv/a#b\"\nname = \"DB\"\nenv = \"Y\"\n\
             [secrets.vault]\naddress = \"https://v\"\nauth = \"token\"\n",
        );
        assert!(
            e.message
                .contains("already stands for the FlowLink secret (line 2)"),
            "{e}"
        );
        assert_eq!(e.line, Some(7));
        let e = error(
            "[[secrets.inject]]\nvault = \"kv/a#b\"\nname = \"DB\"\nenv = \"X\"\n\
             [[secrets.inject]]\nvault = \"kv/a#c\"\nname = \"DB\"\nenv = \"Y\"\n\
             [secrets.vault]\naddress = \"https://v\"\nauth = \"token\"\n",
        );
        assert!(e.message.contains("the Vault entry `kv/a#b`"), "{e}");
    }

    #[test]
    fn layers_concatenate_lists_and_take_vault_from_the_most_specific() {
        let org = "version = 1\n[secrets]\nplaceholders = [\"ORG_*\"]\n[[secrets.inject]]\nsecret = \"A\"\nenv = \"A\"\n\
                   [secrets.vault]\naddress = \"https://org-vault\"\nauth = \"token\"\n";
        let svc = "version = 1\n[secrets]\nplaceholders = [\"SVC\"]\n[[secrets.inject]]\nsecret = \"B\"\nenv = \"B\"\n\
                   [secrets.vault]\naddress = \"https://svc-vault\"\nauth = \"token\"\n";
        let p = Policy::from_layers(&[("org", org), ("service:s", svc)]).expect("valid");
        let s = p.secrets();
        assert_eq!(s.placeholder_globs().collect::<Vec<_>>(), ["ORG_*", "SVC"]);
        let names: Vec<&str> = s.injections().iter().map(|i| i.name.as_str()).collect();
        assert_eq!(names, ["A", "B"]);
        assert_eq!(
            s.vault().map(|v| v.address.as_str()),
            Some("https://svc-vault")
        );
        let p =
            Policy::from_layers(&[("org", org), ("service:s", "version = 1\n")]).expect("valid");
        assert_eq!(
            p.secrets().vault().map(|v| v.address.as_str()),
            Some("https://org-vault")
        );
    }
}
