//! `flowlink-proxy status`: the enrolment, each running proxy's link, the cached policies and
//! secrets, and the outbox, read from the credential, `link.sqlite3` and `audit.sqlite3` without
//! touching the control plane. Secrets are shown by name and version; to say whether they open,
//! they are opened in memory and dropped at once, never printed.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use flowlink_proto::bundle::sha256_hex;
use serde_json::{Value, json};

use super::bundle::short;
use super::credential::{CredentialSource, CredentialStore};
use super::state::{CachedSecrets, LinkRow, LinkState, STATE_FILE, process_alive};
use super::{LinkError, bundle};
use crate::audit::{DB_FILE_NAME, OutboxReader};
use crate::secrets::open;

/// What `status` shows.
#[derive(Debug)]
pub struct StatusReport {
    /// The enrolment, if any.
    pub enrolment: Option<Enrolment>,
    /// Why the credential could not be read, if it could not.
    pub credential_error: Option<String>,
    /// When and why the device was revoked.
    pub revoked: Option<(String, i64)>,
    /// Running proxies' links.
    pub links: Vec<LinkRow>,
    /// Cached policies.
    pub policies: Vec<PolicyRow>,
    /// Cached secrets, per service.
    pub secrets: Vec<SecretsRow>,
    /// Audit events waiting for the control plane.
    pub outbox_depth: Option<u64>,
}

/// The cached secrets of one service.
#[derive(Debug)]
pub struct SecretsRow {
    /// The service.
    pub service: String,
    /// When the push arrived, Unix µs.
    pub received_at_us: i64,
    /// Org key versions wrapped to this device (empty: not granted).
    pub key_versions: Vec<u32>,
    /// The newest org key version that unwraps with this device's key.
    pub key_opens: Option<u32>,
    /// Why a wrapped org key does not unwrap, if one does not.
    pub key_error: Option<String>,
    /// The control plane says the org key must be rotated, and why.
    pub rotation_required: Option<String>,
    /// The secrets for this device and service.
    pub secrets: Vec<SecretRow>,
}

/// One cached secret.
#[derive(Debug)]
pub struct SecretRow {
    /// Its name.
    pub name: String,
    /// Its version.
    pub version: u64,
    /// The org key version it is sealed to.
    pub key_version: u32,
    /// `Ok` when it opens on this device, else why not.
    pub opens: Result<(), String>,
}

/// Who this device is.
#[derive(Debug)]
pub struct Enrolment {
    /// Device id.
    pub device_id: String,
    /// Device name.
    pub device_name: String,
    /// Organisation id.
    pub org_id: String,
    /// Organisation slug.
    pub org_slug: String,
    /// Control plane.
    pub server_url: String,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Where the credential was found.
    pub source: CredentialSource,
    /// Whether the encrypted file exists too.
    pub file: bool,
    /// The fingerprint of the device's X25519 key (`SHA256:` and 64 hex digits): custodians
    /// compare it with what `flowlink-control secrets key grant` asks them to accept.
    pub box_key_fingerprint: String,
}

/// One cached bundle.
#[derive(Debug)]
pub struct PolicyRow {
    /// The service.
    pub service: String,
    /// The bundle id.
    pub bundle_id: String,
    /// Whether it verifies with the enrolled key now.
    pub verified: Result<(), String>,
    /// When issued, Unix µs.
    pub issued_at_us: Option<i64>,
    /// When received, Unix µs.
    pub received_at_us: i64,
    /// `(scope, version)` of each layer.
    pub layers: Vec<(String, i64)>,
}

/// Reads everything `status` shows from `data_dir`. Rows of proxies that are no longer running
/// are pruned.
pub fn report(data_dir: &Path) -> Result<StatusReport, LinkError> {
    let store = CredentialStore::new(data_dir);
    let (cred, credential_error) = match store.load() {
        Ok(c) => (c, None),
        Err(e) => (None, Some(e.to_string())),
    };
    let mut report = StatusReport {
        enrolment: None,
        credential_error,
        revoked: None,
        links: Vec::new(),
        policies: Vec::new(),
        secrets: Vec::new(),
        outbox_depth: None,
    };
    let state = if data_dir.join(STATE_FILE).exists() {
        Some(LinkState::open(data_dir)?)
    } else {
        None
    };
    if let Some(state) = &state {
        for row in state.links()? {
            if process_alive(row.pid) {
                report.links.push(row);
            } else {
                let _ = state.remove_link(row.pid);
            }
        }
    }
    if let Some((cred, source)) = cred {
        if let Some(state) = &state {
            report.revoked = state.revoked(&cred.device_id)?;
            for cached in state.bundles()? {
                let checked = bundle::verify(&cached.signed, &cred, &cached.service, None);
                let (verified, issued_at_us, layers) = match &checked {
                    Ok(v) => (
                        Ok(()),
                        Some(v.bundle.issued_at),
                        v.bundle
                            .layers
                            .iter()
                            .map(|l| (l.scope.clone(), l.version))
                            .collect(),
                    ),
                    Err(e) => (Err(e.to_string()), None, Vec::new()),
                };
                report.policies.push(PolicyRow {
                    service: cached.service,
                    bundle_id: sha256_hex(cached.signed.payload.as_bytes()),
                    verified,
                    issued_at_us,
                    received_at_us: cached.received_at_us,
                    layers,
                });
            }
            for cached in state.all_secrets()? {
                report.secrets.push(secrets_row(&cred, cached));
            }
        }
        report.enrolment = Some(Enrolment {
            device_id: cred.device_id.clone(),
            device_name: cred.device_name.clone(),
            org_id: cred.org_id.clone(),
            org_slug: cred.org_slug.clone(),
            server_url: cred.server_url.clone(),
            labels: cred.labels.clone(),
            source,
            file: store.file_exists(),
            box_key_fingerprint: format!("SHA256:{}", cred.box_public().fingerprint_hex()),
        });
    }
    if data_dir.join(DB_FILE_NAME).exists()
        && let Ok(reader) = OutboxReader::open(data_dir)
    {
        report.outbox_depth = reader.depth().ok();
    }
    Ok(report)
}

