//! [`Explanation`]: the human account of one decision, for `flowlink-proxy policy explain` and
//! the control plane's policy tester.

use std::fmt;

use crate::policy::{Action, Decision};

/// Every rule considered for one call, in evaluation order, and the decision.
/// Its `Display` is multi-line text meant for people, not for parsing.
#[derive(Debug, Clone, PartialEq)]
pub struct Explanation {
    /// The call's agent.
    pub agent: String,
    /// The call's service.
    pub service: String,
    /// The call's tool.
    pub tool: String,
    /// One entry per rule, priority descending then file order.
    pub steps: Vec<RuleTrace>,
    /// The policy's default action.
    pub default_action: Action,
    /// The decision, identical to what [`crate::Policy::decide`] returns.
    pub decision: Decision,
}

/// What one rule did for the call.
#[derive(Debug, Clone, PartialEq)]
pub struct RuleTrace {
    /// The layer the rule came from, for policies built by [`crate::Policy::from_layers`].
    pub layer: Option<String>,
    /// The rule's id.
    pub rule_id: String,
    /// The rule's priority.
    pub priority: i64,
    /// The rule's action.
    pub action: Action,
    /// The rule's `description`, if any.
    pub description: Option<String>,
    /// How many argument conditions the rule has.
    pub conditions: usize,
    /// Whether it matched and what came of it.
    pub outcome: TraceOutcome,
}

/// The fate of one rule in an [`Explanation`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TraceOutcome {
    /// Matched and decided the call.
    Decided,
    /// Matched at the deciding priority but lost the tie-break to a stricter (or earlier) rule.
    Outranked {
        /// The rule that won.
        by: String,
    },
    /// Matched, but a rule of higher priority had already decided.
    LowerPriority,
    /// Did not match.
    NotMatched {
        /// Which selector or condition failed, in words.
        reason: String,
    },
}

impl fmt::Display for Explanation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "call: agent `{}`, service `{}`, tool `{}`",
            self.agent, self.service, self.tool
        )?;
        if self.steps.is_empty() {
            writeln!(f, "rules: none")?;
        } else {
            writeln!(
                f,
                "rules in evaluation order (priority high to low; at equal priority \
                 block > approve > confirm > allow):"
            )?;
        }
        for (i, step) in self.steps.iter().enumerate() {
            let conditions = match step.conditions {
                0 => String::new(),
                1 => ", 1 condition".to_owned(),
                n => format!(", {n} conditions"),
            };
            let layer = step
                .layer
                .as_ref()
                .map_or_else(String::new, |l| format!(", layer `{l}`"));
            write!(
                f,
                "  {}. `{}` (priority {}, {}{conditions}{layer}): ",
                i + 1,
                step.rule_id,
                step.priority,
                step.action
            )?;
            match &step.outcome {
                TraceOutcome::Decided => {
                    writeln!(f, "MATCHED, decides")?;
                    if let Some(d) = &step.description {
                        writeln!(f, "     ({d})")?;
                    }
                }
                TraceOutcome::Outranked { by } => {
                    writeln!(f, "matched, but `{by}` wins at the same priority")?
                }
                TraceOutcome::LowerPriority => {
                    writeln!(f, "matched, but a higher-priority rule already decided")?
                }
                TraceOutcome::NotMatched { reason } => writeln!(f, "no match: {reason}")?,
            }
        }
        if self.decision.rule_id.is_none() {
            writeln!(
                f,
                "no rule matched; default action is {}",
                self.default_action
            )?;
        }
        if !self.decision.findings.is_empty() {
            writeln!(f, "shield findings (risk {}):", self.decision.risk)?;
            for cf in &self.decision.findings {
                writeln!(
                    f,
                    "  - {} [{}, risk {}] in `{}` ({}): {}",
                    cf.finding.id,
                    cf.finding.category,
                    cf.finding.risk,
                    cf.pointer,
                    cf.kind.as_str(),
                    cf.finding.explanation
                )?;
            }
        }
        writeln!(f, "decision: {}", self.decision.action)?;
        writeln!(f, "reason: {}", self.decision.reason)?;
        if let Some(m) = &self.decision.message {
            writeln!(f, "message to agent: {m}")?;
        }
        Ok(())
    }
}
