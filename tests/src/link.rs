//! Helpers for the link tests (`tests/tests/link*.rs`): the real `flowlink-control` binary on
//! SQLite or PostgreSQL, an enrolled `flowlink-proxy`, the Python link client
//! (`tests/py/link_scenarios.py`), a cuttable TCP relay and a private PostgreSQL cluster.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;
use tempfile::TempDir;

use crate::{everything_server, proxy_bin, python, run_with_timeout, workspace_root};

/// Generous bound on anything expected "soon" (start-up, a drained outbox): it turns a hang into
/// a failure; it measures nothing.
pub const SOON: Duration = Duration::from_secs(60);

/// The proxy's `--name` in the link tests.
pub const SERVICE: &str = "everything";

/// A port on 127.0.0.1 nobody listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind 127.0.0.1:0")
        .port()
}

/// Polls `probe` every 100 ms until it returns `Some`, or panics naming `what` after `timeout`.
pub fn wait_until<T>(what: &str, timeout: Duration, mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = probe() {
            return v;
        }
        assert!(Instant::now() < deadline, "waited {timeout:?} for {what}");
        thread::sleep(Duration::from_millis(100));
    }
}

/// One `flowlink-control serve` process (restartable on the same port and database).
pub struct Control {
    child: Option<Child>,
    /// Port it listens on (also in its public URL).
    pub port: u16,
    /// `http://127.0.0.1:PORT`: the API base.
    pub url: String,
    /// `--public-url` (what proxies enrol with).
    pub public_url: String,
    database_url: String,
    data_dir: PathBuf,
    logs: PathBuf,
    starts: u32,
    /// `--config`, when started with a configuration file.
    config: Option<PathBuf>,
}

impl Control {
    /// Starts the control plane on `database_url` with its data in `data_dir`, on a free port.
    pub fn start(database_url: &str, data_dir: &Path) -> Control {
        let port = free_port();
        Control::start_at(
            database_url,
            data_dir,
            port,
            &format!("http://127.0.0.1:{port}"),
        )
    }

    /// Starts it on a free port with `config_toml` as its configuration file (`--config`).
    pub fn start_with_config(database_url: &str, data_dir: &Path, config_toml: &str) -> Control {
        let file = data_dir.join("control.toml");
        std::fs::write(&file, config_toml).expect("write control.toml");
        let port = free_port();
        Control::start_inner(
            database_url,
            data_dir,
            port,
            &format!("http://127.0.0.1:{port}"),
            Some(file),
        )
    }

    /// Starts it on `port` with `public_url` (e.g. a relay's address in front of it).
    pub fn start_at(database_url: &str, data_dir: &Path, port: u16, public_url: &str) -> Control {
        Control::start_inner(database_url, data_dir, port, public_url, None)
    }

    fn start_inner(
        database_url: &str,
        data_dir: &Path,
        port: u16,
        public_url: &str,
        config: Option<PathBuf>,
    ) -> Control {
        let mut c = Control {
            child: None,
            port,
            url: format!("http://127.0.0.1:{port}"),
            public_url: public_url.to_owned(),
            database_url: database_url.to_owned(),
            data_dir: data_dir.to_path_buf(),
            logs: data_dir.join("logs"),
            starts: 0,
            config,
        };
        std::fs::create_dir_all(&c.logs).expect("mkdir logs");
        c.spawn();
        c
    }

    fn log_path(&self) -> PathBuf {
        self.logs.join(format!("control-{}.log", self.starts))
    }

