//! Statement checks before anything runs: user SQL may not reach the host or the engine's
//! settings through the functions a query calls or the relations it names.
//!
//! DuckDB's own settings are the first wall (external access off except the node's own
//! directories, configuration locked, no extensions); statements other than queries and the
//! supported DDL are refused by [`crate::sql::plan`]. This module refuses, anywhere in a
//! statement (CTEs, subqueries, `EXPLAIN`, `CREATE TABLE … AS`, `INSERT … SELECT`, prepared
//! statements, which all pass through here):
//! - functions that read files, list directories, run SQL from a string, or reveal settings,
//!   secrets or the environment ([`FORBIDDEN_FUNCTIONS`]);
//! - relations named like a file path (`FROM 'data.csv'`, `FROM "/etc/passwd"`), which DuckDB
//!   would read through a replacement scan.
//!
//! Statements `sqlparser` cannot read are checked on DuckDB's own parse tree
//! ([`check_duckdb_parse`]).

use std::ops::ControlFlow;

use sqlparser::ast::{Expr, ObjectName, Statement, TableFactor, Visit, Visitor};

use crate::error::{Error, Result};

/// Functions user SQL may not call (compared without case and schema).
pub const FORBIDDEN_FUNCTIONS: &[&str] = &[
    // Files and directories.
    "read_csv",
    "read_csv_auto",
    "csv_scan",
    "sniff_csv",
    "read_parquet",
    "parquet_scan",
    "parquet_metadata",
    "parquet_schema",
    "parquet_file_metadata",
    "parquet_kv_metadata",
    "parquet_bloom_probe",
    "read_json",
    "read_json_auto",
    "read_json_objects",
    "read_json_objects_auto",
    "read_ndjson",
    "read_ndjson_auto",
    "read_ndjson_objects",
    "json_scan",
    "read_text",
    "read_blob",
    "glob",
    "read_xlsx",
    "st_read",
    "iceberg_scan",
    "iceberg_metadata",
    "delta_scan",
    "sqlite_scan",
    "sqlite_attach",
    "postgres_scan",
    "postgres_attach",
    "mysql_scan",
    "arrow_scan",
    "arrow_scan_dumb",
    // SQL from strings.
    "query",
    "query_table",
    // Settings, secrets, environment, engine state.
    "getenv",
    "current_setting",
    "duckdb_settings",
    "duckdb_secrets",
    "which_secret",
    "load_aws_credentials",
    "duckdb_extensions",
    "duckdb_temporary_files",
    "checkpoint",
    "force_checkpoint",
    "enable_profiling",
    "disable_profiling",
];

/// File name endings DuckDB reads by replacement scan.
const FILE_SUFFIXES: &[&str] = &[
    ".csv", ".tsv", ".txt", ".parquet", ".json", ".jsonl", ".ndjson", ".arrow", ".ipc", ".feather",
    ".xlsx", ".db", ".duckdb", ".sqlite", ".gz", ".zst", ".gzip", ".avro", ".orc",
];

fn forbidden_function(name: &str) -> Option<Error> {
    let lower = name.to_lowercase();
    FORBIDDEN_FUNCTIONS.contains(&lower.as_str()).then(|| {
        Error::Forbidden(format!(
            "function {name} is not allowed: queries cannot read files, run SQL from strings or \
             read engine settings, secrets or the environment; load data with DoPut (bulk \
             ingest) instead"
        ))
    })
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
pub fn check_statement(statement: &Statement) -> Result<()> {
    let mut checker = Checker { found: None };
    let _ = statement.visit(&mut checker);
    match checker.found {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// The same check on DuckDB's parse tree (`json_serialize_sql` output), for statements
/// `sqlparser` cannot read: every `function_name` and `table_name` in it.
pub fn check_duckdb_parse(tree: &serde_json::Value) -> Result<()> {
    match tree {
        serde_json::Value::Object(map) => {
            for (key, value) in map {
                if let serde_json::Value::String(s) = value {
                    let found = match key.as_str() {
                        "function_name" => forbidden_function(s),
                        "table_name" => forbidden_function(s).or_else(|| file_like_relation(s)),
                        _ => None,
                    };
                    if let Some(e) = found {
                        return Err(e);
                    }
                }
                check_duckdb_parse(value)?;
            }
            Ok(())
        }
        serde_json::Value::Array(items) => items.iter().try_for_each(check_duckdb_parse),
        _ => Ok(()),
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

    #[test]
    fn duckdb_parse_trees_are_checked_too() {
        let tree: serde_json::Value = serde_json::json!({"statements": [{"node": {
            "from_table": {"type": "TABLE_FUNCTION", "function": {"function_name": "read_csv"}}}}]});
        assert!(check_duckdb_parse(&tree).is_err());
        let tree =
            serde_json::json!({"from_table": {"type": "BASE_TABLE", "table_name": "/etc/passwd"}});
        assert!(check_duckdb_parse(&tree).is_err());
        let tree = serde_json::json!({"from_table": {"type": "BASE_TABLE", "table_name": "trips"}});
        assert!(check_duckdb_parse(&tree).is_ok());
    }
}
