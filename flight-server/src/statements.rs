//! Running statements that change tables: CREATE TABLE [AS], DROP TABLE, INSERT and
//! ALTER TABLE … ADD COLUMN. Each turns into catalog changes and appends through the same
//! ingest path as bulk loads.

use std::sync::Arc;

use arrow::array::RecordBatch;
use duckdb::types::Value;
use duckdb::{Connection, params_from_iter};
use skein_storage::ColumnMeta;

use crate::base::blocking;
use crate::ddl::{OnExists, OptionChange};
use crate::engine::ident;
use crate::error::{Error, Result};
use crate::node::Node;
use crate::params;
use crate::sql::Plan;

/// Runs `sql` once per parameter row (once if there are none) on `conn`.
fn execute_with(conn: &Connection, sql: &str, rows: &[Vec<Value>]) -> Result<usize> {
    let mut stmt = conn.prepare(sql)?;
    if rows.is_empty() {
        let nulls = vec![Value::Null; stmt.parameter_count()];
        if !nulls.is_empty() {
            return Err(Error::InvalidArgument(format!(
                "the statement takes {} parameter(s) but none were bound",
                nulls.len()
            )));
        }
        return Ok(stmt.execute([])?);
    }
    let mut total = 0;
    for row in rows {
        total += stmt.execute(params_from_iter(row.iter()))?;
    }
    Ok(total)
}

/// All rows of a query on `conn`.
pub(crate) fn collect(conn: &Connection, sql: &str) -> Result<Vec<RecordBatch>> {
    let mut stmt = conn.prepare(sql)?;
    let stream = stmt.stream_arrow([])?;
    Ok(stream.collect::<std::result::Result<Vec<_>, _>>()?)
}

/// Columns of the one table in a throwaway database after running `setup` and then `sql`.
fn scratch_columns(setup: Option<String>, sql: &str) -> Result<Vec<ColumnMeta>> {
    let conn = Connection::open_in_memory()?;
    conn.execute_batch("SET enable_external_access = false")?;
    if let Some(setup) = setup {
        conn.execute_batch(&setup)?;
    }
    execute_with(&conn, sql, &[])?;
    columns_where(&conn, "NOT internal", None)
}

/// Columns of a temporary table on `conn`.
fn temp_columns(conn: &Connection, table: &str) -> Result<Vec<ColumnMeta>> {
    columns_where(
        conn,
        "database_name = 'temp' AND table_name = ?",
        Some(table),
    )
}

/// Columns from `duckdb_columns()` matching `filter` (with at most one `?`, bound to `arg`).
fn columns_where(conn: &Connection, filter: &str, arg: Option<&str>) -> Result<Vec<ColumnMeta>> {
    let mut stmt = conn.prepare(&format!(
        "SELECT column_name, data_type, is_nullable FROM duckdb_columns() \
         WHERE {filter} ORDER BY column_index"
    ))?;
    let params: Vec<&dyn duckdb::ToSql> = arg.iter().map(|a| a as &dyn duckdb::ToSql).collect();
    let columns = stmt
        .query_map(params.as_slice(), |r| {
            Ok(ColumnMeta {
                name: r.get(0)?,
                sql_type: r.get(1)?,
                nullable: r.get(2)?,
            })
        })?
        .collect::<std::result::Result<Vec<_>, _>>()?;
    Ok(columns)
}

fn stage_name() -> String {
    format!("skein_stage_{}", uuid::Uuid::new_v4().simple())
}

/// Texts at most this long are read by DuckDB's parser on the calling task (that takes
/// microseconds); longer ones on a blocking thread.
const INLINE_CHECK_BYTES: usize = 16 * 1024;

/// [`crate::sql::checked_plan`] for the caller of the request being served: every statement, ticket and
/// handle passes here before DuckDB runs any of it.
pub(crate) async fn checked(node: &Arc<Node>, sql: &str) -> Result<Plan> {
    node.writes.check_identity()?;
    let caller = crate::auth::current();
    if sql.len() <= INLINE_CHECK_BYTES {
        let engine = &node.base.engine;
        return crate::sql::checked_plan(
            engine.parser(),
            sql,
            engine.catalog_name(),
            caller.as_ref(),
        );
    }
    let (node, sql) = (Arc::clone(node), sql.to_string());
    blocking(move || {
        let engine = &node.base.engine;
        crate::sql::checked_plan(
            engine.parser(),
            &sql,
            engine.catalog_name(),
            caller.as_ref(),
        )
    })
    .await
}

