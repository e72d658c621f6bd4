//! Load benchmark of the proxy ↔ control-plane link.
//!
//! ```sh
//! FLOWLINK_TEST_POSTGRES_URL=postgres://postgres@127.0.0.1:5432/test \
//!   cargo bench -p flowlink-control --bench link_load
//! ```
//!
//! The control plane runs in-process on 127.0.0.1 (its own 2-worker runtime, like the real
//! binary on the 2-core reference machine), on a fresh database per part. Fake proxies speak the
//! real wire (`flowlink_proto::link`): enrolment over HTTP, then `hello` → `challenge` → `auth`
//! (Ed25519 over `auth_message`) → `welcome` → `policy`.
//!
//! 1. `ingest`: N enrolled proxies (default 4) each stream `audit_batch`es of realistic
//!    `tool_call` records (500 events, the server's `max_batch`) with W batches in flight
//!    (default 2); reports events/s acknowledged (an ack is sent only after the commit) over T
//!    seconds after a warm-up, and checks afterwards that the database holds exactly the events
//!    acknowledged. SQLite and PostgreSQL.
//! 2. `links`: one control plane on SQLite with `link_heartbeat_secs = 1` holds L links (default
//!    1,000: 250 devices × 4 services, as one proxy per MCP server) opened by a second process
//!    (this binary re-executed as the client); each link sends a heartbeat every second. Reports
//!    the server's VmRSS before and with the links, per link, and the server's CPU time over
//!    30 s of heartbeats (this process is then the server alone).
//! 3. `approvals`: one proxy link; per round the proxy sends an `approval_request`, and on its
//!    `approval_accepted` the bench, as the organisation's owner signed in with a session cookie
//!    and CSRF token, POSTs the decision to the API; the round ends when the proxy receives the
//!    `approval_decision`. p50/p99 over R rounds (default 300) after 20 warm-up rounds, with the
//!    API call's own share. SQLite and PostgreSQL.
//!
//! Settings (environment): `FLOWLINK_BENCH_PARTS` (default `links,ingest,approvals`),
//! `FLOWLINK_BENCH_ENGINES` (default `sqlite,postgres`; parts 1 and 3), `FLOWLINK_BENCH_PROXIES`
//! (4), `FLOWLINK_BENCH_WINDOW` (2), `FLOWLINK_BENCH_BATCH` (500), `FLOWLINK_BENCH_SECS` (10),
//! `FLOWLINK_BENCH_WARMUP_SECS` (2), `FLOWLINK_BENCH_LINKS` (1000),
//! `FLOWLINK_BENCH_LINKS_PER_DEVICE` (4), `FLOWLINK_BENCH_IDLE_SECS` (30),
//! `FLOWLINK_BENCH_ROUNDS` (300).

#[path = "../tests/support/mod.rs"]
mod support;

use std::io::{BufRead, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use ed25519_dalek::{Signer, SigningKey};
use flowlink_control::store::Backend;
use flowlink_proto::audit::{Outcome, PolicySource, ToolCallRecord, Verdict};
use flowlink_proto::link::{
    ApprovalRequest, AuditBatch, AuditEnvelope, AuthProof, ControlMessage, Heartbeat, Hello,
    LINK_VERSION, ProxyMessage, ServerHealth, ServerState, args_digest, auth_message,
};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use support::{TestClient, TestServer};
use tokio_tungstenite::tungstenite::Message;

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

const CHILD_ENV: &str = "FLOWLINK_LINK_BENCH_CHILD";

fn env_num(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("{name}=`{v}` is not a whole number")),
        Err(_) => default,
    }
}

fn env_usize(name: &str, default: u64) -> usize {
    usize::try_from(env_num(name, default).max(1)).unwrap_or(1)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn random32() -> [u8; 32] {
    let mut b = [0u8; 32];
    getrandom::fill(&mut b).expect("random");
    b
}

/// CPU time (user + system) of a process from `/proc/<pid>/stat` (clock ticks of 1/100 s).
fn cpu_of(pid: &str) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(Duration::from_millis((utime + stime) * 10))
}

