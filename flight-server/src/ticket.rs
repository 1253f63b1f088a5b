//! What skein puts inside Flight tickets and statement handles (protobuf, via prost).
//!
//! A ticket carries the whole statement, so that any node can serve it and nothing about it
//! must be remembered between `GetFlightInfo` and `DoGet`.

use bytes::Bytes;
use prost::Message;

use crate::error::{Error, Result};

/// The content of a `TicketStatementQuery` handle issued by this node.
#[derive(Clone, PartialEq, Message)]
pub(crate) struct StatementTicket {
    /// Id for cancellation.
    #[prost(string, tag = "1")]
    pub query_id: String,
    /// The SQL to run.
    #[prost(string, tag = "2")]
    pub sql: String,
    /// Bound parameters as an Arrow IPC stream (empty if none).
    #[prost(bytes = "bytes", tag = "3")]
    pub parameters: Bytes,
    /// For a statement that already ran (DDL or DML): its affected-row count, returned as a
    /// one-row result.
    #[prost(int64, optional, tag = "4")]
    pub update_count: Option<i64>,
}

impl StatementTicket {
    /// Encodes the ticket.
    pub(crate) fn encode(&self) -> Bytes {
        Bytes::from(self.encode_to_vec())
    }

    /// Decodes a ticket, naming what is wrong with a malformed one.
    pub(crate) fn decode(bytes: &[u8]) -> Result<Self> {
        let t = <Self as Message>::decode(bytes)
            .map_err(|e| Error::InvalidArgument(format!("malformed statement ticket: {e}")))?;
        if t.query_id.is_empty() || (t.sql.is_empty() && t.update_count.is_none()) {
            return Err(Error::InvalidArgument(
                "malformed statement ticket: no query in it".into(),
            ));
        }
        Ok(t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_garbage() {
        let t = StatementTicket {
            query_id: "q".into(),
            sql: "SELECT 1".into(),
            parameters: Bytes::from_static(b"\x01\x02"),
            update_count: None,
        };
        assert_eq!(StatementTicket::decode(&t.encode()).expect("decode"), t);
        assert!(StatementTicket::decode(b"\xff\xff\xff").is_err());
        assert!(StatementTicket::decode(b"").is_err());
    }
}
