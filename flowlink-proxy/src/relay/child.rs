//! The wrapped MCP server process: spawn it in a process group of its own, stop it without
//! leaving orphans.
//!
//! Launchers such as `npx` and `uvx` start the real server as a grandchild. Signalling only the
//! direct child would leave that grandchild running, so every signal goes to the whole process
//! group, and the group is swept once more after the child itself has exited.

use std::collections::VecDeque;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use flowlink_proto::link::{ServerHealth, ServerState};

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::process::{Child, ChildStderr, ChildStdin, ChildStdout, Command};
use zeroize::Zeroizing;

/// Why the MCP server could not be started.
#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    /// No command was given after `--`.
    #[error(
        "no MCP server command given; put it after `--`, e.g. `flowlink-proxy -- npx -y @modelcontextprotocol/server-everything`"
    )]
    NoCommand,
    /// The OS refused to start it.
    #[error(
        "could not start MCP server `{program}`: {source}; check that it is installed and on PATH"
    )]
    Io {
        /// The program.
        program: String,
        /// The OS error.
        source: std::io::Error,
    },
}

/// A running MCP server.
pub struct ServerProcess {
    child: Child,
    pgid: Option<Pid>,
}

/// The pipes of a freshly spawned server.
pub struct ServerPipes {
    /// Where requests go.
    pub stdin: ChildStdin,
    /// Where responses come from.
    pub stdout: ChildStdout,
    /// What the server prints for people; the relay passes it on (redacted) to its own stderr.
    pub stderr: ChildStderr,
}

/// What the server's environment gets besides the proxy's own.
#[derive(Default)]
pub struct SpawnEnv {
    /// Variables to set (injected secrets, the secrets directory).
    pub set: Vec<(String, Zeroizing<String>)>,
    /// Variables not to pass on.
    pub remove: Vec<&'static str>,
}

impl ServerProcess {
    /// Starts `command[0]` with `command[1..]`, stdin, stdout and stderr piped, in a new process
    /// group. The environment is the proxy's, with `env.set` added (replacing only those
    /// variables) and `env.remove` taken out.
    pub fn spawn(
        command: &[String],
        env: &SpawnEnv,
    ) -> Result<(ServerProcess, ServerPipes), SpawnError> {
        let (program, args) = command.split_first().ok_or(SpawnError::NoCommand)?;
        let mut cmd = Command::new(program);
        cmd.args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(false);
        for name in &env.remove {
            cmd.env_remove(name);
        }
        for (name, value) in &env.set {
            cmd.env(name, value.as_str());
        }
        #[cfg(unix)]
        cmd.process_group(0);
        let mut child = cmd.spawn().map_err(|source| SpawnError::Io {
            program: program.clone(),
            source,
        })?;
        let pgid = child
            .id()
            .and_then(|id| i32::try_from(id).ok())
            .map(Pid::from_raw);
        let (Some(stdin), Some(stdout), Some(stderr)) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            // All three were requested as piped above, so tokio always provides them.
            unreachable!("piped stdio is always present after spawn")
        };
        Ok((
            ServerProcess { child, pgid },
            ServerPipes {
                stdin,
                stdout,
                stderr,
            },
        ))
    }

    /// The OS process id, while running.
    pub fn id(&self) -> Option<u32> {
        self.child.id()
    }

    /// Waits for the server to exit on its own.
    pub async fn wait(&mut self) -> std::io::Result<ExitStatus> {
        self.child.wait().await
    }

    /// Stops the server: (its stdin must already be closed by the caller) wait `grace`, then
    /// SIGTERM to the group, wait `grace` again, then SIGKILL to the group. Sweeps the group with
    /// SIGTERM then SIGKILL even when the server exited by itself, so that grandchildren go too.
    pub async fn stop(mut self, grace: Duration) -> Option<ExitStatus> {
        let status = match tokio::time::timeout(grace, self.child.wait()).await {
            Ok(s) => s.ok(),
            Err(_) => {
                self.signal_group(Signal::SIGTERM);
                match tokio::time::timeout(grace, self.child.wait()).await {
                    Ok(s) => s.ok(),
                    Err(_) => {
                        tracing::warn!("MCP server did not exit after SIGTERM; sending SIGKILL");
                        self.signal_group(Signal::SIGKILL);
                        self.child.wait().await.ok()
                    }
                }
            }
        };
        self.sweep_group(grace).await;
        status
    }

    /// Kills whatever is left of the process group after the server itself has exited.
    pub async fn sweep_group(&self, grace: Duration) {
        let Some(pgid) = self.pgid else { return };
        if killpg(pgid, Signal::SIGTERM).is_err() {
            return; // no process left in the group
        }
        let deadline = tokio::time::Instant::now() + grace;
        while tokio::time::Instant::now() < deadline {
            // Signal 0 probes whether any member is left.
            if killpg(pgid, None).is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let _ = killpg(pgid, Signal::SIGKILL);
    }

    fn signal_group(&self, sig: Signal) {
        if let Some(pgid) = self.pgid {
            let _ = killpg(pgid, sig);
        }
    }
}