/// Resident memory of this process in KiB (`VmRSS` of `/proc/self/status`).
fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(0)
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn percentile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

/// Every device is enrolled from 127.0.0.1: lift the per-address sign-in/enrolment throttle.
fn bench_config(c: &mut flowlink_control::config::Config) {
    c.login_attempts_per_minute_per_ip = 1_000_000;
}

// ---------------------------------------------------------------------------------------------
// A fake proxy (as in tests/link.rs).

/// An enrolled device as a proxy keeps it.
#[derive(Clone)]
struct Device {
    id: String,
    key: SigningKey,
}

/// Creates an enrolment token for `uses` devices.
async fn enrolment_token(owner: &TestClient, uses: usize) -> String {
    let (status, created) = owner
        .post(
            "/api/v1/orgs/acme/enrollment-tokens",
            json!({"name": "bench", "uses": uses}),
        )
        .await;
    assert_eq!(status, 201, "token: {created}");
    created["token"].as_str().expect("token").to_string()
}

async fn enroll(client: &TestClient, token: &str, n: usize) -> Device {
    let key = SigningKey::from_bytes(&random32());
    let (status, body) = client
        .post(
            "/api/v1/enroll",
            json!({
                "token": token,
                "device_name": format!("bench-{n}"),
                "hostname": format!("bench-{n}.example"),
                "signing_key": STANDARD.encode(key.verifying_key().to_bytes()),
                "box_key": STANDARD.encode(random32()),
                "labels": {"env": "bench"},
            }),
        )
        .await;
    assert_eq!(status, 201, "enrol: {body}");
    Device {
        id: body["device_id"].as_str().expect("device_id").to_string(),
        key,
    }
}

async fn enroll_many(server: &TestServer, owner: &TestClient, n: usize) -> Vec<Device> {
    let token = enrolment_token(owner, n).await;
    let client = server.client();
    let mut devices = Vec::with_capacity(n);
    // A few at a time: enrolment is an HTTP request and a transaction each.
    for start in (0..n).step_by(16) {
        let batch = (start..n.min(start + 16)).map(|i| enroll(&client, &token, i));
        devices.extend(futures_util::future::join_all(batch).await);
    }
    devices
}

async fn send(ws: &mut Ws, m: &ProxyMessage) -> Result<(), String> {
    let text = serde_json::to_string(m).map_err(|e| e.to_string())?;
    ws.send(Message::text(text))
        .await
        .map_err(|e| e.to_string())
}

/// The next text frame as a control message.
async fn recv(ws: &mut Ws, wait: Duration) -> Result<ControlMessage, String> {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Err(_) => return Err("no message in time".into()),
            Ok(Some(Ok(Message::Text(t)))) => {
                return serde_json::from_str(t.as_str()).map_err(|e| e.to_string());
            }
            Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => continue,
            Ok(other) => return Err(format!("the link closed: {other:?}")),
        }
    }
}

/// Opens an authenticated link: hello, challenge, auth, welcome, policy.
async fn connect(
    addr: &str,
    public_url: &str,
    device: &Device,
    service: &str,
) -> Result<Ws, String> {
    // `FLOWLINK_BENCH_NODELAY=1` sets TCP_NODELAY on the proxy's socket (the real proxy does
    // not, as of this bench).
    let nodelay = env_num("FLOWLINK_BENCH_NODELAY", 0) == 1;
    let (mut ws, _) = tokio_tungstenite::connect_async_with_config(
        format!("ws://{addr}/api/v1/link"),
        None,
        nodelay,
    )
    .await
    .map_err(|e| e.to_string())?;
    send(
        &mut ws,
        &ProxyMessage::Hello(Hello {
            version: LINK_VERSION,
            device_id: device.id.clone(),
            proxy_version: "0.1.0-bench".into(),
            service: service.to_string(),
            pid: std::process::id(),
        }),
    )
    .await?;
    let wait = Duration::from_secs(30);
    let nonce = match recv(&mut ws, wait).await? {
        ControlMessage::Challenge(c) => c.nonce,
        other => return Err(format!("expected a challenge, got {other:?}")),
    };
    let sig = device
        .key
        .sign(&auth_message(&device.id, &nonce, public_url));
    send(
        &mut ws,
        &ProxyMessage::Auth(AuthProof {
            signature: STANDARD.encode(sig.to_bytes()),
        }),
    )
    .await?;
    match recv(&mut ws, wait).await? {
        ControlMessage::Welcome(_) => {}
        other => return Err(format!("expected welcome, got {other:?}")),
    }
    match recv(&mut ws, wait).await? {
        ControlMessage::Policy(_) => {}
        other => return Err(format!("expected a policy push, got {other:?}")),
    }
    Ok(ws)
}

