//! [`AuditStore`]: the handle the relay writes through, and the writer thread behind it.

use std::fs::{DirBuilder, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, Sender, SyncSender, TryRecvError};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use flowlink_proto::audit::{Outcome, SessionRecord, ToolCallRecord, Verdict};
use rusqlite::{Connection, ErrorCode, OpenFlags, TransactionBehavior, params};
use tokio::sync::oneshot;

use super::AuditError;
use super::journal::{self, JOURNAL_DIR_NAME, SEGMENT_LIMIT, Segment};
use super::outbox::{self, OutboxConfig, WhenFull};
use super::schema;

/// The database file's name inside the data directory.
pub const DB_FILE_NAME: &str = "audit.sqlite3";

/// How long a statement waits for another process's write lock before failing.
pub(crate) const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The checkpointer thread checkpoints the WAL (which `fsync`s it) at most this often while
/// records are being written, bounding in time what a power cut can take. It has a connection of
/// its own, so the `fsync`s never hold up the writer.
pub(crate) const CHECKPOINT_INTERVAL: Duration = Duration::from_secs(1);

/// The most commands one transaction takes: "everything queued", capped so that one commit stays
/// short even after a burst.
const MAX_BATCH: usize = 4096;

/// Queue depth at which the writer warns that it is falling behind.
const BACKLOG_WARN: usize = 10_000;

/// After a journal segment could not be rotated (a new one could not be created), wait this long
/// before trying again; meanwhile the full segment keeps growing, which is harmless.
const ROTATION_RETRY: Duration = Duration::from_secs(1);

/// `directories::ProjectDirs` data directory for FlowLink (e.g. `~/.local/share/flowlink` on Linux).
pub fn default_data_dir() -> Option<PathBuf> {
    directories::ProjectDirs::from("dev", "FlowLink", "flowlink").map(|d| d.data_dir().to_owned())
}

/// A cheap, cloneable handle to the audit store. All clones share one journal segment and one
/// writer thread. When the last clone is dropped the live segment is handed to the writer, the
/// writer finishes its queue (deleting the segment once it is all in SQLite), and the drop waits
/// for it.
#[derive(Clone)]
pub struct AuditStore {
    inner: Arc<Inner>,
}

struct Inner {
    /// Unbounded on purpose. A bounded channel would leave the synchronous methods two bad choices
    /// when full: drop the command (silent loss, forbidden) or block the caller (an async relay task,
    /// stalling the runtime). Every call is in the journal before it is queued, so the queue is
    /// only a buffer in front of SQLite; the writer takes up to [`MAX_BATCH`] commands per commit,
    /// far faster than tool calls arrive. `depth` makes a backlog visible in the logs.
    tx: Sender<Command>,
    depth: Arc<AtomicUsize>,
    /// The appender: taken for the few microseconds of one `write` (and, rarely, a rotation).
    journal: Mutex<Appender>,
    db_path: PathBuf,
    writer: Option<JoinHandle<()>>,
    /// The outbox's bound, when the proxy is enrolled.
    outbox: Option<OutboxConfig>,
    /// The outbox's depth as last seen (by the writer after each commit, or by the link).
    outbox_depth: Arc<AtomicU64>,
}

/// The journal side of the store: this process's live segment.
struct Appender {
    dir: PathBuf,
    /// `None` after the segment was retired and a new one could not be created yet.
    current: Option<Segment>,
    /// Rotate past this many bytes.
    limit: u64,
    /// Do not retry a failed rotation before this.
    retry_rotation_at: Option<Instant>,
}

/// A unit of work for the writer thread.
enum Command {
    /// A journaled call, to be ingested.
    Insert(Box<ToolCallRecord>),
    Outcome {
        id: String,
        outcome: Outcome,
        finished_at_us: i64,
        duration_us: i64,
        error: Option<String>,
    },
    Verdict {
        id: String,
        verdict: Verdict,
        reason: String,
        decided_at_us: i64,
    },
    Session(Box<SessionRow>),
    Flush {
        done: oneshot::Sender<Result<(), AuditError>>,
    },
    /// A retired segment: every one of its records was queued before this. Delete it once they are
    /// all committed; keep it (for recovery) if any of them failed. Holds the segment's lock until
    /// then.
    SegmentDone(Box<Segment>),
    /// The control plane acknowledged these outbox events: delete them.
    OutboxAck(Vec<String>),
}

/// A [`SessionRecord`] with its JSON already encoded.
struct SessionRow {
    rec: SessionRecord,
    command: String,
    client_capabilities: String,
    server_capabilities: String,
}

