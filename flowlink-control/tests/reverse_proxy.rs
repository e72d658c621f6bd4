//! The nginx example (`installers/nginx-flowlink-control.conf`) really works: real nginx runs
//! that file, with only its ports, certificate paths, upstream and ACME root substituted, in
//! front of an in-process control plane. Checked: the client address a sign-in records is the
//! one nginx forwards (and a client's own `X-Forwarded-For` is walked correctly), the session
//! cookie is `Secure` and HSTS is sent because the client used https at nginx, the proxies'
//! WebSocket link passes through; and a server that does not trust its peer ignores forged
//! forwarding headers.
//!
//! nginx comes from Debian (`nginx-light`; `.ci/run` installs it). Without it this test fails
//! rather than skips: the example would otherwise ship untested.
//!
//! A second loopback address (127.0.0.2, part of 127.0.0.0/8 on Linux) is used as the source
//! address of a "remote" client so that its address differs from nginx's own; every connection
//! still goes to 127.0.0.1.

mod support;

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use flowlink_control::config::TlsFiles;
use flowlink_control::store::Backend;
use flowlink_proto::link::{ControlMessage, Hello, LINK_VERSION, ProxyMessage};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use support::{PASSWORD, TestServer, make_cert, read};
use tokio_tungstenite::tungstenite::Message;

/// The example, relative to this crate.
fn example() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../installers/nginx-flowlink-control.conf")
}

fn nginx_binary() -> PathBuf {
    for candidate in ["/usr/sbin/nginx", "/usr/bin/nginx", "/usr/local/sbin/nginx"] {
        if Path::new(candidate).exists() {
            return PathBuf::from(candidate);
        }
    }
    if let Ok(out) = Command::new("sh").args(["-c", "command -v nginx"]).output() {
        let p = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if out.status.success() && !p.is_empty() {
            return PathBuf::from(p);
        }
    }
    panic!(
        "nginx is not installed, so the reverse-proxy example cannot be tested: install it with \
         `apt-get install nginx-light` (Debian/Ubuntu; .ci/run does this)"
    )
}

/// Two distinct free ports on 127.0.0.1 (bound together, read, released; nginx binds them
/// right after).
fn free_ports() -> (u16, u16) {
    let bind = || std::net::TcpListener::bind("127.0.0.1:0").expect("free port");
    let (a, b) = (bind(), bind());
    let port = |l: &std::net::TcpListener| l.local_addr().expect("addr").port();
    (port(&a), port(&b))
}

/// Replaces `from` by `to`, requiring exactly `times` occurrences so that a changed example
/// fails here instead of being tested half-substituted.
fn substitute(text: &str, from: &str, to: &str, times: usize) -> String {
    let found = text.matches(from).count();
    assert_eq!(
        found, times,
        "the nginx example has `{from}` {found} times, the test expects {times}: update \
         tests/reverse_proxy.rs together with installers/nginx-flowlink-control.conf"
    );
    text.replace(from, to)
}

/// nginx running the example, killed on drop.
struct Nginx {
    child: Child,
    https: u16,
    http: u16,
    dir: tempfile::TempDir,
}

impl Nginx {
    /// Starts nginx on two free ports; tries new ports when another process took one of them
    /// between our probe and nginx's bind (tests run in parallel).
    fn start(upstream: SocketAddr, cert: &TlsFiles) -> Nginx {
        for _ in 0..4 {
            match Nginx::try_start(upstream, cert) {
                Ok(n) => return n,
                Err(log) if log.contains("Address already in use") => continue,
                Err(log) => panic!("nginx exited:\n{log}"),
            }
        }
        panic!("nginx found no free ports in four attempts")
    }

