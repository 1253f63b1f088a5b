//! What the node writes into the WAL: one record per appended batch, holding the table's id
//! and the batch as an Arrow IPC stream (schema and one batch), optionally compressed.
//!
//! Layout: `b'B'`, format version (1 byte), table id (u64 little-endian), Arrow IPC stream.

use arrow::array::RecordBatch;
use arrow::ipc::CompressionType;
use arrow::ipc::reader::StreamReader;
use arrow::ipc::writer::{IpcWriteOptions, StreamWriter};

use crate::config::WalCompression;
use crate::error::{Error, Result};

const KIND_BATCH: u8 = b'B';
const VERSION: u8 = 1;
const HEADER_BYTES: usize = 10;

/// Encodes one batch of table `table_id`.
pub(crate) fn encode(
    table_id: u64,
    batch: &RecordBatch,
    compression: WalCompression,
) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(HEADER_BYTES + batch.get_array_memory_size() + 1024);
    out.push(KIND_BATCH);
    out.push(VERSION);
    out.extend_from_slice(&table_id.to_le_bytes());
    let options = IpcWriteOptions::default().try_with_compression(match compression {
        WalCompression::None => None,
        WalCompression::Lz4 => Some(CompressionType::LZ4_FRAME),
        WalCompression::Zstd => Some(CompressionType::ZSTD),
    })?;
    let mut writer = StreamWriter::try_new_with_options(&mut out, &batch.schema(), options)?;
    writer.write(batch)?;
    writer.finish()?;
    drop(writer);
    Ok(out)
}

/// A decoded record.
#[derive(Debug)]
pub(crate) struct Record {
    /// The table's catalog id.
    pub table_id: u64,
    /// The rows.
    pub batch: RecordBatch,
}

/// Decodes a record written by [`encode`].
pub(crate) fn decode(payload: &[u8]) -> Result<Record> {
    let bad = |why: String| Error::Internal(format!("undecodable WAL record: {why}"));
    if payload.len() < HEADER_BYTES {
        return Err(bad(format!(
            "{} bytes is shorter than its header",
            payload.len()
        )));
    }
    if payload[0] != KIND_BATCH || payload[1] != VERSION {
        return Err(bad(format!(
            "unknown kind {} or version {}",
            payload[0], payload[1]
        )));
    }
    let mut id = [0u8; 8];
    id.copy_from_slice(&payload[2..HEADER_BYTES]);
    let reader =
        StreamReader::try_new(&payload[HEADER_BYTES..], None).map_err(|e| bad(e.to_string()))?;
    let mut batches = reader
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| bad(e.to_string()))?;
    if batches.len() != 1 {
        return Err(bad(format!(
            "{} batches where one was written",
            batches.len()
        )));
    }
    Ok(Record {
        table_id: u64::from_le_bytes(id),
        batch: batches.remove(0),
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{ArrayRef, Int64Array, StringArray};

    use super::*;

    fn batch() -> RecordBatch {
        RecordBatch::try_from_iter([
            (
                "id",
                Arc::new(Int64Array::from_iter_values(0..1000)) as ArrayRef,
            ),
            (
                "name",
                Arc::new(StringArray::from_iter(
                    (0..1000).map(|i| (i % 7 != 0).then(|| format!("row {i}"))),
                )) as ArrayRef,
            ),
        ])
        .expect("batch")
    }

    #[test]
    fn round_trips_with_every_compression() {
        for compression in [
            WalCompression::None,
            WalCompression::Lz4,
            WalCompression::Zstd,
        ] {
            let bytes = encode(42, &batch(), compression).expect("encode");
            let record = decode(&bytes).expect("decode");
            assert_eq!(record.table_id, 42);
            assert_eq!(record.batch, batch(), "{compression:?}");
        }
    }

    #[test]
    fn damaged_records_are_errors() {
        let bytes = encode(7, &batch(), WalCompression::None).expect("encode");
        for cut in [0, 5, HEADER_BYTES, HEADER_BYTES + 3, bytes.len() / 2] {
            assert!(decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut wrong_kind = bytes.clone();
        wrong_kind[0] = b'X';
        assert!(decode(&wrong_kind).is_err());
    }

    /// A record as the WAL of this format version holds it: a change to what `encode` writes
    /// must be deliberate (a new `VERSION`, with `decode` still reading version 1), and a
    /// record written before must still decode to the same rows.
    #[test]
    fn a_version_1_record_is_what_is_checked_in_and_decodes() {
        let small = RecordBatch::try_from_iter([
            ("id", Arc::new(Int64Array::from(vec![1, -2, 3])) as ArrayRef),
            (
                "name",
                Arc::new(StringArray::from(vec![Some("a"), None, Some("zé")])) as ArrayRef,
            ),
        ])
        .expect("batch");
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/snapshots/wal_record_v1.hex");
        let encoded = encode(9, &small, WalCompression::None).expect("encode");
        let hex: String = encoded.iter().map(|b| format!("{b:02x}")).collect();
        if std::env::var_os("SKEIN_UPDATE_SNAPSHOTS").is_some() {
            std::fs::write(&path, format!("{hex}\n")).expect("write snapshot");
        }
        let stored = std::fs::read_to_string(&path).expect("read snapshot");
        let stored = stored.trim();
        assert!(
            stored == hex,
            "the WAL record format changed (rewrite {} with SKEIN_UPDATE_SNAPSHOTS=1 only \
             together with a new VERSION)",
            path.display()
        );
        let bytes: Vec<u8> = (0..stored.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&stored[i..i + 2], 16).expect("hex"))
            .collect();
        let record = decode(&bytes).expect("the checked-in record decodes");
        assert_eq!((record.table_id, record.batch), (9, small));
    }
}
