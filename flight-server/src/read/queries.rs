//! Queries with a ticket out: so that CancelFlightInfo and CancelQuery can stop them.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::datatypes::SchemaRef;
use duckdb::InterruptHandle;
use parking_lot::Mutex;
use tokio_util::sync::CancellationToken;

use crate::error::{Error, Result};

/// Tickets never fetched are forgotten after this long.
const FORGET_AFTER: Duration = Duration::from_secs(3600);
/// Registry size at which unfetched tickets are swept.
const SWEEP_AT: usize = 1024;
/// Most unfetched tickets remembered: past it, the oldest are forgotten (they still run when
/// fetched, but can no longer be cancelled before they start), so that a client issuing
/// tickets it never fetches cannot grow the registry without bound.
const MAX_ENTRIES: usize = 16 * 1024;

#[derive(Default)]
struct Entry {
    created: Option<Instant>,
    /// When the query must have finished; set when it first starts running.
    deadline: Option<Instant>,
    /// Why the query was stopped, once it was.
    stopped: Option<Stop>,
    interrupts: Vec<Arc<InterruptHandle>>,
    /// Cancelled when the query is stopped: what waits for the query's peers stops waiting.
    stop: CancellationToken,
}

/// Why a query was stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    Cancelled,
    TimedOut,
}

/// The registry of issued and running queries, by query id.
#[derive(Default)]
pub(crate) struct Queries {
    entries: Mutex<HashMap<String, Entry>>,
    /// Registry size at which the next sweep runs: twice what the last one left, so sweeping
    /// costs O(1) per ticket.
    sweep_at: std::sync::atomic::AtomicUsize,
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
    pub(crate) fn issue(&self, id: &str) {
        let mut entries = self.entries.lock();
        // Finished queries leave by themselves; tickets never fetched are swept now and then.
        use std::sync::atomic::Ordering::Relaxed;
        if entries.len() >= self.sweep_at.load(Relaxed).max(SWEEP_AT) {
            self.sweep(&mut entries);
        }
        entries.insert(
            id.to_string(),
            Entry {
                created: Some(Instant::now()),
                ..Default::default()
            },
        );
    }

    /// Forgets tickets never fetched for [`FORGET_AFTER`], and the oldest unfetched ones
    /// beyond half of [`MAX_ENTRIES`].
    fn sweep(&self, entries: &mut HashMap<String, Entry>) {
        entries.retain(|_, e| {
            !e.interrupts.is_empty() || e.created.is_some_and(|c| c.elapsed() < FORGET_AFTER)
        });
        if entries.len() >= MAX_ENTRIES / 2 {
            let mut waiting: Vec<(Instant, String)> = entries
                .iter()
                .filter(|(_, e)| e.interrupts.is_empty())
                .filter_map(|(id, e)| e.created.map(|c| (c, id.clone())))
                .collect();
            waiting.sort_unstable();
            let excess = entries.len() + 1 - MAX_ENTRIES / 2;
            for (_, id) in waiting.into_iter().take(excess) {
                entries.remove(&id);
            }
        }
        self.sweep_at.store(
            (entries.len() * 2).min(MAX_ENTRIES),
            std::sync::atomic::Ordering::Relaxed,
        );
    }

    /// Marks the query as running on a connection that `interrupt` stops, with `timeout` (if any)
    /// counted from its first start. Fails if the query was stopped before it started.
    pub(crate) fn start(
        &self,
        id: &str,
        interrupt: Arc<InterruptHandle>,
        timeout: Option<Duration>,
    ) -> Result<()> {
        let mut entries = self.entries.lock();
        let entry = entries.entry(id.to_string()).or_default();
        if let Some(stop) = entry.stopped {
            return Err(stop_error(id, stop, timeout));
        }
        if entry.deadline.is_none() {
            entry.deadline = timeout.map(|t| Instant::now() + t);
        }
        entry.interrupts.push(interrupt);
        Ok(())
    }

