//! Tests against real SQLite files in temporary directories.

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};

use flowlink_proto::audit::{Outcome, SCHEMA_VERSION, SessionRecord, ToolCallRecord, Verdict};
use serde_json::json;

use super::*;

fn call(id: &str, received_at_us: i64, tool: &str) -> ToolCallRecord {
    ToolCallRecord {
        schema: SCHEMA_VERSION,
        id: id.to_owned(),
        session_id: "0190b4d6-0000-7000-8000-000000000001".to_owned(),
        received_at_us,
        decided_at_us: received_at_us + 50,
        agent: "claude-code".to_owned(),
        service: "shell".to_owned(),
        tool: tool.to_owned(),
        arguments: json!({"command": "ls -la /tmp", "n": 3}),
        verdict: Verdict::Allow,
        action: "allow".to_owned(),
        rule_id: Some("allow-ls".to_owned()),
        reason: "matched rule allow-ls".to_owned(),
        outcome: Outcome::Pending,
        finished_at_us: None,
        duration_us: None,
        error: None,
    }
}

fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

fn count_rows(db: &Path) -> i64 {
    let conn = rusqlite::Connection::open(db).expect("open db");
    conn.query_row("SELECT count(*) FROM tool_calls", [], |r| r.get(0))
        .expect("count")
}

