//! Secret detection and redaction in tool results.
//!
//! A first pass runs every detector at once as a [`RegexSet`] (one scan of the text); only the
//! detectors that matched are then run on their own to find positions, and their candidates are
//! validated (entropy, placeholders, JWT header). Overlapping matches keep the most specific
//! detector.

use std::sync::OnceLock;

use regex::{Regex, RegexSet};

use super::super::{Category, ShieldFinding};

/// A secret found in text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SecretMatch {
    /// Which detector found it (`aws_access_key_id`, `github_token`, …).
    pub detector: &'static str,
    /// Byte offset where the secret starts.
    pub start: usize,
    /// Byte offset just after the secret.
    pub end: usize,
}

/// How a detector's candidates are checked before they count.
#[derive(Clone, Copy)]
enum Check {
    None,
    /// The secret capture must have entropy ≥ 3.5 bits/char and length ≥ 12, and not look like a
    /// placeholder or code.
    Generic,
    /// The header must decode to JSON naming an algorithm or type.
    Jwt,
    /// The password must not be a placeholder.
    Password,
}

struct Detector {
    name: &'static str,
    id: &'static str,
    /// Regex; capture group 1, when present, is the secret (else the whole match).
    pattern: &'static str,
    check: Check,
    /// Lower wins when matches overlap.
    priority: u8,
}

const DETECTORS: &[Detector] = &[
    Detector {
        name: "private_key",
        id: "secret.private_key",
        pattern: r"-----BEGIN[ A-Z0-9_-]{0,100}PRIVATE KEY(?: BLOCK)?-----[\s\S]{16,}?-----END[ A-Z0-9_-]{0,100}PRIVATE KEY(?: BLOCK)?-----",
        check: Check::None,
        priority: 1,
    },
    Detector {
        name: "gcp_service_account",
        id: "secret.gcp_service_account",
        pattern: r#""private_key"\s*:\s*"(-----BEGIN[^"]{20,}?)""#,
        check: Check::None,
        priority: 0,
    },
    Detector {
        name: "aws_access_key_id",
        id: "secret.aws_access_key_id",
        pattern: r"\b((?:A3T[A-Z0-9]|AKIA|ASIA|ABIA|ACCA)[A-Z2-7]{16})\b",
        check: Check::None,
        priority: 2,
    },
    Detector {
        name: "aws_secret_access_key",
        id: "secret.aws_secret_access_key",
        pattern: r#"(?i)\baws_?(?:secret_?access_?key|secret_?key|secret)\b["']?\s*(?:[:=]|=>)\s*["']?([A-Za-z0-9/+]{40})(?:[^A-Za-z0-9/+=]|$)"#,
        check: Check::None,
        priority: 2,
    },
    Detector {
        name: "github_token",
        id: "secret.github_token",
        pattern: r"\b(gh[pousr]_[A-Za-z0-9]{36,255})\b",
        check: Check::None,
        priority: 2,
    },
    Detector {
        name: "github_pat",
        id: "secret.github_pat",
        pattern: r"\b(github_pat_[A-Za-z0-9]{22}_[A-Za-z0-9]{59})\b",
        check: Check::None,
        priority: 2,
    },
    Detector {
        name: "gitlab_token",
        id: "secret.gitlab_token",
        pattern: r"\b(gl(?:pat|dt|rt|ptt|cbt|oas)-[A-Za-z0-9_-]{20,})",
        check: Check::None,
        priority: 2,
    },
    Detector {
        name: "slack_token",
        id: "secret.slack_token",
        pattern: r"\b(xox[baprse]-[A-Za-z0-9-]{10,})",
        check: Check::None,
        priority: 2,
    },
    Detector {
        name: "slack_webhook",
        id: "secret.slack_webhook",
        pattern: r"(https://hooks\.slack\.com/(?:services|workflows|triggers)/[A-Za-z0-9/_+-]{20,})",
        check: Check::None,
        priority: 2,
    },
    Detector {
        name: "stripe_key",
        id: "secret.stripe_key",
        pattern: r"\b((?:sk|rk)_(?:live|test|prod)_[A-Za-z0-9]{16,})\b",
        check: Check::None,
        priority: 2,
    },
    Detector {
        name: "google_api_key",
        id: "secret.google_api_key",
        pattern: r"\b(AIza[0-9A-Za-z_-]{35})(?:[^0-9A-Za-z_-]|$)",
        check: Check::None,
        priority: 2,
    },
    Detector {
        name: "jwt",
        id: "secret.jwt",
        pattern: r"\b(eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*)",
        check: Check::Jwt,
        priority: 3,
    },
    Detector {
        name: "anthropic_key",
        id: "secret.anthropic_key",
        pattern: r"\b(sk-ant-[a-z]{2,10}[0-9]{2}-[A-Za-z0-9_-]{40,})",
        check: Check::None,
        priority: 1,
    },
    Detector {
        name: "openai_key",
        id: "secret.openai_key",
        pattern: r"\b(sk-(?:(?:proj|svcacct|admin)-[A-Za-z0-9_-]{40,}|[A-Za-z0-9]{20}T3BlbkFJ[A-Za-z0-9]{20}|[A-Za-z0-9]{48}))(?:[^A-Za-z0-9_-]|$)",
        check: Check::None,
        priority: 2,
    },
    Detector {
        name: "npm_token",
        id: "secret.npm_token",
        pattern: r"\b(npm_[A-Za-z0-9]{36})\b",
        check: Check::None,
        priority: 2,
    },
    Detector {
        name: "pypi_token",
        id: "secret.pypi_token",
        pattern: r"\b(pypi-AgEIcHlwaS5vcmc[A-Za-z0-9_-]{50,})",
        check: Check::None,
        priority: 2,
    },
    Detector {
        name: "twilio_api_key",
        id: "secret.twilio_api_key",
        pattern: r"\b(SK[0-9a-fA-F]{32})\b",
        check: Check::None,
        priority: 2,
    },
    Detector {
        name: "sendgrid_api_key",
        id: "secret.sendgrid_api_key",
        pattern: r"\b(SG\.[A-Za-z0-9_-]{22}\.[A-Za-z0-9_-]{43})(?:[^A-Za-z0-9_-]|$)",
        check: Check::None,
        priority: 2,
    },
    Detector {
        name: "heroku_api_key",
        id: "secret.heroku_api_key",
        pattern: r"(?i)heroku[a-z_ -]{0,20}(?:key|token|secret)[^0-9a-f\n]{0,10}\b([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})\b",
        check: Check::None,
        priority: 2,
    },
    Detector {
        name: "database_url",
        id: "secret.database_url",
        pattern: r#"(?i)\b(?:postgres(?:ql)?|mysql|mariadb|mongodb(?:\+srv)?|rediss?|amqps?|mssql|sqlserver|clickhouse)://[^\s:/@'"]{1,100}:([^\s@'"/]{1,200})@[^\s'"]+"#,
        check: Check::Password,
        priority: 2,
    },
    Detector {
        name: "generic_secret",
        id: "secret.generic_secret",
        pattern: r#"(?i)\b[a-z0-9_.-]{0,30}(?:password|passwd|pwd|secret|token|api[_-]?key|apikey|access[_-]?key|auth[_-]?key|client[_-]?secret|private[_-]?key)\b["']?\s*(?:=|:|:=|=>)\s*["']?([^\s"'`,;&<>(){}\[\]]{12,200})"#,
        check: Check::Generic,
        priority: 9,
    },
];

