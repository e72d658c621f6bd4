//! The approval queue in a real headless Chromium against the real binaries: an approver signed
//! in watches the queue page while a real enrolled `flowlink-proxy` (in front of
//! `server-everything`, driven by the official Python MCP client) parks an `echo` call; the
//! request appears without a reload (inserted by `approvals.js` from the event stream), the
//! approver opens it, approves with a comment, and the agent's call completes with the echo
//! result. A viewer sees the queue and the request without the decision forms. Screenshots of
//! the queue and the request page are saved under `target/ui-screenshots/`.

use std::time::Duration;

use flowlink_e2e::browser::{Browser, SignedIn};
use flowlink_e2e::link::{Background, Control, Device, OWNER, SERVICE, setup_org, wait_until};
use serde_json::json;

/// `echo` waits for a person; everything else runs.
const POLICY: &str = r#"version = 1
default_action = "allow"

[[rules]]
id = "echo-needs-approval"
tool = "echo"
action = "approve"
message = "echo needs a person"
"#;

/// The accounts `link_scenarios.py setup` creates.
const APPROVER: (&str, &str) = ("approver@acme.test", "correct horse battery staple 2");
const VIEWER: (&str, &str) = ("viewer@acme.test", "correct horse battery staple 3");

const LIVE: Duration = Duration::from_secs(30);

fn rows(browser: &Browser) -> usize {
    browser.find_all("#queue-rows tr[data-id]").len()
}

