//! Parses text with brush-parser and walks the tree, handing each simple command to the rules.

use brush_parser::ast;

use super::Ctx;
use super::rules;
use super::words::{self, Arg};
use crate::shield::Category;

/// What a piece of script does that matters to whoever consumes it.
#[derive(Debug, Clone, Default)]
pub(crate) struct Scope {
    /// Downloads something.
    pub fetch: bool,
    /// Decodes a payload.
    pub decode: bool,
    /// What the last pipeline prints, when it is known literal text (`echo rm`).
    pub output: Option<String>,
}

impl Scope {
    fn add(&mut self, o: Scope) {
        self.fetch |= o.fetch;
        self.decode |= o.decode;
        self.output = o.output;
    }
}

/// What a pipeline stage writes to its stdout, as far as the next stage is concerned.
#[derive(Debug, Clone, Default)]
pub(crate) enum Up {
    /// Nothing is piped in.
    #[default]
    None,
    /// Downloaded content.
    Fetch,
    /// A decoded payload.
    Decode,
    /// Known literal text (`echo …`, `cat <<EOF`).
    Literal(String),
    /// Paths found by `find` under these roots (with a filter: `root/<found>`).
    Find(Vec<Arg>),
    /// Something else.
    Other,
}

/// Where a command's stdin comes from.
#[derive(Debug, Clone, Default)]
pub(crate) enum Stdin {
    /// The terminal / inherited.
    #[default]
    None,
    /// A pipe from the previous stage.
    Pipe(Up),
    /// A heredoc body.
    Here(String),
    /// A here-string.
    HereString(Arg),
}

/// An output or input redirection.
#[derive(Debug, Clone)]
pub(crate) struct Redir {
    pub write: bool,
    pub append: bool,
    pub target: Arg,
}

/// A simple command ready for the rules.
pub(crate) struct Cmd<'s> {
    /// argv, wrappers stripped as the rules go.
    pub args: Vec<Arg>,
    /// Redirections.
    pub redirs: Vec<Redir>,
    /// Standard input.
    pub stdin: Stdin,
    /// Runs as another user (`sudo`, `doas`).
    pub sudo: bool,
    /// The source, for evidence.
    pub src: &'s ast::SimpleCommand,
}

impl Cmd<'_> {
    /// The command as written, for evidence.
    pub fn evidence(&self) -> String {
        crate::shield::evidence(&self.src.to_string(), 200)
    }
}

/// What a command hands back to its pipeline.
#[derive(Debug, Clone, Default)]
pub(crate) struct Out {
    pub scope: Scope,
    pub up: Up,
    /// Is a shell or language interpreter.
    pub interp: bool,
    /// Is a raw network tool (nc, ncat, socat, telnet).
    pub netcat: bool,
}

/// Runs a call into brush-parser, turning a panic inside it into `None`. The parser can panic on
/// some inputs (a redirection's descriptor number that overflows, found by fuzzing); such input
/// must become a finding, never a crash of the proxy or an allow.
pub(crate) fn guarded<T>(f: impl FnOnce() -> T) -> Option<T> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).ok()
}

/// Extended globbing (`!(…)`, `@(…)`, `+(…)`) is off: its patterns give the grammar more readings
/// of every `(` and the fuzzer found inputs that backtracked for seconds through them (and it is
/// off in a non-interactive bash unless a script turns it on). Text that needs it does not parse,
/// which is a finding in the approval band, never an allow.
pub(crate) fn parser_options() -> brush_parser::ParserOptions {
    brush_parser::ParserOptions {
        enable_extended_globbing: false,
        posix_mode: false,
        sh_mode: false,
        tilde_expansion_at_word_start: true,
        tilde_expansion_after_colon: false,
        parser_impl: brush_parser::ParserImpl::Peg,
    }
}

