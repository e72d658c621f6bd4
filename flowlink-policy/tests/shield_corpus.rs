//! The shield against a labelled corpus of shell commands and SQL (tests/corpus/*.jsonl).
//!
//! Each line is `{"input", "expect": block|approve|allow, "class": dangerous|evasion|benign,
//! "reason"}`. The verdict of an input is the band of `risk_of(analyze(kind, input, default))`:
//! 80 and above block, 40 and above approve, else allow. The test prints every miss and the
//! metrics, then asserts:
//! - block recall ≥ 0.98: items expected `block` get `block`;
//! - dangerous recall ≥ 0.98: items expected `block` or `approve` are not allowed;
//! - false-positive rate ≤ 0.03: items expected `allow` that got `block` or `approve`;
//! - the corpus has ≥ 500 items, ≥ 1/4 of them evasions and ≥ 1/4 benign.
//!
//! Run `cargo test -p flowlink-policy --test shield_corpus -- --nocapture` to see the table when
//! the test passes.

use std::collections::{BTreeMap, HashSet};
use std::fmt::Write as _;

use flowlink_policy::shield::{self, InputKind, ShieldConfig};
use serde_json::Value;

const SHELL: &str = include_str!("corpus/shell.jsonl");
const SQL: &str = include_str!("corpus/sql.jsonl");

const MIN_BLOCK_RECALL: f64 = 0.98;
const MIN_DANGEROUS_RECALL: f64 = 0.98;
const MAX_FALSE_POSITIVE_RATE: f64 = 0.03;
const MIN_ITEMS: usize = 500;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Verdict {
    Allow,
    Approve,
    Block,
}

impl Verdict {
    fn parse(s: &str) -> Option<Verdict> {
        Some(match s {
            "block" => Verdict::Block,
            "approve" => Verdict::Approve,
            "allow" => Verdict::Allow,
            _ => return None,
        })
    }
    fn of_risk(risk: u8) -> Verdict {
        if risk >= 80 {
            Verdict::Block
        } else if risk >= 40 {
            Verdict::Approve
        } else {
            Verdict::Allow
        }
    }
    fn as_str(self) -> &'static str {
        match self {
            Verdict::Block => "block",
            Verdict::Approve => "approve",
            Verdict::Allow => "allow",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Class {
    Dangerous,
    Evasion,
    Benign,
}

impl Class {
    fn parse(s: &str) -> Option<Class> {
        Some(match s {
            "dangerous" => Class::Dangerous,
            "evasion" => Class::Evasion,
            "benign" => Class::Benign,
            _ => return None,
        })
    }
}

#[derive(Debug)]
struct Case {
    kind: InputKind,
    line: usize,
    input: String,
    expect: Verdict,
    class: Class,
}

/// Parses one corpus file; every format error is collected with its file and line.
fn parse(kind: InputKind, file: &str, text: &str, errors: &mut Vec<String>) -> Vec<Case> {
    let mut cases = Vec::new();
    let mut seen = HashSet::new();
    for (i, line) in text.lines().enumerate() {
        let line_no = i + 1;
        let at = format!("{file}:{line_no}");
        if line.trim().is_empty() {
            errors.push(format!("{at}: empty line"));
            continue;
        }
        let value: Value = match serde_json::from_str(line) {
            Ok(v) => v,
            Err(e) => {
                errors.push(format!("{at}: not JSON: {e}"));
                continue;
            }
        };
        let Some(obj) = value.as_object() else {
            errors.push(format!("{at}: not a JSON object"));
            continue;
        };
        for key in obj.keys() {
            if !["input", "expect", "class", "reason"].contains(&key.as_str()) {
                errors.push(format!("{at}: unknown member {key:?}"));
            }
        }
        let field = |name: &str| obj.get(name).and_then(Value::as_str);
        let (Some(input), Some(expect), Some(class), Some(reason)) = (
            field("input"),
            field("expect"),
            field("class"),
            field("reason"),
        ) else {
            errors.push(format!(
                "{at}: input, expect, class and reason must all be strings"
            ));
            continue;
        };
        if input.trim().is_empty() {
            errors.push(format!("{at}: empty input"));
        }
        if reason.trim().is_empty() {
            errors.push(format!("{at}: empty reason"));
        }
        let Some(expect) = Verdict::parse(expect) else {
            errors.push(format!(
                "{at}: unknown expect {expect:?} (block, approve or allow)"
            ));
            continue;
        };
        let Some(class) = Class::parse(class) else {
            errors.push(format!(
                "{at}: unknown class {class:?} (dangerous, evasion or benign)"
            ));
            continue;
        };
        // Benign items are exactly the ones that must be allowed.
        if (class == Class::Benign) != (expect == Verdict::Allow) {
            errors.push(format!(
                "{at}: class {class:?} does not fit expect {}",
                expect.as_str()
            ));
        }
        if !seen.insert(input.to_owned()) {
            errors.push(format!("{at}: duplicate input {input:?}"));
        }
        cases.push(Case {
            kind,
            line: line_no,
            input: input.to_owned(),
            expect,
            class,
        });
    }
    cases
}

fn load() -> Vec<Case> {
    let mut errors = Vec::new();
    let mut cases = parse(InputKind::Shell, "corpus/shell.jsonl", SHELL, &mut errors);
    cases.extend(parse(InputKind::Sql, "corpus/sql.jsonl", SQL, &mut errors));
    assert!(
        errors.is_empty(),
        "corpus format errors:\n{}",
        errors.join("\n")
    );
    cases
}

#[derive(Default, Clone, Copy)]
struct Ratio {
    hit: usize,
    of: usize,
}

impl Ratio {
    fn add(&mut self, hit: bool) {
        self.of += 1;
        self.hit += usize::from(hit);
    }
    fn value(self) -> f64 {
        if self.of == 0 {
            1.0
        } else {
            self.hit as f64 / self.of as f64
        }
    }
}

impl std::fmt::Display for Ratio {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:.3} ({}/{})", self.value(), self.hit, self.of)
    }
}

