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
pub(crate) const BUFFER_SCHEMA: &str = "skein_buf";

/// The raw database handle, for the few C API calls `duckdb` does not wrap.
struct RawDatabase(duckdb::ffi::duckdb_database);

// SAFETY: a DuckDB database handle may be used from any thread; DuckDB synchronises internally.
unsafe impl Send for RawDatabase {}
// SAFETY: as above; the handle is only read after opening.
unsafe impl Sync for RawDatabase {}

/// The node's DuckDB database.
///
/// Every connection handed out refers to the database, which closes when the engine drops, so
/// the engine must outlive them (the node drops it last).
pub struct Engine {
    /// A connection kept open for cloning; every request gets its own clone.
    root: Mutex<Option<Connection>>,
    /// Connections returned by queries, reused by the next ones (opening one costs more than a
    /// small query).
    idle: Mutex<Vec<Connection>>,
    /// The database itself.
    raw: RawDatabase,
    /// The catalog name DuckDB reports for the database (what Flight SQL calls the catalog).
    catalog_name: String,
    /// DuckDB's parser, on a database of its own: the authority on what a text will run.
    parser: crate::duckdb_parse::Parser,
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.idle.lock().clear();
        self.root.lock().take();
        // SAFETY: opened by `Engine::open`, closed once, after the last connection of ours.
        unsafe { duckdb::ffi::duckdb_close(&mut self.raw.0) };
    }
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("catalog_name", &self.catalog_name)
            .finish()
    }
}

/// Most idle connections kept for reuse.
const MAX_IDLE_CONNECTIONS: usize = 32;

/// A connection borrowed from the engine's pool.
pub struct PooledConnection<'a> {
    conn: Option<Connection>,
    engine: &'a Engine,
}

impl std::fmt::Debug for PooledConnection<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PooledConnection").finish_non_exhaustive()
    }
}

impl std::ops::Deref for PooledConnection<'_> {
    type Target = Connection;

    fn deref(&self) -> &Connection {
        // Present from creation until drop or discard, after which it is not used.
        self.conn.as_ref().unwrap_or_else(|| unreachable!())
    }
}

impl PooledConnection<'_> {
    pub fn discard(&mut self) {
        self.conn.take();
    }
}

impl Drop for PooledConnection<'_> {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            let mut idle = self.engine.idle.lock();
            if idle.len() < MAX_IDLE_CONNECTIONS {
                idle.push(conn);
            }
        }
    }
}

pub(crate) use skein_sql::quote::{ident, literal};

