//! Partial queries: how a single-table query splits into the SQL every node runs over its
//! share (`partial_sql`) and the SQL the coordinator runs over all nodes' partial rows
//! (`final_sql`). Candidates for DISTINCT and ORDER BY … LIMIT ([`top_n`]), and aggregates
//! decomposed into partial and merged forms ([`aggregate`]).

use super::*;
use crate::quote::ident;

/// DISTINCT, ORDER BY … LIMIT and LIMIT without aggregates: every node returns its candidates,
/// the coordinator picks from them.
pub(super) fn top_n(query: &Query, s: &Select, table: &str, columns: &[String]) -> Option<Partial> {
    let (limit, offset) = limit_offset(query)?;
    let distinct = match &s.distinct {
        None | Some(Distinct::All) => false,
        Some(Distinct::Distinct) => true,
        Some(Distinct::On(_)) => return None,
    };
    let items = projection(s).or_else(|| star_items(s, columns));
    let order = order_by_positions(query, items.as_deref())?;
    let mut partial = query.clone();
    partial.limit_clause = None;
    if limit.is_none() {
        // Without a limit to push, every node sends its (distinct) rows; ordering happens once.
        partial.order_by = None;
    }
    let mut partial_sql = partial.to_string();
    if let Some(l) = limit {
        partial_sql.push_str(&format!(" LIMIT {}", l + offset));
    }
    let final_sql = format!(
        "SELECT {}* FROM {PARTIALS}{order}{}",
        if distinct { "DISTINCT " } else { "" },
        limit_sql(limit, offset)
    );
    Some(Partial {
        table: table.to_string(),
        partial_sql,
        final_sql,
    })
}

/// How one aggregate call is computed in two steps.
#[derive(Debug)]
struct Split {
    /// Partial expressions, each with its column alias.
    partial: Vec<(String, String)>,
    /// The final expression over those columns.
    merged: String,
}

