//! The control plane's side of the link to enrolled proxies (see `flowlink_proto::link`):
//! the registry of connected links and delivery to them ([`hub`]), one link's conversation and
//! the device health task ([`session`]), and the way replicas sharing a PostgreSQL database
//! tell each other about changes ([`notify`]).
//!
//! Other code talks to devices only through the functions here, never through the hub
//! directly, so that a message reaches a device whichever replica holds its links:
//!
//! - [`deliver`]: a [`ControlMessage`] for every link of a device (approval decisions, …);
//! - [`device_changed`] / [`revoke`]: the device's record changed (labels, keys, revocation);
//! - [`policy_changed`]: an organisation's policy changed; every link whose bundle differs gets
//!   the new one.
//! - [`secrets_changed`]: an organisation's secrets or keys changed; every link whose
//!   `SecretsPush` differs gets the new one (and a key challenge when its newest key version is
//!   not yet proved by the device).
//!
//! On SQLite one process holds every link (a second process on the same database refuses to
//! start), so these act locally. On PostgreSQL they act locally and send a `NOTIFY` naming the
//! device (or organisation) and the kind of change; each other replica rebuilds what to send
//! from the database rather than trusting the notification.

pub mod hub;
pub mod notify;
pub mod session;

use flowlink_proto::link::{ControlMessage, KeyChallenge, LinkError, ProxyMessage, Revoked};
use flowlink_proto::sealed::{BoxPublicKey, SealContext, SealError, challenge_proof, seal};

use crate::api::AppState;
use crate::auth::secret::{fill_random, sha256_hex};
use crate::store::{Backend, Device, SecretsKeyVersion, Store, StoreError, new_id};

/// Delivers `msg` to every link of `device_id` (only those wrapping `service`, when given), on
/// this replica at once and, on PostgreSQL, on every other replica through the database
/// (`link_messages` and a `NOTIFY`; the receiving replica reads the message from the table).
/// Returns how many links held by this replica took it; a device with no link anywhere simply
/// does not get it (a proxy re-sends what it waits for when it reconnects).
pub async fn deliver(
    state: &AppState,
    device_id: &str,
    service: Option<&str>,
    msg: &ControlMessage,
) -> Result<usize, StoreError> {
    let here = state.links.deliver(device_id, service, msg);
    if state.store.backend() == Backend::Postgres {
        let body = serde_json::to_string(msg)
            .map_err(|e| StoreError::Corrupt(format!("control message: {e}")))?;
        let id = state
            .store
            .create_link_message(device_id, service, &body)
            .await?;
        state.links.sessions.remember_message(&id);
        notify::publish(
            state,
            &notify::Notice::message(state.links.sessions.replica(), device_id, &id),
        )
        .await?;
    }
    Ok(here)
}

/// The device's record changed (labels, name, keys or revocation): each of its links, on
/// every replica, re-reads it and acts — a revoked device gets [`ControlMessage::Revoked`] and
/// is disconnected, a re-keyed one is disconnected, a relabelled one gets its new policy if it
/// differs. Failures to tell other replicas are logged; their links catch up when the listener
/// reconnects.
pub async fn device_changed(state: &AppState, device_id: &str) {
    state.links.sessions.refresh_device(device_id);
    let notice = notify::Notice::device(state.links.sessions.replica(), device_id);
    if let Err(e) = notify::publish(state, &notice).await {
        tracing::warn!(error = %e, device = device_id, "could not tell other replicas about a device change");
    }
}

/// A device was revoked (already recorded in the database, with `reason`): every link of it
/// held here gets [`ControlMessage::Revoked`] and is closed at once; other replicas do the same
/// for theirs when told.
pub async fn revoke(state: &AppState, device_id: &str, reason: &str) {
    let msg = ControlMessage::Revoked(Revoked {
        reason: revoked_text(Some(reason)),
    });
    state.links.deliver(device_id, None, &msg);
    state.links.disconnect(device_id);
    session::update_gauge(state);
    let notice = notify::Notice::device(state.links.sessions.replica(), device_id);
    if let Err(e) = notify::publish(state, &notice).await {
        tracing::warn!(error = %e, device = device_id, "could not tell other replicas about a revocation");
    }
}

/// What a revoked device's proxies are told.
pub fn revoked_text(reason: Option<&str>) -> String {
    match reason.map(str::trim) {
        Some(r) if !r.is_empty() => {
            format!("this device was revoked by an admin of its organisation: {r}")
        }
        _ => "this device was revoked by an admin of its organisation".to_string(),
    }
}

/// An organisation's policy changed (a version was published or rolled back): every link of
/// the organisation, on every replica, rebuilds its bundle and gets it if it differs from the
/// one it has.
pub async fn policy_changed(state: &AppState, org_id: &str) {
    state.links.sessions.refresh_org(org_id);
    let notice = notify::Notice::org_policy(state.links.sessions.replica(), org_id);
    if let Err(e) = notify::publish(state, &notice).await {
        tracing::warn!(error = %e, org = org_id, "could not tell other replicas about a policy change");
    }
}

