//! Preparing a query's reads: which tables it names, which of their files it needs after
//! pruning, local copies of those files, and the temporary views that show exactly them.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use duckdb::Connection;
use skein_proto::Fragment;
use skein_storage::{FileMeta, TableMeta};

use super::Reads;
use super::pins::Held;
use crate::error::{Error, Result};
use crate::table::{ReadView, TableRuntime, inner_view, temp_view_sql};
use skein_sql::prune;

/// What one query reads: temporary views to create on its connection, and what they need kept
/// alive until it ends (local copies of files, buffer generations).
#[derive(Debug, Default)]
pub(crate) struct ReadSet {
    views: Vec<(u64, String)>,
    /// System tables the statement names, and the statements that fill them.
    system: Vec<&'static str>,
    system_sql: Vec<String>,
    _files: Vec<Held>,
    _views: Vec<ReadView>,
    /// Tables of rows shipped from other nodes, dropped when the query ends.
    scratch: Vec<String>,
    /// Files read, and files skipped by pruning.
    pub(crate) files_read: usize,
    pub(crate) files_pruned: usize,
}

impl ReadSet {
    /// Creates the temporary views on `conn`.
    pub(crate) fn install(&self, conn: &Connection) -> Result<()> {
        for sql in &self.system_sql {
            conn.execute_batch(sql)?;
        }
        for (_, sql) in &self.views {
            conn.execute_batch(sql)?;
        }
        Ok(())
    }

    /// Removes them again, so that the connection can serve another query.
    pub(crate) fn remove(&self, conn: &Connection) -> Result<()> {
        for sql in crate::read::system::drop_statements(&self.system) {
            conn.execute_batch(&sql)?;
        }
        for (id, _) in &self.views {
            conn.execute_batch(&format!(
                "DROP VIEW IF EXISTS temp.main.{}",
                inner_view(*id)
            ))?;
        }
        for table in &self.scratch {
            conn.execute_batch(&format!("DROP TABLE IF EXISTS {table}"))?;
        }
        Ok(())
    }

    /// Whether there is anything to install.
    pub(crate) fn is_empty(&self) -> bool {
        self.views.is_empty() && self.system.is_empty() && self.scratch.is_empty()
    }

    /// Drops `table` (in the internal schema) with the rest when the query ends.
    pub(crate) fn add_scratch(&mut self, table: String) {
        self.scratch.push(table);
    }
}

/// The tables a query reads: consistent read views, and the filters on them.
#[derive(Debug)]
pub(crate) struct Selected {
    /// One read view per table read.
    pub(crate) views: Vec<ReadView>,
    filters: HashMap<String, prune::Filter>,
    system: ReadSet,
}

impl Selected {
    /// The files of `view` the query's filters keep.
    pub(crate) fn kept_files(&self, view: &ReadView) -> Vec<FileMeta> {
        let filter = self
            .filters
            .get(&view.meta.name.to_lowercase())
            .cloned()
            .unwrap_or_else(prune::Filter::all);
        view.meta
            .files
            .iter()
            .filter(|f| filter.keep(f))
            .cloned()
            .collect()
    }
}

impl Reads {
    /// Gets ready to run `sql`: takes in other nodes' catalog changes, then for every table the
    /// statement may name, a consistent read view, pruned by the statement's filters, with
    /// every file it keeps available locally.
    pub(crate) async fn prepare_reads(self: &Arc<Self>, sql: &str) -> Result<ReadSet> {
        let selected = self.select_reads(sql).await?;
        self.build_reads(selected, &HashMap::new()).await
    }

    /// Takes in other nodes' catalog changes, then picks the tables `sql` may name (with a read
    /// view of each) and the filters on them.
    pub(crate) async fn select_reads(self: &Arc<Self>, sql: &str) -> Result<Selected> {
        if self.base.catalog.is_shared()
            && let Err(e) = self.ddl.refresh_catalog_if_idle().await
        {
            // Serve what this node knows; the error is logged and counted by the refresh.
            tracing::debug!(error = %e, "catalog refresh before a query failed");
        }
        let lower = sql.to_lowercase();
        // Once per query: the identifiers pick system tables and, below, the tables read.
        let words = prune::identifiers(sql);
        let system = self.system_tables(&lower, words.as_ref());
        // Runtimes only: cloning every table's metadata per query would cost with the files.
        let named: Vec<Arc<TableRuntime>> = {
            let snapshot = self.base.catalog.snapshot();
            let tables = self.base.tables.read();
            snapshot
                .tables
                .values()
                .filter(|m| lower.contains(&m.name.to_lowercase()))
                .filter_map(|m| tables.get(&m.id).cloned())
                .collect()
        };
        if named.is_empty() {
            return Ok(Selected {
                views: Vec::new(),
                filters: HashMap::new(),
                system,
            });
        }
        let mut views = Vec::new();
        for rt in &named {
            match rt.read_view() {
                Ok(v) => views.push(v),
                Err(crate::error::Error::UnknownTable { .. }) => {} // dropped meanwhile
                Err(e) => return Err(e),
            }
        }
        let analysis = {
            let metas: HashMap<String, &TableMeta> = views
                .iter()
                .map(|v| (v.meta.name.to_lowercase(), &v.meta))
                .collect();
            prune::analyse(sql, &metas)
        };
        let filters = analysis.filters;
        if let (Some(referenced), Some(words)) = (&analysis.referenced, &words) {
            // The statement parsed: the tables it names as relations (or in strings), and, to
            // be safe with syntax the parser reads differently, any named as an identifier.
            // A name matched only as part of another word is not read.
            views.retain(|v| {
                let name = v.meta.name.to_lowercase();
                referenced.contains(&name) || words.contains(&name)
            });
        }
        for v in &views {
            self.base
                .metrics
                .table_requests
                .with_label_values(&[&v.meta.name, "query"])
                .inc();
        }
        Ok(Selected {
            views,
            filters,
            system,
        })
    }

