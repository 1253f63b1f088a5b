//! Protobuf messages of skein's own, carried inside Flight tickets between nodes.
//!
//! `skein.proto` beside this crate is the schema; the types here are the prost encoding of it,
//! written with prost's derive so that building needs no `protoc`. A test checks the field
//! numbers against the schema file, so the two cannot drift apart silently.
//!
//! - [`Fragment`]: one node's part of a distributed query (peer `DoGet` tickets, and the
//!   endpoints of a scatter scan).
//! - [`TableSlice`]: which files of a table a fragment reads, and whether the node adds its own
//!   buffered rows.

use bytes::Bytes;
use prost::Message;

/// Type URL of a [`Fragment`] wrapped in `google.protobuf.Any`.
pub const FRAGMENT_TYPE_URL: &str = "type.googleapis.com/skein.Fragment";

/// One fragment of a distributed query: SQL that one node runs over the table slices given.
#[derive(Clone, PartialEq, Message)]
pub struct Fragment {
    /// The coordinator's query id (for logs and cancellation).
    #[prost(string, tag = "1")]
    pub query_id: String,
    /// The statement the node runs; it names the tables of `tables` as users do.
    #[prost(string, tag = "2")]
    pub sql: String,
    /// What of each table the fragment reads.
    #[prost(message, repeated, tag = "3")]
    pub tables: Vec<TableSlice>,
    /// Deadline, milliseconds since the Unix epoch (0: none).
    #[prost(int64, tag = "4")]
    pub deadline_ms: i64,
    /// The node id of the coordinator.
    #[prost(string, tag = "5")]
    pub coordinator: String,
    /// The node this fragment is for.
    #[prost(string, tag = "6")]
    pub node_id: String,
    /// The catalog epoch the coordinator planned with.
    #[prost(uint64, tag = "7")]
    pub catalog_epoch: u64,
    /// The catalog version the coordinator planned with.
    #[prost(uint64, tag = "8")]
    pub catalog_version: u64,
    /// Bound parameters as an Arrow IPC stream (empty if none).
    #[prost(bytes = "bytes", tag = "9")]
    pub parameters: Bytes,
    /// HMAC-SHA256 over the fragment with this field empty, under the cluster secret (if any).
    #[prost(bytes = "bytes", tag = "10")]
    pub signature: Bytes,
    /// How many fragments the query has in all (for logs).
    #[prost(uint32, tag = "11")]
    pub fragments: u32,
}

/// One table as a fragment reads it.
#[derive(Clone, PartialEq, Message)]
pub struct TableSlice {
    /// The table's catalog id.
    #[prost(uint64, tag = "1")]
    pub table_id: u64,
    /// Object keys of the table's files this node reads.
    #[prost(string, repeated, tag = "2")]
    pub files: Vec<String>,
    /// Whether the node adds its own rows that are not in the coordinator's file list.
    #[prost(bool, tag = "3")]
    pub own_rows: bool,
    /// The coordinator's flushed WAL position of the receiving node for this table: the files
    /// the coordinator knows hold that node's rows up to here.
    #[prost(uint64, optional, tag = "4")]
    pub flushed: Option<u64>,
}

impl Fragment {
    /// The bytes a signature covers: the encoding with the signature left out.
    pub fn signed_bytes(&self) -> Vec<u8> {
        let mut unsigned = self.clone();
        unsigned.signature = Bytes::new();
        unsigned.encode_to_vec()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every `name = number;` of a message in the schema file.
    fn schema_fields(message: &str) -> Vec<(String, u32)> {
        let text = include_str!("../skein.proto");
        let start = text
            .find(&format!("message {message} {{"))
            .expect("message in schema");
        let body = &text[start..];
        let body = &body[..body.find("\n}").expect("message end")];
        body.lines()
            .map(str::trim)
            .filter(|l| !l.starts_with("//") && l.contains(" = ") && l.ends_with(';'))
            .map(|l| {
                let (left, number) = l.trim_end_matches(';').split_once(" = ").expect("field");
                let name = left.split_whitespace().last().expect("name").to_string();
                (name, number.parse().expect("number"))
            })
            .collect()
    }

    #[test]
    fn field_numbers_match_the_schema() {
        // Each field encoded alone must carry the number the schema gives it.
        let tag = |bytes: Vec<u8>| u32::from(bytes[0] >> 3);
        let f = |set: &dyn Fn(&mut Fragment)| {
            let mut m = Fragment::default();
            set(&mut m);
            tag(m.encode_to_vec())
        };
        let got: Vec<(String, u32)> = vec![
            ("query_id".into(), f(&|m| m.query_id = "q".into())),
            ("sql".into(), f(&|m| m.sql = "s".into())),
            (
                "tables".into(),
                f(&|m| m.tables = vec![TableSlice::default()]),
            ),
            ("deadline_ms".into(), f(&|m| m.deadline_ms = 1)),
            ("coordinator".into(), f(&|m| m.coordinator = "c".into())),
            ("node_id".into(), f(&|m| m.node_id = "n".into())),
            ("catalog_epoch".into(), f(&|m| m.catalog_epoch = 1)),
            ("catalog_version".into(), f(&|m| m.catalog_version = 1)),
            (
                "parameters".into(),
                f(&|m| m.parameters = Bytes::from_static(b"p")),
            ),
            (
                "signature".into(),
                f(&|m| m.signature = Bytes::from_static(b"s")),
            ),
            ("fragments".into(), f(&|m| m.fragments = 1)),
        ];
        assert_eq!(got, schema_fields("Fragment"));
        let s = |set: &dyn Fn(&mut TableSlice)| {
            let mut m = TableSlice::default();
            set(&mut m);
            tag(m.encode_to_vec())
        };
        let got: Vec<(String, u32)> = vec![
            ("table_id".into(), s(&|m| m.table_id = 1)),
            ("files".into(), s(&|m| m.files = vec!["k".into()])),
            ("own_rows".into(), s(&|m| m.own_rows = true)),
            ("flushed".into(), s(&|m| m.flushed = Some(0))),
        ];
        assert_eq!(got, schema_fields("TableSlice"));
    }

    #[test]
    fn signature_is_not_part_of_what_it_signs() {
        let mut f = Fragment {
            sql: "SELECT 1".into(),
            ..Fragment::default()
        };
        let before = f.signed_bytes();
        f.signature = Bytes::from_static(b"sig");
        assert_eq!(f.signed_bytes(), before);
        let decoded = Fragment::decode(f.encode_to_vec().as_slice()).expect("decode");
        assert_eq!(decoded, f);
    }
}