/// Runs a statement that is not a query, with optional parameter batches; returns the number
/// of rows it added (0 for DDL).
pub(crate) async fn execute_update(
    node: &Arc<Node>,
    sql: &str,
    parameters: Vec<RecordBatch>,
) -> Result<i64> {
    let plan = checked(node, sql).await?;
    if !plan.is_query() {
        crate::auth::require(crate::auth::Role::Writer, "change tables")?;
    }
    match &plan {
        Plan::CreateTable { table, .. }
        | Plan::Insert { table, .. }
        | Plan::AddColumns { table, .. }
        | Plan::SetOptions { table, .. } => crate::auth::require_table(table)?,
        Plan::Rewrite(r) => crate::auth::require_table(&r.table)?,
        Plan::DropTable { tables, .. } => tables
            .iter()
            .try_for_each(|t| crate::auth::require_table(t))?,
        Plan::Query | Plan::Unparsed | Plan::Explain { .. } => {}
    }
    let rows = params::rows(&parameters)?;
    node.ddl.take_in_changes().await;
    match plan {
        Plan::Query | Plan::Unparsed | Plan::Explain { .. } => Err(Error::InvalidArgument(
            "this statement is a query; run it as a query (CommandStatementQuery) to get its rows"
                .into(),
        )),
        Plan::CreateTable {
            table,
            if_not_exists,
            or_replace,
            query: None,
            options,
            sql,
        } => {
            let changes = parse_options(&table, &options)?;
            if if_not_exists && node.base.table(&table).is_ok() {
                return Ok(0);
            }
            let columns = blocking(move || scratch_columns(None, &sql)).await?;
            node.ddl
                .create_table(&table, columns, on_exists(if_not_exists, or_replace))
                .await?;
            apply_created_options(node, &table, changes).await?;
            Ok(0)
        }
        Plan::CreateTable {
            table,
            if_not_exists,
            or_replace,
            query: Some(query),
            options,
            ..
        } => {
            let changes = parse_options(&table, &options)?;
            if if_not_exists && node.base.table(&table).is_ok() {
                return Ok(0);
            }
            let base = Arc::clone(&node.base);
            let reads =
                crate::cluster::exec::gathered_reads(&node.cluster, &query, !rows.is_empty())
                    .await?;
            let (columns, batches) = blocking(move || {
                let conn = base.engine.connect()?;
                reads.install(&conn)?;
                let stage = stage_name();
                execute_with(
                    &conn,
                    &format!("CREATE TEMP TABLE {stage} AS\n{query}\n"),
                    &rows,
                )?;
                let staged = temp_columns(&conn, &stage)
                    .and_then(|c| Ok((c, collect(&conn, &format!("SELECT * FROM temp.{stage}"))?)));
                let _ = conn.execute_batch(&format!("DROP TABLE IF EXISTS temp.{stage}"));
                staged
            })
            .await?;
            let rt = node
                .ddl
                .create_table(&table, columns, on_exists(if_not_exists, or_replace))
                .await?;
            apply_created_options(node, &table, changes).await?;
            let mut total = 0;
            for b in &batches {
                total += node.writes.append(&rt, b).await?;
            }
            Ok(total as i64)
        }
        Plan::DropTable { tables, if_exists } => {
            for t in &tables {
                node.ddl.drop_table(t, if_exists).await?;
            }
            Ok(0)
        }
        Plan::Insert { ref table, .. } => {
            let rt = node.base.table(table)?;
            let base = Arc::clone(&node.base);
            let view = rt.name.clone();
            let reads =
                crate::cluster::exec::gathered_reads(&node.cluster, sql, !rows.is_empty()).await?;
            let batches = blocking(move || {
                let conn = base.engine.connect()?;
                reads.install(&conn)?;
                let stage = stage_name();
                conn.execute_batch(&format!(
                    "CREATE TEMP TABLE {stage} AS SELECT * FROM main.{} LIMIT 0",
                    ident(&view)
                ))?;
                let staged = plan
                    .insert_into(&["temp", &stage])
                    .ok_or_else(|| Error::Internal("INSERT plan without a statement".into()))
                    .and_then(|insert| execute_with(&conn, &insert, &rows))
                    .and_then(|_| collect(&conn, &format!("SELECT * FROM temp.{stage}")));
                let _ = conn.execute_batch(&format!("DROP TABLE IF EXISTS temp.{stage}"));
                staged
            })
            .await?;
            let mut total = 0;
            for b in &batches {
                total += node.writes.append(&rt, b).await?;
            }
            Ok(total as i64)
        }
        Plan::Rewrite(rewrite) => node.maintenance.rewrite_rows(&rewrite, rows).await,
        Plan::SetOptions { table, options } => {
            let parsed = parse_options(&table, &options)?;
            node.ddl.set_table_options(&table, parsed).await?;
            Ok(0)
        }
        Plan::AddColumns { table, sql } => {
            let meta = node
                .base
                .catalog
                .snapshot()
                .table(&table)
                .cloned()
                .ok_or_else(|| Error::UnknownTable {
                    table: table.clone(),
                })?;
            let defs = meta
                .columns
                .iter()
                .map(|c| {
                    let null = if c.nullable { "" } else { " NOT NULL" };
                    format!("{} {}{null}", ident(&c.name), c.sql_type)
                })
                .collect::<Vec<_>>()
                .join(", ");
            let setup = format!("CREATE TABLE {} ({defs})", ident(&meta.name));
            let columns = blocking(move || scratch_columns(Some(setup), &sql)).await?;
            node.ddl.add_columns(&table, columns).await?;
            Ok(0)
        }
    }
}

