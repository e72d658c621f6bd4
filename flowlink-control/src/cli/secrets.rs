//! `flowlink-control secrets …`: zero-trust secrets from an admin's machine, over the API.
//!
//! Values are read from stdin (never from arguments), sealed here to the organisation's public
//! key for `(org, name, version, key version)` and only the sealed box is uploaded. Commands
//! that need the organisation's private key (`key init|grant|rotate`) open it from the
//! custodian's own wrap with the custodian key file; it lives in memory (zeroised) for the
//! duration of the command. Nothing secret is printed or logged.
//!
//! Connection: `--server` / `FLOWLINK_SERVER`, `--token` / `FLOWLINK_TOKEN` (an API token
//! `flt_…`; prefer the variable, which keeps it out of the process list), `--org` /
//! `FLOWLINK_ORG`, `--ca-file` / `FLOWLINK_CA_FILE` (PEM roots for a private CA). The key
//! file's passphrase comes from `FLOWLINK_CUSTODIAN_PASSPHRASE` or `--passphrase-file`.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, Subcommand};
use flowlink_proto::sealed::{
    BoxPublicKey, OrgSecretKey, SealContext, SealError, SealedBox, open, seal, valid_secret_name,
};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use zeroize::Zeroizing;

use super::keyfile::{self, CustodianKey, KeyFileError};
use super::recipients::{Acceptance, KnownRecipients, Standing};
use crate::api::secrets::{
    CustodianList, CustodianView, KeyStatusView, KeyVersionView, RecipientView, SealedSecrets,
    SecretPage, SecretView, VerificationStarted, VerificationView,
};

/// The environment variable holding the custodian key file's passphrase.
pub const PASSPHRASE_ENV: &str = "FLOWLINK_CUSTODIAN_PASSPHRASE";
/// Largest secret value accepted from stdin.
pub const MAX_VALUE_BYTES: usize = 64 * 1024;

/// `flowlink-control secrets [OPTIONS] <COMMAND>`.
#[derive(Args, Debug)]
pub struct SecretsArgs {
    /// The control plane's URL, e.g. https://flowlink.example.
    #[arg(long, env = "FLOWLINK_SERVER", global = true)]
    pub server: Option<String>,
    /// An API token (flt_…) of a member of the organisation. Prefer FLOWLINK_TOKEN: arguments
    /// are visible to other users of the machine.
    #[arg(long, env = "FLOWLINK_TOKEN", hide_env_values = true, global = true)]
    pub token: Option<String>,
    /// The organisation's slug or id.
    #[arg(long, env = "FLOWLINK_ORG", global = true)]
    pub org: Option<String>,
    /// Print JSON instead of text.
    #[arg(long, global = true)]
    pub json: bool,
    /// PEM file of the CA certificate(s) to trust for the server (instead of the system's).
    #[arg(long, env = "FLOWLINK_CA_FILE", global = true)]
    pub ca_file: Option<PathBuf>,
    /// `put` and `rotate` seal only to an organisation key with this fingerprint (`SHA256:`
    /// and 16 to 64 hex digits, as `secrets key init|rotate|status` print it), so a control
    /// plane that names another key gets nothing. Get it from the custodian who made the key.
    #[arg(
        long,
        env = "FLOWLINK_ORG_KEY_FINGERPRINT",
        global = true,
        value_name = "SHA256:HEX"
    )]
    pub org_key_fingerprint: Option<String>,
    /// What to do.
    #[command(subcommand)]
    pub command: SecretsCommand,
}

/// The key file and its passphrase.
#[derive(Args, Debug, Clone)]
pub struct KeyFileArgs {
    /// The custodian key file (from `secrets custodian init`).
    #[arg(long)]
    pub key_file: PathBuf,
    /// Read the passphrase from the first line of this file (else FLOWLINK_CUSTODIAN_PASSPHRASE).
    #[arg(long)]
    pub passphrase_file: Option<PathBuf>,
}

/// Which recipients of the organisation key to trust beyond those pinned beside the key file.
#[derive(Args, Debug, Clone, Default)]
pub struct TrustArgs {
    /// Accept a recipient that is new or whose key changed, by its key's fingerprint
    /// (repeatable), e.g. `device:<id>=SHA256:…` as `flowlink-proxy status` shows it on that
    /// device.
    #[arg(long = "accept", value_name = "RECIPIENT=FINGERPRINT")]
    pub accept: Vec<String>,
    /// Accept every recipient seen for the first time without checking its fingerprint (trust
    /// on first use). A changed key still needs `--accept`.
    #[arg(long)]
    pub accept_new: bool,
}

