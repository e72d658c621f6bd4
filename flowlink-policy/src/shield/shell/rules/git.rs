//! Git: force pushes, deleting branches, discarding work, rewriting history.

use super::super::Ctx;
use super::super::paths;
use super::super::walk::Cmd;
use super::super::words::Arg;
use crate::shield::Category;

const C: Category = Category::Git;

fn protected(ctx: &Ctx, branch: &str) -> bool {
    let b = branch.strip_prefix("refs/heads/").unwrap_or(branch);
    ctx.cfg
        .protected_branches
        .iter()
        .any(|g| paths::glob_match(g, b))
}

pub(crate) fn check(ctx: &mut Ctx, cmd: &Cmd, name: &str) {
    if name != "git" {
        return;
    }
    // skip global options
    let args = &cmd.args;
    let mut i = 1;
    while i < args.len() {
        let t = args[i].text.as_str();
        if matches!(
            t,
            "-C" | "-c"
                | "--git-dir"
                | "--work-tree"
                | "--namespace"
                | "--exec-path"
                | "--config-env"
        ) {
            i += 2;
        } else if t.starts_with('-') {
            i += 1;
        } else {
            break;
        }
    }
    let Some(sub) = args.get(i) else { return };
    let rest = &args[i + 1..];
    let has = |s: &[&str]| rest.iter().any(|a| s.contains(&a.text.as_str()));
    let ev = cmd.evidence();
    match sub.text.as_str() {
        "push" => push(ctx, rest, &ev),
        "reset" if has(&["--hard", "--merge", "--keep"]) => {
            ctx.push("git.reset_hard", C, 50, "`git reset --hard` throws away uncommitted changes in tracked files; they cannot be recovered. Commit or `git stash` first.".to_owned(), &ev);
        }
        "clean" => {
            let f = super::Flags::of(rest);
            if f.has('f', "force") && !f.has('n', "dry-run") {
                let risk = if f.short.contains(&'x') || f.short.contains(&'X') {
                    55
                } else {
                    45
                };
                ctx.push("git.clean", C, risk, "`git clean -f` deletes untracked files (with -x also ignored ones such as .env); they are not in git and cannot be recovered. Run `git clean -n` first to see what goes.".to_owned(), &ev);
            }
        }
        "checkout" | "restore" => {
            let pos: Vec<&str> = rest.iter().map(|a| a.text.as_str()).collect();
            if pos.contains(&".")
                || (sub.text == "checkout"
                    && pos.contains(&"--")
                    && pos.last().is_some_and(|x| *x == "."))
                || has(&["-f", "--force"]) && sub.text == "checkout"
            {
                ctx.push("git.discard_changes", C, 45, format!("`git {}` here discards uncommitted changes in the working tree. Stash them first.", sub.text), &ev);
            }
        }
        "branch" => {
            let f = super::Flags::of(rest);
            let force_del = f.short.contains(&'D') || (f.has('d', "delete") && f.has('f', "force"));
            let del = force_del || f.has('d', "delete");
            if del {
                for b in super::positionals(&args[i..]) {
                    if protected(ctx, &b.text) {
                        ctx.push(
                            "git.delete_protected_branch",
                            C,
                            85,
                            format!(
                                "This deletes the protected branch `{}`. Do not delete it.",
                                b.text
                            ),
                            &ev,
                        );
                    } else if force_del {
                        ctx.push("git.delete_branch", C, 45, format!("`git branch -D {}` deletes the branch even if its commits are merged nowhere; they are lost. Use `-d` to delete only merged branches.", b.text), &ev);
                    }
                }
            }
        }
        "filter-branch" | "filter-repo" => {
            ctx.push("git.rewrite_history", C, 65, format!("`git {}` rewrites the whole history; everyone with a clone has to re-clone, and pushing it needs a force push. Make sure this is agreed.", sub.text), &ev);
        }
        "reflog"
            if has(&["expire"])
                && rest
                    .iter()
                    .any(|a| a.text.contains("now") || a.text.contains("all")) =>
        {
            ctx.push(
                "git.destroy_recovery",
                C,
                55,
                "This expires the reflog, removing the safety net for lost commits.".to_owned(),
                &ev,
            );
        }
        "gc" if rest
            .iter()
            .any(|a| a.text.starts_with("--prune=now") || a.text == "--prune=all") =>
        {
            ctx.push(
                "git.destroy_recovery",
                C,
                50,
                "`git gc --prune=now` permanently deletes unreachable commits.".to_owned(),
                &ev,
            );
        }
        "stash" if has(&["clear"]) => {
            ctx.push(
                "git.stash_clear",
                C,
                45,
                "`git stash clear` deletes every stash; they cannot be recovered.".to_owned(),
                &ev,
            );
        }
        "update-ref" if has(&["-d"]) => {
            ctx.push(
                "git.delete_branch",
                C,
                50,
                "`git update-ref -d` deletes a ref.".to_owned(),
                &ev,
            );
        }
        _ => {}
    }
}

