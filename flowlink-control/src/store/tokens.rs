//! API tokens (scoped, expiring, only their SHA-256 stored) and the first-run set-up token.

use sqlx::Row;
use sqlx::any::AnyRow;

use sqlx::AssertSqlSafe;

use super::{Store, StoreError, now_us};

/// An API token's metadata (never its secret).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiToken {
    /// Public id (the part before the dot in the token text).
    pub id: String,
    /// The organisation it acts in.
    pub org_id: String,
    /// Who created it; it never has more rights than this user has in the org.
    pub user_id: String,
    /// A label.
    pub name: String,
    /// Space-separated permission names.
    pub scopes: String,
    /// Unix µs.
    pub created_at: i64,
    /// Unix µs.
    pub expires_at: i64,
    /// Unix µs of the last use, if any.
    pub last_used_at: Option<i64>,
    /// Unix µs of revocation, if revoked.
    pub revoked_at: Option<i64>,
}

const COLUMNS: &str =
    "id, org_id, user_id, name, scopes, created_at, expires_at, last_used_at, revoked_at";

fn token_from(row: &AnyRow) -> Result<ApiToken, sqlx::Error> {
    Ok(ApiToken {
        id: row.try_get("id")?,
        org_id: row.try_get("org_id")?,
        user_id: row.try_get("user_id")?,
        name: row.try_get("name")?,
        scopes: row.try_get("scopes")?,
        created_at: row.try_get("created_at")?,
        expires_at: row.try_get("expires_at")?,
        last_used_at: row.try_get("last_used_at")?,
        revoked_at: row.try_get("revoked_at")?,
    })
}

impl Store {
    /// Stores a new token (the caller made the secret and hashed it).
    pub async fn create_api_token(&self, t: &ApiToken, token_hash: &str) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO api_tokens (id, org_id, user_id, name, token_hash, scopes, created_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(&t.id)
        .bind(&t.org_id)
        .bind(&t.user_id)
        .bind(&t.name)
        .bind(token_hash)
        .bind(&t.scopes)
        .bind(t.created_at)
        .bind(t.expires_at)
        .execute(&self.pool)
        .await
        .map_err(|e| StoreError::conflict_as(e, "a token with this id"))?;
        Ok(())
    }

    /// The live token (not revoked, not expired) whose secret hashes to `token_hash`, and
    /// records its use (at most once a minute, to keep reads cheap).
    pub async fn live_api_token(&self, token_hash: &str) -> Result<Option<ApiToken>, StoreError> {
        let now = now_us();
        let row = sqlx::query(AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM api_tokens WHERE token_hash = $1 AND revoked_at IS NULL AND expires_at > $2"
        )))
        .bind(token_hash)
        .bind(now)
        .fetch_optional(&self.pool)
        .await?;
        let Some(token) = row.as_ref().map(token_from).transpose()? else {
            return Ok(None);
        };
        if token.last_used_at.is_none_or(|t| now - t > 60_000_000) {
            sqlx::query("UPDATE api_tokens SET last_used_at = $1 WHERE id = $2")
                .bind(now)
                .bind(&token.id)
                .execute(&self.pool)
                .await?;
        }
        Ok(Some(token))
    }

    /// Up to `limit` tokens of an organisation whose id sorts before `before_id` (ids are
    /// time-ordered, so this is newest first); revoked ones included, marked.
    pub async fn list_api_tokens(
        &self,
        org_id: &str,
        before_id: Option<&str>,
        limit: i64,
    ) -> Result<Vec<ApiToken>, StoreError> {
        let rows = self
            .page_by_id(COLUMNS, "api_tokens", org_id, before_id, limit)
            .await?;
        Ok(rows.iter().map(token_from).collect::<Result<_, _>>()?)
    }

    /// One token of an organisation.
    pub async fn api_token(&self, org_id: &str, id: &str) -> Result<Option<ApiToken>, StoreError> {
        let row = sqlx::query(AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM api_tokens WHERE org_id = $1 AND id = $2"
        )))
        .bind(org_id)
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.as_ref().map(token_from).transpose()?)
    }

    /// Revokes a token of `org_id`. Returns false when there is no such live token.
    pub async fn revoke_api_token(&self, org_id: &str, id: &str) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE api_tokens SET revoked_at = $1 WHERE org_id = $2 AND id = $3 AND revoked_at IS NULL",
        )
        .bind(now_us())
        .bind(org_id)
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Stores a first-run token (only its hash).
    pub async fn create_setup_token(
        &self,
        token_hash: &str,
        expires_at: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO setup_tokens (token_hash, created_at, expires_at) VALUES ($1, $2, $3)",
        )
        .bind(token_hash)
        .bind(now_us())
        .bind(expires_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Consumes a first-run token: true exactly once for a live one.
    pub async fn consume_setup_token(&self, token_hash: &str) -> Result<bool, StoreError> {
        let now = now_us();
        let done = sqlx::query(
            "UPDATE setup_tokens SET used_at = $1 WHERE token_hash = $2 AND used_at IS NULL AND expires_at > $1",
        )
        .bind(now)
        .bind(token_hash)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Withdraws every unused first-run token (a new one is printed at each start).
    pub async fn expire_setup_tokens(&self) -> Result<(), StoreError> {
        sqlx::query("UPDATE setup_tokens SET expires_at = 0 WHERE used_at IS NULL")
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}
