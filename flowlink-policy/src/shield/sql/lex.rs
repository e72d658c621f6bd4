//! A small, iterative SQL lexer: enough to find statement boundaries, comments and MySQL
//! executable comments (`/*! … */`) without trusting the parser, and to produce a "code only"
//! view of the text (comments dropped, string contents blanked) for keyword heuristics.
//!
//! It never recurses and never panics: every index it takes is on a char boundary of ASCII
//! delimiters.

/// What the lexer learnt about a text.
#[derive(Debug, Default)]
pub(super) struct Lexed {
    /// The text with MySQL executable comments opened up: `/*!50000 DROP TABLE t */` becomes
    /// `         DROP TABLE t   ` (same length, so offsets line up), i.e. what MySQL executes.
    pub expanded: String,
    /// Byte ranges of the executable comments in the original text.
    pub exec_comments: Vec<(usize, usize)>,
    /// Byte ranges of the statements in `expanded`, split on top-level `;`.
    pub statements: Vec<(usize, usize)>,
    /// Lower-cased text with comments removed and string/identifier contents blanked.
    pub code: String,
}

/// Lexes `text`.
pub(super) fn lex(text: &str) -> Lexed {
    let b = text.as_bytes();
    let n = b.len();
    let mut expanded: Vec<u8> = b.to_vec();
    let mut exec_comments = Vec::new();
    let mut statements = Vec::new();
    let mut code: Vec<u8> = Vec::with_capacity(n);
    let mut stmt_start = 0usize;
    let mut i = 0usize;
    while i < n {
        let c = b[i];
        match c {
            b'\'' | b'"' | b'`' => {
                // Quoted string or identifier; doubled quote escapes, backslash escapes in
                // MySQL-style strings (harmless to honour everywhere for boundary finding).
                let q = c;
                code.push(q);
                i += 1;
                while i < n {
                    if b[i] == b'\\' && q != b'`' {
                        i += 2;
                        continue;
                    }
                    if b[i] == q {
                        if i + 1 < n && b[i + 1] == q {
                            i += 2;
                            continue;
                        }
                        break;
                    }
                    i += 1;
                }
                code.push(q);
                i += 1;
            }
            b'-' if i + 1 < n && b[i + 1] == b'-' => {
                while i < n && b[i] != b'\n' {
                    i += 1;
                }
                code.push(b' ');
            }
            b'#' => {
                // MySQL line comment; in Postgres `#` is an operator, so only treat it as a
                // comment when it starts a token (a false split only makes us stricter).
                code.push(b'#');
                i += 1;
            }
            b'/' if i + 1 < n && b[i + 1] == b'*' => {
                let start = i;
                let exec = i + 2 < n && b[i + 2] == b'!';
                i += 2;
                while i + 1 < n && !(b[i] == b'*' && b[i + 1] == b'/') {
                    i += 1;
                }
                let end = if i + 1 < n { i + 2 } else { n };
                if exec {
                    exec_comments.push((start, end));
                    // Blank the markers and the optional version number.
                    let mut j = start;
                    expanded[j] = b' ';
                    expanded[j + 1] = b' ';
                    expanded[j + 2] = b' ';
                    j += 3;
                    while j < end && j < start + 9 && expanded[j].is_ascii_digit() {
                        expanded[j] = b' ';
                        j += 1;
                    }
                    if end >= start + 5 && b[end - 2] == b'*' && b[end - 1] == b'/' {
                        expanded[end - 2] = b' ';
                        expanded[end - 1] = b' ';
                    }
                    // Lex the inside as code for the keyword view (no nesting in MySQL).
                    let inner_end = if end >= 2 && b[end - 2] == b'*' {
                        end - 2
                    } else {
                        end
                    };
                    let inner_start = (start + 3).min(inner_end);
                    code.push(b' ');
                    if let Some(inner) = text.get(inner_start..inner_end) {
                        code.extend_from_slice(lex_code_only(inner).as_bytes());
                    }
                    code.push(b' ');
                } else {
                    code.push(b' ');
                }
                i = end;
            }
            b'$' if is_dollar_start(b, i) => {
                // Postgres dollar quoting: $tag$ … $tag$
                let mut j = i + 1;
                while j < n && (b[j].is_ascii_alphanumeric() || b[j] == b'_') {
                    j += 1;
                }
                if j < n && b[j] == b'$' {
                    let tag = &b[i..=j];
                    let body = j + 1;
                    let close = find(b, tag, body);
                    code.extend_from_slice(b"''");
                    i = match close {
                        Some(k) => k + tag.len(),
                        None => n,
                    };
                } else {
                    code.push(b'$');
                    i += 1;
                }
            }
            b';' => {
                statements.push((stmt_start, i));
                stmt_start = i + 1;
                code.push(b';');
                i += 1;
            }
            _ => {
                code.push(c.to_ascii_lowercase());
                i += 1;
            }
        }
    }
    if stmt_start < n {
        statements.push((stmt_start, n));
    }
    // Only ASCII bytes were replaced by ASCII bytes, and multi-byte sequences are copied whole
    // or skipped whole, so these are valid UTF-8; fall back to lossy just in case.
    let expanded = String::from_utf8(expanded)
        .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned());
    let code = String::from_utf8(code)
        .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned());
    Lexed {
        expanded,
        exec_comments,
        statements,
        code,
    }
}

/// Code view of the inside of an executable comment (which cannot contain `*/`).
fn lex_code_only(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let b = text.as_bytes();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c == b'\'' || c == b'"' || c == b'`' {
            out.push(c as char);
            i += 1;
            while i < b.len() && b[i] != c {
                i += 1;
            }
            out.push(c as char);
            i += 1;
        } else if c.is_ascii() {
            out.push(c.to_ascii_lowercase() as char);
            i += 1;
        } else {
            i += 1;
        }
    }
    out
}

fn is_dollar_start(b: &[u8], i: usize) -> bool {
    // `$1` is a parameter, `a$b` part of an identifier.
    if i > 0 && (b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'_' || b[i - 1] == b'$') {
        return false;
    }
    matches!(b.get(i + 1), Some(c) if *c == b'$' || c.is_ascii_alphabetic() || *c == b'_')
}

fn find(hay: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    if needle.is_empty() || from > hay.len() {
        return None;
    }
    hay[from..]
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|p| p + from)
}
