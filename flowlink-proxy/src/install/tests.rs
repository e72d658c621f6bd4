use std::fs;
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::*;

const PROXY: &str = "/opt/flowlink/bin/flowlink-proxy";

/// `~/.claude.json` as Claude Code writes it (JSON.stringify, 2 spaces,
/// trailing newline), with top-level and per-project servers.
const CLAUDE_USER: &str = r#"{
  "numStartups": 42,
  "theme": "dark",
  "mcpServers": {
    "github": {
      "type": "stdio",
      "command": "npx",
      "args": [
        "-y",
        "@modelcontextprotocol/server-github"
      ],
      "env": {
        "GITHUB_PERSONAL_ACCESS_TOKEN": "ghp_example"
      }
    },
    "sentry": {
      "type": "http",
      "url": "https://mcp.sentry.dev/mcp"
    },
    "audited": {
      "type": "stdio",
      "command": "/usr/local/bin/flowlink-proxy",
      "args": [
        "--name",
        "audited",
        "--",
        "uvx",
        "mcp-server-time"
      ],
      "env": {}
    },
    "memory": {
      "type": "stdio",
      "command": "npx",
      "args": [],
      "env": {},
      "customField": {
        "keep": [1, 2.50, true, null, "\u00e9"]
      }
    }
  },
  "projects": {
    "/home/alice/src/app": {
      "allowedTools": [],
      "mcpServers": {
        "postgres": {
          "type": "stdio",
          "command": "docker",
          "args": [
            "run",
            "-i",
            "--rm",
            "mcp/postgres",
            "postgresql://localhost/app"
          ],
          "env": {}
        }
      },
      "hasTrustDialogAccepted": true
    },
    "/home/alice/src/empty": {
      "mcpServers": {}
    }
  },
  "userID": "0123abcd"
}
"#;

/// Project `.mcp.json` for Claude Code.
const CLAUDE_PROJECT: &str = r#"{
  "mcpServers": {
    "sqlite": {
      "command": "uvx",
      "args": ["mcp-server-sqlite", "--db-path", "./dev.db"],
      "env": {"LOG_LEVEL": "debug"}
    }
  }
}
"#;

/// Cursor: 4-space indent, inline arrays, no trailing newline, an odd server
/// name, a server without `args`, a remote one, one with a non-string command.
const CURSOR: &str = r#"{
    "mcpServers": {
        "filesystem": {
            "command": "npx",
            "args": ["-y", "@modelcontextprotocol/server-filesystem", "/Users/me/Desktop"],
            "env": { "DEBUG": "1" }
        },
        "-odd name \"quoted\" \u00e9 ü": {
            "command": "C:\\Tools\\server.exe"
        },
        "remote": { "url": "https://example.com/sse", "headers": { "Authorization": "Bearer x" } },
        "broken": { "command": 42 }
    },
    "x-unknown": { "nested": [1, { "a": null }], "n": 1e3 }
}"#;

/// Windsurf: tab-indented, `serverUrl` for remote, extra per-server fields.
const WINDSURF: &str = "{\n\t\"mcpServers\": {\n\t\t\"brave\": {\n\t\t\t\"command\": \"npx\",\n\t\t\t\"args\": [\n\t\t\t\t\"-y\",\n\t\t\t\t\"@modelcontextprotocol/server-brave-search\"\n\t\t\t],\n\t\t\t\"env\": {\n\t\t\t\t\"BRAVE_API_KEY\": \"key\"\n\t\t\t},\n\t\t\t\"disabled\": false,\n\t\t\t\"disabledTools\": []\n\t\t},\n\t\t\"remote\": {\n\t\t\t\"serverUrl\": \"https://example.com/mcp\"\n\t\t}\n\t}\n}\n";

/// VS Code: `servers` (not `mcpServers`), `inputs`, `type: stdio`, `cwd`,
/// `envFile`, a remote server and a stdio one without a command.
const VSCODE: &str = r#"{
  "inputs": [
    {
      "type": "promptString",
      "id": "api-key",
      "description": "API key",
      "password": true
    }
  ],
  "servers": {
    "fetch": {"type": "stdio", "command": "uvx", "args": ["mcp-server-fetch"], "cwd": "${workspaceFolder}"},
    "github": {"type": "http", "url": "https://api.githubcopilot.com/mcp/"},
    "weird": {"type": "stdio"},
    "single": {
      "command": "node",
      "args": [
        "server.js"
      ],
      "env": {"API_KEY": "${input:api-key}"},
      "envFile": "${workspaceFolder}/.env"
    }
  }
}
"#;

