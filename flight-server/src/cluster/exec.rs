//! The coordinator's side of a distributed query: fragments for every member, run on this
//! node and fetched from peers in parallel, merged in DuckDB.
//!
//! Consistency: the coordinator plans with its catalog snapshot of a table, whose files hold
//! each node's rows up to that node's flushed position in the same snapshot. A fragment tells
//! its node that position; the node adds exactly its rows past it (buffer generations, and
//! files it committed since), so every row is read once however the catalogs of the two nodes
//! differ at that moment.
//!
//! Failures: a peer that fails or passes `--peer-timeout` has its files read again on this
//! node; if it holds unflushed rows of a table the query reads (its marks in Redis, read fresh),
//! the query fails with UNAVAILABLE naming it instead of answering without them. A node that is
//! out of the ring but still marked as holding unflushed rows fails the query the same way.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use prost::Message;
use skein_proto::{FRAGMENT_TYPE_URL, Fragment, TableSlice};
use skein_ring::{Member, Ring};
use skein_storage::TableMeta;

use super::Cluster;
use crate::base::blocking;
use crate::engine::{BUFFER_SCHEMA, ident, result_schema};
use crate::error::{Error, Result};
use crate::read::ReadSet;
use crate::read::system::{Distribution, PeerShare};
use skein_sql::plan::{PARTIALS, Partial, PlanContext, Shape, plan};

/// A query made ready on the coordinator: what to run over which reads, and the schema to give
/// the result (the statement's own).
#[derive(Debug)]
pub(crate) struct Prepared {
    /// Temporary views and scratch tables the final statement reads.
    pub reads: ReadSet,
    /// The statement to run on this cluster.
    pub sql: String,
    /// The result's names and types, if the statement run is not the user's own.
    pub expected: Option<SchemaRef>,
    /// How the query ran across the cluster.
    pub distribution: Distribution,
}

/// What one node's fragment returned.
type Rows = (Option<SchemaRef>, Vec<RecordBatch>);

/// Wraps a fragment as a Flight ticket.
pub(crate) fn fragment_ticket(fragment: &Fragment) -> Bytes {
    let any = prost_types_any(fragment);
    Bytes::from(any.encode_to_vec())
}

fn prost_types_any(fragment: &Fragment) -> arrow_flight::sql::Any {
    arrow_flight::sql::Any {
        type_url: FRAGMENT_TYPE_URL.to_string(),
        value: Bytes::from(fragment.encode_to_vec()),
    }
}

/// The table names (lower-cased) with their lower-cased columns, for the planner.
fn table_columns(cluster: &Cluster) -> BTreeMap<String, Vec<String>> {
    cluster
        .base
        .list_tables()
        .into_iter()
        .map(|(m, _)| {
            (
                m.name.to_lowercase(),
                m.columns.iter().map(|c| c.name.to_lowercase()).collect(),
            )
        })
        .collect()
}

/// The shape `sql` takes on this node's current ring (`Local` without peers).
pub(crate) fn shape_of(cluster: &Cluster, sql: &str, has_parameters: bool) -> Result<Shape> {
    if cluster.base.ring().len() <= 1 {
        return Ok(Shape::Local);
    }
    let tables = table_columns(cluster);
    let aggregates = cluster.aggregate_functions()?;
    Ok(plan(
        sql,
        PlanContext {
            tables: &tables,
            aggregates: &aggregates,
            has_parameters,
        },
    ))
}

/// Fails if a node out of the ring still holds unflushed rows of one of `tables`.
fn check_absent_nodes(cluster: &Cluster, ring: &Ring, tables: &[&TableMeta]) -> Result<()> {
    let Some(m) = cluster.base.membership() else {
        return Ok(());
    };
    for (id, marked) in m.unflushed() {
        if ring.member(&id).is_some() {
            continue;
        }
        if let Some(t) = tables.iter().find(|t| marked.contains(&t.id)) {
            return Err(Error::PeerUnavailable {
                node: id,
                reason: format!(
                    "it holds rows of table {:?} that are not flushed yet and it is not in the \
                     cluster (no heartbeat within its TTL); restart it so that its rows can be \
                     read",
                    t.name
                ),
            });
        }
    }
    Ok(())
}

