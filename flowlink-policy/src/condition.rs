//! Argument conditions (`[[rules.when]]`): one JSON pointer and one test each.

use std::borrow::Cow;
use std::fmt;

use globset::{GlobBuilder, GlobMatcher};
use regex::Regex;
use serde_json::Value;

/// Compiled-size limit for one regex, so a hostile policy cannot exhaust memory.
pub(crate) const REGEX_SIZE_LIMIT: usize = 1 << 20;

/// A compiled condition: the value at `pointer` must pass `test`.
#[derive(Debug, Clone)]
pub(crate) struct Condition {
    pub(crate) pointer: String,
    pub(crate) test: Test,
}

/// The test applied to the value a condition's pointer selects.
#[derive(Debug, Clone)]
pub(crate) enum Test {
    Glob { text: String, matcher: GlobMatcher },
    Regex(Regex),
    Equals(Value),
    NotEquals(Value),
    Gt(f64),
    Gte(f64),
    Lt(f64),
    Lte(f64),
    Present(bool),
    Contains(String),
    OneOf(Vec<Value>),
}

impl Test {
    /// Compiles a glob test (same options as name globs, but `*` is never short-cut so the
    /// JSON-text rules stay uniform).
    pub(crate) fn glob(text: &str) -> Result<Test, String> {
        let glob = GlobBuilder::new(text)
            .literal_separator(false)
            .case_insensitive(false)
            .backslash_escape(true)
            .build()
            .map_err(|e| format!("bad glob `{text}`: {}", e.kind()))?;
        Ok(Test::Glob {
            text: text.to_owned(),
            matcher: glob.compile_matcher(),
        })
    }

    /// Compiles a regex test with a bounded compiled size.
    pub(crate) fn regex(text: &str) -> Result<Test, String> {
        regex::RegexBuilder::new(text)
            .size_limit(REGEX_SIZE_LIMIT)
            .dfa_size_limit(REGEX_SIZE_LIMIT)
            .build()
            .map(Test::Regex)
            .map_err(|e| match e {
                regex::Error::CompiledTooBig(limit) => {
                    format!("regex `{text}` is too big once compiled (limit {limit} bytes)")
                }
                other => {
                    // The syntax error text is multi-line with a caret diagram; keep its last line.
                    let s = other.to_string();
                    let last = s.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("");
                    format!("bad regex `{text}`: {}", last.trim_start_matches("error: "))
                }
            })
    }
}

/// Checks that `pointer` is a valid RFC 6901 JSON pointer.
pub(crate) fn validate_pointer(pointer: &str) -> Result<(), String> {
    if pointer.is_empty() {
        return Ok(());
    }
    if !pointer.starts_with('/') {
        return Err(format!(
            "bad JSON pointer `{pointer}`: must be empty or start with `/` (RFC 6901)"
        ));
    }
    let mut chars = pointer.chars();
    while let Some(c) = chars.next() {
        if c == '~' && !matches!(chars.next(), Some('0' | '1')) {
            return Err(format!(
                "bad JSON pointer `{pointer}`: `~` must be followed by 0 or 1 (RFC 6901)"
            ));
        }
    }
    Ok(())
}

impl Condition {
    /// Whether the condition holds for `arguments`.
    pub(crate) fn holds(&self, arguments: &Value) -> bool {
        let value = arguments.pointer(&self.pointer);
        let Some(value) = value else {
            return matches!(self.test, Test::Present(false));
        };
        match &self.test {
            Test::Present(want) => *want,
            Test::Glob { matcher, .. } => any_text(value, &|s| matcher.is_match(s)),
            Test::Regex(re) => any_text(value, &|s| re.is_match(s)),
            Test::Contains(needle) => any_text(value, &|s| s.contains(needle.as_str())),
            Test::Equals(want) => json_eq(value, want),
            Test::NotEquals(want) => !json_eq(value, want),
            Test::OneOf(list) => list.iter().any(|w| json_eq(value, w)),
            Test::Gt(n) => number(value).is_some_and(|v| v > *n),
            Test::Gte(n) => number(value).is_some_and(|v| v >= *n),
            Test::Lt(n) => number(value).is_some_and(|v| v < *n),
            Test::Lte(n) => number(value).is_some_and(|v| v <= *n),
        }
    }

