//! Catalog calls: catalogs, schemas, tables (with their Arrow schemas), table types, SQL info,
//! XDBC type info, and key calls (skein has no keys, so those are empty with the right schema).

use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow_flight::sql::metadata::{
    GetCatalogsBuilder, SqlInfoData, SqlInfoDataBuilder, XdbcTypeInfo, XdbcTypeInfoData,
    XdbcTypeInfoDataBuilder,
};
use arrow_flight::sql::{
    CommandGetCatalogs, CommandGetDbSchemas, CommandGetSqlInfo, CommandGetTableTypes,
    CommandGetTables, CommandGetXdbcTypeInfo, Nullable, ProstMessageExt, Searchable, SqlInfo,
    SqlNullOrdering, SqlSupportedCaseSensitivity, SqlSupportedTransaction, XdbcDataType,
    XdbcDatetimeSubcode,
};
use arrow_flight::{FlightDescriptor, FlightEndpoint, FlightInfo, Ticket};
use futures::StreamExt;
use prost::Message;

use super::FlightDataStream;
use super::query::encode;
use crate::error::Result;
use crate::node::Node;

/// Answers that never change while the node runs.
pub(crate) struct Statics {
    pub(crate) sql_info: SqlInfoData,
    pub(crate) xdbc: XdbcTypeInfoData,
}

impl std::fmt::Debug for Statics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Statics").finish_non_exhaustive()
    }
}

impl Statics {
    pub(crate) fn new() -> Self {
        Self {
            sql_info: sql_info_data(),
            xdbc: xdbc_data(),
        }
    }
}

/// The one schema users' tables live in.
const SCHEMA: &str = "main";

/// `FlightInfo` of a catalog command: the command itself is the ticket.
pub(crate) fn info<M: ProstMessageExt>(
    cmd: &M,
    schema: SchemaRef,
    descriptor: FlightDescriptor,
) -> Result<FlightInfo> {
    let ticket = Ticket::new(cmd.as_any().encode_to_vec());
    Ok(FlightInfo::new()
        .try_with_schema(&schema)?
        .with_endpoint(FlightEndpoint::new().with_ticket(ticket))
        .with_descriptor(descriptor))
}

fn one(batch: RecordBatch) -> FlightDataStream {
    encode(
        batch.schema(),
        futures::stream::iter(vec![Ok(batch)]).boxed(),
    )
}

pub(crate) fn catalogs(node: &Node, query: CommandGetCatalogs) -> Result<FlightDataStream> {
    let mut builder: GetCatalogsBuilder = query.into_builder();
    builder.append(node.base.engine.catalog_name());
    Ok(one(builder.build()?))
}

pub(crate) fn schemas(node: &Node, query: CommandGetDbSchemas) -> Result<FlightDataStream> {
    let mut builder = query.into_builder();
    builder.append(node.base.engine.catalog_name(), SCHEMA);
    Ok(one(builder.build()?))
}

pub(crate) fn tables(node: &Node, query: CommandGetTables) -> Result<FlightDataStream> {
    let mut builder = query.into_builder();
    let catalog = node.base.engine.catalog_name();
    for (meta, rt) in node.base.list_tables() {
        if !crate::auth::may_use(&meta.name) {
            continue;
        }
        let schema = rt.schema();
        // Nullability comes from the catalog: DuckDB reports every result column as nullable.
        let fields: Vec<Field> = schema
            .fields()
            .iter()
            .map(|f| {
                let nullable = meta.column(f.name()).is_none_or(|c| c.nullable);
                f.as_ref().clone().with_nullable(nullable)
            })
            .collect();
        builder.append(catalog, SCHEMA, &meta.name, "TABLE", &Schema::new(fields))?;
    }
    Ok(one(builder.build()?))
}

pub(crate) fn table_types(query: CommandGetTableTypes) -> Result<FlightDataStream> {
    let mut builder = query.into_builder();
    builder.append("TABLE");
    Ok(one(builder.build()?))
}

pub(crate) fn sql_info(statics: &Statics, query: CommandGetSqlInfo) -> Result<FlightDataStream> {
    let batch = query.into_builder(&statics.sql_info).build()?;
    Ok(one(batch))
}

pub(crate) fn xdbc_type_info(
    statics: &Statics,
    query: CommandGetXdbcTypeInfo,
) -> Result<FlightDataStream> {
    let batch = query.into_builder(&statics.xdbc).build()?;
    Ok(one(batch))
}

/// An empty result with `schema`.
pub(crate) fn empty(schema: SchemaRef) -> Result<FlightDataStream> {
    Ok(encode(schema, futures::stream::empty().boxed()))
}

