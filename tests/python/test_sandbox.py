"""Sandbox escapes: user SQL must not read or write the host, run SQL from strings, or read or
change engine settings, however it is disguised. Each attempt must fail with a clear error,
nothing may be written, and the node must keep serving."""

import re

import adbc_driver_manager
import pyarrow as pa
import pytest

from conftest import query


@pytest.fixture
def loaded(node):
    with node.connect() as conn, conn.cursor() as cur:
        cur.adbc_ingest("t", pa.table({"a": [1, 2, 3], "name": ["x", "y", "z"]}), mode="create")
    return node


def attempts(out, secret_file):
    f = str(secret_file)
    return [
        # File-reading table functions, in every spelling.
        (f"SELECT * FROM read_csv('{f}')", "read_csv"),
        (f"SELECT * FROM read_csv_auto('{f}')", "read_csv_auto"),
        (f"SELECT * FROM READ_CSV('{f}')", "read_csv"),
        (f'SELECT * FROM "read_csv"(\'{f}\')', "read_csv"),
        (f"SELECT * FROM main.read_csv('{f}')", "read_csv"),
        (f"SELECT * FROM read_csv(['{f}'])", "read_csv"),
        (f"SELECT * FROM read_parquet('{f}')", "read_parquet"),
        (f"SELECT * FROM parquet_scan('{f}')", "parquet_scan"),
        (f"SELECT * FROM parquet_metadata('{f}')", "parquet_metadata"),
        (f"SELECT * FROM parquet_schema('{f}')", "parquet_schema"),
        (f"SELECT * FROM read_json('{f}')", "read_json"),
        (f"SELECT * FROM read_json_auto('{f}')", "read_json_auto"),
        (f"SELECT * FROM read_ndjson('{f}')", "read_ndjson"),
        (f"SELECT * FROM read_text('{f}')", "read_text"),
        (f"SELECT * FROM read_blob('{f}')", "read_blob"),
        ("SELECT * FROM glob('/*')", "glob"),
        (f"SELECT * FROM sniff_csv('{f}')", "sniff_csv"),
        ("SELECT * FROM sqlite_scan('x.db', 't')", "sqlite_scan"),
        ("SELECT * FROM iceberg_scan('x')", "iceberg_scan"),
        # Replacement scans: a file named as a table.
        (f"SELECT * FROM '{f}'", "file"),
        ("SELECT * FROM 'data.csv'", "file"),
        ('SELECT * FROM "data.parquet"', "file"),
        (f"FROM '{f}'", "file"),
        # Wrapped: CTEs, subqueries, lateral joins, set operations, comments, EXPLAIN.
        (f"WITH x AS (SELECT * FROM read_csv('{f}')) SELECT * FROM x", "read_csv"),
        (f"SELECT (SELECT count(*) FROM read_text('{f}'))", "read_text"),
        ("SELECT * FROM t WHERE a IN (SELECT 1 FROM glob('/root/*'))", "glob"),
        (f"SELECT * FROM t, LATERAL (SELECT * FROM read_blob('{f}'))", "read_blob"),
        (f"SELECT a FROM t UNION ALL SELECT 1 FROM read_text('{f}')", "read_text"),
        (f"/* hi */ SELECT/**/*/**/FROM/**/read_csv('{f}') -- bye", "read_csv"),
        (f"EXPLAIN SELECT * FROM read_csv('{f}')", "read_csv"),
        (f"EXPLAIN ANALYZE SELECT * FROM read_csv('{f}')", "read_csv"),
        (f"SUMMARIZE SELECT * FROM read_csv('{f}')", "read_csv"),
        # SQL from strings.
        (f"SELECT * FROM query('SELECT * FROM read_csv(''{f}'')')", "query"),
        ("SELECT * FROM query_table('t')", "query_table"),
        # Settings, secrets, environment.
        ("SELECT getenv('HOME')", "getenv"),
        ("SELECT current_setting('allowed_directories')", "current_setting"),
        ("SELECT * FROM duckdb_settings()", "duckdb_settings"),
        ("SELECT * FROM duckdb_secrets()", "duckdb_secrets"),
        ("SELECT load_aws_credentials()", "load_aws_credentials"),
        ("SET enable_external_access = true", "not supported"),
        ("SET GLOBAL threads = 1", "not supported"),
        ("RESET lock_configuration", "not supported"),
        ("PRAGMA enable_profiling", "not supported"),
        ("CREATE SECRET s (TYPE s3, KEY_ID 'x', SECRET 'y')", "not supported"),
        # Writing files, attaching databases, extensions.
        (f"COPY t TO '{out}/a.csv'", "not supported"),
        (f"COPY (SELECT 1) TO '{out}/b.parquet'", "not supported"),
        (f"EXPORT DATABASE '{out}/db'", "not supported"),
        (f"ATTACH '{out}/x.db' AS x", "not supported"),
        ("INSTALL httpfs", "not supported"),
        ("LOAD httpfs", "not supported"),
        ("CHECKPOINT", "not supported"),
        # Views, macros, prepared statements and DDL/DML that carry a forbidden read.
        (f"CREATE VIEW v AS SELECT * FROM read_csv('{f}')", "not supported|read_csv"),
        (f"CREATE MACRO m() AS TABLE SELECT * FROM read_csv('{f}')", "not supported|read_csv"),
        (f"PREPARE p AS SELECT * FROM read_csv('{f}')", "not supported|read_csv"),
        (f"CREATE TABLE stolen AS SELECT * FROM read_csv('{f}')", "read_csv"),
        (f"INSERT INTO t SELECT 9, content FROM read_text('{f}')", "read_text"),
        ("CREATE TABLE s AS SELECT current_setting('threads') AS v", "current_setting"),
    ]


def test_escape_attempts_are_refused_with_a_clear_error(loaded, tmp_path):
    secret = tmp_path / "secret.csv"
    secret.write_text("password\nhunter2\n")
    out = tmp_path / "out"
    out.mkdir()
    corpus = attempts(out, secret)
    assert len(corpus) >= 50
    refused = []
    with loaded.connect() as conn:
        for sql, reason in corpus:
            with pytest.raises(adbc_driver_manager.Error) as e:
                query(conn, sql)
            message = str(e.value)
            assert re.search(reason, message, re.IGNORECASE), (sql, message)
            assert "hunter2" not in message, (sql, message)
            refused.append(sql)
        # The same through prepared statements (what JDBC drivers use for every query).
        with conn.cursor() as cur:
            for sql, reason in corpus[:20]:
                with pytest.raises(adbc_driver_manager.Error, match=f"(?i){reason}"):
                    cur.adbc_prepare(sql)
    assert len(refused) == len(corpus)
    assert list(out.iterdir()) == [], "nothing was written"
    # Nothing changed and the node serves as before.
    with loaded.connect() as conn:
        got = query(conn, "SELECT a, name FROM t ORDER BY a")
        assert got.to_pydict() == {"a": [1, 2, 3], "name": ["x", "y", "z"]}
        tables = query(conn, "SELECT table_name FROM information_schema.tables ORDER BY 1")
        assert "stolen" not in tables.column(0).to_pylist()
        assert "s" not in tables.column(0).to_pylist()
