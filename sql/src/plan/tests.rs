use super::*;

fn ctx_plan(sql: &str, has_parameters: bool) -> Shape {
    let tables: BTreeMap<String, Vec<String>> = [
        ("t".to_string(), vec!["a".into(), "b".into(), "x".into()]),
        ("u".to_string(), vec!["a".into(), "y".into()]),
    ]
    .into_iter()
    .collect();
    let aggregates: HashSet<String> = ["count", "sum", "min", "max", "avg", "median", "string_agg"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    plan(
        sql,
        PlanContext {
            tables: &tables,
            aggregates: &aggregates,
            has_parameters,
        },
    )
}

fn shape(sql: &str) -> &'static str {
    ctx_plan(sql, false).name()
}

fn partial(sql: &str) -> Partial {
    match ctx_plan(sql, false) {
        Shape::Partial(p) => p,
        other => panic!("{sql}: expected a partial plan, got {other:?}"),
    }
}

#[test]
fn shapes() {
    assert_eq!(shape("SELECT 1"), "local");
    assert_eq!(shape("SELECT * FROM t"), "scatter");
    assert_eq!(shape("SELECT a, b + 1 FROM main.t WHERE x > 3"), "scatter");
    assert_eq!(shape("SELECT count(*) FROM t"), "partial");
    assert_eq!(
        shape("SELECT a, sum(x) FROM t GROUP BY a HAVING sum(x) > 1"),
        "partial"
    );
    assert_eq!(shape("SELECT DISTINCT a FROM t"), "partial");
    assert_eq!(shape("SELECT * FROM t ORDER BY x DESC LIMIT 5"), "partial");
    assert_eq!(shape("SELECT * FROM t LIMIT 5"), "partial");
    // Gathered: more than one table, subqueries, windows, CTEs, other aggregates, unknowns.
    assert_eq!(shape("SELECT * FROM t JOIN u USING (a)"), "gather");
    assert_eq!(
        shape("SELECT * FROM t WHERE a IN (SELECT a FROM u)"),
        "gather"
    );
    assert_eq!(shape("SELECT a, row_number() OVER () FROM t"), "gather");
    assert_eq!(
        shape("WITH c AS (SELECT * FROM t) SELECT * FROM c"),
        "gather"
    );
    assert_eq!(shape("SELECT median(x) FROM t"), "gather");
    assert_eq!(
        shape("SELECT * FROM t UNION ALL SELECT a, y, y FROM u"),
        "gather"
    );
    assert_eq!(shape("SELECT * FROM unknown_table"), "local"); // no user table: nothing to split
    assert_eq!(
        shape("SELECT count(DISTINCT a), count(DISTINCT b) FROM t"),
        "gather"
    );
    assert_eq!(shape("SELECT a, b FROM t GROUP BY a"), "gather"); // b neither grouped nor aggregated
    assert_eq!(shape("SELECT x AS a, count(*) FROM t GROUP BY 1"), "gather"); // alias shadows a column
    assert_eq!(shape("SELECT a FROM t ORDER BY b LIMIT 3"), "gather"); // order key not an output
    assert_eq!(shape("this is not sql"), "gather");
    assert_eq!(shape("SELECT * FROM read_parquet('t')"), "gather");
    // Parameters: scatter still works (each node binds them), partial plans do not.
    assert_eq!(
        ctx_plan("SELECT * FROM t WHERE a = ?", true).name(),
        "scatter"
    );
    assert_eq!(
        ctx_plan("SELECT count(*) FROM t WHERE a = ?", true).name(),
        "gather"
    );
}

#[test]
fn aggregates_split_into_partial_and_final() {
    let p = partial(
        "SELECT a, count(*), avg(x) AS m FROM t WHERE b > 1 GROUP BY a ORDER BY m DESC LIMIT 2",
    );
    assert_eq!(
        p.partial_sql,
        "SELECT a AS __g0, count(*) AS __a0, sum(x) AS __a1s, count(x) AS __a1c FROM t WHERE b > 1 GROUP BY a"
    );
    assert_eq!(
        p.final_sql,
        "SELECT __g0 AS \"__c0\", CAST(COALESCE(sum(__a0), 0) AS BIGINT) AS \"__c1\", \
         (CAST(sum(__a1s) AS DOUBLE) / sum(__a1c)) AS \"m\" FROM __skein_partials__ \
         GROUP BY __g0 ORDER BY m DESC LIMIT 2"
    );
    // Grouping by position and expression; expressions over grouping keys and aggregates.
    let p = partial("SELECT a + 1, sum(x) / count(*) FROM t GROUP BY 1 HAVING max(b) > 3");
    assert!(
        p.partial_sql.ends_with("GROUP BY a + 1"),
        "{}",
        p.partial_sql
    );
    assert!(
        p.final_sql.contains("HAVING max(__a2) > 3"),
        "{}",
        p.final_sql
    );
    // COUNT DISTINCT groups the partials by its argument.
    let p = partial("SELECT a, count(DISTINCT b), sum(x) FROM t GROUP BY a");
    assert_eq!(
        p.partial_sql,
        "SELECT a AS __g0, b AS __d, sum(x) AS __a1 FROM t GROUP BY a, b"
    );
    assert!(
        p.final_sql.contains("count(DISTINCT __d)"),
        "{}",
        p.final_sql
    );
}

#[test]
fn top_n_pushes_the_limit_and_orders_by_position() {
    let p = partial("SELECT a, x FROM t WHERE b = 1 ORDER BY x DESC, a LIMIT 5 OFFSET 2");
    assert_eq!(
        p.partial_sql,
        "SELECT a, x FROM t WHERE b = 1 ORDER BY x DESC, a LIMIT 7"
    );
    assert_eq!(
        p.final_sql,
        "SELECT * FROM __skein_partials__ ORDER BY 2 DESC, 1 LIMIT 5 OFFSET 2"
    );
    let p = partial("SELECT * FROM t ORDER BY b LIMIT 3");
    assert_eq!(
        p.final_sql,
        "SELECT * FROM __skein_partials__ ORDER BY 2 LIMIT 3"
    );
    let p = partial("SELECT DISTINCT a FROM t ORDER BY a");
    assert_eq!(p.partial_sql, "SELECT DISTINCT a FROM t");
    assert_eq!(
        p.final_sql,
        "SELECT DISTINCT * FROM __skein_partials__ ORDER BY 1"
    );
}

#[test]
fn gathered_single_table_statements_ship_only_filtered_rows() {
    let tables: BTreeMap<String, Vec<String>> = [("t".to_string(), vec!["a".into(), "b".into()])]
        .into_iter()
        .collect();
    let aggregates: HashSet<String> = ["count"].iter().map(|s| s.to_string()).collect();
    let ctx = PlanContext {
        tables: &tables,
        aggregates: &aggregates,
        has_parameters: false,
    };
    assert_eq!(
        gather_filter(
            "SELECT a, rank() OVER (ORDER BY b) FROM t AS x WHERE x.a > 3",
            ctx
        ),
        Some(("t".into(), "SELECT * FROM t AS x WHERE x.a > 3".into()))
    );
    assert_eq!(gather_filter("SELECT * FROM t", ctx), None);
    assert_eq!(
        gather_filter("SELECT * FROM t WHERE a IN (SELECT 1)", ctx),
        None
    );
    assert_eq!(
        gather_filter("SELECT * FROM t, t AS u WHERE t.a = u.a", ctx),
        None
    );
    let with_parameters = PlanContext {
        has_parameters: true,
        ..ctx
    };
    assert_eq!(
        gather_filter("SELECT * FROM t WHERE a = ?", with_parameters),
        None
    );
}
