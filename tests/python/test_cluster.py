"""A cluster answers like one DuckDB over all its data, whichever node is asked, while nodes join,
leave and die.

Three `skein-server` processes share a real Redis and a real SeaweedFS bucket (`cluster.py`).
Deterministic generated tables are ingested over all nodes, partly flushed to Parquet and partly
left in the nodes' buffers; the same rows go into an in-process DuckDB, the oracle. Every query
of a corpus runs on every node and is compared with the oracle. The query log (`skein_query_log`)
tells which plan shape a query took and how much travelled between nodes; tests assert relations
between those numbers, never timings.

Server-side names these tests rely on: flags `--node-id`, `--advertise-addr`, `--heartbeat-ttl`,
`--peer-timeout`, `--redis-url`, `--s3-endpoint`, `--s3-bucket`, `--cluster-name`,
`--flush-interval`; the Flight action `skein.flush`; `skein_nodes(node_id, address, version,
state, started_ms, is_self, unflushed_tables)` with states 'up' and 'gone'; `skein_query_log`'s
`query` (the SQL text), `status`, and its cluster columns `query_id, shape, fragments,
shipped_rows, shipped_bytes, peers` (JSON: node id -> {"files", "rows", "bytes", "retried"});
shapes 'scatter', 'partial', 'gather', 'local'.
"""

import dataclasses
import datetime
import decimal
import json
import math
import random
import re
import shutil
import signal
import threading
import time
import uuid
from urllib.parse import urlsplit

import adbc_driver_manager
import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.flight as flight
import pytest

from cluster import Cluster, ClusterNode
from components import Redis, free_ports
from conftest import cancel_flight_info, metric, query, statement_query

POLL_S = 0.1
GRPC_UNAVAILABLE = 14  # the gRPC code; ADBC's Flight SQL driver reports it as the vendor code

# ---------------------------------------------------------------------------------------------
# Data: deterministic tables, and plans that spread them over nodes

SEED = 20240601
N_ORDERS = 30_000
N_CUSTOMERS = 500
N_EVENTS = 3_000
STATUSES = ["new", "paid", "shipped", "cancelled", "returned"]
REGIONS = ["north", "south", "east", "west"]
KINDS = ["view", "click", "buy"]
T0 = datetime.datetime(2024, 1, 1)

ORDERS_SCHEMA = pa.schema([
    ("id", pa.int64()), ("customer", pa.int32()), ("status", pa.string()),
    ("amount", pa.decimal128(12, 2)), ("price", pa.float64()), ("qty", pa.int32()),
    ("ts", pa.timestamp("us")), ("day", pa.date32()),
])
CUSTOMERS_SCHEMA = pa.schema([
    ("id", pa.int32()), ("name", pa.string()), ("region", pa.string()), ("since", pa.date32()),
])
EVENTS_SCHEMA = pa.schema([
    ("id", pa.int64()), ("customer", pa.int32()), ("kind", pa.string()),
    ("seen_at", pa.timestamp("us")), ("value", pa.float64()),
])
EMPTY_SCHEMA = pa.schema([("id", pa.int64()), ("grp", pa.string()), ("v", pa.float64())])
# Tables created by DDL rather than ingest (a zero-row ingest need not create a table).
DDL = {"empty_t": "CREATE TABLE empty_t (id BIGINT, grp VARCHAR, v DOUBLE)"}


def generate(seed: int = SEED) -> dict:
    """The test tables (name -> Arrow table), the same for the same seed."""
    rng = random.Random(seed)

    def maybe(p_null, value):
        return None if rng.random() < p_null else value

    orders = {name: [] for name in ORDERS_SCHEMA.names}
    for i in range(N_ORDERS):
        ts = T0 + datetime.timedelta(seconds=rng.randrange(366 * 86400),
                                     microseconds=rng.randrange(1_000_000))
        orders["id"].append(i)
        orders["customer"].append(rng.randint(1, N_CUSTOMERS + 20))  # 501..520 have no customer
        orders["status"].append(maybe(0.05, rng.choice(STATUSES)))
        orders["amount"].append(maybe(0.02, decimal.Decimal(rng.randrange(1_000_000)).scaleb(-2)))
        orders["price"].append(rng.uniform(0.5, 100.0))
        orders["qty"].append(maybe(0.1, rng.randint(1, 9)))
        orders["ts"].append(ts)
        orders["day"].append((ts - datetime.timedelta(days=rng.randint(0, 3))).date())
    customers = {name: [] for name in CUSTOMERS_SCHEMA.names}
    for i in range(1, N_CUSTOMERS + 1):
        customers["id"].append(i)
        customers["name"].append(f"customer-{i:03d}-{rng.choice('abcdefgh')}")
        customers["region"].append(maybe(0.08, rng.choice(REGIONS)))
        customers["since"].append(datetime.date(2020, 1, 1) + datetime.timedelta(days=rng.randrange(1500)))
    events = {name: [] for name in EVENTS_SCHEMA.names}
    for i in range(N_EVENTS):
        events["id"].append(i)
        events["customer"].append(rng.randint(1, N_CUSTOMERS + 20))
        events["kind"].append(rng.choice(KINDS))
        events["seen_at"].append(T0 + datetime.timedelta(seconds=rng.randrange(366 * 86400)))
        events["value"].append(maybe(0.1, round(rng.uniform(-50, 50), 3)))
    return {
        "orders": pa.table(orders, schema=ORDERS_SCHEMA),
        "customers": pa.table(customers, schema=CUSTOMERS_SCHEMA),
        "events": pa.table(events, schema=EVENTS_SCHEMA),
        "empty_t": EMPTY_SCHEMA.empty_table(),
    }


@dataclasses.dataclass(frozen=True)
class Step:
    """`ingest` rows [lo, hi) of `table` on `node`, `flush` the node's buffer of `table` (all
    tables when empty), or `create` a table by DDL."""
    op: str
    node: str
    table: str = ""
    lo: int = 0
    hi: int = 0


def chunks(table: str, lo: int, hi: int, size: int, nodes: list, flush: bool) -> list:
    """Rows [lo, hi) in chunks of `size`, dealt round-robin to `nodes`; each flushed if asked."""
    steps = []
    for k, start in enumerate(range(lo, hi, size)):
        node = nodes[k % len(nodes)]
        steps.append(Step("ingest", node, table, start, min(start + size, hi)))
        if flush:
            steps.append(Step("flush", node, table))
    return steps


# Three nodes; flushed files from everyone and buffered rows on everyone:
# orders   n1: 3 files + 4000 buffered, n2: 4 files + 2000 buffered, n3: 3 files + 4000 buffered
# customers n2: 1 file, n3: 200 buffered;  events n1: 1 file, n2 and n3: 1000 buffered each.
PLAN_MIXED = [
    *chunks("orders", 0, 18_000, 2_000, ["n1", "n2", "n3"], flush=True),
    Step("ingest", "n1", "orders", 18_000, 22_000),
    Step("ingest", "n2", "orders", 22_000, 24_000),
    Step("flush", "n2", "orders"),
    Step("ingest", "n2", "orders", 24_000, 26_000),
    Step("ingest", "n3", "orders", 26_000, 30_000),
    Step("ingest", "n2", "customers", 0, 300),
    Step("flush", "n2", "customers"),
    Step("ingest", "n3", "customers", 300, 500),
    Step("ingest", "n1", "events", 0, 1_000),
    Step("flush", "n1", "events"),
    Step("ingest", "n2", "events", 1_000, 2_000),
    Step("ingest", "n3", "events", 2_000, 3_000),
    Step("create", "n3", "empty_t"),
]

# Two nodes, everything flushed, many files (so a third node is sure to be given some).
PLAN_TWO_FLUSHED = [
    *chunks("orders", 0, N_ORDERS, 1_000, ["n1", "n2"], flush=True),
    *chunks("customers", 0, N_CUSTOMERS, 250, ["n1", "n2"], flush=True),
    *chunks("events", 0, N_EVENTS, 500, ["n2", "n1"], flush=True),
    Step("create", "n1", "empty_t"),
]

# Three nodes; n3 holds a third of orders, all customers and half the events only in its buffers.
PLAN_N3_BUFFERED = [
    *chunks("orders", 0, 20_000, 2_500, ["n1", "n2"], flush=True),
    Step("ingest", "n3", "orders", 20_000, 30_000),
    Step("ingest", "n3", "customers", 0, N_CUSTOMERS),
    Step("ingest", "n1", "events", 0, 1_500),
    Step("flush", "n1", "events"),
    Step("ingest", "n3", "events", 1_500, N_EVENTS),
    Step("create", "n3", "empty_t"),
]


def buffered_rows(plan: list) -> dict:
    """{node: {table: rows}} left in buffers after `plan` (what no flush took)."""
    out: dict = {}
    for s in plan:
        tables = out.setdefault(s.node, {})
        if s.op == "ingest":
            tables[s.table] = tables.get(s.table, 0) + s.hi - s.lo
        elif s.op == "flush":
            for t in ([s.table] if s.table else list(tables)):
                tables[t] = 0
    return out


def ingest(node, name: str, table, mode: str = "create_append"):
    with node.connect() as conn, conn.cursor() as cur:
        cur.adbc_ingest(name, table, mode=mode)


def execute_update(node, sql: str) -> int:
    with node.connect() as conn, conn.cursor() as cur:
        cur.adbc_statement.set_sql_query(sql)
        return cur.adbc_statement.execute_update()


