//! File pruning: which of a table's files a query can skip, from the filters it puts on the
//! table and the per-column statistics in the manifest.
//!
//! [`analyse`] reads the SQL with `sqlparser` and finds, for every reference to a table in a
//! `FROM`, the conjuncts of that `SELECT`'s `WHERE` that constrain the table's columns:
//! comparisons with a constant (`=`, `<`, `<=`, `>`, `>=`), `BETWEEN`, `IN (…)`, `IS [NOT] NULL`.
//! A file is read if it may match every constraint of at least one reference ([`Filter::keep`]).
//! Anything not understood constrains nothing, so pruning only ever skips files that cannot
//! hold a row the query uses:
//! - a table referenced anywhere the analysis does not reach (a count of all relations checks
//!   it), or SQL that does not parse, is read whole;
//! - references on the NULL-supplying side of an outer join are read whole;
//! - an unqualified column is attributed only when every relation of the `FROM` is a known table
//!   and exactly one of them has the column;
//! - floating-point columns are not pruned on their values (NaN sorts above every number in
//!   DuckDB but is not in Parquet statistics), and string statistics only when short, as
//!   writers may truncate long ones.

use std::collections::{HashMap, HashSet};
use std::ops::ControlFlow;

use skein_storage::{ColumnMeta, FileMeta, StatValue, TableMeta};
use sqlparser::ast::{
    BinaryOperator, DataType, Expr, JoinOperator, Select, SetExpr, TableFactor, TableWithJoins,
    Value, Visit, Visitor,
};
use sqlparser::dialect::DuckDbDialect;
use sqlparser::parser::Parser;

/// A constant in the statistics' physical form.
#[derive(Debug, Clone, PartialEq)]
enum Constant {
    Int(i64),
    Str(String),
}

/// One constraint on a column.
#[derive(Debug, Clone, PartialEq)]
enum Constraint {
    Eq(Constant),
    Lt(Constant),
    LtEq(Constant),
    Gt(Constant),
    GtEq(Constant),
    Between(Constant, Constant),
    In(Vec<Constant>),
    IsNull,
    IsNotNull,
}

/// What one query needs of one table.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Per reference to the table: its constraints as (lower-cased column, constraint).
    /// `None`: read every file.
    references: Option<Vec<Vec<(String, Constraint)>>>,
}

impl Filter {
    /// Reads every file.
    pub fn all() -> Self {
        Self { references: None }
    }

    /// Whether `file` may hold rows the query needs.
    pub fn keep(&self, file: &FileMeta) -> bool {
        match &self.references {
            None => true,
            Some(refs) => refs
                .iter()
                .any(|constraints| constraints.iter().all(|(c, k)| may_match(file, c, k))),
        }
    }
}

/// Short strings only: a writer may truncate long statistics.
const MAX_STRING_STAT: usize = 32;

fn stat_constant(v: &StatValue) -> Option<Constant> {
    match v {
        StatValue::Int(i) => Some(Constant::Int(*i)),
        StatValue::Str(s) if s.len() < MAX_STRING_STAT => Some(Constant::Str(s.clone())),
        _ => None,
    }
}

fn cmp(a: &Constant, b: &Constant) -> Option<std::cmp::Ordering> {
    match (a, b) {
        (Constant::Int(x), Constant::Int(y)) => Some(x.cmp(y)),
        (Constant::Str(x), Constant::Str(y)) => Some(x.as_bytes().cmp(y.as_bytes())),
        _ => None,
    }
}

