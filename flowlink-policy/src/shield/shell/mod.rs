//! Shell analysis: parses a command line with `brush-parser`, walks every simple command that
//! would run (pipelines, lists, subshells, substitutions, `sh -c` strings, `eval`, `find -exec`,
//! `xargs`, wrappers such as `sudo`/`env`/`timeout`), normalises names and flags, and applies the
//! rule packs in [`rules`]. Text that is only data (quoted arguments, heredoc bodies written to
//! files, comments) is never matched.

// Let-chains would read no better than the nested `if let`s here.
#![allow(clippy::collapsible_if, clippy::collapsible_match)]

mod paths;
mod prescan;
mod rules;
#[cfg(test)]
mod tests;
mod walk;
mod words;

use super::{Category, InputKind, ShieldConfig, ShieldFinding};

/// Analyses a shell command line.
pub fn analyze(text: &str, cfg: &ShieldConfig) -> Vec<ShieldFinding> {
    let mut ctx = Ctx::new(cfg);
    if text.len() > cfg.budget.max_input_bytes {
        ctx.budget(&format!(
            "the shell input is {} bytes, over the analysis limit of {} bytes",
            text.len(),
            cfg.budget.max_input_bytes
        ));
        return ctx.findings;
    }
    walk::script(&mut ctx, text, 0);
    rules::exfiltration::finish(&mut ctx);
    ctx.findings
}

/// Analyses a path argument (a file tool's `path`); the verb is unknown.
pub fn analyze_path(text: &str, cfg: &ShieldConfig) -> Vec<ShieldFinding> {
    rules::exfiltration::path(text, cfg)
}

/// Analyses a URL argument.
pub fn analyze_url(text: &str, cfg: &ShieldConfig) -> Vec<ShieldFinding> {
    let _ = cfg;
    rules::exfiltration::url(text)
}

/// State of one analysis.
pub(crate) struct Ctx<'a> {
    pub cfg: &'a ShieldConfig,
    pub findings: Vec<ShieldFinding>,
    pub units: usize,
    pub budget_hit: bool,
    /// Secrets read anywhere in the input: (evidence, what, risk).
    pub secret_reads: Vec<(String, &'static str, u8)>,
    /// Commands that send data off the host.
    pub net_sends: Vec<String>,
    /// Files downloaded by curl/wget earlier in the input (basenames).
    pub downloads: Vec<String>,
    /// The function being defined and how often its body calls itself (fork bombs).
    pub current_fn: Option<(String, usize)>,
    /// The working directory after `cd` (normalised), when known.
    pub cwd: Option<String>,
    /// Variables assigned earlier with a static value.
    pub vars: Vec<(String, String)>,
    /// Files written earlier with known content: (normalised path, content).
    pub scripts: Vec<(String, String)>,
}

impl<'a> Ctx<'a> {
    pub fn new(cfg: &'a ShieldConfig) -> Self {
        Ctx {
            cfg,
            findings: Vec::new(),
            units: 0,
            budget_hit: false,
            secret_reads: Vec::new(),
            net_sends: Vec::new(),
            downloads: Vec::new(),
            current_fn: None,
            cwd: None,
            vars: Vec::new(),
            scripts: Vec::new(),
        }
    }

    /// Records a finding (once per id and evidence).
    pub fn push(
        &mut self,
        id: &'static str,
        category: Category,
        risk: u8,
        explanation: String,
        evidence: &str,
    ) {
        let evidence = super::evidence(evidence.trim(), 200);
        if self
            .findings
            .iter()
            .any(|f| f.id == id && f.evidence == evidence)
        {
            return;
        }
        self.findings.push(ShieldFinding {
            id,
            category,
            risk,
            explanation,
            evidence,
        });
    }

    /// The static value of a variable assigned earlier.
    pub fn var(&self, name: &str) -> Option<&str> {
        self.vars
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Sets (or, with `None`, forgets) a variable.
    pub fn set_var(&mut self, name: &str, value: Option<String>) {
        self.vars.retain(|(n, _)| n != name);
        if let Some(v) = value {
            if self.vars.len() < 256 {
                self.vars.push((name.to_owned(), v));
            }
        }
    }

    /// Records that the budget was exceeded (once).
    pub fn budget(&mut self, what: &str) {
        if !self.budget_hit {
            self.budget_hit = true;
            self.findings
                .push(super::budget_exceeded(InputKind::Shell, what));
        }
    }
}
