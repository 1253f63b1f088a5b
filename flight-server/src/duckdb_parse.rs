//! DuckDB's own reading of a statement, the authority on what will run: how many statements it
//! sees in a text (`duckdb_extract_statements`, what `prepare` splits on) and, for a query, its
//! parse tree (`json_serialize_sql`). Both come from a parse-only in-memory database that holds
//! nothing and runs nothing but the parser, so reading a statement can neither touch the node's
//! tables nor be slowed by their queries.
//!
//! Trees of queries are cached by their text (dashboards repeat theirs), so the check costs a
//! hash lookup once a text has been seen.

use std::collections::HashMap;
use std::sync::Arc;

use duckdb::Connection;
use duckdb::ffi;
use parking_lot::Mutex;

use crate::error::{Error, Result};

/// Most query trees kept; the cache starts again when full.
const TREE_CACHE_ENTRIES: usize = 2048;

/// Texts longer than this are not cached (they are rarely repeated and cost memory).
const TREE_CACHE_MAX_TEXT: usize = 64 * 1024;

/// Connections kept for reuse.
const MAX_IDLE: usize = 8;

/// What DuckDB makes of a text it is asked to serialize.
#[derive(Debug, Clone)]
pub enum Reading {
    /// Exactly one SELECT-like statement (SELECT, VALUES, WITH, SHOW, DESCRIBE, SUMMARIZE,
    /// FROM-first), with its tree.
    Query(Arc<serde_json::Value>),
    /// Statements DuckDB parses, but not one query: their count (0 for none).
    NotAQuery(usize),
}

struct RawDatabase(ffi::duckdb_database);

// SAFETY: a DuckDB database handle may be used from any thread; DuckDB synchronises internally.
unsafe impl Send for RawDatabase {}
// SAFETY: as above; the handle is only read after opening.
unsafe impl Sync for RawDatabase {}

/// A connection for reading statements: one duckdb-rs connection (for `json_serialize_sql`)
/// and one raw C connection (for `duckdb_extract_statements`), used by one thread at a time.
struct ParseConnection {
    conn: Connection,
    raw: ffi::duckdb_connection,
}

// SAFETY: the raw connection is only used by the thread that holds it, taken out of the pool.
unsafe impl Send for ParseConnection {}

impl Drop for ParseConnection {
    fn drop(&mut self) {
        // SAFETY: opened by `duckdb_connect` in `Parser::connection`, closed once.
        unsafe { ffi::duckdb_disconnect(&mut self.raw) };
    }
}

/// The parse-only database and its cache.
pub struct Parser {
    idle: Mutex<Vec<ParseConnection>>,
    trees: Mutex<HashMap<String, Reading>>,
    /// Declared last: closed after every connection above.
    db: RawDatabase,
}

impl std::fmt::Debug for Parser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Parser").finish_non_exhaustive()
    }
}

impl Drop for Parser {
    fn drop(&mut self) {
        self.idle.lock().clear();
        // SAFETY: opened by `Parser::open`, closed once, after the last connection of ours
        // (connections in use hold `&self`, so none is out).
        unsafe { ffi::duckdb_close(&mut self.db.0) };
    }
}

impl Parser {
    /// Opens the parse-only database: in memory, no external access, no extensions.
    pub fn open() -> Result<Self> {
        let mut db: ffi::duckdb_database = std::ptr::null_mut();
        // SAFETY: a valid C string and out pointer.
        if unsafe { ffi::duckdb_open(c":memory:".as_ptr(), &mut db) }
            != ffi::duckdb_state_DuckDBSuccess
        {
            return Err(Error::Internal(
                "DuckDB could not open its parse-only database".into(),
            ));
        }
        let parser = Self {
            idle: Mutex::new(Vec::new()),
            trees: Mutex::new(HashMap::new()),
            db: RawDatabase(db),
        };
        let first = parser.connection()?;
        first.conn.execute_batch(
            "SET autoinstall_known_extensions = false; SET autoload_known_extensions = false; \
             SET enable_external_access = false; SET lock_configuration = true",
        )?;
        parser.idle.lock().push(first);
        Ok(parser)
    }

    fn connection(&self) -> Result<ParseConnection> {
        if let Some(c) = self.idle.lock().pop() {
            return Ok(c);
        }
        // SAFETY: the database is open for as long as `self`.
        let conn = unsafe { Connection::open_from_raw(self.db.0) }?;
        let mut raw: ffi::duckdb_connection = std::ptr::null_mut();
        // SAFETY: as above; `raw` is a valid out pointer.
        if unsafe { ffi::duckdb_connect(self.db.0, &mut raw) } != ffi::duckdb_state_DuckDBSuccess {
            return Err(Error::Internal("DuckDB refused a parse connection".into()));
        }
        Ok(ParseConnection { conn, raw })
    }

