//! The control plane's address: what is accepted, and the URLs derived from it.
//!
//! `https://` is required. `http://` is accepted only for a loopback host (`127.0.0.0/8`,
//! `::1`, `localhost`), where nothing leaves the machine, or when the operator passes
//! `--allow-insecure-ws` at enrolment (a control plane behind a TLS-terminating proxy on a
//! trusted network). The link follows the scheme: `wss://` for `https://`, `ws://` for `http://`.

use std::net::IpAddr;

use super::LinkError;

/// A checked control-plane URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerUrl {
    /// The URL without a trailing slash: `https://cp.example` or `https://example/flowlink`.
    base: String,
    secure: bool,
}

impl ServerUrl {
    /// Checks `raw` (see the module documentation).
    pub fn parse(raw: &str, allow_insecure: bool) -> Result<ServerUrl, LinkError> {
        let bad = |why: &str| LinkError::BadUrl {
            url: raw.to_owned(),
            why: why.to_owned(),
        };
        let url = url::Url::parse(raw.trim()).map_err(|e| bad(&e.to_string()))?;
        if url.query().is_some() || url.fragment().is_some() {
            return Err(bad("it must not have a query or a fragment"));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(bad("it must not carry a user name or password"));
        }
        let secure = match url.scheme() {
            "https" => true,
            "http" => false,
            other => {
                return Err(bad(&format!(
                    "the scheme is `{other}`; use https:// (or http:// for a control plane on this machine)"
                )));
            }
        };
        let host = url.host_str().ok_or_else(|| bad("it has no host"))?;
        if !secure && !allow_insecure && !is_loopback(host) {
            return Err(LinkError::InsecureUrl {
                url: raw.to_owned(),
            });
        }
        let base = url.as_str().trim_end_matches('/').to_owned();
        Ok(ServerUrl { base, secure })
    }

    /// The URL as enrolled, without a trailing slash (what the auth signature binds).
    pub fn base(&self) -> &str {
        &self.base
    }

    /// Whether the connection is TLS.
    pub fn is_secure(&self) -> bool {
        self.secure
    }

    /// `POST` here to enrol.
    pub fn enroll_url(&self) -> String {
        format!("{}/api/v1/enroll", self.base)
    }

    /// The WebSocket URL of the link.
    pub fn link_url(&self) -> String {
        let rest = self
            .base
            .strip_prefix("https://")
            .map(|r| format!("wss://{r}"))
            .or_else(|| {
                self.base
                    .strip_prefix("http://")
                    .map(|r| format!("ws://{r}"))
            })
            .unwrap_or_else(|| self.base.clone());
        format!("{rest}/api/v1/link")
    }
}

/// Whether `host` (as in a URL: brackets around IPv6) names this machine.
pub fn is_loopback(host: &str) -> bool {
    let h = host.trim_start_matches('[').trim_end_matches(']');
    if h.eq_ignore_ascii_case("localhost") {
        return true;
    }
    h.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn https_anywhere_http_only_on_loopback() {
        let u = ServerUrl::parse("https://cp.example/", false).expect("https");
        assert_eq!(u.base(), "https://cp.example");
        assert_eq!(u.link_url(), "wss://cp.example/api/v1/link");
        assert_eq!(u.enroll_url(), "https://cp.example/api/v1/enroll");
        for ok in [
            "http://127.0.0.1:8080",
            "http://127.3.4.5",
            "http://localhost:1",
            "http://[::1]:9",
        ] {
            let u = ServerUrl::parse(ok, false).expect(ok);
            assert!(u.link_url().starts_with("ws://"), "{ok}");
        }
        for refused in [
            "http://cp.example",
            "http://10.0.0.1",
            "http://127.0.0.1.example",
        ] {
            assert!(
                matches!(
                    ServerUrl::parse(refused, false),
                    Err(LinkError::InsecureUrl { .. })
                ),
                "{refused}"
            );
        }
        assert!(ServerUrl::parse("http://cp.example", true).is_ok());
    }

    #[test]
    fn other_schemes_and_credentials_are_refused() {
        for bad in [
            "ftp://x",
            "wss://cp.example",
            "https://user:pw@cp.example",
            "https://cp.example/?a=1",
            "not a url",
        ] {
            assert!(
                matches!(ServerUrl::parse(bad, true), Err(LinkError::BadUrl { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn a_path_prefix_is_kept() {
        let u = ServerUrl::parse("https://example.org/flowlink/", false).expect("ok");
        assert_eq!(u.base(), "https://example.org/flowlink");
        assert_eq!(u.link_url(), "wss://example.org/flowlink/api/v1/link");
    }
}
