//! Live approval events for the web UI: `GET /ui/events/approvals?org=<slug or id>`, a
//! server-sent event stream the queue page (`static/approvals.js`) listens to.
//!
//! Where events come from: the approval queue's behaviour (`crate::approvals`) and the decision
//! path (`api::approvals::decide_request`) call [`approval_changed`] wherever they already act on
//! a request — filed, decided, cancelled, timed out — right where they tell the proxy. That
//! hands the event to the streams of this process at once and, on PostgreSQL, sends a `NOTIFY`
//! on this schema's UI channel ([`CHANNEL_SQL`]) naming only the organisation and the request;
//! every other replica re-reads the request from the database (never trusting the payload) and
//! hands it to its own streams, the way `link::notify` carries link changes. Notifications lost
//! while a replica's listener reconnects turn into a `resync` event on its streams.
//!
//! One stream:
//! - is for one organisation, named by `?org=`, in which the signed-in person is a member whose
//!   role may read the queue ([`may_watch`]), under the org's 2FA rule; another organisation's
//!   requests are never put on it (events are routed by organisation id before anything else);
//! - starts with `ready` (the page then refreshes its rows, covering anything between the page
//!   load and the subscription), then `approval` events (JSON: [`ApprovalEvent`]);
//! - carries keep-alive comments every [`KEEP_ALIVE`];
//! - has a bounded buffer of [`BUFFER`] events; a connection that falls further behind gets one
//!   `resync` instead of the events it missed (the page re-reads the queue);
//! - every [`RECHECK`] re-reads the session and the membership, and ends with an `end` event
//!   when the session has expired, gone idle, been revoked, or the person left the org or lost
//!   the permission, and at the session's absolute expiry.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use axum::extract::{Query, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use sqlx::AssertSqlSafe;
use sqlx::postgres::PgListener;
use tokio::sync::{mpsc, oneshot};

use crate::api::{ApiError, AppState, Caller};
use crate::auth::{Permission, Role};
use crate::store::{ApprovalRecord, ApprovalStatus, Backend, Org, Session, now_us};

/// Keep-alive comment interval.
pub const KEEP_ALIVE: Duration = Duration::from_secs(15);
/// How often a stream re-reads its session and membership.
pub const RECHECK: Duration = Duration::from_secs(5);
/// Events buffered per connection before it is told to `resync`.
pub const BUFFER: usize = 64;

/// The SQL expression naming this schema's UI channel (replicas of one deployment share it;
/// other schemas of the same database never hear it).
pub const CHANNEL_SQL: &str = "'flowlink_ui_' || substr(md5(current_schema()), 1, 16)";

/// What happened to a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// A new request is waiting.
    Filed,
    /// People approved or denied it.
    Decided,
    /// The proxy withdrew it.
    Cancelled,
    /// Nobody decided in time.
    TimedOut,
}

impl EventKind {
    /// The kind of change a request in this state went through.
    pub fn of(status: ApprovalStatus) -> EventKind {
        match status {
            ApprovalStatus::Pending => EventKind::Filed,
            ApprovalStatus::Approved | ApprovalStatus::Denied => EventKind::Decided,
            ApprovalStatus::Cancelled => EventKind::Cancelled,
            ApprovalStatus::TimedOut => EventKind::TimedOut,
        }
    }
}

/// One `approval` event's data: what the queue shows of a request (no arguments, no findings).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ApprovalEvent {
    /// Routing only; never sent.
    #[serde(skip)]
    pub org_id: String,
    /// What happened.
    pub kind: EventKind,
    /// The request.
    pub id: String,
    /// Its status now.
    pub status: &'static str,
    /// The person the agent works for.
    pub requester: String,
    /// The device's name.
    pub device: String,
    /// MCP client.
    pub agent: String,
    /// Service.
    pub service: String,
    /// Tool.
    pub tool: String,
    /// Shield risk 0-100.
    pub risk: i64,
    /// Filed at (Unix ms).
    pub created_ms: i64,
    /// Times out at (Unix ms).
    pub expires_ms: i64,
}