/// Parses and analyses a script at nesting `depth`.
pub(crate) fn script(ctx: &mut Ctx, text: &str, depth: usize) -> Scope {
    let max = ctx.cfg.budget.max_depth;
    if ctx.budget_hit {
        return Scope::default();
    }
    if depth > max {
        ctx.budget(&format!(
            "the command nests substitutions, subshells or `sh -c` strings more than {max} deep"
        ));
        return Scope::default();
    }
    if text.trim().is_empty() {
        return Scope::default();
    }
    let limit = ((max - depth) * 2 + 4).min(100);
    if super::prescan::nesting_exceeds(text, limit) {
        ctx.budget(&format!(
            "the command nests brackets, substitutions or blocks more than {limit} deep"
        ));
        return Scope::default();
    }
    if let Some(c) = text
        .chars()
        .find(|c| c.is_ascii_control() && !matches!(c, '\t' | '\n' | '\r' | '\x1b'))
    {
        // No shell command an agent writes holds a NUL or a raw control byte (bash cannot even
        // pass a NUL in an argument); such text is an attack on the parser or garbage, and the
        // fuzzer's slow inputs were full of them.
        ctx.push(
            "analysis.parse_error",
            Category::Analysis,
            60,
            format!(
                "the shell text holds the control character U+{:04X}, which no command needs; FlowLink does not analyse it, so a person has to look at it. Write escapes such as \\t or $'\\x01' instead of raw control bytes.",
                u32::from(c)
            ),
            text,
        );
        return Scope::default();
    }
    let parens = super::prescan::paren_scan(text);
    if parens.max_depth > super::prescan::MAX_PAREN_DEPTH {
        ctx.budget(&format!(
            "the command nests parentheses more than {} deep",
            super::prescan::MAX_PAREN_DEPTH
        ));
        return Scope::default();
    }
    if parens.unclosed > super::prescan::MAX_UNCLOSED_PARENS {
        ctx.push(
            "analysis.parse_error",
            Category::Analysis,
            60,
            format!(
                "{} parentheses in this shell text are never closed, so it is not complete shell and FlowLink cannot tell what it would run; a person has to look at it. Write it as plain, complete shell.",
                parens.unclosed
            ),
            text,
        );
        return Scope::default();
    }
    if parens.unclosed_substitutions > 0 && super::prescan::has_heredoc(text) {
        ctx.push(
            "analysis.parse_error",
            Category::Analysis,
            60,
            "a here-document (`<<`) sits in shell text whose `$(` is never closed, so it is not complete shell and FlowLink cannot tell what it would run; a person has to look at it. Close every `$(` with `)`.".to_owned(),
            text,
        );
        return Scope::default();
    }
    let max_unclosed = super::prescan::MAX_UNCLOSED_SUBSCRIPTS;
    if super::prescan::unclosed_subscripts(text) > max_unclosed {
        // the program parser reads expansions with the same grammar as the word parser
        ctx.budget("a parameter expansion in the command has a `[` subscript that is never closed");
        return Scope::default();
    }
    if super::prescan::unusable_heredoc_tag(text) {
        ctx.push(
            "analysis.parse_error",
            Category::Analysis,
            60,
            "a here-document (`<<`) has no usable end marker, so FlowLink cannot tell where it ends or what would run; a person has to look at it. Write the marker right after `<<`, e.g. `<<EOF`.".to_owned(),
            text,
        );
        return Scope::default();
    }
    if super::prescan::oversized_fd(text) {
        ctx.budget("a redirection names a file descriptor number too large to be real");
        return Scope::default();
    }
    let opts = parser_options();
    let parsed = guarded(|| brush_parser::Parser::new(text.as_bytes(), &opts).parse_program());
    let Some(parsed) = parsed else {
        ctx.push(
            "analysis.parse_error",
            Category::Analysis,
            60,
            "the shell parser failed on this text, so FlowLink cannot tell what it would run; a person has to look at it. Write it as plain, complete shell.".to_owned(),
            text,
        );
        return Scope::default();
    };
    match parsed {
        Ok(prog) => {
            let mut s = Scope::default();
            for cc in &prog.complete_commands {
                s.add(list(ctx, cc, depth));
            }
            s
        }
        Err(e) => {
            ctx.push(
                "analysis.parse_error",
                Category::Analysis,
                60,
                format!(
                    "FlowLink could not parse this shell text ({e}), so it cannot tell what it would run; a person has to look at it. Write it as plain, complete shell."
                ),
                text,
            );
            Scope::default()
        }
    }
}

fn list(ctx: &mut Ctx, l: &ast::CompoundList, depth: usize) -> Scope {
    let mut s = Scope::default();
    for item in &l.0 {
        s.add(and_or(ctx, &item.0, depth));
        if ctx.budget_hit {
            break;
        }
    }
    s
}

fn and_or(ctx: &mut Ctx, l: &ast::AndOrList, depth: usize) -> Scope {
    let mut s = pipeline(ctx, &l.first, depth);
    for a in &l.additional {
        let p = match a {
            ast::AndOr::And(p) | ast::AndOr::Or(p) => p,
        };
        s.add(pipeline(ctx, p, depth));
    }
    s
}

