//! How the audit trail's pages hold up over a million events, per database engine.
//!
//! ```sh
//! FLOWLINK_TEST_POSTGRES_URL=postgres://postgres@127.0.0.1:5432/test \
//!   cargo bench -p flowlink-control --bench audit_pages
//! ```
//!
//! For SQLite and then PostgreSQL (a fresh schema of `FLOWLINK_TEST_POSTGRES_URL`), starts the
//! control plane in-process with the organisation `acme`, ships N events (default 1,000,000)
//! the way proxies do (`Store::ingest_device_audit`, batches of 5,000 in one transaction each,
//! from 20 devices: 99% tool calls with realistic spreads of agent, service, tool, decision and
//! risk over 30 days, 1% people's events), and then measures, each 15 times after a warm-up:
//!
//! - the store query of one page (`Store::list_audit`, 51 rows: a page of 50 and the look-ahead);
//! - the whole page as a browser gets it (`GET /ui/orgs/acme/audit?…`: authorisation, the
//!   query, actor names, rendering), over HTTP on 127.0.0.1;
//!
//! for the first page, a page at a deep cursor (past 90% of the trail), each facet filter, the
//! command history, a time window, a combination and the free-text search, and the rate at
//! which an export walks a filter (batches of 1,000). PostgreSQL is `ANALYZE`d after seeding,
//! as autovacuum would; SQLite runs with no statistics, as the server does.
//!
//! Settings (environment): `FLOWLINK_BENCH_AUDIT_ROWS` (default 1000000),
//! `FLOWLINK_BENCH_ENGINES` (default `sqlite,postgres`).

#[path = "../tests/support/mod.rs"]
mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use flowlink_control::auth::secret::sha256_hex;
use flowlink_control::store::{
    AuditFamily, AuditFilter, Backend, Device, EnrollmentToken, NewDevice, Store, now_us,
};
use flowlink_proto::link::AuditEnvelope;
use serde_json::json;
use support::{TestClient, TestServer};

const DEVICES: usize = 20;
const AGENTS: [&str; 5] = ["claude-code", "cursor", "codex", "copilot", "aider"];
const SERVICES: [&str; 10] = [
    "shell", "git", "db", "fs", "github", "jira", "slack", "k8s", "aws", "browser",
];
const TOOLS: [&str; 5] = ["run", "read", "write", "list", "delete"];
const ROUNDS: usize = 15;
const BATCH: usize = 5000;

fn env_num(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("{name}=`{v}` is not a whole number")),
        Err(_) => default,
    }
}

/// xorshift64*: reproducible data without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

async fn enrol(store: &Store, org_id: &str, i: usize) -> Device {
    let name = format!("host-{i:02}");
    let hash = sha256_hex(&format!("fle_bench_{i}"));
    let now = now_us();
    let token = EnrollmentToken {
        id: uuid::Uuid::now_v7().to_string(),
        org_id: org_id.to_string(),
        name: name.clone(),
        labels: BTreeMap::new(),
        uses_allowed: 1,
        uses: 0,
        created_by: "bench".into(),
        created_at: now,
        expires_at: now + 3_600_000_000,
        device_id: None,
        revoked_at: None,
    };
    store
        .create_enrollment_token(&token, &hash)
        .await
        .expect("token");
    let labels = BTreeMap::from([("user".to_string(), format!("user{i:02}"))]);
    let mut key = [0u8; 32];
    key[0] = i as u8;
    store
        .enroll(
            &hash,
            &NewDevice {
                name: &name,
                hostname: &name,
                labels: &labels,
                signing_key: key,
                box_key: key,
            },
        )
        .await
        .expect("enroll")
        .expect("accepted")
        .device
}