    /// The read set of `selected`: every kept file available locally, and per table a
    /// temporary view over them, the buffer generations, and the relations in `extra` (rows
    /// other nodes shipped, by table id).
    pub(crate) async fn build_reads(
        self: &Arc<Self>,
        selected: Selected,
        extra: &HashMap<u64, String>,
    ) -> Result<ReadSet> {
        let mut set = ReadSet::default();
        let mut kept: Vec<(usize, Vec<FileMeta>)> = Vec::new();
        for (i, view) in selected.views.iter().enumerate() {
            let files = selected.kept_files(view);
            set.files_pruned += view.meta.files.len() - files.len();
            set.files_read += files.len();
            kept.push((i, files));
        }
        self.base.metrics.files_read.inc_by(set.files_read as u64);
        self.base
            .metrics
            .files_pruned
            .inc_by(set.files_pruned as u64);
        let mut paths_of: Vec<Vec<String>> = Vec::with_capacity(kept.len());
        for (_, files) in &kept {
            let (paths, cached) = self.local_copies(files).await?;
            paths_of.push(paths);
            set._files.push(cached);
        }
        for ((i, files), paths) in kept.into_iter().zip(paths_of) {
            let view = &selected.views[i];
            let mut meta = view.meta.clone();
            meta.files = files;
            let extra: Vec<String> = extra.get(&meta.id).cloned().into_iter().collect();
            set.views.push((
                meta.id,
                temp_view_sql(&meta, &paths, &view.generations, &extra),
            ));
        }
        let Selected { views, system, .. } = selected;
        set.system = system.system;
        set.system_sql = system.system_sql;
        set._views = views;
        Ok(set)
    }

    /// The read set of a fragment another node (or this one, coordinating) planned: per table
    /// slice, the files it lists and, if asked, this node's own rows the coordinator's file
    /// list does not hold: buffer generations past the flushed position it knew, and files of
    /// this node committed after it.
    pub(crate) async fn fragment_reads(self: &Arc<Self>, fragment: &Fragment) -> Result<ReadSet> {
        let planned = (fragment.catalog_epoch, fragment.catalog_version);
        if self.base.catalog.is_shared() {
            let known = self.base.catalog.snapshot();
            if planned > (known.epoch, known.version)
                // A table the catalog may know already while its runtime is still being
                // opened (a refresh under way): waiting for the refresh lock covers both.
                || fragment
                    .tables
                    .iter()
                    .any(|t| self.base.table_by_id(t.table_id).is_none())
            {
                self.ddl.refresh_catalog().await?;
            }
        }
        let me = self.base.config.node_id.as_str();
        let mut set = ReadSet::default();
        let mut pending: Vec<(ReadView, Vec<FileMeta>, Vec<u64>)> = Vec::new();
        for slice in &fragment.tables {
            let rt = self.base.table_by_id(slice.table_id).ok_or_else(|| {
                Error::InvalidArgument(format!(
                    "fragment of query {} names table id {} that node {me} does not know",
                    fragment.query_id, slice.table_id
                ))
            })?;
            let view = rt.read_view()?;
            let known = self.base.catalog.snapshot();
            let newest = known.table_by_id(slice.table_id);
            let mut files = Vec::with_capacity(slice.files.len());
            for key in &slice.files {
                // A file merged or rewritten since the coordinator planned is retired, not
                // gone: its object stays for the grace period.
                let found = newest
                    .and_then(|m| m.files.iter().find(|f| &f.key == key))
                    .or_else(|| view.meta.files.iter().find(|f| &f.key == key))
                    .or_else(|| newest.and_then(|m| skein_compaction::retired_file(m, key)));
                match found {
                    Some(f) => files.push(f.clone()),
                    None => {
                        return Err(Error::InvalidArgument(format!(
                            "fragment of query {} lists file {key} of table {:?}, which is not \
                             in node {me}'s catalog",
                            fragment.query_id, rt.name
                        )));
                    }
                }
            }
            let mut generations = Vec::new();
            if slice.own_rows {
                let newer = |seq: Option<u64>| match (slice.flushed, seq) {
                    (None, _) => true,
                    (Some(_), None) => true,
                    (Some(flushed), Some(s)) => s > flushed,
                };
                for (g, seq) in view.generations.iter().zip(&view.generation_seqs) {
                    if newer(*seq) {
                        generations.push(*g);
                    }
                }
                for f in &view.meta.files {
                    if f.node.as_deref() == Some(me)
                        && slice
                            .flushed
                            .is_none_or(|s| f.max_seq.is_some_and(|m| m > s))
                        && !slice.files.contains(&f.key)
                    {
                        files.push(f.clone());
                    }
                }
            }
            pending.push((view, files, generations));
        }
        for (view, files, generations) in pending {
            set.files_read += files.len();
            let (paths, cached) = self.local_copies(&files).await?;
            set._files.push(cached);
            let mut meta = view.meta.clone();
            meta.files = files;
            set.views
                .push((meta.id, temp_view_sql(&meta, &paths, &generations, &[])));
            set._views.push(view);
        }
        Ok(set)
    }