def apply_plan(cluster: Cluster, data: dict, plan: list) -> dict:
    """Carries out `plan` on the cluster's nodes; returns `buffered_rows(plan)`."""
    for s in plan:
        node = cluster[s.node]
        if s.op == "ingest":
            ingest(node, s.table, data[s.table].slice(s.lo, s.hi - s.lo))
        elif s.op == "flush":
            node.flush(s.table)
        elif s.op == "create":
            execute_update(node, DDL[s.table])
        else:
            raise ValueError(s.op)
    return buffered_rows(plan)


# ---------------------------------------------------------------------------------------------
# The oracle and result comparison

class Oracle:
    """One in-process DuckDB holding all the rows."""

    def __init__(self, tables: dict):
        self.con = duckdb.connect()
        self.con.execute("SET TimeZone = 'UTC'")
        for name, table in tables.items():
            self.con.register("_src", table)
            self.con.execute(f"CREATE TABLE {name} AS SELECT * FROM _src")
            self.con.unregister("_src")

    def query(self, sql: str) -> pa.Table:
        return self.con.sql(sql).to_arrow_table()

    def check(self, got: pa.Table, q: "Q") -> None:
        """Raises AssertionError (with the difference) unless `got` is what `q` should give."""
        want = self.query(q.sql)
        if q.full is None:
            compare(got, want, ordered=q.ordered)
            return
        # LIMIT without ORDER BY: the same number of rows, each one of the full result's.
        compare_schemas(got, want)
        assert got.num_rows == want.num_rows, f"{got.num_rows} rows, want {want.num_rows}"
        assert_rows_within(table_rows(got), table_rows(self.query(q.full)))


def normalize_type(t: pa.DataType) -> pa.DataType:
    """Arrow types that show the same SQL type: large and view strings, binaries and lists, and
    a list's child field name, are not differences."""
    if pa.types.is_large_string(t) or pa.types.is_string_view(t):
        return pa.string()
    if pa.types.is_large_binary(t) or pa.types.is_binary_view(t):
        return pa.binary()
    if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_list_view(t):
        return pa.list_(normalize_type(t.value_type))
    if pa.types.is_struct(t):
        return pa.struct([pa.field(f.name, normalize_type(f.type)) for f in t])
    return t


def compare_schemas(got: pa.Table, want: pa.Table) -> None:
    assert got.column_names == want.column_names, f"columns {got.column_names}, want {want.column_names}"
    for name, g, w in zip(want.column_names, got.schema.types, want.schema.types):
        assert normalize_type(g) == normalize_type(w), f"column {name!r} is {g}, want {w}"


def table_rows(table: pa.Table) -> list:
    """Rows as tuples, column by column (so duplicate column names survive)."""
    columns = [c.to_pylist() for c in table.columns]
    return list(zip(*columns)) if columns else [()] * table.num_rows