fn pipeline(ctx: &mut Ctx, p: &ast::Pipeline, depth: usize) -> Scope {
    let mut s = Scope::default();
    let mut up = Up::None;
    let (mut interp, mut netcat) = (false, false);
    for (i, c) in p.seq.iter().enumerate() {
        let stdin = if i == 0 {
            Stdin::None
        } else {
            Stdin::Pipe(up.clone())
        };
        let out = command(ctx, c, depth, stdin);
        s.add(out.scope);
        interp |= out.interp;
        netcat |= out.netcat;
        up = match (&up, out.up) {
            (Up::Fetch, _) | (_, Up::Fetch) => Up::Fetch,
            (Up::Decode, _) | (_, Up::Decode) => Up::Decode,
            (_, o) => o,
        };
    }
    if let Up::Literal(t) = &up {
        s.output = Some(t.clone());
    }
    if interp && netcat && p.seq.len() > 1 {
        ctx.push(
            "remote_code.reverse_shell",
            Category::RemoteCode,
            95,
            "This pipes a shell to a raw network connection: it gives whoever is on the other end control of this machine (a reverse shell). Do not run it.".to_owned(),
            &p.to_string(),
        );
    }
    s
}

fn command(ctx: &mut Ctx, c: &ast::Command, depth: usize, stdin: Stdin) -> Out {
    match c {
        ast::Command::Simple(sc) => simple(ctx, sc, depth, stdin),
        ast::Command::Compound(cc, redirs) => {
            if let Some(r) = redirs {
                let mut rs = Vec::new();
                let mut here = Stdin::None;
                for io in &r.0 {
                    redirect(ctx, io, depth, &mut rs, &mut here);
                }
                if !rs.is_empty() {
                    let ev = crate::shield::evidence(&c.to_string(), 200);
                    for r in &rs {
                        rules::filesystem::redirect(ctx, r, &ev);
                    }
                }
            }
            let scope = compound(ctx, cc, depth + 1);
            let up = if scope.fetch { Up::Fetch } else { Up::Other };
            Out {
                scope,
                up,
                ..Out::default()
            }
        }
        ast::Command::Function(f) => {
            let prev = ctx.current_fn.replace((f.fname.value.clone(), 0));
            let scope = compound(ctx, &f.body.0, depth + 1);
            if let Some((name, calls)) = ctx.current_fn.take() {
                if calls >= 2 {
                    ctx.push(
                        "system.fork_bomb",
                        Category::System,
                        95,
                        format!("The function `{name}` starts copies of itself without end (a fork bomb); it exhausts the machine's processes and forces a reboot. Do not run it."),
                        &c.to_string(),
                    );
                }
            }
            ctx.current_fn = prev;
            Out {
                scope,
                ..Out::default()
            }
        }
        ast::Command::ExtendedTest(..) => Out::default(),
    }
}

