//! Storage for skein: where table data and table metadata live.
//!
//! A node's buffers flush to Parquet files, which this crate puts into an object store, and the
//! node records every table, its columns and its files in a catalog. Both sit behind traits so
//! that the embedded default (a local directory and a local catalog file) and a cluster (S3 and
//! Redis) are interchangeable:
//!
//! - [`object_store`]: the [`ObjectStore`] trait and [`LocalStore`], a directory on local disk.
//! - [`catalog`]: the metadata model ([`CatalogState`], [`TableMeta`], [`FileMeta`]), the
//!   [`CatalogBackend`] trait with its compare-and-set commit, [`LocalCatalog`] (one JSON file,
//!   replaced atomically) and [`Catalog`], the in-memory view a node reads and updates.
//! - [`stats`]: per-column statistics read from a Parquet file's footer, kept in the manifest so
//!   that queries can skip files that cannot match.
//!
//! Promise: a catalog commit is durable when it returns, and it is all-or-nothing: a crash leaves
//! either the previous or the new catalog, never a mix.

pub mod catalog;
pub mod error;
pub mod object_store;
pub mod stats;

pub use catalog::{
    Catalog, CatalogBackend, CatalogState, ColumnMeta, FileMeta, LocalCatalog, TableMeta,
};
pub use error::{Error, Result};
pub use object_store::{LocalStore, ObjectStore};
pub use stats::{ColumnStats, StatValue};
