//! One proxy's link, from the WebSocket upgrade to the close, and the task that turns missed
//! heartbeats into device health.
//!
//! # The conversation (see `flowlink_proto::link`)
//! 1. `hello` within [`HANDSHAKE_TIMEOUT`]; another protocol version is refused (fatal
//!    `unsupported_version`).
//! 2. A `challenge` of 32 random bytes; the device answers with `auth`, its Ed25519 signature
//!    over [`auth_message`] bound to the control plane's `public_url`. An unknown device, a bad
//!    signature or a revoked device ends the link (fatal `unknown_device`, `bad_signature`, or
//!    `revoked`).
//! 3. `welcome`, then `policy`: the signed bundle for the device's labels and the hello's
//!    service; then `secrets`: the org key versions wrapped to this device and the sealed
//!    secrets in scope for its service and labels (complete set, possibly empty), and a
//!    `key_challenge` when the device has not yet proved it holds the newest key version.
//! 4. Then: heartbeats update the device's last-seen time and its servers' health; an audit
//!    batch is committed before its `audit_ack` is sent; approval messages go to
//!    [`super::approvals_inbox`]; a `key_proof` answers a challenge (a proof confirms the
//!    device's wrap, and once every active device confirmed the active key older `retiring`
//!    versions are retired); `secrets_used` records when secrets were last used; unknown
//!    message types are ignored; anything else out of order gets a non-fatal error. A link silent for three heartbeat intervals is closed; a frame
//!    larger than [`MAX_FRAME_BYTES`] is refused.
//!
//! While connected a link is registered in the hub (so [`super::deliver`] reaches it) and in
//! [`Sessions`] (so a change of its device or its organisation's policy or secrets makes it
//! re-read the database: a new bundle, or a new secrets push, is sent only when it differs from
//! the last one sent).
//!
//! # Health
//! A device is `online` while its last heartbeat is at most two intervals old, `stale` up to
//! five, `offline` after that ([`health_of`]). [`health_task`] records each change once in the
//! organisation's audit trail (`agent.online`, `agent.stale`, `agent.offline`), with a
//! compare-and-set on the stored state so concurrent replicas do not record it twice.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use ed25519_dalek::{Signature, VerifyingKey};
use flowlink_proto::bundle::{PolicyBundle, SignedBundle};
use flowlink_proto::link::{
    AuditAck, AuditBatch, AuditEnvelope, Challenge, ControlMessage, Hello, KeyProof, LINK_VERSION,
    LinkError, PolicyPush, ProxyMessage, Revoked, SecretsUsed, ServerHealth, Welcome, auth_message,
};
use tokio::sync::{Notify, mpsc};
use tokio::time::Instant;

use super::hub::{LINK_QUEUE, LinkHandle};
use crate::api::policies::PolicyApiError;
use crate::api::{AppState, ClientInfo};
use crate::auth::secret::{fill_random, random_token, sha256_hex};
use crate::store::{AuditEvent, Device, StoreError, now_us};

/// Largest frame a proxy may send (an audit batch of [`MAX_BATCH`] large records fits).
pub const MAX_FRAME_BYTES: usize = 4 * 1024 * 1024;
/// Most audit events per batch (told to the proxy in `welcome`).
pub const MAX_BATCH: u32 = 500;
/// How long a proxy has for `hello`, and then for `auth`.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one frame may take to write before the peer is considered gone.
const SEND_TIMEOUT: Duration = Duration::from_secs(10);
/// Most servers one heartbeat may describe (more are ignored).
const MAX_SERVERS: usize = 64;
/// Longest proxy version kept from a hello (a longer one, or one with control characters, is
/// recorded as not said; the link is not refused for it).
const MAX_PROXY_VERSION_CHARS: usize = 64;
/// Longest service name accepted in a hello or heartbeat.
const MAX_SERVICE_CHARS: usize = 200;
/// Longest `last_error` kept from a heartbeat.
const MAX_ERROR_CHARS: usize = 2000;
/// How long key challenges (and so verification runs) are kept: 30 days, in Unix µs.
pub const KEY_CHALLENGE_RETENTION_US: i64 = 30 * 86_400 * 1_000_000;
/// Most secret uses one `secrets_used` may report (more are ignored).
const MAX_SECRET_USES: usize = 1024;
/// Name of the gauge of links held by this process.
pub const GAUGE: &str = "flowlink_connected_proxies";
/// How many recently delivered cross-replica message ids are remembered (so none is delivered
/// twice when a listener catches up).
const RECENT_MESSAGES: usize = 4096;

/// The link sessions of this process, by session: which device and organisation each serves,
/// and how to make it re-read the database.
#[derive(Debug)]
pub struct Sessions {
    replica: String,
    live: Mutex<HashMap<u64, Live>>,
    next: AtomicU64,
    started: AtomicBool,
    recent: Mutex<(HashSet<String>, VecDeque<String>)>,
}

#[derive(Debug)]
struct Live {
    device_id: String,
    org_id: String,
    refresh: Arc<Notify>,
}

