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
//! - [`service`]: the Flight SQL RPCs, one module per command family; they decode, call a
//!   subsystem through [`node::Node`] and encode.
//! - [`node`]: the composition of the subsystems, each in its own folder:
//!   [`base`] (what they all read: configuration, catalog, store, DuckDB, metrics, live tables,
//!   membership), [`write`] (WAL, appends, flushes, uploads, the node-id claim), [`read`] (read
//!   views, pins, query registry and slots, system tables), [`cluster`] (membership, peers,
//!   distributed queries), [`maintenance`] (compaction, DELETE/UPDATE rewrites) and [`ddl`]
//!   (DDL and catalog sync, snapshots); [`statements`]: DDL and DML dispatched to them.
//! - [`table`]: a table's buffer generations and DuckDB view; [`layout`]: the Parquet writer
//!   and object names that flushes and rewrites share.
//! - [`engine`]: the locked-down DuckDB; [`sql`]: statement classification; [`sandbox`]: what
//!   user SQL may call and name, checked on [`duckdb_parse`], DuckDB's own reading of the text
//!   that will run; [`types`]: Arrow and DuckDB types and fitting batches to tables;
//!   [`params`]: parameters.
//! - [`prepared_statements`], [`ticket`]: prepared statements, tickets.
//! - [`metrics`], [`error`].
//!
//! File pruning and the distributed planner are pure functions of SQL text in `skein-sql`.
//! The crate's API is what the binary and the integration tests use: [`Server`], [`Config`],
//! [`node::Node`] with [`base::Base`], [`error`] and [`auth::hash_password`]; every other module is
//! crate-private.

pub mod auth;
pub mod base;
pub(crate) mod cluster;
pub mod config;
pub(crate) mod ddl;
pub(crate) mod duckdb_parse;
pub(crate) mod engine;
pub mod error;
mod faults;
pub(crate) mod http;
pub(crate) mod ipc_guard;
pub(crate) mod layout;
pub(crate) mod maintenance;
pub(crate) mod metrics;
pub mod node;
pub(crate) mod params;
pub(crate) mod prepared_statements;
pub(crate) mod read;
pub(crate) mod sandbox;
pub mod server;
pub(crate) mod service;
pub(crate) mod sql;
pub(crate) mod statements;
pub(crate) mod table;
pub(crate) mod ticket;
pub(crate) mod types;
pub(crate) mod write;

pub use config::Config;
pub use error::{Error, Result};
pub use server::Server;
