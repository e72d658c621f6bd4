//! The approval queue on both engines: a proxy's held call becomes a request; people decide it
//! through the API under the rules (not their own call, the rule's approvers, N approvals, one
//! denial ends it); the clock turns silence into `timed_out`; the proxy is told on its link;
//! a re-sent request finds its decision; "same call for N minutes" lets the identical call
//! through and nothing else.

mod support;

use flowlink_control::approvals;
use flowlink_control::store::{Backend, now_us};
use flowlink_proto::link::{
    ApprovalCancel, ApprovalOutcome, ApprovalRequest, ApprovalScope, ControlMessage, args_digest,
};
use serde_json::{Value, json};
use support::*;
use tokio::sync::mpsc;

fn request(call_ref: &str, args: Value) -> ApprovalRequest {
    ApprovalRequest {
        call_ref: call_ref.into(),
        agent: "claude-code".into(),
        user: "dev".into(),
        service: "db".into(),
        tool: "query".into(),
        args_digest: args_digest(&args),
        arguments: args,
        rule_id: Some("prod-writes".into()),
        message: Some("writes to production need a DBA".into()),
        reason: "rule `prod-writes` matched".into(),
        risk: 70,
        findings: Vec::new(),
        policy: Some("bundle-1".into()),
        approvers: Vec::new(),
        approvals_needed: 1,
        timeout_secs: 600,
    }
}

struct Rig {
    server: TestServer,
    owner: TestClient,
    org_id: String,
    link: mpsc::Receiver<ControlMessage>,
    _tx: mpsc::Sender<ControlMessage>,
}

async fn rig(backend: Backend) -> Rig {
    let server = TestServer::start(backend).await;
    let owner = server.owner().await;
    let (_, org) = owner.get("/api/v1/orgs/acme").await;
    let org_id = org["id"].as_str().expect("id").to_string();
    let (tx, link) = mpsc::channel(64);
    // A proxy of device "dev-1" wrapping service "db" is connected.
    std::mem::forget(server.state.links.register("dev-1", "db", tx.clone()));
    Rig {
        server,
        owner,
        org_id,
        link,
        _tx: tx,
    }
}

impl Rig {
    async fn file(&self, req: &ApprovalRequest) -> Vec<ControlMessage> {
        approvals::file_request(&self.server.state, &self.org_id, "dev-1", req)
            .await
            .expect("file")
    }

    async fn next_decision(&mut self) -> flowlink_proto::link::ApprovalDecision {
        let msg = tokio::time::timeout(std::time::Duration::from_secs(5), self.link.recv())
            .await
            .expect("a decision reaches the link")
            .expect("link open");
        match msg {
            ControlMessage::ApprovalDecision(d) => d,
            other => panic!("expected a decision, got {other:?}"),
        }
    }
}

fn accepted_id(msgs: &[ControlMessage]) -> String {
    match &msgs[0] {
        ControlMessage::ApprovalAccepted(a) => a.request_id.clone(),
        other => panic!("expected ApprovalAccepted first, got {other:?}"),
    }
}

