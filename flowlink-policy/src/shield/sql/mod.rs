//! SQL analysis: parse with `sqlparser` in the configured dialect, walk every statement of the
//! tree (writable CTEs, `EXPLAIN ANALYZE`, stacked statements, MySQL executable comments) and
//! report what the SQL would change.
//!
//! Risk follows the shield bands: destroying data or schema wholesale, reading or writing server
//! files and running programs through the database are blocked (80+); every other write is sent to
//! approval (40–79); reads produce no finding. Text that does not parse is never silent: each
//! statement that fails to parse yields `database.unparsed` (60), plus a keyword heuristic so a
//! `DROP TABLE` next to garbage still lands in the block band.

mod lex;
#[cfg(test)]
mod tests;

use std::ops::ControlFlow;

use sqlparser::ast::{
    AlterRoleOperation, AlterTableOperation, BinaryOperator, ContextModifier, CopyTarget, Expr,
    Function, ObjectName, ObjectNamePart, ObjectType, Privileges, Query, RoleOption, Select, Set,
    SetExpr, Statement, TableFactor, UnaryOperator, Value, Values, Visit, VisitMut, Visitor,
    VisitorMut,
};
use sqlparser::dialect::{Dialect, GenericDialect, MySqlDialect, PostgreSqlDialect, SQLiteDialect};
use sqlparser::parser::Parser;

use super::{Category, InputKind, ShieldConfig, ShieldFinding, SqlDialect};

/// Deepest expression/query nesting handed to the parser; deeper input is a parse error
/// (a finding), never a stack overflow.
const RECURSION_LIMIT: usize = 64;
/// Most `[` a text may hold before it is refused unparsed (see [`parse`]).
const MAX_SUBSCRIPTS: usize = 256;
/// Longest evidence string.
const EVIDENCE_MAX: usize = 200;

/// Functions that read or write server files, run programs or open connections elsewhere.
const DANGEROUS_FUNCTIONS: &[&str] = &[
    "pg_read_file",
    "pg_read_binary_file",
    "pg_ls_dir",
    "pg_stat_file",
    "lo_import",
    "lo_export",
    "dblink",
    "dblink_exec",
    "dblink_connect",
    "dblink_send_query",
    "load_file",
    "sys_exec",
    "sys_eval",
    "xp_cmdshell",
    "xp_regread",
    "xp_dirtree",
    "sp_oacreate",
    "sp_execute_external_script",
    "openrowset",
    "opendatasource",
    "load_extension",
    "writefile",
    "readfile",
    "edit",
];

/// Analyses SQL text.
pub fn analyze(text: &str, cfg: &ShieldConfig) -> Vec<ShieldFinding> {
    let mut out = Vec::new();
    if text.trim().is_empty() {
        return out;
    }
    let lexed = lex::lex(text);
    let mut a = Analysis {
        cfg,
        out: &mut out,
        statements: 0,
        over_budget: false,
    };
    if !lexed.exec_comments.is_empty() {
        let (s, e) = lexed.exec_comments[0];
        let inside = text.get(s..e).unwrap_or("");
        a.out.push(finding(
            "database.executable_comment",
            50,
            "the SQL contains a MySQL executable comment (`/*! … */`): MySQL runs its content as code even though it looks like a comment, so it was analysed as code. Write the statement plainly instead of hiding it in a comment.".into(),
            inside,
        ));
    }
    let statements = if lexed.exec_comments.is_empty() {
        lexed.statements.clone()
    } else {
        lex::lex(&lexed.expanded).statements
    };
    let code = &lexed.expanded;
    // Fast path: the whole text parses.
    match parse(code, cfg.sql_dialect) {
        Ok(stmts) => {
            for s in &stmts {
                a.statement(s);
            }
            drop_shallow(stmts, code.len());
        }
        Err(_) => {
            // Statement by statement, so one bad statement does not hide the others.
            for &(s, e) in &statements {
                let chunk = code.get(s..e).unwrap_or("");
                if chunk_is_empty(chunk) {
                    continue;
                }
                match parse(chunk, cfg.sql_dialect) {
                    Ok(stmts) => {
                        for st in &stmts {
                            a.statement(st);
                        }
                        drop_shallow(stmts, chunk.len());
                    }
                    Err(err) => {
                        a.unparsed(chunk, &err.to_string());
                        // `EXPLAIN ANALYSE …`, `EXPLAIN VERBOSE ANALYZE …` and other spellings
                        // the grammar lacks may run the statement: analyse what follows.
                        if let Some(rest) = after_explain(chunk, cfg.sql_dialect) {
                            for st in &rest {
                                a.statement(st);
                            }
                            a.statements = a.statements.saturating_sub(rest.len());
                            drop_shallow(rest, chunk.len());
                        }
                    }
                }
                if a.over_budget {
                    break;
                }
            }
        }
    }
    a.keyword_heuristics(&lexed.code);
    if a.statements > 1 {
        a.out.push(finding(
            "database.multiple_statements",
            10,
            format!(
                "the text holds {} SQL statements run one after another; each was analysed on its own",
                a.statements
            ),
            text,
        ));
    }
    dedup(&mut out);
    out
}