impl Default for Sessions {
    fn default() -> Sessions {
        Sessions {
            replica: random_token(12),
            live: Mutex::default(),
            next: AtomicU64::new(1),
            started: AtomicBool::new(false),
            recent: Mutex::default(),
        }
    }
}

impl Sessions {
    /// This process's random replica id (names it in notifications, so it skips its own).
    pub fn replica(&self) -> &str {
        &self.replica
    }

    /// True the first time only: whether the caller should start the background tasks.
    pub(crate) fn claim_start(&self) -> bool {
        !self.started.swap(true, Ordering::SeqCst)
    }

    fn add(&self, device_id: &str, org_id: &str) -> (u64, Arc<Notify>) {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let refresh = Arc::new(Notify::new());
        let mut live = self.live.lock().unwrap_or_else(|p| p.into_inner());
        live.insert(
            id,
            Live {
                device_id: device_id.to_string(),
                org_id: org_id.to_string(),
                refresh: refresh.clone(),
            },
        );
        (id, refresh)
    }

    fn remove(&self, id: u64) {
        let mut live = self.live.lock().unwrap_or_else(|p| p.into_inner());
        live.remove(&id);
    }

    fn refresh_where(&self, pick: impl Fn(&Live) -> bool) -> usize {
        let live = self.live.lock().unwrap_or_else(|p| p.into_inner());
        let mut n = 0;
        for l in live.values().filter(|l| pick(l)) {
            l.refresh.notify_one();
            n += 1;
        }
        n
    }

    /// Makes every session of `device_id` here re-read its device and policy.
    pub fn refresh_device(&self, device_id: &str) -> usize {
        self.refresh_where(|l| l.device_id == device_id)
    }

    /// Makes every session of `org_id` here re-check its policy.
    pub fn refresh_org(&self, org_id: &str) -> usize {
        self.refresh_where(|l| l.org_id == org_id)
    }

    /// Makes every session here re-read its device and policy (after notifications may have
    /// been missed).
    pub fn refresh_all(&self) -> usize {
        self.refresh_where(|_| true)
    }

    /// Whether any session here serves `device_id`.
    pub fn serves(&self, device_id: &str) -> bool {
        let live = self.live.lock().unwrap_or_else(|p| p.into_inner());
        live.values().any(|l| l.device_id == device_id)
    }

    /// Remembers a cross-replica message id as delivered; false if it already was.
    pub(crate) fn remember_message(&self, id: &str) -> bool {
        let mut recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        let (set, order) = &mut *recent;
        if !set.insert(id.to_string()) {
            return false;
        }
        order.push_back(id.to_string());
        while order.len() > RECENT_MESSAGES {
            if let Some(old) = order.pop_front() {
                set.remove(&old);
            }
        }
        true
    }
}

/// Sets the connected-proxies gauge to the links held here.
pub fn update_gauge(state: &AppState) {
    let n = i64::try_from(state.links.link_count()).unwrap_or(i64::MAX);
    state
        .metrics
        .set_gauge(GAUGE, "Proxy links held by this control-plane process.", n);
}

// ---------------------------------------------------------------------------------------------
// Health.

/// A device's health from its heartbeats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceHealth {
    /// Heard from within two heartbeat intervals.
    Online,
    /// Missed two to five heartbeats.
    Stale,
    /// Silent longer, or never connected.
    Offline,
}

impl DeviceHealth {
    /// `online`, `stale` or `offline`.
    pub fn as_str(self) -> &'static str {
        match self {
            DeviceHealth::Online => "online",
            DeviceHealth::Stale => "stale",
            DeviceHealth::Offline => "offline",
        }
    }
}

fn micros(d: Duration) -> i64 {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX / 8)
}

/// The health of a device last heard from at `last_seen` (Unix µs), at `now`, with heartbeats
/// every `heartbeat`.
pub fn health_of(last_seen: Option<i64>, now: i64, heartbeat: Duration) -> DeviceHealth {
    let Some(seen) = last_seen else {
        return DeviceHealth::Offline;
    };
    let age = now.saturating_sub(seen);
    let h = micros(heartbeat);
    if age <= 2 * h {
        DeviceHealth::Online
    } else if age <= 5 * h {
        DeviceHealth::Stale
    } else {
        DeviceHealth::Offline
    }
}

