//! The link task: one WebSocket to the control plane per proxy process, kept up for as long as
//! the process runs.
//!
//! Connect (TLS with [`super::tls`], `ws://` only as enrolment allowed) → `Hello` → `Challenge`
//! → `Auth` → `Welcome`; then, until the socket drops: policy pushes are verified and applied,
//! heartbeats go out every `Welcome.heartbeat_secs`, the outbox is shipped in batches of at most
//! `Welcome.max_batch` events (by the proxy holding `<data-dir>/outbox.lock`) and acknowledged ids
//! are deleted, approval traffic flows both ways. Secrets pushes are cached (sealed) and opened
//! into the [`SecretsHub`]; key challenges are answered with the org key they name; the secrets
//! the relay used go out as `SecretsUsed`. A dropped link is retried with jittered
//! exponential backoff (0.5 s doubling, capped at 30 s). `Revoked` ends the link for good, and
//! the device forgets its cached secrets.
//!
//! Nothing here blocks the relay: database work runs on blocking threads, and the relay only
//! ever reads atomics and channels the link fills.

use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use flowlink_proto::link::{
    AuditAck, AuditBatch, AuthProof, ControlMessage, Heartbeat, Hello, KeyChallenge, KeyProof,
    LINK_VERSION, ProxyMessage, SecretsPush, SecretsUsed, Welcome, auth_message,
};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use nix::fcntl::{Flock, FlockArg};
use tokio::net::TcpStream;
use tokio::sync::mpsc::{self, UnboundedReceiver, UnboundedSender};
use tokio::sync::oneshot;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{Connector, MaybeTlsStream, WebSocketStream};

use super::approvals::{Control, LinkHandle, Shared};
use super::bundle::{self, VerifiedBundle, short};
use super::state::{LinkRow, LinkState};
use super::url::ServerUrl;
use super::{Credential, LinkError};
use crate::audit::{AuditStore, OutboxReader, now_us};
use crate::relay::{PolicyState, ServerStatus};
use crate::secrets::{SecretsHub, SecretsOrigin, open};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;
type Sink = SplitSink<Ws, Message>;
type Stream = SplitStream<Ws>;

/// How long connecting, and each handshake step, may take.
const STEP_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the outbox is looked at for new events.
const SHIP_EVERY: Duration = Duration::from_millis(200);
/// At most this many batches in flight without acknowledgement.
const WINDOW_BATCHES: usize = 4;
/// Without any acknowledgement for this long, un-acknowledged events are sent again.
const RESEND_AFTER: Duration = Duration::from_secs(30);
/// The first retry delay; it doubles up to the cap.
const BACKOFF_BASE: Duration = Duration::from_millis(500);
/// The default cap on the retry delay.
pub const BACKOFF_CAP: Duration = Duration::from_secs(30);
/// The shipping lock's file in the data directory.
pub const OUTBOX_LOCK: &str = "outbox.lock";

/// The bundle in force when the link starts (from the cache).
#[derive(Debug, Clone)]
pub struct CurrentBundle {
    /// Its id.
    pub id: String,
    /// When it was issued, Unix µs.
    pub issued_at_us: i64,
}

/// What the link task needs.
pub struct LinkConfig {
    /// The device credential.
    pub credential: Arc<Credential>,
    /// The service this proxy wraps (`--name`).
    pub service: String,
    /// The data directory (state, outbox lock).
    pub data_dir: PathBuf,
    /// The audit store (outbox depth and acknowledgements).
    pub store: AuditStore,
    /// The wrapped server's health.
    pub server_status: ServerStatus,
    /// The cached bundle the relay starts with.
    pub current: Option<CurrentBundle>,
    /// The longest retry delay (30 s; `FLOWLINK_LINK_BACKOFF_CAP_MS` lowers it for tests).
    pub backoff_cap: Duration,
    /// Where opened secrets go (and key challenges are answered from).
    pub secrets: Arc<SecretsHub>,
}

