//! Statement checks before anything runs: user SQL may not reach the host or the engine's
//! settings through the functions a query calls or the relations it names, and a user limited
//! to some tables reads nothing else.
//!
//! DuckDB's own settings are the first wall (external access off except the node's own
//! directories, configuration locked, no extensions); statements other than queries and the
//! supported DDL are refused by [`crate::sql::checked_plan`]. Then two parsers:
//! - on `sqlparser`'s parse, [`check_statement`] refuses forbidden functions and file-like
//!   relations early, with clear messages;
//! - on DuckDB's own parse of the text that will run ([`crate::duckdb_parse`]), the authority,
//!   [`check_query`] and [`check_tree`] allow only the functions on the lists of [`functions`]
//!   (by position: expression or `FROM`), only relations that are CTEs in scope, skein's tables
//!   (for a limited user, theirs) or catalog views (not for a limited user), and never files.
//!   [`check_one_statement`] makes sure DuckDB reads every text it runs as one statement.

use std::collections::HashSet;
use std::ops::ControlFlow;
use std::sync::LazyLock;

use sqlparser::ast::{Expr, ObjectName, Statement, TableFactor, Visit, Visitor};

use serde_json::{Map, Value};

use crate::auth::Identity;
use crate::duckdb_parse::{Parser, Reading};
use crate::error::{Error, Result};

#[cfg(test)]
mod agreement;
use skein_sql::functions;

/// File name endings DuckDB reads by replacement scan.
const FILE_SUFFIXES: &[&str] = &[
    ".csv", ".tsv", ".txt", ".parquet", ".json", ".jsonl", ".ndjson", ".arrow", ".ipc", ".feather",
    ".xlsx", ".db", ".duckdb", ".sqlite", ".gz", ".zst", ".gzip", ".avro", ".orc",
];

fn refused_function(name: &str) -> Error {
    Error::Forbidden(format!(
        "function {name} is not allowed: queries cannot read files, run SQL from strings or \
         read engine settings, secrets, logs or the environment; load data with DoPut (bulk \
         ingest) instead"
    ))
}

/// Lower-cased names of a list, for lookups.
fn set_of(lists: &[&[&str]]) -> HashSet<String> {
    lists
        .iter()
        .flat_map(|l| l.iter())
        .map(|n| n.to_lowercase())
        .collect()
}

static EXPRESSION_ALLOWED: LazyLock<HashSet<String>> =
    LazyLock::new(|| set_of(&[functions::EXPRESSION_ALLOWED]));
static EXPRESSION_CATALOG: LazyLock<HashSet<String>> =
    LazyLock::new(|| set_of(&[functions::EXPRESSION_CATALOG]));
static TABLE_ALLOWED: LazyLock<HashSet<String>> =
    LazyLock::new(|| set_of(&[functions::TABLE_ALLOWED]));
static TABLE_CATALOG: LazyLock<HashSet<String>> =
    LazyLock::new(|| set_of(&[functions::TABLE_CATALOG]));
static FORBIDDEN: LazyLock<HashSet<String>> = LazyLock::new(|| {
    set_of(&[
        functions::EXPRESSION_FORBIDDEN,
        functions::TABLE_FORBIDDEN,
        functions::PRAGMAS,
    ])
});

/// For the first wall (sqlparser's parse): a function on a forbidden list, in any position.
fn forbidden_function(name: &str) -> Option<Error> {
    let lower = name.to_lowercase();
    let allowed_somewhere = EXPRESSION_ALLOWED.contains(&lower) || TABLE_ALLOWED.contains(&lower);
    (FORBIDDEN.contains(&lower) && !allowed_somewhere).then(|| refused_function(name))
}

fn file_like_relation(name: &str) -> Option<Error> {
    let lower = name.to_lowercase();
    let file_like = lower.contains('/')
        || lower.contains('\\')
        || lower.contains("://")
        || lower.starts_with('~')
        || FILE_SUFFIXES.iter().any(|s| lower.ends_with(s));
    file_like.then(|| {
        Error::Forbidden(format!(
            "relation {name:?} looks like a file; queries can only read skein's tables"
        ))
    })
}

fn last_part(name: &ObjectName) -> Option<String> {
    name.0
        .last()
        .and_then(|p| p.as_ident())
        .map(|i| i.value.clone())
}