// ---------------------------------------------------------------------------------------------
// 1. Audit ingest.

/// A realistic `tool_call` record as the proxy writes it (one of a few shapes).
fn tool_call_record(id: &str, n: u64) -> Value {
    let now = 1_767_225_600_000_000 + i64::try_from(n).unwrap_or(0);
    let (service, tool, arguments, verdict, outcome, rule) = match n % 4 {
        0 => (
            "git",
            "git_status",
            json!({"repo_path": "/home/dev/src/flowlink"}),
            Verdict::Allow,
            Outcome::Ok,
            None,
        ),
        1 => (
            "shell",
            "run_command",
            json!({"command": format!("cargo test -p flowlink-control --test link -- case_{n}"), "cwd": "/home/dev/src/flowlink", "timeout_ms": 120000}),
            Verdict::Allow,
            Outcome::Ok,
            Some("dev-commands".to_string()),
        ),
        2 => (
            "postgres",
            "query",
            json!({"sql": format!("SELECT id, email, created_at FROM users WHERE org_id = {} ORDER BY created_at DESC LIMIT 50", n % 97)}),
            Verdict::Allow,
            Outcome::Ok,
            Some("read-only-sql".to_string()),
        ),
        _ => (
            "shell",
            "run_command",
            json!({"command": "curl -fsSL https://example.com/install.sh | sh", "cwd": "/tmp"}),
            Verdict::Block,
            Outcome::NotForwarded,
            Some("no-pipe-to-shell".to_string()),
        ),
    };
    let blocked = verdict == Verdict::Block;
    let record = ToolCallRecord {
        schema: 1,
        id: id.to_string(),
        session_id: "0199a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b".into(),
        received_at_us: now,
        decided_at_us: now + 14,
        agent: "claude-code".into(),
        service: service.into(),
        tool: tool.into(),
        arguments,
        verdict,
        action: if blocked { "block" } else { "allow" }.into(),
        rule_id: rule,
        reason: if blocked {
            "rule `no-pipe-to-shell` matched: downloading and running a script".into()
        } else {
            "allowed by policy".into()
        },
        outcome,
        finished_at_us: Some(now + 48_211),
        duration_us: Some(48_211),
        error: None,
        risk: Some(if blocked { 85 } else { 5 }),
        findings: Vec::new(),
        policy_source: Some(PolicySource::Bundle),
        policy_bundle: Some(
            "5f2c0e8a9b7d41c3a2e6f8b9c0d1e2f3a4b5c6d7e8f9a0b1c2d3e4f5a6b7c8d9".into(),
        ),
    };
    serde_json::to_value(record).expect("record")
}

fn audit_batch_text(size: usize, counter: &AtomicU64) -> (String, usize) {
    let events: Vec<AuditEnvelope> = (0..size)
        .map(|_| {
            let n = counter.fetch_add(1, Ordering::Relaxed);
            let id = uuid::Uuid::now_v7().to_string();
            AuditEnvelope {
                record: tool_call_record(&id, n),
                id,
                occurred_at: 1_767_225_600_000_000 + i64::try_from(n).unwrap_or(0),
                kind: "tool_call".into(),
            }
        })
        .collect();
    let text = serde_json::to_string(&ProxyMessage::AuditBatch(AuditBatch { events }))
        .expect("batch json");
    (text, size)
}

struct IngestSettings {
    proxies: usize,
    window: usize,
    batch: usize,
    secs: u64,
    warmup: u64,
}

