//! A node's membership of its cluster: registration, heartbeat, the watch and unflushed marks.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::error::{Error, Result};
use crate::ring::{Member, Ring};
use crate::store::Store;

mod tasks;

/// Reports the ids of the tables this node holds unflushed rows of.
type Provider = Arc<dyn Fn() -> BTreeSet<u64> + Send + Sync>;

/// The shortest TTL accepted: the heartbeat runs every third of it.
const MIN_TTL: Duration = Duration::from_millis(30);

/// How many times a registration is retried when the stored value changes under it.
const REGISTER_ATTEMPTS: usize = 3;

/// A node's view of its cluster: who is in it (as a [`Ring`]) and which nodes hold unflushed
/// rows of which tables. Cheap to share behind an `Arc`; dropping the last handle stops the
/// background tasks (without deregistering: the key then expires after its TTL).
pub struct Membership {
    /// This node.
    me: Member,
    /// The current ring; the watch task replaces it when the member set changes.
    ring: watch::Sender<Arc<Ring>>,
    /// Everything Redis-backed; `None` for a static membership of one.
    cluster: Option<Cluster>,
}

/// The Redis-backed part of a [`Membership`].
struct Cluster {
    /// State shared with the background tasks.
    shared: Arc<Shared>,
    /// The heartbeat and watch tasks, emptied when they are stopped.
    tasks: parking_lot::Mutex<Vec<JoinHandle<()>>>,
    /// Held through [`Membership::leave`]; true once a leave has completed.
    left: tokio::sync::Mutex<bool>,
}

/// What the heartbeat and the watch work on.
struct Shared {
    /// This node.
    me: Member,
    /// `me` as stored in its member key; refreshes and the deregistration compare against it.
    me_json: String,
    /// The cluster's keys in Redis.
    store: Store,
    /// TTL of the member key.
    ttl: Duration,
    /// Reports the tables this node holds unflushed rows of.
    provider: Provider,
    /// The unflushed set this node last wrote to Redis, `None` while unknown (a write is in
    /// flight or failed). Held while computing and writing the set: see the crate docs.
    written: tokio::sync::Mutex<Option<BTreeSet<u64>>>,
    /// Every node's unflushed table ids as last read by the watch.
    unflushed: parking_lot::RwLock<BTreeMap<String, BTreeSet<u64>>>,
    /// The current ring (the same channel as [`Membership::ring`]).
    ring: watch::Sender<Arc<Ring>>,
    /// Stops the background tasks.
    cancel: CancellationToken,
}

impl std::fmt::Debug for Membership {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut d = f.debug_struct("Membership");
        d.field("me", &self.me).field("ring", &*self.ring.borrow());
        match &self.cluster {
            None => d.field("static", &true),
            Some(c) => d
                .field("store", &c.shared.store)
                .field("ttl", &c.shared.ttl),
        };
        d.finish()
    }
}

impl Shared {
    /// Writes the provider's set (plus `extra`) as this node's unflushed marks. The caller holds
    /// `written`; the provider is called under it.
    async fn write_marks(
        &self,
        written: &mut Option<BTreeSet<u64>>,
        extra: Option<u64>,
    ) -> Result<()> {
        let mut set = (self.provider)();
        set.extend(extra);
        // Unknown until the write is known to have landed (it may be cut short).
        *written = None;
        self.store.write_unflushed(&self.me.node_id, &set).await?;
        *written = Some(set);
        Ok(())
    }
}

fn validate(cluster: &str, me: &Member, ttl: Duration, timeout: Duration) -> Result<()> {
    let invalid = |message: String| Err(Error::InvalidArgument { message });
    let bad = |s: &str| s.is_empty() || s.chars().any(|c| c.is_whitespace() || c.is_control());
    if bad(cluster) {
        return invalid(format!(
            "cluster name {cluster:?} must be non-empty and without spaces"
        ));
    }
    if bad(&me.node_id) {
        return invalid(format!(
            "node id {:?} must be non-empty and without spaces",
            me.node_id
        ));
    }
    if ttl < MIN_TTL {
        return invalid(format!(
            "membership TTL of {} ms is too short (at least {} ms)",
            ttl.as_millis(),
            MIN_TTL.as_millis()
        ));
    }
    if timeout.is_zero() {
        return invalid("the Redis timeout must be positive".into());
    }
    Ok(())
}

impl Membership {
    /// A static membership of one (the embedded node without Redis): never changes, no I/O.
    pub fn single(me: Member) -> Self {
        let (ring, _) = watch::channel(Arc::new(Ring::new(vec![me.clone()])));
        Self {
            me,
            ring,
            cluster: None,
        }
    }