impl ApprovalEvent {
    /// The event for `r` as it is now; `device` is the device's display name.
    pub fn of(r: &ApprovalRecord, device: &str) -> ApprovalEvent {
        ApprovalEvent {
            org_id: r.org_id.clone(),
            kind: EventKind::of(r.status),
            id: r.id.clone(),
            status: r.status.as_str(),
            requester: r.requester.clone(),
            device: device.to_string(),
            agent: r.agent.clone(),
            service: r.service.clone(),
            tool: r.tool.clone(),
            risk: r.risk,
            created_ms: r.created_at / 1000,
            expires_ms: r.expires_at / 1000,
        }
    }
}

/// Whether a member with `role` may watch the queue: whoever decides, and whoever may read the
/// organisation (they see the queue without the decision forms).
pub fn may_watch(role: Role) -> bool {
    let p = role.permissions();
    p.contains(Permission::ApprovalDecide) || p.contains(Permission::OrgRead)
}

// ---------------------------------------------------------------------------------------------
// The hub: one per process state (keyed by its replica id, so servers started side by side in
// one test process stay apart, as separate replicas would).

struct Subscriber {
    org_id: String,
    tx: mpsc::Sender<Arc<ApprovalEvent>>,
    lagged: Arc<AtomicBool>,
}

struct Hub {
    next: AtomicU64,
    subscribers: Mutex<HashMap<u64, Subscriber>>,
    listening: tokio::sync::OnceCell<()>,
    /// Set once the server is stopping: every stream ends so the drain does not wait for them.
    stopping: tokio::sync::watch::Sender<bool>,
}

impl Default for Hub {
    fn default() -> Hub {
        Hub {
            next: AtomicU64::new(0),
            subscribers: Mutex::default(),
            listening: tokio::sync::OnceCell::new(),
            stopping: tokio::sync::watch::Sender::new(false),
        }
    }
}

static HUBS: LazyLock<Mutex<HashMap<String, Arc<Hub>>>> = LazyLock::new(Default::default);

fn hub(state: &AppState) -> Arc<Hub> {
    let mut hubs = HUBS.lock().unwrap_or_else(|e| e.into_inner());
    hubs.entry(state.links.sessions.replica().to_string())
        .or_default()
        .clone()
}

impl Hub {
    fn subscribe(self: &Arc<Hub>, org_id: &str) -> Subscription {
        let (tx, rx) = mpsc::channel(BUFFER);
        let lagged = Arc::new(AtomicBool::new(false));
        let key = self.next.fetch_add(1, Ordering::Relaxed);
        self.subscribers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(
                key,
                Subscriber {
                    org_id: org_id.to_string(),
                    tx,
                    lagged: lagged.clone(),
                },
            );
        Subscription {
            hub: self.clone(),
            key,
            rx,
            lagged,
        }
    }

    /// Hands `event` to this process's streams of its organisation; never blocks.
    fn send(&self, event: ApprovalEvent) {
        let event = Arc::new(event);
        let subs = self.subscribers.lock().unwrap_or_else(|e| e.into_inner());
        for s in subs.values().filter(|s| s.org_id == event.org_id) {
            if s.tx.try_send(event.clone()).is_err() {
                s.lagged.store(true, Ordering::Relaxed);
            }
        }
    }

    /// Every stream of this process may have missed events.
    fn resync_all(&self) {
        let subs = self.subscribers.lock().unwrap_or_else(|e| e.into_inner());
        for s in subs.values() {
            s.lagged.store(true, Ordering::Relaxed);
        }
    }

    fn count(&self) -> usize {
        self.subscribers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .len()
    }
}

/// One stream's place in the hub; dropping it (the client went away) unsubscribes.
struct Subscription {
    hub: Arc<Hub>,
    key: u64,
    rx: mpsc::Receiver<Arc<ApprovalEvent>>,
    lagged: Arc<AtomicBool>,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.hub
            .subscribers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.key);
    }
}

/// The server is stopping: every stream of this state ends at once with `end` /
/// `server_stopping` (the page reconnects to another replica or when this one is back), so a
/// graceful shutdown does not wait its whole drain time for streams that never finish. Call it
/// before the server's graceful shutdown starts.
pub fn close_streams(state: &AppState) {
    hub(state).stopping.send_replace(true);
}

