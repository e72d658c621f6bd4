//! Name globs: the `agent`, `service`, `tool` and `labels` selectors of rules and rate limits.

use std::fmt;

use globset::{GlobBuilder, GlobMatcher};

/// One compiled glob. `*` alone and plain literals take a fast path that skips the glob engine.
#[derive(Debug, Clone)]
pub(crate) enum Pattern {
    /// `*` or `**`: matches every name.
    Any,
    /// No glob metacharacter: plain string equality.
    Exact(String),
    /// `literal*`: fast path for the commonest glob.
    Prefix { text: String, literal: String },
    /// `*literal`.
    Suffix { text: String, literal: String },
    /// `*literal*`.
    Contains { text: String, literal: String },
    /// A real glob (`*` matches any run of characters, `/` included; case-sensitive).
    Glob { text: String, matcher: GlobMatcher },
}

impl Pattern {
    /// Compiles `text`; the error is a human sentence without position.
    pub(crate) fn new(text: &str) -> Result<Pattern, String> {
        if text.is_empty() {
            return Err("empty glob (use \"*\" to match anything)".to_owned());
        }
        if text.chars().all(|c| c == '*') {
            return Ok(Pattern::Any);
        }
        if !has_meta(text) {
            return Ok(Pattern::Exact(text.to_owned()));
        }
        let lead = text.strip_prefix('*');
        let trail = text.strip_suffix('*');
        let both = lead.and_then(|t| t.strip_suffix('*'));
        let owned = |literal: &str| (text.to_owned(), literal.to_owned());
        match (lead, trail, both) {
            (_, _, Some(mid)) if !mid.is_empty() && !has_meta(mid) => {
                let (text, literal) = owned(mid);
                return Ok(Pattern::Contains { text, literal });
            }
            (None, Some(head), _) if !has_meta(head) => {
                let (text, literal) = owned(head);
                return Ok(Pattern::Prefix { text, literal });
            }
            (Some(tail), None, _) if !has_meta(tail) => {
                let (text, literal) = owned(tail);
                return Ok(Pattern::Suffix { text, literal });
            }
            _ => {}
        }
        let glob = GlobBuilder::new(text)
            .literal_separator(false)
            .case_insensitive(false)
            .backslash_escape(true)
            .build()
            .map_err(|e| format!("bad glob `{text}`: {}", e.kind()))?;
        Ok(Pattern::Glob {
            text: text.to_owned(),
            matcher: glob.compile_matcher(),
        })
    }

    /// Whether `name` matches.
    pub(crate) fn is_match(&self, name: &str) -> bool {
        match self {
            Pattern::Any => true,
            Pattern::Exact(s) => s == name,
            Pattern::Prefix { literal, .. } => name.starts_with(literal.as_str()),
            Pattern::Suffix { literal, .. } => name.ends_with(literal.as_str()),
            Pattern::Contains { literal, .. } => name.contains(literal.as_str()),
            Pattern::Glob { matcher, .. } => matcher.is_match(name),
        }
    }

    /// The glob as written in the policy.
    pub(crate) fn text(&self) -> &str {
        match self {
            Pattern::Any => "*",
            Pattern::Exact(s) => s,
            Pattern::Prefix { text, .. }
            | Pattern::Suffix { text, .. }
            | Pattern::Contains { text, .. }
            | Pattern::Glob { text, .. } => text,
        }
    }
}

/// Whether `s` contains a glob metacharacter.
fn has_meta(s: &str) -> bool {
    s.contains(['*', '?', '[', ']', '{', '}', '\\'])
}

/// A selector: a list of globs, any of which may match. An empty list (key absent) matches all.
#[derive(Debug, Clone, Default)]
pub(crate) struct Patterns(pub(crate) Vec<Pattern>);

impl Patterns {
    /// Whether `name` is selected.
    pub(crate) fn is_match(&self, name: &str) -> bool {
        self.0.is_empty() || self.0.iter().any(|p| p.is_match(name))
    }
}

impl fmt::Display for Patterns {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("*");
        }
        if let [one] = self.0.as_slice() {
            return write!(f, "{:?}", one.text());
        }
        f.write_str("[")?;
        for (i, p) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{:?}", p.text())?;
        }
        f.write_str("]")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Pattern {
        Pattern::new(s).expect("valid glob")
    }

    #[test]
    fn star_matches_anything_including_slashes() {
        assert!(p("*").is_match(""));
        assert!(p("*").is_match("a/b"));
        assert!(p("claude-*").is_match("claude-code/1.0"));
        assert!(!p("claude-*").is_match("cursor"));
    }

    #[test]
    fn fast_paths_agree_with_the_glob_engine() {
        let globs = [
            "ab*", "*ab", "*ab*", "a*b", "**ab", "ab**", "*a?b*", "*", "ab", "*[a]*",
        ];
        let names = [
            "", "a", "ab", "abc", "cab", "cabc", "a/b", "axb", "aab", "ba",
        ];
        for g in globs {
            let fast = p(g);
            let slow = GlobBuilder::new(g)
                .literal_separator(false)
                .backslash_escape(true)
                .build()
                .expect("valid")
                .compile_matcher();
            for n in names {
                assert_eq!(fast.is_match(n), slow.is_match(n), "glob {g:?} on {n:?}");
            }
            assert_eq!(fast.text(), g);
        }
        assert!(matches!(p("ab*"), Pattern::Prefix { .. }));
        assert!(matches!(p("*ab"), Pattern::Suffix { .. }));
        assert!(matches!(p("*ab*"), Pattern::Contains { .. }));
    }

    #[test]
    fn globs_are_case_sensitive() {
        assert!(!p("get-env").is_match("GET-ENV"));
        assert!(!p("get-*").is_match("GET-ENV"));
        assert!(p("get-?nv").is_match("get-env"));
        assert!(p("{a,b}-x").is_match("b-x"));
    }

    #[test]
    fn bad_and_empty_globs_are_errors() {
        assert!(Pattern::new("[abc").is_err());
        assert!(Pattern::new("").is_err());
    }

    #[test]
    fn empty_selector_matches_all() {
        let s = Patterns::default();
        assert!(s.is_match("anything"));
        let s = Patterns(vec![p("a"), p("b*")]);
        assert!(s.is_match("bz"));
        assert!(!s.is_match("c"));
        assert_eq!(s.to_string(), r#"["a", "b*"]"#);
    }
}
