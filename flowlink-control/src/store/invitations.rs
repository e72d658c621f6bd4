//! Invitations to join an organisation: single use, expiring, revocable, only the SHA-256 of
//! the link's token stored. Accepting claims the invitation and adds the membership (and, for
//! a new person, the account) in one transaction, so a link works exactly once.

use sqlx::Row;
use sqlx::any::AnyRow;

use sqlx::AssertSqlSafe;

use super::{Store, StoreError, User, new_id, now_us};

/// An invitation (never its token).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invitation {
    /// Id (for listing and revoking).
    pub id: String,
    /// The organisation to join.
    pub org_id: String,
    /// The invited address, lower-cased; only this person may accept.
    pub email: String,
    /// The role they get.
    pub role: String,
    /// Who invited them (user id).
    pub invited_by: String,
    /// The inviter's e-mail address, when their account still exists.
    pub inviter_email: Option<String>,
    /// Unix µs.
    pub created_at: i64,
    /// Unix µs; the link works until then.
    pub expires_at: i64,
    /// Unix µs of acceptance, if accepted.
    pub accepted_at: Option<i64>,
    /// Unix µs of revocation, if revoked.
    pub revoked_at: Option<i64>,
}

impl Invitation {
    /// Neither accepted, revoked nor expired at `now`.
    pub fn is_live(&self, now: i64) -> bool {
        self.accepted_at.is_none() && self.revoked_at.is_none() && self.expires_at > now
    }
}

/// What a new invitation is.
#[derive(Debug, Clone)]
pub struct NewInvitation<'a> {
    /// The organisation.
    pub org_id: &'a str,
    /// The invited address.
    pub email: &'a str,
    /// The role.
    pub role: &'a str,
    /// The inviter's user id.
    pub invited_by: &'a str,
    /// Unix µs.
    pub expires_at: i64,
}

/// Why an acceptance did not happen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AcceptRefusal {
    /// The invitation was accepted, revoked or expired meanwhile.
    NotLive,
    /// An account with the address exists (a new account was asked for).
    AccountExists,
    /// The person is already a member of the organisation.
    AlreadyMember,
}

const COLUMNS: &str = "i.id, i.org_id, i.email, i.role, i.invited_by, u.email AS inviter_email, \
     i.created_at, i.expires_at, i.accepted_at, i.revoked_at";

fn invitation_from(row: &AnyRow) -> Result<Invitation, sqlx::Error> {
    Ok(Invitation {
        id: row.try_get("id")?,
        org_id: row.try_get("org_id")?,
        email: row.try_get("email")?,
        role: row.try_get("role")?,
        invited_by: row.try_get("invited_by")?,
        inviter_email: row.try_get("inviter_email")?,
        created_at: row.try_get("created_at")?,
        expires_at: row.try_get("expires_at")?,
        accepted_at: row.try_get("accepted_at")?,
        revoked_at: row.try_get("revoked_at")?,
    })
}

/// Marks invitation `id` accepted by `user_id` if it is still live; false otherwise.
async fn claim(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    id: &str,
    user_id: &str,
    now: i64,
) -> Result<bool, StoreError> {
    let done = sqlx::query(
        "UPDATE invitations SET accepted_at = $1, accepted_by = $2 \
         WHERE id = $3 AND accepted_at IS NULL AND revoked_at IS NULL AND expires_at > $1",
    )
    .bind(now)
    .bind(user_id)
    .bind(id)
    .execute(&mut **tx)
    .await?;
    Ok(done.rows_affected() == 1)
}

async fn add_membership(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    org_id: &str,
    user_id: &str,
    role: &str,
    now: i64,
) -> Result<bool, StoreError> {
    match sqlx::query(
        "INSERT INTO memberships (org_id, user_id, role, created_at) VALUES ($1, $2, $3, $4)",
    )
    .bind(org_id)
    .bind(user_id)
    .bind(role)
    .bind(now)
    .execute(&mut **tx)
    .await
    {
        Ok(_) => Ok(true),
        Err(sqlx::Error::Database(db)) if db.is_unique_violation() => Ok(false),
        Err(e) => Err(e.into()),
    }
}

