//! `flowlink-proxy`: the command line. Everything here is parsing and printing; the work is in
//! the library (`relay`, `audit`, `install`).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};
use flowlink_policy::{Labels, Policy, ShieldVerdict, ToolCall, shield};
use flowlink_proxy::audit::{self, AuditQuery, AuditStore, OutboxConfig, WhenFull};
use flowlink_proxy::install::{self, Client, InstallOptions, Scope};
use flowlink_proxy::link::{self, CredentialStore, EnrollOptions, LinkConfig};
use flowlink_proxy::pins::PinStore;
use flowlink_proxy::relay::{self, PolicyOrigin, RelayConfig, ServerStatus};
use flowlink_proxy::secrets::{self, SecretsHub};

/// FlowLink's sidecar: wraps a stdio MCP server, decides every tool call, records everything.
///
/// Put it in front of an MCP server in your editor's configuration:
///   flowlink-proxy --name git --policy ~/.config/flowlink/policy.toml -- uvx mcp-server-git
#[derive(Parser, Debug)]
#[command(
    name = "flowlink-proxy",
    version,
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Args, Debug)]
struct RunArgs {
    /// Service name used by policy rules and audit records (default: the server program's name).
    #[arg(long, allow_hyphen_values = true)]
    name: Option<String>,
    /// Policy file (TOML). Without it a built-in default applies: allow and record everything.
    /// Refused on an enrolled device: its policy comes from the control plane.
    #[arg(long, env = "FLOWLINK_POLICY")]
    policy: Option<PathBuf>,
    /// Where the audit store lives (default: the platform data directory).
    #[arg(long, env = "FLOWLINK_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// A device or user label rules can match, KEY=VALUE (repeatable). `user` defaults to $USER.
    #[arg(long = "label", value_parser = parse_label)]
    labels: Vec<(String, String)>,
    /// Longest message accepted from either side, in bytes.
    #[arg(long, default_value_t = RelayConfig::DEFAULT_MAX_MESSAGE_BYTES)]
    max_message_bytes: usize,
    /// How long the server gets to exit after its input closes, and again after SIGTERM (ms).
    #[arg(long, default_value_t = 2000)]
    shutdown_grace_ms: u64,
    /// Restarts of a crashed server allowed within one minute before the proxy gives up.
    #[arg(long, default_value_t = 5)]
    max_restarts_per_minute: u32,
    /// Enrolled devices: how long a call waiting for an approver is held when the client gave no
    /// progress token; then the agent is told to issue the identical call again once approved
    /// (clients time calls out at about 60 s).
    #[arg(long, env = "FLOWLINK_APPROVAL_HOLD_SECS", default_value_t = 50, value_parser = clap::value_parser!(u64).range(1..=3600))]
    approval_hold_secs: u64,
    /// Enrolled devices: most audit events kept for the control plane while it is unreachable.
    #[arg(long, env = "FLOWLINK_OUTBOX_MAX_EVENTS", default_value_t = audit::outbox::DEFAULT_OUTBOX_MAX_EVENTS,
          value_parser = clap::value_parser!(u64).range(1..))]
    outbox_max_events: u64,
    /// Enrolled devices: what happens when the outbox is full. `block` (secure default) refuses
    /// new tool calls until the control plane is reachable again; `drop-oldest` drops the oldest
    /// un-shipped events and records how many.
    #[arg(long, env = "FLOWLINK_OUTBOX_WHEN_FULL", default_value = "block", value_parser = parse_when_full)]
    outbox_when_full: WhenFull,
    /// Enrolled devices: at start, with no secrets cached yet, how long to wait for the control
    /// plane's first push of secrets before starting the MCP server without them (0: do not
    /// wait). Also bounds the Vault reads of each server start (10 s when 0).
    #[arg(long, env = "FLOWLINK_SECRETS_WAIT_SECS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(0..=600))]
    secrets_wait_secs: u64,
    /// The MCP server command and its arguments, after `--`.
    #[arg(last = true)]
    server: Vec<String>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Validate or explain a policy file.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Show recorded tool calls.
    Audit(AuditArgs),
    /// Wrap every stdio MCP server of an editor's configuration in flowlink-proxy.
    Install(InstallArgs),
    /// Undo `install`: restore the original server commands.
    Uninstall(InstallArgs),
    /// Ask the shield what a shell command or SQL statement would do.
    #[command(subcommand)]
    Shield(ShieldCommand),
    /// Tool pins: list them, accept changed tool definitions, forget pins.
    #[command(subcommand)]
    Pins(PinsCommand),
    /// Join an organisation: register this device with a control plane and store its credential.
    Enroll(EnrollArgs),
    /// Show the enrolment, the link to the control plane, the policy in force and the outbox.
    Status(StatusArgs),
}