/// Signs a fragment with the cluster secret, if there is one.
fn sign(cluster: &Cluster, fragment: &mut Fragment) {
    if let Some(auth) = &cluster.auth {
        fragment.signature = Bytes::from(auth.sign(&fragment.signed_bytes()));
    }
}

/// One fragment per member: `sql` over each member's share of `files` of `meta`, plus its own
/// rows.
fn fragments(
    cluster: &Cluster,
    ring: &Ring,
    query_id: &str,
    sql: &str,
    meta: &TableMeta,
    files: &[String],
    parameters: &Bytes,
) -> Vec<(Member, Fragment)> {
    let mut assigned: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for key in files {
        if let Some(owner) = ring.owner(key) {
            assigned
                .entry(owner.node_id.clone())
                .or_default()
                .push(key.clone());
        }
    }
    let snapshot = cluster.base.catalog.snapshot();
    let deadline = crate::base::now_ms() + cluster.base.config.peer_timeout.as_millis() as i64;
    ring.members()
        .iter()
        .map(|m| {
            let mut f = Fragment {
                query_id: query_id.to_string(),
                sql: sql.to_string(),
                tables: vec![TableSlice {
                    table_id: meta.id,
                    files: assigned.remove(&m.node_id).unwrap_or_default(),
                    own_rows: true,
                    flushed: meta.flushed_wal.get(&m.node_id).copied(),
                }],
                deadline_ms: deadline,
                coordinator: cluster.base.config.node_id.clone(),
                node_id: m.node_id.clone(),
                catalog_epoch: snapshot.epoch,
                catalog_version: snapshot.version,
                parameters: parameters.clone(),
                signature: Bytes::new(),
                fragments: ring.len() as u32,
            };
            sign(cluster, &mut f);
            (m.clone(), f)
        })
        .collect()
}

/// The files of `meta` that `sql`'s filters keep.
pub(crate) fn kept_files(sql: &str, meta: &TableMeta) -> Vec<String> {
    let name = meta.name.to_lowercase();
    let metas: HashMap<String, &TableMeta> = [(name.clone(), meta)].into_iter().collect();
    let analysis = skein_sql::prune::analyse(sql, &metas);
    let filter = analysis
        .filters
        .get(&name)
        .cloned()
        .unwrap_or_else(skein_sql::prune::Filter::all);
    meta.files
        .iter()
        .filter(|f| filter.keep(f))
        .map(|f| f.key.clone())
        .collect()
}

/// The endpoints of a scatter scan: one fragment per member, with the location of each peer.
pub(crate) fn scatter_fragments(
    cluster: &Cluster,
    table: &str,
    sql: &str,
    parameters: &Bytes,
) -> Result<Vec<(Member, Fragment)>> {
    let ring = cluster.base.ring();
    let rt = cluster.base.table(table)?;
    let meta = rt.meta();
    check_absent_nodes(cluster, &ring, &[&meta])?;
    let query_id = uuid::Uuid::new_v4().to_string();
    let files = kept_files(sql, &meta);
    Ok(fragments(
        cluster, &ring, &query_id, sql, &meta, &files, parameters,
    ))
}

