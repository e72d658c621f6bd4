//! Deleting, overwriting and re-permissioning files and devices.

use super::super::Ctx;
use super::super::paths::{self, Target};
use super::super::walk::{self, Cmd, Redir, Up};
use super::super::words::Arg;
use super::{Flags, positionals, system};
use crate::shield::Category;

const C: Category = Category::Filesystem;

fn core_system(norm: &str) -> bool {
    [
        "/var/lib/",
        "/etc/",
        "/usr/",
        "/boot/",
        "/bin/",
        "/sbin/",
        "/lib/",
        "/lib64/",
        "/System/",
        "/Library/",
        "/var/db/",
        "/root/",
    ]
    .iter()
    .any(|p| norm.starts_with(p))
}

/// Findings for deleting `arg` (recursively or not).
pub(crate) fn delete_target(ctx: &mut Ctx, arg: &Arg, recursive: bool, ev: &str, verb: &str) {
    if arg.dynamic {
        // `$X/`, `${X}/*`, `"$DIR"/*`: empty variable → `/`
        let after = arg.text.trim_start_matches('$');
        let var_then_slash = arg.lead_var
            && (after.split_once('/').is_some_and(|(v, rest)| {
                !v.contains(['/', '.']) && (rest.is_empty() || rest == "*" || rest == ".*")
            }));
        if var_then_slash && recursive {
            ctx.push(
                "filesystem.delete_unresolved_root",
                C,
                90,
                format!("`{verb}` on `{}`: if the variable is empty or unset this deletes from `/`. Check the variable first (`${{VAR:?}}`) or write the path out.", arg.text),
                ev,
            );
        } else if recursive || arg.text.contains('*') {
            ctx.push(
                "analysis.unresolved_target",
                Category::Analysis,
                60,
                format!("`{verb}` on `{}`, which is only known when it runs; FlowLink cannot tell what it deletes. Write the path out.", arg.text),
                ev,
            );
        }
        return;
    }
    let mut norm = paths::normalize(&arg.text);
    if let Some(cwd) = &ctx.cwd {
        if !norm.starts_with('/') && !norm.starts_with('~') {
            norm = paths::normalize(&format!("{cwd}/{norm}"));
        }
    }
    if arg.found {
        // files selected by `find` with a filter under this root
        let (risk, what) = match paths::classify(ctx.cfg, &norm) {
            Target::Root | Target::System | Target::Protected => (85, "across a whole system tree"),
            Target::SystemChild => (80, "under a system directory"),
            Target::Home | Target::HomeSensitive => (60, "across your home directory"),
            Target::HomeChild | Target::Absolute | Target::Escapes => (45, "outside the project"),
            _ => return,
        };
        ctx.push("filesystem.delete_find", C, risk, format!("`{verb}` deletes every file `find` selects under `{norm}`, {what}. Narrow the search to the project and list the files first (`find … -print`)."), ev);
        return;
    }
    if let Some(w) = system::special_file(&norm) {
        system::special_file_finding(ctx, w, &norm, ev, "delete");
        if !recursive {
            return;
        }
    }
    let t = paths::classify(ctx.cfg, &norm);
    let (id, risk, what): (&'static str, u8, String) = match t {
        Target::Root => (
            "filesystem.delete_root",
            100,
            format!("deletes everything on the machine (`{norm}`)"),
        ),
        Target::Home => (
            "filesystem.delete_home",
            95,
            format!("deletes your whole home directory (`{}`)", arg.text),
        ),
        Target::System => (
            "filesystem.delete_system",
            95,
            format!("deletes the system directory `{norm}`, which breaks the operating system"),
        ),
        Target::Protected => (
            "filesystem.delete_protected",
            90,
            format!("deletes `{norm}`, a path this policy protects"),
        ),
        Target::HomeSensitive => (
            "filesystem.delete_home_config",
            85,
            format!(
                "deletes `{}`, which holds your keys, credentials or settings",
                arg.text
            ),
        ),
        Target::SystemChild if recursive && core_system(&norm) => (
            "filesystem.delete_system",
            85,
            format!(
                "deletes `{norm}`, system software or service data (databases, packages) that the machine depends on"
            ),
        ),
        Target::SystemChild if recursive => (
            "filesystem.delete_system_path",
            70,
            format!("deletes `{norm}` under a system directory"),
        ),
        Target::SystemChild => (
            "filesystem.delete_system_path",
            55,
            format!("deletes the system file `{norm}`"),
        ),
        Target::HomeChild if recursive => (
            "filesystem.delete_outside_project",
            65,
            format!("deletes the folder `{}` in your home directory", arg.text),
        ),
        Target::Absolute if recursive => (
            "filesystem.delete_outside_project",
            50,
            format!("deletes `{norm}` and everything in it"),
        ),
        Target::Escapes if recursive => (
            "filesystem.delete_outside_project",
            60,
            format!("deletes `{}`, outside the working directory", arg.text),
        ),
        Target::AllHere if recursive || arg.text.contains('*') => (
            "filesystem.delete_all_here",
            60,
            format!(
                "deletes everything in the working directory (`{}`)",
                arg.text
            ),
        ),
        Target::Relative if recursive => (
            "filesystem.delete_recursive",
            45,
            format!("deletes the folder `{}` and everything in it", arg.text),
        ),
        Target::Relative | Target::Absolute | Target::HomeChild | Target::Escapes
            if verb == "rm" =>
        {
            (
                "filesystem.delete_file",
                40,
                format!("deletes `{}`; rm does not use a trash can", arg.text),
            )
        }
        _ => return,
    };
    let advice = if risk >= 80 {
        "Do not run it; delete the specific files you mean instead."
    } else {
        "Check it is the folder you mean."
    };
    ctx.push(id, C, risk, format!("`{verb}` {what}. {advice}"), ev);
}

