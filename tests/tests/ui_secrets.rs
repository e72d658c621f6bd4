//! The secrets page in a real headless Chromium against the real control plane binary: the
//! page's sealing code (`static/secrets.js`, WebCrypto X25519 + HMAC-SHA256 + AES-GCM) gives
//! RFC 9180 A.1.1's exact `enc` and ciphertext, and flowlink-proto's known answers for our
//! AES-256-GCM suite and for a secret's context; then an owner signs in through the pages, types
//! a value into the secrets page and submits it. The value stored is a sealed box that opens,
//! with the org private key held by this test, to exactly what was typed, and the plaintext is
//! in neither the control plane's SQLite files nor its log. A rotation on the secret's own page
//! does the same for version 2. In a browser without X25519 in WebCrypto, and in one without
//! JavaScript, the form stays off and the notice naming the CLI command is shown. Screenshots go
//! to `target/ui-screenshots/ui_secrets-*.png`.

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use flowlink_e2e::browser::{Browser, SignedIn};
use flowlink_e2e::link::{Control, OWNER, wait_until};
use flowlink_proto::sealed::{OrgSecretKey, SealContext, SealedBox, open, seal};
use serde_json::{Value, json};

// RFC 9180 Appendix A.1.1: DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, AES-128-GCM, mode_base.
const A1_INFO: &str = "4f6465206f6e2061204772656369616e2055726e";
const A1_PK_RM: &str = "3948cfe0ad1ddb695d780e59077195da6c56506b027329794ab02bca80815c4d";
const A1_SK_EM: &str = "52c4a758a802cd8b936eceea314432798d5baf2d7e9235dc084ab1b9cfa2f736";
const A1_ENC: &str = "37fda3567bdbd628e88668c3c8d7e97d1d1253b6d4ea6d44c150f741f1bf4431";
const A1_PT: &str = "4265617574792069732074727574682c20747275746820626561757479";
const A1_AAD_0: &str = "436f756e742d30";
const A1_CT_0: &str =
    "f938558b5d72f1a23810b4be2ab4f84331acc02fc97babc53a52ae8218a355a96d8770ac83d07bea87e13c512a";
// flowlink-proto's known answer for our suite (AES-256-GCM) with the same keys and inputs.
const OURS_RAW_CT: &str =
    "090b7dc225419f7da9e8b460becfbb96a26c7964d79b8010d397fa838530a32a397b14f5776db19ff5e57734e0";
// flowlink-proto's known answer for `SealContext::Secret{org_1, GITHUB_TOKEN, 1, 1}`.
const SECRET_CONTEXT: &str = "00000012666c6f776c696e6b2d7365616c65642d76310000002168706b652d626173652d7832353531392d7368613235362d61657332353667636d00000006736563726574000000056f72675f310000000c4749544855425f544f4b454e00000001310000000131";
const SECRET_ENC_B64: &str = "N/2jVnvb1ijohmjDyNfpfR0SU7bU6m1EwVD3QfG/RDE=";
const SECRET_CT_B64: &str = "G7FoeotZoeZUd9ZsdQK+2gAmeN7VHgGPlHJggvU+FSS8";

