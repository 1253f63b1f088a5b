"""A day-one ADBC session against one node, checked against DuckDB in process on the same data."""

import datetime
import decimal
import math

import numpy as np
import pyarrow as pa
import pytest

from conftest import assert_same_rows, oracle, query

N = 1_000_000


def mixed_table(n: int, seed: int = 7) -> pa.Table:
    rng = np.random.default_rng(seed)
    names = np.array(["alpha", "beta", "gamma", "delta", "epsilon", "ζeta"])
    base = datetime.datetime(2024, 1, 1, tzinfo=datetime.timezone.utc)
    cents = rng.integers(-10_000_000, 10_000_000, n)
    amount_mask = rng.random(n) < 0.05
    return pa.table(
        {
            "id": pa.array(np.arange(n, dtype=np.int64)),
            "k": pa.array(rng.integers(0, 100, n, dtype=np.int32)),
            "qty": pa.array(rng.integers(-1000, 1000, n, dtype=np.int16)),
            "price": pa.array(rng.random(n) * 1000.0),
            "name": pa.array(names[rng.integers(0, len(names), n)]),
            "flag": pa.array(rng.random(n) < 0.3),
            "day": pa.array((np.datetime64("2020-01-01") + rng.integers(0, 2000, n).astype("timedelta64[D]")).astype("datetime64[D]")),
            "ts": pa.array(rng.integers(0, 10**13, n), pa.int64()).cast(pa.timestamp("us", tz="UTC")),
            "amount": pa.array(
                [None if m else decimal.Decimal(int(c)).scaleb(-2) for c, m in zip(cents, amount_mask)],
                pa.decimal128(18, 2),
            ),
        }
    )


@pytest.fixture(scope="module")
def data():
    # Batches of 100k rows: the ADBC driver refuses to send a gRPC message over 16 MiB.
    return pa.Table.from_batches(mixed_table(N).to_batches(max_chunksize=100_000))


def test_ingest_query_prepare_and_catalog(node, data):
    with node.connect() as conn:
        with conn.cursor() as cur:
            rows = cur.adbc_ingest("sales", data, mode="create")
            assert rows == N
        conn.commit()

        # Aggregates. Float sums depend on summation order, so they are compared with a tolerance.
        sql = "SELECT count(*) AS n, sum(qty) AS q, sum(amount) AS a, count(amount) AS c, sum(price) AS p FROM sales"
        got = query(conn, sql).to_pylist()[0]
        want = oracle({"sales": data}, sql).to_pylist()[0]
        assert (got["n"], got["q"], got["a"], got["c"]) == (want["n"], want["q"], want["a"], want["c"])
        assert math.isclose(got["p"], want["p"], rel_tol=1e-9)

        sql = (
            "SELECT k, count(*) AS n, sum(qty) AS q, min(name) AS lo, max(ts) AS latest, "
            "sum(amount) AS a, bool_or(flag) AS f, min(day) AS d FROM sales GROUP BY k ORDER BY k"
        )
        assert_same_rows(query(conn, sql), oracle({"sales": data}, sql))

        # A prepared statement with a parameter (ADBC prepares, binds over DoPut, executes).
        sql = "SELECT count(*) AS n, sum(qty) AS q, min(id) AS lo FROM sales WHERE k = ? AND name <> ?"
        got = query(conn, sql, (7, "beta"))
        want = oracle({"sales": data}, sql.replace("?", "{}").format(7, "'beta'"))
        assert_same_rows(got, want)

        # The catalog: get_objects lists the table and its columns.
        objects = conn.adbc_get_objects(depth="all").read_all().to_pylist()
        tables = [
            t
            for c in objects
            for s in c["catalog_db_schemas"]
            for t in s["db_schema_tables"]
            if t["table_name"] == "sales"
        ]
        assert len(tables) == 1
        assert [col["column_name"] for col in tables[0]["table_columns"]] == data.column_names

        # The table schema matches what a query returns.
        schema = conn.adbc_get_table_schema("sales")
        returned = query(conn, "SELECT * FROM sales LIMIT 1").schema
        assert schema.names == data.column_names
        assert [f.type for f in schema] == [f.type for f in returned]


def test_dollar_placeholders_and_reuse(node):
    with node.connect() as conn:
        with conn.cursor() as cur:
            cur.adbc_ingest("t", pa.table({"a": pa.array(range(100), pa.int64())}), mode="create")
            sql = "SELECT sum(a) AS s FROM t WHERE a >= $1 AND a < $2"
            for lo, hi in [(0, 10), (50, 100), (5, 6)]:
                cur.execute(sql, (lo, hi))
                assert cur.fetchone()[0] == sum(range(lo, hi))


def test_prepared_statement_declares_parameter_types(node):
    with node.connect() as conn, conn.cursor() as cur:
        cur.adbc_ingest("p", pa.table({"a": pa.array([1], pa.int64()), "s": ["x"], "d": pa.array([1.5], pa.float64())}), mode="create")
        schema = cur.adbc_prepare("SELECT * FROM p WHERE a = ? AND s = ? AND d > ?")
        assert [f.type for f in schema] == [pa.int64(), pa.string(), pa.float64()]
