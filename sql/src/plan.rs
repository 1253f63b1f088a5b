//! The distributed planner: which shape a query takes in a cluster, and the SQL of its parts.
//!
//! [`plan`] reads a statement with `sqlparser` (DuckDB dialect) and picks:
//! - [`Shape::Scatter`]: one table, filters and projections only (no aggregate, ORDER BY, LIMIT
//!   or DISTINCT): every node runs the statement itself over its share of the files and its own
//!   buffered rows, and the client reads every node's part;
//! - [`Shape::Partial`]: one table with aggregates (COUNT, SUM, MIN, MAX, AVG, COUNT DISTINCT …),
//!   GROUP BY, HAVING, DISTINCT, ORDER BY … LIMIT or LIMIT: every node runs a *partial* query and
//!   the coordinator runs a *final* query over the partial rows of all nodes;
//! - [`Shape::Gather`]: everything else (joins, subqueries, CTEs, window functions, aggregates
//!   that do not decompose, SQL the parser cannot read): peers ship their buffered rows and the
//!   coordinator runs the statement itself.
//!
//! Shapes are an optimisation: gather is always correct, so anything not understood with
//! certainty is gathered. The final query's columns are renamed and cast to the statement's own
//! result schema by the executor, so names and types are what one DuckDB would return.
//!
//! The shape is chosen here; `partial` writes the partial and final SQL of a partial query, and
//! `gather` the filter peers apply to the rows they ship for a gathered one.

use std::collections::{BTreeMap, HashSet};
use std::ops::ControlFlow;

use sqlparser::ast::{
    Distinct, Expr, FunctionArg, FunctionArgExpr, FunctionArguments, GroupByExpr, Ident,
    LimitClause, ObjectNamePart, OrderByKind, Query, Select, SelectFlavor, SelectItem, SetExpr,
    Statement, TableFactor, Value, VisitMut, VisitorMut, visit_expressions, visit_expressions_mut,
};
use sqlparser::dialect::DuckDbDialect;
use sqlparser::parser::Parser;

mod gather;
mod partial;

pub use gather::gather_filter;
use partial::{aggregate, top_n};

/// The relation name the final query reads the partial rows from; the executor puts a real
/// table name in its place.
pub const PARTIALS: &str = "__skein_partials__";

/// How a query runs in a cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Shape {
    /// Reads no table: run where it arrived.
    Local,
    /// Every node runs the statement over its share; the client reads every part.
    Scatter {
        /// The table (lower-cased name).
        table: String,
    },
    /// Every node runs `partial_sql`; the coordinator runs `final_sql` over their rows.
    Partial(Partial),
    /// Peers ship their buffered rows of the tables; the coordinator runs the statement.
    Gather,
}

impl Shape {
    /// Its name in logs and metrics.
    pub fn name(&self) -> &'static str {
        match self {
            Shape::Local => "local",
            Shape::Scatter { .. } => "scatter",
            Shape::Partial(_) => "partial",
            Shape::Gather => "gather",
        }
    }
}

/// The two queries of a partial plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partial {
    /// The table (lower-cased name).
    pub table: String,
    /// What every node runs over its share of the table.
    pub partial_sql: String,
    /// What the coordinator runs over all partial rows (reading [`PARTIALS`]).
    pub final_sql: String,
}

/// What the planner needs to know of the catalog and the engine.
#[derive(Debug, Clone, Copy)]
pub struct PlanContext<'a> {
    /// Lower-cased names of the user tables, with their lower-cased column names.
    pub tables: &'a BTreeMap<String, Vec<String>>,
    /// Lower-cased names of every aggregate function the engine knows.
    pub aggregates: &'a HashSet<String>,
    /// Whether the statement has bound parameters.
    pub has_parameters: bool,
}

/// Chooses the shape of `sql`, a query (not DDL or DML).
pub fn plan(sql: &str, ctx: PlanContext<'_>) -> Shape {
    let Ok(mut statements) = Parser::parse_sql(&DuckDbDialect {}, sql) else {
        return Shape::Gather;
    };
    if statements.len() != 1 {
        return Shape::Gather;
    }
    let statement = statements.remove(0);
    if !mentions_table(sql, ctx) {
        // No user table (a constant, or system tables, which every node fills for itself).
        return Shape::Local;
    }
    let Statement::Query(query) = statement else {
        return Shape::Gather;
    };
    single_table(&query, ctx).unwrap_or(Shape::Gather)
}

/// Whether `sql` names a user table anywhere, as a word or a string.
fn mentions_table(sql: &str, ctx: PlanContext<'_>) -> bool {
    use sqlparser::tokenizer::{Token, Tokenizer};
    let Ok(tokens) = Tokenizer::new(&DuckDbDialect {}, sql).tokenize() else {
        return true;
    };
    // Words, and strings too: `query_table('t')` reads table t.
    tokens.iter().any(|t| {
        let text = match t {
            Token::Word(w) => &w.value,
            Token::SingleQuotedString(s) | Token::DoubleQuotedString(s) => s,
            _ => return false,
        };
        ctx.tables.contains_key(&text.to_lowercase())
    })
}