pub(crate) fn check(ctx: &mut Ctx, cmd: &Cmd, name: &str) {
    let args = &cmd.args;
    match name {
        "rm" | "unlink" | "rmdir" => {
            let f = Flags::of(args);
            let recursive = f.has('r', "recursive") || f.has('R', "recursive");
            let ev = cmd.evidence();
            if f.long("no-preserve-root") {
                ctx.push("filesystem.delete_root", C, 100, "`rm --no-preserve-root` turns off the guard against deleting `/`. Do not run it.".to_owned(), &ev);
            }
            for a in positionals(args) {
                delete_target(ctx, a, recursive, &ev, "rm");
            }
        }
        "dd" => {
            for a in args.iter().skip(1) {
                if let Some(of) = a.text.strip_prefix("of=") {
                    if paths::is_block_device(of) {
                        ctx.push("filesystem.write_device", C, 95, format!("`dd` writes straight onto the disk `{of}`, destroying its partitions and data. Do not run it unless you are imaging that disk on purpose."), &cmd.evidence());
                    } else if of.starts_with("/dev/") && of != "/dev/null" {
                        ctx.push(
                            "filesystem.write_device",
                            C,
                            70,
                            format!("`dd` writes to the device `{of}`."),
                            &cmd.evidence(),
                        );
                    } else {
                        overwrite_target(ctx, &Arg::lit(of), &cmd.evidence());
                    }
                }
            }
        }
        n if n.starts_with("mkfs") || n == "mke2fs" || n == "mkswap" || n == "newfs" => {
            ctx.push("filesystem.format_disk", C, 95, format!("`{n}` formats a filesystem, erasing everything on it. Do not run it unless you are formatting that device on purpose."), &cmd.evidence());
        }
        "wipefs" | "sgdisk" | "sfdisk" | "fdisk" | "parted" | "blkdiscard" | "diskutil" => {
            let destructive = name != "diskutil"
                || args.iter().any(|a| {
                    matches!(
                        a.text.to_ascii_lowercase().as_str(),
                        "erasedisk" | "erasevolume" | "partitiondisk" | "zerodisk" | "secureerase"
                    )
                });
            if destructive {
                ctx.push("filesystem.format_disk", C, 90, format!("`{name}` changes or erases a disk's partitions or signatures; data on it is lost. Do not run it unless you mean to."), &cmd.evidence());
            }
        }
        "shred" | "srm" => {
            let f = Flags::of(args);
            for a in positionals(args) {
                let norm = paths::normalize(&a.text);
                if paths::is_block_device(&norm) {
                    ctx.push(
                        "filesystem.write_device",
                        C,
                        95,
                        format!("`shred` overwrites the whole disk `{norm}`. Do not run it."),
                        &cmd.evidence(),
                    );
                } else if let Some(w) = system::special_file(&norm) {
                    system::special_file_finding(ctx, w, &norm, &cmd.evidence(), "shred");
                } else if let Some((what, _)) = paths::secret_kind(&a.text) {
                    ctx.push(
                        "filesystem.shred",
                        C,
                        85,
                        format!(
                            "`shred` destroys {what} (`{}`) beyond recovery. Do not run it.",
                            a.text
                        ),
                        &cmd.evidence(),
                    );
                } else if let Some((what, _)) = paths::secret_kind(&a.text) {
                    ctx.push(
                        "filesystem.shred",
                        C,
                        85,
                        format!(
                            "`shred` destroys {what} (`{}`) beyond recovery. Do not run it.",
                            a.text
                        ),
                        &cmd.evidence(),
                    );
                } else {
                    let _ = f.has('u', "remove");
                    ctx.push(
                        "filesystem.shred",
                        C,
                        55,
                        format!("`shred` destroys `{}` beyond recovery.", a.text),
                        &cmd.evidence(),
                    );
                }
            }
        }
        "chmod" | "chown" | "chgrp" => permissions(ctx, cmd, name),
        "truncate" => {
            for a in positionals(args) {
                overwrite_target(ctx, a, &cmd.evidence());
            }
        }
        "tee" => {
            for a in positionals(args) {
                overwrite_target(ctx, a, &cmd.evidence());
            }
        }
        "sed" | "perl"
            if args.iter().any(|a| {
                a.text.starts_with("-i")
                    || a.text.starts_with("--in-place")
                    || (a.text.starts_with("-p") && a.text.contains('i'))
            }) =>
        {
            if let Some(a) = positionals(args).last() {
                overwrite_target(ctx, a, &cmd.evidence());
            }
        }
        "cp" | "mv" | "ln" | "install" | "rsync" => {
            let pos = positionals(args);
            if pos.len() >= 2 {
                if let Some(dst) = pos.last() {
                    overwrite_target(ctx, dst, &cmd.evidence());
                }
            }
            if name == "mv" && pos.len() >= 2 {
                for src in &pos[..pos.len() - 1] {
                    let norm = paths::normalize(&src.text);
                    if matches!(
                        paths::classify(ctx.cfg, &norm),
                        Target::Root | Target::Home | Target::System
                    ) {
                        delete_target(ctx, src, true, &cmd.evidence(), "mv");
                    }
                }
            }
            if name == "rsync" && args.iter().any(|a| a.text.starts_with("--delete")) {
                if let Some(dst) = pos.last() {
                    delete_target(ctx, dst, true, &cmd.evidence(), "rsync --delete");
                }
            }
        }
        _ => {}
    }
}

