//! The signed policy bundle, schema 1: what the control plane hands a proxy as its policy.
//!
//! A [`PolicyBundle`] names the organisation, the key that signed it, when it was issued, the
//! device selector it was built for (service name and labels) and the policy layers that apply,
//! least specific first (`org`, then `group:<key>=<value>` scopes, then `service:<name>`), each with
//! its version, body and the SHA-256 of that body.
//!
//! A [`SignedBundle`] carries the bundle as the exact JSON text that was signed (`payload`), an
//! Ed25519 signature over those bytes and the id of the signing key. The payload is kept as text,
//! never re-serialised, so verification does not depend on how any JSON library orders or escapes
//! members. [`SignedBundle::verify`] refuses, in this order: a key id that is not the verifier's key,
//! a signature that is malformed or does not verify, a payload that is not JSON (or has duplicate
//! keys), a schema this version does not understand, a payload whose `key_id` differs from the
//! envelope's, and a layer whose `sha256` is not the hash of its body.
//!
//! Key ids are [`key_id`]: the lowercase hex of the first 16 bytes of the SHA-256 of the 32-byte
//! public key, computed the same way on both sides.
//!
//! # Example
//! ```
//! use flowlink_proto::bundle::{BundleLayer, BundleSelector, PolicyBundle, SignedBundle, key_id};
//!
//! let signing = ed25519_dalek::SigningKey::from_bytes(&[7u8; 32]);
//! let bundle = PolicyBundle {
//!     schema: flowlink_proto::bundle::BUNDLE_SCHEMA,
//!     org_id: "org-1".into(),
//!     key_id: key_id(&signing.verifying_key()),
//!     issued_at: 1_767_225_600_000_000,
//!     selector: BundleSelector { service: Some("github".into()), labels: Default::default() },
//!     layers: vec![BundleLayer::new("org", 3, "version = 1\n")],
//! };
//! let signed = SignedBundle::sign(&bundle, &signing)?;
//! let verified = signed.verify(&signing.verifying_key())?;
//! assert_eq!(verified, bundle);
//! # Ok::<(), flowlink_proto::bundle::BundleError>(())
//! ```

use std::collections::BTreeMap;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The bundle schema this version writes and the only one it accepts.
pub const BUNDLE_SCHEMA: u32 = 1;

/// The policy for one device selector, as signed by the organisation's key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyBundle {
    /// Shape of this record; [`BUNDLE_SCHEMA`].
    pub schema: u32,
    /// The organisation whose policy this is.
    pub org_id: String,
    /// The id ([`key_id`]) of the key that signs this bundle.
    pub key_id: String,
    /// When the control plane built it, Unix microseconds. A proxy can refuse a bundle older
    /// than the one it already runs.
    pub issued_at: i64,
    /// Which devices it was built for.
    pub selector: BundleSelector,
    /// The layers, least specific first (`org`, groups, service), as
    /// `flowlink_policy::Policy::from_layers` takes them.
    pub layers: Vec<BundleLayer>,
}

/// The device selector a bundle was built for.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BundleSelector {
    /// The proxy's service name (`--name`), when the bundle is for one service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    /// The device's labels; `group:<key>=<value>` scopes apply when a label matches.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

/// One policy layer: the body of one scope's current version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BundleLayer {
    /// `org`, `group:<key>=<value>` or `service:<name>`.
    pub scope: String,
    /// The scope's version number.
    pub version: i64,
    /// Lowercase hex SHA-256 of `body`.
    pub sha256: String,
    /// The policy file text (TOML).
    pub body: String,
}

impl BundleLayer {
    /// A layer for `body`, with its hash computed.
    pub fn new(scope: impl Into<String>, version: i64, body: impl Into<String>) -> BundleLayer {
        let body = body.into();
        BundleLayer {
            scope: scope.into(),
            version,
            sha256: sha256_hex(body.as_bytes()),
            body,
        }
    }
}

/// A bundle with its signature, as sent to a proxy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedBundle {
    /// The exact JSON text of the [`PolicyBundle`] that was signed.
    pub payload: String,
    /// Standard base64 (with padding) of the 64-byte Ed25519 signature over `payload`'s bytes.
    pub signature: String,
    /// The id of the key that signed it ([`key_id`]).
    pub key_id: String,
}