/// Knobs for tests; [`AuditStore::open`] uses the defaults.
#[derive(Default)]
pub(crate) struct Options {
    /// `PRAGMA max_page_count` on the writer connection, to simulate a full database.
    pub(crate) max_pages: Option<u32>,
    /// Rotate journal segments past this many bytes instead of [`SEGMENT_LIMIT`].
    pub(crate) segment_limit: Option<u64>,
    /// While set, the writer ingests nothing (it waits before each batch).
    pub(crate) hold_ingest: Option<Arc<AtomicBool>>,
    /// Queue events for the control plane (an enrolled proxy).
    pub(crate) outbox: Option<OutboxConfig>,
}

impl AuditStore {
    /// Opens (creating if needed) `<data_dir>/audit.sqlite3` and the journal `<data_dir>/journal/`,
    /// migrates the database, replays the journal segments of processes that stopped (see
    /// [`super::recover`]; a failure there is logged and the segments are kept), starts this
    /// process's own segment and the writer thread.
    pub fn open(data_dir: &Path) -> Result<AuditStore, AuditError> {
        Self::open_inner(data_dir, Options::default())
    }

    /// [`AuditStore::open`] for an enrolled proxy: every record and update also queues an event
    /// in the outbox (see [`super::outbox`]), bounded by `outbox`.
    pub fn open_with_outbox(
        data_dir: &Path,
        outbox: OutboxConfig,
    ) -> Result<AuditStore, AuditError> {
        Self::open_inner(
            data_dir,
            Options {
                outbox: Some(outbox),
                ..Options::default()
            },
        )
    }

    /// [`AuditStore::open`] with test knobs.
    #[cfg(test)]
    pub(crate) fn open_with(data_dir: &Path, options: Options) -> Result<AuditStore, AuditError> {
        Self::open_inner(data_dir, options)
    }

    fn open_inner(data_dir: &Path, options: Options) -> Result<AuditStore, AuditError> {
        prepare_dir(data_dir)?;
        let db_path = data_dir.join(DB_FILE_NAME);
        prepare_files(&db_path)?;
        let mut conn = open_writer(&db_path)?;
        schema::migrate(&mut conn, &db_path)?;
        if let Some(pages) = options.max_pages {
            conn.pragma_update(None, "max_page_count", pages)
                .map_err(|source| AuditError::Open {
                    path: db_path.clone(),
                    source,
                })?;
        }

        let outbox_depth = Arc::new(AtomicU64::new(0));
        if options.outbox.is_some() {
            let setup =
                schema::meta_set(&conn, "armed", 1).and_then(|()| schema::outbox_depth(&conn));
            match setup {
                Ok(n) => outbox_depth.store(n, Ordering::Relaxed),
                Err(source) => {
                    return Err(AuditError::Open {
                        path: db_path.clone(),
                        source,
                    });
                }
            }
        }

        let journal_dir = data_dir.join(JOURNAL_DIR_NAME);
        journal::prepare_journal_dir(&journal_dir)?;
        if let Err(e) = journal::replay_all(&mut conn, &db_path, data_dir) {
            // The segments stay where they are; the next open (or `flowlink-proxy audit`) retries.
            // Recording new calls does not depend on them.
            tracing::error!(error = %e, "could not recover every audit journal segment of stopped processes");
        }
        let first = journal::create_segment(&journal_dir)?;

        let (tx, rx) = mpsc::channel();
        let depth = Arc::new(AtomicUsize::new(0));
        let writer = Writer {
            conn,
            path: db_path.clone(),
            dir: data_dir.to_owned(),
            journal_dir: journal_dir.clone(),
            depth: Arc::clone(&depth),
            failed_updates: 0,
            failed_calls: 0,
            last_failure: None,
            segment_failed: false,
            checkpoint: spawn_checkpointer(&db_path)?,
            last_backlog_warning: None,
            hold: options.hold_ingest,
            outbox: options.outbox,
            outbox_depth: Arc::clone(&outbox_depth),
            drops_pending: false,
        };
        let writer = std::thread::Builder::new()
            .name("flowlink-audit-writer".into())
            .spawn(move || writer.run(rx))
            .map_err(|source| AuditError::Spawn {
                path: db_path.clone(),
                source,
            })?;
        tracing::debug!(path = %db_path.display(), segment = %first.path.display(), "audit store open");
        Ok(AuditStore {
            inner: Arc::new(Inner {
                tx,
                depth,
                journal: Mutex::new(Appender {
                    dir: journal_dir,
                    current: Some(first),
                    limit: options.segment_limit.unwrap_or(SEGMENT_LIMIT),
                    retry_rotation_at: None,
                }),
                db_path,
                writer: Some(writer),
                outbox: options.outbox,
                outbox_depth,
            }),
        })
    }