    /// The query stopped running on `interrupt`'s connection. Returns the error it ends with
    /// if it was stopped (cancelled, or past its `timeout`).
    pub(crate) fn finish(
        &self,
        id: &str,
        interrupt: &Arc<InterruptHandle>,
        timeout: Option<Duration>,
    ) -> Option<Error> {
        let mut entries = self.entries.lock();
        let e = entries.get_mut(id)?;
        e.interrupts.retain(|i| !Arc::ptr_eq(i, interrupt));
        let stopped = e.stopped.map(|stop| stop_error(id, stop, timeout));
        if e.interrupts.is_empty() {
            // Done: a fetch of the same ticket again starts afresh.
            entries.remove(id);
        }
        stopped
    }

    /// Cancelled once query `id` is stopped (CancelFlightInfo or CancelQuery): the coordinator
    /// waits for its peers' fragments under it, and stops waiting (dropping their streams, which
    /// stops them on the peers) when the client cancels.
    pub(crate) fn stop_token(&self, id: &str) -> CancellationToken {
        let mut entries = self.entries.lock();
        let e = entries.entry(id.to_string()).or_default();
        if e.stopped.is_some() {
            e.stop.cancel();
        }
        e.stop.clone()
    }

    /// Cancels the query: interrupts it if running, and refuses it if it starts later.
    /// Returns whether the id was known.
    pub(crate) fn cancel(&self, id: &str) -> bool {
        let mut entries = self.entries.lock();
        match entries.get_mut(id) {
            Some(e) => {
                e.stopped.get_or_insert(Stop::Cancelled);
                e.stop.cancel();
                for i in &e.interrupts {
                    i.interrupt();
                }
                true
            }
            None => false,
        }
    }

    /// Interrupts, again, every stopped query that still runs, and stops the queries past their
    /// deadline. Called on a short interval: DuckDB forgets an interrupt that arrives between two
    /// statements of a query (it clears the flag when a statement starts), so one interrupt is not
    /// enough.
    pub(crate) fn enforce(&self) {
        let now = Instant::now();
        let mut entries = self.entries.lock();
        for e in entries.values_mut().filter(|e| !e.interrupts.is_empty()) {
            if e.stopped.is_none() && e.deadline.is_some_and(|d| d <= now) {
                e.stopped = Some(Stop::TimedOut);
                e.stop.cancel();
            }
            if e.stopped.is_some() {
                for i in &e.interrupts {
                    i.interrupt();
                }
            }
        }
    }
}

fn stop_error(id: &str, stop: Stop, timeout: Option<Duration>) -> Error {
    match stop {
        Stop::Cancelled => Error::Cancelled(id.to_string()),
        Stop::TimedOut => Error::DeadlineExceeded(format!(
            "query {id} ran longer than the node's query timeout ({})",
            timeout.map_or_else(
                || "none".to_string(),
                |t| humantime::format_duration(t).to_string()
            )
        )),
    }
}

/// Most result schemas kept.
const SCHEMA_CACHE_ENTRIES: usize = 1024;

/// Result schemas of recent queries, by catalog version and SQL text: a schema only changes
/// with the catalog, whose version is part of the key.
#[derive(Debug, Default)]
pub(crate) struct SchemaCache {
    entries: Mutex<HashMap<(u64, String), SchemaRef>>,
}

impl SchemaCache {
    /// The schema cached for `key`.
    pub(crate) fn get(&self, key: &(u64, String)) -> Option<SchemaRef> {
        self.entries.lock().get(key).cloned()
    }

    /// Remembers a schema; entries of older catalog versions go first when the cache is full.
    pub(crate) fn put(&self, key: (u64, String), schema: SchemaRef) {
        let mut entries = self.entries.lock();
        if entries.len() >= SCHEMA_CACHE_ENTRIES {
            let version = key.0;
            entries.retain(|(v, _), _| *v == version);
            if entries.len() >= SCHEMA_CACHE_ENTRIES {
                entries.clear();
            }
        }
        entries.insert(key, schema);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tickets_never_fetched_cannot_grow_the_registry_without_bound() {
        let q = Queries::default();
        for i in 0..MAX_ENTRIES * 3 {
            q.issue(&format!("q{i}"));
            assert!(q.entries.lock().len() <= MAX_ENTRIES, "after {i}");
        }
        // The newest are kept, and can still be cancelled.
        assert!(q.cancel(&format!("q{}", MAX_ENTRIES * 3 - 1)));
    }
}