/// Gets a query ready to run across the cluster; `None` if it runs on this node alone.
pub(crate) async fn prepare(
    cluster: &Arc<Cluster>,
    sql: &str,
    query_id: &str,
    has_parameters: bool,
) -> Result<Option<Prepared>> {
    let shape = shape_of(cluster, sql, has_parameters)?;
    let mut distribution = Distribution {
        shape: shape.name(),
        ..Distribution::default()
    };
    match shape {
        Shape::Local => return Ok(None),
        Shape::Partial(p) => {
            if let Some(prepared) = partial(cluster, sql, query_id, &p, &mut distribution).await? {
                cluster
                    .base
                    .metrics
                    .query_shapes
                    .with_label_values(&["partial"])
                    .inc();
                return Ok(Some(prepared));
            }
            // The engine refused a part: gather is always correct.
            distribution = Distribution {
                shape: "gather",
                ..Distribution::default()
            };
        }
        // A scatter query whose client asked for one result (a statement ticket).
        Shape::Scatter { .. } | Shape::Gather => distribution.shape = "gather",
    }
    cluster
        .base
        .metrics
        .query_shapes
        .with_label_values(&["gather"])
        .inc();
    gather(cluster, sql, query_id, has_parameters, distribution)
        .await
        .map(Some)
}

/// The reads of a statement that changes data from a query (`INSERT … SELECT`, `CREATE TABLE
/// AS`): in a cluster, the query's tables with the rows peers hold (gathered), so the statement
/// sees everything.
pub(crate) async fn gathered_reads(
    cluster: &Arc<Cluster>,
    sql: &str,
    has_parameters: bool,
) -> Result<ReadSet> {
    if cluster.base.ring().len() <= 1 {
        return cluster.reads.prepare_reads(sql).await;
    }
    let query_id = uuid::Uuid::new_v4().to_string();
    let distribution = Distribution {
        shape: "gather",
        ..Distribution::default()
    };
    Ok(
        gather(cluster, sql, &query_id, has_parameters, distribution)
            .await?
            .reads,
    )
}

/// Runs the partial query everywhere and loads the partial rows into a scratch table; `None`
/// if the engine refuses the partial or the final query (the caller gathers instead).
async fn partial(
    cluster: &Arc<Cluster>,
    sql: &str,
    query_id: &str,
    p: &Partial,
    distribution: &mut Distribution,
) -> Result<Option<Prepared>> {
    let ring = cluster.base.ring();
    let rt = cluster.base.table(&p.table)?;
    let meta = rt.meta();
    check_absent_nodes(cluster, &ring, &[&meta])?;
    cluster
        .base
        .metrics
        .table_requests
        .with_label_values(&[&meta.name, "query"])
        .inc();
    let files = kept_files(sql, &meta);
    let frags = fragments(
        cluster,
        &ring,
        query_id,
        &p.partial_sql,
        &meta,
        &files,
        &Bytes::new(),
    );
    let me = cluster.base.config.node_id.clone();
    let own = frags
        .iter()
        .find(|(m, _)| m.node_id == me)
        .map(|(_, f)| f.clone())
        .ok_or_else(|| Error::Internal(format!("node {me} is not in its own ring")))?;
    let peers: Vec<(Member, Fragment)> =
        frags.into_iter().filter(|(m, _)| m.node_id != me).collect();
    let own_run = async { cluster.fragment_batches(&own).await };
    let peer_runs = futures::future::join_all(
        peers
            .iter()
            .map(|(m, f)| run_on_peer(cluster, m, f, std::slice::from_ref(&meta))),
    );
    let (own_rows, peer_rows) = futures::join!(own_run, peer_runs);
    let (schema, mut batches) = match own_rows {
        Ok(r) => r,
        Err(e) => {
            tracing::debug!(error = %e, query_id, "partial query refused; gathering instead");
            return Ok(None);
        }
    };
    distribution.fragments = 1 + peers.len() as u32;
    distribution.peers.insert(
        me.clone(),
        PeerShare {
            files: own.tables[0].files.len(),
            ..PeerShare::default()
        },
    );
    for ((m, f), result) in peers.iter().zip(peer_rows) {
        let (rows, share) = result?;
        let mut share = share;
        share.files = f.tables[0].files.len();
        record_share(cluster, &m.node_id, &share);
        distribution.peers.insert(m.node_id.clone(), share);
        batches.extend(rows.1);
    }
    let scratch = format!(
        "q_{}_p",
        &query_id.replace('-', "")[..16.min(query_id.len())]
    );
    let final_sql = p
        .final_sql
        .replace(PARTIALS, &format!("{BUFFER_SCHEMA}.{}", ident(&scratch)));
    let (worker, original, final_check) = (Arc::clone(cluster), sql.to_string(), final_sql.clone());
    let scratch_name = scratch.clone();
    let loaded = blocking(move || -> Result<Option<SchemaRef>> {
        let conn = worker.base.engine.pooled()?;
        create_scratch(&conn, &scratch_name, &schema)?;
        append_scratch(&conn, &scratch_name, &schema, batches)?;
        if conn.prepare(&final_check).is_err() {
            conn.execute_batch(&format!(
                "DROP TABLE IF EXISTS {BUFFER_SCHEMA}.{}",
                ident(&scratch_name)
            ))?;
            return Ok(None);
        }
        Ok(Some(result_schema(&conn, &original)?))
    })
    .await?;
    let Some(expected) = loaded else {
        return Ok(None);
    };
    let mut reads = ReadSet::default();
    reads.add_scratch(format!("{BUFFER_SCHEMA}.{}", ident(&scratch)));
    Ok(Some(Prepared {
        reads,
        sql: final_sql,
        expected: Some(expected),
        distribution: std::mem::take(distribution),
    }))
}

