//! The shield: what a tool call would actually do, whatever way it is written.
//!
//! Rules match names and arguments; the shield reads the *content* of arguments that are code —
//! shell commands, SQL, paths, URLs — with real parsers, and reports [`ShieldFinding`]s, each with
//! a category, a risk from 0 to 100 and an explanation a developer accepts. The policy turns the
//! highest risk into a verdict with its thresholds (`[shield] block_at`, `approve_at`), and rules
//! can test findings and risk directly.
//!
//! Risk bands every analyser follows:
//! - **80–100**: catastrophic or irreversible with no routine reason (deleting `/` or `~`, writing
//!   to disks, running remote code, `DROP TABLE`, force-pushing to a protected branch). Blocked by
//!   default.
//! - **40–79**: risky but legitimate once a person agrees (scoped deletes, every SQL write,
//!   `git reset --hard`, deploys, `sudo`, targets that cannot be resolved statically).
//!   Sent to approval by default.
//! - **1–39**: worth recording, routine (reads of sensitive-looking files inside the project,
//!   deleting regenerable build output).
//!
//! Invariant: analysis never fails open. Input that does not parse, or that exceeds the
//! [`Budget`], yields a finding of category [`Category::Analysis`] with a risk in the approval band
//! or above, never silence.

pub(crate) mod extract;
pub mod guardrails;
pub mod shell;
pub mod sql;

use std::fmt;

/// What kind of harm a finding is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Category {
    /// Deleting, overwriting or re-permissioning files and devices.
    Filesystem,
    /// Rewriting or deleting history and branches.
    Git,
    /// Kubernetes and Helm.
    Kubernetes,
    /// Terraform, Pulumi and other infrastructure-as-code.
    Infrastructure,
    /// AWS, Google Cloud, Azure command lines.
    Cloud,
    /// Docker and other container runtimes.
    Container,
    /// Databases, through SQL or their command-line clients.
    Database,
    /// The operating system: shutdown, users, firewalls, logs, persistence, privilege.
    System,
    /// Downloading and running code (`curl | sh`), decoded payloads, reverse shells.
    RemoteCode,
    /// Reading secrets and sending data off the host.
    Exfiltration,
    /// Publishing packages, deploying.
    Publishing,
    /// The input could not be analysed (parse error, budget exceeded, unresolvable target).
    Analysis,
    /// Tool descriptions or results that try to steer the model.
    Poisoning,
    /// Secrets in tool results.
    Secret,
}

impl Category {
    /// The snake_case name used in policies and records.
    pub fn as_str(self) -> &'static str {
        match self {
            Category::Filesystem => "filesystem",
            Category::Git => "git",
            Category::Kubernetes => "kubernetes",
            Category::Infrastructure => "infrastructure",
            Category::Cloud => "cloud",
            Category::Container => "container",
            Category::Database => "database",
            Category::System => "system",
            Category::RemoteCode => "remote_code",
            Category::Exfiltration => "exfiltration",
            Category::Publishing => "publishing",
            Category::Analysis => "analysis",
            Category::Poisoning => "poisoning",
            Category::Secret => "secret",
        }
    }
}

impl fmt::Display for Category {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One thing the shield noticed about a call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShieldFinding {
    /// Stable dotted id, `<category>.<what>`: `filesystem.delete_home`, `git.force_push_protected`,
    /// `database.drop_table`, `analysis.parse_error`. Rules match it with globs.
    pub id: &'static str,
    /// What kind of harm.
    pub category: Category,
    /// 0–100, see the module doc for the bands.
    pub risk: u8,
    /// For the developer and the agent: what it would do and what to do instead
    /// ("`rm -rf ~` deletes your whole home directory; delete the specific folder instead").
    pub explanation: String,
    /// The part of the input it is about (one command of a pipeline, one SQL statement),
    /// shortened to at most 200 characters.
    pub evidence: String,
}

/// What an argument's text is, for the analysers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum InputKind {
    /// A shell command line or script (POSIX sh / bash).
    Shell,
    /// One or more SQL statements.
    Sql,
    /// A file system path.
    Path,
    /// A URL.
    Url,
}

impl InputKind {
    /// The name used in policies (`shell`, `sql`, `path`, `url`).
    pub fn as_str(self) -> &'static str {
        match self {
            InputKind::Shell => "shell",
            InputKind::Sql => "sql",
            InputKind::Path => "path",
            InputKind::Url => "url",
        }
    }
    /// Parses [`InputKind::as_str`] output.
    pub fn parse(s: &str) -> Option<InputKind> {
        Some(match s {
            "shell" => InputKind::Shell,
            "sql" => InputKind::Sql,
            "path" => InputKind::Path,
            "url" => InputKind::Url,
            _ => return None,
        })
    }
}

