//! Tool pinning: the first time the proxy sees a tool of a service it records a fingerprint of
//! the tool's name, description and input schema; a later `tools/list` that shows a different
//! definition (a "rug pull": the description now tells the model to read your keys) quarantines
//! the tool — hidden from `tools/list`, its calls refused — until a person accepts the change with
//! `flowlink-proxy pins accept`.
//!
//! Pins live in `<data-dir>/pins.sqlite3`, shared by every proxy using that data directory; the
//! relay reads and writes it only when a `tools/list` result passes, never on the call path.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, params};

use crate::audit::now_us;

/// The pin database's file name inside the data directory.
pub const PINS_FILE_NAME: &str = "pins.sqlite3";

/// Why the pin store failed.
#[derive(Debug, thiserror::Error)]
pub enum PinError {
    /// The database could not be opened or written.
    #[error(
        "tool pin store {path}: {source}; check the data directory's permissions and free space"
    )]
    Db {
        /// The file.
        path: PathBuf,
        /// What SQLite said.
        source: rusqlite::Error,
    },
}

/// What a tool's current definition is, compared with its pin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PinState {
    /// Seen for the first time: now pinned.
    New,
    /// Same definition as pinned.
    Unchanged,
    /// Different from the pinned definition, and not accepted yet.
    Changed {
        /// When the pin was made (µs since the epoch).
        pinned_at_us: i64,
    },
}

/// One pin, for `flowlink-proxy pins list`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PinRow {
    /// `--name` of the service.
    pub service: String,
    /// Tool name.
    pub tool: String,
    /// Pinned fingerprint.
    pub fingerprint: String,
    /// A newer definition waiting for acceptance.
    pub pending: Option<String>,
    /// When pinned (µs since the epoch).
    pub pinned_at_us: i64,
}