async fn a_held_call_is_approved_and_the_proxy_is_told(backend: Backend) {
    let mut rig = rig(backend).await;
    let approver = rig
        .server
        .member(&rig.owner, "acme", "ann@acme.test", "approver")
        .await;
    let viewer = rig
        .server
        .member(&rig.owner, "acme", "vic@acme.test", "viewer")
        .await;
    let msgs = rig
        .file(&request("c1", json!({"sql": "DELETE FROM t"})))
        .await;
    assert_eq!(msgs.len(), 1, "only accepted: {msgs:?}");
    let id = accepted_id(&msgs);
    let (status, list) = approver
        .get("/api/v1/orgs/acme/approvals?status=pending")
        .await;
    assert_eq!(status, 200, "{list}");
    let item = &list["items"][0];
    assert_eq!(
        (
            item["id"].as_str(),
            item["tool"].as_str(),
            item["risk"].as_i64()
        ),
        (Some(id.as_str()), Some("query"), Some(70))
    );
    assert_eq!(item["arguments"]["sql"], "DELETE FROM t");
    // A viewer can neither see nor decide.
    let (status, _) = viewer.get("/api/v1/orgs/acme/approvals").await;
    assert_eq!(status, 403);
    let (status, _) = viewer
        .post(
            &format!("/api/v1/orgs/acme/approvals/{id}/decision"),
            json!({"decision": "approve"}),
        )
        .await;
    assert_eq!(status, 403);
    let (status, body) = approver
        .post(
            &format!("/api/v1/orgs/acme/approvals/{id}/decision"),
            json!({"decision": "approve", "comment": "ok for the migration"}),
        )
        .await;
    assert_eq!(
        (status, body["status"].as_str()),
        (200, Some("approved")),
        "{body}"
    );
    let d = rig.next_decision().await;
    assert_eq!(
        (d.call_ref.as_str(), d.outcome, d.scope),
        ("c1", ApprovalOutcome::Approved, ApprovalScope::ThisCall)
    );
    assert_eq!(d.decided_by, ["ann@acme.test"]);
    assert!(
        d.comment
            .unwrap_or_default()
            .contains("ok for the migration")
    );
    // Deciding again is a conflict, not a second decision.
    let (status, _) = rig
        .owner
        .post(
            &format!("/api/v1/orgs/acme/approvals/{id}/decision"),
            json!({"decision": "deny"}),
        )
        .await;
    assert_eq!(status, 409);
    // A re-sent request (the proxy reconnected) gets the decision back at once.
    let again = rig
        .file(&request("c1", json!({"sql": "DELETE FROM t"})))
        .await;
    assert_eq!(accepted_id(&again), id);
    assert!(
        matches!(&again[1], ControlMessage::ApprovalDecision(d) if d.outcome == ApprovalOutcome::Approved)
    );
    let (_, audit) = rig
        .owner
        .get("/api/v1/orgs/acme/audit?kind=approval.")
        .await;
    let kinds: Vec<&str> = audit["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|e| e["kind"].as_str())
        .collect();
    assert!(
        kinds.contains(&"approval.requested") && kinds.contains(&"approval.approved"),
        "{kinds:?}"
    );
    rig.server.stop().await;
}

async fn nobody_decides_their_own_call_and_selectors_hold(backend: Backend) {
    let mut rig = rig(backend).await;
    let dev = rig
        .server
        .member(&rig.owner, "acme", "dev@acme.test", "approver")
        .await;
    let ann = rig
        .server
        .member(&rig.owner, "acme", "ann@acme.test", "approver")
        .await;
    let adm = rig
        .server
        .member(&rig.owner, "acme", "adm@acme.test", "admin")
        .await;
    let mut req = request("c2", json!({"sql": "DROP TABLE users"}));
    req.approvers = vec!["role:admin".into(), "dba@acme.test".into()];
    let id = accepted_id(&rig.file(&req).await);
    let path = format!("/api/v1/orgs/acme/approvals/{id}/decision");
    let (status, body) = dev.post(&path, json!({"decision": "approve"})).await;
    assert_eq!(
        (status, code(&body)),
        (403, "own_request"),
        "the requester `dev` is dev@acme.test: {body}"
    );
    let (status, body) = ann.post(&path, json!({"decision": "approve"})).await;
    assert_eq!((status, code(&body)), (403, "not_an_approver"), "{body}");
    let (status, body) = adm
        .post(
            &path,
            json!({"decision": "deny", "comment": "not on a Friday"}),
        )
        .await;
    assert_eq!(
        (status, body["status"].as_str()),
        (200, Some("denied")),
        "{body}"
    );
    let d = rig.next_decision().await;
    assert_eq!(
        (d.outcome, d.decided_by.as_slice()),
        (
            ApprovalOutcome::Denied,
            ["adm@acme.test".to_string()].as_slice()
        )
    );
    rig.server.stop().await;
}

async fn thresholds_need_distinct_people_and_one_denial_ends_it(backend: Backend) {
    let mut rig = rig(backend).await;
    let a = rig
        .server
        .member(&rig.owner, "acme", "a@acme.test", "approver")
        .await;
    let b = rig
        .server
        .member(&rig.owner, "acme", "b@acme.test", "approver")
        .await;
    let c = rig
        .server
        .member(&rig.owner, "acme", "c@acme.test", "approver")
        .await;
    let mut req = request("c3", json!({"sql": "UPDATE accounts SET balance = 0"}));
    req.approvals_needed = 2;
    let id = accepted_id(&rig.file(&req).await);
    let path = format!("/api/v1/orgs/acme/approvals/{id}/decision");
    let (status, body) = a.post(&path, json!({"decision": "approve"})).await;
    assert_eq!(
        (status, body["status"].as_str()),
        (200, Some("pending")),
        "one of two: {body}"
    );
    let (status, _) = a.post(&path, json!({"decision": "approve"})).await;
    assert_eq!(status, 409, "the same person twice does not count twice");
    let (status, body) = b
        .post(
            &path,
            json!({"decision": "approve", "same_call_minutes": 30}),
        )
        .await;
    assert_eq!(
        (status, body["status"].as_str()),
        (200, Some("approved")),
        "{body}"
    );
    let d = rig.next_decision().await;
    assert_eq!(d.scope, ApprovalScope::SameCallFor { minutes: 30 });
    assert_eq!(d.decided_by.len(), 2);
    // The identical call within 30 minutes passes without asking; a one-byte change asks.
    let again = rig
        .file(&request(
            "c4",
            json!({"sql": "UPDATE accounts SET balance = 0"}),
        ))
        .await;
    assert!(
        matches!(&again[1], ControlMessage::ApprovalDecision(d) if d.outcome == ApprovalOutcome::Approved && d.call_ref == "c4"),
        "{again:?}"
    );
    // The identical call under a newer policy is a new request too.
    let mut newer_policy = request("c5b", json!({"sql": "UPDATE accounts SET balance = 0"}));
    newer_policy.policy = Some("bundle-2".into());
    let newer = rig.file(&newer_policy).await;
    assert_eq!(newer.len(), 1, "another policy is a new request: {newer:?}");
    let other = rig
        .file(&request(
            "c5",
            json!({"sql": "UPDATE accounts SET balance = 1"}),
        ))
        .await;
    assert_eq!(
        other.len(),
        1,
        "a different call is a new request: {other:?}"
    );
    // One denial ends a threshold request.
    let mut req = request("c6", json!({"sql": "TRUNCATE t"}));
    req.approvals_needed = 3;
    let id = accepted_id(&rig.file(&req).await);
    let path = format!("/api/v1/orgs/acme/approvals/{id}/decision");
    a.post(&path, json!({"decision": "approve"})).await;
    let (status, body) = c.post(&path, json!({"decision": "deny"})).await;
    assert_eq!(
        (status, body["status"].as_str()),
        (200, Some("denied")),
        "{body}"
    );
    rig.server.stop().await;
}

async fn concurrent_votes_are_counted_one_after_the_other(backend: Backend) {
    let mut rig = rig(backend).await;
    let mut people = Vec::new();
    for i in 0..4 {
        people.push(
            rig.server
                .member(&rig.owner, "acme", &format!("p{i}@acme.test"), "approver")
                .await,
        );
    }
    let mut req = request("c7", json!({"x": 1}));
    req.approvals_needed = 4;
    let id = accepted_id(&rig.file(&req).await);
    let path = format!("/api/v1/orgs/acme/approvals/{id}/decision");
    let tasks: Vec<_> = people
        .into_iter()
        .map(|p| {
            let path = path.clone();
            tokio::spawn(async move { p.post(&path, json!({"decision": "approve"})).await })
        })
        .collect();
    let mut statuses = Vec::new();
    for t in tasks {
        statuses.push(
            t.await.expect("join").1["status"]
                .as_str()
                .unwrap_or("")
                .to_string(),
        );
    }
    assert_eq!(
        statuses.iter().filter(|s| *s == "approved").count(),
        1,
        "exactly one vote concludes: {statuses:?}"
    );
    let d = rig.next_decision().await;
    assert_eq!(
        (d.outcome, d.decided_by.len()),
        (ApprovalOutcome::Approved, 4)
    );
    rig.server.stop().await;
}

async fn silence_is_not_consent(backend: Backend) {
    let mut rig = rig(backend).await;
    let mut req = request("c8", json!({"cmd": "terraform destroy"}));
    req.timeout_secs = 10;
    let id = accepted_id(&rig.file(&req).await);
    sqlx::query("UPDATE approval_requests SET expires_at = $1 WHERE id = $2")
        .bind(now_us() - 1)
        .bind(&id)
        .execute(rig.server.store.pool())
        .await
        .expect("age");
    assert_eq!(
        approvals::expire_due(&rig.server.state)
            .await
            .expect("expire"),
        1
    );
    let d = rig.next_decision().await;
    assert_eq!(
        d.outcome,
        ApprovalOutcome::TimedOut,
        "timed_out, not denied"
    );
    let (status, body) = rig
        .owner
        .post(
            &format!("/api/v1/orgs/acme/approvals/{id}/decision"),
            json!({"decision": "approve"}),
        )
        .await;
    assert_eq!(status, 409, "too late: {body}");
    let (_, r) = rig
        .owner
        .get(&format!("/api/v1/orgs/acme/approvals/{id}"))
        .await;
    assert_eq!(r["status"], "timed_out");
    // A cancelled request is withdrawn and cannot be decided.
    let id = accepted_id(&rig.file(&request("c9", json!({"cmd": "ls"}))).await);
    approvals::cancel(
        &rig.server.state,
        "dev-1",
        &ApprovalCancel {
            call_ref: "c9".into(),
            reason: "client cancelled".into(),
        },
    )
    .await
    .expect("cancel");
    let (status, _) = rig
        .owner
        .post(
            &format!("/api/v1/orgs/acme/approvals/{id}/decision"),
            json!({"decision": "approve"}),
        )
        .await;
    assert_eq!(status, 409);
    let (_, r) = rig
        .owner
        .get(&format!("/api/v1/orgs/acme/approvals/{id}"))
        .await;
    assert_eq!(r["status"], "cancelled");
    rig.server.stop().await;
}

async fn bad_requests_and_api_tokens_are_refused(backend: Backend) {
    let rig = rig(backend).await;
    let mut bad = request("c10", json!({}));
    bad.args_digest = "nope".into();
    assert!(
        approvals::file_request(&rig.server.state, &rig.org_id, "dev-1", &bad)
            .await
            .is_err()
    );
    let big = request("c11", json!({"blob": "x".repeat(300 * 1024)}));
    assert!(
        approvals::file_request(&rig.server.state, &rig.org_id, "dev-1", &big)
            .await
            .is_err()
    );
    // Reusing a call_ref for another call is refused.
    rig.file(&request("c12", json!({"a": 1}))).await;
    assert!(
        approvals::file_request(
            &rig.server.state,
            &rig.org_id,
            "dev-1",
            &request("c12", json!({"a": 2}))
        )
        .await
        .is_err()
    );
    let (_, body) = rig
        .owner
        .post(
            "/api/v1/orgs/acme/tokens",
            json!({"name": "bot", "scopes": ["approval:decide"]}),
        )
        .await;
    let bot = rig
        .server
        .client()
        .with_token(body["token"].as_str().expect("token"));
    let (_, list) = rig.owner.get("/api/v1/orgs/acme/approvals").await;
    let id = list["items"][0]["id"].as_str().expect("id").to_string();
    let (status, body) = bot
        .post(
            &format!("/api/v1/orgs/acme/approvals/{id}/decision"),
            json!({"decision": "approve"}),
        )
        .await;
    assert_eq!(status, 403, "automation does not approve: {body}");
    let (status, _) = rig
        .owner
        .post(
            &format!("/api/v1/orgs/acme/approvals/{id}/decision"),
            json!({"decision": "maybe"}),
        )
        .await;
    assert_eq!(status, 400);
    let (status, _) = rig
        .owner
        .post(
            &format!("/api/v1/orgs/acme/approvals/{id}/decision"),
            json!({"decision": "deny", "same_call_minutes": 5}),
        )
        .await;
    assert_eq!(status, 400);
    rig.server.stop().await;
}

both!(
    a_held_call_is_approved_and_the_proxy_is_told,
    nobody_decides_their_own_call_and_selectors_hold,
    thresholds_need_distinct_people_and_one_denial_ends_it,
    concurrent_votes_are_counted_one_after_the_other,
    silence_is_not_consent,
    bad_requests_and_api_tokens_are_refused,
);
