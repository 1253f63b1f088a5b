//! A property test: for random statements built to hide things from a checker (comments that
//! nest, escape strings, dollar quotes, second statements, forbidden functions, other tables,
//! CTEs that shadow), whatever [`crate::sql::checked_plan`] lets run as a query is, by DuckDB's
//! own parse (`json_serialize_sql` on a separate DuckDB, a different entry point from the
//! checker's): exactly one SELECT, calling no function off the allowlists, and for a caller
//! limited to `pub` reading no other table (a CTE name counts only in its scope, as DuckDB binds
//! it); what it classes as a write (INSERT, CTAS, DELETE, UPDATE around a query) DuckDB does not
//! read as one SELECT. Where sqlparser and DuckDB count the statements differently, the checker
//! must have refused; the generator must build such texts, and writes, or the test fails. `SKEIN_AGREEMENT_CASES` sets the number of
//! statements (default 4000) and `SKEIN_AGREEMENT_SEED` the seed.

use std::collections::BTreeSet;

use serde_json::Value;

use super::functions;
use crate::auth::{Identity, Role};

/// A small deterministic generator (xorshift64*).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len())]
    }

    fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }
}

const RELATIONS: &[&str] = &[
    "pub",
    "pub",
    "pub p",
    "main.pub",
    "secret",
    "\"SECRET\"",
    "main.secret",
    "memory.main.secret",
    "skein_buf.secret",
    "c1",
    "secret",
    "range(3) r(a)",
    "generate_series(1, 2) g(a)",
    "read_text('x')",
    "query('SELECT * FROM secret')",
    "query_table('secret')",
    "json_execute_serialized_sql(json_serialize_sql('SELECT 1'))",
    "information_schema.tables",
    "duckdb_tables()",
    "pg_settings",
    "duckdb_settings()",
    "glob('*')",
];

const EXPRESSIONS: &[&str] = &[
    "1",
    "a",
    "count(*)",
    "lower(s)",
    "abs(-1)",
    "'x'",
    "E'\\''",
    "'\\'",
    "$$ ; $$",
    "current_setting('threads')",
    "getvariable('x')",
    "sleep_ms(1)",
    "\"CURRENT_SETTING\"('threads')",
    "main.current_setting('threads')",
    "json_serialize_plan('SELECT 1')",
    "coalesce(a, 2)",
    "length(s)",
    "a + 1",
];

const NOISE: &[&str] = &[
    " /* c */ ",
    " /* /* nested */ still */ ",
    " --c\n ",
    " ; SELECT 1 ",
    " ; CREATE TABLE z (a INT) ",
    " E'\\'' ",
    " '\\' ",
    " $$;$$ ",
    " /* ; */ ",
    " $t$ ; $t$ ",
    " ",
];

fn query(rng: &mut Rng, depth: usize) -> String {
    let expr = |rng: &mut Rng, depth: usize| -> String {
        if depth < 2 && rng.chance(10) {
            format!("({})", query(rng, depth + 1))
        } else {
            rng.pick(EXPRESSIONS).to_string()
        }
    };
    let relation = |rng: &mut Rng, depth: usize| -> String {
        if depth < 2 && rng.chance(12) {
            format!("({}) t{depth}", query(rng, depth + 1))
        } else {
            rng.pick(RELATIONS).to_string()
        }
    };
    let mut exprs = vec![expr(rng, depth)];
    while rng.chance(30) {
        exprs.push(expr(rng, depth));
    }
    let exprs = exprs.join(", ");
    let from = relation(rng, depth);
    match rng.below(7) {
        0 => format!("SELECT {exprs}"),
        1 => format!("FROM {from} SELECT {exprs}"),
        2 => {
            let name = rng.pick(&["c1", "secret", "pub"]);
            let body = query(rng, depth + 1);
            format!("WITH {name} AS ({body}) SELECT {exprs} FROM {from}")
        }
        3 if depth < 2 => format!(
            "{} UNION ALL {}",
            query(rng, depth + 1),
            query(rng, depth + 1)
        ),
        4 => format!(
            "SELECT {exprs} FROM {from} WHERE a IN (SELECT a FROM {})",
            relation(rng, depth + 1)
        ),
        _ => format!("SELECT {exprs} FROM {from}"),
    }
}

