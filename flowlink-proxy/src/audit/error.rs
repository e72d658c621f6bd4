//! What can go wrong with the audit store, and what to do about it.

use std::path::PathBuf;

/// An audit store failure. Every message names the file or directory and says what to do.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// The data directory could not be created.
    #[error(
        "cannot create the audit data directory {}: {source}; make sure its parent is a writable directory, or choose another data directory",
        path.display()
    )]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },

    /// The database file could not be created or its permissions could not be set.
    #[error(
        "cannot create the audit database {}: {source}; check that its directory is writable by this user",
        path.display()
    )]
    CreateFile {
        /// The database file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },

    /// SQLite could not open or set up the database.
    #[error(
        "cannot open the audit database {}: {source}; if the file is damaged or not a FlowLink audit database, move it aside and a new one will be started",
        path.display()
    )]
    Open {
        /// The database file.
        path: PathBuf,
        /// Why.
        source: rusqlite::Error,
    },

    /// SQLite would not switch the database to WAL mode.
    #[error(
        "the audit database {} cannot use WAL mode (journal mode stays `{mode}`); put the data directory on a local file system",
        path.display()
    )]
    NoWal {
        /// The database file.
        path: PathBuf,
        /// The journal mode SQLite kept.
        mode: String,
    },

    /// A schema migration failed.
    #[error(
        "cannot upgrade the audit database {} to schema version {version}: {source}; check free disk space and permissions, or move the file aside",
        path.display()
    )]
    Migrate {
        /// The database file.
        path: PathBuf,
        /// The version being migrated to.
        version: u32,
        /// Why.
        source: rusqlite::Error,
    },

    /// The database was written by a newer FlowLink.
    #[error(
        "the audit database {} has schema version {found}, newer than this flowlink-proxy understands (up to {supported}); upgrade flowlink-proxy, or move the file aside",
        path.display()
    )]
    SchemaTooNew {
        /// The database file.
        path: PathBuf,
        /// The version found in the file.
        found: i64,
        /// The newest version this build knows.
        supported: u32,
    },

    /// The writer thread could not be started.
    #[error(
        "cannot start the audit writer thread for {}: {source}; the system is out of threads or memory",
        path.display()
    )]
    Spawn {
        /// The database file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },

    /// The writer thread has stopped; nothing more can be recorded by this store.
    #[error(
        "the audit writer for {} has stopped, so nothing can be recorded; see the earlier log lines for why, then restart flowlink-proxy",
        path.display()
    )]
    WriterGone {
        /// The database file.
        path: PathBuf,
    },

    /// SQLITE_FULL: the disk (or a size limit) is full.
    #[error(
        "the audit database {} is full: free disk space in {}, then retry; until then tool calls that cannot be recorded are refused",
        path.display(),
        dir.display()
    )]
    DiskFull {
        /// The database file.
        path: PathBuf,
        /// Its directory, where space must be freed.
        dir: PathBuf,
    },

    /// Another process held the write lock for longer than the busy timeout.
    #[error(
        "the audit database {} stayed locked by another process for more than {timeout_s} s; look for a stuck process holding it open (for example an `sqlite3` shell)",
        path.display()
    )]
    Locked {
        /// The database file.
        path: PathBuf,
        /// The busy timeout, in seconds.
        timeout_s: u64,
    },

    /// Any other write failure.
    #[error(
        "cannot write to the audit database {}: {detail}; check free disk space and the file's permissions",
        path.display()
    )]
    Write {
        /// The database file.
        path: PathBuf,
        /// What SQLite said.
        detail: String,
    },

    /// The record was refused by the schema (a constraint failed).
    #[error(
        "the audit database {} refused a record: {detail}; the database may have been altered by hand: move it aside and a new one will be started",
        path.display()
    )]
    Rejected {
        /// The database file.
        path: PathBuf,
        /// What SQLite said.
        detail: String,
    },

    /// Fire-and-forget updates failed since the last flush.
    #[error(
        "{count} audit update(s) to {} could not be written (last error: {last}); check free disk space in {}",
        path.display(),
        dir.display()
    )]
    UpdatesFailed {
        /// The database file.
        path: PathBuf,
        /// Its directory.
        dir: PathBuf,
        /// How many updates failed.
        count: u64,
        /// The last failure, in words.
        last: String,
    },

    /// The journal directory or a journal segment could not be created.
    #[error(
        "cannot create the audit journal file {}: {source}; {hint}; until then tool calls are refused",
        path.display()
    )]
    JournalCreate {
        /// The directory or segment file.
        path: PathBuf,
        /// What to do, from the error.
        hint: String,
        /// Why.
        source: std::io::Error,
    },

    /// A call could not be appended to the journal, so it is not on record and must not be acted on.
    #[error(
        "cannot append to the audit journal {}: {source}; {hint}; until then tool calls that cannot be recorded are refused",
        path.display()
    )]
    JournalWrite {
        /// The segment file.
        path: PathBuf,
        /// What to do, from the error.
        hint: String,
        /// Why.
        source: std::io::Error,
    },

    /// The journal (its directory or a segment) could not be read during recovery.
    #[error(
        "cannot read the audit journal {}: {source}; check that it is readable and writable by this user (the calls in it are not yet in the database)",
        path.display()
    )]
    JournalRead {
        /// The directory or segment file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },

    /// Journaled calls could not be written to the database (they stay in the journal).
    #[error(
        "{calls} tool call record(s) and {updates} update(s) could not be written to the audit database {} (last error: {last}); the calls are kept in the journal {} and are imported by the next start of flowlink-proxy or by `flowlink-proxy audit`; free disk space in {}",
        path.display(),
        journal.display(),
        dir.display()
    )]
    CallsNotIngested {
        /// The database file.
        path: PathBuf,
        /// The journal directory.
        journal: PathBuf,
        /// The data directory.
        dir: PathBuf,
        /// How many calls failed.
        calls: u64,
        /// How many fire-and-forget updates failed too.
        updates: u64,
        /// The last failure, in words.
        last: String,
    },

    /// The record could not be encoded as JSON.
    #[error("cannot encode the record of call {id} as JSON: {source}")]
    Encode {
        /// The call id.
        id: String,
        /// Why.
        source: serde_json::Error,
    },

    /// There is no database to read.
    #[error(
        "there is no audit database at {}: nothing has been recorded there yet; check the data directory",
        path.display()
    )]
    NotFound {
        /// The database file.
        path: PathBuf,
    },

    /// Reading failed.
    #[error(
        "cannot read the audit database {}: {source}; check that the file is a FlowLink audit database and readable by this user",
        path.display()
    )]
    Read {
        /// The database file.
        path: PathBuf,
        /// Why.
        source: rusqlite::Error,
    },

    /// A stored row cannot be turned back into a record.
    #[error(
        "record {id} in the audit database {} cannot be read ({what}); the file was damaged or written by a newer FlowLink",
        path.display()
    )]
    BadRow {
        /// The database file.
        path: PathBuf,
        /// The record id.
        id: String,
        /// What is wrong.
        what: String,
    },

    /// A `--since` value that is neither a duration nor a timestamp.
    #[error(
        "cannot read the time `{input}`: {why}; expected a duration such as 90s, 15m, 2h or 7d, or an RFC 3339 timestamp such as 2026-11-25T10:00:00Z"
    )]
    BadSince {
        /// What was given.
        input: String,
        /// What is wrong with it.
        why: String,
    },
}