struct Env {
    _dir: tempfile::TempDir,
    root: PathBuf,
}

impl Env {
    fn new() -> Env {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().to_path_buf();
        Env { _dir: dir, root }
    }

    fn opts(&self, client: Client, scope: Scope) -> InstallOptions {
        InstallOptions {
            client,
            scope,
            dry_run: false,
            home: self.root.join("home"),
            config_dir: self.root.join("config"),
            project_dir: self.root.join("project"),
            proxy_exe: PathBuf::from(PROXY),
        }
    }

    /// Write `text` where `opts` expects the configuration; returns the path.
    fn put(&self, opts: &InstallOptions, text: &str) -> PathBuf {
        let path = opts.config_path().expect("config path");
        fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        fs::write(&path, text).expect("write fixture");
        path
    }
}

fn read(path: &Path) -> String {
    fs::read_to_string(path).expect("read")
}

fn json(path: &Path) -> Value {
    serde_json::from_str(&read(path)).expect("valid JSON after edit")
}

fn dir_entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .expect("read_dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

fn fixtures() -> Vec<(Client, Scope, &'static str)> {
    vec![
        (Client::ClaudeCode, Scope::User, CLAUDE_USER),
        (Client::ClaudeCode, Scope::Project, CLAUDE_PROJECT),
        (Client::Cursor, Scope::User, CURSOR),
        (Client::Cursor, Scope::Project, CURSOR),
        (Client::Windsurf, Scope::User, WINDSURF),
        (Client::VsCode, Scope::User, VSCODE),
        (Client::VsCode, Scope::Project, VSCODE),
    ]
}

fn skipped_reason<'a>(r: &'a Report, name: &str) -> &'a str {
    r.skipped
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, why)| why.as_str())
        .unwrap_or_else(|| panic!("{name} not in skipped: {:?}", r.skipped))
}

#[test]
fn parses_client_and_scope() {
    for c in Client::ALL {
        assert_eq!(c.as_str().parse::<Client>().expect("parse"), c);
    }
    assert_eq!("user".parse::<Scope>().expect("user"), Scope::User);
    assert_eq!("project".parse::<Scope>().expect("project"), Scope::Project);
    let e = "zed".parse::<Client>().expect_err("unknown").to_string();
    assert!(e.contains("zed") && e.contains("claude-code"), "{e}");
    assert!("global".parse::<Scope>().is_err());
}

#[test]
fn config_paths() {
    let env = Env::new();
    let p = |c, s| env.opts(c, s).config_path().expect("path");
    let r = &env.root;
    assert_eq!(
        p(Client::ClaudeCode, Scope::User),
        r.join("home/.claude.json")
    );
    assert_eq!(
        p(Client::ClaudeCode, Scope::Project),
        r.join("project/.mcp.json")
    );
    assert_eq!(
        p(Client::Cursor, Scope::User),
        r.join("home/.cursor/mcp.json")
    );
    assert_eq!(
        p(Client::Cursor, Scope::Project),
        r.join("project/.cursor/mcp.json")
    );
    assert_eq!(
        p(Client::Windsurf, Scope::User),
        r.join("home/.codeium/windsurf/mcp_config.json")
    );
    assert_eq!(
        p(Client::VsCode, Scope::User),
        r.join("config/Code/User/mcp.json")
    );
    assert_eq!(
        p(Client::VsCode, Scope::Project),
        r.join("project/.vscode/mcp.json")
    );
}

