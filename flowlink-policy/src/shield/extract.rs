//! Which arguments of a call are code: the policy's `[[shield.map]]` entries first, then
//! heuristics on argument names for tools no mapping covers.
//!
//! Heuristics, on string arguments at the top level of the arguments object (and one level
//! down, for tools that nest their parameters):
//! - `command`, `cmd`, `script`, `shell`, `bash`, `sh`, `command_line`, `commandLine`, `exec`,
//!   `run` → shell. A string `command` with a sibling `args` array of strings is joined into one
//!   command line (shell-quoted), since that is what will run.
//! - `sql`, `query`, `statement`, `stmt`, `sql_query` → SQL (a `query` that does not look like
//!   SQL is skipped: search tools call their text `query` too).
//! - `path`, `file`, `filename`, `file_path`, `filepath`, `dir`, `directory`, `target`,
//!   `destination`, `source`, or names ending in `_path`/`Path` → path.
//! - `url`, `uri`, `endpoint`, `href` → URL.

use serde_json::{Map, Value};

use super::InputKind;
use crate::pattern::Patterns;

/// A `[[shield.map]]` entry: for tools matching `tool`, the string at `pointer` is `kind`.
#[derive(Debug, Clone)]
pub(crate) struct Mapping {
    pub(crate) tool: Patterns,
    pub(crate) pointer: String,
    pub(crate) kind: InputKind,
}

/// One argument to analyse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Input {
    pub(crate) pointer: String,
    pub(crate) kind: InputKind,
    pub(crate) text: String,
}

/// At most this many arguments of one call are analysed; more is a sign of abuse and the
/// analysers' budget covers the rest.
const MAX_INPUTS: usize = 32;

/// The arguments of a call that the shield should analyse.
pub(crate) fn inputs(mappings: &[Mapping], tool: &str, arguments: &Value) -> Vec<Input> {
    let mapped: Vec<&Mapping> = mappings.iter().filter(|m| m.tool.is_match(tool)).collect();
    if !mapped.is_empty() {
        return mapped
            .into_iter()
            .filter_map(|m| {
                let text = arguments.pointer(&m.pointer)?.as_str()?;
                Some(Input {
                    pointer: m.pointer.clone(),
                    kind: m.kind,
                    text: text.to_owned(),
                })
            })
            .collect();
    }
    let mut out = Vec::new();
    if let Value::Object(map) = arguments {
        heuristics(map, "", &mut out, 0);
    }
    out.truncate(MAX_INPUTS);
    out
}

fn heuristics(map: &Map<String, Value>, prefix: &str, out: &mut Vec<Input>, depth: usize) {
    for (key, value) in map {
        let pointer = format!("{prefix}/{}", escape(key));
        match value {
            Value::String(text) => {
                let Some(kind) = kind_of(key) else { continue };
                if kind == InputKind::Sql && !looks_like_sql(text) {
                    continue;
                }
                let text = match (kind, map.get("args")) {
                    (InputKind::Shell, Some(Value::Array(args))) if is_command_key(key) => {
                        join_command(text, args)
                    }
                    _ => text.clone(),
                };
                out.push(Input {
                    pointer,
                    kind,
                    text,
                });
            }
            Value::Object(inner) if depth == 0 => heuristics(inner, &pointer, out, depth + 1),
            _ => {}
        }
        if out.len() >= MAX_INPUTS {
            return;
        }
    }
}

fn is_command_key(key: &str) -> bool {
    matches!(key, "command" | "cmd")
}

fn kind_of(key: &str) -> Option<InputKind> {
    let lower = key.to_ascii_lowercase();
    Some(match lower.as_str() {
        "command" | "cmd" | "script" | "shell" | "bash" | "sh" | "command_line" | "commandline"
        | "exec" | "run" => InputKind::Shell,
        "sql" | "query" | "statement" | "stmt" | "sql_query" | "sqlquery" => InputKind::Sql,
        "path" | "file" | "filename" | "file_path" | "filepath" | "dir" | "directory"
        | "target" | "destination" | "source" => InputKind::Path,
        "url" | "uri" | "endpoint" | "href" => InputKind::Url,
        _ if lower.ends_with("_path") || key.ends_with("Path") => InputKind::Path,
        _ => return None,
    })
}

