//! The operating system: shutdown, users, firewalls, logs, history, persistence, privilege.

use super::super::Ctx;
use super::super::paths;
use super::super::walk::Cmd;
use super::super::words::Arg;
use super::positionals;
use crate::shield::Category;

const C: Category = Category::System;

/// A file whose modification is a system finding of its own.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Special {
    Auth,
    History,
    Logs,
    Persistence,
}

pub(crate) fn special_file(norm: &str) -> Option<Special> {
    let h = paths::homeify(norm);
    if matches!(
        norm,
        "/etc/passwd"
            | "/etc/shadow"
            | "/etc/sudoers"
            | "/etc/group"
            | "/etc/gshadow"
            | "/etc/pam.conf"
    ) || norm.starts_with("/etc/sudoers.d/")
        || norm.starts_with("/etc/pam.d/")
    {
        return Some(Special::Auth);
    }
    let base = h.rsplit('/').next().unwrap_or("");
    if h.starts_with("~/")
        && matches!(
            base,
            ".bash_history"
                | ".zsh_history"
                | ".history"
                | ".sh_history"
                | ".python_history"
                | ".psql_history"
                | ".mysql_history"
                | ".node_repl_history"
        )
        && h.matches('/').count() == 1
    {
        return Some(Special::History);
    }
    if norm.starts_with("/var/log/")
        || norm == "/var/log"
        || norm.starts_with("/var/audit")
        || norm == "/var/log/*"
    {
        return Some(Special::Logs);
    }
    if matches!(
        h.as_str(),
        "~/.bashrc"
            | "~/.bash_profile"
            | "~/.bash_login"
            | "~/.profile"
            | "~/.zshrc"
            | "~/.zprofile"
            | "~/.zshenv"
            | "~/.zlogin"
            | "~/.ssh/authorized_keys"
            | "~/.ssh/authorized_keys2"
            | "~/.config/fish/config.fish"
            | "~/.xprofile"
            | "~/.xinitrc"
    ) || h.starts_with("~/.config/autostart/")
        || h.starts_with("~/Library/LaunchAgents/")
        || h.starts_with("~/.config/systemd/user/")
        || norm.starts_with("/etc/cron")
        || norm.starts_with("/var/spool/cron")
        || norm.starts_with("/etc/systemd/system/")
        || norm.starts_with("/etc/init.d/")
        || norm.starts_with("/etc/profile")
        || norm == "/etc/rc.local"
        || norm == "/etc/bash.bashrc"
        || norm == "/etc/ld.so.preload"
        || norm.starts_with("/Library/LaunchDaemons/")
        || norm.starts_with("/Library/LaunchAgents/")
    {
        return Some(Special::Persistence);
    }
    None
}

pub(crate) fn special_file_finding(ctx: &mut Ctx, w: Special, norm: &str, ev: &str, verb: &str) {
    let (id, risk, text) = match w {
        Special::Auth => (
            "system.edit_auth_files",
            95,
            format!(
                "This would {verb} `{norm}`, which controls accounts, passwords or sudo rights; a mistake locks everyone out or grants root. Use `useradd`/`visudo` by hand instead."
            ),
        ),
        Special::History => (
            "system.clear_history",
            85,
            format!(
                "This would {verb} the shell history `{norm}`, erasing the record of what was run. Leave history alone."
            ),
        ),
        Special::Logs => (
            "system.clear_logs",
            85,
            format!(
                "This would {verb} the system log `{norm}`, destroying the audit trail. Use log rotation (`logrotate`, `journalctl --vacuum-time`) instead."
            ),
        ),
        Special::Persistence => (
            "system.persistence",
            85,
            format!(
                "This would {verb} `{norm}`, which runs automatically at login, boot or on a schedule (or grants SSH access); it is how malware persists. Make the change by hand if you really need it."
            ),
        ),
    };
    ctx.push(id, C, risk, text, ev);
}

