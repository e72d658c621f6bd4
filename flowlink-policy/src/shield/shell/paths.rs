//! Path normalisation, classification and small glob matching.

use crate::shield::ShieldConfig;

/// Matches `s` against a glob with `*` (any run, `/` included) and `?` (one byte).
pub(crate) fn glob_match(pat: &str, s: &str) -> bool {
    glob_bytes(pat.as_bytes(), s.as_bytes(), false)
}

fn glob_bytes(p: &[u8], t: &[u8], ci: bool) -> bool {
    let eq = |a: u8, b: u8| {
        if ci {
            a.eq_ignore_ascii_case(&b)
        } else {
            a == b
        }
    };
    let (mut pi, mut ti) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == b'?' || (p[pi] != b'*' && eq(p[pi], t[ti]))) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == b'*' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == b'*' {
        pi += 1;
    }
    pi == p.len()
}

/// Case-insensitive match of a name against any of the globs.
pub(crate) fn any_glob_ci(globs: &[String], name: &str) -> bool {
    !name.is_empty()
        && globs
            .iter()
            .any(|g| glob_bytes(g.as_bytes(), name.as_bytes(), true))
}

/// Whether a resource name, or any part of it between `/ : = - _ .`, names production
/// (`acme-production-assets`, `s3://prod-site/x`).
pub(crate) fn is_production(cfg: &ShieldConfig, name: &str) -> bool {
    any_glob_ci(&cfg.production, name)
        || name
            .split(['/', ':', '=', '-', '_', '.'])
            .any(|part| part != name && any_glob_ci(&cfg.production, part))
}

/// Whether a resource name is disposable (and not production).
pub(crate) fn is_disposable(cfg: &ShieldConfig, name: &str) -> bool {
    !is_production(cfg, name) && any_glob_ci(&cfg.disposable, name)
}

/// Lexically normalises a path: `$HOME`→`~`, collapses `//`, `.` and `..`, drops trailing `/`.
/// Absolute paths start with `/`, home paths with `~`, relative paths with neither (`.` when empty).
pub(crate) fn normalize(p: &str) -> String {
    let p = p.trim();
    let (anchor, rest): (&str, &str) = if let Some(r) = p.strip_prefix("${HOME}") {
        ("~", r)
    } else if let Some(r) = p.strip_prefix("$HOME") {
        ("~", r)
    } else if p == "~" || p.starts_with("~/") {
        ("~", &p[1..])
    } else if p.starts_with('~') {
        // ~user
        let end = p.find('/').unwrap_or(p.len());
        return format!("/home/{}{}", &p[1..end], normalize_tail(&p[end..]));
    } else if let Some(r) = p.strip_prefix('/') {
        ("/", r)
    } else {
        ("", p)
    };
    let mut parts: Vec<&str> = Vec::new();
    for c in rest.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                if matches!(parts.last(), Some(l) if *l != "..") {
                    parts.pop();
                } else if anchor.is_empty() {
                    parts.push("..");
                }
                // `/..` is `/`; `~/..` leaves home: treat as `/home`
                else if anchor == "~" {
                    return format!("/home/{}", parts.join("/"))
                        .trim_end_matches('/')
                        .to_owned();
                }
            }
            c => parts.push(c),
        }
    }
    let joined = parts.join("/");
    match anchor {
        "/" => format!("/{joined}"),
        "~" if joined.is_empty() => "~".to_owned(),
        "~" => format!("~/{joined}"),
        _ if joined.is_empty() => ".".to_owned(),
        _ => joined,
    }
}

fn normalize_tail(t: &str) -> String {
    let n = normalize(&format!("/{t}"));
    if n == "/" { String::new() } else { n }
}

/// Rewrites `/home/<u>/…`, `/Users/<u>/…`, `/root/…` to `~/…` (for secret detection).
pub(crate) fn homeify(norm: &str) -> String {
    for pre in ["/home/", "/Users/"] {
        if let Some(r) = norm.strip_prefix(pre) {
            return match r.find('/') {
                Some(i) => format!("~{}", &r[i..]),
                None => "~".to_owned(),
            };
        }
    }
    if norm == "/root" {
        return "~".to_owned();
    }
    if let Some(r) = norm.strip_prefix("/root/") {
        return format!("~/{r}");
    }
    norm.to_owned()
}

pub(crate) fn has_glob(s: &str) -> bool {
    s.contains(['*', '?', '['])
}