/// Peers ship their own rows of every table the statement reads; this node adds them to its
/// files and buffers and runs the statement itself.
async fn gather(
    cluster: &Arc<Cluster>,
    sql: &str,
    query_id: &str,
    has_parameters: bool,
    mut distribution: Distribution,
) -> Result<Prepared> {
    let ring = cluster.base.ring();
    let selected = cluster.reads.select_reads(sql).await?;
    let metas: Vec<&TableMeta> = selected.views.iter().map(|v| &v.meta).collect();
    check_absent_nodes(cluster, &ring, &metas)?;
    let me = cluster.base.config.node_id.clone();
    let snapshot = cluster.base.catalog.snapshot();
    let deadline = crate::base::now_ms() + cluster.base.config.peer_timeout.as_millis() as i64;
    let filtered = {
        let tables = table_columns(cluster);
        let aggregates = cluster.aggregate_functions()?;
        skein_sql::plan::gather_filter(
            sql,
            PlanContext {
                tables: &tables,
                aggregates: &aggregates,
                has_parameters,
            },
        )
    };
    let mut work: Vec<(Member, Fragment, TableMeta)> = Vec::new();
    for view in &selected.views {
        let shipped_sql = match &filtered {
            Some((table, filtered_sql)) if *table == view.meta.name.to_lowercase() => {
                filtered_sql.clone()
            }
            _ => format!("SELECT * FROM main.{}", ident(&view.meta.name)),
        };
        for m in ring.members().iter().filter(|m| m.node_id != me) {
            let mut f = Fragment {
                query_id: query_id.to_string(),
                sql: shipped_sql.clone(),
                tables: vec![TableSlice {
                    table_id: view.meta.id,
                    files: Vec::new(),
                    own_rows: true,
                    flushed: view.meta.flushed_wal.get(&m.node_id).copied(),
                }],
                deadline_ms: deadline,
                coordinator: me.clone(),
                node_id: m.node_id.clone(),
                catalog_epoch: snapshot.epoch,
                catalog_version: snapshot.version,
                parameters: Bytes::new(),
                signature: Bytes::new(),
                fragments: 0,
            };
            sign(cluster, &mut f);
            work.push((m.clone(), f, view.meta.clone()));
        }
    }
    let results = futures::future::join_all(
        work.iter()
            .map(|(m, f, meta)| run_on_peer(cluster, m, f, std::slice::from_ref(meta))),
    )
    .await;
    distribution.fragments = work.len() as u32;
    let mut shipped: BTreeMap<u64, (TableMeta, Vec<RecordBatch>)> = BTreeMap::new();
    for ((m, _, meta), result) in work.iter().zip(results) {
        let ((_, batches), share) = result?;
        record_share(cluster, &m.node_id, &share);
        let entry = distribution.peers.entry(m.node_id.clone()).or_default();
        entry.rows += share.rows;
        entry.bytes += share.bytes;
        entry.retried |= share.retried;
        if batches.iter().any(|b| b.num_rows() > 0) {
            shipped
                .entry(meta.id)
                .or_insert_with(|| (meta.clone(), Vec::new()))
                .1
                .extend(batches);
        }
    }
    let mut extra = HashMap::new();
    let mut scratch_tables = Vec::new();
    let prefix = format!("q_{}", &query_id.replace('-', "")[..16.min(query_id.len())]);
    for (id, (meta, batches)) in shipped {
        let name = format!("{prefix}_g{id}");
        let qualified = format!("{BUFFER_SCHEMA}.{}", ident(&name));
        let worker = Arc::clone(cluster);
        let table = name.clone();
        blocking(move || {
            let conn = worker.base.engine.pooled()?;
            let defs = crate::table::column_defs(&meta.columns);
            conn.execute_batch(&format!(
                "CREATE OR REPLACE TABLE {BUFFER_SCHEMA}.{} ({defs})",
                ident(&table)
            ))?;
            let schema = crate::engine::result_schema(
                &conn,
                &format!("SELECT * FROM {BUFFER_SCHEMA}.{}", ident(&table)),
            )?;
            append_scratch(&conn, &table, &schema, batches)
        })
        .await?;
        extra.insert(id, qualified.clone());
        scratch_tables.push(qualified);
    }
    let mut reads = cluster.reads.build_reads(selected, &extra).await?;
    for t in scratch_tables {
        reads.add_scratch(t);
    }
    Ok(Prepared {
        reads,
        sql: sql.to_string(),
        expected: None,
        distribution,
    })
}