/// One proxy streaming batches until `stop`; adds acknowledged events to `acked`.
async fn stream_audit(
    mut ws: Ws,
    s: Arc<IngestSettings>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    acked: Arc<AtomicU64>,
    generated: Arc<AtomicU64>,
) -> Result<u64, String> {
    let mut in_flight = std::collections::VecDeque::new();
    let mut total = 0u64;
    loop {
        while in_flight.len() < s.window && !stop.load(Ordering::Relaxed) {
            let (text, n) = audit_batch_text(s.batch, &generated);
            ws.send(Message::text(text))
                .await
                .map_err(|e| e.to_string())?;
            in_flight.push_back(n);
        }
        let Some(expected) = in_flight.pop_front() else {
            break;
        };
        match recv(&mut ws, Duration::from_secs(60)).await? {
            ControlMessage::AuditAck(ack) => {
                if ack.ids.len() != expected {
                    return Err(format!("{} of {expected} acknowledged", ack.ids.len()));
                }
                total += expected as u64;
                acked.fetch_add(expected as u64, Ordering::Relaxed);
            }
            other => return Err(format!("expected an ack, got {other:?}")),
        }
    }
    let _ = ws.close(None).await;
    Ok(total)
}

fn ingest(
    server_rt: &tokio::runtime::Runtime,
    load_rt: &tokio::runtime::Runtime,
    engine: Backend,
) -> String {
    let s = Arc::new(IngestSettings {
        proxies: env_usize("FLOWLINK_BENCH_PROXIES", 4),
        window: env_usize("FLOWLINK_BENCH_WINDOW", 2),
        batch: env_usize("FLOWLINK_BENCH_BATCH", 500),
        secs: env_num("FLOWLINK_BENCH_SECS", 10).max(1),
        warmup: env_num("FLOWLINK_BENCH_WARMUP_SECS", 2),
    });
    let srv = server_rt.block_on(TestServer::start_with(engine, bench_config));
    let devices = load_rt.block_on(async {
        let owner = srv.owner().await;
        enroll_many(&srv, &owner, s.proxies).await
    });
    let addr = srv.addr.to_string();
    let public_url = srv.config.public_url.clone();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let acked = Arc::new(AtomicU64::new(0));
    let generated = Arc::new(AtomicU64::new(0));
    let sample = {
        let c = AtomicU64::new(0);
        audit_batch_text(1, &c).0
    };
    let tasks: Vec<_> = load_rt.block_on(async {
        let mut links = Vec::new();
        for (i, d) in devices.iter().enumerate() {
            let ws = connect(&addr, &public_url, d, &format!("svc{i}"))
                .await
                .expect("link");
            links.push(ws);
        }
        links
            .into_iter()
            .map(|ws| {
                tokio::spawn(stream_audit(
                    ws,
                    s.clone(),
                    stop.clone(),
                    acked.clone(),
                    generated.clone(),
                ))
            })
            .collect()
    });
    let cpu0 = cpu_of("self");
    std::thread::sleep(Duration::from_secs(s.warmup));
    let a0 = acked.load(Ordering::Relaxed);
    let t0 = Instant::now();
    let cpu1 = cpu_of("self");
    std::thread::sleep(Duration::from_secs(s.secs));
    let a1 = acked.load(Ordering::Relaxed);
    let elapsed = t0.elapsed();
    let cpu2 = cpu_of("self");
    stop.store(true, Ordering::Relaxed);
    let mut total = 0u64;
    let mut failures = Vec::new();
    load_rt.block_on(async {
        for t in tasks {
            match t.await.expect("task") {
                Ok(n) => total += n,
                Err(e) => failures.push(e),
            }
        }
    });
    let stored: i64 = server_rt.block_on(async {
        sqlx::query_scalar(
            "SELECT COUNT(*) FROM audit_events WHERE actor_kind = 'device' AND kind = 'tool_call'",
        )
        .fetch_one(srv.store.pool())
        .await
        .expect("count")
    });
    server_rt.block_on(srv.stop());
    let rate = (a1 - a0) as f64 / elapsed.as_secs_f64();
    let cpu = match (cpu0, cpu1, cpu2) {
        (Some(_), Some(b), Some(c)) => {
            format!(
                ", bench process CPU {:.0} % of one core",
                (c - b).as_secs_f64() / elapsed.as_secs_f64() * 100.0
            )
        }
        _ => String::new(),
    };
    let line = format!(
        "ingest    {:<9} {} proxies × {} batches of {} in flight: {:>8.0} events/s acknowledged over {:.1} s ({} events){}; {} acknowledged in all, {} stored{}; record ≈ {} bytes as JSON; load {}",
        engine.as_str(),
        s.proxies,
        s.window,
        s.batch,
        rate,
        elapsed.as_secs_f64(),
        a1 - a0,
        cpu,
        total,
        stored,
        if failures.is_empty() {
            String::new()
        } else {
            format!(", FAILURES: {failures:?}")
        },
        sample.len(),
        load_average(),
    );
    assert_eq!(
        u64::try_from(stored).unwrap_or(0),
        total,
        "every acknowledged event is stored, once"
    );
    line
}

