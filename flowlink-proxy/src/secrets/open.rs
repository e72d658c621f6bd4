//! Opening a `SecretsPush`: unwrap the org keys with the device's box key, check each secret's
//! scope (service, labels), open the values in memory. Nothing here writes anything anywhere.

use std::collections::BTreeMap;
use std::fmt;

use flowlink_proto::link::{KeyChallenge, KeyProof, SealedSecret, SecretsPush};
use flowlink_proto::sealed::{self, BoxPublicKey, OrgSecretKey, SealContext};
use zeroize::Zeroizing;

/// Who is opening: the device's identity and key, and the service of this proxy.
pub struct Opener<'a> {
    /// The organisation the device is enrolled in.
    pub org_id: &'a str,
    /// The device id (the org keys are wrapped to `device:<id>`).
    pub device_id: &'a str,
    /// The device's X25519 box key.
    pub box_key: &'a OrgSecretKey,
    /// The device's labels (a secret's labels must all be among them).
    pub labels: &'a BTreeMap<String, String>,
    /// The service this proxy wraps.
    pub service: &'a str,
}

impl<'a> Opener<'a> {
    /// The opener for an enrolled device's credential.
    pub fn for_credential(
        cred: &'a crate::link::Credential,
        box_key: &'a OrgSecretKey,
        service: &'a str,
    ) -> Opener<'a> {
        Opener {
            org_id: &cred.org_id,
            device_id: &cred.device_id,
            box_key,
            labels: &cred.labels,
            service,
        }
    }
}

/// The device's box key as a sealed-box key (zeroised on drop).
pub fn box_key(cred: &crate::link::Credential) -> OrgSecretKey {
    let secret = cred.box_secret();
    let key = OrgSecretKey::from_bytes(secret.to_bytes());
    drop(secret);
    key
}

/// One opened secret.
pub struct OpenSecret {
    /// Its version.
    pub version: u64,
    /// The org key version it was sealed to.
    pub key_version: u32,
    /// The value (UTF-8), zeroised on drop.
    pub value: Zeroizing<String>,
}

/// Why a secret of a push is not usable, by name (never a value).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The secret's name (or `org key vN`).
    pub name: String,
    /// What is wrong and what to do.
    pub why: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.name, self.why)
    }
}

/// A push, opened: org keys and secret values in memory. `Debug` shows names and versions only.
#[derive(Default)]
pub struct OpenedSecrets {
    keys: BTreeMap<u32, OrgSecretKey>,
    secrets: BTreeMap<String, OpenSecret>,
    /// Org key versions wrapped to this device (opened or not), ascending.
    pub key_versions: Vec<u32>,
    /// Secrets that are sealed for this device but could not be opened, and keys that did not
    /// unwrap.
    pub problems: Vec<Problem>,
    /// Names of secrets outside this device's or service's scope (ignored).
    pub out_of_scope: Vec<String>,
    /// `rotation_required` of the push.
    pub rotation_required: Option<String>,
}

impl fmt::Debug for OpenedSecrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OpenedSecrets")
            .field("keys", &self.keys.keys().collect::<Vec<_>>())
            .field(
                "secrets",
                &self
                    .secrets
                    .iter()
                    .map(|(n, s)| format!("{n} v{}", s.version))
                    .collect::<Vec<_>>(),
            )
            .field("problems", &self.problems)
            .finish_non_exhaustive()
    }
}

impl OpenedSecrets {
    /// The secret named `name`, if it opened.
    pub fn get(&self, name: &str) -> Option<&OpenSecret> {
        self.secrets.get(name)
    }