/// A random statement: a query, maybe explained, with noise between its words.
fn statement(rng: &mut Rng) -> String {
    let mut text = query(rng, 0);
    if rng.chance(30) {
        let words: Vec<&str> = text.split(' ').collect();
        let mut out = String::new();
        for (i, w) in words.iter().enumerate() {
            if i > 0 {
                if rng.chance(6) {
                    out.push_str(rng.pick(NOISE));
                } else {
                    out.push(' ');
                }
            }
            out.push_str(w);
        }
        text = out;
    }
    if rng.chance(10) {
        text.push_str(rng.pick(NOISE));
    }
    if rng.chance(10) {
        text = format!("{} {text}", rng.pick(&["EXPLAIN", "EXPLAIN ANALYZE"]));
    } else if rng.chance(10) {
        // A write around the query: the checker must class it as one, never as a query.
        text = match rng.below(4) {
            0 => format!("INSERT INTO pub {text}"),
            1 => format!("CREATE TABLE z AS {text}"),
            2 => format!("DELETE FROM pub WHERE a IN ({text})"),
            _ => format!("UPDATE pub SET a = 1 WHERE a IN ({text})"),
        };
    }
    text
}

/// What DuckDB's own parse says a text is.
#[derive(Debug, Default)]
struct Oracle {
    /// `json_serialize_sql` refused it (not SELECTs only, or no parse).
    error: bool,
    statements: usize,
    functions: BTreeSet<String>,
    /// (catalog, schema, table) of every base table reference that is not a CTE in scope.
    tables: BTreeSet<(String, String, String)>,
}

fn oracle(conn: &duckdb::Connection, text: &str) -> Oracle {
    let json: String = conn
        .query_row("SELECT json_serialize_sql(?::VARCHAR)", [text], |r| {
            r.get(0)
        })
        .unwrap_or_else(|_| "{\"error\": true}".to_string());
    let v: Value = serde_json::from_str(&json).expect("json_serialize_sql answers JSON");
    let mut o = Oracle {
        error: v["error"].as_bool().unwrap_or(true),
        statements: v["statements"].as_array().map_or(0, Vec::len),
        ..Oracle::default()
    };
    /// Walks DuckDB's tree with the CTE names in scope: a WITH's names cover its query, and
    /// each CTE's body sees only the names defined before it (a non-recursive CTE that names
    /// itself reads the real table). A base table whose name is in scope is a CTE reference.
    fn walk(v: &Value, o: &mut Oracle, scope: &[String]) {
        match v {
            Value::Object(m) => {
                if let Some(Value::String(f)) = m.get("function_name") {
                    o.functions.insert(f.to_lowercase());
                }
                if m.get("type").and_then(Value::as_str) == Some("BASE_TABLE") {
                    let s = |k: &str| {
                        m.get(k)
                            .and_then(Value::as_str)
                            .unwrap_or("")
                            .to_lowercase()
                    };
                    let (catalog, schema, table) =
                        (s("catalog_name"), s("schema_name"), s("table_name"));
                    let cte = catalog.is_empty() && schema.is_empty() && scope.contains(&table);
                    if !cte {
                        o.tables.insert((catalog, schema, table));
                    }
                }
                let entries = m
                    .get("cte_map")
                    .and_then(|c| c.get("map"))
                    .and_then(Value::as_array);
                let mut inner = scope.to_vec();
                for e in entries.into_iter().flatten() {
                    // The body first, with the names before this one.
                    if let Some(body) = e.get("value") {
                        walk(body, o, &inner);
                    }
                    if let Some(k) = e.get("key").and_then(Value::as_str) {
                        inner.push(k.to_lowercase());
                    }
                }
                for (k, x) in m {
                    if k != "cte_map" {
                        walk(x, o, &inner);
                    }
                }
            }
            Value::Array(a) => a.iter().for_each(|x| walk(x, o, scope)),
            _ => {}
        }
    }
    walk(&v, &mut o, &[]);
    o
}

fn listed(list: &[&str], name: &str) -> bool {
    list.iter().any(|n| n.eq_ignore_ascii_case(name))
}

