//! Turns a shell word into the text it stands for, as far as that is known statically.

use brush_parser::word::{Parameter, ParameterExpr, WordPiece, WordPieceWithSource};

use super::Ctx;
use super::prescan::Quoting;
use super::walk;

/// One argument after quote removal.
#[derive(Debug, Clone, Default)]
pub(crate) struct Arg {
    /// The text; unknown expansions appear as `$NAME` or `$(…)`, `~` and `$HOME` as `~`.
    pub text: String,
    /// Contains an expansion whose value is unknown.
    pub dynamic: bool,
    /// Starts with an unknown expansion (so it may start with anything, including nothing).
    pub lead_var: bool,
    /// Contains a command or process substitution that downloads.
    pub fetch: bool,
    /// Contains a command or process substitution that decodes a payload.
    pub decode: bool,
    /// Came from a process substitution `<(…)`.
    pub procsub: bool,
    /// Stands for files `find` selects with a filter under the path in `text`.
    pub found: bool,
}

impl Arg {
    pub fn lit(s: &str) -> Arg {
        Arg {
            text: s.to_owned(),
            ..Arg::default()
        }
    }
}

/// Resolves a word; command substitutions inside it are analysed as commands at `depth + 1`.
pub(crate) fn resolve(ctx: &mut Ctx, raw: &str, depth: usize) -> Arg {
    let mut arg = Arg::default();
    // Fast path: plain words.
    if !raw.contains(['\'', '"', '\\', '$', '`', '~']) {
        arg.text = raw.to_owned();
        return arg;
    }
    if too_costly(ctx, raw, Quoting::Shell) {
        arg.text = brush_parser::unquote_str(raw);
        arg.dynamic = true;
        return arg;
    }
    let opts = walk::parser_options();
    match walk::guarded(|| brush_parser::word::parse(raw, &opts)) {
        Some(Ok(pieces)) => pieces_into(ctx, &pieces, depth, &mut arg, true),
        Some(Err(_)) | None => {
            arg.text = brush_parser::unquote_str(raw);
            arg.dynamic = raw.contains(['$', '`']);
        }
    }
    arg
}

/// Analyses command substitutions in an expanding heredoc body (the body itself is data).
pub(crate) fn heredoc_substitutions(ctx: &mut Ctx, body: &str, depth: usize) -> Arg {
    let mut arg = Arg::default();
    if !body.contains("$(") && !body.contains('`') {
        arg.text = body.to_owned();
        return arg;
    }
    if too_costly(ctx, body, Quoting::HereDocument) {
        arg.dynamic = true;
        return arg;
    }
    let opts = walk::parser_options();
    match walk::guarded(|| brush_parser::word::parse_heredoc(body, &opts)) {
        Some(Ok(pieces)) => pieces_into(ctx, &pieces, depth, &mut arg, false),
        // Unparseable substitutions in a heredoc: their output cannot be known.
        Some(Err(_)) | None => arg.dynamic = true,
    }
    arg
}

/// Whether the word parser must not be given `raw` (its grammar backtracks without bound on
/// some input); when so, a budget finding is recorded, so the call goes to a person.
fn too_costly(ctx: &mut Ctx, raw: &str, quoting: Quoting) -> bool {
    let max = super::prescan::MAX_UNCLOSED_SUBSCRIPTS;
    if super::prescan::unclosed_subscripts(raw) > max {
        ctx.budget("a parameter expansion has a `[` subscript that is never closed");
        return true;
    }
    // a here-document body is parsed for expansions with the same grammar
    let parens = super::prescan::paren_scan_as(raw, quoting);
    if parens.max_depth > super::prescan::MAX_PAREN_DEPTH
        || parens.unclosed > super::prescan::MAX_UNCLOSED_PARENS
        || (parens.unclosed_substitutions > 0 && super::prescan::has_heredoc(raw))
    {
        ctx.budget("a word or here-document holds parentheses nested too deep or never closed");
        return true;
    }
    false
}

fn pieces_into(
    ctx: &mut Ctx,
    pieces: &[WordPieceWithSource],
    depth: usize,
    arg: &mut Arg,
    top: bool,
) {
    for (i, p) in pieces.iter().enumerate() {
        let at_start = top && i == 0 && arg.text.is_empty();
        match &p.piece {
            WordPiece::Text(s) | WordPiece::SingleQuotedText(s) | WordPiece::AnsiCQuotedText(s) => {
                arg.text.push_str(s)
            }
            WordPiece::EscapeSequence(s) => arg.text.push_str(s.strip_prefix('\\').unwrap_or(s)),
            WordPiece::DoubleQuotedSequence(inner)
            | WordPiece::GettextDoubleQuotedSequence(inner) => {
                let was_empty = arg.text.is_empty();
                pieces_into(ctx, inner, depth, arg, top && was_empty && i == 0);
            }
            WordPiece::TildeExpansion(t) => {
                use brush_parser::word::TildeExpr;
                match t {
                    TildeExpr::Home => arg.text.push('~'),
                    TildeExpr::UserHome(u) => {
                        arg.text.push('~');
                        arg.text.push_str(u);
                    }
                    _ => {
                        arg.text.push_str("$PWD");
                        arg.dynamic = true;
                    }
                }
            }
            WordPiece::ParameterExpansion(pe) => {
                let name = match pe {
                    ParameterExpr::Parameter {
                        parameter: Parameter::Named(n),
                        indirect: false,
                    } => Some(n.as_str()),
                    _ => None,
                };
                let known = name.and_then(|n| ctx.var(n)).map(str::to_owned);
                match name {
                    Some("HOME") => arg.text.push('~'),
                    Some(_) if known.is_some() => {
                        arg.text.push_str(known.as_deref().unwrap_or_default())
                    }
                    Some(n) => {
                        if at_start {
                            arg.lead_var = true;
                        }
                        arg.dynamic = true;
                        arg.text.push('$');
                        arg.text.push_str(n);
                    }
                    None => {
                        if at_start {
                            arg.lead_var = true;
                        }
                        arg.dynamic = true;
                        arg.text.push_str("${…}");
                    }
                }
            }
            WordPiece::CommandSubstitution(s) | WordPiece::BackquotedCommandSubstitution(s) => {
                let scope = walk::script(ctx, s, depth + 1);
                arg.fetch |= scope.fetch;
                arg.decode |= scope.decode;
                match scope.output {
                    Some(out) if !scope.fetch && !scope.decode => {
                        arg.text.push_str(out.trim_end_matches('\n'))
                    }
                    _ => {
                        if at_start {
                            arg.lead_var = true;
                        }
                        arg.dynamic = true;
                        arg.text.push_str("$(…)");
                    }
                }
            }
            WordPiece::ArithmeticExpression(e) => {
                // `$(( $(cmd) ))`: the substitution runs before the arithmetic
                let subs = heredoc_substitutions(ctx, &e.value, depth);
                arg.fetch |= subs.fetch;
                arg.decode |= subs.decode;
                arg.dynamic = true;
                arg.text.push_str("$((…))");
            }
        }
    }
}
