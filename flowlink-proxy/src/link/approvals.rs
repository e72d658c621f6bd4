//! [`LinkHandle`]: what the rest of the proxy holds of the link, and the approval requests it
//! carries.
//!
//! The router files a held call with [`LinkHandle::request_approval`] and reads what becomes of
//! it from the returned channel:
//!
//! * [`ApprovalEvent::Accepted`]: the control plane has the request (again after every
//!   reconnect: the request is re-sent with the same `call_ref`, and the control plane finds the
//!   existing one, so a decision made meanwhile is not lost).
//! * [`ApprovalEvent::Decided`]: the outcome. This is the last event; the request is forgotten.
//! * [`ApprovalEvent::LinkDown`]: the link is down (sent at once when the request is filed while
//!   disconnected, and whenever the link drops). The request stays pending and is re-sent when the
//!   link is back; the router decides whether to wait or to apply the offline rule (and then
//!   calls [`LinkHandle::cancel_approval`]).
//!
//! After a revocation every pending request gets `LinkDown` and is forgotten: the link will not
//! come back. Dropping the receiver without cancelling forgets the request and tells the control
//! plane it was cancelled.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use flowlink_proto::link::{
    ApprovalAccepted, ApprovalCancel, ApprovalDecision, ApprovalRequest, SecretUse,
};
use tokio::sync::{Notify, mpsc, oneshot};

/// How many events may wait unread for one request.
const EVENT_QUEUE: usize = 16;

/// What becomes of an approval request.
#[derive(Debug, Clone, PartialEq)]
pub enum ApprovalEvent {
    /// Filed (or found again after a reconnect); a person can decide it at `url`.
    Accepted(ApprovalAccepted),
    /// Decided (approved, denied, timed out or cancelled). The last event.
    Decided(ApprovalDecision),
    /// The link to the control plane is down; the request stays pending and is re-sent when it
    /// is back (unless the device was revoked).
    LinkDown,
}

/// A cheap, cloneable handle to the link task.
#[derive(Clone, Debug)]
pub struct LinkHandle {
    pub(crate) shared: Arc<Shared>,
}

/// Orders to the link task.
#[derive(Debug)]
pub(crate) enum Control {
    /// Ship what is in the outbox for at most `drain`, then close the link.
    Shutdown {
        drain: Duration,
        done: oneshot::Sender<()>,
    },
}

#[derive(Debug)]
struct Pending {
    request: ApprovalRequest,
    tx: mpsc::Sender<ApprovalEvent>,
    /// Sent on the current connection.
    sent: bool,
}

/// State shared between the handles and the link task.
#[derive(Debug)]
pub(crate) struct Shared {
    /// The link is authenticated right now. Shared with the relay's policy origin.
    pub(crate) connected: Arc<AtomicBool>,
    /// The device was revoked: the link is gone for good.
    pub(crate) revoked: AtomicBool,
    pending: Mutex<HashMap<String, Pending>>,
    cancels: Mutex<Vec<ApprovalCancel>>,
    /// Secrets used since the last `SecretsUsed` went out.
    used: Mutex<Vec<SecretUse>>,
    /// Connection attempts that failed (before or after a welcome).
    pub(crate) failed_attempts: AtomicU64,
    /// Wakes the link task when there is approval traffic to send.
    pub(crate) wake: Notify,
    pub(crate) control: mpsc::UnboundedSender<Control>,
}

impl Shared {
    pub(crate) fn new(control: mpsc::UnboundedSender<Control>) -> Shared {
        Shared {
            connected: Arc::new(AtomicBool::new(false)),
            revoked: AtomicBool::new(false),
            pending: Mutex::new(HashMap::new()),
            cancels: Mutex::new(Vec::new()),
            used: Mutex::new(Vec::new()),
            failed_attempts: AtomicU64::new(0),
            wake: Notify::new(),
            control,
        }
    }

    fn pending(&self) -> std::sync::MutexGuard<'_, HashMap<String, Pending>> {
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn cancels(&self) -> std::sync::MutexGuard<'_, Vec<ApprovalCancel>> {
        self.cancels.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Requests not yet sent on this connection (now marked sent), and queued cancellations.
    pub(crate) fn take_outgoing(&self) -> (Vec<ApprovalRequest>, Vec<ApprovalCancel>) {
        let mut requests = Vec::new();
        {
            let mut pending = self.pending();
            pending.retain(|call_ref, p| {
                if p.tx.is_closed() {
                    // The router stopped listening without cancelling: withdraw it.
                    self.cancels
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .push(ApprovalCancel {
                            call_ref: call_ref.clone(),
                            reason: "the proxy stopped waiting for this decision".into(),
                        });
                    return false;
                }
                if !p.sent {
                    p.sent = true;
                    requests.push(p.request.clone());
                }
                true
            });
        }
        let cancels = std::mem::take(&mut *self.cancels());
        (requests, cancels)
    }