#[tokio::test]
async fn round_trip_and_filters() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let store = AuditStore::open(&data).expect("open");
    assert_eq!(store.db_path(), data.join(DB_FILE_NAME));

    let base = 1_790_000_000_000_000_i64; // 2026-09-21
    let ids: Vec<String> = (0..4).map(|_| new_id()).collect();
    let tools = ["run_command", "git_status", "git_commit", "read_file"];
    for (i, (id, tool)) in ids.iter().zip(tools).enumerate() {
        let t = base + i as i64 * 60_000_000;
        store.record_call(call(id, t, tool)).await.expect("record");
    }
    store.record_outcome(&ids[0], Outcome::Ok, base + 1_500, 1_500, None);
    store.record_outcome(
        &ids[1],
        Outcome::ToolError,
        base + 60_002_000,
        2_000,
        Some("not a repo".into()),
    );
    store.update_verdict(&ids[2], Verdict::Approved, "approved by alice");
    store.record_session(SessionRecord {
        schema: SCHEMA_VERSION,
        id: "0190b4d6-0000-7000-8000-000000000001".into(),
        service: "shell".into(),
        command: vec!["mcp-shell".into(), "--root".into(), "/".into()],
        started_at_us: base,
        ended_at_us: None,
        client_name: Some("claude-code".into()),
        client_version: Some("1.0".into()),
        server_name: None,
        server_version: None,
        protocol_version: Some("2025-06-18".into()),
        client_capabilities: json!({"elicitation": {}}),
        server_capabilities: json!({}),
        restarts: 0,
        last_exit: None,
    });
    store.flush().await.expect("flush");

    let db = store.db_path().to_owned();
    let all = query_calls(&db, &AuditQuery::default()).expect("query");
    assert_eq!(
        all.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
        ids.iter().map(String::as_str).collect::<Vec<_>>(),
        "all calls, oldest first"
    );
    assert_eq!(all[0].outcome, Outcome::Ok);
    assert_eq!(all[0].duration_us, Some(1_500));
    assert_eq!(all[0].finished_at_us, Some(base + 1_500));
    assert_eq!(all[0].arguments, json!({"command": "ls -la /tmp", "n": 3}));
    assert_eq!(all[1].outcome, Outcome::ToolError);
    assert_eq!(all[1].error.as_deref(), Some("not a repo"));
    assert_eq!(all[2].verdict, Verdict::Approved);
    assert_eq!(all[2].reason, "approved by alice");
    assert!(
        all[2].decided_at_us > base + 120_000_000,
        "decision time moved"
    );
    assert_eq!(all[3].outcome, Outcome::Pending);
    assert_eq!(all[3], call(&ids[3], base + 180_000_000, "read_file"));

    // since
    let q = AuditQuery {
        since_us: Some(base + 60_000_000),
        ..Default::default()
    };
    let got = query_calls(&db, &q).expect("since");
    assert_eq!(got.len(), 3);
    assert_eq!(got[0].id, ids[1]);
    // tool, exact and wildcard
    let q = AuditQuery {
        tool: Some("git_status".into()),
        ..Default::default()
    };
    assert_eq!(query_calls(&db, &q).expect("tool").len(), 1);
    let q = AuditQuery {
        tool: Some("git_*".into()),
        ..Default::default()
    };
    let got = query_calls(&db, &q).expect("glob");
    assert_eq!(
        got.iter().map(|r| &r.tool).collect::<Vec<_>>(),
        ["git_status", "git_commit"]
    );
    // `_` in a pattern is literal, not LIKE's any-character.
    let q = AuditQuery {
        tool: Some("git*status".into()),
        ..Default::default()
    };
    assert_eq!(query_calls(&db, &q).expect("glob2").len(), 1);
    let q = AuditQuery {
        tool: Some("run?command*".into()),
        ..Default::default()
    };
    assert!(query_calls(&db, &q).expect("glob3").is_empty());
    let q = AuditQuery {
        tool: Some("nope".into()),
        ..Default::default()
    };
    assert!(query_calls(&db, &q).expect("no tool").is_empty());
    // limit keeps the newest, still oldest first
    let q = AuditQuery {
        limit: Some(2),
        ..Default::default()
    };
    let got = query_calls(&db, &q).expect("limit");
    assert_eq!(
        got.iter().map(|r| &r.id).collect::<Vec<_>>(),
        [&ids[2], &ids[3]]
    );
    // combined
    let q = AuditQuery {
        since_us: Some(base + 60_000_000),
        tool: Some("git_*".into()),
        limit: Some(1),
    };
    let got = query_calls(&db, &q).expect("combined");
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].id, ids[2]);

    // JSON lines round trip through serde.
    let mut buf = Vec::new();
    render_json_lines(&all, &mut buf).expect("json");
    let text = String::from_utf8(buf).expect("utf8");
    let back: Vec<ToolCallRecord> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("parse line"))
        .collect();
    assert_eq!(back, all);

    // Table.
    let mut buf = Vec::new();
    render_table(&all, &mut buf).expect("table");
    let table = String::from_utf8(buf).expect("utf8");
    assert!(table.starts_with("TIME"), "{table}");
    assert!(table.contains("run_command"), "{table}");
    assert!(table.contains("approved"), "{table}");
    assert!(table.contains("tool_error"), "{table}");
    assert!(table.contains("2026-09-21T"), "{table}");
    assert!(table.contains(" 1.5 "), "{table}");
    assert_eq!(table.lines().count(), 5);

    // The session was upserted.
    store.record_session(SessionRecord {
        schema: SCHEMA_VERSION,
        id: "0190b4d6-0000-7000-8000-000000000001".into(),
        service: "shell".into(),
        command: vec!["mcp-shell".into()],
        started_at_us: base,
        ended_at_us: Some(base + 9),
        client_name: None,
        client_version: None,
        server_name: None,
        server_version: None,
        protocol_version: None,
        client_capabilities: json!({}),
        server_capabilities: json!({}),
        restarts: 2,
        last_exit: Some("signal 9".into()),
    });
    store.flush().await.expect("flush");
    let conn = rusqlite::Connection::open(&db).expect("open");
    let (n, restarts, cmd): (i64, i64, String) = conn
        .query_row(
            "SELECT count(*), max(restarts), max(command) FROM sessions",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .expect("sessions");
    assert_eq!((n, restarts, cmd.as_str()), (1, 2, r#"["mcp-shell"]"#));
}

#[test]
fn table_neutralises_control_characters_and_truncates() {
    let mut rec = call(&new_id(), 0, "evil\x1b[2Jtool");
    rec.agent = "agent\u{202E}gnp.exe".into();
    rec.arguments = json!({"text": "x".repeat(500)});
    let mut buf = Vec::new();
    render_table(&[rec], &mut buf).expect("table");
    let table = String::from_utf8(buf).expect("utf8");
    assert!(!table.contains('\x1b'));
    assert!(!table.contains('\u{202E}'));
    assert!(table.contains("evil?[2Jtool"), "{table}");
    let last = table.lines().nth(1).expect("row");
    let args = last.rsplit("  ").next().expect("args cell");
    assert_eq!(args.chars().count(), 60, "{args}");
    assert!(args.ends_with('…'));
    assert!(table.contains("1970-01-01T00:00:00Z"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn thousand_concurrent_calls_commit_exactly_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = AuditStore::open(dir.path()).expect("open");
    let mut tasks = Vec::new();
    for t in 0..8 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            // 125 calls in flight at once from this task.
            let mut set = tokio::task::JoinSet::new();
            for i in 0..125 {
                let id = new_id();
                let rec = call(&id, t * 1000 + i, "run_command");
                let store = store.clone();
                set.spawn(async move { store.record_call(rec).await.map(|()| id) });
            }
            let mut ids = Vec::new();
            while let Some(joined) = set.join_next().await {
                ids.push(joined.expect("join")?);
            }
            Ok::<_, AuditError>(ids)
        }));
    }
    let mut expected = HashSet::new();
    for t in tasks {
        for id in t.await.expect("task").expect("record_call") {
            assert!(expected.insert(id), "duplicate id");
        }
    }
    assert_eq!(expected.len(), 1000);
    // Committed before flush: record_call resolved only after commit.
    let db = store.db_path().to_owned();
    assert_eq!(count_rows(&db), 1000);
    let got = query_calls(&db, &AuditQuery::default()).expect("query");
    let got_ids: HashSet<String> = got.into_iter().map(|r| r.id).collect();
    assert_eq!(got_ids, expected);
}

