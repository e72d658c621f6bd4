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
use super::child::{self, ServerProcess, SpawnError};
use super::decide::shorten;
use super::decide::{self, CallFacts, Plan, PolicyState};
use super::framing::{Line, LineReader, sniff_id};
use crate::audit::{AuditStore, now_us};
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
}

/// Where one frame's output goes; batches are re-assembled from it.
#[derive(Default)]
struct FrameOut {
    to_server: Vec<Message>,
    to_client: Vec<Message>,
}

/// Runs one relay session until the client goes away (or a signal arrives) and the server has
/// been stopped. Returns the exit code the proxy should exit with: the server's.
pub async fn run<R, W>(cfg: RelayConfig, client_in: R, client_out: W) -> Result<i32, RelayError>
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
    ));
    if let Some(path) = &cfg.policy_file {
        super::policy_watch::spawn(path.clone(), cfg.policy_poll_interval, events_tx.clone());
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
        server: None,
        backlog: Vec::new(),
        generation: 0,
        restarts: VecDeque::new(),
        shutting_down: false,
        client_gone: false,
        last_status: None,
        client_writer: Some(client_writer),
        quarantined: HashMap::new(),
        cfg,
    };
    router.start_server()?;
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
                Event::RestartDue => {
                    if !self.shutting_down
                        && let Some(code) = self.restart_server()
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

    fn start_server(&mut self) -> Result<(), SpawnError> {
        let (process, pipes) = ServerProcess::spawn(&self.cfg.command)?;
        self.generation += 1;
        let generation = self.generation;
        tracing::debug!(pid = ?process.id(), generation, "MCP server started");

        // Writer: stdin closes when the queue's sender is dropped.
        let (tx, mut rx) = unbounded_channel::<Outgoing>();
        let mut stdin = pipes.stdin;
        tokio::spawn(async move {
            while let Some(first) = rx.recv().await {
                let mut item = Some(first);
                let mut ok = true;
                while let Some(out) = item.take() {
                    let bytes = match out {
                        Outgoing::Bytes(b) => Some(b),
                        Outgoing::Gated(f) => f.await,
                    };
                    if let Some(b) = bytes {
                        ok = stdin.write_all(&b).await.is_ok();
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
            return Some(code);
        }
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
    fn restart_server(&mut self) -> Option<i32> {
        if let Err(e) = self.start_server() {
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
        self.session.ended_at_us = Some(now_us());
        if let Some(st) = &self.last_status {
            self.session.last_exit = Some(child::describe(st));
        }
        self.store.record_session(self.session.clone());
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

        let (tool, arguments, decided) = match &params {
            Ok(Some(p)) => match (p.get("name").and_then(Value::as_str), p.get("arguments")) {
                (Some(name), args) if self.quarantined.contains_key(name) => (
                    name.to_owned(),
                    args.cloned().unwrap_or(Value::Null),
                    quarantined(name, &self.quarantined[name]),
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

        let audit_id = uuid::Uuid::now_v7().to_string();
        let record = ToolCallRecord {
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
                || matches!(decided.plan, Plan::AskUser { .. })
            {
                Outcome::Pending
            } else {
                Outcome::NotForwarded
            },
            finished_at_us: None,
            duration_us: None,
            error: None,
            risk: decided.risk,
            findings: decided.findings.clone(),
        };
        let track = CallTrack { audit_id, received };

        match decided.plan {
            Plan::Forward => {
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
                let mut msg = msg;
                msg.set_id(Id::number(up));
                let bytes = msg.to_line();
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
            Plan::AskUser { prompt, timeout } => {
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
            let up = self.take_upstream_id();
            self.upstream_by_client_id
                .insert(held.client_id.clone(), up);
            let mut msg = held.message;
            msg.set_id(Id::number(up));
            let bytes = msg.to_line();
            let recorded = held.recorded;
            let events = self.events.clone();
            self.upstream.insert(
                up,
                UpstreamOrigin::Client {
                    client_id: held.client_id,
                    method: mcp::TOOLS_CALL.to_owned(),
                    call: Some(held.track),
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
        self.store
            .record_outcome(&t.audit_id, outcome, now_us(), duration, error);
    }

    // ---- server → client ------------------------------------------------------------------

    fn on_server_line(&mut self, line: Line) {
        let bytes = match line {
            Line::Data(b) => b,
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
                let preview = String::from_utf8_lossy(&bytes[..bytes.len().min(200)]).into_owned();
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
