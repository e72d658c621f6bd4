//! [`SecretsHub`]: the opened secrets of this proxy process, shared by the link task (which
//! fills it from pushes and the cache), the start-up wait and the relay (which injects, replaces
//! placeholders and redacts).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::watch;

use super::open::OpenedSecrets;

/// Where the hub's secrets came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecretsOrigin {
    /// Nothing yet.
    None,
    /// The cache in `link.sqlite3` (the control plane may be down).
    Cache,
    /// A push on the live link.
    Push,
}

/// The opened secrets, replaced whole on every push.
#[derive(Debug)]
pub struct SecretsHub {
    current: Mutex<(Option<Arc<OpenedSecrets>>, SecretsOrigin)>,
    generation: AtomicU64,
    changed: watch::Sender<u64>,
}

impl Default for SecretsHub {
    fn default() -> Self {
        SecretsHub {
            current: Mutex::new((None, SecretsOrigin::None)),
            generation: AtomicU64::new(0),
            changed: watch::channel(0).0,
        }
    }
}

impl SecretsHub {
    /// An empty hub.
    pub fn new() -> Arc<SecretsHub> {
        Arc::new(SecretsHub::default())
    }

    /// Replaces the secrets.
    pub fn set(&self, opened: OpenedSecrets, origin: SecretsOrigin) {
        *self.current.lock().unwrap_or_else(PoisonError::into_inner) =
            (Some(Arc::new(opened)), origin);
        self.bump();
    }

    /// Forgets every secret (the device was revoked).
    pub fn clear(&self) {
        *self.current.lock().unwrap_or_else(PoisonError::into_inner) = (None, SecretsOrigin::None);
        self.bump();
    }

    fn bump(&self) {
        let g = self.generation.fetch_add(1, Ordering::SeqCst) + 1;
        self.changed.send_replace(g);
    }

    /// The secrets now (`None`: nothing received or cached yet).
    pub fn current(&self) -> Option<Arc<OpenedSecrets>> {
        self.current
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .0
            .clone()
    }

    /// Where the secrets now came from.
    pub fn origin(&self) -> SecretsOrigin {
        self.current
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .1
    }

    /// Increases on every change.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    /// A receiver that sees every change.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }
}