/// Whether a file may hold a row whose `column` satisfies `constraint`.
fn may_match(file: &FileMeta, column: &str, constraint: &Constraint) -> bool {
    use std::cmp::Ordering::{Greater, Less};
    let has_column = file.columns.iter().any(|c| c.eq_ignore_ascii_case(column));
    let stats = file
        .stats
        .iter()
        .find(|s| s.column.eq_ignore_ascii_case(column));
    // A file without the column holds only NULLs in it.
    let nulls = if has_column {
        stats.and_then(|s| s.null_count)
    } else {
        Some(file.rows)
    };
    match constraint {
        Constraint::IsNull => return nulls != Some(0),
        Constraint::IsNotNull => return nulls != Some(file.rows),
        _ if nulls == Some(file.rows) => return false,
        _ => {}
    }
    let Some(stats) = stats else { return true };
    let (Some(min), Some(max)) = (
        stats.min.as_ref().and_then(stat_constant),
        stats.max.as_ref().and_then(stat_constant),
    ) else {
        return true;
    };
    let below = |v: &Constant| cmp(&max, v) == Some(Less); // every value < v
    let above = |v: &Constant| cmp(&min, v) == Some(Greater); // every value > v
    let at_most = |v: &Constant| matches!(cmp(&max, v), Some(Less | std::cmp::Ordering::Equal));
    let at_least = |v: &Constant| matches!(cmp(&min, v), Some(Greater | std::cmp::Ordering::Equal));
    match constraint {
        Constraint::Eq(v) => !(below(v) || above(v)),
        Constraint::Lt(v) => !at_least(v),
        Constraint::LtEq(v) => !above(v),
        Constraint::Gt(v) => !at_most(v),
        Constraint::GtEq(v) => !below(v),
        Constraint::Between(lo, hi) => !(below(lo) || above(hi)),
        Constraint::In(values) => values.iter().any(|v| !(below(v) || above(v))),
        Constraint::IsNull | Constraint::IsNotNull => true,
    }
}

/// How a column's values are compared: the physical form of its statistics.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Integer,
    /// Unscaled integers with this many decimal places.
    Decimal(u32),
    Date,
    Timestamp,
    Text,
}

fn kind_of(sql_type: &str) -> Option<Kind> {
    let t = sql_type.trim().to_ascii_uppercase();
    if let Some(args) = t
        .strip_prefix("DECIMAL(")
        .or_else(|| t.strip_prefix("NUMERIC("))
    {
        let (p, s) = args.trim_end_matches(')').split_once(',')?;
        let (p, s): (u32, u32) = (p.trim().parse().ok()?, s.trim().parse().ok()?);
        // Wider decimals are fixed-length byte arrays in Parquet, without usable statistics.
        return (p <= 18).then_some(Kind::Decimal(s));
    }
    Some(match t.as_str() {
        // Not UINTEGER: it is stored as INT32, whose statistics wrap above 2^31.
        "TINYINT" | "SMALLINT" | "INTEGER" | "INT" | "BIGINT" | "UTINYINT" | "USMALLINT" => {
            Kind::Integer
        }
        "DATE" => Kind::Date,
        "TIMESTAMP" => Kind::Timestamp,
        "VARCHAR" | "TEXT" | "STRING" => Kind::Text,
        _ => return None,
    })
}

/// The constant an expression stands for, in the form `kind`'s statistics have.
fn constant(expr: &Expr, kind: Kind) -> Option<Constant> {
    match expr {
        Expr::Nested(e) => constant(e, kind),
        Expr::UnaryOp {
            op: sqlparser::ast::UnaryOperator::Minus,
            expr,
        } => match constant(expr, kind)? {
            Constant::Int(i) => Some(Constant::Int(i.checked_neg()?)),
            Constant::Str(_) => None,
        },
        Expr::Value(v) => match (&v.value, kind) {
            (Value::Number(n, _), Kind::Integer) => n.parse().ok().map(Constant::Int),
            (Value::Number(n, _), Kind::Decimal(scale)) => scaled(n, scale).map(Constant::Int),
            (Value::SingleQuotedString(s), Kind::Text) => Some(Constant::Str(s.clone())),
            (Value::SingleQuotedString(s), Kind::Date | Kind::Timestamp) => temporal(s, kind),
            _ => None,
        },
        Expr::TypedString(t) => {
            let text = match &t.value.value {
                Value::SingleQuotedString(s) => s,
                _ => return None,
            };
            match (&t.data_type, kind) {
                (DataType::Date, Kind::Date) => temporal(text, kind),
                (DataType::Timestamp(None, _) | DataType::Datetime(None), Kind::Timestamp) => {
                    temporal(text, kind)
                }
                _ => None,
            }
        }
        Expr::Cast {
            expr, data_type, ..
        } => match (data_type, kind, expr.as_ref()) {
            (DataType::Date, Kind::Date, Expr::Value(v))
            | (DataType::Timestamp(None, _), Kind::Timestamp, Expr::Value(v)) => match &v.value {
                Value::SingleQuotedString(s) => temporal(s, kind),
                _ => None,
            },
            _ => None,
        },
        _ => None,
    }
}