// ---------------------------------------------------------------------------------------------
// 2. Many links with heartbeats: the client side runs in a second process.

/// The clients' process: reads one JSON line (address, public URL, links) from stdin, opens
/// the links, prints `ready <open> <failed>`, heartbeats every `heartbeat_ms` until stdin
/// closes, then prints `done <heartbeats> <links lost>`.
fn child() {
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line).expect("stdin");
    let spec: Value = serde_json::from_str(&line).expect("spec");
    let addr = spec["addr"].as_str().expect("addr").to_string();
    let public_url = spec["public_url"].as_str().expect("url").to_string();
    let heartbeat = Duration::from_millis(spec["heartbeat_ms"].as_u64().expect("heartbeat"));
    let links: Vec<(Device, String)> = spec["links"]
        .as_array()
        .expect("links")
        .iter()
        .map(|l| {
            let raw = STANDARD
                .decode(l["key"].as_str().expect("key"))
                .expect("base64");
            let key = SigningKey::from_bytes(&raw.as_slice().try_into().expect("32 bytes"));
            (
                Device {
                    id: l["device"].as_str().expect("device").to_string(),
                    key,
                },
                l["service"].as_str().expect("service").to_string(),
            )
        })
        .collect();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let opened = Arc::new(tokio::sync::Semaphore::new(32));
        let beats = Arc::new(AtomicU64::new(0));
        let lost = Arc::new(AtomicU64::new(0));
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel::<bool>(links.len().max(1));
        let n = links.len();
        for (i, (device, service)) in links.into_iter().enumerate() {
            let (addr, public_url) = (addr.clone(), public_url.clone());
            let (opened, beats, lost) = (opened.clone(), beats.clone(), lost.clone());
            let (ready_tx, mut stop_rx) = (ready_tx.clone(), stop_rx.clone());
            tokio::spawn(async move {
                let ws = {
                    let _permit = opened.acquire().await.expect("semaphore");
                    connect(&addr, &public_url, &device, &service).await
                };
                let mut ws = match ws {
                    Ok(ws) => {
                        let _ = ready_tx.send(true).await;
                        ws
                    }
                    Err(e) => {
                        eprintln!("link {i}: {e}");
                        let _ = ready_tx.send(false).await;
                        return;
                    }
                };
                // Spread the heartbeats over the interval, as independent proxies would be.
                let offset = heartbeat.mul_f64(i as f64 / n as f64);
                let mut tick =
                    tokio::time::interval_at(tokio::time::Instant::now() + offset, heartbeat);
                let hb = ProxyMessage::Heartbeat(Heartbeat {
                    servers: vec![ServerHealth {
                        service: service.clone(),
                        state: ServerState::Up,
                        restarts_last_hour: 0,
                        last_error: None,
                    }],
                    outbox_depth: 0,
                    policy: None,
                });
                loop {
                    tokio::select! {
                        _ = stop_rx.changed() => break,
                        _ = tick.tick() => {
                            if send(&mut ws, &hb).await.is_err() {
                                lost.fetch_add(1, Ordering::Relaxed);
                                return;
                            }
                            beats.fetch_add(1, Ordering::Relaxed);
                        }
                        frame = ws.next() => match frame {
                            Some(Ok(_)) => {}
                            _ => {
                                lost.fetch_add(1, Ordering::Relaxed);
                                return;
                            }
                        },
                    }
                }
                let _ = ws.close(None).await;
            });
        }
        drop(ready_tx);
        let (mut ok, mut failed) = (0, 0);
        while ok + failed < n {
            match ready_rx.recv().await {
                Some(true) => ok += 1,
                Some(false) => failed += 1,
                None => break,
            }
        }
        println!("ready {ok} {failed}");
        std::io::stdout().flush().expect("stdout");
        // Until the parent closes stdin.
        let _ = tokio::task::spawn_blocking(|| {
            let mut rest = String::new();
            let _ = std::io::stdin().lock().read_line(&mut rest);
        })
        .await;
        let _ = stop_tx.send(true);
        tokio::time::sleep(Duration::from_millis(500)).await;
        println!(
            "done {} {}",
            beats.load(Ordering::Relaxed),
            lost.load(Ordering::Relaxed)
        );
        std::io::stdout().flush().expect("stdout");
    });
}

