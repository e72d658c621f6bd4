//! Launchers leave grandchildren: `npx` starts the real server as a child of its own. When the
//! editor goes away, the proxy must take the whole tree down with it.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use flowlink_e2e::{Proxy, node_modules, workspace_root};

/// Every process whose parent chain leads to `root`.
fn descendants(root: u32) -> Vec<u32> {
    let mut parent_of = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // The fields after the command name (which may contain spaces) start after the last ')'.
        let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
            continue;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        if let Some(ppid) = fields.get(1).and_then(|p| p.parse::<u32>().ok()) {
            parent_of.push((pid, ppid));
        }
    }
    let mut found = vec![root];
    let mut i = 0;
    while i < found.len() {
        let p = found[i];
        found.extend(parent_of.iter().filter(|(_, pp)| *pp == p).map(|(c, _)| *c));
        i += 1;
    }
    found.remove(0);
    found
}

fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| !s.contains(") Z "))
}

#[test]
fn npx_launched_servers_leave_no_orphans() {
    let proxy = Proxy::allow_all("everything");
    let server = vec![
        "npx".to_owned(),
        "--no-install".to_owned(),
        "mcp-server-everything".to_owned(),
        "stdio".to_owned(),
    ];
    let cmd = proxy.wrap(&server);
    // npx resolves the package from the pinned tests/node_modules.
    let cwd = node_modules()
        .parent()
        .map(|p| p.to_owned())
        .unwrap_or_else(workspace_root);
    let mut child = Command::new(&cmd[0])
        .args(&cmd[1..])
        .current_dir(cwd)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the proxy");
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    writeln!(
        stdin,
        r#"{{"jsonrpc":"2.0","id":1,"method":"initialize","params":{{"protocolVersion":"2025-06-18","capabilities":{{}},"clientInfo":{{"name":"lifecycle","version":"1"}}}}}}"#
    )
    .unwrap();
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    let v: serde_json::Value = serde_json::from_str(&line).expect("initialize answer");
    assert_eq!(v["id"], 1, "{line}");

    let tree = descendants(child.id());
    assert!(
        tree.len() >= 2,
        "npx should have started the server as a grandchild: {tree:?}"
    );
    drop(stdin); // the editor closes the session
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        assert!(Instant::now() < deadline, "proxy did not exit");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.code().is_some(), "{status:?}");
    std::thread::sleep(Duration::from_millis(200));
    let left: Vec<u32> = tree.into_iter().filter(|p| alive(*p)).collect();
    assert!(left.is_empty(), "processes left behind: {left:?}");
}