/// The name a `FROM` item reads, if it is a plain reference to a user table.
fn table_name(factor: &TableFactor, ctx: PlanContext<'_>) -> Option<String> {
    let TableFactor::Table {
        name,
        alias,
        args: None,
        with_hints,
        version: None,
        with_ordinality: false,
        partitions,
        json_path: None,
        sample: None,
        index_hints,
    } = factor
    else {
        return None;
    };
    if !with_hints.is_empty() || !partitions.is_empty() || !index_hints.is_empty() {
        return None;
    }
    if alias.as_ref().is_some_and(|a| !a.columns.is_empty()) {
        return None;
    }
    let parts: Vec<String> = name
        .0
        .iter()
        .map(|p| match p {
            ObjectNamePart::Identifier(i) => Some(i.value.to_lowercase()),
            _ => None,
        })
        .collect::<Option<_>>()?;
    // `t`, `main.t`, or `<catalog>.main.t`.
    let table = match parts.as_slice() {
        [t] => t,
        [schema, t] if schema == "main" => t,
        [_, schema, t] if schema == "main" => t,
        _ => return None,
    };
    ctx.tables.contains_key(table).then(|| table.clone())
}

/// Whether anything in the statement keeps it from being split: subqueries, window functions,
/// or functions over a subquery.
fn has_blockers(query: &Query) -> bool {
    visit_expressions(query, |e| match e {
        Expr::Subquery(_) | Expr::Exists { .. } | Expr::InSubquery { .. } => ControlFlow::Break(()),
        Expr::Function(f)
            if f.over.is_some() || matches!(f.args, FunctionArguments::Subquery(_)) =>
        {
            ControlFlow::Break(())
        }
        Expr::GroupingSets(_) | Expr::Cube(_) | Expr::Rollup(_) => ControlFlow::Break(()),
        _ => ControlFlow::Continue(()),
    })
    .is_break()
}

/// A function call's lower-cased name, if it has one part.
fn function_name(f: &sqlparser::ast::Function) -> Option<String> {
    match f.name.0.as_slice() {
        [ObjectNamePart::Identifier(i)] => Some(i.value.to_lowercase()),
        _ => None,
    }
}

fn is_aggregate_call(e: &Expr, ctx: PlanContext<'_>) -> bool {
    matches!(e, Expr::Function(f) if f.over.is_none()
        && function_name(f).is_some_and(|n| ctx.aggregates.contains(&n)))
}

