//! Command-line arguments, and the connection settings resolved from flags, `SKEIN_*`
//! environment variables and the config file, in that order of precedence.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand, ValueEnum};
use skein_client::{Auth, ConnectOptions};

use crate::output::Format;

/// The command-line client of skein, a Flight SQL service. With no command it starts an
/// interactive SQL shell (or, with standard input not a terminal, runs the statements read from
/// it).
#[derive(Debug, Parser)]
#[command(name = "skein", version, propagate_version = true)]
pub(crate) struct Cli {
    #[command(flatten)]
    pub(crate) connect: ConnectArgs,
    /// Output settings of the shell.
    #[command(flatten)]
    pub(crate) output: OutputArgs,
    #[command(subcommand)]
    pub(crate) command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Run SQL statements (separated by `;`) and print their results.
    Sql {
        /// The statement(s).
        statement: String,
        #[command(flatten)]
        output: OutputArgs,
    },
    /// Load Parquet, CSV, JSON lines or Arrow IPC files into a table (bulk ingest).
    Ingest(IngestArgs),
    /// List the tables.
    Tables {
        #[command(flatten)]
        output: OutputArgs,
    },
    /// Show a table's columns and types.
    Describe {
        /// The table (`table` or `schema.table`).
        table: String,
        #[command(flatten)]
        output: OutputArgs,
    },
    /// List the cluster's nodes.
    Nodes {
        #[command(flatten)]
        output: OutputArgs,
    },
    /// Write buffered rows to Parquet now (one table, or all).
    Flush {
        /// The table; every table when omitted.
        table: Option<String>,
    },
    /// List the actions the server offers.
    Actions {
        #[command(flatten)]
        output: OutputArgs,
    },
    /// Run a Flight action by name and print its results' bodies.
    Action {
        /// The action's name (see `skein actions`).
        name: String,
        /// The action's body, as text.
        body: Option<String>,
    },
}

/// Where the server is and who we are. Each flag also reads a `SKEIN_*` variable, and then the
/// config file.
#[derive(Debug, Args, Clone)]
pub(crate) struct ConnectArgs {
    /// Server host [default: 127.0.0.1].
    #[arg(long, global = true, env = "SKEIN_HOST")]
    pub(crate) host: Option<String>,
    /// Server Flight SQL port [default: 32010].
    #[arg(long, global = true, env = "SKEIN_PORT")]
    pub(crate) port: Option<u16>,
    /// Server URI, `grpc://host:port` or `grpc+tls://host:port` (instead of --host/--port).
    #[arg(long, global = true, env = "SKEIN_URI")]
    pub(crate) uri: Option<String>,
    /// User name for the Flight handshake (basic auth).
    #[arg(long, global = true, env = "SKEIN_USER")]
    pub(crate) user: Option<String>,
    /// Password for the Flight handshake.
    #[arg(long, global = true, env = "SKEIN_PASSWORD", hide_env_values = true)]
    pub(crate) password: Option<String>,
    /// Bearer token (instead of user and password).
    #[arg(long, global = true, env = "SKEIN_TOKEN", hide_env_values = true)]
    pub(crate) token: Option<String>,
    /// PEM file of a certificate authority to trust for grpc+tls (besides the system's).
    #[arg(long, global = true, env = "SKEIN_TLS_CA")]
    pub(crate) tls_ca: Option<PathBuf>,
    /// Config file [default: $XDG_CONFIG_HOME/skein/config.toml, else
    /// ~/.config/skein/config.toml].
    #[arg(long, global = true, env = "SKEIN_CONFIG")]
    pub(crate) config: Option<PathBuf>,
}

/// How results are printed.
#[derive(Debug, Args, Clone)]
pub(crate) struct OutputArgs {
    /// Output format: aligned tables for people, or csv, json, ndjson, arrow (IPC stream),
    /// parquet for programs.
    #[arg(long, short = 'f', value_enum, default_value = "table")]
    pub(crate) format: Format,
    /// Write results to this file instead of standard output.
    #[arg(long, short = 'o')]
    pub(crate) output: Option<PathBuf>,
    /// Print how long each statement took (to standard error).
    #[arg(long)]
    pub(crate) timing: bool,
}