/// How many streams this process serves (tests, metrics).
pub fn streams(state: &AppState) -> usize {
    hub(state).count()
}

/// The request `r` was filed, decided, cancelled or timed out (already committed): every stream
/// of its organisation, on this replica and (PostgreSQL) every other, gets an event. Failures
/// are logged, never returned: a missed UI event must not fail the decision it reports.
pub async fn approval_changed(state: &AppState, r: &ApprovalRecord) {
    let device = device_name(state, r).await;
    hub(state).send(ApprovalEvent::of(r, &device));
    if state.store.backend() != Backend::Postgres {
        return;
    }
    let notice = Notice {
        from: state.links.sessions.replica().to_string(),
        org: r.org_id.clone(),
        id: r.id.clone(),
    };
    let payload = match serde_json::to_string(&notice) {
        Ok(p) => p,
        Err(e) => {
            tracing::warn!(error = %e, "approval events: cannot encode a notice");
            return;
        }
    };
    if let Err(e) = sqlx::query(AssertSqlSafe(format!(
        "SELECT pg_notify({CHANNEL_SQL}, $1)"
    )))
    .bind(payload)
    .execute(state.store.pool())
    .await
    {
        tracing::warn!(error = %e, request = %r.id, "approval events: cannot tell other replicas");
    }
}

async fn device_name(state: &AppState, r: &ApprovalRecord) -> String {
    match state.store.device(&r.org_id, &r.device_id).await {
        Ok(Some(d)) => d.name,
        _ => r.device_id.clone(),
    }
}

/// A cross-replica notification: which request of which organisation changed.
#[derive(Debug, Serialize, Deserialize)]
struct Notice {
    from: String,
    org: String,
    id: String,
}

/// Starts this replica's listener for other replicas' events (PostgreSQL; once per state) and
/// waits until it listens, so a stream that has said `ready` misses nothing after it.
async fn ensure_listening(state: &AppState, hub: &Arc<Hub>) {
    if state.store.backend() != Backend::Postgres {
        return;
    }
    hub.listening
        .get_or_init(|| async {
            let (ready_tx, ready_rx) = oneshot::channel();
            tokio::spawn(listen(state.clone(), hub.clone(), ready_tx));
            if tokio::time::timeout(Duration::from_secs(5), ready_rx)
                .await
                .is_err()
            {
                tracing::warn!("approval events: the listener is not ready yet; continuing");
            }
        })
        .await;
}

async fn listen(state: AppState, hub: Arc<Hub>, ready: oneshot::Sender<()>) {
    let closed = state.store.pool().close_event();
    tokio::select! {
        () = closed => {}
        () = listen_loop(&state, &hub, ready) => {}
    }
}

