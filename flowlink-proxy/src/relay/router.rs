//! The router: the one task that owns a relay session's state.
//!
//! Ids: every request the client sends is renumbered into the proxy's own upstream id space
//! (1, 2, 3, …) before it reaches the server, and every request the server sends is renumbered
//! into the proxy's downstream id space before it reaches the client. Responses are mapped back
//! to the id the peer used, byte for byte. Requests the proxy originates (the replayed
//! `initialize` after a restart, confirmations it asks the editor for) take numbers from the same
//! spaces, so they can never collide with a peer's ids. `notifications/cancelled` is translated
//! with the same tables; a cancellation that names no known request is dropped rather than risk
//! cancelling the wrong one.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::process::ExitStatus;
use std::sync::Arc;
use std::time::{Duration, Instant};

use flowlink_proto::audit::{Outcome, SCHEMA_VERSION, SessionRecord, ToolCallRecord, Verdict};
use flowlink_proto::jsonrpc::{self, Frame, FrameError, Id, Kind, Message};
use flowlink_proto::mcp::{self, ClientHello, ServerHello};
use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};
use tokio::sync::oneshot;

use super::RelayConfig;
use super::approval::{self, CallForApproval, GrantKey, Grants};
use super::child::{self, ServerProcess, SpawnEnv, SpawnError};
use super::decide::shorten;
use super::decide::{self, CallFacts, Plan, PolicyState};
use super::framing::{Line, LineReader, sniff_id};
use crate::audit::{AuditStore, now_us};
use crate::link::ApprovalEvent;
use crate::secrets::SecretsRuntime;
use crate::secrets::runtime::{RedactorCell, report_redaction};
use flowlink_policy::shield::guardrails;

/// Why a relay session could not run.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    /// The MCP server could not be started.
    #[error(transparent)]
    Spawn(#[from] SpawnError),
}

type GateFuture = Pin<Box<dyn Future<Output = Option<Vec<u8>>> + Send>>;

/// Bytes for the server: ready now, or once an audit commit has happened.
enum Outgoing {
    Bytes(Vec<u8>),
    Gated(GateFuture),
}

/// What the router reacts to.
pub(super) enum Event {
    Client(std::io::Result<Option<Line>>),
    Server {
        generation: u64,
        line: std::io::Result<Option<Line>>,
    },
    ServerExited {
        generation: u64,
        status: Option<ExitStatus>,
    },
    ClientWriteFailed,
    AuditFailed {
        upstream_id: u64,
        error: String,
    },
    ConfirmTimeout {
        downstream_id: u64,
    },
    /// News about a call held for approvers.
    Approval {
        call_ref: String,
        event: ApprovalEvent,
    },
    /// A held call without a progress token has been held long enough: tell the agent.
    ApprovalHoldOver {
        call_ref: String,
    },
    /// Time for a progress notification on a held call.
    ApprovalTick {
        call_ref: String,
    },
    /// The request's own timeout (plus slack) passed without any decision reaching us.
    ApprovalDeadline {
        call_ref: String,
    },
    RestartDue,
    PolicyReloaded(Arc<PolicyState>),
    Signal(&'static str),
}

/// A tool call being tracked from decision to outcome.
struct CallTrack {
    audit_id: String,
    received: Instant,
}

enum UpstreamOrigin {
    Client {
        client_id: Id,
        method: String,
        call: Option<CallTrack>,
    },
    ReplayedInitialize,
}

enum DownstreamOrigin {
    Server { server_id: Id, generation: u64 },
    Confirmation,
}

/// A tool call waiting for the developer's answer.
struct HeldCall {
    message: Message,
    client_id: Id,
    track: CallTrack,
    recorded: oneshot::Receiver<bool>,
}

/// A tool call waiting for the control plane's approvers.
struct HeldApproval {
    message: Message,
    client_id: Id,
    track: CallTrack,
    recorded: Option<oneshot::Receiver<bool>>,
    agent: String,
    tool: String,
    digest: String,
    policy: Option<String>,
    progress: Option<Value>,
    ticks: u64,
    request_id: Option<String>,
    url: Option<String>,
    asked: String,
    timeout: Duration,
    /// The agent was already told the call awaits approval (the hold ended).
    answered: bool,
    timers: Vec<tokio::task::AbortHandle>,
}

impl HeldApproval {
    fn grant_key(&self) -> GrantKey<'_> {
        GrantKey {
            agent: &self.agent,
            tool: &self.tool,
            digest: &self.digest,
            policy: self.policy.as_deref(),
        }
    }
}

impl Drop for HeldApproval {
    fn drop(&mut self) {
        for t in &self.timers {
            t.abort();
        }
    }
}

/// What `tools_call` prepares for a call that asks approvers.
struct PendingApproval {
    request: flowlink_proto::link::ApprovalRequest,
    policy: Option<String>,
    asked: String,
    timeout: Duration,
    agent: String,
    tool: String,
    digest: String,
}

struct ServerLink {
    generation: u64,
    tx: UnboundedSender<Outgoing>,
    stop: Option<oneshot::Sender<()>>,
    /// False between a restart and the answer to the replayed `initialize`.
    ready: bool,
}

struct Router {
    cfg: RelayConfig,
    events: UnboundedSender<Event>,
    client_tx: UnboundedSender<Vec<u8>>,
    policy: Arc<PolicyState>,
    store: AuditStore,
    session: SessionRecord,
    client_hello: Option<ClientHello>,
    initialize_request: Option<Message>,
    initialized_sent: bool,
    protocol_version: Option<String>,
    established: bool,

    next_upstream: u64,
    upstream: HashMap<u64, UpstreamOrigin>,
    upstream_by_client_id: HashMap<Id, u64>,
    next_downstream: u64,
    downstream: HashMap<u64, DownstreamOrigin>,
    downstream_by_server_id: HashMap<Id, u64>,
    held: HashMap<u64, HeldCall>,
    /// Calls held for approvers, by call_ref.
    approvals: HashMap<String, HeldApproval>,
    /// Approvals that outlived their call: the identical call may pass.
    grants: Grants,

    server: Option<ServerLink>,
    backlog: Vec<Outgoing>,
    generation: u64,
    restarts: VecDeque<Instant>,
    shutting_down: bool,
    client_gone: bool,
    last_status: Option<ExitStatus>,
    client_writer: Option<tokio::task::JoinHandle<()>>,
    /// Tools whose definition changed since pinned, or whose description tries to steer the
    /// model: hidden from `tools/list`, calls refused with the reason.
    quarantined: HashMap<String, String>,
    /// Injection, placeholders and redaction.
    secrets: SecretsRuntime,
    /// Passes the current server process's stderr on.
    stderr_task: Option<tokio::task::JoinHandle<()>>,
}

/// Where one frame's output goes; batches are re-assembled from it.
#[derive(Default)]
struct FrameOut {
    to_server: Vec<Message>,
    to_client: Vec<Message>,
}

/// Runs one relay session until the client goes away (or a signal arrives) and the server has
/// been stopped. Returns the exit code the proxy should exit with: the server's.
pub async fn run<R, W>(mut cfg: RelayConfig, client_in: R, client_out: W) -> Result<i32, RelayError>
where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let (events_tx, events_rx) = unbounded_channel();
    let (client_tx, client_rx) = unbounded_channel::<Vec<u8>>();
    let client_writer = spawn_client_writer(client_out, client_rx, events_tx.clone());

    let policy = Arc::new(PolicyState::new(
        cfg.initial_policy.clone(),
        cfg.policy_file.as_ref().map_or_else(
            || "built-in default".to_owned(),
            |p| p.display().to_string(),
        ),
        cfg.policy_source.clone(),
    ));
    if let Some(path) = &cfg.policy_file {
        super::policy_watch::spawn(path.clone(), cfg.policy_poll_interval, events_tx.clone());
    }
    if let Some(feed) = cfg.policy_feed.take() {
        super::policy_watch::spawn_feed(feed, events_tx.clone());
    }
    spawn_signal_listener(events_tx.clone());

    let session = SessionRecord {
        schema: SCHEMA_VERSION,
        id: uuid::Uuid::now_v7().to_string(),
        service: cfg.service.clone(),
        command: cfg.command.clone(),
        started_at_us: now_us(),
        ended_at_us: None,
        client_name: None,
        client_version: None,
        server_name: None,
        server_version: None,
        protocol_version: None,
        client_capabilities: Value::Null,
        server_capabilities: Value::Null,
        restarts: 0,
        last_exit: None,
    };
    let store = cfg.store.clone();
    store.record_session(session.clone());

    let mut router = Router {
        store,
        events: events_tx.clone(),
        client_tx,
        policy,
        session,
        client_hello: None,
        initialize_request: None,
        initialized_sent: false,
        protocol_version: None,
        established: false,
        next_upstream: 1,
        upstream: HashMap::new(),
        upstream_by_client_id: HashMap::new(),
        next_downstream: 1,
        downstream: HashMap::new(),
        downstream_by_server_id: HashMap::new(),
        held: HashMap::new(),
        approvals: HashMap::new(),
        grants: Grants::default(),
        server: None,
        backlog: Vec::new(),
        generation: 0,
        restarts: VecDeque::new(),
        shutting_down: false,
        client_gone: false,
        last_status: None,
        client_writer: Some(client_writer),
        quarantined: HashMap::new(),
        secrets: SecretsRuntime::new(cfg.secrets.clone(), &cfg.service, cfg.secrets_wait),
        stderr_task: None,
        cfg,
    };
    if let Err(e) = router.start_server().await {
        router.secrets.cleanup();
        return Err(e.into());
    }
    spawn_client_reader(client_in, router.cfg.max_message_bytes, events_tx);
    Ok(router.event_loop(events_rx).await)
}

