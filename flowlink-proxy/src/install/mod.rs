//! Editor configuration installer: rewrites an MCP client's configuration so
//! each stdio server is launched through `flowlink-proxy`, and back again.
//!
//! ```text
//! flowlink-proxy install   --client claude-code|cursor|windsurf|vscode [--scope user|project] [--dry-run]
//! flowlink-proxy uninstall --client …                                  [--scope …]             [--dry-run]
//! ```
//!
//! The file is never re-serialized: it must be strict JSON (validated with
//! serde_json), and only the bytes of the `command` / `args` values being
//! changed are rewritten (see [`wrap`]). Indentation, key order, unknown
//! fields, escapes and the trailing newline therefore survive exactly, and
//! `uninstall` after `install` gives back the original file byte for byte.

mod files;
mod spans;
mod wrap;

#[cfg(test)]
mod tests;

use std::fmt;
use std::fs;
use std::io;
use std::path::PathBuf;
use std::str::FromStr;

use spans::{Kind, Lookup, Node, lookup};
use wrap::{Edit, Outcome};

/// An MCP client whose configuration we know how to edit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Client {
    ClaudeCode,
    Cursor,
    Windsurf,
    VsCode,
}

impl Client {
    pub const ALL: [Client; 4] = [
        Client::ClaudeCode,
        Client::Cursor,
        Client::Windsurf,
        Client::VsCode,
    ];

    /// The command-line spelling (`claude-code`, `cursor`, `windsurf`, `vscode`).
    pub fn as_str(self) -> &'static str {
        match self {
            Client::ClaudeCode => "claude-code",
            Client::Cursor => "cursor",
            Client::Windsurf => "windsurf",
            Client::VsCode => "vscode",
        }
    }

    /// The product name, for messages.
    pub fn display_name(self) -> &'static str {
        match self {
            Client::ClaudeCode => "Claude Code",
            Client::Cursor => "Cursor",
            Client::Windsurf => "Windsurf",
            Client::VsCode => "VS Code",
        }
    }

    /// The key holding the server map.
    fn servers_key(self) -> &'static str {
        match self {
            Client::VsCode => "servers",
            _ => "mcpServers",
        }
    }
}

impl fmt::Display for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Client {
    type Err = InstallError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Client::ALL
            .into_iter()
            .find(|c| c.as_str() == s)
            .ok_or_else(|| InstallError::UnknownClient(s.to_string()))
    }
}

/// Which configuration file of the client to edit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    User,
    Project,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::User => "user",
            Scope::Project => "project",
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Scope {
    type Err = InstallError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "user" => Ok(Scope::User),
            "project" => Ok(Scope::Project),
            _ => Err(InstallError::UnknownScope(s.to_string())),
        }
    }
}

/// Everything the installer needs; all paths are explicit so tests can point
/// them at temporary directories.
#[derive(Clone, Debug)]
pub struct InstallOptions {
    pub client: Client,
    pub scope: Scope,
    pub dry_run: bool,
    /// The user's home directory (`~`).
    pub home: PathBuf,
    /// The platform configuration directory (Linux `$XDG_CONFIG_HOME` or
    /// `~/.config`, macOS `~/Library/Application Support`, Windows `%APPDATA%`).
    pub config_dir: PathBuf,
    /// The project whose project-scope configuration is edited.
    pub project_dir: PathBuf,
    /// Written into each wrapped server's `command`.
    pub proxy_exe: PathBuf,
}

impl InstallOptions {
    /// Options for the real environment: home and config dir from the OS,
    /// project = current directory, proxy = this executable.
    pub fn from_environment(
        client: Client,
        scope: Scope,
        dry_run: bool,
    ) -> Result<InstallOptions, InstallError> {
        let base = directories::BaseDirs::new().ok_or(InstallError::NoHomeDir)?;
        let project_dir = std::env::current_dir().map_err(InstallError::CurrentDir)?;
        let proxy_exe = std::env::current_exe().map_err(InstallError::CurrentExe)?;
        Ok(InstallOptions {
            client,
            scope,
            dry_run,
            home: base.home_dir().to_path_buf(),
            config_dir: base.config_dir().to_path_buf(),
            project_dir,
            proxy_exe: launch_path(proxy_exe),
        })
    }