fn permissions(ctx: &mut Ctx, cmd: &Cmd, name: &str) {
    let args = &cmd.args;
    let f = Flags::of(args);
    let recursive = f.has('R', "recursive");
    let pos = positionals(args);
    let Some((mode, targets)) = pos.split_first() else {
        return;
    };
    let ev = cmd.evidence();
    if name == "chmod" {
        let m = mode.text.as_str();
        let setuid = m.contains("+s")
            || m.contains("u+s")
            || m.contains("g+s")
            || (m.len() == 4
                && m.chars().all(|c| c.is_ascii_digit())
                && matches!(m.as_bytes()[0], b'2' | b'4' | b'6' | b'7'));
        if setuid {
            ctx.push("system.setuid", Category::System, 85, format!("`chmod {m}` makes a program run with its owner's privileges (setuid/setgid), a classic way to keep root access. Do not run it."), &ev);
        }
        if (m == "777" || m == "0777" || m == "a+rwx" || m == "o+w" || m == "a+w" || m == "666")
            && recursive
        {
            ctx.push("filesystem.world_writable", C, 60, format!("`chmod -R {m}` makes every file under the folder writable by every user. Grant only the permissions needed."), &ev);
        }
    }
    for t in targets {
        if t.dynamic {
            if recursive {
                ctx.push(
                    "analysis.unresolved_target",
                    Category::Analysis,
                    60,
                    format!(
                        "`{name} -R` on `{}`, which is only known when it runs.",
                        t.text
                    ),
                    &ev,
                );
            }
            continue;
        }
        let norm = paths::normalize(&t.text);
        let c = paths::classify(ctx.cfg, &norm);
        match c {
            Target::Root | Target::System | Target::Home | Target::Protected if recursive => {
                ctx.push("filesystem.permissions_system", C, 90, format!("`{name} -R` on `{norm}` changes ownership or permissions of a whole system tree; it breaks the system and its security. Do not run it."), &ev);
            }
            Target::Root
            | Target::System
            | Target::SystemChild
            | Target::Protected
            | Target::HomeSensitive => {
                ctx.push(
                    "filesystem.permissions_system",
                    C,
                    60,
                    format!("`{name}` on `{norm}` changes a system path's permissions."),
                    &ev,
                );
            }
            _ => {}
        }
    }
}