/// The pin database.
pub struct PinStore {
    conn: Connection,
    path: PathBuf,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS tool_pins (
    service        TEXT    NOT NULL,
    tool           TEXT    NOT NULL,
    fingerprint    TEXT    NOT NULL,
    pinned_at_us   INTEGER NOT NULL,
    pending        TEXT,               -- fingerprint of a changed definition not yet accepted
    pending_at_us  INTEGER,
    PRIMARY KEY (service, tool)
);";

impl PinStore {
    /// Opens (creating if needed) the pin store in `data_dir`.
    pub fn open(data_dir: &Path) -> Result<PinStore, PinError> {
        let path = data_dir.join(PINS_FILE_NAME);
        let err = |source| PinError::Db {
            path: path.clone(),
            source,
        };
        let conn = Connection::open(&path).map_err(err)?;
        let _ = std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600));
        conn.busy_timeout(Duration::from_secs(5)).map_err(err)?;
        conn.pragma_update(None, "journal_mode", "wal")
            .map_err(err)?;
        conn.execute_batch(SCHEMA).map_err(err)?;
        Ok(PinStore { conn, path })
    }

    fn err(&self, source: rusqlite::Error) -> PinError {
        PinError::Db {
            path: self.path.clone(),
            source,
        }
    }

    /// Compares a tool's fingerprint with its pin, pinning it if it is new and recording a
    /// changed definition as pending.
    pub fn check(
        &self,
        service: &str,
        tool: &str,
        fingerprint: &str,
    ) -> Result<PinState, PinError> {
        let row: Option<(String, i64)> = self
            .conn
            .query_row(
                "SELECT fingerprint, pinned_at_us FROM tool_pins WHERE service = ?1 AND tool = ?2",
                params![service, tool],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
            .map_err(|e| self.err(e))?;
        match row {
            None => {
                self.conn
                    .execute(
                        "INSERT INTO tool_pins (service, tool, fingerprint, pinned_at_us) \
                         VALUES (?1, ?2, ?3, ?4) ON CONFLICT (service, tool) DO NOTHING",
                        params![service, tool, fingerprint, now_us()],
                    )
                    .map_err(|e| self.err(e))?;
                Ok(PinState::New)
            }
            Some((pinned, _)) if pinned == fingerprint => {
                // A pending change that went away again needs no acceptance any more.
                self.conn
                    .execute(
                        "UPDATE tool_pins SET pending = NULL, pending_at_us = NULL \
                         WHERE service = ?1 AND tool = ?2 AND pending IS NOT NULL",
                        params![service, tool],
                    )
                    .map_err(|e| self.err(e))?;
                Ok(PinState::Unchanged)
            }
            Some((_, pinned_at_us)) => {
                self.conn
                    .execute(
                        "UPDATE tool_pins SET pending = ?3, pending_at_us = ?4 \
                         WHERE service = ?1 AND tool = ?2",
                        params![service, tool, fingerprint, now_us()],
                    )
                    .map_err(|e| self.err(e))?;
                Ok(PinState::Changed { pinned_at_us })
            }
        }
    }

    /// Pins, optionally of one service, ordered by service and tool.
    pub fn list(&self, service: Option<&str>) -> Result<Vec<PinRow>, PinError> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT service, tool, fingerprint, pending, pinned_at_us FROM tool_pins \
                 WHERE ?1 IS NULL OR service = ?1 ORDER BY service, tool",
            )
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map(params![service], |r| {
                Ok(PinRow {
                    service: r.get(0)?,
                    tool: r.get(1)?,
                    fingerprint: r.get(2)?,
                    pending: r.get(3)?,
                    pinned_at_us: r.get(4)?,
                })
            })
            .map_err(|e| self.err(e))?;
        rows.collect::<Result<Vec<_>, _>>().map_err(|e| self.err(e))
    }

    /// Accepts pending changes of a service (or of one of its tools): the new definition becomes
    /// the pin. Returns how many pins changed.
    pub fn accept(&self, service: &str, tool: Option<&str>) -> Result<usize, PinError> {
        self.conn
            .execute(
                "UPDATE tool_pins SET fingerprint = pending, pinned_at_us = ?3, pending = NULL, \
                 pending_at_us = NULL \
                 WHERE service = ?1 AND (?2 IS NULL OR tool = ?2) AND pending IS NOT NULL",
                params![service, tool, now_us()],
            )
            .map_err(|e| self.err(e))
    }

    /// Forgets pins of a service (or one tool): they are pinned afresh the next time they are seen.
    pub fn forget(&self, service: &str, tool: Option<&str>) -> Result<usize, PinError> {
        self.conn
            .execute(
                "DELETE FROM tool_pins WHERE service = ?1 AND (?2 IS NULL OR tool = ?2)",
                params![service, tool],
            )
            .map_err(|e| self.err(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_sight_pins_a_change_waits_for_acceptance() {
        let dir = tempfile::tempdir().unwrap();
        let pins = PinStore::open(dir.path()).unwrap();
        assert_eq!(pins.check("git", "git_push", "aaa").unwrap(), PinState::New);
        assert_eq!(
            pins.check("git", "git_push", "aaa").unwrap(),
            PinState::Unchanged
        );
        assert!(matches!(
            pins.check("git", "git_push", "bbb").unwrap(),
            PinState::Changed { .. }
        ));
        // Still changed until accepted, also from another process's handle.
        let other = PinStore::open(dir.path()).unwrap();
        assert!(matches!(
            other.check("git", "git_push", "bbb").unwrap(),
            PinState::Changed { .. }
        ));
        assert_eq!(
            other.list(Some("git")).unwrap()[0].pending.as_deref(),
            Some("bbb")
        );
        assert_eq!(pins.accept("git", Some("git_push")).unwrap(), 1);
        assert_eq!(
            pins.check("git", "git_push", "bbb").unwrap(),
            PinState::Unchanged
        );
        // Reverting to the pinned definition clears a pending change.
        assert!(matches!(
            pins.check("git", "git_push", "ccc").unwrap(),
            PinState::Changed { .. }
        ));
        assert_eq!(
            pins.check("git", "git_push", "bbb").unwrap(),
            PinState::Unchanged
        );
        assert_eq!(pins.list(None).unwrap()[0].pending, None);
        assert_eq!(pins.forget("git", None).unwrap(), 1);
        assert_eq!(pins.check("git", "git_push", "zzz").unwrap(), PinState::New);
        let mode = std::fs::metadata(dir.path().join(PINS_FILE_NAME))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