fn links(server_rt: &tokio::runtime::Runtime, load_rt: &tokio::runtime::Runtime) -> Vec<String> {
    let n = env_usize("FLOWLINK_BENCH_LINKS", 1000);
    let per_device = env_usize("FLOWLINK_BENCH_LINKS_PER_DEVICE", 4);
    let idle = env_num("FLOWLINK_BENCH_IDLE_SECS", 30).max(1);
    let srv = server_rt.block_on(TestServer::start_with(Backend::Sqlite, |c| {
        bench_config(c);
        c.link_heartbeat = Duration::from_secs(1);
    }));
    let n_devices = n.div_ceil(per_device);
    let devices = load_rt.block_on(async {
        let owner = srv.owner().await;
        enroll_many(&srv, &owner, n_devices).await
    });
    let spec = json!({
        "addr": srv.addr.to_string(),
        "public_url": srv.config.public_url,
        "heartbeat_ms": 1000,
        "links": (0..n).map(|i| {
            let d = &devices[i / per_device];
            json!({
                "device": d.id,
                "key": STANDARD.encode(d.key.to_bytes()),
                "service": format!("mcp-{}", i % per_device),
            })
        }).collect::<Vec<_>>(),
    });
    drop(devices);
    // Let the enrolment's allocations settle, then the baseline: the server, no links.
    std::thread::sleep(Duration::from_secs(3));
    let rss_before = rss_kib();
    let cpu_idle0 = cpu_of("self");
    std::thread::sleep(Duration::from_secs(5));
    let cpu_idle1 = cpu_of("self");

    let exe = std::env::current_exe().expect("exe");
    let mut child = std::process::Command::new(exe)
        .env(CHILD_ENV, "1")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("client process");
    let child_pid = child.id().to_string();
    let mut stdin = child.stdin.take().expect("stdin");
    writeln!(stdin, "{spec}").expect("spec");
    stdin.flush().expect("flush");
    let mut out = std::io::BufReader::new(child.stdout.take().expect("stdout"));
    let opening = Instant::now();
    let mut ready = String::new();
    out.read_line(&mut ready).expect("ready line");
    let open_time = opening.elapsed();
    let words: Vec<u64> = ready
        .split_whitespace()
        .skip(1)
        .filter_map(|w| w.parse().ok())
        .collect();
    let (open, failed) = (
        words.first().copied().unwrap_or(0),
        words.get(1).copied().unwrap_or(0),
    );
    // Settle: a few heartbeat rounds.
    std::thread::sleep(Duration::from_secs(5));
    let rss_with = rss_kib();
    let cpu0 = cpu_of("self");
    let ccpu0 = cpu_of(&child_pid);
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_secs(idle));
    let cpu1 = cpu_of("self");
    let ccpu1 = cpu_of(&child_pid);
    let elapsed = t0.elapsed();
    let rss_end = rss_kib();
    let fresh: i64 = server_rt.block_on(async {
        sqlx::query_scalar("SELECT COUNT(*) FROM devices WHERE last_seen_at > $1")
            .bind(flowlink_control::store::now_us() - 3_000_000)
            .fetch_one(srv.store.pool())
            .await
            .expect("count")
    });
    drop(stdin);
    let mut done = String::new();
    let _ = out.read_line(&mut done);
    let _ = child.wait();
    server_rt.block_on(srv.stop());
    let pct = |a: Option<Duration>, b: Option<Duration>, over: Duration| match (a, b) {
        (Some(a), Some(b)) => format!(
            "{:.1} % of one core",
            (b - a).as_secs_f64() / over.as_secs_f64() * 100.0
        ),
        _ => "n/a".into(),
    };
    let per_link = (rss_with.saturating_sub(rss_before)) as f64 / open.max(1) as f64;
    vec![
        format!(
            "links     sqlite    {open} links open ({failed} failed) from {n_devices} devices in {:.1} s, heartbeat 1 s",
            open_time.as_secs_f64()
        ),
        format!(
            "links     sqlite    server VmRSS before {:.1} MiB, with the links {:.1} MiB (after {} s more: {:.1} MiB) → {:.1} KiB per link",
            rss_before as f64 / 1024.0,
            rss_with as f64 / 1024.0,
            idle,
            rss_end as f64 / 1024.0,
            per_link
        ),
        format!(
            "links     sqlite    server CPU without links {}; with {open} links heartbeating {} over {:.0} s (clients' process: {}); devices seen in the last 3 s: {fresh}/{n_devices}; client says `{}`; load {}",
            pct(cpu_idle0, cpu_idle1, Duration::from_secs(5)),
            pct(cpu0, cpu1, elapsed),
            elapsed.as_secs_f64(),
            pct(ccpu0, ccpu1, elapsed),
            done.trim(),
            load_average(),
        ),
    ]
}