/// Aggregates with GROUP BY, HAVING, ORDER BY and LIMIT.
pub(super) fn aggregate(
    query: &Query,
    s: &Select,
    table: &str,
    columns: &HashSet<&str>,
    ctx: PlanContext<'_>,
) -> Option<Partial> {
    if s.distinct.is_some() {
        return None;
    }
    let (limit, offset) = limit_offset(query)?;
    let items = projection(s)?;
    let aliases: HashSet<String> = items.iter().filter_map(|(_, a)| a.clone()).collect();
    if aliases.iter().any(|a| columns.contains(a.as_str())) {
        return None; // an alias shadowing a column: leave name resolution to one engine
    }
    // The grouping expressions, with positions and aliases resolved.
    let groups: Vec<Expr> = match &s.group_by {
        GroupByExpr::Expressions(exprs, modifiers) if modifiers.is_empty() => exprs
            .iter()
            .map(|g| resolve_group(g, &items))
            .collect::<Option<_>>()?,
        GroupByExpr::All(modifiers) if modifiers.is_empty() => items
            .iter()
            .filter(|(e, _)| !contains_aggregate(e, ctx))
            .map(|(e, _)| e.clone())
            .collect(),
        _ => return None,
    };
    if groups.iter().any(|g| contains_aggregate(g, ctx)) {
        return None;
    }
    let group_keys: Vec<String> = groups.iter().map(normalised).collect();
    // Every aggregate call of the outputs, HAVING and ORDER BY, split in two.
    let mut rewriter = Rewriter {
        ctx,
        group_keys: &group_keys,
        aliases: &aliases,
        calls: Vec::new(),
        distinct_arg: None,
        failed: false,
    };
    let mut outputs = Vec::new();
    for (i, (e, alias)) in items.iter().enumerate() {
        let mut e = e.clone();
        rewriter.rewrite(&mut e, false);
        let name = alias.clone().unwrap_or_else(|| format!("__c{i}"));
        outputs.push(format!("{e} AS {}", ident(&name)));
    }
    let having = s.having.as_ref().map(|h| {
        let mut h = h.clone();
        rewriter.rewrite(&mut h, true);
        h
    });
    let order = match &query.order_by {
        None => String::new(),
        Some(o) if o.interpolate.is_some() => return None,
        Some(o) => match &o.kind {
            OrderByKind::All(options) => format!(" ORDER BY ALL{options}"),
            OrderByKind::Expressions(exprs) => {
                let mut parts = Vec::new();
                for x in exprs {
                    if x.with_fill.is_some() {
                        return None;
                    }
                    let is_position = matches!(&x.expr, Expr::Value(v)
                        if matches!(v.value, Value::Number(..)));
                    let text = if is_position {
                        x.expr.to_string()
                    } else {
                        let mut e = x.expr.clone();
                        rewriter.rewrite(&mut e, true);
                        e.to_string()
                    };
                    parts.push(format!("{text}{}", x.options));
                }
                format!(" ORDER BY {}", parts.join(", "))
            }
        },
    };
    if rewriter.failed {
        return None;
    }
    let mut partial_items: Vec<String> = groups
        .iter()
        .enumerate()
        .map(|(i, g)| format!("{g} AS __g{i}"))
        .collect();
    let mut partial_groups: Vec<String> = groups.iter().map(ToString::to_string).collect();
    if let Some(d) = &rewriter.distinct_arg {
        partial_items.push(format!("{d} AS __d"));
        partial_groups.push(d.to_string());
    }
    let mut final_text = outputs.join(", ");
    let mut having_text = having.map(|h| h.to_string());
    let mut order_text = order;
    for (j, split) in rewriter.calls.iter().enumerate() {
        partial_items.extend(split.partial.iter().map(|(e, a)| format!("{e} AS {a}")));
        let marker = format!("__m{j}__");
        final_text = final_text.replace(&marker, &split.merged);
        having_text = having_text.map(|h| h.replace(&marker, &split.merged));
        order_text = order_text.replace(&marker, &split.merged);
    }
    if partial_items.is_empty() {
        return None;
    }
    let where_text = s
        .selection
        .as_ref()
        .map(|w| format!(" WHERE {w}"))
        .unwrap_or_default();
    let partial_group_text = if partial_groups.is_empty() {
        String::new()
    } else {
        format!(" GROUP BY {}", partial_groups.join(", "))
    };
    let partial_sql = format!(
        "SELECT {} FROM {}{where_text}{partial_group_text}",
        partial_items.join(", "),
        s.from[0]
    );
    let final_groups = if groups.is_empty() {
        String::new()
    } else {
        let g: Vec<String> = (0..groups.len()).map(|i| format!("__g{i}")).collect();
        format!(" GROUP BY {}", g.join(", "))
    };
    let final_sql = format!(
        "SELECT {final_text} FROM {PARTIALS}{final_groups}{}{order_text}{}",
        having_text
            .map(|h| format!(" HAVING {h}"))
            .unwrap_or_default(),
        limit_sql(limit, offset)
    );
    Some(Partial {
        table: table.to_string(),
        partial_sql,
        final_sql,
    })
}

/// A GROUP BY item: an output position or alias stands for that output's expression.
fn resolve_group(g: &Expr, items: &[(Expr, Option<String>)]) -> Option<Expr> {
    if let Expr::Value(v) = g
        && let Value::Number(n, _) = &v.value
    {
        let n: usize = n.parse().ok()?;
        return items.get(n.checked_sub(1)?).map(|(e, _)| e.clone());
    }
    if let Expr::Identifier(i) = g {
        let name = i.value.to_lowercase();
        if let Some((e, _)) = items.iter().find(|(_, a)| a.as_deref() == Some(&name)) {
            return Some(e.clone());
        }
    }
    Some(g.clone())
}

/// Rewrites final-query expressions: grouping expressions become partial columns, aggregate
/// calls become markers for their merged form; any other column reference fails the plan.
struct Rewriter<'a> {
    ctx: PlanContext<'a>,
    group_keys: &'a [String],
    aliases: &'a HashSet<String>,
    calls: Vec<Split>,
    /// The argument of the DISTINCT aggregates (all must share it).
    distinct_arg: Option<Expr>,
    failed: bool,
}