const SYSTEM_TOP: &[&str] = &[
    "etc",
    "usr",
    "bin",
    "sbin",
    "boot",
    "var",
    "lib",
    "lib32",
    "lib64",
    "opt",
    "home",
    "root",
    "System",
    "Library",
    "Applications",
    "Users",
    "dev",
    "proc",
    "sys",
    "srv",
    "snap",
    "private",
    "nix",
    "Volumes",
];
const SYSTEM_DEEP: &[&str] = &[
    "usr", "etc", "bin", "sbin", "boot", "lib", "lib64", "System", "Library",
];
const REGENERABLE: &[&str] = &[
    "node_modules",
    "target",
    "dist",
    "build",
    ".cache",
    "__pycache__",
    ".next",
    "coverage",
    ".pytest_cache",
    ".mypy_cache",
    ".ruff_cache",
    ".turbo",
    ".parcel-cache",
    ".nuxt",
    "out",
    ".gradle",
    ".tox",
    ".venv",
    "venv",
    ".svelte-kit",
    "tmp",
    ".angular",
    "vendor/bundle",
];
const HOME_SENSITIVE: &[&str] = &[
    ".ssh", ".gnupg", ".aws", ".kube", ".config", ".docker", ".azure", "Library", ".local",
];

/// What deleting (or recursively re-permissioning) a path would hit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Target {
    /// `/` or everything under it.
    Root,
    /// The home directory or everything in it.
    Home,
    /// A top-level system directory (or a glob over one), or a second-level one of the core ones.
    System,
    /// A configured protected path (or a parent of one).
    Protected,
    /// A credentials/config folder in home.
    HomeSensitive,
    /// Something deeper under a system directory.
    SystemChild,
    /// Some other folder in home.
    HomeChild,
    /// Another absolute path (`/tmp/x`).
    Absolute,
    /// A relative path that climbs out of the working directory.
    Escapes,
    /// `.`, `*`, `./*`: everything in the working directory.
    AllHere,
    /// Regenerable build output inside the project.
    Regenerable,
    /// Another relative path.
    Relative,
}

/// Classifies a normalised path.
pub(crate) fn classify(cfg: &ShieldConfig, norm: &str) -> Target {
    if is_protected(cfg, norm) {
        return Target::Protected;
    }
    if let Some(rest) = norm.strip_prefix('/') {
        if rest.is_empty() {
            return Target::Root;
        }
        let comps: Vec<&str> = rest.split('/').collect();
        let first = comps[0];
        if comps.len() == 1 && has_glob(first) {
            return Target::Root;
        }
        if comps.len() == 1 && SYSTEM_TOP.contains(&first) {
            return Target::System;
        }
        if comps.len() == 2 && (first == "home" || first == "Users") {
            return Target::Home;
        }
        if comps.len() == 2 && SYSTEM_DEEP.contains(&first) {
            return Target::System;
        }
        if comps.len() == 2 && has_glob(comps[1]) && SYSTEM_TOP.contains(&first) {
            return Target::System;
        }
        if SYSTEM_TOP.contains(&first) {
            if first == "home" || first == "Users" {
                if comps.len() >= 3 && HOME_SENSITIVE.contains(&comps[2]) && comps.len() == 3 {
                    return Target::HomeSensitive;
                }
                return Target::HomeChild;
            }
            return Target::SystemChild;
        }
        return Target::Absolute;
    }
    if norm == "~" {
        return Target::Home;
    }
    if let Some(rest) = norm.strip_prefix("~/") {
        let comps: Vec<&str> = rest.split('/').collect();
        if comps.len() == 1 && has_glob(comps[0]) {
            return Target::Home;
        }
        if comps.len() == 1 && HOME_SENSITIVE.contains(&comps[0]) {
            return Target::HomeSensitive;
        }
        return Target::HomeChild;
    }
    if norm.starts_with("..") {
        return Target::Escapes;
    }
    let comps: Vec<&str> = norm.split('/').collect();
    if norm == "."
        || (comps.len() == 1 && (comps[0] == "*" || comps[0] == ".*" || comps[0] == "{*,.*}"))
    {
        return Target::AllHere;
    }
    let last = comps.last().copied().unwrap_or("");
    if let Some(ext) = last.strip_prefix("*.") {
        if matches!(
            ext,
            "o" | "obj"
                | "pyc"
                | "pyo"
                | "class"
                | "a"
                | "d"
                | "tmp"
                | "log"
                | "orig"
                | "rej"
                | "bak"
                | "swp"
                | "gcda"
                | "gcno"
                | "profraw"
        ) {
            return Target::Regenerable;
        }
    }
    if REGENERABLE.contains(&last)
        || (!comps.contains(&"..") && REGENERABLE.contains(&comps[0]) && comps[0] != "tmp")
        || (comps.len() >= 2 && REGENERABLE.contains(&comps[comps.len() - 2]) && has_glob(last))
    {
        return Target::Regenerable;
    }
    Target::Relative
}