/// Why a bundle was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BundleError {
    /// The bundle says it was signed by another key than the one given to verify it.
    #[error(
        "the bundle was signed with key `{found}` but the trusted key is `{expected}`; \
         fetch the organisation's current signing key and check it out of band"
    )]
    UnknownKey {
        /// The key id of the verifying key.
        expected: String,
        /// The key id the bundle names.
        found: String,
    },
    /// The signature is not base64 of 64 bytes, or does not verify.
    #[error("the bundle's signature is not valid ({0}); do not use this bundle, fetch it again")]
    BadSignature(&'static str),
    /// The signed payload is not a bundle.
    #[error("the signed payload is not a policy bundle: {0}")]
    Malformed(String),
    /// A schema this version does not understand.
    #[error(
        "unsupported bundle schema {0} (this FlowLink understands schema {BUNDLE_SCHEMA}); \
         upgrade the proxy"
    )]
    UnsupportedSchema(u64),
    /// The envelope's key id and the signed payload's key id differ.
    #[error(
        "the bundle's envelope names key `{envelope}` but its signed payload names `{payload}`; \
         the bundle was altered"
    )]
    KeyIdMismatch {
        /// Key id of the envelope.
        envelope: String,
        /// Key id inside the signed payload.
        payload: String,
    },
    /// A layer's body does not hash to its `sha256`.
    #[error(
        "layer `{scope}` version {version}: its body does not match its sha256; the bundle was \
         altered or built wrongly"
    )]
    LayerHashMismatch {
        /// The layer's scope.
        scope: String,
        /// The layer's version.
        version: i64,
    },
}

impl SignedBundle {
    /// Serialises `bundle` and signs the bytes with `key`.
    ///
    /// Refuses a bundle whose `key_id` is not `key`'s or whose layers' hashes do not match their
    /// bodies: such a bundle would never verify.
    pub fn sign(bundle: &PolicyBundle, key: &SigningKey) -> Result<SignedBundle, BundleError> {
        let expected = key_id(&key.verifying_key());
        if bundle.key_id != expected {
            return Err(BundleError::UnknownKey {
                expected,
                found: bundle.key_id.clone(),
            });
        }
        check_layers(bundle)?;
        let payload =
            serde_json::to_string(bundle).map_err(|e| BundleError::Malformed(e.to_string()))?;
        let signature = key.sign(payload.as_bytes());
        Ok(SignedBundle {
            payload,
            signature: STANDARD.encode(signature.to_bytes()),
            key_id: expected,
        })
    }

    /// Checks the signature with `key` and returns the bundle, or says why it is refused (see the
    /// module documentation for the checks and their order).
    pub fn verify(&self, key: &VerifyingKey) -> Result<PolicyBundle, BundleError> {
        let expected = key_id(key);
        if self.key_id != expected {
            return Err(BundleError::UnknownKey {
                expected,
                found: self.key_id.clone(),
            });
        }
        let raw = STANDARD
            .decode(self.signature.as_bytes())
            .map_err(|_| BundleError::BadSignature("not base64"))?;
        let bytes: [u8; 64] = raw
            .as_slice()
            .try_into()
            .map_err(|_| BundleError::BadSignature("not 64 bytes"))?;
        let signature = Signature::from_bytes(&bytes);
        key.verify_strict(self.payload.as_bytes(), &signature)
            .map_err(|_| BundleError::BadSignature("it does not verify with the trusted key"))?;

        let value = crate::jsonrpc::strict_value(&self.payload)
            .map_err(|e| BundleError::Malformed(e.to_string()))?;
        match value.get("schema").and_then(serde_json::Value::as_u64) {
            Some(s) if s == u64::from(BUNDLE_SCHEMA) => {}
            Some(s) => return Err(BundleError::UnsupportedSchema(s)),
            None => {
                return Err(BundleError::Malformed(
                    "no numeric `schema` member".to_owned(),
                ));
            }
        }
        let bundle: PolicyBundle =
            serde_json::from_value(value).map_err(|e| BundleError::Malformed(e.to_string()))?;
        if bundle.key_id != self.key_id {
            return Err(BundleError::KeyIdMismatch {
                envelope: self.key_id.clone(),
                payload: bundle.key_id,
            });
        }
        check_layers(&bundle)?;
        Ok(bundle)
    }
}