const KILL_CHILD_ENV: &str = "FLOWLINK_AUDIT_KILL_CHILD_DIR";
const ID_PREFIX: &str = "RECORDED ";

/// Child half of [`kill_minus_nine_loses_no_confirmed_call`]: only acts when the parent set
/// [`KILL_CHILD_ENV`]. Records calls forever, printing each id once `record_call` has resolved.
#[test]
fn kill_child_writer() {
    let Some(dir) = std::env::var_os(KILL_CHILD_ENV) else {
        return;
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let store = AuditStore::open(Path::new(&dir)).expect("child open");
        // Several concurrent writers, so kills land inside group commits too.
        let mut tasks = Vec::new();
        for w in 0..4 {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                let mut stdout = std::io::stdout();
                for i in 0.. {
                    let id = new_id();
                    let mut rec = call(&id, w * 1_000_000 + i, "run_command");
                    rec.arguments = json!({"i": i, "pad": "p".repeat(200)});
                    store.record_call(rec).await.expect("child record_call");
                    // Straight to the fd (not the test harness's capture), one write per line.
                    let line = format!("{ID_PREFIX}{id}\n");
                    stdout.write_all(line.as_bytes()).expect("stdout");
                    stdout.flush().expect("flush stdout");
                    store.record_outcome(&id, Outcome::Ok, i, 1, None);
                }
            }));
        }
        for t in tasks {
            let _ = t.await;
        }
    });
}

