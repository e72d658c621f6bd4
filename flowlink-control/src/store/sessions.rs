//! Browser sessions, stored server-side: the cookie holds a random secret, the table its
//! SHA-256. Revoking a row ends the session at once.

use sqlx::Row;
use sqlx::any::AnyRow;

use sqlx::AssertSqlSafe;

use super::{Store, StoreError, now_us};

/// One sign-in of one browser.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// Public id (listing, revoking).
    pub id: String,
    /// The user.
    pub user_id: String,
    /// The CSRF token state-changing requests must echo.
    pub csrf_token: String,
    /// `complete`, or `totp` while the second factor is due.
    pub stage: String,
    /// `password` or `oauth:<provider>`.
    pub auth_method: String,
    /// Unix µs.
    pub created_at: i64,
    /// Unix µs of the last authenticated request (idle timeout).
    pub last_seen_at: i64,
    /// Unix µs of the absolute timeout.
    pub expires_at: i64,
    /// Client address at sign-in.
    pub ip: String,
    /// User-Agent at sign-in.
    pub user_agent: String,
}

/// What a new session needs.
#[derive(Debug, Clone)]
pub struct NewSession<'a> {
    /// Public id.
    pub id: &'a str,
    /// SHA-256 (hex) of the cookie secret.
    pub token_hash: &'a str,
    /// The user.
    pub user_id: &'a str,
    /// The CSRF token.
    pub csrf_token: &'a str,
    /// `complete` or `totp`.
    pub stage: &'a str,
    /// `password` or `oauth:<provider>`.
    pub auth_method: &'a str,
    /// Absolute expiry, Unix µs.
    pub expires_at: i64,
    /// Client address.
    pub ip: &'a str,
    /// User-Agent (truncated by the caller).
    pub user_agent: &'a str,
}

const COLUMNS: &str = "id, user_id, csrf_token, stage, auth_method, created_at, last_seen_at, expires_at, ip, user_agent";

fn session_from(row: &AnyRow) -> Result<Session, sqlx::Error> {
    Ok(Session {
        id: row.try_get("id")?,
        user_id: row.try_get("user_id")?,
        csrf_token: row.try_get("csrf_token")?,
        stage: row.try_get("stage")?,
        auth_method: row.try_get("auth_method")?,
        created_at: row.try_get("created_at")?,
        last_seen_at: row.try_get("last_seen_at")?,
        expires_at: row.try_get("expires_at")?,
        ip: row.try_get("ip")?,
        user_agent: row.try_get("user_agent")?,
    })
}

impl Store {
    /// Stores a new session.
    pub async fn create_session(&self, s: &NewSession<'_>) -> Result<(), StoreError> {
        let now = now_us();
        sqlx::query(
            "INSERT INTO sessions (id, token_hash, user_id, csrf_token, stage, auth_method, \
             created_at, last_seen_at, expires_at, ip, user_agent) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $7, $8, $9, $10)",
        )
        .bind(s.id)
        .bind(s.token_hash)
        .bind(s.user_id)
        .bind(s.csrf_token)
        .bind(s.stage)
        .bind(s.auth_method)
        .bind(now)
        .bind(s.expires_at)
        .bind(s.ip)
        .bind(s.user_agent)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The live session whose cookie hashes to `token_hash`: not revoked, not past its absolute
    /// expiry, and seen within `idle_us`. Expired rows are left for [`Store::purge_sessions`].
    pub async fn live_session(
        &self,
        token_hash: &str,
        idle_us: i64,
    ) -> Result<Option<Session>, StoreError> {
        let now = now_us();
        let row = sqlx::query(AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM sessions WHERE token_hash = $1 AND revoked_at IS NULL \
             AND expires_at > $2 AND last_seen_at > $3"
        )))
        .bind(token_hash)
        .bind(now)
        .bind(now.saturating_sub(idle_us))
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.as_ref().map(session_from).transpose()?)
    }

    /// Marks a session as used now (sliding idle timeout).
    pub async fn touch_session(&self, id: &str) -> Result<(), StoreError> {
        sqlx::query("UPDATE sessions SET last_seen_at = $1 WHERE id = $2")
            .bind(now_us())
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Moves a session past its second-factor step.
    pub async fn complete_session(&self, id: &str) -> Result<(), StoreError> {
        sqlx::query("UPDATE sessions SET stage = 'complete', last_seen_at = $1 WHERE id = $2")
            .bind(now_us())
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// The live sessions of a user, newest first.
    pub async fn list_sessions(&self, user_id: &str) -> Result<Vec<Session>, StoreError> {
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM sessions WHERE user_id = $1 AND revoked_at IS NULL \
             AND expires_at > $2 ORDER BY created_at DESC"
        )))
        .bind(user_id)
        .bind(now_us())
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(session_from).collect::<Result<_, _>>()?)
    }

    /// Revokes one session of `user_id`. Returns false when there is no such live session.
    pub async fn revoke_session(&self, user_id: &str, id: &str) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE sessions SET revoked_at = $1 WHERE id = $2 AND user_id = $3 AND revoked_at IS NULL",
        )
        .bind(now_us())
        .bind(id)
        .bind(user_id)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Revokes every session of `user_id` ("log out everywhere"; password and 2FA resets).
    pub async fn revoke_all_sessions(&self, user_id: &str) -> Result<u64, StoreError> {
        let done = sqlx::query(
            "UPDATE sessions SET revoked_at = $1 WHERE user_id = $2 AND revoked_at IS NULL",
        )
        .bind(now_us())
        .bind(user_id)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    /// Deletes sessions that ended more than a day ago.
    pub async fn purge_sessions(&self) -> Result<u64, StoreError> {
        let cutoff = now_us() - 86_400_000_000;
        let done = sqlx::query("DELETE FROM sessions WHERE expires_at < $1 OR revoked_at < $1")
            .bind(cutoff)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }
}
