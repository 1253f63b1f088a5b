//! The cluster: this node as a member of it, and queries run across it.
//!
//! It owns the node's membership ([`membership`]: joining and leaving the ring, readiness,
//! forgetting a node that will not return), the connections to peers, and the executor of
//! distributed queries ([`exec`]: the planner in `skein_sql::plan` picks a shape; fragments go
//! to peers, signed and bound to the node and read snapshot they were planned for, and what
//! comes back is merged in DuckDB).
//!
//! Its promises: every shape answers what one DuckDB over all the data would; a fragment
//! redeemed on another node is passed on or read there with exactly its rows, never wrong
//! rows; a peer that fails gives the whole answer from another node or UNAVAILABLE naming it.

use std::collections::HashSet;
use std::sync::Arc;

use crate::auth::Authenticator;
use crate::base::Base;
use crate::ddl::Ddl;
use crate::read::Reads;
use crate::write::Writes;

pub(crate) mod exec;
pub(crate) mod membership;

pub(crate) use membership::fragment_values;

/// The cluster's state on this node, and the subsystems its work calls on.
#[derive(Debug)]
pub(crate) struct Cluster {
    pub(crate) base: Arc<Base>,
    pub(crate) writes: Arc<Writes>,
    pub(crate) reads: Arc<Reads>,
    pub(crate) ddl: Arc<Ddl>,
    /// Users and token signing, if authentication is on (peer tokens, fragment signatures).
    pub(crate) auth: Option<Arc<Authenticator>>,
    /// Connections to peers.
    peers: membership::Peers,
    /// DuckDB's aggregate function names, for the planner.
    aggregates: std::sync::OnceLock<Arc<HashSet<String>>>,
}

impl Cluster {
    /// The cluster's side of a node made of `base` and the other subsystems.
    pub(crate) fn new(
        base: Arc<Base>,
        writes: Arc<Writes>,
        reads: Arc<Reads>,
        ddl: Arc<Ddl>,
        auth: Option<Arc<Authenticator>>,
    ) -> Self {
        Self {
            base,
            writes,
            reads,
            ddl,
            auth,
            peers: Default::default(),
            aggregates: std::sync::OnceLock::new(),
        }
    }
}
