//! Cluster membership and placement for skein.
//!
//! Every node of a cluster registers itself in Redis and watches who else is registered; from
//! that member set it builds a [`Ring`], a consistent-hash ring that says which node an object
//! key belongs to (its *owner*) and which nodes to try next ([`Ring::successors`]). Every node
//! builds the same ring from the same members, so nodes agree on placement without talking to
//! each other. Nodes also record in Redis which tables they hold rows of that are only in their
//! WAL (*unflushed*), so a query can tell when an answer would be missing rows.
//!
//! A node without Redis uses [`Membership::single`]: a ring of itself, no I/O.
//!
//! # Redis layout
//!
//! Under the prefix `skein:<cluster>:`, as the catalog:
//! - `member:<node_id>`: the [`Member`] as JSON, set with a TTL (`PX`). The heartbeat sets it
//!   again every ttl/3 with a Lua script that only writes if the key is absent or still holds
//!   this process's value, so a process never overwrites another process's registration. Join
//!   refuses a node id whose key holds a member with another `started_ms` ([`Error::DuplicateNode`]);
//!   a clean [`Membership::leave`] deletes the key (if still ours), a dead process's key expires.
//! - `unflushed`: a hash from node id to a JSON array of table ids, *without* TTL: a node that dies
//!   with unflushed rows leaves its mark behind, so queries fail honestly instead of answering
//!   partially. The node's heartbeat rewrites its field each tick from the provider given to
//!   [`Membership::join`]; an empty set deletes the field.
//!
//! The member set is read with `SCAN MATCH skein:<cluster>:member:*` then `MGET` (keys that
//! expire in between are skipped), together with `HGETALL` of `unflushed`.
//!
//! # Guarantees
//!
//! - **Placement** depends only on the node ids: [`VNODES`] points per member, SipHash-2-4 of the
//!   node id and point number. Adding a member moves keys only to it; removing one moves only its
//!   keys.
//! - **The ring** always contains this node (it can always serve its own data) plus the other
//!   members as last read. It is rebuilt, with [`Ring::version`] one higher, only when the set of
//!   `(node_id, address, started_ms)` changes. A dead node leaves the others' rings at most
//!   ttl + min(1 s, ttl/3) (plus one Redis round trip) after its last heartbeat.
//! - **Unflushed marks**: when [`Membership::mark_unflushed`] returns `Ok`, Redis holds the mark,
//!   and it stays until this node's provider stops reporting the table. [`Membership::mark_unflushed`]
//!   and the heartbeat both compute-and-write under one async mutex, and both call the provider
//!   *inside* it; the caller guarantees the provider already reports the table when it marks it.
//!   So a heartbeat that computed its set before a mark cannot write it after the mark: the mark
//!   waits for that heartbeat, then writes the provider's (newer) set. A mark is skipped without
//!   I/O when the table is in the set last written; while a write's outcome is unknown (in flight,
//!   cut short or failed) nothing counts as written.
//! - **Redis failures** in the background never panic and never empty the ring: they are logged
//!   (warn when they start, info when they end), the last ring and marks are kept and the next tick
//!   retries. If this node's key vanished (Redis restarted empty), the next heartbeat registers it
//!   again. Every Redis operation has the deadline given to [`Membership::join`].
//! - **Background tasks** (heartbeat, watch) run on the current tokio runtime and stop on
//!   [`Membership::leave`], on [`Membership::abort`] (which leaves the key to expire, as a crash
//!   would) and when the last handle is dropped.
//!
//! # Modules
//!
//! - `ring`: [`Member`], [`Ring`] and the virtual nodes over `hashring`.
//! - `membership`: [`Membership`]: join, leave, unflushed marks; `membership::tasks`: the
//!   heartbeat and the watch.
//! - `store`: the Redis keys and scripts, each operation with a deadline; [`connect_pool`].
//! - `error`: [`Error`] and [`Result`].

mod error;
mod membership;
mod ring;
mod store;

pub use error::{Error, Result};
pub use membership::Membership;
pub use ring::{Member, Ring, VNODES};
pub use store::connect_pool;