def values_equal(a, b, rel: float = 1e-9, abs_tol: float = 1e-9) -> bool:
    """Equality for query results: floats within a relative tolerance (NaN equals NaN); decimals,
    integers, strings, dates and timestamps exactly; None only equals None; lists and structs
    element by element. A float against a Decimal or int compares as numbers with tolerance."""
    if a is None or b is None:
        return a is None and b is None
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, float) or isinstance(b, float):
        if not all(isinstance(x, (float, int, decimal.Decimal)) for x in (a, b)):
            return False
        fa, fb = float(a), float(b)
        if math.isnan(fa) or math.isnan(fb):
            return math.isnan(fa) and math.isnan(fb)
        return math.isclose(fa, fb, rel_tol=rel, abs_tol=abs_tol)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(values_equal(x, y, rel, abs_tol) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(values_equal(a[k], b[k], rel, abs_tol) for k in a)
    if isinstance(a, datetime.datetime) != isinstance(b, datetime.datetime):
        return False  # a date is not a timestamp at midnight
    if isinstance(a, datetime.datetime) and (a.tzinfo is None) != (b.tzinfo is None):
        return False
    return type(a) is type(b) and a == b or (
        isinstance(a, (int, decimal.Decimal)) and isinstance(b, (int, decimal.Decimal)) and a == b)


def _round_float(x: float) -> float:
    return float(f"{x:.9g}") if math.isfinite(x) else x


def sort_key(value):
    """A total order over result values of mixed types, None first; floats rounded so that values
    equal within the tolerance sort alike."""
    if value is None:
        return (0,)
    if isinstance(value, bool):
        return (1, value)
    if isinstance(value, float):
        return (3,) if math.isnan(value) else (2, _round_float(value))
    if isinstance(value, (int, decimal.Decimal)):
        return (2, value)
    if isinstance(value, str):
        return (4, value)
    if isinstance(value, bytes):
        return (5, value)
    if isinstance(value, datetime.datetime):
        return (6, value.tzinfo is not None, value.replace(tzinfo=None))
    if isinstance(value, datetime.date):
        return (7, value)
    if isinstance(value, (list, tuple)):
        return (8, tuple(sort_key(v) for v in value))
    if isinstance(value, dict):
        return (9, tuple((k, sort_key(v)) for k, v in sorted(value.items())))
    return (10, repr(value))


def row_key(row: tuple) -> tuple:
    return tuple(sort_key(v) for v in row)


def rows_equal(a: tuple, b: tuple) -> bool:
    return len(a) == len(b) and all(values_equal(x, y) for x, y in zip(a, b))


def compare(got: pa.Table, want: pa.Table, ordered: bool) -> None:
    """Same columns, types and rows (as sorted rows unless `ordered`); raises AssertionError that
    shows the first difference."""
    compare_schemas(got, want)
    g, w = table_rows(got), table_rows(want)
    if not ordered:
        g, w = sorted(g, key=row_key), sorted(w, key=row_key)
    for i, (x, y) in enumerate(zip(g, w)):
        if not rows_equal(x, y):
            raise AssertionError(f"row {i}{'' if ordered else ' (sorted)'}: got {x!r}, want {y!r}")
    assert len(g) == len(w), f"{len(g)} rows, want {len(w)}; first extra: {(g[len(w):] or w[len(g):])[:3]!r}"


def assert_rows_within(got: list, full: list) -> None:
    """Each row of `got` is a distinct row of `full` (a multiset inclusion)."""
    remaining = sorted(full, key=row_key)
    for row in got:
        for i, candidate in enumerate(remaining):
            if rows_equal(row, candidate):
                del remaining[i]
                break
        else:
            raise AssertionError(f"row {row!r} is not in the full result (or appears too often)")


# ---------------------------------------------------------------------------------------------
# The query corpus

@dataclasses.dataclass(frozen=True)
class Q:
    sql: str
    ordered: bool = False
    full: str = None  # for LIMIT without ORDER BY: the query without its LIMIT


def U(sql):
    return Q(sql)


def O(sql):  # noqa: E743 - reads as "ordered"
    return Q(sql, ordered=True)


def L(sql, full):
    return Q(sql, full=full)


CORPUS = [
    # Aggregates without GROUP BY.
    U("SELECT count(*) FROM orders"),
    U("SELECT count(*) AS n, sum(amount) AS s, min(amount) AS lo, max(amount) AS hi, avg(amount) AS a FROM orders"),
    U("SELECT sum(price) AS s, avg(price) AS a, min(ts) AS first, max(ts) AS last, min(day) AS d0, max(day) AS d1 FROM orders"),
    U("SELECT count(qty) AS nq, sum(qty) AS sq, avg(qty) AS aq, count(status) AS ns, max(status) AS ms FROM orders"),
    # GROUP BY one key (nullable ones too) and two keys.
    U("SELECT status, count(*) AS n, sum(amount) AS s FROM orders GROUP BY status"),
    U("SELECT customer, count(*) AS n, max(price) AS mx, min(ts) AS first FROM orders GROUP BY customer"),
    U("SELECT day, count(*) AS n, sum(qty) AS q FROM orders GROUP BY day"),
    U("SELECT qty, count(*) AS n, sum(price) AS p, avg(amount) AS a FROM orders GROUP BY qty"),
    U("SELECT status, qty, count(*) AS n, min(id) AS first_id FROM orders GROUP BY status, qty"),
    U("SELECT date_trunc('month', ts) AS m, status, sum(amount) AS s, avg(price) AS p FROM orders GROUP BY 1, 2"),
    U("SELECT region, count(*) AS n, min(name) AS first FROM customers GROUP BY region"),
    U("SELECT kind, count(*) AS n, avg(value) AS v, count(value) AS nv, min(seen_at) AS first FROM events GROUP BY kind"),
    # HAVING.
    U("SELECT customer, count(*) AS n FROM orders GROUP BY customer HAVING count(*) > 65"),
    U("SELECT customer, sum(amount) AS s FROM orders GROUP BY customer HAVING sum(amount) > 300000 AND min(qty) = 1"),
    # ORDER BY an aggregate … LIMIT (ties broken by the key).
    O("SELECT customer, sum(amount) AS s FROM orders GROUP BY customer ORDER BY s DESC, customer LIMIT 10"),
    O("SELECT customer, count(*) AS n FROM orders GROUP BY customer ORDER BY n DESC, customer ASC LIMIT 5"),
    O("SELECT qty, count(*) AS n FROM orders GROUP BY qty ORDER BY n DESC, qty NULLS LAST LIMIT 4"),
    O("SELECT day, sum(amount) AS s FROM orders GROUP BY day ORDER BY day DESC LIMIT 3"),
    O("SELECT status, count(*) AS n FROM orders GROUP BY status ORDER BY status NULLS FIRST"),
    # Top-N without grouping, with an offset too.
    O("SELECT id, amount FROM orders ORDER BY amount DESC NULLS LAST, id LIMIT 20"),
    O("SELECT id, price FROM orders WHERE status = 'paid' ORDER BY price, id LIMIT 15 OFFSET 5"),
    # DISTINCT and COUNT(DISTINCT).
    U("SELECT DISTINCT status FROM orders"),
    U("SELECT DISTINCT status, qty FROM orders WHERE qty < 3"),
    O("SELECT DISTINCT customer FROM orders ORDER BY customer LIMIT 10"),
    U("SELECT count(DISTINCT customer) AS c FROM orders"),
    U("SELECT status, count(DISTINCT customer) AS c, count(*) AS n FROM orders GROUP BY status"),
    U("SELECT count(DISTINCT qty) AS q, count(DISTINCT status) AS s, count(DISTINCT day) AS d FROM orders"),
    # Filters.
    U("SELECT count(*) AS n, sum(amount) AS s FROM orders WHERE status = 'shipped'"),
    U("SELECT count(*) AS n FROM orders WHERE id BETWEEN 10000 AND 20000 AND price >= 25.5"),
    U("SELECT status, count(*) AS n FROM orders WHERE customer IN (1, 2, 3, 50, 499, 515) GROUP BY status"),
    U("SELECT count(*) AS n, count(qty) AS q FROM orders WHERE status IS NULL"),
    U("SELECT count(*) AS n FROM orders WHERE status LIKE 'c%' OR status LIKE '%ed'"),
    U("SELECT count(*) FROM orders WHERE ts >= TIMESTAMP '2024-06-01' AND ts < TIMESTAMP '2024-07-01'"),
    U("SELECT min(id) AS lo, max(id) AS hi, count(*) AS n FROM orders WHERE day = DATE '2024-03-15'"),
    U("SELECT count(*) AS n FROM orders WHERE amount >= 5000.00 AND status IN ('paid', 'shipped')"),
    # Expressions over aggregates.
    U("SELECT status, sum(amount) / count(*) AS mean, round(avg(price), 2) AS p FROM orders GROUP BY status"),
    U("SELECT sum(amount * qty) AS revenue, sum(price) / nullif(count(price), 0) AS mp, "
      "max(price) - min(price) AS spread FROM orders"),
    # Aggregates over an empty table and over a filter that matches nothing.
    U("SELECT count(*) AS n, sum(v) AS s, min(id) AS lo, avg(v) AS a FROM empty_t"),
    U("SELECT grp, count(*) AS n FROM empty_t GROUP BY grp"),
    U("SELECT count(*) AS n, sum(amount) AS s, max(ts) AS t, avg(price) AS p FROM orders WHERE id < 0"),
    U("SELECT status, count(*) AS n FROM orders WHERE id < 0 GROUP BY status"),
    U("SELECT count(DISTINCT customer) AS c FROM orders WHERE price > 1e9"),
    # Plain scans with filters (scatter).
    U("SELECT id, customer, status, amount FROM orders WHERE customer = 42"),
    U("SELECT id, ts, day, price FROM orders WHERE price > 99.5"),
    U("SELECT * FROM orders WHERE status IS NULL AND qty IS NULL"),
    U("SELECT id, amount * 2 AS twice, upper(status) AS s FROM orders WHERE id % 997 = 0"),
    U("SELECT * FROM customers WHERE region = 'north'"),
    U("SELECT * FROM events WHERE kind = 'buy' AND value > 40"),
    U("SELECT * FROM empty_t"),
    U("SELECT id FROM orders WHERE id < 0"),
    # LIMIT without ORDER BY: only the count, and that the rows are real.
    L("SELECT id, status FROM orders WHERE status = 'paid' LIMIT 25",
      "SELECT id, status FROM orders WHERE status = 'paid'"),
    L("SELECT * FROM customers LIMIT 7", "SELECT * FROM customers"),
    L("SELECT customer, count(*) AS n FROM orders GROUP BY customer LIMIT 5",
      "SELECT customer, count(*) AS n FROM orders GROUP BY customer"),
    # Joins.
    U("SELECT c.region, count(*) AS n, sum(o.amount) AS s FROM orders o JOIN customers c ON o.customer = c.id "
      "GROUP BY c.region"),
    U("SELECT c.name, o.id FROM orders o LEFT JOIN customers c ON o.customer = c.id WHERE o.id % 1000 = 0"),
    U("SELECT count(*) AS n FROM orders o JOIN events e ON o.customer = e.customer AND o.day = CAST(e.seen_at AS DATE)"),
    # Subqueries.
    U("SELECT count(*) AS n FROM orders WHERE customer IN (SELECT id FROM customers WHERE region = 'south')"),
    U("SELECT id, amount FROM orders WHERE amount > (SELECT avg(amount) * 1.9 FROM orders)"),
    U("SELECT c.id, c.name FROM customers c WHERE NOT EXISTS "
      "(SELECT 1 FROM orders o WHERE o.customer = c.id AND o.status = 'returned' AND o.qty >= 8)"),
    U("SELECT count(*) AS n FROM customers c WHERE EXISTS "
      "(SELECT 1 FROM events e WHERE e.customer = c.id AND e.kind = 'click')"),
    U("SELECT count(*) AS n FROM orders WHERE customer NOT IN (SELECT id FROM customers)"),
    # CTEs.
    U("WITH per AS (SELECT customer, sum(amount) AS s FROM orders GROUP BY customer) "
      "SELECT count(*) AS n, max(s) AS top, min(s) AS low FROM per"),
    U("WITH recent AS (SELECT * FROM orders WHERE day >= DATE '2024-12-01') "
      "SELECT r.status, c.region, count(*) AS n FROM recent r LEFT JOIN customers c ON r.customer = c.id "
      "GROUP BY r.status, c.region"),
    # Window functions.
    U("SELECT id, customer, amount, row_number() OVER (PARTITION BY customer ORDER BY amount DESC NULLS LAST, id) AS rn "
      "FROM orders WHERE customer < 20"),
    U("SELECT status, id, sum(amount) OVER (PARTITION BY status ORDER BY id ROWS BETWEEN 2 PRECEDING AND CURRENT ROW) "
      "AS run FROM orders WHERE id % 50 = 0"),
    U("SELECT customer, n, rank() OVER (ORDER BY n DESC) AS r FROM "
      "(SELECT customer, count(*) AS n FROM orders GROUP BY customer)"),
    # UNION.
    U("SELECT id FROM orders WHERE id < 100 UNION SELECT id FROM events WHERE id < 120"),
    U("SELECT 'orders' AS t, count(*) AS n FROM orders UNION ALL SELECT 'customers', count(*) FROM customers "
      "UNION ALL SELECT 'events', count(*) FROM events UNION ALL SELECT 'empty_t', count(*) FROM empty_t"),
    # Aggregates that do not decompose.
    U("SELECT median(price) AS m, quantile_cont(amount, 0.9) AS q FROM orders"),
    U("SELECT status, string_agg(CAST(id AS VARCHAR), ',' ORDER BY id) AS ids FROM orders WHERE id < 200 GROUP BY status"),
    U("SELECT stddev_samp(price) AS sd, var_pop(qty) AS v FROM orders"),
    U("SELECT customer, list(id ORDER BY id) AS ids FROM orders WHERE customer > 515 GROUP BY customer"),
    # No table at all.
    U("SELECT 1 + 1 AS two, 'x' || 'y' AS s, DATE '2024-01-01' + 1 AS d, CAST(2.50 AS DECIMAL(4,2)) AS dc"),
]
NO_TABLE_QUERY = len(CORPUS) - 1


def tagged(sql: str, tag: str) -> str:
    """The query with a comment that finds its row in the query log."""
    return f"{sql} /* {tag} */"


def split_literal(tag: str) -> str:
    """A SQL expression for `tag` that does not contain it, so that a log lookup does not find
    itself."""
    return f"('{tag[:3]}' || '{tag[3:]}')"


def new_tag(label: str) -> str:
    return f"ct{uuid.uuid4().hex[:12]}-{label}"


def wait_for(condition, what: str, deadline_s: float = 30):
    deadline = time.monotonic() + deadline_s
    last = None
    while True:
        last = condition()
        if last:
            return last
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {deadline_s} s waiting for {what} (last: {last!r})")
        time.sleep(POLL_S)


LOG_COLUMNS = "query_id, query, status, shape, fragments, shipped_rows, shipped_bytes, peers"


def log_rows(node, tag: str) -> list:
    """The rows of `node`'s query log whose SQL contains `tag`, with `peers` parsed."""
    with node.connect() as conn:
        rows = query(conn, f"SELECT {LOG_COLUMNS} FROM skein_query_log "
                           f"WHERE contains(query, {split_literal(tag)})").to_pylist()
    for r in rows:
        r["peers"] = json.loads(r["peers"]) if r["peers"] else {}
    return rows


def log_row(node, tag: str, sent: str = None) -> dict:
    """The one log row of the query tagged `tag` whose text is `sent` if given (anything else a
    node may log with the tag in it, such as a fragment's rewritten SQL, does not count); waits
    for it to be recorded."""
    def found():
        return [r for r in log_rows(node, tag) if sent is None or r["query"] == sent]

    rows = wait_for(found, f"the log row of {tag} on {node.node_id}", 10)
    assert len(rows) == 1, rows
    return rows[0]


def run_logged(node, sql: str, label: str = "q"):
    """Runs `sql` on `node` through ADBC; returns (result, its log row)."""
    tag = new_tag(label)
    sent = tagged(sql, tag)
    with node.connect() as conn:
        got = query(conn, sent)
    return got, log_row(node, tag, sent)


def shipped_by_peers(row: dict, coordinator: str) -> int:
    return sum(p["rows"] for node_id, p in row["peers"].items() if node_id != coordinator)


def is_unavailable(e: BaseException) -> bool:
    if isinstance(e, flight.FlightUnavailableError):
        return True
    if isinstance(e, adbc_driver_manager.Error) and getattr(e, "vendor_code", None) == GRPC_UNAVAILABLE:
        return True
    # Errors read from a result stream carry the code in the text: "… (Unavailable; DoGet: …)".
    return "(Unavailable;" in str(e) or "UNAVAILABLE" in str(e)


def names_node(e: BaseException, node_id: str) -> bool:
    return re.search(rf"(?<![\w-]){re.escape(node_id)}(?![\w-])", str(e)) is not None


def expect_unavailable(node, sql: str, node_id: str):
    """`sql` on `node` fails with UNAVAILABLE and a message that names `node_id`."""
    try:
        with node.connect() as conn:
            got = query(conn, sql)
    except Exception as e:  # noqa: BLE001 - checked below
        assert is_unavailable(e) and names_node(e, node_id), \
            f"{sql!r} on {node.node_id}: want UNAVAILABLE naming {node_id}, got {type(e).__name__}: {e}"
        return e
    raise AssertionError(f"{sql!r} on {node.node_id} answered {got.num_rows} rows; "
                         f"want UNAVAILABLE naming {node_id}")


def check_corpus(nodes: list, oracle: Oracle, corpus=CORPUS, label: str = "c") -> str:
    """Runs every query of `corpus` on every node and compares each with the oracle; fails with
    every difference found. Returns the run's tag: query i on node n is tagged `{run}-{n}-q{i}`."""
    run = new_tag(label)
    failures = []
    for node in nodes:
        with node.connect() as conn:
            for i, q in enumerate(corpus):
                try:
                    oracle.check(query(conn, tagged(q.sql, f"{run}-{node.node_id}-q{i:02d}")), q)
                except AssertionError as e:
                    failures.append(f"[{node.node_id} #{i}] {q.sql}\n    {e}")
                except Exception as e:  # noqa: BLE001 - collected; every query gets its turn
                    failures.append(f"[{node.node_id} #{i}] {q.sql}\n    {type(e).__name__}: {e}")
    assert not failures, f"{len(failures)} of {len(nodes) * len(corpus)} answers differ:\n" + "\n".join(failures)
    return run


def corpus_log(node, run: str, corpus=CORPUS) -> dict:
    """{query index: log row} of the corpus queries of `run` that `node` coordinated."""
    prefix = f"{run}-{node.node_id}-q"
    sent = {tagged(q.sql, f"{prefix}{i:02d}"): i for i, q in enumerate(corpus)}

    def complete():
        rows = [r for r in log_rows(node, prefix) if r["query"] in sent]
        return rows if len(rows) >= len(sent) else None

    rows = wait_for(complete, f"{len(sent)} log rows of {prefix} on {node.node_id}", 10)
    by_index = {sent[r["query"]]: r for r in rows}
    assert len(rows) == len(by_index) == len(sent), "one log row per query"
    return by_index


def assert_exactly_once(node, table: str, rows: int):
    with node.connect() as conn:
        got = query(conn, f"SELECT count(*) AS n, count(DISTINCT id) AS d FROM {table}").to_pylist()
    assert got == [{"n": rows, "d": rows}], (node.node_id, table, got)


def up_and_gone(node) -> tuple:
    with node.connect() as conn:
        rows = query(conn, "SELECT node_id, state FROM skein_nodes").to_pylist()
    return (sorted(r["node_id"] for r in rows if r["state"] == "up"),
            sorted(r["node_id"] for r in rows if r["state"] == "gone"))


# ---------------------------------------------------------------------------------------------
# Fixtures

@pytest.fixture
def aws_env(seaweed, monkeypatch):
    for k, v in seaweed.env().items():
        monkeypatch.setenv(k, v)


@pytest.fixture
def make_cluster(aws_env, seaweed, bucket, redis_server, tmp_path):
    """Starts a cluster of `count` nodes on this test's Redis and bucket; stopped afterwards."""
    made = []

    def make(count: int = 3, *extra: str) -> Cluster:
        c = Cluster(seaweed, bucket, redis_server, tmp_path / f"cluster{len(made)}", *extra)
        made.append(c)
        return c.start(count)

    yield make
    for c in made:
        c.close()


@pytest.fixture
def cluster3(make_cluster) -> Cluster:
    """Three nodes n1, n2, n3 that see each other, on a fresh Redis and bucket."""
    return make_cluster(3)


@dataclasses.dataclass
class Loaded:
    cluster: Cluster
    data: dict
    oracle: Oracle
    buffered: dict  # {node id: {table: rows only in that node's buffer}}


@pytest.fixture(scope="module")
def loaded(seaweed, tmp_path_factory):
    """A three-node cluster with PLAN_MIXED's data, shared by the read-only tests of this module
    (its own Redis and bucket)."""
    base = tmp_path_factory.mktemp("loaded")
    if not seaweed.running:
        seaweed.stop()
        seaweed.start()
    bucket = f"cl-{uuid.uuid4().hex[:12]}"
    seaweed.create_bucket(bucket)
    redis = Redis(base / "redis").start()
    cluster = None
    try:
        with pytest.MonkeyPatch.context() as mp:
            for k, v in seaweed.env().items():
                mp.setenv(k, v)
            cluster = Cluster(seaweed, bucket, redis, base).start(3)
            data = generate()
            buffered = apply_plan(cluster, data, PLAN_MIXED)
            yield Loaded(cluster, data, Oracle(data), buffered)
    finally:
        if cluster is not None:
            cluster.close()
        redis.stop()
        if seaweed.running:
            seaweed.delete_bucket(bucket)


# ---------------------------------------------------------------------------------------------
# Without a cluster: the corpus, the oracle and the comparison itself

def test_corpus_oracle_and_comparison_hold_up_without_a_cluster():
    data = generate()
    assert data["orders"].equals(generate()["orders"]), "generation is deterministic"
    oracle = Oracle(data)
    assert len(CORPUS) >= 40
    for q in CORPUS:
        want = oracle.query(q.sql)
        oracle.check(oracle.query(tagged(q.sql, new_tag("self"))), q)  # a comment changes nothing
        if not q.ordered and q.full is None and want.num_rows > 1:
            shuffled = want.take(pa.array(np.random.default_rng(1).permutation(want.num_rows)))
            compare(shuffled, want, ordered=False)
    # Sanity of the data behind the corpus: nullable groups and empty results are exercised.
    assert oracle.query("SELECT count(*) AS n FROM orders WHERE status IS NULL").column(0)[0].as_py() > 0
    nothing = [q for q in CORPUS if "id < 0" in q.sql or "FROM empty_t" in q.sql]
    assert len(nothing) >= 5 and any(oracle.query(q.sql).num_rows == 0 for q in nothing)
    assert oracle.query("SELECT count(*) FROM (SELECT DISTINCT status FROM orders)").column(0)[0].as_py() == 6

    # Every plan puts each row of each table on exactly one node.
    for plan, nodes in [(PLAN_MIXED, 3), (PLAN_TWO_FLUSHED, 2), (PLAN_N3_BUFFERED, 3)]:
        assert {s.node for s in plan} <= {f"n{i + 1}" for i in range(nodes)}
        for name, table in data.items():
            ranges = sorted((s.lo, s.hi) for s in plan if s.op == "ingest" and s.table == name)
            covered = [i for lo, hi in ranges for i in range(lo, hi)]
            assert covered == list(range(table.num_rows)), (name, ranges)
            if table.num_rows == 0:
                assert any(s.op == "create" and s.table == name for s in plan)
    assert buffered_rows(PLAN_MIXED)["n2"]["orders"] == 2000
    assert buffered_rows(PLAN_MIXED)["n3"] == {"orders": 4000, "customers": 200, "events": 1000}

    # The comparison catches what it must and forgives float noise.
    t = oracle.query("SELECT status, sum(amount) AS s, avg(price) AS p, max(ts) AS t, min(day) AS d "
                     "FROM orders GROUP BY status")
    compare(t, t, ordered=False)
    compare(t.sort_by([("p", "ascending")]), t, ordered=False)
    with pytest.raises(AssertionError):
        compare(t.sort_by([("p", "ascending")]), t.sort_by([("p", "descending")]), ordered=True)
    p = t.column("p").to_pylist()

    def with_column(name, values, typ=None):
        i = t.column_names.index(name)
        return t.set_column(i, name, pa.array(values, typ or t.schema.field(name).type))

    compare(with_column("p", [x * (1 + 1e-12) for x in p]), t, ordered=False)
    with pytest.raises(AssertionError, match="row"):
        compare(with_column("p", [x * (1 + 1e-6) for x in p]), t, ordered=False)
    s = t.column("s").to_pylist()
    with pytest.raises(AssertionError, match="row"):
        compare(with_column("s", [s[0] + decimal.Decimal("0.01"), *s[1:]]), t, ordered=False)
    with pytest.raises(AssertionError, match="row"):
        compare(with_column("s", [None, *s[1:]]), t, ordered=False)
    with pytest.raises(AssertionError, match="is double"):
        compare(with_column("s", [float(x) for x in s], pa.float64()), t, ordered=False)
    ts = t.column("t").to_pylist()
    with pytest.raises(AssertionError, match="row"):
        compare(with_column("t", [ts[0] + datetime.timedelta(microseconds=1), *ts[1:]]), t, ordered=False)
    with pytest.raises(AssertionError, match="rows, want"):
        compare(t.slice(1), t, ordered=False)
    with pytest.raises(AssertionError, match="columns"):
        compare(t.rename_columns(["status", "s", "p", "t", "day"]), t, ordered=False)
    assert values_equal(None, None) and not values_equal(None, 0) and not values_equal(0, False)
    assert values_equal(float("nan"), float("nan")) and values_equal(1.0, decimal.Decimal("1.0000000000001"))
    assert not values_equal(datetime.date(2024, 1, 1), datetime.datetime(2024, 1, 1))
    assert values_equal([1.0, None, {"a": 2}], [1.0 + 1e-13, None, {"a": 2}])
    # LIMIT without ORDER BY: rows must come from the full result, as often as they occur there.
    limit_q = next(q for q in CORPUS if q.full and "customers" in q.sql)
    oracle.check(oracle.query(limit_q.full).slice(100, 7), limit_q)
    with pytest.raises(AssertionError, match="not in the full result"):
        assert_rows_within([("x",), ("x",)], [("x",), ("y",)])


# ---------------------------------------------------------------------------------------------
# a. Every node answers every query like the oracle

@pytest.mark.slow
def test_every_node_answers_like_one_duckdb_over_all_the_data(loaded):
    nodes = loaded.cluster.live()
    assert [n.node_id for n in nodes] == ["n1", "n2", "n3"]
    run = check_corpus(nodes, loaded.oracle)

    # Which shape each query took, from each coordinator's log.
    shapes: dict = {}
    for node in nodes:
        for i, row in corpus_log(node, run).items():
            assert row["status"] == "ok", row
            shapes.setdefault(row["shape"], set()).add(i)
            assert not any(p.get("retried") for p in row["peers"].values()), row  # nobody failed
    assert {"scatter", "partial", "gather"} <= set(shapes), shapes
    assert NO_TABLE_QUERY in shapes.get("local", set()), shapes


# ---------------------------------------------------------------------------------------------
# b. Scatter: one endpoint per node, fetched straight from the peers

@pytest.mark.slow
def test_a_scan_is_scattered_to_one_endpoint_per_node(loaded):
    c = loaded.cluster
    n1 = c["n1"]
    sql = "SELECT * FROM orders WHERE price > 80 AND status <> 'cancelled'"
    want = loaded.oracle.query(sql)
    tag = new_tag("scatter")

    client = n1.flight_client()
    try:
        info = client.get_flight_info(statement_query(tagged(sql, tag)))
        assert len(info.endpoints) == 3, info.endpoints
        own = [e for e in info.endpoints if not e.locations]
        assert len(own) == 1, "the coordinator's own endpoint carries no location"
        located = [e for e in info.endpoints if e.locations]
        uris = sorted(loc.uri.decode() if isinstance(loc.uri, bytes) else loc.uri
                      for e in located for loc in e.locations)
        assert uris == sorted(f"grpc://{n.advertise_addr}" for n in c.others(n1)), uris
        assert {urlsplit(u).port for u in uris} == {c["n2"].port, c["n3"].port}
        # Fetch every endpoint as a plain Flight client would: the own one from n1, the others
        # from the node each names.
        parts = [client.do_get(own[0].ticket).read_all()]
        for e in located:
            peer = flight.FlightClient(e.locations[0])
            try:
                parts.append(peer.do_get(e.ticket).read_all())
            finally:
                peer.close()
    finally:
        client.close()
    compare(pa.concat_tables(parts), want, ordered=False)
    assert all(p.num_rows > 0 for p in parts), [p.num_rows for p in parts]  # every node has rows
    assert log_row(n1, tag, tagged(sql, tag))["shape"] == "scatter"

    # The same through ADBC, which follows the endpoints itself.
    for node in c.live():
        with node.connect() as conn:
            compare(query(conn, sql), want, ordered=False)


# ---------------------------------------------------------------------------------------------
# c. Partial aggregation ships partials, gather ships the peers' buffered rows

@pytest.mark.slow
def test_partial_aggregation_ships_partials_and_gather_ships_buffers(loaded):
    c = loaded.cluster
    n1 = c["n1"]
    peers = [n.node_id for n in c.others(n1)]

    sql = "SELECT status, count(*) AS n, sum(amount) AS s FROM orders GROUP BY status"
    got, partial = run_logged(n1, sql, "partial")
    want = loaded.oracle.query(sql)
    compare(got, want, ordered=False)
    groups = want.num_rows
    assert partial["shape"] == "partial", partial
    assert partial["fragments"] == 3, partial
    # At most one row per group from each peer; the coordinator's own partial is not shipped.
    assert 0 < partial["shipped_rows"] <= groups * (len(c.live()) - 1), (groups, partial)
    assert set(peers) <= set(partial["peers"]), partial["peers"]
    assert shipped_by_peers(partial, "n1") == partial["shipped_rows"], partial
    # The query's id travels with its fragments: each peer logged its part under it.
    for p in c.others(n1):
        with p.connect() as conn:
            parts = query(conn, "SELECT shape, status FROM skein_query_log "
                                f"WHERE query_id = '{partial['query_id']}'").to_pylist()
        assert parts == [{"shape": "fragment", "status": "ok"}], (p.node_id, parts)

    # The same table through gather: the peers ship their buffered rows of it, all of them here
    # (no filter), and the coordinator reads the files itself.
    gather_sql = "SELECT id, status, amount, sum(amount) OVER (PARTITION BY status) AS total FROM orders"
    got, gather = run_logged(n1, gather_sql, "gather")
    compare(got, loaded.oracle.query(gather_sql), ordered=False)
    assert gather["shape"] == "gather", gather
    on_peers = {p: loaded.buffered[p]["orders"] for p in peers}
    assert gather["shipped_rows"] == sum(on_peers.values()), (on_peers, gather)
    for p, rows in on_peers.items():
        assert gather["peers"][p]["rows"] == rows, (p, gather["peers"])
    assert shipped_by_peers(gather, "n1") == gather["shipped_rows"]
    assert partial["shipped_bytes"] * 10 < gather["shipped_bytes"], (partial, gather)

    # A filter is pushed down to what the peers ship.
    filtered = "SELECT id, amount, rank() OVER (ORDER BY amount DESC, id) AS r FROM orders WHERE id >= 27000"
    got, row = run_logged(n1, filtered, "gather-filter")
    compare(got, loaded.oracle.query(filtered), ordered=False)
    assert row["shape"] == "gather"
    # Of the peers' buffered rows (n2: 24000..25999, n3: 26000..29999) only n3's 27000..29999 match.
    assert row["shipped_rows"] == 3_000, row


class RecordHeaders(flight.ClientMiddlewareFactory):
    """Keeps the headers of every answer a pyarrow Flight client receives."""

    def __init__(self):
        self.received = []

    def start_call(self, info):
        factory = self

        class Middleware(flight.ClientMiddleware):
            def received_headers(self, headers):
                factory.received.append(headers)

        return Middleware()


def test_a_request_id_travels_to_the_peers_and_back(loaded):
    c = loaded.cluster
    n1 = c["n1"]
    request_id = f"req-{uuid.uuid4().hex[:12]}"
    sql = "SELECT status, count(*) AS n FROM orders GROUP BY status"
    with n1.connect(headers={"x-request-id": request_id}) as conn:
        compare(query(conn, sql), loaded.oracle.query(sql), ordered=False)
    with n1.connect() as conn:
        rows = query(conn, "SELECT shape, query_id FROM skein_query_log "
                           f"WHERE request_id = '{request_id}'").to_pylist()
    assert [r["shape"] for r in rows] == ["partial"], rows
    # Each peer ran its fragment under the same request id (and the query's id).
    for p in c.others(n1):
        with p.connect() as conn:
            parts = query(conn, "SELECT shape, query_id FROM skein_query_log "
                                f"WHERE request_id = '{request_id}'").to_pylist()
        assert parts == [{"shape": "fragment", "query_id": rows[0]["query_id"]}], (p.node_id, parts)

    # The answer carries the id back: the client's own, or one the node made up; an id with
    # characters outside the allowed set is replaced, not echoed.
    headers = RecordHeaders()
    client = flight.FlightClient(n1.uri, middleware=[headers])
    for sent in [request_id, None, "bad id!"]:
        options = flight.FlightCallOptions(
            headers=[(b"x-request-id", sent.encode())] if sent else [])
        headers.received.clear()
        list(client.list_actions(options))
        # Headers and trailers arrive separately; the id is in the headers.
        echoed = [v for h in headers.received for v in h.get("x-request-id", [])]
        assert len(echoed) == 1, headers.received
        if sent == request_id:
            assert echoed[0] == request_id
        else:
            assert echoed[0] != (sent or "") and uuid.UUID(echoed[0]), echoed
    client.close()


def test_insert_select_and_ctas_read_rows_buffered_on_every_node(loaded):
    n1, n2 = loaded.cluster["n1"], loaded.cluster["n2"]
    # Every node holds buffered rows of orders: a copy made on n1 must hold them all.
    with n1.connect() as conn, conn.cursor() as cur:
        cur.execute("CREATE TABLE orders_copy AS SELECT * FROM orders WHERE status IS NOT NULL")
        cur.execute("CREATE TABLE orders_sums (status VARCHAR, n BIGINT)")
        cur.execute("INSERT INTO orders_sums SELECT status, count(*) FROM orders GROUP BY status")
        conn.commit()
    check = [
        ("SELECT count(*) AS n, sum(amount) AS s FROM orders_copy",
         "SELECT count(*) AS n, sum(amount) AS s FROM orders WHERE status IS NOT NULL"),
        ("SELECT status, n FROM orders_sums",
         "SELECT status, count(*) AS n FROM orders GROUP BY status"),
    ]
    for node in (n1, n2):
        with node.connect() as conn:
            for got_sql, want_sql in check:
                compare(query(conn, got_sql), loaded.oracle.query(want_sql), ordered=False)


def test_a_table_created_on_one_node_is_queryable_on_another_at_once(loaded):
    n1, n3 = loaded.cluster["n1"], loaded.cluster["n3"]
    for i in range(3):  # no wait between the DDL and the query: well inside the 1 s watch
        with n1.connect() as conn, conn.cursor() as cur:
            cur.execute(f"CREATE TABLE fresh{i} AS SELECT range AS x FROM range(10)")
            conn.commit()
        with n3.connect() as conn:
            assert query(conn, f"SELECT count(*) AS n, sum(x) AS s FROM fresh{i}").to_pylist() == [
                {"n": 10, "s": 45}]


# ---------------------------------------------------------------------------------------------
# d. Nodes killed while queries run

def make_big(rows: int = 540_000, seed: int = 7) -> pa.Table:
    rng = np.random.default_rng(seed)
    words = pa.array([f"item-{i:04d}" for i in range(2003)])
    return pa.table({
        "id": pa.array(np.arange(rows, dtype=np.int64)),
        "g": pa.array(rng.integers(0, 50, rows).astype(np.int32)),
        "v": pa.array(rng.random(rows) * 1000.0),
        "s": pc.take(words, pa.array(rng.integers(0, len(words), rows))),
    })


HEAVY = ("SELECT g, count(*) AS n, sum(v) AS sv, min(id) AS lo, max(id) AS hi, count(DISTINCT s) AS ds "
         "FROM big GROUP BY g")


@dataclasses.dataclass
class Outcome:
    started: float
    ended: float
    result: pa.Table = None
    error: BaseException = None


@pytest.mark.slow
def test_a_node_killed_while_queries_run_is_retried_elsewhere(cluster3):
    c = cluster3
    n1, n2, n3 = c["n1"], c["n2"], c["n3"]
    big = make_big()
    batch = 30_000  # 18 files, six per node, dealt to all three by the ring
    for k, start in enumerate(range(0, big.num_rows, batch)):
        node = [n1, n2, n3][k % 3]
        ingest(node, "big", big.slice(start, batch))
        node.flush("big")  # nothing stays buffered: every file can be read by any node
    oracle = Oracle({"big": big})
    want = oracle.query(HEAVY)
    got, row = run_logged(n1, HEAVY, "heavy")
    compare(got, want, ordered=False)
    assert row["shape"] == "partial" and row["peers"].get("n3", {}).get("files", 0) > 0, row

    outcomes: list = []
    stop = threading.Event()

    def loop():
        conn = None
        while not stop.is_set():
            started = time.monotonic()
            try:
                if conn is None:
                    conn = n1.connect()
                outcomes.append(Outcome(started, time.monotonic(), result=query(conn, HEAVY)))
            except Exception as e:  # noqa: BLE001 - judged below
                outcomes.append(Outcome(started, time.monotonic(), error=e))
                if conn is not None:
                    conn.close()
                conn = None
        if conn is not None:
            conn.close()

    runner = threading.Thread(target=loop, daemon=True)
    runner.start()
    try:
        wait_for(lambda: len(outcomes) >= 1, "the query loop to get going", 60)
        killed = time.monotonic()
        c.kill(n3)
        c.wait_members(n1, 2, deadline_s=30)
        dropped = time.monotonic()
        wait_for(lambda: any(o.started > dropped for o in outcomes), "a query after n3 left the ring",
                 c.peer_timeout_s + 20)
    finally:
        stop.set()
        runner.join(c.peer_timeout_s + 30)
    assert not runner.is_alive(), "a query did not return"

    bound = c.peer_timeout_s + 15
    for o in outcomes:
        assert o.ended - o.started < bound, f"a query took {o.ended - o.started:.1f} s"
        if o.error is not None:
            assert is_unavailable(o.error) and names_node(o.error, "n3"), repr(o.error)
        else:
            compare(o.result, want, ordered=False)
    # Some queries ran while n3 was dead but still in n1's ring: they met the dead peer.
    assert any(o.started < dropped and o.ended > killed for o in outcomes), \
        [(o.started - killed, o.ended - killed) for o in outcomes]
    # With n3 gone for good, every node left answers fully.
    for node in (n1, n2):
        with node.connect() as conn:
            compare(query(conn, HEAVY), want, ordered=False)
            assert_exactly_once(node, "big", big.num_rows)
    assert up_and_gone(n1) == (["n1", "n2"], [])  # n3 held no unflushed rows


@pytest.mark.slow
def test_rows_only_a_killed_node_buffered_fail_loudly_until_it_returns(cluster3):
    c = cluster3
    n1, n2, n3 = c["n1"], c["n2"], c["n3"]
    held = generate()["orders"].slice(0, 6_000)
    kept = generate()["events"]
    # `held`: flushed by n1 and n3, and 2000 rows only in n2's buffer. `kept`: flushed everywhere.
    for node, lo in [(n1, 0), (n3, 2_000)]:
        ingest(node, "held", held.slice(lo, 2_000))
        node.flush("held")
    ingest(n2, "held", held.slice(4_000, 2_000))
    for node, lo in [(n1, 0), (n2, 1_000), (n3, 2_000)]:
        ingest(node, "kept", kept.slice(lo, 1_000))
        node.flush("kept")
    oracle = Oracle({"held": held, "kept": kept})
    held_queries = [
        U("SELECT status, count(*) AS n, sum(amount) AS s FROM held GROUP BY status"),   # partial
        U("SELECT count(*) AS n FROM held h JOIN kept k ON h.customer = k.customer"),    # gather
    ]
    kept_queries = [
        U("SELECT kind, count(*) AS n, avg(value) AS v FROM kept GROUP BY kind"),
        U("SELECT * FROM kept WHERE value > 45"),
        U("SELECT k.kind, count(*) AS n FROM kept k WHERE k.customer IN (SELECT customer FROM kept WHERE id < 10) "
          "GROUP BY k.kind"),
    ]
    check_corpus(c.live(), oracle, held_queries + kept_queries, "pre")

    c.kill(n2)
    # At once, while n2 is still in the ring: its files go elsewhere, its buffer cannot.
    for q in held_queries:
        expect_unavailable(n1, q.sql, "n2")
    # Once it left the ring it is listed as gone, holding one table's unflushed rows.
    wait_for(lambda: up_and_gone(n1) == (["n1", "n3"], ["n2"]), "n2 to be listed as gone on n1")
    with n1.connect() as conn:
        gone = query(conn, "SELECT state, unflushed_tables, is_self FROM skein_nodes WHERE node_id = 'n2'").to_pylist()
    assert gone == [{"state": "gone", "unflushed_tables": 1, "is_self": False}], gone
    for node in (n1, n3):
        for q in held_queries + [U("SELECT * FROM held WHERE id % 100 = 0")]:  # a scan too, now
            expect_unavailable(node, q.sql, "n2")
    check_corpus([n1, n3], oracle, kept_queries, "kept")

    # An operator whose node is lost for good may give its rows up (admin action); a live member
    # cannot be forgotten. Then queries answer again, without n2's 2000 buffered rows.
    client = n1.flight_client()
    with pytest.raises((flight.FlightError, pa.ArrowException), match="live member"):
        list(client.do_action(flight.Action("skein.forget_node", b'{"node": "n3"}')))
    with pytest.raises((flight.FlightError, pa.ArrowException), match="forget_node"):
        list(client.do_action(flight.Action("skein.forget_node", b'{"nod": "n2"}')))
    forgot = [json.loads(r.body.to_pybytes()) for r in
              client.do_action(flight.Action("skein.forget_node", b'{"node": "n2"}'))]
    assert forgot == [{"node": "n2", "tables": ["held"]}], forgot
    wait_for(lambda: up_and_gone(n1) == (["n1", "n3"], []), "n2 to be forgotten on n1")
    def answers_without_n2(node):
        try:
            with node.connect() as conn:
                return query(conn, "SELECT count(*) AS n FROM held").to_pylist() == [{"n": 4_000}]
        except adbc_driver_manager.Error as e:  # n2's marks not yet dropped by its watch
            assert is_unavailable(e) and names_node(e, "n2"), repr(e)
            return False

    for node in (n1, n3):  # each learns it from Redis at its next watch
        wait_for(lambda: answers_without_n2(node), f"{node.node_id} to answer without n2's rows")

    # Back with the same id and data directory: it replays its WAL and the answers are whole.
    c.restart(n2)
    c.wait_all_members(3)
    check_corpus(c.live(), oracle, held_queries + kept_queries, "back")
    for node in c.live():
        assert_exactly_once(node, "held", held.num_rows)
    assert up_and_gone(n1) == (["n1", "n2", "n3"], [])


# ---------------------------------------------------------------------------------------------
# e. A node joins

@pytest.mark.slow
def test_a_joining_node_gets_files_and_changes_no_answer(make_cluster):
    c = make_cluster(2)
    data = generate()
    apply_plan(c, data, PLAN_TWO_FLUSHED)
    oracle = Oracle(data)
    check_corpus(c.live(), oracle, label="two")

    n3 = c.add_node()
    assert n3.node_id == "n3"
    c.wait_all_members(3)
    check_corpus(c.live(), oracle, label="three")
    sql = "SELECT customer, count(*) AS n, sum(amount) AS s FROM orders GROUP BY customer"
    got, row = run_logged(c["n1"], sql, "joined")
    compare(got, oracle.query(sql), ordered=False)
    assert row["shape"] == "partial" and row["fragments"] == 3, row
    assert row["peers"].get("n3", {}).get("files", 0) > 0, row["peers"]
    files = sum(p["files"] for p in row["peers"].values())  # each of orders' 30 files read once
    assert (files == 30) if "n1" in row["peers"] else (files < 30), row["peers"]


# ---------------------------------------------------------------------------------------------
# f. A node leaves

@pytest.mark.slow
def test_a_node_stopped_with_sigterm_flushes_and_leaves(cluster3):
    c = cluster3
    n1, n2, n3 = c["n1"], c["n2"], c["n3"]
    data = generate()
    buffered = apply_plan(c, data, PLAN_N3_BUFFERED)
    assert buffered["n3"]["orders"] == 10_000
    oracle = Oracle(data)
    check_corpus([n1], oracle, label="before")

    assert c.stop(n3) == 0, "a node stopped with SIGTERM exits 0"
    c.wait_members(n1, 2)
    c.wait_members(n2, 2)
    assert up_and_gone(n1) == (["n1", "n2"], [])
    assert up_and_gone(n2) == (["n1", "n2"], [])
    check_corpus([n1, n2], oracle, label="after")
    for name in ("orders", "customers", "events"):
        assert_exactly_once(n1, name, data[name].num_rows)


def test_compaction_delete_and_update_hold_across_nodes(make_cluster):
    """Every node's files merged by one node while two others query; DELETE and UPDATE issued on
    different nodes change rows flushed by all three and rows still in their buffers. The table
    is laid out by day, so every flush writes two files to the bucket."""
    cluster = make_cluster(3, "--compaction-cool-down", "0s", "--compaction-min-files", "2",
                           "--compaction-interval", "0s")
    nodes = cluster.live()
    rng = random.Random(SEED)

    def batch(lo: int, hi: int) -> pa.Table:
        ids = list(range(lo, hi))
        return pa.table({"id": pa.array(ids, pa.int64()),
                         "grp": pa.array([f"g{rng.randrange(6)}" for _ in ids]),
                         "v": pa.array([rng.uniform(-10, 10) for _ in ids]),
                         "ts": pa.array([T0 + datetime.timedelta(days=i % 2, seconds=i) for i in ids],
                                        pa.timestamp("us"))})

    with nodes[0].connect() as conn:
        query(conn, "CREATE TABLE lc (id BIGINT, grp VARCHAR, v DOUBLE, ts TIMESTAMP) WITH (time_column = 'ts')")
    loaded, lo = [], 0
    for round_ in range(4):
        for node in nodes:
            b = batch(lo, lo + 400)
            lo += 400
            ingest(node, "lc", b)
            node.flush("lc")
            loaded.append(b)
    for node in nodes:  # rows only in each node's buffer
        b = batch(lo, lo + 250)
        lo += 250
        ingest(node, "lc", b)
        loaded.append(b)
    db = duckdb.connect()
    db.register("src", pa.concat_tables(loaded))
    db.execute("CREATE TABLE lc AS SELECT * FROM src")
    probes = [
        "SELECT count(*) AS n, count(DISTINCT id) AS d, round(sum(v), 6) AS s FROM lc",
        "SELECT grp, count(*) AS n, round(sum(v), 6) AS s FROM lc GROUP BY grp ORDER BY grp",
        "SELECT id, grp, v, ts FROM lc WHERE id % 97 = 0 ORDER BY id",
        "SELECT count(*) AS n, round(sum(v), 6) AS s FROM lc WHERE ts < TIMESTAMP '2024-01-02'",
    ]

    def check_all(label: str):
        want = [db.sql(p).to_arrow_table().to_pylist() for p in probes]
        for node in nodes:
            with node.connect() as conn:
                got = [query(conn, p).to_pylist() for p in probes]
            assert got == want, (label, node.node_id)

    check_all("loaded")
    with nodes[0].connect() as conn:
        files = query(conn, "SELECT partition, count(*) AS n FROM skein_files WHERE table_name = 'lc' "
                            "GROUP BY ALL ORDER BY 1").to_pylist()
    assert files == [{"partition": "2024-01-01", "n": 12}, {"partition": "2024-01-02", "n": 12}]

    # n2 merges the files all three flushed while n1 and n3 keep querying.
    want = db.sql(probes[1]).to_arrow_table().to_pylist()
    stop, failures, answers = threading.Event(), [], [0]

    def reader(node):
        with node.connect() as conn:
            while not stop.is_set():
                try:
                    got = query(conn, probes[1]).to_pylist()
                    if got != want:
                        failures.append((node.node_id, got))
                    answers[0] += 1
                except Exception as e:  # noqa: BLE001 - every failure is reported below
                    failures.append((node.node_id, repr(e)))

    threads = [threading.Thread(target=reader, args=(n,)) for n in (nodes[0], nodes[2])]
    for t in threads:
        t.start()
    try:
        wait_for(lambda: answers[0] >= 4, "readers under way")
        client = nodes[1].flight_client()
        report = json.loads(next(iter(client.do_action(flight.Action("skein.compact", b"lc")))).body.to_pybytes())
        client.close()
        seen = answers[0]
        wait_for(lambda: answers[0] >= seen + 4, "readers after the merge")
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert failures == [], failures[:3]
    assert report["merged_files"] == 24 and report["files"] == 2, report
    for node in nodes:
        with node.connect() as conn:
            assert query(conn, "SELECT files FROM skein_tables WHERE table_name = 'lc'").column(0)[0].as_py() == 2
    check_all("compacted")

    # A DELETE on n3 and an UPDATE on n1 reach the rows buffered on every node as well.
    delete = "DELETE FROM lc WHERE id % 5 = 0 OR (grp = 'g3' AND v > 0)"
    want_deleted = db.execute(delete).fetchall()[0][0]
    assert execute_update(nodes[2], delete) == want_deleted > 0
    check_all("deleted")
    update = "UPDATE lc SET v = v * 2 + 1, grp = upper(grp) WHERE id BETWEEN 1000 AND 5200 AND grp <> 'g1'"
    want_updated = db.execute(update).fetchall()[0][0]
    assert execute_update(nodes[0], update) == want_updated > 0
    check_all("updated")
    for node in nodes:
        with node.connect() as conn:
            assert query(conn, "SELECT buffered_rows FROM skein_tables WHERE table_name = 'lc'").column(0)[0].as_py() == 0

    # Two nodes rewrite the same files at once while the third merges them: every statement
    # lands whole (its count as DuckDB's) or fails ABORTED and changes nothing.
    for node in nodes:  # small files again, so that the merge has work
        for _ in range(2):
            b = batch(lo, lo + 200)
            lo += 200
            ingest(node, "lc", b)
            node.flush("lc")
            db.register("b", b)
            db.execute("INSERT INTO lc SELECT * FROM b")
    racing = {nodes[0]: "DELETE FROM lc WHERE id % 7 = 1",
              nodes[1]: "UPDATE lc SET v = v + 100 WHERE id % 7 = 2"}
    outcomes = {}

    def run(node, sql):
        try:
            outcomes[sql] = execute_update(node, sql)
        except Exception as e:  # noqa: BLE001 - checked below
            outcomes[sql] = e

    def compact():
        client = nodes[2].flight_client()
        try:
            outcomes["compact"] = list(client.do_action(flight.Action("skein.compact", b"lc")))
        except Exception as e:  # noqa: BLE001 - checked below
            outcomes["compact"] = e
        finally:
            client.close()

    threads = [threading.Thread(target=run, args=item) for item in racing.items()]
    threads.append(threading.Thread(target=compact))
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not isinstance(outcomes["compact"], Exception), outcomes["compact"]
    for sql in racing.values():
        got = outcomes[sql]
        if isinstance(got, Exception):
            assert "ABORTED" in str(got) or "aborted" in str(got).lower(), got
            continue
        assert got == db.execute(sql).fetchall()[0][0], (sql, got)
    check_all("raced")
    # Rows ingested afterwards join the changed ones; a node killed holding them replays only
    # them, never a row the statements changed.
    more = batch(lo, lo + 300)
    ingest(nodes[1], "lc", more)
    db.register("more", more)
    db.execute("INSERT INTO lc SELECT * FROM more")
    check_all("ingested after")
    cluster.kill(nodes[1])
    cluster.restart(nodes[1])
    cluster.wait_all_members(3)
    nodes = cluster.live()
    check_all("after a restart")


# ---------------------------------------------------------------------------------------------
# f. Any client, any fault: tickets redeemed on the wrong node, peers lost after planning,
#    a paused process whose id was taken, a catalog store rolled back

def redeem_here(plan_on, fetch_on, sql: str) -> pa.Table:
    """What a client gets that plans on `plan_on` and fetches every endpoint from `fetch_on`,
    ignoring their locations (as older JDBC and ODBC drivers do)."""
    planner = plan_on.flight_client()
    fetcher = planner if fetch_on is plan_on else fetch_on.flight_client()
    try:
        info = planner.get_flight_info(statement_query(sql))
        parts = [fetcher.do_get(e.ticket).read_all() for e in info.endpoints]
    finally:
        planner.close()
        if fetcher is not planner:
            fetcher.close()
    return pa.concat_tables(parts), len(info.endpoints)


REDEEM_QUERIES = [
    ("scatter", "SELECT * FROM orders WHERE price > 50"),
    ("partial", "SELECT status, count(*) AS n, sum(amount) AS s FROM orders GROUP BY status"),
    ("gather", "SELECT o.status, count(*) AS n FROM orders o JOIN customers c ON o.customer = c.id "
               "WHERE c.region = 'north' GROUP BY o.status"),
]


def test_a_cancelled_query_stops_its_fragments_on_every_peer(loaded):
    c = loaded.cluster
    n1 = c["n1"]
    peers = c.others(n1)
    tag = f"cancel-{uuid.uuid4().hex[:8]}"
    # A partial aggregate whose fragments take seconds on every peer (each row's status is
    # repeated into a string of about a megabyte) and send nothing until they are done.
    sql = (f"SELECT status, sum(length(repeat(coalesce(status, 'x'), 200000))) AS n FROM orders "
           f"WHERE status IS DISTINCT FROM '{tag}' GROUP BY status")
    started = {p.node_id: metric(p, "queries_total") for p in peers}
    client = n1.flight_client()
    info = client.get_flight_info(statement_query(sql))
    assert len(info.endpoints) == 1, info.endpoints  # merged on n1
    outcome = {}

    def read():
        try:
            outcome["rows"] = client.do_get(info.endpoints[0].ticket).read_all().num_rows
        except flight.FlightError as e:
            outcome["error"] = e

    reader = threading.Thread(target=read)
    reader.start()
    try:
        wait_for(lambda: all(metric(p, "queries_total") > started[p.node_id] for p in peers),
                 "every peer to start its fragment")
        assert cancel_flight_info(n1.flight_client(), info) == 1  # CANCELLED
    finally:
        reader.join(60)
    assert not reader.is_alive()
    assert "error" in outcome and "cancel" in str(outcome["error"]).lower(), outcome
    # Each peer's fragment was stopped rather than run to its end: it is logged as failed.
    for p in peers:
        row = wait_for(lambda: log_rows(p, tag), f"{p.node_id} to log its fragment")
        assert [r["status"] for r in row] != ["ok"] and len(row) == 1, (p.node_id, row)
        assert "interrupt" in row[0]["status"].lower(), (p.node_id, row)
    # The cluster still answers.
    check = "SELECT status, count(*) AS n FROM orders GROUP BY status"
    with n1.connect() as conn:
        compare(query(conn, check), loaded.oracle.query(check), ordered=False)


@pytest.mark.slow
def test_a_client_that_fetches_every_endpoint_from_one_node_gets_the_right_rows(loaded):
    c = loaded.cluster
    nodes = c.live()
    for shape, sql in REDEEM_QUERIES:
        want = loaded.oracle.query(sql)
        for node in nodes:
            got, endpoints = redeem_here(node, node, tagged(sql, new_tag(f"own-{shape}")))
            compare(got, want, ordered=False)
            assert endpoints == (3 if shape == "scatter" else 1), (shape, endpoints)
        # Planned on one node, fetched from another (a load balancer between them).
        got, _ = redeem_here(nodes[0], nodes[1], sql)
        compare(got, want, ordered=False)
    # The scatter's foreign endpoints were passed on to the nodes they were planned for: each
    # node ran its own part (its buffered rows are nowhere else).
    tag = new_tag("passed-on")
    got, _ = redeem_here(nodes[0], nodes[0], tagged(REDEEM_QUERIES[0][1], tag))
    for node in c.others(nodes[0]):
        assert [r["shape"] for r in log_rows(node, tag)] == ["fragment"], node.node_id


@pytest.mark.slow
def test_a_peer_lost_after_planning_and_after_flushing_loses_no_rows(cluster3):
    c = cluster3
    n1, n2, n3 = c["n1"], c["n2"], c["n3"]
    rows = generate()["orders"].slice(0, 9_000)
    for k, node in enumerate((n1, n2, n3)):
        ingest(node, "late", rows.slice(k * 3_000, 3_000))
    n1.flush("late")  # n2 and n3 hold theirs in their buffers
    oracle = Oracle({"late": rows})
    sql = "SELECT * FROM late WHERE qty >= 0"
    want = oracle.query(sql)

    planner = n1.flight_client()
    try:
        info = planner.get_flight_info(statement_query(sql))
        assert len(info.endpoints) == 3
        # After planning, n2 flushes (its mark goes: its rows are in a file the plan does not
        # list) and dies before its endpoint is fetched.
        n2.flush("late")
        c.kill(n2)
        got = pa.concat_tables([planner.do_get(e.ticket).read_all() for e in info.endpoints])
        compare(got, want, ordered=False)
        # A client that follows the locations meets the dead node: an error, never fewer rows.
        for e in info.endpoints:
            if not e.locations:
                continue
            peer = flight.FlightClient(e.locations[0])
            try:
                part = peer.do_get(e.ticket).read_all()
                assert part.num_rows > 0, "n3's part"
            except flight.FlightError as err:
                assert "unavailable" in str(err).lower() or "connect" in str(err).lower(), err
            finally:
                peer.close()
    finally:
        planner.close()
    # Partial and gather queries planned now, while n2 is still in the ring, read its files.
    for q in [U("SELECT status, count(*) AS n, sum(amount) AS s FROM late GROUP BY status"),
              U("SELECT count(*) AS n FROM late a JOIN late b ON a.id = b.id")]:
        with n1.connect() as conn:
            oracle.check(query(conn, q.sql), q)
    assert_exactly_once(n3, "late", rows.num_rows)


@pytest.mark.slow
def test_a_paused_process_whose_node_id_was_taken_cannot_commit(make_cluster):
    c = make_cluster(2)
    n1, n2 = c["n1"], c["n2"]
    rows = generate()["orders"].slice(0, 6_000)
    ingest(n1, "fenced", rows.slice(0, 2_000))  # acknowledged, only in n1's WAL and buffer
    ingest(n2, "fenced", rows.slice(2_000, 1_000))
    n2.flush("fenced")
    n1.proc.send_signal(signal.SIGSTOP)
    try:
        # Its volume is attached to a new process with the same id (n1's claim lapses first).
        copy = c.base_dir / "n1-copy"
        shutil.copytree(n1.data_dir, copy)
        port, http_port = free_ports(2)
        taken = ClusterNode("n1", copy, port, http_port)
        taken.extra = c.flags(taken)
        c.nodes["n1-copy"] = taken
        taken.start()
        c.wait_members(n2, 2)
        taken.flush("fenced")  # the replayed rows, committed by the new holder
        ingest(taken, "fenced", rows.slice(3_000, 1_000))
        taken.flush("fenced")
    finally:
        n1.proc.send_signal(signal.SIGCONT)
    # The old process resumes holding 2000 rows the new one already committed: it can neither
    # acknowledge a write nor commit, and says why.
    with pytest.raises(adbc_driver_manager.Error, match="another process took node id"):
        ingest(n1, "fenced", rows.slice(4_000, 1_000))
    with pytest.raises(flight.FlightError, match="another process took"):
        n1.flush("fenced")
    code, text = n1.http_status("/ready")
    assert code == 503 and "another process took node id" in text, (code, text)
    # Nor does it answer queries: its buffer holds rows the new holder committed, which a
    # client connected to it would otherwise count twice.
    with pytest.raises(adbc_driver_manager.Error, match="another process took node id"):
        with n1.connect() as conn:
            query(conn, "SELECT count(*) AS n FROM fenced")
    ingest(n2, "fenced", rows.slice(5_000, 1_000))
    for node in (n2, taken):
        assert_exactly_once(node, "fenced", 5_000)


@pytest.mark.slow
def test_redis_restored_from_an_older_dump_then_committed_to_is_seen_and_loses_nothing(
        aws_env, seaweed, bucket, tmp_path):
    redis = Redis(tmp_path / "redis").start()
    c = Cluster(seaweed, bucket, redis, tmp_path / "nodes")
    try:
        c.start(2)
        n1, n2 = c["n1"], c["n2"]
        rows = generate()["orders"].slice(0, 8_000)
        for k, node in enumerate((n1, n2)):
            ingest(node, "kept", rows.slice(k * 2_000, 2_000))
            node.flush("kept")
        redis.client().save()
        old_dump = tmp_path / "old.rdb"
        shutil.copy(redis.dir / "dump.rdb", old_dump)
        for k, node in enumerate((n1, n2)):  # flushed after the dump: their WAL is truncated
            ingest(node, "kept", rows.slice(4_000 + k * 2_000, 2_000))
            node.flush("kept")
        head = f"skein:{c.cluster_name}:catalog"
        seen = int(redis.client().hget(head, "version"))

        def files_seen(node):
            with node.connect() as conn:
                return query(conn, "SELECT files FROM skein_tables WHERE table_name = 'kept'").column(0)[0].as_py()

        for node in (n1, n2):
            wait_for(lambda: files_seen(node) == 4, f"{node.node_id} to take in every flush")

        for node in (n1, n2):
            node.proc.send_signal(signal.SIGSTOP)
        try:
            redis.stop()
            shutil.copy(old_dump, redis.dir / "dump.rdb")
            redis.start()
            restored = int(redis.client().hget(head, "version"))
            assert restored < seen
            # A node that knows nothing newer commits until the counter is back where n1 and
            # n2 saw it.
            fresh = c.add_node("n3")
            with fresh.connect() as conn, conn.cursor() as cur:
                i = 0
                while int(redis.client().hget(head, "version")) < seen:
                    cur.execute(f"CREATE TABLE pad{i} (x INTEGER)")
                    i += 1
                conn.commit()
            assert int(redis.client().hget(head, "version")) == seen
        finally:
            for node in (n1, n2):
                node.proc.send_signal(signal.SIGCONT)
        late = generate()["orders"].slice(8_000, 500)
        ingest(n1, "kept", late)  # acknowledged into n1's WAL; it cannot be flushed yet
        for node in (n1, n2):
            wait_for(lambda: "catalog lost its data" in node.http_status("/ready")[1],
                     f"{node.node_id} to see the catalog was rolled back")
        with pytest.raises(flight.FlightError, match="catalog was lost"):
            n1.flush("kept")
        client = n1.flight_client()
        list(client.do_action(flight.Action("skein.restore", b'{"snapshot": "latest"}')))
        client.close()
        for node in c.live():
            wait_for(lambda: node.http_status("/ready")[0] == 200, f"{node.node_id} ready again")
            assert_exactly_once(node, "kept", rows.num_rows + late.num_rows)
        n1.flush("kept")
        assert_exactly_once(fresh, "kept", rows.num_rows + late.num_rows)
    finally:
        c.close()
        redis.stop()