    /// The configuration file these options select.
    pub fn config_path(&self) -> Result<PathBuf, InstallError> {
        Ok(match (self.client, self.scope) {
            (Client::ClaudeCode, Scope::User) => self.home.join(".claude.json"),
            (Client::ClaudeCode, Scope::Project) => self.project_dir.join(".mcp.json"),
            (Client::Cursor, Scope::User) => self.home.join(".cursor").join("mcp.json"),
            (Client::Cursor, Scope::Project) => self.project_dir.join(".cursor").join("mcp.json"),
            (Client::Windsurf, Scope::User) => self
                .home
                .join(".codeium")
                .join("windsurf")
                .join("mcp_config.json"),
            (Client::Windsurf, Scope::Project) => {
                return Err(InstallError::ScopeNotSupported {
                    client: self.client,
                    scope: self.scope,
                    hint: "Windsurf has only a user-wide MCP configuration \
                           (~/.codeium/windsurf/mcp_config.json); use --scope user",
                });
            }
            (Client::VsCode, Scope::User) => {
                self.config_dir.join("Code").join("User").join("mcp.json")
            }
            (Client::VsCode, Scope::Project) => self.project_dir.join(".vscode").join("mcp.json"),
        })
    }
}

/// Prefer the path the binary was launched by (e.g. a stable
/// `/usr/local/bin/flowlink-proxy` symlink) over `current_exe`, which on
/// Linux resolves symlinks into versioned package directories that disappear
/// on upgrade. Falls back to `exe` unless both name the same file.
fn launch_path(exe: PathBuf) -> PathBuf {
    let Some(argv0) = std::env::args_os().next().map(PathBuf::from) else {
        return exe;
    };
    let candidate = if argv0.components().count() > 1 {
        std::path::absolute(&argv0).ok()
    } else {
        std::env::var_os("PATH").and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|dir| dir.join(&argv0))
                .find(|p| p.is_file())
                .filter(|p| p.is_absolute())
        })
    };
    match (candidate, fs::canonicalize(&exe)) {
        (Some(c), Ok(real)) if fs::canonicalize(&c).is_ok_and(|cr| cr == real) => c,
        _ => exe,
    }
}

/// What went wrong, and what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    #[error("unknown client {0:?}; expected one of claude-code, cursor, windsurf, vscode")]
    UnknownClient(String),
    #[error("unknown scope {0:?}; expected user or project")]
    UnknownScope(String),
    #[error("{client} has no {scope}-scope MCP configuration: {hint}")]
    ScopeNotSupported {
        client: Client,
        scope: Scope,
        hint: &'static str,
    },
    #[error(
        "could not determine your home directory; set HOME (or USERPROFILE on Windows) and retry"
    )]
    NoHomeDir,
    #[error(
        "could not determine the current directory for --scope project ({0}); cd into the project and retry"
    )]
    CurrentDir(#[source] io::Error),
    #[error(
        "could not determine the path of the flowlink-proxy executable ({0}); run it by its full path"
    )]
    CurrentExe(#[source] io::Error),
    #[error("the flowlink-proxy path {} is not valid UTF-8 and cannot be written into a JSON configuration; install flowlink-proxy under a UTF-8 path", .0.display())]
    ExePathNotUtf8(PathBuf),
    #[error("could not read {}: {source}; check that the file is readable", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{} is not UTF-8 text; it cannot be a valid MCP configuration — fix the file or wrap servers by hand", .0.display())]
    NotUtf8(PathBuf),
    #[error(
        "{} is not strict JSON (line {line}, column {column}: {detail}). \
         It probably contains comments or trailing commas (JSONC), which FlowLink will not rewrite \
         because they would be lost. Remove them and run again, or wrap the servers by hand: \
         set \"command\" to the flowlink-proxy path and put \"--name\", <server name>, \"--\", \
         <original command> in front of \"args\"",
        path.display()
    )]
    NotStrictJson {
        path: PathBuf,
        line: usize,
        column: usize,
        detail: String,
    },
    #[error("{}: {what}; fix the file by hand and run again", path.display())]
    Unsupported { path: PathBuf, what: String },
    #[error("internal error editing {} near byte {offset}: {what}; nothing was written — please report this", path.display())]
    Internal {
        path: PathBuf,
        offset: usize,
        what: &'static str,
    },
    #[error("could not read the clock for the backup name: {0}")]
    Clock(String),
    #[error("could not write the backup {}: {source}; nothing was changed — check permissions on the directory", path.display())]
    Backup {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("could not write {}: {source}; the original is unchanged — check permissions on the file and its directory", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{} changed while FlowLink was editing it (is the editor running and saving it?); nothing was written — close the editor and run again", path.display())]
    ChangedMeanwhile { path: PathBuf },
}

/// Install or uninstall.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Install,
    Uninstall,
}

