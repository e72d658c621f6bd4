//! Policy versions and organisation signing keys.
//!
//! An organisation has one policy per **scope** ([`PolicyScope`]): `org`, `group:<key>=<value>`
//! (devices whose label `<key>` is `<value>`) and `service:<name>`. Every change is a new,
//! numbered version (1, 2, …) of its scope; versions are never changed or deleted, and a rollback
//! is a new version carrying an old body ([`PolicyVersionInfo::restored_from`]). The current
//! version of a scope is its highest number. Two writers racing for the same number are told
//! apart by the primary key `(org_id, scope, version)`: the loser gets
//! [`StoreError::Conflict`].
//!
//! Each organisation has one live Ed25519 signing key for policy bundles, made on first use.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::fmt;

use sqlx::AssertSqlSafe;
use sqlx::Row;
use sqlx::any::AnyRow;

use super::{Store, StoreError, now_us};
use crate::auth::secret::{fill_random, hex};

/// What a more recent writer left behind: the conflict [`Store::create_policy_version`] reports.
pub const NEWER_POLICY_VERSION: &str = "a newer version of this policy scope";

/// Longest scope text accepted.
const MAX_SCOPE_LEN: usize = 200;

/// Which devices a policy applies to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum PolicyScope {
    /// Every device of the organisation.
    Org,
    /// Devices whose label `key` has the value `value` (`group:env=prod`).
    Group {
        /// Label name.
        key: String,
        /// Label value.
        value: String,
    },
    /// Proxies whose service name (`--name`) is this (`service:github`).
    Service(String),
}

impl PolicyScope {
    /// Parses `org`, `group:<key>=<value>` or `service:<name>`. Names, keys and values are
    /// 1-100 characters of letters, digits, `.`, `_` and `-`; the error says what is wrong.
    pub fn parse(text: &str) -> Result<PolicyScope, String> {
        const SYNTAX: &str = "use `org`, `group:<label>=<value>` or `service:<name>`";
        if text.len() > MAX_SCOPE_LEN {
            return Err(format!(
                "policy scope is longer than {MAX_SCOPE_LEN} characters; {SYNTAX}"
            ));
        }
        if text == "org" {
            return Ok(PolicyScope::Org);
        }
        if let Some(rest) = text.strip_prefix("group:") {
            let Some((key, value)) = rest.split_once('=') else {
                return Err(format!("policy scope `{text}` has no `=`; {SYNTAX}"));
            };
            check_part(text, "label", key)?;
            check_part(text, "label value", value)?;
            return Ok(PolicyScope::Group {
                key: key.to_string(),
                value: value.to_string(),
            });
        }
        if let Some(name) = text.strip_prefix("service:") {
            check_part(text, "service name", name)?;
            return Ok(PolicyScope::Service(name.to_string()));
        }
        Err(format!("unknown policy scope `{text}`; {SYNTAX}"))
    }

    /// Whether a device with this service name and these labels runs this scope's policy.
    pub fn applies_to(&self, service: Option<&str>, labels: &BTreeMap<String, String>) -> bool {
        match self {
            PolicyScope::Org => true,
            PolicyScope::Group { key, value } => labels.get(key) == Some(value),
            PolicyScope::Service(name) => service == Some(name.as_str()),
        }
    }

    /// Whether one device can run both scopes' policies at once (so their layers are combined):
    /// never two services, never two values of the same label.
    pub fn can_combine(&self, other: &PolicyScope) -> bool {
        match (self, other) {
            (a, b) if a == b => false,
            (PolicyScope::Service(_), PolicyScope::Service(_)) => false,
            (PolicyScope::Group { key: a, .. }, PolicyScope::Group { key: b, .. }) => a != b,
            _ => true,
        }
    }

    fn rank(&self) -> u8 {
        match self {
            PolicyScope::Org => 0,
            PolicyScope::Group { .. } => 1,
            PolicyScope::Service(_) => 2,
        }
    }

    /// Layer order: org, then groups by their text, then the service.
    pub fn layer_cmp(&self, other: &PolicyScope) -> Ordering {
        self.rank()
            .cmp(&other.rank())
            .then_with(|| self.to_string().cmp(&other.to_string()))
    }
}

