//! The SQL shell: statements end with `;` and may span lines; backslash commands (`\d`, `\d T`,
//! `\timing`, `\q`, `\?`) stand alone on a line. On a terminal it edits lines and keeps history
//! (rustyline); otherwise it reads statements from standard input, like psql and duckdb.
//! Ctrl-C cancels the running query and returns to the prompt.

mod split;

use std::io::{BufRead, IsTerminal};
use std::path::PathBuf;

use rustyline::DefaultEditor;
use rustyline::error::ReadlineError;
use skein_client::Client;
use tokio::runtime::Runtime;

pub(crate) use split::Splitter;

use crate::commands;
use crate::query::{self, Outcome, Output};

const HELP: &str = "\
Statements end with ; and may span lines. Commands:
  \\d          list tables
  \\d TABLE    describe a table
  \\timing     toggle printing how long each statement takes (\\timing on|off)
  \\q          quit
  \\?          this help
Ctrl-C cancels a running query; Ctrl-D quits.";

/// The shell's state between statements.
struct Shell<'a> {
    rt: &'a Runtime,
    client: Client,
    output: Output,
    /// Whether any statement or command failed (the exit code when reading a script).
    failed: bool,
}

/// What to do after a line.
#[derive(Debug, PartialEq, Eq)]
enum Next {
    Continue,
    Quit,
}

impl Shell<'_> {
    /// Runs a statement, reporting errors and cancellation.
    fn statement(&mut self, sql: &str) -> Next {
        match self
            .rt
            .block_on(query::run(&mut self.client, sql, &mut self.output))
        {
            Ok(Outcome::Done) => Next::Continue,
            Ok(outcome @ Outcome::Cancelled { .. }) => {
                outcome.report();
                Next::Continue
            }
            Ok(Outcome::Closed) => Next::Quit,
            Err(e) => {
                eprintln!("error: {e:#}");
                self.failed = true;
                Next::Continue
            }
        }
    }

    /// Runs a backslash command.
    fn command(&mut self, line: &str) -> Next {
        let mut words = line.split_whitespace();
        let name = words.next().unwrap_or_default();
        let arg = words.next();
        let result = match (name, arg) {
            ("\\q" | "\\quit", _) => return Next::Quit,
            ("\\?" | "\\h" | "\\help", _) => {
                eprintln!("{HELP}");
                Ok(())
            }
            ("\\timing", arg) => {
                self.output.timing = match arg {
                    Some("on") => true,
                    Some("off") => false,
                    _ => !self.output.timing,
                };
                let state = if self.output.timing { "on" } else { "off" };
                eprintln!("Timing is {state}.");
                Ok(())
            }
            ("\\d" | "\\dt", None) => self
                .rt
                .block_on(commands::tables(&mut self.client, &mut self.output)),
            ("\\d", Some(table)) => self.rt.block_on(commands::describe(
                &mut self.client,
                table,
                &mut self.output,
            )),
            _ => Err(anyhow::anyhow!(
                "unknown command {name}; \\? lists the commands"
            )),
        };
        if let Err(e) = result {
            eprintln!("error: {e:#}");
            self.failed = true;
        }
        Next::Continue
    }

    /// Feeds one line of input.
    fn line(&mut self, splitter: &mut Splitter, line: &str) -> Next {
        if splitter.is_blank() && line.trim_start().starts_with('\\') {
            return self.command(line.trim());
        }
        let mut text = line.to_string();
        text.push('\n');
        for sql in splitter.push(&text) {
            if self.statement(&sql) == Next::Quit {
                return Next::Quit;
            }
        }
        Next::Continue
    }
}

/// Runs the shell; returns whether everything succeeded.
pub(crate) fn run(rt: &Runtime, client: Client, output: Output) -> anyhow::Result<bool> {
    let uri = client.options().uri.clone();
    let mut shell = Shell {
        rt,
        client,
        output,
        failed: false,
    };
    let mut splitter = Splitter::new();
    if std::io::stdin().is_terminal() {
        interactive(&mut shell, &mut splitter, &uri)?;
    } else {
        for line in std::io::stdin().lock().lines() {
            let line = line.map_err(|e| anyhow::anyhow!("cannot read standard input: {e}"))?;
            if shell.line(&mut splitter, &line) == Next::Quit {
                return Ok(!shell.failed);
            }
        }
        // Like psql and duckdb, a last statement without `;` still runs.
        if let Some(sql) = splitter.finish() {
            shell.statement(&sql);
        }
    }
    Ok(!shell.failed)
}

/// The history file: `$SKEIN_HISTORY`, else `~/.skein_history`.
fn history_path() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("SKEIN_HISTORY") {
        return Some(PathBuf::from(path));
    }
    std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".skein_history"))
}

fn interactive(shell: &mut Shell<'_>, splitter: &mut Splitter, uri: &str) -> anyhow::Result<()> {
    let mut editor = DefaultEditor::new()?;
    let history = history_path();
    if let Some(path) = &history {
        let _ = editor.load_history(path); // missing on first use
    }
    eprintln!(
        "skein {} connected to {uri}. Enter \\? for help, \\q to quit.",
        env!("CARGO_PKG_VERSION")
    );
    loop {
        let prompt = if splitter.is_blank() {
            "skein> "
        } else {
            "  ...> "
        };
        match editor.readline(prompt) {
            Ok(line) => {
                if !line.trim().is_empty() {
                    let _ = editor.add_history_entry(line.as_str());
                }
                if shell.line(splitter, &line) == Next::Quit {
                    break;
                }
            }
            Err(ReadlineError::Interrupted) => splitter.clear(),
            Err(ReadlineError::Eof) => break,
            Err(e) => return Err(e.into()),
        }
    }
    if let Some(path) = &history {
        let _ = editor.save_history(path);
    }
    Ok(())
}