fn spawn_client_reader<R>(client_in: R, limit: usize, events: UnboundedSender<Event>)
where
    R: AsyncRead + Unpin + Send + 'static,
{
    tokio::spawn(async move {
        let mut reader = LineReader::new(BufReader::with_capacity(64 * 1024, client_in), limit);
        loop {
            let line = reader.next_line().await;
            let done = !matches!(line, Ok(Some(_)));
            if events.send(Event::Client(line)).is_err() || done {
                return;
            }
        }
    });
}

fn spawn_client_writer<W>(
    mut out: W,
    mut rx: UnboundedReceiver<Vec<u8>>,
    events: UnboundedSender<Event>,
) -> tokio::task::JoinHandle<()>
where
    W: AsyncWrite + Unpin + Send + 'static,
{
    tokio::spawn(async move {
        while let Some(first) = rx.recv().await {
            let mut ok = out.write_all(&first).await.is_ok();
            // Drain whatever else is queued before one flush.
            while ok {
                match rx.try_recv() {
                    Ok(more) => ok = out.write_all(&more).await.is_ok(),
                    Err(_) => break,
                }
            }
            if !ok || out.flush().await.is_err() {
                let _ = events.send(Event::ClientWriteFailed);
                return;
            }
        }
        let _ = out.flush().await;
    })
}

/// The longest stderr line passed on in one piece; longer ones are passed on in pieces.
const MAX_STDERR_LINE: u64 = 1024 * 1024;

/// Passes the server's stderr on to the proxy's, line by line, with every value the session
/// holds redacted. When the proxy's stderr is gone the lines are still read (and dropped), so
/// the server never blocks on a full pipe.
fn spawn_stderr_relay(
    stderr: tokio::process::ChildStderr,
    cell: RedactorCell,
    service: String,
) -> tokio::task::JoinHandle<()> {
    use tokio::io::{AsyncBufReadExt, AsyncReadExt};
    tokio::spawn(async move {
        let mut reader = BufReader::with_capacity(64 * 1024, stderr);
        let mut out = tokio::io::stderr();
        let mut line = Vec::new();
        let mut open = true;
        loop {
            line.clear();
            match (&mut reader)
                .take(MAX_STDERR_LINE)
                .read_until(b'\n', &mut line)
                .await
            {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
            if !open {
                continue;
            }
            let redactor = cell.get();
            let written = if redactor.is_empty() {
                out.write_all(&line).await
            } else {
                let text = String::from_utf8_lossy(&line);
                let (clean, found) = redactor.redact_text(&text);
                if found.is_empty() {
                    out.write_all(&line).await
                } else {
                    let w = out.write_all(clean.as_bytes()).await;
                    let _ = out.flush().await;
                    report_redaction(&format!("the stderr of MCP server `{service}`"), &found);
                    w
                }
            };
            if written.is_err() || out.flush().await.is_err() {
                open = false;
            }
        }
    })
}

fn spawn_signal_listener(events: UnboundedSender<Event>) {
    #[cfg(unix)]
    tokio::spawn(async move {
        use tokio::signal::unix::{SignalKind, signal};
        let (Ok(mut term), Ok(mut int)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) else {
            tracing::warn!(
                "cannot listen for SIGTERM/SIGINT; the proxy stops only at end of input"
            );
            return;
        };
        let name = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        };
        let _ = events.send(Event::Signal(name));
    });
}

impl Router {
    async fn event_loop(mut self, mut events: UnboundedReceiver<Event>) -> i32 {
        while let Some(ev) = events.recv().await {
            match ev {
                Event::Client(Ok(Some(line))) => self.on_client_line(line),
                Event::Client(Ok(None)) => self.begin_shutdown("the client closed its input"),
                Event::Client(Err(e)) => {
                    tracing::warn!(error = %e, "reading from the client failed");
                    self.begin_shutdown("the client's input failed");
                }
                Event::ClientWriteFailed => {
                    self.client_gone = true;
                    self.begin_shutdown("the client stopped reading");
                }
                Event::Server { generation, line } => {
                    if self.server.as_ref().map(|s| s.generation) == Some(generation) {
                        // End of output or a read error: the exit event follows.
                        if let Ok(Some(l)) = line {
                            self.on_server_line(l);
                        }
                    }
                }
                Event::ServerExited { generation, status } => {
                    if self.server.as_ref().map(|s| s.generation) != Some(generation) {
                        continue;
                    }
                    self.last_status = status;
                    if self.shutting_down {
                        break;
                    }
                    if let Some(code) = self.on_server_crash(status) {
                        return self.finish(code).await;
                    }
                }
                Event::AuditFailed { upstream_id, error } => {
                    self.on_audit_failed(upstream_id, &error)
                }
                Event::ConfirmTimeout { downstream_id } => self.on_confirm_timeout(downstream_id),
                Event::Approval { call_ref, event } => self.on_approval_event(&call_ref, event),
                Event::ApprovalHoldOver { call_ref } => self.on_approval_hold_over(&call_ref),
                Event::ApprovalTick { call_ref } => self.on_approval_tick(&call_ref),
                Event::ApprovalDeadline { call_ref } => self.on_approval_deadline(&call_ref),
                Event::RestartDue => {
                    if !self.shutting_down
                        && let Some(code) = self.restart_server().await
                    {
                        return self.finish(code).await;
                    }
                }
                Event::PolicyReloaded(p) => {
                    tracing::info!(
                        "policy {} reloaded ({} rules)",
                        p.origin,
                        p.policy.rule_count()
                    );
                    self.policy = p;
                }
                Event::Signal(name) => self.begin_shutdown(name),
            }
        }
        let code = self.last_status.as_ref().map(child::exit_code).unwrap_or(0);
        self.finish(code).await
    }

    // ---- server process -------------------------------------------------------------------

    async fn start_server(&mut self) -> Result<(), SpawnError> {
        let prepared = self.secrets.prepare(self.policy.policy.secrets()).await;
        let env = SpawnEnv {
            set: prepared.env,
            remove: prepared.remove,
        };
        let (process, pipes) = ServerProcess::spawn(&self.cfg.command, &env)?;
        drop(env);
        if let Some(link) = &self.cfg.link {
            link.report_secrets_used(prepared.used);
        }
        self.stderr_task = Some(spawn_stderr_relay(
            pipes.stderr,
            self.secrets.cell(),
            self.cfg.service.clone(),
        ));
        self.generation += 1;
        let generation = self.generation;
        tracing::debug!(pid = ?process.id(), generation, "MCP server started");
        self.cfg.server_status.up();

        // Writer: stdin closes when the queue's sender is dropped.
        let (tx, mut rx) = unbounded_channel::<Outgoing>();
        let mut stdin = pipes.stdin;
        tokio::spawn(async move {
            while let Some(first) = rx.recv().await {
                let mut item = Some(first);
                let mut ok = true;
                while let Some(out) = item.take() {
                    match out {
                        Outgoing::Bytes(b) => ok = stdin.write_all(&b).await.is_ok(),
                        // A tool call: it may carry replaced placeholders, so the copy is
                        // overwritten once written.
                        Outgoing::Gated(f) => {
                            if let Some(b) = f.await {
                                let b = zeroize::Zeroizing::new(b);
                                ok = stdin.write_all(&b).await.is_ok();
                            }
                        }
                    }
                    if ok {
                        item = rx.try_recv().ok();
                    }
                }
                if !ok || stdin.flush().await.is_err() {
                    // The server is gone; its exit is reported by the supervisor.
                    return;
                }
            }
        });

        // Reader.
        let events = self.events.clone();
        let limit = self.cfg.max_message_bytes;
        let stdout = pipes.stdout;
        tokio::spawn(async move {
            let mut reader = LineReader::new(BufReader::with_capacity(64 * 1024, stdout), limit);
            loop {
                let line = reader.next_line().await;
                let done = !matches!(line, Ok(Some(_)));
                if events.send(Event::Server { generation, line }).is_err() || done {
                    return;
                }
            }
        });

        // Supervisor.
        let (stop_tx, mut stop_rx) = oneshot::channel::<()>();
        let events = self.events.clone();
        let grace = self.cfg.shutdown_grace;
        let mut process = process;
        tokio::spawn(async move {
            let exited = tokio::select! {
                st = process.wait() => Some(st.ok()),
                _ = &mut stop_rx => None,
            };
            let status = match exited {
                Some(status) => {
                    process.sweep_group(grace).await;
                    status
                }
                None => process.stop(grace).await,
            };
            let _ = events.send(Event::ServerExited { generation, status });
        });

        self.server = Some(ServerLink {
            generation,
            tx,
            stop: Some(stop_tx),
            ready: true,
        });
        Ok(())
    }

    fn send_server(&mut self, out: Outgoing) {
        match &self.server {
            Some(link) if link.ready => {
                let _ = link.tx.send(out);
            }
            _ => self.backlog.push(out),
        }
    }

    fn send_client(&self, msg: &Message) {
        let _ = self.client_tx.send(msg.to_line());
    }