fn check_part(scope: &str, what: &str, part: &str) -> Result<(), String> {
    if part.is_empty() || part.len() > 100 {
        return Err(format!(
            "policy scope `{scope}`: the {what} must be 1-100 characters"
        ));
    }
    if let Some(bad) = part
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(format!(
            "policy scope `{scope}`: the {what} may hold letters, digits, `.`, `_` and `-`, not {bad:?}"
        ));
    }
    Ok(())
}

impl fmt::Display for PolicyScope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PolicyScope::Org => f.write_str("org"),
            PolicyScope::Group { key, value } => write!(f, "group:{key}={value}"),
            PolicyScope::Service(name) => write!(f, "service:{name}"),
        }
    }
}

/// One version of a scope's policy, without its body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyVersionInfo {
    /// The organisation.
    pub org_id: String,
    /// The scope's text (`org`, `group:env=prod`, `service:github`).
    pub scope: String,
    /// 1, 2, … per scope.
    pub version: i64,
    /// Hex SHA-256 of the body.
    pub sha256: String,
    /// The user who published it (for an API token, its creator).
    pub author_id: String,
    /// That user's e-mail address, if the account still exists.
    pub author_email: Option<String>,
    /// Why it was published.
    pub comment: String,
    /// Unix µs.
    pub created_at: i64,
    /// The version whose body this one restored, for rollbacks.
    pub restored_from: Option<i64>,
}

/// One version of a scope's policy with its text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyVersion {
    /// Who, when, which.
    pub info: PolicyVersionInfo,
    /// The policy file (TOML).
    pub body: String,
}

/// A version to publish.
#[derive(Debug, Clone)]
pub struct NewPolicyVersion<'a> {
    /// The organisation.
    pub org_id: &'a str,
    /// The scope.
    pub scope: &'a PolicyScope,
    /// The policy file (already validated by the caller).
    pub body: &'a str,
    /// The publishing user.
    pub author_id: &'a str,
    /// Why.
    pub comment: &'a str,
    /// When given, the version the author edited: publishing fails with a conflict unless it is
    /// still the current one (0 = the scope has no version yet).
    pub base_version: Option<i64>,
    /// For rollbacks: the version whose body this is.
    pub restored_from: Option<i64>,
}

/// An organisation's key for signing policy bundles. `Debug` does not show the secret.
#[derive(Clone)]
pub struct OrgSigningKey {
    /// Hex of the first 16 bytes of SHA-256 of the public key.
    pub key_id: String,
    /// The organisation.
    pub org_id: String,
    /// The Ed25519 public key.
    pub public_key: [u8; 32],
    secret_key: [u8; 32],
    /// Unix µs.
    pub created_at: i64,
}

impl OrgSigningKey {
    /// The key to sign with.
    pub fn signing_key(&self) -> ed25519_dalek::SigningKey {
        ed25519_dalek::SigningKey::from_bytes(&self.secret_key)
    }

    /// The key to verify with.
    pub fn verifying_key(&self) -> ed25519_dalek::VerifyingKey {
        self.signing_key().verifying_key()
    }
}

impl fmt::Debug for OrgSigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OrgSigningKey")
            .field("key_id", &self.key_id)
            .field("org_id", &self.org_id)
            .field("public_key", &hex(&self.public_key))
            .field("created_at", &self.created_at)
            .finish_non_exhaustive()
    }
}

const INFO_COLUMNS: &str = "p.org_id, p.scope, p.version, p.sha256, p.author_id, \
     u.email AS author_email, p.comment, p.created_at, p.restored_from";
const FROM: &str = "policy_versions p LEFT JOIN users u ON u.id = p.author_id";

fn info_from(row: &AnyRow) -> Result<PolicyVersionInfo, sqlx::Error> {
    Ok(PolicyVersionInfo {
        org_id: row.try_get("org_id")?,
        scope: row.try_get("scope")?,
        version: row.try_get("version")?,
        sha256: row.try_get("sha256")?,
        author_id: row.try_get("author_id")?,
        author_email: row.try_get("author_email")?,
        comment: row.try_get("comment")?,
        created_at: row.try_get("created_at")?,
        restored_from: row.try_get("restored_from")?,
    })
}

fn version_from(row: &AnyRow) -> Result<PolicyVersion, sqlx::Error> {
    Ok(PolicyVersion {
        info: info_from(row)?,
        body: row.try_get("body")?,
    })
}

