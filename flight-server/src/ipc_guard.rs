//! Bounds on the Arrow IPC messages a client sends, checked before arrow-ipc decodes them.
//!
//! arrow-ipc trusts what a message says about itself: a compressed buffer's 8-byte prefix
//! names its uncompressed length and the decoder allocates that much up front (a prefix of
//! 2^44 aborts the process), and a buffer whose offset and length reach past the body makes it
//! panic. Every `DoPut` stream (bulk ingest and prepared-statement parameters) therefore goes
//! through [`guarded`], which reads each message's flatbuffer header and refuses, with
//! INVALID_ARGUMENT and before anything is decoded, a message that:
//!
//! - is not a schema, record batch or dictionary batch;
//! - declares a body length other than the body it came with;
//! - has a buffer reaching outside its body, or a field node with negative counts;
//! - claims more rows than `--max-message-bytes` (times 8, for bit-packed columns);
//! - would decompress to more than `--max-message-bytes` in all: the limit an uncompressed
//!   message meets at the gRPC layer holds for a compressed one too.

use arrow::ipc::{MessageHeader, RecordBatch, root_as_message};
use arrow_flight::FlightData;
use futures::{Stream, StreamExt};
use tonic::Status;

/// Compressed buffers start with their uncompressed length; -1 says the rest is not compressed.
const NOT_COMPRESSED: i64 = -1;

/// Checks one message (see the module docs); `limit` is `--max-message-bytes`.
pub(crate) fn check(data: &FlightData, limit: usize) -> Result<(), String> {
    if data.data_header.is_empty() {
        // A message with only a descriptor or app metadata decodes to nothing.
        return if data.data_body.is_empty() {
            Ok(())
        } else {
            Err("a message has a body but no IPC header".into())
        };
    }
    let message = root_as_message(&data.data_header)
        .map_err(|e| format!("a message's IPC header is not a valid flatbuffer: {e}"))?;
    let body = data.data_body.len();
    if usize::try_from(message.bodyLength()).ok() != Some(body) {
        return Err(format!(
            "a message's IPC header declares a body of {} bytes but {body} came with it",
            message.bodyLength()
        ));
    }
    match message.header_type() {
        MessageHeader::Schema => Ok(()),
        MessageHeader::RecordBatch => {
            let batch = message
                .header_as_record_batch()
                .ok_or("a record batch message has no record batch header")?;
            check_batch(&batch, &data.data_body, limit)
        }
        MessageHeader::DictionaryBatch => {
            let batch = message
                .header_as_dictionary_batch()
                .and_then(|d| d.data())
                .ok_or("a dictionary batch message has no record batch")?;
            check_batch(&batch, &data.data_body, limit)
        }
        other => Err(format!(
            "unexpected IPC message type {other:?}: send a schema, then record batches"
        )),
    }
}

fn check_batch(batch: &RecordBatch<'_>, body: &[u8], limit: usize) -> Result<(), String> {
    let max_rows = (limit as i64).saturating_mul(8);
    let rows = batch.length();
    if !(0..=max_rows).contains(&rows) {
        return Err(format!(
            "a record batch claims {rows} rows; at most {max_rows} fit a message of \
             --max-message-bytes {limit}"
        ));
    }
    for node in batch.nodes().iter().flatten() {
        let (length, nulls) = (node.length(), node.null_count());
        if !(0..=max_rows).contains(&length) || nulls < 0 || nulls > length {
            return Err(format!(
                "a record batch has a column of {length} values with {nulls} nulls; at most \
                 {max_rows} values fit a message of --max-message-bytes {limit}"
            ));
        }
    }
    let compressed = batch.compression().is_some();
    let mut decoded: u64 = 0;
    for (i, buffer) in batch.buffers().iter().flatten().enumerate() {
        let (offset, length) = (buffer.offset(), buffer.length());
        let inside = offset >= 0
            && length >= 0
            && offset
                .checked_add(length)
                .is_some_and(|end| end as u64 <= body.len() as u64);
        if !inside {
            return Err(format!(
                "buffer {i} of a record batch (offset {offset}, length {length}) reaches \
                 outside the message body of {} bytes",
                body.len()
            ));
        }
        let (offset, length) = (offset as usize, length as usize);
        let size = if !compressed || length == 0 {
            length as u64
        } else {
            let prefix: [u8; 8] = body
                .get(offset..offset + 8)
                .and_then(|b| b.try_into().ok())
                .ok_or_else(|| {
                    format!(
                        "compressed buffer {i} of a record batch is {length} bytes, too short \
                         for its 8-byte length prefix"
                    )
                })?;
            match i64::from_le_bytes(prefix) {
                NOT_COMPRESSED => (length - 8) as u64,
                n if n >= 0 => n as u64,
                n => {
                    return Err(format!(
                        "compressed buffer {i} of a record batch claims {n} uncompressed bytes"
                    ));
                }
            }
        };
        decoded = decoded.saturating_add(size);
        if decoded > limit as u64 {
            return Err(format!(
                "a record batch would decompress to more than --max-message-bytes ({limit} \
                 bytes; buffer {i} claims {size}): send smaller batches"
            ));
        }
    }
    Ok(())
}

