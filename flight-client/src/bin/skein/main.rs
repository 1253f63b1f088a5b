//! `skein`: the command-line client of skein. `skein sql "…"`, an interactive shell, `skein
//! ingest`, and catalog and admin commands, all over Flight SQL.
//!
//! Exit codes: 0 on success, 1 when something failed (the reason is on standard error as
//! `error: …`), 2 for usage errors, 130 when Ctrl-C cancelled a query.

mod args;
mod commands;
mod ingest;
mod output;
mod query;
mod shell;
mod table;

use std::process::ExitCode;

use clap::Parser;
use skein_client::Client;

use args::{Cli, Command};
use query::{Outcome, Output};

/// Exit code after Ctrl-C (128 + SIGINT), as shells report it.
const EXIT_INTERRUPTED: u8 = 130;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match run(&rt, cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(rt: &tokio::runtime::Runtime, cli: Cli) -> anyhow::Result<ExitCode> {
    if let Some(Command::Ingest(args)) = &cli.command
        && args.format.is_none()
        && args.files.iter().any(|f| f.as_os_str() == "-")
    {
        use clap::CommandFactory;
        Cli::command()
            .error(
                clap::error::ErrorKind::MissingRequiredArgument,
                "reading standard input (-) needs --format <parquet|csv|json|arrow>",
            )
            .exit();
    }
    let options = cli.connect.resolve()?;
    // Open the output before connecting, so a bad `-o` fails without a round trip.
    let output_args = match &cli.command {
        None => Some(&cli.output),
        Some(
            Command::Sql { output, .. }
            | Command::Tables { output }
            | Command::Describe { output, .. }
            | Command::Nodes { output }
            | Command::Actions { output },
        ) => Some(output),
        Some(Command::Ingest(_) | Command::Flush { .. } | Command::Action { .. }) => None,
    };
    let mut output = match output_args {
        Some(args) => Output::open(args)?,
        None => Output::open(&cli.output)?,
    };
    let mut client = rt.block_on(Client::connect(options))?;
    let Some(command) = cli.command else {
        let ok = shell::run(rt, client, output)?;
        return Ok(if ok {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        });
    };
    rt.block_on(async {
        match command {
            Command::Sql { statement, .. } => {
                let mut splitter = shell::Splitter::new();
                let mut statements = splitter.push(&statement);
                statements.extend(splitter.finish());
                if statements.is_empty() {
                    anyhow::bail!("no SQL statement given");
                }
                for sql in statements {
                    match query::run(&mut client, &sql, &mut output).await? {
                        Outcome::Done => {}
                        outcome @ Outcome::Cancelled { .. } => {
                            outcome.report();
                            return Ok(ExitCode::from(EXIT_INTERRUPTED));
                        }
                        Outcome::Closed => return Ok(ExitCode::SUCCESS),
                    }
                }
            }
            Command::Ingest(args) => ingest::run(&client, &args).await?,
            Command::Tables { .. } => commands::tables(&mut client, &mut output).await?,
            Command::Describe { table, .. } => {
                commands::describe(&mut client, &table, &mut output).await?;
            }
            Command::Nodes { .. } => commands::nodes(&mut client, &mut output).await?,
            Command::Flush { table } => commands::flush(&mut client, table.as_deref()).await?,
            Command::Actions { .. } => commands::actions(&mut client, &mut output).await?,
            Command::Action { name, body } => {
                commands::action(&mut client, &name, body.as_deref(), &mut output).await?;
            }
        }
        Ok(ExitCode::SUCCESS)
    })
}
