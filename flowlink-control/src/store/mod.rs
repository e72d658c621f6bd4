//! Storage: one interface, two engines. [`Store`] wraps an sqlx `AnyPool` connected to SQLite
//! (embedded default) or PostgreSQL; every query is written once, in the SQL both accept
//! (`$1` placeholders, `ON CONFLICT`, `RETURNING`, integers for times and flags), against
//! column-for-column identical schemas in `migrations/sqlite/` and `migrations/postgres/`.
//!
//! Each domain lives in its own file as `impl Store` blocks: `orgs.rs` (organisations, users,
//! memberships), `sessions.rs`, `tokens.rs` (API tokens, first-run tokens), `audit.rs`,
//! `mfa.rs` (TOTP and recovery codes), `oauth.rs`, `policies.rs` (versions and signing keys),
//! `devices.rs`, `approvals.rs`, `secrets.rs` (sealed secrets, the org key's public half and its
//! wraps, custodians, key-possession challenges).
//!
//! Invariant: every query that reads or changes an organisation's data takes the org id and
//! filters on it; the API layer never passes an id it did not resolve from the caller's own
//! organisation.

mod approvals;
mod audit;
mod devices;
pub mod invitations;
mod mfa;
mod oauth;
mod orgs;
mod policies;
mod secrets;
mod sessions;
mod tokens;

use std::path::Path;
use std::str::FromStr;
use std::time::{SystemTime, UNIX_EPOCH};

pub use approvals::{ApprovalRecord, ApprovalStatus, Ballot, GrantScope, Vote, VoteOutcome};
pub use audit::{
    AuditEvent, AuditFacets, AuditFamily, AuditFilter, COMMAND_MAX_CHARS, StoredAuditEvent,
    like_escape,
};
pub use devices::{
    CRASH_LOOP_RESTARTS, Device, DeviceServer, EnrollRefusal, Enrollment, EnrollmentToken,
    IngestOutcome, Labels, NewDevice, server_state_name,
};
pub use mfa::TotpState;
pub use oauth::{OAuthIdentity, PendingOAuth};
pub use orgs::{Member, Org, User};
pub use policies::{
    NEWER_POLICY_VERSION, NewPolicyVersion, OrgSigningKey, PolicyScope, PolicyVersion,
    PolicyVersionInfo,
};
pub use secrets::{
    ChallengeAnswer, ChallengeRecord, Custodian, KeyChange, KeyWrap, MAX_SECRETS_PER_ORG,
    NewSecretsKey, PutSecret, Recipient, Secret, SecretsKeyVersion, SecretsRefusal, sealed_text,
};
pub use sessions::{NewSession, Session};
pub use tokens::ApiToken;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::migrate::Migrator;
use sqlx::{AnyPool, ConnectOptions};

/// Which engine a [`Store`] runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// Embedded SQLite (one control-plane node).
    Sqlite,
    /// PostgreSQL (production; replicas may share it).
    Postgres,
}

impl Backend {
    /// "sqlite" or "postgres".
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }
}

/// Why a storage operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database refused or could not be reached.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// A migration could not be applied.
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A unique key is taken.
    #[error("{0} already exists")]
    Conflict(&'static str),
    /// The URL names no supported engine.
    #[error("unsupported database URL `{0}`: use sqlite://PATH or postgres://USER@HOST/DATABASE")]
    BadUrl(String),
    /// The data directory could not be prepared.
    #[error("cannot prepare the data directory {path}: {source}")]
    DataDir {
        /// The directory.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A stored value does not have the shape this version writes.
    #[error("corrupt stored value: {0}")]
    Corrupt(String),
    /// Another process holds the SQLite database.
    #[error(
        "another flowlink-control process is using the SQLite database {path} (it holds {path}.lock); \
         SQLite serves one control-plane process: stop the other one, or use PostgreSQL to run several replicas"
    )]
    Locked {
        /// The database file.
        path: String,
    },
}

impl StoreError {
    /// Maps a unique-key violation to [`StoreError::Conflict`].
    fn conflict_as(e: sqlx::Error, what: &'static str) -> StoreError {
        match &e {
            sqlx::Error::Database(db) if db.is_unique_violation() => StoreError::Conflict(what),
            _ => StoreError::Database(e),
        }
    }
}

static SQLITE_MIGRATIONS: Migrator = sqlx::migrate!("../migrations/sqlite");
static POSTGRES_MIGRATIONS: Migrator = sqlx::migrate!("../migrations/postgres");

/// Whether the database's schema is what this binary expects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigrationStatus {
    /// Migrations applied in the database.
    pub applied: Vec<i64>,
    /// Migrations this binary knows.
    pub known: Vec<i64>,
}

impl MigrationStatus {
    /// Every known migration is applied and none is unknown.
    pub fn is_current(&self) -> bool {
        self.applied == self.known
    }
}

/// The control plane's database.
#[derive(Clone, Debug)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
    /// SQLite: the exclusive lock on `<db>.lock`, held while any clone of the store lives.
    _lock: Option<std::sync::Arc<std::fs::File>>,
}

impl Store {
    /// Connects to `url` (`sqlite://PATH` creates the file and its directory when missing;
    /// `postgres://…`). Does not migrate; call [`Store::migrate`].
    ///
    /// A SQLite database is claimed for this process with an exclusive lock on `<PATH>.lock`:
    /// a second process (or a second store in this one) fails with [`StoreError::Locked`], because
    /// links held by one process cannot be told about changes made by another.
    pub async fn connect(url: &str) -> Result<Store, StoreError> {
        Store::open(url, true).await
    }

