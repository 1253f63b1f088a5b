//! Prepared statements a client has open on this node.

use std::collections::HashMap;

use arrow::array::RecordBatch;
use parking_lot::Mutex;

use crate::error::{Error, Result};

/// One prepared statement.
#[derive(Debug, Clone)]
pub struct Prepared {
    /// The statement's SQL.
    pub sql: String,
    /// Whether it is a query (else DDL or DML).
    pub is_query: bool,
    /// Parameter batches bound by the client's last DoPut (each row is one execution).
    pub parameters: Vec<RecordBatch>,
}

/// Prepared statements by handle.
#[derive(Debug, Default)]
pub struct PreparedStatements {
    map: Mutex<HashMap<String, Prepared>>,
}

impl PreparedStatements {
    /// Registers a statement and returns its handle.
    pub fn insert(&self, sql: String, is_query: bool) -> String {
        let handle = uuid::Uuid::new_v4().to_string();
        self.map.lock().insert(
            handle.clone(),
            Prepared {
                sql,
                is_query,
                parameters: Vec::new(),
            },
        );
        handle
    }

    /// The statement with `handle`.
    pub fn get(&self, handle: &[u8]) -> Result<Prepared> {
        let key = String::from_utf8_lossy(handle).to_string();
        self.map
            .lock()
            .get(&key)
            .cloned()
            .ok_or(Error::UnknownPreparedStatement(key))
    }

    /// Replaces the statement's bound parameters.
    pub fn bind(&self, handle: &[u8], parameters: Vec<RecordBatch>) -> Result<()> {
        let key = String::from_utf8_lossy(handle).to_string();
        match self.map.lock().get_mut(&key) {
            Some(p) => {
                p.parameters = parameters;
                Ok(())
            }
            None => Err(Error::UnknownPreparedStatement(key)),
        }
    }

    /// Closes the statement; returns whether it was open.
    pub fn close(&self, handle: &[u8]) -> bool {
        let key = String::from_utf8_lossy(handle).to_string();
        self.map.lock().remove(&key).is_some()
    }
}