/// What a cached push holds for this device, opened in memory to say what opens.
fn secrets_row(cred: &super::Credential, cached: CachedSecrets) -> SecretsRow {
    let key = open::box_key(cred);
    let opened = open::open_push(
        &cached.push,
        &open::Opener::for_credential(cred, &key, &cached.service),
    );
    let secrets = cached
        .push
        .secrets
        .iter()
        .filter(|s| open::in_scope(s, &cached.service, &cred.labels))
        .map(|s| SecretRow {
            name: s.name.clone(),
            version: s.version,
            key_version: s.key_version,
            opens: match opened.get(&s.name) {
                Some(o) if o.version == s.version => Ok(()),
                _ => Err(opened
                    .problems
                    .iter()
                    .find(|p| p.name == s.name)
                    .map_or_else(
                        || "superseded by a newer version".to_owned(),
                        |p| p.why.clone(),
                    )),
            },
        })
        .collect();
    SecretsRow {
        service: cached.service,
        received_at_us: cached.received_at_us,
        key_versions: opened.key_versions.clone(),
        key_opens: opened.newest_key(),
        key_error: opened
            .problems
            .iter()
            .find(|p| p.name.starts_with("org key"))
            .map(ToString::to_string),
        rotation_required: opened.rotation_required.clone(),
        secrets,
    }
}

/// `2026-11-26 10:00:00 UTC`.
fn when(us: i64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(us) * 1000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    let f = time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second] UTC");
    t.format(&f).unwrap_or_else(|_| us.to_string())
}

/// The report for people.
pub fn render_text(r: &StatusReport) -> String {
    let mut out = String::new();
    match &r.enrolment {
        None => {
            let _ = writeln!(
                out,
                "not enrolled: this proxy decides with a local policy file (or the built-in default) and keeps its audit locally"
            );
            if let Some(e) = &r.credential_error {
                let _ = writeln!(out, "credential: {e}");
            } else {
                let _ = writeln!(
                    out,
                    "enrol with `flowlink-proxy enroll --server https://… --token …`"
                );
            }
        }
        Some(e) => {
            let org = if e.org_slug.is_empty() {
                e.org_id.clone()
            } else {
                format!("{} ({})", e.org_slug, e.org_id)
            };
            let _ = writeln!(out, "organisation: {org}");
            let _ = writeln!(out, "device:       {} ({})", e.device_id, e.device_name);
            let _ = writeln!(out, "device key:   {}", e.box_key_fingerprint);
            let _ = writeln!(out, "server:       {}", e.server_url);
            let _ = writeln!(
                out,
                "credential:   {}{}",
                e.source.as_str(),
                if e.file && e.source != CredentialSource::File {
                    " (and the encrypted file)"
                } else {
                    ""
                }
            );
            if !e.labels.is_empty() {
                let labels: Vec<String> =
                    e.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
                let _ = writeln!(out, "labels:       {}", labels.join(", "));
            }
        }
    }
    if let Some((reason, at)) = &r.revoked {
        let _ = writeln!(
            out,
            "REVOKED at {}: {reason}. The link is stopped; proxies decide offline on the cached policy. Enrol again with `flowlink-proxy enroll --force`.",
            when(*at)
        );
    }
    if r.enrolment.is_some() {
        if r.links.is_empty() {
            let _ = writeln!(out, "connection:   no proxy is running");
        }
        for l in &r.links {
            let _ = write!(
                out,
                "connection:   {} (pid {}): {} since {}",
                l.service,
                l.pid,
                l.state,
                when(l.since_us)
            );
            if l.state != "connected" {
                let _ = write!(out, "; decisions are made offline on the cached policy");
            }
            if let Some(b) = &l.bundle_id {
                let _ = write!(out, "; policy {}", short(b));
            } else {
                let _ = write!(out, "; no policy received yet (calls are refused)");
            }
            let _ = writeln!(out);
            if let Some(e) = &l.last_error {
                let _ = writeln!(out, "              last error: {e}");
            }
        }
        if r.policies.is_empty() {
            let _ = writeln!(out, "policy:       none received yet");
        }
        for p in &r.policies {
            let layers: Vec<String> = p.layers.iter().map(|(s, v)| format!("{s} v{v}")).collect();
            let _ = write!(
                out,
                "policy:       {}: bundle {} ({}), received {}",
                p.service,
                short(&p.bundle_id),
                layers.join(", "),
                when(p.received_at_us)
            );
            if let Err(e) = &p.verified {
                let _ = write!(out, "; DOES NOT VERIFY: {e}");
            }
            let _ = writeln!(out);
        }
    }
    if r.enrolment.is_some() {
        render_secrets(&mut out, &r.secrets);
    }
    match r.outbox_depth {
        Some(n) => {
            let _ = writeln!(
                out,
                "outbox:       {n} audit event(s) waiting for the control plane"
            );
        }
        None => {
            let _ = writeln!(out, "outbox:       no audit store yet");
        }
    }
    out
}

