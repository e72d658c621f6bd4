//! The append-only journal in front of SQLite: segment files, their locks, and [`recover`].
//!
//! Each process appends to a segment of its own, `<data-dir>/journal/<uuidv7>.jsonl`, one
//! [`ToolCallRecord`] per line, and holds an exclusive `flock` on it for as long as the segment is
//! live. A segment nobody holds a lock on belongs to a process that is gone (or to a writer that kept
//! it because ingesting it failed): [`recover`] replays such segments into SQLite and deletes them.

use std::fs::{DirBuilder, File, OpenOptions};
use std::io::{ErrorKind, Read};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use flowlink_proto::audit::ToolCallRecord;
use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};
use rusqlite::{Connection, TransactionBehavior};

use super::AuditError;
use super::schema;
use super::store::{DB_FILE_NAME, Failure, open_writer, prepare_dir, prepare_files};

/// The journal's directory inside the data directory.
pub const JOURNAL_DIR_NAME: &str = "journal";

/// A segment is retired (handed to the writer, which deletes it once ingested) when it grows past
/// this size.
pub(crate) const SEGMENT_LIMIT: u64 = 4 * 1024 * 1024;

/// Segments end in this; anything else in the journal directory is not a segment.
const SEGMENT_SUFFIX: &str = ".jsonl";

/// A segment is created under a hidden temporary name, locked, then renamed into place, so that
/// recovery never sees an unlocked live segment. A temporary file left by a process that died in
/// between is removed once it is this old and unlocked.
const STALE_TEMP: Duration = Duration::from_secs(60);

/// A live segment: the open file (append-only, exclusively locked) and its length so far.
#[derive(Debug)]
pub(crate) struct Segment {
    pub(crate) file: Flock<File>,
    pub(crate) path: PathBuf,
    /// Bytes written so far through `file` (the only writer), so a failed write can be cut off.
    pub(crate) len: u64,
}

/// Creates the journal directory (mode 0700).
pub(crate) fn prepare_journal_dir(dir: &Path) -> Result<(), AuditError> {
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|source| AuditError::JournalCreate {
            path: dir.to_owned(),
            hint: io_hint(&source, dir),
            source,
        })
}

/// Creates, locks and publishes a new segment in `dir`.
pub(crate) fn create_segment(dir: &Path) -> Result<Segment, AuditError> {
    let id = uuid::Uuid::now_v7();
    let temp = dir.join(format!(".{id}.tmp"));
    let path = dir.join(format!("{id}{SEGMENT_SUFFIX}"));
    let err = |path: &Path, source: std::io::Error| AuditError::JournalCreate {
        path: path.to_owned(),
        hint: io_hint(&source, dir),
        source,
    };
    // std opens with O_CLOEXEC, so the wrapped MCP server (spawned by this process) never inherits
    // the descriptor, and with it the lock, which would make a dead proxy's segment look live.
    let file = OpenOptions::new()
        .append(true)
        .create_new(true)
        .mode(0o600)
        .open(&temp)
        .map_err(|e| err(&temp, e))?;
    let file = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(f) => f,
        Err((_, errno)) => {
            let _ = std::fs::remove_file(&temp);
            return Err(err(&temp, std::io::Error::from(errno)));
        }
    };
    if let Err(e) = std::fs::rename(&temp, &path) {
        let _ = std::fs::remove_file(&temp);
        return Err(err(&path, e));
    }
    Ok(Segment { file, path, len: 0 })
}

/// What to do about a failed journal write or file creation, from its `errno`.
pub(crate) fn io_hint(e: &std::io::Error, dir: &Path) -> String {
    let dir = dir.display();
    match e.kind() {
        ErrorKind::StorageFull => format!("the disk is full: free disk space in {dir}"),
        ErrorKind::QuotaExceeded => {
            format!("the disk quota is exceeded: free space in {dir} or raise the quota")
        }
        ErrorKind::FileTooLarge => format!(
            "the file-size limit (`ulimit -f`) was reached: raise it for flowlink-proxy, or check free disk space in {dir}"
        ),
        ErrorKind::PermissionDenied | ErrorKind::ReadOnlyFilesystem => {
            format!("make {dir} writable by this user, on a read-write file system")
        }
        _ if e.raw_os_error() == Some(Errno::EIO as i32) => {
            format!("the disk reported an I/O error: check the disk holding {dir}")
        }
        _ => format!("check free disk space in {dir} and that it is writable by this user"),
    }
}

/// Replays every segment of `<data_dir>/journal` that no live process holds into the audit database
/// `<data_dir>/audit.sqlite3` (creating it if needed), one transaction per segment, and deletes each
/// segment once its transaction committed. Returns how many calls were newly inserted: calls that
/// were already in the database (the common case: the dead process had ingested them) are left as
/// they are, so replaying is always harmless.
///
/// A torn last line (the process died in the middle of writing it, before `record_call` could
/// confirm it) is ignored with a warning; a malformed line elsewhere is skipped with a warning. A
/// segment that cannot be read or written is kept for the next attempt; the first such error is
/// returned after every other segment has been tried.
///
/// `flowlink-proxy audit` runs this before reading; [`super::AuditStore::open`] runs it too.
pub fn recover(data_dir: &Path) -> Result<usize, AuditError> {
    let journal = data_dir.join(JOURNAL_DIR_NAME);
    if list_segments(&journal)?.is_empty() {
        return Ok(0);
    }
    prepare_dir(data_dir)?;
    let db_path = data_dir.join(DB_FILE_NAME);
    prepare_files(&db_path)?;
    let mut conn = open_writer(&db_path)?;
    schema::migrate(&mut conn, &db_path)?;
    replay_all(&mut conn, &db_path, data_dir)
}

