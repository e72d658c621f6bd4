//! Downloading and running code, decoded payloads, reverse shells, nested shell strings.

use super::super::Ctx;
use super::super::walk::{self, Cmd, Stdin, Up};
use super::super::words::Arg;
use super::{base, is_shell};
use crate::shield::Category;

const C: Category = Category::RemoteCode;

fn piped_remote(ctx: &mut Ctx, ev: &str, name: &str) {
    ctx.push("remote_code.pipe_to_shell", C, 95, format!("This downloads code and runs it straight away with `{name}`, without anyone reading it; whoever controls that server (or the network) controls this machine. Download the script, read it, then run the file."), ev);
}

fn decoded(ctx: &mut Ctx, ev: &str, name: &str) {
    ctx.push("remote_code.decoded_payload", C, 90, format!("This decodes a hidden payload and runs it with `{name}`; encoded commands are how malicious instructions avoid review. Decode it, read it, and run the plain command instead."), ev);
}

/// A dynamic command name or code string built from a download or decoded payload.
pub(crate) fn dynamic_code(ctx: &mut Ctx, cmd: &Cmd, a: &Arg) {
    let ev = cmd.evidence();
    if a.fetch {
        piped_remote(ctx, &ev, "the shell");
    } else if a.decode {
        decoded(ctx, &ev, "the shell");
    }
}

/// Code given as a string (`sh -c`, `eval`), or unresolvable.
fn code_string(ctx: &mut Ctx, cmd: &Cmd, code: &Arg, depth: usize, shell: bool, name: &str) {
    if code.fetch || code.decode {
        dynamic_code(ctx, cmd, code);
        return;
    }
    if shell {
        walk::script(ctx, &code.text, depth + 1);
        if code.dynamic
            && code.text.trim().starts_with(['$', '"'])
            && code.text.trim().trim_matches('"').starts_with('$')
        {
            ctx.push("analysis.unresolved_code", Category::Analysis, 60, format!("`{name}` runs code held in `{}`, which is only known when it runs; FlowLink cannot check it. Write the command out.", code.text), &cmd.evidence());
        }
    } else {
        inline_lang(ctx, cmd, &code.text, name);
        if code.dynamic && code.text.trim().starts_with('$') {
            ctx.push(
                "analysis.unresolved_code",
                Category::Analysis,
                60,
                format!(
                    "`{name}` runs code held in `{}`, which is only known when it runs.",
                    code.text
                ),
                &cmd.evidence(),
            );
        }
    }
}

/// Heuristics on inline Python/Perl/Ruby/Node code.
fn inline_lang(ctx: &mut Ctx, cmd: &Cmd, code: &str, name: &str) {
    let l = code.to_ascii_lowercase();
    let socket = l.contains("socket")
        || l.contains("fsockopen")
        || l.contains("net.connect")
        || l.contains("tcpsocket")
        || l.contains("io::socket");
    let spawn = l.contains("pty.spawn")
        || l.contains("/bin/sh")
        || l.contains("/bin/bash")
        || l.contains("dup2")
        || l.contains("subprocess")
        || l.contains("exec(")
        || l.contains("child_process")
        || l.contains("system(");
    if socket && spawn {
        ctx.push("remote_code.reverse_shell", C, 95, format!("This `{name}` code connects to a remote host and hands it a shell (a reverse shell). Do not run it."), &cmd.evidence());
        return;
    }
    let fetch = l.contains("urlopen")
        || l.contains("requests.get")
        || l.contains("urllib")
        || l.contains("http.get")
        || l.contains("fetch(")
        || l.contains("lwp::")
        || l.contains("open-uri")
        || l.contains("net::http");
    let exec = l.contains("exec(")
        || l.contains("eval(")
        || l.contains("| sh")
        || l.contains("|sh")
        || l.contains("system(");
    if fetch && exec {
        ctx.push("remote_code.pipe_to_shell", C, 90, format!("This `{name}` code downloads code and executes it without review. Download it, read it, then run it."), &cmd.evidence());
    }
    if l.contains("b64decode") && exec {
        decoded(ctx, &cmd.evidence(), name);
    }
    // os.system("…") / subprocess with a literal shell string
    for pat in [
        "os.system(",
        "subprocess.call(",
        "subprocess.run(",
        "system(",
        "exec(\"",
        "execsync(",
    ] {
        if let Some(i) = l.find(pat) {
            let rest = &code[i + pat.len()..];
            let q = rest.trim_start();
            if let Some(qc) = q.chars().next().filter(|c| *c == '"' || *c == '\'') {
                if let Some(end) = q[1..].find(qc) {
                    let inner = &q[1..1 + end];
                    let depth = 1;
                    walk::script(ctx, inner, depth);
                }
            }
        }
    }
}