/// Whether the path, or something under it, is a configured protected path.
pub(crate) fn is_protected(cfg: &ShieldConfig, norm: &str) -> bool {
    cfg.protected_paths.iter().any(|g| {
        let g = normalize(g);
        if glob_match(&g, norm) {
            return true;
        }
        // deleting a parent of a protected path
        let lit: &str = match g.find(['*', '?', '[']) {
            Some(i) => &g[..i],
            None => &g,
        };
        let prefix = if norm == "/" {
            "/".to_owned()
        } else {
            format!("{norm}/")
        };
        lit.starts_with(&prefix)
    })
}

/// A secret-bearing file: (what it is, risk when only read).
pub(crate) fn secret_kind(raw: &str) -> Option<(&'static str, u8)> {
    let norm = homeify(&normalize(raw));
    let base = norm.rsplit('/').next().unwrap_or(&norm);
    if norm.starts_with("~/.ssh/") {
        if base.ends_with(".pub")
            || matches!(
                base,
                "known_hosts" | "config" | "authorized_keys" | "known_hosts.old"
            )
        {
            return None;
        }
        return Some(("an SSH private key", 60));
    }
    if base.starts_with("id_")
        && (base.starts_with("id_rsa")
            || base.starts_with("id_ed25519")
            || base.starts_with("id_ecdsa")
            || base.starts_with("id_dsa"))
        && !base.ends_with(".pub")
    {
        return Some(("an SSH private key", 60));
    }
    let key_files: &[(&str, &str)] = &[
        ("~/.aws/credentials", "AWS credentials"),
        ("~/.netrc", "the .netrc login file"),
        ("~/.docker/config.json", "Docker registry credentials"),
        ("~/.kube/config", "the Kubernetes credentials"),
        ("~/.git-credentials", "git credentials"),
        ("~/.npmrc", "the npm token file"),
        ("~/.pypirc", "the PyPI token file"),
        ("~/.vault-token", "a Vault token"),
        ("~/.config/gh/hosts.yml", "the GitHub CLI token"),
        ("/etc/shadow", "the password hashes"),
        ("/etc/gshadow", "the group password hashes"),
        ("/etc/sudoers", "the sudo rules"),
    ];
    for (p, what) in key_files {
        if norm == *p {
            return Some((what, 60));
        }
    }
    if matches!(
        norm.as_str(),
        "~/.ssh" | "~/.gnupg" | "~/.aws" | "~/.password-store" | "~/.kube" | "~/.docker"
    ) {
        return Some(("a folder of keys and credentials", 60));
    }
    for (pre, what) in [
        ("~/.gnupg/", "GnuPG keys"),
        ("~/.azure/", "Azure credentials"),
        ("~/.config/gcloud/", "Google Cloud credentials"),
        ("~/.password-store/", "the password store"),
        ("~/.aws/", "AWS configuration"),
        ("~/.kube/", "Kubernetes configuration"),
        ("~/Library/Keychains/", "the macOS keychain"),
    ] {
        if norm.starts_with(pre) || norm == pre.trim_end_matches('/') {
            return Some((what, 55));
        }
    }
    if base == ".env"
        || (base.starts_with(".env.")
            && !matches!(
                base,
                ".env.example" | ".env.sample" | ".env.template" | ".env.dist" | ".env.defaults"
            ))
    {
        return Some(("an environment file with secrets", 40));
    }
    if base.ends_with(".pem")
        || base.ends_with(".p12")
        || base.ends_with(".pfx")
        || base.ends_with(".keystore")
        || base.ends_with(".jks")
    {
        return Some(("a private key or certificate store", 45));
    }
    None
}

/// Block devices (`/dev/sda`, `/dev/nvme0n1`, `/dev/disk2`, …).
pub(crate) fn is_block_device(p: &str) -> bool {
    let Some(d) = p.strip_prefix("/dev/") else {
        return false;
    };
    [
        "sd", "hd", "vd", "xvd", "nvme", "disk", "rdisk", "mmcblk", "mapper/", "md", "dm-", "loop",
        "sr",
    ]
    .iter()
    .any(|pre| d.starts_with(pre))
}
