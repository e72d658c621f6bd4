//! `flowlink-control`: the command line. Parsing and printing only; the work is in the library.

use std::collections::BTreeMap;
use std::io::BufRead;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};
use flowlink_control::api::AppState;
use flowlink_control::auth::secret::random_token;
use flowlink_control::auth::{PermissionSet, Role, password};
use flowlink_control::config::{Config, Layers, SETTINGS, markdown};
use flowlink_control::server::{self, Server};
use flowlink_control::store::{AuditEvent, Store};

/// FlowLink's control plane: organisations, people, policies, the approval queue and the audit
/// trail, served over HTTP(S).
#[derive(Parser, Debug)]
#[command(name = "flowlink-control", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the server (embedded SQLite in the data directory unless --database-url is given).
    Serve(Settings),
    /// Apply pending database migrations and exit (also done by `serve` at start).
    Migrate {
        #[command(flatten)]
        settings: Settings,
        /// Only show which migrations are applied and which this binary has.
        #[arg(long)]
        status: bool,
    },
    /// Administration without the web UI (scripts, recovery).
    Admin {
        #[command(flatten)]
        settings: Settings,
        #[command(subcommand)]
        command: AdminCommand,
    },
    /// Print CONFIG.md, the reference of every setting.
    ConfigDocs,
    /// Zero-trust secrets over the API, run on your machine: values are sealed here and private
    /// keys never leave it.
    Secrets(flowlink_control::cli::secrets::SecretsArgs),
}

/// Settings given as flags (see CONFIG.md); each also has a TOML key and an environment variable.
#[derive(Args, Debug, Default)]
struct Settings {
    /// TOML configuration file.
    #[arg(long, env = "FLOWLINK_CONFIG", global = true)]
    config: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1:8080].
    #[arg(long, global = true)]
    listen: Option<String>,
    /// Data directory (embedded database, first-run token).
    #[arg(long, global = true)]
    data_dir: Option<String>,
    /// Database URL: sqlite://PATH or postgres://USER@HOST/DB.
    #[arg(long, global = true)]
    database_url: Option<String>,
    /// URL people and proxies use to reach this server.
    #[arg(long, global = true)]
    public_url: Option<String>,
    /// PEM certificate chain (HTTPS).
    #[arg(long, global = true)]
    tls_cert: Option<String>,
    /// PEM private key (HTTPS).
    #[arg(long, global = true)]
    tls_key: Option<String>,
    /// Comma-separated IPs/CIDRs of trusted reverse proxies.
    #[arg(long, global = true)]
    trusted_proxies: Option<String>,
    /// Idle timeout of browser sessions, seconds.
    #[arg(long, global = true)]
    session_idle_timeout_secs: Option<String>,
    /// Absolute timeout of browser sessions, seconds.
    #[arg(long, global = true)]
    session_absolute_timeout_secs: Option<String>,
    /// Failed sign-ins before an account locks.
    #[arg(long, global = true)]
    login_max_failures: Option<String>,
    /// Lockout duration, seconds.
    #[arg(long, global = true)]
    login_lockout_secs: Option<String>,
    /// Sign-in attempts per minute per client address.
    #[arg(long, global = true)]
    login_attempts_per_minute_per_ip: Option<String>,
    /// Seconds between heartbeats on proxy links.
    #[arg(long, global = true)]
    link_heartbeat_secs: Option<String>,
    /// Log filter.
    #[arg(long, global = true)]
    log: Option<String>,
}

impl Settings {
    fn layers(&self) -> Layers {
        let given = [
            ("listen", &self.listen),
            ("data_dir", &self.data_dir),
            ("database_url", &self.database_url),
            ("public_url", &self.public_url),
            ("tls_cert", &self.tls_cert),
            ("tls_key", &self.tls_key),
            ("trusted_proxies", &self.trusted_proxies),
            ("session_idle_timeout_secs", &self.session_idle_timeout_secs),
            (
                "session_absolute_timeout_secs",
                &self.session_absolute_timeout_secs,
            ),
            ("login_max_failures", &self.login_max_failures),
            ("login_lockout_secs", &self.login_lockout_secs),
            (
                "login_attempts_per_minute_per_ip",
                &self.login_attempts_per_minute_per_ip,
            ),
            ("link_heartbeat_secs", &self.link_heartbeat_secs),
            ("log", &self.log),
        ];
        let mut flags = BTreeMap::new();
        for (key, value) in given {
            if let (Some(setting), Some(v)) = (SETTINGS.iter().find(|s| s.key == key), value) {
                flags.insert(setting.key, v.clone());
            }
        }
        Layers {
            file: self.config.clone(),
            flags,
            env: std::env::vars().collect(),
        }
    }