impl Store {
    /// Stores a new invitation (the caller made the token and hashed it).
    pub async fn create_invitation(
        &self,
        new: &NewInvitation<'_>,
        token_hash: &str,
    ) -> Result<Invitation, StoreError> {
        let id = new_id();
        sqlx::query(
            "INSERT INTO invitations (id, org_id, email, role, token_hash, invited_by, created_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(&id)
        .bind(new.org_id)
        .bind(new.email.trim().to_lowercase())
        .bind(new.role)
        .bind(token_hash)
        .bind(new.invited_by)
        .bind(now_us())
        .bind(new.expires_at)
        .execute(&self.pool)
        .await
        .map_err(|e| StoreError::conflict_as(e, "an invitation with this token"))?;
        self.invitation(new.org_id, &id)
            .await?
            .ok_or_else(|| StoreError::Corrupt(format!("invitation {id} vanished after insert")))
    }

    /// One invitation of `org_id`, in any state.
    pub async fn invitation(
        &self,
        org_id: &str,
        id: &str,
    ) -> Result<Option<Invitation>, StoreError> {
        let row = sqlx::query(AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM invitations i LEFT JOIN users u ON u.id = i.invited_by \
             WHERE i.org_id = $1 AND i.id = $2"
        )))
        .bind(org_id)
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.as_ref().map(invitation_from).transpose()?)
    }

    /// The invitation whose token hashes to `token_hash`, in any state (so a used, revoked or
    /// expired link can be told apart from a wrong one).
    pub async fn invitation_by_token(
        &self,
        token_hash: &str,
    ) -> Result<Option<Invitation>, StoreError> {
        let row = sqlx::query(AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM invitations i LEFT JOIN users u ON u.id = i.invited_by \
             WHERE i.token_hash = $1"
        )))
        .bind(token_hash)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.as_ref().map(invitation_from).transpose()?)
    }

    /// The live invitations of `org_id`, newest first.
    pub async fn pending_invitations(&self, org_id: &str) -> Result<Vec<Invitation>, StoreError> {
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM invitations i LEFT JOIN users u ON u.id = i.invited_by \
             WHERE i.org_id = $1 AND i.accepted_at IS NULL AND i.revoked_at IS NULL \
             AND i.expires_at > $2 ORDER BY i.id DESC"
        )))
        .bind(org_id)
        .bind(now_us())
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(invitation_from).collect::<Result<_, _>>()?)
    }

    /// Revokes a live invitation of `org_id`. Returns false when there is no such live one.
    pub async fn revoke_invitation(&self, org_id: &str, id: &str) -> Result<bool, StoreError> {
        let now = now_us();
        let done = sqlx::query(
            "UPDATE invitations SET revoked_at = $1 WHERE org_id = $2 AND id = $3 \
             AND accepted_at IS NULL AND revoked_at IS NULL AND expires_at > $1",
        )
        .bind(now)
        .bind(org_id)
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Accepts invitation `inv` for a new account: claims it, creates the user and adds the
    /// membership, all or nothing.
    pub async fn accept_invitation_new_user(
        &self,
        inv: &Invitation,
        display_name: &str,
        password_hash: &str,
    ) -> Result<Result<User, AcceptRefusal>, StoreError> {
        let now = now_us();
        let user = User {
            id: new_id(),
            email: inv.email.clone(),
            display_name: display_name.to_string(),
            password_hash: Some(password_hash.to_string()),
            totp_enabled: false,
            failed_logins: 0,
            locked_until: 0,
            disabled: false,
            created_at: now,
        };
        let mut tx = self.pool.begin().await?;
        if !claim(&mut tx, &inv.id, &user.id, now).await? {
            return Ok(Err(AcceptRefusal::NotLive));
        }
        let inserted = sqlx::query(
            "INSERT INTO users (id, email, display_name, password_hash, created_at) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&user.id)
        .bind(&user.email)
        .bind(&user.display_name)
        .bind(user.password_hash.clone())
        .bind(user.created_at)
        .execute(&mut *tx)
        .await;
        match inserted {
            Ok(_) => {}
            // Dropping the transaction rolls the claim back: the link still works for them
            // once they sign in.
            Err(sqlx::Error::Database(db)) if db.is_unique_violation() => {
                return Ok(Err(AcceptRefusal::AccountExists));
            }
            Err(e) => return Err(e.into()),
        }
        if !add_membership(&mut tx, &inv.org_id, &user.id, &inv.role, now).await? {
            return Ok(Err(AcceptRefusal::AlreadyMember));
        }
        tx.commit().await?;
        Ok(Ok(user))
    }

    /// Accepts invitation `inv` for the existing account `user_id`: claims it and adds the
    /// membership, all or nothing.
    pub async fn accept_invitation_existing_user(
        &self,
        inv: &Invitation,
        user_id: &str,
    ) -> Result<Result<(), AcceptRefusal>, StoreError> {
        let now = now_us();
        let mut tx = self.pool.begin().await?;
        if !claim(&mut tx, &inv.id, user_id, now).await? {
            return Ok(Err(AcceptRefusal::NotLive));
        }
        if !add_membership(&mut tx, &inv.org_id, user_id, &inv.role, now).await? {
            return Ok(Err(AcceptRefusal::AlreadyMember));
        }
        tx.commit().await?;
        Ok(Ok(()))
    }
}