async fn listen_loop(state: &AppState, hub: &Arc<Hub>, ready: oneshot::Sender<()>) {
    let mut ready = Some(ready);
    let mut backoff = Duration::from_millis(100);
    loop {
        let mut listener = match connect(state).await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(error = %e, "approval events: cannot listen; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
                continue;
            }
        };
        backoff = Duration::from_millis(100);
        match ready.take() {
            Some(r) => {
                let _ = r.send(());
            }
            // Reconnected: what was sent meanwhile is lost.
            None => hub.resync_all(),
        }
        loop {
            match listener.try_recv().await {
                Ok(Some(n)) => match serde_json::from_str::<Notice>(n.payload()) {
                    Ok(notice) => handle(state, hub, notice).await,
                    Err(e) => {
                        tracing::warn!(error = %e, "approval events: ignoring a payload that is not a notice")
                    }
                },
                Ok(None) => hub.resync_all(),
                Err(e) => {
                    tracing::warn!(error = %e, "approval events: listener failed; reconnecting");
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

async fn handle(state: &AppState, hub: &Hub, notice: Notice) {
    if notice.from == state.links.sessions.replica() {
        return;
    }
    // The database says what the request is now; the notice only says where to look.
    match state.store.approval(&notice.org, &notice.id).await {
        Ok(Some(r)) => {
            let device = device_name(state, &r).await;
            hub.send(ApprovalEvent::of(&r, &device));
        }
        Ok(None) => {}
        Err(e) => tracing::warn!(error = %e, "approval events: cannot read a request"),
    }
}

// ---------------------------------------------------------------------------------------------
// The stream.

/// `?org=`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamQuery {
    /// The organisation (id or slug).
    pub org: String,
}

/// Why a stream ended (the `end` event's data).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum EndReason {
    SessionEnded,
    NoLongerMember,
    ServerStopping,
}

impl EndReason {
    fn text(self) -> &'static str {
        match self {
            EndReason::SessionEnded => "session_ended",
            EndReason::NoLongerMember => "no_longer_member",
            EndReason::ServerStopping => "server_stopping",
        }
    }
}

/// The organisation `org_ref` when `caller` may watch its queue now.
async fn watchable(state: &AppState, caller: &Caller, org_ref: &str) -> Result<Org, ApiError> {
    let org = state
        .store
        .org_by_ref(org_ref)
        .await?
        .ok_or_else(ApiError::org_not_found)?;
    let role: Role = state
        .store
        .member_role(&org.id, &caller.user.id)
        .await?
        .ok_or_else(ApiError::org_not_found)?
        .parse()
        .map_err(|e| ApiError::internal("a stored role is unknown", e))?;
    if org.require_2fa && !caller.user.totp_enabled {
        return Err(ApiError::forbidden(
            "this organisation requires two-factor sign-in",
        ));
    }
    if !may_watch(role) {
        return Err(ApiError::forbidden(
            "your role may not see this organisation's approval queue",
        ));
    }
    Ok(org)
}

/// Whether the stream may go on: the session is live (not revoked, not expired, not idle) and
/// the person may still watch the organisation.
async fn still_allowed(
    state: &AppState,
    caller: &Caller,
    session: &Session,
    org_id: &str,
) -> Result<(), EndReason> {
    let idle_us = i64::try_from(state.config.session_idle_timeout.as_micros()).unwrap_or(i64::MAX);
    let now = now_us();
    let live = match state.store.list_sessions(&caller.user.id).await {
        Ok(list) => list
            .iter()
            .any(|s| s.id == session.id && s.expires_at > now && s.last_seen_at + idle_us > now),
        // A database hiccup is not a reason to drop people's streams; the next check decides.
        Err(_) => true,
    };
    if !live {
        return Err(EndReason::SessionEnded);
    }
    match state.store.user_by_id(&caller.user.id).await {
        Ok(Some(u)) if u.disabled => return Err(EndReason::SessionEnded),
        Ok(None) => return Err(EndReason::SessionEnded),
        _ => {}
    }
    match watchable(state, caller, org_id).await {
        Ok(_) => Ok(()),
        Err(e) if e.status.is_server_error() => Ok(()),
        Err(_) => Err(EndReason::NoLongerMember),
    }
}

enum Step {
    Ready,
    Live,
    Done,
}

struct StreamState {
    state: AppState,
    caller: Caller,
    session: Session,
    org_id: String,
    sub: Subscription,
    stopping: tokio::sync::watch::Receiver<bool>,
    recheck: tokio::time::Interval,
    step: Step,
}

/// `GET /ui/events/approvals?org=`: the live queue of one organisation (see the module docs).
pub async fn stream(
    State(state): State<AppState>,
    caller: Caller,
    query: Result<Query<StreamQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Ok(Query(q)) = query else {
        return ApiError::bad_request("name the organisation: ?org=<slug>").into_response();
    };
    let Some(session) = caller.session().cloned() else {
        return ApiError::unauthenticated("the live queue is for people signed in in a browser")
            .into_response();
    };
    let org = match watchable(&state, &caller, &q.org).await {
        Ok(o) => o,
        Err(e) => return e.into_response(),
    };
    let hub = hub(&state);
    ensure_listening(&state, &hub).await;
    let sub = hub.subscribe(&org.id);
    let stopping = hub.stopping.subscribe();
    let mut recheck = tokio::time::interval_at(tokio::time::Instant::now() + RECHECK, RECHECK);
    recheck.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let s = StreamState {
        state,
        caller,
        session,
        org_id: org.id,
        sub,
        stopping,
        recheck,
        step: Step::Ready,
    };
    let events = futures_util::stream::unfold(s, |mut s| async move {
        let event = next_event(&mut s).await?;
        Some((Ok::<Event, Infallible>(event), s))
    });
    let mut response = Sse::new(events)
        .keep_alive(KeepAlive::new().interval(KEEP_ALIVE).text("keep-alive"))
        .into_response();
    // Proxies such as nginx buffer responses unless told not to.
    response.headers_mut().insert(
        "x-accel-buffering",
        axum::http::HeaderValue::from_static("no"),
    );
    response
}

async fn next_event(s: &mut StreamState) -> Option<Event> {
    match s.step {
        Step::Done => return None,
        Step::Ready => {
            s.step = Step::Live;
            return Some(Event::default().event("ready").data("{}"));
        }
        Step::Live => {}
    }
    let expires_in =
        Duration::from_micros(u64::try_from(s.session.expires_at - now_us()).unwrap_or(0));
    loop {
        if *s.stopping.borrow() {
            s.step = Step::Done;
            return Some(
                Event::default()
                    .event("end")
                    .data(EndReason::ServerStopping.text()),
            );
        }
        if s.sub.lagged.swap(false, Ordering::Relaxed) {
            // Whatever is still buffered is older than what the page will re-read.
            while s.sub.rx.try_recv().is_ok() {}
            return Some(Event::default().event("resync").data("{}"));
        }
        tokio::select! {
            ev = s.sub.rx.recv() => {
                let ev = ev?;
                let data = serde_json::to_string(&*ev).ok()?;
                return Some(Event::default().event("approval").data(data));
            }
            _ = s.recheck.tick() => {
                if let Err(why) = still_allowed(&s.state, &s.caller, &s.session, &s.org_id).await {
                    s.step = Step::Done;
                    return Some(Event::default().event("end").data(why.text()));
                }
            }
            _ = s.stopping.changed() => {}
            () = tokio::time::sleep(expires_in) => {
                s.step = Step::Done;
                return Some(Event::default().event("end").data(EndReason::SessionEnded.text()));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_follow_the_status() {
        assert_eq!(EventKind::of(ApprovalStatus::Pending), EventKind::Filed);
        assert_eq!(EventKind::of(ApprovalStatus::Approved), EventKind::Decided);
        assert_eq!(EventKind::of(ApprovalStatus::Denied), EventKind::Decided);
        assert_eq!(
            EventKind::of(ApprovalStatus::Cancelled),
            EventKind::Cancelled
        );
        assert_eq!(EventKind::of(ApprovalStatus::TimedOut), EventKind::TimedOut);
    }

    fn event(org: &str, id: &str) -> ApprovalEvent {
        ApprovalEvent {
            org_id: org.into(),
            kind: EventKind::Filed,
            id: id.into(),
            status: "pending",
            requester: "dev".into(),
            device: "laptop".into(),
            agent: "claude-code".into(),
            service: "db".into(),
            tool: "query".into(),
            risk: 10,
            created_ms: 1,
            expires_ms: 2,
        }
    }

    #[test]
    fn events_go_to_their_org_and_a_full_buffer_means_resync() {
        let hub = Arc::new(Hub::default());
        let mut a = hub.subscribe("org-a");
        let mut b = hub.subscribe("org-b");
        hub.send(event("org-a", "r1"));
        assert_eq!(a.rx.try_recv().expect("a gets it").id, "r1");
        assert!(b.rx.try_recv().is_err(), "b never sees org-a's request");
        for i in 0..=BUFFER {
            hub.send(event("org-b", &format!("r{i}")));
        }
        assert!(b.lagged.load(Ordering::Relaxed), "one more than the buffer");
        assert!(!a.lagged.load(Ordering::Relaxed));
        let mut held = 0;
        while b.rx.try_recv().is_ok() {
            held += 1;
        }
        assert_eq!(held, BUFFER, "the buffer is bounded");
        assert_eq!(hub.count(), 2);
        drop(a);
        assert_eq!(hub.count(), 1, "a dropped stream unsubscribes");
    }

    #[test]
    fn every_role_may_watch_but_only_some_decide() {
        for role in Role::ALL {
            assert!(may_watch(role), "{role}");
        }
        assert!(
            !Role::Viewer
                .permissions()
                .contains(Permission::ApprovalDecide)
        );
    }
}
