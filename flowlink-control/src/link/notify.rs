//! Replicas sharing one PostgreSQL database tell each other about changes for links they may
//! hold, with `NOTIFY` on a channel of their schema ([`CHANNEL_SQL`]: `flowlink_link_` and a
//! hash of the schema name, so deployments in other schemas of the same database never hear
//! each other).
//!
//! A notification says only *what* changed — a device, an organisation's policy or secrets, or
//! a stored message for a device — and which replica sent it (that replica has already acted on
//! its own links and skips it). The receiving replica rebuilds what to send from the database:
//! it re-reads the device, rebuilds the policy bundle and the secrets push, or reads the message
//! from `link_messages`.
//! A notification that names something the database does not confirm does nothing.
//!
//! The listener reconnects on its own (with backoff). Notifications sent while it was
//! disconnected are lost by PostgreSQL, so after every connect (the first too: links are
//! served before it listens) it catches up: every link here
//! re-reads its device and policy, and messages stored since the last notification it saw are
//! delivered (each message id at most once).

use std::time::Duration;

use flowlink_proto::link::ControlMessage;
use serde::{Deserialize, Serialize};
use sqlx::AssertSqlSafe;
use sqlx::postgres::PgListener;

use crate::api::AppState;
use crate::store::{Backend, StoreError, now_us};

/// The SQL expression naming the channel of the connection's schema (the same on every
/// replica of one deployment, and short enough for PostgreSQL's 63-byte channel names).
pub const CHANNEL_SQL: &str = "'flowlink_link_' || substr(md5(current_schema()), 1, 16)";

/// How long stored messages are kept for replicas that reconnect (Unix µs).
pub const MESSAGE_RETENTION_US: i64 = 10 * 60 * 1_000_000;

/// What a notification is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NoticeKind {
    /// The device's record changed (labels, keys, revocation).
    Device,
    /// The organisation's policy changed.
    OrgPolicy,
    /// The organisation's secrets or secrets keys changed.
    OrgSecrets,
    /// A message for the device is stored in `link_messages` under `id`.
    Message,
}

/// One notification's payload (JSON, well under PostgreSQL's 8,000-byte limit).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Notice {
    /// The sending replica.
    pub from: String,
    /// What changed.
    pub kind: NoticeKind,
    /// The device, for `device` and `message`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    /// The organisation, for `org_policy`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub org: Option<String>,
    /// The stored message, for `message`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
}

impl Notice {
    /// A device's record changed.
    pub fn device(from: &str, device_id: &str) -> Notice {
        Notice {
            from: from.to_string(),
            kind: NoticeKind::Device,
            device: Some(device_id.to_string()),
            org: None,
            id: None,
        }
    }

    /// An organisation's policy changed.
    pub fn org_policy(from: &str, org_id: &str) -> Notice {
        Notice {
            from: from.to_string(),
            kind: NoticeKind::OrgPolicy,
            device: None,
            org: Some(org_id.to_string()),
            id: None,
        }
    }

    /// An organisation's secrets or secrets keys changed.
    pub fn org_secrets(from: &str, org_id: &str) -> Notice {
        Notice {
            kind: NoticeKind::OrgSecrets,
            ..Notice::org_policy(from, org_id)
        }
    }

    /// A message for a device was stored.
    pub fn message(from: &str, device_id: &str, id: &str) -> Notice {
        Notice {
            from: from.to_string(),
            kind: NoticeKind::Message,
            device: Some(device_id.to_string()),
            org: None,
            id: Some(id.to_string()),
        }
    }
}

/// Sends `notice` to every replica (PostgreSQL only; on SQLite there are no others).
pub async fn publish(state: &AppState, notice: &Notice) -> Result<(), StoreError> {
    if state.store.backend() != Backend::Postgres {
        return Ok(());
    }
    let payload = serde_json::to_string(notice)
        .map_err(|e| StoreError::Corrupt(format!("notification: {e}")))?;
    sqlx::query(AssertSqlSafe(format!(
        "SELECT pg_notify({CHANNEL_SQL}, $1)"
    )))
    .bind(payload)
    .execute(state.store.pool())
    .await?;
    Ok(())
}

/// Listens for other replicas' notifications until the store is closed.
pub async fn listen(state: AppState) {
    let closed = state.store.pool().close_event();
    tokio::select! {
        () = closed => {}
        () = listen_loop(&state) => {}
    }
}

