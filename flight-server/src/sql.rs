//! Reading a statement before it runs: what kind it is, which table it names, and rewriting an
//! `INSERT` to land in a staging table. Parsing uses `sqlparser`'s DuckDB dialect; anything it
//! cannot parse is left to DuckDB (see [`Plan::Unparsed`]).

use std::ops::ControlFlow;

use sqlparser::ast::{
    AlterTableOperation, Ident, ObjectName, ObjectNamePart, ObjectType, Statement, TableObject,
};
use sqlparser::dialect::DuckDbDialect;
use sqlparser::parser::Parser;

use crate::engine::ident;
use crate::error::{Error, Result};

/// What a statement asks the node to do.
#[derive(Debug)]
pub(crate) enum Plan {
    /// A read-only query; DuckDB runs it as it is.
    Query,
    /// `sqlparser` could not read it; DuckDB decides (only a query may run this way).
    Unparsed,
    /// `EXPLAIN [ANALYZE] query`: runs as `sql` (the statement as `sqlparser` renders it, so
    /// that the query DuckDB explains is the one checked, `query`); its schema comes from
    /// `probe`, the plain `EXPLAIN`, which runs nothing.
    Explain {
        /// The whole statement, rendered.
        sql: String,
        /// The query explained, rendered.
        query: String,
        /// `EXPLAIN query`, without `ANALYZE` or options.
        probe: String,
    },
    /// `CREATE TABLE name (…)` or `CREATE TABLE name AS query`.
    CreateTable {
        /// Table name.
        table: String,
        /// `IF NOT EXISTS` was given.
        if_not_exists: bool,
        /// `OR REPLACE` was given.
        or_replace: bool,
        /// The query of `CREATE TABLE … AS`.
        query: Option<String>,
        /// Table options of `WITH (name = value, …)`.
        options: Vec<(String, Option<String>)>,
        /// The statement without its options, for DuckDB.
        sql: String,
    },
    /// `DROP TABLE [IF EXISTS] a, b`.
    DropTable {
        /// Table names.
        tables: Vec<String>,
        /// `IF EXISTS` was given.
        if_exists: bool,
    },
    /// `INSERT INTO table …`.
    Insert {
        /// Target table.
        table: String,
        /// The parsed statement, to be retargeted by [`Plan::insert_into`].
        statement: Box<Statement>,
    },
    /// `DELETE FROM table [WHERE …]` or `UPDATE table SET … [WHERE …]`: a copy-on-write
    /// rewrite of the files that hold matching rows.
    Rewrite(Rewrite),
    /// `ALTER TABLE table ADD COLUMN …` (one or more).
    AddColumns {
        /// The table.
        table: String,
        /// The statement, rendered, for DuckDB.
        sql: String,
    },
    /// `ALTER TABLE table SET (name = value, …)`: the table's own options.
    SetOptions {
        /// The table.
        table: String,
        /// Lower-cased option names with their values as written (`NULL`: the node default).
        options: Vec<(String, Option<String>)>,
    },
}

/// A DELETE or UPDATE, taken apart.
#[derive(Debug, Clone)]
pub(crate) struct Rewrite {
    /// The table it changes.
    pub table: String,
    /// The table as the statement names it, with its alias (`t AS x`).
    pub relation: String,
    /// The condition (`None`: every row).
    pub selection: Option<String>,
    /// For UPDATE, `(column, expression)` per assignment; empty for DELETE.
    pub assignments: Vec<(String, String)>,
    /// Whether it is an UPDATE.
    pub update: bool,
}

impl Rewrite {
    /// Whether a row matches, as a boolean expression that is never NULL.
    fn hit(&self) -> String {
        match &self.selection {
            Some(c) => format!("coalesce(({c}), false)"),
            None => "true".to_string(),
        }
    }

    /// The relation with, per row, whether it matches (`__skein_hit`) and, for the rows that
    /// do, its assignments' values (`__skein_a<i>`): like DuckDB's own UPDATE, an expression
    /// is not evaluated for a row the condition excludes. Parameters are numbered (`$n`, see
    /// [`number_placeholders`]), so their order in this text does not matter.
    fn marked(&self) -> String {
        let hit = self.hit();
        let mut cols = vec!["*".to_string()];
        for (i, (_, e)) in self.assignments.iter().enumerate() {
            cols.push(format!("CASE WHEN {hit} THEN ({e}) END AS __skein_a{i}"));
        }
        cols.push(format!("{hit} AS __skein_hit"));
        format!("SELECT {} FROM {}", cols.join(", "), self.relation)
    }