/// `12.5` with scale 2 → 1250; only exact values.
fn scaled(number: &str, scale: u32) -> Option<i64> {
    let (int, frac) = number.split_once('.').unwrap_or((number, ""));
    if frac.len() > scale as usize || number.contains(['e', 'E']) {
        return None;
    }
    let digits = format!("{int}{frac:0<width$}", width = scale as usize);
    digits.parse().ok()
}

/// Days (dates) or microseconds (timestamps) since 1970-01-01.
fn temporal(text: &str, kind: Kind) -> Option<Constant> {
    let epoch = chrono::NaiveDate::from_ymd_opt(1970, 1, 1)?;
    match kind {
        Kind::Date => {
            let d = chrono::NaiveDate::parse_from_str(text.trim(), "%Y-%m-%d").ok()?;
            Some(Constant::Int((d - epoch).num_days()))
        }
        Kind::Timestamp => {
            let t = text.trim();
            let ts = chrono::NaiveDateTime::parse_from_str(t, "%Y-%m-%d %H:%M:%S%.f")
                .or_else(|_| chrono::NaiveDateTime::parse_from_str(t, "%Y-%m-%dT%H:%M:%S%.f"))
                .ok()
                .or_else(|| {
                    chrono::NaiveDate::parse_from_str(t, "%Y-%m-%d")
                        .ok()?
                        .and_hms_opt(0, 0, 0)
                })?;
            Some(Constant::Int(ts.and_utc().timestamp_micros()))
        }
        _ => None,
    }
}

/// A reference to a known table in one `FROM`.
struct Reference {
    /// Lower-cased table name.
    table: String,
    /// Lower-cased alias, or the table name.
    qualifier: String,
    /// Whether its rows are filtered by the `WHERE` (not the NULL side of an outer join).
    prunable: bool,
}

struct Analyser<'a> {
    tables: &'a HashMap<String, &'a TableMeta>,
    /// Known tables the statement names anywhere: relations, `TABLE t`, string constants.
    referenced: HashSet<String>,
    /// Known tables read in ways the analysis cannot see into (`TABLE t`, a name inside a
    /// string, as `query_table('t')` takes it): read whole.
    whole: HashSet<String>,
    /// Every relation naming a known table, anywhere in the statement.
    relations: HashMap<String, usize>,
    /// What each analysed reference constrains, per table.
    references: HashMap<String, Vec<Vec<(String, Constraint)>>>,
}

fn last_name(name: &sqlparser::ast::ObjectName) -> Option<String> {
    name.0
        .last()
        .and_then(|p| p.as_ident())
        .map(|i| i.value.to_lowercase())
}

