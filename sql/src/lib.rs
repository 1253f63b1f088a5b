//! What skein reads out of SQL text before DuckDB runs it, with no DuckDB and no network: which
//! files a query can skip ([`prune`]), which shape a query takes in a cluster and the SQL of its
//! parts ([`plan`]), the sandbox's lists of DuckDB's functions ([`functions`]), and quoting
//! ([`quote`]). Everything here is a pure function of its input; `cargo test -p skein-sql`
//! builds and runs without compiling DuckDB.
//!
//! Authorisation stays with the server: this crate says what a statement touches, the server
//! decides who may.

pub mod functions;
pub mod plan;
pub mod prune;
pub mod quote;