    fn give_back(&self, c: ParseConnection) {
        let mut idle = self.idle.lock();
        if idle.len() < MAX_IDLE {
            idle.push(c);
        }
    }

    /// How many statements DuckDB splits `sql` into (what `prepare` would run), or DuckDB's
    /// parser error.
    pub fn statement_count(&self, sql: &str) -> Result<usize> {
        let text = std::ffi::CString::new(sql)
            .map_err(|_| Error::InvalidArgument("the SQL contains a NUL character".into()))?;
        let c = self.connection()?;
        let mut extracted: ffi::duckdb_extracted_statements = std::ptr::null_mut();
        // SAFETY: the connection is open and ours; `extracted` is destroyed below.
        let (count, error) = unsafe {
            let n = ffi::duckdb_extract_statements(c.raw, text.as_ptr(), &mut extracted);
            let error = if n == 0 {
                let e = ffi::duckdb_extract_statements_error(extracted);
                (!e.is_null()).then(|| std::ffi::CStr::from_ptr(e).to_string_lossy().into_owned())
            } else {
                None
            };
            ffi::duckdb_destroy_extracted(&mut extracted);
            (n as usize, error)
        };
        self.give_back(c);
        match error {
            Some(e) => Err(Error::Engine(e)),
            None => Ok(count),
        }
    }

    /// DuckDB's reading of `sql` as a query; parser errors are DuckDB's own.
    pub fn read(&self, sql: &str) -> Result<Reading> {
        if let Some(r) = self.trees.lock().get(sql) {
            return Ok(r.clone());
        }
        let c = self.connection()?;
        let json: std::result::Result<String, duckdb::Error> = c
            .conn
            .prepare_cached("SELECT json_serialize_sql(?::VARCHAR)")
            .and_then(|mut s| s.query_row([sql], |r| r.get(0)));
        self.give_back(c);
        let tree: serde_json::Value = serde_json::from_str(&json?).map_err(|e| {
            Error::Internal(format!("reading DuckDB's parse of the statement: {e}"))
        })?;
        let reading = if tree.get("error").and_then(|e| e.as_bool()) == Some(true) {
            let message = tree
                .get("error_message")
                .and_then(|m| m.as_str())
                .unwrap_or("unknown error");
            if !message.contains("Only SELECT") {
                let kind = tree
                    .get("error_type")
                    .and_then(|m| m.as_str())
                    .unwrap_or("parser");
                return Err(Error::Engine(format!(
                    "{} Error: {message}",
                    capitalise(kind)
                )));
            }
            Reading::NotAQuery(self.statement_count(sql)?)
        } else {
            let count = tree
                .get("statements")
                .and_then(|s| s.as_array())
                .map_or(0, |s| s.len());
            if count == 1 {
                Reading::Query(Arc::new(tree))
            } else {
                Reading::NotAQuery(count)
            }
        };
        if sql.len() <= TREE_CACHE_MAX_TEXT {
            let mut trees = self.trees.lock();
            if trees.len() >= TREE_CACHE_ENTRIES {
                trees.clear();
            }
            trees.insert(sql.to_string(), reading.clone());
        }
        Ok(reading)
    }
}

fn capitalise(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_statements_as_duckdb_lexes_them() {
        let p = Parser::open().expect("parser");
        // DuckDB nests block comments and reads E'' strings with backslash escapes.
        assert_eq!(
            p.statement_count("SELECT 1 /* /* */ ; SELECT 2; -- */")
                .expect("reads"),
            1
        );
        assert_eq!(
            p.statement_count("SELECT E'\\'' ; SELECT 3")
                .expect("reads"),
            2
        );
        assert_eq!(
            p.statement_count("SELECT 1; CREATE TABLE x (a INT)")
                .expect("reads"),
            2
        );
        assert!(matches!(
            p.statement_count("SELEC 1"),
            Err(Error::Engine(_))
        ));
    }

    #[test]
    fn reads_queries_and_only_queries() {
        let p = Parser::open().expect("parser");
        assert!(matches!(
            p.read("SELECT 1").expect("reads"),
            Reading::Query(_)
        ));
        assert!(matches!(
            p.read("DESCRIBE t").expect("reads"),
            Reading::Query(_)
        ));
        assert!(matches!(
            p.read("SELECT 1; SELECT 2").expect("reads"),
            Reading::NotAQuery(2)
        ));
        assert!(matches!(
            p.read("SELECT 1; CREATE TABLE x (a INT)").expect("reads"),
            Reading::NotAQuery(2)
        ));
        assert!(matches!(
            p.read("EXPLAIN ANALYZE CREATE TABLE x (a INT)")
                .expect("reads"),
            Reading::NotAQuery(1)
        ));
        // Cached: the same answer again.
        assert!(matches!(
            p.read("SELECT 1").expect("reads"),
            Reading::Query(_)
        ));
    }
}