fn key_from(row: &AnyRow) -> Result<OrgSigningKey, StoreError> {
    let public: Vec<u8> = row.try_get("public_key")?;
    let secret: Vec<u8> = row.try_get("secret_key")?;
    let corrupt = |what: &str| StoreError::Corrupt(format!("signing key: {what} is not 32 bytes"));
    Ok(OrgSigningKey {
        key_id: row.try_get("key_id")?,
        org_id: row.try_get("org_id")?,
        public_key: public
            .as_slice()
            .try_into()
            .map_err(|_| corrupt("public key"))?,
        secret_key: secret
            .as_slice()
            .try_into()
            .map_err(|_| corrupt("secret key"))?,
        created_at: row.try_get("created_at")?,
    })
}

impl Store {
    /// Publishes a new version of a scope: the next number after the current one.
    ///
    /// Fails with [`StoreError::Conflict`]`(`[`NEWER_POLICY_VERSION`]`)` when `base_version` is
    /// given and is not the current version, or when another writer published the same number
    /// first.
    pub async fn create_policy_version(
        &self,
        new: &NewPolicyVersion<'_>,
    ) -> Result<PolicyVersion, StoreError> {
        let scope = new.scope.to_string();
        let current = self.current_policy_number(new.org_id, &scope).await?;
        if new.base_version.is_some_and(|base| base != current) {
            return Err(StoreError::Conflict(NEWER_POLICY_VERSION));
        }
        let version = PolicyVersion {
            info: PolicyVersionInfo {
                org_id: new.org_id.to_string(),
                scope,
                version: current + 1,
                sha256: flowlink_proto::bundle::sha256_hex(new.body.as_bytes()),
                author_id: new.author_id.to_string(),
                author_email: None,
                comment: new.comment.to_string(),
                created_at: now_us(),
                restored_from: new.restored_from,
            },
            body: new.body.to_string(),
        };
        let i = &version.info;
        // Two statements rather than binding a NULL `restored_from`.
        let (columns, values) = match i.restored_from {
            Some(_) => (", restored_from", ", $9"),
            None => ("", ""),
        };
        let sql = format!(
            "INSERT INTO policy_versions (org_id, scope, version, body, sha256, author_id, comment, created_at{columns}) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8{values})"
        );
        let mut query = sqlx::query(AssertSqlSafe(sql))
            .bind(&i.org_id)
            .bind(&i.scope)
            .bind(i.version)
            .bind(&version.body)
            .bind(&i.sha256)
            .bind(&i.author_id)
            .bind(&i.comment)
            .bind(i.created_at);
        if let Some(from) = i.restored_from {
            query = query.bind(from);
        }
        query
            .execute(&self.pool)
            .await
            .map_err(|e| StoreError::conflict_as(e, NEWER_POLICY_VERSION))?;
        // Read back for the author's e-mail.
        Ok(self
            .policy_version(new.org_id, &i.scope, i.version)
            .await?
            .unwrap_or(version))
    }

    /// The highest version number of a scope, 0 when it has none.
    pub async fn current_policy_number(
        &self,
        org_id: &str,
        scope: &str,
    ) -> Result<i64, StoreError> {
        let n: Option<i64> = sqlx::query_scalar(
            "SELECT MAX(version) FROM policy_versions WHERE org_id = $1 AND scope = $2",
        )
        .bind(org_id)
        .bind(scope)
        .fetch_one(&self.pool)
        .await?;
        Ok(n.unwrap_or(0))
    }