impl Rewriter<'_> {
    /// Rewrites `e`; `after_select` allows references to output aliases (HAVING, ORDER BY).
    fn rewrite(&mut self, e: &mut Expr, after_select: bool) {
        let mut v = RewriteVisitor {
            r: self,
            after_select,
        };
        let _ = e.visit(&mut v);
    }

    /// The marker for aggregate call `f`, splitting it.
    fn split(&mut self, e: &Expr) -> Option<String> {
        let Expr::Function(f) = e else { return None };
        let name = function_name(f)?;
        if !f.within_group.is_empty()
            || f.null_treatment.is_some()
            || !matches!(f.parameters, FunctionArguments::None)
        {
            return None;
        }
        let FunctionArguments::List(list) = &f.args else {
            return None;
        };
        if !list.clauses.is_empty() || list.args.len() > 1 {
            return None;
        }
        let arg: Option<Expr> = match list.args.first() {
            None => None,
            Some(FunctionArg::Unnamed(FunctionArgExpr::Expr(x))) => Some(x.clone()),
            Some(FunctionArg::Unnamed(FunctionArgExpr::Wildcard)) if name == "count" => None,
            _ => return None,
        };
        let filter = f
            .filter
            .as_ref()
            .map(|w| format!(" FILTER (WHERE {w})"))
            .unwrap_or_default();
        let distinct = matches!(
            list.duplicate_treatment,
            Some(sqlparser::ast::DuplicateTreatment::Distinct)
        );
        let j = self.calls.len();
        let col = |k: &str| format!("__a{j}{k}");
        let split = if distinct {
            let arg = arg?;
            if !filter.is_empty() {
                return None;
            }
            match &self.distinct_arg {
                Some(d) if normalised(d) != normalised(&arg) => return None,
                _ => self.distinct_arg = Some(arg),
            }
            let merged = match name.as_str() {
                "count" => "count(DISTINCT __d)",
                "sum" => "sum(DISTINCT __d)",
                "min" => "min(__d)",
                "max" => "max(__d)",
                _ => return None,
            };
            Split {
                partial: Vec::new(),
                merged: merged.to_string(),
            }
        } else {
            let arg_text = arg.as_ref().map(ToString::to_string);
            let call = |fname: &str| {
                format!(
                    "{fname}({}){filter}",
                    arg_text.clone().unwrap_or_else(|| "*".into())
                )
            };
            match name.as_str() {
                "count" => Split {
                    partial: vec![(call("count"), col(""))],
                    merged: format!("CAST(COALESCE(sum({}), 0) AS BIGINT)", col("")),
                },
                "sum" | "min" | "max" if arg.is_some() => Split {
                    partial: vec![(call(&name), col(""))],
                    merged: format!("{name}({})", col("")),
                },
                "avg" | "mean" if arg.is_some() => Split {
                    partial: vec![(call("sum"), col("s")), (call("count"), col("c"))],
                    merged: format!("(CAST(sum({}) AS DOUBLE) / sum({}))", col("s"), col("c")),
                },
                _ => return None,
            }
        };
        self.calls.push(split);
        Some(format!("__m{j}__"))
    }
}

struct RewriteVisitor<'r, 'a> {
    r: &'r mut Rewriter<'a>,
    after_select: bool,
}

impl VisitorMut for RewriteVisitor<'_, '_> {
    type Break = ();

    fn pre_visit_expr(&mut self, e: &mut Expr) -> ControlFlow<()> {
        let key = normalised(e);
        if let Some(i) = self.r.group_keys.iter().position(|g| *g == key) {
            *e = Expr::Identifier(Ident::new(format!("__g{i}")));
            return ControlFlow::Continue(());
        }
        if is_aggregate_call(e, self.r.ctx) {
            match self.r.split(e) {
                Some(marker) => *e = Expr::Identifier(Ident::new(marker)),
                None => self.r.failed = true,
            }
            return ControlFlow::Continue(());
        }
        match e {
            Expr::Identifier(i)
                if self.after_select && self.r.aliases.contains(&i.value.to_lowercase()) => {}
            Expr::Identifier(_) | Expr::CompoundIdentifier(_) => self.r.failed = true,
            _ => {}
        }
        ControlFlow::Continue(())
    }
}