async fn listen_loop(state: &AppState) {
    let mut backoff = Duration::from_millis(100);
    // Links may connect, and other replicas may notify, before the first `LISTEN` is in place
    // (the server serves as soon as this task is spawned). So the first connection catches up
    // too, from just before this replica started: no change is lost to that race.
    let mut seen_until = now_us() - 1_000_000;
    loop {
        let mut listener = match connect(state).await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "link notifications: cannot listen; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
                continue;
            }
        };
        backoff = Duration::from_millis(100);
        catch_up(state, seen_until).await;
        seen_until = now_us() - 1_000_000;
        loop {
            match listener.try_recv().await {
                Ok(Some(n)) => {
                    seen_until = now_us() - 1_000_000;
                    match serde_json::from_str::<Notice>(n.payload()) {
                        Ok(notice) => handle(state, notice).await,
                        Err(e) => {
                            tracing::warn!(error = %e, "link notifications: ignoring a payload that is not a notice")
                        }
                    }
                }
                Ok(None) => {
                    // The connection was lost and has been re-established: anything sent in
                    // between is gone from PostgreSQL, so rebuild from the database.
                    tracing::info!("link notifications: connection re-established; catching up");
                    catch_up(state, seen_until).await;
                    seen_until = now_us() - 1_000_000;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "link notifications: listener failed; reconnecting");
                    tokio::time::sleep(backoff).await;
                    break;
                }
            }
        }
    }
}

async fn connect(state: &AppState) -> Result<PgListener, sqlx::Error> {
    let channel: String = sqlx::query_scalar(AssertSqlSafe(format!("SELECT {CHANNEL_SQL}")))
        .fetch_one(state.store.pool())
        .await?;
    let mut listener = PgListener::connect(&state.config.database_url).await?;
    listener.listen(&channel).await?;
    Ok(listener)
}

/// After notifications may have been lost: every link here re-reads its device and policy,
/// and messages stored since `since` for devices served here are delivered.
async fn catch_up(state: &AppState, since: i64) {
    state.links.sessions.refresh_all();
    match state.store.link_messages_since(since).await {
        Ok(messages) => {
            for (id, device, service, body) in messages {
                deliver_stored(state, &id, &device, service.as_deref(), &body);
            }
        }
        Err(e) => tracing::warn!(error = %e, "link notifications: cannot read missed messages"),
    }
}

fn deliver_stored(state: &AppState, id: &str, device: &str, service: Option<&str>, body: &str) {
    if !state.links.sessions.serves(device) || !state.links.sessions.remember_message(id) {
        return;
    }
    match serde_json::from_str::<ControlMessage>(body) {
        Ok(msg) => {
            state.links.deliver(device, service, &msg);
            if matches!(msg, ControlMessage::Revoked(_)) {
                state.links.disconnect(device);
            }
        }
        Err(e) => tracing::warn!(error = %e, message = id, "a stored link message does not decode"),
    }
}

async fn handle(state: &AppState, notice: Notice) {
    if notice.from == state.links.sessions.replica() {
        return;
    }
    match notice.kind {
        NoticeKind::Device => {
            if let Some(device) = &notice.device {
                // Each session re-reads the device: revoked → `revoked` and closed, re-keyed →
                // closed, relabelled → new policy if it differs.
                state.links.sessions.refresh_device(device);
            }
        }
        NoticeKind::OrgPolicy | NoticeKind::OrgSecrets => {
            // Each session re-checks its policy bundle and its secrets push.
            if let Some(org) = &notice.org {
                state.links.sessions.refresh_org(org);
            }
        }
        NoticeKind::Message => {
            let (Some(device), Some(id)) = (&notice.device, &notice.id) else {
                return;
            };
            if !state.links.sessions.serves(device) {
                return;
            }
            match state.store.link_message(id).await {
                Ok(Some((stored_device, service, body))) if stored_device == *device => {
                    deliver_stored(state, id, device, service.as_deref(), &body);
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "link notifications: cannot read a message"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notices_are_small_json() {
        let n = Notice::message("r1", "dev", "msg");
        let text = serde_json::to_string(&n).expect("json");
        assert_eq!(
            text,
            r#"{"from":"r1","kind":"message","device":"dev","id":"msg"}"#
        );
        assert_eq!(serde_json::from_str::<Notice>(&text).expect("parse"), n);
        let o = serde_json::to_string(&Notice::org_policy("r", "o")).expect("json");
        assert_eq!(o, r#"{"from":"r","kind":"org_policy","org":"o"}"#);
        let s = serde_json::to_string(&Notice::org_secrets("r", "o")).expect("json");
        assert_eq!(s, r#"{"from":"r","kind":"org_secrets","org":"o"}"#);
    }
}
