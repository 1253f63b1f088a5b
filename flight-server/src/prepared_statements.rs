//! Prepared statements a client has open on this node.
//!
//! A handle is a random UUID, and the statement belongs to the user who created it (with
//! authentication on): another user's bind, execute or close is refused with
//! PERMISSION_DENIED. What a caller can grow is bounded: statements per user and in total
//! (`--max-prepared-statements`; a user holds at most half of them), the parameter bytes bound
//! to all statements together (four times `--max-message-bytes`), and a statement unused for
//! `--prepared-statement-ttl` is closed by the node.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use arrow::array::RecordBatch;
use parking_lot::Mutex;

use crate::error::{Error, Result};

/// One prepared statement.
#[derive(Debug, Clone)]
pub(crate) struct Prepared {
    /// The statement's SQL.
    pub sql: String,
    /// Parameter batches bound by the client's last DoPut (each row is one execution).
    pub parameters: Vec<RecordBatch>,
}

#[derive(Debug)]
struct Entry {
    statement: Prepared,
    /// The user who created it (`None` with authentication off).
    owner: Option<String>,
    used: Instant,
    parameter_bytes: usize,
}

/// Bounds on prepared statements.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// Statements open at once, all users together.
    pub total: usize,
    /// Unused for this long, a statement is closed.
    pub ttl: Duration,
    /// Parameter bytes bound to all statements together.
    pub parameter_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            total: 1024,
            ttl: Duration::from_secs(3600),
            parameter_bytes: 256 * 1024 * 1024,
        }
    }
}

/// Prepared statements by handle.
#[derive(Debug, Default)]
pub(crate) struct PreparedStatements {
    map: Mutex<HashMap<String, Entry>>,
    limits: Limits,
}

fn key(handle: &[u8]) -> String {
    String::from_utf8_lossy(handle).to_string()
}

impl PreparedStatements {
    /// An empty registry with these bounds.
    pub(crate) fn new(limits: Limits) -> Self {
        Self {
            map: Mutex::default(),
            limits,
        }
    }

    /// Statements open now (after closing expired ones).
    #[cfg(test)]
    fn len(&self) -> usize {
        let mut map = self.map.lock();
        self.expire(&mut map);
        map.len()
    }

    /// Whether none is open.
    #[cfg(test)]
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn expire(&self, map: &mut HashMap<String, Entry>) {
        let ttl = self.limits.ttl;
        map.retain(|_, e| e.used.elapsed() < ttl);
    }

    /// Registers a statement for `owner` and returns its handle, or RESOURCE_EXHAUSTED when
    /// the node or the user holds as many as they may.
    pub(crate) fn insert(&self, owner: Option<&str>, sql: String) -> Result<String> {
        let mut map = self.map.lock();
        self.expire(&mut map);
        let total = self.limits.total.max(1);
        if map.len() >= total {
            return Err(Error::ResourceExhausted(format!(
                "{total} prepared statements are open on this node, the most it keeps \
                 (--max-prepared-statements): close some first"
            )));
        }
        if let Some(user) = owner {
            let share = (total / 2).max(1);
            let held = map
                .values()
                .filter(|e| e.owner.as_deref() == Some(user))
                .count();
            if held >= share {
                return Err(Error::ResourceExhausted(format!(
                    "user {user:?} holds {held} prepared statements, the most one user may \
                     (half of --max-prepared-statements): close some first"
                )));
            }
        }
        let handle = uuid::Uuid::new_v4().to_string();
        map.insert(
            handle.clone(),
            Entry {
                statement: Prepared {
                    sql,
                    parameters: Vec::new(),
                },
                owner: owner.map(str::to_string),
                used: Instant::now(),
                parameter_bytes: 0,
            },
        );
        Ok(handle)
    }

