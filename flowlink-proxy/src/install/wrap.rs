//! Wrapping and unwrapping one server entry, expressed as text splices.
//!
//! Wrapped form: `command` = the proxy executable, `args` =
//! `["--name", <server name>, "--", <original command>, <original args…>]`.
//!
//! Splices are chosen so that unwrapping a wrapped entry restores the original
//! bytes exactly:
//! * `command`'s value is replaced; the original command is moved verbatim
//!   (raw JSON text, escapes and all) into `args`, and moved back on unwrap.
//! * The four prefix items are inserted directly in front of the first
//!   original item, each followed by the separator the array already uses, so
//!   removing "first item .. fifth item" restores the array.
//! * An empty `args` array gets the prefix inserted right after `[`.
//! * A missing `args` is added right after `command` in compact form
//!   (`["--name","x","--","cmd"]`, no spaces); unwrap recognises that exact
//!   shape and removes the member again. (Missing and empty `args` mean the
//!   same thing to every client, so the heuristic cannot change behaviour.)

use super::spans::{Kind, Lookup, Member, Node, lookup};

/// Replace `doc[start..end]` with `text`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Edit {
    pub start: usize,
    pub end: usize,
    pub text: String,
}

#[derive(Debug)]
pub(crate) enum Outcome {
    Changed(Vec<Edit>),
    Skipped(String),
}

const REMOTE_TYPES: &[&str] = &[
    "http",
    "sse",
    "streamable-http",
    "streamablehttp",
    "streamable_http",
    "ws",
    "websocket",
];

/// True if `command` names the FlowLink proxy executable (either path style).
pub(crate) fn is_proxy_command(command: &str) -> bool {
    let file = command.rsplit(['/', '\\']).next().unwrap_or(command);
    file == "flowlink-proxy" || file.eq_ignore_ascii_case("flowlink-proxy.exe")
}

fn has_our_prefix(args: &[String]) -> bool {
    args.len() >= 3 && args[0] == "--name" && args[2] == "--"
}

fn json_str(s: &str) -> String {
    // Serializing a &str cannot fail; fall back to a hand-built literal anyway
    // rather than panicking.
    serde_json::to_string(s).unwrap_or_else(|_| format!("\"{}\"", s.escape_default()))
}

/// Why this entry is not a stdio server we can handle, if it isn't one.
fn not_stdio_reason(doc: &str, members: &[Member]) -> Option<String> {
    for key in ["url", "serverUrl"] {
        if !matches!(lookup(members, key), Lookup::Missing) {
            return Some(format!(
                "remote server (has \"{key}\"); FlowLink wraps only stdio servers"
            ));
        }
    }
    match lookup(members, "type") {
        Lookup::Missing => None,
        Lookup::Duplicate => Some("\"type\" appears more than once; fix the entry by hand".into()),
        Lookup::One(m) => match m.value.as_str(doc) {
            Some(t) if t == "stdio" => None,
            Some(t) if REMOTE_TYPES.contains(&t.to_ascii_lowercase().as_str()) => Some(format!(
                "remote server (type \"{t}\"); FlowLink wraps only stdio servers"
            )),
            Some(t) => Some(format!(
                "type \"{t}\" is not one FlowLink understands (only \"stdio\" is wrapped)"
            )),
            None => Some(format!(
                "\"type\" is {} rather than a string; not understood",
                m.value.text(doc)
            )),
        },
    }
}

/// The `command` member of a stdio entry, or why there isn't a usable one.
fn command_member<'a>(doc: &str, members: &'a [Member]) -> Result<(&'a Member, String), String> {
    match lookup(members, "command") {
        Lookup::Missing => Err("no \"command\" and no \"url\"; not understood".into()),
        Lookup::Duplicate => {
            Err("\"command\" appears more than once; fix the entry by hand".into())
        }
        Lookup::One(m) => match m.value.as_str(doc) {
            Some(c) if c.trim().is_empty() => Err("\"command\" is empty".into()),
            Some(c) => Ok((m, c)),
            None => Err(format!(
                "\"command\" is {} rather than a string; not understood",
                m.value.text(doc)
            )),
        },
    }
}