struct Compiled {
    set: RegexSet,
    each: Vec<Option<Regex>>,
    aws_secret_nearby: Option<Regex>,
}

fn compiled() -> &'static Compiled {
    static C: OnceLock<Compiled> = OnceLock::new();
    C.get_or_init(|| {
        // ASCII word boundaries: Unicode ones make the fast DFA give up on non-ASCII text.
        let pats: Vec<String> = DETECTORS
            .iter()
            .map(|d| d.pattern.replace(r"\b", r"(?-u:\b)"))
            .collect();
        Compiled {
            set: RegexSet::new(&pats).unwrap_or_else(|_| RegexSet::empty()),
            each: pats.iter().map(|p| Regex::new(p).ok()).collect(),
            aws_secret_nearby: Regex::new(
                r"(?:^|[^A-Za-z0-9/+=])([A-Za-z0-9/+]{40})(?:[^A-Za-z0-9/+=]|$)",
            )
            .ok(),
        }
    })
}

/// Shannon entropy of `s`, in bits per character.
pub(super) fn entropy(s: &str) -> f64 {
    let mut counts = [0u32; 256];
    let mut n = 0u32;
    for b in s.bytes() {
        counts[b as usize] += 1;
        n += 1;
    }
    if n == 0 {
        return 0.0;
    }
    let n = f64::from(n);
    counts
        .iter()
        .filter(|c| **c > 0)
        .map(|c| {
            let p = f64::from(*c) / n;
            -p * p.log2()
        })
        .sum()
}

const PLACEHOLDERS: &[&str] = &[
    "password",
    "passwd",
    "pass",
    "pwd",
    "secret",
    "changeme",
    "example",
    "test",
    "xxxx",
    "****",
    "redacted",
    "your",
    "placeholder",
    "dummy",
    "sample",
    "none",
    "null",
    "undefined",
    "todo",
];