    fn spawn(&mut self) {
        self.starts += 1;
        let log = std::fs::File::create(self.log_path()).expect("control log");
        let mut cmd = Command::new(crate::control_bin());
        cmd.arg("serve");
        if let Some(config) = &self.config {
            cmd.arg("--config").arg(config);
        }
        let child = cmd
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("RUST_LOG", "warn")
            .args(["--listen", &format!("127.0.0.1:{}", self.port)])
            .args(["--public-url", &self.public_url])
            .arg("--data-dir")
            .arg(&self.data_dir)
            .args(["--database-url", &self.database_url])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .process_group(0)
            .spawn()
            .expect("spawn flowlink-control");
        self.child = Some(child);
        let path = self.log_path();
        wait_until("flowlink-control to listen", SOON, || {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                panic!(
                    "flowlink-control exited ({status}):\n{}",
                    std::fs::read_to_string(&path).unwrap_or_default()
                );
            }
            std::fs::read_to_string(&path)
                .ok()
                .filter(|l| l.contains("flowlink-control listening on http://"))
        });
    }

    /// Its `--data-dir`.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The one-time set-up token the first start printed.
    pub fn setup_token(&self) -> String {
        let log = std::fs::read_to_string(self.logs.join("control-1.log")).expect("log");
        let lines: Vec<&str> = log.lines().collect();
        let at = lines
            .iter()
            .position(|l| l.contains("one-time set-up token"))
            .unwrap_or_else(|| panic!("no set-up token printed:\n{log}"));
        lines[at + 1..]
            .iter()
            .map(|l| l.trim())
            .find(|l| !l.is_empty())
            .expect("token line")
            .to_owned()
    }

    /// `kill -9`.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port, database and data directory.
    pub fn restart(&mut self) {
        self.kill9();
        self.spawn();
    }

    /// Everything it logged, all starts.
    pub fn logs(&self) -> String {
        (1..=self.starts)
            .map(|i| {
                std::fs::read_to_string(self.logs.join(format!("control-{i}.log")))
                    .unwrap_or_default()
            })
            .collect::<Vec<_>>()
            .join("\n--- restart ---\n")
    }
}

impl Drop for Control {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// The Python link client: `link_scenarios.py MODE ARGS... [-- SERVER...]` as a command.
pub fn link_command(mode: &str, args: &[&str], server: &[String]) -> Command {
    let mut cmd = Command::new(python());
    cmd.arg(workspace_root().join("tests/py/link_scenarios.py"))
        .arg(mode)
        .args(args)
        .current_dir(workspace_root())
        .env("PYTHONUNBUFFERED", "1")
        .env("PYTHONWARNINGS", "ignore::DeprecationWarning");
    if !server.is_empty() {
        cmd.arg("--").args(server);
    }
    cmd
}

fn parse_report(
    what: &str,
    status: std::process::ExitStatus,
    stdout: &[u8],
    stderr: &[u8],
) -> Value {
    let stdout = String::from_utf8_lossy(stdout);
    match serde_json::from_str::<Value>(&stdout) {
        Ok(v) if status.success() && v.get("fatal").is_none() => v,
        _ => panic!(
            "link_scenarios.py {what} failed ({status})\n--- stdout ---\n{stdout}\n--- stderr ---\n{}",
            String::from_utf8_lossy(stderr)
        ),
    }
}

/// Runs the Python link client to completion (bounded) and returns its report.
pub fn link_script(mode: &str, args: &[&str], server: &[String], timeout: Duration) -> Value {
    let out = run_with_timeout(&mut link_command(mode, args, server), timeout);
    parse_report(mode, out.status, &out.stdout, &out.stderr)
}

/// A Python link client running in the background (killed on drop).
pub struct Background {
    child: Option<Child>,
    mode: String,
    stderr: Arc<Mutex<String>>,
    reader: Option<thread::JoinHandle<Vec<u8>>>,
}

impl Background {
    /// Starts `link_scenarios.py MODE ARGS -- SERVER` in its own process group.
    pub fn spawn(mode: &str, args: &[&str], server: &[String]) -> Background {
        let mut child = link_command(mode, args, server)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn()
            .expect("spawn link_scenarios.py");
        let stderr = Arc::new(Mutex::new(String::new()));
        let mut err = child.stderr.take().expect("stderr");
        let keep = stderr.clone();
        thread::spawn(move || {
            let mut buf = [0u8; 8192];
            while let Ok(n) = err.read(&mut buf) {
                if n == 0 {
                    break;
                }
                if let Ok(mut s) = keep.lock() {
                    s.push_str(&String::from_utf8_lossy(&buf[..n]));
                }
            }
        });
        let mut out = child.stdout.take().expect("stdout");
        let reader = thread::spawn(move || {
            let mut v = Vec::new();
            let _ = out.read_to_end(&mut v);
            v
        });
        Background {
            child: Some(child),
            mode: mode.to_owned(),
            stderr,
            reader: Some(reader),
        }
    }

