//! The audit pages on both engines: each filter of `/ui/orgs/{org}/audit` (and of the API's
//! `GET /api/v1/orgs/{org}/audit`) narrows to exactly the events it names, keyset pages neither
//! repeat nor skip events, the command history shows agents' tool calls with their commands,
//! bad filter values are 400 pages, members without `audit:read` are refused the page and the
//! exports, another organisation's events never appear, and the CSV and JSON Lines exports
//! stream the filter (quoted, formulas neutralised, past one store batch) and are audited; events
//! stored before migration 0006 are found by the same filters through its backfill.

mod support;

use std::collections::{BTreeMap, BTreeSet};

use flowlink_control::auth::secret::sha256_hex;
use flowlink_control::store::{
    AuditFamily, AuditFilter, Backend, Device, EnrollmentToken, NewDevice, Store, now_us,
};
use flowlink_proto::link::AuditEnvelope;
use serde_json::{Value, json};
use support::*;

/// GET an export: status, headers, body.
async fn download(c: &TestClient, path: &str) -> (u16, reqwest::header::HeaderMap, String) {
    let resp = c
        .request(reqwest::Method::GET, path)
        .send()
        .await
        .expect("GET export");
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    (status, headers, resp.text().await.expect("export body"))
}

/// The event ids of a page's table, in order.
fn ids(html: &str) -> Vec<String> {
    html.split("<tbody class=\"event\" data-id=\"")
        .skip(1)
        .filter_map(|s| s.split('"').next())
        .map(str::to_string)
        .collect()
}

/// HTML attribute text back to the text.
fn unescape(s: &str) -> String {
    s.replace("&#38;", "&")
        .replace("&amp;", "&")
        .replace("&#61;", "=")
        .replace("&#43;", "+")
}

/// The `Older` link of a page, as a path.
fn older(html: &str) -> Option<String> {
    let at = html.find("<a rel=\"next\" href=\"")?;
    let rest = &html[at + "<a rel=\"next\" href=\"".len()..];
    Some(unescape(rest.split('"').next()?))
}

