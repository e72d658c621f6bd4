//! The organisation settings pages on both engines, used as a browser would (signed in through
//! the sign-in page, the CSRF token read from the page and posted as a form field): role
//! changes take effect on the member's next call and keep the last owner, the two-factor rule
//! toggles and locks out members without a second factor, invitations make accounts with
//! their role exactly once (used, expired and revoked links refused, only the token's hash
//! stored), API tokens made on the page work as bearer tokens and are shown once, a viewer sees
//! no forms and their direct posts are refused, and another organisation's settings are not
//! found.

mod support;

use flowlink_control::auth::secret::sha256_hex;
use flowlink_control::store::Backend;
use serde_json::json;
use support::*;

both!(
    roles_change_on_the_members_page_and_take_effect,
    the_last_owner_cannot_be_demoted_or_removed,
    two_factor_enforcement_toggles,
    the_settings_page_lists_the_servers_sign_in_providers,
    an_invitation_makes_an_account_with_its_role_once,
    dead_invitation_links_are_refused,
    a_signed_in_person_joins_with_one_click,
    an_admin_cannot_invite_an_owner,
    api_tokens_made_on_the_page_work_and_are_shown_once,
    a_viewer_sees_no_forms_and_direct_posts_are_refused,
    another_organisations_settings_are_not_found
);