#[test]
fn an_approver_watches_a_real_call_arrive_and_approves_it_in_the_browser() {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = format!("sqlite://{}/control.db", dir.path().display());
    let control = Control::start(&db, dir.path());
    let token = setup_org(&control, POLICY);
    let owner = SignedIn::login(&control.url, OWNER);
    let (added, body) = owner.post(
        "/api/v1/orgs/acme/members",
        json!({"email": VIEWER.0, "password": VIEWER.1, "role": "viewer", "display_name": "Vera Viewer"}),
    );
    assert_eq!(added, 201, "add the viewer: {body}");
    let device = Device::enroll(&control.public_url, &token);

    // The approver signs in and opens the (empty) queue; the page goes live.
    let browser = Browser::start("ui_approvals");
    browser.sign_in(&control.url, APPROVER);
    browser.goto(&format!("{}/ui/orgs/acme/approvals", control.url));
    wait_until("the queue to go live", LIVE, || {
        (browser.text("#live-status") == "live").then_some(())
    });
    assert_eq!(rows(&browser), 0);
    let queue_url = browser.url();

    // The agent calls `echo` through a real enrolled proxy; the call waits for a person.
    let agent = Background::spawn(
        "stream",
        &["--count", "1", "--prefix", "from-the-browser-"],
        &device.wrap(&[]),
    );
    wait_until("the request to appear without a reload", LIVE, || {
        (rows(&browser) == 1).then_some(())
    });
    assert_eq!(browser.url(), queue_url, "no navigation");
    assert_eq!(
        browser
            .attribute("#queue-rows tr[data-id]", "class")
            .as_deref(),
        Some("arrived"),
        "the row was inserted by approvals.js, not rendered by a reload"
    );
    let row = browser.text("#queue-rows tr[data-id]");
    for part in ["owner", "e2e-device", "echo", SERVICE] {
        assert!(row.contains(part), "`{part}` in the row: {row}");
    }
    assert_eq!(browser.text("#queue-count"), "1 waiting");
    browser.screenshot("queue");
    browser.window_size(390, 844);
    browser.screenshot("queue-phone");
    browser.window_size(1280, 900);

    // The approver opens it: who, what, the rule and its message, the arguments.
    browser.click("#queue-rows a.review");
    browser.find("#approve");
    let request_path = browser.path();
    assert!(
        request_path.starts_with("/ui/orgs/acme/approvals/"),
        "{request_path}"
    );
    assert!(
        browser
            .text("#arguments")
            .contains("from-the-browser-000000")
    );
    assert_eq!(browser.text("#rule-message"), "echo needs a person");
    assert_eq!(browser.text("#requester"), "owner");
    // Tall enough for the arguments and the decision form.
    browser.window_size(1280, 1700);
    browser.screenshot("request");
    // And on a phone.
    browser.window_size(390, 1900);
    browser.screenshot("request-phone");
    browser.window_size(1280, 1700);

    // Approve with a comment; the agent's call completes with the echo result.
    browser.fill("#comment", "fine, approved from the browser");
    browser.click("#approve");
    browser.wait_path(&request_path);
    wait_until("the page to say approved", LIVE, || {
        browser
            .text("#request-status")
            .contains("approved")
            .then_some(())
    });
    let report = agent.finish(Duration::from_secs(60));
    assert_eq!(
        report["answered"],
        json!(["from-the-browser-000000"]),
        "the echo result reached the agent: {report:#}"
    );
    browser.screenshot("request-approved");
    browser.window_size(1280, 900);

    // Back on the queue: empty again.
    browser.goto(&queue_url);
    wait_until("the queue to go live", LIVE, || {
        (browser.text("#live-status") == "live").then_some(())
    });
    assert_eq!(rows(&browser), 0);

    // A viewer sees a new request arrive live, and the request without any decision form.
    let viewer = Browser::start("ui_approvals");
    viewer.sign_in(&control.url, VIEWER);
    viewer.goto(&format!("{}/ui/orgs/acme/approvals", control.url));
    wait_until("the viewer's queue to go live", LIVE, || {
        (viewer.text("#live-status") == "live").then_some(())
    });
    let agent = Background::spawn(
        "stream",
        &["--count", "1", "--prefix", "seen-by-the-viewer-"],
        &device.wrap(&[]),
    );
    wait_until("the request to reach the viewer", LIVE, || {
        (rows(&viewer) == 1).then_some(())
    });
    assert_eq!(viewer.text("#queue-rows a.review"), "View");
    viewer.screenshot("viewer-queue");
    viewer.click("#queue-rows a.review");
    viewer.window_size(1280, 1500);
    assert!(
        viewer
            .text("#not-yours")
            .contains("needs the approver role")
    );
    assert!(viewer.try_find("#approve").is_none() && viewer.try_find("#deny").is_none());
    assert!(viewer.try_find("form[action$='/decision']").is_none());
    viewer.screenshot("viewer-request");
    let id = viewer.path().rsplit('/').next().expect("id").to_owned();

    // While the viewer has it open, the approver denies it in their browser: the viewer's page
    // says so at once, and the agent's call ends with the denial.
    browser.goto(&format!("{}/ui/orgs/acme/approvals/{id}", control.url));
    browser.fill("#comment", "not this one");
    browser.click("#deny");
    browser.wait_path(&format!("/ui/orgs/acme/approvals/{id}"));
    wait_until("the viewer's page to learn of the denial", LIVE, || {
        viewer
            .try_text("#decided-meanwhile")
            .filter(|t| t.contains("denied meanwhile"))
    });
    viewer.screenshot("viewer-decided-meanwhile");
    let report = agent.finish(Duration::from_secs(60));
    assert_eq!(report["answered"], json!([]), "{report:#}");
    assert!(
        report["errors"]
            .to_string()
            .contains("A person denied this call by approver@acme.test")
            && report["errors"].to_string().contains("not this one"),
        "{report:#}"
    );

    // On the queue, the viewer sees a third request leave live when the approver decides it
    // (through the API), and that agent's call completes.
    viewer.goto(&format!("{}/ui/orgs/acme/approvals", control.url));
    wait_until("the viewer's queue to go live", LIVE, || {
        (viewer.text("#live-status") == "live").then_some(())
    });
    assert_eq!(rows(&viewer), 0);
    let agent = Background::spawn(
        "stream",
        &["--count", "1", "--prefix", "third-"],
        &device.wrap(&[]),
    );
    wait_until("the third request to reach the viewer", LIVE, || {
        (rows(&viewer) == 1).then_some(())
    });
    let id = viewer
        .attribute("#queue-rows tr[data-id]", "data-id")
        .expect("row id");
    let approver = SignedIn::login(&control.url, APPROVER);
    let (decided, body) = approver.post(
        &format!("/api/v1/orgs/acme/approvals/{id}/decision"),
        json!({"decision": "approve"}),
    );
    assert_eq!(decided, 200, "{body}");
    wait_until("the viewer's queue to empty live", LIVE, || {
        (rows(&viewer) == 0).then_some(())
    });
    assert_eq!(viewer.text("#queue-count"), "0 waiting");
    let report = agent.finish(Duration::from_secs(60));
    assert_eq!(report["answered"], json!(["third-000000"]), "{report:#}");
}
