//! The link to the control plane: enrolment, the device credential, and the one WebSocket each
//! proxy process keeps open to `{server}/api/v1/link` while it runs.
//!
//! # Pieces
//! * [`enroll()`]: generate the device keys, `POST {server}/api/v1/enroll` with a token, store
//!   the [`Credential`] ([`credential`]: OS keyring and an encrypted 0600 file).
//! * [`spawn`]: the link task ([`client`]). Hello → Challenge → Auth (Ed25519 over
//!   [`flowlink_proto::link::auth_message`]) → Welcome → Policy; then heartbeats, audit batches
//!   and acknowledgements, approvals, revocation. It reconnects with jittered exponential
//!   backoff (capped at 30 s), ignores message types it does not know, and runs beside the relay:
//!   nothing the relay does waits for it.
//! * Policy sync ([`bundle`]): every pushed bundle is verified with the org's policy key from
//!   enrolment (anything else is refused and logged), checked against this device (org,
//!   service, not older than the one in force), compiled with `Policy::from_layers`, cached in
//!   `<data-dir>/link.sqlite3` ([`state`]) and handed to the relay through its reload path. With
//!   no control plane the relay decides on the cached bundle, and every audit record of that time
//!   says `policy_source: bundle_offline`.
//! * Audit shipping: batches of at most `Welcome.max_batch` events from the outbox
//!   ([`crate::audit::outbox`]); only acknowledged ids are deleted. Several proxies share one data
//!   directory: the one holding the lock on `<data-dir>/outbox.lock` ships (the lock goes with
//!   the process, so a killed shipper is replaced at once).
//! * Approvals: [`LinkHandle::request_approval`], [`LinkHandle::cancel_approval`],
//!   [`LinkHandle::is_connected`] (see [`approvals`]).
//! * `flowlink-proxy status` reads [`status::report`].
//!
//! # Precedence
//! An enrolled device takes its policy from the control plane only: `--policy FILE` is refused
//! at start with a message, because a local file must not override the organisation's security
//! policy. A revoked device stops using the link for good (this process and every later one)
//! and keeps deciding on its cached bundle, offline, until it is enrolled again.

pub mod approvals;
pub mod bundle;
pub mod client;
pub mod credential;
mod enroll;
pub mod state;
pub mod status;
pub mod tls;
pub mod url;

use std::path::PathBuf;

pub use approvals::{ApprovalEvent, LinkHandle};
pub use client::{LinkConfig, spawn};
pub use credential::{Credential, CredentialSource, CredentialStore};
pub use enroll::{EnrollOptions, Enrollment, enroll};

/// What can go wrong with enrolment, the credential or the link. Every message says what to do.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LinkError {
    /// The control-plane URL is not usable.
    #[error("the control plane URL `{url}` is not usable: {why}")]
    BadUrl {
        /// What was given.
        url: String,
        /// Why not.
        why: String,
    },
    /// Plain HTTP / WebSocket to a host that is not this machine.
    #[error(
        "refusing the unencrypted control plane URL `{url}`: plain http:// (ws://) is only allowed to this machine (127.0.0.1, ::1, localhost). Use https://, or pass --allow-insecure-ws if a TLS-terminating proxy on a trusted network is in between"
    )]
    InsecureUrl {
        /// What was given.
        url: String,
    },
    /// The CA file could not be used.
    #[error(
        "cannot use the CA file {}: {why}; pass a PEM file with the control plane's CA certificate",
        path.display()
    )]
    CaFile {
        /// The file.
        path: PathBuf,
        /// Why not.
        why: String,
    },
    /// TLS could not be set up.
    #[error("cannot set up TLS: {0}")]
    Tls(String),
    /// The OS random source failed.
    #[error("cannot generate device keys: the OS random source failed ({0})")]
    Random(String),
    /// Already enrolled.
    #[error(
        "this device is already enrolled (device {device_id} in organisation {org}, control plane {server}); pass --force to enrol it again and replace that credential"
    )]
    AlreadyEnrolled {
        /// The existing device id.
        device_id: String,
        /// Its org.
        org: String,
        /// Its control plane.
        server: String,
    },
    /// The control plane could not be reached.
    #[error(
        "cannot reach the control plane at {url}: {why}; check the URL, that flowlink-control is running, and the network (and --ca-file for a private CA)"
    )]
    Unreachable {
        /// Where.
        url: String,
        /// What happened.
        why: String,
    },
    /// The token was refused.
    #[error(
        "the control plane refused the enrolment token ({code}: {message}); ask an admin for a new token (they are single-use or limited and expire)"
    )]
    TokenRefused {
        /// The API's error code.
        code: String,
        /// The API's message.
        message: String,
    },
    /// Another answer than expected.
    #[error("the control plane answered the enrolment with HTTP {status}: {message}")]
    Server {
        /// HTTP status.
        status: u16,
        /// What it said.
        message: String,
    },
    /// The credential could not be stored.
    #[error(
        "cannot store the device credential ({}): {why}; make the data directory writable, or pass another --data-dir",
        path.display()
    )]
    CredentialStorage {
        /// The credential file.
        path: PathBuf,
        /// Why.
        why: String,
    },
    /// A stored credential could not be read.
    #[error("cannot read the device credential {}: {why}", path.display())]
    CredentialUnreadable {
        /// The credential file.
        path: PathBuf,
        /// Why.
        why: String,
    },
    /// The link's state database failed.
    #[error(
        "the link state database {}: {source}; check the data directory's permissions and free space",
        path.display()
    )]
    State {
        /// The file.
        path: PathBuf,
        /// What SQLite said.
        source: rusqlite::Error,
    },
}
