//! The link between an enrolled proxy and its control plane: enrolment over HTTPS, then one
//! long-lived WebSocket per proxy process carrying JSON text frames, each one message with a
//! `"type"` member.
//!
//! # The conversation
//! 1. Proxy → [`ProxyMessage::Hello`] (protocol version, device id, which service it wraps).
//! 2. Control → [`ControlMessage::Challenge`] (a fresh random nonce).
//! 3. Proxy → [`ProxyMessage::Auth`]: the device's Ed25519 signature over [`auth_message`].
//! 4. Control → [`ControlMessage::Welcome`], then [`ControlMessage::Policy`] (the signed bundle
//!    for this device) at once and again whenever the effective policy changes.
//! 5. Afterwards, in any order: heartbeats, audit batches and their acknowledgements, approval
//!    requests, decisions and cancellations, revocation.
//!
//! # Compatibility
//! Versioned from the first message ([`LINK_VERSION`]). Fields are only ever added, with serde
//! defaults; a message type this side does not know decodes as `Unknown` and is ignored, so an
//! older peer keeps working beside a newer one. A peer that speaks a different major version is
//! told so in [`ControlMessage::Error`] and disconnected.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The link protocol version this build speaks.
pub const LINK_VERSION: u32 = 1;

/// `POST /api/v1/enroll`: a proxy joins an organisation with an enrolment token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnrollRequest {
    /// The enrolment token an admin created (`fle_…`).
    pub token: String,
    /// A name for the device (defaults to the host name).
    pub device_name: String,
    /// The host name, for people.
    pub hostname: String,
    /// The device's Ed25519 public key (base64, 32 bytes): it signs link challenges.
    pub signing_key: String,
    /// The device's X25519 public key (base64, 32 bytes): secrets are wrapped to it.
    pub box_key: String,
    /// Labels the device reports about itself; the token's labels win on conflict.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

/// The answer to an enrolment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnrollResponse {
    /// The organisation joined.
    pub org_id: String,
    /// Its slug.
    pub org_slug: String,
    /// The new device's id.
    pub device_id: String,
    /// The device's labels (the token's and its own).
    pub labels: BTreeMap<String, String>,
    /// The organisation's policy signing key (Ed25519, base64): bundles must verify with it.
    pub policy_key: String,
    /// That key's id.
    pub policy_key_id: String,
    /// Where to open the link (`wss://…/api/v1/link`).
    pub link_url: String,
}

/// Messages from a proxy to the control plane.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ProxyMessage {
    /// First frame.
    Hello(Hello),
    /// Proof of the device key.
    Auth(AuthProof),
    /// Liveness and the wrapped servers' health.
    Heartbeat(Heartbeat),
    /// Audit events from the outbox.
    AuditBatch(AuditBatch),
    /// A held call needs a person (boxed: it is the largest message by far).
    ApprovalRequest(Box<ApprovalRequest>),
    /// A held call is withdrawn (the client cancelled it, or the proxy is exiting).
    ApprovalCancel(ApprovalCancel),
    /// The answer to a [`ControlMessage::KeyChallenge`].
    KeyProof(KeyProof),
    /// Which secrets the proxy used, and how (for `last_used_at`).
    SecretsUsed(SecretsUsed),
    /// A message type from a newer proxy.
    #[serde(other)]
    Unknown,
}

/// Messages from the control plane to a proxy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ControlMessage {
    /// Sign this.
    Challenge(Challenge),
    /// Authenticated.
    Welcome(Welcome),
    /// The signed policy bundle for this device (on connect and on every change).
    Policy(PolicyPush),
    /// These audit events are committed; delete them from the outbox.
    AuditAck(AuditAck),
    /// An approval request was filed (or found again after a reconnect).
    ApprovalAccepted(ApprovalAccepted),
    /// A person (or the clock) decided.
    ApprovalDecision(ApprovalDecision),
    /// This device is revoked: stop using the link, do not reconnect.
    Revoked(Revoked),
    /// Something was wrong with what the proxy sent; `fatal` closes the link.
    Error(LinkError),
    /// The sealed secrets and wrapped org keys for this device and service (on connect, after
    /// `Policy`, and whenever they change).
    Secrets(SecretsPush),
    /// Prove possession of an org key version.
    KeyChallenge(KeyChallenge),
    /// A message type from a newer control plane.
    #[serde(other)]
    Unknown,
}

