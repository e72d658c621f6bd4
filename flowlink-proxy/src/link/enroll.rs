//! `flowlink-proxy enroll`: join an organisation with an enrolment token.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use ed25519_dalek::VerifyingKey;
use flowlink_proto::bundle::key_id;
use flowlink_proto::link::{EnrollRequest, EnrollResponse};

use super::credential::{Credential, CredentialStore, DeviceKeys, Enrolled, Saved};
use super::url::ServerUrl;
use super::{LinkError, state};

/// What `enroll` is asked to do.
#[derive(Debug, Clone)]
pub struct EnrollOptions {
    /// The control plane.
    pub server: String,
    /// The enrolment token.
    pub token: String,
    /// The device's name (default: the host name).
    pub name: Option<String>,
    /// Labels the device reports.
    pub labels: BTreeMap<String, String>,
    /// A private CA to trust.
    pub ca_file: Option<PathBuf>,
    /// Allow `http://` to a host that is not this machine.
    pub allow_insecure: bool,
    /// Replace an existing credential.
    pub force: bool,
    /// Where the credential and the proxy's state live.
    pub data_dir: PathBuf,
}

/// A finished enrolment.
#[derive(Debug)]
pub struct Enrollment {
    /// The stored credential.
    pub credential: Credential,
    /// Where it went.
    pub saved: Saved,
}

/// Enrols this device: checks the URL, generates the keys, registers them, stores the
/// credential. An existing credential is kept unless `force` (and then replaced only once the new
/// enrolment succeeded).
pub async fn enroll(opts: EnrollOptions) -> Result<Enrollment, LinkError> {
    let url = ServerUrl::parse(&opts.server, opts.allow_insecure)?;
    let store = CredentialStore::new(&opts.data_dir);
    if !opts.force {
        match store.load() {
            Ok(Some((existing, _))) => {
                return Err(LinkError::AlreadyEnrolled {
                    device_id: existing.device_id.clone(),
                    org: if existing.org_slug.is_empty() {
                        existing.org_id.clone()
                    } else {
                        existing.org_slug.clone()
                    },
                    server: existing.server_url.clone(),
                });
            }
            Ok(None) => {}
            // Unreadable (made on another machine): enrolling again is the way out, but only
            // when asked to.
            Err(e) => {
                return Err(LinkError::CredentialUnreadable {
                    path: store.file_path(),
                    why: format!("{e}; pass --force to replace it with a new enrolment"),
                });
            }
        }
    }
    let ca_file = opts.ca_file.as_deref().map(absolute);
    let tls = super::tls::client_config(ca_file.as_deref(), &[b"http/1.1"])?;
    let keys = DeviceKeys::generate()?;
    let hostname = nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "unknown-host".to_owned());
    let device_name = opts.name.clone().unwrap_or_else(|| hostname.clone());
    let request = EnrollRequest {
        token: opts.token.clone(),
        device_name: device_name.clone(),
        hostname,
        signing_key: keys.signing_public(),
        box_key: keys.box_public(),
        labels: opts.labels.clone(),
    };
    let client = reqwest::Client::builder()
        .tls_backend_preconfigured((*tls).clone())
        .timeout(Duration::from_secs(20))
        .connect_timeout(Duration::from_secs(10))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| LinkError::Tls(e.to_string()))?;
    let endpoint = url.enroll_url();
    let response = client
        .post(&endpoint)
        .json(&request)
        .send()
        .await
        .map_err(|e| LinkError::Unreachable {
            url: endpoint.clone(),
            why: error_chain(&e),
        })?;
    let status = response.status();
    let body = response.bytes().await.map_err(|e| LinkError::Unreachable {
        url: endpoint.clone(),
        why: error_chain(&e),
    })?;
    if !status.is_success() {
        let (code, message) = api_error(&body);
        return Err(match status.as_u16() {
            400 | 401 | 403 | 404 | 409 | 410 | 422 => LinkError::TokenRefused { code, message },
            s => LinkError::Server { status: s, message },
        });
    }
    let answer: EnrollResponse = serde_json::from_slice(&body).map_err(|e| LinkError::Server {
        status: status.as_u16(),
        message: format!("the answer is not an enrolment response ({e})"),
    })?;
    let key_bytes: [u8; 32] = STANDARD
        .decode(answer.policy_key.as_bytes())
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| LinkError::Server {
            status: status.as_u16(),
            message: "the organisation's policy key is not 32 bytes of base64".into(),
        })?;
    let policy_key = VerifyingKey::from_bytes(&key_bytes).map_err(|_| LinkError::Server {
        status: status.as_u16(),
        message: "the organisation's policy key is not an Ed25519 public key".into(),
    })?;
    if key_id(&policy_key) != answer.policy_key_id {
        return Err(LinkError::Server {
            status: status.as_u16(),
            message: format!(
                "the policy key's id is {} but the control plane named it {}",
                key_id(&policy_key),
                answer.policy_key_id
            ),
        });
    }
    let credential = Credential::new(
        Enrolled {
            device_id: answer.device_id,
            device_name,
            org_id: answer.org_id,
            org_slug: answer.org_slug,
            server_url: url.base().to_owned(),
            policy_key,
            policy_key_id: answer.policy_key_id,
            labels: answer.labels,
            ca_file,
            allow_insecure: opts.allow_insecure,
        },
        keys,
    );
    if opts.force {
        // The old identity's state goes with it.
        let _ = store.delete();
        if let Ok(st) = state::LinkState::open(&opts.data_dir) {
            let _ = st.forget_bundles();
        }
    }
    let saved = store.save(&credential)?;
    Ok(Enrollment { credential, saved })
}

fn absolute(p: &Path) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_owned())
}

/// `{"error": {"code", "message"}}`, or the body's text.
fn api_error(body: &[u8]) -> (String, String) {
    let v: Option<serde_json::Value> = serde_json::from_slice(body).ok();
    let field = |k: &str| {
        v.as_ref()
            .and_then(|v| v.get("error"))
            .and_then(|e| e.get(k))
            .and_then(|s| s.as_str())
            .map(str::to_owned)
    };
    match (field("code"), field("message")) {
        (Some(c), Some(m)) => (c, m),
        _ => {
            let text = String::from_utf8_lossy(body);
            (
                "error".to_owned(),
                crate::relay::decide::shorten(text.trim(), 300),
            )
        }
    }
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