    /// One version of a scope, with its body.
    pub async fn policy_version(
        &self,
        org_id: &str,
        scope: &str,
        version: i64,
    ) -> Result<Option<PolicyVersion>, StoreError> {
        let row = sqlx::query(AssertSqlSafe(format!(
            "SELECT {INFO_COLUMNS}, p.body FROM {FROM} \
             WHERE p.org_id = $1 AND p.scope = $2 AND p.version = $3"
        )))
        .bind(org_id)
        .bind(scope)
        .bind(version)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.as_ref().map(version_from).transpose()?)
    }

    /// The current version of a scope, with its body.
    pub async fn current_policy(
        &self,
        org_id: &str,
        scope: &str,
    ) -> Result<Option<PolicyVersion>, StoreError> {
        match self.current_policy_number(org_id, scope).await? {
            0 => Ok(None),
            n => self.policy_version(org_id, scope, n).await,
        }
    }

    /// Every scope of the organisation with its current version and body, in layer order
    /// (org, groups, services, each by text).
    pub async fn current_policies(&self, org_id: &str) -> Result<Vec<PolicyVersion>, StoreError> {
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT {INFO_COLUMNS}, p.body FROM {FROM} \
             WHERE p.org_id = $1 AND p.version = \
               (SELECT MAX(q.version) FROM policy_versions q WHERE q.org_id = p.org_id AND q.scope = p.scope)"
        )))
        .bind(org_id)
        .fetch_all(&self.pool)
        .await?;
        let mut out = rows
            .iter()
            .map(version_from)
            .collect::<Result<Vec<_>, _>>()?;
        sort_layers(&mut out);
        Ok(out)
    }

    /// Every scope of the organisation with its current version (no bodies), in layer order.
    pub async fn list_policy_scopes(
        &self,
        org_id: &str,
    ) -> Result<Vec<PolicyVersionInfo>, StoreError> {
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT {INFO_COLUMNS} FROM {FROM} \
             WHERE p.org_id = $1 AND p.version = \
               (SELECT MAX(q.version) FROM policy_versions q WHERE q.org_id = p.org_id AND q.scope = p.scope)"
        )))
        .bind(org_id)
        .fetch_all(&self.pool)
        .await?;
        let mut out = rows.iter().map(info_from).collect::<Result<Vec<_>, _>>()?;
        out.sort_by(|a, b| layer_key(&a.scope).cmp(&layer_key(&b.scope)));
        Ok(out)
    }

    /// One page of a scope's versions (no bodies), newest first: at most `limit` versions
    /// numbered below `before` (all when `None`).
    pub async fn list_policy_versions(
        &self,
        org_id: &str,
        scope: &str,
        before: Option<i64>,
        limit: u32,
    ) -> Result<Vec<PolicyVersionInfo>, StoreError> {
        let rows = match before {
            Some(before) => {
                sqlx::query(AssertSqlSafe(format!(
                    "SELECT {INFO_COLUMNS} FROM {FROM} \
                     WHERE p.org_id = $1 AND p.scope = $2 AND p.version < $3 \
                     ORDER BY p.version DESC LIMIT $4"
                )))
                .bind(org_id)
                .bind(scope)
                .bind(before)
                .bind(i64::from(limit))
                .fetch_all(&self.pool)
                .await?
            }
            None => {
                sqlx::query(AssertSqlSafe(format!(
                    "SELECT {INFO_COLUMNS} FROM {FROM} \
                     WHERE p.org_id = $1 AND p.scope = $2 \
                     ORDER BY p.version DESC LIMIT $3"
                )))
                .bind(org_id)
                .bind(scope)
                .bind(i64::from(limit))
                .fetch_all(&self.pool)
                .await?
            }
        };
        Ok(rows.iter().map(info_from).collect::<Result<_, _>>()?)
    }

    /// Publishes a new version of `old`'s scope whose body is `old`'s, marked as restored from
    /// it. `base_version` as for [`Store::create_policy_version`].
    pub async fn rollback_policy(
        &self,
        old: &PolicyVersion,
        author_id: &str,
        comment: &str,
        base_version: Option<i64>,
    ) -> Result<PolicyVersion, StoreError> {
        let scope = PolicyScope::parse(&old.info.scope)
            .map_err(|e| StoreError::Corrupt(format!("stored policy scope: {e}")))?;
        self.create_policy_version(&NewPolicyVersion {
            org_id: &old.info.org_id,
            scope: &scope,
            body: &old.body,
            author_id,
            comment,
            base_version,
            restored_from: Some(old.info.version),
        })
        .await
    }

    /// The current versions of the scopes that apply to a device with this service name and
    /// these labels, in layer order: `org`, each matching `group:<key>=<value>`, then
    /// `service:<name>`.
    pub async fn policy_layers(
        &self,
        org_id: &str,
        service: Option<&str>,
        labels: &BTreeMap<String, String>,
    ) -> Result<Vec<PolicyVersion>, StoreError> {
        let mut out = self.current_policies(org_id).await?;
        out.retain(|v| {
            PolicyScope::parse(&v.info.scope).is_ok_and(|s| s.applies_to(service, labels))
        });
        Ok(out)
    }

    /// The organisation's live signing key, made (and stored) on first use.
    pub async fn org_signing_key(&self, org_id: &str) -> Result<OrgSigningKey, StoreError> {
        if let Some(key) = self.live_signing_key(org_id).await? {
            return Ok(key);
        }
        let mut secret = [0u8; 32];
        fill_random(&mut secret);
        let signing = ed25519_dalek::SigningKey::from_bytes(&secret);
        let public = signing.verifying_key();
        let key = OrgSigningKey {
            key_id: flowlink_proto::bundle::key_id(&public),
            org_id: org_id.to_string(),
            public_key: public.to_bytes(),
            secret_key: secret,
            created_at: now_us(),
        };
        let inserted = sqlx::query(
            "INSERT INTO org_signing_keys (key_id, org_id, public_key, secret_key, created_at) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&key.key_id)
        .bind(&key.org_id)
        .bind(key.public_key.to_vec())
        .bind(key.secret_key.to_vec())
        .bind(key.created_at)
        .execute(&self.pool)
        .await;
        match inserted {
            Ok(_) => Ok(key),
            // Another request made the first key at the same moment: use that one.
            Err(sqlx::Error::Database(db)) if db.is_unique_violation() => self
                .live_signing_key(org_id)
                .await?
                .ok_or(StoreError::Conflict(
                    "a live signing key for this organisation",
                )),
            Err(e) => Err(e.into()),
        }
    }

    async fn live_signing_key(&self, org_id: &str) -> Result<Option<OrgSigningKey>, StoreError> {
        let row = sqlx::query(
            "SELECT key_id, org_id, public_key, secret_key, created_at FROM org_signing_keys \
             WHERE org_id = $1 AND retired_at IS NULL ORDER BY created_at DESC LIMIT 1",
        )
        .bind(org_id)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(key_from).transpose()
    }
}