/// Records every device whose health changed since the last run (once per change, across
/// replicas). Returns how many changes this call recorded.
pub async fn check_health(state: &AppState) -> Result<usize, StoreError> {
    let now = now_us();
    let heartbeat = state.config.link_heartbeat;
    let h = micros(heartbeat);
    let due = state
        .store
        .devices_due_health(now - 2 * h, now - 5 * h)
        .await?;
    let mut recorded = 0;
    for device in due {
        let to = health_of(device.last_seen_at, now, heartbeat);
        if to.as_str() == device.health {
            continue;
        }
        let (kind, outcome) = match to {
            DeviceHealth::Online => ("agent.online", "success"),
            DeviceHealth::Stale => ("agent.stale", "failure"),
            DeviceHealth::Offline => ("agent.offline", "failure"),
        };
        let missed = device
            .last_seen_at
            .map(|seen| (now - seen) / h.max(1))
            .unwrap_or(0);
        let event = AuditEvent {
            org_id: Some(device.org_id.clone()),
            kind: kind.to_string(),
            actor_kind: "system".to_string(),
            actor_id: "flowlink-control".to_string(),
            target: device.id.clone(),
            outcome: outcome.to_string(),
            ip: String::new(),
            detail: serde_json::json!({
                "device": device.id,
                "device_name": device.name,
                "hostname": device.hostname,
                "from": device.health,
                "to": to.as_str(),
                "last_seen_at": device.last_seen_at.map(crate::api::auth::rfc3339),
                "heartbeat_secs": heartbeat.as_secs(),
                "missed_heartbeats": missed,
            }),
        };
        if state
            .store
            .set_device_health(&device.id, &device.health, to.as_str(), &event)
            .await?
        {
            recorded += 1;
        }
    }
    Ok(recorded)
}

