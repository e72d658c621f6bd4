//! AWS, Google Cloud and Azure command lines.

use super::super::Ctx;
use super::super::paths;
use super::super::walk::Cmd;
use crate::shield::Category;

const C: Category = Category::Cloud;

const VALUED: &[&str] = &[
    "--region",
    "--profile",
    "--output",
    "--endpoint-url",
    "--query",
    "--color",
    "--ca-bundle",
    "--cli-read-timeout",
    "--cli-connect-timeout",
    "--project",
    "--zone",
    "--account",
    "--configuration",
    "--format",
    "--subscription",
    "-g",
    "--resource-group",
    "-n",
    "--name",
    "--location",
    "-l",
    "-o",
];

pub(crate) fn check(ctx: &mut Ctx, cmd: &Cmd, name: &str) {
    if !matches!(name, "aws" | "gcloud" | "az" | "gsutil" | "doctl" | "s3cmd") {
        return;
    }
    let args = &cmd.args;
    // words, skipping the values of options that take one
    let mut words: Vec<&str> = Vec::new();
    let mut k = 1;
    while k < args.len() {
        let t = args[k].text.as_str();
        if t.starts_with('-') {
            if !t.contains('=') && VALUED.contains(&t) {
                k += 1;
            }
        } else {
            words.push(t);
        }
        k += 1;
    }
    let has = |s: &[&str]| {
        args.iter().any(|a| {
            s.contains(&a.text.as_str()) || s.iter().any(|x| a.text.starts_with(&format!("{x}=")))
        })
    };
    let prod = args.iter().skip(1).any(|a| {
        let t = a
            .text
            .trim_start_matches("s3://")
            .trim_start_matches("gs://")
            .trim_start_matches('-');
        let v = t.split_once('=').map(|(_, v)| v).unwrap_or(t);
        paths::is_production(ctx.cfg, v)
            || v.split(['/', ':', '.'])
                .any(|p| paths::is_production(ctx.cfg, p))
    });
    let ev = cmd.evidence();
    let push = |ctx: &mut Ctx, id: &'static str, base: u8, what: String| {
        let risk = if prod { base.max(90) } else { base };
        let adv = if prod {
            "It names a production resource: do not do this from an agent."
        } else {
            "Check the resource name and account."
        };
        ctx.push(id, C, risk, format!("{what}. {adv}"), &ev);
    };
    let w = |i: usize| words.get(i).copied().unwrap_or("");
    match name {
        "aws" => {
            let (svc, op) = (w(0), w(1));
            match (svc, op) {
                ("s3", "rm") if has(&["--recursive"]) => push(
                    ctx,
                    "cloud.s3_delete",
                    75,
                    "`aws s3 rm --recursive` deletes every object under the prefix".to_owned(),
                ),
                ("s3", "rm") => push(
                    ctx,
                    "cloud.s3_delete",
                    45,
                    "`aws s3 rm` deletes an object".to_owned(),
                ),
                ("s3", "rb") => push(
                    ctx,
                    "cloud.s3_delete",
                    if has(&["--force"]) { 75 } else { 60 },
                    "`aws s3 rb` deletes the bucket (with --force, all its objects first)"
                        .to_owned(),
                ),
                ("s3", "sync") if has(&["--delete"]) => push(
                    ctx,
                    "cloud.s3_delete",
                    55,
                    "`aws s3 sync --delete` deletes destination objects missing from the source"
                        .to_owned(),
                ),
                ("s3api", op) if op.starts_with("delete-") => push(
                    ctx,
                    "cloud.delete",
                    60,
                    format!("`aws s3api {op}` deletes data or configuration"),
                ),
                ("ec2", "terminate-instances") => push(
                    ctx,
                    "cloud.terminate_instances",
                    70,
                    "`aws ec2 terminate-instances` destroys the instances and their local disks"
                        .to_owned(),
                ),
                ("rds", op) if op.starts_with("delete-db") => {
                    let base = if has(&["--skip-final-snapshot"]) {
                        85
                    } else {
                        75
                    };
                    push(
                        ctx,
                        "cloud.delete_database",
                        base,
                        format!(
                            "`aws rds {op}` deletes a database{}",
                            if base == 85 {
                                " without a final snapshot"
                            } else {
                                ""
                            }
                        ),
                    )
                }
                ("dynamodb", "delete-table") => push(
                    ctx,
                    "cloud.delete_database",
                    75,
                    "`aws dynamodb delete-table` deletes the table and all its data".to_owned(),
                ),
                ("iam", op)
                    if [
                        "create-", "delete-", "attach-", "detach-", "put-", "update-", "add-",
                        "remove-", "set-", "upload-", "tag-",
                    ]
                    .iter()
                    .any(|p| op.starts_with(p)) =>
                {
                    let base = if op.contains("access-key")
                        || op.contains("admin")
                        || op.contains("policy")
                    {
                        70
                    } else {
                        65
                    };
                    push(
                        ctx,
                        "cloud.iam_change",
                        base,
                        format!("`aws iam {op}` changes who can do what in the account"),
                    )
                }
                ("s3", "sync") | ("s3", "cp") if prod && words.iter().any(|x| x.starts_with("s3://")) && !words.get(2).is_some_and(|x| x.starts_with("s3://") && words.len() == 4) => {
                    ctx.push("publishing.deploy", Category::Publishing, 55, "This uploads to a production bucket, changing what is live.".to_owned(), &ev)
                }
                ("lambda", op) if op.starts_with("update-function") || op == "publish-version" || op == "update-alias" => {
                    ctx.push("publishing.deploy", Category::Publishing, 50, format!("`aws lambda {op}` changes the code or configuration a live function runs."), &ev)
                }
                ("ecs", "update-service") | ("ecs", "deploy") | ("elasticbeanstalk", "update-environment") | ("apprunner", "start-deployment") => {
                    ctx.push("publishing.deploy", Category::Publishing, 50, format!("`aws {svc} {op}` deploys to a live service."), &ev)
                }
                ("cloudformation", "delete-stack") => push(
                    ctx,
                    "cloud.delete",
                    75,
                    "`aws cloudformation delete-stack` deletes every resource in the stack"
                        .to_owned(),
                ),
                (svc, op)
                    if [
                        "delete-",
                        "terminate-",
                        "remove-",
                        "deregister-",
                        "purge-",
                        "destroy-",
                    ]
                    .iter()
                    .any(|p| op.starts_with(p)) =>
                {
                    push(
                        ctx,
                        "cloud.delete",
                        60,
                        format!("`aws {svc} {op}` deletes cloud resources"),
                    )
                }
                _ => {}
            }
        }
        "gcloud" => {
            if w(0) == "storage"
                && matches!(w(1), "rm" | "buckets")
                && (has(&["-r", "-R", "--recursive"])
                    || w(2) == "delete"
                    || args.iter().any(|a| a.text.contains("**")))
            {
                push(
                    ctx,
                    "cloud.storage_delete",
                    75,
                    "`gcloud storage rm -r` deletes a bucket's objects recursively (or the bucket)"
                        .to_owned(),
                );
            } else if w(0) == "projects" && w(1) == "delete" {
                ctx.push("cloud.delete_project", C, 95, "`gcloud projects delete` shuts down the whole project and everything in it. Do not run it from an agent.".to_owned(), &ev);
            } else if words.iter().any(|x| {
                matches!(
                    *x,
                    "delete"
                        | "remove-iam-policy-binding"
                        | "add-iam-policy-binding"
                        | "set-iam-policy"
                )
            }) {
                let iam = words.iter().any(|x| x.contains("iam-policy"));
                let id = if iam {
                    "cloud.iam_change"
                } else {
                    "cloud.delete"
                };
                push(
                    ctx,
                    id,
                    65,
                    format!(
                        "`gcloud {}` {}",
                        words.iter().take(4).copied().collect::<Vec<_>>().join(" "),
                        if iam {
                            "changes who can do what"
                        } else {
                            "deletes cloud resources"
                        }
                    ),
                );
            }
        }
        "gsutil" => {
            if words.contains(&"rm")
                && (has(&["-r", "-R", "-a"]) || args.iter().any(|a| a.text.contains("**")))
                || words.contains(&"rb")
            {
                push(
                    ctx,
                    "cloud.storage_delete",
                    75,
                    "`gsutil rm -r`/`rb` deletes a bucket or every object under the prefix"
                        .to_owned(),
                );
            }
        }
        "s3cmd"
            if words
                .first()
                .is_some_and(|x| matches!(*x, "del" | "rm" | "rb")) =>
        {
            push(
                ctx,
                "cloud.s3_delete",
                60,
                "`s3cmd` here deletes objects or buckets".to_owned(),
            );
        }
        "az" => {
            if w(0) == "group" && w(1) == "delete" {
                let group =
                    super::opt_value(args, Some("-n"), &["--name", "--resource-group", "-g"])
                        .unwrap_or("");
                let risk = if paths::is_disposable(ctx.cfg, group) {
                    60
                } else {
                    90
                };
                ctx.push("cloud.delete_resource_group", C, risk, "`az group delete` deletes the resource group and every resource in it. Do not run it from an agent.".to_owned(), &ev);
            } else if words.iter().any(|x| *x == "delete" || *x == "purge") {
                push(
                    ctx,
                    "cloud.delete",
                    65,
                    format!(
                        "`az {}` deletes cloud resources",
                        words.iter().take(3).copied().collect::<Vec<_>>().join(" ")
                    ),
                );
            } else if w(0) == "role"
                && matches!(w(1), "assignment" | "definition")
                && matches!(w(2), "create" | "update")
            {
                push(
                    ctx,
                    "cloud.iam_change",
                    65,
                    "`az role` changes who can do what".to_owned(),
                );
            }
        }
        "doctl" if words.iter().any(|x| matches!(*x, "delete" | "rm" | "d")) => {
            push(
                ctx,
                "cloud.delete",
                65,
                "`doctl … delete` deletes cloud resources".to_owned(),
            );
        }
        _ => {}
    }
}
