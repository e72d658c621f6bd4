//! The approval queue. A request is bound to one held call (device, call_ref) and to what the
//! call would do (agent, service, tool, argument digest, policy). Votes are per person; the
//! request concludes inside the same transaction as the vote that decides it, with the request
//! row locked first so concurrent votes are counted one after the other on both engines.

use sqlx::any::AnyRow;
use sqlx::{AssertSqlSafe, Row};

use super::{Store, StoreError, new_id, now_us};

/// A request's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApprovalStatus {
    /// Waiting for people.
    Pending,
    /// Approved by enough people.
    Approved,
    /// Denied by someone.
    Denied,
    /// Nobody decided in time.
    TimedOut,
    /// Withdrawn by the proxy (the client cancelled the call, or the proxy went away).
    Cancelled,
}

impl ApprovalStatus {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            ApprovalStatus::Pending => "pending",
            ApprovalStatus::Approved => "approved",
            ApprovalStatus::Denied => "denied",
            ApprovalStatus::TimedOut => "timed_out",
            ApprovalStatus::Cancelled => "cancelled",
        }
    }

    /// Parses the stored name.
    pub fn parse(s: &str) -> Option<ApprovalStatus> {
        [
            ApprovalStatus::Pending,
            ApprovalStatus::Approved,
            ApprovalStatus::Denied,
            ApprovalStatus::TimedOut,
            ApprovalStatus::Cancelled,
        ]
        .into_iter()
        .find(|x| x.as_str() == s)
    }
}

/// A stored request.
#[derive(Debug, Clone, PartialEq)]
pub struct ApprovalRecord {
    /// Id.
    pub id: String,
    /// Organisation.
    pub org_id: String,
    /// Device holding the call.
    pub device_id: String,
    /// The proxy's id for the call.
    pub call_ref: String,
    /// Service.
    pub service: String,
    /// Agent (MCP client).
    pub agent: String,
    /// The user the proxy runs for.
    pub requester: String,
    /// Tool.
    pub tool: String,
    /// Arguments (redacted), JSON.
    pub arguments: serde_json::Value,
    /// Digest of the real arguments.
    pub args_digest: String,
    /// Rule that asked.
    pub rule_id: Option<String>,
    /// Its message.
    pub message: Option<String>,
    /// Why.
    pub reason: String,
    /// Risk 0-100.
    pub risk: i64,
    /// Findings, JSON array.
    pub findings: serde_json::Value,
    /// Bundle id.
    pub policy: Option<String>,
    /// Who may decide.
    pub approvers: Vec<String>,
    /// Approvals needed.
    pub approvals_needed: i64,
    /// State.
    pub status: ApprovalStatus,
    /// Filed, Unix µs.
    pub created_at: i64,
    /// Silence becomes denial at, Unix µs.
    pub expires_at: i64,
    /// Concluded at.
    pub decided_at: Option<i64>,
    /// `this_call` or `same_call_for`.
    pub scope_kind: Option<String>,
    /// Minutes of a `same_call_for` approval.
    pub scope_minutes: Option<i64>,
    /// Identical calls pass until then.
    pub grant_until: Option<i64>,
    /// Deciders' comments, joined.
    pub comment: Option<String>,
}

/// One person's vote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vote {
    /// Who.
    pub user_id: String,
    /// Their e-mail.
    pub email: String,
    /// `approve` or `deny`.
    pub vote: String,
    /// Their comment.
    pub comment: Option<String>,
    /// When.
    pub created_at: i64,
}

/// What a vote did.
#[derive(Debug, Clone, PartialEq)]
pub enum VoteOutcome {
    /// Counted; more approvals are needed.
    Counted(ApprovalRecord),
    /// This vote concluded the request.
    Concluded(ApprovalRecord),
    /// The request is no longer pending (or has expired).
    NotPending(ApprovalRecord),
    /// This person already voted.
    AlreadyVoted,
}

const COLUMNS: &str = "id, org_id, device_id, call_ref, service, agent, requester, tool, arguments, \
    args_digest, rule_id, message, reason, risk, findings, policy, approvers, approvals_needed, status, \
    created_at, expires_at, decided_at, scope_kind, scope_minutes, grant_until, comment";

fn json(row: &AnyRow, col: &str) -> Result<serde_json::Value, StoreError> {
    let text: String = row.try_get(col)?;
    serde_json::from_str(&text).map_err(|e| StoreError::Corrupt(format!("approval {col}: {e}")))
}

