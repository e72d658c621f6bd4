//! Vault entries of `[[secrets.inject]]`: read through [`crate::vault::VaultClient`] whenever a
//! server process starts, kept for placeholders and redaction.
//!
//! The Vault credential is the FlowLink secret `[secrets.vault]` names (`token_secret`,
//! `secret_id_secret`) when this device holds it, else the proxy's environment
//! (`FLOWLINK_VAULT_TOKEN`, `FLOWLINK_VAULT_SECRET_ID`: how a standalone proxy gets one). Either
//! way it is redacted like a secret and never passed on to the MCP server.
//!
//! One client is kept while the settings and the credential stay the same, so its token and its
//! value cache (the lease, or `cache_secs`) carry over server restarts. A value that cannot be
//! read again (Vault down) keeps the one read before, said on stderr.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use flowlink_policy::SecretsPolicy;
use flowlink_policy::secrets::{SecretSource, VaultAuthSettings, VaultSettings};
use zeroize::Zeroizing;

use super::runtime::{VAULT_SECRET_ID_ENV, VAULT_TOKEN_ENV};
use crate::vault::{VaultAuth, VaultClient, VaultConfig};

/// The Vault side of a session.
pub struct VaultValues {
    wait: Duration,
    client: Option<(VaultSettings, Zeroizing<String>, VaultClient)>,
    values: BTreeMap<String, Zeroizing<String>>,
    errors: BTreeMap<String, String>,
    credential: Option<(String, Zeroizing<String>)>,
    epoch: u64,
}

impl VaultValues {
    /// `wait` bounds all Vault reads of one server start together.
    pub fn new(wait: Duration) -> Self {
        VaultValues {
            wait,
            client: None,
            values: BTreeMap::new(),
            errors: BTreeMap::new(),
            credential: None,
            epoch: 0,
        }
    }

    /// Reads every Vault entry of `policy`; `flowlink` looks up FlowLink secrets (the credential).
    pub async fn resolve(
        &mut self,
        policy: &SecretsPolicy,
        flowlink: &impl Fn(&str) -> Option<Zeroizing<String>>,
    ) {
        self.epoch += 1;
        self.errors.clear();
        let entries: Vec<(String, crate::vault::VaultRef)> = policy
            .injections()
            .iter()
            .filter_map(|i| match &i.source {
                SecretSource::Vault(r) => Some((
                    i.name.clone(),
                    crate::vault::VaultRef {
                        mount: r.mount.clone(),
                        path: r.path.clone(),
                        key: r.key.clone(),
                    },
                )),
                SecretSource::FlowLink => None,
            })
            .collect();
        if entries.is_empty() {
            return;
        }
        let wait = self.wait;
        let client = match self.client(policy, flowlink) {
            Ok(c) => c,
            Err(why) => {
                for (name, _) in entries {
                    self.errors.insert(name, why.clone());
                }
                return;
            }
        };
        let deadline = Instant::now() + wait;
        let mut read = Vec::new();
        for (name, reference) in entries {
            let left = deadline.saturating_duration_since(Instant::now());
            let answer = match tokio::time::timeout(left, client.read_ref(&reference)).await {
                Ok(Ok(v)) => Ok(v),
                Ok(Err(e)) => Err(e.to_string()),
                Err(_) => Err(format!("Vault did not answer within {} s", wait.as_secs())),
            };
            read.push((name, reference, answer));
        }
        for (name, reference, answer) in read {
            match answer {
                Ok(v) => {
                    self.values.insert(name, v);
                }
                Err(why) => {
                    if self.values.contains_key(&name) {
                        eprintln!(
                            "flowlink-proxy: cannot read {name} from Vault ({reference}) again: {why}; using the value read before"
                        );
                    } else {
                        self.errors.insert(name, why);
                    }
                }
            }
        }
    }

    /// The client for the policy's settings and the credential in force (kept while both stay).
    fn client(
        &mut self,
        policy: &SecretsPolicy,
        flowlink: &impl Fn(&str) -> Option<Zeroizing<String>>,
    ) -> Result<&VaultClient, String> {
        let Some(settings) = policy.vault() else {
            return Err("the policy has no [secrets.vault] table".to_owned());
        };
        let (name, credential) = credential(&settings.auth, flowlink)?;
        self.credential = Some((name, credential.clone()));
        let reuse = self
            .client
            .as_ref()
            .is_some_and(|(s, c, _)| s == settings && c.as_str() == credential.as_str());
        if !reuse {
            let auth = match &settings.auth {
                VaultAuthSettings::Token { .. } => VaultAuth::Token(credential.clone()),
                VaultAuthSettings::AppRole { role_id, .. } => VaultAuth::AppRole {
                    role_id: role_id.clone(),
                    secret_id: credential.clone(),
                },
            };
            let client = VaultClient::new(VaultConfig {
                address: settings.address.clone(),
                namespace: settings.namespace.clone(),
                auth,
                ca_file: settings.ca_file.as_ref().map(PathBuf::from),
                cache: settings.cache,
            })
            .map_err(|e| e.to_string())?;
            self.client = Some((settings.clone(), credential, client));
        }
        match &self.client {
            Some((_, _, c)) => Ok(c),
            None => Err("no Vault client".to_owned()),
        }
    }

    /// The value of the Vault entry named `name`, as last read.
    pub fn value(&self, name: &str) -> Option<Zeroizing<String>> {
        self.values.get(name).cloned()
    }

    /// Whether `name` is a Vault entry that was tried.
    pub fn knows(&self, name: &str) -> bool {
        self.values.contains_key(name) || self.errors.contains_key(name)
    }

    /// Why `name` has no value.
    pub fn why(&self, name: &str) -> String {
        self.errors.get(name).cloned().unwrap_or_else(|| {
            "not read from Vault yet (it is read when the server starts)".to_owned()
        })
    }

    /// Every value and the credential, by name, for redaction.
    pub fn all(&self) -> impl Iterator<Item = (&str, &Zeroizing<String>)> {
        self.values
            .iter()
            .map(|(n, v)| (n.as_str(), v))
            .chain(self.credential.iter().map(|(n, v)| (n.as_str(), v)))
    }

    /// Changes whenever values were read again.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }
}

/// The credential and the name it is redacted under: the FlowLink secret the policy names, or
/// the proxy's environment variable.
fn credential(
    auth: &VaultAuthSettings,
    flowlink: &impl Fn(&str) -> Option<Zeroizing<String>>,
) -> Result<(String, Zeroizing<String>), String> {
    let env_name = match auth {
        VaultAuthSettings::Token { .. } => VAULT_TOKEN_ENV,
        VaultAuthSettings::AppRole { .. } => VAULT_SECRET_ID_ENV,
    };
    if let Some(secret) = auth.credential_secret()
        && let Some(value) = flowlink(secret)
    {
        return Ok((secret.to_owned(), value));
    }
    if let Ok(value) = std::env::var(env_name)
        && !value.is_empty()
    {
        return Ok((env_name.to_owned(), Zeroizing::new(value)));
    }
    Err(match auth.credential_secret() {
        Some(secret) => format!(
            "no Vault credential: this device does not hold the FlowLink secret {secret} that [secrets.vault] names, and {env_name} is not set"
        ),
        None => format!(
            "no Vault credential: [secrets.vault] names no FlowLink secret for it and {env_name} is not set in the proxy's environment"
        ),
    })
}