/// Enrols a device named `name` in `org_id` with the label `user=<account>`.
async fn device(store: &Store, org_id: &str, name: &str, account: &str) -> Device {
    let hash = sha256_hex(&format!("fle_{name}.secret"));
    let now = now_us();
    let token = EnrollmentToken {
        id: uuid::Uuid::now_v7().to_string(),
        org_id: org_id.to_string(),
        name: format!("for {name}"),
        labels: BTreeMap::new(),
        uses_allowed: 1,
        uses: 0,
        created_by: "test".into(),
        created_at: now,
        expires_at: now + 3_600_000_000,
        device_id: None,
        revoked_at: None,
    };
    store
        .create_enrollment_token(&token, &hash)
        .await
        .expect("enrolment token");
    let labels = BTreeMap::from([("user".to_string(), account.to_string())]);
    let mut key = [0u8; 32];
    key[..name.len().min(32)].copy_from_slice(&name.as_bytes()[..name.len().min(32)]);
    store
        .enroll(
            &hash,
            &NewDevice {
                name,
                hostname: name,
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

/// A tool call as a proxy ships it.
struct Call<'a> {
    at: i64,
    agent: &'a str,
    service: &'a str,
    tool: &'a str,
    verdict: &'a str,
    risk: u8,
    command: &'a str,
}

fn envelope(c: &Call<'_>) -> AuditEnvelope {
    let id = uuid::Uuid::now_v7().to_string();
    AuditEnvelope {
        id: id.clone(),
        occurred_at: c.at,
        kind: "tool_call".into(),
        record: json!({
            "schema": 1, "id": id, "session_id": "s1", "received_at_us": c.at, "decided_at_us": c.at,
            "agent": c.agent, "service": c.service, "tool": c.tool,
            "arguments": {"command": c.command},
            "verdict": c.verdict, "action": c.verdict, "rule_id": null, "reason": "test",
            "outcome": "ok", "finished_at_us": null, "duration_us": null, "error": null,
            "risk": c.risk, "findings": [],
        }),
    }
}

async fn ship(store: &Store, dev: &Device, calls: &[Call<'_>]) -> Vec<String> {
    let events: Vec<AuditEnvelope> = calls.iter().map(envelope).collect();
    let outcome = store
        .ingest_device_audit(dev, &events, "192.0.2.7")
        .await
        .expect("ingest");
    assert_eq!(outcome.acked.len(), events.len());
    events.into_iter().map(|e| e.id).collect()
}

fn set(v: &[String]) -> BTreeSet<String> {
    v.iter().cloned().collect()
}

/// Ten days ago, in µs: shipped events are older than the people's events of the test.
fn t0() -> i64 {
    now_us() - 10 * 86_400 * 1_000_000
}

async fn filters_narrow_the_trail_to_what_they_name(backend: Backend) {
    let server = TestServer::start(backend).await;
    let owner = server.owner().await;
    let acme = org_id(&owner, "acme").await;
    let laptop = device(&server.store, &acme, "laptop-ann", "ann").await;
    let build = device(&server.store, &acme, "build-box", "ci").await;
    let t = t0();
    let s = 1_000_000;
    let a = ship(
        &server.store,
        &laptop,
        &[
            Call {
                at: t,
                agent: "claude-code",
                service: "shell",
                tool: "run",
                verdict: "allow",
                risk: 5,
                command: "ls -la",
            },
            Call {
                at: t + s,
                agent: "claude-code",
                service: "shell",
                tool: "run",
                verdict: "block",
                risk: 95,
                command: "rm -rf ~",
            },
            Call {
                at: t + 2 * s,
                agent: "cursor",
                service: "git",
                tool: "push",
                verdict: "approved",
                risk: 60,
                command: "git push --force 100%_done",
            },
        ],
    )
    .await;
    let b = ship(
        &server.store,
        &build,
        &[
            Call {
                at: t + 3 * s,
                agent: "cursor",
                service: "db",
                tool: "query",
                verdict: "denied",
                risk: 80,
                command: "DELETE FROM users",
            },
            Call {
                at: t + 4 * s,
                agent: "codex",
                service: "shell",
                tool: "run",
                verdict: "allow",
                risk: 0,
                command: "cargo test",
            },
        ],
    )
    .await;
    let all_calls = [a.clone(), b.clone()].concat();
    let base = "/ui/orgs/acme/audit";

    // Unfiltered: every call and the people's events (the owner's sign-in), newest first.
    let (status, html) = page(&owner, base).await;
    assert_eq!(status, 200, "{html}");
    let shown = ids(&html);
    assert!(set(&shown).is_superset(&set(&all_calls)), "{html}");
    let calls_in_order: Vec<String> = shown
        .iter()
        .filter(|i| all_calls.contains(i))
        .cloned()
        .collect();
    let mut newest_first = all_calls.clone();
    newest_first.reverse();
    assert_eq!(calls_in_order, newest_first, "newest first");
    assert!(html.contains("auth.login"), "people's events are there too");
    assert!(
        html.contains("laptop-ann") && html.contains("(ann)"),
        "device name and account"
    );
    assert!(html.contains("Olive Owner"), "a person by name");
    assert!(html.contains("<details>") && html.contains("95 · critical"));
    assert!(html.contains("/ui/static/audit.css?v=") && !html.contains("<script>"));

    // Each facet narrows to exactly its events.
    let by_device = format!("device={}", build.id);
    let cases: Vec<(&str, Vec<String>)> = vec![
        (&by_device, b.clone()),
        ("agent=cursor", vec![a[2].clone(), b[0].clone()]),
        (
            "service=shell",
            vec![a[0].clone(), a[1].clone(), b[1].clone()],
        ),
        (
            "service=shell&tool=run&decision=allow",
            vec![a[0].clone(), b[1].clone()],
        ),
        ("tool=push", vec![a[2].clone()]),
        ("decision=block", vec![a[1].clone()]),
        ("min_risk=80", vec![a[1].clone(), b[0].clone()]),
        ("min_risk=60&agent=cursor", vec![a[2].clone(), b[0].clone()]),
        ("user=ci", b.clone()),
        ("family=agents", all_calls.clone()),
        ("q=RM+-RF", vec![a[1].clone()]),
        ("q=100%25_", vec![a[2].clone()]),
        ("q=%25", vec![a[2].clone()]),
        ("view=commands&service=db", vec![b[0].clone()]),
    ];
    for (query, want) in cases {
        let (status, html) = page(&owner, &format!("{base}?{query}")).await;
        assert_eq!(status, 200, "{query}: {html}");
        assert_eq!(set(&ids(&html)), set(&want), "{query}");
    }

    // The time range: from inclusive, until exclusive, as a browser's date-time field sends it.
    let at = |us: i64| {
        let t = time::OffsetDateTime::from_unix_timestamp(us / 1_000_000).expect("time");
        format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute(),
            t.second()
        )
    };
    let (_, html) = page(
        &owner,
        &format!("{base}?since={}&until={}", at(t + s), at(t + 3 * s)),
    )
    .await;
    assert_eq!(set(&ids(&html)), set(&[a[1].clone(), a[2].clone()]));
    assert!(
        html.contains(&format!("value=\"{}\"", at(t + s))),
        "the field keeps its value"
    );

    // People's events: no agent's call among them; the owner's e-mail finds their sign-in.
    let (_, html) = page(&owner, &format!("{base}?family=people")).await;
    let people = ids(&html);
    assert!(!people.is_empty() && set(&people).is_disjoint(&set(&all_calls)));
    let (_, html) = page(&owner, &format!("{base}?user=owner%40acme.test")).await;
    assert!(
        !ids(&html).is_empty() && html.contains("auth.login"),
        "{html}"
    );
    assert!(set(&ids(&html)).is_subset(&set(&people)));

    // The command history: tool calls only, with the command column.
    let (status, html) = page(&owner, &format!("{base}?view=commands")).await;
    assert_eq!(status, 200);
    assert_eq!(set(&ids(&html)), set(&all_calls));
    assert!(html.contains("<th scope=\"col\">Command</th>") && html.contains("DELETE FROM users"));
    assert!(html.contains("aria-current=\"page\">Command history"));

    // The API reads the same filters and returns the facets.
    let (status, body) = owner
        .get("/api/v1/orgs/acme/audit?service=db&min_risk=50")
        .await;
    assert_eq!(status, 200, "{body}");
    let items = body["items"].as_array().expect("items");
    assert_eq!(items.len(), 1, "{body}");
    assert_eq!(
        (
            &items[0]["id"],
            &items[0]["user"],
            &items[0]["decision"],
            &items[0]["risk"],
            &items[0]["command"]
        ),
        (
            &json!(b[0]),
            &json!("ci"),
            &json!("denied"),
            &json!(80),
            &json!("DELETE FROM users")
        )
    );
    let (status, body) = owner.get("/api/v1/orgs/acme/audit?kind=auth.").await;
    assert_eq!(status, 200, "the old filters still work: {body}");
    assert!(body["items"].as_array().is_some_and(|i| !i.is_empty()));

    // Bad values are 400 pages that say what is expected.
    for (query, says) in [
        ("min_risk=high", "0 to 100"),
        ("min_risk=101", "0 to 100"),
        ("decision=maybe", "allow, block"),
        ("family=robots", "people"),
        ("since=yesterday", "2026-01-31T12:00"),
        ("view=everything", "commands"),
        ("cursor=nonsense!", "cursor"),
        ("colour=red", "colour"),
    ] {
        let (status, html) = page(&owner, &format!("{base}?{query}")).await;
        assert_eq!(status, 400, "{query}: {html}");
        assert!(
            html.contains("<html") && html.contains(says),
            "{query}: {html}"
        );
    }
    let (status, body) = owner.get("/api/v1/orgs/acme/audit?decision=maybe").await;
    assert_eq!((status, code(&body)), (400, "invalid_request"), "{body}");
    server.stop().await;
}

async fn keyset_pages_neither_repeat_nor_skip(backend: Backend) {
    let server = TestServer::start(backend).await;
    let owner = server.owner().await;
    let acme = org_id(&owner, "acme").await;
    let dev = device(&server.store, &acme, "laptop", "ann").await;
    let t = t0();
    // 130 calls, many sharing a microsecond, so the cursor's id breaks ties.
    let calls: Vec<Call<'_>> = (0..130)
        .map(|i| Call {
            at: t + (i / 7) * 1000,
            agent: "claude-code",
            service: if i % 2 == 0 { "shell" } else { "git" },
            tool: "run",
            verdict: "allow",
            risk: 10,
            command: "true",
        })
        .collect();
    let shipped = ship(&server.store, &dev, &calls).await;

    for (query, expected) in [
        ("view=commands", shipped.len()),
        ("service=shell", shipped.len() / 2),
    ] {
        let mut path = format!("/ui/orgs/acme/audit?{query}");
        let mut seen: Vec<String> = Vec::new();
        let mut pages = 0;
        loop {
            let (status, html) = page(&owner, &path).await;
            assert_eq!(status, 200, "{path}: {html}");
            let got = ids(&html);
            assert!(got.len() <= 50, "pages of 50");
            seen.extend(got);
            pages += 1;
            match older(&html) {
                Some(next) => {
                    assert!(
                        next.contains(query),
                        "the Older link keeps the filter: {next}"
                    );
                    path = next;
                }
                None => break,
            }
        }
        assert_eq!(seen.len(), expected, "{query}: every event once");
        assert_eq!(set(&seen).len(), expected, "{query}: no repeats");
        assert_eq!(pages, expected.div_ceil(50), "{query}");
        // Newest first across pages, ties by id (UUIDv7 grows with shipping order here).
        let order: Vec<(i64, String)> = seen
            .iter()
            .map(|id| {
                let i = shipped.iter().position(|s| s == id).expect("shipped");
                (calls[i].at, id.clone())
            })
            .collect();
        let mut sorted = order.clone();
        sorted.sort_by(|x, y| y.cmp(x));
        assert_eq!(order, sorted, "{query}: newest first");
    }
    server.stop().await;
}

async fn only_audit_readers_of_the_org_see_it(backend: Backend) {
    let server = TestServer::start(backend).await;
    let owner = server.owner().await;
    let acme = org_id(&owner, "acme").await;
    let viewer = server
        .member(&owner, "acme", "vic@acme.test", "viewer")
        .await;
    let approver = server
        .member(&owner, "acme", "ann@acme.test", "approver")
        .await;
    let auditor = server
        .member(&owner, "acme", "aud@acme.test", "auditor")
        .await;
    let other = server.other_org("globex").await;
    let globex = org_id(&other, "globex").await;
    let ours = device(&server.store, &acme, "acme-laptop", "ann").await;
    let theirs = device(&server.store, &globex, "globex-laptop", "gus").await;
    let t = t0();
    let call = |service| Call {
        at: t,
        agent: "claude-code",
        service,
        tool: "run",
        verdict: "allow",
        risk: 1,
        command: "echo",
    };
    let mine = ship(&server.store, &ours, &[call("shell")]).await;
    let foreign = ship(&server.store, &theirs, &[call("shell")]).await;

    for c in [&viewer, &approver] {
        for path in [
            "/ui/orgs/acme/audit",
            "/ui/orgs/acme/audit?view=commands",
            "/ui/orgs/acme/audit/export.csv",
            "/ui/orgs/acme/audit/export.jsonl",
        ] {
            let (status, html) = page(c, path).await;
            assert_eq!(status, 403, "{path}: {html}");
            assert!(html.contains("<html") && !html.contains(&mine[0]), "{path}");
        }
    }
    let (status, html) = page(&auditor, "/ui/orgs/acme/audit").await;
    assert_eq!(status, 200, "{html}");
    assert!(ids(&html).contains(&mine[0]) && !ids(&html).contains(&foreign[0]));
    // Not even by naming the other org's device.
    let (_, html) = page(
        &auditor,
        &format!("/ui/orgs/acme/audit?device={}", theirs.id),
    )
    .await;
    assert!(ids(&html).is_empty(), "{html}");
    let (_, _, csv) = download(&owner, "/ui/orgs/acme/audit/export.csv").await;
    assert!(csv.contains(&mine[0]) && !csv.contains(&foreign[0]) && !csv.contains("globex"));
    // Someone of another organisation is told it does not exist.
    let (status, _) = page(&other, "/ui/orgs/acme/audit").await;
    assert_eq!(status, 404);
    let (status, _) = page(&other, "/ui/orgs/acme/audit/export.jsonl").await;
    assert_eq!(status, 404);
    // Nobody signed in is sent to the sign-in page.
    let (status, _) = page(&server.client(), "/ui/orgs/acme/audit/export.csv").await;
    assert_eq!(status, 303);
    server.stop().await;
}

/// Parses RFC 4180 CSV (quoted fields may hold commas, quotes and line breaks).
fn parse_csv(text: &str) -> Vec<Vec<String>> {
    let mut rows = Vec::new();
    let mut row = Vec::new();
    let mut field = String::new();
    let mut quoted = false;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if quoted {
            match c {
                '"' if chars.peek() == Some(&'"') => {
                    chars.next();
                    field.push('"');
                }
                '"' => quoted = false,
                _ => field.push(c),
            }
        } else {
            match c {
                '"' => quoted = true,
                ',' => row.push(std::mem::take(&mut field)),
                '\r' if chars.peek() == Some(&'\n') => {
                    chars.next();
                    row.push(std::mem::take(&mut field));
                    rows.push(std::mem::take(&mut row));
                }
                _ => field.push(c),
            }
        }
    }
    assert!(
        !quoted && field.is_empty() && row.is_empty(),
        "CSV ends with CRLF"
    );
    rows
}

async fn exports_stream_the_filter_and_are_audited(backend: Backend) {
    let server = TestServer::start(backend).await;
    let owner = server.owner().await;
    let acme = org_id(&owner, "acme").await;
    let dev = device(&server.store, &acme, "laptop", "ann").await;
    let t = t0();
    let tricky = ship(
        &server.store,
        &dev,
        &[
            Call {
                at: t,
                agent: "claude-code",
                service: "shell",
                tool: "run",
                verdict: "block",
                risk: 90,
                command: "=HYPERLINK(\"http://x\",\"click\")",
            },
            Call {
                at: t + 1,
                agent: "claude-code",
                service: "shell",
                tool: "run",
                verdict: "allow",
                risk: 3,
                command: "echo \"a, b\"\nprintf done",
            },
            Call {
                at: t + 2,
                agent: "@evil",
                service: "shell",
                tool: "run",
                verdict: "allow",
                risk: 3,
                command: "-1+2",
            },
        ],
    )
    .await;
    // More than one store batch (1000) of another service.
    let bulk: Vec<Call<'_>> = (0..2100)
        .map(|i| Call {
            at: t + 10 + i,
            agent: "codex",
            service: "git",
            tool: "status",
            verdict: "allow",
            risk: 0,
            command: "git status",
        })
        .collect();
    let bulk_ids = ship(&server.store, &dev, &bulk).await;

    // CSV of service=shell: header, three records, quoted and neutralised.
    let (status, headers, body) =
        download(&owner, "/ui/orgs/acme/audit/export.csv?service=shell").await;
    assert_eq!(status, 200, "{body}");
    assert!(
        headers["content-type"]
            .to_str()
            .unwrap_or("")
            .starts_with("text/csv")
    );
    let today = &flowlink_control::api::auth::rfc3339(now_us())[..10];
    assert_eq!(
        headers["content-disposition"].to_str().unwrap_or(""),
        format!("attachment; filename=\"audit-acme-{today}.csv\"")
    );
    let rows = parse_csv(&body);
    let header = &rows[0];
    let col = |name: &str| header.iter().position(|h| h == name).expect(name);
    assert_eq!(rows.len(), 4, "{body}");
    let by_id: BTreeMap<&str, &Vec<String>> = rows[1..]
        .iter()
        .map(|r| (r[col("id")].as_str(), r))
        .collect();
    assert_eq!(
        by_id.keys().map(|k| k.to_string()).collect::<BTreeSet<_>>(),
        set(&tricky)
    );
    assert!(rows[1..].iter().all(|r| r.len() == header.len()));
    assert_eq!(
        by_id[tricky[0].as_str()][col("command")],
        "'=HYPERLINK(\"http://x\",\"click\")"
    );
    assert_eq!(
        by_id[tricky[1].as_str()][col("command")],
        "echo \"a, b\"\nprintf done"
    );
    assert_eq!(by_id[tricky[2].as_str()][col("command")], "'-1+2");
    assert_eq!(by_id[tricky[2].as_str()][col("agent")], "'@evil");
    assert_eq!(by_id[tricky[0].as_str()][col("actor_name")], "laptop");
    assert_eq!(by_id[tricky[0].as_str()][col("risk")], "90");
    let detail: Value =
        serde_json::from_str(&by_id[tricky[0].as_str()][col("detail")]).expect("detail JSON");
    assert_eq!(detail["tool"], "run");
    // No cell of the whole export starts as a formula.
    assert!(
        rows.iter()
            .flatten()
            .all(|c| !c.starts_with(['=', '+', '-', '@']))
    );

    // JSON Lines of service=git: 2100 events over three store batches, each matching.
    let (status, headers, body) = download(
        &owner,
        "/ui/orgs/acme/audit/export.jsonl?service=git&agent=codex",
    )
    .await;
    assert_eq!(status, 200);
    assert!(
        headers["content-disposition"]
            .to_str()
            .unwrap_or("")
            .ends_with(".jsonl\"")
    );
    let lines: Vec<Value> = body
        .lines()
        .map(|l| serde_json::from_str(l).expect("each line is JSON"))
        .collect();
    assert_eq!(lines.len(), bulk_ids.len());
    assert!(
        lines
            .iter()
            .all(|l| l["service"] == "git" && l["agent"] == "codex" && l["kind"] == "tool_call")
    );
    let got: Vec<String> = lines
        .iter()
        .map(|l| l["id"].as_str().unwrap_or("").to_string())
        .collect();
    let mut want = bulk_ids.clone();
    want.reverse();
    assert_eq!(got, want, "every event once, newest first");

    // The CSV of everything holds all of them and more (people's events).
    let (_, _, body) = download(&owner, "/ui/orgs/acme/audit/export.csv").await;
    let rows = parse_csv(&body);
    assert!(
        rows.len() > 1 + tricky.len() + bulk_ids.len(),
        "{}",
        rows.len()
    );

    // A bad filter is refused before anything is sent or recorded.
    let (status, _, body) = download(&owner, "/ui/orgs/acme/audit/export.csv?min_risk=x").await;
    assert_eq!(status, 400, "{body}");

    // Each export is in the trail with its format and filter.
    let (_, body) = owner.get("/api/v1/orgs/acme/audit?kind=audit.export").await;
    let items = body["items"].as_array().expect("items");
    assert_eq!(items.len(), 3, "{body}");
    let formats: Vec<&str> = items
        .iter()
        .filter_map(|i| i["detail"]["format"].as_str())
        .collect();
    assert_eq!(formats, ["csv", "jsonl", "csv"]);
    assert_eq!(
        items[1]["detail"]["filter"],
        json!({"service": "git", "agent": "codex"})
    );
    assert_eq!(items[1]["user"], "owner@acme.test");
    assert_eq!(items[1]["outcome"], "success");
    server.stop().await;
}

/// Events stored before migration 0006 get their facets from its backfill.
async fn older_events_get_their_facets_from_the_migration(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = Store::connect(&db.url).await.expect("connect");
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("migrations")
        .join(backend.as_str());
    let migrator = sqlx::migrate::Migrator::new(dir).await.expect("migrations");
    migrator.run_to(5, store.pool()).await.expect("schema 5");
    let statements = [
        "INSERT INTO users (id, email, display_name, created_at) VALUES ('u1', 'pat@acme.test', 'Pat', 0)",
        "INSERT INTO orgs (id, slug, name, require_2fa, created_at) VALUES ('o1', 'acme', 'Acme', 0, 0)",
        "INSERT INTO devices (id, org_id, name, hostname, labels, signing_key, box_key, key_version, enrolled_at) \
         VALUES ('d1', 'o1', 'lap', 'lap', '{\"user\":\"alice\"}', '', '', 1, 0)",
        "INSERT INTO audit_events (id, org_id, occurred_at, kind, actor_kind, actor_id, target, outcome, ip, detail) VALUES \
         ('e1', 'o1', 1, 'tool_call', 'device', 'd1', 'shell/run', 'ok', '', \
          '{\"agent\":\"claude-code\",\"service\":\"shell\",\"tool\":\"run\",\"verdict\":\"block\",\"risk\":95,\"arguments\":{\"command\":\"rm -rf ~\"}}'), \
         ('e2', 'o1', 2, 'tool_call', 'device', 'd1', 'db/query', 'ok', '', \
          '{\"agent\":\"cursor\",\"service\":\"db\",\"tool\":\"query\",\"verdict\":\"allow\",\"risk\":10,\"arguments\":{\"sql\":\"SELECT 1\"}}'), \
         ('e3', 'o1', 3, 'auth.login', 'user', 'u1', 'u1', 'success', '', '{}'), \
         ('e4', 'o1', 4, 'auth.login_failed', 'anonymous', 'mallory@x.test', 'mallory@x.test', 'failure', '', '{}')",
    ];
    for sql in statements {
        sqlx::query(sql).execute(store.pool()).await.expect(sql);
    }
    store
        .migrate()
        .await
        .expect("migration 0006 over existing events");

    let find = |f: AuditFilter| {
        let store = store.clone();
        async move {
            let events = store
                .list_audit("o1", &AuditFilter { limit: 10, ..f })
                .await
                .expect("list");
            events.into_iter().map(|e| e.id).collect::<Vec<_>>()
        }
    };
    let cases: Vec<(AuditFilter, Vec<&str>)> = vec![
        (
            AuditFilter {
                user: Some("alice".into()),
                ..AuditFilter::default()
            },
            vec!["e2", "e1"],
        ),
        (
            AuditFilter {
                user: Some("pat@acme.test".into()),
                ..AuditFilter::default()
            },
            vec!["e3"],
        ),
        (
            AuditFilter {
                user: Some("mallory@x.test".into()),
                ..AuditFilter::default()
            },
            vec!["e4"],
        ),
        (
            AuditFilter {
                agent: Some("cursor".into()),
                ..AuditFilter::default()
            },
            vec!["e2"],
        ),
        (
            AuditFilter {
                service: Some("shell".into()),
                tool: Some("run".into()),
                ..AuditFilter::default()
            },
            vec!["e1"],
        ),
        (
            AuditFilter {
                decision: Some("block".into()),
                ..AuditFilter::default()
            },
            vec!["e1"],
        ),
        (
            AuditFilter {
                min_risk: Some(50),
                ..AuditFilter::default()
            },
            vec!["e1"],
        ),
        (
            AuditFilter {
                text: Some("RM -RF".into()),
                ..AuditFilter::default()
            },
            vec!["e1"],
        ),
        (
            AuditFilter {
                text: Some("select 1".into()),
                ..AuditFilter::default()
            },
            vec!["e2"],
        ),
        (
            AuditFilter {
                family: Some(AuditFamily::People),
                ..AuditFilter::default()
            },
            vec!["e4", "e3"],
        ),
    ];
    for (filter, want) in cases {
        let label = format!("{filter:?}");
        assert_eq!(find(filter).await, want, "{label}");
    }
    store.close().await;
}

both!(
    older_events_get_their_facets_from_the_migration,
    filters_narrow_the_trail_to_what_they_name,
    keyset_pages_neither_repeat_nor_skip,
    only_audit_readers_of_the_org_see_it,
    exports_stream_the_filter_and_are_audited,
);