#[test]
fn kill_minus_nine_loses_no_confirmed_call() {
    use nix::sys::signal::{Signal, kill};
    use nix::unistd::Pid;

    let dir = tempfile::tempdir().expect("tempdir");
    let exe = std::env::current_exe().expect("current exe");
    let module = module_path!()
        .split_once("::")
        .map_or(module_path!(), |(_, rest)| rest);
    let mut child = Command::new(exe)
        .args([
            "--exact",
            &format!("{module}::kill_child_writer"),
            "--nocapture",
            "--test-threads=1",
        ])
        .env(KILL_CHILD_ENV, dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn child");
    let stdout = child.stdout.take().expect("child stdout");
    let mut lines = BufReader::new(stdout).lines();
    let mut reported = Vec::new();
    while reported.len() < 500 {
        match lines.next() {
            Some(Ok(line)) => {
                if let Some(id) = line.strip_prefix(ID_PREFIX) {
                    reported.push(id.to_owned());
                }
            }
            other => panic!("child stopped early: {other:?}"),
        }
    }
    let pid = Pid::from_raw(i32::try_from(child.id()).expect("pid"));
    kill(pid, Signal::SIGKILL).expect("SIGKILL");
    let status = child.wait().expect("wait");
    assert!(!status.success(), "child was killed");
    // Ids the child printed between our last read and its death count too.
    for line in lines.map_while(Result::ok) {
        if let Some(id) = line.strip_prefix(ID_PREFIX) {
            reported.push(id.to_owned());
        }
    }

    // Recover (replays the WAL) and check every reported id.
    let store = AuditStore::open(dir.path()).expect("reopen after kill");
    let got = query_calls(store.db_path(), &AuditQuery::default()).expect("query");
    let got: HashSet<String> = got.into_iter().map(|r| r.id).collect();
    let missing: Vec<&String> = reported.iter().filter(|id| !got.contains(*id)).collect();
    assert!(
        missing.is_empty(),
        "{} of {} confirmed ids lost",
        missing.len(),
        reported.len()
    );
    assert!(got.len() >= reported.len());
}

#[test]
fn open_under_a_regular_file_fails_clearly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("not-a-dir");
    std::fs::write(&file, b"x").expect("write");
    let err = AuditStore::open(&file.join("data")).expect_err("must fail");
    assert!(matches!(err, AuditError::CreateDir { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains("not-a-dir/data"), "{msg}");
    assert!(msg.contains("writable directory"), "{msg}");

    let err = AuditStore::open(&file).expect_err("must fail");
    assert!(matches!(err, AuditError::CreateDir { .. }), "{err:?}");
}

#[test]
fn open_in_read_only_directory_fails_clearly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ro = dir.path().join("ro");
    std::fs::create_dir(&ro).expect("mkdir");
    std::fs::set_permissions(&ro, std::fs::Permissions::from_mode(0o500)).expect("chmod");
    if std::fs::write(ro.join("probe"), b"").is_ok() {
        return; // running as root: permissions are not enforced
    }
    let err = AuditStore::open(&ro).expect_err("must fail");
    std::fs::set_permissions(&ro, std::fs::Permissions::from_mode(0o700)).expect("chmod back");
    assert!(matches!(err, AuditError::CreateFile { .. }), "{err:?}");
    assert!(err.to_string().contains("audit.sqlite3"), "{err}");
}

#[tokio::test]
async fn full_disk_makes_record_call_fail() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = AuditStore::open_with_max_pages(dir.path(), 16).expect("open");
    let mut failed = None;
    let mut first_ok = None;
    for i in 0..200 {
        let id = new_id();
        let mut rec = call(&id, i, "write_file");
        rec.arguments = json!({"content": "z".repeat(4000)});
        match store.record_call(rec).await {
            Ok(()) => {
                first_ok.get_or_insert(id);
            }
            Err(e) => {
                failed = Some(e);
                break;
            }
        }
    }
    let err = failed.expect("a full database must refuse the record");
    assert!(matches!(err, AuditError::DiskFull { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains("free disk space in"), "{msg}");
    assert!(msg.contains(&dir.path().display().to_string()), "{msg}");

    // The writer survives and keeps answering: an update that cannot be written is reported by
    // the next flush, and only once.
    let first = first_ok.expect("some calls fit before the limit");
    store.record_outcome(&first, Outcome::Ok, 1, 1, Some("e".repeat(200_000)));
    let err = store
        .flush()
        .await
        .expect_err("the lost update is reported");
    assert!(
        matches!(err, AuditError::UpdatesFailed { count: 1, .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("free disk space in"), "{err}");
    store
        .flush()
        .await
        .expect("nothing failed since the last flush");
    // An update that matches no call changes nothing and is not a failure.
    store.record_outcome("no-such-id", Outcome::Ok, 1, 1, None);
    store.flush().await.expect("flush after a no-op update");
}

#[tokio::test]
async fn duplicate_id_is_refused_alone() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = AuditStore::open(dir.path()).expect("open");
    let id = new_id();
    let other = new_id();
    store.record_call(call(&id, 1, "a")).await.expect("first");
    let (dup, ok) = tokio::join!(
        store.record_call(call(&id, 2, "a")),
        store.record_call(call(&other, 3, "b"))
    );
    let err = dup.expect_err("duplicate");
    assert!(matches!(err, AuditError::Rejected { .. }), "{err:?}");
    ok.expect("the other call in the same batch commits");
    assert_eq!(count_rows(store.db_path()), 2);
}

#[test]
fn files_are_private() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("a/b");
    let store = AuditStore::open(&data).expect("open");
    let mode = |p: &Path| std::fs::metadata(p).expect("meta").permissions().mode() & 0o777;
    assert_eq!(mode(&data), 0o700);
    assert_eq!(mode(&dir.path().join("a")), 0o700);
    assert_eq!(mode(store.db_path()), 0o600);
    let wal = data.join("audit.sqlite3-wal");
    if wal.exists() {
        assert_eq!(mode(&wal), 0o600);
    }
    // An existing, too-open database file is tightened.
    drop(store);
    std::fs::set_permissions(
        data.join(DB_FILE_NAME),
        std::fs::Permissions::from_mode(0o644),
    )
    .expect("chmod");
    let store = AuditStore::open(&data).expect("reopen");
    assert_eq!(mode(store.db_path()), 0o600);
}

#[test]
fn newer_schema_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = AuditStore::open(dir.path()).expect("open");
    let db = store.db_path().to_owned();
    drop(store);
    let conn = rusqlite::Connection::open(&db).expect("open");
    conn.pragma_update(None, "user_version", 99).expect("bump");
    drop(conn);
    let err = AuditStore::open(dir.path()).expect_err("too new");
    assert!(
        matches!(err, AuditError::SchemaTooNew { found: 99, .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("upgrade flowlink-proxy"));
    let err = query_calls(&db, &AuditQuery::default()).expect_err("too new");
    assert!(matches!(err, AuditError::SchemaTooNew { .. }), "{err:?}");
}

#[test]
fn reopen_keeps_data_and_schema() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("rt");
    let id = new_id();
    {
        let store = AuditStore::open(dir.path()).expect("open");
        rt.block_on(store.record_call(call(&id, 5, "t")))
            .expect("record");
    }
    let store = AuditStore::open(dir.path()).expect("reopen");
    let got = query_calls(store.db_path(), &AuditQuery::default()).expect("query");
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].id, id);
}

