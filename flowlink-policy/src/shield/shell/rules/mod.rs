//! Rule packs and the dispatch that strips wrappers and recurses into nested code.

pub(crate) mod cloud;
pub(crate) mod container;
pub(crate) mod database;
pub(crate) mod exfiltration;
pub(crate) mod filesystem;
pub(crate) mod git;
pub(crate) mod infra;
pub(crate) mod kubernetes;
pub(crate) mod publishing;
pub(crate) mod remote_code;
pub(crate) mod system;

use super::Ctx;
use super::walk::{self, Cmd, Out, Stdin, Up};
use super::words::Arg;
use crate::shield::Category;

/// The last path component of a command name (`/usr/bin/rm` → `rm`).
pub(crate) fn base(s: &str) -> &str {
    s.rsplit('/').next().unwrap_or(s)
}

/// Short and long flags normalised: `-rf` → `r`,`f`; `--force` → `force`; `--x=y` → `x`.
pub(crate) struct Flags {
    pub short: Vec<char>,
    pub long: Vec<String>,
}

impl Flags {
    /// Reads flags from args (before `--`).
    pub fn of(args: &[Arg]) -> Flags {
        let mut f = Flags {
            short: Vec::new(),
            long: Vec::new(),
        };
        for a in args {
            let t = a.text.as_str();
            if t == "--" {
                break;
            }
            if let Some(l) = t.strip_prefix("--") {
                f.long
                    .push(l.split('=').next().unwrap_or(l).to_ascii_lowercase());
            } else if let Some(s) = t.strip_prefix('-') {
                if !s.is_empty() && !s.starts_with(|c: char| c.is_ascii_digit()) {
                    f.short.extend(s.chars());
                }
            }
        }
        f
    }
    pub fn has(&self, short: char, long: &str) -> bool {
        self.short.contains(&short) || self.long.iter().any(|l| l == long)
    }
    pub fn long(&self, long: &str) -> bool {
        self.long.iter().any(|l| l == long)
    }
}

/// Positional (non-flag) arguments after `args[0]`, stopping flag parsing at `--`.
pub(crate) fn positionals(args: &[Arg]) -> Vec<&Arg> {
    let mut out = Vec::new();
    let mut dd = false;
    for a in args.iter().skip(1) {
        if !dd && a.text == "--" {
            dd = true;
            continue;
        }
        if !dd && a.text.starts_with('-') && a.text.len() > 1 {
            continue;
        }
        out.push(a);
    }
    out
}

/// The value of an option: `--opt=v`, `--opt v`, `-o v`, `-ov`.
pub(crate) fn opt_value<'a>(
    args: &'a [Arg],
    short: Option<&str>,
    long: &[&str],
) -> Option<&'a str> {
    let mut it = args.iter().peekable();
    while let Some(a) = it.next() {
        let t = a.text.as_str();
        for l in long {
            if t == *l {
                return it.peek().map(|n| n.text.as_str());
            }
            if let Some(v) = t.strip_prefix(l).and_then(|r| r.strip_prefix('=')) {
                return Some(v);
            }
        }
        if let Some(s) = short {
            if t == s {
                return it.peek().map(|n| n.text.as_str());
            }
            if t.len() > s.len() && t.starts_with(s) && !t.starts_with("--") {
                return Some(&t[s.len()..]);
            }
        }
    }
    None
}

const SHELLS: &[&str] = &[
    "sh", "bash", "zsh", "dash", "ksh", "mksh", "ash", "fish", "tcsh", "csh", "busybox",
];
const LANGS: &[&str] = &[
    "python",
    "python2",
    "python3",
    "perl",
    "ruby",
    "node",
    "nodejs",
    "php",
    "deno",
    "bun",
    "lua",
    "pwsh",
    "powershell",
    "osascript",
    "Rscript",
];