    /// Records a tool call: appends it to this process's journal segment (one `write`, no `fsync`)
    /// and queues it for SQLite. Once this returns `Ok` the call is in the operating system's page
    /// cache and survives the process being killed; it reaches SQLite within milliseconds (see
    /// [`AuditStore::flush`]). Errors if the journal write failed (disk full, file-size limit, I/O
    /// error) or the writer stopped; then nothing of the record stays in the journal and the caller
    /// must not act on the call.
    ///
    /// Ids must be unique (UUIDv7): a call whose id is already on record is ignored by SQLite, which
    /// is what makes replaying the journal harmless.
    pub async fn record_call(&self, rec: ToolCallRecord) -> Result<(), AuditError> {
        let mut line = serde_json::to_vec(&rec).map_err(|source| AuditError::Encode {
            id: rec.id.clone(),
            source,
        })?;
        line.push(b'\n');
        self.inner.append(&line, rec)
    }

    /// Records how a call ended. Does not wait; failures are logged and reported by the next
    /// [`AuditStore::flush`].
    pub fn record_outcome(
        &self,
        id: &str,
        outcome: Outcome,
        finished_at_us: i64,
        duration_us: i64,
        error: Option<String>,
    ) {
        self.inner.send_or_log(Command::Outcome {
            id: id.to_owned(),
            outcome,
            finished_at_us,
            duration_us,
            error,
        });
    }

    /// Changes a call's verdict (e.g. pending -> approved) and reason, and sets its decision time to
    /// now. Does not wait.
    pub fn update_verdict(&self, id: &str, verdict: Verdict, reason: &str) {
        self.inner.send_or_log(Command::Verdict {
            id: id.to_owned(),
            verdict,
            reason: reason.to_owned(),
            decided_at_us: now_us(),
        });
    }

    /// Inserts or replaces a session, by id. Does not wait.
    pub fn record_session(&self, s: SessionRecord) {
        let encoded = (|| {
            Ok::<_, serde_json::Error>((
                serde_json::to_string(&s.command)?,
                serde_json::to_string(&s.client_capabilities)?,
                serde_json::to_string(&s.server_capabilities)?,
            ))
        })();
        match encoded {
            Ok((command, client_capabilities, server_capabilities)) => {
                self.inner
                    .send_or_log(Command::Session(Box::new(SessionRow {
                        rec: s,
                        command,
                        client_capabilities,
                        server_capabilities,
                    })))
            }
            Err(e) => tracing::error!(
                session = %s.id,
                error = %e,
                "cannot encode a session record as JSON; it was not recorded"
            ),
        }
    }

    /// Waits until everything queued so far (calls and updates) is committed to SQLite. Errors if
    /// the writer stopped, or if any call or fire-and-forget update since the previous flush could
    /// not be written ([`AuditError::CallsNotIngested`]: the calls are still in the journal;
    /// [`AuditError::UpdatesFailed`]: only updates were lost).
    pub async fn flush(&self) -> Result<(), AuditError> {
        let (done, wait) = oneshot::channel();
        self.inner.send(Command::Flush { done })?;
        wait.await.map_err(|_| self.inner.writer_gone())?
    }

    /// The database file.
    pub fn db_path(&self) -> &Path {
        &self.inner.db_path
    }

    /// The outbox's bound, when this store queues events for the control plane.
    pub fn outbox_config(&self) -> Option<OutboxConfig> {
        self.inner.outbox
    }

    /// Events waiting for the control plane, as last seen.
    pub fn outbox_depth(&self) -> u64 {
        self.inner.outbox_depth.load(Ordering::Relaxed)
    }

    /// Records a fresher reading of the outbox's depth (the link reads it after acknowledgements;
    /// other proxies sharing the database change it too).
    pub fn note_outbox_depth(&self, depth: u64) {
        self.inner.outbox_depth.store(depth, Ordering::Relaxed);
    }

    /// Whether new tool calls must be refused: the outbox is at its bound and its rule is
    /// [`WhenFull::Block`].
    pub fn outbox_blocks(&self) -> bool {
        self.inner
            .outbox
            .is_some_and(|c| c.when_full == WhenFull::Block && self.outbox_depth() >= c.max_events)
    }

    /// The control plane acknowledged these events: the writer deletes them from the outbox.
    /// Does not wait; [`AuditStore::flush`] does.
    pub fn outbox_ack(&self, ids: Vec<String>) {
        if ids.is_empty() || self.inner.outbox.is_none() {
            return;
        }
        self.inner.send_or_log(Command::OutboxAck(ids));
    }

    /// The live journal segment's path.
    #[cfg(test)]
    pub(crate) fn segment_path(&self) -> Option<PathBuf> {
        self.inner
            .appender()
            .current
            .as_ref()
            .map(|s| s.path.clone())
    }

