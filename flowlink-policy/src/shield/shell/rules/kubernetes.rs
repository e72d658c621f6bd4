//! Kubernetes and Helm.

use super::super::Ctx;
use super::super::paths;
use super::super::walk::Cmd;
use super::opt_value;
use crate::shield::Category;

const C: Category = Category::Kubernetes;

pub(crate) fn check(ctx: &mut Ctx, cmd: &Cmd, name: &str) {
    let args = &cmd.args;
    let is_kubectl = matches!(
        name,
        "kubectl" | "oc" | "k" | "kubecolor" | "microk8s.kubectl"
    );
    if !is_kubectl && name != "helm" {
        return;
    }
    let context = opt_value(args, None, &["--context", "--kube-context"]).map(str::to_owned);
    let ns = opt_value(args, Some("-n"), &["--namespace"]).map(str::to_owned);
    let all_ns = args
        .iter()
        .any(|a| a.text == "-A" || a.text == "--all-namespaces");
    // positionals, skipping option values
    let mut pos: Vec<&str> = Vec::new();
    let mut k = 1;
    while k < args.len() {
        let t = args[k].text.as_str();
        if t.starts_with('-') {
            if !t.contains('=')
                && matches!(
                    t,
                    "-n" | "--namespace"
                        | "--context"
                        | "--kube-context"
                        | "--kubeconfig"
                        | "-l"
                        | "--selector"
                        | "-f"
                        | "--filename"
                        | "-o"
                        | "--output"
                        | "--cluster"
                        | "--user"
                        | "-c"
                        | "--container"
                        | "--timeout"
                        | "--grace-period"
                        | "--values"
                        | "--set"
                        | "--version"
                        | "-s"
                        | "--server"
                        | "--token"
                        | "--field-selector"
                )
            {
                k += 1;
            }
            k += 1;
            continue;
        }
        pos.push(t);
        k += 1;
    }
    let names: Vec<&str> = context
        .iter()
        .map(String::as_str)
        .chain(ns.iter().map(String::as_str))
        .collect();
    let prod = names.iter().any(|n| paths::is_production(ctx.cfg, n));
    let where_ = match (&context, &ns) {
        (Some(c), Some(n)) => format!(" (context `{c}`, namespace `{n}`)"),
        (Some(c), None) => format!(" (context `{c}`)"),
        (None, Some(n)) => format!(" (namespace `{n}`)"),
        (None, None) => " (current context)".to_owned(),
    };
    let ev = cmd.evidence();
    let verb = pos.first().copied().unwrap_or("");
    if name == "helm" {
        match verb {
            "uninstall" | "delete" | "del" | "un" => {
                let (risk, adv) = if prod {
                    (90, "Do not uninstall production releases from an agent.")
                } else {
                    (55, "Check the release and namespace.")
                };
                ctx.push("kubernetes.helm_uninstall", C, risk, format!("`helm {verb}` removes the release and all its Kubernetes resources{where_}. {adv}"), &ev);
            }
            "install" | "upgrade" | "rollback" if prod => {
                ctx.push(
                    "kubernetes.deploy_production",
                    C,
                    60,
                    format!("`helm {verb}` changes what runs in production{where_}."),
                    &ev,
                );
            }
            _ => {}
        }
        return;
    }
    match verb {
        "delete" => {
            let kind = pos.get(1).copied().unwrap_or("");
            let kinds: Vec<&str> = kind.split(',').collect();
            let (kind_name, inline_name) = kind.split_once('/').unwrap_or((kind, ""));
            if matches!(kind_name, "ns" | "namespace" | "namespaces") {
                let targets: Vec<&str> = if inline_name.is_empty() {
                    pos.iter().skip(2).copied().collect()
                } else {
                    vec![inline_name]
                };
                let all = args.iter().any(|a| a.text == "--all");
                if all {
                    ctx.push("kubernetes.delete_namespace", C, 95, format!("`kubectl delete namespace --all` deletes every namespace and everything in them{where_}. Do not run it."), &ev);
                }
                for t in targets {
                    let t = t.trim_start_matches("namespace/").trim_start_matches("ns/");
                    let (risk, adv) = if prod || paths::is_production(ctx.cfg, t) {
                        (95, "It is production: do not delete it from an agent.")
                    } else if paths::is_disposable(ctx.cfg, t) {
                        (45, "It looks disposable; check the name.")
                    } else {
                        (70, "Check it is the namespace you mean.")
                    };
                    ctx.push("kubernetes.delete_namespace", C, risk, format!("`kubectl delete namespace {t}` deletes the namespace and every workload, secret and volume claim in it{where_}. {adv}"), &ev);
                }
                return;
            }
            let all = args.iter().any(|a| a.text == "--all") || kinds.contains(&"all") || all_ns;
            if all {
                let risk = if prod { 95 } else { 70 };
                ctx.push("kubernetes.delete_all", C, risk, format!("`kubectl delete` with `--all`/`all`/`-A` deletes every matching resource{where_}, not one. Name the resources you mean."), &ev);
            } else {
                let names: Vec<&str> = pos
                    .iter()
                    .skip(2)
                    .copied()
                    .chain(std::iter::once(inline_name))
                    .collect();
                let prod_name = names.iter().any(|n| paths::is_production(ctx.cfg, n));
                let risk = if prod || prod_name { 75 } else { 45 };
                ctx.push(
                    "kubernetes.delete",
                    C,
                    risk,
                    format!("`kubectl delete` removes resources{where_}."),
                    &ev,
                );
            }
        }
        "drain" => {
            let risk = if prod { 85 } else { 55 };
            ctx.push("kubernetes.drain", C, risk, format!("`kubectl drain` evicts every pod from the node{where_}, interrupting what runs there."), &ev);
        }
        "scale"
            if args.iter().any(|a| a.text == "--replicas=0")
                || args
                    .windows(2)
                    .any(|w| w[0].text == "--replicas" && w[1].text == "0") =>
        {
            let risk = if prod { 85 } else { 50 };
            ctx.push("kubernetes.scale_to_zero", C, risk, format!("`kubectl scale --replicas=0` stops every pod of the workload{where_}; the service goes down."), &ev);
        }
        "apply" | "create" | "replace" | "patch" | "edit" | "set" | "rollout" | "label"
        | "annotate" | "taint" | "cordon" | "exec"
            if prod =>
        {
            let risk = if verb == "exec" { 50 } else { 60 };
            ctx.push("kubernetes.deploy_production", C, risk, format!("`kubectl {verb}` changes what runs in production{where_}; a person should agree."), &ev);
        }
        "replace" if args.iter().any(|a| a.text == "--force") => {
            ctx.push(
                "kubernetes.delete",
                C,
                50,
                "`kubectl replace --force` deletes and recreates resources.".to_owned(),
                &ev,
            );
        }
        _ => {}
    }
}