fn render_secrets(out: &mut String, rows: &[SecretsRow]) {
    if rows.is_empty() {
        let _ = writeln!(out, "secrets:      none received yet");
    }
    for s in rows {
        let key = match (s.key_versions.last(), s.key_opens) {
            (None, _) => "org key not granted to this device yet (a custodian runs `flowlink-control secrets key grant`)".to_owned(),
            (Some(_), Some(v)) => format!("org key v{v} granted"),
            (Some(v), None) => format!(
                "org key v{v} granted but DOES NOT UNWRAP with this device's key{}",
                s.key_error
                    .as_deref()
                    .map(|e| format!(" ({e})"))
                    .unwrap_or_default()
            ),
        };
        let listed: Vec<String> = s
            .secrets
            .iter()
            .map(|x| match &x.opens {
                Ok(()) => format!("{} v{}", x.name, x.version),
                Err(_) => format!("{} v{} (does not open)", x.name, x.version),
            })
            .collect();
        let _ = writeln!(
            out,
            "secrets:      {}: {key}; {} secret(s) cached{}, received {}",
            s.service,
            s.secrets.len(),
            if listed.is_empty() {
                String::new()
            } else {
                format!(" ({})", listed.join(", "))
            },
            when(s.received_at_us)
        );
        for x in &s.secrets {
            if let Err(why) = &x.opens {
                let _ = writeln!(out, "              {}: {why}", x.name);
            }
        }
        if let Some(why) = &s.rotation_required {
            let _ = writeln!(
                out,
                "              ROTATION REQUIRED: {why}; a custodian must run `flowlink-control secrets key rotate`"
            );
        }
    }
}

/// The report as one JSON object.
pub fn render_json(r: &StatusReport) -> Value {
    let state = |l: &LinkRow| -> &'static str {
        match l.state.as_str() {
            "connected" => "connected",
            "connecting" => "connecting",
            "revoked" => "revoked",
            _ => "offline",
        }
    };
    json!({
        "enrolled": r.enrolment.is_some(),
        "credential_error": r.credential_error,
        "org": r.enrolment.as_ref().map(|e| json!({"id": e.org_id, "slug": e.org_slug})),
        "device": r.enrolment.as_ref().map(|e| json!({
            "id": e.device_id,
            "name": e.device_name,
            "labels": e.labels,
            "credential": match e.source {
                CredentialSource::Keyring => "keyring",
                CredentialSource::File => "file",
            },
            "credential_file": e.file,
            "box_key_fingerprint": e.box_key_fingerprint,
        })),
        "server": r.enrolment.as_ref().map(|e| e.server_url.clone()),
        "revoked": r.revoked.as_ref().map(|(reason, at)| json!({"reason": reason, "at_us": at})),
        "links": r.links.iter().map(|l| json!({
            "pid": l.pid,
            "service": l.service,
            "state": state(l),
            "since_us": l.since_us,
            "last_error": l.last_error,
            "bundle_id": l.bundle_id,
            "updated_at_us": l.updated_at_us,
        })).collect::<Vec<_>>(),
        "policies": r.policies.iter().map(|p| json!({
            "service": p.service,
            "bundle_id": p.bundle_id,
            "verified": p.verified.is_ok(),
            "error": p.verified.as_ref().err(),
            "issued_at_us": p.issued_at_us,
            "received_at_us": p.received_at_us,
            "layers": p.layers.iter().map(|(s, v)| json!({"scope": s, "version": v})).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
        "secrets": r.secrets.iter().map(|s| json!({
            "service": s.service,
            "received_at_us": s.received_at_us,
            "key_versions": s.key_versions,
            "key_version": s.key_opens,
            "key_granted": !s.key_versions.is_empty(),
            "key_opens": s.key_opens.is_some(),
            "key_error": s.key_error,
            "rotation_required": s.rotation_required,
            "secrets": s.secrets.iter().map(|x| json!({
                "name": x.name,
                "version": x.version,
                "key_version": x.key_version,
                "opens": x.opens.is_ok(),
                "error": x.opens.as_ref().err(),
            })).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
        "outbox_depth": r.outbox_depth,
    })
}
