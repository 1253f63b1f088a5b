//! The read path: what a query reads and what it holds while it runs.
//!
//! It owns the read views of a query ([`views`]: the tables a statement names, their files
//! pruned by its filters, the buffer generations, and the temporary views that show exactly
//! those on the query's DuckDB connection; the read set of a fragment another node planned),
//! the files it keeps ([`pins`]: cache entries of remote objects, pins on local ones), running
//! a query ([`execute`]: a schema, then a stream of batches as DuckDB produces them), the
//! registry of queries with a ticket out and their cancellation ([`queries`]), the query slots
//! ([`slots`]) and the system tables with the query log ([`system`]).
//!
//! Its promises: a query sees one consistent read view per table (every acknowledged row once,
//! in a file or a buffer generation, never both); no file it reads is deleted while it runs; a
//! stalled reader gives its slot back.

use std::sync::Arc;

use crate::base::Base;
use crate::ddl::Ddl;

pub(crate) mod execute;
pub(crate) mod pins;
pub(crate) mod queries;
pub(crate) mod slots;
pub(crate) mod system;
pub(crate) mod views;

pub(crate) use views::ReadSet;

/// The read path's state.
#[derive(Debug)]
pub(crate) struct Reads {
    base: Arc<Base>,
    /// Catalog sync: a query takes in other nodes' changes before it reads.
    ddl: Arc<Ddl>,
    /// Local-store objects queries are reading (not deleted while they are).
    pinned: pins::PinnedKeys,
    /// Recent queries, for `skein_query_log`.
    pub(crate) query_log: system::QueryLog,
    /// Queries that have a ticket out, for cancellation.
    pub(crate) queries: queries::Queries,
    /// Result schemas of recent queries.
    pub(crate) schemas: queries::SchemaCache,
    /// Slots for queries running at once.
    pub(crate) slots: Arc<slots::QuerySlots>,
}

impl Reads {
    /// The read path over `base`, with `--max-queries` slots of which one user may hold
    /// `--max-queries-per-user` (default: half).
    pub(crate) fn new(base: Arc<Base>, ddl: Arc<Ddl>) -> Self {
        let config = &base.config;
        let per_user = match config.max_queries_per_user {
            0 => config.max_queries / 2,
            n => n,
        };
        let slots = slots::QuerySlots::new(config.max_queries, per_user);
        Self {
            base,
            ddl,
            pinned: Default::default(),
            query_log: Default::default(),
            queries: Default::default(),
            schemas: Default::default(),
            slots,
        }
    }

    /// Enforces query cancellation and time limits, until shutdown.
    pub(crate) async fn run_query_watchdog(self: Arc<Self>) {
        let mut tick = tokio::time::interval(std::time::Duration::from_millis(20));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = self.base.shutdown.cancelled() => return,
                _ = tick.tick() => self.queries.enforce(),
            }
        }
    }
}
