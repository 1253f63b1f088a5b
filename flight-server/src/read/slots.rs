//! Query slots: `--max-queries` queries run at once, and one holder (a user, or with
//! authentication off one client connection) holds at most `--max-queries-per-user` of them,
//! so that a client whose streams stall cannot take every slot from everyone else. A slot is
//! given back when its query ends, including when its reader stalls past `--stall-timeout`.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::error::{Error, Result};

/// The node's query slots.
#[derive(Debug)]
pub(crate) struct QuerySlots {
    total: Arc<Semaphore>,
    max: usize,
    share: usize,
    held: Mutex<HashMap<String, usize>>,
}

/// One slot; given back when dropped.
#[derive(Debug)]
pub(crate) struct QuerySlot {
    _permit: OwnedSemaphorePermit,
    holder: Option<String>,
    slots: Arc<QuerySlots>,
}

impl Drop for QuerySlot {
    fn drop(&mut self) {
        if let Some(h) = &self.holder {
            let mut held = self.slots.held.lock();
            if let Some(n) = held.get_mut(h) {
                *n -= 1;
                if *n == 0 {
                    held.remove(h);
                }
            }
        }
    }
}

impl QuerySlots {
    /// `max` slots, at most `share` per holder (both at least 1).
    pub(crate) fn new(max: usize, share: usize) -> Arc<Self> {
        let max = max.max(1);
        Arc::new(Self {
            total: Arc::new(Semaphore::new(max)),
            max,
            share: share.clamp(1, max),
            held: Mutex::default(),
        })
    }

    /// Slots free now.
    #[cfg(test)]
    fn available(&self) -> usize {
        self.total.available_permits()
    }

    /// A slot for `holder` (`None`: counted only against the total, for a node's own
    /// fragments), or RESOURCE_EXHAUSTED naming which bound was reached.
    pub(crate) fn acquire(self: &Arc<Self>, holder: Option<String>) -> Result<QuerySlot> {
        let mut held = self.held.lock();
        if let Some(h) = &holder
            && held.get(h).copied().unwrap_or(0) >= self.share
        {
            return Err(Error::ResourceExhausted(format!(
                "{h} has {} queries running, the most one user may (--max-queries-per-user); \
                 finish reading them or try again shortly",
                self.share
            )));
        }
        let permit = Arc::clone(&self.total).try_acquire_owned().map_err(|_| {
            Error::ResourceExhausted(format!(
                "{} queries are running, the most this node runs at once (--max-queries); \
                 try again shortly",
                self.max
            ))
        })?;
        if let Some(h) = &holder {
            *held.entry(h.clone()).or_default() += 1;
        }
        Ok(QuerySlot {
            _permit: permit,
            holder,
            slots: Arc::clone(self),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_holder_cannot_take_every_slot() {
        let slots = QuerySlots::new(4, 2);
        let a1 = slots.acquire(Some("user \"a\"".into())).expect("a1");
        let _a2 = slots.acquire(Some("user \"a\"".into())).expect("a2");
        let e = slots
            .acquire(Some("user \"a\"".into()))
            .expect_err("a's share");
        assert!(e.to_string().contains("--max-queries-per-user"), "{e}");
        let _b = slots.acquire(Some("user \"b\"".into())).expect("b");
        let _f = slots.acquire(None).expect("fragment");
        let e = slots.acquire(Some("user \"c\"".into())).expect_err("full");
        assert!(e.to_string().contains("--max-queries)"), "{e}");
        drop(a1);
        assert_eq!(slots.available(), 1);
        let _a3 = slots.acquire(Some("user \"a\"".into())).expect("a again");
    }
}
