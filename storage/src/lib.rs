//! Storage for skein: where table data and table metadata live.
//!
//! A node's buffers flush to Parquet files, which this crate puts into an object store, and the
//! node records every table, its columns and its files in a catalog. Both sit behind traits so
//! that the embedded default (a local directory and a local catalog file) and a cluster (S3 and
//! Redis) are interchangeable:
//!
//! - [`object_store`]: the [`ObjectStore`] trait and [`LocalStore`], a directory on local disk;
//!   [`s3`]: [`S3Store`], a bucket of an S3-compatible service; [`cache`]: [`FileCache`], the
//!   local copies of remote objects that DuckDB reads.
//! - [`catalog`]: the metadata model ([`CatalogState`], [`TableMeta`], [`FileMeta`]), the
//!   [`CatalogBackend`] trait with its compare-and-set commit, [`LocalCatalog`] (one JSON file,
//!   replaced atomically), [`RedisCatalog`] (shared by a cluster, compare-and-set by Lua script)
//!   and [`Catalog`], the in-memory view a node reads and updates; [`backup`]: snapshots of the
//!   catalog in the object store, and restoring one.
//! - [`stats`]: per-column statistics read from a Parquet file's footer, kept in the manifest so
//!   that queries can skip files that cannot match.
//!
//! Promise: a catalog commit is durable when it returns, and it is all-or-nothing: a crash leaves
//! either the previous or the new catalog, never a mix.

pub mod backup;
pub mod cache;
pub mod catalog;
pub mod error;
pub mod object_store;
pub mod redis_catalog;
pub mod s3;
pub mod stats;

pub use cache::{CachedFile, FileCache};
pub use catalog::{
    Catalog, CatalogBackend, CatalogState, ColumnMeta, FileMeta, Head, LocalCatalog, RetiredFile,
    TableMeta, TableOptions, new_commit_id,
};
pub use error::{Error, Result};
pub use object_store::{LocalStore, ObjectStore};
pub use redis_catalog::RedisCatalog;
pub use s3::{S3Config, S3Store};
pub use stats::{ColumnStats, StatValue};