/// [`recover`] through an open, migrated write connection.
pub(crate) fn replay_all(
    conn: &mut Connection,
    db_path: &Path,
    data_dir: &Path,
) -> Result<usize, AuditError> {
    let journal = data_dir.join(JOURNAL_DIR_NAME);
    let mut inserted = 0;
    let mut first_error = None;
    for path in list_segments(&journal)? {
        match replay_segment(conn, db_path, data_dir, &path) {
            Ok(Some(n)) => inserted += n,
            Ok(None) => {}
            Err(e) => {
                tracing::error!(segment = %path.display(), error = %e, "audit journal segment not recovered; it is kept for the next attempt");
                first_error.get_or_insert(e);
            }
        }
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(inserted),
    }
}

/// The segments in `journal`, oldest first (the names are UUIDv7s). Removes stale temporary files.
fn list_segments(journal: &Path) -> Result<Vec<PathBuf>, AuditError> {
    let read_err = |source| AuditError::JournalRead {
        path: journal.to_owned(),
        source,
    };
    let entries = match std::fs::read_dir(journal) {
        Ok(entries) => entries,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(read_err(e)),
    };
    let mut segments = Vec::new();
    for entry in entries {
        let entry = entry.map_err(read_err)?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if name.ends_with(SEGMENT_SUFFIX) && !name.starts_with('.') {
            segments.push(entry.path());
        } else if name.starts_with('.') && name.ends_with(".tmp") {
            remove_stale_temp(&entry.path());
        }
    }
    segments.sort();
    Ok(segments)
}

/// Removes a temporary segment left behind by a process that died between creating and publishing
/// it (it holds no records: nothing is written before the rename).
fn remove_stale_temp(path: &Path) {
    let old = std::fs::metadata(path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.elapsed().ok())
        .is_some_and(|age| age >= STALE_TEMP);
    if !old {
        return;
    }
    let Ok(file) = File::open(path) else { return };
    if let Ok(lock) = Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        let _ = std::fs::remove_file(path);
        drop(lock);
    }
}

/// Replays one segment unless a live process holds it. `Ok(None)`: skipped (live, or gone already).
fn replay_segment(
    conn: &mut Connection,
    db_path: &Path,
    data_dir: &Path,
    path: &Path,
) -> Result<Option<usize>, AuditError> {
    let read_err = |source| AuditError::JournalRead {
        path: path.to_owned(),
        source,
    };
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(read_err(e)),
    };
    let mut file = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(f) => f,
        // Its owner is alive (or another recovery has it right now).
        Err((_, Errno::EWOULDBLOCK)) => return Ok(None),
        Err((_, errno)) => return Err(read_err(std::io::Error::from(errno))),
    };
    // Another recovery may have replayed and deleted it between our open and our lock.
    let ours = file.metadata().map_err(read_err)?;
    match std::fs::metadata(path) {
        Ok(m) if m.dev() == ours.dev() && m.ino() == ours.ino() => {}
        _ => return Ok(None),
    }
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes).map_err(read_err)?;
    let records = parse_segment(path, &bytes);

    let write_err = |e: rusqlite::Error| Failure::from_sqlite(&e).to_error(db_path, data_dir);
    if !conn.is_autocommit() {
        conn.execute_batch("ROLLBACK").map_err(write_err)?;
    }
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(write_err)?;
    let armed = schema::outbox_armed(&tx).map_err(write_err)?;
    let mut inserted = 0;
    for rec in &records {
        let n = schema::insert_call(&tx, rec).map_err(write_err)?;
        if n > 0 && armed {
            // Never ingested by its process, so never queued either.
            schema::enqueue(
                &tx,
                &rec.id,
                schema::KIND_TOOL_CALL,
                &rec.id,
                rec.received_at_us,
                None,
            )
            .map_err(write_err)?;
        }
        inserted += n;
    }
    tx.commit().map_err(write_err)?;
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == ErrorKind::NotFound => {}
        Err(e) => {
            tracing::warn!(segment = %path.display(), error = %e, "cannot delete a replayed audit journal segment; replaying it again is harmless")
        }
    }
    drop(file);
    if inserted > 0 {
        tracing::info!(
            segment = %path.display(),
            records = records.len(),
            inserted,
            "recovered tool calls from the audit journal of a process that stopped"
        );
    }
    Ok(Some(inserted))
}

/// The records of a segment. A last line without its newline is torn (its write never completed,
/// so `record_call` never confirmed it) and ignored; a line that does not parse is skipped. Both are
/// logged without their content (it may be sensitive).
pub(crate) fn parse_segment(path: &Path, bytes: &[u8]) -> Vec<ToolCallRecord> {
    let mut records = Vec::new();
    let mut rest = bytes;
    let mut line_no = 0usize;
    while !rest.is_empty() {
        line_no += 1;
        let Some(end) = rest.iter().position(|&b| b == b'\n') else {
            tracing::warn!(
                segment = %path.display(),
                line = line_no,
                bytes = rest.len(),
                "ignoring a torn last line in an audit journal segment (its call was never confirmed)"
            );
            break;
        };
        let line = &rest[..end];
        rest = &rest[end + 1..];
        if line.is_empty() {
            continue;
        }
        match serde_json::from_slice::<ToolCallRecord>(line) {
            Ok(rec) => records.push(rec),
            Err(e) => tracing::warn!(
                segment = %path.display(),
                line = line_no,
                error = %e,
                "skipping a malformed line in an audit journal segment"
            ),
        }
    }
    records
}