#[test]
fn query_missing_database() {
    let dir = tempfile::tempdir().expect("tempdir");
    let err =
        query_calls(&dir.path().join(DB_FILE_NAME), &AuditQuery::default()).expect_err("missing");
    assert!(matches!(err, AuditError::NotFound { .. }), "{err:?}");
}

#[test]
fn since_parsing() {
    let now = 1_800_000_000_000_000;
    assert_eq!(parse_since("90s", now).expect("s"), now - 90_000_000);
    assert_eq!(parse_since("15m", now).expect("m"), now - 900_000_000);
    assert_eq!(parse_since("2h", now).expect("h"), now - 7_200_000_000);
    assert_eq!(parse_since("7d", now).expect("d"), now - 604_800_000_000);
    assert_eq!(parse_since(" 0s ", now).expect("0"), now);
    assert_eq!(
        parse_since("2026-11-25T10:00:00Z", now).expect("rfc3339"),
        1_795_600_800_000_000
    );
    assert_eq!(
        parse_since("2026-11-25T11:00:00.5+01:00", now).expect("offset"),
        1_795_600_800_500_000
    );
    for bad in [
        "",
        "s",
        "15",
        "15x",
        "1.5h",
        "-5m",
        "2026-11-25",
        "yesterday",
        "99999999999999999999d",
        "9999999999999d",
    ] {
        let err = parse_since(bad, now).expect_err(bad);
        assert!(matches!(err, AuditError::BadSince { .. }), "{bad}: {err:?}");
        assert!(err.to_string().contains("expected a duration"), "{err}");
    }
}

#[test]
fn default_data_dir_is_named_flowlink() {
    if let Some(d) = default_data_dir() {
        assert!(
            d.to_string_lossy().to_lowercase().contains("flowlink"),
            "{d:?}"
        );
    }
}
