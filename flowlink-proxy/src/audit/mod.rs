//! The local audit store: every tool call the proxy sees, in `<data-dir>/audit.sqlite3`.
//!
//! # What is written, and when
//!
//! The relay calls [`AuditStore::record_call`] for every `tools/call` *before* it acts on the call
//! (forwards it, refuses it or asks a person). That future resolves only once the row is committed, so
//! a call the proxy acted on is always on record; if the row cannot be committed (disk full, database
//! locked, writer stopped) it returns an [`AuditError`] and the relay fails closed by refusing the
//! call. Afterwards [`AuditStore::record_outcome`], [`AuditStore::update_verdict`] and
//! [`AuditStore::record_session`] update the store without waiting (fire-and-forget);
//! [`AuditStore::flush`] waits for all of those at shutdown.
//!
//! # Durability
//!
//! The database runs in WAL mode with `synchronous=NORMAL`. A commit appends the transaction to the
//! `audit.sqlite3-wal` file with an ordinary `write()`, without `fsync`:
//!
//! - **The proxy being killed** (`kill -9`, a crash, an OOM kill) at any moment loses nothing that was
//!   committed: once the commit returns the data is in the operating system's page cache, which
//!   outlives the process, and the next open replays the WAL. Every call that `record_call` confirmed
//!   is therefore on record. Fire-and-forget updates still queued at the moment of the kill are lost:
//!   such a call keeps `outcome = pending` ("the proxy stopped before it finished").
//! - **A power cut or an operating-system crash** can lose the transactions committed since the WAL
//!   was last flushed to disk (`fsync`), which happens at every checkpoint. A checkpointer thread
//!   with a connection of its own runs one after writes, at most once a second, so under normal
//!   operation a power cut takes at most about the last second or two of records. The database
//!   itself stays consistent (no torn or half-written transactions).
//!
//! This is the trade: no `fsync` per call on the hot path, full durability against process death,
//! bounded loss on power failure. The write connection has automatic checkpoints turned off, so no
//! checkpoint (and no `fsync`) ever runs inside a commit a tool call is waiting for.
//!
//! # Writing: one thread, group commit
//!
//! One dedicated OS thread owns the only write connection. [`AuditStore`] handles (cheap to clone)
//! send it commands over a channel; the thread takes everything queued, writes it in ONE transaction,
//! commits, and only then wakes the `record_call` and `flush` waiters of that batch. Under load many
//! calls share one commit. If a batch fails as a whole (disk full, say), each command of it is retried
//! in a transaction of its own so one bad record cannot sink the others, and each waiter gets its own
//! answer.
//!
//! # Files and permissions
//!
//! The audit store holds tool arguments, which can be sensitive: the data directory is created with
//! mode 0700 and the database (and its `-wal` / `-shm` companions) with 0600. The schema version is
//! SQLite's `PRAGMA user_version`; migrations only move forward, and a database from a newer FlowLink
//! is refused rather than altered.
//!
//! # Reading
//!
//! [`query_calls`] opens its own read-only connection, so `flowlink-proxy audit` can read while
//! proxies write. [`render_table`] and [`render_json_lines`] print the result.

mod error;
mod journal;
mod query;
mod render;
mod schema;
mod store;

#[cfg(test)]
mod tests;

pub use error::AuditError;
pub use journal::{JOURNAL_DIR_NAME, recover};
pub use query::{AuditQuery, parse_since, query_calls};
pub use render::{render_json_lines, render_table};
pub use store::{AuditStore, DB_FILE_NAME, default_data_dir};