#[test]
fn claude_code_user_wraps_top_level_and_project_servers() {
    let env = Env::new();
    let opts = env.opts(Client::ClaudeCode, Scope::User);
    let path = env.put(&opts, CLAUDE_USER);
    let before: Value = serde_json::from_str(CLAUDE_USER).expect("fixture");

    let report = install(&opts).expect("install");
    assert_eq!(
        report.changed,
        vec!["github", "memory", "postgres (project /home/alice/src/app)"]
    );
    assert!(skipped_reason(&report, "sentry").contains("remote"));
    assert!(skipped_reason(&report, "audited").contains("already wrapped"));

    let after = json(&path);
    let gh = &after["mcpServers"]["github"];
    assert_eq!(gh["command"], PROXY);
    assert_eq!(
        gh["args"],
        serde_json::json!([
            "--name",
            "github",
            "--",
            "npx",
            "-y",
            "@modelcontextprotocol/server-github"
        ])
    );
    assert_eq!(gh["env"], before["mcpServers"]["github"]["env"]);
    assert_eq!(gh["type"], "stdio");
    assert_eq!(
        after["mcpServers"]["memory"]["args"],
        serde_json::json!(["--name", "memory", "--", "npx"])
    );
    let pg = &after["projects"]["/home/alice/src/app"]["mcpServers"]["postgres"];
    assert_eq!(pg["command"], PROXY);
    assert_eq!(pg["args"][1], "postgres");
    assert_eq!(pg["args"][3], "docker");
    assert_eq!(pg["args"][8], "postgresql://localhost/app");

    // Untouched: remote, already wrapped, unknown fields, key order.
    assert_eq!(
        after["mcpServers"]["sentry"],
        before["mcpServers"]["sentry"]
    );
    assert_eq!(
        after["mcpServers"]["audited"],
        before["mcpServers"]["audited"]
    );
    let keys = |v: &Value| -> Vec<String> {
        v.as_object()
            .expect("object")
            .keys()
            .cloned()
            .collect::<Vec<_>>()
    };
    assert_eq!(keys(&after), keys(&before));
    assert_eq!(
        keys(&after["mcpServers"]["memory"]),
        keys(&before["mcpServers"]["memory"])
    );
    let text = read(&path);
    // Formatting of untouched bytes survives exactly (2.50, \u00e9 escapes).
    assert!(text.contains(r#""keep": [1, 2.50, true, null, "\u00e9"]"#));
    assert!(text.ends_with("}\n"));
    // New array items follow the file's own 2-space layout.
    assert!(
        text.contains(
            "      \"args\": [\n        \"--name\",\n        \"github\",\n        \"--\",\n        \"npx\",\n        \"-y\",\n"
        ),
        "{text}"
    );
    // Report output.
    let shown = report.to_string();
    assert!(shown.contains("wrapped: github"), "{shown}");
    assert!(shown.contains("left alone: sentry"), "{shown}");
    assert!(shown.contains("backup of the original"), "{shown}");
    assert!(shown.contains("+      \"command\": \"/opt/flowlink/bin/flowlink-proxy\""));
}

#[test]
fn install_then_uninstall_is_byte_identical_for_every_client() {
    for (client, scope, fixture) in fixtures() {
        let env = Env::new();
        let opts = env.opts(client, scope);
        let path = env.put(&opts, fixture);

        let first = install(&opts).expect("install");
        assert!(
            !first.changed.is_empty(),
            "{client} {scope}: nothing wrapped"
        );
        assert_ne!(read(&path), fixture);
        json(&path);

        let back = uninstall(&opts).expect("uninstall");
        assert_eq!(back.changed, first.changed, "{client} {scope}");
        assert_eq!(read(&path), fixture, "{client} {scope}: not byte-identical");
        assert!(back.backup.is_some());
    }
}

#[test]
fn backup_is_the_original_with_its_permissions() {
    let env = Env::new();
    let opts = env.opts(Client::Cursor, Scope::User);
    let path = env.put(&opts, CURSOR);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&path, fs::Permissions::from_mode(0o640)).expect("chmod");
    }
    let report = install(&opts).expect("install");
    let backup = report.backup.expect("backup written");
    assert_eq!(backup.parent(), path.parent());
    let name = backup
        .file_name()
        .expect("name")
        .to_string_lossy()
        .into_owned();
    let stamp = name
        .strip_prefix("mcp.json.flowlink-backup-")
        .expect("backup name");
    assert_eq!(stamp.len(), 16, "{stamp}");
    assert_eq!(&stamp[8..9], "T");
    assert!(stamp.ends_with('Z'));
    assert_eq!(read(&backup), CURSOR);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| fs::metadata(p).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode(&backup), 0o640);
        assert_eq!(mode(&path), 0o640);
    }
    // Only the config and its backup: no temp files left behind.
    assert_eq!(
        dir_entries(path.parent().expect("dir")),
        vec!["mcp.json".to_string(), name]
    );
}

