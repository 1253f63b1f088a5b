//! The log: recovery on open, appends with group commit on a dedicated writer thread, segment
//! roll, and truncation of segments whose records are all flushed.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tracing::{error, warn};

use crate::error::{Error, Result, io};
use crate::frame::{self, MAX_PAYLOAD_BYTES};
use crate::segment::{self, End, SEGMENT_HEADER_BYTES};

/// Whether an append waits for the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncMode {
    /// `fdatasync` after every group of records before acknowledging them (durable).
    Fsync,
    /// Acknowledge once written to the OS: a power loss or kernel crash can lose acknowledged
    /// records. For benchmarks and scratch data only.
    None,
}

/// What to do with damage found when the log is opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecoveryMode {
    /// Truncate a torn tail (with a warning); refuse to open on corruption mid-log.
    TornTailOnly,
    /// Also skip corrupt bytes in the middle of the log, logging exactly what was skipped.
    SkipCorrupt,
}

/// Told about every group the writer puts on disk (for metrics).
pub trait Observer: Send + Sync + std::fmt::Debug {
    /// A group of `records` records, `bytes` bytes framed, was written; `sync` is how long its
    /// sync took (`None` without syncing).
    fn group_written(&self, records: usize, bytes: usize, sync: Option<Duration>);
}

/// Settings of the log.
#[derive(Debug, Clone)]
pub struct WalConfig {
    /// Roll to a new segment once the current one reaches this size.
    pub segment_bytes: u64,
    /// Durability of appends.
    pub sync: SyncMode,
    /// Handling of damage at open.
    pub recovery: RecoveryMode,
    /// Most bytes gathered into one write and sync.
    pub group_bytes: usize,
    /// How long the writer waits for more records once it has one, to share a sync.
    pub group_wait: Duration,
    /// Appends that may wait for the writer at once (the bound of its queue).
    pub queue_depth: usize,
    /// New records get sequence numbers above this, even if the log is empty: the highest
    /// sequence number recorded anywhere else (a flushed position), so numbers never repeat.
    pub min_last_seq: u64,
    /// Told about every group written.
    pub observer: Option<Arc<dyn Observer>>,
}

impl Default for WalConfig {
    fn default() -> Self {
        Self {
            segment_bytes: 64 * 1024 * 1024,
            sync: SyncMode::Fsync,
            recovery: RecoveryMode::TornTailOnly,
            group_bytes: 8 * 1024 * 1024,
            group_wait: Duration::from_micros(200),
            queue_depth: 1024,
            min_last_seq: 0,
            observer: None,
        }
    }
}

/// What recovery found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Recovery {
    /// Records handed to the replay callback.
    pub replayed: u64,
    /// The last sequence number in the log (0 for an empty log).
    pub last_seq: u64,
    /// Bytes cut from a torn tail.
    pub torn_bytes: u64,
    /// Byte ranges skipped as corrupt (`SkipCorrupt` only): segment, start, end.
    pub skipped: Vec<(PathBuf, u64, u64)>,
}

type Reply = Box<dyn FnOnce(Result<u64>) + Send>;

struct Request {
    payload: Vec<u8>,
    reply: Reply,
}

/// State shared by the handle and the writer thread.
struct Shared {
    dir: PathBuf,
    /// Segments by first sequence number; the last one is being written.
    segments: Mutex<Vec<(u64, PathBuf)>>,
    /// Set when a sync failed: the reason.
    poisoned: Mutex<Option<String>>,
    /// The last sequence number given to a record (written or being written).
    last_assigned: AtomicU64,
}

/// A segmented write-ahead log.
pub struct Wal {
    shared: Arc<Shared>,
    sender: Option<SyncSender<Request>>,
    writer: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Wal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Wal")
            .field("dir", &self.shared.dir)
            .finish()
    }
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(io(dir))
}

fn create_segment(dir: &Path, first_seq: u64) -> Result<(File, PathBuf)> {
    let path = dir.join(segment::file_name(first_seq));
    let mut file = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(&path)
        .map_err(io(&path))?;
    file.write_all(&segment::header(first_seq))
        .map_err(io(&path))?;
    file.sync_all().map_err(io(&path))?;
    sync_dir(dir)?;
    Ok((file, path))
}

