//! Loading a policy file and deciding tool calls against it.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::num::NonZeroU32;
use std::time::Duration;

use governor::Quota;
use serde_json::Value;
use toml::Spanned;

use crate::condition::{Condition, Test, validate_pointer};
use crate::error::{PolicyError, line_column};
use crate::explain::{Explanation, RuleTrace, TraceOutcome};
use crate::index::{INDEX_MIN_RULES, RuleIndex};
use crate::pattern::{Pattern, Patterns};
use crate::rate::{RateLimitSpec, RateScope};
use crate::raw::{OneOrMany, RawCondition, RawPolicy, RawRateLimit, RawRule, RawShield};
use crate::secrets::{SecretsBuilder, SecretsPolicy};
use crate::shield::extract::{self, Mapping};
use crate::shield::{self, InputKind, ShieldConfig, ShieldFinding, SqlDialect};

/// Environment labels of the proxy (`env = "prod"`, `team = "payments"`), matched by rules'
/// `labels` tables.
pub type Labels = BTreeMap<String, String>;

/// What happens to a tool call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    /// Forward the call to the MCP server.
    Allow,
    /// Refuse the call; the agent gets the rule's message instead.
    Block,
    /// Hold the call until an approver (a person other than the developer) approves it.
    Approve,
    /// Hold the call until the developer confirms it in the editor.
    Confirm,
}

impl Action {
    /// The lowercase name used in policy files and audit events.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Allow => "allow",
            Action::Block => "block",
            Action::Approve => "approve",
            Action::Confirm => "confirm",
        }
    }

    /// Tie-break rank among rules matching at the same priority: higher wins.
    fn strictness(self) -> u8 {
        match self {
            Action::Allow => 0,
            Action::Confirm => 1,
            Action::Approve => 2,
            Action::Block => 3,
        }
    }

    fn parse(s: &str) -> Option<Action> {
        match s {
            "allow" => Some(Action::Allow),
            "block" => Some(Action::Block),
            "approve" => Some(Action::Approve),
            "confirm" => Some(Action::Confirm),
            _ => None,
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One `tools/call` request, as the engine sees it.
#[derive(Debug, Clone, Copy)]
pub struct ToolCall<'a> {
    /// The MCP client's name from `initialize` (`claude-code`, `cursor`, ...).
    pub agent: &'a str,
    /// The proxy's `--name` for the MCP server.
    pub service: &'a str,
    /// The tool name.
    pub tool: &'a str,
    /// The call's `arguments` (usually an object; `null` when absent).
    pub arguments: &'a Value,
    /// The proxy's environment labels.
    pub labels: &'a Labels,
}

/// The outcome of [`Policy::decide`].
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// What to do with the call.
    pub action: Action,
    /// The rule that decided, or `None` when the default action applied.
    pub rule_id: Option<String>,
    /// Text for the agent (the rule's `message`; generated for blocks without one).
    pub message: Option<String>,
    /// One human sentence saying why, for logs and the audit trail.
    pub reason: String,
    /// What the shield found in the call's arguments (empty when it is off or found nothing).
    pub findings: Vec<CallFinding>,
    /// The highest risk among `findings`, 0–100.
    pub risk: u8,
    /// Who must approve and how long they have, when `action` is [`Action::Approve`].
    pub approval: Option<ApprovalSpec>,
}

/// Who may approve a call held by an `approve` rule, how many must, and for how long.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApprovalSpec {
    /// E-mail addresses or `role:<role>` selectors; empty = anyone the control plane lets decide.
    pub approvers: Vec<String>,
    /// Distinct approvals needed (1..=10).
    pub needed: u32,
    /// Silence for this long is a denial.
    pub timeout: Duration,
}

impl Default for ApprovalSpec {
    fn default() -> ApprovalSpec {
        ApprovalSpec {
            approvers: Vec::new(),
            needed: 1,
            timeout: DEFAULT_APPROVAL_TIMEOUT,
        }
    }
}

/// How long an approval request waits when its rule does not say (10 minutes).
pub const DEFAULT_APPROVAL_TIMEOUT: Duration = Duration::from_secs(600);

/// A shield finding located in a call: which argument it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallFinding {
    /// JSON pointer of the argument that was analysed.
    pub pointer: String,
    /// How it was analysed.
    pub kind: InputKind,
    /// What was found.
    pub finding: ShieldFinding,
}

/// The shield's verdict on a piece of text ([`Policy::shield_check`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShieldVerdict {
    /// `Block` at or above `block_at`, `Approve` at or above `approve_at`, else `Allow`.
    pub action: Action,
    /// The highest risk among the findings.
    pub risk: u8,
    /// What was found, highest risk first.
    pub findings: Vec<ShieldFinding>,
}

/// The shield's settings from the `[shield]` table.
#[derive(Debug, Clone)]
pub(crate) struct ShieldSettings {
    pub(crate) enabled: bool,
    pub(crate) config: ShieldConfig,
    pub(crate) block_at: u8,
    pub(crate) approve_at: u8,
    pub(crate) priority: i64,
    pub(crate) mappings: Vec<Mapping>,
}

impl Default for ShieldSettings {
    fn default() -> Self {
        ShieldSettings {
            enabled: true,
            config: ShieldConfig::default(),
            block_at: 80,
            approve_at: 40,
            priority: 0,
            mappings: Vec::new(),
        }
    }
}

/// The id decisions made by the shield's thresholds carry in place of a rule id.
pub const SHIELD_RULE_ID: &str = "shield";