impl Engine {
    /// Opens an in-memory database that may read and write only the node's own directories
    /// below `data_dir` (`objects/`, `tmp/`, `duckdb-tmp/`); `views` are statements that create
    /// the node's permanent views (the system tables), run before the configuration is locked.
    pub fn open(
        data_dir: &Path,
        threads: usize,
        memory_limit: &str,
        spill_bytes: u64,
        views: &[String],
    ) -> Result<Self> {
        let mut raw: duckdb::ffi::duckdb_database = std::ptr::null_mut();
        let path = c":memory:";
        // SAFETY: `path` is a valid C string and `raw` a valid out pointer.
        if unsafe { duckdb::ffi::duckdb_open(path.as_ptr(), &mut raw) }
            != duckdb::ffi::duckdb_state_DuckDBSuccess
        {
            return Err(Error::Internal(
                "DuckDB could not open an in-memory database".into(),
            ));
        }
        let raw = RawDatabase(raw);
        // SAFETY: `raw.0` is an open database that outlives the connection (see `Drop`).
        let conn = unsafe { Connection::open_from_raw(raw.0) }?;
        let dir = std::fs::canonicalize(data_dir)
            .map_err(|e| Error::Internal(format!("data directory {}: {e}", data_dir.display())))?;
        let mut setup = vec![
            "SET autoinstall_known_extensions = false".to_string(),
            "SET autoload_known_extensions = false".to_string(),
            // Only the directories DuckDB itself needs: table files, flush output, spill space.
            // The catalog and anything else under the data directory stay out of reach.
            format!(
                "SET allowed_directories = [{}]",
                ["objects", "tmp", "duckdb-tmp", "cache"]
                    .iter()
                    .map(|d| literal(&format!("{}/{d}/", dir.display())))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            format!(
                "SET temp_directory = {}",
                literal(&format!("{}/duckdb-tmp", dir.display()))
            ),
            // Spilled query state may not crowd out the WAL on the same disk.
            format!("SET max_temp_directory_size = '{spill_bytes}B'"),
            "SET enable_external_access = false".to_string(),
            format!("CREATE SCHEMA IF NOT EXISTS {BUFFER_SCHEMA}"),
        ];
        if threads > 0 {
            setup.insert(0, format!("SET threads = {threads}"));
        }
        if !memory_limit.trim().is_empty() {
            setup.insert(
                0,
                format!("SET memory_limit = {}", literal(memory_limit.trim())),
            );
        }
        setup.extend(views.iter().cloned());
        setup.push("SET lock_configuration = true".to_string());
        for stmt in &setup {
            conn.execute_batch(stmt)
                .map_err(|e| Error::Internal(format!("configuring DuckDB ({stmt}): {e}")))?;
        }
        let catalog_name: String = conn.query_row("SELECT current_database()", [], |r| r.get(0))?;
        Ok(Self {
            root: Mutex::new(Some(conn)),
            idle: Mutex::new(Vec::new()),
            raw,
            catalog_name,
            parser: crate::duckdb_parse::Parser::open()?,
        })
    }

    /// The database's catalog name.
    pub fn catalog_name(&self) -> &str {
        &self.catalog_name
    }

    /// DuckDB's own reading of statements.
    pub fn parser(&self) -> &crate::duckdb_parse::Parser {
        &self.parser
    }

    /// A new connection to the database.
    pub fn connect(&self) -> Result<Connection> {
        match self.root.lock().as_ref() {
            Some(root) => Ok(root.try_clone()?),
            None => Err(Error::ShuttingDown),
        }
    }

    /// A connection from the pool of idle ones (or a new one); it goes back when dropped.
    pub fn pooled(&self) -> Result<PooledConnection<'_>> {
        let idle = self.idle.lock().pop();
        let conn = match idle {
            Some(c) => c,
            None => self.connect()?,
        };
        Ok(PooledConnection {
            conn: Some(conn),
            engine: self,
        })
    }

    /// DuckDB's inferred types of the statement's parameters, in order (`None` where it could
    /// not infer one), through the C API's `duckdb_param_type`.
    pub fn parameter_types(&self, sql: &str) -> Result<Vec<Option<String>>> {
        use duckdb::ffi;
        let text = std::ffi::CString::new(sql)
            .map_err(|_| Error::InvalidArgument("the SQL contains a NUL character".into()))?;
        let mut conn: ffi::duckdb_connection = std::ptr::null_mut();
        // SAFETY: the database is open; every handle created here is destroyed before returning.
        unsafe {
            if ffi::duckdb_connect(self.raw.0, &mut conn) != ffi::duckdb_state_DuckDBSuccess {
                return Err(Error::Internal("DuckDB refused a connection".into()));
            }
            let mut stmt: ffi::duckdb_prepared_statement = std::ptr::null_mut();
            let prepared = ffi::duckdb_prepare(conn, text.as_ptr(), &mut stmt)
                == ffi::duckdb_state_DuckDBSuccess;
            let mut types = Vec::new();
            if prepared {
                for i in 1..=ffi::duckdb_nparams(stmt) {
                    let id = ffi::duckdb_param_type(stmt, i);
                    let name = if id == ffi::DUCKDB_TYPE_DUCKDB_TYPE_DECIMAL {
                        let mut logical = ffi::duckdb_param_logical_type(stmt, i);
                        let width = ffi::duckdb_decimal_width(logical);
                        let scale = ffi::duckdb_decimal_scale(logical);
                        ffi::duckdb_destroy_logical_type(&mut logical);
                        Some(format!("DECIMAL({width},{scale})"))
                    } else {
                        type_name(id).map(str::to_string)
                    };
                    types.push(name);
                }
            }
            ffi::duckdb_destroy_prepare(&mut stmt);
            ffi::duckdb_disconnect(&mut conn);
            Ok(types)
        }
    }
}