    /// Secrets used since the last report, each (name, version, how) once.
    pub(crate) fn take_used(&self) -> Vec<SecretUse> {
        let mut used =
            std::mem::take(&mut *self.used.lock().unwrap_or_else(PoisonError::into_inner));
        used.sort_by(|a, b| (&a.name, a.version, &a.how).cmp(&(&b.name, b.version, &b.how)));
        used.dedup();
        used
    }

    /// The link went down: every pending request is told, and will be re-sent on reconnect.
    pub(crate) fn link_down(&self) {
        for p in self.pending().values_mut() {
            p.sent = false;
            let _ = p.tx.try_send(ApprovalEvent::LinkDown);
        }
    }

    /// The device was revoked: every pending request is told the link is down, and forgotten.
    pub(crate) fn revoke(&self) {
        self.revoked.store(true, Ordering::Relaxed);
        self.connected.store(false, Ordering::Relaxed);
        for (_, p) in self.pending().drain() {
            let _ = p.tx.try_send(ApprovalEvent::LinkDown);
        }
        self.cancels().clear();
    }

    pub(crate) fn accepted(&self, a: ApprovalAccepted) {
        let mut pending = self.pending();
        let Some(p) = pending.get(&a.call_ref) else {
            tracing::debug!(call_ref = %a.call_ref, "approval accepted for a call no longer held");
            return;
        };
        if let Err(mpsc::error::TrySendError::Closed(_)) =
            p.tx.try_send(ApprovalEvent::Accepted(a.clone()))
        {
            pending.remove(&a.call_ref);
            self.cancels().push(ApprovalCancel {
                call_ref: a.call_ref,
                reason: "the proxy stopped waiting for this decision".into(),
            });
            self.wake.notify_one();
        }
    }

    pub(crate) fn decided(&self, d: ApprovalDecision) {
        match self.pending().remove(&d.call_ref) {
            Some(p) => {
                if p.tx.try_send(ApprovalEvent::Decided(d)).is_err() {
                    tracing::warn!("an approval decision arrived for a call nobody waits for");
                }
            }
            None => {
                tracing::debug!(call_ref = %d.call_ref, "approval decision for a call no longer held")
            }
        }
    }

    /// How many requests are pending.
    #[cfg(test)]
    pub(crate) fn pending_count(&self) -> usize {
        self.pending().len()
    }
}

impl LinkHandle {
    /// Files `request` with the control plane and returns where its fate arrives (see the module
    /// documentation). Re-filing a `call_ref` that is already pending replaces the earlier
    /// request and its channel.
    pub fn request_approval(&self, request: ApprovalRequest) -> mpsc::Receiver<ApprovalEvent> {
        let (tx, rx) = mpsc::channel(EVENT_QUEUE);
        if self.shared.revoked.load(Ordering::Relaxed) {
            let _ = tx.try_send(ApprovalEvent::LinkDown);
            return rx;
        }
        if !self.is_connected() {
            let _ = tx.try_send(ApprovalEvent::LinkDown);
        }
        self.shared.pending().insert(
            request.call_ref.clone(),
            Pending {
                request,
                tx,
                sent: false,
            },
        );
        self.shared.wake.notify_one();
        rx
    }

    /// Withdraws a request (the client cancelled the call, or the router applied the offline
    /// rule). The control plane is told now, or as soon as the link is back.
    pub fn cancel_approval(&self, call_ref: &str, reason: &str) {
        let was_pending = self.shared.pending().remove(call_ref).is_some();
        if was_pending && !self.shared.revoked.load(Ordering::Relaxed) {
            self.shared.cancels().push(ApprovalCancel {
                call_ref: call_ref.to_owned(),
                reason: reason.to_owned(),
            });
            self.shared.wake.notify_one();
        }
    }

    /// Reports secrets the relay used (sent as `SecretsUsed` when the link is up; kept until
    /// then).
    pub fn report_secrets_used(&self, used: Vec<SecretUse>) {
        if used.is_empty() || self.shared.revoked.load(Ordering::Relaxed) {
            return;
        }
        self.shared
            .used
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend(used);
        self.shared.wake.notify_one();
    }

