//! The `skein-server` binary: parse flags, set up logging, serve until SIGTERM or SIGINT.

use anyhow::Context;
use clap::Parser;
use skein_server::Server;
use skein_server::config::{Config, LogFormat};
use tracing_subscriber::EnvFilter;

/// `skein-server hash-password`: reads a password from standard input (one line) and prints
/// the argon2id PHC string to put in a users file in its place.
#[derive(Debug, Parser)]
#[command(name = "skein-server hash-password")]
struct HashPassword {}

fn hash_password() -> anyhow::Result<()> {
    let mut line = String::new();
    std::io::stdin()
        .read_line(&mut line)
        .context("reading the password from standard input")?;
    let password = line.trim_end_matches(['\r', '\n']);
    anyhow::ensure!(
        !password.is_empty(),
        "no password on standard input: `echo -n PASSWORD | skein-server hash-password`"
    );
    println!("{}", skein_server::auth::hash_password(password)?);
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args_os();
    if args.nth(1).is_some_and(|a| a == "hash-password") {
        HashPassword::parse_from(std::env::args_os().skip(1));
        return hash_password();
    }
    let config = Config::parse();
    let filter = EnvFilter::try_from_env("SKEIN_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match config.log_format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
    let server = Server::bind(config.clone())
        .await
        .context("starting skein-server")?;
    let (flight, http) = (server.flight_addr()?, server.http_addr()?);
    tracing::info!(
        flight_addr = %flight,
        http_addr = %http,
        node_id = %config.node_id,
        data_dir = %config.data_dir.display(),
        "serving"
    );
    if !flight.ip().is_loopback() && config.auth_users.is_none() {
        tracing::warn!(flight_addr = %flight, "authentication is off and the node listens beyond loopback");
    }
    let node = server.node();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutdown requested");
        node.base.shutdown.cancel();
    });
    server.serve().await?;
    tracing::info!("stopped");
    Ok(())
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
