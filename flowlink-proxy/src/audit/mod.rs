//! The local audit store: every tool call the proxy sees, in `<data-dir>/audit.sqlite3`.
//!
//! # What is written, and when
//!
//! The relay calls [`AuditStore::record_call`] for every `tools/call` *before* it acts on the call
//! (forwards it, refuses it or asks a person). `record_call` encodes the
//! [`ToolCallRecord`](flowlink_proto::audit::ToolCallRecord) as one JSON line and appends it with a
//! single `write()` to this process's journal segment,
//! `<data-dir>/journal/<uuidv7>.jsonl`, on the caller's thread (a few microseconds, under a mutex,
//! no `fsync`, no hop to another thread). It then queues the record for the SQLite writer thread
//! without waiting and returns `Ok`. If the write fails (disk full, file-size limit, I/O error,
//! unwritable directory) it returns an [`AuditError`] naming the file and what to do, and the relay
//! fails closed by refusing the call; a failed or short write is cut off the segment (`ftruncate`
//! back to its previous length), so no half line stays behind, and the next call simply tries again.
//!
//! Afterwards [`AuditStore::record_outcome`], [`AuditStore::update_verdict`] and
//! [`AuditStore::record_session`] update SQLite without waiting (fire-and-forget, not journaled).
//! [`AuditStore::flush`] waits until everything queued so far is committed in SQLite, and reports
//! calls or updates that could not be written since the previous flush.
//!
//! # Durability
//!
//! - **The proxy being killed** (`kill -9`, a crash, an OOM kill) at any moment loses no call that
//!   `record_call` confirmed: once the `write()` returned, the journal line is in the operating
//!   system's page cache, which outlives the process. SQLite ingestion normally follows within
//!   milliseconds; whatever had not been ingested is replayed from the dead process's segment by
//!   [`recover`]. Fire-and-forget updates still queued at the moment of the kill are lost: such a
//!   call keeps `outcome = pending` ("the proxy stopped before it finished").
//! - **A power cut or an operating-system crash** can lose journal lines and SQLite transactions
//!   written since they were last flushed to disk. Nothing on the hot path `fsync`s. SQLite runs in
//!   WAL mode with `synchronous=NORMAL`, and a checkpointer thread with a connection of its own
//!   checkpoints (and so `fsync`s) the WAL at most once a second after writes, so under normal
//!   operation a power cut takes about the last second or two of records (journal segments are
//!   left to the kernel's writeback; the database itself stays consistent, with no torn
//!   transactions).
//!
//! This is the trade: no `fsync` per call, full durability against process death, bounded loss on
//! power failure, and a `record_call` that costs one `write()`.
//!
//! # The journal
//!
//! Every process writes its own segment and holds an exclusive `flock` on it while it is live. A
//! segment is created under a hidden temporary name, locked, then renamed into place, so no other
//! process ever sees it unlocked while its owner lives. Past 4 MiB the appender starts a new segment
//! and queues the old one (with its lock) to the writer *after* its last record; the writer deletes
//! it once every record before it is committed, or, if any of them could not be written, keeps it
//! and releases the lock so recovery replays it. When the last [`AuditStore`] handle is dropped the
//! live segment is retired the same way and the drop waits for the writer, so a clean run leaves no
//! journal behind.
//!
//! [`recover`] replays every segment nobody holds a lock on (its owner is dead) into SQLite, one
//! transaction per segment, and deletes it; it returns how many calls were newly inserted. Inserts
//! are keyed by the call id and a call already on record is left as it is, so replaying is always
//! harmless (and a duplicate id, which UUIDv7 ids never produce, keeps the first record). A torn
//! last line (its write never completed, so it was never confirmed) and a malformed line elsewhere
//! are skipped with a warning. [`AuditStore::open`] runs recovery before starting (a failure there
//! is logged and the segments are kept for the next attempt); `flowlink-proxy audit` should run it
//! before reading.
//!
//! # Writing to SQLite: one thread, group commit
//!
//! One dedicated OS thread owns the only write connection. [`AuditStore`] handles (cheap to clone)
//! send it commands over a FIFO channel; the thread takes everything queued, writes it in ONE
//! transaction and commits. Under load many calls share one commit. If a batch fails as a whole
//! (disk full, say), each command of it is retried in a transaction of its own so one bad record
//! cannot sink the others. The write connection has automatic checkpoints turned off, so no
//! checkpoint (and no `fsync`) ever runs inside its commits.
//!
//! # Files and permissions
//!
//! The audit store holds tool arguments, which can be sensitive: the data directory and the journal
//! directory are created with mode 0700, and the database (and its `-wal` / `-shm` companions) and
//! the journal segments with 0600. The schema version is
//! SQLite's `PRAGMA user_version`; migrations only move forward, and a database from a newer FlowLink
//! is refused rather than altered.
//!
//! # The outbox (enrolled proxies)
//!
//! [`AuditStore::open_with_outbox`] also queues every record and update as an event for the
//! control plane, in the `outbox` table, in the same transaction as the audit row (see
//! [`outbox`]). The journal stays the only thing on the hot path, so the guarantee above extends
//! to shipping: a call confirmed by `record_call` reaches the outbox even if the process is killed
//! before SQLite ingests it (recovery queues what it replays). Events are deleted only when the
//! control plane acknowledged them ([`AuditStore::outbox_ack`]); the bound and what happens at it
//! are [`OutboxConfig`] and [`WhenFull`].
//!
//! # Reading
//!
//! [`query_calls`] opens its own read-only connection, so `flowlink-proxy audit` can read while
//! proxies write. [`render_table`] and [`render_json_lines`] print the result.

mod error;
mod journal;
pub mod outbox;
mod query;
mod render;
mod schema;
mod store;

#[cfg(test)]
mod tests;

pub use error::AuditError;
pub use journal::{JOURNAL_DIR_NAME, recover};
pub use outbox::{OutboxConfig, OutboxEvent, OutboxReader, WhenFull};
pub use query::{AuditQuery, parse_since, query_calls};
pub use render::{render_json_lines, render_table};
pub use store::{AuditStore, DB_FILE_NAME, default_data_dir, now_us};
