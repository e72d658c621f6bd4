//! Hot reload: of the policy file (poll its metadata, re-read on change, keep the last good policy
//! when the new text does not parse), and of policies pushed by the control plane's link, which
//! arrive compiled and verified through a feed and take the same path into the router.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use flowlink_policy::Policy;
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender};

use super::decide::{PolicyOrigin, PolicyState};
use super::router::Event;

/// Why a policy file could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum PolicyLoadError {
    /// The file could not be read.
    #[error("cannot read policy file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The file did not parse or validate.
    #[error("policy file {path} is invalid: {source}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong, with line and column.
        source: flowlink_policy::PolicyError,
    },
}

/// Reads and parses a policy file.
pub fn load_policy_file(path: &Path) -> Result<Policy, PolicyLoadError> {
    let text = std::fs::read_to_string(path).map_err(|source| PolicyLoadError::Read {
        path: path.to_owned(),
        source,
    })?;
    Policy::from_toml(&text).map_err(|source| PolicyLoadError::Invalid {
        path: path.to_owned(),
        source,
    })
}

#[derive(PartialEq, Eq, Clone, Copy)]
struct Stamp {
    modified: Option<SystemTime>,
    len: u64,
}

fn stamp(path: &Path) -> Option<Stamp> {
    let m = std::fs::metadata(path).ok()?;
    Some(Stamp {
        modified: m.modified().ok(),
        len: m.len(),
    })
}

/// Watches `path` and sends [`Event::PolicyReloaded`] with each new valid policy.
pub(super) fn spawn(path: PathBuf, every: Duration, events: UnboundedSender<Event>) {
    tokio::spawn(async move {
        let mut last = stamp(&path);
        let mut last_text = std::fs::read_to_string(&path).ok();
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let now = stamp(&path);
            if now == last {
                continue;
            }
            last = now;
            let text = match std::fs::read_to_string(&path) {
                Ok(t) => t,
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "policy file unreadable; keeping the policy in force");
                    continue;
                }
            };
            if last_text.as_deref() == Some(text.as_str()) {
                continue;
            }
            last_text = Some(text.clone());
            match Policy::from_toml(&text) {
                Ok(p) => {
                    let state = PolicyState::new(p, path.display().to_string(), PolicyOrigin::File);
                    if events.send(Event::PolicyReloaded(Arc::new(state))).is_err() {
                        return;
                    }
                }
                Err(e) => {
                    tracing::error!(
                        "policy file {} rejected: {e}; the previous policy stays in force",
                        path.display()
                    );
                }
            }
        }
    });
}

/// Forwards every policy the link delivers (verified and compiled) to the router, as a reload.
pub(super) fn spawn_feed(
    mut feed: UnboundedReceiver<Arc<PolicyState>>,
    events: UnboundedSender<Event>,
) {
    tokio::spawn(async move {
        while let Some(state) = feed.recv().await {
            if events.send(Event::PolicyReloaded(state)).is_err() {
                return;
            }
        }
    });
}
