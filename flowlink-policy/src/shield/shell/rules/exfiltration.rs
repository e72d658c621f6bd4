//! Reading secrets and sending data off the host; path and URL arguments.

use super::super::Ctx;
use super::super::paths;
use super::super::walk::Cmd;
use crate::shield::{Category, ShieldConfig, ShieldFinding};

const C: Category = Category::Exfiltration;

const READERS: &[&str] = &[
    "cat", "less", "more", "head", "tail", "base64", "base32", "xxd", "od", "hexdump", "strings",
    "grep", "egrep", "rg", "ag", "awk", "sed", "cp", "tar", "zip", "gzip", "bzip2", "xz", "7z",
    "openssl", "gpg", "jq", "yq", "bat", "nl", "tac", "sort", "uniq", "cut", "tr", "diff", "vim",
    "vi", "nano", "emacs", "code", "python", "python3", "node", "curl", "wget", "nc", "ncat",
    "netcat", "socat", "scp", "sftp", "rsync", "rclone", "aws", "gsutil", "ssh", "http", "xh",
    "source", ".", "dd", "tee", "mail", "gh", "sendmail", "mutt", "install", "ln", "mv",
];

/// A command reading secret files among its arguments.
pub(crate) fn reads(ctx: &mut Ctx, cmd: &Cmd, name: &str) {
    if name == "security" {
        let sub = cmd.args.get(1).map(|a| a.text.as_str()).unwrap_or("");
        if matches!(
            sub,
            "find-generic-password" | "find-internet-password" | "dump-keychain" | "export"
        ) {
            ctx.secret_reads
                .push((cmd.evidence(), "passwords from the macOS keychain", 60));
        }
        return;
    }
    if matches!(name, "printenv" | "env") && cmd.args.len() == 1 {
        ctx.secret_reads
            .push((cmd.evidence(), "the environment (which holds tokens)", 30));
        return;
    }
    if !READERS.contains(&name) {
        return;
    }
    let mut first = true;
    for a in cmd.args.iter().skip(1) {
        if a.dynamic {
            continue;
        }
        let t = a.text.as_str();
        // `@file`, `name=@file`, `name=<file`, `--opt=file`
        let cands: [&str; 3] = [
            t,
            t.rsplit_once('@').map(|(_, r)| r).unwrap_or(""),
            t.rsplit_once('=')
                .map(|(_, r)| r.trim_start_matches(['@', '<']))
                .unwrap_or(""),
        ];
        for p in cands {
            if p.is_empty() || (p.starts_with('-') && p == t) {
                continue;
            }
            if let Some((what, risk)) = paths::secret_kind(p) {
                if first {
                    ctx.secret_reads.push((cmd.evidence(), what, risk));
                    first = false;
                }
            }
        }
    }
}

/// A command that sends data off the host.
pub(crate) fn network(ctx: &mut Ctx, cmd: &Cmd, name: &str) {
    let remote = match name {
        "scp" | "sftp" | "rsync" | "rclone" => cmd.args.iter().skip(1).any(|a| {
            let t = &a.text;
            !t.starts_with('-') && t.contains(':') && !t.starts_with('/') && !t.starts_with('.')
        }),
        "aws" => {
            cmd.args.iter().any(|a| a.text.starts_with("s3://"))
                && cmd
                    .args
                    .iter()
                    .any(|a| a.text == "cp" || a.text == "sync" || a.text == "mv")
        }
        "gsutil" => cmd.args.iter().any(|a| a.text.starts_with("gs://")),
        _ => true,
    };
    if remote {
        ctx.net_sends.push(cmd.evidence());
    }
}

/// After the walk: secrets + network in one input is exfiltration; secrets alone are recorded.
pub(crate) fn finish(ctx: &mut Ctx) {
    if ctx.secret_reads.is_empty() {
        return;
    }
    let reads = std::mem::take(&mut ctx.secret_reads);
    if let Some(send) = ctx.net_sends.first().cloned() {
        let (ev, what, _) = &reads[0];
        let ev = if *ev == send {
            send.clone()
        } else {
            format!("{ev} … {send}")
        };
        ctx.push(
            "exfiltration.secret_to_network",
            C,
            95,
            format!("This reads {what} and sends data over the network in the same command; that is how credentials are stolen. Do not run it; if a service needs the credential, configure it directly."),
            &ev,
        );
        return;
    }
    for (ev, what, risk) in reads {
        ctx.push("exfiltration.read_secret", C, risk, format!("This reads {what}. Secrets shown to an agent can leak into logs or prompts; read only what the task needs."), &ev);
    }
}

fn f(
    id: &'static str,
    category: Category,
    risk: u8,
    explanation: String,
    evidence: &str,
) -> ShieldFinding {
    ShieldFinding {
        id,
        category,
        risk,
        explanation,
        evidence: crate::shield::evidence(evidence, 200),
    }
}