/// `secrets …` commands.
#[derive(Subcommand, Debug)]
pub enum SecretsCommand {
    /// Your custodian key: an X25519 key in a passphrase-encrypted file that can hold the
    /// organisation's key.
    Custodian {
        /// What to do.
        #[command(subcommand)]
        command: CustodianCommand,
    },
    /// The organisation's secrets key.
    Key {
        /// What to do.
        #[command(subcommand)]
        command: KeyCommand,
    },
    /// Store a secret: the value is read from stdin (one trailing newline is dropped) and sealed
    /// here; services, labels and description are set as given.
    Put {
        /// Name (A-Z, 0-9, `_`; e.g. GITHUB_TOKEN).
        name: String,
        /// Only proxies of this service receive it (repeatable; none: every service).
        #[arg(long = "service", value_name = "SERVICE")]
        services: Vec<String>,
        /// Only devices carrying this label receive it (repeatable; all must match).
        #[arg(long = "label", value_name = "KEY=VALUE")]
        labels: Vec<String>,
        /// A note for people.
        #[arg(long, default_value = "")]
        description: String,
    },
    /// Show a secret's metadata (there is no command that shows a value).
    GetMeta {
        /// Name.
        name: String,
    },
    /// List the organisation's secrets (metadata).
    List,
    /// Remove a secret.
    Rm {
        /// Name.
        name: String,
    },
    /// Give an existing secret a new value, read from stdin; its scope is kept.
    Rotate {
        /// Name.
        name: String,
    },
}

/// `secrets custodian …`.
#[derive(Subcommand, Debug)]
pub enum CustodianCommand {
    /// Make a custodian key, register it for you, and write it to a new passphrase-encrypted
    /// file (0600; never overwrites).
    Init {
        /// Key file and passphrase.
        #[command(flatten)]
        file: KeyFileArgs,
        /// A name for people (default: "<your host> custodian").
        #[arg(long)]
        name: Option<String>,
    },
    /// List the organisation's custodians.
    List,
    /// Revoke a custodian (if it held the active key, the key must then be rotated).
    Revoke {
        /// Custodian id.
        id: String,
    },
}

/// `secrets key …`.
#[derive(Subcommand, Debug)]
pub enum KeyCommand {
    /// Set up the organisation's key (version 1), wrapped to you and every active device and
    /// custodian. Recipients not pinned beside the key file (or whose key
    /// changed) must be accepted.
    Init {
        /// Key file and passphrase.
        #[command(flatten)]
        file: KeyFileArgs,
        /// Recipients to accept.
        #[command(flatten)]
        trust: TrustArgs,
    },
    /// Versions, rotation required, and who lacks the active key.
    Status,
    /// Wrap the active key to every active device and custodian lacking it. Recipients not pinned beside the key file (or whose key
    /// changed) must be accepted.
    Grant {
        /// Key file and passphrase.
        #[command(flatten)]
        file: KeyFileArgs,
        /// Recipients to accept.
        #[command(flatten)]
        trust: TrustArgs,
    },
    /// Challenge every connected device to prove it holds the active key.
    Verify {
        /// Wait up to this many seconds for the answers.
        #[arg(long, default_value_t = 0)]
        wait: u64,
    },
    /// Make a new key, re-seal every secret to it and wrap it to every active device and
    /// custodian, in one request. Recipients not pinned beside the key file (or whose key
    /// changed) must be accepted.
    Rotate {
        /// Key file and passphrase.
        #[command(flatten)]
        file: KeyFileArgs,
        /// Recipients to accept.
        #[command(flatten)]
        trust: TrustArgs,
    },
}