/// The `args` member (if any) and its decoded strings, or why it's unusable.
fn args_member<'a>(
    doc: &str,
    members: &'a [Member],
) -> Result<Option<(&'a Member, Vec<String>)>, String> {
    match lookup(members, "args") {
        Lookup::Missing => Ok(None),
        Lookup::Duplicate => Err("\"args\" appears more than once; fix the entry by hand".into()),
        Lookup::One(m) => match m.value.as_str_array(doc) {
            Some(a) => Ok(Some((m, a))),
            None => Err("\"args\" is not a list of strings; not understood".into()),
        },
    }
}

fn entry_members<'a>(entry: &'a Node, doc: &str) -> Result<&'a [Member], String> {
    match &entry.kind {
        Kind::Object(m) => Ok(m),
        _ => Err(format!(
            "entry is {} rather than an object; not understood",
            short(entry.text(doc))
        )),
    }
}

fn short(s: &str) -> String {
    if s.chars().count() > 40 {
        format!("{}…", s.chars().take(40).collect::<String>())
    } else {
        s.to_string()
    }
}

/// Wrap one server entry so the editor launches `proxy_exe` instead.
pub(crate) fn wrap(doc: &str, name: &str, entry: &Node, proxy_exe: &str) -> Outcome {
    match try_wrap(doc, name, entry, proxy_exe) {
        Ok(edits) => Outcome::Changed(edits),
        Err(why) => Outcome::Skipped(why),
    }
}

fn try_wrap(doc: &str, name: &str, entry: &Node, proxy_exe: &str) -> Result<Vec<Edit>, String> {
    let members = entry_members(entry, doc)?;
    if let Some(why) = not_stdio_reason(doc, members) {
        return Err(why);
    }
    let (cmd, command) = command_member(doc, members)?;
    let args = args_member(doc, members)?;
    if is_proxy_command(&command) {
        return Err("already wrapped by FlowLink".into());
    }
    if args.as_ref().is_some_and(|(_, a)| has_our_prefix(a)) {
        return Err("already wrapped by FlowLink (args start with --name … --)".into());
    }

    let raw_cmd = cmd.value.text(doc);
    let name_json = json_str(name);
    let mut edits = vec![Edit {
        start: cmd.value.start,
        end: cmd.value.end,
        text: json_str(proxy_exe),
    }];
    match args {
        Some((m, _)) => {
            let Kind::Array(items) = &m.value.kind else {
                return Err("\"args\" is not a list of strings; not understood".into());
            };
            match items.as_slice() {
                [] => edits.push(Edit {
                    start: m.value.start + 1,
                    end: m.value.start + 1,
                    text: format!("\"--name\", {name_json}, \"--\", {raw_cmd}"),
                }),
                [first, rest @ ..] => {
                    let sep = match rest.first() {
                        Some(second) => doc[first.end..second.start].to_string(),
                        None => {
                            let lead = &doc[m.value.start + 1..first.start];
                            if lead.contains('\n') {
                                format!(",{lead}")
                            } else {
                                ", ".to_string()
                            }
                        }
                    };
                    edits.push(Edit {
                        start: first.start,
                        end: first.start,
                        text: format!("\"--name\"{sep}{name_json}{sep}\"--\"{sep}{raw_cmd}{sep}"),
                    });
                }
            }
        }
        None => {
            let ws = member_whitespace(doc, entry, members, cmd);
            let colon = &doc[cmd.key_end..cmd.value.start];
            edits.push(Edit {
                start: cmd.value.end,
                end: cmd.value.end,
                text: format!(",{ws}\"args\"{colon}[\"--name\",{name_json},\"--\",{raw_cmd}]"),
            });
        }
    }
    Ok(edits)
}

