//! Accepting a pushed (or cached) policy bundle: verified with the enrolled policy key, for this
//! organisation and service, not older than the bundle in force, and compiled.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use flowlink_policy::Policy;
use flowlink_proto::bundle::{BundleError, PolicyBundle, SignedBundle, sha256_hex};

use super::Credential;
use crate::relay::{PolicyOrigin, PolicyState};

/// A bundle that passed every check, compiled.
#[derive(Debug)]
pub struct VerifiedBundle {
    /// Its id: the SHA-256 of the signed payload.
    pub id: String,
    /// What was signed.
    pub bundle: PolicyBundle,
    /// As received.
    pub signed: SignedBundle,
    /// Compiled from its layers.
    pub policy: Policy,
}

impl VerifiedBundle {
    /// The relay's policy state for it; `online` says whether the link is up when a call is
    /// decided.
    pub fn policy_state(&self, online: Arc<AtomicBool>) -> PolicyState {
        PolicyState::new(
            self.policy.clone(),
            format!("control-plane bundle {}", short(&self.id)),
            PolicyOrigin::Bundle {
                id: self.id.clone(),
                online,
            },
        )
    }

    /// `org v3, service:git v2`, for messages.
    pub fn layers(&self) -> String {
        self.bundle
            .layers
            .iter()
            .map(|l| format!("{} v{}", l.scope, l.version))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Why a bundle was refused.
#[derive(Debug, thiserror::Error)]
pub enum BundleRefusal {
    /// The signature or the envelope is wrong.
    #[error("{0}")]
    Signature(#[from] BundleError),
    /// Signed for another organisation.
    #[error(
        "the bundle is for organisation {found}, but this device is enrolled in {expected}; it was not applied"
    )]
    WrongOrg {
        /// This device's org.
        expected: String,
        /// The bundle's.
        found: String,
    },
    /// Built for another service.
    #[error(
        "the bundle was built for service `{found}`, but this proxy wraps `{expected}`; it was not applied"
    )]
    WrongService {
        /// This proxy's service.
        expected: String,
        /// The bundle's.
        found: String,
    },
    /// Older than the bundle in force (a replay).
    #[error(
        "the bundle was issued at {found} µs, before the bundle in force ({current} µs); an older policy is never applied"
    )]
    Older {
        /// The bundle in force.
        current: i64,
        /// This one.
        found: i64,
    },
    /// Its layers do not compile.
    #[error("the bundle's policy is invalid: {0}; the policy in force stays")]
    Compile(flowlink_policy::PolicyError),
}

/// Checks `signed` for this device and `service`; `current_issued_at` is the issue time of the
/// bundle in force, if any.
pub fn verify(
    signed: &SignedBundle,
    cred: &Credential,
    service: &str,
    current_issued_at: Option<i64>,
) -> Result<VerifiedBundle, BundleRefusal> {
    let bundle = signed.verify(&cred.policy_key)?;
    if bundle.org_id != cred.org_id {
        return Err(BundleRefusal::WrongOrg {
            expected: cred.org_id.clone(),
            found: bundle.org_id,
        });
    }
    if let Some(s) = &bundle.selector.service
        && s != service
    {
        return Err(BundleRefusal::WrongService {
            expected: service.to_owned(),
            found: s.clone(),
        });
    }
    if let Some(current) = current_issued_at
        && bundle.issued_at < current
    {
        return Err(BundleRefusal::Older {
            current,
            found: bundle.issued_at,
        });
    }
    let layers: Vec<(&str, &str)> = bundle
        .layers
        .iter()
        .map(|l| (l.scope.as_str(), l.body.as_str()))
        .collect();
    let policy = Policy::from_layers(&layers).map_err(BundleRefusal::Compile)?;
    Ok(VerifiedBundle {
        id: sha256_hex(signed.payload.as_bytes()),
        bundle,
        signed: signed.clone(),
        policy,
    })
}

/// The first 12 characters of an id, for messages.
pub fn short(id: &str) -> &str {
    id.get(..12).unwrap_or(id)
}
