//! skein-client: a typed Arrow Flight SQL client for skein nodes, and the `skein` command-line
//! tool built on it (binary `skein`, behind the default `cli` feature; peers, tests and
//! benchmarks can depend on the library alone with `default-features = false`).
//!
//! It speaks only Flight SQL and Flight, so it works against any node. Data comes from a node as
//! a stream of Arrow record batches ([`QueryStream`]) and goes to it through bulk ingest
//! (`CommandStatementIngest`) over parallel `DoPut` streams, each carrying a bounded number of
//! batches so rows are acknowledged as the ingest goes ([`ingest::ingest`]). Input files are
//! read as streams and never held whole ([`source`]). Nothing here depends on DuckDB or on the
//! server crate.
//!
//! Modules:
//! - [`connect`]: addresses (`grpc://`, `grpc+tls://`), credentials, TLS trust;
//! - [`client`]: [`Client`], one connection and the calls made over it (query, cancel, catalog,
//!   actions, one `DoPut`);
//! - [`ingest`]: modes and the parallel, incrementally acknowledged ingest;
//! - [`source`]: Parquet, CSV, JSON lines and Arrow IPC input as batches;
//! - [`types`]: data type names as users write them;
//! - [`error`]: the crate's error type.

pub mod client;
pub mod connect;
pub mod error;
pub mod ingest;
pub mod source;
pub mod types;

pub use client::{Client, NodeInfo, QueryStream, TableInfo};
pub use connect::{Auth, ConnectOptions};
pub use error::{Error, Result};
pub use ingest::{IngestMode, IngestOptions, IngestProgress};
pub use source::{FileFormat, FileSource, ReadOptions};