impl Wal {
    /// Opens the log in `dir`, replaying every record with a sequence number above `after`
    /// through `replay`, in order, once each. A torn tail is truncated; corruption in the middle
    /// of the log fails the open unless `config.recovery` says to skip it.
    pub fn open(
        dir: &Path,
        config: WalConfig,
        after: u64,
        mut replay: impl FnMut(u64, &[u8]) -> Result<()>,
    ) -> Result<(Self, Recovery)> {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let segments = segment::list(dir)?;
        let mut recovery = Recovery::default();
        let mut segments = segments;
        if let Some((_, last)) = segments.last() {
            let len = std::fs::metadata(last).map_err(io(last))?.len();
            if len < SEGMENT_HEADER_BYTES as u64 {
                // Created by a roll that crashed before its header was written: nothing in it.
                warn!(segment = %last.display(), bytes = len, "removing a WAL segment whose header was never completed");
                std::fs::remove_file(last).map_err(io(last))?;
                segments.pop();
            }
        }
        let count = segments.len();
        for (i, (_, path)) in segments.iter().enumerate() {
            let buf = std::fs::read(path).map_err(io(path))?;
            let first_seq = segment::check_header(path, &buf)?;
            // An empty segment still says where numbering stood.
            recovery.last_seq = recovery.last_seq.max(first_seq.saturating_sub(1));
            let mut start = SEGMENT_HEADER_BYTES;
            loop {
                let (found, end) = segment::scan(&buf, start, recovery.last_seq);
                for f in &found {
                    if f.seq > after {
                        replay(f.seq, &buf[f.payload.clone()])?;
                        recovery.replayed += 1;
                    }
                    recovery.last_seq = f.seq;
                }
                match end {
                    End::Clean => break,
                    End::Torn { offset } => {
                        let cut = (buf.len() - offset) as u64;
                        if i + 1 < count {
                            // A later segment exists, so this was not the end of the log.
                            if config.recovery == RecoveryMode::SkipCorrupt {
                                warn!(segment = %path.display(), offset, bytes = cut, "skipping damaged end of a WAL segment");
                                recovery.skipped.push((
                                    path.clone(),
                                    offset as u64,
                                    buf.len() as u64,
                                ));
                                break;
                            }
                            return Err(Error::CorruptRecord {
                                segment: path.clone(),
                                offset: offset as u64,
                            });
                        }
                        warn!(segment = %path.display(), offset, bytes = cut, "truncating torn WAL tail");
                        let file = OpenOptions::new()
                            .write(true)
                            .open(path)
                            .map_err(io(path))?;
                        file.set_len(offset as u64).map_err(io(path))?;
                        file.sync_all().map_err(io(path))?;
                        recovery.torn_bytes += cut;
                        break;
                    }
                    End::Corrupt { offset, resume } => {
                        if config.recovery != RecoveryMode::SkipCorrupt {
                            return Err(Error::CorruptRecord {
                                segment: path.clone(),
                                offset: offset as u64,
                            });
                        }
                        warn!(segment = %path.display(), offset, resume, "skipping corrupt WAL bytes");
                        recovery
                            .skipped
                            .push((path.clone(), offset as u64, resume as u64));
                        start = resume;
                    }
                }
            }
        }
        let next = recovery.last_seq.max(config.min_last_seq) + 1;
        let (file, path) = create_segment(dir, next)?;
        // An empty last segment has this very name and was just recreated: list it once, or
        // truncating its "older" twin would delete the file being written.
        let mut all = segments;
        all.retain(|(first, _)| *first != next);
        all.push((next, path.clone()));
        let shared = Arc::new(Shared {
            dir: dir.to_path_buf(),
            segments: Mutex::new(all),
            poisoned: Mutex::new(None),
            last_assigned: AtomicU64::new(next - 1),
        });
        let (sender, receiver) = sync_channel(config.queue_depth.max(1));
        let writer_shared = Arc::clone(&shared);
        let writer = std::thread::Builder::new()
            .name("skein-wal".into())
            .spawn(move || {
                Writer {
                    shared: writer_shared,
                    config,
                    file,
                    path,
                    size: SEGMENT_HEADER_BYTES as u64,
                    next,
                }
                .run(receiver)
            })
            .map_err(io(dir))?;
        Ok((
            Self {
                shared,
                sender: Some(sender),
                writer: Some(writer),
            },
            recovery,
        ))
    }

    /// Appends a record; `reply` is called with its sequence number once it is durable (per the
    /// sync mode), or with the error that stopped it.
    pub fn append_with(&self, payload: Vec<u8>, reply: impl FnOnce(Result<u64>) + Send + 'static) {
        if payload.len() > MAX_PAYLOAD_BYTES {
            return reply(Err(Error::TooLarge(payload.len())));
        }
        if let Some(reason) = self.poison_reason() {
            return reply(Err(Error::Poisoned(reason)));
        }
        let Some(sender) = &self.sender else {
            return reply(Err(Error::Closed));
        };
        // A full queue blocks the caller: the bound keeps memory in check.
        let request = Request {
            payload,
            reply: Box::new(reply),
        };
        if let Err(e) = sender.send(request) {
            (e.0.reply)(Err(Error::Closed));
        }
    }