    /// Every opened secret, by name.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &OpenSecret)> {
        self.secrets.iter().map(|(n, s)| (n.as_str(), s))
    }

    /// How many secrets opened.
    pub fn len(&self) -> usize {
        self.secrets.len()
    }

    /// No secret opened.
    pub fn is_empty(&self) -> bool {
        self.secrets.is_empty()
    }

    /// The newest org key version this device holds (unwrapped).
    pub fn newest_key(&self) -> Option<u32> {
        self.keys.keys().next_back().copied()
    }

    /// Answers a key-possession challenge: opens it with the org key of its version.
    pub fn answer(&self, org_id: &str, c: &KeyChallenge) -> KeyProof {
        let (proof, error) = match self.keys.get(&c.key_version) {
            None => (
                None,
                Some(format!(
                    "this device holds no org key version {} (it holds {}); a custodian must grant it with `flowlink-control secrets key grant`",
                    c.key_version,
                    if self.keys.is_empty() {
                        "none".to_owned()
                    } else {
                        self.keys
                            .keys()
                            .map(|v| format!("v{v}"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    }
                )),
            ),
            Some(key) => {
                let ctx = SealContext::Challenge {
                    org_id,
                    key_version: c.key_version,
                    challenge_id: &c.challenge_id,
                };
                match sealed::open(key, &ctx, &c.sealed) {
                    Ok(plain) => (Some(sealed::challenge_proof(&plain)), None),
                    Err(e) => (None, Some(e.to_string())),
                }
            }
        };
        KeyProof {
            challenge_id: c.challenge_id.clone(),
            key_version: c.key_version,
            proof,
            error,
        }
    }
}

/// Whether a secret is meant for this device and service.
pub fn in_scope(s: &SealedSecret, service: &str, labels: &BTreeMap<String, String>) -> bool {
    (s.services.is_empty() || s.services.iter().any(|x| x == service))
        && s.labels.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// Opens what can be opened of `push`.
pub fn open_push(push: &SecretsPush, who: &Opener<'_>) -> OpenedSecrets {
    let mut out = OpenedSecrets {
        rotation_required: push.rotation_required.clone(),
        ..OpenedSecrets::default()
    };
    let recipient = format!("device:{}", who.device_id);
    for w in &push.keys {
        out.key_versions.push(w.key_version);
        let ctx = SealContext::OrgKey {
            org_id: who.org_id,
            key_version: w.key_version,
            recipient: &recipient,
        };
        let unwrapped = sealed::open(who.box_key, &ctx, &w.wrapped).and_then(|bytes| {
            let arr: [u8; 32] =
                bytes
                    .as_slice()
                    .try_into()
                    .map_err(|_| sealed::SealError::Malformed {
                        field: "wrapped",
                        why: format!("an org key has 32 bytes, this one {}", bytes.len()),
                    })?;
            Ok(OrgSecretKey::from_bytes(arr))
        });
        match unwrapped {
            Ok(key) => {
                // The declared public key must be the unwrapped key's: otherwise secrets sealed
                // to the declared one would not open, and the wrap is not what it claims.
                let declared = BoxPublicKey::from_base64(&w.public_key).ok();
                if declared == Some(key.public_key()) {
                    out.keys.insert(w.key_version, key);
                } else {
                    out.problems.push(Problem {
                        name: format!("org key v{}", w.key_version),
                        why: "the unwrapped key does not match its declared public key; it is not used".into(),
                    });
                }
            }
            Err(e) => out.problems.push(Problem {
                name: format!("org key v{}", w.key_version),
                why: format!(
                    "does not unwrap with this device's key ({e}); a custodian must grant the key to this device again"
                ),
            }),
        }
    }
    out.key_versions.sort_unstable();
    out.key_versions.dedup();
    for s in &push.secrets {
        if !sealed::valid_secret_name(&s.name) {
            out.problems.push(Problem {
                name: s.name.chars().take(64).collect(),
                why: "not a valid secret name; ignored".into(),
            });
            continue;
        }
        if !in_scope(s, who.service, who.labels) {
            out.out_of_scope.push(s.name.clone());
            continue;
        }
        if let Some(have) = out.secrets.get(&s.name)
            && have.version >= s.version
        {
            continue;
        }
        let Some(key) = out.keys.get(&s.key_version) else {
            out.problems.push(Problem {
                name: s.name.clone(),
                why: format!(
                    "sealed to org key v{}, which this device does not hold; a custodian must grant it (`flowlink-control secrets key grant`)",
                    s.key_version
                ),
            });
            continue;
        };
        let ctx = SealContext::Secret {
            org_id: who.org_id,
            name: &s.name,
            version: s.version,
            key_version: s.key_version,
        };
        match sealed::open(key, &ctx, &s.sealed) {
            Ok(bytes) => match std::str::from_utf8(&bytes) {
                Ok(text) => {
                    out.secrets.insert(
                        s.name.clone(),
                        OpenSecret {
                            version: s.version,
                            key_version: s.key_version,
                            value: Zeroizing::new(text.to_owned()),
                        },
                    );
                }
                Err(_) => out.problems.push(Problem {
                    name: s.name.clone(),
                    why: "the value is not UTF-8 text, so it cannot be put into an environment variable, a file or an argument; store it base64-encoded".into(),
                }),
            },
            Err(e) => out.problems.push(Problem {
                name: s.name.clone(),
                why: format!("v{} does not open ({e})", s.version),
            }),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use flowlink_proto::link::WrappedOrgKey;

    use super::*;

    const ORG: &str = "org-1";

    fn push_for(
        device: &OrgSecretKey,
        org: &OrgSecretKey,
        secrets: &[(&str, &str)],
    ) -> SecretsPush {
        let wrapped = sealed::seal(
            &device.public_key(),
            &SealContext::OrgKey {
                org_id: ORG,
                key_version: 1,
                recipient: "device:dev-1",
            },
            org.to_bytes().as_slice(),
        )
        .expect("wrap");
        SecretsPush {
            keys: vec![WrappedOrgKey {
                key_version: 1,
                public_key: org.public_key().to_base64(),
                wrapped,
            }],
            secrets: secrets
                .iter()
                .map(|(name, value)| SealedSecret {
                    name: (*name).to_owned(),
                    version: 2,
                    key_version: 1,
                    sealed: sealed::seal(
                        &org.public_key(),
                        &SealContext::Secret {
                            org_id: ORG,
                            name,
                            version: 2,
                            key_version: 1,
                        },
                        value.as_bytes(),
                    )
                    .expect("seal"),
                    services: Vec::new(),
                    labels: BTreeMap::new(),
                })
                .collect(),
            rotation_required: None,
        }
    }

    #[test]
    fn opens_what_is_sealed_for_this_device_and_service() {
        let device = OrgSecretKey::generate();
        let org = OrgSecretKey::generate();
        let mut push = push_for(&device, &org, &[("A_TOKEN", "alpha"), ("B_TOKEN", "beta")]);
        push.secrets[1].services = vec!["other".into()];
        let labels = BTreeMap::from([("env".to_owned(), "dev".to_owned())]);
        let who = Opener {
            org_id: ORG,
            device_id: "dev-1",
            box_key: &device,
            labels: &labels,
            service: "svc",
        };
        let opened = open_push(&push, &who);
        assert_eq!(
            opened.get("A_TOKEN").map(|s| s.value.as_str()),
            Some("alpha")
        );
        assert!(opened.get("B_TOKEN").is_none());
        assert_eq!(opened.out_of_scope, ["B_TOKEN"]);
        assert_eq!(opened.newest_key(), Some(1));
        assert!(opened.problems.is_empty(), "{:?}", opened.problems);
        assert!(!format!("{opened:?}").contains("alpha"));

        // Labels must all be carried.
        push.secrets[0].labels.insert("env".into(), "prod".into());
        assert!(open_push(&push, &who).get("A_TOKEN").is_none());
    }

    #[test]
    fn another_device_opens_nothing_and_says_so() {
        let device = OrgSecretKey::generate();
        let org = OrgSecretKey::generate();
        let push = push_for(&device, &org, &[("A_TOKEN", "alpha")]);
        let labels = BTreeMap::new();
        let stranger = OrgSecretKey::generate();
        let opened = open_push(
            &push,
            &Opener {
                org_id: ORG,
                device_id: "dev-1",
                box_key: &stranger,
                labels: &labels,
                service: "svc",
            },
        );
        assert!(opened.is_empty());
        assert_eq!(opened.problems.len(), 2, "{:?}", opened.problems);
        assert!(opened.problems[0].why.contains("does not unwrap"));
        assert!(opened.problems[1].why.contains("does not hold"));
    }

    #[test]
    fn challenges_are_answered_with_the_proof_or_why_not() {
        let device = OrgSecretKey::generate();
        let org = OrgSecretKey::generate();
        let push = push_for(&device, &org, &[]);
        let labels = BTreeMap::new();
        let opened = open_push(
            &push,
            &Opener {
                org_id: ORG,
                device_id: "dev-1",
                box_key: &device,
                labels: &labels,
                service: "svc",
            },
        );
        let plain = [7u8; 32];
        let c = KeyChallenge {
            challenge_id: "ch-1".into(),
            key_version: 1,
            sealed: sealed::seal(
                &org.public_key(),
                &SealContext::Challenge {
                    org_id: ORG,
                    key_version: 1,
                    challenge_id: "ch-1",
                },
                &plain,
            )
            .expect("seal"),
        };
        let proof = opened.answer(ORG, &c);
        assert_eq!(proof.proof, Some(sealed::challenge_proof(&plain)));
        assert_eq!(proof.error, None);
        let proof = opened.answer(
            ORG,
            &KeyChallenge {
                key_version: 2,
                ..c
            },
        );
        assert_eq!(proof.proof, None);
        assert!(
            proof
                .error
                .as_deref()
                .is_some_and(|e| e.contains("no org key version 2")),
            "{proof:?}"
        );
    }
}
