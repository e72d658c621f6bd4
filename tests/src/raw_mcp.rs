//! An MCP client that speaks newline-delimited JSON-RPC to a child process by hand and keeps every
//! byte the child wrote to its stdout, so a test can assert on all of it (the secrets tests: no
//! byte the agent side receives may carry a secret).

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::process::CommandExt;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// One running MCP server (usually the proxy in front of one) driven over stdio.
pub struct RawMcp {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<Vec<u8>>,
    /// Every byte read from the child's stdout so far, in order.
    pub stdout: Vec<u8>,
    stderr: Receiver<Vec<u8>>,
    next_id: u64,
}

impl RawMcp {
    /// Starts `argv` with `envs` added to this process's environment and sends `initialize` and
    /// `notifications/initialized`.
    pub fn start(argv: &[String], envs: &[(&str, &str)], timeout: Duration) -> RawMcp {
        let mut cmd = Command::new(&argv[0]);
        cmd.args(&argv[1..])
            .envs(envs.iter().copied())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {argv:?}: {e}"));
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().expect("piped stdout");
        let stderr = child.stderr.take().expect("piped stderr");
        let (tx, lines) = mpsc::channel();
        thread::spawn(move || {
            let mut r = BufReader::new(stdout);
            loop {
                let mut line = Vec::new();
                match r.read_until(b'\n', &mut line) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        if tx.send(line).is_err() {
                            break;
                        }
                    }
                }
            }
        });
        let (etx, stderr_rx) = mpsc::channel();
        thread::spawn(move || {
            let mut r = stderr;
            let mut buf = [0u8; 8192];
            loop {
                match r.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if etx.send(buf[..n].to_vec()).is_err() {
                            break;
                        }
                    }
                }
            }
        });
        let mut mcp = RawMcp {
            child,
            stdin,
            lines,
            stdout: Vec::new(),
            stderr: stderr_rx,
            next_id: 1,
        };
        let init = mcp.request(
            "initialize",
            json!({
                "protocolVersion": "2025-06-18",
                "capabilities": {},
                "clientInfo": {"name": "flowlink-e2e-raw", "version": "1"}
            }),
            timeout,
        );
        assert!(
            init.get("result").is_some(),
            "initialize failed: {init}\nstderr:\n{}",
            mcp.stderr_text()
        );
        mcp.send(&json!({"jsonrpc": "2.0", "method": "notifications/initialized"}));
        mcp
    }

    fn send(&mut self, msg: &Value) {
        let stdin = self.stdin.as_mut().expect("stdin open");
        let mut line = serde_json::to_vec(msg).expect("serialise");
        line.push(b'\n');
        stdin.write_all(&line).expect("write to the child's stdin");
        stdin.flush().expect("flush");
    }

    /// Sends a request and returns its response (notifications and server requests on the way
    /// are kept in `stdout` and otherwise ignored).
    pub fn request(&mut self, method: &str, params: Value, timeout: Duration) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        self.send(&json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}));
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self.lines.recv_timeout(left).unwrap_or_else(|_| {
                panic!(
                    "no answer to `{method}` within {timeout:?}\nstderr:\n{}",
                    self.stderr_text()
                )
            });
            self.stdout.extend_from_slice(&line);
            let Ok(msg) = serde_json::from_slice::<Value>(&line) else {
                panic!(
                    "the child wrote a line that is not JSON: {}",
                    String::from_utf8_lossy(&line)
                );
            };
            if msg.get("id") == Some(&json!(id)) && msg.get("method").is_none() {
                return msg;
            }
        }
    }

    /// `tools/call` NAME with ARGUMENTS.
    pub fn call_tool(&mut self, name: &str, arguments: Value, timeout: Duration) -> Value {
        self.request(
            "tools/call",
            json!({"name": name, "arguments": arguments}),
            timeout,
        )
    }

    /// What the child wrote to stderr so far.
    pub fn stderr_text(&mut self) -> String {
        let mut out = Vec::new();
        while let Ok(chunk) = self.stderr.try_recv() {
            out.extend_from_slice(&chunk);
        }
        String::from_utf8_lossy(&out).into_owned()
    }

    /// Closes stdin, waits for the child to exit, and returns (all stdout bytes, all stderr).
    pub fn finish(mut self, timeout: Duration) -> (Vec<u8>, Vec<u8>) {
        drop(self.stdin.take());
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                break;
            }
            thread::sleep(Duration::from_millis(50));
        }
        // drain what is left once the pipes have closed
        while let Ok(line) = self.lines.recv_timeout(Duration::from_millis(500)) {
            self.stdout.extend_from_slice(&line);
        }
        let mut err = Vec::new();
        while let Ok(chunk) = self.stderr.recv_timeout(Duration::from_millis(500)) {
            err.extend_from_slice(&chunk);
        }
        (std::mem::take(&mut self.stdout), err)
    }
}

impl Drop for RawMcp {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