fn contains_aggregate(e: &Expr, ctx: PlanContext<'_>) -> bool {
    visit_expressions(e, |x| {
        if is_aggregate_call(x, ctx) {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    })
    .is_break()
}

/// `e` with unquoted identifiers lower-cased, so that equal expressions print equally.
fn normalised(e: &Expr) -> String {
    let mut e = e.clone();
    let _ = visit_expressions_mut(&mut e, |x| {
        match x {
            Expr::Identifier(i) => lower_ident(i),
            Expr::CompoundIdentifier(parts) => parts.iter_mut().for_each(lower_ident),
            _ => {}
        }
        ControlFlow::<()>::Continue(())
    });
    e.to_string()
}

fn lower_ident(i: &mut Ident) {
    if i.quote_style.is_none() {
        i.value = i.value.to_lowercase();
    }
}

/// The LIMIT and OFFSET of a query, if both are plain non-negative integers.
fn limit_offset(query: &Query) -> Option<(Option<u64>, u64)> {
    let number = |e: &Expr| match e {
        Expr::Value(v) => match &v.value {
            Value::Number(n, _) => n.parse::<u64>().ok(),
            _ => None,
        },
        _ => None,
    };
    match &query.limit_clause {
        None => Some((None, 0)),
        Some(LimitClause::LimitOffset {
            limit,
            offset,
            limit_by,
        }) if limit_by.is_empty() => {
            let limit = match limit {
                Some(l) => Some(number(l)?),
                None => None,
            };
            let offset = match offset {
                Some(o) => number(&o.value)?,
                None => 0,
            };
            Some((limit, offset))
        }
        Some(LimitClause::OffsetCommaLimit { offset, limit }) => {
            Some((Some(number(limit)?), number(offset)?))
        }
        _ => None,
    }
}

fn limit_sql(limit: Option<u64>, offset: u64) -> String {
    let mut s = String::new();
    if let Some(l) = limit {
        s.push_str(&format!(" LIMIT {l}"));
    }
    if offset > 0 {
        s.push_str(&format!(" OFFSET {offset}"));
    }
    s
}

fn single_table(query: &Query, ctx: PlanContext<'_>) -> Option<Shape> {
    if query.with.is_some()
        || query.fetch.is_some()
        || !query.locks.is_empty()
        || query.for_clause.is_some()
        || query.settings.is_some()
        || query.format_clause.is_some()
        || !query.pipe_operators.is_empty()
    {
        return None;
    }
    let SetExpr::Select(select) = query.body.as_ref() else {
        return None;
    };
    let s: &Select = select;
    if s.top.is_some()
        || s.into.is_some()
        || !s.lateral_views.is_empty()
        || s.prewhere.is_some()
        || !s.connect_by.is_empty()
        || !s.cluster_by.is_empty()
        || !s.distribute_by.is_empty()
        || !s.sort_by.is_empty()
        || !s.named_window.is_empty()
        || s.qualify.is_some()
        || s.value_table_mode.is_some()
        || s.select_modifiers.is_some()
        || !s.optimizer_hints.is_empty()
        || s.flavor != SelectFlavor::Standard
        || s.from.len() != 1
        || !s.from[0].joins.is_empty()
    {
        return None;
    }
    let table = table_name(&s.from[0].relation, ctx)?;
    if has_blockers(query) {
        return None;
    }
    let columns: HashSet<&str> = ctx.tables.get(&table)?.iter().map(String::as_str).collect();
    let grouped = !matches!(&s.group_by, GroupByExpr::Expressions(g, _) if g.is_empty());
    let aggregated = grouped
        || s.having.is_some()
        || s.projection.iter().any(|item| match item {
            SelectItem::UnnamedExpr(e) | SelectItem::ExprWithAlias { expr: e, .. } => {
                contains_aggregate(e, ctx)
            }
            _ => false,
        });
    let ordered = query.order_by.is_some();
    if aggregated {
        if ctx.has_parameters {
            return None;
        }
        return aggregate(query, s, &table, &columns, ctx).map(Shape::Partial);
    }
    if s.distinct.is_none() && !ordered && query.limit_clause.is_none() {
        return Some(Shape::Scatter { table });
    }
    if ctx.has_parameters {
        return None;
    }
    top_n(query, s, &table, ctx.tables.get(&table)?).map(Shape::Partial)
}

/// Every output column's expression and alias; `None` for wildcards.
fn projection(s: &Select) -> Option<Vec<(Expr, Option<String>)>> {
    s.projection
        .iter()
        .map(|item| match item {
            SelectItem::UnnamedExpr(e) => Some((e.clone(), None)),
            SelectItem::ExprWithAlias { expr, alias } => {
                Some((expr.clone(), Some(alias.value.to_lowercase())))
            }
            _ => None,
        })
        .collect()
}

/// The outputs of `SELECT * FROM t`: the table's columns in order.
fn star_items(s: &Select, columns: &[String]) -> Option<Vec<(Expr, Option<String>)>> {
    match s.projection.as_slice() {
        [SelectItem::Wildcard(options)]
            if s.exclude.is_none()
                && options.opt_exclude.is_none()
                && options.opt_except.is_none()
                && options.opt_replace.is_none()
                && options.opt_rename.is_none()
                && options.opt_ilike.is_none()
                && options.opt_alias.is_none() =>
        {
            Some(
                columns
                    .iter()
                    .map(|c| (Expr::Identifier(Ident::new(c.clone())), None))
                    .collect(),
            )
        }
        _ => None,
    }
}

/// The 1-based output position an ORDER BY expression refers to.
fn output_position(e: &Expr, items: &[(Expr, Option<String>)]) -> Option<usize> {
    if let Expr::Value(v) = e
        && let Value::Number(n, _) = &v.value
    {
        let n: usize = n.parse().ok()?;
        return (1..=items.len()).contains(&n).then_some(n);
    }
    let wanted = normalised(e);
    if let Expr::Identifier(i) = e {
        let name = i.value.to_lowercase();
        if let Some(p) = items.iter().position(|(_, a)| a.as_deref() == Some(&name)) {
            return Some(p + 1);
        }
    }
    items
        .iter()
        .position(|(x, _)| normalised(x) == wanted)
        .map(|p| p + 1)
}

/// ORDER BY as output positions (for a final query over rows that hold exactly the outputs).
fn order_by_positions(query: &Query, items: Option<&[(Expr, Option<String>)]>) -> Option<String> {
    let Some(order) = &query.order_by else {
        return Some(String::new());
    };
    if order.interpolate.is_some() {
        return None;
    }
    match &order.kind {
        OrderByKind::All(options) => Some(format!(" ORDER BY ALL{options}")),
        OrderByKind::Expressions(exprs) => {
            let items = items?;
            let mut parts = Vec::new();
            for o in exprs {
                if o.with_fill.is_some() {
                    return None;
                }
                let p = output_position(&o.expr, items)?;
                parts.push(format!("{p}{}", o.options));
            }
            Some(format!(" ORDER BY {}", parts.join(", ")))
        }
    }
}

#[cfg(test)]
mod tests;