    /// Simulates this process dying as far as its live segment is concerned: closes it (releasing
    /// its lock) without handing it to the writer. The next `record_call` starts a new segment.
    #[cfg(test)]
    pub(crate) fn abandon_segment(&self) -> Option<PathBuf> {
        let seg = self.inner.appender().current.take()?;
        Some(seg.path.clone())
    }
}

impl Inner {
    fn appender(&self) -> std::sync::MutexGuard<'_, Appender> {
        // The appender's state stays consistent at every step, so a panic elsewhere with the lock
        // held does not make it unusable.
        self.journal.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Journals `line` (the encoded `rec`) and queues `rec`, under the appender lock so that journal
    /// order and queue order agree (a segment's `SegmentDone` must follow all its records).
    fn append(&self, line: &[u8], rec: ToolCallRecord) -> Result<(), AuditError> {
        let mut app = self.appender();
        if app.current.is_none() {
            app.current = Some(journal::create_segment(&app.dir)?);
        }
        let Appender { dir, current, .. } = &mut *app;
        let Some(seg) = current.as_mut() else {
            unreachable!("a segment was just opened");
        };
        let prev = seg.len;
        if let Err(source) = (&*seg.file).write_all(line) {
            let err = AuditError::JournalWrite {
                path: seg.path.clone(),
                hint: journal::io_hint(&source, dir),
                source,
            };
            tracing::error!(call = %rec.id, error = %err, "tool call not recorded");
            self.undo(&mut app, prev);
            return Err(err);
        }
        seg.len = prev + line.len() as u64;
        if let Err(e) = self.send(Command::Insert(Box::new(rec))) {
            self.undo(&mut app, prev);
            return Err(e);
        }
        self.rotate_if_full(&mut app);
        Ok(())
    }

    /// Cuts a failed (possibly partial) write off the live segment, so no half line stays. If even
    /// that fails, retires the segment (its torn last line is ignored by recovery) so the next call
    /// starts a clean one.
    fn undo(&self, app: &mut Appender, prev: u64) {
        let Some(seg) = app.current.as_mut() else {
            return;
        };
        match seg.file.set_len(prev) {
            Ok(()) => seg.len = prev,
            Err(e) => {
                tracing::error!(
                    segment = %seg.path.display(),
                    error = %e,
                    "cannot cut a failed write off the audit journal; starting a new segment"
                );
                if let Some(seg) = app.current.take() {
                    self.send_or_log(Command::SegmentDone(Box::new(seg)));
                }
            }
        }
    }

    /// Retires the live segment once it is past the limit and starts a new one.
    fn rotate_if_full(&self, app: &mut Appender) {
        let full = app.current.as_ref().is_some_and(|s| s.len >= app.limit);
        if !full || app.retry_rotation_at.is_some_and(|t| Instant::now() < t) {
            return;
        }
        match journal::create_segment(&app.dir) {
            Ok(new) => {
                app.retry_rotation_at = None;
                if let Some(old) = app.current.replace(new) {
                    // If the writer is gone the old segment is dropped, unlocked, and replayed by
                    // the next recovery.
                    self.send_or_log(Command::SegmentDone(Box::new(old)));
                }
            }
            Err(e) => {
                app.retry_rotation_at = Some(Instant::now() + ROTATION_RETRY);
                tracing::warn!(error = %e, "cannot start a new audit journal segment; the current one keeps growing");
            }
        }
    }

    fn send(&self, cmd: Command) -> Result<(), AuditError> {
        self.depth.fetch_add(1, Ordering::Relaxed);
        self.tx.send(cmd).map_err(|_| {
            self.depth.fetch_sub(1, Ordering::Relaxed);
            self.writer_gone()
        })
    }

    fn send_or_log(&self, cmd: Command) {
        if let Err(e) = self.send(cmd) {
            tracing::error!(error = %e, "audit update lost");
        }
    }

    fn writer_gone(&self) -> AuditError {
        AuditError::WriterGone {
            path: self.db_path.clone(),
        }
    }
}

impl Drop for Inner {
    /// Clean shutdown: hand the live segment to the writer, close the queue and wait for the writer
    /// to ingest everything, so a clean run leaves no journal behind.
    fn drop(&mut self) {
        let app = self
            .journal
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(seg) = app.current.take() {
            self.depth.fetch_add(1, Ordering::Relaxed);
            // If the writer is gone the segment is dropped (unlocked) and recovered later.
            let _ = self.tx.send(Command::SegmentDone(Box::new(seg)));
        }
        let (closed, _) = mpsc::channel();
        drop(std::mem::replace(&mut self.tx, closed));
        if let Some(writer) = self.writer.take()
            && writer.join().is_err()
        {
            tracing::error!(path = %self.db_path.display(), "the audit writer thread panicked");
        }
    }
}