/// Starts the link task (inside a tokio runtime). Returns its handle and the feed of verified,
/// compiled policies for the relay ([`crate::relay::RelayConfig::policy_feed`]).
pub fn spawn(cfg: LinkConfig) -> (LinkHandle, UnboundedReceiver<Arc<PolicyState>>) {
    let (control_tx, control_rx) = mpsc::unbounded_channel();
    let (policy_tx, policy_rx) = mpsc::unbounded_channel();
    let shared = Arc::new(Shared::new(control_tx));
    let handle = LinkHandle {
        shared: Arc::clone(&shared),
    };
    let link = Link {
        row: LinkRow {
            pid: std::process::id(),
            service: cfg.service.clone(),
            state: "connecting".into(),
            since_us: now_us(),
            last_error: None,
            bundle_id: cfg.current.as_ref().map(|c| c.id.clone()),
            updated_at_us: now_us(),
        },
        current: cfg.current.clone(),
        cfg,
        shared,
        policy_tx,
        control_rx,
        state: None,
        reader: None,
        lease: None,
    };
    tokio::spawn(link.run());
    (handle, policy_rx)
}

/// How a connection ended.
enum End {
    /// Lost (or never made); retry.
    Lost(String),
    /// Revoked: stop for good.
    Revoked(String),
    /// The proxy is exiting.
    Shutdown(oneshot::Sender<()>),
}

struct Link {
    cfg: LinkConfig,
    shared: Arc<Shared>,
    policy_tx: UnboundedSender<Arc<PolicyState>>,
    control_rx: UnboundedReceiver<Control>,
    state: Option<Arc<Mutex<LinkState>>>,
    reader: Option<Arc<Mutex<OutboxReader>>>,
    row: LinkRow,
    current: Option<CurrentBundle>,
    /// Held while this process ships the outbox.
    lease: Option<Flock<File>>,
}

/// Shipping state of one connection.
struct Shipping {
    max_batch: usize,
    after_seq: i64,
    inflight: HashSet<String>,
    last_progress: Instant,
    /// The last read found nothing new.
    idle: bool,
}