/// One shipped event at `at`.
fn event(rng: &mut Rng, at: i64) -> AuditEnvelope {
    let id = uuid::Uuid::now_v7().to_string();
    let r = rng.below(1000);
    // 1% sessions (a proxy's relay session), the rest tool calls.
    if r < 10 {
        return AuditEnvelope {
            id: id.clone(),
            occurred_at: at,
            kind: "session".into(),
            record: json!({"schema": 1, "id": id, "service": SERVICES[rng.below(10) as usize],
                "command": ["npx", "server"], "started_at_us": at, "client_name": AGENTS[rng.below(5) as usize],
                "restarts": 0}),
        };
    }
    let verdict = match rng.below(1000) {
        0..=899 => "allow",
        900..=949 => "block",
        950..=969 => "approved",
        970..=979 => "denied",
        980..=989 => "rate_limited",
        990..=994 => "timed_out",
        995..=998 => "pending",
        _ => "error",
    };
    let risk = match rng.below(100) {
        0..=59 => rng.below(10),
        60..=89 => 10 + rng.below(40),
        90..=96 => 50 + rng.below(30),
        _ => 80 + rng.below(21),
    };
    let service = SERVICES[rng.below(10) as usize];
    let tool = TOOLS[rng.below(5) as usize];
    let n = rng.below(100_000);
    AuditEnvelope {
        id: id.clone(),
        occurred_at: at,
        kind: "tool_call".into(),
        record: json!({
            "schema": 1, "id": id, "session_id": "s", "received_at_us": at, "decided_at_us": at,
            "agent": AGENTS[rng.below(5) as usize], "service": service, "tool": tool,
            "arguments": {"command": format!("{tool} --target item-{n} --verbose")},
            "verdict": verdict, "action": verdict, "rule_id": null, "reason": "bench",
            "outcome": "ok", "finished_at_us": at + 900, "duration_us": 900, "error": null,
            "risk": risk, "findings": [],
        }),
    }
}

/// Seeds `rows` events over the 30 days before now; returns (first, last) time and the seconds.
async fn seed(
    store: &Store,
    org_id: &str,
    owner_id: &str,
    devices: &[Device],
    rows: usize,
) -> (i64, i64, f64) {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let span: i64 = 30 * 86_400 * 1_000_000;
    let end = now_us() - 60_000_000;
    let start = end - span;
    let step = (span / rows.max(1) as i64).max(1);
    let started = Instant::now();
    let mut at = start;
    let mut done = 0;
    while done < rows {
        let n = BATCH.min(rows - done);
        // One device's proxy ships each batch, as the outbox does.
        let dev = &devices[(done / BATCH) % devices.len()];
        let batch: Vec<AuditEnvelope> = (0..n)
            .map(|_| {
                at += step;
                event(&mut rng, at)
            })
            .collect();
        store
            .ingest_device_audit(dev, &batch, "192.0.2.1")
            .await
            .expect("ingest");
        // People's events, 1% of the trail, spread over the same time.
        let people: Vec<i64> = batch
            .iter()
            .step_by(100)
            .map(|e| e.occurred_at + 1)
            .collect();
        people_events(store, org_id, owner_id, &people).await;
        done += n;
        if done % 100_000 == 0 {
            eprintln!(
                "  {done} events shipped ({:.0}/s)",
                done as f64 / started.elapsed().as_secs_f64()
            );
        }
    }
    (start, at, started.elapsed().as_secs_f64())
}