    /// What it printed on stderr so far (the proxy's stderr included).
    pub fn stderr(&self) -> String {
        self.stderr.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Waits (bounded by `timeout`) for the report.
    pub fn finish(mut self, timeout: Duration) -> Value {
        let mut child = self.child.take().expect("running");
        let deadline = Instant::now() + timeout;
        let status = loop {
            if let Some(st) = child.try_wait().expect("wait") {
                break st;
            }
            if Instant::now() > deadline {
                let _ = nix::sys::signal::killpg(
                    nix::unistd::Pid::from_raw(child.id() as i32),
                    nix::sys::signal::Signal::SIGKILL,
                );
                let _ = child.wait();
                panic!(
                    "link_scenarios.py {} did not finish within {timeout:?}\n{}",
                    self.mode,
                    self.stderr()
                );
            }
            thread::sleep(Duration::from_millis(50));
        };
        let stdout = self
            .reader
            .take()
            .expect("reader")
            .join()
            .unwrap_or_default();
        thread::sleep(Duration::from_millis(100));
        parse_report(&self.mode, status, &stdout, self.stderr().as_bytes())
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(child.id() as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
            let _ = child.wait();
        }
    }
}

/// The pid of the newest `flowlink-proxy` run (not `status`) whose command line names `data_dir`.
pub fn proxy_pid(data_dir: &Path) -> Option<i32> {
    let needle = data_dir.to_string_lossy().into_owned();
    let bin = proxy_bin().to_string_lossy().into_owned();
    let mut found = None;
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<String> = cmdline
            .split(|b| *b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        if args.first() == Some(&bin)
            && args.iter().any(|a| a == &needle)
            && args.iter().any(|a| a == "--")
        {
            found = Some(found.map_or(pid, |p: i32| p.max(pid)));
        }
    }
    found
}

/// An enrolled device's data directory.
pub struct Device {
    _dir: TempDir,
    /// `--data-dir`.
    pub data_dir: PathBuf,
}

impl Device {
    /// `flowlink-proxy enroll --server URL --token T --data-dir D` into a fresh directory.
    pub fn enroll(server: &str, token: &str) -> Device {
        let dir = tempfile::Builder::new()
            .prefix("flowlink-link-")
            .tempdir()
            .expect("temp dir");
        let data_dir = dir.path().join("data");
        let mut cmd = Command::new(proxy_bin());
        cmd.args([
            "enroll",
            "--server",
            server,
            "--token",
            token,
            "--name",
            "e2e-device",
        ])
        .arg("--data-dir")
        .arg(&data_dir);
        let out = run_with_timeout(&mut cmd, SOON);
        assert!(
            out.status.success(),
            "flowlink-proxy enroll failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        Device {
            _dir: dir,
            data_dir,
        }
    }

    /// `flowlink-proxy --name everything --data-dir D --label user=owner EXTRA -- mcp-server-everything stdio`.
    pub fn wrap(&self, extra: &[&str]) -> Vec<String> {
        let mut argv = vec![
            proxy_bin().to_string_lossy().into_owned(),
            "--name".into(),
            SERVICE.into(),
            "--data-dir".into(),
            self.data_dir.to_string_lossy().into_owned(),
            "--label".into(),
            "user=owner".into(),
        ];
        argv.extend(extra.iter().map(|s| s.to_string()));
        argv.push("--".into());
        argv.extend(everything_server());
        argv
    }

