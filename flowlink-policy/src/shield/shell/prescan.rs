//! A cheap scan that bounds nesting before the recursive parser sees the text.

/// The deepest nesting of `(`, `{`, `` ` ``, `if`/`case`/`do` blocks in `text`, outside single
/// quotes. Stops counting (and returns early) once `limit` is exceeded.
pub(crate) fn nesting_exceeds(text: &str, limit: usize) -> bool {
    let b = text.as_bytes();
    let mut depth: usize = 0;
    let mut i = 0;
    let mut in_single = false;
    let mut word_start = true;
    let mut in_backtick = false;
    while i < b.len() {
        let c = b[i];
        if in_single {
            if c == b'\'' {
                in_single = false;
            }
            i += 1;
            continue;
        }
        match c {
            b'\\' => {
                i += 2;
                word_start = false;
                continue;
            }
            b'\'' => in_single = true,
            b'(' | b'{' => {
                depth += 1;
                if depth > limit {
                    return true;
                }
            }
            b')' | b'}' => depth = depth.saturating_sub(1),
            b'`' => {
                // nested backticks need escaping; an unescaped one opens or closes one level
                if in_backtick {
                    depth = depth.saturating_sub(1);
                } else {
                    depth += 1;
                    if depth > limit {
                        return true;
                    }
                }
                in_backtick = !in_backtick;
            }
            _ => {}
        }
        if word_start && c.is_ascii_alphabetic() {
            let end = b[i..]
                .iter()
                .position(|x| !x.is_ascii_alphanumeric() && *x != b'_')
                .map_or(b.len(), |p| i + p);
            match &b[i..end] {
                b"if" | b"case" | b"do" => {
                    depth += 1;
                    if depth > limit {
                        return true;
                    }
                }
                b"fi" | b"esac" | b"done" => depth = depth.saturating_sub(1),
                _ => {}
            }
            i = end;
            word_start = false;
            continue;
        }
        word_start = matches!(
            c,
            b' ' | b'\t' | b'\n' | b';' | b'&' | b'|' | b'(' | b')' | b'{' | b'}' | b'`' | b'!'
        );
        i += 1;
    }
    false
}

/// Whether a redirection names a descriptor with 10 or more digits (`99999999999>&1`): no real
/// descriptor is that large, and the parser cannot represent it.
pub(crate) fn oversized_fd(text: &str) -> bool {
    let b = text.as_bytes();
    let mut run = 0usize;
    for &c in b {
        if c.is_ascii_digit() {
            run += 1;
        } else {
            if run >= 10 && (c == b'<' || c == b'>') {
                return true;
            }
            run = 0;
        }
    }
    false
}