/// Parses `sql` in `dialect`, with a recursion limit.
fn parse(sql: &str, dialect: SqlDialect) -> Result<Vec<Statement>, sqlparser::parser::ParserError> {
    let d: &dyn Dialect = match dialect {
        SqlDialect::Generic => &GenericDialect {},
        SqlDialect::Postgres => &PostgreSqlDialect {},
        SqlDialect::MySql => &MySqlDialect {},
        SqlDialect::Sqlite => &SQLiteDialect {},
    };
    // sqlparser recurses once per `[…]` subscript without counting it against the recursion
    // limit; a long chain (`a[1][1][1]…`) would overflow the stack.
    if sql.bytes().filter(|b| *b == b'[').count() > MAX_SUBSCRIPTS {
        return Err(sqlparser::parser::ParserError::RecursionLimitExceeded);
    }
    Parser::new(d)
        .with_recursion_limit(RECURSION_LIMIT)
        .try_with_sql(sql)?
        .parse_statements()
}

/// Drops a parsed tree without recursion deeper than the parser's own limit.
///
/// The parser builds operator chains (`a OR a OR …`, `SELECT … UNION SELECT …`) in a loop, so
/// their depth is not bounded by the recursion limit, and the compiler-generated `Drop` would
/// recurse once per level and overflow the stack. The visitor (which grows its stack on the heap)
/// detaches every expression and set operation bottom-up, so each one dropped afterwards is shallow.
fn drop_shallow(mut stmts: Vec<Statement>, len: usize) {
    if len < 1024 {
        return;
    }
    struct Detach {
        exprs: Vec<Expr>,
        sets: Vec<SetExpr>,
    }
    impl VisitorMut for Detach {
        type Break = ();
        fn post_visit_expr(&mut self, e: &mut Expr) -> ControlFlow<()> {
            self.exprs
                .push(std::mem::replace(e, Expr::Value(Value::Null.into())));
            ControlFlow::Continue(())
        }
        fn post_visit_query(&mut self, q: &mut Query) -> ControlFlow<()> {
            let mut stack = vec![std::mem::replace(q.body.as_mut(), empty_set())];
            while let Some(mut s) = stack.pop() {
                if let SetExpr::SetOperation { left, right, .. } = &mut s {
                    stack.push(std::mem::replace(left.as_mut(), empty_set()));
                    stack.push(std::mem::replace(right.as_mut(), empty_set()));
                }
                self.sets.push(s);
            }
            ControlFlow::Continue(())
        }
    }
    fn empty_set() -> SetExpr {
        SetExpr::Values(Values {
            explicit_row: false,
            value_keyword: false,
            rows: Vec::new(),
        })
    }
    let mut d = Detach {
        exprs: Vec::new(),
        sets: Vec::new(),
    };
    let _ = VisitMut::visit(&mut stmts, &mut d);
    drop(stmts);
    drop(d);
}

/// The statement after an `EXPLAIN` prefix the parser did not understand, if there is one.
fn after_explain(chunk: &str, dialect: SqlDialect) -> Option<Vec<Statement>> {
    let t = chunk.trim_start();
    if !t
        .get(..7)
        .is_some_and(|p| p.eq_ignore_ascii_case("explain"))
    {
        return None;
    }
    let mut rest = &t[7..];
    for _ in 0..8 {
        rest = rest.trim_start();
        if let Some(r) = rest.strip_prefix('(') {
            rest = &r[r.find(')')? + 1..];
        } else {
            let end = rest
                .find(|c: char| !c.is_ascii_alphabetic())
                .unwrap_or(rest.len());
            if end == 0 {
                return None;
            }
            rest = &rest[end..];
        }
        if let Ok(stmts) = parse(rest, dialect)
            && !stmts.is_empty()
        {
            return Some(stmts);
        }
    }
    None
}

/// Whether an `EXPLAIN (…)` option makes it execute the statement: `ANALYZE` unless switched off.
fn explain_option_runs(o: &sqlparser::ast::UtilityOption) -> bool {
    if !o.name.value.eq_ignore_ascii_case("analyze") {
        return false;
    }
    match &o.arg {
        None => true,
        Some(e) => {
            let v = e.to_string().to_ascii_lowercase();
            !matches!(
                v.as_str(),
                "false" | "off" | "0" | "'false'" | "'off'" | "no"
            )
        }
    }
}

fn chunk_is_empty(chunk: &str) -> bool {
    lex::lex(chunk).code.trim().is_empty()
}

fn finding(id: &'static str, risk: u8, explanation: String, evidence: &str) -> ShieldFinding {
    ShieldFinding {
        id,
        category: Category::Database,
        risk,
        explanation,
        evidence: super::evidence(evidence.trim(), EVIDENCE_MAX),
    }
}

fn dedup(out: &mut Vec<ShieldFinding>) {
    let mut seen = std::collections::HashSet::new();
    out.retain(|f| seen.insert((f.id, f.evidence.clone())));
}

