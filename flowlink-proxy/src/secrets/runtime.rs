//! [`SecretsRuntime`]: what one relay session does with secrets — the environment and files of
//! each server process it starts, `{{secret:NAME}}` placeholders, and the [`Redactor`] every
//! outgoing byte passes.

use std::collections::BTreeMap;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use flowlink_policy::SecretsPolicy;
use flowlink_policy::redact::Redactor;
use flowlink_policy::secrets::{SECRETS_DIR_ENV, SecretSource};
use flowlink_proto::jsonrpc::Message;
use flowlink_proto::link::SecretUse;
use serde_json::Value;
use zeroize::Zeroizing;

use super::files::{PrivateDir, base_dir, sweep_stale};
use super::hub::SecretsHub;
use super::placeholders;
use super::vault_values::VaultValues;

/// Environment variables that carry a standalone proxy's Vault credential; never passed on to
/// the MCP server.
pub const VAULT_TOKEN_ENV: &str = "FLOWLINK_VAULT_TOKEN";
/// See [`VAULT_TOKEN_ENV`].
pub const VAULT_SECRET_ID_ENV: &str = "FLOWLINK_VAULT_SECRET_ID";

/// The redactor in force, shared with the task that passes the server's stderr on.
#[derive(Clone, Debug)]
pub struct RedactorCell(Arc<RwLock<Arc<Redactor>>>);

impl Default for RedactorCell {
    fn default() -> Self {
        RedactorCell(Arc::new(RwLock::new(Arc::new(Redactor::new(Vec::new())))))
    }
}

impl RedactorCell {
    /// The redactor now.
    pub fn get(&self) -> Arc<Redactor> {
        Arc::clone(&self.0.read().unwrap_or_else(PoisonError::into_inner))
    }

    fn set(&self, r: Redactor) {
        *self.0.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(r);
    }
}

/// Says on stderr that values were redacted from `what`: how many, and the names.
pub fn report_redaction(what: &str, found: &[String]) {
    if found.is_empty() {
        return;
    }
    let mut names: Vec<&str> = found.iter().map(String::as_str).collect();
    names.sort_unstable();
    names.dedup();
    eprintln!(
        "flowlink-proxy: redacted {} secret value(s) from {what} ({})",
        found.len(),
        names.join(", ")
    );
}

/// What a server process is started with.
#[derive(Default)]
pub struct Prepared {
    /// Variables to set (nothing else in the environment changes).
    pub env: Vec<(String, Zeroizing<String>)>,
    /// Variables to remove (the proxy's own Vault credential).
    pub remove: Vec<&'static str>,
    /// FlowLink secrets given, for `SecretsUsed`.
    pub used: Vec<SecretUse>,
}

/// Why a call's placeholders cannot be replaced: the agent's message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlaceholderRefusal {
    /// For the agent.
    pub message: String,
    /// For the audit record, in a few words.
    pub reason: String,
}

/// One relay session's secrets.
pub struct SecretsRuntime {
    hub: Option<Arc<SecretsHub>>,
    service: String,
    dir: Option<PrivateDir>,
    vault: VaultValues,
    /// `(name, value)` given to server processes of this session (they may still hold them).
    given: Vec<(String, Zeroizing<String>)>,
    cell: RedactorCell,
    /// The hub generation and vault epoch the redactor was built for.
    built_for: Option<(u64, u64)>,
    /// Stale private directories were looked for.
    swept: bool,
}

impl SecretsRuntime {
    /// `hub` is `None` for a proxy that is not enrolled (only Vault entries can work then);
    /// `vault_wait` bounds each Vault round trip at start.
    pub fn new(hub: Option<Arc<SecretsHub>>, service: &str, vault_wait: Duration) -> Self {
        SecretsRuntime {
            hub,
            service: service.to_owned(),
            dir: None,
            vault: VaultValues::new(vault_wait),
            given: Vec::new(),
            cell: RedactorCell::default(),
            built_for: None,
            swept: false,
        }
    }

    /// The shared redactor (for the stderr task).
    pub fn cell(&self) -> RedactorCell {
        self.cell.clone()
    }