    /// Appends a record and blocks until it is durable; returns its sequence number.
    pub fn append(&self, payload: Vec<u8>) -> Result<u64> {
        let (tx, rx) = std::sync::mpsc::channel();
        self.append_with(payload, move |r| {
            let _ = tx.send(r);
        });
        rx.recv().unwrap_or(Err(Error::Closed))
    }

    /// The last sequence number given to a record. A record appended after this call returns
    /// gets a higher one.
    pub fn last_seq(&self) -> u64 {
        self.shared.last_assigned.load(Ordering::SeqCst)
    }

    /// Why the log stopped accepting writes, if it did.
    pub fn poison_reason(&self) -> Option<String> {
        self.shared.poisoned.lock().ok().and_then(|p| p.clone())
    }

    /// Deletes segments all of whose records have sequence numbers at or below `upto` (the
    /// segment being written is kept). Returns how many were deleted.
    pub fn truncate(&self, upto: u64) -> Result<usize> {
        let mut segments = self.shared.segments.lock().map_err(|_| Error::Closed)?;
        let mut deleted = 0;
        // A segment is obsolete when the next one starts at or before upto + 1.
        while segments.len() > 1 && segments[1].0 <= upto + 1 {
            let (_, path) = segments.remove(0);
            std::fs::remove_file(&path).map_err(io(&path))?;
            deleted += 1;
        }
        if deleted > 0 {
            sync_dir(&self.shared.dir)?;
        }
        Ok(deleted)
    }

    /// Number of segment files.
    pub fn segment_count(&self) -> usize {
        self.shared.segments.lock().map(|s| s.len()).unwrap_or(0)
    }
}

impl Drop for Wal {
    fn drop(&mut self) {
        self.sender.take();
        if let Some(w) = self.writer.take() {
            let _ = w.join();
        }
    }
}

/// The writer thread's state.
struct Writer {
    shared: Arc<Shared>,
    config: WalConfig,
    file: File,
    path: PathBuf,
    size: u64,
    next: u64,
}

impl Writer {
    fn run(mut self, receiver: Receiver<Request>) {
        let mut buf = Vec::new();
        while let Ok(first) = receiver.recv() {
            let mut group = vec![first];
            let mut bytes = group[0].payload.len();
            let deadline = Instant::now() + self.config.group_wait;
            while bytes < self.config.group_bytes {
                let next = match receiver.try_recv() {
                    Ok(r) => Some(r),
                    Err(_) => {
                        let left = deadline.saturating_duration_since(Instant::now());
                        if left.is_zero() {
                            None
                        } else {
                            receiver.recv_timeout(left).ok()
                        }
                    }
                };
                match next {
                    Some(r) => {
                        bytes += r.payload.len();
                        group.push(r);
                    }
                    None => break,
                }
            }
            let first_seq = self.next;
            let outcome = self.write_group(&group, &mut buf);
            match outcome {
                Ok(()) => {
                    for (i, r) in group.into_iter().enumerate() {
                        (r.reply)(Ok(first_seq + i as u64));
                    }
                }
                Err(e) => {
                    let reason = e.to_string();
                    error!(error = %reason, "WAL write failed; refusing further writes");
                    if let Ok(mut p) = self.shared.poisoned.lock() {
                        *p = Some(reason.clone());
                    }
                    for r in group {
                        (r.reply)(Err(Error::Poisoned(reason.clone())));
                    }
                    // Drain and refuse whatever is queued; never retry a failed sync.
                    while let Ok(r) = receiver.recv() {
                        (r.reply)(Err(Error::Poisoned(reason.clone())));
                    }
                    return;
                }
            }
        }
    }

    fn write_group(&mut self, group: &[Request], buf: &mut Vec<u8>) -> Result<()> {
        if self.size > SEGMENT_HEADER_BYTES as u64 && self.size >= self.config.segment_bytes {
            self.roll()?;
        }
        buf.clear();
        for r in group {
            frame::encode(self.next, &r.payload, buf);
            self.next += 1;
        }
        self.shared
            .last_assigned
            .store(self.next - 1, Ordering::SeqCst);
        self.file.write_all(buf).map_err(io(&self.path))?;
        self.size += buf.len() as u64;
        let sync = if self.config.sync == SyncMode::Fsync {
            let started = Instant::now();
            self.file.sync_data().map_err(io(&self.path))?;
            Some(started.elapsed())
        } else {
            None
        };
        if let Some(o) = &self.config.observer {
            o.group_written(group.len(), buf.len(), sync);
        }
        Ok(())
    }

    fn roll(&mut self) -> Result<()> {
        self.file.sync_all().map_err(io(&self.path))?;
        let (file, path) = create_segment(&self.shared.dir, self.next)?;
        self.shared
            .segments
            .lock()
            .map_err(|_| Error::Closed)?
            .push((self.next, path.clone()));
        self.file = file;
        self.path = path;
        self.size = SEGMENT_HEADER_BYTES as u64;
        Ok(())
    }
}