/// What the shield found in one call.
#[derive(Debug, Clone, Default)]
pub(crate) struct Report {
    pub(crate) findings: Vec<CallFinding>,
    pub(crate) risk: u8,
}

/// A compiled rule.
#[derive(Debug, Clone)]
pub(crate) struct Rule {
    pub(crate) id: String,
    pub(crate) priority: i64,
    pub(crate) description: Option<String>,
    pub(crate) agent: Patterns,
    pub(crate) service: Patterns,
    pub(crate) tool: Patterns,
    pub(crate) labels: Vec<(String, Pattern)>,
    pub(crate) action: Action,
    pub(crate) message: Option<String>,
    pub(crate) conditions: Vec<Condition>,
    /// Matches only calls with a finding whose id matches one of these globs.
    pub(crate) findings: Option<Patterns>,
    /// Matches only calls whose risk is at least this.
    pub(crate) min_risk: Option<u8>,
    /// The layer the rule came from ([`Policy::from_layers`]); `None` for a single file.
    pub(crate) layer: Option<String>,
    /// For `approve` rules: who, how many, how long.
    pub(crate) approval: ApprovalSpec,
}

/// Why a rule did not match; indices point into the rule's labels or conditions.
#[derive(Debug, Clone, Copy)]
enum Miss {
    Tool,
    Service,
    Agent,
    Label(usize),
    Condition(usize),
    Finding,
    Risk,
}

impl Rule {
    /// Matching without looking at arguments.
    fn match_target(
        &self,
        agent: &str,
        service: &str,
        tool: &str,
        labels: &Labels,
    ) -> Result<(), Miss> {
        if !self.tool.is_match(tool) {
            return Err(Miss::Tool);
        }
        if !self.service.is_match(service) {
            return Err(Miss::Service);
        }
        if !self.agent.is_match(agent) {
            return Err(Miss::Agent);
        }
        for (i, (key, pattern)) in self.labels.iter().enumerate() {
            match labels.get(key) {
                Some(v) if pattern.is_match(v) => {}
                _ => return Err(Miss::Label(i)),
            }
        }
        Ok(())
    }

    fn match_call(&self, call: &ToolCall<'_>, report: &Report) -> Result<(), Miss> {
        self.match_target(call.agent, call.service, call.tool, call.labels)?;
        for (i, c) in self.conditions.iter().enumerate() {
            if !c.holds(call.arguments) {
                return Err(Miss::Condition(i));
            }
        }
        if let Some(globs) = &self.findings
            && !report.findings.iter().any(|f| globs.is_match(f.finding.id))
        {
            return Err(Miss::Finding);
        }
        if let Some(min) = self.min_risk
            && report.risk < min
        {
            return Err(Miss::Risk);
        }
        Ok(())
    }

    /// Whether the rule's outcome depends on the call's arguments.
    fn is_conditional(&self) -> bool {
        !self.conditions.is_empty() || self.findings.is_some() || self.min_risk.is_some()
    }

    fn describe_miss(&self, miss: Miss, call: &ToolCall<'_>, report: &Report) -> String {
        match miss {
            Miss::Finding => {
                let ids: Vec<&str> = report.findings.iter().map(|f| f.finding.id).collect();
                format!(
                    "no shield finding matches {} (findings: {})",
                    self.findings
                        .as_ref()
                        .map_or_else(String::new, ToString::to_string),
                    if ids.is_empty() {
                        "none".to_owned()
                    } else {
                        ids.join(", ")
                    }
                )
            }
            Miss::Risk => format!(
                "risk {} is below min_risk {}",
                report.risk,
                self.min_risk.unwrap_or(0)
            ),
            Miss::Tool => format!("tool `{}` does not match {}", call.tool, self.tool),
            Miss::Service => format!("service `{}` does not match {}", call.service, self.service),
            Miss::Agent => format!("agent `{}` does not match {}", call.agent, self.agent),
            Miss::Label(i) => {
                let (key, pattern) = &self.labels[i];
                match call.labels.get(key) {
                    None => format!("label `{key}` is not set (rule wants {:?})", pattern.text()),
                    Some(v) => format!("label `{key}` = {v:?} does not match {:?}", pattern.text()),
                }
            }
            Miss::Condition(i) => format!(
                "condition {} of {}: {}",
                i + 1,
                self.conditions.len(),
                self.conditions[i].describe_failure(call.arguments)
            ),
        }
    }
}

/// A loaded, validated policy. Cheap to share (`Clone + Send + Sync`); deciding never fails.
#[derive(Debug, Clone)]
pub struct Policy {
    /// Sorted by priority descending, then file order.
    rules: Vec<Rule>,
    default_action: Action,
    hide_blocked_tools: bool,
    offline_approve: Action,
    offline_confirm: Action,
    confirm_timeout: Duration,
    pub(crate) rate_limits: Vec<RateLimitSpec>,
    shield: ShieldSettings,
    /// `[secrets]`: injections, placeholders, Vault.
    secrets: SecretsPolicy,
    /// Built for large policies; `None` means a linear scan.
    index: Option<RuleIndex>,
}

/// Default wait for an in-editor confirmation.
const DEFAULT_CONFIRM_TIMEOUT_SECS: u64 = 120;
/// Upper bound for `confirm_timeout_secs` (one day).
const MAX_CONFIRM_TIMEOUT_SECS: i64 = 86_400;