/// What happened (or, with `dry_run`, would happen).
#[derive(Clone, Debug)]
pub struct Report {
    pub client: Client,
    pub action: Action,
    pub dry_run: bool,
    /// The client's configuration file (as configured; symlinks are followed
    /// when writing).
    pub config_path: PathBuf,
    /// False when there is no configuration file at `config_path`.
    pub found: bool,
    /// Servers wrapped (install) or unwrapped (uninstall). Claude Code
    /// per-project servers read `name (project /abs/path)`.
    pub changed: Vec<String>,
    /// Servers left alone: (name, why).
    pub skipped: Vec<(String, String)>,
    /// The backup written before the change (None if nothing was written).
    pub backup: Option<PathBuf>,
    /// Unified diff of the change; empty if nothing changes.
    pub diff: String,
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (verb, nothing) = match self.action {
            Action::Install => ("wrapped", "nothing to wrap"),
            Action::Uninstall => ("unwrapped", "nothing to unwrap"),
        };
        let path = self.config_path.display();
        if !self.found {
            return writeln!(
                f,
                "no {} MCP configuration at {path}; {nothing}",
                self.client.display_name()
            );
        }
        if self.changed.is_empty() && self.skipped.is_empty() {
            return writeln!(f, "no MCP servers in {path}; {nothing}");
        }
        writeln!(
            f,
            "{} MCP configuration: {path}",
            self.client.display_name()
        )?;
        for name in &self.changed {
            let verb = if self.dry_run {
                format!("would be {verb}")
            } else {
                verb.to_string()
            };
            writeln!(f, "  {verb}: {name}")?;
        }
        for (name, why) in &self.skipped {
            writeln!(f, "  left alone: {name} — {why}")?;
        }
        if self.changed.is_empty() {
            return writeln!(f, "{nothing}; file not touched");
        }
        if let Some(backup) = &self.backup {
            writeln!(f, "backup of the original: {}", backup.display())?;
        }
        f.write_str(&self.diff)?;
        if !self.diff.ends_with('\n') {
            writeln!(f)?;
        }
        if self.dry_run {
            writeln!(f, "dry run: nothing written")
        } else {
            writeln!(
                f,
                "restart {} (or reload its MCP servers) to use the new configuration",
                self.client.display_name()
            )
        }
    }
}

/// Wrap every stdio server in the selected configuration with flowlink-proxy.
pub fn install(opts: &InstallOptions) -> Result<Report, InstallError> {
    run(opts, Action::Install)
}

/// Undo [`install`]: restore each server the installer wrapped to its original
/// `command` / `args`; anything else is left as it is.
pub fn uninstall(opts: &InstallOptions) -> Result<Report, InstallError> {
    run(opts, Action::Uninstall)
}