#[derive(Args, Debug)]
struct EnrollArgs {
    /// The control plane, e.g. https://flowlink.example.com (http:// only to this machine).
    #[arg(long)]
    server: String,
    /// The enrolment token an admin created (`fle_…`).
    #[arg(long, env = "FLOWLINK_ENROLL_TOKEN", hide_env_values = true)]
    token: String,
    /// A name for this device (default: the host name).
    #[arg(long)]
    name: Option<String>,
    /// A label this device reports, KEY=VALUE (repeatable); the token's labels win.
    #[arg(long = "label", value_parser = parse_label)]
    labels: Vec<(String, String)>,
    /// A PEM file with the CA that signed the control plane's certificate (a private CA).
    #[arg(long)]
    ca_file: Option<PathBuf>,
    /// Allow unencrypted http:// / ws:// to a control plane that is not on this machine (only
    /// behind a TLS-terminating proxy on a trusted network).
    #[arg(long)]
    allow_insecure_ws: bool,
    /// Replace an existing enrolment of this device.
    #[arg(long)]
    force: bool,
    /// Where the credential and the proxy's state live (default: the platform data directory).
    #[arg(long, env = "FLOWLINK_DATA_DIR")]
    data_dir: Option<PathBuf>,
}

#[derive(Args, Debug)]
struct StatusArgs {
    /// One JSON object instead of text.
    #[arg(long)]
    json: bool,
    /// Where the credential and the proxy's state live (default: the platform data directory).
    #[arg(long, env = "FLOWLINK_DATA_DIR")]
    data_dir: Option<PathBuf>,
}

#[derive(Subcommand, Debug)]
enum PinsCommand {
    /// List pinned tools and changes waiting for acceptance.
    List {
        /// Only this service.
        #[arg(long)]
        service: Option<String>,
        /// Where the pins live (default: the platform data directory).
        #[arg(long, env = "FLOWLINK_DATA_DIR")]
        data_dir: Option<PathBuf>,
    },
    /// Accept changed tool definitions of a service: they become the pins.
    Accept {
        /// The service (`--name`).
        #[arg(long)]
        service: String,
        /// Only this tool.
        #[arg(long)]
        tool: Option<String>,
        /// Where the pins live.
        #[arg(long, env = "FLOWLINK_DATA_DIR")]
        data_dir: Option<PathBuf>,
    },
    /// Forget pins of a service (or one tool); they are pinned again when next seen.
    Forget {
        /// The service (`--name`).
        #[arg(long)]
        service: String,
        /// Only this tool.
        #[arg(long)]
        tool: Option<String>,
        /// Where the pins live.
        #[arg(long, env = "FLOWLINK_DATA_DIR")]
        data_dir: Option<PathBuf>,
    },
}

#[derive(Subcommand, Debug)]
enum ShieldCommand {
    /// Print the verdict (allow / approve / block), the risk and every finding for an input.
    Check(ShieldCheckArgs),
}

#[derive(Args, Debug)]
struct ShieldCheckArgs {
    /// What the input is.
    #[arg(long, default_value = "shell", value_parser = ["shell", "sql", "path", "url"])]
    kind: String,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
    /// Read `{"kind": "shell"|"sql", "input": "…"}` lines from stdin; write one verdict per line.
    #[arg(long, conflicts_with = "input")]
    jsonl: bool,
    /// Use this policy's `[shield]` settings instead of the built-in default.
    #[arg(long, env = "FLOWLINK_POLICY")]
    policy: Option<PathBuf>,
    /// The command or statement, after `--`.
    #[arg(last = true)]
    input: Vec<String>,
}

