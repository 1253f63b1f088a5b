//! The filter a gathered statement's peers apply before they ship their rows.

use super::*;

/// For a gathered statement over one table: the `SELECT * FROM <table> WHERE …` that ships only
/// the rows its `WHERE` keeps (applied before windows, ordering and limits, so filtering first
/// changes nothing). `None` when the statement is not that simple.
pub fn gather_filter(sql: &str, ctx: PlanContext<'_>) -> Option<(String, String)> {
    if ctx.has_parameters {
        return None;
    }
    let mut statements = Parser::parse_sql(&DuckDbDialect {}, sql).ok()?;
    if statements.len() != 1 {
        return None;
    }
    let Statement::Query(query) = statements.remove(0) else {
        return None;
    };
    if query.with.is_some() || !query.pipe_operators.is_empty() {
        return None;
    }
    let SetExpr::Select(s) = query.body.as_ref() else {
        return None;
    };
    if s.from.len() != 1 || !s.from[0].joins.is_empty() || s.flavor != SelectFlavor::Standard {
        return None;
    }
    let table = table_name(&s.from[0].relation, ctx)?;
    let selection = s.selection.as_ref()?;
    let blocked = visit_expressions(selection, |e| match e {
        Expr::Subquery(_) | Expr::Exists { .. } | Expr::InSubquery { .. } => ControlFlow::Break(()),
        Expr::Function(f) if f.over.is_some() => ControlFlow::Break(()),
        _ => ControlFlow::Continue(()),
    })
    .is_break();
    if blocked || contains_aggregate(selection, ctx) {
        return None;
    }
    Some((
        table,
        format!("SELECT * FROM {} WHERE {selection}", s.from[0]),
    ))
}