impl std::fmt::Debug for AuditStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditStore")
            .field("db_path", &self.inner.db_path)
            .finish_non_exhaustive()
    }
}

/// Microseconds since the Unix epoch, now: the clock of every timestamp the proxy records.
pub fn now_us() -> i64 {
    let now = time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1000;
    i64::try_from(now).unwrap_or(i64::MAX)
}

/// Creates the data directory (0700 for each level created). Warns if an existing one is open to
/// other users; the files inside are 0600 regardless.
pub(crate) fn prepare_dir(dir: &Path) -> Result<(), AuditError> {
    let err = |source| AuditError::CreateDir {
        path: dir.to_owned(),
        source,
    };
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(err)?;
    let meta = std::fs::metadata(dir).map_err(err)?;
    if !meta.is_dir() {
        return Err(err(std::io::Error::new(
            std::io::ErrorKind::NotADirectory,
            "it exists and is not a directory",
        )));
    }
    if meta.permissions().mode() & 0o077 != 0 {
        tracing::warn!(
            path = %dir.display(),
            "the audit data directory is accessible to other users; consider chmod 700"
        );
    }
    Ok(())
}

/// Creates the database file 0600 before SQLite does, and tightens the database and any existing
/// `-wal` / `-shm` file to 0600 (SQLite creates those with the database file's mode).
pub(crate) fn prepare_files(db_path: &Path) -> Result<(), AuditError> {
    let err = |source| AuditError::CreateFile {
        path: db_path.to_owned(),
        source,
    };
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(db_path)
        .map_err(err)?;
    for suffix in ["", "-wal", "-shm"] {
        let mut name = db_path.as_os_str().to_owned();
        name.push(suffix);
        let path = PathBuf::from(name);
        match std::fs::metadata(&path) {
            Ok(meta) if meta.permissions().mode() & 0o077 != 0 => {
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
                    .map_err(err)?;
            }
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(err(e)),
        }
    }
    Ok(())
}

/// Opens the write connection: WAL, `synchronous=NORMAL`, busy timeout.
pub(crate) fn open_writer(db_path: &Path) -> Result<Connection, AuditError> {
    let err = |source| AuditError::Open {
        path: db_path.to_owned(),
        source,
    };
    let conn = Connection::open_with_flags(
        db_path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(err)?;
    conn.busy_timeout(BUSY_TIMEOUT).map_err(err)?;
    let mode: String = conn
        .pragma_update_and_check(None, "journal_mode", "wal", |row| row.get(0))
        .map_err(err)?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(AuditError::NoWal {
            path: db_path.to_owned(),
            mode,
        });
    }
    conn.pragma_update(None, "synchronous", "NORMAL")
        .map_err(err)?;
    // No automatic checkpoints on the write connection: they would run inside a commit that a
    // tool call is waiting for. The checkpointer thread does them instead.
    conn.pragma_update(None, "wal_autocheckpoint", 0)
        .map_err(err)?;
    // Keep the WAL file from staying large after a burst.
    conn.pragma_update(None, "journal_size_limit", 16 * 1024 * 1024)
        .map_err(err)?;
    Ok(conn)
}

/// Starts the checkpointer: its own connection, woken by the writer after commits, checkpointing
/// at most once per [`CHECKPOINT_INTERVAL`]. It stops when the writer drops its sender.
fn spawn_checkpointer(db_path: &Path) -> Result<SyncSender<()>, AuditError> {
    let err = |source| AuditError::Open {
        path: db_path.to_owned(),
        source,
    };
    let conn = Connection::open_with_flags(
        db_path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(err)?;
    conn.busy_timeout(BUSY_TIMEOUT).map_err(err)?;
    let (tx, rx) = mpsc::sync_channel::<()>(1);
    let path = db_path.to_owned();
    std::thread::Builder::new()
        .name("flowlink-audit-checkpoint".into())
        .spawn(move || {
            while rx.recv().is_ok() {
                // PASSIVE: never waits for the writer or readers; fsyncs the WAL, copies what it
                // can into the database, fsyncs that.
                if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
                    tracing::warn!(path = %path.display(), error = %e, "audit WAL checkpoint failed; will retry after the next write");
                }
                std::thread::sleep(CHECKPOINT_INTERVAL);
            }
        })
        .map_err(|source| AuditError::Spawn {
            path: db_path.to_owned(),
            source,
        })?;
    Ok(tx)
}

/// Why a write failed, in a form that can be copied to every waiter of a batch.
#[derive(Clone, Debug)]
pub(crate) enum Failure {
    DiskFull,
    Locked,
    Rejected(String),
    Other(String),
}

