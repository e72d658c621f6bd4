//! Terraform, OpenTofu, Terragrunt, Pulumi, CDK.

use super::super::Ctx;
use super::super::paths;
use super::super::walk::Cmd;
use super::opt_value;
use crate::shield::Category;

const C: Category = Category::Infrastructure;

pub(crate) fn check(ctx: &mut Ctx, cmd: &Cmd, name: &str) {
    let args = &cmd.args;
    let words: Vec<&str> = args
        .iter()
        .skip(1)
        .map(|a| a.text.as_str())
        .filter(|t| !t.starts_with('-'))
        .collect();
    if !matches!(
        name,
        "terraform" | "tofu" | "terragrunt" | "pulumi" | "cdk" | "cdktf" | "serverless" | "sls"
    ) {
        return;
    }
    let has = |s: &[&str]| args.iter().any(|a| s.contains(&a.text.as_str()));
    let ev = cmd.evidence();
    let prod_words = args.iter().skip(1).any(|a| {
        let t = a.text.trim_start_matches('-');
        let v = t.split_once('=').map(|(_, v)| v).unwrap_or(t);
        paths::is_production(ctx.cfg, v)
            || paths::is_production(
                ctx.cfg,
                v.trim_end_matches(".tfvars").trim_end_matches(".json"),
            )
    });
    match name {
        "terraform" | "tofu" | "terragrunt" => {
            let verb = words.first().copied().unwrap_or("");
            match verb {
                "destroy" => ctx.push("infrastructure.destroy", C, 95, format!("`{name} destroy` deletes every resource this configuration manages (databases and storage included). Do not run it from an agent; destroy specific resources with a reviewed plan."), &ev),
                "apply" if has(&["-destroy", "--destroy"]) => ctx.push("infrastructure.destroy", C, 95, format!("`{name} apply -destroy` deletes every resource this configuration manages."), &ev),
                "apply" => {
                    let auto = has(&["-auto-approve", "--auto-approve"]);
                    let risk = if auto && prod_words { 75 } else if auto { 60 } else { 45 };
                    ctx.push("infrastructure.apply", C, risk, format!("`{name} apply`{} changes real infrastructure. Review `{name} plan` first.", if auto { " -auto-approve" } else { "" }), &ev);
                }
                "state" if matches!(words.get(1).copied(), Some("rm" | "mv" | "push" | "replace-provider")) => {
                    ctx.push("infrastructure.state_change", C, 55, format!("`{name} state {}` edits the state by hand; resources can be orphaned or recreated.", words.get(1).copied().unwrap_or("")), &ev);
                }
                "force-unlock" | "taint" | "import" | "untaint" => {
                    ctx.push("infrastructure.state_change", C, 50, format!("`{name} {verb}` changes the state."), &ev);
                }
                "workspace" if words.get(1).copied() == Some("delete") => {
                    let risk = if prod_words { 90 } else { 60 };
                    ctx.push("infrastructure.destroy", C, risk, "This deletes a Terraform workspace and its state.".to_owned(), &ev);
                }
                _ => {}
            }
        }
        "pulumi" => {
            let verb = words.first().copied().unwrap_or("");
            let stack = opt_value(args, Some("-s"), &["--stack"]).unwrap_or("");
            let prod = prod_words || paths::is_production(ctx.cfg, stack);
            match verb {
                "destroy" | "down" => {
                    let risk = if !prod && paths::is_disposable(ctx.cfg, stack) {
                        60
                    } else {
                        95
                    };
                    ctx.push("infrastructure.destroy", C, risk, "`pulumi destroy` deletes every resource in the stack. Do not run it from an agent on a stack that matters.".to_owned(), &ev)
                }
                "up" | "update" => {
                    let auto = has(&["--yes", "-y", "--skip-preview", "-f"]);
                    let risk = if auto && prod {
                        75
                    } else if auto {
                        60
                    } else {
                        45
                    };
                    ctx.push(
                        "infrastructure.apply",
                        C,
                        risk,
                        "`pulumi up` changes real infrastructure. Review `pulumi preview` first."
                            .to_owned(),
                        &ev,
                    );
                }
                "stack" if words.get(1).copied() == Some("rm") => {
                    let risk = if prod { 90 } else { 60 };
                    ctx.push(
                        "infrastructure.destroy",
                        C,
                        risk,
                        "`pulumi stack rm` deletes a stack and its history.".to_owned(),
                        &ev,
                    );
                }
                "state" if words.get(1).copied() == Some("delete") => {
                    ctx.push(
                        "infrastructure.state_change",
                        C,
                        55,
                        "`pulumi state delete` edits the state by hand.".to_owned(),
                        &ev,
                    );
                }
                _ => {}
            }
        }
        "cdk" | "cdktf" => match words.first().copied() {
            Some("destroy") => ctx.push(
                "infrastructure.destroy",
                C,
                95,
                format!("`{name} destroy` deletes the stacks' resources."),
                &ev,
            ),
            Some("deploy") => ctx.push(
                "infrastructure.apply",
                C,
                if prod_words { 70 } else { 50 },
                format!("`{name} deploy` changes real infrastructure."),
                &ev,
            ),
            _ => {}
        },
        "serverless" | "sls" if words.first().copied() == Some("remove") => {
            ctx.push(
                "infrastructure.destroy",
                C,
                85,
                "`serverless remove` deletes the whole service stack.".to_owned(),
                &ev,
            );
        }
        _ => {}
    }
}