/// Runs [`check_health`] a few times per heartbeat interval (at least every 5 s) and purges old
/// cross-replica messages and key challenges, until the store is closed.
pub async fn health_task(state: AppState) {
    let tick =
        (state.config.link_heartbeat / 2).clamp(Duration::from_millis(200), Duration::from_secs(5));
    let mut next_purge = Instant::now();
    loop {
        tokio::time::sleep(tick).await;
        if state.store.pool().is_closed() {
            return;
        }
        if let Err(e) = check_health(&state).await {
            tracing::warn!(error = %e, "device health check failed; retrying");
        }
        if Instant::now() >= next_purge {
            next_purge = Instant::now() + Duration::from_secs(60);
            if let Err(e) = state
                .store
                .purge_link_messages(now_us() - super::notify::MESSAGE_RETENTION_US)
                .await
            {
                tracing::warn!(error = %e, "could not purge old link messages");
            }
            if let Err(e) = state
                .store
                .purge_key_challenges(now_us() - KEY_CHALLENGE_RETENTION_US)
                .await
            {
                tracing::warn!(error = %e, "could not purge old key challenges");
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// One link.

enum Incoming {
    Message(ProxyMessage),
    Control,
    Invalid(String),
    TooLarge(usize),
    TimedOut,
    Closed,
}

async fn next_message(socket: &mut WebSocket, deadline: Instant) -> Incoming {
    match tokio::time::timeout_at(deadline, socket.recv()).await {
        Err(_) => Incoming::TimedOut,
        Ok(None) | Ok(Some(Err(_))) => Incoming::Closed,
        Ok(Some(Ok(msg))) => match msg {
            Message::Text(text) if text.len() > MAX_FRAME_BYTES => Incoming::TooLarge(text.len()),
            Message::Text(text) => match serde_json::from_str::<ProxyMessage>(text.as_str()) {
                Ok(m) => Incoming::Message(m),
                Err(e) => Incoming::Invalid(format!("not a link message: {e}")),
            },
            Message::Binary(b) if b.len() > MAX_FRAME_BYTES => Incoming::TooLarge(b.len()),
            Message::Binary(_) => Incoming::Invalid(
                "binary frames are not part of the link protocol; send JSON text frames".into(),
            ),
            Message::Ping(_) | Message::Pong(_) => Incoming::Control,
            Message::Close(_) => Incoming::Closed,
        },
    }
}

/// Sends one message; `Err` when the peer is gone.
async fn send(socket: &mut WebSocket, msg: &ControlMessage) -> Result<(), ()> {
    let text = serde_json::to_string(msg).map_err(|e| {
        tracing::error!(error = %e, "a control message does not serialise");
    })?;
    match tokio::time::timeout(SEND_TIMEOUT, socket.send(Message::Text(text.into()))).await {
        Ok(Ok(())) => Ok(()),
        _ => Err(()),
    }
}

async fn close(socket: &mut WebSocket, code: u16, reason: &str) {
    let frame = CloseFrame {
        code,
        reason: reason.into(),
    };
    let _ = tokio::time::timeout(SEND_TIMEOUT, socket.send(Message::Close(Some(frame)))).await;
}

fn error(code: &str, message: impl Into<String>, fatal: bool) -> ControlMessage {
    ControlMessage::Error(LinkError {
        code: code.to_string(),
        message: message.into(),
        fatal,
    })
}

/// Close codes: 1008 policy violation, 1009 too big, 1011 server error, 1001 going away.
const POLICY_VIOLATION: u16 = 1008;
const TOO_BIG: u16 = 1009;
const SERVER_ERROR: u16 = 1011;
const GOING_AWAY: u16 = 1001;

/// Sends a fatal error and closes.
async fn fatal(socket: &mut WebSocket, code: &str, message: impl Into<String>, close_code: u16) {
    let _ = send(socket, &error(code, message, true)).await;
    close(socket, close_code, code).await;
}

async fn refuse_incoming(socket: &mut WebSocket, incoming: Incoming, expected: &str) {
    match incoming {
        Incoming::Message(m) => {
            let kind = serde_json::to_value(&m)
                .ok()
                .and_then(|v| v.get("type").and_then(|t| t.as_str().map(str::to_string)))
                .unwrap_or_else(|| "unknown".to_string());
            fatal(
                socket,
                "unexpected_message",
                format!("expected `{expected}` here, got `{kind}`; follow the link protocol's order (hello, auth)"),
                POLICY_VIOLATION,
            )
            .await;
        }
        Incoming::Invalid(why) => fatal(socket, "invalid_message", why, POLICY_VIOLATION).await,
        Incoming::TooLarge(n) => {
            fatal(
                socket,
                "frame_too_large",
                format!("a frame of {n} bytes is larger than the {MAX_FRAME_BYTES} bytes accepted"),
                TOO_BIG,
            )
            .await;
        }
        Incoming::TimedOut => {
            fatal(
                socket,
                "timeout",
                format!(
                    "no `{expected}` within {} s; the link was closed",
                    HANDSHAKE_TIMEOUT.as_secs()
                ),
                POLICY_VIOLATION,
            )
            .await;
        }
        Incoming::Control | Incoming::Closed => {}
    }
}

/// Waits for a handshake message, skipping control frames.
async fn handshake_message(socket: &mut WebSocket) -> Incoming {
    let deadline = Instant::now() + HANDSHAKE_TIMEOUT;
    loop {
        match next_message(socket, deadline).await {
            Incoming::Control => continue,
            other => return other,
        }
    }
}

fn sane_text(s: &str, max: usize) -> bool {
    !s.is_empty() && s.chars().count() <= max && !s.chars().any(char::is_control)
}

/// Hello, challenge, auth: the authenticated device and its hello, or `None` once the link
/// has been refused and closed.
async fn handshake(state: &AppState, socket: &mut WebSocket) -> Option<(Device, Hello)> {
    let hello = match handshake_message(socket).await {
        Incoming::Message(ProxyMessage::Hello(h)) => h,
        other => {
            refuse_incoming(socket, other, "hello").await;
            return None;
        }
    };
    if hello.version != LINK_VERSION {
        fatal(
            socket,
            "unsupported_version",
            format!(
                "this control plane speaks link protocol version {LINK_VERSION} and the proxy speaks version {}; upgrade the older of the two",
                hello.version
            ),
            POLICY_VIOLATION,
        )
        .await;
        return None;
    }
    if !sane_text(&hello.device_id, 100) || !sane_text(&hello.service, MAX_SERVICE_CHARS) {
        fatal(
            socket,
            "invalid_hello",
            format!(
                "`device_id` (1-100 characters) and `service` (1-{MAX_SERVICE_CHARS} characters) must be plain text"
            ),
            POLICY_VIOLATION,
        )
        .await;
        return None;
    }
    let mut nonce = [0u8; 32];
    fill_random(&mut nonce);
    let nonce = STANDARD.encode(nonce);
    if send(
        socket,
        &ControlMessage::Challenge(Challenge {
            nonce: nonce.clone(),
        }),
    )
    .await
    .is_err()
    {
        return None;
    }
    let proof = match handshake_message(socket).await {
        Incoming::Message(ProxyMessage::Auth(p)) => p,
        other => {
            refuse_incoming(socket, other, "auth").await;
            return None;
        }
    };
    let device = match state.store.device_by_id(&hello.device_id).await {
        Ok(Some(d)) => d,
        Ok(None) => {
            fatal(
                socket,
                "unknown_device",
                "no device has this id; enrol the proxy again (flowlink-proxy enroll)",
                POLICY_VIOLATION,
            )
            .await;
            return None;
        }
        Err(e) => {
            tracing::error!(error = %e, "link: cannot read the device");
            fatal(
                socket,
                "unavailable",
                "the control plane cannot read its database; reconnect later",
                SERVER_ERROR,
            )
            .await;
            return None;
        }
    };
    let message = auth_message(&device.id, &nonce, &state.config.public_url);
    if !signature_verifies(&device.signing_key, &message, &proof.signature) {
        tracing::info!(device = %device.id, "link refused: bad signature");
        fatal(
            socket,
            "bad_signature",
            "the signature does not verify with this device's key (a re-keyed device must use its new credential, and the proxy must sign for this control plane's public URL)",
            POLICY_VIOLATION,
        )
        .await;
        return None;
    }
    if device.revoked_at.is_some() {
        tracing::info!(device = %device.id, "link refused: device revoked");
        let _ = send(
            socket,
            &ControlMessage::Revoked(Revoked {
                reason: super::revoked_text(device.revoked_reason.as_deref()),
            }),
        )
        .await;
        close(socket, POLICY_VIOLATION, "revoked").await;
        return None;
    }
    Some((device, hello))
}

fn signature_verifies(key: &[u8; 32], message: &[u8], signature: &str) -> bool {
    let Ok(key) = VerifyingKey::from_bytes(key) else {
        return false;
    };
    let Ok(raw) = STANDARD.decode(signature.as_bytes()) else {
        return false;
    };
    let Ok(bytes) = <[u8; 64]>::try_from(raw.as_slice()) else {
        return false;
    };
    key.verify_strict(message, &Signature::from_bytes(&bytes))
        .is_ok()
}

/// What identifies a bundle's content (selector, key and layers), without its time or
/// signature: equal fingerprints need no push.
fn fingerprint(bundle: &SignedBundle) -> String {
    match serde_json::from_str::<PolicyBundle>(&bundle.payload) {
        Ok(b) => {
            let layers: Vec<(&str, i64, &str)> = b
                .layers
                .iter()
                .map(|l| (l.scope.as_str(), l.version, l.sha256.as_str()))
                .collect();
            serde_json::json!([b.key_id, b.selector, layers]).to_string()
        }
        Err(_) => bundle.payload.clone(),
    }
}

/// A registered link: unregisters from the hub and the sessions, and updates the gauge, when
/// dropped.
struct Registration<'a> {
    state: &'a AppState,
    handle: Option<LinkHandle<'a>>,
    session: u64,
}

impl Drop for Registration<'_> {
    fn drop(&mut self) {
        self.state.links.sessions.remove(self.session);
        self.handle.take();
        update_gauge(self.state);
    }
}

/// One authenticated link's state.
struct Link<'a> {
    state: &'a AppState,
    client: ClientInfo,
    device: Device,
    service: String,
    /// The proxy's version from its hello, when plain text.
    proxy_version: Option<String>,
    pushed: Option<String>,
    /// SHA-256 of the last `SecretsPush` sent.
    secrets_pushed: Option<String>,
    /// The key version this link last challenged the device for.
    challenged: Option<u32>,
}

enum Next {
    Continue,
    Stop,
}

/// Serves one link until it closes.
pub async fn run(state: AppState, mut socket: WebSocket, client: ClientInfo) {
    let Some((device, hello)) = handshake(&state, &mut socket).await else {
        return;
    };
    let (tx, mut rx) = mpsc::channel(LINK_QUEUE);
    let handle = state.links.register(&device.id, &hello.service, tx);
    let (session, refresh) = state.links.sessions.add(&device.id, &device.org_id);
    let _registration = Registration {
        state: &state,
        handle: Some(handle),
        session,
    };
    update_gauge(&state);
    let proxy_version = sane_text(&hello.proxy_version, MAX_PROXY_VERSION_CHARS)
        .then(|| hello.proxy_version.clone());
    tracing::info!(
        device = %device.id,
        service = %hello.service,
        pid = hello.pid,
        proxy_version = proxy_version.as_deref().unwrap_or("(not plain text)"),
        "link up"
    );
    if let Err(e) = state.store.touch_device(&device.id).await {
        tracing::warn!(error = %e, "could not record the device as seen");
    }
    let heartbeat = state.config.link_heartbeat;
    let mut link = Link {
        state: &state,
        client,
        device,
        service: hello.service,
        proxy_version,
        pushed: None,
        secrets_pushed: None,
        challenged: None,
    };
    // Read the device again now that changes reach this link: a revocation or re-key made
    // while it was authenticating is not missed.
    if let Next::Stop = link.recheck(&mut socket).await {
        return;
    }
    let welcome = ControlMessage::Welcome(Welcome {
        org_id: link.device.org_id.clone(),
        device_id: link.device.id.clone(),
        heartbeat_secs: heartbeat.as_secs(),
        max_batch: MAX_BATCH,
    });
    if send(&mut socket, &welcome).await.is_err()
        || link.push_policy(&mut socket).await.is_err()
        || link.push_secrets(&mut socket).await.is_err()
    {
        return;
    }
    let silence = heartbeat * 3;
    let mut deadline = Instant::now() + silence;
    loop {
        tokio::select! {
            // Messages for the proxy first: a `revoked` queued with a refresh goes out as is.
            biased;
            out = rx.recv() => {
                let Some(msg) = out else {
                    close(&mut socket, POLICY_VIOLATION, "disconnected by the control plane").await;
                    break;
                };
                if let ControlMessage::Policy(p) = &msg {
                    let fp = fingerprint(&p.bundle);
                    if link.pushed.as_ref() == Some(&fp) {
                        continue;
                    }
                    link.pushed = Some(fp);
                }
                if send(&mut socket, &msg).await.is_err() {
                    break;
                }
                if matches!(msg, ControlMessage::Revoked(_)) {
                    close(&mut socket, POLICY_VIOLATION, "revoked").await;
                    break;
                }
            }
            () = refresh.notified() => {
                if let Next::Stop = link.reload(&mut socket).await {
                    break;
                }
            }
            incoming = next_message(&mut socket, deadline) => {
                match incoming {
                    Incoming::Message(m) => {
                        deadline = Instant::now() + silence;
                        if let Next::Stop = link.handle(&mut socket, m).await {
                            break;
                        }
                    }
                    Incoming::Control => deadline = Instant::now() + silence,
                    Incoming::Invalid(why) => {
                        deadline = Instant::now() + silence;
                        if send(&mut socket, &error("invalid_message", why, false)).await.is_err() {
                            break;
                        }
                    }
                    Incoming::TooLarge(n) => {
                        deadline = Instant::now() + silence;
                        let e = error(
                            "frame_too_large",
                            format!("a frame of {n} bytes is larger than the {MAX_FRAME_BYTES} bytes accepted; it was dropped (send smaller audit batches)"),
                            false,
                        );
                        if send(&mut socket, &e).await.is_err() {
                            break;
                        }
                    }
                    Incoming::TimedOut => {
                        tracing::info!(device = %link.device.id, "link closed: no heartbeat for three intervals");
                        fatal(
                            &mut socket,
                            "timeout",
                            format!("nothing received for {} s (three heartbeat intervals); reconnect", silence.as_secs()),
                            GOING_AWAY,
                        )
                        .await;
                        break;
                    }
                    Incoming::Closed => break,
                }
            }
        }
    }
    tracing::info!(device = %link.device.id, service = %link.service, "link down");
}

impl Link<'_> {
    /// Builds the bundle for this link and sends it if its content differs from the last sent.
    async fn push_policy(&mut self, socket: &mut WebSocket) -> Result<(), ()> {
        let bundle = crate::api::policies::signed_bundle(
            &self.state.store,
            &self.device.org_id,
            Some(self.service.clone()),
            self.device.labels.clone(),
        )
        .await;
        match bundle {
            Ok(bundle) => {
                let fp = fingerprint(&bundle);
                if self.pushed.as_ref() == Some(&fp) {
                    return Ok(());
                }
                send(socket, &ControlMessage::Policy(PolicyPush { bundle })).await?;
                self.pushed = Some(fp);
                Ok(())
            }
            Err(e) => {
                let why = match e {
                    PolicyApiError::Api(e) => e.message,
                    PolicyApiError::Invalid(e) => e.to_string(),
                };
                tracing::warn!(device = %self.device.id, %why, "cannot build a device's policy bundle");
                send(
                    socket,
                    &error(
                        "policy_unavailable",
                        format!("the control plane cannot build this device's policy bundle ({why}); keep deciding with the bundle you have"),
                        false,
                    ),
                )
                .await
            }
        }
    }

    /// Builds this link's secrets push and sends it if it differs from the last sent; then, if
    /// the device has not proved it holds the newest key version it was given (and this link
    /// has not asked yet), sends a key challenge for it. A database error keeps the link (the
    /// proxy keeps the secrets it has) and is retried at the next change.
    async fn push_secrets(&mut self, socket: &mut WebSocket) -> Result<(), ()> {
        let store = &self.state.store;
        let push = match store.secrets_push(&self.device, &self.service).await {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(error = %e, device = %self.device.id, "cannot build a device's secrets push");
                return Ok(());
            }
        };
        let newest = push.keys.last().map(|k| k.key_version);
        let fp = match serde_json::to_string(&push) {
            Ok(text) => sha256_hex(&text),
            Err(e) => {
                tracing::error!(error = %e, "a secrets push does not serialise");
                return Ok(());
            }
        };
        if self.secrets_pushed.as_ref() != Some(&fp) {
            send(socket, &ControlMessage::Secrets(push)).await?;
            self.secrets_pushed = Some(fp);
        }
        let Some(version) = newest else {
            return Ok(());
        };
        if self.challenged == Some(version) {
            return Ok(());
        }
        let challenge = async {
            if store.wrap_confirmed(&self.device, version).await? {
                return Ok::<_, super::ChallengeError>(None);
            }
            let keys = store.secrets_keys(&self.device.org_id).await?;
            let Some(key) = keys.iter().find(|k| k.version == version) else {
                return Ok(None);
            };
            Ok(Some(
                super::new_challenge(store, key, &self.device.id, None, false).await?,
            ))
        };
        match challenge.await {
            Ok(Some(c)) => {
                send(socket, &ControlMessage::KeyChallenge(c)).await?;
                self.challenged = Some(version);
            }
            Ok(None) => self.challenged = Some(version),
            Err(e) => {
                tracing::warn!(error = %e, device = %self.device.id, "cannot challenge a device for its key");
            }
        }
        Ok(())
    }

    /// The device or its organisation's policy or secrets changed: re-read and act.
    async fn reload(&mut self, socket: &mut WebSocket) -> Next {
        match self.recheck(socket).await {
            Next::Continue => {
                if self.push_policy(socket).await.is_err()
                    || self.push_secrets(socket).await.is_err()
                {
                    Next::Stop
                } else {
                    Next::Continue
                }
            }
            Next::Stop => Next::Stop,
        }
    }

    /// Re-reads the device: a revoked, re-keyed or deleted one ends the link; otherwise its
    /// record (labels) is refreshed. A database error keeps the link and the old record.
    async fn recheck(&mut self, socket: &mut WebSocket) -> Next {
        match self.state.store.device_by_id(&self.device.id).await {
            Ok(Some(d)) if d.revoked_at.is_some() => {
                let _ = send(
                    socket,
                    &ControlMessage::Revoked(Revoked {
                        reason: super::revoked_text(d.revoked_reason.as_deref()),
                    }),
                )
                .await;
                close(socket, POLICY_VIOLATION, "revoked").await;
                Next::Stop
            }
            Ok(Some(d)) if d.key_version != self.device.key_version => {
                fatal(
                    socket,
                    "device_rekeyed",
                    "this device was re-keyed; the key this link was opened with is no longer accepted (use the new credential)",
                    POLICY_VIOLATION,
                )
                .await;
                Next::Stop
            }
            Ok(Some(d)) => {
                self.device = d;
                Next::Continue
            }
            Ok(None) => {
                fatal(
                    socket,
                    "unknown_device",
                    "this device no longer exists; enrol the proxy again",
                    POLICY_VIOLATION,
                )
                .await;
                Next::Stop
            }
            Err(e) => {
                tracing::warn!(error = %e, "link: cannot re-read the device; keeping the link");
                Next::Continue
            }
        }
    }

    /// One message after the handshake.
    async fn handle(&mut self, socket: &mut WebSocket, msg: ProxyMessage) -> Next {
        let reply = match msg {
            ProxyMessage::Heartbeat(h) => {
                self.heartbeat(&h.servers).await;
                None
            }
            ProxyMessage::AuditBatch(batch) => {
                for reply in self.ship_audit(batch).await {
                    if send(socket, &reply).await.is_err() {
                        return Next::Stop;
                    }
                }
                None
            }
            m @ (ProxyMessage::ApprovalRequest(_) | ProxyMessage::ApprovalCancel(_)) => {
                for reply in super::approvals_inbox(self.state, &self.device, m).await {
                    if send(socket, &reply).await.is_err() {
                        return Next::Stop;
                    }
                }
                None
            }
            ProxyMessage::KeyProof(proof) => self.key_proof(proof).await,
            ProxyMessage::SecretsUsed(used) => {
                self.secrets_used(used).await;
                None
            }
            ProxyMessage::Unknown => None,
            ProxyMessage::Hello(_) | ProxyMessage::Auth(_) => Some(error(
                "unexpected_message",
                "this link is already authenticated; `hello` and `auth` come once, at the start",
                false,
            )),
        };
        match reply {
            Some(reply) if send(socket, &reply).await.is_err() => Next::Stop,
            _ => Next::Continue,
        }
    }

    /// A device's answer to a key challenge: recorded; a proof confirms its wrap, and older
    /// key versions retired by it make every link of the organisation re-push.
    async fn key_proof(&self, proof: KeyProof) -> Option<ControlMessage> {
        if !sane_text(&proof.challenge_id, 100)
            || proof.proof.as_ref().is_some_and(|p| p.len() > 200)
        {
            return Some(error(
                "invalid_key_proof",
                "`challenge_id` (1-100 characters) and `proof` (a SHA-256 hex digest) are malformed",
                false,
            ));
        }
        let answer = self
            .state
            .store
            .answer_challenge(
                &self.device,
                &proof.challenge_id,
                proof.key_version,
                proof.proof.as_deref(),
                proof.error.as_deref(),
            )
            .await;
        match answer {
            Ok(Some(a)) if a.repeated => {
                tracing::debug!(device = %self.device.id, "a key challenge was answered again (another link of the device); ignored");
                None
            }
            Ok(Some(a)) => {
                if a.proved {
                    tracing::info!(device = %self.device.id, key_version = proof.key_version, "device proved it holds the org key");
                } else {
                    tracing::warn!(device = %self.device.id, key_version = proof.key_version, "device failed a key challenge");
                }
                if !a.retired.is_empty() {
                    tracing::info!(org = %self.device.org_id, retired = ?a.retired, "org key versions retired");
                    super::secrets_changed(self.state, &self.device.org_id).await;
                }
                None
            }
            Ok(None) => Some(error(
                "unknown_challenge",
                "this device was sent no key challenge with this id; nothing to do",
                false,
            )),
            Err(e) => {
                tracing::warn!(error = %e, device = %self.device.id, "could not record a key proof");
                None
            }
        }
    }

    /// Records when the secrets a proxy reports were last used, and by which device.
    async fn secrets_used(&self, used: SecretsUsed) {
        let mut names: Vec<&str> = used
            .used
            .iter()
            .take(MAX_SECRET_USES)
            .map(|u| u.name.as_str())
            .filter(|n| flowlink_proto::sealed::valid_secret_name(n))
            .collect();
        names.sort_unstable();
        names.dedup();
        if names.is_empty() {
            return;
        }
        if let Err(e) = self
            .state
            .store
            .record_secret_use(&self.device, &names)
            .await
        {
            tracing::warn!(error = %e, device = %self.device.id, "could not record secret use");
        }
    }

    async fn heartbeat(&self, servers: &[ServerHealth]) {
        let servers: Vec<ServerHealth> = servers
            .iter()
            .filter(|s| sane_text(&s.service, MAX_SERVICE_CHARS))
            .take(MAX_SERVERS)
            .map(|s| ServerHealth {
                last_error: s
                    .last_error
                    .as_ref()
                    .map(|e| e.chars().take(MAX_ERROR_CHARS).collect()),
                ..s.clone()
            })
            .collect();
        match self
            .state
            .store
            .record_heartbeat(&self.device, &servers, self.proxy_version.as_deref())
            .await
        {
            Ok(looping) => {
                for service in looping {
                    tracing::warn!(device = %self.device.id, %service, "a wrapped server keeps crashing");
                }
            }
            Err(e) => tracing::warn!(error = %e, "could not record a heartbeat"),
        }
    }

    /// Commits a batch, then acknowledges what is durable; errors for what is not.
    async fn ship_audit(&self, batch: AuditBatch) -> Vec<ControlMessage> {
        if batch.events.len() > MAX_BATCH as usize {
            return vec![error(
                "batch_too_large",
                format!(
                    "{} events in one batch; send at most {MAX_BATCH} (welcome.max_batch)",
                    batch.events.len()
                ),
                false,
            )];
        }
        let (good, bad): (Vec<AuditEnvelope>, Vec<AuditEnvelope>) =
            batch.events.into_iter().partition(valid_envelope);
        let outcome = match self
            .state
            .store
            .ingest_device_audit(&self.device, &good, &self.client.ip.to_string())
            .await
        {
            Ok(o) => o,
            Err(e) => {
                tracing::error!(error = %e, device = %self.device.id, "could not store an audit batch");
                return vec![error(
                    "audit_unavailable",
                    "the control plane could not store this batch; keep it and send it again",
                    false,
                )];
            }
        };
        let mut replies = vec![ControlMessage::AuditAck(AuditAck { ids: outcome.acked })];
        if let Some(first) = bad.first() {
            replies.push(error(
                "invalid_audit_event",
                format!(
                    "{} event(s) were not stored (the first has id {:?}): ids are 1-100 printable ASCII characters and kinds 1-64 characters of a-z, 0-9, `_` and `.`",
                    bad.len(),
                    first.id.chars().take(100).collect::<String>()
                ),
                false,
            ));
        }
        if !outcome.foreign.is_empty() {
            tracing::warn!(device = %self.device.id, n = outcome.foreign.len(), "audit event ids already used by other actors");
            replies.push(error(
                "audit_id_conflict",
                format!(
                    "{} event id(s) are already used by other events and were not stored ({}); give every event a fresh UUIDv7",
                    outcome.foreign.len(),
                    outcome.foreign.iter().take(5).cloned().collect::<Vec<_>>().join(", ")
                ),
                false,
            ));
        }
        replies
    }
}

