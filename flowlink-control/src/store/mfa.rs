//! Second factors: TOTP secrets (RFC 6238) and single-use recovery codes (stored hashed).

use super::{Store, StoreError, flag, now_us};

/// A user's TOTP state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TotpState {
    /// Base32 secret.
    pub secret: String,
    /// Confirmed with a first code and required at sign-in.
    pub enabled: bool,
    /// The last accepted time step; a code of that step or earlier is a replay.
    pub last_step: i64,
}

impl Store {
    /// Stores a new, not yet enabled TOTP secret (set-up in progress). Refused while one is
    /// enabled: disable first.
    pub async fn begin_totp(&self, user_id: &str, secret: &str) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE users SET totp_secret = $1, totp_last_step = 0 WHERE id = $2 AND totp_enabled = 0",
        )
        .bind(secret)
        .bind(user_id)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// The user's TOTP state, if a secret is stored.
    pub async fn totp_state(&self, user_id: &str) -> Result<Option<TotpState>, StoreError> {
        let row: Option<(Option<String>, i64, i64)> = sqlx::query_as(
            "SELECT totp_secret, totp_enabled, totp_last_step FROM users WHERE id = $1",
        )
        .bind(user_id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.and_then(|(secret, enabled, last_step)| {
            secret.map(|secret| TotpState {
                secret,
                enabled: flag(enabled),
                last_step,
            })
        }))
    }

    /// Records that the code of `step` was used; false if that step (or a later one) was
    /// already used, so each code works once.
    pub async fn accept_totp_step(&self, user_id: &str, step: i64) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE users SET totp_last_step = $1 WHERE id = $2 AND totp_last_step < $1",
        )
        .bind(step)
        .bind(user_id)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Turns TOTP on and replaces the recovery codes, in one transaction.
    pub async fn enable_totp(
        &self,
        user_id: &str,
        code_hashes: &[String],
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("UPDATE users SET totp_enabled = 1 WHERE id = $1 AND totp_secret IS NOT NULL")
            .bind(user_id)
            .execute(&mut *tx)
            .await?;
        put_recovery_codes(&mut tx, user_id, code_hashes).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Replaces the recovery codes (the old ones stop working).
    pub async fn replace_recovery_codes(
        &self,
        user_id: &str,
        code_hashes: &[String],
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        put_recovery_codes(&mut tx, user_id, code_hashes).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Uses a recovery code: true exactly once per code.
    pub async fn use_recovery_code(
        &self,
        user_id: &str,
        code_hash: &str,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE recovery_codes SET used_at = $1 WHERE user_id = $2 AND code_hash = $3 AND used_at IS NULL",
        )
        .bind(now_us())
        .bind(user_id)
        .bind(code_hash)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// How many unused recovery codes the user has left.
    pub async fn recovery_codes_left(&self, user_id: &str) -> Result<i64, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT COUNT(*) FROM recovery_codes WHERE user_id = $1 AND used_at IS NULL",
        )
        .bind(user_id)
        .fetch_one(&self.pool)
        .await?)
    }

    /// Removes TOTP and the recovery codes (user's own choice or an admin's reset).
    pub async fn disable_totp(&self, user_id: &str) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "UPDATE users SET totp_secret = NULL, totp_enabled = 0, totp_last_step = 0 WHERE id = $1",
        )
        .bind(user_id)
        .execute(&mut *tx)
        .await?;
        sqlx::query("DELETE FROM recovery_codes WHERE user_id = $1")
            .bind(user_id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }
}

/// Deletes a user's recovery codes and stores `code_hashes` instead, inside `tx`.
async fn put_recovery_codes(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    user_id: &str,
    code_hashes: &[String],
) -> Result<(), StoreError> {
    sqlx::query("DELETE FROM recovery_codes WHERE user_id = $1")
        .bind(user_id)
        .execute(&mut **tx)
        .await?;
    for hash in code_hashes {
        sqlx::query("INSERT INTO recovery_codes (user_id, code_hash) VALUES ($1, $2)")
            .bind(user_id)
            .bind(hash)
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}