/// Runs `FlowLinkSeal.sealWithEphemeral` in the page; `{enc, ct}` in hex.
fn seal_in_page(browser: &Browser, vector: Value) -> Value {
    let out = browser.execute_async(
        "var done = arguments[arguments.length - 1];
         FlowLinkSeal.sealWithEphemeral(arguments[0]).then(done, function (e) { done({error: String(e)}); });",
        json!([vector]),
    );
    assert!(
        out.get("error").is_none(),
        "sealing in the page failed: {out}"
    );
    out
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// First-run set-up of the owner and `acme`, through the API.
fn set_up_owner(control: &Control) {
    let (status, body) = {
        let http = reqwest::blocking::Client::new();
        let resp = http
            .post(format!("{}/api/v1/setup", control.url))
            .json(
                &json!({"token": control.setup_token(), "email": OWNER.0, "password": OWNER.1,
                          "display_name": "Olive Owner", "org_name": "Acme", "org_slug": "acme"}),
            )
            .send()
            .expect("setup");
        (resp.status().as_u16(), resp.text().unwrap_or_default())
    };
    assert_eq!(status, 201, "setup: {body}");
}

/// Sets up acme's key version 1, wrapped to a custodian of the owner; returns the org key.
fn set_up_key(owner: &SignedIn, org_id: &str) -> OrgSecretKey {
    let custodian = OrgSecretKey::generate();
    let (status, body) = owner.post(
        "/api/v1/orgs/acme/secrets/custodians",
        json!({"name": "e2e custodian", "public_key": custodian.public_key().to_base64()}),
    );
    assert_eq!(status, 201, "custodian: {body}");
    let recipient = format!("custodian:{}", body["id"].as_str().expect("id"));
    let org = OrgSecretKey::generate();
    let wrapped = seal(
        &custodian.public_key(),
        &SealContext::OrgKey {
            org_id,
            key_version: 1,
            recipient: &recipient,
        },
        org.to_bytes().as_ref(),
    )
    .expect("wrap");
    let (status, body) = owner.post(
        "/api/v1/orgs/acme/secrets/key",
        json!({"public_key": org.public_key().to_base64(), "previous_version": null,
               "wraps": [{"recipient": recipient, "wrapped": wrapped}]}),
    );
    assert_eq!(status, 201, "key: {body}");
    org
}

/// The stored box of `name`, opened with the org key: (version, value).
fn stored_value(owner: &SignedIn, org: &OrgSecretKey, org_id: &str, name: &str) -> (u64, String) {
    let (status, body) = owner.get("/api/v1/orgs/acme/secrets/sealed");
    assert_eq!(status, 200, "{body}");
    let item = body["items"]
        .as_array()
        .and_then(|items| items.iter().find(|i| i["name"] == name))
        .unwrap_or_else(|| panic!("{name} is stored: {body}"))
        .clone();
    let sealed: SealedBox = serde_json::from_value(item["sealed"].clone()).expect("sealed box");
    let version = item["version"].as_u64().expect("version");
    let key_version = u32::try_from(item["key_version"].as_u64().expect("key version"))
        .expect("key version fits");
    let value = open(
        org,
        &SealContext::Secret {
            org_id,
            name,
            version,
            key_version,
        },
        &sealed,
    )
    .expect("what the browser sealed opens with the org key");
    (
        version,
        String::from_utf8(value.to_vec()).expect("the value is UTF-8"),
    )
}

/// Every file of the SQLite database (the main file, its WAL and shared memory).
fn database_bytes(dir: &std::path::Path) -> Vec<(String, Vec<u8>)> {
    std::fs::read_dir(dir)
        .expect("data dir")
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with("control.db"))
        .map(|e| {
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).expect("read database file"),
            )
        })
        .collect()
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// Waits until the page's script has found X25519 and switched the form on.
fn wait_ready(browser: &Browser) {
    wait_until(
        "the sealing form to be switched on",
        Duration::from_secs(20),
        || (browser.attribute("#seal-form", "data-ready").as_deref() == Some("true")).then_some(()),
    );
}