/// Writing over `arg` (redirect, `tee`, `cp` destination, `sed -i`).
pub(crate) fn overwrite_target(ctx: &mut Ctx, arg: &Arg, ev: &str) {
    if arg.dynamic {
        return;
    }
    let norm = paths::normalize(&arg.text);
    if norm.starts_with("/dev/tcp/") || norm.starts_with("/dev/udp/") {
        ctx.push("remote_code.reverse_shell", Category::RemoteCode, 95, format!("This connects the shell's input or output to `{norm}`, a network socket: whoever listens there gets control or the data (a reverse shell). Do not run it."), ev);
        return;
    }
    if paths::is_block_device(&norm) {
        ctx.push(
            "filesystem.write_device",
            C,
            95,
            format!(
                "This writes straight onto the disk `{norm}`, destroying its data. Do not run it."
            ),
            ev,
        );
        return;
    }
    if matches!(
        norm.as_str(),
        "/dev/null" | "/dev/stdout" | "/dev/stderr" | "/dev/tty"
    ) || norm.starts_with("/dev/fd/")
    {
        return;
    }
    if let Some(w) = system::special_file(&norm) {
        system::special_file_finding(ctx, w, &norm, ev, "overwrite");
        return;
    }
    match paths::classify(ctx.cfg, &norm) {
        Target::Protected => ctx.push(
            "filesystem.overwrite_protected",
            C,
            85,
            format!("This overwrites `{norm}`, a path this policy protects."),
            ev,
        ),
        Target::System | Target::SystemChild
            if core_system(&norm) || norm.starts_with("/proc/") || norm.starts_with("/sys/") =>
        {
            ctx.push(
                "filesystem.overwrite_system",
                C,
                85,
                format!("This overwrites `{norm}`, a system file or kernel setting the machine depends on. Make the change by hand, deliberately."),
                ev,
            )
        }
        Target::System | Target::SystemChild => ctx.push(
            "filesystem.overwrite_system",
            C,
            65,
            format!("This overwrites the system file `{norm}`."),
            ev,
        ),
        _ => {}
    }
}