fn run(opts: &InstallOptions, action: Action) -> Result<Report, InstallError> {
    let config_path = opts.config_path()?;
    let proxy_exe = opts
        .proxy_exe
        .to_str()
        .ok_or_else(|| InstallError::ExePathNotUtf8(opts.proxy_exe.clone()))?;
    let mut report = Report {
        client: opts.client,
        action,
        dry_run: opts.dry_run,
        config_path: config_path.clone(),
        found: false,
        changed: Vec::new(),
        skipped: Vec::new(),
        backup: None,
        diff: String::new(),
    };

    let read_err = |source| InstallError::Read {
        path: config_path.clone(),
        source,
    };
    // Follow symlinks (dotfile managers) so we edit the real file instead of
    // replacing the link.
    let real = match fs::canonicalize(&config_path) {
        Ok(p) => p,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(report),
        Err(e) => return Err(read_err(e)),
    };
    let meta = fs::metadata(&real).map_err(read_err)?;
    if !meta.is_file() {
        return Err(InstallError::Unsupported {
            path: config_path,
            what: "is not a regular file".into(),
        });
    }
    let bytes = fs::read(&real).map_err(read_err)?;
    report.found = true;
    let text =
        std::str::from_utf8(&bytes).map_err(|_| InstallError::NotUtf8(config_path.clone()))?;
    let body_start = if text.starts_with('\u{feff}') { 3 } else { 0 };
    let body = &text[body_start..];
    if body.trim().is_empty() {
        return Ok(report);
    }
    if let Err(e) = serde_json::from_str::<serde::de::IgnoredAny>(body) {
        return Err(InstallError::NotStrictJson {
            path: config_path,
            line: e.line(),
            column: e.column(),
            detail: e.to_string(),
        });
    }
    let root = spans::index(text, body_start).map_err(|offset| InstallError::Internal {
        path: config_path.clone(),
        offset,
        what: "validated JSON could not be indexed",
    })?;

    let servers = collect_servers(text, &root, opts.client, opts.scope, &mut report.skipped)
        .map_err(|what| InstallError::Unsupported {
            path: config_path.clone(),
            what,
        })?;
    let mut edits: Vec<Edit> = Vec::new();
    for s in &servers {
        let outcome = match action {
            Action::Install => wrap::wrap(text, &s.name, s.entry, proxy_exe),
            Action::Uninstall => wrap::unwrap(text, &s.name, s.entry, proxy_exe),
        };
        match outcome {
            Outcome::Changed(e) => {
                edits.extend(e);
                report.changed.push(s.label.clone());
            }
            Outcome::Skipped(why) => report.skipped.push((s.label.clone(), why)),
        }
    }
    if edits.is_empty() {
        return Ok(report);
    }

    let new_text = apply(text, edits).map_err(|offset| InstallError::Internal {
        path: config_path.clone(),
        offset,
        what: "overlapping edits",
    })?;
    if serde_json::from_str::<serde::de::IgnoredAny>(&new_text[body_start..]).is_err() {
        return Err(InstallError::Internal {
            path: config_path,
            offset: 0,
            what: "the edited file would not be valid JSON",
        });
    }
    if action == Action::Install
        && !uninstall_restores(
            &new_text,
            body_start,
            text,
            opts,
            proxy_exe,
            &report.changed,
        )
    {
        return Err(InstallError::Internal {
            path: config_path,
            offset: 0,
            what: "uninstall would not restore the original exactly",
        });
    }
    let shown = config_path.display().to_string();
    report.diff = similar::TextDiff::from_lines(text, new_text.as_str())
        .unified_diff()
        .context_radius(3)
        .header(&shown, &shown)
        .to_string();

    if !opts.dry_run {
        let stamp = files::utc_stamp()?;
        report.backup = Some(files::backup(&real, &bytes, &meta, &stamp)?);
        files::replace_atomically(&real, &bytes, new_text.as_bytes(), &meta)?;
    }
    Ok(report)
}

/// Self-check before writing: unwrapping exactly the servers we just wrapped
/// must give back the original bytes.
fn uninstall_restores(
    wrapped: &str,
    body_start: usize,
    original: &str,
    opts: &InstallOptions,
    proxy_exe: &str,
    changed: &[String],
) -> bool {
    let Ok(root) = spans::index(wrapped, body_start) else {
        return false;
    };
    let mut ignored = Vec::new();
    let Ok(servers) = collect_servers(wrapped, &root, opts.client, opts.scope, &mut ignored) else {
        return false;
    };
    let mut edits = Vec::new();
    let mut unwrapped = 0;
    for s in servers.iter().filter(|s| changed.contains(&s.label)) {
        match wrap::unwrap(wrapped, &s.name, s.entry, proxy_exe) {
            Outcome::Changed(e) => {
                edits.extend(e);
                unwrapped += 1;
            }
            Outcome::Skipped(_) => return false,
        }
    }
    unwrapped == changed.len() && apply(wrapped, edits).is_ok_and(|t| t == original)
}