/// Sort key for layer order; unparsable scopes (none are stored) sort last.
fn layer_key(scope: &str) -> (u8, &str) {
    match PolicyScope::parse(scope) {
        Ok(s) => (s.rank(), scope),
        Err(_) => (u8::MAX, scope),
    }
}

fn sort_layers(versions: &mut [PolicyVersion]) {
    versions.sort_by(|a, b| layer_key(&a.info.scope).cmp(&layer_key(&b.info.scope)));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_parse_and_print() {
        for text in [
            "org",
            "group:env=prod",
            "group:team=pay-ments_2",
            "service:github",
        ] {
            let scope = PolicyScope::parse(text).expect(text);
            assert_eq!(scope.to_string(), text);
        }
        for bad in [
            "",
            "orgs",
            "group:env",
            "group:=prod",
            "group:env=",
            "service:",
            "service:a/b",
            "group:env=pr od",
            "Service:x",
        ] {
            assert!(PolicyScope::parse(bad).is_err(), "{bad}");
        }
        assert!(PolicyScope::parse(&format!("service:{}", "a".repeat(101))).is_err());
    }

    #[test]
    fn which_scopes_combine_and_apply() {
        let p = |s: &str| PolicyScope::parse(s).expect(s);
        assert!(p("org").can_combine(&p("service:a")));
        assert!(p("group:env=prod").can_combine(&p("group:team=x")));
        assert!(!p("group:env=prod").can_combine(&p("group:env=dev")));
        assert!(!p("service:a").can_combine(&p("service:b")));
        assert!(!p("org").can_combine(&p("org")));
        let labels = BTreeMap::from([("env".to_string(), "prod".to_string())]);
        assert!(p("group:env=prod").applies_to(None, &labels));
        assert!(!p("group:env=dev").applies_to(None, &labels));
        assert!(p("service:a").applies_to(Some("a"), &labels));
        assert!(!p("service:a").applies_to(None, &labels));
        let mut scopes = [p("service:a"), p("group:z=1"), p("org"), p("group:a=1")];
        scopes.sort_by(PolicyScope::layer_cmp);
        let texts: Vec<String> = scopes.iter().map(ToString::to_string).collect();
        assert_eq!(texts, ["org", "group:a=1", "group:z=1", "service:a"]);
    }
}