fn looks_placeholder(v: &str) -> bool {
    let l = v.to_ascii_lowercase();
    if l.starts_with(['$', '<', '{', '%', '*'])
        || l.starts_with("env")
        || l.starts_with("os.")
        || l.contains("process.env")
    {
        return true;
    }
    if l.chars()
        .all(|c| c == 'x' || c == '*' || c == '.' || c == '-')
    {
        return true;
    }
    PLACEHOLDERS.iter().any(|p| {
        l == *p || (l.len() < 24 && l.contains(p) && !l.chars().any(|c| c.is_ascii_digit()))
    })
}

fn valid(check: Check, secret: &str) -> bool {
    match check {
        Check::None => true,
        Check::Password => !looks_placeholder(secret),
        Check::Generic => {
            secret.len() >= 12
                && entropy(secret) >= 3.5
                && !looks_placeholder(secret)
                // identifiers in code: `get_token_from_env`, `this.config.apiKey`
                && !secret.chars().all(|c| c.is_ascii_alphabetic() || c == '_' || c == '.')
        }
        Check::Jwt => {
            let header = secret.split('.').next().unwrap_or("");
            match base64url_decode(header) {
                Some(h) => {
                    let h = String::from_utf8_lossy(&h);
                    h.starts_with('{') && (h.contains("\"alg\"") || h.contains("\"typ\""))
                }
                None => false,
            }
        }
    }
}

fn base64url_decode(s: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let mut acc = 0u32;
    let mut bits = 0u32;
    for c in s.bytes().take(4096) {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'-' | b'+' => 62,
            b'_' | b'/' => 63,
            b'=' => break,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

/// Secrets in `text`, ordered by position, never overlapping.
pub fn find_secrets(text: &str) -> Vec<SecretMatch> {
    let c = compiled();
    let mut cands: Vec<(u8, SecretMatch)> = Vec::new();
    for i in c.set.matches(text).iter() {
        let (Some(d), Some(Some(re))) = (DETECTORS.get(i), c.each.get(i)) else {
            continue;
        };
        for caps in re.captures_iter(text) {
            let Some(m) = caps.get(1).or_else(|| caps.get(0)) else {
                continue;
            };
            if m.start() == m.end() || !valid(d.check, m.as_str()) {
                continue;
            }
            cands.push((
                d.priority,
                SecretMatch {
                    detector: d.name,
                    start: m.start(),
                    end: m.end(),
                },
            ));
            if d.name == "aws_access_key_id" {
                // The secret key usually sits right after the key id.
                let from = m.end();
                let mut to = (from + 300).min(text.len());
                while !text.is_char_boundary(to) {
                    to -= 1;
                }
                if let Some(s) = text
                    .get(from..to)
                    .zip(c.aws_secret_nearby.as_ref())
                    .and_then(|(w, re)| re.captures(w))
                    .and_then(|cp| cp.get(1))
                    && entropy(s.as_str()) >= 4.0
                {
                    cands.push((
                        2,
                        SecretMatch {
                            detector: "aws_secret_access_key",
                            start: from + s.start(),
                            end: from + s.end(),
                        },
                    ));
                }
            }
        }
    }
    // Most specific first, then longest; keep what does not overlap anything kept.
    cands.sort_by(|a, b| {
        a.0.cmp(&b.0)
            .then((b.1.end - b.1.start).cmp(&(a.1.end - a.1.start)))
    });
    let mut kept: Vec<SecretMatch> = Vec::new();
    for (_, m) in cands {
        if !kept.iter().any(|k| m.start < k.end && k.start < m.end) {
            kept.push(m);
        }
    }
    kept.sort_by_key(|m| m.start);
    kept
}

fn id_of(detector: &str) -> &'static str {
    DETECTORS
        .iter()
        .find(|d| d.name == detector)
        .map_or("secret.unknown", |d| d.id)
}

/// Replaces every secret with `[REDACTED:<detector>]`; `None` when nothing was found.
///
/// The findings (one per detector) name the detector only, never the secret.
pub fn redact_secrets(text: &str) -> Option<(String, Vec<ShieldFinding>)> {
    let found = find_secrets(text);
    if found.is_empty() {
        return None;
    }
    let mut out = String::with_capacity(text.len());
    let mut at = 0;
    let mut findings: Vec<ShieldFinding> = Vec::new();
    for m in &found {
        out.push_str(text.get(at..m.start).unwrap_or(""));
        out.push_str("[REDACTED:");
        out.push_str(m.detector);
        out.push(']');
        at = m.end;
        if findings.iter().any(|f| f.evidence == m.detector) {
            continue;
        }
        findings.push(ShieldFinding {
            id: id_of(m.detector),
            category: Category::Secret,
            risk: 70,
            explanation: format!(
                "the tool result contained a secret ({}); FlowLink replaced it with [REDACTED:{}] before the model saw it. Rotate it if it may have leaked, and keep secrets out of tool output.",
                m.detector.replace('_', " "),
                m.detector
            ),
            evidence: m.detector.to_owned(),
        });
    }
    out.push_str(text.get(at..).unwrap_or(""));
    Some((out, findings))
}