impl Analyser<'_> {
    /// The references of one `FROM` item; `None` if it holds relations that are not tables.
    fn collect(&self, item: &TableWithJoins, out: &mut Vec<Reference>, known: &mut bool) {
        let outer_right = item.joins.iter().any(|j| {
            matches!(
                j.join_operator,
                JoinOperator::Right(_) | JoinOperator::RightOuter(_) | JoinOperator::FullOuter(_)
            )
        });
        self.factor(&item.relation, !outer_right, out, known);
        for join in &item.joins {
            let prunable = matches!(
                join.join_operator,
                JoinOperator::Join(_) | JoinOperator::Inner(_) | JoinOperator::CrossJoin(_)
            ) && !outer_right;
            self.factor(&join.relation, prunable, out, known);
        }
    }

    fn factor(&self, f: &TableFactor, prunable: bool, out: &mut Vec<Reference>, known: &mut bool) {
        match f {
            TableFactor::Table {
                name,
                alias,
                args,
                sample,
                ..
            } if args.is_none() => match last_name(name) {
                Some(table) if self.tables.contains_key(&table) => out.push(Reference {
                    qualifier: alias
                        .as_ref()
                        .map(|a| a.name.value.to_lowercase())
                        .unwrap_or_else(|| table.clone()),
                    table,
                    // Renamed columns (`t AS a(x, y)`) would need a mapping; a sample is drawn
                    // from every row.
                    prunable: prunable
                        && sample.is_none()
                        && alias.as_ref().is_none_or(|a| a.columns.is_empty()),
                }),
                _ => *known = false,
            },
            TableFactor::NestedJoin {
                table_with_joins, ..
            } => {
                // Nested joins: their own outer joins are not tracked; read them whole.
                let mut inner = Vec::new();
                self.collect(table_with_joins, &mut inner, known);
                out.extend(inner.into_iter().map(|r| Reference {
                    prunable: false,
                    ..r
                }));
            }
            _ => *known = false,
        }
    }

    /// The reference and column a column expression names, if exactly one.
    fn resolve<'r>(
        &self,
        expr: &Expr,
        refs: &'r [Reference],
        known: bool,
    ) -> Option<(&'r Reference, String)> {
        let (qualifier, column) = match expr {
            Expr::Identifier(i) => (None, i.value.to_lowercase()),
            // Only `q.c`: longer paths may be struct fields.
            Expr::CompoundIdentifier(parts) if parts.len() == 2 => (
                Some(parts[parts.len() - 2].value.to_lowercase()),
                parts[parts.len() - 1].value.to_lowercase(),
            ),
            Expr::Nested(e) => return self.resolve(e, refs, known),
            _ => return None,
        };
        let has = |r: &Reference| {
            self.tables
                .get(&r.table)
                .is_some_and(|t| t.column(&column).is_some())
        };
        let mut candidates = refs.iter().filter(|r| match &qualifier {
            Some(q) => *q == r.qualifier,
            None => has(r),
        });
        let first = candidates.next()?;
        if candidates.next().is_some() || (qualifier.is_none() && !known) || !has(first) {
            return None;
        }
        Some((first, column))
    }

    fn column_kind(&self, r: &Reference, column: &str) -> Option<Kind> {
        let meta: &TableMeta = self.tables.get(&r.table)?;
        let c: &ColumnMeta = meta.column(column)?;
        kind_of(&c.sql_type)
    }

    /// The constraint one conjunct puts on one reference.
    fn constraint<'r>(
        &self,
        e: &Expr,
        refs: &'r [Reference],
        known: bool,
    ) -> Option<(&'r Reference, String, Constraint)> {
        let col = |x: &Expr| self.resolve(x, refs, known);
        match e {
            Expr::Nested(inner) => self.constraint(inner, refs, known),
            Expr::BinaryOp { left, op, right } => {
                let (r, c, value, flipped) = match (col(left), col(right)) {
                    (Some((r, c)), None) => (r, c, right.as_ref(), false),
                    (None, Some((r, c))) => (r, c, left.as_ref(), true),
                    _ => return None,
                };
                let v = constant(value, self.column_kind(r, &c)?)?;
                let k = match (op, flipped) {
                    (BinaryOperator::Eq, _) => Constraint::Eq(v),
                    (BinaryOperator::Lt, false) | (BinaryOperator::Gt, true) => Constraint::Lt(v),
                    (BinaryOperator::LtEq, false) | (BinaryOperator::GtEq, true) => {
                        Constraint::LtEq(v)
                    }
                    (BinaryOperator::Gt, false) | (BinaryOperator::Lt, true) => Constraint::Gt(v),
                    (BinaryOperator::GtEq, false) | (BinaryOperator::LtEq, true) => {
                        Constraint::GtEq(v)
                    }
                    _ => return None,
                };
                Some((r, c, k))
            }
            Expr::Between {
                expr,
                negated: false,
                low,
                high,
            } => {
                let (r, c) = col(expr)?;
                let kind = self.column_kind(r, &c)?;
                let k = Constraint::Between(constant(low, kind)?, constant(high, kind)?);
                Some((r, c, k))
            }
            Expr::InList {
                expr,
                list,
                negated: false,
            } => {
                let (r, c) = col(expr)?;
                let kind = self.column_kind(r, &c)?;
                let values = list
                    .iter()
                    .map(|v| constant(v, kind))
                    .collect::<Option<Vec<_>>>()?;
                Some((r, c, Constraint::In(values)))
            }
            Expr::IsNull(x) => col(x).map(|(r, c)| (r, c, Constraint::IsNull)),
            Expr::IsNotNull(x) => col(x).map(|(r, c)| (r, c, Constraint::IsNotNull)),
            _ => None,
        }
    }

    fn select(&mut self, select: &Select) {
        let mut refs = Vec::new();
        let mut known = true;
        for item in &select.from {
            self.collect(item, &mut refs, &mut known);
        }
        let mut conjuncts = Vec::new();
        if let Some(w) = &select.selection {
            split_and(w, &mut conjuncts);
        }
        let mut per_ref: Vec<Vec<(String, Constraint)>> = vec![Vec::new(); refs.len()];
        for c in conjuncts {
            if let Some((r, column, k)) = self.constraint(c, &refs, known)
                && let Some(i) = refs.iter().position(|x| std::ptr::eq(x, r))
                && refs[i].prunable
            {
                per_ref[i].push((column, k));
            }
        }
        for (r, constraints) in refs.iter().zip(per_ref) {
            self.references
                .entry(r.table.clone())
                .or_default()
                .push(constraints);
        }
    }
}