/// `VAR=value` before a command or via `env`/`export`.
pub(crate) fn assignment(ctx: &mut Ctx, name: &str, value: &Arg, cmd: &Cmd) {
    let v = value.text.as_str();
    let bad = match name {
        "HISTFILE" => v.is_empty() || v == "/dev/null",
        "HISTSIZE" | "HISTFILESIZE" | "SAVEHIST" => v == "0" || v.is_empty(),
        "LD_PRELOAD" => {
            ctx.push("system.ld_preload", C, 70, "`LD_PRELOAD` injects a library into every program started; it is used to hijack programs. Make sure the library is yours.".to_owned(), &cmd.evidence());
            false
        }
        _ => false,
    };
    if bad {
        ctx.push("system.clear_history", C, 80, format!("`{name}={v}` turns off shell history so what runs next leaves no record. Leave history on."), &cmd.evidence());
    }
}

pub(crate) fn sudo(ctx: &mut Ctx, cmd: &Cmd, name: &str) {
    ctx.push("system.sudo", C, 50, format!("This runs `{name}` as root (sudo): anything it does bypasses file permissions. Check the command, or run it without sudo."), &cmd.evidence());
}

const SECURITY_SERVICES: &[&str] = &[
    "firewalld",
    "ufw",
    "iptables",
    "ip6tables",
    "nftables",
    "apparmor",
    "auditd",
    "selinux",
    "fail2ban",
    "clamav",
    "clamd",
    "falcon-sensor",
    "osqueryd",
    "wazuh-agent",
    "crowdstrike",
    "sshguard",
    "csf",
    "lfd",
    "pf",
];