fn compound(ctx: &mut Ctx, cc: &ast::CompoundCommand, depth: usize) -> Scope {
    if depth > ctx.cfg.budget.max_depth {
        let max = ctx.cfg.budget.max_depth;
        ctx.budget(&format!(
            "the command nests blocks or subshells more than {max} deep"
        ));
        return Scope::default();
    }
    let mut s = Scope::default();
    match cc {
        ast::CompoundCommand::BraceGroup(b) => s.add(list(ctx, &b.list, depth)),
        ast::CompoundCommand::Subshell(b) => s.add(list(ctx, &b.list, depth)),
        ast::CompoundCommand::ForClause(f) => {
            let mut values = Vec::new();
            for w in f.values.iter().flatten() {
                let a = words::resolve(ctx, &w.value, depth);
                s.fetch |= a.fetch;
                s.decode |= a.decode;
                values.push(a);
            }
            // walk the body once per static value (a few), else once with the variable unknown
            let statics: Vec<String> = values
                .iter()
                .filter(|a| !a.dynamic)
                .map(|a| a.text.clone())
                .take(8)
                .collect();
            if statics.is_empty() || statics.len() != values.len().min(8) {
                ctx.set_var(&f.variable_name, None);
                s.add(list(ctx, &f.body.list, depth));
            }
            for v in statics {
                ctx.set_var(&f.variable_name, Some(v));
                s.add(list(ctx, &f.body.list, depth));
                if ctx.budget_hit {
                    break;
                }
            }
            ctx.set_var(&f.variable_name, None);
        }
        ast::CompoundCommand::ArithmeticForClause(f) => {
            for e in [&f.initializer, &f.condition, &f.updater]
                .into_iter()
                .flatten()
            {
                let subs = words::heredoc_substitutions(ctx, &e.value, depth);
                s.fetch |= subs.fetch;
                s.decode |= subs.decode;
            }
            s.add(list(ctx, &f.body.list, depth))
        }
        ast::CompoundCommand::CaseClause(c) => {
            let _ = words::resolve(ctx, &c.value.value, depth);
            for item in &c.cases {
                if let Some(l) = &item.cmd {
                    s.add(list(ctx, l, depth));
                }
            }
        }
        ast::CompoundCommand::IfClause(i) => {
            s.add(list(ctx, &i.condition, depth));
            s.add(list(ctx, &i.then, depth));
            for e in i.elses.iter().flatten() {
                if let Some(c) = &e.condition {
                    s.add(list(ctx, c, depth));
                }
                s.add(list(ctx, &e.body, depth));
            }
        }
        ast::CompoundCommand::WhileClause(w) | ast::CompoundCommand::UntilClause(w) => {
            s.add(list(ctx, &w.0, depth));
            s.add(list(ctx, &w.1.list, depth));
        }
        ast::CompoundCommand::Coprocess(c) => {
            s.add(command(ctx, &c.body, depth, Stdin::None).scope)
        }
        ast::CompoundCommand::Arithmetic(a) => s.add(arithmetic(ctx, &a.expr.value, depth)),
    }
    s
}

/// An arithmetic command `(( … ))`. Two things in it can run commands: command substitutions in
/// the expression, and — because brush-parser reads `( ( cmd ) )` as arithmetic where bash runs
/// two nested subshells — the text itself. So substitutions are analysed, and text that parses as
/// shell is analysed as a script; text that does not parse is arithmetic and nothing more.
fn arithmetic(ctx: &mut Ctx, expr: &str, depth: usize) -> Scope {
    let subs = words::heredoc_substitutions(ctx, expr, depth);
    let mut s = Scope {
        fetch: subs.fetch,
        decode: subs.decode,
        output: None,
    };
    let opts = parser_options();
    let parses = matches!(
        guarded(|| brush_parser::Parser::new(expr.as_bytes(), &opts).parse_program()),
        Some(Ok(_))
    );
    if parses {
        s.add(script(ctx, expr, depth + 1));
    }
    s.output = None;
    s
}

fn procsub(ctx: &mut Ctx, sub: &ast::SubshellCommand, depth: usize) -> Arg {
    let scope = if depth + 1 > ctx.cfg.budget.max_depth {
        let max = ctx.cfg.budget.max_depth;
        ctx.budget(&format!(
            "the command nests process substitutions more than {max} deep"
        ));
        Scope::default()
    } else {
        list(ctx, &sub.list, depth + 1)
    };
    Arg {
        text: "/dev/fd/63".to_owned(),
        dynamic: true,
        lead_var: false,
        fetch: scope.fetch,
        decode: scope.decode,
        procsub: true,
        found: false,
    }
}

fn redirect(
    ctx: &mut Ctx,
    io: &ast::IoRedirect,
    depth: usize,
    out: &mut Vec<Redir>,
    stdin: &mut Stdin,
) {
    use ast::{IoFileRedirectKind as K, IoFileRedirectTarget as T};
    match io {
        ast::IoRedirect::File(_, kind, target) => {
            let arg = match target {
                T::Filename(w) | T::Duplicate(w) => words::resolve(ctx, &w.value, depth),
                T::Fd(_) => return,
                T::ProcessSubstitution(_, sub) => procsub(ctx, sub, depth),
            };
            let write = matches!(
                kind,
                K::Write | K::Append | K::Clobber | K::ReadAndWrite | K::DuplicateOutput
            );
            if matches!(kind, K::Read) && arg.procsub {
                *stdin = Stdin::Pipe(if arg.fetch {
                    Up::Fetch
                } else if arg.decode {
                    Up::Decode
                } else {
                    Up::Other
                });
            }
            out.push(Redir {
                write,
                append: matches!(kind, K::Append),
                target: arg,
            });
        }
        ast::IoRedirect::HereDocument(_, hd) => {
            if hd.requires_expansion {
                let _ = words::heredoc_substitutions(ctx, &hd.doc.value, depth + 1);
            }
            *stdin = Stdin::Here(hd.doc.value.clone());
        }
        ast::IoRedirect::HereString(_, w) => {
            let a = words::resolve(ctx, &w.value, depth);
            *stdin = Stdin::HereString(a);
        }
        ast::IoRedirect::OutputAndError(w, append) => {
            let a = words::resolve(ctx, &w.value, depth);
            out.push(Redir {
                write: true,
                append: *append,
                target: a,
            });
        }
    }
}

