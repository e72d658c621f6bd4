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

/// How deeply parentheses may nest before the parser is not given the text at all. brush-parser's
/// PEG grammar tries several readings of a `(` — subshell, `((` arithmetic, process substitution,
/// extended glob — and on text that does not parse it backtracks through all of them: the work
/// doubles with each level (20 unclosed levels take about 25 ms, 36 take minutes). Real commands
/// nest a handful; 12 bounds the worst case to well under a millisecond.
pub(crate) const MAX_PAREN_DEPTH: usize = 12;

/// How many parentheses may stay unclosed at the end of the text before the parser is not given
/// it. Text with unclosed parentheses does not parse, and it is on such text that the grammar
/// backtracks: the readings of each unclosed `(` multiply with those of every other unclosed
/// construct (found by fuzzing: a few unclosed `$((` beside `(` groups took 12 s). A here-document
/// body may hold a stray `(`; three is generous.
pub(crate) const MAX_UNCLOSED_PARENS: usize = 3;

/// What [`paren_scan`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Parens {
    /// The deepest nesting.
    pub max_depth: usize,
    /// Left open at the end.
    pub unclosed: usize,
    /// Of those, how many open a command substitution (`$(`).
    pub unclosed_substitutions: usize,
}

/// How `'`, `"` and `#` read in the text a scan is given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Quoting {
    /// Shell text: quotes group and `#` starts a comment.
    Shell,
    /// A here-document body or an arithmetic expression, which brush-parser reads with the
    /// here-document grammar: quotes and `#` are plain characters there, so parentheses inside
    /// them still reach the parser (a fuzzer input hid 20 `(` in `$['$((((…']`, 2 minutes).
    HereDocument,
}

/// How parentheses nest in shell `text`, whatever opens them (`(`, `$(`, `<(`, `>(`, `@(` …:
/// the fuzzer showed that mixing kinds backtracks as badly). Text in single or double quotes
/// (outside a `$(` inside them) and comments is skipped.
pub(crate) fn paren_scan(text: &str) -> Parens {
    paren_scan_as(text, Quoting::Shell)
}

/// [`paren_scan`] of text read as `quoting` says.
pub(crate) fn paren_scan_as(text: &str, quoting: Quoting) -> Parens {
    let shell = quoting == Quoting::Shell;
    #[derive(Clone, Copy, PartialEq)]
    enum Open {
        Paren { substitution: bool },
        DoubleQuote,
    }
    let b = text.as_bytes();
    // What each open level is, innermost last.
    let mut stack: Vec<Open> = Vec::new();
    let mut depth = 0usize;
    let mut max_depth = 0usize;
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        let in_dq = stack.last() == Some(&Open::DoubleQuote);
        match c {
            b'\\' => {
                i += 2;
                continue;
            }
            // The tokenizer reads a backquoted substitution up to the next unescaped backquote,
            // whatever quotes it holds (its body is analysed later as a script, with a scan of
            // its own), so a quote inside must not hide what follows it: a fuzzer input hid 24
            // `(` behind `` `" ` `` (over 10 s).
            b'`' => {
                let mut j = i + 1;
                while j < b.len() && b[j] != b'`' {
                    j += if b[j] == b'\\' { 2 } else { 1 };
                }
                if j < b.len() {
                    i = j;
                }
            }
            b'"' if in_dq => {
                stack.pop();
            }
            b'"' if shell => stack.push(Open::DoubleQuote),
            // A quote that never closes is read as a plain character: it may sit in a
            // here-document body, and the text after it still reaches the parser.
            b'\'' if shell && !in_dq => {
                if let Some(p) = b[i + 1..].iter().position(|x| *x == b'\'') {
                    i += p + 1;
                }
            }
            b'#' if shell && !in_dq && (i == 0 || b[i - 1].is_ascii_whitespace()) => {
                match b[i..].iter().position(|x| *x == b'\n') {
                    Some(p) => i += p,
                    None => break,
                }
            }
            b'(' if !in_dq || (i > 0 && b[i - 1] == b'$') => {
                stack.push(Open::Paren {
                    substitution: i > 0 && b[i - 1] == b'$',
                });
                depth += 1;
                max_depth = max_depth.max(depth);
            }
            b')' if !in_dq => {
                if matches!(stack.last(), Some(Open::Paren { .. })) {
                    stack.pop();
                    depth -= 1;
                }
            }
            _ => {}
        }
        i += 1;
    }
    Parens {
        max_depth,
        unclosed: stack
            .iter()
            .filter(|o| matches!(o, Open::Paren { .. }))
            .count(),
        unclosed_substitutions: stack
            .iter()
            .filter(|o| matches!(o, Open::Paren { substitution: true }))
            .count(),
    }
}

/// How many unclosed subscripts (`${a[b}`) a command may hold before the parser is not given it:
/// none. brush-parser's grammar backtracks through every reading of such a subscript, and the
/// readings multiply with each other one and with other unclosed constructs (found by fuzzing:
/// five in a row take most of a second, seven minutes; three nested pairs 14 s; two beside an
/// unclosed `$((` 6 s). Working shell has none.
pub(crate) const MAX_UNCLOSED_SUBSCRIPTS: usize = 0;