impl Failure {
    pub(crate) fn from_sqlite(e: &rusqlite::Error) -> Failure {
        match e.sqlite_error_code() {
            Some(ErrorCode::DiskFull) => Failure::DiskFull,
            Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => Failure::Locked,
            Some(ErrorCode::ConstraintViolation) => Failure::Rejected(e.to_string()),
            _ => Failure::Other(e.to_string()),
        }
    }

    pub(crate) fn to_error(&self, path: &Path, dir: &Path) -> AuditError {
        match self {
            Failure::DiskFull => AuditError::DiskFull {
                path: path.to_owned(),
                dir: dir.to_owned(),
            },
            Failure::Locked => AuditError::Locked {
                path: path.to_owned(),
                timeout_s: BUSY_TIMEOUT.as_secs(),
            },
            Failure::Rejected(detail) => AuditError::Rejected {
                path: path.to_owned(),
                detail: detail.clone(),
            },
            Failure::Other(detail) => AuditError::Write {
                path: path.to_owned(),
                detail: detail.clone(),
            },
        }
    }

    fn describe(&self) -> String {
        match self {
            Failure::DiskFull => "disk full".into(),
            Failure::Locked => "database locked by another process".into(),
            Failure::Rejected(d) | Failure::Other(d) => d.clone(),
        }
    }
}

/// The writer thread's state. Owns the only write connection.
struct Writer {
    conn: Connection,
    path: PathBuf,
    dir: PathBuf,
    journal_dir: PathBuf,
    depth: Arc<AtomicUsize>,
    /// Fire-and-forget updates that failed since the last flush.
    failed_updates: u64,
    /// Journaled calls that could not be ingested since the last flush.
    failed_calls: u64,
    last_failure: Option<Failure>,
    /// A call of the segment being ingested (the one the next `SegmentDone` names) failed, so
    /// that segment must be kept for recovery.
    segment_failed: bool,
    /// Wakes the checkpointer after a commit (capacity one: wake-ups coalesce).
    checkpoint: SyncSender<()>,
    last_backlog_warning: Option<Instant>,
    /// Tests: while set, ingest nothing.
    hold: Option<Arc<AtomicBool>>,
    /// Queue outbox events (an enrolled proxy), bounded so.
    outbox: Option<OutboxConfig>,
    /// Shared with the handles: the depth after the last commit.
    outbox_depth: Arc<AtomicU64>,
    /// Events were dropped and not reported yet: wake up to write the overflow record.
    drops_pending: bool,
}

impl Writer {
    fn run(mut self, rx: Receiver<Command>) {
        let mut batch = Vec::new();
        loop {
            let first = if self.drops_pending {
                match rx.recv_timeout(Duration::from_secs(1)) {
                    Ok(cmd) => cmd,
                    Err(mpsc::RecvTimeoutError::Timeout) => {
                        // Nothing to write, but an overflow record is due.
                        self.process(&mut batch);
                        continue;
                    }
                    Err(mpsc::RecvTimeoutError::Disconnected) => break,
                }
            } else {
                match rx.recv() {
                    Ok(cmd) => cmd,
                    // Every handle is gone and the queue is empty: done.
                    Err(_) => break,
                }
            };
            if let Some(hold) = &self.hold {
                while hold.load(Ordering::Acquire) {
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
            batch.push(first);
            while batch.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(cmd) => batch.push(cmd),
                    Err(TryRecvError::Empty | TryRecvError::Disconnected) => break,
                }
            }
            let backlog = self
                .depth
                .fetch_sub(batch.len(), Ordering::Relaxed)
                .saturating_sub(batch.len());
            self.warn_backlog(backlog);
            self.process(&mut batch);
        }
        tracing::debug!(path = %self.path.display(), "audit writer stopped");
        // Dropping the connection checkpoints and removes the WAL if no one else has the file open.
    }

    fn warn_backlog(&mut self, backlog: usize) {
        if backlog < BACKLOG_WARN {
            return;
        }
        let due = self
            .last_backlog_warning
            .is_none_or(|t| t.elapsed() >= Duration::from_secs(10));
        if due {
            self.last_backlog_warning = Some(Instant::now());
            tracing::warn!(
                path = %self.path.display(),
                queued = backlog,
                "the audit writer is falling behind; nothing is dropped (every call is in the journal), but memory grows"
            );
        }
    }