    /// Handles an unexpected exit. Returns the code to exit with when the proxy should give up.
    fn on_server_crash(&mut self, status: Option<ExitStatus>) -> Option<i32> {
        let described = status
            .as_ref()
            .map_or_else(|| "unknown exit".to_owned(), child::describe);
        let code = status.as_ref().map(child::exit_code).unwrap_or(1);
        self.session.last_exit = Some(described.clone());
        self.server = None;

        // Every request in flight to that process gets an answer that says what happened.
        let pending: Vec<(u64, UpstreamOrigin)> = self.upstream.drain().collect();
        self.upstream_by_client_id.clear();
        let now = Instant::now();
        for (_, origin) in pending {
            if let UpstreamOrigin::Client {
                client_id,
                call,
                method,
                ..
            } = origin
            {
                let msg = format!(
                    "MCP server `{}` exited ({described}) while handling `{method}`; FlowLink is restarting it. Retry the request.",
                    self.cfg.service
                );
                self.send_client(&Message::error(
                    client_id,
                    jsonrpc::SERVER_EXITED,
                    &msg,
                    Some(json!({"service": self.cfg.service, "exit": described})),
                ));
                if let Some(t) = call {
                    self.finish_call(&t, Outcome::ServerExited, Some(msg), now);
                }
            }
        }
        self.downstream
            .retain(|_, o| !matches!(o, DownstreamOrigin::Server { .. }));
        self.downstream_by_server_id.clear();

        if !self.established {
            eprintln!(
                "flowlink-proxy: MCP server `{}` exited ({described}) before the session began; not restarting",
                self.cfg.service
            );
            self.cfg.server_status.crashed(&described);
            return Some(code);
        }
        let minute_ago = now.checked_sub(Duration::from_secs(60)).unwrap_or(now);
        while self.restarts.front().is_some_and(|t| *t < minute_ago) {
            self.restarts.pop_front();
        }
        if self.restarts.len() >= self.cfg.max_restarts_per_minute as usize {
            eprintln!(
                "flowlink-proxy: MCP server `{}` exited ({described}); it was restarted {} times in the last minute, giving up",
                self.cfg.service,
                self.restarts.len()
            );
            self.store.record_session(self.session.clone());
            self.cfg.server_status.crashed(&described);
            return Some(code);
        }
        self.cfg.server_status.restarting(&described);
        let backoff = Duration::from_millis(200u64 << self.restarts.len().min(5));
        eprintln!(
            "flowlink-proxy: MCP server `{}` exited ({described}); restarting in {} ms",
            self.cfg.service,
            backoff.as_millis()
        );
        self.restarts.push_back(now);
        let events = self.events.clone();
        tokio::spawn(async move {
            tokio::time::sleep(backoff).await;
            let _ = events.send(Event::RestartDue);
        });
        None
    }

    /// Starts the next server process. Returns the code to exit with when that is not possible
    /// and the restart limit is reached.
    async fn restart_server(&mut self) -> Option<i32> {
        if let Err(e) = self.start_server().await {
            eprintln!("flowlink-proxy: {e}");
            // Counts as another crash: the restart limit ends the loop.
            return self.on_server_crash(None);
        }
        self.session.restarts += 1;
        self.store.record_session(self.session.clone());
        if let Some(init) = self.initialize_request.clone() {
            // Replay the client's handshake so its session survives; hold other traffic until
            // the server has answered.
            let id = self.take_upstream_id();
            let mut replay = init;
            replay.set_id(Id::number(id));
            self.upstream.insert(id, UpstreamOrigin::ReplayedInitialize);
            if let Some(link) = &mut self.server {
                link.ready = false;
                let _ = link.tx.send(Outgoing::Bytes(replay.to_line()));
            }
        } else {
            self.flush_backlog();
        }
        None
    }

    fn flush_backlog(&mut self) {
        if let Some(link) = &mut self.server {
            link.ready = true;
            for out in self.backlog.drain(..) {
                let _ = link.tx.send(out);
            }
        }
    }

    /// Stops taking client input, denies calls waiting for the developer, closes the server's
    /// stdin and asks its supervisor to stop it. Answers the server still writes before it exits
    /// are forwarded; what is left unanswered then is recorded in [`Router::finish`].
    fn begin_shutdown(&mut self, why: &str) {
        if self.shutting_down {
            return;
        }
        tracing::debug!("shutting down: {why}");
        self.shutting_down = true;
        let held: Vec<HeldCall> = self.held.drain().map(|(_, h)| h).collect();
        for h in held {
            self.store.update_verdict(
                &h.track.audit_id,
                Verdict::Denied,
                "the client went away before the user answered",
            );
            self.finish_call(&h.track, Outcome::ClientGone, None, Instant::now());
        }
        match self.server.as_mut() {
            Some(link) => {
                // Replacing the sender closes the server's stdin once queued bytes are written.
                link.tx = unbounded_channel().0;
                if let Some(stop) = link.stop.take() {
                    let _ = stop.send(());
                }
            }
            None => {
                // Between a crash and its restart: there is no process to stop.
                let _ = self.events.send(Event::ServerExited {
                    generation: self.generation,
                    status: self.last_status,
                });
                self.server = Some(ServerLink {
                    generation: self.generation,
                    tx: unbounded_channel().0,
                    stop: None,
                    ready: false,
                });
            }
        }
    }

    async fn finish(mut self, code: i32) -> i32 {
        // The server's last words (a traceback, say) are passed on before the proxy goes; a
        // grandchild holding the pipe open does not keep it waiting.
        if let Some(task) = self.stderr_task.take() {
            let _ = tokio::time::timeout(Duration::from_millis(500), task).await;
        }
        let now = Instant::now();
        let outcome = if self.client_gone || self.shutting_down {
            Outcome::ClientGone
        } else {
            Outcome::ServerExited
        };
        let pending: Vec<UpstreamOrigin> = self.upstream.drain().map(|(_, o)| o).collect();
        for origin in pending {
            let UpstreamOrigin::Client {
                client_id, call, ..
            } = origin
            else {
                continue;
            };
            if outcome == Outcome::ServerExited {
                // The proxy is giving up on the server while the client is still there: requests
                // queued for the restart that will not happen get an answer that says so.
                self.send_client(&Message::error(
                    client_id,
                    jsonrpc::SERVER_EXITED,
                    &format!(
                        "MCP server `{}` keeps exiting and FlowLink stopped restarting it; see the proxy's stderr",
                        self.cfg.service
                    ),
                    None,
                ));
            }
            if let Some(t) = call {
                self.finish_call(&t, outcome, None, now);
            }
        }
        for (call_ref, h) in std::mem::take(&mut self.approvals) {
            if let Some(link) = &self.cfg.link {
                link.cancel_approval(&call_ref, "the proxy is exiting");
            }
            if !h.answered {
                self.finish_call(&h.track, outcome, None, now);
            }
        }
        self.cfg.server_status.stopped();
        self.session.ended_at_us = Some(now_us());
        if let Some(st) = &self.last_status {
            self.session.last_exit = Some(child::describe(st));
        }
        self.store.record_session(self.session.clone());
        self.secrets.cleanup();
        if let Err(e) = self.store.flush().await {
            eprintln!("flowlink-proxy: the audit store could not be flushed: {e}");
        }
        // Let the client writer write what is queued, then end.
        drop(self.client_tx);
        if let Some(writer) = self.client_writer.take() {
            let _ = tokio::time::timeout(Duration::from_secs(5), writer).await;
        }
        code
    }

    // ---- client → server ------------------------------------------------------------------

    fn on_client_line(&mut self, line: Line) {
        if self.shutting_down {
            return;
        }
        let bytes = match line {
            Line::Data(b) => b,
            Line::TooLong { len, head } => {
                let id = sniff_id(&head)
                    .and_then(|t| serde_json::from_str::<Value>(&t).ok())
                    .and_then(|v| Id::from_value(&v));
                tracing::warn!(len, "client message over the size limit refused");
                self.send_client(&Message::error(
                    id.unwrap_or_else(Id::null),
                    jsonrpc::MESSAGE_TOO_LARGE,
                    &format!(
                        "message of {len} bytes exceeds FlowLink's limit of {} bytes (--max-message-bytes); it was not forwarded",
                        self.cfg.max_message_bytes
                    ),
                    Some(json!({"limitBytes": self.cfg.max_message_bytes, "sizeBytes": len})),
                ));
                return;
            }
        };
        let frame = match Frame::parse(&bytes) {
            Ok(f) => f,
            Err(FrameError::Empty) => return,
            Err(e) => {
                let (code, what) = match e {
                    FrameError::NotJsonRpc(_) => (jsonrpc::INVALID_REQUEST, "Invalid Request"),
                    _ => (jsonrpc::PARSE_ERROR, "Parse error"),
                };
                tracing::warn!("client sent an unreadable message: {e}");
                self.send_client(&Message::error(
                    Id::null(),
                    code,
                    &format!("{what}: {e}; the message was not forwarded"),
                    None,
                ));
                return;
            }
        };
        self.established = true;
        match frame {
            Frame::Single(msg) => {
                let mut out = FrameOut::default();
                if self.client_message(msg, &mut out).is_some() {
                    // Unchanged: forward the exact bytes the client wrote.
                    let mut b = bytes;
                    b.push(b'\n');
                    self.send_server(Outgoing::Bytes(b));
                }
                self.flush_frame(out, false);
            }
            Frame::Batch(msgs) => {
                let mut out = FrameOut::default();
                for msg in msgs {
                    if let Some(m) = self.client_message(msg, &mut out) {
                        out.to_server.push(m);
                    }
                }
                self.flush_frame(out, true);
            }
        }
    }

    fn flush_frame(&mut self, out: FrameOut, batch: bool) {
        if batch && out.to_server.len() > 1 {
            self.send_server(Outgoing::Bytes(Frame::Batch(out.to_server).to_line()));
        } else {
            for m in out.to_server {
                self.send_server(Outgoing::Bytes(m.to_line()));
            }
        }
        if batch && out.to_client.len() > 1 {
            let _ = self.client_tx.send(Frame::Batch(out.to_client).to_line());
        } else {
            for m in &out.to_client {
                self.send_client(m);
            }
        }
    }

