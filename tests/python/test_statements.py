"""SQL statements that change tables, through ADBC: honest row counts, visible results."""

import decimal

import adbc_driver_manager
import pyarrow as pa
import pytest

from conftest import assert_same_rows, query


def update(conn, sql) -> int:
    with conn.cursor() as cur:
        cur.adbc_statement.set_sql_query(sql)
        return cur.adbc_statement.execute_update()


def test_ddl_and_dml(node):
    with node.connect() as conn:
        assert update(conn, "CREATE TABLE t (id BIGINT NOT NULL, name VARCHAR, score DECIMAL(10,2))") == 0
        assert update(conn, "INSERT INTO t VALUES (1, 'a', 1.50), (2, 'b', NULL), (3, NULL, 3.25)") == 3
        assert update(conn, "INSERT INTO t (id, name) SELECT id + 10, name || '!' FROM t WHERE id < 3") == 2
        got = query(conn, "SELECT id, name, score FROM t ORDER BY id")
        assert got.to_pylist() == [
            {"id": 1, "name": "a", "score": decimal.Decimal("1.50")},
            {"id": 2, "name": "b", "score": None},
            {"id": 3, "name": None, "score": decimal.Decimal("3.25")},
            {"id": 11, "name": "a!", "score": None},
            {"id": 12, "name": "b!", "score": None},
        ]
        assert update(conn, "CREATE TABLE t2 AS SELECT id * 2 AS twice, name FROM t WHERE name IS NOT NULL") == 4
        assert query(conn, "SELECT sum(twice) AS s FROM t2").to_pylist() == [{"s": 2 * (1 + 2 + 11 + 12)}]

        assert update(conn, "ALTER TABLE t ADD COLUMN extra INTEGER") == 0
        assert update(conn, "INSERT INTO t (id, extra) VALUES (20, 7)") == 1
        got = query(conn, "SELECT id, extra FROM t WHERE id >= 12 ORDER BY id")
        assert got.to_pylist() == [{"id": 12, "extra": None}, {"id": 20, "extra": 7}]

        # NOT NULL is enforced.
        with pytest.raises(adbc_driver_manager.Error, match="NOT NULL"):
            update(conn, "INSERT INTO t (name) VALUES ('x')")

        assert update(conn, "DROP TABLE t2") == 0
        with pytest.raises(adbc_driver_manager.Error, match="does not exist"):
            query(conn, "SELECT * FROM t2")
        assert update(conn, "DROP TABLE IF EXISTS t2") == 0
        with pytest.raises(adbc_driver_manager.Error, match="does not exist"):
            update(conn, "DROP TABLE t2")
        assert update(conn, "CREATE TABLE IF NOT EXISTS t (other INT)") == 0
        assert query(conn, "SELECT count(*) AS n FROM t").to_pylist() == [{"n": 6}]


def test_ddl_through_execute_and_prepared_inserts(node):
    with node.connect() as conn, conn.cursor() as cur:
        # DBAPI execute() of DDL goes through the query path; it runs exactly once.
        cur.execute("CREATE TABLE p (a BIGINT, b VARCHAR)")
        cur.fetchall()
        # executemany: one prepared statement, many parameter rows.
        cur.executemany("INSERT INTO p VALUES (?, ?)", [(i, f"v{i}") for i in range(50)])
        got = query(conn, "SELECT count(*) AS n, sum(a) AS s, max(b) AS m FROM p")
        assert got.to_pylist() == [{"n": 50, "s": sum(range(50)), "m": "v9"}]


def test_insert_select_from_itself_and_empty_ctas(node):
    with node.connect() as conn:
        update(conn, "CREATE TABLE d AS SELECT range AS x FROM range(5)")
        assert update(conn, "INSERT INTO d SELECT x + 5 FROM d") == 5
        assert_same_rows(query(conn, "SELECT x FROM d ORDER BY x"), pa.table({"x": pa.array(range(10), pa.int64())}))
        assert update(conn, "CREATE TABLE e AS SELECT * FROM d WHERE false") == 0
        assert query(conn, "SELECT count(*) AS n FROM e").to_pylist() == [{"n": 0}]


def test_a_repeated_query_sees_schema_changes(node):
    """Result schemas are remembered per catalog version: DDL between two runs of the same
    query must show in its schema."""
    with node.connect() as conn, conn.cursor() as cur:
        cur.execute("CREATE TABLE s (a BIGINT)")
        cur.execute("INSERT INTO s VALUES (1)")
        assert query(conn, "SELECT * FROM s").schema.names == ["a"]
        assert query(conn, "SELECT * FROM s").schema.names == ["a"]
        cur.execute("ALTER TABLE s ADD COLUMN b VARCHAR")
        got = query(conn, "SELECT * FROM s")
        assert got.schema.names == ["a", "b"]
        assert got.to_pylist() == [{"a": 1, "b": None}]
        cur.execute("DROP TABLE s")
        cur.execute("CREATE TABLE s (x DOUBLE)")
        assert query(conn, "SELECT * FROM s").schema.names == ["x"]


def test_table_options_set_flush_thresholds_per_table(make_node, tmp_path):
    import time

    node = make_node(data_dir=tmp_path / "d")  # node defaults: flush at 1M rows or after 60 s
    with node.connect() as conn, conn.cursor() as cur:
        cur.execute("CREATE TABLE small (a BIGINT)")
        cur.execute("CREATE TABLE big (a BIGINT)")
        cur.execute("ALTER TABLE small SET (flush_rows = 5, flush_interval = '90s')")
        for bad, message in [
            ("ALTER TABLE small SET (compression = 'zstd')", "unknown option"),
            ("ALTER TABLE small SET (retention = '1d')", "needs a time_column"),
            ("ALTER TABLE small SET (flush_rows = -3)", "positive whole number"),
            ("ALTER TABLE small SET (flush_interval = 'soon')", "flush_interval"),
            ("ALTER TABLE nope SET (flush_rows = 5)", "nope"),
        ]:
            with pytest.raises(adbc_driver_manager.Error, match=message):
                cur.execute(bad)
        conn.commit()
        options = "SELECT table_name, flush_rows, flush_interval_ms FROM skein_tables ORDER BY 1"
        assert query(conn, options).to_pylist() == [
            {"table_name": "big", "flush_rows": 1_000_000, "flush_interval_ms": 60_000},
            {"table_name": "small", "flush_rows": 5, "flush_interval_ms": 90_000},
        ]
        for t in ("small", "big"):
            cur.adbc_ingest(t, pa.table({"a": pa.array(range(7), pa.int64())}), mode="append")
        conn.commit()
        # Past its own threshold, only `small` is flushed.
        deadline = time.monotonic() + 30
        files = "SELECT table_name, files, buffered_rows FROM skein_tables ORDER BY 1"
        while query(conn, files).to_pylist()[1]["files"] == 0:
            assert time.monotonic() < deadline, "small was not flushed at 5 rows"
            time.sleep(0.05)
        assert query(conn, files).to_pylist() == [
            {"table_name": "big", "files": 0, "buffered_rows": 7},
            {"table_name": "small", "files": 1, "buffered_rows": 0},
        ]
        cur.execute("ALTER TABLE small SET (flush_rows = NULL)")  # back to the node default
        conn.commit()
    node.stop()
    node = make_node(data_dir=tmp_path / "d")  # options live in the catalog
    with node.connect() as conn:
        assert query(conn, options).to_pylist()[1] == {
            "table_name": "small", "flush_rows": 1_000_000, "flush_interval_ms": 90_000}
