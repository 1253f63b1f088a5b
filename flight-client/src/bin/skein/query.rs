//! Running one statement: plan it, stream its batches into the output, time it, and on Ctrl-C
//! ask the server to cancel it (`CancelFlightInfo`).

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use anyhow::bail;
use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use arrow_flight::CancelStatus;
use futures::StreamExt;
use skein_client::Client;

use crate::args::OutputArgs;
use crate::output::{Format, is_broken_pipe, sink};

/// How long to wait for the server to confirm a cancellation before giving up on it.
const CANCEL_DEADLINE: Duration = Duration::from_secs(5);

/// Where and how results are written.
pub(crate) struct Output {
    pub(crate) format: Format,
    pub(crate) timing: bool,
    dest: Box<dyn Write + Send>,
}

impl Output {
    /// Opens the destination (`-o FILE` or standard output). Binary formats are refused on a
    /// terminal.
    pub(crate) fn open(args: &OutputArgs) -> anyhow::Result<Self> {
        let dest: Box<dyn Write + Send> = match &args.output {
            Some(path) => {
                let file = std::fs::File::create(path).map_err(|e| {
                    anyhow::anyhow!("cannot create output file {}: {e}", path.display())
                })?;
                Box::new(std::io::BufWriter::with_capacity(1 << 20, file))
            }
            None => {
                if args.format.is_binary() && std::io::stdout().is_terminal() {
                    bail!(
                        "refusing to write {:?} output to a terminal; use -o FILE or a pipe",
                        args.format
                    );
                }
                Box::new(std::io::BufWriter::with_capacity(
                    1 << 16,
                    std::io::stdout(),
                ))
            }
        };
        Ok(Self {
            format: args.format,
            timing: args.timing,
            dest,
        })
    }

    /// Writes a small, already collected result (catalog listings and the like).
    pub(crate) fn print(&mut self, batch: &RecordBatch) -> anyhow::Result<()> {
        let mut s = sink(self.format, self.dest.as_mut());
        s.write(batch)?;
        s.finish(Some(&batch.schema()))
    }

    /// Writes a line of text (action results).
    pub(crate) fn line(&mut self, text: &str) -> anyhow::Result<()> {
        writeln!(self.dest, "{text}")?;
        Ok(self.dest.flush()?)
    }
}

/// How a statement ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Every result was written.
    Done,
    /// Ctrl-C: the query was stopped; `confirmed` when the server said it cancelled it.
    Cancelled {
        /// The server answered `CancelFlightInfo` with `CANCELLED`.
        confirmed: bool,
    },
    /// The reader of standard output went away (`skein … | head`).
    Closed,
}

impl Outcome {
    /// Tells the user a query was stopped.
    pub(crate) fn report(self) {
        match self {
            Self::Cancelled { confirmed: true } => eprintln!("query cancelled"),
            Self::Cancelled { confirmed: false } => {
                eprintln!("query interrupted (the server did not confirm a cancellation)");
            }
            Self::Done | Self::Closed => {}
        }
    }
}

/// Runs `sql`, writing its results to `output`.
pub(crate) async fn run(
    client: &mut Client,
    sql: &str,
    output: &mut Output,
) -> anyhow::Result<Outcome> {
    let started = Instant::now();
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    let info = tokio::select! {
        info = client.plan(sql) => info?,
        _ = &mut ctrl_c => return Ok(Outcome::Cancelled { confirmed: false }),
    };
    let mut stream = client.fetch(&info);
    let announced: Option<SchemaRef> = stream.schema().cloned();
    let mut out = sink(output.format, output.dest.as_mut());
    let outcome = loop {
        tokio::select! {
            next = stream.next() => match next {
                Some(Ok(batch)) => {
                    if let Err(e) = out.write(&batch) {
                        if is_broken_pipe(&e) {
                            break Outcome::Closed;
                        }
                        return Err(e);
                    }
                }
                Some(Err(e)) => return Err(e.into()),
                None => break Outcome::Done,
            },
            _ = &mut ctrl_c => break Outcome::Cancelled { confirmed: false },
        }
    };
    if outcome != Outcome::Done {
        drop(out);
        // Cancel while the stream is still open (closing it first could end the query on the
        // server before the cancellation arrives, and then there is nothing left to confirm).
        // Best effort: the query stops on the server; the user gets the prompt back either way.
        let status = tokio::time::timeout(CANCEL_DEADLINE, client.cancel(&info)).await;
        let confirmed = matches!(status, Ok(Ok(CancelStatus::Cancelled)));
        drop(stream);
        return Ok(match outcome {
            Outcome::Cancelled { .. } => Outcome::Cancelled { confirmed },
            other => other,
        });
    }
    match out.finish(announced.as_ref()) {
        Ok(()) => {}
        Err(e) if is_broken_pipe(&e) => return Ok(Outcome::Closed),
        Err(e) => return Err(e),
    }
    if output.timing {
        eprintln!("Time: {:.3} ms", started.elapsed().as_secs_f64() * 1000.0);
    }
    Ok(Outcome::Done)
}