/// Which SQL grammar to parse with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SqlDialect {
    /// Accepts the common subset of all of them.
    #[default]
    Generic,
    /// PostgreSQL.
    Postgres,
    /// MySQL / MariaDB.
    MySql,
    /// SQLite.
    Sqlite,
}

/// Bounds on the work one analysis may do. Exceeding one is a finding, never an allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    /// Longest input analysed, in bytes.
    pub max_input_bytes: usize,
    /// Deepest nesting of substitutions, subshells and `sh -c` strings followed.
    pub max_depth: usize,
    /// Most simple commands (or SQL statements) examined in one input.
    pub max_units: usize,
}

impl Default for Budget {
    fn default() -> Self {
        Budget {
            max_input_bytes: 64 * 1024,
            max_depth: 16,
            max_units: 2_000,
        }
    }
}

/// What the analysers need to know about the environment, from the policy's `[shield]` table.
#[derive(Debug, Clone)]
pub struct ShieldConfig {
    /// Branch names (globs) that must never be force-pushed or deleted.
    pub protected_branches: Vec<String>,
    /// Name patterns (globs, matched case-insensitively against namespaces, contexts, buckets,
    /// databases, stacks, workspaces) that mean a live production resource.
    pub production: Vec<String>,
    /// Name patterns that mean a disposable resource (scratch, test, preview…).
    pub disposable: Vec<String>,
    /// Paths (globs; `~` is the home directory) that must never be deleted or overwritten, on top
    /// of the built-in system directories.
    pub protected_paths: Vec<String>,
    /// Grammar for SQL.
    pub sql_dialect: SqlDialect,
    /// Work bounds.
    pub budget: Budget,
}

impl Default for ShieldConfig {
    fn default() -> Self {
        let s = |v: &[&str]| v.iter().map(|x| (*x).to_owned()).collect();
        ShieldConfig {
            protected_branches: s(&[
                "main",
                "master",
                "production",
                "prod",
                "release",
                "release/*",
            ]),
            production: s(&[
                "prod",
                "prod-*",
                "*-prod",
                "*-prod-*",
                "production",
                "production-*",
                "*-production",
                "live",
            ]),
            disposable: s(&[
                "staging",
                "staging-*",
                "*-staging",
                "preview",
                "preview-*",
                "*-preview",
                "tmp",
                "tmp-*",
                "*-tmp",
                "temp",
                "scratch",
                "scratch-*",
                "*-scratch",
                "test",
                "test-*",
                "*-test",
                "dev",
                "dev-*",
                "*-dev",
                "sandbox",
                "*-sandbox",
            ]),
            protected_paths: Vec::new(),
            sql_dialect: SqlDialect::Generic,
            budget: Budget::default(),
        }
    }
}

/// Analyses one piece of text as the given kind.
pub fn analyze(kind: InputKind, text: &str, cfg: &ShieldConfig) -> Vec<ShieldFinding> {
    if text.len() > cfg.budget.max_input_bytes {
        return vec![budget_exceeded(
            kind,
            &format!(
                "the {} input is {} bytes, over the analysis limit of {} bytes",
                kind.as_str(),
                text.len(),
                cfg.budget.max_input_bytes
            ),
        )];
    }
    match kind {
        InputKind::Shell => shell::analyze(text, cfg),
        InputKind::Sql => sql::analyze(text, cfg),
        InputKind::Path => shell::analyze_path(text, cfg),
        InputKind::Url => shell::analyze_url(text, cfg),
    }
}

/// The risk of a set of findings: the highest one (0 when there are none).
pub fn risk_of(findings: &[ShieldFinding]) -> u8 {
    findings.iter().map(|f| f.risk).max().unwrap_or(0)
}

/// The finding for input that exceeded a [`Budget`] bound.
pub fn budget_exceeded(kind: InputKind, what: &str) -> ShieldFinding {
    ShieldFinding {
        id: "analysis.budget_exceeded",
        category: Category::Analysis,
        risk: 60,
        explanation: format!(
            "{what}; FlowLink cannot tell what it would do, so a person has to look at it. Split it into smaller, plainer {} input.",
            kind.as_str()
        ),
        evidence: String::new(),
    }
}

/// Shortens `s` to at most `max` bytes on a character boundary, marking the cut.
pub fn evidence(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut cut = max;
    while !s.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}…", &s[..cut])
}
