//! Queries with a ticket out: so that CancelFlightInfo and CancelQuery can stop them.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use duckdb::InterruptHandle;
use parking_lot::Mutex;

use crate::error::{Error, Result};

/// Tickets never fetched are forgotten after this long.
const FORGET_AFTER: Duration = Duration::from_secs(3600);

#[derive(Default)]
struct Entry {
    created: Option<Instant>,
    cancelled: bool,
    interrupts: Vec<Arc<InterruptHandle>>,
}

/// The registry of issued and running queries, by query id.
#[derive(Default)]
pub struct Queries {
    entries: Mutex<HashMap<String, Entry>>,
}

impl std::fmt::Debug for Queries {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Queries")
            .field("entries", &self.entries.lock().len())
            .finish()
    }
}

impl Queries {
    /// Records a newly issued query id.
    pub fn issue(&self, id: &str) {
        let mut entries = self.entries.lock();
        entries.retain(|_, e| {
            !e.interrupts.is_empty() || e.created.is_some_and(|c| c.elapsed() < FORGET_AFTER)
        });
        entries.insert(
            id.to_string(),
            Entry {
                created: Some(Instant::now()),
                ..Default::default()
            },
        );
    }

    /// Marks the query as running on a connection that `interrupt` stops. Fails if the query was
    /// cancelled before it started.
    pub fn start(&self, id: &str, interrupt: Arc<InterruptHandle>) -> Result<()> {
        let mut entries = self.entries.lock();
        let entry = entries.entry(id.to_string()).or_default();
        if entry.cancelled {
            return Err(Error::Cancelled(id.to_string()));
        }
        entry.interrupts.push(interrupt);
        Ok(())
    }

    /// Whether the query was cancelled.
    pub fn is_cancelled(&self, id: &str) -> bool {
        self.entries.lock().get(id).is_some_and(|e| e.cancelled)
    }

    /// The query stopped running on `interrupt`'s connection.
    pub fn finish(&self, id: &str, interrupt: &Arc<InterruptHandle>) {
        let mut entries = self.entries.lock();
        if let Some(e) = entries.get_mut(id) {
            e.interrupts.retain(|i| !Arc::ptr_eq(i, interrupt));
        }
    }

    /// Cancels the query: interrupts it if running, and refuses it if it starts later.
    /// Returns whether the id was known.
    pub fn cancel(&self, id: &str) -> bool {
        let mut entries = self.entries.lock();
        match entries.get_mut(id) {
            Some(e) => {
                e.cancelled = true;
                for i in &e.interrupts {
                    i.interrupt();
                }
                true
            }
            None => false,
        }
    }
}