fn check_layers(bundle: &PolicyBundle) -> Result<(), BundleError> {
    for layer in &bundle.layers {
        if sha256_hex(layer.body.as_bytes()) != layer.sha256 {
            return Err(BundleError::LayerHashMismatch {
                scope: layer.scope.clone(),
                version: layer.version,
            });
        }
    }
    Ok(())
}

/// The id of a public key: lowercase hex of the first 16 bytes of SHA-256 of its 32 bytes.
pub fn key_id(key: &VerifyingKey) -> String {
    let digest = Sha256::digest(key.as_bytes());
    hex(&digest[..16])
}

/// Lowercase hex SHA-256 of `bytes` (the `sha256` of a [`BundleLayer`]).
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        // Writing to a String cannot fail.
        let _ = write!(out, "{b:02x}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(seed: u8) -> SigningKey {
        SigningKey::from_bytes(&[seed; 32])
    }

    fn bundle(k: &SigningKey) -> PolicyBundle {
        PolicyBundle {
            schema: BUNDLE_SCHEMA,
            org_id: "org-1".into(),
            key_id: key_id(&k.verifying_key()),
            issued_at: 1_767_225_600_000_000,
            selector: BundleSelector {
                service: Some("github".into()),
                labels: BTreeMap::from([("env".to_owned(), "prod".to_owned())]),
            },
            layers: vec![
                BundleLayer::new("org", 3, "version = 1\ndefault_action = \"block\"\n"),
                BundleLayer::new("group:env=prod", 1, "version = 1\n"),
                BundleLayer::new("service:github", 2, "version = 1\n[[rules]]\nid = \"x\"\n"),
            ],
        }
    }

    /// Re-signs `payload` with `k` so that only the checks after the signature can refuse it.
    fn resign(payload: String, k: &SigningKey) -> SignedBundle {
        SignedBundle {
            signature: STANDARD.encode(k.sign(payload.as_bytes()).to_bytes()),
            key_id: key_id(&k.verifying_key()),
            payload,
        }
    }

    #[test]
    fn round_trip() {
        let k = key(1);
        let b = bundle(&k);
        let signed = SignedBundle::sign(&b, &k).expect("sign");
        assert_eq!(signed.key_id, b.key_id);
        assert_eq!(signed.verify(&k.verifying_key()), Ok(b.clone()));
        // Through JSON, as it travels.
        let text = serde_json::to_string(&signed).expect("json");
        let back: SignedBundle = serde_json::from_str(&text).expect("parse");
        assert_eq!(back.verify(&k.verifying_key()), Ok(b));
    }

    #[test]
    fn key_id_is_16_bytes_of_hex() {
        let id = key_id(&key(1).verifying_key());
        assert_eq!(id.len(), 32);
        assert!(
            id.chars()
                .all(|c| c.is_ascii_hexdigit() && !c.is_uppercase())
        );
        assert_ne!(id, key_id(&key(2).verifying_key()));
    }

    #[test]
    fn every_payload_byte_flip_is_refused() {
        let k = key(1);
        let signed = SignedBundle::sign(&bundle(&k), &k).expect("sign");
        let bytes = signed.payload.as_bytes();
        for i in 0..bytes.len() {
            let mut changed = bytes.to_vec();
            changed[i] ^= 0x01;
            let Ok(payload) = String::from_utf8(changed) else {
                continue;
            };
            let tampered = SignedBundle {
                payload,
                ..signed.clone()
            };
            assert_eq!(
                tampered.verify(&k.verifying_key()),
                Err(BundleError::BadSignature(
                    "it does not verify with the trusted key"
                )),
                "byte {i}"
            );
        }
    }

    #[test]
    fn signature_byte_flip_is_refused() {
        let k = key(1);
        let signed = SignedBundle::sign(&bundle(&k), &k).expect("sign");
        let raw = STANDARD.decode(&signed.signature).expect("b64");
        for i in 0..raw.len() {
            let mut changed = raw.clone();
            changed[i] ^= 0x80;
            let tampered = SignedBundle {
                signature: STANDARD.encode(&changed),
                ..signed.clone()
            };
            assert!(
                matches!(
                    tampered.verify(&k.verifying_key()),
                    Err(BundleError::BadSignature(_))
                ),
                "byte {i}"
            );
        }
        for bad in ["", "not base64!", &STANDARD.encode([0u8; 63])] {
            let tampered = SignedBundle {
                signature: bad.to_owned(),
                ..signed.clone()
            };
            assert!(matches!(
                tampered.verify(&k.verifying_key()),
                Err(BundleError::BadSignature(_))
            ));
        }
    }

    #[test]
    fn another_key_is_refused() {
        let k = key(1);
        let other = key(2);
        let signed = SignedBundle::sign(&bundle(&k), &k).expect("sign");
        assert!(matches!(
            signed.verify(&other.verifying_key()),
            Err(BundleError::UnknownKey { .. })
        ));
        // Envelope claims the verifier's key id, but the signature is by another key.
        let forged = SignedBundle {
            key_id: key_id(&other.verifying_key()),
            ..signed
        };
        assert!(matches!(
            forged.verify(&other.verifying_key()),
            Err(BundleError::BadSignature(_))
        ));
    }

    #[test]
    fn swapped_key_id_is_refused() {
        let k = key(1);
        let mut b = bundle(&k);
        // A payload naming another key, signed by `k`, with an envelope naming `k`.
        b.key_id = key_id(&key(2).verifying_key());
        let signed = resign(serde_json::to_string(&b).expect("json"), &k);
        assert!(matches!(
            signed.verify(&k.verifying_key()),
            Err(BundleError::KeyIdMismatch { .. })
        ));
        // And `sign` refuses to make such a bundle at all.
        assert!(matches!(
            SignedBundle::sign(&b, &k),
            Err(BundleError::UnknownKey { .. })
        ));
    }

    #[test]
    fn edited_layer_body_is_refused() {
        let k = key(1);
        let mut b = bundle(&k);
        b.layers[2].body.push_str("default_action = \"allow\"\n");
        assert!(matches!(
            SignedBundle::sign(&b, &k),
            Err(BundleError::LayerHashMismatch { .. })
        ));
        // Even when the signer signs it regardless.
        let signed = resign(serde_json::to_string(&b).expect("json"), &k);
        assert_eq!(
            signed.verify(&k.verifying_key()),
            Err(BundleError::LayerHashMismatch {
                scope: "service:github".into(),
                version: 2
            })
        );
        // Editing a body after signing breaks the signature first.
        let good = SignedBundle::sign(&bundle(&k), &k).expect("sign");
        let tampered = SignedBundle {
            payload: good.payload.replace("block", "allow"),
            ..good
        };
        assert!(matches!(
            tampered.verify(&k.verifying_key()),
            Err(BundleError::BadSignature(_))
        ));
    }

    #[test]
    fn unknown_schema_is_refused() {
        let k = key(1);
        let mut b = bundle(&k);
        b.schema = 2;
        let signed = resign(serde_json::to_string(&b).expect("json"), &k);
        assert_eq!(
            signed.verify(&k.verifying_key()),
            Err(BundleError::UnsupportedSchema(2))
        );
        let signed = resign(r#"{"org_id":"x"}"#.to_owned(), &k);
        assert!(matches!(
            signed.verify(&k.verifying_key()),
            Err(BundleError::Malformed(_))
        ));
    }

    #[test]
    fn duplicate_keys_and_non_json_are_refused() {
        let k = key(1);
        let good = serde_json::to_string(&bundle(&k)).expect("json");
        let dup = good.replacen("{\"schema\":1,", "{\"schema\":1,\"schema\":1,", 1);
        assert_ne!(dup, good);
        for payload in [dup, "not json".to_owned()] {
            let signed = resign(payload, &k);
            assert!(matches!(
                signed.verify(&k.verifying_key()),
                Err(BundleError::Malformed(_))
            ));
        }
    }
}
