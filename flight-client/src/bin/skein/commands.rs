//! The catalog and admin commands (`tables`, `describe`, `nodes`, `flush`, `actions`,
//! `action`), shared by the subcommands and the shell's `\d` commands. Their answers are small
//! record batches printed in the chosen output format.

use std::sync::Arc;

use arrow::array::{ArrayRef, BooleanArray, StringArray};
use arrow::datatypes::Schema;
use arrow::record_batch::RecordBatch;
use bytes::Bytes;
use skein_client::{Client, NodeInfo, TableInfo};

use crate::query::Output;

fn strings<'a>(values: impl IntoIterator<Item = &'a str>) -> ArrayRef {
    Arc::new(StringArray::from_iter_values(values))
}

fn batch(columns: Vec<(&str, ArrayRef)>) -> anyhow::Result<RecordBatch> {
    Ok(RecordBatch::try_from_iter(columns)?)
}

/// One row per table: schema, name, type.
pub(crate) fn tables_batch(tables: &[TableInfo]) -> anyhow::Result<RecordBatch> {
    batch(vec![
        (
            "schema",
            strings(tables.iter().map(|t| t.db_schema.as_deref().unwrap_or(""))),
        ),
        ("name", strings(tables.iter().map(|t| t.name.as_str()))),
        (
            "type",
            strings(tables.iter().map(|t| t.table_type.as_str())),
        ),
    ])
}

/// One row per column: name, type, nullable.
pub(crate) fn describe_batch(schema: &Schema) -> anyhow::Result<RecordBatch> {
    let types: Vec<String> = schema
        .fields()
        .iter()
        .map(|f| f.data_type().to_string())
        .collect();
    batch(vec![
        (
            "column",
            strings(schema.fields().iter().map(|f| f.name().as_str())),
        ),
        ("type", strings(types.iter().map(String::as_str))),
        (
            "nullable",
            Arc::new(BooleanArray::from_iter(
                schema.fields().iter().map(|f| Some(f.is_nullable())),
            )),
        ),
    ])
}

fn nodes_batch(nodes: &[NodeInfo]) -> anyhow::Result<RecordBatch> {
    batch(vec![
        ("node_id", strings(nodes.iter().map(|n| n.node_id.as_str()))),
        ("address", strings(nodes.iter().map(|n| n.address.as_str()))),
        ("version", strings(nodes.iter().map(|n| n.version.as_str()))),
        ("state", strings(nodes.iter().map(|n| n.state.as_str()))),
    ])
}

pub(crate) async fn tables(client: &mut Client, output: &mut Output) -> anyhow::Result<()> {
    let mut tables = client.tables(false).await?;
    tables.sort_by(|a, b| (&a.db_schema, &a.name).cmp(&(&b.db_schema, &b.name)));
    output.print(&tables_batch(&tables)?)
}

pub(crate) async fn describe(
    client: &mut Client,
    table: &str,
    output: &mut Output,
) -> anyhow::Result<()> {
    let schema = client.table_schema(table).await?;
    output.print(&describe_batch(&schema)?)
}

pub(crate) async fn nodes(client: &mut Client, output: &mut Output) -> anyhow::Result<()> {
    let nodes = client.nodes().await?;
    output.print(&nodes_batch(&nodes)?)
}

pub(crate) async fn flush(client: &mut Client, table: Option<&str>) -> anyhow::Result<()> {
    client.flush(table).await?;
    match table {
        Some(t) => println!("flushed {t}"),
        None => println!("flushed every table"),
    }
    Ok(())
}

pub(crate) async fn actions(client: &mut Client, output: &mut Output) -> anyhow::Result<()> {
    let mut actions = client.list_actions().await?;
    actions.sort_by(|a, b| a.r#type.cmp(&b.r#type));
    // Some descriptions are indented multi-line text: one line each reads better.
    let descriptions: Vec<String> = actions
        .iter()
        .map(|a| {
            a.description
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect();
    let b = batch(vec![
        ("name", strings(actions.iter().map(|a| a.r#type.as_str()))),
        (
            "description",
            strings(descriptions.iter().map(String::as_str)),
        ),
    ])?;
    output.print(&b)
}

/// Runs an action and prints each result's body: as text when it is UTF-8, else as hex.
pub(crate) async fn action(
    client: &mut Client,
    name: &str,
    body: Option<&str>,
    output: &mut Output,
) -> anyhow::Result<()> {
    let body = Bytes::from(body.unwrap_or_default().to_string());
    for result in client.action(name, body).await? {
        match std::str::from_utf8(&result) {
            Ok(text) => output.line(text)?,
            Err(_) => {
                let hex: String = result.iter().map(|b| format!("{b:02x}")).collect();
                output.line(&hex)?;
            }
        }
    }
    Ok(())
}