    /// `flowlink-proxy status --json`.
    pub fn status(&self) -> Value {
        let mut cmd = Command::new(proxy_bin());
        cmd.args(["status", "--json"])
            .arg("--data-dir")
            .arg(&self.data_dir);
        let out = run_with_timeout(&mut cmd, SOON);
        assert!(
            out.status.success(),
            "flowlink-proxy status failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("status --json is JSON")
    }

    /// The data dir as a string (for the Python client's `--drain-data-dir`).
    pub fn dir_arg(&self) -> String {
        self.data_dir.to_string_lossy().into_owned()
    }
}

/// Sets up owner, approver, policy and an enrolment token through `api`; returns the token.
pub fn setup_org(control: &Control, policy_toml: &str) -> String {
    let file = control.data_dir.join("policy-1.toml");
    std::fs::write(&file, policy_toml).expect("write policy");
    let report = link_script(
        "setup",
        &[
            "--api",
            &control.url,
            // `=`: a token may begin with `-`, which argparse would take for an option.
            &format!("--setup-token={}", control.setup_token()),
            "--policy",
            &file.to_string_lossy(),
        ],
        &[],
        SOON,
    );
    report["enroll_token"]
        .as_str()
        .expect("enroll_token")
        .to_owned()
}

/// The owner `setup_org` creates (`tests/py/link_scenarios.py`): e-mail and password.
pub const OWNER: (&str, &str) = ("owner@acme.test", "correct horse battery staple 1");

/// The control plane's `tool_call` audit events (all pages).
pub fn control_tool_calls(api: &str) -> Vec<Value> {
    let report = link_script("audit", &["--api", api], &[], SOON);
    report["tool_call"].as_array().cloned().unwrap_or_default()
}

/// What the control plane holds of a stream of `echo` calls.
#[derive(Debug)]
pub struct Tally {
    /// Distinct event ids.
    pub event_ids: usize,
    /// Events.
    pub events: usize,
    /// `echo` message → distinct call (record) ids carrying it.
    pub calls_by_message: BTreeMap<String, BTreeSet<String>>,
}

/// Groups the control plane's tool-call events by the echo message they carry.
pub fn tally(events: &[Value], prefix: &str) -> Tally {
    let mut ids = HashSet::new();
    let mut calls_by_message: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for e in events {
        ids.insert(e["id"].as_str().unwrap_or_default().to_owned());
        let detail = match &e["detail"] {
            Value::String(s) => serde_json::from_str(s).unwrap_or(Value::Null),
            v => v.clone(),
        };
        if detail["tool"] != "echo" {
            continue;
        }
        let Some(msg) = detail["arguments"]["message"].as_str() else {
            continue;
        };
        if msg.starts_with(prefix) {
            calls_by_message
                .entry(msg.to_owned())
                .or_default()
                .insert(detail["id"].as_str().unwrap_or_default().to_owned());
        }
    }
    Tally {
        event_ids: ids.len(),
        events: events.len(),
        calls_by_message,
    }
}

/// Asserts that every answered message is in the control plane exactly once (one call id), that
/// nothing else with `prefix` is there except `sent` messages at most once, and that no event is
/// stored twice.
pub fn assert_exactly_once(events: &[Value], prefix: &str, answered: &[String], sent: usize) {
    let t = tally(events, prefix);
    assert_eq!(t.event_ids, t.events, "an event id is stored twice");
    let missing: Vec<&String> = answered
        .iter()
        .filter(|m| !t.calls_by_message.contains_key(*m))
        .collect();
    assert!(
        missing.is_empty(),
        "{} answered calls are missing from the control plane's audit (first: {:?})",
        missing.len(),
        missing.iter().take(5).collect::<Vec<_>>()
    );
    let twice: Vec<(&String, &BTreeSet<String>)> = t
        .calls_by_message
        .iter()
        .filter(|(_, ids)| ids.len() != 1)
        .collect();
    assert!(
        twice.is_empty(),
        "{} messages were recorded as more than one call: {:?}",
        twice.len(),
        twice.iter().take(5).collect::<Vec<_>>()
    );
    assert!(
        t.calls_by_message.len() <= sent,
        "{} calls recorded but only {sent} sent",
        t.calls_by_message.len()
    );
}

/// The strings of a report's `answered` list.
pub fn answered(report: &Value) -> Vec<String> {
    report["answered"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// Waits until the device's outbox is empty (everything acknowledged).
pub fn wait_outbox_empty(device: &Device, timeout: Duration) {
    wait_until("the proxy's outbox to drain", timeout, || {
        (device.status()["outbox_depth"].as_u64() == Some(0)).then_some(())
    });
}

/// A TCP relay on 127.0.0.1 in front of `target` that can cut every connection and refuse new
/// ones (`cut`), then accept again (`restore`).
pub struct Relay {
    /// Where it listens.
    pub port: u16,
    up: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<TcpStream>>>,
    /// Connections accepted so far.
    pub accepted: Arc<Mutex<u32>>,
}

impl Relay {
    /// Starts relaying 127.0.0.1:PORT → 127.0.0.1:`target`.
    pub fn start(target: u16) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind relay");
        let port = listener.local_addr().expect("addr").port();
        let up = Arc::new(AtomicBool::new(true));
        let conns: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let accepted: Arc<Mutex<u32>> = Arc::default();
        let (u, c, a) = (up.clone(), conns.clone(), accepted.clone());
        thread::spawn(move || {
            for client in listener.incoming().flatten() {
                if !u.load(Ordering::SeqCst) {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                }
                let Ok(server) = TcpStream::connect(("127.0.0.1", target)) else {
                    continue;
                };
                if let Ok(mut n) = a.lock() {
                    *n += 1;
                }
                for s in [&client, &server] {
                    if let (Ok(mut list), Ok(clone)) = (c.lock(), s.try_clone()) {
                        list.push(clone);
                    }
                }
                pipe(
                    client.try_clone().expect("clone"),
                    server.try_clone().expect("clone"),
                );
                pipe(server, client);
            }
        });
        Relay {
            port,
            up,
            conns,
            accepted,
        }
    }

    /// Closes every relayed connection at once (both directions) and refuses new ones.
    pub fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        if let Ok(mut list) = self.conns.lock() {
            for s in list.drain(..) {
                let _ = s.shutdown(Shutdown::Both);
            }
        }
    }

    /// Accepts connections again.
    pub fn restore(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}

fn pipe(mut from: TcpStream, mut to: TcpStream) {
    thread::spawn(move || {
        let mut buf = [0u8; 16384];
        loop {
            match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if to.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            }
        }
        let _ = to.shutdown(Shutdown::Both);
        let _ = from.shutdown(Shutdown::Both);
    });
}

/// `FLOWLINK_TEST_POSTGRES_URL`, required.
pub fn postgres_url() -> String {
    std::env::var("FLOWLINK_TEST_POSTGRES_URL").unwrap_or_else(|_| {
        panic!("FLOWLINK_TEST_POSTGRES_URL is not set: this test needs PostgreSQL (scripts/test sets it)")
    })
}

/// Creates a fresh schema in the database of `url` (with `psql`) and returns `url` pointed at it.
pub fn postgres_schema(url: &str, prefix: &str) -> String {
    let schema = format!(
        "{prefix}_{}_{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_micros())
            .unwrap_or_default()
    );
    let mut cmd = Command::new("psql");
    cmd.args([url, "-v", "ON_ERROR_STOP=1", "-qc"])
        .arg(format!("CREATE SCHEMA {schema}"));
    let out = run_with_timeout(&mut cmd, SOON);
    assert!(
        out.status.success(),
        "cannot create a schema on {url} (is PostgreSQL running?): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}options=-c%20search_path%3D{schema}")
}

fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// A private PostgreSQL cluster in a temp dir on a free port (never the shared server).
pub struct PrivatePostgres {
    dir: TempDir,
    bin: PathBuf,
    /// Its port.
    pub port: u16,
}

impl PrivatePostgres {
    fn run_as_postgres(&self, program: &str, args: &[&str]) {
        let prog = self.bin.join(program);
        let mut cmd = if is_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&prog);
            c
        } else {
            Command::new(&prog)
        };
        cmd.args(args);
        let out = run_with_timeout(&mut cmd, SOON);
        assert!(
            out.status.success(),
            "{program} {args:?} failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// `initdb` + `pg_ctl start` with trust auth on 127.0.0.1:<free port>.
    pub fn start() -> PrivatePostgres {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .expect("PostgreSQL server binaries in /usr/lib/postgresql/*/bin")
            .flatten()
            .map(|e| e.path().join("bin"))
            .filter(|p| p.join("initdb").is_file())
            .max()
            .expect("initdb under /usr/lib/postgresql/*/bin");
        let dir = tempfile::Builder::new()
            .prefix("flowlink-pg-")
            .tempdir()
            .expect("temp dir");
        if is_root() {
            let _ = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(dir.path())
                .status();
        }
        let pg = PrivatePostgres {
            dir,
            bin,
            port: free_port(),
        };
        let data = pg.data();
        pg.run_as_postgres(
            "initdb",
            &["-D", &data, "-U", "postgres", "--auth=trust", "-E", "UTF8"],
        );
        pg.pg_ctl("start");
        pg
    }

    fn data(&self) -> String {
        self.dir.path().join("data").to_string_lossy().into_owned()
    }

    fn pg_ctl(&self, what: &str) {
        let data = self.data();
        let log = self
            .dir
            .path()
            .join("pg.log")
            .to_string_lossy()
            .into_owned();
        let opts = format!(
            "-p {} -c listen_addresses=127.0.0.1 -c unix_socket_directories={}",
            self.port,
            self.dir.path().display()
        );
        self.run_as_postgres(
            "pg_ctl",
            &[
                "-D", &data, "-l", &log, "-o", &opts, "-w", "-m", "fast", what,
            ],
        );
    }

    /// `pg_ctl restart -m fast`.
    pub fn restart(&self) {
        self.pg_ctl("restart");
    }

    /// `postgres://postgres@127.0.0.1:PORT/postgres`.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let data = self.data();
        let prog = self.bin.join("pg_ctl");
        let mut cmd = if is_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&prog);
            c
        } else {
            Command::new(&prog)
        };
        let _ = cmd
            .args(["-D", &data, "-m", "immediate", "-w", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}
