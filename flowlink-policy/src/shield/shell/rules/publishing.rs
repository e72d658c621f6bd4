//! Publishing packages and deploying.

use super::super::Ctx;
use super::super::walk::Cmd;
use crate::shield::Category;

const C: Category = Category::Publishing;

pub(crate) fn check(ctx: &mut Ctx, cmd: &Cmd, name: &str) {
    let args = &cmd.args;
    if args
        .iter()
        .any(|a| a.text == "--dry-run" || a.text == "-n" && name == "cargo")
    {
        return;
    }
    let w: Vec<&str> = args
        .iter()
        .skip(1)
        .map(|a| a.text.as_str())
        .filter(|t| !t.starts_with('-'))
        .collect();
    let first = w.first().copied().unwrap_or("");
    let second = w.get(1).copied().unwrap_or("");
    let publish = match name {
        "npm" | "yarn" | "pnpm" | "bun" => {
            first == "publish"
                || first == "unpublish"
                || first == "deprecate"
                || (name == "yarn" && first == "npm" && second == "publish")
        }
        "cargo" => first == "publish",
        "twine" => first == "upload",
        "gem" => first == "push",
        "docker" | "podman" => {
            first == "push"
                || (first == "image" && second == "push")
                || (first == "buildx" && args.iter().any(|a| a.text == "--push"))
        }
        "mvn" | "mvnw" | "./mvnw" => w.contains(&"deploy"),
        "gradle" | "gradlew" => w.iter().any(|x| x.starts_with("publish")),
        "gh" => first == "release" && matches!(second, "create" | "upload" | "edit"),
        "poetry" | "flit" | "uv" | "hatch" | "pdm" => first == "publish",
        "dotnet" => first == "nuget" && second == "push",
        "nuget" => first == "push",
        "helm" => first == "push",
        "vsce" | "ovsx" => first == "publish",
        "pod" => first == "trunk" && second == "push",
        "swift" => false,
        _ => false,
    };
    if publish {
        ctx.push("publishing.publish", C, 55, format!("`{name} {first}` publishes a package or image for everyone; published versions usually cannot be taken back. Check the version and contents, then publish by hand or with approval."), &cmd.evidence());
        return;
    }
    let deploy = match name {
        "vercel" => {
            args.iter()
                .any(|a| a.text == "--prod" || a.text == "--production")
                || first == "deploy" && args.iter().any(|a| a.text == "--prod")
        }
        "netlify" => first == "deploy" && args.iter().any(|a| a.text == "--prod"),
        "fly" | "flyctl" => first == "deploy",
        "firebase" => first == "deploy",
        "heroku" => first == "releases:rollback" || first == "apps:destroy",
        "eb" => first == "deploy" || first == "terminate",
        "gcloud" => w.contains(&"deploy"),
        "wrangler" => first == "deploy" || first == "publish",
        "railway" => first == "up",
        "kamal" | "cap" => first == "deploy" || second == "deploy",
        _ => false,
    };
    if deploy {
        ctx.push(
            "publishing.deploy",
            C,
            55,
            format!("`{name} {first}` deploys to a live environment. A person should agree."),
            &cmd.evidence(),
        );
    }
}
