//! Docker, Podman, nerdctl.

use super::super::Ctx;
use super::super::walk::Cmd;
use crate::shield::Category;

const C: Category = Category::Container;

pub(crate) fn check(ctx: &mut Ctx, cmd: &Cmd, name: &str) {
    if !matches!(name, "docker" | "podman" | "nerdctl" | "docker-compose") {
        return;
    }
    let args = &cmd.args;
    let words: Vec<&str> = args
        .iter()
        .skip(1)
        .map(|a| a.text.as_str())
        .filter(|t| !t.starts_with('-'))
        .collect();
    let has = |s: &[&str]| args.iter().any(|a| s.contains(&a.text.as_str()));
    let ev = cmd.evidence();
    let w = |i: usize| words.get(i).copied().unwrap_or("");
    let (sub, sub2) = if name == "docker-compose" {
        ("compose", w(0))
    } else {
        (w(0), w(1))
    };
    match (sub, sub2) {
        ("system", "prune") => {
            let all = has(&["-a", "--all", "-af", "-fa"]);
            let vols = has(&["--volumes"]);
            let risk = if vols {
                65
            } else if all {
                60
            } else {
                40
            };
            ctx.push("container.prune", C, risk, format!("`{name} system prune`{} deletes stopped containers, unused networks and images{}. Prune the specific things you mean.", if all { " -a" } else { "" }, if vols { " and volumes (their data)" } else { "" }), &ev);
        }
        ("volume", "prune") | ("volume", "rm") => {
            let prod = words.iter().skip(2).any(|v| {
                crate::shield::shell::paths::is_production(ctx.cfg, v)
                    || v.split(['_', '-'])
                        .any(|p| crate::shield::shell::paths::is_production(ctx.cfg, p))
            });
            ctx.push(
                "container.delete_volume",
                C,
                if prod { 85 } else { 55 },
                "This deletes container volumes and the data in them.".to_owned(),
                &ev,
            );
        }
        ("compose", "down") if has(&["-v", "--volumes"]) => {
            ctx.push(
                "container.delete_volume",
                C,
                50,
                "`compose down -v` deletes the project's volumes and their data.".to_owned(),
                &ev,
            );
        }
        ("rm", _) | ("container", "rm") if has(&["-f", "--force"]) => {
            ctx.push(
                "container.force_remove",
                C,
                45,
                "`docker rm -f` kills and deletes running containers.".to_owned(),
                &ev,
            );
        }
        ("run", _)
        | ("create", _)
        | ("container", "run")
        | ("container", "create")
        | ("exec", _) => {
            let privileged = has(&["--privileged"]);
            let pid_host = has(&["--pid=host"])
                || args
                    .windows(2)
                    .any(|p| p[0].text == "--pid" && p[1].text == "host");
            let mut root_mount = false;
            let mut sock_mount = false;
            for (i, a) in args.iter().enumerate() {
                let t = a.text.as_str();
                let spec: Option<&str> = if t == "-v" || t == "--volume" || t == "--mount" {
                    args.get(i + 1).map(|n| n.text.as_str())
                } else {
                    t.strip_prefix("--volume=")
                        .or_else(|| t.strip_prefix("--mount="))
                        .or_else(|| t.strip_prefix("-v"))
                };
                if let Some(s) = spec {
                    let src = if s.contains("source=") || s.contains("src=") {
                        s.split(',')
                            .find_map(|kv| {
                                kv.strip_prefix("source=")
                                    .or_else(|| kv.strip_prefix("src="))
                            })
                            .unwrap_or("")
                    } else {
                        s.split(':').next().unwrap_or("")
                    };
                    let src = src.trim_end_matches('/');
                    if src.is_empty() && s.starts_with('/')
                        || matches!(
                            src,
                            "/etc"
                                | "/root"
                                | "/boot"
                                | "/usr"
                                | "/var"
                                | "/home"
                                | "/proc"
                                | "/sys"
                                | "/dev"
                        )
                        || src == "~"
                    {
                        root_mount = true;
                    }
                    if src.ends_with("docker.sock") {
                        sock_mount = true;
                    }
                }
            }
            if root_mount {
                ctx.push("container.mount_host_root", C, 85, "This mounts the host's root filesystem (or a system directory) into the container, giving it full control of the host's files. Mount only the project directory.".to_owned(), &ev);
            }
            if privileged && pid_host {
                ctx.push("container.privileged", C, 85, "`--privileged --pid=host` gives the container full control of the host (it can enter any host process). Drop both.".to_owned(), &ev);
            } else if privileged {
                ctx.push("container.privileged", C, 70, "`--privileged` gives the container all host devices and capabilities; it can take over the host. Add only the capabilities needed.".to_owned(), &ev);
            } else if pid_host {
                ctx.push(
                    "container.host_namespace",
                    C,
                    65,
                    "`--pid=host` lets the container see and signal every host process.".to_owned(),
                    &ev,
                );
            }
            if sock_mount {
                ctx.push("container.docker_socket", C, 70, "Mounting the Docker socket gives the container control of Docker, and through it of the host.".to_owned(), &ev);
            }
            if has(&[
                "--net=host",
                "--network=host",
                "--cap-add=ALL",
                "--cap-add=SYS_ADMIN",
                "--security-opt=apparmor=unconfined",
                "--security-opt=seccomp=unconfined",
            ]) {
                ctx.push("container.weakened_isolation", C, 45, "This weakens the container's isolation from the host (host network, extra capabilities or no seccomp/AppArmor).".to_owned(), &ev);
            }
        }
        _ => {}
    }
}