#[test]
fn dry_run_writes_nothing() {
    let env = Env::new();
    let mut opts = env.opts(Client::ClaudeCode, Scope::User);
    opts.dry_run = true;
    let path = env.put(&opts, CLAUDE_USER);
    let report = install(&opts).expect("dry run");
    assert_eq!(report.changed.len(), 3);
    assert!(report.backup.is_none());
    assert!(
        report
            .diff
            .contains("+      \"command\": \"/opt/flowlink/bin/flowlink-proxy\"")
    );
    assert_eq!(read(&path), CLAUDE_USER);
    assert_eq!(
        dir_entries(path.parent().expect("dir")),
        vec![".claude.json"]
    );
    let shown = report.to_string();
    assert!(shown.contains("dry run: nothing written"), "{shown}");
    assert!(shown.contains("would be wrapped: github"), "{shown}");

    // Same for uninstall.
    opts.dry_run = false;
    install(&opts).expect("install");
    let wrapped = read(&path);
    let entries = dir_entries(path.parent().expect("dir"));
    opts.dry_run = true;
    let report = uninstall(&opts).expect("dry-run uninstall");
    assert_eq!(report.changed.len(), 3);
    assert_eq!(read(&path), wrapped);
    assert_eq!(dir_entries(path.parent().expect("dir")), entries);
}

#[test]
fn install_is_idempotent() {
    let env = Env::new();
    let opts = env.opts(Client::Windsurf, Scope::User);
    let path = env.put(&opts, WINDSURF);
    let first = install(&opts).expect("install");
    assert_eq!(first.changed, vec!["brave"]);
    let once = read(&path);
    let entries = dir_entries(path.parent().expect("dir"));

    let second = install(&opts).expect("install again");
    assert!(second.changed.is_empty());
    assert!(second.backup.is_none());
    assert!(second.diff.is_empty());
    assert!(skipped_reason(&second, "brave").contains("already wrapped"));
    assert_eq!(read(&path), once);
    assert_eq!(dir_entries(path.parent().expect("dir")), entries);
    assert!(second.to_string().contains("nothing to wrap"));
}

#[test]
fn tab_indented_file_keeps_tabs() {
    let env = Env::new();
    let opts = env.opts(Client::Windsurf, Scope::User);
    let path = env.put(&opts, WINDSURF);
    install(&opts).expect("install");
    let text = read(&path);
    assert!(
        text.contains("\t\t\t\"args\": [\n\t\t\t\t\"--name\",\n\t\t\t\t\"brave\",\n\t\t\t\t\"--\",\n\t\t\t\t\"npx\",\n\t\t\t\t\"-y\",\n"),
        "{text}"
    );
    assert!(!text.contains("  "), "spaces crept in: {text}");
    let v = json(&path);
    assert_eq!(v["mcpServers"]["brave"]["disabled"], false);
    assert_eq!(v["mcpServers"]["brave"]["env"]["BRAVE_API_KEY"], "key");
    assert_eq!(
        v["mcpServers"]["remote"]["serverUrl"],
        "https://example.com/mcp"
    );
}