/// The shell's convention for an exit status: the code, or 128 + the signal number.
pub fn exit_code(status: &ExitStatus) -> i32 {
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        if let Some(sig) = status.signal() {
            return 128 + sig;
        }
    }
    status.code().unwrap_or(1)
}

/// An exit status in words, for stderr and the session record.
pub fn describe(status: &ExitStatus) -> String {
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        if let Some(sig) = status.signal() {
            return format!("killed by signal {sig}");
        }
    }
    match status.code() {
        Some(c) => format!("exit status {c}"),
        None => "unknown exit".into(),
    }
}

/// The wrapped server's health as the relay sees it, shared (cheaply cloned) with whoever reports
/// it: the link's heartbeats.
#[derive(Clone, Debug, Default)]
pub struct ServerStatus {
    inner: Arc<Mutex<StatusInner>>,
}

#[derive(Debug)]
struct StatusInner {
    state: ServerState,
    restarts: VecDeque<Instant>,
    last_error: Option<String>,
}

impl Default for StatusInner {
    fn default() -> Self {
        StatusInner {
            state: ServerState::Stopped,
            restarts: VecDeque::new(),
            last_error: None,
        }
    }
}

const HOUR: Duration = Duration::from_secs(3600);

impl ServerStatus {
    fn with<T>(&self, f: impl FnOnce(&mut StatusInner) -> T) -> T {
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        f(&mut inner)
    }

    /// The server is running.
    pub fn up(&self) {
        self.with(|s| s.state = ServerState::Up);
    }

    /// The server exited (`why`) and is being restarted.
    pub fn restarting(&self, why: &str) {
        self.with(|s| {
            s.state = ServerState::Restarting;
            s.restarts.push_back(Instant::now());
            s.last_error = Some(why.to_owned());
        });
    }

    /// The server exited (`why`) and the relay gave up on it.
    pub fn crashed(&self, why: &str) {
        self.with(|s| {
            s.state = ServerState::Crashed;
            s.last_error = Some(why.to_owned());
        });
    }

    /// The session ended; a crashed server stays crashed.
    pub fn stopped(&self) {
        self.with(|s| {
            if s.state != ServerState::Crashed {
                s.state = ServerState::Stopped;
            }
        });
    }

    /// The health of `service` now.
    pub fn health(&self, service: &str) -> ServerHealth {
        self.with(|s| {
            let now = Instant::now();
            while s
                .restarts
                .front()
                .is_some_and(|t| now.duration_since(*t) > HOUR)
            {
                s.restarts.pop_front();
            }
            ServerHealth {
                service: service.to_owned(),
                state: s.state,
                restarts_last_hour: u32::try_from(s.restarts.len()).unwrap_or(u32::MAX),
                last_error: s.last_error.clone(),
            }
        })
    }
}
