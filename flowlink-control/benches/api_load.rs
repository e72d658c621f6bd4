//! Load benchmark of the control plane's API, per database engine.
//!
//! ```sh
//! FLOWLINK_TEST_POSTGRES_URL=postgres://postgres@127.0.0.1:5432/test \
//!   cargo bench -p flowlink-control --bench api_load
//! ```
//!
//! For SQLite and then PostgreSQL (a fresh schema of `FLOWLINK_TEST_POSTGRES_URL`), starts the
//! control plane in-process on 127.0.0.1 (its own 2-thread runtime, like the real binary on the
//! 2-core reference machine), creates the organisation `acme` with 25 members (one page: `{"items": [...]}`) and an API token
//! (`org:read member:read`), then drives `GET /api/v1/orgs/acme/members` and
//! `GET /api/v1/orgs/acme` with N keep-alive connections for T seconds each, after a warm-up:
//!
//! - `reqwest`: N connections from an in-process generator (its own runtime), one request at a
//!   time per connection, every latency recorded (exact p50/p99 from the sorted samples);
//! - `wrk`: the same load from `wrk` as a second process (Debian's `wrk`), when it is installed:
//!   lighter on the shared CPUs than the in-process generator. Because the load then comes from
//!   another process, the bench also prints the CPU time its own process (the server: HTTP,
//!   routing, authorisation, sqlx, SQLite itself; PostgreSQL's backends are not counted) spent
//!   per request, which varies much less than throughput when other jobs share the machine.
//!
//! Settings (environment): `FLOWLINK_BENCH_CONNECTIONS` (default 32), `FLOWLINK_BENCH_SECS`
//! (default 10), `FLOWLINK_BENCH_WARMUP_SECS` (default 2), `FLOWLINK_BENCH_ENGINES`
//! (default `sqlite,postgres`), `FLOWLINK_BENCH_ROUTES` (default
//! `/api/v1/orgs/acme/members,/api/v1/orgs/acme`), `FLOWLINK_BENCH_WRK=0` to leave wrk out.

#[path = "../tests/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use flowlink_control::auth::{PermissionSet, password};
use flowlink_control::store::Backend;
use support::{PASSWORD, TestServer};

struct Settings {
    connections: usize,
    secs: u64,
    warmup: u64,
    engines: Vec<Backend>,
    routes: Vec<String>,
    wrk: bool,
}

fn env_num(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("{name}=`{v}` is not a whole number")),
        Err(_) => default,
    }
}

impl Settings {
    fn from_env() -> Settings {
        let engines = std::env::var("FLOWLINK_BENCH_ENGINES")
            .unwrap_or_else(|_| "sqlite,postgres".into())
            .split(',')
            .map(|e| match e.trim() {
                "sqlite" => Backend::Sqlite,
                "postgres" => Backend::Postgres,
                other => panic!("FLOWLINK_BENCH_ENGINES: unknown engine `{other}`"),
            })
            .collect();
        Settings {
            connections: usize::try_from(env_num("FLOWLINK_BENCH_CONNECTIONS", 32).max(1))
                .unwrap_or(32),
            secs: env_num("FLOWLINK_BENCH_SECS", 10).max(1),
            warmup: env_num("FLOWLINK_BENCH_WARMUP_SECS", 2),
            engines,
            routes: std::env::var("FLOWLINK_BENCH_ROUTES")
                .unwrap_or_else(|_| "/api/v1/orgs/acme/members,/api/v1/orgs/acme".into())
                .split(',')
                .map(|r| r.trim().to_string())
                .filter(|r| !r.is_empty())
                .collect(),
            wrk: std::env::var("FLOWLINK_BENCH_WRK").map_or(true, |v| v != "0"),
        }
    }
}

/// The result of one run.
struct Run {
    requests: u64,
    errors: u64,
    elapsed: Duration,
    p50: Duration,
    p99: Duration,
    max: Duration,
    /// CPU time this process (the server alone, when the load comes from wrk) spent per request.
    cpu_per_request: Option<Duration>,
}

