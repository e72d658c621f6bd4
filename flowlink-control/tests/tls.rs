//! The control plane terminating TLS itself (rustls): given `tls_cert` and `tls_key` it speaks
//! HTTPS only, its cookies are `Secure` and its responses carry HSTS; a missing certificate or
//! key stops start-up with a message naming the file.
//!
//! The test certificate is made with the `openssl` command (Debian's `openssl` package; `.ci/run`
//! installs it when absent): a self-signed leaf for `localhost` and `127.0.0.1`, which the
//! client below trusts as its only root, so the handshake is verified, not waved through.

mod support;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use flowlink_control::api::AppState;
use flowlink_control::config::{Config, TlsFiles};
use flowlink_control::server::{self, Server, ServerError};
use flowlink_control::store::Backend;
use serde_json::json;
use support::{PASSWORD, TestServer, make_cert, read};

/// A client that trusts exactly `cert` (no built-in roots, no shortcuts).
fn verifying_client(cert: &Path) -> reqwest::Client {
    let pem = std::fs::read(cert).expect("read cert");
    let root = reqwest::Certificate::from_pem(&pem).expect("parse cert");
    reqwest::Client::builder()
        .tls_certs_only([root])
        .https_only(true)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_with_secure_cookies_and_hsts() {
    let certs = tempfile::tempdir().expect("tempdir");
    let files = make_cert(certs.path());
    let cert_path = files.cert.clone();
    let srv = TestServer::start_with(Backend::Sqlite, |c| c.tls = Some(files)).await;
    assert!(srv.base.starts_with("https://"), "{}", srv.base);
    let http = verifying_client(&cert_path);

    // The handshake verifies against our certificate, and even /healthz says "HTTPS only".
    let resp = http
        .get(format!("{}/healthz", srv.base))
        .send()
        .await
        .expect("HTTPS request to the server with our certificate");
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()
            .get("strict-transport-security")
            .and_then(|v| v.to_str().ok()),
        Some("max-age=31536000; includeSubDomains")
    );

    // First-run set-up and a sign-in over HTTPS: the session cookie is Secure.
    let token = srv.setup_token.clone().expect("setup token");
    let resp = http
        .post(format!("{}/api/v1/setup", srv.base))
        .json(
            &json!({"token": token, "email": "owner@acme.test", "password": PASSWORD,
                      "display_name": "Olive", "org_name": "Acme", "org_slug": "acme"}),
        )
        .send()
        .await
        .expect("setup");
    assert_eq!(resp.status(), 201);
    let resp = http
        .post(format!("{}/api/v1/auth/login", srv.base))
        .json(&json!({"email": "owner@acme.test", "password": PASSWORD}))
        .send()
        .await
        .expect("login");
    assert_eq!(resp.status(), 200);
    assert!(resp.headers().contains_key("strict-transport-security"));
    let cookie = resp
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with("flowlink_session="))
        .map(str::to_string)
        .expect("session cookie");
    assert!(cookie.contains("; Secure"), "{cookie}");
    assert!(cookie.contains("; HttpOnly"), "{cookie}");

    // The cookie works over HTTPS.
    let value = cookie.split(';').next().unwrap_or_default().to_string();
    let resp = http
        .get(format!("{}/api/v1/me", srv.base))
        .header("cookie", value)
        .send()
        .await
        .expect("me");
    let (status, body) = read(resp).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["user"]["email"], "owner@acme.test");

    // A client that does not trust the certificate is refused by its own TLS stack.
    let stranger = reqwest::Client::builder()
        .tls_certs_only(Vec::new())
        .build()
        .expect("client");
    assert!(
        stranger
            .get(format!("{}/healthz", srv.base))
            .send()
            .await
            .is_err(),
        "a client without our root must not complete the handshake"
    );
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_http_to_the_https_port_gets_no_http_answer() {
    let certs = tempfile::tempdir().expect("tempdir");
    let files = make_cert(certs.path());
    let srv = TestServer::start_with(Backend::Sqlite, |c| c.tls = Some(files)).await;

    // An HTTP client speaking plain HTTP gets an error, not a page.
    let plain = reqwest::Client::new();
    let result = plain
        .get(format!("http://{}/healthz", srv.addr))
        .send()
        .await;
    assert!(
        result.is_err(),
        "plain HTTP to the HTTPS port answered: {result:?}"
    );

    // On the wire: whatever comes back (a TLS alert or nothing) is not HTTP.
    let addr = srv.addr;
    let bytes = tokio::task::spawn_blocking(move || {
        let mut s = std::net::TcpStream::connect(addr).expect("connect");
        s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
            .expect("timeout");
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            .expect("write");
        let mut buf = Vec::new();
        let _ = s.read_to_end(&mut buf);
        buf
    })
    .await
    .expect("join");
    assert!(
        !bytes.starts_with(b"HTTP/"),
        "got an HTTP answer: {:?}",
        String::from_utf8_lossy(&bytes)
    );
    srv.stop().await;
}

async fn bind_with(tls: TlsFiles) -> Result<Server, ServerError> {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let db = tempfile::tempdir().expect("tempdir");
    let mut config = Config::for_data_dir(db.path());
    config.listen = "127.0.0.1:0".parse().expect("addr");
    config.tls = Some(tls);
    let store = server::open_store(&config).await.expect("store");
    Server::bind(AppState::new(store, config)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_or_bad_certificate_files_are_named() {
    let certs = tempfile::tempdir().expect("tempdir");
    let good = make_cert(certs.path());
    let missing = PathBuf::from("/nonexistent/flowlink/cert.pem");

    let e = bind_with(TlsFiles {
        cert: missing.clone(),
        key: good.key.clone(),
    })
    .await
    .err()
    .expect("a missing certificate must stop start-up")
    .to_string();
    assert!(
        e.contains("TLS certificate file /nonexistent/flowlink/cert.pem") && e.contains("tls_cert"),
        "{e}"
    );

    let e = bind_with(TlsFiles {
        cert: good.cert.clone(),
        key: PathBuf::from("/nonexistent/flowlink/key.pem"),
    })
    .await
    .err()
    .expect("a missing key must stop start-up")
    .to_string();
    assert!(
        e.contains("TLS private key file /nonexistent/flowlink/key.pem") && e.contains("tls_key"),
        "{e}"
    );

    // A file that is there but is not a certificate: both paths are named.
    let junk = certs.path().join("junk.pem");
    std::fs::write(&junk, "not a certificate\n").expect("write");
    let e = bind_with(TlsFiles {
        cert: junk.clone(),
        key: good.key.clone(),
    })
    .await
    .err()
    .expect("a file without a certificate must stop start-up")
    .to_string();
    assert!(e.contains(&junk.display().to_string()), "{e}");

    // The binary: exits non-zero and says which file.
    let data = tempfile::tempdir().expect("tempdir");
    let out = Command::new(env!("CARGO_BIN_EXE_flowlink-control"))
        .env_clear()
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data.path())
        .arg("--tls-cert")
        .arg(&missing)
        .arg("--tls-key")
        .arg(&good.key)
        .output()
        .expect("run flowlink-control");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("cannot read the TLS certificate file /nonexistent/flowlink/cert.pem"),
        "{stderr}"
    );
}