    fn take_upstream_id(&mut self) -> u64 {
        let id = self.next_upstream;
        self.next_upstream += 1;
        id
    }

    fn take_downstream_id(&mut self) -> u64 {
        let id = self.next_downstream;
        self.next_downstream += 1;
        id
    }

    /// Handles one client message. Returns it when it is to be forwarded unchanged (the caller
    /// may then send the original bytes); messages that change are pushed to `out`.
    fn client_message(&mut self, mut msg: Message, out: &mut FrameOut) -> Option<Message> {
        match msg.kind() {
            Kind::Response => {
                self.client_response(msg, out);
                None
            }
            Kind::Notification => {
                if msg.method() == Some(mcp::CANCELLED) {
                    self.client_cancel(msg, out);
                    return None;
                }
                if msg.method() == Some(mcp::INITIALIZED) {
                    self.initialized_sent = true;
                }
                Some(msg)
            }
            Kind::Request => {
                let client_id = msg.id().cloned()?;
                let method = msg.method().unwrap_or_default().to_owned();
                if method == mcp::TOOLS_CALL {
                    self.tools_call(msg, client_id, out);
                    return None;
                }
                if method == mcp::INITIALIZE || method == mcp::SERVER_DISCOVER {
                    let params = msg.decode("params").ok().flatten();
                    let hello = ClientHello::from_params(params.as_ref());
                    self.note_client(&hello);
                    self.client_hello = Some(hello);
                    if method == mcp::INITIALIZE {
                        self.initialize_request = Some(msg.clone());
                    }
                }
                let id = self.take_upstream_id();
                self.upstream_by_client_id.insert(client_id.clone(), id);
                self.upstream.insert(
                    id,
                    UpstreamOrigin::Client {
                        client_id,
                        method,
                        call: None,
                    },
                );
                msg.set_id(Id::number(id));
                out.to_server.push(msg);
                None
            }
        }
    }

    fn note_client(&mut self, hello: &ClientHello) {
        self.session.client_name = hello.client.name.clone();
        self.session.client_version = hello.client.version.clone();
        self.session.client_capabilities = hello.capabilities.clone();
        if hello.protocol_version.is_some() {
            self.protocol_version = hello.protocol_version.clone();
            self.session.protocol_version = hello.protocol_version.clone();
        }
        self.store.record_session(self.session.clone());
    }

    fn client_response(&mut self, mut msg: Message, out: &mut FrameOut) {
        let Some(down) = msg.id().and_then(Id::as_u64) else {
            tracing::warn!(id = ?msg.id().map(Id::as_json), "client answered a request id FlowLink never sent; dropped");
            return;
        };
        match self.downstream.remove(&down) {
            Some(DownstreamOrigin::Server {
                server_id,
                generation,
            }) => {
                self.downstream_by_server_id.remove(&server_id);
                if self.server.as_ref().map(|s| s.generation) != Some(generation) {
                    tracing::debug!(
                        "dropping an answer meant for a server process that has exited"
                    );
                    return;
                }
                msg.set_id(server_id);
                out.to_server.push(msg);
            }
            Some(DownstreamOrigin::Confirmation) => self.confirmation_answer(down, &msg),
            None => {
                tracing::warn!(
                    id = down,
                    "client answered an unknown or already answered request; dropped"
                );
            }
        }
    }

    fn client_cancel(&mut self, mut msg: Message, out: &mut FrameOut) {
        let params = msg.decode("params").ok().flatten();
        let Some(target) = params
            .as_ref()
            .and_then(|p| p.get("requestId"))
            .and_then(Id::from_value)
        else {
            tracing::debug!("cancellation without a readable requestId dropped");
            return;
        };
        // A call still waiting for approvers is withdrawn; the server never saw it.
        if self.cancel_held_approval(&target) {
            return;
        }
        // A call still waiting for the developer is cancelled here; the server never saw it.
        if let Some(key) = self
            .held
            .iter()
            .find(|(_, h)| h.client_id == target)
            .map(|(k, _)| *k)
            && let Some(h) = self.held.remove(&key)
        {
            self.downstream.remove(&key);
            self.store.update_verdict(
                &h.track.audit_id,
                Verdict::Denied,
                "cancelled by the client before the user answered",
            );
            self.finish_call(&h.track, Outcome::Cancelled, None, Instant::now());
            self.send_client(&Message::notification(
                mcp::CANCELLED,
                Some(&json!({"requestId": key, "reason": "the tool call was cancelled"})),
            ));
            return;
        }
        let Some(up) = self.upstream_by_client_id.get(&target).copied() else {
            tracing::debug!(
                id = target.as_json(),
                "cancellation for an unknown or finished request dropped"
            );
            return;
        };
        // The call ends here as far as the audit trail is concerned; an answer the server may
        // still send is relayed but does not change the recorded outcome.
        if let Some(UpstreamOrigin::Client { call, .. }) = self.upstream.get_mut(&up)
            && let Some(t) = call.take()
        {
            let reason = params
                .as_ref()
                .and_then(|p| p.get("reason"))
                .and_then(Value::as_str)
                .map(|r| shorten(r, 200));
            self.finish_call(&t, Outcome::Cancelled, reason, Instant::now());
        }
        let mut params = params.unwrap_or_else(|| json!({}));
        params["requestId"] = Value::from(up);
        msg.set("params", &params);
        out.to_server.push(msg);
    }

    // ---- tools/call ---------------------------------------------------------------------------