#[test]
fn cursor_inline_args_missing_args_and_odd_names() {
    let env = Env::new();
    let opts = env.opts(Client::Cursor, Scope::Project);
    let path = env.put(&opts, CURSOR);
    let report = install(&opts).expect("install");
    let odd = "-odd name \"quoted\" é ü";
    assert_eq!(report.changed, vec!["filesystem", odd]);
    assert!(skipped_reason(&report, "remote").contains("remote"));
    assert!(skipped_reason(&report, "broken").contains("rather than a string"));

    let text = read(&path);
    assert!(!text.ends_with('\n'), "trailing newline added");
    assert!(
        text.contains(
            r#""args": ["--name", "filesystem", "--", "npx", "-y", "@modelcontextprotocol/server-filesystem", "/Users/me/Desktop"],"#
        ),
        "{text}"
    );
    // Missing args: added right after command, original command bytes moved verbatim.
    assert!(
        text.contains(
            r#""command": "/opt/flowlink/bin/flowlink-proxy",
            "args": ["--name","-odd name \"quoted\" é ü","--","C:\\Tools\\server.exe"]"#
        ),
        "{text}"
    );
    let v = json(&path);
    let s = &v["mcpServers"][odd];
    assert_eq!(
        s["args"],
        serde_json::json!(["--name", odd, "--", "C:\\Tools\\server.exe"])
    );
    assert_eq!(v["mcpServers"]["broken"]["command"], 42);
    assert_eq!(v["x-unknown"]["n"], 1000.0);
    assert!(text.contains(r#""n": 1e3"#));
}

#[test]
fn vscode_uses_servers_key() {
    let env = Env::new();
    let opts = env.opts(Client::VsCode, Scope::Project);
    let path = env.put(&opts, VSCODE);
    let report = install(&opts).expect("install");
    assert_eq!(report.changed, vec!["fetch", "single"]);
    assert!(skipped_reason(&report, "github").contains("remote"));
    assert!(skipped_reason(&report, "weird").contains("no \"command\""));
    let v = json(&path);
    let fetch = &v["servers"]["fetch"];
    assert_eq!(fetch["cwd"], "${workspaceFolder}");
    assert_eq!(fetch["type"], "stdio");
    assert_eq!(
        fetch["args"],
        serde_json::json!(["--name", "fetch", "--", "uvx", "mcp-server-fetch"])
    );
    assert_eq!(v["servers"]["single"]["envFile"], "${workspaceFolder}/.env");
    assert_eq!(v["inputs"][0]["id"], "api-key");
}

#[test]
fn jsonc_is_refused_with_the_line() {
    let env = Env::new();
    let opts = env.opts(Client::VsCode, Scope::User);
    let commented =
        "{\n  \"servers\": {\n    // my server\n    \"a\": {\"command\": \"x\"}\n  }\n}\n";
    let path = env.put(&opts, commented);
    let err = install(&opts).expect_err("comments refused");
    match &err {
        InstallError::NotStrictJson { line, path: p, .. } => {
            assert_eq!(*line, 3);
            assert_eq!(p, &path);
        }
        other => panic!("unexpected {other:?}"),
    }
    let msg = err.to_string();
    assert!(msg.contains(&path.display().to_string()), "{msg}");
    assert!(msg.contains("line 3"), "{msg}");
    assert!(msg.contains("comments"), "{msg}");
    assert!(msg.contains("by hand"), "{msg}");
    assert_eq!(read(&path), commented);

    let trailing = "{\n  \"servers\": {\n    \"a\": {\"command\": \"x\"},\n  }\n}\n";
    env.put(&opts, trailing);
    match uninstall(&opts) {
        Err(InstallError::NotStrictJson { line: 4, .. }) => {}
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(read(&path), trailing);
    assert_eq!(dir_entries(path.parent().expect("dir")), vec!["mcp.json"]);
}

#[test]
fn windsurf_has_no_project_scope() {
    let env = Env::new();
    let opts = env.opts(Client::Windsurf, Scope::Project);
    let err = install(&opts).expect_err("unsupported");
    assert!(matches!(err, InstallError::ScopeNotSupported { .. }));
    let msg = err.to_string();
    assert!(msg.contains("--scope user"), "{msg}");
    assert!(uninstall(&opts).is_err());
}

#[test]
fn missing_file_and_empty_configs_are_not_errors() {
    let env = Env::new();
    let opts = env.opts(Client::Cursor, Scope::User);
    let report = install(&opts).expect("missing is fine");
    assert!(!report.found);
    assert!(report.changed.is_empty());
    let shown = report.to_string();
    assert!(
        shown.contains("no Cursor MCP configuration at")
            && shown.contains("mcp.json; nothing to wrap"),
        "{shown}"
    );
    assert!(!env.root.join("home").exists(), "created something");
    assert!(
        uninstall(&opts)
            .expect("missing")
            .to_string()
            .contains("nothing to unwrap")
    );

    for text in ["{}\n", "{\"mcpServers\": {}}", "", "  \n"] {
        let path = env.put(&opts, text);
        let report = install(&opts).expect("no servers is fine");
        assert!(report.found && report.changed.is_empty() && report.backup.is_none());
        assert!(report.to_string().contains("no MCP servers in"), "{report}");
        assert_eq!(read(&path), text);
    }
}

#[test]
fn top_level_not_an_object_is_an_error() {
    let env = Env::new();
    let opts = env.opts(Client::Cursor, Scope::User);
    env.put(&opts, "[1, 2]");
    let msg = install(&opts).expect_err("array").to_string();
    assert!(msg.contains("not a JSON object"), "{msg}");
}

#[test]
fn uninstall_leaves_user_edits_alone() {
    let env = Env::new();
    let opts = env.opts(Client::ClaudeCode, Scope::User);
    let path = env.put(&opts, CLAUDE_USER);
    install(&opts).expect("install");

    // After install the user: re-points "memory" at a new command (no longer
    // wrapped), adds env to the wrapped "github", renames the wrapped project
    // server, and adds a server of their own.
    let mut v = json(&path);
    v["mcpServers"]["memory"]["command"] = "bunx".into();
    v["mcpServers"]["memory"]["args"] = serde_json::json!(["memory-server"]);
    v["mcpServers"]["github"]["env"]["EXTRA"] = "1".into();
    let project = v["projects"]["/home/alice/src/app"]["mcpServers"]
        .as_object_mut()
        .expect("obj");
    let pg = project.remove("postgres").expect("postgres");
    project.insert("pg".into(), pg);
    v["mcpServers"]["mine"] = serde_json::json!({"command": "my-server", "args": ["--x"]});
    let edited = serde_json::to_string_pretty(&v).expect("ser");
    fs::write(&path, &edited).expect("write");

    let report = uninstall(&opts).expect("uninstall");
    assert_eq!(report.changed, vec!["github"]);
    assert!(skipped_reason(&report, "memory").contains("not wrapped"));
    assert!(skipped_reason(&report, "mine").contains("not wrapped"));
    assert!(skipped_reason(&report, "audited").contains("different flowlink-proxy"));
    assert!(skipped_reason(&report, "pg (project /home/alice/src/app)").contains("--name"));

    let after = json(&path);
    let gh = &after["mcpServers"]["github"];
    assert_eq!(gh["command"], "npx");
    assert_eq!(
        gh["args"],
        serde_json::json!(["-y", "@modelcontextprotocol/server-github"])
    );
    assert_eq!(gh["env"]["EXTRA"], "1");
    assert_eq!(after["mcpServers"]["memory"], v["mcpServers"]["memory"]);
    assert_eq!(after["mcpServers"]["mine"], v["mcpServers"]["mine"]);
    assert_eq!(
        after["projects"]["/home/alice/src/app"]["mcpServers"]["pg"]["command"],
        PROXY
    );
}

#[test]
fn uninstall_leaves_wraps_by_another_proxy_alone() {
    let env = Env::new();
    let opts = env.opts(Client::Cursor, Scope::User);
    let text = r#"{"mcpServers": {"a": {"command": "C:\\Program Files\\FlowLink\\flowlink-proxy.EXE", "args": ["--name", "a", "--", "npx", "srv"]}, "b": {"command": "/opt/flowlink/bin/flowlink-proxy", "args": ["--name", "b", "--", "npx", "srv2"]}}}"#;
    let path = env.put(&opts, text);
    let report = uninstall(&opts).expect("uninstall");
    assert_eq!(report.changed, vec!["b"]);
    assert!(skipped_reason(&report, "a").contains("different flowlink-proxy"));
    assert_eq!(
        read(&path),
        r#"{"mcpServers": {"a": {"command": "C:\\Program Files\\FlowLink\\flowlink-proxy.EXE", "args": ["--name", "a", "--", "npx", "srv"]}, "b": {"command": "npx", "args": ["srv2"]}}}"#
    );
}

#[cfg(unix)]
#[test]
fn uninstall_accepts_the_same_proxy_by_another_path() {
    let env = Env::new();
    let bin = env.root.join("bin");
    fs::create_dir_all(&bin).expect("mkdir");
    let real = bin.join("flowlink-proxy");
    fs::write(&real, "").expect("exe");
    let link_dir = env.root.join("links");
    fs::create_dir_all(&link_dir).expect("mkdir");
    let link = link_dir.join("flowlink-proxy");
    std::os::unix::fs::symlink(&real, &link).expect("symlink");

    let mut opts = env.opts(Client::Cursor, Scope::User);
    opts.proxy_exe = link;
    let path = env.put(&opts, CURSOR);
    install(&opts).expect("install");
    opts.proxy_exe = real;
    let report = uninstall(&opts).expect("uninstall");
    assert_eq!(report.changed.len(), 2);
    assert_eq!(read(&path), CURSOR);
}

#[test]
fn uninstall_with_nothing_wrapped_writes_nothing() {
    let env = Env::new();
    let opts = env.opts(Client::VsCode, Scope::User);
    let path = env.put(&opts, VSCODE);
    let report = uninstall(&opts).expect("uninstall");
    assert!(report.changed.is_empty() && report.backup.is_none());
    assert_eq!(read(&path), VSCODE);
    assert_eq!(dir_entries(path.parent().expect("dir")), vec!["mcp.json"]);
}

#[test]
fn exact_splices_round_trip() {
    // Compact / one-member objects, empty arrays with inner space, CRLF, BOM.
    let cases = [
        r#"{"mcpServers":{"s":{"command":"x"}}}"#,
        "{\"mcpServers\": {\"s\": {\n  \"command\": \"x\"\n}}}",
        r#"{"mcpServers":{"s":{"args":[ ],"command":"x"}}}"#,
        "\u{feff}{\r\n  \"mcpServers\": {\r\n    \"s\": {\r\n      \"command\": \"x\",\r\n      \"args\": [\r\n        \"a\"\r\n      ]\r\n    }\r\n  }\r\n}\r\n",
        r#"{"mcpServers":{"s":{"command":"x","args":["a" , "b"],"env":{}}}}"#,
    ];
    for case in cases {
        let env = Env::new();
        let opts = env.opts(Client::Cursor, Scope::User);
        let path = env.put(&opts, case);
        let r = install(&opts).expect("install");
        assert_eq!(r.changed, vec!["s"], "{case}");
        let wrapped = read(&path);
        let body = wrapped.trim_start_matches('\u{feff}');
        let v: Value = serde_json::from_str(body).expect("json");
        let args = v["mcpServers"]["s"]["args"].as_array().expect("args");
        assert_eq!(args[..4], ["--name", "s", "--", "x"], "{wrapped}");
        uninstall(&opts).expect("uninstall");
        assert_eq!(read(&path), case);
    }
}

#[cfg(unix)]
#[test]
fn symlinked_config_is_edited_in_place() {
    let env = Env::new();
    let opts = env.opts(Client::Cursor, Scope::User);
    let dotfiles = env.root.join("dotfiles");
    fs::create_dir_all(&dotfiles).expect("mkdir");
    let real = dotfiles.join("cursor-mcp.json");
    fs::write(&real, CURSOR).expect("write");
    let link = opts.config_path().expect("path");
    fs::create_dir_all(link.parent().expect("parent")).expect("mkdir");
    std::os::unix::fs::symlink(&real, &link).expect("symlink");

    let report = install(&opts).expect("install");
    assert!(
        fs::symlink_metadata(&link)
            .expect("meta")
            .file_type()
            .is_symlink()
    );
    assert_ne!(read(&real), CURSOR);
    assert_eq!(
        report.backup.expect("backup").parent(),
        Some(dotfiles.as_path())
    );
    uninstall(&opts).expect("uninstall");
    assert_eq!(read(&real), CURSOR);
}

#[test]
fn recognises_proxy_commands() {
    use super::wrap::is_proxy_command;
    assert!(is_proxy_command("flowlink-proxy"));
    assert!(is_proxy_command("/usr/bin/flowlink-proxy"));
    assert!(is_proxy_command("C:\\x\\flowlink-proxy.exe"));
    assert!(!is_proxy_command("flowlink-proxy-old"));
    assert!(!is_proxy_command("npx"));
}

#[test]
fn from_environment_gives_absolute_paths() {
    let opts = InstallOptions::from_environment(Client::VsCode, Scope::User, true).expect("env");
    assert!(opts.dry_run);
    assert!(opts.proxy_exe.is_absolute(), "{}", opts.proxy_exe.display());
    assert!(opts.proxy_exe.is_file());
    assert!(opts.project_dir.is_absolute());
    assert!(opts.home.is_absolute());
    assert!(
        opts.config_path()
            .expect("path")
            .ends_with("Code/User/mcp.json")
    );
}
