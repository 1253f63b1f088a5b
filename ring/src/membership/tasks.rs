//! The background tasks of a [`super::Membership`]: the heartbeat and the watch.
//!
//! Both keep going whatever Redis does: a failure is logged once when it starts (warn) and once
//! when it ends (info), the last ring and marks are kept, and the next tick tries again.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::{Instant, MissedTickBehavior};

use super::Shared;
use crate::error::Result;
use crate::ring::{Member, Ring, normalize, same_members};
use crate::store::Refresh;

/// The longest pause between two reads of the member set.
const MAX_POLL: Duration = Duration::from_secs(1);

fn interval(period: Duration) -> tokio::time::Interval {
    let mut tick = tokio::time::interval_at(Instant::now() + period, period);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    tick
}

/// Every ttl/3: renews the member key (registering it again if it expired) and writes the
/// provider's unflushed set.
pub(super) async fn heartbeat(shared: Arc<Shared>) {
    let period = shared.ttl / 3;
    let node_id = shared.me.node_id.as_str();
    let mut tick = interval(period);
    let mut failing = false;
    let mut taken_over = false;
    loop {
        tokio::select! {
            biased;
            () = shared.cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        match beat(&shared).await {
            Ok(refresh) => {
                if failing {
                    tracing::info!(node_id, "heartbeat to Redis works again");
                    failing = false;
                }
                match refresh {
                    Refresh::Renewed => taken_over = false,
                    Refresh::Registered => {
                        taken_over = false;
                        tracing::warn!(
                            node_id,
                            ttl_ms = shared.ttl.as_millis() as u64,
                            "own registration had expired (Redis restarted or unreachable for \
                             longer than the TTL); registered again"
                        );
                    }
                    Refresh::TakenOver if !taken_over => {
                        taken_over = true;
                        tracing::error!(
                            node_id,
                            "another process registered this node id while ours had expired; \
                             two processes must not share a node id: stop one of them"
                        );
                    }
                    Refresh::TakenOver => {}
                }
            }
            Err(e) if !failing => {
                failing = true;
                tracing::warn!(
                    node_id,
                    error = %e,
                    "heartbeat to Redis failed; retrying every tick"
                );
            }
            Err(e) => tracing::debug!(node_id, error = %e, "heartbeat to Redis failed again"),
        }
    }
}

async fn beat(shared: &Shared) -> Result<Refresh> {
    let refresh = shared
        .store
        .refresh(&shared.me.node_id, &shared.me_json, shared.ttl)
        .await?;
    if refresh == Refresh::TakenOver {
        // The marks under this node id are the other process's now: writing ours over them
        // could hide rows it holds unflushed.
        return Ok(refresh);
    }
    let mut written = shared.written.lock().await;
    shared.write_marks(&mut written, None).await?;
    Ok(refresh)
}

/// Every min(1 s, ttl/3): reads the member set and everyone's unflushed marks; rebuilds the ring
/// when the member set changed.
pub(super) async fn watch(shared: Arc<Shared>) {
    let period = (shared.ttl / 3).min(MAX_POLL);
    let node_id = shared.me.node_id.as_str();
    let mut tick = interval(period);
    let mut failing = false;
    loop {
        tokio::select! {
            biased;
            () = shared.cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        match poll(&shared).await {
            Ok(()) if failing => {
                failing = false;
                tracing::info!(node_id, "reading the member set from Redis works again");
            }
            Ok(()) => {}
            Err(e) if !failing => {
                failing = true;
                tracing::warn!(
                    node_id,
                    error = %e,
                    "cannot read the member set from Redis; keeping the last ring"
                );
            }
            Err(e) => tracing::debug!(node_id, error = %e, "reading the member set failed again"),
        }
    }
}

async fn poll(shared: &Shared) -> Result<()> {
    let read = shared.store.members().await?;
    let marks = shared.store.all_unflushed().await?;
    *shared.unflushed.write() = marks;
    update_ring(shared, read);
    Ok(())
}

/// Replaces the ring if the members read (plus this node, always) differ from its members.
fn update_ring(shared: &Shared, read: Vec<Member>) {
    let me = &shared.me;
    let mut members: Vec<Member> = read
        .into_iter()
        .filter(|m| m.node_id != me.node_id)
        .collect();
    members.push(me.clone());
    let members = normalize(members);
    shared.ring.send_if_modified(|current| {
        if same_members(current.members(), &members) {
            return false;
        }
        let old = current.members();
        let joined: Vec<&str> = members
            .iter()
            .filter(|m| !old.iter().any(|o| o.identity() == m.identity()))
            .map(|m| m.node_id.as_str())
            .collect();
        let gone: Vec<&str> = old
            .iter()
            .filter(|o| !members.iter().any(|m| m.identity() == o.identity()))
            .map(|o| o.node_id.as_str())
            .collect();
        let version = current.version() + 1;
        tracing::info!(
            node_id = %me.node_id,
            version,
            members = members.len(),
            ?joined,
            ?gone,
            "cluster membership changed"
        );
        *current = Arc::new(Ring::with_version(members.clone(), version));
        true
    });
}