/// Interpreter kind of a command name.
pub(crate) fn is_shell(name: &str) -> bool {
    SHELLS.contains(&name)
}
pub(crate) fn is_lang(name: &str) -> bool {
    LANGS.contains(&name) || (name.starts_with("python3.") && name.len() < 12)
}

/// Strips and dispatches one simple command.
pub(crate) fn dispatch(ctx: &mut Ctx, mut cmd: Cmd, depth: usize) -> Out {
    let ev = || ();
    let _ = ev;
    if !cmd.redirs.is_empty() {
        let ev = cmd.evidence();
        let redirs = std::mem::take(&mut cmd.redirs);
        for r in &redirs {
            filesystem::redirect(ctx, r, &ev);
        }
        cmd.redirs = redirs;
    }
    if !strip_wrappers(ctx, &mut cmd, depth) || cmd.args.is_empty() {
        return Out::default();
    }
    let a0 = cmd.args[0].clone();
    if a0.dynamic {
        if a0.fetch || a0.decode {
            remote_code::dynamic_code(ctx, &cmd, &a0);
        } else {
            ctx.push(
                "analysis.dynamic_command",
                Category::Analysis,
                45,
                format!("The command name `{}` is only known when it runs, so FlowLink cannot check it; write the command out.", a0.text),
                &cmd.evidence(),
            );
        }
        return Out {
            up: Up::Other,
            ..Out::default()
        };
    }
    let name = base(&a0.text).to_owned();
    if cmd.sudo && !matches!(name.as_str(), "true" | "-v" | "-k") {
        system::sudo(ctx, &cmd, &name);
    }
    let mut out = Out {
        up: Up::Other,
        ..Out::default()
    };
    match name.as_str() {
        n if is_shell(n) || is_lang(n) => {
            out.interp = true;
            remote_code::interpreter(ctx, &cmd, n, depth);
        }
        "eval" => remote_code::eval(ctx, &cmd, depth),
        "source" | "." => remote_code::source(ctx, &cmd),
        "echo" | "printf" => {
            out.up = literal_output(&cmd, &name);
        }
        "cd" | "pushd" | "chdir" => change_dir(ctx, &cmd),
        "cat" if cmd.args.len() == 1 || cmd.args.iter().skip(1).all(|a| a.text == "-") => {
            if let Stdin::Here(b) = &cmd.stdin {
                out.up = Up::Literal(b.clone());
            } else if let Stdin::Pipe(u) = &cmd.stdin {
                out.up = u.clone();
            }
        }
        "find" => {
            out.up = filesystem::find(ctx, &cmd, depth);
        }
        "base64" | "base32" | "xxd" | "uudecode" | "openssl" | "gpg" => {
            if name == "uudecode"
                || cmd.args.iter().skip(1).any(|a| {
                    matches!(
                        a.text.as_str(),
                        "-d" | "--decode" | "-D" | "-r" | "-revert" | "-a" | "--decrypt" | "dec"
                    )
                })
                || (name == "openssl" && cmd.args.iter().any(|a| a.text == "-d"))
            {
                out.up = Up::Decode;
                out.scope.decode = true;
            }
            exfiltration::reads(ctx, &cmd, &name);
        }
        "ssh" => {
            remote_code::ssh(ctx, &cmd, depth);
            exfiltration::network(ctx, &cmd, &name);
        }
        "nc" | "ncat" | "netcat" | "socat" | "telnet" => {
            out.netcat = true;
            out.up = Up::Fetch;
            out.scope.fetch = true;
            remote_code::netcat(ctx, &cmd, &name);
            exfiltration::network(ctx, &cmd, &name);
        }
        "curl" | "wget" | "fetch" | "http" | "https" | "xh" | "aria2c" | "lwp-download" => {
            out.up = Up::Fetch;
            out.scope.fetch = true;
            remote_code::download(ctx, &cmd, &name);
            exfiltration::network(ctx, &cmd, &name);
        }
        "scp" | "sftp" | "ftp" | "rsync" | "rclone" => exfiltration::network(ctx, &cmd, &name),
        _ if a0.text.contains('/') => {
            if let Some(body) = remote_code::written_script(ctx, &a0.text) {
                walk::script(ctx, &body, depth + 1);
            } else if remote_code::downloaded(ctx, &a0.text) {
                remote_code::ran_download(ctx, &cmd.evidence(), &a0.text);
            }
        }
        _ => {}
    }
    filesystem::check(ctx, &cmd, &name);
    git::check(ctx, &cmd, &name);
    kubernetes::check(ctx, &cmd, &name);
    infra::check(ctx, &cmd, &name);
    cloud::check(ctx, &cmd, &name);
    container::check(ctx, &cmd, &name);
    database::check(ctx, &cmd, &name, depth);
    system::check(ctx, &cmd, &name);
    publishing::check(ctx, &cmd, &name);
    exfiltration::reads(ctx, &cmd, &name);
    if matches!(
        name.as_str(),
        "aws"
            | "gsutil"
            | "dig"
            | "nslookup"
            | "host"
            | "ping"
            | "drill"
            | "whois"
            | "mail"
            | "sendmail"
            | "mutt"
            | "ftp"
            | "tftp"
    ) || (name == "gh"
        && cmd
            .args
            .iter()
            .any(|a| a.text == "gist" || a.text == "release" || a.text == "api"))
    {
        exfiltration::network(ctx, &cmd, &name);
    }
    // files written with known content, for `sh file` later
    if let Up::Literal(text) = &out.up {
        for r in &cmd.redirs {
            if r.write && !r.target.dynamic && ctx.scripts.len() < 64 {
                let p = super::paths::normalize(&r.target.text);
                ctx.scripts.push((p, text.clone()));
            }
        }
    }
    out
}