impl Run {
    fn line(&self, engine: &str, route: &str, generator: &str, connections: usize) -> String {
        format!(
            "{engine:<9} {route:<30} {generator:<8} c={connections:<3} {:>9.0} req/s  p50 {:>8.2} ms  p99 {:>8.2} ms  max {:>8.2} ms  ({} requests, {} errors){}",
            self.requests as f64 / self.elapsed.as_secs_f64(),
            ms(self.p50),
            ms(self.p99),
            ms(self.max),
            self.requests,
            self.errors,
            self.cpu_per_request
                .map(|c| format!("  server CPU {:.0} µs/request", c.as_secs_f64() * 1e6))
                .unwrap_or_default()
        )
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// `connections` keep-alive connections, each sending the next request when the previous
/// answer is read, for `secs` seconds.
async fn drive(url: &str, token: &str, connections: usize, secs: u64) -> Run {
    let deadline = Instant::now() + Duration::from_secs(secs);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..connections {
        // One client per connection: each keeps exactly one connection alive.
        let http = reqwest::Client::builder()
            .http1_only()
            .pool_max_idle_per_host(1)
            .build()
            .expect("client");
        let url = url.to_string();
        let auth = format!("Bearer {token}");
        tasks.push(tokio::spawn(async move {
            let mut latencies: Vec<u32> = Vec::with_capacity(100_000);
            let mut errors = 0u64;
            while Instant::now() < deadline {
                let t = Instant::now();
                let ok = match http.get(&url).header("authorization", &auth).send().await {
                    Ok(resp) => {
                        let status = resp.status();
                        resp.bytes().await.is_ok() && status == 200
                    }
                    Err(_) => false,
                };
                if ok {
                    latencies.push(u32::try_from(t.elapsed().as_micros()).unwrap_or(u32::MAX));
                } else {
                    errors += 1;
                }
            }
            (latencies, errors)
        }));
    }
    let mut all = Vec::new();
    let mut errors = 0;
    for t in tasks {
        let (l, e) = t.await.expect("load task");
        all.extend(l);
        errors += e;
    }
    let elapsed = started.elapsed();
    all.sort_unstable();
    let pick = |q: f64| {
        if all.is_empty() {
            return Duration::ZERO;
        }
        let i = ((all.len() as f64 * q).ceil() as usize).clamp(1, all.len()) - 1;
        Duration::from_micros(u64::from(all[i]))
    };
    Run {
        requests: all.len() as u64,
        errors,
        elapsed,
        p50: pick(0.50),
        p99: pick(0.99),
        max: all
            .last()
            .map_or(Duration::ZERO, |m| Duration::from_micros(u64::from(*m))),
        cpu_per_request: None,
    }
}

/// CPU time (user + system) of this process so far, from `/proc/self/stat` (Linux; clock ticks
/// of 1/100 s, the USER_HZ of every mainstream Linux architecture).
fn process_cpu() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // Fields 14 and 15 of stat(5), counted after the command name (which ends field 2).
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(Duration::from_millis((utime + stime) * 10))
}

fn wrk_installed() -> bool {
    std::process::Command::new("wrk")
        .arg("--version")
        .output()
        .is_ok()
}

/// `wrk --latency` against `url`; parses requests/s and the 50 % / 99 % latencies.
fn wrk(url: &str, token: &str, connections: usize, secs: u64) -> Option<Run> {
    let cpu_before = process_cpu();
    let out = std::process::Command::new("wrk")
        .args([
            "-t",
            &connections.min(2).to_string(),
            "-c",
            &connections.to_string(),
            "-d",
            &format!("{secs}s"),
            "--latency",
            "-H",
            &format!("Authorization: Bearer {token}"),
            url,
        ])
        .output()
        .ok()?;
    let cpu = match (cpu_before, process_cpu()) {
        (Some(a), Some(b)) => Some(b.saturating_sub(a)),
        _ => None,
    };
    let text = String::from_utf8_lossy(&out.stdout);
    let duration = |s: &str| -> Option<Duration> {
        let s = s.trim();
        let (num, unit) = s.split_at(s.find(|c: char| c.is_ascii_alphabetic())?);
        let v: f64 = num.parse().ok()?;
        let secs = match unit {
            "us" => v / 1e6,
            "ms" => v / 1e3,
            "s" => v,
            "m" => v * 60.0,
            _ => return None,
        };
        Some(Duration::from_secs_f64(secs))
    };
    let percentile = |p: &str| {
        text.lines()
            .find_map(|l| l.trim().strip_prefix(p).map(str::to_string))
            .and_then(|v| duration(&v))
    };
    let requests: u64 = text
        .lines()
        .find(|l| l.contains("requests in"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    let errors: u64 = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("Non-2xx or 3xx responses:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    let max = text
        .lines()
        .find(|l| l.trim_start().starts_with("Latency") && !l.contains("Distribution"))
        .and_then(|l| l.split_whitespace().nth(3).and_then(duration))
        .unwrap_or_default();
    Some(Run {
        requests,
        errors,
        elapsed: Duration::from_secs(secs),
        p50: percentile("50%")?,
        p99: percentile("99%")?,
        max,
        cpu_per_request: cpu
            .filter(|_| requests > 0)
            .map(|c| c / u32::try_from(requests).unwrap_or(u32::MAX)),
    })
}

/// The organisation `acme`: an owner (through first-run set-up), 24 more members, and an API
/// token for the owner. Returns the token.
async fn populate(srv: &TestServer) -> String {
    srv.owner().await;
    let org = srv
        .store
        .org_by_ref("acme")
        .await
        .expect("org")
        .expect("acme exists");
    let hash = password::hash(PASSWORD).expect("hash");
    for i in 0..24 {
        let user = srv
            .store
            .create_user(
                &format!("member{i}@acme.test"),
                &format!("Member {i}"),
                Some(&hash),
            )
            .await
            .expect("user");
        let role = ["viewer", "approver", "auditor", "admin"][i % 4];
        srv.store
            .add_member(&org.id, &user.id, role)
            .await
            .expect("member");
    }
    let owner = srv
        .store
        .user_by_email("owner@acme.test")
        .await
        .expect("owner")
        .expect("owner exists");
    let scopes = PermissionSet::parse_scopes("org:read member:read").expect("scopes");
    let (secret, _) =
        flowlink_control::api::tokens::issue(&srv.store, &org.id, &owner.id, "bench", scopes, 1)
            .await
            .expect("token");
    secret
}

fn main() {
    let settings = Settings::from_env();
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let use_wrk = settings.wrk && wrk_installed();
    println!(
        "api_load: {} connections, {} s per run after {} s warm-up; generators: reqwest{}",
        settings.connections,
        settings.secs,
        settings.warmup,
        if use_wrk { ", wrk" } else { " (wrk not found)" }
    );
    // The server gets its own runtime (2 workers, as on the reference machine's 2 cores); the
    // in-process generator another, so neither's tasks queue behind the other's.
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

    let mut lines = Vec::new();
    for engine in &settings.engines {
        let srv = server_rt.block_on(async {
            let srv = TestServer::start(*engine).await;
            let token = populate(&srv).await;
            (srv, token)
        });
        let (srv, token) = srv;
        let engine_name = engine.as_str();
        for route in settings.routes.iter().map(String::as_str) {
            let url = format!("{}{route}", srv.base);
            // Check once that the request is what we mean to measure.
            load_rt.block_on(async {
                let resp = reqwest::Client::new()
                    .get(&url)
                    .bearer_auth(&token)
                    .send()
                    .await
                    .expect("probe");
                assert_eq!(resp.status(), 200, "{url}");
                let body: serde_json::Value = resp.json().await.expect("json");
                if route.ends_with("/members") {
                    assert_eq!(body["items"].as_array().map(Vec::len), Some(25), "{body}");
                }
            });
            if settings.warmup > 0 {
                load_rt.block_on(drive(&url, &token, settings.connections, settings.warmup));
            }
            let run = load_rt.block_on(drive(&url, &token, settings.connections, settings.secs));
            let line = run.line(engine_name, route, "reqwest", settings.connections);
            println!("{line}");
            lines.push(line);
            if use_wrk {
                match wrk(&url, &token, settings.connections, settings.secs) {
                    Some(run) => {
                        let line = run.line(engine_name, route, "wrk", settings.connections);
                        println!("{line}");
                        lines.push(line);
                    }
                    None => println!("{engine_name:<9} {route:<30} wrk      (no parsable output)"),
                }
            }
        }
        server_rt.block_on(srv.stop());
    }
    println!("\nsummary:");
    for line in lines {
        println!("{line}");
    }
}