    /// Connects like [`Store::connect`] without claiming a SQLite database: for short
    /// administrative commands beside a running server (`flowlink-control admin`).
    pub async fn connect_shared(url: &str) -> Result<Store, StoreError> {
        Store::open(url, false).await
    }

    async fn open(url: &str, claim: bool) -> Result<Store, StoreError> {
        sqlx::any::install_default_drivers();
        let backend = if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Backend::Postgres
        } else {
            return Err(StoreError::BadUrl(crate::config::redact_url(url)));
        };
        let mut url = url.to_string();
        let mut lock = None;
        let max_connections = match backend {
            Backend::Sqlite => {
                let path = url
                    .trim_start_matches("sqlite://")
                    .trim_start_matches("sqlite:");
                let path = path.split('?').next().unwrap_or(path);
                if let Some(dir) = Path::new(path)
                    .parent()
                    .filter(|d| !d.as_os_str().is_empty())
                {
                    create_private_dir(dir)?;
                }
                if claim && !path.is_empty() && !path.starts_with(':') {
                    lock = Some(std::sync::Arc::new(claim_sqlite(path)?));
                }
                if !url.contains('?') {
                    url.push_str("?mode=rwc");
                }
                // SQLite has one writer; a few readers suffice and keep memory small.
                4
            }
            Backend::Postgres => 16,
        };
        let options = AnyConnectOptions::from_str(&url)?.disable_statement_logging();
        let pool = AnyPoolOptions::new()
            .max_connections(max_connections)
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if backend == Backend::Sqlite {
                        // WAL: readers never wait for the writer. foreign_keys: cascades.
                        sqlx::query("PRAGMA journal_mode = WAL")
                            .execute(&mut *conn)
                            .await?;
                        sqlx::query("PRAGMA foreign_keys = ON")
                            .execute(&mut *conn)
                            .await?;
                        sqlx::query("PRAGMA busy_timeout = 5000")
                            .execute(&mut *conn)
                            .await?;
                        sqlx::query("PRAGMA synchronous = NORMAL")
                            .execute(&mut *conn)
                            .await?;
                    }
                    Ok(())
                })
            })
            .connect_with(options)
            .await?;
        Ok(Store {
            pool,
            backend,
            _lock: lock,
        })
    }

    /// Applies every migration this binary has that the database lacks.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        self.migrator().run(&self.pool).await?;
        Ok(())
    }

    fn migrator(&self) -> &'static Migrator {
        match self.backend {
            Backend::Sqlite => &SQLITE_MIGRATIONS,
            Backend::Postgres => &POSTGRES_MIGRATIONS,
        }
    }

    /// What is applied versus what this binary knows (for `/readyz` and `migrate --status`).
    pub async fn migration_status(&self) -> Result<MigrationStatus, StoreError> {
        let known: Vec<i64> = self.migrator().iter().map(|m| m.version).collect();
        let applied: Vec<i64> = match sqlx::query_scalar::<_, i64>(
            "SELECT version FROM _sqlx_migrations WHERE success = TRUE ORDER BY version",
        )
        .fetch_all(&self.pool)
        .await
        {
            Ok(v) => v,
            // No migrations table yet: nothing applied.
            Err(sqlx::Error::Database(_)) => Vec::new(),
            Err(e) => return Err(e.into()),
        };
        Ok(MigrationStatus { applied, known })
    }

    /// A round trip to the database.
    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query_scalar::<_, i64>("SELECT 1")
            .fetch_one(&self.pool)
            .await?;
        Ok(())
    }

    /// One keyset page of an organisation's rows in `table`, newest id first (ids are
    /// time-ordered): at most `limit` rows whose id sorts before `before_id`.
    async fn page_by_id(
        &self,
        columns: &str,
        table: &str,
        org_id: &str,
        before_id: Option<&str>,
        limit: i64,
    ) -> Result<Vec<sqlx::any::AnyRow>, StoreError> {
        let rows = match before_id {
            Some(before) => {
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "SELECT {columns} FROM {table} WHERE org_id = $1 AND id < $2 ORDER BY id DESC LIMIT $3"
                )))
                .bind(org_id)
                .bind(before)
                .bind(limit)
                .fetch_all(&self.pool)
                .await?
            }
            None => {
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "SELECT {columns} FROM {table} WHERE org_id = $1 ORDER BY id DESC LIMIT $2"
                )))
                .bind(org_id)
                .bind(limit)
                .fetch_all(&self.pool)
                .await?
            }
        };
        Ok(rows)
    }

    /// The engine.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The pool, for queries of domains outside this module (tests, benchmarks).
    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// Closes every connection (graceful shutdown).
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// Takes the exclusive lock on `<path>.lock` (created 0600 when missing).
fn claim_sqlite(path: &str) -> Result<std::fs::File, StoreError> {
    let lock_path = format!("{path}.lock");
    let mut options = std::fs::OpenOptions::new();
    options.create(true).truncate(false).write(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let file = options
        .open(&lock_path)
        .map_err(|source| StoreError::DataDir {
            path: lock_path.clone(),
            source,
        })?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(StoreError::Locked {
            path: path.to_string(),
        }),
        Err(std::fs::TryLockError::Error(source)) => Err(StoreError::DataDir {
            path: lock_path,
            source,
        }),
    }
}

fn create_private_dir(dir: &Path) -> Result<(), StoreError> {
    let err = |source| StoreError::DataDir {
        path: dir.display().to_string(),
        source,
    };
    if dir.exists() {
        return Ok(());
    }
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(dir).map_err(err)
}

/// Now, in Unix microseconds (the unit of every stored time).
pub fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// A new time-ordered id.
pub fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// A 0/1 flag column as a bool.
fn flag(v: i64) -> bool {
    v != 0
}
