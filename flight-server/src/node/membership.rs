//! The node as a member of a cluster: its membership (static without Redis), the marks that
//! say which tables it holds unflushed rows of, connections to peers, and running fragments.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use duckdb::params_from_iter;
use duckdb::types::Value;
use skein_proto::Fragment;
use skein_ring::{Member, Membership, Ring};

use super::{Node, blocking};
use crate::error::{Error, Result};
use crate::table::TableRuntime;

/// A cached connection to a peer, with when it was made (its token expires).
type PeerConnection = (skein_client::Client, Instant);

/// Connections to peers by address.
#[derive(Debug, Default)]
pub struct Peers {
    clients: parking_lot::Mutex<HashMap<String, PeerConnection>>,
}

impl Node {
    /// Joins the cluster (Redis membership) or sets up the static membership of one. `listen`
    /// is the bound Flight address (the listen port may have been 0).
    pub async fn join_cluster(self: &Arc<Self>, listen: std::net::SocketAddr) -> Result<()> {
        let address = match &self.config.advertise_addr {
            Some(a) => a.clone(),
            None if listen.ip().is_unspecified() => {
                return Err(Error::InvalidArgument(format!(
                    "--listen {} is a wildcard address: give --advertise-addr host:port, the \
                     address other nodes and clients reach this node at",
                    self.config.listen
                )));
            }
            None => listen.to_string(),
        };
        let me = Member {
            node_id: self.config.node_id.clone(),
            address,
            started_ms: crate::system::now_ms(),
            version: env!("CARGO_PKG_VERSION").to_string(),
        };
        let membership = match &self.config.storage.redis_url {
            None => Arc::new(Membership::single(me)),
            Some(url) => {
                let timeout = self.config.storage.storage_timeout;
                let pool = skein_ring::connect_pool(url, timeout)?;
                let weak = Arc::downgrade(self);
                let provider = Arc::new(move || {
                    weak.upgrade()
                        .map(|n| n.unflushed_tables())
                        .unwrap_or_default()
                });
                Membership::join(
                    pool,
                    &self.config.storage.cluster_name,
                    me,
                    self.config.heartbeat_ttl,
                    timeout,
                    provider,
                )
                .await?
            }
        };
        self.membership
            .set(membership)
            .map_err(|_| Error::Internal("the node joined its cluster twice".into()))
    }

    /// Leaving on shutdown: flushes every buffer while still serving, then deregisters.
    pub async fn leave_cluster(self: &Arc<Self>) {
        let Some(m) = self.membership.get() else {
            return;
        };
        if m.is_static() {
            return;
        }
        if let Err(e) = self.flush_all().await {
            tracing::warn!(error = %e, "flush before leaving the cluster failed");
        }
        if let Err(e) = m.leave().await {
            tracing::warn!(error = %e, "leaving the cluster failed");
        }
    }

    /// Why the node should not get traffic now, if it should not: shutting down, writes
    /// stopped, not (yet) a member of its cluster, or its shared catalog lost.
    pub fn not_ready(&self) -> Option<String> {
        if self.shutdown.is_cancelled() {
            return Some("shutting down".into());
        }
        if let Some(reason) = self.writes_stopped() {
            return Some(format!("writes stopped: {reason}"));
        }
        let Some(m) = self.membership.get() else {
            return Some("not a member of its cluster yet".into());
        };
        if m.ring().member(&self.config.node_id).is_none() {
            return Some("not in its own ring".into());
        }
        if self.lost_snapshot_saved.lock().is_some() {
            return Some(
                "the shared catalog lost its data; restore it (skein.restore) to take changes"
                    .into(),
            );
        }
        None
    }

    /// Clears the unflushed marks of `node_id`, a node out of the ring that will not return;
    /// returns the names of the tables whose rows it held.
    pub async fn forget_node(&self, node_id: &str) -> Result<Vec<String>> {
        let Some(m) = self.membership.get().filter(|m| !m.is_static()) else {
            return Err(Error::InvalidArgument(
                "this node is not part of a cluster (no --redis-url)".into(),
            ));
        };
        if m.ring().member(node_id).is_some() {
            return Err(Error::InvalidArgument(format!(
                "node {node_id} is a live member of the cluster; stop it (it flushes as it \
                 leaves) instead of forgetting it"
            )));
        }
        let ids = m.forget(node_id).await?;
        let snapshot = self.catalog.snapshot();
        let names = ids
            .iter()
            .map(|id| {
                snapshot
                    .table_by_id(*id)
                    .map_or_else(|| format!("(dropped table {id})"), |t| t.name.clone())
            })
            .collect();
        tracing::warn!(node = %node_id, tables = ?ids, "forgot a departed node's unflushed rows");
        Ok(names)
    }

    /// The node's membership (a static one of one until [`Node::join_cluster`] ran).
    pub fn membership(&self) -> Option<&Arc<Membership>> {
        self.membership.get()
    }

    /// The current ring: every live member, this node included.
    pub fn ring(&self) -> Arc<Ring> {
        match self.membership.get() {
            Some(m) => m.ring(),
            None => Arc::new(Ring::new(Vec::new())),
        }
    }