impl Link {
    async fn run(mut self) {
        let data_dir = self.cfg.data_dir.clone();
        let opened = tokio::task::spawn_blocking(move || {
            (LinkState::open(&data_dir), OutboxReader::open(&data_dir))
        })
        .await;
        if let Ok((state, reader)) = opened {
            match state {
                Ok(s) => self.state = Some(Arc::new(Mutex::new(s))),
                Err(e) => tracing::error!("{e}; link status and the policy cache are not kept"),
            }
            match reader {
                Ok(r) => self.reader = Some(Arc::new(Mutex::new(r))),
                Err(e) => tracing::error!("{e}; audit events cannot be shipped"),
            }
        }

        let cred = Arc::clone(&self.cfg.credential);
        if let Some((reason, _)) = self
            .with_state(move |s| s.revoked(&cred.device_id))
            .await
            .flatten()
        {
            self.revoked_for_good(&reason, false).await;
            self.wait_for_shutdown().await;
            return;
        }

        let url = match ServerUrl::parse(
            &self.cfg.credential.server_url,
            self.cfg.credential.allow_insecure,
        ) {
            Ok(u) => u,
            Err(e) => {
                self.give_up(&e).await;
                return;
            }
        };
        let connector = if url.is_secure() {
            match super::tls::client_config(self.cfg.credential.ca_file.as_deref(), &[]) {
                Ok(c) => Connector::Rustls(c),
                Err(e) => {
                    self.give_up(&e).await;
                    return;
                }
            }
        } else {
            Connector::Plain
        };

        let mut attempt: u32 = 0;
        loop {
            self.set_state("connecting", None).await;
            let end = self.connection(&url, connector.clone()).await;
            let welcomed = self.shared.connected.swap(false, Ordering::Relaxed);
            self.lease = None;
            self.shared.link_down();
            match end {
                End::Shutdown(done) => {
                    self.exit(done).await;
                    return;
                }
                End::Revoked(reason) => {
                    self.revoked_for_good(&reason, true).await;
                    self.wait_for_shutdown().await;
                    return;
                }
                End::Lost(why) => {
                    self.shared.failed_attempts.fetch_add(1, Ordering::Relaxed);
                    if welcomed {
                        attempt = 0;
                        eprintln!(
                            "flowlink-proxy: lost the link to the control plane ({why}); deciding offline on the cached policy while reconnecting"
                        );
                    }
                    tracing::warn!(error = %why, "control plane link down");
                    self.set_state("offline", Some(why)).await;
                }
            }
            let delay = backoff(attempt, self.cfg.backoff_cap);
            attempt = attempt.saturating_add(1);
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                ctl = self.control_rx.recv() => {
                    match ctl {
                        Some(Control::Shutdown { done, .. }) => {
                            self.exit(done).await;
                        }
                        None => {}
                    }
                    return;
                }
            }
        }
    }

    /// A configuration that can never connect: say so, stay offline.
    async fn give_up(&mut self, e: &LinkError) {
        eprintln!(
            "flowlink-proxy: the link to the control plane cannot start: {e}; deciding offline on the cached policy"
        );
        self.set_state("offline", Some(e.to_string())).await;
        self.wait_for_shutdown().await;
    }

    async fn wait_for_shutdown(&mut self) {
        if let Some(Control::Shutdown { done, .. }) = self.control_rx.recv().await {
            self.exit(done).await;
        }
    }

    async fn exit(&mut self, done: oneshot::Sender<()>) {
        let pid = self.row.pid;
        let _ = self.with_state(move |s| s.remove_link(pid)).await;
        let _ = done.send(());
    }

    async fn revoked_for_good(&mut self, reason: &str, now: bool) {
        self.shared.revoke();
        // A revoked device keeps no secrets: the cache goes, and nothing new is injected.
        self.cfg.secrets.clear();
        let _ = self.with_state(|s| s.forget_secrets()).await;
        if now {
            let (device, why) = (self.cfg.credential.device_id.clone(), reason.to_owned());
            let _ = self.with_state(move |s| s.set_revoked(&device, &why)).await;
        }
        eprintln!(
            "flowlink-proxy: this device was revoked by the control plane ({reason}); the link is stopped for good and tool calls are decided offline on the cached policy. Enrol again with `flowlink-proxy enroll --force` if that was a mistake."
        );
        self.set_state("revoked", Some(format!("revoked: {reason}")))
            .await;
    }

    /// Runs `f` on the state database on a blocking thread.
    async fn with_state<T: Send + 'static>(
        &self,
        f: impl FnOnce(&LinkState) -> Result<T, LinkError> + Send + 'static,
    ) -> Option<T> {
        let state = self.state.clone()?;
        let r = tokio::task::spawn_blocking(move || {
            let s = state.lock().unwrap_or_else(PoisonError::into_inner);
            f(&s)
        })
        .await
        .ok()?;
        match r {
            Ok(v) => Some(v),
            Err(e) => {
                tracing::warn!("{e}");
                None
            }
        }
    }

    async fn set_state(&mut self, state: &str, error: Option<String>) {
        if self.row.state != state {
            self.row.since_us = now_us();
        }
        state.clone_into(&mut self.row.state);
        if error.is_some() || state == "connected" {
            self.row.last_error = error;
        }
        self.write_row().await;
    }

    async fn write_row(&mut self) {
        self.row.updated_at_us = now_us();
        self.row.bundle_id = self.current.as_ref().map(|c| c.id.clone());
        let row = self.row.clone();
        let _ = self.with_state(move |s| s.set_link(&row)).await;
    }

    /// One connection, from connect to its end.
    async fn connection(&mut self, url: &ServerUrl, connector: Connector) -> End {
        let link_url = url.link_url();
        let connect = tokio_tungstenite::connect_async_tls_with_config(
            link_url.as_str(),
            None,
            true,
            Some(connector),
        );
        let ws = match tokio::time::timeout(STEP_TIMEOUT, connect).await {
            Ok(Ok((ws, _))) => ws,
            Ok(Err(e)) => return End::Lost(format!("cannot connect to {link_url}: {e}")),
            Err(_) => return End::Lost(format!("connecting to {link_url} timed out")),
        };
        let (mut sink, mut stream) = ws.split();
        let hello = ProxyMessage::Hello(Hello {
            version: LINK_VERSION,
            device_id: self.cfg.credential.device_id.clone(),
            proxy_version: env!("CARGO_PKG_VERSION").to_owned(),
            service: self.cfg.service.clone(),
            pid: std::process::id(),
        });
        if let Err(e) = send(&mut sink, &hello).await {
            return End::Lost(e);
        }
        let nonce = match self.expect(&mut stream, "challenge").await {
            Ok(ControlMessage::Challenge(c)) => c.nonce,
            Ok(_) => return End::Lost("unexpected message instead of the challenge".into()),
            Err(end) => return end,
        };
        let message = auth_message(&self.cfg.credential.device_id, &nonce, url.base());
        let proof = ProxyMessage::Auth(AuthProof {
            signature: STANDARD.encode(self.cfg.credential.sign(&message)),
        });
        if let Err(e) = send(&mut sink, &proof).await {
            return End::Lost(e);
        }
        let welcome = match self.expect(&mut stream, "welcome").await {
            Ok(ControlMessage::Welcome(w)) => w,
            Ok(_) => return End::Lost("unexpected message instead of the welcome".into()),
            Err(end) => return end,
        };
        self.session(sink, stream, welcome).await
    }

    /// Waits for the handshake message `what`, ignoring types it does not know.
    async fn expect(&mut self, stream: &mut Stream, what: &str) -> Result<ControlMessage, End> {
        let deadline = tokio::time::Instant::now() + STEP_TIMEOUT;
        loop {
            let next = tokio::time::timeout_at(deadline, stream.next()).await;
            let msg = match next {
                Err(_) => {
                    return Err(End::Lost(format!(
                        "the control plane sent no {what} in time"
                    )));
                }
                Ok(None) => {
                    return Err(End::Lost(format!(
                        "the control plane closed the link before the {what}"
                    )));
                }
                Ok(Some(Err(e))) => return Err(End::Lost(e.to_string())),
                Ok(Some(Ok(m))) => m,
            };
            let Some(msg) = decode(&msg) else { continue };
            match msg {
                ControlMessage::Challenge(_) if what == "challenge" => return Ok(msg),
                ControlMessage::Welcome(_) if what == "welcome" => return Ok(msg),
                ControlMessage::Revoked(r) => return Err(End::Revoked(r.reason)),
                ControlMessage::Error(e) => {
                    if is_revocation(&e.code) {
                        return Err(End::Revoked(e.message));
                    }
                    if e.fatal {
                        return Err(End::Lost(format!(
                            "the control plane refused the link: {} ({})",
                            e.message, e.code
                        )));
                    }
                    tracing::warn!(code = %e.code, "control plane: {}", e.message);
                }
                _ => {}
            }
        }
    }

    /// The authenticated part of a connection.
    async fn session(&mut self, mut sink: Sink, mut stream: Stream, welcome: Welcome) -> End {
        self.shared.connected.store(true, Ordering::Relaxed);
        self.lease = take_lease(&self.cfg.data_dir);
        self.set_state("connected", None).await;
        tracing::info!(
            device = %welcome.device_id,
            "linked to the control plane (heartbeat every {} s, batches of {})",
            welcome.heartbeat_secs,
            welcome.max_batch
        );
        let mut ship = Shipping {
            max_batch: usize::try_from(welcome.max_batch).unwrap_or(1000).max(1),
            after_seq: 0,
            inflight: HashSet::new(),
            last_progress: Instant::now(),
            idle: false,
        };
        let mut heartbeat =
            tokio::time::interval(Duration::from_secs(welcome.heartbeat_secs.max(1)));
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut tick = tokio::time::interval(SHIP_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut draining: Option<(tokio::time::Instant, oneshot::Sender<()>)> = None;
        // Anything filed while the link was down goes out now.
        self.shared.wake.notify_one();

        loop {
            if let Some((deadline, _)) = &draining {
                let drained = self.lease.is_none() || (ship.idle && ship.inflight.is_empty());
                if drained || tokio::time::Instant::now() >= *deadline {
                    let _ = sink.send(Message::Close(None)).await;
                    if let Some((_, done)) = draining.take() {
                        return End::Shutdown(done);
                    }
                }
            }
            tokio::select! {
                msg = stream.next() => {
                    let msg = match msg {
                        None => return End::Lost("the control plane closed the link".into()),
                        Some(Err(e)) => return End::Lost(e.to_string()),
                        Some(Ok(Message::Close(frame))) => {
                            let why = frame.map(|f| f.reason.to_string()).filter(|r| !r.is_empty());
                            return End::Lost(why.map_or_else(
                                || "the control plane closed the link".to_owned(),
                                |r| format!("the control plane closed the link: {r}"),
                            ));
                        }
                        Some(Ok(m)) => m,
                    };
                    if let Some(msg) = decode(&msg) {
                        if let ControlMessage::KeyChallenge(c) = msg {
                            let proof = self.answer_challenge(&c);
                            if let Err(e) = send(&mut sink, &ProxyMessage::KeyProof(proof)).await {
                                return End::Lost(e);
                            }
                        } else if let Some(end) = self.on_message(msg, &mut ship).await {
                            return end;
                        }
                    }
                }
                ctl = self.control_rx.recv() => {
                    match ctl {
                        Some(Control::Shutdown { drain, done }) => {
                            draining = Some((tokio::time::Instant::now() + drain, done));
                            ship.idle = false;
                        }
                        None => return End::Lost("the proxy is exiting".into()),
                    }
                }
                () = self.shared.wake.notified() => {
                    let (requests, cancels) = self.shared.take_outgoing();
                    for r in requests {
                        if let Err(e) = send(&mut sink, &ProxyMessage::ApprovalRequest(Box::new(r))).await {
                            return End::Lost(e);
                        }
                    }
                    for c in cancels {
                        if let Err(e) = send(&mut sink, &ProxyMessage::ApprovalCancel(c)).await {
                            return End::Lost(e);
                        }
                    }
                    let used = self.shared.take_used();
                    if !used.is_empty()
                        && let Err(e) = send(&mut sink, &ProxyMessage::SecretsUsed(SecretsUsed { used })).await
                    {
                        return End::Lost(e);
                    }
                }
                _ = heartbeat.tick() => {
                    let beat = ProxyMessage::Heartbeat(Heartbeat {
                        servers: vec![self.cfg.server_status.health(&self.cfg.service)],
                        outbox_depth: self.cfg.store.outbox_depth(),
                        policy: self.current.as_ref().map(|c| c.id.clone()),
                    });
                    if let Err(e) = send(&mut sink, &beat).await {
                        return End::Lost(e);
                    }
                    self.write_row().await;
                }
                _ = tick.tick() => {
                    if let Err(e) = self.ship(&mut sink, &mut ship).await {
                        return End::Lost(e);
                    }
                }
            }
        }
    }

    /// Handles one message of an authenticated link; `Some` ends it.
    async fn on_message(&mut self, msg: ControlMessage, ship: &mut Shipping) -> Option<End> {
        match msg {
            ControlMessage::Policy(push) => self.on_policy(push.bundle).await,
            ControlMessage::AuditAck(AuditAck { ids }) => {
                for id in &ids {
                    ship.inflight.remove(id);
                }
                ship.last_progress = Instant::now();
                self.cfg.store.outbox_ack(ids);
            }
            ControlMessage::ApprovalAccepted(a) => self.shared.accepted(a),
            ControlMessage::ApprovalDecision(d) => self.shared.decided(d),
            ControlMessage::Revoked(r) => return Some(End::Revoked(r.reason)),
            ControlMessage::Error(e) => {
                if is_revocation(&e.code) {
                    return Some(End::Revoked(e.message));
                }
                tracing::warn!(code = %e.code, fatal = e.fatal, "control plane: {}", e.message);
                if e.code == "audit_unavailable" {
                    // The batch was not stored: send what is in flight again soon.
                    ship.last_progress = Instant::now()
                        .checked_sub(RESEND_AFTER - Duration::from_secs(2))
                        .unwrap_or_else(Instant::now);
                }
                if e.fatal {
                    return Some(End::Lost(format!("{} ({})", e.message, e.code)));
                }
            }
            ControlMessage::Challenge(_) | ControlMessage::Welcome(_) => {
                tracing::debug!("ignoring a handshake message on an authenticated link")
            }
            ControlMessage::Secrets(push) => self.on_secrets(push).await,
            ControlMessage::KeyChallenge(_) => {
                tracing::debug!("key challenges are answered in the session loop")
            }
            ControlMessage::Unknown => {}
        }
        None
    }

    /// A push of secrets: cached as received (sealed), then opened into the hub.
    async fn on_secrets(&mut self, push: SecretsPush) {
        let service = self.cfg.service.clone();
        let saved = push.clone();
        let svc = service.clone();
        let _ = self.with_state(move |s| s.save_secrets(&svc, &saved)).await;
        let cred = Arc::clone(&self.cfg.credential);
        let svc = service.clone();
        let opened = tokio::task::spawn_blocking(move || {
            let key = open::box_key(&cred);
            open::open_push(&push, &open::Opener::for_credential(&cred, &key, &svc))
        })
        .await;
        let Ok(opened) = opened else {
            tracing::error!("opening the pushed secrets failed");
            return;
        };
        crate::secrets::report_problems(&service, &opened);
        if let Some(why) = &opened.rotation_required {
            tracing::warn!(
                "the organisation's secrets key must be rotated ({why}); a custodian runs `flowlink-control secrets key rotate`"
            );
        }
        tracing::info!(
            "received {} secret(s) for `{service}`: {} (org key {})",
            opened.len(),
            opened
                .iter()
                .map(|(n, s)| format!("{n} v{}", s.version))
                .collect::<Vec<_>>()
                .join(", "),
            opened
                .newest_key()
                .map_or_else(|| "not granted".to_owned(), |v| format!("v{v}"))
        );
        self.cfg.secrets.set(opened, SecretsOrigin::Push);
    }

    /// The proof for a key-possession challenge, from the org keys this device holds.
    fn answer_challenge(&self, c: &KeyChallenge) -> KeyProof {
        let proof = match self.cfg.secrets.current() {
            Some(opened) => opened.answer(&self.cfg.credential.org_id, c),
            None => KeyProof {
                challenge_id: c.challenge_id.clone(),
                key_version: c.key_version,
                proof: None,
                error: Some(
                    "this device has received no org key from the control plane yet".to_owned(),
                ),
            },
        };
        match &proof.error {
            None => tracing::info!(
                "proved possession of org key v{} (challenge {})",
                c.key_version,
                c.challenge_id
            ),
            Some(e) => eprintln!(
                "flowlink-proxy: could not answer the control plane's key challenge for org key v{}: {e}",
                c.key_version
            ),
        }
        proof
    }

    async fn on_policy(&mut self, signed: flowlink_proto::bundle::SignedBundle) {
        let cred = Arc::clone(&self.cfg.credential);
        let service = self.cfg.service.clone();
        let current = self.current.as_ref().map(|c| c.issued_at_us);
        let checked =
            tokio::task::spawn_blocking(move || bundle::verify(&signed, &cred, &service, current))
                .await;
        let verified = match checked {
            Ok(Ok(v)) => v,
            Ok(Err(refusal)) => {
                eprintln!(
                    "flowlink-proxy: refused a policy bundle from the control plane: {refusal}"
                );
                self.row.last_error = Some(format!("policy bundle refused: {refusal}"));
                self.write_row().await;
                return;
            }
            Err(e) => {
                tracing::error!("checking a policy bundle failed: {e}");
                return;
            }
        };
        if self.current.as_ref().is_some_and(|c| c.id == verified.id) {
            tracing::debug!(bundle = %short(&verified.id), "the bundle in force was pushed again");
            return;
        }
        self.apply(verified).await;
    }

    async fn apply(&mut self, v: VerifiedBundle) {
        let state = Arc::new(v.policy_state(self.shared.connected.clone()));
        if self.policy_tx.send(state).is_err() {
            return;
        }
        eprintln!(
            "flowlink-proxy: applied policy bundle {} from the control plane ({})",
            short(&v.id),
            v.layers()
        );
        self.current = Some(CurrentBundle {
            id: v.id.clone(),
            issued_at_us: v.bundle.issued_at,
        });
        let service = self.cfg.service.clone();
        let _ = self
            .with_state(move |s| {
                s.save_bundle(
                    &service,
                    &v.id,
                    &v.bundle.org_id,
                    v.bundle.issued_at,
                    &v.signed,
                )
            })
            .await;
        self.write_row().await;
    }

    /// Sends the next batch of the outbox when this process ships and the window allows.
    async fn ship(&mut self, sink: &mut Sink, ship: &mut Shipping) -> Result<(), String> {
        let Some(reader) = self.reader.clone() else {
            ship.idle = true;
            return Ok(());
        };
        if self.lease.is_none() {
            self.lease = take_lease(&self.cfg.data_dir);
        }
        let ships = self.lease.is_some();
        if ships && !ship.inflight.is_empty() && ship.last_progress.elapsed() > RESEND_AFTER {
            tracing::warn!(
                events = ship.inflight.len(),
                "no acknowledgement from the control plane for {} s; sending the outbox again",
                RESEND_AFTER.as_secs()
            );
            ship.inflight.clear();
            ship.after_seq = 0;
            ship.last_progress = Instant::now();
        }
        let room = ships && ship.inflight.len() < WINDOW_BATCHES * ship.max_batch;
        let (after, limit) = (ship.after_seq, ship.max_batch);
        let read = tokio::task::spawn_blocking(move || {
            let r = reader.lock().unwrap_or_else(PoisonError::into_inner);
            let batch = if room {
                Some(r.batch(after, limit))
            } else {
                None
            };
            (batch, r.depth())
        })
        .await;
        let Ok((batch, depth)) = read else {
            return Ok(());
        };
        if let Ok(d) = depth {
            self.cfg.store.note_outbox_depth(d);
        }
        let events = match batch {
            None => return Ok(()),
            Some(Ok(events)) => events,
            Some(Err(e)) => {
                tracing::warn!("cannot read the audit outbox: {e}");
                return Ok(());
            }
        };
        ship.idle = events.is_empty();
        let Some(last) = events.last() else {
            return Ok(());
        };
        ship.after_seq = last.seq;
        let mut envelopes = Vec::with_capacity(events.len());
        for e in events {
            ship.inflight.insert(e.envelope.id.clone());
            envelopes.push(e.envelope);
        }
        if ship.inflight.len() == envelopes.len() {
            ship.last_progress = Instant::now();
        }
        send(
            sink,
            &ProxyMessage::AuditBatch(AuditBatch { events: envelopes }),
        )
        .await
    }
}

