//! Maintenance: the work that changes a table's files after they were flushed.
//!
//! It owns compaction ([`compact`]: merging small files, laying out by day the files written
//! before the table had its time column, dropping files past the retention, deleting the
//! objects of retired files once no query can read them) and copy-on-write rewrites
//! ([`rewrite`]: DELETE and UPDATE over flushed and buffered rows on every node), with the
//! per-table lock that serialises them on this node. What to merge and how the manifest changes
//! is `skein-compaction`'s; writing the new files is DuckDB's.
//!
//! Its promises: a rewrite swaps its inputs for its outputs in one catalog commit or not at all
//! (a lost race deletes its outputs); the rows a swap keeps are exactly the rows it read; no
//! object is deleted while a query on this node may read it.

use std::collections::HashMap;
use std::sync::Arc;

use crate::base::Base;
use crate::cluster::Cluster;
use crate::ddl::Ddl;
use crate::read::Reads;
use crate::write::Writes;

pub(crate) mod compact;
pub(crate) mod rewrite;

/// Maintenance's state, and the subsystems its work calls on.
#[derive(Debug)]
pub(crate) struct Maintenance {
    base: Arc<Base>,
    writes: Arc<Writes>,
    reads: Arc<Reads>,
    cluster: Arc<Cluster>,
    ddl: Arc<Ddl>,
    /// Serialises compaction passes and DELETE/UPDATE rewrites on this node, per table id.
    rewrites: parking_lot::Mutex<HashMap<u64, Arc<tokio::sync::Mutex<()>>>>,
}

impl Maintenance {
    /// Maintenance of the tables of `base`.
    pub(crate) fn new(
        base: Arc<Base>,
        writes: Arc<Writes>,
        reads: Arc<Reads>,
        cluster: Arc<Cluster>,
        ddl: Arc<Ddl>,
    ) -> Self {
        Self {
            base,
            writes,
            reads,
            cluster,
            ddl,
            rewrites: Default::default(),
        }
    }
}