    fn tools_call(&mut self, msg: Message, client_id: Id, out: &mut FrameOut) {
        let received = Instant::now();
        let received_at_us = now_us();
        let params = msg.decode("params");
        let per_request = params
            .as_ref()
            .ok()
            .and_then(|p| ClientHello::from_request_meta(p.as_ref()));
        let hello = per_request.as_ref().or(self.client_hello.as_ref());
        let agent = hello
            .and_then(|h| h.client.name.clone())
            .unwrap_or_else(|| "unknown".to_owned());
        let can_ask_user = hello.is_some_and(ClientHello::supports_form_elicitation)
            && !mcp::requires_result_type(self.protocol_version.as_deref());
        let can_ask_approver = self
            .cfg
            .link
            .as_ref()
            .is_some_and(|l| l.is_connected() && !l.is_revoked());
        let progress_token =
            approval::progress_token(params.as_ref().ok().and_then(Option::as_ref));

        let (tool, arguments, decided) = match &params {
            Ok(Some(p)) => match (p.get("name").and_then(Value::as_str), p.get("arguments")) {
                (Some(name), args) if self.quarantined.contains_key(name) => (
                    name.to_owned(),
                    args.cloned().unwrap_or(Value::Null),
                    quarantined(name, &self.quarantined[name]),
                ),
                (Some(name), args) if self.store.outbox_blocks() => (
                    name.to_owned(),
                    args.cloned().unwrap_or(Value::Null),
                    decide::outbox_full(
                        self.store.outbox_depth(),
                        self.store.outbox_config().map_or(0, |c| c.max_events),
                    ),
                ),
                (Some(name), args @ (None | Some(Value::Object(_)))) => {
                    let args = args.cloned().unwrap_or_else(|| json!({}));
                    let d = decide::decide(
                        &self.policy,
                        &CallFacts {
                            agent: &agent,
                            service: &self.cfg.service,
                            tool: name,
                            arguments: &args,
                            labels: &self.cfg.labels,
                            can_ask_user,
                            can_ask_approver,
                        },
                    );
                    (name.to_owned(), args, d)
                }
                (name, _) => (
                    name.unwrap_or("").to_owned(),
                    p.get("arguments").cloned().unwrap_or(Value::Null),
                    malformed("`params.name` must be a string and `params.arguments` an object"),
                ),
            },
            Ok(None) => (String::new(), Value::Null, malformed("`params` is missing")),
            Err(e) => (
                String::new(),
                Value::Null,
                malformed(&format!("`params` could not be read: {e}")),
            ),
        };

        // An approval that outlived its call lets exactly the identical call through, under the
        // same policy.
        let (policy_source, policy_bundle) = self.policy.record_source();
        let mut decided = decided;
        let digest = flowlink_proto::link::args_digest(&arguments);
        let key = GrantKey {
            agent: &agent,
            tool: &tool,
            digest: &digest,
            policy: policy_bundle.as_deref(),
        };
        if matches!(decided.plan, Plan::AskApprover { .. })
            && let Some(used) = self.grants.take(&key, Instant::now())
        {
            decided.plan = Plan::Forward;
            decided.verdict = Verdict::Approved;
            decided.reason = format!(
                "{}; approved earlier by {} (request {})",
                decided.reason,
                used.by.join(", "),
                used.request_id
            );
        }

        // `{{secret:NAME}}` placeholders: allowed by the policy and available, or the call is
        // refused (and recorded so). The decision, the digest and the record keep the
        // placeholder; the value goes in just before the call is written to the server.
        if matches!(
            decided.plan,
            Plan::Forward | Plan::AskUser { .. } | Plan::AskApprover { .. }
        ) && let Err(refusal) =
            self.secrets
                .check(self.policy.policy.secrets(), &tool, &arguments)
        {
            decided = placeholder_refused(refusal, decided.risk, decided.findings);
        }

        let audit_id = uuid::Uuid::now_v7().to_string();
        // Built while the call's facts are still borrowed; only calls that ask approvers pay.
        let approval_request = match &decided.plan {
            Plan::AskApprover { spec, message } => {
                let call_ref = uuid::Uuid::now_v7().to_string();
                let user = self
                    .cfg
                    .labels
                    .get("user")
                    .map_or("unknown", String::as_str);
                let mut request = approval::request(&CallForApproval {
                    call_ref: &call_ref,
                    agent: &agent,
                    user,
                    service: &self.cfg.service,
                    tool: &tool,
                    arguments: &arguments,
                    rule_id: decided.rule_id.as_deref(),
                    message: message.as_deref(),
                    reason: &decided.reason,
                    risk: decided.risk.unwrap_or(0),
                    findings: &decided.findings,
                    policy: policy_bundle.as_deref(),
                    spec,
                });
                let found = self.secrets.redactor().redact_json(&mut request.arguments);
                report_redaction("an approval request", &found);
                Some(PendingApproval {
                    request,
                    policy: policy_bundle.clone(),
                    asked: approval::asked(spec),
                    timeout: spec.timeout,
                    agent: agent.clone(),
                    tool: tool.clone(),
                    digest,
                })
            }
            _ => None,
        };
        // The agent should never have a value, but if it sent one, the audit trail does not
        // keep it.
        let mut arguments = arguments;
        let found = self.secrets.redactor().redact_json(&mut arguments);
        report_redaction("the audit record of a call", &found);
        let mut record = ToolCallRecord {
            schema: SCHEMA_VERSION,
            id: audit_id.clone(),
            session_id: self.session.id.clone(),
            received_at_us,
            decided_at_us: now_us(),
            agent,
            service: self.cfg.service.clone(),
            tool,
            arguments,
            verdict: decided.verdict,
            action: decided.action.to_owned(),
            rule_id: decided.rule_id.clone(),
            reason: decided.reason.clone(),
            outcome: if decided.plan == Plan::Forward
                || matches!(
                    decided.plan,
                    Plan::AskUser { .. } | Plan::AskApprover { .. }
                ) {
                Outcome::Pending
            } else {
                Outcome::NotForwarded
            },
            finished_at_us: None,
            duration_us: None,
            error: None,
            risk: decided.risk,
            findings: decided.findings.clone(),
            policy_source: Some(policy_source),
            policy_bundle,
        };
        let track = CallTrack { audit_id, received };

        match decided.plan {
            Plan::Forward => {
                let mut msg = msg;
                match self.secrets.substitute(&mut msg) {
                    Ok(used) => self.report_used(used),
                    Err(refusal) => {
                        refuse_record(&mut record, &refusal.reason);
                        let reply = Message::result(
                            client_id,
                            &decide::refusal_result(
                                &refusal.message,
                                self.protocol_version.as_deref(),
                            ),
                        );
                        self.reply_after_record(record, reply);
                        return;
                    }
                }
                let up = self.take_upstream_id();
                self.upstream_by_client_id.insert(client_id.clone(), up);
                self.upstream.insert(
                    up,
                    UpstreamOrigin::Client {
                        client_id,
                        method: mcp::TOOLS_CALL.to_owned(),
                        call: Some(track),
                    },
                );
                msg.set_id(Id::number(up));
                let bytes = msg.to_line();
                drop(msg);
                let store = self.store.clone();
                let events = self.events.clone();
                // Recorded before it is forwarded: the server writer waits for the commit, and
                // everything queued behind this call keeps its order.
                let gate: GateFuture = Box::pin(async move {
                    match store.record_call(record).await {
                        Ok(()) => Some(bytes),
                        Err(e) => {
                            let _ = events.send(Event::AuditFailed {
                                upstream_id: up,
                                error: e.to_string(),
                            });
                            None
                        }
                    }
                });
                self.flush_pending_frame(out);
                self.send_server(Outgoing::Gated(gate));
            }
            Plan::Refuse { message, .. } => {
                let reply = Message::result(
                    client_id,
                    &decide::refusal_result(&message, self.protocol_version.as_deref()),
                );
                self.reply_after_record(record, reply);
            }
            Plan::Unavailable { message } => {
                let reply = Message::error(
                    client_id,
                    jsonrpc::DECISION_UNAVAILABLE,
                    &message,
                    Some(json!({"reason": "audit_outbox_full"})),
                );
                self.reply_after_record(record, reply);
            }
            Plan::RateLimited {
                retry_after,
                message,
            } => {
                let ms = u64::try_from(retry_after.as_millis()).unwrap_or(u64::MAX);
                let reply = Message::error(
                    client_id,
                    jsonrpc::RATE_LIMITED,
                    &message,
                    Some(json!({"retryAfterMs": ms, "rule": decided.rule_id})),
                );
                self.reply_after_record(record, reply);
            }
            Plan::AskApprover { .. } => match (approval_request, self.cfg.link.clone()) {
                (Some(pending), Some(link)) => {
                    self.hold_for_approvers(
                        msg,
                        client_id,
                        track,
                        record,
                        pending,
                        progress_token,
                        &link,
                    );
                }
                _ => {
                    let reply = Message::error(
                        client_id,
                        jsonrpc::DECISION_UNAVAILABLE,
                        "FlowLink could not ask an approver for this call (no link to the control plane); it was not run",
                        None,
                    );
                    self.reply_after_record(record, reply);
                }
            },
            Plan::AskUser { prompt, timeout } => {
                let done_rx = self.record_in_background(record);
                let down = self.take_downstream_id();
                self.downstream.insert(down, DownstreamOrigin::Confirmation);
                self.held.insert(
                    down,
                    HeldCall {
                        message: msg,
                        client_id,
                        track,
                        recorded: done_rx,
                    },
                );
                out.to_client.push(Message::request(
                    Id::number(down),
                    mcp::ELICITATION_CREATE,
                    Some(&decide::confirmation_request(
                        &prompt,
                        self.protocol_version.as_deref(),
                    )),
                ));
                let events = self.events.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(timeout).await;
                    let _ = events.send(Event::ConfirmTimeout {
                        downstream_id: down,
                    });
                });
            }
        }
    }

    /// Tells the control plane which secrets went to the server (`SecretsUsed`).
    fn report_used(&self, used: Vec<flowlink_proto::link::SecretUse>) {
        if let Some(link) = &self.cfg.link {
            link.report_secrets_used(used);
        }
    }

    /// Writes `record` in the background; the receiver says whether it is on disk.
    fn record_in_background(&self, record: ToolCallRecord) -> oneshot::Receiver<bool> {
        let (done_tx, done_rx) = oneshot::channel();
        let store = self.store.clone();
        tokio::spawn(async move {
            let ok = match store.record_call(record).await {
                Ok(()) => true,
                Err(e) => {
                    tracing::error!("audit store failed; the call will be refused: {e}");
                    false
                }
            };
            let _ = done_tx.send(ok);
        });
        done_rx
    }

    /// Sends a held call to the server once its audit record is on disk.
    fn forward_held(
        &mut self,
        message: Message,
        client_id: Id,
        track: CallTrack,
        recorded: oneshot::Receiver<bool>,
    ) {
        let mut message = message;
        match self.secrets.substitute(&mut message) {
            Ok(used) => self.report_used(used),
            Err(refusal) => {
                self.store
                    .update_verdict(&track.audit_id, Verdict::Block, &refusal.reason);
                self.finish_call(
                    &track,
                    Outcome::NotForwarded,
                    Some(refusal.reason),
                    Instant::now(),
                );
                self.send_client(&Message::result(
                    client_id,
                    &decide::refusal_result(&refusal.message, self.protocol_version.as_deref()),
                ));
                return;
            }
        }
        let up = self.take_upstream_id();
        self.upstream_by_client_id.insert(client_id.clone(), up);
        let mut msg = message;
        msg.set_id(Id::number(up));
        let bytes = msg.to_line();
        let events = self.events.clone();
        self.upstream.insert(
            up,
            UpstreamOrigin::Client {
                client_id,
                method: mcp::TOOLS_CALL.to_owned(),
                call: Some(track),
            },
        );
        self.send_server(Outgoing::Gated(Box::pin(async move {
            if recorded.await == Ok(true) {
                Some(bytes)
            } else {
                let _ = events.send(Event::AuditFailed {
                    upstream_id: up,
                    error: "the audit record of the call could not be written".into(),
                });
                None
            }
        })));
    }

    // ---- approvals ----------------------------------------------------------------------------

    /// Progress ticks (with a progress token) or the end of the hold (without one).
    fn spawn_hold_timer(&self, call_ref: &str, with_progress: bool) -> tokio::task::AbortHandle {
        let events = self.events.clone();
        let cr = call_ref.to_owned();
        let hold = self.cfg.approval_hold;
        tokio::spawn(async move {
            if with_progress {
                // Keeps the client's timer alive; the request's deadline ends the wait.
                loop {
                    tokio::time::sleep(approval::PROGRESS_EVERY).await;
                    if events
                        .send(Event::ApprovalTick {
                            call_ref: cr.clone(),
                        })
                        .is_err()
                    {
                        break;
                    }
                }
            } else {
                tokio::time::sleep(hold).await;
                let _ = events.send(Event::ApprovalHoldOver { call_ref: cr });
            }
        })
        .abort_handle()
    }

    /// The agent re-issued a call that already waits for approvers (it was told to retry once
    /// approved, and retried early): the new call waits on the same request instead of filing a
    /// second one. Returns the record back when there is no such request.
    fn rejoin_pending_approval(
        &mut self,
        message: Message,
        client_id: Id,
        track: CallTrack,
        record: ToolCallRecord,
        pending: &PendingApproval,
        progress: Option<Value>,
    ) -> Option<(Message, Id, CallTrack, ToolCallRecord, Option<Value>)> {
        let Some(call_ref) = self
            .approvals
            .iter()
            .find(|(_, h)| {
                h.answered
                    && h.agent == pending.agent
                    && h.tool == pending.tool
                    && h.digest == pending.digest
                    && h.policy == pending.policy
            })
            .map(|(k, _)| k.clone())
        else {
            return Some((message, client_id, track, record, progress));
        };
        let recorded = self.record_in_background(record);
        let timer = self.spawn_hold_timer(&call_ref, progress.is_some());
        if let Some(h) = self.approvals.get_mut(&call_ref) {
            h.message = message;
            h.client_id = client_id;
            h.track = track;
            h.recorded = Some(recorded);
            h.progress = progress;
            h.ticks = 0;
            h.answered = false;
            h.timers.push(timer);
        }
        None
    }

    #[allow(clippy::too_many_arguments)] // the held call's parts, moved in once
    fn hold_for_approvers(
        &mut self,
        message: Message,
        client_id: Id,
        track: CallTrack,
        record: ToolCallRecord,
        pending: PendingApproval,
        progress: Option<Value>,
        link: &crate::link::LinkHandle,
    ) {
        let Some((message, client_id, track, record, progress)) =
            self.rejoin_pending_approval(message, client_id, track, record, &pending, progress)
        else {
            return;
        };
        let recorded = self.record_in_background(record);
        let call_ref = pending.request.call_ref.clone();
        let mut rx = link.request_approval(pending.request);
        let mut timers = Vec::new();
        let events = self.events.clone();
        let cr = call_ref.clone();
        timers.push(
            tokio::spawn(async move {
                while let Some(event) = rx.recv().await {
                    let last = matches!(event, ApprovalEvent::Decided(_));
                    if events
                        .send(Event::Approval {
                            call_ref: cr.clone(),
                            event,
                        })
                        .is_err()
                        || last
                    {
                        break;
                    }
                }
            })
            .abort_handle(),
        );
        timers.push(self.spawn_hold_timer(&call_ref, progress.is_some()));
        let events = self.events.clone();
        let cr = call_ref.clone();
        // The control plane's clock decides timeouts; this is the backstop when no decision can
        // reach us (the link stays down).
        let deadline = pending.timeout + Duration::from_secs(30);
        timers.push(
            tokio::spawn(async move {
                tokio::time::sleep(deadline).await;
                let _ = events.send(Event::ApprovalDeadline { call_ref: cr });
            })
            .abort_handle(),
        );
        self.approvals.insert(
            call_ref,
            HeldApproval {
                message,
                client_id,
                track,
                recorded: Some(recorded),
                agent: pending.agent,
                tool: pending.tool,
                digest: pending.digest,
                policy: pending.policy,
                progress,
                ticks: 0,
                request_id: None,
                url: None,
                asked: pending.asked,
                timeout: pending.timeout,
                answered: false,
                timers,
            },
        );
    }

    fn on_approval_event(&mut self, call_ref: &str, event: ApprovalEvent) {
        match event {
            ApprovalEvent::Accepted(a) => {
                if let Some(h) = self.approvals.get_mut(call_ref) {
                    h.request_id = Some(a.request_id);
                    h.url = Some(a.url);
                }
                self.send_approval_progress(call_ref, "waiting");
            }
            ApprovalEvent::LinkDown => {
                tracing::debug!(
                    call_ref,
                    "link down while a call waits for approval; it is re-sent on reconnect"
                );
            }
            ApprovalEvent::Decided(d) => {
                let Some(mut h) = self.approvals.remove(call_ref) else {
                    return;
                };
                let approved = d.outcome == flowlink_proto::link::ApprovalOutcome::Approved;
                if h.answered {
                    // The agent was told to retry: the approval now waits for the identical call.
                    if approved {
                        self.grants.add(&h.grant_key(), &d, Instant::now());
                        self.store.update_verdict(
                            &h.track.audit_id,
                            Verdict::Approved,
                            &format!(
                                "approved by {} after the agent was told to retry; the identical call may run",
                                d.decided_by.join(", ")
                            ),
                        );
                    } else {
                        let (verdict, why, _) = approval::refusal(&d, h.timeout);
                        self.store.update_verdict(&h.track.audit_id, verdict, &why);
                    }
                    return;
                }
                if approved {
                    if matches!(
                        d.scope,
                        flowlink_proto::link::ApprovalScope::SameCallFor { .. }
                    ) {
                        self.grants.add(&h.grant_key(), &d, Instant::now());
                    }
                    self.store.update_verdict(
                        &h.track.audit_id,
                        Verdict::Approved,
                        &format!("approved by {}", d.decided_by.join(", ")),
                    );
                    let recorded = h.recorded.take();
                    let (message, client_id, track) = take_held(&mut h);
                    match recorded {
                        Some(r) => self.forward_held(message, client_id, track, r),
                        None => tracing::error!(call_ref, "held call without its record future"),
                    }
                } else {
                    let (verdict, why, text) = approval::refusal(&d, h.timeout);
                    self.refuse_held_approval(&mut h, verdict, &why, &text);
                }
            }
        }
    }

    fn refuse_held_approval(
        &mut self,
        h: &mut HeldApproval,
        verdict: Verdict,
        why: &str,
        text: &str,
    ) {
        self.store.update_verdict(&h.track.audit_id, verdict, why);
        self.finish_call(
            &h.track,
            Outcome::NotForwarded,
            Some(why.to_owned()),
            Instant::now(),
        );
        self.send_client(&Message::result(
            h.client_id.clone(),
            &decide::refusal_result(text, self.protocol_version.as_deref()),
        ));
    }

    fn on_approval_hold_over(&mut self, call_ref: &str) {
        let Some(h) = self.approvals.get_mut(call_ref) else {
            return;
        };
        if h.answered {
            return;
        }
        h.answered = true;
        let text =
            approval::awaiting_text(&h.tool, h.request_id.as_deref(), h.url.as_deref(), &h.asked);
        let client_id = h.client_id.clone();
        let track_id = h.track.audit_id.clone();
        let received = h.track.received;
        let reply = Message::result(
            client_id,
            &decide::refusal_result(&text, self.protocol_version.as_deref()),
        );
        self.send_client(&reply);
        self.finish_call(
            &CallTrack {
                audit_id: track_id,
                received,
            },
            Outcome::NotForwarded,
            Some("awaiting approval; the agent was told to issue the identical call again once approved".into()),
            Instant::now(),
        );
    }

    fn on_approval_tick(&mut self, call_ref: &str) {
        self.send_approval_progress(call_ref, "still waiting");
    }

    /// A progress notification for a held call whose client gave a progress token.
    fn send_approval_progress(&mut self, call_ref: &str, what: &str) {
        let Some(h) = self.approvals.get_mut(call_ref) else {
            return;
        };
        let Some(token) = h.progress.clone().filter(|_| !h.answered) else {
            return;
        };
        h.ticks += 1;
        let text = format!(
            "{what} for approval by {}{}",
            h.asked,
            h.url
                .as_deref()
                .map(|u| format!(" ({u})"))
                .unwrap_or_default()
        );
        let note = approval::progress(&token, h.ticks, &text);
        self.send_client(&Message::notification(mcp::PROGRESS, Some(&note)));
    }

    fn on_approval_deadline(&mut self, call_ref: &str) {
        let Some(mut h) = self.approvals.remove(call_ref) else {
            return;
        };
        if let Some(link) = &self.cfg.link {
            link.cancel_approval(
                call_ref,
                "no decision reached the proxy before the request's timeout",
            );
        }
        let d = flowlink_proto::link::ApprovalDecision {
            call_ref: call_ref.to_owned(),
            request_id: h.request_id.clone().unwrap_or_default(),
            outcome: flowlink_proto::link::ApprovalOutcome::TimedOut,
            decided_by: Vec::new(),
            comment: None,
            scope: flowlink_proto::link::ApprovalScope::ThisCall,
        };
        let (verdict, why, text) = approval::refusal(&d, h.timeout);
        if h.answered {
            self.store.update_verdict(&h.track.audit_id, verdict, &why);
        } else {
            self.refuse_held_approval(&mut h, verdict, &why, &text);
        }
    }

    /// A client cancellation of a call held for approvers: the request is withdrawn. Returns
    /// whether `target` was such a call.
    fn cancel_held_approval(&mut self, target: &Id) -> bool {
        let Some(call_ref) = self
            .approvals
            .iter()
            .find(|(_, h)| !h.answered && &h.client_id == target)
            .map(|(k, _)| k.clone())
        else {
            return false;
        };
        if let Some(h) = self.approvals.remove(&call_ref) {
            if let Some(link) = &self.cfg.link {
                link.cancel_approval(&call_ref, "the client cancelled the call");
            }
            self.store.update_verdict(
                &h.track.audit_id,
                Verdict::Denied,
                "cancelled by the client while waiting for approval",
            );
            self.finish_call(&h.track, Outcome::Cancelled, None, Instant::now());
        }
        true
    }

    /// Sends what a batch has collected so far, so that a gated call keeps its place in order.
    fn flush_pending_frame(&mut self, out: &mut FrameOut) {
        for m in out.to_server.drain(..) {
            let line = m.to_line();
            self.send_server(Outgoing::Bytes(line));
        }
    }

    fn reply_after_record(&mut self, record: ToolCallRecord, reply: Message) {
        let store = self.store.clone();
        let client = self.client_tx.clone();
        tokio::spawn(async move {
            if let Err(e) = store.record_call(record).await {
                // The call is refused either way; the refusal must not wait on a broken store.
                tracing::error!("audit store failed while recording a refused call: {e}");
            }
            let _ = client.send(reply.to_line());
        });
    }

    fn on_audit_failed(&mut self, upstream_id: u64, error: &str) {
        if let Some(UpstreamOrigin::Client { client_id, .. }) = self.upstream.remove(&upstream_id) {
            self.upstream_by_client_id.remove(&client_id);
            eprintln!("flowlink-proxy: audit store failed ({error}); the tool call was refused");
            self.send_client(&Message::error(
                client_id,
                jsonrpc::DECISION_UNAVAILABLE,
                &format!(
                    "FlowLink could not record this tool call ({error}), so it was not run. Free disk space or fix the data directory, then retry."
                ),
                None,
            ));
        }
    }

    fn confirmation_answer(&mut self, down: u64, answer: &Message) {
        let Some(held) = self.held.remove(&down) else {
            return;
        };
        let result = answer.decode("result").ok().flatten();
        let granted = result.as_ref().is_some_and(decide::confirmation_granted);
        if granted {
            self.store.update_verdict(
                &held.track.audit_id,
                Verdict::Approved,
                "allowed by the user in the editor",
            );
            self.forward_held(held.message, held.client_id, held.track, held.recorded);
        } else {
            let why = match (
                answer.is_error_response(),
                result
                    .as_ref()
                    .and_then(|r| r.get("action"))
                    .and_then(Value::as_str),
            ) {
                (true, _) => "the editor could not show the confirmation",
                (_, Some("decline")) => "the user declined it in the editor",
                (_, Some("cancel")) => "the user dismissed the confirmation",
                _ => "the user did not allow it",
            };
            self.deny_held(held, why);
        }
    }

    fn on_confirm_timeout(&mut self, down: u64) {
        if let Some(held) = self.held.remove(&down) {
            self.downstream.remove(&down);
            self.send_client(&Message::notification(
                mcp::CANCELLED,
                Some(
                    &json!({"requestId": down, "reason": "FlowLink stopped waiting for an answer"}),
                ),
            ));
            self.deny_held(held, "no answer came in time (silence is not consent)");
        }
    }

    fn deny_held(&mut self, held: HeldCall, why: &str) {
        self.store
            .update_verdict(&held.track.audit_id, Verdict::Denied, why);
        self.finish_call(
            &held.track,
            Outcome::NotForwarded,
            Some(why.to_owned()),
            Instant::now(),
        );
        let text = format!(
            "FlowLink did not run this tool call: {why}. Ask the user how to proceed instead of retrying the same call."
        );
        self.send_client(&Message::result(
            held.client_id,
            &decide::refusal_result(&text, self.protocol_version.as_deref()),
        ));
    }

    fn finish_call(&self, t: &CallTrack, outcome: Outcome, error: Option<String>, now: Instant) {
        let duration =
            i64::try_from(now.duration_since(t.received).as_micros()).unwrap_or(i64::MAX);
        let redactor = self.secrets.cell().get();
        let error = match error {
            Some(e) if !redactor.is_empty() => Some(redactor.redact_text(&e).0.into_owned()),
            other => other,
        };
        self.store
            .record_outcome(&t.audit_id, outcome, now_us(), duration, error);
    }

    // ---- server → client ------------------------------------------------------------------

    fn on_server_line(&mut self, line: Line) {
        let bytes = match line {
            Line::Data(b) => self.redact_server_line(b),
            Line::TooLong { len, head } => {
                tracing::error!(
                    len,
                    "MCP server wrote a message over the size limit; dropped"
                );
                if let Some(up) = sniff_id(&head).and_then(|t| t.parse::<u64>().ok())
                    && let Some(UpstreamOrigin::Client {
                        client_id, call, ..
                    }) = self.upstream.remove(&up)
                {
                    self.upstream_by_client_id.remove(&client_id);
                    let text = format!(
                        "the MCP server's answer was {len} bytes, over FlowLink's limit of {} bytes (--max-message-bytes); it was dropped",
                        self.cfg.max_message_bytes
                    );
                    if let Some(t) = call {
                        self.finish_call(
                            &t,
                            Outcome::ProtocolError,
                            Some(text.clone()),
                            Instant::now(),
                        );
                    }
                    self.send_client(&Message::error(
                        client_id,
                        jsonrpc::MESSAGE_TOO_LARGE,
                        &text,
                        None,
                    ));
                }
                return;
            }
        };
        let frame = match Frame::parse(&bytes) {
            Ok(f) => f,
            Err(FrameError::Empty) => return,
            Err(e) => {
                let text = String::from_utf8_lossy(&bytes);
                let redactor = self.secrets.redactor();
                let (clean, found) = redactor.redact_text(&text);
                report_redaction("non-JSON output of the MCP server", &found);
                let preview: String = clean.chars().take(200).collect();
                eprintln!(
                    "flowlink-proxy: MCP server `{}` wrote something that is not JSON-RPC to stdout ({e}); not forwarded: {preview}",
                    self.cfg.service
                );
                return;
            }
        };
        match frame {
            Frame::Single(msg) => {
                let mut out = FrameOut::default();
                if self.server_message(msg, &mut out).is_some() {
                    let mut b = bytes;
                    b.push(b'\n');
                    let _ = self.client_tx.send(b);
                }
                self.flush_frame(out, false);
            }
            Frame::Batch(msgs) => {
                let mut out = FrameOut::default();
                for msg in msgs {
                    if let Some(m) = self.server_message(msg, &mut out) {
                        out.to_client.push(m);
                    }
                }
                self.flush_frame(out, true);
            }
        }
    }

    /// Every value the session holds, redacted from a line the server wrote before anything
    /// else looks at it. The line is re-serialised only when something was redacted.
    fn redact_server_line(&mut self, bytes: Vec<u8>) -> Vec<u8> {
        let redactor = self.secrets.redactor();
        if redactor.is_empty() {
            return bytes;
        }
        let Ok(mut value) = serde_json::from_slice::<Value>(&bytes) else {
            // Not JSON: it is not forwarded (its preview on stderr is redacted).
            return bytes;
        };
        let found = redactor.redact_json(&mut value);
        if found.is_empty() {
            return bytes;
        }
        report_redaction(
            &format!("a message of MCP server `{}`", self.cfg.service),
            &found,
        );
        // Cannot fail for a parsed value; an empty line would be dropped, never the original.
        serde_json::to_vec(&value).unwrap_or_default()
    }

    fn server_message(&mut self, mut msg: Message, out: &mut FrameOut) -> Option<Message> {
        match msg.kind() {
            Kind::Notification => {
                if msg.method() == Some(mcp::CANCELLED) {
                    let params = msg.decode("params").ok().flatten();
                    let target = params
                        .as_ref()
                        .and_then(|p| p.get("requestId"))
                        .and_then(Id::from_value);
                    match target.and_then(|t| self.downstream_by_server_id.get(&t).copied()) {
                        Some(down) => {
                            let mut params = params.unwrap_or_else(|| json!({}));
                            params["requestId"] = Value::from(down);
                            msg.set("params", &params);
                            out.to_client.push(msg);
                        }
                        None => tracing::debug!("server cancelled an unknown request; dropped"),
                    }
                    return None;
                }
                if msg.method() == Some(mcp::TOOLS_LIST_CHANGED) {
                    tracing::info!(
                        "the server's tool list changed; the next tools/list is re-examined"
                    );
                }
                Some(msg)
            }
            Kind::Request => {
                let server_id = msg.id().cloned()?;
                let generation = self.generation;
                let down = self.take_downstream_id();
                self.downstream_by_server_id.insert(server_id.clone(), down);
                self.downstream.insert(
                    down,
                    DownstreamOrigin::Server {
                        server_id,
                        generation,
                    },
                );
                msg.set_id(Id::number(down));
                out.to_client.push(msg);
                None
            }
            Kind::Response => {
                let Some(up) = msg.id().and_then(Id::as_u64) else {
                    tracing::warn!("MCP server answered an id FlowLink never sent; dropped");
                    return None;
                };
                match self.upstream.remove(&up) {
                    Some(UpstreamOrigin::Client {
                        client_id,
                        method,
                        call,
                    }) => {
                        self.upstream_by_client_id.remove(&client_id);
                        if let Some(t) = call {
                            self.guard_result(&mut msg);
                            self.call_finished(&t, &msg);
                        } else if method == mcp::INITIALIZE || method == mcp::SERVER_DISCOVER {
                            self.note_server(&msg);
                        } else if method == mcp::TOOLS_LIST {
                            self.filter_tools(&mut msg);
                        }
                        msg.set_id(client_id);
                        out.to_client.push(msg);
                    }
                    Some(UpstreamOrigin::ReplayedInitialize) => {
                        self.note_server(&msg);
                        if msg.is_error_response() {
                            eprintln!(
                                "flowlink-proxy: the restarted MCP server `{}` refused the replayed initialize",
                                self.cfg.service
                            );
                        }
                        if self.initialized_sent
                            && let Some(link) = &self.server
                        {
                            let _ = link.tx.send(Outgoing::Bytes(
                                Message::notification(mcp::INITIALIZED, None).to_line(),
                            ));
                        }
                        eprintln!(
                            "flowlink-proxy: MCP server `{}` restarted and re-initialised",
                            self.cfg.service
                        );
                        self.flush_backlog();
                    }
                    None => {
                        tracing::warn!(
                            id = up,
                            "MCP server answered an unknown or already answered request; dropped"
                        );
                    }
                }
                None
            }
        }
    }

    fn note_server(&mut self, msg: &Message) {
        let result = msg.decode("result").ok().flatten();
        let hello = ServerHello::from_result(result.as_ref());
        self.session.server_name = hello.server.name;
        self.session.server_version = hello.server.version;
        self.session.server_capabilities = hello.capabilities;
        if hello.protocol_version.is_some() {
            self.protocol_version = hello.protocol_version.clone();
            self.session.protocol_version = hello.protocol_version;
        }
        self.store.record_session(self.session.clone());
    }

    fn call_finished(&self, t: &CallTrack, msg: &Message) {
        let (outcome, error) = if msg.is_error_response() {
            let e = msg.decode("error").ok().flatten();
            let text = e
                .as_ref()
                .and_then(|e| e.get("message"))
                .and_then(Value::as_str)
                .map(|s| shorten(s, 500));
            (Outcome::ProtocolError, text)
        } else {
            #[derive(serde::Deserialize)]
            struct Peek {
                #[serde(rename = "isError", default)]
                is_error: Option<bool>,
                #[serde(default)]
                content: Option<Vec<PeekContent>>,
            }
            #[derive(serde::Deserialize)]
            struct PeekContent {
                #[serde(default)]
                text: Option<String>,
            }
            let peek = msg
                .get("result")
                .and_then(|r| serde_json::from_str::<Peek>(r.get()).ok());
            match peek {
                Some(Peek {
                    is_error: Some(true),
                    content,
                }) => {
                    let text = content
                        .and_then(|c| c.into_iter().find_map(|c| c.text))
                        .map(|s| shorten(&s, 500));
                    (Outcome::ToolError, text)
                }
                _ => (Outcome::Ok, None),
            }
        };
        self.finish_call(t, outcome, error, Instant::now());
    }

    /// Redacts secrets from a tool result before the agent sees it, and flags results that carry
    /// instructions aimed at the model.
    fn guard_result(&self, msg: &mut Message) {
        if !self.policy.policy.shield_enabled() || msg.get("result").is_none() {
            return;
        }
        let Ok(Some(mut result)) = msg.decode("result") else {
            return;
        };
        let mut redacted: Vec<&'static str> = Vec::new();
        let mut steering: Vec<&'static str> = Vec::new();
        guard_strings(&mut result, &mut redacted, &mut steering, 0);
        if !steering.is_empty() {
            eprintln!(
                "flowlink-proxy: a `{}` tool result contains text aimed at the model ({}); treat it as data",
                self.cfg.service,
                steering.join(", ")
            );
        }
        if !redacted.is_empty() {
            eprintln!(
                "flowlink-proxy: redacted {} secret(s) from a `{}` tool result ({})",
                redacted.len(),
                self.cfg.service,
                redacted.join(", ")
            );
            msg.set("result", &result);
        }
    }

    /// Examines a `tools/list` result: pins each tool's definition, scans its description,
    /// quarantines changed or poisoned tools, and drops hidden and quarantined tools.
    fn filter_tools(&mut self, msg: &mut Message) {
        let agent = self
            .client_hello
            .as_ref()
            .and_then(|h| h.client.name.clone())
            .unwrap_or_else(|| "unknown".to_owned());
        let Ok(Some(mut result)) = msg.decode("result") else {
            return;
        };
        let Some(tools) = result.get_mut("tools").and_then(Value::as_array_mut) else {
            return;
        };
        let before = tools.len();
        let guard = self.policy.policy.shield_enabled();
        let (_, block_at) = self.policy.policy.shield_thresholds();
        // The tools other services on this machine expose (all proxies share the pin store),
        // for spotting a tool that impersonates another service's.
        let others: Vec<(String, String)> = match (&self.cfg.pins, guard) {
            (Some(pins), true) => pins
                .list(None)
                .map(|rows| {
                    rows.into_iter()
                        .filter(|r| r.service != self.cfg.service)
                        .map(|r| (r.service, r.tool))
                        .collect()
                })
                .unwrap_or_default(),
            _ => Vec::new(),
        };
        for t in tools.iter() {
            let name = t.get("name").and_then(Value::as_str).unwrap_or("");
            if !guard || name.is_empty() {
                continue;
            }
            let description = t.get("description").and_then(Value::as_str).unwrap_or("");
            let schema = t.get("inputSchema").cloned().unwrap_or(Value::Null);
            let mut why = None;
            let poison = guardrails::scan_tool(name, description, &schema);
            if let Some(worst) = poison.iter().max_by_key(|f| f.risk)
                && worst.risk >= block_at
            {
                why = Some(format!(
                    "its description looks like an attempt to steer the model ({}: {})",
                    worst.id, worst.explanation
                ));
            }
            if let Some(shadow) = guardrails::shadowing(&self.cfg.service, name, &others) {
                if shadow.risk >= block_at {
                    why.get_or_insert_with(|| {
                        format!(
                            "it impersonates another service's tool ({}).",
                            shadow.explanation
                        )
                    });
                } else if !self.quarantined.contains_key(name) {
                    eprintln!(
                        "flowlink-proxy: warning: tool `{name}` of `{}`: {}",
                        self.cfg.service, shadow.explanation
                    );
                }
            }
            if let Some(pins) = &self.cfg.pins {
                let fp = guardrails::tool_fingerprint(name, description, &schema);
                match pins.check(&self.cfg.service, name, &fp) {
                    Ok(crate::pins::PinState::Changed { .. }) => {
                        why.get_or_insert_with(|| format!(
                            "its definition changed since it was pinned; if the change is expected, run `flowlink-proxy pins accept --service {} --tool {name}`.",
                            self.cfg.service
                        ));
                    }
                    Ok(_) => {}
                    Err(e) => {
                        // Fail closed: a tool that cannot be checked is not offered.
                        why.get_or_insert_with(|| format!("its pin could not be checked ({e})."));
                    }
                }
            }
            match why {
                Some(w) => {
                    if !self.quarantined.contains_key(name) {
                        eprintln!(
                            "flowlink-proxy: tool `{name}` of `{}` quarantined: {w}",
                            self.cfg.service
                        );
                    }
                    self.quarantined.insert(name.to_owned(), w);
                }
                None => {
                    self.quarantined.remove(name);
                }
            }
        }
        tools.retain(|t| {
            let name = t.get("name").and_then(Value::as_str).unwrap_or("");
            !self.quarantined.contains_key(name)
                && !self
                    .policy
                    .policy
                    .is_hidden(&agent, &self.cfg.service, name, &self.cfg.labels)
        });
        if tools.len() != before {
            tracing::debug!(
                hidden = before - tools.len(),
                "tools hidden by policy or guardrails"
            );
            msg.set("result", &result);
        }
    }
}

