//! [`AuditStore`]: the handle the relay writes through, and the writer thread behind it.

use std::fs::{DirBuilder, OpenOptions};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, Sender, SyncSender, TryRecvError};
use std::time::{Duration, Instant};

use flowlink_proto::audit::{Outcome, SessionRecord, ToolCallRecord, Verdict};
use rusqlite::{Connection, ErrorCode, OpenFlags, TransactionBehavior, params};
use tokio::sync::oneshot;

use super::AuditError;
use super::schema;

/// The database file's name inside the data directory.
pub const DB_FILE_NAME: &str = "audit.sqlite3";

/// How long a statement waits for another process's write lock before failing.
pub(crate) const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The checkpointer thread checkpoints the WAL (which `fsync`s it) at most this often while
/// records are being written, bounding in time what a power cut can take. It has a connection of
/// its own, so the `fsync`s never hold up a commit the relay is waiting for.
pub(crate) const CHECKPOINT_INTERVAL: Duration = Duration::from_secs(1);

/// The most commands one transaction takes. "Everything queued" in practice: `record_call` callers
/// wait for their commit, so the queue only grows past this under a burst of fire-and-forget
/// updates, and then the cap keeps each commit (and the wait of the calls in it) short.
const MAX_BATCH: usize = 4096;

/// Queue depth at which the writer warns that it is falling behind.
const BACKLOG_WARN: usize = 10_000;

/// `directories::ProjectDirs` data directory for FlowLink (e.g. `~/.local/share/flowlink` on Linux).
pub fn default_data_dir() -> Option<PathBuf> {
    directories::ProjectDirs::from("dev", "FlowLink", "flowlink").map(|d| d.data_dir().to_owned())
}

/// A cheap, cloneable handle to the audit store. All clones share one writer thread; the thread
/// finishes its queue and exits when the last clone is dropped.
#[derive(Clone)]
pub struct AuditStore {
    inner: Arc<Inner>,
}

struct Inner {
    /// Unbounded on purpose. A bounded channel would leave the synchronous fire-and-forget methods
    /// two bad choices when full: drop the update (silent loss, forbidden) or block the caller (an
    /// async relay task, stalling the runtime). The queue is bounded in practice anyway: each
    /// `record_call` waits for its commit, so calls in the queue are at most the calls in flight, and
    /// each call queues a small fixed number of updates after it. `depth` makes a backlog visible in
    /// the logs instead.
    tx: Sender<Command>,
    depth: Arc<AtomicUsize>,
    db_path: PathBuf,
}

/// A unit of work for the writer thread.
enum Command {
    Insert {
        row: Box<CallRow>,
        done: oneshot::Sender<Result<(), AuditError>>,
    },
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
}

/// A [`ToolCallRecord`] with its JSON already encoded (on the caller's thread, not the writer's).
struct CallRow {
    rec: ToolCallRecord,
    arguments: String,
}

/// A [`SessionRecord`] with its JSON already encoded.
struct SessionRow {
    rec: SessionRecord,
    command: String,
    client_capabilities: String,
    server_capabilities: String,
}

impl AuditStore {
    /// Opens (creating if needed) `<data_dir>/audit.sqlite3`, migrates it and starts the writer thread.
    pub fn open(data_dir: &Path) -> Result<AuditStore, AuditError> {
        Self::open_inner(data_dir, |_| Ok(()))
    }

    /// [`AuditStore::open`] with a size cap on the writer connection, to simulate a full disk.
    #[cfg(test)]
    pub(crate) fn open_with_max_pages(
        data_dir: &Path,
        max_pages: u32,
    ) -> Result<AuditStore, AuditError> {
        Self::open_inner(data_dir, |conn| {
            conn.pragma_update(None, "max_page_count", max_pages)
        })
    }

    fn open_inner(
        data_dir: &Path,
        tweak: impl FnOnce(&Connection) -> rusqlite::Result<()>,
    ) -> Result<AuditStore, AuditError> {
        prepare_dir(data_dir)?;
        let db_path = data_dir.join(DB_FILE_NAME);
        prepare_files(&db_path)?;
        let mut conn = open_writer(&db_path)?;
        schema::migrate(&mut conn, &db_path)?;
        tweak(&conn).map_err(|source| AuditError::Open {
            path: db_path.clone(),
            source,
        })?;

        let (tx, rx) = mpsc::channel();
        let depth = Arc::new(AtomicUsize::new(0));
        let writer = Writer {
            conn,
            path: db_path.clone(),
            dir: data_dir.to_owned(),
            depth: Arc::clone(&depth),
            failed_updates: 0,
            last_failure: None,
            checkpoint: spawn_checkpointer(&db_path)?,
            last_backlog_warning: None,
        };
        std::thread::Builder::new()
            .name("flowlink-audit-writer".into())
            .spawn(move || writer.run(rx))
            .map_err(|source| AuditError::Spawn {
                path: db_path.clone(),
                source,
            })?;
        tracing::debug!(path = %db_path.display(), "audit store open");
        Ok(AuditStore {
            inner: Arc::new(Inner { tx, depth, db_path }),
        })
    }

