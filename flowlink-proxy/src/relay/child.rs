//! The wrapped MCP server process: spawn it in a process group of its own, stop it without
//! leaving orphans.
//!
//! Launchers such as `npx` and `uvx` start the real server as a grandchild. Signalling only the
//! direct child would leave that grandchild running, so every signal goes to the whole process
//! group, and the group is swept once more after the child itself has exited.

use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

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
}

impl ServerProcess {
    /// Starts `command[0]` with `command[1..]`, stdin/stdout piped, stderr inherited, in a new
    /// process group.
    pub fn spawn(command: &[String]) -> Result<(ServerProcess, ServerPipes), SpawnError> {
        let (program, args) = command.split_first().ok_or(SpawnError::NoCommand)?;
        let mut cmd = Command::new(program);
        cmd.args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(false);
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
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            // Both were requested as piped above, so tokio always provides them.
            unreachable!("piped stdio is always present after spawn")
        };
        Ok((ServerProcess { child, pgid }, ServerPipes { stdin, stdout }))
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
