//! Members and the consistent-hash ring that places object keys on them.

use std::hash::{Hash, Hasher};
use std::sync::Arc;

use hashring::HashRing;

/// Virtual nodes per member: enough to keep every member's share within a few percent of even
/// for small clusters while a rebuild stays cheap.
pub const VNODES: u32 = 128;

/// One node of the cluster as registered.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Member {
    /// The node's id, unique among live processes of a cluster.
    pub node_id: String,
    /// Advertised Flight address, "host:port".
    pub address: String,
    /// Process start, ms since the Unix epoch.
    pub started_ms: i64,
    /// skein version string.
    pub version: String,
}

impl Member {
    /// What identifies a member for placement: a changed address or a restart is a new member,
    /// a changed version string alone is not.
    pub(crate) fn identity(&self) -> (&str, &str, i64) {
        (&self.node_id, &self.address, self.started_ms)
    }
}

/// One point of a member on the ring.
#[derive(Debug, Clone)]
struct VNode {
    /// Index of the member in [`Ring::members`].
    member: usize,
    /// Which of the member's [`VNODES`] points this is.
    replica: u32,
    /// The member's node id (the point's position depends on it and `replica` only).
    node_id: Arc<str>,
}

impl Hash for VNode {
    fn hash<H: Hasher>(&self, state: &mut H) {
        // Explicit bytes, little-endian: every node computes the same positions.
        state.write(self.node_id.as_bytes());
        state.write(&self.replica.to_le_bytes());
    }
}

/// An object key as hashed: its bytes and nothing else.
struct KeyBytes<'a>(&'a str);

impl Hash for KeyBytes<'_> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write(self.0.as_bytes());
    }
}

/// An immutable placement snapshot: the members and a consistent-hash ring over them.
///
/// Each member has [`VNODES`] points at SipHash-2-4 (zero key, as `hashring` uses) of its node id
/// and the point's number; a key belongs to the first point at or after the hash of its bytes.
/// Positions depend only on node ids, so every node builds the same ring from the same members,
/// whatever the order it read them in, and a member joining takes keys only for itself.
pub struct Ring {
    /// Sorted by node id, one per node id.
    members: Vec<Member>,
    /// The points of every member.
    hash: HashRing<VNode>,
    /// Bumped whenever the member set changes.
    version: u64,
}

impl std::fmt::Debug for Ring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ring")
            .field("version", &self.version)
            .field(
                "members",
                &self
                    .members
                    .iter()
                    .map(|m| format!("{}@{}", m.node_id, m.address))
                    .collect::<Vec<_>>(),
            )
            .field("vnodes", &self.hash.len())
            .finish()
    }
}

/// Sorts by node id and keeps one member per node id (the latest started).
pub(crate) fn normalize(mut members: Vec<Member>) -> Vec<Member> {
    members.sort_by(|a, b| {
        a.node_id
            .cmp(&b.node_id)
            .then(b.started_ms.cmp(&a.started_ms))
    });
    members.dedup_by(|later, kept| later.node_id == kept.node_id);
    members
}

/// Whether two normalized member lists place keys identically.
pub(crate) fn same_members(a: &[Member], b: &[Member]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.identity() == y.identity())
}

impl Ring {
    /// A ring of version 0 over `members` (any order; one per node id is kept, the latest
    /// started), with [`VNODES`] virtual nodes per member.
    pub fn new(members: Vec<Member>) -> Self {
        Self::with_version(members, 0)
    }

    /// Like [`Ring::new`] with the given version (a rebuild after a membership change).
    pub fn with_version(members: Vec<Member>, version: u64) -> Self {
        let members = normalize(members);
        let mut vnodes = Vec::with_capacity(members.len() * VNODES as usize);
        for (index, m) in members.iter().enumerate() {
            let node_id: Arc<str> = Arc::from(m.node_id.as_str());
            for replica in 0..VNODES {
                vnodes.push(VNode {
                    member: index,
                    replica,
                    node_id: Arc::clone(&node_id),
                });
            }
        }
        let mut hash = HashRing::new();
        hash.batch_add(vnodes);
        Self {
            members,
            hash,
            version,
        }
    }

    /// The members, sorted by node id.
    pub fn members(&self) -> &[Member] {
        &self.members
    }

    /// The member with this node id.
    pub fn member(&self, node_id: &str) -> Option<&Member> {
        self.members
            .binary_search_by(|m| m.node_id.as_str().cmp(node_id))
            .ok()
            .and_then(|i| self.members.get(i))
    }

    /// How many members there are.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// Whether there is no member (then no key has an owner).
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// The member a key (an object key) belongs to; `None` only for an empty ring.
    pub fn owner(&self, key: &str) -> Option<&Member> {
        self.hash
            .get(&KeyBytes(key))
            .and_then(|v| self.members.get(v.member))
    }

    /// Distinct members in ring order starting at the key's owner (for retries: the next one).
    /// Every member appears exactly once.
    pub fn successors(&self, key: &str) -> Vec<&Member> {
        let n = self.members.len();
        if n == 0 {
            return Vec::new();
        }
        let Some(points) = self
            .hash
            .get_with_replicas(&KeyBytes(key), self.hash.len() - 1)
        else {
            return Vec::new();
        };
        let mut seen = vec![false; n];
        let mut out = Vec::with_capacity(n);
        for point in points {
            if let (Some(done), Some(member)) =
                (seen.get_mut(point.member), self.members.get(point.member))
                && !*done
            {
                *done = true;
                out.push(member);
                if out.len() == n {
                    break;
                }
            }
        }
        out
    }

    /// Bumps whenever the member set changes (0 for the first).
    pub fn version(&self) -> u64 {
        self.version
    }
}

#[cfg(test)]
mod tests;