impl Analyser<'_> {
    /// Finds `TABLE t` in a query body and its set operations.
    fn set_expr(&mut self, body: &SetExpr) {
        match body {
            SetExpr::Table(t) => {
                if let Some(name) = &t.table_name {
                    let name = name.to_lowercase();
                    if self.tables.contains_key(&name) {
                        self.referenced.insert(name.clone());
                        self.whole.insert(name);
                    }
                }
            }
            SetExpr::SetOperation { left, right, .. } => {
                self.set_expr(left);
                self.set_expr(right);
            }
            _ => {}
        }
    }
}

fn split_and<'e>(e: &'e Expr, out: &mut Vec<&'e Expr>) {
    match e {
        Expr::BinaryOp {
            left,
            op: BinaryOperator::And,
            right,
        } => {
            split_and(left, out);
            split_and(right, out);
        }
        Expr::Nested(inner) => split_and(inner, out),
        other => out.push(other),
    }
}

impl Visitor for Analyser<'_> {
    type Break = ();

    fn pre_visit_relation(&mut self, relation: &sqlparser::ast::ObjectName) -> ControlFlow<()> {
        if let Some(name) = last_name(relation)
            && self.tables.contains_key(&name)
        {
            self.referenced.insert(name.clone());
            *self.relations.entry(name).or_default() += 1;
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_query(&mut self, query: &sqlparser::ast::Query) -> ControlFlow<()> {
        self.set_expr(&query.body);
        ControlFlow::Continue(())
    }

    fn pre_visit_value(&mut self, value: &sqlparser::ast::ValueWithSpan) -> ControlFlow<()> {
        if let Some(text) = value.value.clone().into_string() {
            let text = text.to_lowercase();
            let named: Vec<String> = self
                .tables
                .keys()
                .filter(|t| text.contains(t.as_str()))
                .cloned()
                .collect();
            for t in named {
                self.referenced.insert(t.clone());
                self.whole.insert(t);
            }
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_select(&mut self, select: &Select) -> ControlFlow<()> {
        self.select(select);
        ControlFlow::Continue(())
    }
}

/// The identifiers in `sql` (lower-cased, quoted or not), if it tokenizes.
pub fn identifiers(sql: &str) -> Option<HashSet<String>> {
    let tokens = sqlparser::tokenizer::Tokenizer::new(&DuckDbDialect {}, sql)
        .tokenize()
        .ok()?;
    Some(
        tokens
            .into_iter()
            .filter_map(|t| match t {
                sqlparser::tokenizer::Token::Word(w) => Some(w.value.to_lowercase()),
                _ => None,
            })
            .collect(),
    )
}

/// What a statement reads of the candidate tables.
#[derive(Debug, Default)]
pub struct Analysis {
    /// Per lower-cased table name, which files it needs.
    pub filters: HashMap<String, Filter>,
    /// The candidates the statement names, if it parsed (else every candidate may be read).
    pub referenced: Option<HashSet<String>>,
}

/// The filter of each of `tables` (by lower-cased name) in `sql`. Tables the analysis does not
/// account for in full get [`Filter::all`].
pub fn analyse(sql: &str, tables: &HashMap<String, &TableMeta>) -> Analysis {
    let mut result: HashMap<String, Filter> =
        tables.keys().map(|t| (t.clone(), Filter::all())).collect();
    let Ok(statements) = Parser::parse_sql(&DuckDbDialect {}, sql) else {
        return Analysis {
            filters: result,
            referenced: None,
        };
    };
    let mut analyser = Analyser {
        tables,
        referenced: HashSet::new(),
        whole: HashSet::new(),
        relations: HashMap::new(),
        references: HashMap::new(),
    };
    let _ = statements.visit(&mut analyser);
    for (table, refs) in analyser.references {
        let complete =
            analyser.relations.get(&table) == Some(&refs.len()) && !analyser.whole.contains(&table);
        if complete && !refs.is_empty() {
            result.insert(
                table,
                Filter {
                    references: Some(refs),
                },
            );
        }
    }
    Analysis {
        filters: result,
        referenced: Some(analyser.referenced),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use skein_storage::ColumnStats;

    fn table(name: &str, columns: &[(&str, &str)]) -> TableMeta {
        TableMeta {
            retired: Vec::new(),
            id: 1,
            name: name.into(),
            columns: columns
                .iter()
                .map(|(n, t)| ColumnMeta {
                    name: n.to_string(),
                    sql_type: t.to_string(),
                    nullable: true,
                })
                .collect(),
            files: vec![],
            next_file_seq: 0,
            flushed_wal: Default::default(),
            created_at_ms: 0,
            options: Default::default(),
        }
    }

    fn file(column: &str, min: StatValue, max: StatValue, nulls: u64) -> FileMeta {
        FileMeta {
            partition: None,
            key: "k".into(),
            rows: 10,
            bytes: 1,
            columns: vec![column.into(), "other".into()],
            stats: vec![ColumnStats {
                column: column.into(),
                null_count: Some(nulls),
                min: Some(min),
                max: Some(max),
            }],
            created_at_ms: 0,
            node: None,
            max_seq: None,
        }
    }

    fn keeps(sql: &str, f: &FileMeta) -> bool {
        let t = table(
            "t",
            &[
                ("x", "BIGINT"),
                ("d", "DATE"),
                ("s", "VARCHAR"),
                ("p", "DECIMAL(10,2)"),
                ("other", "INTEGER"),
            ],
        );
        let u = table("u", &[("x", "BIGINT"), ("y", "INTEGER")]);
        let tables: HashMap<String, &TableMeta> = [("t".to_string(), &t), ("u".to_string(), &u)]
            .into_iter()
            .collect();
        analyse(sql, &tables).filters["t"].keep(f)
    }

    #[test]
    fn comparisons_skip_files_outside_the_range() {
        let f = file("x", StatValue::Int(10), StatValue::Int(20), 0);
        for (sql, keep) in [
            ("SELECT * FROM t WHERE x = 15", true),
            ("SELECT * FROM t WHERE x = 21", false),
            ("SELECT * FROM t WHERE x < 10", false),
            ("SELECT * FROM t WHERE x <= 10", true),
            ("SELECT * FROM t WHERE 10 > x", false),
            ("SELECT * FROM t WHERE x > 20", false),
            ("SELECT * FROM t WHERE x >= 20", true),
            ("SELECT * FROM t WHERE x BETWEEN 21 AND 30", false),
            ("SELECT * FROM t WHERE x IN (1, 2, 30)", false),
            ("SELECT * FROM t WHERE x IN (1, 12)", true),
            ("SELECT * FROM t WHERE x IS NULL", false),
            ("SELECT * FROM t WHERE x IS NOT NULL", true),
            ("SELECT * FROM t WHERE x = 30 OR x = 15", true),
            ("SELECT * FROM t WHERE NOT x = 15", true),
            ("SELECT * FROM t WHERE other = 1 AND x = 99", false),
            ("SELECT * FROM t AS a WHERE a.x = 99", false),
        ] {
            assert_eq!(keeps(sql, &f), keep, "{sql}");
        }
    }

    #[test]
    fn dates_strings_and_decimals_use_their_physical_form() {
        // 1998-01-01 is day 10227.
        let f = file("d", StatValue::Int(10227), StatValue::Int(10227 + 30), 0);
        assert!(!keeps("SELECT * FROM t WHERE d < DATE '1998-01-01'", &f));
        assert!(keeps("SELECT * FROM t WHERE d <= '1998-01-01'", &f));
        assert!(!keeps(
            "SELECT * FROM t WHERE d > CAST('1998-02-01' AS DATE)",
            &f
        ));
        let f = file(
            "s",
            StatValue::Str("b".into()),
            StatValue::Str("d".into()),
            0,
        );
        assert!(!keeps("SELECT * FROM t WHERE s = 'e'", &f));
        assert!(keeps("SELECT * FROM t WHERE s = 'c'", &f));
        let f = file("p", StatValue::Int(100), StatValue::Int(200), 0);
        assert!(!keeps("SELECT * FROM t WHERE p > 2.00", &f));
        assert!(
            keeps("SELECT * FROM t WHERE p > 1.995", &f),
            "inexact: kept"
        );
    }

    #[test]
    fn unsure_references_read_every_file() {
        let f = file("x", StatValue::Int(10), StatValue::Int(20), 0);
        for sql in [
            // The table is also read where the analysis does not look.
            "SELECT (SELECT max(x) FROM t) FROM u WHERE y = 1 UNION ALL SELECT x FROM t WHERE x = 99",
            // The NULL-supplying side of an outer join.
            "SELECT * FROM u LEFT JOIN t ON u.x = t.x WHERE t.x = 99",
            // Ambiguous unqualified column.
            "SELECT * FROM t, u WHERE x = 99",
            // Not parsed.
            "SELECT * FROM t WHERE x = 99 ))",
            // Read where relations are not counted.
            "SELECT * FROM t WHERE x = 99 UNION ALL TABLE t",
            "SELECT * FROM t WHERE x = 99 UNION ALL SELECT * FROM query_table('t')",
            // Renamed columns, samples, struct paths.
            "SELECT * FROM t AS a(other, x) WHERE a.other = 99",
            "SELECT * FROM t USING SAMPLE 10% WHERE x = 99",
            "SELECT * FROM t, u WHERE t.u.x = 99 AND u.y = 1",
        ] {
            assert!(keeps(sql, &f), "{sql}");
        }
        // One reference filtered, one not: the file is kept for the second.
        assert!(keeps(
            "SELECT x FROM t WHERE x = 99 UNION ALL SELECT x FROM t",
            &f
        ));
        // Both filtered out: skipped.
        assert!(!keeps(
            "SELECT x FROM t WHERE x = 99 UNION ALL SELECT x FROM t WHERE x < 0",
            &f
        ));
        // Qualified in a join: fine.
        assert!(!keeps(
            "SELECT * FROM t JOIN u ON t.x = u.x WHERE t.x = 99",
            &f
        ));
    }

    #[test]
    fn identifiers_are_whole_words_quoted_or_not() {
        let words =
            identifiers(r#"SELECT "My ""T""".x FROM "My ""T""", trips_2024 t"#).expect("tokenizes");
        assert!(words.contains(r#"my "t""#) && words.contains("trips_2024"));
        assert!(!words.contains("trips"), "a part of a word is not a name");
    }

    #[test]
    fn a_file_without_the_column_holds_nulls() {
        let mut f = file("x", StatValue::Int(10), StatValue::Int(20), 0);
        f.columns = vec!["other".into()];
        f.stats.clear();
        assert!(!keeps("SELECT * FROM t WHERE x = 15", &f));
        assert!(keeps("SELECT * FROM t WHERE x IS NULL", &f));
    }
}