struct Analysis<'a> {
    cfg: &'a ShieldConfig,
    out: &'a mut Vec<ShieldFinding>,
    statements: usize,
    over_budget: bool,
}

impl Analysis<'_> {
    fn unparsed(&mut self, chunk: &str, err: &str) {
        self.statements += 1;
        let err = super::evidence(err, 120);
        self.out.push(finding(
            "database.unparsed",
            60,
            format!(
                "FlowLink could not parse this SQL ({err}), so it cannot tell what it would do and a person has to look at it. Write it as plain, standard SQL."
            ),
            chunk,
        ));
    }

    /// Analyses one top-level statement and everything nested in it.
    fn statement(&mut self, stmt: &Statement) {
        if self.over_budget {
            return;
        }
        self.statements += 1;
        if self.statements > self.cfg.budget.max_units {
            self.over_budget = true;
            self.out.push(super::budget_exceeded(
                InputKind::Sql,
                &format!(
                    "the SQL holds more than {} statements",
                    self.cfg.budget.max_units
                ),
            ));
            return;
        }
        // Plain EXPLAIN shows a plan without running anything; EXPLAIN ANALYZE runs it.
        if let Statement::Explain {
            analyze, options, ..
        } = stmt
            && !*analyze
            && !options
                .as_deref()
                .is_some_and(|o| o.iter().any(explain_option_runs))
        {
            return;
        }
        if let Statement::ExplainTable { .. } = stmt {
            return;
        }
        let evidence = Evidence {
            stmt,
            text: std::cell::OnceCell::new(),
        };
        let mut v = Walker {
            a: self,
            evidence: &evidence,
        };
        let _ = stmt.visit(&mut v);
    }

    fn push_ev(
        &mut self,
        id: &'static str,
        risk: u8,
        explanation: String,
        evidence: &Evidence<'_>,
    ) {
        self.out
            .push(finding(id, risk, explanation, evidence.get()));
    }

    fn push(&mut self, id: &'static str, risk: u8, explanation: String, evidence: &str) {
        self.out.push(finding(id, risk, explanation, evidence));
    }

    /// Heuristics over the code-only view, for what the parser cannot represent or did not parse.
    fn keyword_heuristics(&mut self, code: &str) {
        // `SELECT … INTO OUTFILE/DUMPFILE` (MySQL) is not in sqlparser's grammar.
        if let Some(p) = find_words(code, &["into", "outfile"])
            .or_else(|| find_words(code, &["into", "dumpfile"]))
        {
            self.push(
                "database.into_outfile",
                90,
                "`SELECT … INTO OUTFILE/DUMPFILE` makes the database server write a file on its own disk (a classic way to plant a web shell or leak data). Export through the client instead (`mysql -e … > file`).".into(),
                &code[p..],
            );
        }
        if !self.out.iter().any(|f| f.id == "database.unparsed") {
            return;
        }
        // The parser failed somewhere: make sure obvious destruction is not downgraded to 60.
        for (words, id, risk, what) in [
            (
                &["drop", "table"][..],
                "database.drop_table",
                90u8,
                "drops a table",
            ),
            (
                &["drop", "database"][..],
                "database.drop_database",
                95,
                "drops a database",
            ),
            (
                &["drop", "schema"][..],
                "database.drop_schema",
                90,
                "drops a schema",
            ),
            (
                &["truncate"][..],
                "database.truncate",
                90,
                "empties a table",
            ),
            (&["copy"][..], "database.copy", 60, "copies data in or out"),
        ] {
            if let Some(p) = find_words(code, words) {
                if id == "database.copy" {
                    if find_words(&code[p..], &["program"]).is_some() {
                        self.push("database.copy_program", 95, "SQL that could not be parsed contains `COPY … PROGRAM`, which runs a shell command on the database server. Run the program yourself instead.".into(), &code[p..]);
                    }
                    continue;
                }
                self.push(
                    id,
                    risk,
                    format!("SQL that could not be parsed {what} (`{}`); dropped data cannot be recovered without a backup. Ask a person to run it if it is really intended.", words.join(" ").to_uppercase()),
                    &code[p..],
                );
            }
        }
        for f in DANGEROUS_FUNCTIONS {
            if let Some(p) = find_words(code, &[f]) {
                self.push(
                    "database.dangerous_function",
                    90,
                    format!("SQL that could not be parsed calls `{f}`, which reads or writes server files, runs programs or connects elsewhere from inside the database. Do not use it from an agent."),
                    &code[p..],
                );
            }
        }
    }
}

/// Position of the word sequence `words` (separated by whitespace) in `code`, on word boundaries.
fn find_words(code: &str, words: &[&str]) -> Option<usize> {
    let first = words.first()?;
    let b = code.as_bytes();
    let is_word = |c: u8| c.is_ascii_alphanumeric() || c == b'_' || c == b'$';
    let mut from = 0;
    while let Some(rel) = code.get(from..)?.find(first) {
        let p = from + rel;
        from = p + first.len();
        if p > 0 && is_word(b[p - 1]) {
            continue;
        }
        let mut q = p + first.len();
        if q < b.len() && is_word(b[q]) {
            continue;
        }
        let mut ok = true;
        for w in &words[1..] {
            while q < b.len() && (b[q].is_ascii_whitespace() || b[q] == b'(') {
                q += 1;
            }
            if code.get(q..).is_some_and(|r| r.starts_with(w))
                && !(q + w.len() < b.len() && is_word(b[q + w.len()]))
            {
                q += w.len();
            } else {
                ok = false;
                break;
            }
        }
        if ok {
            return Some(p);
        }
    }
    None
}