/// Input formats of `skein ingest`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum InputFormat {
    Parquet,
    Csv,
    #[value(alias = "jsonl", alias = "ndjson")]
    Json,
    #[value(alias = "ipc")]
    Arrow,
}

/// `skein ingest`.
#[derive(Debug, Args)]
pub(crate) struct IngestArgs {
    /// Files to load (`-` for standard input, which then needs --format).
    #[arg(required = true)]
    pub(crate) files: Vec<PathBuf>,
    /// The table to load into (`table` or `schema.table`).
    #[arg(long, short = 't')]
    pub(crate) table: String,
    /// create: the table must not exist; append: it must; replace: its rows are replaced;
    /// create-append: created if needed.
    #[arg(long, value_enum, default_value = "create-append")]
    pub(crate) mode: Mode,
    /// Input format [default: from each file's extension].
    #[arg(long, value_enum)]
    pub(crate) format: Option<InputFormat>,
    /// A column type to use instead of the inferred or stored one, `name=type` (e.g.
    /// `id=int64`, `ts=timestamp`, `price=decimal(10,2)`, or arrow's `Int64`). Repeatable.
    #[arg(long = "column", short = 'c', value_name = "NAME=TYPE")]
    pub(crate) columns: Vec<String>,
    /// Rows per record batch.
    #[arg(long, default_value_t = 65_536)]
    pub(crate) batch_rows: usize,
    /// Batches per DoPut stream: its rows are acknowledged when it ends.
    #[arg(long, default_value_t = 16)]
    pub(crate) batches_per_put: usize,
    /// Parallel DoPut streams.
    #[arg(long, default_value_t = 1)]
    pub(crate) concurrency: usize,
    /// Records read to infer a CSV or JSON schema.
    #[arg(long, default_value_t = 1000)]
    pub(crate) infer_rows: usize,
    /// CSV field delimiter (one character; `\t` for tab) [default: `,`, tab for .tsv].
    #[arg(long)]
    pub(crate) delimiter: Option<String>,
    /// CSV files have no header line (columns are named column_1, column_2, …).
    #[arg(long)]
    pub(crate) no_header: bool,
    /// No progress output.
    #[arg(long, short = 'q')]
    pub(crate) quiet: bool,
}

/// `--mode` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Mode {
    Create,
    Append,
    Replace,
    CreateAppend,
}

/// The config file's keys (all optional).
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    host: Option<String>,
    port: Option<u16>,
    uri: Option<String>,
    user: Option<String>,
    password: Option<String>,
    token: Option<String>,
    tls_ca: Option<PathBuf>,
}

/// The default config file: `$XDG_CONFIG_HOME/skein/config.toml`, else
/// `~/.config/skein/config.toml`.
fn default_config_path() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))?;
    Some(base.join("skein").join("config.toml"))
}

fn read_config(path: &Path, explicit: bool) -> anyhow::Result<FileConfig> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if !explicit && e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(FileConfig::default());
        }
        Err(e) => {
            return Err(e).with_context(|| format!("cannot read config file {}", path.display()));
        }
    };
    toml::from_str(&text).with_context(|| format!("invalid config file {}", path.display()))
}

