//! Tests against real SQLite files in temporary directories.

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use flowlink_proto::audit::{Outcome, SCHEMA_VERSION, SessionRecord, ToolCallRecord, Verdict};
use serde_json::json;

use super::store::Options;
use super::*;

fn call(id: &str, received_at_us: i64, tool: &str) -> ToolCallRecord {
    ToolCallRecord {
        risk: Some(85),
        findings: vec![flowlink_proto::audit::FindingRecord {
            id: "filesystem.delete_home".into(),
            category: "filesystem".into(),
            risk: 85,
            pointer: "/command".into(),
            explanation: "deletes your home directory".into(),
        }],
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
        policy_source: Some(flowlink_proto::audit::PolicySource::BundleOffline),
        policy_bundle: Some("5ee1f00d".to_owned()),
    }
}

fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// The segment files in the journal directory.
fn segments(data: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(data.join(JOURNAL_DIR_NAME))
        .expect("journal dir")
        .map(|e| e.expect("entry").path())
        .collect();
    v.sort();
    v
}

fn ids_in_db(db: &Path) -> HashSet<String> {
    let conn = rusqlite::Connection::open(db).expect("open db");
    let mut stmt = conn.prepare("SELECT id FROM tool_calls").expect("prepare");
    stmt.query_map([], |r| r.get(0))
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("ids")
}

/// Re-runs this test binary as a child executing only the test `name`.
fn child_test(name: &str) -> Command {
    let exe = std::env::current_exe().expect("current exe");
    let module = module_path!()
        .split_once("::")
        .map_or(module_path!(), |(_, rest)| rest);
    let mut cmd = Command::new(exe);
    cmd.args([
        "--exact",
        &format!("{module}::{name}"),
        "--nocapture",
        "--test-threads=1",
    ]);
    cmd
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
    store.flush().await.expect("flush");
    let db = store.db_path().to_owned();
    assert_eq!(count_rows(&db), 1000);
    let got = query_calls(&db, &AuditQuery::default()).expect("query");
    let got_ids: HashSet<String> = got.into_iter().map(|r| r.id).collect();
    assert_eq!(got_ids, expected);
}

const KILL_CHILD_ENV: &str = "FLOWLINK_AUDIT_KILL_CHILD_DIR";
const KILL_CHILD_HOLD_ENV: &str = "FLOWLINK_AUDIT_KILL_CHILD_HOLD";
const ID_PREFIX: &str = "RECORDED ";