/// Sign-ins of the owner at `times`, stored as `record_audit` stores them (with their facets).
async fn people_events(store: &Store, org_id: &str, owner_id: &str, times: &[i64]) {
    if times.is_empty() {
        return;
    }
    let values: Vec<String> = (0..times.len())
        .map(|i| {
            let p: Vec<String> = (1..=11).map(|k| format!("${}", i * 11 + k)).collect();
            format!("({})", p.join(", "))
        })
        .collect();
    let sql = format!(
        "INSERT INTO audit_events (id, org_id, occurred_at, kind, actor_kind, actor_id, target, outcome, ip, detail, user_name) \
         VALUES {}",
        values.join(", ")
    );
    let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
    for at in times {
        q = q
            .bind(uuid::Uuid::now_v7().to_string())
            .bind(org_id)
            .bind(*at)
            .bind("auth.login")
            .bind("user")
            .bind(owner_id)
            .bind(owner_id)
            .bind("success")
            .bind("127.0.0.1")
            .bind(r#"{"method":"password"}"#)
            .bind("owner@acme.test");
    }
    q.execute(store.pool()).await.expect("people's events");
}

/// Milliseconds: median and the worst of `ROUNDS` runs (after one warm-up).
fn summary(mut samples: Vec<Duration>) -> String {
    samples.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    format!(
        "{:.2} ms (max {:.2})",
        ms(samples[samples.len() / 2]),
        ms(samples[samples.len() - 1])
    )
}

struct Case {
    name: &'static str,
    filter: AuditFilter,
    query: String,
}

fn case(name: &'static str, filter: AuditFilter, query: &str) -> Case {
    Case {
        name,
        filter: AuditFilter {
            limit: 51,
            ..filter
        },
        query: query.to_string(),
    }
}

fn rfc(us: i64) -> String {
    flowlink_control::api::auth::rfc3339(us)
}

async fn run(backend: Backend, rows: usize) {
    let server = TestServer::start(backend).await;
    let owner: TestClient = server.owner().await;
    let (_, org) = owner.get("/api/v1/orgs/acme").await;
    let org_id = org["id"].as_str().expect("org id").to_string();
    let store = server.store.clone();
    let mut devices = Vec::new();
    for i in 0..DEVICES {
        devices.push(enrol(&store, &org_id, i).await);
    }
    eprintln!("{}: shipping {rows} events…", backend.as_str());
    let (_, me) = owner.get("/api/v1/me").await;
    let owner_id = me["user"]["id"].as_str().expect("my id").to_string();
    let (start, end, secs) = seed(&store, &org_id, &owner_id, &devices, rows).await;
    if backend == Backend::Postgres {
        sqlx::query("ANALYZE audit_events")
            .execute(store.pool())
            .await
            .expect("analyze");
    }
    println!(
        "\n### {} — {rows} events shipped in {secs:.1} s ({:.0} events/s, batches of {BATCH})\n",
        backend.as_str(),
        rows as f64 / secs
    );

    // A cursor past 90% of the trail (its oldest tenth).
    let deep_at = start + (end - start) / 10;
    let deep = store
        .list_audit(
            &org_id,
            &AuditFilter {
                until: Some(deep_at),
                limit: 1,
                ..AuditFilter::default()
            },
        )
        .await
        .expect("deep")
        .pop()
        .expect("an event at the deep cursor");
    let deep_key = (deep.occurred_at, deep.id.clone());
    let deep_cursor = flowlink_control::api::audit::encode_cursor(deep.occurred_at, &deep.id);
    let day = 86_400 * 1_000_000;
    let window = (start + 15 * day, start + 16 * day);
    let none = AuditFilter::default;
    let cases = vec![
        case("first page, no filter", none(), ""),
        case(
            "page at a deep cursor (90% down)",
            AuditFilter {
                before: Some(deep_key.clone()),
                ..none()
            },
            &format!("cursor={deep_cursor}"),
        ),
        case(
            "device",
            AuditFilter {
                device_id: Some(devices[3].id.clone()),
                ..none()
            },
            &format!("device={}", devices[3].id),
        ),
        case(
            "user (OS account)",
            AuditFilter {
                user: Some("user01".into()),
                ..none()
            },
            "user=user01",
        ),
        case(
            "agent",
            AuditFilter {
                agent: Some("aider".into()),
                ..none()
            },
            "agent=aider",
        ),
        case(
            "service",
            AuditFilter {
                service: Some("k8s".into()),
                ..none()
            },
            "service=k8s",
        ),
        case(
            "tool",
            AuditFilter {
                tool: Some("delete".into()),
                ..none()
            },
            "tool=delete",
        ),
        case(
            "decision = block (5%)",
            AuditFilter {
                decision: Some("block".into()),
                ..none()
            },
            "decision=block",
        ),
        case(
            "decision = error (0.1%)",
            AuditFilter {
                decision: Some("error".into()),
                ..none()
            },
            "decision=error",
        ),
        case(
            "risk ≥ 80 (3%)",
            AuditFilter {
                min_risk: Some(80),
                ..none()
            },
            "min_risk=80",
        ),
        case(
            "risk ≥ 99 (0.06%)",
            AuditFilter {
                min_risk: Some(99),
                ..none()
            },
            "min_risk=99",
        ),
        case(
            "people's events (rare)",
            AuditFilter {
                family: Some(AuditFamily::People),
                ..none()
            },
            "family=people",
        ),
        case(
            "command history (kind = tool_call)",
            AuditFilter {
                kind: Some("tool_call".into()),
                ..none()
            },
            "view=commands",
        ),
        case(
            "one day's window, 15 days back",
            AuditFilter {
                since: Some(window.0),
                until: Some(window.1),
                ..none()
            },
            &format!("since={}&until={}", rfc(window.0), rfc(window.1)),
        ),
        case(
            "service + tool + decision",
            AuditFilter {
                service: Some("db".into()),
                tool: Some("delete".into()),
                decision: Some("block".into()),
                ..none()
            },
            "service=db&tool=delete&decision=block",
        ),
        case(
            "service at a deep cursor",
            AuditFilter {
                service: Some("k8s".into()),
                before: Some(deep_key.clone()),
                ..none()
            },
            &format!("service=k8s&cursor={deep_cursor}"),
        ),
        case(
            "text q (common: \"verbose\")",
            AuditFilter {
                text: Some("verbose".into()),
                ..none()
            },
            "q=verbose",
        ),
        case(
            "text q (rare: \"item-77777\")",
            AuditFilter {
                text: Some("item-77777".into()),
                ..none()
            },
            "q=item-77777",
        ),
        case(
            "text q (rare) in one day's window",
            AuditFilter {
                text: Some("item-77777".into()),
                since: Some(window.0),
                until: Some(window.1),
                ..none()
            },
            &format!(
                "q=item-77777&since={}&until={}",
                rfc(window.0),
                rfc(window.1)
            ),
        ),
    ];

    println!("| filter | rows | store query (page of 50) | whole page over HTTP |");
    println!("|---|---|---|---|");
    for c in &cases {
        let mut store_times = Vec::new();
        let mut found = 0;
        for round in 0..=ROUNDS {
            let t = Instant::now();
            let page = store.list_audit(&org_id, &c.filter).await.expect("page");
            if round > 0 {
                store_times.push(t.elapsed());
            }
            found = page.len().min(50);
        }
        let mut page_times = Vec::new();
        let path = format!("/ui/orgs/acme/audit?{}", c.query);
        for round in 0..=ROUNDS {
            let t = Instant::now();
            let resp = owner
                .request(reqwest::Method::GET, &path)
                .send()
                .await
                .expect("GET page");
            let status = resp.status();
            let _ = resp.bytes().await.expect("body");
            assert_eq!(status, 200, "{path}");
            if round > 0 {
                page_times.push(t.elapsed());
            }
        }
        println!(
            "| {} | {found} | {} | {} |",
            c.name,
            summary(store_times),
            summary(page_times)
        );
    }

    // An export's walk: batches of 1,000 through a filter, as `/audit/export.*` reads them.
    for (name, filter) in [
        (
            "decision = block",
            AuditFilter {
                decision: Some("block".into()),
                ..AuditFilter::default()
            },
        ),
        (
            "service = k8s",
            AuditFilter {
                service: Some("k8s".into()),
                ..AuditFilter::default()
            },
        ),
    ] {
        let mut f = AuditFilter {
            limit: 1000,
            ..filter
        };
        let t = Instant::now();
        let mut total = 0usize;
        loop {
            let batch = store.list_audit(&org_id, &f).await.expect("batch");
            total += batch.len();
            match batch.last() {
                Some(last) if batch.len() == 1000 => {
                    f.before = Some((last.occurred_at, last.id.clone()));
                }
                _ => break,
            }
        }
        let secs = t.elapsed().as_secs_f64();
        println!(
            "\nexport walk, {name}: {total} events in {secs:.2} s ({:.0} events/s)",
            total as f64 / secs
        );
    }
    // The same through HTTP, CSV streamed to the client.
    let t = Instant::now();
    let resp = owner
        .request(
            reqwest::Method::GET,
            "/ui/orgs/acme/audit/export.csv?decision=block",
        )
        .send()
        .await
        .expect("export");
    let body = resp.bytes().await.expect("export body");
    let secs = t.elapsed().as_secs_f64();
    let lines = body.iter().filter(|b| **b == b'\n').count();
    println!(
        "CSV export over HTTP, decision = block: {} lines, {:.1} MB in {secs:.2} s ({:.0} events/s)",
        lines,
        body.len() as f64 / 1e6,
        (lines.saturating_sub(1)) as f64 / secs
    );
    server.stop().await;
}

fn main() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let rows = env_num("FLOWLINK_BENCH_AUDIT_ROWS", 1_000_000) as usize;
    let engines: Vec<Backend> = std::env::var("FLOWLINK_BENCH_ENGINES")
        .unwrap_or_else(|_| "sqlite,postgres".into())
        .split(',')
        .map(|e| match e.trim() {
            "sqlite" => Backend::Sqlite,
            "postgres" => Backend::Postgres,
            other => panic!("unknown engine `{other}`: use sqlite and/or postgres"),
        })
        .collect();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    for backend in engines {
        rt.block_on(run(backend, rows));
    }
}
