//! A small W3C WebDriver client for the web UI's tests (`tests/tests/ui.rs`): starts Debian's
//! `/usr/bin/chromedriver` on a free 127.0.0.1 port and a headless `/usr/bin/chromium` session
//! with a fresh profile, then finds elements by CSS selector, clicks, types, reads text and the
//! current URL, and saves screenshots under `target/ui-screenshots/<test>-<page>.png`.
//!
//! A missing Chromium or chromedriver fails the test with a message saying which Debian
//! packages to install (`apt-get install chromium chromium-driver`); it never skips.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{Value, json};
use tempfile::TempDir;

use crate::link::free_port;

/// Where Debian's `chromium` package installs the browser.
pub const CHROMIUM: &str = "/usr/bin/chromium";
/// Where Debian's `chromium-driver` package installs the driver.
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// The key W3C WebDriver uses for an element reference.
const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";

/// How long to wait for an element, a URL or a text to appear.
pub const WAIT: Duration = Duration::from_secs(20);

/// One browser: a chromedriver process and one session in it.
pub struct Browser {
    driver: Child,
    base: String,
    session: String,
    http: reqwest::blocking::Client,
    _profile: TempDir,
    test: String,
}

/// An element of the current page.
#[derive(Debug, Clone)]
pub struct Element {
    id: String,
}

fn require(path: &str, package: &str) {
    assert!(
        Path::new(path).exists(),
        "{path} is missing: the web UI tests drive a real headless Chromium. Install the Debian \
         packages with `sudo apt-get install chromium chromium-driver` ({package} provides {path})"
    );
}