fn record_share(cluster: &Cluster, peer: &str, share: &PeerShare) {
    cluster
        .base
        .metrics
        .fragments
        .with_label_values(&[peer])
        .inc();
    cluster
        .base
        .metrics
        .peer_rows
        .with_label_values(&[peer])
        .inc_by(share.rows);
    cluster
        .base
        .metrics
        .peer_bytes
        .with_label_values(&[peer])
        .inc_by(share.bytes);
}

/// Runs `fragment` on peer `member`; if that fails, reads its files here instead, and fails
/// with UNAVAILABLE if the peer holds unflushed rows of `tables`.
async fn run_on_peer(
    cluster: &Arc<Cluster>,
    member: &Member,
    fragment: &Fragment,
    tables: &[TableMeta],
) -> Result<(Rows, PeerShare)> {
    let failure = match fetch(cluster, member, fragment).await {
        Ok((schema, batches)) => {
            let share = PeerShare {
                rows: batches.iter().map(|b| b.num_rows() as u64).sum(),
                bytes: batches
                    .iter()
                    .map(|b| b.get_array_memory_size() as u64)
                    .sum(),
                ..PeerShare::default()
            };
            return Ok(((schema, batches), share));
        }
        Err(e @ Error::Remote { .. }) => return Err(e),
        Err(e) => e,
    };
    cluster.drop_peer_client(&member.address);
    tracing::warn!(peer = %member.node_id, error = %failure, query_id = %fragment.query_id, "fragment failed; reading its files on this node");
    let (schema, batches) = read_here_instead(cluster, fragment, tables, &failure).await?;
    let share = PeerShare {
        retried: true,
        ..PeerShare::default()
    };
    Ok(((Some(schema), batches), share))
}

