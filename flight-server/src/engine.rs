//! The embedded DuckDB: one in-process database per node, opened locked down.
//!
//! User-visible tables are views in the `main` schema; each view unions the table's Parquet
//! files with its in-memory buffer tables, which live in the internal schema [`BUFFER_SCHEMA`].
//! All calls here block; callers run them on blocking threads.

use std::path::Path;
use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use duckdb::types::Value;
use duckdb::{Connection, params_from_iter};
use parking_lot::Mutex;

use crate::error::{Error, Result};

/// Schema holding the buffer tables; users never name it.
pub const BUFFER_SCHEMA: &str = "skein_buf";

/// The node's DuckDB database.
pub struct Engine {
    /// A connection kept open for cloning; every request gets its own clone.
    root: Mutex<Connection>,
    /// The catalog name DuckDB reports for the database (what Flight SQL calls the catalog).
    catalog_name: String,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("catalog_name", &self.catalog_name)
            .finish()
    }
}

/// Quotes an SQL identifier.
pub fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Quotes an SQL string literal.
pub fn literal(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

impl Engine {
    /// Opens an in-memory database that may read and write only below `data_dir`.
    pub fn open(data_dir: &Path, threads: usize) -> Result<Self> {
        let conn = Connection::open_in_memory()?;
        let dir = std::fs::canonicalize(data_dir)
            .map_err(|e| Error::Internal(format!("data directory {}: {e}", data_dir.display())))?;
        let mut setup = vec![
            "SET autoinstall_known_extensions = false".to_string(),
            "SET autoload_known_extensions = false".to_string(),
            format!(
                "SET allowed_directories = [{}]",
                literal(&format!("{}/", dir.display()))
            ),
            format!(
                "SET temp_directory = {}",
                literal(&format!("{}/duckdb-tmp", dir.display()))
            ),
            "SET enable_external_access = false".to_string(),
            format!("CREATE SCHEMA IF NOT EXISTS {BUFFER_SCHEMA}"),
        ];
        if threads > 0 {
            setup.insert(0, format!("SET threads = {threads}"));
        }
        setup.push("SET lock_configuration = true".to_string());
        for stmt in &setup {
            conn.execute_batch(stmt)
                .map_err(|e| Error::Internal(format!("configuring DuckDB ({stmt}): {e}")))?;
        }
        let catalog_name: String = conn.query_row("SELECT current_database()", [], |r| r.get(0))?;
        Ok(Self {
            root: Mutex::new(conn),
            catalog_name,
        })
    }

    /// The database's catalog name.
    pub fn catalog_name(&self) -> &str {
        &self.catalog_name
    }

    /// A new connection to the database.
    pub fn connect(&self) -> Result<Connection> {
        Ok(self.root.lock().try_clone()?)
    }
}

/// The Arrow schema of the result of `sql`, found without running it in full: the statement is
/// wrapped in `LIMIT 0` with every parameter NULL. Statements that cannot be wrapped (EXPLAIN,
/// PRAGMA-like ones) are run as they are.
pub fn result_schema(conn: &Connection, sql: &str) -> Result<SchemaRef> {
    let trimmed = sql.trim().trim_end_matches(';').trim_end();
    let wrapped = format!("SELECT * FROM (\n{trimmed}\n) LIMIT 0");
    match run_for_schema(conn, &wrapped) {
        Ok(schema) => Ok(schema),
        Err(_) => run_for_schema(conn, sql),
    }
}

fn run_for_schema(conn: &Connection, sql: &str) -> Result<SchemaRef> {
    let mut stmt = conn.prepare(sql)?;
    let nulls = vec![Value::Null; stmt.parameter_count()];
    let arrow = stmt.query_arrow(params_from_iter(nulls))?;
    Ok(arrow.get_schema())
}

/// Number of parameters (`?`, `$1`) the statement takes.
pub fn parameter_count(conn: &Connection, sql: &str) -> Result<usize> {
    Ok(conn.prepare(sql)?.parameter_count())
}

/// The Arrow schema DuckDB produces for columns of the given DuckDB types.
pub fn arrow_schema_of_types(conn: &Connection, columns: &[(String, String)]) -> Result<SchemaRef> {
    if columns.is_empty() {
        return Ok(Arc::new(arrow::datatypes::Schema::empty()));
    }
    let select = columns
        .iter()
        .map(|(name, ty)| format!("CAST(NULL AS {ty}) AS {}", ident(name)))
        .collect::<Vec<_>>()
        .join(", ");
    run_for_schema(conn, &format!("SELECT {select} LIMIT 0"))
}

/// DuckDB's inferred types of the statement's parameters, in order (`None` where DuckDB could
/// not infer one). Uses SQL `PREPARE` and `duckdb_prepared_statements()`.
pub fn parameter_types(conn: &Connection, sql: &str) -> Result<Vec<Option<String>>> {
    let trimmed = sql.trim().trim_end_matches(';').trim_end();
    let name = format!("skein_probe_{}", uuid::Uuid::new_v4().simple());
    conn.execute(&format!("PREPARE {name} AS\n{trimmed}\n"), [])?;
    let listed: Result<Value> = conn
        .query_row(
            "SELECT parameter_types FROM duckdb_prepared_statements() WHERE name = ?",
            [&name],
            |r| r.get(0),
        )
        .map_err(Error::from);
    let _ = conn.execute(&format!("DEALLOCATE {name}"), []);
    let types = match listed? {
        Value::List(items) => items
            .into_iter()
            .map(|v| match v {
                Value::Text(t) if t != "UNKNOWN" => Some(t),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    };
    Ok(types)
}

/// For SQL that `sqlparser` could not read: lets it run only if DuckDB's parser sees exactly one
/// SELECT-like statement; otherwise returns DuckDB's parser error or says it is not a query.
pub fn ensure_select(conn: &Connection, sql: &str) -> Result<()> {
    let json: String =
        conn.query_row("SELECT json_serialize_sql(?::VARCHAR)", [sql], |r| r.get(0))?;
    let v: serde_json::Value = serde_json::from_str(&json)
        .map_err(|e| Error::Internal(format!("reading DuckDB's parse of the statement: {e}")))?;
    if v.get("error").and_then(|e| e.as_bool()) == Some(true) {
        let message = v
            .get("error_message")
            .and_then(|m| m.as_str())
            .unwrap_or("unknown error");
        if message.contains("Only SELECT") {
            return Err(Error::Unsupported(
                "this statement is not supported; skein runs queries (SELECT, WITH, VALUES, \
                 EXPLAIN, DESCRIBE, SHOW) and CREATE TABLE, CREATE TABLE AS, DROP TABLE, INSERT \
                 and ALTER TABLE … ADD COLUMN"
                    .into(),
            ));
        }
        let kind = v
            .get("error_type")
            .and_then(|m| m.as_str())
            .unwrap_or("parser");
        return Err(Error::Engine(format!(
            "{} Error: {message}",
            capitalise(kind)
        )));
    }
    let count = v
        .get("statements")
        .and_then(|s| s.as_array())
        .map_or(0, |s| s.len());
    if count != 1 {
        return Err(Error::InvalidArgument(format!(
            "send one SQL statement per request (got {count})"
        )));
    }
    Ok(())
}

fn capitalise(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}
