//! Zero-trust secrets on the device: the control plane pushes secrets sealed to the
//! organisation's key, and only this device (holding the org key wrapped to its own box key) can
//! open them — in memory, never on disk in clear.
//!
//! # Pieces
//! * The cache: every `SecretsPush` is kept as received (sealed) in `link.sqlite3`
//!   ([`crate::link::state`]), so a proxy started while the control plane is down injects from it.
//! * [`open`]: unwrap the org keys with the device's box key (`SealContext::OrgKey`, recipient
//!   `device:<id>`), check each secret's scope (its services, the device's labels), open the values
//!   into `Zeroizing` buffers, answer key-possession challenges.
//! * [`hub::SecretsHub`]: the opened secrets of this process, replaced on every push.
//! * [`runtime::SecretsRuntime`]: a relay session's use of them — the environment variables and
//!   0600 files (in a 0700 directory, [`files`]) of each server process, `{{secret:NAME}}`
//!   [`placeholders`] in `tools/call` arguments (replaced after the decision, the approval digest
//!   and the audit record, which all see the placeholder), Vault entries ([`vault_values`]), and
//!   the redactor every byte leaving the proxy passes: server messages to the client, the
//!   server's stderr, audit records and approval requests.
//!
//! # Invariants
//! * Nothing the proxy writes to its stdout, its stderr or the audit trail carries a value it
//!   holds or gave to the server: each is redacted to `[REDACTED:NAME]` (raw and common
//!   encodings). Logs name secrets, never show values.
//! * A secret the policy injects but the device does not have is named on stderr and left out;
//!   the server starts without it. A placeholder the policy does not allow, or whose secret is
//!   not available, refuses the call with a message saying which and why.

pub mod files;
pub mod hub;
pub mod open;
pub mod placeholders;
pub mod runtime;
pub mod vault_values;

use std::path::Path;
use std::time::{Duration, Instant};

pub use hub::{SecretsHub, SecretsOrigin};
pub use runtime::{RedactorCell, SecretsRuntime};

use crate::link::{Credential, LinkHandle};

/// Opens the cached push of `service` into `hub`. Returns whether there was one.
pub fn load_cached(data_dir: &Path, cred: &Credential, service: &str, hub: &SecretsHub) -> bool {
    let cached = match crate::link::state::LinkState::open(data_dir)
        .and_then(|s| s.secrets(service))
    {
        Ok(Some(c)) => c,
        Ok(None) => return false,
        Err(e) => {
            eprintln!(
                "flowlink-proxy: cannot read the cached secrets ({e}); waiting for the control plane to send them"
            );
            return false;
        }
    };
    let key = open::box_key(cred);
    let opened = open::open_push(
        &cached.push,
        &open::Opener::for_credential(cred, &key, service),
    );
    report_problems(service, &opened);
    tracing::info!(
        "{} cached secret(s) for `{service}` opened (org key {})",
        opened.len(),
        opened
            .newest_key()
            .map_or_else(|| "not granted".to_owned(), |v| format!("v{v}"))
    );
    hub.set(opened, SecretsOrigin::Cache);
    true
}

/// Says on stderr which secrets of a push cannot be used, and why (names only).
pub fn report_problems(service: &str, opened: &open::OpenedSecrets) {
    if !opened.problems.is_empty() {
        eprintln!(
            "flowlink-proxy: {} secret(s) for `{service}` cannot be used: {}",
            opened.problems.len(),
            opened
                .problems
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; ")
        );
    }
}

/// Waits at most `wait` for the first push from the control plane; returns early when the link
/// cannot connect (offline) or the device is revoked. Returns whether secrets arrived.
pub async fn wait_for_first_push(hub: &SecretsHub, link: &LinkHandle, wait: Duration) -> bool {
    let start = hub.generation();
    let deadline = Instant::now() + wait;
    loop {
        if hub.generation() != start {
            return true;
        }
        if link.is_revoked() || (link.failed_attempts() > 0 && !link.is_connected()) {
            return false;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
