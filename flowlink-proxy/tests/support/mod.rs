//! A driver for the real `flowlink-proxy` binary: the test plays the MCP client on its stdin and
//! stdout; the server is `examples/servers/scripted_server.py`.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

pub const TIMEOUT: Duration = Duration::from_secs(20);

pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("crate has a parent")
        .to_owned()
}

pub fn scripted_server() -> Vec<String> {
    vec![
        "python3".into(),
        workspace()
            .join("examples/servers/scripted_server.py")
            .display()
            .to_string(),
    ]
}

pub struct Proxy {
    pub child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    stderr: Arc<Mutex<String>>,
    stderr_done: Receiver<()>,
    pub dir: tempfile::TempDir,
    pending: Vec<Value>,
}

impl Proxy {
    /// Starts the proxy with extra flags in front of `server`.
    pub fn start(flags: &[&str], server: &[String]) -> Proxy {
        let dir = tempfile::tempdir().expect("tempdir");
        Self::start_in(dir, flags, server)
    }

    pub fn start_in(dir: tempfile::TempDir, flags: &[&str], server: &[String]) -> Proxy {
        Self::start_with_env(dir, flags, server, &std::collections::HashMap::new())
    }

    /// Like [`Proxy::start_in`], with extra environment variables for the proxy.
    pub fn start_with_env(
        dir: tempfile::TempDir,
        flags: &[&str],
        server: &[String],
        env: &std::collections::HashMap<&str, String>,
    ) -> Proxy {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_flowlink-proxy"));
        cmd.arg("--data-dir")
            .arg(dir.path().join("data"))
            .args(flags)
            .arg("--")
            .args(server)
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())));
        Self::launch(dir, cmd)
    }

    /// Runs `command` as is (it must start the proxy itself).
    pub fn start_raw(dir: tempfile::TempDir, command: &[String]) -> Proxy {
        let mut cmd = Command::new(&command[0]);
        cmd.args(&command[1..]);
        Self::launch(dir, cmd)
    }

    fn launch(dir: tempfile::TempDir, mut cmd: Command) -> Proxy {
        cmd.env("SCRIPTED_SERVER_LOG", dir.path().join("server.log"))
            .env("SCRIPTED_SERVER_RAW_LOG", dir.path().join("server.raw"))
            .env("FLOWLINK_LOG", "info")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn flowlink-proxy");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        let stderr = Arc::new(Mutex::new(String::new()));
        let err_buf = stderr.clone();
        let err = child.stderr.take().expect("stderr");
        let (stderr_done_tx, stderr_done) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines() {
                let Ok(line) = line else { break };
                err_buf.lock().expect("lock").push_str(&(line + "\n"));
            }
            let _ = stderr_done_tx.send(());
        });
        Proxy {
            stdin: child.stdin.take(),
            child,
            lines: rx,
            stderr,
            stderr_done,
            dir,
            pending: Vec::new(),
        }
    }

    pub fn send(&mut self, msg: Value) {
        self.send_raw(msg.to_string().as_bytes());
    }

    pub fn send_raw(&mut self, bytes: &[u8]) {
        let stdin = self.stdin.as_mut().expect("stdin open");
        stdin.write_all(bytes).expect("write");
        stdin.write_all(b"\n").expect("write");
        stdin.flush().expect("flush");
    }

    /// The next line the proxy wrote to stdout, which must be JSON.
    pub fn recv_any(&mut self) -> Value {
        if !self.pending.is_empty() {
            return self.pending.remove(0);
        }
        self.recv_fresh(TIMEOUT).unwrap_or_else(|| {
            panic!(
                "no message from the proxy within {TIMEOUT:?}; stderr:\n{}",
                self.stderr()
            )
        })
    }

    fn recv_fresh(&mut self, timeout: Duration) -> Option<Value> {
        match self.lines.recv_timeout(timeout) {
            Ok(line) => {
                Some(serde_json::from_str(&line).unwrap_or_else(|e| {
                    panic!("proxy wrote a non-JSON line to stdout ({e}): {line}")
                }))
            }
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => None,
        }
    }

    /// Waits for the first message matching `pred`, keeping the others for later.
    pub fn recv_where(&mut self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        if let Some(i) = self.pending.iter().position(&pred) {
            return self.pending.remove(i);
        }
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let Some(v) = self.recv_fresh(left) else {
                panic!(
                    "no {what} from the proxy within {TIMEOUT:?}; other messages: {:?}; stderr:\n{}",
                    self.pending,
                    self.stderr()
                );
            };
            if pred(&v) {
                return v;
            }
            self.pending.push(v);
        }
    }

    /// The response with this id.
    pub fn response(&mut self, id: Value) -> Value {
        self.recv_where(&format!("response to {id}"), |v| {
            v.get("id") == Some(&id) && v.get("method").is_none()
        })
    }

    /// Whether any message arrives within `wait` (used to check that nothing else is written).
    pub fn quiet_for(&mut self, wait: Duration) -> Option<Value> {
        if !self.pending.is_empty() {
            return Some(self.pending.remove(0));
        }
        self.recv_fresh(wait)
    }

    pub fn request(&mut self, id: Value, method: &str, params: Value) -> Value {
        self.send(json!({"jsonrpc":"2.0","id":id,"method":method,"params":params}));
        self.response(id)
    }

    pub fn initialize(&mut self, capabilities: Value) -> Value {
        let r = self.request(
            json!("init"),
            "initialize",
            json!({"protocolVersion":"2025-06-18","capabilities":capabilities,
                   "clientInfo":{"name":"relay-test","version":"1.0"}}),
        );
        self.send(json!({"jsonrpc":"2.0","method":"notifications/initialized"}));
        r
    }

    pub fn call(&mut self, id: Value, tool: &str, args: Value) -> Value {
        self.request(id, "tools/call", json!({"name": tool, "arguments": args}))
    }

    pub fn close_stdin(&mut self) {
        self.stdin = None;
    }

    pub fn wait(&mut self) -> i32 {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            if let Some(st) = self.child.try_wait().expect("try_wait") {
                // Everything the proxy wrote to stderr has been read once the pipe closes.
                let _ = self.stderr_done.recv_timeout(Duration::from_secs(5));
                return st.code().unwrap_or(-1);
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("proxy did not exit; stderr:\n{}", self.stderr());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn stderr(&self) -> String {
        self.stderr.lock().expect("lock").clone()
    }

    /// Waits until stderr contains `needle`.
    pub fn wait_stderr(&self, needle: &str) {
        let deadline = Instant::now() + TIMEOUT;
        while !self.stderr().contains(needle) {
            assert!(
                Instant::now() < deadline,
                "stderr never said {needle:?}:\n{}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// What the scripted server received, one JSON value per message.
    pub fn server_log(&self) -> Vec<Value> {
        std::fs::read_to_string(self.dir.path().join("server.log"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    pub fn audit(&self) -> Vec<Value> {
        audit_records(&self.data_dir())
    }

    /// The lines the scripted server read, exactly as it read them.
    pub fn server_raw(&self) -> Vec<String> {
        std::fs::read_to_string(self.dir.path().join("server.raw"))
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }
}

pub fn audit_records(data_dir: &Path) -> Vec<Value> {
    let out = Command::new(env!("CARGO_BIN_EXE_flowlink-proxy"))
        .args(["audit", "--json", "--data-dir"])
        .arg(data_dir)
        .output()
        .expect("run audit");
    assert!(
        out.status.success(),
        "audit failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("audit --json line is JSON"))
        .collect()
}

pub fn text_of(response: &Value) -> String {
    response["result"]["content"][0]["text"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

pub fn process_alive(pid: i32) -> bool {
    // Signal 0: does the process exist (and is it not a zombie we reaped)?
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    !stat.is_empty() && !stat.contains(") Z ")
}

pub fn write_policy(dir: &Path, text: &str) -> PathBuf {
    let p = dir.join("policy.toml");
    std::fs::write(&p, text).expect("write policy");
    p
}

/// A CA and a `localhost` server certificate it signed, made with `openssl`.
pub fn private_ca(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let sh = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("run openssl");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n",
    )
    .expect("ext");
    sh(&[
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=FlowLink Test CA",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign",
    ]);
    sh(&[
        "req",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=localhost",
    ]);
    sh(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.pem",
        "-days",
        "2",
        "-extfile",
        "server.ext",
    ]);
    (
        dir.join("ca.pem"),
        dir.join("server.pem"),
        dir.join("server.key"),
    )
}

// ---- A fake control plane's side of the link -----------------------------------------------------

/// Sends one link message to the proxy; false once the socket is gone.
pub async fn send(
    socket: &mut axum::extract::ws::WebSocket,
    msg: &flowlink_proto::link::ControlMessage,
) -> bool {
    let text = serde_json::to_string(msg).expect("json");
    socket
        .send(axum::extract::ws::Message::Text(text.into()))
        .await
        .is_ok()
}

/// The proxy's next link message (`None` when the socket closes or sends something unreadable).
pub async fn recv(
    socket: &mut axum::extract::ws::WebSocket,
) -> Option<flowlink_proto::link::ProxyMessage> {
    use axum::extract::ws::Message;
    loop {
        match socket.recv().await? {
            Ok(Message::Text(t)) => return serde_json::from_str(t.as_str()).ok(),
            Ok(Message::Close(_)) | Err(_) => return None,
            Ok(_) => {}
        }
    }
}