    /// Human description of why the condition failed (used by `explain`).
    pub(crate) fn describe_failure(&self, arguments: &Value) -> String {
        match arguments.pointer(&self.pointer) {
            None => format!("argument `{}` is absent, so {} is false", self.ptr(), self),
            Some(v) => {
                let mut shown = v.to_string();
                if shown.chars().count() > 80 {
                    shown = shown.chars().take(77).collect::<String>() + "...";
                }
                format!("argument `{}` = {shown} fails {self}", self.ptr())
            }
        }
    }

    fn ptr(&self) -> &str {
        if self.pointer.is_empty() {
            "(whole arguments)"
        } else {
            &self.pointer
        }
    }
}

impl fmt::Display for Condition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.test {
            Test::Glob { text, .. } => write!(f, "glob `{text}`"),
            Test::Regex(re) => write!(f, "regex `{}`", re.as_str()),
            Test::Equals(v) => write!(f, "equals {v}"),
            Test::NotEquals(v) => write!(f, "not_equals {v}"),
            Test::Gt(n) => write!(f, "gt {n}"),
            Test::Gte(n) => write!(f, "gte {n}"),
            Test::Lt(n) => write!(f, "lt {n}"),
            Test::Lte(n) => write!(f, "lte {n}"),
            Test::Present(b) => write!(f, "present = {b}"),
            Test::Contains(s) => write!(f, "contains {}", Value::from(s.as_str())),
            Test::OneOf(list) => {
                f.write_str("one_of [")?;
                for (i, v) in list.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{v}")?;
                }
                f.write_str("]")
            }
        }
    }
}

/// Text of a scalar for glob / regex / contains: strings as is, numbers and booleans as JSON text.
fn scalar_text(v: &Value) -> Option<Cow<'_, str>> {
    match v {
        Value::String(s) => Some(Cow::Borrowed(s)),
        Value::Number(n) => Some(Cow::Owned(n.to_string())),
        Value::Bool(b) => Some(Cow::Borrowed(if *b { "true" } else { "false" })),
        Value::Null | Value::Array(_) | Value::Object(_) => None,
    }
}

/// Applies a text test: to a scalar directly; to an array or object if any scalar inside it, at
/// any depth, passes (object keys are not tested). `null` never passes. Depth is bounded by
/// `serde_json`'s parser (128 levels).
fn any_text(v: &Value, test: &impl Fn(&str) -> bool) -> bool {
    match v {
        Value::Array(items) => items.iter().any(|item| any_text(item, test)),
        Value::Object(map) => map.values().any(|item| any_text(item, test)),
        other => scalar_text(other).is_some_and(|s| test(&s)),
    }
}

/// A number, or a string holding a finite number (an agent must not dodge `gt` by quoting).
fn number(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse::<f64>().ok().filter(|f| f.is_finite()),
        _ => None,
    }
}