/// Child half of the kill -9 tests: only acts when the parent set [`KILL_CHILD_ENV`]. Records calls
/// forever, printing each id once `record_call` has resolved. With [`KILL_CHILD_HOLD_ENV`] its
/// writer thread ingests nothing, so the journal is the only place the calls are.
#[test]
fn kill_child_writer() {
    let Some(dir) = std::env::var_os(KILL_CHILD_ENV) else {
        return;
    };
    let hold = std::env::var_os(KILL_CHILD_HOLD_ENV).is_some();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let options = Options {
            hold_ingest: hold.then(|| Arc::new(AtomicBool::new(true))),
            ..Options::default()
        };
        let store = AuditStore::open_with(Path::new(&dir), options).expect("child open");
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

/// Kills a child recording calls with SIGKILL after it confirmed 500, then recovers. Returns the
/// ids the child confirmed, the ids SQLite had before recovery and what `recover` inserted.
fn kill_child_and_recover(hold: bool) -> (Vec<String>, HashSet<String>, usize) {
    use nix::sys::signal::{Signal, kill};
    use nix::unistd::Pid;

    let dir = tempfile::tempdir().expect("tempdir");
    let mut cmd = child_test("kill_child_writer");
    cmd.env(KILL_CHILD_ENV, dir.path());
    if hold {
        cmd.env(KILL_CHILD_HOLD_ENV, "1");
    }
    let mut child = cmd
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

    // What SQLite alone has (opening replays its WAL), then what the journal adds.
    let db = dir.path().join(DB_FILE_NAME);
    let before = ids_in_db(&db);
    assert_eq!(segments(dir.path()).len(), 1, "the dead child's segment");
    let recovered = recover(dir.path()).expect("recover");
    let after = ids_in_db(&db);
    let missing: Vec<&String> = reported.iter().filter(|id| !after.contains(*id)).collect();
    assert!(
        missing.is_empty(),
        "{} of {} confirmed ids lost",
        missing.len(),
        reported.len()
    );
    assert_eq!(after.len(), before.len() + recovered);
    assert!(
        segments(dir.path()).is_empty(),
        "the replayed segment is gone"
    );
    // Recovering again changes nothing, and a store opened afterwards sees everything.
    assert_eq!(recover(dir.path()).expect("recover again"), 0);
    let store = AuditStore::open(dir.path()).expect("reopen after kill");
    let got = query_calls(store.db_path(), &AuditQuery::default()).expect("query");
    assert_eq!(got.len(), after.len());
    (reported, before, recovered)
}

#[test]
fn kill_minus_nine_loses_no_confirmed_call() {
    let (reported, before, recovered) = kill_child_and_recover(false);
    let only_in_journal = reported.iter().filter(|id| !before.contains(*id)).count();
    // How far SQLite trailed the journal at the kill depends on timing: reported, not asserted.
    eprintln!(
        "kill -9: {} confirmed, {only_in_journal} of them only in the journal; recover inserted {recovered}",
        reported.len()
    );
    assert!(recovered >= only_in_journal);
}

#[test]
fn kill_minus_nine_with_ingestion_stalled_recovers_everything_from_the_journal() {
    let (reported, before, recovered) = kill_child_and_recover(true);
    assert!(before.is_empty(), "the writer ingested nothing");
    assert!(
        recovered >= reported.len(),
        "{recovered} recovered, {} confirmed",
        reported.len()
    );
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
async fn full_database_keeps_the_journal_until_recovery() {
    let dir = tempfile::tempdir().expect("tempdir");
    let options = Options {
        max_pages: Some(16),
        ..Options::default()
    };
    let store = AuditStore::open_with(dir.path(), options).expect("open");
    let mut ids = Vec::new();
    for i in 0..200 {
        let id = new_id();
        let mut rec = call(&id, i, "write_file");
        rec.arguments = json!({"content": "z".repeat(4000)});
        // The journal takes it; SQLite will not.
        store.record_call(rec).await.expect("journaled");
        ids.push(id);
    }
    let err = store
        .flush()
        .await
        .expect_err("a full database must be reported");
    let AuditError::CallsNotIngested { calls, .. } = &err else {
        panic!("{err:?}");
    };
    let calls = *calls;
    assert!(calls > 0 && calls < 200, "{calls}");
    let msg = err.to_string();
    assert!(msg.contains("free disk space in"), "{msg}");
    assert!(msg.contains(&dir.path().display().to_string()), "{msg}");
    assert!(msg.contains("kept in the journal"), "{msg}");
    let db = store.db_path().to_owned();
    let ingested = ids_in_db(&db);
    assert_eq!(ingested.len() as u64 + calls, 200);

    // The writer survives and keeps answering: an update that cannot be written is reported by
    // the next flush, and only once.
    let first = ingested
        .iter()
        .next()
        .expect("some calls fit before the limit");
    store.record_outcome(first, Outcome::Ok, 1, 1, Some("e".repeat(200_000)));
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

    // Shut down: the segment with the calls that did not fit is kept, not deleted...
    let segment = store.segment_path().expect("segment");
    drop(store);
    assert_eq!(segments(dir.path()), [segment]);
    // ...and recovery, with room again, brings every call in.
    let recovered = recover(dir.path()).expect("recover");
    assert_eq!(recovered as u64, calls);
    assert_eq!(ids_in_db(&db), ids.into_iter().collect());
    assert!(segments(dir.path()).is_empty());
}

const FSIZE_CHILD_ENV: &str = "FLOWLINK_AUDIT_FSIZE_CHILD_DIR";
/// The child's `ulimit -f`, in 512-byte blocks.
const FSIZE_BLOCKS: usize = 512;
const FSIZE_CHILD_OK: &str = "FSIZE CHILD OK";

/// Child half of [`journal_write_failure_refuses_the_call_and_leaves_no_half_line`]: runs under
/// `ulimit -f` with SIGXFSZ ignored, so a write past the limit fails with EFBIG after a short write.
#[test]
fn fsize_child_writer() {
    let Some(dir) = std::env::var_os(FSIZE_CHILD_ENV) else {
        return;
    };
    let limit = FSIZE_BLOCKS * 512;
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let store = AuditStore::open(Path::new(&dir)).expect("child open");
        let segment = store.segment_path().expect("segment");
        let line_len = |rec: &ToolCallRecord| serde_json::to_vec(rec).expect("encode").len() + 1;
        // Big records sized so that 30 fill the segment to 1000 bytes short of the limit.
        let mut empty = call(&new_id(), 1, "write_file");
        empty.arguments = json!({"content": ""});
        let pad = (limit - 1000) / 30 - line_len(&empty);
        let big = |id: &str| {
            let mut r = call(id, 1, "write_file");
            r.arguments = json!({"content": "z".repeat(pad)});
            r
        };
        let mut accepted = Vec::new();
        let err = loop {
            let id = new_id();
            match store.record_call(big(&id)).await {
                Ok(()) => accepted.push(id),
                Err(e) => break e,
            }
            assert!(accepted.len() <= 30, "the file-size limit never hit");
        };
        assert_eq!(accepted.len(), 30);
        assert!(matches!(err, AuditError::JournalWrite { .. }), "{err:?}");
        let msg = err.to_string();
        assert!(msg.contains(&segment.display().to_string()), "{msg}");
        assert!(msg.contains("ulimit -f"), "{msg}");
        // The short write was cut off: only whole lines, all of them parseable.
        let bytes = std::fs::read(&segment).expect("read segment");
        assert_eq!(bytes.last(), Some(&b'\n'));
        let recs = super::journal::parse_segment(&segment, &bytes);
        assert_eq!(
            recs.iter().map(|r| r.id.clone()).collect::<Vec<_>>(),
            accepted
        );
        // Not sticky: a record that fits is accepted again, right after the others.
        let small_id = new_id();
        store
            .record_call(call(&small_id, 2, "t"))
            .await
            .expect("a record that fits after a failure");
        let bytes = std::fs::read(&segment).expect("read segment");
        let recs = super::journal::parse_segment(&segment, &bytes);
        assert_eq!(recs.len(), 31);
        assert_eq!(recs[30].id, small_id);
        // And a big one is still refused, cleanly.
        store
            .record_call(big(&new_id()))
            .await
            .expect_err("still too big");
        let len = std::fs::metadata(&segment).expect("meta").len();
        assert_eq!(usize::try_from(len).expect("len"), bytes.len());
        let mut out = std::io::stdout();
        out.write_all(format!("{FSIZE_CHILD_OK}\n").as_bytes())
            .expect("stdout");
        out.flush().expect("flush");
        // Ingestion may fail too (the WAL is under the same limit): whatever did not make it
        // stays in the journal for the parent's recovery.
        let _ = store.flush().await;
    });
}

