//! Appending Arrow batches to a DuckDB table through DuckDB's own Arrow scan.
//!
//! The `duckdb` crate's appender converts Arrow to DuckDB vectors in Rust, 2048 rows at a time,
//! and buffers them once more before they reach the table. DuckDB's native Arrow scan reads the
//! batch where it lies: the batch is exposed to one connection as a view over
//! `duckdb_arrow_array_scan`, and `INSERT … SELECT` copies it into the table in one statement.
//! The caller keeps ownership of the batch; DuckDB only borrows it for the statement.

use std::ffi::{CStr, CString};
use std::sync::atomic::{AtomicU64, Ordering};

use arrow::array::{Array, RecordBatch, StructArray};
use arrow::datatypes::DataType;
use arrow::ffi::{FFI_ArrowArray, FFI_ArrowSchema};
use duckdb::ffi;

use crate::error::{Error, Result};

/// Names the short-lived views, unique across connections.
static NEXT_VIEW: AtomicU64 = AtomicU64::new(1);

/// A raw DuckDB connection used only for Arrow inserts.
pub struct ArrowInserter {
    conn: ffi::duckdb_connection,
}

// SAFETY: a DuckDB connection may move between threads; it is used by one thread at a time
// (the owner holds it exclusively while inserting).
unsafe impl Send for ArrowInserter {}

impl std::fmt::Debug for ArrowInserter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ArrowInserter").finish_non_exhaustive()
    }
}

impl Drop for ArrowInserter {
    fn drop(&mut self) {
        // SAFETY: opened in `open`, closed once here.
        unsafe { ffi::duckdb_disconnect(&mut self.conn) };
    }
}

impl ArrowInserter {
    /// Connects to `db`, which must stay open while the inserter lives.
    ///
    /// # Safety
    /// `db` is an open database that outlives the returned inserter.
    pub unsafe fn open(db: ffi::duckdb_database) -> Result<Self> {
        let mut conn: ffi::duckdb_connection = std::ptr::null_mut();
        // SAFETY: `db` is open (the caller's promise) and `conn` a valid out pointer.
        if unsafe { ffi::duckdb_connect(db, &mut conn) } != ffi::duckdb_state_DuckDBSuccess {
            return Err(Error::Internal("DuckDB refused a connection".into()));
        }
        Ok(Self { conn })
    }

    fn query(&self, sql: &str) -> Result<()> {
        let text =
            CString::new(sql).map_err(|_| Error::Internal("SQL with a NUL character".into()))?;
        // SAFETY: `result` is zeroed and destroyed below whatever the outcome.
        unsafe {
            let mut result: ffi::duckdb_result = std::mem::zeroed();
            let state = ffi::duckdb_query(self.conn, text.as_ptr(), &mut result);
            let outcome = if state == ffi::duckdb_state_DuckDBSuccess {
                Ok(())
            } else {
                let message = ffi::duckdb_result_error(&mut result);
                let message = if message.is_null() {
                    "unknown DuckDB error".to_string()
                } else {
                    CStr::from_ptr(message).to_string_lossy().into_owned()
                };
                Err(Error::Engine(message))
            };
            ffi::duckdb_destroy_result(&mut result);
            outcome
        }
    }

    /// Inserts every row of `batch` into `table` (a qualified, quoted name), whose columns match
    /// the batch's in order.
    pub fn insert(&self, table: &str, batch: &RecordBatch) -> Result<()> {
        let struct_array = StructArray::from(batch.clone());
        let mut schema =
            FFI_ArrowSchema::try_from(DataType::Struct(batch.schema().fields().clone()))?;
        let mut array = FFI_ArrowArray::new(&struct_array.to_data());
        let view = format!(
            "skein_arrow_in_{}",
            NEXT_VIEW.fetch_add(1, Ordering::Relaxed)
        );
        let view_c = CString::new(view.clone())
            .map_err(|_| Error::Internal("view name with a NUL character".into()))?;
        let mut stream: ffi::duckdb_arrow_stream = std::ptr::null_mut();
        // SAFETY: `schema` and `array` are valid Arrow C structures that outlive the view (it is
        // dropped below, before they are); DuckDB borrows them and never releases them.
        let state = unsafe {
            ffi::duckdb_arrow_array_scan(
                self.conn,
                view_c.as_ptr(),
                &mut schema as *mut FFI_ArrowSchema as ffi::duckdb_arrow_schema,
                &mut array as *mut FFI_ArrowArray as ffi::duckdb_arrow_array,
                &mut stream,
            )
        };
        let inserted = if state == ffi::duckdb_state_DuckDBSuccess {
            let insert = self.query(&format!(
                "INSERT INTO {table} SELECT * FROM main.\"{view}\""
            ));
            let dropped = self.query(&format!("DROP VIEW IF EXISTS main.\"{view}\""));
            insert.and(dropped)
        } else {
            Err(Error::Internal(
                "DuckDB could not scan an Arrow batch".into(),
            ))
        };
        if !stream.is_null() {
            // SAFETY: created by `duckdb_arrow_array_scan`, destroyed once.
            unsafe { ffi::duckdb_destroy_arrow_stream(&mut stream) };
        }
        drop(array);
        drop(schema);
        inserted
    }
}