impl Policy {
    /// Parses and validates a policy file's text. Nothing is read from disk.
    pub fn from_toml(source: &str) -> Result<Policy, PolicyError> {
        let mut builder = Builder::new();
        builder.add(None, source)?;
        builder.finish()
    }

    /// Combines policy layers, given least specific first (the organisation's, then groups',
    /// then the service's), into one policy. Nothing is read from disk.
    ///
    /// - Each layer is a whole policy file and is validated as [`Policy::from_toml`] would.
    /// - Rules and rate limits are concatenated in layer order; evaluation order is then, as
    ///   always, priority descending, and at equal priority and equal action the rule from the
    ///   earlier (less specific) layer comes first.
    /// - A rule id or rate-limit id used in two layers is an error naming both layers.
    /// - Settings come from the most specific layer that sets them, key by key:
    ///   `default_action`, `hide_blocked_tools`, each key of `[offline]` and each key of
    ///   `[shield]` (`[[shield.map]]` entries are concatenated, like rules).
    /// - Errors carry the layer's name in [`PolicyError::layer`] plus the line and column in
    ///   that layer's text.
    ///
    /// One layer gives exactly the policy [`Policy::from_toml`] gives for its text; no layers
    /// give [`Policy::builtin_default`].
    pub fn from_layers(layers: &[(&str, &str)]) -> Result<Policy, PolicyError> {
        let mut builder = Builder::new();
        for (name, source) in layers {
            builder
                .add(Some(name), source)
                .map_err(|e| e.in_layer(name))?;
        }
        builder.finish()
    }

    /// The policy used when none is configured: the shield with its default thresholds (risk
    /// ≥ 80 blocks, ≥ 40 needs approval, which offline means blocked), everything else allowed;
    /// every call is still recorded by the proxy. No rules, no rate limits.
    pub fn builtin_default() -> Policy {
        Policy {
            rules: Vec::new(),
            default_action: Action::Allow,
            hide_blocked_tools: true,
            offline_approve: Action::Block,
            offline_confirm: Action::Block,
            confirm_timeout: Duration::from_secs(DEFAULT_CONFIRM_TIMEOUT_SECS),
            rate_limits: Vec::new(),
            shield: ShieldSettings::default(),
            secrets: SecretsPolicy::default(),
            index: None,
        }
    }

    /// What the shield finds in a call's arguments, by the policy's mappings and heuristics.
    pub(crate) fn report(&self, call: &ToolCall<'_>) -> Report {
        if !self.shield.enabled {
            return Report::default();
        }
        let mut findings = Vec::new();
        for input in extract::inputs(&self.shield.mappings, call.tool, call.arguments) {
            for finding in shield::analyze(input.kind, &input.text, &self.shield.config) {
                findings.push(CallFinding {
                    pointer: input.pointer.clone(),
                    kind: input.kind,
                    finding,
                });
            }
        }
        // Highest risk first: the first finding explains the verdict.
        findings.sort_by_key(|f| std::cmp::Reverse(f.finding.risk));
        let risk = findings.first().map_or(0, |f| f.finding.risk);
        Report { findings, risk }
    }

    /// The shield's own verdict for a risk, if it reaches a threshold.
    fn shield_action(&self, risk: u8) -> Option<Action> {
        if !self.shield.enabled {
            None
        } else if risk >= self.shield.block_at {
            Some(Action::Block)
        } else if risk >= self.shield.approve_at {
            Some(Action::Approve)
        } else {
            None
        }
    }

    /// Whether the shield's verdict overrides the winning rule: it acts as a rule at the
    /// shield's priority, so a rule of higher priority wins, and at equal priority the stricter.
    fn shield_wins(&self, winner: Option<usize>, shield: Action) -> bool {
        match winner {
            None => true,
            Some(w) => {
                let rule = &self.rules[w];
                rule.priority < self.shield.priority
                    || (rule.priority == self.shield.priority
                        && shield.strictness() > rule.action.strictness())
            }
        }
    }

    fn shield_decision(&self, action: Action, report: &Report, call: &ToolCall<'_>) -> Decision {
        let top = &report.findings[0].finding;
        let more = report.findings.len() - 1;
        let reason = format!(
            "shield: {} (risk {}){} in argument `{}`; {} at risk ≥ {}",
            top.id,
            report.risk,
            if more > 0 {
                format!(" and {more} more finding(s)")
            } else {
                String::new()
            },
            report.findings[0].pointer,
            action,
            if action == Action::Block {
                self.shield.block_at
            } else {
                self.shield.approve_at
            },
        );
        let message = match action {
            Action::Block => format!(
                "FlowLink blocked this `{}` call: {} Do not retry it in another form; ask the user if it is really needed.",
                call.tool, top.explanation
            ),
            _ => format!(
                "This `{}` call needs a person's approval: {}",
                call.tool, top.explanation
            ),
        };
        Decision {
            action,
            rule_id: Some(SHIELD_RULE_ID.to_owned()),
            message: Some(message),
            reason,
            findings: Vec::new(),
            risk: 0,
            approval: (action == Action::Approve).then(ApprovalSpec::default),
        }
    }

    /// Decides one call. Rules are tried by priority, highest first; among the rules that match
    /// at the highest matching priority, block beats approve beats confirm beats allow, and the
    /// earlier rule in the file wins between equal actions. No match: the default action.
    pub fn decide(&self, call: &ToolCall<'_>) -> Decision {
        let report = self.report(call);
        self.decide_with(call, report)
    }

