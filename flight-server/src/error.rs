//! The node's errors, and the one place they become gRPC statuses.

use tonic::{Code, Status};

/// Everything a request can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request is malformed or asks for something impossible (caller's mistake).
    #[error("{0}")]
    InvalidArgument(String),
    /// A table the request names does not exist.
    #[error("table {table:?} does not exist")]
    UnknownTable {
        /// The name as given.
        table: String,
    },
    /// A table the request would create exists already.
    #[error("table {table:?} already exists")]
    TableExists {
        /// The name as given.
        table: String,
    },
    /// An ingested batch does not fit the table's schema; nothing of it was written.
    #[error("batch does not fit table {table:?}: {reason}")]
    SchemaMismatch {
        /// The table.
        table: String,
        /// What does not fit, naming the column.
        reason: String,
    },
    /// A statement or feature this node does not support.
    #[error("{0}")]
    Unsupported(String),
    /// A statement reaches for something user SQL may not touch (files, settings, secrets).
    #[error("{0}")]
    Forbidden(String),
    /// A prepared statement handle that is unknown or was closed.
    #[error("prepared statement {0:?} does not exist (closed, or created on another node)")]
    UnknownPreparedStatement(String),
    /// The query was cancelled by the client.
    #[error("query {0} was cancelled")]
    Cancelled(String),
    /// The query ran past the node's query timeout and was stopped.
    #[error("{0}")]
    DeadlineExceeded(String),
    /// DuckDB rejected or failed the statement; the message is DuckDB's.
    #[error("{0}")]
    Engine(String),
    /// Reading or writing storage failed.
    #[error("storage: {0}")]
    Storage(#[from] skein_storage::Error),
    /// An Arrow operation failed.
    #[error("arrow: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
    /// Encoding a Flight message failed.
    #[error("flight: {0}")]
    Flight(#[from] arrow_flight::error::FlightError),
    /// A limit was reached (buffer space, sizes); the message names it.
    #[error("{0}")]
    ResourceExhausted(String),

    /// A rewrite lost a race with another change to the same files.
    #[error("{0}")]
    Aborted(String),
    /// The node stopped accepting writes (after a failed WAL sync); the message says why.
    #[error("this node no longer accepts writes: {0}")]
    WritesStopped(String),
    /// The write-ahead log failed.
    #[error("write-ahead log: {0}")]
    Wal(#[from] skein_wal::Error),
    /// The node is shutting down.
    #[error("the node is shutting down")]
    ShuttingDown,
    /// Cluster membership (Redis) failed or refused this node.
    #[error("{0}")]
    Membership(#[from] skein_ring::Error),
    /// A node whose part of a query is needed cannot give it: the query fails rather than
    /// answer without its rows.
    #[error("node {node} is unavailable: {reason}")]
    PeerUnavailable {
        /// The node id.
        node: String,
        /// What happened, and what to do.
        reason: String,
    },
    /// A peer refused its fragment of the query for a reason that holds on every node (the
    /// caller's mistake); its code is passed on.
    #[error("node {node}: {message}")]
    Remote {
        /// The node id.
        node: String,
        /// The gRPC code the peer answered with.
        code: Code,
        /// Its message.
        message: String,
    },
    /// A fault inside the node.
    #[error("internal error: {0}")]
    Internal(String),
}

/// Result type of the node.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<duckdb::Error> for Error {
    fn from(e: duckdb::Error) -> Self {
        Error::Engine(e.to_string())
    }
}

impl From<tokio::task::JoinError> for Error {
    fn from(e: tokio::task::JoinError) -> Self {
        Error::Internal(format!("background task failed: {e}"))
    }
}

/// The gRPC code of a DuckDB error, judged by the error class DuckDB puts first.
fn engine_code(message: &str) -> Code {
    let class = message.split(" Error:").next().unwrap_or("");
    match class {
        "Parser"
        | "Binder"
        | "Conversion"
        | "Invalid Input"
        | "Constraint"
        | "Syntax"
        | "Invalid type"
        | "Out of Range"
        | "Not implemented"
        | "Permission"
        | "Mismatch Type"
        | "Invalid Configuration"
        | "Invalid" => Code::InvalidArgument,
        "Catalog" if message.contains("does not exist") => Code::NotFound,
        "Catalog" => Code::InvalidArgument,
        "INTERRUPT" => Code::Cancelled,
        "Out of Memory" => Code::ResourceExhausted,
        _ => Code::Internal,
    }
}

impl From<Error> for Status {
    fn from(e: Error) -> Status {
        let code = match &e {
            Error::InvalidArgument(_) | Error::SchemaMismatch { .. } => Code::InvalidArgument,
            Error::UnknownTable { .. } | Error::UnknownPreparedStatement(_) => Code::NotFound,
            Error::TableExists { .. } => Code::AlreadyExists,
            Error::Unsupported(_) => Code::Unimplemented,
            Error::Forbidden(_) => Code::PermissionDenied,
            Error::Cancelled(_) => Code::Cancelled,
            Error::DeadlineExceeded(_) => Code::DeadlineExceeded,
            Error::Engine(m) => engine_code(m),
            Error::Arrow(_) => Code::InvalidArgument,
            Error::ShuttingDown | Error::WritesStopped(_) | Error::PeerUnavailable { .. } => {
                Code::Unavailable
            }
            Error::Remote { code, .. } => *code,
            Error::Membership(skein_ring::Error::Redis { .. }) => Code::Unavailable,
            Error::Membership(
                skein_ring::Error::InvalidArgument { .. } | skein_ring::Error::DuplicateNode { .. },
            ) => Code::InvalidArgument,
            Error::Membership(skein_ring::Error::Corrupt { .. }) => Code::Internal,
            Error::ResourceExhausted(_) => Code::ResourceExhausted,
            Error::Aborted(_) => Code::Aborted,
            Error::Wal(skein_wal::Error::Poisoned(_) | skein_wal::Error::Closed) => {
                Code::Unavailable
            }
            Error::Wal(skein_wal::Error::TooLarge(_)) => Code::InvalidArgument,
            Error::Wal(_) => Code::Internal,
            Error::Storage(
                skein_storage::Error::ObjectStore { .. }
                | skein_storage::Error::Redis { .. }
                | skein_storage::Error::CatalogLost { .. }
                | skein_storage::Error::Fenced { .. },
            ) => Code::Unavailable,
            Error::Storage(skein_storage::Error::Snapshot { .. }) => Code::InvalidArgument,
            Error::Storage(_) | Error::Flight(_) | Error::Internal(_) => Code::Internal,
        };
        let message = e.to_string();
        match code {
            Code::Internal | Code::Unavailable | Code::ResourceExhausted => {
                tracing::warn!(code = ?code, error = %message, "request failed")
            }
            _ => tracing::debug!(code = ?code, error = %message, "request rejected"),
        }
        Status::new(code, message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duckdb_error_classes_map_to_codes() {
        assert_eq!(
            engine_code("Parser Error: syntax error at or near \"SELEC\""),
            Code::InvalidArgument
        );
        assert_eq!(
            engine_code("Catalog Error: Table with name nope does not exist!"),
            Code::NotFound
        );
        assert_eq!(
            engine_code("Binder Error: Referenced column \"x\" not found"),
            Code::InvalidArgument
        );
        assert_eq!(
            engine_code("INTERRUPT Error: Interrupted!"),
            Code::Cancelled
        );
        assert_eq!(engine_code("something odd"), Code::Internal);
    }
}