    /// Writes a batch, then settles each command in order (after the commit).
    fn process(&mut self, batch: &mut Vec<Command>) {
        let outbox = self.outbox;
        let mut drops_pending = self.drops_pending;
        let results = match write_batch(&mut self.conn, batch, outbox, &mut drops_pending) {
            Ok(results) => results,
            Err(failure) => {
                // The batch as a whole failed. Retry each command alone, so one bad command costs
                // only itself.
                tracing::warn!(
                    path = %self.path.display(),
                    commands = batch.len(),
                    error = %failure.describe(),
                    "audit batch failed; retrying its commands one by one"
                );
                batch
                    .iter()
                    .map(|cmd| {
                        match write_batch(
                            &mut self.conn,
                            std::slice::from_ref(cmd),
                            outbox,
                            &mut drops_pending,
                        ) {
                            Ok(mut r) => r.pop().unwrap_or(Ok(())),
                            Err(f) => Err(f),
                        }
                    })
                    .collect()
            }
        };
        self.drops_pending = drops_pending;
        if outbox.is_some() {
            match schema::outbox_depth(&self.conn) {
                Ok(n) => self.outbox_depth.store(n, Ordering::Relaxed),
                Err(e) => tracing::warn!(error = %e, "cannot read the audit outbox's depth"),
            }
        }
        if results.iter().any(Result::is_ok) {
            // Full means a wake-up is already pending; disconnected means the checkpointer
            // stopped, and closing the connection at the end still checkpoints.
            let _ = self.checkpoint.try_send(());
        }
        for (cmd, result) in batch.drain(..).zip(results) {
            self.settle(cmd, result);
        }
    }

    fn settle(&mut self, cmd: Command, result: Result<(), Failure>) {
        match cmd {
            Command::Insert(rec) => {
                if let Err(f) = result {
                    tracing::error!(
                        path = %self.path.display(),
                        call = %rec.id,
                        error = %f.describe(),
                        "tool call not written to the audit database; it stays in the journal for recovery"
                    );
                    self.failed_calls += 1;
                    self.segment_failed = true;
                    self.last_failure = Some(f);
                }
            }
            Command::SegmentDone(seg) => self.segment_done(*seg),
            Command::Flush { done } => {
                let answer = match self.last_failure.take() {
                    Some(last) if self.failed_calls > 0 => Err(AuditError::CallsNotIngested {
                        path: self.path.clone(),
                        journal: self.journal_dir.clone(),
                        dir: self.dir.clone(),
                        calls: std::mem::take(&mut self.failed_calls),
                        updates: std::mem::take(&mut self.failed_updates),
                        last: last.describe(),
                    }),
                    Some(last) => Err(AuditError::UpdatesFailed {
                        path: self.path.clone(),
                        dir: self.dir.clone(),
                        count: std::mem::take(&mut self.failed_updates),
                        last: last.describe(),
                    }),
                    None => Ok(()),
                };
                let _ = done.send(answer);
            }
            Command::Outcome { id, .. } | Command::Verdict { id, .. } => {
                self.note_update(result, "call", &id)
            }
            Command::OutboxAck(ids) => self.note_update(
                result,
                "outbox acknowledgement",
                &format!("{} id(s)", ids.len()),
            ),
            Command::Session(s) => self.note_update(result, "session", &s.rec.id),
        }
    }

    /// Every record of `seg` has been settled: delete it if they are all committed, otherwise keep
    /// it (unlocked, so recovery replays it). Dropping `seg` releases its lock.
    fn segment_done(&mut self, seg: Segment) {
        if std::mem::take(&mut self.segment_failed) {
            tracing::warn!(
                segment = %seg.path.display(),
                "keeping an audit journal segment whose calls could not all be written to the database; the next start of flowlink-proxy or `flowlink-proxy audit` imports it"
            );
            return;
        }
        match std::fs::remove_file(&seg.path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => tracing::warn!(
                segment = %seg.path.display(),
                error = %e,
                "cannot delete an ingested audit journal segment; replaying it later is harmless"
            ),
        }
    }

    fn note_update(&mut self, result: Result<(), Failure>, kind: &str, id: &str) {
        if let Err(f) = result {
            tracing::error!(
                path = %self.path.display(),
                kind,
                id,
                error = %f.describe(),
                "audit update not written"
            );
            self.failed_updates += 1;
            self.last_failure = Some(f);
        }
    }
}