/// A bare path argument of a file tool (the verb is unknown).
pub(crate) fn path(text: &str, cfg: &ShieldConfig) -> Vec<ShieldFinding> {
    let mut out = Vec::new();
    let t = text.trim();
    if t.contains('\0') {
        out.push(f("analysis.parse_error", Category::Analysis, 60, "The path contains a NUL byte, which truncates it at the system level; FlowLink cannot tell which file is meant.".to_owned(), t));
        return out;
    }
    let p = t.strip_prefix("file://").unwrap_or(t);
    let norm = paths::normalize(p);
    if let Some((what, risk)) = paths::secret_kind(p) {
        out.push(f("exfiltration.read_secret", C, risk.max(45), format!("This path is {what}; an agent reading or changing it can leak or break credentials. Use it only if the task needs it."), t));
        return out;
    }
    if let Some(w) = super::system::special_file(&norm) {
        let (id, risk) = match w {
            super::system::Special::Persistence => ("system.persistence", 50),
            super::system::Special::Auth => ("system.edit_auth_files", 50),
            super::system::Special::History => ("system.clear_history", 30),
            super::system::Special::Logs => ("system.clear_logs", 20),
        };
        out.push(f(id, Category::System, risk, format!("`{norm}` is a system file that controls logins, startup or records; writing it changes the system."), t));
        return out;
    }
    if paths::is_protected(cfg, &norm) {
        out.push(f(
            "filesystem.protected_path",
            Category::Filesystem,
            60,
            format!("`{norm}` is a path this policy protects."),
            t,
        ));
        return out;
    }
    match paths::classify(cfg, &norm) {
        paths::Target::Root | paths::Target::System | paths::Target::SystemChild => {
            out.push(f(
                "filesystem.system_path",
                Category::Filesystem,
                20,
                format!("`{norm}` is outside the project, in a system directory."),
                t,
            ));
        }
        paths::Target::Escapes => {
            out.push(f(
                "filesystem.path_traversal",
                Category::Filesystem,
                45,
                format!("`{t}` climbs out of the working directory with `..`."),
                t,
            ));
        }
        _ => {}
    }
    out
}

const PASTE_HOSTS: &[&str] = &[
    "pastebin.com",
    "transfer.sh",
    "ngrok.io",
    "ngrok.app",
    "ngrok-free.app",
    "ngrok.dev",
    "webhook.site",
    "requestbin.com",
    "requestbin.net",
    "pipedream.net",
    "hastebin.com",
    "paste.ee",
    "0x0.st",
    "file.io",
    "termbin.com",
    "interact.sh",
    "oast.fun",
    "oast.pro",
    "oast.live",
    "oast.site",
    "oast.online",
    "oast.me",
    "burpcollaborator.net",
    "ix.io",
    "sprunge.us",
    "dpaste.com",
    "paste.rs",
    "trycloudflare.com",
    "serveo.net",
    "localtunnel.me",
    "loca.lt",
    "pastebin.pl",
    "ghostbin.com",
    "anonfiles.com",
    "gofile.io",
    "temp.sh",
    "bashupload.com",
    "discord.com/api/webhooks",
];

/// A URL argument.
pub(crate) fn url(text: &str) -> Vec<ShieldFinding> {
    let mut out = Vec::new();
    let t = text.trim();
    let lower = t.to_ascii_lowercase();
    let Some((scheme, rest)) = lower.split_once("://").or_else(|| {
        lower
            .split_once(':')
            .filter(|(s, _)| matches!(*s, "javascript" | "data" | "vbscript" | "file" | "mailto"))
    }) else {
        return out;
    };
    if !matches!(scheme, "http" | "https" | "ws" | "wss") {
        if scheme != "mailto" {
            out.push(f("exfiltration.url_scheme", C, 55, format!("The `{scheme}:` URL is not a web address: it can read local files or run script. Use an http(s) URL."), t));
        }
        return out;
    }
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host_port = authority.rsplit('@').next().unwrap_or(authority);
    let host = if let Some(h) = host_port.strip_prefix('[') {
        h.split(']').next().unwrap_or(h)
    } else {
        host_port.split(':').next().unwrap_or(host_port)
    };
    let host = host.trim_end_matches('.');
    if host == "localhost"
        || host.ends_with(".localhost")
        || host == "::1"
        || host.starts_with("127.")
        || host == "0.0.0.0"
    {
        return out;
    }
    if host == "169.254.169.254"
        || host == "metadata.google.internal"
        || host == "fd00:ec2::254"
        || host == "100.100.100.200"
    {
        out.push(f("exfiltration.cloud_metadata", C, 85, "This is the cloud instance-metadata address, which hands out the machine's cloud credentials. Do not fetch it.".to_owned(), t));
        return out;
    }
    let is_ipv4 = host.split('.').count() == 4
        && host
            .split('.')
            .all(|p| !p.is_empty() && p.len() <= 3 && p.chars().all(|c| c.is_ascii_digit()));
    let is_ipv6 = host.contains(':');
    let is_int =
        !host.is_empty() && host.chars().all(|c| c.is_ascii_digit()) || host.starts_with("0x");
    if is_ipv4 || is_ipv6 || is_int {
        let private = host.starts_with("10.")
            || host.starts_with("192.168.")
            || (host.starts_with("172.")
                && host
                    .split('.')
                    .nth(1)
                    .and_then(|x| x.parse::<u8>().ok())
                    .is_some_and(|x| (16..32).contains(&x)))
            || host.starts_with("fd")
            || host.starts_with("fe80");
        if !private {
            out.push(f("exfiltration.raw_ip", C, 45, format!("The URL points at a bare IP address (`{host}`) rather than a named service, typical of ad-hoc servers used to receive stolen data. Check who runs it."), t));
        }
        return out;
    }
    let full = format!("{host}{}", &rest[authority.len()..]);
    if PASTE_HOSTS.iter().any(|p| {
        let (ph, pp) = p
            .split_once('/')
            .map(|(h, _)| (h, true))
            .unwrap_or((p, false));
        (host == ph || host.ends_with(&format!(".{ph}"))) && (!pp || full.starts_with(p))
    }) {
        out.push(f("exfiltration.paste_host", C, 55, format!("`{host}` is a paste, file-drop, tunnel or request-capture service, a common place to send stolen data or fetch payloads. Use the project's own services."), t));
    }
    out
}