/// Walks a tool result, redacting secrets in every string except base64 payloads (`data`,
/// `blob`), and collecting the ids of findings.
fn guard_strings(
    v: &mut Value,
    redacted: &mut Vec<&'static str>,
    steering: &mut Vec<&'static str>,
    depth: usize,
) {
    if depth > 64 {
        return;
    }
    match v {
        Value::String(s) => {
            if let Some((clean, findings)) = guardrails::redact_secrets(s) {
                *s = clean;
                redacted.extend(findings.iter().map(|f| f.id));
            }
            steering.extend(guardrails::scan_result_text(s).iter().map(|f| f.id));
        }
        Value::Array(items) => {
            for item in items {
                guard_strings(item, redacted, steering, depth + 1);
            }
        }
        Value::Object(map) => {
            for (k, item) in map.iter_mut() {
                if k != "data" && k != "blob" {
                    guard_strings(item, redacted, steering, depth + 1);
                }
            }
        }
        _ => {}
    }
}

/// Moves the call out of a held approval (which is being dropped).
fn take_held(h: &mut HeldApproval) -> (Message, Id, CallTrack) {
    let message = std::mem::replace(&mut h.message, Message::notification("", None));
    let track = std::mem::replace(
        &mut h.track,
        CallTrack {
            audit_id: String::new(),
            received: Instant::now(),
        },
    );
    (message, h.client_id.clone(), track)
}