    /// Registers `me` in Redis under cluster `cluster` with TTL `ttl`, refreshes it every ttl/3,
    /// and watches the member set (polling at most every min(1 s, ttl/3)), rebuilding the ring
    /// when the set of (node_id, address, started_ms) changes. `unflushed` is called by the
    /// heartbeat to learn which table ids this node holds unflushed rows of.
    ///
    /// Fails, naming the Redis address, if Redis is unreachable within `timeout` (each later
    /// operation has the same deadline), and with [`Error::DuplicateNode`] if another live
    /// process is registered with the same node id and a different `started_ms`.
    pub async fn join(
        pool: deadpool_redis::Pool,
        cluster: &str,
        me: Member,
        ttl: Duration,
        timeout: Duration,
        unflushed: Arc<dyn Fn() -> BTreeSet<u64> + Send + Sync>,
    ) -> Result<Arc<Self>> {
        validate(cluster, &me, ttl, timeout)?;
        let store = Store::new(pool, cluster, timeout);
        let me_json = serde_json::to_string(&me).map_err(|e| Error::InvalidArgument {
            message: format!("cannot encode member {}: {e}", me.node_id),
        })?;
        let setup = async {
            store.ping().await?;
            register(&store, &me, &me_json, ttl).await?;
            let marks = unflushed();
            store.write_unflushed(&me.node_id, &marks).await?;
            let others = store.members().await?;
            let all_marks = store.all_unflushed().await?;
            Ok::<_, Error>((marks, others, all_marks))
        };
        let (marks, others, all_marks) = tokio::time::timeout(timeout, setup)
            .await
            .map_err(|_| store.timed_out("joining the cluster", timeout))??;

        let mut members: Vec<Member> = others
            .into_iter()
            .filter(|m| m.node_id != me.node_id)
            .collect();
        members.push(me.clone());
        let first = Ring::new(members);
        tracing::info!(
            node_id = %me.node_id,
            cluster,
            redis = store.addr(),
            members = first.len(),
            ttl_ms = ttl.as_millis() as u64,
            "joined the cluster"
        );
        let (ring, _) = watch::channel(Arc::new(first));
        let shared = Arc::new(Shared {
            me: me.clone(),
            me_json,
            store,
            ttl,
            provider: unflushed,
            written: tokio::sync::Mutex::new(Some(marks)),
            unflushed: parking_lot::RwLock::new(all_marks),
            ring: ring.clone(),
            cancel: CancellationToken::new(),
        });
        let tasks = vec![
            tokio::spawn(tasks::heartbeat(Arc::clone(&shared))),
            tokio::spawn(tasks::watch(Arc::clone(&shared))),
        ];
        Ok(Arc::new(Self {
            me,
            ring,
            cluster: Some(Cluster {
                shared,
                tasks: parking_lot::Mutex::new(tasks),
                left: tokio::sync::Mutex::new(false),
            }),
        }))
    }

    /// This node.
    pub fn me(&self) -> &Member {
        &self.me
    }

    /// The current placement snapshot.
    pub fn ring(&self) -> Arc<Ring> {
        Arc::clone(&self.ring.borrow())
    }

    /// A receiver that sees every new ring.
    pub fn subscribe(&self) -> watch::Receiver<Arc<Ring>> {
        self.ring.subscribe()
    }

    /// Whether this is a static membership of one ([`Membership::single`]).
    pub fn is_static(&self) -> bool {
        self.cluster.is_none()
    }

    /// Marks table `table_id` as holding unflushed rows on this node, in Redis, *before*
    /// returning (a no-op without I/O if it is already marked in the set last written). Used on
    /// the ingest path right after a WAL write and before acknowledging; an error means the mark
    /// may be missing, so the write must not be acknowledged.
    ///
    /// The set written is the provider's plus `table_id`, computed under the same lock as the
    /// heartbeat's, so a heartbeat that read an older set never overwrites this mark.
    pub async fn mark_unflushed(&self, table_id: u64) -> Result<()> {
        let Some(cluster) = &self.cluster else {
            return Ok(());
        };
        let shared = &cluster.shared;
        let mut written = shared.written.lock().await;
        if written.as_ref().is_some_and(|s| s.contains(&table_id)) {
            return Ok(());
        }
        shared.write_marks(&mut written, Some(table_id)).await
    }

    /// Unflushed table ids per node id as last read by the watch (all nodes, members or not).
    /// Empty for a static membership.
    pub fn unflushed(&self) -> BTreeMap<String, BTreeSet<u64>> {
        match &self.cluster {
            None => BTreeMap::new(),
            Some(c) => c.shared.unflushed.read().clone(),
        }
    }

    /// A fresh read from Redis of one node's unflushed table ids (empty for a static
    /// membership).
    pub async fn unflushed_of(&self, node_id: &str) -> Result<BTreeSet<u64>> {
        match &self.cluster {
            None => Ok(BTreeSet::new()),
            Some(c) => c.shared.store.unflushed_of(node_id).await,
        }
    }

    /// Leaving cleanly: stops the heartbeat and watch, writes the final unflushed set (from the
    /// provider), deletes the member key. Idempotent; after an error it can be called again.
    pub async fn leave(&self) -> Result<()> {
        let Some(cluster) = &self.cluster else {
            return Ok(());
        };
        let mut left = cluster.left.lock().await;
        if *left {
            return Ok(());
        }
        let tasks = cluster.stop();
        for task in tasks {
            // Aborted: they end at their next await point.
            let _ = task.await;
        }
        let shared = &cluster.shared;
        {
            let mut written = shared.written.lock().await;
            shared.write_marks(&mut written, None).await?;
        }
        shared
            .store
            .deregister(&shared.me.node_id, &shared.me_json)
            .await?;
        *left = true;
        tracing::info!(node_id = %self.me.node_id, "left the cluster");
        Ok(())
    }