fn last_name(name: &ObjectName) -> String {
    match name.0.last() {
        Some(ObjectNamePart::Identifier(i)) => i.value.to_ascii_lowercase(),
        Some(ObjectNamePart::Function(f)) => f.name.value.to_ascii_lowercase(),
        None => String::new(),
    }
}

fn is_dangerous_function(name: &ObjectName) -> Option<String> {
    let n = last_name(name);
    DANGEROUS_FUNCTIONS.contains(&n.as_str()).then_some(n)
}

/// A statement's text for evidence, rendered only when a finding needs it.
struct Evidence<'a> {
    stmt: &'a Statement,
    text: std::cell::OnceCell<String>,
}

impl Evidence<'_> {
    fn get(&self) -> &str {
        self.text.get_or_init(|| {
            // Render at most what the evidence can show.
            use std::fmt::Write as _;
            let mut w = Bounded(String::new());
            let _ = write!(w, "{}", self.stmt);
            w.0
        })
    }
}

/// A `fmt::Write` that stops (with an error, ending the formatting) once it holds enough.
struct Bounded(String);

impl std::fmt::Write for Bounded {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0.push_str(s);
        if self.0.len() > EVIDENCE_MAX + 8 {
            Err(std::fmt::Error)
        } else {
            Ok(())
        }
    }
}

struct Walker<'a, 'b> {
    a: &'a mut Analysis<'b>,
    evidence: &'a Evidence<'a>,
}

impl Visitor for Walker<'_, '_> {
    type Break = ();

    fn pre_visit_statement(&mut self, s: &Statement) -> ControlFlow<()> {
        classify(self.a, s, self.evidence);
        ControlFlow::Continue(())
    }