    /// Tables with rows on this node that are not in Parquet yet: appends under way, or
    /// records past the table's flushed position.
    pub fn unflushed_tables(&self) -> BTreeSet<u64> {
        let me = &self.config.node_id;
        self.tables
            .read()
            .values()
            .filter(|rt| {
                let last = rt.last_seq.load(Ordering::SeqCst);
                let flushed = rt.meta().flushed_wal.get(me).copied().unwrap_or(0);
                rt.appending.load(Ordering::SeqCst) > 0 || last > flushed
            })
            .map(|rt| rt.id)
            .collect()
    }

    /// Marks `rt` as holding unflushed rows on this node, in the cluster, before an append
    /// writes its WAL record; the returned guard ends the append's share of the mark.
    pub async fn mark_unflushed(&self, rt: &Arc<TableRuntime>) -> Result<AppendMark> {
        rt.appending.fetch_add(1, Ordering::SeqCst);
        let mark = AppendMark(Arc::clone(rt));
        if let Some(m) = self.membership.get()
            && !m.is_static()
        {
            m.mark_unflushed(rt.id)
                .await
                .map_err(|e| Error::PeerUnavailable {
                    node: self.config.node_id.clone(),
                    reason: format!(
                        "cannot record in Redis that it holds unflushed rows of table {:?} \
                         ({e}); nothing was written, try again",
                        rt.name
                    ),
                })?;
        }
        Ok(mark)
    }

    /// The live table with catalog id `id`.
    pub fn table_by_id(&self, id: u64) -> Option<Arc<TableRuntime>> {
        self.tables.read().get(&id).cloned()
    }

    /// A client for the peer at `address`, authenticated as the cluster if authentication is
    /// on.
    pub async fn peer_client(&self, address: &str) -> Result<skein_client::Client> {
        let fresh = |made: &Instant| made.elapsed() < self.config.token_ttl / 2;
        if let Some((c, made)) = self.peers.clients.lock().get(address)
            && fresh(made)
        {
            return Ok(c.clone());
        }
        let tls = self.config.tls_cert.is_some();
        let uri = format!("{}://{address}", if tls { "grpc+tls" } else { "grpc" });
        let mut options = skein_client::ConnectOptions::new(uri);
        if let (Some(cert), Some(key)) = (&self.config.tls_cert, &self.config.tls_key) {
            options.tls_ca = Some(
                self.config
                    .tls_peer_ca
                    .clone()
                    .unwrap_or_else(|| cert.clone()),
            );
            options.tls_identity = Some((cert.clone(), key.clone()));
        }
        options.connect_timeout = self.config.peer_timeout.min(Duration::from_secs(10));
        if let Some(auth) = &self.auth {
            let token = auth.issue_node(&self.config.node_id);
            options.auth = skein_client::Auth::Bearer(token);
        }
        let client =
            skein_client::Client::connect(options)
                .await
                .map_err(|e| Error::PeerUnavailable {
                    node: address.to_string(),
                    reason: e.to_string(),
                })?;
        self.peers
            .clients
            .lock()
            .insert(address.to_string(), (client.clone(), Instant::now()));
        Ok(client)
    }

    /// Forgets the connection to `address` (after it failed).
    pub fn drop_peer_client(&self, address: &str) {
        self.peers.clients.lock().remove(address);
    }

    /// Runs `fragment` on this node and collects its rows (the coordinator's own share).
    pub async fn fragment_batches(
        self: &Arc<Self>,
        fragment: &Fragment,
    ) -> Result<(SchemaRef, Vec<RecordBatch>)> {
        let reads = self.fragment_reads(fragment).await?;
        let values = fragment_values(fragment)?;
        let (node, sql) = (Arc::clone(self), fragment.sql.clone());
        blocking(move || {
            let mut conn = node.engine.pooled()?;
            reads.install(&conn)?;
            let result = (|| -> Result<(SchemaRef, Vec<RecordBatch>)> {
                let mut stmt = conn.prepare(&sql)?;
                let arrow = stmt.query_arrow(params_from_iter(values.iter()))?;
                let schema = arrow.get_schema();
                Ok((schema, arrow.collect()))
            })();
            if reads.remove(&conn).is_err() {
                conn.discard();
            }
            result
        })
        .await
    }

    /// The names of DuckDB's aggregate functions (for the planner), read once.
    pub fn aggregate_functions(&self) -> Result<Arc<HashSet<String>>> {
        if let Some(a) = self.aggregates.get() {
            return Ok(Arc::clone(a));
        }
        let conn = self.engine.pooled()?;
        let mut stmt = conn.prepare(
            "SELECT DISTINCT lower(function_name) FROM duckdb_functions() \
             WHERE function_type = 'aggregate'",
        )?;
        let names: HashSet<String> = stmt
            .query_map([], |r| r.get::<_, String>(0))?
            .collect::<std::result::Result<_, _>>()?;
        let names = Arc::new(names);
        let _ = self.aggregates.set(Arc::clone(&names));
        Ok(names)
    }
}

/// The bound parameters of a fragment, as one row.
pub fn fragment_values(fragment: &Fragment) -> Result<Vec<Value>> {
    let batches = crate::params::from_ipc(&fragment.parameters)?;
    let mut rows = crate::params::rows(&batches)?;
    Ok(rows.pop().unwrap_or_default())
}

/// An append's share of its table's unflushed mark; dropped when the rows are buffered (or the
/// append failed).
#[derive(Debug)]
pub struct AppendMark(Arc<TableRuntime>);

impl Drop for AppendMark {
    fn drop(&mut self) {
        self.0.appending.fetch_sub(1, Ordering::SeqCst);
    }
}
