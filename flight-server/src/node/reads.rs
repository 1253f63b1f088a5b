//! Preparing a query's reads: which tables it names, which of their files it needs after
//! pruning, local copies of those files, and the temporary views that show exactly them.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use duckdb::Connection;
use futures::{StreamExt, TryStreamExt};
use skein_storage::{CachedFile, FileMeta, TableMeta};

use super::Node;
use crate::error::Result;
use crate::prune;
use crate::table::{ReadView, inner_view, temp_view_sql};

/// How many objects one query downloads at once.
const PARALLEL_DOWNLOADS: usize = 8;

/// What one query reads: temporary views to create on its connection, and what they need kept
/// alive until it ends (local copies of files, buffer generations).
#[derive(Debug, Default)]
pub struct ReadSet {
    views: Vec<(u64, String)>,
    /// System tables the statement names, and the statements that fill them.
    system: Vec<&'static str>,
    system_sql: Vec<String>,
    _files: Vec<CachedFile>,
    _views: Vec<ReadView>,
    /// Files read, and files skipped by pruning.
    pub files_read: usize,
    pub files_pruned: usize,
}

impl ReadSet {
    /// Creates the temporary views on `conn`.
    pub fn install(&self, conn: &Connection) -> Result<()> {
        for sql in &self.system_sql {
            conn.execute_batch(sql)?;
        }
        for (_, sql) in &self.views {
            conn.execute_batch(sql)?;
        }
        Ok(())
    }

    /// Removes them again, so that the connection can serve another query.
    pub fn remove(&self, conn: &Connection) -> Result<()> {
        for sql in crate::system::drop_statements(&self.system) {
            conn.execute_batch(&sql)?;
        }
        for (id, _) in &self.views {
            conn.execute_batch(&format!(
                "DROP VIEW IF EXISTS temp.main.{}",
                inner_view(*id)
            ))?;
        }
        Ok(())
    }

    /// Whether there is anything to install.
    pub fn is_empty(&self) -> bool {
        self.views.is_empty() && self.system.is_empty()
    }
}

impl Node {
    /// Gets ready to run `sql`: takes in other nodes' catalog changes, then for every table the
    /// statement may name, a consistent read view, pruned by the statement's filters, with
    /// every file it keeps available locally.
    pub async fn prepare_reads(self: &Arc<Self>, sql: &str) -> Result<ReadSet> {
        if self.catalog.is_shared()
            && let Err(e) = self.refresh_catalog_if_idle().await
        {
            // Serve what this node knows; the error is logged and counted by the refresh.
            tracing::debug!(error = %e, "catalog refresh before a query failed");
        }
        let lower = sql.to_lowercase();
        // Once per query: the identifiers pick system tables and, below, the tables read.
        let words = prune::identifiers(sql);
        let system = self.system_tables(&lower, words.as_ref());
        let runtimes = self.list_tables();
        let named: Vec<_> = runtimes
            .into_iter()
            .filter(|(meta, _)| lower.contains(&meta.name.to_lowercase()))
            .collect();
        if named.is_empty() {
            return Ok(system);
        }
        let mut views = Vec::new();
        for (_, rt) in &named {
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
        let mut set = system;
        let mut kept: Vec<(usize, Vec<FileMeta>)> = Vec::new();
        for (i, view) in views.iter().enumerate() {
            let filter = filters
                .get(&view.meta.name.to_lowercase())
                .cloned()
                .unwrap_or_else(prune::Filter::all);
            let files: Vec<FileMeta> = view
                .meta
                .files
                .iter()
                .filter(|f| filter.keep(f))
                .cloned()
                .collect();
            set.files_pruned += view.meta.files.len() - files.len();
            set.files_read += files.len();
            kept.push((i, files));
        }
        self.metrics.files_read.inc_by(set.files_read as u64);
        self.metrics.files_pruned.inc_by(set.files_pruned as u64);
        let mut paths_of: Vec<Vec<String>> = Vec::with_capacity(kept.len());
        for (_, files) in &kept {
            let (paths, cached) = self.local_copies(files).await?;
            paths_of.push(paths);
            set._files.extend(cached);
        }
        for ((i, files), paths) in kept.into_iter().zip(paths_of) {
            let view = &views[i];
            let mut meta = view.meta.clone();
            meta.files = files;
            set.views
                .push((meta.id, temp_view_sql(&meta, &paths, &view.generations)));
        }
        set._views = views;
        Ok(set)
    }

    /// The system tables `sql` (lower-cased) names, filled from the node's state now.
    fn system_tables(&self, lower: &str, words: Option<&HashSet<String>>) -> ReadSet {
        let wanted: Vec<&'static str> = crate::system::NAMES
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
        let listed = self.list_tables();
        let tables = || {
            listed
                .iter()
                .map(|(m, rt)| crate::system::TableRow {
                    name: m.name.clone(),
                    file_rows: m.file_rows(),
                    files: m.files.len() as u64,
                    bytes: m.files.iter().map(|f| f.bytes).sum(),
                    buffered_rows: rt.level().total_rows,
                    columns: m.columns.len() as u64,
                    created_ms: m.created_at_ms,
                })
                .collect()
        };
        let files = || {
            listed
                .iter()
                .flat_map(|(m, _)| {
                    m.files.iter().map(|f| crate::system::FileRow {
                        table: m.name.clone(),
                        key: f.key.clone(),
                        rows: f.rows,
                        bytes: f.bytes,
                        created_ms: f.created_at_ms,
                    })
                })
                .collect()
        };
        let nodes = || {
            vec![crate::system::NodeRow {
                node_id: self.config.node_id.clone(),
                address: self.config.listen.to_string(),
                version: env!("CARGO_PKG_VERSION").to_string(),
                state: "serving".to_string(),
            }]
        };
        let system_sql = crate::system::statements(&wanted, tables, files, nodes, &self.query_log);
        ReadSet {
            system: wanted,
            system_sql,
            ..ReadSet::default()
        }
    }

    /// Local paths of `files`, fetching them into the cache if the store is remote.
    async fn local_copies(&self, files: &[FileMeta]) -> Result<(Vec<String>, Vec<CachedFile>)> {
        let Some(cache) = &self.cache else {
            return Ok((self.local_paths(files)?, Vec::new()));
        };
        let store = Arc::clone(&self.store);
        let cached: Vec<CachedFile> = futures::stream::iter(files.iter().cloned())
            .map(|f| {
                let (cache, store) = (Arc::clone(cache), Arc::clone(&store));
                async move { cache.get(store.as_ref(), &f).await }
            })
            .buffered(PARALLEL_DOWNLOADS)
            .try_collect()
            .await?;
        let paths = cached
            .iter()
            .map(|c| c.path().display().to_string())
            .collect();
        Ok((paths, cached))
    }
}