fn sqlparser_count(text: &str) -> Option<usize> {
    sqlparser::parser::Parser::parse_sql(&sqlparser::dialect::DuckDbDialect {}, text)
        .ok()
        .map(|s| s.len())
}

#[test]
fn the_checker_agrees_with_duckdbs_own_parse() {
    let cases: usize = std::env::var("SKEIN_AGREEMENT_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4000);
    let seed: u64 = std::env::var("SKEIN_AGREEMENT_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x5EED_2026);
    let parser = crate::duckdb_parse::Parser::open().expect("parser");
    let duck = duckdb::Connection::open_in_memory().expect("duckdb");
    let limited = Identity {
        user: "lena".into(),
        role: Role::Reader,
        tables: Some(vec!["pub".into()]),
    };
    let reader = Identity {
        user: "rita".into(),
        role: Role::Reader,
        tables: None,
    };
    let mut rng = Rng(seed | 1);
    let (mut accepted, mut refused, mut split_differently) = (0usize, 0usize, 0usize);
    let mut writes = 0usize;
    let mut wrong = Vec::new();
    for _ in 0..cases {
        let text = statement(&mut rng);
        for caller in [&reader, &limited] {
            let plan = match crate::sql::checked_plan(&parser, &text, "memory", Some(caller)) {
                Ok(p) if p.is_query() => p,
                Ok(_) => {
                    // Classed as a write (the caller's role is checked where it runs): DuckDB
                    // must not read the text as one SELECT.
                    let o = oracle(&duck, &text);
                    if !o.error && o.statements == 1 {
                        wrong.push(format!("a query classed as a write: {text}"));
                    }
                    writes += 1;
                    continue;
                }
                Err(_) => {
                    refused += 1;
                    continue;
                }
            };
            accepted += 1;
            let runs = match &plan {
                crate::sql::Plan::Explain { query, .. } => query.clone(),
                _ => text.clone(),
            };
            let o = oracle(&duck, &runs);
            let mut problem =
                |what: String| wrong.push(format!("{what} ({}): {text}", caller.user));
            if o.error || o.statements != 1 {
                problem(format!(
                    "DuckDB reads {} statement(s), error {}",
                    o.statements, o.error
                ));
                continue;
            }
            for f in &o.functions {
                let allowed = listed(functions::EXPRESSION_ALLOWED, f)
                    || listed(functions::TABLE_ALLOWED, f)
                    || (caller.tables.is_none()
                        && (listed(functions::EXPRESSION_CATALOG, f)
                            || listed(functions::TABLE_CATALOG, f)));
                if !allowed {
                    problem(format!("function {f} is not on an allowlist"));
                }
            }
            if caller.tables.is_some() {
                for (catalog, schema, table) in &o.tables {
                    let ok = table == "pub"
                        && ["", "main"].contains(&schema.as_str())
                        && ["", "memory"].contains(&catalog.as_str());
                    if !ok {
                        problem(format!("reads {catalog}.{schema}.{table}"));
                    }
                }
            }
        }
        // DuckDB reads the text as SELECTs, and sqlparser cannot parse it or counts otherwise:
        // nested comments, escape strings and the like, the texts a smuggler builds.
        let duck_count = oracle(&duck, &text);
        if !duck_count.error && sqlparser_count(&text) != Some(duck_count.statements) {
            split_differently += 1;
        }
    }
    assert!(
        wrong.is_empty(),
        "{} disagreements, first: {:#?}",
        wrong.len(),
        &wrong[..wrong.len().min(10)]
    );
    // The generator must exercise both sides, or the property says nothing.
    let total = accepted + refused;
    assert!(
        accepted * 10 >= total && refused * 10 >= total,
        "accepted {accepted} and refused {refused} of {total}: the generator is off balance"
    );
    eprintln!(
        "{cases} statements, seed {seed}: {accepted} checks accepted, {refused} refused, \
         {writes} classed as writes, {split_differently} texts that sqlparser and DuckDB split differently"
    );
    assert!(
        writes > 0,
        "no statement was classed as a write: the kind check is idle"
    );
    // And it must build texts the two parsers read differently: those are the attacks.
    assert!(
        split_differently * 100 >= cases,
        "only {split_differently} of {cases} texts split differently in sqlparser and DuckDB: \
         the generator no longer builds the statements this test is about"
    );
}