pub(crate) fn check(ctx: &mut Ctx, cmd: &Cmd, name: &str) {
    let args = &cmd.args;
    let t = |i: usize| args.get(i).map(|a| a.text.as_str()).unwrap_or("");
    let ev = || cmd.evidence();
    match name {
        "shutdown" | "reboot" | "halt" | "poweroff" => {
            if !args.iter().any(|a| a.text == "-c" || a.text == "--help") {
                ctx.push("system.shutdown", C, 85, format!("`{name}` stops or restarts the machine, ending every running service and session. Ask the operator to do it."), &ev());
            }
        }
        "init" | "telinit" if matches!(t(1), "0" | "6" | "1" | "s" | "S") => {
            ctx.push(
                "system.shutdown",
                C,
                85,
                format!(
                    "`{name} {}` halts, reboots or drops the machine to single-user mode.",
                    t(1)
                ),
                &ev(),
            );
        }
        "systemctl" | "service" | "launchctl" | "rc-service" => {
            let words: Vec<&str> = args
                .iter()
                .skip(1)
                .map(|a| a.text.as_str())
                .filter(|a| !a.starts_with('-'))
                .collect();
            let verb = if name == "service" {
                words.get(1).copied().unwrap_or("")
            } else {
                words.first().copied().unwrap_or("")
            };
            let units: Vec<&str> = if name == "service" {
                words.first().copied().into_iter().collect()
            } else {
                words.iter().skip(1).copied().collect()
            };
            if matches!(
                verb,
                "poweroff" | "reboot" | "halt" | "kexec" | "rescue" | "emergency"
            ) {
                ctx.push(
                    "system.shutdown",
                    C,
                    85,
                    format!("`{name} {verb}` stops or restarts the machine."),
                    &ev(),
                );
            }
            if matches!(
                verb,
                "stop" | "disable" | "mask" | "kill" | "unload" | "bootout"
            ) {
                for u in &units {
                    let u = u.trim_end_matches(".service");
                    if SECURITY_SERVICES.contains(&u) {
                        ctx.push("system.disable_security", C, 90, format!("`{name} {verb} {u}` turns off a firewall or security service, exposing the machine. Change its rules instead."), &ev());
                    }
                }
            }
            if matches!(verb, "enable" | "load" | "bootstrap") && name != "service" {
                ctx.push("system.persistence", C, 80, format!("`{name} {verb}` makes a service start automatically at every boot (persistence). Enable services by hand."), &ev());
            }
        }
        "ufw"
            if args
                .iter()
                .any(|a| a.text == "disable" || a.text == "reset") =>
        {
            ctx.push(
                "system.disable_security",
                C,
                90,
                format!(
                    "`ufw {}` turns the firewall off. Change its rules instead.",
                    if args.iter().any(|a| a.text == "reset") {
                        "reset"
                    } else {
                        "disable"
                    }
                ),
                &ev(),
            );
        }
        "iptables" | "ip6tables" | "nft" | "pfctl" => {
            let flush = args
                .iter()
                .any(|a| matches!(a.text.as_str(), "-F" | "--flush" | "-X" | "flush" | "-d"))
                || args
                    .windows(3)
                    .any(|w| w[0].text == "-P" && w[2].text == "ACCEPT");
            if flush {
                ctx.push("system.disable_security", C, 85, format!("`{name}` here removes firewall rules or opens the default policy, exposing every port. Remove the specific rule instead."), &ev());
            }
        }
        "setenforce" if matches!(t(1), "0" | "Permissive" | "permissive") => {
            ctx.push(
                "system.disable_security",
                C,
                90,
                "`setenforce 0` turns SELinux enforcement off. Fix the policy instead.".to_owned(),
                &ev(),
            );
        }
        "auditctl"
            if args.iter().any(|a| a.text == "-D")
                || args
                    .windows(2)
                    .any(|w| w[0].text == "-e" && w[1].text == "0") =>
        {
            ctx.push("system.disable_security", C, 90, "`auditctl` here deletes the audit rules or turns auditing off, hiding what happens next.".to_owned(), &ev());
        }
        "spctl" | "csrutil"
            if args.iter().any(|a| {
                a.text == "--master-disable" || a.text == "disable" || a.text == "--global-disable"
            }) =>
        {
            ctx.push(
                "system.disable_security",
                C,
                90,
                format!(
                    "`{name}` here turns off macOS code-signing / system integrity protection."
                ),
                &ev(),
            );
        }
        "crontab" => {
            let f: Vec<&str> = args.iter().skip(1).map(|a| a.text.as_str()).collect();
            if f.iter()
                .any(|a| a.starts_with('-') && a.contains('r') && !a.starts_with("--"))
            {
                ctx.push("system.crontab_remove", C, 85, "`crontab -r` deletes all of this user's scheduled jobs with no confirmation and no backup. Edit with `crontab -e` instead.".to_owned(), &ev());
            } else if f.contains(&"-e") {
                ctx.push(
                    "system.persistence",
                    C,
                    60,
                    "`crontab -e` edits scheduled jobs.".to_owned(),
                    &ev(),
                );
            } else if !f.contains(&"-l") && !f.is_empty()
                || matches!(
                    cmd.stdin,
                    super::super::walk::Stdin::Pipe(_) | super::super::walk::Stdin::Here(_)
                )
            {
                ctx.push("system.persistence", C, 85, "This installs a crontab: commands that run on a schedule, without anyone present (persistence). Add scheduled jobs by hand.".to_owned(), &ev());
            }
        }
        "userdel" | "deluser" | "groupdel" | "delgroup" => {
            ctx.push("system.delete_user", C, 85, format!("`{name}` deletes an account (and with -r its home directory). Ask an administrator."), &ev());
        }
        "useradd" | "adduser" | "usermod" | "passwd" | "chpasswd" | "gpasswd" | "dscl"
        | "sysadminctl"
            if args.windows(2).any(|w| {
                matches!(w[0].text.as_str(), "-u" | "--uid" | "-g" | "--gid") && w[1].text == "0"
            }) || args
                .iter()
                .any(|a| a.text == "-o" || a.text == "--non-unique")
                || (name == "passwd"
                    && args.iter().any(|a| {
                        matches!(a.text.as_str(), "-d" | "--delete" | "-u" | "--unlock")
                    }))
                || ((name == "usermod" || name == "gpasswd" || name == "adduser")
                    && args.iter().any(|a| {
                        a.text.split(',').any(|g| {
                            matches!(g, "sudo" | "wheel" | "admin" | "root" | "docker" | "adm")
                        })
                    })) =>
        {
            ctx.push("system.privilege_escalation", C, 90, format!("`{name}` here creates a root-equivalent account, removes a password or adds a user to an admin group: a backdoor. Ask an administrator."), &ev());
        }
        "useradd" | "adduser" | "usermod" | "passwd" | "chpasswd" | "gpasswd" | "dscl"
        | "sysadminctl" => {
            ctx.push(
                "system.accounts",
                C,
                65,
                format!("`{name}` creates or changes user accounts or passwords."),
                &ev(),
            );
        }
        "visudo" | "vipw" | "vigr" => {
            ctx.push(
                "system.edit_auth_files",
                C,
                70,
                format!("`{name}` edits the sudo rules or account files."),
                &ev(),
            );
        }
        "history"
            if args
                .iter()
                .any(|a| a.text == "-c" || a.text == "-w" && args.len() > 2) =>
        {
            ctx.push("system.clear_history", C, 80, "`history -c` clears the shell history, erasing the record of what was run. Leave history alone.".to_owned(), &ev());
        }
        "unset" if args.iter().any(|a| a.text == "HISTFILE") => {
            ctx.push("system.clear_history", C, 80, "`unset HISTFILE` stops the shell from saving history, so what runs next leaves no record.".to_owned(), &ev());
        }
        "export" | "declare" | "typeset" | "readonly" | "set" => {
            for a in args.iter().skip(1) {
                if let Some((k, v)) = a.text.split_once('=') {
                    assignment(ctx, k, &Arg::lit(v), cmd);
                }
            }
            if name == "set"
                && args.iter().any(|a| a.text == "+o")
                && args.iter().any(|a| a.text == "history")
            {
                ctx.push(
                    "system.clear_history",
                    C,
                    80,
                    "`set +o history` stops recording shell history.".to_owned(),
                    &ev(),
                );
            }
        }
        "kill" | "pkill" | "killall" => {
            if name == "kill" {
                let pos: Vec<&str> = args.iter().skip(1).map(|a| a.text.as_str()).collect();
                let mut targets = Vec::new();
                let mut k = 0;
                while k < pos.len() {
                    let a = pos[k];
                    if a == "-s" || a == "-n" {
                        k += 2;
                        continue;
                    }
                    if k == 0 && a.starts_with('-') && a != "-1" {
                        k += 1;
                        continue;
                    }
                    if k == 0 && a == "-1" && pos.len() > 1 {
                        // `kill -1 PID` is SIGHUP
                        k += 1;
                        continue;
                    }
                    targets.push(a);
                    k += 1;
                }
                if targets.iter().any(|t| *t == "1" || *t == "-1") {
                    ctx.push("system.kill_all", C, 90, "This kills init (PID 1) or every process you can signal (`-1`), which takes the machine or your session down. Kill the specific process instead.".to_owned(), &ev());
                }
            } else if args.iter().any(|a| {
                matches!(
                    a.text.as_str(),
                    "-u" | "root" | "init" | "systemd" | "sshd" | "-1"
                )
            }) && args.len() <= 4
            {
                ctx.push(
                    "system.kill_all",
                    C,
                    70,
                    format!("`{name}` here kills system or all-user processes."),
                    &ev(),
                );
            }
        }
        "journalctl"
            if args
                .iter()
                .any(|a| a.text.starts_with("--vacuum") || a.text == "--rotate") =>
        {
            ctx.push(
                "system.clear_logs",
                C,
                80,
                "`journalctl --vacuum`/`--rotate` deletes system logs, destroying the audit trail. Leave log retention to the operator.".to_owned(),
                &ev(),
            );
        }
        "insmod" | "rmmod" | "modprobe" | "kextload" => {
            ctx.push("system.kernel_module", C, 65, format!("`{name}` loads or unloads a kernel module, code that runs with full control of the machine."), &ev());
        }
        "su" => {
            ctx.push(
                "system.sudo",
                C,
                55,
                "`su` switches to another user (root by default).".to_owned(),
                &ev(),
            );
        }
        "mount" | "umount" if args.len() > 1 && !args.iter().any(|a| a.text == "-l") => {
            ctx.push(
                "system.mount",
                C,
                45,
                format!("`{name}` changes what filesystems are attached."),
                &ev(),
            );
        }
        "sysctl" if args.iter().any(|a| a.text == "-w" || a.text.contains('=')) => {
            ctx.push(
                "system.kernel_settings",
                C,
                55,
                "`sysctl -w` changes kernel settings for the whole machine.".to_owned(),
                &ev(),
            );
        }
        "security" => {
            if matches!(
                t(1),
                "delete-keychain" | "delete-generic-password" | "delete-internet-password"
            ) {
                ctx.push(
                    "system.keychain",
                    C,
                    70,
                    "This deletes keychain entries.".to_owned(),
                    &ev(),
                );
            }
        }
        _ => {}
    }
    let _ = positionals(args);
}
