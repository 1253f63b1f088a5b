//! The node as a member of a cluster: its membership (static without Redis), the marks that
//! say which tables it holds unflushed rows of, connections to peers, and running fragments.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use duckdb::params_from_iter;
use duckdb::types::Value;
use skein_proto::Fragment;
use skein_ring::{Member, Membership};

use super::Cluster;
use crate::base::blocking;
use crate::error::{Error, Result};

/// A cached connection to a peer, with when it was made (its token expires).
type PeerConnection = (skein_client::Client, Instant);

/// Connections to peers by address.
#[derive(Debug, Default)]
pub(crate) struct Peers {
    clients: parking_lot::Mutex<HashMap<String, PeerConnection>>,
}

impl Cluster {
    /// Joins the cluster (Redis membership) or sets up the static membership of one. `listen`
    /// is the bound Flight address (the listen port may have been 0).
    pub(crate) async fn join_cluster(self: &Arc<Self>, listen: std::net::SocketAddr) -> Result<()> {
        let address = match &self.base.config.advertise_addr {
            Some(a) => a.clone(),
            None if listen.ip().is_unspecified() => {
                return Err(Error::InvalidArgument(format!(
                    "--listen {} is a wildcard address: give --advertise-addr host:port, the \
                     address other nodes and clients reach this node at",
                    self.base.config.listen
                )));
            }
            None => listen.to_string(),
        };
        let me = Member {
            node_id: self.base.config.node_id.clone(),
            address,
            started_ms: crate::base::now_ms(),
            version: env!("CARGO_PKG_VERSION").to_string(),
        };
        let membership = match &self.base.config.storage.redis_url {
            None => Arc::new(Membership::single(me)),
            Some(url) => {
                let timeout = self.base.config.storage.storage_timeout;
                let pool = skein_ring::connect_pool(url, timeout)?;
                let weak = Arc::downgrade(&self.base);
                let provider = Arc::new(move || {
                    weak.upgrade()
                        .map(|b| b.unflushed_tables())
                        .unwrap_or_default()
                });
                Membership::join(
                    pool,
                    &self.base.config.storage.cluster_name,
                    me,
                    self.base.config.heartbeat_ttl,
                    timeout,
                    provider,
                )
                .await?
            }
        };
        self.base
            .membership
            .set(membership)
            .map_err(|_| Error::Internal("the node joined its cluster twice".into()))
    }

    /// Leaving on shutdown: flushes every buffer while still serving, then deregisters.
    pub(crate) async fn leave_cluster(self: &Arc<Self>) {
        let Some(m) = self.base.membership.get() else {
            return;
        };
        if m.is_static() {
            return;
        }
        if let Err(e) = self.writes.flush_all().await {
            tracing::warn!(error = %e, "flush before leaving the cluster failed");
        }
        if let Err(e) = m.leave().await {
            tracing::warn!(error = %e, "leaving the cluster failed");
        }
    }

    /// Why the node should not get traffic now, if it should not: shutting down, writes
    /// stopped, not (yet) a member of its cluster, or its shared catalog lost.
    pub(crate) fn not_ready(&self) -> Option<String> {
        if self.base.shutdown.is_cancelled() {
            return Some("shutting down".into());
        }
        if let Some(reason) = self.writes.writes_stopped() {
            return Some(format!("writes stopped: {reason}"));
        }
        let Some(m) = self.base.membership.get() else {
            return Some("not a member of its cluster yet".into());
        };
        if m.ring().member(&self.base.config.node_id).is_none() {
            return Some("not in its own ring".into());
        }
        if self.ddl.catalog_lost() {
            return Some(
                "the shared catalog lost its data; restore it (skein.restore) to take changes"
                    .into(),
            );
        }
        None
    }

    /// Clears the unflushed marks of `node_id`, a node out of the ring that will not return;
    /// returns the names of the tables whose rows it held.
    pub(crate) async fn forget_node(&self, node_id: &str) -> Result<Vec<String>> {
        let Some(m) = self.base.membership.get().filter(|m| !m.is_static()) else {
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
        let snapshot = self.base.catalog.snapshot();
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

    /// A client for the peer at `address`, authenticated as the cluster if authentication is
    /// on.
    pub(crate) async fn peer_client(&self, address: &str) -> Result<skein_client::Client> {
        let fresh = |made: &Instant| made.elapsed() < self.base.config.token_ttl / 2;
        if let Some((c, made)) = self.peers.clients.lock().get(address)
            && fresh(made)
        {
            return Ok(c.clone());
        }
        let tls = self.base.config.tls_cert.is_some();
        let uri = format!("{}://{address}", if tls { "grpc+tls" } else { "grpc" });
        let mut options = skein_client::ConnectOptions::new(uri);
        if let (Some(cert), Some(key)) = (&self.base.config.tls_cert, &self.base.config.tls_key) {
            options.tls_ca = Some(
                self.base
                    .config
                    .tls_peer_ca
                    .clone()
                    .unwrap_or_else(|| cert.clone()),
            );
            options.tls_identity = Some((cert.clone(), key.clone()));
        }
        options.connect_timeout = self.base.config.peer_timeout.min(Duration::from_secs(10));
        if let Some(auth) = &self.auth {
            let token = auth.issue_node(&self.base.config.node_id);
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
    pub(crate) fn drop_peer_client(&self, address: &str) {
        self.peers.clients.lock().remove(address);
    }

    /// Runs `fragment` on this node and collects its rows (the coordinator's own share).
    pub(crate) async fn fragment_batches(
        self: &Arc<Self>,
        fragment: &Fragment,
    ) -> Result<(SchemaRef, Vec<RecordBatch>)> {
        let reads = self.reads.fragment_reads(fragment).await?;
        let values = fragment_values(fragment)?;
        let (base, sql) = (Arc::clone(&self.base), fragment.sql.clone());
        blocking(move || {
            let mut conn = base.engine.pooled()?;
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
    pub(crate) fn aggregate_functions(&self) -> Result<Arc<HashSet<String>>> {
        if let Some(a) = self.aggregates.get() {
            return Ok(Arc::clone(a));
        }
        let conn = self.base.engine.pooled()?;
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
pub(crate) fn fragment_values(fragment: &Fragment) -> Result<Vec<Value>> {
    let batches = crate::params::from_ipc(&fragment.parameters)?;
    let mut rows = crate::params::rows(&batches)?;
    Ok(rows.pop().unwrap_or_default())
}