impl Browser {
    /// Starts chromedriver and a headless Chromium session for test `test` (the screenshots'
    /// file-name prefix).
    pub fn start(test: &str) -> Browser {
        require(CHROMIUM, "chromium");
        require(CHROMEDRIVER, "chromium-driver");
        let port = free_port();
        let driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {CHROMEDRIVER}: {e}"));
        let http = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .expect("HTTP client");
        let base = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ready = http
                .get(format!("{base}/status"))
                .send()
                .ok()
                .and_then(|r| r.json::<Value>().ok())
                .is_some_and(|v| v["value"]["ready"] == true);
            if ready {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "chromedriver did not become ready"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        let profile = tempfile::tempdir().expect("profile dir");
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "pageLoadStrategy": "normal",
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": [
                    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                    "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync",
                    "--disable-dev-shm-usage", "--window-size=1280,900",
                    format!("--user-data-dir={}", profile.path().display()),
                ]
            }
        }}});
        let mut browser = Browser {
            driver,
            base,
            session: String::new(),
            http,
            _profile: profile,
            test: test.to_owned(),
        };
        let created = browser.call(reqwest::Method::POST, "/session", Some(caps));
        browser.session = created["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session id in {created}"))
            .to_owned();
        browser
    }

    /// One WebDriver command; returns its `value`, panicking with the driver's error.
    fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let url = if path == "/session" {
            format!("{}{path}", self.base)
        } else {
            format!("{}/session/{}{path}", self.base, self.session)
        };
        let mut req = self.http.request(method.clone(), &url);
        if let Some(body) = body {
            req = req.json(&body);
        } else if method == reqwest::Method::POST {
            req = req.json(&json!({}));
        }
        let response = req
            .send()
            .unwrap_or_else(|e| panic!("WebDriver {method} {path}: {e}"));
        let status = response.status();
        let v: Value = response
            .json()
            .unwrap_or_else(|e| panic!("WebDriver {method} {path}: not JSON: {e}"));
        assert!(
            status.is_success(),
            "WebDriver {method} {path} failed ({status}): {}",
            v["value"]
        );
        v["value"].clone()
    }

    /// Opens `url`.
    pub fn goto(&self, url: &str) {
        self.call(reqwest::Method::POST, "/url", Some(json!({"url": url})));
    }

    /// The current URL.
    pub fn url(&self) -> String {
        self.call(reqwest::Method::GET, "/url", None)
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// The current URL's path (what follows the host).
    pub fn path(&self) -> String {
        let url = self.url();
        url.splitn(4, '/')
            .nth(3)
            .map_or("/".into(), |p| format!("/{p}"))
    }

    /// Waits until the current path is `path`.
    pub fn wait_path(&self, path: &str) {
        let deadline = Instant::now() + WAIT;
        loop {
            let now = self.path();
            if now == path {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "waited for {path}, the browser is at {now}; the page says:\n{}",
                self.text("body")
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The first element matching `css`, if any now.
    pub fn try_find(&self, css: &str) -> Option<Element> {
        let url = format!("{}/session/{}/element", self.base, self.session);
        let v: Value = self
            .http
            .post(url)
            .json(&json!({"using": "css selector", "value": css}))
            .send()
            .ok()?
            .json()
            .ok()?;
        v["value"][ELEMENT_KEY]
            .as_str()
            .map(|id| Element { id: id.to_owned() })
    }

    /// Reads `what` (`text`, `attribute/<name>`, …) of the element matching `css` now; `None`
    /// when there is none, or when the page changed between finding it and reading it (a stale
    /// element: the page or that part of it is being replaced, so the caller asks again).
    fn try_read(&self, css: &str, what: &str) -> Option<Value> {
        let e = self.try_find(css)?;
        let url = format!(
            "{}/session/{}/element/{}/{what}",
            self.base, self.session, e.id
        );
        let response = self
            .http
            .get(&url)
            .send()
            .unwrap_or_else(|err| panic!("WebDriver GET {what} of `{css}`: {err}"));
        let status = response.status();
        let v: Value = response
            .json()
            .unwrap_or_else(|err| panic!("WebDriver GET {what} of `{css}`: not JSON: {err}"));
        if status.is_success() {
            return Some(v["value"].clone());
        }
        match v["value"]["error"].as_str() {
            Some("stale element reference" | "no such element") => None,
            _ => panic!(
                "WebDriver GET {what} of `{css}` failed ({status}): {}",
                v["value"]
            ),
        }
    }

    /// [`Browser::try_read`], waiting (up to the usual wait) for an element to read.
    fn read(&self, css: &str, what: &str) -> Value {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(v) = self.try_read(css, what) {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "no element `{css}` to read on {}; the page says:\n{}",
                self.url(),
                self.try_text("body").unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The visible text of the element matching `css` now (see [`Browser::try_read`]).
    pub fn try_text(&self, css: &str) -> Option<String> {
        self.try_read(css, "text")
            .map(|v| v.as_str().unwrap_or_default().to_owned())
    }

    /// The first element matching `css`, waiting for it.
    pub fn find(&self, css: &str) -> Element {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(e) = self.try_find(css) {
                return e;
            }
            assert!(
                Instant::now() < deadline,
                "no element `{css}` on {}; the page says:\n{}",
                self.url(),
                self.try_text("body").unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Every element matching `css` now.
    pub fn find_all(&self, css: &str) -> Vec<Element> {
        self.call(
            reqwest::Method::POST,
            "/elements",
            Some(json!({"using": "css selector", "value": css})),
        )
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|e| e[ELEMENT_KEY].as_str())
                .map(|id| Element { id: id.to_owned() })
                .collect()
        })
        .unwrap_or_default()
    }

    /// Waits until exactly `n` elements match `css` (a form posted back to the same page).
    pub fn wait_count(&self, css: &str, n: usize) {
        let deadline = Instant::now() + WAIT;
        loop {
            let now = self.find_all(css).len();
            if now == n {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "waited for {n} × `{css}`, there are {now} on {}",
                self.url()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Clicks the element matching `css`.
    pub fn click(&self, css: &str) {
        let e = self.find(css);
        self.click_element(&e);
    }

    /// Clicks `element`.
    pub fn click_element(&self, element: &Element) {
        self.call(
            reqwest::Method::POST,
            &format!("/element/{}/click", element.id),
            None,
        );
    }

    /// Replaces the value of the field matching `css` with `text`.
    pub fn fill(&self, css: &str, text: &str) {
        let e = self.find(css);
        self.call(
            reqwest::Method::POST,
            &format!("/element/{}/clear", e.id),
            None,
        );
        self.call(
            reqwest::Method::POST,
            &format!("/element/{}/value", e.id),
            Some(json!({"text": text})),
        );
    }

    /// The visible text of the element matching `css`, waiting for one.
    pub fn text(&self, css: &str) -> String {
        self.read(css, "text")
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// Attribute `name` of the element matching `css`, waiting for one.
    pub fn attribute(&self, css: &str, name: &str) -> Option<String> {
        self.read(css, &format!("attribute/{name}"))
            .as_str()
            .map(str::to_owned)
    }

    /// The value of cookie `name` in the browser.
    pub fn cookie(&self, name: &str) -> Option<String> {
        self.call(reqwest::Method::GET, "/cookie", None)
            .as_array()?
            .iter()
            .find(|c| c["name"] == name)
            .and_then(|c| c["value"].as_str())
            .map(str::to_owned)
    }

    /// Sets the window size (e.g. a phone's 390 × 844).
    pub fn window_size(&self, width: u32, height: u32) {
        self.call(
            reqwest::Method::POST,
            "/window/rect",
            Some(json!({"width": width, "height": height})),
        );
    }

    /// Runs `script` (the body of a function; `arguments[i]` are `args`) in the page and returns
    /// what it returns.
    pub fn execute(&self, script: &str, args: Value) -> Value {
        self.call(
            reqwest::Method::POST,
            "/execute/sync",
            Some(json!({"script": script, "args": args})),
        )
    }

    /// Runs `script` in the page as an asynchronous script: it ends by calling the callback
    /// passed as its last argument (`arguments[arguments.length - 1]`), whose value is returned.
    /// For scripts that await promises (WebCrypto).
    pub fn execute_async(&self, script: &str, args: Value) -> Value {
        self.call(
            reqwest::Method::POST,
            "/execute/async",
            Some(json!({"script": script, "args": args})),
        )
    }

    /// Sends a Chrome DevTools Protocol command through chromedriver
    /// (`/goog/cdp/execute`) and returns its result: e.g.
    /// `Page.addScriptToEvaluateOnNewDocument` to take a browser feature away before a page's
    /// scripts run, or `Emulation.setScriptExecutionDisabled` for a browser without JavaScript.
    pub fn cdp(&self, cmd: &str, params: Value) -> Value {
        self.call(
            reqwest::Method::POST,
            "/goog/cdp/execute",
            Some(json!({"cmd": cmd, "params": params})),
        )
    }

    /// Presses the Tab key `times` times in the page (keyboard navigation).
    pub fn press_tab(&self, times: usize) {
        let mut keys = Vec::new();
        for _ in 0..times {
            keys.push(json!({"type": "keyDown", "value": "\u{E004}"}));
            keys.push(json!({"type": "keyUp", "value": "\u{E004}"}));
        }
        self.call(
            reqwest::Method::POST,
            "/actions",
            Some(json!({"actions": [{"type": "key", "id": "keyboard", "actions": keys}]})),
        );
    }

    /// Signs `who` (e-mail, password) in through the sign-in page at `base` and waits for the
    /// start page.
    pub fn sign_in(&self, base: &str, who: (&str, &str)) {
        self.goto(&format!("{base}/ui/sign-in"));
        self.fill("#email", who.0);
        self.fill("#password", who.1);
        self.click("form[action$='/ui/sign-in'] button[type=submit]");
        self.wait_path("/ui/");
    }

    /// Saves a PNG of the window as `target/ui-screenshots/<test>-<page>.png`; returns its path.
    pub fn screenshot(&self, page: &str) -> PathBuf {
        let b64 = self.call(reqwest::Method::GET, "/screenshot", None);
        let png = base64::engine::general_purpose::STANDARD
            .decode(b64.as_str().unwrap_or_default())
            .expect("the screenshot is base64");
        let dir = crate::target_dir().join("ui-screenshots");
        std::fs::create_dir_all(&dir).expect("mkdir ui-screenshots");
        let path = dir.join(format!("{}-{page}.png", self.test));
        std::fs::write(&path, png).expect("write screenshot");
        path
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let _ = self
                .http
                .delete(format!("{}/session/{}", self.base, self.session))
                .send();
        }
        // chromedriver and the browser it started share the process group made at spawn.
        if let Ok(pid) = i32::try_from(self.driver.id()) {
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        let _ = self.driver.wait();
    }
}

/// A person signed in to the API beside the browser (set-up steps and checks a test makes
/// without clicking): the session cookie and its CSRF token.
pub struct SignedIn {
    http: reqwest::blocking::Client,
    base: String,
    cookie: String,
    csrf: String,
}

impl SignedIn {
    /// Signs `who` (e-mail, password) in through `POST /api/v1/auth/login` at `base`.
    pub fn login(base: &str, who: (&str, &str)) -> SignedIn {
        let http = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .expect("client");
        let resp = http
            .post(format!("{base}/api/v1/auth/login"))
            .json(&json!({"email": who.0, "password": who.1}))
            .send()
            .expect("login");
        let cookie = resp
            .headers()
            .get_all(reqwest::header::SET_COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find(|v| v.starts_with("flowlink_session="))
            .and_then(|v| v.split(';').next())
            .expect("session cookie")
            .to_owned();
        let body: Value = resp.json().expect("login JSON");
        let csrf = body["csrf_token"].as_str().expect("csrf_token").to_owned();
        SignedIn {
            http,
            base: base.to_owned(),
            cookie,
            csrf,
        }
    }

    /// One API request: status and JSON body (`null` when there is none).
    pub fn send(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .header(reqwest::header::COOKIE, &self.cookie)
            .header("x-csrf-token", &self.csrf);
        if let Some(body) = body {
            req = req.json(&body);
        }
        let resp = req.send().expect("request");
        let status = resp.status().as_u16();
        (status, resp.json().unwrap_or(Value::Null))
    }

    /// `GET path`.
    pub fn get(&self, path: &str) -> (u16, Value) {
        self.send(reqwest::Method::GET, path, None)
    }

    /// `POST path` with a JSON body.
    pub fn post(&self, path: &str, body: Value) -> (u16, Value) {
        self.send(reqwest::Method::POST, path, Some(body))
    }
}
