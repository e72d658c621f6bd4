//! `{{secret:NAME}}` placeholders in `tools/call` arguments: found in every string of the
//! arguments (object keys are left alone), replaced by the value just before the call is written
//! to the MCP server. `NAME` is a secret name (`^[A-Z_][A-Z0-9_]{0,127}$`); anything else between
//! the braces is not a placeholder and stays as written.

use std::collections::BTreeSet;

use flowlink_proto::sealed::valid_secret_name;
use serde_json::Value;

const OPEN: &str = "{{secret:";
const CLOSE: &str = "}}";

/// Each placeholder in `text`: (byte range of the whole placeholder, the name).
fn find(text: &str) -> Vec<(std::ops::Range<usize>, &str)> {
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(at) = text[from..].find(OPEN) {
        let start = from + at;
        let name_start = start + OPEN.len();
        match text[name_start..].find(CLOSE) {
            Some(len) if valid_secret_name(&text[name_start..name_start + len]) => {
                let end = name_start + len + CLOSE.len();
                out.push((start..end, &text[name_start..name_start + len]));
                from = end;
            }
            _ => from = name_start,
        }
    }
    out
}

/// The names of every placeholder in `args` (cheap when there is none).
pub fn names(args: &Value) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    walk(args, &mut |s| {
        for (_, name) in find(s) {
            out.insert(name.to_owned());
        }
    });
    out
}

fn walk(v: &Value, f: &mut impl FnMut(&str)) {
    match v {
        Value::String(s) if s.contains(OPEN) => f(s),
        Value::Array(items) => items.iter().for_each(|i| walk(i, f)),
        Value::Object(map) => map.values().for_each(|i| walk(i, f)),
        _ => {}
    }
}

/// Replaces every placeholder in `args` with `lookup(name)`. Stops at the first name `lookup`
/// does not know and returns it (`args` is then partly replaced: drop it).
pub fn substitute<'v>(
    args: &mut Value,
    lookup: &impl Fn(&str) -> Option<&'v str>,
) -> Result<usize, String> {
    match args {
        Value::String(s) => {
            if !s.contains(OPEN) {
                return Ok(0);
            }
            let (out, n) = {
                let found = find(s);
                if found.is_empty() {
                    return Ok(0);
                }
                let mut out = String::with_capacity(s.len());
                let mut last = 0;
                for (range, name) in &found {
                    let value = lookup(name).ok_or_else(|| (*name).to_owned())?;
                    out.push_str(&s[last..range.start]);
                    out.push_str(value);
                    last = range.end;
                }
                out.push_str(&s[last..]);
                (out, found.len())
            };
            *s = out;
            Ok(n)
        }
        Value::Array(items) => {
            let mut n = 0;
            for i in items {
                n += substitute(i, lookup)?;
            }
            Ok(n)
        }
        Value::Object(map) => {
            let mut n = 0;
            for (_, i) in map.iter_mut() {
                n += substitute(i, lookup)?;
            }
            Ok(n)
        }
        _ => Ok(0),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn finds_only_well_formed_placeholders_in_values() {
        let args = json!({
            "url": "https://x/?t={{secret:GH_TOKEN}}&u={{secret:USER}}",
            "nested": [{"h": "Bearer {{secret:GH_TOKEN}}"}],
            "{{secret:KEY_NAME}}": "keys are not looked at",
            "bad": "{{secret:lower}} {{secret:}} {{secret:A B}} {{secret:OPEN",
            "n": 5
        });
        let found: Vec<String> = names(&args).into_iter().collect();
        assert_eq!(found, ["GH_TOKEN", "USER"]);
    }

    #[test]
    fn replaces_every_occurrence_and_leaves_the_rest() {
        let mut args = json!({
            "url": "a{{secret:A}}b{{secret:B}}c{{secret:A}}",
            "list": ["{{secret:B}}", 1, null],
            "other": "{{secret:lower}}"
        });
        let n = substitute(&mut args, &|n| match n {
            "A" => Some("1"),
            "B" => Some("two"),
            _ => None,
        })
        .expect("all known");
        assert_eq!(n, 4);
        assert_eq!(
            args,
            json!({"url": "a1btwoc1", "list": ["two", 1, null], "other": "{{secret:lower}}"})
        );
        let mut args = json!({"x": "{{secret:A}} {{secret:C}}"});
        assert_eq!(
            substitute(&mut args, &|n| (n == "A").then_some("1")),
            Err("C".to_owned())
        );
    }

    #[test]
    fn a_value_that_looks_like_a_placeholder_is_not_expanded_again() {
        let mut args = json!("{{secret:A}}");
        substitute(&mut args, &|_| Some("{{secret:A}}")).expect("known");
        assert_eq!(args, json!("{{secret:A}}"));
    }
}