fn push(ctx: &mut Ctx, rest: &[Arg], ev: &str) {
    let mut force = false;
    let mut delete = false;
    let mut pos: Vec<&str> = Vec::new();
    let mut mirror = false;
    let mut k = 0;
    while k < rest.len() {
        let t = rest[k].text.as_str();
        if t == "--" {
            pos.extend(rest[k + 1..].iter().map(|a| a.text.as_str()));
            break;
        }
        if let Some(l) = t.strip_prefix("--") {
            let l = l.split('=').next().unwrap_or(l);
            match l {
                "force" | "force-with-lease" | "force-if-includes" => force = true,
                "delete" => delete = true,
                "mirror" => mirror = true,
                "repo" | "receive-pack" | "exec" | "push-option" | "signed"
                | "recurse-submodules" | "upload-pack"
                    if !t.contains('=') =>
                {
                    k += 1
                }
                _ => {}
            }
        } else if let Some(s) = t.strip_prefix('-') {
            if s.contains('f') {
                force = true;
            }
            if s.contains('d') {
                delete = true;
            }
            if s == "o" {
                k += 1;
            }
        } else {
            pos.push(t);
        }
        k += 1;
    }
    if mirror {
        ctx.push("git.force_push_protected", C, 90, "`git push --mirror` overwrites and deletes every branch on the remote to match this clone, protected ones included. Push the branches you mean.".to_owned(), ev);
        return;
    }
    let refspecs: &[&str] = if pos.len() > 1 { &pos[1..] } else { &[] };
    if refspecs.is_empty() {
        if force {
            ctx.push("git.force_push", C, 70, "A force push of the current branch (its name is not written here, so it may be a protected one) overwrites the remote history. Name the branch, and use `--force-with-lease` on your own branches only.".to_owned(), ev);
        }
        return;
    }
    for r in refspecs {
        let plus = r.starts_with('+');
        let r = r.trim_start_matches('+');
        let (src, dst) = match r.split_once(':') {
            Some((s, d)) => (s, if d.is_empty() { s } else { d }),
            None => (r, r),
        };
        let dst_is_delete = src.is_empty() && r.starts_with(':');
        let dst = dst.trim_start_matches(':');
        let is_head = dst == "HEAD" || dst == "@";
        let prot = protected(ctx, dst);
        if delete || dst_is_delete {
            if prot {
                ctx.push(
                    "git.delete_protected_branch",
                    C,
                    90,
                    format!(
                        "This deletes the protected branch `{dst}` on the remote. Do not delete it."
                    ),
                    ev,
                );
            } else {
                ctx.push(
                    "git.delete_remote_branch",
                    C,
                    40,
                    format!("This deletes the remote branch `{dst}`."),
                    ev,
                );
            }
            continue;
        }
        if force || plus {
            if prot {
                ctx.push("git.force_push_protected", C, 95, format!("This force-pushes to the protected branch `{dst}`, overwriting history that others have pulled. Push a new branch and open a pull request instead."), ev);
            } else if is_head {
                ctx.push("git.force_push", C, 70, "A force push of HEAD (whatever branch that is, possibly a protected one) overwrites remote history. Name the branch.".to_owned(), ev);
            } else {
                ctx.push("git.force_push", C, 50, format!("This force-pushes `{dst}`, overwriting its remote history. Fine on your own branch; use `--force-with-lease`."), ev);
            }
        }
    }
}