/// The Arrow schema of the result of the query `sql`, found without running it: the query is
/// wrapped in `LIMIT 0` with every parameter NULL. Nothing else is ever run to find a schema
/// (an `EXPLAIN ANALYZE` would run its statement); `EXPLAIN` has its own probe
/// ([`crate::sql::Plan::Explain`]).
pub(crate) fn result_schema(conn: &Connection, sql: &str) -> Result<SchemaRef> {
    let trimmed = sql.trim().trim_end_matches(';').trim_end();
    run_for_schema(conn, &format!("SELECT * FROM (\n{trimmed}\n) LIMIT 0"))
}

/// The schema of a statement that reads nothing and changes nothing (plain `EXPLAIN`), by
/// running it.
pub(crate) fn explain_schema(conn: &Connection, probe: &str) -> Result<SchemaRef> {
    run_for_schema(conn, probe)
}

fn run_for_schema(conn: &Connection, sql: &str) -> Result<SchemaRef> {
    let mut stmt = conn.prepare(sql)?;
    let nulls = vec![Value::Null; stmt.parameter_count()];
    let arrow = stmt.query_arrow(params_from_iter(nulls))?;
    Ok(arrow.get_schema())
}

/// The Arrow schema DuckDB produces for columns of the given DuckDB types.
pub(crate) fn arrow_schema_of_types(
    conn: &Connection,
    columns: &[(String, String)],
) -> Result<SchemaRef> {
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

/// The SQL name of a DuckDB C API type id, for the scalar types a parameter can have.
fn type_name(id: duckdb::ffi::duckdb_type) -> Option<&'static str> {
    use duckdb::ffi::*;
    Some(match id {
        DUCKDB_TYPE_DUCKDB_TYPE_BOOLEAN => "BOOLEAN",
        DUCKDB_TYPE_DUCKDB_TYPE_TINYINT => "TINYINT",
        DUCKDB_TYPE_DUCKDB_TYPE_SMALLINT => "SMALLINT",
        DUCKDB_TYPE_DUCKDB_TYPE_INTEGER => "INTEGER",
        DUCKDB_TYPE_DUCKDB_TYPE_BIGINT => "BIGINT",
        DUCKDB_TYPE_DUCKDB_TYPE_UTINYINT => "UTINYINT",
        DUCKDB_TYPE_DUCKDB_TYPE_USMALLINT => "USMALLINT",
        DUCKDB_TYPE_DUCKDB_TYPE_UINTEGER => "UINTEGER",
        DUCKDB_TYPE_DUCKDB_TYPE_UBIGINT => "UBIGINT",
        DUCKDB_TYPE_DUCKDB_TYPE_HUGEINT => "HUGEINT",
        DUCKDB_TYPE_DUCKDB_TYPE_FLOAT => "FLOAT",
        DUCKDB_TYPE_DUCKDB_TYPE_DOUBLE => "DOUBLE",
        DUCKDB_TYPE_DUCKDB_TYPE_VARCHAR => "VARCHAR",
        DUCKDB_TYPE_DUCKDB_TYPE_BLOB => "BLOB",
        DUCKDB_TYPE_DUCKDB_TYPE_DATE => "DATE",
        DUCKDB_TYPE_DUCKDB_TYPE_TIME => "TIME",
        DUCKDB_TYPE_DUCKDB_TYPE_TIMESTAMP => "TIMESTAMP",
        DUCKDB_TYPE_DUCKDB_TYPE_TIMESTAMP_S => "TIMESTAMP_S",
        DUCKDB_TYPE_DUCKDB_TYPE_TIMESTAMP_MS => "TIMESTAMP_MS",
        DUCKDB_TYPE_DUCKDB_TYPE_TIMESTAMP_NS => "TIMESTAMP_NS",
        DUCKDB_TYPE_DUCKDB_TYPE_TIMESTAMP_TZ => "TIMESTAMPTZ",
        DUCKDB_TYPE_DUCKDB_TYPE_INTERVAL => "INTERVAL",
        DUCKDB_TYPE_DUCKDB_TYPE_UUID => "UUID",
        _ => return None,
    })
}