#[test]
fn a_value_typed_in_the_browser_is_sealed_there_and_opens_only_with_the_org_key() {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = format!("sqlite://{}/control.db", dir.path().display());
    let control = Control::start(&db, dir.path());
    set_up_owner(&control);
    let owner = SignedIn::login(&control.url, OWNER);
    let (_, acme) = owner.get("/api/v1/orgs/acme");
    let org_id = acme["id"].as_str().expect("org id").to_owned();
    let org = set_up_key(&owner, &org_id);

    let browser = Browser::start("ui_secrets");
    browser.sign_in(&control.url, OWNER);
    browser.goto(&format!("{}/ui/orgs/acme/secrets", control.url));
    wait_ready(&browser);
    // The notice naming the CLI is hidden once the browser can seal; the form is usable.
    assert_eq!(
        browser.attribute("#seal-unsupported", "hidden").as_deref(),
        Some("true")
    );
    assert_eq!(browser.attribute("#seal-fields", "disabled"), None);

    // The page's HPKE against RFC 9180 A.1.1 (AES-128-GCM): the exact enc and ciphertext.
    let rfc = seal_in_page(
        &browser,
        json!({"aead": "aes-128-gcm", "recipient": A1_PK_RM, "ephemeral": A1_SK_EM,
               "info": A1_INFO, "aad": A1_AAD_0, "plaintext": A1_PT}),
    );
    assert_eq!(rfc["enc"], A1_ENC, "{rfc}");
    assert_eq!(rfc["ct"], A1_CT_0, "{rfc}");
    // Our suite (AES-256-GCM) with the same inputs: flowlink-proto's known answer.
    let ours = seal_in_page(
        &browser,
        json!({"aead": "aes-256-gcm", "recipient": A1_PK_RM, "ephemeral": A1_SK_EM,
               "info": A1_INFO, "aad": A1_AAD_0, "plaintext": A1_PT}),
    );
    assert_eq!(
        (ours["enc"].as_str(), ours["ct"].as_str()),
        (Some(A1_ENC), Some(OURS_RAW_CT))
    );
    // A secret's context, encoded by the page, and the box sealed for it: byte for byte
    // flowlink-proto's `seal_with_ephemeral`.
    let context = browser.execute(
        "var c = FlowLinkSeal.secretContext('org_1', 'GITHUB_TOKEN', '1', '1');
         return Array.from(c).map(function (b) { return (b < 16 ? '0' : '') + b.toString(16); }).join('');",
        json!([]),
    );
    assert_eq!(context, SECRET_CONTEXT);
    let boxed = seal_in_page(
        &browser,
        json!({"aead": "aes-256-gcm", "recipient": A1_PK_RM, "ephemeral": A1_SK_EM,
               "info": SECRET_CONTEXT, "aad": SECRET_CONTEXT,
               "plaintext": hex(b"ghp_example_value")}),
    );
    assert_eq!(
        boxed["enc"].as_str(),
        Some(hex(&STANDARD.decode(SECRET_ENC_B64).expect("b64")).as_str())
    );
    assert_eq!(
        boxed["ct"].as_str(),
        Some(hex(&STANDARD.decode(SECRET_CT_B64).expect("b64")).as_str())
    );

    // A person adds a secret through the page.
    let typed = "ghp_typed_in_the_browser_4f1c9a27e3";
    browser.fill("#secret-name", "E2E_BROWSER_TOKEN");
    browser.fill("#secret-value", typed);
    browser.fill("#secret-services", "everything");
    browser.fill("#secret-labels", "env=e2e");
    browser.fill("#secret-description", "typed in a browser");
    browser.window_size(1280, 1900);
    browser.screenshot("secrets-form");
    browser.click("#seal-submit");
    browser.wait_path("/ui/orgs/acme/secrets/E2E_BROWSER_TOKEN");
    assert_eq!(browser.text("#secret-version"), "1");
    assert!(
        browser.text("#history").contains("created"),
        "the version history"
    );
    assert!(!browser.text("body").contains(typed));

    // What was stored opens with the org key, and only to what was typed.
    assert_eq!(
        stored_value(&owner, &org, &org_id, "E2E_BROWSER_TOKEN"),
        (1, typed.to_owned())
    );
    let (_, meta) = owner.get("/api/v1/orgs/acme/secrets/E2E_BROWSER_TOKEN");
    assert_eq!(
        (&meta["services"], &meta["labels"], &meta["description"]),
        (
            &json!(["everything"]),
            &json!({"env": "e2e"}),
            &json!("typed in a browser")
        )
    );

    // Rotation on the secret's page: the new value is version 2, the scope kept.
    wait_ready(&browser);
    let rotated = "ghp_rotated_in_the_browser_90b2d";
    // From the keyboard this time: Enter in the value field submits the form (WebDriver's
    // Enter key is U+E007).
    browser.fill("#secret-value", &format!("{rotated}\u{E007}"));
    wait_until("version 2", Duration::from_secs(20), || {
        (browser.try_text("#secret-version").as_deref() == Some("2")).then_some(())
    });
    assert_eq!(
        stored_value(&owner, &org, &org_id, "E2E_BROWSER_TOKEN"),
        (2, rotated.to_owned())
    );
    let (_, meta) = owner.get("/api/v1/orgs/acme/secrets/E2E_BROWSER_TOKEN");
    assert_eq!(meta["labels"], json!({"env": "e2e"}));
    browser.screenshot("secret-page");

    // The list: metadata only.
    browser.goto(&format!("{}/ui/orgs/acme/secrets", control.url));
    wait_ready(&browser);
    let list = browser.text("#secrets");
    assert!(
        list.contains("E2E_BROWSER_TOKEN") && list.contains("env=e2e"),
        "{list}"
    );
    assert!(!browser.text("body").contains(typed) && !browser.text("body").contains(rotated));
    browser.window_size(1280, 1900);
    browser.screenshot("secrets");
    browser.window_size(390, 2400);
    browser.screenshot("secrets-phone");

    // Neither value is anywhere in the control plane's database files or its log.
    let files = database_bytes(dir.path());
    assert!(
        files.iter().any(|(name, _)| name == "control.db"),
        "the database file is where the test looks: {:?}",
        files.iter().map(|(n, _)| n).collect::<Vec<_>>()
    );
    for (name, bytes) in &files {
        for value in [typed, rotated] {
            assert!(
                !contains(bytes, value.as_bytes()),
                "{name} holds a plaintext value"
            );
        }
    }
    let logs = control.logs();
    assert!(
        !logs.contains(typed) && !logs.contains(rotated),
        "the log holds a value"
    );

    // A browser whose WebCrypto has no X25519: the form stays off and the page says to use the
    // CLI, with the command.
    let old = Browser::start("ui_secrets");
    old.sign_in(&control.url, OWNER);
    old.cdp(
        "Page.addScriptToEvaluateOnNewDocument",
        json!({"source": NO_X25519}),
    );
    old.goto(&format!("{}/ui/orgs/acme/secrets", control.url));
    wait_until(
        "the script to find no X25519",
        Duration::from_secs(20),
        || (old.attribute("#seal-form", "data-ready").as_deref() == Some("false")).then_some(()),
    );
    assert_unusable(&old);
    old.window_size(1280, 1900);
    old.screenshot("secrets-no-x25519");

    // A browser without JavaScript: the same.
    let noscript = Browser::start("ui_secrets");
    noscript.sign_in(&control.url, OWNER);
    noscript.cdp(
        "Emulation.setScriptExecutionDisabled",
        json!({"value": true}),
    );
    noscript.goto(&format!("{}/ui/orgs/acme/secrets", control.url));
    noscript.find("#seal-form");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        noscript.attribute("#seal-form", "data-ready"),
        None,
        "no script ran"
    );
    assert_unusable(&noscript);
    noscript.window_size(1280, 1900);
    noscript.screenshot("secrets-noscript");
}

/// Takes X25519 away from WebCrypto, as in a browser that predates it.
const NO_X25519: &str = "(function () {
  var subtle = window.crypto && window.crypto.subtle;
  if (!subtle) { return; }
  var generateKey = subtle.generateKey.bind(subtle);
  subtle.generateKey = function (algorithm) {
    var name = String((algorithm && algorithm.name) || algorithm).toUpperCase();
    if (name === 'X25519') {
      return Promise.reject(new DOMException('Algorithm: Unrecognized name', 'NotSupportedError'));
    }
    return generateKey.apply(null, arguments);
  };
})();";

/// The set form cannot be used and the notice with the CLI command is shown.
fn assert_unusable(browser: &Browser) {
    let notice = browser.text("#seal-unsupported");
    assert!(
        notice.contains("works only with JavaScript")
            && notice.contains("--org acme put NAME --service SERVICE"),
        "the notice is visible with the command: {notice:?}"
    );
    assert_eq!(
        browser.attribute("#seal-fields", "disabled").as_deref(),
        Some("true"),
        "the form's fields are off"
    );
}