#[derive(Subcommand, Debug)]
enum PolicyCommand {
    /// Check that a policy file is valid.
    Check {
        /// The policy file.
        file: PathBuf,
    },
    /// Show which rule decides a call and why.
    Explain {
        /// The policy file.
        file: PathBuf,
        /// Service name (as given to --name).
        #[arg(long)]
        service: String,
        /// Tool name.
        #[arg(long)]
        tool: String,
        /// Tool arguments as a JSON object.
        #[arg(long, default_value = "{}")]
        args: String,
        /// MCP client name.
        #[arg(long, default_value = "unknown")]
        agent: String,
        /// Labels, KEY=VALUE (repeatable).
        #[arg(long = "label", value_parser = parse_label)]
        labels: Vec<(String, String)>,
    },
}

#[derive(Args, Debug)]
struct AuditArgs {
    /// Where the audit store lives (default: the platform data directory).
    #[arg(long, env = "FLOWLINK_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// One JSON object per line instead of a table.
    #[arg(long)]
    json: bool,
    /// Only calls since then: a duration (90s, 15m, 2h, 7d) or an RFC 3339 time.
    #[arg(long)]
    since: Option<String>,
    /// Only calls of this tool (`*` is a wildcard).
    #[arg(long)]
    tool: Option<String>,
    /// At most this many of the newest calls.
    #[arg(long)]
    limit: Option<usize>,
}

#[derive(Args, Debug)]
struct InstallArgs {
    /// Which editor: claude-code, cursor, windsurf or vscode.
    #[arg(long)]
    client: Client,
    /// The user's configuration or the current project's.
    #[arg(long, default_value = "user")]
    scope: Scope,
    /// Show the change without writing anything.
    #[arg(long)]
    dry_run: bool,
}

fn parse_label(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
        _ => Err(format!("label `{s}` must look like KEY=VALUE")),
    }
}

fn parse_when_full(s: &str) -> Result<WhenFull, String> {
    WhenFull::parse(s).ok_or_else(|| format!("`{s}` is not `block` or `drop-oldest`"))
}