    fn decide_with(&self, call: &ToolCall<'_>, report: Report) -> Decision {
        let winner = self.winner(call, &report);
        let mut decision = match self.shield_action(report.risk) {
            Some(a) if self.shield_wins(winner.map(|(i, _)| i), a) => {
                self.shield_decision(a, &report, call)
            }
            _ => match winner {
                Some((index, others)) => self.rule_decision(&self.rules[index], others, call),
                None => self.default_decision(call),
            },
        };
        decision.risk = report.risk;
        decision.findings = report.findings;
        decision
    }

    /// The index of the deciding rule and how many other rules matched at its priority.
    fn winner(&self, call: &ToolCall<'_>, report: &Report) -> Option<(usize, usize)> {
        match &self.index {
            Some(index) => self.winner_among(
                index.candidates(call.service, call.tool).into_iter(),
                call,
                report,
            ),
            None => self.winner_among(0..self.rules.len(), call, report),
        }
    }

    /// Like [`Policy::winner`], over the given rule indices in ascending (evaluation) order.
    fn winner_among(
        &self,
        candidates: impl Iterator<Item = usize>,
        call: &ToolCall<'_>,
        report: &Report,
    ) -> Option<(usize, usize)> {
        let mut best: Option<usize> = None;
        let mut matched = 0usize;
        for i in candidates {
            let rule = &self.rules[i];
            if let Some(b) = best
                && rule.priority < self.rules[b].priority
            {
                break;
            }
            if rule.match_call(call, report).is_err() {
                continue;
            }
            matched += 1;
            best = match best {
                Some(b) if rule.action.strictness() <= self.rules[b].action.strictness() => Some(b),
                _ => Some(i),
            };
        }
        best.map(|b| (b, matched.saturating_sub(1)))
    }

    fn rule_decision(&self, rule: &Rule, others: usize, call: &ToolCall<'_>) -> Decision {
        let mut reason = format!(
            "rule `{}` (priority {}) matched tool `{}`",
            rule.id, rule.priority, call.tool
        );
        if others > 0 {
            reason.push_str(&format!(
                " and outranks {others} other matching rule(s) at the same priority \
                 (block > approve > confirm > allow)"
            ));
        }
        let message = match (&rule.message, rule.action) {
            (Some(m), _) => Some(m.clone()),
            (None, Action::Block) => Some(format!(
                "Tool `{}` was blocked by FlowLink policy rule `{}`. Do not retry this call; \
                 ask the user how to proceed instead.",
                call.tool, rule.id
            )),
            (None, _) => None,
        };
        Decision {
            action: rule.action,
            rule_id: Some(rule.id.clone()),
            message,
            reason,
            findings: Vec::new(),
            risk: 0,
            approval: (rule.action == Action::Approve).then(|| rule.approval.clone()),
        }
    }

    fn default_decision(&self, call: &ToolCall<'_>) -> Decision {
        let message = match self.default_action {
            Action::Block => Some(format!(
                "No FlowLink policy rule allows tool `{}` on service `{}`, and the default is to \
                 block. Ask the user to allow it in the policy if it is needed.",
                call.tool, call.service
            )),
            _ => None,
        };
        Decision {
            action: self.default_action,
            rule_id: None,
            message,
            reason: format!("no rule matched; default action {}", self.default_action),
            findings: Vec::new(),
            risk: 0,
            approval: (self.default_action == Action::Approve).then(ApprovalSpec::default),
        }
    }

    /// Like [`Policy::decide`], but also says, for every rule in evaluation order, whether it
    /// matched and, if not, which glob, label or condition failed.
    pub fn explain(&self, call: &ToolCall<'_>) -> Explanation {
        let report = self.report(call);
        let decision = self.decide_with(call, report.clone());
        let winner = self.winner(call, &report).map(|(i, _)| i);
        let winner_priority = winner.map(|i| self.rules[i].priority);
        let steps = self
            .rules
            .iter()
            .enumerate()
            .map(|(i, rule)| {
                let outcome = match rule.match_call(call, &report) {
                    Err(miss) => TraceOutcome::NotMatched {
                        reason: rule.describe_miss(miss, call, &report),
                    },
                    Ok(()) if Some(i) == winner => TraceOutcome::Decided,
                    Ok(()) => match (winner, winner_priority) {
                        (Some(w), Some(p)) if p == rule.priority => TraceOutcome::Outranked {
                            by: self.rules[w].id.clone(),
                        },
                        _ => TraceOutcome::LowerPriority,
                    },
                };
                RuleTrace {
                    layer: rule.layer.clone(),
                    rule_id: rule.id.clone(),
                    priority: rule.priority,
                    action: rule.action,
                    description: rule.description.clone(),
                    conditions: rule.conditions.len(),
                    outcome,
                }
            })
            .collect();
        Explanation {
            agent: call.agent.to_owned(),
            service: call.service.to_owned(),
            tool: call.tool.to_owned(),
            steps,
            default_action: self.default_action,
            decision,
        }
    }