    /// Records a tool call. Resolves only once the row is committed; errors if it was not (disk
    /// full, database locked, writer stopped), in which case the caller must not act on the call.
    pub async fn record_call(&self, rec: ToolCallRecord) -> Result<(), AuditError> {
        let arguments =
            serde_json::to_string(&rec.arguments).map_err(|source| AuditError::Encode {
                id: rec.id.clone(),
                source,
            })?;
        let (done, wait) = oneshot::channel();
        self.send(Command::Insert {
            row: Box::new(CallRow { rec, arguments }),
            done,
        })?;
        wait.await.map_err(|_| self.writer_gone())?
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
        self.send_or_log(Command::Outcome {
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
        self.send_or_log(Command::Verdict {
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
                self.send_or_log(Command::Session(Box::new(SessionRow {
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

    /// Waits until everything queued so far is committed. Errors if the writer stopped, or if any
    /// fire-and-forget update since the previous flush could not be written.
    pub async fn flush(&self) -> Result<(), AuditError> {
        let (done, wait) = oneshot::channel();
        self.send(Command::Flush { done })?;
        wait.await.map_err(|_| self.writer_gone())?
    }

    /// The database file.
    pub fn db_path(&self) -> &Path {
        &self.inner.db_path
    }

    fn send(&self, cmd: Command) -> Result<(), AuditError> {
        self.inner.depth.fetch_add(1, Ordering::Relaxed);
        self.inner.tx.send(cmd).map_err(|_| {
            self.inner.depth.fetch_sub(1, Ordering::Relaxed);
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
            path: self.inner.db_path.clone(),
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

/// Microseconds since the Unix epoch, now.
fn now_us() -> i64 {
    let now = time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1000;
    i64::try_from(now).unwrap_or(i64::MAX)
}

/// Creates the data directory (0700 for each level created). Warns if an existing one is open to
/// other users; the files inside are 0600 regardless.
fn prepare_dir(dir: &Path) -> Result<(), AuditError> {
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
fn prepare_files(db_path: &Path) -> Result<(), AuditError> {
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
fn open_writer(db_path: &Path) -> Result<Connection, AuditError> {
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
enum Failure {
    DiskFull,
    Locked,
    Rejected(String),
    Other(String),
}

impl Failure {
    fn from_sqlite(e: &rusqlite::Error) -> Failure {
        match e.sqlite_error_code() {
            Some(ErrorCode::DiskFull) => Failure::DiskFull,
            Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => Failure::Locked,
            Some(ErrorCode::ConstraintViolation) => Failure::Rejected(e.to_string()),
            _ => Failure::Other(e.to_string()),
        }
    }

    fn to_error(&self, path: &Path, dir: &Path) -> AuditError {
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
    depth: Arc<AtomicUsize>,
    /// Fire-and-forget updates that failed since the last flush.
    failed_updates: u64,
    last_failure: Option<Failure>,
    /// Wakes the checkpointer after a commit (capacity one: wake-ups coalesce).
    checkpoint: SyncSender<()>,
    last_backlog_warning: Option<Instant>,
}

impl Writer {
    fn run(mut self, rx: Receiver<Command>) {
        let mut batch = Vec::new();
        loop {
            let first = match rx.recv() {
                Ok(cmd) => cmd,
                // Every handle is gone and the queue is empty: done.
                Err(_) => break,
            };
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
                "the audit writer is falling behind; nothing is dropped, but memory grows"
            );
        }
    }

    /// Writes a batch and answers its waiters.
    fn process(&mut self, batch: &mut Vec<Command>) {
        let results = match write_batch(&mut self.conn, batch) {
            Ok(results) => results,
            Err(failure) => {
                // The batch as a whole failed. Retry each command alone, so one bad command costs
                // only itself and every waiter learns its own fate.
                tracing::warn!(
                    path = %self.path.display(),
                    commands = batch.len(),
                    error = %failure.describe(),
                    "audit batch failed; retrying its commands one by one"
                );
                batch
                    .iter()
                    .map(
                        |cmd| match write_batch(&mut self.conn, std::slice::from_ref(cmd)) {
                            Ok(mut r) => r.pop().unwrap_or(Ok(())),
                            Err(f) => Err(f),
                        },
                    )
                    .collect()
            }
        };
        if results.iter().any(Result::is_ok) {
            // Full means a wake-up is already pending; disconnected means the checkpointer
            // stopped, and closing the connection at the end still checkpoints.
            let _ = self.checkpoint.try_send(());
        }
        for (cmd, result) in batch.drain(..).zip(results) {
            self.answer(cmd, result);
        }
    }

    fn answer(&mut self, cmd: Command, result: Result<(), Failure>) {
        match cmd {
            Command::Insert { row, done } => {
                if let Err(f) = &result {
                    tracing::error!(
                        path = %self.path.display(),
                        call = %row.rec.id,
                        error = %f.describe(),
                        "tool call not recorded"
                    );
                }
                // The waiter may have gone (its future dropped): the row is written regardless.
                let _ = done.send(result.map_err(|f| f.to_error(&self.path, &self.dir)));
            }
            Command::Flush { done } => {
                let answer = match self.last_failure.take() {
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
            Command::Session(s) => self.note_update(result, "session", &s.rec.id),
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
        match apply(&tx, cmd) {
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
    tx.commit().map_err(|e| Failure::from_sqlite(&e))?;
    Ok(results)
}

/// The SQL for one command.
fn apply(conn: &Connection, cmd: &Command) -> rusqlite::Result<()> {
    match cmd {
        Command::Insert { row, .. } => {
            let r = &row.rec;
            conn.prepare_cached(
                "INSERT INTO tool_calls (id, schema, session_id, received_at_us, decided_at_us, \
                 agent, service, tool, arguments, verdict, action, rule_id, reason, outcome, \
                 finished_at_us, duration_us, error) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17)",
            )?
            .execute(params![
                r.id,
                r.schema,
                r.session_id,
                r.received_at_us,
                r.decided_at_us,
                r.agent,
                r.service,
                r.tool,
                row.arguments,
                r.verdict.as_str(),
                r.action,
                r.rule_id,
                r.reason,
                r.outcome.as_str(),
                r.finished_at_us,
                r.duration_us,
                r.error,
            ])?;
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
        }
        Command::Flush { .. } => {}
    }
    Ok(())
}