    /// The system tables `sql` (lower-cased) names, filled from the node's state now.
    fn system_tables(&self, lower: &str, words: Option<&HashSet<String>>) -> ReadSet {
        let wanted: Vec<&'static str> = crate::read::system::NAMES
            .iter()
            .copied()
            .filter(|n| match words {
                Some(w) => w.contains(*n),
                None => lower.contains(n),
            })
            .collect();
        if wanted.is_empty() {
            return ReadSet::default();
        }
        let listed = self.base.list_tables();
        let tables = || {
            listed
                .iter()
                .map(|(m, rt)| crate::read::system::TableRow {
                    name: m.name.clone(),
                    file_rows: m.file_rows(),
                    files: m.files.len() as u64,
                    bytes: m.files.iter().map(|f| f.bytes).sum(),
                    buffered_rows: rt.level().total_rows,
                    columns: m.columns.len() as u64,
                    created_ms: m.created_at_ms,
                    flush: crate::write::flush::flush_limits(&self.base.config.flush, rt),
                    time_column: m.options.time_column.clone(),
                    retention_ms: m.options.retention_ms,
                    retired_files: m.retired.len() as u64,
                })
                .collect()
        };
        let files = || {
            listed
                .iter()
                .flat_map(|(m, _)| {
                    m.files.iter().map(|f| crate::read::system::FileRow {
                        table: m.name.clone(),
                        key: f.key.clone(),
                        rows: f.rows,
                        bytes: f.bytes,
                        created_ms: f.created_at_ms,
                        partition: f.partition.clone(),
                    })
                })
                .collect()
        };
        let nodes = || self.node_rows();
        let system_sql =
            crate::read::system::statements(&wanted, tables, files, nodes, &self.query_log);
        ReadSet {
            system: wanted,
            system_sql,
            ..ReadSet::default()
        }
    }

    /// The cluster's members, and nodes out of it that still hold unflushed rows.
    fn node_rows(&self) -> Vec<crate::read::system::NodeRow> {
        let ring = self.base.ring();
        let marks = self
            .base
            .membership()
            .map(|m| m.unflushed())
            .unwrap_or_default();
        let me = &self.base.config.node_id;
        let mut rows: Vec<crate::read::system::NodeRow> = ring
            .members()
            .iter()
            .map(|m| crate::read::system::NodeRow {
                node_id: m.node_id.clone(),
                address: m.address.clone(),
                version: m.version.clone(),
                state: "up".to_string(),
                started_ms: m.started_ms,
                is_self: &m.node_id == me,
                unflushed_tables: if &m.node_id == me {
                    self.base.unflushed_tables().len() as u64
                } else {
                    marks.get(&m.node_id).map_or(0, |t| t.len() as u64)
                },
            })
            .collect();
        if rows.is_empty() {
            rows.push(crate::read::system::NodeRow {
                node_id: me.clone(),
                address: self.base.config.listen.to_string(),
                version: env!("CARGO_PKG_VERSION").to_string(),
                state: "up".to_string(),
                started_ms: 0,
                is_self: true,
                unflushed_tables: self.base.unflushed_tables().len() as u64,
            });
        }
        for (id, tables) in marks {
            if !tables.is_empty() && ring.member(&id).is_none() {
                rows.push(crate::read::system::NodeRow {
                    node_id: id,
                    address: String::new(),
                    version: String::new(),
                    state: "gone".to_string(),
                    started_ms: 0,
                    is_self: false,
                    unflushed_tables: tables.len() as u64,
                });
            }
        }
        rows
    }
}
