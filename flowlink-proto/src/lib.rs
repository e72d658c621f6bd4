//! `flowlink-proto` holds every type that crosses a wire or a disk between FlowLink components.
//!
//! * [`jsonrpc`] — the MCP stdio framing: one JSON-RPC 2.0 message (or, under protocol revision
//!   2025-03-26, one batch) per line. A message is kept as an ordered list of top-level members whose
//!   values stay raw JSON text, so the relay decodes only what a decision needs and forwards the rest
//!   byte for byte.
//! * [`audit`] — the versioned audit record schema: one [`audit::ToolCallRecord`] per tool call and
//!   one [`audit::SessionRecord`] per relay session.
//! * [`bundle`] — the signed policy bundle a proxy receives from the control plane (schema 1).
//! * [`link`] — enrolment and the proxy ↔ control-plane WebSocket messages (version 1), and the
//!   canonical argument digest approvals are bound to, and the secrets messages.
//! * [`sealed`] — sealed boxes (RFC 9180 HPKE base mode: X25519, HKDF-SHA256, AES-256-GCM) for
//!   secrets, wrapped org keys and key challenges, each bound to what it is for; secret names.
//!
//! Invariant: this crate does no I/O. Anything that derives `Serialize` here is a format other
//! components (and older or newer versions of them) read, so fields are only ever added, with
//! defaults, and `schema` numbers say which shape a record has.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod audit;
pub mod bundle;
pub mod jsonrpc;
pub mod link;
pub mod mcp;
pub mod sealed;