    /// Whether the proxy should drop this tool from `tools/list`: `hide_blocked_tools` is on and
    /// the tool is blocked whatever its arguments are. That holds when an unconditional `block`
    /// rule matches it and no non-block rule of higher priority could match it, or when no
    /// non-block rule could match it at all and the default action is `block`. Rules with
    /// argument conditions never hide a tool by themselves.
    pub fn is_hidden(&self, agent: &str, service: &str, tool: &str, labels: &Labels) -> bool {
        if !self.hide_blocked_tools {
            return false;
        }
        let mut i = 0;
        while i < self.rules.len() {
            let priority = self.rules[i].priority;
            let mut unconditional_block = false;
            let mut may_let_through = false;
            while i < self.rules.len() && self.rules[i].priority == priority {
                let rule = &self.rules[i];
                if rule.match_target(agent, service, tool, labels).is_ok() {
                    if rule.action != Action::Block {
                        may_let_through = true;
                    } else if !rule.is_conditional() {
                        unconditional_block = true;
                    }
                }
                i += 1;
            }
            // At equal priority block wins, so an unconditional block settles this tier.
            if unconditional_block {
                return true;
            }
            if may_let_through {
                return false;
            }
        }
        self.default_action == Action::Block
    }

    /// What `Approve` or `Confirm` becomes when no person can be asked (the `[offline]` table;
    /// `Block` by default). `Allow` and `Block` are returned unchanged.
    pub fn offline_action(&self, action: Action) -> Action {
        match action {
            Action::Approve => self.offline_approve,
            Action::Confirm => self.offline_confirm,
            other => other,
        }
    }

    /// How long to wait for an in-editor confirmation (`[offline] confirm_timeout_secs`,
    /// 120 s by default).
    pub fn confirm_timeout(&self) -> Duration {
        self.confirm_timeout
    }

    /// Runs the shield on one piece of text with this policy's `[shield]` settings and
    /// thresholds, outside any tool call (`flowlink-proxy shield check`). Rules are not consulted:
    /// the verdict is the shield's alone.
    pub fn shield_check(&self, kind: InputKind, text: &str) -> ShieldVerdict {
        let mut findings = shield::analyze(kind, text, &self.shield.config);
        findings.sort_by_key(|f| std::cmp::Reverse(f.risk));
        let risk = shield::risk_of(&findings);
        let action = if risk >= self.shield.block_at {
            Action::Block
        } else if risk >= self.shield.approve_at {
            Action::Approve
        } else {
            Action::Allow
        };
        ShieldVerdict {
            action,
            risk,
            findings,
        }
    }

    #[cfg(test)]
    pub(crate) fn rules_for_test(&self) -> &[Rule] {
        &self.rules
    }

    /// Whether the shield (and the MCP guardrails built on it) is on.
    pub fn shield_enabled(&self) -> bool {
        self.shield.enabled
    }

    /// The shield's thresholds: `(approve_at, block_at)`.
    pub fn shield_thresholds(&self) -> (u8, u8) {
        (self.shield.approve_at, self.shield.block_at)
    }

    /// The `[secrets]` section: what the proxy injects into the MCP server and which
    /// `{{secret:NAME}}` placeholders calls may use (empty when no layer has one).
    pub fn secrets(&self) -> &SecretsPolicy {
        &self.secrets
    }

    /// Number of `[[rules]]`.
    pub fn rule_count(&self) -> usize {
        self.rules.len()
    }

    /// Number of `[[rate_limits]]`.
    pub fn rate_limit_count(&self) -> usize {
        self.rate_limits.len()
    }

    /// The action for calls no rule matches.
    pub fn default_action(&self) -> Action {
        self.default_action
    }

    /// Whether tools blocked whatever their arguments are should be hidden from `tools/list`.
    pub fn hide_blocked_tools(&self) -> bool {
        self.hide_blocked_tools
    }

    /// Rule ids in evaluation order (priority descending, then file order).
    pub fn rule_ids(&self) -> impl Iterator<Item = &str> {
        self.rules.iter().map(|r| r.id.as_str())
    }
}

/// Where an id was first used: the layer (`None` for a single file) and the 1-based line.
type SeenIds = HashMap<String, (Option<String>, usize)>;

/// Accumulates layers into one [`Policy`]: settings of later layers override earlier ones key by
/// key, rules and rate limits are appended, ids must be unique across all layers.
struct Builder {
    policy: Policy,
    rules: Vec<Rule>,
    rule_ids: SeenIds,
    limit_ids: SeenIds,
    secrets: SecretsBuilder,
}

impl Builder {
    fn new() -> Builder {
        Builder {
            policy: Policy::builtin_default(),
            rules: Vec::new(),
            rule_ids: HashMap::new(),
            limit_ids: HashMap::new(),
            secrets: SecretsBuilder::default(),
        }
    }

    /// Parses, validates and adds one layer. Errors carry positions in `source` but no layer
    /// name; the caller adds it.
    fn add(&mut self, layer: Option<&str>, source: &str) -> Result<(), PolicyError> {
        let raw: RawPolicy =
            toml::from_str(source).map_err(|e| PolicyError::from_toml(source, &e))?;
        let compiler = Compiler { source, layer };
        compiler.layer(raw, self)
    }

    fn finish(mut self) -> Result<Policy, PolicyError> {
        // Stable: equal priorities keep layer order, then file order.
        self.rules.sort_by_key(|r| std::cmp::Reverse(r.priority));
        if self.rules.len() >= INDEX_MIN_RULES {
            self.policy.index =
                Some(RuleIndex::build(&self.rules).map_err(|m| PolicyError::at("", None, m))?);
        }
        self.policy.rules = self.rules;
        self.policy.secrets = self.secrets.finish()?;
        Ok(self.policy)
    }
}

/// Turns one raw file into rules and settings, attaching positions to every semantic error.
struct Compiler<'s> {
    source: &'s str,
    /// The layer's name, for rules' provenance and cross-layer duplicate messages.
    layer: Option<&'s str>,
}