#[derive(Default, Clone, Copy)]
struct Metrics {
    block_recall: Ratio,
    dangerous_recall: Ratio,
    false_positive: Ratio,
    evasion_recall: Ratio,
}

impl Metrics {
    fn add(&mut self, case: &Case, got: Verdict) {
        if case.expect == Verdict::Block {
            self.block_recall.add(got == Verdict::Block);
        }
        if case.expect != Verdict::Allow {
            self.dangerous_recall.add(got != Verdict::Allow);
        }
        if case.expect == Verdict::Allow {
            self.false_positive.add(got != Verdict::Allow);
        }
        if case.class == Class::Evasion {
            // An evasion is caught when it lands at least in its expected band.
            self.evasion_recall.add(got >= case.expect);
        }
    }
}

fn one_line(s: &str, max: usize) -> String {
    let flat: String = s
        .chars()
        .map(|c| {
            if c == '\n' {
                '⏎'
            } else if c == '\t' {
                '→'
            } else {
                c
            }
        })
        .collect();
    if flat.chars().count() <= max {
        flat
    } else {
        format!("{}…", flat.chars().take(max).collect::<String>())
    }
}

#[test]
fn shield_meets_recall_and_false_positive_targets_on_the_corpus() {
    let cases = load();
    let cfg = ShieldConfig::default();

    let mut total = Metrics::default();
    let mut by_kind: BTreeMap<&str, Metrics> = BTreeMap::new();
    let mut misses = String::new();
    let mut miss_count = 0usize;
    for case in &cases {
        let findings = shield::analyze(case.kind, &case.input, &cfg);
        let got = Verdict::of_risk(shield::risk_of(&findings));
        total.add(case, got);
        by_kind
            .entry(case.kind.as_str())
            .or_default()
            .add(case, got);
        if got != case.expect {
            miss_count += 1;
            let ids: Vec<String> = findings
                .iter()
                .map(|f| format!("{}={}", f.id, f.risk))
                .collect();
            let ids = if ids.is_empty() {
                "-".to_owned()
            } else {
                ids.join(",")
            };
            let _ = writeln!(
                misses,
                "{:<5} {:>4}  {:<7} {:<7} {:<9}  {:<70}  {}",
                case.kind.as_str(),
                case.line,
                case.expect.as_str(),
                got.as_str(),
                format!("{:?}", case.class).to_lowercase(),
                one_line(&case.input, 70),
                ids
            );
        }
    }

    let n = cases.len();
    let evasions = cases.iter().filter(|c| c.class == Class::Evasion).count();
    let benign = cases.iter().filter(|c| c.class == Class::Benign).count();

    println!("misses ({miss_count} of {n}; `got` differs from `expected`):");
    println!(
        "{:<5} {:>4}  {:<7} {:<7} {:<9}  {:<70}  findings",
        "kind", "line", "expect", "got", "class", "input"
    );
    print!("{misses}");
    println!();
    println!("corpus: {n} items, {evasions} evasions, {benign} benign");
    for (kind, m) in by_kind
        .iter()
        .map(|(k, m)| (*k, *m))
        .chain(std::iter::once(("all", total)))
    {
        println!(
            "{kind:<5} block recall {}  dangerous recall {}  false positives {}  evasions caught {}",
            m.block_recall, m.dangerous_recall, m.false_positive, m.evasion_recall
        );
    }

    let mut failures = Vec::new();
    if n < MIN_ITEMS {
        failures.push(format!("corpus has {n} items, fewer than {MIN_ITEMS}"));
    }
    if evasions * 4 < n {
        failures.push(format!(
            "only {evasions} of {n} items are evasions (need ≥ 1/4)"
        ));
    }
    if benign * 4 < n {
        failures.push(format!(
            "only {benign} of {n} items are benign (need ≥ 1/4)"
        ));
    }
    if total.block_recall.value() < MIN_BLOCK_RECALL {
        failures.push(format!(
            "block recall {} < {MIN_BLOCK_RECALL}",
            total.block_recall
        ));
    }
    if total.dangerous_recall.value() < MIN_DANGEROUS_RECALL {
        failures.push(format!(
            "dangerous recall {} < {MIN_DANGEROUS_RECALL}",
            total.dangerous_recall
        ));
    }
    if total.false_positive.value() > MAX_FALSE_POSITIVE_RATE {
        failures.push(format!(
            "false-positive rate {} > {MAX_FALSE_POSITIVE_RATE}",
            total.false_positive
        ));
    }
    assert!(
        failures.is_empty(),
        "the shield misses its targets:\n  {}",
        failures.join("\n  ")
    );
}