/// The rows of `fragment`, planned for a node that failed or is gone, read on this node: the
/// files the coordinator listed for it plus the files that node committed after the plan (its
/// rows past the planned flushed position that are in Parquet now). Rows it holds only in its
/// buffers can be read nowhere else: if its marks say it holds unflushed rows of one of
/// `tables`, the answer is UNAVAILABLE naming it, never an answer without them.
async fn read_here_instead(
    cluster: &Arc<Cluster>,
    fragment: &Fragment,
    tables: &[TableMeta],
    failure: &Error,
) -> Result<(SchemaRef, Vec<RecordBatch>)> {
    let peer = fragment.node_id.clone();
    let unavailable = |reason: String| Error::PeerUnavailable {
        node: peer.clone(),
        reason,
    };
    if let Some(m) = cluster.base.membership() {
        // Read fresh: a mark is cleared only after the commit of the rows it stood for, so
        // once it is seen cleared, the catalog read after it holds those rows.
        let marked: BTreeSet<u64> = m.unflushed_of(&peer).await.map_err(|e| {
            unavailable(format!(
                "its part of the query failed ({failure}) and whether it holds unflushed rows \
                 cannot be checked ({e})"
            ))
        })?;
        if let Some(t) = tables.iter().find(|t| marked.contains(&t.id)) {
            return Err(unavailable(format!(
                "its part of the query failed ({failure}) and it holds rows of table {:?} that \
                 are not flushed yet; try again once it is back",
                t.name
            )));
        }
    }
    if cluster.base.catalog.is_shared() {
        cluster.ddl.refresh_catalog().await.map_err(|e| {
            unavailable(format!(
                "its part of the query failed ({failure}) and the files it committed since the \
                 query was planned cannot be read from the catalog ({e})"
            ))
        })?;
    }
    let snapshot = cluster.base.catalog.snapshot();
    let mut retry = fragment.clone();
    for slice in &mut retry.tables {
        if slice.own_rows
            && let Some(meta) = snapshot.table_by_id(slice.table_id)
        {
            for f in &meta.files {
                let since = f.node.as_deref() == Some(peer.as_str())
                    && slice
                        .flushed
                        .is_none_or(|s| f.max_seq.is_some_and(|m| m > s));
                if since && !slice.files.contains(&f.key) {
                    slice.files.push(f.key.clone());
                }
            }
        }
        slice.own_rows = false;
    }
    retry.node_id = cluster.base.config.node_id.clone();
    cluster.fragment_batches(&retry).await
}

/// A fragment planned for another cluster, redeemed on this one (clients exist that fetch every
/// endpoint from the node they are connected to, whatever its location says). Its rows are the
/// planned node's, so they are fetched from there and passed on; if that node cannot be reached,
/// they are read here as after any failed fragment (or the answer is UNAVAILABLE naming it).
pub(crate) async fn redeem_for_peer(
    cluster: &Arc<Cluster>,
    fragment: &Fragment,
) -> Result<(
    SchemaRef,
    futures::stream::BoxStream<'static, Result<RecordBatch>>,
)> {
    let ring = cluster.base.ring();
    let tables: Vec<TableMeta> = fragment
        .tables
        .iter()
        .filter_map(|s| cluster.base.table_by_id(s.table_id).map(|rt| rt.meta()))
        .collect();
    let failure = match ring.member(&fragment.node_id) {
        None => Error::PeerUnavailable {
            node: fragment.node_id.clone(),
            reason: "it is not in the cluster (no heartbeat within its TTL)".into(),
        },
        Some(member) => {
            let member = member.clone();
            match forward(cluster, &member, fragment).await {
                Ok(forwarded) => return Ok(forwarded),
                Err(e @ Error::Remote { .. }) => return Err(e),
                Err(e) => {
                    cluster.drop_peer_client(&member.address);
                    e
                }
            }
        }
    };
    tracing::warn!(peer = %fragment.node_id, error = %failure, query_id = %fragment.query_id, "a fragment redeemed here for an unreachable node; reading its files on this node");
    let (schema, batches) = read_here_instead(cluster, fragment, &tables, &failure).await?;
    Ok((
        schema,
        futures::stream::iter(batches.into_iter().map(Ok)).boxed(),
    ))
}