fn record_from(row: &AnyRow) -> Result<ApprovalRecord, StoreError> {
    let status: String = row.try_get("status")?;
    let approvers: Vec<String> = serde_json::from_value(json(row, "approvers")?)
        .map_err(|e| StoreError::Corrupt(format!("approval approvers: {e}")))?;
    Ok(ApprovalRecord {
        id: row.try_get("id")?,
        org_id: row.try_get("org_id")?,
        device_id: row.try_get("device_id")?,
        call_ref: row.try_get("call_ref")?,
        service: row.try_get("service")?,
        agent: row.try_get("agent")?,
        requester: row.try_get("requester")?,
        tool: row.try_get("tool")?,
        arguments: json(row, "arguments")?,
        args_digest: row.try_get("args_digest")?,
        rule_id: row.try_get("rule_id")?,
        message: row.try_get("message")?,
        reason: row.try_get("reason")?,
        risk: row.try_get("risk")?,
        findings: json(row, "findings")?,
        policy: row.try_get("policy")?,
        approvers,
        approvals_needed: row.try_get("approvals_needed")?,
        status: ApprovalStatus::parse(&status)
            .ok_or_else(|| StoreError::Corrupt(format!("approval status `{status}`")))?,
        created_at: row.try_get("created_at")?,
        expires_at: row.try_get("expires_at")?,
        decided_at: row.try_get("decided_at")?,
        scope_kind: row.try_get("scope_kind")?,
        scope_minutes: row.try_get("scope_minutes")?,
        grant_until: row.try_get("grant_until")?,
        comment: row.try_get("comment")?,
    })
}

/// One person's vote.
#[derive(Debug, Clone, Copy)]
pub struct Ballot<'a> {
    /// Who.
    pub user_id: &'a str,
    /// Their e-mail.
    pub email: &'a str,
    /// Approve (true) or deny.
    pub approve: bool,
    /// Their comment.
    pub comment: Option<&'a str>,
    /// For an approval: what it covers.
    pub scope: GrantScope,
}

/// A scope for an approval.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GrantScope {
    /// Only the held call.
    ThisCall,
    /// Identical calls for this many minutes.
    SameCallFor(u32),
}