/// Schema of GetPrimaryKeys, from the Flight SQL specification.
pub(crate) fn primary_keys_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("catalog_name", DataType::Utf8, true),
        Field::new("db_schema_name", DataType::Utf8, true),
        Field::new("table_name", DataType::Utf8, false),
        Field::new("column_name", DataType::Utf8, false),
        Field::new("key_name", DataType::Utf8, true),
        Field::new("key_sequence", DataType::Int32, false),
    ]))
}

/// Schema of GetImportedKeys, GetExportedKeys and GetCrossReference.
pub(crate) fn foreign_keys_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("pk_catalog_name", DataType::Utf8, true),
        Field::new("pk_db_schema_name", DataType::Utf8, true),
        Field::new("pk_table_name", DataType::Utf8, false),
        Field::new("pk_column_name", DataType::Utf8, false),
        Field::new("fk_catalog_name", DataType::Utf8, true),
        Field::new("fk_db_schema_name", DataType::Utf8, true),
        Field::new("fk_table_name", DataType::Utf8, false),
        Field::new("fk_column_name", DataType::Utf8, false),
        Field::new("key_sequence", DataType::Int32, false),
        Field::new("fk_key_name", DataType::Utf8, true),
        Field::new("pk_key_name", DataType::Utf8, true),
        Field::new("update_rule", DataType::UInt8, false),
        Field::new("delete_rule", DataType::UInt8, false),
    ]))
}

/// What the node really supports, and nothing more.
fn sql_info_data() -> SqlInfoData {
    let mut b = SqlInfoDataBuilder::new();
    b.append(SqlInfo::FlightSqlServerName, "skein");
    b.append(SqlInfo::FlightSqlServerVersion, env!("CARGO_PKG_VERSION"));
    b.append(SqlInfo::FlightSqlServerArrowVersion, "60");
    b.append(SqlInfo::FlightSqlServerReadOnly, false);
    b.append(SqlInfo::FlightSqlServerSql, true);
    b.append(SqlInfo::FlightSqlServerSubstrait, false);
    b.append(
        SqlInfo::FlightSqlServerTransaction,
        SqlSupportedTransaction::None as i32,
    );
    b.append(SqlInfo::FlightSqlServerCancel, true);
    b.append(SqlInfo::FlightSqlServerBulkIngestion, true);
    b.append(SqlInfo::FlightSqlServerIngestTransactionsSupported, false);
    b.append(SqlInfo::FlightSqlServerStatementTimeout, 0i32);
    b.append(SqlInfo::FlightSqlServerTransactionTimeout, 0i32);
    b.append(SqlInfo::SqlDdlCatalog, false);
    b.append(SqlInfo::SqlDdlSchema, false);
    b.append(SqlInfo::SqlDdlTable, true);
    b.append(
        SqlInfo::SqlIdentifierCase,
        SqlSupportedCaseSensitivity::SqlCaseSensitivityCaseInsensitive as i32,
    );
    b.append(SqlInfo::SqlIdentifierQuoteChar, "\"");
    b.append(
        SqlInfo::SqlQuotedIdentifierCase,
        SqlSupportedCaseSensitivity::SqlCaseSensitivityCaseInsensitive as i32,
    );
    b.append(SqlInfo::SqlAllTablesAreSelectable, true);
    b.append(
        SqlInfo::SqlNullOrdering,
        SqlNullOrdering::SqlNullsSortedAtEnd as i32,
    );
    b.append(SqlInfo::SqlSearchStringEscape, "\\");
    b.append(SqlInfo::SqlSupportsColumnAliasing, true);
    b.append(SqlInfo::SqlNullPlusNullIsNull, true);
    b.append(SqlInfo::SqlSupportsTableCorrelationNames, true);
    b.append(SqlInfo::SqlSupportsExpressionsInOrderBy, true);
    b.append(SqlInfo::SqlSupportsOrderByUnrelated, true);
    b.append(SqlInfo::SqlSupportsLikeEscapeClause, true);
    b.append(SqlInfo::SqlSupportsNonNullableColumns, true);
    b.append(SqlInfo::SqlSchemaTerm, "schema");
    b.append(SqlInfo::SqlCatalogTerm, "catalog");
    b.append(SqlInfo::SqlCatalogAtStart, true);
    b.append(SqlInfo::SqlSelectForUpdateSupported, false);
    b.append(SqlInfo::SqlStoredProceduresSupported, false);
    b.append(SqlInfo::SqlCorrelatedSubqueriesSupported, true);
    b.append(SqlInfo::SqlTransactionsSupported, false);
    b.append(SqlInfo::SqlDataDefinitionCausesTransactionCommit, true);
    b.append(SqlInfo::SqlMaxColumnNameLength, 0i64);
    b.append(SqlInfo::SqlMaxTableNameLength, 0i64);
    b.append(SqlInfo::SqlMaxStatementLength, 0i64);
    b.build()
        .unwrap_or_else(|e| panic!("static SQL info is invalid: {e}"))
}