/// `sh …`, `bash -c …`, `python -`, `node -e …`.
pub(crate) fn interpreter(ctx: &mut Ctx, cmd: &Cmd, name: &str, depth: usize) {
    let args = &cmd.args;
    let shell = is_shell(name);
    let mut i = 1;
    if name == "busybox" {
        i = 2;
    }
    let mut script: Option<&Arg> = None;
    let mut reads_stdin_code = true;
    let code_flags: &[&str] = if shell {
        &["-c"]
    } else {
        &["-c", "-e", "-E", "-r", "--eval", "-p", "--print", "-x"]
    };
    while i < args.len() {
        let t = args[i].text.as_str();
        if code_flags.contains(&t)
            || (shell
                && t.starts_with('-')
                && !t.starts_with("--")
                && t.contains('c')
                && !t.contains('o'))
        {
            if let Some(code) = args.get(i + 1) {
                code_string(ctx, cmd, code, depth, shell, name);
            }
            return;
        }
        if t == "-" || t == "-s" || t == "--" {
            break;
        }
        if !shell && (t == "-m" || t.starts_with("-m")) {
            return; // a module: its code is not on stdin
        }
        if t.starts_with('-') || t.starts_with('+') {
            if matches!(
                t,
                "-o" | "-O"
                    | "+o"
                    | "+O"
                    | "--rcfile"
                    | "--init-file"
                    | "-W"
                    | "-X"
                    | "-I"
                    | "-M"
                    | "--require"
                    | "-r"
            ) {
                i += 1;
            }
            i += 1;
            continue;
        }
        script = Some(&args[i]);
        reads_stdin_code = false;
        break;
    }
    let ev = cmd.evidence();
    if let Some(s) = script {
        if s.fetch {
            piped_remote(ctx, &ev, name);
        } else if s.decode {
            decoded(ctx, &ev, name);
        } else if let Some(body) = written_script(ctx, &s.text) {
            walk::script(ctx, &body, depth + 1);
        } else if downloaded(ctx, &s.text) {
            ran_download(ctx, &ev, &s.text);
        } else if s.procsub {
            ctx.push("remote_code.opaque_code", C, 80, format!("`{name}` runs code produced by another command, which FlowLink cannot read ahead of time. Write the script to a file, read it, then run it."), &ev);
        }
        return;
    }
    if !reads_stdin_code {
        return;
    }
    match &cmd.stdin {
        Stdin::None => {}
        Stdin::Pipe(Up::Fetch) => piped_remote(ctx, &ev, name),
        Stdin::Pipe(Up::Decode) => decoded(ctx, &ev, name),
        Stdin::Pipe(Up::Literal(s)) | Stdin::Here(s) => {
            if shell {
                walk::script(ctx, s, depth + 1);
            } else {
                let s = s.clone();
                inline_lang(ctx, cmd, &s, name);
            }
        }
        Stdin::HereString(a) => code_string(ctx, cmd, a, depth, shell, name),
        Stdin::Pipe(Up::None) => {}
        Stdin::Pipe(_) => {
            ctx.push("remote_code.opaque_stdin", C, 80, format!("This pipes the output of another command into `{name}`, which runs it as code; FlowLink cannot see what that code is. Save it to a file, read it, then run the file."), &ev);
        }
    }
}

pub(crate) fn eval(ctx: &mut Ctx, cmd: &Cmd, depth: usize) {
    let mut code = Arg::default();
    for a in cmd.args.iter().skip(1) {
        if !code.text.is_empty() {
            code.text.push(' ');
        }
        code.text.push_str(&a.text);
        code.dynamic |= a.dynamic;
        code.fetch |= a.fetch;
        code.decode |= a.decode;
    }
    code_string(ctx, cmd, &code, depth, true, "eval");
}

pub(crate) fn source(ctx: &mut Ctx, cmd: &Cmd) {
    let ev = cmd.evidence();
    if let Some(s) = cmd.args.get(1) {
        if s.fetch {
            piped_remote(ctx, &ev, "source");
        } else if s.decode {
            decoded(ctx, &ev, "source");
        } else if downloaded(ctx, &s.text) {
            ran_download(ctx, &ev, &s.text);
        }
    } else {
        match &cmd.stdin {
            Stdin::Pipe(Up::Fetch) => piped_remote(ctx, &ev, "source"),
            Stdin::Pipe(Up::Decode) => decoded(ctx, &ev, "source"),
            _ => {}
        }
    }
}

pub(crate) fn written_script(ctx: &Ctx, path: &str) -> Option<String> {
    let p = super::super::paths::normalize(path);
    ctx.scripts
        .iter()
        .rev()
        .find(|(q, _)| *q == p)
        .map(|(_, b)| b.clone())
}

