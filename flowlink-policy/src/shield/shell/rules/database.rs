//! Databases through their command-line clients; SQL goes to the SQL analyser.

use super::super::Ctx;
use super::super::walk::{Cmd, Stdin, Up};
use super::opt_value;
use crate::shield::Category;

const C: Category = Category::Database;

fn sql(ctx: &mut Ctx, text: &str, ev: &str) {
    for mut f in crate::shield::sql::analyze(text, ctx.cfg) {
        if f.evidence.is_empty() {
            f.evidence = crate::shield::evidence(ev, 200);
        }
        if !ctx
            .findings
            .iter()
            .any(|g| g.id == f.id && g.evidence == f.evidence)
        {
            ctx.findings.push(f);
        }
    }
}

pub(crate) fn check(ctx: &mut Ctx, cmd: &Cmd, name: &str, _depth: usize) {
    let args = &cmd.args;
    if !matches!(
        name,
        "psql"
            | "mysql"
            | "mariadb"
            | "sqlite3"
            | "clickhouse-client"
            | "cockroach"
            | "duckdb"
            | "sqlcmd"
            | "snowsql"
            | "bq"
            | "cqlsh"
            | "trino"
            | "usql"
            | "redis-cli"
            | "valkey-cli"
            | "keydb-cli"
            | "dropdb"
            | "dropuser"
            | "mysqladmin"
            | "mongo"
            | "mongosh"
    ) {
        return;
    }
    let ev = cmd.evidence();
    let stdin_sql = || match &cmd.stdin {
        Stdin::Here(b) => Some(b.clone()),
        Stdin::HereString(a) => Some(a.text.clone()),
        Stdin::Pipe(Up::Literal(s)) => Some(s.clone()),
        _ => None,
    };
    match name {
        "psql" | "mysql" | "mariadb" | "sqlite3" | "clickhouse-client" | "cockroach" | "duckdb"
        | "sqlcmd" | "snowsql" | "bq" | "cqlsh" | "trino" | "usql" => {
            let q = match name {
                "psql" => opt_value(args, Some("-c"), &["--command"]),
                "mysql" | "mariadb" => opt_value(args, Some("-e"), &["--execute"]),
                "clickhouse-client" => opt_value(args, Some("-q"), &["--query"]),
                "cockroach" | "cqlsh" | "trino" => opt_value(args, Some("-e"), &["--execute"]),
                "sqlcmd" => opt_value(args, Some("-Q"), &["-q"]),
                "snowsql" => opt_value(args, Some("-q"), &["--query"]),
                "usql" => opt_value(args, Some("-c"), &["--command"]),
                "bq" => {
                    if args.iter().any(|a| a.text == "rm") {
                        ctx.push(
                            "database.drop",
                            C,
                            80,
                            "`bq rm` deletes a BigQuery dataset or table.".to_owned(),
                            &ev,
                        );
                    }
                    args.iter()
                        .skip(1)
                        .filter(|a| !a.text.starts_with('-'))
                        .nth(1)
                        .map(|a| a.text.as_str())
                }
                _ => {
                    // sqlite3 [opts] DB [SQL]; duckdb likewise
                    let pos: Vec<&str> = args
                        .iter()
                        .skip(1)
                        .map(|a| a.text.as_str())
                        .filter(|t| !t.starts_with('-'))
                        .collect();
                    pos.get(1).copied()
                }
            };
            let file = match name {
                "psql" => opt_value(args, Some("-f"), &["--file"]),
                "sqlcmd" => opt_value(args, Some("-i"), &["--input-file"]),
                _ => None,
            };
            if let Some(f) = file {
                ctx.push("database.sql_file", C, 45, format!("This runs the SQL in `{f}` against the database; FlowLink cannot see the file's statements. Check the file first."), &ev);
            }
            if let Some(q) = q {
                let q = q.to_owned();
                if q.trim_start().starts_with('.') && matches!(name, "sqlite3" | "duckdb") {
                    // a dot-command (`.tables`, `.schema`)
                    return;
                }
                sql(ctx, &q, &ev);
            } else if let Some(s) = stdin_sql() {
                sql(ctx, &s, &ev);
            }
        }
        "redis-cli" | "valkey-cli" | "keydb-cli" => {
            let up: Vec<String> = args
                .iter()
                .skip(1)
                .map(|a| a.text.to_ascii_uppercase())
                .collect();
            let stdin = stdin_sql().unwrap_or_default().to_ascii_uppercase();
            if up.iter().any(|a| a == "FLUSHALL" || a == "FLUSHDB")
                || stdin.contains("FLUSHALL")
                || stdin.contains("FLUSHDB")
            {
                ctx.push("database.flush", C, 90, format!("`{name} FLUSHALL/FLUSHDB` deletes every key in the database. Delete the specific keys you mean."), &ev);
            } else if up.iter().any(|a| a == "SHUTDOWN") {
                ctx.push(
                    "database.shutdown",
                    C,
                    80,
                    "This shuts the Redis server down.".to_owned(),
                    &ev,
                );
            } else if up.iter().any(|a| a == "CONFIG") && up.iter().any(|a| a == "SET") {
                ctx.push("database.config_change", C, 60, "`CONFIG SET` changes the server's configuration (a common way to write files as the server).".to_owned(), &ev);
            } else if up
                .iter()
                .any(|a| matches!(a.as_str(), "DEL" | "UNLINK" | "EXPIRE"))
            {
                let unbounded =
                    args.iter().any(|a| a.dynamic) || args.iter().any(|a| a.text.contains('*'));
                if unbounded {
                    ctx.push("database.delete_all", C, 85, "This deletes keys produced by a scan or pattern (often every key); it is a FLUSHALL in disguise. Delete specific keys.".to_owned(), &ev);
                } else {
                    ctx.push(
                        "database.write",
                        C,
                        40,
                        "This deletes or expires keys.".to_owned(),
                        &ev,
                    );
                }
            }
        }
        "dropdb" => {
            let disposable = super::positionals(args)
                .last()
                .is_some_and(|d| crate::shield::shell::paths::is_disposable(ctx.cfg, &d.text));
            let risk = if disposable { 60 } else { 90 };
            ctx.push("database.drop_database", C, risk, "`dropdb` deletes the whole database. Do not run it from an agent on data that matters; take a backup and ask.".to_owned(), &ev)
        }
        "dropuser" => ctx.push(
            "database.drop_user",
            C,
            60,
            "`dropuser` deletes a database role.".to_owned(),
            &ev,
        ),
        "mysqladmin" if args.iter().any(|a| a.text == "drop") => {
            ctx.push(
                "database.drop_database",
                C,
                90,
                "`mysqladmin drop` deletes the whole database.".to_owned(),
                &ev,
            );
        }
        "mongo" | "mongosh" => {
            let code = opt_value(args, None, &["--eval"])
                .map(str::to_owned)
                .or_else(stdin_sql)
                .unwrap_or_default();
            let l = code.to_ascii_lowercase().replace(' ', "");
            if l.contains("dropdatabase(") {
                ctx.push(
                    "database.drop_database",
                    C,
                    90,
                    "`dropDatabase()` deletes the whole MongoDB database.".to_owned(),
                    &ev,
                );
            } else if l.contains(".drop(") {
                ctx.push(
                    "database.drop_table",
                    C,
                    85,
                    "`.drop()` deletes the collection and its data.".to_owned(),
                    &ev,
                );
            } else if l.contains("deletemany({})") || l.contains("remove({})") {
                ctx.push(
                    "database.delete_all",
                    C,
                    85,
                    "This deletes every document in the collection.".to_owned(),
                    &ev,
                );
            } else if l.contains("deletemany(")
                || l.contains("updatemany(")
                || l.contains(".remove(")
            {
                ctx.push(
                    "database.write",
                    C,
                    45,
                    "This changes or deletes documents.".to_owned(),
                    &ev,
                );
            }
        }
        _ => {}
    }
}