    /// The value of FlowLink secret `name` and its version, if this device holds it.
    fn flowlink(&self, name: &str) -> Option<(Zeroizing<String>, u64)> {
        let opened = self.hub.as_ref()?.current()?;
        opened.get(name).map(|s| (s.value.clone(), s.version))
    }

    /// The environment and files for a new server process of `policy`. A secret that is not
    /// available is said on stderr, by name, and left out; the server starts without it.
    pub async fn prepare(&mut self, policy: &SecretsPolicy) -> Prepared {
        let mut out = Prepared {
            remove: vec![VAULT_TOKEN_ENV, VAULT_SECRET_ID_ENV],
            ..Prepared::default()
        };
        if !self.swept && (self.hub.is_some() || !policy.injections().is_empty()) {
            // Directories of proxies that were killed before they could remove theirs.
            self.swept = true;
            let swept = sweep_stale(&base_dir());
            if swept > 0 {
                tracing::info!("removed {swept} secrets director(y/ies) of proxies that are gone");
            }
        }
        if policy.injections().is_empty() {
            return out;
        }
        let hub = self.hub.clone();
        let lookup = move |name: &str| {
            let opened = hub.as_ref()?.current()?;
            opened.get(name).map(|s| s.value.clone())
        };
        if policy.uses_vault() {
            self.vault.resolve(policy, &lookup).await;
        }
        let mut missing: Vec<String> = Vec::new();
        let mut file_failed: Vec<String> = Vec::new();
        for inj in policy.injections() {
            let (value, version) = match &inj.source {
                SecretSource::FlowLink => match self.flowlink(&inj.name) {
                    Some((v, version)) => (v, Some(version)),
                    None => {
                        missing.push(self.why_missing(&inj.name));
                        continue;
                    }
                },
                SecretSource::Vault(r) => match self.vault.value(&inj.name) {
                    Some(v) => (v, None),
                    None => {
                        missing.push(format!(
                            "{} (Vault {r}: {})",
                            inj.name,
                            self.vault.why(&inj.name)
                        ));
                        continue;
                    }
                },
            };
            self.give(&inj.name, &value);
            match &inj.file {
                Some(file) => {
                    let written = self.dir().and_then(|d| d.write(file, value.as_bytes()));
                    match written {
                        Ok(path) => {
                            if let Some(env) = &inj.env {
                                out.env.push((
                                    env.clone(),
                                    Zeroizing::new(path.display().to_string()),
                                ));
                            }
                        }
                        Err(e) => {
                            file_failed.push(format!("{} → {file}: {e}", inj.name));
                            continue;
                        }
                    }
                }
                None => {
                    if let Some(env) = &inj.env {
                        out.env.push((env.clone(), value));
                    }
                }
            }
            if let Some(version) = version {
                out.used.push(SecretUse {
                    name: inj.name.clone(),
                    version,
                    how: inj.how().to_owned(),
                });
            }
        }
        if let Some(dir) = &self.dir
            && policy.injections().iter().any(|i| i.file.is_some())
        {
            out.env.push((
                SECRETS_DIR_ENV.to_owned(),
                Zeroizing::new(dir.path().display().to_string()),
            ));
        }
        if !missing.is_empty() {
            eprintln!(
                "flowlink-proxy: MCP server `{}` starts without {} secret(s) its policy injects: {}",
                self.service,
                missing.len(),
                missing.join("; ")
            );
        }
        if !file_failed.is_empty() {
            eprintln!(
                "flowlink-proxy: could not write secret file(s) for `{}`: {}",
                self.service,
                file_failed.join("; ")
            );
        }
        let names: Vec<&str> = out.used.iter().map(|u| u.name.as_str()).collect();
        if !names.is_empty() {
            tracing::info!(
                service = %self.service,
                "injecting {} secret(s): {}",
                names.len(),
                names.join(", ")
            );
        }
        self.rebuild();
        out
    }

