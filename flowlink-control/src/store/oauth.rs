//! OAuth sign-in state and linked identities.
//!
//! A sign-in in progress is one `oauth_states` row, keyed by the SHA-256 of the `state`
//! parameter (the value itself only travels through the browser) and consumed exactly once by
//! `DELETE … RETURNING`, which both engines run atomically. A person's accounts at providers
//! are `oauth_identities` rows: (provider, subject) → user.

use sqlx::Row;
use sqlx::any::AnyRow;

use super::{Store, StoreError, now_us};

/// A sign-in that went to a provider and has not come back yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingOAuth {
    /// The configured provider's name (`[oauth.<name>]`).
    pub provider: String,
    /// The PKCE code verifier sent with the token request.
    pub pkce_verifier: String,
    /// The OpenID Connect nonce the ID token must carry.
    pub nonce: String,
    /// SHA-256 (hex) of the browser-binding cookie set when the sign-in started.
    pub browser_hash: String,
    /// Unix µs after which the state is refused.
    pub expires_at: i64,
}

/// A person's account at a provider, linked to a FlowLink user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OAuthIdentity {
    /// The configured provider's name.
    pub provider: String,
    /// The provider's stable id for the person.
    pub subject: String,
    /// The FlowLink user.
    pub user_id: String,
    /// The verified e-mail address the provider gave when the link was made.
    pub email: String,
    /// Unix µs.
    pub created_at: i64,
}

fn pending_from(row: &AnyRow) -> Result<PendingOAuth, sqlx::Error> {
    Ok(PendingOAuth {
        provider: row.try_get("provider")?,
        pkce_verifier: row.try_get("pkce_verifier")?,
        nonce: row.try_get("nonce")?,
        browser_hash: row.try_get("browser_hash")?,
        expires_at: row.try_get("expires_at")?,
    })
}

fn identity_from(row: &AnyRow) -> Result<OAuthIdentity, sqlx::Error> {
    Ok(OAuthIdentity {
        provider: row.try_get("provider")?,
        subject: row.try_get("subject")?,
        user_id: row.try_get("user_id")?,
        email: row.try_get("email")?,
        created_at: row.try_get("created_at")?,
    })
}

impl Store {
    /// Records a sign-in in progress under `state_hash` (SHA-256 of the `state` parameter), and
    /// drops states that expired, so abandoned sign-ins do not pile up.
    pub async fn save_oauth_state(
        &self,
        state_hash: &str,
        pending: &PendingOAuth,
    ) -> Result<(), StoreError> {
        let now = now_us();
        sqlx::query("DELETE FROM oauth_states WHERE expires_at < $1")
            .bind(now)
            .execute(&self.pool)
            .await?;
        sqlx::query(
            "INSERT INTO oauth_states (state_hash, provider, pkce_verifier, nonce, browser_hash, created_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(state_hash)
        .bind(&pending.provider)
        .bind(&pending.pkce_verifier)
        .bind(&pending.nonce)
        .bind(&pending.browser_hash)
        .bind(now)
        .bind(pending.expires_at)
        .execute(&self.pool)
        .await
        .map_err(|e| StoreError::conflict_as(e, "an OAuth state with this value"))?;
        Ok(())
    }

    /// Removes and returns the sign-in in progress under `state_hash`: a given state is
    /// returned at most once, even to concurrent callers. The caller checks expiry, provider
    /// and browser binding (an expired row is still removed).
    pub async fn take_oauth_state(
        &self,
        state_hash: &str,
    ) -> Result<Option<PendingOAuth>, StoreError> {
        let row = sqlx::query(
            "DELETE FROM oauth_states WHERE state_hash = $1 \
             RETURNING provider, pkce_verifier, nonce, browser_hash, expires_at",
        )
        .bind(state_hash)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.as_ref().map(pending_from).transpose()?)
    }

    /// The user linked to `subject` at `provider`, if any.
    pub async fn oauth_identity(
        &self,
        provider: &str,
        subject: &str,
    ) -> Result<Option<OAuthIdentity>, StoreError> {
        let row = sqlx::query(
            "SELECT provider, subject, user_id, email, created_at FROM oauth_identities \
             WHERE provider = $1 AND subject = $2",
        )
        .bind(provider)
        .bind(subject)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.as_ref().map(identity_from).transpose()?)
    }

    /// Links `subject` at `provider` to `user_id`. A (provider, subject) pair already linked is
    /// a [`StoreError::Conflict`].
    pub async fn link_oauth_identity(
        &self,
        provider: &str,
        subject: &str,
        user_id: &str,
        email: &str,
    ) -> Result<OAuthIdentity, StoreError> {
        let identity = OAuthIdentity {
            provider: provider.to_string(),
            subject: subject.to_string(),
            user_id: user_id.to_string(),
            email: email.trim().to_lowercase(),
            created_at: now_us(),
        };
        sqlx::query(
            "INSERT INTO oauth_identities (provider, subject, user_id, email, created_at) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&identity.provider)
        .bind(&identity.subject)
        .bind(&identity.user_id)
        .bind(&identity.email)
        .bind(identity.created_at)
        .execute(&self.pool)
        .await
        .map_err(|e| StoreError::conflict_as(e, "a link to this provider account"))?;
        Ok(identity)
    }

    /// The provider accounts linked to a user, oldest first.
    pub async fn oauth_identities_of_user(
        &self,
        user_id: &str,
    ) -> Result<Vec<OAuthIdentity>, StoreError> {
        let rows = sqlx::query(
            "SELECT provider, subject, user_id, email, created_at FROM oauth_identities \
             WHERE user_id = $1 ORDER BY created_at, provider, subject",
        )
        .bind(user_id)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(identity_from).collect::<Result<_, _>>()?)
    }
}