/// An organisation's secrets, keys, wraps or `rotation_required` changed: every link of the
/// organisation, on every replica, rebuilds its `SecretsPush` and gets it if it differs from
/// the one it has.
pub async fn secrets_changed(state: &AppState, org_id: &str) {
    state.links.sessions.refresh_org(org_id);
    let notice = notify::Notice::org_secrets(state.links.sessions.replica(), org_id);
    if let Err(e) = notify::publish(state, &notice).await {
        tracing::warn!(error = %e, org = org_id, "could not tell other replicas about a secrets change");
    }
}

/// Why a key challenge could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ChallengeError {
    /// Sealing to the org public key failed (a stored key that is not usable).
    #[error("cannot seal a challenge to the org key: {0}")]
    Seal(#[from] SealError),
    /// The database.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Makes a key-possession challenge for `device_id`: 32 random bytes sealed to the org public
/// key of `key` (only the public key is needed), stored with the SHA-256 of the expected proof.
/// `offline` stores it as already answered `offline` (a verification run's device that cannot
/// be asked).
pub async fn new_challenge(
    store: &Store,
    key: &SecretsKeyVersion,
    device_id: &str,
    verification_id: Option<&str>,
    offline: bool,
) -> Result<KeyChallenge, ChallengeError> {
    let id = new_id();
    let mut plaintext = zeroize::Zeroizing::new([0u8; 32]);
    fill_random(&mut plaintext[..]);
    let sealed = seal(
        &BoxPublicKey(key.public_key),
        &SealContext::Challenge {
            org_id: &key.org_id,
            key_version: key.version,
            challenge_id: &id,
        },
        &plaintext[..],
    )?;
    let proof_hash = sha256_hex(&challenge_proof(&plaintext[..]));
    store
        .create_challenge(
            &id,
            &key.org_id,
            verification_id,
            device_id,
            key.version,
            &proof_hash,
            offline,
        )
        .await?;
    Ok(KeyChallenge {
        challenge_id: id,
        key_version: key.version,
        sealed,
    })
}

/// Starts this state's background work once: the device health task and, on PostgreSQL, the
/// listener for other replicas' notifications. Both stop when the store is closed. Does
/// nothing outside a Tokio runtime.
pub fn start(state: &AppState) {
    if tokio::runtime::Handle::try_current().is_err() || !state.links.sessions.claim_start() {
        return;
    }
    tokio::spawn(session::health_task(state.clone()));
    tokio::spawn(crate::approvals::run_clock(state.clone()));
    if state.store.backend() == Backend::Postgres {
        tokio::spawn(notify::listen(state.clone()));
    }
}

/// What the control plane does with an approval request or cancellation from `device`; the
/// replies go back on the same link, in order: `ApprovalAccepted`, and the decision at once
/// when there already is one (a re-sent request, or an earlier "same call for N minutes"
/// approval). A request the queue cannot take is answered with a `cancelled` decision whose
/// comment says why, so the proxy stops holding the call instead of waiting for a timeout.
pub async fn approvals_inbox(
    state: &AppState,
    device: &Device,
    msg: ProxyMessage,
) -> Vec<ControlMessage> {
    use flowlink_proto::link::{ApprovalDecision, ApprovalOutcome, ApprovalScope};
    match msg {
        ProxyMessage::ApprovalRequest(req) => {
            match crate::approvals::file_request(state, &device.org_id, &device.id, &req).await {
                Ok(replies) => replies,
                Err(e) => {
                    let why = match &e {
                        crate::approvals::FileError::Invalid(m) => m.clone(),
                        crate::approvals::FileError::Store(err) => {
                            tracing::error!(error = %err, device = %device.id, "could not file an approval request");
                            "the control plane could not store the request; try again shortly"
                                .to_string()
                        }
                    };
                    vec![ControlMessage::ApprovalDecision(ApprovalDecision {
                        call_ref: req.call_ref.clone(),
                        request_id: String::new(),
                        outcome: ApprovalOutcome::Cancelled,
                        decided_by: Vec::new(),
                        comment: Some(format!(
                            "the control plane refused the approval request: {why}"
                        )),
                        scope: ApprovalScope::ThisCall,
                    })]
                }
            }
        }
        ProxyMessage::ApprovalCancel(cancel) => {
            if let Err(e) = crate::approvals::cancel(state, &device.id, &cancel).await {
                tracing::error!(error = %e, device = %device.id, "could not withdraw an approval request");
            }
            Vec::new()
        }
        _ => vec![ControlMessage::Error(LinkError {
            code: "unexpected_message".to_string(),
            message: "only approval requests and cancellations belong here".to_string(),
            fatal: false,
        })],
    }
}