/// The unclosed `[` subscripts of the `${…}` expansions in `word`: for each expansion, how many
/// more `[` than `]` its text holds (an expansion nested in another counts in both).
pub(crate) fn unclosed_subscripts(word: &str) -> usize {
    let b = word.as_bytes();
    let mut count = 0;
    let mut i = 0;
    while i + 1 < b.len() {
        if b[i] == b'\\' {
            i += 2;
            continue;
        }
        if b[i] == b'$' && b.get(i + 1..i + 3) == Some(b"((") {
            // an arithmetic expansion `$((…))`: a `[` left open inside it backtracks as badly
            let mut depth = 0usize;
            let mut open_brackets = 0isize;
            for &c in &b[i + 1..] {
                match c {
                    b'(' => depth += 1,
                    b')' => {
                        depth = depth.saturating_sub(1);
                        if depth == 0 {
                            break;
                        }
                    }
                    b'[' => open_brackets += 1,
                    b']' => open_brackets -= 1,
                    _ => {}
                }
            }
            count += usize::try_from(open_brackets).unwrap_or(0);
            i += 3;
            continue;
        }
        if b[i] == b'$' && b[i + 1] == b'[' {
            // the old arithmetic form `$[…]`: unclosed, it backtracks the same way
            let mut depth = 0usize;
            let mut closed = false;
            for &c in &b[i + 1..] {
                match c {
                    b'[' => depth += 1,
                    b']' => {
                        depth -= 1;
                        if depth == 0 {
                            closed = true;
                            break;
                        }
                    }
                    _ => {}
                }
            }
            if !closed {
                count += 1;
            }
            i += 2;
            continue;
        }
        if b[i] == b'$' && b[i + 1] == b'{' {
            // the expansion's extent: up to the `}` that balances its `{` (or the end)
            let mut depth = 0usize;
            let mut open_brackets = 0isize;
            let mut j = i + 1;
            while j < b.len() {
                match b[j] {
                    b'{' => depth += 1,
                    b'}' => {
                        depth -= 1;
                        if depth == 0 {
                            break;
                        }
                    }
                    b'[' => open_brackets += 1,
                    b']' => open_brackets -= 1,
                    _ => {}
                }
                j += 1;
            }
            count += usize::try_from(open_brackets).unwrap_or(0);
            i += 2;
            continue;
        }
        i += 1;
    }
    count
}

/// Whether `text` holds a here-document operator (`<<` or `<<-`, not the here-string `<<<`)
/// outside single quotes. brush-parser's tokenizer, reaching the end of the text inside a `$(`
/// that holds a here-document whose marker is followed by a blank (`$(<<  a\t`), loops,
/// allocating until memory runs out (found by fuzzing); no complete command is left with a `$(`
/// open, so [`walk`](super::walk) refuses the pair before parsing.
pub(crate) fn has_heredoc(text: &str) -> bool {
    let b = text.as_bytes();
    let mut i = 0;
    while i + 1 < b.len() {
        match b[i] {
            b'\\' => i += 1,
            // a quote that never closes is read as a plain character, as in [`paren_scan`]
            b'\'' => {
                if let Some(p) = b[i + 1..].iter().position(|x| *x == b'\'') {
                    i += p + 1;
                }
            }
            b'<' if b[i + 1] == b'<' => {
                if b.get(i + 2) != Some(&b'<') {
                    return true;
                }
                i += 2;
            }
            _ => {}
        }
        i += 1;
    }
    false
}

/// Whether a here-document operator (`<<`, `<<-`) is followed by a delimiter other than a plain
/// word: letters, digits and `_ . - + : / @ %`, optionally after a `\\` or inside one pair of
/// quotes, ending at a blank, a newline or an operator. brush-parser's tokenizer loops,
/// allocating until the process runs out of memory, on several other shapes the fuzzer found (a
/// form feed, nothing, `${…`, a non-ASCII character, an empty `''` before a tab);
/// real here-documents use words like `EOF`, `'EOF'` or `END_OF_SQL`.
pub(crate) fn unusable_heredoc_tag(text: &str) -> bool {
    let word = |c: u8| c.is_ascii_alphanumeric() || b"_.-+:/@%".contains(&c);
    let b = text.as_bytes();
    let mut i = 0;
    while i + 1 < b.len() {
        if b[i] == b'<' && b[i + 1] == b'<' && (i == 0 || b[i - 1] != b'<') {
            let mut j = i + 2;
            if b.get(j) == Some(&b'<') {
                // a here-string `<<<`
                i = j + 1;
                continue;
            }
            if b.get(j) == Some(&b'=') {
                // an arithmetic shift-assignment `<<=`
                i = j + 1;
                continue;
            }
            if b.get(j) == Some(&b'-') {
                j += 1;
            }
            while matches!(b.get(j), Some(b' ' | b'\t')) {
                j += 1;
            }
            let quote = match b.get(j) {
                Some(&q @ (b'\'' | b'"')) => {
                    j += 1;
                    Some(q)
                }
                Some(b'\\') => {
                    j += 1;
                    None
                }
                _ => None,
            };
            let start = j;
            while b.get(j).is_some_and(|c| word(*c)) {
                j += 1;
            }
            if j == start {
                return true;
            }
            if let Some(q) = quote {
                if b.get(j) != Some(&q) {
                    return true;
                }
                j += 1;
            }
            match b.get(j) {
                None
                | Some(b' ' | b'\t' | b'\r' | b'\n' | b';' | b'&' | b'|' | b'<' | b'>' | b')') => {}
                Some(_) => return true,
            }
            i = j;
            continue;
        }
        i += 1;
    }
    false
}