/// `stream`, with every message checked by [`check`] before it is passed on; the first that
/// fails ends the stream with INVALID_ARGUMENT.
pub(crate) fn guarded<S>(
    stream: S,
    limit: usize,
) -> impl Stream<Item = Result<FlightData, Status>> + Send
where
    S: Stream<Item = Result<FlightData, Status>> + Send,
{
    stream.scan(false, move |failed, item| {
        if *failed {
            return std::future::ready(None);
        }
        let item = item.and_then(|data| match check(&data, limit) {
            Ok(()) => Ok(data),
            Err(reason) => Err(Status::invalid_argument(format!(
                "refused an Arrow IPC message before decoding it: {reason}"
            ))),
        });
        *failed = item.is_err();
        std::future::ready(Some(item))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Int64Array, StringArray};
    use arrow::datatypes::{DataType, Field, Schema};
    use arrow::ipc::CompressionType;
    use arrow::ipc::writer::{
        DictionaryTracker, IpcDataGenerator, IpcWriteContext, IpcWriteOptions,
    };
    use std::sync::Arc;

    fn batch_message(compression: Option<CompressionType>) -> FlightData {
        let schema = Arc::new(Schema::new(vec![
            Field::new("a", DataType::Int64, false),
            Field::new("s", DataType::Utf8, true),
        ]));
        let batch = arrow::record_batch::RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Int64Array::from_iter_values(0..1000)),
                Arc::new(StringArray::from_iter_values(
                    (0..1000).map(|i| i.to_string()),
                )),
            ],
        )
        .expect("batch");
        let options = IpcWriteOptions::default()
            .try_with_compression(compression)
            .expect("options");
        let (_, encoded) = IpcDataGenerator::default()
            .encode(
                &batch,
                &mut DictionaryTracker::new(false),
                &options,
                &mut IpcWriteContext::default(),
            )
            .expect("encode");
        encoded.into()
    }

    /// The first compressed buffer's length prefix, which every compressed message has.
    fn first_prefix(data: &FlightData) -> usize {
        let message = root_as_message(&data.data_header).expect("header");
        let batch = message.header_as_record_batch().expect("batch");
        let buffer = batch
            .buffers()
            .expect("buffers")
            .iter()
            .find(|b| b.length() > 0)
            .expect("a non-empty buffer");
        buffer.offset() as usize
    }

    #[test]
    fn honest_messages_pass_and_lying_ones_are_refused() {
        let limit = 1 << 20;
        for codec in [
            None,
            Some(CompressionType::LZ4_FRAME),
            Some(CompressionType::ZSTD),
        ] {
            let honest = batch_message(codec);
            check(&honest, limit).expect("an honest message passes");
            // Too much for a small limit, compressed or not.
            assert!(
                check(&honest, 100)
                    .expect_err("refused")
                    .contains("--max-message-bytes")
            );
        }
        let mut lying = batch_message(Some(CompressionType::LZ4_FRAME));
        let at = first_prefix(&lying);
        let mut body = lying.data_body.to_vec();
        body[at..at + 8].copy_from_slice(&(1i64 << 44).to_le_bytes());
        lying.data_body = body.into();
        let e = check(&lying, limit).expect_err("refused");
        assert!(e.contains("decompress to more than"), "{e}");

        let mut cut = batch_message(None);
        cut.data_body = cut.data_body.slice(..cut.data_body.len() / 2);
        let e = check(&cut, limit).expect_err("refused");
        assert!(e.contains("declares a body of"), "{e}");

        let mut garbage = batch_message(None);
        garbage.data_header = vec![0xff; 40].into();
        assert!(check(&garbage, limit).is_err());
    }
}
