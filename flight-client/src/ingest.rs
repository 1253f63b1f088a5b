//! Bulk ingest: record batches from a channel go to a table over one or more parallel `DoPut`
//! streams (Flight SQL `CommandStatementIngest`), each carrying a bounded number of batches, so
//! the node acknowledges rows as the ingest goes and a failure says how many were acknowledged.
//!
//! The first batch goes alone in the requested mode (so `create` and `replace` happen once);
//! every later `DoPut` appends. Batches are pulled from the channel as streams have room for
//! them, so no more than the channel's capacity plus the streams' in-flight batches are held.

use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use arrow_flight::sql::{TableDefinitionOptions, TableExistsOption, TableNotExistOption};
use futures::StreamExt;
use tokio::sync::{Mutex, mpsc};

use crate::client::Client;
use crate::error::{Error, Result};

/// What to do when the table does or does not exist.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IngestMode {
    /// Create the table; fail if it exists.
    Create,
    /// Append to the table; fail if it does not exist.
    Append,
    /// Replace the table's rows (creating it if needed).
    Replace,
    /// Create the table if needed, then append.
    #[default]
    CreateAppend,
}

impl IngestMode {
    /// The Flight SQL options that ask for this mode.
    pub fn table_definition_options(self) -> TableDefinitionOptions {
        let (if_not_exist, if_exists) = match self {
            Self::Create => (TableNotExistOption::Create, TableExistsOption::Fail),
            Self::Append => (TableNotExistOption::Fail, TableExistsOption::Append),
            Self::Replace => (TableNotExistOption::Create, TableExistsOption::Replace),
            Self::CreateAppend => (TableNotExistOption::Create, TableExistsOption::Append),
        };
        TableDefinitionOptions {
            if_not_exist: if_not_exist.into(),
            if_exists: if_exists.into(),
        }
    }
}

impl FromStr for IngestMode {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().replace('_', "-").as_str() {
            "create" => Ok(Self::Create),
            "append" => Ok(Self::Append),
            "replace" => Ok(Self::Replace),
            "create-append" => Ok(Self::CreateAppend),
            _ => Err(Error::InvalidArgument(format!(
                "unknown ingest mode {s:?}: use create, append, replace or create-append"
            ))),
        }
    }
}

/// How an ingest is split into `DoPut` streams.
#[derive(Debug, Clone)]
pub struct IngestOptions {
    /// Target table (`table` or `schema.table`).
    pub table: String,
    /// Create/append/replace behaviour.
    pub mode: IngestMode,
    /// Most batches in one `DoPut`; its rows are acknowledged when it ends.
    pub batches_per_put: usize,
    /// Parallel `DoPut` streams.
    pub concurrency: usize,
}

impl IngestOptions {
    /// One stream of up to 16 batches per `DoPut`, creating the table if needed.
    pub fn new(table: impl Into<String>) -> Self {
        Self {
            table: table.into(),
            mode: IngestMode::CreateAppend,
            batches_per_put: 16,
            concurrency: 1,
        }
    }
}

/// Counters an ingest updates as it goes (read them from another task for progress).
#[derive(Debug, Default)]
pub struct IngestProgress {
    /// Rows handed to a `DoPut` stream.
    pub rows_sent: AtomicU64,
    /// Rows the node acknowledged (durably written).
    pub rows_acknowledged: AtomicU64,
    /// Bytes of Arrow data handed to a `DoPut` stream.
    pub bytes_sent: AtomicU64,
}

/// Batches shared by the `DoPut` streams. A stream takes batches of one schema; a batch of
/// another schema is kept for the next stream.
#[derive(Debug)]
struct Feed {
    state: Mutex<FeedState>,
    /// Set when a stream failed: the others stop taking batches.
    stopped: AtomicBool,
}

#[derive(Debug)]
struct FeedState {
    rx: mpsc::Receiver<Result<RecordBatch>>,
    pending: Option<RecordBatch>,
    /// The first error the input produced.
    error: Option<Error>,
}

impl Feed {
    /// The next batch, if it has `schema` (any schema when `None`).
    async fn next(&self, schema: Option<&SchemaRef>) -> Option<RecordBatch> {
        if self.stopped.load(Ordering::Acquire) {
            return None;
        }
        let mut state = self.state.lock().await;
        let batch = match state.pending.take() {
            Some(b) => b,
            None => match state.rx.recv().await {
                Some(Ok(b)) => b,
                Some(Err(e)) => {
                    state.error.get_or_insert(e);
                    self.stopped.store(true, Ordering::Release);
                    return None;
                }
                None => return None,
            },
        };
        match schema {
            Some(s) if batch.schema() != *s => {
                state.pending = Some(batch);
                None
            }
            _ => Some(batch),
        }
    }

    async fn take_error(&self) -> Option<Error> {
        self.state.lock().await.error.take()
    }
}

