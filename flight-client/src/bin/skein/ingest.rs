//! `skein ingest`: files are read on a blocking thread and streamed to the node over parallel
//! `DoPut`s, with a progress bar on a terminal (plain lines on standard error otherwise).

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::bail;
use indicatif::{HumanBytes, ProgressBar, ProgressDrawTarget, ProgressStyle};
use skein_client::ingest::{IngestMode, IngestOptions, IngestProgress, ingest};
use skein_client::source::{self, FileFormat, ReadOptions, is_stdin};
use skein_client::types::parse_column_override;
use skein_client::{Client, Error};

use crate::args::{IngestArgs, InputFormat, Mode};

/// How often the plain progress line is printed when standard error is not a terminal.
const PLAIN_INTERVAL: Duration = Duration::from_secs(2);
/// How often the progress bar is updated.
const BAR_INTERVAL: Duration = Duration::from_millis(200);

fn read_options(args: &IngestArgs) -> anyhow::Result<ReadOptions> {
    let overrides = args
        .columns
        .iter()
        .map(|c| parse_column_override(c))
        .collect::<Result<Vec<_>, _>>()?;
    let delimiter = match args.delimiter.as_deref() {
        None => None,
        Some("\\t" | "tab") => Some(b'\t'),
        Some(d) if d.len() == 1 => Some(d.as_bytes()[0]),
        Some(d) => bail!("--delimiter must be one character (or \\t), not {d:?}"),
    };
    if args.batch_rows == 0 || args.batches_per_put == 0 || args.concurrency == 0 {
        bail!("--batch-rows, --batches-per-put and --concurrency must be at least 1");
    }
    Ok(ReadOptions {
        format: args.format.map(|f| match f {
            InputFormat::Parquet => FileFormat::Parquet,
            InputFormat::Csv => FileFormat::Csv,
            InputFormat::Json => FileFormat::Json,
            InputFormat::Arrow => FileFormat::Arrow,
        }),
        batch_rows: args.batch_rows,
        infer_rows: args.infer_rows.max(1),
        delimiter,
        has_header: !args.no_header,
        overrides,
    })
}

/// Checks the inputs before anything is sent: files exist, formats are known.
fn check_inputs(files: &[PathBuf], options: &ReadOptions) -> anyhow::Result<()> {
    if files.iter().filter(|f| is_stdin(f)).count() > 1 {
        bail!("standard input (-) can be read only once");
    }
    for file in files {
        if is_stdin(file) {
            continue;
        }
        if let Err(source) = std::fs::metadata(file) {
            return Err(Error::Io {
                path: file.clone(),
                source,
            }
            .into());
        }
        if options.format.is_none() && FileFormat::from_path(file).is_none() {
            bail!(
                "cannot tell the format of {} from its extension; give --format \
                 (parquet, csv, json or arrow)",
                file.display()
            );
        }
    }
    Ok(())
}

/// Reports progress until `done` is notified.
struct Reporter {
    stop: Arc<tokio::sync::Notify>,
    task: tokio::task::JoinHandle<()>,
}

fn rate(count: u64, elapsed: Duration) -> f64 {
    count as f64 / elapsed.as_secs_f64().max(1e-3)
}

/// `1234567` as `1.23M`, `12345` as `12.3k`.
fn compact(n: u64) -> String {
    let n = n as f64;
    match n {
        n if n >= 1e9 => format!("{:.2}G", n / 1e9),
        n if n >= 1e6 => format!("{:.2}M", n / 1e6),
        n if n >= 1e4 => format!("{:.1}k", n / 1e3),
        n => format!("{n:.0}"),
    }
}

fn start_reporter(
    quiet: bool,
    total_bytes: Option<u64>,
    read: Arc<AtomicU64>,
    progress: Arc<IngestProgress>,
) -> Option<Reporter> {
    if quiet {
        return None;
    }
    let stop = Arc::new(tokio::sync::Notify::new());
    let started = Instant::now();
    let terminal = std::io::stderr().is_terminal();
    let bar = terminal.then(|| {
        let bar = match total_bytes {
            Some(total) => ProgressBar::new(total),
            None => ProgressBar::no_length(),
        };
        // Short enough for 80 columns; the bar takes what is left.
        let template = if total_bytes.is_some() {
            "{spinner} {msg} {bytes_per_sec} [{wide_bar}] {percent}%"
        } else {
            "{spinner} {msg} {bytes} read, {bytes_per_sec}"
        };
        if let Ok(style) = ProgressStyle::with_template(template) {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_draw_target(ProgressDrawTarget::stderr());
        bar
    });
    let notified = Arc::clone(&stop);
    let task = tokio::spawn(async move {
        let interval = if bar.is_some() {
            BAR_INTERVAL
        } else {
            PLAIN_INTERVAL
        };
        loop {
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                _ = notified.notified() => break,
            }
            let elapsed = started.elapsed();
            let bytes = read.load(Ordering::Relaxed);
            let sent = progress.rows_sent.load(Ordering::Relaxed);
            let acked = progress.rows_acknowledged.load(Ordering::Relaxed);
            match &bar {
                Some(bar) => {
                    bar.set_position(bytes);
                    bar.set_message(format!(
                        "{} rows ({} rows/s), {} acked,",
                        compact(sent),
                        compact(rate(sent, elapsed) as u64),
                        compact(acked)
                    ));
                }
                None => eprintln!(
                    "ingest: {sent} rows sent, {acked} acknowledged, {} read \
                     ({:.0} rows/s, {}/s)",
                    HumanBytes(bytes),
                    rate(sent, elapsed),
                    HumanBytes(rate(bytes, elapsed) as u64)
                ),
            }
        }
        if let Some(bar) = bar {
            bar.finish_and_clear();
        }
    });
    Some(Reporter { stop, task })
}

/// Runs `skein ingest`; prints the rows acknowledged.
pub(crate) async fn run(client: &Client, args: &IngestArgs) -> anyhow::Result<()> {
    let options = read_options(args)?;
    check_inputs(&args.files, &options)?;
    let total_bytes: Option<u64> = args.files.iter().map(|f| source::input_size(f)).sum();
    let ingest_options = IngestOptions {
        table: args.table.clone(),
        mode: match args.mode {
            Mode::Create => IngestMode::Create,
            Mode::Append => IngestMode::Append,
            Mode::Replace => IngestMode::Replace,
            Mode::CreateAppend => IngestMode::CreateAppend,
        },
        batches_per_put: args.batches_per_put,
        concurrency: args.concurrency,
    };
    let read = Arc::new(AtomicU64::new(0));
    let progress = Arc::new(IngestProgress::default());
    let started = Instant::now();
    let batches = source::spawn_reader(
        args.files.clone(),
        options,
        args.concurrency * 2,
        Arc::clone(&read),
    );
    let reporter = start_reporter(args.quiet, total_bytes, read, Arc::clone(&progress));
    let result = ingest(client, &ingest_options, batches, progress).await;
    if let Some(r) = reporter {
        r.stop.notify_one();
        let _ = r.task.await;
    }
    let rows = result?;
    let elapsed = started.elapsed();
    println!(
        "{rows} rows acknowledged into {} ({:.2} s, {:.0} rows/s)",
        args.table,
        elapsed.as_secs_f64(),
        rate(rows, elapsed)
    );
    Ok(())
}