#[test]
fn journal_write_failure_refuses_the_call_and_leaves_no_half_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Create and migrate the database first, so the child only appends.
    drop(AuditStore::open(dir.path()).expect("open"));
    let test = child_test("fsize_child_writer");
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "trap '' XFSZ; ulimit -f {FSIZE_BLOCKS} || exit 99; exec \"$0\" \"$@\""
        ))
        .arg(test.get_program())
        .args(test.get_args())
        .env(FSIZE_CHILD_ENV, dir.path())
        .stderr(Stdio::inherit())
        .output()
        .expect("run child");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains(FSIZE_CHILD_OK),
        "child failed: {:?}\n{stdout}",
        out.status
    );
    // Everything the child confirmed is on record after recovery: 30 big records and the small one.
    recover(dir.path()).expect("recover");
    assert_eq!(count_rows(&dir.path().join(DB_FILE_NAME)), 31);
    assert!(segments(dir.path()).is_empty());
}

#[tokio::test]
async fn recovery_replays_dead_segments_only() {
    let dir = tempfile::tempdir().expect("tempdir");
    let hold = Arc::new(AtomicBool::new(true));
    let options = Options {
        hold_ingest: Some(Arc::clone(&hold)),
        ..Options::default()
    };
    let store = AuditStore::open_with(dir.path(), options).expect("open");
    let db = store.db_path().to_owned();
    let first: Vec<String> = (0..3).map(|_| new_id()).collect();
    for (i, id) in first.iter().enumerate() {
        store
            .record_call(call(id, i as i64, "a"))
            .await
            .expect("record");
    }
    // A live (locked) segment is not touched.
    let live = store.segment_path().expect("segment");
    assert_eq!(recover(dir.path()).expect("recover"), 0);
    assert!(live.exists());
    assert_eq!(count_rows(&db), 0);

    // Its owner "dies": the lock goes, the segment stays. A malformed line in the middle and a
    // torn last line (a write cut short by the death) are skipped.
    let dead = store.abandon_segment().expect("abandon");
    assert_eq!(dead, live);
    let text = std::fs::read_to_string(&dead).expect("read");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3);
    let torn = &lines[2][..lines[2].len() / 2];
    std::fs::write(
        &dead,
        format!("{}\nnot json\n{}\n{}\n{torn}", lines[0], lines[1], lines[2]),
    )
    .expect("rewrite");
    // The store carries on in a new segment.
    store
        .record_call(call(&new_id(), 9, "b"))
        .await
        .expect("record");
    let new_segment = store.segment_path().expect("new segment");
    assert_ne!(new_segment, dead);

    assert_eq!(recover(dir.path()).expect("recover"), 3);
    assert!(!dead.exists());
    assert!(new_segment.exists());
    assert_eq!(ids_in_db(&db), first.iter().cloned().collect());
    let got = query_calls(&db, &AuditQuery::default()).expect("query");
    assert_eq!(got[0], call(&first[0], 0, "a"));

    // The writer catches up (its copies of the first three are ignored), and a clean shutdown
    // leaves no journal behind.
    hold.store(false, Ordering::Release);
    store.flush().await.expect("flush");
    assert_eq!(count_rows(&db), 4);
    drop(store);
    assert!(segments(dir.path()).is_empty());
}