/// Sends every batch from `batches` to the table. Returns the rows acknowledged; on failure,
/// [`Error::Ingest`] with the rows acknowledged before it.
pub async fn ingest(
    client: &Client,
    options: &IngestOptions,
    batches: mpsc::Receiver<Result<RecordBatch>>,
    progress: Arc<IngestProgress>,
) -> Result<u64> {
    let feed = Arc::new(Feed {
        state: Mutex::new(FeedState {
            rx: batches,
            pending: None,
            error: None,
        }),
        stopped: AtomicBool::new(false),
    });
    let failed = |source: Error, progress: &IngestProgress| Error::Ingest {
        table: options.table.clone(),
        acknowledged: progress.rows_acknowledged.load(Ordering::Acquire),
        source: Box::new(source),
    };

    // The first batch alone, in the requested mode: the table exists (or was replaced) after it.
    let Some(first) = feed.next(None).await else {
        return match feed.take_error().await {
            Some(e) => Err(failed(e, &progress)),
            None => Ok(0),
        };
    };
    // Whatever the mode, the table now exists with the first batch in it: the rest appends.
    let rest_mode = IngestMode::Append;
    let one = PutTarget {
        table: options.table.clone(),
        batches_per_put: 1,
    };
    if let Err(e) = put(client.clone(), &one, options.mode, &feed, &progress, first).await {
        return Err(failed(e, &progress));
    }

    let rest = PutTarget {
        table: options.table.clone(),
        batches_per_put: options.batches_per_put.max(1),
    };
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..options.concurrency.max(1) {
        let (client, rest, feed, progress) = (
            client.clone(),
            rest.clone(),
            Arc::clone(&feed),
            Arc::clone(&progress),
        );
        workers.spawn(async move {
            while let Some(first) = feed.next(None).await {
                if let Err(e) = put(client.clone(), &rest, rest_mode, &feed, &progress, first).await
                {
                    feed.stopped.store(true, Ordering::Release);
                    return Err(e);
                }
            }
            Ok(())
        });
    }
    let mut first_error = None;
    while let Some(joined) = workers.join_next().await {
        let result = joined.unwrap_or_else(|e| {
            Err(Error::Protocol {
                operation: format!("ingest into {} failed", options.table),
                message: format!("an ingest task failed: {e}"),
            })
        });
        if let Err(e) = result {
            first_error.get_or_insert(e);
        }
    }
    // A server error comes first; otherwise an input error ends the ingest as failed.
    if let Some(e) = first_error.or(feed.take_error().await) {
        return Err(failed(e, &progress));
    }
    Ok(progress.rows_acknowledged.load(Ordering::Acquire))
}

/// Where one `DoPut` goes and how many batches it may carry.
#[derive(Debug, Clone)]
struct PutTarget {
    table: String,
    batches_per_put: usize,
}

/// One `DoPut`: `first` and up to `batches_per_put - 1` more batches of its schema.
async fn put(
    mut client: Client,
    options: &PutTarget,
    mode: IngestMode,
    feed: &Arc<Feed>,
    progress: &Arc<IngestProgress>,
    first: RecordBatch,
) -> Result<()> {
    let schema = first.schema();
    let remaining = options.batches_per_put.saturating_sub(1);
    let count = |batch: &RecordBatch, progress: &IngestProgress| {
        progress
            .rows_sent
            .fetch_add(batch.num_rows() as u64, Ordering::Relaxed);
        progress
            .bytes_sent
            .fetch_add(batch.get_array_memory_size() as u64, Ordering::Relaxed);
    };
    count(&first, progress);
    let state = (Arc::clone(feed), Arc::clone(progress), schema, remaining);
    let rest = futures::stream::unfold(
        state,
        move |(feed, progress, schema, remaining)| async move {
            if remaining == 0 {
                return None;
            }
            let batch = feed.next(Some(&schema)).await?;
            count(&batch, &progress);
            Some((Ok(batch), (feed, progress, schema, remaining - 1)))
        },
    );
    let batches = futures::stream::once(async move { Ok(first) }).chain(rest);
    let rows = client.ingest_put(&options.table, mode, batches).await?;
    progress.rows_acknowledged.fetch_add(rows, Ordering::AcqRel);
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn modes_parse_and_map() {
        assert_eq!(
            "create-append".parse::<IngestMode>().unwrap(),
            IngestMode::CreateAppend
        );
        assert_eq!(
            "create_append".parse::<IngestMode>().unwrap(),
            IngestMode::CreateAppend
        );
        assert!("upsert".parse::<IngestMode>().is_err());
        let o = IngestMode::Replace.table_definition_options();
        assert_eq!(o.if_exists(), TableExistsOption::Replace);
        assert_eq!(o.if_not_exist(), TableNotExistOption::Create);
        let o = IngestMode::Append.table_definition_options();
        assert_eq!(o.if_not_exist(), TableNotExistOption::Fail);
    }

    fn batch(n: i64) -> RecordBatch {
        let a = arrow::array::Int64Array::from_iter_values(0..n);
        RecordBatch::try_from_iter([("x", Arc::new(a) as _)]).unwrap()
    }

    #[tokio::test]
    async fn feed_splits_at_schema_changes() {
        let (tx, rx) = mpsc::channel(8);
        let other = {
            let a = arrow::array::StringArray::from(vec!["a"]);
            RecordBatch::try_from_iter([("y", Arc::new(a) as _)]).unwrap()
        };
        tx.send(Ok(batch(2))).await.unwrap();
        tx.send(Ok(batch(3))).await.unwrap();
        tx.send(Ok(other.clone())).await.unwrap();
        drop(tx);
        let feed = Feed {
            state: Mutex::new(FeedState {
                rx,
                pending: None,
                error: None,
            }),
            stopped: AtomicBool::new(false),
        };
        let first = feed.next(None).await.unwrap();
        let schema = first.schema();
        assert_eq!(feed.next(Some(&schema)).await.unwrap().num_rows(), 3);
        assert!(feed.next(Some(&schema)).await.is_none());
        assert_eq!(feed.next(None).await.unwrap(), other);
        assert!(feed.next(None).await.is_none());
    }
}
