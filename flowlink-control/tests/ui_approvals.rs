//! The web UI's approval queue on both engines: the live event stream (`/ui/events/approvals`)
//! delivers filed, decided, cancelled and timed-out requests to members of the request's
//! organisation only, across PostgreSQL replicas too, and ends when the session is revoked; the
//! pages show the queue, a request and the history; the decision forms go through the API's
//! decision rules, and a viewer's direct form POST is refused.

mod support;

use std::time::Duration;

use flowlink_control::approvals;
use flowlink_control::store::Backend;
use flowlink_proto::link::{ApprovalCancel, ApprovalRequest, args_digest};
use serde_json::{Value, json};
use support::*;

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

/// One server-sent event.
#[derive(Debug, Clone)]
struct Sse {
    event: String,
    data: String,
}

impl Sse {
    fn json(&self) -> Value {
        serde_json::from_str(&self.data).unwrap_or(Value::Null)
    }
}

/// A reader of an SSE response (keep-alive comments skipped).
struct EventStream {
    resp: reqwest::Response,
    buf: String,
}

impl EventStream {
    async fn open(client: &TestClient, org: &str) -> EventStream {
        let resp = client
            .request(
                reqwest::Method::GET,
                &format!("/ui/events/approvals?org={org}"),
            )
            .send()
            .await
            .expect("GET events");
        assert_eq!(resp.status(), 200, "event stream for {org}");
        assert_eq!(
            resp.headers()["content-type"].to_str().ok(),
            Some("text/event-stream")
        );
        let mut s = EventStream {
            resp,
            buf: String::new(),
        };
        let first = s.next(Duration::from_secs(5)).await.expect("ready");
        assert_eq!(first.event, "ready");
        s
    }

    /// The next event within `wait`, or `None` (also when the stream ended).
    async fn next(&mut self, wait: Duration) -> Option<Sse> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            if let Some(at) = self.buf.find("\n\n") {
                let block: String = self.buf.drain(..at + 2).collect();
                let mut ev = Sse {
                    event: "message".into(),
                    data: String::new(),
                };
                let mut any = false;
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("event:") {
                        ev.event = v.trim().to_string();
                        any = true;
                    } else if let Some(v) = line.strip_prefix("data:") {
                        ev.data.push_str(v.trim_start());
                        any = true;
                    }
                }
                if any {
                    return Some(ev);
                }
                continue;
            }
            let chunk = tokio::time::timeout_at(deadline, self.resp.chunk())
                .await
                .ok()?
                .ok()??;
            self.buf.push_str(&String::from_utf8_lossy(&chunk));
        }
    }

    /// The next `approval` event within 5 s.
    async fn approval(&mut self) -> Value {
        loop {
            let ev = self
                .next(Duration::from_secs(5))
                .await
                .expect("an approval event within 5 s");
            if ev.event == "approval" {
                return ev.json();
            }
            assert_ne!(ev.event, "end", "the stream ended: {ev:?}");
        }
    }

    /// Asserts nothing but keep-alives arrives for `wait`.
    async fn quiet(&mut self, wait: Duration) {
        if let Some(ev) = self.next(wait).await {
            panic!("expected nothing, got {ev:?}");
        }
    }
}