/// The whitespace this object puts between a member separator comma and the
/// next key (e.g. "\n      " or " "), taken from the file itself.
fn member_whitespace(doc: &str, entry: &Node, members: &[Member], cmd: &Member) -> String {
    let idx = members
        .iter()
        .position(|m| std::ptr::eq(m, cmd))
        .unwrap_or(0);
    let between = if idx + 1 < members.len() {
        Some(&doc[members[idx].value.end..members[idx + 1].key_start])
    } else if idx > 0 {
        Some(&doc[members[idx - 1].value.end..members[idx].key_start])
    } else {
        None
    };
    match between {
        Some(text) => match text.find(',') {
            Some(i) => text[i + 1..].to_string(),
            None => " ".to_string(),
        },
        None => {
            let lead = &doc[entry.start + 1..cmd.key_start];
            if lead.contains('\n') {
                lead.to_string()
            } else {
                " ".to_string()
            }
        }
    }
}

/// Undo [`wrap`] on one entry, if it is in exactly the form `wrap` writes.
/// Only entries launching `proxy_exe` (this installation) are unwrapped;
/// wraps made with another flowlink-proxy were not made by us.
pub(crate) fn unwrap(doc: &str, name: &str, entry: &Node, proxy_exe: &str) -> Outcome {
    match try_unwrap(doc, name, entry, proxy_exe) {
        Ok(edits) => Outcome::Changed(edits),
        Err(why) => Outcome::Skipped(why),
    }
}

/// Same string, or the same file once symlinks are resolved.
fn same_executable(a: &str, b: &str) -> bool {
    a == b
        || matches!(
            (std::fs::canonicalize(a), std::fs::canonicalize(b)),
            (Ok(x), Ok(y)) if x == y
        )
}

fn try_unwrap(doc: &str, name: &str, entry: &Node, proxy_exe: &str) -> Result<Vec<Edit>, String> {
    const NOT_OURS: &str = "not wrapped by FlowLink";
    let members = entry_members(entry, doc)?;
    if let Some(why) = not_stdio_reason(doc, members) {
        return Err(why);
    }
    let (cmd, command) = command_member(doc, members).map_err(|_| NOT_OURS.to_string())?;
    if !is_proxy_command(&command) {
        return Err(NOT_OURS.into());
    }
    if !same_executable(&command, proxy_exe) {
        return Err(format!(
            "wrapped with a different flowlink-proxy ({command}), not this one ({proxy_exe}); \
             left as is — run uninstall with that binary, or unwrap it by hand"
        ));
    }
    let not_our_form = || {
        "runs flowlink-proxy, but its args are not the `--name <server> -- <command> …` \
         form the installer writes (edited since install?); left as is, unwrap it by hand"
            .to_string()
    };
    let Some((args_m, args)) = args_member(doc, members).map_err(|_| not_our_form())? else {
        return Err(not_our_form());
    };
    let Kind::Array(items) = &args_m.value.kind else {
        return Err(not_our_form());
    };
    if args.len() < 4 || !has_our_prefix(&args) || args[3].trim().is_empty() {
        return Err(not_our_form());
    }
    if args[1] != name {
        return Err(format!(
            "its --name is {:?} but the server is called {name:?} (edited since install?); \
             left as is, unwrap it by hand",
            args[1]
        ));
    }

    let raw_cmd = items[3].text(doc).to_string();
    let mut edits = vec![Edit {
        start: cmd.value.start,
        end: cmd.value.end,
        text: raw_cmd.clone(),
    }];
    let compact_added = format!("[\"--name\",{},\"--\",{raw_cmd}]", json_str(name));
    let directly_after_command = members
        .iter()
        .position(|m| std::ptr::eq(m, cmd))
        .and_then(|i| members.get(i + 1))
        .is_some_and(|next| std::ptr::eq(next, args_m))
        && doc[cmd.value.end..args_m.key_start]
            .strip_prefix(',')
            .is_some_and(|ws| ws.chars().all(char::is_whitespace));
    if items.len() == 4 && args_m.value.text(doc) == compact_added && directly_after_command {
        // We added the whole member; remove it again.
        edits.push(Edit {
            start: cmd.value.end,
            end: args_m.value.end,
            text: String::new(),
        });
    } else if items.len() == 4 {
        edits.push(Edit {
            start: items[0].start,
            end: items[3].end,
            text: String::new(),
        });
    } else {
        edits.push(Edit {
            start: items[0].start,
            end: items[4].start,
            text: String::new(),
        });
    }
    Ok(edits)
}