/// Gives a table just created the options of its `WITH (…)`; if they are refused, the
/// table goes again, so that a statement either wholly happens or not at all.
async fn apply_created_options(
    node: &Arc<Node>,
    table: &str,
    changes: Vec<OptionChange>,
) -> Result<()> {
    if changes.is_empty() {
        return Ok(());
    }
    if let Err(e) = node.ddl.set_table_options(table, changes).await {
        let _ = node.ddl.drop_table(table, true).await;
        return Err(e);
    }
    Ok(())
}

pub(crate) fn parse_options(
    table: &str,
    options: &[(String, Option<String>)],
) -> Result<Vec<OptionChange>> {
    let bad = |name: &str, value: &str, what: &str| {
        Error::InvalidArgument(format!(
            "table {table:?}: option {name} = {value} is not valid: {what}"
        ))
    };
    let duration = |name: &str, v: &str| -> Result<u64> {
        let d = humantime::parse_duration(v).map_err(|e| {
            bad(
                name,
                v,
                &format!("{e} (write e.g. '500ms', '5m' or '30days')"),
            )
        })?;
        if d.is_zero() {
            return Err(bad(name, v, "it must be longer than zero"));
        }
        Ok(d.as_millis() as u64)
    };
    let count = |name: &str, v: &str| -> Result<u64> {
        match v.parse::<u64>() {
            Ok(n) if n > 0 => Ok(n),
            _ => Err(bad(name, v, "it must be a positive whole number")),
        }
    };
    let mut out = Vec::new();
    for (name, value) in options {
        let v = value.as_deref();
        let change = match name.as_str() {
            "flush_rows" => OptionChange::FlushRows(v.map(|v| count(name, v)).transpose()?),
            "flush_bytes" => OptionChange::FlushBytes(v.map(|v| count(name, v)).transpose()?),
            "flush_interval" => {
                OptionChange::FlushInterval(v.map(|v| duration(name, v)).transpose()?)
            }
            "retention" => OptionChange::Retention(v.map(|v| duration(name, v)).transpose()?),
            "time_column" => OptionChange::TimeColumn(v.map(str::to_string)),
            other => {
                return Err(Error::InvalidArgument(format!(
                    "table {table:?}: unknown option {other:?}; the options are flush_rows, \
                     flush_bytes, flush_interval (e.g. '5s'), time_column (a DATE or TIMESTAMP \
                     column) and retention (e.g. '30days')"
                )));
            }
        };
        out.push(change);
    }
    Ok(out)
}

fn on_exists(if_not_exists: bool, or_replace: bool) -> OnExists {
    if or_replace {
        OnExists::Replace
    } else if if_not_exists {
        OnExists::Keep
    } else {
        OnExists::Fail
    }
}
