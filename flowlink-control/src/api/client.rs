//! Who is on the other end of the connection: the client's address and whether it used HTTPS.
//! Forwarding headers are believed only from configured trusted proxies.

use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, Request};

use crate::config::{Config, canonical_ip};

/// The client as far as this server can tell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientInfo {
    /// The client's address: the peer's, or from `X-Forwarded-For` when the peer is a trusted proxy.
    pub ip: IpAddr,
    /// Whether the client reached us over HTTPS (directly, or at a trusted proxy).
    pub https: bool,
    /// The `User-Agent`, truncated.
    pub user_agent: String,
}

impl ClientInfo {
    /// Works out the client of `req`.
    pub fn from_request(req: &Request, config: &Config) -> ClientInfo {
        let peer = req
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| canonical_ip(c.0.ip()))
            // Without connection info (in-process tests) nothing is known: treat as unspecified.
            .unwrap_or(IpAddr::from([0, 0, 0, 0]));
        let mut ip = peer;
        let mut https = config.serves_tls();
        let trusted = |a: IpAddr| config.trusted_proxies.iter().any(|n| n.contains(a));
        if trusted(peer) {
            // X-Forwarded-For: client, proxy1, proxy2. Walk from the right, skipping trusted
            // hops; the first untrusted address is the client. A malformed entry stops the walk.
            let forwarded: Vec<&str> = req
                .headers()
                .get_all("x-forwarded-for")
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(','))
                .map(str::trim)
                .collect();
            for hop in forwarded.iter().rev() {
                match hop.parse::<IpAddr>() {
                    Ok(a) => {
                        ip = canonical_ip(a);
                        if !trusted(ip) {
                            break;
                        }
                    }
                    Err(_) => break,
                }
            }
            if let Some(proto) = req
                .headers()
                .get("x-forwarded-proto")
                .and_then(|v| v.to_str().ok())
            {
                https = proto
                    .split(',')
                    .next()
                    .is_some_and(|p| p.trim().eq_ignore_ascii_case("https"));
            }
        }
        let user_agent: String = req
            .headers()
            .get(axum::http::header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .chars()
            .take(200)
            .collect();
        ClientInfo {
            ip,
            https,
            user_agent,
        }
    }
}