async fn the_stream_carries_its_orgs_requests_only(backend: Backend) {
    let server = TestServer::start(backend).await;
    let owner = server.owner().await;
    let acme = org_id(&owner, "acme").await;
    let approver = server
        .member(&owner, "acme", "ann@acme.test", "approver")
        .await;
    let viewer = server
        .member(&owner, "acme", "vic@acme.test", "viewer")
        .await;
    let other = server.other_org("globex").await;
    let globex = org_id(&other, "globex").await;

    let mut ann = EventStream::open(&approver, "acme").await;
    let mut vic = EventStream::open(&viewer, "acme").await;
    let mut outsider = EventStream::open(&other, "globex").await;
    // Another organisation's queue is not found, whatever the caller's role there.
    let (status, _) = other.get("/ui/events/approvals?org=acme").await;
    assert_eq!(status, 404);
    // Nobody signed in is sent to the sign-in page.
    let (status, _) = server.client().get("/ui/events/approvals?org=acme").await;
    assert_eq!(status, 303);

    // Filed: the members of acme hear of it with what the queue shows, without the arguments.
    let msgs = approvals::file_request(
        &server.state,
        &acme,
        "dev-1",
        &request("c1", json!({"sql": "DELETE FROM t"})),
    )
    .await
    .expect("file");
    let id = match &msgs[0] {
        flowlink_proto::link::ControlMessage::ApprovalAccepted(a) => a.request_id.clone(),
        other => panic!("{other:?}"),
    };
    let filed = ann.approval().await;
    assert_eq!(filed["kind"], "filed", "{filed}");
    assert_eq!(filed["id"], id.as_str());
    assert_eq!(
        (
            &filed["tool"],
            &filed["service"],
            &filed["agent"],
            &filed["requester"],
            &filed["risk"]
        ),
        (
            &json!("query"),
            &json!("db"),
            &json!("claude-code"),
            &json!("dev"),
            &json!(70)
        )
    );
    assert!(filed.get("arguments").is_none(), "{filed}");
    assert!(filed["expires_ms"].as_i64().unwrap_or(0) > filed["created_ms"].as_i64().unwrap_or(0));
    assert_eq!(vic.approval().await["id"], id.as_str());

    // Decided through the API.
    let (status, body) = approver
        .post(
            &format!("/api/v1/orgs/acme/approvals/{id}/decision"),
            json!({"decision": "approve", "comment": "fine"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let decided = ann.approval().await;
    assert_eq!(
        (&decided["kind"], &decided["id"], &decided["status"]),
        (&json!("decided"), &json!(id), &json!("approved"))
    );
    assert_eq!(vic.approval().await["kind"], "decided");

    // Cancelled by the proxy.
    approvals::file_request(
        &server.state,
        &acme,
        "dev-1",
        &request("c2", json!({"n": 2})),
    )
    .await
    .expect("file");
    assert_eq!(ann.approval().await["kind"], "filed");
    approvals::cancel(
        &server.state,
        "dev-1",
        &ApprovalCancel {
            call_ref: "c2".into(),
            reason: "client cancelled".into(),
        },
    )
    .await
    .expect("cancel");
    let cancelled = ann.approval().await;
    assert_eq!(
        (&cancelled["kind"], &cancelled["status"]),
        (&json!("cancelled"), &json!("cancelled"))
    );

    // Timed out by the clock.
    let mut short = request("c3", json!({"n": 3}));
    short.timeout_secs = 10;
    approvals::file_request(&server.state, &acme, "dev-1", &short)
        .await
        .expect("file");
    assert_eq!(ann.approval().await["kind"], "filed");
    let timed_out = loop {
        let ev = ann
            .next(Duration::from_secs(15))
            .await
            .expect("the timeout within 15 s");
        if ev.event == "approval" {
            break ev.json();
        }
    };
    assert_eq!(
        (&timed_out["kind"], &timed_out["status"]),
        (&json!("timed_out"), &json!("timed_out"))
    );

    // globex's stream heard none of it; its own request reaches it and no one in acme.
    outsider.quiet(Duration::from_millis(300)).await;
    approvals::file_request(&server.state, &globex, "dev-9", &request("g1", json!({})))
        .await
        .expect("file");
    let theirs = outsider.approval().await;
    assert_eq!(theirs["kind"], "filed");
    ann.quiet(Duration::from_millis(500)).await;
    let mut seen = Vec::new();
    for _ in 0..4 {
        seen.push(
            vic.approval().await["kind"]
                .as_str()
                .unwrap_or("")
                .to_string(),
        );
    }
    assert_eq!(seen, ["filed", "cancelled", "filed", "timed_out"]);
    vic.quiet(Duration::from_millis(10)).await;
    drop((ann, vic, outsider));
    server.stop().await;
}

async fn a_revoked_session_ends_the_stream(backend: Backend) {
    let server = TestServer::start(backend).await;
    let owner = server.owner().await;
    let approver = server
        .member(&owner, "acme", "ann@acme.test", "approver")
        .await;
    let mut ann = EventStream::open(&approver, "acme").await;
    let (_, sessions) = approver.get("/api/v1/me/sessions").await;
    let current = sessions
        .as_array()
        .expect("sessions")
        .iter()
        .find(|s| s["current"] == true)
        .and_then(|s| s["id"].as_str())
        .expect("current session")
        .to_string();
    let (status, _) = approver
        .delete(&format!("/api/v1/me/sessions/{current}"))
        .await;
    assert_eq!(status, 204);
    let end = ann
        .next(Duration::from_secs(8))
        .await
        .expect("an end event within the re-check interval");
    assert_eq!(
        (end.event.as_str(), end.data.as_str()),
        ("end", "session_ended")
    );
    assert!(
        ann.next(Duration::from_secs(2)).await.is_none(),
        "the stream is closed"
    );
    // Reconnecting is refused (sent to sign in again).
    let (status, _) = approver.get("/ui/events/approvals?org=acme").await;
    assert_eq!(status, 303);

    // Leaving the organisation ends a stream too.
    let vic = server
        .member(&owner, "acme", "vic@acme.test", "viewer")
        .await;
    let mut stream = EventStream::open(&vic, "acme").await;
    let (_, members) = owner.get("/api/v1/orgs/acme/members").await;
    let vic_id = members["items"]
        .as_array()
        .expect("members")
        .iter()
        .find(|m| m["user"]["email"] == "vic@acme.test")
        .and_then(|m| m["user"]["id"].as_str())
        .expect("vic")
        .to_string();
    let (status, body) = owner
        .delete(&format!("/api/v1/orgs/acme/members/{vic_id}"))
        .await;
    assert!(status == 204 || status == 200, "{status} {body}");
    let end = stream
        .next(Duration::from_secs(8))
        .await
        .expect("an end event");
    assert_eq!(
        (end.event.as_str(), end.data.as_str()),
        ("end", "no_longer_member")
    );

    // A stopping server ends every stream at once (its drain does not wait for them).
    let mut a = EventStream::open(&owner, "acme").await;
    assert_eq!(flowlink_control::ui::events::streams(&server.state), 1);
    flowlink_control::ui::events::close_streams(&server.state);
    let end = a
        .next(Duration::from_secs(2))
        .await
        .expect("an end event at once");
    assert_eq!(
        (end.event.as_str(), end.data.as_str()),
        ("end", "server_stopping")
    );
    assert!(a.next(Duration::from_secs(2)).await.is_none(), "closed");
    assert_eq!(
        flowlink_control::ui::events::streams(&server.state),
        0,
        "unsubscribed"
    );
    server.stop().await;
}

async fn pages_show_the_queue_and_decide_through_the_apis_rules(backend: Backend) {
    let server = TestServer::start(backend).await;
    let owner = server.owner().await;
    let acme = org_id(&owner, "acme").await;
    let (tx, mut link) = tokio::sync::mpsc::channel(16);
    std::mem::forget(server.state.links.register("dev-1", "db", tx));
    let approver = server
        .member(&owner, "acme", "ann@acme.test", "approver")
        .await;
    let viewer = server
        .member(&owner, "acme", "vic@acme.test", "viewer")
        .await;
    // The agent works for "dev": dev@acme.test may not decide it.
    let dev = server
        .member(&owner, "acme", "dev@acme.test", "approver")
        .await;
    let other = server.other_org("globex").await;

    let mut req = request(
        "p1",
        json!({"sql": "DELETE FROM users WHERE name = '<script>alert(1)</script>'", "limit": 5}),
    );
    req.findings = vec![flowlink_proto::audit::FindingRecord {
        id: "sql.delete_without_where".into(),
        category: "sql".into(),
        risk: 80,
        pointer: "/sql".into(),
        explanation: "Deletes rows from a table".into(),
    }];
    let msgs = approvals::file_request(&server.state, &acme, "dev-1", &req)
        .await
        .expect("file");
    let (id, url) = match &msgs[0] {
        flowlink_proto::link::ControlMessage::ApprovalAccepted(a) => {
            (a.request_id.clone(), a.url.clone())
        }
        other => panic!("{other:?}"),
    };
    // The proxy is told where a person decides: the request's page (the org named by its id).
    let by_id = format!("/ui/orgs/{acme}/approvals/{id}");
    assert_eq!(
        url,
        format!(
            "{}{by_id}",
            server.state.config.public_url.trim_end_matches('/')
        )
    );
    let (status, _) = page(&approver, &by_id).await;
    assert_eq!(status, 200);

    // The queue: the approver and the viewer see the row; the title counts it.
    let (status, html) = page(&approver, "/ui/orgs/acme/approvals").await;
    assert_eq!(status, 200, "{html}");
    assert!(html.contains(&format!("data-id=\"{id}\"")), "{html}");
    assert!(html.contains("<title>(1) Approvals"), "{html}");
    assert!(html.contains("claude-code") && html.contains("query") && html.contains("70 · high"));
    assert!(
        html.contains("/ui/static/approvals.js?v="),
        "the live script"
    );
    assert!(
        !html.contains("<script>") && !html.contains("onclick"),
        "no inline script"
    );
    let (status, html) = page(&viewer, "/ui/orgs/acme/approvals").await;
    assert_eq!(status, 200);
    assert!(html.contains(&format!("data-id=\"{id}\"")));
    // Another organisation's queue and request are not found.
    let (status, _) = page(&other, "/ui/orgs/acme/approvals").await;
    assert_eq!(status, 404);
    let (status, _) = page(&other, &format!("/ui/orgs/globex/approvals/{id}")).await;
    assert_eq!(status, 404);

    // The request: arguments pretty and escaped, the finding in words, the rule and its message.
    let path = format!("/ui/orgs/acme/approvals/{id}");
    let (status, html) = page(&approver, &path).await;
    assert_eq!(status, 200, "{html}");
    assert!(
        html.contains("&lt;script&gt;alert(1)&lt;/script&gt;") || html.contains("&#60;script&#62;"),
        "{html}"
    );
    assert!(!html.contains("<script>alert"), "escaped");
    assert!(
        html.contains("\n  &#34;limit&#34;: 5") || html.contains("\n  &quot;limit&quot;: 5"),
        "pretty JSON: {html}"
    );
    assert!(html.contains("Deletes rows from a table") && html.contains("80 · high"));
    assert!(html.contains("prod-writes") && html.contains("writes to production need a DBA"));
    assert!(html.contains("id=\"approve\"") && html.contains("id=\"deny\""));
    assert!(html.contains("name=\"csrf_token\""));
    // The viewer sees it without the forms, and a direct POST is refused.
    let (status, html) = page(&viewer, &path).await;
    assert_eq!(status, 200);
    assert!(
        !html.contains("id=\"approve\"")
            && !html.contains("<form method=\"post\" action=\"/ui/orgs"),
        "{html}"
    );
    let (status, _, html) = form(
        &viewer,
        &format!("{path}/decision"),
        &[("decision", "approve")],
    )
    .await;
    assert_eq!(status, 403, "{html}");
    assert!(html.contains("<html"), "an HTML refusal page");
    // The requester sees why there are no forms; posting anyway is refused by the API's rule.
    let (_, html) = page(&dev, &path).await;
    assert!(html.contains("made for you") && !html.contains("id=\"approve\""));
    let (status, _, html) = form(
        &dev,
        &format!("{path}/decision"),
        &[("decision", "approve")],
    )
    .await;
    assert_eq!(status, 403, "{html}");
    // Without the CSRF field the form is refused.
    let (status, _, _) = form(
        &TestClient {
            csrf: Some("wrong".into()),
            ..approver.clone()
        },
        &format!("{path}/decision"),
        &[("decision", "approve")],
    )
    .await;
    assert_eq!(status, 403);
    let (status, _) = approver
        .get(&format!("/api/v1/orgs/acme/approvals/{id}"))
        .await;
    assert_eq!(status, 200);

    // The approver approves this exact call for 15 minutes, with a comment.
    let (status, location, body) = form(
        &approver,
        &format!("{path}/decision"),
        &[
            ("decision", "approve"),
            ("comment", "ok <b>once</b>"),
            ("scope", "same_call_for"),
            ("minutes", "15"),
        ],
    )
    .await;
    assert_eq!((status, location.as_str()), (303, path.as_str()), "{body}");
    let (_, api) = approver
        .get(&format!("/api/v1/orgs/acme/approvals/{id}"))
        .await;
    assert_eq!(
        (&api["status"], &api["scope"], &api["scope_minutes"]),
        (&json!("approved"), &json!("same_call_for"), &json!(15))
    );
    let told = tokio::time::timeout(Duration::from_secs(5), link.recv())
        .await
        .expect("the proxy is told")
        .expect("link");
    match told {
        flowlink_proto::link::ControlMessage::ApprovalDecision(d) => {
            assert_eq!(d.outcome, flowlink_proto::link::ApprovalOutcome::Approved);
            assert_eq!(d.decided_by, ["ann@acme.test"]);
        }
        other => panic!("{other:?}"),
    }
    let (_, html) = page(&approver, &path).await;
    assert!(
        html.contains("approved") && html.contains("this exact call for 15 minutes"),
        "{html}"
    );
    assert!(
        html.contains("ok &lt;b&gt;once&lt;/b&gt;") || html.contains("ok &#60;b&#62;once"),
        "{html}"
    );
    assert!(!html.contains("id=\"approve\""), "no forms once decided");
    // Deciding again: the API's conflict, as a page.
    let (status, _, _) = form(&owner, &format!("{path}/decision"), &[("decision", "deny")]).await;
    assert_eq!(status, 409);

    // The queue is empty; the history has it, and pages by keyset.
    let (_, html) = page(&approver, "/ui/orgs/acme/approvals").await;
    assert!(!html.contains(&format!("data-id=\"{id}\"")) && html.contains("<title>Approvals"));
    for i in 0..(flowlink_control::ui::approvals::HISTORY_PAGE + 2) {
        let call = format!("h{i}");
        approvals::file_request(
            &server.state,
            &acme,
            "dev-1",
            &request(&call, json!({"i": i})),
        )
        .await
        .expect("file");
        approvals::cancel(
            &server.state,
            "dev-1",
            &ApprovalCancel {
                call_ref: call,
                reason: "gone".into(),
            },
        )
        .await
        .expect("cancel");
    }
    let (status, html) = page(&viewer, "/ui/orgs/acme/approvals/history").await;
    assert_eq!(status, 200);
    assert_eq!(
        html.matches("<tr data-id=").count(),
        flowlink_control::ui::approvals::HISTORY_PAGE as usize
    );
    let next = html
        .split("approvals/history?cursor=")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .expect("a next page link")
        .to_string();
    let (status, html) = page(
        &viewer,
        &format!("/ui/orgs/acme/approvals/history?cursor={next}"),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        html.matches("<tr data-id=").count(),
        3,
        "two cancelled and the approved one"
    );
    assert!(html.contains(&format!("data-id=\"{id}\"")) && !html.contains("history?cursor="));
    server.stop().await;
}

both!(
    the_stream_carries_its_orgs_requests_only,
    a_revoked_session_ends_the_stream,
    pages_show_the_queue_and_decide_through_the_apis_rules
);

/// Two replicas on one PostgreSQL database: a request filed and decided on A reaches a stream
/// served by B (B re-reads it from the database after A's `NOTIFY`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_cross_postgres_replicas() {
    let a = TestServer::start(Backend::Postgres).await;
    let owner_a = a.owner().await;
    let acme = org_id(&owner_a, "acme").await;
    let url = a.db.url.clone();
    let b = TestServer::start_with(Backend::Postgres, move |c| c.database_url = url).await;
    let owner_b = b.client().login("owner@acme.test", PASSWORD).await;
    let approver = a
        .member(&owner_a, "acme", "ann@acme.test", "approver")
        .await;
    let mut on_b = EventStream::open(&owner_b, "acme").await;

    let msgs = approvals::file_request(&a.state, &acme, "dev-1", &request("x1", json!({"a": 1})))
        .await
        .expect("file");
    let id = match &msgs[0] {
        flowlink_proto::link::ControlMessage::ApprovalAccepted(a) => a.request_id.clone(),
        other => panic!("{other:?}"),
    };
    let filed = on_b.approval().await;
    assert_eq!(
        (&filed["kind"], &filed["id"]),
        (&json!("filed"), &json!(id))
    );
    let (status, body) = approver
        .post(
            &format!("/api/v1/orgs/acme/approvals/{id}/decision"),
            json!({"decision": "deny", "comment": "no"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let decided = on_b.approval().await;
    assert_eq!(
        (&decided["kind"], &decided["status"]),
        (&json!("decided"), &json!("denied"))
    );
    // Each event once, not once per replica.
    on_b.quiet(Duration::from_millis(500)).await;
    drop(on_b);
    b.stop().await;
    a.stop().await;
}