    /// A query counting the rows the statement changes.
    pub(crate) fn count_sql(&self) -> String {
        format!(
            "SELECT count(*) FROM ({}) AS __skein_m WHERE __skein_hit",
            self.marked()
        )
    }

    /// A query giving the table's rows after the statement, for columns `columns` (name, type).
    pub(crate) fn result_sql(&self, columns: &[(String, String)]) -> String {
        let marked = self.marked();
        if !self.update {
            let list: Vec<String> = columns.iter().map(|(c, _)| ident(c)).collect();
            return format!(
                "SELECT {} FROM ({marked}) AS __skein_m WHERE NOT __skein_hit",
                list.join(", ")
            );
        }
        let list: Vec<String> = columns
            .iter()
            .map(|(c, ty)| {
                let assigned = self
                    .assignments
                    .iter()
                    .rposition(|(a, _)| a.eq_ignore_ascii_case(c));
                match assigned {
                    Some(i) => format!(
                        "CASE WHEN __skein_hit THEN CAST(__skein_a{i} AS {ty}) ELSE {q} END AS {q}",
                        q = ident(c)
                    ),
                    None => ident(c),
                }
            })
            .collect();
        format!("SELECT {} FROM ({marked}) AS __skein_m", list.join(", "))
    }

    /// A query whose files-pruning filters are the statement's condition.
    pub(crate) fn pruning_sql(&self) -> String {
        match &self.selection {
            Some(c) => format!("SELECT * FROM {} WHERE {c}", self.relation),
            None => format!("SELECT * FROM {}", self.relation),
        }
    }
}

/// Numbers the statement's positional parameters (`?` → `$1`, `$2`, … in the order they are
/// written), so that they keep their values wherever a rewrite places or repeats them.
fn number_placeholders(statement: &mut Statement) {
    use sqlparser::ast::{Value, ValueWithSpan, VisitMut, VisitorMut};
    struct Numbering(usize);
    impl VisitorMut for Numbering {
        type Break = ();
        fn pre_visit_value(&mut self, value: &mut ValueWithSpan) -> ControlFlow<()> {
            if matches!(&value.value, Value::Placeholder(p) if p == "?") {
                self.0 += 1;
                value.value = Value::Placeholder(format!("${}", self.0));
            }
            ControlFlow::Continue(())
        }
    }
    let _ = statement.visit(&mut Numbering(0));
}

/// Takes a DELETE or UPDATE apart; refuses the forms skein does not rewrite.
fn rewrite_plan(mut statement: Statement, catalog: &str) -> Result<Rewrite> {
    use sqlparser::ast::{AssignmentTarget, FromTable, TableFactor};
    number_placeholders(&mut statement);
    let unsupported = |what: &str| Error::Unsupported(format!("{what} is not supported"));
    let single = |t: &sqlparser::ast::TableWithJoins| -> Result<(String, String)> {
        if !t.joins.is_empty() {
            return Err(unsupported("a join in DELETE or UPDATE"));
        }
        match &t.relation {
            TableFactor::Table { name, .. } => {
                Ok((table_name(name, catalog)?, t.relation.to_string()))
            }
            _ => Err(unsupported("DELETE or UPDATE of anything but a table")),
        }
    };
    match statement {
        Statement::Delete(d) => {
            if !d.tables.is_empty() || d.using.is_some() {
                return Err(unsupported("DELETE of several tables or with USING"));
            }
            if d.returning.is_some() || !d.order_by.is_empty() || d.limit.is_some() {
                return Err(unsupported("DELETE with RETURNING, ORDER BY or LIMIT"));
            }
            let from = match &d.from {
                FromTable::WithFromKeyword(f) | FromTable::WithoutKeyword(f) => f,
            };
            let [t] = from.as_slice() else {
                return Err(unsupported("DELETE from several tables"));
            };
            let (table, relation) = single(t)?;
            Ok(Rewrite {
                table,
                relation,
                selection: d.selection.as_ref().map(|e| e.to_string()),
                assignments: Vec::new(),
                update: false,
            })
        }
        Statement::Update(u) => {
            if u.from.is_some()
                || u.returning.is_some()
                || u.or.is_some()
                || !u.order_by.is_empty()
                || u.limit.is_some()
            {
                return Err(unsupported(
                    "UPDATE with FROM, RETURNING, OR …, ORDER BY or LIMIT",
                ));
            }
            let (table, relation) = single(&u.table)?;
            let mut assignments = Vec::new();
            for a in &u.assignments {
                let AssignmentTarget::ColumnName(name) = &a.target else {
                    return Err(unsupported("UPDATE of a tuple of columns"));
                };
                let column = name
                    .0
                    .last()
                    .and_then(|p| p.as_ident())
                    .map(|i| i.value.clone())
                    .ok_or_else(|| {
                        Error::InvalidArgument(format!("UPDATE target {name} is not a column"))
                    })?;
                assignments.push((column, a.value.to_string()));
            }
            Ok(Rewrite {
                table,
                relation,
                selection: u.selection.as_ref().map(|e| e.to_string()),
                assignments,
                update: true,
            })
        }
        _ => Err(Error::Internal("not a DELETE or UPDATE".into())),
    }
}