impl ConnectArgs {
    /// Resolves the connection settings: flags, then environment variables (both through
    /// clap), then the config file, then the defaults. A URI wins over host and port given at
    /// the same level or below.
    pub(crate) fn resolve(&self) -> anyhow::Result<ConnectOptions> {
        // An empty value (`SKEIN_URI=`) means "not set".
        let this = self.without_empty();
        let file = match &this.config {
            Some(path) => read_config(path, true)?,
            None => match default_config_path() {
                Some(path) => read_config(&path, false)?,
                None => FileConfig::default(),
            },
        };
        let uri = match (&this.uri, this.host.is_some() || this.port.is_some()) {
            (Some(uri), _) => uri.clone(),
            (None, true) => host_port_uri(&this.host, this.port, &file),
            (None, false) => match &file.uri {
                Some(uri) => uri.clone(),
                None => host_port_uri(&None, None, &file),
            },
        };
        let mut options = ConnectOptions::new(uri);
        let user = this.user.clone().or(file.user);
        let password = this.password.clone().or(file.password);
        let token = this.token.clone().or(file.token);
        options.auth = match (user, password, token) {
            (Some(_), _, Some(_)) => bail!("give either --user/--password or --token, not both"),
            (Some(user), password, None) => Auth::Basic {
                user,
                password: password.unwrap_or_default(),
            },
            (None, Some(_), _) => bail!("--password needs --user"),
            (None, None, Some(token)) => Auth::Bearer(token),
            (None, None, None) => Auth::None,
        };
        options.tls_ca = this.tls_ca.clone().or(file.tls_ca);
        Ok(options)
    }
}

impl ConnectArgs {
    fn without_empty(&self) -> Self {
        let text = |v: &Option<String>| v.clone().filter(|s| !s.is_empty());
        let path = |v: &Option<PathBuf>| v.clone().filter(|p| !p.as_os_str().is_empty());
        Self {
            host: text(&self.host),
            port: self.port,
            uri: text(&self.uri),
            user: text(&self.user),
            password: text(&self.password),
            token: text(&self.token),
            tls_ca: path(&self.tls_ca),
            config: path(&self.config),
        }
    }
}

fn host_port_uri(host: &Option<String>, port: Option<u16>, file: &FileConfig) -> String {
    let host = host
        .clone()
        .or_else(|| file.host.clone())
        .unwrap_or_else(|| "127.0.0.1".to_string());
    let port = port.or(file.port).unwrap_or(32010);
    ConnectOptions::host_port(&host, port).uri
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> ConnectArgs {
        let mut all = vec!["skein"];
        all.extend_from_slice(list);
        Cli::try_parse_from(all).unwrap().connect
    }

    #[test]
    fn flags_beat_the_config_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(
            &path,
            "host = \"10.1.1.1\"\nport = 7\nuser = \"fileuser\"\n",
        )
        .unwrap();
        let config = path.to_str().unwrap();
        let o = args(&["--config", config]).resolve().unwrap();
        assert_eq!(o.uri, "grpc://10.1.1.1:7");
        assert!(matches!(o.auth, Auth::Basic { ref user, .. } if user == "fileuser"));
        let o = args(&["--config", config, "--port", "9"])
            .resolve()
            .unwrap();
        assert_eq!(o.uri, "grpc://10.1.1.1:9");
        let o = args(&["--config", config, "--uri", "grpc+tls://h:1"])
            .resolve()
            .unwrap();
        assert_eq!(o.uri, "grpc+tls://h:1");
    }

    #[test]
    fn file_uri_loses_to_host_flags() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "uri = \"grpc://filehost:1\"\n").unwrap();
        let config = path.to_str().unwrap();
        let o = args(&["--config", config]).resolve().unwrap();
        assert_eq!(o.uri, "grpc://filehost:1");
        let o = args(&["--config", config, "--host", "h"])
            .resolve()
            .unwrap();
        assert_eq!(o.uri, "grpc://h:32010");
    }

    #[test]
    fn bad_config_files_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "hots = \"typo\"\n").unwrap();
        let e = args(&["--config", path.to_str().unwrap()])
            .resolve()
            .unwrap_err();
        assert!(format!("{e:#}").contains("hots"), "{e:#}");
        let missing = dir.path().join("missing.toml");
        assert!(
            args(&["--config", missing.to_str().unwrap()])
                .resolve()
                .is_err()
        );
    }

    #[test]
    fn token_and_user_conflict() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("none.toml");
        std::fs::write(&missing, "").unwrap();
        let c = missing.to_str().unwrap();
        assert!(
            args(&["--config", c, "--user", "u", "--token", "t"])
                .resolve()
                .is_err()
        );
        let o = args(&["--config", c, "--token", "t"]).resolve().unwrap();
        assert!(matches!(o.auth, Auth::Bearer(_)));
    }
}
