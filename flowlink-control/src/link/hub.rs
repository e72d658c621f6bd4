//! Where connected proxies are: one registry per control-plane process of the links it holds,
//! and delivery of [`ControlMessage`]s to every link of a device. On PostgreSQL several
//! replicas share one database; a message for a device connected elsewhere travels by
//! `NOTIFY` (see `notify.rs`) and the replica holding the link delivers it.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use flowlink_proto::link::ControlMessage;
use tokio::sync::mpsc;

/// How many messages may queue for one link before it is considered stuck and dropped.
pub const LINK_QUEUE: usize = 1024;

/// One connected proxy process.
#[derive(Debug)]
struct Entry {
    id: u64,
    service: String,
    tx: mpsc::Sender<ControlMessage>,
}

/// The links this process holds, by device id.
#[derive(Debug, Default)]
pub struct LinkHub {
    links: Mutex<HashMap<String, Vec<Entry>>>,
    next: AtomicU64,
    /// The link sessions of this process, for changes that make them re-read the database.
    pub sessions: super::session::Sessions,
}

/// A registered link; dropping it unregisters.
pub struct LinkHandle<'a> {
    hub: &'a LinkHub,
    device_id: String,
    id: u64,
}

impl Drop for LinkHandle<'_> {
    fn drop(&mut self) {
        self.hub.remove(&self.device_id, self.id);
    }
}

impl LinkHub {
    /// Registers a link of `device_id` (wrapping `service`) whose writer drains `tx`.
    pub fn register(
        &self,
        device_id: &str,
        service: &str,
        tx: mpsc::Sender<ControlMessage>,
    ) -> LinkHandle<'_> {
        let id = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        let mut links = self.links.lock().unwrap_or_else(|p| p.into_inner());
        links.entry(device_id.to_string()).or_default().push(Entry {
            id,
            service: service.to_string(),
            tx,
        });
        LinkHandle {
            hub: self,
            device_id: device_id.to_string(),
            id,
        }
    }

    fn remove(&self, device_id: &str, id: u64) {
        let mut links = self.links.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(list) = links.get_mut(device_id) {
            list.retain(|e| e.id != id);
            if list.is_empty() {
                links.remove(device_id);
            }
        }
    }

    /// Sends `msg` to every link of `device_id` held here (optionally only those wrapping
    /// `service`). Returns how many links took it. A link whose queue is full is closed
    /// (its sender dropped) rather than allowed to fall silently behind.
    pub fn deliver(&self, device_id: &str, service: Option<&str>, msg: &ControlMessage) -> usize {
        let mut links = self.links.lock().unwrap_or_else(|p| p.into_inner());
        let Some(list) = links.get_mut(device_id) else {
            return 0;
        };
        let mut delivered = 0;
        list.retain(|e| {
            if service.is_some_and(|s| s != e.service) {
                return true;
            }
            match e.tx.try_send(msg.clone()) {
                Ok(()) => {
                    delivered += 1;
                    true
                }
                Err(mpsc::error::TrySendError::Full(_)) => {
                    tracing::warn!(
                        device = device_id,
                        "link queue full; closing the link so the proxy reconnects and resyncs"
                    );
                    false
                }
                Err(mpsc::error::TrySendError::Closed(_)) => false,
            }
        });
        delivered
    }

    /// Closes every link of `device_id` held here (revocation): their writers see the channel
    /// end and close the socket.
    pub fn disconnect(&self, device_id: &str) -> usize {
        let mut links = self.links.lock().unwrap_or_else(|p| p.into_inner());
        links.remove(device_id).map_or(0, |l| l.len())
    }

    /// Total links held here (the `flowlink_connected_proxies` gauge).
    pub fn link_count(&self) -> usize {
        let links = self.links.lock().unwrap_or_else(|p| p.into_inner());
        links.values().map(Vec::len).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flowlink_proto::link::Revoked;

    fn msg() -> ControlMessage {
        ControlMessage::Revoked(Revoked { reason: "t".into() })
    }

    #[tokio::test]
    async fn delivers_to_every_link_of_a_device_and_forgets_dropped_ones() {
        let hub = LinkHub::default();
        let (a, mut ra) = mpsc::channel(4);
        let (b, mut rb) = mpsc::channel(4);
        let ha = hub.register("d1", "git", a);
        let _hb = hub.register("d1", "shell", b);
        assert_eq!(hub.deliver("d1", None, &msg()), 2);
        assert_eq!(hub.deliver("d1", Some("git"), &msg()), 1);
        assert_eq!(hub.deliver("d2", None, &msg()), 0);
        assert!(ra.recv().await.is_some() && rb.recv().await.is_some());
        drop(ha);
        assert_eq!(hub.link_count(), 1);
        assert_eq!(hub.disconnect("d1"), 1);
        assert_eq!(hub.link_count(), 0);
        assert!(
            rb.recv().await.is_none(),
            "the writer sees the end after its queue drains"
        );
    }

    #[tokio::test]
    async fn a_stuck_link_is_closed_not_buffered_forever() {
        let hub = LinkHub::default();
        let (a, _ra) = mpsc::channel(1);
        let _h = hub.register("d", "s", a);
        assert_eq!(hub.deliver("d", None, &msg()), 1);
        assert_eq!(hub.deliver("d", None, &msg()), 0);
        assert_eq!(hub.link_count(), 0);
    }
}