#[tokio::test]
async fn segments_rotate_and_clean_shutdown_leaves_no_journal() {
    let dir = tempfile::tempdir().expect("tempdir");
    let options = Options {
        segment_limit: Some(1000),
        ..Options::default()
    };
    let store = AuditStore::open_with(dir.path(), options).expect("open");
    let first = store.segment_path().expect("segment");
    for i in 0..20 {
        store
            .record_call(call(&new_id(), i, "t"))
            .await
            .expect("record");
    }
    let current = store.segment_path().expect("segment");
    assert_ne!(first, current, "rotated");
    store.flush().await.expect("flush");
    // Retired segments are deleted once ingested; only the live one remains.
    assert_eq!(segments(dir.path()), [current]);
    assert_eq!(count_rows(store.db_path()), 20);
    drop(store);
    assert!(segments(dir.path()).is_empty());
    // Dropping one clone does not end the segment; dropping the last does.
    let store = AuditStore::open(dir.path()).expect("reopen");
    let clone = store.clone();
    drop(store);
    assert_eq!(segments(dir.path()).len(), 1);
    drop(clone);
    assert!(segments(dir.path()).is_empty());
}

#[tokio::test]
async fn duplicate_id_keeps_the_first_record() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = AuditStore::open(dir.path()).expect("open");
    let id = new_id();
    let other = new_id();
    store.record_call(call(&id, 1, "a")).await.expect("first");
    let (dup, ok) = tokio::join!(
        store.record_call(call(&id, 2, "a")),
        store.record_call(call(&other, 3, "b"))
    );
    // Ingestion is idempotent by id (that is what makes journal replay harmless).
    dup.expect("journaled");
    ok.expect("journaled");
    store.flush().await.expect("a duplicate is not a failure");
    assert_eq!(count_rows(store.db_path()), 2);
    let got = query_calls(store.db_path(), &AuditQuery::default()).expect("query");
    assert_eq!(got[0], call(&id, 1, "a"));
}