    /// How many connection attempts have failed so far.
    pub fn failed_attempts(&self) -> u64 {
        self.shared.failed_attempts.load(Ordering::Relaxed)
    }

    /// Whether the link is authenticated with the control plane right now.
    pub fn is_connected(&self) -> bool {
        self.shared.connected.load(Ordering::Relaxed)
    }

    /// Whether the control plane revoked this device (the link will not come back).
    pub fn is_revoked(&self) -> bool {
        self.shared.revoked.load(Ordering::Relaxed)
    }

    /// The flag [`LinkHandle::is_connected`] reads, for the relay's policy origin.
    pub fn online_flag(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.shared.connected)
    }

    /// Ships what the outbox holds for at most `drain` (when this process is the one shipping
    /// and the link is up), then closes the link. Returns when the link task has stopped.
    pub async fn shutdown(&self, drain: Duration) {
        let (done, wait) = oneshot::channel();
        if self
            .shared
            .control
            .send(Control::Shutdown { drain, done })
            .is_ok()
        {
            let _ = tokio::time::timeout(drain + Duration::from_secs(2), wait).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flowlink_proto::link::{ApprovalOutcome, ApprovalScope};

    fn request(call_ref: &str) -> ApprovalRequest {
        ApprovalRequest {
            call_ref: call_ref.into(),
            agent: "a".into(),
            user: "u".into(),
            service: "s".into(),
            tool: "t".into(),
            arguments: serde_json::json!({}),
            args_digest: "d".into(),
            rule_id: None,
            message: None,
            reason: "r".into(),
            risk: 50,
            findings: vec![],
            policy: None,
            approvers: vec![],
            approvals_needed: 1,
            timeout_secs: 60,
        }
    }

    fn handle() -> LinkHandle {
        let (tx, _rx) = mpsc::unbounded_channel();
        LinkHandle {
            shared: Arc::new(Shared::new(tx)),
        }
    }

    #[test]
    fn requests_are_resent_after_every_reconnect_until_decided() {
        let h = handle();
        let mut rx = h.request_approval(request("c1"));
        // Filed while offline: told at once.
        assert_eq!(rx.try_recv(), Ok(ApprovalEvent::LinkDown));
        h.shared.connected.store(true, Ordering::Relaxed);
        let (reqs, cancels) = h.shared.take_outgoing();
        assert_eq!(reqs.len(), 1);
        assert!(cancels.is_empty());
        // Sent once per connection.
        assert!(h.shared.take_outgoing().0.is_empty());
        h.shared.link_down();
        assert_eq!(rx.try_recv(), Ok(ApprovalEvent::LinkDown));
        assert_eq!(
            h.shared.take_outgoing().0.len(),
            1,
            "re-sent after reconnect"
        );
        h.shared.decided(ApprovalDecision {
            call_ref: "c1".into(),
            request_id: "r1".into(),
            outcome: ApprovalOutcome::Approved,
            decided_by: vec!["a@b".into()],
            comment: None,
            scope: ApprovalScope::ThisCall,
        });
        assert!(matches!(rx.try_recv(), Ok(ApprovalEvent::Decided(_))));
        assert_eq!(h.shared.pending_count(), 0);
    }

    #[test]
    fn cancel_and_dropped_receivers_withdraw_the_request() {
        let h = handle();
        let _rx = h.request_approval(request("c1"));
        h.cancel_approval("c1", "client cancelled");
        let (reqs, cancels) = h.shared.take_outgoing();
        assert!(reqs.is_empty());
        assert_eq!(cancels.len(), 1);
        assert_eq!(cancels[0].reason, "client cancelled");

        let rx = h.request_approval(request("c2"));
        drop(rx);
        let (reqs, cancels) = h.shared.take_outgoing();
        assert!(reqs.is_empty());
        assert_eq!(cancels[0].call_ref, "c2");
    }

    #[test]
    fn revocation_forgets_everything() {
        let h = handle();
        let mut rx = h.request_approval(request("c1"));
        let _ = rx.try_recv();
        h.shared.revoke();
        assert_eq!(rx.try_recv(), Ok(ApprovalEvent::LinkDown));
        assert_eq!(h.shared.pending_count(), 0);
        let mut rx = h.request_approval(request("c2"));
        assert_eq!(rx.try_recv(), Ok(ApprovalEvent::LinkDown));
        assert!(h.is_revoked());
    }
}
