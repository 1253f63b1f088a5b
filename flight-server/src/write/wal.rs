//! The node's write-ahead log: opened and replayed into the table buffers at start (records
//! past each table's flushed position), truncated once every record of a segment is in
//! Parquet, behind every append still in flight.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use skein_storage::{CatalogState, TableMeta};
use skein_wal::{RecoveryMode, SyncMode, Wal, WalConfig};
use tracing::{info, warn};

use super::{Writes, wal_record};
use crate::base::blocking;
use crate::config::{Config, WalSync};
use crate::error::{Error, Result};
use crate::metrics::Metrics;
use crate::table::TableRuntime;
use crate::types::conform;

/// Opens the WAL in `data_dir/wal` and replays every record not yet flushed into `tables`.
pub(crate) fn open_wal(
    config: &Config,
    data_dir: &Path,
    snapshot: &CatalogState,
    tables: &HashMap<u64, Arc<TableRuntime>>,
    metrics: &Metrics,
    catalog_empty: bool,
) -> Result<Wal> {
    let node_id = &config.node_id;
    let flushed = |t: &TableMeta| t.flushed_wal.get(node_id).copied().unwrap_or(0);
    let by_id: HashMap<u64, &TableMeta> = snapshot.tables.values().map(|t| (t.id, t)).collect();
    let wal_config = WalConfig {
        segment_bytes: config.wal.wal_segment_bytes.max(1024 * 1024),
        sync: match config.wal.wal_sync {
            WalSync::Fsync => SyncMode::Fsync,
            WalSync::None => SyncMode::None,
        },
        recovery: if config.wal.wal_skip_corrupt {
            RecoveryMode::SkipCorrupt
        } else {
            RecoveryMode::TornTailOnly
        },
        min_last_seq: snapshot.tables.values().map(flushed).max().unwrap_or(0),
        observer: Some(Arc::new(metrics.clone())),
        ..WalConfig::default()
    };
    // Records at or below every table's flushed position need not even be decoded.
    let after = snapshot.tables.values().map(flushed).min().unwrap_or(0);
    let mut skipped = 0u64;
    let (wal, recovery) = Wal::open(&data_dir.join("wal"), wal_config, after, |seq, payload| {
        let replay = || -> Result<bool> {
            let record = wal_record::decode(payload)?;
            let (Some(meta), Some(rt)) =
                (by_id.get(&record.table_id), tables.get(&record.table_id))
            else {
                if catalog_empty {
                    return Err(Error::InvalidArgument(format!(
                        "the WAL holds rows of table id {} but the shared catalog is empty: it \
                         was probably lost; restore it first (--restore-snapshot latest)",
                        record.table_id
                    )));
                }
                return Ok(false); // the table was dropped since
            };
            if seq <= flushed(meta) {
                return Ok(false); // already in a Parquet file
            }
            let fitted = conform(&rt.name, &record.batch, &rt.schema(), &|c| {
                rt.is_not_null(c)
            })?;
            rt.append(&fitted, seq)?;
            Ok(true)
        };
        match replay() {
            Ok(true) => {
                metrics.wal_replayed_records.inc();
                Ok(())
            }
            Ok(false) => {
                skipped += 1;
                Ok(())
            }
            Err(e) => Err(skein_wal::Error::Replay {
                seq,
                reason: e.to_string(),
            }),
        }
    })?;
    info!(
        replayed = metrics.wal_replayed_records.get(),
        skipped_flushed_or_dropped = skipped,
        last_seq = recovery.last_seq,
        torn_bytes = recovery.torn_bytes,
        corrupt_ranges_skipped = recovery.skipped.len(),
        "WAL recovered"
    );
    for (segment, from, to) in &recovery.skipped {
        warn!(segment = %segment.display(), from, to, "corrupt WAL bytes were skipped; rows in them are lost");
    }
    Ok(wal)
}

impl Writes {
    /// Deletes WAL segments whose records are all in Parquet (or belong to dropped tables).
    pub(crate) async fn truncate_wal(&self) -> Result<()> {
        if self.needs_replay() {
            return Ok(());
        }
        // Order matters: a record gets a sequence number above `last_seq` read here, or is in
        // flight (read next), or is in a buffer (read last) or already flushed.
        let mut upto = self.wal.last_seq();
        if let Some(floor) = self.in_flight.min_floor() {
            upto = upto.min(floor);
        }
        for rt in self.base.tables.read().values() {
            if let Some(min) = rt.level().min_seq {
                upto = upto.min(min - 1);
            }
        }
        let wal = Arc::clone(&self.wal);
        let deleted = blocking(move || Ok(wal.truncate(upto)?)).await?;
        if deleted > 0 {
            tracing::debug!(upto, deleted, "WAL truncated");
        }
        self.base
            .metrics
            .wal_segments
            .set(self.wal.segment_count() as i64);
        Ok(())
    }
}