/// One server entry to consider.
struct Server<'a> {
    /// For the report.
    label: String,
    /// The key, used as `--name`.
    name: String,
    entry: &'a Node,
}

/// Find the server entries of this client/scope. Problems with individual
/// containers go to `skipped`; a non-object top level is an error.
fn collect_servers<'a>(
    doc: &str,
    root: &'a Node,
    client: Client,
    scope: Scope,
    skipped: &mut Vec<(String, String)>,
) -> Result<Vec<Server<'a>>, String> {
    let Kind::Object(top) = &root.kind else {
        return Err("the top-level value is not a JSON object".into());
    };
    let key = client.servers_key();
    let mut out = Vec::new();
    servers_in(doc, top, key, key, None, &mut out, skipped);
    if client == Client::ClaudeCode && scope == Scope::User {
        match lookup(top, "projects") {
            Lookup::Missing => {}
            Lookup::Duplicate => skipped.push((
                "projects".into(),
                "\"projects\" appears more than once; per-project servers left alone".into(),
            )),
            Lookup::One(m) => match &m.value.kind {
                Kind::Object(projects) => {
                    for p in projects {
                        let place = format!("projects[{:?}].{key}", p.key);
                        if let Kind::Object(pm) = &p.value.kind {
                            servers_in(doc, pm, key, &place, Some(&p.key), &mut out, skipped);
                        }
                    }
                }
                _ => skipped.push((
                    "projects".into(),
                    "\"projects\" is not an object; per-project servers left alone".into(),
                )),
            },
        }
    }
    Ok(out)
}

fn servers_in<'a>(
    doc: &str,
    members: &'a [spans::Member],
    key: &str,
    place: &str,
    project: Option<&str>,
    out: &mut Vec<Server<'a>>,
    skipped: &mut Vec<(String, String)>,
) {
    let label = |name: &str| match project {
        Some(p) => format!("{name} (project {p})"),
        None => name.to_string(),
    };
    match lookup(members, key) {
        Lookup::Missing => {}
        Lookup::Duplicate => skipped.push((
            place.to_string(),
            format!("\"{key}\" appears more than once; its servers were left alone"),
        )),
        Lookup::One(m) => match &m.value.kind {
            Kind::Object(servers) => {
                for (i, s) in servers.iter().enumerate() {
                    let count = servers.iter().filter(|o| o.key == s.key).count();
                    if count > 1 {
                        if servers.iter().position(|o| o.key == s.key) == Some(i) {
                            skipped.push((
                                label(&s.key),
                                format!(
                                    "defined {count} times; editors disagree on which one \
                                     counts, so none were touched"
                                ),
                            ));
                        }
                        continue;
                    }
                    out.push(Server {
                        label: label(&s.key),
                        name: s.key.clone(),
                        entry: &s.value,
                    });
                }
            }
            _ => skipped.push((
                place.to_string(),
                format!(
                    "is {} rather than an object of servers; not understood",
                    short_text(m.value.text(doc))
                ),
            )),
        },
    }
}

fn short_text(s: &str) -> String {
    let mut out: String = s.chars().take(40).collect();
    if out.len() < s.len() {
        out.push('…');
    }
    out
}

/// Apply non-overlapping edits; on overlap returns the offending offset.
fn apply(doc: &str, mut edits: Vec<Edit>) -> Result<String, usize> {
    edits.sort_by_key(|e| (e.start, e.end));
    let mut out = String::with_capacity(doc.len() + edits.len() * 64);
    let mut pos = 0;
    for e in &edits {
        if e.start < pos || e.end < e.start || e.end > doc.len() {
            return Err(e.start);
        }
        out.push_str(doc.get(pos..e.start).ok_or(e.start)?);
        out.push_str(&e.text);
        pos = e.end;
    }
    out.push_str(doc.get(pos..).ok_or(pos)?);
    Ok(out)
}