struct Checker {
    found: Option<Error>,
}

impl Visitor for Checker {
    type Break = ();

    fn pre_visit_relation(&mut self, relation: &ObjectName) -> ControlFlow<()> {
        if let Some(name) = last_part(relation) {
            self.found = forbidden_function(&name).or_else(|| file_like_relation(&name));
        }
        if self.found.is_some() {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    }

    fn pre_visit_table_factor(&mut self, factor: &TableFactor) -> ControlFlow<()> {
        if let TableFactor::TableFunction { expr, .. } = factor
            && let Expr::Function(f) = expr
            && let Some(name) = last_part(&f.name)
        {
            self.found = forbidden_function(&name);
        }
        if let TableFactor::Function { name, .. } = factor
            && let Some(name) = last_part(name)
        {
            self.found = forbidden_function(&name);
        }
        if self.found.is_some() {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    }

    fn pre_visit_expr(&mut self, expr: &Expr) -> ControlFlow<()> {
        if let Expr::Function(f) = expr
            && let Some(name) = last_part(&f.name)
        {
            self.found = forbidden_function(&name);
        }
        if self.found.is_some() {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    }
}

/// Refuses a parsed statement that calls a forbidden function or names a file as a relation.
pub(crate) fn check_statement(statement: &Statement) -> Result<()> {
    let mut checker = Checker { found: None };
    let _ = statement.visit(&mut checker);
    match checker.found {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// The authority: checks a query as DuckDB reads it (its `json_serialize_sql` tree) for the
/// caller. Every function in an expression must be allowed (catalog ones only for callers not
/// limited to some tables); every table function in `FROM` likewise; every relation must be a
/// CTE in scope, or not a file, not a forbidden internal view, and for a limited caller one of
/// their tables (unqualified or in `main`).
pub(crate) fn check_tree(tree: &Value, caller: Option<&Identity>, catalog: &str) -> Result<()> {
    let check = TreeCheck {
        caller: caller.filter(|c| c.tables.is_some()),
        catalog: catalog.to_lowercase(),
    };
    check.walk(tree, &[])
}

/// A tree walk with the CTE names in scope.
struct TreeCheck<'a> {
    /// The caller, if limited to some tables.
    caller: Option<&'a Identity>,
    /// The database's own catalog name, lower-cased.
    catalog: String,
}

fn text<'v>(map: &'v Map<String, Value>, key: &str) -> Option<&'v str> {
    map.get(key)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
}

impl TreeCheck<'_> {
    fn walk(&self, value: &Value, ctes: &[String]) -> Result<()> {
        match value {
            Value::Object(map) => self.object(map, ctes),
            Value::Array(items) => items.iter().try_for_each(|v| self.walk(v, ctes)),
            _ => Ok(()),
        }
    }

    fn object(&self, map: &Map<String, Value>, ctes: &[String]) -> Result<()> {
        // A query node's CTEs: each body sees the ones before it (a recursive one also itself,
        // in its recursive part); the node's own body sees them all.
        let mut scope = ctes.to_vec();
        if let Some(entries) = map
            .get("cte_map")
            .and_then(|m| m.get("map"))
            .and_then(Value::as_array)
        {
            for entry in entries {
                let name = entry
                    .get("key")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_lowercase();
                if let Some(Value::Object(value)) = entry.get("value") {
                    for (k, v) in value {
                        if k == "query_node" {
                            self.cte_body(v, &scope, &name)?;
                        } else {
                            self.walk(v, &scope)?;
                        }
                    }
                }
                scope.push(name);
            }
        }
        let kind = text(map, "type");
        match kind {
            Some("BASE_TABLE") => self.base_table(map, &scope)?,
            Some("TABLE_FUNCTION") => {
                if let Some(Value::Object(f)) = map.get("function") {
                    let name = text(f, "function_name").unwrap_or_default();
                    self.table_function(name)?;
                    for (k, v) in f {
                        if k != "function_name" {
                            self.walk(v, &scope)?;
                        }
                    }
                }
            }
            Some("SHOW_REF") => {
                if text(map, "show_type") == Some("SHOW_SPECIAL") {
                    self.catalog_read("SHOW")?;
                } else if let Some(name) = text(map, "table_name") {
                    self.relation(name, None, None)?;
                }
            }
            _ => {}
        }
        if let Some(name) = text(map, "function_name")
            && kind != Some("TABLE_FUNCTION")
        {
            self.expression_function(name)?;
        }
        for (k, v) in map {
            if k == "cte_map" || (kind == Some("TABLE_FUNCTION") && k == "function") {
                continue;
            }
            self.walk(v, &scope)?;
        }
        Ok(())
    }

    fn cte_body(&self, body: &Value, scope: &[String], name: &str) -> Result<()> {
        let recursive = body.get("type").and_then(Value::as_str) == Some("RECURSIVE_CTE_NODE")
            && body
                .get("cte_name")
                .and_then(Value::as_str)
                .is_some_and(|n| n.eq_ignore_ascii_case(name));
        let Value::Object(map) = body else {
            return self.walk(body, scope);
        };
        if !recursive {
            return self.object(map, scope);
        }
        let mut anchor = map.clone();
        let step = anchor.remove("right");
        self.object(&anchor, scope)?;
        if let Some(step) = step {
            let mut with_self = scope.to_vec();
            with_self.push(name.to_string());
            self.walk(&step, &with_self)?;
        }
        Ok(())
    }

    fn base_table(&self, map: &Map<String, Value>, ctes: &[String]) -> Result<()> {
        let name = text(map, "table_name").unwrap_or_default();
        let schema = text(map, "schema_name");
        let catalog = text(map, "catalog_name");
        if schema.is_none()
            && catalog.is_none()
            && ctes.iter().any(|c| c.eq_ignore_ascii_case(name))
        {
            return Ok(());
        }
        self.relation(name, schema, catalog)
    }

    fn relation(&self, name: &str, schema: Option<&str>, catalog: Option<&str>) -> Result<()> {
        if let Some(e) = file_like_relation(name) {
            return Err(e);
        }
        let lower = name.to_lowercase();
        let schema = schema.map(str::to_lowercase);
        let catalog = catalog.map(str::to_lowercase);
        // Unqualified names reach DuckDB's `main` and `pg_catalog` views through its search path.
        let candidates: Vec<String> = match schema.as_deref() {
            Some(s) => vec![format!("{s}.{lower}")],
            None => vec![format!("main.{lower}"), format!("pg_catalog.{lower}")],
        };
        let on = |list: &[&str]| candidates.iter().any(|c| list.contains(&c.as_str()));
        if on(functions::VIEWS_FORBIDDEN) {
            return Err(Error::Forbidden(format!(
                "relation {name} is not allowed: it shows engine settings, logs or other \
                 connections' statements"
            )));
        }
        let internal_schema =
            matches!(schema.as_deref(), Some("information_schema" | "pg_catalog"))
                || catalog.as_deref() == Some("system");
        if internal_schema || on(functions::VIEWS_CATALOG) {
            return self.catalog_read(name);
        }
        let Some(id) = self.caller else {
            return Ok(());
        };
        let ours = catalog.as_deref().is_none_or(|c| c == self.catalog)
            && schema.as_deref().is_none_or(|s| s == "main");
        if !ours || !id.may_use(name) {
            return Err(limited(id, name));
        }
        Ok(())
    }

    /// Reading the catalog: not for a caller limited to some tables.
    fn catalog_read(&self, what: &str) -> Result<()> {
        match self.caller {
            Some(id) => Err(Error::Forbidden(format!(
                "user {:?} may not read {what}: it lists the catalog, and they are limited to \
                 tables {}",
                id.user,
                id.tables.as_deref().unwrap_or_default().join(", ")
            ))),
            None => Ok(()),
        }
    }

    fn expression_function(&self, name: &str) -> Result<()> {
        self.function(name, &EXPRESSION_ALLOWED, &EXPRESSION_CATALOG, "function")
    }

    fn table_function(&self, name: &str) -> Result<()> {
        self.function(name, &TABLE_ALLOWED, &TABLE_CATALOG, "table function")
    }

    /// A function on `allowed` runs; one on `catalog` reads the catalog; any other is refused.
    fn function(
        &self,
        name: &str,
        allowed: &HashSet<String>,
        catalog: &HashSet<String>,
        kind: &str,
    ) -> Result<()> {
        let lower = name.to_lowercase();
        if allowed.contains(&lower) {
            return Ok(());
        }
        if catalog.contains(&lower) {
            return self.catalog_read(&format!("{kind} {name}"));
        }
        Err(refused_function(name))
    }
}

fn limited(id: &Identity, what: &str) -> Error {
    Error::Forbidden(format!(
        "user {:?} may not read {what:?}: they are limited to tables {}",
        id.user,
        id.tables.as_deref().unwrap_or_default().join(", ")
    ))
}

/// Checks that `sql` is exactly one query as DuckDB reads it, and what it touches, for the
/// caller of the request being served. `sqlparser_agrees` says whether the first parse read a
/// query too: if it did and DuckDB does not, the text hides something.
pub(crate) fn check_query(
    parser: &Parser,
    sql: &str,
    catalog: &str,
    caller: Option<&Identity>,
    sqlparser_agrees: bool,
) -> Result<()> {
    match parser.read(sql)? {
        Reading::Query(tree) => check_tree(&tree, caller, catalog),
        Reading::NotAQuery(n) if n > 1 => Err(Error::InvalidArgument(format!(
            "send one SQL statement per request (DuckDB reads {n} statements in this text)"
        ))),
        Reading::NotAQuery(_) if sqlparser_agrees => Err(Error::Forbidden(
            "DuckDB does not read this text as the query it appears to be; nothing ran".into(),
        )),
        Reading::NotAQuery(_) => Err(Error::Unsupported(
            "this statement is not supported; skein runs queries (SELECT, WITH, VALUES, \
             EXPLAIN, DESCRIBE, SHOW) and CREATE TABLE, CREATE TABLE AS, DROP TABLE, INSERT, \
             DELETE, UPDATE and ALTER TABLE … ADD COLUMN or SET (options)"
                .into(),
        )),
    }
}

/// Checks that DuckDB reads `sql` as exactly one statement (what `prepare` will run).
pub(crate) fn check_one_statement(parser: &Parser, sql: &str) -> Result<()> {
    match parser.statement_count(sql)? {
        1 => Ok(()),
        n => Err(Error::InvalidArgument(format!(
            "send one SQL statement per request (DuckDB reads {n} statements in this text)"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sqlparser::dialect::DuckDbDialect;
    use sqlparser::parser::Parser;

    fn check(sql: &str) -> Result<()> {
        let statements = Parser::parse_sql(&DuckDbDialect {}, sql).expect("parses");
        statements.iter().try_for_each(check_statement)
    }

    #[test]
    fn functions_and_file_relations_are_refused_anywhere() {
        for sql in [
            "SELECT * FROM read_csv('/etc/passwd')",
            "SELECT * FROM main.READ_PARQUET('x')",
            "WITH x AS (SELECT * FROM glob('/*')) SELECT * FROM x",
            "SELECT (SELECT count(*) FROM read_text('/etc/passwd'))",
            "SELECT getenv('HOME')",
            "SELECT * FROM t WHERE a IN (SELECT 1 FROM query('SELECT 1'))",
            "SELECT * FROM \"data.csv\"",
            "SELECT * FROM t, LATERAL (SELECT * FROM read_blob('/etc'))",
            "INSERT INTO t SELECT * FROM read_json('x')",
            "CREATE TABLE x AS SELECT current_setting('threads')",
        ] {
            assert!(matches!(check(sql), Err(Error::Forbidden(_))), "{sql}");
        }
        for sql in [
            "SELECT * FROM t WHERE name = 'read_csv'",
            "SELECT count(*), sum(x) FROM lineitem",
            "SELECT * FROM generate_series(1, 3)",
        ] {
            assert!(check(sql).is_ok(), "{sql}");
        }
    }

    /// Every function and internal view of the node's own DuckDB is on exactly one list.
    #[test]
    fn every_duckdb_function_and_view_is_classified() {
        let dir = tempfile::tempdir().expect("tempdir");
        for d in ["objects", "tmp", "duckdb-tmp", "cache"] {
            std::fs::create_dir_all(dir.path().join(d)).expect("mkdir");
        }
        let views = crate::read::system::permanent_statements();
        let engine =
            crate::engine::Engine::open(dir.path(), 1, "", 1 << 30, &views).expect("engine");
        let conn = engine.pooled().expect("connection");
        let mut stmt = conn
            .prepare("SELECT DISTINCT function_name, function_type FROM duckdb_functions()")
            .expect("prepare");
        let rows: Vec<(String, String)> = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .expect("query")
            .collect::<std::result::Result<_, _>>()
            .expect("rows");
        assert!(
            rows.len() > 500,
            "duckdb_functions() listed only {}",
            rows.len()
        );
        let on = |lists: &[&[&str]], name: &str| {
            lists
                .iter()
                .map(|l| l.iter().filter(|n| n.eq_ignore_ascii_case(name)).count())
                .sum::<usize>()
        };
        let mut unclassified = Vec::new();
        for (name, kind) in &rows {
            let lists: &[&[&str]] = match kind.as_str() {
                "scalar" | "aggregate" | "window" | "macro" => &[
                    functions::EXPRESSION_ALLOWED,
                    functions::EXPRESSION_CATALOG,
                    functions::EXPRESSION_FORBIDDEN,
                ],
                "table" | "table_macro" => &[
                    functions::TABLE_ALLOWED,
                    functions::TABLE_CATALOG,
                    functions::TABLE_FORBIDDEN,
                ],
                "pragma" => &[functions::PRAGMAS],
                other => panic!("unknown function type {other} of {name}"),
            };
            if on(lists, name) != 1 {
                unclassified.push(format!("{name} ({kind})"));
            }
        }
        let mut stmt = conn
            .prepare("SELECT schema_name || '.' || view_name FROM duckdb_views() WHERE internal")
            .expect("prepare");
        let views: Vec<String> = stmt
            .query_map([], |r| r.get(0))
            .expect("query")
            .collect::<std::result::Result<_, _>>()
            .expect("rows");
        assert!(
            views.len() > 20,
            "duckdb_views() listed only {}",
            views.len()
        );
        for v in &views {
            if on(&[functions::VIEWS_CATALOG, functions::VIEWS_FORBIDDEN], v) != 1 {
                unclassified.push(format!("{v} (internal view)"));
            }
        }
        assert!(
            unclassified.is_empty(),
            "classify these in sql/src/functions.rs (on exactly one list): {unclassified:?}"
        );
    }

    fn tree_check(sql: &str, caller: Option<&Identity>) -> Result<()> {
        let parser = crate::duckdb_parse::Parser::open().expect("parser");
        check_query(&parser, sql, "memory", caller, true)
    }

    fn limited_to(tables: &[&str]) -> Identity {
        Identity {
            user: "lena".into(),
            role: crate::auth::Role::Reader,
            tables: Some(tables.iter().map(|t| t.to_string()).collect()),
        }
    }

    /// Every name on a forbidden list is refused where it can be called, and every catalog
    /// function or view is refused to a user limited to tables: the lists are what the
    /// checker applies, not only what the classification test reads.
    #[test]
    fn every_listed_function_and_view_is_refused_where_it_is_called() {
        let lena = limited_to(&["pub"]);
        let refused = |sql: &str, caller: Option<&Identity>| {
            matches!(tree_check(sql, caller), Err(Error::Forbidden(_)))
        };
        let mut let_through = Vec::new();
        for name in functions::TABLE_FORBIDDEN {
            let sql = format!("SELECT * FROM \"{name}\"('x')");
            if !refused(&sql, None) {
                let_through.push(sql);
            }
        }
        for name in functions::EXPRESSION_FORBIDDEN {
            let sql = format!("SELECT a FROM pub WHERE \"{name}\"(a) IS NULL");
            if !refused(&sql, None) {
                let_through.push(sql);
            }
        }
        for view in functions::VIEWS_FORBIDDEN {
            let sql = format!("SELECT * FROM {view}");
            if !refused(&sql, None) {
                let_through.push(sql);
            }
        }
        for name in functions::TABLE_CATALOG {
            let sql = format!("SELECT * FROM \"{name}\"()");
            if !refused(&sql, Some(&lena)) {
                let_through.push(format!("{sql} (limited)"));
            }
        }
        for name in functions::EXPRESSION_CATALOG {
            let sql = format!("SELECT \"{name}\"() FROM pub");
            if !refused(&sql, Some(&lena)) {
                let_through.push(format!("{sql} (limited)"));
            }
        }
        for view in functions::VIEWS_CATALOG {
            let sql = format!("SELECT * FROM {view}");
            if !refused(&sql, Some(&lena)) {
                let_through.push(format!("{sql} (limited)"));
            }
        }
        assert!(let_through.is_empty(), "not refused: {let_through:#?}");
    }

    #[test]
    fn duckdb_trees_are_checked_with_cte_scopes() {
        let lena = limited_to(&["pub"]);
        for sql in [
            // A CTE named like the secret table in one scope does not hide it in another.
            "SELECT * FROM (WITH secret AS (SELECT 1) SELECT * FROM secret) x, secret",
            "SELECT * FROM pub WHERE 1 IN (WITH secret AS (SELECT 1) SELECT 1) \
             AND 2 IN (SELECT * FROM secret)",
            "WITH secret AS (SELECT * FROM secret) SELECT * FROM secret",
            "WITH a AS (SELECT * FROM b), b AS (SELECT 1) SELECT * FROM a",
            "WITH RECURSIVE secret AS (SELECT * FROM secret UNION ALL SELECT 1) \
             SELECT * FROM secret",
            "SELECT * FROM main.secret",
            "SELECT * FROM memory.main.secret",
            "SELECT * FROM temp.main.pub",
            "SELECT * FROM information_schema.tables",
            "SELECT * FROM duckdb_tables",
            "SELECT * FROM duckdb_tables()",
            "SHOW TABLES",
            "DESCRIBE secret",
            "SUMMARIZE secret",
            "SELECT * FROM pub, LATERAL (SELECT * FROM secret)",
            "SELECT has_table_privilege('secret', 'select')",
        ] {
            assert!(
                matches!(tree_check(sql, Some(&lena)), Err(Error::Forbidden(_))),
                "{sql}"
            );
        }
        for sql in [
            "SELECT * FROM pub",
            "WITH secret AS (SELECT 1 AS a) SELECT * FROM secret, pub",
            "WITH a AS (SELECT 1), b AS (SELECT * FROM a) SELECT * FROM b, pub",
            "WITH secret AS (SELECT 1) SELECT * FROM (SELECT * FROM secret) x, \
             (WITH y AS (SELECT 2) SELECT * FROM secret) z",
            "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r WHERE n < 3) \
             SELECT * FROM r",
            "DESCRIBE pub",
            "SELECT * FROM main.pub JOIN memory.main.pub USING (a)",
            "SELECT count(*), lower(x::VARCHAR) FROM range(3) r(x) GROUP BY 2",
        ] {
            assert!(tree_check(sql, Some(&lena)).is_ok(), "{sql}");
        }
    }

    #[test]
    fn functions_are_checked_by_position_and_list() {
        for sql in [
            "SELECT * FROM json_execute_serialized_sql(json_serialize_sql('SELECT 1'))",
            "SELECT * FROM read_duckdb('x')",
            "SELECT * FROM read_single_csv_file('x')",
            "SELECT * FROM parquet_full_metadata('x')",
            "SELECT * FROM pg_catalog.pg_settings",
            "SELECT * FROM pg_settings",
            "SELECT * FROM duckdb_logs",
            "SELECT * FROM histogram(t, a)",
            "SELECT json_serialize_plan('SELECT 1')",
            "SELECT \"CURRENT_SETTING\"('threads')",
            "SELECT system.main.current_setting('threads')",
            "SELECT a FROM t WHERE a = (SELECT getvariable('x'))",
            "SELECT * FROM t ORDER BY nextval('s')",
            "SELECT no_such_function(1)",
            "SELECT * FROM no_such_table_function()",
            "SELECT * FROM 'objects/t/x.parquet'",
        ] {
            assert!(
                matches!(tree_check(sql, None), Err(Error::Forbidden(_))),
                "{sql}"
            );
        }
        for sql in [
            "SELECT histogram(a) FROM t",
            "SELECT * FROM duckdb_tables()",
            "SELECT * FROM information_schema.columns",
            "SHOW TABLES",
            "SELECT list_transform([1, 2], lambda x: x + 1)",
            "SELECT * FROM generate_series(1, 3), unnest([1, 2])",
            "SELECT row_number() OVER (ORDER BY a), sum(a) OVER () FROM t",
        ] {
            assert!(tree_check(sql, None).is_ok(), "{sql}");
        }
    }
}