/// The first frame of a link.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// [`LINK_VERSION`] of the proxy.
    pub version: u32,
    /// The device id from enrolment.
    pub device_id: String,
    /// The proxy's build version.
    pub proxy_version: String,
    /// The service (MCP server) this proxy process wraps.
    pub service: String,
    /// The proxy's process id (several proxies per device are normal: one per server).
    pub pid: u32,
}

/// A challenge to sign.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Challenge {
    /// Random, base64, used once.
    pub nonce: String,
}

/// The signed challenge.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthProof {
    /// Ed25519 signature (base64) over [`auth_message`].
    pub signature: String,
}

/// The bytes a device signs to prove its key: bound to the protocol, the device, the nonce
/// and the control plane's public URL, so a signature cannot be replayed elsewhere.
pub fn auth_message(device_id: &str, nonce: &str, server_url: &str) -> Vec<u8> {
    format!("flowlink-link-v{LINK_VERSION}\n{device_id}\n{nonce}\n{server_url}").into_bytes()
}

/// Authenticated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Welcome {
    /// The organisation.
    pub org_id: String,
    /// The device.
    pub device_id: String,
    /// How often to send heartbeats.
    pub heartbeat_secs: u64,
    /// Most audit events per batch the control plane accepts.
    pub max_batch: u32,
}

/// A policy bundle push.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyPush {
    /// The bundle, to verify with the org's policy key.
    pub bundle: crate::bundle::SignedBundle,
}

/// The state of the MCP server a proxy wraps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ServerState {
    /// Running.
    Up,
    /// Crashed and being restarted.
    Restarting,
    /// Crashed and given up on.
    Crashed,
    /// Not started yet or stopped.
    Stopped,
}

/// One wrapped server's health.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerHealth {
    /// The service name.
    pub service: String,
    /// Its state.
    pub state: ServerState,
    /// Restarts in the last hour.
    pub restarts_last_hour: u32,
    /// The last error, if any (exit status, spawn failure).
    #[serde(default)]
    pub last_error: Option<String>,
}

/// Liveness.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Heartbeat {
    /// The wrapped servers.
    pub servers: Vec<ServerHealth>,
    /// Audit events waiting in the outbox.
    pub outbox_depth: u64,
    /// Id of the bundle the proxy decides with (its payload's SHA-256), if any.
    #[serde(default)]
    pub policy: Option<String>,
}

/// One audit event as shipped: the id is the deduplication key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEnvelope {
    /// UUIDv7, made by the proxy when it recorded the event.
    pub id: String,
    /// When, Unix µs.
    pub occurred_at: i64,
    /// `tool_call` (an [`crate::audit::ToolCallRecord`]), `session`, or `outbox_overflow`.
    pub kind: String,
    /// The record.
    pub record: serde_json::Value,
}

/// A batch of audit events.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditBatch {
    /// In outbox order.
    pub events: Vec<AuditEnvelope>,
}

/// Committed events.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditAck {
    /// Ids now durable in the control plane (including ones it had already).
    pub ids: Vec<String>,
}