fn change_dir(ctx: &mut Ctx, cmd: &Cmd) {
    let target = cmd
        .args
        .iter()
        .skip(1)
        .find(|a| !a.text.starts_with('-') || a.text == "-");
    ctx.cwd = match target {
        None => Some("~".to_owned()),
        Some(a) if a.dynamic || a.text == "-" => None,
        Some(a) => {
            let n = super::paths::normalize(&a.text);
            if n.starts_with('/') || n.starts_with('~') {
                Some(n)
            } else {
                ctx.cwd
                    .as_ref()
                    .map(|c| super::paths::normalize(&format!("{c}/{n}")))
            }
        }
    };
}

fn literal_output(cmd: &Cmd, name: &str) -> Up {
    let mut parts: Vec<&str> = Vec::new();
    let mut flags = true;
    let mut unescape = name == "printf";
    for a in cmd.args.iter().skip(1) {
        if a.fetch {
            return Up::Fetch;
        }
        if a.decode {
            return Up::Decode;
        }
        if a.dynamic {
            return Up::Other;
        }
        if flags && name == "echo" && matches!(a.text.as_str(), "-n" | "-e" | "-E" | "-ne" | "-en")
        {
            unescape |= a.text.contains('e');
            continue;
        }
        flags = false;
        parts.push(&a.text);
    }
    let mut s = if name == "printf" && parts.first().is_some_and(|f| f.contains("%s")) {
        let mut it = parts.iter().skip(1);
        let fmt = parts.first().copied().unwrap_or_default();
        let mut out = String::new();
        let mut rest = fmt;
        while let Some(i) = rest.find("%s") {
            out.push_str(&rest[..i]);
            out.push_str(it.next().copied().unwrap_or_default());
            rest = &rest[i + 2..];
        }
        out.push_str(rest);
        out
    } else {
        parts.join(" ")
    };
    if unescape {
        s = s.replace("\\n", "\n").replace("\\t", "\t");
    }
    Up::Literal(s)
}