impl Compiler<'_> {
    fn err<T>(&self, spanned: &Spanned<T>, message: impl Into<String>) -> PolicyError {
        PolicyError::at(self.source, Some(spanned.span()), message)
    }

    /// Validates one file and merges it into `acc`.
    fn layer(&self, raw: RawPolicy, acc: &mut Builder) -> Result<(), PolicyError> {
        if *raw.version.get_ref() != 1 {
            return Err(self.err(
                &raw.version,
                format!(
                    "unsupported policy version {} (this FlowLink understands version 1)",
                    raw.version.get_ref()
                ),
            ));
        }
        let policy = &mut acc.policy;
        if let Some(s) = &raw.default_action {
            policy.default_action = self.action(s)?;
        }
        if let Some(hide) = raw.hide_blocked_tools {
            policy.hide_blocked_tools = hide;
        }
        if let Some(offline) = &raw.offline {
            if let Some(a) = &offline.approve {
                policy.offline_approve = self.offline_action(a)?;
            }
            if let Some(c) = &offline.confirm {
                policy.offline_confirm = self.offline_action(c)?;
            }
            if let Some(t) = &offline.confirm_timeout_secs {
                let secs = *t.get_ref();
                if !(1..=MAX_CONFIRM_TIMEOUT_SECS).contains(&secs) {
                    return Err(self.err(
                        t,
                        format!(
                            "confirm_timeout_secs must be between 1 and {MAX_CONFIRM_TIMEOUT_SECS}, got {secs}"
                        ),
                    ));
                }
                policy.confirm_timeout = Duration::from_secs(secs.unsigned_abs());
            }
        }

        for raw_rule in raw.rules {
            let rule = self.rule(raw_rule.into_inner(), &mut acc.rule_ids)?;
            acc.rules.push(rule);
        }
        if let Some(raw_shield) = raw.shield {
            self.shield(raw_shield, &mut acc.policy.shield)?;
        }
        if let Some(raw_secrets) = raw.secrets {
            acc.secrets.add(self.source, self.layer, raw_secrets)?;
        }
        for raw_limit in raw.rate_limits {
            let spanned_limit = raw_limit.span();
            let limit =
                self.rate_limit(raw_limit.into_inner(), spanned_limit, &mut acc.limit_ids)?;
            acc.policy.rate_limits.push(limit);
        }
        Ok(())
    }

    fn action(&self, s: &Spanned<String>) -> Result<Action, PolicyError> {
        Action::parse(s.get_ref()).ok_or_else(|| {
            self.err(
                s,
                format!(
                    "unknown action `{}` (expected allow, block, approve or confirm)",
                    s.get_ref()
                ),
            )
        })
    }

    fn offline_action(&self, s: &Spanned<String>) -> Result<Action, PolicyError> {
        match Action::parse(s.get_ref()) {
            Some(a @ (Action::Allow | Action::Block)) => Ok(a),
            _ => Err(self.err(
                s,
                format!(
                    "unknown offline action `{}` (expected allow or block)",
                    s.get_ref()
                ),
            )),
        }
    }

    fn unique_id(
        &self,
        id: &Spanned<String>,
        what: &str,
        seen: &mut SeenIds,
    ) -> Result<String, PolicyError> {
        let text = id.get_ref();
        if text.trim().is_empty() {
            return Err(self.err(id, format!("{what} id must not be empty")));
        }
        let (line, _) = line_column(self.source, id.span().start);
        if let Some((layer, first)) = seen.get(text) {
            return Err(match layer {
                Some(other) if Some(other.as_str()) != self.layer => self.err(
                    id,
                    format!(
                        "duplicate {what} id `{text}`: also used in layer `{other}` (line {first}); \
                         ids must be unique across all layers of a policy, so rename one of them"
                    ),
                ),
                _ => self.err(
                    id,
                    format!("duplicate {what} id `{text}` (first used on line {first})"),
                ),
            });
        }
        seen.insert(text.clone(), (self.layer.map(str::to_owned), line));
        Ok(text.clone())
    }

    fn patterns(&self, value: Option<&Spanned<OneOrMany>>) -> Result<Patterns, PolicyError> {
        let Some(value) = value else {
            return Ok(Patterns::default());
        };
        if value.get_ref().0.is_empty() {
            return Err(self.err(
                value,
                "empty glob list matches nothing (omit the key to match anything)",
            ));
        }
        value
            .get_ref()
            .0
            .iter()
            .map(|g| Pattern::new(g).map_err(|m| self.err(value, m)))
            .collect::<Result<Vec<_>, _>>()
            .map(Patterns)
    }

    fn rule(&self, raw: RawRule, seen: &mut SeenIds) -> Result<Rule, PolicyError> {
        let id = self.unique_id(&raw.id, "rule", seen)?;
        let action = self.action(&raw.action)?;
        let mut labels = Vec::new();
        for (key, glob) in raw.labels.iter().flatten() {
            let pattern = Pattern::new(glob.get_ref())
                .map_err(|m| self.err(glob, format!("label `{key}`: {m}")))?;
            labels.push((key.clone(), pattern));
        }
        let conditions = raw
            .when
            .iter()
            .map(|c| self.condition(c))
            .collect::<Result<Vec<_>, _>>()?;
        let findings = match &raw.finding {
            Some(f) => Some(self.patterns(Some(f))?),
            None => None,
        };
        let min_risk = match &raw.min_risk {
            Some(r) => Some(self.risk(r, "min_risk")?),
            None => None,
        };
        let approval = self.approval(&raw, action)?;
        Ok(Rule {
            approval,
            findings,
            min_risk,
            layer: self.layer.map(str::to_owned),
            id,
            priority: raw.priority.unwrap_or(0),
            description: raw.description,
            agent: self.patterns(raw.agent.as_ref())?,
            service: self.patterns(raw.service.as_ref())?,
            tool: self.patterns(raw.tool.as_ref())?,
            labels,
            action,
            message: raw.message,
            conditions,
        })
    }

    fn condition(&self, spanned: &Spanned<RawCondition>) -> Result<Condition, PolicyError> {
        let raw = spanned.get_ref();
        let pointer = raw.pointer.get_ref();
        validate_pointer(pointer).map_err(|m| self.err(&raw.pointer, m))?;

        let mut tests: Vec<(&str, Result<Test, PolicyError>)> = Vec::new();
        if let Some(g) = &raw.glob {
            tests.push(("glob", Test::glob(g.get_ref()).map_err(|m| self.err(g, m))));
        }
        if let Some(r) = &raw.regex {
            tests.push((
                "regex",
                Test::regex(r.get_ref()).map_err(|m| self.err(r, m)),
            ));
        }
        if let Some(v) = &raw.equals {
            tests.push(("equals", Ok(Test::Equals(v.clone()))));
        }
        if let Some(v) = &raw.not_equals {
            tests.push(("not_equals", Ok(Test::NotEquals(v.clone()))));
        }
        for (name, value, make) in [
            ("gt", raw.gt, Test::Gt as fn(f64) -> Test),
            ("gte", raw.gte, Test::Gte),
            ("lt", raw.lt, Test::Lt),
            ("lte", raw.lte, Test::Lte),
        ] {
            if let Some(n) = value {
                let test = if n.is_finite() {
                    Ok(make(n))
                } else {
                    Err(self.err(spanned, format!("`{name}` must be a finite number")))
                };
                tests.push((name, test));
            }
        }
        if let Some(b) = raw.present {
            tests.push(("present", Ok(Test::Present(b))));
        }
        if let Some(s) = &raw.contains {
            tests.push(("contains", Ok(Test::Contains(s.clone()))));
        }
        if let Some(list) = &raw.one_of {
            tests.push(("one_of", Ok(Test::OneOf(list.clone()))));
        }
        match tests.len() {
            1 => {}
            0 => {
                return Err(self.err(
                    spanned,
                    "condition has no test (give exactly one of glob, regex, equals, \
                     not_equals, gt, gte, lt, lte, present, contains or one_of)",
                ));
            }
            _ => {
                let names: Vec<&str> = tests.iter().map(|(n, _)| *n).collect();
                return Err(self.err(
                    spanned,
                    format!(
                        "condition has {} tests ({}); give exactly one per condition \
                         (add another [[rules.when]] for more)",
                        names.len(),
                        names.join(", ")
                    ),
                ));
            }
        }
        let Some((_, test)) = tests.pop() else {
            // Unreachable: the length was checked to be 1 above.
            return Err(self.err(spanned, "condition has no test"));
        };
        Ok(Condition {
            pointer: pointer.clone(),
            test: test?,
        })
    }

    fn rate_limit(
        &self,
        raw: RawRateLimit,
        span: std::ops::Range<usize>,
        seen: &mut SeenIds,
    ) -> Result<RateLimitSpec, PolicyError> {
        let id = self.unique_id(&raw.id, "rate limit", seen)?;
        let scope = match raw.scope.get_ref().as_str() {
            "agent" => RateScope::Agent,
            "service" => RateScope::Service,
            "tool" => RateScope::Tool,
            other => {
                return Err(self.err(
                    &raw.scope,
                    format!("unknown rate-limit scope `{other}` (expected agent, service or tool)"),
                ));
            }
        };
        let periods = [
            (raw.per_second.as_ref(), "per_second"),
            (raw.per_minute.as_ref(), "per_minute"),
            (raw.per_hour.as_ref(), "per_hour"),
        ];
        let given: Vec<_> = periods.iter().filter(|(v, _)| v.is_some()).collect();
        let [(Some(count), period)] = given.as_slice() else {
            return Err(PolicyError::at(
                self.source,
                Some(span),
                format!(
                    "rate limit `{id}` needs exactly one of per_second, per_minute or per_hour"
                ),
            ));
        };
        let count_value = self.positive_u32(count, period)?;
        let burst = match &raw.burst {
            Some(b) => self.positive_u32(b, "burst")?,
            None => count_value,
        };
        let quota = match *period {
            "per_second" => Quota::per_second(count_value),
            "per_minute" => Quota::per_minute(count_value),
            _ => Quota::per_hour(count_value),
        }
        .allow_burst(burst);
        Ok(RateLimitSpec {
            id,
            scope,
            agent: self.patterns(raw.agent.as_ref())?,
            service: self.patterns(raw.service.as_ref())?,
            tool: self.patterns(raw.tool.as_ref())?,
            quota,
        })
    }

    /// `approvers`, `approvals` and `approval_timeout_secs`: only on `approve` rules.
    fn approval(&self, raw: &RawRule, action: Action) -> Result<ApprovalSpec, PolicyError> {
        let mut spec = ApprovalSpec::default();
        if action != Action::Approve {
            for (key, span) in [
                ("approvers", raw.approvers.as_ref().map(|v| v.span())),
                ("approvals", raw.approvals.as_ref().map(|v| v.span())),
                (
                    "approval_timeout_secs",
                    raw.approval_timeout_secs.as_ref().map(|v| v.span()),
                ),
            ] {
                if let Some(span) = span {
                    return Err(PolicyError::at(
                        self.source,
                        Some(span),
                        format!("`{key}` only applies to rules with action = \"approve\""),
                    ));
                }
            }
            return Ok(spec);
        }
        if let Some(list) = &raw.approvers {
            for who in list.get_ref() {
                let ok = match who.strip_prefix("role:") {
                    Some(role) => {
                        matches!(role, "owner" | "admin" | "approver" | "auditor" | "viewer")
                    }
                    None => who.contains('@') && !who.chars().any(char::is_whitespace),
                };
                if !ok {
                    return Err(self.err(
                        list,
                        format!(
                            "approver `{who}` is neither an e-mail address nor `role:<owner|admin|approver|auditor|viewer>`"
                        ),
                    ));
                }
                spec.approvers.push(who.to_lowercase());
            }
        }
        if let Some(n) = &raw.approvals {
            spec.needed = u32::try_from(*n.get_ref())
                .ok()
                .filter(|n| (1..=10).contains(n))
                .ok_or_else(|| {
                    self.err(
                        n,
                        format!("`approvals` must be 1..=10, got {}", n.get_ref()),
                    )
                })?;
        }
        if let Some(t) = &raw.approval_timeout_secs {
            let secs = u64::try_from(*t.get_ref())
                .ok()
                .filter(|s| (10..=7 * 86_400).contains(s))
                .ok_or_else(|| {
                    self.err(
                        t,
                        format!(
                            "`approval_timeout_secs` must be 10..=604800, got {}",
                            t.get_ref()
                        ),
                    )
                })?;
            spec.timeout = Duration::from_secs(secs);
        }
        Ok(spec)
    }

    fn risk(&self, v: &Spanned<i64>, name: &str) -> Result<u8, PolicyError> {
        u8::try_from(*v.get_ref())
            .ok()
            .filter(|r| *r <= 100)
            .ok_or_else(|| {
                self.err(
                    v,
                    format!("`{name}` must be a risk from 0 to 100, got {}", v.get_ref()),
                )
            })
    }

    /// Applies a `[shield]` table over `s` (the defaults, or what less specific layers set):
    /// every key it sets replaces the earlier value, `[[shield.map]]` entries are appended.
    fn shield(&self, raw: RawShield, s: &mut ShieldSettings) -> Result<(), PolicyError> {
        if let Some(e) = raw.enabled {
            s.enabled = e;
        }
        if let Some(b) = &raw.block_at {
            s.block_at = self.risk(b, "block_at")?;
        }
        if let Some(a) = &raw.approve_at {
            s.approve_at = self.risk(a, "approve_at")?;
            if s.approve_at > s.block_at {
                return Err(self.err(
                    a,
                    format!(
                        "approve_at ({}) must not be above block_at ({})",
                        s.approve_at, s.block_at
                    ),
                ));
            }
        }
        if let Some(p) = raw.priority {
            s.priority = p;
        }
        let globs =
            |list: Option<Vec<String>>, what: &str, into: &mut Vec<String>| -> Result<(), String> {
                if let Some(list) = list {
                    for g in &list {
                        Pattern::new(g).map_err(|m| format!("[shield] {what}: {m}"))?;
                    }
                    *into = list;
                }
                Ok(())
            };
        let at_table = |m: String| PolicyError::at(self.source, None, m);
        globs(
            raw.protected_branches,
            "protected_branches",
            &mut s.config.protected_branches,
        )
        .map_err(at_table)?;
        globs(raw.production, "production", &mut s.config.production).map_err(at_table)?;
        globs(raw.disposable, "disposable", &mut s.config.disposable).map_err(at_table)?;
        globs(
            raw.protected_paths,
            "protected_paths",
            &mut s.config.protected_paths,
        )
        .map_err(at_table)?;
        if let Some(d) = &raw.sql_dialect {
            s.config.sql_dialect = match d.get_ref().as_str() {
                "generic" => SqlDialect::Generic,
                "postgres" | "postgresql" => SqlDialect::Postgres,
                "mysql" | "mariadb" => SqlDialect::MySql,
                "sqlite" => SqlDialect::Sqlite,
                other => {
                    return Err(self.err(d, format!("unknown sql_dialect `{other}` (expected generic, postgres, mysql or sqlite)")));
                }
            };
        }
        for m in &raw.map {
            let m = m.get_ref();
            validate_pointer(m.pointer.get_ref()).map_err(|e| self.err(&m.pointer, e))?;
            let kind = InputKind::parse(m.kind.get_ref()).ok_or_else(|| {
                self.err(
                    &m.kind,
                    format!(
                        "unknown kind `{}` (expected shell, sql, path or url)",
                        m.kind.get_ref()
                    ),
                )
            })?;
            s.mappings.push(Mapping {
                tool: self.patterns(Some(&m.tool))?,
                pointer: m.pointer.get_ref().clone(),
                kind,
            });
        }
        Ok(())
    }

    fn positive_u32(&self, v: &Spanned<i64>, name: &str) -> Result<NonZeroU32, PolicyError> {
        u32::try_from(*v.get_ref())
            .ok()
            .and_then(NonZeroU32::new)
            .ok_or_else(|| {
                self.err(
                    v,
                    format!(
                        "`{name}` must be a whole number from 1 to {}, got {}",
                        u32::MAX,
                        v.get_ref()
                    ),
                )
            })
    }
}