    fn entry<'m>(
        &self,
        map: &'m mut HashMap<String, Entry>,
        handle: &[u8],
        caller: Option<&str>,
    ) -> Result<&'m mut Entry> {
        let key = key(handle);
        let ttl = self.limits.ttl;
        let entry = map
            .get_mut(&key)
            .filter(|e| e.used.elapsed() < ttl)
            .ok_or(Error::UnknownPreparedStatement(key))?;
        if entry.owner.is_some() && entry.owner.as_deref() != caller {
            return Err(Error::Forbidden(
                "this prepared statement was created by another user: prepare your own".into(),
            ));
        }
        entry.used = Instant::now();
        Ok(entry)
    }

    /// The statement with `handle`, if `caller` may use it.
    pub(crate) fn get(&self, handle: &[u8], caller: Option<&str>) -> Result<Prepared> {
        let mut map = self.map.lock();
        Ok(self.entry(&mut map, handle, caller)?.statement.clone())
    }

    /// Replaces the statement's bound parameters.
    pub(crate) fn bind(
        &self,
        handle: &[u8],
        caller: Option<&str>,
        parameters: Vec<RecordBatch>,
    ) -> Result<()> {
        let bytes: usize = parameters.iter().map(|b| b.get_array_memory_size()).sum();
        let mut map = self.map.lock();
        let bound: usize = map.values().map(|e| e.parameter_bytes).sum();
        let entry = self.entry(&mut map, handle, caller)?;
        let others = bound - entry.parameter_bytes;
        let limit = self.limits.parameter_bytes;
        if others.saturating_add(bytes) > limit {
            return Err(Error::ResourceExhausted(format!(
                "prepared statements on this node hold {others} bytes of bound parameters; \
                 {bytes} more would pass the {limit} they may hold together (four times \
                 --max-message-bytes): close statements or bind fewer rows"
            )));
        }
        entry.statement.parameters = parameters;
        entry.parameter_bytes = bytes;
        Ok(())
    }

    /// Closes the statement, if `caller` may; returns whether it was open.
    pub(crate) fn close(&self, handle: &[u8], caller: Option<&str>) -> Result<bool> {
        let mut map = self.map.lock();
        match self.entry(&mut map, handle, caller) {
            Ok(_) => Ok(map.remove(&key(handle)).is_some()),
            Err(Error::UnknownPreparedStatement(_)) => Ok(false),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_belong_to_their_owner_and_are_bounded() {
        let p = PreparedStatements::new(Limits {
            total: 4,
            ttl: Duration::from_secs(3600),
            parameter_bytes: 1 << 20,
        });
        let a = p.insert(Some("ann"), "SELECT 1".into()).expect("ann 1");
        p.insert(Some("ann"), "SELECT 2".into()).expect("ann 2");
        let e = p
            .insert(Some("ann"), "SELECT 3".into())
            .expect_err("refused");
        assert!(e.to_string().contains("holds 2"), "{e}");
        assert!(matches!(
            p.get(a.as_bytes(), Some("bob")),
            Err(Error::Forbidden(_))
        ));
        assert!(matches!(
            p.close(a.as_bytes(), Some("bob")),
            Err(Error::Forbidden(_))
        ));
        assert_eq!(
            p.get(a.as_bytes(), Some("ann")).expect("own").sql,
            "SELECT 1"
        );
        p.insert(Some("bob"), "SELECT 4".into()).expect("bob");
        p.insert(None, "SELECT 5".into()).expect("anonymous");
        let e = p
            .insert(Some("cy"), "SELECT 6".into())
            .expect_err("refused");
        assert!(e.to_string().contains("--max-prepared-statements"), "{e}");
        assert!(p.close(a.as_bytes(), Some("ann")).expect("close"));
        assert!(!p.close(a.as_bytes(), Some("ann")).expect("closed twice"));
        p.insert(Some("cy"), "SELECT 6".into()).expect("room again");
    }

    #[test]
    fn unused_statements_expire() {
        let p = PreparedStatements::new(Limits {
            total: 4,
            ttl: Duration::ZERO,
            parameter_bytes: 1 << 20,
        });
        let h = p.insert(None, "SELECT 1".into()).expect("insert");
        assert!(matches!(
            p.get(h.as_bytes(), None),
            Err(Error::UnknownPreparedStatement(_))
        ));
        assert!(p.is_empty());
    }
}
