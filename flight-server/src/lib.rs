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
//! - [`engine`]: the locked-down DuckDB; [`sql`]: statement classification; [`sandbox`]: what
//!   user SQL may call and name, checked
//!   on [`duckdb_parse`], DuckDB's own reading of the text that will run;
//!   [`types`]: Arrow and DuckDB types and fitting batches to tables; [`params`]: parameters.
//! - [`queries`], [`prepared_statements`], [`ticket`]: query cancellation, prepared statements, tickets.
//! - [`metrics`], [`error`]; [`system`]: the system tables (tables, files, nodes, query log).
//! - [`cluster`]: the executor of distributed queries (fragments, merging, forwarding).
//!
//! File pruning and the distributed planner are pure functions of SQL text in `skein-sql`.
//! The crate's API is what the binary and the integration tests use: [`Server`], [`Config`],
//! [`node::Node`], [`error`] and [`auth::hash_password`]; every other module is crate-private.

pub mod auth;
pub(crate) mod cluster;
pub mod config;
pub(crate) mod duckdb_parse;
pub(crate) mod engine;
pub mod error;
mod faults;
pub(crate) mod http;
pub(crate) mod ipc_guard;
pub(crate) mod layout;
pub(crate) mod metrics;
pub mod node;
pub(crate) mod params;
pub(crate) mod prepared_statements;
pub(crate) mod queries;
pub(crate) mod sandbox;
pub mod server;
pub(crate) mod service;
pub(crate) mod slots;
pub(crate) mod sql;
pub(crate) mod statements;
pub(crate) mod system;
pub(crate) mod table;
pub(crate) mod ticket;
pub(crate) mod types;
pub(crate) mod wal_record;

pub use config::Config;
pub use error::{Error, Result};
pub use server::Server;
