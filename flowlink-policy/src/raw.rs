//! The policy file exactly as written: serde structs with spans, validated and compiled in
//! `policy.rs`. Every table denies unknown fields.

use std::collections::BTreeMap;
use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde_json::Value;
use toml::Spanned;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawPolicy {
    pub(crate) version: Spanned<i64>,
    #[serde(default)]
    pub(crate) default_action: Option<Spanned<String>>,
    #[serde(default)]
    pub(crate) hide_blocked_tools: Option<bool>,
    #[serde(default)]
    pub(crate) offline: Option<RawOffline>,
    #[serde(default)]
    pub(crate) rules: Vec<Spanned<RawRule>>,
    #[serde(default)]
    pub(crate) rate_limits: Vec<Spanned<RawRateLimit>>,
    #[serde(default)]
    pub(crate) shield: Option<RawShield>,
    #[serde(default)]
    pub(crate) secrets: Option<Spanned<RawSecrets>>,
}

/// `[secrets]`: what the proxy injects into the MCP server and which `{{secret:NAME}}`
/// placeholders the agent may use.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawSecrets {
    #[serde(default)]
    pub(crate) placeholders: Option<Spanned<Vec<Spanned<String>>>>,
    #[serde(default)]
    pub(crate) inject: Vec<Spanned<RawInject>>,
    #[serde(default)]
    pub(crate) vault: Option<Spanned<RawVault>>,
}

/// One `[[secrets.inject]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawInject {
    #[serde(default)]
    pub(crate) secret: Option<Spanned<String>>,
    #[serde(default)]
    pub(crate) vault: Option<Spanned<String>>,
    #[serde(default)]
    pub(crate) name: Option<Spanned<String>>,
    #[serde(default)]
    pub(crate) env: Option<Spanned<String>>,
    #[serde(default)]
    pub(crate) file: Option<Spanned<String>>,
}

/// `[secrets.vault]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawVault {
    pub(crate) address: Spanned<String>,
    #[serde(default)]
    pub(crate) namespace: Option<Spanned<String>>,
    pub(crate) auth: Spanned<String>,
    #[serde(default)]
    pub(crate) role_id: Option<Spanned<String>>,
    #[serde(default)]
    pub(crate) secret_id_secret: Option<Spanned<String>>,
    #[serde(default)]
    pub(crate) token_secret: Option<Spanned<String>>,
    #[serde(default)]
    pub(crate) ca_file: Option<Spanned<String>>,
    #[serde(default)]
    pub(crate) cache_secs: Option<Spanned<i64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawShield {
    #[serde(default)]
    pub(crate) enabled: Option<bool>,
    #[serde(default)]
    pub(crate) block_at: Option<Spanned<i64>>,
    #[serde(default)]
    pub(crate) approve_at: Option<Spanned<i64>>,
    #[serde(default)]
    pub(crate) priority: Option<i64>,
    #[serde(default)]
    pub(crate) protected_branches: Option<Vec<String>>,
    #[serde(default)]
    pub(crate) production: Option<Vec<String>>,
    #[serde(default)]
    pub(crate) disposable: Option<Vec<String>>,
    #[serde(default)]
    pub(crate) protected_paths: Option<Vec<String>>,
    #[serde(default)]
    pub(crate) sql_dialect: Option<Spanned<String>>,
    #[serde(default)]
    pub(crate) map: Vec<Spanned<RawMapping>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawMapping {
    pub(crate) tool: Spanned<OneOrMany>,
    pub(crate) pointer: Spanned<String>,
    pub(crate) kind: Spanned<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawOffline {
    #[serde(default)]
    pub(crate) approve: Option<Spanned<String>>,
    #[serde(default)]
    pub(crate) confirm: Option<Spanned<String>>,
    #[serde(default)]
    pub(crate) confirm_timeout_secs: Option<Spanned<i64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRule {
    pub(crate) id: Spanned<String>,
    #[serde(default)]
    pub(crate) priority: Option<i64>,
    #[serde(default)]
    pub(crate) description: Option<String>,
    #[serde(default)]
    pub(crate) agent: Option<Spanned<OneOrMany>>,
    #[serde(default)]
    pub(crate) service: Option<Spanned<OneOrMany>>,
    #[serde(default)]
    pub(crate) tool: Option<Spanned<OneOrMany>>,
    #[serde(default)]
    pub(crate) labels: Option<BTreeMap<String, Spanned<String>>>,
    pub(crate) action: Spanned<String>,
    #[serde(default)]
    pub(crate) message: Option<String>,
    #[serde(default)]
    pub(crate) when: Vec<Spanned<RawCondition>>,
    #[serde(default)]
    pub(crate) finding: Option<Spanned<OneOrMany>>,
    #[serde(default)]
    pub(crate) min_risk: Option<Spanned<i64>>,
    #[serde(default)]
    pub(crate) approvers: Option<Spanned<Vec<String>>>,
    #[serde(default)]
    pub(crate) approvals: Option<Spanned<i64>>,
    #[serde(default)]
    pub(crate) approval_timeout_secs: Option<Spanned<i64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawCondition {
    pub(crate) pointer: Spanned<String>,
    #[serde(default)]
    pub(crate) glob: Option<Spanned<String>>,
    #[serde(default)]
    pub(crate) regex: Option<Spanned<String>>,
    #[serde(default)]
    pub(crate) equals: Option<Value>,
    #[serde(default)]
    pub(crate) not_equals: Option<Value>,
    #[serde(default)]
    pub(crate) gt: Option<f64>,
    #[serde(default)]
    pub(crate) gte: Option<f64>,
    #[serde(default)]
    pub(crate) lt: Option<f64>,
    #[serde(default)]
    pub(crate) lte: Option<f64>,
    #[serde(default)]
    pub(crate) present: Option<bool>,
    #[serde(default)]
    pub(crate) contains: Option<String>,
    #[serde(default)]
    pub(crate) one_of: Option<Vec<Value>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRateLimit {
    pub(crate) id: Spanned<String>,
    pub(crate) scope: Spanned<String>,
    /// Documentation for people reading the file; the engine does not use it.
    #[serde(default, rename = "description")]
    pub(crate) _description: Option<String>,
    #[serde(default)]
    pub(crate) agent: Option<Spanned<OneOrMany>>,
    #[serde(default)]
    pub(crate) service: Option<Spanned<OneOrMany>>,
    #[serde(default)]
    pub(crate) tool: Option<Spanned<OneOrMany>>,
    #[serde(default)]
    pub(crate) per_second: Option<Spanned<i64>>,
    #[serde(default)]
    pub(crate) per_minute: Option<Spanned<i64>>,
    #[serde(default)]
    pub(crate) per_hour: Option<Spanned<i64>>,
    #[serde(default)]
    pub(crate) burst: Option<Spanned<i64>>,
}

/// `"glob"` or `["glob", ...]`.
#[derive(Debug)]
pub(crate) struct OneOrMany(pub(crate) Vec<String>);

impl<'de> Deserialize<'de> for OneOrMany {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = OneOrMany;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a glob string or a list of glob strings")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<OneOrMany, E> {
                Ok(OneOrMany(vec![v.to_owned()]))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<OneOrMany, A::Error> {
                let mut out = Vec::new();
                while let Some(s) = seq.next_element::<String>()? {
                    out.push(s);
                }
                Ok(OneOrMany(out))
            }
        }
        d.deserialize_any(V)
    }
}