fn labels_from(pairs: &[(String, String)]) -> Labels {
    let mut labels = BTreeMap::new();
    if let Ok(user) = std::env::var("USER") {
        labels.insert("user".to_owned(), user);
    }
    for (k, v) in pairs {
        labels.insert(k.clone(), v.clone());
    }
    labels
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    // One rustls crypto provider for the whole process (the link and enrolment pass it
    // explicitly too).
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let result = match cli.command {
        Some(Command::Policy(p)) => policy_command(p),
        Some(Command::Audit(a)) => audit_command(a),
        Some(Command::Install(i)) => install_command(i, false),
        Some(Command::Uninstall(i)) => install_command(i, true),
        Some(Command::Shield(ShieldCommand::Check(s))) => shield_command(s),
        Some(Command::Pins(p)) => pins_command(p),
        Some(Command::Enroll(e)) => enroll_command(e),
        Some(Command::Status(s)) => status_command(s),
        None => run_command(cli.run),
    };
    match result {
        Ok(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
        Err(e) => {
            eprintln!("flowlink-proxy: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn init_logging() {
    // Diagnostics go to stderr only: stdout carries JSON-RPC and nothing else.
    let filter = tracing_subscriber::EnvFilter::try_from_env("FLOWLINK_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .without_time()
        .try_init();
}

fn data_dir_or_default(dir: Option<PathBuf>) -> Result<PathBuf> {
    match dir {
        Some(d) => Ok(d),
        None => audit::default_data_dir()
            .context("no home directory to keep the audit store in; pass --data-dir"),
    }
}

fn run_command(args: RunArgs) -> Result<i32> {
    if args.server.is_empty() {
        bail!(
            "no MCP server command given; put it after `--`, e.g. `flowlink-proxy --name everything -- npx -y @modelcontextprotocol/server-everything`"
        );
    }
    let data_dir = data_dir_or_default(args.data_dir)?;
    let service = args.name.unwrap_or_else(|| {
        Path::new(&args.server[0])
            .file_name()
            .map_or_else(|| "mcp".to_owned(), |n| n.to_string_lossy().into_owned())
    });
    // An enrolled device takes its policy from the control plane; a credential that exists but
    // cannot be read stops the proxy rather than silently running without the org's policy.
    let credential = CredentialStore::new(&data_dir)
        .load()
        .context("this data directory holds a device credential that cannot be used")?
        .map(|(c, _)| Arc::new(c));
    if let (Some(cred), Some(path)) = (&credential, &args.policy) {
        bail!(
            "this device is enrolled in organisation {} (control plane {}), so its policy comes from the control plane; --policy {} (or FLOWLINK_POLICY) is refused because a local file must not override the organisation's security policy. Remove --policy, or use another --data-dir for an un-enrolled proxy",
            if cred.org_slug.is_empty() {
                &cred.org_id
            } else {
                &cred.org_slug
            },
            cred.server_url,
            path.display()
        );
    }
    let store = match &credential {
        Some(_) => AuditStore::open_with_outbox(
            &data_dir,
            OutboxConfig {
                max_events: args.outbox_max_events,
                when_full: args.outbox_when_full,
            },
        ),
        None => AuditStore::open(&data_dir),
    }
    .with_context(|| format!("cannot open the audit store in {}", data_dir.display()))?;
    let pins = PinStore::open(&data_dir)?;
    // The policy the relay starts with: a file, the built-in default, or (enrolled) the cached
    // bundle, verified again.
    let (initial_policy, cached) = match &credential {
        None => match &args.policy {
            Some(path) => (relay::load_policy_file(path)?, None),
            None => (Policy::builtin_default(), None),
        },
        Some(cred) => match cached_bundle(&data_dir, cred, &service) {
            Some(v) => (v.policy.clone(), Some(v)),
            None => (relay::decide::missing_policy()?, None),
        },
    };
    let server_status = ServerStatus::default();
    // Enrolled: the secrets cached from the last push, opened now (the control plane may be down).
    let hub = credential.as_ref().map(|cred| {
        let hub = SecretsHub::new();
        secrets::load_cached(&data_dir, cred, &service, &hub);
        hub
    });
    let secrets_wait = Duration::from_secs(args.secrets_wait_secs);
    let backoff_cap = std::env::var("FLOWLINK_LINK_BACKOFF_CAP_MS")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .map_or(link::client::BACKOFF_CAP, Duration::from_millis);

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let code = rt.block_on(async {
        let mut initial_policy = initial_policy;
        let (link, mut policy_feed, mut policy_source) = match &credential {
            None => (
                None,
                None,
                if args.policy.is_some() {
                    PolicyOrigin::File
                } else {
                    PolicyOrigin::Builtin
                },
            ),
            Some(cred) => {
                let (handle, feed) = link::spawn(LinkConfig {
                    credential: Arc::clone(cred),
                    service: service.clone(),
                    data_dir: data_dir.clone(),
                    store: store.clone(),
                    server_status: server_status.clone(),
                    current: cached.as_ref().map(|v| link::client::CurrentBundle {
                        id: v.id.clone(),
                        issued_at_us: v.bundle.issued_at,
                    }),
                    backoff_cap,
                    secrets: hub.clone().unwrap_or_else(SecretsHub::new),
                });
                let origin = match &cached {
                    Some(v) => PolicyOrigin::Bundle {
                        id: v.id.clone(),
                        online: handle.online_flag(),
                    },
                    None => PolicyOrigin::Missing,
                };
                (Some(handle), Some(feed), origin)
            }
        };
        // Nothing cached yet, or the policy injects secrets: give the control plane a bounded
        // time to send them (and the policy, which comes first) before the server starts. With a
        // cache, this lets a fresh push — or a revocation, which empties the cache — win over
        // what was stored; an unreachable control plane ends the wait at once (offline start).
        if let (Some(link), Some(hub)) = (&link, &hub)
            && !secrets_wait.is_zero()
            && (cached.is_none() || !initial_policy.secrets().is_empty())
        {
            let arrived = secrets::wait_for_first_push(hub, link, secrets_wait).await;
            if let Some(feed) = policy_feed.as_mut() {
                while let Ok(p) = feed.try_recv() {
                    initial_policy = p.policy.clone();
                    policy_source = p.source.clone();
                }
            }
            if !arrived && hub.current().is_none() && !initial_policy.secrets().is_empty() {
                eprintln!(
                    "flowlink-proxy: no secrets arrived from the control plane (waited up to {} s) and none are cached; `{service}` starts without them",
                    secrets_wait.as_secs()
                );
            }
        }
        let cfg = RelayConfig {
            service,
            command: args.server,
            policy_file: args.policy,
            initial_policy,
            policy_source,
            policy_feed,
            server_status,
            link: link.clone(),
            labels: labels_from(&args.labels),
            max_message_bytes: args.max_message_bytes,
            shutdown_grace: Duration::from_millis(args.shutdown_grace_ms),
            max_restarts_per_minute: args.max_restarts_per_minute,
            approval_hold: Duration::from_secs(args.approval_hold_secs),
            policy_poll_interval: Duration::from_millis(500),
            store,
            pins: Some(pins),
            secrets: hub.clone(),
            secrets_wait: if secrets_wait.is_zero() {
                Duration::from_secs(10)
            } else {
                secrets_wait
            },
        };
        let (input, output) = relay::stdio::client_stdio();
        let code = relay::run(cfg, input, output).await;
        if let Some(link) = link
            && link.is_connected()
        {
            // Ship what the session recorded before going (bounded); when offline there is
            // nothing to wait for: the outbox keeps it for the next run.
            link.shutdown(Duration::from_millis(1500)).await;
        }
        code
    });
    // Reader tasks may still be parked on a blocking stdin read; do not wait for them.
    rt.shutdown_timeout(Duration::from_millis(100));
    match code {
        Ok(c) => Ok(c),
        Err(e) => {
            eprintln!("flowlink-proxy: {e}");
            Ok(127)
        }
    }
}

/// The cached bundle of `service`, verified with the enrolled key, or `None` (said on stderr).
fn cached_bundle(
    data_dir: &Path,
    cred: &link::Credential,
    service: &str,
) -> Option<link::bundle::VerifiedBundle> {
    let cached = match link::state::LinkState::open(data_dir).and_then(|s| s.bundle(service)) {
        Ok(Some(c)) => c,
        Ok(None) => {
            eprintln!(
                "flowlink-proxy: no policy from the control plane is cached for `{service}` yet; tool calls are refused until it arrives"
            );
            return None;
        }
        Err(e) => {
            eprintln!(
                "flowlink-proxy: cannot read the cached policy ({e}); tool calls are refused until the control plane sends one"
            );
            return None;
        }
    };
    match link::bundle::verify(&cached.signed, cred, service, None) {
        Ok(v) => {
            tracing::info!(
                "deciding with cached policy bundle {} ({})",
                link::bundle::short(&v.id),
                v.layers()
            );
            Some(v)
        }
        Err(e) => {
            eprintln!(
                "flowlink-proxy: the cached policy bundle is refused ({e}); tool calls are refused until the control plane sends one"
            );
            None
        }
    }
}

fn enroll_command(a: EnrollArgs) -> Result<i32> {
    let data_dir = data_dir_or_default(a.data_dir)?;
    let opts = EnrollOptions {
        server: a.server,
        token: a.token,
        name: a.name,
        labels: a.labels.into_iter().collect(),
        ca_file: a.ca_file,
        allow_insecure: a.allow_insecure_ws,
        force: a.force,
        data_dir,
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let done = rt.block_on(link::enroll(opts))?;
    let c = &done.credential;
    println!(
        "enrolled: device {} (\"{}\") in organisation {} ({}) at {}",
        c.device_id,
        c.device_name,
        if c.org_slug.is_empty() {
            "-"
        } else {
            &c.org_slug
        },
        c.org_id,
        c.server_url
    );
    match (&done.saved.keyring, &done.saved.file) {
        (Ok(()), Ok(path)) => println!(
            "credential stored in the OS keyring and in {} (encrypted)",
            path.display()
        ),
        (Err(why), Ok(path)) => println!(
            "credential stored in {} (encrypted); the OS keyring is not available here ({why})",
            path.display()
        ),
        (Ok(()), Err(why)) => eprintln!(
            "flowlink-proxy: warning: the credential is only in the OS keyring, which does not survive a reboot: the encrypted file could not be written ({why})"
        ),
        (Err(_), Err(_)) => {}
    }
    if done.saved.file.is_ok() && !done.saved.machine_bound {
        eprintln!(
            "flowlink-proxy: warning: this machine has no /etc/machine-id, so the encrypted credential file is bound to the user id only; protect it like an SSH private key"
        );
    }
    println!(
        "every `flowlink-proxy -- <server>` on this device now links to the control plane and takes its policy from there"
    );
    Ok(0)
}

fn status_command(a: StatusArgs) -> Result<i32> {
    let data_dir = data_dir_or_default(a.data_dir)?;
    let report = link::status::report(&data_dir)?;
    if a.json {
        println!("{}", link::status::render_json(&report));
    } else {
        print!("{}", link::status::render_text(&report));
    }
    Ok(0)
}

fn policy_command(cmd: PolicyCommand) -> Result<i32> {
    match cmd {
        PolicyCommand::Check { file } => match relay::load_policy_file(&file) {
            Ok(p) => {
                println!("{}: ok ({} rules)", file.display(), p.rule_count());
                Ok(0)
            }
            Err(e) => {
                eprintln!("{e}");
                Ok(1)
            }
        },
        PolicyCommand::Explain {
            file,
            service,
            tool,
            args,
            agent,
            labels,
        } => {
            let policy = relay::load_policy_file(&file)?;
            let arguments: serde_json::Value = serde_json::from_str(&args)
                .with_context(|| format!("--args is not valid JSON: {args}"))?;
            if !arguments.is_object() {
                bail!("--args must be a JSON object, like '{{\"path\": \"/tmp\"}}'");
            }
            let labels = labels_from(&labels);
            let call = ToolCall {
                agent: &agent,
                service: &service,
                tool: &tool,
                arguments: &arguments,
                labels: &labels,
            };
            println!("{}", policy.explain(&call));
            Ok(0)
        }
    }
}

fn pins_command(cmd: PinsCommand) -> Result<i32> {
    match cmd {
        PinsCommand::List { service, data_dir } => {
            let pins = PinStore::open(&data_dir_or_default(data_dir)?)?;
            let rows = pins.list(service.as_deref())?;
            if rows.is_empty() {
                println!("no pinned tools");
            }
            for r in rows {
                let state = match &r.pending {
                    Some(p) => format!(
                        "CHANGED, waiting for acceptance (new {})",
                        &p[..p.len().min(12)]
                    ),
                    None => "pinned".to_owned(),
                };
                println!(
                    "{}\t{}\t{}\t{}",
                    r.service,
                    r.tool,
                    &r.fingerprint[..r.fingerprint.len().min(12)],
                    state
                );
            }
        }
        PinsCommand::Accept {
            service,
            tool,
            data_dir,
        } => {
            let pins = PinStore::open(&data_dir_or_default(data_dir)?)?;
            let n = pins.accept(&service, tool.as_deref())?;
            println!(
                "accepted {n} changed tool definition(s) of `{service}`; restart the editor's session (or let it re-list tools) to use them"
            );
        }
        PinsCommand::Forget {
            service,
            tool,
            data_dir,
        } => {
            let pins = PinStore::open(&data_dir_or_default(data_dir)?)?;
            let n = pins.forget(&service, tool.as_deref())?;
            println!("forgot {n} pin(s) of `{service}`");
        }
    }
    Ok(0)
}

fn shield_command(a: ShieldCheckArgs) -> Result<i32> {
    let policy = match &a.policy {
        Some(path) => relay::load_policy_file(path)?,
        None => Policy::builtin_default(),
    };
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    if a.jsonl {
        use std::io::BufRead;
        for (n, line) in std::io::stdin().lock().lines().enumerate() {
            let line = line.context("cannot read stdin")?;
            if line.trim().is_empty() {
                continue;
            }
            let verdict = match serde_json::from_str::<serde_json::Value>(&line) {
                Ok(v) => {
                    let kind = v.get("kind").and_then(|k| k.as_str()).unwrap_or("shell");
                    match (
                        shield::InputKind::parse(kind),
                        v.get("input").and_then(|i| i.as_str()),
                    ) {
                        (Some(kind), Some(input)) => {
                            verdict_json(kind, input, &policy.shield_check(kind, input))
                        }
                        _ => {
                            serde_json::json!({"line": n + 1, "error": "expected {\"kind\": \"shell\"|\"sql\"|\"path\"|\"url\", \"input\": \"…\"}"})
                        }
                    }
                }
                Err(e) => serde_json::json!({"line": n + 1, "error": format!("not JSON: {e}")}),
            };
            writeln!(out, "{verdict}")?;
        }
        out.flush()?;
        return Ok(0);
    }
    if a.input.is_empty() {
        bail!(
            "nothing to check; put the input after `--`, e.g. `flowlink-proxy shield check -- rm -rf ~`"
        );
    }
    let input = a.input.join(" ");
    let kind = shield::InputKind::parse(&a.kind).unwrap_or(shield::InputKind::Shell);
    let verdict = policy.shield_check(kind, &input);
    if a.json {
        writeln!(out, "{}", verdict_json(kind, &input, &verdict))?;
    } else {
        writeln!(out, "verdict: {} (risk {})", verdict.action, verdict.risk)?;
        if verdict.findings.is_empty() {
            writeln!(out, "no findings")?;
        }
        for f in &verdict.findings {
            writeln!(
                out,
                "- {} [{}, risk {}]: {}",
                f.id, f.category, f.risk, f.explanation
            )?;
            if !f.evidence.is_empty() {
                writeln!(out, "  in: {}", f.evidence)?;
            }
        }
    }
    out.flush()?;
    Ok(0)
}

fn verdict_json(kind: shield::InputKind, input: &str, v: &ShieldVerdict) -> serde_json::Value {
    serde_json::json!({
        "kind": kind.as_str(),
        "input": input,
        "verdict": v.action.as_str(),
        "risk": v.risk,
        "findings": v.findings.iter().map(|f| serde_json::json!({
            "id": f.id,
            "category": f.category.as_str(),
            "risk": f.risk,
            "explanation": f.explanation,
            "evidence": f.evidence,
        })).collect::<Vec<_>>(),
    })
}

fn audit_command(a: AuditArgs) -> Result<i32> {
    let dir = data_dir_or_default(a.data_dir)?;
    // Calls a killed proxy journalled but did not get into the database yet come in first.
    // A reader without write access still reads what is there.
    if dir.exists()
        && let Err(e) = audit::recover(&dir)
    {
        eprintln!("flowlink-proxy: warning: could not replay the audit journal: {e}");
    }
    let db = dir.join("audit.sqlite3");
    if !db.exists() {
        bail!(
            "no audit store at {}; nothing has been recorded there yet (pass --data-dir if the proxy used another one)",
            db.display()
        );
    }
    let now = audit::now_us();
    let since_us = match &a.since {
        Some(s) => Some(audit::parse_since(s, now)?),
        None => None,
    };
    let rows = audit::query_calls(
        &db,
        &AuditQuery {
            since_us,
            tool: a.tool,
            limit: a.limit,
        },
    )?;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    if a.json {
        audit::render_json_lines(&rows, &mut out)?;
    } else {
        audit::render_table(&rows, &mut out)?;
    }
    out.flush()?;
    Ok(0)
}

fn install_command(a: InstallArgs, undo: bool) -> Result<i32> {
    let opts = InstallOptions::from_environment(a.client, a.scope, a.dry_run)?;
    let report = if undo {
        install::uninstall(&opts)?
    } else {
        install::install(&opts)?
    };
    print!("{report}");
    Ok(0)
}