fn simple(ctx: &mut Ctx, sc: &ast::SimpleCommand, depth: usize, stdin: Stdin) -> Out {
    ctx.units += 1;
    if ctx.units > ctx.cfg.budget.max_units {
        let max = ctx.cfg.budget.max_units;
        ctx.budget(&format!("the input has more than {max} simple commands"));
        return Out::default();
    }
    let mut args: Vec<Arg> = Vec::new();
    let mut redirs = Vec::new();
    let mut input = stdin;
    let mut assigns: Vec<(String, Arg)> = Vec::new();
    let items = sc
        .prefix
        .iter()
        .flat_map(|p| p.0.iter().map(|i| (true, i)))
        .chain(sc.word_or_name.iter().map(|_| (false, &PLACEHOLDER)))
        .chain(
            sc.suffix
                .iter()
                .flat_map(|p| p.0.iter().map(|i| (false, i))),
        );
    for (is_prefix, item) in items {
        if std::ptr::eq(item, &PLACEHOLDER) {
            if let Some(w) = &sc.word_or_name {
                args.push(words::resolve(ctx, &w.value, depth));
            }
            continue;
        }
        match item {
            ast::CommandPrefixOrSuffixItem::IoRedirect(io) => {
                redirect(ctx, io, depth, &mut redirs, &mut input)
            }
            ast::CommandPrefixOrSuffixItem::Word(w) => {
                args.push(words::resolve(ctx, &w.value, depth))
            }
            ast::CommandPrefixOrSuffixItem::AssignmentWord(a, w) => {
                let value = match &a.value {
                    ast::AssignmentValue::Scalar(v) => words::resolve(ctx, &v.value, depth),
                    ast::AssignmentValue::Array(items) => {
                        let mut acc = Arg::default();
                        for (_, v) in items {
                            let x = words::resolve(ctx, &v.value, depth);
                            acc.fetch |= x.fetch;
                            acc.decode |= x.decode;
                        }
                        acc
                    }
                };
                let name = match &a.name {
                    ast::AssignmentName::VariableName(n)
                    | ast::AssignmentName::ArrayElementName(n, _) => n.clone(),
                };
                if is_prefix {
                    assigns.push((name, value));
                } else {
                    // `export X=…`, `declare X=…`: an argument
                    let mut arg = value;
                    arg.text = format!("{name}={}", arg.text);
                    let _ = w;
                    args.push(arg);
                }
            }
            ast::CommandPrefixOrSuffixItem::ProcessSubstitution(_, sub) => {
                let a = procsub(ctx, sub, depth);
                args.push(a);
            }
        }
    }
    if let Some((fname, calls)) = &mut ctx.current_fn {
        if args.first().is_some_and(|a| a.text == *fname) {
            *calls += 1;
        }
    }
    let cmd = Cmd {
        args,
        redirs,
        stdin: input,
        sudo: false,
        src: sc,
    };
    for (name, value) in &assigns {
        rules::system::assignment(ctx, name, value, &cmd);
    }
    if cmd.args.is_empty() {
        for (name, value) in &assigns {
            let v = if value.dynamic {
                None
            } else {
                Some(value.text.clone())
            };
            ctx.set_var(name, v);
        }
    }
    let mut scope = Scope::default();
    for a in cmd.args.iter().chain(assigns.iter().map(|(_, v)| v)) {
        scope.fetch |= a.fetch;
        scope.decode |= a.decode;
    }
    let mut out = rules::dispatch(ctx, cmd, depth);
    out.scope.fetch |= scope.fetch;
    out.scope.decode |= scope.decode;
    out
}

static PLACEHOLDER: ast::CommandPrefixOrSuffixItem =
    ast::CommandPrefixOrSuffixItem::Word(ast::Word {
        value: String::new(),
        loc: None,
    });