/// A tool call held for a person.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApprovalRequest {
    /// The proxy's own id for the held call; the same on every resend.
    pub call_ref: String,
    /// The MCP client (agent).
    pub agent: String,
    /// The user on whose machine it runs.
    pub user: String,
    /// The service.
    pub service: String,
    /// The tool.
    pub tool: String,
    /// The arguments, secrets redacted.
    pub arguments: serde_json::Value,
    /// [`args_digest`] of the real arguments: the approval is bound to it.
    pub args_digest: String,
    /// The rule that asked for approval.
    #[serde(default)]
    pub rule_id: Option<String>,
    /// The rule's message.
    #[serde(default)]
    pub message: Option<String>,
    /// Why, in words.
    pub reason: String,
    /// The shield's risk, 0-100.
    pub risk: u8,
    /// The shield's findings.
    #[serde(default)]
    pub findings: Vec<crate::audit::FindingRecord>,
    /// The bundle the decision was made with.
    #[serde(default)]
    pub policy: Option<String>,
    /// Who may approve (the rule's `approvers` selector), empty = anyone with the permission.
    #[serde(default)]
    pub approvers: Vec<String>,
    /// How many distinct approvals are needed (at least 1).
    #[serde(default = "one")]
    pub approvals_needed: u32,
    /// Seconds until silence becomes a denial.
    pub timeout_secs: u64,
}

fn one() -> u32 {
    1
}

/// The control plane has the request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApprovalAccepted {
    /// The proxy's id for the call.
    pub call_ref: String,
    /// The control plane's request id.
    pub request_id: String,
    /// Where a person decides it.
    pub url: String,
}

/// How a request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ApprovalOutcome {
    /// Approved: forward the call.
    Approved,
    /// Denied by a person.
    Denied,
    /// Nobody decided in time: silence is not consent.
    TimedOut,
    /// Withdrawn (client cancelled, proxy gone).
    Cancelled,
}

/// What an approval covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ApprovalScope {
    /// Only the held call.
    ThisCall,
    /// The same call (device, agent, service, tool, argument digest) for a while.
    SameCallFor {
        /// Minutes.
        minutes: u32,
    },
}

/// A decision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApprovalDecision {
    /// The proxy's id for the call.
    pub call_ref: String,
    /// The request id.
    pub request_id: String,
    /// What happened.
    pub outcome: ApprovalOutcome,
    /// Who decided (e-mail addresses), empty for timeouts.
    #[serde(default)]
    pub decided_by: Vec<String>,
    /// Their comments.
    #[serde(default)]
    pub comment: Option<String>,
    /// What the approval covers.
    pub scope: ApprovalScope,
}

/// A withdrawn request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApprovalCancel {
    /// The proxy's id for the call.
    pub call_ref: String,
    /// Why.
    pub reason: String,
}

/// Revocation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Revoked {
    /// Why, for the log.
    pub reason: String,
}

/// An error about what the proxy sent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkError {
    /// Stable code.
    pub code: String,
    /// What to do.
    pub message: String,
    /// The control plane closes the link after this.
    pub fatal: bool,
}

/// The secrets a device may use for the service of this link, and the org keys to open them.
/// Nothing in it is readable without the device's box key: the control plane never sees a
/// plaintext or an org private key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretsPush {
    /// The org key versions wrapped to this device, newest last (empty: no custodian has granted
    /// this device the org key yet).
    pub keys: Vec<WrappedOrgKey>,
    /// Every secret this device may receive for the service of this link (complete set: replaces
    /// what the proxy had).
    pub secrets: Vec<SealedSecret>,
    /// The org key needs rotating (a device was revoked): the reason, for `status`.
    #[serde(default)]
    pub rotation_required: Option<String>,
}

/// One org key version wrapped to this device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WrappedOrgKey {
    /// The org key version.
    pub key_version: u32,
    /// Its public key (base64): secrets of this version are sealed to it.
    pub public_key: String,
    /// The 32-byte org private key, sealed to the device's box key for
    /// [`crate::sealed::SealContext::OrgKey`] `{org_id, key_version, recipient: "device:<id>"}`.
    pub wrapped: crate::sealed::SealedBox,
}

