//! This process's claim on its node id in a shared catalog: the right to write for that id.
//! Taking it fences the catalog's commits with its token (see `skein_storage::redis_catalog`),
//! so a process whose claim lapsed (paused, or cut off from Redis) and whose id another
//! process took can never commit again; appends confirm the claim before they acknowledge.

use std::sync::Arc;
use std::time::Duration;

use skein_storage::RedisCatalog;
use tracing::{info, warn};

use super::Writes;
use crate::error::{Error, Result};

/// How long a node's claim on its id lasts without renewal.
const CLAIM_TTL: Duration = Duration::from_secs(10);

/// This process's claim on its node id in a shared catalog. Taking it fences the catalog's
/// commits with its token (see `skein_storage::redis_catalog`); it is renewed every second.
#[derive(Debug)]
pub(crate) struct NodeClaim {
    redis: Arc<RedisCatalog>,
    node_id: String,
    token: String,
    /// When the last renewal that succeeded was sent.
    renewed: parking_lot::Mutex<std::time::Instant>,
}

/// What renewing a claim found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Renewal {
    Held,
    /// Another process took the node id since this one took it.
    Lost,
}

impl NodeClaim {
    /// Takes the claim, waiting out one TTL for the claim of a process that stopped.
    pub(crate) async fn take(
        redis: Arc<RedisCatalog>,
        node_id: &str,
        cluster: &str,
    ) -> Result<Self> {
        let token = uuid::Uuid::new_v4().to_string();
        let deadline = tokio::time::Instant::now() + CLAIM_TTL + Duration::from_secs(1);
        loop {
            let sent = std::time::Instant::now();
            if redis.take_node(node_id, &token, CLAIM_TTL).await? {
                return Ok(Self {
                    redis,
                    node_id: node_id.to_string(),
                    token,
                    renewed: parking_lot::Mutex::new(sent),
                });
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(Error::InvalidArgument(format!(
                    "node id {node_id:?} is in use by another running node of cluster \
                     {cluster:?}: give every node its own --node-id"
                )));
            }
            info!(
                node_id,
                "waiting for the previous claim on this node id to expire"
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// Gives the claim up (at a clean stop).
    pub(super) async fn release(&self) -> Result<()> {
        Ok(self.redis.release_node(&self.node_id, &self.token).await?)
    }

    /// Renews the claim.
    pub(super) async fn renew(&self) -> Result<Renewal> {
        let sent = std::time::Instant::now();
        if self
            .redis
            .renew_node(&self.node_id, &self.token, CLAIM_TTL)
            .await?
        {
            *self.renewed.lock() = sent;
            Ok(Renewal::Held)
        } else {
            Ok(Renewal::Lost)
        }
    }

    /// Whether the claim is known to be held now: renewed less than half a TTL ago (a process
    /// that was paused, or cut off from Redis, must ask again).
    pub(super) fn fresh(&self) -> bool {
        self.renewed.lock().elapsed() < CLAIM_TTL / 2
    }
}

impl Writes {
    /// Gives up this process's claim on its node id, after the last flush of a clean stop.
    pub(crate) async fn release_claim(&self) {
        if let Some(claim) = &self.claim
            && let Err(e) = claim.release().await
        {
            warn!(error = %e, "giving up the claim on this node id failed; it expires by itself");
        }
    }

    /// Another process took this node's id: this one stops writing for good (its commits are
    /// fenced off already) and says so on `/ready`.
    pub(crate) fn claim_lost(&self) {
        self.identity_lost
            .store(true, std::sync::atomic::Ordering::SeqCst);
        self.stop_writes(format!(
            "another process took node id {:?} while this one's claim had lapsed (paused, or cut \
             off from Redis, for longer than {}s); this process may no longer change the catalog: \
             stop it, and give every node its own --node-id",
            self.base.config.node_id,
            CLAIM_TTL.as_secs()
        ));
    }

    /// Refuses every statement once another process took this node's id: its view of its own
    /// rows (buffers, flushed positions, ring position) is no longer the cluster's, so its
    /// answers could be wrong.
    pub(crate) fn check_identity(&self) -> Result<()> {
        if self.identity_lost.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(Error::WritesStopped(
                self.writes_stopped().unwrap_or_default(),
            ));
        }
        Ok(())
    }

    /// Before an append is acknowledged: confirms that this process still holds its node id,
    /// asking Redis if the last renewal is not fresh (the process was paused or cut off). A
    /// write acknowledged by a process whose id another one took could never be committed.
    pub(crate) async fn confirm_claim(&self) -> Result<()> {
        let Some(claim) = self.claim.as_ref().filter(|c| !c.fresh()) else {
            return Ok(());
        };
        match claim.renew().await {
            Ok(Renewal::Held) => Ok(()),
            Ok(Renewal::Lost) => {
                self.claim_lost();
                Err(Error::WritesStopped(
                    self.writes_stopped().unwrap_or_default(),
                ))
            }
            Err(e) => Err(Error::PeerUnavailable {
                node: self.base.config.node_id.clone(),
                reason: format!(
                    "cannot confirm with Redis that this process still holds its node id ({e}); \
                     try again"
                ),
            }),
        }
    }

    /// Renews the claim (every second, from the catalog watch); a claim found lost stops the
    /// node's writes.
    pub(crate) async fn renew_claim(&self) {
        if let Some(claim) = &self.claim {
            match claim.renew().await {
                Ok(Renewal::Held) => {}
                Ok(Renewal::Lost) => self.claim_lost(),
                Err(e) => warn!(error = %e, "renewing this node's claim on its id failed"),
            }
        }
    }
}
