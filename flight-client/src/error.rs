//! Errors of the client library. Each says what failed and, for a call the server refused, carries
//! the server's status code and message unchanged.

use std::path::PathBuf;

use arrow::error::ArrowError;
use arrow_flight::error::FlightError;

/// What can go wrong talking to a node or reading input files.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The address is not a `grpc://host:port` or `grpc+tls://host:port` URI.
    #[error("invalid server address {uri:?}: {reason}")]
    InvalidUri {
        /// The address as given.
        uri: String,
        /// Why it was refused.
        reason: String,
    },
    /// The TLS settings could not be used (for example an unreadable CA file).
    #[error("TLS setup failed: {0}")]
    Tls(String),
    /// No connection could be made.
    #[error("cannot connect to {uri}: {message}")]
    Connect {
        /// The server's address.
        uri: String,
        /// The transport's reason, including its causes.
        message: String,
    },
    /// The server answered a call with an error status.
    #[error("{operation}: {message}")]
    Server {
        /// The call that failed, in words (`query`, `ingest into t`, …).
        operation: String,
        /// The gRPC status code.
        code: tonic::Code,
        /// The server's message.
        message: String,
    },
    /// The server's answer could not be understood, or the transport broke mid-call.
    #[error("{operation}: {message}")]
    Protocol {
        /// The call that failed.
        operation: String,
        /// What was wrong.
        message: String,
    },
    /// An input file could not be opened or read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file (`-` for standard input).
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// An input file's contents could not be decoded.
    #[error("cannot decode {path}: {message}")]
    Decode {
        /// The file (`-` for standard input).
        path: PathBuf,
        /// The decoder's message.
        message: String,
    },
    /// A type name given by the user is not one skein knows.
    #[error("unknown data type {spec:?}: {reason}")]
    InvalidType {
        /// The type as written.
        spec: String,
        /// The parser's reason and a hint.
        reason: String,
    },
    /// The request itself is wrong (an option that does not fit the input, a missing column…).
    #[error("{0}")]
    InvalidArgument(String),
    /// An ingest failed; the server had acknowledged some rows (maybe none) before.
    #[error(
        "{} ({acknowledged} rows were acknowledged before the failure)",
        ingest_message(table, source)
    )]
    Ingest {
        /// The target table.
        table: String,
        /// Rows the server acknowledged (durably written) before the failure.
        acknowledged: u64,
        /// What failed.
        #[source]
        source: Box<Error>,
    },
}

/// Result with the crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Maps an error of arrow-flight's clients, which wrap the server's status in up to two
    /// layers of `FlightError`/`ArrowError`, to `Server` (with the status) or `Protocol`.
    pub(crate) fn from_flight(operation: impl Into<String>, error: FlightError) -> Self {
        let operation = operation.into();
        match find_status(&error) {
            Some(status) => Self::server(operation, status),
            None => Self::Protocol {
                operation,
                message: error.to_string(),
            },
        }
    }

    /// An error for a status the server returned.
    pub(crate) fn server(operation: impl Into<String>, status: &tonic::Status) -> Self {
        let message = if status.message().is_empty() {
            format!("{:?}", status.code())
        } else {
            status.message().to_string()
        };
        Self::Server {
            operation: operation.into(),
            code: status.code(),
            message,
        }
    }

    /// The gRPC status code, when the server refused the call.
    pub fn code(&self) -> Option<tonic::Code> {
        match self {
            Self::Server { code, .. } => Some(*code),
            Self::Ingest { source, .. } => source.code(),
            _ => None,
        }
    }

    /// Whether the error says the call was cancelled.
    pub fn is_cancelled(&self) -> bool {
        self.code() == Some(tonic::Code::Cancelled)
    }
}

/// A failed ingest's cause, said as a failure of the ingest (server errors already are).
fn ingest_message(table: &str, source: &Error) -> String {
    match source {
        Error::Server { .. } | Error::Protocol { .. } => source.to_string(),
        other => format!("ingest into {table} failed: {other}"),
    }
}

/// Walks an error's causes for the gRPC status of the server's answer.
fn find_status<'a>(error: &'a (dyn std::error::Error + 'static)) -> Option<&'a tonic::Status> {
    let mut current = Some(error);
    while let Some(e) = current {
        if let Some(status) = e.downcast_ref::<tonic::Status>() {
            return Some(status);
        }
        if let Some(FlightError::Tonic(status)) = e.downcast_ref::<FlightError>() {
            return Some(status);
        }
        if let Some(ArrowError::ExternalError(inner)) = e.downcast_ref::<ArrowError>() {
            current = Some(inner.as_ref());
            continue;
        }
        if let Some(FlightError::ExternalError(inner)) = e.downcast_ref::<FlightError>() {
            current = Some(inner.as_ref());
            continue;
        }
        current = e.source();
    }
    None
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_status_through_wrappers() {
        let status = tonic::Status::not_found("table t does not exist");
        let wrapped = ArrowError::ExternalError(Box::new(FlightError::ExternalError(Box::new(
            FlightError::Tonic(Box::new(status)),
        ))));
        let e = Error::from_flight("query", FlightError::Arrow(wrapped));
        assert_eq!(e.code(), Some(tonic::Code::NotFound));
        assert_eq!(e.to_string(), "query: table t does not exist");
    }

    #[test]
    fn errors_without_status_are_protocol_errors() {
        let e = Error::from_flight("query", FlightError::protocol("no schema"));
        assert_eq!(e.code(), None);
        assert!(e.to_string().starts_with("query: "), "{e}");
    }
}