/// One secret as the device receives it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealedSecret {
    /// The name ([`crate::sealed::valid_secret_name`]).
    pub name: String,
    /// The secret's version.
    pub version: u64,
    /// The org key version it is sealed to.
    pub key_version: u32,
    /// The value, sealed to that org key for [`crate::sealed::SealContext::Secret`]
    /// `{org_id, name, version, key_version}`.
    pub sealed: crate::sealed::SealedBox,
    /// The services that may use it; empty: every service.
    #[serde(default)]
    pub services: Vec<String>,
    /// Labels a device must all carry to receive it.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

/// Prove possession of an org key version: open `sealed` and answer with a [`KeyProof`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyChallenge {
    /// The challenge's id (echoed in the proof).
    pub challenge_id: String,
    /// The org key version to prove.
    pub key_version: u32,
    /// 32 random bytes sealed to that org key for [`crate::sealed::SealContext::Challenge`]
    /// `{org_id, key_version, challenge_id}`.
    pub sealed: crate::sealed::SealedBox,
}

/// The answer to a [`KeyChallenge`]: a proof, or why there is none.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyProof {
    /// The challenge's id.
    pub challenge_id: String,
    /// The org key version of the challenge.
    pub key_version: u32,
    /// [`crate::sealed::challenge_proof`] of the opened challenge.
    #[serde(default)]
    pub proof: Option<String>,
    /// Why the challenge could not be opened (no key for that version, …).
    #[serde(default)]
    pub error: Option<String>,
}

/// Secrets the proxy used since its last report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretsUsed {
    /// One entry per secret and way of use.
    pub used: Vec<SecretUse>,
}

/// One use of a secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretUse {
    /// The secret's name.
    pub name: String,
    /// The version used.
    pub version: u64,
    /// `env`, `file` or `placeholder`.
    pub how: String,
}

/// JSON with object keys sorted and no insignificant whitespace: equal values give equal bytes,
/// whatever order or spacing the agent used.
pub fn canonical_json(value: &serde_json::Value) -> String {
    use serde_json::Value;
    fn write(v: &Value, out: &mut String) {
        match v {
            Value::Object(map) => {
                let mut keys: Vec<&String> = map.keys().collect();
                keys.sort();
                out.push('{');
                for (i, k) in keys.into_iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push_str(&Value::String(k.clone()).to_string());
                    out.push(':');
                    if let Some(inner) = map.get(k) {
                        write(inner, out);
                    }
                }
                out.push('}');
            }
            Value::Array(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    write(item, out);
                }
                out.push(']');
            }
            scalar => out.push_str(&scalar.to_string()),
        }
    }
    let mut out = String::new();
    write(value, &mut out);
    out
}

