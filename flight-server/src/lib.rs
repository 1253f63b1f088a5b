//! skein-server: one node of skein, an Arrow Flight SQL service on DuckDB.
//!
//! A node takes Arrow record batches over `DoPut` (Flight SQL bulk ingest, prepared statement
//! parameters, or a descriptor path naming a table) into a per-table buffer, flushes buffers to
//! Parquet files in object storage recorded in a catalog, and answers SQL with an embedded
//! DuckDB over the files and the buffers together: an acknowledged row is visible at once.
//!
//! Modules:
//! - [`config`]: flags and environment variables; [`auth`]: credentials, tokens and roles.
//! - [`server`]: binding, serving, graceful shutdown; [`http`]: health and metrics.
//! - [`service`]: the Flight SQL RPCs, one module per command family.
//! - [`node`]: shared state and the table lifecycle (create, append, flush, drop);
//!   [`table`]: a table's buffer generations and DuckDB view; [`statements`]: DDL and DML.
//! - [`engine`]: the locked-down DuckDB; [`sql`]: statement classification; [`prune`]: which
//!   files a query's filters let it skip; [`sandbox`]: what user SQL may call and name, checked
//!   on [`duckdb_parse`], DuckDB's own reading of the text that will run;
//!   [`types`]: Arrow and DuckDB types and fitting batches to tables; [`params`]: parameters.
//! - [`queries`], [`prepared`], [`ticket`]: query cancellation, prepared statements, tickets.
//! - [`metrics`], [`error`]; [`system`]: the system tables (tables, files, nodes, query log).

pub mod auth;
pub mod cluster;
pub mod config;
pub mod duckdb_parse;
pub mod engine;
pub mod error;
mod faults;
pub mod http;
pub mod ipc_guard;
pub mod layout;
pub mod metrics;
pub mod node;
pub mod params;
pub mod prepared;
pub mod queries;
pub mod sandbox;
pub mod server;
pub mod service;
pub mod slots;
pub mod sql;
pub mod statements;
pub mod system;
pub mod table;
pub mod ticket;
pub mod types;
pub mod wal_record;

pub use config::Config;
pub use error::{Error, Result};
pub use server::Server;