    fn try_start(upstream: SocketAddr, cert: &TlsFiles) -> Result<Nginx, String> {
        let bin = nginx_binary();
        let dir = tempfile::tempdir().expect("tempdir");
        let (https, http) = free_ports();
        let site = std::fs::read_to_string(example()).expect("read the nginx example");
        let site = substitute(
            &site,
            "listen 443 ssl http2;",
            &format!("listen 127.0.0.1:{https} ssl http2;"),
            1,
        );
        let site = substitute(&site, "listen [::]:443 ssl http2;", "", 1);
        let site = substitute(&site, "listen 80;", &format!("listen 127.0.0.1:{http};"), 1);
        let site = substitute(&site, "listen [::]:80;", "", 1);
        let site = substitute(
            &site,
            "server 127.0.0.1:8080;",
            &format!("server {upstream};"),
            1,
        );
        let site = substitute(
            &site,
            "/etc/letsencrypt/live/flowlink.example.com/fullchain.pem",
            &cert.cert.display().to_string(),
            1,
        );
        let site = substitute(
            &site,
            "/etc/letsencrypt/live/flowlink.example.com/privkey.pem",
            &cert.key.display().to_string(),
            1,
        );
        let site = substitute(
            &site,
            "root /var/www/html;",
            &format!("root {};", dir.path().display()),
            1,
        );
        std::fs::write(dir.path().join("site.conf"), site).expect("write site");
        // The main file a distribution would provide, reduced to what a test needs: one
        // foreground process, every path inside the temporary directory.
        let d = dir.path().display();
        let main = format!(
            "daemon off;\nmaster_process off;\nworker_processes 1;\npid {d}/nginx.pid;\n\
             error_log {d}/error.log info;\n\
             events {{ worker_connections 256; }}\n\
             http {{\n  access_log {d}/access.log;\n\
               client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n\
               fastcgi_temp_path {d}/fastcgi;\n  uwsgi_temp_path {d}/uwsgi;\n\
               scgi_temp_path {d}/scgi;\n  include {d}/site.conf;\n}}\n"
        );
        std::fs::write(dir.path().join("nginx.conf"), main).expect("write nginx.conf");
        let check = Command::new(&bin)
            .arg("-t")
            .arg("-p")
            .arg(dir.path())
            .arg("-c")
            .arg(dir.path().join("nginx.conf"))
            .arg("-e")
            .arg(dir.path().join("error.log"))
            .output()
            .expect("nginx -t");
        assert!(
            check.status.success(),
            "nginx rejects the example:\n{}",
            String::from_utf8_lossy(&check.stderr)
        );
        let child = Command::new(&bin)
            .arg("-p")
            .arg(dir.path())
            .arg("-c")
            .arg(dir.path().join("nginx.conf"))
            .arg("-e")
            .arg(dir.path().join("error.log"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start nginx");
        let mut n = Nginx {
            child,
            https,
            http,
            dir,
        };
        n.wait_listening()?;
        Ok(n)
    }

    /// Waits until nginx accepts on both ports; `Err(error log)` when it exits first.
    fn wait_listening(&mut self) -> Result<(), String> {
        let started = std::time::Instant::now();
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!("({status}) {}", self.log()));
            }
            let up = [self.https, self.http].iter().all(|p| {
                std::net::TcpStream::connect(SocketAddr::from(([127, 0, 0, 1], *p))).is_ok()
            });
            if up {
                return Ok(());
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "nginx did not listen:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("error.log")).unwrap_or_default()
    }

    fn https_base(&self) -> String {
        format!("https://127.0.0.1:{}", self.https)
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A browser-like client trusting only the test certificate, connecting from `from`.
fn client(cert: &TlsFiles, from: IpAddr) -> reqwest::Client {
    let pem = std::fs::read(&cert.cert).expect("read cert");
    reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(&pem).expect("cert")])
        .local_address(from)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
}

/// What a sign-in showed: the session cookie as set, whether HSTS came with it, and the
/// address the server recorded for the session.
#[derive(Debug)]
struct SignIn {
    cookie: String,
    hsts: bool,
    ip: String,
}

async fn sign_in(http: &reqwest::Client, base: &str, headers: &[(&str, &str)]) -> SignIn {
    let mut rb = http
        .post(format!("{base}/api/v1/auth/login"))
        .json(&json!({"email": "owner@acme.test", "password": PASSWORD}));
    for (k, v) in headers {
        rb = rb.header(*k, *v);
    }
    let resp = rb.send().await.expect("sign-in request");
    let hsts = resp.headers().contains_key("strict-transport-security");
    let cookie = resp
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with("flowlink_session="))
        .map(str::to_string)
        .unwrap_or_default();
    let (status, body) = read(resp).await;
    assert_eq!(status, 200, "sign-in: {body}");
    let pair = cookie.split(';').next().unwrap_or_default().to_string();
    let mut rb = http
        .get(format!("{base}/api/v1/me/sessions"))
        .header("cookie", pair);
    for (k, v) in headers {
        rb = rb.header(*k, *v);
    }
    let (status, sessions) = read(rb.send().await.expect("sessions")).await;
    assert_eq!(status, 200, "sessions: {sessions}");
    let ip = sessions
        .as_array()
        .and_then(|list| list.iter().find(|s| s["current"] == Value::Bool(true)))
        .and_then(|s| s["ip"].as_str())
        .expect("the current session is listed")
        .to_string();
    SignIn { cookie, hsts, ip }
}