/// Hex SHA-256 of the canonical arguments: what an approval is bound to.
pub fn args_digest(arguments: &serde_json::Value) -> String {
    crate::bundle::sha256_hex(canonical_json(arguments).as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn unknown_message_types_are_ignored_not_fatal() {
        let m: ProxyMessage = serde_json::from_str(r#"{"type":"telemetry_v9","x":1}"#).unwrap();
        assert_eq!(m, ProxyMessage::Unknown);
        let c: ControlMessage = serde_json::from_str(r#"{"type":"shiny_new_thing"}"#).unwrap();
        assert_eq!(c, ControlMessage::Unknown);
    }

    #[test]
    fn messages_round_trip_with_their_type_tag() {
        let m = ProxyMessage::Hello(Hello {
            version: LINK_VERSION,
            device_id: "d".into(),
            proxy_version: "0.1.0".into(),
            service: "git".into(),
            pid: 7,
        });
        let text = serde_json::to_string(&m).unwrap();
        assert!(text.starts_with(r#"{"type":"hello""#), "{text}");
        assert_eq!(serde_json::from_str::<ProxyMessage>(&text).unwrap(), m);
        let d = ControlMessage::ApprovalDecision(ApprovalDecision {
            call_ref: "c".into(),
            request_id: "r".into(),
            outcome: ApprovalOutcome::TimedOut,
            decided_by: vec![],
            comment: None,
            scope: ApprovalScope::SameCallFor { minutes: 10 },
        });
        let text = serde_json::to_string(&d).unwrap();
        assert!(text.contains(r#""outcome":"timed_out""#), "{text}");
        assert!(
            text.contains(r#""scope":{"kind":"same_call_for","minutes":10}"#),
            "{text}"
        );
        assert_eq!(serde_json::from_str::<ControlMessage>(&text).unwrap(), d);
    }

    #[test]
    fn newer_fields_are_tolerated() {
        let t = r#"{"type":"heartbeat","servers":[],"outbox_depth":3,"cpu":0.5}"#;
        let m: ProxyMessage = serde_json::from_str(t).unwrap();
        assert!(matches!(m, ProxyMessage::Heartbeat(h) if h.outbox_depth == 3));
    }

    #[test]
    fn the_digest_ignores_key_order_and_spacing_but_not_one_byte_of_content() {
        let a = json!({"command": "rm -rf /tmp/x", "cwd": "/", "opts": {"b": 1, "a": [1, 2]}});
        let b: serde_json::Value = serde_json::from_str(
            r#"{ "opts":{"a":[1,2],"b":1}, "cwd":"/", "command":"rm -rf /tmp/x" }"#,
        )
        .unwrap();
        assert_eq!(args_digest(&a), args_digest(&b));
        let c = json!({"command": "rm -rf /tmp/y", "cwd": "/", "opts": {"b": 1, "a": [1, 2]}});
        assert_ne!(args_digest(&a), args_digest(&c));
        assert_eq!(
            canonical_json(&json!({"b": "é\n", "a": null})),
            r#"{"a":null,"b":"é\n"}"#
        );
    }

    fn sealed_box(n: u8) -> crate::sealed::SealedBox {
        crate::sealed::SealedBox {
            alg: crate::sealed::SEAL_ALG.into(),
            enc: format!("enc{n}"),
            ct: format!("ct{n}"),
        }
    }

    fn secrets_messages() -> (Vec<ControlMessage>, Vec<ProxyMessage>) {
        let push = SecretsPush {
            keys: vec![WrappedOrgKey {
                key_version: 2,
                public_key: "cHVi".into(),
                wrapped: sealed_box(1),
            }],
            secrets: vec![SealedSecret {
                name: "GITHUB_TOKEN".into(),
                version: 3,
                key_version: 2,
                sealed: sealed_box(2),
                services: vec!["github".into()],
                labels: BTreeMap::from([("team".into(), "infra".into())]),
            }],
            rotation_required: Some("device laptop-7 was revoked".into()),
        };
        let control = vec![
            ControlMessage::Secrets(push),
            ControlMessage::KeyChallenge(KeyChallenge {
                challenge_id: "ch_1".into(),
                key_version: 2,
                sealed: sealed_box(3),
            }),
        ];
        let proxy = vec![
            ProxyMessage::KeyProof(KeyProof {
                challenge_id: "ch_1".into(),
                key_version: 2,
                proof: Some("ab".repeat(32)),
                error: None,
            }),
            ProxyMessage::SecretsUsed(SecretsUsed {
                used: vec![SecretUse {
                    name: "GITHUB_TOKEN".into(),
                    version: 3,
                    how: "env".into(),
                }],
            }),
        ];
        (control, proxy)
    }

    #[test]
    fn secrets_messages_round_trip_with_their_type_tags() {
        let (control, proxy) = secrets_messages();
        for (m, tag) in control.into_iter().zip(["secrets", "key_challenge"]) {
            let text = serde_json::to_string(&m).unwrap();
            assert!(text.starts_with(&format!(r#"{{"type":"{tag}""#)), "{text}");
            assert_eq!(serde_json::from_str::<ControlMessage>(&text).unwrap(), m);
        }
        for (m, tag) in proxy.into_iter().zip(["key_proof", "secrets_used"]) {
            let text = serde_json::to_string(&m).unwrap();
            assert!(text.starts_with(&format!(r#"{{"type":"{tag}""#)), "{text}");
            assert_eq!(serde_json::from_str::<ProxyMessage>(&text).unwrap(), m);
        }
    }

    #[test]
    fn optional_secrets_fields_default_when_absent() {
        let text = r#"{"type":"secrets","keys":[],"secrets":[{"name":"A","version":1,
            "key_version":1,"sealed":{"alg":"x","enc":"e","ct":"c"}}]}"#;
        let ControlMessage::Secrets(push) = serde_json::from_str(text).unwrap() else {
            panic!("not a secrets push")
        };
        assert_eq!(push.rotation_required, None);
        assert!(push.secrets[0].services.is_empty(), "empty: every service");
        assert!(push.secrets[0].labels.is_empty());
        let text = r#"{"type":"key_proof","challenge_id":"c","key_version":1}"#;
        let ProxyMessage::KeyProof(proof) = serde_json::from_str(text).unwrap() else {
            panic!("not a key proof")
        };
        assert_eq!((proof.proof, proof.error), (None, None));
        // A newer peer's extra fields are tolerated.
        let text = r#"{"type":"secrets_used","used":[],"since":5}"#;
        assert!(matches!(
            serde_json::from_str::<ProxyMessage>(text).unwrap(),
            ProxyMessage::SecretsUsed(u) if u.used.is_empty()
        ));
    }

    #[test]
    fn a_peer_from_before_secrets_ignores_the_new_messages() {
        // The message sets as they were before secrets, with the same serde attributes.
        #[derive(Debug, PartialEq, Deserialize)]
        #[serde(tag = "type", rename_all = "snake_case")]
        enum OldControlMessage {
            Challenge(Challenge),
            Welcome(Welcome),
            Policy(PolicyPush),
            AuditAck(AuditAck),
            ApprovalAccepted(ApprovalAccepted),
            ApprovalDecision(ApprovalDecision),
            Revoked(Revoked),
            Error(LinkError),
            #[serde(other)]
            Unknown,
        }
        #[derive(Debug, PartialEq, Deserialize)]
        #[serde(tag = "type", rename_all = "snake_case")]
        enum OldProxyMessage {
            Hello(Hello),
            Auth(AuthProof),
            Heartbeat(Heartbeat),
            AuditBatch(AuditBatch),
            ApprovalRequest(Box<ApprovalRequest>),
            ApprovalCancel(ApprovalCancel),
            #[serde(other)]
            Unknown,
        }
        let (control, proxy) = secrets_messages();
        for m in control {
            let text = serde_json::to_string(&m).unwrap();
            let old: OldControlMessage = serde_json::from_str(&text).unwrap();
            assert_eq!(old, OldControlMessage::Unknown, "{text}");
        }
        for m in proxy {
            let text = serde_json::to_string(&m).unwrap();
            let old: OldProxyMessage = serde_json::from_str(&text).unwrap();
            assert_eq!(old, OldProxyMessage::Unknown, "{text}");
        }
        // And the old messages still mean the same to the new side.
        let revoked =
            serde_json::to_string(&ControlMessage::Revoked(Revoked { reason: "r".into() }))
                .unwrap();
        assert!(matches!(
            serde_json::from_str::<OldControlMessage>(&revoked).unwrap(),
            OldControlMessage::Revoked(r) if r.reason == "r"
        ));
    }

    #[test]
    fn the_auth_message_binds_device_nonce_and_server() {
        let m = auth_message("dev", "n0nce", "https://cp.example");
        assert_eq!(
            m,
            b"flowlink-link-v1\ndev\nn0nce\nhttps://cp.example".to_vec()
        );
        assert_ne!(m, auth_message("dev", "n0nce", "https://evil.example"));
    }
}