/// Writes `cmds` in one IMMEDIATE transaction. `Err` if the transaction as a whole failed (nothing
/// of it is committed); otherwise one result per command (a command refused by a constraint fails
/// alone, the rest commit).
fn write_batch(
    conn: &mut Connection,
    cmds: &[Command],
    outbox: Option<OutboxConfig>,
    drops_pending: &mut bool,
) -> Result<Vec<Result<(), Failure>>, Failure> {
    if !conn.is_autocommit() {
        // A previous rollback did not go through; without this every later BEGIN would fail.
        conn.execute_batch("ROLLBACK")
            .map_err(|e| Failure::from_sqlite(&e))?;
    }
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(|e| Failure::from_sqlite(&e))?;
    let mut results = Vec::with_capacity(cmds.len());
    for cmd in cmds {
        match apply(&tx, cmd, outbox.is_some()) {
            Ok(()) => results.push(Ok(())),
            Err(e) => {
                // SQLITE_FULL, IOERR, NOMEM and BUSY may roll the whole transaction back; then
                // nothing of the batch is in and it must fail as a whole.
                if tx.is_autocommit() {
                    return Err(Failure::from_sqlite(&e));
                }
                match Failure::from_sqlite(&e) {
                    f @ (Failure::Rejected(_) | Failure::Other(_)) => results.push(Err(f)),
                    f => return Err(f),
                }
            }
        }
    }
    if let Some(cfg) = &outbox {
        let pending = outbox::make_room(&tx, cfg).map_err(|e| Failure::from_sqlite(&e))?;
        tx.commit().map_err(|e| Failure::from_sqlite(&e))?;
        *drops_pending = pending;
    } else {
        tx.commit().map_err(|e| Failure::from_sqlite(&e))?;
    }
    Ok(results)
}

/// The SQL for one command.
fn apply(conn: &Connection, cmd: &Command, outbox: bool) -> rusqlite::Result<()> {
    match cmd {
        Command::Insert(rec) => {
            if schema::insert_call(conn, rec)? == 0 {
                tracing::warn!(call = %rec.id, "a call with this id is already on record; the new record was ignored");
            } else if outbox {
                schema::enqueue(
                    conn,
                    &rec.id,
                    schema::KIND_TOOL_CALL,
                    &rec.id,
                    rec.received_at_us,
                    None,
                )?;
            }
        }
        Command::OutboxAck(ids) => {
            let mut st = conn.prepare_cached("DELETE FROM outbox WHERE event_id = ?1")?;
            for id in ids {
                st.execute(params![id])?;
            }
        }
        Command::Outcome {
            id,
            outcome,
            finished_at_us,
            duration_us,
            error,
        } => {
            let n = conn
                .prepare_cached(
                    "UPDATE tool_calls SET outcome = ?2, finished_at_us = ?3, duration_us = ?4, \
                     error = ?5 WHERE id = ?1",
                )?
                .execute(params![
                    id,
                    outcome.as_str(),
                    finished_at_us,
                    duration_us,
                    error
                ])?;
            if n == 0 {
                tracing::warn!(call = %id, "outcome for a call that is not on record; ignored");
            } else if outbox {
                schema::enqueue_update(conn, schema::KIND_TOOL_CALL, id, *finished_at_us)?;
            }
        }
        Command::Verdict {
            id,
            verdict,
            reason,
            decided_at_us,
        } => {
            let n = conn
                .prepare_cached(
                    "UPDATE tool_calls SET verdict = ?2, reason = ?3, decided_at_us = ?4 \
                     WHERE id = ?1",
                )?
                .execute(params![id, verdict.as_str(), reason, decided_at_us])?;
            if n == 0 {
                tracing::warn!(call = %id, "verdict for a call that is not on record; ignored");
            } else if outbox {
                schema::enqueue_update(conn, schema::KIND_TOOL_CALL, id, *decided_at_us)?;
            }
        }
        Command::Session(s) => {
            let r = &s.rec;
            conn.prepare_cached(
                "INSERT INTO sessions (id, schema, service, command, started_at_us, ended_at_us, \
                 client_name, client_version, server_name, server_version, protocol_version, \
                 client_capabilities, server_capabilities, restarts, last_exit) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15) \
                 ON CONFLICT (id) DO UPDATE SET schema = excluded.schema, \
                 service = excluded.service, command = excluded.command, \
                 started_at_us = excluded.started_at_us, ended_at_us = excluded.ended_at_us, \
                 client_name = excluded.client_name, client_version = excluded.client_version, \
                 server_name = excluded.server_name, server_version = excluded.server_version, \
                 protocol_version = excluded.protocol_version, \
                 client_capabilities = excluded.client_capabilities, \
                 server_capabilities = excluded.server_capabilities, \
                 restarts = excluded.restarts, last_exit = excluded.last_exit",
            )?
            .execute(params![
                r.id,
                r.schema,
                r.service,
                s.command,
                r.started_at_us,
                r.ended_at_us,
                r.client_name,
                r.client_version,
                r.server_name,
                r.server_version,
                r.protocol_version,
                s.client_capabilities,
                s.server_capabilities,
                r.restarts,
                r.last_exit,
            ])?;
            if outbox {
                schema::enqueue_update(conn, schema::KIND_SESSION, &r.id, now_us())?;
            }
        }
        Command::Flush { .. } | Command::SegmentDone(_) => {}
    }
    Ok(())
}