/// Starts `fragment` on `member` within the peer deadline and streams its rows.
async fn forward(
    cluster: &Arc<Cluster>,
    member: &Member,
    fragment: &Fragment,
) -> Result<(
    SchemaRef,
    futures::stream::BoxStream<'static, Result<RecordBatch>>,
)> {
    let peer = member.node_id.clone();
    let work = async {
        let client = cluster.peer_client(&member.address).await?;
        client
            .fetch_ticket_with_schema(fragment_ticket(fragment))
            .await
            .map_err(|e| peer_error(&member.node_id, e))
    };
    let (schema, stream) = tokio::time::timeout(cluster.base.config.peer_timeout, work)
        .await
        .map_err(|_| Error::PeerUnavailable {
            node: peer.clone(),
            reason: format!(
                "no answer within --peer-timeout ({:?})",
                cluster.base.config.peer_timeout
            ),
        })??;
    let stream = stream.map_err(move |e| peer_error(&peer, e)).boxed();
    Ok((schema, stream))
}

/// Fetches a fragment's rows from a peer within the peer deadline.
async fn fetch(
    cluster: &Arc<Cluster>,
    member: &Member,
    fragment: &Fragment,
) -> Result<(Option<SchemaRef>, Vec<RecordBatch>)> {
    let unavailable = |reason: String| Error::PeerUnavailable {
        node: member.node_id.clone(),
        reason,
    };
    let work = async {
        let mut client = cluster.peer_client(&member.address).await?;
        let request_id = crate::auth::request_id();
        if !request_id.is_empty() {
            client = client.with_header(crate::auth::REQUEST_ID_HEADER, &request_id);
        }
        let stream = client
            .fetch_ticket(fragment_ticket(fragment))
            .await
            .map_err(|e| peer_error(&member.node_id, e))?;
        let batches: Vec<RecordBatch> = stream
            .try_collect()
            .await
            .map_err(|e| peer_error(&member.node_id, e))?;
        Ok::<_, Error>((None, batches))
    };
    match tokio::time::timeout(cluster.base.config.peer_timeout, work).await {
        Ok(r) => r,
        Err(_) => Err(unavailable(format!(
            "no answer within --peer-timeout ({:?})",
            cluster.base.config.peer_timeout
        ))),
    }
}

/// A peer's error: the caller's mistakes pass through with their code, the rest is the peer
/// being unavailable.
fn peer_error(peer: &str, e: skein_client::Error) -> Error {
    use tonic::Code;
    match e.code() {
        Some(
            code @ (Code::InvalidArgument
            | Code::NotFound
            | Code::PermissionDenied
            | Code::Unauthenticated
            | Code::AlreadyExists
            | Code::Unimplemented
            | Code::ResourceExhausted
            | Code::Cancelled),
        ) => Error::Remote {
            node: peer.to_string(),
            code,
            message: e.to_string(),
        },
        _ => Error::PeerUnavailable {
            node: peer.to_string(),
            reason: e.to_string(),
        },
    }
}

/// Creates a scratch table in the internal schema for rows of `schema`.
fn create_scratch(conn: &duckdb::Connection, name: &str, schema: &SchemaRef) -> Result<()> {
    let defs = schema
        .fields()
        .iter()
        .map(|f| {
            Ok(format!(
                "{} {}",
                ident(f.name()),
                crate::types::duckdb_type(f)?
            ))
        })
        .collect::<Result<Vec<_>>>()?
        .join(", ");
    conn.execute_batch(&format!(
        "CREATE OR REPLACE TABLE {BUFFER_SCHEMA}.{} ({defs})",
        ident(name)
    ))?;
    Ok(())
}

/// Appends `batches` (cast to `schema` where a peer's types differ) to a scratch table.
fn append_scratch(
    conn: &duckdb::Connection,
    name: &str,
    schema: &SchemaRef,
    batches: Vec<RecordBatch>,
) -> Result<()> {
    let mut appender = conn.appender_to_db(name, BUFFER_SCHEMA)?;
    for batch in batches {
        if batch.num_rows() == 0 {
            continue;
        }
        let batch = crate::types::conform_to(&batch, schema)?;
        appender.append_record_batch(batch)?;
    }
    appender.flush()?;
    Ok(())
}
