//! Organisations, users and memberships.

use sqlx::Row;
use sqlx::any::AnyRow;

use sqlx::AssertSqlSafe;

use super::{Store, StoreError, flag, new_id, now_us};

/// An organisation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Org {
    /// Stable id.
    pub id: String,
    /// URL-friendly unique name.
    pub slug: String,
    /// Display name.
    pub name: String,
    /// Members must have a second factor to use the org.
    pub require_2fa: bool,
    /// Unix µs.
    pub created_at: i64,
}

/// A person.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// Stable id.
    pub id: String,
    /// Lower-cased e-mail address (unique).
    pub email: String,
    /// Name shown to others.
    pub display_name: String,
    /// argon2id PHC string; `None` for accounts that only sign in through OAuth.
    pub password_hash: Option<String>,
    /// TOTP is set up and required at sign-in.
    pub totp_enabled: bool,
    /// Consecutive failed sign-ins.
    pub failed_logins: i64,
    /// Locked until this Unix µs (0 = not locked).
    pub locked_until: i64,
    /// Disabled accounts cannot sign in.
    pub disabled: bool,
    /// Unix µs.
    pub created_at: i64,
}

/// A user's role in one organisation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// The user.
    pub user: User,
    /// Role name (see `auth::Role`).
    pub role: String,
    /// Unix µs.
    pub joined_at: i64,
}

const ORG_COLUMNS: &str = "id, slug, name, require_2fa, created_at";
const USER_COLUMNS: &str = "u.id, u.email, u.display_name, u.password_hash, u.totp_enabled, \
     u.failed_logins, u.locked_until, u.disabled, u.created_at";

fn org_from(row: &AnyRow) -> Result<Org, sqlx::Error> {
    Ok(Org {
        id: row.try_get("id")?,
        slug: row.try_get("slug")?,
        name: row.try_get("name")?,
        require_2fa: flag(row.try_get("require_2fa")?),
        created_at: row.try_get("created_at")?,
    })
}

fn user_from(row: &AnyRow) -> Result<User, sqlx::Error> {
    Ok(User {
        id: row.try_get("id")?,
        email: row.try_get("email")?,
        display_name: row.try_get("display_name")?,
        password_hash: row.try_get("password_hash")?,
        totp_enabled: flag(row.try_get("totp_enabled")?),
        failed_logins: row.try_get("failed_logins")?,
        locked_until: row.try_get("locked_until")?,
        disabled: flag(row.try_get("disabled")?),
        created_at: row.try_get("created_at")?,
    })
}

impl Store {
    /// Creates an organisation.
    pub async fn create_org(&self, slug: &str, name: &str) -> Result<Org, StoreError> {
        let org = Org {
            id: new_id(),
            slug: slug.to_string(),
            name: name.to_string(),
            require_2fa: false,
            created_at: now_us(),
        };
        sqlx::query(
            "INSERT INTO orgs (id, slug, name, require_2fa, created_at) VALUES ($1, $2, $3, 0, $4)",
        )
        .bind(&org.id)
        .bind(&org.slug)
        .bind(&org.name)
        .bind(org.created_at)
        .execute(&self.pool)
        .await
        .map_err(|e| StoreError::conflict_as(e, "an organisation with this slug"))?;
        Ok(org)
    }

