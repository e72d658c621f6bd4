//! MCP method names and the few MCP shapes the relay reads.

use serde_json::Value;

/// Client → server handshake (revisions up to 2025-11-25).
pub const INITIALIZE: &str = "initialize";
/// Stateless discovery probe (revision 2026-07-28 and later).
pub const SERVER_DISCOVER: &str = "server/discover";
/// Sent by the client after a successful `initialize`.
pub const INITIALIZED: &str = "notifications/initialized";
/// Tool listing.
pub const TOOLS_LIST: &str = "tools/list";
/// Tool invocation: the call FlowLink decides on.
pub const TOOLS_CALL: &str = "tools/call";
/// The server's tool list changed.
pub const TOOLS_LIST_CHANGED: &str = "notifications/tools/list_changed";
/// Cancellation of a request, in either direction.
pub const CANCELLED: &str = "notifications/cancelled";
/// Progress of a request, keyed by the request's `progressToken`.
pub const PROGRESS: &str = "notifications/progress";
/// Server → client request asking the user for input.
pub const ELICITATION_CREATE: &str = "elicitation/create";

/// Who is at one end of a session, as announced in `initialize` / `server/discover`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerInfo {
    /// `clientInfo.name` or `serverInfo.name`.
    pub name: Option<String>,
    /// `clientInfo.version` or `serverInfo.version`.
    pub version: Option<String>,
}

impl PeerInfo {
    /// Reads `{name, version}` from an `Implementation` object.
    pub fn from_implementation(v: Option<&Value>) -> PeerInfo {
        let s = |k: &str| {
            v.and_then(|o| o.get(k))
                .and_then(Value::as_str)
                .map(str::to_owned)
        };
        PeerInfo {
            name: s("name"),
            version: s("version"),
        }
    }
}

/// What the proxy learns from the client's `initialize` request (or `server/discover`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ClientHello {
    /// The client application.
    pub client: PeerInfo,
    /// The protocol revision the client asked for.
    pub protocol_version: Option<String>,
    /// The client's declared capabilities (`elicitation`, `sampling`, `roots`, …).
    pub capabilities: Value,
}

impl ClientHello {
    /// Reads the params of `initialize` or `server/discover`.
    pub fn from_params(params: Option<&Value>) -> ClientHello {
        let get = |k: &str| params.and_then(|p| p.get(k));
        ClientHello {
            client: PeerInfo::from_implementation(get("clientInfo")),
            protocol_version: get("protocolVersion")
                .and_then(Value::as_str)
                .map(str::to_owned),
            capabilities: get("capabilities").cloned().unwrap_or(Value::Null),
        }
    }

    /// Whether the client said it can answer `elicitation/create` requests in form mode.
    pub fn supports_form_elicitation(&self) -> bool {
        match self.capabilities.get("elicitation") {
            None | Some(Value::Null) => false,
            // An empty object means form mode (revision 2025-06-18); later revisions list modes.
            Some(Value::Object(m)) => m.is_empty() || m.contains_key("form"),
            Some(_) => true,
        }
    }
}

/// What the proxy learns from the server's answer to `initialize` (or `server/discover`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ServerHello {
    /// The server application.
    pub server: PeerInfo,
    /// The protocol revision the server chose.
    pub protocol_version: Option<String>,
    /// The server's declared capabilities.
    pub capabilities: Value,
}

impl ServerHello {
    /// Reads the result of `initialize` or `server/discover`.
    pub fn from_result(result: Option<&Value>) -> ServerHello {
        let get = |k: &str| result.and_then(|p| p.get(k));
        // `server/discover` results list supported versions instead of one chosen version; the
        // newest is what a current client will speak (dates sort as text).
        let version = get("protocolVersion")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .or_else(|| {
                get("supportedVersions")
                    .and_then(Value::as_array)
                    .and_then(|a| a.iter().filter_map(Value::as_str).max())
                    .map(str::to_owned)
            });
        // The stateless revision moves `serverInfo` into `_meta`.
        let info = get("serverInfo").or_else(|| get("_meta").and_then(|m| m.get(META_SERVER_INFO)));
        ServerHello {
            server: PeerInfo::from_implementation(info),
            protocol_version: version,
            capabilities: get("capabilities").cloned().unwrap_or(Value::Null),
        }
    }
}

/// Whether a protocol revision requires `resultType` on every result (2026-07-28 and later).
pub fn requires_result_type(protocol_version: Option<&str>) -> bool {
    protocol_version.is_some_and(|v| v >= "2026-07-28")
}

/// `_meta` key under which 2026-07-28 clients send `clientInfo` with every request.
pub const META_CLIENT_INFO: &str = "io.modelcontextprotocol/clientInfo";
/// `_meta` key under which 2026-07-28 clients send their protocol revision with every request.
pub const META_PROTOCOL_VERSION: &str = "io.modelcontextprotocol/protocolVersion";
/// `_meta` key under which 2026-07-28 servers send `serverInfo` with results.
pub const META_SERVER_INFO: &str = "io.modelcontextprotocol/serverInfo";
/// `_meta` key under which 2026-07-28 clients send their capabilities with every request.
pub const META_CLIENT_CAPABILITIES: &str = "io.modelcontextprotocol/clientCapabilities";

impl ClientHello {
    /// Reads the per-request client identity of the stateless revision from `params._meta`.
    /// `None` when the request carries none.
    pub fn from_request_meta(params: Option<&Value>) -> Option<ClientHello> {
        let meta = params?.get("_meta")?;
        let info = meta.get(META_CLIENT_INFO)?;
        Some(ClientHello {
            client: PeerInfo::from_implementation(Some(info)),
            protocol_version: meta
                .get(META_PROTOCOL_VERSION)
                .and_then(Value::as_str)
                .map(str::to_owned),
            capabilities: meta
                .get(META_CLIENT_CAPABILITIES)
                .cloned()
                .unwrap_or(Value::Null),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_hello() {
        let c = ClientHello::from_params(Some(&json!({
            "protocolVersion":"2025-06-18",
            "capabilities":{"elicitation":{}},
            "clientInfo":{"name":"claude-code","version":"2.1.0"}
        })));
        assert_eq!(c.client.name.as_deref(), Some("claude-code"));
        assert!(c.supports_form_elicitation());
        let c = ClientHello::from_params(Some(&json!({"capabilities":{"elicitation":{"url":{}}}})));
        assert!(!c.supports_form_elicitation());
        let s = ServerHello::from_result(Some(
            &json!({"protocolVersion":"2025-11-25","serverInfo":{"name":"everything","version":"1"}}),
        ));
        assert_eq!(s.server.name.as_deref(), Some("everything"));
        assert!(requires_result_type(Some("2026-07-28")));
        let d = ServerHello::from_result(Some(&json!({
            "supportedVersions": ["2025-11-25", "2026-07-28"],
            "_meta": {"io.modelcontextprotocol/serverInfo": {"name": "modern", "version": "2"}}
        })));
        assert_eq!(d.protocol_version.as_deref(), Some("2026-07-28"));
        assert_eq!(d.server.name.as_deref(), Some("modern"));
        let c = ClientHello::from_request_meta(Some(&json!({"_meta": {
            "io.modelcontextprotocol/clientInfo": {"name": "cli", "version": "1"},
            "io.modelcontextprotocol/protocolVersion": "2026-07-28"
        }})))
        .unwrap();
        assert_eq!(c.client.name.as_deref(), Some("cli"));
        assert_eq!(c.protocol_version.as_deref(), Some("2026-07-28"));
        assert!(!requires_result_type(Some("2025-11-25")));
    }
}