const LOCAL: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 1));
const REMOTE: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 2));

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_example_forwards_client_address_and_scheme() {
    let certs = tempfile::tempdir().expect("tempdir");
    let cert = make_cert(certs.path());
    let srv = TestServer::start_with(Backend::Sqlite, |c| {
        c.trusted_proxies = vec!["127.0.0.1".parse().expect("net")];
        c.public_url = "https://flowlink.example.com".into();
    })
    .await;
    srv.owner().await;
    let nginx = Nginx::start(srv.addr, &cert);
    let base = nginx.https_base();

    // A client elsewhere (127.0.0.2) reaches nginx over https: nginx forwards its address and
    // the scheme; the server believes nginx (127.0.0.1 is trusted).
    let remote = client(&cert, REMOTE);
    let s = sign_in(&remote, &base, &[]).await;
    assert_eq!(s.ip, "127.0.0.2", "{s:?}\n{}", nginx.log());
    assert!(s.cookie.contains("; Secure"), "{s:?}");
    assert!(s.hsts, "{s:?}");

    // The same client forging an X-Forwarded-For chain and `X-Forwarded-Proto: http`: nginx
    // appends the real address (untrusted, so the walk stops there) and sets the scheme itself.
    let s = sign_in(
        &remote,
        &base,
        &[
            ("x-forwarded-for", "198.51.100.7, 203.0.113.9"),
            ("x-forwarded-proto", "http"),
        ],
    )
    .await;
    assert_eq!(s.ip, "127.0.0.2", "forged entries believed: {s:?}");
    assert!(s.cookie.contains("; Secure") && s.hsts, "{s:?}");

    // A client on nginx's own host (trusted, like an inner proxy hop) passing a chain: the walk
    // skips trusted hops from the right and stops at the first untrusted address.
    let local = client(&cert, LOCAL);
    let s = sign_in(
        &local,
        &base,
        &[("x-forwarded-for", "198.51.100.7, 203.0.113.9")],
    )
    .await;
    assert_eq!(s.ip, "203.0.113.9", "{s:?}");
    // A malformed hop stops the walk at the last good address.
    let s = sign_in(
        &local,
        &base,
        &[("x-forwarded-for", "198.51.100.7, not-an-address")],
    )
    .await;
    assert_eq!(s.ip, "127.0.0.1", "{s:?}");

    // The audit trail records the same forwarded addresses for the sign-ins.
    let audit: Vec<String> = sqlx::query_scalar::<_, String>(
        "SELECT ip FROM audit_events WHERE kind = 'auth.login' ORDER BY occurred_at",
    )
    .fetch_all(srv.store.pool())
    .await
    .expect("audit events");
    assert_eq!(
        audit
            .iter()
            .rev()
            .take(4)
            .rev()
            .map(String::as_str)
            .collect::<Vec<_>>(),
        ["127.0.0.2", "127.0.0.2", "203.0.113.9", "127.0.0.1"],
        "{audit:?}"
    );

    // Plain HTTP at nginx is redirected to https, to the same path.
    let plain = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let resp = plain
        .get(format!("http://127.0.0.1:{}/api/v1/me?x=1", nginx.http))
        .send()
        .await
        .expect("http");
    assert_eq!(resp.status(), 301);
    let location = resp
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    assert!(
        location.starts_with("https://") && location.ends_with("/api/v1/me?x=1"),
        "{location}"
    );

    // Health goes through; /metrics only from the local host.
    let resp = remote
        .get(format!("{base}/readyz"))
        .send()
        .await
        .expect("readyz");
    assert_eq!(resp.status(), 200);
    let resp = remote
        .get(format!("{base}/metrics"))
        .send()
        .await
        .expect("metrics");
    assert_eq!(resp.status(), 403, "nginx must keep /metrics private");
    let resp = local
        .get(format!("{base}/metrics"))
        .send()
        .await
        .expect("metrics");
    assert_eq!(resp.status(), 200);
    assert!(
        resp.text()
            .await
            .unwrap_or_default()
            .contains("flowlink_http_requests_total")
    );

    // The proxies' link (WebSocket) through nginx: the upgrade is passed on (101 comes from the
    // control plane only when nginx forwards Upgrade/Connection), and frames flow both ways: a
    // hello gets the control plane's challenge.
    let h1 = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(
            &std::fs::read(&cert.cert).expect("read cert"),
        )
        .expect("cert")])
        .http1_only()
        .build()
        .expect("client");
    let resp = h1
        .get(format!("{base}/api/v1/link"))
        .header("connection", "upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-version", "13")
        .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
        .send()
        .await
        .expect("link");
    assert_eq!(resp.status(), 101, "{:?}\n{}", resp.headers(), nginx.log());
    let upgraded = resp.upgrade().await.expect("upgraded connection");
    let mut ws = tokio_tungstenite::WebSocketStream::from_raw_socket(
        upgraded,
        tokio_tungstenite::tungstenite::protocol::Role::Client,
        None,
    )
    .await;
    let hello = ProxyMessage::Hello(Hello {
        version: LINK_VERSION,
        device_id: "device-behind-nginx".into(),
        proxy_version: "0.0.0-test".into(),
        service: "reverse-proxy-test".into(),
        pid: std::process::id(),
    });
    ws.send(Message::text(serde_json::to_string(&hello).expect("json")))
        .await
        .expect("send hello");
    let reply = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Text(t))) => return t.as_str().to_string(),
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                other => panic!("the link closed instead of answering: {other:?}"),
            }
        }
    })
    .await
    .expect("an answer to hello");
    match serde_json::from_str::<ControlMessage>(&reply) {
        Ok(ControlMessage::Challenge(c)) => assert!(!c.nonce.is_empty()),
        other => panic!("expected a challenge, got {other:?} from {reply}"),
    }
    let _ = ws.close(None).await;

    drop(nginx);
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarding_headers_from_an_untrusted_peer_are_ignored() {
    let certs = tempfile::tempdir().expect("tempdir");
    let cert = make_cert(certs.path());
    // The server trusts some other proxy, not this host.
    let srv = TestServer::start_with(Backend::Sqlite, |c| {
        c.trusted_proxies = vec!["192.0.2.1".parse().expect("net")];
    })
    .await;
    srv.owner().await;
    let forged = [
        ("x-forwarded-for", "203.0.113.9"),
        ("x-forwarded-proto", "https"),
    ];

    // Straight to the server with forged headers: the peer's own address, plain http.
    let direct = reqwest::Client::new();
    let s = sign_in(&direct, &srv.base, &forged).await;
    assert_eq!(s.ip, "127.0.0.1", "{s:?}");
    assert!(!s.cookie.contains("Secure"), "{s:?}");
    assert!(!s.hsts, "{s:?}");

    // Through nginx, which the server does not trust: nginx's headers are ignored too, so the
    // address is nginx's and the scheme the one the server itself sees.
    let nginx = Nginx::start(srv.addr, &cert);
    let s = sign_in(&client(&cert, REMOTE), &nginx.https_base(), &forged).await;
    assert_eq!(s.ip, "127.0.0.1", "{s:?}");
    assert!(!s.cookie.contains("Secure"), "{s:?}");
    assert!(!s.hsts, "{s:?}");
    drop(nginx);
    srv.stop().await;
}