    /// Writes the provider's unflushed set now (also after [`Membership::leave`]: a node that
    /// flushes once more on its way out clears the marks that leave wrote).
    pub async fn publish_unflushed(&self) -> Result<()> {
        let Some(cluster) = &self.cluster else {
            return Ok(());
        };
        let shared = &cluster.shared;
        let mut written = shared.written.lock().await;
        shared.write_marks(&mut written, None).await
    }

    /// Deletes the unflushed marks of `node_id` (a node that is gone for good) and returns the
    /// table ids they listed. The caller checks that the node is not a live member.
    pub async fn forget(&self, node_id: &str) -> Result<BTreeSet<u64>> {
        let Some(cluster) = &self.cluster else {
            return Ok(BTreeSet::new());
        };
        let shared = &cluster.shared;
        let marked = shared.store.unflushed_of(node_id).await?;
        shared
            .store
            .write_unflushed(node_id, &BTreeSet::new())
            .await?;
        shared.unflushed.write().remove(node_id);
        Ok(marked)
    }

    /// Stops the heartbeat and the watch *without* deregistering, as if the process had died:
    /// the member key expires after its TTL and the unflushed marks stay. For tests and for
    /// crash-like shutdowns; [`Membership::leave`] is the clean way out.
    pub fn abort(&self) {
        if let Some(cluster) = &self.cluster {
            drop(cluster.stop());
        }
    }
}

impl Cluster {
    /// Cancels and aborts the background tasks; returns their handles.
    fn stop(&self) -> Vec<JoinHandle<()>> {
        self.shared.cancel.cancel();
        let tasks = std::mem::take(&mut *self.tasks.lock());
        for task in &tasks {
            task.abort();
        }
        tasks
    }
}

impl Drop for Membership {
    fn drop(&mut self) {
        self.abort();
    }
}

/// Registers `me` unless another live process holds its node id.
async fn register(store: &Store, me: &Member, me_json: &str, ttl: Duration) -> Result<()> {
    for _ in 0..REGISTER_ATTEMPTS {
        let Some(existing) = store.claim(&me.node_id, me_json, ttl).await? else {
            return Ok(());
        };
        match serde_json::from_str::<Member>(&existing) {
            Ok(other) if other.started_ms != me.started_ms => {
                return Err(Error::DuplicateNode {
                    node_id: me.node_id.clone(),
                    address: other.address,
                    started_ms: other.started_ms,
                    ttl_ms: ttl.as_millis() as u64,
                });
            }
            // This process registered before (other address or version), or the value is not
            // a member at all: take it over.
            _ => {
                if store.replace(&me.node_id, &existing, me_json, ttl).await? {
                    return Ok(());
                }
            }
        }
    }
    Err(Error::Redis {
        addr: store.addr().to_string(),
        message: format!(
            "the registration of node {} keeps changing under this process; is another process \
             starting with the same node id?",
            me.node_id
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn me() -> Member {
        Member {
            node_id: "solo".into(),
            address: "127.0.0.1:50051".into(),
            started_ms: 1,
            version: "test".into(),
        }
    }

    #[tokio::test]
    async fn a_static_membership_is_one_node_and_does_no_io() {
        let m = Membership::single(me());
        assert!(m.is_static());
        assert_eq!(m.me(), &me());
        let ring = m.ring();
        assert_eq!(ring.members(), &[me()]);
        assert_eq!(ring.version(), 0);
        assert_eq!(ring.owner("tables/1/a.parquet"), Some(&me()));
        m.mark_unflushed(3).await.expect("no-op");
        assert!(m.unflushed().is_empty());
        assert!(m.unflushed_of("solo").await.expect("no-op").is_empty());
        m.leave().await.expect("leave");
        m.leave().await.expect("leave again");
        assert!(!m.subscribe().has_changed().expect("sender alive"));
    }

    #[tokio::test]
    async fn settings_are_checked_before_any_io() {
        let pool =
            crate::connect_pool("redis://127.0.0.1:1/0", Duration::from_secs(1)).expect("pool");
        let none: Provider = Arc::new(BTreeSet::new);
        let join = |cluster: &'static str, me: Member, ttl: u64| {
            Membership::join(
                pool.clone(),
                cluster,
                me,
                Duration::from_millis(ttl),
                Duration::from_secs(1),
                Arc::clone(&none),
            )
        };
        let e = join("", me(), 600).await.expect_err("empty cluster");
        assert!(e.to_string().contains("cluster name"), "{e}");
        let mut spaced = me();
        spaced.node_id = "a b".into();
        let e = join("c", spaced, 600)
            .await
            .expect_err("node id with a space");
        assert!(e.to_string().contains("\"a b\""), "{e}");
        let e = join("c", me(), 5).await.expect_err("ttl too short");
        assert!(e.to_string().contains("TTL"), "{e}");
    }
}