    fn load(&self) -> Result<Config> {
        Config::load(&self.layers()).context("invalid configuration")
    }
}

#[derive(Subcommand, Debug)]
enum AdminCommand {
    /// Create an organisation, optionally with an existing user as its owner.
    CreateOrg {
        /// Slug (a-z, 0-9, `-`).
        #[arg(long)]
        slug: String,
        /// Display name.
        #[arg(long)]
        name: String,
        /// E-mail of an existing user to make owner.
        #[arg(long)]
        owner: Option<String>,
    },
    /// Create a user and add them to an organisation with a role. The password is read from
    /// stdin with --password-stdin, else a random one is generated and printed once.
    CreateUser {
        /// E-mail address.
        #[arg(long)]
        email: String,
        /// Display name.
        #[arg(long)]
        name: String,
        /// Organisation slug or id.
        #[arg(long)]
        org: String,
        /// owner, admin, approver, auditor or viewer.
        #[arg(long)]
        role: String,
        /// Read the password from the first line of stdin.
        #[arg(long)]
        password_stdin: bool,
    },
    /// Set a new password (stdin or generated), unlock the account and end its sessions.
    ResetPassword {
        /// E-mail address.
        #[arg(long)]
        email: String,
        /// Read the password from the first line of stdin.
        #[arg(long)]
        password_stdin: bool,
    },
    /// Remove a user's authenticator app and recovery codes and end their sessions.
    #[command(name = "reset-2fa", alias = "reset2fa")]
    Reset2fa {
        /// E-mail address.
        #[arg(long)]
        email: String,
    },
    /// Create an API token for a member; prints the token once.
    CreateToken {
        /// Organisation slug or id.
        #[arg(long)]
        org: String,
        /// E-mail of the member it acts for.
        #[arg(long)]
        email: String,
        /// Label.
        #[arg(long)]
        name: String,
        /// Comma-separated scopes, e.g. policy:read,policy:write.
        #[arg(long)]
        scopes: String,
        /// Days until it expires.
        #[arg(long, default_value_t = 90)]
        days: u32,
    },
    /// Create an enrolment token for proxies (`flowlink-proxy enroll --token`); prints it once.
    CreateEnrollmentToken {
        /// Organisation slug or id.
        #[arg(long)]
        org: String,
        /// How many devices may enrol with it.
        #[arg(long, default_value_t = 1)]
        uses: u32,
        /// Days until it expires.
        #[arg(long, default_value_t = 7)]
        days: u32,
        /// A label every device enrolled with it gets, as key=value (repeatable).
        #[arg(long = "label", value_name = "KEY=VALUE")]
        labels: Vec<String>,
        /// A note for people.
        #[arg(long, default_value = "")]
        name: String,
    },
    /// List organisations.
    ListOrgs,
    /// List users (of one organisation with --org).
    ListUsers {
        /// Organisation slug or id.
        #[arg(long)]
        org: Option<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("flowlink-control: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("flowlink-control: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(filter: &str) -> Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_new(filter).with_context(|| {
        format!("log: `{filter}` is not a valid filter (e.g. info,flowlink_control=debug)")
    })?;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    Ok(())
}

async fn run(cli: Cli) -> Result<()> {
    // One process-wide rustls provider (aws-lc-rs), before anything builds a TLS config.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    match cli.command {
        Command::ConfigDocs => {
            print!("{}", markdown());
            Ok(())
        }
        Command::Secrets(args) => {
            let mut stdin = std::io::stdin().lock();
            let mut stdout = std::io::stdout().lock();
            flowlink_control::cli::secrets::run(args, &mut stdin, &mut stdout).await?;
            Ok(())
        }
        Command::Serve(settings) => {
            let config = settings.load()?;
            init_logging(&config.log)?;
            // Watch SIGTERM/SIGINT from here on, so a stop during start-up is graceful too.
            let shutdown = server::shutdown_signal();
            let store = server::open_store(&config).await?;
            if let Some(token) = server::first_run_token(&store).await? {
                eprintln!("{}", server::first_run_message(&config.public_url, &token));
            }
            let state = AppState::new(store, config.clone());
            let server = Server::bind(state).await?;
            let addr = server.local_addr()?;
            tracing::info!(
                %addr,
                tls = config.serves_tls(),
                database = flowlink_control::config::redact_url(&config.database_url),
                "flowlink-control listening"
            );
            eprintln!(
                "flowlink-control listening on {}://{addr}",
                if config.serves_tls() { "https" } else { "http" }
            );
            server.run(shutdown).await?;
            Ok(())
        }
        Command::Migrate { settings, status } => {
            let config = settings.load()?;
            let store = Store::connect(&config.database_url).await?;
            if !status {
                store.migrate().await?;
            }
            let s = store.migration_status().await?;
            println!(
                "applied: {:?}\nknown:   {:?}\ncurrent: {}",
                s.applied,
                s.known,
                s.is_current()
            );
            Ok(())
        }
        Command::Admin { settings, command } => {
            let config = settings.load()?;
            // Beside a running server: do not claim the SQLite database.
            let store = Store::connect_shared(&config.database_url).await?;
            store.migrate().await?;
            admin(&store, &config, command).await
        }
    }
}

fn read_or_generate_password(from_stdin: bool, email: &str) -> Result<(String, bool)> {
    if from_stdin {
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .context("cannot read the password from stdin")?;
        let p = line.trim_end_matches(['\r', '\n']).to_string();
        password::check_new(&p, email)?;
        Ok((p, false))
    } else {
        Ok((random_token(18), true))
    }
}

async fn cli_audit(
    store: &Store,
    org_id: Option<&str>,
    kind: &str,
    target: &str,
    detail: serde_json::Value,
) -> Result<()> {
    store
        .record_audit(&AuditEvent {
            org_id: org_id.map(str::to_string),
            kind: kind.to_string(),
            actor_kind: "system".into(),
            actor_id: "flowlink-control admin".into(),
            target: target.to_string(),
            outcome: "success".into(),
            ip: String::new(),
            detail,
        })
        .await?;
    Ok(())
}

async fn audit_for_user_orgs(store: &Store, user_id: &str, kind: &str) -> Result<()> {
    let orgs = store.orgs_of_user(user_id).await?;
    if orgs.is_empty() {
        cli_audit(store, None, kind, user_id, serde_json::json!({})).await?;
    }
    for (org, _) in orgs {
        cli_audit(store, Some(&org.id), kind, user_id, serde_json::json!({})).await?;
    }
    Ok(())
}

async fn admin(store: &Store, config: &Config, command: AdminCommand) -> Result<()> {
    match command {
        AdminCommand::CreateOrg { slug, name, owner } => {
            flowlink_control::api::auth::check_slug(&slug)
                .map_err(|e| anyhow::anyhow!(e.message))?;
            let owner = match owner {
                Some(email) => Some(
                    store
                        .user_by_email(&email)
                        .await?
                        .with_context(|| format!("no user with e-mail {email}"))?,
                ),
                None => None,
            };
            let org = store.create_org(&slug, &name).await?;
            if let Some(user) = &owner {
                store
                    .add_member(&org.id, &user.id, Role::Owner.as_str())
                    .await?;
            }
            cli_audit(
                store,
                Some(&org.id),
                "org.created",
                &org.id,
                serde_json::json!({"slug": slug, "owner": owner.map(|u| u.email)}),
            )
            .await?;
            println!("{}\t{}", org.id, org.slug);
        }
        AdminCommand::CreateUser {
            email,
            name,
            org,
            role,
            password_stdin,
        } => {
            let role: Role = role.parse().map_err(anyhow::Error::msg)?;
            flowlink_control::api::auth::check_email(&email)
                .map_err(|e| anyhow::anyhow!(e.message))?;
            let org = store
                .org_by_ref(&org)
                .await?
                .with_context(|| format!("no organisation `{org}`"))?;
            let (pw, generated) = read_or_generate_password(password_stdin, &email)?;
            let hash = password::hash(&pw).map_err(anyhow::Error::msg)?;
            let user = store.create_user(&email, &name, Some(&hash)).await?;
            store.add_member(&org.id, &user.id, role.as_str()).await?;
            cli_audit(store, Some(&org.id), "member.added", &user.id, serde_json::json!({"email": user.email, "role": role.as_str(), "account_created": true})).await?;
            println!("{}\t{}\t{}", user.id, user.email, role);
            if generated {
                println!("password (shown once): {pw}");
            }
        }
        AdminCommand::ResetPassword {
            email,
            password_stdin,
        } => {
            let user = store
                .user_by_email(&email)
                .await?
                .with_context(|| format!("no user with e-mail {email}"))?;
            let (pw, generated) = read_or_generate_password(password_stdin, &email)?;
            let hash = password::hash(&pw).map_err(anyhow::Error::msg)?;
            store.set_password(&user.id, &hash).await?;
            let n = store.revoke_all_sessions(&user.id).await?;
            audit_for_user_orgs(store, &user.id, "auth.password_reset").await?;
            println!("password reset for {}; {n} session(s) ended", user.email);
            if generated {
                println!("password (shown once): {pw}");
            }
        }
        AdminCommand::Reset2fa { email } => {
            let user = store
                .user_by_email(&email)
                .await?
                .with_context(|| format!("no user with e-mail {email}"))?;
            store.disable_totp(&user.id).await?;
            let n = store.revoke_all_sessions(&user.id).await?;
            audit_for_user_orgs(store, &user.id, "auth.totp_reset").await?;
            println!(
                "two-factor sign-in removed for {}; {n} session(s) ended",
                user.email
            );
        }
        AdminCommand::CreateToken {
            org,
            email,
            name,
            scopes,
            days,
        } => {
            let org = store
                .org_by_ref(&org)
                .await?
                .with_context(|| format!("no organisation `{org}`"))?;
            let user = store
                .user_by_email(&email)
                .await?
                .with_context(|| format!("no user with e-mail {email}"))?;
            let role: Role = store
                .member_role(&org.id, &user.id)
                .await?
                .with_context(|| format!("{email} is not a member of {}", org.slug))?
                .parse()
                .map_err(anyhow::Error::msg)?;
            let scopes = PermissionSet::parse_scopes(&scopes.replace(',', " "))
                .map_err(anyhow::Error::msg)?;
            if !scopes.is_subset(role.permissions()) {
                bail!(
                    "{email} is {role} in {}; a token cannot have more than that role allows",
                    org.slug
                );
            }
            if !(1..=flowlink_control::api::tokens::MAX_DAYS).contains(&days) {
                bail!(
                    "--days must be 1..={}",
                    flowlink_control::api::tokens::MAX_DAYS
                );
            }
            let (secret, token) =
                flowlink_control::api::tokens::issue(store, &org.id, &user.id, &name, scopes, days)
                    .await?;
            cli_audit(
                store,
                Some(&org.id),
                "token.created",
                &token.id,
                serde_json::json!({"name": name, "scopes": token.scopes, "for": user.email}),
            )
            .await?;
            println!("{secret}");
        }
        AdminCommand::CreateEnrollmentToken {
            org,
            uses,
            days,
            labels,
            name,
        } => {
            use flowlink_control::api::devices;
            let org = store
                .org_by_ref(&org)
                .await?
                .with_context(|| format!("no organisation `{org}`"))?;
            if !(1..=devices::MAX_USES).contains(&uses) {
                bail!("--uses must be 1..={}", devices::MAX_USES);
            }
            if !(1..=devices::MAX_DAYS).contains(&days) {
                bail!("--days must be 1..={}", devices::MAX_DAYS);
            }
            let mut map = BTreeMap::new();
            for label in &labels {
                let (k, v) = label
                    .split_once('=')
                    .with_context(|| format!("--label `{label}` must look like key=value"))?;
                if map.insert(k.to_string(), v.to_string()).is_some() {
                    bail!("--label `{k}` is given twice; give each label once");
                }
            }
            devices::check_labels(&map).map_err(anyhow::Error::msg)?;
            let (secret, token) = devices::issue_enrollment_token(
                store,
                &org.id,
                "flowlink-control admin",
                name.trim(),
                map,
                uses,
                devices::days_us(days),
                None,
            )
            .await?;
            cli_audit(
                store,
                Some(&org.id),
                "enrollment_token.created",
                &token.id,
                serde_json::json!({"name": token.name, "uses": uses, "labels": token.labels}),
            )
            .await?;
            println!("{secret}");
            eprintln!(
                "enrol a proxy with: flowlink-proxy enroll --server {} --token {secret}",
                config.public_url
            );
        }
        AdminCommand::ListOrgs => {
            for org in store.list_orgs().await? {
                println!("{}\t{}\t{}", org.id, org.slug, org.name);
            }
        }
        AdminCommand::ListUsers { org } => match org {
            Some(org) => {
                let org = store
                    .org_by_ref(&org)
                    .await?
                    .with_context(|| format!("no organisation `{org}`"))?;
                for m in store.list_members(&org.id).await? {
                    println!(
                        "{}\t{}\t{}\t2fa={}",
                        m.user.id, m.user.email, m.role, m.user.totp_enabled
                    );
                }
            }
            None => {
                for u in store.list_users().await? {
                    println!(
                        "{}\t{}\t{}\t2fa={}",
                        u.id, u.email, u.display_name, u.totp_enabled
                    );
                }
            }
        },
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn every_setting_has_its_flag() {
        let cmd = Cli::command();
        let serve = cmd.find_subcommand("serve").expect("serve");
        for s in SETTINGS {
            assert!(
                serve.get_arguments().any(|a| a.get_long() == Some(s.flag)),
                "setting `{}` has no --{} flag",
                s.key,
                s.flag
            );
        }
        let layers = Settings {
            listen: Some("127.0.0.1:1".into()),
            log: Some("debug".into()),
            ..Settings::default()
        }
        .layers();
        assert_eq!(
            layers.flags.get("listen").map(String::as_str),
            Some("127.0.0.1:1")
        );
        assert_eq!(layers.flags.get("log").map(String::as_str), Some("debug"));
    }
}