/// The format checks themselves: a corpus line with an unknown label must be rejected.
#[test]
fn corpus_format_rejects_unknown_labels_and_members() {
    let bad = [
        r#"{"input": "ls", "expect": "deny", "class": "benign", "reason": "x"}"#,
        r#"{"input": "ls", "expect": "allow", "class": "harmless", "reason": "x"}"#,
        r#"{"input": "ls", "expect": "allow", "class": "benign", "reason": "x", "note": 1}"#,
        r#"{"input": "ls", "expect": "allow", "class": "benign"}"#,
        r#"{"input": "rm -rf /", "expect": "block", "class": "benign", "reason": "x"}"#,
        r#"{"input": "ls", "expect": "allow", "class": "benign", "reason": "x"}
{"input": "ls", "expect": "allow", "class": "benign", "reason": "y"}"#,
        "not json",
    ];
    for text in bad {
        let mut errors = Vec::new();
        parse(InputKind::Shell, "test", text, &mut errors);
        assert!(!errors.is_empty(), "accepted a bad corpus line: {text}");
    }
    let mut errors = Vec::new();
    let ok = parse(
        InputKind::Shell,
        "test",
        r#"{"input": "ls", "expect": "allow", "class": "benign", "reason": "reads"}"#,
        &mut errors,
    );
    assert!(errors.is_empty() && ok.len() == 1, "{errors:?}");
}

/// Format and balance of the corpus alone, independent of the analysers.
#[test]
fn corpus_is_well_formed_and_balanced() {
    let cases = load();
    let n = cases.len();
    assert!(n >= MIN_ITEMS, "{n} items");
    let evasions = cases.iter().filter(|c| c.class == Class::Evasion).count();
    let benign = cases.iter().filter(|c| c.class == Class::Benign).count();
    assert!(evasions * 4 >= n, "{evasions} evasions of {n}");
    assert!(benign * 4 >= n, "{benign} benign of {n}");
    for kind in [InputKind::Shell, InputKind::Sql] {
        for expect in [Verdict::Block, Verdict::Approve, Verdict::Allow] {
            assert!(
                cases.iter().any(|c| c.kind == kind && c.expect == expect),
                "no {} item expected {}",
                kind.as_str(),
                expect.as_str()
            );
        }
    }
}