/// Removes `sudo`, `env`, `nohup`, `timeout 10`, `xargs`, … from the front of `cmd.args`.
/// Returns false when the command was fully handled (e.g. `watch` recursed).
fn strip_wrappers(ctx: &mut Ctx, cmd: &mut Cmd, depth: usize) -> bool {
    for _ in 0..16 {
        let Some(a0) = cmd.args.first() else {
            return false;
        };
        if a0.dynamic {
            return true;
        }
        let name = base(&a0.text).to_owned();
        let mut i = 1;
        let n = cmd.args.len();
        let t = |i: usize, args: &[Arg]| args.get(i).map(|a| a.text.clone()).unwrap_or_default();
        match name.as_str() {
            "sudo" | "doas" | "run0" | "pkexec" | "gosu" | "su-exec" => {
                cmd.sudo = true;
                if name == "gosu" || name == "su-exec" {
                    i = 2;
                }
                while i < n {
                    let x = t(i, &cmd.args);
                    if x == "--" {
                        i += 1;
                        break;
                    }
                    if !x.starts_with('-') {
                        break;
                    }
                    if matches!(
                        x.as_str(),
                        "-u" | "-g"
                            | "-C"
                            | "-h"
                            | "-p"
                            | "-U"
                            | "-r"
                            | "-t"
                            | "-D"
                            | "-T"
                            | "-R"
                            | "--user"
                            | "--group"
                            | "--chdir"
                            | "--prompt"
                            | "--role"
                            | "--type"
                            | "--host"
                            | "--other-user"
                            | "--close-from"
                            | "--command-timeout"
                    ) {
                        i += 2;
                    } else {
                        i += 1;
                    }
                }
            }
            "env" => {
                while i < n {
                    let x = t(i, &cmd.args);
                    if x == "--" {
                        i += 1;
                        break;
                    }
                    if matches!(x.as_str(), "-u" | "--unset" | "-C" | "--chdir" | "-P") {
                        i += 2;
                    } else if x == "-S"
                        || x == "--split-string"
                        || x.starts_with("-S")
                        || x.starts_with("--split-string=")
                    {
                        let s = if x == "-S" || x == "--split-string" {
                            t(i + 1, &cmd.args)
                        } else {
                            x.trim_start_matches("--split-string=")
                                .trim_start_matches("-S")
                                .to_owned()
                        };
                        let rest: Vec<String> = cmd
                            .args
                            .iter()
                            .skip(
                                i + if x == "-S" || x == "--split-string" {
                                    2
                                } else {
                                    1
                                },
                            )
                            .map(|a| a.text.clone())
                            .collect();
                        let line = format!("{s} {}", rest.join(" "));
                        walk::script(ctx, &line, depth + 1);
                        return false;
                    } else if x.starts_with('-') || (x.contains('=') && !x.starts_with('=')) {
                        if let Some((k, v)) = x.split_once('=') {
                            if !k.starts_with('-') {
                                system::assignment(ctx, k, &Arg::lit(v), cmd);
                            }
                        }
                        i += 1;
                    } else {
                        break;
                    }
                }
            }
            "command" | "builtin" => {
                while i < n && t(i, &cmd.args).starts_with('-') {
                    let x = t(i, &cmd.args);
                    if x.contains('v') || x.contains('V') {
                        return false;
                    }
                    i += 1;
                }
            }
            "exec" => {
                while i < n && t(i, &cmd.args).starts_with('-') {
                    i += if t(i, &cmd.args) == "-a" { 2 } else { 1 };
                }
            }
            "nohup" | "setsid" | "unbuffer" | "caffeinate" | "busybox" | "time" | "strace"
            | "ltrace" | "catchsegv" | "faketime" | "proxychains" | "proxychains4" | "torsocks"
            | "firejail" | "fakeroot" => {
                while i < n && t(i, &cmd.args).starts_with('-') {
                    i += 1;
                }
            }
            "nice" | "renice" => {
                while i < n && t(i, &cmd.args).starts_with('-') {
                    let x = t(i, &cmd.args);
                    i += if x == "-n" || x == "--adjustment" {
                        2
                    } else {
                        1
                    };
                }
            }
            "ionice" | "chrt" | "taskset" | "stdbuf" => {
                while i < n && t(i, &cmd.args).starts_with('-') {
                    let x = t(i, &cmd.args);
                    i += if x.len() == 2
                        && matches!(x.as_str(), "-c" | "-n" | "-t" | "-i" | "-o" | "-e")
                    {
                        2
                    } else {
                        1
                    };
                }
                if (name == "chrt" || name == "taskset") && i < n {
                    i += 1;
                }
            }
            "timeout" => {
                while i < n && t(i, &cmd.args).starts_with('-') {
                    let x = t(i, &cmd.args);
                    i += if matches!(x.as_str(), "-s" | "-k" | "--signal" | "--kill-after") {
                        2
                    } else {
                        1
                    };
                }
                i += 1; // duration
            }
            "watch" => {
                while i < n && t(i, &cmd.args).starts_with('-') {
                    let x = t(i, &cmd.args);
                    i += if matches!(x.as_str(), "-n" | "--interval" | "-q" | "--equexit") {
                        2
                    } else {
                        1
                    };
                }
                let line: Vec<String> = cmd.args.iter().skip(i).map(|a| a.text.clone()).collect();
                walk::script(ctx, &line.join(" "), depth + 1);
                return false;
            }
            "xargs" | "parallel" => {
                let mut repl: Option<String> = None;
                while i < n && t(i, &cmd.args).starts_with('-') {
                    let x = t(i, &cmd.args);
                    if x == "--" {
                        i += 1;
                        break;
                    }
                    if x == "-I" {
                        repl = Some(t(i + 1, &cmd.args));
                        i += 2;
                    } else if matches!(
                        x.as_str(),
                        "-n" | "-P"
                            | "-L"
                            | "-d"
                            | "-a"
                            | "-E"
                            | "-s"
                            | "--max-args"
                            | "--max-procs"
                            | "--delimiter"
                            | "--arg-file"
                            | "-j"
                    ) {
                        i += 2;
                    } else {
                        if x == "-i" || x.starts_with("--replace") {
                            repl = Some("{}".to_owned());
                        }
                        i += 1;
                    }
                }
                if i >= n {
                    cmd.args = vec![Arg::lit("echo")];
                    return true;
                }
                let items: Vec<Arg> = match &cmd.stdin {
                    Stdin::HereString(a) if !a.dynamic => {
                        a.text.split_whitespace().map(Arg::lit).collect()
                    }
                    Stdin::Here(b) => b.split_whitespace().map(Arg::lit).collect(),
                    Stdin::Pipe(Up::Literal(s)) => s.split_whitespace().map(Arg::lit).collect(),
                    Stdin::Pipe(Up::Find(roots)) => roots.clone(),
                    _ => vec![Arg {
                        text: "$(stdin)".to_owned(),
                        dynamic: true,
                        lead_var: true,
                        ..Arg::default()
                    }],
                };
                let mut rest: Vec<Arg> = cmd.args.split_off(i);
                if let Some(r) = repl {
                    for a in rest.iter_mut() {
                        if a.text.contains(&r) {
                            let first = items.first().cloned().unwrap_or_default();
                            a.text = a.text.replace(&r, &first.text);
                            a.dynamic |= first.dynamic;
                            a.lead_var |= first.lead_var;
                        }
                    }
                } else {
                    rest.extend(items);
                }
                cmd.args = rest;
                cmd.stdin = Stdin::None;
                continue;
            }
            _ => {
                // `\rm`, `/bin/rm`: names are compared by their last component already.
                return true;
            }
        }
        if i >= n {
            if name == "env" {
                ctx.secret_reads
                    .push((cmd.evidence(), "the environment (which holds tokens)", 30));
            }
            cmd.args.clear();
            // a bare `sudo` or `env`: nothing runs
            return false;
        }
        cmd.args.drain(..i);
    }
    true
}