impl Plan {
    /// Whether the statement only reads.
    pub(crate) fn is_query(&self) -> bool {
        matches!(self, Plan::Query | Plan::Unparsed | Plan::Explain { .. })
    }

    /// The text DuckDB runs for a query: the statement as given, or for `EXPLAIN` as rendered.
    pub(crate) fn query_text<'a>(&'a self, sql: &'a str) -> &'a str {
        match self {
            Plan::Explain { sql, .. } => sql,
            _ => sql,
        }
    }

    /// The SQL of an `INSERT` aimed at `target` (a qualified, quoted name) instead.
    pub(crate) fn insert_into(&self, target: &[&str]) -> Option<String> {
        let Plan::Insert { statement, .. } = self else {
            return None;
        };
        let mut statement = statement.clone();
        if let Statement::Insert(insert) = statement.as_mut() {
            insert.table = TableObject::TableName(ObjectName(
                target
                    .iter()
                    .map(|p| ObjectNamePart::Identifier(Ident::with_quote('"', *p)))
                    .collect(),
            ));
        }
        Some(statement.to_string())
    }
}

/// The table a possibly qualified name refers to. Only the `main` schema holds tables.
fn table_name(name: &ObjectName, catalog: &str) -> Result<String> {
    let parts: Vec<&str> = name
        .0
        .iter()
        .map(|p| p.as_ident().map(|i| i.value.as_str()))
        .collect::<Option<_>>()
        .ok_or_else(|| Error::InvalidArgument(format!("unsupported table name {name}")))?;
    let bad = || {
        Error::InvalidArgument(format!(
            "table {name} is outside this database; tables live in {catalog}.main"
        ))
    };
    match parts.as_slice() {
        [table] => Ok((*table).to_string()),
        [schema, table] if schema.eq_ignore_ascii_case("main") => Ok((*table).to_string()),
        [cat, schema, table]
            if cat.eq_ignore_ascii_case(catalog) && schema.eq_ignore_ascii_case("main") =>
        {
            Ok((*table).to_string())
        }
        _ => Err(bad()),
    }
}

/// Table options written `name = value`, names lower-cased, values as written (`None` for
/// NULL).
fn option_pairs(options: &[sqlparser::ast::SqlOption]) -> Result<Vec<(String, Option<String>)>> {
    let mut out = Vec::new();
    for o in options {
        let sqlparser::ast::SqlOption::KeyValue { key, value } = o else {
            return Err(Error::InvalidArgument(format!(
                "table option {o} must be written name = value"
            )));
        };
        let value = match value {
            sqlparser::ast::Expr::Value(v) => match &v.value {
                sqlparser::ast::Value::Null => None,
                sqlparser::ast::Value::Number(n, _) => Some(n.clone()),
                sqlparser::ast::Value::SingleQuotedString(s) => Some(s.clone()),
                other => Some(other.to_string()),
            },
            sqlparser::ast::Expr::Identifier(i) => Some(i.value.clone()),
            other => Some(other.to_string()),
        };
        out.push((key.value.to_lowercase(), value));
    }
    Ok(out)
}

/// Reads `sql` with both parsers and checks it for `caller`: the only road to a plan that runs.
///
/// `sqlparser` classifies the statement and is a first wall ([`crate::sandbox::check_statement`],
/// the caller's tables); DuckDB's own parse of every text it will run is the authority: each is
/// exactly one statement, a query is one query, and what a query touches is checked on DuckDB's
/// tree ([`crate::sandbox::check_query`]).
pub(crate) fn checked_plan(
    parser: &crate::duckdb_parse::Parser,
    sql: &str,
    catalog: &str,
    caller: Option<&crate::auth::Identity>,
) -> Result<Plan> {
    use crate::sandbox::{check_one_statement, check_query};
    let plan = plan_for(sql, catalog, caller)?;
    let query = |text: &str, agrees: bool| check_query(parser, text, catalog, caller, agrees);
    match &plan {
        Plan::Query => query(sql, true)?,
        Plan::Unparsed => query(sql, false)?,
        Plan::Explain {
            sql: whole,
            query: q,
            ..
        } => {
            query(q, true)?;
            check_one_statement(parser, whole)?;
        }
        Plan::CreateTable { sql, query: q, .. } => {
            check_one_statement(parser, sql)?;
            if let Some(q) = q {
                query(q, true)?;
            }
        }
        Plan::Insert { statement, .. } => {
            check_one_statement(parser, &statement.to_string())?;
            if let Statement::Insert(insert) = statement.as_ref()
                && let Some(source) = &insert.source
            {
                query(&source.to_string(), true)?;
            }
        }
        Plan::Rewrite(r) => query(&r.count_sql(), true)?,
        Plan::AddColumns { sql, .. } => check_one_statement(parser, sql)?,
        Plan::DropTable { .. } | Plan::SetOptions { .. } => {}
    }
    Ok(plan)
}