    /// The organisation with this id or slug.
    pub async fn org_by_ref(&self, id_or_slug: &str) -> Result<Option<Org>, StoreError> {
        let row = sqlx::query(AssertSqlSafe(format!(
            "SELECT {ORG_COLUMNS} FROM orgs WHERE id = $1 OR slug = $1"
        )))
        .bind(id_or_slug)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.as_ref().map(org_from).transpose()?)
    }

    /// Every organisation, by slug.
    pub async fn list_orgs(&self) -> Result<Vec<Org>, StoreError> {
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT {ORG_COLUMNS} FROM orgs ORDER BY slug"
        )))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(org_from).collect::<Result<_, _>>()?)
    }

    /// Changes an organisation's name and 2FA rule.
    pub async fn update_org(
        &self,
        org_id: &str,
        name: &str,
        require_2fa: bool,
    ) -> Result<(), StoreError> {
        sqlx::query("UPDATE orgs SET name = $1, require_2fa = $2 WHERE id = $3")
            .bind(name)
            .bind(i64::from(require_2fa))
            .bind(org_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Creates a user. `email` is stored lower-cased.
    pub async fn create_user(
        &self,
        email: &str,
        display_name: &str,
        password_hash: Option<&str>,
    ) -> Result<User, StoreError> {
        let user = User {
            id: new_id(),
            email: email.trim().to_lowercase(),
            display_name: display_name.to_string(),
            password_hash: password_hash.map(str::to_string),
            totp_enabled: false,
            failed_logins: 0,
            locked_until: 0,
            disabled: false,
            created_at: now_us(),
        };
        sqlx::query(
            "INSERT INTO users (id, email, display_name, password_hash, created_at) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&user.id)
        .bind(&user.email)
        .bind(&user.display_name)
        .bind(user.password_hash.clone())
        .bind(user.created_at)
        .execute(&self.pool)
        .await
        .map_err(|e| StoreError::conflict_as(e, "a user with this e-mail address"))?;
        Ok(user)
    }

    /// The user with this e-mail address (case-insensitive).
    pub async fn user_by_email(&self, email: &str) -> Result<Option<User>, StoreError> {
        let row = sqlx::query(AssertSqlSafe(format!(
            "SELECT {USER_COLUMNS} FROM users u WHERE u.email = $1"
        )))
        .bind(email.trim().to_lowercase())
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.as_ref().map(user_from).transpose()?)
    }

    /// The user with this id.
    pub async fn user_by_id(&self, id: &str) -> Result<Option<User>, StoreError> {
        let row = sqlx::query(AssertSqlSafe(format!(
            "SELECT {USER_COLUMNS} FROM users u WHERE u.id = $1"
        )))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.as_ref().map(user_from).transpose()?)
    }

    /// Every user, by e-mail (for `flowlink-control admin list-users`).
    pub async fn list_users(&self) -> Result<Vec<User>, StoreError> {
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT {USER_COLUMNS} FROM users u ORDER BY u.email"
        )))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(user_from).collect::<Result<_, _>>()?)
    }

    /// Whether any user exists (first-run set-up is offered only while none does).
    pub async fn any_user_exists(&self) -> Result<bool, StoreError> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM users")
            .fetch_one(&self.pool)
            .await?;
        Ok(n > 0)
    }

    /// Replaces a user's password hash and clears any lockout.
    pub async fn set_password(&self, user_id: &str, hash: &str) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE users SET password_hash = $1, failed_logins = 0, locked_until = 0 WHERE id = $2",
        )
        .bind(hash)
        .bind(user_id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Counts a failed sign-in; when `max_failures` consecutive ones are reached the account is
    /// locked until `lock_until_us`. Returns whether it is now locked.
    pub async fn record_login_failure(
        &self,
        user_id: &str,
        max_failures: u32,
        lock_until_us: i64,
    ) -> Result<bool, StoreError> {
        let failures: i64 = sqlx::query_scalar(
            "UPDATE users SET failed_logins = failed_logins + 1 WHERE id = $1 RETURNING failed_logins",
        )
        .bind(user_id)
        .fetch_one(&self.pool)
        .await?;
        if failures >= i64::from(max_failures) {
            sqlx::query("UPDATE users SET locked_until = $1, failed_logins = 0 WHERE id = $2")
                .bind(lock_until_us)
                .bind(user_id)
                .execute(&self.pool)
                .await?;
            return Ok(true);
        }
        Ok(false)
    }

    /// Clears the failure count after a successful sign-in.
    pub async fn reset_login_failures(&self, user_id: &str) -> Result<(), StoreError> {
        sqlx::query("UPDATE users SET failed_logins = 0, locked_until = 0 WHERE id = $1 AND (failed_logins <> 0 OR locked_until <> 0)")
            .bind(user_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Adds `user_id` to `org_id` with `role`.
    pub async fn add_member(
        &self,
        org_id: &str,
        user_id: &str,
        role: &str,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO memberships (org_id, user_id, role, created_at) VALUES ($1, $2, $3, $4)",
        )
        .bind(org_id)
        .bind(user_id)
        .bind(role)
        .bind(now_us())
        .execute(&self.pool)
        .await
        .map_err(|e| StoreError::conflict_as(e, "this membership"))?;
        Ok(())
    }

    /// The role of `user_id` in `org_id`, if a member.
    pub async fn member_role(
        &self,
        org_id: &str,
        user_id: &str,
    ) -> Result<Option<String>, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT role FROM memberships WHERE org_id = $1 AND user_id = $2")
                .bind(org_id)
                .bind(user_id)
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    /// One member of `org_id`.
    pub async fn member(&self, org_id: &str, user_id: &str) -> Result<Option<Member>, StoreError> {
        let row = sqlx::query(AssertSqlSafe(format!(
            "SELECT {USER_COLUMNS}, m.role, m.created_at AS joined_at FROM memberships m \
             JOIN users u ON u.id = m.user_id WHERE m.org_id = $1 AND m.user_id = $2"
        )))
        .bind(org_id)
        .bind(user_id)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref()
            .map(|r| {
                Ok(Member {
                    user: user_from(r)?,
                    role: r.try_get("role")?,
                    joined_at: r.try_get("joined_at")?,
                })
            })
            .transpose()
            .map_err(StoreError::Database)
    }

    /// The members of `org_id`, by e-mail.
    pub async fn list_members(&self, org_id: &str) -> Result<Vec<Member>, StoreError> {
        self.list_members_page(org_id, "", i64::MAX).await
    }

    /// Up to `limit` members of `org_id` whose e-mail sorts after `after_email`, by e-mail.
    pub async fn list_members_page(
        &self,
        org_id: &str,
        after_email: &str,
        limit: i64,
    ) -> Result<Vec<Member>, StoreError> {
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT {USER_COLUMNS}, m.role, m.created_at AS joined_at FROM memberships m \
             JOIN users u ON u.id = m.user_id WHERE m.org_id = $1 AND u.email > $2 \
             ORDER BY u.email LIMIT $3"
        )))
        .bind(org_id)
        .bind(after_email)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(Member {
                    user: user_from(r)?,
                    role: r.try_get("role")?,
                    joined_at: r.try_get("joined_at")?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(StoreError::Database)
    }

    /// Changes a member's role. Returns false when the user is not a member.
    pub async fn set_role(
        &self,
        org_id: &str,
        user_id: &str,
        role: &str,
    ) -> Result<bool, StoreError> {
        let done =
            sqlx::query("UPDATE memberships SET role = $1 WHERE org_id = $2 AND user_id = $3")
                .bind(role)
                .bind(org_id)
                .bind(user_id)
                .execute(&self.pool)
                .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Removes a member. Returns false when the user was not a member.
    pub async fn remove_member(&self, org_id: &str, user_id: &str) -> Result<bool, StoreError> {
        let done = sqlx::query("DELETE FROM memberships WHERE org_id = $1 AND user_id = $2")
            .bind(org_id)
            .bind(user_id)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    /// How many owners `org_id` has (the last one cannot leave or be demoted).
    pub async fn count_owners(&self, org_id: &str) -> Result<i64, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT COUNT(*) FROM memberships WHERE org_id = $1 AND role = 'owner'",
        )
        .bind(org_id)
        .fetch_one(&self.pool)
        .await?)
    }

    /// The organisations `user_id` belongs to, with the role in each.
    pub async fn orgs_of_user(&self, user_id: &str) -> Result<Vec<(Org, String)>, StoreError> {
        let rows = sqlx::query(
            "SELECT o.id, o.slug, o.name, o.require_2fa, o.created_at, m.role FROM memberships m \
             JOIN orgs o ON o.id = m.org_id WHERE m.user_id = $1 ORDER BY o.slug",
        )
        .bind(user_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok((org_from(r)?, r.try_get("role")?)))
            .collect::<Result<_, sqlx::Error>>()
            .map_err(StoreError::Database)
    }
}