    fn why_missing(&self, name: &str) -> String {
        let Some(hub) = &self.hub else {
            return format!(
                "{name} (this proxy is not enrolled, so it has no FlowLink secrets; enrol it with `flowlink-proxy enroll`)"
            );
        };
        match hub.current() {
            None => format!(
                "{name} (no secrets received from the control plane yet and none cached; check `flowlink-proxy status`)"
            ),
            Some(o) => match o.problems.iter().find(|p| p.name == name) {
                Some(p) => format!("{name} ({})", p.why),
                None if o.out_of_scope.iter().any(|n| n == name) => format!(
                    "{name} (the secret exists but is not for this service or this device's labels)"
                ),
                None => format!(
                    "{name} (this device has no such secret: `flowlink-control secrets put {name} --service {}` creates it)",
                    self.service
                ),
            },
        }
    }

    fn dir(&mut self) -> std::io::Result<&PrivateDir> {
        if self.dir.is_none() {
            self.dir = Some(PrivateDir::create(&base_dir())?);
        }
        match &self.dir {
            Some(d) => Ok(d),
            None => Err(std::io::Error::other("no secrets directory")),
        }
    }

    /// Remembers that `value` went to the server; whether it is new.
    fn give(&mut self, name: &str, value: &Zeroizing<String>) -> bool {
        let new = !self
            .given
            .iter()
            .any(|(n, v)| n == name && v.as_str() == value.as_str());
        if new {
            self.given.push((name.to_owned(), value.clone()));
        }
        new
    }

    /// The value of placeholder `name`: a FlowLink secret or an injected Vault entry.
    fn placeholder_value(&self, name: &str) -> Option<(Zeroizing<String>, Option<u64>)> {
        if let Some((v, version)) = self.flowlink(name) {
            return Some((v, Some(version)));
        }
        self.vault.value(name).map(|v| (v, None))
    }

    /// Checks the placeholders of a call's `args`: every name must be allowed by the policy's
    /// `placeholders` and available. `Err` carries the message for the agent.
    pub fn check(
        &self,
        policy: &SecretsPolicy,
        tool: &str,
        args: &Value,
    ) -> Result<(), PlaceholderRefusal> {
        let names = placeholders::names(args);
        if names.is_empty() {
            return Ok(());
        }
        let not_allowed: Vec<&str> = names
            .iter()
            .filter(|n| !policy.allows_placeholder(n))
            .map(String::as_str)
            .collect();
        if !not_allowed.is_empty() {
            let globs: Vec<&str> = policy.placeholder_globs().collect();
            return Err(PlaceholderRefusal {
                reason: format!(
                    "placeholder(s) not allowed by the policy's [secrets] placeholders: {}",
                    not_allowed.join(", ")
                ),
                message: format!(
                    "FlowLink refused this `{tool}` call: the policy of service `{}` does not allow the placeholder(s) {} ({}). Nothing was run. Do not put the secret's value in the call instead; ask the user to allow the placeholder in the policy's [secrets] placeholders if it is needed.",
                    self.service,
                    not_allowed
                        .iter()
                        .map(|n| format!("{{{{secret:{n}}}}}"))
                        .collect::<Vec<_>>()
                        .join(", "),
                    if globs.is_empty() {
                        "it allows none".to_owned()
                    } else {
                        format!("it allows {}", globs.join(", "))
                    }
                ),
            });
        }
        let missing: Vec<String> = names
            .iter()
            .filter(|n| self.placeholder_value(n).is_none())
            .map(|n| {
                if self.vault.knows(n) {
                    format!("{n} (Vault: {})", self.vault.why(n))
                } else {
                    self.why_missing(n)
                }
            })
            .collect();
        if !missing.is_empty() {
            return Err(PlaceholderRefusal {
                reason: format!(
                    "secret(s) for placeholders not available: {}",
                    missing.join("; ")
                ),
                message: format!(
                    "FlowLink refused this `{tool}` call: the secret(s) for {} are not available on this device: {}. Nothing was run. Ask the user to check `flowlink-proxy status`.",
                    names
                        .iter()
                        .filter(|n| self.placeholder_value(n).is_none())
                        .map(|n| format!("{{{{secret:{n}}}}}"))
                        .collect::<Vec<_>>()
                        .join(", "),
                    missing.join("; ")
                ),
            });
        }
        Ok(())
    }