/// A measurement, not a test: `cargo test --release -p flowlink-proxy --lib --
/// --ignored --nocapture record_call_latency`.
#[test]
#[ignore = "a measurement; run by hand in release"]
fn record_call_latency() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let store = AuditStore::open(dir.path()).expect("open");
        let n = 10_000;
        let mut each = Vec::with_capacity(n);
        let start = Instant::now();
        for i in 0..n {
            let rec = call(&new_id(), i as i64, "run_command");
            let t = Instant::now();
            store.record_call(rec).await.expect("record");
            each.push(t.elapsed());
        }
        let total = start.elapsed();
        let t = Instant::now();
        store.flush().await.expect("flush");
        let flush = t.elapsed();
        each.sort();
        let us = |d: std::time::Duration| d.as_secs_f64() * 1e6;
        eprintln!(
            "record_call x{n} sequential: {:.2} µs/call including building the record; \
             record_call alone p50 {:.2} µs, p99 {:.2} µs, max {:.1} µs; then flush {:.1} ms",
            us(total) / n as f64,
            us(each[n / 2]),
            us(each[n * 99 / 100]),
            us(each[n - 1]),
            flush.as_secs_f64() * 1e3
        );
        assert_eq!(count_rows(store.db_path()), n as i64);
    });
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
    assert_eq!(mode(&data.join(JOURNAL_DIR_NAME)), 0o700);
    assert_eq!(mode(&store.segment_path().expect("segment")), 0o600);
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

// ---- the outbox ---------------------------------------------------------------------------------

fn outbox_ids(data: &Path) -> Vec<(String, String)> {
    let reader = OutboxReader::open(data).expect("reader");
    reader
        .batch(0, 10_000)
        .expect("batch")
        .into_iter()
        .map(|e| (e.envelope.id, e.envelope.kind))
        .collect()
}

#[tokio::test]
async fn the_outbox_gets_every_record_and_loses_only_acknowledged_events() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = AuditStore::open_with_outbox(dir.path(), OutboxConfig::default()).expect("open");
    let ids: Vec<String> = (0..3).map(|_| new_id()).collect();
    for (i, id) in ids.iter().enumerate() {
        store
            .record_call(call(id, i as i64, "a"))
            .await
            .expect("record");
    }
    store.record_outcome(&ids[0], Outcome::Ok, 10, 5, None);
    store.record_outcome(&ids[0], Outcome::Ok, 11, 6, None);
    store.flush().await.expect("flush");
    let queued = outbox_ids(dir.path());
    // One event per call (its own id), and one later snapshot of the first call: the second
    // outcome replaced the first snapshot while both were queued.
    assert_eq!(queued.len(), 4, "{queued:?}");
    for id in &ids {
        assert!(queued.iter().any(|(e, k)| e == id && k == "tool_call"));
    }
    assert_eq!(store.outbox_depth(), 4);
    // A snapshot carries the current row.
    let reader = OutboxReader::open(dir.path()).expect("reader");
    let batch = reader.batch(0, 10).expect("batch");
    let snapshot = batch
        .iter()
        .find(|e| e.envelope.id != ids[0] && e.envelope.record["id"] == ids[0].as_str())
        .expect("snapshot");
    assert_eq!(snapshot.envelope.record["outcome"], "ok");
    assert_eq!(snapshot.envelope.record["finished_at_us"], 11);
    assert_eq!(snapshot.envelope.record["policy_source"], "bundle_offline");
    // Batches page by seq.
    let first_two = reader.batch(0, 2).expect("batch");
    let rest = reader.batch(first_two[1].seq, 10).expect("batch");
    assert_eq!(first_two.len() + rest.len(), 4);

    store.outbox_ack(vec![ids[1].clone(), "unknown-id".into()]);
    store.flush().await.expect("flush");
    assert_eq!(store.outbox_depth(), 3);
    assert!(!outbox_ids(dir.path()).iter().any(|(e, _)| e == &ids[1]));
    // The audit row itself stays.
    assert_eq!(count_rows(store.db_path()), 3);
}