/// The lock that makes this process the one that ships the outbox of its data directory.
fn take_lease(data_dir: &std::path::Path) -> Option<Flock<File>> {
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(data_dir.join(OUTBOX_LOCK))
        .ok()?;
    Flock::lock(file, FlockArg::LockExclusiveNonblock).ok()
}

async fn send(sink: &mut Sink, msg: &ProxyMessage) -> Result<(), String> {
    let text = serde_json::to_string(msg).map_err(|e| e.to_string())?;
    tokio::time::timeout(STEP_TIMEOUT, sink.send(Message::text(text)))
        .await
        .map_err(|_| "sending to the control plane timed out".to_owned())?
        .map_err(|e| e.to_string())
}

/// A text frame as a control message; other frames and undecodable text are skipped.
fn decode(msg: &Message) -> Option<ControlMessage> {
    let Message::Text(text) = msg else {
        return None;
    };
    match serde_json::from_str::<ControlMessage>(text.as_str()) {
        Ok(m) => Some(m),
        Err(e) => {
            tracing::warn!("ignoring a message from the control plane that does not decode: {e}");
            None
        }
    }
}

/// Error codes that mean the device is revoked.
fn is_revocation(code: &str) -> bool {
    matches!(code, "revoked" | "device_revoked")
}

/// The delay before retry number `attempt` (from 0): 0.5 s doubling up to `cap`, with jitter
/// (a random point in the upper half), so that many proxies do not reconnect in step.
pub fn backoff(attempt: u32, cap: Duration) -> Duration {
    let full = BACKOFF_BASE
        .saturating_mul(1u32 << attempt.min(16))
        .min(cap)
        .max(Duration::from_millis(10));
    let mut r = [0u8; 4];
    let frac = if getrandom::fill(&mut r).is_ok() {
        f64::from(u32::from_le_bytes(r)) / f64::from(u32::MAX)
    } else {
        0.5
    };
    full.mul_f64(0.5 + 0.5 * frac)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_with_jitter_up_to_the_cap() {
        for attempt in 0..20 {
            let d = backoff(attempt, BACKOFF_CAP);
            let full = BACKOFF_BASE
                .saturating_mul(1u32 << attempt.min(16))
                .min(BACKOFF_CAP);
            assert!(d >= full / 2 && d <= full, "attempt {attempt}: {d:?}");
        }
        assert!(backoff(30, BACKOFF_CAP) <= BACKOFF_CAP);
        assert!(backoff(30, Duration::from_millis(200)) <= Duration::from_millis(200));
    }
}