    /// Replaces the placeholders in a `tools/call`'s `params.arguments`, just before it is
    /// written to the server. Returns the FlowLink secrets used (empty when there was none).
    pub fn substitute(&mut self, msg: &mut Message) -> Result<Vec<SecretUse>, PlaceholderRefusal> {
        let has = msg
            .get("params")
            .is_some_and(|p| p.get().contains("{{secret:"));
        if !has {
            return Ok(Vec::new());
        }
        let Ok(Some(mut params)) = msg.decode("params") else {
            return Ok(Vec::new());
        };
        let Some(args) = params.get_mut("arguments") else {
            return Ok(Vec::new());
        };
        let names = placeholders::names(args);
        if names.is_empty() {
            return Ok(Vec::new());
        }
        let mut values: BTreeMap<String, Zeroizing<String>> = BTreeMap::new();
        let mut used = Vec::new();
        for name in &names {
            let Some((value, version)) = self.placeholder_value(name) else {
                return Err(PlaceholderRefusal {
                    reason: format!("the secret for placeholder {name} became unavailable"),
                    message: format!(
                        "FlowLink did not run this call: the secret for {{{{secret:{name}}}}} stopped being available before the call was forwarded. Retry it; if it fails again, ask the user to check `flowlink-proxy status`."
                    ),
                });
            };
            if let Some(version) = version {
                used.push(SecretUse {
                    name: name.clone(),
                    version,
                    how: "placeholder".into(),
                });
            }
            values.insert(name.clone(), value);
        }
        placeholders::substitute(args, &|n| values.get(n).map(|v| v.as_str())).map_err(|name| {
            PlaceholderRefusal {
                reason: format!("placeholder {name} could not be replaced"),
                message: format!(
                    "FlowLink did not run this call: {{{{secret:{name}}}}} could not be replaced."
                ),
            }
        })?;
        msg.set("params", &params);
        let mut new = false;
        for (name, value) in &values {
            new |= self.give(name, value);
        }
        if new {
            // Before the call is written: the server may answer with the value at once.
            self.rebuild();
        }
        zeroize_strings(&mut params);
        Ok(used)
    }

    /// The redactor for what leaves the proxy now (rebuilt when the secrets changed).
    pub fn redactor(&mut self) -> Arc<Redactor> {
        let now = (
            self.hub.as_ref().map_or(0, |h| h.generation()),
            self.vault.epoch(),
        );
        if self.built_for != Some(now) {
            self.rebuild();
        }
        self.cell.get()
    }

    /// Every value this session holds or gave away: the hub's secrets, Vault values and
    /// credentials, and what earlier server processes were given.
    fn rebuild(&mut self) {
        let mut pairs: Vec<(String, Zeroizing<String>)> = Vec::new();
        let mut add = |name: &str, value: &Zeroizing<String>| {
            if !value.is_empty()
                && !pairs
                    .iter()
                    .any(|(n, v)| n == name && v.as_str() == value.as_str())
            {
                pairs.push((name.to_owned(), value.clone()));
            }
        };
        if let Some(opened) = self.hub.as_ref().and_then(|h| h.current()) {
            for (name, s) in opened.iter() {
                add(name, &s.value);
            }
        }
        for (name, value) in self.vault.all() {
            add(name, value);
        }
        for (name, value) in &self.given {
            add(name, value);
        }
        self.built_for = Some((
            self.hub.as_ref().map_or(0, |h| h.generation()),
            self.vault.epoch(),
        ));
        self.cell.set(Redactor::new(pairs));
    }

    /// Removes the injected files (the proxy is exiting).
    pub fn cleanup(&mut self) {
        if let Some(dir) = self.dir.take() {
            dir.remove();
        }
    }
}

/// Overwrites every string in `v` before it is dropped (best effort: serde_json's own copies are
/// out of reach).
fn zeroize_strings(v: &mut Value) {
    use zeroize::Zeroize;
    match v {
        Value::String(s) => s.zeroize(),
        Value::Array(items) => items.iter_mut().for_each(zeroize_strings),
        Value::Object(map) => map.values_mut().for_each(zeroize_strings),
        _ => {}
    }
}