impl Store {
    /// Files a request, or returns the one already filed for the same (device, call_ref) — a
    /// proxy re-sends its pending requests after every reconnect. `true` when newly filed.
    pub async fn file_approval(
        &self,
        r: &ApprovalRecord,
    ) -> Result<(ApprovalRecord, bool), StoreError> {
        let id = if r.id.is_empty() {
            new_id()
        } else {
            r.id.clone()
        };
        let inserted = sqlx::query(
            "INSERT INTO approval_requests (id, org_id, device_id, call_ref, service, agent, requester, tool, \
             arguments, args_digest, rule_id, message, reason, risk, findings, policy, approvers, approvals_needed, \
             status, created_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, 'pending', $19, $20) \
             ON CONFLICT (device_id, call_ref) DO NOTHING",
        )
        .bind(&id)
        .bind(&r.org_id)
        .bind(&r.device_id)
        .bind(&r.call_ref)
        .bind(&r.service)
        .bind(&r.agent)
        .bind(&r.requester)
        .bind(&r.tool)
        .bind(r.arguments.to_string())
        .bind(&r.args_digest)
        .bind(r.rule_id.clone())
        .bind(r.message.clone())
        .bind(&r.reason)
        .bind(r.risk)
        .bind(r.findings.to_string())
        .bind(r.policy.clone())
        .bind(serde_json::Value::from(r.approvers.clone()).to_string())
        .bind(r.approvals_needed)
        .bind(r.created_at)
        .bind(r.expires_at)
        .execute(&self.pool)
        .await?
        .rows_affected()
            == 1;
        let row = sqlx::query(AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM approval_requests WHERE device_id = $1 AND call_ref = $2"
        )))
        .bind(&r.device_id)
        .bind(&r.call_ref)
        .fetch_one(&self.pool)
        .await?;
        Ok((record_from(&row)?, inserted))
    }

    /// An approved request whose `same_call_for` grant covers this identical call now: same
    /// device, agent, service, tool, argument digest and policy.
    pub async fn live_grant(
        &self,
        org_id: &str,
        device_id: &str,
        call: &flowlink_proto::link::ApprovalRequest,
    ) -> Result<Option<ApprovalRecord>, StoreError> {
        let row = sqlx::query(AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM approval_requests WHERE org_id = $1 AND device_id = $2 AND agent = $3 \
             AND service = $4 AND tool = $5 AND args_digest = $6 AND COALESCE(policy, '') = $7 \
             AND status = 'approved' AND grant_until > $8 ORDER BY grant_until DESC LIMIT 1"
        )))
        .bind(org_id)
        .bind(device_id)
        .bind(&call.agent)
        .bind(&call.service)
        .bind(&call.tool)
        .bind(&call.args_digest)
        .bind(call.policy.clone().unwrap_or_default())
        .bind(now_us())
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(record_from).transpose()
    }

    /// One request of an organisation.
    pub async fn approval(
        &self,
        org_id: &str,
        id: &str,
    ) -> Result<Option<ApprovalRecord>, StoreError> {
        let row = sqlx::query(AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM approval_requests WHERE org_id = $1 AND id = $2"
        )))
        .bind(org_id)
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(record_from).transpose()
    }

    /// A page of an organisation's requests, newest first, optionally of one status; `before`
    /// is the id of the last request of the previous page (ids are time-ordered).
    pub async fn list_approvals(
        &self,
        org_id: &str,
        status: Option<ApprovalStatus>,
        before: Option<&str>,
        limit: i64,
    ) -> Result<Vec<ApprovalRecord>, StoreError> {
        let mut sql = format!("SELECT {COLUMNS} FROM approval_requests WHERE org_id = $1");
        let mut n = 1;
        if status.is_some() {
            n += 1;
            sql.push_str(&format!(" AND status = ${n}"));
        }
        if before.is_some() {
            n += 1;
            sql.push_str(&format!(" AND id < ${n}"));
        }
        sql.push_str(&format!(" ORDER BY id DESC LIMIT ${}", n + 1));
        let mut q = sqlx::query(AssertSqlSafe(sql)).bind(org_id);
        if let Some(s) = status {
            q = q.bind(s.as_str());
        }
        if let Some(b) = before {
            q = q.bind(b);
        }
        let rows = q.bind(limit).fetch_all(&self.pool).await?;
        rows.iter().map(record_from).collect()
    }

    /// The votes on a request, in order.
    pub async fn approval_votes(&self, request_id: &str) -> Result<Vec<Vote>, StoreError> {
        let rows: Vec<(String, String, String, Option<String>, i64)> = sqlx::query_as(
            "SELECT user_id, email, vote, comment, created_at FROM approval_votes WHERE request_id = $1 ORDER BY created_at",
        )
        .bind(request_id)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(user_id, email, vote, comment, created_at)| Vote {
                user_id,
                email,
                vote,
                comment,
                created_at,
            })
            .collect())
    }

    /// Records one person's vote and concludes the request when it decides it: one `deny`
    /// denies; `approvals_needed` distinct `approve`s approve with the ballot's scope.
    pub async fn vote_approval(
        &self,
        org_id: &str,
        id: &str,
        ballot: &Ballot<'_>,
    ) -> Result<VoteOutcome, StoreError> {
        let Ballot {
            user_id,
            email,
            approve,
            comment,
            scope,
        } = *ballot;
        let now = now_us();
        let mut tx = self.pool.begin().await?;
        // A write first: it locks the row (PostgreSQL) or the database (SQLite), so concurrent
        // votes on one request are counted one after the other.
        sqlx::query("UPDATE approval_requests SET status = status WHERE org_id = $1 AND id = $2")
            .bind(org_id)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        let Some(row) = sqlx::query(AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM approval_requests WHERE org_id = $1 AND id = $2"
        )))
        .bind(org_id)
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?
        else {
            return Err(StoreError::Corrupt(format!(
                "approval {id} vanished while voting"
            )));
        };
        let current = record_from(&row)?;
        if current.status != ApprovalStatus::Pending || current.expires_at <= now {
            return Ok(VoteOutcome::NotPending(current));
        }
        let inserted = sqlx::query(
            "INSERT INTO approval_votes (request_id, user_id, email, vote, comment, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (request_id, user_id) DO NOTHING",
        )
        .bind(id)
        .bind(user_id)
        .bind(email)
        .bind(if approve { "approve" } else { "deny" })
        .bind(comment.map(str::to_string))
        .bind(now)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if inserted == 0 {
            return Ok(VoteOutcome::AlreadyVoted);
        }
        let approvals: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM approval_votes WHERE request_id = $1 AND vote = 'approve'",
        )
        .bind(id)
        .fetch_one(&mut *tx)
        .await?;
        let comments: Vec<(String, Option<String>)> = sqlx::query_as(
            "SELECT email, comment FROM approval_votes WHERE request_id = $1 ORDER BY created_at",
        )
        .bind(id)
        .fetch_all(&mut *tx)
        .await?;
        let joined: Vec<String> = comments
            .into_iter()
            .filter_map(|(e, c)| {
                c.filter(|c| !c.trim().is_empty())
                    .map(|c| format!("{e}: {c}"))
            })
            .collect();
        let joined = (!joined.is_empty()).then(|| joined.join("\n"));
        let concluded = if !approve {
            sqlx::query(
                "UPDATE approval_requests SET status = 'denied', decided_at = $1, comment = $2 WHERE id = $3",
            )
            .bind(now)
            .bind(joined)
            .bind(id)
            .execute(&mut *tx)
            .await?;
            true
        } else if approvals >= current.approvals_needed {
            let (kind, minutes, until) = match scope {
                GrantScope::ThisCall => ("this_call", None, None),
                GrantScope::SameCallFor(m) => (
                    "same_call_for",
                    Some(i64::from(m)),
                    Some(now + i64::from(m) * 60_000_000),
                ),
            };
            sqlx::query(
                "UPDATE approval_requests SET status = 'approved', decided_at = $1, comment = $2, \
                 scope_kind = $3, scope_minutes = $4, grant_until = $5 WHERE id = $6",
            )
            .bind(now)
            .bind(joined)
            .bind(kind)
            .bind(minutes)
            .bind(until)
            .bind(id)
            .execute(&mut *tx)
            .await?;
            true
        } else {
            false
        };
        let row = sqlx::query(AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM approval_requests WHERE id = $1"
        )))
        .bind(id)
        .fetch_one(&mut *tx)
        .await?;
        let record = record_from(&row)?;
        tx.commit().await?;
        Ok(if concluded {
            VoteOutcome::Concluded(record)
        } else {
            VoteOutcome::Counted(record)
        })
    }

    /// Concludes every pending request whose time is up as `timed_out`, returning them.
    pub async fn expire_approvals(&self) -> Result<Vec<ApprovalRecord>, StoreError> {
        let now = now_us();
        let rows = sqlx::query(AssertSqlSafe(format!(
            "UPDATE approval_requests SET status = 'timed_out', decided_at = $1 \
             WHERE status = 'pending' AND expires_at <= $1 RETURNING {COLUMNS}"
        )))
        .bind(now)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(record_from).collect()
    }

    /// Withdraws a pending request of `device_id`; `None` when there was none pending.
    pub async fn cancel_approval(
        &self,
        device_id: &str,
        call_ref: &str,
    ) -> Result<Option<ApprovalRecord>, StoreError> {
        let row = sqlx::query(AssertSqlSafe(format!(
            "UPDATE approval_requests SET status = 'cancelled', decided_at = $1 \
             WHERE device_id = $2 AND call_ref = $3 AND status = 'pending' RETURNING {COLUMNS}"
        )))
        .bind(now_us())
        .bind(device_id)
        .bind(call_ref)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(record_from).transpose()
    }

    /// An organisation's requests still waiting for people (not yet due), the soonest to time
    /// out first, at most `limit` (the web UI's queue).
    pub async fn pending_queue(
        &self,
        org_id: &str,
        limit: i64,
    ) -> Result<Vec<ApprovalRecord>, StoreError> {
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM approval_requests WHERE org_id = $1 AND status = 'pending' \
             AND expires_at > $2 ORDER BY expires_at, id LIMIT $3"
        )))
        .bind(org_id)
        .bind(now_us())
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(record_from).collect()
    }

    /// A page of an organisation's concluded requests (approved, denied, timed out,
    /// cancelled), newest first; `before` is the id of the last request of the previous page.
    pub async fn decided_approvals(
        &self,
        org_id: &str,
        before: Option<&str>,
        limit: i64,
    ) -> Result<Vec<ApprovalRecord>, StoreError> {
        let sql = format!(
            "SELECT {COLUMNS} FROM approval_requests WHERE org_id = $1 AND status <> 'pending'{} \
             ORDER BY id DESC LIMIT $2",
            if before.is_some() { " AND id < $3" } else { "" }
        );
        let mut q = sqlx::query(AssertSqlSafe(sql)).bind(org_id).bind(limit);
        if let Some(b) = before {
            q = q.bind(b);
        }
        let rows = q.fetch_all(&self.pool).await?;
        rows.iter().map(record_from).collect()
    }

    /// How many requests are pending (all organisations), for the queue-depth gauge.
    pub async fn pending_approvals(&self) -> Result<i64, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT COUNT(*) FROM approval_requests WHERE status = 'pending'")
                .fetch_one(&self.pool)
                .await?,
        )
    }
}