/// The CSRF token of the forms of a page.
fn csrf_in(html: &str) -> String {
    html.split(r#"name="csrf_token" value=""#)
        .nth(1)
        .and_then(|s| s.split('"').next())
        .unwrap_or_else(|| panic!("no CSRF field in {html}"))
        .to_string()
}

/// Signs in on the sign-in page and reads the CSRF token from the next page, like a browser.
async fn browser(server: &TestServer, email: &str) -> TestClient {
    let anonymous = server.client();
    let (status, location, body, cookie) = form_raw(
        &anonymous,
        "/ui/sign-in",
        &[("email", email), ("password", PASSWORD)],
    )
    .await;
    assert_eq!((status, location.as_str()), (303, "/ui/"), "{body}");
    let mut c = server.client();
    c.cookie = Some(cookie.expect("a session cookie"));
    let (status, html) = page(&c, "/ui/account").await;
    assert_eq!(status, 200);
    c.csrf = Some(csrf_in(&html));
    c
}

async fn audit_count(server: &TestServer, kind: &str) -> i64 {
    sqlx::query_scalar("SELECT COUNT(*) FROM audit_events WHERE kind = $1")
        .bind(kind)
        .fetch_one(server.store.pool())
        .await
        .expect("count audit events")
}

async fn user_id(owner: &TestClient, email: &str) -> String {
    let (status, members) = owner.get("/api/v1/orgs/acme/members").await;
    assert_eq!(status, 200, "{members}");
    members["items"]
        .as_array()
        .expect("items")
        .iter()
        .find(|m| m["user"]["email"] == email)
        .and_then(|m| m["user"]["id"].as_str())
        .unwrap_or_else(|| panic!("{email} is not a member: {members}"))
        .to_string()
}

async fn role_of(owner: &TestClient, email: &str) -> String {
    let (_, members) = owner.get("/api/v1/orgs/acme/members").await;
    members["items"]
        .as_array()
        .expect("items")
        .iter()
        .find(|m| m["user"]["email"] == email)
        .and_then(|m| m["role"].as_str())
        .unwrap_or("(not a member)")
        .to_string()
}

/// Sets up an authenticator app for the API client's account.
async fn enable_totp(c: &TestClient) {
    let (status, setup) = c.post("/api/v1/me/totp/setup", json!({})).await;
    assert_eq!(status, 200, "{setup}");
    let secret = setup["secret"].as_str().expect("secret").to_string();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let code = flowlink_control::auth::totp::code_at(&secret, now).expect("code");
    let (status, body) = c
        .post("/api/v1/me/totp/enable", json!({"code": code}))
        .await;
    assert_eq!(status, 200, "{body}");
}

/// Invites `email` as `role` on the members page; returns the link's token.
async fn invite(c: &TestClient, email: &str, role: &str, days: &str) -> String {
    let (status, _, html) = form(
        c,
        "/ui/orgs/acme/settings/invitations",
        &[("email", email), ("role", role), ("expires_in_days", days)],
    )
    .await;
    assert_eq!(status, 201, "{html}");
    assert!(html.contains("shown only this once"), "{html}");
    let link = html
        .split(r#"id="invitation-link" type="text" readonly value=""#)
        .nth(1)
        .and_then(|s| s.split('"').next())
        .unwrap_or_else(|| panic!("no link in {html}"));
    let token = link
        .split("/ui/invitations/")
        .nth(1)
        .unwrap_or_else(|| panic!("link {link}"))
        .to_string();
    assert!(link.starts_with("http"), "a whole link: {link}");
    token
}

async fn roles_change_on_the_members_page_and_take_effect(backend: Backend) {
    let server = TestServer::start(backend).await;
    let owner_api = server.owner().await;
    let vic = server
        .member(&owner_api, "acme", "vic@acme.test", "viewer")
        .await;
    let owner = browser(&server, "owner@acme.test").await;
    let vic_id = user_id(&owner_api, "vic@acme.test").await;

    let (status, html) = page(&owner, "/ui/orgs/acme/settings/members").await;
    assert_eq!(status, 200, "{html}");
    assert!(html.contains("vic@acme.test") && html.contains("Olive Owner"));
    assert!(
        html.contains(&format!(r#"<select id="role-{vic_id}" name="role">"#)),
        "{html}"
    );
    assert!(html.contains("<th scope=\"col\">Two-factor</th>"));

    // A viewer cannot read the member list; after becoming an auditor they can.
    let (status, _) = vic.get("/api/v1/orgs/acme/members").await;
    assert_eq!(status, 403);
    let (status, location, body) = form(
        &owner,
        &format!("/ui/orgs/acme/settings/members/{vic_id}/role"),
        &[("role", "auditor")],
    )
    .await;
    assert_eq!(status, 303, "{body}");
    assert_eq!(location, "/ui/orgs/acme/settings/members?done=role");
    let (_, html) = page(&owner, &location).await;
    assert!(html.contains("The role is changed"), "{html}");
    let row = html
        .split(&format!(r#"id="member-{vic_id}""#))
        .nth(1)
        .expect("vic's row");
    assert!(
        row.contains(r#"<option value="auditor" selected>"#),
        "{row}"
    );
    let (status, body) = vic.get("/api/v1/orgs/acme/members").await;
    assert_eq!(status, 200, "the new role applies at once: {body}");
    assert_eq!(audit_count(&server, "member.role_changed").await, 1);

    // An unknown role is refused with the API's words; nothing changes.
    let (status, _, html) = form(
        &owner,
        &format!("/ui/orgs/acme/settings/members/{vic_id}/role"),
        &[("role", "superuser")],
    )
    .await;
    assert_eq!(status, 400);
    assert!(html.contains("Unknown role `superuser`"), "{html}");
    assert_eq!(role_of(&owner_api, "vic@acme.test").await, "auditor");

    // Removing asks first, then removes: their next call finds no organisation.
    let (status, html) = page(
        &owner,
        &format!("/ui/orgs/acme/settings/members/{vic_id}/remove"),
    )
    .await;
    assert_eq!(status, 200);
    assert!(html.contains("Remove vic@acme.test"), "{html}");
    let (status, location, _) = form(
        &owner,
        &format!("/ui/orgs/acme/settings/members/{vic_id}/remove"),
        &[],
    )
    .await;
    assert_eq!(
        (status, location.as_str()),
        (303, "/ui/orgs/acme/settings/members?done=removed")
    );
    let (status, body) = vic.get("/api/v1/orgs/acme").await;
    assert_eq!((status, code(&body)), (404, "org_not_found"));
    assert_eq!(audit_count(&server, "member.removed").await, 1);
    server.stop().await;
}

async fn the_last_owner_cannot_be_demoted_or_removed(backend: Backend) {
    let server = TestServer::start(backend).await;
    let owner_api = server.owner().await;
    let owner = browser(&server, "owner@acme.test").await;
    let me = user_id(&owner_api, "owner@acme.test").await;
    let (status, _, html) = form(
        &owner,
        &format!("/ui/orgs/acme/settings/members/{me}/role"),
        &[("role", "admin")],
    )
    .await;
    assert_eq!(status, 409, "{html}");
    assert!(
        html.contains(r#"id="error""#) && html.contains("This is the last owner"),
        "{html}"
    );
    assert_eq!(role_of(&owner_api, "owner@acme.test").await, "owner");
    let (status, _, html) = form(
        &owner,
        &format!("/ui/orgs/acme/settings/members/{me}/remove"),
        &[],
    )
    .await;
    assert_eq!(status, 409, "{html}");
    assert!(html.contains("This is the last owner"), "{html}");
    assert_eq!(role_of(&owner_api, "owner@acme.test").await, "owner");
    assert_eq!(audit_count(&server, "member.role_changed").await, 0);

    // With a second owner, the first may step down.
    server
        .member(&owner_api, "acme", "otto@acme.test", "owner")
        .await;
    let (status, _, _) = form(
        &owner,
        &format!("/ui/orgs/acme/settings/members/{me}/role"),
        &[("role", "admin")],
    )
    .await;
    assert_eq!(status, 303);
    assert_eq!(role_of(&owner_api, "owner@acme.test").await, "admin");
    // An admin now: the owner's row offers no form, and a direct post is refused.
    let otto = user_id(&owner_api, "otto@acme.test").await;
    let (_, html) = page(&owner, "/ui/orgs/acme/settings/members").await;
    let row = html
        .split(&format!(r#"id="member-{otto}""#))
        .nth(1)
        .and_then(|s| s.split("</tr>").next())
        .expect("otto's row");
    assert!(
        !row.contains("<select") && row.contains("Only an owner changes owners"),
        "{row}"
    );
    let (status, _, html) = form(
        &owner,
        &format!("/ui/orgs/acme/settings/members/{otto}/role"),
        &[("role", "viewer")],
    )
    .await;
    assert_eq!(status, 403, "{html}");
    assert!(html.contains("Only an owner can make, change or remove owners"));
    assert_eq!(role_of(&owner_api, "otto@acme.test").await, "owner");
    let (status, html) = page(
        &owner,
        &format!("/ui/orgs/acme/settings/members/{otto}/remove"),
    )
    .await;
    assert_eq!(status, 200);
    assert!(
        html.contains(r#"id="not-manageable""#) && !html.contains(r#"id="confirm-remove""#),
        "{html}"
    );
    server.stop().await;
}

async fn two_factor_enforcement_toggles(backend: Backend) {
    let server = TestServer::start(backend).await;
    let owner_api = server.owner().await;
    let vic = server
        .member(&owner_api, "acme", "vic@acme.test", "viewer")
        .await;
    let owner = browser(&server, "owner@acme.test").await;

    // Without an authenticator app of one's own, the page says to set one up first, and a
    // direct post is refused: nobody locks themselves out.
    let (status, html) = page(&owner, "/ui/orgs/acme/settings").await;
    assert_eq!(status, 200);
    assert!(html.contains(r#"id="twofa-own-first""#), "{html}");
    assert!(!html.contains(r#"id="twofa-on""#));
    let (status, _, html) =
        form(&owner, "/ui/orgs/acme/settings", &[("require_2fa", "true")]).await;
    assert_eq!(status, 409, "{html}");
    assert!(html.contains("Set up your own authenticator app"), "{html}");

    enable_totp(&owner_api).await;
    let (_, html) = page(&owner, "/ui/orgs/acme/settings").await;
    assert!(html.contains(r#"id="twofa-on""#), "{html}");
    assert!(
        html.contains("1 of 2 member(s) have no second factor yet")
            && html.contains("vic@acme.test"),
        "{html}"
    );
    assert!(html.contains("refused everything of Acme"), "{html}");

    let (status, location, _) =
        form(&owner, "/ui/orgs/acme/settings", &[("require_2fa", "true")]).await;
    assert_eq!(
        (status, location.as_str()),
        (303, "/ui/orgs/acme/settings?done=2fa-on")
    );
    let (_, html) = page(&owner, &location).await;
    assert!(
        html.contains(r#"<span class="tag tag-on">required</span>"#),
        "{html}"
    );
    assert!(html.contains(r#"id="twofa-off""#));
    let org = server
        .store
        .org_by_ref("acme")
        .await
        .expect("org")
        .expect("acme");
    assert!(org.require_2fa);
    let (status, body) = vic.get("/api/v1/orgs/acme").await;
    assert_eq!((status, code(&body)), (403, "second_factor_required"));

    let (status, location, _) = form(
        &owner,
        "/ui/orgs/acme/settings",
        &[("require_2fa", "false")],
    )
    .await;
    assert_eq!(
        (status, location.as_str()),
        (303, "/ui/orgs/acme/settings?done=2fa-off")
    );
    let (status, _) = vic.get("/api/v1/orgs/acme").await;
    assert_eq!(status, 200);
    assert_eq!(audit_count(&server, "org.updated").await, 2);

    // The name, and a bad one said on the page.
    let (status, location, _) =
        form(&owner, "/ui/orgs/acme/settings", &[("name", "Acme Ltd")]).await;
    assert_eq!(status, 303, "{location}");
    let (_, html) = page(&owner, &location).await;
    assert!(html.contains("Acme Ltd"), "{html}");
    let (status, _, html) = form(&owner, "/ui/orgs/acme/settings", &[("name", "  ")]).await;
    assert_eq!(status, 400);
    assert!(html.contains("A name is 1-100 characters"), "{html}");
    let (status, _, _) = form(
        &owner,
        "/ui/orgs/acme/settings",
        &[("require_2fa", "maybe")],
    )
    .await;
    assert_eq!(status, 400);
    server.stop().await;
}

async fn an_invitation_makes_an_account_with_its_role_once(backend: Backend) {
    let server = TestServer::start(backend).await;
    let _owner_api = server.owner().await;
    let owner = browser(&server, "owner@acme.test").await;
    let token = invite(&owner, "Nina@Acme.test", "approver", "7").await;

    // Only the hash is stored.
    let stored: String = sqlx::query_scalar("SELECT token_hash FROM invitations")
        .fetch_one(server.store.pool())
        .await
        .expect("hash");
    assert_ne!(stored, token);
    assert_eq!(stored, sha256_hex(&token));
    assert_eq!(audit_count(&server, "invitation.created").await, 1);

    // The members page lists it, without the link.
    let (_, html) = page(&owner, "/ui/orgs/acme/settings/members").await;
    let pending = html
        .split(r#"id="invitations""#)
        .nth(1)
        .expect("pending list");
    assert!(pending.contains("nina@acme.test") && pending.contains("approver"));
    assert!(
        pending.contains("owner@acme.test"),
        "the inviter: {pending}"
    );
    assert!(!html.contains(&token));

    // The link opens the account form for the invited address.
    let anonymous = server.client();
    let link = format!("/ui/invitations/{token}");
    let (status, html) = page(&anonymous, &link).await;
    assert_eq!(status, 200, "{html}");
    assert!(
        html.contains("Acme") && html.contains("nina@acme.test") && html.contains("approver"),
        "{html}"
    );
    assert!(html.contains(r#"<label for="password">"#));
    // A weak password is refused next to its field; nothing is created.
    let (status, _, html) = form(
        &anonymous,
        &link,
        &[("display_name", "Nina"), ("password", "short")],
    )
    .await;
    assert_eq!(status, 400);
    assert!(html.contains(r#"id="password-error""#), "{html}");
    assert!(
        server
            .store
            .user_by_email("nina@acme.test")
            .await
            .expect("db")
            .is_none()
    );

    let (status, location, body, cookie) = form_raw(
        &anonymous,
        &link,
        &[("display_name", "Nina Newcomer"), ("password", PASSWORD)],
    )
    .await;
    assert_eq!((status, location.as_str()), (303, "/ui/"), "{body}");
    let mut nina = server.client();
    nina.cookie = Some(cookie.expect("signed in"));
    let (status, html) = page(&nina, "/ui/").await;
    assert_eq!(status, 200);
    assert!(
        html.contains("Nina Newcomer") && html.contains("approver"),
        "{html}"
    );
    assert_eq!(audit_count(&server, "invitation.accepted").await, 1);

    // The account signs in with its password and has the invited role.
    let nina_api = server.client().login("nina@acme.test", PASSWORD).await;
    let (status, org) = nina_api.get("/api/v1/orgs/acme").await;
    assert_eq!(status, 200, "{org}");
    assert_eq!(org["your_role"], "approver");

    // The link works once.
    let (status, html) = page(&anonymous, &link).await;
    assert_eq!(status, 410);
    assert!(html.contains("already been used"), "{html}");
    let (status, _, html) = form(
        &anonymous,
        &link,
        &[("display_name", "Mallory"), ("password", PASSWORD)],
    )
    .await;
    assert_eq!(status, 410, "{html}");
    let (status, body) = server
        .client()
        .post(
            "/api/v1/invitations/accept",
            json!({"token": token, "display_name": "M", "password": PASSWORD}),
        )
        .await;
    assert_eq!((status, code(&body)), (410, "invitation_used"));
    assert_eq!(audit_count(&server, "invitation.accepted").await, 1);
    // Both attempts to use the dead link are on the record (looking at it is not).
    assert_eq!(audit_count(&server, "invitation.refused").await, 2);
    let (_, html) = page(&owner, "/ui/orgs/acme/settings/members").await;
    assert!(html.contains(r#"id="no-invitations""#), "{html}");
    server.stop().await;
}

async fn dead_invitation_links_are_refused(backend: Backend) {
    let server = TestServer::start(backend).await;
    let owner_api = server.owner().await;
    let owner = browser(&server, "owner@acme.test").await;
    let anonymous = server.client();
    let users_before = server.store.list_users().await.expect("users").len();

    // Without an invitation nobody registers.
    let (status, html) = page(&anonymous, "/ui/invitations/made-up-token").await;
    assert_eq!(status, 404);
    assert!(html.contains("This invitation link is not valid"), "{html}");
    let (status, _, _) = form(
        &anonymous,
        "/ui/invitations/made-up-token",
        &[("display_name", "Eve"), ("password", PASSWORD)],
    )
    .await;
    assert_eq!(status, 404);
    let (status, body) = anonymous
        .post(
            "/api/v1/invitations/accept",
            json!({"token": "made-up-token", "display_name": "Eve", "password": PASSWORD}),
        )
        .await;
    assert_eq!((status, code(&body)), (404, "invitation_not_found"));

    // Withdrawn on the members page.
    let revoked = invite(&owner, "rita@acme.test", "viewer", "7").await;
    let (_, list) = owner_api.get("/api/v1/orgs/acme/invitations").await;
    let id = list["items"][0]["id"].as_str().expect("id").to_string();
    assert_eq!(list["items"][0]["email"], "rita@acme.test");
    assert!(list["items"][0].get("token").is_none());
    let (status, location, _) = form(
        &owner,
        &format!("/ui/orgs/acme/settings/invitations/{id}/revoke"),
        &[],
    )
    .await;
    assert_eq!(
        (status, location.as_str()),
        (303, "/ui/orgs/acme/settings/members?done=revoked")
    );
    let (status, html) = page(&anonymous, &format!("/ui/invitations/{revoked}")).await;
    assert_eq!(status, 410);
    assert!(html.contains("was withdrawn"), "{html}");
    let (status, _, _) = form(
        &anonymous,
        &format!("/ui/invitations/{revoked}"),
        &[("display_name", "Rita"), ("password", PASSWORD)],
    )
    .await;
    assert_eq!(status, 410);
    assert_eq!(audit_count(&server, "invitation.revoked").await, 1);

    // Expired.
    let expired = invite(&owner, "eli@acme.test", "viewer", "1").await;
    sqlx::query("UPDATE invitations SET expires_at = 1 WHERE email = $1")
        .bind("eli@acme.test")
        .execute(server.store.pool())
        .await
        .expect("expire");
    let (status, html) = page(&anonymous, &format!("/ui/invitations/{expired}")).await;
    assert_eq!(status, 410);
    assert!(html.contains("has expired"), "{html}");
    let (status, body) = anonymous
        .post(
            "/api/v1/invitations/accept",
            json!({"token": expired, "display_name": "Eli", "password": PASSWORD}),
        )
        .await;
    assert_eq!((status, code(&body)), (410, "invitation_expired"));

    // Days outside 1-30 are refused.
    let (status, _, html) = form(
        &owner,
        "/ui/orgs/acme/settings/invitations",
        &[
            ("email", "x@acme.test"),
            ("role", "viewer"),
            ("expires_in_days", "31"),
        ],
    )
    .await;
    assert_eq!(status, 400);
    assert!(html.contains("1 to 30 days"), "{html}");

    assert_eq!(
        server.store.list_users().await.expect("users").len(),
        users_before,
        "no account was created"
    );
    // A cross-site post of the public form is refused before anything else.
    let live = invite(&owner, "cara@acme.test", "viewer", "7").await;
    let resp = anonymous
        .http
        .post(format!("{}/ui/invitations/{live}", server.base))
        .header("sec-fetch-site", "cross-site")
        .form(&[("display_name", "Cara"), ("password", PASSWORD)])
        .send()
        .await
        .expect("POST");
    assert_eq!(resp.status(), 403);
    assert!(
        server
            .store
            .user_by_email("cara@acme.test")
            .await
            .expect("db")
            .is_none()
    );
    server.stop().await;
}

async fn a_signed_in_person_joins_with_one_click(backend: Backend) {
    let server = TestServer::start(backend).await;
    let owner_api = server.owner().await;
    let _globex = server.other_org("globex").await;
    let owner = browser(&server, "owner@acme.test").await;
    let token = invite(&owner, "owner@globex.test", "auditor", "7").await;
    let link = format!("/ui/invitations/{token}");

    // Not signed in: told to sign in first, no account form.
    let (status, html) = page(&server.client(), &link).await;
    assert_eq!(status, 200);
    assert!(
        html.contains(r#"id="sign-in-first""#) && !html.contains("create-account"),
        "{html}"
    );
    // Signed in as someone else: told so.
    let (_, html) = page(&owner, &link).await;
    assert!(html.contains(r#"id="wrong-account""#), "{html}");
    let (status, _, _) = form(&owner, &format!("{link}/join"), &[]).await;
    assert_eq!(status, 403);
    assert_eq!(audit_count(&server, "invitation.refused").await, 1);
    // A public account form cannot take over the existing account.
    let (status, _, html) = form(
        &server.client(),
        &link,
        &[
            ("display_name", "Imposter"),
            ("password", "another long passphrase 7"),
        ],
    )
    .await;
    assert_eq!(status, 409, "{html}");
    assert!(html.contains("already exists"), "{html}");

    let gina = browser(&server, "owner@globex.test").await;
    let (_, html) = page(&gina, &link).await;
    assert!(html.contains(r#"id="join""#), "{html}");
    // Without the session's CSRF token the join is refused.
    let mut no_csrf = gina.clone();
    no_csrf.csrf = None;
    let (status, _, _) = form(&no_csrf, &format!("{link}/join"), &[]).await;
    assert_eq!(status, 403);
    let (status, location, _) = form(&gina, &format!("{link}/join"), &[]).await;
    assert_eq!((status, location.as_str()), (303, "/ui/orgs/acme/settings"));
    assert_eq!(role_of(&owner_api, "owner@globex.test").await, "auditor");
    let (status, html) = page(&gina, "/ui/orgs/acme/settings/members").await;
    assert_eq!(status, 200, "an auditor reads the members");
    assert!(
        !html.contains("role-form") && !html.contains("invite-form"),
        "{html}"
    );
    let (status, _) = page(&gina, &link).await;
    assert_eq!(status, 410);
    server.stop().await;
}

async fn an_admin_cannot_invite_an_owner(backend: Backend) {
    let server = TestServer::start(backend).await;
    let owner_api = server.owner().await;
    let admin_api = server
        .member(&owner_api, "acme", "ada@acme.test", "admin")
        .await;
    let admin = browser(&server, "ada@acme.test").await;
    let (_, html) = page(&admin, "/ui/orgs/acme/settings/members").await;
    let select = html
        .split(r#"<select id="invite-role" name="role">"#)
        .nth(1)
        .and_then(|s| s.split("</select>").next())
        .expect("role select");
    assert!(select.contains(r#"value="admin""#) && !select.contains(r#"value="owner""#));
    let (status, _, html) = form(
        &admin,
        "/ui/orgs/acme/settings/invitations",
        &[
            ("email", "boss@acme.test"),
            ("role", "owner"),
            ("expires_in_days", "7"),
        ],
    )
    .await;
    assert_eq!(status, 403, "{html}");
    assert!(html.contains("Only an owner can make, change or remove owners"));
    let (status, _) = admin_api
        .post(
            "/api/v1/orgs/acme/invitations",
            json!({"email": "boss@acme.test", "role": "owner"}),
        )
        .await;
    assert_eq!(status, 403);
    let (_, list) = owner_api.get("/api/v1/orgs/acme/invitations").await;
    assert_eq!(list["items"].as_array().map(Vec::len), Some(0));

    // The owner may; if the owner is then demoted, the invitation is no longer honoured.
    let (status, created) = owner_api
        .post(
            "/api/v1/orgs/acme/invitations",
            json!({"email": "boss@acme.test", "role": "owner", "expires_in_days": 3}),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    let url = created["url"].as_str().expect("url");
    assert_eq!(
        url,
        format!(
            "{}/ui/invitations/{}",
            server.config.public_url.trim_end_matches('/'),
            created["token"].as_str().expect("token")
        )
    );
    // Inviting a member or the same address twice is refused.
    let (status, _) = owner_api
        .post(
            "/api/v1/orgs/acme/invitations",
            json!({"email": "boss@acme.test", "role": "viewer"}),
        )
        .await;
    assert_eq!(status, 409);
    let (status, _) = owner_api
        .post(
            "/api/v1/orgs/acme/invitations",
            json!({"email": "ada@acme.test", "role": "viewer"}),
        )
        .await;
    assert_eq!(status, 409);
    let (status, body) = owner_api
        .post(
            "/api/v1/orgs/acme/members",
            json!({"email": "otto@acme.test", "role": "owner", "display_name": "Otto", "password": PASSWORD}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let owner_id = user_id(&owner_api, "owner@acme.test").await;
    let otto = server.client().login("otto@acme.test", PASSWORD).await;
    let (status, _) = otto
        .patch(
            &format!("/api/v1/orgs/acme/members/{owner_id}"),
            json!({"role": "viewer"}),
        )
        .await;
    assert_eq!(status, 200);
    let (status, body) = server
        .client()
        .post(
            "/api/v1/invitations/accept",
            json!({"token": created["token"], "display_name": "Boss", "password": PASSWORD}),
        )
        .await;
    assert_eq!(
        (status, code(&body)),
        (410, "invitation_withdrawn"),
        "{body}"
    );
    server.stop().await;
}

async fn api_tokens_made_on_the_page_work_and_are_shown_once(backend: Backend) {
    let server = TestServer::start(backend).await;
    let owner_api = server.owner().await;
    let owner = browser(&server, "owner@acme.test").await;
    let (status, html) = page(&owner, "/ui/orgs/acme/settings/tokens").await;
    assert_eq!(status, 200);
    assert!(html.contains(r#"value="member:read""#) && html.contains(r#"id="no-tokens""#));

    let (status, _, html) = form(
        &owner,
        "/ui/orgs/acme/settings/tokens",
        &[
            ("name", "CI members"),
            ("scopes", "org:read"),
            ("scopes", "member:read"),
            ("expires_in_days", "30"),
        ],
    )
    .await;
    assert_eq!(status, 201, "{html}");
    let secret = html
        .split(r#"id="new-token" type="text" readonly value=""#)
        .nth(1)
        .and_then(|s| s.split('"').next())
        .expect("the token")
        .to_string();
    assert!(secret.starts_with("flt_"), "{secret}");
    let bearer = owner_api.with_token(&secret);
    let (status, body) = bearer.get("/api/v1/orgs/acme/members").await;
    assert_eq!(status, 200, "{body}");
    // Only its scopes: no tokens of its own.
    let (status, _) = bearer.get("/api/v1/orgs/acme/tokens").await;
    assert_eq!(status, 403);

    // Never shown again; listed with its scopes and creator.
    let (_, html) = page(&owner, "/ui/orgs/acme/settings/tokens").await;
    assert!(!html.contains(&secret));
    let list = html.split(r#"id="tokens""#).nth(1).expect("token list");
    assert!(
        list.contains("CI members")
            && list.contains("org:read, member:read")
            && list.contains("owner@acme.test"),
        "{list}"
    );
    assert_eq!(audit_count(&server, "token.created").await, 1);

    // A bad scope is said on the page; nothing is created.
    let (status, _, html) = form(
        &owner,
        "/ui/orgs/acme/settings/tokens",
        &[
            ("name", "x"),
            ("scopes", "root:all"),
            ("expires_in_days", "30"),
        ],
    )
    .await;
    assert_eq!(status, 400);
    assert!(html.contains("Unknown scope `root:all`"), "{html}");
    let (status, _, html) = form(
        &owner,
        "/ui/orgs/acme/settings/tokens",
        &[("name", "none"), ("expires_in_days", "30")],
    )
    .await;
    assert_eq!(status, 400);
    assert!(html.contains("at least one scope"), "{html}");
    let (_, tokens) = owner_api.get("/api/v1/orgs/acme/tokens").await;
    assert_eq!(tokens["items"].as_array().map(Vec::len), Some(1));

    // Revoked on the page: the bearer is refused.
    let id = tokens["items"][0]["id"].as_str().expect("id");
    let (status, location, _) = form(
        &owner,
        &format!("/ui/orgs/acme/settings/tokens/{id}/revoke"),
        &[],
    )
    .await;
    assert_eq!(
        (status, location.as_str()),
        (303, "/ui/orgs/acme/settings/tokens?done=revoked")
    );
    let (status, _) = bearer.get("/api/v1/orgs/acme/members").await;
    assert_eq!(status, 401);
    let (_, html) = page(&owner, &location).await;
    assert!(
        html.contains(r#"<span class="tag">revoked</span>"#),
        "{html}"
    );
    server.stop().await;
}

async fn a_viewer_sees_no_forms_and_direct_posts_are_refused(backend: Backend) {
    let server = TestServer::start(backend).await;
    let owner_api = server.owner().await;
    server
        .member(&owner_api, "acme", "vic@acme.test", "viewer")
        .await;
    let owner = browser(&server, "owner@acme.test").await;
    let pending = invite(&owner, "pat@acme.test", "viewer", "7").await;
    let (_, list) = owner_api.get("/api/v1/orgs/acme/invitations").await;
    let invitation_id = list["items"][0]["id"].as_str().expect("id").to_string();
    let owner_id = user_id(&owner_api, "owner@acme.test").await;
    let (_, token) = owner_api
        .post(
            "/api/v1/orgs/acme/tokens",
            json!({"name": "kept", "scopes": ["org:read"]}),
        )
        .await;
    let token_id = token["info"]["id"].as_str().expect("id").to_string();

    let vic = browser(&server, "vic@acme.test").await;
    let (status, html) = page(&vic, "/ui/orgs/acme/settings").await;
    assert_eq!(status, 200);
    assert!(html.contains("Acme") && html.contains("Sign-in providers"));
    // The only form is the sign-out button of the header.
    assert_eq!(html.matches("<form").count(), 1, "{html}");
    assert!(!html.contains("settings/members") && !html.contains("settings/tokens"));
    for path in [
        "/ui/orgs/acme/settings/members",
        "/ui/orgs/acme/settings/tokens",
    ] {
        let (status, _) = page(&vic, path).await;
        assert_eq!(status, 403, "{path}");
    }
    let posts: Vec<(String, Vec<(&str, &str)>)> = vec![
        (
            "/ui/orgs/acme/settings".into(),
            vec![("require_2fa", "false"), ("name", "Pwned")],
        ),
        (
            format!("/ui/orgs/acme/settings/members/{owner_id}/role"),
            vec![("role", "viewer")],
        ),
        (
            format!("/ui/orgs/acme/settings/members/{owner_id}/remove"),
            vec![],
        ),
        (
            "/ui/orgs/acme/settings/invitations".into(),
            vec![("email", "evil@acme.test"), ("role", "viewer")],
        ),
        (
            format!("/ui/orgs/acme/settings/invitations/{invitation_id}/revoke"),
            vec![],
        ),
        (
            "/ui/orgs/acme/settings/tokens".into(),
            vec![("name", "mine"), ("scopes", "org:read")],
        ),
        (
            format!("/ui/orgs/acme/settings/tokens/{token_id}/revoke"),
            vec![],
        ),
    ];
    for (path, fields) in &posts {
        let (status, _, html) = form(&vic, path, fields).await;
        assert_eq!(status, 403, "{path}: {html}");
        assert!(html.contains("needs the"), "{path}: {html}");
    }
    // Nothing changed.
    let (_, org) = owner_api.get("/api/v1/orgs/acme").await;
    assert_eq!(org["name"], "Acme");
    assert_eq!(role_of(&owner_api, "owner@acme.test").await, "owner");
    let (_, list) = owner_api.get("/api/v1/orgs/acme/invitations").await;
    assert_eq!(list["items"].as_array().map(Vec::len), Some(1));
    let (_, tokens) = owner_api.get("/api/v1/orgs/acme/tokens").await;
    assert_eq!(tokens["items"].as_array().map(Vec::len), Some(1));
    assert!(tokens["items"][0]["revoked_at"].is_null());
    let (status, _) = page(&server.client(), &format!("/ui/invitations/{pending}")).await;
    assert_eq!(status, 200, "the invitation still works");
    server.stop().await;
}

async fn another_organisations_settings_are_not_found(backend: Backend) {
    let server = TestServer::start(backend).await;
    let owner_api = server.owner().await;
    let _ = server.other_org("globex").await;
    let owner = browser(&server, "owner@acme.test").await;
    let stranger = browser(&server, "owner@globex.test").await;
    for path in [
        "/ui/orgs/acme/settings",
        "/ui/orgs/acme/settings/members",
        "/ui/orgs/acme/settings/tokens",
    ] {
        let (status, html) = page(&stranger, path).await;
        assert_eq!(status, 404, "{path}");
        assert!(html.contains("<h1>Not found</h1>"), "{path}: {html}");
    }
    // Acme's invitation id under globex's path names nothing there.
    invite(&owner, "pat@acme.test", "viewer", "7").await;
    let (_, list) = owner_api.get("/api/v1/orgs/acme/invitations").await;
    let id = list["items"][0]["id"].as_str().expect("id").to_string();
    let (status, _, _) = form(
        &stranger,
        &format!("/ui/orgs/globex/settings/invitations/{id}/revoke"),
        &[],
    )
    .await;
    assert_eq!(status, 404);
    let (_, list) = owner_api.get("/api/v1/orgs/acme/invitations").await;
    assert_eq!(list["items"].as_array().map(Vec::len), Some(1));
    server.stop().await;
}

async fn the_settings_page_lists_the_servers_sign_in_providers(backend: Backend) {
    // None configured: said so.
    let plain = TestServer::start(backend).await;
    let _ = plain.owner().await;
    let owner = browser(&plain, "owner@acme.test").await;
    let (_, html) = page(&owner, "/ui/orgs/acme/settings").await;
    assert!(html.contains(r#"id="no-providers""#), "{html}");
    plain.stop().await;

    let server = TestServer::start_with(backend, |c| {
        let github: flowlink_control::config::OAuthProviderConfig = toml::from_str(
            "kind = \"github\"\nclient_id = \"Iv1.gh\"\nclient_secret = \"gh-secret-value\"\n",
        )
        .expect("github");
        let corp: flowlink_control::config::OAuthProviderConfig = toml::from_str(
            "kind = \"oidc\"\nclient_id = \"corp-id\"\nclient_secret = \"corp-secret-value\"\n\
             display_name = \"Acme SSO\"\nissuer = \"https://login.acme.example\"\n\
             authorize_url = \"https://login.acme.example/authorize\"\n\
             token_url = \"https://login.acme.example/token\"\n\
             jwks_url = \"https://login.acme.example/jwks\"\n",
        )
        .expect("oidc");
        c.oauth.insert("github".into(), github);
        c.oauth.insert("corp".into(), corp);
    })
    .await;
    let _ = server.owner().await;
    server
        .member(
            &server.client().login("owner@acme.test", PASSWORD).await,
            "acme",
            "vic@acme.test",
            "viewer",
        )
        .await;
    // Read-only, so every member who may read the organisation sees it.
    let vic = browser(&server, "vic@acme.test").await;
    let (status, html) = page(&vic, "/ui/orgs/acme/settings").await;
    assert_eq!(status, 200);
    let table = html
        .split(r#"<table id="providers""#)
        .nth(1)
        .and_then(|s| s.split("</table>").next())
        .expect("providers table");
    assert!(
        table.contains("<code>github</code>") && table.contains("github.com"),
        "{table}"
    );
    assert!(
        table.contains("<code>corp</code>")
            && table.contains("oidc")
            && table.contains("Acme SSO")
            && table.contains("https://login.acme.example"),
        "{table}"
    );
    // Where they are set, never what the secrets are.
    assert!(
        html.contains("FLOWLINK_OAUTH_&lt;NAME&gt;_CLIENT_SECRET") && html.contains("CONFIG.md")
    );
    assert!(
        !html.contains("secret-value") && !html.contains("Iv1.gh"),
        "{html}"
    );
    server.stop().await;
}