/// Reads `sql` with `sqlparser` alone and decides how it runs; nothing is checked against
/// DuckDB's reading (see [`checked_plan`]). For the tests of the classification itself.
#[cfg(test)]
fn plan(sql: &str, catalog: &str) -> Result<Plan> {
    plan_for(sql, catalog, None)
}

fn plan_for(sql: &str, catalog: &str, caller: Option<&crate::auth::Identity>) -> Result<Plan> {
    if sql.trim().trim_end_matches(';').trim().is_empty() {
        return Err(Error::InvalidArgument("the SQL statement is empty".into()));
    }
    let mut statements = match Parser::parse_sql(&DuckDbDialect {}, sql) {
        Ok(s) => s,
        Err(_) => return Ok(Plan::Unparsed),
    };
    if statements.len() != 1 {
        return Err(Error::InvalidArgument(format!(
            "send one SQL statement per request (got {})",
            statements.len()
        )));
    }
    crate::sandbox::check_statement(&statements[0])?;
    if let Some(caller) = caller {
        crate::auth::check_relations(caller, &statements[0])?;
    }
    let unsupported = |what: &str| {
        Err(Error::Unsupported(format!(
            "{what} is not supported; skein runs queries (SELECT, WITH, VALUES, EXPLAIN, \
             DESCRIBE, SHOW) and CREATE TABLE, CREATE TABLE AS, DROP TABLE, INSERT, DELETE, \
             UPDATE and ALTER TABLE … ADD COLUMN or SET (options)"
        )))
    };
    if let Statement::Explain {
        describe_alias: sqlparser::ast::DescribeAlias::Explain,
        statement: inner,
        ..
    } = &statements[0]
    {
        if !matches!(**inner, Statement::Query(_)) {
            return Err(Error::Forbidden(
                "EXPLAIN is allowed only of queries: EXPLAIN ANALYZE runs its statement".into(),
            ));
        }
        let query = inner.to_string();
        let probe = format!("EXPLAIN {query}");
        let sql = statements[0].to_string();
        return Ok(Plan::Explain { sql, query, probe });
    }
    match statements.remove(0) {
        Statement::Query(_)
        | Statement::Explain { .. }
        | Statement::ExplainTable { .. }
        | Statement::ShowTables { .. }
        | Statement::ShowColumns { .. } => Ok(Plan::Query),
        Statement::CreateTable(mut ct) => {
            if ct.temporary {
                return unsupported("CREATE TEMPORARY TABLE");
            }
            let options = match std::mem::take(&mut ct.table_options) {
                sqlparser::ast::CreateTableOptions::None => Vec::new(),
                sqlparser::ast::CreateTableOptions::With(o) => option_pairs(&o)?,
                _ => return unsupported("CREATE TABLE options other than WITH (name = value)"),
            };
            // As rendered: DuckDB runs what was checked, never a text the checker read otherwise.
            let text = Statement::CreateTable(ct.clone()).to_string();
            Ok(Plan::CreateTable {
                table: table_name(&ct.name, catalog)?,
                if_not_exists: ct.if_not_exists,
                or_replace: ct.or_replace,
                query: ct.query.as_ref().map(|q| q.to_string()),
                options,
                sql: text,
            })
        }
        Statement::Drop {
            object_type: ObjectType::Table,
            if_exists,
            names,
            ..
        } => Ok(Plan::DropTable {
            tables: names
                .iter()
                .map(|n| table_name(n, catalog))
                .collect::<Result<_>>()?,
            if_exists,
        }),
        Statement::Insert(insert) => {
            let TableObject::TableName(name) = &insert.table else {
                return unsupported("INSERT INTO a table function");
            };
            let table = table_name(name, catalog)?;
            Ok(Plan::Insert {
                table,
                statement: Box::new(Statement::Insert(insert)),
            })
        }
        Statement::AlterTable(alter)
            if alter.operations.len() == 1
                && matches!(
                    alter.operations[0],
                    AlterTableOperation::SetOptionsParens { .. }
                ) =>
        {
            let AlterTableOperation::SetOptionsParens { options } = &alter.operations[0] else {
                return unsupported("this ALTER TABLE");
            };
            Ok(Plan::SetOptions {
                table: table_name(&alter.name, catalog)?,
                options: option_pairs(options)?,
            })
        }
        Statement::AlterTable(alter) => {
            let only_adds = !alter.operations.is_empty()
                && alter
                    .operations
                    .iter()
                    .all(|op| matches!(op, AlterTableOperation::AddColumn { .. }));
            if !only_adds {
                return unsupported("ALTER TABLE other than ADD COLUMN and SET (options)");
            }
            Ok(Plan::AddColumns {
                table: table_name(&alter.name, catalog)?,
                sql: Statement::AlterTable(alter).to_string(),
            })
        }
        s @ (Statement::Update(_) | Statement::Delete(_)) => {
            Ok(Plan::Rewrite(rewrite_plan(s, catalog)?))
        }
        other => {
            let text = other.to_string();
            let what = text
                .split_whitespace()
                .take(2)
                .collect::<Vec<_>>()
                .join(" ");
            unsupported(&format!("the statement {what} …"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rewrite_parameters_are_numbered_in_written_order() {
        let Ok(Plan::Rewrite(r)) = plan(
            "UPDATE t SET v = v + ?, g = ? WHERE id < ? AND g <> ?",
            "db",
        ) else {
            panic!("not a rewrite");
        };
        assert_eq!(
            r.assignments,
            [("v".into(), "v + $1".into()), ("g".into(), "$2".into())]
        );
        assert_eq!(r.selection.as_deref(), Some("id < $3 AND g <> $4"));
        // Numbered parameters may repeat: the condition guards every assignment.
        assert_eq!(r.count_sql().matches("$3").count(), 3);
        let Ok(Plan::Rewrite(d)) = plan("DELETE FROM t WHERE id = $2 OR id = $1", "db") else {
            panic!("not a rewrite");
        };
        assert_eq!(d.selection.as_deref(), Some("id = $2 OR id = $1"));
    }

    #[test]
    fn classifies_statements() {
        assert!(matches!(plan("SELECT 1", "db"), Ok(Plan::Query)));
        assert!(matches!(
            plan("with x as (select 1) select * from x;", "db"),
            Ok(Plan::Query)
        ));
        assert!(matches!(
            plan("CREATE TABLE IF NOT EXISTS main.t (a INT)", "db"),
            Ok(Plan::CreateTable { table, if_not_exists: true, query: None, .. }) if table == "t"
        ));
        assert!(matches!(
            plan("CREATE TABLE t AS SELECT 1 AS a", "db"),
            Ok(Plan::CreateTable { query: Some(_), .. })
        ));
        assert!(matches!(
            plan("DROP TABLE IF EXISTS a, db.main.b", "db"),
            Ok(Plan::DropTable { tables, if_exists: true }) if tables == ["a", "b"]
        ));
        assert!(matches!(
            plan("ALTER TABLE t ADD COLUMN c INT", "db"),
            Ok(Plan::AddColumns { .. })
        ));
        assert!(matches!(
            plan("ALTER TABLE t DROP COLUMN c", "db"),
            Err(Error::Unsupported(_))
        ));
        assert!(matches!(
            plan("COPY t TO '/tmp/x.csv'", "db"),
            Err(Error::Unsupported(_))
        ));
        assert!(matches!(
            plan("SELECT 1; SELECT 2", "db"),
            Err(Error::InvalidArgument(_))
        ));
        assert!(matches!(plan("  ;", "db"), Err(Error::InvalidArgument(_))));
        assert!(matches!(
            plan("SELECT * FROM other.t", "db"),
            Ok(Plan::Query)
        ));
        assert!(matches!(
            plan("INSERT INTO other.t VALUES (1)", "db"),
            Err(Error::InvalidArgument(_))
        ));
    }

    #[test]
    fn insert_is_retargeted() {
        let p = plan(
            "INSERT INTO t (a, b) SELECT x, y FROM src WHERE x > ?",
            "db",
        )
        .expect("plan");
        let sql = p.insert_into(&["temp", "stage_1"]).expect("insert");
        assert_eq!(
            sql,
            "INSERT INTO \"temp\".\"stage_1\" (a, b) SELECT x, y FROM src WHERE x > ?"
        );
    }
}