fn quarantined(tool: &str, why: &str) -> decide::Decided {
    decide::Decided {
        plan: Plan::Refuse {
            message: format!(
                "FlowLink refused `{tool}`: {why} Do not call it until the user has reviewed it."
            ),
        },
        verdict: Verdict::Block,
        action: "block",
        rule_id: Some("guardrail".to_owned()),
        reason: format!("tool `{tool}` is quarantined: {why}"),
        risk: None,
        findings: Vec::new(),
    }
}

/// The decision for a call whose placeholders cannot be replaced.
fn placeholder_refused(
    refusal: crate::secrets::runtime::PlaceholderRefusal,
    risk: Option<u8>,
    findings: Vec<flowlink_proto::audit::FindingRecord>,
) -> decide::Decided {
    decide::Decided {
        plan: Plan::Refuse {
            message: refusal.message,
        },
        verdict: Verdict::Block,
        action: "block",
        rule_id: Some("secrets".to_owned()),
        reason: refusal.reason,
        risk,
        findings,
    }
}

/// A record about to be written for a call that is refused after all.
fn refuse_record(record: &mut ToolCallRecord, reason: &str) {
    record.verdict = Verdict::Block;
    "block".clone_into(&mut record.action);
    record.rule_id = Some("secrets".to_owned());
    reason.clone_into(&mut record.reason);
    record.outcome = Outcome::NotForwarded;
}

fn malformed(why: &str) -> decide::Decided {
    decide::Decided {
        plan: Plan::Refuse {
            message: format!("FlowLink refused this tool call because it is malformed: {why}."),
        },
        verdict: Verdict::Error,
        action: "block",
        rule_id: None,
        reason: format!("malformed tools/call: {why}"),
        risk: None,
        findings: Vec::new(),
    }
}