/// Whether a `query` argument is SQL rather than, say, a search phrase.
fn looks_like_sql(text: &str) -> bool {
    let first = text
        .trim_start_matches(|c: char| c.is_whitespace() || c == '(')
        .split(|c: char| !c.is_ascii_alphabetic())
        .next()
        .unwrap_or("")
        .to_ascii_uppercase();
    matches!(
        first.as_str(),
        "SELECT"
            | "INSERT"
            | "UPDATE"
            | "DELETE"
            | "DROP"
            | "TRUNCATE"
            | "ALTER"
            | "CREATE"
            | "GRANT"
            | "REVOKE"
            | "WITH"
            | "EXPLAIN"
            | "COPY"
            | "MERGE"
            | "REPLACE"
            | "CALL"
            | "EXEC"
            | "EXECUTE"
            | "SET"
            | "SHOW"
            | "DESCRIBE"
            | "DESC"
            | "PRAGMA"
            | "VACUUM"
            | "ATTACH"
            | "DETACH"
            | "BEGIN"
            | "COMMIT"
            | "ROLLBACK"
            | "LOAD"
            | "HANDLER"
            | "DO"
            | "UPSERT"
            | "RENAME"
            | "LOCK"
            | "UNLOCK"
            | "VALUES"
            | "TABLE"
    ) || text.trim_start().starts_with("/*")
        || text.trim_start().starts_with("--")
}

fn join_command(command: &str, args: &[Value]) -> String {
    let mut line = quote(command);
    for a in args {
        line.push(' ');
        match a {
            Value::String(s) => line.push_str(&quote(s)),
            other => line.push_str(&quote(&other.to_string())),
        }
    }
    line
}

/// POSIX single-quoting, so the joined line means exactly the argument vector.
fn quote(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:,@+%".contains(c))
    {
        return s.to_owned();
    }
    format!("'{}'", s.replace('\'', "'\\''"))
}

fn escape(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn kinds(args: Value) -> Vec<(String, InputKind, String)> {
        inputs(&[], "t", &args)
            .into_iter()
            .map(|i| (i.pointer, i.kind, i.text))
            .collect()
    }

    #[test]
    fn names_decide_kinds() {
        let got = kinds(json!({
            "command": "ls -la", "sql": "DROP TABLE x", "path": "/etc", "url": "https://x.test",
            "repo_path": "/tmp/r", "message": "rm -rf /", "count": 3
        }));
        assert!(got.contains(&("/command".into(), InputKind::Shell, "ls -la".into())));
        assert!(got.contains(&("/sql".into(), InputKind::Sql, "DROP TABLE x".into())));
        assert!(got.contains(&("/path".into(), InputKind::Path, "/etc".into())));
        assert!(got.contains(&("/url".into(), InputKind::Url, "https://x.test".into())));
        assert!(got.contains(&("/repo_path".into(), InputKind::Path, "/tmp/r".into())));
        assert!(
            !got.iter().any(|g| g.0 == "/message"),
            "free text is not code"
        );
    }

    #[test]
    fn a_search_query_is_not_sql() {
        assert!(kinds(json!({"query": "how to drop a table"})).is_empty());
        assert_eq!(kinds(json!({"query": " select 1"})).len(), 1);
    }

    #[test]
    fn command_and_args_are_joined_as_they_will_run() {
        let got =
            kinds(json!({"command": "git", "args": ["push", "--force", "origin", "it's main"]}));
        assert_eq!(got[0].2, "git push --force origin 'it'\\''s main'");
    }

    #[test]
    fn nested_parameters_one_level_down() {
        let got = kinds(json!({"params": {"cmd": "rm -rf /"}}));
        assert_eq!(
            got,
            vec![("/params/cmd".into(), InputKind::Shell, "rm -rf /".into())]
        );
    }

    #[test]
    fn mappings_take_precedence() {
        let m = Mapping {
            tool: Patterns(vec![crate::pattern::Pattern::new("run_*").unwrap()]),
            pointer: "/input/text".into(),
            kind: InputKind::Shell,
        };
        let got = inputs(
            &[m],
            "run_it",
            &json!({"input": {"text": "rm -rf ~"}, "command": "ls"}),
        );
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].pointer, "/input/text");
    }
}