pub(crate) fn downloaded(ctx: &Ctx, path: &str) -> bool {
    let b = base(path);
    !b.is_empty() && ctx.downloads.iter().any(|d| d == b)
}

pub(crate) fn ran_download(ctx: &mut Ctx, ev: &str, f: &str) {
    ctx.push("remote_code.download_then_run", C, 85, format!("This runs `{f}`, which was just downloaded, before anyone has read it: the same as piping it into a shell. Download it, read it, then run it as a separate step."), ev);
}

/// curl / wget: remember downloaded files; check URLs.
pub(crate) fn download(ctx: &mut Ctx, cmd: &Cmd, name: &str) {
    let args = &cmd.args;
    let mut out_file: Option<String> = None;
    for (i, a) in args.iter().enumerate() {
        let t = a.text.as_str();
        if matches!(t, "-o" | "--output" | "-O" | "--output-document") {
            if let Some(n) = args.get(i + 1) {
                if !(name == "curl" && t == "-O") {
                    out_file = Some(n.text.clone());
                }
            }
        } else if let Some(v) = t
            .strip_prefix("--output-document=")
            .or_else(|| t.strip_prefix("--output="))
        {
            out_file = Some(v.to_owned());
        } else if name == "wget" && t.starts_with("-qO") && t.len() > 3 {
            out_file = Some(t[3..].to_owned());
        }
    }
    let urls: Vec<&str> = args
        .iter()
        .skip(1)
        .map(|a| a.text.as_str())
        .filter(|t| t.contains("://") || t.starts_with("www."))
        .collect();
    if let Some(f) = out_file {
        if f != "-" && f != "/dev/stdout" {
            ctx.downloads.push(base(&f).to_owned());
        }
    } else if name == "wget"
        || args.iter().any(|a| {
            a.text == "-O"
                || a.text == "--remote-name"
                || a.text.starts_with("-")
                    && !a.text.starts_with("--")
                    && a.text.contains('O')
                    && name == "curl"
        })
    {
        for u in &urls {
            let path = u.split(['?', '#']).next().unwrap_or(u);
            let b = base(path);
            if !b.is_empty() {
                ctx.downloads.push(b.to_owned());
            }
        }
    }
    for u in urls {
        for f in super::exfiltration::url(u) {
            if f.id != "exfiltration.raw_ip" {
                ctx.push(f.id, f.category, f.risk, f.explanation, &cmd.evidence());
            }
        }
    }
}

/// ssh host CMD: analyse the remote command.
pub(crate) fn ssh(ctx: &mut Ctx, cmd: &Cmd, depth: usize) {
    let args = &cmd.args;
    let mut i = 1;
    while i < args.len() {
        let t = args[i].text.as_str();
        if t.starts_with('-') {
            if t.len() == 2
                && t.strip_prefix('-')
                    .is_some_and(|f| "bcDEeFIiJLlmOopQRSWw".contains(f))
            {
                i += 1;
            }
            i += 1;
            continue;
        }
        break;
    }
    // args[i] is the host
    if i + 1 < args.len() {
        let line: Vec<&str> = args[i + 1..].iter().map(|a| a.text.as_str()).collect();
        walk::script(ctx, &line.join(" "), depth + 1);
    }
    if args
        .iter()
        .any(|a| a.text == "-R" || a.text.starts_with("-R"))
    {
        ctx.push("remote_code.tunnel", C, 55, "`ssh -R` opens a reverse tunnel that lets a remote host reach into this machine's network.".to_owned(), &cmd.evidence());
    }
}

pub(crate) fn netcat(ctx: &mut Ctx, cmd: &Cmd, name: &str) {
    let exec = cmd.args.iter().skip(1).any(|a| {
        let t = a.text.as_str();
        let l = t.to_ascii_lowercase();
        matches!(t, "-e" | "-c" | "--exec" | "--sh-exec" | "--lua-exec")
            || t.starts_with("--exec=")
            || t.starts_with("--sh-exec=")
            || (t.starts_with('-')
                && !t.starts_with("--")
                && t.contains('e')
                && name != "socat"
                && t.len() <= 5)
            || (name == "socat" && (l.contains("exec:") || l.contains("system:")))
    });
    if exec {
        ctx.push("remote_code.reverse_shell", C, 95, format!("`{name}` here hands a program (usually a shell) to a network connection: whoever is on the other end controls this machine (a reverse or bind shell). Do not run it."), &cmd.evidence());
    } else if cmd.args.iter().any(|a| {
        a.text == "-l"
            || (a.text.starts_with('-') && a.text.contains('l') && !a.text.starts_with("--"))
    }) {
        ctx.push(
            "remote_code.listener",
            C,
            45,
            format!("`{name} -l` opens a network listener on this machine."),
            &cmd.evidence(),
        );
    }
}