#[tokio::test]
async fn recovery_queues_the_calls_of_a_killed_enrolled_proxy() {
    let dir = tempfile::tempdir().expect("tempdir");
    let hold = Arc::new(AtomicBool::new(true));
    let store = AuditStore::open_with(
        dir.path(),
        Options {
            hold_ingest: Some(Arc::clone(&hold)),
            outbox: Some(OutboxConfig::default()),
            ..Options::default()
        },
    )
    .expect("open");
    let id = new_id();
    store.record_call(call(&id, 1, "a")).await.expect("record");
    // The process "dies" before SQLite ingested the call.
    store.abandon_segment().expect("abandon");
    assert_eq!(recover(dir.path()).expect("recover"), 1);
    assert_eq!(
        outbox_ids(dir.path()),
        vec![(id.clone(), "tool_call".into())]
    );
    hold.store(false, Ordering::Release);
    store.flush().await.expect("flush");
    // The writer's own copy of the call is ignored: no second event.
    assert_eq!(outbox_ids(dir.path()).len(), 1);
}

#[tokio::test]
async fn drop_oldest_keeps_the_bound_and_counts_what_it_dropped() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = OutboxConfig {
        max_events: 5,
        when_full: WhenFull::DropOldest,
    };
    let store = AuditStore::open_with_outbox(dir.path(), cfg).expect("open");
    for i in 0..12 {
        store
            .record_call(call(&new_id(), i, "a"))
            .await
            .expect("record");
        store.flush().await.expect("flush");
    }
    assert!(store.outbox_depth() <= 5, "{}", store.outbox_depth());
    assert!(!store.outbox_blocks(), "drop-oldest never blocks");
    let reader = OutboxReader::open(dir.path()).expect("reader");
    // Within a second at most one overflow record is written; wait for the rest to be counted.
    tokio::time::sleep(std::time::Duration::from_millis(1200)).await;
    store
        .record_call(call(&new_id(), 99, "a"))
        .await
        .expect("record");
    store.flush().await.expect("flush");
    let events = reader.batch(0, 100).expect("batch");
    let dropped: u64 = events
        .iter()
        .filter(|e| e.envelope.kind == "outbox_overflow")
        .map(|e| e.envelope.record["dropped"].as_u64().unwrap_or(0))
        .sum();
    let calls = events
        .iter()
        .filter(|e| e.envelope.kind == "tool_call")
        .count() as u64;
    // 13 calls in all: every one is either still queued or counted as dropped (a dropped
    // overflow record's count moves into the next one).
    let pending = {
        let conn = rusqlite::Connection::open(store.db_path()).expect("open");
        conn.query_row(
            "SELECT COALESCE((SELECT value FROM outbox_meta WHERE key = 'pending_dropped'), 0)",
            [],
            |r| r.get::<_, i64>(0),
        )
        .expect("pending") as u64
    };
    assert_eq!(calls + dropped + pending, 13, "{events:?}");
    assert!(dropped >= 1);
}

#[tokio::test]
async fn block_refuses_at_the_bound_and_ack_makes_room() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = OutboxConfig {
        max_events: 2,
        when_full: WhenFull::Block,
    };
    let store = AuditStore::open_with_outbox(dir.path(), cfg).expect("open");
    let a = new_id();
    store.record_call(call(&a, 1, "a")).await.expect("record");
    store.flush().await.expect("flush");
    assert!(!store.outbox_blocks());
    store
        .record_call(call(&new_id(), 2, "a"))
        .await
        .expect("record");
    store.flush().await.expect("flush");
    assert!(store.outbox_blocks());
    store.outbox_ack(vec![a]);
    store.flush().await.expect("flush");
    assert!(!store.outbox_blocks());
    // A store that is not enrolled never blocks and queues nothing.
    let plain = tempfile::tempdir().expect("tempdir");
    let store = AuditStore::open(plain.path()).expect("open");
    store
        .record_call(call(&new_id(), 1, "a"))
        .await
        .expect("record");
    store.flush().await.expect("flush");
    assert!(!store.outbox_blocks());
    assert_eq!(store.outbox_depth(), 0);
}