// ---------------------------------------------------------------------------------------------
// 3. Approval round trip.

fn approvals(
    server_rt: &tokio::runtime::Runtime,
    load_rt: &tokio::runtime::Runtime,
    engine: Backend,
) -> String {
    let rounds = env_usize("FLOWLINK_BENCH_ROUNDS", 300);
    let warmup = 20;
    let srv = server_rt.block_on(TestServer::start_with(engine, bench_config));
    let addr = srv.addr.to_string();
    let public_url = srv.config.public_url.clone();
    let (total, api, to_accepted, to_decision) = load_rt.block_on(async {
        let owner = srv.owner().await;
        let device = enroll_many(&srv, &owner, 1).await.remove(0);
        let mut ws = connect(&addr, &public_url, &device, "postgres")
            .await
            .expect("link");
        let mut total = Vec::with_capacity(rounds);
        let mut api = Vec::with_capacity(rounds);
        let mut to_accepted = Vec::with_capacity(rounds);
        let mut to_decision = Vec::with_capacity(rounds);
        for round in 0..warmup + rounds {
            let args = json!({"sql": format!("DELETE FROM sessions WHERE id = {round}")});
            let call_ref = format!("call-{round}");
            let req = ProxyMessage::ApprovalRequest(Box::new(ApprovalRequest {
                call_ref: call_ref.clone(),
                agent: "claude-code".into(),
                user: "dev".into(),
                service: "postgres".into(),
                tool: "query".into(),
                args_digest: args_digest(&args),
                arguments: args,
                rule_id: Some("prod-writes".into()),
                message: Some("writes to production need a DBA".into()),
                reason: "rule `prod-writes` matched".into(),
                risk: 70,
                findings: Vec::new(),
                policy: None,
                approvers: Vec::new(),
                approvals_needed: 1,
                timeout_secs: 600,
            }));
            let t0 = Instant::now();
            send(&mut ws, &req).await.expect("send request");
            let id = loop {
                match recv(&mut ws, Duration::from_secs(10))
                    .await
                    .expect("accepted")
                {
                    ControlMessage::ApprovalAccepted(a) if a.call_ref == call_ref => {
                        break a.request_id;
                    }
                    ControlMessage::Policy(_) => continue,
                    other => panic!("expected approval_accepted, got {other:?}"),
                }
            };
            let accepted = t0.elapsed();
            let t_api = Instant::now();
            let (status, body) = owner
                .post(
                    &format!("/api/v1/orgs/acme/approvals/{id}/decision"),
                    json!({"decision": "approve"}),
                )
                .await;
            let api_time = t_api.elapsed();
            assert_eq!(status, 200, "decision: {body}");
            loop {
                match recv(&mut ws, Duration::from_secs(10))
                    .await
                    .expect("decision")
                {
                    ControlMessage::ApprovalDecision(d) if d.call_ref == call_ref => break,
                    ControlMessage::Policy(_) => continue,
                    other => panic!("expected approval_decision, got {other:?}"),
                }
            }
            let t = t0.elapsed();
            if round >= warmup {
                total.push(t);
                api.push(api_time);
                to_accepted.push(accepted);
                to_decision.push(t.saturating_sub(accepted + api_time));
            }
        }
        let _ = ws.close(None).await;
        (total, api, to_accepted, to_decision)
    });
    server_rt.block_on(srv.stop());
    let mut total = total;
    let mut api = api;
    let (mut to_accepted, mut to_decision) = (to_accepted, to_decision);
    total.sort_unstable();
    api.sort_unstable();
    to_accepted.sort_unstable();
    to_decision.sort_unstable();
    format!(
        "approval  {:<9} {rounds} rounds: request → decision p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms; parts (p50/p99): request → accepted {:.2}/{:.2} ms, API POST {:.2}/{:.2} ms, POST answered → decision {:.2}/{:.2} ms; nodelay {}; load {}",
        engine.as_str(),
        ms(percentile(&total, 0.5)),
        ms(percentile(&total, 0.99)),
        ms(*total.last().unwrap_or(&Duration::ZERO)),
        ms(percentile(&to_accepted, 0.5)),
        ms(percentile(&to_accepted, 0.99)),
        ms(percentile(&api, 0.5)),
        ms(percentile(&api, 0.99)),
        ms(percentile(&to_decision, 0.5)),
        ms(percentile(&to_decision, 0.99)),
        env_num("FLOWLINK_BENCH_NODELAY", 0),
        load_average(),
    )
}