    fn pre_visit_expr(&mut self, e: &Expr) -> ControlFlow<()> {
        if let Expr::Function(Function { name, .. }) = e {
            self.dangerous(name);
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_table_factor(&mut self, t: &TableFactor) -> ControlFlow<()> {
        match t {
            TableFactor::Table { name, .. } | TableFactor::Function { name, .. } => {
                self.dangerous(name)
            }
            _ => {}
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_select(&mut self, s: &Select) -> ControlFlow<()> {
        if let Some(into) = &s.into {
            let targets = into
                .targets
                .iter()
                .map(|t| t.to_string())
                .collect::<Vec<_>>()
                .join(", ");
            if targets.starts_with('@') || targets.starts_with(':') {
                // MySQL / embedded-SQL variables, not a table.
                return ControlFlow::Continue(());
            }
            self.a.push_ev(
                "database.select_into",
                50,
                format!("`SELECT … INTO {}` creates a new table from the query; ask before creating tables, or run the plain SELECT.", targets),
                self.evidence,
            );
        }
        ControlFlow::Continue(())
    }
}

impl Walker<'_, '_> {
    fn dangerous(&mut self, name: &ObjectName) {
        if let Some(f) = is_dangerous_function(name) {
            self.a.push_ev(
                "database.dangerous_function",
                90,
                format!("`{f}` reads or writes files on the database server, runs programs or connects to other servers from inside the database; an agent has no routine reason to use it. Read files with the file tools instead."),
                self.evidence,
            );
        }
    }
}

fn names(ns: &[ObjectName]) -> String {
    ns.iter()
        .map(|n| n.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

fn is_production(cfg: &ShieldConfig, ns: &[ObjectName]) -> bool {
    let mut b = globset::GlobSetBuilder::new();
    for p in &cfg.production {
        if let Ok(g) = globset::GlobBuilder::new(&p.to_ascii_lowercase())
            .case_insensitive(true)
            .build()
        {
            b.add(g);
        }
    }
    let Ok(set) = b.build() else { return false };
    ns.iter().any(|n| {
        n.0.iter().any(|p| match p {
            ObjectNamePart::Identifier(i) => set.is_match(i.value.to_ascii_lowercase()),
            ObjectNamePart::Function(_) => false,
        })
    })
}

/// The finding for one statement node (not its children, which the walker visits).
fn classify(a: &mut Analysis<'_>, s: &Statement, ev: &Evidence<'_>) {
    match s {
        // Reads and session control.
        Statement::Query(_)
        | Statement::Explain { .. }
        | Statement::ExplainTable { .. }
        | Statement::ShowFunctions { .. }
        | Statement::ShowVariable { .. }
        | Statement::ShowStatus { .. }
        | Statement::ShowVariables { .. }
        | Statement::ShowCreate { .. }
        | Statement::ShowColumns { .. }
        | Statement::ShowCatalogs { .. }
        | Statement::ShowDatabases { .. }
        | Statement::ShowProcessList { .. }
        | Statement::ShowSchemas { .. }
        | Statement::ShowCharset(_)
        | Statement::ShowObjects(_)
        | Statement::ShowTables { .. }
        | Statement::ShowViews { .. }
        | Statement::ShowCollation { .. }
        | Statement::Use(_)
        | Statement::StartTransaction { .. }
        | Statement::Commit { .. }
        | Statement::Rollback { .. }
        | Statement::Savepoint { .. }
        | Statement::ReleaseSavepoint { .. }
        | Statement::Fetch { .. }
        | Statement::Declare { .. }
        | Statement::Close { .. }
        | Statement::Deallocate { .. }
        | Statement::Prepare { .. }
        | Statement::Analyze(_)
        | Statement::Assert { .. }
        | Statement::LISTEN { .. }
        | Statement::UNLISTEN { .. }
        | Statement::Print(_)
        | Statement::Return(_) => {}
        Statement::Pragma { value: None, .. } => {}
        Statement::Insert(_) => a.push_ev(
            "database.insert",
            50,
            "this INSERT adds rows; writes need a person's approval. Use a read-only query if you only need to look at data.".into(),
            ev,
        ),
        Statement::Update(u) => match &u.selection {
            None => a.push_ev(
                "database.update_all",
                85,
                "this UPDATE has no WHERE clause, so it rewrites every row of the table. Add a WHERE that selects only the rows you mean.".into(),
                ev,
            ),
            Some(w) if always_true(w, 0) => a.push_ev(
                "database.update_all",
                85,
                format!("this UPDATE's WHERE clause (`{}`) is always true, so it rewrites every row of the table. Add a WHERE that selects only the rows you mean.", super::evidence(&w.to_string(), 80)),
                ev,
            ),
            Some(_) => a.push_ev(
                "database.update",
                55,
                "this UPDATE changes rows; writes need a person's approval. Check the WHERE clause selects only the rows you mean.".into(),
                ev,
            ),
        },
        Statement::Delete(d) => match &d.selection {
            None if d.limit.is_some() => a.push_ev(
                "database.delete",
                65,
                "this DELETE has no WHERE clause, only a LIMIT, so it deletes arbitrary rows. Add a WHERE that selects the rows you mean.".into(),
                ev,
            ),
            None => a.push_ev(
                "database.delete_all",
                90,
                "this DELETE has no WHERE clause, so it deletes every row of the table. Add a WHERE that selects only the rows you mean.".into(),
                ev,
            ),
            Some(w) if always_true(w, 0) => a.push_ev(
                "database.delete_all",
                90,
                format!("this DELETE's WHERE clause (`{}`) is always true, so it deletes every row of the table. Add a WHERE that selects only the rows you mean.", super::evidence(&w.to_string(), 80)),
                ev,
            ),
            Some(_) => a.push_ev(
                "database.delete",
                60,
                "this DELETE removes rows; writes need a person's approval. Check the WHERE clause selects only the rows you mean.".into(),
                ev,
            ),
        },
        Statement::Merge(_) => a.push_ev(
            "database.merge",
            55,
            "this MERGE inserts, updates or deletes rows; writes need a person's approval.".into(),
            ev,
        ),
        Statement::Drop {
            object_type, names: ns, ..
        } => {
            let list = names(ns);
            let (id, risk, what) = match object_type {
                ObjectType::Table | ObjectType::ForeignTable => ("database.drop_table", 90, "table"),
                ObjectType::Database => ("database.drop_database", 95, "database"),
                ObjectType::Schema => ("database.drop_schema", 90, "schema"),
                ObjectType::Index => ("database.drop_index", 55, "index"),
                ObjectType::View | ObjectType::MaterializedView => ("database.drop_view", 60, "view"),
                ObjectType::Role | ObjectType::User | ObjectType::Group => ("database.drop_role", 70, "role"),
                _ => ("database.drop_object", 60, "object"),
            };
            let prod = matches!(object_type, ObjectType::Database | ObjectType::Schema)
                && is_production(a.cfg, ns);
            let explanation = if risk >= 80 {
                format!(
                    "`DROP {}` deletes the {what} `{list}` and all its data{}; it cannot be undone without a backup. Ask a person to do it by hand if it is really intended.",
                    what.to_uppercase(),
                    if prod { ", and the name looks like production" } else { "" }
                )
            } else {
                format!("this DROP removes the {what} `{list}`; schema changes need a person's approval.")
            };
            a.push_ev(id, if prod { 100 } else { risk }, explanation, ev);
        }
        Statement::DropFunction(_)
        | Statement::DropDomain(_)
        | Statement::DropProcedure { .. }
        | Statement::DropSecret { .. }
        | Statement::DropPolicy(_)
        | Statement::DropRule(_)
        | Statement::DropConnector { .. }
        | Statement::DropExtension(_)
        | Statement::DropOperator(_)
        | Statement::DropOperatorFamily(_)
        | Statement::DropOperatorClass(_)
        | Statement::DropTrigger(_) => a.push_ev(
            "database.drop_object",
            60,
            "this DROP removes a database object; schema changes need a person's approval.".into(),
            ev,
        ),
        Statement::Truncate(t) => a.push_ev(
            "database.truncate",
            90,
            format!(
                "`TRUNCATE` deletes every row of `{}` at once and cannot be rolled back in most databases. Delete the specific rows you mean with a WHERE clause instead.",
                t.table_names.iter().map(|t| t.name.to_string()).collect::<Vec<_>>().join(", ")
            ),
            ev,
        ),
        Statement::AlterTable(at) => {
            let mut worst: Option<(&'static str, u8, String)> = None;
            for op in &at.operations {
                let f = match op {
                    AlterTableOperation::DropColumn { .. } => Some(("database.alter_drop_column", 85, format!("`ALTER TABLE {} … DROP COLUMN` deletes a column and all the data in it; it cannot be undone without a backup. Ask a person to run it if it is intended.", at.name))),
                    AlterTableOperation::DropConstraint { .. }
                    | AlterTableOperation::DropPrimaryKey { .. }
                    | AlterTableOperation::DropForeignKey { .. } => Some(("database.alter_drop_constraint", 80, format!("`ALTER TABLE {} … DROP CONSTRAINT` removes an integrity guarantee other code relies on. Ask a person to run it if it is intended.", at.name))),
                    AlterTableOperation::DropPartitions { .. } => Some(("database.alter_drop_partition", 85, format!("`ALTER TABLE {} … DROP PARTITION` deletes the partition's rows. Ask a person to run it if it is intended.", at.name))),
                    _ => None,
                };
                if let Some(f) = f
                    && worst.as_ref().is_none_or(|w| w.1 < f.1)
                {
                    worst = Some(f);
                }
            }
            match worst {
                Some((id, risk, e)) => a.push_ev(id, risk, e, ev),
                None => a.push_ev("database.alter", 55, format!("this ALTER changes the schema of `{}`; schema changes need a person's approval.", at.name), ev),
            }
        }
        Statement::Copy { to, target, .. } => match target {
            CopyTarget::Program { command } => a.push_ev(
                "database.copy_program",
                95,
                format!("`COPY … {} PROGRAM '{}'` runs a shell command on the database server. Run commands through the shell tool, where they are checked, instead.", if *to { "TO" } else { "FROM" }, super::evidence(command, 80)),
                ev,
            ),
            CopyTarget::File { filename } => a.push_ev(
                "database.copy_file",
                85,
                format!("`COPY … {} '{}'` makes the database server {} a file on its own disk. Use `\\copy` or COPY … {} STDOUT/STDIN through the client instead.", if *to { "TO" } else { "FROM" }, super::evidence(filename, 80), if *to { "write" } else { "read" }, if *to { "TO" } else { "FROM" }),
                ev,
            ),
            CopyTarget::Stdin if !*to => a.push_ev(
                "database.copy_from",
                50,
                "`COPY … FROM STDIN` loads rows into a table; writes need a person's approval.".into(),
                ev,
            ),
            _ => {}
        },
        Statement::Grant(g) => {
            if matches!(g.privileges, Privileges::All { .. }) {
                a.push_ev("database.grant_all", 85, "`GRANT ALL` gives every privilege on the object away; grant only the specific privileges needed, and have a person do it.".into(), ev);
            } else {
                a.push_ev("database.grant", 60, "this GRANT changes who may read or change data; permission changes need a person's approval.".into(), ev);
            }
        }
        Statement::Revoke(_) | Statement::RevokeRole(_) | Statement::Deny(_) | Statement::AlterDefaultPrivileges(_) => a.push_ev(
            "database.revoke",
            60,
            "this statement changes privileges, which can lock people or services out; permission changes need a person's approval.".into(),
            ev,
        ),
        Statement::GrantRole(_) => a.push_ev("database.grant", 60, "this GRANT gives a role to someone; permission changes need a person's approval.".into(), ev),
        Statement::CreateRole(r) => {
            if r.superuser == Some(true) {
                a.push_ev("database.superuser", 90, "this creates a SUPERUSER role, which bypasses every permission check in the database. Create a role with only the privileges it needs, and have a person do it.".into(), ev);
            } else {
                a.push_ev("database.create_role", 55, "this creates a database role; permission changes need a person's approval.".into(), ev);
            }
        }
        Statement::AlterRole { operation, .. } => {
            let su = matches!(operation, AlterRoleOperation::WithOptions { options } if options.iter().any(|o| matches!(o, RoleOption::SuperUser(true))));
            if su {
                a.push_ev("database.superuser", 90, "this makes a role SUPERUSER, which bypasses every permission check in the database. Grant only the privileges needed, and have a person do it.".into(), ev);
            } else {
                a.push_ev("database.alter_role", 55, "this changes a database role; permission changes need a person's approval.".into(), ev);
            }
        }
        Statement::CreateUser(_) | Statement::AlterUser(_) => a.push_ev("database.alter_role", 55, "this creates or changes a database user; permission changes need a person's approval.".into(), ev),
        Statement::Call(f) => {
            if let Some(n) = is_dangerous_function(&f.name) {
                a.push_ev("database.dangerous_function", 90, format!("`CALL {n}` runs programs or touches server files from inside the database; an agent has no routine reason to use it."), ev);
            } else {
                a.push_ev("database.call", 50, format!("`CALL {}` runs a stored procedure, which can change anything; ask a person first.", f.name), ev);
            }
        }
        Statement::Execute { name, .. } => match name.as_ref().and_then(is_dangerous_function) {
            Some(n) => a.push_ev("database.dangerous_function", 95, format!("`EXEC {n}` runs an operating-system command from inside the database server; run commands through the shell tool instead."), ev),
            None => a.push_ev("database.call", 50, "this EXECUTE runs a stored procedure or prepared statement, which can change anything; ask a person first.".into(), ev),
        },
        Statement::Set(set) => set_finding(a, set, ev),
        Statement::CreateFunction(_) | Statement::CreateProcedure { .. } | Statement::CreateTrigger(_) | Statement::CreateExtension(_) | Statement::CreateMacro { .. } => a.push_ev(
            "database.create_code",
            60,
            "this installs code in the database (function, procedure, trigger or extension) that runs later with the database's privileges; ask a person first.".into(),
            ev,
        ),
        Statement::CreateTable(_)
        | Statement::CreateView(_)
        | Statement::CreateVirtualTable { .. }
        | Statement::CreateIndex(_)
        | Statement::CreateSchema { .. }
        | Statement::CreateDatabase { .. }
        | Statement::CreateSequence { .. }
        | Statement::CreateType { .. }
        | Statement::CreateDomain(_) => a.push_ev(
            "database.create",
            45,
            "this creates a database object; schema changes need a person's approval.".into(),
            ev,
        ),
        Statement::AttachDatabase { .. } | Statement::AttachDuckDBDatabase { .. } => a.push_ev(
            "database.attach",
            60,
            "`ATTACH DATABASE` opens (or creates) another database file on the server's disk; ask a person first.".into(),
            ev,
        ),
        Statement::LoadData { .. } | Statement::Load { .. } | Statement::Install { .. } => a.push_ev(
            "database.load",
            65,
            "this loads a file or extension into the database; ask a person first.".into(),
            ev,
        ),
        Statement::Kill { .. } => a.push_ev("database.kill", 60, "`KILL` ends another session or query; ask a person first.".into(), ev),
        Statement::Vacuum(_) | Statement::OptimizeTable { .. } | Statement::Flush { .. } | Statement::Cache { .. } | Statement::UNCache { .. } | Statement::Discard { .. } | Statement::Reset(_) | Statement::NOTIFY { .. } | Statement::Comment { .. } | Statement::RefreshMaterializedView(_) => {
            a.push_ev("database.maintenance", 40, "this maintenance statement changes server or object state; ask a person first.".into(), ev)
        }
        _ => a.push_ev(
            "database.write",
            50,
            "this statement changes data, schema or server state; writes need a person's approval. Use a read-only query if you only need to look.".into(),
            ev,
        ),
    }
}

fn set_finding(a: &mut Analysis<'_>, set: &Set, ev: &Evidence<'_>) {
    match set {
        Set::SingleAssignment { scope: Some(ContextModifier::Global), .. } => a.push_ev(
            "database.set_global",
            60,
            "`SET GLOBAL` changes a server setting for every session; ask a person first.".into(),
            ev,
        ),
        Set::SetRole { .. } | Set::SetSessionAuthorization(_) => a.push_ev(
            "database.set_role",
            55,
            "this switches the role the session acts as; privilege changes need a person's approval.".into(),
            ev,
        ),
        Set::SingleAssignment { .. } | Set::ParenthesizedAssignments { .. } | Set::MultipleAssignments { .. } => a.push_ev(
            "database.set",
            15,
            "this SET changes a setting of the current session only.".into(),
            ev,
        ),
        _ => a.push_ev("database.set", 40, "this SET changes a server or session setting; ask a person first.".into(), ev),
    }
}

// ---- tautologies -------------------------------------------------------------------------------

#[derive(Debug, PartialEq)]
enum Const {
    Num(f64),
    Str(String),
    Bool(bool),
    Null,
}

fn constant(e: &Expr, depth: usize) -> Option<Const> {
    if depth > 32 {
        return None;
    }
    match e {
        Expr::Nested(x) => constant(x, depth + 1),
        Expr::Value(v) => match &v.value {
            Value::Number(n, _) => n.parse().ok().map(Const::Num),
            Value::SingleQuotedString(s) | Value::DoubleQuotedString(s) => {
                Some(Const::Str(s.clone()))
            }
            Value::Boolean(b) => Some(Const::Bool(*b)),
            Value::Null => Some(Const::Null),
            _ => None,
        },
        Expr::UnaryOp {
            op: UnaryOperator::Minus,
            expr,
        } => match constant(expr, depth + 1)? {
            Const::Num(n) => Some(Const::Num(-n)),
            _ => None,
        },
        Expr::UnaryOp {
            op: UnaryOperator::Plus,
            expr,
        } => constant(expr, depth + 1),
        _ => None,
    }
}

fn truthy(c: &Const) -> Option<bool> {
    match c {
        Const::Num(n) => Some(*n != 0.0),
        Const::Bool(b) => Some(*b),
        Const::Str(s) => s.trim().parse::<f64>().ok().map(|n| n != 0.0),
        Const::Null => None,
    }
}

fn compare(l: &Const, r: &Const) -> Option<std::cmp::Ordering> {
    match (l, r) {
        (Const::Num(a), Const::Num(b)) => a.partial_cmp(b),
        (Const::Str(a), Const::Str(b)) => Some(a.cmp(b)),
        (Const::Bool(a), Const::Bool(b)) => Some(a.cmp(b)),
        (Const::Num(a), Const::Str(b)) => {
            b.trim().parse::<f64>().ok().and_then(|b| a.partial_cmp(&b))
        }
        (Const::Str(a), Const::Num(b)) => {
            a.trim().parse::<f64>().ok().and_then(|a| a.partial_cmp(b))
        }
        _ => None,
    }
}

/// Whether `e` holds for every row (conservatively: `true` only when sure).
fn always_true(e: &Expr, depth: usize) -> bool {
    if depth > 32 {
        return false;
    }
    let d = depth + 1;
    if let Some(c) = constant(e, d) {
        return truthy(&c) == Some(true);
    }
    match e {
        Expr::Nested(x) => always_true(x, d),
        Expr::UnaryOp {
            op: UnaryOperator::Not,
            expr,
        } => always_false(expr, d),
        Expr::BinaryOp { left, op, right } => match op {
            BinaryOperator::Or => always_true(left, d) || always_true(right, d),
            BinaryOperator::And => always_true(left, d) && always_true(right, d),
            _ => compare_holds(left, op, right, d) == Some(true),
        },
        Expr::IsNotNull(x) => matches!(constant(x, d), Some(c) if c != Const::Null),
        Expr::IsNull(x) => matches!(constant(x, d), Some(Const::Null)),
        Expr::IsTrue(x) => always_true(x, d),
        Expr::IsNotFalse(x) => always_true(x, d),
        Expr::IsFalse(x) | Expr::IsNotTrue(x) => always_false(x, d),
        Expr::Like {
            negated: false,
            pattern,
            ..
        }
        | Expr::ILike {
            negated: false,
            pattern,
            ..
        } => {
            matches!(constant(pattern, d), Some(Const::Str(s)) if !s.is_empty() && s.chars().all(|c| c == '%'))
        }
        Expr::Between {
            expr,
            negated: false,
            low,
            high,
        } => match (constant(expr, d), constant(low, d), constant(high, d)) {
            (Some(x), Some(l), Some(h)) => {
                compare(&l, &x).is_some_and(|o| o.is_le())
                    && compare(&x, &h).is_some_and(|o| o.is_le())
            }
            _ => false,
        },
        _ => false,
    }
}

/// Whether `e` holds for no row.
fn always_false(e: &Expr, depth: usize) -> bool {
    if depth > 32 {
        return false;
    }
    let d = depth + 1;
    if let Some(c) = constant(e, d) {
        return truthy(&c) == Some(false);
    }
    match e {
        Expr::Nested(x) => always_false(x, d),
        Expr::UnaryOp {
            op: UnaryOperator::Not,
            expr,
        } => always_true(expr, d),
        Expr::BinaryOp { left, op, right } => match op {
            BinaryOperator::Or => always_false(left, d) && always_false(right, d),
            BinaryOperator::And => always_false(left, d) || always_false(right, d),
            _ => compare_holds(left, op, right, d) == Some(false),
        },
        _ => false,
    }
}

/// Whether the comparison `l op r` is decided regardless of the row.
fn compare_holds(l: &Expr, op: &BinaryOperator, r: &Expr, d: usize) -> Option<bool> {
    use std::cmp::Ordering::*;
    if let (Some(a), Some(b)) = (constant(l, d), constant(r, d)) {
        let o = compare(&a, &b)?;
        return match op {
            BinaryOperator::Eq | BinaryOperator::Spaceship => Some(o == Equal),
            BinaryOperator::NotEq => Some(o != Equal),
            BinaryOperator::Lt => Some(o == Less),
            BinaryOperator::LtEq => Some(o != Greater),
            BinaryOperator::Gt => Some(o == Greater),
            BinaryOperator::GtEq => Some(o != Less),
            _ => None,
        };
    }
    // `x = x` holds for every row where x is not NULL: treat it as "every row".
    if l == r {
        return match op {
            BinaryOperator::Eq
            | BinaryOperator::LtEq
            | BinaryOperator::GtEq
            | BinaryOperator::Spaceship => Some(true),
            BinaryOperator::NotEq | BinaryOperator::Lt | BinaryOperator::Gt => Some(false),
            _ => None,
        };
    }
    None
}