/// JSON equality where numbers compare by value (`5 == 5.0`).
pub(crate) fn json_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            if let (Some(x), Some(y)) = (x.as_i64(), y.as_i64()) {
                return x == y;
            }
            if let (Some(x), Some(y)) = (x.as_u64(), y.as_u64()) {
                return x == y;
            }
            matches!((x.as_f64(), y.as_f64()), (Some(x), Some(y)) if x == y)
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| json_eq(a, b))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| json_eq(v, w)))
        }
        _ => a == b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn cond(pointer: &str, test: Test) -> Condition {
        Condition {
            pointer: pointer.to_owned(),
            test,
        }
    }

    #[test]
    fn glob_on_strings_numbers_bools_arrays() {
        let c = cond("/m", Test::glob("rm *").expect("glob"));
        assert!(c.holds(&json!({"m": "rm -rf /"})));
        assert!(!c.holds(&json!({"m": "ls"})));
        assert!(c.holds(&json!({"m": ["ls", "rm x"]})));
        assert!(c.holds(&json!({"m": {"a": ["ls", {"b": "rm x"}]}})));
        assert!(
            !c.holds(&json!({"m": {"rm x": "ls"}})),
            "keys are not tested"
        );
        assert!(!c.holds(&json!({"m": null})));
        assert!(!c.holds(&json!({})));
        let n = cond("/n", Test::glob("4*").expect("glob"));
        assert!(n.holds(&json!({"n": 42})));
        let b = cond("/b", Test::glob("tr*").expect("glob"));
        assert!(b.holds(&json!({"b": true})));
    }

    #[test]
    fn regex_matches_anywhere_and_respects_flags() {
        let c = cond("/m", Test::regex(r"(?i)rm\s+-rf").expect("regex"));
        assert!(c.holds(&json!({"m": "please RM   -RF /"})));
        assert!(!c.holds(&json!({"m": "rm -r"})));
        assert!(Test::regex("(").is_err());
        let big = Test::regex(r"\w{1000}\w{1000}\w{1000}");
        let err = big.expect_err("too big");
        assert!(err.contains("too big"), "{err}");
    }

    #[test]
    fn equals_compares_json_with_numeric_equality() {
        let c = cond("/a", Test::Equals(json!(5)));
        assert!(c.holds(&json!({"a": 5})));
        assert!(c.holds(&json!({"a": 5.0})));
        assert!(!c.holds(&json!({"a": "5"})));
        assert!(!c.holds(&json!({})));
        let o = cond("", Test::Equals(json!({"a": [1, "x"]})));
        assert!(o.holds(&json!({"a": [1.0, "x"]})));
        assert!(!o.holds(&json!({"a": [1, "x"], "b": 1})));
    }

    #[test]
    fn not_equals_is_false_when_absent() {
        let c = cond("/a", Test::NotEquals(json!("x")));
        assert!(c.holds(&json!({"a": "y"})));
        assert!(!c.holds(&json!({"a": "x"})));
        assert!(!c.holds(&json!({})));
    }

    #[test]
    fn comparisons_on_numbers_and_numeric_strings() {
        let args = json!({"d": 30, "s": " 30 ", "x": "abc", "f": 2.5});
        assert!(cond("/d", Test::Gt(10.0)).holds(&args));
        assert!(!cond("/d", Test::Gt(30.0)).holds(&args));
        assert!(cond("/d", Test::Gte(30.0)).holds(&args));
        assert!(cond("/d", Test::Lt(31.0)).holds(&args));
        assert!(!cond("/d", Test::Lt(30.0)).holds(&args));
        assert!(cond("/d", Test::Lte(30.0)).holds(&args));
        assert!(cond("/s", Test::Gt(10.0)).holds(&args));
        assert!(!cond("/x", Test::Gt(-1e300)).holds(&args));
        assert!(cond("/f", Test::Lt(3.0)).holds(&args));
        assert!(!cond("/missing", Test::Lt(3.0)).holds(&args));
    }

    #[test]
    fn present_contains_one_of() {
        let args = json!({"a": "hello world", "t": ["x", "yes"], "k": "b"});
        assert!(cond("/a", Test::Present(true)).holds(&args));
        assert!(!cond("/z", Test::Present(true)).holds(&args));
        assert!(cond("/z", Test::Present(false)).holds(&args));
        assert!(!cond("/a", Test::Present(false)).holds(&args));
        assert!(cond("/a", Test::Contains("lo w".into())).holds(&args));
        assert!(!cond("/a", Test::Contains("LO".into())).holds(&args));
        assert!(cond("/t", Test::Contains("ye".into())).holds(&args));
        let one = cond("/k", Test::OneOf(vec![json!("a"), json!("b")]));
        assert!(one.holds(&args));
        assert!(!cond("/a", Test::OneOf(vec![json!("a")])).holds(&args));
        assert!(!cond("/z", Test::OneOf(vec![json!("a")])).holds(&args));
    }

    #[test]
    fn pointers_follow_rfc_6901() {
        assert!(validate_pointer("").is_ok());
        assert!(validate_pointer("/a/0/b~1c~0").is_ok());
        assert!(validate_pointer("a").is_err());
        assert!(validate_pointer("/a~2").is_err());
        assert!(validate_pointer("/a~").is_err());
        let c = cond("/a~1b/0", Test::Equals(json!(1)));
        assert!(c.holds(&json!({"a/b": [1]})));
        let whole = cond("", Test::Present(true));
        assert!(whole.holds(&json!({})));
    }

    #[test]
    fn failure_descriptions_name_the_argument() {
        let c = cond("/m", Test::glob("rm *").expect("glob"));
        let s = c.describe_failure(&json!({"m": "ls"}));
        assert!(
            s.contains("/m") && s.contains("\"ls\"") && s.contains("glob"),
            "{s}"
        );
        let s = c.describe_failure(&json!({}));
        assert!(s.contains("absent"), "{s}");
    }
}