/// An output redirect of a command.
pub(crate) fn redirect(ctx: &mut Ctx, r: &Redir, ev: &str) {
    if r.write && r.append && !r.target.dynamic {
        // appending to history or logs does not erase them
        let norm = paths::normalize(&r.target.text);
        if matches!(
            system::special_file(&norm),
            Some(system::Special::History | system::Special::Logs)
        ) {
            return;
        }
    }
    if r.write {
        overwrite_target(ctx, &r.target, ev);
    } else if !r.target.dynamic {
        let t = paths::normalize(&r.target.text);
        if t.starts_with("/dev/tcp/") || t.starts_with("/dev/udp/") {
            overwrite_target(ctx, &r.target, ev);
        } else if let Some((what, risk)) = paths::secret_kind(&r.target.text) {
            ctx.secret_reads.push((ev.to_owned(), what, risk));
        }
    }
}

const FIND_FILTERS: &[&str] = &[
    "-name",
    "-iname",
    "-path",
    "-ipath",
    "-regex",
    "-iregex",
    "-type",
    "-mtime",
    "-mmin",
    "-newer",
    "-size",
    "-user",
    "-empty",
    "-atime",
    "-ctime",
    "-perm",
    "-wholename",
    "-inum",
    "-links",
    "-group",
    "-nouser",
];

/// `find`: `-delete`, `-exec`/`-execdir`/`-ok`. Returns what it prints (for `| xargs`).
pub(crate) fn find(ctx: &mut Ctx, cmd: &Cmd, depth: usize) -> Up {
    let args = &cmd.args;
    let mut roots: Vec<&Arg> = Vec::new();
    let mut i = 1;
    while i < args.len() {
        let t = &args[i].text;
        if t.starts_with('-') && !matches!(t.as_str(), "-H" | "-L" | "-P") || t == "(" || t == "!" {
            break;
        }
        if !matches!(t.as_str(), "-H" | "-L" | "-P") {
            roots.push(&args[i]);
        }
        i += 1;
    }
    if roots.is_empty() {
        roots.push(&DOT);
    }
    let filtered = args.iter().any(|a| FIND_FILTERS.contains(&a.text.as_str()));
    let found = |r: &Arg| -> Arg {
        let mut a = r.clone();
        a.found = filtered;
        a
    };
    let ev = cmd.evidence();
    if args.iter().any(|a| a.text == "-delete") {
        for r in &roots {
            delete_target(ctx, &found(r), true, &ev, "find -delete");
        }
    }
    // -exec CMD ... ;  /  -exec CMD ... {} +
    let mut j = i;
    while j < args.len() {
        if matches!(
            args[j].text.as_str(),
            "-exec" | "-execdir" | "-ok" | "-okdir"
        ) {
            let start = j + 1;
            let mut end = start;
            while end < args.len() && args[end].text != ";" && args[end].text != "+" {
                end += 1;
            }
            for r in &roots {
                let f = found(r);
                let sub: Vec<Arg> = args[start..end.min(args.len())]
                    .iter()
                    .map(|a| if a.text == "{}" { f.clone() } else { a.clone() })
                    .collect();
                if sub.is_empty() {
                    continue;
                }
                let inner = Cmd {
                    args: sub,
                    redirs: Vec::new(),
                    stdin: walk::Stdin::None,
                    sudo: cmd.sudo,
                    src: cmd.src,
                };
                super::dispatch(ctx, inner, depth + 1);
            }
            j = end;
        }
        j += 1;
    }
    Up::Find(roots.iter().map(|r| found(r)).collect())
}

static DOT: Arg = Arg {
    text: String::new(),
    dynamic: false,
    lead_var: false,
    fetch: false,
    decode: false,
    procsub: false,
    found: false,
};