fn valid_envelope(e: &AuditEnvelope) -> bool {
    (1..=100).contains(&e.id.len())
        && e.id.bytes().all(|b| b.is_ascii_graphic())
        && (1..=64).contains(&e.kind.len())
        && e.kind
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'.')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_follows_missed_heartbeats() {
        let h = Duration::from_secs(30);
        let now = 1_000_000_000_000;
        let ago = |s: i64| Some(now - s * 1_000_000);
        assert_eq!(health_of(None, now, h), DeviceHealth::Offline);
        assert_eq!(health_of(ago(0), now, h), DeviceHealth::Online);
        assert_eq!(health_of(ago(60), now, h), DeviceHealth::Online);
        assert_eq!(health_of(ago(61), now, h), DeviceHealth::Stale);
        assert_eq!(health_of(ago(150), now, h), DeviceHealth::Stale);
        assert_eq!(health_of(ago(151), now, h), DeviceHealth::Offline);
    }

    #[test]
    fn envelopes_are_checked() {
        let e = |id: &str, kind: &str| AuditEnvelope {
            id: id.into(),
            occurred_at: 0,
            kind: kind.into(),
            record: serde_json::json!({}),
        };
        assert!(valid_envelope(&e("0190-ab", "tool_call")));
        assert!(!valid_envelope(&e("", "tool_call")));
        assert!(!valid_envelope(&e("a b", "tool_call")));
        assert!(!valid_envelope(&e("a", "Tool Call")));
        assert!(!valid_envelope(&e(&"x".repeat(101), "session")));
    }

    #[test]
    fn sessions_refresh_by_device_and_org_and_forget_removed_ones() {
        let s = Sessions::default();
        let (a, _) = s.add("d1", "o1");
        let (_b, _) = s.add("d2", "o1");
        assert_eq!(s.refresh_device("d1"), 1);
        assert_eq!(s.refresh_org("o1"), 2);
        assert!(s.serves("d1"));
        s.remove(a);
        assert!(!s.serves("d1"));
        assert_eq!(s.refresh_all(), 1);
        assert!(s.remember_message("m1"));
        assert!(!s.remember_message("m1"));
        assert!(s.claim_start());
        assert!(!s.claim_start());
    }
}