/// Why a command failed; the message says what to do.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// A usage or state problem.
    #[error("{0}")]
    Usage(String),
    /// The control plane refused the request.
    #[error("the control plane refused: {message} ({code}, HTTP {status})")]
    Api {
        /// HTTP status.
        status: u16,
        /// The error code.
        code: String,
        /// Its message.
        message: String,
    },
    /// The control plane could not be reached.
    #[error("cannot reach the control plane: {0}")]
    Http(#[from] reqwest::Error),
    /// The key file.
    #[error(transparent)]
    KeyFile(#[from] KeyFileError),
    /// Sealing or opening.
    #[error(transparent)]
    Seal(#[from] SealError),
    /// Reading stdin or a file, or writing output.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

fn usage(m: impl Into<String>) -> CliError {
    CliError::Usage(m.into())
}

/// The API, as this command's caller.
struct Api {
    http: reqwest::Client,
    base: String,
    token: Zeroizing<String>,
    org: String,
    /// The organisation key values may be sealed to, when pinned.
    key_pin: Option<KeyPin>,
}

impl Api {
    fn new(args: &SecretsArgs) -> Result<Api, CliError> {
        let server = args.server.as_deref().ok_or_else(|| {
            usage("give the control plane's URL with --server or FLOWLINK_SERVER")
        })?;
        let base = server.trim_end_matches('/').to_string();
        if !(base.starts_with("https://") || base.starts_with("http://")) {
            return Err(usage(format!(
                "--server `{base}` must be an http:// or https:// URL"
            )));
        }
        let token = Zeroizing::new(
            args.token
                .clone()
                .filter(|t| !t.trim().is_empty())
                .ok_or_else(|| usage("give an API token (flt_…) in FLOWLINK_TOKEN (or --token)"))?,
        );
        let org = args
            .org
            .clone()
            .ok_or_else(|| usage("give the organisation with --org or FLOWLINK_ORG"))?;
        if org.is_empty()
            || !org
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(usage(format!(
                "--org `{org}` is not an organisation slug or id"
            )));
        }
        let mut builder = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!(
                "flowlink-control-secrets/",
                env!("CARGO_PKG_VERSION")
            ));
        if let Some(ca) = &args.ca_file {
            let pem = std::fs::read(ca)
                .map_err(|e| usage(format!("cannot read --ca-file {}: {e}", ca.display())))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
                usage(format!(
                    "--ca-file {} holds no PEM certificate: {e}",
                    ca.display()
                ))
            })?;
            builder = builder.tls_certs_only(certs);
        }
        let key_pin = args
            .org_key_fingerprint
            .as_deref()
            .map(KeyPin::parse)
            .transpose()?;
        Ok(Api {
            http: builder.build()?,
            base,
            token,
            org,
            key_pin,
        })
    }

    fn url(&self, path: &str) -> String {
        format!("{}/api/v1/orgs/{}/secrets{path}", self.base, self.org)
    }

    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(u16, Value), CliError> {
        let mut rb = self
            .http
            .request(method, self.url(path))
            .bearer_auth(self.token.as_str());
        if let Some(b) = body {
            rb = rb.json(b);
        }
        let resp = rb.send().await?;
        let status = resp.status().as_u16();
        let text = resp.text().await?;
        let value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or_else(|_| json!({"text": text}))
        };
        if (200..300).contains(&status) {
            return Ok((status, value));
        }
        let field = |k: &str| value["error"][k].as_str().map(str::to_string);
        Err(CliError::Api {
            status,
            code: field("code").unwrap_or_else(|| "error".into()),
            message: field("message").unwrap_or_else(|| {
                value["text"]
                    .as_str()
                    .unwrap_or("no message")
                    .chars()
                    .take(300)
                    .collect()
            }),
        })
    }

    async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, CliError> {
        let (_, v) = self.send(reqwest::Method::GET, path, None).await?;
        parse(v)
    }

    async fn post<T: DeserializeOwned>(&self, path: &str, body: &Value) -> Result<T, CliError> {
        let (_, v) = self.send(reqwest::Method::POST, path, Some(body)).await?;
        parse(v)
    }

    /// A secret's metadata, `None` when it does not exist.
    async fn secret(&self, name: &str) -> Result<Option<SecretView>, CliError> {
        match self.get(&format!("/{name}")).await {
            Ok(s) => Ok(Some(s)),
            Err(CliError::Api { status: 404, .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

fn parse<T: DeserializeOwned>(v: Value) -> Result<T, CliError> {
    serde_json::from_value(v).map_err(|e| {
        usage(format!(
            "the control plane answered something this client does not understand ({e}); are client and server the same version?"
        ))
    })
}

/// The passphrase: first line of `--passphrase-file`, else `FLOWLINK_CUSTODIAN_PASSPHRASE`.
fn passphrase(file: &KeyFileArgs) -> Result<Zeroizing<String>, CliError> {
    if let Some(path) = &file.passphrase_file {
        let text = Zeroizing::new(std::fs::read_to_string(path).map_err(|e| {
            usage(format!(
                "cannot read --passphrase-file {}: {e}",
                path.display()
            ))
        })?);
        let line = text.lines().next().unwrap_or("");
        return Ok(Zeroizing::new(line.to_string()));
    }
    match std::env::var(PASSPHRASE_ENV) {
        Ok(p) if !p.is_empty() => Ok(Zeroizing::new(p)),
        _ => Err(usage(format!(
            "the custodian key file needs its passphrase: set {PASSPHRASE_ENV} or give --passphrase-file"
        ))),
    }
}

fn open_key_file(file: &KeyFileArgs) -> Result<CustodianKey, CliError> {
    let pass = passphrase(file)?;
    Ok(keyfile::open(&file.key_file, &pass)?)
}

/// Reads a secret value from stdin: at most [`MAX_VALUE_BYTES`], one trailing newline dropped,
/// never empty.
fn read_value(stdin: &mut dyn Read) -> Result<Zeroizing<Vec<u8>>, CliError> {
    let mut value = Zeroizing::new(Vec::new());
    stdin
        .take(MAX_VALUE_BYTES as u64 + 3)
        .read_to_end(&mut value)?;
    if value.ends_with(b"\r\n") {
        let n = value.len() - 2;
        value.truncate(n);
    } else if value.ends_with(b"\n") {
        let n = value.len() - 1;
        value.truncate(n);
    }
    if value.is_empty() {
        return Err(usage(
            "no value on stdin; pipe the secret in, e.g. `printf %s \"$TOKEN\" | flowlink-control secrets put NAME` (an empty value is refused)",
        ));
    }
    if value.len() > MAX_VALUE_BYTES {
        return Err(usage(format!(
            "the value on stdin is larger than {MAX_VALUE_BYTES} bytes"
        )));
    }
    Ok(value)
}

fn check_name(name: &str) -> Result<(), CliError> {
    if valid_secret_name(name) {
        Ok(())
    } else {
        Err(usage(format!(
            "`{name}` is not a secret name: use A-Z, 0-9 and `_`, not starting with a digit (e.g. GITHUB_TOKEN)"
        )))
    }
}

fn parse_labels(labels: &[String]) -> Result<BTreeMap<String, String>, CliError> {
    let mut out = BTreeMap::new();
    for l in labels {
        let (k, v) = l
            .split_once('=')
            .ok_or_else(|| usage(format!("--label `{l}` must look like key=value")))?;
        if out.insert(k.to_string(), v.to_string()).is_some() {
            return Err(usage(format!("--label `{k}` is given twice")));
        }
    }
    Ok(out)
}

/// A public key's full fingerprint (hex).
fn fingerprint_hex(public_key_b64: &str) -> String {
    flowlink_proto::sealed::key_fingerprint_hex(public_key_b64)
}

/// A short fingerprint of a public key, for people comparing keys.
fn fingerprint(public_key_b64: &str) -> String {
    flowlink_proto::sealed::key_fingerprint(public_key_b64)
}

/// The organisation key a person pinned with `--org-key-fingerprint`: the leading hex digits
/// (at least the 16 that [`fingerprint`] prints) of the key's full fingerprint.
#[derive(Debug, Clone, PartialEq, Eq)]
struct KeyPin(String);

impl KeyPin {
    fn parse(text: &str) -> Result<KeyPin, CliError> {
        flowlink_proto::sealed::parse_fingerprint(text)
            .map(KeyPin)
            .ok_or_else(|| {
                usage(format!(
                    "--org-key-fingerprint `{}` is not a key fingerprint: give `SHA256:` and 16 to 64 hex digits, as `secrets key status` prints them",
                    text.trim()
                ))
            })
    }

    /// Refuses `key` unless it is the pinned one.
    fn check(&self, key: &KeyVersionView) -> Result<(), CliError> {
        if fingerprint_hex(&key.public_key).starts_with(&self.0) {
            return Ok(());
        }
        Err(usage(format!(
            "the control plane names key version {} ({}) as the organisation's active key, not the pinned SHA256:{}; nothing was sealed or sent. If a custodian rotated the key, ask them for the new fingerprint and pin that; otherwise the control plane may be compromised",
            key.version,
            fingerprint(&key.public_key),
            self.0
        )))
    }
}

fn active(status: &KeyStatusView) -> Result<&KeyVersionView, CliError> {
    let v = status.active_version.ok_or_else(|| {
        usage("this organisation has no secrets key yet; a custodian sets one up with `flowlink-control secrets key init --key-file FILE`")
    })?;
    status
        .versions
        .iter()
        .find(|k| k.version == v)
        .ok_or_else(|| usage("the key status names an active version it does not list"))
}

/// Opens the organisation's private key of `version` from the custodian's own wrap, and checks
/// it is the key the control plane publishes for that version.
fn unwrap_org_key(
    status: &KeyStatusView,
    version: &KeyVersionView,
    custodian: &CustodianKey,
) -> Result<OrgSecretKey, CliError> {
    if custodian.org_id != status.org_id {
        return Err(usage(format!(
            "the key file belongs to organisation {}, not {} (check --org)",
            custodian.org_id, status.org_id
        )));
    }
    let me = format!("custodian:{}", custodian.custodian_id);
    let wrap = version
        .recipients
        .iter()
        .find(|w| w.recipient == me && !w.revoked)
        .ok_or_else(|| {
            usage(format!(
                "your custodian key ({}) holds no wrap of key version {}; ask a custodian who does to run `flowlink-control secrets key grant`",
                custodian.custodian_id, version.version
            ))
        })?;
    let bytes = open(
        &custodian.key,
        &SealContext::OrgKey {
            org_id: &status.org_id,
            key_version: version.version,
            recipient: &me,
        },
        &wrap.wrapped,
    )?;
    let raw: [u8; 32] = bytes
        .as_slice()
        .try_into()
        .map_err(|_| usage("the unwrapped org key is not 32 bytes"))?;
    let key = OrgSecretKey::from_bytes(raw);
    if key.public_key().to_base64() != version.public_key {
        return Err(usage(format!(
            "your wrap of key version {} opens to a key that is not that version's public key; refusing to use it (report this: the control plane's data is inconsistent or was tampered with)",
            version.version
        )));
    }
    Ok(key)
}

/// Wraps `org_key` of `version` to each recipient.
fn wrap_to(
    org_id: &str,
    version: u32,
    org_key: &OrgSecretKey,
    recipients: &[RecipientView],
) -> Result<Vec<Value>, CliError> {
    let secret = org_key.to_bytes();
    let mut out = Vec::new();
    for r in recipients {
        let pk = BoxPublicKey::from_base64(&r.public_key)?;
        let wrapped = seal(
            &pk,
            &SealContext::OrgKey {
                org_id,
                key_version: version,
                recipient: &r.recipient,
            },
            secret.as_ref(),
        )?;
        out.push(json!({"recipient": r.recipient, "wrapped": wrapped}));
    }
    Ok(out)
}

fn print_json(out: &mut dyn Write, v: &impl serde::Serialize) -> Result<(), CliError> {
    let text = serde_json::to_string_pretty(v).map_err(|e| usage(e.to_string()))?;
    writeln!(out, "{text}")?;
    Ok(())
}

/// Warns (on stderr) about `--accept` items that name no recipient of this command.
fn warn_unused(accept: &Acceptance, listed: &[RecipientView]) {
    for r in accept.unused(listed) {
        eprintln!(
            "flowlink-control: warning: --accept {r} names no recipient this command wraps to (check the id; it may already hold the key)"
        );
    }
}

/// The recipients a command wrapped to, each marked when a person accepted it just now.
fn list_wrapped(
    out: &mut dyn Write,
    wrapped: &[RecipientView],
    standings: &[Standing],
) -> Result<(), CliError> {
    for (r, standing) in wrapped.iter().zip(standings) {
        let note = match standing {
            Standing::Known => "",
            Standing::AcceptedNew => " — new, accepted and pinned",
            Standing::AcceptedChange => " — key changed, accepted and pinned",
        };
        writeln!(out, "  {}{note}", describe(r))?;
    }
    Ok(())
}

fn describe(r: &RecipientView) -> String {
    format!(
        "{} {} ({}, key {})",
        r.kind,
        r.name,
        r.id,
        fingerprint(&r.public_key)
    )
}

/// Runs one `secrets` command; values come from `stdin`, results go to `out`.
pub async fn run(
    args: SecretsArgs,
    stdin: &mut dyn Read,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    let api = Api::new(&args)?;
    let json_out = args.json;
    match args.command {
        SecretsCommand::Custodian { command } => custodian(&api, command, json_out, out).await,
        SecretsCommand::Key { command } => key(&api, command, json_out, out).await,
        SecretsCommand::Put {
            name,
            services,
            labels,
            description,
        } => {
            check_name(&name)?;
            let labels = parse_labels(&labels)?;
            let value = read_value(stdin)?;
            let existing = api.secret(&name).await?;
            let base = existing.as_ref().map_or(0, |s| s.version);
            let view = store_value(
                &api,
                &name,
                base,
                &value,
                json!({"services": services, "labels": labels, "description": description}),
            )
            .await?;
            report_stored(out, json_out, &view, existing.is_none())
        }
        SecretsCommand::Rotate { name } => {
            check_name(&name)?;
            let existing = api.secret(&name).await?.ok_or_else(|| {
                usage(format!(
                    "secret {name} does not exist; create it with `secrets put {name}`"
                ))
            })?;
            let value = read_value(stdin)?;
            let view = store_value(
                &api,
                &name,
                existing.version,
                &value,
                json!({"services": existing.services, "labels": existing.labels,
                       "description": existing.description}),
            )
            .await?;
            report_stored(out, json_out, &view, false)
        }
        SecretsCommand::GetMeta { name } => {
            check_name(&name)?;
            let s = api
                .secret(&name)
                .await?
                .ok_or_else(|| usage(format!("no secret {name} in this organisation")))?;
            if json_out {
                return print_json(out, &s);
            }
            writeln!(out, "name:         {}", s.name)?;
            writeln!(out, "version:      {}", s.version)?;
            writeln!(out, "key version:  {}", s.key_version)?;
            writeln!(
                out,
                "services:     {}",
                if s.services.is_empty() {
                    "(every service)".to_string()
                } else {
                    s.services.join(", ")
                }
            )?;
            writeln!(out, "labels:       {}", labels_text(&s.labels))?;
            writeln!(out, "description:  {}", s.description)?;
            writeln!(out, "created:      {} by {}", s.created_at, s.created_by)?;
            writeln!(out, "updated:      {} by {}", s.updated_at, s.updated_by)?;
            writeln!(
                out,
                "last used:    {}",
                match (&s.last_used_at, &s.last_used_device) {
                    (Some(at), Some(d)) => format!("{at} on device {d}"),
                    (Some(at), None) => at.clone(),
                    _ => "never reported".to_string(),
                }
            )?;
            Ok(())
        }
        SecretsCommand::List => {
            let mut all = Vec::new();
            let mut cursor: Option<String> = None;
            loop {
                let path = match &cursor {
                    Some(c) => format!("?limit=500&cursor={c}"),
                    None => "?limit=500".to_string(),
                };
                let page: SecretPage = api.get(&path).await?;
                all.extend(page.items);
                match page.next_cursor {
                    Some(c) => cursor = Some(c),
                    None => break,
                }
            }
            if json_out {
                return print_json(out, &all);
            }
            if all.is_empty() {
                writeln!(out, "no secrets")?;
                return Ok(());
            }
            writeln!(out, "NAME\tVERSION\tKEY\tSERVICES\tLABELS\tLAST USED")?;
            for s in &all {
                writeln!(
                    out,
                    "{}\t{}\t{}\t{}\t{}\t{}",
                    s.name,
                    s.version,
                    s.key_version,
                    if s.services.is_empty() {
                        "*".to_string()
                    } else {
                        s.services.join(",")
                    },
                    labels_text(&s.labels),
                    s.last_used_at.as_deref().unwrap_or("-")
                )?;
            }
            Ok(())
        }
        SecretsCommand::Rm { name } => {
            check_name(&name)?;
            api.send(reqwest::Method::DELETE, &format!("/{name}"), None)
                .await?;
            if json_out {
                return print_json(out, &json!({"removed": name}));
            }
            writeln!(out, "secret {name} removed")?;
            Ok(())
        }
    }
}

fn labels_text(labels: &BTreeMap<String, String>) -> String {
    if labels.is_empty() {
        return "-".to_string();
    }
    labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// Seals `value` for version `base + 1` under the active key and uploads it with `meta`.
async fn store_value(
    api: &Api,
    name: &str,
    base: u64,
    value: &[u8],
    meta: Value,
) -> Result<(SecretView, String), CliError> {
    let status: KeyStatusView = api.get("/key").await?;
    let key = active(&status)?;
    if let Some(pin) = &api.key_pin {
        pin.check(key)?;
    }
    let pk = BoxPublicKey::from_base64(&key.public_key)?;
    let sealed = seal(
        &pk,
        &SealContext::Secret {
            org_id: &status.org_id,
            name,
            version: base + 1,
            key_version: key.version,
        },
        value,
    )?;
    let mut body = json!({"base_version": base, "key_version": key.version, "sealed": sealed});
    if let (Some(b), Some(m)) = (body.as_object_mut(), meta.as_object()) {
        for (k, v) in m {
            b.insert(k.clone(), v.clone());
        }
    }
    let (_, v) = api
        .send(reqwest::Method::PUT, &format!("/{name}"), Some(&body))
        .await?;
    Ok((parse(v)?, fingerprint(&key.public_key)))
}

fn report_stored(
    out: &mut dyn Write,
    json_out: bool,
    (s, key): &(SecretView, String),
    created: bool,
) -> Result<(), CliError> {
    if json_out {
        return print_json(out, s);
    }
    writeln!(
        out,
        "secret {} {} (version {}, sealed to key version {}, {key})",
        s.name,
        if created { "created" } else { "updated" },
        s.version,
        s.key_version
    )?;
    Ok(())
}

async fn custodian(
    api: &Api,
    command: CustodianCommand,
    json_out: bool,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    match command {
        CustodianCommand::Init { file, name } => {
            let pass = passphrase(&file)?;
            keyfile::check_new_passphrase(&pass)?;
            let mut handle = keyfile::reserve(&file.key_file)?;
            let result = register(api, &file.key_file, &mut handle, &pass, name).await;
            drop(handle);
            let created = match result {
                Ok(c) => c,
                Err(e) => {
                    let _ = std::fs::remove_file(&file.key_file);
                    return Err(e);
                }
            };
            if json_out {
                return print_json(
                    out,
                    &json!({"custodian_id": created.id, "org_id": created.org_id,
                            "name": created.name, "public_key": created.public_key,
                            "key_file": file.key_file}),
                );
            }
            writeln!(
                out,
                "custodian {} ({}) registered with key {}; its private key is in {}, encrypted with your passphrase.\nKeep the file and the passphrase: without both this custodian cannot open the organisation's key.\nOther custodians accept you by that fingerprint: --accept custodian:{}={}",
                created.id,
                created.name,
                fingerprint(&created.public_key),
                file.key_file.display(),
                created.id,
                fingerprint(&created.public_key),
            )?;
            Ok(())
        }
        CustodianCommand::List => {
            let list: CustodianList = api.get("/custodians").await?;
            if json_out {
                return print_json(out, &list.items);
            }
            writeln!(out, "ID\tNAME\tUSER\tKEY\tSTATE")?;
            for c in &list.items {
                writeln!(
                    out,
                    "{}\t{}\t{}\t{}\t{}",
                    c.id,
                    c.name,
                    c.user_email.as_deref().unwrap_or(&c.user_id),
                    fingerprint(&c.public_key),
                    if c.revoked_at.is_some() {
                        "revoked"
                    } else {
                        "live"
                    }
                )?;
            }
            Ok(())
        }
        CustodianCommand::Revoke { id } => {
            api.send(reqwest::Method::DELETE, &format!("/custodians/{id}"), None)
                .await?;
            if json_out {
                return print_json(out, &json!({"revoked": id}));
            }
            writeln!(
                out,
                "custodian {id} revoked; if it held the active key, the key now needs `secrets key rotate`"
            )?;
            Ok(())
        }
    }
}

/// Registers a new custodian key and writes the key file; on a failure after registration the
/// custodian is revoked again.
async fn register(
    api: &Api,
    path: &Path,
    handle: &mut std::fs::File,
    pass: &str,
    name: Option<String>,
) -> Result<CustodianView, CliError> {
    let key = OrgSecretKey::generate();
    let name = name.unwrap_or_else(|| {
        let host = std::fs::read_to_string("/etc/hostname")
            .ok()
            .map(|h| h.trim().to_string())
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "cli".to_string());
        format!("{host} custodian")
    });
    let created: CustodianView = api
        .post(
            "/custodians",
            &json!({"name": name, "public_key": key.public_key().to_base64()}),
        )
        .await?;
    let file = CustodianKey {
        server: api.base.clone(),
        org_id: created.org_id.clone(),
        custodian_id: created.id.clone(),
        key,
    };
    if let Err(e) = keyfile::write(handle, path, &file, pass) {
        let _ = api
            .send(
                reqwest::Method::DELETE,
                &format!("/custodians/{}", created.id),
                None,
            )
            .await;
        return Err(e.into());
    }
    Ok(created)
}

async fn key(
    api: &Api,
    command: KeyCommand,
    json_out: bool,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    match command {
        KeyCommand::Status => {
            let status: KeyStatusView = api.get("/key").await?;
            if json_out {
                return print_json(out, &status);
            }
            let Some(v) = status.active_version else {
                writeln!(
                    out,
                    "no secrets key yet: a custodian runs `flowlink-control secrets key init --key-file FILE`"
                )?;
                return Ok(());
            };
            writeln!(out, "active key version: {v}")?;
            if let Some(why) = &status.rotation_required {
                writeln!(
                    out,
                    "ROTATION REQUIRED: {why}\n  run `flowlink-control secrets key rotate --key-file FILE`"
                )?;
            }
            for k in &status.versions {
                let confirmed = k
                    .recipients
                    .iter()
                    .filter(|w| w.kind == "device" && w.confirmed_at.is_some() && !w.revoked)
                    .count();
                writeln!(
                    out,
                    "version {}: {} (key {}), {} recipient(s), {} device(s) proved it",
                    k.version,
                    k.state,
                    fingerprint(&k.public_key),
                    k.recipients.iter().filter(|w| !w.revoked).count(),
                    confirmed
                )?;
            }
            if status.lacking.is_empty() {
                writeln!(out, "every active device and custodian holds version {v}")?;
            } else {
                writeln!(
                    out,
                    "lacking version {v} (run `secrets key grant --key-file FILE`):"
                )?;
                for r in &status.lacking {
                    writeln!(out, "  {}", describe(r))?;
                }
            }
            Ok(())
        }
        KeyCommand::Init { file, trust } => {
            let accept = Acceptance::parse(&trust.accept, trust.accept_new)?;
            let custodian = open_key_file(&file)?;
            let status: KeyStatusView = api.get("/key").await?;
            if let Some(v) = status.active_version {
                return Err(usage(format!(
                    "this organisation already has secrets key version {v}; use `secrets key grant` or `secrets key rotate`"
                )));
            }
            if custodian.org_id != status.org_id {
                return Err(usage(format!(
                    "the key file belongs to organisation {}, not {} (check --org)",
                    custodian.org_id, status.org_id
                )));
            }
            let me = format!("custodian:{}", custodian.custodian_id);
            if !status.recipients.iter().any(|r| r.recipient == me) {
                return Err(usage(format!(
                    "your custodian key ({}) is not a live custodian of this organisation (revoked?); make a new one with `secrets custodian init`",
                    custodian.custodian_id
                )));
            }
            let mut known = KnownRecipients::load(&file.key_file, &status.org_id)?;
            warn_unused(&accept, &status.recipients);
            let standings = known.vet(&status.recipients, &accept, &custodian)?;
            let org_key = OrgSecretKey::generate();
            let wraps = wrap_to(&status.org_id, 1, &org_key, &status.recipients)?;
            let body = json!({"public_key": org_key.public_key().to_base64(),
                              "previous_version": null, "wraps": wraps, "secrets": []});
            let after: KeyStatusView = api.post("/key", &body).await?;
            known.pin_and_save(&status.recipients)?;
            if json_out {
                return print_json(out, &after);
            }
            writeln!(
                out,
                "secrets key version 1 set up (key {}), wrapped to:",
                fingerprint(&org_key.public_key().to_base64())
            )?;
            list_wrapped(out, &status.recipients, &standings)
        }
        KeyCommand::Grant { file, trust } => {
            let accept = Acceptance::parse(&trust.accept, trust.accept_new)?;
            let custodian = open_key_file(&file)?;
            let status: KeyStatusView = api.get("/key").await?;
            let version = active(&status)?;
            if status.lacking.is_empty() {
                if json_out {
                    return print_json(out, &status);
                }
                writeln!(
                    out,
                    "nothing to grant: every active device and custodian holds key version {}",
                    version.version
                )?;
                return Ok(());
            }
            let mut known = KnownRecipients::load(&file.key_file, &status.org_id)?;
            warn_unused(&accept, &status.lacking);
            let standings = known.vet(&status.lacking, &accept, &custodian)?;
            let org_key = unwrap_org_key(&status, version, &custodian)?;
            let wraps = wrap_to(&status.org_id, version.version, &org_key, &status.lacking)?;
            let after: KeyStatusView = api
                .post(
                    &format!("/key/{}/wraps", version.version),
                    &json!({"wraps": wraps}),
                )
                .await?;
            known.pin_and_save(&status.lacking)?;
            if json_out {
                return print_json(out, &after);
            }
            writeln!(out, "granted key version {} to:", version.version)?;
            list_wrapped(out, &status.lacking, &standings)
        }
        KeyCommand::Verify { wait } => {
            let started: VerificationStarted = api.post("/key/verify", &json!({})).await?;
            let deadline = tokio::time::Instant::now() + Duration::from_secs(wait);
            let path = format!("/key/verify/{}", started.verification_id);
            let mut view: VerificationView = api.get(&path).await?;
            while view.devices.iter().any(|d| d.status == "pending")
                && tokio::time::Instant::now() < deadline
            {
                tokio::time::sleep(Duration::from_millis(300)).await;
                view = api.get(&path).await?;
            }
            let failed = view.devices.iter().filter(|d| d.status == "failed").count();
            if json_out {
                print_json(out, &view)?;
            } else {
                writeln!(
                    out,
                    "verification {} of key version {}: {} device(s) asked, {} offline",
                    view.verification_id, view.key_version, started.devices, started.offline
                )?;
                for d in &view.devices {
                    writeln!(
                        out,
                        "  {} ({}): {}{}",
                        d.device_name.as_deref().unwrap_or("?"),
                        d.device_id,
                        d.status,
                        d.error
                            .as_deref()
                            .map(|e| format!(" — {e}"))
                            .unwrap_or_default()
                    )?;
                }
            }
            if failed > 0 {
                return Err(usage(format!(
                    "{failed} device(s) could not prove they hold key version {}; grant it to them (`secrets key grant`) or check their proxies",
                    view.key_version
                )));
            }
            Ok(())
        }
        KeyCommand::Rotate { file, trust } => {
            let accept = Acceptance::parse(&trust.accept, trust.accept_new)?;
            let custodian = open_key_file(&file)?;
            let status: KeyStatusView = api.get("/key").await?;
            let version = active(&status)?;
            let old_key = unwrap_org_key(&status, version, &custodian)?;
            let mut known = KnownRecipients::load(&file.key_file, &status.org_id)?;
            warn_unused(&accept, &status.recipients);
            known.vet(&status.recipients, &accept, &custodian)?;
            let sealed: SealedSecrets = api.get("/sealed").await?;
            let new_key = OrgSecretKey::generate();
            let new_pk = new_key.public_key();
            let next = version.version + 1;
            let mut secrets = Vec::with_capacity(sealed.items.len());
            for s in &sealed.items {
                if s.key_version != version.version {
                    return Err(usage(format!(
                        "secret {} is sealed to key version {}, not the active version {}; put it again, then rotate",
                        s.name, s.key_version, version.version
                    )));
                }
                let value = open(
                    &old_key,
                    &SealContext::Secret {
                        org_id: &status.org_id,
                        name: &s.name,
                        version: s.version,
                        key_version: s.key_version,
                    },
                    &s.sealed,
                )
                .map_err(|e| {
                    usage(format!(
                        "secret {} (version {}) does not open with key version {}: {e}",
                        s.name, s.version, s.key_version
                    ))
                })?;
                let resealed: SealedBox = seal(
                    &new_pk,
                    &SealContext::Secret {
                        org_id: &status.org_id,
                        name: &s.name,
                        version: s.version,
                        key_version: next,
                    },
                    &value,
                )?;
                secrets.push(json!({"name": s.name, "version": s.version, "sealed": resealed}));
            }
            let wraps = wrap_to(&status.org_id, next, &new_key, &status.recipients)?;
            let body = json!({"public_key": new_pk.to_base64(),
                              "previous_version": version.version,
                              "wraps": wraps, "secrets": secrets});
            let after: KeyStatusView = api.post("/key", &body).await?;
            known.pin_and_save(&status.recipients)?;
            if json_out {
                return print_json(out, &after);
            }
            writeln!(
                out,
                "rotated the secrets key from version {} to {next} (key {}): {} secret(s) re-sealed, wrapped to {} recipient(s).\nVersion {} retires once every active device proved it holds version {next} (see `secrets key status`, `secrets key verify`).",
                version.version,
                fingerprint(&new_pk.to_base64()),
                secrets.len(),
                status.recipients.len(),
                version.version
            )?;
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_pins_take_the_printed_or_the_full_fingerprint_and_nothing_else() {
        let key = |b64: &str| KeyVersionView {
            version: 3,
            state: "active".into(),
            public_key: b64.into(),
            rotation_required: None,
            created_at: String::new(),
            created_by: String::new(),
            retired_at: None,
            recipients: Vec::new(),
        };
        let ours = key("b3Vycy1rZXk=");
        let theirs = key("dGhlaXJzLWtleQ==");
        let full = fingerprint_hex(&ours.public_key);
        for given in [
            fingerprint(&ours.public_key),
            full.clone(),
            format!("  SHA256:{}  ", full.to_ascii_uppercase()),
        ] {
            let pin = KeyPin::parse(&given).expect("a fingerprint");
            assert!(pin.check(&ours).is_ok(), "{given}");
            let refused = pin.check(&theirs).expect_err("another key").to_string();
            assert!(
                refused.contains("nothing was sealed")
                    && refused.contains(&fingerprint(&theirs.public_key))
                    && refused.contains("version 3"),
                "{refused}"
            );
        }
        for bad in [
            "",
            "SHA256:",
            "SHA256:abc",
            "SHA256:zzzzzzzzzzzzzzzz",
            &"a".repeat(65),
        ] {
            let e = KeyPin::parse(bad).expect_err(bad).to_string();
            assert!(e.contains("16 to 64 hex digits"), "{e}");
        }
    }

    #[test]
    fn values_drop_one_trailing_newline_and_refuse_empty() {
        let v = read_value(&mut &b"s3cret\n"[..]).expect("value");
        assert_eq!(v.as_slice(), b"s3cret");
        let v = read_value(&mut &b"line\n\n"[..]).expect("value");
        assert_eq!(v.as_slice(), b"line\n");
        let v = read_value(&mut &b"crlf\r\n"[..]).expect("value");
        assert_eq!(v.as_slice(), b"crlf");
        assert!(read_value(&mut &b""[..]).is_err());
        assert!(read_value(&mut &b"\n"[..]).is_err());
        let big = vec![b'x'; MAX_VALUE_BYTES + 1];
        assert!(read_value(&mut big.as_slice()).is_err());
    }

    #[test]
    fn labels_parse_once_each() {
        let l = parse_labels(&["env=prod".into(), "team=a".into()]).expect("labels");
        assert_eq!(l.get("env").map(String::as_str), Some("prod"));
        assert!(parse_labels(&["env".into()]).is_err());
        assert!(parse_labels(&["a=1".into(), "a=2".into()]).is_err());
    }
}