struct TypeRow {
    name: &'static str,
    xdbc: XdbcDataType,
    size: Option<i32>,
    prefix: Option<&'static str>,
    unsigned: Option<bool>,
    scale: Option<(i32, i32)>,
    subcode: Option<XdbcDatetimeSubcode>,
    radix: Option<i32>,
}

fn row(name: &'static str, xdbc: XdbcDataType) -> TypeRow {
    TypeRow {
        name,
        xdbc,
        size: None,
        prefix: None,
        unsigned: None,
        scale: None,
        subcode: None,
        radix: None,
    }
}

/// DuckDB's types as JDBC/ODBC see them.
fn xdbc_data() -> XdbcTypeInfoData {
    use XdbcDataType as X;
    let num = |name, x, size, unsigned| TypeRow {
        size: Some(size),
        unsigned: Some(unsigned),
        radix: Some(10),
        ..row(name, x)
    };
    let text = |name, x| TypeRow {
        prefix: Some("'"),
        ..row(name, x)
    };
    let rows = vec![
        row("BOOLEAN", X::XdbcBit),
        num("TINYINT", X::XdbcTinyint, 3, false),
        num("SMALLINT", X::XdbcSmallint, 5, false),
        num("INTEGER", X::XdbcInteger, 10, false),
        num("BIGINT", X::XdbcBigint, 19, false),
        num("UTINYINT", X::XdbcSmallint, 3, true),
        num("USMALLINT", X::XdbcInteger, 5, true),
        num("UINTEGER", X::XdbcBigint, 10, true),
        num("UBIGINT", X::XdbcDecimal, 20, true),
        num("HUGEINT", X::XdbcDecimal, 38, false),
        TypeRow {
            radix: Some(2),
            ..num("FLOAT", X::XdbcFloat, 24, false)
        },
        TypeRow {
            radix: Some(2),
            ..num("DOUBLE", X::XdbcDouble, 53, false)
        },
        TypeRow {
            scale: Some((0, 38)),
            ..num("DECIMAL", X::XdbcDecimal, 38, false)
        },
        text("VARCHAR", X::XdbcVarchar),
        TypeRow {
            prefix: Some("'"),
            ..row("BLOB", X::XdbcVarbinary)
        },
        TypeRow {
            prefix: Some("DATE '"),
            subcode: Some(XdbcDatetimeSubcode::XdbcSubcodeYear),
            ..row("DATE", X::XdbcDatetime)
        },
        TypeRow {
            prefix: Some("TIME '"),
            subcode: Some(XdbcDatetimeSubcode::XdbcSubcodeTime),
            ..row("TIME", X::XdbcDatetime)
        },
        TypeRow {
            prefix: Some("TIMESTAMP '"),
            subcode: Some(XdbcDatetimeSubcode::XdbcSubcodeTimestamp),
            ..row("TIMESTAMP", X::XdbcDatetime)
        },
        TypeRow {
            prefix: Some("TIMESTAMPTZ '"),
            subcode: Some(XdbcDatetimeSubcode::XdbcSubcodeTimestampWithTimezone),
            ..row("TIMESTAMP WITH TIME ZONE", X::XdbcDatetime)
        },
        TypeRow {
            prefix: Some("INTERVAL '"),
            ..row("INTERVAL", X::XdbcInterval)
        },
    ];
    let mut b = XdbcTypeInfoDataBuilder::new();
    for r in rows {
        let (quoted, suffix) = match r.prefix {
            Some(p) => (Some(p.to_string()), Some("'".to_string())),
            None => (None, None),
        };
        b.append(XdbcTypeInfo {
            type_name: r.name.to_string(),
            data_type: r.xdbc,
            column_size: r.size,
            literal_prefix: quoted,
            literal_suffix: suffix,
            create_params: r
                .scale
                .map(|_| vec!["precision".to_string(), "scale".to_string()]),
            nullable: Nullable::NullabilityNullable,
            case_sensitive: matches!(r.xdbc, X::XdbcVarchar),
            searchable: Searchable::Full,
            unsigned_attribute: r.unsigned,
            fixed_prec_scale: false,
            auto_increment: r.unsigned.map(|_| false),
            local_type_name: Some(r.name.to_string()),
            minimum_scale: r.scale.map(|s| s.0),
            maximum_scale: r.scale.map(|s| s.1),
            sql_data_type: r.xdbc,
            datetime_subcode: r.subcode,
            num_prec_radix: r.radix,
            interval_precision: None,
        });
    }
    b.build()
        .unwrap_or_else(|e| panic!("static XDBC type info is invalid: {e}"))
}
