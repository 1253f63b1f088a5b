//! Errors of the ring crate.

/// Everything that can go wrong while joining, marking or leaving a cluster.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A setting given to [`crate::Membership::join`] (or a Redis URL) is unusable.
    #[error("invalid cluster membership setting: {message}")]
    InvalidArgument {
        /// What was wrong and what to do.
        message: String,
    },
    /// Redis could not be reached, did not answer in time, or refused a command.
    #[error("cluster membership in Redis at {addr}: {message}")]
    Redis {
        /// The server, without credentials (`redis://host:port`).
        addr: String,
        /// What the client or the server said.
        message: String,
    },
    /// Another live process is registered under this node id.
    #[error(
        "node id {node_id:?} is already registered by a live process at {address} \
         (started at {started_ms} ms since the epoch); stop that process or choose another node \
         id (a registration expires {ttl_ms} ms after its process stops)"
    )]
    DuplicateNode {
        /// The contested node id.
        node_id: String,
        /// The address the other process advertises.
        address: String,
        /// When the other process started, ms since the Unix epoch.
        started_ms: i64,
        /// The registration TTL in use.
        ttl_ms: u64,
    },
    /// A value stored in Redis is not what this crate writes there.
    #[error("cluster membership in Redis at {addr}: {key} holds undecodable data: {message}")]
    Corrupt {
        /// The server, without credentials.
        addr: String,
        /// The key (and field) involved.
        key: String,
        /// What the decoder said.
        message: String,
    },
}

/// The result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