fn main() {
    if std::env::var_os(CHILD_ENV).is_some() {
        child();
        return;
    }
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    // `links` first: it reads the process's resident memory, which the other parts inflate.
    let parts =
        std::env::var("FLOWLINK_BENCH_PARTS").unwrap_or_else(|_| "links,ingest,approvals".into());
    let engines: Vec<Backend> = std::env::var("FLOWLINK_BENCH_ENGINES")
        .unwrap_or_else(|_| "sqlite,postgres".into())
        .split(',')
        .map(|e| match e.trim() {
            "sqlite" => Backend::Sqlite,
            "postgres" => Backend::Postgres,
            other => panic!("FLOWLINK_BENCH_ENGINES: unknown engine `{other}`"),
        })
        .collect();
    let server_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("server")
        .enable_all()
        .build()
        .expect("server runtime");
    let load_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("load")
        .enable_all()
        .build()
        .expect("load runtime");
    println!("link_load: parts {parts}; load average {}", load_average());
    let mut lines = Vec::new();
    for part in parts.split(',').map(str::trim) {
        match part {
            "ingest" => {
                for e in &engines {
                    let l = ingest(&server_rt, &load_rt, *e);
                    println!("{l}");
                    lines.push(l);
                }
            }
            "links" => {
                for l in links(&server_rt, &load_rt) {
                    println!("{l}");
                    lines.push(l);
                }
            }
            "approvals" => {
                for e in &engines {
                    let l = approvals(&server_rt, &load_rt, *e);
                    println!("{l}");
                    lines.push(l);
                }
            }
            other => panic!("FLOWLINK_BENCH_PARTS: unknown part `{other}`"),
        }
    }
    println!("\nsummary:");
    for l in lines {
        println!("{l}");
    }
}
