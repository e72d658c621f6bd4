//! The one error type of the crate: a policy file that cannot be loaded.

use std::fmt;
use std::ops::Range;

/// Why a policy file was rejected, with the 1-based position of the offending text when known
/// and, for layered policies, the layer it is in.
///
/// Syntax errors take their position from the TOML parser; semantic errors (unknown action, bad
/// glob, bad regex, bad JSON pointer, duplicate rule id, unknown field, wrong version) point at the
/// value or key that caused them.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", Located(self))]
pub struct PolicyError {
    /// The layer whose text is at fault, when the policy was built from layers
    /// ([`crate::Policy::from_layers`]); `None` for a single file.
    pub layer: Option<String>,
    /// 1-based line of the offending text, when known.
    pub line: Option<usize>,
    /// 1-based column (in characters) of the offending text, when known.
    pub column: Option<usize>,
    /// What is wrong, in words, without the position.
    pub message: String,
}

/// Display helper: `line L, column C: message`, or just the message when there is no position.
struct Located<'a>(&'a PolicyError);

impl fmt::Display for Located<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(layer) = &self.0.layer {
            write!(f, "layer `{layer}`, ")?;
        }
        match (self.0.line, self.0.column) {
            (Some(line), Some(column)) => {
                write!(f, "line {line}, column {column}: {}", self.0.message)
            }
            (Some(line), None) => write!(f, "line {line}: {}", self.0.message),
            _ => f.write_str(&self.0.message),
        }
    }
}

impl PolicyError {
    /// An error located at byte offset `span.start` of `source`.
    pub(crate) fn at(source: &str, span: Option<Range<usize>>, message: impl Into<String>) -> Self {
        let (line, column) = match span {
            Some(span) => {
                let (l, c) = line_column(source, span.start);
                (Some(l), Some(c))
            }
            None => (None, None),
        };
        PolicyError {
            layer: None,
            line,
            column,
            message: message.into(),
        }
    }

    /// The same error, attributed to layer `name`.
    pub(crate) fn in_layer(mut self, name: &str) -> Self {
        self.layer = Some(name.to_owned());
        self
    }

    /// Converts a TOML parse or deserialisation error, keeping only its message and position.
    pub(crate) fn from_toml(source: &str, err: &toml::de::Error) -> Self {
        let message = err.message().trim_end().to_owned();
        PolicyError::at(source, err.span(), message)
    }
}

/// 1-based line and column (counted in characters) of byte `offset` in `source`.
pub(crate) fn line_column(source: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(source.len());
    while !source.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &source[..offset];
    let line = before.bytes().filter(|b| *b == b'\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_column_is_one_based_and_counts_chars() {
        let s = "ab\nc\u{e9}d\n";
        assert_eq!(line_column(s, 0), (1, 1));
        assert_eq!(line_column(s, 1), (1, 2));
        assert_eq!(line_column(s, 3), (2, 1));
        // 'd' is after a two-byte character: byte 6, column 3.
        assert_eq!(line_column(s, 6), (2, 3));
        // Past the end and inside a character are clamped.
        assert_eq!(line_column(s, 5), (2, 2));
        assert_eq!(line_column(s, 999), (3, 1));
    }

    #[test]
    fn display_with_and_without_position() {
        let e = PolicyError {
            layer: None,
            line: Some(12),
            column: Some(5),
            message: "unknown action `alow`".into(),
        };
        assert_eq!(e.to_string(), "line 12, column 5: unknown action `alow`");
        let e = PolicyError {
            layer: None,
            line: None,
            column: None,
            message: "x".into(),
        };
        assert_eq!(e.to_string(), "x");
        let e = PolicyError {
            layer: Some("service:github".into()),
            line: Some(3),
            column: Some(1),
            message: "x".into(),
        };
        assert_eq!(e.to_string(), "layer `service:github`, line 3, column 1: x");
    }
}
